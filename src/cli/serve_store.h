/*
 * serve_store.h - where `telerad serve` keeps its objects: [archive] store = fs (files under the
 * data folder, the default) or s3 (an S3-compatible bucket, settings in [s3]). Reads the
 * settings (with TELERAD_S3_* overrides and a credentials file), checks them, and describes
 * them for --check without secrets. Kept out of cmd_serve.c, as serve_hl7.c is.
 */
#ifndef TR_SERVE_STORE_H
#define TR_SERVE_STORE_H

#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "error.h"
#include "objstore.h"

struct serve_store_config {
    bool s3;                         /* [archive] store = s3 */
    struct arc_s3_options s3opt;     /* strings point into the configuration or below */
    char credentials_source[64];     /* where the keys came from, for --check */
    char access_key[256];            /* read from credentials_file */
    char secret_key[256];
};

void serve_store_config_init(struct serve_store_config *c);
/* Read [archive] store and [s3] (errors name the file, line and key, or the variable). The
 * keys come from, in this order: [s3] access_key / secret_key (or TELERAD_S3_ACCESS_KEY /
 * TELERAD_S3_SECRET_KEY), [s3] credentials_file, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. */
int serve_store_configure(const struct cfg *conf, struct serve_store_config *c,
                          struct tr_error *err);
/* "store = fs" / "store = s3 http://... bucket B (path-style, region R), credentials from X":
 * never a key. */
void serve_store_describe(const struct serve_store_config *c, char *out, size_t size);

#endif
