/*
 * security_api.c - /api/v1/auth (login, logout, me, password), /api/v1/users, /api/v1/api-keys,
 * /api/v1/audit (docs/api.md).
 */
#include "common.h"
#include "sec_int.h"

#include <inttypes.h>
#include <jansson.h>

static void reply_json(struct web_request *r, unsigned status, json_t *j)
{
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text) {
        web_reply_problem(r, 500, "Internal Server Error", "cannot encode the answer");
        return;
    }
    web_reply(r, status, "application/json", text, strlen(text));
    free(text);
}

static json_t *body_json(struct web_request *r)
{
    size_t len;
    const char *body = web_body(r, &len);
    json_error_t e;
    json_t *j = body && len ? json_loadb(body, len, 0, &e) : NULL;
    if (!j || !json_is_object(j)) {
        json_decref(j);
        web_reply_problem(r, 400, "Bad Request", "a JSON object is required");
        return NULL;
    }
    return j;
}

static bool role_is(struct web_request *r, enum web_role role)
{
    const struct web_principal *p = web_principal_of(r);
    return !p ? role == WEB_ROLE_ADMIN : p->role == role;
}

static json_t *principal_json(const struct web_principal *p)
{
    return json_pack("{s:s,s:s,s:s?,s:s?}", "user", p->user, "role", sec_role_name(p->role),
                     "site", p->site[0] ? p->site : NULL, "reader",
                     p->reader[0] ? p->reader : NULL);
}

/* POST /api/v1/auth/login {"username","password"} -> session cookie + CSRF token. */
static void login(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    json_t *body = body_json(r);
    if (!body)
        return;
    const char *user = json_string_value(json_object_get(body, "username"));
    const char *password = json_string_value(json_object_get(body, "password"));
    struct web_principal p;
    struct tr_error err = TR_ERROR_INIT;
    int rc = user && password ? sec_check_password(s, user, password, web_peer(r), &p, &err)
                              : tr_error_set(&err, TR_EDENIED, "username and password");
    json_decref(body);
    if (rc) {
        web_reply_problem(r, rc == TR_EDENIED ? 401 : 503,
                          rc == TR_EDENIED ? "Unauthorized" : "Service Unavailable", "%s",
                          err.message);
        return;
    }
    char token[64], csrf[48];
    if (sec_session_create(s, &p, token, sizeof(token), csrf, sizeof(csrf), &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    char cookie[256];
    const char *secure = s->cfg.https ? "; Secure" : "";
    snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; HttpOnly; SameSite=Strict; Max-Age=%u%s",
             SEC_COOKIE, token, s->cfg.session_ttl, secure);
    web_header_add(r, "Set-Cookie", cookie);
    /* Readable by the page, which sends it back in X-CSRF-Token. */
    snprintf(cookie, sizeof(cookie), "%s=%s; Path=/; SameSite=Strict; Max-Age=%u%s",
             SEC_CSRF_COOKIE, csrf, s->cfg.session_ttl, secure);
    web_header_add(r, "Set-Cookie", cookie);
    explicit_bzero(token, sizeof(token));
    json_t *j = principal_json(&p);
    json_object_set_new(j, "csrf", json_string(csrf));
    reply_json(r, 200, j);
}

static void logout(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    const char *cookies = web_header(r, "Cookie");
    const char *at = cookies ? strstr(cookies, SEC_COOKIE "=") : NULL;
    if (at) {
        char token[128];
        const char *v = at + strlen(SEC_COOKIE) + 1, *end = strchr(v, ';');
        size_t n = end ? (size_t)(end - v) : strlen(v);
        if (n < sizeof(token)) {
            memcpy(token, v, n);
            token[n] = '\0';
            sec_session_delete(s, token);
        }
    }
    web_header_add(r, "Set-Cookie", SEC_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    web_header_add(r, "Set-Cookie", SEC_CSRF_COOKIE "=; Path=/; SameSite=Strict; Max-Age=0");
    web_reply(r, 204, NULL, "", 0);
}

static void me(void *ctx, struct web_request *r)
{
    (void)ctx;
    const struct web_principal *p = web_principal_of(r);
    if (!p) {
        reply_json(r, 200, json_pack("{s:s,s:s,s:b}", "user", "anonymous", "role", "admin",
                                     "authentication", 0));
        return;
    }
    reply_json(r, 200, principal_json(p));
}

/* POST /api/v1/auth/password {"current_password","new_password"}: an account changes its own
 * password, proving the current one (a wrong one counts towards the lockout). Every session of
 * the account ends: log in again. */
static void change_password(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    const struct web_principal *p = web_principal_of(r);
    if (!p) {
        web_reply_problem(r, 400, "Bad Request", "there are no accounts (authentication is off)");
        return;
    }
    json_t *body = body_json(r);
    if (!body)
        return;
    const char *current = json_string_value(json_object_get(body, "current_password"));
    const char *next = json_string_value(json_object_get(body, "new_password"));
    struct web_principal check;
    struct tr_error err = TR_ERROR_INIT;
    int rc = current && next ? sec_check_password(s, p->user, current, web_peer(r), &check, &err)
                             : tr_error_set(&err, TR_EINVAL, "current_password and new_password");
    if (rc == 0)
        rc = sec_user_put(s, p->user, next, sec_role_name(check.role), check.site, check.reader,
                          &err);
    json_decref(body);
    if (rc == TR_EDENIED) {
        web_reply_problem(r, 403, "Forbidden", "%s", err.message);
        return;
    }
    if (rc) {
        web_reply_problem(r, rc == TR_EINVAL ? 422 : 503,
                          rc == TR_EINVAL ? "Unprocessable Content" : "Service Unavailable", "%s",
                          err.message);
        return;
    }
    struct db *db;
    struct db_stmt *st;
    if (db_pool_acquire(s->pool, &db, NULL) == 0) {
        if (db_prepare(db, "DELETE FROM sec_sessions WHERE name = $1", &st, NULL) == 0) {
            db_bind_text(st, 1, p->user);
            db_step(st, NULL);
            db_reset(st);
        }
        db_pool_release(s->pool, db);
    }
    web_header_add(r, "Set-Cookie", SEC_COOKIE "=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    web_header_add(r, "Set-Cookie", SEC_CSRF_COOKIE "=; Path=/; SameSite=Strict; Max-Age=0");
    web_reply(r, 204, NULL, "", 0);
}

/* ---- users -------------------------------------------------------------------------------- */

static void users(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    if (!role_is(r, WEB_ROLE_ADMIN)) {
        web_reply_problem(r, 403, "Forbidden", "this needs an administrator");
        return;
    }
    if (strcmp(web_method(r), "POST") == 0 || strcmp(web_method(r), "PUT") == 0) {
        json_t *body = body_json(r);
        if (!body)
            return;
        const char *name = web_param(r, 0);
        if (!name)
            name = json_string_value(json_object_get(body, "username"));
        const char *password = json_string_value(json_object_get(body, "password"));
        const char *role = json_string_value(json_object_get(body, "role"));
        const char *site = json_string_value(json_object_get(body, "site"));
        const char *reader = json_string_value(json_object_get(body, "reader"));
        struct tr_error err = TR_ERROR_INIT;
        int rc = sec_user_put(s, name ? name : "", password, role, site, reader, &err);
        if (rc) {
            json_t *j = json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title",
                                  "Unprocessable Content", "status", 422, "detail", err.message);
            json_decref(body);
            char *text = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            web_reply(r, rc == TR_EINVAL ? 422 : 503, "application/problem+json", text,
                      strlen(text));
            free(text);
            return;
        }
        json_t *answer = json_pack("{s:s,s:s,s:s?,s:s?}", "username", name, "role", role, "site",
                                   site, "reader", reader);
        json_decref(body);
        reply_json(r, web_param(r, 0) ? 200 : 201, answer);
        return;
    }
    struct db *db;
    struct tr_error err = TR_ERROR_INIT;
    if (db_pool_acquire(s->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    struct db_stmt *st;
    if (strcmp(web_method(r), "DELETE") == 0) {
        bool done = false;
        if (db_prepare(db, "DELETE FROM sec_users WHERE name = $1 AND name <> 'admin'", &st,
                       &err) == 0) {
            db_bind_text(st, 1, web_param(r, 0));
            done = db_step(st, &err) >= 0 && db_changes(st) == 1;
            db_reset(st);
        }
        db_pool_release(s->pool, db);
        if (done)
            web_reply(r, 204, NULL, "", 0);
        else
            web_reply_problem(r, 404, "Not Found", "no such user (admin cannot be deleted)");
        return;
    }
    json_t *list = json_array();
    if (db_prepare(db, "SELECT name, role, site, reader, disabled, locked_until FROM sec_users "
                       "ORDER BY name",
                   &st, &err) == 0) {
        while (db_step(st, &err) == 1)
            json_array_append_new(
                list, json_pack("{s:s,s:s,s:s,s:s,s:b,s:b}", "username", db_column_text(st, 0),
                                "role", db_column_text(st, 1), "site", db_column_text(st, 2),
                                "reader", db_column_text(st, 3), "disabled",
                                db_column_int64(st, 4) != 0, "locked",
                                db_column_int64(st, 5) > sec_now_ms()));
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    reply_json(r, 200, list);
}

/* ---- API keys ----------------------------------------------------------------------------- */

static void api_keys(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    const struct web_principal *p = web_principal_of(r);
    bool admin = role_is(r, WEB_ROLE_ADMIN);
    struct tr_error err = TR_ERROR_INIT;
    if (strcmp(web_method(r), "POST") == 0) {
        json_t *body = body_json(r);
        if (!body)
            return;
        const char *user = json_string_value(json_object_get(body, "user"));
        const char *self = p ? p->user : "admin";
        if (user && !admin && strcmp(user, self) != 0) {
            json_decref(body);
            web_reply_problem(r, 403, "Forbidden", "keys for another account need an "
                                                   "administrator");
            return;
        }
        if (!user)
            user = self;
        const char *label = json_string_value(json_object_get(body, "label"));
        char key[128], id[40];
        int rc = sec_api_key_create(s, user, label, key, sizeof(key), id, sizeof(id), &err);
        if (rc) {
            json_decref(body);
            web_reply_problem(r, 422, "Unprocessable Content", "cannot create the key: %s",
                              err.message);
            return;
        }
        json_t *j = json_pack("{s:s,s:s,s:s,s:s}", "id", id, "user", user, "label",
                              label ? label : "", "key", key);
        explicit_bzero(key, sizeof(key));
        json_decref(body);
        reply_json(r, 201, j);
        return;
    }
    struct db *db;
    if (db_pool_acquire(s->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    struct db_stmt *st;
    const char *who = p ? p->user : "admin";
    if (strcmp(web_method(r), "DELETE") == 0) {
        bool done = false;
        if (db_prepare(db, "UPDATE sec_api_keys SET revoked_at = $3 WHERE id = $1 AND "
                           "revoked_at IS NULL AND ($2 = '' OR name = $2)",
                       &st, &err) == 0) {
            db_bind_text(st, 1, web_param(r, 0));
            db_bind_text(st, 2, admin ? "" : who);
            db_bind_int64(st, 3, sec_now_ms());
            done = db_step(st, &err) >= 0 && db_changes(st) == 1;
            db_reset(st);
        }
        /* Someone else's key: not found for this account, a denial for the audit log. */
        if (!done && !admin &&
            db_prepare(db, "SELECT 1 FROM sec_api_keys WHERE id = $1", &st, NULL) == 0) {
            db_bind_text(st, 1, web_param(r, 0));
            if (db_step(st, NULL) == 1)
                web_note_denied(r);
            db_reset(st);
        }
        db_pool_release(s->pool, db);
        if (done)
            web_reply(r, 204, NULL, "", 0);
        else
            web_reply_problem(r, 404, "Not Found", "no such key");
        return;
    }
    json_t *list = json_array();
    if (db_prepare(db, "SELECT id, name, label, created_at, last_used, revoked_at FROM "
                       "sec_api_keys WHERE $1 = '' OR name = $1 ORDER BY created_at",
                   &st, &err) == 0) {
        db_bind_text(st, 1, admin ? "" : who);
        while (db_step(st, &err) == 1)
            json_array_append_new(
                list, json_pack("{s:s,s:s,s:s,s:I,s:b}", "id", db_column_text(st, 0), "user",
                                db_column_text(st, 1), "label", db_column_text(st, 2),
                                "created_at", (json_int_t)db_column_int64(st, 3), "revoked",
                                !db_column_is_null(st, 5)));
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    reply_json(r, 200, list);
}

/* ---- audit -------------------------------------------------------------------------------- */

static void audit_list(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    if (!role_is(r, WEB_ROLE_ADMIN) && !role_is(r, WEB_ROLE_AUDITOR)) {
        web_reply_problem(r, 403, "Forbidden", "the audit log is for administrators and auditors");
        return;
    }
    struct tr_error err = TR_ERROR_INIT;
    sec_audit_flush(s, NULL);
    if (strstr(web_path(r), "/verify")) {
        int64_t n, bad;
        int rc = sec_audit_verify(db_pool_url(s->pool), &n, &bad, &err);
        reply_json(r, 200, json_pack("{s:b,s:I,s:I,s:s}", "intact", rc == 0, "entries",
                                     (json_int_t)n, "first_bad_entry", (json_int_t)bad,
                                     "detail", rc ? err.message : ""));
        return;
    }
    const char *since = web_query(r, "since"), *lim = web_query(r, "limit");
    long long from = since ? strtoll(since, NULL, 10) : 0;
    long limit = lim ? strtol(lim, NULL, 10) : 500;
    if (limit < 1 || limit > 10000)
        limit = 500;
    struct db *db;
    if (db_pool_acquire(s->pool, &db, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "%s", err.message);
        return;
    }
    json_t *list = json_array();
    struct db_stmt *st;
    if (db_prepare(db, "SELECT seq, at, actor, role, peer, action, outcome, object_type, "
                       "object_id, site, detail, hash FROM sec_audit WHERE seq > $1 ORDER BY seq "
                       "LIMIT $2",
                   &st, &err) == 0) {
        db_bind_int64(st, 1, from);
        db_bind_int64(st, 2, limit);
        while (db_step(st, &err) == 1) {
            json_t *e = json_pack("{s:I,s:I,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s}", "seq",
                                  (json_int_t)db_column_int64(st, 0), "at",
                                  (json_int_t)db_column_int64(st, 1), "actor",
                                  db_column_text(st, 2), "role", db_column_text(st, 3), "peer",
                                  db_column_text(st, 4), "action", db_column_text(st, 5),
                                  "outcome", db_column_text(st, 6), "object_type",
                                  db_column_text(st, 7), "object_id", db_column_text(st, 8),
                                  "site", db_column_text(st, 9), "detail",
                                  db_column_text(st, 10), "hash", db_column_text(st, 11));
            json_array_append_new(list, e);
        }
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    reply_json(r, 200, list);
}

int sec_register_api(struct sec *s, struct web_server *w, struct tr_error *err)
{
    const struct web_route routes[] = {
        {"POST", "/api/v1/auth/login", login, NULL, 16384, s},
        {"POST", "/api/v1/auth/logout", logout, NULL, 0, s},
        {"GET", "/api/v1/auth/me", me, NULL, 0, s},
        {"POST", "/api/v1/auth/password", change_password, NULL, 16384, s},
        {"GET", "/api/v1/users", users, NULL, 0, s},
        {"POST", "/api/v1/users", users, NULL, 0, s},
        {"PUT", "/api/v1/users/{}", users, NULL, 0, s},
        {"DELETE", "/api/v1/users/{}", users, NULL, 0, s},
        {"GET", "/api/v1/api-keys", api_keys, NULL, 0, s},
        {"POST", "/api/v1/api-keys", api_keys, NULL, 0, s},
        {"DELETE", "/api/v1/api-keys/{}", api_keys, NULL, 0, s},
        {"GET", "/api/v1/audit", audit_list, NULL, 0, s},
        {"GET", "/api/v1/audit/verify", audit_list, NULL, 0, s},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(routes); i++) {
        if (web_server_route(w, &routes[i]) < 0)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    return 0;
}
