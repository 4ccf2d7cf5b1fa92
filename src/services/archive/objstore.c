/*
 * objstore.c - the filesystem backend of the object store (see objstore.h).
 *
 * Layout under the root: objects/<key> for committed objects, tmp/ for puts in progress.
 * A commit is: flush, fdatasync the file, rename it to objects/<key> (without replacing an
 * existing object unless asked), fsync the directory. Directories created on the way are
 * fsynced into their parents.
 */
#include "common.h"
#include "objstore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define PUT_BUFFER (256u << 10)

struct arc_objstore {
    char root[PATH_MAX];
    char objects[PATH_MAX];
    char tmp[PATH_MAX];
    int objects_fd; /* for fsync of the top directory */
};

struct arc_put {
    struct arc_objstore *store;
    int fd;
    char path[PATH_MAX];
    struct tr_bufsink bs;
    struct tr_sink counting;
    uint64_t size;
    int status;
};

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

static bool key_is_valid(const char *key)
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

static int key_path(struct arc_objstore *s, const char *key, char *path, size_t size)
{
    if (!key_is_valid(key))
        return TR_EINVAL;
    int n = snprintf(path, size, "%s/%s", s->objects, key);
    return n < 0 || (size_t)n >= size ? TR_ELIMIT : 0;
}

int arc_objstore_open_fs(const char *dir, struct arc_objstore **out, struct tr_error *err)
{
    struct arc_objstore *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
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
    *out = s;
    return 0;
}

void arc_objstore_close(struct arc_objstore *s)
{
    if (!s)
        return;
    if (s->objects_fd >= 0)
        close(s->objects_fd);
    tr_free(s);
}

/* ---- puts --------------------------------------------------------------------------------- */

static int counting_write(void *ctx, const void *data, size_t len)
{
    struct arc_put *p = ctx;
    if (p->status)
        return p->status;
    p->size += len;
    return p->status = tr_sink_write(&p->bs.sink, data, len);
}

int arc_put_begin(struct arc_objstore *s, struct arc_put **out, struct tr_error *err)
{
    struct arc_put *p = tr_calloc(1, sizeof(*p));
    if (!p)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    p->store = s;
    if (snprintf(p->path, sizeof(p->path), "%s/put-XXXXXX", s->tmp) >= (int)sizeof(p->path)) {
        tr_free(p);
        return tr_error_set(err, TR_ELIMIT, "path too long: %s", s->tmp);
    }
    p->fd = mkostemp(p->path, O_CLOEXEC);
    if (p->fd < 0) {
        int e = errno;
        tr_free(p);
        return tr_error_set(err, e == ENOSPC ? TR_ELIMIT : TR_EIO, "cannot create a file in %s: %s",
                            s->tmp, strerror(e));
    }
    if (tr_bufsink_init(&p->bs, tr_sink_fd(&p->fd), PUT_BUFFER) < 0) {
        close(p->fd);
        unlink(p->path);
        tr_free(p);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    p->counting = (struct tr_sink){counting_write, p};
    *out = p;
    return 0;
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

void arc_put_abort(struct arc_put *p)
{
    if (!p)
        return;
    tr_bufsink_release(&p->bs);
    if (p->fd >= 0)
        close(p->fd);
    unlink(p->path);
    tr_free(p);
}

int arc_put_flush(struct arc_put *p, struct tr_error *err)
{
    if (p->fd < 0)
        return 0;
    int rc = p->status ? p->status : tr_bufsink_flush(&p->bs);
    if (rc)
        return tr_error_set(err, rc, "cannot write %s: %s", p->path,
                            errno ? strerror(errno) : tr_strerror(rc));
    return 0;
}

/* Flush and make the bytes durable; the file stays under its temporary name. */
static int put_sync(struct arc_put *p, struct tr_error *err)
{
    if (p->fd < 0)
        return 0; /* synced already */
    int rc = p->status ? p->status : tr_bufsink_flush(&p->bs);
    if (rc)
        return tr_error_set(err, rc, "cannot write %s: %s", p->path,
                            errno ? strerror(errno) : tr_strerror(rc));
    if (fdatasync(p->fd) < 0)
        return tr_error_set(err, TR_EIO, "cannot sync %s: %s", p->path, strerror(errno));
    if (close(p->fd) < 0) {
        p->fd = -1;
        return tr_error_set(err, TR_EIO, "cannot close %s: %s", p->path, strerror(errno));
    }
    p->fd = -1;
    return 0;
}

static int put_commit(struct arc_put *p, const char *key, bool replace, struct tr_error *err)
{
    struct arc_objstore *s = p->store;
    char final[PATH_MAX];
    int rc = key_path(s, key, final, sizeof(final));
    if (rc) {
        arc_put_abort(p);
        return tr_error_set(err, rc, "invalid object key \"%s\"", key);
    }
    if ((rc = put_sync(p, err))) {
        arc_put_abort(p);
        return rc;
    }
    if (make_parents(s->objects, final) < 0) {
        int e = errno;
        arc_put_abort(p);
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
        arc_put_abort(p);
        return tr_error_set(err, TR_EIO, "cannot rename into %s: %s", final, strerror(e));
    }
    /* The rename is durable once the directory is. */
    char dir[PATH_MAX];
    memcpy(dir, final, strlen(final) + 1);
    *strrchr(dir, '/') = '\0';
    if (fsync_dir(dir) < 0) {
        int e = errno;
        tr_bufsink_release(&p->bs);
        tr_free(p);
        return tr_error_set(err, TR_EIO, "cannot sync %s: %s", dir, strerror(e));
    }
    tr_bufsink_release(&p->bs);
    tr_free(p);
    return 0;
}

int arc_put_commit(struct arc_put *p, const char *key, struct tr_error *err)
{
    return put_commit(p, key, false, err);
}

int arc_put_commit_replace(struct arc_put *p, const char *key, struct tr_error *err)
{
    return put_commit(p, key, true, err);
}

/* ---- reading ------------------------------------------------------------------------------ */

bool arc_object_exists(struct arc_objstore *s, const char *key)
{
    char path[PATH_MAX];
    struct stat st;
    return key_path(s, key, path, sizeof(path)) == 0 && stat(path, &st) == 0;
}

int arc_object_path(struct arc_objstore *s, const char *key, char *path, size_t size)
{
    return key_path(s, key, path, size);
}

int arc_object_size(struct arc_objstore *s, const char *key, uint64_t *size, struct tr_error *err)
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

ssize_t arc_object_read(struct arc_objstore *s, const char *key, uint64_t offset, void *buf,
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

int arc_object_get(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
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

int arc_object_same(struct arc_objstore *s, const char *key, const char *temp_path, bool *same,
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

int arc_object_delete(struct arc_objstore *s, const char *key, struct tr_error *err)
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

/* ---- reconciliation ----------------------------------------------------------------------- */

static int walk(struct arc_objstore *s, const char *rel, int depth,
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

int arc_objstore_reconcile(struct arc_objstore *s,
                           int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                           struct tr_error *err)
{
    /* Temporaries are puts that never committed: nothing was acknowledged for them. */
    DIR *d = opendir(s->tmp);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strncmp(de->d_name, "put-", 4) != 0)
                continue;
            char path[PATH_MAX];
            if (snprintf(path, sizeof(path), "%s/%s", s->tmp, de->d_name) < (int)sizeof(path))
                unlink(path);
        }
        closedir(d);
    }
    return walk(s, "", 0, fn, ctx, err);
}

int arc_objstore_free_space(struct arc_objstore *s, uint64_t *bytes)
{
    struct statvfs v;
    if (statvfs(s->objects, &v) < 0)
        return TR_EIO;
    *bytes = (uint64_t)v.f_bavail * v.f_frsize;
    return 0;
}
