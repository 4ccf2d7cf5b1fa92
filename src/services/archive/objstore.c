/*
 * objstore.c - the object store's interface (see objstore.h), dispatched to a backend, and the
 * filesystem backend.
 *
 * Filesystem layout under the root: objects/<key> for committed objects, tmp/ for puts in
 * progress. A commit is: flush, fdatasync the file, rename it to objects/<key> (without
 * replacing an existing object unless asked), fsync the directory. Directories created on the
 * way are fsynced into their parents.
 */
#include "common.h"
#include "objstore_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PUT_BUFFER (256u << 10)

struct fs_store {
    struct arc_objstore base;
    char root[PATH_MAX];
    char objects[PATH_MAX];
    char tmp[PATH_MAX];
    int objects_fd; /* for fsync of the top directory */
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
    *out = &s->base;
    return 0;
}

static void fs_close(struct arc_objstore *store)
{
    struct fs_store *s = fs_of(store);
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

int arc_put_init_temp(struct arc_put *p, struct arc_objstore *s, const char *dir,
                      struct tr_error *err)
{
    p->store = s;
    p->fd = -1;
    if (snprintf(p->path, sizeof(p->path), "%s/put-XXXXXX", dir) >= (int)sizeof(p->path))
        return tr_error_set(err, TR_ELIMIT, "path too long: %s", dir);
    p->fd = mkostemp(p->path, O_CLOEXEC);
    if (p->fd < 0) {
        int e = errno;
        return tr_error_set(err, e == ENOSPC ? TR_ELIMIT : TR_EIO,
                            "cannot create a file in %s: %s", dir, strerror(e));
    }
    if (tr_bufsink_init(&p->bs, tr_sink_fd(&p->fd), PUT_BUFFER) < 0) {
        close(p->fd);
        p->fd = -1;
        unlink(p->path);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    p->counting = (struct tr_sink){counting_write, p};
    return 0;
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

/* ---- filesystem: puts --------------------------------------------------------------------- */

static int fs_put_begin(struct arc_objstore *store, struct arc_put **out, struct tr_error *err)
{
    struct arc_put *p = tr_calloc(1, sizeof(*p));
    if (!p)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = arc_put_init_temp(p, store, fs_of(store)->tmp, err);
    if (rc) {
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
    char dir[PATH_MAX];
    memcpy(dir, final, strlen(final) + 1);
    *strrchr(dir, '/') = '\0';
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

static int fs_reconcile(struct arc_objstore *store,
                        int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                        struct tr_error *err)
{
    struct fs_store *s = fs_of(store);
    /* Temporaries are puts that never committed: nothing was acknowledged for them. */
    arc_remove_temporaries(s->tmp);
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
