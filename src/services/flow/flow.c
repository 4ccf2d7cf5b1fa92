/*
 * flow.c - the workflow service: schema, the catalog cache, the background thread.
 */
#include "common.h"
#include "flow_int.h"

#include <curl/curl.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* Schema (component "flow"); see db.h for the dialect words. Documents are JSON as accepted
 * by the API; the columns the router and worklist query are their own. */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE flow_sites (id TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at {BIGINT} NOT "
    "NULL);"
    "CREATE TABLE flow_site_aes (ae_title TEXT PRIMARY KEY, site TEXT NOT NULL REFERENCES "
    "flow_sites (id) ON DELETE CASCADE);"
    "CREATE TABLE flow_readers (id TEXT PRIMARY KEY, doc TEXT NOT NULL, updated_at {BIGINT} "
    "NOT NULL);"
    "CREATE TABLE flow_contracts (id TEXT PRIMARY KEY, site TEXT NOT NULL UNIQUE REFERENCES "
    "flow_sites (id) ON DELETE CASCADE, doc TEXT NOT NULL, updated_at {BIGINT} NOT NULL);"
    "CREATE TABLE flow_priority_rules (id {SERIAL}, doc TEXT NOT NULL);"
    "CREATE TABLE flow_reads ("
    "  id {SERIAL},"
    "  site TEXT NOT NULL,"
    "  study_uid TEXT NOT NULL,"
    "  patient_id TEXT NOT NULL DEFAULT '',"
    "  accession TEXT NOT NULL DEFAULT '',"
    "  modality TEXT NOT NULL DEFAULT '',"
    "  body_part TEXT NOT NULL DEFAULT '',"
    "  description TEXT NOT NULL DEFAULT '',"
    "  instances {BIGINT} NOT NULL DEFAULT 0,"
    "  priority INTEGER NOT NULL,"
    "  priority_source TEXT NOT NULL DEFAULT '',"
    "  subspecialty TEXT NOT NULL DEFAULT '',"
    "  mrvu {BIGINT} NOT NULL DEFAULT 1000,"
    "  state INTEGER NOT NULL DEFAULT 0,"
    "  assignee TEXT,"
    "  received_at {BIGINT} NOT NULL,"
    "  stable_at {BIGINT},"
    "  created_at {BIGINT} NOT NULL,"
    "  assigned_at {BIGINT},"
    "  claimed_at {BIGINT},"
    "  last_activity_at {BIGINT},"
    "  opened_at {BIGINT},"
    "  preliminary_at {BIGINT},"
    "  final_at {BIGINT},"
    "  due_at {BIGINT} NOT NULL,"
    "  alerted_at {BIGINT},"
    "  breached_at {BIGINT},"
    "  escalated_at {BIGINT},"
    "  routing TEXT,"
    "  UNIQUE (site, study_uid));"
    "CREATE INDEX flow_reads_state_due ON flow_reads (state, due_at);"
    "CREATE INDEX flow_reads_assignee ON flow_reads (assignee, state);"
    "CREATE INDEX flow_reads_patient ON flow_reads (site, patient_id);"
    "CREATE INDEX flow_reads_study ON flow_reads (study_uid);"
    "CREATE TABLE flow_read_events (id {SERIAL}, read_id {BIGINT} NOT NULL REFERENCES "
    "flow_reads (id) ON DELETE CASCADE, at {BIGINT} NOT NULL, kind TEXT NOT NULL, actor TEXT "
    "NOT NULL DEFAULT '', detail TEXT);"
    "CREATE INDEX flow_read_events_read ON flow_read_events (read_id);"
    "CREATE TABLE flow_ai_findings (id {SERIAL}, read_id {BIGINT} NOT NULL REFERENCES "
    "flow_reads (id) ON DELETE CASCADE, at {BIGINT} NOT NULL, source TEXT NOT NULL, doc TEXT "
    "NOT NULL);"
    "CREATE TABLE flow_outbox (id {SERIAL}, kind TEXT NOT NULL, target TEXT NOT NULL, payload "
    "TEXT NOT NULL, created_at {BIGINT} NOT NULL, next_at {BIGINT} NOT NULL, attempts INTEGER "
    "NOT NULL DEFAULT 0, delivered_at {BIGINT}, last_error TEXT);"
    "CREATE INDEX flow_outbox_due ON flow_outbox (delivered_at, next_at);"
    /* The priority rules every site gets until an administrator changes them. */
    "INSERT INTO flow_priority_rules (doc) VALUES ('{\"priority\":\"STAT\","
    "\"description_contains\":[\"STROKE\",\"CODE STROKE\",\"CTA HEAD\",\"TRAUMA\",\"PE\","
    "\"PULMONARY EMBOLISM\"]}')",
    /* 2: the router counts every reader's open reads each pass; with this index that is a
     * scan of the index alone (bench/route.py: 100,000 open reads). */
    "CREATE INDEX flow_reads_open ON flow_reads (assignee, state, mrvu);"
    "DROP INDEX flow_reads_assignee",
};

void flow_config_init(struct flow_config *c)
{
    memset(c, 0, sizeof(*c));
    c->claim_timeout = 1800;
    c->sla_alert_lead = 900;
    c->default_sla[PRIO_STAT] = 60;
    c->default_sla[PRIO_URGENT] = 240;
    c->default_sla[PRIO_ROUTINE] = 2880;
    c->tick_ms = 1000;
}

void flow_log(struct flow *f, int level, const char *fmt, ...)
{
    if (!f->cfg.log)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    f->cfg.log(f->cfg.log_ctx, level, msg);
}

int64_t flow_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- catalog cache ------------------------------------------------------------------------ */

#define CATALOG_TTL_MS 5000 /* other nodes' changes are seen within this */

/* The installed catalog, referenced, if it is fresh; else NULL. */
static struct flow_catalog *fresh_catalog(struct flow *f, int64_t now)
{
    pthread_rwlock_rdlock(&f->catalog_lock);
    struct flow_catalog *c = f->catalog;
    bool stale = !c || f->catalog_gen != atomic_load(&f->catalog_changes) ||
                 now - f->catalog_loaded_at > CATALOG_TTL_MS;
    if (!stale)
        atomic_fetch_add(&c->refs, 1);
    pthread_rwlock_unlock(&f->catalog_lock);
    return stale ? NULL : c;
}

/* What changes when any catalog document changes, on any node: counts and sums of the
 * update times (of the ids for the priority rules, which are only added and deleted). */
static int catalog_fingerprint(struct db *db, char *out, size_t size)
{
    struct db_stmt *st;
    out[0] = '\0';
    if (db_prepare(db, "SELECT (SELECT COUNT(*) FROM flow_sites), (SELECT COALESCE(SUM(updated_at), "
                       "0) FROM flow_sites), (SELECT COUNT(*) FROM flow_readers), (SELECT "
                       "COALESCE(SUM(updated_at), 0) FROM flow_readers), (SELECT COUNT(*) FROM "
                       "flow_contracts), (SELECT COALESCE(SUM(updated_at), 0) FROM "
                       "flow_contracts), (SELECT COUNT(*) FROM flow_priority_rules), (SELECT "
                       "COALESCE(SUM(id), 0) FROM flow_priority_rules)",
                   &st, NULL) < 0)
        return TR_EIO;
    int rc = db_step(st, NULL);
    size_t n = 0;
    for (int i = 0; rc == 1 && i < 8 && n < size; i++)
        n += (size_t)snprintf(out + n, size - n, "%s:", db_column_text(st, i));
    db_reset(st);
    return rc == 1 && n < size ? 0 : TR_EIO;
}

struct flow_catalog *flow_catalog_get(struct flow *f, struct tr_error *err)
{
    struct flow_catalog *c = fresh_catalog(f, flow_now_ms());
    if (c)
        return c;
    /* Reload, one thread at a time: two loads racing could otherwise install the older
     * snapshot last, hiding a change until the TTL runs out. */
    pthread_mutex_lock(&f->catalog_reload);
    int64_t now = flow_now_ms();
    if ((c = fresh_catalog(f, now))) { /* another thread reloaded meanwhile */
        pthread_mutex_unlock(&f->catalog_reload);
        return c;
    }
    struct db *db;
    if (db_pool_acquire(f->pool, &db, err) < 0) {
        pthread_mutex_unlock(&f->catalog_reload);
        return NULL;
    }
    /* Only the TTL ran out (nothing changed through this node): when the fingerprint is the
     * same, no other node changed anything either, and parsing every document again (half a
     * second of CPU at 1,000 sites and 500 readers) is not needed. The fingerprint is taken
     * before loading, so that a change during the load is seen next time. */
    char print[sizeof(f->catalog_fingerprint)];
    uint_fast64_t gen = atomic_load(&f->catalog_changes); /* before the load reads anything */
    bool dirty = gen != f->catalog_gen;
    bool printed = catalog_fingerprint(db, print, sizeof(print)) == 0;
    if (!dirty && printed && f->catalog && strcmp(print, f->catalog_fingerprint) == 0) {
        db_pool_release(f->pool, db);
        pthread_rwlock_wrlock(&f->catalog_lock);
        c = f->catalog;
        atomic_fetch_add(&c->refs, 1);
        f->catalog_loaded_at = now;
        f->catalog_gen = gen;
        pthread_rwlock_unlock(&f->catalog_lock);
        pthread_mutex_unlock(&f->catalog_reload);
        return c;
    }
    struct flow_catalog *fresh;
    int rc = flow_catalog_load(db, &fresh, err);
    db_pool_release(f->pool, db);
    snprintf(f->catalog_fingerprint, sizeof(f->catalog_fingerprint), "%s", printed ? print : "");
    if (rc < 0) {
        pthread_mutex_unlock(&f->catalog_reload); /* catalog_gen unchanged: still stale */
        return NULL;
    }
    atomic_fetch_add(&fresh->refs, 1); /* the caller's */
    pthread_rwlock_wrlock(&f->catalog_lock);
    struct flow_catalog *old = f->catalog;
    f->catalog = fresh;
    f->catalog_loaded_at = now;
    f->catalog_gen = gen;
    pthread_rwlock_unlock(&f->catalog_lock);
    pthread_mutex_unlock(&f->catalog_reload);
    flow_catalog_put(old);
    return fresh;
}

void flow_catalog_put(struct flow_catalog *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        flow_catalog_free(c);
}

void flow_catalog_changed(struct flow *f)
{
    atomic_fetch_add(&f->catalog_changes, 1);
}

bool flow_site_for_ae(void *ctx, const char *ae, char *site, size_t size)
{
    struct flow *f = ctx;
    struct flow_catalog *c = flow_catalog_get(f, NULL);
    if (!c)
        return false;
    bool found = false;
    for (size_t i = 0; i < c->nsites && !found; i++) {
        for (unsigned k = 0; k < c->sites[i].nae; k++) {
            if (strcmp(c->sites[i].ae_titles[k], ae) == 0) {
                snprintf(site, size, "%s", c->sites[i].id);
                found = true;
                break;
            }
        }
    }
    flow_catalog_put(c);
    return found;
}

bool flow_site_for_facility(void *ctx, const char *facility, const char *application,
                            char *site, size_t size)
{
    (void)application; /* sites do not list applications (yet) */
    struct flow *f = ctx;
    struct flow_catalog *c = flow_catalog_get(f, NULL);
    if (!c)
        return false;
    bool found = false;
    for (size_t i = 0; i < c->nsites && !found; i++) {
        found = strcmp(c->sites[i].id, facility) == 0;
        for (unsigned k = 0; k < c->sites[i].nae && !found; k++)
            found = strcmp(c->sites[i].ae_titles[k], facility) == 0;
        if (found)
            snprintf(site, size, "%s", c->sites[i].id);
    }
    flow_catalog_put(c);
    return found;
}

bool flow_pseudonymize_for(struct flow *f, const char *reader_id, const char *site_id)
{
    struct flow_catalog *c = flow_catalog_get(f, NULL);
    if (!c)
        return true; /* when in doubt, do not disclose */
    const struct flow_reader *reader = flow_catalog_reader(c, reader_id);
    bool yes = false;
    for (size_t i = 0; i < c->nsites && !yes; i++) {
        const struct flow_site *s = &c->sites[i];
        if (site_id && strcmp(s->id, site_id) != 0)
            continue;
        yes = s->pseudonymize_outside[0] &&
              (!reader || strcmp(reader->region, s->pseudonymize_outside) != 0);
    }
    flow_catalog_put(c);
    return yes;
}

/* ---- the background thread ---------------------------------------------------------------- */

/* The steps of a pass, each at `now`, or (now == 0, the background thread) at the clock when
 * the step starts: a step taking long (many new studies) must not make the next one decide
 * and stamp its decisions with a time that has passed. */
static int run_steps(struct flow *f, int64_t now, struct tr_error *err)
{
    static int (*const steps[])(struct flow *, int64_t, struct tr_error *) = {
        flow_ingest_events, flow_lapse_claims, flow_route_pending, flow_sla_alerts,
        flow_outbox_deliver};
    int total = 0;
    for (size_t i = 0; i < TR_ARRAY_SIZE(steps); i++) {
        int rc = steps[i](f, now ? now : flow_now_ms(), err);
        if (rc < 0)
            return rc;
        total += rc;
    }
    return total;
}

int flow_tick(struct flow *f, int64_t now, struct tr_error *err)
{
    return run_steps(f, now, err);
}

static void *worker(void *arg)
{
    struct flow *f = arg;
    pthread_mutex_lock(&f->lock);
    while (!f->stopping) {
        pthread_mutex_unlock(&f->lock);
        struct tr_error err = TR_ERROR_INIT;
        if (run_steps(f, 0, &err) < 0)
            flow_log(f, 1, "workflow: %s", err.message);
        pthread_mutex_lock(&f->lock);
        if (f->stopping)
            break;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += f->cfg.tick_ms / 1000;
        until.tv_nsec += (long)(f->cfg.tick_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&f->wake, &f->lock, &until);
    }
    pthread_mutex_unlock(&f->lock);
    return NULL;
}

int flow_open(const struct flow_config *cfg, struct flow **out, struct tr_error *err)
{
    struct flow *f = tr_calloc(1, sizeof(*f));
    if (!f)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    f->cfg = *cfg;
    f->route_cursor[0] = -1;
    curl_global_init(CURL_GLOBAL_DEFAULT); /* for webhooks; reference counted */
    pthread_rwlock_init(&f->catalog_lock, NULL);
    pthread_mutex_init(&f->catalog_reload, NULL);
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->wake, NULL);
    const char *url = cfg->db_url ? cfg->db_url : arc_index_url(cfg->archive);
    int rc = db_pool_open(url, &f->pool, err);
    struct db *db = NULL;
    if (rc == 0)
        rc = db_pool_acquire(f->pool, &db, err);
    if (rc == 0) {
        rc = db_migrate(db, "flow", migrations, TR_ARRAY_SIZE(migrations), err);
        db_pool_release(f->pool, db);
    }
    if (rc == 0) {
        struct flow_catalog *c = flow_catalog_get(f, err);
        if (!c)
            rc = err && err->code ? err->code : TR_EIO;
        flow_catalog_put(c);
    }
    if (rc == 0 && cfg->tick_ms) {
        if (pthread_create(&f->thread, NULL, worker, f) != 0)
            rc = tr_error_set(err, TR_ENOMEM, "cannot start the workflow thread");
        else
            f->thread_started = true;
    }
    if (rc) {
        flow_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

void flow_close(struct flow *f)
{
    if (!f)
        return;
    if (f->thread_started) {
        pthread_mutex_lock(&f->lock);
        f->stopping = true;
        pthread_cond_broadcast(&f->wake);
        pthread_mutex_unlock(&f->lock);
        pthread_join(f->thread, NULL);
    }
    flow_catalog_put(f->catalog);
    db_pool_close(f->pool);
    pthread_rwlock_destroy(&f->catalog_lock);
    pthread_mutex_destroy(&f->catalog_reload);
    pthread_mutex_destroy(&f->lock);
    pthread_cond_destroy(&f->wake);
    curl_global_cleanup();
    tr_free(f);
}
