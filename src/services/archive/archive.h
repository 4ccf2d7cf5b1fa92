/*
 * archive.h - telerad's archive: durable ingest of DICOM objects (from C-STORE, STOW-RS and
 * import), their index, queries and retrieval.
 *
 * Ingest is one durable step (DESIGN.md invariant 1): the object's bytes go to the object
 * store under a temporary name as they arrive, the header is parsed and checked, the object is
 * committed (files: fsync, rename, fsync; S3: uploaded, answered 200) and only then is the
 * sender told "success".
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
#include "index.h"
#include "objstore.h"
#include "scp.h"
#include "sink.h"

/* A C-MOVE destination (PS3.4 C.4.2: the SCP knows where each AE title listens). */
struct arc_move_destination {
    const char *ae_title;
    const char *host;
    int port;
    bool tls;
};

/* What to do when an object arrives whose SOP Instance UID is stored already with different
 * bytes (identical bytes are always acknowledged without storing twice). */
enum arc_duplicate_policy {
    ARC_DUPLICATE_REJECT = 0,   /* answer failure, keep the stored object (default) */
    ARC_DUPLICATE_REPLACE,      /* the newer object replaces the stored one */
    ARC_DUPLICATE_KEEP_FIRST,   /* acknowledge, keep the stored object, drop the new one */
};

/* Which site an AE title sends for (sender -> site). */
struct arc_site_ae {
    const char *ae_title;
    const char *site;
    const struct net_acl *networks; /* where this AE title may call from (NULL: anywhere) */
};

enum arc_unknown_ae {
    ARC_UNKNOWN_AE_ACCEPT = 0, /* store into the default site "" (default) */
    ARC_UNKNOWN_AE_REJECT,     /* refuse the association: calling AE title not recognized */
};

struct arc_config {
    const char *data_dir;                 /* default ./telerad-data */
    const char *index_url;                /* default sqlite:<data_dir>/index.sqlite */
    const struct arc_site_ae *sites;      /* AE title -> site; NULL-terminated by ae_title */
    enum arc_unknown_ae unknown_ae;
    bool pn_case_insensitive;             /* person name matching ignores case (default true) */
    unsigned stable_after;                /* seconds (default 60) */
    const struct arc_move_destination *destinations; /* C-MOVE targets, NULL-terminated */
    enum arc_duplicate_policy duplicates;
    bool reconcile_force;                 /* forget index rows at start even when most of
                                             the objects are missing (default: refuse) */
    int reconcile_grace;                  /* seconds: at start, index rows without object
                                             younger than this are kept (another node may be
                                             uploading them); -1 (default): 0 on SQLite (one
                                             node), 600 on PostgreSQL (several nodes) */
    uint64_t min_free_bytes;              /* refuse stores (A700) below this free space
                                             (default 256 MiB) */
    const struct arc_s3_options *s3;      /* the object store: NULL = files under data_dir
                                             (default); else this S3 bucket (spool and read
                                             cache under data_dir) */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
    /* DIMSE user identity (PS3.7 D.3.3.7) checked against accounts: 0 accepted (*site set to
     * the account's site, "" for none), negative refused. NULL: identities are not checked. */
    int (*check_identity)(void *ctx, const struct pdu_user_identity *id, const char *peer,
                          char *site, size_t site_size);
    void *identity_ctx;
    bool require_identity;  /* refuse associations without a user identity */
    /* Every DIMSE access (query, retrieve, store) for the audit log; NULL: none. */
    void (*audit)(void *ctx, const char *calling_ae, const char *peer, const char *action,
                  const char *outcome, const char *object, const char *site);
    void *audit_ctx;
};

void arc_config_init(struct arc_config *cfg);
int arc_duplicate_policy_parse(const char *text, enum arc_duplicate_policy *out);

struct arc_archive;

/* Open the object store and the index; reconcile them (objects without index rows are indexed,
 * rows without objects forgotten, abandoned temporaries removed); start the stability timer. */
int arc_open(const struct arc_config *cfg, struct arc_archive **out, struct tr_error *err);
void arc_close(struct arc_archive *a);
struct arc_objstore *arc_objects(struct arc_archive *a);
struct arc_index *arc_index(struct arc_archive *a);
/* The site an AE title sends for, into `site` (size >= ARC_SITE_MAX): 0 when a site claims
 * the AE title (configured [site] sections first, then the resolver), 1 when none does and
 * unknown AE titles go to the default site "", TR_ENOTFOUND when unknown ones are refused. */
#define ARC_SITE_MAX 65
int arc_site_of_ae(struct arc_archive *a, const char *ae_title, char *site, size_t size);
/* Sites defined at run time (the workflow's sites and their AE titles): the resolver writes
 * the site of an AE title and returns true, or returns false. Set before serving. */
void arc_set_site_resolver(struct arc_archive *a,
                           bool (*resolve)(void *ctx, const char *ae, char *site, size_t size),
                           void *ctx);
/* Set the identity check and audit hooks after opening (the security service opens on the
 * archive's database). Call before serving. */
void arc_set_security(struct arc_archive *a,
                      int (*check_identity)(void *ctx, const struct pdu_user_identity *id,
                                            const char *peer, char *site, size_t site_size),
                      void *identity_ctx, bool require_identity,
                      void (*audit)(void *ctx, const char *calling_ae, const char *peer,
                                    const char *action, const char *outcome, const char *object,
                                    const char *site),
                      void *audit_ctx);
/* The index URL in use (the workflow keeps its tables in the same database). */
const char *arc_index_url(struct arc_archive *a);

/* Delete a study (index rows, then objects). */
int arc_delete_study(struct arc_archive *a, const char *site, const char *study_uid,
                     size_t *instances, struct tr_error *err);

/* Reconciliation results of arc_open, for logs and tests. */
struct arc_reconcile_stats {
    size_t indexed;     /* objects found without an index row, now indexed */
    size_t forgotten;   /* index rows whose object was missing, removed */
    size_t unreadable;  /* objects that could not be parsed, moved aside */
    size_t restored;    /* objects put back under their names after a crash */
};
void arc_last_reconcile(struct arc_archive *a, struct arc_reconcile_stats *s);

/* ---- ingest ------------------------------------------------------------------------------- */

/* Where an object comes from and what its sender said it is. */
struct arc_source {
    const char *site;            /* the site the object belongs to ("" = default) */
    const char *calling_ae;      /* sending AE title (C-STORE) or "" */
    const char *peer;            /* address, for logs */
    const char *sop_class;       /* as announced (C-STORE command), or NULL */
    const char *sop_instance;    /* as announced, or NULL */
    const char *transfer_syntax; /* of the data set bytes that follow (C-STORE) */
    bool part10;                 /* the bytes are a whole Part 10 file (import, STOW-RS), not a
                                    bare data set */
    const char *study_uid;       /* when set, an object of another study is refused (A900):
                                    STOW-RS to /studies/{uid} */
};

struct arc_ingest;

/* Result of an ingest, with the DIMSE status that answers it. */
struct arc_ingest_result {
    uint16_t status;             /* 0000 stored, or B0xx / A700 / A900 / C000 ... */
    bool duplicate;              /* identical object was already stored */
    char comment[65];            /* for Error Comment, when not success */
    char study_uid[DCM_UID_MAX + 1];
    char series_uid[DCM_UID_MAX + 1];
    char sop_class[DCM_UID_MAX + 1];    /* as found in the object (also when refused), or "" */
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

/* Ingest a whole Part 10 file from the filesystem (telerad import) into `site`. */
int arc_ingest_file(struct arc_archive *a, const char *path, const char *site,
                    const char *source_ae, struct arc_ingest_result *res, struct tr_error *err);

/* ---- queries ------------------------------------------------------------------------------ */

/* Answer a C-FIND or QIDO-RS query: emit is called with each match (return negative to stop):
 * the attributes the index keeps, and for every other key in q->keys the value from the header
 * of a representative instance (empty when it has none). Sequence keys with values filter on
 * that header (PS3.4 C.2.2.2.6 basics). Text is UTF-8. QueryRetrieveLevel is set in the answer
 * when the keys hold it (C-FIND). Returns the number of matches or a negative error (TR_EINVAL
 * for an invalid identifier). */
int arc_find(struct arc_archive *a, const struct arc_query *q,
             int (*emit)(void *ctx, const struct dcm_dataset *match), void *emit_ctx,
             struct tr_error *err);

/* The same, telling emit the site each match belongs to. */
int arc_find_sites(struct arc_archive *a, const struct arc_query *q,
                   int (*emit)(void *ctx, const struct dcm_dataset *match, const char *site),
                   void *emit_ctx, struct tr_error *err);

/* The DIMSE SCP handlers backed by this archive (C-STORE; C-FIND, C-MOVE, C-GET once the index
 * answers them). */
void arc_scp_handlers(struct arc_archive *a, struct scp_handlers *h);

#endif
