/*
 * api.c - the workflow's REST API under /api/v1 (docs/api.md): sites, readers, contracts,
 * priority rules, reads (claim, release, reassign, open, AI findings, routing explanation),
 * the worklist; and Prometheus metrics at /metrics.
 *
 * JSON in and out. Validation errors are 422 problem+json with a "field" member naming the
 * field ("licenses[0].expires"); malformed JSON is 400; a conflict (an id taken, a read
 * claimed by someone else) 409.
 */
#include "common.h"
#include "flow_int.h"
#include "principal.h"

#include <inttypes.h>
#include <stdio.h>
#include <strings.h>

/* ---- helpers ------------------------------------------------------------------------------ */

static void reply_json(struct web_request *r, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!text) {
        web_reply_problem(r, 500, "Internal Server Error", "cannot encode the answer");
        return;
    }
    web_reply(r, status, "application/json", text, strlen(text));
    free(text);
}

static void reply_invalid(struct web_request *r, const struct flow_invalid *bad)
{
    json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", "about:blank", "title",
                          "Unprocessable Content", "status", 422, "detail", bad->why, "field",
                          bad->field);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        web_reply_problem(r, 422, "Unprocessable Content", "%s: %s", bad->field, bad->why);
        return;
    }
    web_reply(r, 422, "application/problem+json", text, strlen(text));
    free(text);
}

static json_t *body_json(struct web_request *r, bool required)
{
    size_t len;
    const char *body = web_body(r, &len);
    if (!body || !len) {
        if (required)
            web_reply_problem(r, 400, "Bad Request", "a JSON body is required");
        else
            return json_object();
        return NULL;
    }
    json_error_t e;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &e);
    if (!j)
        web_reply_problem(r, 400, "Bad Request", "invalid JSON at line %d column %d: %s", e.line,
                          e.column, e.text);
    return j;
}

static bool need_admin(struct web_request *r)
{
    if (web_is_admin(r))
        return true;
    web_reply_problem(r, 403, "Forbidden", "this needs an administrator");
    return false;
}

/* The reader a request acts as: a reader's own account, or (administrators) the reader named
 * in the query or body. */
static const char *acting_reader(struct web_request *r, json_t *body, char *buf, size_t size)
{
    const struct web_principal *p = web_principal_of(r);
    if (p && p->role == WEB_ROLE_READER) {
        snprintf(buf, size, "%s", p->reader);
        return buf;
    }
    if (!web_is_admin(r))
        return NULL;
    const char *q = web_query(r, "reader");
    if (!q && body)
        q = json_string_value(json_object_get(body, "reader"));
    if (!q || !*q)
        return NULL;
    snprintf(buf, size, "%s", q);
    return buf;
}

static const char *actor_of(struct web_request *r)
{
    const struct web_principal *p = web_principal_of(r);
    return p ? p->user : "admin";
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

/* ---- catalog documents -------------------------------------------------------------------- */

enum doc_kind { DOC_SITE, DOC_READER, DOC_CONTRACT };

struct doc_route {
    struct flow *f;
    enum doc_kind kind;
};

static const char *table_of(enum doc_kind k)
{
    return k == DOC_SITE ? "flow_sites" : k == DOC_READER ? "flow_readers" : "flow_contracts";
}

/* Validate a document; fill the id it names; cross-check against the catalog. */
static int validate(struct flow *f, enum doc_kind kind, json_t *doc, char *id, size_t id_size,
                    struct flow_invalid *bad)
{
    int rc;
    if (kind == DOC_SITE) {
        struct flow_site s;
        if ((rc = flow_site_parse(doc, &s, bad)))
            return rc;
        snprintf(id, id_size, "%s", s.id);
        flow_site_release(&s);
        return 0;
    }
    struct flow_catalog *c = flow_catalog_get(f, NULL);
    if (!c) {
        snprintf(bad->field, sizeof(bad->field), "%s", "");
        snprintf(bad->why, sizeof(bad->why), "the catalog cannot be read");
        return TR_EIO;
    }
    if (kind == DOC_READER) {
        struct flow_reader rd;
        rc = flow_reader_parse(doc, &rd, bad);
        if (rc == 0) {
            snprintf(id, id_size, "%s", rd.id);
            for (unsigned i = 0; i < rd.nprivileges && rc == 0; i++) {
                if (!flow_catalog_site(c, rd.privileges[i].site)) {
                    snprintf(bad->field, sizeof(bad->field), "privileges[%u].site", i);
                    snprintf(bad->why, sizeof(bad->why), "no site \"%s\"", rd.privileges[i].site);
                    rc = TR_EINVAL;
                }
            }
            flow_reader_release(&rd);
        }
    } else {
        struct flow_contract k;
        rc = flow_contract_parse(doc, &k, bad);
        if (rc == 0) {
            snprintf(id, id_size, "%s", k.id);
            json_object_set_new(doc, "id", json_string(k.id));
            if (!flow_catalog_site(c, k.site)) {
                snprintf(bad->field, sizeof(bad->field), "site");
                snprintf(bad->why, sizeof(bad->why), "no site \"%s\"", k.site);
                rc = TR_EINVAL;
            }
        }
    }
    flow_catalog_put(c);
    return rc;
}

/* Store (insert or replace) a validated document, with the site's AE titles. */
static int store_doc(struct flow *f, enum doc_kind kind, const char *id, json_t *doc,
                     bool replace, struct flow_invalid *bad, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
    char sql[256];
    if ((rc = db_begin(db, err)))
        goto out;
    struct db_stmt *st;
    if (kind == DOC_CONTRACT)
        snprintf(sql, sizeof(sql),
                 replace ? "INSERT INTO flow_contracts (id, site, doc, updated_at) VALUES ($1, $4, "
                           "$2, $3) ON CONFLICT (id) DO UPDATE SET doc = $2, site = $4, "
                           "updated_at = $3"
                         : "INSERT INTO flow_contracts (id, site, doc, updated_at) VALUES ($1, $4, "
                           "$2, $3) ON CONFLICT DO NOTHING");
    else
        snprintf(sql, sizeof(sql),
                 replace ? "INSERT INTO %s (id, doc, updated_at) VALUES ($1, $2, $3) ON CONFLICT "
                           "(id) DO UPDATE SET doc = $2, updated_at = $3"
                         : "INSERT INTO %s (id, doc, updated_at) VALUES ($1, $2, $3) ON CONFLICT "
                           "DO NOTHING",
                 table_of(kind));
    if ((rc = db_prepare_temp(db, sql, &st, err)))
        goto fail;
    db_bind_text(st, 1, id);
    db_bind_text(st, 2, text);
    db_bind_int64(st, 3, flow_now_ms());
    if (kind == DOC_CONTRACT)
        db_bind_text(st, 4, json_string_value(json_object_get(doc, "site")));
    rc = db_step(st, err);
    bool changed = rc >= 0 && db_changes(st) == 1;
    db_finalize(st);
    if (rc < 0)
        goto fail;
    if (!changed) {
        rc = TR_EEXIST;
        snprintf(bad->field, sizeof(bad->field), kind == DOC_CONTRACT ? "site" : "id");
        snprintf(bad->why, sizeof(bad->why),
                 kind == DOC_CONTRACT ? "this site has a contract already (PUT to change it)"
                                      : "\"%s\" exists already (PUT to change it)",
                 id);
        goto fail;
    }
    if (kind == DOC_SITE) {
        /* The AE titles: each belongs to one site. */
        if ((rc = db_prepare(db, "DELETE FROM flow_site_aes WHERE site = $1", &st, err)))
            goto fail;
        db_bind_text(st, 1, id);
        rc = db_step(st, err);
        db_reset(st);
        if (rc < 0)
            goto fail;
        json_t *aes = json_object_get(doc, "ae_titles");
        size_t i;
        json_t *v;
        json_array_foreach(aes, i, v)
        {
            if ((rc = db_prepare(db, "INSERT INTO flow_site_aes (ae_title, site) VALUES ($1, $2) "
                                     "ON CONFLICT DO NOTHING",
                                 &st, err)))
                goto fail;
            db_bind_text(st, 1, json_string_value(v));
            db_bind_text(st, 2, id);
            rc = db_step(st, err);
            bool added = rc >= 0 && db_changes(st) == 1;
            db_reset(st);
            if (rc < 0)
                goto fail;
            if (!added) {
                rc = TR_EEXIST;
                snprintf(bad->field, sizeof(bad->field), "ae_titles[%zu]", i);
                snprintf(bad->why, sizeof(bad->why), "AE title %s belongs to another site",
                         json_string_value(v));
                goto fail;
            }
        }
    }
    rc = db_commit(db, err);
    goto out;
fail:
    db_rollback(db);
out:
    free(text);
    db_pool_release(f->pool, db);
    if (rc == 0)
        flow_catalog_changed(f);
    return rc;
}

int flow_store_document(struct flow *f, int kind, json_t *doc, struct flow_invalid *bad,
                        struct tr_error *err)
{
    char id[FLOW_ID_MAX];
    int rc = validate(f, (enum doc_kind)kind, doc, id, sizeof(id), bad);
    if (rc)
        return tr_error_set(err, rc, "%s: %s", bad->field, bad->why);
    return store_doc(f, (enum doc_kind)kind, id, doc, true, bad, err);
}

/* What a principal may read of the catalog: administrators everything; a site's users their
 * site and its contract; readers their own document. Answers 403 and returns false for the
 * rest; *column / *value narrow the table to the principal's own entries (NULL: all). */
static bool catalog_scope(struct web_request *r, enum doc_kind kind, const char **column,
                          const char **value)
{
    const struct web_principal *p = web_principal_of(r);
    *column = *value = NULL;
    if (web_is_admin(r))
        return true;
    if (p->role == WEB_ROLE_SITE && kind != DOC_READER) {
        *column = kind == DOC_SITE ? "id" : "site";
        *value = p->site;
        return true;
    }
    if (p->role == WEB_ROLE_READER && kind == DOC_READER) {
        *column = "id";
        *value = p->reader;
        return true;
    }
    web_reply_problem(r, 403, "Forbidden", "the catalog is for administrators");
    return false;
}

static void doc_list(struct flow *f, enum doc_kind kind, struct web_request *r)
{
    const char *column, *value;
    if (!catalog_scope(r, kind, &column, &value))
        return;
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT doc FROM %s WHERE $1 = '' OR %s = $1 ORDER BY id",
             table_of(kind), column ? column : "id");
    struct db_stmt *st;
    json_t *list = json_array();
    int rc = db_prepare_temp(db, sql, &st, &err);
    if (rc == 0)
        db_bind_text(st, 1, value ? value : "");
    while (rc == 0 && db_step(st, &err) == 1) {
        json_t *d = json_loads(db_column_text(st, 0), 0, NULL);
        if (d)
            json_array_append_new(list, d);
    }
    if (rc == 0)
        db_finalize(st);
    db_pool_release(f->pool, db);
    if (err.code) {
        json_decref(list);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(r, 200, list);
}

static void doc_get(struct flow *f, enum doc_kind kind, const char *id, struct web_request *r)
{
    const char *column, *value;
    if (!catalog_scope(r, kind, &column, &value))
        return;
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT doc FROM %s WHERE id = $1", table_of(kind));
    struct db_stmt *st;
    json_t *doc = NULL;
    if (db_prepare_temp(db, sql, &st, &err) == 0) {
        db_bind_text(st, 1, id);
        if (db_step(st, &err) == 1)
            doc = json_loads(db_column_text(st, 0), 0, NULL);
        db_finalize(st);
    }
    db_pool_release(f->pool, db);
    if (doc && column) {
        /* Someone else's entry: not found for this principal, a denial for the audit log. */
        const char *own = strcmp(column, "id") == 0
                              ? id
                              : json_string_value(json_object_get(doc, column));
        if (!own || strcmp(own, value) != 0) {
            json_decref(doc);
            doc = NULL;
            web_note_denied(r);
        }
    }
    if (!doc) {
        web_reply_problem(r, err.code ? 503 : 404, err.code ? "Service Unavailable" : "Not Found",
                          "%s", err.code ? err.message : "no such entry");
        return;
    }
    if (kind == DOC_READER) {
        /* With its live state: availability now, open reads. */
        struct flow_catalog *c = flow_catalog_get(f, NULL);
        const struct flow_reader *rd = c ? flow_catalog_reader(c, id) : NULL;
        if (rd)
            json_object_set_new(doc, "available_now",
                                json_boolean(flow_reader_available(rd, flow_now_ms())));
        flow_catalog_put(c);
    }
    reply_json(r, 200, doc);
}

static void doc_delete(struct flow *f, enum doc_kind kind, const char *id, struct web_request *r)
{
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    char sql[128];
    snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE id = $1", table_of(kind));
    struct db_stmt *st;
    int rc = db_prepare_temp(db, sql, &st, &err);
    bool done = false;
    if (rc == 0) {
        db_bind_text(st, 1, id);
        rc = db_step(st, &err);
        done = rc >= 0 && db_changes(st) == 1;
        db_finalize(st);
    }
    db_pool_release(f->pool, db);
    if (rc < 0) {
        web_reply_problem(r, 409, "Conflict", "cannot delete: %s", err.message);
        return;
    }
    if (!done) {
        web_reply_problem(r, 404, "Not Found", "no such entry");
        return;
    }
    flow_catalog_changed(f);
    web_reply(r, 204, NULL, "", 0);
}

static void doc_write(struct flow *f, enum doc_kind kind, const char *path_id,
                      struct web_request *r)
{
    if (!need_admin(r))
        return;
    json_t *doc = body_json(r, true);
    if (!doc)
        return;
    if (path_id && json_is_object(doc) && !json_object_get(doc, "id"))
        json_object_set_new(doc, "id", json_string(path_id));
    struct flow_invalid bad = {{0}};
    char id[FLOW_ID_MAX] = "";
    int rc = validate(f, kind, doc, id, sizeof(id), &bad);
    if (rc == 0 && path_id && strcmp(id, path_id) != 0) {
        snprintf(bad.field, sizeof(bad.field), "id");
        snprintf(bad.why, sizeof(bad.why), "the id in the body differs from the path");
        rc = TR_EINVAL;
    }
    if (rc) {
        json_decref(doc);
        if (rc == TR_EIO)
            web_reply_problem(r, 503, "Service Unavailable", "%s", bad.why);
        else
            reply_invalid(r, &bad);
        return;
    }
    struct tr_error err = TR_ERROR_INIT;
    rc = store_doc(f, kind, id, doc, path_id != NULL, &bad, &err);
    if (rc == TR_EEXIST) {
        json_t *j = json_pack("{s:s,s:s,s:i,s:s,s:s}", "type", "about:blank", "title",
                              "Conflict", "status", 409, "detail", bad.why, "field", bad.field);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        web_reply(r, 409, "application/problem+json", text, strlen(text));
        free(text);
        json_decref(doc);
        return;
    }
    if (rc) {
        json_decref(doc);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    flow_log(f, 2, "%s %s %s by %s", kind == DOC_SITE ? "site" : kind == DOC_READER ? "reader" : "contract",
             id, path_id ? "updated" : "created", actor_of(r));
    reply_json(r, path_id ? 200 : 201, doc);
}

static void docs_collection(void *ctx, struct web_request *r)
{
    struct doc_route *d = ctx;
    if (strcmp(web_method(r), "POST") == 0)
        doc_write(d->f, d->kind, NULL, r);
    else
        doc_list(d->f, d->kind, r);
}

static void docs_item(void *ctx, struct web_request *r)
{
    struct doc_route *d = ctx;
    const char *id = web_param(r, 0);
    const char *m = web_method(r);
    if (strcmp(m, "PUT") == 0)
        doc_write(d->f, d->kind, id, r);
    else if (strcmp(m, "DELETE") == 0) {
        if (need_admin(r))
            doc_delete(d->f, d->kind, id, r);
    } else
        doc_get(d->f, d->kind, id, r);
}

/* POST /api/v1/readers/{id}/status {"status":"online"}: readers set their own. */
static void reader_status(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    const char *id = web_param(r, 0);
    const struct web_principal *p = web_principal_of(r);
    if (!web_is_admin(r) && !(p && p->role == WEB_ROLE_READER && strcmp(p->reader, id) == 0)) {
        web_reply_problem(r, 403, "Forbidden", "readers set their own status");
        return;
    }
    json_t *body = body_json(r, true);
    if (!body)
        return;
    const char *status = json_string_value(json_object_get(body, "status"));
    if (!status || (strcmp(status, "online") && strcmp(status, "offline"))) {
        json_decref(body);
        struct flow_invalid bad = {"status", "status is online or offline"};
        reply_invalid(r, &bad);
        return;
    }
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        json_decref(body);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    struct db_stmt *st;
    json_t *doc = NULL;
    if (db_prepare(db, "SELECT doc FROM flow_readers WHERE id = $1", &st, &err) == 0) {
        db_bind_text(st, 1, id);
        if (db_step(st, &err) == 1)
            doc = json_loads(db_column_text(st, 0), 0, NULL);
        db_reset(st);
    }
    db_pool_release(f->pool, db);
    if (!doc) {
        json_decref(body);
        web_reply_problem(r, 404, "Not Found", "no such reader");
        return;
    }
    json_object_set_new(doc, "status", json_string(status));
    json_decref(body);
    struct flow_invalid bad;
    if (store_doc(f, DOC_READER, id, doc, true, &bad, &err) < 0) {
        json_decref(doc);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(r, 200, doc);
}

/* ---- priority rules ----------------------------------------------------------------------- */

static void rules(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (strcmp(web_method(r), "POST") == 0) {
        if (!need_admin(r))
            return;
        json_t *doc = body_json(r, true);
        if (!doc)
            return;
        struct flow_priority_rule rule;
        struct flow_invalid bad;
        if (flow_rule_parse(doc, &rule, &bad) < 0) {
            json_decref(doc);
            reply_invalid(r, &bad);
            return;
        }
        if (db_pool_acquire(f->pool, &db, &err) < 0) {
            json_decref(doc);
            web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
            return;
        }
        char *text = json_dumps(doc, JSON_COMPACT | JSON_SORT_KEYS);
        struct db_stmt *st;
        int64_t id = 0;
        if (db_prepare(db, "INSERT INTO flow_priority_rules (doc) VALUES ($1) RETURNING id", &st,
                       &err) == 0) {
            db_bind_text(st, 1, text);
            if (db_step(st, &err) == 1)
                id = db_column_int64(st, 0);
            db_reset(st);
        }
        free(text);
        db_pool_release(f->pool, db);
        if (!id) {
            json_decref(doc);
            web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
            return;
        }
        flow_catalog_changed(f);
        json_object_set_new(doc, "id", json_integer(id));
        reply_json(r, 201, doc);
        return;
    }
    if (!need_admin(r))
        return;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    json_t *list = json_array();
    struct db_stmt *st;
    if (db_prepare(db, "SELECT id, doc FROM flow_priority_rules ORDER BY id", &st, &err) == 0) {
        while (db_step(st, &err) == 1) {
            json_t *d = json_loads(db_column_text(st, 1), 0, NULL);
            if (d) {
                json_object_set_new(d, "id", json_integer(db_column_int64(st, 0)));
                json_array_append_new(list, d);
            }
        }
        db_reset(st);
    }
    db_pool_release(f->pool, db);
    reply_json(r, 200, list);
}

static void rule_delete(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    int64_t id;
    if (!need_admin(r))
        return;
    if (!parse_id(web_param(r, 0), &id)) {
        web_reply_problem(r, 404, "Not Found", "no such rule");
        return;
    }
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    struct db_stmt *st;
    bool done = false;
    if (db_prepare(db, "DELETE FROM flow_priority_rules WHERE id = $1", &st, &err) == 0) {
        db_bind_int64(st, 1, id);
        done = db_step(st, &err) >= 0 && db_changes(st) == 1;
        db_reset(st);
    }
    db_pool_release(f->pool, db);
    if (!done) {
        web_reply_problem(r, 404, "Not Found", "no such rule");
        return;
    }
    flow_catalog_changed(f);
    web_reply(r, 204, NULL, "", 0);
}

/* ---- reads -------------------------------------------------------------------------------- */

/* May this request see this read (DESIGN.md invariant 2)? Administrators and services (AI
 * results) all; site users their site's; readers what is assigned to, claimed or signed by
 * them, and the pool reads they are eligible for (licensed, privileged, subspecialty; the
 * catalog `c`, which may be NULL for other roles). Auditors none. */
static bool may_see(struct web_request *r, const struct flow_catalog *c,
                    const struct flow_read *rd)
{
    const struct web_principal *p = web_principal_of(r);
    if (!p || p->role == WEB_ROLE_ADMIN || p->role == WEB_ROLE_SERVICE)
        return true;
    if (p->role == WEB_ROLE_SITE)
        return strcmp(p->site, rd->site) == 0;
    if (p->role == WEB_ROLE_READER) {
        if (strcmp(p->reader, rd->assignee) == 0)
            return true;
        if (rd->state != ST_POOL || !c)
            return false;
        const struct flow_reader *reader = flow_catalog_reader(c, p->reader);
        const struct flow_site *site = flow_catalog_site(c, rd->site);
        return reader && site &&
               flow_judge(c, reader, site, rd, NULL, flow_now_ms(), true, NULL, 0) == V_ELIGIBLE;
    }
    return false;
}

/* The catalog when the request's principal is a reader (for may_see), else NULL. */
static struct flow_catalog *catalog_for(struct flow *f, struct web_request *r)
{
    const struct web_principal *p = web_principal_of(r);
    return p && p->role == WEB_ROLE_READER ? flow_catalog_get(f, NULL) : NULL;
}

static void reads_list(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    const char *study = web_query(r, "study_uid"), *site = web_query(r, "site"),
               *state = web_query(r, "state"), *assignee = web_query(r, "assignee"),
               *prio = web_query(r, "priority"), *lim = web_query(r, "limit"),
               *off = web_query(r, "offset");
    int st_code = state ? flow_state_parse(state) : -1;
    int pr_code = prio ? flow_priority_parse(prio) : -1;
    if ((state && st_code < 0) || (prio && pr_code < 0)) {
        web_reply_problem(r, 400, "Bad Request", "state is one of pool, assigned, claimed, "
                                                 "preliminary, final, cancelled; priority STAT, "
                                                 "URGENT or ROUTINE");
        return;
    }
    long limit = lim ? strtol(lim, NULL, 10) : 100, offset = off ? strtol(off, NULL, 10) : 0;
    if (limit < 1 || limit > 1000 || offset < 0) {
        web_reply_problem(r, 400, "Bad Request", "limit is 1 to 1000, offset from 0");
        return;
    }
    const struct web_principal *p = web_principal_of(r);
    if (p && p->role == WEB_ROLE_SITE)
        site = p->site; /* a site user sees only their site */
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    struct db_stmt *st;
    json_t *list = json_array();
    int64_t now = flow_now_ms();
    struct flow_catalog *c = catalog_for(f, r);
    int rc = db_prepare(db,
                        "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE ($1 = '' OR study_uid "
                        "= $1) AND ($2 = '' OR site = $2) AND ($3 < 0 OR state = $3) AND ($4 = '' "
                        "OR assignee = $4) AND ($5 < 0 OR priority = $5) ORDER BY due_at, id "
                        "LIMIT $6 OFFSET $7",
                        &st, &err);
    if (rc == 0) {
        db_bind_text(st, 1, study ? study : "");
        db_bind_text(st, 2, site ? site : "");
        db_bind_int64(st, 3, st_code);
        db_bind_text(st, 4, assignee ? assignee : "");
        db_bind_int64(st, 5, pr_code);
        db_bind_int64(st, 6, limit);
        db_bind_int64(st, 7, offset);
        while ((rc = db_step(st, &err)) == 1) {
            struct flow_read rd;
            flow_read_from_row(st, &rd);
            if (may_see(r, c, &rd))
                json_array_append_new(list, flow_read_json(&rd, now));
        }
        db_reset(st);
    }
    db_pool_release(f->pool, db);
    flow_catalog_put(c);
    if (rc < 0) {
        json_decref(list);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(r, 200, list);
}

static json_t *history_of(struct db *db, int64_t id)
{
    json_t *h = json_array();
    struct db_stmt *st;
    if (db_prepare(db, "SELECT at, kind, actor, detail FROM flow_read_events WHERE read_id = $1 "
                       "ORDER BY id",
                   &st, NULL) < 0)
        return h;
    db_bind_int64(st, 1, id);
    while (db_step(st, NULL) == 1) {
        json_t *e = json_pack("{s:o,s:s,s:s}", "at", flow_iso_json(db_column_int64(st, 0)), "kind",
                              db_column_text(st, 1), "actor", db_column_text(st, 2));
        json_t *d = db_column_is_null(st, 3) ? NULL : json_loads(db_column_text(st, 3), 0, NULL);
        if (e && d)
            json_object_set_new(e, "detail", d);
        else
            json_decref(d);
        json_array_append_new(h, e);
    }
    db_reset(st);
    return h;
}

static int load_visible(struct flow *f, struct web_request *r, struct flow_read *rd,
                        struct db **dbp)
{
    int64_t id;
    if (!parse_id(web_param(r, 0), &id)) {
        web_reply_problem(r, 404, "Not Found", "no such read");
        return TR_ENOTFOUND;
    }
    struct tr_error err = TR_ERROR_INIT;
    struct db *db;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return TR_EIO;
    }
    int rc = flow_read_load(db, id, rd, &err);
    struct flow_catalog *c = rc == 0 ? catalog_for(f, r) : NULL;
    bool visible = rc == 0 && may_see(r, c, rd);
    flow_catalog_put(c);
    if (rc == 0 && !visible)
        web_note_denied(r); /* out of scope: 404 as for a read that does not exist */
    if (rc || !visible) {
        db_pool_release(f->pool, db);
        if (rc && rc != TR_ENOTFOUND)
            web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        else
            web_reply_problem(r, 404, "Not Found", "no such read");
        return rc ? rc : TR_ENOTFOUND;
    }
    *dbp = db;
    return 0;
}

static void read_get(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    struct flow_read rd;
    struct db *db;
    if (load_visible(f, r, &rd, &db) < 0)
        return;
    json_t *j = flow_read_json(&rd, flow_now_ms());
    json_object_set_new(j, "history", history_of(db, rd.id));
    json_t *ai = json_array();
    struct db_stmt *st;
    if (db_prepare(db, "SELECT at, source, doc FROM flow_ai_findings WHERE read_id = $1 ORDER BY "
                       "id",
                   &st, NULL) == 0) {
        db_bind_int64(st, 1, rd.id);
        while (db_step(st, NULL) == 1) {
            json_t *d = json_loads(db_column_text(st, 2), 0, NULL);
            if (d) {
                json_object_set_new(d, "at", flow_iso_json(db_column_int64(st, 0)));
                json_array_append_new(ai, d);
            }
        }
        db_reset(st);
    }
    json_object_set_new(j, "ai_findings", ai);
    db_pool_release(f->pool, db);
    reply_json(r, 200, j);
}

static void read_routing(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    struct flow_read rd;
    struct db *db;
    /* It names every reader, with their licenses and loads: administrators only. */
    if (!need_admin(r) || load_visible(f, r, &rd, &db) < 0)
        return;
    json_t *j = json_object();
    struct db_stmt *st;
    if (db_prepare(db, "SELECT routing FROM flow_reads WHERE id = $1", &st, NULL) == 0) {
        db_bind_int64(st, 1, rd.id);
        if (db_step(st, NULL) == 1 && !db_column_is_null(st, 0)) {
            json_t *d = json_loads(db_column_text(st, 0), 0, NULL);
            if (d)
                json_object_set_new(j, "decision", d);
        }
        db_reset(st);
    }
    /* And how it would go now. */
    struct flow_catalog *c = flow_catalog_get(f, NULL);
    if (c) {
        int64_t now = flow_now_ms();
        struct flow_load *loads = tr_calloc(c->nreaders + 1, sizeof(*loads));
        if (loads && flow_loads(db, c, loads, NULL) == 0) {
            for (size_t i = 0; i < c->nreaders; i++) {
                flow_load_prepare(&c->readers[i], now, &loads[i]);
                if (strcmp(c->readers[i].id, rd.assignee) == 0 && loads[i].open > 0 &&
                    (rd.state == ST_ASSIGNED || rd.state == ST_CLAIMED)) {
                    /* Not counting this read against its own assignee. */
                    loads[i].open--;
                    loads[i].mrvu -= rd.mrvu;
                }
            }
            struct tr_buf now_why;
            tr_buf_init(&now_why, 64u << 20);
            flow_choose(c, &rd, loads, NULL, now, &now_why);
            json_t *d = now_why.data ? json_loads(now_why.data, 0, NULL) : NULL;
            if (d)
                json_object_set_new(j, "now", d);
            tr_buf_release(&now_why);
        }
        tr_free(loads);
        flow_catalog_put(c);
    }
    json_object_set_new(j, "read", json_integer(rd.id));
    json_object_set_new(j, "state", json_string(flow_state_names[rd.state]));
    json_object_set_new(j, "assignee", rd.assignee[0] ? json_string(rd.assignee) : json_null());
    db_pool_release(f->pool, db);
    reply_json(r, 200, j);
}

/* Whether the principal's role works on reads at all (readers; administrators for them):
 * answers 403 otherwise. */
static bool need_reader(struct web_request *r)
{
    const struct web_principal *p = web_principal_of(r);
    if (web_is_admin(r) || p->role == WEB_ROLE_READER)
        return true;
    web_reply_problem(r, 403, "Forbidden", "reads are worked on by readers");
    return false;
}

static void read_claim(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    if (!need_reader(r))
        return;
    int64_t id;
    if (!parse_id(web_param(r, 0), &id)) {
        web_reply_problem(r, 404, "Not Found", "no such read");
        return;
    }
    json_t *body = body_json(r, false);
    if (!body)
        return;
    char buf[FLOW_ID_MAX];
    const char *reader = acting_reader(r, body, buf, sizeof(buf));
    json_decref(body);
    if (!reader) {
        struct flow_invalid bad = {"reader", "name the reader who claims"};
        reply_invalid(r, &bad);
        return;
    }
    int state = -1;
    char why[300] = "";
    struct tr_error err = TR_ERROR_INIT;
    int64_t now = flow_now_ms();
    int rc = flow_claim(f, id, reader, now, &state, why, sizeof(why), &err);
    if (rc == TR_ENOTFOUND) {
        web_reply_problem(r, 404, "Not Found", "no such read");
    } else if (rc == TR_EDENIED) {
        web_reply_problem(r, 403, "Forbidden", "%s may not read this study: %s", reader, why);
    } else if (rc == TR_EEXIST) {
        web_reply_problem(r, 409, "Conflict", "not claimable: %s", why);
    } else if (rc) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
    } else {
        struct db *db;
        struct flow_read rd;
        if (db_pool_acquire(f->pool, &db, &err) == 0) {
            rc = flow_read_load(db, id, &rd, &err);
            db_pool_release(f->pool, db);
        }
        if (rc == 0)
            reply_json(r, 200, flow_read_json(&rd, now));
        else
            web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
    }
}

static void read_release(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    struct flow_read rd;
    struct db *db;
    if (!need_reader(r) || load_visible(f, r, &rd, &db) < 0)
        return;
    db_pool_release(f->pool, db);
    const struct web_principal *p = web_principal_of(r);
    if (!web_is_admin(r) && !(p && p->role == WEB_ROLE_READER && strcmp(p->reader, rd.assignee) == 0)) {
        web_reply_problem(r, 403, "Forbidden", "only the assignee or an administrator releases");
        return;
    }
    json_t *body = body_json(r, false);
    if (!body)
        return;
    const char *reason = json_string_value(json_object_get(body, "reason"));
    struct tr_error err = TR_ERROR_INIT;
    int rc = flow_release(f, rd.id, actor_of(r), reason, flow_now_ms(), &err);
    json_decref(body);
    if (rc == TR_EEXIST)
        web_reply_problem(r, 409, "Conflict", "the read is %s, not assigned or claimed",
                          flow_state_names[rd.state]);
    else if (rc)
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
    else
        reply_json(r, 200, json_pack("{s:I,s:s}", "id", (json_int_t)rd.id, "state", "pool"));
}

static void read_reassign(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    if (!need_admin(r))
        return;
    int64_t id;
    if (!parse_id(web_param(r, 0), &id)) {
        web_reply_problem(r, 404, "Not Found", "no such read");
        return;
    }
    json_t *body = body_json(r, true);
    if (!body)
        return;
    const char *reader = json_string_value(json_object_get(body, "reader"));
    if (!reader || !*reader) {
        json_decref(body);
        struct flow_invalid bad = {"reader", "the reader to assign the read to"};
        reply_invalid(r, &bad);
        return;
    }
    char why[300] = "";
    struct tr_error err = TR_ERROR_INIT;
    int rc = flow_reassign(f, id, reader, actor_of(r), flow_now_ms(), why, sizeof(why), &err);
    json_t *answer = json_pack("{s:I,s:s,s:s}", "id", (json_int_t)id, "state", "assigned",
                               "assignee", reader);
    if (rc == TR_ENOTFOUND)
        web_reply_problem(r, 404, "Not Found", "no such read");
    else if (rc == TR_EDENIED)
        web_reply_problem(r, 403, "Forbidden", "%s may not read this study: %s", reader, why);
    else if (rc == TR_EEXIST)
        web_reply_problem(r, 409, "Conflict", "%s", why);
    else if (rc)
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
    if (rc)
        json_decref(answer);
    else
        reply_json(r, 200, answer);
    json_decref(body); /* `reader` points into it */
}

/* POST /reads/{id}/open and /activity: the assignee works on it (opened clock, keeps the
 * claim alive). */
static void read_activity(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    struct flow_read rd;
    struct db *db;
    if (!need_reader(r) || load_visible(f, r, &rd, &db) < 0)
        return;
    const struct web_principal *p = web_principal_of(r);
    if (p && !(p->role == WEB_ROLE_READER && strcmp(p->reader, rd.assignee) == 0) &&
        p->role != WEB_ROLE_ADMIN) {
        db_pool_release(f->pool, db);
        web_reply_problem(r, 403, "Forbidden", "only the assignee works on a read");
        return;
    }
    if (rd.state != ST_CLAIMED && rd.state != ST_ASSIGNED) {
        db_pool_release(f->pool, db);
        web_reply_problem(r, 409, "Conflict", "the read is %s", flow_state_names[rd.state]);
        return;
    }
    bool open = strstr(web_path(r), "/open") != NULL;
    int64_t now = flow_now_ms();
    struct db_stmt *st;
    struct tr_error err = TR_ERROR_INIT;
    int rc = db_prepare(db, "UPDATE flow_reads SET last_activity_at = $2, opened_at = CASE WHEN "
                            "$3 = 1 THEN COALESCE(opened_at, $2) ELSE opened_at END WHERE id = $1",
                        &st, &err);
    if (rc == 0) {
        db_bind_int64(st, 1, rd.id);
        db_bind_int64(st, 2, now);
        db_bind_int64(st, 3, open ? 1 : 0);
        rc = db_step(st, &err);
        db_reset(st);
    }
    if (rc >= 0 && open && !rd.opened_at)
        flow_read_history(db, rd.id, "opened", actor_of(r), NULL, now, NULL);
    db_pool_release(f->pool, db);
    if (rc < 0)
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
    else
        web_reply(r, 204, NULL, "", 0);
}

/* POST /reads/{id}/ai-findings {"source":..., "finding":..., "priority":"STAT"}: an external
 * AI result; a higher priority raises the read's and brings its due time forward. */
static void read_ai(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    if (!web_is_admin(r) &&
        !(web_principal_of(r) && web_principal_of(r)->role == WEB_ROLE_SERVICE)) {
        web_reply_problem(r, 403, "Forbidden", "AI results come from a service account");
        return;
    }
    struct flow_read rd;
    struct db *db;
    if (load_visible(f, r, &rd, &db) < 0)
        return;
    json_t *body = body_json(r, true);
    if (!body) {
        db_pool_release(f->pool, db);
        return;
    }
    const char *source = json_string_value(json_object_get(body, "source"));
    const char *finding = json_string_value(json_object_get(body, "finding"));
    const char *prio = json_string_value(json_object_get(body, "priority"));
    int p = prio ? flow_priority_parse(prio) : -1;
    struct flow_invalid bad = {{0}};
    if (!source || !*source || strlen(source) > 64)
        bad = (struct flow_invalid){"source", "the AI product that found it (1-64 characters)"};
    else if (!finding || !*finding)
        bad = (struct flow_invalid){"finding", "what was found"};
    else if (prio && p < 0)
        bad = (struct flow_invalid){"priority", "STAT, URGENT or ROUTINE"};
    if (bad.field[0]) {
        json_decref(body);
        db_pool_release(f->pool, db);
        reply_invalid(r, &bad);
        return;
    }
    int64_t now = flow_now_ms();
    struct tr_error err = TR_ERROR_INIT;
    char *text = json_dumps(body, JSON_COMPACT | JSON_SORT_KEYS);
    struct db_stmt *st;
    int rc = db_begin(db, &err);
    if (rc == 0 && (rc = db_prepare(db, "INSERT INTO flow_ai_findings (read_id, at, source, doc) "
                                        "VALUES ($1, $2, $3, $4)",
                                    &st, &err)) == 0) {
        db_bind_int64(st, 1, rd.id);
        db_bind_int64(st, 2, now);
        db_bind_text(st, 3, source);
        db_bind_text(st, 4, text);
        rc = db_step(st, &err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    bool raised = false;
    if (rc == 0 && p >= 0 && p < rd.priority && rd.state < ST_PRELIMINARY) {
        /* The same clock as at arrival (covered hours included), for the new priority. */
        struct flow_catalog *c = flow_catalog_get(f, NULL);
        const struct flow_contract *k = c ? flow_catalog_contract(c, rd.site) : NULL;
        const struct flow_site *site = c ? flow_catalog_site(c, rd.site) : NULL;
        int64_t due = flow_due_time(f->cfg.default_sla, k, site, p, rd.received_at);
        flow_catalog_put(c);
        char why_src[64];
        snprintf(why_src, sizeof(why_src), "ai: %.56s", source);
        if ((rc = db_prepare(db, "UPDATE flow_reads SET priority = $2, priority_source = $3, "
                                 "due_at = CASE WHEN due_at > $4 THEN $4 ELSE due_at END, "
                                 "alerted_at = NULL WHERE id = $1",
                             &st, &err)) == 0) {
            db_bind_int64(st, 1, rd.id);
            db_bind_int64(st, 2, p);
            db_bind_text(st, 3, why_src);
            db_bind_int64(st, 4, due);
            rc = db_step(st, &err);
            db_reset(st);
            rc = rc < 0 ? rc : 0;
            raised = rc == 0;
        }
    }
    if (rc == 0) {
        json_t *d = json_pack("{s:s,s:s,s:b}", "source", source, "finding", finding,
                              "priority_raised", raised);
        rc = flow_read_history(db, rd.id, "ai_finding", source, d, now, &err);
        json_decref(d);
    }
    if (rc == 0)
        rc = db_commit(db, &err);
    else
        db_rollback(db);
    free(text);
    struct flow_read after;
    bool have = rc == 0 && flow_read_load(db, rd.id, &after, NULL) == 0;
    db_pool_release(f->pool, db);
    json_decref(body);
    if (rc)
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
    else if (have)
        reply_json(r, 201, flow_read_json(&after, now));
    else
        web_reply(r, 201, "application/json", "{}", 2);
}

/* ---- worklist ----------------------------------------------------------------------------- */

static void worklist(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    char buf[FLOW_ID_MAX];
    const char *reader_id = acting_reader(r, NULL, buf, sizeof(buf));
    if (!reader_id) {
        web_reply_problem(r, web_is_admin(r) ? 400 : 403, web_is_admin(r) ? "Bad Request" : "Forbidden",
                          "the worklist is a reader's: ?reader=ID");
        return;
    }
    struct tr_error err = TR_ERROR_INIT;
    struct flow_catalog *c = flow_catalog_get(f, &err);
    const struct flow_reader *reader = c ? flow_catalog_reader(c, reader_id) : NULL;
    if (!reader) {
        flow_catalog_put(c);
        web_reply_problem(r, 404, "Not Found", "no such reader");
        return;
    }
    struct db *db;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        flow_catalog_put(c);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    int64_t now = flow_now_ms();
    struct flow_load load = {0};
    struct db_stmt *st;
    if (db_prepare(db, "SELECT COUNT(*) FROM flow_reads WHERE assignee = $1 AND state IN (1, 2)",
                   &st, NULL) == 0) {
        db_bind_text(st, 1, reader_id);
        if (db_step(st, NULL) == 1)
            load.open = (int)db_column_int64(st, 0);
        db_reset(st);
    }
    flow_load_prepare(reader, now, &load);
    json_t *items = json_array();
    /* Mine (assigned or claimed: all of them), and the pool reads I may claim (the 200 due
     * first among the 2,000 due first); merged by due time. Two queries, so that a long pool
     * never pushes a reader's own reads off the list. */
    enum { MINE_MAX = 1000, POOL_SCAN = 2000, POOL_MAX = 200 };
    struct flow_read *mine = tr_calloc(MINE_MAX + POOL_MAX, sizeof(*mine));
    struct flow_read *pool = mine ? mine + MINE_MAX : NULL;
    size_t nmine = 0, npool = 0;
    int rc = mine ? 0 : tr_error_set(&err, TR_ENOMEM, "out of memory");
    if (rc == 0 && (rc = db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE "
                                        "assignee = $1 AND state IN (1, 2) ORDER BY due_at, id "
                                        "LIMIT 1000",
                                    &st, &err)) == 0) {
        db_bind_text(st, 1, reader_id);
        while (nmine < MINE_MAX && db_step(st, &err) == 1)
            flow_read_from_row(st, &mine[nmine++]);
        db_reset(st);
    }
    if (rc == 0 && (rc = db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE "
                                        "state = 0 ORDER BY due_at, id LIMIT 2000",
                                    &st, &err)) == 0) {
        for (int scanned = 0; npool < POOL_MAX && scanned < POOL_SCAN && db_step(st, &err) == 1;
             scanned++) {
            flow_read_from_row(st, &pool[npool]);
            const struct flow_site *site = flow_catalog_site(c, pool[npool].site);
            if (site && flow_judge(c, reader, site, &pool[npool], &load, now, true, NULL, 0) ==
                            V_ELIGIBLE)
                npool++;
        }
        db_reset(st);
    }
    for (size_t i = 0, k = 0; rc == 0 && (i < nmine || k < npool);) {
        bool take_mine = k == npool || (i < nmine && (mine[i].due_at < pool[k].due_at ||
                                                      (mine[i].due_at == pool[k].due_at &&
                                                       mine[i].id < pool[k].id)));
        const struct flow_read *rd = take_mine ? &mine[i++] : &pool[k++];
        json_t *j = flow_read_json(rd, now);
        json_object_set_new(j, "claimable",
                            json_boolean(rd->state == ST_POOL || rd->state == ST_ASSIGNED));
        json_array_append_new(items, j);
    }
    tr_free(mine);
    db_pool_release(f->pool, db);
    json_t *answer = json_pack("{s:s,s:b,s:i,s:i,s:o}", "reader", reader_id, "available",
                               load.available, "open_reads", load.open, "max_open",
                               reader->max_open, "items", items);
    flow_catalog_put(c);
    if (err.code) {
        json_decref(answer);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    reply_json(r, 200, answer);
}

/* ---- metrics ------------------------------------------------------------------------------ */

static void metrics(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    /* Every site's volumes and every reader's load: administrators and monitoring (service
     * accounts). */
    const struct web_principal *p = web_principal_of(r);
    if (!web_is_admin(r) && p->role != WEB_ROLE_SERVICE) {
        web_reply_problem(r, 403, "Forbidden", "metrics are for administrators and monitoring");
        return;
    }
    struct tr_buf b;
    tr_buf_init(&b, 64u << 20);
    struct tr_error err = TR_ERROR_INIT;
    if (flow_metrics(f, &b, &err) < 0) {
        tr_buf_release(&b);
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    size_t len;
    char *text = tr_buf_detach(&b, &len);
    web_reply_owned(r, 200, "text/plain; version=0.0.4; charset=utf-8", text ? text : tr_strdup(""),
                    len);
}

/* ---- registration ------------------------------------------------------------------------- */

/* The web application's aggregates (analytics), at the end of this file. */
static int register_analytics(struct flow *f, struct web_server *s, struct tr_error *err);

int flow_register_api(struct flow *f, struct web_server *s, struct tr_error *err)
{
    struct doc_route *docs = tr_calloc(3, sizeof(*docs));
    if (!docs || web_server_own(s, docs, tr_free) < 0) {
        tr_free(docs);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    for (int k = 0; k < 3; k++)
        docs[k] = (struct doc_route){f, (enum doc_kind)k};
    const struct web_route routes[] = {
        {"GET", "/api/v1/sites", docs_collection, NULL, 0, &docs[DOC_SITE]},
        {"POST", "/api/v1/sites", docs_collection, NULL, 0, &docs[DOC_SITE]},
        {"GET", "/api/v1/sites/{}", docs_item, NULL, 0, &docs[DOC_SITE]},
        {"PUT", "/api/v1/sites/{}", docs_item, NULL, 0, &docs[DOC_SITE]},
        {"DELETE", "/api/v1/sites/{}", docs_item, NULL, 0, &docs[DOC_SITE]},
        {"GET", "/api/v1/readers", docs_collection, NULL, 0, &docs[DOC_READER]},
        {"POST", "/api/v1/readers", docs_collection, NULL, 0, &docs[DOC_READER]},
        {"GET", "/api/v1/readers/{}", docs_item, NULL, 0, &docs[DOC_READER]},
        {"PUT", "/api/v1/readers/{}", docs_item, NULL, 0, &docs[DOC_READER]},
        {"DELETE", "/api/v1/readers/{}", docs_item, NULL, 0, &docs[DOC_READER]},
        {"POST", "/api/v1/readers/{}/status", reader_status, NULL, 0, f},
        {"GET", "/api/v1/contracts", docs_collection, NULL, 0, &docs[DOC_CONTRACT]},
        {"POST", "/api/v1/contracts", docs_collection, NULL, 0, &docs[DOC_CONTRACT]},
        {"GET", "/api/v1/contracts/{}", docs_item, NULL, 0, &docs[DOC_CONTRACT]},
        {"PUT", "/api/v1/contracts/{}", docs_item, NULL, 0, &docs[DOC_CONTRACT]},
        {"DELETE", "/api/v1/contracts/{}", docs_item, NULL, 0, &docs[DOC_CONTRACT]},
        {"GET", "/api/v1/priority-rules", rules, NULL, 0, f},
        {"POST", "/api/v1/priority-rules", rules, NULL, 0, f},
        {"DELETE", "/api/v1/priority-rules/{}", rule_delete, NULL, 0, f},
        {"GET", "/api/v1/reads", reads_list, NULL, 0, f},
        {"GET", "/api/v1/reads/{}", read_get, NULL, 0, f},
        {"GET", "/api/v1/reads/{}/routing", read_routing, NULL, 0, f},
        {"POST", "/api/v1/reads/{}/claim", read_claim, NULL, 0, f},
        {"POST", "/api/v1/reads/{}/release", read_release, NULL, 0, f},
        {"POST", "/api/v1/reads/{}/reassign", read_reassign, NULL, 0, f},
        {"POST", "/api/v1/reads/{}/open", read_activity, NULL, 0, f},
        {"POST", "/api/v1/reads/{}/activity", read_activity, NULL, 0, f},
        {"POST", "/api/v1/reads/{}/ai-findings", read_ai, NULL, 0, f},
        {"GET", "/api/v1/worklist", worklist, NULL, 0, f},
        {"GET", "/metrics", metrics, NULL, 0, f},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(routes); i++) {
        if (web_server_route(s, &routes[i]) < 0)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    return register_analytics(f, s, err);
}

/* ---- analytics (the web application's charts) --------------------------------------------- */

/*
 * GET /api/v1/analytics?from=&to=&bucket=hour|day&site=  (docs/api.md, "Analytics")
 *
 * Turnaround (study received to final report) p50/p90 by priority, site and modality; SLA
 * compliance (final at or before the due time) overall, by priority and by site, with the open
 * reads past due now; volumes (reads received) per hour or day by modality; reader productivity
 * (final reports, RVUs, per active hour). Computed from flow_reads at request time, so every
 * node of a cluster answers alike. Administrators and service accounts see every site (or the
 * one named); a site's users their own site, without the readers' numbers; others 403.
 */

#define AN_MAX_ROWS      1000000 /* rows read per request; more sets "truncated" */
#define AN_MAX_GROUPS    500     /* distinct sites, modalities or readers; the rest are "other" */
#define AN_MAX_SPAN_DAYS 366
#define AN_MAX_BUCKETS   2000
#define AN_HOUR_MS       3600000LL
#define AN_DAY_MS        86400000LL

struct an_group {
    char key[FLOW_ID_MAX];
    int64_t *values; /* turnaround ms, or (readers) the hours they signed in */
    size_t n, cap;
    int64_t met, breached, reads, mrvu;
    int64_t *counts; /* volumes per bucket (modalities) */
};

struct an_groups {
    struct an_group *items;
    size_t n, cap;
};

static void an_groups_release(struct an_groups *g)
{
    for (size_t i = 0; i < g->n; i++) {
        tr_free(g->items[i].values);
        tr_free(g->items[i].counts);
    }
    tr_free(g->items);
    g->items = NULL;
    g->n = g->cap = 0;
}

/* The group named `key` (made on first use; past AN_MAX_GROUPS, "other"). NULL: no memory. */
static struct an_group *an_group(struct an_groups *g, const char *key, size_t nbuckets)
{
    if (!*key)
        key = "unknown";
    for (size_t i = 0; i < g->n; i++) {
        if (strcmp(g->items[i].key, key) == 0)
            return &g->items[i];
    }
    if (g->n >= AN_MAX_GROUPS - 1 && strcmp(key, "other") != 0)
        return an_group(g, "other", nbuckets);
    if (g->n == g->cap) {
        size_t ncap = g->cap ? g->cap * 2 : 8;
        struct an_group *p = tr_reallocarray(g->items, ncap, sizeof(*p));
        if (!p)
            return NULL;
        g->items = p;
        g->cap = ncap;
    }
    struct an_group *e = &g->items[g->n];
    memset(e, 0, sizeof(*e));
    snprintf(e->key, sizeof(e->key), "%s", key);
    if (nbuckets && !(e->counts = tr_calloc(nbuckets, sizeof(int64_t))))
        return NULL;
    g->n++;
    return e;
}

static bool an_push(struct an_group *e, int64_t v)
{
    if (e->n == e->cap) {
        size_t ncap = e->cap ? e->cap * 2 : 16;
        int64_t *p = tr_reallocarray(e->values, ncap, sizeof(*p));
        if (!p)
            return false;
        e->values = p;
        e->cap = ncap;
    }
    e->values[e->n++] = v;
    return true;
}

static int an_cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted values, in minutes (one decimal). */
static json_t *an_percentile(const int64_t *v, size_t n, int pct)
{
    if (!n)
        return json_null();
    size_t rank = (size_t)((pct * n + 99) / 100);
    int64_t ms = v[rank ? rank - 1 : 0];
    return json_real((double)((ms + 3000) / 6000) / 10.0);
}

static json_t *an_ratio(int64_t part, int64_t whole)
{
    return whole ? json_real((double)(part * 10000 / whole) / 10000.0) : json_null();
}

static json_t *an_turnaround_json(struct an_groups *g)
{
    json_t *list = json_array();
    for (size_t i = 0; i < g->n; i++) {
        struct an_group *e = &g->items[i];
        if (e->n)
            qsort(e->values, e->n, sizeof(int64_t), an_cmp64);
        json_array_append_new(list, json_pack("{s:s,s:I,s:o,s:o}", "key", e->key, "reads",
                                              (json_int_t)e->n, "p50_minutes",
                                              an_percentile(e->values, e->n, 50), "p90_minutes",
                                              an_percentile(e->values, e->n, 90)));
    }
    return list;
}

static json_t *an_sla_json(const struct an_groups *g)
{
    json_t *list = json_array();
    for (size_t i = 0; i < g->n; i++) {
        const struct an_group *e = &g->items[i];
        json_array_append_new(list,
                              json_pack("{s:s,s:I,s:I,s:o}", "key", e->key, "met",
                                        (json_int_t)e->met, "breached", (json_int_t)e->breached,
                                        "compliance", an_ratio(e->met, e->met + e->breached)));
    }
    return list;
}

/* "2026-11-22" (midnight UTC) or "2026-11-22T10:30:00Z" -> ms; -1 when malformed. */
static int64_t an_parse_time(const char *s)
{
    int y, mo, d, h = 0, mi = 0, sec = 0, n = 0;
    size_t len = strlen(s);
    if (len == 10) {
        if (sscanf(s, "%4d-%2d-%2d%n", &y, &mo, &d, &n) != 3 || n != 10)
            return -1;
    } else if (len == 20) {
        if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &y, &mo, &d, &h, &mi, &sec, &n) != 6 || n != 20)
            return -1;
    } else {
        return -1;
    }
    if (y < 1970 || y > 9999 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 59)
        return -1;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    struct tm back;
    gmtime_r(&t, &back);
    if (back.tm_mday != d) /* 2026-02-30 */
        return -1;
    return (int64_t)t * 1000;
}

static void an_invalid(struct web_request *r, const char *field, const char *why)
{
    struct flow_invalid bad;
    snprintf(bad.field, sizeof(bad.field), "%s", field);
    snprintf(bad.why, sizeof(bad.why), "%s", why);
    reply_invalid(r, &bad);
}

static void analytics(void *ctx, struct web_request *r)
{
    struct flow *f = ctx;
    const struct web_principal *p = web_principal_of(r);
    bool everything = web_is_admin(r) || p->role == WEB_ROLE_SERVICE;
    if (!everything && p->role != WEB_ROLE_SITE) {
        web_reply_problem(r, 403, "Forbidden", "analytics are for administrators and sites");
        return;
    }
    int64_t now = flow_now_ms();
    const char *from_q = web_query(r, "from"), *to_q = web_query(r, "to"),
               *bucket_q = web_query(r, "bucket"), *site = web_query(r, "site");
    int64_t to = to_q ? an_parse_time(to_q) : now;
    int64_t from = from_q ? an_parse_time(from_q) : to - 7 * AN_DAY_MS;
    if (to < 0) {
        an_invalid(r, "to", "a date (2026-11-22) or UTC time (2026-11-22T10:30:00Z)");
        return;
    }
    if (from < 0) {
        an_invalid(r, "from", "a date (2026-11-22) or UTC time (2026-11-22T10:30:00Z)");
        return;
    }
    if (from >= to) {
        an_invalid(r, "from", "from must be before to");
        return;
    }
    if (to - from > AN_MAX_SPAN_DAYS * AN_DAY_MS) {
        an_invalid(r, "from", "at most 366 days at a time");
        return;
    }
    int64_t bucket_ms = bucket_q ? 0 : to - from <= 2 * AN_DAY_MS ? AN_HOUR_MS : AN_DAY_MS;
    if (bucket_q && strcmp(bucket_q, "hour") == 0)
        bucket_ms = AN_HOUR_MS;
    else if (bucket_q && strcmp(bucket_q, "day") == 0)
        bucket_ms = AN_DAY_MS;
    else if (bucket_q) {
        an_invalid(r, "bucket", "bucket is hour or day");
        return;
    }
    int64_t first = from / bucket_ms * bucket_ms;
    size_t nbuckets = (size_t)((to - 1 - first) / bucket_ms + 1);
    if (nbuckets > AN_MAX_BUCKETS) {
        an_invalid(r, "bucket", "too many buckets: choose day, or a shorter period");
        return;
    }
    if (!everything)
        site = p->site; /* a site's users see their own site only */
    else if (site && (!*site || strlen(site) >= FLOW_ID_MAX)) {
        an_invalid(r, "site", "a site id");
        return;
    }
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(f->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    struct an_groups by_prio = {0}, by_site = {0}, by_mod = {0}, volume = {0}, readers = {0};
    int64_t met = 0, breached = 0, received = 0, open = 0, open_overdue = 0, rows = 0;
    bool truncated = false, nomem = false;
    for (int i = 0; i < PRIO_COUNT && !nomem; i++)
        nomem = !an_group(&by_prio, flow_priority_names[i], 0);
    struct db_stmt *st = NULL;
    int rc = db_prepare(db,
                        "SELECT priority, site, modality, assignee, mrvu, state, received_at, "
                        "final_at, due_at FROM flow_reads WHERE ($1 = '' OR site = $1) AND "
                        "((received_at >= $2 AND received_at < $3) OR (final_at >= $2 AND "
                        "final_at < $3) OR state < 4) LIMIT $4",
                        &st, &err);
    bool prepared = rc == 0;
    if (prepared) {
        db_bind_text(st, 1, site ? site : "");
        db_bind_int64(st, 2, from);
        db_bind_int64(st, 3, to);
        db_bind_int64(st, 4, AN_MAX_ROWS + 1);
    }
    int step = 0;
    while (prepared && !nomem && (step = db_step(st, &err)) == 1) {
        if (++rows > AN_MAX_ROWS) {
            truncated = true;
            break;
        }
        int64_t prio = db_column_int64(st, 0), mrvu = db_column_int64(st, 4),
                state = db_column_int64(st, 5), rec = db_column_int64(st, 6),
                fin = db_column_is_null(st, 7) ? 0 : db_column_int64(st, 7),
                due = db_column_int64(st, 8);
        char modality[17];
        snprintf(modality, sizeof(modality), "%s", db_column_text(st, 2));
        modality[strcspn(modality, "\\")] = '\0'; /* "CT\SR": the first */
        const char *site_id = db_column_text(st, 1);
        if (state < ST_FINAL) {
            open++;
            open_overdue += due < now;
        }
        if (rec >= from && rec < to) {
            received++;
            struct an_group *v = an_group(&volume, modality, nbuckets);
            if (!v) {
                nomem = true;
                break;
            }
            v->counts[(rec - first) / bucket_ms]++;
        }
        if (state != ST_FINAL || fin < from || fin >= to)
            continue;
        bool in_time = fin <= due;
        met += in_time;
        breached += !in_time;
        struct an_group *g[3] = {
            an_group(&by_prio, flow_priority_names[prio >= 0 && prio < PRIO_COUNT ? prio : 2], 0),
            an_group(&by_site, site_id, 0), an_group(&by_mod, modality, 0)};
        struct an_group *rd = everything ? an_group(&readers, db_column_text(st, 3), 0) : NULL;
        for (int i = 0; i < 3 && !nomem; i++) {
            nomem = !g[i] || !an_push(g[i], fin - rec);
            if (!nomem) {
                g[i]->met += in_time;
                g[i]->breached += !in_time;
            }
        }
        if (everything && !nomem) {
            nomem = !rd || !an_push(rd, fin / AN_HOUR_MS);
            if (!nomem) {
                rd->reads++;
                rd->mrvu += mrvu;
            }
        }
    }
    if (prepared)
        db_reset(st);
    if (step < 0)
        rc = step;
    db_pool_release(f->pool, db);
    if (rc < 0 || nomem) {
        an_groups_release(&by_prio);
        an_groups_release(&by_site);
        an_groups_release(&by_mod);
        an_groups_release(&volume);
        an_groups_release(&readers);
        if (nomem)
            web_reply_problem(r, 503, "Service Unavailable", "out of memory");
        else
            web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    json_t *answer = json_object();
    json_object_set_new(answer, "from", flow_iso_json(from));
    json_object_set_new(answer, "to", flow_iso_json(to));
    json_object_set_new(answer, "bucket", json_string(bucket_ms == AN_HOUR_MS ? "hour" : "day"));
    json_object_set_new(answer, "site", site ? json_string(site) : json_null());
    json_object_set_new(answer, "generated_at", flow_iso_json(now));
    json_object_set_new(answer, "truncated", json_boolean(truncated));
    json_object_set_new(answer, "turnaround",
                        json_pack("{s:s,s:o,s:o,s:o}", "measure", "study received to final report",
                                  "by_priority", an_turnaround_json(&by_prio), "by_site",
                                  an_turnaround_json(&by_site), "by_modality",
                                  an_turnaround_json(&by_mod)));
    json_object_set_new(answer, "sla",
                        json_pack("{s:I,s:I,s:o,s:I,s:I,s:o,s:o}", "met", (json_int_t)met,
                                  "breached", (json_int_t)breached, "compliance",
                                  an_ratio(met, met + breached), "open", (json_int_t)open,
                                  "open_overdue", (json_int_t)open_overdue, "by_priority",
                                  an_sla_json(&by_prio), "by_site", an_sla_json(&by_site)));
    json_t *stamps = json_array(), *series = json_array();
    for (size_t b = 0; b < nbuckets; b++)
        json_array_append_new(stamps, flow_iso_json(first + (int64_t)b * bucket_ms));
    for (size_t i = 0; i < volume.n; i++) {
        json_t *counts = json_array();
        for (size_t b = 0; b < nbuckets; b++)
            json_array_append_new(counts, json_integer(volume.items[i].counts[b]));
        json_array_append_new(series,
                              json_pack("{s:s,s:o}", "key", volume.items[i].key, "counts", counts));
    }
    json_object_set_new(answer, "volume",
                        json_pack("{s:I,s:o,s:o}", "received", (json_int_t)received, "buckets",
                                  stamps, "by_modality", series));
    if (everything) {
        json_t *list = json_array();
        for (size_t i = 0; i < readers.n; i++) {
            struct an_group *e = &readers.items[i];
            /* Active hours: the distinct clock hours in which the reader signed a final. */
            if (e->n)
                qsort(e->values, e->n, sizeof(int64_t), an_cmp64);
            int64_t hours = 0;
            for (size_t k = 0; k < e->n; k++)
                hours += k == 0 || e->values[k] != e->values[k - 1];
            double rvu = (double)e->mrvu / 1000.0;
            json_array_append_new(
                list, json_pack("{s:s,s:I,s:f,s:I,s:f,s:f}", "reader", e->key, "reads",
                                (json_int_t)e->reads, "rvu", rvu, "active_hours", (json_int_t)hours,
                                "reads_per_hour", hours ? (double)e->reads / (double)hours : 0.0,
                                "rvu_per_hour", hours ? rvu / (double)hours : 0.0));
        }
        json_object_set_new(answer, "readers", list);
    }
    an_groups_release(&by_prio);
    an_groups_release(&by_site);
    an_groups_release(&by_mod);
    an_groups_release(&volume);
    an_groups_release(&readers);
    reply_json(r, 200, answer);
}

static int register_analytics(struct flow *f, struct web_server *s, struct tr_error *err)
{
    const struct web_route route = {"GET", "/api/v1/analytics", analytics, NULL, 0, f};
    if (web_server_route(s, &route) < 0)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    return 0;
}
