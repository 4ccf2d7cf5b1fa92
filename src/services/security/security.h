/*
 * security.h - accounts, sessions, API keys, roles, the authentication filter for the HTTP
 * server, DIMSE user identity, and the audit log (issue: privacy and security).
 *
 * Accounts: users with argon2id password hashes (libargon2), a role (admin, site_user, reader,
 * auditor, service) and, for site users and readers, the site or reader they are. Lockout after
 * repeated failures. The first start creates `admin` with TELERAD_ADMIN_PASSWORD or a generated
 * password written to DATA/admin-password (mode 0600).
 *
 * Sessions: a random token in a Secure (over HTTPS), HttpOnly, SameSite=Strict cookie; only its
 * SHA-256 is stored. State-changing requests authenticated by the cookie must carry the
 * session's CSRF token in X-CSRF-Token. API keys ("trk_<id>_<secret>") as Bearer tokens, the
 * secret hashed at rest.
 *
 * Audit: every access to patient data and every administrative change is an entry of an
 * append-only log in the database, each entry holding the SHA-256 of the one before;
 * sec_audit_verify() finds an edited or deleted entry.
 *
 * Exported names start with sec_.
 */
#ifndef SEC_SECURITY_H
#define SEC_SECURITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "error.h"
#include "http.h"
#include "principal.h"

struct sec_config {
    const char *db_url;          /* the archive's database */
    const char *data_dir;        /* where admin-password is written */
    bool auth;                   /* require authentication (default true) */
    bool https;                  /* cookies get the Secure attribute */
    unsigned session_ttl;        /* seconds (default 12 h) */
    unsigned lockout_failures;   /* failures before a lockout (5) */
    unsigned lockout_seconds;    /* (900) */
    const char *jwt_key_file;    /* PEM public key for OIDC JWTs (RS256/ES256), or NULL */
    const char *jwt_issuer;      /* required "iss", or NULL */
    const char *jwt_audience;    /* required "aud", or NULL */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
};

void sec_config_init(struct sec_config *c);

struct sec;

int sec_open(const struct sec_config *cfg, struct sec **out, struct tr_error *err);
void sec_close(struct sec *s);

/* The HTTP filter (web_config.filter) and completion hook (web_config.on_complete). */
int sec_http_filter(void *sec, struct web_request *r);
void sec_http_complete(void *sec, struct web_request *r, unsigned status);
/* /api/v1/auth/..., /api/v1/users, /api/v1/api-keys, /api/v1/audit. */
int sec_register_api(struct sec *s, struct web_server *w, struct tr_error *err);

/* Check a password (DIMSE user identity, login). On success fills *p. TR_EDENIED otherwise
 * (also while locked out); failures count towards the lockout. */
int sec_check_password(struct sec *s, const char *user, const char *password, const char *peer,
                       struct web_principal *p, struct tr_error *err);
/* Check an OIDC JWT (DIMSE user identity type 5, Bearer tokens) against the configured key:
 * RS256/384/512 or ES256/384/512 only (never "none" or HMAC), "exp" required and in the
 * future, "nbf" if present not ahead, "iss" and "aud" as configured; the account is
 * "preferred_username", else "sub", and must exist and be enabled. TR_EDENIED otherwise. */
int sec_check_jwt(struct sec *s, const char *token, struct web_principal *p,
                  struct tr_error *err);

/* Create or replace a user (administration, tests, bootstrap). role: "admin", "site_user",
 * "reader", "auditor", "service". */
int sec_user_put(struct sec *s, const char *user, const char *password, const char *role,
                 const char *site, const char *reader, struct tr_error *err);

/* The pseudonymization key of a site (32 bytes; made on first use; never leaves the server):
 * what a reader outside the site's region sees is mapped with it (DESIGN.md invariant 3). */
int sec_site_key(struct sec *s, const char *site, uint8_t key[32], struct tr_error *err);

/* ---- audit -------------------------------------------------------------------------------- */

struct sec_audit_event {
    const char *actor;       /* user name, AE title, "system" */
    const char *role;
    const char *peer;        /* address */
    const char *action;      /* "query", "retrieve", "view", "store", "report", "export",
                                "login", "admin", "denied" ... */
    const char *outcome;     /* "success", "denied", "failure" */
    const char *object_type; /* "study", "read", "user", "site" ... */
    const char *object_id;
    const char *site;
    const char *detail;      /* free text, no PHI */
};

/* Append an entry (queued; written within a fraction of a second, hash-chained). */
void sec_audit(struct sec *s, const struct sec_audit_event *e);
/* Write what is queued now. */
int sec_audit_flush(struct sec *s, struct tr_error *err);

/* Walk the chain of the log in `db_url` up to its head: 0 when intact (*entries counted),
 * TR_EFORMAT with the first bad entry's sequence number in *bad_seq and a message otherwise
 * (an edited entry, a missing one, the last ones deleted, rows added past the head). Safe
 * while a server appends: entries written meanwhile are left for the next walk. */
int sec_audit_verify(const char *db_url, int64_t *entries, int64_t *bad_seq,
                     struct tr_error *err);
/* Print entries as RFC 5424 syslog lines carrying DICOM audit messages (PS3.15 A.5). */
int sec_audit_export(const char *db_url, int64_t since_seq, FILE *out, struct tr_error *err);

#endif
