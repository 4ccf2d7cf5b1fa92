/*
 * mllp.c - MLLP framing (HL7 v2.5.1 Implementation Guide, appendix C.4), the listener (one
 * thread per connection) and the client that waits for the ACK. See mllp.h.
 */
#include "common.h"
#include "hl7.h"
#include "mllp.h"
#include "transport.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_CHUNK    65536
#define READ_SLICE_MS 250 /* connections look at the stop flag this often */

/* ---- framing ----------------------------------------------------------------------------- */

void mllp_deframer_init(struct mllp_deframer *d, size_t max)
{
    memset(d, 0, sizeof(*d));
    d->max = max;
    tr_buf_init(&d->message, max);
}

void mllp_deframer_release(struct mllp_deframer *d)
{
    tr_buf_release(&d->message);
}

void mllp_deframer_next(struct mllp_deframer *d)
{
    tr_buf_reset(&d->message);
    d->inside = false;
    d->truncated = false;
    d->total = 0;
}

size_t mllp_deframe(struct mllp_deframer *d, const void *data, size_t len, bool *complete)
{
    const unsigned char *p = data;
    *complete = false;
    size_t i = 0;
    while (i < len) {
        if (!d->inside) {
            if (p[i] == MLLP_START_BLOCK) {
                d->inside = true;
                tr_buf_reset(&d->message);
                d->truncated = false;
                d->total = 0;
            } else if (p[i] != '\r' && p[i] != '\n') {
                d->skipped++;
            }
            i++;
            continue;
        }
        /* Inside a frame: everything up to FS is the message. A VT here means the sender
         * started over (the frame before was broken off): drop what we have. */
        size_t k = i;
        while (k < len && p[k] != MLLP_END_BLOCK && p[k] != MLLP_START_BLOCK)
            k++;
        size_t n = k - i;
        d->total += n;
        if (!d->truncated && n) {
            size_t room = d->max - d->message.len;
            if (n > room || tr_buf_add(&d->message, p + i, n) < 0) {
                if (room && n > room)
                    (void)tr_buf_add(&d->message, p + i, room);
                d->truncated = true;
            }
        }
        i = k;
        if (i == len)
            break;
        if (p[i] == MLLP_START_BLOCK) {
            d->skipped += d->total;
            d->inside = false; /* the VT is taken again above */
            continue;
        }
        /* FS: the message is complete (the CR after it is skipped as outside bytes). */
        i++;
        *complete = true;
        d->inside = false;
        if (!d->message.data)
            (void)tr_buf_add(&d->message, "", 0);
        return i;
    }
    return i;
}

int mllp_frame(struct tr_buf *out, const void *message, size_t len)
{
    int rc = tr_buf_addc(out, MLLP_START_BLOCK);
    if (rc == 0)
        rc = tr_buf_add(out, message, len);
    if (rc == 0)
        rc = tr_buf_addc(out, MLLP_END_BLOCK);
    if (rc == 0)
        rc = tr_buf_addc(out, '\r');
    return rc;
}

/* ---- the listener ------------------------------------------------------------------------ */

struct connection;

struct mllp_server {
    struct mllp_config cfg;
    char host[256];
    int listen_fd;
    int wake[2];
    pthread_t acceptor;
    bool acceptor_started;
    atomic_bool stopping;
    atomic_uint active;
    atomic_uint_fast64_t next_id;
    pthread_mutex_t lock;
    pthread_cond_t idle;
    struct connection *live; /* under lock */
};

struct connection {
    struct mllp_server *server;
    struct net_conn *conn;
    struct connection *prev, *next;
    struct mllp_peer peer;
};

void mllp_config_init(struct mllp_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->max_message = (size_t)4 << 20;
    cfg->max_connections = 32;
    cfg->idle_timeout_ms = 300000;
    cfg->write_timeout_ms = 30000;
}

static void logf_(struct mllp_server *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(struct mllp_server *s, int level, const char *fmt, ...)
{
    if (!s->cfg.log)
        return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    s->cfg.log(s->cfg.ctx, level, line);
}

/* Hand one complete message to the handler and send its reply. */
static int answer(struct connection *c, struct mllp_deframer *d)
{
    struct mllp_server *s = c->server;
    struct mllp_request rq = {&c->peer, d->message.data ? d->message.data : "", d->message.len,
                              d->truncated, d->total};
    if (d->truncated)
        logf_(s, MLLP_LOG_WARNING,
              "HL7 connection %llu (%s): message of %zu bytes is over the "
              "cap of %zu: refused",
              (unsigned long long)c->peer.connection_id, c->peer.address, d->total,
              s->cfg.max_message);
    struct tr_buf reply, framed;
    tr_buf_init(&reply, (size_t)16 << 20);
    tr_buf_init(&framed, ((size_t)16 << 20) + 4);
    s->cfg.handle(s->cfg.ctx, &rq, &reply);
    int rc = 0;
    if (reply.len) {
        rc = mllp_frame(&framed, reply.data, reply.len);
        if (rc == 0)
            rc = net_write_all(c->conn, framed.data, framed.len, s->cfg.write_timeout_ms);
        if (rc < 0)
            logf_(s, MLLP_LOG_WARNING, "HL7 connection %llu (%s): cannot send the reply: %s",
                  (unsigned long long)c->peer.connection_id, c->peer.address,
                  rc == TR_ENOMEM ? "out of memory" : net_conn_error(c->conn));
    }
    tr_buf_release(&reply);
    tr_buf_release(&framed);
    return rc;
}

static void serve(struct connection *c)
{
    struct mllp_server *s = c->server;
    struct tr_error err = TR_ERROR_INIT;
    if (s->cfg.tls && net_start_tls(c->conn, s->cfg.tls, 10000, &err) < 0) {
        logf_(s, MLLP_LOG_WARNING, "HL7 connection %llu: TLS: %s",
              (unsigned long long)c->peer.connection_id, err.message);
        return;
    }
    c->peer.tls_subject = net_tls_peer_subject(c->conn);
    unsigned char *buf = tr_malloc(READ_CHUNK);
    if (!buf)
        return;
    struct mllp_deframer d;
    mllp_deframer_init(&d, s->cfg.max_message);
    int idle = 0;
    unsigned messages = 0;
    while (!atomic_load(&s->stopping)) {
        ssize_t n = net_read(c->conn, buf, READ_CHUNK, READ_SLICE_MS);
        if (n == TR_ETIMEOUT) {
            idle += READ_SLICE_MS;
            if (idle >= s->cfg.idle_timeout_ms) {
                logf_(s, MLLP_LOG_INFO, "HL7 connection %llu (%s): idle for %d s: closed",
                      (unsigned long long)c->peer.connection_id, c->peer.address,
                      s->cfg.idle_timeout_ms / 1000);
                break;
            }
            continue;
        }
        if (n < 0) {
            if (n != TR_ECLOSED)
                logf_(s, MLLP_LOG_WARNING, "HL7 connection %llu (%s): %s",
                      (unsigned long long)c->peer.connection_id, c->peer.address,
                      net_conn_error(c->conn));
            else if (d.inside)
                logf_(s, MLLP_LOG_WARNING,
                      "HL7 connection %llu (%s): closed in the middle of "
                      "a message (%zu bytes, no end block): not acknowledged",
                      (unsigned long long)c->peer.connection_id, c->peer.address, d.total);
            break;
        }
        idle = 0;
        size_t used = 0;
        while (used < (size_t)n) {
            bool complete;
            used += mllp_deframe(&d, buf + used, (size_t)n - used, &complete);
            if (!complete)
                continue;
            messages++;
            int rc = answer(c, &d);
            mllp_deframer_next(&d);
            if (rc < 0)
                goto done;
        }
    }
done:
    if (d.skipped)
        logf_(s, MLLP_LOG_WARNING,
              "HL7 connection %llu (%s): %zu bytes outside MLLP frames "
              "skipped",
              (unsigned long long)c->peer.connection_id, c->peer.address, d.skipped);
    logf_(s, MLLP_LOG_DEBUG, "HL7 connection %llu (%s): closed after %u messages",
          (unsigned long long)c->peer.connection_id, c->peer.address, messages);
    mllp_deframer_release(&d);
    tr_free(buf);
}

static void *connection_thread(void *arg)
{
    struct connection *c = arg;
    struct mllp_server *s = c->server;
    serve(c);
    pthread_mutex_lock(&s->lock);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->live = c->next;
    if (c->next)
        c->next->prev = c->prev;
    net_close(c->conn);
    atomic_fetch_sub(&s->active, 1);
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->lock);
    tr_free(c);
    return NULL;
}

static void *accept_thread(void *arg)
{
    struct mllp_server *s = arg;
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
        if (net_accept(s->listen_fd, NULL, 1000, &conn, &err) < 0) {
            logf_(s, MLLP_LOG_WARNING, "HL7 accept: %s", err.message);
            continue;
        }
        uint64_t id = atomic_fetch_add(&s->next_id, 1) + 1;
        if (atomic_load(&s->active) >= s->cfg.max_connections) {
            logf_(s, MLLP_LOG_WARNING,
                  "HL7 connection %llu from %s closed: %u connections "
                  "already open (the cap)",
                  (unsigned long long)id, net_peer_address(conn), s->cfg.max_connections);
            net_close(conn);
            continue;
        }
        struct connection *c = tr_calloc(1, sizeof(*c));
        if (!c) {
            net_close(conn);
            continue;
        }
        c->server = s;
        c->conn = conn;
        c->peer = (struct mllp_peer){net_peer_address(conn), net_peer_ip(conn), "", id};
        logf_(s, MLLP_LOG_DEBUG, "HL7 connection %llu from %s", (unsigned long long)id,
              c->peer.address);
        pthread_mutex_lock(&s->lock);
        atomic_fetch_add(&s->active, 1);
        c->next = s->live;
        if (s->live)
            s->live->prev = c;
        s->live = c;
        pthread_mutex_unlock(&s->lock);
        pthread_t t;
        if (pthread_create(&t, &attr, connection_thread, c) != 0) {
            pthread_mutex_lock(&s->lock);
            s->live = c->next;
            if (c->next)
                c->next->prev = NULL;
            atomic_fetch_sub(&s->active, 1);
            pthread_mutex_unlock(&s->lock);
            net_close(conn);
            tr_free(c);
        }
    }
    pthread_attr_destroy(&attr);
    return NULL;
}

int mllp_server_start(const struct mllp_config *cfg, struct mllp_server **out, struct tr_error *err)
{
    if (!cfg->handle)
        return tr_error_set(err, TR_EINVAL, "MLLP listener without a message handler");
    struct mllp_server *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    s->cfg = *cfg;
    snprintf(s->host, sizeof(s->host), "%s", cfg->host ? cfg->host : "127.0.0.1");
    s->cfg.host = s->host;
    if (!s->cfg.max_message)
        s->cfg.max_message = (size_t)4 << 20;
    if (!s->cfg.max_connections)
        s->cfg.max_connections = 32;
    if (s->cfg.idle_timeout_ms <= 0)
        s->cfg.idle_timeout_ms = 300000;
    if (s->cfg.write_timeout_ms <= 0)
        s->cfg.write_timeout_ms = 30000;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->idle, NULL);
    int rc;
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
        rc = tr_error_set(err, TR_EIO, "pipe: %s", strerror(errno));
        goto fail;
    }
    s->listen_fd = net_listen(s->host, cfg->port, 64, err);
    if (s->listen_fd < 0) {
        rc = s->listen_fd;
        s->listen_fd = -1;
        tr_error_prefix(err, "HL7 listener");
        goto fail;
    }
    if (pthread_create(&s->acceptor, NULL, accept_thread, s) != 0) {
        rc = tr_error_set(err, TR_ENOMEM, "cannot start the HL7 listener thread");
        goto fail;
    }
    s->acceptor_started = true;
    logf_(s, MLLP_LOG_INFO, "HL7 MLLP listening on %s:%d%s", s->host, mllp_server_port(s),
          cfg->tls ? " (TLS)" : "");
    *out = s;
    return 0;
fail:
    mllp_server_free(s, 0);
    return rc;
}

int mllp_server_port(const struct mllp_server *s)
{
    return net_listen_port(s->listen_fd);
}

unsigned mllp_server_active(const struct mllp_server *s)
{
    return atomic_load(&s->active);
}

void mllp_server_free(struct mllp_server *s, int grace_ms)
{
    if (!s)
        return;
    atomic_store(&s->stopping, true);
    if (s->wake[1] >= 0) {
        char c = 1;
        ssize_t n = write(s->wake[1], &c, 1);
        (void)n;
    }
    if (s->acceptor_started)
        pthread_join(s->acceptor, NULL);
    /* Connections notice the flag within READ_SLICE_MS unless busy in a handler or a write. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += grace_ms / 1000;
    deadline.tv_nsec += (long)(grace_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&s->lock);
    while (atomic_load(&s->active) > 0) {
        if (pthread_cond_timedwait(&s->idle, &s->lock, &deadline) == ETIMEDOUT)
            break;
    }
    for (struct connection *c = s->live; c; c = c->next)
        shutdown(net_conn_fd(c->conn), SHUT_RDWR);
    while (atomic_load(&s->active) > 0)
        pthread_cond_wait(&s->idle, &s->lock);
    pthread_mutex_unlock(&s->lock);
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->wake[0] >= 0)
        close(s->wake[0]);
    if (s->wake[1] >= 0)
        close(s->wake[1]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->idle);
    tr_free(s);
}

/* ---- the client -------------------------------------------------------------------------- */

struct mllp_client {
    struct net_conn *conn;
    struct mllp_client_options opt;
    char peer[300];
};

void mllp_client_options_init(struct mllp_client_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->connect_timeout_ms = 10000;
    opt->ack_timeout_ms = 30000;
    opt->max_ack = (size_t)1 << 20;
}

void mllp_ack_release(struct mllp_ack *ack)
{
    tr_buf_release(&ack->raw);
}

int mllp_client_connect(const char *host, int port, const struct mllp_client_options *opt,
                        struct mllp_client **out, struct tr_error *err)
{
    struct mllp_client *c = tr_calloc(1, sizeof(*c));
    if (!c)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    if (opt)
        c->opt = *opt;
    else
        mllp_client_options_init(&c->opt);
    snprintf(c->peer, sizeof(c->peer), "%s:%d", host, port);
    int rc = net_connect_sni(host, port, c->opt.tls, c->opt.sni_host, c->opt.connect_timeout_ms,
                             &c->conn, err);
    if (rc < 0) {
        tr_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

const char *mllp_client_peer(const struct mllp_client *c)
{
    return c->peer;
}

void mllp_client_close(struct mllp_client *c)
{
    if (!c)
        return;
    net_close(c->conn);
    tr_free(c);
}

static int64_t monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* MSA-1/2/3 and ERR of an ACK. */
static int read_ack(struct mllp_ack *ack, const char *sent_id, const char *peer,
                    struct tr_error *err)
{
    struct hl7_message *m = NULL;
    struct tr_error perr = TR_ERROR_INIT;
    if (hl7_parse(ack->raw.data, ack->raw.len, NULL, &m, &perr) < 0)
        return tr_error_set(err, TR_EPROTO, "%s: the reply is not an HL7 message: %s", peer,
                            perr.message);
    int rc = 0;
    if (hl7_get_text(m, "MSA-1", ack->code, sizeof(ack->code)) != HL7_VALUE) {
        rc = tr_error_set(err, TR_EPROTO, "%s: the reply has no MSA-1 (acknowledgment code)", peer);
        goto out;
    }
    if (!strcmp(ack->code, "AA") || !strcmp(ack->code, "CA"))
        ack->status = MLLP_ACK_ACCEPT;
    else if (!strcmp(ack->code, "AE") || !strcmp(ack->code, "CE"))
        ack->status = MLLP_ACK_ERROR;
    else if (!strcmp(ack->code, "AR") || !strcmp(ack->code, "CR"))
        ack->status = MLLP_ACK_REJECT;
    else {
        rc = tr_error_set(err, TR_EPROTO, "%s: MSA-1 \"%s\" is no acknowledgment code", peer,
                          ack->code);
        goto out;
    }
    hl7_get_text(m, "MSA-2", ack->control_id, sizeof(ack->control_id));
    if (hl7_get_text(m, "MSA-3", ack->text, sizeof(ack->text)) != HL7_VALUE &&
        hl7_get_text(m, "ERR-8", ack->text, sizeof(ack->text)) != HL7_VALUE)
        hl7_get_text(m, "ERR-3.2", ack->text, sizeof(ack->text));
    if (sent_id && sent_id[0] && strcmp(sent_id, ack->control_id) != 0)
        rc = tr_error_set(err, TR_EPROTO,
                          "%s: the ACK is for message \"%s\", not for \"%s\" "
                          "(MSA-2 is not the MSH-10 sent)",
                          peer, ack->control_id, sent_id);
out:
    hl7_message_free(m);
    return rc;
}

int mllp_client_send(struct mllp_client *c, const void *message, size_t len, struct mllp_ack *ack,
                     struct tr_error *err)
{
    memset(ack, 0, sizeof(*ack));
    tr_buf_init(&ack->raw, c->opt.max_ack);
    /* MSH-10 of what we send, to check MSA-2 against (none if it does not parse). */
    char sent_id[200] = "";
    struct hl7_message *m = NULL;
    if (hl7_parse(message, len, NULL, &m, NULL) == 0) {
        hl7_get_text(m, "MSH-10", sent_id, sizeof(sent_id));
        hl7_message_free(m);
    }
    struct tr_buf framed;
    tr_buf_init(&framed, len + 4);
    int rc = mllp_frame(&framed, message, len);
    if (rc == 0)
        rc = net_write_all(c->conn, framed.data, framed.len, c->opt.ack_timeout_ms);
    tr_buf_release(&framed);
    if (rc == TR_ENOMEM)
        return tr_error_set(err, rc, "out of memory");
    if (rc < 0)
        return tr_error_set(err, rc, "%s: sending: %s", c->peer, net_conn_error(c->conn));
    struct mllp_deframer d;
    mllp_deframer_init(&d, c->opt.max_ack);
    unsigned char buf[4096];
    int64_t deadline = monotonic_ms() + c->opt.ack_timeout_ms;
    bool complete = false;
    while (!complete) {
        int64_t left = deadline - monotonic_ms();
        if (left <= 0) {
            rc = tr_error_set(err, TR_ETIMEOUT, "%s: no ACK within %d s", c->peer,
                              c->opt.ack_timeout_ms / 1000);
            goto out;
        }
        ssize_t n = net_read(c->conn, buf, sizeof(buf), (int)left);
        if (n == TR_ETIMEOUT) {
            continue;
        }
        if (n < 0) {
            rc = tr_error_set(err, (int)n, "%s: waiting for the ACK: %s", c->peer,
                              n == TR_ECLOSED ? "the peer closed the connection"
                                              : net_conn_error(c->conn));
            goto out;
        }
        /* Bytes after the ACK's end block (there should be none) are ignored. */
        mllp_deframe(&d, buf, (size_t)n, &complete);
    }
    if (d.truncated) {
        rc = tr_error_set(err, TR_ELIMIT, "%s: the ACK is longer than %zu bytes", c->peer,
                          c->opt.max_ack);
        goto out;
    }
    rc = tr_buf_add(&ack->raw, d.message.data, d.message.len);
    if (rc == 0)
        rc = read_ack(ack, sent_id, c->peer, err);
    else
        rc = tr_error_set(err, rc, "out of memory");
out:
    mllp_deframer_release(&d);
    if (rc)
        mllp_ack_release(ack);
    return rc;
}
