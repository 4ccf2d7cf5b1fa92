/*
 * objstore.h - the object store: where the archive keeps the DICOM objects it received, as it
 * received them. One interface, backends behind it: the local filesystem now, an
 * S3-compatible store later.
 *
 * Durability (DESIGN.md invariant 1): a put writes to a temporary name, the caller streams the
 * bytes, then commit fsyncs the data, renames it to its key and fsyncs the directory. Until
 * commit returns 0 the object does not exist under its key; after, it survives a crash.
 * Abandoned temporaries (a crash mid-write) are removed by arc_objstore_reconcile at start.
 *
 * Keys are relative names of printable ASCII without "..", e.g. "3f/1.2.840.113619.2.1.dcm".
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
void arc_objstore_close(struct arc_objstore *s);

/* Start writing a new object; the returned put has a sink to stream the bytes into. */
int arc_put_begin(struct arc_objstore *s, struct arc_put **out, struct tr_error *err);
struct tr_sink *arc_put_sink(struct arc_put *p);
/* Bytes written so far. */
uint64_t arc_put_size(const struct arc_put *p);
/* The written bytes, readable before commit (e.g. to parse the header): a local path. */
const char *arc_put_temp_path(const struct arc_put *p);
/* Write out what is buffered, so that arc_put_temp_path has every byte (not yet durable). */
int arc_put_flush(struct arc_put *p, struct tr_error *err);
/* Make the object durable under `key`; the put is freed. If an object exists under the key
 * already, this fails with TR_EEXIST and the put stays open (its bytes durable under the
 * temporary name): the caller compares, then replaces (arc_put_commit_replace) or gives up
 * (arc_put_abort). On any other error the put is freed. */
int arc_put_commit(struct arc_put *p, const char *key, struct tr_error *err);
int arc_put_commit_replace(struct arc_put *p, const char *key, struct tr_error *err);
/* Throw the bytes away and free the put. */
void arc_put_abort(struct arc_put *p);

/* Reading. */
bool arc_object_exists(struct arc_objstore *s, const char *key);
/* A local path to the object (filesystem backend), for streaming and mapping. */
int arc_object_path(struct arc_objstore *s, const char *key, char *path, size_t size);
int arc_object_size(struct arc_objstore *s, const char *key, uint64_t *size, struct tr_error *err);
/* Read `len` bytes at `offset` (range get). Returns the bytes read or a negative error. */
ssize_t arc_object_read(struct arc_objstore *s, const char *key, uint64_t offset, void *buf,
                        size_t len, struct tr_error *err);
/* Stream the whole object (or [offset, offset+length)) into a sink. */
int arc_object_get(struct arc_objstore *s, const char *key, uint64_t offset, uint64_t length,
                   const struct tr_sink *sink, struct tr_error *err);
/* Do two objects hold the same bytes? (Duplicate detection.) */
int arc_object_same(struct arc_objstore *s, const char *key, const char *temp_path, bool *same,
                    struct tr_error *err);
int arc_object_delete(struct arc_objstore *s, const char *key, struct tr_error *err);

/* List every key (for reconciliation with the index): calls fn for each; a negative return
 * stops. Also removes temporaries left by a crash. */
int arc_objstore_reconcile(struct arc_objstore *s,
                           int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                           struct tr_error *err);

/* Free space on the store's filesystem, in bytes (for refusing stores before the disk fills). */
int arc_objstore_free_space(struct arc_objstore *s, uint64_t *bytes);

#endif
