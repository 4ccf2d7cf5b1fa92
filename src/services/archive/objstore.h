/*
 * objstore.h - the object store: where the archive keeps the DICOM objects it received, as it
 * received them. One interface, two backends behind it: the local filesystem (the default) and
 * an S3-compatible store (Ceph RGW, AWS S3, MinIO ...) for several nodes sharing one store.
 *
 * Durability (DESIGN.md invariant 1): a put writes to a local temporary file as the bytes
 * arrive, the caller streams the bytes, then commit makes the object durable under its key:
 *   - filesystem: fsync the data, then give it its key's name and make that name durable
 *     (see objstore.c: either rename + directory fsync before commit returns, or a hard link
 *     whose directory fsync is batched, the temporary's durable name and the checksum the
 *     index keeps standing in for it until then: arc_objstore_recover_puts);
 *   - S3: upload the temporary file (one PUT, or a multipart upload above a threshold) with
 *     Content-MD5 and a signed SHA-256 of the payload, which the store checks before it keeps
 *     the bytes; commit returns after the store answered 200.
 * Until commit returns 0 the object does not exist under its key; after, it survives a crash.
 * Abandoned temporaries (a crash mid-write) are removed by arc_objstore_reconcile at start.
 *
 * Keys are relative names of printable ASCII without "..", e.g. "3f/1.2.840.113619.2.1.dcm".
 *
 * Reading: arc_object_open gives a local file with the object's bytes (the object itself on a
 * filesystem, no copy; a copy in a bounded on-disk cache for S3); arc_object_open_range gives
 * a local file with at least a range of them (a ranged GET on S3: headers and bulk data
 * without fetching whole objects).
 *
 * All functions may be called from several threads at once.
 *
 * Exported names start with arc_.
 */
#ifndef ARC_OBJSTORE_H
#define ARC_OBJSTORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"
#include "sink.h"

struct arc_objstore;
struct arc_put;

/* Open (creating if needed) a filesystem object store rooted at `dir`. */
int arc_objstore_open_fs(const char *dir, struct arc_objstore **out, struct tr_error *err);

/* The S3 backend's settings (docs/configuration.md, [s3]). Strings are borrowed for the call
 * only. The secret key is never logged nor put in an error message. */
struct arc_s3_options {
    const char *endpoint;          /* "https://s3.eu-central-1.amazonaws.com",
                                      "http://127.0.0.1:7480" (required) */
    const char *region;            /* signing region (default "us-east-1") */
    const char *bucket;            /* required */
    const char *prefix;            /* prepended to every key, e.g. "telerad/" (default "") */
    const char *access_key;        /* required */
    const char *secret_key;        /* required */
    bool virtual_host;             /* bucket.host/key instead of host/bucket/key */
    uint64_t multipart_threshold;  /* objects above this go as multipart uploads (default
                                      64 MiB) */
    uint64_t part_size;            /* multipart part size (default 16 MiB; S3 needs >= 5 MiB) */
    uint64_t cache_bytes;          /* on-disk read cache (default 1 GiB; 0: none, every read
                                      fetches into a temporary file) */
    unsigned cache_revalidate_s;   /* cached copies older than this are checked against the
                                      store's ETag before use (default 60 s) */
    unsigned retries;              /* attempts after the first on 5xx, 429 and network errors
                                      (default 5: backoff 0.2, 0.4, 0.8, 1.6, 3.2 s) */
    unsigned connect_timeout_ms;   /* default 5000 */
    unsigned stall_timeout_s;      /* a transfer below 1 byte/s for this long fails (default
                                      30) */
    const char *ca_file;           /* CA bundle for https endpoints (default: the system's) */
    bool insecure_tls;             /* do not verify the endpoint's certificate (tests only) */
    unsigned stale_upload_s;       /* reconciliation aborts multipart uploads older than this
                                      (default 86400: uploads of other nodes are younger) */
    /* Log callback for retries and recoveries (never with credentials); NULL: silent. */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
};

void arc_s3_options_init(struct arc_s3_options *o);
/* Connect to an S3-compatible store. Local state goes under `local_dir` (the data folder):
 * local_dir/spool for puts in progress, local_dir/cache for the read cache (emptied at open).
 * Checks that the bucket exists and the credentials work (a HEAD of the bucket): a wrong
 * bucket or endpoint, or refused credentials, is an error here, with what to fix. */
int arc_objstore_open_s3(const struct arc_s3_options *o, const char *local_dir,
                         struct arc_objstore **out, struct tr_error *err);
void arc_objstore_close(struct arc_objstore *s);
/* One line naming the backend and where it stores (no secrets), e.g. "fs /var/lib/telerad" or
 * "s3 http://127.0.0.1:7480 bucket telerad (path-style, region us-east-1)". */
void arc_objstore_describe(const struct arc_objstore *s, char *buf, size_t size);
/* Does this store keep objects in local files (arc_object_path works)? */
bool arc_objstore_is_local(const struct arc_objstore *s);

/* Start writing a new object; the returned put has a sink to stream the bytes into. */
int arc_put_begin(struct arc_objstore *s, struct arc_put **out, struct tr_error *err);
struct tr_sink *arc_put_sink(struct arc_put *p);
/* Bytes written so far. */
uint64_t arc_put_size(const struct arc_put *p);
/* The written bytes, readable before commit (e.g. to parse the header): a local path. */
const char *arc_put_temp_path(const struct arc_put *p);
/* Write out what is buffered, so that arc_put_temp_path has every byte (not yet durable). */
int arc_put_flush(struct arc_put *p, struct tr_error *err);
/* Is there an object under `key` (as arc_object_exists)? The put remembers a "no", so that
 * its commit need not ask the store again (S3: one HEAD less per new object). */
bool arc_put_target_exists(struct arc_put *p, const char *key);
/* Make the object durable under `key`; the put is freed. If an object exists under the key
 * already, this fails with TR_EEXIST and the put stays open (its bytes kept under the
 * temporary name): the caller compares, then replaces (arc_put_commit_replace) or gives up
 * (arc_put_abort). On any other error the put is freed.
 * S3 has no atomic "create if absent" in the stores we target (Ceph pacific ignores
 * If-None-Match: *): the check is a HEAD before the PUT, so two nodes storing the same key in
 * the same instant may both succeed, the later upload winning (docs/decisions.md); the index
 * keeps one row per SOP Instance UID either way. */
int arc_put_commit(struct arc_put *p, const char *key, struct tr_error *err);
int arc_put_commit_replace(struct arc_put *p, const char *key, struct tr_error *err);
/* Throw the bytes away and free the put. */
void arc_put_abort(struct arc_put *p);
/* A checksum (XXH3-64) of every byte written so far, for the index to keep with the row: it
 * tells at start whether a temporary left by a crash holds the whole object. false when the
 * backend does not keep one (S3, which checks its uploads itself). */
bool arc_put_checksum(const struct arc_put *p, uint64_t *sum);
/* The XXH3-64 checksum and size of a file. */
int arc_file_checksum(const char *path, uint64_t *sum, uint64_t *size, struct tr_error *err);

/* ---- reading ------------------------------------------------------------------------------ */

/* Is there an object under `key`? (false also when the store cannot be asked) */
bool arc_object_exists(struct arc_objstore *s, const char *key);
/* A local path to the object: filesystem backend only (TR_EUNSUPPORTED for S3: use
 * arc_object_open). */
int arc_object_path(struct arc_objstore *s, const char *key, char *path, size_t size);
int arc_object_size(struct arc_objstore *s, const char *key, uint64_t *size, struct tr_error *err);
/* Read `len` bytes at `offset` (range get). Returns the bytes read or a negative error. */
ssize_t arc_object_read(struct arc_objstore *s, const char *key, uint64_t offset, void *buf,
                        size_t len, struct tr_error *err);
/* Stream [offset, offset+length) of the object into a sink (length UINT64_MAX: to the end). */
int arc_object_get(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
                   const struct tr_sink *sink, struct tr_error *err);
/* Do two objects hold the same bytes? (Duplicate detection.) */
int arc_object_same(struct arc_objstore *s, const char *key, const char *temp_path, bool *same,
                    struct tr_error *err);
int arc_object_delete(struct arc_objstore *s, const char *key, struct tr_error *err);

/* A local file holding an object's bytes, open until arc_object_close (the caller owns the
 * handle). The path stays valid (and the file unchanged) until then; a mapping or a dup'ed
 * descriptor stays valid after it. */
struct arc_object_handle;
/* The whole object. Filesystem: the object itself. S3: from the cache, or fetched into it
 * (or into a temporary file when it is larger than the cache). TR_ENOTFOUND if there is no
 * such object. */
int arc_object_open(struct arc_objstore *s, const char *key, struct arc_object_handle **out,
                    struct tr_error *err);
/* At least the bytes [offset, offset+length) (fewer at the end of the object): the file may
 * hold the whole object (filesystem, cached copy) or only that range (S3, a ranged GET):
 * arc_object_handle_offset says where the range starts in the file. */
int arc_object_open_range(struct arc_objstore *s, const char *key, uint64_t offset,
                          uint64_t length, struct arc_object_handle **out, struct tr_error *err);
const char *arc_object_handle_path(const struct arc_object_handle *h);
/* A descriptor of the file (opened on first use; -1 on error); closed by arc_object_close. */
int arc_object_handle_fd(struct arc_object_handle *h);
/* Where the requested range starts in the file (0 for arc_object_open). */
uint64_t arc_object_handle_offset(const struct arc_object_handle *h);
/* Bytes of the object in the file from the offset on. */
uint64_t arc_object_handle_length(const struct arc_object_handle *h);
/* Does the file hold the whole object? */
bool arc_object_handle_complete(const struct arc_object_handle *h);
/* The object's size in the store (known whenever complete; from Content-Range otherwise). */
uint64_t arc_object_handle_object_size(const struct arc_object_handle *h);
void arc_object_close(struct arc_object_handle *h);

/* List every key (for reconciliation with the index): calls fn for each; a negative return
 * stops. Also removes temporaries left by a crash (S3: this node's spool files, and multipart
 * uploads abandoned longer ago than stale_upload_s). */
int arc_objstore_reconcile(struct arc_objstore *s,
                           int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                           struct tr_error *err);

/* After a crash: puts whose temporary file may be the only durable name of a committed
 * object (the filesystem backend defers the directory fsync after a commit, see objstore.c).
 * For each temporary left, decide(ctx, path, key, size) returns 1 and fills in the key if the
 * file is a whole object the index knows (the caller checks it against the index's size and
 * checksum), 0 if not; the store then puts it under the key (unless the key's object is there,
 * the same file or not) or removes it. Call before arc_objstore_reconcile. */
struct arc_recover_stats {
    size_t restored;  /* temporaries put back under their key */
    size_t linked;    /* temporaries that were a second name of a stored object */
    size_t discarded; /* temporaries removed (never acknowledged) */
};
int arc_objstore_recover_puts(struct arc_objstore *s,
                              int (*decide)(void *ctx, const char *temp_path, char *key,
                                            size_t key_size),
                              void *ctx, struct arc_recover_stats *stats, struct tr_error *err);

/* Wait until every commit so far has its name on the disk by the slow way too (the filesystem
 * backend's deferred directory fsyncs done, their temporary names removed) and the pool of
 * temporaries is filled: for tests, and before a backup of the data folder. */
void arc_objstore_settle(struct arc_objstore *s);

/* Free space where puts write their temporary files, in bytes (for refusing stores before
 * the disk fills): the object store's filesystem, or the S3 backend's local spool. */
int arc_objstore_free_space(struct arc_objstore *s, uint64_t *bytes);

#endif
