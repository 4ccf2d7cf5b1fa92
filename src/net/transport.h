/*
 * transport.h - TCP connections, optionally under TLS (PS3.15 B.9 / BCP 195: TLS 1.2 or later),
 * for the DICOM upper layer (and anything else that speaks over a socket).
 *
 * Every socket has TCP_NODELAY set: DICOM exchanges many small PDUs, and Nagle's algorithm
 * with delayed ACKs stalls them (Debian's DCMTK leaves it on and crawls at ~20 instances/s on
 * loopback). Every read and write takes a timeout in milliseconds (< 0: wait forever) and
 * fails with TR_ETIMEOUT when it passes; a peer that closes gives TR_ECLOSED.
 *
 * The timeout bounds the whole call (a deadline, not an idle timer): net_write_all of 1 MB with
 * 5000 ms fails if the peer has not taken the last byte after 5 s, however steadily it reads.
 * After a read timeout the connection is still usable; after a write timeout (or any other
 * error) part of the data may have been sent, and the caller should close the connection.
 *
 * Error codes: TR_ETIMEOUT, TR_ECLOSED (the peer closed or reset the connection, with or
 * without a TLS close_notify), TR_EIO (an operating-system error; the message has strerror's
 * text), TR_EPROTO (a TLS protocol failure: no common version or cipher, a fatal alert from
 * the peer), TR_EDENIED (the peer's certificate failed verification or a required client
 * certificate was missing), TR_ENOTFOUND (host name does not resolve), TR_EINVAL, TR_ENOMEM.
 * Messages name the peer ("connect to pacs.example.org:104 (10.0.0.7:104): Connection
 * refused"). Functions without a tr_error keep the message of their last failure in the
 * connection (net_conn_error).
 *
 * SIGPIPE is never raised: plain sends use MSG_NOSIGNAL (SO_NOSIGPIPE where that is the
 * platform's way), and TLS records go through a BIO of ours that sends the same way. No
 * process-wide signal state is touched.
 *
 * Threads: a net_conn is used by one thread at a time; a net_tls is shared by any number of
 * threads and connections (it holds an SSL_CTX; connections take their own reference, so it
 * may be freed while connections made from it are still open).
 *
 * Sockets are non-blocking and close-on-exec. Host names are resolved with getaddrinfo(3),
 * which the timeout does not bound (use addresses where a stalled resolver matters).
 *
 * Exported names start with net_.
 */
#ifndef NET_TRANSPORT_H
#define NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

struct net_conn;
struct net_tls;

/* TLS configuration shared by many connections (an SSL_CTX). Files are PEM.
 * Start from net_tls_options_init(): a zeroed struct has verify_peer off. */
struct net_tls_options {
    const char *certificate;      /* our certificate chain, leaf first (server: required;
                                     client: optional, sent when the server asks) */
    const char *private_key;      /* its key (NULL: read from the certificate file) */
    const char *ca_file;          /* CAs to verify the peer with (NULL: system defaults) */
    bool verify_peer;             /* server: require and verify a client certificate;
                                     client: verify the server's certificate and its name
                                     (default on) */
    const char *ciphers;          /* TLS 1.2 cipher list in OpenSSL syntax (NULL: the BCP 195
                                     recommended ECDHE + AES-GCM / ChaCha20-Poly1305 ciphers);
                                     TLS 1.3 uses OpenSSL's AEAD suites */
};

/* Fill opt with the defaults: no files, verify_peer on, BCP 195 ciphers. */
void net_tls_options_init(struct net_tls_options *opt);

/* Make a TLS context: TLS 1.2 minimum, 1.3 allowed, no compression, no renegotiation, no
 * session resumption. Files are loaded (and the key checked against the certificate) now, so
 * that configuration errors surface at start-up with the file named. NULL on error. */
struct net_tls *net_tls_server_new(const struct net_tls_options *opt, struct tr_error *err);
struct net_tls *net_tls_client_new(const struct net_tls_options *opt, struct tr_error *err);
/* NULL is a no-op. */
void net_tls_free(struct net_tls *tls);

/* Listen on host:port ("0.0.0.0", "127.0.0.1", "::", a name: its first address that binds; NULL:
 * every IPv4 and IPv6 address, through one dual-stack socket where the system has IPv6; "::"
 * takes IPv4 too only if the system's default says so), port 0 picking a free port (see
 * net_listen_port), with SO_REUSEADDR; backlog <= 0 means SOMAXCONN. Returns the listening
 * socket (non-blocking, close-on-exec; the caller closes it with close(2)) or a negative error. */
int net_listen(const char *host, int port, int backlog, struct tr_error *err);
/* The port a listening (or any bound) socket has: > 0, or a negative error. */
int net_listen_port(int fd);

/* Accept one connection (waiting at most timeout_ms); with tls, complete the handshake too,
 * within the same timeout. A connection whose handshake fails is closed and the error returned
 * (the listener is fine: accept again). A server that must not let one slow client hold up its
 * accept loop passes tls = NULL here and calls net_start_tls in the connection's own thread. */
int net_accept(int listen_fd, struct net_tls *tls, int timeout_ms, struct net_conn **out,
               struct tr_error *err);
/* Connect to host:port (name or address; every address the name has is tried in turn within
 * the timeout), with TLS when tls is given, handshake included in the timeout. The server's
 * certificate is checked against host (a DNS name, or an IP address for an IP literal) when
 * tls verifies peers. */
int net_connect(const char *host, int port, struct net_tls *tls, int timeout_ms,
                struct net_conn **out, struct tr_error *err);
/* The same, but sni_host names the server for SNI and certificate verification (NULL: host),
 * e.g. to connect to an address while checking the certificate's DNS name. */
int net_connect_sni(const char *host, int port, struct net_tls *tls, const char *sni_host,
                    int timeout_ms, struct net_conn **out, struct tr_error *err);
/* Run the TLS handshake on a plain connection: as server or client according to how tls was
 * made (a client checks the name the connection was made with). On failure the connection is
 * unusable: close it. */
int net_start_tls(struct net_conn *c, struct net_tls *tls, int timeout_ms, struct tr_error *err);

/* Read at most n bytes (n >= 1): bytes read (>= 1), or TR_ECLOSED / TR_ETIMEOUT / TR_EIO /
 * TR_EPROTO. Data already decrypted and buffered inside TLS is returned without waiting. */
ssize_t net_read(struct net_conn *c, void *buf, size_t n, int timeout_ms);
/* Read exactly n bytes: 0, or an error as net_read (a close after some bytes is TR_ECLOSED). */
int net_read_full(struct net_conn *c, void *buf, size_t n, int timeout_ms);
/* Write all n bytes: 0, or TR_ECLOSED / TR_ETIMEOUT / TR_EIO / TR_EPROTO. */
int net_write_all(struct net_conn *c, const void *buf, size_t n, int timeout_ms);
/* Wait until a read would not block: 1 data is there (for TLS: application data, not just
 * protocol records), 0 timeout, or a negative error (TR_ECLOSED when the peer has closed). */
int net_wait_readable(struct net_conn *c, int timeout_ms);

/* Shut down (TLS close_notify, waiting at most 200 ms to send it; then TCP FIN) and free.
 * Does not wait for the peer's close_notify. NULL is a no-op. */
void net_close(struct net_conn *c);

/* "127.0.0.1:51234" / "[::1]:51234" (IPv4-mapped IPv6 addresses are shown as IPv4) */
const char *net_peer_address(const struct net_conn *c);
/* The peer's IP address alone, for access rules. */
const char *net_peer_ip(const struct net_conn *c);
/* TLS: the verified peer certificate's subject as an RFC 2253 string ("CN=reader1,O=Example",
 * UTF-8), "" if the peer was not asked for or did not verify a certificate, or without TLS. */
const char *net_tls_peer_subject(const struct net_conn *c);
/* The negotiated protocol ("TLSv1.3", "TLSv1.2"), "" without TLS. */
const char *net_tls_version(const struct net_conn *c);
bool net_is_tls(const struct net_conn *c);
/* The message of the connection's last failed read, write or wait ("" if none). */
const char *net_conn_error(const struct net_conn *c);
/* The socket, for socket options and readiness polling only: with TLS, reading or writing it
 * directly corrupts the stream, and a readable socket may hold no application data. */
int net_conn_fd(const struct net_conn *c);

#endif
