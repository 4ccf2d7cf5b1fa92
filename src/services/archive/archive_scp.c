/*
 * archive_scp.c - the archive behind the DICOM server: C-STORE into durable ingest, C-FIND
 * against the index, C-MOVE / C-GET lists, senders mapped to sites (a site's AE titles see that
 * site's studies only).
 */
#include "common.h"
#include "archive_int.h"

#include <stdio.h>

/* ---- association policy ------------------------------------------------------------------- */

static int authorize(void *ctx, const struct scp_peer *peer, struct pdu_reject *rj)
{
    struct arc_archive *a = ctx;
    /* A site's AE title calling from outside the site's networks is not that site. */
    for (const struct arc_site_ae *s = a->cfg.sites; s && s->ae_title; s++) {
        if (strcmp(s->ae_title, peer->calling_ae) == 0 && s->networks &&
            !net_acl_allows(s->networks, peer->ip)) {
            *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                                      PDU_RJ_CALLING_AE_NOT_RECOGNIZED};
            arc_log(a, SCP_LOG_WARNING,
                    "association from %s refused: AE \"%s\" of site %s may not call from there",
                    peer->address, peer->calling_ae, s->site);
            return 1;
        }
    }
    if (!arc_site_for_ae(a, peer->calling_ae)) {
        /* PS3.8 Table 9-21: rejected permanent, service-user, calling AE title not recognized. */
        *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                                  PDU_RJ_CALLING_AE_NOT_RECOGNIZED};
        arc_log(a, SCP_LOG_WARNING, "association from %s refused: unknown calling AE \"%s\"",
                peer->address, peer->calling_ae);
        return 1;
    }
    return 0;
}

/* The sites an AE title may see. With no sites configured, everything is one default site. */
static const char *const *visible_sites(struct arc_archive *a, const char *ae, const char **buf)
{
    if (!a->cfg.sites || !a->cfg.sites[0].ae_title)
        return NULL;
    buf[0] = arc_site_for_ae(a, ae);
    buf[1] = NULL;
    if (!buf[0])
        buf[0] = "\x01"; /* matches no site */
    return buf;
}

/* ---- C-STORE ------------------------------------------------------------------------------ */

static int store_begin(void *ctx, const struct scp_store *st, struct tr_sink *sink, void **handle)
{
    struct arc_archive *a = ctx;
    const char *site = arc_site_for_ae(a, st->peer->calling_ae);
    struct arc_source src = {.site = site ? site : "",
                             .calling_ae = st->peer->calling_ae,
                             .peer = st->peer->address,
                             .sop_class = st->sop_class,
                             .sop_instance = st->sop_instance,
                             .transfer_syntax = st->transfer_syntax};
    struct arc_ingest *in;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_ingest_begin(a, &src, &in, &err) < 0) {
        arc_log(a, SCP_LOG_ERROR, "cannot receive %s from %s: %s", st->sop_instance,
                st->peer->calling_ae, err.message);
        return -1;
    }
    *sink = *arc_ingest_sink(in);
    *handle = in;
    return 0;
}

static uint16_t store_end(void *ctx, void *handle, bool complete, char *comment,
                          size_t comment_size)
{
    (void)ctx;
    struct arc_ingest_result res;
    struct tr_error err = TR_ERROR_INIT;
    arc_ingest_end(handle, complete, &res, &err);
    if (res.status != DIMSE_STATUS_SUCCESS && comment_size)
        snprintf(comment, comment_size, "%s", res.comment);
    return res.status;
}

/* ---- C-FIND ------------------------------------------------------------------------------- */

static int parse_level(const struct dcm_dataset *keys, enum arc_level *level)
{
    char text[17];
    if (dcm_dataset_get_string(keys, 0x00080052, 0, text, sizeof(text)) < 0)
        return TR_EINVAL;
    if (strcmp(text, "PATIENT") == 0)
        *level = ARC_LEVEL_PATIENT;
    else if (strcmp(text, "STUDY") == 0)
        *level = ARC_LEVEL_STUDY;
    else if (strcmp(text, "SERIES") == 0)
        *level = ARC_LEVEL_SERIES;
    else if (strcmp(text, "IMAGE") == 0)
        *level = ARC_LEVEL_IMAGE;
    else
        return TR_EINVAL;
    return 0;
}

struct find_ctx {
    struct arc_archive *a;
    const struct dcm_dataset *keys;
    const char *level_text;
    int (*emit)(void *emit_ctx, const struct dcm_dataset *match);
    void *emit_ctx;
    /* The header of the last representative object read (consecutive matches share it). */
    char header_key[300];
    struct dcm_dataset *header;
    bool stopped;
};

static const struct dcm_dataset *header_of(struct find_ctx *fc, const char *key)
{
    if (!*key)
        return NULL;
    if (fc->header && strcmp(fc->header_key, key) == 0)
        return fc->header;
    dcm_dataset_free(fc->header);
    fc->header = NULL;
    char path[4096];
    if (arc_object_path(fc->a->store, key, path, sizeof(path)) < 0)
        return NULL;
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    struct dcm_file *f;
    if (dcm_file_read(path, &opt, &f, NULL) < 0)
        return NULL;
    fc->header = dcm_file_take_dataset(f);
    dcm_file_free(f);
    /* Answers are UTF-8: convert the header once. */
    if (fc->header && dcm_dataset_convert_to_utf8(fc->header, NULL) < 0) {
        dcm_dataset_free(fc->header);
        fc->header = NULL;
    }
    snprintf(fc->header_key, sizeof(fc->header_key), "%s", key);
    return fc->header;
}

/* Sequence matching (PS3.4 C.2.2.2.6), the basics: a sequence key whose item has values
 * matches when some item of the stored sequence has those values (single value or wildcard,
 * nested sequences the same way). The index has no columns for sequences: this runs on the
 * representative instance's header, after the SQL matching. */
static bool item_matches(const struct dcm_dataset *want, const struct dcm_dataset *have,
                         unsigned depth);

static bool sequence_matches(const struct dcm_dataset *want_ds, const struct dcm_element *want,
                             const struct dcm_dataset *have, unsigned depth)
{
    (void)want_ds;
    struct dcm_dataset *wanted = dcm_element_item(want, 0);
    if (!wanted || dcm_dataset_count(wanted) == 0)
        return true; /* universal: a return key */
    const struct dcm_element *h = dcm_dataset_get(have, want->tag);
    for (unsigned i = 0; h && i < dcm_element_item_count(h); i++) {
        if (item_matches(wanted, dcm_element_item(h, i), depth + 1))
            return true;
    }
    return false;
}

static bool item_matches(const struct dcm_dataset *want, const struct dcm_dataset *have,
                         unsigned depth)
{
    if (depth > 8)
        return false;
    for (size_t i = 0; i < dcm_dataset_count(want); i++) {
        const struct dcm_element *w = dcm_dataset_at(want, i);
        if (w->vr == DCM_VR_SQ) {
            if (!sequence_matches(want, w, have, depth))
                return false;
            continue;
        }
        struct tr_buf wv, hv;
        tr_buf_init(&wv, 1 << 16);
        tr_buf_init(&hv, 1 << 16);
        bool ok = true;
        if (dcm_vr_is_string((enum dcm_vr)w->vr) &&
            dcm_element_get_string(want, w, DCM_ALL_VALUES, &wv) == 0 && wv.len &&
            strcmp(wv.data, "*") != 0) {
            const struct dcm_element *h = dcm_dataset_get(have, w->tag);
            ok = h && dcm_element_get_string(have, h, DCM_ALL_VALUES, &hv) == 0 &&
                 dcm_wildcard_match(wv.data, hv.data ? hv.data : "");
        }
        tr_buf_release(&wv);
        tr_buf_release(&hv);
        if (!ok)
            return false;
    }
    return true;
}

static int on_match(void *ctx, const struct arc_match *m)
{
    struct find_ctx *fc = ctx;
    struct dcm_dataset *r = m->attrs;
    /* Sequence keys with values filter here (see sequence_matches). */
    for (size_t i = 0; i < dcm_dataset_count(fc->keys); i++) {
        const struct dcm_element *k = dcm_dataset_at(fc->keys, i);
        if (k->vr != DCM_VR_SQ || !dcm_element_item(k, 0) ||
            dcm_dataset_count(dcm_element_item(k, 0)) == 0)
            continue;
        const struct dcm_dataset *hdr = header_of(fc, m->object_key);
        if (!hdr || !sequence_matches(fc->keys, k, hdr, 0))
            return 0; /* not a match: skip it */
    }
    dcm_dataset_set_string(r, 0x00080052, DCM_VR_CS, fc->level_text);
    /* Every other requested key: from the representative instance's header, or empty. */
    const struct dcm_dataset *hdr = NULL;
    bool header_read = false;
    for (size_t i = 0; i < dcm_dataset_count(fc->keys); i++) {
        const struct dcm_element *k = dcm_dataset_at(fc->keys, i);
        if (dcm_dataset_get(r, k->tag) || DCM_TAG_GROUP(k->tag) == 0x0000 ||
            DCM_TAG_GROUP(k->tag) == 0x0002 || k->tag == DCM_TAG_SpecificCharacterSet)
            continue;
        if (k->tag == 0x00080056) { /* Instance Availability */
            dcm_dataset_set_string(r, k->tag, DCM_VR_CS, "ONLINE");
            continue;
        }
        if (!header_read) {
            hdr = header_of(fc, m->object_key);
            header_read = true;
        }
        if (!hdr || dcm_dataset_copy_element(r, hdr, k->tag, NULL) < 0)
            dcm_dataset_set_empty(r, k->tag, (enum dcm_vr)k->vr);
    }
    /* Say what the text is in: UTF-8 if anything is not ASCII (the setters add it for index
     * values; the converted header carries it for copied ones). */
    if (hdr && !dcm_dataset_get(r, DCM_TAG_SpecificCharacterSet))
        dcm_dataset_copy_element(r, hdr, DCM_TAG_SpecificCharacterSet, NULL);
    if (!dcm_dataset_get(r, DCM_TAG_SpecificCharacterSet) &&
        dcm_dataset_get(fc->keys, DCM_TAG_SpecificCharacterSet))
        dcm_dataset_set_empty(r, DCM_TAG_SpecificCharacterSet, DCM_VR_CS);
    if (fc->emit(fc->emit_ctx, r) < 0) {
        fc->stopped = true;
        return -1;
    }
    return 0;
}

static uint16_t find(void *ctx, const struct scp_peer *peer, const char *model,
                     const struct dcm_dataset *identifier,
                     int (*emit)(void *emit_ctx, const struct dcm_dataset *match), void *emit_ctx,
                     char *comment, size_t comment_size)
{
    struct arc_archive *a = ctx;
    struct arc_query q = {.keys = identifier};
    if (parse_level(identifier, &q.level) < 0) {
        snprintf(comment, comment_size, "missing or invalid Query/Retrieve Level");
        return DIMSE_STATUS_DATASET_DOES_NOT_MATCH;
    }
    q.patient_root = strcmp(model, "1.2.840.10008.5.1.4.1.2.1.1") == 0;
    if (!q.patient_root && q.level == ARC_LEVEL_PATIENT) {
        snprintf(comment, comment_size, "PATIENT level in the study root model");
        return DIMSE_STATUS_DATASET_DOES_NOT_MATCH;
    }
    const char *buf[2];
    q.sites = visible_sites(a, peer->calling_ae, buf);
    static const char *const names[] = {"", "PATIENT", "STUDY", "SERIES", "IMAGE"};
    struct find_ctx fc = {.a = a, .keys = identifier, .level_text = names[q.level],
                          .emit = emit, .emit_ctx = emit_ctx};
    struct tr_error err = TR_ERROR_INIT;
    int n = arc_index_query(a->index, &q, on_match, &fc, &err);
    dcm_dataset_free(fc.header);
    if (n < 0) {
        snprintf(comment, comment_size, "%.64s", err.message);
        arc_log(a, SCP_LOG_WARNING, "C-FIND from %s: %s", peer->calling_ae, err.message);
        return n == TR_EINVAL ? DIMSE_STATUS_CANNOT_UNDERSTAND : DIMSE_STATUS_OUT_OF_RESOURCES;
    }
    return DIMSE_STATUS_SUCCESS;
}

/* ---- C-MOVE / C-GET ----------------------------------------------------------------------- */

static uint16_t retrieve(void *ctx, const struct scp_peer *peer, const char *model,
                         const struct dcm_dataset *identifier, struct scp_instance **list,
                         size_t *count, char *comment, size_t comment_size)
{
    struct arc_archive *a = ctx;
    struct arc_query q = {.keys = identifier};
    (void)model;
    if (parse_level(identifier, &q.level) < 0) {
        snprintf(comment, comment_size, "missing or invalid Query/Retrieve Level");
        return DIMSE_STATUS_DATASET_DOES_NOT_MATCH;
    }
    const char *buf[2];
    q.sites = visible_sites(a, peer->calling_ae, buf);
    struct arc_instance_ref *refs;
    size_t n;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_index_instances(a->index, &q, &refs, &n, &err) < 0) {
        snprintf(comment, comment_size, "%.64s", err.message);
        return err.code == TR_EINVAL ? DIMSE_STATUS_CANNOT_UNDERSTAND
                                     : DIMSE_STATUS_MOVE_OUT_OF_RESOURCES_MATCHES;
    }
    struct scp_instance *out = tr_calloc(n + 1, sizeof(*out));
    if (!out) {
        tr_free(refs);
        return DIMSE_STATUS_MOVE_OUT_OF_RESOURCES_MATCHES;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(out[i].sop_class, sizeof(out[i].sop_class), "%s", refs[i].sop_class);
        snprintf(out[i].sop_instance, sizeof(out[i].sop_instance), "%s", refs[i].sop_uid);
        snprintf(out[i].transfer_syntax, sizeof(out[i].transfer_syntax), "%s",
                 refs[i].transfer_syntax);
        arc_object_path(a->store, refs[i].object_key, out[i].path, sizeof(out[i].path));
    }
    tr_free(refs);
    *list = out;
    *count = n;
    return DIMSE_STATUS_SUCCESS;
}

static int move_destination(void *ctx, const char *ae, char *host, size_t host_size, int *port,
                            bool *tls)
{
    struct arc_archive *a = ctx;
    for (const struct arc_move_destination *d = a->cfg.destinations; d && d->ae_title; d++) {
        if (strcmp(d->ae_title, ae) == 0) {
            snprintf(host, host_size, "%s", d->host);
            *port = d->port;
            *tls = d->tls;
            return 0;
        }
    }
    return TR_ENOTFOUND;
}

static void scp_log(void *ctx, int level, const char *message)
{
    arc_log(ctx, level, "%s", message);
}

void arc_scp_handlers(struct arc_archive *a, struct scp_handlers *h)
{
    memset(h, 0, sizeof(*h));
    h->ctx = a;
    h->authorize = authorize;
    h->store_begin = store_begin;
    h->store_end = store_end;
    h->find = find;
    h->retrieve = retrieve;
    h->move_destination = move_destination;
    h->log = scp_log;
}
