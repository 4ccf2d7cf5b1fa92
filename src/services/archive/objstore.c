/*
 * objstore.c - the object store's interface (see objstore.h), dispatched to a backend, and the
 * filesystem backend.
 *
 * Filesystem layout under the root: objects/<key> for committed objects, tmp/ for puts in
 * progress. Directories created on the way are fsynced into their parents.
 *
 * A commit makes the bytes durable (fdatasync: most of them are on the disk already, their
 * writes started as they arrived) and then the name, in one of two ways:
 *   - the plain way: rename the temporary to objects/<key> (without replacing an existing
 *     object unless asked) and fsync that directory before returning;
 *   - the fast way, for a temporary taken from the pool: link it as objects/<key> and return;
 *     a background thread (the syncer) fsyncs the directories of such links in batches, and
 *     only then removes the temporary names. The pool's files were created ahead of time and
 *     their directory fsynced before use, so until the syncer has run, the temporary's name is
 *     durable and the index row (committed before the answer, with the object's size and
 *     checksum) says what it should hold. After a crash, arc_objstore_recover_puts puts such
 *     temporaries back under their key when the row's size and checksum match them, and removes
 *     the rest (never acknowledged). A link, not a rename: a rename removes the temporary name
 *     at once, and without a journal that removal could reach the disk before the new name.
 * With one association, the directory fsync (0.2-2 ms on the development VM, bench/README.md)
 * and the file's creation are then no longer between a C-STORE's last byte and its answer.
 */
#include "common.h"
#include "objstore_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <xxhash.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PUT_BUFFER (64u << 10)
/* Write-behind: ask the kernel to start writing every this many bytes of a put. */
#define PUT_WRITE_BEHIND (64u << 10)
/* Temporaries created ahead of time (their directory fsynced once for all), and the most links
 * whose directory fsync may be outstanding before commits go the plain way again. */
#define POOL_SIZE 16
#define PENDING_MAX 4096
/* How long the syncer lets links gather before it fsyncs their directories. */
#define SYNC_DELAY_MS 20

struct pool_file {
    int fd;
    char path[PATH_MAX];
};

struct pending_link {
    char *dir;   /* objects/... directory of the new name, to fsync */
    char *temp;  /* the temporary name, to remove after */
    char *final; /* the new name (a deletion meanwhile removes the temporary at once) */
};

struct fs_store {
    struct arc_objstore base;
    char root[PATH_MAX];
    char objects[PATH_MAX];
    char tmp[PATH_MAX];
    int objects_fd; /* for fsync of the top directory */
    /* The syncer (see the top of this file). */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_cond_t synced;
    pthread_t syncer;
    bool syncer_started;
    bool stopping;
    bool busy;        /* the syncer is at work outside the lock */
    bool pool_failed; /* the last fill created nothing (a full disk...): wait for a put */
    bool ready;       /* reconciled: from now on the syncer keeps the pool filled (before, a
                         pool file could look like a crash's leftover to the reconciliation) */
    bool no_links; /* the filesystem refused a hard link: the plain way only */
    struct pool_file pool[POOL_SIZE];
    size_t pool_count;
    struct pending_link *pending;
    size_t pending_count, pending_cap;
    uint64_t links, syncs, batches; /* for tests and logs */
};

static const struct arc_objstore_ops fs_ops;

static struct fs_store *fs_of(struct arc_objstore *s)
{
    return (struct fs_store *)s;
}

static int fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* mkdir -p for the directories of `path` below `base`, fsyncing each new one's parent. */
static int make_parents(const char *base, const char *path)
{
    char dir[PATH_MAX];
    size_t n = strlen(path);
    if (n >= sizeof(dir))
        return -1;
    memcpy(dir, path, n + 1);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return 0;
    *slash = '\0';
    struct stat st;
    if (stat(dir, &st) == 0)
        return S_ISDIR(st.st_mode) ? 0 : -1;
    if (strlen(dir) <= strlen(base))
        return -1;
    if (make_parents(base, dir) < 0)
        return -1;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -1;
    char parent[PATH_MAX];
    memcpy(parent, dir, strlen(dir) + 1);
    char *p = strrchr(parent, '/');
    if (p) {
        *p = '\0';
        fsync_dir(parent);
    }
    return 0;
}

bool arc_key_is_valid(const char *key)
{
    size_t n = strlen(key);
    if (n == 0 || n > 1024 || key[0] == '/' || strstr(key, ".."))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)key[i];
        if (c < 0x21 || c > 0x7E || c == '\\')
            return false;
    }
    return true;
}

static int key_path(struct arc_objstore *store, const char *key, char *path, size_t size)
{
    struct fs_store *s = fs_of(store);
    if (!arc_key_is_valid(key))
        return TR_EINVAL;
    int n = snprintf(path, size, "%s/%s", s->objects, key);
    return n < 0 || (size_t)n >= size ? TR_ELIMIT : 0;
}

/* ---- filesystem: the syncer and the pool of temporaries ----------------------------------- */

static int dir_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pending_link *)a)->dir, ((const struct pending_link *)b)->dir);
}

/* Make a batch of links durable: each directory once, then the temporary names go. */
static void sync_batch(struct fs_store *s, struct pending_link *batch, size_t n)
{
    qsort(batch, n, sizeof(*batch), dir_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i == 0 || strcmp(batch[i].dir, batch[i - 1].dir) != 0) {
            /* If this fails the temporaries stay: the next start checks them against the
             * index and finishes the job (arc_objstore_recover_puts). */
            if (fsync_dir(batch[i].dir) < 0)
                for (size_t j = i; j < n && strcmp(batch[j].dir, batch[i].dir) == 0; j++) {
                    tr_free(batch[j].temp);
                    batch[j].temp = NULL;
                }
            s->syncs++;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (batch[i].temp)
            unlink(batch[i].temp);
        tr_free(batch[i].temp);
        tr_free(batch[i].dir);
        tr_free(batch[i].final);
    }
}

/* The mkostemp template of a temporary in `dir`: "put-PID-XXXXXX" or "pool-PID-XXXXXX" (the
 * PID tells a live process's temporaries from a crash's, see other_process_owns). */
static bool temp_template(char *path, size_t size, const char *dir, const char *kind)
{
    int n = snprintf(path, size, "%s/%s-%ld-XXXXXX", dir, kind, (long)getpid());
    return n > 0 && (size_t)n < size;
}

/* Create temporaries for the pool; their directory is fsynced once before they are used, so
 * that each one's name is durable from the moment a put takes it. */
static bool fill_pool(struct fs_store *s, size_t want)
{
    struct pool_file fresh[POOL_SIZE];
    size_t n = 0;
    for (; n < want && n < POOL_SIZE; n++) {
        if (!temp_template(fresh[n].path, sizeof(fresh[n].path), s->tmp, "pool"))
            break;
        fresh[n].fd = mkostemp(fresh[n].path, O_CLOEXEC);
        if (fresh[n].fd < 0)
            break; /* full disk and the like: puts create their own and say why */
    }
    if (n == 0)
        return false;
    if (fsync_dir(s->tmp) < 0) {
        for (size_t i = 0; i < n; i++) {
            close(fresh[i].fd);
            unlink(fresh[i].path);
        }
        return false;
    }
    pthread_mutex_lock(&s->lock);
    size_t i = 0;
    for (; i < n && s->pool_count < POOL_SIZE; i++)
        s->pool[s->pool_count++] = fresh[i];
    pthread_mutex_unlock(&s->lock);
    for (; i < n; i++) {
        close(fresh[i].fd);
        unlink(fresh[i].path);
    }
    return true;
}

static void *syncer_main(void *arg)
{
    struct fs_store *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->stopping && s->pending_count == 0 &&
               (s->pool_count >= POOL_SIZE / 2 || s->pool_failed || !s->ready))
            pthread_cond_wait(&s->wake, &s->lock);
        if (s->pending_count) {
            /* Let more links gather: one fsync per directory for all of them. */
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += SYNC_DELAY_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) {
                until.tv_sec++;
                until.tv_nsec -= 1000000000L;
            }
            while (!s->stopping && s->pending_count < PENDING_MAX / 4 &&
                   pthread_cond_timedwait(&s->wake, &s->lock, &until) == 0)
                ;
        }
        struct pending_link *batch = s->pending;
        size_t n = s->pending_count;
        s->pending = NULL;
        s->pending_count = s->pending_cap = 0;
        size_t want = s->stopping || s->pool_failed || !s->ready ? 0 : POOL_SIZE - s->pool_count;
        bool stop = s->stopping;
        s->busy = true;
        pthread_mutex_unlock(&s->lock);

        if (n)
            sync_batch(s, batch, n);
        tr_free(batch);
        bool filled = want < POOL_SIZE / 2 || fill_pool(s, want);

        pthread_mutex_lock(&s->lock);
        s->busy = false;
        s->batches++;
        if (!filled)
            s->pool_failed = true; /* until a put asks again (take_pooled) */
        pthread_cond_broadcast(&s->synced);
        if (stop && s->pending_count == 0)
            break;
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Queue a committed link for the syncer. false: the queue is full (the disk is slow), the
 * caller makes the name durable itself. */
static bool queue_link(struct fs_store *s, const char *dir, const char *temp, const char *final)
{
    char *d = tr_strdup(dir), *t = tr_strdup(temp), *f = tr_strdup(final);
    bool queued = false;
    pthread_mutex_lock(&s->lock);
    if (d && t && f && s->pending_count < PENDING_MAX && !s->stopping) {
        if (s->pending_count == s->pending_cap) {
            size_t cap = s->pending_cap ? s->pending_cap * 2 : 64;
            struct pending_link *grown = tr_reallocarray(s->pending, cap, sizeof(*grown));
            if (grown) {
                s->pending = grown;
                s->pending_cap = cap;
            }
        }
        if (s->pending_count < s->pending_cap) {
            s->pending[s->pending_count++] = (struct pending_link){d, t, f};
            s->links++;
            queued = true;
            pthread_cond_signal(&s->wake);
        }
    }
    pthread_mutex_unlock(&s->lock);
    if (!queued) {
        tr_free(d);
        tr_free(t);
        tr_free(f);
    }
    return queued;
}

/* A put's temporary: "put-PID-*" (created by the put) or "pool-PID-*" (created ahead of time;
 * empty until a put takes it, and it keeps the name). */
static bool is_temporary(const char *name)
{
    return strncmp(name, "put-", 4) == 0 || strncmp(name, "pool-", 5) == 0;
}

/* Is the temporary another live process's (a `telerad delete` or `import` beside the server
 * opens the same store): its puts are under way, not left by a crash. Names without a PID
 * (older versions) and this process's own are not, nor is a live process that runs another
 * program (after a reboot the PID may belong to anything: taking its files for another
 * telerad's would keep a crash's leftover from being put back). */
static bool other_process_owns(const char *name)
{
    const char *dash = strchr(name, '-');
    char *end;
    long pid = dash ? strtol(dash + 1, &end, 10) : 0;
    if (pid <= 0 || *end != '-' || pid == (long)getpid())
        return false;
    if (kill((pid_t)pid, 0) < 0 && errno != EPERM)
        return false;
    char link[64], theirs[PATH_MAX], ours[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/%ld/exe", pid);
    ssize_t n = readlink(link, theirs, sizeof(theirs) - 1);
    ssize_t m = readlink("/proc/self/exe", ours, sizeof(ours) - 1);
    if (n < 0 || m < 0)
        return true; /* cannot tell (another user's process, no /proc): leave its files */
    theirs[n] = ours[m] = '\0';
    return strcmp(theirs, ours) == 0;
}

static void fs_settle(struct arc_objstore *store)
{
    struct fs_store *s = fs_of(store);
    pthread_mutex_lock(&s->lock);
    while (s->syncer_started && !s->stopping &&
           (s->pending_count || s->busy ||
            (s->ready && s->pool_count < POOL_SIZE / 2 && !s->pool_failed))) {
        pthread_cond_signal(&s->wake);
        pthread_cond_wait(&s->synced, &s->lock);
    }
    pthread_mutex_unlock(&s->lock);
}

/* Is `path` a file of the pool (not left by a crash: recovery and reconciliation keep it)? */
static bool in_pool(struct fs_store *s, const char *path)
{
    bool found = false;
    pthread_mutex_lock(&s->lock);
    for (size_t i = 0; i < s->pool_count && !found; i++)
        found = strcmp(s->pool[i].path, path) == 0;
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* Take a temporary from the pool (its name durable already), or false if it is empty. */
static bool take_pooled(struct fs_store *s, struct arc_put *p)
{
    bool taken = false;
    pthread_mutex_lock(&s->lock);
    if (s->pool_count && !s->stopping) {
        struct pool_file *f = &s->pool[--s->pool_count];
        p->fd = f->fd;
        memcpy(p->path, f->path, strlen(f->path) + 1);
        taken = true;
    }
    if (s->pool_count < POOL_SIZE / 2) {
        s->pool_failed = false;
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    return taken;
}

int arc_objstore_open_fs(const char *dir, struct arc_objstore **out, struct tr_error *err)
{
    struct fs_store *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    s->base.ops = &fs_ops;
    s->objects_fd = -1;
    if (snprintf(s->root, sizeof(s->root), "%s", dir) >= (int)sizeof(s->root) ||
        snprintf(s->objects, sizeof(s->objects), "%s/objects", dir) >= (int)sizeof(s->objects) ||
        snprintf(s->tmp, sizeof(s->tmp), "%s/tmp", dir) >= (int)sizeof(s->tmp)) {
        tr_free(s);
        return tr_error_set(err, TR_ELIMIT, "path too long: %s", dir);
    }
    const char *dirs[] = {s->root, s->objects, s->tmp};
    for (size_t i = 0; i < TR_ARRAY_SIZE(dirs); i++) {
        if (mkdir(dirs[i], 0750) < 0 && errno != EEXIST) {
            int e = errno;
            tr_free(s);
            return tr_error_set(err, TR_EIO, "cannot create %s: %s", dirs[i], strerror(e));
        }
    }
    fsync_dir(s->root);
    s->objects_fd = open(s->objects, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s->objects_fd < 0) {
        int e = errno;
        tr_free(s);
        return tr_error_set(err, TR_EIO, "cannot open %s: %s", dirs[1], strerror(e));
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_cond_init(&s->synced, NULL);
    /* Without the syncer every commit goes the plain way: slower, as safe. */
    s->syncer_started = pthread_create(&s->syncer, NULL, syncer_main, s) == 0;
    *out = &s->base;
    return 0;
}

static void fs_close(struct arc_objstore *store)
{
    struct fs_store *s = fs_of(store);
    if (s->syncer_started) {
        pthread_mutex_lock(&s->lock);
        s->stopping = true;
        pthread_cond_broadcast(&s->wake);
        pthread_mutex_unlock(&s->lock);
        pthread_join(s->syncer, NULL); /* it syncs what is pending before it returns */
    }
    for (size_t i = 0; i < s->pool_count; i++) {
        close(s->pool[i].fd);
        unlink(s->pool[i].path);
    }
    tr_free(s->pending);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    pthread_cond_destroy(&s->synced);
    if (s->objects_fd >= 0)
        close(s->objects_fd);
    tr_free(s);
}

static void fs_describe(const struct arc_objstore *store, char *buf, size_t size)
{
    snprintf(buf, size, "fs %s", ((const struct fs_store *)store)->root);
}

/* ---- puts: the temporary file (shared by the backends) ------------------------------------ */

static int counting_write(void *ctx, const void *data, size_t len)
{
    struct arc_put *p = ctx;
    if (p->status)
        return p->status;
    p->size += len;
    if (p->observe)
        p->observe(p, data, len);
    return p->status = tr_sink_write(&p->bs.sink, data, len);
}

/* The file end of a put's buffer. Filesystem puts hash every byte (the index keeps the sum)
 * and hand each written stretch of at least PUT_WRITE_BEHIND to the disk at once:
 * sync_file_range(SYNC_FILE_RANGE_WRITE) only starts the writes, waits for nothing and makes
 * nothing durable (put_sync's fdatasync still does that, but then finds most of the data
 * written). While a C-STORE data set is still on the wire, the disk is busy with its
 * beginning instead of idle until its end. */
static int put_file_write(void *ctx, const void *data, size_t len)
{
    struct arc_put *p = ctx;
    if (p->hash)
        XXH3_64bits_update(p->hash, data, len);
    const uint8_t *b = data;
    while (len) {
        ssize_t n = write(p->fd, b, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == ENOSPC || errno == EDQUOT ? TR_ELIMIT : TR_EIO;
        }
        b += n;
        len -= (size_t)n;
        p->written += (uint64_t)n;
    }
    if (p->local && p->written - p->scheduled >= PUT_WRITE_BEHIND) {
        /* Advisory: a write error shows again, and is reported, at fdatasync. */
        (void)sync_file_range(p->fd, (off_t)p->scheduled, (off_t)(p->written - p->scheduled),
                              SYNC_FILE_RANGE_WRITE);
        p->scheduled = p->written;
    }
    return 0;
}

static int put_init_sink(struct arc_put *p, struct tr_error *err)
{
    if (tr_bufsink_init(&p->bs, (struct tr_sink){put_file_write, p}, PUT_BUFFER) < 0)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    p->counting = (struct tr_sink){counting_write, p};
    return 0;
}

int arc_put_init_temp(struct arc_put *p, struct arc_objstore *s, const char *dir,
                      struct tr_error *err)
{
    p->store = s;
    p->fd = -1;
    if (!temp_template(p->path, sizeof(p->path), dir, "put"))
        return tr_error_set(err, TR_ELIMIT, "path too long: %s", dir);
    p->fd = mkostemp(p->path, O_CLOEXEC);
    if (p->fd < 0) {
        int e = errno;
        return tr_error_set(err, e == ENOSPC ? TR_ELIMIT : TR_EIO,
                            "cannot create a file in %s: %s", dir, strerror(e));
    }
    int rc = put_init_sink(p, err);
    if (rc) {
        close(p->fd);
        p->fd = -1;
        unlink(p->path);
    }
    return rc;
}

int arc_put_flush_temp(struct arc_put *p, struct tr_error *err)
{
    if (p->fd < 0)
        return 0;
    int rc = p->status ? p->status : tr_bufsink_flush(&p->bs);
    if (rc)
        return tr_error_set(err, rc, "cannot write %s: %s", p->path,
                            errno ? strerror(errno) : tr_strerror(rc));
    return 0;
}

void arc_put_release_temp(struct arc_put *p)
{
    tr_bufsink_release(&p->bs);
    if (p->hash)
        XXH3_freeState(p->hash);
    p->hash = NULL;
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    if (p->path[0])
        unlink(p->path);
    p->path[0] = '\0';
}

void arc_remove_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "put-", 4) != 0)
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) < (int)sizeof(path))
            unlink(path);
    }
    closedir(d);
}

/* ---- the interface ------------------------------------------------------------------------ */

void arc_objstore_close(struct arc_objstore *s)
{
    if (s)
        s->ops->close(s);
}

void arc_objstore_describe(const struct arc_objstore *s, char *buf, size_t size)
{
    s->ops->describe(s, buf, size);
}

bool arc_objstore_is_local(const struct arc_objstore *s)
{
    return s->ops == &fs_ops;
}

int arc_put_begin(struct arc_objstore *s, struct arc_put **out, struct tr_error *err)
{
    return s->ops->put_begin(s, out, err);
}

struct tr_sink *arc_put_sink(struct arc_put *p)
{
    return &p->counting;
}

uint64_t arc_put_size(const struct arc_put *p)
{
    return p->size;
}

const char *arc_put_temp_path(const struct arc_put *p)
{
    return p->path;
}

int arc_put_flush(struct arc_put *p, struct tr_error *err)
{
    return p->store->ops->put_flush(p, err);
}

bool arc_put_target_exists(struct arc_put *p, const char *key)
{
    return p->store->ops->put_target_exists(p, key);
}

int arc_put_commit(struct arc_put *p, const char *key, struct tr_error *err)
{
    return p->store->ops->put_commit(p, key, false, err);
}

int arc_put_commit_replace(struct arc_put *p, const char *key, struct tr_error *err)
{
    return p->store->ops->put_commit(p, key, true, err);
}

void arc_put_abort(struct arc_put *p)
{
    if (p)
        p->store->ops->put_abort(p);
}

bool arc_object_exists(struct arc_objstore *s, const char *key)
{
    return s->ops->exists(s, key);
}

int arc_object_path(struct arc_objstore *s, const char *key, char *path, size_t size)
{
    return s->ops->path ? s->ops->path(s, key, path, size) : TR_EUNSUPPORTED;
}

int arc_object_size(struct arc_objstore *s, const char *key, uint64_t *size, struct tr_error *err)
{
    return s->ops->size(s, key, size, err);
}

ssize_t arc_object_read(struct arc_objstore *s, const char *key, uint64_t offset, void *buf,
                        size_t len, struct tr_error *err)
{
    return s->ops->read(s, key, offset, buf, len, err);
}

int arc_object_get(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
                   const struct tr_sink *sink, struct tr_error *err)
{
    return s->ops->get(s, key, offset, length, sink, err);
}

int arc_object_same(struct arc_objstore *s, const char *key, const char *temp_path, bool *same,
                    struct tr_error *err)
{
    return s->ops->same(s, key, temp_path, same, err);
}

int arc_object_delete(struct arc_objstore *s, const char *key, struct tr_error *err)
{
    return s->ops->delete_object(s, key, err);
}

int arc_object_open(struct arc_objstore *s, const char *key, struct arc_object_handle **out,
                    struct tr_error *err)
{
    return s->ops->open_range(s, key, 0, UINT64_MAX, true, out, err);
}

int arc_object_open_range(struct arc_objstore *s, const char *key, uint64_t offset,
                          uint64_t length, struct arc_object_handle **out, struct tr_error *err)
{
    return s->ops->open_range(s, key, offset, length, false, out, err);
}

const char *arc_object_handle_path(const struct arc_object_handle *h)
{
    return h->path;
}

int arc_object_handle_fd(struct arc_object_handle *h)
{
    if (h->fd < 0)
        h->fd = open(h->path, O_RDONLY | O_CLOEXEC);
    return h->fd;
}

uint64_t arc_object_handle_offset(const struct arc_object_handle *h)
{
    return h->offset;
}

uint64_t arc_object_handle_length(const struct arc_object_handle *h)
{
    return h->length;
}

bool arc_object_handle_complete(const struct arc_object_handle *h)
{
    return h->complete;
}

uint64_t arc_object_handle_object_size(const struct arc_object_handle *h)
{
    return h->object_size;
}

void arc_object_close(struct arc_object_handle *h)
{
    if (!h)
        return;
    if (h->fd >= 0)
        close(h->fd);
    h->fd = -1;
    h->store->ops->handle_close(h);
}

int arc_objstore_reconcile(struct arc_objstore *s,
                           int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                           struct tr_error *err)
{
    return s->ops->reconcile(s, fn, ctx, err);
}

int arc_objstore_free_space(struct arc_objstore *s, uint64_t *bytes)
{
    return s->ops->free_space(s, bytes);
}

void arc_objstore_settle(struct arc_objstore *s)
{
    if (s->ops->settle)
        s->ops->settle(s);
}

int arc_objstore_recover_puts(struct arc_objstore *s,
                              int (*decide)(void *ctx, const char *temp_path, char *key,
                                            size_t key_size),
                              void *ctx, struct arc_recover_stats *stats, struct tr_error *err)
{
    memset(stats, 0, sizeof(*stats));
    return s->ops->recover_puts ? s->ops->recover_puts(s, decide, ctx, stats, err) : 0;
}

bool arc_put_checksum(const struct arc_put *p, uint64_t *sum)
{
    if (!p->hash)
        return false;
    *sum = XXH3_64bits_digest(p->hash);
    return true;
}

int arc_file_checksum(const char *path, uint64_t *sum, uint64_t *size, struct tr_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tr_error_set(err, TR_EIO, "cannot open %s: %s", path, strerror(errno));
    XXH3_state_t *h = XXH3_createState();
    uint8_t *buf = tr_malloc(1 << 20);
    int rc = h && buf ? 0 : tr_error_set(err, TR_ENOMEM, "out of memory");
    uint64_t total = 0;
    if (rc == 0)
        XXH3_64bits_reset(h);
    for (ssize_t n; rc == 0 && (n = read(fd, buf, 1 << 20)) != 0;) {
        if (n < 0) {
            if (errno != EINTR)
                rc = tr_error_set(err, TR_EIO, "cannot read %s at byte %llu: %s", path,
                                  (unsigned long long)total, strerror(errno));
            continue;
        }
        XXH3_64bits_update(h, buf, (size_t)n);
        total += (uint64_t)n;
    }
    if (rc == 0) {
        *sum = XXH3_64bits_digest(h);
        *size = total;
    }
    tr_free(buf);
    if (h)
        XXH3_freeState(h);
    close(fd);
    return rc;
}

/* ---- filesystem: puts --------------------------------------------------------------------- */

static int fs_put_begin(struct arc_objstore *store, struct arc_put **out, struct tr_error *err)
{
    struct arc_put *p = tr_calloc(1, sizeof(*p));
    if (!p)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    struct fs_store *s = fs_of(store);
    int rc;
    p->store = store;
    p->fd = -1;
    if (take_pooled(s, p)) {
        p->durable_name = true;
        rc = put_init_sink(p, err);
    } else {
        rc = arc_put_init_temp(p, store, s->tmp, err);
    }
    p->local = true;
    if (rc == 0 && !(p->hash = XXH3_createState()))
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    if (rc == 0)
        XXH3_64bits_reset(p->hash);
    if (rc) {
        arc_put_release_temp(p);
        tr_free(p);
        return rc;
    }
    *out = p;
    return 0;
}

static void fs_put_abort(struct arc_put *p)
{
    arc_put_release_temp(p);
    tr_free(p);
}

static int fs_put_flush(struct arc_put *p, struct tr_error *err)
{
    return arc_put_flush_temp(p, err);
}

static bool fs_exists(struct arc_objstore *s, const char *key)
{
    char path[PATH_MAX];
    struct stat st;
    return key_path(s, key, path, sizeof(path)) == 0 && stat(path, &st) == 0;
}

static bool fs_put_target_exists(struct arc_put *p, const char *key)
{
    return fs_exists(p->store, key);
}

/* Flush and make the bytes durable; the file stays under its temporary name. */
static int put_sync(struct arc_put *p, struct tr_error *err)
{
    if (p->fd < 0)
        return 0; /* synced already */
    int rc = arc_put_flush_temp(p, err);
    if (rc)
        return rc;
    if (fdatasync(p->fd) < 0)
        return tr_error_set(err, TR_EIO, "cannot sync %s: %s", p->path, strerror(errno));
    if (close(p->fd) < 0) {
        p->fd = -1;
        return tr_error_set(err, TR_EIO, "cannot close %s: %s", p->path, strerror(errno));
    }
    p->fd = -1;
    return 0;
}

static int fs_put_commit(struct arc_put *p, const char *key, bool replace, struct tr_error *err)
{
    struct fs_store *s = fs_of(p->store);
    char final[PATH_MAX];
    int rc = key_path(p->store, key, final, sizeof(final));
    if (rc) {
        fs_put_abort(p);
        return tr_error_set(err, rc, "invalid object key \"%s\"", key);
    }
    if ((rc = put_sync(p, err))) {
        fs_put_abort(p);
        return rc;
    }
    if (make_parents(s->objects, final) < 0) {
        int e = errno;
        fs_put_abort(p);
        return tr_error_set(err, TR_EIO, "cannot create the directory of %s: %s", final,
                            strerror(e));
    }
    char dir[PATH_MAX];
    memcpy(dir, final, strlen(final) + 1);
    *strrchr(dir, '/') = '\0';
    if (!replace && p->durable_name && !s->no_links && s->syncer_started) {
        /* The fast way (see the top of this file): a second name now, durable soon. */
        rc = link(p->path, final);
        if (rc == 0) {
            if (!queue_link(s, dir, p->path, final)) {
                if (fsync_dir(dir) < 0) {
                    int e = errno;
                    unlink(final);
                    fs_put_abort(p);
                    return tr_error_set(err, TR_EIO, "cannot sync %s: %s", dir, strerror(e));
                }
                unlink(p->path);
            }
            p->path[0] = '\0'; /* the syncer removes it */
            fs_put_abort(p);
            return 0;
        }
        if (errno == EEXIST)
            return tr_error_set(err, TR_EEXIST, "object %s exists", key); /* put stays open */
        if (errno == EPERM || errno == ENOTSUP || errno == EOPNOTSUPP || errno == EMLINK)
            s->no_links = true; /* and the plain way below */
    }
    if (replace) {
        rc = rename(p->path, final);
    } else {
        rc = renameat2(AT_FDCWD, p->path, AT_FDCWD, final, RENAME_NOREPLACE);
        if (rc < 0 && errno == EINVAL) {
            /* Filesystems without RENAME_NOREPLACE: link (fails if the name exists), unlink. */
            rc = link(p->path, final);
            if (rc == 0)
                unlink(p->path);
        }
    }
    if (rc < 0) {
        int e = errno;
        if (e == EEXIST)
            return tr_error_set(err, TR_EEXIST, "object %s exists", key); /* put stays open */
        fs_put_abort(p);
        return tr_error_set(err, TR_EIO, "cannot rename into %s: %s", final, strerror(e));
    }
    p->path[0] = '\0'; /* renamed: nothing to remove */
    /* The rename is durable once the directory is. */
    if (fsync_dir(dir) < 0) {
        int e = errno;
        fs_put_abort(p);
        return tr_error_set(err, TR_EIO, "cannot sync %s: %s", dir, strerror(e));
    }
    fs_put_abort(p);
    return 0;
}

/* ---- filesystem: reading ------------------------------------------------------------------ */

static int fs_path(struct arc_objstore *s, const char *key, char *path, size_t size)
{
    return key_path(s, key, path, size);
}

static int fs_size(struct arc_objstore *s, const char *key, uint64_t *size, struct tr_error *err)
{
    char path[PATH_MAX];
    int rc = key_path(s, key, path, sizeof(path));
    if (rc)
        return tr_error_set(err, rc, "invalid object key \"%s\"", key);
    struct stat st;
    if (stat(path, &st) < 0)
        return tr_error_set(err, errno == ENOENT ? TR_ENOTFOUND : TR_EIO, "object %s: %s", key,
                            strerror(errno));
    *size = (uint64_t)st.st_size;
    return 0;
}

static int open_object(struct arc_objstore *s, const char *key, struct tr_error *err)
{
    char path[PATH_MAX];
    int rc = key_path(s, key, path, sizeof(path));
    if (rc)
        return tr_error_set(err, rc, "invalid object key \"%s\"", key);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tr_error_set(err, errno == ENOENT ? TR_ENOTFOUND : TR_EIO, "object %s: %s", key,
                            strerror(errno));
    return fd;
}

static ssize_t fs_read(struct arc_objstore *s, const char *key, uint64_t offset, void *buf,
                       size_t len, struct tr_error *err)
{
    int fd = open_object(s, key, err);
    if (fd < 0)
        return fd;
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, (char *)buf + got, len - got, (off_t)(offset + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close(fd);
            return tr_error_set(err, TR_EIO, "object %s: %s", key, strerror(e));
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return (ssize_t)got;
}

static int fs_get(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
                  const struct tr_sink *sink, struct tr_error *err)
{
    int fd = open_object(s, key, err);
    if (fd < 0)
        return fd;
    uint8_t *buf = tr_malloc(PUT_BUFFER);
    if (!buf) {
        close(fd);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    int rc = 0;
    uint64_t done = 0;
    while (done < length) {
        size_t want = (size_t)TR_MIN((uint64_t)PUT_BUFFER, length - done);
        ssize_t n = pread(fd, buf, want, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = tr_error_set(err, TR_EIO, "object %s: %s", key, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if ((rc = tr_sink_write(sink, buf, (size_t)n))) {
            tr_error_set(err, rc, "cannot send object %s: %s", key, tr_strerror(rc));
            break;
        }
        done += (uint64_t)n;
    }
    tr_free(buf);
    close(fd);
    return rc;
}

static int fs_same(struct arc_objstore *s, const char *key, const char *temp_path, bool *same,
                   struct tr_error *err)
{
    *same = false;
    int a = open_object(s, key, err);
    if (a < 0)
        return a;
    int b = open(temp_path, O_RDONLY | O_CLOEXEC);
    if (b < 0) {
        close(a);
        return tr_error_set(err, TR_EIO, "%s: %s", temp_path, strerror(errno));
    }
    struct stat sa, sb;
    int rc = 0;
    if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0) {
        rc = tr_error_set(err, TR_EIO, "stat: %s", strerror(errno));
    } else if (sa.st_size == sb.st_size) {
        uint8_t *ba = tr_malloc(65536), *bb = tr_malloc(65536);
        if (!ba || !bb) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        } else {
            bool equal = true;
            for (off_t off = 0; equal && off < sa.st_size;) {
                ssize_t na = pread(a, ba, 65536, off), nb = pread(b, bb, 65536, off);
                if (na <= 0 || na != nb) {
                    equal = na == 0 && nb == 0 && off == sa.st_size;
                    if (na < 0 || nb < 0)
                        rc = tr_error_set(err, TR_EIO, "read: %s", strerror(errno));
                    break;
                }
                equal = memcmp(ba, bb, (size_t)na) == 0;
                off += na;
            }
            *same = equal && rc == 0;
        }
        tr_free(ba);
        tr_free(bb);
    }
    close(a);
    close(b);
    return rc;
}

static int fs_delete(struct arc_objstore *s, const char *key, struct tr_error *err)
{
    char path[PATH_MAX];
    int rc = key_path(s, key, path, sizeof(path));
    if (rc)
        return tr_error_set(err, rc, "invalid object key \"%s\"", key);
    /* A second name the syncer has not removed yet goes first (else the bytes would stay, and
     * a crash before the syncer ran would bring the object back). */
    struct fs_store *fs = fs_of(s);
    pthread_mutex_lock(&fs->lock);
    for (size_t i = 0; i < fs->pending_count; i++) {
        struct pending_link *l = &fs->pending[i];
        if (l->temp && strcmp(l->final, path) == 0) {
            unlink(l->temp);
            tr_free(l->temp);
            l->temp = NULL;
        }
    }
    pthread_mutex_unlock(&fs->lock);
    if (unlink(path) < 0 && errno != ENOENT)
        return tr_error_set(err, TR_EIO, "cannot delete %s: %s", key, strerror(errno));
    char dir[PATH_MAX];
    memcpy(dir, path, strlen(path) + 1);
    *strrchr(dir, '/') = '\0';
    fsync_dir(dir);
    return 0;
}

/* The object itself: no copy. The descriptor is opened when asked for (a header read by path
 * costs what it did before handles existed). */
static int fs_open_range(struct arc_objstore *s, const char *key, uint64_t offset,
                         uint64_t length, bool whole, struct arc_object_handle **out,
                         struct tr_error *err)
{
    (void)whole;
    struct arc_object_handle *h = tr_calloc(1, sizeof(*h));
    if (!h)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    h->store = s;
    h->fd = -1;
    int rc = key_path(s, key, h->path, sizeof(h->path));
    if (rc) {
        tr_free(h);
        return tr_error_set(err, rc, "invalid object key \"%s\"", key);
    }
    struct stat st;
    if (stat(h->path, &st) < 0) {
        int e = errno;
        tr_free(h);
        return tr_error_set(err, e == ENOENT ? TR_ENOTFOUND : TR_EIO, "object %s: %s", key,
                            strerror(e));
    }
    h->object_size = (uint64_t)st.st_size;
    h->complete = true;
    h->offset = TR_MIN(offset, h->object_size);
    h->length = TR_MIN(length, h->object_size - h->offset);
    *out = h;
    return 0;
}

static void fs_handle_close(struct arc_object_handle *h)
{
    tr_free(h);
}

/* ---- filesystem: reconciliation ----------------------------------------------------------- */

static int walk(struct fs_store *s, const char *rel, int depth,
                int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                struct tr_error *err)
{
    char dir[PATH_MAX];
    if (snprintf(dir, sizeof(dir), "%s%s%s", s->objects, *rel ? "/" : "", rel) >= (int)sizeof(dir))
        return 0; /* deeper than a path can go: not one of ours */
    DIR *d = opendir(dir);
    if (!d)
        return tr_error_set(err, TR_EIO, "cannot list %s: %s", dir, strerror(errno));
    int rc = 0;
    struct dirent *de;
    while (rc == 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char key[PATH_MAX];
        if (snprintf(key, sizeof(key), "%s%s%s", rel, *rel ? "/" : "", de->d_name) >=
            (int)sizeof(key))
            continue;
        char path[PATH_MAX];
        struct stat st;
        if (snprintf(path, sizeof(path), "%s/%s", s->objects, key) >= (int)sizeof(path) ||
            stat(path, &st) < 0)
            continue;
        if (S_ISDIR(st.st_mode)) {
            if (depth < 8)
                rc = walk(s, key, depth + 1, fn, ctx, err);
        } else if (S_ISREG(st.st_mode) && fn) {
            if (fn(ctx, key, (uint64_t)st.st_size) < 0)
                rc = 1;
        }
    }
    closedir(d);
    return rc < 0 ? rc : 0;
}

/* Leftover temporaries after a crash (see the top of this file). */
static int fs_recover_puts(struct arc_objstore *store,
                           int (*decide)(void *ctx, const char *temp_path, char *key,
                                         size_t key_size),
                           void *ctx, struct arc_recover_stats *stats, struct tr_error *err)
{
    struct fs_store *s = fs_of(store);
    DIR *d = opendir(s->tmp);
    if (!d)
        return tr_error_set(err, TR_EIO, "cannot list %s: %s", s->tmp, strerror(errno));
    struct dirent *de;
    while ((de = readdir(d))) {
        if (!is_temporary(de->d_name) || other_process_owns(de->d_name))
            continue;
        char temp[PATH_MAX], key[1100], final[PATH_MAX];
        if (snprintf(temp, sizeof(temp), "%s/%s", s->tmp, de->d_name) >= (int)sizeof(temp))
            continue;
        struct stat ts, fs;
        if (in_pool(s, temp) || stat(temp, &ts) < 0 || !S_ISREG(ts.st_mode))
            continue;
        bool keep = ts.st_size > 0 && decide(ctx, temp, key, sizeof(key)) == 1 &&
                    key_path(store, key, final, sizeof(final)) == 0;
        if (keep && stat(final, &fs) == 0) {
            /* Its name made it to the disk: the temporary was the second name of the object
             * (or a copy of an instance stored since; the stored one stays). */
            if (fs.st_ino == ts.st_ino && fs.st_dev == ts.st_dev)
                stats->linked++;
            else
                stats->discarded++;
            keep = false;
        } else if (keep) {
            char dir[PATH_MAX];
            memcpy(dir, final, strlen(final) + 1);
            *strrchr(dir, '/') = '\0';
            if (make_parents(s->objects, final) == 0 && rename(temp, final) == 0 &&
                fsync_dir(dir) == 0) {
                stats->restored++;
                continue;
            }
            closedir(d);
            return tr_error_set(err, TR_EIO, "cannot put %s back as %s: %s", temp, final,
                                strerror(errno));
        } else {
            stats->discarded++;
        }
        unlink(temp);
    }
    closedir(d);
    return 0;
}

static int fs_reconcile(struct arc_objstore *store,
                        int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                        struct tr_error *err)
{
    struct fs_store *s = fs_of(store);
    /* Temporaries are puts that never committed: nothing was acknowledged for them (those
     * that were are put back by arc_objstore_recover_puts, called first). The pool's stay. */
    DIR *d = opendir(s->tmp);
    struct dirent *de;
    while (d && (de = readdir(d))) {
        char path[PATH_MAX];
        if (is_temporary(de->d_name) && !other_process_owns(de->d_name) &&
            snprintf(path, sizeof(path), "%s/%s", s->tmp, de->d_name) < (int)sizeof(path) &&
            !in_pool(s, path))
            unlink(path);
    }
    if (d)
        closedir(d);
    pthread_mutex_lock(&s->lock);
    s->ready = true;
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    return walk(s, "", 0, fn, ctx, err);
}

static int fs_free_space(struct arc_objstore *store, uint64_t *bytes)
{
    struct statvfs v;
    if (statvfs(fs_of(store)->objects, &v) < 0)
        return TR_EIO;
    *bytes = (uint64_t)v.f_bavail * v.f_frsize;
    return 0;
}

static const struct arc_objstore_ops fs_ops = {
    .name = "fs",
    .close = fs_close,
    .describe = fs_describe,
    .put_begin = fs_put_begin,
    .put_flush = fs_put_flush,
    .put_target_exists = fs_put_target_exists,
    .put_commit = fs_put_commit,
    .put_abort = fs_put_abort,
    .recover_puts = fs_recover_puts,
    .settle = fs_settle,
    .exists = fs_exists,
    .path = fs_path,
    .size = fs_size,
    .read = fs_read,
    .get = fs_get,
    .same = fs_same,
    .delete_object = fs_delete,
    .open_range = fs_open_range,
    .handle_close = fs_handle_close,
    .reconcile = fs_reconcile,
    .free_space = fs_free_space,
};
