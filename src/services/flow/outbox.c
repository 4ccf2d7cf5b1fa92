/*
 * outbox.c - events for the outside world (SLA warnings and breaches, unassignable reads),
 * kept in the database until delivered: an event survives a restart and is delivered once,
 * with retries and backoff while the receiver is down.
 *
 * Delivery: an HTTP POST of the JSON to the configured webhook (libcurl), 2xx = delivered.
 * Without a webhook the event is only logged and marked delivered.
 */
#include "common.h"
#include "flow_int.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdio.h>

int flow_outbox_add(struct flow *f, struct db *db, const char *kind, json_t *payload,
                    int64_t now, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "INSERT INTO flow_outbox (kind, target, payload, created_at, next_at) "
                            "VALUES ($1, $2, $3, $4, $4)",
                        &st, err);
    if (rc)
        return rc;
    char *text = json_dumps(payload, JSON_COMPACT);
    db_bind_text(st, 1, kind);
    db_bind_text(st, 2, f->cfg.webhook_url ? "webhook" : "log");
    db_bind_text(st, 3, text);
    db_bind_int64(st, 4, now);
    rc = db_step(st, err);
    db_reset(st);
    free(text);
    return rc < 0 ? rc : 0;
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    (void)ctx;
    return size * n;
}

/* POST the payload; 0 on a 2xx answer, else an error with the reason. */
static int post(const char *url, const char *payload, char *why, size_t why_size)
{
    CURL *c = curl_easy_init();
    if (!c) {
        snprintf(why, why_size, "curl_easy_init failed");
        return TR_ENOMEM;
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK) {
        snprintf(why, why_size, "%s", curl_easy_strerror(cc));
        return TR_EIO;
    }
    if (status < 200 || status > 299) {
        snprintf(why, why_size, "HTTP %ld", status);
        return TR_EIO;
    }
    return 0;
}

int flow_outbox_deliver(struct flow *f, int64_t now, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    struct {
        int64_t id;
        int attempts;
        char *payload;
        char target[16];
    } due[20];
    size_t n = 0;
    rc = db_prepare(db, "SELECT id, attempts, payload, target FROM flow_outbox WHERE "
                        "delivered_at IS NULL AND next_at <= $1 ORDER BY id LIMIT 20",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, now);
        while (n < 20 && (rc = db_step(st, err)) == 1) {
            due[n].id = db_column_int64(st, 0);
            due[n].attempts = (int)db_column_int64(st, 1);
            due[n].payload = tr_strdup(db_column_text(st, 2));
            snprintf(due[n].target, sizeof(due[n].target), "%s", db_column_text(st, 3));
            n++;
        }
        db_reset(st);
    }
    int delivered = 0;
    for (size_t i = 0; i < n; i++) {
        /* Take it (another node may be delivering the same row): push next_at forward first,
         * past the longest attempt (15 s) with a margin, counted from the clock now: earlier
         * rows of this batch may have taken long, and a lease counted from the batch's start
         * could already have run out. */
        int64_t t = flow_now_ms();
        t = t > now ? t : now;
        int64_t lease = t + 60000;
        if (db_prepare(db, "UPDATE flow_outbox SET next_at = $3 WHERE id = $1 AND delivered_at "
                           "IS NULL AND attempts = $2 AND next_at <= $4",
                       &st, NULL) < 0) {
            tr_free(due[i].payload);
            continue;
        }
        db_bind_int64(st, 1, due[i].id);
        db_bind_int64(st, 2, due[i].attempts);
        db_bind_int64(st, 3, lease);
        db_bind_int64(st, 4, t);
        bool mine = db_step(st, NULL) >= 0 && db_changes(st) == 1;
        db_reset(st);
        if (!mine || !due[i].payload) {
            tr_free(due[i].payload);
            continue;
        }
        char why[256] = "";
        int prc = 0;
        if (f->cfg.webhook_url && strcmp(due[i].target, "webhook") == 0)
            prc = post(f->cfg.webhook_url, due[i].payload, why, sizeof(why));
        if (prc == 0) {
            if (db_prepare(db, "UPDATE flow_outbox SET delivered_at = $2, attempts = attempts + 1 "
                               "WHERE id = $1",
                           &st, NULL) == 0) {
                db_bind_int64(st, 1, due[i].id);
                db_bind_int64(st, 2, now);
                db_step(st, NULL);
                db_reset(st);
            }
            delivered++;
        } else {
            /* Backoff: 5 s, 10 s, 20 s ... up to an hour. */
            int64_t wait = 5000LL << (due[i].attempts < 10 ? due[i].attempts : 10);
            if (wait > 3600000)
                wait = 3600000;
            if (db_prepare(db, "UPDATE flow_outbox SET attempts = attempts + 1, next_at = $2, "
                               "last_error = $3 WHERE id = $1",
                           &st, NULL) == 0) {
                db_bind_int64(st, 1, due[i].id);
                db_bind_int64(st, 2, now + wait);
                db_bind_text(st, 3, why);
                db_step(st, NULL);
                db_reset(st);
            }
            flow_log(f, 1, "webhook event %" PRId64 " not delivered (attempt %d): %s; next in %" PRId64
                     " s",
                     due[i].id, due[i].attempts + 1, why, wait / 1000);
        }
        tr_free(due[i].payload);
    }
    db_pool_release(f->pool, db);
    return rc < 0 ? rc : delivered;
}

int flow_event(struct flow *f, struct db *db, const char *kind, json_t *payload, int64_t now,
               struct tr_error *err)
{
    if (db)
        return flow_outbox_add(f, db, kind, payload, now, err);
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    rc = flow_outbox_add(f, db, kind, payload, now, err);
    db_pool_release(f->pool, db);
    return rc;
}
