/*
 * objstore_s3.c - the S3 backend of the object store (see objstore.h): any S3-compatible
 * store (Ceph RADOS Gateway, AWS S3, MinIO), spoken to with libcurl (AWS Signature Version 4
 * by CURLOPT_AWS_SIGV4) and OpenSSL (MD5, SHA-256).
 *
 * Writing. A put streams into a local spool file (DATA/spool) while MD5 and SHA-256 of the
 * bytes are computed; nothing of a data set is held in memory. Commit uploads the file: one PUT
 * up to multipart_threshold, else a multipart upload in parts of part_size (each part hashed
 * before it goes). Every upload carries Content-MD5 and x-amz-content-sha256 (signed), which
 * the store checks before it keeps the bytes (a mismatch is 400 BadDigest /
 * XAmzContentSHA256Mismatch: nothing stored); each part's ETag is compared with its MD5; the
 * object's SHA-256 is kept as x-amz-meta-sha256 for later comparisons. Commit returns after the
 * store answered 200: the object is durable there (the C-STORE success comes after).
 * "Create if absent" is a HEAD before the PUT (see arc_put_commit).
 *
 * Reading. Whole objects go through an on-disk cache (DATA/cache, objcache.c) bounded by
 * cache_bytes; ranges are fetched with ranged GETs into temporary files (headers, bulk data).
 * A cached copy older than cache_revalidate_s is compared with the store's ETag (a HEAD) first.
 *
 * Failures are retried with backoff or explained by s3_client.c, which does the HTTP.
 */
#include "common.h"
#include "objstore_int.h"
#include "s3_client.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#define XML_MAX (8u << 20)     /* cap on an XML answer (a listing page is ~300 KB) */
#define IO_CHUNK (1u << 20)
#define MAX_PARTS 10000        /* S3's limit */

struct s3_store {
    struct arc_objstore base;
    struct s3_client c;
    uint64_t threshold, part_size;
    unsigned revalidate_s, stale_upload_s;
    char local[PATH_MAX];
    char spool[PATH_MAX];
    char cache_dir[PATH_MAX];
    struct objcache *cache;
};

struct s3_put {
    struct arc_put base;
    EVP_MD_CTX *md5, *sha256;
    bool digested;
    unsigned char md5_bin[16], sha256_bin[32];
    char absent_key[1100]; /* a HEAD said there is no object under this key */
};

struct s3_handle {
    struct arc_object_handle base;
    struct objcache_entry *pin;
    bool temporary; /* remove the file at close */
};

static const struct arc_objstore_ops s3_ops;

static struct s3_store *s3_of(struct arc_objstore *s)
{
    return (struct s3_store *)s;
}

/* ---- opening ------------------------------------------------------------------------------ */

void arc_s3_options_init(struct arc_s3_options *o)
{
    memset(o, 0, sizeof(*o));
    o->region = "us-east-1";
    o->prefix = "";
    o->multipart_threshold = 64ull << 20;
    o->part_size = 16ull << 20;
    o->cache_bytes = 1ull << 30;
    o->cache_revalidate_s = 60;
    o->retries = 5;
    o->connect_timeout_ms = 5000;
    o->stall_timeout_s = 30;
    o->stale_upload_s = 86400;
}

static void s3_close(struct arc_objstore *store)
{
    struct s3_store *s = s3_of(store);
    objcache_close(s->cache);
    s3_client_release(&s->c);
    tr_free(s);
}

int arc_objstore_open_s3(const struct arc_s3_options *o, const char *local_dir,
                         struct arc_objstore **out, struct tr_error *err)
{
    if (o->part_size < (1u << 20) || o->multipart_threshold < o->part_size)
        return tr_error_set(err, TR_EINVAL, "S3 part size must be at least 1 MiB (5 MiB for "
                                            "most stores) and the multipart threshold at least "
                                            "one part");
    struct s3_store *s = tr_calloc(1, sizeof(*s));
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    s->base.ops = &s3_ops;
    int rc = s3_client_init(&s->c, o, err);
    if (rc)
        goto fail;
    s->threshold = o->multipart_threshold;
    s->part_size = o->part_size;
    s->revalidate_s = o->cache_revalidate_s;
    s->stale_upload_s = o->stale_upload_s;
    if (snprintf(s->local, sizeof(s->local), "%s", local_dir) >= (int)sizeof(s->local) ||
        snprintf(s->spool, sizeof(s->spool), "%s/spool", local_dir) >= (int)sizeof(s->spool) ||
        snprintf(s->cache_dir, sizeof(s->cache_dir), "%s/cache", local_dir) >=
            (int)sizeof(s->cache_dir)) {
        rc = tr_error_set(err, TR_ELIMIT, "path too long: %s", local_dir);
        goto fail;
    }
    const char *dirs[] = {s->local, s->spool};
    for (size_t i = 0; i < TR_ARRAY_SIZE(dirs); i++) {
        if (mkdir(dirs[i], 0750) < 0 && errno != EEXIST) {
            rc = tr_error_set(err, TR_EIO, "cannot create %s: %s", dirs[i], strerror(errno));
            goto fail;
        }
    }
    if ((rc = objcache_open(s->cache_dir, o->cache_bytes, &s->cache, err)))
        goto fail;
    /* The bucket is there and the keys work: say so now rather than at the first C-STORE (a
     * listing of one key: unlike a HEAD, its errors come with a code that says what is wrong). */
    struct tr_buf q;
    tr_buf_init(&q, 4096);
    tr_buf_adds(&q, "list-type=2&max-keys=1");
    if (s->c.prefix[0]) {
        tr_buf_adds(&q, "&prefix=");
        s3_uri_encode(&q, s->c.prefix, false);
    }
    struct s3_request r;
    s3_request_init(&r, "GET", NULL);
    r.query = q.data;
    rc = q.data ? s3_perform(&s->c, &r, err) : tr_error_set(err, TR_ENOMEM, "out of memory");
    tr_buf_release(&q);
    if (rc)
        goto fail;
    if (r.status != 200) {
        rc = s3_status_error(&s->c, &r, err);
        goto fail;
    }
    *out = &s->base;
    return 0;
fail:
    s3_close(&s->base);
    return rc;
}

static void s3_describe(const struct arc_objstore *store, char *buf, size_t size)
{
    const struct s3_client *c = &((const struct s3_store *)store)->c;
    snprintf(buf, size, "s3 %s bucket %s%s%s (%s, region %s)", c->endpoint, c->bucket,
             c->prefix[0] ? " prefix " : "", c->prefix,
             c->virtual_host ? "virtual-host" : "path-style", c->region);
}

/* ---- puts --------------------------------------------------------------------------------- */

static void put_observe(struct arc_put *base, const void *data, size_t len)
{
    struct s3_put *p = (struct s3_put *)base;
    EVP_DigestUpdate(p->md5, data, len);
    EVP_DigestUpdate(p->sha256, data, len);
}

static void s3_put_free(struct s3_put *p)
{
    arc_put_release_temp(&p->base);
    EVP_MD_CTX_free(p->md5);
    EVP_MD_CTX_free(p->sha256);
    tr_free(p);
}

static void s3_put_abort(struct arc_put *p)
{
    s3_put_free((struct s3_put *)p);
}

static int s3_put_begin(struct arc_objstore *store, struct arc_put **out, struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    struct s3_put *p = tr_calloc(1, sizeof(*p));
    if (!p)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    p->base.fd = -1;
    p->md5 = EVP_MD_CTX_new();
    p->sha256 = EVP_MD_CTX_new();
    if (!p->md5 || !p->sha256 || !EVP_DigestInit_ex(p->md5, EVP_md5(), NULL) ||
        !EVP_DigestInit_ex(p->sha256, EVP_sha256(), NULL)) {
        EVP_MD_CTX_free(p->md5);
        EVP_MD_CTX_free(p->sha256);
        tr_free(p);
        return tr_error_set(err, TR_ENOMEM, "out of memory (digests)");
    }
    int rc = arc_put_init_temp(&p->base, store, s->spool, err);
    if (rc) {
        EVP_MD_CTX_free(p->md5);
        EVP_MD_CTX_free(p->sha256);
        tr_free(p);
        return rc;
    }
    p->base.observe = put_observe;
    *out = &p->base;
    return 0;
}

static int s3_put_flush(struct arc_put *p, struct tr_error *err)
{
    return arc_put_flush_temp(p, err);
}

static bool s3_put_target_exists(struct arc_put *base, const char *key)
{
    struct s3_put *p = (struct s3_put *)base;
    struct s3_store *s = s3_of(base->store);
    if (!arc_key_is_valid(key))
        return false;
    struct s3_request r;
    int rc = s3_head(&s->c, key, &r, NULL);
    if (rc == TR_ENOTFOUND && strlen(key) < sizeof(p->absent_key))
        snprintf(p->absent_key, sizeof(p->absent_key), "%s", key);
    return rc == 0;
}

/* One PUT of the whole file. */
static int upload_single(struct s3_store *s, struct s3_put *p, const char *key,
                         const char *sha_hex, struct tr_error *err)
{
    struct s3_request r;
    s3_request_init(&r, "PUT", key);
    r.body_fd = p->base.fd;
    r.body_length = p->base.size;
    memcpy(r.content_sha256, sha_hex, 65);
    s3_base64(p->md5_bin, 16, r.content_md5);
    r.meta_sha256 = sha_hex;
    r.content_type = "application/dicom";
    int rc = s3_perform(&s->c, &r, err);
    if (rc)
        return rc;
    if (r.status != 200)
        return s3_status_error(&s->c, &r, err);
    /* A single PUT's ETag is the MD5 of what the store kept. */
    char want[40];
    s3_hex(p->md5_bin, 16, want);
    if (r.etag[0] && strlen(r.etag) == 34 && strncmp(r.etag + 1, want, 32) != 0)
        return tr_error_set(err, TR_EIO, "S3 stored %s with ETag %s, not the MD5 of the bytes "
                                         "sent (%s)", key, r.etag, want);
    return 0;
}

static void abort_upload(struct s3_store *s, const char *key, const char *upload_id)
{
    struct tr_buf q;
    tr_buf_init(&q, 2048);
    tr_buf_adds(&q, "uploadId=");
    s3_uri_encode(&q, upload_id, false);
    struct s3_request r;
    s3_request_init(&r, "DELETE", key);
    r.query = q.data;
    struct tr_error err = TR_ERROR_INIT;
    if (s3_perform(&s->c, &r, &err) < 0 || (r.status != 204 && r.status != 200 && r.status != 404))
        s3_log(&s->c, S3_LOG_WARNING,
               "S3: cannot abort the multipart upload of %s (%s): the bucket's lifecycle rule or "
               "the next start's reconciliation will",
               key, err.code ? err.message : r.code);
    tr_buf_release(&q);
}

/* A multipart upload: create, parts (each with its own MD5 and SHA-256), complete. */
static int upload_multipart(struct s3_store *s, struct s3_put *p, const char *key,
                            const char *sha_hex, struct tr_error *err)
{
    uint64_t size = p->base.size;
    uint64_t parts = (size + s->part_size - 1) / s->part_size;
    if (parts > MAX_PARTS)
        return tr_error_set(err, TR_ELIMIT, "object %s: %" PRIu64 " bytes need more than %u "
                                            "parts of %" PRIu64 " bytes: raise [s3] part_size_mb",
                            key, size, MAX_PARTS, s->part_size);
    struct tr_buf xml, q, complete;
    tr_buf_init(&xml, XML_MAX);
    tr_buf_init(&q, 4096);
    tr_buf_init(&complete, (size_t)parts * 128 + 256);
    char (*etags)[80] = tr_calloc((size_t)parts, sizeof(*etags));
    char upload_id[1024] = "";
    int rc = 0;
    /* The parts are hashed from the spool file as they go; together they must be the bytes
     * hashed as they arrived (a local disk that changed them is caught here). */
    EVP_MD_CTX *whole = EVP_MD_CTX_new();
    if (!etags || !whole || !EVP_DigestInit_ex(whole, EVP_sha256(), NULL)) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    /* Create. */
    struct s3_request r;
    s3_request_init(&r, "POST", key);
    r.query = "uploads=";
    r.meta_sha256 = sha_hex;
    r.content_type = "application/dicom";
    r.body_mem = "";
    r.out = S3_OUT_BUF;
    r.out_buf = &xml;
    if ((rc = s3_perform(&s->c, &r, err)))
        goto out;
    if (r.status != 200) {
        rc = s3_status_error(&s->c, &r, err);
        goto out;
    }
    if (!xml.data || !s3_xml_get(xml.data, xml.data + xml.len, "UploadId", upload_id,
                              sizeof(upload_id)) || !upload_id[0]) {
        rc = tr_error_set(err, TR_EPROTO, "S3 at %s: no UploadId in the answer to a multipart "
                                          "upload of %s", s->c.endpoint, key);
        goto out;
    }
    /* Parts, in order, each hashed just before it goes (the spool file is in the page cache). */
    for (uint64_t i = 0; i < parts; i++) {
        uint64_t off = i * s->part_size, len = TR_MIN(s->part_size, size - off);
        unsigned char md5[16], sha[32];
        if (s3_digest_region(p->base.fd, off, len, md5, sha, whole) < 0) {
            rc = tr_error_set(err, TR_EIO, "cannot read %s: %s", p->base.path, strerror(errno));
            goto out;
        }
        tr_buf_reset(&q);
        tr_buf_addf(&q, "partNumber=%" PRIu64 "&uploadId=", i + 1);
        s3_uri_encode(&q, upload_id, false);
        s3_request_init(&r, "PUT", key);
        r.query = q.data;
        r.body_fd = p->base.fd;
        r.body_offset = off;
        r.body_length = len;
        s3_hex(sha, 32, r.content_sha256);
        s3_base64(md5, 16, r.content_md5);
        if ((rc = s3_perform(&s->c, &r, err)))
            goto out;
        if (r.status != 200) {
            rc = s3_status_error(&s->c, &r, err);
            goto out;
        }
        char want[40];
        s3_hex(md5, 16, want);
        if (strlen(r.etag) != 34 || strncmp(r.etag + 1, want, 32) != 0) {
            rc = tr_error_set(err, TR_EIO, "S3 answered part %" PRIu64 " of %s with ETag %s, not "
                                           "the MD5 of the bytes sent (%s)", i + 1, key, r.etag,
                              want);
            goto out;
        }
        snprintf(etags[i], sizeof(etags[i]), "%s", r.etag);
    }
    unsigned char whole_sha[32];
    EVP_DigestFinal_ex(whole, whole_sha, NULL);
    if (memcmp(whole_sha, p->sha256_bin, 32) != 0) {
        rc = tr_error_set(err, TR_EIO, "the spool file of %s changed between its receipt and its "
                                       "upload (a local disk error): not stored", key);
        goto out;
    }
    /* Complete. */
    tr_buf_adds(&complete, "<CompleteMultipartUpload>");
    for (uint64_t i = 0; i < parts; i++)
        tr_buf_addf(&complete, "<Part><PartNumber>%" PRIu64 "</PartNumber><ETag>%s</ETag></Part>",
                    i + 1, etags[i]);
    if (tr_buf_adds(&complete, "</CompleteMultipartUpload>") < 0) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    unsigned char csha[32], cmd5[16];
    EVP_Digest(complete.data, complete.len, csha, NULL, EVP_sha256(), NULL);
    EVP_Digest(complete.data, complete.len, cmd5, NULL, EVP_md5(), NULL);
    tr_buf_reset(&q);
    tr_buf_adds(&q, "uploadId=");
    s3_uri_encode(&q, upload_id, false);
    tr_buf_reset(&xml);
    s3_request_init(&r, "POST", key);
    r.query = q.data;
    r.body_mem = complete.data;
    r.body_mem_length = complete.len;
    s3_hex(csha, 32, r.content_sha256);
    s3_base64(cmd5, 16, r.content_md5);
    r.content_type = "application/xml";
    r.out = S3_OUT_BUF;
    r.out_buf = &xml;
    if ((rc = s3_perform(&s->c, &r, err)))
        goto out;
    /* A retried complete may find the upload completed by the attempt whose answer was lost. */
    if (r.status == 404 && strcmp(r.code, "NoSuchUpload") == 0 && r.attempts > 1) {
        struct s3_request h;
        if (s3_head(&s->c, key, &h, NULL) == 0 && strcmp(h.stored_sha256, sha_hex) == 0) {
            upload_id[0] = '\0';
            goto out;
        }
    }
    if (r.status != 200) {
        rc = s3_status_error(&s->c, &r, err);
        goto out;
    }
    /* 200 with an error inside is possible (S3 sends 200 before it knows). */
    char code[64];
    if (xml.data && s3_xml_get(xml.data, xml.data + xml.len, "Code", code, sizeof(code))) {
        rc = tr_error_set(err, TR_EIO, "S3 at %s: completing the upload of %s failed: %s",
                          s->c.endpoint, key, code);
        goto out;
    }
    upload_id[0] = '\0'; /* done: nothing to abort */
out:
    if (rc && upload_id[0])
        abort_upload(s, key, upload_id);
    tr_free(etags);
    EVP_MD_CTX_free(whole);
    tr_buf_release(&xml);
    tr_buf_release(&q);
    tr_buf_release(&complete);
    return rc;
}

static int s3_put_commit(struct arc_put *base, const char *key, bool replace,
                         struct tr_error *err)
{
    struct s3_put *p = (struct s3_put *)base;
    struct s3_store *s = s3_of(base->store);
    int rc;
    if (!arc_key_is_valid(key)) {
        s3_put_free(p);
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    }
    if ((rc = arc_put_flush_temp(base, err))) {
        s3_put_free(p);
        return rc;
    }
    if (!p->digested) {
        EVP_DigestFinal_ex(p->md5, p->md5_bin, NULL);
        EVP_DigestFinal_ex(p->sha256, p->sha256_bin, NULL);
        p->digested = true;
    }
    char sha_hex[65];
    s3_hex(p->sha256_bin, 32, sha_hex);
    if (!replace && strcmp(p->absent_key, key) != 0) {
        struct s3_request r;
        rc = s3_head(&s->c, key, &r, err);
        if (rc == 0)
            return tr_error_set(err, TR_EEXIST, "object %s exists", key); /* put stays open */
        if (rc != TR_ENOTFOUND) {
            s3_put_free(p);
            return rc;
        }
    }
    rc = base->size <= s->threshold ? upload_single(s, p, key, sha_hex, err)
                                    : upload_multipart(s, p, key, sha_hex, err);
    if (rc) {
        s3_put_free(p);
        return rc;
    }
    /* Stored. The spool file becomes the cached copy (what was just stored is often read soon:
     * the study is routed and opened), unless the cache is too small for it. */
    objcache_invalidate(s->cache, key);
    close(base->fd);
    base->fd = -1;
    char etag[40];
    snprintf(etag, sizeof(etag), "\"");
    s3_hex(p->md5_bin, 16, etag + 1);
    if (base->size <= s->threshold)
        memcpy(etag + 33, "\"", 2);
    else
        etag[0] = '\0'; /* a multipart ETag is not the MD5: the first check refetches */
    if (base->size <= objcache_capacity(s->cache) / 4 &&
        objcache_insert(s->cache, key, base->path, sizeof(base->path), base->size, etag,
                        NULL) == 0)
        base->path[0] = '\0';
    s3_put_free(p);
    return 0;
}

/* ---- reading ------------------------------------------------------------------------------ */

static bool s3_exists(struct arc_objstore *store, const char *key)
{
    struct s3_request r;
    return arc_key_is_valid(key) && s3_head(&s3_of(store)->c, key, &r, NULL) == 0;
}

static int s3_size(struct arc_objstore *store, const char *key, uint64_t *size,
                   struct tr_error *err)
{
    if (!arc_key_is_valid(key))
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    struct s3_request r;
    int rc = s3_head(&s3_of(store)->c, key, &r, err);
    if (rc == TR_ENOTFOUND)
        return tr_error_set(err, rc, "object %s: not in the store", key);
    if (rc)
        return rc;
    *size = r.content_length;
    return 0;
}

/* A cached copy of `key` that may be used (pinned), or NULL. A copy not checked for a while is
 * compared with the store's ETag; when the store cannot be asked, the copy is used (objects
 * do not change in place in normal operation: availability wins). */
static struct objcache_entry *cached(struct s3_store *s, const char *key, char *path,
                                     size_t path_size, uint64_t *size)
{
    char etag[80];
    unsigned age;
    struct objcache_entry *e =
        objcache_lookup(s->cache, key, path, path_size, size, etag, sizeof(etag), &age);
    if (!e || age < s->revalidate_s)
        return e;
    struct s3_request r;
    struct tr_error err = TR_ERROR_INIT;
    int rc = s3_head(&s->c, key, &r, &err);
    if (rc == 0 && etag[0] && strcmp(r.etag, etag) == 0) {
        objcache_mark_checked(s->cache, e);
        return e;
    }
    if (rc == 0 || rc == TR_ENOTFOUND) { /* changed or gone */
        objcache_unpin(s->cache, e);
        objcache_invalidate(s->cache, key);
        return NULL;
    }
    s3_log(&s->c, S3_LOG_DEBUG, "S3: using the cached copy of %s unchecked: %s", key, err.message);
    return e;
}

/* Fetch [offset, offset+length) (whole: the object) into a new file; returns its descriptor
 * in *fd and the request's results in *r. */
static int fetch(struct s3_store *s, const char *key, uint64_t offset, uint64_t length,
                 bool whole, char *path, size_t path_size, int *fd, struct s3_request *r,
                 struct tr_error *err)
{
    *fd = objcache_temp(s->cache, path, path_size);
    if (*fd < 0)
        return tr_error_set(err, TR_EIO, "cannot create a file in %s: %s", s->cache_dir,
                            strerror(errno));
    s3_request_init(r, "GET", key);
    r->out = S3_OUT_FD;
    r->out_fd = *fd;
    if (!whole) {
        r->has_range = true;
        r->range_offset = offset;
        r->range_length = length >= UINT64_MAX - offset ? 0 : length ? length : 1;
    } else {
        r->out_sha256 = EVP_MD_CTX_new();
        if (!r->out_sha256 || !EVP_DigestInit_ex(r->out_sha256, EVP_sha256(), NULL)) {
            EVP_MD_CTX_free(r->out_sha256);
            close(*fd);
            unlink(path);
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        }
    }
    int rc = s3_perform(&s->c, r, err);
    if (rc == 0 && r->status != 200 && r->status != 206 && !(r->status == 416 && !whole))
        rc = s3_status_error(&s->c, r, err);
    if (rc == 0 && r->has_range && r->status == 200 && offset > 0) {
        /* The whole object came (the store ignored the range): keep the range. */
        rc = tr_error_set(err, TR_EPROTO, "S3 at %s ignored the range of a GET of %s",
                          s->c.endpoint, key);
    }
    if (rc == 0 && whole) {
        unsigned char sha[32];
        char got[65];
        EVP_DigestFinal_ex(r->out_sha256, sha, NULL);
        s3_hex(sha, 32, got);
        if (r->stored_sha256[0] && strcmp(r->stored_sha256, got) != 0)
            rc = tr_error_set(err, TR_EIO, "object %s: the bytes received do not match the "
                                           "SHA-256 stored with them", key);
        if (r->has_content_length && r->content_length != r->received)
            rc = tr_error_set(err, TR_EIO, "object %s: %" PRIu64 " bytes received of %" PRIu64,
                              key, r->received, r->content_length);
    }
    EVP_MD_CTX_free(r->out_sha256);
    r->out_sha256 = NULL;
    if (rc) {
        close(*fd);
        unlink(path);
        *fd = -1;
    }
    return rc;
}

static int s3_open_range(struct arc_objstore *store, const char *key, uint64_t offset,
                         uint64_t length, bool whole, struct arc_object_handle **out,
                         struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    if (!arc_key_is_valid(key))
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    struct s3_handle *h = tr_calloc(1, sizeof(*h));
    if (!h)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    h->base.store = store;
    h->base.fd = -1;
    uint64_t size;
    h->pin = cached(s, key, h->base.path, sizeof(h->base.path), &size);
    if (h->pin) {
        h->base.object_size = size;
        h->base.complete = true;
        h->base.offset = TR_MIN(offset, size);
        h->base.length = TR_MIN(length, size - h->base.offset);
        *out = &h->base;
        return 0;
    }
    struct s3_request r;
    int fd;
    int rc = fetch(s, key, offset, length, whole, h->base.path, sizeof(h->base.path), &fd, &r,
                   err);
    if (rc) {
        tr_free(h);
        return rc;
    }
    if (whole) {
        close(fd);
        h->base.object_size = r.received;
        h->base.complete = true;
        h->base.length = r.received;
        char etag[80];
        snprintf(etag, sizeof(etag), "%s", r.etag);
        if (objcache_insert(s->cache, key, h->base.path, sizeof(h->base.path), r.received, etag,
                            &h->pin) != 0)
            h->temporary = true; /* larger than the cache: a file of its own */
    } else {
        h->base.fd = fd;
        h->temporary = true;
        h->base.length = r.received;
        h->base.object_size = r.has_total ? r.total_size : r.received;
        h->base.complete = offset == 0 && r.received == h->base.object_size;
    }
    *out = &h->base;
    return 0;
}

static void s3_handle_close(struct arc_object_handle *base)
{
    struct s3_handle *h = (struct s3_handle *)base;
    struct s3_store *s = s3_of(base->store);
    if (h->pin)
        objcache_unpin(s->cache, h->pin);
    if (h->temporary)
        unlink(base->path);
    tr_free(h);
}

static ssize_t s3_read(struct arc_objstore *store, const char *key, uint64_t offset, void *buf,
                       size_t len, struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    if (!arc_key_is_valid(key))
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    if (len == 0)
        return 0;
    char path[PATH_MAX];
    uint64_t size;
    struct objcache_entry *e = cached(s, key, path, sizeof(path), &size);
    if (e) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : pread(fd, buf, len, (off_t)offset);
        int saved = errno;
        if (fd >= 0)
            close(fd);
        objcache_unpin(s->cache, e);
        if (n < 0)
            return tr_error_set(err, TR_EIO, "cached copy of %s: %s", key, strerror(saved));
        return n;
    }
    struct s3_request r;
    s3_request_init(&r, "GET", key);
    r.has_range = true;
    r.range_offset = offset;
    r.range_length = len;
    r.out = S3_OUT_MEM;
    r.out_mem = buf;
    r.out_mem_size = len;
    int rc = s3_perform(&s->c, &r, err);
    if (rc)
        return rc;
    if (r.status == 416)
        return 0; /* at or past the end */
    if (r.status == 200 && offset > 0)
        return tr_error_set(err, TR_EPROTO, "S3 at %s ignored the range of a GET of %s",
                            s->c.endpoint, key);
    if (r.status != 200 && r.status != 206)
        return s3_status_error(&s->c, &r, err);
    return (ssize_t)r.received;
}

static int s3_get(struct arc_objstore *store, const char *key, uint64_t offset, uint64_t length,
                  const struct tr_sink *sink, struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    if (!arc_key_is_valid(key))
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    if (length == 0)
        return 0;
    char path[PATH_MAX];
    uint64_t size;
    struct objcache_entry *e = cached(s, key, path, sizeof(path), &size);
    if (e) {
        int rc = 0;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        uint8_t *buf = fd < 0 ? NULL : tr_malloc(IO_CHUNK);
        if (!buf)
            rc = tr_error_set(err, fd < 0 ? TR_EIO : TR_ENOMEM, "cached copy of %s", key);
        for (uint64_t done = 0; rc == 0 && done < length && offset + done < size;) {
            size_t want = (size_t)TR_MIN((uint64_t)IO_CHUNK, length - done);
            ssize_t n = pread(fd, buf, want, (off_t)(offset + done));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = tr_error_set(err, TR_EIO, "cached copy of %s: %s", key, strerror(errno));
                break;
            }
            if ((rc = tr_sink_write(sink, buf, (size_t)n)))
                tr_error_set(err, rc, "cannot send object %s: %s", key, tr_strerror(rc));
            done += (uint64_t)n;
        }
        tr_free(buf);
        if (fd >= 0)
            close(fd);
        objcache_unpin(s->cache, e);
        return rc;
    }
    struct s3_request r;
    s3_request_init(&r, "GET", key);
    if (offset > 0 || length != UINT64_MAX) {
        r.has_range = true;
        r.range_offset = offset;
        r.range_length = length >= UINT64_MAX - offset ? 0 : length;
    }
    r.out = S3_OUT_SINK;
    r.out_sink = sink;
    int rc = s3_perform(&s->c, &r, err);
    if (rc)
        return rc;
    if (r.status == 416)
        return 0;
    if (r.status != 200 && r.status != 206)
        return s3_status_error(&s->c, &r, err);
    return 0;
}

static int sha256_file(const char *path, char out[65], uint64_t *size)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return TR_EIO;
    struct stat st;
    unsigned char md5[16], sha[32];
    int rc = fstat(fd, &st) < 0
                 ? TR_EIO
                 : s3_digest_region(fd, 0, (uint64_t)st.st_size, md5, sha, NULL);
    close(fd);
    if (rc == 0) {
        s3_hex(sha, 32, out);
        *size = (uint64_t)st.st_size;
    }
    return rc;
}

static int s3_same(struct arc_objstore *store, const char *key, const char *temp_path,
                   bool *same, struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    *same = false;
    if (!arc_key_is_valid(key))
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    char mine[65];
    uint64_t my_size;
    if (sha256_file(temp_path, mine, &my_size) < 0)
        return tr_error_set(err, TR_EIO, "%s: %s", temp_path, strerror(errno));
    struct s3_request r;
    int rc = s3_head(&s->c, key, &r, err);
    if (rc == TR_ENOTFOUND)
        return tr_error_set(err, rc, "object %s: not in the store", key);
    if (rc)
        return rc;
    if (r.content_length != my_size)
        return 0;
    if (r.stored_sha256[0]) {
        *same = strcmp(r.stored_sha256, mine) == 0;
        return 0;
    }
    /* Stored by something else (no SHA-256 with it): compare the bytes. */
    struct arc_object_handle *h;
    if ((rc = s3_open_range(store, key, 0, UINT64_MAX, true, &h, err)))
        return rc;
    char theirs[65];
    uint64_t their_size;
    rc = sha256_file(h->path, theirs, &their_size);
    arc_object_close(h);
    if (rc)
        return tr_error_set(err, TR_EIO, "cannot read the copy of %s", key);
    *same = their_size == my_size && strcmp(theirs, mine) == 0;
    return 0;
}

static int s3_delete(struct arc_objstore *store, const char *key, struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    if (!arc_key_is_valid(key))
        return tr_error_set(err, TR_EINVAL, "invalid object key \"%s\"", key);
    objcache_invalidate(s->cache, key);
    struct s3_request r;
    s3_request_init(&r, "DELETE", key);
    int rc = s3_perform(&s->c, &r, err);
    if (rc)
        return rc;
    if (r.status != 204 && r.status != 200 && r.status != 404)
        return s3_status_error(&s->c, &r, err);
    return 0;
}

/* ---- reconciliation ----------------------------------------------------------------------- */

static int64_t parse_iso8601(const char *t)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm);
    return end ? (int64_t)timegm(&tm) : -1;
}

/* Multipart uploads never completed (a crash between parts): abort those older than
 * stale_upload_s (younger ones may be another node's, in progress). */
static void abort_stale_uploads(struct s3_store *s)
{
    char key_marker[1100] = "", id_marker[1024] = "";
    struct tr_buf q, xml;
    tr_buf_init(&q, 8192);
    tr_buf_init(&xml, XML_MAX);
    int64_t now = (int64_t)time(NULL);
    size_t aborted = 0;
    for (int page = 0; page < 1000; page++) {
        tr_buf_reset(&q);
        tr_buf_reset(&xml);
        if (key_marker[0]) {
            tr_buf_adds(&q, "key-marker=");
            s3_uri_encode(&q, key_marker, false);
            tr_buf_addc(&q, '&');
        }
        tr_buf_adds(&q, "max-uploads=1000");
        if (s->c.prefix[0]) {
            tr_buf_adds(&q, "&prefix=");
            s3_uri_encode(&q, s->c.prefix, false);
        }
        if (id_marker[0]) {
            tr_buf_adds(&q, "&upload-id-marker=");
            s3_uri_encode(&q, id_marker, false);
        }
        tr_buf_adds(&q, "&uploads=");
        struct s3_request r;
        s3_request_init(&r, "GET", NULL);
        r.query = q.data;
        r.out = S3_OUT_BUF;
        r.out_buf = &xml;
        struct tr_error err = TR_ERROR_INIT;
        if (s3_perform(&s->c, &r, &err) < 0 || r.status != 200) {
            if (!err.code)
                s3_status_error(&s->c, &r, &err);
            s3_log(&s->c, S3_LOG_WARNING, "S3: cannot list unfinished multipart uploads: %s",
                   err.message);
            break;
        }
        const char *p = xml.data ? xml.data : "", *end = p + xml.len;
        size_t len;
        const char *item, *after;
        while ((item = s3_xml_find(p, end, "Upload", &len, &after))) {
            char key[1100], id[1024], initiated[64];
            if (s3_xml_get(item, item + len, "Key", key, sizeof(key)) &&
                s3_xml_get(item, item + len, "UploadId", id, sizeof(id)) &&
                s3_xml_get(item, item + len, "Initiated", initiated, sizeof(initiated))) {
                int64_t t = parse_iso8601(initiated);
                size_t plen = strlen(s->c.prefix);
                if (t >= 0 && now - t > (int64_t)s->stale_upload_s &&
                    strncmp(key, s->c.prefix, plen) == 0) {
                    abort_upload(s, key + plen, id);
                    aborted++;
                }
            }
            p = after;
        }
        char truncated[8] = "";
        s3_xml_get(xml.data ? xml.data : "", end, "IsTruncated", truncated, sizeof(truncated));
        if (strcmp(truncated, "true") != 0 ||
            !s3_xml_get(xml.data, end, "NextKeyMarker", key_marker, sizeof(key_marker)) ||
            !s3_xml_get(xml.data, end, "NextUploadIdMarker", id_marker, sizeof(id_marker)))
            break;
    }
    if (aborted)
        s3_log(&s->c, S3_LOG_WARNING,
               "S3: aborted %zu multipart uploads abandoned more than %u s ago",
               aborted, s->stale_upload_s);
    tr_buf_release(&q);
    tr_buf_release(&xml);
}

static int s3_reconcile(struct arc_objstore *store,
                        int (*fn)(void *ctx, const char *key, uint64_t size), void *ctx,
                        struct tr_error *err)
{
    struct s3_store *s = s3_of(store);
    /* This node's spool: puts that never committed, so never acknowledged. */
    arc_remove_temporaries(s->spool);
    abort_stale_uploads(s);
    /* ListObjectsV2, 1000 keys a page. */
    struct tr_buf q, xml;
    tr_buf_init(&q, 8192);
    tr_buf_init(&xml, XML_MAX);
    char token[2048] = "";
    size_t plen = strlen(s->c.prefix);
    int rc = 0;
    bool stop = false;
    while (!stop) {
        tr_buf_reset(&q);
        tr_buf_reset(&xml);
        if (token[0]) {
            tr_buf_adds(&q, "continuation-token=");
            s3_uri_encode(&q, token, false);
            tr_buf_addc(&q, '&');
        }
        tr_buf_adds(&q, "list-type=2&max-keys=1000");
        if (plen) {
            tr_buf_adds(&q, "&prefix=");
            s3_uri_encode(&q, s->c.prefix, false);
        }
        struct s3_request r;
        s3_request_init(&r, "GET", NULL);
        r.query = q.data;
        r.out = S3_OUT_BUF;
        r.out_buf = &xml;
        if ((rc = s3_perform(&s->c, &r, err)))
            break;
        if (r.status != 200) {
            rc = s3_status_error(&s->c, &r, err);
            break;
        }
        const char *p = xml.data ? xml.data : "", *end = p + xml.len;
        size_t len;
        const char *item, *after;
        while (!stop && (item = s3_xml_find(p, end, "Contents", &len, &after))) {
            char key[1100], size_text[32];
            if (s3_xml_get(item, item + len, "Key", key, sizeof(key)) &&
                s3_xml_get(item, item + len, "Size", size_text, sizeof(size_text)) &&
                strncmp(key, s->c.prefix, plen) == 0 && arc_key_is_valid(key + plen) && fn &&
                fn(ctx, key + plen, strtoull(size_text, NULL, 10)) < 0)
                stop = true;
            p = after;
        }
        char truncated[8] = "";
        s3_xml_get(xml.data ? xml.data : "", end, "IsTruncated", truncated, sizeof(truncated));
        if (strcmp(truncated, "true") != 0)
            break;
        if (!s3_xml_get(xml.data, end, "NextContinuationToken", token, sizeof(token)) ||
            !token[0]) {
            rc = tr_error_set(err, TR_EPROTO, "S3 at %s: a truncated listing without a "
                                              "continuation token", s->c.endpoint);
            break;
        }
    }
    tr_buf_release(&q);
    tr_buf_release(&xml);
    return rc;
}

static int s3_free_space(struct arc_objstore *store, uint64_t *bytes)
{
    struct statvfs v;
    if (statvfs(s3_of(store)->spool, &v) < 0)
        return TR_EIO;
    *bytes = (uint64_t)v.f_bavail * v.f_frsize;
    return 0;
}

static const struct arc_objstore_ops s3_ops = {
    .name = "s3",
    .close = s3_close,
    .describe = s3_describe,
    .put_begin = s3_put_begin,
    .put_flush = s3_put_flush,
    .put_target_exists = s3_put_target_exists,
    .put_commit = s3_put_commit,
    .put_abort = s3_put_abort,
    .exists = s3_exists,
    .path = NULL,
    .size = s3_size,
    .read = s3_read,
    .get = s3_get,
    .same = s3_same,
    .delete_object = s3_delete,
    .open_range = s3_open_range,
    .handle_close = s3_handle_close,
    .reconcile = s3_reconcile,
    .free_space = s3_free_space,
};
