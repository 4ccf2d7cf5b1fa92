/*
 * sec_int.h - private header of the security service (src/services/security).
 */
#ifndef SEC_INT_H
#define SEC_INT_H

#include <pthread.h>
#include <stdio.h>

#include "db.h"
#include "security.h"

#define SEC_COOKIE "telerad_session"
#define SEC_CSRF_COOKIE "telerad_csrf"

struct sec_queued {
    int64_t at;
    char *fields[9]; /* actor, role, peer, action, outcome, object_type, object_id, site, detail */
};

struct sec {
    struct sec_config cfg;
    struct db_pool *pool;
    char dummy_hash[160];
    /* pseudonymization keys (keys.c), cached */
    struct {
        char site[65];
        uint8_t key[32];
    } keys[256];
    size_t nkeys;
    bool keys_migrated;
    char *jwt_key;
    size_t jwt_key_len;
    /* audit queue and its writer */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct sec_queued *queue;
    size_t nqueue, cap;
    bool stopping;
    pthread_t writer;
    bool writer_started;
};

/* What a request carried, for its completion hook. */
struct sec_request_state {
    struct web_principal principal;
    bool session;     /* authenticated by cookie */
};

void sec_log(struct sec *s, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int64_t sec_now_ms(void);
/* Random bytes (getrandom). */
int sec_random(void *buf, size_t len);
/* Lower-case hex SHA-256 of bytes. */
void sec_sha256_hex(const void *data, size_t len, char out[65]);
/* base64url without padding. */
void sec_base64url(const uint8_t *data, size_t len, char *out, size_t size);
/* Role names. */
const char *sec_role_name(enum web_role role);
int sec_role_parse(const char *text, enum web_role *role);

/* Users, sessions, API keys. */
int sec_user_load(struct sec *s, struct db *db, const char *name, struct web_principal *p,
                  char *hash, size_t hash_size, bool *disabled, int64_t *locked_until,
                  struct tr_error *err);
int sec_session_create(struct sec *s, const struct web_principal *p, char *token,
                       size_t token_size, char *csrf, size_t csrf_size, struct tr_error *err);
int sec_session_lookup(struct sec *s, const char *token, struct web_principal *p, char *csrf,
                       size_t csrf_size);
int sec_session_delete(struct sec *s, const char *token);
int sec_api_key_create(struct sec *s, const char *user, const char *label, char *key,
                       size_t size, char *id, size_t id_size, struct tr_error *err);
int sec_api_key_lookup(struct sec *s, const char *key, struct web_principal *p);

/* The audit writer thread. */
int sec_audit_start(struct sec *s, struct tr_error *err);
void sec_audit_stop(struct sec *s);

#endif
