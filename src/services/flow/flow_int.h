/*
 * flow_int.h - private header of the workflow service (src/services/flow).
 */
#ifndef FLOW_INT_H
#define FLOW_INT_H

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>

#include "db.h"
#include "flow.h"

#define FLOW_ID_MAX 65
#define FLOW_MAX_LIST 64

enum flow_priority { PRIO_STAT = 0, PRIO_URGENT = 1, PRIO_ROUTINE = 2, PRIO_COUNT };

extern const char *const flow_priority_names[PRIO_COUNT];
/* "STAT", "URGENT" (also "ASAP", "HIGH"), "ROUTINE" (also "MEDIUM", "LOW"); -1 otherwise. */
int flow_priority_parse(const char *text);

/* ---- time zones (ICU) --------------------------------------------------------------------- */

struct flow_local {
    int year, month, day; /* month 1-12 */
    int weekday;          /* 0 Monday .. 6 Sunday */
    int minute;           /* of the day, 0-1439 */
};

bool flow_tz_valid(const char *zone);
int flow_tz_local(const char *zone, int64_t ms, struct flow_local *out);
/* "YYYY-MM-DD" of `ms` in `zone`. */
void flow_tz_date(const char *zone, int64_t ms, char out[11]);

/* ---- the catalog: sites, readers, contracts, priority rules ------------------------------- */

struct flow_site {
    char id[FLOW_ID_MAX];
    char name[128];
    char jurisdiction[16]; /* ISO 3166-2, e.g. US-TX */
    char timezone[64];
    char region[32];       /* data region, e.g. "US", "EU" */
    char pseudonymize_outside[32]; /* readers outside this region get pseudonymized data */
    char *ae_titles[FLOW_MAX_LIST];
    unsigned nae;
};

struct flow_window {     /* a weekly window in some time zone */
    uint8_t days;        /* bit 0 Monday .. bit 6 Sunday */
    int start, end;      /* minutes of the day; end <= start runs past midnight */
};

struct flow_interval {   /* an absolute interval, ms since the epoch */
    int64_t start, end;
};

struct flow_reader {
    char id[FLOW_ID_MAX];
    char name[128];
    bool online;
    char timezone[64];
    char region[32];
    struct { char jurisdiction[16]; char expires[11]; } licenses[FLOW_MAX_LIST];
    unsigned nlicenses;
    struct { char site[FLOW_ID_MAX]; char expires[11]; } privileges[FLOW_MAX_LIST];
    unsigned nprivileges;
    char *subspecialties[FLOW_MAX_LIST];
    unsigned nsubspecialties;
    int max_open;
    double rvu_target;   /* RVUs per hour the reader aims at (load weighting) */
    struct flow_window shifts[FLOW_MAX_LIST];
    unsigned nshifts;
    struct flow_interval intervals[FLOW_MAX_LIST];
    unsigned nintervals;
};

struct flow_subspecialty_rule {
    char modality[17];   /* "" any */
    char body_part[65];  /* "" any; matched against BodyPartExamined and description words */
    char words[128];     /* "" any; a phrase in the study description */
    char subspecialty[32];
};

struct flow_contract {
    char id[FLOW_ID_MAX];
    char site[FLOW_ID_MAX];
    unsigned sla[PRIO_COUNT];   /* minutes */
    bool has_hours;
    struct flow_window hours;   /* covered hours in the site's time zone */
    struct flow_subspecialty_rule rules[FLOW_MAX_LIST];
    unsigned nrules;
    int64_t price_cents;
    char currency[4];
};

struct flow_priority_rule {
    int64_t id;
    int priority;
    char modality[17];
    char body_part[65];
    char words[FLOW_MAX_LIST][64]; /* any of these phrases in the description */
    unsigned nwords;
};

/* An immutable snapshot of the catalog; replaced as a whole when something changes. */
struct flow_catalog {
    struct flow_site *sites;
    size_t nsites;
    struct flow_reader *readers;
    size_t nreaders;
    struct flow_contract *contracts;
    size_t ncontracts;
    struct flow_priority_rule *rules;
    size_t nrules;
    /* Positions sorted by id (byte order) for the lookups below; NULL: search linearly (a
     * catalog put together by hand, as in the unit tests). */
    size_t *site_order, *reader_order, *contract_order;
    atomic_int refs;
};

const struct flow_site *flow_catalog_site(const struct flow_catalog *c, const char *id);
const struct flow_reader *flow_catalog_reader(const struct flow_catalog *c, const char *id);
const struct flow_contract *flow_catalog_contract(const struct flow_catalog *c, const char *site);
void flow_catalog_free(struct flow_catalog *c);

/* Validation of API documents: 0, or TR_EINVAL with *field and *why set. */
struct flow_invalid {
    char field[96];
    char why[256];
};
int flow_site_parse(json_t *doc, struct flow_site *out, struct flow_invalid *bad);
int flow_reader_parse(json_t *doc, struct flow_reader *out, struct flow_invalid *bad);
int flow_contract_parse(json_t *doc, struct flow_contract *out, struct flow_invalid *bad);
int flow_rule_parse(json_t *doc, struct flow_priority_rule *out, struct flow_invalid *bad);
void flow_site_release(struct flow_site *s);
void flow_reader_release(struct flow_reader *r);

/* ---- the service -------------------------------------------------------------------------- */

struct flow {
    struct flow_config cfg;
    struct db_pool *pool;
    pthread_rwlock_t catalog_lock;
    pthread_mutex_t catalog_reload; /* one reload at a time: an older snapshot never replaces
                                       a newer one */
    struct flow_catalog *catalog;
    /* Changes made through this node, counted; the catalog is fresh while the count it was
     * loaded at (catalog_gen, read before loading) is the current one. A flag cleared when a
     * reload began let other threads take the old catalog as fresh until the reload ended
     * (flow_random saw decisions 40-85 ms after a PUT had returned use the document before). */
    atomic_uint_fast64_t catalog_changes;
    uint_fast64_t catalog_gen;
    int64_t catalog_loaded_at;
    char catalog_fingerprint[256]; /* of the database when the catalog was loaded (reload lock) */
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
    int64_t route_cursor[3]; /* (priority, due_at, id) where the router's second page of the
                                pool starts next pass; [0] < 0: after the first page (lock) */
};

void flow_log(struct flow *f, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int64_t flow_now_ms(void);

/* The current catalog, referenced (release with flow_catalog_put). Reloads it from the
 * database when it changed or is older than a few seconds (other nodes may have changed it). */
struct flow_catalog *flow_catalog_get(struct flow *f, struct tr_error *err);
void flow_catalog_put(struct flow_catalog *c);
void flow_catalog_changed(struct flow *f);
int flow_catalog_load(struct db *db, struct flow_catalog **out, struct tr_error *err);

/* ---- reads -------------------------------------------------------------------------------- */

enum flow_state {
    ST_POOL = 0,     /* waiting for a reader */
    ST_ASSIGNED,     /* routed to a reader, not yet claimed */
    ST_CLAIMED,      /* the reader is working on it */
    ST_PRELIMINARY,  /* a signed preliminary report */
    ST_FINAL,        /* the signed final report */
    ST_CANCELLED,
    ST_COUNT
};
extern const char *const flow_state_names[ST_COUNT];
int flow_state_parse(const char *text);

struct flow_read {
    int64_t id;
    char site[FLOW_ID_MAX];
    char study_uid[65];
    char patient_id[65];
    char accession[65];
    char modality[64];       /* ModalitiesInStudy, backslash-separated */
    char body_part[65];
    char description[260];
    int64_t instances;
    int priority;
    char priority_source[64];
    char subspecialty[32];
    int64_t mrvu;            /* RVU x 1000 */
    int state;
    char assignee[FLOW_ID_MAX];
    int64_t received_at, stable_at, created_at, assigned_at, claimed_at, last_activity_at,
        opened_at, preliminary_at, final_at, due_at, alerted_at, breached_at, escalated_at;
};

/* What the router needs to know about each reader right now. */
struct flow_load {
    int open;         /* assigned + claimed reads */
    int64_t mrvu;     /* their RVUs x 1000 */
    /* computed once per routing pass (time zones are not free): */
    bool known;       /* available and today are set */
    bool available;
    char today[11];   /* the date in the reader's time zone */
};

/* Fill the per-pass part of a load (availability, today's date) for `now`. */
void flow_load_prepare(const struct flow_reader *reader, int64_t now, struct flow_load *load);

/* Why a reader can or cannot take a read. */
enum flow_verdict {
    V_ELIGIBLE = 0,
    V_UNAVAILABLE,     /* offline and outside every shift */
    V_NO_LICENSE,      /* no valid license for the site's jurisdiction */
    V_LICENSE_EXPIRED,
    V_NO_PRIVILEGE,    /* no valid privileges at the site */
    V_PRIVILEGE_EXPIRED,
    V_SUBSPECIALTY,    /* lacks the required subspecialty */
    V_AT_CAP,          /* open reads at the cap */
};
extern const char *const flow_verdict_text[];

/* Judge one reader for one read at `now` (availability included unless ignore_availability).
 * `detail` (may be NULL) gets a sentence for the routing explanation. */
enum flow_verdict flow_judge(const struct flow_catalog *c, const struct flow_reader *reader,
                             const struct flow_site *site, const struct flow_read *read,
                             const struct flow_load *load, int64_t now, bool ignore_availability,
                             char *detail, size_t size);
bool flow_reader_available(const struct flow_reader *reader, int64_t now);

/* Choose a reader for `read`: the eligible reader with the least RVU-weighted load (a reader
 * already holding the patient's other unread studies first). Returns the index into
 * c->readers or -1. `loads` is parallel to c->readers. `why` (may be NULL) gets the
 * explanation appended as compact JSON text (what GET /reads/{id}/routing shows):
 *   {"decided_at":"...Z","priority":"STAT","jurisdiction":"US-TX","subspecialty":"neuro",
 *    "chosen":"dr-lee"|null,"rule":"...","considered":[{"reader":"dr-chen","verdict":
 *    "not licensed","open_reads":1,"queued_hours":0.15,"reason":"no license for US-TX"},...]}
 * with one entry per reader, "verdict" one of flow_verdict_text or "chosen". */
int flow_choose(const struct flow_catalog *c, const struct flow_read *read,
                const struct flow_load *loads, const char *affinity_reader, int64_t now,
                struct tr_buf *why);

/* The subspecialty a read needs under its site's contract ("" none). */
void flow_required_subspecialty(const struct flow_contract *k, const struct flow_read *read,
                                char *out, size_t size);
/* The due time of a read received at `received` (ms): arrival + the contract's SLA minutes for
 * the priority (default_sla without a contract); when the contract covers only some hours and
 * the read arrives outside them, the clock starts at the next covered minute (site's zone). */
int64_t flow_due_time(const unsigned default_sla[PRIO_COUNT], const struct flow_contract *k,
                      const struct flow_site *site, int priority, int64_t received);
/* Does `phrase` occur in `text` as whole words (case-insensitive)? */
bool flow_words_match(const char *text, const char *phrase);

/* The columns of flow_reads that flow_read_from_row reads, in its order. */
#define FLOW_READ_COLUMNS                                                                      \
    "id, site, study_uid, patient_id, accession, modality, body_part, description, instances, " \
    "priority, priority_source, subspecialty, mrvu, state, assignee, received_at, stable_at, " \
    "created_at, assigned_at, claimed_at, last_activity_at, opened_at, preliminary_at, "       \
    "final_at, due_at, alerted_at, breached_at, escalated_at"
void flow_read_from_row(struct db_stmt *st, struct flow_read *r);
/* "2026-11-22T10:30:00Z", or null for 0. */
json_t *flow_iso_json(int64_t ms);

int flow_read_load(struct db *db, int64_t id, struct flow_read *out, struct tr_error *err);
int flow_read_history(struct db *db, int64_t id, const char *kind, const char *actor,
                      json_t *detail, int64_t now, struct tr_error *err);
json_t *flow_read_json(const struct flow_read *r, int64_t now);

/* Background steps (flow_tick). Each returns what it did or a negative error. */
int flow_ingest_events(struct flow *f, int64_t now, struct tr_error *err);
int flow_route_pending(struct flow *f, int64_t now, struct tr_error *err);
int flow_lapse_claims(struct flow *f, int64_t now, struct tr_error *err);
int flow_sla_alerts(struct flow *f, int64_t now, struct tr_error *err);
int flow_outbox_deliver(struct flow *f, int64_t now, struct tr_error *err);

/* Queue a webhook event (also logged). Runs in the caller's transaction when db is given. */
int flow_outbox_add(struct flow *f, struct db *db, const char *kind, json_t *payload,
                    int64_t now, struct tr_error *err);

/* The reader holding another open (assigned or claimed) read of the same patient at the same
 * site, into `out` ("" none): the router's patient affinity. */
void flow_affinity(struct db *db, const struct flow_read *r, char *out, size_t size);

/* Per-reader loads from the database, parallel to c->readers. */
int flow_loads(struct db *db, const struct flow_catalog *c, struct flow_load *loads,
               struct tr_error *err);

/* Claim, release, reassign (the API and tests). Results: 0 done; TR_EEXIST lost the race or
 * the read is not claimable (state in *state); TR_EDENIED the reader is not eligible (why
 * in `why`); TR_ENOTFOUND. */
int flow_claim(struct flow *f, int64_t id, const char *reader, int64_t now, int *state,
               char *why, size_t why_size, struct tr_error *err);
int flow_release(struct flow *f, int64_t id, const char *actor, const char *reason, int64_t now,
                 struct tr_error *err);
int flow_reassign(struct flow *f, int64_t id, const char *reader, const char *actor, int64_t now,
                  char *why, size_t why_size, struct tr_error *err);

/* Validate and store (insert or replace) a site (kind 0), reader (1) or contract (2). */
int flow_store_document(struct flow *f, int kind, json_t *doc, struct flow_invalid *bad,
                        struct tr_error *err);

/* Metrics in the Prometheus text format. */
int flow_metrics(struct flow *f, struct tr_buf *out, struct tr_error *err);

#endif
