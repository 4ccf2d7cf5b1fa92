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
    /* User identity: checked when given, required when configured. A site user's account
     * must belong to the site the AE title sends for. */
    bool has_identity = peer->identity && peer->identity->type != 0;
    bool verified = false;
    if (a->cfg.check_identity && (has_identity || a->cfg.require_identity)) {
        char account_site[ARC_SITE_MAX] = "", ae_site[ARC_SITE_MAX] = "";
        int rc = has_identity ? a->cfg.check_identity(a->cfg.identity_ctx, peer->identity,
                                                      peer->address, account_site,
                                                      sizeof(account_site))
                              : TR_EDENIED;
        if (rc == 0 && account_site[0] &&
            (arc_site_of_ae(a, peer->calling_ae, ae_site, sizeof(ae_site)) != 0 ||
             strcmp(ae_site, account_site) != 0))
            rc = TR_EDENIED;
        if (rc < 0) {
            *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER, PDU_RJ_NO_REASON};
            arc_log(a, SCP_LOG_WARNING, "association from %s (AE \"%s\") refused: %s",
                    peer->address, peer->calling_ae,
                    has_identity ? "the user identity was not accepted"
                                 : "a user identity is required");
            if (a->cfg.audit)
                a->cfg.audit(a->cfg.audit_ctx, peer->calling_ae, peer->address, "associate",
                             "denied", "", "");
            return 1;
        }
        verified = true;
    }
    char site[ARC_SITE_MAX];
    if (arc_site_of_ae(a, peer->calling_ae, site, sizeof(site)) < 0) {
        /* PS3.8 Table 9-21: rejected permanent, service-user, calling AE title not recognized. */
        *rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER,
                                  PDU_RJ_CALLING_AE_NOT_RECOGNIZED};
        arc_log(a, SCP_LOG_WARNING, "association from %s refused: unknown calling AE \"%s\"",
                peer->address, peer->calling_ae);
        return 1;
    }
    return verified ? SCP_IDENTITY_VERIFIED : 0;
}

/* The sites an AE title may see. With no sites defined, everything is one default site. */
static const char *const *visible_sites(struct arc_archive *a, const char *ae, const char **buf,
                                        char *site, size_t size)
{
    site[0] = '\0';
    if ((!a->cfg.sites || !a->cfg.sites[0].ae_title) && !a->resolve_site)
        return NULL;
    int rc = arc_site_of_ae(a, ae, site, size);
    buf[0] = rc < 0 ? "\x01" /* matches no site */ : site;
    buf[1] = NULL;
    return buf;
}

/* The audit log: which study (or level) a DIMSE query or retrieve touched. */
static void audit_access(struct arc_archive *a, const struct scp_peer *peer, const char *action,
                         const char *outcome, const struct dcm_dataset *identifier,
                         const char *site)
{
    if (!a->cfg.audit)
        return;
    char uid[DCM_UID_MAX + 1] = "", level[17] = "";
    dcm_dataset_get_uid(identifier, DCM_TAG_StudyInstanceUID, uid, sizeof(uid));
    dcm_dataset_get_string(identifier, 0x00080052, 0, level, sizeof(level));
    char object[DCM_UID_MAX + 40];
    snprintf(object, sizeof(object), "%s %s", level[0] ? level : "?", uid[0] ? uid : "*");
    a->cfg.audit(a->cfg.audit_ctx, peer->calling_ae, peer->address, action, outcome, object,
                 site ? site : "");
}

/* ---- C-STORE ------------------------------------------------------------------------------ */

static int store_begin(void *ctx, const struct scp_store *st, struct tr_sink *sink, void **handle)
{
    struct arc_archive *a = ctx;
    char site[ARC_SITE_MAX];
    arc_site_of_ae(a, st->peer->calling_ae, site, sizeof(site));
    struct arc_source src = {.site = site,
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
    char site[ARC_SITE_MAX];
    q.sites = visible_sites(a, peer->calling_ae, buf, site, sizeof(site));
    struct tr_error err = TR_ERROR_INIT;
    int n = arc_find(a, &q, emit, emit_ctx, &err);
    audit_access(a, peer, "query", n < 0 ? "failure" : "success", identifier, site);
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
    char site[ARC_SITE_MAX];
    q.sites = visible_sites(a, peer->calling_ae, buf, site, sizeof(site));
    struct arc_instance_ref *refs;
    size_t n;
    struct tr_error err = TR_ERROR_INIT;
    audit_access(a, peer, "retrieve", "success", identifier, site);
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
        /* A filesystem's objects are sent from their files; S3's are fetched one by one as
         * they are sent (instance_open): the key now, the local file then. */
        if (arc_object_path(a->store, refs[i].object_key, out[i].path, sizeof(out[i].path)) < 0)
            snprintf(out[i].path, sizeof(out[i].path), "%s", refs[i].object_key);
    }
    tr_free(refs);
    *list = out;
    *count = n;
    return DIMSE_STATUS_SUCCESS;
}

static int instance_open(void *ctx, struct scp_instance *inst, void **handle,
                         struct tr_error *err)
{
    struct arc_archive *a = ctx;
    struct arc_object_handle *h;
    int rc = arc_object_open(a->store, inst->path, &h, err);
    if (rc)
        return rc;
    snprintf(inst->path, sizeof(inst->path), "%s", arc_object_handle_path(h));
    *handle = h;
    return 0;
}

static void instance_close(void *ctx, void *handle)
{
    (void)ctx;
    arc_object_close(handle);
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
    if (!arc_objstore_is_local(a->store)) {
        h->instance_open = instance_open;
        h->instance_close = instance_close;
    }
    h->move_destination = move_destination;
    h->log = scp_log;
}
