/*
 * dicomweb.h - DICOMweb (PS3.18) on the archive: QIDO-RS search, WADO-RS retrieve (instances,
 * metadata, bulk data, frames, rendered), STOW-RS store, and WADO-URI.
 *
 * Every route is under `prefix` (default "/dicom-web"), WADO-URI at "/wado". docs/api.md lists
 * them; docs/conformance.md states what is supported.
 *
 * Exported names start with dw_.
 */
#ifndef WEB_DICOMWEB_H
#define WEB_DICOMWEB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "archive.h"
#include "http.h"

struct dw_config {
    struct arc_archive *archive;
    const char *prefix;          /* default "/dicom-web" */
    unsigned max_results;        /* QIDO answers per request at most (default 1000) */
    size_t max_stow_memory;      /* DICOM JSON STOW parts (metadata + bulk data) are held in
                                    memory up to this (default 256 MiB); application/dicom
                                    parts stream to storage whatever their size */
    /* Tenancy: narrow a query to what the request may see (set q->sites and/or q->patients;
     * memory they point to is attached to the request with web_attach), or return negative to
     * refuse (403). And the site a STOW-RS request stores into, or NULL to refuse it (403).
     * NULL callbacks: everything is visible, stores go to the default site "". */
    int (*scope)(void *ctx, struct web_request *r, struct arc_query *q);
    const char *(*store_site)(void *ctx, struct web_request *r);
    /* Cross-border policy (DESIGN.md invariant 3): whether this request must see the data of
     * `site` pseudonymized, and with which key (32 bytes, kept by the origin: never sent).
     * Returns 1 (key filled), 0 (real data), or negative on error. With site NULL: 1 when the
     * request is subject to pseudonymization for any site (key not filled). NULL: never. */
    int (*pseudonym_key)(void *ctx, struct web_request *r, const char *site, uint8_t key[32]);
    void *ctx;
};

void dw_config_init(struct dw_config *c);

/* Add the DICOMweb routes to the server. The configuration must outlive the server. */
int dw_register(struct web_server *s, const struct dw_config *cfg, struct tr_error *err);

#endif
