/*
 * reports.c - the report service: its schema, the background thread (deliveries, critical
 * result escalations), and helpers the other files share (time formats, base64).
 */
#include "common.h"
#include "json_util.h"
#include "reports_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* Schema (component "reports"); see db.h for the dialect words. Signed versions are never
 * updated: every UPDATE of rep_versions is guarded by "signed_at IS NULL". */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE rep_reads ("
    "  read_id {BIGINT} PRIMARY KEY,"
    "  site TEXT NOT NULL,"
    "  sr_series TEXT NOT NULL,"
    "  pdf_series TEXT NOT NULL,"
    "  created_at {BIGINT} NOT NULL);"
    "CREATE TABLE rep_versions ("
    "  id {SERIAL},"
    "  read_id {BIGINT} NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  kind TEXT NOT NULL,"
    "  template TEXT NOT NULL DEFAULT '',"
    "  sections TEXT NOT NULL,"
    "  critical_category INTEGER NOT NULL DEFAULT 0,"
    "  critical_finding TEXT NOT NULL DEFAULT '',"
    "  author TEXT NOT NULL,"
    "  created_at {BIGINT} NOT NULL,"
    "  updated_at {BIGINT} NOT NULL,"
    "  signed_by TEXT,"
    "  signer_name TEXT,"
    "  signed_at {BIGINT},"
    "  sr_uid TEXT,"
    "  pdf_uid TEXT,"
    "  UNIQUE (read_id, seq));"
    "CREATE UNIQUE INDEX rep_versions_one_draft ON rep_versions (read_id) WHERE signed_at IS "
    "NULL;"
    "CREATE TABLE rep_critical ("
    "  id {SERIAL},"
    "  read_id {BIGINT} NOT NULL,"
    "  site TEXT NOT NULL,"
    "  category INTEGER NOT NULL,"
    "  finding TEXT NOT NULL,"
    "  created_by TEXT NOT NULL,"
    "  created_at {BIGINT} NOT NULL,"
    "  due_at {BIGINT} NOT NULL,"
    "  state TEXT NOT NULL DEFAULT 'open',"
    "  ack_by TEXT,"
    "  ack_method TEXT,"
    "  ack_user TEXT,"
    "  ack_at {BIGINT},"
    "  ack_note TEXT,"
    "  escalations INTEGER NOT NULL DEFAULT 0,"
    "  escalated_at {BIGINT},"
    "  next_escalation_at {BIGINT} NOT NULL);"
    "CREATE INDEX rep_critical_due ON rep_critical (state, next_escalation_at);"
    "CREATE INDEX rep_critical_read ON rep_critical (read_id);"
    "CREATE TABLE rep_outbox ("
    "  id {SERIAL},"
    "  version_id {BIGINT} NOT NULL,"
    "  read_id {BIGINT} NOT NULL,"
    "  target TEXT NOT NULL,"
    "  destination TEXT NOT NULL DEFAULT '',"
    "  state TEXT NOT NULL DEFAULT 'pending',"
    "  attempts INTEGER NOT NULL DEFAULT 0,"
    "  created_at {BIGINT} NOT NULL,"
    "  next_at {BIGINT} NOT NULL,"
    "  delivered_at {BIGINT},"
    "  last_error TEXT,"
    "  last_ack TEXT,"
    "  UNIQUE (version_id, target));"
    "CREATE INDEX rep_outbox_due ON rep_outbox (state, next_at);"
    "CREATE INDEX rep_outbox_read ON rep_outbox (read_id)",
};

void rep_config_init(struct rep_config *c)
{
    memset(c, 0, sizeof(*c));
    c->organization = "telerad";
    c->ae_title = "TELERAD";
    c->critical_ack[0] = 900;
    c->critical_ack[1] = 4 * 3600;
    c->critical_ack[2] = 3 * 86400;
    c->retry_initial = 5;
    c->retry_max = 3600;
    c->max_attempts = 50;
    c->ack_timeout = 30;
    c->tick_ms = 1000;
}

void rep_log(struct rep *r, int level, const char *fmt, ...)
{
    if (!r->cfg.log)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r->cfg.log(r->cfg.log_ctx, level, msg);
}

int64_t rep_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void utc(int64_t ms, struct tm *tm)
{
    time_t t = (time_t)(ms / 1000);
    gmtime_r(&t, tm);
}

void rep_iso_time(int64_t ms, char out[32])
{
    struct tm tm;
    utc(ms, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

json_t *rep_iso_json(int64_t ms)
{
    if (!ms)
        return json_null();
    char t[32];
    rep_iso_time(ms, t);
    return json_string(t);
}

void rep_hl7_time(int64_t ms, char out[32])
{
    struct tm tm;
    utc(ms, &tm);
    strftime(out, 32, "%Y%m%d%H%M%S+0000", &tm);
}

void rep_dicom_date(int64_t ms, char out[9])
{
    struct tm tm;
    utc(ms, &tm);
    strftime(out, 9, "%Y%m%d", &tm);
}

void rep_dicom_time(int64_t ms, char out[16])
{
    struct tm tm;
    utc(ms, &tm);
    strftime(out, 16, "%H%M%S", &tm);
}

int rep_base64(const void *data, size_t len, struct tr_buf *out)
{
    struct tr_base64 st;
    tr_base64_init(&st);
    int rc = tr_base64_feed(&st, out, data, len);
    return rc ? rc : tr_base64_finish(&st, out);
}

/* ---- the background thread ---------------------------------------------------------------- */

int rep_tick(struct rep *r, int64_t now, struct tr_error *err)
{
    int a = rep_critical_escalate(r, now ? now : rep_now_ms(), err);
    if (a < 0)
        return a;
    int b = rep_outbox_deliver(r, now ? now : rep_now_ms(), err);
    if (b < 0)
        return b;
    return a + b;
}

void rep_wake(struct rep *r)
{
    pthread_mutex_lock(&r->lock);
    pthread_cond_broadcast(&r->wake);
    pthread_mutex_unlock(&r->lock);
}

static void *worker(void *arg)
{
    struct rep *r = arg;
    pthread_mutex_lock(&r->lock);
    while (!r->stopping) {
        pthread_mutex_unlock(&r->lock);
        struct tr_error err = TR_ERROR_INIT;
        int done = rep_tick(r, 0, &err);
        if (done < 0)
            rep_log(r, 1, "reports: %s", err.message);
        pthread_mutex_lock(&r->lock);
        if (r->stopping)
            break;
        if (done > 0)
            continue; /* more may be due at once */
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += r->cfg.tick_ms / 1000;
        until.tv_nsec += (long)(r->cfg.tick_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->wake, &r->lock, &until);
    }
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

int rep_open(const struct rep_config *cfg, struct rep **out, struct tr_error *err)
{
    if (!cfg->archive || !cfg->flow)
        return tr_error_set(err, TR_EINVAL,
                            "the report service needs the archive and the "
                            "workflow");
    struct rep *r = tr_calloc(1, sizeof(*r));
    if (!r)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    r->cfg = *cfg;
    for (int i = 0; i < 3; i++) {
        if (!r->cfg.critical_ack[i])
            r->cfg.critical_ack[i] = 1;
    }
    if (!r->cfg.retry_initial)
        r->cfg.retry_initial = 1;
    if (r->cfg.retry_max < r->cfg.retry_initial)
        r->cfg.retry_max = r->cfg.retry_initial;
    if (!r->cfg.ack_timeout)
        r->cfg.ack_timeout = 30;
    if (!r->cfg.organization)
        r->cfg.organization = "telerad";
    if (!r->cfg.ae_title)
        r->cfg.ae_title = "TELERAD";
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->wake, NULL);
    const char *url = cfg->db_url ? cfg->db_url : arc_index_url(cfg->archive);
    int rc = db_pool_open(url, &r->pool, err);
    struct db *db = NULL;
    if (rc == 0)
        rc = db_pool_acquire(r->pool, &db, err);
    if (rc == 0) {
        rc = db_migrate(db, "reports", migrations, TR_ARRAY_SIZE(migrations), err);
        db_pool_release(r->pool, db);
    }
    if (rc == 0 && cfg->tick_ms) {
        if (pthread_create(&r->thread, NULL, worker, r) != 0)
            rc = tr_error_set(err, TR_ENOMEM, "cannot start the report delivery thread");
        else
            r->thread_started = true;
    }
    if (rc) {
        rep_close(r);
        return rc;
    }
    *out = r;
    return 0;
}

void rep_close(struct rep *r)
{
    if (!r)
        return;
    if (r->thread_started) {
        pthread_mutex_lock(&r->lock);
        r->stopping = true;
        pthread_cond_broadcast(&r->wake);
        pthread_mutex_unlock(&r->lock);
        pthread_join(r->thread, NULL);
    }
    db_pool_close(r->pool);
    rep_pdf_cleanup(); /* the HTTP server and the delivery thread, its users, have stopped */
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->wake);
    tr_free(r);
}
