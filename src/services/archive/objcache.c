/*
 * objcache.c - the S3 backend's on-disk read cache (see objstore_int.h): whole objects in one
 * directory, bounded in bytes, least recently used out first; entries in use are pinned and
 * never removed under their user.
 *
 * Bookkeeping is in memory (a hash table of entries and a doubly linked LRU list under one
 * mutex); the directory is emptied at open, so the cache never outlives the process that knows
 * what is in it. Files are named "<16 hex digits of a hash of the key>-<sequence>": a key
 * replaced while its old copy is pinned has two files for a moment, never one file changing
 * under a reader.
 */
#include "common.h"
#include "objstore_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct objcache_entry {
    char *key;
    char name[40];
    uint64_t size;
    char etag[80];
    uint64_t checked;        /* monotonic seconds of the last check against the store */
    unsigned pins;
    bool doomed;             /* out of the table: removed when the last pin goes */
    struct objcache_entry *hash_next;
    struct objcache_entry *newer, *older; /* LRU list (live entries only) */
};

struct objcache {
    char dir[PATH_MAX];
    uint64_t capacity, used;
    pthread_mutex_t lock;
    struct objcache_entry **bucket;
    size_t buckets, count;
    struct objcache_entry *newest, *oldest;
    uint64_t sequence;
};

static uint64_t now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof(path), "%s/%s", dir, de->d_name) < (int)sizeof(path))
            unlink(path);
    }
    closedir(d);
}

int objcache_open(const char *dir, uint64_t capacity, struct objcache **out,
                  struct tr_error *err)
{
    struct objcache *c = tr_calloc(1, sizeof(*c));
    if (!c)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    if (snprintf(c->dir, sizeof(c->dir), "%s", dir) >= (int)sizeof(c->dir)) {
        tr_free(c);
        return tr_error_set(err, TR_ELIMIT, "path too long: %s", dir);
    }
    if (mkdir(dir, 0750) < 0 && errno != EEXIST) {
        int e = errno;
        tr_free(c);
        return tr_error_set(err, TR_EIO, "cannot create %s: %s", dir, strerror(e));
    }
    empty_dir(dir);
    c->buckets = 256;
    c->bucket = tr_calloc(c->buckets, sizeof(*c->bucket));
    if (!c->bucket) {
        tr_free(c);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    c->capacity = capacity;
    pthread_mutex_init(&c->lock, NULL);
    *out = c;
    return 0;
}

static void entry_path(const struct objcache *c, const struct objcache_entry *e, char *path,
                       size_t size)
{
    if (snprintf(path, size, "%s/%s", c->dir, e->name) >= (int)size)
        path[0] = '\0'; /* cannot happen: the cache directory is checked at open */
}

static void entry_free(struct objcache *c, struct objcache_entry *e)
{
    char path[PATH_MAX];
    entry_path(c, e, path, sizeof(path));
    unlink(path);
    c->used -= e->size;
    tr_free(e->key);
    tr_free(e);
}

void objcache_close(struct objcache *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->buckets; i++) {
        for (struct objcache_entry *e = c->bucket[i], *next; e; e = next) {
            next = e->hash_next;
            entry_free(c, e);
        }
    }
    /* Doomed entries still pinned belong to open handles, which must be closed before the
     * store: nothing is left here in a correct program. */
    empty_dir(c->dir);
    pthread_mutex_destroy(&c->lock);
    tr_free(c->bucket);
    tr_free(c);
}

uint64_t objcache_capacity(const struct objcache *c)
{
    return c->capacity;
}

static void lru_unlink(struct objcache *c, struct objcache_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        c->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->oldest = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push(struct objcache *c, struct objcache_entry *e)
{
    e->older = c->newest;
    e->newer = NULL;
    if (c->newest)
        c->newest->newer = e;
    c->newest = e;
    if (!c->oldest)
        c->oldest = e;
}

static struct objcache_entry **slot_of(struct objcache *c, const char *key)
{
    struct objcache_entry **p = &c->bucket[hash_key(key) & (c->buckets - 1)];
    while (*p && strcmp((*p)->key, key) != 0)
        p = &(*p)->hash_next;
    return p;
}

/* Take an entry out of the table and the LRU list; free it now unless pinned. */
static void entry_remove(struct objcache *c, struct objcache_entry **slot)
{
    struct objcache_entry *e = *slot;
    *slot = e->hash_next;
    e->hash_next = NULL;
    lru_unlink(c, e);
    c->count--;
    if (e->pins)
        e->doomed = true;
    else
        entry_free(c, e);
}

static void grow(struct objcache *c)
{
    size_t n = c->buckets * 2;
    struct objcache_entry **b = tr_calloc(n, sizeof(*b));
    if (!b)
        return; /* longer chains, still correct */
    for (size_t i = 0; i < c->buckets; i++) {
        for (struct objcache_entry *e = c->bucket[i], *next; e; e = next) {
            next = e->hash_next;
            size_t j = hash_key(e->key) & (n - 1);
            e->hash_next = b[j];
            b[j] = e;
        }
    }
    tr_free(c->bucket);
    c->bucket = b;
    c->buckets = n;
}

struct objcache_entry *objcache_lookup(struct objcache *c, const char *key, char *path,
                                       size_t path_size, uint64_t *size, char *etag,
                                       size_t etag_size, unsigned *age_s)
{
    pthread_mutex_lock(&c->lock);
    struct objcache_entry *e = *slot_of(c, key);
    if (e) {
        e->pins++;
        lru_unlink(c, e);
        lru_push(c, e);
        entry_path(c, e, path, path_size);
        *size = e->size;
        snprintf(etag, etag_size, "%s", e->etag);
        uint64_t now = now_s();
        *age_s = (unsigned)TR_MIN(now - e->checked, (uint64_t)UINT32_MAX);
    }
    pthread_mutex_unlock(&c->lock);
    return e;
}

void objcache_mark_checked(struct objcache *c, struct objcache_entry *e)
{
    pthread_mutex_lock(&c->lock);
    e->checked = now_s();
    pthread_mutex_unlock(&c->lock);
}

void objcache_unpin(struct objcache *c, struct objcache_entry *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&c->lock);
    if (--e->pins == 0 && e->doomed)
        entry_free(c, e);
    pthread_mutex_unlock(&c->lock);
}

int objcache_temp(struct objcache *c, char *path, size_t path_size)
{
    if (snprintf(path, path_size, "%s/tmp-XXXXXX", c->dir) >= (int)path_size)
        return TR_ELIMIT;
    int fd = mkostemp(path, O_CLOEXEC);
    return fd < 0 ? TR_EIO : fd;
}

int objcache_insert(struct objcache *c, const char *key, char *path, size_t path_size,
                    uint64_t size, const char *etag, struct objcache_entry **pin)
{
    if (size > c->capacity)
        return TR_ELIMIT;
    struct objcache_entry *e = tr_calloc(1, sizeof(*e));
    if (!e || !(e->key = tr_strdup(key))) {
        tr_free(e);
        return TR_ENOMEM;
    }
    e->size = size;
    snprintf(e->etag, sizeof(e->etag), "%s", etag ? etag : "");
    e->checked = now_s();
    pthread_mutex_lock(&c->lock);
    /* Room: the least recently used unpinned entries go. */
    struct objcache_entry *victim = c->oldest;
    while (c->used + size > c->capacity && victim) {
        struct objcache_entry *newer = victim->newer;
        if (!victim->pins)
            entry_remove(c, slot_of(c, victim->key));
        victim = newer;
    }
    if (c->used + size > c->capacity) {
        pthread_mutex_unlock(&c->lock);
        tr_free(e->key);
        tr_free(e);
        return TR_ELIMIT; /* everything left is in use */
    }
    snprintf(e->name, sizeof(e->name), "%016llx-%llu", (unsigned long long)hash_key(key),
             (unsigned long long)++c->sequence);
    char final[PATH_MAX];
    entry_path(c, e, final, sizeof(final));
    if (rename(path, final) < 0) {
        pthread_mutex_unlock(&c->lock);
        tr_free(e->key);
        tr_free(e);
        return TR_EIO;
    }
    struct objcache_entry **slot = slot_of(c, key);
    if (*slot)
        entry_remove(c, slot); /* another thread fetched it too: the newer copy wins */
    if (c->count >= c->buckets)
        grow(c);
    slot = slot_of(c, key);
    e->hash_next = *slot;
    *slot = e;
    c->count++;
    c->used += size;
    lru_push(c, e);
    if (pin) {
        e->pins++;
        *pin = e;
    }
    pthread_mutex_unlock(&c->lock);
    snprintf(path, path_size, "%s", final);
    return 0;
}

void objcache_invalidate(struct objcache *c, const char *key)
{
    pthread_mutex_lock(&c->lock);
    struct objcache_entry **slot = slot_of(c, key);
    if (*slot)
        entry_remove(c, slot);
    pthread_mutex_unlock(&c->lock);
}
