/*
 * reports_int.h - private header of the report service (src/services/reports).
 *
 *   reports.c    the service: schema, background thread, shared helpers
 *   templates.c  the shipped templates and the choice of one for an exam
 *   report.c     versions: drafts, signing rules, addenda; a version as a document
 *   critical.c   critical results: communication records, acknowledgement, escalation
 *   oru.c        HL7 v2.5.1 ORU^R01 (written with src/hl7) and its ACK
 *   fhir.c       FHIR R4 ServiceRequest, ImagingStudy, DiagnosticReport
 *   sr.c         DICOM Basic Text SR (TID 2000) and Encapsulated PDF
 *   pdf.c        the report as PDF (cairo)
 *   delivery.c   the outbox: targets, attempts, backoff, MLLP / HTTP / C-STORE / archive
 *   api.c        the REST API and /fhir/
 */
#ifndef REP_INT_H
#define REP_INT_H

#include <jansson.h>
#include <pthread.h>

#include "buf.h"
#include "dataset.h"
#include "db.h"
#include "reports.h"

/* ---- the service -------------------------------------------------------------------------- */

struct rep {
    struct rep_config cfg;
    struct db_pool *pool;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

void rep_log(struct rep *r, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int64_t rep_now_ms(void);
/* Wake the background thread (something was queued). */
void rep_wake(struct rep *r);

/* ms -> "2026-11-22T10:30:00Z" (FHIR instant), "20261122103000+0000" (HL7 DTM),
 * "20261122" / "103000" (DICOM DA / TM) , all UTC. */
void rep_iso_time(int64_t ms, char out[32]);
void rep_hl7_time(int64_t ms, char out[32]);
void rep_dicom_date(int64_t ms, char out[9]);
void rep_dicom_time(int64_t ms, char out[16]);

/* "2026-11-22T10:30:00Z" as JSON, null for 0. */
json_t *rep_iso_json(int64_t ms);

/* Base64 (RFC 4648) of `len` bytes appended to out. */
int rep_base64(const void *data, size_t len, struct tr_buf *out);

/* ---- templates ---------------------------------------------------------------------------- */

enum rep_section {
    REP_CLINICAL = 0, /* clinical information */
    REP_TECHNIQUE,
    REP_COMPARISON,
    REP_FINDINGS,
    REP_IMPRESSION,
    REP_SECTION_COUNT
};

/* "clinical_information", "technique", "comparison", "findings", "impression" */
extern const char *const rep_section_keys[REP_SECTION_COUNT];
/* "Clinical information", ... as printed */
extern const char *const rep_section_titles[REP_SECTION_COUNT];
int rep_section_parse(const char *key);

struct rep_template {
    const char *id;            /* "ct-head" */
    const char *name;          /* "CT head" */
    const char *modalities;    /* "CT" or "CR\\DX" */
    const char *const *words;  /* any of these in the description or body part (NULL-ended) */
    const char *title_code;    /* LOINC document title (CID 7000), e.g. 24725-4 */
    const char *title_meaning; /* "CT Head Report" */
    const char *text[REP_SECTION_COUNT]; /* the starting text of each section */
};

size_t rep_template_count(void);
const struct rep_template *rep_template_at(size_t i);
const struct rep_template *rep_template_find(const char *id);
/* The template for an exam: the first whose modality is among the study's (backslash-separated)
 * and one of whose words occurs (whole words, any case) in the description or body part; the
 * generic template when none fits. Never NULL. */
const struct rep_template *rep_template_choose(const char *modalities, const char *description,
                                               const char *body_part);
json_t *rep_template_json(const struct rep_template *t);

/* ---- versions ----------------------------------------------------------------------------- */

enum rep_kind { REP_DRAFT = 0, REP_PRELIMINARY, REP_FINAL, REP_ADDENDUM, REP_KIND_COUNT };
extern const char *const rep_kind_names[REP_KIND_COUNT];
int rep_kind_parse(const char *text);

/* What the read's reports are so far (for the signing rules). */
struct rep_progress {
    int read_state; /* FLOW_READ_... */
    char assignee[65];
    bool has_draft;
    bool has_preliminary;
    bool has_final;
};

/* May `signer` sign a version of `kind` (REP_PRELIMINARY, REP_FINAL, REP_ADDENDUM) now?
 * 0 yes; TR_EDENIED when the signer is not the assignee; TR_EEXIST when the report's state
 * does not allow it (a final exists, an addendum before the final, a read not claimed ...);
 * TR_EINVAL for another kind. `why` gets a sentence. */
int rep_sign_check(const struct rep_progress *p, int kind, const char *signer, char *why,
                   size_t why_size);
/* May a draft be saved now (the assignee, before the final)? Same results. */
int rep_draft_check(const struct rep_progress *p, const char *author, char *why, size_t why_size);

/* Validation of a draft body: {"template": id, "sections": {key: text}, "critical":
 * {"category": 1-3, "finding": text} | null}. 0, or TR_EINVAL with *field and *why. */
struct rep_invalid {
    char field[96];
    char why[256];
};
int rep_draft_validate(json_t *body, struct rep_invalid *bad);

/* Operations (report.c). Results: 0 done (*out: the version as the API shows it);
 * TR_ENOTFOUND no such read; TR_EDENIED not the assignee; TR_EEXIST the report's state does not
 * allow it; TR_EINVAL invalid (bad->field names the field); in all three bad->why says why.
 * Other errors: err. `db` is the caller's connection (not in a transaction). */
int rep_draft_save(struct rep *r, struct db *db, int64_t read_id, const char *author, json_t *body,
                   json_t **out, struct rep_invalid *bad, struct tr_error *err);
int rep_sign(struct rep *r, struct db *db, int64_t read_id, const char *signer, int kind,
             json_t **out, struct rep_invalid *bad, struct tr_error *err);
int rep_addendum(struct rep *r, struct db *db, int64_t read_id, const char *signer, json_t *body,
                 json_t **out, struct rep_invalid *bad, struct tr_error *err);
/* The versions of a read, each signed one with its deliveries (drafts only when asked). */
int rep_versions_json(struct rep *r, struct db *db, int64_t read_id, bool drafts, json_t **out,
                      struct tr_error *err);

/* ---- a signed version as a document (what every output is made from) ---------------------- */

struct rep_addendum {
    char *text;
    char signer[65];
    char signer_name[128];
    int64_t signed_at;
};

struct rep_doc {
    int64_t read_id;
    int64_t version_id;
    int seq;  /* version number within the read, from 1 */
    int kind; /* enum rep_kind */
    char template_id[32];
    char *sections[REP_SECTION_COUNT]; /* NULL or text (for an addendum: the final's) */
    struct rep_addendum addenda[16];   /* the addenda so far, this one last */
    unsigned naddenda;
    int critical_category; /* 0 none */
    char *critical_finding;
    /* who and when */
    char signer[65];
    char signer_name[128];
    int64_t signed_at;
    int64_t final_signed_at; /* for an addendum: when the final was signed */
    /* the read and the study, with the real identifiers */
    char site[65];
    char site_name[128];
    char organization[128];
    char study_uid[65];
    char accession[65];
    char patient_id[65];
    char issuer[65];        /* Issuer of Patient ID */
    char patient_name[256]; /* DICOM PN: FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX */
    char birth_date[9];
    char sex[17];
    char modality[64];
    char body_part[65];
    char description[260];
    char study_date[9];
    char study_time[17];
    char referring[256]; /* PN */
    char study_id[17];
    int priority;
    int64_t series_count, instance_count;
    /* our objects */
    char sr_uid[65];
    char pdf_uid[65];
    char sr_series[65];
    char pdf_series[65];
    char predecessor_sr[65]; /* the SR of the version this one follows, "" none */
    char predecessor_sr_series[65];
};

void rep_doc_release(struct rep_doc *d);
/* HL7 result status of a version: 'P', 'F' or 'C' (addenda correct the final). */
char rep_doc_status(const struct rep_doc *d);
/* The whole text, as the ORU's and FHIR's plain-text form (section headings in capitals). */
int rep_doc_text(const struct rep_doc *d, struct tr_buf *out);

/* Load a signed version (and everything it needs) from the database and the archive. */
int rep_doc_load(struct rep *r, struct db *db, int64_t version_id, struct rep_doc *d,
                 struct tr_error *err);

/* ---- outputs ------------------------------------------------------------------------------ */

/* HL7 v2.5.1 ORU^R01: MSH, PID, ORC, OBR, OBX per section (FT), the critical result, the
 * addenda, and the PDF (ED, base64) when given. `receiver` is "APPLICATION^FACILITY" or "". */
int rep_oru_build(const struct rep_doc *d, const char *control_id, const char *receiver,
                  int64_t now, const void *pdf, size_t pdf_len, struct tr_buf *out,
                  struct tr_error *err);

/* FHIR R4 resources of a version (ids: the read's id). */
json_t *rep_fhir_diagnostic_report(const struct rep_doc *d, const char *base, const void *pdf,
                                   size_t pdf_len);
json_t *rep_fhir_imaging_study(const struct rep_doc *d);
json_t *rep_fhir_service_request(const struct rep_doc *d);
/* A transaction Bundle (PUT of the three) for a site's FHIR server. */
json_t *rep_fhir_bundle(const struct rep_doc *d, const void *pdf, size_t pdf_len);

/* The Basic Text SR (TID 2000) of a version. `evidence` lists the study's instances
 * (NULL-safe; count may be 0). */
struct rep_evidence {
    char series_uid[65];
    char sop_class[65];
    char sop_uid[65];
};
struct dcm_dataset *rep_sr_build(const struct rep_doc *d, const struct rep_evidence *evidence,
                                 size_t count, int64_t now, struct tr_error *err);
/* The Encapsulated PDF of a version. */
struct dcm_dataset *rep_pdf_dataset(const struct rep_doc *d, const void *pdf, size_t len,
                                    int64_t now, struct tr_error *err);

/* The PDF of a version (cairo), appended to out. */
int rep_pdf_render(const struct rep_doc *d, struct tr_buf *out, struct tr_error *err);
/* Free what cairo and fontconfig keep for the process (fonts, caches), when no PDF is being
 * drawn any more and none will be until the next rep_pdf_render (a leak checker then sees
 * nothing left). */
void rep_pdf_cleanup(void);

/* ---- critical results --------------------------------------------------------------------- */

/* Open a communication record for a read (in the caller's transaction). *id gets its id. */
int rep_critical_open(struct rep *r, struct db *db, int64_t read_id, const char *site, int category,
                      const char *finding, const char *actor, int64_t now, int64_t *id,
                      struct tr_error *err);
int rep_critical_escalate(struct rep *r, int64_t now, struct tr_error *err);
/* POST /reads/{id}/critical: open a record (and flag the draft). Results as rep_sign. */
int rep_critical_flag(struct rep *r, struct db *db, int64_t read_id, const char *actor,
                      json_t *body, json_t **out, struct rep_invalid *bad, struct tr_error *err);
/* Acknowledge {"by", "method", "note"} as `user`; site_scope (non-NULL) must be the record's
 * site (else TR_EDENIED). TR_EEXIST when acknowledged already. */
int rep_critical_ack(struct rep *r, struct db *db, int64_t id, const char *site_scope,
                     const char *user, json_t *body, json_t **out, struct rep_invalid *bad,
                     struct tr_error *err);
int rep_critical_get(struct db *db, int64_t id, json_t **out, struct tr_error *err);
/* "phone", "in_person", ... (NULL-ended) */
extern const char *const rep_ack_methods[];
json_t *rep_critical_json(struct db_stmt *st); /* a row of REP_CRITICAL_COLUMNS */
#define REP_CRITICAL_COLUMNS                                                                       \
    "id, read_id, site, category, finding, created_by, created_at, due_at, state, ack_by, "        \
    "ack_method, ack_user, ack_at, ack_note, escalations, escalated_at"

/* ---- delivery ----------------------------------------------------------------------------- */

/* Queue a signed version for every target (in the caller's transaction). */
int rep_outbox_queue(struct rep *r, struct db *db, int64_t read_id, int64_t version_id,
                     const char *site, int64_t now, struct tr_error *err);
int rep_outbox_deliver(struct rep *r, int64_t now, struct tr_error *err);
/* A rejected or failed delivery back to pending (TR_EEXIST when it is neither). */
int rep_outbox_retry(struct rep *r, struct db *db, int64_t id, const char *actor,
                     struct tr_error *err);
#define REP_OUTBOX_COLUMNS                                                                         \
    "id, version_id, read_id, target, destination, state, attempts, created_at, next_at, "         \
    "delivered_at, last_error, last_ack"
json_t *rep_outbox_json(struct db_stmt *st); /* a row of REP_OUTBOX_COLUMNS */

/* "host:port" -> host, port (IPv6 in brackets); "AE@host:port" -> ae, host, port. */
int rep_parse_hostport(const char *text, char *host, size_t host_size, int *port);
int rep_parse_dicom_target(const char *text, char *ae, size_t ae_size, char *host, size_t host_size,
                           int *port);

#endif
