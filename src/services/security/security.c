/*
 * security.c - accounts, passwords, sessions, API keys, JWTs, and the HTTP filter.
 */
#include "common.h"
#include "sec_int.h"

#include <argon2.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <jwt.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* argon2id parameters: OWASP's minimum (19 MiB, 2 passes, 1 lane) - a login costs ~30 ms. */
#define ARGON_T 2
#define ARGON_M 19456
#define ARGON_P 1

static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE sec_users (name TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL, "
    "site TEXT NOT NULL DEFAULT '', reader TEXT NOT NULL DEFAULT '', region TEXT NOT NULL "
    "DEFAULT '', disabled INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0, "
    "locked_until {BIGINT} NOT NULL DEFAULT 0, created_at {BIGINT} NOT NULL, updated_at "
    "{BIGINT} NOT NULL);"
    "CREATE TABLE sec_sessions (token_hash TEXT PRIMARY KEY, name TEXT NOT NULL REFERENCES "
    "sec_users (name) ON DELETE CASCADE, csrf TEXT NOT NULL, created_at {BIGINT} NOT NULL, "
    "expires_at {BIGINT} NOT NULL);"
    "CREATE INDEX sec_sessions_expiry ON sec_sessions (expires_at);"
    "CREATE TABLE sec_api_keys (id TEXT PRIMARY KEY, secret_hash TEXT NOT NULL, name TEXT NOT "
    "NULL REFERENCES sec_users (name) ON DELETE CASCADE, label TEXT NOT NULL DEFAULT '', "
    "created_at {BIGINT} NOT NULL, last_used {BIGINT}, revoked_at {BIGINT});"
    "CREATE TABLE sec_audit (seq {BIGINT} PRIMARY KEY, at {BIGINT} NOT NULL, actor TEXT NOT "
    "NULL, role TEXT NOT NULL, peer TEXT NOT NULL, action TEXT NOT NULL, outcome TEXT NOT NULL, "
    "object_type TEXT NOT NULL, object_id TEXT NOT NULL, site TEXT NOT NULL, detail TEXT NOT "
    "NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);"
    "CREATE INDEX sec_audit_at ON sec_audit (at);"
    "CREATE TABLE sec_audit_head (id INTEGER PRIMARY KEY, seq {BIGINT} NOT NULL, hash TEXT NOT "
    "NULL);"
    "INSERT INTO sec_audit_head (id, seq, hash) VALUES (1, 0, "
    "'0000000000000000000000000000000000000000000000000000000000000000')",
};

void sec_config_init(struct sec_config *c)
{
    memset(c, 0, sizeof(*c));
    c->auth = true;
    c->session_ttl = 12 * 3600;
    c->lockout_failures = 5;
    c->lockout_seconds = 900;
}

void sec_log(struct sec *s, int level, const char *fmt, ...)
{
    if (!s->cfg.log)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->cfg.log(s->cfg.log_ctx, level, msg);
}

int64_t sec_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int sec_random(void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return TR_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

void sec_sha256_hex(const void *data, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(data, len, md, &n, EVP_sha256(), NULL);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

void sec_base64url(const uint8_t *data, size_t len, char *out, size_t size)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = (acc << 8) | data[i];
        bits += 8;
        while (bits >= 6 && n + 1 < size) {
            out[n++] = a[(acc >> (bits - 6)) & 63];
            bits -= 6;
        }
    }
    if (bits && n + 1 < size)
        out[n++] = a[(acc << (6 - bits)) & 63];
    out[n] = '\0';
}

const char *sec_role_name(enum web_role role)
{
    switch (role) {
    case WEB_ROLE_ADMIN: return "admin";
    case WEB_ROLE_READER: return "reader";
    case WEB_ROLE_SITE: return "site_user";
    case WEB_ROLE_AUDITOR: return "auditor";
    case WEB_ROLE_SERVICE: return "service";
    }
    return "none";
}

int sec_role_parse(const char *text, enum web_role *role)
{
    static const struct {
        const char *name;
        enum web_role role;
    } map[] = {{"admin", WEB_ROLE_ADMIN},     {"reader", WEB_ROLE_READER},
               {"site_user", WEB_ROLE_SITE},  {"auditor", WEB_ROLE_AUDITOR},
               {"service", WEB_ROLE_SERVICE}};
    for (size_t i = 0; text && i < TR_ARRAY_SIZE(map); i++) {
        if (strcmp(map[i].name, text) == 0) {
            *role = map[i].role;
            return 0;
        }
    }
    return TR_EINVAL;
}

/* ---- users -------------------------------------------------------------------------------- */

static bool valid_user_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64)
        return false;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') && !strchr("-_.@", c))
            return false;
    }
    return true;
}

int sec_user_put(struct sec *s, const char *user, const char *password, const char *role,
                 const char *site, const char *reader, struct tr_error *err)
{
    enum web_role r;
    if (!valid_user_name(user))
        return tr_error_set(err, TR_EINVAL, "a user name is 1-64 of a-z 0-9 - _ . @");
    if (sec_role_parse(role, &r) < 0)
        return tr_error_set(err, TR_EINVAL, "role is admin, site_user, reader, auditor or service");
    if (r == WEB_ROLE_SITE && (!site || !*site))
        return tr_error_set(err, TR_EINVAL, "a site user needs a site");
    if (r == WEB_ROLE_READER && (!reader || !*reader))
        return tr_error_set(err, TR_EINVAL, "a reader account needs a reader id");
    if (!password || strlen(password) < 12)
        return tr_error_set(err, TR_EINVAL, "a password has at least 12 characters");
    uint8_t salt[16];
    if (sec_random(salt, sizeof(salt)) < 0)
        return tr_error_set(err, TR_EIO, "no random bytes");
    char hash[160];
    if (argon2id_hash_encoded(ARGON_T, ARGON_M, ARGON_P, password, strlen(password), salt,
                              sizeof(salt), 32, hash, sizeof(hash)) != ARGON2_OK)
        return tr_error_set(err, TR_ENOMEM, "cannot hash the password");
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    int64_t now = sec_now_ms();
    rc = db_prepare(db, "INSERT INTO sec_users (name, hash, role, site, reader, created_at, "
                        "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (name) DO "
                        "UPDATE SET hash = $2, role = $3, site = $4, reader = $5, updated_at = $6, "
                        "failures = 0, locked_until = 0",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, user);
        db_bind_text(st, 2, hash);
        db_bind_text(st, 3, role);
        db_bind_text(st, 4, r == WEB_ROLE_SITE ? site : "");
        db_bind_text(st, 5, r == WEB_ROLE_READER ? reader : "");
        db_bind_int64(st, 6, now);
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    db_pool_release(s->pool, db);
    explicit_bzero(hash, sizeof(hash));
    return rc;
}

int sec_user_load(struct sec *s, struct db *db, const char *name, struct web_principal *p,
                  char *hash, size_t hash_size, bool *disabled, int64_t *locked_until,
                  struct tr_error *err)
{
    (void)s;
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT hash, role, site, reader, region, disabled, locked_until FROM "
                            "sec_users WHERE name = $1",
                        &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, name);
    rc = db_step(st, err);
    if (rc == 1) {
        memset(p, 0, sizeof(*p));
        snprintf(p->user, sizeof(p->user), "%s", name);
        if (hash)
            snprintf(hash, hash_size, "%s", db_column_text(st, 0));
        if (sec_role_parse(db_column_text(st, 1), &p->role) < 0)
            p->role = WEB_ROLE_SERVICE;
        snprintf(p->site, sizeof(p->site), "%s", db_column_text(st, 2));
        snprintf(p->reader, sizeof(p->reader), "%s", db_column_text(st, 3));
        snprintf(p->region, sizeof(p->region), "%s", db_column_text(st, 4));
        if (disabled)
            *disabled = db_column_int64(st, 5) != 0;
        if (locked_until)
            *locked_until = db_column_int64(st, 6);
    }
    db_reset(st);
    return rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
}

int sec_check_password(struct sec *s, const char *user, const char *password, const char *peer,
                       struct web_principal *p, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    char hash[160] = "";
    bool disabled = false;
    int64_t locked_until = 0, now = sec_now_ms();
    rc = sec_user_load(s, db, user ? user : "", p, hash, sizeof(hash), &disabled, &locked_until,
                       err);
    bool exists = rc == 0;
    if (rc && rc != TR_ENOTFOUND) {
        db_pool_release(s->pool, db);
        return rc;
    }
    bool ok = argon2id_verify(exists ? hash : s->dummy_hash, password ? password : "",
                              password ? strlen(password) : 0) == ARGON2_OK;
    explicit_bzero(hash, sizeof(hash));
    const char *why = NULL;
    if (!exists)
        why = "unknown user or wrong password";
    else if (disabled)
        why = "the account is disabled";
    else if (locked_until > now)
        why = "the account is locked after repeated failures; try again later";
    else if (!ok)
        why = "unknown user or wrong password";
    struct db_stmt *st;
    if (exists && !why) {
        if (db_prepare(db, "UPDATE sec_users SET failures = 0 WHERE name = $1", &st, NULL) == 0) {
            db_bind_text(st, 1, user);
            db_step(st, NULL);
            db_reset(st);
        }
    } else if (exists && !ok && locked_until <= now) {
        /* Count the failure; lock at the limit. */
        /* One assignment per column: PostgreSQL refuses a column assigned twice. */
        if (db_prepare(db, "UPDATE sec_users SET locked_until = CASE WHEN failures + 1 >= $2 "
                           "THEN $3 ELSE locked_until END, failures = CASE WHEN failures + 1 >= "
                           "$2 THEN 0 ELSE failures + 1 END WHERE name = $1",
                       &st, NULL) == 0) {
            db_bind_text(st, 1, user);
            db_bind_int64(st, 2, s->cfg.lockout_failures);
            db_bind_int64(st, 3, now + (int64_t)s->cfg.lockout_seconds * 1000);
            db_step(st, NULL);
            db_reset(st);
        }
    }
    db_pool_release(s->pool, db);
    struct sec_audit_event ev = {.actor = user ? user : "", .role = exists ? sec_role_name(p->role) : "",
                                 .peer = peer ? peer : "", .action = "login",
                                 .outcome = why ? "denied" : "success", .object_type = "user",
                                 .object_id = user ? user : "", .site = "",
                                 .detail = why ? why : ""};
    sec_audit(s, &ev);
    if (why)
        return tr_error_set(err, TR_EDENIED, "%s", why);
    return 0;
}

/* ---- sessions ----------------------------------------------------------------------------- */

int sec_session_create(struct sec *s, const struct web_principal *p, char *token,
                       size_t token_size, char *csrf, size_t csrf_size, struct tr_error *err)
{
    uint8_t raw[32], raw_csrf[24];
    if (sec_random(raw, sizeof(raw)) < 0 || sec_random(raw_csrf, sizeof(raw_csrf)) < 0)
        return tr_error_set(err, TR_EIO, "no random bytes");
    sec_base64url(raw, sizeof(raw), token, token_size);
    sec_base64url(raw_csrf, sizeof(raw_csrf), csrf, csrf_size);
    char hash[65];
    sec_sha256_hex(token, strlen(token), hash);
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    int64_t now = sec_now_ms();
    struct db_stmt *st;
    /* Expired sessions go on the way. */
    if (db_prepare(db, "DELETE FROM sec_sessions WHERE expires_at < $1", &st, NULL) == 0) {
        db_bind_int64(st, 1, now);
        db_step(st, NULL);
        db_reset(st);
    }
    rc = db_prepare(db, "INSERT INTO sec_sessions (token_hash, name, csrf, created_at, expires_at) "
                        "VALUES ($1, $2, $3, $4, $5)",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, hash);
        db_bind_text(st, 2, p->user);
        db_bind_text(st, 3, csrf);
        db_bind_int64(st, 4, now);
        db_bind_int64(st, 5, now + (int64_t)s->cfg.session_ttl * 1000);
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    db_pool_release(s->pool, db);
    return rc;
}

int sec_session_lookup(struct sec *s, const char *token, struct web_principal *p, char *csrf,
                       size_t csrf_size)
{
    char hash[65];
    sec_sha256_hex(token, strlen(token), hash);
    struct db *db;
    if (db_pool_acquire(s->pool, &db, NULL) < 0)
        return TR_EIO;
    struct db_stmt *st;
    char name[65] = "";
    int rc = db_prepare(db, "SELECT name, csrf FROM sec_sessions WHERE token_hash = $1 AND "
                            "expires_at > $2",
                        &st, NULL);
    if (rc == 0) {
        db_bind_text(st, 1, hash);
        db_bind_int64(st, 2, sec_now_ms());
        rc = db_step(st, NULL);
        if (rc == 1) {
            snprintf(name, sizeof(name), "%s", db_column_text(st, 0));
            snprintf(csrf, csrf_size, "%s", db_column_text(st, 1));
        }
        db_reset(st);
        rc = rc == 1 ? 0 : TR_ENOTFOUND;
    }
    bool disabled = false;
    if (rc == 0)
        rc = sec_user_load(s, db, name, p, NULL, 0, &disabled, NULL, NULL);
    db_pool_release(s->pool, db);
    return rc == 0 && !disabled ? 0 : TR_ENOTFOUND;
}

int sec_session_delete(struct sec *s, const char *token)
{
    char hash[65];
    sec_sha256_hex(token, strlen(token), hash);
    struct db *db;
    if (db_pool_acquire(s->pool, &db, NULL) < 0)
        return TR_EIO;
    struct db_stmt *st;
    if (db_prepare(db, "DELETE FROM sec_sessions WHERE token_hash = $1", &st, NULL) == 0) {
        db_bind_text(st, 1, hash);
        db_step(st, NULL);
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    return 0;
}

/* ---- API keys ----------------------------------------------------------------------------- */

int sec_api_key_create(struct sec *s, const char *user, const char *label, char *key,
                       size_t size, char *id, size_t id_size, struct tr_error *err)
{
    uint8_t raw_id[9], raw_secret[32];
    if (sec_random(raw_id, sizeof(raw_id)) < 0 || sec_random(raw_secret, sizeof(raw_secret)) < 0)
        return tr_error_set(err, TR_EIO, "no random bytes");
    char secret[64];
    sec_base64url(raw_id, sizeof(raw_id), id, id_size);
    /* The id is part of the key: keep it free of the separator. */
    for (char *c = id; *c; c++) {
        if (*c == '_')
            *c = 'x';
    }
    sec_base64url(raw_secret, sizeof(raw_secret), secret, sizeof(secret));
    snprintf(key, size, "trk_%s_%s", id, secret);
    char hash[65];
    sec_sha256_hex(secret, strlen(secret), hash);
    explicit_bzero(secret, sizeof(secret));
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db, "INSERT INTO sec_api_keys (id, secret_hash, name, label, created_at) "
                        "VALUES ($1, $2, $3, $4, $5)",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, id);
        db_bind_text(st, 2, hash);
        db_bind_text(st, 3, user);
        db_bind_text(st, 4, label ? label : "");
        db_bind_int64(st, 5, sec_now_ms());
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    db_pool_release(s->pool, db);
    return rc;
}

int sec_api_key_lookup(struct sec *s, const char *key, struct web_principal *p)
{
    if (strncmp(key, "trk_", 4) != 0)
        return TR_ENOTFOUND;
    const char *sep = strchr(key + 4, '_');
    if (!sep || sep - (key + 4) > 32)
        return TR_ENOTFOUND;
    char id[40];
    snprintf(id, sizeof(id), "%.*s", (int)(sep - (key + 4)), key + 4);
    char hash[65];
    sec_sha256_hex(sep + 1, strlen(sep + 1), hash);
    struct db *db;
    if (db_pool_acquire(s->pool, &db, NULL) < 0)
        return TR_EIO;
    struct db_stmt *st;
    char name[65] = "", stored[65] = "";
    int rc = db_prepare(db, "SELECT name, secret_hash FROM sec_api_keys WHERE id = $1 AND "
                            "revoked_at IS NULL",
                        &st, NULL);
    if (rc == 0) {
        db_bind_text(st, 1, id);
        rc = db_step(st, NULL) == 1 ? 0 : TR_ENOTFOUND;
        if (rc == 0) {
            snprintf(name, sizeof(name), "%s", db_column_text(st, 0));
            snprintf(stored, sizeof(stored), "%s", db_column_text(st, 1));
        }
        db_reset(st);
    }
    /* Constant-time comparison of the hashes. */
    if (rc == 0) {
        unsigned char diff = 0;
        for (size_t i = 0; i < 64; i++)
            diff |= (unsigned char)(stored[i] ^ hash[i]);
        rc = diff ? TR_ENOTFOUND : 0;
    }
    bool disabled = false;
    if (rc == 0)
        rc = sec_user_load(s, db, name, p, NULL, 0, &disabled, NULL, NULL);
    if (rc == 0 && db_prepare(db, "UPDATE sec_api_keys SET last_used = $2 WHERE id = $1", &st,
                              NULL) == 0) {
        db_bind_text(st, 1, id);
        db_bind_int64(st, 2, sec_now_ms());
        db_step(st, NULL);
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    return rc == 0 && !disabled ? 0 : TR_ENOTFOUND;
}

/* ---- JWT (OIDC) --------------------------------------------------------------------------- */

int sec_check_jwt(struct sec *s, const char *token, struct web_principal *p,
                  struct tr_error *err)
{
    if (!s->jwt_key)
        return tr_error_set(err, TR_EDENIED, "JWTs are not configured");
    jwt_t *jwt = NULL;
    if (jwt_decode(&jwt, token, (const unsigned char *)s->jwt_key, (int)s->jwt_key_len) != 0 ||
        !jwt)
        return tr_error_set(err, TR_EDENIED, "the token's signature does not verify");
    int rc = 0;
    jwt_alg_t alg = jwt_get_alg(jwt);
    if (alg != JWT_ALG_RS256 && alg != JWT_ALG_RS384 && alg != JWT_ALG_RS512 &&
        alg != JWT_ALG_ES256 && alg != JWT_ALG_ES384 && alg != JWT_ALG_ES512)
        rc = tr_error_set(err, TR_EDENIED, "the token's algorithm is not allowed");
    long exp = jwt_get_grant_int(jwt, "exp");
    if (rc == 0 && (exp <= 0 || (int64_t)exp * 1000 < sec_now_ms()))
        rc = tr_error_set(err, TR_EDENIED, "the token has expired or has no expiry");
    /* RFC 7519 4.1.5: not before (a minute of clock skew allowed). */
    long nbf = jwt_get_grant_int(jwt, "nbf");
    if (rc == 0 && nbf > 0 && (int64_t)nbf * 1000 > sec_now_ms() + 60000)
        rc = tr_error_set(err, TR_EDENIED, "the token is not valid yet");
    const char *iss = jwt_get_grant(jwt, "iss");
    if (rc == 0 && s->cfg.jwt_issuer && (!iss || strcmp(iss, s->cfg.jwt_issuer) != 0))
        rc = tr_error_set(err, TR_EDENIED, "the token's issuer is not trusted");
    if (rc == 0 && s->cfg.jwt_audience) {
        const char *aud = jwt_get_grant(jwt, "aud");
        bool ok = aud && strcmp(aud, s->cfg.jwt_audience) == 0;
        if (!ok) {
            char *all = jwt_get_grants_json(jwt, "aud");
            json_t *a = all ? json_loads(all, JSON_DECODE_ANY, NULL) : NULL;
            size_t i;
            json_t *v;
            json_array_foreach(a, i, v)
            {
                if (json_is_string(v) && strcmp(json_string_value(v), s->cfg.jwt_audience) == 0)
                    ok = true;
            }
            json_decref(a);
            free(all);
        }
        if (!ok)
            rc = tr_error_set(err, TR_EDENIED, "the token is not for this audience");
    }
    /* The account: preferred_username, else sub. */
    const char *name = jwt_get_grant(jwt, "preferred_username");
    if (!name)
        name = jwt_get_grant(jwt, "sub");
    if (rc == 0) {
        struct db *db;
        bool disabled = false;
        if (db_pool_acquire(s->pool, &db, err) < 0) {
            rc = TR_EIO;
        } else {
            if (!name || sec_user_load(s, db, name, p, NULL, 0, &disabled, NULL, NULL) < 0 ||
                disabled)
                rc = tr_error_set(err, TR_EDENIED, "the token names no active account");
            db_pool_release(s->pool, db);
        }
    }
    jwt_free(jwt);
    return rc;
}

/* ---- the HTTP filter ---------------------------------------------------------------------- */

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Paths that carry patient data or change things: authentication required. */
static bool protected_path(const char *path)
{
    if (starts(path, "/api/v1/auth/login"))
        return false;
    return starts(path, "/dicom-web") || starts(path, "/wado") || starts(path, "/api/") ||
           strcmp(path, "/metrics") == 0 || starts(path, "/fhir");
}

/* The value of cookie `name` in a Cookie header. */
static bool cookie_value(const char *header, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    for (const char *p = header; p && *p;) {
        while (*p == ' ' || *p == ';')
            p++;
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            const char *v = p + n + 1, *end = strchr(v, ';');
            size_t len = end ? (size_t)(end - v) : strlen(v);
            if (len >= size)
                return false;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
        p = strchr(p, ';');
    }
    return false;
}

static void free_principal(void *p)
{
    explicit_bzero(p, sizeof(struct web_principal));
    tr_free(p);
}

static bool unsafe_method(const char *m)
{
    return strcmp(m, "GET") && strcmp(m, "HEAD") && strcmp(m, "OPTIONS");
}

/* Compare secrets without telling by the time taken where they differ. */
static bool same_secret(const char *a, const char *b)
{
    size_t n = strlen(a);
    if (n != strlen(b))
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

int sec_http_filter(void *ctx, struct web_request *r)
{
    struct sec *s = ctx;
    const char *path = web_path(r);
    bool need = protected_path(path);
    if (!s->cfg.auth || !need)
        return 0; /* authentication off (loopback development: administrator rights), or a
                     public resource (the web application's files) */
    struct web_principal *p = tr_calloc(1, sizeof(*p));
    if (!p) {
        web_reply_problem(r, 503, "Service Unavailable", "out of memory");
        return 1;
    }
    bool found = false;
    const char *authz = web_header(r, "Authorization");
    if (authz && strncasecmp(authz, "Bearer ", 7) == 0) {
        const char *token = authz + 7;
        while (*token == ' ')
            token++;
        if (starts(token, "trk_"))
            found = sec_api_key_lookup(s, token, p) == 0;
        else
            found = sec_check_jwt(s, token, p, NULL) == 0;
        if (!found && need) {
            free_principal(p);
            web_header_add(r, "WWW-Authenticate", "Bearer error=\"invalid_token\"");
            web_reply_problem(r, 401, "Unauthorized", "the bearer token is not valid");
            return 1;
        }
    } else {
        const char *cookies = web_header(r, "Cookie");
        char token[128], csrf[64];
        if (cookies && cookie_value(cookies, SEC_COOKIE, token, sizeof(token)) &&
            sec_session_lookup(s, token, p, csrf, sizeof(csrf)) == 0) {
            found = true;
            /* Cookies ride along with any request the browser makes: a change must prove it
             * comes from our page. */
            const char *sent = web_header(r, "X-CSRF-Token");
            if (need && unsafe_method(web_method(r)) && !starts(path, "/api/v1/auth/logout") &&
                (!sent || !same_secret(sent, csrf))) {
                explicit_bzero(csrf, sizeof(csrf));
                web_set_user(r, p, free_principal); /* the audit log names who it was */
                web_reply_problem(r, 403, "Forbidden",
                                  "a change with a session needs its X-CSRF-Token header");
                return 1;
            }
        }
    }
    if (!found) {
        free_principal(p);
        if (!need)
            return 0;
        web_header_add(r, "WWW-Authenticate", "Bearer realm=\"telerad\"");
        web_reply_problem(r, 401, "Unauthorized", "log in (POST /api/v1/auth/login) or send an "
                                                  "API key as a Bearer token");
        return 1;
    }
    /* Auditors read the audit log, nothing with patient data. */
    if (need && p->role == WEB_ROLE_AUDITOR && !starts(path, "/api/v1/audit") &&
        !starts(path, "/api/v1/auth/")) {
        web_set_user(r, p, free_principal);
        web_reply_problem(r, 403, "Forbidden", "an auditor reads the audit log only");
        return 1;
    }
    web_set_user(r, p, free_principal);
    return 0;
}

/* What a request did, for the audit log. */
static const char *action_of(const char *method, const char *path)
{
    bool write = strcmp(method, "GET") && strcmp(method, "HEAD");
    if (starts(path, "/dicom-web") || starts(path, "/wado")) {
        if (write)
            return "store";
        if (strstr(path, "/rendered") || strstr(path, "/thumbnail") || strstr(path, "/frames"))
            return "view";
        if (strstr(path, "/metadata") || strstr(path, "/bulkdata") || starts(path, "/wado"))
            return "retrieve";
        const char *last = strrchr(path, '/');
        /* /studies, /series, /instances (and those under a study) are searches. */
        if (last && (strcmp(last, "/studies") == 0 || strcmp(last, "/series") == 0 ||
                     strcmp(last, "/instances") == 0))
            return "query";
        return "retrieve";
    }
    if (starts(path, "/api/v1/auth/"))
        return "session";
    return write ? "change" : "read";
}

void sec_http_complete(void *ctx, struct web_request *r, unsigned status)
{
    struct sec *s = ctx;
    const char *path = web_path(r);
    if (!protected_path(path) && status != 401 && status != 403)
        return;
    if (strcmp(path, "/metrics") == 0 && status < 400)
        return; /* scrapes are not patient data */
    if (starts(path, "/api/v1/auth/login"))
        return; /* audited by sec_check_password with the user named */
    const struct web_principal *p = web_principal_of(r);
    const char *action = action_of(web_method(r), path);
    char detail[64];
    snprintf(detail, sizeof(detail), "%s %u", web_method(r), status);
    /* A 404 that hides an object out of the principal's scope is a denial too. */
    bool denied = status == 401 || status == 403 || (p && p->denied);
    struct sec_audit_event ev = {
        .actor = p ? p->user : s->cfg.auth ? "unauthenticated" : "anonymous",
        .role = p ? sec_role_name(p->role) : "",
        .peer = web_peer(r),
        .action = action,
        .outcome = denied ? "denied" : status >= 400 ? "failure" : "success",
        .object_type = starts(path, "/dicom-web") || starts(path, "/wado") ? "dicomweb" : "api",
        .object_id = path,
        .site = p && p->role == WEB_ROLE_SITE ? p->site : "",
        .detail = detail,
    };
    /* Reads of the catalog and metrics without patient data still count: they are accesses
     * by a person; GETs of static files never reach here. */
    sec_audit(s, &ev);
}

/* ---- open / close ------------------------------------------------------------------------- */

static int bootstrap_admin(struct sec *s, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    int64_t users = 0;
    if ((rc = db_prepare(db, "SELECT COUNT(*) FROM sec_users", &st, err)) == 0) {
        if (db_step(st, err) == 1)
            users = db_column_int64(st, 0);
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    if (rc || users)
        return rc;
    const char *given = getenv("TELERAD_ADMIN_PASSWORD");
    char password[64];
    bool generated = !given || !*given;
    if (generated) {
        uint8_t raw[18];
        if (sec_random(raw, sizeof(raw)) < 0)
            return tr_error_set(err, TR_EIO, "no random bytes");
        sec_base64url(raw, sizeof(raw), password, sizeof(password));
    } else {
        snprintf(password, sizeof(password), "%s", given);
    }
    rc = sec_user_put(s, "admin", password, "admin", NULL, NULL, err);
    if (rc == 0 && generated) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/admin-password", s->cfg.data_dir ? s->cfg.data_dir : ".");
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd < 0) {
            rc = tr_error_set(err, TR_EIO, "cannot write %s: %s", path, strerror(errno));
        } else {
            fchmod(fd, 0600);
            size_t n = strlen(password);
            bool ok = write(fd, password, n) == (ssize_t)n && write(fd, "\n", 1) == 1;
            ok = fsync(fd) == 0 && ok;
            close(fd);
            if (!ok)
                rc = tr_error_set(err, TR_EIO, "cannot write %s", path);
            else
                sec_log(s, 2, "created user admin; its password is in %s (mode 0600)", path);
        }
    } else if (rc == 0) {
        sec_log(s, 2, "created user admin with the password from TELERAD_ADMIN_PASSWORD");
    }
    explicit_bzero(password, sizeof(password));
    return rc;
}

int sec_open(const struct sec_config *cfg, struct sec **out, struct tr_error *err)
{
    struct sec *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    s->cfg = *cfg;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    int rc = db_pool_open(cfg->db_url, &s->pool, err);
    struct db *db = NULL;
    if (rc == 0 && (rc = db_pool_acquire(s->pool, &db, err)) == 0) {
        rc = db_migrate(db, "security", migrations, TR_ARRAY_SIZE(migrations), err);
        db_pool_release(s->pool, db);
    }
    if (rc == 0 && cfg->jwt_key_file) {
        FILE *f = fopen(cfg->jwt_key_file, "rb");
        if (!f) {
            rc = tr_error_set(err, TR_EIO, "JWT key %s: %s", cfg->jwt_key_file, strerror(errno));
        } else {
            char buf[16384];
            size_t n = fread(buf, 1, sizeof(buf) - 1, f);
            fclose(f);
            buf[n] = '\0';
            s->jwt_key = tr_strdup(buf);
            s->jwt_key_len = n;
            if (!s->jwt_key || !strstr(buf, "PUBLIC KEY"))
                rc = tr_error_set(err, TR_EINVAL, "JWT key %s is not a PEM public key",
                                  cfg->jwt_key_file);
        }
    }
    if (rc == 0) {
        /* A hash to verify against when a user does not exist, so that timing does not tell. */
        uint8_t salt[16], pw[16];
        if (sec_random(salt, sizeof(salt)) < 0 || sec_random(pw, sizeof(pw)) < 0 ||
            argon2id_hash_encoded(ARGON_T, ARGON_M, ARGON_P, pw, sizeof(pw), salt, sizeof(salt),
                                  32, s->dummy_hash, sizeof(s->dummy_hash)) != ARGON2_OK)
            rc = tr_error_set(err, TR_EIO, "cannot prepare password hashing");
    }
    if (rc == 0)
        rc = sec_audit_start(s, err);
    if (rc == 0)
        rc = bootstrap_admin(s, err);
    if (rc) {
        sec_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void sec_close(struct sec *s)
{
    if (!s)
        return;
    sec_audit_stop(s);
    db_pool_close(s->pool);
    tr_free(s->jwt_key);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
    tr_free(s);
}
