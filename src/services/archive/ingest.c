/*
 * ingest.c - durable ingest: bytes to a temporary object as they arrive, header parsed and
 * checked, object committed (fsync, rename, fsync), then the answer. PS3.4 B.2.3 statuses.
 */
#include "common.h"
#include "archive.h"
#include "archive_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

void arc_config_init(struct arc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->data_dir = "telerad-data";
    cfg->duplicates = ARC_DUPLICATE_REJECT;
    cfg->min_free_bytes = 256ull << 20;
}

int arc_duplicate_policy_parse(const char *text, enum arc_duplicate_policy *out)
{
    static const struct {
        const char *name;
        enum arc_duplicate_policy policy;
    } names[] = {{"reject", ARC_DUPLICATE_REJECT},
                 {"replace", ARC_DUPLICATE_REPLACE},
                 {"keep-first", ARC_DUPLICATE_KEEP_FIRST}};
    for (size_t i = 0; i < TR_ARRAY_SIZE(names); i++) {
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].policy;
            return 0;
        }
    }
    return TR_EINVAL;
}

void arc_log(struct arc_archive *a, int level, const char *fmt, ...)
{
    if (!a->cfg.log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    a->cfg.log(a->cfg.log_ctx, level, line);
}

int arc_open(const struct arc_config *cfg, struct arc_archive **out, struct tr_error *err)
{
    struct arc_archive *a = tr_calloc(1, sizeof(*a));
    if (!a)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    a->cfg = *cfg;
    snprintf(a->data_dir, sizeof(a->data_dir), "%s", cfg->data_dir ? cfg->data_dir : "telerad-data");
    a->cfg.data_dir = a->data_dir;
    int rc = arc_objstore_open_fs(a->data_dir, &a->store, err);
    if (rc) {
        tr_free(a);
        return rc;
    }
    /* Puts that never committed (a crash mid-transfer) were never acknowledged: remove them. */
    rc = arc_objstore_reconcile(a->store, NULL, NULL, err);
    if (rc) {
        arc_close(a);
        return rc;
    }
    *out = a;
    return 0;
}

void arc_close(struct arc_archive *a)
{
    if (!a)
        return;
    arc_objstore_close(a->store);
    tr_free(a);
}

struct arc_objstore *arc_objects(struct arc_archive *a)
{
    return a->store;
}

/* ---- ingest ------------------------------------------------------------------------------- */

struct arc_ingest {
    struct arc_archive *archive;
    struct arc_put *put;
    char sop_class[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    char source_ae[17];
    char peer[64];
};

/* The object key of an instance: 256 directories by a hash of the UID, then the UID. */
void arc_object_key(const char *sop_instance, char *key, size_t size)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)sop_instance; *p; p++)
        h = (h ^ *p) * 16777619u;
    snprintf(key, size, "%02x/%s.dcm", (unsigned)(h >> 24), sop_instance);
}

int arc_ingest_begin(struct arc_archive *a, const struct arc_source *src, struct arc_ingest **out,
                     struct tr_error *err)
{
    uint64_t free_bytes;
    if (arc_objstore_free_space(a->store, &free_bytes) == 0 &&
        free_bytes < a->cfg.min_free_bytes)
        return tr_error_set(err, TR_ELIMIT, "only %llu MB free in %s",
                            (unsigned long long)(free_bytes >> 20), a->data_dir);
    struct arc_ingest *in = tr_calloc(1, sizeof(*in));
    if (!in)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    in->archive = a;
    snprintf(in->sop_class, sizeof(in->sop_class), "%s", src->sop_class ? src->sop_class : "");
    snprintf(in->sop_instance, sizeof(in->sop_instance), "%s",
             src->sop_instance ? src->sop_instance : "");
    snprintf(in->source_ae, sizeof(in->source_ae), "%s", src->calling_ae ? src->calling_ae : "");
    snprintf(in->peer, sizeof(in->peer), "%s", src->peer ? src->peer : "");
    int rc = arc_put_begin(a->store, &in->put, err);
    if (rc) {
        tr_free(in);
        return rc;
    }
    if (!src->part10) {
        /* A bare data set (C-STORE): stored as received, behind a Part 10 header. */
        rc = dcm_file_write_header(src->sop_class, src->sop_instance, src->transfer_syntax,
                                   src->calling_ae, arc_put_sink(in->put), err);
        if (rc) {
            arc_put_abort(in->put);
            tr_free(in);
            return rc;
        }
    }
    *out = in;
    return 0;
}

struct tr_sink *arc_ingest_sink(struct arc_ingest *in)
{
    return arc_put_sink(in->put);
}

static void set_result(struct arc_ingest_result *res, uint16_t status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_result(struct arc_ingest_result *res, uint16_t status, const char *fmt, ...)
{
    res->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->comment, sizeof(res->comment), fmt, ap);
    va_end(ap);
}

/* Read the header of what was received and check it (PS3.4 B.2.3): the UIDs that identify it
 * are present and valid, and agree with what the sender announced. Returns a status. */
static uint16_t check_header(struct arc_ingest *in, const struct dcm_file *f,
                             struct arc_ingest_result *res)
{
    char sop_class[DCM_UID_MAX + 1], sop_instance[DCM_UID_MAX + 1];
    char study[DCM_UID_MAX + 1], series[DCM_UID_MAX + 1];
    const struct dcm_dataset *ds = f->dataset;
    if (dcm_dataset_get_uid(ds, DCM_TAG_SOPClassUID, sop_class, sizeof(sop_class)) < 0 ||
        dcm_dataset_get_uid(ds, DCM_TAG_SOPInstanceUID, sop_instance, sizeof(sop_instance)) < 0) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH,
                   "no SOP Class UID or SOP Instance UID");
        return res->status;
    }
    if (dcm_dataset_get_uid(ds, DCM_TAG_StudyInstanceUID, study, sizeof(study)) < 0 ||
        !dcm_uid_is_valid(study, strlen(study))) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH, "missing or invalid Study Instance UID");
        return res->status;
    }
    if (dcm_dataset_get_uid(ds, DCM_TAG_SeriesInstanceUID, series, sizeof(series)) < 0 ||
        !dcm_uid_is_valid(series, strlen(series))) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH,
                   "missing or invalid Series Instance UID");
        return res->status;
    }
    if (!dcm_uid_is_valid(sop_instance, strlen(sop_instance))) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH, "invalid SOP Instance UID");
        return res->status;
    }
    if (in->sop_instance[0] && strcmp(in->sop_instance, sop_instance) != 0) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH,
                   "SOP Instance UID differs from the C-STORE request");
        return res->status;
    }
    if (in->sop_class[0] && strcmp(in->sop_class, sop_class) != 0) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH,
                   "SOP Class UID differs from the C-STORE request");
        return res->status;
    }
    snprintf(in->sop_instance, sizeof(in->sop_instance), "%s", sop_instance);
    snprintf(res->sop_instance, sizeof(res->sop_instance), "%s", sop_instance);
    snprintf(res->study_uid, sizeof(res->study_uid), "%s", study);
    return DIMSE_STATUS_SUCCESS;
}

int arc_ingest_end(struct arc_ingest *in, bool complete, struct arc_ingest_result *res,
                   struct tr_error *err)
{
    struct arc_archive *a = in->archive;
    memset(res, 0, sizeof(*res));
    res->size = arc_put_size(in->put);
    int rc = 0;
    if (!complete) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "the data set did not arrive whole");
        goto out;
    }
    /* Make the bytes readable under the temporary name and parse the header. */
    struct tr_error perr = TR_ERROR_INIT;
    char key[DCM_UID_MAX + 16];
    struct dcm_file *f = NULL;
    struct dcm_read_options ropt;
    dcm_read_options_init(&ropt);
    ropt.header_only = true;
    rc = arc_put_flush(in->put, err);
    if (rc) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot write: %.40s",
                   err ? err->message : "");
        goto out;
    }
    if (dcm_file_read(arc_put_temp_path(in->put), &ropt, &f, &perr) < 0) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_CANNOT_UNDERSTAND, "%.64s", perr.message);
        arc_log(a, SCP_LOG_WARNING, "object from %s refused: %s", in->source_ae, perr.message);
        rc = 0;
        goto out;
    }
    uint16_t status = check_header(in, f, res);
    dcm_file_free(f);
    if (status != DIMSE_STATUS_SUCCESS) {
        arc_put_abort(in->put);
        arc_log(a, SCP_LOG_WARNING, "object %s from %s refused: %s", in->sop_instance,
                in->source_ae, res->comment);
        goto out;
    }
    arc_object_key(in->sop_instance, key, sizeof(key));
    struct tr_error cerr = TR_ERROR_INIT;
    char temp[4096];
    snprintf(temp, sizeof(temp), "%s", arc_put_temp_path(in->put));
    struct arc_put *put = in->put;
    in->put = NULL;
    /* A commit that finds the key taken leaves both: compare before deciding. */
    rc = arc_put_commit(put, key, &cerr);
    if (rc == TR_EEXIST) {
        bool same = false;
        arc_object_same(a->store, key, temp, &same, NULL);
        if (same) {
            res->duplicate = true;
            arc_put_abort(put);
            rc = 0;
        } else if (a->cfg.duplicates == ARC_DUPLICATE_REPLACE) {
            rc = arc_put_commit_replace(put, key, &cerr);
            if (rc == 0)
                arc_log(a, SCP_LOG_INFO, "object %s replaced by a different one from %s",
                        in->sop_instance, in->source_ae);
        } else {
            arc_put_abort(put);
            rc = 0;
            if (a->cfg.duplicates == ARC_DUPLICATE_REJECT) {
                set_result(res, DIMSE_STATUS_UNABLE_TO_PROCESS,
                           "a different object with this SOP Instance UID is stored");
                arc_log(a, SCP_LOG_WARNING, "object %s from %s refused: %s", in->sop_instance,
                        in->source_ae, res->comment);
                goto out;
            }
            res->duplicate = true;
        }
    }
    if (rc) {
        set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot store: %.48s", cerr.message);
        arc_log(a, SCP_LOG_ERROR, "object %s from %s not stored: %s", in->sop_instance,
                in->source_ae, cerr.message);
        tr_error_set(err, rc, "%s", cerr.message);
        goto out;
    }
    res->status = DIMSE_STATUS_SUCCESS;
out:
    tr_free(in);
    return rc;
}

/* ---- import of files ---------------------------------------------------------------------- */

int arc_ingest_file(struct arc_archive *a, const char *path, const char *source_ae,
                    struct arc_ingest_result *res, struct tr_error *err)
{
    struct arc_source src = {.calling_ae = source_ae, .peer = "import", .part10 = true};
    struct arc_ingest *in;
    int rc = arc_ingest_begin(a, &src, &in, err);
    if (rc)
        return rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = tr_error_set(err, TR_EIO, "cannot open %s: %s", path, strerror(errno));
        arc_ingest_end(in, false, res, NULL);
        return rc;
    }
    uint8_t *buf = tr_malloc(1 << 20);
    bool ok = buf != NULL;
    for (ssize_t n; ok && (n = read(fd, buf, 1 << 20)) != 0;) {
        if (n < 0) {
            if (errno == EINTR)
                continue;
            ok = false;
            tr_error_set(err, TR_EIO, "cannot read %s: %s", path, strerror(errno));
            break;
        }
        if (tr_sink_write(arc_ingest_sink(in), buf, (size_t)n) < 0) {
            ok = false;
            tr_error_set(err, TR_EIO, "cannot store %s", path);
        }
    }
    tr_free(buf);
    close(fd);
    rc = arc_ingest_end(in, ok, res, err);
    return rc ? rc : (ok ? 0 : TR_EIO);
}

/* ---- DIMSE handlers ----------------------------------------------------------------------- */

static int scp_store_begin(void *ctx, const struct scp_store *st, struct tr_sink *sink,
                           void **handle)
{
    struct arc_archive *a = ctx;
    struct arc_source src = {.calling_ae = st->peer->calling_ae,
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

static uint16_t scp_store_end(void *ctx, void *handle, bool complete, char *comment,
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

static void scp_log(void *ctx, int level, const char *message)
{
    arc_log(ctx, level, "%s", message);
}

void arc_scp_handlers(struct arc_archive *a, struct scp_handlers *h)
{
    memset(h, 0, sizeof(*h));
    h->ctx = a;
    h->store_begin = scp_store_begin;
    h->store_end = scp_store_end;
    h->log = scp_log;
}
