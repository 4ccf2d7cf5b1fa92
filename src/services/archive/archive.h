/*
 * archive.h - telerad's archive: durable ingest of DICOM objects (from C-STORE, STOW-RS and
 * import), their index, queries and retrieval.
 *
 * Ingest is one durable step (DESIGN.md invariant 1): the object's bytes go to the object
 * store under a temporary name as they arrive, the header is parsed and checked, the object is
 * committed (fsync, rename, fsync) and only then is the sender told "success".
 *
 * Exported names start with arc_.
 */
#ifndef ARC_ARCHIVE_H
#define ARC_ARCHIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dcm.h"
#include "error.h"
#include "objstore.h"
#include "scp.h"
#include "sink.h"

/* What to do when an object arrives whose SOP Instance UID is stored already with different
 * bytes (identical bytes are always acknowledged without storing twice). */
enum arc_duplicate_policy {
    ARC_DUPLICATE_REJECT = 0,   /* answer failure, keep the stored object (default) */
    ARC_DUPLICATE_REPLACE,      /* the newer object replaces the stored one */
    ARC_DUPLICATE_KEEP_FIRST,   /* acknowledge, keep the stored object, drop the new one */
};

struct arc_config {
    const char *data_dir;                 /* default ./telerad-data */
    enum arc_duplicate_policy duplicates;
    uint64_t min_free_bytes;              /* refuse stores (A700) below this free space
                                             (default 256 MiB) */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
};

void arc_config_init(struct arc_config *cfg);
int arc_duplicate_policy_parse(const char *text, enum arc_duplicate_policy *out);

struct arc_archive;

int arc_open(const struct arc_config *cfg, struct arc_archive **out, struct tr_error *err);
void arc_close(struct arc_archive *a);
struct arc_objstore *arc_objects(struct arc_archive *a);

/* ---- ingest ------------------------------------------------------------------------------- */

/* Where an object comes from and what its sender said it is. */
struct arc_source {
    const char *calling_ae;      /* sending AE title (C-STORE) or "" */
    const char *peer;            /* address, for logs */
    const char *sop_class;       /* as announced (C-STORE command), or NULL */
    const char *sop_instance;    /* as announced, or NULL */
    const char *transfer_syntax; /* of the data set bytes that follow (C-STORE) */
    bool part10;                 /* the bytes are a whole Part 10 file (import, STOW-RS), not a
                                    bare data set */
};

struct arc_ingest;

/* Result of an ingest, with the DIMSE status that answers it. */
struct arc_ingest_result {
    uint16_t status;             /* 0000 stored, or B0xx / A700 / A900 / C000 ... */
    bool duplicate;              /* identical object was already stored */
    char comment[65];            /* for Error Comment, when not success */
    char study_uid[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    uint64_t size;
};

int arc_ingest_begin(struct arc_archive *a, const struct arc_source *src, struct arc_ingest **out,
                     struct tr_error *err);
struct tr_sink *arc_ingest_sink(struct arc_ingest *in);
/* Finish: complete = all bytes arrived. Frees the ingest. Returns 0 when an answer was decided
 * (see res->status), negative on internal errors (then res->status is A700). */
int arc_ingest_end(struct arc_ingest *in, bool complete, struct arc_ingest_result *res,
                   struct tr_error *err);

/* Ingest a whole Part 10 file from the filesystem (telerad import). */
int arc_ingest_file(struct arc_archive *a, const char *path, const char *source_ae,
                    struct arc_ingest_result *res, struct tr_error *err);

/* The DIMSE SCP handlers backed by this archive (C-STORE; C-FIND, C-MOVE, C-GET once the index
 * answers them). */
void arc_scp_handlers(struct arc_archive *a, struct scp_handlers *h);

#endif
