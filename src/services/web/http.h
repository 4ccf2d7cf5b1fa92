/*
 * http.h - telerad's HTTP server: libmicrohttpd underneath (a pool of threads, each polling
 * its connections with epoll), HTTPS, keep-alive, a router, request bodies buffered under a
 * cap or streamed to the handler, responses from memory, from a file descriptor (sendfile) or
 * streamed from a callback so that nothing big is built in memory.
 *
 * A handler runs once the request body has arrived (streamed bodies: after the last chunk) and
 * answers with exactly one web_reply*() call; a handler that does not answer gets a 500.
 * Handlers may block (database, fsync): each pool thread serves its connections in turn, so
 * the pool is sized for that (threads, default 16).
 *
 * Errors are RFC 9457 problem+json: {"type","title","status","detail"}.
 *
 * Exported names start with web_.
 */
#ifndef WEB_HTTP_H
#define WEB_HTTP_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "error.h"

struct web_server;
struct web_request;

#define WEB_MAX_PARAMS 8
#define WEB_SIZE_UNKNOWN UINT64_MAX

/* Called once per route match before the body is read (e.g. to authenticate): return 0 to go
 * on, or answer with web_reply*() and return 1. */
typedef int (*web_filter_fn)(void *ctx, struct web_request *req);
/* Handle a request (the body is complete). */
typedef void (*web_handler_fn)(void *ctx, struct web_request *req);
/* Streamed request bodies: called for each chunk as it arrives. Return 0 to go on, negative to
 * stop reading (the handler still runs and should answer with an error: web_body_failed()). */
typedef int (*web_body_fn)(void *ctx, struct web_request *req, const void *data, size_t len);

struct web_route {
    const char *method;  /* "GET", "POST", ...; "GET" also answers HEAD */
    const char *pattern; /* "/dicom-web/studies/{}/series/{}": {} matches one path segment,
                            a trailing "*" matches the rest (also nothing); copied */
    web_handler_fn handler;
    web_body_fn body;    /* NULL: the body is buffered (max_body caps it) */
    size_t max_body;     /* cap on a buffered body; 0: the server's default (1 MiB) */
    void *ctx;
};

struct web_config {
    const char *host;          /* listen address (default 127.0.0.1) */
    int port;                  /* default 8080; 0 picks a free one (see web_server_port) */
    unsigned threads;          /* pool size (default 16) */
    unsigned max_connections;  /* default 1024 */
    unsigned timeout;          /* idle connection timeout in seconds (default 120) */
    const char *tls_cert;      /* PEM files: HTTPS when set (TLS 1.2 and 1.3 only) */
    const char *tls_key;
    web_filter_fn filter;      /* run before each routed request (NULL: none) */
    void *filter_ctx;
    /* Called when a request has been answered (also 404s, denials), with its status: for the
     * audit log. */
    void (*on_complete)(void *ctx, struct web_request *r, unsigned status);
    void (*log)(void *ctx, int level, const char *message); /* levels as scp.h (0 error ..) */
    void *log_ctx;
};

void web_config_init(struct web_config *c);

int web_server_new(const struct web_config *cfg, struct web_server **out, struct tr_error *err);
/* Add routes (before web_server_start). Matching tries routes in the order added. */
int web_server_route(struct web_server *s, const struct web_route *route);
int web_server_start(struct web_server *s, struct tr_error *err);
int web_server_port(const struct web_server *s);
/* Free `p` with free_fn when the server is freed (state that routes point to). */
int web_server_own(struct web_server *s, void *p, void (*free_fn)(void *));
/* Stop accepting and close connections; then free. */
void web_server_free(struct web_server *s);

/* ---- requests ----------------------------------------------------------------------------- */

const char *web_method(const struct web_request *r);
/* The path, percent-decoded, without the query. */
const char *web_path(const struct web_request *r);
/* The i-th {} of the route pattern (or the "*" rest, after them), decoded; NULL if none. */
const char *web_param(const struct web_request *r, unsigned i);
/* The first query argument of that name, or NULL. */
const char *web_query(const struct web_request *r, const char *name);
/* Every query argument in order: fn returns negative to stop. Names and values are decoded;
 * a value may be NULL ("?flag"). */
int web_query_each(const struct web_request *r,
                   int (*fn)(void *ctx, const char *name, const char *value), void *ctx);
const char *web_header(const struct web_request *r, const char *name);
/* Whether the request came over HTTPS. */
bool web_is_tls(const struct web_request *r);
/* The client's address, e.g. "127.0.0.1". */
const char *web_peer(const struct web_request *r);
/* The buffered body (NUL-terminated; NULL and 0 when there was none). */
const char *web_body(const struct web_request *r, size_t *len);
/* Whether the client accepts a media type (Accept header absent, "* / *", "type/ *" or the type
 * itself, with q > 0). */
bool web_accepts(const struct web_request *r, const char *media_type);
/* The request's own state for streamed bodies and handlers: set once, freed with free_fn
 * when the request ends. */
void web_set_state(struct web_request *r, void *state, void (*free_fn)(void *));
void *web_state(const struct web_request *r);
/* Memory that lives as long as the request (freed with free_fn when it ends). */
int web_attach(struct web_request *r, void *p, void (*free_fn)(void *));
/* The authenticated principal, set by the filter (opaque to the server). */
void web_set_user(struct web_request *r, void *user, void (*free_fn)(void *));
void *web_user(const struct web_request *r);
/* Whether a streamed body was cut short by the body callback or the client. */
bool web_body_failed(const struct web_request *r);

/* ---- responses (exactly one per request) -------------------------------------------------- */

/* Add a response header (before the reply call). */
int web_header_add(struct web_request *r, const char *name, const char *value);
/* Reply with bytes (copied). */
int web_reply(struct web_request *r, unsigned status, const char *content_type, const void *data,
              size_t len);
/* Reply with a buffer the server frees with tr_free after sending. */
int web_reply_owned(struct web_request *r, unsigned status, const char *content_type, void *data,
                    size_t len);
/* Reply with `len` bytes of a file from `offset` (the fd is closed by the server). */
int web_reply_fd(struct web_request *r, unsigned status, const char *content_type, int fd,
                 uint64_t offset, uint64_t len);
/* Stream a reply: read is called for the next bytes at `pos`, returns how many it wrote into
 * buf (at most max), 0 at the end, negative on failure (the connection is closed). size is the
 * total, or WEB_SIZE_UNKNOWN (chunked). done (may be NULL) frees ctx. */
int web_reply_stream(struct web_request *r, unsigned status, const char *content_type,
                     uint64_t size, ssize_t (*read)(void *ctx, uint64_t pos, char *buf, size_t max),
                     void *ctx, void (*done)(void *ctx));
/* RFC 9457 problem details, application/problem+json. */
int web_reply_problem(struct web_request *r, unsigned status, const char *title,
                      const char *detail_fmt, ...) __attribute__((format(printf, 4, 5)));
bool web_replied(const struct web_request *r);

/* Log through the server's log function. */
void web_log(const struct web_request *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
