/*
 * serve_store.c - the object store settings of `telerad serve` (see serve_store.h and
 * docs/configuration.md, [archive] store and [s3]).
 */
#include "common.h"
#include "serve_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

void serve_store_config_init(struct serve_store_config *c)
{
    memset(c, 0, sizeof(*c));
    arc_s3_options_init(&c->s3opt);
}

/* A key of the credentials file, looked for in [default], [s3], then outside any section. */
static const char *file_value(const struct cfg *f, const char *key, const char *alias)
{
    static const char *const sections[] = {"default", "s3", ""};
    for (size_t s = 0; s < TR_ARRAY_SIZE(sections); s++) {
        for (size_t i = 0; i < f->count; i++) {
            if (strcmp(f->entry[i].section, sections[s]) == 0 &&
                (strcmp(f->entry[i].key, key) == 0 || strcmp(f->entry[i].key, alias) == 0))
                return f->entry[i].value;
        }
    }
    return NULL;
}

/* The AWS shared-credentials format ([default] aws_access_key_id = ..., aws_secret_access_key =
 * ...), or access_key / secret_key. The file must not be readable by everyone. */
static int read_credentials(const char *path, struct serve_store_config *c, struct tr_error *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return tr_error_set(err, TR_EINVAL, "[s3] credentials_file %s: %s", path,
                            strerror(errno));
    if (st.st_mode & S_IROTH)
        return tr_error_set(err, TR_EDENIED, "[s3] credentials_file %s is readable by every "
                                             "user: chmod 600 it", path);
    struct cfg f = {0};
    int rc = cfg_load(&f, path, err);
    if (rc)
        return rc;
    const char *access = file_value(&f, "aws_access_key_id", "access_key");
    const char *secret = file_value(&f, "aws_secret_access_key", "secret_key");
    if (!access || !secret || !*access || !*secret) {
        rc = tr_error_set(err, TR_EINVAL, "[s3] credentials_file %s: no aws_access_key_id and "
                                          "aws_secret_access_key (or access_key and secret_key)",
                          path);
    } else if (strlen(access) >= sizeof(c->access_key) ||
               strlen(secret) >= sizeof(c->secret_key)) {
        rc = tr_error_set(err, TR_ELIMIT, "[s3] credentials_file %s: keys too long", path);
    } else {
        snprintf(c->access_key, sizeof(c->access_key), "%s", access);
        snprintf(c->secret_key, sizeof(c->secret_key), "%s", secret);
    }
    /* Do not leave the secret in freed memory. */
    for (size_t i = 0; i < f.count; i++)
        memset(f.entry[i].value, 0, strlen(f.entry[i].value));
    cfg_release(&f);
    return rc;
}

int serve_store_configure(const struct cfg *conf, struct serve_store_config *c,
                          struct tr_error *err)
{
    const char *v = cfg_get(conf, "archive", "store");
    if (v && strcmp(v, "s3") == 0)
        c->s3 = true;
    else if (v && strcmp(v, "fs") != 0)
        return tr_error_set(err, TR_EINVAL, "[archive] store: fs or s3, not \"%s\"", v);
    struct arc_s3_options *o = &c->s3opt;
    if ((v = cfg_get(conf, "s3", "endpoint")))
        o->endpoint = v;
    if ((v = cfg_get(conf, "s3", "region")))
        o->region = v;
    if ((v = cfg_get(conf, "s3", "bucket")))
        o->bucket = v;
    if ((v = cfg_get(conf, "s3", "prefix")))
        o->prefix = v;
    if ((v = cfg_get(conf, "s3", "ca_file")))
        o->ca_file = v;
    if ((v = cfg_get(conf, "s3", "addressing"))) {
        if (strcmp(v, "path") == 0)
            o->virtual_host = false;
        else if (strcmp(v, "virtual") == 0)
            o->virtual_host = true;
        else
            return tr_error_set(err, TR_EINVAL, "[s3] addressing: path or virtual, not \"%s\"",
                                v);
    }
    long n;
    int rc;
    if ((rc = cfg_get_int(conf, "s3", "multipart_threshold_mb", 5, 5L << 20, &n, err)) < 0)
        return rc;
    if (rc == 0)
        o->multipart_threshold = (uint64_t)n << 20;
    if ((rc = cfg_get_int(conf, "s3", "part_size_mb", 5, 5L << 10, &n, err)) < 0)
        return rc;
    if (rc == 0)
        o->part_size = (uint64_t)n << 20;
    if ((rc = cfg_get_int(conf, "s3", "cache_mb", 0, 1L << 30, &n, err)) < 0)
        return rc;
    if (rc == 0)
        o->cache_bytes = (uint64_t)n << 20;
    if ((rc = cfg_get_int(conf, "s3", "retries", 0, 20, &n, err)) < 0)
        return rc;
    if (rc == 0)
        o->retries = (unsigned)n;
    if (o->multipart_threshold < o->part_size)
        return tr_error_set(err, TR_EINVAL, "[s3] multipart_threshold_mb must be at least "
                                            "part_size_mb");
    if (!c->s3)
        return 0; /* the rest matters only for S3 (a credentials file need not exist) */
    /* Credentials. */
    const char *access = cfg_get(conf, "s3", "access_key");
    const char *secret = cfg_get(conf, "s3", "secret_key");
    const char *file = cfg_get(conf, "s3", "credentials_file");
    if (access && secret) {
        o->access_key = access;
        o->secret_key = secret;
        snprintf(c->credentials_source, sizeof(c->credentials_source), "%s",
                 getenv("TELERAD_S3_SECRET_KEY") ? "the environment (TELERAD_S3_*)"
                                                 : "the configuration file");
    } else if (access || secret) {
        return tr_error_set(err, TR_EINVAL, "[s3] access_key and secret_key go together");
    } else if (file) {
        if ((rc = read_credentials(file, c, err)))
            return rc;
        o->access_key = c->access_key;
        o->secret_key = c->secret_key;
        snprintf(c->credentials_source, sizeof(c->credentials_source), "credentials_file");
    } else if (getenv("AWS_ACCESS_KEY_ID") && getenv("AWS_SECRET_ACCESS_KEY")) {
        o->access_key = getenv("AWS_ACCESS_KEY_ID");
        o->secret_key = getenv("AWS_SECRET_ACCESS_KEY");
        snprintf(c->credentials_source, sizeof(c->credentials_source),
                 "the environment (AWS_*)");
    }
    if (!o->endpoint || !*o->endpoint || !o->bucket || !*o->bucket)
        return tr_error_set(err, TR_EINVAL, "[archive] store = s3 needs [s3] endpoint and "
                                            "bucket");
    if (!o->access_key)
        return tr_error_set(err, TR_EINVAL, "[archive] store = s3 needs credentials: [s3] "
                                            "access_key and secret_key (or TELERAD_S3_ACCESS_KEY "
                                            "and TELERAD_S3_SECRET_KEY), or [s3] "
                                            "credentials_file");
    if (strncmp(o->endpoint, "http://", 7) != 0 && strncmp(o->endpoint, "https://", 8) != 0)
        return tr_error_set(err, TR_EINVAL, "[s3] endpoint \"%s\": http://HOST[:PORT] or "
                                            "https://HOST[:PORT]", o->endpoint);
    return 0;
}

void serve_store_describe(const struct serve_store_config *c, char *out, size_t size)
{
    if (!c->s3) {
        snprintf(out, size, "store = fs");
        return;
    }
    const struct arc_s3_options *o = &c->s3opt;
    snprintf(out, size,
             "store = s3 %s bucket %s%s%s (%s, region %s), multipart above %llu MiB in parts "
             "of %llu MiB, cache %llu MiB, credentials from %s",
             o->endpoint, o->bucket, o->prefix && *o->prefix ? " prefix " : "",
             o->prefix ? o->prefix : "", o->virtual_host ? "virtual-host" : "path-style",
             o->region, (unsigned long long)(o->multipart_threshold >> 20),
             (unsigned long long)(o->part_size >> 20), (unsigned long long)(o->cache_bytes >> 20),
             c->credentials_source);
}
