/*
 * http.c - the HTTP server on libmicrohttpd (see http.h).
 */
#include "common.h"
#include "http.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_BODY (1u << 20)
#define STREAM_BLOCK (256u * 1024)

struct owned {
    void *p;
    void (*free_fn)(void *);
};

struct web_server {
    struct web_config cfg;
    struct MHD_Daemon *daemon;
    struct web_route *routes;
    size_t nroutes, cap;
    struct owned *owned;
    size_t nowned, owned_cap;
    char *cert_pem, *key_pem;
    int port;
};

struct header {
    char *name, *value;
};

struct web_request {
    struct web_server *server;
    struct MHD_Connection *conn;
    const struct web_route *route;
    char method[16];
    char *path;
    char *params[WEB_MAX_PARAMS];
    struct tr_buf body;
    bool has_body;
    bool body_failed;
    bool too_large;
    bool replied;
    unsigned status;
    uint64_t sent_size;
    void *state;
    void (*state_free)(void *);
    void *user;
    void (*user_free)(void *);
    struct header headers[16];
    unsigned nheaders;
    struct {
        void *p;
        void (*free_fn)(void *);
    } attached[8];
    unsigned nattached;
    char peer[64];
    struct timespec started;
};

static void logf_(struct web_server *s, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(struct web_server *s, int level, const char *fmt, ...)
{
    if (!s->cfg.log)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    s->cfg.log(s->cfg.log_ctx, level, msg);
}

void web_log(const struct web_request *r, int level, const char *fmt, ...)
{
    if (!r->server->cfg.log)
        return;
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    r->server->cfg.log(r->server->cfg.log_ctx, level, msg);
}

void web_config_init(struct web_config *c)
{
    memset(c, 0, sizeof(*c));
    c->host = "127.0.0.1";
    c->port = 8080;
    c->threads = 16;
    c->max_connections = 1024;
    c->timeout = 120;
}

int web_server_new(const struct web_config *cfg, struct web_server **out, struct tr_error *err)
{
    struct web_server *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    s->cfg = *cfg;
    *out = s;
    return 0;
}

int web_server_route(struct web_server *s, const struct web_route *route)
{
    if (s->nroutes == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        struct web_route *r = tr_reallocarray(s->routes, cap, sizeof(*r));
        if (!r)
            return TR_ENOMEM;
        s->routes = r;
        s->cap = cap;
    }
    char *pattern = tr_strdup(route->pattern);
    if (!pattern)
        return TR_ENOMEM;
    s->routes[s->nroutes] = *route;
    s->routes[s->nroutes++].pattern = pattern;
    return 0;
}

int web_server_own(struct web_server *s, void *p, void (*free_fn)(void *))
{
    if (s->nowned == s->owned_cap) {
        size_t cap = s->owned_cap ? s->owned_cap * 2 : 8;
        struct owned *o = tr_reallocarray(s->owned, cap, sizeof(*o));
        if (!o)
            return TR_ENOMEM;
        s->owned = o;
        s->owned_cap = cap;
    }
    s->owned[s->nowned++] = (struct owned){p, free_fn};
    return 0;
}

/* ---- routing ------------------------------------------------------------------------------ */

/* Match `path` against `pattern`; on success fill params (allocated copies). */
static bool route_match(const char *pattern, const char *path, char **params)
{
    unsigned np = 0;
    const char *p = pattern, *s = path;
    while (*p) {
        if (p[0] == '*' && p[1] == '\0') {
            if (np < WEB_MAX_PARAMS)
                params[np++] = tr_strdup(s);
            return true;
        }
        if (p[0] == '{' && p[1] == '}') {
            const char *end = strchr(s, '/');
            size_t n = end ? (size_t)(end - s) : strlen(s);
            if (n == 0 || np >= WEB_MAX_PARAMS)
                goto fail;
            params[np] = tr_malloc(n + 1);
            if (!params[np])
                goto fail;
            memcpy(params[np], s, n);
            params[np++][n] = '\0';
            s += n;
            p += 2;
            continue;
        }
        if (*p != *s)
            goto fail;
        p++;
        s++;
    }
    if (*s == '\0')
        return true;
fail:
    for (unsigned i = 0; i < np; i++) {
        tr_free(params[i]);
        params[i] = NULL;
    }
    return false;
}

/* ---- requests ----------------------------------------------------------------------------- */

const char *web_method(const struct web_request *r) { return r->method; }
const char *web_path(const struct web_request *r) { return r->path; }
const char *web_peer(const struct web_request *r) { return r->peer; }
bool web_replied(const struct web_request *r) { return r->replied; }
bool web_is_tls(const struct web_request *r) { return r->server->cfg.tls_cert != NULL; }
bool web_body_failed(const struct web_request *r) { return r->body_failed; }
void *web_state(const struct web_request *r) { return r->state; }
void *web_user(const struct web_request *r) { return r->user; }

const char *web_param(const struct web_request *r, unsigned i)
{
    return i < WEB_MAX_PARAMS ? r->params[i] : NULL;
}

const char *web_query(const struct web_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

struct each_ctx {
    int (*fn)(void *ctx, const char *name, const char *value);
    void *ctx;
    int rc;
};

static enum MHD_Result each_arg(void *cls, enum MHD_ValueKind kind, const char *key,
                                const char *value)
{
    (void)kind;
    struct each_ctx *e = cls;
    e->rc = e->fn(e->ctx, key, value);
    return e->rc < 0 ? MHD_NO : MHD_YES;
}

int web_query_each(const struct web_request *r,
                   int (*fn)(void *ctx, const char *name, const char *value), void *ctx)
{
    struct each_ctx e = {fn, ctx, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, each_arg, &e);
    return e.rc < 0 ? e.rc : 0;
}

const char *web_header(const struct web_request *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *web_body(const struct web_request *r, size_t *len)
{
    if (len)
        *len = r->body.len;
    return r->body.data;
}

void web_set_state(struct web_request *r, void *state, void (*free_fn)(void *))
{
    r->state = state;
    r->state_free = free_fn;
}

int web_attach(struct web_request *r, void *p, void (*free_fn)(void *))
{
    if (r->nattached == TR_ARRAY_SIZE(r->attached)) {
        free_fn(p);
        return TR_ELIMIT;
    }
    r->attached[r->nattached].p = p;
    r->attached[r->nattached++].free_fn = free_fn;
    return 0;
}

void web_set_user(struct web_request *r, void *user, void (*free_fn)(void *))
{
    if (r->user && r->user_free)
        r->user_free(r->user);
    r->user = user;
    r->user_free = free_fn;
}

/* Compare a media range (e.g. "image/ *", without parameters) with a media type. */
static bool range_covers(const char *range, size_t n, const char *type)
{
    if (n == 3 && memcmp(range, "*/*", 3) == 0)
        return true;
    if (n >= 2 && range[n - 1] == '*' && range[n - 2] == '/')
        return strncasecmp(range, type, n - 1) == 0;
    return strlen(type) == n && strncasecmp(range, type, n) == 0;
}

bool web_accepts(const struct web_request *r, const char *media_type)
{
    const char *accept = web_header(r, "Accept");
    if (!accept || !*accept)
        return true;
    const char *p = accept;
    while (*p) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ';' && *p != ',' && *p != ' ')
            p++;
        size_t n = (size_t)(p - start);
        double q = 1.0;
        while (*p && *p != ',') {
            if (*p == ';') {
                p++;
                while (*p == ' ')
                    p++;
                if (p[0] == 'q' && p[1] == '=')
                    q = strtod(p + 2, NULL);
                continue;
            }
            p++;
        }
        if (n && q > 0 && range_covers(start, n, media_type))
            return true;
    }
    return false;
}

/* ---- responses ---------------------------------------------------------------------------- */

int web_header_add(struct web_request *r, const char *name, const char *value)
{
    if (r->nheaders >= TR_ARRAY_SIZE(r->headers))
        return TR_ELIMIT;
    r->headers[r->nheaders].name = tr_strdup(name);
    r->headers[r->nheaders].value = tr_strdup(value);
    if (!r->headers[r->nheaders].name || !r->headers[r->nheaders].value) {
        tr_free(r->headers[r->nheaders].name);
        tr_free(r->headers[r->nheaders].value);
        return TR_ENOMEM;
    }
    r->nheaders++;
    return 0;
}

static int queue(struct web_request *r, unsigned status, const char *content_type,
                 struct MHD_Response *resp, uint64_t size)
{
    if (!resp)
        return TR_ENOMEM;
    if (r->replied) {
        MHD_destroy_response(resp);
        logf_(r->server, 0, "internal: second reply to %s %s", r->method, r->path);
        return TR_EINVAL;
    }
    if (content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    for (unsigned i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    /* Patient data must not be cached by shared caches or sniffed as something else. */
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    if (!MHD_get_response_header(resp, "Cache-Control"))
        MHD_add_response_header(resp, "Cache-Control", "no-store");
    if (r->server->cfg.tls_cert)
        MHD_add_response_header(resp, "Strict-Transport-Security", "max-age=31536000");
    enum MHD_Result ok = MHD_queue_response(r->conn, status, resp);
    MHD_destroy_response(resp);
    r->replied = true;
    r->status = status;
    r->sent_size = size;
    return ok == MHD_YES ? 0 : TR_EIO;
}

int web_reply(struct web_request *r, unsigned status, const char *content_type, const void *data,
              size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    return queue(r, status, content_type, resp, len);
}

static void free_owned(void *p) { tr_free(p); }

int web_reply_owned(struct web_request *r, unsigned status, const char *content_type, void *data,
                    size_t len)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer_with_free_callback(len, data, free_owned);
    if (!resp)
        tr_free(data);
    return queue(r, status, content_type, resp, len);
}

int web_reply_fd(struct web_request *r, unsigned status, const char *content_type, int fd,
                 uint64_t offset, uint64_t len)
{
    struct MHD_Response *resp = MHD_create_response_from_fd_at_offset64(len, fd, offset);
    if (!resp)
        close(fd);
    return queue(r, status, content_type, resp, len);
}

struct stream {
    ssize_t (*read)(void *ctx, uint64_t pos, char *buf, size_t max);
    void *ctx;
    void (*done)(void *ctx);
};

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    struct stream *st = cls;
    ssize_t n = st->read(st->ctx, pos, buf, max);
    if (n < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (n == 0)
        return MHD_CONTENT_READER_END_OF_STREAM;
    return n;
}

static void stream_free(void *cls)
{
    struct stream *st = cls;
    if (st->done)
        st->done(st->ctx);
    tr_free(st);
}

static ssize_t head_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)cls;
    (void)pos;
    (void)buf;
    (void)max;
    return MHD_CONTENT_READER_END_OF_STREAM;
}

int web_reply_stream(struct web_request *r, unsigned status, const char *content_type,
                     uint64_t size, ssize_t (*read)(void *ctx, uint64_t pos, char *buf, size_t max),
                     void *ctx, void (*done)(void *ctx))
{
    if (size == WEB_SIZE_UNKNOWN && strcmp(r->method, "HEAD") == 0) {
        /* libmicrohttpd 0.9.75 writes the last-chunk "0\r\n\r\n" after the headers of a
         * chunked answer to HEAD, which the client reads as the start of the next response.
         * Answer HEAD as HTTP/1.0 would: no Transfer-Encoding, no (wrong) Content-Length, and
         * the connection closed after the headers. */
        if (done)
            done(ctx);
        struct MHD_Response *resp =
            MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, head_read, NULL, NULL);
        if (resp)
            MHD_set_response_options(resp, MHD_RF_HTTP_1_0_SERVER, MHD_RO_END);
        return queue(r, status, content_type, resp, 0);
    }
    struct stream *st = tr_calloc(1, sizeof(*st));
    if (!st) {
        if (done)
            done(ctx);
        return web_reply_problem(r, 500, "Out of memory", "cannot start the response");
    }
    *st = (struct stream){read, ctx, done};
    struct MHD_Response *resp = MHD_create_response_from_callback(
        size == WEB_SIZE_UNKNOWN ? MHD_SIZE_UNKNOWN : size, STREAM_BLOCK, stream_read, st,
        stream_free);
    if (!resp) {
        stream_free(st);
        return TR_ENOMEM;
    }
    return queue(r, status, content_type, resp, size);
}

int web_reply_problem(struct web_request *r, unsigned status, const char *title,
                      const char *detail_fmt, ...)
{
    char detail[1024];
    va_list ap;
    va_start(ap, detail_fmt);
    vsnprintf(detail, sizeof(detail), detail_fmt, ap);
    va_end(ap);
    json_t *j = json_pack("{s:s,s:s,s:i,s:s}", "type", "about:blank", "title", title, "status",
                          (int)status, "detail", detail);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!text)
        return web_reply(r, status, "text/plain", title, strlen(title));
    int rc = web_reply(r, status, "application/problem+json", text, strlen(text));
    free(text);
    return rc;
}

/* ---- libmicrohttpd callbacks -------------------------------------------------------------- */

static void request_free(struct web_request *r)
{
    for (unsigned i = r->nattached; i-- > 0;)
        r->attached[i].free_fn(r->attached[i].p);
    if (r->state && r->state_free)
        r->state_free(r->state);
    if (r->user && r->user_free)
        r->user_free(r->user);
    for (unsigned i = 0; i < WEB_MAX_PARAMS; i++)
        tr_free(r->params[i]);
    for (unsigned i = 0; i < r->nheaders; i++) {
        tr_free(r->headers[i].name);
        tr_free(r->headers[i].value);
    }
    tr_buf_release(&r->body);
    tr_free(r->path);
    tr_free(r);
}

static void peer_of(struct MHD_Connection *c, char *out, size_t size)
{
    snprintf(out, size, "?");
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    socklen_t len = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in);
    getnameinfo(sa, len, out, (socklen_t)size, NULL, 0, NI_NUMERICHOST);
}

/* Find the route; answer 404 / 405 when there is none. */
static void route_request(struct web_server *s, struct web_request *r)
{
    bool path_known = false;
    char allow[128] = "";
    const char *method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
    for (size_t i = 0; i < s->nroutes; i++) {
        char *params[WEB_MAX_PARAMS] = {0};
        if (!route_match(s->routes[i].pattern, r->path, params))
            continue;
        if (strcmp(s->routes[i].method, method) == 0) {
            memcpy(r->params, params, sizeof(params));
            r->route = &s->routes[i];
            return;
        }
        for (unsigned k = 0; k < WEB_MAX_PARAMS; k++)
            tr_free(params[k]);
        if (!strstr(allow, s->routes[i].method)) {
            size_t used = strlen(allow);
            snprintf(allow + used, sizeof(allow) - used, "%s%s", used ? ", " : "",
                     s->routes[i].method);
        }
        path_known = true;
    }
    if (path_known) {
        web_header_add(r, "Allow", allow);
        web_reply_problem(r, 405, "Method Not Allowed", "%s is not allowed on this resource",
                          r->method);
    } else {
        web_reply_problem(r, 404, "Not Found", "no resource at this path");
    }
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)version;
    struct web_server *s = cls;
    struct web_request *r = *con_cls;
    if (!r) {
        r = tr_calloc(1, sizeof(*r));
        if (!r)
            return MHD_NO;
        *con_cls = r;
        r->server = s;
        r->conn = conn;
        clock_gettime(CLOCK_MONOTONIC, &r->started);
        snprintf(r->method, sizeof(r->method), "%s", method);
        r->path = tr_strdup(url);
        if (!r->path)
            return MHD_NO;
        peer_of(conn, r->peer, sizeof(r->peer));
        route_request(s, r);
        if (r->replied)
            return MHD_YES;
        size_t cap = r->route->max_body ? r->route->max_body : DEFAULT_MAX_BODY;
        tr_buf_init(&r->body, cap);
        const char *cl = web_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
        if (!r->route->body && cl && strtoull(cl, NULL, 10) > cap) {
            web_reply_problem(r, 413, "Content Too Large", "the body may be at most %zu bytes",
                              cap);
            return MHD_YES;
        }
        if (s->cfg.filter && s->cfg.filter(s->cfg.filter_ctx, r) != 0 && !r->replied)
            web_reply_problem(r, 403, "Forbidden", "access denied");
        return MHD_YES;
    }
    if (*upload_data_size) {
        r->has_body = true;
        if (!r->replied && !r->body_failed) {
            if (r->route->body) {
                if (r->route->body(r->route->ctx, r, upload_data, *upload_data_size) < 0)
                    r->body_failed = true;
            } else if (tr_buf_add(&r->body, upload_data, *upload_data_size) < 0) {
                r->too_large = r->body_failed = true;
            }
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (r->replied)
        return MHD_YES;
    if (r->too_large) {
        web_reply_problem(r, 413, "Content Too Large", "the body may be at most %zu bytes",
                          r->body.max);
        return MHD_YES;
    }
    r->route->handler(r->route->ctx, r);
    if (!r->replied) {
        logf_(s, 0, "internal: no answer to %s %s", r->method, r->path);
        web_reply_problem(r, 500, "Internal Server Error", "the request was not answered");
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)conn;
    struct web_server *s = cls;
    struct web_request *r = *con_cls;
    if (!r)
        return;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double ms = (double)(now.tv_sec - r->started.tv_sec) * 1e3 +
                (double)(now.tv_nsec - r->started.tv_nsec) / 1e6;
    if (s->cfg.on_complete)
        s->cfg.on_complete(s->cfg.filter_ctx, r, r->status);
    /* The path holds UIDs, never names or IDs; query strings (which may) are not logged. */
    int level = r->status >= 500 || toe != MHD_REQUEST_TERMINATED_COMPLETED_OK ? 1 : 3;
    logf_(s, level, "http %s %s %s %u %.1fms%s", r->peer, r->method, r->path, r->status, ms,
          toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? ""
          : toe == MHD_REQUEST_TERMINATED_CLIENT_ABORT ? " (client went away)"
          : toe == MHD_REQUEST_TERMINATED_TIMEOUT_REACHED ? " (timeout)"
                                                           : " (aborted)");
    request_free(r);
    *con_cls = NULL;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    struct web_server *s = cls;
    if (!s->cfg.log)
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    s->cfg.log(s->cfg.log_ctx, 2, msg);
}

static char *read_file(const char *path, struct tr_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        tr_error_set(err, TR_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    char chunk[8192];
    ssize_t n;
    while ((n = read(fd, chunk, sizeof(chunk))) > 0) {
        if (tr_buf_add(&b, chunk, (size_t)n) < 0) {
            n = -1;
            errno = EFBIG;
            break;
        }
    }
    int e = errno;
    close(fd);
    if (n < 0) {
        tr_buf_release(&b);
        tr_error_set(err, TR_EIO, "%s: %s", path, strerror(e));
        return NULL;
    }
    if (tr_buf_add(&b, "", 0) < 0 || !b.data) {
        tr_buf_release(&b);
        tr_error_set(err, TR_EIO, "%s: empty", path);
        return NULL;
    }
    return tr_buf_detach(&b, NULL);
}

int web_server_start(struct web_server *s, struct tr_error *err)
{
    struct addrinfo hints = {.ai_flags = AI_PASSIVE | AI_NUMERICSERV, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    char port[16];
    snprintf(port, sizeof(port), "%d", s->cfg.port);
    int gai = getaddrinfo(s->cfg.host, port, &hints, &ai);
    if (gai != 0)
        return tr_error_set(err, TR_EINVAL, "HTTP address %s: %s", s->cfg.host, gai_strerror(gai));
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG |
                     MHD_USE_TURBO;
    if (ai->ai_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    struct MHD_OptionItem opts[16];
    unsigned n = 0;
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_EXTERNAL_LOGGER, (intptr_t)mhd_log, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SOCK_ADDR, 0, ai->ai_addr};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_THREAD_POOL_SIZE, s->cfg.threads, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_LIMIT, s->cfg.max_connections, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_TIMEOUT, s->cfg.timeout, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_CONNECTION_MEMORY_LIMIT, 128 * 1024, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_LISTEN_BACKLOG_SIZE, 256, NULL};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_NOTIFY_COMPLETED, (intptr_t)on_completed, s};
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1, NULL};
    if (s->cfg.tls_cert) {
        if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
            freeaddrinfo(ai);
            return tr_error_set(err, TR_EUNSUPPORTED, "this libmicrohttpd has no TLS");
        }
        if (!s->cfg.tls_key) {
            freeaddrinfo(ai);
            return tr_error_set(err, TR_EINVAL, "HTTPS needs a key as well as a certificate");
        }
        s->cert_pem = read_file(s->cfg.tls_cert, err);
        s->key_pem = s->cert_pem ? read_file(s->cfg.tls_key, err) : NULL;
        if (!s->key_pem) {
            freeaddrinfo(ai);
            return err ? err->code : TR_EIO;
        }
        flags |= MHD_USE_TLS;
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->cert_pem};
        opts[n++] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->key_pem};
        /* BCP 195: TLS 1.2 and 1.3 only, the server's cipher order. */
        opts[n++] = (struct MHD_OptionItem){
            MHD_OPTION_HTTPS_PRIORITIES, 0,
            (void *)"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:%SERVER_PRECEDENCE"};
    }
    opts[n++] = (struct MHD_OptionItem){MHD_OPTION_END, 0, NULL};
    s->daemon = MHD_start_daemon(flags, 0, NULL, NULL, on_request, s, MHD_OPTION_ARRAY, opts,
                                 MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!s->daemon)
        return tr_error_set(err, TR_EIO, "cannot listen for HTTP on %s port %d (in use, or a bad "
                                         "certificate?)", s->cfg.host, s->cfg.port);
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(s->daemon, MHD_DAEMON_INFO_BIND_PORT);
    s->port = di ? di->port : s->cfg.port;
    return 0;
}

int web_server_port(const struct web_server *s) { return s->port; }

void web_server_free(struct web_server *s)
{
    if (!s)
        return;
    if (s->daemon)
        MHD_stop_daemon(s->daemon);
    for (size_t i = 0; i < s->nroutes; i++)
        tr_free((char *)s->routes[i].pattern);
    tr_free(s->routes);
    for (size_t i = s->nowned; i-- > 0;)
        s->owned[i].free_fn(s->owned[i].p);
    tr_free(s->owned);
    if (s->key_pem)
        explicit_bzero(s->key_pem, strlen(s->key_pem));
    tr_free(s->cert_pem);
    tr_free(s->key_pem);
    tr_free(s);
}
