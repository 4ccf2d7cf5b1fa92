/*
 * scp.c - the DICOM server: listener, one thread per association, association policy, and
 * the DIMSE services as SCP: C-ECHO (PS3.4 A), C-STORE (B), C-FIND, C-MOVE and C-GET (C), with
 * C-CANCEL. Storage, queries and retrieval lists come from the handlers (scp.h).
 */
#include "common.h"
#include "scp.h"
#include "scu.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_IDENTIFIER (16u << 20)

struct scp_server {
    struct scp_config cfg;
    struct scp_handlers h;
    int listen_fd;
    int wake[2];                   /* a byte here interrupts accept */
    atomic_bool stopping;
    atomic_uint active;            /* associations being served */
    atomic_uint threads;           /* threads alive (includes those rejecting) */
    atomic_uint_fast64_t next_id;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    struct dul_support *support;   /* what we negotiate */
    struct conn_ctx *live;         /* association threads, under lock */
    size_t support_count;
};

static const char *const plain_ts[] = {DCM_UID_ExplicitVRLittleEndian,
                                       DCM_UID_ImplicitVRLittleEndian, NULL};

static const char *storage_ts[64];
static pthread_once_t storage_ts_once = PTHREAD_ONCE_INIT;

static void init_storage_ts(void)
{
    size_t n = 0;
    storage_ts[n++] = DCM_UID_ExplicitVRLittleEndian;
    storage_ts[n++] = DCM_UID_ImplicitVRLittleEndian;
    storage_ts[n++] = DCM_UID_DeflatedExplicitVRLittleEndian;
    storage_ts[n++] = DCM_UID_ExplicitVRBigEndian;
    const struct dcm_transfer_syntax *ts;
    for (unsigned i = 0; (ts = dcm_ts_at(i)) && n < TR_ARRAY_SIZE(storage_ts) - 1; i++) {
        if ((ts->flags & DCM_TS_ENCAPSULATED) && !(ts->flags & DCM_TS_REFERENCED))
            storage_ts[n++] = ts->uid;
    }
    storage_ts[n] = NULL;
}

const char *const *scp_storage_transfer_syntaxes(void)
{
    pthread_once(&storage_ts_once, init_storage_ts);
    return storage_ts;
}

void scp_config_init(struct scp_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    dul_config_init(&cfg->dul);
    cfg->host = "127.0.0.1";
    cfg->port = 11112;
    cfg->max_associations = 64;
    cfg->max_store_size = 4ull << 30;
}

/* ---- logging ------------------------------------------------------------------------------ */

static void logf_(struct scp_server *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(struct scp_server *s, int level, const char *fmt, ...)
{
    if (!s->h.log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    s->h.log(s->h.ctx, level, line);
}

/* ---- negotiation -------------------------------------------------------------------------- */

static int build_support(struct scp_server *s)
{
    size_t cap = 8 + 256;
    s->support = tr_calloc(cap, sizeof(*s->support));
    if (!s->support)
        return TR_ENOMEM;
    size_t n = 0;
    s->support[n++] = (struct dul_support){SCU_VERIFICATION, plain_ts, true, false};
    if (s->h.find) {
        s->support[n++] = (struct dul_support){SCU_PATIENT_ROOT_FIND, plain_ts, true, false};
        s->support[n++] = (struct dul_support){SCU_STUDY_ROOT_FIND, plain_ts, true, false};
    }
    if (s->h.retrieve) {
        s->support[n++] = (struct dul_support){SCU_PATIENT_ROOT_MOVE, plain_ts, true, false};
        s->support[n++] = (struct dul_support){SCU_STUDY_ROOT_MOVE, plain_ts, true, false};
        s->support[n++] = (struct dul_support){SCU_PATIENT_ROOT_GET, plain_ts, true, false};
        s->support[n++] = (struct dul_support){SCU_STUDY_ROOT_GET, plain_ts, true, false};
    }
    if (s->h.store_begin || s->h.retrieve) {
        const struct dcm_uid_entry *e;
        for (unsigned i = 0; (e = dcm_uid_at(i)) && n < cap; i++) {
            if (!dcm_uid_is_storage(e))
                continue;
            /* We can be SCP (receive C-STORE) if we store, and SCU of it (send C-STOREs back
             * on a C-GET association) if we retrieve. */
            s->support[n++] = (struct dul_support){e->uid, scp_storage_transfer_syntaxes(),
                                                   s->h.store_begin != NULL,
                                                   s->h.retrieve != NULL};
        }
    }
    s->support_count = n;
    return 0;
}

struct conn_ctx {
    struct scp_server *server;
    struct net_conn *conn;
    struct dul_assoc *assoc;      /* set under server->lock while established */
    struct conn_ctx *prev, *next; /* server->live, under server->lock */
    bool over_limit;              /* holds no slot in server->active (over the cap, or rejected) */
    uint64_t id;
    struct scp_peer peer;
    char calling[PDU_AE_MAX + 1], called[PDU_AE_MAX + 1];
};

static int decide_inner(void *ctx, struct dul_assoc *a, const struct pdu_associate *rq,
                        struct pdu_associate *ac, struct pdu_reject *rj)
{
    struct conn_ctx *cc = ctx;
    struct scp_server *s = cc->server;
    snprintf(cc->calling, sizeof(cc->calling), "%s", rq->calling_ae);
    snprintf(cc->called, sizeof(cc->called), "%s", rq->called_ae);
    cc->peer.calling_ae = cc->calling;
    cc->peer.called_ae = cc->called;
    cc->peer.identity = &rq->identity;
    struct net_conn *conn = dul_connection(a);
    cc->peer.address = net_peer_address(conn);
    cc->peer.ip = net_peer_ip(conn);
    cc->peer.tls_subject = net_tls_peer_subject(conn);
    cc->peer.association_id = cc->id;
    if (cc->over_limit || atomic_load(&s->stopping)) {
        /* PS3.8 Table 9-21: transient, service-provider (presentation), local limit exceeded. */
        *rj = (struct pdu_reject){PDU_RJ_TRANSIENT, PDU_RJ_SOURCE_PROVIDER_PRESENTATION,
                                  PDU_RJ_LOCAL_LIMIT_EXCEEDED};
        return 1;
    }
    if (!net_acl_allows(&s->cfg.allowed, cc->peer.ip)) {
        *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER, PDU_RJ_NO_REASON};
        logf_(s, SCP_LOG_WARNING, "association %llu: %s is not an allowed network",
              (unsigned long long)cc->id, cc->peer.ip);
        return 1;
    }
    if (!s->cfg.accept_any_called_ae && strcmp(rq->called_ae, s->cfg.dul.ae_title) != 0) {
        *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                                  PDU_RJ_CALLED_AE_NOT_RECOGNIZED};
        return 1;
    }
    int verdict = s->h.authorize ? s->h.authorize(s->h.ctx, &cc->peer, rj) : 0;
    if (verdict != 0 && verdict != SCP_IDENTITY_VERIFIED)
        return 1;
    dul_negotiate(rq, s->support, s->support_count, ac);
    if (verdict == SCP_IDENTITY_VERIFIED && rq->identity.positive_response) {
        /* PS3.7 D.3.3.7.2: the user identity was accepted; for types 1 and 2 the server
         * response is empty (types 3-5 would carry a token we do not issue). */
        ac->identity.has_response = true;
        ac->identity.response = "";
        ac->identity.response_length = 0;
    }
    return 0;
}

static int decide(void *ctx, struct dul_assoc *a, const struct pdu_associate *rq,
                  struct pdu_associate *ac, struct pdu_reject *rj)
{
    struct conn_ctx *cc = ctx;
    int rc = decide_inner(ctx, a, rq, ac, rj);
    if (rc && !cc->over_limit) {
        /* Rejected: the slot is free now, not once the peer has closed its end. */
        atomic_fetch_sub(&cc->server->active, 1);
        cc->over_limit = true;
    }
    return rc;
}

/* ---- C-ECHO ------------------------------------------------------------------------------- */

static int respond(struct dul_assoc *a, const struct dimse_message *m, uint16_t status,
                   const char *comment, struct tr_error *err)
{
    struct dcm_dataset *cmd = dimse_response_new(m, status, false);
    if (!cmd)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    if (comment && *comment) {
        size_t n = strnlen(comment, 64);
        dcm_dataset_set_bytes(cmd, 0x00000902, DCM_VR_LO, comment, n);
    }
    int rc = dimse_send_command(a, m->pc, cmd, err);
    dcm_dataset_free(cmd);
    return rc;
}

/* ---- C-STORE ------------------------------------------------------------------------------ */

static int serve_store(struct conn_ctx *cc, struct dul_assoc *a, const struct dimse_message *m,
                       struct tr_error *err)
{
    struct scp_server *s = cc->server;
    const struct dul_context *c = dul_context_by_id(a, m->pc);
    char comment[65] = "";
    if (!m->has_dataset) {
        return respond(a, m, DIMSE_STATUS_CANNOT_UNDERSTAND, "C-STORE without a data set", err);
    }
    if (!s->h.store_begin) {
        int rc = dimse_skip_dataset(a, m, err);
        return rc ? rc : respond(a, m, DIMSE_STATUS_SOP_CLASS_NOT_SUPPORTED, NULL, err);
    }
    if (strcmp(m->sop_class, c->abstract_syntax) != 0) {
        /* PS3.4 B.2.3: the data set is not of the negotiated SOP class. */
        int rc = dimse_skip_dataset(a, m, err);
        snprintf(comment, sizeof(comment), "SOP class differs from the presentation context");
        return rc ? rc : respond(a, m, DIMSE_STATUS_DATASET_DOES_NOT_MATCH, comment, err);
    }
    if (!dcm_uid_is_valid(m->sop_instance, strlen(m->sop_instance))) {
        int rc = dimse_skip_dataset(a, m, err);
        return rc ? rc
                  : respond(a, m, DIMSE_STATUS_CANNOT_UNDERSTAND,
                            "missing or invalid Affected SOP Instance UID", err);
    }
    struct scp_store st = {
        .peer = &cc->peer,
        .sop_class = m->sop_class,
        .sop_instance = m->sop_instance,
        .transfer_syntax = c->transfer_syntax,
        .abstract_syntax = c->abstract_syntax,
        .message_id = m->message_id,
        .move_originator_ae = m->move_originator_ae,
    };
    struct tr_sink sink = {0};
    void *handle = NULL;
    if (s->h.store_begin(s->h.ctx, &st, &sink, &handle) < 0) {
        int rc = dimse_skip_dataset(a, m, err);
        return rc ? rc
                  : respond(a, m, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot store now", err);
    }
    struct tr_error rerr = TR_ERROR_INIT;
    uint64_t length = 0;
    int rc = dimse_receive_dataset_to_sink(a, m, &sink, s->cfg.max_store_size, &length, &rerr);
    bool complete = rc == 0;
    uint16_t status = s->h.store_end(s->h.ctx, handle, complete, comment, sizeof(comment));
    if (rc == TR_ECLOSED || rc == TR_EPROTO || rc == TR_ETIMEOUT) {
        /* The association is gone: nothing to answer. */
        return tr_error_set(err, rc, "%s", rerr.message);
    }
    if (!complete && status == DIMSE_STATUS_SUCCESS)
        status = DIMSE_STATUS_OUT_OF_RESOURCES;
    if (!complete && !comment[0])
        snprintf(comment, sizeof(comment), "%.64s", rerr.message);
    logf_(s, status == DIMSE_STATUS_SUCCESS ? SCP_LOG_DEBUG : SCP_LOG_WARNING,
          "association %llu: C-STORE %s (%llu bytes) from %s: %04X %s",
          (unsigned long long)cc->id, m->sop_instance, (unsigned long long)length, cc->calling,
          status, dimse_status_text(status));
    return respond(a, m, status, comment, err);
}

/* ---- C-FIND ------------------------------------------------------------------------------- */

struct find_emit {
    struct dul_assoc *a;
    const struct dimse_message *m;
    bool cancelled;
    struct tr_error *err;
    int rc;
    unsigned sent;     /* pending responses sent so far */
    int64_t last_us;   /* when the previous one was sent */
    struct tr_buf pending; /* the command set of a pending response, encoded once */
};

/* C-CANCEL is looked for before the first pending response and then every this many: a poll
 * per match was a quarter of a large C-FIND's time (bench/README.md, scale.py); a cancel
 * still stops the answer within this many matches. */
#define CANCEL_CHECK_EVERY 16

/* Pending responses are gathered (dul_batch_begin) and written together: the first one at
 * once, then every CANCEL_CHECK_EVERY (before looking for a C-CANCEL), and the rest with the
 * final response - one write for up to 16 responses instead of two each (bench/README.md,
 * scale.py). When matches come slowly (more than this between two, e.g. each read from an
 * object's header), each is written as soon as it is made: a response never waits for a
 * slow next match, only for at most 15 quick ones. */
#define SLOW_MATCH_US 1000

static int64_t monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Has the peer sent C-CANCEL for this message? Reads it if so. */
static bool check_cancel(struct dul_assoc *a, uint16_t id, int *rc, struct tr_error *err)
{
    if (!dul_pending(a))
        return false;
    struct dimse_message c;
    int r = dimse_receive_command(a, -1, &c, err);
    if (r <= 0) {
        *rc = r == 0 ? TR_EPROTO : r;
        return true;
    }
    bool cancel = c.command_field == DIMSE_C_CANCEL_RQ && c.message_id == id;
    if (!cancel)
        *rc = tr_error_set(err, TR_EPROTO, "%s sent %s during an operation", dul_peer_ae(a),
                           dimse_command_name(c.command_field));
    if (c.has_dataset && *rc == 0)
        *rc = dimse_skip_dataset(a, &c, err);
    dimse_message_release(&c);
    return true;
}

static int emit_match(void *ctx, const struct dcm_dataset *match)
{
    struct find_emit *fe = ctx;
    if (fe->cancelled || fe->rc)
        return -1;
    if (fe->sent % CANCEL_CHECK_EVERY == 0 &&
        check_cancel(fe->a, fe->m->message_id, &fe->rc, fe->err)) {
        fe->cancelled = fe->rc == 0;
        return -1;
    }
    if (!fe->pending.len) {
        struct dcm_dataset *cmd = dimse_response_new(fe->m, DIMSE_STATUS_PENDING, true);
        fe->rc = cmd ? dimse_encode_command(cmd, &fe->pending, fe->err)
                     : tr_error_set(fe->err, TR_ENOMEM, "out of memory");
        dcm_dataset_free(cmd);
        if (fe->rc)
            return -1;
    }
    fe->rc = dimse_send_encoded(fe->a, fe->m->pc, fe->pending.data, fe->pending.len, match,
                                fe->err);
    if (fe->rc)
        return -1;
    fe->sent++;
    int64_t now = monotonic_us();
    if (fe->sent == 1 || fe->sent % CANCEL_CHECK_EVERY == 0 || now - fe->last_us > SLOW_MATCH_US)
        fe->rc = dul_flush(fe->a, fe->err);
    fe->last_us = now;
    return fe->rc ? -1 : 0;
}

static int serve_find(struct conn_ctx *cc, struct dul_assoc *a, const struct dimse_message *m,
                      struct tr_error *err)
{
    struct scp_server *s = cc->server;
    struct dcm_dataset *identifier = NULL;
    int rc = m->has_dataset ? dimse_receive_dataset(a, m, MAX_IDENTIFIER, &identifier, err) : 0;
    if (rc == TR_ECLOSED || rc == TR_EPROTO || rc == TR_ETIMEOUT)
        return rc;
    if (rc || !identifier) {
        dcm_dataset_free(identifier);
        return respond(a, m, DIMSE_STATUS_CANNOT_UNDERSTAND, "the identifier cannot be read",
                       err);
    }
    struct find_emit fe = {.a = a, .m = m, .err = err};
    tr_buf_init(&fe.pending, 1u << 16);
    char comment[65] = "";
    dul_batch_begin(a); /* the pending responses, and the final one with the last of them */
    uint16_t status = s->h.find(s->h.ctx, &cc->peer, m->sop_class, identifier, emit_match, &fe,
                                comment, sizeof(comment));
    dcm_dataset_free(identifier);
    tr_buf_release(&fe.pending);
    if (fe.rc) {
        dul_batch_end(a, NULL);
        return fe.rc;
    }
    if (fe.cancelled)
        status = DIMSE_STATUS_CANCEL;
    logf_(s, SCP_LOG_DEBUG, "association %llu: C-FIND from %s: %04X", (unsigned long long)cc->id,
          cc->calling, status);
    rc = respond(a, m, status, comment, err);
    int erc = dul_batch_end(a, rc ? NULL : err);
    return rc ? rc : erc;
}

/* ---- C-MOVE and C-GET --------------------------------------------------------------------- */

static int send_progress(struct dul_assoc *a, const struct dimse_message *m, uint16_t status,
                         const struct scu_progress *p, const char *comment, struct tr_error *err)
{
    struct dcm_dataset *cmd = dimse_response_new(m, status, false);
    if (!cmd)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    bool final = !dimse_status_is_pending(status);
    /* PS3.4 C.4.2.1.4: the final response carries completed/failed/warning counts; remaining
     * only in pending ones (and after a cancel). */
    int rc = dimse_set_counts(cmd, p->remaining, p->completed, p->failed, p->warning);
    if (rc == 0 && final && status != DIMSE_STATUS_CANCEL)
        dcm_dataset_remove(cmd, 0x00001020);
    if (rc == 0 && comment && *comment)
        dcm_dataset_set_bytes(cmd, 0x00000902, DCM_VR_LO, comment, strnlen(comment, 64));
    if (rc == 0)
        rc = dimse_send_command(a, m->pc, cmd, err);
    dcm_dataset_free(cmd);
    return rc;
}

/* Final status of a retrieval from its counts (PS3.4 C.4.2.1.5). */
static uint16_t retrieve_status(const struct scu_progress *p, bool cancelled)
{
    if (cancelled)
        return DIMSE_STATUS_CANCEL;
    if (p->failed == 0 && p->warning == 0)
        return DIMSE_STATUS_SUCCESS;
    if (p->completed == 0 && p->warning == 0)
        return DIMSE_STATUS_MOVE_OUT_OF_RESOURCES_SUBOPS; /* all failed */
    return DIMSE_STATUS_WARNING_SUBOPS;
}

/* Open the association a C-MOVE sends its C-STOREs on, proposing what the instances need. */
static int open_move_association(struct conn_ctx *cc, const char *dest, const char *host,
                                 int port, bool tls, const struct scp_instance *list,
                                 size_t count, struct dul_assoc **out, struct tr_error *err)
{
    struct scp_server *s = cc->server;
    struct pdu_associate *rq = tr_malloc(sizeof(*rq));
    if (!rq)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    pdu_associate_init(rq);
    snprintf(rq->calling_ae, sizeof(rq->calling_ae), "%s", s->cfg.dul.ae_title);
    snprintf(rq->called_ae, sizeof(rq->called_ae), "%s", dest);
    /* One context per (SOP class, transfer syntax); uncompressed files also offer the other
     * uncompressed syntaxes, so a destination that only takes implicit VR still gets them. */
    for (size_t i = 0; i < count && rq->context_count < PDU_MAX_CONTEXTS; i++) {
        bool seen = false;
        for (unsigned k = 0; k < rq->context_count && !seen; k++)
            seen = strcmp(rq->context[k].abstract_syntax, list[i].sop_class) == 0 &&
                   strcmp(rq->context[k].transfer_syntax[0], list[i].transfer_syntax) == 0;
        if (seen)
            continue;
        const char *ts[4] = {list[i].transfer_syntax, NULL, NULL, NULL};
        const struct dcm_transfer_syntax *t = dcm_ts_lookup(list[i].transfer_syntax);
        if (t && !(t->flags & DCM_TS_ENCAPSULATED)) {
            size_t n = 1;
            for (const char *const *p = plain_ts; *p; p++)
                if (strcmp(*p, ts[0]) != 0)
                    ts[n++] = *p;
        }
        scu_add_context(rq, list[i].sop_class, ts);
    }
    struct dul_config cfg = s->cfg.dul;
    cfg.tls = tls ? s->cfg.move_tls : NULL;
    int rc = dul_request(&cfg, host, port, rq, out, err);
    if (rc) {
        pdu_associate_release(rq);
        tr_free(rq);
    }
    return rc;
}

static int serve_retrieve(struct conn_ctx *cc, struct dul_assoc *a, const struct dimse_message *m,
                          bool get, struct tr_error *err)
{
    struct scp_server *s = cc->server;
    struct dcm_dataset *identifier = NULL;
    int rc = m->has_dataset ? dimse_receive_dataset(a, m, MAX_IDENTIFIER, &identifier, err) : 0;
    if (rc == TR_ECLOSED || rc == TR_EPROTO || rc == TR_ETIMEOUT)
        return rc;
    struct scu_progress p = {0};
    if (rc || !identifier) {
        dcm_dataset_free(identifier);
        return send_progress(a, m, DIMSE_STATUS_CANNOT_UNDERSTAND, &p,
                             "the identifier cannot be read", err);
    }
    char host[256];
    int port = 0;
    bool tls = false;
    if (!get && (!s->h.move_destination ||
                 s->h.move_destination(s->h.ctx, m->move_destination, host, sizeof(host), &port,
                                       &tls) != 0)) {
        dcm_dataset_free(identifier);
        logf_(s, SCP_LOG_WARNING, "association %llu: C-MOVE to unknown destination \"%s\"",
              (unsigned long long)cc->id, m->move_destination);
        return send_progress(a, m, DIMSE_STATUS_MOVE_DESTINATION_UNKNOWN, &p,
                             "move destination unknown", err);
    }
    struct scp_instance *list = NULL;
    size_t count = 0;
    char comment[65] = "";
    uint16_t status = s->h.retrieve(s->h.ctx, &cc->peer, m->sop_class, identifier, &list, &count,
                                    comment, sizeof(comment));
    dcm_dataset_free(identifier);
    if (status != DIMSE_STATUS_SUCCESS) {
        tr_free(list);
        return send_progress(a, m, status, &p, comment, err);
    }
    struct dul_assoc *sub = a;
    if (!get && count) {
        struct tr_error serr = TR_ERROR_INIT;
        if (open_move_association(cc, m->move_destination, host, port, tls, list, count, &sub,
                                  &serr) < 0) {
            tr_free(list);
            logf_(s, SCP_LOG_WARNING, "association %llu: C-MOVE to %s: %s",
                  (unsigned long long)cc->id, m->move_destination, serr.message);
            p.failed = (uint16_t)TR_MIN(count, (size_t)UINT16_MAX);
            return send_progress(a, m, DIMSE_STATUS_MOVE_OUT_OF_RESOURCES_SUBOPS, &p,
                                 "cannot reach the move destination", err);
        }
    }
    p.remaining = (uint16_t)TR_MIN(count, (size_t)UINT16_MAX);
    bool cancelled = false;
    uint16_t sub_id = 1;
    rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (check_cancel(a, m->message_id, &rc, err)) {
            if (rc)
                break;
            cancelled = true;
            break;
        }
        struct scu_file f;
        struct tr_error ferr = TR_ERROR_INIT;
        uint16_t st = DIMSE_STATUS_OUT_OF_RESOURCES;
        void *instance = NULL;
        int frc = s->h.instance_open ? s->h.instance_open(s->h.ctx, &list[i], &instance, &ferr)
                                     : 0;
        if (frc == 0)
            frc = scu_file_probe(list[i].path, &f, &ferr);
        if (frc == 0) {
            char sub_comment[65];
            frc = scu_store_file(sub, &f, sub_id++, get ? NULL : cc->calling, m->message_id, &st,
                                 sub_comment, sizeof(sub_comment), &ferr);
        }
        if (instance && s->h.instance_close)
            s->h.instance_close(s->h.ctx, instance);
        if (frc == TR_ECLOSED || frc == TR_EPROTO || frc == TR_ETIMEOUT) {
            if (get) {
                rc = frc;
                tr_error_set(err, frc, "%s", ferr.message);
                break;
            }
        }
        p.remaining--;
        if (frc)
            p.failed++;
        else if (dimse_status_is_warning(st))
            p.warning++;
        else if (st == DIMSE_STATUS_SUCCESS)
            p.completed++;
        else
            p.failed++;
        if (frc || st != DIMSE_STATUS_SUCCESS)
            logf_(s, SCP_LOG_WARNING, "association %llu: %s sub-operation %s: %s",
                  (unsigned long long)cc->id, get ? "C-GET" : "C-MOVE", list[i].sop_instance,
                  frc ? ferr.message : dimse_status_text(st));
        if (p.remaining && (rc = send_progress(a, m, DIMSE_STATUS_PENDING, &p, NULL, err)))
            break;
    }
    if (sub != a) {
        struct tr_error rerr = TR_ERROR_INIT;
        if (sub && dul_release(sub, &rerr) < 0)
            logf_(s, SCP_LOG_WARNING, "association %llu: releasing the C-MOVE association: %s",
                  (unsigned long long)cc->id, rerr.message);
        dul_free(sub);
    }
    tr_free(list);
    if (rc)
        return rc;
    status = retrieve_status(&p, cancelled);
    logf_(s, SCP_LOG_INFO, "association %llu: %s from %s: %u completed, %u failed, %u warnings",
          (unsigned long long)cc->id, get ? "C-GET" : "C-MOVE", cc->calling, p.completed, p.failed,
          p.warning);
    return send_progress(a, m, status, &p, NULL, err);
}

/* ---- one association ---------------------------------------------------------------------- */

static int dispatch(struct conn_ctx *cc, struct dul_assoc *a, const struct dimse_message *m,
                    struct tr_error *err)
{
    struct scp_server *s = cc->server;
    switch (m->command_field) {
    case DIMSE_C_ECHO_RQ: {
        int rc = m->has_dataset ? dimse_skip_dataset(a, m, err) : 0;
        return rc ? rc : respond(a, m, DIMSE_STATUS_SUCCESS, NULL, err);
    }
    case DIMSE_C_STORE_RQ: return serve_store(cc, a, m, err);
    case DIMSE_C_FIND_RQ:
        if (s->h.find)
            return serve_find(cc, a, m, err);
        break;
    case DIMSE_C_MOVE_RQ:
    case DIMSE_C_GET_RQ:
        if (s->h.retrieve)
            return serve_retrieve(cc, a, m, m->command_field == DIMSE_C_GET_RQ, err);
        break;
    case DIMSE_C_CANCEL_RQ:
        return 0; /* a cancel for an operation already finished: nothing to do */
    default: break;
    }
    int rc = m->has_dataset ? dimse_skip_dataset(a, m, err) : 0;
    if (rc)
        return rc;
    if (!(m->command_field & 0x8000))
        return respond(a, m, DIMSE_STATUS_UNRECOGNIZED_OPERATION, NULL, err);
    return 0;
}

static void serve(struct conn_ctx *cc)
{
    struct scp_server *s = cc->server;
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    /* The TLS handshake happens here, in the association's thread, bounded by ARTIM: a slow
     * client never holds the listener. */
    if (s->cfg.dul.tls && net_start_tls(cc->conn, s->cfg.dul.tls, s->cfg.dul.artim_ms, &err) < 0) {
        logf_(s, SCP_LOG_WARNING, "association %llu: TLS with %s failed: %s",
              (unsigned long long)cc->id, net_peer_address(cc->conn), err.message);
        return;
    }
    int rc = dul_accept(cc->conn, &s->cfg.dul, decide, cc, &a, &err);
    cc->conn = NULL; /* owned by the association now (or closed) */
    if (rc) {
        logf_(s, rc == TR_EDENIED ? SCP_LOG_INFO : SCP_LOG_WARNING, "association %llu: %s",
              (unsigned long long)cc->id, err.message);
        return;
    }
    logf_(s, SCP_LOG_INFO, "association %llu from %s: calling AE \"%s\" called AE \"%s\"%s",
          (unsigned long long)cc->id, dul_peer_address(a), cc->calling, cc->called,
          net_is_tls(dul_connection(a)) ? " (TLS)" : "");
    pthread_mutex_lock(&s->lock);
    cc->assoc = a;
    pthread_mutex_unlock(&s->lock);
    for (;;) {
        struct dimse_message m;
        tr_error_clear(&err);
        rc = dimse_receive_command(a, -1, &m, &err);
        if (rc == 0) {
            dul_release_reply(a, &err);
            logf_(s, SCP_LOG_INFO, "association %llu released", (unsigned long long)cc->id);
            break;
        }
        if (rc < 0) {
            if (rc == TR_ETIMEOUT)
                dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_NOT_SPECIFIED);
            logf_(s, rc == TR_ECLOSED ? SCP_LOG_INFO : SCP_LOG_WARNING, "association %llu: %s",
                  (unsigned long long)cc->id, err.message);
            break;
        }
        rc = dispatch(cc, a, &m, &err);
        dimse_message_release(&m);
        if (rc) {
            logf_(s, SCP_LOG_WARNING, "association %llu: %s", (unsigned long long)cc->id,
                  err.message);
            dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_NOT_SPECIFIED);
            break;
        }
        if (atomic_load(&s->stopping)) {
            /* Being stopped: finish the message in hand, then go. */
            dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_NOT_SPECIFIED);
            break;
        }
    }
    pthread_mutex_lock(&s->lock);
    cc->assoc = NULL;
    pthread_mutex_unlock(&s->lock);
    dul_free(a);
}

static void *association_thread(void *arg)
{
    struct conn_ctx *cc = arg;
    struct scp_server *s = cc->server;
    serve(cc);
    net_close(cc->conn);
    if (!cc->over_limit)
        atomic_fetch_sub(&s->active, 1);
    pthread_mutex_lock(&s->lock);
    if (cc->prev)
        cc->prev->next = cc->next;
    else
        s->live = cc->next;
    if (cc->next)
        cc->next->prev = cc->prev;
    atomic_fetch_sub(&s->threads, 1);
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    tr_free(cc);
    return NULL;
}

/* ---- the server --------------------------------------------------------------------------- */

int scp_server_new(const struct scp_config *cfg, const struct scp_handlers *handlers,
                   struct scp_server **out, struct tr_error *err)
{
    struct scp_server *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    s->cfg = *cfg;
    s->h = *handlers;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    int rc = build_support(s);
    if (rc) {
        scp_server_free(s);
        return tr_error_set(err, rc, "out of memory");
    }
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        scp_server_free(s);
        return tr_error_set(err, TR_EIO, "pipe: %s", strerror(errno));
    }
    s->listen_fd = net_listen(cfg->host, cfg->port, 128, err);
    if (s->listen_fd < 0) {
        rc = s->listen_fd;
        s->listen_fd = -1;
        scp_server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int scp_server_port(const struct scp_server *s)
{
    return net_listen_port(s->listen_fd);
}

unsigned scp_server_active(const struct scp_server *s)
{
    return atomic_load(&s->active);
}

int scp_server_run(struct scp_server *s)
{
    logf_(s, SCP_LOG_INFO, "DICOM listening on %s:%d as AE \"%s\"%s", s->cfg.host,
          scp_server_port(s), s->cfg.dul.ae_title, s->cfg.dul.tls ? " (TLS)" : "");
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 1u << 20);
    while (!atomic_load(&s->stopping)) {
        struct pollfd fds[2] = {{s->listen_fd, POLLIN, 0}, {s->wake[0], POLLIN, 0}};
        int n = poll(fds, 2, 1000);
        if (n < 0 && errno != EINTR)
            break;
        if (n <= 0 || !(fds[0].revents & POLLIN))
            continue;
        struct net_conn *conn;
        struct tr_error err = TR_ERROR_INIT;
        /* Plain accept; TLS is set up in the association's thread. */
        if (net_accept(s->listen_fd, NULL, 1000, &conn, &err) < 0) {
            logf_(s, SCP_LOG_WARNING, "accept: %s", err.message);
            continue;
        }
        unsigned threads = atomic_load(&s->threads);
        if (threads >= 2 * s->cfg.max_associations + 16) {
            /* Far over the limit (a flood): not even a rejection. */
            logf_(s, SCP_LOG_WARNING, "connection from %s dropped: too many connections",
                  net_peer_address(conn));
            net_close(conn);
            continue;
        }
        struct conn_ctx *cc = tr_calloc(1, sizeof(*cc));
        if (!cc) {
            net_close(conn);
            continue;
        }
        cc->server = s;
        cc->conn = conn;
        cc->id = atomic_fetch_add(&s->next_id, 1) + 1;
        unsigned active = atomic_fetch_add(&s->active, 1);
        if (active >= s->cfg.max_associations) {
            atomic_fetch_sub(&s->active, 1);
            cc->over_limit = true;
        }
        atomic_fetch_add(&s->threads, 1);
        pthread_mutex_lock(&s->lock);
        cc->next = s->live;
        if (s->live)
            s->live->prev = cc;
        s->live = cc;
        pthread_mutex_unlock(&s->lock);
        pthread_t t;
        if (pthread_create(&t, &attr, association_thread, cc) != 0) {
            pthread_mutex_lock(&s->lock);
            s->live = cc->next;
            if (cc->next)
                cc->next->prev = NULL;
            pthread_mutex_unlock(&s->lock);
            atomic_fetch_sub(&s->threads, 1);
            if (!cc->over_limit)
                atomic_fetch_sub(&s->active, 1);
            net_close(conn);
            tr_free(cc);
        }
    }
    pthread_attr_destroy(&attr);
    return 0;
}

void scp_server_stop(struct scp_server *s, int grace_ms)
{
    atomic_store(&s->stopping, true);
    if (s->wake[1] >= 0) {
        char c = 1;
        ssize_t n = write(s->wake[1], &c, 1);
        (void)n;
    }
    /* Wait for the association threads (they see `stopping` after their current message). */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += grace_ms / 1000;
    deadline.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (atomic_load(&s->threads) > 0) {
        if (pthread_cond_timedwait(&s->idle, &s->lock, &deadline) == ETIMEDOUT)
            break;
    }
    /* Past the grace period: wake the threads still waiting on their peers (shutdown, not
     * close: the threads own the sockets and close them themselves). */
    for (struct conn_ctx *cc = s->live; cc; cc = cc->next) {
        if (cc->assoc && dul_connection(cc->assoc))
            shutdown(net_conn_fd(dul_connection(cc->assoc)), SHUT_RDWR);
    }
    pthread_mutex_unlock(&s->lock);
}

void scp_server_free(struct scp_server *s)
{
    if (!s)
        return;
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    /* Threads still running after stop's grace hold a pointer to s: wait for them. */
    pthread_mutex_lock(&s->lock);
    while (atomic_load(&s->threads) > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    tr_free(s->support);
    tr_free(s);
}
