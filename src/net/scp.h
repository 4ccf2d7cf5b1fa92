/*
 * scp.h - a DICOM server: a listener, one thread per association (so a slow peer never blocks
 * the others), a cap on concurrent associations, association policy, and the DIMSE services
 * as SCP (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, C-CANCEL) dispatched to handlers that the
 * services layer provides (the archive stores, indexes and answers queries).
 *
 * Exported names start with scp_.
 */
#ifndef NET_SCP_H
#define NET_SCP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dcm.h"
#include "acl.h"
#include "dimse.h"
#include "dul.h"
#include "error.h"
#include "sink.h"

/* What a handler knows about the association a request arrived on. */
struct scp_peer {
    const char *calling_ae;
    const char *called_ae;
    const char *address;        /* "ip:port" */
    const char *ip;
    const struct pdu_user_identity *identity; /* as requested (type NONE if absent) */
    const char *tls_subject;    /* verified client certificate subject, "" if none */
    uint64_t association_id;    /* unique within the process, for logs */
};

/* A C-STORE in progress: the handler writes the data set bytes wherever it wants. */
struct scp_store {
    const struct scp_peer *peer;
    const char *sop_class;
    const char *sop_instance;
    const char *transfer_syntax;  /* of the data set bytes that will arrive */
    const char *abstract_syntax;  /* of the presentation context (the SOP class negotiated) */
    uint16_t message_id;
    const char *move_originator_ae; /* set when the store is a C-MOVE sub-operation */
};

/* The instances a C-MOVE or C-GET sends: the handler lists them, the SCP sends them. */
struct scp_instance {
    char sop_class[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    char transfer_syntax[DCM_UID_MAX + 1]; /* of the stored bytes */
    char path[4096];                       /* a Part 10 file, or (with instance_open)
                                              what the handler needs to find it */
};

/* authorize's answer when it accepts a verified user identity. */
#define SCP_IDENTITY_VERIFIED 2

struct scp_handlers {
    void *ctx;
    /* Decide on an association request before its contexts are negotiated (calling and
     * called AE titles, peer address, identity): return 0 to accept, or fill rj and return 1.
     * Return SCP_IDENTITY_VERIFIED to accept when the user identity was checked and is good:
     * the A-ASSOCIATE-AC then carries the positive response the requestor may ask for (PS3.7
     * D.3.3.7.2). NULL: accept when the called AE title is ours. */
    int (*authorize)(void *ctx, const struct scp_peer *peer, struct pdu_reject *rj);

    /* C-STORE: `begin` returns a sink for the data set and a handle; `end` is called once the
     * data set is complete (complete = true) or broken off (false) and returns the status to
     * answer (PS3.4 B.2.3: 0000 success, A700 out of resources, A900 data set does not match
     * the SOP class, C000 cannot understand, B000/B007/B006 warnings). It must not answer
     * success before the object is durable. The comment, if set, goes in Error Comment. */
    int (*store_begin)(void *ctx, const struct scp_store *st, struct tr_sink *sink,
                       void **handle);
    uint16_t (*store_end)(void *ctx, void *handle, bool complete, char *comment,
                          size_t comment_size);

    /* C-FIND: call `emit` for each match (it sends a pending response; a negative return means
     * stop: the peer cancelled or went away); return the final status. `model` is the
     * information model SOP class. NULL: C-FIND not supported. */
    uint16_t (*find)(void *ctx, const struct scp_peer *peer, const char *model,
                     const struct dcm_dataset *identifier,
                     int (*emit)(void *emit_ctx, const struct dcm_dataset *match),
                     void *emit_ctx, char *comment, size_t comment_size);

    /* C-MOVE and C-GET: list the instances the identifier selects (return a status other than
     * success to refuse: A701/A702 out of resources, A900 identifier does not match, C000).
     * *list is tr_malloc'd and freed by the SCP. NULL: not supported. */
    uint16_t (*retrieve)(void *ctx, const struct scp_peer *peer, const char *model,
                         const struct dcm_dataset *identifier, struct scp_instance **list,
                         size_t *count, char *comment, size_t comment_size);

    /* C-MOVE and C-GET, optional: make an instance readable as a local file just before it
     * is sent (a remote object store fetches it then), rewriting inst->path to that file;
     * instance_close(handle) follows its sub-operation. NULL: inst->path is a local file. */
    int (*instance_open)(void *ctx, struct scp_instance *inst, void **handle,
                         struct tr_error *err);
    void (*instance_close)(void *ctx, void *handle);

    /* C-MOVE: where is AE title `ae`? Fill host and port (and say whether to use TLS); return
     * 0, or TR_ENOTFOUND for an unknown destination (answered with A801). */
    int (*move_destination)(void *ctx, const char *ae, char *host, size_t host_size, int *port,
                            bool *tls);

    /* Log one line (no PHI at info level: AE titles, addresses, UIDs and statuses only). */
    void (*log)(void *ctx, int level, const char *message);
};

enum scp_log_level { SCP_LOG_ERROR = 0, SCP_LOG_WARNING = 1, SCP_LOG_INFO = 2, SCP_LOG_DEBUG = 3 };

struct scp_config {
    struct dul_config dul;          /* our AE title, PDU size, timeouts, TLS */
    const char *host;               /* listen address (default 127.0.0.1) */
    int port;                       /* default 11112; 0 picks a free one */
    unsigned max_associations;      /* concurrent; more are rejected with "local limit
                                       exceeded" (default 64) */
    bool accept_any_called_ae;      /* accept whatever called AE title the peer uses */
    uint64_t max_store_size;        /* largest data set accepted by C-STORE (default 4 GiB) */
    struct net_tls *move_tls;       /* TLS for C-MOVE sub-associations marked tls */
    struct net_acl allowed;         /* peers that may associate (empty: all); others are
                                       rejected permanent, service-user, no reason given */
};

void scp_config_init(struct scp_config *cfg);

struct scp_server;

/* Listen (the socket is open when this returns, so a client may connect at once). */
int scp_server_new(const struct scp_config *cfg, const struct scp_handlers *handlers,
                   struct scp_server **out, struct tr_error *err);
int scp_server_port(const struct scp_server *s);
/* Accept and serve associations until scp_server_stop; returns 0 after a stop. */
int scp_server_run(struct scp_server *s);
/* Ask run() to return (callable from another thread or a signal handler's helper thread);
 * open associations are given `grace_ms` to finish, then aborted. */
void scp_server_stop(struct scp_server *s, int grace_ms);
void scp_server_free(struct scp_server *s);
/* Associations open now. */
unsigned scp_server_active(const struct scp_server *s);

/* The transfer syntaxes telerad accepts for storage, in order of preference: the uncompressed
 * ones, then every encapsulated one (stored as received). NULL-terminated. */
const char *const *scp_storage_transfer_syntaxes(void);

#endif
