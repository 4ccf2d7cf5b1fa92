/*
 * test_dul.c - the DICOM upper layer (net/dul.c) and the server (net/scp.c) in one process over
 * 127.0.0.1: association acceptance and every rejection reason the server gives, presentation
 * context and role negotiation, user identity, maximum PDU length in both directions (checked
 * PDU by PDU through a raw socket peer), release, release collision, abort both ways, ARTIM,
 * idle timeout, C-ECHO, a 300 MB C-STORE streamed with bounded memory, C-CANCEL of a C-FIND,
 * a slow peer beside a fast one, and the state table checked against PS3.8 Table 9-10.
 *
 * The server runs in a thread (scp_server_run) with handlers written here; raw peers are plain
 * blocking sockets that encode and decode PDUs with pdu.h, so that what goes over the wire is
 * seen exactly. Helper threads never call cmocka's assertions: they record what they saw and
 * the test thread asserts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <zlib.h>

#include "common.h"
#include "dcm.h"
#include "dimse.h"
#include "dul.h"
#include "pdu.h"
#include "scp.h"
#include "scu.h"

#define LONG_MS 20000 /* for things that should happen at once: only a bug waits this long */
#define CT_STORAGE "1.2.840.10008.5.1.4.1.1.2"
#define MR_STORAGE "1.2.840.10008.5.1.4.1.1.4"
#define SERVER_AE "TESTSCP"
#define CLIENT_AE "TESTSCU"

/* Build with -DSHOW_MESSAGES to see the server's log and the error messages. */
#ifdef SHOW_MESSAGES
#define show(...) print_message(__VA_ARGS__)
#else
#define show(...) ((void)0)
#endif

static const char *const plain_ts[] = {DCM_UID_ExplicitVRLittleEndian,
                                       DCM_UID_ImplicitVRLittleEndian, NULL};
static const char *const implicit_only[] = {DCM_UID_ImplicitVRLittleEndian, NULL};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* ---- the server under test ---------------------------------------------------------------- */

enum authorize_mode {
    AUTH_ACCEPT = 0,
    AUTH_REJECT_CALLING,   /* permanent, user, calling AE not recognized */
    AUTH_REJECT_TRANSIENT, /* transient, user, no reason */
    AUTH_CHECK_PASSWORD,   /* user identity alice / s3cret, else permanent, ACSE, no reason */
};

/* What the handlers do and what they saw. Reset by server_start. */
struct handler_state {
    enum authorize_mode auth;
    /* authorize */
    atomic_int authorize_calls;
    pthread_mutex_t lock;
    char seen_calling[PDU_AE_MAX + 1], seen_called[PDU_AE_MAX + 1], seen_ip[64];
    uint8_t seen_identity_type;
    bool seen_positive_response;
    char seen_primary[4096], seen_secondary[256];
    uint16_t seen_primary_length, seen_secondary_length;
    /* C-STORE */
    atomic_int stores_begun, stores_complete, stores_incomplete;
    atomic_ullong store_bytes;  /* of the last store */
    uLong store_crc;            /* of the last store (written by the association thread) */
    char store_ts[DCM_UID_MAX + 1];
    /* C-FIND */
    unsigned find_matches;      /* how many to emit */
    size_t find_match_size;     /* bytes of OB in each match (0: none) */
    int find_sleep_ms;          /* pause before each match after the first */
    atomic_uint find_emitted;   /* emit calls that sent */
    atomic_bool find_stopped;   /* emit returned negative */
    /* log */
    char log[64][256];
    unsigned log_count;
};

static struct handler_state hs;

struct store_handle {
    uint64_t bytes;
    uLong crc;
};

static int h_authorize(void *ctx, const struct scp_peer *peer, struct pdu_reject *rj)
{
    (void)ctx;
    atomic_fetch_add(&hs.authorize_calls, 1);
    pthread_mutex_lock(&hs.lock);
    snprintf(hs.seen_calling, sizeof(hs.seen_calling), "%s", peer->calling_ae);
    snprintf(hs.seen_called, sizeof(hs.seen_called), "%s", peer->called_ae);
    snprintf(hs.seen_ip, sizeof(hs.seen_ip), "%s", peer->ip);
    const struct pdu_user_identity *id = peer->identity;
    hs.seen_identity_type = id ? id->type : 0;
    hs.seen_positive_response = id && id->positive_response;
    hs.seen_primary_length = hs.seen_secondary_length = 0;
    if (id && id->type) {
        hs.seen_primary_length = id->primary_length;
        memcpy(hs.seen_primary, id->primary, TR_MIN(id->primary_length, sizeof(hs.seen_primary)));
        if (id->secondary) {
            hs.seen_secondary_length = id->secondary_length;
            memcpy(hs.seen_secondary, id->secondary,
                   TR_MIN(id->secondary_length, sizeof(hs.seen_secondary)));
        }
    }
    pthread_mutex_unlock(&hs.lock);
    switch (hs.auth) {
    case AUTH_ACCEPT: return 0;
    case AUTH_REJECT_CALLING:
        *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                                  PDU_RJ_CALLING_AE_NOT_RECOGNIZED};
        return 1;
    case AUTH_REJECT_TRANSIENT:
        *rj = (struct pdu_reject){PDU_RJ_TRANSIENT, PDU_RJ_SOURCE_USER, PDU_RJ_NO_REASON};
        return 1;
    case AUTH_CHECK_PASSWORD:
        if (id && id->type == PDU_IDENTITY_USERNAME_PASSCODE && id->primary_length == 5 &&
            memcmp(id->primary, "alice", 5) == 0 && id->secondary_length == 6 &&
            memcmp(id->secondary, "s3cret", 6) == 0)
            return 0;
        /* PS3.7 D.3.3.7: an authorization failure is rejected permanently by the ACSE. */
        *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_PROVIDER_ACSE, PDU_RJ_NO_REASON};
        return 1;
    }
    return 0;
}

static int count_write(void *ctx, const void *data, size_t len)
{
    struct store_handle *h = ctx;
    h->bytes += len;
    h->crc = crc32(h->crc, data, (uInt)len);
    return 0;
}

static int h_store_begin(void *ctx, const struct scp_store *st, struct tr_sink *sink,
                         void **handle)
{
    (void)ctx;
    struct store_handle *h = calloc(1, sizeof(*h));
    if (!h)
        return -1;
    h->crc = crc32(0, NULL, 0);
    atomic_fetch_add(&hs.stores_begun, 1);
    pthread_mutex_lock(&hs.lock);
    snprintf(hs.store_ts, sizeof(hs.store_ts), "%s", st->transfer_syntax);
    pthread_mutex_unlock(&hs.lock);
    *sink = (struct tr_sink){count_write, h};
    *handle = h;
    return 0;
}

static uint16_t h_store_end(void *ctx, void *handle, bool complete, char *comment,
                            size_t comment_size)
{
    (void)ctx;
    (void)comment;
    (void)comment_size;
    struct store_handle *h = handle;
    atomic_store(&hs.store_bytes, h->bytes);
    pthread_mutex_lock(&hs.lock);
    hs.store_crc = h->crc;
    pthread_mutex_unlock(&hs.lock);
    atomic_fetch_add(complete ? &hs.stores_complete : &hs.stores_incomplete, 1);
    free(h);
    return complete ? DIMSE_STATUS_SUCCESS : DIMSE_STATUS_OUT_OF_RESOURCES;
}

static uint16_t h_find(void *ctx, const struct scp_peer *peer, const char *model,
                       const struct dcm_dataset *identifier,
                       int (*emit)(void *emit_ctx, const struct dcm_dataset *match),
                       void *emit_ctx, char *comment, size_t comment_size)
{
    (void)ctx;
    (void)peer;
    (void)model;
    (void)identifier;
    (void)comment;
    (void)comment_size;
    struct dcm_dataset *match = dcm_dataset_new();
    if (!match)
        return DIMSE_STATUS_FIND_OUT_OF_RESOURCES;
    uint8_t *blob = NULL;
    if (hs.find_match_size) {
        blob = malloc(hs.find_match_size);
        for (size_t i = 0; blob && i < hs.find_match_size; i++)
            blob[i] = (uint8_t)(i * 7 + 3);
    }
    for (unsigned i = 0; i < hs.find_matches; i++) {
        if (i && hs.find_sleep_ms)
            sleep_ms(hs.find_sleep_ms);
        char name[32];
        snprintf(name, sizeof(name), "PATIENT^%u", i);
        dcm_dataset_set_string(match, 0x00100010, DCM_VR_PN, name);
        dcm_dataset_set_string(match, 0x00080052, DCM_VR_CS, "STUDY");
        if (blob)
            dcm_dataset_set_bytes(match, 0x00420011, DCM_VR_OB, blob, hs.find_match_size);
        if (emit(emit_ctx, match) < 0) {
            atomic_store(&hs.find_stopped, true);
            break;
        }
        atomic_fetch_add(&hs.find_emitted, 1);
    }
    free(blob);
    dcm_dataset_free(match);
    return DIMSE_STATUS_SUCCESS;
}

static uint16_t h_retrieve(void *ctx, const struct scp_peer *peer, const char *model,
                           const struct dcm_dataset *identifier, struct scp_instance **list,
                           size_t *count, char *comment, size_t comment_size)
{
    (void)ctx;
    (void)peer;
    (void)model;
    (void)identifier;
    (void)comment;
    (void)comment_size;
    *list = NULL;
    *count = 0;
    return DIMSE_STATUS_SUCCESS;
}

static void h_log(void *ctx, int level, const char *message)
{
    (void)ctx;
    (void)level;
    show("server: %s\n", message);
    pthread_mutex_lock(&hs.lock);
    snprintf(hs.log[hs.log_count % 64], sizeof(hs.log[0]), "%s", message);
    hs.log_count++;
    pthread_mutex_unlock(&hs.lock);
}

/* Has the server logged a line containing `needle` (waiting up to timeout_ms)? */
static bool log_has(const char *needle, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    do {
        pthread_mutex_lock(&hs.lock);
        bool found = false;
        unsigned n = TR_MIN(hs.log_count, 64u);
        for (unsigned i = 0; i < n && !found; i++)
            found = strstr(hs.log[i], needle) != NULL;
        pthread_mutex_unlock(&hs.lock);
        if (found)
            return true;
        sleep_ms(10);
    } while (now_ms() < end);
    return false;
}

struct server {
    struct scp_server *s;
    pthread_t thread;
    int port;
};

static void *server_main(void *arg)
{
    scp_server_run(arg);
    return NULL;
}

/* Server options a test may change before server_start. */
struct server_options {
    unsigned max_associations;
    int artim_ms, timeout_ms;
    uint32_t max_pdu;
    bool find, retrieve;
};

static void server_options_init(struct server_options *o)
{
    memset(o, 0, sizeof(*o));
    o->max_associations = 8;
    o->artim_ms = 5000;
    o->timeout_ms = 30000;
    o->max_pdu = 16384;
}

static void handler_state_reset(void)
{
    pthread_mutex_destroy(&hs.lock);
    memset(&hs, 0, sizeof(hs));
    pthread_mutex_init(&hs.lock, NULL);
}

static void server_start(struct server *srv, const struct server_options *o)
{
    handler_state_reset();
    struct scp_config cfg;
    scp_config_init(&cfg);
    cfg.dul.ae_title = SERVER_AE;
    cfg.dul.artim_ms = o->artim_ms;
    cfg.dul.timeout_ms = o->timeout_ms;
    cfg.dul.max_pdu = o->max_pdu;
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.max_associations = o->max_associations;
    struct scp_handlers h;
    memset(&h, 0, sizeof(h));
    h.authorize = h_authorize;
    h.store_begin = h_store_begin;
    h.store_end = h_store_end;
    h.find = o->find ? h_find : NULL;
    h.retrieve = o->retrieve ? h_retrieve : NULL;
    h.log = h_log;
    struct tr_error err = TR_ERROR_INIT;
    int rc = scp_server_new(&cfg, &h, &srv->s, &err);
    if (rc)
        fail_msg("scp_server_new: %s", err.message);
    srv->port = scp_server_port(srv->s);
    assert_true(srv->port > 0);
    assert_int_equal(pthread_create(&srv->thread, NULL, server_main, srv->s), 0);
}

static void server_finish(struct server *srv)
{
    scp_server_stop(srv->s, 2000);
    pthread_join(srv->thread, NULL);
    scp_server_free(srv->s);
    srv->s = NULL;
}

static bool wait_active(struct server *srv, unsigned want, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    while (scp_server_active(srv->s) != want) {
        if (now_ms() > end)
            return false;
        sleep_ms(5);
    }
    return true;
}

/* ---- requestor helpers (telerad's own SCU side) ------------------------------------------- */

static struct pdu_associate *rq_new(const char *called)
{
    struct pdu_associate *rq = tr_malloc(sizeof(*rq));
    assert_non_null(rq);
    pdu_associate_init(rq);
    snprintf(rq->called_ae, sizeof(rq->called_ae), "%s", called);
    snprintf(rq->calling_ae, sizeof(rq->calling_ae), "%s", CLIENT_AE);
    return rq;
}

static void rq_free(struct pdu_associate *rq)
{
    pdu_associate_release(rq);
    tr_free(rq);
}

static void client_config(struct dul_config *cfg)
{
    dul_config_init(cfg);
    cfg->ae_title = CLIENT_AE;
    cfg->artim_ms = 5000;
    cfg->timeout_ms = LONG_MS;
    cfg->connect_timeout_ms = LONG_MS;
}

/* Associate with rq (ownership passes on success; freed here on failure). */
static int associate_rq(int port, struct pdu_associate *rq, struct dul_assoc **out,
                        struct tr_error *err)
{
    struct dul_config cfg;
    client_config(&cfg);
    int rc = dul_request(&cfg, "127.0.0.1", port, rq, out, err);
    if (rc)
        rq_free(rq);
    return rc;
}

/* Associate proposing Verification and CT storage with the uncompressed transfer syntaxes. */
static struct dul_assoc *associate(int port)
{
    struct pdu_associate *rq = rq_new(SERVER_AE);
    scu_add_context(rq, SCU_VERIFICATION, plain_ts);
    scu_add_context(rq, CT_STORAGE, plain_ts);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(port, rq, &a, &err))
        fail_msg("association refused: %s", err.message);
    return a;
}

static void echo_ok(struct dul_assoc *a)
{
    uint16_t status = 0xFFFF;
    struct tr_error err = TR_ERROR_INIT;
    int rc = scu_echo(a, 1, &status, &err);
    if (rc)
        fail_msg("C-ECHO: %s", err.message);
    assert_int_equal(status, DIMSE_STATUS_SUCCESS);
}

static void release_ok(struct dul_assoc *a)
{
    struct tr_error err = TR_ERROR_INIT;
    int rc = dul_release(a, &err);
    if (rc)
        fail_msg("release: %s", err.message);
    assert_int_equal(dul_state(a), 1);
    dul_free(a);
}

/* A pattern for data set bytes: position-dependent, not compressible by accident. */
static void fill_chunk(uint8_t *p, size_t n, uint64_t offset)
{
    for (size_t i = 0; i < n; i++) {
        uint64_t x = offset + i;
        p[i] = (uint8_t)((x * 2654435761u) >> 13);
    }
}

/* Send a C-STORE-RQ and `total` bytes of (pattern) data set in chunks of `chunk`, optionally
 * pausing after `pause_after` bytes for `pause_ms`. *crc gets the CRC-32 of what was sent. */
static int send_store(struct dul_assoc *a, const char *instance, uint64_t total, size_t chunk,
                      uint64_t pause_after, int pause_ms, uLong *crc, struct tr_error *err)
{
    const struct dul_context *c = dul_find_context(a, CT_STORAGE, NULL);
    if (!c)
        return tr_error_set(err, TR_EINVAL, "no CT context");
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_STORE_RQ, 7, CT_STORAGE, instance, true);
    dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, DIMSE_PRIORITY_MEDIUM);
    int rc = dimse_send_command(a, c->id, cmd, err);
    dcm_dataset_free(cmd);
    uint8_t *buf = malloc(chunk);
    if (!buf)
        return TR_ENOMEM;
    uLong sum = crc32(0, NULL, 0);
    bool paused = false;
    for (uint64_t off = 0; rc == 0 && off < total;) {
        size_t n = (size_t)TR_MIN((uint64_t)chunk, total - off);
        fill_chunk(buf, n, off);
        sum = crc32(sum, buf, (uInt)n);
        off += n;
        rc = dimse_send_bytes(a, c->id, buf, n, off == total, err);
        if (!paused && pause_ms && off >= pause_after) {
            paused = true;
            sleep_ms(pause_ms);
        }
    }
    free(buf);
    if (crc)
        *crc = sum;
    return rc;
}

/* Receive a response command; returns its status (or -1 on error, message in err). */
static int receive_status(struct dul_assoc *a, uint16_t command_field, struct tr_error *err)
{
    struct dimse_message m;
    int rc = dimse_receive_command(a, LONG_MS, &m, err);
    if (rc <= 0)
        return -1;
    int status = m.command_field == command_field ? m.status : -1;
    dimse_message_release(&m);
    return status;
}

/* ---- raw socket peers ----------------------------------------------------------------------- */

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int raw_write(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Read exactly n bytes within timeout_ms: 0, 1 on orderly close/reset before them, -1 on
 * timeout. */
static int raw_read_full(int fd, void *p, size_t n, int timeout_ms)
{
    uint8_t *b = p;
    int64_t end = now_ms() + timeout_ms;
    while (n) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return -1;
        struct pollfd pfd = {fd, POLLIN, 0};
        int pr = poll(&pfd, 1, left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr <= 0)
            return -1;
        ssize_t r = recv(fd, b, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return 1;
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

struct raw_pdu {
    uint8_t type;
    uint32_t length;
    uint8_t *body; /* malloc'd */
};

/* Read one PDU: 0, 1 when the peer closed, -1 on timeout. */
static int raw_read_pdu(int fd, struct raw_pdu *p, int timeout_ms)
{
    uint8_t h[6];
    memset(p, 0, sizeof(*p));
    int rc = raw_read_full(fd, h, 6, timeout_ms);
    if (rc)
        return rc;
    p->type = h[0];
    p->length = tr_be32(h + 2);
    p->body = malloc(p->length ? p->length : 1);
    if (!p->body)
        return -1;
    rc = raw_read_full(fd, p->body, p->length, timeout_ms);
    if (rc) {
        free(p->body);
        p->body = NULL;
    }
    return rc;
}

/* Wait for the peer to close: true if it closes within timeout_ms (anything it sends first is
 * read and dropped). */
static bool raw_wait_close(int fd, int timeout_ms)
{
    int64_t end = now_ms() + timeout_ms;
    uint8_t buf[4096];
    for (;;) {
        int left = (int)(end - now_ms());
        if (left <= 0)
            return false;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r <= 0)
            return true;
    }
}

static void raw_send_buf(int fd, struct tr_buf *b)
{
    assert_int_equal(raw_write(fd, b->data, b->len), 0);
    tr_buf_release(b);
}

static void raw_send_rq(int fd, const struct pdu_associate *rq)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    assert_int_equal(pdu_encode_associate_rq(rq, &b), 0);
    raw_send_buf(fd, &b);
}

/* Send rq on a raw connection and read the answer PDU (the caller frees p->body). */
static void raw_associate(int port, const struct pdu_associate *rq, int *fd, struct raw_pdu *p)
{
    *fd = raw_connect(port);
    raw_send_rq(*fd, rq);
    assert_int_equal(raw_read_pdu(*fd, p, LONG_MS), 0);
}

/* Ask the server for an association described by rq and expect the rejection rj. */
static void expect_reject(int port, struct pdu_associate *rq, uint8_t result, uint8_t source,
                          uint8_t reason)
{
    int fd;
    struct raw_pdu p;
    raw_associate(port, rq, &fd, &p);
    assert_int_equal(p.type, PDU_ASSOCIATE_RJ);
    struct pdu_reject rj;
    assert_int_equal(pdu_decode_associate_rj(p.body, p.length, &rj, NULL), 0);
    show("rejected: %s\n", pdu_reject_text(&rj));
    assert_int_equal(rj.result, result);
    assert_int_equal(rj.source, source);
    assert_int_equal(rj.reason, reason);
    free(p.body);
    /* PS3.8 9.2 AE-8: after the A-ASSOCIATE-RJ the acceptor waits (ARTIM) for us to close. */
    close(fd);
}

/* A minimal RQ for raw peers (Verification, implicit VR). */
static struct pdu_associate *raw_rq(const char *called, uint32_t max_length)
{
    struct pdu_associate *rq = rq_new(called);
    rq->protocol_version = 1;
    snprintf(rq->application_context, sizeof(rq->application_context), "%s",
             DUL_APPLICATION_CONTEXT);
    snprintf(rq->implementation_class_uid, sizeof(rq->implementation_class_uid), "1.2.3.4");
    rq->max_length = max_length;
    return rq;
}

/* A command set as sent on the wire: Command Group Length, then the elements (PS3.7 6.3.1). */
static void encode_command(const struct dcm_dataset *cmd, struct tr_buf *out)
{
    struct tr_buf body;
    tr_buf_init(&body, 1 << 20);
    struct tr_sink s = tr_sink_buf(&body);
    assert_int_equal(dcm_dataset_write(cmd, DCM_UID_ImplicitVRLittleEndian, NULL, &s, NULL), 0);
    uint8_t gl[12];
    tr_put_le16(gl, 0);
    tr_put_le16(gl + 2, 0);
    tr_put_le32(gl + 4, 4);
    tr_put_le32(gl + 8, (uint32_t)body.len);
    tr_buf_init(out, 1 << 20);
    assert_int_equal(tr_buf_add(out, gl, sizeof(gl)), 0);
    assert_int_equal(tr_buf_add(out, body.data, body.len), 0);
    tr_buf_release(&body);
}

/* One P-DATA-TF with one PDV. */
static void raw_send_pdv(int fd, uint8_t pc, bool command, bool last, const void *data,
                         size_t len)
{
    uint8_t hdr[12];
    pdu_encode_pdata_header(pc, command, last, (uint32_t)len, hdr);
    assert_int_equal(raw_write(fd, hdr, sizeof(hdr)), 0);
    assert_int_equal(raw_write(fd, data, len), 0);
}

/* ---- PS3.8 Table 9-10 --------------------------------------------------------------------- */

/*
 * PS3.8 (DICOM 2024 edition) section 9.2.3, Table 9-10 "DICOM Upper Layer Protocol State
 * Transition Table", transcribed here independently of dul.c, row by row: events Evt1-Evt19
 * down, states Sta1-Sta13 across; "" where the table has no entry. Cross-checked against
 * pynetdicom's transcription (pynetdicom/fsm.py, TRANSITION_TABLE), an independent one.
 */
/* clang-format off */
static const char *const ps38_table_9_10[19][13] = {
    /*          Sta1    Sta2    Sta3    Sta4    Sta5    Sta6    Sta7    Sta8    Sta9    Sta10    Sta11   Sta12   Sta13 */
    /* Evt1  */ {"AE-1", "", "", "", "", "", "", "", "", "", "", "", ""},
    /* Evt2  */ {"", "", "", "AE-2", "", "", "", "", "", "", "", "", ""},
    /* Evt3  */ {"", "AA-1", "AA-8", "", "AE-3", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-6"},
    /* Evt4  */ {"", "AA-1", "AA-8", "", "AE-4", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-6"},
    /* Evt5  */ {"AE-5", "", "", "", "", "", "", "", "", "", "", "", ""},
    /* Evt6  */ {"", "AE-6", "AA-8", "", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-7"},
    /* Evt7  */ {"", "", "AE-7", "", "", "", "", "", "", "", "", "", ""},
    /* Evt8  */ {"", "", "AE-8", "", "", "", "", "", "", "", "", "", ""},
    /* Evt9  */ {"", "", "", "", "", "DT-1", "", "AR-7", "", "", "", "", ""},
    /* Evt10 */ {"", "AA-1", "AA-8", "", "AA-8", "DT-2", "AR-6", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-6"},
    /* Evt11 */ {"", "", "", "", "", "AR-1", "", "", "", "", "", "", ""},
    /* Evt12 */ {"", "AA-1", "AA-8", "", "AA-8", "AR-2", "AR-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-6"},
    /* Evt13 */ {"", "AA-1", "AA-8", "", "AA-8", "AA-8", "AR-3", "AA-8", "AA-8", "AR-10", "AR-3", "AA-8", "AA-6"},
    /* Evt14 */ {"", "", "", "", "", "", "", "AR-4", "AR-9", "", "", "AR-4", ""},
    /* Evt15 */ {"", "", "AA-1", "AA-2", "AA-1", "AA-1", "AA-1", "AA-1", "AA-1", "AA-1", "AA-1", "AA-1", ""},
    /* Evt16 */ {"", "AA-2", "AA-3", "", "AA-3", "AA-3", "AA-3", "AA-3", "AA-3", "AA-3", "AA-3", "AA-3", "AA-2"},
    /* Evt17 */ {"", "AA-5", "AA-4", "AA-4", "AA-4", "AA-4", "AA-4", "AA-4", "AA-4", "AA-4", "AA-4", "AA-4", "AR-5"},
    /* Evt18 */ {"", "AA-2", "", "", "", "", "", "", "", "", "", "", "AA-2"},
    /* Evt19 */ {"", "AA-1", "AA-8", "", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-8", "AA-7"},
};
/* clang-format on */

static void test_state_table_matches_ps38(void **state)
{
    (void)state;
    unsigned mismatches = 0, entries = 0;
    for (unsigned e = 1; e <= 19; e++) {
        for (unsigned s = 1; s <= 13; s++) {
            const char *want = ps38_table_9_10[e - 1][s - 1];
            const char *got = dul_table_action(e, s);
            if (*want)
                entries++;
            if ((*want && (!got || strcmp(got, want) != 0)) || (!*want && got)) {
                print_message("Evt%u/Sta%u: PS3.8 Table 9-10 says \"%s\", dul.c says \"%s\"\n",
                              e, s, want, got ? got : "");
                mismatches++;
            }
        }
    }
    assert_int_equal(mismatches, 0);
    assert_int_equal(entries, 123); /* non-empty cells of Table 9-10 */
    /* Out of range. */
    assert_null(dul_table_action(0, 1));
    assert_null(dul_table_action(20, 1));
    assert_null(dul_table_action(1, 0));
    assert_null(dul_table_action(1, 14));
}

/* ---- association establishment ------------------------------------------------------------ */

static void test_accept_echo_release(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    struct dul_assoc *a = associate(srv.port);
    assert_int_equal(dul_state(a), 6); /* Sta6: data transfer */
    assert_string_equal(dul_peer_ae(a), SERVER_AE);
    assert_string_equal(dul_peer_implementation(a), DCM_IMPLEMENTATION_CLASS_UID);
    assert_int_equal(dul_peer_max_pdu(a), o.max_pdu);
    assert_true(dul_is_requestor(a));
    for (uint16_t i = 1; i <= 20; i++) {
        uint16_t status = 0xFFFF;
        assert_int_equal(scu_echo(a, i, &status, NULL), 0);
        assert_int_equal(status, DIMSE_STATUS_SUCCESS);
    }
    assert_true(wait_active(&srv, 1, LONG_MS));
    release_ok(a);
    assert_true(wait_active(&srv, 0, LONG_MS));
    assert_true(log_has("released", LONG_MS));
    assert_string_equal(hs.seen_calling, CLIENT_AE);
    assert_string_equal(hs.seen_called, SERVER_AE);
    assert_string_equal(hs.seen_ip, "127.0.0.1");
    server_finish(&srv);
}

static void test_reject_reasons(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);

    /* PS3.8 Table 9-21: called AE title not recognized: permanent, service-user, 7. */
    struct pdu_associate *rq = raw_rq("SOMEONEELSE", 16384);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    expect_reject(srv.port, rq, PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                  PDU_RJ_CALLED_AE_NOT_RECOGNIZED);
    assert_int_equal(atomic_load(&hs.authorize_calls), 0);

    /* The same through telerad's requestor: TR_EDENIED with the reason in words. */
    struct pdu_associate *rq2 = rq_new("SOMEONEELSE");
    scu_add_context(rq2, SCU_VERIFICATION, implicit_only);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(associate_rq(srv.port, rq2, &a, &err), TR_EDENIED);
    show("%s\n", err.message);
    assert_non_null(strstr(err.message, "called AE title not recognized"));

    /* Protocol version without bit 0: permanent, service-provider (ACSE), 2. */
    snprintf(rq->called_ae, sizeof(rq->called_ae), "%s", SERVER_AE);
    rq->protocol_version = 2;
    expect_reject(srv.port, rq, PDU_RJ_PERMANENT, PDU_RJ_SOURCE_PROVIDER_ACSE,
                  PDU_RJ_PROTOCOL_VERSION_NOT_SUPPORTED);
    rq->protocol_version = 1;

    /* Another application context: permanent, service-user, 2. */
    snprintf(rq->application_context, sizeof(rq->application_context), "1.2.3.4.5.6");
    expect_reject(srv.port, rq, PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                  PDU_RJ_APPLICATION_CONTEXT_NOT_SUPPORTED);
    snprintf(rq->application_context, sizeof(rq->application_context), "%s",
             DUL_APPLICATION_CONTEXT);
    assert_int_equal(atomic_load(&hs.authorize_calls), 0);

    /* The authorize callback's decisions go out as they are. */
    hs.auth = AUTH_REJECT_CALLING;
    expect_reject(srv.port, rq, PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                  PDU_RJ_CALLING_AE_NOT_RECOGNIZED);
    hs.auth = AUTH_REJECT_TRANSIENT;
    expect_reject(srv.port, rq, PDU_RJ_TRANSIENT, PDU_RJ_SOURCE_USER, PDU_RJ_NO_REASON);
    assert_int_equal(atomic_load(&hs.authorize_calls), 2);

    /* And accepted when it says yes. */
    hs.auth = AUTH_ACCEPT;
    int fd;
    struct raw_pdu p;
    raw_associate(srv.port, rq, &fd, &p);
    assert_int_equal(p.type, PDU_ASSOCIATE_AC);
    free(p.body);
    close(fd);
    rq_free(rq);
    /* Rejected and dropped connections are not counted as associations. */
    assert_true(wait_active(&srv, 0, LONG_MS));
    server_finish(&srv);
}

static void test_local_limit_exceeded(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.max_associations = 2;
    struct server srv;
    server_start(&srv, &o);
    struct dul_assoc *a1 = associate(srv.port);
    struct dul_assoc *a2 = associate(srv.port);
    assert_true(wait_active(&srv, 2, LONG_MS));

    /* PS3.8 Table 9-21: transient, service-provider (presentation related), 2. */
    struct pdu_associate *rq = raw_rq(SERVER_AE, 16384);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    expect_reject(srv.port, rq, PDU_RJ_TRANSIENT, PDU_RJ_SOURCE_PROVIDER_PRESENTATION,
                  PDU_RJ_LOCAL_LIMIT_EXCEEDED);
    rq_free(rq);
    struct pdu_associate *rq2 = rq_new(SERVER_AE);
    scu_add_context(rq2, SCU_VERIFICATION, implicit_only);
    struct dul_assoc *a3 = NULL;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(associate_rq(srv.port, rq2, &a3, &err), TR_EDENIED);
    assert_non_null(strstr(err.message, "local limit exceeded"));

    /* The two that are open still work; once one goes, a new one is accepted. */
    echo_ok(a1);
    echo_ok(a2);
    release_ok(a1);
    assert_true(wait_active(&srv, 1, LONG_MS));
    struct dul_assoc *a4 = associate(srv.port);
    echo_ok(a4);
    release_ok(a4);
    release_ok(a2);
    assert_true(wait_active(&srv, 0, LONG_MS));
    server_finish(&srv);
}

/* ---- negotiation ---------------------------------------------------------------------------- */

static void test_context_negotiation(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    static const char *const unknown_ts[] = {"1.2.3.4.5.999", NULL};
    static const char *const implicit_first[] = {DCM_UID_ImplicitVRLittleEndian,
                                                 DCM_UID_ExplicitVRLittleEndian, NULL};
    static const char *const jpeg_first[] = {DCM_UID_JPEGBaseline8Bit,
                                             DCM_UID_ImplicitVRLittleEndian, NULL};
    static const char *const jpeg_only[] = {"1.2.3.4.5.999", DCM_UID_JPEGBaseline8Bit, NULL};
    struct pdu_associate *rq = rq_new(SERVER_AE);
    assert_int_equal(scu_add_context(rq, "1.2.3.4.5.6.7.8", implicit_only), 1);
    assert_int_equal(scu_add_context(rq, CT_STORAGE, unknown_ts), 3);
    assert_int_equal(scu_add_context(rq, CT_STORAGE, implicit_first), 5);
    assert_int_equal(scu_add_context(rq, MR_STORAGE, jpeg_first), 7);
    assert_int_equal(scu_add_context(rq, MR_STORAGE, jpeg_only), 9);
    assert_int_equal(scu_add_context(rq, SCU_VERIFICATION, implicit_only), 11);
    /* C-FIND is not served by this server (no handler): not supported. */
    assert_int_equal(scu_add_context(rq, SCU_STUDY_ROOT_FIND, plain_ts), 13);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(srv.port, rq, &a, &err))
        fail_msg("%s", err.message);
    assert_int_equal(dul_context_count(a), 7);
    const struct dul_context *c = dul_context_by_id(a, 1);
    assert_int_equal(c->result, PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED);
    assert_null(c->transfer_syntax);
    c = dul_context_by_id(a, 3);
    assert_int_equal(c->result, PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED);
    assert_null(c->transfer_syntax);
    /* The acceptor's preference decides, not the order of the proposal. */
    c = dul_context_by_id(a, 5);
    assert_int_equal(c->result, PDU_PC_ACCEPTANCE);
    assert_string_equal(c->transfer_syntax, DCM_UID_ExplicitVRLittleEndian);
    c = dul_context_by_id(a, 7);
    assert_int_equal(c->result, PDU_PC_ACCEPTANCE);
    assert_string_equal(c->transfer_syntax, DCM_UID_ImplicitVRLittleEndian);
    c = dul_context_by_id(a, 9);
    assert_int_equal(c->result, PDU_PC_ACCEPTANCE);
    assert_string_equal(c->transfer_syntax, DCM_UID_JPEGBaseline8Bit);
    c = dul_context_by_id(a, 11);
    assert_int_equal(c->result, PDU_PC_ACCEPTANCE);
    assert_string_equal(c->transfer_syntax, DCM_UID_ImplicitVRLittleEndian);
    c = dul_context_by_id(a, 13);
    assert_int_equal(c->result, PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED);
    assert_null(dul_context_by_id(a, 15));
    assert_null(dul_find_context(a, "1.2.3.4.5.6.7.8", NULL));
    assert_int_equal(dul_find_context(a, MR_STORAGE, DCM_UID_JPEGBaseline8Bit)->id, 9);
    echo_ok(a);
    /* A C-STORE on a rejected context is a protocol error: the server aborts. */
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_STORE_RQ, 2, CT_STORAGE, "1.2.3.4", true);
    assert_int_equal(dimse_send_command(a, 3, cmd, NULL), 0);
    dcm_dataset_free(cmd);
    struct dimse_message m;
    tr_error_clear(&err);
    assert_true(dimse_receive_command(a, LONG_MS, &m, &err) < 0);
    show("%s\n", err.message);
    assert_non_null(strstr(err.message, "aborted"));
    dul_free(a);
    assert_true(wait_active(&srv, 0, LONG_MS));
    assert_int_equal(atomic_load(&hs.stores_begun), 0);
    server_finish(&srv);
}

/* dul_negotiate on its own: preference order, roles. */
static void test_negotiate_function(void **state)
{
    (void)state;
    static const char *const ours[] = {DCM_UID_JPEGBaseline8Bit, DCM_UID_ExplicitVRLittleEndian,
                                       NULL};
    const struct dul_support support[] = {
        {CT_STORAGE, ours, true, false},
        {MR_STORAGE, ours, true, true},
    };
    struct pdu_associate *rq = rq_new(SERVER_AE), *ac = rq_new(CLIENT_AE);
    static const char *const theirs[] = {DCM_UID_ImplicitVRLittleEndian,
                                         DCM_UID_ExplicitVRLittleEndian,
                                         DCM_UID_JPEGBaseline8Bit, NULL};
    scu_add_context(rq, CT_STORAGE, theirs);
    scu_add_context(rq, MR_STORAGE, implicit_only);
    scu_add_context(rq, "1.2.3", theirs);
    scu_add_role(rq, CT_STORAGE, true, true);
    scu_add_role(rq, MR_STORAGE, false, true);
    scu_add_role(rq, "1.2.3", true, true);
    dul_negotiate(rq, support, TR_ARRAY_SIZE(support), ac);
    assert_int_equal(ac->context_count, 3);
    assert_int_equal(ac->context[0].id, 1);
    assert_int_equal(ac->context[0].result, PDU_PC_ACCEPTANCE);
    assert_string_equal(ac->context[0].transfer_syntax[0], DCM_UID_JPEGBaseline8Bit);
    assert_int_equal(ac->context[1].result, PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED);
    assert_int_equal(ac->context[1].ts_count, 0);
    assert_int_equal(ac->context[2].result, PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED);
    /* PS3.7 D.3.3.4: the acceptor answers each role item with what it allows. */
    assert_int_equal(ac->role_count, 3);
    assert_string_equal(ac->role[0].sop_class, CT_STORAGE);
    assert_true(ac->role[0].scu);   /* we can be SCP: the requestor may be SCU */
    assert_false(ac->role[0].scp);  /* we cannot be SCU of CT storage here */
    assert_false(ac->role[1].scu);  /* not proposed */
    assert_true(ac->role[1].scp);
    assert_false(ac->role[2].scp);  /* unknown SOP class: never SCP */
    /* The AC encodes (the structure is valid). */
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    ac->max_length = 16384;
    snprintf(ac->implementation_class_uid, sizeof(ac->implementation_class_uid), "1.2.3");
    struct tr_error err = TR_ERROR_INIT;
    if (pdu_check_associate(PDU_ASSOCIATE_AC, ac, &err))
        fail_msg("%s", err.message);
    assert_int_equal(pdu_encode_associate_ac(ac, &b), 0);
    tr_buf_release(&b);
    rq_free(rq);
    rq_free(ac);
}

static void test_role_selection(void **state)
{
    (void)state;
    for (int retrieve = 0; retrieve <= 1; retrieve++) {
        struct server_options o;
        server_options_init(&o);
        o.retrieve = retrieve;
        o.find = retrieve;
        struct server srv;
        server_start(&srv, &o);
        struct pdu_associate *rq = rq_new(SERVER_AE);
        scu_add_context(rq, SCU_VERIFICATION, implicit_only);
        scu_add_context(rq, CT_STORAGE, plain_ts);
        scu_add_context(rq, MR_STORAGE, plain_ts);
        scu_add_context(rq, SCU_STUDY_ROOT_GET, plain_ts);
        scu_add_role(rq, CT_STORAGE, true, true);  /* SCU and SCP (C-GET) */
        scu_add_role(rq, MR_STORAGE, false, true); /* SCP only */
        struct dul_assoc *a = NULL;
        struct tr_error err = TR_ERROR_INIT;
        if (associate_rq(srv.port, rq, &a, &err))
            fail_msg("%s", err.message);
        const struct dul_context *v = dul_find_context(a, SCU_VERIFICATION, NULL);
        assert_true(v->requestor_scu); /* no role item: default roles */
        assert_false(v->requestor_scp);
        const struct dul_context *ct = dul_find_context(a, CT_STORAGE, NULL);
        const struct dul_context *mr = dul_find_context(a, MR_STORAGE, NULL);
        assert_non_null(ct);
        assert_non_null(mr);
        assert_true(ct->requestor_scu);
        assert_false(mr->requestor_scu);
        /* The server can act as SCU of storage (send C-STOREs for C-GET) only when it
         * retrieves. */
        assert_int_equal(ct->requestor_scp, retrieve);
        assert_int_equal(mr->requestor_scp, retrieve);
        const struct dul_context *get = dul_find_context(a, SCU_STUDY_ROOT_GET, NULL);
        if (retrieve)
            assert_non_null(get);
        else
            assert_null(get);
        echo_ok(a);
        release_ok(a);
        server_finish(&srv);
    }
}

/* ---- user identity ------------------------------------------------------------------------ */

struct identity_acceptor {
    int listen_fd;
    int rc;
    char message[512];
    struct pdu_user_identity seen;
    char primary[4096], secondary[256];
};

static int identity_decide(void *ctx, struct dul_assoc *a, const struct pdu_associate *rq,
                           struct pdu_associate *ac, struct pdu_reject *rj)
{
    (void)a;
    (void)rj;
    struct identity_acceptor *ia = ctx;
    ia->seen = rq->identity;
    memcpy(ia->primary, rq->identity.primary, TR_MIN(rq->identity.primary_length, 4096u));
    if (rq->identity.secondary)
        memcpy(ia->secondary, rq->identity.secondary,
               TR_MIN(rq->identity.secondary_length, 256u));
    static const char *const ts[] = {DCM_UID_ImplicitVRLittleEndian, NULL};
    const struct dul_support s = {SCU_VERIFICATION, ts, true, false};
    dul_negotiate(rq, &s, 1, ac);
    /* PS3.7 D.3.3.7.2: the server response, when a positive response was requested. */
    if (rq->identity.positive_response) {
        ac->identity.has_response = true;
        ac->identity.response = "ticket-OK";
        ac->identity.response_length = 9;
    }
    return 0;
}

static void *identity_acceptor_main(void *arg)
{
    struct identity_acceptor *ia = arg;
    struct net_conn *conn;
    struct tr_error err = TR_ERROR_INIT;
    ia->rc = net_accept(ia->listen_fd, NULL, LONG_MS, &conn, &err);
    if (ia->rc == 0) {
        struct dul_config cfg;
        dul_config_init(&cfg);
        cfg.ae_title = SERVER_AE;
        struct dul_assoc *a = NULL;
        ia->rc = dul_accept(conn, &cfg, identity_decide, ia, &a, &err);
        if (ia->rc == 0) {
            struct pdu_pdv pdv;
            /* Wait for the release request. */
            int r = dul_receive(a, LONG_MS, &pdv, &err);
            if (r == 0)
                ia->rc = dul_release_reply(a, &err);
            else
                ia->rc = r < 0 ? r : TR_EPROTO;
            dul_free(a);
        }
    }
    snprintf(ia->message, sizeof(ia->message), "%s", err.message);
    return NULL;
}

static void test_user_identity(void **state)
{
    (void)state;
    /* Through the server: the authorize callback sees the identity as sent and decides. */
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    hs.auth = AUTH_CHECK_PASSWORD;
    struct pdu_associate *rq = rq_new(SERVER_AE);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    rq->identity = (struct pdu_user_identity){.type = PDU_IDENTITY_USERNAME_PASSCODE,
                                              .positive_response = true,
                                              .primary = "alice",
                                              .primary_length = 5,
                                              .secondary = "s3cret",
                                              .secondary_length = 6};
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(srv.port, rq, &a, &err))
        fail_msg("%s", err.message);
    assert_int_equal(hs.seen_identity_type, PDU_IDENTITY_USERNAME_PASSCODE);
    assert_true(hs.seen_positive_response);
    assert_int_equal(hs.seen_primary_length, 5);
    assert_memory_equal(hs.seen_primary, "alice", 5);
    assert_int_equal(hs.seen_secondary_length, 6);
    assert_memory_equal(hs.seen_secondary, "s3cret", 6);
    assert_int_equal(dul_identity(a)->type, PDU_IDENTITY_USERNAME_PASSCODE);
    echo_ok(a);
    release_ok(a);

    /* A wrong passcode: rejected, permanent, ACSE. */
    struct pdu_associate *bad = raw_rq(SERVER_AE, 16384);
    scu_add_context(bad, SCU_VERIFICATION, implicit_only);
    bad->identity = (struct pdu_user_identity){.type = PDU_IDENTITY_USERNAME_PASSCODE,
                                               .primary = "alice",
                                               .primary_length = 5,
                                               .secondary = "guess",
                                               .secondary_length = 5};
    expect_reject(srv.port, bad, PDU_RJ_PERMANENT, PDU_RJ_SOURCE_PROVIDER_ACSE, PDU_RJ_NO_REASON);
    /* No identity at all: rejected too. */
    bad->identity.type = PDU_IDENTITY_NONE;
    expect_reject(srv.port, bad, PDU_RJ_PERMANENT, PDU_RJ_SOURCE_PROVIDER_ACSE, PDU_RJ_NO_REASON);
    assert_int_equal(hs.seen_identity_type, PDU_IDENTITY_NONE);
    rq_free(bad);
    server_finish(&srv);

    /* Through dul_accept with a server response: a JWT of 3000 bytes (with a NUL in it) goes
     * over unchanged and the AC carries the response, read back by a raw peer. */
    struct identity_acceptor ia;
    memset(&ia, 0, sizeof(ia));
    ia.listen_fd = net_listen("127.0.0.1", 0, 8, NULL);
    assert_true(ia.listen_fd >= 0);
    int port = net_listen_port(ia.listen_fd);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, identity_acceptor_main, &ia), 0);
    static char jwt[3000];
    for (size_t i = 0; i < sizeof(jwt); i++)
        jwt[i] = (char)('A' + i % 26);
    jwt[100] = '\0';
    struct pdu_associate *jrq = raw_rq(SERVER_AE, 16384);
    scu_add_context(jrq, SCU_VERIFICATION, implicit_only);
    jrq->identity = (struct pdu_user_identity){.type = PDU_IDENTITY_JWT,
                                               .positive_response = true,
                                               .primary = jwt,
                                               .primary_length = sizeof(jwt)};
    int fd;
    struct raw_pdu p;
    raw_associate(port, jrq, &fd, &p);
    assert_int_equal(p.type, PDU_ASSOCIATE_AC);
    struct pdu_associate *ac = rq_new("X");
    err = (struct tr_error)TR_ERROR_INIT;
    if (pdu_decode_associate(PDU_ASSOCIATE_AC, p.body, p.length, ac, &err))
        fail_msg("%s", err.message);
    assert_true(ac->identity.has_response);
    assert_int_equal(ac->identity.response_length, 9);
    assert_memory_equal(ac->identity.response, "ticket-OK", 9);
    free(p.body);
    rq_free(ac);
    /* Release by hand. */
    struct tr_buf b;
    tr_buf_init(&b, 64);
    pdu_encode_release_rq(&b);
    raw_send_buf(fd, &b);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_RELEASE_RP);
    free(p.body);
    close(fd);
    pthread_join(t, NULL);
    close(ia.listen_fd);
    if (ia.rc)
        fail_msg("acceptor: %s", ia.message);
    assert_int_equal(ia.seen.type, PDU_IDENTITY_JWT);
    assert_true(ia.seen.positive_response);
    assert_int_equal(ia.seen.primary_length, sizeof(jwt));
    assert_memory_equal(ia.primary, jwt, sizeof(jwt));
    rq_free(jrq);
}

/* ---- maximum PDU length --------------------------------------------------------------------- */

/* The server sends to a peer with a small maximum: every P-DATA-TF it sends must fit. */
static void test_max_pdu_server_to_peer(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.find = true;
    struct server srv;
    server_start(&srv, &o);
    hs.find_matches = 5;
    hs.find_match_size = 200000; /* each match ~200 KB: ~200 PDUs at our maximum */
    static const uint32_t peer_max[] = {1001, 4096, 65536};
    for (size_t k = 0; k < TR_ARRAY_SIZE(peer_max); k++) {
        atomic_store(&hs.find_emitted, 0);
        struct pdu_associate *rq = raw_rq(SERVER_AE, peer_max[k]);
        scu_add_context(rq, SCU_STUDY_ROOT_FIND, implicit_only);
        int fd;
        struct raw_pdu p;
        raw_associate(srv.port, rq, &fd, &p);
        rq_free(rq);
        assert_int_equal(p.type, PDU_ASSOCIATE_AC);
        /* The AC announces the server's own maximum. */
        struct pdu_associate *ac = rq_new("X");
        assert_int_equal(pdu_decode_associate(PDU_ASSOCIATE_AC, p.body, p.length, ac, NULL), 0);
        assert_int_equal(ac->max_length, o.max_pdu);
        assert_int_equal(ac->context[0].result, PDU_PC_ACCEPTANCE);
        rq_free(ac);
        free(p.body);

        /* C-FIND-RQ with a small identifier. */
        struct dcm_dataset *cmd =
            dimse_command_new(DIMSE_C_FIND_RQ, 1, SCU_STUDY_ROOT_FIND, NULL, true);
        dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, 0);
        struct tr_buf cb;
        encode_command(cmd, &cb);
        dcm_dataset_free(cmd);
        raw_send_pdv(fd, 1, true, true, cb.data, cb.len);
        tr_buf_release(&cb);
        struct dcm_dataset *id = dcm_dataset_new();
        dcm_dataset_set_string(id, 0x00080052, DCM_VR_CS, "STUDY");
        dcm_dataset_set_empty(id, 0x00100010, DCM_VR_PN);
        struct tr_buf ib;
        tr_buf_init(&ib, 1 << 20);
        struct tr_sink s = tr_sink_buf(&ib);
        assert_int_equal(dcm_dataset_write(id, DCM_UID_ImplicitVRLittleEndian, NULL, &s, NULL), 0);
        dcm_dataset_free(id);
        raw_send_pdv(fd, 1, false, true, ib.data, ib.len);
        tr_buf_release(&ib);

        /* Read every PDU up to the final response. */
        unsigned pdus = 0, pending = 0;
        uint64_t data_bytes = 0;
        uint32_t largest = 0;
        struct tr_buf cmdbuf;
        tr_buf_init(&cmdbuf, 1 << 20);
        int final_status = -1;
        while (final_status < 0) {
            int r = raw_read_pdu(fd, &p, LONG_MS);
            assert_int_equal(r, 0);
            assert_int_equal(p.type, PDU_P_DATA_TF);
            pdus++;
            if (p.length > largest)
                largest = p.length;
            /* PS3.8 9.3.5 / D.1: the whole P-DATA-TF (after the 6-byte header) fits. */
            if (p.length > peer_max[k])
                fail_msg("P-DATA-TF of %u bytes to a peer whose maximum is %u", p.length,
                         peer_max[k]);
            size_t pos = 0;
            struct pdu_pdv pdv;
            int n;
            while ((n = pdu_next_pdv(p.body, p.length, &pos, &pdv, NULL)) > 0) {
                if (!pdv.command) {
                    data_bytes += pdv.length;
                    continue;
                }
                assert_int_equal(tr_buf_add(&cmdbuf, pdv.data, pdv.length), 0);
                if (!pdv.last)
                    continue;
                struct dimse_message m;
                m.pc = pdv.context_id;
                assert_int_equal(dimse_parse_command_set(cmdbuf.data, cmdbuf.len, &m, NULL), 0);
                tr_buf_reset(&cmdbuf);
                assert_int_equal(m.command_field, DIMSE_C_FIND_RSP);
                if (m.status == DIMSE_STATUS_PENDING)
                    pending++;
                else
                    final_status = m.status;
                dimse_message_release(&m);
            }
            assert_int_equal(n, 0);
            free(p.body);
        }
        tr_buf_release(&cmdbuf);
        show("peer max %u: %u PDUs, largest %u, %llu data bytes\n", peer_max[k], pdus, largest,
             (unsigned long long)data_bytes);
        assert_int_equal(final_status, DIMSE_STATUS_SUCCESS);
        assert_int_equal(pending, 5);
        assert_true(data_bytes > 5 * 200000);
        assert_true(pdus > data_bytes / peer_max[k]);
        /* Release. */
        struct tr_buf b;
        tr_buf_init(&b, 64);
        pdu_encode_release_rq(&b);
        raw_send_buf(fd, &b);
        assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
        assert_int_equal(p.type, PDU_RELEASE_RP);
        free(p.body);
        close(fd);
    }
    assert_true(wait_active(&srv, 0, LONG_MS));
    server_finish(&srv);
}

/* How the messages of a C-FIND answer lie in the PDUs, as a raw peer reads them. */
struct find_layout {
    unsigned pdus, pending;
    unsigned packed;      /* pending responses whose data set begins in the command's PDU */
    uint32_t largest;     /* largest P-DATA-TF body */
    int final_status;
    char why[256];        /* the first rule broken, "" if none */
};

/* Associate with maximum length `peer_max`, send a study-level C-FIND-RQ and read its answer
 * PDU by PDU up to the final response, checking PS3.8 9.3.5 and annex E as we go: every PDU
 * fits peer_max; the command's fragments come before the data set's, the command's last
 * fragment flagged; and (telerad's own rule) a PDU holds fragments of one message only, a
 * command always starting a PDU. */
static void raw_find(int port, uint32_t peer_max, struct find_layout *L)
{
    memset(L, 0, sizeof(*L));
    L->final_status = -1;
    struct pdu_associate *rq = raw_rq(SERVER_AE, peer_max);
    scu_add_context(rq, SCU_STUDY_ROOT_FIND, implicit_only);
    int fd;
    struct raw_pdu p;
    raw_associate(port, rq, &fd, &p);
    rq_free(rq);
    assert_int_equal(p.type, PDU_ASSOCIATE_AC);
    free(p.body);
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_FIND_RQ, 1, SCU_STUDY_ROOT_FIND, NULL, true);
    dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, 0);
    struct tr_buf cb;
    encode_command(cmd, &cb);
    dcm_dataset_free(cmd);
    raw_send_pdv(fd, 1, true, true, cb.data, cb.len);
    tr_buf_release(&cb);
    struct dcm_dataset *id = dcm_dataset_new();
    dcm_dataset_set_string(id, 0x00080052, DCM_VR_CS, "STUDY");
    dcm_dataset_set_empty(id, 0x00100010, DCM_VR_PN);
    struct tr_buf ib;
    tr_buf_init(&ib, 1 << 20);
    struct tr_sink s = tr_sink_buf(&ib);
    assert_int_equal(dcm_dataset_write(id, DCM_UID_ImplicitVRLittleEndian, NULL, &s, NULL), 0);
    dcm_dataset_free(id);
    raw_send_pdv(fd, 1, false, true, ib.data, ib.len);
    tr_buf_release(&ib);

    struct tr_buf cmdbuf;
    tr_buf_init(&cmdbuf, 1 << 20);
    enum { WANT_COMMAND, IN_COMMAND, WANT_DATASET, IN_DATASET } at = WANT_COMMAND;
    bool pending = false;
    while (L->final_status < 0 || at != WANT_COMMAND) {
        assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
        assert_int_equal(p.type, PDU_P_DATA_TF);
        L->pdus++;
        if (p.length > L->largest)
            L->largest = p.length;
        if (p.length > peer_max && !L->why[0])
            snprintf(L->why, sizeof(L->why), "a P-DATA-TF of %u bytes, maximum %u", p.length,
                     peer_max);
        size_t pos = 0;
        struct pdu_pdv pdv;
        int n;
        bool first = true, command_ended_here = false;
        while ((n = pdu_next_pdv(p.body, p.length, &pos, &pdv, NULL)) > 0) {
            if (at == WANT_COMMAND && !first && !L->why[0])
                snprintf(L->why, sizeof(L->why), "PDU %u holds a second message", L->pdus);
            if (at == WANT_COMMAND && !pdv.command && !L->why[0])
                snprintf(L->why, sizeof(L->why), "PDU %u: a data set before its command",
                         L->pdus);
            if (pdv.command && (at == WANT_DATASET || at == IN_DATASET) && !L->why[0])
                snprintf(L->why, sizeof(L->why), "PDU %u: a command inside a data set", L->pdus);
            if (pdv.command) {
                assert_int_equal(tr_buf_add(&cmdbuf, pdv.data, pdv.length), 0);
                at = IN_COMMAND;
                if (pdv.last) {
                    struct dimse_message m;
                    m.pc = pdv.context_id;
                    assert_int_equal(dimse_parse_command_set(cmdbuf.data, cmdbuf.len, &m, NULL),
                                     0);
                    tr_buf_reset(&cmdbuf);
                    assert_int_equal(m.command_field, DIMSE_C_FIND_RSP);
                    pending = dimse_status_is_pending(m.status);
                    if (pending)
                        L->pending++;
                    else
                        L->final_status = m.status;
                    at = m.has_dataset ? WANT_DATASET : WANT_COMMAND;
                    command_ended_here = true;
                    dimse_message_release(&m);
                }
            } else {
                if (at == WANT_DATASET && pending && command_ended_here)
                    L->packed++;
                at = pdv.last ? WANT_COMMAND : IN_DATASET;
            }
            first = false;
        }
        assert_int_equal(n, 0);
        free(p.body);
    }
    tr_buf_release(&cmdbuf);
    struct tr_buf b;
    tr_buf_init(&b, 64);
    pdu_encode_release_rq(&b);
    raw_send_buf(fd, &b);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_RELEASE_RP);
    free(p.body);
    close(fd);
}

/* A pending C-FIND response goes as one P-DATA-TF PDU with two PDVs, the command's and the
 * data set's, when it fits the peer's maximum (PS3.8 9.3.5 allows several PDVs in a PDU); a
 * larger one is split over PDUs that fit, its data set beginning in the command's PDU. */
static void test_find_response_in_one_pdu(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.find = true;
    struct server srv;
    server_start(&srv, &o);
    static const struct {
        uint32_t peer_max;
        size_t match_size;
    } cases[] = {{4096, 0}, {16384, 0}, {262144, 0}, {4096, 10000}, {16384, 100000}};
    for (size_t k = 0; k < TR_ARRAY_SIZE(cases); k++) {
        hs.find_matches = 40; /* more than two batches of 16 */
        hs.find_match_size = cases[k].match_size;
        atomic_store(&hs.find_emitted, 0);
        struct find_layout L;
        raw_find(srv.port, cases[k].peer_max, &L);
        show("peer max %u, matches of %zu bytes: %u PDUs for %u pending responses (%u packed), "
             "largest %u\n", cases[k].peer_max, cases[k].match_size, L.pdus, L.pending,
             L.packed, L.largest);
        if (L.why[0])
            fail_msg("peer max %u: %s", cases[k].peer_max, L.why);
        assert_int_equal(L.final_status, DIMSE_STATUS_SUCCESS);
        assert_int_equal(L.pending, 40);
        assert_int_equal(L.packed, 40);
        assert_true(L.largest <= cases[k].peer_max);
        if (!cases[k].match_size)
            assert_int_equal(L.pdus, 41); /* one per response and the final one */
        else
            assert_true(L.pdus > 40 * (cases[k].match_size / cases[k].peer_max));
    }
    hs.find_match_size = 0;
    assert_true(wait_active(&srv, 0, LONG_MS));
    server_finish(&srv);
}

struct arrival_ctx {
    unsigned seen;
    int64_t at[8];
};

static int note_arrival(void *ctx, const struct dcm_dataset *match)
{
    (void)match;
    struct arrival_ctx *ac = ctx;
    if (ac->seen < TR_ARRAY_SIZE(ac->at))
        ac->at[ac->seen] = now_ms();
    ac->seen++;
    return 0;
}

/* The SCP gathers pending responses for one write, but a match that comes slowly (here 60 ms
 * after the one before) is not held back until the next one: each arrives as it is made. */
static void test_find_slow_matches_not_held(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.find = true;
    struct server srv;
    server_start(&srv, &o);
    hs.find_matches = 4;
    hs.find_sleep_ms = 60;
    struct pdu_associate *rq = rq_new(SERVER_AE);
    scu_add_context(rq, SCU_STUDY_ROOT_FIND, plain_ts);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(srv.port, rq, &a, &err))
        fail_msg("%s", err.message);
    struct dcm_dataset *id = dcm_dataset_new();
    dcm_dataset_set_string(id, 0x00080052, DCM_VR_CS, "STUDY");
    dcm_dataset_set_empty(id, 0x00100010, DCM_VR_PN);
    struct arrival_ctx ac = {0};
    uint16_t status = 0;
    int64_t t0 = now_ms();
    if (scu_find(a, SCU_STUDY_ROOT_FIND, id, 0, note_arrival, &ac, &status, &err))
        fail_msg("%s", err.message);
    int64_t t1 = now_ms();
    print_message("4 matches 60 ms apart: arrived after %lld, %lld, %lld, %lld ms; final after "
                  "%lld ms\n", (long long)(ac.at[0] - t0), (long long)(ac.at[1] - t0),
                  (long long)(ac.at[2] - t0), (long long)(ac.at[3] - t0), (long long)(t1 - t0));
    assert_int_equal(status, DIMSE_STATUS_SUCCESS);
    assert_int_equal(ac.seen, 4);
    /* Spread over the time they took to make, not delivered together at the end. */
    for (unsigned i = 1; i < 4; i++)
        assert_true(ac.at[i] - ac.at[i - 1] >= 30);
    dcm_dataset_free(id);
    release_ok(a);
    hs.find_sleep_ms = 0;
    server_finish(&srv);
}

/* A raw acceptor with a small maximum: telerad's requestor must fit its PDUs to it. */
struct small_acceptor {
    int listen_fd;
    uint32_t max;
    /* results */
    bool ok;
    char why[256];
    unsigned pdus;
    uint32_t largest;
    uint64_t data_bytes;
    uLong crc;
    bool released;
};

static void *small_acceptor_main(void *arg)
{
    struct small_acceptor *sa = arg;
    struct sockaddr_in peer;
    socklen_t plen = sizeof(peer);
    int lfd = sa->listen_fd;
    struct pollfd pfd = {lfd, POLLIN, 0};
    if (poll(&pfd, 1, LONG_MS) <= 0) {
        snprintf(sa->why, sizeof(sa->why), "no connection");
        return NULL;
    }
    int fd = accept(lfd, (struct sockaddr *)&peer, &plen);
    if (fd < 0) {
        snprintf(sa->why, sizeof(sa->why), "accept failed");
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct raw_pdu p;
    struct pdu_associate *rq = tr_malloc(sizeof(*rq)), *ac = tr_malloc(sizeof(*ac));
    pdu_associate_init(rq);
    pdu_associate_init(ac);
    struct tr_buf b;
    sa->crc = crc32(0, NULL, 0);
    if (raw_read_pdu(fd, &p, LONG_MS) || p.type != PDU_ASSOCIATE_RQ ||
        pdu_decode_associate(PDU_ASSOCIATE_RQ, p.body, p.length, rq, NULL)) {
        snprintf(sa->why, sizeof(sa->why), "no valid A-ASSOCIATE-RQ");
        goto out;
    }
    free(p.body);
    p.body = NULL;
    snprintf(ac->called_ae, sizeof(ac->called_ae), "%s", rq->called_ae);
    snprintf(ac->calling_ae, sizeof(ac->calling_ae), "%s", rq->calling_ae);
    snprintf(ac->implementation_class_uid, sizeof(ac->implementation_class_uid), "1.2.3.4");
    ac->max_length = sa->max;
    static const char *const ts[] = {DCM_UID_ExplicitVRLittleEndian, NULL};
    const struct dul_support s = {CT_STORAGE, ts, true, false};
    dul_negotiate(rq, &s, 1, ac);
    tr_buf_init(&b, 1 << 20);
    if (pdu_encode_associate_ac(ac, &b) || raw_write(fd, b.data, b.len)) {
        tr_buf_release(&b);
        snprintf(sa->why, sizeof(sa->why), "cannot send the AC");
        goto out;
    }
    tr_buf_release(&b);
    /* Read the C-STORE: command, then data, every PDU within sa->max. */
    struct tr_buf cmd;
    tr_buf_init(&cmd, 1 << 20);
    bool data_done = false;
    uint8_t pc = 0;
    struct dimse_message m;
    memset(&m, 0, sizeof(m));
    while (!data_done) {
        if (raw_read_pdu(fd, &p, LONG_MS) || p.type != PDU_P_DATA_TF) {
            snprintf(sa->why, sizeof(sa->why), "expected P-DATA-TF, got type %u", p.type);
            free(p.body);
            tr_buf_release(&cmd);
            goto out;
        }
        sa->pdus++;
        if (p.length > sa->largest)
            sa->largest = p.length;
        size_t pos = 0;
        struct pdu_pdv pdv;
        while (pdu_next_pdv(p.body, p.length, &pos, &pdv, NULL) > 0) {
            pc = pdv.context_id;
            if (pdv.command) {
                tr_buf_add(&cmd, pdv.data, pdv.length);
                if (pdv.last) {
                    m.pc = pc;
                    if (dimse_parse_command_set(cmd.data, cmd.len, &m, NULL) != 0)
                        snprintf(sa->why, sizeof(sa->why), "bad command set");
                }
            } else {
                sa->data_bytes += pdv.length;
                sa->crc = crc32(sa->crc, pdv.data, (uInt)pdv.length);
                data_done = pdv.last;
            }
        }
        free(p.body);
    }
    tr_buf_release(&cmd);
    /* Answer success. */
    struct dcm_dataset *rsp = dimse_response_new(&m, DIMSE_STATUS_SUCCESS, false);
    dimse_message_release(&m);
    encode_command(rsp, &b);
    dcm_dataset_free(rsp);
    uint8_t hdr[12];
    pdu_encode_pdata_header(pc, true, true, (uint32_t)b.len, hdr);
    raw_write(fd, hdr, sizeof(hdr));
    raw_write(fd, b.data, b.len);
    tr_buf_release(&b);
    /* Release. */
    if (raw_read_pdu(fd, &p, LONG_MS) == 0 && p.type == PDU_RELEASE_RQ) {
        free(p.body);
        tr_buf_init(&b, 64);
        pdu_encode_release_rp(&b);
        raw_write(fd, b.data, b.len);
        tr_buf_release(&b);
        sa->released = raw_wait_close(fd, LONG_MS);
    } else {
        free(p.body);
    }
    sa->ok = !sa->why[0];
out:
    pdu_associate_release(rq);
    pdu_associate_release(ac);
    tr_free(rq);
    tr_free(ac);
    close(fd);
    return NULL;
}

static void test_max_pdu_requestor_to_peer(void **state)
{
    (void)state;
    static const uint32_t maxes[] = {5000, 16384};
    for (size_t k = 0; k < TR_ARRAY_SIZE(maxes); k++) {
        struct small_acceptor sa;
        memset(&sa, 0, sizeof(sa));
        sa.max = maxes[k];
        sa.listen_fd = net_listen("127.0.0.1", 0, 8, NULL);
        assert_true(sa.listen_fd >= 0);
        int port = net_listen_port(sa.listen_fd);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, small_acceptor_main, &sa), 0);
        struct pdu_associate *rq = rq_new(SERVER_AE);
        scu_add_context(rq, CT_STORAGE, plain_ts);
        struct dul_assoc *a = NULL;
        struct tr_error err = TR_ERROR_INIT;
        if (associate_rq(port, rq, &a, &err))
            fail_msg("%s", err.message);
        assert_int_equal(dul_peer_max_pdu(a), maxes[k]);
        uLong crc;
        const uint64_t total = 3u << 20; /* 3 MB: hundreds of PDUs */
        int rc = send_store(a, "1.2.3.4.5", total, 100000, 0, 0, &crc, &err);
        if (rc)
            fail_msg("%s", err.message);
        assert_int_equal(receive_status(a, DIMSE_C_STORE_RSP, &err), DIMSE_STATUS_SUCCESS);
        release_ok(a);
        pthread_join(t, NULL);
        close(sa.listen_fd);
        if (!sa.ok)
            fail_msg("raw acceptor: %s", sa.why);
        show("peer max %u: %u PDUs, largest %u\n", sa.max, sa.pdus, sa.largest);
        assert_true(sa.largest <= sa.max);
        assert_int_equal(sa.largest, sa.max); /* and uses the room it has */
        assert_int_equal(sa.data_bytes, total);
        assert_int_equal(sa.crc, crc);
        assert_true(sa.released);
    }
}

/* A P-DATA-TF larger than the server's maximum: A-ABORT, nothing stored. */
static void test_pdu_over_maximum(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    struct pdu_associate *rq = raw_rq(SERVER_AE, 16384);
    scu_add_context(rq, CT_STORAGE, implicit_only);
    int fd;
    struct raw_pdu p;
    raw_associate(srv.port, rq, &fd, &p);
    rq_free(rq);
    assert_int_equal(p.type, PDU_ASSOCIATE_AC);
    free(p.body);
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_STORE_RQ, 1, CT_STORAGE, "1.2.3", true);
    struct tr_buf cb;
    encode_command(cmd, &cb);
    dcm_dataset_free(cmd);
    raw_send_pdv(fd, 1, true, true, cb.data, cb.len);
    tr_buf_release(&cb);
    size_t big = o.max_pdu + 100;
    uint8_t *data = calloc(1, big);
    raw_send_pdv(fd, 1, false, true, data, big - 6);
    free(data);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_ABORT);
    assert_int_equal(p.length, 4);
    assert_int_equal(p.body[2], PDU_ABORT_PROVIDER);
    free(p.body);
    assert_true(raw_wait_close(fd, LONG_MS));
    close(fd);
    assert_true(wait_active(&srv, 0, LONG_MS));
    assert_int_equal(atomic_load(&hs.stores_complete), 0);
    /* The store that had begun was ended as incomplete. */
    assert_int_equal(atomic_load(&hs.stores_begun), atomic_load(&hs.stores_incomplete));
    /* Others still get served. */
    struct dul_assoc *a = associate(srv.port);
    echo_ok(a);
    release_ok(a);
    server_finish(&srv);
}

/* PDUs in the wrong state or of unknown types before and after association. */
static void test_unexpected_pdus(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    /* P-DATA-TF before any association (Evt10 in Sta2: AA-1). */
    int fd = raw_connect(srv.port);
    uint8_t data[8] = {0};
    raw_send_pdv(fd, 1, true, true, data, sizeof(data));
    struct raw_pdu p;
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_ABORT);
    free(p.body);
    assert_true(raw_wait_close(fd, LONG_MS));
    close(fd);
    /* A-RELEASE-RQ before association. */
    fd = raw_connect(srv.port);
    struct tr_buf b;
    tr_buf_init(&b, 64);
    pdu_encode_release_rq(&b);
    raw_send_buf(fd, &b);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_ABORT);
    free(p.body);
    assert_true(raw_wait_close(fd, LONG_MS));
    close(fd);
    /* Unknown PDU type 0x09 before association (Evt19: AA-1). */
    fd = raw_connect(srv.port);
    uint8_t unknown[10] = {0x09, 0, 0, 0, 0, 4, 1, 2, 3, 4};
    assert_int_equal(raw_write(fd, unknown, sizeof(unknown)), 0);
    int r = raw_read_pdu(fd, &p, LONG_MS);
    if (r == 0) {
        assert_int_equal(p.type, PDU_ABORT);
        free(p.body);
    }
    assert_true(raw_wait_close(fd, LONG_MS));
    close(fd);
    /* A second A-ASSOCIATE-RQ inside an association (Evt6 in Sta6: AA-8). */
    struct pdu_associate *rq = raw_rq(SERVER_AE, 16384);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    raw_associate(srv.port, rq, &fd, &p);
    assert_int_equal(p.type, PDU_ASSOCIATE_AC);
    free(p.body);
    raw_send_rq(fd, rq);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_ABORT);
    assert_int_equal(p.body[2], PDU_ABORT_PROVIDER);
    assert_int_equal(p.body[3], PDU_ABORT_UNEXPECTED_PDU);
    free(p.body);
    assert_true(raw_wait_close(fd, LONG_MS));
    close(fd);
    /* Unknown PDU type inside an association (Evt19 in Sta6: AA-8, unrecognized PDU). */
    raw_associate(srv.port, rq, &fd, &p);
    free(p.body);
    assert_int_equal(raw_write(fd, unknown, sizeof(unknown)), 0);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_ABORT);
    assert_int_equal(p.body[2], PDU_ABORT_PROVIDER);
    if (p.body[3] != PDU_ABORT_UNRECOGNIZED_PDU)
        fail_msg("A-ABORT for an unknown PDU type has reason %u, not 1 (unrecognized-PDU, "
                 "PS3.8 Table 9-26)", p.body[3]);
    free(p.body);
    assert_true(raw_wait_close(fd, LONG_MS));
    close(fd);
    rq_free(rq);
    assert_true(wait_active(&srv, 0, LONG_MS));
    struct dul_assoc *a = associate(srv.port);
    echo_ok(a);
    release_ok(a);
    server_finish(&srv);
}

/* ---- release, collision, abort ---------------------------------------------------------------- */

/* A raw acceptor that answers our A-RELEASE-RQ with its own (a release collision, PS3.8
 * 9.2.2.2), then answers our A-RELEASE-RP with its own. */
struct collision_acceptor {
    int listen_fd;
    bool got_rq, got_rp, closed;
    char why[128];
};

static void *collision_main(void *arg)
{
    struct collision_acceptor *ca = arg;
    struct pollfd pfd = {ca->listen_fd, POLLIN, 0};
    if (poll(&pfd, 1, LONG_MS) <= 0)
        return NULL;
    int fd = accept(ca->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
    struct raw_pdu p;
    struct pdu_associate *rq = tr_malloc(sizeof(*rq)), *ac = tr_malloc(sizeof(*ac));
    pdu_associate_init(rq);
    pdu_associate_init(ac);
    struct tr_buf b;
    if (raw_read_pdu(fd, &p, LONG_MS) ||
        pdu_decode_associate(PDU_ASSOCIATE_RQ, p.body, p.length, rq, NULL)) {
        snprintf(ca->why, sizeof(ca->why), "no RQ");
        goto out;
    }
    free(p.body);
    snprintf(ac->called_ae, sizeof(ac->called_ae), "%s", rq->called_ae);
    snprintf(ac->calling_ae, sizeof(ac->calling_ae), "%s", rq->calling_ae);
    snprintf(ac->implementation_class_uid, sizeof(ac->implementation_class_uid), "1.2.3.4");
    ac->max_length = 16384;
    const struct dul_support s = {SCU_VERIFICATION, implicit_only, true, false};
    dul_negotiate(rq, &s, 1, ac);
    tr_buf_init(&b, 1 << 20);
    pdu_encode_associate_ac(ac, &b);
    raw_write(fd, b.data, b.len);
    tr_buf_release(&b);
    /* Sta6 -> the requestor sends A-RELEASE-RQ; we (acceptor) send ours too: Sta7. */
    if (raw_read_pdu(fd, &p, LONG_MS) || p.type != PDU_RELEASE_RQ) {
        snprintf(ca->why, sizeof(ca->why), "expected A-RELEASE-RQ");
        goto out;
    }
    free(p.body);
    ca->got_rq = true;
    tr_buf_init(&b, 64);
    pdu_encode_release_rq(&b);
    raw_write(fd, b.data, b.len);
    tr_buf_release(&b);
    /* Sta10: await the requestor's A-RELEASE-RP (AR-10), then answer with ours (AR-4). */
    if (raw_read_pdu(fd, &p, LONG_MS) || p.type != PDU_RELEASE_RP) {
        snprintf(ca->why, sizeof(ca->why), "expected A-RELEASE-RP, got %u", p.type);
        goto out;
    }
    free(p.body);
    ca->got_rp = true;
    tr_buf_init(&b, 64);
    pdu_encode_release_rp(&b);
    raw_write(fd, b.data, b.len);
    tr_buf_release(&b);
    ca->closed = raw_wait_close(fd, LONG_MS);
out:
    pdu_associate_release(rq);
    pdu_associate_release(ac);
    tr_free(rq);
    tr_free(ac);
    close(fd);
    return NULL;
}

static void test_release_collision(void **state)
{
    (void)state;
    struct collision_acceptor ca;
    memset(&ca, 0, sizeof(ca));
    ca.listen_fd = net_listen("127.0.0.1", 0, 8, NULL);
    int port = net_listen_port(ca.listen_fd);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, collision_main, &ca), 0);
    struct pdu_associate *rq = rq_new(SERVER_AE);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(port, rq, &a, &err))
        fail_msg("%s", err.message);
    int rc = dul_release(a, &err);
    if (rc)
        fail_msg("release with collision: %s", err.message);
    assert_int_equal(dul_state(a), 1);
    dul_free(a);
    pthread_join(t, NULL);
    close(ca.listen_fd);
    if (ca.why[0])
        fail_msg("acceptor: %s", ca.why);
    assert_true(ca.got_rq);
    assert_true(ca.got_rp);
    assert_true(ca.closed);
}

static void test_abort_by_requestor(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    struct dul_assoc *a = associate(srv.port);
    echo_ok(a);
    assert_true(wait_active(&srv, 1, LONG_MS));
    dul_abort(a, PDU_ABORT_USER, PDU_ABORT_NOT_SPECIFIED);
    assert_int_equal(dul_state(a), 1);
    assert_int_equal(dul_send(a, 1, true, "x", 1, true, NULL), TR_ECLOSED);
    dul_free(a);
    assert_true(wait_active(&srv, 0, LONG_MS));
    assert_true(log_has("aborted the association", LONG_MS));

    /* An abort in the middle of a C-STORE: the store is ended as incomplete, never success. */
    a = associate(srv.port);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(send_store(a, "1.2.3.9", 1u << 20, 65536, 0, 0, NULL, &err), 0);
    /* A whole one, answered; then half of one, and the abort. */
    assert_int_equal(receive_status(a, DIMSE_C_STORE_RSP, &err), DIMSE_STATUS_SUCCESS);
    const struct dul_context *c = dul_find_context(a, CT_STORAGE, NULL);
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_STORE_RQ, 8, CT_STORAGE, "1.2.3.10", true);
    assert_int_equal(dimse_send_command(a, c->id, cmd, NULL), 0);
    dcm_dataset_free(cmd);
    static uint8_t half[100000];
    assert_int_equal(dimse_send_bytes(a, c->id, half, sizeof(half), false, NULL), 0);
    int64_t end = now_ms() + LONG_MS;
    while (atomic_load(&hs.stores_begun) < 2 && now_ms() < end)
        sleep_ms(5);
    dul_abort(a, PDU_ABORT_USER, PDU_ABORT_NOT_SPECIFIED);
    dul_free(a);
    assert_true(wait_active(&srv, 0, LONG_MS));
    assert_int_equal(atomic_load(&hs.stores_complete), 1);
    assert_int_equal(atomic_load(&hs.stores_incomplete), 1);
    server_finish(&srv);
}

struct aborting_acceptor {
    int listen_fd;
    int rc;
};

static int accept_everything(void *ctx, struct dul_assoc *a, const struct pdu_associate *rq,
                             struct pdu_associate *ac, struct pdu_reject *rj)
{
    (void)ctx;
    (void)a;
    (void)rj;
    const struct dul_support s = {SCU_VERIFICATION, implicit_only, true, false};
    dul_negotiate(rq, &s, 1, ac);
    return 0;
}

static void *aborting_main(void *arg)
{
    struct aborting_acceptor *aa = arg;
    struct net_conn *conn;
    aa->rc = net_accept(aa->listen_fd, NULL, LONG_MS, &conn, NULL);
    if (aa->rc)
        return NULL;
    struct dul_config cfg;
    dul_config_init(&cfg);
    cfg.ae_title = SERVER_AE;
    struct dul_assoc *a;
    aa->rc = dul_accept(conn, &cfg, accept_everything, NULL, &a, NULL);
    if (aa->rc)
        return NULL;
    dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
    dul_free(a);
    return NULL;
}

static void test_abort_by_acceptor(void **state)
{
    (void)state;
    struct aborting_acceptor aa = {net_listen("127.0.0.1", 0, 8, NULL), 0};
    int port = net_listen_port(aa.listen_fd);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, aborting_main, &aa), 0);
    struct pdu_associate *rq = rq_new(SERVER_AE);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(port, rq, &a, &err))
        fail_msg("%s", err.message);
    struct pdu_pdv pdv;
    assert_int_equal(dul_receive(a, LONG_MS, &pdv, &err), TR_ECLOSED);
    show("%s\n", err.message);
    assert_non_null(strstr(err.message, "aborted"));
    assert_int_equal(dul_state(a), 1);
    dul_free(a);
    pthread_join(t, NULL);
    close(aa.listen_fd);
    assert_int_equal(aa.rc, 0);
}

/* ---- timers ----------------------------------------------------------------------------------- */

static void test_artim(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.artim_ms = 500;
    struct server srv;
    server_start(&srv, &o);
    /* A connection that sends nothing is closed once ARTIM expires (PS3.8 9.1.5, Evt18 in
     * Sta2: AA-2). */
    int64_t t0 = now_ms();
    int fd = raw_connect(srv.port);
    assert_true(raw_wait_close(fd, LONG_MS));
    int64_t waited = now_ms() - t0;
    close(fd);
    show("closed after %lld ms\n", (long long)waited);
    assert_true(waited >= 400);
    assert_true(waited < 5000);
    /* A partial PDU header is no better. */
    t0 = now_ms();
    fd = raw_connect(srv.port);
    assert_int_equal(raw_write(fd, "\x01\x00", 2), 0);
    assert_true(raw_wait_close(fd, LONG_MS));
    waited = now_ms() - t0;
    close(fd);
    assert_true(waited >= 400 && waited < 5000);
    /* Nor is a header announcing a body that never comes: the A-ASSOCIATE-RQ has not been
     * received until all of it is there, so ARTIM still runs (PS3.8 9.1.5, 9.2.3 Sta2). */
    fd = raw_connect(srv.port);
    t0 = now_ms();
    assert_int_equal(raw_write(fd, "\x01\x00\x00\x00\x01\x00", 6), 0);
    bool closed = raw_wait_close(fd, LONG_MS);
    waited = now_ms() - t0;
    close(fd);
    if (!closed || waited >= 5000)
        fail_msg("a connection that sent only an A-ASSOCIATE-RQ header was still open after "
                 "%lld ms (ARTIM is %d ms)", (long long)waited, o.artim_ms);
    /* After a rejection the server gives the peer ARTIM to close, then closes itself. */
    struct pdu_associate *rq = raw_rq("NOBODY", 16384);
    scu_add_context(rq, SCU_VERIFICATION, implicit_only);
    struct raw_pdu p;
    raw_associate(srv.port, rq, &fd, &p);
    rq_free(rq);
    assert_int_equal(p.type, PDU_ASSOCIATE_RJ);
    free(p.body);
    t0 = now_ms();
    assert_true(raw_wait_close(fd, LONG_MS));
    waited = now_ms() - t0;
    close(fd);
    assert_true(waited >= 400 && waited < 5000);
    assert_true(wait_active(&srv, 0, LONG_MS));
    server_finish(&srv);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.timeout_ms = 700;
    struct server srv;
    server_start(&srv, &o);
    struct dul_assoc *a = associate(srv.port);
    echo_ok(a);
    int64_t t0 = now_ms();
    struct pdu_pdv pdv;
    struct tr_error err = TR_ERROR_INIT;
    /* We go silent: the server aborts. */
    assert_int_equal(dul_receive(a, LONG_MS, &pdv, &err), TR_ECLOSED);
    int64_t waited = now_ms() - t0;
    show("%s after %lld ms\n", err.message, (long long)waited);
    assert_non_null(strstr(err.message, "aborted"));
    assert_true(waited >= 600);
    assert_true(waited < 5000);
    dul_free(a);
    assert_true(wait_active(&srv, 0, LONG_MS));
    /* An association that keeps talking is not cut off. */
    a = associate(srv.port);
    for (int i = 0; i < 5; i++) {
        sleep_ms(300);
        echo_ok(a);
    }
    release_ok(a);
    server_finish(&srv);
}

/* ---- DIMSE ------------------------------------------------------------------------------------ */

static long proc_status_kb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, field, n) == 0 && line[n] == ':') {
            v = strtol(line + n + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static void test_store_300mb_bounded_memory(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.max_pdu = DUL_DEFAULT_MAX_PDU;
    struct server srv;
    server_start(&srv, &o);
    struct dul_assoc *a = associate(srv.port);
    const uint64_t total = 300ull << 20;
    /* Reset the peak RSS (Linux: "5" to clear_refs), so VmHWM covers this transfer only. */
    FILE *f = fopen("/proc/self/clear_refs", "w");
    bool hwm_reset = f && fputs("5", f) >= 0;
    if (f)
        hwm_reset = (fclose(f) == 0) && hwm_reset;
    long before = proc_status_kb(hwm_reset ? "VmHWM" : "VmRSS");
    int64_t t0 = now_ms();
    uLong crc;
    struct tr_error err = TR_ERROR_INIT;
    int rc = send_store(a, "1.2.826.0.1.3680043.2.1125.1", total, 1u << 20, 0, 0, &crc, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_int_equal(receive_status(a, DIMSE_C_STORE_RSP, &err), DIMSE_STATUS_SUCCESS);
    int64_t ms = now_ms() - t0;
    long after = proc_status_kb(hwm_reset ? "VmHWM" : "VmRSS");
    print_message("300 MB C-STORE in %lld ms (%.0f MB/s); %s grew by %ld KB\n", (long long)ms,
                  300.0 * 1000 / (double)(ms ? ms : 1), hwm_reset ? "peak RSS" : "RSS",
                  after - before);
    assert_int_equal(atomic_load(&hs.store_bytes), total);
    assert_int_equal(hs.store_crc, crc);
    assert_string_equal(hs.store_ts, DCM_UID_ExplicitVRLittleEndian);
    assert_true(before > 0 && after > 0);
    assert_true(after - before < 50 * 1024);
    release_ok(a);
    server_finish(&srv);
}

struct cancel_ctx {
    unsigned seen;
    unsigned cancel_after;
};

static int cancel_on_match(void *ctx, const struct dcm_dataset *match)
{
    (void)match;
    struct cancel_ctx *cc = ctx;
    return ++cc->seen >= cc->cancel_after ? -1 : 0;
}

static void test_find_cancel(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    o.find = true;
    struct server srv;
    server_start(&srv, &o);
    hs.find_matches = 1000000;
    struct pdu_associate *rq = rq_new(SERVER_AE);
    scu_add_context(rq, SCU_STUDY_ROOT_FIND, plain_ts);
    struct dul_assoc *a = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (associate_rq(srv.port, rq, &a, &err))
        fail_msg("%s", err.message);
    struct dcm_dataset *id = dcm_dataset_new();
    dcm_dataset_set_string(id, 0x00080052, DCM_VR_CS, "STUDY");
    dcm_dataset_set_empty(id, 0x00100010, DCM_VR_PN);
    struct cancel_ctx cc = {0, 10};
    uint16_t status = 0;
    int rc = scu_find(a, SCU_STUDY_ROOT_FIND, id, 0, cancel_on_match, &cc, &status, &err);
    if (rc)
        fail_msg("%s", err.message);
    print_message("C-CANCEL after %u matches: the server had sent %u, final status %04X\n",
                  cc.cancel_after, atomic_load(&hs.find_emitted), status);
    /* PS3.4 C.4.1.3.1.2: a cancelled C-FIND ends with status Cancel (FE00). */
    assert_int_equal(status, DIMSE_STATUS_CANCEL);
    assert_true(atomic_load(&hs.find_stopped));
    assert_true(cc.seen >= 10);
    assert_true(atomic_load(&hs.find_emitted) < 1000000);
    /* The association carries on. */
    hs.find_matches = 3;
    atomic_store(&hs.find_emitted, 0);
    atomic_store(&hs.find_stopped, false);
    cc = (struct cancel_ctx){0, 1000};
    assert_int_equal(scu_find(a, SCU_STUDY_ROOT_FIND, id, 0, cancel_on_match, &cc, &status, &err),
                     0);
    assert_int_equal(status, DIMSE_STATUS_SUCCESS);
    assert_int_equal(cc.seen, 3);
    dcm_dataset_free(id);
    release_ok(a);
    server_finish(&srv);
}

/* One peer trickles a C-STORE; another is served at full speed meanwhile. */
static void test_slow_peer_does_not_block_others(void **state)
{
    (void)state;
    struct server_options o;
    server_options_init(&o);
    struct server srv;
    server_start(&srv, &o);
    /* The slow peer: a raw socket that sends the C-STORE a few bytes at a time. */
    struct pdu_associate *rq = raw_rq(SERVER_AE, 16384);
    scu_add_context(rq, CT_STORAGE, implicit_only);
    int fd;
    struct raw_pdu p;
    raw_associate(srv.port, rq, &fd, &p);
    rq_free(rq);
    assert_int_equal(p.type, PDU_ASSOCIATE_AC);
    free(p.body);
    struct dcm_dataset *cmd =
        dimse_command_new(DIMSE_C_STORE_RQ, 1, CT_STORAGE, "1.2.826.0.1.3680043.2.1125.9", true);
    struct tr_buf cb;
    encode_command(cmd, &cb);
    dcm_dataset_free(cmd);
    raw_send_pdv(fd, 1, true, true, cb.data, cb.len);
    tr_buf_release(&cb);
    uint8_t hdr[12];
    static uint8_t body[4000];
    pdu_encode_pdata_header(1, false, true, sizeof(body), hdr);
    assert_int_equal(raw_write(fd, hdr, sizeof(hdr)), 0);
    /* Meanwhile a normal peer does 200 C-ECHOs and 20 C-STOREs. */
    int64_t t0 = now_ms();
    size_t sent = 0;
    struct dul_assoc *a = associate(srv.port);
    for (int i = 0; i < 200; i++) {
        echo_ok(a);
        if (i % 20 == 0 && sent < sizeof(body)) {
            /* Trickle: 100 bytes at a time. */
            assert_int_equal(raw_write(fd, body + sent, 100), 0);
            sent += 100;
        }
    }
    struct tr_error err = TR_ERROR_INIT;
    for (int i = 0; i < 20; i++) {
        char uid[64];
        snprintf(uid, sizeof(uid), "1.2.826.0.1.3680043.2.1125.100.%d", i);
        assert_int_equal(send_store(a, uid, 100000, 65536, 0, 0, NULL, &err), 0);
        assert_int_equal(receive_status(a, DIMSE_C_STORE_RSP, &err), DIMSE_STATUS_SUCCESS);
    }
    int64_t fast_ms = now_ms() - t0;
    release_ok(a);
    print_message("200 C-ECHO + 20 C-STORE beside a trickling peer: %lld ms\n",
                  (long long)fast_ms);
    assert_true(fast_ms < 10000);
    /* The slow one completes in its own time. */
    assert_int_equal(raw_write(fd, body + sent, sizeof(body) - sent), 0);
    assert_int_equal(raw_read_pdu(fd, &p, LONG_MS), 0);
    assert_int_equal(p.type, PDU_P_DATA_TF);
    size_t pos = 0;
    struct pdu_pdv pdv;
    assert_int_equal(pdu_next_pdv(p.body, p.length, &pos, &pdv, NULL), 1);
    struct dimse_message m;
    m.pc = pdv.context_id;
    assert_int_equal(dimse_parse_command_set(pdv.data, pdv.length, &m, NULL), 0);
    assert_int_equal(m.command_field, DIMSE_C_STORE_RSP);
    assert_int_equal(m.status, DIMSE_STATUS_SUCCESS);
    dimse_message_release(&m);
    free(p.body);
    close(fd);
    assert_int_equal(atomic_load(&hs.stores_complete), 21);
    server_finish(&srv);
}

/* dimse_parse_command_set: the fields, and what makes a command set unreadable. */
static void test_parse_command_set(void **state)
{
    (void)state;
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_MOVE_RQ, 42, SCU_STUDY_ROOT_MOVE, NULL, true);
    dcm_dataset_set_string(cmd, 0x00000600, DCM_VR_AE, "DEST");
    dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, DIMSE_PRIORITY_HIGH);
    struct tr_buf b;
    encode_command(cmd, &b);
    dcm_dataset_free(cmd);
    struct dimse_message m;
    m.pc = 5;
    assert_int_equal(dimse_parse_command_set(b.data, b.len, &m, NULL), 0);
    assert_int_equal(m.pc, 5);
    assert_int_equal(m.command_field, DIMSE_C_MOVE_RQ);
    assert_int_equal(m.message_id, 42);
    assert_int_equal(m.priority, DIMSE_PRIORITY_HIGH);
    assert_true(m.has_dataset);
    assert_string_equal(m.sop_class, SCU_STUDY_ROOT_MOVE);
    assert_string_equal(m.move_destination, "DEST");
    assert_non_null(m.command);
    dimse_message_release(&m);
    /* Truncated: an error, nothing owned. */
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dimse_parse_command_set(b.data, b.len - 1, &m, &err), TR_EPROTO);
    assert_null(m.command);
    show("%s\n", err.message);
    tr_buf_release(&b);
    /* No Command Field. */
    struct dcm_dataset *empty = dcm_dataset_new();
    dcm_dataset_set_int(empty, 0x00000110, DCM_VR_US, 1);
    encode_command(empty, &b);
    dcm_dataset_free(empty);
    tr_error_clear(&err);
    assert_int_equal(dimse_parse_command_set(b.data, b.len, &m, &err), TR_EPROTO);
    assert_non_null(strstr(err.message, "Command Field"));
    assert_null(m.command);
    tr_buf_release(&b);
    /* Zero bytes. */
    assert_int_equal(dimse_parse_command_set(NULL, 0, &m, NULL), TR_EPROTO);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    pthread_mutex_init(&hs.lock, NULL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_table_matches_ps38),
        cmocka_unit_test(test_accept_echo_release),
        cmocka_unit_test(test_reject_reasons),
        cmocka_unit_test(test_local_limit_exceeded),
        cmocka_unit_test(test_context_negotiation),
        cmocka_unit_test(test_negotiate_function),
        cmocka_unit_test(test_role_selection),
        cmocka_unit_test(test_user_identity),
        cmocka_unit_test(test_max_pdu_server_to_peer),
        cmocka_unit_test(test_max_pdu_requestor_to_peer),
        cmocka_unit_test(test_pdu_over_maximum),
        cmocka_unit_test(test_unexpected_pdus),
        cmocka_unit_test(test_release_collision),
        cmocka_unit_test(test_abort_by_requestor),
        cmocka_unit_test(test_abort_by_acceptor),
        cmocka_unit_test(test_artim),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_store_300mb_bounded_memory),
        cmocka_unit_test(test_find_cancel),
        cmocka_unit_test(test_find_response_in_one_pdu),
        cmocka_unit_test(test_find_slow_matches_not_held),
        cmocka_unit_test(test_slow_peer_does_not_block_others),
        cmocka_unit_test(test_parse_command_set),
    };
    /* TEST_DUL_FILTER=test_artim runs the tests whose names match (cmocka's wildcards). */
    const char *filter = getenv("TEST_DUL_FILTER");
    if (filter && *filter)
        cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
