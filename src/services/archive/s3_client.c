/*
 * s3_client.c - the HTTP side of the S3 backend (see s3_client.h): URLs, SigV4 by libcurl,
 * retries with backoff, errors that say what to fix, and the encodings, digests and XML that
 * go with them.
 */
#include "common.h"
#include "s3_client.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAX_IDLE_HANDLES 16
#define ERROR_BODY_MAX 8192
#define IO_CHUNK (1u << 20)

struct s3_curl_slot {
    CURL *curl;
    struct s3_curl_slot *next;
};

void s3_log(struct s3_client *c, int level, const char *fmt, ...)
{
    if (!c->log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    c->log(c->log_ctx, level, line);
}

/* ---- encodings and digests ---------------------------------------------------------------- */

void s3_hex(const unsigned char *bin, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 15];
    }
    out[2 * n] = '\0';
}

void s3_base64(const unsigned char *bin, size_t n, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, bin, (int)n);
}

/* AWS URI encoding: unreserved characters stay, everything else is %XX (upper case); '/'
 * stays in paths (keep_slash), not in query values. */
int s3_uri_encode(struct tr_buf *b, const char *s, bool keep_slash)
{
    static const char digits[] = "0123456789ABCDEF";
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char c = *p;
        bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        int rc = plain ? tr_buf_addc(b, (char)c)
                       : tr_buf_addf(b, "%%%c%c", digits[c >> 4], digits[c & 15]);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Hash a region of a file: MD5 and SHA-256. */
int s3_digest_region(int fd, uint64_t offset, uint64_t length, unsigned char md5[16],
                     unsigned char sha256[32], EVP_MD_CTX *also)
{
    EVP_MD_CTX *a = EVP_MD_CTX_new(), *b = EVP_MD_CTX_new();
    uint8_t *buf = tr_malloc(IO_CHUNK);
    int rc = 0;
    if (!a || !b || !buf || !EVP_DigestInit_ex(a, EVP_md5(), NULL) ||
        !EVP_DigestInit_ex(b, EVP_sha256(), NULL)) {
        rc = TR_ENOMEM;
        goto out;
    }
    for (uint64_t done = 0; done < length;) {
        size_t want = (size_t)TR_MIN((uint64_t)IO_CHUNK, length - done);
        ssize_t n = pread(fd, buf, want, (off_t)(offset + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = TR_EIO;
            goto out;
        }
        EVP_DigestUpdate(a, buf, (size_t)n);
        EVP_DigestUpdate(b, buf, (size_t)n);
        if (also)
            EVP_DigestUpdate(also, buf, (size_t)n);
        done += (uint64_t)n;
    }
    EVP_DigestFinal_ex(a, md5, NULL);
    EVP_DigestFinal_ex(b, sha256, NULL);
out:
    EVP_MD_CTX_free(a);
    EVP_MD_CTX_free(b);
    tr_free(buf);
    return rc;
}

/* ---- a little XML (S3's answers are flat and machine-written) ----------------------------- */

/* The content of the first <tag>...</tag> in [p, end): its start and length, and where the
 * search may go on. NULL when there is none. */
const char *s3_xml_find(const char *p, const char *end, const char *tag, size_t *len,
                            const char **after)
{
    char open[64], close[64];
    int no = snprintf(open, sizeof(open), "<%s>", tag);
    int nc = snprintf(close, sizeof(close), "</%s>", tag);
    const char *s = memmem(p, (size_t)(end - p), open, (size_t)no);
    if (!s)
        return NULL;
    s += no;
    const char *e = memmem(s, (size_t)(end - s), close, (size_t)nc);
    if (!e)
        return NULL;
    *len = (size_t)(e - s);
    if (after)
        *after = e + nc;
    return s;
}

/* Decode character references into out; false when it does not fit. */
static bool xml_text(const char *p, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = p[i];
        if (c == '&') {
            static const struct {
                const char *name;
                char c;
            } ents[] = {{"amp;", '&'}, {"lt;", '<'}, {"gt;", '>'}, {"quot;", '"'},
                        {"apos;", '\''}};
            bool done = false;
            for (size_t k = 0; k < TR_ARRAY_SIZE(ents) && !done; k++) {
                size_t n = strlen(ents[k].name);
                if (len - i - 1 >= n && memcmp(p + i + 1, ents[k].name, n) == 0) {
                    c = ents[k].c;
                    i += n;
                    done = true;
                }
            }
            if (!done && i + 2 < len && p[i + 1] == '#') {
                char *endp;
                bool hexa = p[i + 2] == 'x';
                unsigned long v = strtoul(p + i + (hexa ? 3 : 2), &endp, hexa ? 16 : 10);
                if (endp < p + len && *endp == ';' && v > 0 && v < 128) {
                    c = (char)v;
                    i = (size_t)(endp - p);
                }
            }
        }
        if (o + 1 >= size)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

bool s3_xml_get(const char *p, const char *end, const char *tag, char *out, size_t size)
{
    size_t len;
    const char *v = s3_xml_find(p, end, tag, &len, NULL);
    return v && xml_text(v, len, out, size);
}

/* ---- requests ----------------------------------------------------------------------------- */


void s3_request_init(struct s3_request *r, const char *method, const char *key)
{
    memset(r, 0, sizeof(*r));
    r->method = method;
    r->key = key;
    r->body_fd = -1;
    r->out_fd = -1;
}

static CURL *take_handle(struct s3_client *s)
{
    pthread_mutex_lock(&s->lock);
    struct s3_curl_slot *slot = s->idle;
    if (slot) {
        s->idle = slot->next;
        s->idle_count--;
    }
    pthread_mutex_unlock(&s->lock);
    CURL *c;
    if (slot) {
        c = slot->curl;
        tr_free(slot);
        curl_easy_reset(c); /* keeps its connection */
    } else {
        c = curl_easy_init();
    }
    return c;
}

static void give_handle(struct s3_client *s, CURL *c)
{
    struct s3_curl_slot *slot = tr_malloc(sizeof(*slot));
    pthread_mutex_lock(&s->lock);
    if (slot && s->idle_count < MAX_IDLE_HANDLES) {
        slot->curl = c;
        slot->next = s->idle;
        s->idle = slot;
        s->idle_count++;
        c = NULL;
        slot = NULL;
    }
    pthread_mutex_unlock(&s->lock);
    tr_free(slot);
    if (c)
        curl_easy_cleanup(c);
}

static size_t on_header(char *data, size_t size, size_t count, void *ctx)
{
    struct s3_request *r = ctx;
    size_t n = size * count;
    char line[512];
    size_t k = TR_MIN(n, sizeof(line) - 1);
    memcpy(line, data, k);
    line[k] = '\0';
    while (k && (line[k - 1] == '\r' || line[k - 1] == '\n'))
        line[--k] = '\0';
    if (strncmp(line, "HTTP/", 5) == 0) {
        const char *sp = strchr(line, ' ');
        r->status = sp ? strtol(sp + 1, NULL, 10) : 0;
        /* a new response (after 100 Continue): forget the previous one's headers */
        r->has_content_length = r->has_total = false;
        r->etag[0] = r->stored_sha256[0] = '\0';
        return n;
    }
    char *colon = strchr(line, ':');
    if (!colon)
        return n;
    *colon = '\0';
    const char *v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    if (strcasecmp(line, "Content-Length") == 0) {
        r->content_length = strtoull(v, NULL, 10);
        r->has_content_length = true;
    } else if (strcasecmp(line, "ETag") == 0) {
        snprintf(r->etag, sizeof(r->etag), "%s", v);
    } else if (strcasecmp(line, "x-amz-meta-sha256") == 0) {
        snprintf(r->stored_sha256, sizeof(r->stored_sha256), "%s", v);
    } else if (strcasecmp(line, "Content-Range") == 0) {
        /* "bytes 0-99/1234" or "bytes * /1234" (416) */
        const char *slash = strrchr(v, '/');
        if (slash && slash[1] != '*') {
            r->total_size = strtoull(slash + 1, NULL, 10);
            r->has_total = true;
        }
        const char *sp = strchr(v, ' ');
        if (sp && sp[1] >= '0' && sp[1] <= '9')
            r->range_start = strtoull(sp + 1, NULL, 10);
    }
    return n;
}

static int write_fd(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return TR_EIO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static size_t on_body(char *data, size_t size, size_t count, void *ctx)
{
    struct s3_request *r = ctx;
    size_t n = size * count;
    if (r->status < 200 || r->status > 299) {
        tr_buf_add(&r->error_body, data, TR_MIN(n, ERROR_BODY_MAX - r->error_body.len));
        return n;
    }
    int rc = 0;
    switch (r->out) {
    case S3_OUT_DISCARD: break;
    case S3_OUT_BUF: rc = tr_buf_add(r->out_buf, data, n); break;
    case S3_OUT_FD: rc = write_fd(r->out_fd, data, n); break;
    case S3_OUT_SINK:
        r->delivered = true;
        rc = tr_sink_write(r->out_sink, data, n);
        break;
    case S3_OUT_MEM:
        if (r->received + n > r->out_mem_size)
            rc = TR_ELIMIT;
        else
            memcpy((char *)r->out_mem + r->received, data, n);
        break;
    }
    if (rc) {
        r->local_error = rc;
        return 0; /* CURLE_WRITE_ERROR */
    }
    if (r->out_sha256)
        EVP_DigestUpdate(r->out_sha256, data, n);
    r->received += n;
    return n;
}

static size_t on_read(char *buffer, size_t size, size_t count, void *ctx)
{
    struct s3_request *r = ctx;
    size_t max = size * count;
    if (r->body_mem) {
        size_t k = (size_t)TR_MIN((uint64_t)max, r->body_mem_length - r->sent);
        memcpy(buffer, r->body_mem + r->sent, k);
        r->sent += k;
        return k;
    }
    size_t want = (size_t)TR_MIN((uint64_t)max, r->body_length - r->sent);
    if (want == 0)
        return 0;
    for (;;) {
        ssize_t n = pread(r->body_fd, buffer, want, (off_t)(r->body_offset + r->sent));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            r->local_error = TR_EIO;
            return CURL_READFUNC_ABORT;
        }
        r->sent += (uint64_t)n;
        return (size_t)n;
    }
}

static int on_seek(void *ctx, curl_off_t offset, int origin)
{
    struct s3_request *r = ctx;
    uint64_t len = r->body_mem ? r->body_mem_length : r->body_length;
    if (origin != SEEK_SET || offset < 0 || (uint64_t)offset > len)
        return CURL_SEEKFUNC_CANTSEEK;
    r->sent = (uint64_t)offset;
    return CURL_SEEKFUNC_OK;
}

static int build_url(struct s3_client *s, const struct s3_request *r, struct tr_buf *url)
{
    int rc;
    if (s->virtual_host)
        rc = tr_buf_addf(url, "%s://%s.%s/", s->scheme, s->bucket, s->host);
    else
        rc = tr_buf_addf(url, "%s://%s/%s%s", s->scheme, s->host, s->bucket, r->key ? "/" : "");
    if (rc == 0 && r->key) {
        rc = s3_uri_encode(url, s->prefix, true);
        if (rc == 0)
            rc = s3_uri_encode(url, r->key, true);
    }
    if (rc == 0 && r->query)
        rc = tr_buf_addf(url, "?%s", r->query);
    return rc;
}

static bool retryable_status(const struct s3_request *r)
{
    return r->status == 500 || r->status == 502 || r->status == 503 || r->status == 504 ||
           r->status == 429 ||
           (r->status == 400 && strcmp(r->code, "RequestTimeout") == 0);
}

static bool retryable_curl(CURLcode c)
{
    switch (c) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR: return true;
    default: return false;
    }
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Reset what one attempt produced, so that the next starts clean. */
static int attempt_reset(struct s3_request *r)
{
    r->status = 0;
    r->has_content_length = r->has_total = false;
    r->etag[0] = r->stored_sha256[0] = r->code[0] = r->message[0] = '\0';
    r->received = r->sent = 0;
    r->local_error = 0;
    tr_buf_reset(&r->error_body);
    if (r->out == S3_OUT_BUF)
        tr_buf_reset(r->out_buf);
    if (r->out == S3_OUT_FD) {
        if (ftruncate(r->out_fd, 0) < 0 || lseek(r->out_fd, 0, SEEK_SET) < 0)
            return TR_EIO;
    }
    if (r->out_sha256 && !EVP_DigestInit_ex(r->out_sha256, EVP_sha256(), NULL))
        return TR_ENOMEM;
    return 0;
}

/* One attempt. Returns the curl code; r->status is the HTTP status (0 if none arrived). */
static CURLcode attempt(struct s3_client *s, struct s3_request *r, const char *url, char *curl_err)
{
    CURL *c = take_handle(s);
    if (!c)
        return CURLE_OUT_OF_MEMORY;
    struct curl_slist *h = NULL;
    char line[256];
    snprintf(line, sizeof(line), "x-amz-content-sha256: %s",
             r->content_sha256[0] ? r->content_sha256 : S3_EMPTY_SHA256);
    h = curl_slist_append(h, line);
    if (r->content_md5[0]) {
        snprintf(line, sizeof(line), "Content-MD5: %s", r->content_md5);
        h = curl_slist_append(h, line);
    }
    if (r->meta_sha256) {
        snprintf(line, sizeof(line), "x-amz-meta-sha256: %s", r->meta_sha256);
        h = curl_slist_append(h, line);
    }
    if (r->content_type) {
        snprintf(line, sizeof(line), "Content-Type: %s", r->content_type);
        h = curl_slist_append(h, line);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s->sigv4);
    curl_easy_setopt(c, CURLOPT_USERNAME, s->access_key);
    curl_easy_setopt(c, CURLOPT_PASSWORD, s->secret_key);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, curl_err);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)s->connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, (long)s->stall_timeout_s);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    /* libcurl sends "Expect: 100-continue" with every PUT body. Wait for the store's "100
     * Continue" (a round trip) rather than send the body at once: a "100" that arrives after
     * the body is acknowledged late (delayed ACK), and the store's "200", held back by Nagle
     * behind it, then comes 40 ms late: 6 ms per 0.5 MB PUT become 45 (measured on radosgw).
     * A store that never answers "100" costs 200 ms per PUT. (An empty "Expect:" header would
     * drop the question, but libcurl 7.88 signs that header and then leaves it out: the store
     * refuses the signature.) */
    curl_easy_setopt(c, CURLOPT_EXPECT_100_TIMEOUT_MS, 200L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    if (s->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, s->ca_file);
    if (s->insecure_tls) {
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    char range[64];
    if (r->has_range) {
        if (r->range_length)
            snprintf(range, sizeof(range), "%" PRIu64 "-%" PRIu64, r->range_offset,
                     r->range_offset + r->range_length - 1);
        else
            snprintf(range, sizeof(range), "%" PRIu64 "-", r->range_offset);
        curl_easy_setopt(c, CURLOPT_RANGE, range);
    }
    if (strcmp(r->method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (strcmp(r->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, r);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_length);
    } else if (strcmp(r->method, "POST") == 0) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, r);
        curl_easy_setopt(c, CURLOPT_SEEKFUNCTION, on_seek);
        curl_easy_setopt(c, CURLOPT_SEEKDATA, r);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_mem_length);
    } else if (strcmp(r->method, "DELETE") == 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    curl_err[0] = '\0';
    CURLcode cc = h ? curl_easy_perform(c) : CURLE_OUT_OF_MEMORY;
    curl_slist_free_all(h);
    if (cc == CURLE_OK || cc == CURLE_HTTP_RETURNED_ERROR || cc == CURLE_WRITE_ERROR ||
        cc == CURLE_ABORTED_BY_CALLBACK)
        give_handle(s, c);
    else
        curl_easy_cleanup(c); /* its connection is suspect */
    return cc;
}

/* Perform a request, retrying what may succeed later. Returns 0 when an HTTP answer arrived
 * (r->status; r->code and r->message for errors), or a negative error with a message. */
int s3_perform(struct s3_client *s, struct s3_request *r, struct tr_error *err)
{
    struct tr_buf url;
    tr_buf_init(&url, 8192);
    tr_buf_init(&r->error_body, ERROR_BODY_MAX + 1);
    int rc = build_url(s, r, &url);
    if (rc) {
        tr_buf_release(&url);
        return tr_error_set(err, TR_ELIMIT, "object key too long");
    }
    const char *what = r->key ? r->key : s->bucket;
    unsigned delay_ms = 200;
    for (unsigned n = 0;; n++) {
        r->attempts = n + 1;
        if ((rc = attempt_reset(r))) {
            rc = tr_error_set(err, rc, "S3 %s %s: cannot reset the local copy: %s", r->method,
                              what, strerror(errno));
            break;
        }
        char curl_err[CURL_ERROR_SIZE];
        CURLcode cc = attempt(s, r, url.data, curl_err);
        if (r->error_body.len) {
            const char *b = r->error_body.data, *e = b + r->error_body.len;
            s3_xml_get(b, e, "Code", r->code, sizeof(r->code));
            s3_xml_get(b, e, "Message", r->message, sizeof(r->message));
        }
        if (r->local_error) {
            rc = tr_error_set(err, r->local_error, "S3 %s %s: %s", r->method, what,
                              r->local_error == TR_ELIMIT ? "the answer is larger than expected"
                              : r->out == S3_OUT_SINK        ? "the receiver went away"
                                                          : "cannot write the local copy");
            break;
        }
        bool again;
        char why[CURL_ERROR_SIZE + 64];
        if (cc != CURLE_OK) {
            again = retryable_curl(cc);
            snprintf(why, sizeof(why), "%s", curl_err[0] ? curl_err : curl_easy_strerror(cc));
        } else {
            again = retryable_status(r);
            snprintf(why, sizeof(why), "HTTP %ld%s%s", r->status, r->code[0] ? " " : "",
                     r->code);
        }
        if (cc == CURLE_OK && !again) {
            rc = 0;
            break;
        }
        if (!again || n >= s->retries || r->delivered) {
            if (cc != CURLE_OK)
                rc = tr_error_set(err, cc == CURLE_OPERATION_TIMEDOUT ? TR_ETIMEOUT : TR_EIO,
                                  "S3 at %s: %s %s: %s%s", s->endpoint, r->method, what, why,
                                  again ? " (gave up after retries)" : "");
            else
                rc = tr_error_set(err, TR_EIO, "S3 at %s unavailable: %s %s: %s after %u "
                                               "attempts", s->endpoint, r->method, what, why,
                                  n + 1);
            break;
        }
        /* Exponential backoff with jitter (+-25 %), capped. */
        unsigned jitter =
            (unsigned)(((uint64_t)rand() * (delay_ms / 2 + 1)) / ((uint64_t)RAND_MAX + 1));
        unsigned wait = delay_ms - delay_ms / 4 + jitter;
        s3_log(s, S3_LOG_WARNING, "S3 %s %s: %s; retrying in %u ms (attempt %u of %u)", r->method,
               what, why, wait, n + 2, s->retries + 1);
        sleep_ms(wait);
        delay_ms = TR_MIN(delay_ms * 2, 5000u);
    }
    tr_buf_release(&url);
    tr_buf_release(&r->error_body);
    return rc;
}

/* A clear error for an answer that is not what was hoped for. */
int s3_status_error(struct s3_client *s, const struct s3_request *r, struct tr_error *err)
{
    const char *what = r->key ? r->key : s->bucket;
    const char *code = r->code[0] ? r->code : "";
    if (r->status == 403) {
        const char *hint = strcmp(code, "SignatureDoesNotMatch") == 0
                               ? "the secret key does not match the access key"
                           : strcmp(code, "InvalidAccessKeyId") == 0
                               ? "the store does not know the access key"
                           : strcmp(code, "RequestTimeTooSkewed") == 0
                               ? "this machine's clock is off (check NTP)"
                               : "the credentials are refused or lack permission";
        return tr_error_set(err, TR_EDENIED,
                            "S3 at %s refused %s %s (403 %s): %s; check [s3] access_key, "
                            "secret_key (or credentials_file) and the bucket's policy",
                            s->endpoint, r->method, what, code[0] ? code : "Forbidden", hint);
    }
    if (r->status == 404 && (strcmp(code, "NoSuchBucket") == 0 || !r->key))
        return tr_error_set(err, TR_EINVAL,
                            "S3 at %s has no bucket \"%s\": check [s3] bucket and endpoint",
                            s->endpoint, s->bucket);
    if (r->status == 404)
        return tr_error_set(err, TR_ENOTFOUND, "object %s: not in the store", what);
    if (r->status == 301 || r->status == 307 || strcmp(code, "PermanentRedirect") == 0 ||
        strcmp(code, "AuthorizationHeaderMalformed") == 0)
        return tr_error_set(err, TR_EINVAL,
                            "S3 at %s: bucket \"%s\" is elsewhere (%ld %s): check [s3] region, "
                            "endpoint and addressing", s->endpoint, s->bucket, r->status, code);
    if (strcmp(code, "BadDigest") == 0 || strcmp(code, "XAmzContentSHA256Mismatch") == 0 ||
        strcmp(code, "InvalidDigest") == 0)
        return tr_error_set(err, TR_EIO,
                            "S3 refused the bytes of %s: their checksum does not match (%s): they "
                            "were damaged on the way or on the local disk; nothing was stored",
                            what, code);
    return tr_error_set(err, TR_EIO, "S3 at %s: %s %s: HTTP %ld %s%s%s", s->endpoint, r->method,
                        what, r->status, code, r->message[0] ? ": " : "", r->message);
}

/* HEAD of an object: 0 (found), TR_ENOTFOUND, or an error. */
int s3_head(struct s3_client *s, const char *key, struct s3_request *r,
                       struct tr_error *err)
{
    s3_request_init(r, "HEAD", key);
    int rc = s3_perform(s, r, err);
    if (rc)
        return rc;
    if (r->status == 200)
        return 0;
    if (r->status == 404)
        return TR_ENOTFOUND; /* a HEAD has no body: NoSuchKey or NoSuchBucket look alike */
    return s3_status_error(s, r, err);
}

/* ---- the client --------------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* A bucket name that works in a host name and a path (S3's rules, simplified). */
static bool bucket_is_valid(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = b[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
              ch == '_'))
            return false;
    }
    return true;
}

int s3_client_init(struct s3_client *c, const struct arc_s3_options *o, struct tr_error *err)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    if (!o->endpoint || !*o->endpoint)
        return tr_error_set(err, TR_EINVAL, "[s3] endpoint is not set");
    if (!o->bucket || !*o->bucket)
        return tr_error_set(err, TR_EINVAL, "[s3] bucket is not set");
    if (!bucket_is_valid(o->bucket))
        return tr_error_set(err, TR_EINVAL, "[s3] bucket \"%s\": 3 to 63 lower-case letters, "
                                            "digits, '-', '.' or '_'", o->bucket);
    if (!o->access_key || !*o->access_key || !o->secret_key || !*o->secret_key)
        return tr_error_set(err, TR_EINVAL, "S3 credentials are not set: [s3] access_key and "
                                            "secret_key, TELERAD_S3_ACCESS_KEY and "
                                            "TELERAD_S3_SECRET_KEY, or [s3] credentials_file");
    const char *sep = strstr(o->endpoint, "://");
    if (!sep || (strncmp(o->endpoint, "http://", 7) != 0 &&
                 strncmp(o->endpoint, "https://", 8) != 0))
        return tr_error_set(err, TR_EINVAL, "[s3] endpoint \"%s\": http://HOST[:PORT] or "
                                            "https://HOST[:PORT]", o->endpoint);
    const char *host = sep + 3;
    size_t host_len = strcspn(host, "/");
    if (host_len == 0 || host_len >= sizeof(c->host) ||
        (host[host_len] == '/' && host[host_len + 1]))
        return tr_error_set(err, TR_EINVAL, "[s3] endpoint \"%s\": a scheme and a host, no path",
                            o->endpoint);
    snprintf(c->scheme, sizeof(c->scheme), "%.*s", (int)(sep - o->endpoint), o->endpoint);
    snprintf(c->host, sizeof(c->host), "%.*s", (int)host_len, host);
    struct tr_buf e;
    tr_buf_init(&e, 400);
    tr_buf_addf(&e, "%s://%s", c->scheme, c->host);
    c->endpoint = tr_buf_detach(&e, NULL);
    c->region = tr_strdup(o->region && *o->region ? o->region : "us-east-1");
    c->bucket = tr_strdup(o->bucket);
    c->prefix = tr_strdup(o->prefix ? o->prefix : "");
    c->access_key = tr_strdup(o->access_key);
    c->secret_key = tr_strdup(o->secret_key);
    c->ca_file = o->ca_file && *o->ca_file ? tr_strdup(o->ca_file) : NULL;
    c->virtual_host = o->virtual_host;
    c->retries = o->retries;
    c->connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
    c->stall_timeout_s = o->stall_timeout_s ? o->stall_timeout_s : 30;
    c->insecure_tls = o->insecure_tls;
    c->log = o->log;
    c->log_ctx = o->log_ctx;
    if (!c->endpoint || !c->region || !c->bucket || !c->prefix || !c->access_key ||
        !c->secret_key || (o->ca_file && *o->ca_file && !c->ca_file))
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    snprintf(c->sigv4, sizeof(c->sigv4), "aws:amz:%s:s3", c->region);
    pthread_once(&curl_once, curl_init_once);
    return 0;
}

void s3_client_release(struct s3_client *c)
{
    for (struct s3_curl_slot *slot = c->idle, *next; slot; slot = next) {
        next = slot->next;
        curl_easy_cleanup(slot->curl);
        tr_free(slot);
    }
    c->idle = NULL;
    pthread_mutex_destroy(&c->lock);
    tr_free(c->endpoint);
    tr_free(c->region);
    tr_free(c->bucket);
    tr_free(c->prefix);
    tr_free(c->access_key);
    if (c->secret_key) {
        memset(c->secret_key, 0, strlen(c->secret_key));
        tr_free(c->secret_key);
    }
    tr_free(c->ca_file);
}
