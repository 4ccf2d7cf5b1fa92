/*
 * principal.h - who is making a request, as the authentication filter found it (accounts,
 * sessions and API keys are the security service's; the services only read this).
 *
 * No principal on a request means authentication is not configured for that server (tests,
 * the embedded demo on loopback): handlers then act with administrator rights. With accounts
 * configured the filter refuses requests without a principal before any handler runs.
 */
#ifndef WEB_PRINCIPAL_H
#define WEB_PRINCIPAL_H

#include <stdbool.h>
#include <string.h>

#include "http.h"

enum web_role {
    WEB_ROLE_ADMIN = 1,  /* everything */
    WEB_ROLE_READER,     /* a radiologist: their worklist, reads, reports */
    WEB_ROLE_SITE,       /* a hospital's user: that site's studies, reports, acknowledgements */
    WEB_ROLE_AUDITOR,    /* reads the audit log, nothing with patient data */
    WEB_ROLE_SERVICE,    /* a machine client (API key): AI results, monitoring */
};

struct web_principal {
    char user[65];
    enum web_role role;
    char reader[65];     /* WEB_ROLE_READER: the reader id the account belongs to */
    char site[65];       /* WEB_ROLE_SITE: the site id */
    char region[32];     /* where the user is (for cross-border policy), "" unknown */
    bool denied;         /* a handler answered 404 to hide something out of scope: the
                            audit log records the request as denied (web_note_denied) */
};

static inline const struct web_principal *web_principal_of(const struct web_request *r)
{
    return (const struct web_principal *)web_user(r);
}

/* A handler that hides an out-of-scope object behind a 404 (so that its existence is not
 * confirmed) marks the request so that the audit log still records a denial. */
static inline void web_note_denied(struct web_request *r)
{
    struct web_principal *p = (struct web_principal *)web_user(r);
    if (p)
        p->denied = true;
}

/* Administrator rights: an admin, or no authentication configured. */
static inline bool web_is_admin(const struct web_request *r)
{
    const struct web_principal *p = web_principal_of(r);
    return !p || p->role == WEB_ROLE_ADMIN;
}

#endif
