/*
 * delivery.c - the outbox of signed report versions (table rep_outbox): one row per version
 * and target, made in the transaction that signs the version (UNIQUE (version_id, target):
 * a version is queued once per target), delivered by the background thread, kept after
 * delivery as the record of what went where and when.
 *
 * Targets:
 *   archive-sr   the Basic Text SR stored into the archive, in the study (QIDO/WADO see it)
 *   archive-pdf  the Encapsulated PDF, likewise
 *   hl7          ORU^R01 over MLLP to the site's results.hl7 ("host:port"), the PDF in OBX ED;
 *                the ACK decides: AA delivered; AE retried (the receiver had a problem with
 *                it and may have fixed it); AR rejected for good (the receiver will not take
 *                this message, e.g. an unknown patient or message type): recorded, shown by
 *                the API, retried only when an administrator asks
 *   fhir         a transaction Bundle POSTed to results.fhir (2xx delivered; 4xx rejected but
 *                408/429; else retried)
 *   dicom        the SR and the PDF C-STOREd to results.dicom ("AE@host:port"), once both are
 *                in the archive (failure statuses A7xx retried, others rejected)
 *
 * Exactly once. A row is taken with a lease (next_at pushed past the longest attempt, guarded
 * by the attempts count the pass saw), so two nodes never send it at once; it is marked
 * delivered only after the receiver confirmed (ACK AA, HTTP 2xx, C-STORE success, archive
 * ingest). A crash between the receiver's confirmation and that mark makes the next attempt
 * send the same message again: its MSH-10 (TR<row id>), FHIR ids (PUT) and SOP Instance UIDs
 * are those of the first attempt, so receivers recognize the repeat (HL7 v2 2.10.1: the
 * message control id identifies a message for duplicate detection). Versions of a read reach
 * each target in order: a row waits while an earlier version's row for that target is pending.
 *
 * Retries: after a failure the row waits retry_initial seconds, doubled each time up to
 * retry_max; after max_attempts failures it is "failed" (and in the read's history).
 */
#include "common.h"
#include "mllp.h"
#include "reports_int.h"
#include "scu.h"
#include "dict.h"
#include "part10.h"

#include <curl/curl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

#define EXPLICIT_LE "1.2.840.10008.1.2.1"
#define IMPLICIT_LE "1.2.840.10008.1.2"

/* ---- targets ------------------------------------------------------------------------------ */

int rep_parse_hostport(const char *text, char *host, size_t host_size, int *port)
{
    if (!text || !*text)
        return TR_EINVAL;
    const char *colon;
    if (text[0] == '[') {
        const char *end = strchr(text, ']');
        if (!end || end[1] != ':')
            return TR_EINVAL;
        if ((size_t)(end - text - 1) >= host_size)
            return TR_EINVAL;
        snprintf(host, host_size, "%.*s", (int)(end - text - 1), text + 1);
        colon = end + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || colon == text || (size_t)(colon - text) >= host_size)
            return TR_EINVAL;
        snprintf(host, host_size, "%.*s", (int)(colon - text), text);
        if (strchr(host, ':'))
            return TR_EINVAL; /* IPv6 needs brackets */
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (*end || end == colon + 1 || p < 1 || p > 65535)
        return TR_EINVAL;
    *port = (int)p;
    return 0;
}

int rep_parse_dicom_target(const char *text, char *ae, size_t ae_size, char *host, size_t host_size,
                           int *port)
{
    const char *at = text ? strchr(text, '@') : NULL;
    if (!at || at == text || at - text > 16 || (size_t)(at - text) >= ae_size)
        return TR_EINVAL;
    snprintf(ae, ae_size, "%.*s", (int)(at - text), text);
    for (const char *c = ae; *c; c++) {
        if (*c == '\\' || (unsigned char)*c < 0x20 || (unsigned char)*c > 0x7E)
            return TR_EINVAL;
    }
    return rep_parse_hostport(at + 1, host, host_size, port);
}

int rep_outbox_queue(struct rep *r, struct db *db, int64_t read_id, int64_t version_id,
                     const char *site, int64_t now, struct tr_error *err)
{
    (void)r;
    json_t *doc = flow_document(db, "site", site);
    json_t *results = json_object_get(doc, "results");
    struct row {
        const char *target, *destination;
    } rows[5] = {{"archive-sr", ""}, {"archive-pdf", ""}};
    size_t n = 2;
    static const char *const outside[] = {"hl7", "fhir", "dicom"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(outside); i++) {
        const char *dest = json_string_value(json_object_get(results, outside[i]));
        if (dest && *dest)
            rows[n++] = (struct row){outside[i], dest};
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct db_stmt *st;
        rc = db_prepare(db,
                        "INSERT INTO rep_outbox (version_id, read_id, target, destination, "
                        "created_at, next_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT DO "
                        "NOTHING",
                        &st, err);
        if (rc)
            break;
        db_bind_int64(st, 1, version_id);
        db_bind_int64(st, 2, read_id);
        db_bind_text(st, 3, rows[i].target);
        db_bind_text(st, 4, rows[i].destination);
        db_bind_int64(st, 5, now);
        rc = db_step(st, err);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    json_decref(doc);
    return rc;
}

json_t *rep_outbox_json(struct db_stmt *st)
{
    json_t *j = json_pack(
        "{s:I,s:I,s:I,s:s,s:s,s:s,s:I,s:o}", "id", (json_int_t)db_column_int64(st, 0),
        "report_version", (json_int_t)db_column_int64(st, 1), "read",
        (json_int_t)db_column_int64(st, 2), "target", db_column_text(st, 3), "destination",
        db_column_text(st, 4), "state", db_column_text(st, 5), "attempts",
        (json_int_t)db_column_int64(st, 6), "queued_at", rep_iso_json(db_column_int64(st, 7)));
    bool pending = strcmp(db_column_text(st, 5), "pending") == 0;
    json_object_set_new(j, "next_attempt_at",
                        pending ? rep_iso_json(db_column_int64(st, 8)) : json_null());
    json_object_set_new(j, "delivered_at",
                        db_column_is_null(st, 9) ? json_null()
                                                 : rep_iso_json(db_column_int64(st, 9)));
    json_object_set_new(j, "last_error",
                        db_column_is_null(st, 10) ? json_null()
                                                  : json_string(db_column_text(st, 10)));
    json_object_set_new(j, "last_ack",
                        db_column_is_null(st, 11) ? json_null()
                                                  : json_string(db_column_text(st, 11)));
    return j;
}

/* ---- one attempt -------------------------------------------------------------------------- */

enum outcome { DELIVERED = 0, RETRY, REJECTED, WAIT };

struct attempt {
    struct rep *r;
    struct db *db;
    int64_t id;
    int64_t version_id;
    int64_t read_id;
    char target[16];
    char destination[512];
    int attempts;
    char why[512]; /* why it failed */
    char ack[600]; /* what the receiver said (HL7 ACK code and text, HTTP status) */
};

static enum outcome fail(struct attempt *a, enum outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum outcome fail(struct attempt *a, enum outcome o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->why, sizeof(a->why), fmt, ap);
    va_end(ap);
    return o;
}

/* Store a data set into the archive as an object of the read's site. */
static enum outcome ingest(struct attempt *a, const struct rep_doc *d, struct dcm_dataset *ds,
                           const char *sop_class, const char *sop_uid)
{
    struct arc_archive *arc = a->r->cfg.archive;
    char key[300];
    if (arc_index_find_instance(arc_index(arc), d->site, sop_uid, key, sizeof(key), NULL) == 0)
        return DELIVERED; /* stored by an attempt that did not live to say so */
    struct arc_source src = {
        .site = d->site, .calling_ae = a->r->cfg.ae_title, .peer = "reports", .part10 = true};
    struct arc_ingest *in;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_ingest_begin(arc, &src, &in, &err) < 0)
        return fail(a, RETRY, "archive: %s", err.message);
    struct tr_sink *sink = arc_ingest_sink(in);
    struct dcm_write_options wopt;
    dcm_write_options_init(&wopt);
    bool ok = dcm_file_write_header(sop_class, sop_uid, EXPLICIT_LE, a->r->cfg.ae_title, sink,
                                    &err) == 0 &&
              dcm_dataset_write(ds, EXPLICIT_LE, &wopt, sink, &err) == 0;
    struct arc_ingest_result res;
    int rc = arc_ingest_end(in, ok, &res, &err);
    if (rc < 0 || !ok)
        return fail(a, RETRY, "archive: %s", err.message);
    if (res.status != 0 && !res.duplicate)
        return fail(a,
                    dimse_status_is_failure(res.status) && (res.status & 0xFF00) == 0xA700
                        ? RETRY
                        : REJECTED,
                    "archive refused the object: status %04X %s", res.status, res.comment);
    snprintf(a->ack, sizeof(a->ack), "stored %s", sop_uid);
    return DELIVERED;
}

static int evidence_cmp(const void *x, const void *y)
{
    const struct rep_evidence *p = x, *q = y;
    int c = strcmp(p->series_uid, q->series_uid);
    return c ? c : strcmp(p->sop_uid, q->sop_uid);
}

/* The study's instances (but ours), by series, for the SR's evidence sequence. */
static int study_evidence(struct rep *r, const struct rep_doc *d, struct rep_evidence **out,
                          size_t *count, struct tr_error *err)
{
    *out = NULL;
    *count = 0;
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, d->study_uid);
    const char *sites[2] = {d->site, NULL};
    struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys, .sites = sites};
    struct arc_instance_ref *list = NULL;
    size_t n = 0;
    int rc = arc_index_instances(arc_index(r->cfg.archive), &q, &list, &n, err);
    dcm_dataset_free(keys);
    if (rc < 0)
        return rc;
    struct rep_evidence *ev = n ? tr_calloc(n, sizeof(*ev)) : NULL;
    if (n && !ev) {
        tr_free(list);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n && k < 20000; i++) {
        if (strcmp(list[i].series_uid, d->sr_series) == 0 ||
            strcmp(list[i].series_uid, d->pdf_series) == 0)
            continue;
        snprintf(ev[k].series_uid, sizeof(ev[k].series_uid), "%s", list[i].series_uid);
        snprintf(ev[k].sop_class, sizeof(ev[k].sop_class), "%s", list[i].sop_class);
        snprintf(ev[k].sop_uid, sizeof(ev[k].sop_uid), "%s", list[i].sop_uid);
        k++;
    }
    tr_free(list);
    if (k)
        qsort(ev, k, sizeof(*ev), evidence_cmp);
    *out = ev;
    *count = k;
    return 0;
}

static enum outcome deliver_sr(struct attempt *a, const struct rep_doc *d)
{
    struct tr_error err = TR_ERROR_INIT;
    struct rep_evidence *ev;
    size_t n;
    if (study_evidence(a->r, d, &ev, &n, &err) < 0)
        return fail(a, RETRY, "the study's instances: %s", err.message);
    struct dcm_dataset *ds = rep_sr_build(d, ev, n, d->signed_at, &err);
    tr_free(ev);
    if (!ds)
        return fail(a, REJECTED, "SR: %s", err.message);
    enum outcome o = ingest(a, d, ds, "1.2.840.10008.5.1.4.1.1.88.11", d->sr_uid);
    dcm_dataset_free(ds);
    return o;
}

static int render(const struct rep_doc *d, struct tr_buf *pdf, struct tr_error *err)
{
    tr_buf_init(pdf, 32u << 20);
    return rep_pdf_render(d, pdf, err);
}

static enum outcome deliver_pdf(struct attempt *a, const struct rep_doc *d)
{
    struct tr_error err = TR_ERROR_INIT;
    struct tr_buf pdf;
    if (render(d, &pdf, &err) < 0) {
        tr_buf_release(&pdf);
        return fail(a, RETRY, "PDF: %s", err.message);
    }
    struct dcm_dataset *ds = rep_pdf_dataset(d, pdf.data, pdf.len, d->signed_at, &err);
    tr_buf_release(&pdf);
    if (!ds)
        return fail(a, REJECTED, "Encapsulated PDF: %s", err.message);
    enum outcome o = ingest(a, d, ds, "1.2.840.10008.5.1.4.1.1.104.1", d->pdf_uid);
    dcm_dataset_free(ds);
    return o;
}

static enum outcome deliver_hl7(struct attempt *a, const struct rep_doc *d)
{
    char host[256];
    int port;
    if (rep_parse_hostport(a->destination, host, sizeof(host), &port) < 0)
        return fail(a, REJECTED, "results.hl7 \"%s\" is not host:port", a->destination);
    json_t *site = flow_document(a->db, "site", d->site);
    const char *receiver =
        json_string_value(json_object_get(json_object_get(site, "results"), "hl7_receiver"));
    char recv[256];
    snprintf(recv, sizeof(recv), "%s", receiver ? receiver : "");
    json_decref(site);
    struct tr_error err = TR_ERROR_INIT;
    struct tr_buf pdf, msg;
    tr_buf_init(&msg, 64u << 20);
    char control[32];
    snprintf(control, sizeof(control), "TR%" PRId64, a->id);
    enum outcome o = DELIVERED;
    if (render(d, &pdf, &err) < 0 ||
        rep_oru_build(d, control, recv, rep_now_ms(), pdf.data, pdf.len, &msg, &err) < 0)
        o = fail(a, RETRY, "ORU: %s", err.message);
    tr_buf_release(&pdf);
    struct mllp_client *c = NULL;
    if (o == DELIVERED) {
        struct mllp_client_options opt;
        mllp_client_options_init(&opt);
        opt.ack_timeout_ms = (int)a->r->cfg.ack_timeout * 1000;
        opt.connect_timeout_ms = opt.ack_timeout_ms < 10000 ? opt.ack_timeout_ms : 10000;
        if (mllp_client_connect(host, port, &opt, &c, &err) < 0)
            o = fail(a, RETRY, "MLLP: %s", err.message);
    }
    if (o == DELIVERED) {
        struct mllp_ack ack;
        if (mllp_client_send(c, msg.data, msg.len, &ack, &err) < 0) {
            o = fail(a, RETRY, "MLLP: %s", err.message);
        } else {
            snprintf(a->ack, sizeof(a->ack), "%s%s%s", ack.code, *ack.text ? " " : "", ack.text);
            if (ack.status == MLLP_ACK_ERROR)
                o = fail(a, RETRY, "ACK %s (application error)%s%s", ack.code,
                         *ack.text ? ": " : "", ack.text);
            else if (ack.status == MLLP_ACK_REJECT)
                o = fail(a, REJECTED, "ACK %s (rejected)%s%s", ack.code, *ack.text ? ": " : "",
                         ack.text);
            mllp_ack_release(&ack);
        }
    }
    mllp_client_close(c);
    tr_buf_release(&msg);
    return o;
}

static size_t discard(char *p, size_t size, size_t n, void *ctx)
{
    (void)p;
    struct tr_buf *b = ctx;
    size_t len = size * n;
    if (b->len < 400)
        tr_buf_add(b, p, len < 400 - b->len ? len : 400 - b->len);
    return len;
}

static enum outcome deliver_fhir(struct attempt *a, const struct rep_doc *d)
{
    if (strncmp(a->destination, "http://", 7) && strncmp(a->destination, "https://", 8))
        return fail(a, REJECTED, "results.fhir \"%s\" is not an http(s) URL", a->destination);
    struct tr_error err = TR_ERROR_INIT;
    struct tr_buf pdf;
    if (render(d, &pdf, &err) < 0) {
        tr_buf_release(&pdf);
        return fail(a, RETRY, "PDF: %s", err.message);
    }
    json_t *bundle = rep_fhir_bundle(d, pdf.data, pdf.len);
    tr_buf_release(&pdf);
    char *body = bundle ? json_dumps(bundle, JSON_COMPACT) : NULL;
    json_decref(bundle);
    if (!body)
        return fail(a, RETRY, "out of memory");
    CURL *c = curl_easy_init();
    if (!c) {
        free(body);
        return fail(a, RETRY, "curl_easy_init failed");
    }
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/fhir+json");
    h = curl_slist_append(h, "Accept: application/fhir+json");
    struct tr_buf answer;
    tr_buf_init(&answer, 512);
    curl_easy_setopt(c, CURLOPT_URL, a->destination);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)a->r->cfg.ack_timeout * 1000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 10000L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &answer);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    free(body);
    enum outcome o = DELIVERED;
    if (cc != CURLE_OK)
        o = fail(a, RETRY, "FHIR: %s", curl_easy_strerror(cc));
    else {
        snprintf(a->ack, sizeof(a->ack), "HTTP %ld", status);
        if (status < 200 || status > 299)
            o = fail(
                a,
                status >= 400 && status < 500 && status != 408 && status != 429 ? REJECTED : RETRY,
                "FHIR server answered HTTP %ld: %.300s", status, answer.data ? answer.data : "");
    }
    tr_buf_release(&answer);
    return o;
}

/* C-STORE the version's SR and PDF from the archive to the site's PACS. */
static enum outcome deliver_dicom(struct attempt *a, const struct rep_doc *d)
{
    char ae[17], host[256];
    int port;
    if (rep_parse_dicom_target(a->destination, ae, sizeof(ae), host, sizeof(host), &port) < 0)
        return fail(a, REJECTED, "results.dicom \"%s\" is not AE@host:port", a->destination);
    struct arc_archive *arc = a->r->cfg.archive;
    struct scu_file files[2];
    const char *uids[2] = {d->sr_uid, d->pdf_uid};
    struct tr_error err = TR_ERROR_INIT;
    for (int i = 0; i < 2; i++) {
        char key[300], path[4096];
        if (arc_index_find_instance(arc_index(arc), d->site, uids[i], key, sizeof(key), &err) < 0 ||
            arc_object_path(arc_objects(arc), key, path, sizeof(path)) < 0 ||
            scu_file_probe(path, &files[i], &err) < 0)
            return fail(a, RETRY, "report object %s not readable from the archive: %s", uids[i],
                        err.message);
    }
    struct pdu_associate *rq = tr_malloc(sizeof(*rq));
    if (!rq)
        return fail(a, RETRY, "out of memory");
    pdu_associate_init(rq);
    snprintf(rq->calling_ae, sizeof(rq->calling_ae), "%s", a->r->cfg.ae_title);
    snprintf(rq->called_ae, sizeof(rq->called_ae), "%s", ae);
    static const char *const ts[] = {EXPLICIT_LE, IMPLICIT_LE, NULL};
    scu_add_context(rq, files[0].sop_class, ts);
    scu_add_context(rq, files[1].sop_class, ts);
    struct dul_config cfg;
    dul_config_init(&cfg);
    cfg.ae_title = a->r->cfg.ae_title;
    cfg.timeout_ms = (int)a->r->cfg.ack_timeout * 1000;
    cfg.connect_timeout_ms = cfg.timeout_ms < 10000 ? cfg.timeout_ms : 10000;
    struct dul_assoc *as;
    if (dul_request(&cfg, host, port, rq, &as, &err) < 0) {
        pdu_associate_release(rq);
        tr_free(rq);
        return fail(a, RETRY, "association with %s at %s:%d: %s", ae, host, port, err.message);
    }
    enum outcome o = DELIVERED;
    for (int i = 0; i < 2 && o == DELIVERED; i++) {
        uint16_t status = 0;
        char comment[128] = "";
        if (scu_store_file(as, &files[i], (uint16_t)(i + 1), NULL, 0, &status, comment,
                           sizeof(comment), &err) < 0) {
            dul_abort(as, PDU_ABORT_USER, 0);
            dul_free(as);
            return fail(a, RETRY, "C-STORE to %s: %s", ae, err.message);
        }
        if (dimse_status_is_failure(status))
            o = fail(a, (status & 0xFF00) == 0xA700 ? RETRY : REJECTED,
                     "C-STORE to %s: status %04X %s", ae, status, comment);
        else
            snprintf(a->ack + strlen(a->ack), sizeof(a->ack) - strlen(a->ack), "%s%04X",
                     i ? " " : "C-STORE ", status);
    }
    if (dul_release(as, &err) < 0)
        rep_log(a->r, 1, "report delivery %" PRId64 ": releasing the association with %s: %s",
                a->id, ae, err.message);
    dul_free(as);
    return o;
}

/* Has every row of this version for these targets been delivered? */
static bool delivered(struct db *db, int64_t version_id, const char *t1, const char *t2)
{
    struct db_stmt *st;
    if (db_prepare(db,
                   "SELECT COUNT(*) FROM rep_outbox WHERE version_id = $1 AND target IN "
                   "($2, $3) AND state = 'delivered'",
                   &st, NULL) < 0)
        return false;
    db_bind_int64(st, 1, version_id);
    db_bind_text(st, 2, t1);
    db_bind_text(st, 3, t2);
    bool ok = db_step(st, NULL) == 1 && db_column_int64(st, 0) == 2;
    db_reset(st);
    return ok;
}

/* Is an earlier version's row for the same read and target still pending? */
static bool earlier_pending(struct db *db, const struct attempt *a)
{
    struct db_stmt *st;
    if (db_prepare(db,
                   "SELECT COUNT(*) FROM rep_outbox WHERE read_id = $1 AND target = $2 AND "
                   "id < $3 AND state = 'pending'",
                   &st, NULL) < 0)
        return true;
    db_bind_int64(st, 1, a->read_id);
    db_bind_text(st, 2, a->target);
    db_bind_int64(st, 3, a->id);
    bool pending = db_step(st, NULL) != 1 || db_column_int64(st, 0) > 0;
    db_reset(st);
    return pending;
}

static enum outcome attempt_one(struct attempt *a)
{
    if (strcmp(a->target, "dicom") == 0 &&
        !delivered(a->db, a->version_id, "archive-sr", "archive-pdf"))
        return WAIT;
    struct rep_doc d;
    struct tr_error err = TR_ERROR_INIT;
    if (rep_doc_load(a->r, a->db, a->version_id, &d, &err) < 0)
        return fail(a, err.code == TR_ENOTFOUND ? REJECTED : RETRY, "the report: %s", err.message);
    enum outcome o;
    if (strcmp(a->target, "archive-sr") == 0)
        o = deliver_sr(a, &d);
    else if (strcmp(a->target, "archive-pdf") == 0)
        o = deliver_pdf(a, &d);
    else if (strcmp(a->target, "hl7") == 0)
        o = deliver_hl7(a, &d);
    else if (strcmp(a->target, "fhir") == 0)
        o = deliver_fhir(a, &d);
    else if (strcmp(a->target, "dicom") == 0)
        o = deliver_dicom(a, &d);
    else
        o = fail(a, REJECTED, "unknown target \"%s\"", a->target);
    rep_doc_release(&d);
    return o;
}

/* Record the outcome (the row and, when final, the read's history) in one transaction. */
static void record(struct attempt *a, enum outcome o, int64_t now)
{
    struct rep *r = a->r;
    struct db *db = a->db;
    unsigned tries = (unsigned)a->attempts + 1;
    const char *state = o == DELIVERED ? "delivered" : o == REJECTED ? "rejected" : "pending";
    if (o == RETRY && tries >= r->cfg.max_attempts)
        state = "failed";
    int64_t wait = (int64_t)r->cfg.retry_initial * 1000;
    for (int i = 1; i < a->attempts + 1 && wait < (int64_t)r->cfg.retry_max * 1000; i++)
        wait *= 2;
    if (wait > (int64_t)r->cfg.retry_max * 1000)
        wait = (int64_t)r->cfg.retry_max * 1000;
    struct tr_error err = TR_ERROR_INIT;
    struct db_stmt *st;
    if (db_begin(db, &err) < 0 ||
        db_prepare(db,
                   "UPDATE rep_outbox SET state = $2, attempts = $3, next_at = $4, "
                   "delivered_at = $5, last_error = $6, last_ack = COALESCE($7, last_ack) "
                   "WHERE id = $1",
                   &st, &err) < 0) {
        db_rollback(db);
        rep_log(r, 0, "report delivery %" PRId64 ": cannot record the outcome: %s", a->id,
                err.message);
        return;
    }
    db_bind_int64(st, 1, a->id);
    db_bind_text(st, 2, state);
    db_bind_int64(st, 3, tries);
    db_bind_int64(st, 4, now + (o == RETRY ? wait : 0));
    if (o == DELIVERED)
        db_bind_int64(st, 5, now);
    else
        db_bind_null(st, 5);
    db_bind_text(st, 6, o == DELIVERED ? NULL : a->why);
    db_bind_text(st, 7, *a->ack ? a->ack : NULL);
    int rc = db_step(st, &err);
    db_reset(st);
    if (rc >= 0 && strcmp(state, "pending") != 0) {
        json_t *d = json_pack("{s:I,s:s,s:s,s:s,s:i}", "report_version", (json_int_t)a->version_id,
                              "target", a->target, "destination", a->destination, "answer",
                              o == DELIVERED ? a->ack : a->why, "attempts", (int)tries);
        rc = flow_read_note(db, a->read_id,
                            o == DELIVERED  ? "report_delivered"
                            : o == REJECTED ? "report_rejected"
                                            : "report_delivery_failed",
                            "system", d, now, &err);
        json_decref(d);
    }
    if (rc < 0 || db_commit(db, &err) < 0) {
        db_rollback(db);
        rep_log(r, 0, "report delivery %" PRId64 ": cannot record the outcome: %s", a->id,
                err.message);
        return;
    }
    if (o == DELIVERED)
        rep_log(r, 2, "read %" PRId64 ": report version %" PRId64 " delivered to %s%s%s (%s)",
                a->read_id, a->version_id, a->target, *a->destination ? " " : "", a->destination,
                a->ack);
    else if (o == REJECTED)
        rep_log(r, 0, "read %" PRId64 ": report version %" PRId64 " to %s %s rejected: %s",
                a->read_id, a->version_id, a->target, a->destination, a->why);
    else
        rep_log(r, 1,
                "read %" PRId64 ": report version %" PRId64 " to %s %s not delivered "
                "(attempt %u): %s; %s",
                a->read_id, a->version_id, a->target, a->destination, tries, a->why,
                strcmp(state, "failed") == 0 ? "given up" : "will retry");
}

int rep_outbox_deliver(struct rep *r, int64_t now, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(r->pool, &db, err);
    if (rc)
        return rc;
    enum { BATCH = 20 };
    struct attempt *due = tr_calloc(BATCH, sizeof(*due));
    size_t n = 0;
    struct db_stmt *st;
    if (!due) {
        db_pool_release(r->pool, db);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    rc = db_prepare(db,
                    "SELECT id, version_id, read_id, target, destination, attempts FROM "
                    "rep_outbox WHERE state = 'pending' AND next_at <= $1 ORDER BY id LIMIT 20",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, now);
        while (n < BATCH && (rc = db_step(st, err)) == 1) {
            struct attempt *a = &due[n++];
            a->r = r;
            a->db = db;
            a->id = db_column_int64(st, 0);
            a->version_id = db_column_int64(st, 1);
            a->read_id = db_column_int64(st, 2);
            snprintf(a->target, sizeof(a->target), "%s", db_column_text(st, 3));
            snprintf(a->destination, sizeof(a->destination), "%s", db_column_text(st, 4));
            a->attempts = (int)db_column_int64(st, 5);
        }
        db_reset(st);
    }
    int done = 0;
    for (size_t i = 0; rc >= 0 && i < n; i++) {
        struct attempt *a = &due[i];
        if (earlier_pending(db, a))
            continue;
        /* The lease: the longest an attempt takes (connect + send + wait for the answer, with
         * a margin), from the clock now: the attempts before this one may have taken long,
         * and a lease counted from the batch's start could already have run out, letting
         * another node take the row while this one sends it. */
        int64_t t = rep_now_ms();
        int64_t lease = t + 2 * (int64_t)r->cfg.ack_timeout * 1000 + 5000;
        if (db_prepare(db,
                       "UPDATE rep_outbox SET next_at = $3 WHERE id = $1 AND state = "
                       "'pending' AND attempts = $2 AND next_at <= $4",
                       &st, NULL) < 0)
            continue;
        db_bind_int64(st, 1, a->id);
        db_bind_int64(st, 2, a->attempts);
        db_bind_int64(st, 3, lease);
        db_bind_int64(st, 4, t > now ? t : now);
        bool mine = db_step(st, NULL) >= 0 && db_changes(st) == 1;
        db_reset(st);
        if (!mine)
            continue;
        enum outcome o = attempt_one(a);
        int64_t after = rep_now_ms();
        if (o == WAIT) {
            /* Not yet (the archive rows come first): give the lease back. */
            if (db_prepare(db,
                           "UPDATE rep_outbox SET next_at = $2 WHERE id = $1 AND state = "
                           "'pending'",
                           &st, NULL) == 0) {
                db_bind_int64(st, 1, a->id);
                db_bind_int64(st, 2, after + 1000);
                db_step(st, NULL);
                db_reset(st);
            }
            continue;
        }
        record(a, o, after);
        done++;
    }
    tr_free(due);
    db_pool_release(r->pool, db);
    return rc < 0 ? rc : done;
}

/* POST /deliveries/{id}/retry: a rejected or failed row goes back to pending, now. */
int rep_outbox_retry(struct rep *r, struct db *db, int64_t id, const char *actor,
                     struct tr_error *err)
{
    struct db_stmt *st;
    int64_t now = rep_now_ms();
    int rc = db_prepare(db,
                        "UPDATE rep_outbox SET state = 'pending', attempts = 0, next_at = $2 "
                        "WHERE id = $1 AND state IN ('rejected', 'failed')",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, id);
    db_bind_int64(st, 2, now);
    rc = db_step(st, err);
    bool done = rc >= 0 && db_changes(st) == 1;
    db_reset(st);
    if (rc < 0)
        return rc;
    if (!done)
        return TR_EEXIST;
    rep_log(r, 2, "report delivery %" PRId64 " retried by %s", id, actor);
    rep_wake(r);
    return 0;
}
