/*
 * keys.c - the per-site pseudonymization keys of the cross-border policy (DESIGN.md invariant
 * 3): 32 random bytes per site, made on first use, kept in the database (schema component
 * "pseudonym_keys") and in memory; never sent to a client. A reader outside the site's region
 * sees UIDs, names, IDs and dates mapped with the key; the origin recomputes the mapping to
 * find its data again, so no table of pseudonyms exists.
 */
#include "common.h"
#include "sec_int.h"

#include <stdio.h>

static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE sec_site_keys (site TEXT PRIMARY KEY, key_hex TEXT NOT NULL, created_at "
    "{BIGINT} NOT NULL)",
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

int sec_site_key(struct sec *s, const char *site, uint8_t key[32], struct tr_error *err)
{
    pthread_mutex_lock(&cache_lock);
    for (size_t i = 0; i < s->nkeys; i++) {
        if (strcmp(s->keys[i].site, site) == 0) {
            memcpy(key, s->keys[i].key, 32);
            pthread_mutex_unlock(&cache_lock);
            return 0;
        }
    }
    pthread_mutex_unlock(&cache_lock);
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    if (!s->keys_migrated) {
        if ((rc = db_migrate(db, "pseudonym_keys", migrations, TR_ARRAY_SIZE(migrations), err))) {
            db_pool_release(s->pool, db);
            return rc;
        }
        s->keys_migrated = true;
    }
    /* Made once: a new key is inserted unless another node was first; then read back. */
    uint8_t fresh[32];
    char hex[65];
    if (sec_random(fresh, sizeof(fresh)) < 0) {
        db_pool_release(s->pool, db);
        return tr_error_set(err, TR_EIO, "no random bytes");
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", fresh[i]);
    explicit_bzero(fresh, sizeof(fresh));
    struct db_stmt *st;
    rc = db_prepare(db, "INSERT INTO sec_site_keys (site, key_hex, created_at) VALUES ($1, $2, "
                        "$3) ON CONFLICT (site) DO NOTHING",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, site);
        db_bind_text(st, 2, hex);
        db_bind_int64(st, 3, sec_now_ms());
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    explicit_bzero(hex, sizeof(hex));
    if (rc == 0 && (rc = db_prepare(db, "SELECT key_hex FROM sec_site_keys WHERE site = $1", &st,
                                    err)) == 0) {
        db_bind_text(st, 1, site);
        rc = db_step(st, err);
        const char *h = rc == 1 ? db_column_text(st, 0) : "";
        if (rc == 1 && strlen(h) == 64) {
            for (int i = 0; i < 32; i++)
                key[i] = (uint8_t)(hex_value(h[2 * i]) << 4 | hex_value(h[2 * i + 1]));
            rc = 0;
        } else if (rc >= 0) {
            rc = tr_error_set(err, TR_EFORMAT, "no pseudonymization key for site %s", site);
        }
        db_reset(st);
    }
    db_pool_release(s->pool, db);
    if (rc)
        return rc;
    pthread_mutex_lock(&cache_lock);
    if (s->nkeys < TR_ARRAY_SIZE(s->keys)) {
        snprintf(s->keys[s->nkeys].site, sizeof(s->keys[0].site), "%s", site);
        memcpy(s->keys[s->nkeys].key, key, 32);
        s->nkeys++;
    }
    pthread_mutex_unlock(&cache_lock);
    return 0;
}
