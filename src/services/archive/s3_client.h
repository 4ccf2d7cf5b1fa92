/*
 * s3_client.h - private to the archive: the HTTP side of the S3 backend (objstore_s3.c). One
 * request at a time per call, signed with AWS Signature Version 4 by libcurl, retried with
 * backoff when the store or the network may do better a moment later, and turned into an error
 * that says what to fix when it will not. Also the encodings (URI, hex, base64), digests and
 * the little XML that S3's answers need.
 *
 * libcurl 7.88 signs the query string as it is given and cannot hash an upload body itself:
 * every query is built sorted and fully percent-encoded by the caller (s3_uri_encode), and
 * every request carries its own x-amz-content-sha256 (../shared/notes/s3-ceph.md).
 */
#ifndef ARC_S3_CLIENT_H
#define ARC_S3_CLIENT_H

#include <curl/curl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"
#include "objstore.h"
#include "sink.h"

#define S3_EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* Log levels as scp.h's. */
enum { S3_LOG_ERROR = 0, S3_LOG_WARNING = 1, S3_LOG_INFO = 2, S3_LOG_DEBUG = 3 };

struct s3_curl_slot;

/* Where the store is and how to talk to it. */
struct s3_client {
    char *endpoint;       /* scheme://host[:port], no trailing slash */
    char scheme[8];
    char host[256];       /* host[:port] */
    char *region;
    char *bucket;
    char *prefix;         /* of every key */
    char *access_key;
    char *secret_key;     /* given to libcurl only */
    char sigv4[160];      /* "aws:amz:<region>:s3" */
    bool virtual_host;
    unsigned retries, connect_timeout_ms, stall_timeout_s;
    char *ca_file;
    bool insecure_tls;
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
    pthread_mutex_t lock; /* the idle handles (their connections are reused) */
    struct s3_curl_slot *idle;
    unsigned idle_count;
};

/* Check the options' endpoint, bucket and keys and copy them. */
int s3_client_init(struct s3_client *c, const struct arc_s3_options *o, struct tr_error *err);
void s3_client_release(struct s3_client *c);
void s3_log(struct s3_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

enum s3_out { S3_OUT_DISCARD, S3_OUT_BUF, S3_OUT_FD, S3_OUT_SINK, S3_OUT_MEM };

struct s3_request {
    const char *method;            /* GET HEAD PUT POST DELETE */
    const char *key;               /* NULL: the bucket */
    const char *query;             /* canonical: sorted and encoded; NULL for none */
    /* what goes up */
    int body_fd;                   /* -1: none */
    uint64_t body_offset, body_length;
    const char *body_mem;          /* POST bodies */
    size_t body_mem_length;
    char content_sha256[65];       /* hex; "" = of an empty body */
    char content_md5[32];          /* base64, or "" */
    const char *meta_sha256;       /* x-amz-meta-sha256, or NULL */
    const char *content_type;
    bool has_range;
    uint64_t range_offset, range_length; /* length 0: to the end */
    /* where what comes down goes (2xx only; error bodies are kept apart) */
    enum s3_out out;
    struct tr_buf *out_buf;
    int out_fd;
    const struct tr_sink *out_sink;
    void *out_mem;
    size_t out_mem_size;
    EVP_MD_CTX *out_sha256;        /* hash what comes down (whole-object reads) */
    /* results */
    long status;
    uint64_t content_length;
    bool has_content_length;
    uint64_t total_size;           /* from Content-Range "bytes a-b/total" */
    bool has_total;
    uint64_t range_start;          /* from Content-Range */
    char etag[80];
    char stored_sha256[80];        /* x-amz-meta-sha256 */
    char code[64];                 /* the error's <Code> */
    char message[160];             /* the error's <Message> */
    uint64_t received;             /* body bytes delivered to `out` */
    unsigned attempts;
    /* internal */
    uint64_t sent;
    int local_error;               /* the output failed (disk, sink) */
    bool delivered;                /* something reached a sink: no retry */
    struct tr_buf error_body;
};

void s3_request_init(struct s3_request *r, const char *method, const char *key);
/* Perform a request, retrying network errors, timeouts, 5xx, 429 and 400 RequestTimeout with
 * exponential backoff (0.2 s doubling, at most 5 s, +-25 % jitter), `retries` times at most;
 * nothing is retried once bytes went to a sink. Returns 0 when an HTTP answer arrived
 * (r->status, and r->code / r->message for errors), or a negative error with a message. */
int s3_perform(struct s3_client *c, struct s3_request *r, struct tr_error *err);
/* An error for an answer that is not the one hoped for, saying what to fix: 403 the
 * credentials, 404 NoSuchBucket the bucket or endpoint, 301 the region, BadDigest damaged
 * bytes. Returns the code set. */
int s3_status_error(struct s3_client *c, const struct s3_request *r, struct tr_error *err);
/* HEAD of an object: 0 (found; *r has its size, ETag, stored SHA-256), TR_ENOTFOUND, or an
 * error. */
int s3_head(struct s3_client *c, const char *key, struct s3_request *r, struct tr_error *err);

/* Encodings and digests. */
void s3_hex(const unsigned char *bin, size_t n, char *out);    /* out: 2n+1 bytes */
void s3_base64(const unsigned char *bin, size_t n, char *out); /* out: 4(n+2)/3+1 bytes */
/* AWS URI encoding: unreserved characters stay, all else %XX; '/' stays when keep_slash. */
int s3_uri_encode(struct tr_buf *b, const char *s, bool keep_slash);
/* MD5 and SHA-256 of a region of a file; `also` (optional) is updated with the bytes too. */
int s3_digest_region(int fd, uint64_t offset, uint64_t length, unsigned char md5[16],
                     unsigned char sha256[32], EVP_MD_CTX *also);

/* The content of the first <tag>...</tag> in [p, end), or NULL; *after: where to go on. */
const char *s3_xml_find(const char *p, const char *end, const char *tag, size_t *len,
                        const char **after);
/* The text of the first <tag> (character references decoded); false if none or too long. */
bool s3_xml_get(const char *p, const char *end, const char *tag, char *out, size_t size);

#endif
