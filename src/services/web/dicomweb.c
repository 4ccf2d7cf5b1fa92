/*
 * dicomweb.c - DICOMweb on the archive (see dicomweb.h): QIDO-RS (PS3.18 10.6), WADO-RS
 * (10.4), STOW-RS (10.5), WADO-URI (9).
 *
 * Retrieval streams: a study is sent part by part straight from the object files (read into
 * the server's send buffer), one instance in memory at most when it must be transcoded.
 */
#include "common.h"
#include "dicomweb.h"
#include "archive_int.h"
#include "deid.h"
#include "json.h"
#include "multipart.h"
#include "part10.h"
#include "pixel.h"
#include "principal.h"
#include "query_key.h"
#include "render.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG_RetrieveURL 0x00081190u
#define TAG_FailedSOPSequence 0x00081198u
#define TAG_ReferencedSOPSequence 0x00081199u
#define TAG_ReferencedSOPClassUID 0x00081150u
#define TAG_ReferencedSOPInstanceUID 0x00081155u
#define TAG_FailureReason 0x00081197u
#define TAG_WarningReason 0x00081196u
#define TAG_SeriesInstanceUID 0x0020000Eu
#define TAG_SOPInstanceUID 0x00080018u
#define TAG_SOPClassUID 0x00080016u
#define TAG_NumberOfFrames 0x00280008u

#define EXPLICIT_LE "1.2.840.10008.1.2.1"

enum dw_kind {
    K_QIDO_STUDIES, K_QIDO_STUDY_SERIES, K_QIDO_SERIES, K_QIDO_STUDY_INSTANCES,
    K_QIDO_SERIES_INSTANCES, K_QIDO_INSTANCES,
    K_WADO_STUDY, K_WADO_SERIES, K_WADO_INSTANCE,
    K_META_STUDY, K_META_SERIES, K_META_INSTANCE,
    K_FRAMES, K_BULK, K_RENDERED_INSTANCE, K_RENDERED_FRAME, K_THUMB_STUDY, K_THUMB_SERIES,
    K_THUMB_INSTANCE, K_STOW, K_STOW_STUDY, K_WADO_URI, K_COUNT
};

struct dw;

struct dw_route_ctx {
    struct dw *dw;
    enum dw_kind kind;
};

struct dw {
    struct dw_config cfg;
    struct dw_route_ctx routes[K_COUNT];
};

void dw_config_init(struct dw_config *c)
{
    memset(c, 0, sizeof(*c));
    c->prefix = "/dicom-web";
    c->max_results = 1000;
    c->max_stow_memory = 256u << 20;
}

/* Narrow a query to what the request may see; false after answering 403. */
static bool scoped(struct dw *dw, struct web_request *r, struct arc_query *q)
{
    if (!dw->cfg.scope || dw->cfg.scope(dw->cfg.ctx, r, q) >= 0)
        return true;
    web_reply_problem(r, 403, "Forbidden", "no access to these studies");
    return false;
}

/* A scoped lookup found nothing: when the object exists outside the request's scope, the 404
 * the client gets (which confirms nothing) hides a denial that the audit log records. */
static void note_out_of_scope(struct dw *dw, struct web_request *r, const struct arc_query *q)
{
    if (!q->sites && !q->patients)
        return;
    struct arc_query all = *q;
    all.sites = NULL;
    all.patients = NULL;
    all.npatients = 0;
    all.limit = 1;
    struct arc_instance_ref *refs = NULL;
    size_t n = 0;
    if (arc_index_instances(arc_index(dw->cfg.archive), &all, &refs, &n, NULL) == 0 && n)
        web_note_denied(r);
    tr_free(refs);
}

/* ---- cross-border pseudonymization (DESIGN.md invariant 3) -------------------------------- */

/* Does this request see pseudonymized data of some site? */
static bool pseudonymizing(struct dw *dw, struct web_request *r)
{
    return dw->cfg.pseudonym_key && dw->cfg.pseudonym_key(dw->cfg.ctx, r, NULL, NULL) == 1;
}

/* The options to pseudonymize `site`'s data for this request; false: real data. `key` holds
 * the key the options point to. */
static bool pseudonym_options(struct dw *dw, struct web_request *r, const char *site,
                              uint8_t key[32], struct dcm_deid_options *opt)
{
    if (!dw->cfg.pseudonym_key || dw->cfg.pseudonym_key(dw->cfg.ctx, r, site, key) != 1)
        return false;
    dcm_deid_options_init(opt);
    opt->key = key;
    opt->key_length = 32;
    return true;
}

/* A UID as this request sees it (mapped when pseudonymized). */
static void uid_as_seen(const struct dcm_deid_options *opt, const char *uid, char *out)
{
    if (!opt || dcm_deid_map_uid(opt, uid, strlen(uid), out) < 0)
        snprintf(out, DCM_UID_MAX + 1, "%s", uid);
}

struct study_hit {
    struct dw *dw;
    struct web_request *r;
    const char *wanted;
    char real[DCM_UID_MAX + 1];
    int found;
};

static int study_hit_emit(void *ctx, const struct dcm_dataset *m, const char *site)
{
    struct study_hit *h = ctx;
    char uid[DCM_UID_MAX + 1], seen[DCM_UID_MAX + 1];
    if (dcm_dataset_get_uid(m, DCM_TAG_StudyInstanceUID, uid, sizeof(uid)) < 0)
        return 0;
    uint8_t key[32];
    struct dcm_deid_options opt;
    bool p = pseudonym_options(h->dw, h->r, site, key, &opt);
    uid_as_seen(p ? &opt : NULL, uid, seen);
    explicit_bzero(key, sizeof(key));
    if (strcmp(seen, h->wanted) == 0) {
        snprintf(h->real, sizeof(h->real), "%s", uid);
        h->found = 1;
        return -1;
    }
    return 0;
}

/* Map the UIDs of a request path, as a pseudonymized client sees them, back to the stored
 * ones: the study among the studies visible to the request, the series and instance among
 * that study's. The origin recomputes the keyed mapping; no table of pseudonyms is kept.
 * Returns 0 (out filled), TR_ENOTFOUND, or another error (answered). */
static int resolve_pseudonyms(struct dw *dw, struct web_request *r, const char *const in[3],
                              char out[3][DCM_UID_MAX + 1])
{
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys)
        return TR_ENOMEM;
    dcm_dataset_set_empty(keys, DCM_TAG_StudyInstanceUID, DCM_VR_UI);
    struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys};
    if (!scoped(dw, r, &q)) {
        dcm_dataset_free(keys);
        return TR_EDENIED;
    }
    struct study_hit h = {.dw = dw, .r = r, .wanted = in[0]};
    struct tr_error err = TR_ERROR_INIT;
    int rc = arc_find_sites(dw->cfg.archive, &q, study_hit_emit, &h, &err);
    dcm_dataset_free(keys);
    if (rc < 0)
        return rc;
    if (!h.found)
        return TR_ENOTFOUND;
    snprintf(out[0], DCM_UID_MAX + 1, "%s", h.real);
    out[1][0] = out[2][0] = '\0';
    if (!in[1])
        return 0;
    /* Series and instance: among the study's instances. */
    keys = dcm_dataset_new();
    if (!keys)
        return TR_ENOMEM;
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, h.real);
    struct arc_query iq = {.level = ARC_LEVEL_STUDY, .keys = keys};
    struct arc_instance_ref *refs = NULL;
    size_t n = 0;
    if (!scoped(dw, r, &iq)) {
        dcm_dataset_free(keys);
        return TR_EDENIED;
    }
    rc = arc_index_instances(arc_index(dw->cfg.archive), &iq, &refs, &n, &err);
    dcm_dataset_free(keys);
    if (rc < 0)
        return rc;
    uint8_t key[32];
    struct dcm_deid_options opt;
    bool p = n && pseudonym_options(dw, r, refs[0].site, key, &opt);
    rc = TR_ENOTFOUND;
    for (size_t i = 0; i < n; i++) {
        char se[DCM_UID_MAX + 1], sop[DCM_UID_MAX + 1];
        uid_as_seen(p ? &opt : NULL, refs[i].series_uid, se);
        if (strcmp(se, in[1]) != 0)
            continue;
        snprintf(out[1], DCM_UID_MAX + 1, "%s", refs[i].series_uid);
        if (!in[2]) {
            rc = 0;
            break;
        }
        uid_as_seen(p ? &opt : NULL, refs[i].sop_uid, sop);
        if (strcmp(sop, in[2]) == 0) {
            snprintf(out[2], DCM_UID_MAX + 1, "%s", refs[i].sop_uid);
            rc = 0;
            break;
        }
    }
    explicit_bzero(key, sizeof(key));
    tr_free(refs);
    return rc;
}

/* "http://host:port/dicom-web", from the Host header the client used. */
static void base_url(struct dw *dw, struct web_request *r, char *out, size_t size)
{
    const char *host = web_header(r, "Host");
    const char *proto = web_header(r, "X-Forwarded-Proto");
    if (!proto)
        proto = web_is_tls(r) ? "https" : "http";
    bool sane = host && *host && strlen(host) < 256;
    for (const char *c = host; sane && *c; c++) {
        if (!(isalnum((unsigned char)*c) || strchr(".-:[]", *c)))
            sane = false;
    }
    snprintf(out, size, "%s://%s%s", strcmp(proto, "https") == 0 ? "https" : "http",
             sane ? host : "localhost", dw->cfg.prefix);
}

static bool is_uid(const char *s)
{
    return s && dcm_uid_is_valid(s, strlen(s));
}

/* ---- Accept ------------------------------------------------------------------------------- */

struct accept_item {
    char media[80];    /* "multipart/related", "application/dicom", ... */
    char type[80];     /* the multipart type parameter, lower case ("" if none) */
    char ts[DCM_UID_MAX + 1]; /* transfer-syntax parameter ("" if none) */
    double q;
};

/* Split an Accept header into its media ranges (commas outside quotes). */
static size_t parse_accept(const char *header, struct accept_item *items, size_t max)
{
    size_t n = 0;
    const char *p = header;
    while (p && *p && n < max) {
        const char *start = p;
        bool quoted = false;
        while (*p && (quoted || *p != ',')) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        size_t len = (size_t)(p - start);
        char one[512];
        if (len >= sizeof(one))
            len = sizeof(one) - 1;
        memcpy(one, start, len);
        one[len] = '\0';
        struct accept_item *it = &items[n];
        memset(it, 0, sizeof(*it));
        mp_media_type(one, it->media, sizeof(it->media));
        char buf[80];
        if (mp_media_param(one, "type", buf, sizeof(buf)))
            mp_media_type(buf, it->type, sizeof(it->type));
        mp_media_param(one, "transfer-syntax", it->ts, sizeof(it->ts));
        it->q = 1.0;
        if (mp_media_param(one, "q", buf, sizeof(buf)))
            it->q = strtod(buf, NULL);
        if (it->media[0] && it->q > 0)
            n++;
        if (*p == ',')
            p++;
    }
    /* Highest q first (stable). */
    for (size_t i = 1; i < n; i++) {
        for (size_t j = i; j > 0 && items[j].q > items[j - 1].q; j--) {
            struct accept_item t = items[j];
            items[j] = items[j - 1];
            items[j - 1] = t;
        }
    }
    return n;
}

/* ---- QIDO-RS ------------------------------------------------------------------------------ */

/* Default return attributes per level (PS3.18 Table 10.6.3-3, -4, -5). */
static const uint32_t study_keys[] = {
    0x00080020, 0x00080030, 0x00080050, 0x00080056, 0x00080061, 0x00080090, 0x00080201,
    0x00100010, 0x00100020, 0x00100030, 0x00100040, 0x0020000D, 0x00200010, 0x00201206,
    0x00201208, 0};
static const uint32_t series_keys[] = {0x00080060, 0x00080201, 0x0008103E, 0x0020000E,
                                       0x00200011, 0x00201209, 0x00400244, 0x00400245, 0};
static const uint32_t instance_keys[] = {0x00080016, 0x00080018, 0x00080056, 0x00080201,
                                         0x00200013, 0x00280010, 0x00280011, 0x00280100,
                                         0x00280008, 0};
/* More with includefield=all. */
static const uint32_t study_all[] = {0x00081030, 0x00080062, 0x00100021, 0x00101010,
                                     0x00101020, 0x00101030, 0x00081060, 0x00080080, 0x00321032,
                                     0x00081032, 0};
static const uint32_t series_all[] = {0x00080021, 0x00080031, 0x00180015, 0x00081090,
                                      0x00080070, 0x00181030, 0x00200060, 0x00185100, 0};
static const uint32_t instance_all[] = {0x00080008, 0x00080022, 0x00080032, 0x00080023,
                                        0x00080033, 0x00200032, 0x00200037, 0x00201041,
                                        0x00280004, 0x00280030, 0x00180050, 0x00280101,
                                        0x00280103, 0x00281050, 0x00281051, 0};

struct qido {
    struct dcm_dataset *keys;
    unsigned limit, offset;
    bool limit_given;
    bool fuzzy;
    bool all;
    struct tr_error err;
    char *includes[64];
    unsigned nincludes;
};

static int qido_param(void *ctx, const char *name, const char *value)
{
    struct qido *q = ctx;
    if (!value)
        value = "";
    if (strcmp(name, "limit") == 0 || strcmp(name, "offset") == 0) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(value, &end, 10);
        if (errno || end == value || *end || v > 100000000)
            return tr_error_set(&q->err, TR_EINVAL, "%s must be a non-negative number", name);
        if (*name == 'l') {
            q->limit = (unsigned)v;
            q->limit_given = true;
        } else {
            q->offset = (unsigned)v;
        }
        return 0;
    }
    if (strcmp(name, "fuzzymatching") == 0) {
        if (strcmp(value, "true") && strcmp(value, "false"))
            return tr_error_set(&q->err, TR_EINVAL, "fuzzymatching is true or false");
        q->fuzzy = strcmp(value, "true") == 0;
        return 0;
    }
    if (strcmp(name, "includefield") == 0) {
        /* A comma-separated list (or repeated parameter) of attributes, or "all". */
        const char *p = value;
        while (*p) {
            const char *comma = strchr(p, ',');
            size_t n = comma ? (size_t)(comma - p) : strlen(p);
            if (n == 3 && memcmp(p, "all", 3) == 0) {
                q->all = true;
            } else if (n) {
                if (q->nincludes == TR_ARRAY_SIZE(q->includes))
                    return tr_error_set(&q->err, TR_ELIMIT, "too many includefield values");
                char *s = tr_malloc(n + 1);
                if (!s)
                    return tr_error_set(&q->err, TR_ENOMEM, "out of memory");
                memcpy(s, p, n);
                s[n] = '\0';
                q->includes[q->nincludes++] = s;
            }
            p += n + (comma ? 1 : 0);
        }
        return 0;
    }
    /* A matching key: attribute (keyword or tag, dotted through sequences) = value. */
    char value_buf[1024];
    snprintf(value_buf, sizeof(value_buf), "%s", value);
    uint32_t tag;
    const char *dot = strchr(name, '.');
    if (dcm_tag_parse(name, dot ? (size_t)(dot - name) : strlen(name), &tag) && !dot &&
        dcm_dict_vr(tag) == DCM_VR_UI) {
        /* UID list matching: QIDO separates with commas, DICOM with backslashes. */
        for (char *c = value_buf; *c; c++) {
            if (*c == ',')
                *c = '\\';
        }
    }
    if (dcm_query_key_set(q->keys, name, strlen(name), value_buf, &q->err) < 0) {
        tr_error_prefix(&q->err, "query parameter %s", name);
        return q->err.code;
    }
    return 0;
}

static void add_return_keys(struct dcm_dataset *keys, const uint32_t *list)
{
    for (; *list; list++) {
        if (!dcm_dataset_get(keys, *list) && *list != 0x00080056 && *list != 0x00080201)
            dcm_dataset_set_empty(keys, *list, dcm_dict_vr(*list));
    }
}

struct qido_out {
    struct dw *dw;
    struct web_request *r;
    struct tr_buf json;
    enum arc_level level;
    char base[400];
    unsigned count, max;
    bool truncated;
    int rc;
    struct tr_error err;
};

static int qido_emit(void *ctx, const struct dcm_dataset *match, const char *site)
{
    struct qido_out *o = ctx;
    if (o->count == o->max) {
        o->truncated = true;
        return -1;
    }
    struct dcm_dataset *ds = dcm_dataset_copy(match, &o->err);
    if (!ds)
        return o->rc = TR_ENOMEM;
    uint8_t key[32];
    struct dcm_deid_options popt;
    if (pseudonym_options(o->dw, o->r, site, key, &popt)) {
        int prc = dcm_pseudonymize_dataset(ds, &popt, NULL, &o->err);
        explicit_bzero(key, sizeof(key));
        if (prc < 0) {
            dcm_dataset_free(ds);
            return o->rc = prc;
        }
    }
    char study[DCM_UID_MAX + 1] = "", series[DCM_UID_MAX + 1] = "", sop[DCM_UID_MAX + 1] = "";
    dcm_dataset_get_uid(ds, DCM_TAG_StudyInstanceUID, study, sizeof(study));
    dcm_dataset_get_uid(ds, TAG_SeriesInstanceUID, series, sizeof(series));
    dcm_dataset_get_uid(ds, TAG_SOPInstanceUID, sop, sizeof(sop));
    char url[700];
    if (o->level == ARC_LEVEL_STUDY)
        snprintf(url, sizeof(url), "%s/studies/%s", o->base, study);
    else if (o->level == ARC_LEVEL_SERIES)
        snprintf(url, sizeof(url), "%s/studies/%s/series/%s", o->base, study, series);
    else
        snprintf(url, sizeof(url), "%s/studies/%s/series/%s/instances/%s", o->base, study,
                 series, sop);
    dcm_dataset_set_bytes(ds, TAG_RetrieveURL, DCM_VR_UR, url, strlen(url));
    /* Timezone offset is asked for by default but only answered when known. */
    const struct dcm_element *tz = dcm_dataset_get(ds, 0x00080201);
    if (tz && tz->length == 0)
        dcm_dataset_remove(ds, 0x00080201);
    struct dcm_json_options jopt = {.flags = DCM_JSON_SKIP_META | DCM_JSON_SKIP_GROUP_LENGTH};
    struct tr_sink sink = tr_sink_buf(&o->json);
    if (o->count)
        tr_buf_addc(&o->json, ',');
    int rc = dcm_json_write(ds, &jopt, &sink, &o->err);
    dcm_dataset_free(ds);
    if (rc < 0)
        return o->rc = rc;
    o->count++;
    return 0;
}

static void qido(struct dw *dw, enum dw_kind kind, struct web_request *r)
{
    if (!web_accepts(r, "application/dicom+json") && !web_accepts(r, "application/json")) {
        web_reply_problem(r, 406, "Not Acceptable",
                          "search results are application/dicom+json");
        return;
    }
    struct qido q = {.keys = dcm_dataset_new()};
    if (!q.keys) {
        web_reply_problem(r, 500, "Out of memory", "cannot build the query");
        return;
    }
    enum arc_level level = kind == K_QIDO_STUDIES                                  ? ARC_LEVEL_STUDY
                           : kind == K_QIDO_STUDY_SERIES || kind == K_QIDO_SERIES ? ARC_LEVEL_SERIES
                                                                                   : ARC_LEVEL_IMAGE;
    const char *study = (kind == K_QIDO_STUDY_SERIES || kind == K_QIDO_STUDY_INSTANCES ||
                         kind == K_QIDO_SERIES_INSTANCES)
                            ? web_param(r, 0)
                            : NULL;
    const char *series = kind == K_QIDO_SERIES_INSTANCES ? web_param(r, 1) : NULL;
    if ((study && !is_uid(study)) || (series && !is_uid(series))) {
        dcm_dataset_free(q.keys);
        web_reply_problem(r, 400, "Bad Request", "the path holds an invalid UID");
        return;
    }
    if (web_query_each(r, qido_param, &q) < 0) {
        web_reply_problem(r, 400, "Bad Request", "%s", q.err.message);
        goto out;
    }
    for (unsigned i = 0; i < q.nincludes; i++) {
        uint32_t tag;
        const char *name = q.includes[i];
        if (!strchr(name, '.') && dcm_tag_parse(name, strlen(name), &tag)) {
            if (!dcm_dataset_get(q.keys, tag))
                dcm_dataset_set_empty(q.keys, tag, dcm_dict_vr(tag));
        } else if (dcm_query_key_set(q.keys, name, strlen(name), "", &q.err) < 0) {
            web_reply_problem(r, 400, "Bad Request", "includefield %s: %s", name, q.err.message);
            goto out;
        }
    }
    if (study)
        dcm_dataset_set_uid(q.keys, DCM_TAG_StudyInstanceUID, study);
    if (series)
        dcm_dataset_set_uid(q.keys, TAG_SeriesInstanceUID, series);
    /* Default return keys: the level's, and the study's for series and instances searched
     * outside a study (PS3.18 10.6.3.3.1). */
    add_return_keys(q.keys, level == ARC_LEVEL_STUDY    ? study_keys
                            : level == ARC_LEVEL_SERIES ? series_keys
                                                        : instance_keys);
    if (level == ARC_LEVEL_IMAGE)
        add_return_keys(q.keys, series_keys);
    if (!study && level != ARC_LEVEL_STUDY)
        add_return_keys(q.keys, study_keys);
    if (q.all) {
        add_return_keys(q.keys, level == ARC_LEVEL_STUDY    ? study_all
                                : level == ARC_LEVEL_SERIES ? series_all
                                                            : instance_all);
    }
    /* Required keys are always answered (the UIDs of the level and above). */
    if (!dcm_dataset_get(q.keys, DCM_TAG_StudyInstanceUID))
        dcm_dataset_set_empty(q.keys, DCM_TAG_StudyInstanceUID, DCM_VR_UI);
    if (level >= ARC_LEVEL_SERIES && !dcm_dataset_get(q.keys, TAG_SeriesInstanceUID))
        dcm_dataset_set_empty(q.keys, TAG_SeriesInstanceUID, DCM_VR_UI);
    if (level == ARC_LEVEL_IMAGE && !dcm_dataset_get(q.keys, TAG_SOPInstanceUID))
        dcm_dataset_set_empty(q.keys, TAG_SOPInstanceUID, DCM_VR_UI);

    unsigned max = dw->cfg.max_results;
    unsigned limit = q.limit_given && q.limit && q.limit < max ? q.limit : max;
    struct arc_query aq = {.level = level, .keys = q.keys, .limit = limit + 1,
                           .offset = q.offset, .fuzzy_names = q.fuzzy};
    if (!scoped(dw, r, &aq))
        goto out;
    struct qido_out o = {.dw = dw, .r = r, .level = level, .max = limit};
    tr_buf_init(&o.json, 1u << 30);
    tr_buf_addc(&o.json, '[');
    base_url(dw, r, o.base, sizeof(o.base));
    struct tr_error err = TR_ERROR_INIT;
    int n = arc_find_sites(dw->cfg.archive, &aq, qido_emit, &o, &err);
    if (o.rc < 0) {
        web_reply_problem(r, 500, "Internal Server Error", "%s", o.err.message);
    } else if (n < 0) {
        if (err.code == TR_EINVAL)
            web_reply_problem(r, 400, "Bad Request", "%s", err.message);
        else
            web_reply_problem(r, 503, "Service Unavailable", "the index failed: %s",
                              err.message);
    } else {
        tr_buf_addc(&o.json, ']');
        if (o.count == 0 && study)
            note_out_of_scope(dw, r, &aq);
        /* More matches than the client asked for, or than we answer at once. */
        if (o.truncated && !(q.limit_given && q.limit && q.limit <= max))
            web_header_add(r, "Warning",
                           "299 telerad \"The number of results exceeded the maximum supported "
                           "by the server. Additional results can be requested.\"");
        size_t len;
        char *text = tr_buf_detach(&o.json, &len);
        web_reply_owned(r, 200, "application/dicom+json", text, len);
    }
    tr_buf_release(&o.json);
out:
    for (unsigned i = 0; i < q.nincludes; i++)
        tr_free(q.includes[i]);
    dcm_dataset_free(q.keys);
}

/* ---- the instances a WADO request names --------------------------------------------------- */

/* Resolve study / series / instance UIDs from the path to the stored instances (visible
 * sites only). Replies 400 / 404 / 503 itself and returns negative on failure. */
static int instances_of(struct dw *dw, struct web_request *r, enum arc_level level,
                        struct arc_instance_ref **refs, size_t *count)
{
    const char *uids[3] = {web_param(r, 0), level >= ARC_LEVEL_SERIES ? web_param(r, 1) : NULL,
                           level >= ARC_LEVEL_IMAGE ? web_param(r, 2) : NULL};
    for (int i = 0; i < 3; i++) {
        if (uids[i] && !is_uid(uids[i])) {
            web_reply_problem(r, 400, "Bad Request", "'%.80s' is not a valid UID", uids[i]);
            return TR_EINVAL;
        }
    }
    char real[3][DCM_UID_MAX + 1];
    bool by_real_uid = false;
    if (pseudonymizing(dw, r)) {
        int prc = resolve_pseudonyms(dw, r, uids, real);
        by_real_uid = prc != 0;
        if (prc == TR_EDENIED)
            return prc; /* answered */
        if (prc == 0) {
            for (int i = 0; i < 3; i++)
                uids[i] = uids[i] ? real[i] : NULL;
        } else if (prc != TR_ENOTFOUND) {
            web_reply_problem(r, 503, "Service Unavailable", "the index failed");
            return prc;
        }
        /* Not found among the pseudonyms: the UIDs may be real ones of a site this request
         * sees unpseudonymized; the scoped query below decides. */
    }
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys) {
        web_reply_problem(r, 500, "Out of memory", "cannot build the query");
        return TR_ENOMEM;
    }
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, uids[0]);
    if (uids[1])
        dcm_dataset_set_uid(keys, TAG_SeriesInstanceUID, uids[1]);
    if (uids[2])
        dcm_dataset_set_uid(keys, TAG_SOPInstanceUID, uids[2]);
    struct arc_query q = {.level = level, .keys = keys};
    if (!scoped(dw, r, &q)) {
        dcm_dataset_free(keys);
        return TR_EDENIED;
    }
    struct tr_error err = TR_ERROR_INIT;
    int rc = arc_index_instances(arc_index(dw->cfg.archive), &q, refs, count, &err);
    if (rc == 0 && by_real_uid) {
        /* Real UIDs of a site this client may only see pseudonymized: as if absent. */
        size_t kept = 0;
        for (size_t i = 0; i < *count; i++) {
            uint8_t key[32];
            struct dcm_deid_options opt;
            if (!pseudonym_options(dw, r, (*refs)[i].site, key, &opt))
                (*refs)[kept++] = (*refs)[i];
            explicit_bzero(key, sizeof(key));
        }
        *count = kept;
    }
    if (rc == 0 && *count == 0)
        note_out_of_scope(dw, r, &q);
    dcm_dataset_free(keys);
    if (rc < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "the index failed: %s", err.message);
        return rc;
    }
    if (*count == 0) {
        tr_free(*refs);
        *refs = NULL;
        web_reply_problem(r, 404, "Not Found", "no such %s",
                          level == ARC_LEVEL_STUDY    ? "study"
                          : level == ARC_LEVEL_SERIES ? "series"
                                                      : "instance");
        return TR_ENOTFOUND;
    }
    return 0;
}

static int read_object(struct dw *dw, const char *key, bool header_only, struct dcm_file **f,
                       struct tr_error *err)
{
    struct arc_object_handle *h; /* the object as a local file (S3: a cached copy) */
    int rc = arc_object_open(arc_objects(dw->cfg.archive), key, &h, err);
    if (rc < 0)
        return rc;
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = header_only;
    rc = dcm_file_read(arc_object_handle_path(h), &opt, f, err); /* maps: outlives the handle */
    arc_object_close(h);
    return rc;
}

/* ---- streamed responses ------------------------------------------------------------------- */

/* A response made of pieces: each piece is some bytes in memory followed by a range of a file.
 * next() prepares the following piece; the reader copies it into the server's buffer. */
struct out_stream {
    struct dw *dw;
    int (*next)(struct out_stream *os);
    void (*cleanup)(struct out_stream *os);
    struct tr_buf mem;
    size_t mem_pos;
    int fd;
    uint64_t file_off, file_left;
    bool ended;
    /* what the pieces come from */
    struct arc_instance_ref *refs;
    size_t count, index;
    char boundary[40];
    char ts_want[DCM_UID_MAX + 1]; /* "" or "*": as stored */
    bool allow_lossy;
    bool single;                   /* one application/dicom body, no multipart */
    char base[400];
    char prefix[64];
    int mode;                      /* 0 instances, 1 metadata */
    struct web_request *r;         /* for the cross-border policy, per instance */
};

static ssize_t os_read(void *ctx, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    struct out_stream *os = ctx;
    size_t n = 0;
    while (n < max) {
        if (os->mem_pos < os->mem.len) {
            size_t k = os->mem.len - os->mem_pos;
            if (k > max - n)
                k = max - n;
            memcpy(buf + n, os->mem.data + os->mem_pos, k);
            os->mem_pos += k;
            n += k;
            continue;
        }
        if (os->file_left) {
            size_t want = os->file_left < max - n ? (size_t)os->file_left : max - n;
            ssize_t got = pread(os->fd, buf + n, want, (off_t)os->file_off);
            if (got < 0 && errno == EINTR)
                continue;
            if (got <= 0) /* the object shrank or the disk failed: cut the connection */
                return n ? (ssize_t)n : -1;
            os->file_off += (uint64_t)got;
            os->file_left -= (uint64_t)got;
            n += (size_t)got;
            continue;
        }
        if (os->fd >= 0) {
            close(os->fd);
            os->fd = -1;
        }
        if (os->ended)
            break;
        tr_buf_reset(&os->mem);
        os->mem_pos = 0;
        int rc = os->next(os);
        if (rc < 0)
            return n ? (ssize_t)n : -1; /* the next call fails: the connection is cut */
        if (rc == 0)
            os->ended = true;
    }
    return (ssize_t)n;
}

static void os_free(void *ctx)
{
    struct out_stream *os = ctx;
    if (os->cleanup)
        os->cleanup(os);
    if (os->fd >= 0)
        close(os->fd);
    tr_buf_release(&os->mem);
    tr_free(os->refs);
    tr_free(os);
}

static struct out_stream *os_new(struct dw *dw)
{
    struct out_stream *os = tr_calloc(1, sizeof(*os));
    if (!os)
        return NULL;
    os->dw = dw;
    os->fd = -1;
    tr_buf_init(&os->mem, (size_t)4 << 30);
    uint8_t rnd[12];
    FILE *f = fopen("/dev/urandom", "rb");
    if (!f || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd))
        memset(rnd, 0x5a, sizeof(rnd));
    if (f)
        fclose(f);
    size_t k = (size_t)snprintf(os->boundary, sizeof(os->boundary), "telerad-");
    for (size_t i = 0; i < sizeof(rnd); i++)
        k += (size_t)snprintf(os->boundary + k, sizeof(os->boundary) - k, "%02x", rnd[i]);
    return os;
}

/* ---- WADO-RS: instances ------------------------------------------------------------------- */

static bool is_native(const char *ts)
{
    const struct dcm_transfer_syntax *t = dcm_ts_lookup(ts);
    return t && !(t->flags & (DCM_TS_ENCAPSULATED | DCM_TS_REFERENCED));
}

/* Can an object stored in `from` be sent in `to`? */
static bool can_send(const char *from, const char *to)
{
    if (!*to || strcmp(to, "*") == 0 || strcmp(from, to) == 0)
        return true;
    const struct dcm_transfer_syntax *t = dcm_ts_lookup(to);
    if (!t || (t->flags & DCM_TS_REFERENCED))
        return false;
    if (is_native(from) && is_native(to))
        return true;
    if (!is_native(from) && !dcm_pixel_can_decode(from))
        return false;
    return is_native(to) || dcm_pixel_can_encode(to);
}

/* The whole object re-encoded in `to` (into os->mem after the part header). */
static int transcode_object(struct out_stream *os, const struct arc_instance_ref *ref,
                            const char *to, char *used, size_t used_size, struct tr_buf *out,
                            const struct dcm_deid_options *popt, struct tr_error *err)
{
    struct dcm_file *f;
    int rc = read_object(os->dw, ref->object_key, false, &f, err);
    if (rc < 0)
        return rc;
    if (!*to || strcmp(to, "*") == 0)
        to = f->ts_uid; /* re-encoded only to pseudonymize */
    if (popt && (rc = dcm_pseudonymize_dataset(f->dataset, popt, NULL, err)) < 0) {
        dcm_file_free(f);
        return rc;
    }
    /* The meta group names the instance as the data set now does. */
    if (popt) {
        char sop[DCM_UID_MAX + 1];
        if (dcm_dataset_get_uid(f->dataset, TAG_SOPInstanceUID, sop, sizeof(sop)) == 0 && f->meta)
            dcm_dataset_set_uid(f->meta, 0x00020003, sop);
    }
    const char *target = to;
    const struct dcm_element *px = dcm_dataset_get(f->dataset, DCM_TAG_PixelData);
    bool to_native = is_native(to), from_native = is_native(f->ts_uid);
    if (!px && !to_native)
        target = EXPLICIT_LE; /* no pixels to compress: sent uncompressed (PS3.18 8.7.3.5) */
    else if (px && !(from_native && to_native))
        rc = dcm_pixel_transcode(f->dataset, f->ts_uid, to, os->allow_lossy, err);
    if (rc == 0) {
        struct dcm_write_options wopt;
        dcm_write_options_init(&wopt);
        wopt.ts_uid = target;
        struct tr_sink sink = tr_sink_buf(out);
        rc = dcm_file_write(f, &wopt, &sink, err);
    }
    snprintf(used, used_size, "%s", target);
    dcm_file_free(f);
    return rc;
}

static int next_instance(struct out_stream *os)
{
    if (os->index == os->count) {
        if (!os->single)
            tr_buf_addf(&os->mem, "\r\n--%s--\r\n", os->boundary);
        return 0;
    }
    const struct arc_instance_ref *ref = &os->refs[os->index++];
    uint8_t key[32];
    struct dcm_deid_options popt;
    bool pseudo = os->r && pseudonym_options(os->dw, os->r, ref->site, key, &popt);
    bool as_stored = !pseudo && (!os->ts_want[0] || strcmp(os->ts_want, "*") == 0 ||
                                 strcmp(os->ts_want, ref->transfer_syntax) == 0);
    struct tr_error err = TR_ERROR_INIT;
    if (as_stored) {
        struct arc_object_handle *h;
        if (arc_object_open(arc_objects(os->dw->cfg.archive), ref->object_key, &h, NULL) < 0)
            return TR_EIO;
        int fd = dup(arc_object_handle_fd(h)); /* stays valid after the handle */
        arc_object_close(h);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
            if (fd >= 0)
                close(fd);
            return TR_EIO;
        }
        posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
        if (!os->single)
            tr_buf_addf(&os->mem,
                        "%s--%s\r\nContent-Type: application/dicom; transfer-syntax=%s\r\n"
                        "Content-Length: %" PRIu64 "\r\n\r\n",
                        os->index > 1 ? "\r\n" : "", os->boundary, ref->transfer_syntax,
                        (uint64_t)st.st_size);
        os->fd = fd;
        os->file_off = 0;
        os->file_left = (uint64_t)st.st_size;
        return 1;
    }
    struct tr_buf body;
    tr_buf_init(&body, (size_t)4 << 30);
    char used[DCM_UID_MAX + 1];
    int rc = transcode_object(os, ref, os->ts_want, used, sizeof(used), &body,
                              pseudo ? &popt : NULL, &err);
    explicit_bzero(key, sizeof(key));
    if (rc < 0) {
        tr_buf_release(&body);
        return rc;
    }
    if (!os->single)
        tr_buf_addf(&os->mem,
                    "%s--%s\r\nContent-Type: application/dicom; transfer-syntax=%s\r\n"
                    "Content-Length: %zu\r\n\r\n",
                    os->index > 1 ? "\r\n" : "", os->boundary, used, body.len);
    tr_buf_add(&os->mem, body.data, body.len);
    tr_buf_release(&body);
    return 1;
}

static void wado(struct dw *dw, enum dw_kind kind, struct web_request *r)
{
    enum arc_level level = kind == K_WADO_STUDY    ? ARC_LEVEL_STUDY
                           : kind == K_WADO_SERIES ? ARC_LEVEL_SERIES
                                                   : ARC_LEVEL_IMAGE;
    /* What the client takes: multipart/related of application/dicom, in which transfer
     * syntaxes (PS3.18 8.7.3); a single application/dicom for one instance. */
    struct accept_item items[16];
    const char *accept = web_header(r, "Accept");
    size_t n = accept && *accept ? parse_accept(accept, items, 16) : 0;
    if (n == 0) {
        n = 1;
        memset(&items[0], 0, sizeof(items[0]));
        snprintf(items[0].media, sizeof(items[0].media), "multipart/related");
    }
    const char *wanted[16];
    size_t nwanted = 0;
    bool single = false, any_ok = false;
    for (size_t i = 0; i < n; i++) {
        bool multi = strcmp(items[i].media, "multipart/related") == 0 &&
                     (!items[i].type[0] || strcmp(items[i].type, "application/dicom") == 0);
        bool star = strcmp(items[i].media, "*/*") == 0 ||
                    strcmp(items[i].media, "multipart/*") == 0 ||
                    (strcmp(items[i].media, "multipart/related") == 0 &&
                     strcmp(items[i].type, "*/*") == 0);
        bool one = strcmp(items[i].media, "application/dicom") == 0 && level == ARC_LEVEL_IMAGE;
        if (!multi && !star && !one)
            continue;
        if (!any_ok)
            single = one;
        any_ok = true;
        wanted[nwanted++] = items[i].ts[0] ? items[i].ts : EXPLICIT_LE;
    }
    if (!any_ok) {
        web_reply_problem(r, 406, "Not Acceptable",
                          "instances are sent as multipart/related; type=\"application/dicom\"");
        return;
    }
    struct arc_instance_ref *refs;
    size_t count;
    if (instances_of(dw, r, level, &refs, &count) < 0)
        return;
    /* One transfer syntax for the response: the first acceptable one every instance can be
     * sent in. */
    const char *chosen = NULL;
    for (size_t w = 0; w < nwanted && !chosen; w++) {
        bool all = true;
        for (size_t i = 0; i < count && all; i++)
            all = can_send(refs[i].transfer_syntax, wanted[w]);
        if (all)
            chosen = wanted[w];
    }
    if (!chosen) {
        web_reply_problem(r, 406, "Not Acceptable",
                          "cannot send these instances in the transfer syntax asked for (%s); "
                          "ask with transfer-syntax=* for them as stored",
                          wanted[0]);
        tr_free(refs);
        return;
    }
    struct out_stream *os = os_new(dw);
    if (!os) {
        tr_free(refs);
        web_reply_problem(r, 500, "Out of memory", "cannot start the response");
        return;
    }
    os->refs = refs;
    os->count = count;
    os->next = next_instance;
    os->r = r;
    os->single = single;
    snprintf(os->ts_want, sizeof(os->ts_want), "%s", chosen);
    const struct dcm_transfer_syntax *t = dcm_ts_lookup(chosen);
    os->allow_lossy = t && (t->flags & DCM_TS_LOSSY); /* asked for by name */
    char type[160];
    if (single)
        snprintf(type, sizeof(type), "application/dicom");
    else
        snprintf(type, sizeof(type),
                 "multipart/related; type=\"application/dicom\"; boundary=%s", os->boundary);
    web_reply_stream(r, 200, type, WEB_SIZE_UNKNOWN, os_read, os, os_free);
}

/* ---- WADO-RS: metadata -------------------------------------------------------------------- */

struct bulk_ctx {
    const char *base; /* ".../studies/x/series/y/instances/z" */
    const char *ts;
};

#define BULK_THRESHOLD 4096 /* binary values this long or longer go by BulkDataURI */

/* BulkDataURI: ".../bulkdata/<offset>-<length>" for values in the stored file (little
 * endian, not deflated): one part with the value's bytes; ".../bulkdata/pixeldata" for
 * encapsulated pixel data: one part per frame. Pixel Data is always a BulkDataURI (viewers
 * expect it so, as Orthanc does), other values from BULK_THRESHOLD bytes; else inline.
 * Called for every binary value (the JSON writer's threshold is 0). */
static int bulk_uri(void *ctx, const struct dcm_dataset *ds, const struct dcm_element *e,
                    struct tr_buf *out)
{
    struct bulk_ctx *b = ctx;
    const struct dcm_transfer_syntax *t = dcm_ts_lookup(b->ts);
    if (!t || (t->flags & (DCM_TS_BIG_ENDIAN | DCM_TS_DEFLATED)))
        return 1;
    bool pixels = e->tag == DCM_TAG_PixelData && !dcm_dataset_parent(ds);
    if (pixels && (e->flags & DCM_ELEM_ENCAPSULATED))
        return tr_buf_addf(out, "%s/bulkdata/pixeldata", b->base) < 0 ? TR_ENOMEM : 0;
    if ((e->flags & DCM_ELEM_ENCAPSULATED) || e->offset == DCM_NO_OFFSET || e->length == 0 ||
        (!pixels && e->length < BULK_THRESHOLD))
        return 1;
    return tr_buf_addf(out, "%s/bulkdata/%" PRIu64 "-%" PRIu32, b->base, e->offset, e->length) <
                   0
               ? TR_ENOMEM
               : 0;
}

static int metadata_of(struct out_stream *os, const struct arc_instance_ref *ref,
                       struct tr_buf *out)
{
    struct dcm_file *f;
    struct tr_error err = TR_ERROR_INIT;
    int rc = read_object(os->dw, ref->object_key, false, &f, &err);
    if (rc < 0)
        return rc;
    uint8_t key[32];
    struct dcm_deid_options popt;
    bool pseudo = os->r && pseudonym_options(os->dw, os->r, ref->site, key, &popt);
    if (pseudo && (rc = dcm_pseudonymize_dataset(f->dataset, &popt, NULL, &err)) < 0) {
        explicit_bzero(key, sizeof(key));
        dcm_file_free(f);
        return rc;
    }
    char study[DCM_UID_MAX + 1], series[DCM_UID_MAX + 1], sop[DCM_UID_MAX + 1];
    uid_as_seen(pseudo ? &popt : NULL, ref->study_uid, study);
    uid_as_seen(pseudo ? &popt : NULL, ref->series_uid, series);
    uid_as_seen(pseudo ? &popt : NULL, ref->sop_uid, sop);
    explicit_bzero(key, sizeof(key));
    char base[900];
    snprintf(base, sizeof(base), "%s/studies/%s/series/%s/instances/%s", os->base, study, series,
             sop);
    struct bulk_ctx b = {base, f->ts_uid};
    struct dcm_json_options jopt = {.flags = DCM_JSON_SKIP_META | DCM_JSON_SKIP_GROUP_LENGTH,
                                    .bulk_threshold = 0, /* bulk_uri decides */
                                    .bulk_uri = bulk_uri,
                                    .ctx = &b};
    /* The transfer syntax is part of what a viewer needs (PS3.18 F.2: 00020010 is allowed). */
    struct dcm_dataset *ds = f->dataset;
    char ts[DCM_UID_MAX + 1];
    snprintf(ts, sizeof(ts), "%s", f->ts_uid);
    dcm_dataset_set_uid(ds, 0x00020010, ts);
    struct tr_sink sink = tr_sink_buf(out);
    rc = dcm_json_write(ds, &jopt, &sink, &err);
    dcm_file_free(f);
    return rc;
}

static int next_metadata(struct out_stream *os)
{
    if (os->index == os->count) {
        tr_buf_addc(&os->mem, ']');
        return 0;
    }
    if (os->index == 0)
        tr_buf_addc(&os->mem, '[');
    else
        tr_buf_addc(&os->mem, ',');
    const struct arc_instance_ref *ref = &os->refs[os->index++];
    return metadata_of(os, ref, &os->mem) < 0 ? TR_EIO : 1;
}

static void metadata(struct dw *dw, enum dw_kind kind, struct web_request *r)
{
    if (!web_accepts(r, "application/dicom+json") && !web_accepts(r, "application/json")) {
        web_reply_problem(r, 406, "Not Acceptable", "metadata is application/dicom+json");
        return;
    }
    enum arc_level level = kind == K_META_STUDY    ? ARC_LEVEL_STUDY
                           : kind == K_META_SERIES ? ARC_LEVEL_SERIES
                                                   : ARC_LEVEL_IMAGE;
    struct arc_instance_ref *refs;
    size_t count;
    if (instances_of(dw, r, level, &refs, &count) < 0)
        return;
    struct out_stream *os = os_new(dw);
    if (!os) {
        tr_free(refs);
        web_reply_problem(r, 500, "Out of memory", "cannot start the response");
        return;
    }
    os->refs = refs;
    os->count = count;
    os->next = next_metadata;
    os->r = r;
    base_url(dw, r, os->base, sizeof(os->base));
    /* The first instance is read now, so that a broken object is an error status, not a cut
     * connection. */
    tr_buf_addc(&os->mem, '[');
    os->index = 1;
    if (metadata_of(os, &refs[0], &os->mem) < 0) {
        os_free(os);
        web_reply_problem(r, 500, "Internal Server Error", "cannot read a stored object");
        return;
    }
    web_reply_stream(r, 200, "application/dicom+json", WEB_SIZE_UNKNOWN, os_read, os, os_free);
}

/* ---- WADO-RS: frames and bulk data -------------------------------------------------------- */

/* The media type of a compressed frame (PS3.18 Table 8.7.3-3). */
static const char *frame_media(const char *ts)
{
    static const struct {
        const char *prefix;
        const char *media;
    } map[] = {
        {"1.2.840.10008.1.2.4.50", "image/jpeg"},   {"1.2.840.10008.1.2.4.51", "image/jpeg"},
        {"1.2.840.10008.1.2.4.57", "image/jpeg"},   {"1.2.840.10008.1.2.4.70", "image/jpeg"},
        {"1.2.840.10008.1.2.4.80", "image/jls"},    {"1.2.840.10008.1.2.4.81", "image/jls"},
        {"1.2.840.10008.1.2.4.90", "image/jp2"},    {"1.2.840.10008.1.2.4.91", "image/jp2"},
        {"1.2.840.10008.1.2.4.201", "image/jphc"},  {"1.2.840.10008.1.2.4.202", "image/jphc"},
        {"1.2.840.10008.1.2.4.203", "image/jphc"},  {"1.2.840.10008.1.2.5", "image/dicom-rle"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(map); i++) {
        if (strcmp(map[i].prefix, ts) == 0)
            return map[i].media;
    }
    return NULL;
}

/* Parse "1,3,5" (1-based frame numbers). */
static int parse_frames(const char *list, uint32_t *frames, size_t max, size_t *count)
{
    *count = 0;
    const char *p = list;
    while (*p) {
        char *end;
        errno = 0;
        unsigned long v = strtoul(p, &end, 10);
        if (errno || end == p || v == 0 || v > UINT32_MAX || (*end && *end != ',') ||
            *count == max)
            return TR_EINVAL;
        frames[(*count)++] = (uint32_t)v;
        p = *end ? end + 1 : end;
    }
    return *count ? 0 : TR_EINVAL;
}

/* How WADO-RS frames go to this client, by its Accept header (PS3.18 8.7.3), for an object
 * whose frames are in transfer syntax ts, media being the media type of its compressed frames
 * (frame_media(); NULL for native frames): as stored (the compressed bitstreams), decoded to
 * application/octet-stream in Explicit VR Little Endian, or not at all (406). The media range
 * of highest q that names a form decides (parse_accept orders them). */
enum frames_form { FRAMES_NOT_ACCEPTABLE, FRAMES_DECODED, FRAMES_AS_STORED };

static enum frames_form negotiate_frames(struct web_request *r, const char *ts,
                                         const char *media)
{
    const char *accept = web_header(r, "Accept");
    struct accept_item items[16];
    size_t n = accept && *accept ? parse_accept(accept, items, 16) : 0;
    if (n == 0)
        return FRAMES_DECODED;
    for (size_t i = 0; i < n; i++) {
        const char *type = strcmp(items[i].media, "multipart/related") == 0 ? items[i].type
                                                                           : items[i].media;
        if (!*type || strcmp(type, "*/*") == 0 || strcmp(items[i].media, "*/*") == 0 ||
            strcmp(type, "application/octet-stream") == 0) {
            bool as_stored = strcmp(items[i].ts, "*") == 0 || strcmp(items[i].ts, ts) == 0;
            return media && as_stored ? FRAMES_AS_STORED : FRAMES_DECODED;
        }
        if (media && strcmp(type, media) == 0)
            return FRAMES_AS_STORED;
    }
    return FRAMES_NOT_ACCEPTABLE;
}

/* Native frames of an object in a remote store (S3) with two ranged GETs — the header, then
 * each frame's bytes — instead of fetching the whole object, which for a multi-frame object
 * (tomosynthesis, cine) may be hundreds of MB. Returns 1 when it answered, 0 when the general
 * path must (not remote, already cached whole, compressed or big endian pixel data, Pixel
 * Data of a VR other than OB, OW or UN, a header longer than the first range, 1-bit frames,
 * an Accept it does not serve). */
#define HEADER_RANGE 65536
static int ranged_native_frames(struct dw *dw, struct web_request *r, const char *key,
                                const uint32_t *numbers, size_t nframes)
{
    struct arc_objstore *store = arc_objects(dw->cfg.archive);
    char path[16];
    /* Native frames are only ever sent decoded (as application/octet-stream): whether the
     * client takes them so does not depend on the stored transfer syntax, and is known before
     * anything is fetched. Anything else (406 included) is the general path's to answer. */
    if (arc_object_path(store, key, path, sizeof(path)) != TR_EUNSUPPORTED ||
        negotiate_frames(r, EXPLICIT_LE, NULL) != FRAMES_DECODED)
        return 0;
    struct arc_object_handle *h;
    if (arc_object_open_range(store, key, 0, HEADER_RANGE, &h, NULL) < 0)
        return 0;
    if (arc_object_handle_complete(h) || arc_object_handle_offset(h) != 0) {
        arc_object_close(h); /* the whole object is local already: the general path */
        return 0;
    }
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    struct dcm_file *f = NULL;
    int fd = arc_object_handle_fd(h);
    uint64_t have = arc_object_handle_length(h);
    uint8_t el[12];
    int answered = 0;
    bool implicit = false;
    if (fd < 0 || dcm_file_read(arc_object_handle_path(h), &opt, &f, NULL) < 0 ||
        !f->stopped_before_pixels || f->pixel_offset + sizeof(el) > have ||
        pread(fd, el, sizeof(el), (off_t)f->pixel_offset) != (ssize_t)sizeof(el))
        goto out;
    implicit = strcmp(f->ts_uid, "1.2.840.10008.1.2") == 0;
    if (!implicit && strcmp(f->ts_uid, EXPLICIT_LE) != 0)
        goto out; /* compressed or big endian */
    /* The Pixel Data element's header (PS3.5 7.1): (7FE0,0010), then its length; explicit:
     * the VR, two reserved bytes and a 32-bit length, taken only for OB, OW or UN (any other
     * VR, or a short form, is the general path's); implicit: the length at once, the VR
     * being OW (PS3.5 A.1). */
    if (tr_le16(el) != 0x7FE0 || tr_le16(el + 2) != 0x0010)
        goto out;
    if (!implicit && memcmp(el + 4, "OB", 2) != 0 && memcmp(el + 4, "OW", 2) != 0 &&
        memcmp(el + 4, "UN", 2) != 0)
        goto out;
    uint32_t value_len = implicit ? tr_le32(el + 4) : tr_le32(el + 8);
    uint64_t value_off = f->pixel_offset + (implicit ? 8 : 12);
    if (value_len == 0xFFFFFFFFu)
        goto out;
    struct dcm_pixel_desc desc;
    if (dcm_dataset_set_empty(f->dataset, DCM_TAG_PixelData, DCM_VR_OW) < 0 ||
        dcm_pixel_desc_read(f->dataset, &desc, NULL) < 0 || desc.bits_allocated < 8)
        goto out;
    uint64_t frame_size = dcm_pixel_frame_size(&desc);
    if (!frame_size || (uint64_t)desc.frames * frame_size > value_len)
        goto out;
    answered = 1;
    for (size_t i = 0; i < nframes; i++) {
        if (numbers[i] > desc.frames) {
            web_reply_problem(r, 404, "Not Found", "frame %" PRIu32 " of %" PRIu32, numbers[i],
                              desc.frames);
            goto out;
        }
    }
    struct out_stream *os = os_new(dw);
    if (!os) {
        web_reply_problem(r, 500, "Out of memory", "cannot answer");
        goto out;
    }
    struct tr_error err = TR_ERROR_INIT;
    int rc = 0;
    for (size_t i = 0; i < nframes && rc == 0; i++) {
        uint64_t off = value_off + (uint64_t)(numbers[i] - 1) * frame_size;
        struct arc_object_handle *fh;
        if ((rc = arc_object_open_range(store, key, off, frame_size, &fh, &err)) < 0)
            break;
        tr_buf_addf(&os->mem, "%s--%s\r\nContent-Type: application/octet-stream; "
                              "transfer-syntax=%s\r\nContent-Length: %" PRIu64 "\r\n\r\n",
                    i ? "\r\n" : "", os->boundary, EXPLICIT_LE, frame_size);
        size_t at = os->mem.len;
        int ffd = arc_object_handle_fd(fh);
        if (arc_object_handle_length(fh) < frame_size || ffd < 0 ||
            tr_buf_grow(&os->mem, (size_t)frame_size) < 0 ||
            pread(ffd, os->mem.data + at, (size_t)frame_size,
                  (off_t)arc_object_handle_offset(fh)) != (ssize_t)frame_size)
            rc = tr_error_set(&err, TR_EIO, "frame %" PRIu32 ": cannot read its bytes",
                              numbers[i]);
        else
            os->mem.data[os->mem.len += (size_t)frame_size] = '\0';
        arc_object_close(fh);
    }
    if (rc < 0) {
        os_free(os);
        web_reply_problem(r, 500, "Internal Server Error", "frame: %s", err.message);
        goto out;
    }
    tr_buf_addf(&os->mem, "\r\n--%s--\r\n", os->boundary);
    char type[200];
    snprintf(type, sizeof(type), "multipart/related; type=\"application/octet-stream\"; "
                                 "boundary=%s", os->boundary);
    size_t len;
    char *body = tr_buf_detach(&os->mem, &len);
    os_free(os);
    web_reply_owned(r, 200, type, body, len);
out:
    dcm_file_free(f);
    arc_object_close(h);
    return answered;
}

static void frames(struct dw *dw, struct web_request *r)
{
    uint32_t numbers[1024];
    size_t nframes;
    if (parse_frames(web_param(r, 3), numbers, TR_ARRAY_SIZE(numbers), &nframes) < 0) {
        web_reply_problem(r, 400, "Bad Request",
                          "frames are a comma-separated list of frame numbers from 1");
        return;
    }
    struct arc_instance_ref *refs;
    size_t count;
    if (instances_of(dw, r, ARC_LEVEL_IMAGE, &refs, &count) < 0)
        return;
    if (ranged_native_frames(dw, r, refs[0].object_key, numbers, nframes)) {
        tr_free(refs);
        return;
    }
    struct dcm_file *f;
    struct tr_error err = TR_ERROR_INIT;
    int rc = read_object(dw, refs[0].object_key, false, &f, &err);
    tr_free(refs);
    if (rc < 0) {
        web_reply_problem(r, 500, "Internal Server Error", "cannot read the object: %s",
                          err.message);
        return;
    }
    struct dcm_pixel_desc desc;
    if (dcm_pixel_desc_read(f->dataset, &desc, &err) < 0) {
        dcm_file_free(f);
        web_reply_problem(r, err.code == TR_ENOTFOUND ? 404 : 422,
                          err.code == TR_ENOTFOUND ? "Not Found" : "Unprocessable Content",
                          "%s", err.code == TR_ENOTFOUND ? "this instance has no pixel data"
                                                         : err.message);
        return;
    }
    for (size_t i = 0; i < nframes; i++) {
        if (numbers[i] > desc.frames) {
            dcm_file_free(f);
            web_reply_problem(r, 404, "Not Found", "frame %" PRIu32 " of %" PRIu32,
                              numbers[i], desc.frames);
            return;
        }
    }
    /* Compressed frames go as stored when the client takes their media type or any transfer
     * syntax (transfer-syntax=*); otherwise frames are decoded to application/octet-stream. */
    const char *media = frame_media(f->ts_uid);
    enum frames_form form = negotiate_frames(r, f->ts_uid, media);
    bool raw = form == FRAMES_AS_STORED;
    if (form == FRAMES_NOT_ACCEPTABLE) {
        dcm_file_free(f);
        web_reply_problem(r, 406, "Not Acceptable",
                          "frames are sent as application/octet-stream%s%s", media ? " or " : "",
                          media ? media : "");
        return;
    }
    if (!raw && media && !dcm_pixel_can_decode(f->ts_uid)) {
        dcm_file_free(f);
        web_reply_problem(r, 406, "Not Acceptable",
                          "frames in %s cannot be decompressed here; accept %s or "
                          "transfer-syntax=*", f->ts_uid, media);
        return;
    }
    struct out_stream *os = os_new(dw);
    if (!os) {
        dcm_file_free(f);
        web_reply_problem(r, 500, "Out of memory", "cannot answer");
        return;
    }
    /* Frames are built in memory: a few frames of one instance. */
    struct tr_buf scratch, frame;
    tr_buf_init(&scratch, (size_t)2 << 30);
    tr_buf_init(&frame, (size_t)2 << 30);
    char part_type[160];
    if (raw)
        snprintf(part_type, sizeof(part_type), "%s; transfer-syntax=%s", media, f->ts_uid);
    else
        snprintf(part_type, sizeof(part_type), "application/octet-stream; transfer-syntax=%s",
                 EXPLICIT_LE);
    for (size_t i = 0; i < nframes; i++) {
        const uint8_t *bytes;
        size_t len;
        if (raw || !media) {
            rc = dcm_pixel_frame_encoded(f->dataset, f->ts_uid, numbers[i] - 1, &scratch, &bytes,
                                         &len, &err);
        } else {
            rc = dcm_pixel_decode_frame(f->dataset, f->ts_uid, numbers[i] - 1, &frame, NULL,
                                        &err);
            bytes = (const uint8_t *)frame.data;
            len = frame.len;
        }
        if (rc < 0)
            break;
        tr_buf_addf(&os->mem, "%s--%s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                    i ? "\r\n" : "", os->boundary, part_type, len);
        if (tr_buf_add(&os->mem, bytes, len) < 0) {
            rc = TR_ENOMEM;
            break;
        }
    }
    tr_buf_release(&scratch);
    tr_buf_release(&frame);
    dcm_file_free(f);
    if (rc < 0) {
        os_free(os);
        web_reply_problem(r, 500, "Internal Server Error", "frame: %s", err.message);
        return;
    }
    tr_buf_addf(&os->mem, "\r\n--%s--\r\n", os->boundary);
    char type[200];
    snprintf(type, sizeof(type), "multipart/related; type=\"%s\"; boundary=%s",
             raw ? media : "application/octet-stream", os->boundary);
    size_t len;
    char *body = tr_buf_detach(&os->mem, &len);
    os_free(os);
    web_reply_owned(r, 200, type, body, len);
}

static void bulkdata(struct dw *dw, struct web_request *r)
{
    const char *what = web_param(r, 3);
    struct arc_instance_ref *refs;
    size_t count;
    if (instances_of(dw, r, ARC_LEVEL_IMAGE, &refs, &count) < 0)
        return;
    char key[300];
    snprintf(key, sizeof(key), "%s", refs[0].object_key);
    tr_free(refs);
    struct out_stream *os = os_new(dw);
    if (!os) {
        web_reply_problem(r, 500, "Out of memory", "cannot answer");
        return;
    }
    struct tr_error err = TR_ERROR_INIT;
    if (strcmp(what, "pixeldata") == 0) {
        /* All frames: as stored (compressed frames in their media type). */
        struct dcm_file *f;
        if (read_object(dw, key, false, &f, &err) < 0) {
            os_free(os);
            web_reply_problem(r, 500, "Internal Server Error", "%s", err.message);
            return;
        }
        struct dcm_pixel_desc desc;
        const char *media = frame_media(f->ts_uid);
        struct tr_buf scratch;
        tr_buf_init(&scratch, (size_t)2 << 30);
        int rc = dcm_pixel_desc_read(f->dataset, &desc, &err);
        for (uint32_t i = 0; rc == 0 && i < desc.frames; i++) {
            const uint8_t *bytes;
            size_t len;
            rc = dcm_pixel_frame_encoded(f->dataset, f->ts_uid, i, &scratch, &bytes, &len, &err);
            if (rc == 0) {
                tr_buf_addf(&os->mem,
                            "%s--%s\r\nContent-Type: %s; transfer-syntax=%s\r\n"
                            "Content-Length: %zu\r\n\r\n",
                            i ? "\r\n" : "", os->boundary,
                            media ? media : "application/octet-stream", f->ts_uid, len);
                if (tr_buf_add(&os->mem, bytes, len) < 0)
                    rc = TR_ENOMEM;
            }
        }
        tr_buf_release(&scratch);
        dcm_file_free(f);
        if (rc < 0) {
            os_free(os);
            web_reply_problem(r, rc == TR_ENOTFOUND ? 404 : 500,
                              rc == TR_ENOTFOUND ? "Not Found" : "Internal Server Error", "%s",
                              err.message);
            return;
        }
        tr_buf_addf(&os->mem, "\r\n--%s--\r\n", os->boundary);
        char type[200];
        snprintf(type, sizeof(type), "multipart/related; type=\"%s\"; boundary=%s",
                 media ? media : "application/octet-stream", os->boundary);
        size_t len;
        char *body = tr_buf_detach(&os->mem, &len);
        os_free(os);
        web_reply_owned(r, 200, type, body, len);
        return;
    }
    /* "<offset>-<length>" of a value in the stored object (from a BulkDataURI we wrote). */
    char *end;
    errno = 0;
    unsigned long long off = strtoull(what, &end, 10), len = 0;
    bool ok = !errno && end != what && *end == '-';
    if (ok) {
        const char *l = end + 1;
        len = strtoull(l, &end, 10);
        ok = !errno && end != l && !*end && len > 0 && len <= UINT32_MAX;
    }
    uint64_t size = 0;
    if (!ok || arc_object_size(arc_objects(dw->cfg.archive), key, &size, &err) < 0 ||
        off >= size || len > size - off) {
        os_free(os);
        web_reply_problem(r, 404, "Not Found", "no such bulk data in this instance");
        return;
    }
    struct arc_object_handle *h; /* the range only (S3: a ranged GET) */
    os->fd = -1;
    if (arc_object_open_range(arc_objects(dw->cfg.archive), key, off, len, &h, NULL) == 0) {
        os->fd = dup(arc_object_handle_fd(h)); /* stays valid after the handle */
        off = arc_object_handle_offset(h);
        arc_object_close(h);
    }
    if (os->fd < 0) {
        os_free(os);
        web_reply_problem(r, 500, "Internal Server Error", "cannot open the object");
        return;
    }
    os->file_off = off;
    os->file_left = len;
    tr_buf_addf(&os->mem,
                "--%s\r\nContent-Type: application/octet-stream\r\nContent-Length: %llu\r\n\r\n",
                os->boundary, len);
    os->next = next_instance; /* count 0: writes the closing delimiter */
    char type[160];
    snprintf(type, sizeof(type), "multipart/related; type=\"application/octet-stream\"; "
                                 "boundary=%s", os->boundary);
    web_reply_stream(r, 200, type, WEB_SIZE_UNKNOWN, os_read, os, os_free);
}

/* ---- WADO-RS: rendered and thumbnail ------------------------------------------------------ */

struct render_params {
    struct dcm_render_options opt;
    const char *media;
};

/* Query parameters of rendered resources (PS3.18 8.3.5): window=center,width,function;
 * viewport=vw,vh[,sx,sy,sw,sh]; quality. And the media type from Accept. */
static int render_params(struct web_request *r, bool thumbnail, struct render_params *p,
                         char *why, size_t why_size)
{
    dcm_render_options_init(&p->opt);
    p->media = "image/jpeg";
    p->opt.format = DCM_IMAGE_JPEG;
    /* The accept query parameter (PS3.18 8.3.3.1) wins over the header: OHIF's
     * dicomweb-client asks ".../thumbnail?accept=image%2Fjpeg" with an Accept header of
     * multipart/related; type="application/octet-stream". */
    const char *accept = web_query(r, "accept");
    if (!accept || !*accept)
        accept = web_header(r, "Accept");
    if (accept && *accept) {
        struct accept_item items[8];
        size_t n = parse_accept(accept, items, 8);
        bool found = false;
        for (size_t i = 0; i < n && !found; i++) {
            if (strcmp(items[i].media, "image/png") == 0) {
                p->media = "image/png";
                p->opt.format = DCM_IMAGE_PNG;
                found = true;
            } else if (strcmp(items[i].media, "image/jpeg") == 0 ||
                       strcmp(items[i].media, "image/*") == 0 ||
                       strcmp(items[i].media, "*/*") == 0) {
                found = true;
            }
        }
        if (!found) {
            snprintf(why, why_size, "rendered images are image/jpeg or image/png");
            return 406;
        }
    }
    const char *q = web_query(r, "quality");
    if (q) {
        char *end;
        long v = strtol(q, &end, 10);
        if (*end || v < 1 || v > 100) {
            snprintf(why, why_size, "quality is 1 to 100");
            return 400;
        }
        p->opt.quality = (int)v;
    }
    const char *w = web_query(r, "window");
    if (w) {
        char fn[32] = "";
        double c, wd;
        int k = sscanf(w, "%lf,%lf,%31s", &c, &wd, fn);
        if (k < 2 || !(wd > 0) || !isfinite(c) || !isfinite(wd)) {
            snprintf(why, why_size, "window is center,width[,function] with width > 0");
            return 400;
        }
        p->opt.voi = DCM_VOI_WINDOW;
        p->opt.window_center = c;
        p->opt.window_width = wd;
        if (k == 3) {
            for (char *s = fn; *s; s++)
                *s = (char)toupper((unsigned char)*s);
            if (strcmp(fn, "LINEAR") == 0)
                p->opt.function = DCM_VOI_LINEAR;
            else if (strcmp(fn, "LINEAR-EXACT") == 0 || strcmp(fn, "LINEAR_EXACT") == 0)
                p->opt.function = DCM_VOI_LINEAR_EXACT;
            else if (strcmp(fn, "SIGMOID") == 0)
                p->opt.function = DCM_VOI_SIGMOID;
            else {
                snprintf(why, why_size, "window function is linear, linear-exact or sigmoid");
                return 400;
            }
        }
        if (p->opt.function == DCM_VOI_LINEAR && wd < 1) {
            snprintf(why, why_size, "a linear window is at least 1 wide");
            return 400;
        }
    }
    const char *vp = web_query(r, "viewport");
    if (thumbnail) {
        p->opt.width = p->opt.height = 128;
    }
    if (vp) {
        unsigned vw = 0, vh = 0, sx = 0, sy = 0, sw = 0, sh = 0;
        int k = sscanf(vp, "%u,%u,%u,%u,%u,%u", &vw, &vh, &sx, &sy, &sw, &sh);
        if ((k != 2 && k != 6) || vw > 8192 || vh > 8192) {
            snprintf(why, why_size, "viewport is vw,vh[,sx,sy,sw,sh] of at most 8192");
            return 400;
        }
        p->opt.width = vw;
        p->opt.height = vh;
        if (k == 6) {
            p->opt.crop_x = sx;
            p->opt.crop_y = sy;
            p->opt.crop_width = sw;
            p->opt.crop_height = sh;
        }
    }
    return 0;
}

static void rendered(struct dw *dw, enum dw_kind kind, struct web_request *r)
{
    bool thumb = kind == K_THUMB_STUDY || kind == K_THUMB_SERIES || kind == K_THUMB_INSTANCE;
    struct render_params p;
    char why[200];
    int status = render_params(r, thumb, &p, why, sizeof(why));
    if (status) {
        web_reply_problem(r, (unsigned)status, status == 406 ? "Not Acceptable" : "Bad Request",
                          "%s", why);
        return;
    }
    enum arc_level level = kind == K_THUMB_STUDY    ? ARC_LEVEL_STUDY
                           : kind == K_THUMB_SERIES ? ARC_LEVEL_SERIES
                                                    : ARC_LEVEL_IMAGE;
    uint32_t frame = 1;
    if (kind == K_RENDERED_FRAME) {
        uint32_t list[1];
        size_t n;
        if (parse_frames(web_param(r, 3), list, 1, &n) < 0) {
            web_reply_problem(r, 400, "Bad Request", "one frame number from 1");
            return;
        }
        frame = list[0];
    }
    struct arc_instance_ref *refs;
    size_t count;
    if (instances_of(dw, r, level, &refs, &count) < 0)
        return;
    /* A study's or series' thumbnail: its middle image (of the first series with images). */
    size_t pick = 0;
    if (level != ARC_LEVEL_IMAGE)
        pick = count / 2;
    struct dcm_file *f;
    struct tr_error err = TR_ERROR_INIT;
    int rc = read_object(dw, refs[pick].object_key, false, &f, &err);
    tr_free(refs);
    if (rc < 0) {
        web_reply_problem(r, 500, "Internal Server Error", "cannot read the object: %s",
                          err.message);
        return;
    }
    struct dcm_pixel_desc desc;
    if (dcm_pixel_desc_read(f->dataset, &desc, &err) < 0) {
        dcm_file_free(f);
        web_reply_problem(r, err.code == TR_ENOTFOUND ? 404 : 422,
                          err.code == TR_ENOTFOUND ? "Not Found" : "Unprocessable Content", "%s",
                          err.code == TR_ENOTFOUND ? "this instance has no image" : err.message);
        return;
    }
    if (frame > desc.frames) {
        dcm_file_free(f);
        web_reply_problem(r, 404, "Not Found", "frame %" PRIu32 " of %" PRIu32, frame,
                          desc.frames);
        return;
    }
    p.opt.frame = thumb && desc.frames > 1 ? desc.frames / 2 : frame - 1;
    struct tr_buf out;
    tr_buf_init(&out, (size_t)1 << 30);
    struct tr_sink sink = tr_sink_buf(&out);
    rc = dcm_render(f->dataset, f->ts_uid, &p.opt, &sink, &err);
    dcm_file_free(f);
    if (rc < 0) {
        tr_buf_release(&out);
        web_reply_problem(r, rc == TR_EUNSUPPORTED ? 406 : rc == TR_EINVAL ? 400 : 422,
                          rc == TR_EUNSUPPORTED ? "Not Acceptable"
                          : rc == TR_EINVAL     ? "Bad Request"
                                                : "Unprocessable Content",
                          "%s", err.message);
        return;
    }
    size_t len;
    char *body = tr_buf_detach(&out, &len);
    web_reply_owned(r, 200, p.media, body, len);
}

/* ---- STOW-RS ------------------------------------------------------------------------------ */

struct stow_part {
    char *location;   /* Content-Location (bulk data) */
    char *type;
    struct tr_buf bytes;
};

struct stow_result {
    uint16_t status;
    bool warning;
    char comment[65];
    char sop_class[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    char study[DCM_UID_MAX + 1];
    char series[DCM_UID_MAX + 1];
};

struct stow {
    struct dw *dw;
    struct web_request *r;
    struct mp_parser mp;
    bool started;
    struct tr_error err;
    const char *site;
    bool refused;                /* store_site said no */
    const char *study;
    /* the part in progress */
    struct arc_ingest *ingest;
    bool part_failed;
    struct stow_part *json_part; /* application/dicom+json, or bulk data, being buffered */
    /* buffered DICOM JSON parts and bulk data */
    struct stow_part *parts;
    size_t nparts, cap;
    size_t held;
    /* results */
    struct stow_result *res;
    size_t nres, rcap;
};

/* Give up the part still arriving, if any (the body ended or failed inside it): its temporary
 * is removed at once. */
static void stow_abort_part(struct stow *s)
{
    if (!s->ingest)
        return;
    struct arc_ingest_result res;
    arc_ingest_end(s->ingest, false, &res, NULL);
    s->ingest = NULL;
}

static void stow_free(void *p)
{
    struct stow *s = p;
    stow_abort_part(s); /* the client went away before the handler ran */
    for (size_t i = 0; i < s->nparts; i++) {
        tr_free(s->parts[i].location);
        tr_free(s->parts[i].type);
        tr_buf_release(&s->parts[i].bytes);
    }
    tr_free(s->parts);
    tr_free(s->res);
    tr_free(s);
}

static struct stow_result *stow_add_result(struct stow *s)
{
    if (s->nres == s->rcap) {
        size_t cap = s->rcap ? s->rcap * 2 : 16;
        struct stow_result *n = tr_reallocarray(s->res, cap, sizeof(*n));
        if (!n)
            return NULL;
        s->res = n;
        s->rcap = cap;
    }
    struct stow_result *r = &s->res[s->nres++];
    memset(r, 0, sizeof(*r));
    return r;
}

static void stow_record(struct stow *s, const struct arc_ingest_result *res)
{
    struct stow_result *o = stow_add_result(s);
    if (!o)
        return;
    o->status = res->status;
    snprintf(o->comment, sizeof(o->comment), "%s", res->comment);
    snprintf(o->sop_class, sizeof(o->sop_class), "%s", res->sop_class);
    snprintf(o->sop_instance, sizeof(o->sop_instance), "%s", res->sop_instance);
    snprintf(o->study, sizeof(o->study), "%s", res->study_uid);
    snprintf(o->series, sizeof(o->series), "%s", res->series_uid);
}

static int part_begin(void *ctx, const struct mp_headers *h)
{
    struct stow *s = ctx;
    char type[80];
    const char *ct = mp_header(h, "Content-Type");
    mp_media_type(ct ? ct : "application/dicom", type, sizeof(type));
    s->part_failed = false;
    if (strcmp(type, "application/dicom") == 0) {
        struct arc_source src = {.site = s->site, .calling_ae = "", .peer = web_peer(s->r),
                                 .part10 = true, .study_uid = s->study};
        struct tr_error err = TR_ERROR_INIT;
        if (arc_ingest_begin(s->dw->cfg.archive, &src, &s->ingest, &err) < 0) {
            struct arc_ingest_result res = {.status = 0xA700};
            snprintf(res.comment, sizeof(res.comment), "%.64s", err.message);
            stow_record(s, &res);
            s->part_failed = true;
        }
        return 0;
    }
    /* DICOM JSON metadata or bulk data: held until the body has arrived. */
    if (s->nparts == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 8;
        struct stow_part *n = tr_reallocarray(s->parts, cap, sizeof(*n));
        if (!n)
            return TR_ENOMEM;
        s->parts = n;
        s->cap = cap;
    }
    struct stow_part *p = &s->parts[s->nparts++];
    memset(p, 0, sizeof(*p));
    const char *loc = mp_header(h, "Content-Location");
    p->location = tr_strdup(loc ? loc : "");
    p->type = tr_strdup(type);
    tr_buf_init(&p->bytes, s->dw->cfg.max_stow_memory);
    s->json_part = p;
    return p->location && p->type ? 0 : TR_ENOMEM;
}

static int part_data(void *ctx, const void *data, size_t len)
{
    struct stow *s = ctx;
    if (s->ingest) {
        struct tr_sink *sink = arc_ingest_sink(s->ingest);
        if (!s->part_failed && sink->write(sink->ctx, data, len) < 0)
            s->part_failed = true;
        return 0;
    }
    if (s->json_part) {
        s->held += len;
        if (s->held > s->dw->cfg.max_stow_memory ||
            tr_buf_add(&s->json_part->bytes, data, len) < 0)
            return tr_error_set(&s->err, TR_ELIMIT,
                                "DICOM JSON and bulk data parts exceed %zu MiB in all",
                                s->dw->cfg.max_stow_memory >> 20);
    }
    return 0;
}

static int part_end(void *ctx)
{
    struct stow *s = ctx;
    if (s->ingest) {
        struct arc_ingest_result res;
        struct tr_error err = TR_ERROR_INIT;
        arc_ingest_end(s->ingest, !s->part_failed, &res, &err);
        s->ingest = NULL;
        stow_record(s, &res);
    }
    s->json_part = NULL;
    return 0;
}

static int stow_body(void *ctx, struct web_request *r, const void *data, size_t len)
{
    const struct dw_route_ctx *rc = ctx;
    struct stow *s = web_state(r);
    if (!s) {
        s = tr_calloc(1, sizeof(*s));
        if (!s)
            return TR_ENOMEM;
        web_set_state(r, s, stow_free);
        s->dw = rc->dw;
        s->r = r;
        s->site = rc->dw->cfg.store_site ? rc->dw->cfg.store_site(rc->dw->cfg.ctx, r) : "";
        if (!s->site) {
            s->refused = true; /* this account may not store: read nothing of the body */
            return TR_EDENIED;
        }
        s->study = rc->kind == K_STOW_STUDY ? web_param(r, 0) : NULL;
        struct mp_callbacks cb = {part_begin, part_data, part_end};
        if (mp_init(&s->mp, web_header(r, "Content-Type"), &cb, s, &s->err) < 0)
            return s->err.code;
        s->started = true;
    }
    if (!s->started)
        return TR_EINVAL;
    return mp_feed(&s->mp, data, len, &s->err);
}

/* Bulk data of a DICOM JSON part, by the URI it names (the Content-Location of a part). */
static int stow_bulk(void *ctx, struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                     const char *uri, struct tr_error *err)
{
    struct stow *s = ctx;
    for (size_t i = 0; i < s->nparts; i++) {
        struct stow_part *p = &s->parts[i];
        if (strcmp(p->type, "application/dicom+json") == 0 || strcmp(p->location, uri) != 0)
            continue;
        if (tag == DCM_TAG_PixelData && strcmp(p->type, "application/octet-stream") != 0)
            return tr_error_set(err, TR_EUNSUPPORTED,
                                "compressed pixel data (%s) in DICOM JSON is not supported; send "
                                "application/dicom",
                                p->type);
        return dcm_dataset_set_bytes(ds, tag, vr, p->bytes.data ? p->bytes.data : "",
                                     p->bytes.len);
    }
    return tr_error_set(err, TR_ENOTFOUND, "no part has Content-Location %.200s", uri);
}

/* Store one DICOM JSON data set: written as Part 10 (Explicit VR Little Endian) into the same
 * ingest path. */
static void stow_json(struct stow *s, struct stow_part *p)
{
    struct dcm_json_read_options ropt = {.bulk_data = stow_bulk, .ctx = s};
    struct dcm_dataset **sets = NULL;
    size_t nsets = 0;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_json_read_array(p->bytes.data ? p->bytes.data : "", p->bytes.len, &ropt, &sets,
                            &nsets, &err) < 0) {
        struct arc_ingest_result res = {.status = 0xA900};
        snprintf(res.comment, sizeof(res.comment), "%.64s", err.message);
        stow_record(s, &res);
        return;
    }
    for (size_t i = 0; i < nsets; i++) {
        struct dcm_dataset *ds = sets[i];
        char sop_class[DCM_UID_MAX + 1] = "", sop[DCM_UID_MAX + 1] = "";
        dcm_dataset_get_uid(ds, TAG_SOPClassUID, sop_class, sizeof(sop_class));
        dcm_dataset_get_uid(ds, TAG_SOPInstanceUID, sop, sizeof(sop));
        struct arc_source src = {.site = s->site, .calling_ae = "", .peer = web_peer(s->r),
                                 .part10 = true, .study_uid = s->study};
        struct arc_ingest *in;
        struct arc_ingest_result res = {.status = 0xA700};
        struct tr_error ierr = TR_ERROR_INIT;
        if (arc_ingest_begin(s->dw->cfg.archive, &src, &in, &ierr) < 0) {
            snprintf(res.comment, sizeof(res.comment), "%.64s", ierr.message);
        } else {
            struct tr_sink *sink = arc_ingest_sink(in);
            bool ok = dcm_file_write_header(sop_class, sop, EXPLICIT_LE, NULL, sink, &ierr) == 0;
            struct dcm_write_options wopt;
            dcm_write_options_init(&wopt);
            ok = ok && dcm_dataset_write(ds, EXPLICIT_LE, &wopt, sink, &ierr) == 0;
            arc_ingest_end(in, ok, &res, &ierr);
        }
        if (!res.sop_instance[0]) {
            snprintf(res.sop_instance, sizeof(res.sop_instance), "%s", sop);
            snprintf(res.sop_class, sizeof(res.sop_class), "%s", sop_class);
        }
        stow_record(s, &res);
        dcm_dataset_free(ds);
    }
    tr_free(sets);
}

static int set_text(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const char *v)
{
    return v && *v ? dcm_dataset_set_bytes(ds, tag, vr, v, strlen(v)) : 0;
}

static void stow(struct dw *dw, enum dw_kind kind, struct web_request *r)
{
    struct stow *s = web_state(r);
    if ((s && s->refused) ||
        (!s && dw->cfg.store_site && !dw->cfg.store_site(dw->cfg.ctx, r))) {
        web_reply_problem(r, 403, "Forbidden", "this account may not store studies");
        return;
    }
    if (!s) {
        /* No body at all. */
        web_reply_problem(r, 400, "Bad Request",
                          "STOW-RS takes a multipart/related body of application/dicom parts");
        return;
    }
    /* The body is over: a part still open was cut short (a whole body closes its last part at
     * the closing delimiter). Its temporary goes now, before any answer: a client that has
     * the answer must find nothing left behind, and stow_free runs only after the answer has
     * been sent. */
    stow_abort_part(s);
    if (kind == K_STOW_STUDY && !is_uid(web_param(r, 0))) {
        web_reply_problem(r, 400, "Bad Request", "the path holds an invalid Study Instance UID");
        return;
    }
    if (!s->started || (web_body_failed(r) && s->err.code) ||
        (!web_body_failed(r) && mp_finish(&s->mp, &s->err) < 0)) {
        unsigned status = s->err.code == TR_ELIMIT ? 413 : 400;
        web_reply_problem(r, status, status == 413 ? "Content Too Large" : "Bad Request", "%s",
                          s->err.code ? s->err.message : "the body did not arrive whole");
        return;
    }
    if (web_body_failed(r)) {
        web_reply_problem(r, 400, "Bad Request", "the body did not arrive whole");
        return;
    }
    for (size_t i = 0; i < s->nparts; i++) {
        if (strcmp(s->parts[i].type, "application/dicom+json") == 0 ||
            strcmp(s->parts[i].type, "application/json") == 0)
            stow_json(s, &s->parts[i]);
    }
    if (s->nres == 0) {
        web_reply_problem(r, 400, "Bad Request", "the body holds no DICOM instance");
        return;
    }
    /* The response (PS3.18 10.5.3): Referenced SOP Sequence for the stored ones, Failed SOP
     * Sequence with a Failure Reason for the others. */
    struct dcm_dataset *resp = dcm_dataset_new();
    if (!resp) {
        web_reply_problem(r, 500, "Out of memory", "cannot answer");
        return;
    }
    char base[400];
    base_url(dw, r, base, sizeof(base));
    size_t ok = 0, failed = 0;
    const char *study = kind == K_STOW_STUDY ? web_param(r, 0) : NULL;
    for (size_t i = 0; i < s->nres; i++) {
        struct stow_result *res = &s->res[i];
        bool good = res->status == 0x0000 || (res->status & 0xF000) == 0xB000;
        uint32_t seq = good ? TAG_ReferencedSOPSequence : TAG_FailedSOPSequence;
        struct tr_error err = TR_ERROR_INIT;
        struct dcm_dataset *item = dcm_dataset_add_item(resp, seq, &err);
        if (!item)
            continue;
        set_text(item, TAG_ReferencedSOPClassUID, DCM_VR_UI, res->sop_class);
        set_text(item, TAG_ReferencedSOPInstanceUID, DCM_VR_UI, res->sop_instance);
        if (good) {
            ok++;
            char url[800];
            snprintf(url, sizeof(url), "%s/studies/%s/series/%s/instances/%s", base, res->study,
                     res->series, res->sop_instance);
            set_text(item, TAG_RetrieveURL, DCM_VR_UR, url);
            if (res->status)
                dcm_dataset_set_int(item, TAG_WarningReason, DCM_VR_US, res->status);
            if (!study)
                study = res->study;
        } else {
            failed++;
            dcm_dataset_set_int(item, TAG_FailureReason, DCM_VR_US, res->status);
            web_log(r, 1, "STOW-RS from %s: instance refused (%04X): %s", web_peer(r),
                    res->status, res->comment);
        }
    }
    if (study && ok) {
        char url[600];
        snprintf(url, sizeof(url), "%s/studies/%s", base, study);
        set_text(resp, TAG_RetrieveURL, DCM_VR_UR, url);
    }
    struct tr_buf json;
    tr_buf_init(&json, 1u << 28);
    struct tr_sink sink = tr_sink_buf(&json);
    struct dcm_json_options jopt = {.flags = DCM_JSON_SKIP_META};
    struct tr_error err = TR_ERROR_INIT;
    dcm_json_write(resp, &jopt, &sink, &err);
    dcm_dataset_free(resp);
    /* 200 all stored; 202 some failed; 409 none stored (PS3.18 10.5.3.1). */
    unsigned status = failed == 0 ? 200 : ok ? 202 : 409;
    size_t len;
    char *text = tr_buf_detach(&json, &len);
    web_reply_owned(r, status, "application/dicom+json", text, len);
}

/* ---- WADO-URI ----------------------------------------------------------------------------- */

static void wado_uri(struct dw *dw, struct web_request *r)
{
    const char *req = web_query(r, "requestType");
    const char *study = web_query(r, "studyUID"), *series = web_query(r, "seriesUID"),
               *object = web_query(r, "objectUID");
    if (!req || strcmp(req, "WADO") != 0) {
        web_reply_problem(r, 400, "Bad Request", "requestType must be WADO");
        return;
    }
    if (!is_uid(study) || !is_uid(series) || !is_uid(object)) {
        web_reply_problem(r, 400, "Bad Request", "studyUID, seriesUID and objectUID are required "
                                                 "valid UIDs");
        return;
    }
    /* PS3.18 9.1.2.2: contentType (default image/jpeg for images). */
    const char *ct = web_query(r, "contentType");
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys) {
        web_reply_problem(r, 500, "Out of memory", "cannot answer");
        return;
    }
    char real[3][DCM_UID_MAX + 1];
    bool by_real_uid = false;
    if (pseudonymizing(dw, r)) {
        const char *in[3] = {study, series, object};
        int prc = resolve_pseudonyms(dw, r, in, real);
        if (prc == TR_EDENIED) {
            dcm_dataset_free(keys);
            return;
        }
        if (prc == 0) {
            study = real[0];
            series = real[1];
            object = real[2];
        }
        by_real_uid = prc != 0;
    }
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, study);
    dcm_dataset_set_uid(keys, TAG_SeriesInstanceUID, series);
    dcm_dataset_set_uid(keys, TAG_SOPInstanceUID, object);
    struct arc_query q = {.level = ARC_LEVEL_IMAGE, .keys = keys};
    if (!scoped(dw, r, &q)) {
        dcm_dataset_free(keys);
        return;
    }
    struct arc_instance_ref *refs = NULL;
    size_t count = 0;
    struct tr_error err = TR_ERROR_INIT;
    int rc = arc_index_instances(arc_index(dw->cfg.archive), &q, &refs, &count, &err);
    if (rc == 0 && count == 0)
        note_out_of_scope(dw, r, &q);
    dcm_dataset_free(keys);
    uint8_t pkey[32];
    struct dcm_deid_options popt;
    if (rc == 0 && count && by_real_uid && pseudonym_options(dw, r, refs[0].site, pkey, &popt))
        count = 0; /* real UIDs of a site this client sees pseudonymized: as if absent */
    explicit_bzero(pkey, sizeof(pkey));
    if (rc < 0 || count == 0) {
        tr_free(refs);
        web_reply_problem(r, rc < 0 ? 503 : 404, rc < 0 ? "Service Unavailable" : "Not Found",
                          "%s", rc < 0 ? err.message : "no such object");
        return;
    }
    char ctype[64] = "";
    if (ct)
        mp_media_type(ct, ctype, sizeof(ctype));
    if (strcmp(ctype, "application/dicom") == 0) {
        const char *ts = web_query(r, "transferSyntax");
        struct out_stream *os = os_new(dw);
        if (!os) {
            tr_free(refs);
            web_reply_problem(r, 500, "Out of memory", "cannot answer");
            return;
        }
        os->refs = refs;
        os->count = 1;
        os->single = true;
        os->next = next_instance;
        os->r = r;
        snprintf(os->ts_want, sizeof(os->ts_want), "%s", ts ? ts : "*");
        if (!can_send(refs[0].transfer_syntax, os->ts_want)) {
            os_free(os);
            web_reply_problem(r, 406, "Not Acceptable", "cannot send this object in %s", ts);
            return;
        }
        web_reply_stream(r, 200, "application/dicom", WEB_SIZE_UNKNOWN, os_read, os, os_free);
        return;
    }
    if (ctype[0] && strcmp(ctype, "image/jpeg") && strcmp(ctype, "image/png")) {
        tr_free(refs);
        web_reply_problem(r, 406, "Not Acceptable",
                          "contentType is application/dicom, image/jpeg or image/png");
        return;
    }
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    opt.format = strcmp(ctype, "image/png") == 0 ? DCM_IMAGE_PNG : DCM_IMAGE_JPEG;
    const char *v;
    if ((v = web_query(r, "frameNumber"))) {
        long fnum = strtol(v, NULL, 10);
        if (fnum < 1) {
            tr_free(refs);
            web_reply_problem(r, 400, "Bad Request", "frameNumber counts from 1");
            return;
        }
        opt.frame = (uint32_t)(fnum - 1);
    }
    /* rows and columns: the viewport, at most 8192 as for WADO-RS viewport. */
    const char *names[2] = {"rows", "columns"};
    uint32_t *sides[2] = {&opt.height, &opt.width};
    for (int i = 0; i < 2; i++) {
        if (!(v = web_query(r, names[i])))
            continue;
        char *end;
        unsigned long n = strtoul(v, &end, 10);
        if (end == v || *end || n < 1 || n > 8192) {
            tr_free(refs);
            web_reply_problem(r, 400, "Bad Request", "%s is a number from 1 to 8192", names[i]);
            return;
        }
        *sides[i] = (uint32_t)n;
    }
    const char *wc = web_query(r, "windowCenter"), *ww = web_query(r, "windowWidth");
    if (wc && ww) {
        opt.voi = DCM_VOI_WINDOW;
        opt.window_center = strtod(wc, NULL);
        opt.window_width = strtod(ww, NULL);
        if (!(opt.window_width >= 1)) {
            tr_free(refs);
            web_reply_problem(r, 400, "Bad Request", "windowWidth must be at least 1");
            return;
        }
    }
    if ((v = web_query(r, "imageQuality"))) {
        long qv = strtol(v, NULL, 10);
        if (qv >= 1 && qv <= 100)
            opt.quality = (int)qv;
    }
    struct dcm_file *f;
    rc = read_object(dw, refs[0].object_key, false, &f, &err);
    tr_free(refs);
    if (rc < 0) {
        web_reply_problem(r, 500, "Internal Server Error", "%s", err.message);
        return;
    }
    struct tr_buf out;
    tr_buf_init(&out, (size_t)1 << 30);
    struct tr_sink sink = tr_sink_buf(&out);
    rc = dcm_render(f->dataset, f->ts_uid, &opt, &sink, &err);
    dcm_file_free(f);
    if (rc < 0) {
        tr_buf_release(&out);
        web_reply_problem(r, rc == TR_ENOTFOUND ? 404 : 422,
                          rc == TR_ENOTFOUND ? "Not Found" : "Unprocessable Content", "%s",
                          err.message);
        return;
    }
    size_t len;
    char *body = tr_buf_detach(&out, &len);
    web_reply_owned(r, 200, opt.format == DCM_IMAGE_PNG ? "image/png" : "image/jpeg", body, len);
}

/* ---- routes ------------------------------------------------------------------------------- */

static void dispatch(void *ctx, struct web_request *r)
{
    const struct dw_route_ctx *rc = ctx;
    struct dw *dw = rc->dw;
    switch (rc->kind) {
    case K_QIDO_STUDIES:
    case K_QIDO_STUDY_SERIES:
    case K_QIDO_SERIES:
    case K_QIDO_STUDY_INSTANCES:
    case K_QIDO_SERIES_INSTANCES:
    case K_QIDO_INSTANCES: qido(dw, rc->kind, r); break;
    case K_WADO_STUDY:
    case K_WADO_SERIES:
    case K_WADO_INSTANCE: wado(dw, rc->kind, r); break;
    case K_META_STUDY:
    case K_META_SERIES:
    case K_META_INSTANCE: metadata(dw, rc->kind, r); break;
    case K_FRAMES: frames(dw, r); break;
    case K_BULK: bulkdata(dw, r); break;
    case K_RENDERED_INSTANCE:
    case K_RENDERED_FRAME:
    case K_THUMB_STUDY:
    case K_THUMB_SERIES:
    case K_THUMB_INSTANCE: rendered(dw, rc->kind, r); break;
    case K_STOW:
    case K_STOW_STUDY: stow(dw, rc->kind, r); break;
    case K_WADO_URI: wado_uri(dw, r); break;
    case K_COUNT: break;
    }
}

int dw_register(struct web_server *s, const struct dw_config *cfg, struct tr_error *err)
{
    struct dw *dw = tr_calloc(1, sizeof(*dw));
    if (!dw || web_server_own(s, dw, tr_free) < 0) {
        tr_free(dw);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    dw->cfg = *cfg;
    for (int k = 0; k < K_COUNT; k++)
        dw->routes[k] = (struct dw_route_ctx){dw, (enum dw_kind)k};
    static const struct {
        const char *method;
        const char *path;
        enum dw_kind kind;
    } table[] = {
        {"GET", "/studies", K_QIDO_STUDIES},
        {"GET", "/series", K_QIDO_SERIES},
        {"GET", "/instances", K_QIDO_INSTANCES},
        {"GET", "/studies/{}/series", K_QIDO_STUDY_SERIES},
        {"GET", "/studies/{}/instances", K_QIDO_STUDY_INSTANCES},
        {"GET", "/studies/{}/series/{}/instances", K_QIDO_SERIES_INSTANCES},
        {"GET", "/studies/{}", K_WADO_STUDY},
        {"GET", "/studies/{}/series/{}", K_WADO_SERIES},
        {"GET", "/studies/{}/series/{}/instances/{}", K_WADO_INSTANCE},
        {"GET", "/studies/{}/metadata", K_META_STUDY},
        {"GET", "/studies/{}/series/{}/metadata", K_META_SERIES},
        {"GET", "/studies/{}/series/{}/instances/{}/metadata", K_META_INSTANCE},
        {"GET", "/studies/{}/series/{}/instances/{}/frames/{}", K_FRAMES},
        {"GET", "/studies/{}/series/{}/instances/{}/bulkdata/{}", K_BULK},
        {"GET", "/studies/{}/series/{}/instances/{}/rendered", K_RENDERED_INSTANCE},
        {"GET", "/studies/{}/series/{}/instances/{}/frames/{}/rendered", K_RENDERED_FRAME},
        {"GET", "/studies/{}/thumbnail", K_THUMB_STUDY},
        {"GET", "/studies/{}/series/{}/thumbnail", K_THUMB_SERIES},
        {"GET", "/studies/{}/series/{}/instances/{}/thumbnail", K_THUMB_INSTANCE},
        {"POST", "/studies", K_STOW},
        {"POST", "/studies/{}", K_STOW_STUDY},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(table); i++) {
        char pattern[256];
        snprintf(pattern, sizeof(pattern), "%s%s", cfg->prefix, table[i].path);
        struct web_route route = {.method = table[i].method, .pattern = pattern,
                                  .handler = dispatch, .ctx = &dw->routes[table[i].kind]};
        if (table[i].kind == K_STOW || table[i].kind == K_STOW_STUDY)
            route.body = stow_body;
        if (web_server_route(s, &route) < 0)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    struct web_route uri = {.method = "GET", .pattern = "/wado", .handler = dispatch,
                            .ctx = &dw->routes[K_WADO_URI]};
    if (web_server_route(s, &uri) < 0)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    return 0;
}
