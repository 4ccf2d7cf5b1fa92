/*
 * dul.c - the DICOM upper layer: association establishment, data transfer, release and abort,
 * driven by the state machine of PS3.8 9.2.
 *
 * The state transition table below is PS3.8 Table 9-10 transcribed row by row (events Evt1-19
 * down, states Sta1-13 across); the actions are the ones of Tables 9-6 to 9-9. Every PDU read
 * and every call of the API is an event looked up in the table; an event the table does not
 * allow in the current state is a protocol error (from the peer: abort, AA-8) or a programming
 * error (from the caller: TR_EINVAL, the association unchanged).
 */
#include "common.h"
#include "dcm.h"
#include "dul.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

/* ---- the state machine (PS3.8 9.2) -------------------------------------------------------- */

enum state {
    STA1 = 1, /* Idle */
    STA2,     /* Transport connection open (awaiting A-ASSOCIATE-RQ PDU) */
    STA3,     /* Awaiting local A-ASSOCIATE response primitive */
    STA4,     /* Awaiting transport connection opening to complete */
    STA5,     /* Awaiting A-ASSOCIATE-AC or A-ASSOCIATE-RJ PDU */
    STA6,     /* Association established and ready for data transfer */
    STA7,     /* Awaiting A-RELEASE-RP PDU */
    STA8,     /* Awaiting local A-RELEASE response primitive */
    STA9,     /* Release collision requestor side; awaiting A-RELEASE response */
    STA10,    /* Release collision acceptor side; awaiting A-RELEASE-RP PDU */
    STA11,    /* Release collision requestor side; awaiting A-RELEASE-RP PDU */
    STA12,    /* Release collision acceptor side; awaiting A-RELEASE response primitive */
    STA13,    /* Awaiting Transport Connection Close Indication */
};

enum event {
    EVT1 = 1, /* A-ASSOCIATE request (local user) */
    EVT2,     /* Transport connect confirmation (local transport service) */
    EVT3,     /* A-ASSOCIATE-AC PDU (received on transport connection) */
    EVT4,     /* A-ASSOCIATE-RJ PDU (received on transport connection) */
    EVT5,     /* Transport connection indication (local transport service) */
    EVT6,     /* A-ASSOCIATE-RQ PDU (received on transport connection) */
    EVT7,     /* A-ASSOCIATE response primitive (accept) */
    EVT8,     /* A-ASSOCIATE response primitive (reject) */
    EVT9,     /* P-DATA request primitive */
    EVT10,    /* P-DATA-TF PDU */
    EVT11,    /* A-RELEASE request primitive */
    EVT12,    /* A-RELEASE-RQ PDU (received on open transport connection) */
    EVT13,    /* A-RELEASE-RP PDU (received on transport connection) */
    EVT14,    /* A-RELEASE response primitive */
    EVT15,    /* A-ABORT request primitive */
    EVT16,    /* A-ABORT PDU (received on open transport connection) */
    EVT17,    /* Transport connection closed indication (local transport service) */
    EVT18,    /* ARTIM timer expired (Association reject/release timer) */
    EVT19,    /* Unrecognized or invalid PDU received */
};

enum action {
    NA = 0,
    AE_1, AE_2, AE_3, AE_4, AE_5, AE_6, AE_7, AE_8,
    DT_1, DT_2,
    AR_1, AR_2, AR_3, AR_4, AR_5, AR_6, AR_7, AR_8, AR_9, AR_10,
    AA_1, AA_2, AA_3, AA_4, AA_5, AA_6, AA_7, AA_8,
};

static const char *const action_names[] = {
    [AE_1] = "AE-1", [AE_2] = "AE-2", [AE_3] = "AE-3", [AE_4] = "AE-4", [AE_5] = "AE-5",
    [AE_6] = "AE-6", [AE_7] = "AE-7", [AE_8] = "AE-8", [DT_1] = "DT-1", [DT_2] = "DT-2",
    [AR_1] = "AR-1", [AR_2] = "AR-2", [AR_3] = "AR-3", [AR_4] = "AR-4", [AR_5] = "AR-5",
    [AR_6] = "AR-6", [AR_7] = "AR-7", [AR_8] = "AR-8", [AR_9] = "AR-9", [AR_10] = "AR-10",
    [AA_1] = "AA-1", [AA_2] = "AA-2", [AA_3] = "AA-3", [AA_4] = "AA-4", [AA_5] = "AA-5",
    [AA_6] = "AA-6", [AA_7] = "AA-7", [AA_8] = "AA-8",
};

/* PS3.8 Table 9-10, one row per event; columns Sta1 ... Sta13. */
static const uint8_t table[20][14] = {
    /*         Sta1  Sta2  Sta3  Sta4  Sta5  Sta6  Sta7  Sta8  Sta9  Sta10 Sta11 Sta12 Sta13 */
    [EVT1] = {0, AE_1},
    [EVT2] = {0, [STA4] = AE_2},
    [EVT3] = {0, 0, AA_1, AA_8, 0, AE_3, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6},
    [EVT4] = {0, 0, AA_1, AA_8, 0, AE_4, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6},
    [EVT5] = {0, AE_5},
    [EVT6] = {0, 0, AE_6, AA_8, 0, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_7},
    [EVT7] = {0, [STA3] = AE_7},
    [EVT8] = {0, [STA3] = AE_8},
    [EVT9] = {0, [STA6] = DT_1, [STA8] = AR_7},
    [EVT10] = {0, 0, AA_1, AA_8, 0, AA_8, DT_2, AR_6, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6},
    [EVT11] = {0, [STA6] = AR_1},
    [EVT12] = {0, 0, AA_1, AA_8, 0, AA_8, AR_2, AR_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_6},
    [EVT13] = {0, 0, AA_1, AA_8, 0, AA_8, AA_8, AR_3, AA_8, AA_8, AR_10, AR_3, AA_8, AA_6},
    [EVT14] = {0, [STA8] = AR_4, [STA9] = AR_9, [STA12] = AR_4},
    [EVT15] = {0, 0, 0, AA_1, AA_2, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, AA_1, 0},
    [EVT16] = {0, 0, AA_2, AA_3, 0, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_3, AA_2},
    [EVT17] = {0, 0, AA_5, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AA_4, AR_5},
    [EVT18] = {0, 0, AA_2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, AA_2},
    [EVT19] = {0, 0, AA_1, AA_8, 0, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_8, AA_7},
};

const char *dul_table_action(unsigned event, unsigned state)
{
    if (event < 1 || event > 19 || state < 1 || state > 13)
        return NULL;
    uint8_t a = table[event][state];
    return a ? action_names[a] : NULL;
}

/* ---- the association ---------------------------------------------------------------------- */

struct dul_assoc {
    struct net_conn *conn;
    struct dul_config cfg;
    unsigned state;
    bool requestor;
    struct pdu_associate *rq; /* as sent or received */
    struct pdu_associate *ac; /* as received or sent */
    unsigned context_count;
    struct dul_context context[PDU_MAX_CONTEXTS];
    uint32_t peer_max;        /* peer's maximum P-DATA-TF body, 0 = unlimited */
    char peer_ae[PDU_AE_MAX + 1];
    char our_ae[PDU_AE_MAX + 1];
    /* receiving */
    uint8_t *rbuf;            /* PDU body */
    size_t rcap, rlen, rpos;
    bool in_pdata;            /* rbuf holds a P-DATA-TF body being iterated */
    uint8_t rtype;
    /* sending (PS3.8 9.3.5, annex E): sbuf holds whole P-DATA-TF PDUs not written yet
     * (sbuf[0, sready)), then the PDU being filled (sbuf[sready, slen)), whose last PDV item
     * may still be open (its header at spdv). */
    uint8_t *sbuf;
    size_t scap;              /* bytes sbuf holds: one PDU at the peer's maximum, and room to
                                 gather small PDUs for one write */
    size_t sready;
    size_t slen;
    size_t spdv;              /* 0: no PDV item open */
    uint32_t smax;            /* largest P-DATA-TF body (PDV items) we may send */
    uint8_t spc;              /* the open PDV item's context and kind */
    bool scommand;
    unsigned sbatch;          /* dul_batch_begin depth */
    /* for error messages */
    uint8_t abort_source, abort_reason;
};

void dul_config_init(struct dul_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->ae_title = "TELERAD";
    cfg->max_pdu = DUL_DEFAULT_MAX_PDU;
    cfg->artim_ms = 30000;
    cfg->timeout_ms = 300000;
    cfg->connect_timeout_ms = 30000;
    cfg->max_associate_pdu = 1u << 20;
}

static struct dul_assoc *assoc_new(const struct dul_config *cfg, bool requestor)
{
    struct dul_assoc *a = tr_calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    a->cfg = *cfg;
    if (a->cfg.max_pdu < DUL_MIN_MAX_PDU)
        a->cfg.max_pdu = DUL_MIN_MAX_PDU;
    a->state = STA1;
    a->requestor = requestor;
    snprintf(a->our_ae, sizeof(a->our_ae), "%s", cfg->ae_title ? cfg->ae_title : "TELERAD");
    return a;
}

void dul_free(struct dul_assoc *a)
{
    if (!a)
        return;
    net_close(a->conn);
    if (a->rq) {
        pdu_associate_release(a->rq);
        tr_free(a->rq);
    }
    if (a->ac) {
        pdu_associate_release(a->ac);
        tr_free(a->ac);
    }
    tr_free(a->rbuf);
    tr_free(a->sbuf);
    tr_free(a);
}

static const char *state_text(unsigned s)
{
    static const char *const names[] = {
        "", "idle", "awaiting A-ASSOCIATE-RQ", "awaiting the local association response",
        "awaiting the transport connection", "awaiting A-ASSOCIATE-AC or -RJ",
        "data transfer", "awaiting A-RELEASE-RP", "awaiting the local release response",
        "release collision (requestor, awaiting the local response)",
        "release collision (acceptor, awaiting A-RELEASE-RP)",
        "release collision (requestor, awaiting A-RELEASE-RP)",
        "release collision (acceptor, awaiting the local response)",
        "awaiting the transport connection to close"};
    return s < TR_ARRAY_SIZE(names) ? names[s] : "?";
}

static int send_pdu(struct dul_assoc *a, const struct tr_buf *b, struct tr_error *err)
{
    int rc = net_write_all(a->conn, b->data, b->len, a->cfg.timeout_ms);
    if (rc)
        return tr_error_set(err, rc, "cannot send %s to %s: %s", pdu_type_name(b->data[0]),
                            net_peer_address(a->conn), tr_strerror(rc));
    return 0;
}

static void send_abort(struct dul_assoc *a, uint8_t source, uint8_t reason)
{
    if (!a->conn)
        return;
    uint8_t pdu[10] = {PDU_ABORT, 0, 0, 0, 0, 4, 0, 0, source, reason};
    net_write_all(a->conn, pdu, sizeof(pdu), 2000);
}

static void close_transport(struct dul_assoc *a)
{
    net_close(a->conn);
    a->conn = NULL;
}

/* Look up an event in the table. */
static enum action lookup(struct dul_assoc *a, enum event e)
{
    return (enum action)table[e][a->state];
}

/* ---- reading PDUs ------------------------------------------------------------------------- */

/* Read one PDU (header and body, body capped by its type) and return the event it is:
 * EVT3/4/6/10/12/13/16/19, EVT17 when the transport closed, or a negative error (timeout). */
static int read_pdu(struct dul_assoc *a, int timeout_ms, struct tr_error *err)
{
    uint8_t h[PDU_HEADER_SIZE];
    int rc = net_read_full(a->conn, h, sizeof(h), timeout_ms);
    if (rc == TR_ECLOSED || rc == TR_EIO)
        return EVT17;
    if (rc)
        return rc;
    uint32_t len = tr_be32(h + 2);
    size_t cap;
    a->rtype = h[0]; /* the abort reason depends on it (unrecognized vs unexpected PDU) */
    switch (h[0]) {
    case PDU_P_DATA_TF: cap = a->cfg.max_pdu; break;
    case PDU_ASSOCIATE_RQ:
    case PDU_ASSOCIATE_AC: cap = a->cfg.max_associate_pdu; break;
    case PDU_ASSOCIATE_RJ:
    case PDU_RELEASE_RQ:
    case PDU_RELEASE_RP:
    case PDU_ABORT: cap = 1024; break;
    default:
        tr_error_set(err, TR_EPROTO, "%s sent an unknown PDU type 0x%02X",
                     net_peer_address(a->conn), h[0]);
        return EVT19;
    }
    if (len > cap) {
        tr_error_set(err, TR_EPROTO, "%s sent a %s of %" PRIu32 " bytes, more than the %zu allowed",
                     net_peer_address(a->conn), pdu_type_name(h[0]), len, cap);
        return EVT19;
    }
    if (len > a->rcap) {
        uint8_t *p = tr_reallocarray(a->rbuf, len, 1);
        if (!p)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        a->rbuf = p;
        a->rcap = len;
    }
    /* The body within the same timeout as the header: in Sta2 that is ARTIM, so a peer that
     * sends a header and stalls holds its connection no longer than ARTIM. */
    int body_ms = a->cfg.timeout_ms;
    if (timeout_ms > 0 && (body_ms <= 0 || timeout_ms < body_ms))
        body_ms = timeout_ms;
    rc = net_read_full(a->conn, a->rbuf, len, body_ms);
    if (rc == TR_ECLOSED || rc == TR_EIO)
        return EVT17;
    if (rc)
        return rc;
    a->rlen = len;
    a->rpos = 0;
    a->rtype = h[0];
    a->in_pdata = false;
    switch (h[0]) {
    case PDU_ASSOCIATE_RQ: return EVT6;
    case PDU_ASSOCIATE_AC: return EVT3;
    case PDU_ASSOCIATE_RJ: return EVT4;
    case PDU_P_DATA_TF: return EVT10;
    case PDU_RELEASE_RQ: return EVT12;
    case PDU_RELEASE_RP: return EVT13;
    default: return EVT16;
    }
}

/* ---- actions ------------------------------------------------------------------------------ */

/* The protocol-error actions, shared by every place that reads PDUs. Returns the error code
 * to give the caller. */
static int perform_abort_action(struct dul_assoc *a, enum action act, struct tr_error *err)
{
    switch (act) {
    case AA_1: /* send A-ABORT (service-user), start ARTIM -> Sta13 */
        send_abort(a, PDU_ABORT_USER, PDU_ABORT_NOT_SPECIFIED);
        a->state = STA13;
        close_transport(a);
        a->state = STA1;
        return tr_error_set(err, TR_EPROTO, "unexpected PDU from the peer: association aborted");
    case AA_8: { /* send A-ABORT (service-provider), issue A-P-ABORT, start ARTIM -> Sta13 */
        unsigned was = a->state;
        send_abort(a, PDU_ABORT_PROVIDER, a->rtype && a->rtype <= PDU_ABORT
                                              ? PDU_ABORT_UNEXPECTED_PDU
                                              : PDU_ABORT_UNRECOGNIZED_PDU);
        a->state = STA13;
        close_transport(a); /* we do not wait for the peer to close: nothing more to say */
        a->state = STA1;
        return tr_error_set(err, TR_EPROTO,
                            "protocol error (%s in state \"%s\"): association aborted",
                            pdu_type_name(a->rtype), state_text(was));
    }
    case AA_7: /* send A-ABORT PDU -> Sta13 */
        send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_UNEXPECTED_PDU);
        return TR_EPROTO;
    case AA_6: /* ignore PDU -> Sta13 */
        return 0;
    case AA_3: { /* A-ABORT received: issue A-ABORT / A-P-ABORT indication, close */
        uint8_t source = 0, reason = 0;
        pdu_decode_abort(a->rbuf, a->rlen, &source, &reason, NULL);
        a->abort_source = source;
        a->abort_reason = reason;
        close_transport(a);
        a->state = STA1;
        return tr_error_set(err, TR_ECLOSED, "%s aborted the association (%s)", a->peer_ae,
                            pdu_abort_text(source, reason));
    }
    case AA_2: /* stop ARTIM if running, close transport -> Sta1 */
        close_transport(a);
        a->state = STA1;
        return TR_ECLOSED;
    case AA_4: /* issue A-P-ABORT indication -> Sta1 */
        close_transport(a);
        a->state = STA1;
        return tr_error_set(err, TR_ECLOSED, "%s closed the connection",
                            a->peer_ae[0] ? a->peer_ae : "the peer");
    case AA_5: /* stop ARTIM -> Sta1 */
        close_transport(a);
        a->state = STA1;
        return TR_ECLOSED;
    default:
        return tr_error_set(err, TR_EPROTO, "state machine: no action for this event");
    }
}

/* An event that came from the peer (or the transport) and that the caller's current call does
 * not expect: apply the table's action. */
static int unexpected(struct dul_assoc *a, int evt, struct tr_error *err)
{
    enum action act = lookup(a, (enum event)evt);
    if (act == NA) {
        /* Not in the table for this state (e.g. ARTIM in data transfer): treat as invalid. */
        act = AA_8;
    }
    return perform_abort_action(a, act, err);
}

/* ARTIM: wait for the peer to close the transport (Sta13), at most artim_ms. */
static void await_close(struct dul_assoc *a)
{
    a->state = STA13;
    while (a->conn) {
        int evt = read_pdu(a, a->cfg.artim_ms, NULL);
        if (evt < 0) {                 /* EVT18: ARTIM expired -> AA-2 */
            perform_abort_action(a, lookup(a, EVT18), NULL);
            break;
        }
        enum action act = lookup(a, (enum event)evt);
        if (act == AR_5 || act == AA_2) { /* transport closed, or abort received */
            close_transport(a);
            a->state = STA1;
            break;
        }
        if (act == AA_7) {                /* A-ASSOCIATE-RQ or invalid PDU in Sta13 */
            send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_UNEXPECTED_PDU);
            continue;
        }
        /* AA-6: ignore */
    }
    a->state = STA1;
}

/* ---- after AC: record the negotiated contexts --------------------------------------------- */

static void record_contexts(struct dul_assoc *a)
{
    const struct pdu_associate *rq = a->rq, *ac = a->ac;
    a->context_count = 0;
    for (unsigned i = 0; i < rq->context_count && a->context_count < PDU_MAX_CONTEXTS; i++) {
        const struct pdu_presentation_context *pr = &rq->context[i];
        struct dul_context *c = &a->context[a->context_count++];
        memset(c, 0, sizeof(*c));
        c->id = pr->id;
        c->abstract_syntax = pr->abstract_syntax;
        c->result = PDU_PC_NO_REASON;
        c->requestor_scu = true;
        for (unsigned k = 0; k < ac->context_count; k++) {
            const struct pdu_presentation_context *pa = &ac->context[k];
            if (pa->id != pr->id)
                continue;
            c->result = pa->result;
            if (pa->result == PDU_PC_ACCEPTANCE && pa->ts_count)
                c->transfer_syntax = pa->transfer_syntax[0];
            break;
        }
        /* Role selection (PS3.7 D.3.3.4): absent -> requestor SCU only. */
        for (unsigned r = 0; r < rq->role_count; r++) {
            if (strcmp(rq->role[r].sop_class, c->abstract_syntax) != 0)
                continue;
            bool answered = false;
            for (unsigned k = 0; k < ac->role_count; k++) {
                if (strcmp(ac->role[k].sop_class, c->abstract_syntax) != 0)
                    continue;
                c->requestor_scu = rq->role[r].scu && ac->role[k].scu;
                c->requestor_scp = rq->role[r].scp && ac->role[k].scp;
                answered = true;
            }
            if (!answered) {
                c->requestor_scu = true; /* not answered: default roles */
                c->requestor_scp = false;
            }
        }
    }
    a->peer_max = a->requestor ? ac->max_length : rq->max_length;
}

/* Room for gathering small PDUs into one write, beyond one PDU at the peer's maximum. */
#define SEND_GATHER (64u * 1024u)

static int init_send_buffer(struct dul_assoc *a, struct tr_error *err)
{
    /* A P-DATA-TF body of at most the peer's maximum length (PS3.8 D.1). We cap our PDUs at
     * 1 MiB when the peer states no limit (0), and at 16 MiB. */
    uint32_t max = a->peer_max ? a->peer_max : (1u << 20);
    if (max > (1u << 24))
        max = 1u << 24;
    if (max < 128)
        max = 128; /* a peer announcing less is broken; PS3.8 says at least 1 byte of data */
    a->smax = max;
    a->scap = PDU_HEADER_SIZE + (size_t)max + SEND_GATHER;
    a->sbuf = tr_malloc(a->scap);
    if (!a->sbuf)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    a->sready = a->slen = a->spdv = 0;
    return 0;
}

/* ---- requestor ---------------------------------------------------------------------------- */

static void fill_identification(struct pdu_associate *p, const struct dul_config *cfg)
{
    p->protocol_version = 1;
    if (!p->application_context[0])
        snprintf(p->application_context, sizeof(p->application_context), "%s",
                 DUL_APPLICATION_CONTEXT);
    p->max_length = cfg->max_pdu;
    snprintf(p->implementation_class_uid, sizeof(p->implementation_class_uid), "%s",
             DCM_IMPLEMENTATION_CLASS_UID);
    snprintf(p->implementation_version, sizeof(p->implementation_version), "%s",
             DCM_IMPLEMENTATION_VERSION_NAME);
}

int dul_request(const struct dul_config *cfg, const char *host, int port, struct pdu_associate *rq,
                struct dul_assoc **out, struct tr_error *err)
{
    struct dul_assoc *a = assoc_new(cfg, true);
    if (!a)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    a->rq = rq;
    snprintf(a->peer_ae, sizeof(a->peer_ae), "%s", rq->called_ae);
    if (!rq->calling_ae[0])
        snprintf(rq->calling_ae, sizeof(rq->calling_ae), "%s", a->our_ae);
    fill_identification(rq, cfg);

    /* Evt1 in Sta1: AE-1, issue transport connect -> Sta4. */
    a->state = STA4;
    int rc = net_connect(host, port, cfg->tls, cfg->connect_timeout_ms, &a->conn, err);
    if (rc) {
        a->rq = NULL; /* the caller keeps its request */
        dul_free(a);
        return rc;
    }
    /* Evt2 in Sta4: AE-2, send A-ASSOCIATE-RQ -> Sta5. */
    struct tr_buf b;
    tr_buf_init(&b, cfg->max_associate_pdu);
    rc = pdu_encode_associate_rq(rq, &b);
    if (rc) {
        tr_buf_release(&b);
        a->rq = NULL;
        dul_free(a);
        return tr_error_set(err, rc, "cannot encode A-ASSOCIATE-RQ: %s", tr_strerror(rc));
    }
    rc = send_pdu(a, &b, err);
    tr_buf_release(&b);
    if (rc) {
        a->rq = NULL;
        dul_free(a);
        return rc;
    }
    a->state = STA5;

    /* Sta5: await A-ASSOCIATE-AC or -RJ, within ARTIM-like bound (the connect timeout). */
    int evt = read_pdu(a, cfg->connect_timeout_ms, err);
    if (evt == TR_ETIMEOUT) {
        /* No answer: abort (Evt15 in Sta5 is AA-1). */
        send_abort(a, PDU_ABORT_USER, PDU_ABORT_NOT_SPECIFIED);
        rc = tr_error_set(err, TR_ETIMEOUT, "%s did not answer the association request",
                          net_peer_address(a->conn));
    } else if (evt < 0) {
        rc = evt;
    } else if (evt == EVT3) {
        /* AE-3: issue A-ASSOCIATE confirmation (accept) -> Sta6. */
        a->ac = tr_malloc(sizeof(*a->ac));
        if (!a->ac) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        } else {
            pdu_associate_init(a->ac);
            rc = pdu_decode_associate(PDU_ASSOCIATE_AC, a->rbuf, a->rlen, a->ac, err);
            if (rc) {
                send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
                tr_error_prefix(err, "invalid A-ASSOCIATE-AC from %s", net_peer_address(a->conn));
            }
        }
        if (rc == 0) {
            a->state = STA6;
            record_contexts(a);
            rc = init_send_buffer(a, err);
        }
    } else if (evt == EVT4) {
        /* AE-4: issue A-ASSOCIATE confirmation (reject), close transport -> Sta1. */
        struct pdu_reject rj = {0};
        pdu_decode_associate_rj(a->rbuf, a->rlen, &rj, NULL);
        rc = tr_error_set(err, TR_EDENIED, "association %s", pdu_reject_text(&rj));
        close_transport(a);
        a->state = STA1;
    } else {
        rc = unexpected(a, evt, err);
        if (rc == 0)
            rc = tr_error_set(err, TR_EPROTO, "unexpected answer to the association request");
    }
    if (rc) {
        a->rq = NULL;
        dul_free(a);
        return rc;
    }
    *out = a;
    return 0;
}

/* ---- acceptor ----------------------------------------------------------------------------- */

void dul_negotiate(const struct pdu_associate *rq, const struct dul_support *support, size_t count,
                   struct pdu_associate *ac)
{
    ac->context_count = 0;
    for (unsigned i = 0; i < rq->context_count; i++) {
        const struct pdu_presentation_context *pr = &rq->context[i];
        struct pdu_presentation_context *pa = &ac->context[ac->context_count++];
        memset(pa, 0, sizeof(*pa));
        pa->id = pr->id;
        pa->result = PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED;
        const struct dul_support *s = NULL;
        for (size_t k = 0; k < count; k++) {
            if (strcmp(support[k].abstract_syntax, pr->abstract_syntax) == 0) {
                s = &support[k];
                break;
            }
        }
        if (!s)
            continue;
        pa->result = PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED;
        for (const char *const *ours = s->transfer_syntaxes; *ours && !pa->ts_count; ours++) {
            for (unsigned t = 0; t < pr->ts_count; t++) {
                if (strcmp(*ours, pr->transfer_syntax[t]) == 0) {
                    pa->result = PDU_PC_ACCEPTANCE;
                    pa->transfer_syntax[0] = pr->transfer_syntax[t];
                    pa->ts_count = 1;
                    break;
                }
            }
        }
    }
    /* Role selection: the requestor proposes; we allow what we can play the other side of. A
     * requestor asking to be SCP (C-GET) needs us to be SCU of that SOP class. */
    ac->role_count = 0;
    for (unsigned r = 0; r < rq->role_count && ac->role_count < PDU_MAX_ROLES; r++) {
        const struct pdu_role *want = &rq->role[r];
        const struct dul_support *s = NULL;
        for (size_t k = 0; k < count; k++) {
            if (strcmp(support[k].abstract_syntax, want->sop_class) == 0) {
                s = &support[k];
                break;
            }
        }
        struct pdu_role *give = &ac->role[ac->role_count++];
        give->sop_class = want->sop_class;
        give->scu = want->scu && (!s || s->scp_role);
        give->scp = want->scp && s && s->scu_role;
    }
}

int dul_accept(struct net_conn *conn, const struct dul_config *cfg, dul_decide_fn decide,
               void *ctx, struct dul_assoc **out, struct tr_error *err)
{
    struct dul_assoc *a = assoc_new(cfg, false);
    if (!a) {
        net_close(conn);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    a->conn = conn;
    /* Evt5 in Sta1: AE-5, issue transport connection response, start ARTIM -> Sta2. */
    a->state = STA2;
    int rc;
    int evt = read_pdu(a, cfg->artim_ms, err);
    if (evt == TR_ETIMEOUT) {
        /* Evt18 in Sta2: AA-2, close. */
        rc = tr_error_set(err, TR_ETIMEOUT, "%s sent no A-ASSOCIATE-RQ within %d ms",
                          net_peer_address(conn), cfg->artim_ms);
        goto fail;
    }
    if (evt < 0) {
        rc = evt;
        goto fail;
    }
    if (evt != EVT6) {
        /* Sta2: anything but A-ASSOCIATE-RQ is AA-1 (abort) / AA-2 / AA-5. */
        char peer[80]; /* the abort action closes the connection */
        snprintf(peer, sizeof(peer), "%s", net_peer_address(conn));
        rc = unexpected(a, evt, err);
        if (rc == 0)
            rc = TR_EPROTO;
        tr_error_prefix(err, "%s", peer);
        goto fail;
    }
    /* AE-6: stop ARTIM; decode and decide. */
    a->rq = tr_malloc(sizeof(*a->rq));
    a->ac = tr_malloc(sizeof(*a->ac));
    if (!a->rq || !a->ac) {
        tr_free(a->rq);
        tr_free(a->ac);
        a->rq = a->ac = NULL;
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto fail;
    }
    pdu_associate_init(a->rq);
    pdu_associate_init(a->ac);
    struct pdu_reject rj = {PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER, PDU_RJ_NO_REASON};
    bool accept = true;
    struct tr_error derr = TR_ERROR_INIT;
    rc = pdu_decode_associate(PDU_ASSOCIATE_RQ, a->rbuf, a->rlen, a->rq, &derr);
    if (rc) {
        /* Not acceptable by the service-provider: the PDU is malformed. A malformed RQ is an
         * invalid PDU (Evt19 in Sta2: AA-1, abort). */
        send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
        rc = tr_error_set(err, TR_EPROTO, "%s: invalid A-ASSOCIATE-RQ: %s", net_peer_address(conn),
                          derr.message);
        goto fail;
    }
    snprintf(a->peer_ae, sizeof(a->peer_ae), "%s", a->rq->calling_ae);
    if (!(a->rq->protocol_version & 1)) {
        accept = false;
        rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_PROVIDER_ACSE,
                                 PDU_RJ_PROTOCOL_VERSION_NOT_SUPPORTED};
    } else if (strcmp(a->rq->application_context, DUL_APPLICATION_CONTEXT) != 0) {
        accept = false;
        rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                                 PDU_RJ_APPLICATION_CONTEXT_NOT_SUPPORTED};
    } else {
        /* A-ASSOCIATE indication -> Sta3; the local user decides (Evt7 / Evt8). */
        a->state = STA3;
        snprintf(a->ac->called_ae, sizeof(a->ac->called_ae), "%s", a->rq->called_ae);
        snprintf(a->ac->calling_ae, sizeof(a->ac->calling_ae), "%s", a->rq->calling_ae);
        accept = decide(ctx, a, a->rq, a->ac, &rj) == 0;
    }
    struct tr_buf b;
    tr_buf_init(&b, cfg->max_associate_pdu);
    if (accept) {
        /* Evt7 in Sta3: AE-7, send A-ASSOCIATE-AC -> Sta6. */
        fill_identification(a->ac, cfg);
        rc = pdu_encode_associate_ac(a->ac, &b);
        if (rc) {
            tr_buf_release(&b);
            send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_NOT_SPECIFIED);
            rc = tr_error_set(err, rc, "cannot encode A-ASSOCIATE-AC: %s", tr_strerror(rc));
            goto fail;
        }
        rc = send_pdu(a, &b, err);
        tr_buf_release(&b);
        if (rc)
            goto fail;
        a->state = STA6;
        record_contexts(a);
        if ((rc = init_send_buffer(a, err)))
            goto fail;
        *out = a;
        return 0;
    }
    /* Evt8 in Sta3 (AE-8) or not acceptable in AE-6: send A-ASSOCIATE-RJ, start ARTIM ->
     * Sta13, then wait for the peer to close. */
    rc = pdu_encode_associate_rj(&rj, &b);
    if (rc == 0)
        send_pdu(a, &b, NULL);
    tr_buf_release(&b);
    /* The message first: await_close frees the connection (and its peer address). */
    rc = tr_error_set(err, TR_EDENIED, "association from %s (calling AE \"%s\", called AE \"%s\") %s",
                      net_peer_address(conn), a->rq->calling_ae, a->rq->called_ae,
                      pdu_reject_text(&rj));
    await_close(a);
fail:
    dul_free(a);
    return rc;
}

/* ---- accessors ---------------------------------------------------------------------------- */

unsigned dul_context_count(const struct dul_assoc *a)
{
    return a->context_count;
}

const struct dul_context *dul_context_at(const struct dul_assoc *a, unsigned i)
{
    return i < a->context_count ? &a->context[i] : NULL;
}

const struct dul_context *dul_context_by_id(const struct dul_assoc *a, uint8_t id)
{
    for (unsigned i = 0; i < a->context_count; i++) {
        if (a->context[i].id == id)
            return &a->context[i];
    }
    return NULL;
}

const struct dul_context *dul_find_context(const struct dul_assoc *a, const char *abstract_syntax,
                                           const char *ts)
{
    for (unsigned i = 0; i < a->context_count; i++) {
        const struct dul_context *c = &a->context[i];
        if (c->result != PDU_PC_ACCEPTANCE || strcmp(c->abstract_syntax, abstract_syntax) != 0)
            continue;
        if (!ts || strcmp(c->transfer_syntax, ts) == 0)
            return c;
    }
    return NULL;
}

const char *dul_peer_ae(const struct dul_assoc *a)
{
    return a->peer_ae;
}

const char *dul_our_ae(const struct dul_assoc *a)
{
    return a->our_ae;
}

const char *dul_peer_address(const struct dul_assoc *a)
{
    return a->conn ? net_peer_address(a->conn) : "(closed)";
}

const char *dul_peer_ip(const struct dul_assoc *a)
{
    return a->conn ? net_peer_ip(a->conn) : "";
}

const char *dul_peer_implementation(const struct dul_assoc *a)
{
    const struct pdu_associate *p = a->requestor ? a->ac : a->rq;
    return p ? p->implementation_class_uid : "";
}

const char *dul_peer_version(const struct dul_assoc *a)
{
    const struct pdu_associate *p = a->requestor ? a->ac : a->rq;
    return p ? p->implementation_version : "";
}

uint32_t dul_peer_max_pdu(const struct dul_assoc *a)
{
    return a->peer_max;
}

const struct pdu_user_identity *dul_identity(const struct dul_assoc *a)
{
    return a->rq ? &a->rq->identity : NULL;
}

struct net_conn *dul_connection(struct dul_assoc *a)
{
    return a->conn;
}

int dul_timeout(const struct dul_assoc *a)
{
    return a->cfg.timeout_ms;
}

bool dul_is_requestor(const struct dul_assoc *a)
{
    return a->requestor;
}

unsigned dul_state(const struct dul_assoc *a)
{
    return a->state;
}

/* ---- data transfer ------------------------------------------------------------------------ */

/* PS3.8 9.3.5: a P-DATA-TF PDU carries one or more PDV items, each a fragment of one command
 * or one data set (annex E). What goes into one PDU here: the fragments of one message, in
 * order - the command's, the last of them flagged, then the data set's - as many as fit the
 * peer's maximum. A command always starts a new PDU, so a PDU never holds two messages. */

/* Close the open PDV item: its length and message control header (E.2). */
static void close_pdv(struct dul_assoc *a, bool last)
{
    uint8_t *h = a->sbuf + a->spdv;
    tr_put_be32(h, (uint32_t)(a->slen - a->spdv - 4));
    h[4] = a->spc;
    h[5] = (uint8_t)((a->scommand ? 0x01 : 0) | (last ? 0x02 : 0));
    a->spdv = 0;
}

/* Close the PDU being filled (an open PDV item is closed as not the last fragment). */
static void close_pdu(struct dul_assoc *a)
{
    if (a->slen == a->sready)
        return;
    if (a->spdv)
        close_pdv(a, false);
    uint8_t *h = a->sbuf + a->sready;
    h[0] = PDU_P_DATA_TF;
    h[1] = 0;
    tr_put_be32(h + 2, (uint32_t)(a->slen - a->sready - PDU_HEADER_SIZE));
    a->sready = a->slen;
}

/* Write the whole PDUs; the PDU being filled moves to the front of the buffer. */
static int write_ready(struct dul_assoc *a, struct tr_error *err)
{
    if (!a->sready)
        return 0;
    /* Evt9: P-DATA request: DT-1 in Sta6, AR-7 in Sta8. */
    enum action act = lookup(a, EVT9);
    if (act != DT_1 && act != AR_7)
        return tr_error_set(err, TR_EINVAL, "cannot send data in state \"%s\"",
                            state_text(a->state));
    int rc = net_write_all(a->conn, a->sbuf, a->sready, a->cfg.timeout_ms);
    size_t open = a->slen - a->sready;
    if (open)
        memmove(a->sbuf, a->sbuf + a->sready, open);
    if (a->spdv)
        a->spdv -= a->sready;
    a->slen = open;
    a->sready = 0;
    if (rc)
        return tr_error_set(err, rc, "cannot send to %s: %s", net_peer_address(a->conn),
                            tr_strerror(rc));
    return 0;
}

/* Make room for n more bytes at the end of the buffer (n <= one PDU). */
static int reserve(struct dul_assoc *a, size_t n, struct tr_error *err)
{
    return a->slen + n <= a->scap ? 0 : write_ready(a, err);
}

int dul_flush(struct dul_assoc *a, struct tr_error *err)
{
    if (!a->conn)
        return tr_error_set(err, TR_ECLOSED, "the association is closed");
    close_pdu(a);
    return write_ready(a, err);
}

void dul_batch_begin(struct dul_assoc *a)
{
    a->sbatch++;
}

int dul_batch_end(struct dul_assoc *a, struct tr_error *err)
{
    if (a->sbatch && --a->sbatch)
        return 0;
    if (!a->conn)
        return tr_error_set(err, TR_ECLOSED, "the association is closed");
    return dul_flush(a, err);
}

int dul_send(struct dul_assoc *a, uint8_t pc, bool command, const void *data, size_t len,
             bool last, struct tr_error *err)
{
    if (!a->conn)
        return tr_error_set(err, TR_ECLOSED, "the association is closed");
    /* The common case first (a data set is written element by element): more of the open PDV
     * item, with room for it in this PDU and in the buffer. */
    if (a->spdv && a->spc == pc && a->scommand == command && !last && len &&
        len <= a->smax - (a->slen - a->sready - PDU_HEADER_SIZE) && len <= a->scap - a->slen) {
        memcpy(a->sbuf + a->slen, data, len);
        a->slen += len;
        return 0;
    }
    enum action act = lookup(a, EVT9);
    if (act != DT_1 && act != AR_7)
        return tr_error_set(err, TR_EINVAL, "cannot send data in state \"%s\"",
                            state_text(a->state));
    if (a->spdv && (a->spc != pc || a->scommand != command))
        return tr_error_set(err, TR_EINVAL, "a message fragment is still pending on another "
                                            "context or part");
    if (!len && !last)
        return 0;
    if (!a->spdv && command)
        close_pdu(a); /* a new message: a new PDU */
    const uint8_t *p = data;
    int rc;
    for (;;) {
        if (a->slen == a->sready) { /* open a PDU */
            if ((rc = reserve(a, PDU_HEADER_SIZE + 6, err)))
                return rc;
            a->slen += PDU_HEADER_SIZE;
        }
        size_t body = a->slen - a->sready - PDU_HEADER_SIZE;
        if (!a->spdv) { /* open a PDV item, if the PDU has room for it and some data */
            if (a->smax - body < 6 + (len ? 1 : 0)) {
                close_pdu(a);
                continue;
            }
            if ((rc = reserve(a, 6, err)))
                return rc;
            a->spdv = a->slen;
            a->spc = pc;
            a->scommand = command;
            a->slen += 6;
            body += 6;
        }
        size_t n = TR_MIN(len, a->smax - body);
        if (n) {
            if ((rc = reserve(a, n, err)))
                return rc;
            memcpy(a->sbuf + a->slen, p, n);
            a->slen += n;
            p += n;
            len -= n;
        }
        if (!len)
            break;
        close_pdu(a); /* full; the rest goes into the next one */
    }
    if (!last)
        return 0;
    close_pdv(a, true);
    return a->sbatch ? 0 : dul_flush(a, err);
}

int dul_receive(struct dul_assoc *a, int timeout_ms, struct pdu_pdv *pdv, struct tr_error *err)
{
    if (!a->conn)
        return tr_error_set(err, TR_ECLOSED, "the association is closed");
    if (a->slen) {
        /* What is gathered goes out before we wait for the peer (it may wait for it). */
        int rc = dul_flush(a, err);
        if (rc)
            return rc;
    }
    if (timeout_ms < 0)
        timeout_ms = a->cfg.timeout_ms;
    for (;;) {
        if (a->in_pdata) {
            struct tr_error perr = TR_ERROR_INIT;
            int rc = pdu_next_pdv(a->rbuf, a->rlen, &a->rpos, pdv, &perr);
            if (rc > 0) {
                if (!dul_context_by_id(a, pdv->context_id) ||
                    dul_context_by_id(a, pdv->context_id)->result != PDU_PC_ACCEPTANCE) {
                    send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
                    close_transport(a);
                    a->state = STA1;
                    return tr_error_set(err, TR_EPROTO,
                                        "%s sent data on presentation context %u, which was "
                                        "not accepted: association aborted",
                                        a->peer_ae, pdv->context_id);
                }
                return 1;
            }
            a->in_pdata = false;
            if (rc < 0) {
                send_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
                close_transport(a);
                a->state = STA1;
                return tr_error_set(err, TR_EPROTO, "malformed P-DATA-TF from %s (%s): "
                                                    "association aborted",
                                    a->peer_ae, perr.message);
            }
        }
        int evt = read_pdu(a, timeout_ms, err);
        if (evt == TR_ETIMEOUT)
            return tr_error_set(err, TR_ETIMEOUT, "%s sent nothing for %d s", a->peer_ae,
                                timeout_ms / 1000);
        if (evt < 0)
            return evt;
        enum action act = lookup(a, (enum event)evt);
        if (act == DT_2 || act == AR_6) {
            /* P-DATA indication (AR-6 in Sta7: data while we await release: delivered too). */
            a->in_pdata = true;
            a->rpos = 0;
            continue;
        }
        if (act == AR_2) {
            /* A-RELEASE-RQ: issue A-RELEASE indication -> Sta8. */
            a->state = STA8;
            return 0;
        }
        return perform_abort_action(a, act == NA ? AA_8 : act, err);
    }
}

bool dul_pending(struct dul_assoc *a)
{
    if (!a->conn)
        return false;
    if (a->in_pdata && a->rpos < a->rlen)
        return true;
    return net_wait_readable(a->conn, 0) > 0;
}

/* ---- release and abort -------------------------------------------------------------------- */

int dul_release(struct dul_assoc *a, struct tr_error *err)
{
    if (!a->conn)
        return tr_error_set(err, TR_ECLOSED, "the association is closed");
    if (lookup(a, EVT11) != AR_1)
        return tr_error_set(err, TR_EINVAL, "cannot release in state \"%s\"", state_text(a->state));
    if (a->slen) {
        int frc = dul_flush(a, err);
        if (frc)
            return frc;
    }
    /* AR-1: send A-RELEASE-RQ -> Sta7. */
    struct tr_buf b;
    tr_buf_init(&b, 64);
    pdu_encode_release_rq(&b);
    int rc = send_pdu(a, &b, err);
    tr_buf_release(&b);
    if (rc)
        return rc;
    a->state = STA7;
    for (;;) {
        int evt = read_pdu(a, a->cfg.artim_ms, err);
        if (evt == TR_ETIMEOUT) {
            dul_abort(a, PDU_ABORT_USER, PDU_ABORT_NOT_SPECIFIED);
            return tr_error_set(err, TR_ETIMEOUT, "%s did not answer the release request",
                                a->peer_ae);
        }
        if (evt < 0)
            return evt;
        enum action act = lookup(a, (enum event)evt);
        switch (act) {
        case AR_3: /* A-RELEASE-RP: confirmation, close transport -> Sta1 */
            close_transport(a);
            a->state = STA1;
            return 0;
        case AR_6: /* P-DATA while awaiting the release answer: not for us any more */
            continue;
        case AR_8: /* release collision: as requestor -> Sta9, answer (Evt14: AR-9) */
            a->state = STA9;
            tr_buf_init(&b, 64);
            pdu_encode_release_rp(&b);
            rc = send_pdu(a, &b, err);
            tr_buf_release(&b);
            if (rc)
                return rc;
            a->state = STA11; /* then await A-RELEASE-RP (Evt13 in Sta11: AR-3) */
            continue;
        default: return perform_abort_action(a, act == NA ? AA_8 : act, err);
        }
    }
}

int dul_release_reply(struct dul_assoc *a, struct tr_error *err)
{
    if (!a->conn)
        return tr_error_set(err, TR_ECLOSED, "the association is closed");
    if (lookup(a, EVT14) != AR_4)
        return tr_error_set(err, TR_EINVAL, "no release to answer in state \"%s\"",
                            state_text(a->state));
    if (a->slen) {
        /* Data sent in Sta8 (AR-7) goes before the A-RELEASE-RP. */
        int frc = dul_flush(a, err);
        if (frc)
            return frc;
    }
    /* AR-4: send A-RELEASE-RP, start ARTIM -> Sta13. */
    struct tr_buf b;
    tr_buf_init(&b, 64);
    pdu_encode_release_rp(&b);
    int rc = send_pdu(a, &b, err);
    tr_buf_release(&b);
    await_close(a);
    return rc;
}

void dul_abort(struct dul_assoc *a, uint8_t source, uint8_t reason)
{
    if (!a || !a->conn)
        return;
    /* Evt15: AA-1 (send A-ABORT, start ARTIM -> Sta13); we close at once. What was gathered
     * for sending is dropped. */
    a->sready = a->slen = a->spdv = 0;
    send_abort(a, source, reason);
    close_transport(a);
    a->state = STA1;
}
