/*
 * flow.h - the teleradiology workflow: sites (client hospitals), readers (radiologists),
 * contracts (turnaround promises), reads (one study to report), priority, routing to an
 * eligible reader, the worklist and claims, SLA clocks and alerts, metrics.
 *
 * The workflow keeps its tables in the archive's database (SQLite or PostgreSQL; schema
 * component "flow") and is driven by the archive's "study_stable" events: a stable study of a
 * known site becomes a read with a priority and a due time, and the router assigns it to the
 * best eligible reader (DESIGN.md invariant 4: never to one unlicensed for the site's
 * jurisdiction or not privileged at the site).
 *
 * Exported names start with flow_.
 */
#ifndef FLOW_FLOW_H
#define FLOW_FLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "archive.h"
#include "error.h"
#include "http.h"

struct flow_config {
    struct arc_archive *archive;
    const char *db_url;         /* default: the archive's index database */
    unsigned claim_timeout;     /* seconds without activity before a claim lapses (1800) */
    unsigned sla_alert_lead;    /* seconds before due to raise the SLA warning (900) */
    unsigned default_sla[3];    /* minutes for STAT, URGENT, ROUTINE when a site has no
                                   contract (60, 240, 2880) */
    const char *webhook_url;    /* SLA warnings, breaches and escalations are POSTed here as
                                   JSON (NULL: log only) */
    unsigned tick_ms;           /* background pass period (1000; 0: no thread, call
                                   flow_tick yourself) */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
};

void flow_config_init(struct flow_config *c);

struct flow;

int flow_open(const struct flow_config *cfg, struct flow **out, struct tr_error *err);
void flow_close(struct flow *f);

/* The REST API under /api/v1 and Prometheus metrics at /metrics. */
int flow_register_api(struct flow *f, struct web_server *s, struct tr_error *err);

/* One pass of the background work: stable studies become reads, reads in the pool are
 * routed, lapsed claims are released, SLA warnings and breaches are raised, the outbox is
 * delivered. Every step runs at now_ms, or with now_ms 0 at the clock when the step starts
 * (as the background thread does). Returns the number of things done, or a negative error. */
int flow_tick(struct flow *f, int64_t now_ms, struct tr_error *err);

/* Seed a demonstration: three sites in three jurisdictions, five readers, contracts, and
 * synthetic studies stored through the archive (for `telerad serve --demo`). Does nothing if
 * sites exist already. */
int flow_seed_demo(struct flow *f, struct tr_error *err);

/* The patients a reader may see (DESIGN.md invariant 2): those of the reads assigned to or
 * claimed or signed by them, and of pool reads they are eligible for, each at its site. The
 * array and its strings are one allocation (free with tr_free). */
int flow_reader_patients(struct flow *f, const char *reader, struct arc_patient_ref **refs,
                         size_t *count, struct tr_error *err);

/* Cross-border policy (DESIGN.md invariant 3): must `reader` see `site`'s data pseudonymized?
 * True when the site says "pseudonymize_outside": REGION and the reader's "region" differs
 * (a reader with no region counts as outside). site NULL: for any site. */
bool flow_pseudonymize_for(struct flow *f, const char *reader, const char *site);

/* An HL7 order arrived or changed (orders_config.on_order): a higher priority raises the
 * read of that accession (due time brought forward), a cancelled order cancels a read not yet
 * reported. `order` is a struct order (orders.h). */
struct order;
void flow_on_order(void *flow, const struct order *order);

/* The site whose AE titles include `ae` (the archive's resolver). */
bool flow_site_for_ae(void *flow, const char *ae, char *site, size_t size);
/* The site an HL7 sending facility (MSH-4) belongs to: the site whose id, or one of whose AE
 * titles, is `facility` (exactly). The orders interface's resolver (src/hl7/orders.h). */
bool flow_site_for_facility(void *flow, const char *facility, const char *application,
                            char *site, size_t size);

/* ---- for the report service (src/services/reports) -----------------------------------------
 * The report service keeps its own tables in the same database and changes a read only through
 * these (guarded UPDATEs of flow_reads and entries in the read's history), inside the caller's
 * transaction on the caller's connection. */

struct db;

#define FLOW_READ_ASSIGNED 1
#define FLOW_READ_CLAIMED 2
#define FLOW_READ_PRELIMINARY 3
#define FLOW_READ_FINAL 4

/* What the report service needs to know of a read. */
struct flow_read_info {
    int64_t id;
    char site[65];
    char study_uid[65];
    char patient_id[65];
    char accession[65];
    char modality[64];       /* ModalitiesInStudy, backslash-separated */
    char body_part[65];
    char description[260];
    int priority;            /* 0 STAT, 1 URGENT, 2 ROUTINE */
    int state;               /* 0 pool, FLOW_READ_ASSIGNED ... FLOW_READ_FINAL, 5 cancelled */
    char assignee[65];       /* "" none */
    int64_t received_at, preliminary_at, final_at; /* ms, 0 when not yet */
};

/* "pool", "assigned", ... as the API shows them; "STAT", "URGENT", "ROUTINE". */
const char *flow_read_state_name(int state);
const char *flow_priority_name(int priority);

/* Load a read (TR_ENOTFOUND when there is none). */
int flow_read_info(struct db *db, int64_t id, struct flow_read_info *out, struct tr_error *err);

/* A signed report moves the read to FLOW_READ_PRELIMINARY (from assigned or claimed) or
 * FLOW_READ_FINAL (from assigned, claimed or preliminary), only while `reader` is its assignee;
 * the clock (preliminary_at / final_at) is stamped and a history entry ("preliminary" or
 * "final", with `detail` when given) written. TR_EEXIST when the read is not in such a state
 * (or not the reader's). */
int flow_read_set_report_state(struct db *db, int64_t id, const char *reader, int state,
                               json_t *detail, int64_t now, struct tr_error *err);

/* Add an entry to a read's history (GET /api/v1/reads/{id}). */
int flow_read_note(struct db *db, int64_t id, const char *kind, const char *actor,
                   json_t *detail, int64_t now, struct tr_error *err);

/* The stored document of a site or reader (kind "site" or "reader") as the API accepted it,
 * or NULL when there is none (json_decref it). */
json_t *flow_document(struct db *db, const char *kind, const char *id);

/* Queue an event for the webhook (POSTed with retries, or logged when there is none), in the
 * caller's transaction when db is given. */
int flow_event(struct flow *f, struct db *db, const char *kind, json_t *payload, int64_t now,
               struct tr_error *err);

#endif
