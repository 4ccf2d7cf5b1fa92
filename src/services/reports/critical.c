/*
 * critical.c - critical results, closed loop (ACR Practice Parameter for Communication of
 * Diagnostic Imaging Findings): a critical finding opens a communication record; a user of the
 * read's site acknowledges it, saying who was told, how and when; a record not acknowledged
 * within its category's time (1: minutes, 2: hours, 3: days; configured) is escalated: an
 * event to the webhook, a warning in the log and an entry in the read's history, then again
 * after each further period, three times at most. Every step is in the read's history.
 *
 * Escalations are taken with a guarded UPDATE (the escalation count the pass saw), so that two
 * nodes never escalate the same record twice for the same period.
 */
#include "common.h"
#include "reports_int.h"

#include <inttypes.h>
#include <stdio.h>

#define MAX_ESCALATIONS 3

const char *const rep_ack_methods[] = {"phone",      "in_person", "secure_message", "page",
                                       "electronic", "fax",       "other",          NULL};

static unsigned period_of(const struct rep *r, int category)
{
    return r->cfg.critical_ack[category >= 1 && category <= 3 ? category - 1 : 0];
}

int rep_critical_open(struct rep *r, struct db *db, int64_t read_id, const char *site, int category,
                      const char *finding, const char *actor, int64_t now, int64_t *id,
                      struct tr_error *err)
{
    int64_t due = now + (int64_t)period_of(r, category) * 1000;
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "INSERT INTO rep_critical (read_id, site, category, finding, "
                        "created_by, created_at, due_at, next_escalation_at) VALUES ($1, $2, "
                        "$3, $4, $5, $6, $7, $7) RETURNING id",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, read_id);
    db_bind_text(st, 2, site);
    db_bind_int64(st, 3, category);
    db_bind_text(st, 4, finding ? finding : "");
    db_bind_text(st, 5, actor);
    db_bind_int64(st, 6, now);
    db_bind_int64(st, 7, due);
    rc = db_step(st, err);
    *id = rc == 1 ? db_column_int64(st, 0) : 0;
    db_reset(st);
    if (rc < 0)
        return rc;
    json_t *ev = json_pack("{s:s,s:I,s:I,s:s,s:i,s:s,s:s,s:o,s:o}", "event", "critical.result",
                           "critical", (json_int_t)*id, "read", (json_int_t)read_id, "site", site,
                           "category", category, "finding", finding ? finding : "", "by", actor,
                           "opened_at", rep_iso_json(now), "acknowledge_by", rep_iso_json(due));
    rc = flow_read_note(db, read_id, "critical_result", actor, ev, now, err);
    if (rc == 0)
        rc = flow_event(r->cfg.flow, db, "critical.result", ev, now, err);
    json_decref(ev);
    if (rc == 0)
        rep_log(r, 1,
                "read %" PRId64 ": critical result %" PRId64 " (ACR category %d) for site %s "
                "opened by %s; to be acknowledged within %u s",
                read_id, *id, category, site, actor, period_of(r, category));
    return rc;
}

json_t *rep_critical_json(struct db_stmt *st)
{
    json_t *j = json_pack(
        "{s:I,s:I,s:s,s:I,s:s,s:s,s:o,s:o,s:s,s:I,s:o}", "id", (json_int_t)db_column_int64(st, 0),
        "read", (json_int_t)db_column_int64(st, 1), "site", db_column_text(st, 2), "category",
        (json_int_t)db_column_int64(st, 3), "finding", db_column_text(st, 4), "opened_by",
        db_column_text(st, 5), "opened_at", rep_iso_json(db_column_int64(st, 6)), "acknowledge_by",
        rep_iso_json(db_column_int64(st, 7)), "state", db_column_text(st, 8), "escalations",
        (json_int_t)db_column_int64(st, 14), "escalated_at",
        db_column_is_null(st, 15) ? json_null() : rep_iso_json(db_column_int64(st, 15)));
    if (!db_column_is_null(st, 12)) {
        json_t *ack =
            json_pack("{s:s,s:s,s:s,s:o,s:s,s:b}", "by", db_column_text(st, 9), "method",
                      db_column_text(st, 10), "user", db_column_text(st, 11), "at",
                      rep_iso_json(db_column_int64(st, 12)), "note", db_column_text(st, 13), "late",
                      db_column_int64(st, 12) > db_column_int64(st, 7));
        json_object_set_new(j, "acknowledgement", ack);
    } else {
        json_object_set_new(j, "acknowledgement", json_null());
    }
    return j;
}

int rep_critical_ack(struct rep *r, struct db *db, int64_t id, const char *site_scope,
                     const char *user, json_t *body, json_t **out, struct rep_invalid *bad,
                     struct tr_error *err)
{
    const char *by = json_string_value(json_object_get(body, "by"));
    const char *method = json_string_value(json_object_get(body, "method"));
    json_t *note_j = json_object_get(body, "note");
    const char *note = json_string_value(note_j);
    if (!by || !*by || strlen(by) > 200) {
        snprintf(bad->field, sizeof(bad->field), "by");
        snprintf(bad->why, sizeof(bad->why),
                 "who at the site received the result (1-200 "
                 "characters)");
        return TR_EINVAL;
    }
    bool known = false;
    for (const char *const *m = rep_ack_methods; *m && method; m++)
        known = known || strcmp(*m, method) == 0;
    if (!known) {
        snprintf(bad->field, sizeof(bad->field), "method");
        snprintf(bad->why, sizeof(bad->why),
                 "how: phone, in_person, secure_message, page, "
                 "electronic, fax or other");
        return TR_EINVAL;
    }
    if ((note_j && !note) || (note && strlen(note) > 2000)) {
        snprintf(bad->field, sizeof(bad->field), "note");
        snprintf(bad->why, sizeof(bad->why), "a note of up to 2000 characters");
        return TR_EINVAL;
    }
    int64_t now = rep_now_ms();
    int rc = db_begin(db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    char site[65] = "", state[32] = "";
    int64_t read_id = 0, due = 0;
    if ((rc = db_prepare(db, "SELECT site, state, read_id, due_at FROM rep_critical WHERE id = $1",
                         &st, err)))
        goto fail;
    db_bind_int64(st, 1, id);
    if ((rc = db_step(st, err)) == 1) {
        snprintf(site, sizeof(site), "%s", db_column_text(st, 0));
        snprintf(state, sizeof(state), "%s", db_column_text(st, 1));
        read_id = db_column_int64(st, 2);
        due = db_column_int64(st, 3);
    }
    db_reset(st);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        rc = TR_ENOTFOUND;
        goto fail;
    }
    if (site_scope && strcmp(site_scope, site) != 0) {
        snprintf(bad->why, sizeof(bad->why), "only a user of site %s acknowledges this result",
                 site);
        rc = TR_EDENIED;
        goto fail;
    }
    if ((rc = db_prepare(db,
                         "UPDATE rep_critical SET state = 'acknowledged', ack_by = $2, "
                         "ack_method = $3, ack_user = $4, ack_at = $5, ack_note = $6 WHERE "
                         "id = $1 AND state = 'open'",
                         &st, err)))
        goto fail;
    db_bind_int64(st, 1, id);
    db_bind_text(st, 2, by);
    db_bind_text(st, 3, method);
    db_bind_text(st, 4, user);
    db_bind_int64(st, 5, now);
    db_bind_text(st, 6, note ? note : "");
    rc = db_step(st, err);
    bool done = rc >= 0 && db_changes(st) == 1;
    db_reset(st);
    if (rc < 0)
        goto fail;
    if (!done) {
        snprintf(bad->why, sizeof(bad->why), "the result is %s already", state);
        rc = TR_EEXIST;
        goto fail;
    }
    json_t *d = json_pack("{s:I,s:s,s:s,s:s,s:b}", "critical", (json_int_t)id, "by", by, "method",
                          method, "note", note ? note : "", "late", now > due);
    rc = flow_read_note(db, read_id, "critical_acknowledged", user, d, now, err);
    json_decref(d);
    if (rc)
        goto fail;
    if ((rc = db_commit(db, err)))
        return rc;
    rep_log(r, 2, "critical result %" PRId64 " (read %" PRId64 ") acknowledged by %s for %s (%s)",
            id, read_id, user, by, method);
    return rep_critical_get(db, id, out, err);
fail:
    db_rollback(db);
    return rc;
}

int rep_critical_get(struct db *db, int64_t id, json_t **out, struct tr_error *err)
{
    struct db_stmt *st;
    int rc =
        db_prepare(db, "SELECT " REP_CRITICAL_COLUMNS " FROM rep_critical WHERE id = $1", &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, id);
    rc = db_step(st, err);
    if (rc == 1)
        *out = rep_critical_json(st);
    db_reset(st);
    return rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
}

int rep_critical_escalate(struct rep *r, int64_t now, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(r->pool, &db, err);
    if (rc)
        return rc;
    enum { BATCH = 50 };
    struct {
        int64_t id, read_id, created_at, due_at, next_at;
        int category, escalations;
        char site[65];
        char *finding;
    } due[BATCH];
    size_t n = 0;
    struct db_stmt *st;
    rc = db_prepare(db,
                    "SELECT id, read_id, site, category, finding, created_at, due_at, "
                    "escalations, next_escalation_at FROM rep_critical WHERE state = 'open' "
                    "AND next_escalation_at <= $1 AND escalations < $2 ORDER BY "
                    "next_escalation_at LIMIT 50",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, now);
        db_bind_int64(st, 2, MAX_ESCALATIONS);
        while (n < BATCH && (rc = db_step(st, err)) == 1) {
            due[n].id = db_column_int64(st, 0);
            due[n].read_id = db_column_int64(st, 1);
            snprintf(due[n].site, sizeof(due[n].site), "%s", db_column_text(st, 2));
            due[n].category = (int)db_column_int64(st, 3);
            due[n].finding = tr_strdup(db_column_text(st, 4));
            due[n].created_at = db_column_int64(st, 5);
            due[n].due_at = db_column_int64(st, 6);
            due[n].escalations = (int)db_column_int64(st, 7);
            due[n].next_at = db_column_int64(st, 8);
            n++;
        }
        db_reset(st);
    }
    int escalated = 0;
    for (size_t i = 0; i < n; i++) {
        if (rc < 0 || (rc = db_begin(db, err)) < 0) {
            tr_free(due[i].finding);
            continue;
        }
        int level = due[i].escalations + 1;
        int64_t next = now + (int64_t)period_of(r, due[i].category) * 1000;
        rc = db_prepare(db,
                        "UPDATE rep_critical SET escalations = $2, escalated_at = $3, "
                        "next_escalation_at = $4 WHERE id = $1 AND state = 'open' AND "
                        "escalations = $5",
                        &st, err);
        bool mine = false;
        if (rc == 0) {
            db_bind_int64(st, 1, due[i].id);
            db_bind_int64(st, 2, level);
            db_bind_int64(st, 3, now);
            db_bind_int64(st, 4, next);
            db_bind_int64(st, 5, due[i].escalations);
            rc = db_step(st, err);
            mine = rc >= 0 && db_changes(st) == 1;
            db_reset(st);
        }
        json_t *ev = NULL;
        if (mine) {
            ev = json_pack("{s:s,s:I,s:I,s:s,s:i,s:s,s:i,s:o,s:o,s:I}", "event",
                           "critical.escalation", "critical", (json_int_t)due[i].id, "read",
                           (json_int_t)due[i].read_id, "site", due[i].site, "category",
                           due[i].category, "finding", due[i].finding ? due[i].finding : "",
                           "escalation", level, "opened_at", rep_iso_json(due[i].created_at),
                           "acknowledge_by", rep_iso_json(due[i].due_at), "overdue_seconds",
                           (json_int_t)((now - due[i].due_at) / 1000));
            rc = flow_event(r->cfg.flow, db, "critical.escalation", ev, now, err);
            if (rc == 0)
                rc = flow_read_note(db, due[i].read_id, "critical_escalated", "system", ev, now,
                                    err);
        }
        if (rc < 0 || !mine)
            db_rollback(db);
        else if ((rc = db_commit(db, err)) == 0) {
            escalated++;
            rep_log(r, 1,
                    "critical result %" PRId64 " (read %" PRId64 ", site %s, ACR category %d)"
                    " not acknowledged %" PRId64 " s after its time: escalation %d",
                    due[i].id, due[i].read_id, due[i].site, due[i].category,
                    (now - due[i].due_at) / 1000, level);
        }
        json_decref(ev);
        tr_free(due[i].finding);
    }
    db_pool_release(r->pool, db);
    return rc < 0 ? rc : escalated;
}

int rep_critical_flag(struct rep *r, struct db *db, int64_t read_id, const char *actor,
                      json_t *body, json_t **out, struct rep_invalid *bad, struct tr_error *err)
{
    json_t *cat = json_object_get(body, "category");
    const char *finding = json_string_value(json_object_get(body, "finding"));
    if (!json_is_integer(cat) || json_integer_value(cat) < 1 || json_integer_value(cat) > 3) {
        snprintf(bad->field, sizeof(bad->field), "category");
        snprintf(bad->why, sizeof(bad->why),
                 "the ACR category: 1 (minutes), 2 (hours) or 3 "
                 "(days)");
        return TR_EINVAL;
    }
    if (!finding || !*finding || strlen(finding) > 4096) {
        snprintf(bad->field, sizeof(bad->field), "finding");
        snprintf(bad->why, sizeof(bad->why), "the critical finding in words (1-4096 characters)");
        return TR_EINVAL;
    }
    int category = (int)json_integer_value(cat);
    int64_t now = rep_now_ms();
    int rc = db_begin(db, err);
    if (rc)
        return rc;
    struct flow_read_info info;
    if ((rc = flow_read_info(db, read_id, &info, err)))
        goto fail;
    if (info.state == 5) {
        snprintf(bad->why, sizeof(bad->why), "the read is cancelled");
        rc = TR_EEXIST;
        goto fail;
    }
    int64_t id;
    if ((rc =
             rep_critical_open(r, db, read_id, info.site, category, finding, actor, now, &id, err)))
        goto fail;
    /* The draft carries the flag too, so that the signed report says it. */
    struct db_stmt *st;
    if ((rc = db_prepare(db,
                         "UPDATE rep_versions SET critical_category = $2, critical_finding = "
                         "$3, updated_at = $4 WHERE read_id = $1 AND signed_at IS NULL",
                         &st, err)))
        goto fail;
    db_bind_int64(st, 1, read_id);
    db_bind_int64(st, 2, category);
    db_bind_text(st, 3, finding);
    db_bind_int64(st, 4, now);
    rc = db_step(st, err);
    db_reset(st);
    if (rc < 0)
        goto fail;
    if ((rc = db_commit(db, err)))
        return rc;
    return rep_critical_get(db, id, out, err);
fail:
    db_rollback(db);
    return rc;
}
