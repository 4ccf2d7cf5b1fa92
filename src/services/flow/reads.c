/*
 * reads.c - reads: from stable studies, with a priority and a due time; routed, claimed,
 * released; lapsed claims; SLA warnings and breaches.
 *
 * Every change of a read is one UPDATE guarded by the state it expects (compare and set), so
 * that two nodes sharing a database never both act: of two concurrent claims exactly one
 * changes a row (DESIGN.md invariant 5).
 */
#include "common.h"
#include "flow_int.h"
#include "dict.h"
#include "orders.h"

#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

const char *const flow_state_names[ST_COUNT] = {"pool",        "assigned", "claimed",
                                                "preliminary", "final",    "cancelled"};

int flow_state_parse(const char *text)
{
    for (int i = 0; i < ST_COUNT; i++) {
        if (text && strcmp(text, flow_state_names[i]) == 0)
            return i;
    }
    return -1;
}

/* ---- loading and presenting --------------------------------------------------------------- */

static int64_t col_time(struct db_stmt *st, int col)
{
    return db_column_is_null(st, col) ? 0 : db_column_int64(st, col);
}

void flow_read_from_row(struct db_stmt *st, struct flow_read *r)
{
    memset(r, 0, sizeof(*r));
    r->id = db_column_int64(st, 0);
    snprintf(r->site, sizeof(r->site), "%s", db_column_text(st, 1));
    snprintf(r->study_uid, sizeof(r->study_uid), "%s", db_column_text(st, 2));
    snprintf(r->patient_id, sizeof(r->patient_id), "%s", db_column_text(st, 3));
    snprintf(r->accession, sizeof(r->accession), "%s", db_column_text(st, 4));
    snprintf(r->modality, sizeof(r->modality), "%s", db_column_text(st, 5));
    snprintf(r->body_part, sizeof(r->body_part), "%s", db_column_text(st, 6));
    snprintf(r->description, sizeof(r->description), "%s", db_column_text(st, 7));
    r->instances = db_column_int64(st, 8);
    r->priority = (int)db_column_int64(st, 9);
    if (r->priority < 0 || r->priority >= PRIO_COUNT)
        r->priority = PRIO_ROUTINE;
    snprintf(r->priority_source, sizeof(r->priority_source), "%s", db_column_text(st, 10));
    snprintf(r->subspecialty, sizeof(r->subspecialty), "%s", db_column_text(st, 11));
    r->mrvu = db_column_int64(st, 12);
    r->state = (int)db_column_int64(st, 13);
    if (r->state < 0 || r->state >= ST_COUNT)
        r->state = ST_POOL;
    snprintf(r->assignee, sizeof(r->assignee), "%s", db_column_text(st, 14));
    r->received_at = col_time(st, 15);
    r->stable_at = col_time(st, 16);
    r->created_at = col_time(st, 17);
    r->assigned_at = col_time(st, 18);
    r->claimed_at = col_time(st, 19);
    r->last_activity_at = col_time(st, 20);
    r->opened_at = col_time(st, 21);
    r->preliminary_at = col_time(st, 22);
    r->final_at = col_time(st, 23);
    r->due_at = col_time(st, 24);
    r->alerted_at = col_time(st, 25);
    r->breached_at = col_time(st, 26);
    r->escalated_at = col_time(st, 27);
}

int flow_read_load(struct db *db, int64_t id, struct flow_read *out, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE id = $1", &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, id);
    rc = db_step(st, err);
    if (rc == 1)
        flow_read_from_row(st, out);
    db_reset(st);
    return rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
}

json_t *flow_iso_json(int64_t ms)
{
    if (!ms)
        return json_null();
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char buf[32];
    strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return json_string(buf);
}

json_t *flow_read_json(const struct flow_read *r, int64_t now)
{
    json_t *j = json_object();
    if (!j)
        return NULL;
    json_object_set_new(j, "id", json_integer(r->id));
    json_object_set_new(j, "study_uid", json_string(r->study_uid));
    json_object_set_new(j, "site", json_string(r->site));
    json_object_set_new(j, "priority", json_string(flow_priority_names[r->priority]));
    json_object_set_new(j, "priority_source", json_string(r->priority_source));
    json_object_set_new(j, "due_at", flow_iso_json(r->due_at));
    json_object_set_new(j, "time_left_seconds", json_integer((r->due_at - now) / 1000));
    json_object_set_new(j, "state", json_string(flow_state_names[r->state]));
    json_object_set_new(j, "assignee", r->assignee[0] ? json_string(r->assignee) : json_null());
    json_object_set_new(j, "accession", json_string(r->accession));
    json_object_set_new(j, "patient_id", json_string(r->patient_id));
    json_object_set_new(j, "modality", json_string(r->modality));
    json_object_set_new(j, "body_part", json_string(r->body_part));
    json_object_set_new(j, "description", json_string(r->description));
    json_object_set_new(j, "instances", json_integer(r->instances));
    json_object_set_new(j, "subspecialty",
                        r->subspecialty[0] ? json_string(r->subspecialty) : json_null());
    json_object_set_new(j, "rvu", json_real((double)r->mrvu / 1000.0));
    json_t *clocks = json_object();
    json_object_set_new(clocks, "received", flow_iso_json(r->received_at));
    json_object_set_new(clocks, "stable", flow_iso_json(r->stable_at));
    json_object_set_new(clocks, "assigned", flow_iso_json(r->assigned_at));
    json_object_set_new(clocks, "claimed", flow_iso_json(r->claimed_at));
    json_object_set_new(clocks, "opened", flow_iso_json(r->opened_at));
    json_object_set_new(clocks, "preliminary", flow_iso_json(r->preliminary_at));
    json_object_set_new(clocks, "final", flow_iso_json(r->final_at));
    json_object_set_new(clocks, "sla_warning", flow_iso_json(r->alerted_at));
    json_object_set_new(clocks, "sla_breached", flow_iso_json(r->breached_at));
    json_object_set_new(j, "clocks", clocks);
    return j;
}

int flow_read_history(struct db *db, int64_t id, const char *kind, const char *actor,
                      json_t *detail, int64_t now, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "INSERT INTO flow_read_events (read_id, at, kind, actor, detail) "
                            "VALUES ($1, $2, $3, $4, $5)",
                        &st, err);
    if (rc)
        return rc;
    char *text = detail ? json_dumps(detail, JSON_COMPACT) : NULL;
    db_bind_int64(st, 1, id);
    db_bind_int64(st, 2, now);
    db_bind_text(st, 3, kind);
    db_bind_text(st, 4, actor ? actor : "");
    db_bind_text(st, 5, text);
    rc = db_step(st, err);
    db_reset(st);
    free(text);
    return rc < 0 ? rc : 0;
}

/* ---- from stable studies to reads --------------------------------------------------------- */

/* RVUs per read by modality (the common published values for a professional read, rounded);
 * a read holding several modalities counts the largest. */
static int64_t mrvu_for(const char *modalities)
{
    static const struct {
        const char *m;
        int64_t mrvu;
    } table[] = {{"CT", 1500}, {"MR", 2000}, {"PT", 2500}, {"NM", 1000}, {"US", 700},
                 {"MG", 800},  {"CR", 300},  {"DX", 300},  {"XA", 1200}, {"RF", 600}};
    int64_t best = 0;
    char copy[64];
    snprintf(copy, sizeof(copy), "%s", modalities);
    char *save = NULL;
    for (char *m = strtok_r(copy, "\\", &save); m; m = strtok_r(NULL, "\\", &save)) {
        for (size_t i = 0; i < TR_ARRAY_SIZE(table); i++) {
            if (strcmp(table[i].m, m) == 0 && table[i].mrvu > best)
                best = table[i].mrvu;
        }
    }
    return best ? best : 1000;
}

/* The study's attributes the read needs, from the archive (index, representative header). */
struct study_facts {
    char patient_id[65], accession[65], modality[64], body_part[65], description[260];
    char requested_priority[17];
    int64_t instances;
    bool found;
};

static int facts_emit(void *ctx, const struct dcm_dataset *m)
{
    struct study_facts *f = ctx;
    dcm_dataset_get_string(m, 0x00100020, 0, f->patient_id, sizeof(f->patient_id));
    dcm_dataset_get_string(m, 0x00080050, 0, f->accession, sizeof(f->accession));
    dcm_dataset_get_string(m, 0x00081030, 0, f->description, sizeof(f->description));
    dcm_dataset_get_string(m, 0x00180015, 0, f->body_part, sizeof(f->body_part));
    dcm_dataset_get_string(m, 0x00401003, 0, f->requested_priority,
                           sizeof(f->requested_priority));
    struct tr_buf b;
    tr_buf_init(&b, 256);
    const struct dcm_element *e = dcm_dataset_get(m, 0x00080061);
    if (e && dcm_element_get_string(m, e, DCM_ALL_VALUES, &b) == 0 && b.data)
        snprintf(f->modality, sizeof(f->modality), "%s", b.data);
    tr_buf_release(&b);
    int64_t n;
    if (dcm_dataset_get_int(m, 0x00201208, 0, &n) == 0)
        f->instances = n;
    f->found = true;
    return -1; /* one is enough */
}

static int study_facts(struct flow *f, const char *site, const char *study_uid,
                       struct study_facts *out, struct tr_error *err)
{
    memset(out, 0, sizeof(*out));
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, study_uid);
    static const uint32_t ret[] = {0x00100020, 0x00080050, 0x00081030, 0x00080061, 0x00201208,
                                   0x00180015, 0x00401003};
    for (size_t i = 0; i < TR_ARRAY_SIZE(ret); i++)
        dcm_dataset_set_empty(keys, ret[i], dcm_dict_vr(ret[i]));
    const char *sites[2] = {site, NULL};
    struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys, .sites = sites, .limit = 1};
    int rc = arc_find(f->cfg.archive, &q, facts_emit, out, err);
    dcm_dataset_free(keys);
    return rc < 0 ? rc : 0;
}

/* Priority from the images' Requested Procedure Priority and the rules; the higher wins. */
static int priority_of(const struct flow_catalog *c, const struct study_facts *s, char *source,
                       size_t size)
{
    int best = PRIO_ROUTINE;
    snprintf(source, size, "default");
    int requested = flow_priority_parse(s->requested_priority);
    if (requested >= 0 && requested < best) {
        best = requested;
        snprintf(source, size, "requested procedure priority");
    }
    for (size_t i = 0; i < c->nrules; i++) {
        const struct flow_priority_rule *r = &c->rules[i];
        if (r->priority >= best)
            continue;
        if (*r->modality) {
            bool found = false;
            char copy[64];
            snprintf(copy, sizeof(copy), "%s", s->modality);
            char *save = NULL;
            for (char *m = strtok_r(copy, "\\", &save); m && !found; m = strtok_r(NULL, "\\", &save))
                found = strcasecmp(m, r->modality) == 0;
            if (!found)
                continue;
        }
        if (*r->body_part && strcasecmp(r->body_part, s->body_part) != 0 &&
            !flow_words_match(s->description, r->body_part))
            continue;
        bool word = r->nwords == 0;
        const char *hit = "";
        for (unsigned k = 0; k < r->nwords && !word; k++) {
            if (flow_words_match(s->description, r->words[k])) {
                word = true;
                hit = r->words[k];
            }
        }
        if (!word)
            continue;
        best = r->priority;
        snprintf(source, size, "rule %" PRId64 "%s%s", r->id, *hit ? ": " : "", hit);
    }
    return best;
}

/* The due time: arrival + the contract's minutes for the priority; outside covered hours the
 * clock starts when coverage begins (searched minute by minute over a week at most). */
int64_t flow_due_time(const unsigned default_sla[PRIO_COUNT], const struct flow_contract *k,
                      const struct flow_site *site, int priority, int64_t received)
{
    unsigned minutes = k ? k->sla[priority] : default_sla[priority];
    int64_t start = received;
    if (k && k->has_hours && site) {
        const int64_t step = 60000;
        for (int i = 0; i < 7 * 24 * 60; i++) {
            struct flow_local l;
            if (flow_tz_local(site->timezone, start, &l) < 0)
                break;
            const struct flow_window *w = &k->hours;
            bool in = w->start < w->end
                          ? (w->days & (1u << l.weekday)) && l.minute >= w->start &&
                                l.minute < w->end
                          : ((w->days & (1u << l.weekday)) && l.minute >= w->start) ||
                                ((w->days & (1u << ((l.weekday + 6) % 7))) && l.minute < w->end);
            if (in)
                break;
            start = (start / step + 1) * step;
        }
    }
    return start + (int64_t)minutes * 60000;
}

/* Create or update the read of one stable study. */
static int read_from_study(struct flow *f, struct db *db, const struct flow_catalog *c,
                           const struct arc_event *ev, int64_t now, struct tr_error *err)
{
    const struct flow_site *site = flow_catalog_site(c, ev->site);
    if (!site)
        return 0; /* archived for a sender that is no client site: nothing to read */
    struct study_facts s;
    int rc = study_facts(f, ev->site, ev->study_uid, &s, err);
    if (rc)
        return rc;
    if (!s.found)
        return 0; /* deleted since */
    int64_t received = 0, stable = 0;
    arc_index_study_times(arc_index(f->cfg.archive), ev->site, ev->study_uid, &received, &stable,
                          NULL);
    if (!received)
        received = ev->created_at;
    char source[64];
    int priority = priority_of(c, &s, source, sizeof(source));
    /* An order that came first (HL7 ORM/OMI) for this accession sets the priority when it
     * asks for more urgency. No orders table (HL7 off) is no order. */
    struct order o;
    if (s.accession[0] && orders_lookup(db, ev->site, s.accession, &o, NULL) == 0 &&
        strcmp(o.status, "cancelled") != 0 && o.priority >= 0 && o.priority < priority) {
        priority = o.priority;
        snprintf(source, sizeof(source), "order (%s)", o.priority_code);
    }
    const struct flow_contract *k = flow_catalog_contract(c, site->id);
    struct flow_read probe = {0};
    snprintf(probe.modality, sizeof(probe.modality), "%s", s.modality);
    snprintf(probe.body_part, sizeof(probe.body_part), "%s", s.body_part);
    snprintf(probe.description, sizeof(probe.description), "%s", s.description);
    char subspecialty[32];
    flow_required_subspecialty(k, &probe, subspecialty, sizeof(subspecialty));
    int64_t due = flow_due_time(f->cfg.default_sla, k, site, priority, received);

    /* New read, or an update of the existing one: more instances arrived, a higher priority
     * brings the due time forward (never back). */
    struct db_stmt *st;
    if ((rc = db_begin(db, err)))
        return rc;
    rc = db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE site = $1 AND "
                        "study_uid = $2",
                    &st, err);
    if (rc)
        goto fail;
    db_bind_text(st, 1, ev->site);
    db_bind_text(st, 2, ev->study_uid);
    struct flow_read old;
    rc = db_step(st, err);
    if (rc == 1)
        flow_read_from_row(st, &old);
    db_reset(st);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        rc = db_prepare(db,
                        "INSERT INTO flow_reads (site, study_uid, patient_id, accession, modality, "
                        "body_part, description, instances, priority, priority_source, "
                        "subspecialty, mrvu, state, received_at, stable_at, created_at, due_at) "
                        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 0, $13, $14, "
                        "$15, $16) RETURNING id",
                        &st, err);
        if (rc)
            goto fail;
        db_bind_text(st, 1, ev->site);
        db_bind_text(st, 2, ev->study_uid);
        db_bind_text(st, 3, s.patient_id);
        db_bind_text(st, 4, s.accession);
        db_bind_text(st, 5, s.modality);
        db_bind_text(st, 6, s.body_part);
        db_bind_text(st, 7, s.description);
        db_bind_int64(st, 8, s.instances);
        db_bind_int64(st, 9, priority);
        db_bind_text(st, 10, source);
        db_bind_text(st, 11, subspecialty);
        db_bind_int64(st, 12, mrvu_for(s.modality));
        db_bind_int64(st, 13, received);
        db_bind_int64(st, 14, stable ? stable : now);
        db_bind_int64(st, 15, now);
        db_bind_int64(st, 16, due);
        rc = db_step(st, err);
        int64_t id = rc == 1 ? db_column_int64(st, 0) : 0;
        db_reset(st);
        if (rc < 0)
            goto fail;
        json_t *d = json_pack("{s:s,s:s,s:I,s:b}", "priority", flow_priority_names[priority],
                              "because", source, "due_at", (json_int_t)due, "contract",
                              k != NULL);
        rc = flow_read_history(db, id, "created", "system", d, now, err);
        json_decref(d);
        if (rc)
            goto fail;
        flow_log(f, 2, "read %" PRId64 ": %s study of site %s, due in %" PRId64 " min", id,
                 flow_priority_names[priority], ev->site, (due - now) / 60000);
    } else {
        bool raise = priority < old.priority;
        rc = db_prepare(db,
                        "UPDATE flow_reads SET instances = $2, modality = $3, description = $4, "
                        "body_part = $5, priority = $6, priority_source = $7, due_at = $8, "
                        "stable_at = $9, mrvu = $10 WHERE id = $1",
                        &st, err);
        if (rc)
            goto fail;
        db_bind_int64(st, 1, old.id);
        db_bind_int64(st, 2, s.instances);
        db_bind_text(st, 3, s.modality);
        db_bind_text(st, 4, s.description);
        db_bind_text(st, 5, s.body_part);
        db_bind_int64(st, 6, raise ? priority : old.priority);
        db_bind_text(st, 7, raise ? source : old.priority_source);
        db_bind_int64(st, 8, raise && due < old.due_at ? due : old.due_at);
        db_bind_int64(st, 9, stable ? stable : now);
        db_bind_int64(st, 10, mrvu_for(s.modality));
        rc = db_step(st, err);
        db_reset(st);
        if (rc < 0)
            goto fail;
        json_t *d = json_pack("{s:I,s:I}", "instances", (json_int_t)s.instances, "was",
                              (json_int_t)old.instances);
        if (raise)
            json_object_set_new(d, "priority", json_string(flow_priority_names[priority]));
        rc = flow_read_history(db, old.id, "updated", "system", d, now, err);
        json_decref(d);
        if (rc)
            goto fail;
    }
    return db_commit(db, err);
fail:
    db_rollback(db);
    return rc;
}

#define EVENT_LEASE_MS 60000

int flow_ingest_events(struct flow *f, int64_t now, struct tr_error *err)
{
    struct arc_event *events = NULL;
    size_t n = 0;
    struct arc_index *ix = arc_index(f->cfg.archive);
    int rc = arc_index_events(ix, "study_stable", &events, &n, 200, err);
    if (rc)
        return rc;
    if (!n) {
        tr_free(events);
        return 0;
    }
    struct flow_catalog *c = flow_catalog_get(f, err);
    struct db *db = NULL;
    if (!c || db_pool_acquire(f->pool, &db, err) < 0) {
        flow_catalog_put(c);
        tr_free(events);
        return err && err->code ? err->code : TR_EIO;
    }
    int done = 0;
    for (size_t i = 0; i < n; i++) {
        /* Several nodes list the same events: the one that takes the event makes the read.
         * Held for a minute (one study takes milliseconds); a node that dies holding it
         * leaves it to the others after that. The clock now, not at the step's start. */
        int64_t t = flow_now_ms();
        if (arc_index_claim_event(ix, events[i].id, t, t + EVENT_LEASE_MS, NULL) != 1)
            continue;
        struct tr_error e = TR_ERROR_INIT;
        rc = read_from_study(f, db, c, &events[i], now, &e);
        if (rc) {
            /* Give the event back for the next pass (the database may be back). */
            flow_log(f, 1, "study %s of site %s: no read yet: %s", events[i].study_uid,
                     events[i].site, e.message);
            arc_index_claim_event(ix, events[i].id, t, 0, NULL);
            continue;
        }
        arc_index_consume_event(ix, events[i].id, NULL);
        done++;
    }
    db_pool_release(f->pool, db);
    flow_catalog_put(c);
    tr_free(events);
    return done;
}

/* ---- loads and routing -------------------------------------------------------------------- */

int flow_loads(struct db *db, const struct flow_catalog *c, struct flow_load *loads,
               struct tr_error *err)
{
    memset(loads, 0, c->nreaders * sizeof(*loads));
    struct db_stmt *st;
    /* "+state": not through the (state, due_at) index, which would read every open row of
     * the table; the (assignee, state, mrvu) index answers alone (migration 2). */
    int rc = db_prepare(db, "SELECT assignee, COUNT(*), SUM(mrvu) FROM flow_reads WHERE +state "
                            "IN (1, 2) AND assignee IS NOT NULL GROUP BY assignee",
                        &st, err);
    if (rc)
        return rc;
    while ((rc = db_step(st, err)) == 1) {
        const struct flow_reader *r = flow_catalog_reader(c, db_column_text(st, 0));
        if (r) {
            size_t i = (size_t)(r - c->readers);
            loads[i].open = (int)db_column_int64(st, 1);
            loads[i].mrvu = db_column_int64(st, 2);
        }
    }
    db_reset(st);
    return rc < 0 ? rc : 0;
}

void flow_affinity(struct db *db, const struct flow_read *r, char *out, size_t size)
{
    out[0] = '\0';
    if (!r->patient_id[0])
        return;
    struct db_stmt *st;
    if (db_prepare(db, "SELECT assignee FROM flow_reads WHERE site = $1 AND patient_id = $2 AND "
                       "id <> $3 AND state IN (1, 2) AND assignee IS NOT NULL LIMIT 1",
                   &st, NULL) < 0)
        return;
    db_bind_text(st, 1, r->site);
    db_bind_text(st, 2, r->patient_id);
    db_bind_int64(st, 3, r->id);
    if (db_step(st, NULL) == 1)
        snprintf(out, size, "%s", db_column_text(st, 0));
    db_reset(st);
}

/* Give read `id` to `reader` with one of the guarded UPDATEs below ($1 read, $2 reader, $3 now,
 * $4 routing or NULL, $5 the reader's cap), and record `kind` in its history, in one
 * transaction that first locks the reader's row: the UPDATE counts the reader's open reads
 * itself, so that a routing pass working from loads counted earlier, concurrent claims and
 * other nodes can never together take a reader past the cap. Returns 1 done, 0 not (the read
 * was not in the expected state, or the reader is at the cap), negative on errors. */
static int take_read(struct db *db, const char *update, int64_t id, const char *reader,
                     int cap, const char *routing, const char *kind, const char *actor,
                     int64_t now, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_begin(db, err);
    if (rc)
        return rc;
    if ((rc = db_prepare(db, "SELECT id FROM flow_readers WHERE id = $1 {FOR_UPDATE}", &st,
                         err)))
        goto fail;
    db_bind_text(st, 1, reader);
    rc = db_step(st, err);
    db_reset(st);
    if (rc < 0)
        goto fail;
    if ((rc = db_prepare(db, update, &st, err)))
        goto fail;
    db_bind_int64(st, 1, id);
    db_bind_text(st, 2, reader);
    db_bind_int64(st, 3, now);
    db_bind_text(st, 4, routing);
    db_bind_int64(st, 5, cap);
    rc = db_step(st, err);
    bool done = rc >= 0 && db_changes(st) == 1;
    db_reset(st);
    if (rc < 0)
        goto fail;
    if (!done) {
        db_rollback(db);
        return 0;
    }
    json_t *d = json_pack("{s:s}", "reader", reader);
    rc = flow_read_history(db, id, kind, actor, d, now, err);
    json_decref(d);
    if (rc == 0)
        rc = db_commit(db, err);
    if (rc == 0)
        return 1;
fail:
    db_rollback(db);
    return rc < 0 ? rc : TR_EIO;
}

/* The router's: from the pool. */
static const char route_update[] =
    "UPDATE flow_reads SET state = 1, assignee = $2, assigned_at = $3, routing = $4 WHERE id = "
    "$1 AND state = 0 AND (SELECT COUNT(*) FROM flow_reads o WHERE o.assignee = $2 AND o.state "
    "IN (1, 2)) < $5";
/* A claim: from the pool, or the reader's own assigned read (not counted against the cap). */
static const char claim_update[] =
    "UPDATE flow_reads SET state = 2, assignee = $2, claimed_at = $3, last_activity_at = $3, "
    "assigned_at = COALESCE(assigned_at, $3), routing = COALESCE($4, routing) WHERE id = $1 AND "
    "(state = 0 OR (state = 1 AND assignee = $2)) AND (SELECT COUNT(*) FROM flow_reads o WHERE "
    "o.assignee = $2 AND o.state IN (1, 2) AND o.id <> $1) < $5";

/* Pool reads in routing order after (priority, due_at, id) = after[], into reads[] (up to
 * max): the most urgent first (STAT pre-empts), then least slack. */
static int pool_page(struct db *db, const int64_t *after, struct flow_read *reads, size_t max,
                     size_t *n, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE state = 0 AND "
                            "(priority > $1 OR (priority = $1 AND (due_at > $2 OR (due_at = $2 "
                            "AND id > $3)))) ORDER BY priority, due_at, id LIMIT $4",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, after[0]);
    db_bind_int64(st, 2, after[1]);
    db_bind_int64(st, 3, after[2]);
    db_bind_int64(st, 4, (int64_t)max);
    *n = 0;
    while (*n < max && (rc = db_step(st, err)) == 1)
        flow_read_from_row(st, &reads[(*n)++]);
    db_reset(st);
    return rc < 0 ? rc : 0;
}

#define ROUTE_PAGE 200

int flow_route_pending(struct flow *f, int64_t now, struct tr_error *err)
{
    struct flow_catalog *c = flow_catalog_get(f, err);
    if (!c)
        return err && err->code ? err->code : TR_EIO;
    struct db *db;
    if (db_pool_acquire(f->pool, &db, err) < 0) {
        flow_catalog_put(c);
        return err->code;
    }
    struct flow_load *loads = tr_calloc(c->nreaders + 1, sizeof(*loads));
    struct flow_read *reads = tr_calloc(2 * ROUTE_PAGE, sizeof(*reads));
    size_t n = 0, more = 0;
    int rc = !loads || !reads ? tr_error_set(err, TR_ENOMEM, "out of memory")
                              : flow_loads(db, c, loads, err);
    for (size_t i = 0; rc == 0 && i < c->nreaders; i++)
        flow_load_prepare(&c->readers[i], now, &loads[i]);
    /* The most urgent page always; then a page further down, from where the last pass left
     * off (wrapping around), so that reads nobody can take at the top of the pool do not
     * keep every other read from being routed. */
    static const int64_t start[3] = {-1, 0, 0};
    if (rc == 0)
        rc = pool_page(db, start, reads, ROUTE_PAGE, &n, err);
    if (rc == 0 && n == ROUTE_PAGE) {
        int64_t after[3] = {reads[n - 1].priority, reads[n - 1].due_at, reads[n - 1].id};
        pthread_mutex_lock(&f->lock);
        if (f->route_cursor[0] >= 0 &&
            (f->route_cursor[0] > after[0] ||
             (f->route_cursor[0] == after[0] &&
              (f->route_cursor[1] > after[1] ||
               (f->route_cursor[1] == after[1] && f->route_cursor[2] > after[2])))))
            memcpy(after, f->route_cursor, sizeof(after));
        pthread_mutex_unlock(&f->lock);
        rc = pool_page(db, after, reads + n, ROUTE_PAGE, &more, err);
        pthread_mutex_lock(&f->lock);
        if (rc == 0 && more == ROUTE_PAGE) {
            const struct flow_read *last = &reads[n + more - 1];
            f->route_cursor[0] = last->priority;
            f->route_cursor[1] = last->due_at;
            f->route_cursor[2] = last->id;
        } else {
            f->route_cursor[0] = -1; /* the end: next time from the top again */
        }
        pthread_mutex_unlock(&f->lock);
        n += more;
    }
    struct tr_buf why;
    tr_buf_init(&why, 64u << 20);
    struct db_stmt *st;
    int routed = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct flow_read *r = &reads[i];
        char affinity[FLOW_ID_MAX];
        flow_affinity(db, r, affinity, sizeof(affinity));
        tr_buf_reset(&why);
        int k = flow_choose(c, r, loads, affinity[0] ? affinity : NULL, now, &why);
        if (k < 0) {
            /* Nobody can take it: escalate once, keeping the explanation of that moment
             * (GET /reads/{id}/routing also decides again on the spot). */
            if (r->escalated_at)
                continue;
            /* Once across nodes (the guarded UPDATE), with its outbox row and history in the
             * same transaction. */
            if (db_begin(db, NULL) < 0)
                continue;
            if (db_prepare(db, "UPDATE flow_reads SET escalated_at = $2, routing = $3 WHERE id = "
                               "$1 AND escalated_at IS NULL AND state = 0",
                           &st, NULL) < 0) {
                db_rollback(db);
                continue;
            }
            db_bind_int64(st, 1, r->id);
            db_bind_int64(st, 2, now);
            db_bind_text(st, 3, why.data ? why.data : "{}");
            bool mine = db_step(st, NULL) >= 0 && db_changes(st) == 1;
            db_reset(st);
            if (!mine) {
                db_rollback(db);
            } else {
                json_t *ev = json_pack("{s:s,s:I,s:s,s:s,s:s}", "event", "read.unassignable",
                                       "read", (json_int_t)r->id, "site", r->site, "priority",
                                       flow_priority_names[r->priority], "reason",
                                       "no eligible reader");
                int erc = flow_outbox_add(f, db, "read.unassignable", ev, now, NULL);
                json_decref(ev);
                json_t *d = json_pack("{s:s}", "reason", "no eligible reader (see routing)");
                if (erc == 0)
                    erc = flow_read_history(db, r->id, "escalated", "system", d, now, NULL);
                json_decref(d);
                if (erc == 0 && db_commit(db, NULL) == 0)
                    flow_log(f, 1, "read %" PRId64 " (%s, site %s): no eligible reader; escalated",
                             r->id, flow_priority_names[r->priority], r->site);
                else if (erc)
                    db_rollback(db);
            }
            continue;
        }
        const struct flow_reader *reader = &c->readers[k];
        rc = take_read(db, route_update, r->id, reader->id, reader->max_open, why.data,
                       "assigned", "router", now, err);
        if (rc == 1) {
            loads[k].open++;
            loads[k].mrvu += r->mrvu;
            routed++;
        } else if (rc == 0) {
            /* Taken meanwhile, or the reader reached the cap through claims since the loads
             * were counted: no more for them in this pass. */
            loads[k].open = reader->max_open;
        }
        rc = rc < 0 ? rc : 0;
    }
    tr_buf_release(&why);
    tr_free(reads);
    tr_free(loads);
    db_pool_release(f->pool, db);
    flow_catalog_put(c);
    return rc < 0 ? rc : routed;
}

/* ---- claims ------------------------------------------------------------------------------- */

int flow_claim(struct flow *f, int64_t id, const char *reader_id, int64_t now, int *state,
               char *why, size_t why_size, struct tr_error *err)
{
    struct flow_catalog *c = flow_catalog_get(f, err);
    if (!c)
        return err && err->code ? err->code : TR_EIO;
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc) {
        flow_catalog_put(c);
        return rc;
    }
    struct flow_read r;
    rc = flow_read_load(db, id, &r, err);
    const struct flow_reader *reader = flow_catalog_reader(c, reader_id);
    const struct flow_site *site = rc == 0 ? flow_catalog_site(c, r.site) : NULL;
    if (rc == 0 && state)
        *state = r.state;
    if (rc == 0 && (!reader || !site)) {
        snprintf(why, why_size, "%s", !reader ? "no such reader" : "the read's site is gone");
        rc = TR_EDENIED;
    }
    if (rc == 0) {
        /* Eligibility now (availability aside: a reader claiming is at work), with the cap
         * counted without this read. */
        struct flow_load load = {0};
        struct db_stmt *st;
        if (db_prepare(db, "SELECT COUNT(*) FROM flow_reads WHERE assignee = $1 AND state IN "
                           "(1, 2) AND id <> $2",
                       &st, NULL) == 0) {
            db_bind_text(st, 1, reader_id);
            db_bind_int64(st, 2, id);
            if (db_step(st, NULL) == 1)
                load.open = (int)db_column_int64(st, 0);
            db_reset(st);
        }
        char detail[256];
        enum flow_verdict v = flow_judge(c, reader, site, &r, &load, now, true, detail,
                                         sizeof(detail));
        if (v != V_ELIGIBLE) {
            snprintf(why, why_size, "%s: %s", flow_verdict_text[v], detail);
            rc = TR_EDENIED;
        }
    }
    if (rc == 0) {
        rc = take_read(db, claim_update, id, reader_id, reader->max_open, NULL, "claimed",
                       reader_id, now, err);
        if (rc == 1) {
            rc = 0;
        } else if (rc == 0 && flow_read_load(db, id, &r, NULL) == 0) {
            if (state)
                *state = r.state;
            if (r.state == ST_POOL || (r.state == ST_ASSIGNED && strcmp(r.assignee, reader_id) == 0)) {
                /* Still claimable: the cap was reached by a concurrent claim or assignment. */
                snprintf(why, why_size, "%s: the reader reached the cap of %d open reads",
                         flow_verdict_text[V_AT_CAP], reader->max_open);
                rc = TR_EDENIED;
            } else {
                snprintf(why, why_size, "the read is %s%s%s", flow_state_names[r.state],
                         r.assignee[0] ? " by " : "", r.assignee);
                rc = TR_EEXIST;
            }
        } else if (rc == 0) {
            rc = TR_EEXIST;
        }
    }
    db_pool_release(f->pool, db);
    flow_catalog_put(c);
    return rc;
}

int flow_release(struct flow *f, int64_t id, const char *actor, const char *reason, int64_t now,
                 struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db, "UPDATE flow_reads SET state = 0, assignee = NULL, claimed_at = NULL, "
                        "assigned_at = NULL WHERE id = $1 AND state IN (1, 2)",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, id);
        rc = db_step(st, err);
        bool done = rc >= 0 && db_changes(st) == 1;
        db_reset(st);
        if (rc >= 0)
            rc = done ? 0 : TR_EEXIST;
        if (done) {
            json_t *d = json_pack("{s:s}", "reason", reason ? reason : "");
            flow_read_history(db, id, "released", actor, d, now, NULL);
            json_decref(d);
        }
    }
    db_pool_release(f->pool, db);
    return rc;
}

int flow_reassign(struct flow *f, int64_t id, const char *reader_id, const char *actor, int64_t now,
                  char *why, size_t why_size, struct tr_error *err)
{
    struct flow_catalog *c = flow_catalog_get(f, err);
    if (!c)
        return err && err->code ? err->code : TR_EIO;
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc) {
        flow_catalog_put(c);
        return rc;
    }
    struct flow_read r;
    rc = flow_read_load(db, id, &r, err);
    const struct flow_reader *reader = flow_catalog_reader(c, reader_id);
    const struct flow_site *site = rc == 0 ? flow_catalog_site(c, r.site) : NULL;
    if (rc == 0 && (!reader || !site)) {
        snprintf(why, why_size, "%s", !reader ? "no such reader" : "the read's site is gone");
        rc = TR_EDENIED;
    }
    if (rc == 0) {
        /* An administrator may overrule the cap and the shifts, never licensure or
         * privileges (DESIGN.md invariant 4). */
        char detail[256];
        enum flow_verdict v = flow_judge(c, reader, site, &r, NULL, now, true, detail,
                                         sizeof(detail));
        if (v != V_ELIGIBLE) {
            snprintf(why, why_size, "%s: %s", flow_verdict_text[v], detail);
            rc = TR_EDENIED;
        }
    }
    if (rc == 0) {
        struct db_stmt *st;
        rc = db_prepare(db, "UPDATE flow_reads SET state = 1, assignee = $2, assigned_at = $3, "
                            "claimed_at = NULL WHERE id = $1 AND state IN (0, 1, 2)",
                        &st, err);
        if (rc == 0) {
            db_bind_int64(st, 1, id);
            db_bind_text(st, 2, reader_id);
            db_bind_int64(st, 3, now);
            rc = db_step(st, err);
            bool done = rc >= 0 && db_changes(st) == 1;
            db_reset(st);
            if (rc >= 0)
                rc = done ? 0 : TR_EEXIST;
            if (done) {
                json_t *d = json_pack("{s:s,s:s}", "reader", reader_id, "was",
                                      r.assignee[0] ? r.assignee : "");
                flow_read_history(db, id, "reassigned", actor, d, now, NULL);
                json_decref(d);
            } else {
                snprintf(why, why_size, "the read is %s", flow_state_names[r.state]);
            }
        }
    }
    db_pool_release(f->pool, db);
    flow_catalog_put(c);
    return rc;
}

/* Claims without activity for claim_timeout go back to the pool (and are routed again). */
int flow_lapse_claims(struct flow *f, int64_t now, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    int64_t cutoff = now - (int64_t)f->cfg.claim_timeout * 1000;
    struct db_stmt *st;
    int64_t ids[100];
    size_t n = 0;
    rc = db_prepare(db, "SELECT id FROM flow_reads WHERE state = 2 AND last_activity_at < $1 "
                        "LIMIT 100",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, cutoff);
        while (n < 100 && (rc = db_step(st, err)) == 1)
            ids[n++] = db_column_int64(st, 0);
        db_reset(st);
    }
    int lapsed = 0;
    for (size_t i = 0; rc >= 0 && i < n; i++) {
        if (db_prepare(db, "UPDATE flow_reads SET state = 0, assignee = NULL, claimed_at = NULL, "
                           "assigned_at = NULL WHERE id = $1 AND state = 2 AND "
                           "last_activity_at < $2",
                       &st, err) < 0)
            break;
        db_bind_int64(st, 1, ids[i]);
        db_bind_int64(st, 2, cutoff);
        bool done = db_step(st, NULL) >= 0 && db_changes(st) == 1;
        db_reset(st);
        if (done) {
            json_t *d = json_pack("{s:i}", "idle_seconds", (int)f->cfg.claim_timeout);
            flow_read_history(db, ids[i], "claim_lapsed", "system", d, now, NULL);
            json_decref(d);
            flow_log(f, 2, "read %" PRId64 ": claim lapsed after %u s without activity", ids[i],
                     f->cfg.claim_timeout);
            lapsed++;
        }
    }
    db_pool_release(f->pool, db);
    return rc < 0 ? rc : lapsed;
}

/* ---- SLA clocks --------------------------------------------------------------------------- */

static int sla_pass(struct flow *f, struct db *db, int64_t now, bool breach,
                    struct tr_error *err)
{
    const char *select =
        breach ? "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE state < 4 AND breached_at IS "
                 "NULL AND due_at <= $1 ORDER BY due_at LIMIT 100"
               : "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE state < 4 AND alerted_at IS NULL "
                 "AND due_at <= $1 ORDER BY due_at LIMIT 100";
    struct db_stmt *st;
    int rc = db_prepare(db, select, &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, breach ? now : now + (int64_t)f->cfg.sla_alert_lead * 1000);
    struct flow_read *rows = tr_calloc(100, sizeof(*rows));
    size_t n = 0;
    while (rows && n < 100 && (rc = db_step(st, err)) == 1)
        flow_read_from_row(st, &rows[n++]);
    db_reset(st);
    int raised = 0;
    for (size_t i = 0; rc >= 0 && i < n; i++) {
        struct flow_read *r = &rows[i];
        /* Exactly once, whichever node gets there first; the mark, the outbox row and the
         * history in one transaction, so that a node dying in between loses no alert. */
        if ((rc = db_begin(db, err)))
            break;
        rc = db_prepare(db, breach ? "UPDATE flow_reads SET breached_at = $2 WHERE id = $1 AND "
                                     "breached_at IS NULL"
                                   : "UPDATE flow_reads SET alerted_at = $2 WHERE id = $1 AND "
                                     "alerted_at IS NULL",
                        &st, err);
        if (rc) {
            db_rollback(db);
            break;
        }
        db_bind_int64(st, 1, r->id);
        db_bind_int64(st, 2, now);
        bool mine = db_step(st, NULL) >= 0 && db_changes(st) == 1;
        db_reset(st);
        if (!mine) {
            db_rollback(db);
            continue;
        }
        const char *kind = breach ? "sla.breach" : "sla.warning";
        json_t *ev = json_pack("{s:s,s:I,s:s,s:s,s:s,s:o,s:I,s:s?}", "event", kind, "read",
                               (json_int_t)r->id, "site", r->site, "priority",
                               flow_priority_names[r->priority], "state",
                               flow_state_names[r->state], "due_at", flow_iso_json(r->due_at),
                               "seconds_left", (json_int_t)((r->due_at - now) / 1000),
                               "assignee", r->assignee[0] ? r->assignee : NULL);
        int arc = flow_outbox_add(f, db, kind, ev, now, NULL);
        if (arc == 0)
            arc = flow_read_history(db, r->id, breach ? "sla_breached" : "sla_warning",
                                    "system", ev, now, NULL);
        json_decref(ev);
        if (arc == 0)
            arc = db_commit(db, NULL);
        else
            db_rollback(db);
        if (arc)
            continue; /* the next pass tries again */
        flow_log(f, 1, "read %" PRId64 " (%s, site %s, %s): %s", r->id,
                 flow_priority_names[r->priority], r->site, flow_state_names[r->state],
                 breach ? "SLA breached" : "SLA due soon");
        raised++;
    }
    tr_free(rows);
    return rc < 0 ? rc : raised;
}

int flow_sla_alerts(struct flow *f, int64_t now, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    int a = sla_pass(f, db, now, false, err);
    int b = a < 0 ? 0 : sla_pass(f, db, now, true, err);
    db_pool_release(f->pool, db);
    return a < 0 ? a : b < 0 ? b : a + b;
}

/* ---- what a reader may see ---------------------------------------------------------------- */

int flow_reader_patients(struct flow *f, const char *reader_id, struct arc_patient_ref **refs,
                         size_t *count, struct tr_error *err)
{
    *refs = NULL;
    *count = 0;
    struct flow_catalog *c = flow_catalog_get(f, err);
    if (!c)
        return err && err->code ? err->code : TR_EIO;
    const struct flow_reader *reader = flow_catalog_reader(c, reader_id);
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc) {
        flow_catalog_put(c);
        return rc;
    }
    enum { MAX = 1000 };
    struct flow_read *rows = tr_calloc(MAX, sizeof(*rows));
    size_t n = 0;
    struct db_stmt *st;
    if (!rows) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    } else if ((rc = db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE "
                                    "(assignee = $1 AND state IN (1, 2, 3, 4)) OR state = 0 "
                                    "ORDER BY due_at LIMIT 1000",
                                &st, err)) == 0) {
        db_bind_text(st, 1, reader_id);
        while (n < MAX && (rc = db_step(st, err)) == 1) {
            flow_read_from_row(st, &rows[n]);
            bool keep = rows[n].state != ST_POOL;
            if (!keep && reader) {
                const struct flow_site *site = flow_catalog_site(c, rows[n].site);
                keep = site && flow_judge(c, reader, site, &rows[n], NULL, flow_now_ms(), true,
                                          NULL, 0) == V_ELIGIBLE;
            }
            if (keep && rows[n].patient_id[0])
                n++;
        }
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    db_pool_release(f->pool, db);
    flow_catalog_put(c);
    if (rc == 0 && n) {
        /* One block: the array, then the strings. */
        size_t bytes = n * sizeof(struct arc_patient_ref);
        for (size_t i = 0; i < n; i++)
            bytes += strlen(rows[i].site) + strlen(rows[i].patient_id) + 2;
        char *block = tr_malloc(bytes);
        if (!block) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        } else {
            struct arc_patient_ref *out = (struct arc_patient_ref *)(void *)block;
            char *p = block + n * sizeof(*out);
            for (size_t i = 0; i < n; i++) {
                size_t a = strlen(rows[i].site) + 1, b = strlen(rows[i].patient_id) + 1;
                memcpy(p, rows[i].site, a);
                out[i].site = p;
                p += a;
                memcpy(p, rows[i].patient_id, b);
                out[i].patient_id = p;
                p += b;
            }
            *refs = out;
            *count = n;
        }
    }
    tr_free(rows);
    return rc;
}

/* ---- for the report service --------------------------------------------------------------- */

_Static_assert(FLOW_READ_ASSIGNED == ST_ASSIGNED && FLOW_READ_CLAIMED == ST_CLAIMED &&
                   FLOW_READ_PRELIMINARY == ST_PRELIMINARY && FLOW_READ_FINAL == ST_FINAL,
               "flow.h's read states are flow_int.h's");

const char *flow_read_state_name(int state)
{
    return state >= 0 && state < ST_COUNT ? flow_state_names[state] : "unknown";
}

const char *flow_priority_name(int priority)
{
    return priority >= 0 && priority < PRIO_COUNT ? flow_priority_names[priority] : "ROUTINE";
}

int flow_read_info(struct db *db, int64_t id, struct flow_read_info *out, struct tr_error *err)
{
    struct flow_read r;
    int rc = flow_read_load(db, id, &r, err);
    if (rc)
        return rc;
    memset(out, 0, sizeof(*out));
    out->id = r.id;
    snprintf(out->site, sizeof(out->site), "%s", r.site);
    snprintf(out->study_uid, sizeof(out->study_uid), "%s", r.study_uid);
    snprintf(out->patient_id, sizeof(out->patient_id), "%s", r.patient_id);
    snprintf(out->accession, sizeof(out->accession), "%s", r.accession);
    snprintf(out->modality, sizeof(out->modality), "%s", r.modality);
    snprintf(out->body_part, sizeof(out->body_part), "%s", r.body_part);
    snprintf(out->description, sizeof(out->description), "%s", r.description);
    out->priority = r.priority;
    out->state = r.state;
    snprintf(out->assignee, sizeof(out->assignee), "%s", r.assignee);
    out->received_at = r.received_at;
    out->preliminary_at = r.preliminary_at;
    out->final_at = r.final_at;
    return 0;
}

int flow_read_set_report_state(struct db *db, int64_t id, const char *reader, int state,
                               json_t *detail, int64_t now, struct tr_error *err)
{
    const char *sql;
    if (state == ST_PRELIMINARY)
        sql = "UPDATE flow_reads SET state = 3, preliminary_at = $3, last_activity_at = $3 "
              "WHERE id = $1 AND assignee = $2 AND state IN (1, 2)";
    else if (state == ST_FINAL)
        sql = "UPDATE flow_reads SET state = 4, final_at = $3, last_activity_at = $3 WHERE id = "
              "$1 AND assignee = $2 AND state IN (1, 2, 3)";
    else
        return tr_error_set(err, TR_EINVAL, "a report makes a read preliminary or final");
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, id);
    db_bind_text(st, 2, reader);
    db_bind_int64(st, 3, now);
    rc = db_step(st, err);
    bool done = rc >= 0 && db_changes(st) == 1;
    db_reset(st);
    if (rc < 0)
        return rc;
    if (!done)
        return tr_error_set(err, TR_EEXIST, "read %" PRId64 " is not open for a %s report by %s",
                            id, flow_state_names[state], reader);
    return flow_read_history(db, id, flow_state_names[state], reader, detail, now, err);
}

int flow_read_note(struct db *db, int64_t id, const char *kind, const char *actor,
                   json_t *detail, int64_t now, struct tr_error *err)
{
    return flow_read_history(db, id, kind, actor, detail, now, err);
}

json_t *flow_document(struct db *db, const char *kind, const char *id)
{
    const char *sql = strcmp(kind, "site") == 0     ? "SELECT doc FROM flow_sites WHERE id = $1"
                      : strcmp(kind, "reader") == 0 ? "SELECT doc FROM flow_readers WHERE id = $1"
                                                    : NULL;
    struct db_stmt *st;
    if (!sql || !id || db_prepare(db, sql, &st, NULL) < 0)
        return NULL;
    db_bind_text(st, 1, id);
    json_t *doc = NULL;
    if (db_step(st, NULL) == 1)
        doc = json_loads(db_column_text(st, 0), 0, NULL);
    db_reset(st);
    return doc;
}

/* ---- orders arriving after the images ----------------------------------------------------- */

void flow_on_order(void *ctx, const struct order *o)
{
    struct flow *f = ctx;
    if (!o->accession[0])
        return;
    struct db *db;
    if (db_pool_acquire(f->pool, &db, NULL) < 0)
        return;
    int64_t now = flow_now_ms();
    struct db_stmt *st;
    struct flow_read r;
    bool found = false;
    if (db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE site = $1 AND "
                       "accession = $2 AND state < 3",
                   &st, NULL) == 0) {
        db_bind_text(st, 1, o->site);
        db_bind_text(st, 2, o->accession);
        found = db_step(st, NULL) == 1;
        if (found)
            flow_read_from_row(st, &r);
        db_reset(st);
    }
    if (found && strcmp(o->status, "cancelled") == 0) {
        /* The order was cancelled: nothing to report (a reader at work is told by the
         * history; an administrator can still reassign). */
        if (db_prepare(db, "UPDATE flow_reads SET state = 5 WHERE id = $1 AND state < 3", &st,
                       NULL) == 0) {
            db_bind_int64(st, 1, r.id);
            bool done = db_step(st, NULL) >= 0 && db_changes(st) == 1;
            db_reset(st);
            if (done) {
                json_t *d = json_pack("{s:s}", "order_control", o->order_control);
                flow_read_history(db, r.id, "cancelled", "order", d, now, NULL);
                json_decref(d);
            }
        }
    } else if (found && o->priority >= 0 && o->priority < r.priority) {
        struct flow_catalog *c = flow_catalog_get(f, NULL);
        const struct flow_contract *k = c ? flow_catalog_contract(c, r.site) : NULL;
        unsigned minutes = k ? k->sla[o->priority] : f->cfg.default_sla[o->priority];
        flow_catalog_put(c);
        int64_t due = r.received_at + (int64_t)minutes * 60000;
        char source[64];
        snprintf(source, sizeof(source), "order (%s)", o->priority_code);
        if (db_prepare(db, "UPDATE flow_reads SET priority = $2, priority_source = $3, due_at = "
                           "CASE WHEN due_at > $4 THEN $4 ELSE due_at END, alerted_at = NULL "
                           "WHERE id = $1 AND priority > $2",
                       &st, NULL) == 0) {
            db_bind_int64(st, 1, r.id);
            db_bind_int64(st, 2, o->priority);
            db_bind_text(st, 3, source);
            db_bind_int64(st, 4, due);
            bool done = db_step(st, NULL) >= 0 && db_changes(st) == 1;
            db_reset(st);
            if (done) {
                json_t *d = json_pack("{s:s,s:s}", "priority", flow_priority_names[o->priority],
                                      "because", source);
                flow_read_history(db, r.id, "priority_raised", "order", d, now, NULL);
                json_decref(d);
                flow_log(f, 2, "read %" PRId64 ": priority raised to %s by an order", r.id,
                         flow_priority_names[o->priority]);
            }
        }
    }
    db_pool_release(f->pool, db);
}
