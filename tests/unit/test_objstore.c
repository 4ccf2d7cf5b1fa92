/*
 * test_objstore.c - the object store (src/services/archive/objstore.h) on both backends.
 *
 * The filesystem backend always. The S3 backend when TELERAD_TEST_S3 names the env file that
 * tests/s3/ceph.sh wrote (the test command starts a one-node Ceph with its RADOS Gateway for
 * it: the ctest fixture "s3"); otherwise those tests are skipped. Each run works under its own
 * key prefix in the bucket.
 *
 * On S3: put / get / ranged reads / delete / listing with paging (1,100 objects), a 100 MB
 * multipart upload in 5 MiB parts read back whole and by range, "create if absent" (EEXIST),
 * integrity (bytes changed on the local disk or on the wire are refused by the store), retries
 * (a proxy in this test answers 503 or hangs, then forwards to the gateway), errors that say
 * what to fix (bucket, credentials), the secret key never in a message or a log line,
 * virtual-host addressing, the read cache (LRU eviction, pinning, revalidation after another
 * node replaced an object) and the abort of abandoned multipart uploads at reconciliation.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "objstore.h"

static char tmpdir[64];

/* ---- helpers ------------------------------------------------------------------------------ */

static int put_bytes(struct arc_objstore *s, const void *data, size_t len, struct arc_put **out)
{
    struct tr_error err = TR_ERROR_INIT;
    int rc = arc_put_begin(s, out, &err);
    if (rc)
        return rc;
    return tr_sink_write(arc_put_sink(*out), data, len);
}

static int store_bytes(struct arc_objstore *s, const char *key, const void *data, size_t len,
                       struct tr_error *err)
{
    struct arc_put *p;
    int rc = put_bytes(s, data, len, &p);
    if (rc)
        return rc;
    rc = arc_put_flush(p, err);
    if (rc) {
        arc_put_abort(p);
        return rc;
    }
    rc = arc_put_commit(p, key, err);
    if (rc == TR_EEXIST)
        arc_put_abort(p);
    return rc;
}

static int collect(void *ctx, const char *key, uint64_t size)
{
    (void)key;
    (void)size;
    (*(size_t *)ctx)++;
    return 0;
}

static size_t files_in(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    if (!d)
        return 0;
    for (struct dirent *de; (de = readdir(d));)
        if (de->d_name[0] != '.' && strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

/* Temporaries holding bytes (the pool's empty "pool-*" files are not counted). */
static size_t temporaries_in(const char *dir)
{
    DIR *d = opendir(dir);
    size_t n = 0;
    if (!d)
        return 0;
    for (struct dirent *de; (de = readdir(d));) {
        char path[512];
        struct stat st;
        if (de->d_name[0] != '.' &&
            snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) < (int)sizeof(path) &&
            stat(path, &st) == 0 && st.st_size > 0)
            n++;
    }
    closedir(d);
    return n;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    *len = fread(b, 1, (size_t)n, f);
    fclose(f);
    return b;
}

/* The common checks of reading, on any backend. */
static void check_reads(struct arc_objstore *s, const char *key, const char *text)
{
    size_t len = strlen(text);
    struct tr_error err = TR_ERROR_INIT;
    assert_true(arc_object_exists(s, key));
    uint64_t size = 0;
    assert_int_equal(arc_object_size(s, key, &size, &err), 0);
    assert_int_equal(size, len);
    char buf[64] = {0};
    size_t some = TR_MIN(len - 3, (size_t)4);
    assert_int_equal(arc_object_read(s, key, 3, buf, 4, &err), (ssize_t)some);
    assert_memory_equal(buf, text + 3, some);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    struct tr_sink sink = tr_sink_buf(&out);
    assert_int_equal(arc_object_get(s, key, 2, UINT64_MAX, &sink, &err), 0);
    assert_int_equal(out.len, len - 2);
    assert_memory_equal(out.data, text + 2, len - 2);
    tr_buf_release(&out);

    struct arc_object_handle *h;
    assert_int_equal(arc_object_open(s, key, &h, &err), 0);
    assert_true(arc_object_handle_complete(h));
    assert_int_equal(arc_object_handle_length(h), len);
    size_t flen;
    char *content = read_file(arc_object_handle_path(h), &flen);
    assert_non_null(content);
    assert_int_equal(flen, len);
    assert_memory_equal(content, text, len);
    free(content);
    assert_true(arc_object_handle_fd(h) >= 0);
    arc_object_close(h);

    size_t at = len / 2, n = TR_MIN(len - at, (size_t)3);
    assert_int_equal(arc_object_open_range(s, key, at, n, &h, &err), 0);
    assert_true(arc_object_handle_length(h) >= n);
    assert_int_equal(arc_object_handle_object_size(h), len);
    char got[3];
    assert_int_equal(pread(arc_object_handle_fd(h), got, n, (off_t)arc_object_handle_offset(h)),
                     (ssize_t)n);
    assert_memory_equal(got, text + at, n);
    arc_object_close(h);
}

/* ---- the filesystem backend --------------------------------------------------------------- */

static void test_fs(void **state)
{
    (void)state;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/fs", tmpdir);
    struct arc_objstore *s;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(arc_objstore_open_fs(dir, &s, &err), 0);
    assert_true(arc_objstore_is_local(s));
    char line[300];
    arc_objstore_describe(s, line, sizeof(line));
    assert_non_null(strstr(line, "fs "));
    const char *text = "hello, object store";
    assert_int_equal(store_bytes(s, "ab/1.2.3/4.5.dcm", text, strlen(text), &err), 0);
    check_reads(s, "ab/1.2.3/4.5.dcm", text);
    char path[4096];
    assert_int_equal(arc_object_path(s, "ab/1.2.3/4.5.dcm", path, sizeof(path)), 0);
    assert_non_null(strstr(path, "/objects/ab/1.2.3/4.5.dcm"));

    /* Create if absent: the second commit is EEXIST and leaves the put open. */
    struct arc_put *p;
    assert_int_equal(put_bytes(s, "other", 5, &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    assert_true(arc_put_target_exists(p, "ab/1.2.3/4.5.dcm"));
    tr_error_clear(&err);
    assert_int_equal(arc_put_commit(p, "ab/1.2.3/4.5.dcm", &err), TR_EEXIST);
    bool same = true;
    assert_int_equal(arc_object_same(s, "ab/1.2.3/4.5.dcm", arc_put_temp_path(p), &same, NULL),
                     0);
    assert_false(same);
    assert_int_equal(arc_put_commit_replace(p, "ab/1.2.3/4.5.dcm", &err), 0);
    check_reads(s, "ab/1.2.3/4.5.dcm", "other");

    /* A crash mid-put leaves a temporary: reconciliation removes it and lists the objects. */
    assert_int_equal(put_bytes(s, "x", 1, &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    assert_int_equal(temporaries_in(tmp), 1);
    size_t n = 0;
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(temporaries_in(tmp), 0);
    arc_put_abort(p); /* what is left of it after the "crash": memory and a descriptor */

    assert_int_equal(arc_object_delete(s, "ab/1.2.3/4.5.dcm", &err), 0);
    assert_false(arc_object_exists(s, "ab/1.2.3/4.5.dcm"));
    struct arc_object_handle *h;
    assert_int_equal(arc_object_open(s, "ab/1.2.3/4.5.dcm", &h, NULL), TR_ENOTFOUND);
    assert_int_equal(store_bytes(s, "../escape", "x", 1, NULL), TR_EINVAL);
    arc_objstore_close(s);
}

/* The recovery's decision, as the archive makes it (archive.c, recover_decide), with a fixed
 * key: a whole object is one whose checksum is the one its "index row" recorded. */
struct expect {
    const char *key;
    uint64_t size, sum;
    int asked;
};

static int decide(void *ctx, const char *temp, char *key, size_t size)
{
    struct expect *e = ctx;
    e->asked++;
    uint64_t sum, fsize;
    if (arc_file_checksum(temp, &sum, &fsize, NULL) < 0 || sum != e->sum || fsize != e->size)
        return 0;
    snprintf(key, size, "%s", e->key);
    return 1;
}

/* Commits by the fast way (a link now, the directory fsync later) and what a crash can leave of
 * them: the temporary as the only name (put back), as a second name (removed), or a temporary
 * that is not the object its row describes (removed). */
static void test_fs_deferred_sync(void **state)
{
    (void)state;
    char dir[128], tmp[160], obj[200], temp[200];
    snprintf(dir, sizeof(dir), "%s/fs-deferred", tmpdir);
    snprintf(tmp, sizeof(tmp), "%s/tmp", dir);
    snprintf(obj, sizeof(obj), "%s/objects/cd/1.2/3.dcm", dir);
    struct arc_objstore *s;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(arc_objstore_open_fs(dir, &s, &err), 0);
    size_t n = 0;
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0); /* as the archive does */
    arc_objstore_settle(s); /* the pool is filled: the next put takes a durable name */
    assert_true(files_in(tmp, "pool-") >= 8);

    /* The checksum covers every byte, and is the file's. */
    char text[200000];
    for (size_t i = 0; i < sizeof(text); i++)
        text[i] = (char)('a' + i * 7 % 26);
    struct arc_put *p;
    assert_int_equal(put_bytes(s, text, sizeof(text), &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    uint64_t sum = 0, fsum = 0, fsize = 0;
    assert_true(arc_put_checksum(p, &sum));
    assert_int_equal(arc_file_checksum(arc_put_temp_path(p), &fsum, &fsize, &err), 0);
    assert_true(sum == fsum);
    assert_int_equal(fsize, sizeof(text));
    char first_temp[200];
    snprintf(first_temp, sizeof(first_temp), "%s", arc_put_temp_path(p));
    assert_non_null(strstr(first_temp, "/pool-"));
    assert_int_equal(arc_put_commit(p, "cd/1.2/3.dcm", &err), 0);
    /* Readable at once under its key; after the syncer, one name only. */
    size_t len;
    char *back = read_file(obj, &len);
    assert_non_null(back);
    assert_int_equal(len, sizeof(text));
    assert_memory_equal(back, text, len);
    free(back);
    arc_objstore_settle(s);
    struct stat st;
    assert_int_equal(stat(obj, &st), 0);
    assert_int_equal(st.st_nlink, 1);
    assert_int_equal(access(first_temp, F_OK), -1);
    assert_int_equal(temporaries_in(tmp), 0);

    /* A crash before the directory fsync reached the disk: only the temporary name is left. */
    snprintf(temp, sizeof(temp), "%s/pool-crash1", tmp);
    assert_int_equal(link(obj, temp), 0);
    assert_int_equal(unlink(obj), 0);
    arc_objstore_close(s);
    assert_int_equal(arc_objstore_open_fs(dir, &s, &err), 0);
    struct expect e = {"cd/1.2/3.dcm", sizeof(text), sum, 0};
    struct arc_recover_stats rs;
    assert_int_equal(arc_objstore_recover_puts(s, decide, &e, &rs, &err), 0);
    assert_int_equal(rs.restored, 1);
    assert_int_equal(rs.discarded, 0);
    back = read_file(obj, &len);
    assert_non_null(back);
    assert_int_equal(len, sizeof(text));
    assert_memory_equal(back, text, len);
    free(back);
    assert_int_equal(access(temp, F_OK), -1);

    /* A crash after the new name reached the disk, before the temporary was removed. */
    assert_int_equal(link(obj, temp), 0);
    assert_int_equal(arc_objstore_recover_puts(s, decide, &e, &rs, &err), 0);
    assert_int_equal(rs.linked, 1);
    assert_int_equal(rs.restored, 0);
    assert_int_equal(access(temp, F_OK), -1);
    assert_int_equal(stat(obj, &st), 0);
    assert_int_equal(st.st_nlink, 1);

    /* A temporary whose bytes are not the row's (a crash before its fdatasync finished: never
     * acknowledged) and one cut short: removed, the stored object untouched. */
    FILE *f = fopen(temp, "wb");
    assert_non_null(f);
    text[100] ^= 1;
    fwrite(text, 1, sizeof(text), f);
    fclose(f);
    snprintf(temp, sizeof(temp), "%s/put-crash2", tmp);
    f = fopen(temp, "wb");
    assert_non_null(f);
    fwrite(text, 1, 1000, f);
    fclose(f);
    assert_int_equal(unlink(obj), 0);
    e.asked = 0;
    assert_int_equal(arc_objstore_recover_puts(s, decide, &e, &rs, &err), 0);
    assert_int_equal(e.asked, 2);
    assert_int_equal(rs.discarded, 2);
    assert_int_equal(rs.restored, 0);
    assert_int_equal(temporaries_in(tmp), 0);
    assert_int_equal(access(obj, F_OK), -1);

    /* Another live telerad's temporaries (the same program: a child here) are left alone; a
     * live process running another program (PID 1) does not own what carries its PID, nor
     * does a process that is gone. */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        pause();
        _exit(0);
    }
    char theirs[200], init_one[200];
    snprintf(theirs, sizeof(theirs), "%s/put-%ld-abcdef", tmp, (long)child);
    snprintf(init_one, sizeof(init_one), "%s/put-1-abcdef", tmp);
    const char *names[] = {theirs, init_one};
    for (size_t i = 0; i < 2; i++) {
        f = fopen(names[i], "wb");
        assert_non_null(f);
        fwrite(text, 1, 100, f);
        fclose(f);
    }
    assert_int_equal(arc_objstore_recover_puts(s, decide, &e, &rs, &err), 0);
    assert_int_equal(access(theirs, F_OK), 0);
    char init_exe[256];
    if (readlink("/proc/1/exe", init_exe, sizeof(init_exe)) > 0) /* else: cannot tell, kept */
        assert_int_equal(access(init_one, F_OK), -1);
    unlink(init_one);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    assert_int_equal(arc_objstore_recover_puts(s, decide, &e, &rs, &err), 0);
    assert_int_equal(access(theirs, F_OK), -1);

    /* The pool's files are not leftovers: reconciliation and recovery keep them, and a clean
     * close removes them. */
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0);
    arc_objstore_settle(s);
    size_t pooled = files_in(tmp, "pool-");
    assert_true(pooled >= 8);
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0);
    assert_int_equal(arc_objstore_recover_puts(s, decide, &e, &rs, &err), 0);
    assert_int_equal(files_in(tmp, "pool-"), pooled);
    arc_objstore_close(s);
    assert_int_equal(files_in(tmp, "pool-"), 0);
    assert_int_equal(files_in(tmp, "put-"), 0);
}

/* ---- S3: the environment ------------------------------------------------------------------ */

static struct {
    bool on;
    char endpoint[256], region[64], bucket[128], access[256], secret[256];
    char prefix[64];
    int port;
} s3env;

/* Every log line of every store in this test, to look for the secret in. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tr_buf logs;

static void capture_log(void *ctx, int level, const char *message)
{
    (void)ctx;
    pthread_mutex_lock(&log_lock);
    tr_buf_addf(&logs, "%d %s\n", level, message);
    pthread_mutex_unlock(&log_lock);
}

static void no_secret_in(const char *text)
{
    if (text && s3env.secret[0] && strstr(text, s3env.secret))
        fail_msg("the secret key appears in: %s", text);
}

static void load_s3_env(void)
{
    const char *file = getenv("TELERAD_TEST_S3");
    if (!file || !*file)
        return;
    FILE *f = fopen(file, "r");
    if (!f)
        return;
    char line[600];
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *v = eq + 1;
        if (!strcmp(line, "TELERAD_S3_ENDPOINT"))
            snprintf(s3env.endpoint, sizeof(s3env.endpoint), "%s", v);
        else if (!strcmp(line, "TELERAD_S3_REGION"))
            snprintf(s3env.region, sizeof(s3env.region), "%s", v);
        else if (!strcmp(line, "TELERAD_S3_BUCKET"))
            snprintf(s3env.bucket, sizeof(s3env.bucket), "%s", v);
        else if (!strcmp(line, "TELERAD_S3_ACCESS_KEY"))
            snprintf(s3env.access, sizeof(s3env.access), "%s", v);
        else if (!strcmp(line, "TELERAD_S3_SECRET_KEY"))
            snprintf(s3env.secret, sizeof(s3env.secret), "%s", v);
    }
    fclose(f);
    const char *colon = strrchr(s3env.endpoint, ':');
    s3env.port = colon ? (int)strtol(colon + 1, NULL, 10) : 0;
    snprintf(s3env.prefix, sizeof(s3env.prefix), "test-%d-%ld/", (int)getpid(), (long)time(NULL));
    s3env.on = s3env.endpoint[0] && s3env.access[0] && s3env.port > 0;
}

static void s3_options(struct arc_s3_options *o)
{
    arc_s3_options_init(o);
    o->endpoint = s3env.endpoint;
    o->region = s3env.region;
    o->bucket = s3env.bucket;
    o->prefix = s3env.prefix;
    o->access_key = s3env.access;
    o->secret_key = s3env.secret;
    o->log = capture_log;
    o->retries = 2;
    o->part_size = 5u << 20;
    o->multipart_threshold = 8u << 20;
    o->cache_bytes = 256u << 20;
}

static struct arc_objstore *open_s3(const struct arc_s3_options *o, const char *name)
{
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/%s", tmpdir, name);
    struct arc_objstore *s;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_objstore_open_s3(o, dir, &s, &err) < 0)
        fail_msg("open S3 %s: %s", o->endpoint, err.message);
    return s;
}

#define NEED_S3()                                                                                  \
    do {                                                                                           \
        if (!s3env.on)                                                                             \
            skip();                                                                                \
    } while (0)

/* ---- S3: a proxy that fails on purpose ---------------------------------------------------- */

struct proxy {
    int fd, port;
    pthread_t thread;
    atomic_int fail;       /* answer 503 to this many requests */
    atomic_int fail_from;  /* requests from this index on fail (-1: none) */
    atomic_int hang;       /* hold this many requests without an answer */
    atomic_int corrupt;    /* flip a body byte of this many requests with a body */
    atomic_int requests;
    atomic_bool stop;
    int held[16];
    int nheld;
};

static int read_head(int fd, struct tr_buf *head)
{
    char c;
    while (head->len < 65536) {
        ssize_t n = read(fd, &c, 1);
        if (n <= 0)
            return -1;
        tr_buf_addc(head, c);
        if (head->len >= 4 && memcmp(head->data + head->len - 4, "\r\n\r\n", 4) == 0)
            return 0;
    }
    return -1;
}

static void write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

static void proxy_one(struct proxy *px, int client)
{
    struct tr_buf head;
    tr_buf_init(&head, 1 << 20);
    if (read_head(client, &head) < 0) {
        tr_buf_release(&head);
        close(client);
        return;
    }
    size_t body_len = 0;
    for (char *line = strstr(head.data, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Content-Length:", 15) == 0)
            body_len = strtoull(line + 17, NULL, 10);
    }
    char *body = malloc(body_len + 1);
    size_t got = 0;
    while (got < body_len) {
        ssize_t n = read(client, body + got, body_len - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    int index = atomic_fetch_add(&px->requests, 1);
    int from = atomic_load(&px->fail_from);
    if (atomic_load(&px->hang) > 0) {
        atomic_fetch_sub(&px->hang, 1);
        if (px->nheld < 16)
            px->held[px->nheld++] = client; /* never answered */
        else
            close(client);
    } else if (atomic_load(&px->fail) > 0 || (from >= 0 && index >= from)) {
        if (atomic_load(&px->fail) > 0)
            atomic_fetch_sub(&px->fail, 1);
        const char *answer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
                             "Content-Length: 57\r\nConnection: close\r\n\r\n"
                             "<Error><Code>SlowDown</Code><Message></Message></Error>\r\n";
        write_all(client, answer, strlen(answer));
        close(client);
    } else {
        if (body_len && got == body_len && atomic_load(&px->corrupt) > 0) {
            atomic_fetch_sub(&px->corrupt, 1);
            body[body_len / 2] ^= 0x01;
        }
        int up = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s3env.port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(up, (struct sockaddr *)&a, sizeof(a)) == 0) {
            /* one request per connection: the answer ends when the gateway closes */
            write_all(up, head.data, head.len - 2);
            write_all(up, "Connection: close\r\n\r\n", 21);
            write_all(up, body, got);
            char buf[65536];
            for (ssize_t n; (n = read(up, buf, sizeof(buf))) > 0;)
                write_all(client, buf, (size_t)n);
        }
        close(up);
        close(client);
    }
    free(body);
    tr_buf_release(&head);
}

static void *proxy_main(void *arg)
{
    struct proxy *px = arg;
    while (!atomic_load(&px->stop)) {
        struct pollfd pfd = {px->fd, POLLIN, 0};
        if (poll(&pfd, 1, 100) <= 0)
            continue;
        int c = accept(px->fd, NULL, NULL);
        if (c >= 0)
            proxy_one(px, c);
    }
    return NULL;
}

static void proxy_start(struct proxy *px)
{
    memset(px, 0, sizeof(*px));
    atomic_store(&px->fail_from, -1);
    px->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(px->fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    getsockname(px->fd, (struct sockaddr *)&a, &len);
    px->port = ntohs(a.sin_port);
    assert_int_equal(listen(px->fd, 16), 0);
    assert_int_equal(pthread_create(&px->thread, NULL, proxy_main, px), 0);
}

static void proxy_stop(struct proxy *px)
{
    atomic_store(&px->stop, true);
    pthread_join(px->thread, NULL);
    close(px->fd);
    for (int i = 0; i < px->nheld; i++)
        close(px->held[i]);
}

/* ---- S3: the tests ------------------------------------------------------------------------ */

static void test_s3_basics(void **state)
{
    (void)state;
    NEED_S3();
    struct arc_s3_options o;
    s3_options(&o);
    struct arc_objstore *s = open_s3(&o, "s3-basics");
    assert_false(arc_objstore_is_local(s));
    char line[400];
    arc_objstore_describe(s, line, sizeof(line));
    assert_non_null(strstr(line, s3env.bucket));
    no_secret_in(line);
    const char *text = "the bytes of a DICOM object, more or less";
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(store_bytes(s, "7f/1.2/3.4.dcm", text, strlen(text), &err), 0);
    check_reads(s, "7f/1.2/3.4.dcm", text);
    char path[64];
    assert_int_equal(arc_object_path(s, "7f/1.2/3.4.dcm", path, sizeof(path)), TR_EUNSUPPORTED);
    /* Ranges past the end and missing objects. */
    char buf[8];
    assert_int_equal(arc_object_read(s, "7f/1.2/3.4.dcm", 1000, buf, 8, &err), 0);
    assert_false(arc_object_exists(s, "7f/1.2/missing.dcm"));
    struct arc_object_handle *h;
    tr_error_clear(&err);
    assert_int_equal(arc_object_open(s, "7f/1.2/missing.dcm", &h, &err), TR_ENOTFOUND);
    tr_error_clear(&err);
    uint64_t size;
    assert_int_equal(arc_object_size(s, "7f/1.2/missing.dcm", &size, &err), TR_ENOTFOUND);

    /* Create if absent: HEAD before PUT gives EEXIST, the put stays open; same / replace. */
    struct arc_put *p;
    assert_int_equal(put_bytes(s, text, strlen(text), &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    tr_error_clear(&err);
    assert_int_equal(arc_put_commit(p, "7f/1.2/3.4.dcm", &err), TR_EEXIST);
    bool same = false;
    assert_int_equal(arc_object_same(s, "7f/1.2/3.4.dcm", arc_put_temp_path(p), &same, &err), 0);
    assert_true(same);
    arc_put_abort(p);
    assert_int_equal(put_bytes(s, "different", 9, &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    assert_true(arc_put_target_exists(p, "7f/1.2/3.4.dcm"));
    tr_error_clear(&err);
    assert_int_equal(arc_put_commit(p, "7f/1.2/3.4.dcm", &err), TR_EEXIST);
    assert_int_equal(arc_object_same(s, "7f/1.2/3.4.dcm", arc_put_temp_path(p), &same, &err), 0);
    assert_false(same);
    assert_int_equal(arc_put_commit_replace(p, "7f/1.2/3.4.dcm", &err), 0);
    check_reads(s, "7f/1.2/3.4.dcm", "different");

    /* Delete. */
    assert_int_equal(arc_object_delete(s, "7f/1.2/3.4.dcm", &err), 0);
    assert_false(arc_object_exists(s, "7f/1.2/3.4.dcm"));
    assert_int_equal(arc_object_delete(s, "7f/1.2/3.4.dcm", &err), 0); /* gone is fine */
    char spool[128];
    snprintf(spool, sizeof(spool), "%s/s3-basics/spool", tmpdir);
    assert_int_equal(files_in(spool, "put-"), 0);
    arc_objstore_close(s);
}

/* Bytes that depend on their offset only, so that any range can be checked. */
static uint8_t byte_at(uint64_t off)
{
    uint64_t z = (off >> 3) + 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (uint8_t)(z >> ((off & 7) * 8));
}

static void test_s3_multipart_100mb(void **state)
{
    (void)state;
    NEED_S3();
    struct arc_s3_options o;
    s3_options(&o); /* parts of 5 MiB above 8 MiB */
    struct arc_objstore *s = open_s3(&o, "s3-multipart");
    const uint64_t size = 100u << 20;
    struct arc_put *p;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(arc_put_begin(s, &p, &err), 0);
    uint8_t *chunk = malloc(1 << 20);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (uint64_t off = 0; off < size; off += 1 << 20) {
        for (size_t i = 0; i < (1 << 20); i++)
            chunk[i] = byte_at(off + i);
        EVP_DigestUpdate(md, chunk, 1 << 20);
        assert_int_equal(tr_sink_write(arc_put_sink(p), chunk, 1 << 20), 0);
    }
    unsigned char want[32], got[32];
    EVP_DigestFinal_ex(md, want, NULL);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (arc_put_commit(p, "aa/big/100mb.dcm", &err) < 0)
        fail_msg("commit: %s", err.message);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("# 100 MB multipart upload (20 parts of 5 MiB): %.2f s, %.0f MB/s\n", secs,
           100.0 / secs);
    uint64_t stored = 0;
    assert_int_equal(arc_object_size(s, "aa/big/100mb.dcm", &stored, &err), 0);
    assert_int_equal(stored, size);
    /* A range in the middle (crossing a part boundary), without the whole object. */
    uint64_t at = (50u << 20) - 100;
    uint8_t buf[4096];
    assert_int_equal(arc_object_read(s, "aa/big/100mb.dcm", at, buf, sizeof(buf), &err),
                     (ssize_t)sizeof(buf));
    for (size_t i = 0; i < sizeof(buf); i++)
        if (buf[i] != byte_at(at + i))
            fail_msg("byte %llu differs", (unsigned long long)(at + i));
    struct arc_object_handle *h;
    assert_int_equal(arc_object_open_range(s, "aa/big/100mb.dcm", at, 4096, &h, &err), 0);
    assert_false(arc_object_handle_complete(h));
    assert_int_equal(arc_object_handle_object_size(h), size);
    struct stat st;
    assert_int_equal(stat(arc_object_handle_path(h), &st), 0);
    assert_int_equal(st.st_size, 4096); /* only the range came */
    arc_object_close(h);
    /* The whole object, hashed. */
    assert_int_equal(arc_object_open(s, "aa/big/100mb.dcm", &h, &err), 0);
    int fd = arc_object_handle_fd(h);
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (ssize_t n; (n = read(fd, chunk, 1 << 20)) > 0;)
        EVP_DigestUpdate(md, chunk, (size_t)n);
    EVP_DigestFinal_ex(md, got, NULL);
    assert_memory_equal(got, want, 32);
    arc_object_close(h);
    EVP_MD_CTX_free(md);
    free(chunk);
    assert_int_equal(arc_object_delete(s, "aa/big/100mb.dcm", &err), 0);
    arc_objstore_close(s);
}

static void test_s3_listing(void **state)
{
    (void)state;
    NEED_S3();
    struct arc_s3_options o;
    s3_options(&o);
    char prefix[96];
    snprintf(prefix, sizeof(prefix), "%slist/", s3env.prefix);
    o.prefix = prefix;
    o.cache_bytes = 0;
    struct arc_objstore *s = open_s3(&o, "s3-list");
    struct tr_error err = TR_ERROR_INIT;
    for (int i = 0; i < 1100; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%02x/1.2.3/%d.dcm", i % 256, i);
        if (store_bytes(s, key, key, strlen(key), &err) < 0)
            fail_msg("%s: %s", key, err.message);
    }
    /* A temporary of a crash: removed. 1,100 keys in two pages. */
    struct arc_put *p;
    assert_int_equal(put_bytes(s, "x", 1, &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    size_t n = 0;
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0);
    assert_int_equal(n, 1100);
    char spool[128];
    snprintf(spool, sizeof(spool), "%s/s3-list/spool", tmpdir);
    assert_int_equal(files_in(spool, "put-"), 0);
    arc_put_abort(p); /* what is left of it after the "crash": memory and a descriptor */
    for (int i = 0; i < 1100; i++) {
        char key[64];
        snprintf(key, sizeof(key), "%02x/1.2.3/%d.dcm", i % 256, i);
        arc_object_delete(s, key, NULL);
    }
    arc_objstore_close(s);
}

static void test_s3_integrity(void **state)
{
    (void)state;
    NEED_S3();
    struct arc_s3_options o;
    s3_options(&o);
    struct arc_objstore *s = open_s3(&o, "s3-integrity");
    struct tr_error err = TR_ERROR_INIT;
    /* The spool file changes after the bytes arrived (a local disk error): the store refuses
     * the single PUT (Content-MD5 and the signed SHA-256 were taken as the bytes arrived). */
    struct arc_put *p;
    assert_int_equal(put_bytes(s, "0123456789abcdef", 16, &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    int fd = open(arc_put_temp_path(p), O_WRONLY);
    assert_int_equal(pwrite(fd, "X", 1, 5), 1);
    close(fd);
    assert_int_not_equal(arc_put_commit(p, "cc/damaged.dcm", &err), 0);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, "checksum"));
    assert_false(arc_object_exists(s, "cc/damaged.dcm"));
    /* The same for a multipart upload (caught before it completes). */
    assert_int_equal(arc_put_begin(s, &p, &err), 0);
    char *block = calloc(1, 1 << 20);
    for (int i = 0; i < 12; i++)
        assert_int_equal(tr_sink_write(arc_put_sink(p), block, 1 << 20), 0);
    free(block);
    assert_int_equal(arc_put_flush(p, &err), 0);
    fd = open(arc_put_temp_path(p), O_WRONLY);
    assert_int_equal(pwrite(fd, "X", 1, 7u << 20), 1);
    close(fd);
    tr_error_clear(&err);
    assert_int_not_equal(arc_put_commit(p, "cc/damaged-big.dcm", &err), 0);
    printf("# %s\n", err.message);
    assert_false(arc_object_exists(s, "cc/damaged-big.dcm"));
    arc_objstore_close(s);

    /* A byte flipped on the wire (the proxy): refused by the store, not retried into success
     * with bad bytes; the next attempt of a new put goes through. */
    struct proxy px;
    proxy_start(&px);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", px.port);
    s3_options(&o);
    o.endpoint = endpoint;
    s = open_s3(&o, "s3-integrity-wire");
    atomic_store(&px.corrupt, 1);
    tr_error_clear(&err);
    assert_int_not_equal(store_bytes(s, "cc/wire.dcm", "abcdefghijklmnop", 16, &err), 0);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, "checksum does not match"));
    assert_false(arc_object_exists(s, "cc/wire.dcm"));
    assert_int_equal(store_bytes(s, "cc/wire.dcm", "abcdefghijklmnop", 16, &err), 0);
    check_reads(s, "cc/wire.dcm", "abcdefghijklmnop");
    arc_object_delete(s, "cc/wire.dcm", NULL);
    arc_objstore_close(s);
    proxy_stop(&px);
}

static void test_s3_retries(void **state)
{
    (void)state;
    NEED_S3();
    struct proxy px;
    proxy_start(&px);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", px.port);
    struct arc_s3_options o;
    s3_options(&o);
    o.endpoint = endpoint;
    /* Short enough to keep the hang below quick, long enough that a loaded machine (the
     * sanitizer build beside other tests) does not stall a healthy transfer for that long. */
    o.stall_timeout_s = 4;
    o.cache_bytes = 0;
    struct arc_objstore *s = open_s3(&o, "s3-retries");
    struct tr_error err = TR_ERROR_INIT;

    /* 503 twice, then through: one PUT in three attempts (and the HEAD before it). */
    atomic_store(&px.requests, 0);
    atomic_store(&px.fail, 2);
    struct arc_put *p;
    assert_int_equal(put_bytes(s, "retried", 7, &p), 0);
    assert_int_equal(arc_put_flush(p, &err), 0);
    assert_false(arc_put_target_exists(p, "dd/retried.dcm")); /* 2 x 503, then 404 */
    assert_int_equal(atomic_load(&px.requests), 3);
    atomic_store(&px.fail, 2);
    if (arc_put_commit(p, "dd/retried.dcm", &err) < 0)
        fail_msg("commit through 503s: %s", err.message);
    assert_int_equal(atomic_load(&px.requests), 6);
    check_reads(s, "dd/retried.dcm", "retried");

    /* A gateway that hangs: the stall timeout (4 s here) ends the attempt, the next works. */
    atomic_store(&px.hang, 1);
    char buf[8];
    assert_int_equal(arc_object_read(s, "dd/retried.dcm", 0, buf, 7, &err), 7);
    assert_memory_equal(buf, "retried", 7);

    /* Always 503: the error says so after 1 + retries attempts. */
    atomic_store(&px.fail, 100);
    tr_error_clear(&err);
    assert_int_not_equal(arc_object_size(s, "dd/retried.dcm", (uint64_t[]){0}, &err), 0);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, "after 3 attempts"));
    atomic_store(&px.fail, 0);

    pthread_mutex_lock(&log_lock);
    assert_non_null(strstr(logs.data, "retrying in"));
    pthread_mutex_unlock(&log_lock);
    arc_object_delete(s, "dd/retried.dcm", NULL);
    arc_objstore_close(s);

    /* A store that went away: connection refused, retried, then a clear error. */
    proxy_stop(&px);
    s3_options(&o);
    o.endpoint = endpoint; /* nobody listens there now */
    o.retries = 1;
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/s3-gone", tmpdir);
    tr_error_clear(&err);
    assert_int_not_equal(arc_objstore_open_s3(&o, dir, &s, &err), 0);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, endpoint));
}

static void test_s3_errors_and_secrets(void **state)
{
    (void)state;
    NEED_S3();
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/s3-errors", tmpdir);
    struct arc_s3_options o;
    struct arc_objstore *s;
    struct tr_error err = TR_ERROR_INIT;

    s3_options(&o);
    o.bucket = "no-such-bucket-here";
    assert_int_equal(arc_objstore_open_s3(&o, dir, &s, &err), TR_EINVAL);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, "no bucket \"no-such-bucket-here\""));

    char wrong[300];
    snprintf(wrong, sizeof(wrong), "%sX", s3env.secret);
    s3_options(&o);
    o.secret_key = wrong;
    tr_error_clear(&err);
    assert_int_equal(arc_objstore_open_s3(&o, dir, &s, &err), TR_EDENIED);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, "SignatureDoesNotMatch"));
    assert_null(strstr(err.message, wrong));
    no_secret_in(err.message);

    s3_options(&o);
    o.access_key = "NOSUCHACCESSKEY";
    tr_error_clear(&err);
    assert_int_equal(arc_objstore_open_s3(&o, dir, &s, &err), TR_EDENIED);
    printf("# %s\n", err.message);
    assert_non_null(strstr(err.message, "InvalidAccessKeyId"));

    s3_options(&o);
    o.endpoint = "ftp://example.org";
    tr_error_clear(&err);
    assert_int_equal(arc_objstore_open_s3(&o, dir, &s, &err), TR_EINVAL);

    /* Nothing any store logged or said in this test run holds the secret. */
    pthread_mutex_lock(&log_lock);
    no_secret_in(logs.data);
    pthread_mutex_unlock(&log_lock);
}

static void test_s3_virtual_host(void **state)
{
    (void)state;
    NEED_S3();
    /* "<bucket>.localhost" is loopback to libcurl; the gateway knows rgw_dns_name localhost. */
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://localhost:%d", s3env.port);
    struct arc_s3_options o;
    s3_options(&o);
    o.endpoint = endpoint;
    o.virtual_host = true;
    struct arc_objstore *s = open_s3(&o, "s3-vhost");
    char line[400];
    arc_objstore_describe(s, line, sizeof(line));
    assert_non_null(strstr(line, "virtual-host"));
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(store_bytes(s, "ee/vhost.dcm", "virtual", 7, &err), 0);
    check_reads(s, "ee/vhost.dcm", "virtual");
    size_t n = 0;
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0);
    assert_true(n >= 1);
    assert_int_equal(arc_object_delete(s, "ee/vhost.dcm", &err), 0);
    arc_objstore_close(s);
}

static void test_s3_cache(void **state)
{
    (void)state;
    NEED_S3();
    struct arc_s3_options o;
    s3_options(&o);
    o.cache_bytes = 4u << 20; /* room for three 1 MiB objects, and a write-through limit of 1 */
    o.cache_revalidate_s = 0;  /* every use checks the ETag */
    struct arc_objstore *a = open_s3(&o, "s3-cache-a");
    o.cache_bytes = 0;
    struct arc_objstore *b = open_s3(&o, "s3-cache-b"); /* another node */
    struct tr_error err = TR_ERROR_INIT;
    char *mib = malloc(1 << 20);
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof(key), "ff/%d.dcm", i);
        memset(mib, 'a' + i, 1 << 20);
        assert_int_equal(store_bytes(b, key, mib, 1 << 20, &err), 0);
    }
    char cache[128];
    snprintf(cache, sizeof(cache), "%s/s3-cache-a/cache", tmpdir);
    struct arc_object_handle *h[5];
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof(key), "ff/%d.dcm", i);
        assert_int_equal(arc_object_open(a, key, &h[i], &err), 0);
        if (i == 0)
            continue; /* 0 stays pinned */
        arc_object_close(h[i]);
    }
    /* 4 MiB: 0 (pinned) and the three most recent fit; 1 was evicted. */
    assert_int_equal(files_in(cache, ""), 4);
    size_t len;
    char *content = read_file(arc_object_handle_path(h[0]), &len);
    assert_int_equal(len, 1 << 20);
    assert_int_equal(content[100], 'a');
    free(content);
    arc_object_close(h[0]);
    /* Another node replaces 4: the next use here sees the new bytes (ETag check). */
    struct arc_put *p;
    memset(mib, 'Z', 1 << 20);
    assert_int_equal(put_bytes(b, mib, 1 << 20, &p), 0);
    assert_int_equal(arc_put_commit_replace(p, "ff/4.dcm", &err), 0);
    assert_int_equal(arc_object_open(a, "ff/4.dcm", &h[4], &err), 0);
    content = read_file(arc_object_handle_path(h[4]), &len);
    assert_int_equal(content[5], 'Z');
    free(content);
    arc_object_close(h[4]);
    /* ... and deletes 3: gone here too. */
    assert_int_equal(arc_object_delete(b, "ff/3.dcm", &err), 0);
    assert_int_equal(arc_object_open(a, "ff/3.dcm", &h[3], NULL), TR_ENOTFOUND);
    for (int i = 0; i < 5; i++) {
        char key[32];
        snprintf(key, sizeof(key), "ff/%d.dcm", i);
        arc_object_delete(b, key, NULL);
    }
    free(mib);
    arc_objstore_close(a);
    arc_objstore_close(b);
}

static void test_s3_abandoned_upload(void **state)
{
    (void)state;
    NEED_S3();
    struct proxy px;
    proxy_start(&px);
    char endpoint[64];
    snprintf(endpoint, sizeof(endpoint), "http://127.0.0.1:%d", px.port);
    struct arc_s3_options o;
    s3_options(&o);
    o.endpoint = endpoint;
    o.retries = 0;
    struct arc_objstore *s = open_s3(&o, "s3-abandoned");
    /* HEAD, create, part 1 pass; part 2 and the abort fail: the upload is left behind. */
    struct tr_error err = TR_ERROR_INIT;
    struct arc_put *p;
    assert_int_equal(arc_put_begin(s, &p, &err), 0);
    char *block = calloc(1, 1 << 20);
    for (int i = 0; i < 12; i++)
        assert_int_equal(tr_sink_write(arc_put_sink(p), block, 1 << 20), 0);
    free(block);
    atomic_store(&px.requests, 0);
    atomic_store(&px.fail_from, 3);
    assert_int_not_equal(arc_put_commit(p, "ab/abandoned.dcm", &err), 0);
    arc_objstore_close(s);
    proxy_stop(&px);
    /* The next start, straight to the gateway, aborts uploads older than stale_upload_s. */
    sleep(2);
    s3_options(&o);
    o.stale_upload_s = 1;
    s = open_s3(&o, "s3-abandoned");
    pthread_mutex_lock(&log_lock);
    tr_buf_reset(&logs);
    pthread_mutex_unlock(&log_lock);
    size_t n = 0;
    assert_int_equal(arc_objstore_reconcile(s, collect, &n, &err), 0);
    pthread_mutex_lock(&log_lock);
    assert_non_null(logs.data);
    assert_non_null(strstr(logs.data, "aborted 1 multipart uploads"));
    pthread_mutex_unlock(&log_lock);
    assert_false(arc_object_exists(s, "ab/abandoned.dcm"));
    arc_objstore_close(s);
}

int main(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/telerad-objstore-XXXXXX");
    if (!mkdtemp(tmpdir))
        return 1;
    tr_buf_init(&logs, 16 << 20);
    load_s3_env();
    if (!s3env.on)
        printf("# S3 tests skipped: TELERAD_TEST_S3 names no tests/s3/ceph.sh env file\n");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fs),
        cmocka_unit_test(test_fs_deferred_sync),
        cmocka_unit_test(test_s3_basics),
        cmocka_unit_test(test_s3_multipart_100mb),
        cmocka_unit_test(test_s3_listing),
        cmocka_unit_test(test_s3_integrity),
        cmocka_unit_test(test_s3_retries),
        cmocka_unit_test(test_s3_errors_and_secrets),
        cmocka_unit_test(test_s3_virtual_host),
        cmocka_unit_test(test_s3_cache),
        cmocka_unit_test(test_s3_abandoned_upload),
    };
    if (getenv("TELERAD_TEST_ONLY")) /* e.g. "test_s3_*" */
        cmocka_set_test_filter(getenv("TELERAD_TEST_ONLY"));
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    tr_buf_release(&logs);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    if (system(cmd) != 0)
        return 1;
    return failed;
}
