/*
 * transport.c - TCP connections with timeouts, optionally under TLS (see transport.h).
 *
 * Sockets are always non-blocking: every operation is tried first and, when it would block,
 * waited for with poll(2) until the call's deadline (CLOCK_MONOTONIC). Trying first matters
 * for TLS, where OpenSSL may hold decrypted bytes that poll on the socket cannot see.
 *
 * TLS (PS3.15 B.9, BCP 195 = RFC 9325): OpenSSL 3 with a BIO of our own under each SSL, so
 * that records are sent with MSG_NOSIGNAL (OpenSSL's socket BIO uses write(2), which raises
 * SIGPIPE on a reset connection, and a library must not change the process's signal state).
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "transport.h"

#ifndef MSG_NOSIGNAL
#define MSG_NOSIGNAL 0 /* the platform has SO_NOSIGPIPE instead (set on every socket) */
#endif

/* RFC 9325 4.2: the recommended TLS 1.2 cipher suites (AES-128-GCM first, as 4.2.1 asks),
 * then ChaCha20-Poly1305 (RFC 7905), which 4.2 also allows, for peers without AES hardware. */
#define NET_BCP195_CIPHERS                                                                         \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"                                   \
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"                                   \
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

/* How long net_close waits to hand the close_notify alert to the kernel. */
#define NET_CLOSE_NOTIFY_MS 200

/* "[" + IPv6 text with a scope id + "]:" + port */
#define NET_IP_MAX      (INET6_ADDRSTRLEN + 1 + 16)
#define NET_ADDRESS_MAX (NET_IP_MAX + 10)
/* host names are at most 253 bytes; allow for a bracketed literal and the port */
#define NET_NAME_MAX 300

struct net_tls {
    SSL_CTX *ctx;
    bool server;
    bool verify_peer;
};

struct net_conn {
    int fd;
    SSL *ssl;
    bool ssl_broken;    /* a fatal TLS error or an interrupted write: no close_notify */
    bool eof;           /* our BIO read the end of the stream */
    int io_errno;       /* errno of our BIO's last failed send/recv */
    char *peer_subject; /* tr_malloc'd; NULL: none */
    char peer_ip[NET_IP_MAX];
    char peer_address[NET_ADDRESS_MAX];
    char server_name[NET_NAME_MAX]; /* client: the name the certificate must carry */
    struct tr_error error;          /* last failure of a read, write or wait */
    /* Bytes received but not read yet: small reads (a PDU header, a small PDU, a TLS record
     * header) are served from one recv of up to NET_READ_BUFFER bytes. */
    unsigned char *rbuf;            /* tr_malloc'd at the first small read */
    size_t rpos, rlen;
};

/* A P-DATA-TF PDU of a C-FIND response is a few hundred bytes: read one by one, each cost two
 * recv calls (header, body); through this buffer a recv brings many (bench/README.md,
 * scale.py). Reads this large or larger go straight into the caller's memory. */
#define NET_READ_BUFFER 16384

/* ---- time and waiting ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* -1: no deadline. */
static int64_t deadline_after(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int remaining_ms(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - now_ms();
    if (left <= 0)
        return 0;
    return left > INT_MAX ? INT_MAX : (int)left;
}

/* Wait for events on fd until the deadline: 1 ready (or an error/hang-up condition the next
 * operation will report), 0 timed out, -1 poll failed (errno set). */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r > 0) {
            if (p.revents & POLLNVAL) {
                errno = EBADF;
                return -1;
            }
            return 1;
        }
        if (r == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* ---- formatting ---- */

static void format_host_port(char *out, size_t size, const char *host, int port)
{
    if (!host)
        host = "*";
    if (strchr(host, ':'))
        snprintf(out, size, "[%s]:%d", host, port);
    else
        snprintf(out, size, "%s:%d", host, port);
}

/* Numeric text of an address, IPv4-mapped IPv6 shown as IPv4. Returns the port, -1 if the
 * family is not IP. */
static int format_sockaddr(const struct sockaddr *sa, socklen_t len, char *ip, size_t ip_size,
                           char *address, size_t address_size)
{
    struct sockaddr_in mapped;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            memset(&mapped, 0, sizeof(mapped));
            mapped.sin_family = AF_INET;
            mapped.sin_port = s6->sin6_port;
            memcpy(&mapped.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
            sa = (const struct sockaddr *)&mapped;
            len = sizeof(mapped);
        }
    } else if (sa->sa_family != AF_INET) {
        snprintf(ip, ip_size, "?");
        snprintf(address, address_size, "?");
        return -1;
    }
    char host[NET_IP_MAX];
    char serv[16];
    if (getnameinfo(sa, len, host, sizeof(host), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        snprintf(ip, ip_size, "?");
        snprintf(address, address_size, "?");
        return -1;
    }
    int port = (int)strtol(serv, NULL, 10);
    snprintf(ip, ip_size, "%s", host);
    format_host_port(address, address_size, host, port);
    return port;
}

/* Set the connection's last error (replacing an earlier one) and return code. */
static int conn_fail(struct net_conn *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int conn_fail(struct net_conn *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tr_error_clear(&c->error);
    tr_error_vset(&c->error, code, fmt, ap);
    va_end(ap);
    return code;
}

static bool errno_is_closed(int e)
{
    return e == ECONNRESET || e == EPIPE || e == ECONNABORTED || e == ENOTCONN;
}

/* ---- sockets ---- */

static int set_socket_options(int fd)
{
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
        return -1;
#ifdef SO_NOSIGPIPE
    if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof(one)) != 0)
        return -1;
#endif
    return 0;
}

#if !(defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK) && defined(__linux__))
static int make_nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return -1;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) != 0)
        return -1;
    return 0;
}
#endif

static int open_socket(int family, int type, int protocol)
{
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK)
    return socket(family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, protocol);
#else
    int fd = socket(family, type, protocol);
    if (fd >= 0 && make_nonblocking_cloexec(fd) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
#endif
}

static int accept_socket(int listen_fd, struct sockaddr *sa, socklen_t *len)
{
#if defined(SOCK_CLOEXEC) && defined(SOCK_NONBLOCK) && defined(__linux__)
    return accept4(listen_fd, sa, len, SOCK_CLOEXEC | SOCK_NONBLOCK);
#else
    int fd = accept(listen_fd, sa, len);
    if (fd >= 0 && make_nonblocking_cloexec(fd) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
#endif
}

static int resolve(const char *host, int port, int flags, struct addrinfo **res, const char *what,
                   struct tr_error *err)
{
    char name[NET_NAME_MAX];
    format_host_port(name, sizeof(name), host, port);
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    hints.ai_flags = AI_NUMERICSERV | flags;
    int r = getaddrinfo(host, service, &hints, res);
    if (r == 0)
        return 0;
    if (r == EAI_SYSTEM)
        return tr_error_set(err, TR_EIO, "%s %s: cannot resolve: %s", what, name, strerror(errno));
    if (r == EAI_MEMORY)
        return tr_error_set(err, TR_ENOMEM, "%s %s: out of memory resolving the name", what, name);
    int code = (r == EAI_NONAME
#ifdef EAI_NODATA
                || r == EAI_NODATA
#endif
                )
                   ? TR_ENOTFOUND
                   : TR_EIO;
    return tr_error_set(err, code, "%s %s: cannot resolve: %s", what, name, gai_strerror(r));
}

int net_listen(const char *host, int port, int backlog, struct tr_error *err)
{
    char name[NET_NAME_MAX];
    format_host_port(name, sizeof(name), host, port);
    if (port < 0 || port > 65535)
        return tr_error_set(err, TR_EINVAL, "listen on %s: port out of range", name);
    if (backlog <= 0)
        backlog = SOMAXCONN;
    struct addrinfo *res = NULL;
    int rc = resolve(host, port, AI_PASSIVE, &res, "listen on", err);
    if (rc < 0)
        return rc;
    int fd = -1;
    int last_errno = EADDRNOTAVAIL;
    const char *step = "bind";
    /* No host: one dual-stack IPv6 socket takes both families; IPv4 alone if that fails. */
    for (int pass = 0; pass < 2 && fd < 0; pass++) {
        for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
            bool dual_stack = !host && ai->ai_family == AF_INET6;
            if (host ? pass == 1 : dual_stack != (pass == 0))
                continue;
            fd = open_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
            if (fd < 0) {
                last_errno = errno;
                step = "socket";
                continue;
            }
            int one = 1, zero = 0;
            if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
                step = "setsockopt(SO_REUSEADDR)";
            } else if (dual_stack &&
                       setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero)) != 0) {
                step = "setsockopt(IPV6_V6ONLY)";
            } else if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
                step = "bind";
            } else if (listen(fd, backlog) != 0) {
                step = "listen";
            } else {
                break;
            }
            last_errno = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0)
        return tr_error_set(err, TR_EIO, "listen on %s: %s: %s", name, step, strerror(last_errno));
    return fd;
}

int net_listen_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return TR_EIO;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return TR_EINVAL;
}

/* A connection around fd (which the caller closes if this fails). */
static int conn_new(int fd, struct net_conn **out, const char *what, const char *name,
                    struct tr_error *err)
{
    if (set_socket_options(fd) != 0)
        return tr_error_set(err, TR_EIO, "%s %s: setsockopt(TCP_NODELAY): %s", what, name,
                            strerror(errno));
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
        int e = errno;
        return tr_error_set(err, errno_is_closed(e) ? TR_ECLOSED : TR_EIO, "%s %s: getpeername: %s",
                            what, name, strerror(e));
    }
    struct net_conn *c = tr_calloc(1, sizeof(*c));
    if (!c)
        return tr_error_set(err, TR_ENOMEM, "%s %s: out of memory", what, name);
    c->fd = fd;
    format_sockaddr((struct sockaddr *)&ss, len, c->peer_ip, sizeof(c->peer_ip), c->peer_address,
                    sizeof(c->peer_address));
    *out = c;
    return 0;
}

static int handshake(struct net_conn *c, struct net_tls *tls, int64_t deadline, int timeout_ms,
                     struct tr_error *err);

/* A connection that died in the queue, or (Linux, accept(2)) a network error pending on the
 * new socket: not the listener's fault, try the next connection. */
static bool accept_error_is_transient(int e)
{
    switch (e) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
#ifdef ENONET
    case ENONET:
#endif
        return true;
    default: return false;
    }
}

int net_accept(int listen_fd, struct net_tls *tls, int timeout_ms, struct net_conn **out,
               struct tr_error *err)
{
    if (!out)
        return tr_error_set(err, TR_EINVAL, "net_accept: no result pointer");
    *out = NULL;
    char name[NET_ADDRESS_MAX] = "?";
    char ip[NET_IP_MAX];
    {
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        if (getsockname(listen_fd, (struct sockaddr *)&ss, &len) == 0)
            format_sockaddr((struct sockaddr *)&ss, len, ip, sizeof(ip), name, sizeof(name));
    }
    int64_t deadline = deadline_after(timeout_ms);
    int fd;
    for (;;) {
        fd = accept_socket(listen_fd, NULL, NULL);
        if (fd >= 0)
            break;
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK) {
            int w = wait_fd(listen_fd, POLLIN, deadline);
            if (w == 0)
                return tr_error_set(err, TR_ETIMEOUT, "accept on %s: no connection within %d ms",
                                    name, timeout_ms);
            if (w < 0)
                return tr_error_set(err, TR_EIO, "accept on %s: poll: %s", name, strerror(errno));
            continue;
        }
        if (accept_error_is_transient(e))
            continue;
        return tr_error_set(err, TR_EIO, "accept on %s: %s", name, strerror(e));
    }
    struct net_conn *c = NULL;
    int rc = conn_new(fd, &c, "accept on", name, err);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    if (tls) {
        rc = handshake(c, tls, deadline, timeout_ms, err);
        if (rc < 0) {
            net_close(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

/* Connect one socket to one address within the deadline: the socket, or -1 with errno set
 * (ETIMEDOUT when the deadline passed). */
static int connect_one(const struct addrinfo *ai, int64_t deadline)
{
    int fd = open_socket(ai->ai_family, ai->ai_socktype, ai->ai_protocol);
    if (fd < 0)
        return -1;
    if (set_socket_options(fd) != 0)
        goto fail;
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        return fd;
    if (errno != EINPROGRESS && errno != EINTR)
        goto fail;
    /* A connect interrupted by a signal goes on in the background, as EINPROGRESS does. */
    int w = wait_fd(fd, POLLOUT, deadline);
    if (w == 0) {
        errno = ETIMEDOUT;
        goto fail;
    }
    if (w < 0)
        goto fail;
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
        goto fail;
    if (soerr != 0) {
        errno = soerr;
        goto fail;
    }
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int net_connect_sni(const char *host, int port, struct net_tls *tls, const char *sni_host,
                    int timeout_ms, struct net_conn **out, struct tr_error *err)
{
    if (!out)
        return tr_error_set(err, TR_EINVAL, "net_connect: no result pointer");
    *out = NULL;
    if (!host || !*host)
        return tr_error_set(err, TR_EINVAL, "connect: no host given");
    char name[NET_NAME_MAX];
    format_host_port(name, sizeof(name), host, port);
    if (port <= 0 || port > 65535)
        return tr_error_set(err, TR_EINVAL, "connect to %s: port out of range", name);
    if (strlen(sni_host ? sni_host : host) >= NET_NAME_MAX)
        return tr_error_set(err, TR_EINVAL, "connect to %s: host name too long", name);
    int64_t deadline = deadline_after(timeout_ms);
    struct addrinfo *res = NULL;
    int rc = resolve(host, port, 0, &res, "connect to", err);
    if (rc < 0)
        return rc;
    int fd = -1;
    int last_errno = EADDRNOTAVAIL;
    char ip[NET_IP_MAX];
    char address[NET_ADDRESS_MAX] = "?";
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        format_sockaddr(ai->ai_addr, ai->ai_addrlen, ip, sizeof(ip), address, sizeof(address));
        fd = connect_one(ai, deadline);
        if (fd >= 0)
            break;
        last_errno = errno;
        if (last_errno == ETIMEDOUT && deadline >= 0 && remaining_ms(deadline) == 0)
            break;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (last_errno == ETIMEDOUT && deadline >= 0 && remaining_ms(deadline) == 0)
            return tr_error_set(err, TR_ETIMEOUT, "connect to %s (%s): no answer within %d ms",
                                name, address, timeout_ms);
        return tr_error_set(err, TR_EIO, "connect to %s (%s): %s", name, address,
                            strerror(last_errno));
    }
    struct net_conn *c = NULL;
    rc = conn_new(fd, &c, "connect to", name, err);
    if (rc < 0) {
        close(fd);
        return rc;
    }
    snprintf(c->server_name, sizeof(c->server_name), "%s", sni_host ? sni_host : host);
    if (tls) {
        rc = handshake(c, tls, deadline, timeout_ms, err);
        if (rc < 0) {
            net_close(c);
            return rc;
        }
    }
    *out = c;
    return 0;
}

int net_connect(const char *host, int port, struct net_tls *tls, int timeout_ms,
                struct net_conn **out, struct tr_error *err)
{
    return net_connect_sni(host, port, tls, NULL, timeout_ms, out, err);
}

/* ---- the BIO under each SSL: recv/send on the connection's socket, never SIGPIPE ---- */

static BIO_METHOD *bio_method;
static pthread_once_t bio_method_once = PTHREAD_ONCE_INIT;

static int bio_write(BIO *b, const char *data, size_t len, size_t *written)
{
    struct net_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n >= 0) {
            *written = (size_t)n;
            return 1;
        }
        if (errno == EINTR)
            continue;
        c->io_errno = errno;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_write(b);
        return 0;
    }
}

/* recv(2) through the connection's read buffer: > 0 bytes, 0 at the end of the stream, -1
 * with errno. */
static ssize_t buffered_recv(struct net_conn *c, void *data, size_t len)
{
    if (c->rpos < c->rlen) {
        size_t n = TR_MIN(len, c->rlen - c->rpos);
        memcpy(data, c->rbuf + c->rpos, n);
        c->rpos += n;
        return (ssize_t)n;
    }
    if (len >= NET_READ_BUFFER)
        return recv(c->fd, data, len, 0);
    if (!c->rbuf && !(c->rbuf = tr_malloc(NET_READ_BUFFER)))
        return recv(c->fd, data, len, 0); /* no buffer: unbuffered, still correct */
    ssize_t got = recv(c->fd, c->rbuf, NET_READ_BUFFER, 0);
    if (got <= 0)
        return got;
    size_t n = TR_MIN(len, (size_t)got);
    memcpy(data, c->rbuf, n);
    c->rpos = n;
    c->rlen = (size_t)got;
    return (ssize_t)n;
}

static int bio_read(BIO *b, char *data, size_t len, size_t *readbytes)
{
    struct net_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    for (;;) {
        ssize_t n = buffered_recv(c, data, len);
        if (n > 0) {
            *readbytes = (size_t)n;
            return 1;
        }
        if (n == 0) {
            c->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        c->io_errno = errno;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            BIO_set_retry_read(b);
        return 0;
    }
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    struct net_conn *c = BIO_get_data(b);
    switch (cmd) {
    case BIO_CTRL_FLUSH: return 1; /* nothing is buffered here */
    case BIO_CTRL_EOF: return c && c->eof;
    case BIO_C_GET_FD:
        if (!c)
            return -1;
        if (ptr)
            *(int *)ptr = c->fd;
        return c->fd;
    default: return 0;
    }
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void make_bio_method(void)
{
    int index = BIO_get_new_index();
    if (index < 0)
        return;
    BIO_METHOD *m =
        BIO_meth_new(index | BIO_TYPE_SOURCE_SINK | BIO_TYPE_DESCRIPTOR, "telerad socket");
    if (!m)
        return;
    if (!BIO_meth_set_write_ex(m, bio_write) || !BIO_meth_set_read_ex(m, bio_read) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return;
    }
    /* Kept for the life of the process (one small object, reachable through this pointer). */
    bio_method = m;
}

/* ---- TLS contexts ---- */

/* OpenSSL's queued error reasons, oldest first, repeats left out ("reason; reason"); clears
 * the queue. */
static void openssl_reasons(char *out, size_t size)
{
    size_t used = 0;
    char last[160] = "";
    out[0] = '\0';
    unsigned long e;
    const char *data = NULL;
    int flags = 0;
    while ((e = ERR_get_error_all(NULL, NULL, NULL, &data, &flags)) != 0) {
        const char *reason =
            ERR_SYSTEM_ERROR(e) ? strerror(ERR_GET_REASON(e)) : ERR_reason_error_string(e);
        char buf[160];
        if (!reason)
            snprintf(buf, sizeof(buf), "OpenSSL error %lx", e);
        else if (!ERR_SYSTEM_ERROR(e) && (flags & ERR_TXT_STRING) && data && *data)
            snprintf(buf, sizeof(buf), "%s (%s)", reason, data);
        else
            snprintf(buf, sizeof(buf), "%s", reason);
        if (strcmp(buf, last) == 0)
            continue;
        memcpy(last, buf, sizeof(last));
        if (used < size) {
            int n = snprintf(out + used, size - used, "%s%s", used ? "; " : "", buf);
            if (n > 0)
                used += (size_t)n;
        }
    }
    if (!out[0])
        snprintf(out, size, "unknown TLS error");
}

static int tls_ctx_error(struct tr_error *err, int code, const char *what, const char *file)
{
    char reasons[300];
    openssl_reasons(reasons, sizeof(reasons));
    if (file)
        return tr_error_set(err, code, "TLS: %s %s: %s", what, file, reasons);
    return tr_error_set(err, code, "TLS: %s: %s", what, reasons);
}

void net_tls_options_init(struct net_tls_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->verify_peer = true;
}

static struct net_tls *tls_new(const struct net_tls_options *opt, bool server, struct tr_error *err)
{
    const char *role = server ? "server" : "client";
    if (!opt) {
        tr_error_set(err, TR_EINVAL, "TLS %s: no options", role);
        return NULL;
    }
    if (server && (!opt->certificate || !*opt->certificate)) {
        tr_error_set(err, TR_EINVAL, "TLS server: a certificate and its key are required");
        return NULL;
    }
    pthread_once(&bio_method_once, make_bio_method);
    if (!bio_method) {
        tls_ctx_error(err, TR_ENOMEM, "cannot set up the socket BIO", NULL);
        return NULL;
    }
    struct net_tls *tls = tr_calloc(1, sizeof(*tls));
    if (!tls) {
        tr_error_set(err, TR_ENOMEM, "TLS %s: out of memory", role);
        return NULL;
    }
    tls->server = server;
    tls->verify_peer = opt->verify_peer;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (!ctx) {
        tls_ctx_error(err, TR_ENOMEM, "cannot create a context", NULL);
        goto fail;
    }
    tls->ctx = ctx;
    /* BCP 195 (RFC 9325 3.1.1): TLS 1.2 or later. */
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        tls_ctx_error(err, TR_EIO, "cannot set the minimum version", NULL);
        goto fail;
    }
    /* RFC 9325 3.3: no compression; 3.5: no renegotiation (TLS 1.3 has none). No session
     * resumption: our client does not resume, and without tickets a TLS 1.3 server sends
     * nothing after the handshake that a closing client could leave unread (which makes the
     * kernel reset the connection and may lose the client's last bytes). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                 (server ? SSL_OP_CIPHER_SERVER_PREFERENCE : 0));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (server)
        SSL_CTX_set_num_tickets(ctx, 0);
    /* Non-blocking I/O: a write may take several calls and partial progress is reported. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const char *ciphers = opt->ciphers ? opt->ciphers : NET_BCP195_CIPHERS;
    if (!SSL_CTX_set_cipher_list(ctx, ciphers)) {
        tls_ctx_error(err, TR_EINVAL, "no usable TLS 1.2 cipher in", ciphers);
        goto fail;
    }
    if (opt->certificate && *opt->certificate) {
        const char *key =
            opt->private_key && *opt->private_key ? opt->private_key : opt->certificate;
        if (SSL_CTX_use_certificate_chain_file(ctx, opt->certificate) != 1) {
            tls_ctx_error(err, TR_EINVAL, "cannot load the certificate", opt->certificate);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1) {
            tls_ctx_error(err, TR_EINVAL, "cannot load the private key", key);
            goto fail;
        }
        if (SSL_CTX_check_private_key(ctx) != 1) {
            tls_ctx_error(err, TR_EINVAL, "the private key does not match the certificate", key);
            goto fail;
        }
    }
    if (opt->verify_peer) {
        if (opt->ca_file && *opt->ca_file) {
            if (SSL_CTX_load_verify_locations(ctx, opt->ca_file, NULL) != 1) {
                tls_ctx_error(err, TR_EINVAL, "cannot load the CA certificates", opt->ca_file);
                goto fail;
            }
            if (server) {
                /* Tell clients which CAs we accept (the CertificateRequest's list). */
                STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(opt->ca_file);
                if (!names) {
                    tls_ctx_error(err, TR_EINVAL, "cannot read CA names from", opt->ca_file);
                    goto fail;
                }
                SSL_CTX_set_client_CA_list(ctx, names);
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            tls_ctx_error(err, TR_EIO, "cannot load the system CA certificates", NULL);
            goto fail;
        }
        SSL_CTX_set_verify(
            ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER,
            NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    ERR_clear_error();
    return tls;
fail:
    ERR_clear_error();
    net_tls_free(tls);
    return NULL;
}

struct net_tls *net_tls_server_new(const struct net_tls_options *opt, struct tr_error *err)
{
    return tls_new(opt, true, err);
}

struct net_tls *net_tls_client_new(const struct net_tls_options *opt, struct tr_error *err)
{
    return tls_new(opt, false, err);
}

void net_tls_free(struct net_tls *tls)
{
    if (!tls)
        return;
    SSL_CTX_free(tls->ctx);
    tr_free(tls);
}

/* ---- TLS I/O ---- */

/* Map a failed SSL call to an error code, with a message "<what> <peer>: <why>" kept in the
 * connection. Marks the TLS session broken (no close_notify will be sent). */
static int tls_fail(struct net_conn *c, int ssl_error, const char *what)
{
    char reasons[300];
    if (ssl_error != SSL_ERROR_ZERO_RETURN)
        c->ssl_broken = true; /* after a clean close, answering with close_notify is right */
    switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return conn_fail(c, TR_ECLOSED, "%s %s: the peer closed the TLS connection", what,
                         c->peer_address);
    case SSL_ERROR_SYSCALL: {
        ERR_clear_error();
        int e = c->io_errno;
        if (e == 0 || c->eof)
            return conn_fail(c, TR_ECLOSED, "%s %s: the peer closed the connection", what,
                             c->peer_address);
        return conn_fail(c, errno_is_closed(e) ? TR_ECLOSED : TR_EIO, "%s %s: %s", what,
                         c->peer_address, strerror(e));
    }
    case SSL_ERROR_SSL: {
        unsigned long e = ERR_peek_error();
        int lib = ERR_GET_LIB(e);
        int reason = ERR_GET_REASON(e);
        long verify = SSL_get_verify_result(c->ssl);
        openssl_reasons(reasons, sizeof(reasons));
        if (lib == ERR_LIB_SSL && reason == SSL_R_UNEXPECTED_EOF_WHILE_READING)
            return conn_fail(c, TR_ECLOSED,
                             "%s %s: the peer closed the connection without a TLS close_notify",
                             what, c->peer_address);
        if (verify != X509_V_OK)
            return conn_fail(c, TR_EDENIED, "%s %s: the peer's certificate is refused: %s", what,
                             c->peer_address, X509_verify_cert_error_string(verify));
        if (lib == ERR_LIB_SSL && reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            return conn_fail(c, TR_EDENIED,
                             "%s %s: the client sent no certificate, and one is required", what,
                             c->peer_address);
        if (lib == ERR_LIB_SYS)
            return conn_fail(c, errno_is_closed(reason) ? TR_ECLOSED : TR_EIO, "%s %s: %s", what,
                             c->peer_address, reasons);
        if (lib == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET)
            return conn_fail(c, TR_EPROTO, "%s %s: the peer refused: %s", what, c->peer_address,
                             reasons);
        return conn_fail(c, TR_EPROTO, "%s %s: %s", what, c->peer_address, reasons);
    }
    default:
        ERR_clear_error();
        return conn_fail(c, TR_EIO, "%s %s: unexpected TLS state %d", what, c->peer_address,
                         ssl_error);
    }
}

/* After SSL_ERROR_WANT_READ/WRITE: wait for the socket. 0 to try again, or an error. */
static int tls_wait(struct net_conn *c, int ssl_error, int64_t deadline, int timeout_ms,
                    const char *what)
{
    int w = wait_fd(c->fd, ssl_error == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, deadline);
    if (w > 0)
        return 0;
    if (w == 0)
        return conn_fail(c, TR_ETIMEOUT, "%s %s: timed out after %d ms", what, c->peer_address,
                         timeout_ms);
    return conn_fail(c, TR_EIO, "%s %s: poll: %s", what, c->peer_address, strerror(errno));
}

static bool is_ip_literal(const char *name)
{
    unsigned char addr[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, addr) == 1 || inet_pton(AF_INET6, name, addr) == 1;
}

/* The subject of a certificate the handshake verified, or NULL. */
static int store_peer_subject(struct net_conn *c)
{
    if (!(SSL_get_verify_mode(c->ssl) & SSL_VERIFY_PEER))
        return 0;
    X509 *cert = SSL_get0_peer_certificate(c->ssl);
    if (!cert || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return 0;
    BIO *mem = BIO_new(BIO_s_mem());
    if (!mem)
        return TR_ENOMEM;
    int rc = 0;
    /* RFC 2253, but UTF-8 kept as it is rather than escaped byte by byte. */
    if (X509_NAME_print_ex(mem, X509_get_subject_name(cert), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) < 0) {
        rc = TR_ENOMEM;
        goto out;
    }
    char *text = NULL;
    long len = BIO_get_mem_data(mem, &text);
    c->peer_subject = tr_strndup(text ? text : "", len > 0 ? (size_t)len : 0);
    if (!c->peer_subject)
        rc = TR_ENOMEM;
out:
    BIO_free(mem);
    return rc;
}

static int handshake(struct net_conn *c, struct net_tls *tls, int64_t deadline, int timeout_ms,
                     struct tr_error *err)
{
    const char *what = tls->server ? "TLS handshake with client" : "TLS handshake with server";
    if (c->ssl)
        return tr_error_set(err, TR_EINVAL, "%s %s: the connection already uses TLS", what,
                            c->peer_address);
    ERR_clear_error();
    SSL *ssl = SSL_new(tls->ctx);
    BIO *bio = bio_method ? BIO_new(bio_method) : NULL;
    if (!ssl || !bio) {
        SSL_free(ssl);
        BIO_free(bio);
        ERR_clear_error();
        return tr_error_set(err, TR_ENOMEM, "%s %s: out of memory", what, c->peer_address);
    }
    BIO_set_data(bio, c);
    SSL_set_bio(ssl, bio, bio); /* the SSL owns the BIO now */
    c->ssl = ssl;
    if (tls->server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        const char *name = *c->server_name ? c->server_name : c->peer_ip;
        bool ip = is_ip_literal(name);
        /* RFC 6066 3: SNI carries DNS names only. */
        if (!ip && *name && !SSL_set_tlsext_host_name(ssl, name)) {
            c->ssl_broken = true;
            return tls_ctx_error(err, TR_EINVAL, "cannot use the server name", name);
        }
        if (tls->verify_peer) {
            int ok;
            if (ip) {
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
            } else {
                SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                ok = SSL_set1_host(ssl, name);
            }
            if (!ok) {
                c->ssl_broken = true;
                return tls_ctx_error(err, TR_EINVAL, "cannot check the certificate against", name);
            }
        }
    }
    for (;;) {
        ERR_clear_error();
        c->io_errno = 0;
        int r = SSL_do_handshake(ssl);
        if (r == 1)
            break;
        int e = SSL_get_error(ssl, r);
        int rc;
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            rc = tls_wait(c, e, deadline, timeout_ms, what);
        else
            rc = tls_fail(c, e, what);
        if (rc < 0) {
            c->ssl_broken = true;
            return tr_error_set(err, rc, "%s", c->error.message);
        }
    }
    int rc = store_peer_subject(c);
    if (rc < 0) {
        c->ssl_broken = true;
        return tr_error_set(err, rc, "%s %s: out of memory", what, c->peer_address);
    }
    return 0;
}

int net_start_tls(struct net_conn *c, struct net_tls *tls, int timeout_ms, struct tr_error *err)
{
    if (!c || !tls)
        return tr_error_set(err, TR_EINVAL, "net_start_tls: no connection or TLS context");
    return handshake(c, tls, deadline_after(timeout_ms), timeout_ms, err);
}

/* ---- reading and writing ---- */

static ssize_t conn_read(struct net_conn *c, void *buf, size_t n, int64_t deadline, int timeout_ms)
{
    static const char what[] = "read from";
    if (n > SSIZE_MAX)
        n = SSIZE_MAX;
    if (c->ssl) {
        for (;;) {
            ERR_clear_error();
            c->io_errno = 0;
            size_t got = 0;
            int r = SSL_read_ex(c->ssl, buf, n, &got);
            if (r == 1)
                return (ssize_t)got;
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                return tls_fail(c, e, what);
            int rc = tls_wait(c, e, deadline, timeout_ms, what);
            if (rc < 0)
                return rc;
        }
    }
    for (;;) {
        ssize_t got = buffered_recv(c, buf, n);
        if (got > 0)
            return got;
        if (got == 0)
            return conn_fail(c, TR_ECLOSED, "%s %s: the peer closed the connection", what,
                             c->peer_address);
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN && e != EWOULDBLOCK)
            return conn_fail(c, errno_is_closed(e) ? TR_ECLOSED : TR_EIO, "%s %s: %s", what,
                             c->peer_address, strerror(e));
        int w = wait_fd(c->fd, POLLIN, deadline);
        if (w == 0)
            return conn_fail(c, TR_ETIMEOUT, "%s %s: no data within %d ms", what, c->peer_address,
                             timeout_ms);
        if (w < 0)
            return conn_fail(c, TR_EIO, "%s %s: poll: %s", what, c->peer_address, strerror(errno));
    }
}

ssize_t net_read(struct net_conn *c, void *buf, size_t n, int timeout_ms)
{
    if (!c || !buf || n == 0)
        return TR_EINVAL;
    return conn_read(c, buf, n, deadline_after(timeout_ms), timeout_ms);
}

int net_read_full(struct net_conn *c, void *buf, size_t n, int timeout_ms)
{
    if (!c || (!buf && n))
        return TR_EINVAL;
    int64_t deadline = deadline_after(timeout_ms);
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = conn_read(c, p, n, deadline, timeout_ms);
        if (got < 0)
            return (int)got;
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

int net_write_all(struct net_conn *c, const void *buf, size_t n, int timeout_ms)
{
    static const char what[] = "write to";
    if (!c || (!buf && n))
        return TR_EINVAL;
    int64_t deadline = deadline_after(timeout_ms);
    const uint8_t *p = buf;
    while (n > 0) {
        if (c->ssl) {
            ERR_clear_error();
            c->io_errno = 0;
            size_t written = 0;
            int r = SSL_write_ex(c->ssl, p, n, &written);
            if (r == 1) {
                p += written;
                n -= written;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            int rc;
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
                rc = tls_wait(c, e, deadline, timeout_ms, what);
            else
                rc = tls_fail(c, e, what);
            if (rc < 0) {
                /* A record may be half sent: a close_notify after it would be garbage. */
                c->ssl_broken = true;
                return rc;
            }
            continue;
        }
        ssize_t sent = send(c->fd, p, n, MSG_NOSIGNAL);
        if (sent >= 0) {
            p += sent;
            n -= (size_t)sent;
            continue;
        }
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN && e != EWOULDBLOCK)
            return conn_fail(c, errno_is_closed(e) ? TR_ECLOSED : TR_EIO, "%s %s: %s", what,
                             c->peer_address, strerror(e));
        int w = wait_fd(c->fd, POLLOUT, deadline);
        if (w == 0)
            return conn_fail(c, TR_ETIMEOUT, "%s %s: the peer took no data for %d ms", what,
                             c->peer_address, timeout_ms);
        if (w < 0)
            return conn_fail(c, TR_EIO, "%s %s: poll: %s", what, c->peer_address, strerror(errno));
    }
    return 0;
}

int net_wait_readable(struct net_conn *c, int timeout_ms)
{
    static const char what[] = "wait for data from";
    if (!c)
        return TR_EINVAL;
    int64_t deadline = deadline_after(timeout_ms);
    if (c->ssl) {
        /* Bytes OpenSSL has decrypted already are invisible to poll; records that carry no
         * application data (tickets, key updates) make the socket readable for nothing. A
         * peek of one byte tells both apart, processing the records as it goes. */
        if (SSL_pending(c->ssl) > 0)
            return 1;
        for (;;) {
            ERR_clear_error();
            c->io_errno = 0;
            unsigned char byte;
            size_t got = 0;
            int r = SSL_peek_ex(c->ssl, &byte, 1, &got);
            if (r == 1)
                return 1;
            int e = SSL_get_error(c->ssl, r);
            if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE)
                return tls_fail(c, e, what);
            int w = wait_fd(c->fd, e == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN, deadline);
            if (w == 0)
                return 0;
            if (w < 0)
                return conn_fail(c, TR_EIO, "%s %s: poll: %s", what, c->peer_address,
                                 strerror(errno));
        }
    }
    if (c->rpos < c->rlen)
        return 1;
    for (;;) {
        unsigned char byte;
        ssize_t got = recv(c->fd, &byte, 1, MSG_PEEK);
        if (got > 0)
            return 1;
        if (got == 0)
            return conn_fail(c, TR_ECLOSED, "%s %s: the peer closed the connection", what,
                             c->peer_address);
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN && e != EWOULDBLOCK)
            return conn_fail(c, errno_is_closed(e) ? TR_ECLOSED : TR_EIO, "%s %s: %s", what,
                             c->peer_address, strerror(e));
        if (timeout_ms == 0)
            return 0; /* a look, not a wait: the recv said it all (no poll to say it again) */
        int w = wait_fd(c->fd, POLLIN, deadline);
        if (w == 0)
            return 0;
        if (w < 0)
            return conn_fail(c, TR_EIO, "%s %s: poll: %s", what, c->peer_address, strerror(errno));
    }
}

void net_close(struct net_conn *c)
{
    if (!c)
        return;
    if (c->ssl) {
        if (!c->ssl_broken && SSL_is_init_finished(c->ssl)) {
            /* Send our close_notify; do not wait for the peer's (RFC 8446 6.1 allows it). */
            int64_t deadline = deadline_after(NET_CLOSE_NOTIFY_MS);
            for (;;) {
                ERR_clear_error();
                int r = SSL_shutdown(c->ssl);
                if (r >= 0)
                    break;
                int e = SSL_get_error(c->ssl, r);
                if (e != SSL_ERROR_WANT_WRITE || wait_fd(c->fd, POLLOUT, deadline) <= 0)
                    break;
            }
        }
        ERR_clear_error();
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) {
        shutdown(c->fd, SHUT_WR);
        close(c->fd);
    }
    tr_free(c->peer_subject);
    tr_free(c->rbuf);
    tr_free(c);
}

/* ---- accessors ---- */

const char *net_peer_address(const struct net_conn *c)
{
    return c ? c->peer_address : "";
}

const char *net_peer_ip(const struct net_conn *c)
{
    return c ? c->peer_ip : "";
}

const char *net_tls_peer_subject(const struct net_conn *c)
{
    return c && c->peer_subject ? c->peer_subject : "";
}

const char *net_tls_version(const struct net_conn *c)
{
    return c && c->ssl ? SSL_get_version(c->ssl) : "";
}

bool net_is_tls(const struct net_conn *c)
{
    return c && c->ssl;
}

const char *net_conn_error(const struct net_conn *c)
{
    return c ? c->error.message : "";
}

int net_conn_fd(const struct net_conn *c)
{
    return c ? c->fd : TR_EINVAL;
}
