/*
 * mllp.h - the Minimal Lower Layer Protocol (HL7 v2.5.1 Implementation Guide, appendix C;
 * MLLP release 1 framing): each HL7 message travels as
 *
 *     <VT 0x0B> message <FS 0x1C><CR 0x0D>
 *
 * over TCP, optionally under TLS (src/net/transport.h). Here: an incremental deframer, a
 * listener (one thread per connection, caps on message size and on connections, an idle
 * timeout) that hands each message to a handler and sends back the reply the handler builds
 * (the ACK), and a client that sends a message and waits for its ACK within a deadline.
 *
 * Bytes outside a frame are skipped (the CR after FS, stray LFs, keep-alive noise). A message
 * over the size cap is not kept whole: the handler gets its first `max_message` bytes with
 * `truncated` set, so that it can still answer (MSH-10 is at the start) while the rest is
 * drained and dropped; the connection stays open.
 *
 * Exported names start with mllp_.
 */
#ifndef HL7_MLLP_H
#define HL7_MLLP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

struct net_tls;

#define MLLP_START_BLOCK 0x0B
#define MLLP_END_BLOCK   0x1C

/* ---- framing ----------------------------------------------------------------------------- */

struct mllp_deframer {
    struct tr_buf message; /* the message (without framing); at most max bytes */
    size_t max;
    bool inside;    /* between VT and FS */
    bool truncated; /* the message was longer than max: message holds its start */
    size_t total;   /* bytes of the message, also those past max */
    size_t skipped; /* bytes outside any frame (not counting CR / LF) */
};

void mllp_deframer_init(struct mllp_deframer *d, size_t max);
void mllp_deframer_release(struct mllp_deframer *d);
/* Feed bytes: returns how many were consumed, and sets *complete when a message ended (at its
 * FS: the bytes after it were not consumed). Take the message from d->message, then call
 * mllp_deframer_next before feeding the rest. Uses at most max + 1 bytes of memory; when even
 * that cannot be had, the message is marked truncated like one over the cap. */
size_t mllp_deframe(struct mllp_deframer *d, const void *data, size_t len, bool *complete);
/* Forget the message just completed. */
void mllp_deframer_next(struct mllp_deframer *d);

/* Append VT message FS CR to out. */
int mllp_frame(struct tr_buf *out, const void *message, size_t len);

/* ---- the listener ------------------------------------------------------------------------ */

struct mllp_peer {
    const char *address; /* "127.0.0.1:51234" */
    const char *ip;
    const char *tls_subject; /* verified client certificate subject, "" if none */
    uint64_t connection_id;  /* unique within the process, for logs */
};

struct mllp_request {
    const struct mllp_peer *peer;
    const char *data; /* the message, NUL-terminated (data[len] == 0) */
    size_t len;
    bool truncated; /* over the cap: data holds the first len bytes of total */
    size_t total;
};

enum mllp_log_level {
    MLLP_LOG_ERROR = 0,
    MLLP_LOG_WARNING = 1,
    MLLP_LOG_INFO = 2,
    MLLP_LOG_DEBUG = 3
};

struct mllp_config {
    const char *host;         /* listen address (default "127.0.0.1") */
    int port;                 /* 0 picks a free port (mllp_server_port) */
    struct net_tls *tls;      /* a server context: TLS on every connection (NULL: plain) */
    size_t max_message;       /* bytes (default 4 MiB); larger ones are truncated, see above */
    unsigned max_connections; /* at once (default 32); more are closed at once, logged */
    int idle_timeout_ms;      /* a connection silent for this long is closed (300000) */
    int write_timeout_ms;     /* bound on sending one reply (30000) */
    /* Called once per message, in the connection's thread (several at once on different
     * connections): append the reply (an ACK, unframed) to `reply`; nothing appended sends
     * nothing. Must be thread-safe. */
    void (*handle)(void *ctx, const struct mllp_request *rq, struct tr_buf *reply);
    /* One line per event, never message content (it is PHI): connections, sizes, errors. */
    void (*log)(void *ctx, int level, const char *message);
    void *ctx;
};

void mllp_config_init(struct mllp_config *cfg);

struct mllp_server;

/* Listen (the socket is open when this returns) and start accepting in a thread of its own. */
int mllp_server_start(const struct mllp_config *cfg, struct mllp_server **out,
                      struct tr_error *err);
int mllp_server_port(const struct mllp_server *s);
/* Connections open now. */
unsigned mllp_server_active(const struct mllp_server *s);
/* Stop accepting; connections finish the message in hand and close (those still busy after
 * grace_ms are shut down); then free everything. NULL is a no-op. */
void mllp_server_free(struct mllp_server *s, int grace_ms);

/* ---- the client -------------------------------------------------------------------------- */

struct mllp_client_options {
    struct net_tls *tls;    /* a client context (NULL: plain TCP) */
    const char *sni_host;   /* name to verify the certificate against (NULL: host) */
    int connect_timeout_ms; /* connect and TLS handshake (default 10000) */
    int ack_timeout_ms;     /* from the last byte sent to the whole ACK (default 30000) */
    size_t max_ack;         /* bytes (default 1 MiB) */
};

void mllp_client_options_init(struct mllp_client_options *opt);

enum mllp_ack_status {
    MLLP_ACK_ACCEPT = 0, /* AA (CA in enhanced mode) */
    MLLP_ACK_ERROR = 1,  /* AE (CE) */
    MLLP_ACK_REJECT = 2, /* AR (CR) */
};

struct mllp_ack {
    enum mllp_ack_status status;
    char code[3];         /* MSA-1 as sent: "AA", "AE", "AR", "CA", ... */
    char control_id[200]; /* MSA-2: the MSH-10 of the message acknowledged */
    char text[512];       /* MSA-3, else ERR-8, else ERR-3.2 (UTF-8; "" when none) */
    struct tr_buf raw;    /* the whole ACK, unframed (released by mllp_ack_release) */
};

void mllp_ack_release(struct mllp_ack *ack);

struct mllp_client;

int mllp_client_connect(const char *host, int port, const struct mllp_client_options *opt,
                        struct mllp_client **out, struct tr_error *err);
/* Send one message and wait for its ACK. Returns 0 when an ACK came back (whatever its code:
 * see ack->status; release ack with mllp_ack_release), or TR_ETIMEOUT (no whole ACK in
 * time), TR_ECLOSED, TR_EPROTO (the reply is not an ACK, or acknowledges another message
 * than the MSH-10 sent), TR_ELIMIT, TR_EIO. After an error, close the client. */
int mllp_client_send(struct mllp_client *c, const void *message, size_t len, struct mllp_ack *ack,
                     struct tr_error *err);
/* The peer, "host:port" as connected. */
const char *mllp_client_peer(const struct mllp_client *c);
void mllp_client_close(struct mllp_client *c);

#endif
