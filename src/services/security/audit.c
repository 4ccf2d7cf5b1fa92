/*
 * audit.c - the audit log: append-only, hash-chained (each entry holds the SHA-256 of the
 * entry before it, and table sec_audit_head the last entry's), written in batches by one
 * thread; verification; export as RFC 5424 syslog with DICOM audit messages (PS3.15 A.5).
 *
 * An entry's hash is SHA-256 over: the previous hash, then seq, at, actor, role, peer, action,
 * outcome, object type, object id, site and detail, each followed by a 0x1F separator.
 * Changing any byte of an entry breaks its hash; deleting one breaks the next entry's link;
 * deleting the last ones disagrees with the head.
 */
#include "common.h"
#include "sec_int.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_MS 200
#define QUEUE_MAX 100000

static void entry_hash(const char *prev, int64_t seq, int64_t at, const char *const f[9],
                       char out[65])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned char md[32];
    unsigned int n = 0;
    char nums[64];
    int len = snprintf(nums, sizeof(nums), "%" PRId64 "\x1f%" PRId64 "\x1f", seq, at);
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, prev, strlen(prev));
    EVP_DigestUpdate(c, "\x1f", 1);
    EVP_DigestUpdate(c, nums, (size_t)len);
    for (int i = 0; i < 9; i++) {
        EVP_DigestUpdate(c, f[i], strlen(f[i]));
        EVP_DigestUpdate(c, "\x1f", 1);
    }
    EVP_DigestFinal_ex(c, md, &n);
    EVP_MD_CTX_free(c);
    for (unsigned i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* Keep log fields clean: no control characters (a log must not be forged by a newline). */
static char *clean(const char *s, size_t max)
{
    if (!s)
        s = "";
    size_t n = strlen(s);
    if (n > max)
        n = max;
    char *out = tr_malloc(n + 1);
    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++)
        out[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7F ? ' ' : s[i];
    out[n] = '\0';
    return out;
}

void sec_audit(struct sec *s, const struct sec_audit_event *e)
{
    struct sec_queued q = {.at = sec_now_ms()};
    const char *f[9] = {e->actor, e->role, e->peer, e->action, e->outcome, e->object_type,
                        e->object_id, e->site, e->detail};
    for (int i = 0; i < 9; i++) {
        q.fields[i] = clean(f[i], i == 6 ? 512 : 256);
        if (!q.fields[i]) {
            for (int k = 0; k < i; k++)
                tr_free(q.fields[k]);
            sec_log(s, 0, "audit: out of memory, an entry is lost");
            return;
        }
    }
    pthread_mutex_lock(&s->lock);
    if (s->nqueue == s->cap && s->cap < QUEUE_MAX) {
        size_t cap = s->cap ? s->cap * 2 : 256;
        struct sec_queued *nq = tr_reallocarray(s->queue, cap, sizeof(*nq));
        if (nq) {
            s->queue = nq;
            s->cap = cap;
        }
    }
    if (s->nqueue < s->cap) {
        s->queue[s->nqueue++] = q;
        q.fields[0] = NULL;
    }
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    if (q.fields[0]) {
        sec_log(s, 0, "audit: the queue is full, an entry is lost");
        for (int k = 0; k < 9; k++)
            tr_free(q.fields[k]);
    }
}

static void queued_free(struct sec_queued *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < 9; k++)
            tr_free(q[i].fields[k]);
    }
    tr_free(q);
}

/* Append a batch in one transaction, chained to the head. */
static int write_batch(struct sec *s, struct sec_queued *q, size_t n, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(s->pool, &db, err);
    if (rc)
        return rc;
    if ((rc = db_begin(db, err))) {
        db_pool_release(s->pool, db);
        return rc;
    }
    struct db_stmt *st;
    int64_t seq = 0;
    char prev[65] = "";
    rc = db_prepare(db, "SELECT seq, hash FROM sec_audit_head WHERE id = 1 {FOR_UPDATE}", &st,
                    err);
    if (rc == 0) {
        rc = db_step(st, err);
        if (rc == 1) {
            seq = db_column_int64(st, 0);
            snprintf(prev, sizeof(prev), "%s", db_column_text(st, 1));
        }
        db_reset(st);
        rc = rc == 1 ? 0 : rc == 0 ? tr_error_set(err, TR_EFORMAT, "no audit head row") : rc;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char hash[65];
        seq++;
        entry_hash(prev, seq, q[i].at, (const char *const *)q[i].fields, hash);
        rc = db_prepare(db, "INSERT INTO sec_audit (seq, at, actor, role, peer, action, outcome, "
                            "object_type, object_id, site, detail, prev_hash, hash) VALUES ($1, "
                            "$2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                        &st, err);
        if (rc)
            break;
        db_bind_int64(st, 1, seq);
        db_bind_int64(st, 2, q[i].at);
        for (int k = 0; k < 9; k++)
            db_bind_text(st, 3 + k, q[i].fields[k]);
        db_bind_text(st, 12, prev);
        db_bind_text(st, 13, hash);
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
        memcpy(prev, hash, sizeof(prev));
    }
    if (rc == 0 && (rc = db_prepare(db, "UPDATE sec_audit_head SET seq = $1, hash = $2 WHERE id = 1",
                                    &st, err)) == 0) {
        db_bind_int64(st, 1, seq);
        db_bind_text(st, 2, prev);
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    if (rc == 0)
        rc = db_commit(db, err);
    else
        db_rollback(db);
    db_pool_release(s->pool, db);
    return rc;
}

int sec_audit_flush(struct sec *s, struct tr_error *err)
{
    pthread_mutex_lock(&s->lock);
    struct sec_queued *q = s->queue;
    size_t n = s->nqueue;
    s->queue = NULL;
    s->nqueue = s->cap = 0;
    pthread_mutex_unlock(&s->lock);
    if (!n) {
        tr_free(q);
        return 0;
    }
    int rc = write_batch(s, q, n, err);
    if (rc) {
        /* Keep them for the next try (in front of newer ones). */
        pthread_mutex_lock(&s->lock);
        struct sec_queued *merged = tr_reallocarray(NULL, n + s->nqueue + 1, sizeof(*merged));
        if (merged) {
            memcpy(merged, q, n * sizeof(*q));
            if (s->nqueue)
                memcpy(merged + n, s->queue, s->nqueue * sizeof(*q));
            tr_free(s->queue);
            tr_free(q);
            s->queue = merged;
            s->nqueue += n;
            s->cap = s->nqueue + 1;
            q = NULL;
        }
        pthread_mutex_unlock(&s->lock);
        if (q)
            queued_free(q, n);
        return rc;
    }
    queued_free(q, n);
    return 0;
}

static void *writer(void *arg)
{
    struct sec *s = arg;
    pthread_mutex_lock(&s->lock);
    while (!s->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += FLUSH_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->wake, &s->lock, &until);
        if (!s->nqueue)
            continue;
        pthread_mutex_unlock(&s->lock);
        struct tr_error err = TR_ERROR_INIT;
        if (sec_audit_flush(s, &err) < 0) {
            sec_log(s, 0, "audit: cannot write the log: %s", err.message);
            usleep(500000);
        }
        pthread_mutex_lock(&s->lock);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

int sec_audit_start(struct sec *s, struct tr_error *err)
{
    if (pthread_create(&s->writer, NULL, writer, s) != 0)
        return tr_error_set(err, TR_ENOMEM, "cannot start the audit writer");
    s->writer_started = true;
    return 0;
}

void sec_audit_stop(struct sec *s)
{
    if (!s->writer_started)
        return;
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    pthread_cond_broadcast(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->writer, NULL);
    s->writer_started = false;
    struct tr_error err = TR_ERROR_INIT;
    if (sec_audit_flush(s, &err) < 0)
        sec_log(s, 0, "audit: entries lost at shutdown: %s", err.message);
    pthread_mutex_lock(&s->lock);
    queued_free(s->queue, s->nqueue);
    s->queue = NULL;
    s->nqueue = s->cap = 0;
    pthread_mutex_unlock(&s->lock);
}

/* ---- verification and export -------------------------------------------------------------- */

int sec_audit_verify(const char *db_url, int64_t *entries, int64_t *bad_seq,
                     struct tr_error *err)
{
    *entries = 0;
    *bad_seq = 0;
    struct db *db;
    int rc = db_open(db_url, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    /* The head first: a batch inserts its entries and moves the head in one transaction, so
     * every entry up to the head's is there; entries written while we walk are past it and
     * are left for the next verification (no false alarm on a running server). */
    int64_t head_seq = -1;
    char head_hash[65] = "";
    if ((rc = db_prepare(db, "SELECT seq, hash FROM sec_audit_head WHERE id = 1", &st, err)) ==
        0) {
        rc = db_step(st, err);
        if (rc == 1) {
            head_seq = db_column_int64(st, 0);
            snprintf(head_hash, sizeof(head_hash), "%s", db_column_text(st, 1));
        }
        db_reset(st);
        if (rc == 0)
            rc = tr_error_set(err, TR_EFORMAT, "the audit log has no head");
        rc = rc == 1 ? 0 : rc;
    }
    char prev[65] = "0000000000000000000000000000000000000000000000000000000000000000";
    int64_t expect = 1;
    if (rc == 0)
        rc = db_prepare(db, "SELECT seq, at, actor, role, peer, action, outcome, object_type, "
                            "object_id, site, detail, prev_hash, hash FROM sec_audit WHERE seq <= "
                            "$1 ORDER BY seq",
                        &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, head_seq);
        while ((rc = db_step(st, err)) == 1) {
            int64_t seq = db_column_int64(st, 0);
            const char *f[9];
            for (int k = 0; k < 9; k++)
                f[k] = db_column_text(st, 2 + k);
            char hash[65];
            entry_hash(prev, seq, db_column_int64(st, 1), f, hash);
            const char *why = NULL;
            if (seq != expect)
                why = "entries are missing before it";
            else if (strcmp(db_column_text(st, 11), prev) != 0)
                why = "its link to the entry before does not match";
            else if (strcmp(db_column_text(st, 12), hash) != 0)
                why = "its content does not match its hash";
            if (why) {
                *bad_seq = seq;
                rc = tr_error_set(err, TR_EFORMAT, "audit entry %" PRId64 ": %s", seq, why);
                break;
            }
            memcpy(prev, hash, sizeof(prev));
            (*entries)++;
            expect = seq + 1;
        }
        db_reset(st);
    }
    if (rc == 0 && (expect - 1 != head_seq || strcmp(head_hash, prev) != 0)) {
        *bad_seq = expect;
        rc = tr_error_set(err, TR_EFORMAT,
                          expect - 1 != head_seq
                              ? "the log ends at entry %" PRId64 " but its head says %" PRId64
                                ": entries were deleted at the end"
                              : "the last entry, %" PRId64 ", is not the one its head (%" PRId64
                                ") recorded: it was changed or replaced",
                          expect - 1, head_seq);
    }
    /* Rows past the head that no batch wrote: the highest sequence number first, then the
     * head again (which only grows, and covers whatever was committed before). */
    int64_t max_seq = 0, head_now = 0;
    if (rc == 0 && (rc = db_prepare(db, "SELECT MAX(seq) FROM sec_audit", &st, err)) == 0) {
        if (db_step(st, err) == 1 && !db_column_is_null(st, 0))
            max_seq = db_column_int64(st, 0);
        db_reset(st);
    }
    if (rc == 0 && (rc = db_prepare(db, "SELECT seq FROM sec_audit_head WHERE id = 1", &st,
                                    err)) == 0) {
        if (db_step(st, err) == 1)
            head_now = db_column_int64(st, 0);
        db_reset(st);
        if (max_seq > head_now) {
            *bad_seq = head_now + 1;
            rc = tr_error_set(err, TR_EFORMAT,
                              "entries %" PRId64 " to %" PRId64 " lie past the log's head (%" PRId64
                              "): they were added outside telerad",
                              head_now + 1, max_seq, head_now);
        }
    }
    db_close(db);
    return rc < 0 ? rc : 0;
}

static void xml_escape(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '&': fputs("&amp;", out); break;
        case '"': fputs("&quot;", out); break;
        default: fputc(*s, out);
        }
    }
}

/* PS3.15 A.5.3: the EventID codes of DCM for our actions. */
static void event_id(const char *action, const char **code, const char **name, char *type)
{
    *type = 'R';
    if (strcmp(action, "query") == 0) {
        *code = "110112";
        *name = "Query";
        *type = 'E';
    } else if (strcmp(action, "store") == 0) {
        *code = "110104";
        *name = "DICOM Instances Transferred";
        *type = 'C';
    } else if (strcmp(action, "login") == 0 || strcmp(action, "session") == 0) {
        *code = "110114";
        *name = "User Authentication";
        *type = 'E';
    } else if (strcmp(action, "change") == 0 || strcmp(action, "admin") == 0) {
        *code = "110136";
        *name = "Security Alert";
        *type = 'E';
    } else if (strcmp(action, "export") == 0) {
        *code = "110106";
        *name = "Export";
    } else {
        *code = "110103";
        *name = "DICOM Instances Accessed";
    }
}

int sec_audit_export(const char *db_url, int64_t since_seq, FILE *out, struct tr_error *err)
{
    struct db *db;
    int rc = db_open(db_url, &db, err);
    if (rc)
        return rc;
    char host[256] = "-";
    gethostname(host, sizeof(host) - 1);
    struct db_stmt *st;
    rc = db_prepare(db, "SELECT seq, at, actor, role, peer, action, outcome, object_type, "
                        "object_id, site, detail, hash FROM sec_audit WHERE seq > $1 ORDER BY seq",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, since_seq);
        while ((rc = db_step(st, err)) == 1) {
            int64_t at = db_column_int64(st, 1);
            time_t t = (time_t)(at / 1000);
            struct tm tm;
            gmtime_r(&t, &tm);
            char when[40];
            strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
            const char *action = db_column_text(st, 5), *outcome = db_column_text(st, 6);
            const char *code, *name;
            char type;
            event_id(action, &code, &name, &type);
            /* RFC 5424: <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG; facility 10 (authpriv),
             * severity notice (5), warning (4) for denials. PRI = 10 * 8 + severity. */
            int pri = 80 + (strcmp(outcome, "success") == 0 ? 5 : 4);
            fprintf(out, "<%d>1 %s.%03dZ %s telerad - DICOM+RFC3881 [telerad@0 seq=\"%" PRId64
                         "\" hash=\"%s\"] ",
                    pri, when, (int)(at % 1000), host, db_column_int64(st, 0),
                    db_column_text(st, 11));
            fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?><AuditMessage><EventIdentification "
                         "EventActionCode=\"%c\" EventDateTime=\"%s.%03dZ\" EventOutcomeIndicator=\"%s\">"
                         "<EventID csd-code=\"%s\" codeSystemName=\"DCM\" originalText=\"%s\"/>"
                         "</EventIdentification><ActiveParticipant UserID=\"",
                    type, when, (int)(at % 1000),
                    strcmp(outcome, "success") == 0 ? "0" : strcmp(outcome, "denied") == 0 ? "4" : "8",
                    code, name);
            xml_escape(out, db_column_text(st, 2));
            fputs("\" UserIsRequestor=\"true\" NetworkAccessPointID=\"", out);
            xml_escape(out, db_column_text(st, 4));
            fputs("\" NetworkAccessPointTypeCode=\"2\"><RoleIDCode csd-code=\"", out);
            xml_escape(out, db_column_text(st, 3));
            fputs("\" codeSystemName=\"telerad\" originalText=\"", out);
            xml_escape(out, db_column_text(st, 3));
            fprintf(out, "\"/></ActiveParticipant><AuditSourceIdentification AuditSourceID=\"");
            xml_escape(out, host);
            fputs("\"/><ParticipantObjectIdentification ParticipantObjectID=\"", out);
            xml_escape(out, db_column_text(st, 8));
            fputs("\" ParticipantObjectTypeCode=\"2\"><ParticipantObjectIDTypeCode csd-code=\"", out);
            xml_escape(out, db_column_text(st, 7));
            fputs("\" codeSystemName=\"telerad\" originalText=\"", out);
            xml_escape(out, db_column_text(st, 7));
            /* RFC 3881: the detail value is base64. */
            const char *detail = db_column_text(st, 10);
            size_t dn = strlen(detail);
            unsigned char b64[4 * 90];
            if (dn > 256)
                dn = 256;
            EVP_EncodeBlock(b64, (const unsigned char *)detail, (int)dn);
            fprintf(out, "\"/><ParticipantObjectDetail type=\"detail\" value=\"%s\"/>"
                         "</ParticipantObjectIdentification></AuditMessage>\n",
                    (const char *)b64);
        }
        db_reset(st);
    }
    db_close(db);
    return rc < 0 ? rc : 0;
}
