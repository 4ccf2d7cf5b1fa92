/*
 * dul.h - the DICOM upper layer service: associations (PS3.8 7 and 9).
 *
 * An association is driven by the state machine of PS3.8 9.2 (table in dul.c, checkable
 * line by line against Table 9-10). The API is synchronous: each call is one or more events
 * of that machine, and PDUs from the peer are read when the caller asks for the next one.
 * One thread uses an association at a time.
 *
 * Exported names start with dul_.
 */
#ifndef NET_DUL_H
#define NET_DUL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "pdu.h"
#include "transport.h"

#define DUL_APPLICATION_CONTEXT "1.2.840.10008.3.1.1.1"
#define DUL_DEFAULT_MAX_PDU 262144u   /* what we receive; peers' limits are respected */
#define DUL_MIN_MAX_PDU 4096u

struct dul_config {
    const char *ae_title;             /* ours: calling AE as SCU, called AE expected as SCP */
    uint32_t max_pdu;                 /* largest P-DATA-TF body we accept (default above) */
    int artim_ms;                     /* ARTIM timer (PS3.8 9.1.5), default 30000 */
    int timeout_ms;                   /* longest wait for the peer inside an association
                                         (DIMSE timeout / idle timeout), default 300000 */
    int connect_timeout_ms;           /* default 30000 */
    struct net_tls *tls;              /* DICOM TLS (PS3.15 B.9) when set */
    uint32_t max_associate_pdu;       /* cap on an A-ASSOCIATE PDU we accept, default 1 MiB */
};

void dul_config_init(struct dul_config *cfg);

struct dul_assoc;

/* A negotiated presentation context. */
struct dul_context {
    uint8_t id;
    uint8_t result;                   /* enum pdu_context_result */
    const char *abstract_syntax;
    const char *transfer_syntax;      /* accepted; NULL if rejected */
    bool requestor_scu, requestor_scp; /* roles of the association-requestor (PS3.7 D.3.3.4):
                                          default SCU only; SCP too after role selection */
};

/* ---- requestor (SCU) ---------------------------------------------------------------------- */

/* Open an association: connect (with TLS if cfg->tls), send `rq` (the caller fills AE titles,
 * presentation contexts, role selection, user identity; this fills the application context,
 * maximum length and implementation identification) and wait for the answer. Rejection is
 * TR_EDENIED with the reason in words; an abort TR_ECLOSED. `rq` must come from tr_malloc and
 * have been initialised with pdu_associate_init: ownership passes to the association on
 * success only (strings it points to must outlive the association). */
int dul_request(const struct dul_config *cfg, const char *host, int port, struct pdu_associate *rq,
                struct dul_assoc **out, struct tr_error *err);

/* ---- acceptor (SCP) ----------------------------------------------------------------------- */

/* What an acceptor decides about an A-ASSOCIATE-RQ: fill `ac` (context results and transfer
 * syntaxes, role selection answers, user identity response) and return 0 to accept, or fill
 * `rj` and return 1 to reject. The association is passed for its peer information. */
typedef int (*dul_decide_fn)(void *ctx, struct dul_assoc *a, const struct pdu_associate *rq,
                             struct pdu_associate *ac, struct pdu_reject *rj);

/* Take a connection (ownership passes to the association, also on failure) and negotiate:
 * wait for A-ASSOCIATE-RQ within ARTIM, decide, answer. On rejection the peer is given ARTIM
 * to close, and the result is TR_EDENIED. */
int dul_accept(struct net_conn *conn, const struct dul_config *cfg, dul_decide_fn decide,
               void *ctx, struct dul_assoc **out, struct tr_error *err);

/* Note: a rejection always answers a request (PS3.8 9.2). To refuse a connection because too
 * many associations are open, accept it and let the decide function reject it with result
 * transient, source service-provider (presentation), reason local limit exceeded. */

/* One SOP class an acceptor supports, with the transfer syntaxes it takes in order of
 * preference and the roles it can play. */
struct dul_support {
    const char *abstract_syntax;
    const char *const *transfer_syntaxes; /* NULL-terminated, preferred first */
    bool scp_role;                        /* can act as SCP (e.g. storage for C-GET: SCU side) */
    bool scu_role;                        /* can act as SCU on this association (C-GET stores) */
};

/* Standard negotiation: for each requested context, accept the first of our transfer syntaxes
 * (in our preference order) that the requestor proposed; answer role selection items with
 * what both sides allow (PS3.7 D.3.3.4). Fills ac->context[] and ac->role[]. */
void dul_negotiate(const struct pdu_associate *rq, const struct dul_support *support, size_t count,
                   struct pdu_associate *ac);

/* ---- after negotiation -------------------------------------------------------------------- */

unsigned dul_context_count(const struct dul_assoc *a);
const struct dul_context *dul_context_at(const struct dul_assoc *a, unsigned i);
const struct dul_context *dul_context_by_id(const struct dul_assoc *a, uint8_t id);
/* The first accepted context for `abstract_syntax` whose transfer syntax is `ts` (any if
 * NULL). */
const struct dul_context *dul_find_context(const struct dul_assoc *a, const char *abstract_syntax,
                                           const char *ts);
const char *dul_peer_ae(const struct dul_assoc *a);    /* calling AE (SCP) / called AE (SCU) */
const char *dul_our_ae(const struct dul_assoc *a);
const char *dul_peer_address(const struct dul_assoc *a);
const char *dul_peer_ip(const struct dul_assoc *a);
const char *dul_peer_implementation(const struct dul_assoc *a); /* class UID */
const char *dul_peer_version(const struct dul_assoc *a);
uint32_t dul_peer_max_pdu(const struct dul_assoc *a);
const struct pdu_user_identity *dul_identity(const struct dul_assoc *a); /* as requested */
struct net_conn *dul_connection(struct dul_assoc *a);
int dul_timeout(const struct dul_assoc *a);
bool dul_is_requestor(const struct dul_assoc *a);

/* ---- data transfer (PS3.8 9.3.5, PS3.7 annex E) ------------------------------------------ */

/* Send part of a command or data set on context `pc`. Fragments are gathered and sent as
 * P-DATA-TF PDUs that fit the peer's maximum length (PS3.8 9.3.5, annex E): each PDU holds
 * fragments of one message only (a command always starts a new PDU), the fragments of a data
 * set follow its command's in the same PDU while they fit. `last` ends the command or data
 * set; outside a batch it also writes everything gathered. */
int dul_send(struct dul_assoc *a, uint8_t pc, bool command, const void *data, size_t len,
             bool last, struct tr_error *err);

/* Batches: between dul_batch_begin and dul_batch_end, a `last` fragment does not write what
 * is gathered, so that a command and its data set share a PDU, and the PDUs of several
 * messages go out in one write. What is gathered is written when the buffer is full (one PDU
 * at the peer's maximum plus 64 KiB), by dul_flush, by the outermost dul_batch_end, and
 * before dul_receive, dul_release or dul_release_reply wait for the peer. Batches nest. The
 * caller decides how long a message may wait: a batch is for messages that are ready one
 * right after the other, not for holding one back while something slow happens. */
void dul_batch_begin(struct dul_assoc *a);
int dul_batch_end(struct dul_assoc *a, struct tr_error *err);
/* Write everything gathered now (an unfinished command or data set continues in the next
 * PDU). */
int dul_flush(struct dul_assoc *a, struct tr_error *err);

/* Receive the next presentation data value: 1 with *pdv filled (data valid until the next
 * call), 0 when the peer asked to release (answer with dul_release_reply), or a negative error:
 * TR_ECLOSED when the peer aborted or closed (err says which and why), TR_ETIMEOUT after
 * timeout_ms without data (< 0: the configured timeout), TR_EPROTO when the peer broke the
 * protocol (the association has been aborted). */
int dul_receive(struct dul_assoc *a, int timeout_ms, struct pdu_pdv *pdv, struct tr_error *err);

/* Is something from the peer waiting to be read (without blocking)? For checking for a
 * C-CANCEL between responses. */
bool dul_pending(struct dul_assoc *a);

/* ---- the end ------------------------------------------------------------------------------ */

/* Requestor: release the association (A-RELEASE-RQ, wait for A-RELEASE-RP; release collisions
 * handled as PS3.8 9.2 says). */
int dul_release(struct dul_assoc *a, struct tr_error *err);
/* Acceptor, after dul_receive returned 0: send A-RELEASE-RP and wait (ARTIM) for the peer to
 * close. */
int dul_release_reply(struct dul_assoc *a, struct tr_error *err);
/* Abort: send A-ABORT (source: PDU_ABORT_USER or PDU_ABORT_PROVIDER) and close. */
void dul_abort(struct dul_assoc *a, uint8_t source, uint8_t reason);
/* Close the transport if still open and free everything. NULL is a no-op. */
void dul_free(struct dul_assoc *a);

/* ---- for tests: the state machine ---------------------------------------------------------- */

/* States Sta1-Sta13 and events Evt1-Evt19 of PS3.8 9.2; the action the table gives for an
 * event in a state ("AE-1" ... "AA-8"), or NULL where the table has no entry. */
const char *dul_table_action(unsigned event, unsigned state);
unsigned dul_state(const struct dul_assoc *a);

#endif
