/*
 * api.c - the report service's HTTP API (docs/api.md, "Reports and critical results" and
 * "FHIR"):
 *
 *   GET  /api/v1/templates[?modality=&description=&body_part=]   GET /api/v1/templates/{id}
 *   GET  /api/v1/reads/{id}/report          versions (site users: signed ones only)
 *   POST /api/v1/reads/{id}/report          save the draft
 *   POST /api/v1/reads/{id}/report/sign     {"kind": "preliminary" | "final"}
 *   POST /api/v1/reads/{id}/addenda         {"text": ..., "critical": {...}}
 *   POST /api/v1/reads/{id}/critical        {"category": 1-3, "finding": ...}
 *   GET  /api/v1/reads/{id}/deliveries
 *   GET  /api/v1/critical[?state=open|acknowledged&site=&read=]   GET /api/v1/critical/{id}
 *   POST /api/v1/critical/{id}/ack          {"by": ..., "method": ..., "note": ...}
 *   GET  /api/v1/reports/{version id}/pdf
 *   GET  /api/v1/deliveries[?state=&target=]   POST /api/v1/deliveries/{id}/retry
 *   GET  /fhir/metadata, /fhir/DiagnosticReport[/{id}[/_history/{version}]],
 *        /fhir/ImagingStudy/{id}, /fhir/ServiceRequest/{id}   (application/fhir+json)
 *
 * Who may do what: only the read's assignee writes and signs its report (an administrator
 * cannot sign in a reader's name); a site's users read their site's signed reports and
 * acknowledge its critical results (nobody else does: the record says who at the site was
 * told); readers see the reads assigned to them. Without authentication (tests, loopback
 * development) requests act as an administrator and as the read's assignee.
 *
 * Validation errors are 422 problem+json with "field"; conflicts with the report's state 409;
 * not the assignee / not the site 403.
 */
#include "common.h"
#include "principal.h"
#include "reports_int.h"

#include <inttypes.h>
#include <stdio.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void reply_json(struct web_request *w, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!text) {
        web_reply_problem(w, 500, "Internal Server Error", "cannot encode the answer");
        return;
    }
    web_reply(w, status, "application/json", text, strlen(text));
    free(text);
}

static void reply_problem_field(struct web_request *w, unsigned status, const char *title,
                                const struct rep_invalid *bad)
{
    json_t *j = json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title", title, "status",
                          (int)status, "detail", bad->why);
    if (j && bad->field[0])
        json_object_set_new(j, "field", json_string(bad->field));
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        web_reply_problem(w, status, title, "%s", bad->why);
        return;
    }
    web_reply(w, status, "application/problem+json", text, strlen(text));
    free(text);
}

/* The answer for an operation's result (see reports_int.h). */
static void reply_result(struct web_request *w, int rc, unsigned ok_status, json_t *out,
                         const struct rep_invalid *bad, const struct tr_error *err,
                         const char *not_found)
{
    if (rc == 0)
        reply_json(w, ok_status, out);
    else if (rc == TR_EINVAL)
        reply_problem_field(w, 422, "Unprocessable Content", bad);
    else if (rc == TR_EDENIED)
        reply_problem_field(w, 403, "Forbidden", bad);
    else if (rc == TR_EEXIST)
        reply_problem_field(w, 409, "Conflict", bad);
    else if (rc == TR_ENOTFOUND)
        web_reply_problem(w, 404, "Not Found", "%s", not_found);
    else
        web_reply_problem(w, 503, "Service Unavailable", "%s", err->message);
}

static json_t *body_json(struct web_request *w)
{
    size_t len;
    const char *body = web_body(w, &len);
    if (!body || !len) {
        web_reply_problem(w, 400, "Bad Request", "a JSON body is required");
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        web_reply_problem(w, 400, "Bad Request", "invalid JSON at line %d column %d: %s", e.line,
                          e.column, e.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        struct rep_invalid bad = {"", "the body is a JSON object"};
        reply_problem_field(w, 422, "Unprocessable Content", &bad);
        return NULL;
    }
    return j;
}

static bool parse_id(const char *s, int64_t *id)
{
    char *end;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || v <= 0)
        return false;
    *id = v;
    return true;
}

static const char *user_of(struct web_request *w)
{
    const struct web_principal *p = web_principal_of(w);
    return p ? p->user : "admin";
}

static bool acquire(struct rep *r, struct web_request *w, struct db **db)
{
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(r->pool, db, &err) == 0)
        return true;
    web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
    return false;
}

/* May this request see this read (its reports, results, FHIR resources)? */
static bool may_see(struct web_request *w, const struct flow_read_info *rd)
{
    const struct web_principal *p = web_principal_of(w);
    if (!p || p->role == WEB_ROLE_ADMIN)
        return true;
    if (p->role == WEB_ROLE_SITE)
        return strcmp(p->site, rd->site) == 0;
    if (p->role == WEB_ROLE_READER)
        return strcmp(p->reader, rd->assignee) == 0;
    return false;
}

/* Load the read of the path's first parameter, if visible (else answered 404). */
static bool load_read(struct rep *r, struct web_request *w, struct db **db,
                      struct flow_read_info *rd)
{
    int64_t id;
    if (!parse_id(web_param(w, 0), &id)) {
        web_reply_problem(w, 404, "Not Found", "no such read");
        return false;
    }
    if (!acquire(r, w, db))
        return false;
    struct tr_error err = TR_ERROR_INIT;
    int rc = flow_read_info(*db, id, rd, &err);
    if (rc == 0 && may_see(w, rd))
        return true;
    if (rc == 0)
        web_note_denied(w); /* out of scope: 404, audited as a denial */
    db_pool_release(r->pool, *db);
    if (rc && rc != TR_ENOTFOUND)
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
    else
        web_reply_problem(w, 404, "Not Found", "no such read");
    return false;
}

/* The reader a report request acts as: a reader account is itself; without authentication,
 * the "reader" named in the body or the read's assignee. Administrators and site users do not
 * write reports (403 answered; NULL). */
static const char *report_author(struct web_request *w, json_t *body,
                                 const struct flow_read_info *rd, char *buf, size_t size)
{
    const struct web_principal *p = web_principal_of(w);
    if (p && p->role == WEB_ROLE_READER) {
        snprintf(buf, size, "%s", p->reader);
        return buf;
    }
    if (!p) {
        const char *named = json_string_value(json_object_get(body, "reader"));
        snprintf(buf, size, "%s", named && *named ? named : rd->assignee);
        return buf;
    }
    struct rep_invalid bad = {"", ""};
    snprintf(bad.why, sizeof(bad.why), "%s",
             p->role == WEB_ROLE_ADMIN
                 ? "reports are written and signed by the read's assignee in person; an "
                   "administrator cannot sign for a reader"
                 : "only the read's assignee writes its report");
    reply_problem_field(w, 403, "Forbidden", &bad);
    return NULL;
}

/* ---- templates ---------------------------------------------------------------------------- */

static void templates_list(void *ctx, struct web_request *w)
{
    (void)ctx;
    const char *modality = web_query(w, "modality"), *desc = web_query(w, "description"),
               *part = web_query(w, "body_part");
    json_t *list = json_array();
    if (modality || desc || part) {
        json_array_append_new(
            list, rep_template_json(rep_template_choose(modality ? modality : "", desc ? desc : "",
                                                        part ? part : "")));
    } else {
        for (size_t i = 0; i < rep_template_count(); i++)
            json_array_append_new(list, rep_template_json(rep_template_at(i)));
    }
    reply_json(w, 200, list);
}

static void template_get(void *ctx, struct web_request *w)
{
    (void)ctx;
    const struct rep_template *t = rep_template_find(web_param(w, 0));
    if (!t) {
        web_reply_problem(w, 404, "Not Found", "no such template");
        return;
    }
    reply_json(w, 200, rep_template_json(t));
}

/* ---- reports ------------------------------------------------------------------------------ */

static void report_get(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    struct db *db;
    struct flow_read_info rd;
    if (!load_read(r, w, &db, &rd))
        return;
    const struct web_principal *p = web_principal_of(w);
    bool drafts = !p || p->role != WEB_ROLE_SITE;
    json_t *versions;
    struct tr_error err = TR_ERROR_INIT;
    int rc = rep_versions_json(r, db, rd.id, drafts, &versions, &err);
    db_pool_release(r->pool, db);
    if (rc < 0) {
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    const struct rep_template *t = rep_template_choose(rd.modality, rd.description, rd.body_part);
    json_t *current = json_null();
    size_t i;
    json_t *v;
    json_array_foreach(versions, i, v)
    {
        if (json_is_true(json_object_get(v, "signed")))
            current = v;
    }
    json_t *answer =
        json_pack("{s:I,s:s,s:s?,s:s,s:O,s:o}", "read", (json_int_t)rd.id, "state",
                  flow_read_state_name(rd.state), "assignee", *rd.assignee ? rd.assignee : NULL,
                  "suggested_template", t->id, "current", current, "versions", versions);
    reply_json(w, 200, answer);
}

/* The start of every authored write (a draft, a signature, an addendum): the read of the path,
 * the JSON body and who writes. Returns the author (in who) with *db acquired and *body owned
 * by the caller; NULL when an answer has been sent, nothing then being held. */
static const char *begin_authored(struct rep *r, struct web_request *w, struct db **db,
                                  struct flow_read_info *rd, json_t **body, char *who,
                                  size_t who_size)
{
    *body = NULL;
    if (!load_read(r, w, db, rd))
        return NULL;
    *body = body_json(w);
    const char *author = *body ? report_author(w, *body, rd, who, who_size) : NULL;
    if (!author) {
        json_decref(*body);
        *body = NULL;
        db_pool_release(r->pool, *db);
    }
    return author;
}

static void report_save(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    struct db *db;
    struct flow_read_info rd;
    json_t *body;
    char who[65];
    const char *author = begin_authored(r, w, &db, &rd, &body, who, sizeof(who));
    if (!author)
        return;
    struct rep_invalid bad = {"", ""};
    struct tr_error err = TR_ERROR_INIT;
    json_t *out = NULL;
    int rc = rep_draft_save(r, db, rd.id, author, body, &out, &bad, &err);
    db_pool_release(r->pool, db);
    json_decref(body);
    reply_result(w, rc, 200, out, &bad, &err, "no such read");
}

static void report_sign(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    struct db *db;
    struct flow_read_info rd;
    json_t *body;
    char who[65];
    const char *signer = begin_authored(r, w, &db, &rd, &body, who, sizeof(who));
    if (!signer)
        return;
    const char *kind_text = json_string_value(json_object_get(body, "kind"));
    int kind = rep_kind_parse(kind_text);
    struct rep_invalid bad = {"", ""};
    struct tr_error err = TR_ERROR_INIT;
    json_t *out = NULL;
    int rc;
    if (kind != REP_PRELIMINARY && kind != REP_FINAL) {
        snprintf(bad.field, sizeof(bad.field), "kind");
        snprintf(bad.why, sizeof(bad.why),
                 "kind is \"preliminary\" or \"final\" (addenda: POST "
                 "/api/v1/reads/{id}/addenda)");
        rc = TR_EINVAL;
    } else {
        rc = rep_sign(r, db, rd.id, signer, kind, &out, &bad, &err);
    }
    db_pool_release(r->pool, db);
    json_decref(body);
    reply_result(w, rc, 201, out, &bad, &err, "no such read");
}

static void report_addendum(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    struct db *db;
    struct flow_read_info rd;
    json_t *body;
    char who[65];
    const char *signer = begin_authored(r, w, &db, &rd, &body, who, sizeof(who));
    if (!signer)
        return;
    struct rep_invalid bad = {"", ""};
    struct tr_error err = TR_ERROR_INIT;
    json_t *out = NULL;
    int rc = rep_addendum(r, db, rd.id, signer, body, &out, &bad, &err);
    db_pool_release(r->pool, db);
    json_decref(body);
    reply_result(w, rc, 201, out, &bad, &err, "no such read");
}

static void read_deliveries(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    struct db *db;
    struct flow_read_info rd;
    if (!load_read(r, w, &db, &rd))
        return;
    json_t *list = json_array();
    struct db_stmt *st;
    struct tr_error err = TR_ERROR_INIT;
    int rc = db_prepare(db,
                        "SELECT " REP_OUTBOX_COLUMNS " FROM rep_outbox WHERE read_id = $1 "
                        "ORDER BY id",
                        &st, &err);
    if (rc == 0) {
        db_bind_int64(st, 1, rd.id);
        while ((rc = db_step(st, &err)) == 1)
            json_array_append_new(list, rep_outbox_json(st));
        db_reset(st);
    }
    db_pool_release(r->pool, db);
    if (rc < 0) {
        json_decref(list);
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(w, 200, list);
}

/* GET /api/v1/reports/{version}/pdf */
static void report_pdf(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    int64_t id;
    if (!parse_id(web_param(w, 0), &id)) {
        web_reply_problem(w, 404, "Not Found", "no such report version");
        return;
    }
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    struct rep_doc d;
    struct tr_error err = TR_ERROR_INIT;
    int rc = rep_doc_load(r, db, id, &d, &err);
    struct flow_read_info rd;
    bool visible = rc == 0 && flow_read_info(db, d.read_id, &rd, NULL) == 0 && may_see(w, &rd);
    if (rc == 0 && !visible)
        web_note_denied(w); /* out of scope: 404, audited as a denial */
    db_pool_release(r->pool, db);
    if (rc < 0 || !visible) {
        if (rc == 0)
            rep_doc_release(&d);
        if (rc < 0 && rc != TR_ENOTFOUND)
            web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
        else
            web_reply_problem(w, 404, "Not Found", "no such signed report version");
        return;
    }
    struct tr_buf pdf;
    tr_buf_init(&pdf, 32u << 20);
    rc = rep_pdf_render(&d, &pdf, &err);
    rep_doc_release(&d);
    if (rc < 0) {
        tr_buf_release(&pdf);
        web_reply_problem(w, 500, "Internal Server Error", "%s", err.message);
        return;
    }
    char disposition[80];
    snprintf(disposition, sizeof(disposition), "inline; filename=\"report-%" PRId64 ".pdf\"", id);
    web_header_add(w, "Content-Disposition", disposition);
    size_t len;
    char *data = tr_buf_detach(&pdf, &len);
    web_reply_owned(w, 200, "application/pdf", data, len);
}

/* ---- critical results --------------------------------------------------------------------- */

static void critical_flag(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    struct db *db;
    struct flow_read_info rd;
    if (!load_read(r, w, &db, &rd))
        return;
    const struct web_principal *p = web_principal_of(w);
    if (p && p->role != WEB_ROLE_ADMIN &&
        !(p->role == WEB_ROLE_READER && strcmp(p->reader, rd.assignee) == 0)) {
        db_pool_release(r->pool, db);
        struct rep_invalid bad = {"", "a critical result is raised by the read's assignee"};
        reply_problem_field(w, 403, "Forbidden", &bad);
        return;
    }
    json_t *body = body_json(w);
    if (!body) {
        db_pool_release(r->pool, db);
        return;
    }
    const char *actor = p && p->role == WEB_ROLE_READER ? p->reader
                        : !p && *rd.assignee            ? rd.assignee
                                                        : user_of(w);
    struct rep_invalid bad = {"", ""};
    struct tr_error err = TR_ERROR_INIT;
    json_t *out = NULL;
    int rc = rep_critical_flag(r, db, rd.id, actor, body, &out, &bad, &err);
    db_pool_release(r->pool, db);
    json_decref(body);
    if (rc == 0)
        rep_wake(r);
    reply_result(w, rc, 201, out, &bad, &err, "no such read");
}

static void critical_list(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    const char *state = web_query(w, "state"), *site = web_query(w, "site"),
               *read = web_query(w, "read");
    if (state && strcmp(state, "open") && strcmp(state, "acknowledged")) {
        struct rep_invalid bad = {"state", "state is open or acknowledged"};
        reply_problem_field(w, 422, "Unprocessable Content", &bad);
        return;
    }
    int64_t read_id = 0;
    if (read && !parse_id(read, &read_id)) {
        struct rep_invalid bad = {"read", "a read id"};
        reply_problem_field(w, 422, "Unprocessable Content", &bad);
        return;
    }
    const struct web_principal *p = web_principal_of(w);
    const char *opened_by = "";
    if (p && p->role == WEB_ROLE_SITE)
        site = p->site;
    else if (p && p->role == WEB_ROLE_READER)
        opened_by = p->reader;
    else if (p && p->role != WEB_ROLE_ADMIN) {
        web_reply_problem(w, 403, "Forbidden", "critical results are their site's and readers'");
        return;
    }
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    json_t *list = json_array();
    struct db_stmt *st;
    struct tr_error err = TR_ERROR_INIT;
    int rc = db_prepare(db,
                        "SELECT " REP_CRITICAL_COLUMNS " FROM rep_critical WHERE ($1 = '' OR "
                        "state = $1) AND ($2 = '' OR site = $2) AND ($3 = 0 OR read_id = $3) "
                        "AND ($4 = '' OR created_by = $4) ORDER BY id LIMIT 1000",
                        &st, &err);
    if (rc == 0) {
        db_bind_text(st, 1, state ? state : "");
        db_bind_text(st, 2, site ? site : "");
        db_bind_int64(st, 3, read_id);
        db_bind_text(st, 4, opened_by);
        while ((rc = db_step(st, &err)) == 1)
            json_array_append_new(list, rep_critical_json(st));
        db_reset(st);
    }
    db_pool_release(r->pool, db);
    if (rc < 0) {
        json_decref(list);
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(w, 200, list);
}

static bool may_see_critical(struct web_request *w, json_t *c)
{
    const struct web_principal *p = web_principal_of(w);
    if (!p || p->role == WEB_ROLE_ADMIN)
        return true;
    if (p->role == WEB_ROLE_SITE)
        return strcmp(p->site, json_string_value(json_object_get(c, "site"))) == 0;
    if (p->role == WEB_ROLE_READER)
        return strcmp(p->reader, json_string_value(json_object_get(c, "opened_by"))) == 0;
    return false;
}

static void critical_get(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    int64_t id;
    if (!parse_id(web_param(w, 0), &id)) {
        web_reply_problem(w, 404, "Not Found", "no such critical result");
        return;
    }
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    json_t *out = NULL;
    struct tr_error err = TR_ERROR_INIT;
    int rc = rep_critical_get(db, id, &out, &err);
    db_pool_release(r->pool, db);
    if (rc == 0 && !may_see_critical(w, out)) {
        json_decref(out);
        rc = TR_ENOTFOUND;
    }
    if (rc == TR_ENOTFOUND)
        web_reply_problem(w, 404, "Not Found", "no such critical result");
    else if (rc < 0)
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
    else
        reply_json(w, 200, out);
}

static void critical_ack(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    int64_t id;
    if (!parse_id(web_param(w, 0), &id)) {
        web_reply_problem(w, 404, "Not Found", "no such critical result");
        return;
    }
    const struct web_principal *p = web_principal_of(w);
    if (p && p->role != WEB_ROLE_SITE) {
        struct rep_invalid bad = {"", "a critical result is acknowledged by a user of its "
                                      "site, who says who was told and how"};
        reply_problem_field(w, 403, "Forbidden", &bad);
        return;
    }
    json_t *body = body_json(w);
    if (!body)
        return;
    struct db *db;
    if (!acquire(r, w, &db)) {
        json_decref(body);
        return;
    }
    struct rep_invalid bad = {"", ""};
    struct tr_error err = TR_ERROR_INIT;
    json_t *out = NULL;
    int rc = rep_critical_ack(r, db, id, p ? p->site : NULL, user_of(w), body, &out, &bad, &err);
    db_pool_release(r->pool, db);
    json_decref(body);
    reply_result(w, rc, 200, out, &bad, &err, "no such critical result");
}

/* ---- deliveries --------------------------------------------------------------------------- */

static void deliveries_list(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    const char *state = web_query(w, "state"), *target = web_query(w, "target");
    const struct web_principal *p = web_principal_of(w);
    const char *site = "";
    if (p && p->role == WEB_ROLE_SITE)
        site = p->site;
    else if (p && p->role != WEB_ROLE_ADMIN) {
        web_reply_problem(w, 403, "Forbidden",
                          "deliveries are seen by administrators and the "
                          "sites they go to");
        return;
    }
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    json_t *list = json_array();
    struct db_stmt *st;
    struct tr_error err = TR_ERROR_INIT;
    int rc = db_prepare(db,
                        "SELECT o.id, o.version_id, o.read_id, o.target, o.destination, "
                        "o.state, o.attempts, o.created_at, o.next_at, o.delivered_at, "
                        "o.last_error, o.last_ack FROM rep_outbox o JOIN rep_reads r ON "
                        "r.read_id = o.read_id WHERE ($1 = '' OR o.state = $1) AND ($2 = '' "
                        "OR o.target = $2) AND ($3 = '' OR r.site = $3) ORDER BY o.id DESC "
                        "LIMIT 1000",
                        &st, &err);
    if (rc == 0) {
        db_bind_text(st, 1, state ? state : "");
        db_bind_text(st, 2, target ? target : "");
        db_bind_text(st, 3, site);
        while ((rc = db_step(st, &err)) == 1)
            json_array_append_new(list, rep_outbox_json(st));
        db_reset(st);
    }
    db_pool_release(r->pool, db);
    if (rc < 0) {
        json_decref(list);
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(w, 200, list);
}

static void delivery_retry(void *ctx, struct web_request *w)
{
    struct rep *r = ctx;
    if (!web_is_admin(w)) {
        web_reply_problem(w, 403, "Forbidden", "this needs an administrator");
        return;
    }
    int64_t id;
    if (!parse_id(web_param(w, 0), &id)) {
        web_reply_problem(w, 404, "Not Found", "no such delivery");
        return;
    }
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    struct tr_error err = TR_ERROR_INIT;
    int rc = rep_outbox_retry(r, db, id, user_of(w), &err);
    db_pool_release(r->pool, db);
    if (rc == TR_EEXIST)
        web_reply_problem(w, 409, "Conflict", "only a rejected or failed delivery is retried");
    else if (rc < 0)
        web_reply_problem(w, 503, "Service Unavailable", "%s", err.message);
    else
        reply_json(w, 202, json_pack("{s:I,s:s}", "id", (json_int_t)id, "state", "pending"));
}

/* ---- FHIR --------------------------------------------------------------------------------- */

static void fhir_reply(struct web_request *w, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        web_reply_problem(w, 500, "Internal Server Error", "cannot encode the resource");
        return;
    }
    web_reply(w, status, "application/fhir+json; fhirVersion=4.0", text, strlen(text));
    free(text);
}

static void fhir_outcome(struct web_request *w, unsigned status, const char *code,
                         const char *diagnostics)
{
    fhir_reply(w, status,
               json_pack("{s:s,s:[{s:s,s:s,s:s}]}", "resourceType", "OperationOutcome", "issue",
                         "severity", "error", "code", code, "diagnostics", diagnostics));
}

enum fhir_type { FHIR_REPORT, FHIR_STUDY, FHIR_REQUEST };

struct fhir_route {
    struct rep *r;
    enum fhir_type type;
};

/* The signed version of a read: the latest, or number `seq` (> 0). 0 when there is none. */
static int64_t signed_version(struct db *db, int64_t read_id, int64_t seq)
{
    struct db_stmt *st;
    if (db_prepare(db,
                   "SELECT id FROM rep_versions WHERE read_id = $1 AND signed_at IS NOT NULL "
                   "AND ($2 = 0 OR seq = $2) ORDER BY seq DESC LIMIT 1",
                   &st, NULL) < 0)
        return 0;
    db_bind_int64(st, 1, read_id);
    db_bind_int64(st, 2, seq);
    int64_t id = db_step(st, NULL) == 1 ? db_column_int64(st, 0) : 0;
    db_reset(st);
    return id;
}

static json_t *fhir_resource(struct rep *r, struct db *db, enum fhir_type type, int64_t version,
                             struct tr_error *err)
{
    struct rep_doc d;
    if (rep_doc_load(r, db, version, &d, err) < 0)
        return NULL;
    json_t *j = NULL;
    if (type == FHIR_REPORT) {
        struct tr_buf pdf;
        tr_buf_init(&pdf, 32u << 20);
        if (rep_pdf_render(&d, &pdf, err) == 0)
            j = rep_fhir_diagnostic_report(&d, NULL, pdf.data, pdf.len);
        tr_buf_release(&pdf);
    } else {
        j = type == FHIR_STUDY ? rep_fhir_imaging_study(&d) : rep_fhir_service_request(&d);
    }
    rep_doc_release(&d);
    return j;
}

static void fhir_read(void *ctx, struct web_request *w)
{
    struct fhir_route *fr = ctx;
    struct rep *r = fr->r;
    int64_t id, seq = 0;
    if (!parse_id(web_param(w, 0), &id) || (web_param(w, 1) && !parse_id(web_param(w, 1), &seq))) {
        fhir_outcome(w, 404, "not-found", "no such resource");
        return;
    }
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    struct flow_read_info rd;
    struct tr_error err = TR_ERROR_INIT;
    int64_t version = 0;
    if (flow_read_info(db, id, &rd, NULL) == 0) {
        if (may_see(w, &rd))
            version = signed_version(db, id, seq);
        else
            web_note_denied(w); /* out of scope: 404, audited as a denial */
    }
    json_t *j = version ? fhir_resource(r, db, fr->type, version, &err) : NULL;
    db_pool_release(r->pool, db);
    if (!version)
        fhir_outcome(w, 404, "not-found",
                     "no such resource (a read's resources exist once its "
                     "report is signed)");
    else if (!j)
        fhir_outcome(w, 500, "exception",
                     err.message[0] ? err.message : "cannot make the resource");
    else
        fhir_reply(w, 200, j);
}

/* GET /fhir/DiagnosticReport: a searchset of the latest signed report of each visible read
 * (newest first; _count, default 50, at most 200; status=). */
static void fhir_search(void *ctx, struct web_request *w)
{
    struct fhir_route *fr = ctx;
    struct rep *r = fr->r;
    const char *count_text = web_query(w, "_count"), *status = web_query(w, "status");
    long count = count_text ? strtol(count_text, NULL, 10) : 50;
    if (count < 1 || count > 200)
        count = 50;
    struct db *db;
    if (!acquire(r, w, &db))
        return;
    struct db_stmt *st;
    int64_t reads[200];
    size_t n = 0;
    if (db_prepare(db,
                   "SELECT read_id, MAX(signed_at) AS latest FROM rep_versions WHERE "
                   "signed_at IS NOT NULL GROUP BY read_id ORDER BY latest DESC LIMIT 1000",
                   &st, NULL) == 0) {
        while (n < (size_t)count && db_step(st, NULL) == 1) {
            struct flow_read_info rd;
            int64_t id = db_column_int64(st, 0);
            /* flow_read_info uses another statement: fine while this one is open. */
            if (flow_read_info(db, id, &rd, NULL) == 0 && may_see(w, &rd))
                reads[n++] = id;
        }
        db_reset(st);
    }
    json_t *entries = json_array();
    for (size_t i = 0; i < n; i++) {
        struct tr_error err = TR_ERROR_INIT;
        int64_t version = signed_version(db, reads[i], 0);
        json_t *j = version ? fhir_resource(r, db, FHIR_REPORT, version, &err) : NULL;
        if (!j)
            continue;
        if (status && strcmp(status, json_string_value(json_object_get(j, "status"))) != 0) {
            json_decref(j);
            continue;
        }
        char url[64];
        snprintf(url, sizeof(url), "DiagnosticReport/%" PRId64, reads[i]);
        json_array_append_new(entries, json_pack("{s:s,s:o,s:{s:s}}", "fullUrl", url, "resource", j,
                                                 "search", "mode", "match"));
    }
    db_pool_release(r->pool, db);
    json_t *bundle = json_pack("{s:s,s:s,s:I}", "resourceType", "Bundle", "type", "searchset",
                               "total", (json_int_t)json_array_size(entries));
    if (json_array_size(entries))
        json_object_set_new(bundle, "entry", entries);
    else
        json_decref(entries);
    fhir_reply(w, 200, bundle);
}

static void fhir_metadata(void *ctx, struct web_request *w)
{
    (void)ctx;
    char date[32];
    rep_iso_time(rep_now_ms(), date);
    json_t *resources = json_array();
    static const char *const types[] = {"DiagnosticReport", "ImagingStudy", "ServiceRequest"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(types); i++) {
        json_t *inter = json_pack("[{s:s},{s:s}]", "code", "read", "code", "vread");
        if (i == 0)
            json_array_append_new(inter, json_pack("{s:s}", "code", "search-type"));
        json_array_append_new(resources,
                              json_pack("{s:s,s:o}", "type", types[i], "interaction", inter));
    }
    fhir_reply(w, 200,
               json_pack("{s:s,s:s,s:s,s:s,s:{s:s,s:s},s:s,s:[s],s:[{s:s,s:o}]}", "resourceType",
                         "CapabilityStatement", "status", "active", "date", date, "kind",
                         "instance", "software", "name", "telerad", "version", TELERAD_VERSION,
                         "fhirVersion", "4.0.1", "format", "json", "rest", "mode", "server",
                         "resource", resources));
}

/* ---- registration ------------------------------------------------------------------------- */

int rep_register_api(struct rep *r, struct web_server *s, struct tr_error *err)
{
    struct fhir_route *fr = tr_calloc(3, sizeof(*fr));
    if (!fr || web_server_own(s, fr, tr_free) < 0) {
        tr_free(fr);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    for (int i = 0; i < 3; i++)
        fr[i] = (struct fhir_route){r, (enum fhir_type)i};
    const struct web_route routes[] = {
        {"GET", "/api/v1/templates", templates_list, NULL, 0, r},
        {"GET", "/api/v1/templates/{}", template_get, NULL, 0, r},
        {"GET", "/api/v1/reads/{}/report", report_get, NULL, 0, r},
        {"POST", "/api/v1/reads/{}/report", report_save, NULL, 1u << 20, r},
        {"POST", "/api/v1/reads/{}/report/sign", report_sign, NULL, 0, r},
        {"POST", "/api/v1/reads/{}/addenda", report_addendum, NULL, 1u << 20, r},
        {"POST", "/api/v1/reads/{}/critical", critical_flag, NULL, 0, r},
        {"GET", "/api/v1/reads/{}/deliveries", read_deliveries, NULL, 0, r},
        {"GET", "/api/v1/critical", critical_list, NULL, 0, r},
        {"GET", "/api/v1/critical/{}", critical_get, NULL, 0, r},
        {"POST", "/api/v1/critical/{}/ack", critical_ack, NULL, 0, r},
        {"GET", "/api/v1/reports/{}/pdf", report_pdf, NULL, 0, r},
        {"GET", "/api/v1/deliveries", deliveries_list, NULL, 0, r},
        {"POST", "/api/v1/deliveries/{}/retry", delivery_retry, NULL, 0, r},
        {"GET", "/fhir/metadata", fhir_metadata, NULL, 0, r},
        {"GET", "/fhir/DiagnosticReport", fhir_search, NULL, 0, &fr[FHIR_REPORT]},
        {"GET", "/fhir/DiagnosticReport/{}", fhir_read, NULL, 0, &fr[FHIR_REPORT]},
        {"GET", "/fhir/DiagnosticReport/{}/_history/{}", fhir_read, NULL, 0, &fr[FHIR_REPORT]},
        {"GET", "/fhir/ImagingStudy/{}", fhir_read, NULL, 0, &fr[FHIR_STUDY]},
        {"GET", "/fhir/ImagingStudy/{}/_history/{}", fhir_read, NULL, 0, &fr[FHIR_STUDY]},
        {"GET", "/fhir/ServiceRequest/{}", fhir_read, NULL, 0, &fr[FHIR_REQUEST]},
        {"GET", "/fhir/ServiceRequest/{}/_history/{}", fhir_read, NULL, 0, &fr[FHIR_REQUEST]},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(routes); i++) {
        if (web_server_route(s, &routes[i]) < 0)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    return 0;
}
