/*
 * test_transport.c - TCP and TLS connections (net/transport.c) on 127.0.0.1: data both ways,
 * TCP_NODELAY, timeouts, peer close, SIGPIPE, connect failures, and TLS (BCP 195 versions and
 * ciphers, server and client certificate verification, host names) against our own peer, a
 * raw OpenSSL client, and the `openssl s_server` / `s_client` programs.
 *
 * The certificates are made for each run with the openssl command line in a mkdtemp directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common.h"
#include "transport.h"

#define BULK_SIZE (10u * 1024 * 1024)
#define LONG_MS   20000 /* for things that should happen at once: only a bug waits this long */

/* Build with -DSHOW_MESSAGES to see the error messages the failure tests provoke. */
#ifdef SHOW_MESSAGES
#define show(...) print_message(__VA_ARGS__)
#else
#define show(...) ((void)0)
#endif

/* ---- helpers ---- */

static char cert_dir[64];

static const char *cert_path(const char *name)
{
    /* Several paths are used in one call: rotate through a few buffers. */
    static char paths[8][128];
    static unsigned next;
    char *p = paths[next++ % TR_ARRAY_SIZE(paths)];
    snprintf(p, sizeof(paths[0]), "%s/%s", cert_dir, name);
    return p;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static uint8_t pattern_byte(size_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

static void fill_pattern(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_byte(i);
}

static bool check_pattern(const uint8_t *p, size_t n, size_t offset)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern_byte(offset + i))
            return false;
    return true;
}

static int get_nodelay(int fd)
{
    int v = -1;
    socklen_t len = sizeof(v);
    if (getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) != 0)
        return -1;
    return v;
}

/* Read one line (with its '\n') into buf. */
static int read_line(struct net_conn *c, char *buf, size_t size, int timeout_ms)
{
    size_t len = 0;
    while (len + 1 < size) {
        ssize_t r = net_read(c, buf + len, 1, timeout_ms);
        if (r < 0)
            return (int)r;
        if (buf[len++] == '\n')
            break;
    }
    buf[len] = '\0';
    return 0;
}

/* A listener, a connected client and the accepted server end, without TLS, in one thread. */
static void make_pair(struct net_conn **client, struct net_conn **server)
{
    struct tr_error err = TR_ERROR_INIT;
    int lfd = net_listen("127.0.0.1", 0, 4, &err);
    assert_true(lfd >= 0);
    int port = net_listen_port(lfd);
    assert_true(port > 0);
    assert_int_equal(net_connect("127.0.0.1", port, NULL, LONG_MS, client, &err), 0);
    assert_int_equal(net_accept(lfd, NULL, LONG_MS, server, &err), 0);
    close(lfd);
}

/* ---- a server in a thread ---- */

enum serve_mode {
    SERVE_ECHO_LINE,  /* read a line, answer "echo: <line>" */
    SERVE_BULK,       /* read BULK_SIZE bytes, check them, send BULK_SIZE bytes */
    SERVE_CLOSE,      /* close at once */
    SERVE_HOLD,       /* read until the client closes */
    SERVE_WRITE_HOLD, /* send 100 bytes in one write, then read until the client closes */
};

struct server {
    int listen_fd;
    int port;
    struct net_tls *tls;
    enum serve_mode mode;
    pthread_t thread;
    int accept_rc;
    char accept_msg[TR_ERROR_MSG_MAX];
    char subject[256];
    char version[32];
    char peer_ip[64];
    int nodelay;
    int io_rc;
    bool bulk_ok;
};

static void *server_main(void *arg)
{
    struct server *s = arg;
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    s->accept_rc = net_accept(s->listen_fd, s->tls, LONG_MS, &c, &err);
    snprintf(s->accept_msg, sizeof(s->accept_msg), "%s", err.message);
    if (s->accept_rc < 0)
        return NULL;
    snprintf(s->subject, sizeof(s->subject), "%s", net_tls_peer_subject(c));
    snprintf(s->version, sizeof(s->version), "%s", net_tls_version(c));
    snprintf(s->peer_ip, sizeof(s->peer_ip), "%s", net_peer_ip(c));
    s->nodelay = get_nodelay(net_conn_fd(c));
    char line[256];
    char reply[300];
    switch (s->mode) {
    case SERVE_ECHO_LINE:
        s->io_rc = read_line(c, line, sizeof(line), LONG_MS);
        if (s->io_rc == 0) {
            int n = snprintf(reply, sizeof(reply), "echo: %s", line);
            s->io_rc = net_write_all(c, reply, (size_t)n, LONG_MS);
        }
        break;
    case SERVE_BULK: {
        uint8_t *buf = malloc(BULK_SIZE);
        size_t got = 0;
        s->bulk_ok = buf != NULL;
        while (s->bulk_ok && got < BULK_SIZE) {
            ssize_t r = net_read(c, buf, TR_MIN((size_t)65536, BULK_SIZE - got), LONG_MS);
            if (r < 0) {
                s->io_rc = (int)r;
                s->bulk_ok = false;
                break;
            }
            s->bulk_ok = check_pattern(buf, (size_t)r, got);
            got += (size_t)r;
        }
        if (s->bulk_ok) {
            fill_pattern(buf, BULK_SIZE);
            s->io_rc = net_write_all(c, buf, BULK_SIZE, LONG_MS);
        }
        free(buf);
        break;
    }
    case SERVE_CLOSE: break;
    case SERVE_HOLD: s->io_rc = (int)net_read(c, line, sizeof(line), LONG_MS); break;
    case SERVE_WRITE_HOLD: {
        uint8_t hundred[100];
        fill_pattern(hundred, sizeof(hundred));
        s->io_rc = net_write_all(c, hundred, sizeof(hundred), LONG_MS);
        if (s->io_rc == 0)
            s->io_rc = (int)net_read(c, line, sizeof(line), LONG_MS);
        break;
    }
    }
    net_close(c);
    return NULL;
}

static void server_start(struct server *s, struct net_tls *tls, enum serve_mode mode)
{
    memset(s, 0, sizeof(*s));
    struct tr_error err = TR_ERROR_INIT;
    s->listen_fd = net_listen("127.0.0.1", 0, 8, &err);
    assert_true(s->listen_fd >= 0);
    s->port = net_listen_port(s->listen_fd);
    assert_true(s->port > 0);
    s->tls = tls;
    s->mode = mode;
    assert_int_equal(pthread_create(&s->thread, NULL, server_main, s), 0);
}

static void server_finish(struct server *s)
{
    pthread_join(s->thread, NULL);
    close(s->listen_fd);
}

/* ---- TLS contexts from the test certificates ---- */

static struct net_tls *server_tls(bool verify_client)
{
    struct net_tls_options o;
    net_tls_options_init(&o);
    o.certificate = cert_path("server.pem");
    o.private_key = cert_path("server.key");
    o.ca_file = cert_path("ca.pem");
    o.verify_peer = verify_client;
    struct tr_error err = TR_ERROR_INIT;
    struct net_tls *tls = net_tls_server_new(&o, &err);
    if (!tls)
        fail_msg("%s", err.message);
    return tls;
}

/* ca: the CA file to trust; cert: "client" / "rogue" / NULL for none. */
static struct net_tls *client_tls(const char *ca, const char *cert)
{
    struct net_tls_options o;
    net_tls_options_init(&o);
    char cert_file[32], key_file[32];
    if (cert) {
        snprintf(cert_file, sizeof(cert_file), "%s.pem", cert);
        snprintf(key_file, sizeof(key_file), "%s.key", cert);
        o.certificate = cert_path(cert_file);
        o.private_key = cert_path(key_file);
    }
    o.ca_file = cert_path(ca);
    struct tr_error err = TR_ERROR_INIT;
    struct net_tls *tls = net_tls_client_new(&o, &err);
    if (!tls)
        fail_msg("%s", err.message);
    return tls;
}

/* ---- plain TCP ---- */

static void test_listen_port_zero(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    int fd = net_listen("127.0.0.1", 0, 0, &err);
    assert_true(fd >= 0);
    int port = net_listen_port(fd);
    assert_true(port > 0 && port <= 65535);
    assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    int reuse = 0;
    socklen_t len = sizeof(reuse);
    assert_int_equal(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, &len), 0);
    assert_int_equal(reuse, 1);

    /* The same port again: refused, with the address and the reason in the message. */
    int again = net_listen("127.0.0.1", port, 0, &err);
    assert_int_equal(again, TR_EIO);
    char where[32];
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    assert_non_null(strstr(err.message, where));
    assert_non_null(strstr(err.message, strerror(EADDRINUSE)));
    close(fd);

    /* No host: every address, 127.0.0.1 included. */
    fd = net_listen(NULL, 0, 0, &err);
    assert_true(fd >= 0);
    struct net_conn *client = NULL, *server = NULL;
    assert_int_equal(net_connect("127.0.0.1", net_listen_port(fd), NULL, LONG_MS, &client, &err),
                     0);
    assert_int_equal(net_accept(fd, NULL, LONG_MS, &server, &err), 0);
    assert_string_equal(net_peer_ip(server), "127.0.0.1"); /* not ::ffff:127.0.0.1 */
    net_close(client);
    net_close(server);
    close(fd);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct server s;
    server_start(&s, NULL, SERVE_ECHO_LINE);
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    assert_int_equal(net_connect("127.0.0.1", s.port, NULL, LONG_MS, &c, &err), 0);
    char expect[32];
    snprintf(expect, sizeof(expect), "127.0.0.1:%d", s.port);
    assert_string_equal(net_peer_address(c), expect);
    assert_string_equal(net_peer_ip(c), "127.0.0.1");
    assert_false(net_is_tls(c));
    assert_string_equal(net_tls_version(c), "");
    assert_string_equal(net_tls_peer_subject(c), "");
    assert_int_equal(net_write_all(c, "ping\n", 5, LONG_MS), 0);
    char line[64];
    assert_int_equal(read_line(c, line, sizeof(line), LONG_MS), 0);
    assert_string_equal(line, "echo: ping\n");
    net_close(c);
    server_finish(&s);
    assert_int_equal(s.accept_rc, 0);
    assert_int_equal(s.io_rc, 0);
    assert_string_equal(s.peer_ip, "127.0.0.1");
}

static void test_tcp_nodelay_both_ends(void **state)
{
    (void)state;
    struct net_conn *client, *server;
    make_pair(&client, &server);
    assert_int_equal(get_nodelay(net_conn_fd(client)), 1);
    assert_int_equal(get_nodelay(net_conn_fd(server)), 1);
    assert_true(fcntl(net_conn_fd(client), F_GETFD) & FD_CLOEXEC);
    assert_true(fcntl(net_conn_fd(server), F_GETFD) & FD_CLOEXEC);
    net_close(client);
    net_close(server);
}

static void bulk_exchange(struct net_tls *server_ctx, struct net_tls *client_ctx)
{
    struct server s;
    server_start(&s, server_ctx, SERVE_BULK);
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    assert_int_equal(
        net_connect_sni("127.0.0.1", s.port, client_ctx, "localhost", LONG_MS, &c, &err), 0);
    uint8_t *buf = malloc(BULK_SIZE);
    assert_non_null(buf);
    fill_pattern(buf, BULK_SIZE);
    assert_int_equal(net_write_all(c, buf, BULK_SIZE, LONG_MS), 0);
    memset(buf, 0, BULK_SIZE);
    assert_int_equal(net_read_full(c, buf, BULK_SIZE, LONG_MS), 0);
    assert_true(check_pattern(buf, BULK_SIZE, 0));
    free(buf);
    net_close(c);
    server_finish(&s);
    assert_int_equal(s.accept_rc, 0);
    assert_int_equal(s.io_rc, 0);
    assert_true(s.bulk_ok);
}

static void test_large_transfer(void **state)
{
    (void)state;
    bulk_exchange(NULL, NULL);
}

static void test_read_timeout(void **state)
{
    (void)state;
    struct net_conn *client, *server;
    make_pair(&client, &server);
    char buf[16];
    int64_t t0 = now_ms();
    assert_int_equal(net_read(client, buf, sizeof(buf), 150), TR_ETIMEOUT);
    int64_t elapsed = now_ms() - t0;
    assert_true(elapsed >= 140 && elapsed < 5000);
    assert_non_null(strstr(net_conn_error(client), "127.0.0.1:"));
    assert_int_equal(net_wait_readable(client, 50), 0);
    /* Still usable after a read timeout. */
    assert_int_equal(net_write_all(server, "x", 1, LONG_MS), 0);
    assert_int_equal(net_wait_readable(client, LONG_MS), 1);
    assert_int_equal(net_read(client, buf, sizeof(buf), LONG_MS), 1);
    assert_int_equal(buf[0], 'x');
    /* A read_full that gets part of its bytes still times out. */
    assert_int_equal(net_write_all(server, "abc", 3, LONG_MS), 0);
    assert_int_equal(net_read_full(client, buf, 4, 150), TR_ETIMEOUT);
    net_close(client);
    net_close(server);
}

static void test_peer_close(void **state)
{
    (void)state;
    struct net_conn *client, *server;
    make_pair(&client, &server);
    assert_int_equal(net_write_all(server, "last", 4, LONG_MS), 0);
    net_close(server);
    char buf[16];
    /* The bytes sent before the close arrive, then the close. */
    assert_int_equal(net_read_full(client, buf, 4, LONG_MS), 0);
    assert_memory_equal(buf, "last", 4);
    assert_int_equal(net_read(client, buf, sizeof(buf), LONG_MS), TR_ECLOSED);
    assert_int_equal(net_wait_readable(client, LONG_MS), TR_ECLOSED);
    assert_non_null(strstr(net_conn_error(client), "closed"));
    net_close(client);

    /* A close in the middle of net_read_full. */
    make_pair(&client, &server);
    assert_int_equal(net_write_all(server, "abc", 3, LONG_MS), 0);
    net_close(server);
    assert_int_equal(net_read_full(client, buf, 8, LONG_MS), TR_ECLOSED);
    net_close(client);
}

/* Write until the closed peer's reset shows: the process must not get SIGPIPE. */
static int write_until_error(struct net_conn *c)
{
    static uint8_t chunk[65536];
    for (int i = 0; i < 1000; i++) {
        int rc = net_write_all(c, chunk, sizeof(chunk), LONG_MS);
        if (rc < 0)
            return rc;
        usleep(1000);
    }
    return 0;
}

static void test_write_to_closed_peer_no_sigpipe(void **state)
{
    (void)state;
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, &old); /* a SIGPIPE would kill the test */
    struct net_conn *client, *server;
    make_pair(&client, &server);
    net_close(server);
    assert_int_equal(write_until_error(client), TR_ECLOSED);
    net_close(client);
    sigaction(SIGPIPE, &old, NULL);
}

static void test_connect_refused(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    int fd = net_listen("127.0.0.1", 0, 0, &err);
    int port = net_listen_port(fd);
    close(fd);
    struct net_conn *c = (struct net_conn *)&err; /* must be reset to NULL */
    assert_int_equal(net_connect("127.0.0.1", port, NULL, LONG_MS, &c, &err), TR_EIO);
    assert_null(c);
    char where[32];
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    assert_non_null(strstr(err.message, where));
    assert_non_null(strstr(err.message, strerror(ECONNREFUSED)));
}

static void test_connect_timeout(void **state)
{
    (void)state;
    /* A listener that never accepts: once its queue is full, Linux drops new SYNs, and the
     * connect hangs (on loopback, without sending a packet anywhere else). */
    struct tr_error err = TR_ERROR_INIT;
    int lfd = net_listen("127.0.0.1", 0, 1, &err);
    assert_true(lfd >= 0);
    int port = net_listen_port(lfd);
    struct net_conn *conns[64] = {0};
    int rc = 0;
    int64_t elapsed = 0;
    size_t i;
    for (i = 0; i < TR_ARRAY_SIZE(conns); i++) {
        tr_error_clear(&err);
        int64_t t0 = now_ms();
        rc = net_connect("127.0.0.1", port, NULL, 300, &conns[i], &err);
        elapsed = now_ms() - t0;
        if (rc != 0)
            break;
    }
    assert_int_equal(rc, TR_ETIMEOUT);
    assert_true(elapsed >= 290 && elapsed < 5000);
    assert_non_null(strstr(err.message, "within 300 ms"));
    char where[32];
    snprintf(where, sizeof(where), "127.0.0.1:%d", port);
    assert_non_null(strstr(err.message, where));
    for (size_t j = 0; j < i; j++)
        net_close(conns[j]);
    close(lfd);
}

static void test_accept_timeout(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    int lfd = net_listen("127.0.0.1", 0, 0, &err);
    struct net_conn *c = NULL;
    int64_t t0 = now_ms();
    assert_int_equal(net_accept(lfd, NULL, 100, &c, &err), TR_ETIMEOUT);
    assert_true(now_ms() - t0 >= 90);
    assert_null(c);
    assert_non_null(strstr(err.message, "within 100 ms"));
    close(lfd);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    assert_int_equal(net_connect(NULL, 104, NULL, 100, &c, &err), TR_EINVAL);
    tr_error_clear(&err);
    assert_int_equal(net_connect("127.0.0.1", 0, NULL, 100, &c, &err), TR_EINVAL);
    tr_error_clear(&err);
    assert_int_equal(net_connect("127.0.0.1", 65536, NULL, 100, &c, &err), TR_EINVAL);
    assert_non_null(strstr(err.message, "127.0.0.1:65536"));
    tr_error_clear(&err);
    assert_int_equal(net_listen("127.0.0.1", -1, 0, &err), TR_EINVAL);
    tr_error_clear(&err);
    assert_int_equal(net_listen("not an address", 0, 0, &err) < 0, 1);
    assert_non_null(strstr(err.message, "not an address"));
    assert_int_equal(net_read(NULL, &err, 1, 0), TR_EINVAL);
    assert_int_equal(net_write_all(NULL, "x", 1, 0), TR_EINVAL);
    net_close(NULL);
    net_tls_free(NULL);
    assert_string_equal(net_peer_address(NULL), "");
    assert_false(net_is_tls(NULL));

    struct net_conn *client, *server;
    make_pair(&client, &server);
    char byte;
    assert_int_equal(net_read(client, &byte, 0, 0), TR_EINVAL);
    assert_int_equal(net_read_full(client, &byte, 0, 0), 0);
    assert_int_equal(net_write_all(client, &byte, 0, 0), 0);
    net_close(client);
    net_close(server);
}

static void test_allocation_failure(void **state)
{
    (void)state;
    int fds = count_open_fds();
    struct tr_error err = TR_ERROR_INIT;
    int lfd = net_listen("127.0.0.1", 0, 4, &err);
    int port = net_listen_port(lfd);
    struct net_conn *c = NULL;
    tr_alloc_fail_after(0);
    assert_int_equal(net_connect("127.0.0.1", port, NULL, LONG_MS, &c, &err), TR_ENOMEM);
    assert_null(c);
    tr_error_clear(&err);
    assert_int_equal(net_accept(lfd, NULL, LONG_MS, &c, &err), TR_ENOMEM);
    assert_null(c);
    tr_error_clear(&err);
    struct net_tls_options o;
    net_tls_options_init(&o);
    assert_null(net_tls_client_new(&o, &err));
    assert_int_equal(err.code, TR_ENOMEM);
    tr_alloc_fail_after(-1);
    close(lfd);
    assert_int_equal(count_open_fds(), fds);
}

/* ---- TLS ---- */

static void test_tls_round_trip(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(false);
    struct net_tls *ctls = client_tls("ca.pem", NULL);
    struct server s;
    server_start(&s, stls, SERVE_ECHO_LINE);
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    /* By address: the certificate's IP address entry is checked. */
    if (net_connect("127.0.0.1", s.port, ctls, LONG_MS, &c, &err) != 0)
        fail_msg("%s", err.message);
    assert_true(net_is_tls(c));
    const char *version = net_tls_version(c);
    assert_true(strcmp(version, "TLSv1.3") == 0 || strcmp(version, "TLSv1.2") == 0);
    assert_non_null(strstr(net_tls_peer_subject(c), "CN=localhost"));
    assert_int_equal(get_nodelay(net_conn_fd(c)), 1);
    assert_int_equal(net_write_all(c, "hello over TLS\n", 15, LONG_MS), 0);
    char line[64];
    assert_int_equal(read_line(c, line, sizeof(line), LONG_MS), 0);
    assert_string_equal(line, "echo: hello over TLS\n");
    net_close(c);
    server_finish(&s);
    assert_int_equal(s.accept_rc, 0);
    assert_int_equal(s.io_rc, 0);
    assert_string_equal(s.version, version);
    assert_string_equal(s.subject, ""); /* no client certificate was asked for */
    assert_int_equal(s.nodelay, 1);
    net_tls_free(stls);
    net_tls_free(ctls);
}

static void test_tls_large_transfer(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(false);
    struct net_tls *ctls = client_tls("ca.pem", NULL);
    bulk_exchange(stls, ctls);
    net_tls_free(stls);
    net_tls_free(ctls);
}

/* Connect a client to a server in a thread; returns the client's rc (conn closed). */
static int tls_attempt(struct net_tls *stls, struct net_tls *ctls, const char *sni,
                       enum serve_mode mode, struct server *s, struct tr_error *err, int *read_rc)
{
    server_start(s, stls, mode);
    struct net_conn *c = NULL;
    int rc = net_connect_sni("127.0.0.1", s->port, ctls, sni, LONG_MS, &c, err);
    *read_rc = 0;
    if (rc == 0) {
        /* TLS 1.3: the client finishes its handshake before the server has checked the
         * client's certificate; a refusal shows on the first read. */
        if (mode == SERVE_ECHO_LINE)
            *read_rc = net_write_all(c, "hi\n", 3, LONG_MS);
        if (*read_rc == 0) {
            char line[64];
            *read_rc = read_line(c, line, sizeof(line), LONG_MS);
        }
        net_close(c);
    }
    server_finish(s);
    return rc;
}

static void test_tls_hostname(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(false);
    struct net_tls *ctls = client_tls("ca.pem", NULL);
    struct server s;
    struct tr_error err = TR_ERROR_INIT;
    int read_rc;
    /* The DNS name in the certificate. */
    assert_int_equal(tls_attempt(stls, ctls, "localhost", SERVE_ECHO_LINE, &s, &err, &read_rc), 0);
    assert_int_equal(read_rc, 0);
    assert_int_equal(s.accept_rc, 0);
    /* A name the certificate does not carry. */
    int rc = tls_attempt(stls, ctls, "pacs.example.org", SERVE_ECHO_LINE, &s, &err, &read_rc);
    show("client: %s\nserver: %s\n", err.message, s.accept_msg);
    assert_int_equal(rc, TR_EDENIED);
    assert_non_null(strstr(err.message, "hostname mismatch"));
    assert_non_null(strstr(err.message, "127.0.0.1:"));
    assert_true(s.accept_rc < 0);
    net_tls_free(stls);
    net_tls_free(ctls);
}

static void test_tls_wrong_ca(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(false);
    struct net_tls *ctls = client_tls("other-ca.pem", NULL);
    struct server s;
    struct tr_error err = TR_ERROR_INIT;
    int read_rc;
    int rc = tls_attempt(stls, ctls, "localhost", SERVE_ECHO_LINE, &s, &err, &read_rc);
    show("client: %s\nserver: %s\n", err.message, s.accept_msg);
    assert_int_equal(rc, TR_EDENIED);
    assert_non_null(strstr(err.message, "unable to get local issuer certificate"));
    assert_true(s.accept_rc < 0);
    net_tls_free(stls);
    net_tls_free(ctls);

    /* Without verification the same client connects (and learns no verified subject). */
    struct net_tls_options o;
    net_tls_options_init(&o);
    o.verify_peer = false;
    stls = server_tls(false);
    ctls = net_tls_client_new(&o, &err);
    assert_non_null(ctls);
    server_start(&s, stls, SERVE_HOLD);
    struct net_conn *c = NULL;
    assert_int_equal(net_connect("127.0.0.1", s.port, ctls, LONG_MS, &c, &err), 0);
    assert_string_equal(net_tls_peer_subject(c), "");
    net_close(c);
    server_finish(&s);
    assert_int_equal(s.io_rc, TR_ECLOSED);
    net_tls_free(stls);
    net_tls_free(ctls);
}

static void test_tls_client_certificate(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(true);
    struct server s;
    struct tr_error err = TR_ERROR_INIT;
    int read_rc;

    /* No certificate: refused by the server. */
    struct net_tls *ctls = client_tls("ca.pem", NULL);
    int rc = tls_attempt(stls, ctls, "localhost", SERVE_ECHO_LINE, &s, &err, &read_rc);
    show("client: %d %s (read %d)\nserver: %s\n", rc, err.message, read_rc, s.accept_msg);
    assert_int_equal(s.accept_rc, TR_EDENIED);
    assert_non_null(strstr(s.accept_msg, "certificate"));
    assert_true(rc < 0 || read_rc < 0);
    net_tls_free(ctls);

    /* A certificate from a CA the server does not trust: refused. */
    tr_error_clear(&err);
    ctls = client_tls("ca.pem", "rogue");
    rc = tls_attempt(stls, ctls, "localhost", SERVE_ECHO_LINE, &s, &err, &read_rc);
    show("client: %d %s (read %d)\nserver: %s\n", rc, err.message, read_rc, s.accept_msg);
    assert_int_equal(s.accept_rc, TR_EDENIED);
    assert_true(rc < 0 || read_rc < 0);
    net_tls_free(ctls);

    /* The right certificate: accepted, and the server knows who it is. */
    tr_error_clear(&err);
    ctls = client_tls("ca.pem", "client");
    rc = tls_attempt(stls, ctls, "localhost", SERVE_ECHO_LINE, &s, &err, &read_rc);
    if (rc != 0)
        fail_msg("%s", err.message);
    assert_int_equal(read_rc, 0);
    assert_int_equal(s.accept_rc, 0);
    assert_string_equal(s.subject, "CN=reader1,O=telerad test");
    net_tls_free(ctls);
    net_tls_free(stls);
}

/* A blocking socket to 127.0.0.1:port that gives up reading or writing after 10 s. */
static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* A client of OpenSSL's own, blocking, limited to max_version and ciphers. Returns 1 if the
 * handshake and an echo went through; the negotiated cipher or the error goes to info. */
static int raw_client(int port, int max_version, const char *ciphers, char *info, size_t size)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_min_proto_version(ctx, TLS1_VERSION);
    SSL_CTX_set_max_proto_version(ctx, max_version);
    /* OpenSSL 3 refuses TLS < 1.2 below security level 0: lower it so the hello goes out. */
    assert_int_equal(SSL_CTX_set_cipher_list(ctx, ciphers), 1);
    int fd = raw_connect(port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    int ok = 0;
    if (SSL_connect(ssl) == 1) {
        snprintf(info, size, "%s %s", SSL_get_version(ssl), SSL_get_cipher_name(ssl));
        char line[64] = {0};
        if (SSL_write(ssl, "raw\n", 4) == 4 && SSL_read(ssl, line, sizeof(line) - 1) > 0)
            ok = strcmp(line, "echo: raw\n") == 0;
        SSL_shutdown(ssl);
    } else {
        ERR_error_string_n(ERR_get_error(), info, size);
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return ok;
}

static void test_tls_versions_and_ciphers(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(false);
    struct server s;
    char info[256];

    /* TLS 1.1: the server refuses it (the alert proves the hello reached it). */
    server_start(&s, stls, SERVE_ECHO_LINE);
    assert_int_equal(raw_client(s.port, TLS1_1_VERSION, "DEFAULT:@SECLEVEL=0", info, sizeof(info)),
                     0);
    server_finish(&s);
    show("client: %s\nserver: %s\n", info, s.accept_msg);
    assert_non_null(strstr(info, "protocol version"));
    assert_int_equal(s.accept_rc, TR_EPROTO);
    assert_non_null(strstr(s.accept_msg, "unsupported protocol"));

    /* TLS 1.2 with OpenSSL's default offer: a BCP 195 cipher is chosen. */
    server_start(&s, stls, SERVE_ECHO_LINE);
    assert_int_equal(raw_client(s.port, TLS1_2_VERSION, "DEFAULT", info, sizeof(info)), 1);
    server_finish(&s);
    assert_int_equal(s.accept_rc, 0);
    assert_string_equal(s.version, "TLSv1.2");
    assert_true(strncmp(info, "TLSv1.2 ECDHE-", 14) == 0);
    assert_true(strstr(info, "-GCM-") || strstr(info, "CHACHA20-POLY1305"));

    /* TLS 1.2 offering only CBC suites (usable with our ECDSA key): no shared cipher. */
    server_start(&s, stls, SERVE_ECHO_LINE);
    assert_int_equal(raw_client(s.port, TLS1_2_VERSION,
                                "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384", info,
                                sizeof(info)),
                     0);
    server_finish(&s);
    show("client: %s\nserver: %s\n", info, s.accept_msg);
    assert_int_equal(s.accept_rc, TR_EPROTO);
    assert_non_null(strstr(s.accept_msg, "no shared cipher"));

    /* TLS 1.3 when both can. */
    server_start(&s, stls, SERVE_ECHO_LINE);
    assert_int_equal(raw_client(s.port, TLS1_3_VERSION, "DEFAULT", info, sizeof(info)), 1);
    server_finish(&s);
    assert_string_equal(s.version, "TLSv1.3");
    net_tls_free(stls);
}

static void test_tls_no_renegotiation(void **state)
{
    (void)state;
    /* RFC 9325 3.5: a TLS 1.2 client asking to renegotiate is refused. */
    struct net_tls *stls = server_tls(false);
    struct server s;
    server_start(&s, stls, SERVE_ECHO_LINE);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    int fd = raw_connect(s.port);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    assert_int_equal(SSL_renegotiate(ssl), 1);
    assert_true(SSL_do_handshake(ssl) <= 0);
    char info[256];
    ERR_error_string_n(ERR_get_error(), info, sizeof(info));
    show("client: %s\n", info);
    assert_non_null(strstr(info, "no renegotiation"));
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    server_finish(&s);
    assert_int_equal(s.accept_rc, 0);
    assert_true(s.io_rc < 0);
    net_tls_free(stls);
}

static void test_tls_pending_data(void **state)
{
    (void)state;
    /* 100 bytes arrive in one record; after reading 10, the other 90 are inside OpenSSL and
     * the socket is empty: waiting and reading must still see them at once. */
    struct net_tls *stls = server_tls(false);
    struct net_tls *ctls = client_tls("ca.pem", NULL);
    struct server s;
    server_start(&s, stls, SERVE_WRITE_HOLD);
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    assert_int_equal(net_connect_sni("127.0.0.1", s.port, ctls, "localhost", LONG_MS, &c, &err), 0);
    uint8_t buf[200];
    assert_int_equal(net_read(c, buf, 10, LONG_MS), 10);
    assert_true(check_pattern(buf, 10, 0));
    struct pollfd p = {.fd = net_conn_fd(c), .events = POLLIN};
    assert_int_equal(poll(&p, 1, 50), 0); /* nothing left on the socket */
    assert_int_equal(net_wait_readable(c, 0), 1);
    assert_int_equal(net_read(c, buf, sizeof(buf), 0), 90);
    assert_true(check_pattern(buf, 90, 10));
    assert_int_equal(net_wait_readable(c, 100), 0);
    /* A read timeout under TLS, and the connection still closes cleanly afterwards. */
    assert_int_equal(net_read(c, buf, sizeof(buf), 100), TR_ETIMEOUT);
    net_close(c);
    server_finish(&s);
    assert_int_equal(s.io_rc, TR_ECLOSED); /* our close_notify reached the server */
    net_tls_free(stls);
    net_tls_free(ctls);
}

static void test_tls_peer_close_and_sigpipe(void **state)
{
    (void)state;
    struct sigaction dfl, old;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigaction(SIGPIPE, &dfl, &old);
    struct net_tls *stls = server_tls(false);
    struct net_tls *ctls = client_tls("ca.pem", NULL);
    struct server s;
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;

    server_start(&s, stls, SERVE_CLOSE);
    assert_int_equal(net_connect_sni("127.0.0.1", s.port, ctls, "localhost", LONG_MS, &c, &err), 0);
    server_finish(&s);
    char buf[16];
    assert_int_equal(net_read(c, buf, sizeof(buf), LONG_MS), TR_ECLOSED);
    show("%s\n", net_conn_error(c));
    assert_int_equal(net_wait_readable(c, LONG_MS), TR_ECLOSED);
    net_close(c);

    /* Writing on after the peer has gone: TR_ECLOSED, and no SIGPIPE from inside OpenSSL. */
    server_start(&s, stls, SERVE_CLOSE);
    assert_int_equal(net_connect_sni("127.0.0.1", s.port, ctls, "localhost", LONG_MS, &c, &err), 0);
    server_finish(&s);
    assert_int_equal(write_until_error(c), TR_ECLOSED);
    show("%s\n", net_conn_error(c));
    net_close(c);
    net_tls_free(stls);
    net_tls_free(ctls);
    sigaction(SIGPIPE, &old, NULL);
}

struct start_tls_args {
    struct net_conn *c;
    struct net_tls *tls;
    int rc;
    char message[TR_ERROR_MSG_MAX];
};

static void *start_tls_main(void *arg)
{
    struct start_tls_args *a = arg;
    struct tr_error err = TR_ERROR_INIT;
    a->rc = net_start_tls(a->c, a->tls, LONG_MS, &err);
    snprintf(a->message, sizeof(a->message), "%s", err.message);
    return NULL;
}

static void test_tls_start_after_accept(void **state)
{
    (void)state;
    /* A plain accept, then the handshake on its own, as a server's worker thread does it. */
    struct net_tls *stls = server_tls(true);
    struct net_tls *ctls = client_tls("ca.pem", "client");
    struct tr_error err = TR_ERROR_INIT;
    int lfd = net_listen("127.0.0.1", 0, 4, &err);
    int port = net_listen_port(lfd);
    struct net_conn *client = NULL, *server = NULL;
    assert_int_equal(net_connect_sni("127.0.0.1", port, NULL, "localhost", LONG_MS, &client, &err),
                     0);
    assert_int_equal(net_accept(lfd, NULL, LONG_MS, &server, &err), 0);
    close(lfd);
    assert_false(net_is_tls(server));
    struct start_tls_args args = {.c = client, .tls = ctls};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, start_tls_main, &args), 0);
    int rc = net_start_tls(server, stls, LONG_MS, &err);
    pthread_join(t, NULL);
    if (rc != 0 || args.rc != 0)
        fail_msg("server: %s / client: %s", err.message, args.message);
    assert_true(net_is_tls(server) && net_is_tls(client));
    assert_string_equal(net_tls_peer_subject(server), "CN=reader1,O=telerad test");
    assert_string_equal(net_tls_peer_subject(client), "CN=localhost");
    /* Twice is refused. */
    tr_error_clear(&err);
    assert_int_equal(net_start_tls(server, stls, LONG_MS, &err), TR_EINVAL);
    assert_int_equal(net_write_all(client, "x", 1, LONG_MS), 0);
    char byte;
    assert_int_equal(net_read(server, &byte, 1, LONG_MS), 1);
    net_close(client);
    assert_int_equal(net_read(server, &byte, 1, LONG_MS), TR_ECLOSED);
    net_close(server);
    net_tls_free(stls);
    net_tls_free(ctls);
}

static void test_tls_configuration_errors(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    struct net_tls_options o;
    net_tls_options_init(&o);
    assert_true(o.verify_peer);
    /* A server needs a certificate. */
    assert_null(net_tls_server_new(&o, &err));
    assert_int_equal(err.code, TR_EINVAL);
    /* A missing file is named. */
    tr_error_clear(&err);
    o.certificate = cert_path("missing.pem");
    assert_null(net_tls_server_new(&o, &err));
    assert_non_null(strstr(err.message, "missing.pem"));
    /* A key that is not the certificate's. */
    tr_error_clear(&err);
    o.certificate = cert_path("server.pem");
    o.private_key = cert_path("client.key");
    assert_null(net_tls_server_new(&o, &err));
    assert_non_null(strstr(err.message, "mismatch"));
    /* A cipher list with nothing OpenSSL knows. */
    tr_error_clear(&err);
    o.private_key = cert_path("server.key");
    o.ciphers = "NO-SUCH-CIPHER";
    assert_null(net_tls_server_new(&o, &err));
    assert_int_equal(err.code, TR_EINVAL);
    assert_non_null(strstr(err.message, "NO-SUCH-CIPHER"));
    /* The CA file is checked when it is loaded. */
    tr_error_clear(&err);
    o.ciphers = NULL;
    o.ca_file = cert_path("missing-ca.pem");
    assert_null(net_tls_client_new(&o, &err));
    assert_non_null(strstr(err.message, "missing-ca.pem"));
}

/* ---- interoperability with the openssl programs ---- */

struct child {
    pid_t pid;
    int in;  /* its stdin */
    int out; /* its stdout */
};

static void spawn(struct child *ch, const char *log_name, char *const argv[])
{
    int in[2], out[2];
    assert_int_equal(pipe2(in, O_CLOEXEC), 0);
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    const char *log = cert_path(log_name);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int logfd = open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        dup2(in[0], 0);
        dup2(out[1], 1);
        if (logfd >= 0)
            dup2(logfd, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    ch->pid = pid;
    ch->in = in[1];
    ch->out = out[0];
}

/* Read the child's output until it contains needle (then true), or timeout / EOF. */
static bool read_until(struct child *ch, char *buf, size_t size, const char *needle, int timeout_ms)
{
    size_t len = strlen(buf);
    int64_t deadline = now_ms() + timeout_ms;
    while (!strstr(buf, needle)) {
        int left = (int)(deadline - now_ms());
        if (left <= 0 || len + 1 >= size)
            return false;
        struct pollfd p = {.fd = ch->out, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t n = read(ch->out, buf + len, size - 1 - len);
        if (n <= 0)
            return false;
        len += (size_t)n;
        buf[len] = '\0';
    }
    return true;
}

/* Close its stdin and wait for it (killing it after a while): its exit status. */
static int child_finish(struct child *ch)
{
    close(ch->in);
    close(ch->out);
    int status = 0;
    for (int i = 0; i < 500; i++) {
        if (waitpid(ch->pid, &status, WNOHANG) == ch->pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        usleep(10000);
    }
    kill(ch->pid, SIGKILL);
    waitpid(ch->pid, &status, 0);
    return 128;
}

static void test_interop_openssl_s_server(void **state)
{
    (void)state;
    struct child ch;
    char *argv[] = {"openssl",  "s_server",
                    "-accept",  "127.0.0.1:0",
                    "-cert",    (char *)cert_path("server.pem"),
                    "-key",     (char *)cert_path("server.key"),
                    "-naccept", "1",
                    NULL};
    spawn(&ch, "s_server.log", argv);
    char out[8192] = "";
    assert_true(read_until(&ch, out, sizeof(out), "ACCEPT 127.0.0.1:", LONG_MS));
    assert_true(read_until(&ch, out, sizeof(out), "\n", LONG_MS));
    const char *colon = strrchr(strstr(out, "ACCEPT 127.0.0.1:"), ':');
    int port = (int)strtol(colon + 1, NULL, 10);
    assert_true(port > 0);

    struct net_tls *ctls = client_tls("ca.pem", NULL);
    struct tr_error err = TR_ERROR_INIT;
    struct net_conn *c = NULL;
    if (net_connect_sni("127.0.0.1", port, ctls, "localhost", LONG_MS, &c, &err) != 0)
        fail_msg("%s", err.message);
    assert_string_equal(net_tls_version(c), "TLSv1.3");
    assert_string_equal(net_tls_peer_subject(c), "CN=localhost");
    assert_int_equal(net_write_all(c, "hello from telerad\n", 19, LONG_MS), 0);
    assert_true(read_until(&ch, out, sizeof(out), "hello from telerad\n", LONG_MS));
    assert_int_equal(write(ch.in, "hello from s_server\n", 20), 20);
    char line[64];
    assert_int_equal(read_line(c, line, sizeof(line), LONG_MS), 0);
    assert_string_equal(line, "hello from s_server\n");
    net_close(c);
    child_finish(&ch);
    net_tls_free(ctls);
}

static void test_interop_openssl_s_client(void **state)
{
    (void)state;
    struct net_tls *stls = server_tls(true);
    struct server s;
    server_start(&s, stls, SERVE_ECHO_LINE);
    char connect_to[32];
    snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%d", s.port);
    struct child ch;
    char *argv[] = {"openssl",
                    "s_client",
                    "-connect",
                    connect_to,
                    "-servername",
                    "localhost",
                    "-verify_hostname",
                    "localhost",
                    "-verify_return_error",
                    "-CAfile",
                    (char *)cert_path("ca.pem"),
                    "-cert",
                    (char *)cert_path("client.pem"),
                    "-key",
                    (char *)cert_path("client.key"),
                    "-quiet",
                    NULL};
    spawn(&ch, "s_client.log", argv);
    assert_int_equal(write(ch.in, "hello from s_client\n", 20), 20);
    char out[4096] = "";
    assert_true(read_until(&ch, out, sizeof(out), "echo: hello from s_client\n", LONG_MS));
    server_finish(&s);
    assert_int_equal(child_finish(&ch), 0);
    assert_int_equal(s.accept_rc, 0);
    assert_int_equal(s.io_rc, 0);
    assert_string_equal(s.subject, "CN=reader1,O=telerad test");

    /* s_client limited to TLS 1.1 is refused. */
    server_start(&s, stls, SERVE_ECHO_LINE);
    snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%d", s.port);
    char *argv11[] = {
        "openssl", "s_client", "-connect", connect_to, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0",
        NULL};
    spawn(&ch, "s_client_tls11.log", argv11);
    server_finish(&s);
    assert_true(child_finish(&ch) != 0);
    show("server: %s\n", s.accept_msg);
    assert_int_equal(s.accept_rc, TR_EPROTO);
    assert_non_null(strstr(s.accept_msg, "unsupported protocol"));
    net_tls_free(stls);
}

/* ---- fixture ---- */

static int make_certificates(void **state)
{
    (void)state;
    snprintf(cert_dir, sizeof(cert_dir), "/tmp/telerad-tls-XXXXXX");
    if (!mkdtemp(cert_dir))
        return -1;
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "cd '%s' && {"
             " key='-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';"
             " for ca in ca other-ca; do"
             "  openssl req -x509 $key -keyout $ca.key -out $ca.pem -days 2"
             "   -subj \"/CN=telerad test $ca\" -addext basicConstraints=critical,CA:TRUE"
             "   -addext keyUsage=critical,keyCertSign,cRLSign || exit 1;"
             " done;"
             " printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n"
             "keyUsage=critical,digitalSignature\\nextendedKeyUsage=serverAuth\\n' > server.ext;"
             " printf 'basicConstraints=CA:FALSE\\nkeyUsage=critical,digitalSignature\\n"
             "extendedKeyUsage=clientAuth\\n' > client.ext;"
             " openssl req -new $key -keyout server.key -out server.csr -subj /CN=localhost &&"
             " openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
             "  -days 2 -extfile server.ext -out server.pem &&"
             " openssl req -new $key -keyout client.key -out client.csr"
             "  -subj '/O=telerad test/CN=reader1' &&"
             " openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial"
             "  -days 2 -extfile client.ext -out client.pem &&"
             " openssl req -new $key -keyout rogue.key -out rogue.csr"
             "  -subj '/O=telerad test/CN=reader1' &&"
             " openssl x509 -req -in rogue.csr -CA other-ca.pem -CAkey other-ca.key"
             "  -CAcreateserial -days 2 -extfile client.ext -out rogue.pem;"
             "} > openssl.log 2>&1",
             cert_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "making test certificates failed: see %s/openssl.log\n", cert_dir);
        return -1;
    }
    return 0;
}

static int remove_certificates(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cert_dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_listen_port_zero),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_tcp_nodelay_both_ends),
        cmocka_unit_test(test_large_transfer),
        cmocka_unit_test(test_read_timeout),
        cmocka_unit_test(test_peer_close),
        cmocka_unit_test(test_write_to_closed_peer_no_sigpipe),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_accept_timeout),
        cmocka_unit_test(test_invalid_arguments),
        cmocka_unit_test(test_allocation_failure),
        cmocka_unit_test(test_tls_round_trip),
        cmocka_unit_test(test_tls_large_transfer),
        cmocka_unit_test(test_tls_hostname),
        cmocka_unit_test(test_tls_wrong_ca),
        cmocka_unit_test(test_tls_client_certificate),
        cmocka_unit_test(test_tls_versions_and_ciphers),
        cmocka_unit_test(test_tls_no_renegotiation),
        cmocka_unit_test(test_tls_pending_data),
        cmocka_unit_test(test_tls_peer_close_and_sigpipe),
        cmocka_unit_test(test_tls_start_after_accept),
        cmocka_unit_test(test_tls_configuration_errors),
        cmocka_unit_test(test_interop_openssl_s_server),
        cmocka_unit_test(test_interop_openssl_s_client),
    };
    int fds = count_open_fds();
    int failed = cmocka_run_group_tests(tests, make_certificates, remove_certificates);
    /* Sockets are not memory: ASan does not see a leaked one. */
    if (count_open_fds() != fds) {
        fprintf(stderr, "file descriptors leaked: %d open before the tests, %d after\n", fds,
                count_open_fds());
        return failed + 1;
    }
    return failed;
}
