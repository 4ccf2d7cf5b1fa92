/*
 * objstore_int.h - private header of the object store: the backend interface that objstore.c
 * dispatches to (the filesystem backend in objstore.c, S3 in objstore_s3.c), and the on-disk
 * read cache of the S3 backend (objcache.c).
 */
#ifndef ARC_OBJSTORE_INT_H
#define ARC_OBJSTORE_INT_H

#include <limits.h>

#include "objstore.h"

/* What a backend implements. Every backend struct starts with a struct arc_objstore, every
 * put with a struct arc_put, every handle with a struct arc_object_handle. */
struct arc_objstore_ops {
    const char *name;
    void (*close)(struct arc_objstore *s);
    void (*describe)(const struct arc_objstore *s, char *buf, size_t size);
    int (*put_begin)(struct arc_objstore *s, struct arc_put **out, struct tr_error *err);
    int (*put_flush)(struct arc_put *p, struct tr_error *err);
    bool (*put_target_exists)(struct arc_put *p, const char *key);
    int (*put_commit)(struct arc_put *p, const char *key, bool replace, struct tr_error *err);
    void (*put_abort)(struct arc_put *p);
    bool (*exists)(struct arc_objstore *s, const char *key);
    int (*path)(struct arc_objstore *s, const char *key, char *path, size_t size);
    int (*size)(struct arc_objstore *s, const char *key, uint64_t *size, struct tr_error *err);
    ssize_t (*read)(struct arc_objstore *s, const char *key, uint64_t offset, void *buf,
                    size_t len, struct tr_error *err);
    int (*get)(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
               const struct tr_sink *sink, struct tr_error *err);
    int (*same)(struct arc_objstore *s, const char *key, const char *temp_path, bool *same,
                struct tr_error *err);
    int (*delete_object)(struct arc_objstore *s, const char *key, struct tr_error *err);
    int (*open_range)(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
                      bool whole, struct arc_object_handle **out, struct tr_error *err);
    void (*handle_close)(struct arc_object_handle *h);
    int (*reconcile)(struct arc_objstore *s, int (*fn)(void *ctx, const char *key, uint64_t size),
                     void *ctx, struct tr_error *err);
    int (*free_space)(struct arc_objstore *s, uint64_t *bytes);
    /* Optional (NULL: nothing to wait for). See arc_objstore_settle. */
    void (*settle)(struct arc_objstore *s);
    /* Optional (NULL: nothing to recover). See arc_objstore_recover_puts. */
    int (*recover_puts)(struct arc_objstore *s,
                        int (*decide)(void *ctx, const char *temp_path, char *key,
                                      size_t key_size),
                        void *ctx, struct arc_recover_stats *stats, struct tr_error *err);
};

struct arc_objstore {
    const struct arc_objstore_ops *ops;
};

/* The part of a put every backend shares: the temporary file the sink writes to. */
struct arc_put {
    struct arc_objstore *store;
    int fd;
    char path[PATH_MAX];
    struct tr_bufsink bs;
    struct tr_sink counting;
    uint64_t size;
    int status;
    /* Called with each chunk as it goes to the file (the S3 backend hashes), or NULL. */
    void (*observe)(struct arc_put *p, const void *data, size_t len);
    /* The filesystem backend: the disk writes of the file start while it is still arriving,
     * so that the fdatasync at commit has little left; a checksum of every byte (the index
     * keeps it: arc_put_checksum); and whether the temporary's name is durable already (a
     * file of the pool, see objstore.c), which lets commit defer the directory fsync. */
    bool local;
    bool durable_name;
    uint64_t written;   /* bytes written to the file */
    uint64_t scheduled; /* of which the kernel was asked to start writing */
    struct XXH3_state_s *hash;
};

struct arc_object_handle {
    struct arc_objstore *store;
    char path[PATH_MAX];
    int fd;                 /* -1 until asked for */
    uint64_t offset;        /* where the requested range starts in the file */
    uint64_t length;        /* object bytes in the file from offset on */
    uint64_t object_size;
    bool complete;
};

/* Helpers shared by the backends (objstore.c). */
bool arc_key_is_valid(const char *key);
/* Create the temporary file of a put in `dir` ("put-XXXXXX") and set up its sink. */
int arc_put_init_temp(struct arc_put *p, struct arc_objstore *s, const char *dir,
                      struct tr_error *err);
/* Flush the sink into the file (no sync). */
int arc_put_flush_temp(struct arc_put *p, struct tr_error *err);
/* Close and remove the temporary file, release the sink (not the put itself). */
void arc_put_release_temp(struct arc_put *p);
/* Remove "put-*" files in `dir`. */
void arc_remove_temporaries(const char *dir);

/* ---- the read cache (objcache.c) ---------------------------------------------------------- */

/* A bounded on-disk cache of whole objects, least recently used out first. Files are named
 * by a hash of the key and a sequence number; an entry in use (pinned) is never removed, so
 * its path stays valid until unpinned. The directory is emptied when the cache opens: it is a
 * copy, and a restart is the simplest way to be sure it is not stale. */
struct objcache;
struct objcache_entry;

int objcache_open(const char *dir, uint64_t capacity, struct objcache **out,
                  struct tr_error *err);
void objcache_close(struct objcache *c);
/* A hit pins the entry (release with objcache_unpin) and fills in its path, size, ETag and
 * how many seconds ago it was last checked against the store. */
struct objcache_entry *objcache_lookup(struct objcache *c, const char *key, char *path,
                                       size_t path_size, uint64_t *size, char *etag,
                                       size_t etag_size, unsigned *age_s);
/* The entry was found current (its ETag matches the store's). */
void objcache_mark_checked(struct objcache *c, struct objcache_entry *e);
void objcache_unpin(struct objcache *c, struct objcache_entry *e);
/* A new temporary file in the cache's directory to download into: its descriptor. */
int objcache_temp(struct objcache *c, char *path, size_t path_size);
/* Move a downloaded (or just uploaded) file into the cache under `key`, evicting what is
 * least recently used to make room. On success the file is the cache's: *path is rewritten to
 * its new name and, when pin is given, the entry is returned pinned. Returns TR_ELIMIT when
 * the file is larger than the cache may hold (the file stays where it was). */
int objcache_insert(struct objcache *c, const char *key, char *path, size_t path_size,
                    uint64_t size, const char *etag, struct objcache_entry **pin);
/* Forget `key` (replaced or deleted in the store); pinned copies go when unpinned. */
void objcache_invalidate(struct objcache *c, const char *key);
uint64_t objcache_capacity(const struct objcache *c);

#endif
