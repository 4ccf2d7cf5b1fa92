/*
 * index.h - the archive's index: patients, studies, series and instances in one schema on
 * SQLite or PostgreSQL (db.h), versioned migrations, ingest with group commit, C-FIND / QIDO
 * matching, retrieval lists, study stability events, deletion.
 *
 * A patient is (site, PatientID, IssuerOfPatientID): two hospitals' MRN 12345 are two
 * patients. A study is (site, StudyInstanceUID).
 *
 * Exported names start with arc_index_ / arc_.
 */
#ifndef ARC_INDEX_H
#define ARC_INDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dcm.h"
#include "error.h"

#define ARC_INDEX_SCHEMA_VERSION 4 /* 2: events claimed per node (several nodes); 3: PN groups;
                                      4: object checksums */

/* What the index keeps of one instance (all text UTF-8). */
struct arc_record {
    char site[65];
    /* patient */
    char patient_id[65];
    char issuer[65];
    char patient_name[330];
    char birth_date[20];
    char sex[17];
    /* study */
    char study_uid[DCM_UID_MAX + 1];
    char study_date[20];
    char study_time[32];
    char accession[65];
    char study_id[33];
    char study_description[260];
    char referring_physician[330];
    char timezone[20];
    char charset[80];
    /* series */
    char series_uid[DCM_UID_MAX + 1];
    char modality[17];
    bool has_series_number;
    int64_t series_number;
    char series_description[260];
    char body_part[65];
    char pps_start_date[20];
    char pps_start_time[32];
    /* instance */
    char sop_uid[DCM_UID_MAX + 1];
    char sop_class[DCM_UID_MAX + 1];
    bool has_instance_number;
    int64_t instance_number;
    char transfer_syntax[DCM_UID_MAX + 1];
    char object_key[300];
    uint64_t size;
    int64_t rows, columns, bits_allocated, frames; /* 0 when absent */
    char source_ae[17];
    int64_t received_at;  /* ms since the epoch */
    bool has_checksum;
    uint64_t checksum;    /* XXH3-64 of the stored object (arc_put_checksum) */
};

/* Fill a record from an instance's header. */
int arc_record_from_dataset(struct arc_record *r, const struct dcm_dataset *ds,
                            struct tr_error *err);

struct arc_index;

struct arc_index_options {
    const char *url;               /* "sqlite:PATH" or "postgresql://..." */
    bool pn_case_insensitive;      /* PN matching ignores case (default true) */
    unsigned max_matches;          /* C-FIND / QIDO cap (default 100000) */
    unsigned stable_after;         /* seconds without a new instance (default 60) */
};

void arc_index_options_init(struct arc_index_options *o);

/* Open, creating or migrating the schema. Starts the writer thread (group commit). */
int arc_index_open(const struct arc_index_options *o, struct arc_index **out,
                   struct tr_error *err);
void arc_index_close(struct arc_index *ix);
int arc_index_schema_version(struct arc_index *ix, int *version, struct tr_error *err);

/* Add (or update) an instance. Blocks until the transaction holding it has committed (on disk);
 * concurrent callers share a transaction and its fsync (group commit). */
int arc_index_add(struct arc_index *ix, const struct arc_record *r, struct tr_error *err);

/* The same in two steps, so that the caller can make the object durable while the index
 * commits: begin queues the record (which must stay valid until wait returns), wait blocks
 * until its transaction has committed. */
struct arc_index_job {
    const struct arc_record *record;
    int rc;
    struct tr_error err;
    bool done;
    struct arc_index_job *next;
};
void arc_index_add_begin(struct arc_index *ix, struct arc_index_job *job,
                         const struct arc_record *r);
int arc_index_add_wait(struct arc_index *ix, struct arc_index_job *job, struct tr_error *err);

/* The object key of an instance, if indexed (site NULL: any site). */
int arc_index_find_instance(struct arc_index *ix, const char *site, const char *sop_uid,
                            char *object_key, size_t size, struct tr_error *err);

/* ---- queries ------------------------------------------------------------------------------ */

enum arc_level { ARC_LEVEL_PATIENT = 1, ARC_LEVEL_STUDY, ARC_LEVEL_SERIES, ARC_LEVEL_IMAGE };

/* A patient at a site (for scoping a reader's view to their patients). */
struct arc_patient_ref {
    const char *site;
    const char *patient_id;
};

struct arc_query {
    enum arc_level level;
    bool patient_root;             /* patient root model (else study root) */
    const struct dcm_dataset *keys; /* the identifier: matching and return keys */
    const char *const *sites;      /* visible sites (NULL-terminated); NULL: all */
    const struct arc_patient_ref *patients; /* when set, only these patients are visible */
    size_t npatients;
    unsigned limit, offset;        /* 0 limit: the configured maximum */
    bool fuzzy_names;              /* QIDO fuzzymatching: PN components match word prefixes */
};

/* One match: the attributes the index holds for it (at the query level and above), and for
 * return keys it does not hold, the object key of an instance to read them from. */
struct arc_match {
    struct dcm_dataset *attrs;     /* UTF-8 (Specific Character Set ISO_IR 192 when needed) */
    char object_key[300];          /* a representative instance */
    char site[65];
};

/* Run a query; on_match is called per match in order (return negative to stop). Returns the
 * number of matches or a negative error (TR_EINVAL with a message for an invalid identifier:
 * unknown level, bad range). */
int arc_index_query(struct arc_index *ix, const struct arc_query *q,
                    int (*on_match)(void *ctx, const struct arc_match *m), void *ctx,
                    struct tr_error *err);

/* Instances that a C-MOVE / C-GET / WADO of `q` (at its level) sends. */
struct arc_instance_ref {
    char sop_class[DCM_UID_MAX + 1];
    char sop_uid[DCM_UID_MAX + 1];
    char transfer_syntax[DCM_UID_MAX + 1];
    char object_key[300];
    char study_uid[DCM_UID_MAX + 1];
    char series_uid[DCM_UID_MAX + 1];
    uint64_t size;
    char site[65];
};
int arc_index_instances(struct arc_index *ix, const struct arc_query *q,
                        struct arc_instance_ref **list, size_t *count, struct tr_error *err);

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Delete a study from the index; its object keys are returned for the caller to delete. */
int arc_index_delete_study(struct arc_index *ix, const char *site, const char *study_uid,
                           char ***object_keys, size_t *count, struct tr_error *err);
/* Remove the rows of an instance whose object is gone (reconciliation). */
int arc_index_forget_object(struct arc_index *ix, const char *object_key, struct tr_error *err);
/* The size and checksum the row of an object records. TR_ENOTFOUND without a row; *has_checksum
 * false for a row from before checksums (index migration 4) or from a backend without them. */
int arc_index_object_checksum(struct arc_index *ix, const char *object_key, uint64_t *size,
                              bool *has_checksum, uint64_t *checksum, struct tr_error *err);
/* The same, only if the instance was received before before_ms (ms since the epoch): 1 removed,
 * 0 not (younger, or no such row). Reconciliation with several nodes: a row younger than the
 * longest upload may be another node's instance whose object is still on its way. */
int arc_index_forget_object_before(struct arc_index *ix, const char *object_key,
                                   int64_t before_ms, struct tr_error *err);
/* Call fn for every indexed object key. */
int arc_index_each_object(struct arc_index *ix, int (*fn)(void *ctx, const char *key), void *ctx,
                          struct tr_error *err);

/* Study stability (PS3.4 does not define it; DESIGN.md): mark studies with no new instance for
 * stable_after seconds as stable and record a "study_stable" event for each, durably. Returns
 * the number of studies that became stable. Run periodically. */
int arc_index_mark_stable(struct arc_index *ix, int64_t now_ms, struct tr_error *err);

/* Events not yet consumed and not held by a node (arc_index_claim_event), oldest first. */
struct arc_event {
    int64_t id;
    char kind[32];         /* "study_stable" */
    char site[65];
    char study_uid[DCM_UID_MAX + 1];
    int64_t created_at;
};
int arc_index_events(struct arc_index *ix, const char *kind, struct arc_event **events,
                     size_t *count, unsigned max, struct tr_error *err);
/* Take event `id` for this node (db_node_id()) until until_ms, so that of several nodes on one
 * database only one acts on it: 1 taken, 0 another node holds it (or it was consumed),
 * negative on errors. A node that dies holding it loses it at until_ms; then another node
 * takes it (arc_index_events lists only events not held). until_ms 0 gives it back. */
int arc_index_claim_event(struct arc_index *ix, int64_t id, int64_t now_ms, int64_t until_ms,
                          struct tr_error *err);
int arc_index_consume_event(struct arc_index *ix, int64_t id, struct tr_error *err);

/* When a study's first instance arrived and when it became stable (0 if not yet), ms since the
 * epoch. TR_ENOTFOUND if the site has no such study. */
int arc_index_study_times(struct arc_index *ix, const char *site, const char *study_uid,
                          int64_t *received_at, int64_t *stable_at, struct tr_error *err);

/* Counts, for status pages and tests. */
struct arc_index_stats {
    int64_t patients, studies, series, instances;
};
int arc_index_stats(struct arc_index *ix, struct arc_index_stats *s, struct tr_error *err);

#endif
