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

/* ---- ingest ------------------------------------------------------------------------------- */

struct arc_ingest {
    struct arc_archive *archive;
    struct arc_put *put;
    char site[65];
    char sop_class[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    char source_ae[17];
    char peer[64];
    char study_uid[DCM_UID_MAX + 1]; /* expected, or "" */
};

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
    snprintf(in->source_ae, sizeof(in->source_ae), "%s",
             src->calling_ae && *src->calling_ae ? src->calling_ae
                                                 : src->peer && *src->peer ? src->peer : "?");
    snprintf(in->peer, sizeof(in->peer), "%s", src->peer ? src->peer : "");
    snprintf(in->site, sizeof(in->site), "%s", src->site ? src->site : "");
    snprintf(in->study_uid, sizeof(in->study_uid), "%s", src->study_uid ? src->study_uid : "");
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
    snprintf(res->sop_class, sizeof(res->sop_class), "%s", sop_class);
    snprintf(res->sop_instance, sizeof(res->sop_instance), "%s", sop_instance);
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
    if (in->study_uid[0] && strcmp(in->study_uid, study) != 0) {
        set_result(res, DIMSE_STATUS_DATASET_DOES_NOT_MATCH,
                   "Study Instance UID differs from the request's");
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
    snprintf(res->series_uid, sizeof(res->series_uid), "%s", series);
    return DIMSE_STATUS_SUCCESS;
}

/* Has the index this instance (a resend of an identical object: nothing to change)? */
static bool indexed(struct arc_archive *a, const char *sop_uid)
{
    char key[300];
    return arc_index_find_instance(a->index, NULL, sop_uid, key, sizeof(key), NULL) == 0;
}

int arc_ingest_end(struct arc_ingest *in, bool complete, struct arc_ingest_result *res,
                   struct tr_error *err)
{
    struct arc_archive *a = in->archive;
    memset(res, 0, sizeof(*res));
    res->size = arc_put_size(in->put);
    struct dcm_file *f = NULL;
    struct arc_record *rec = NULL;
    int rc = 0;
    if (!complete) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "the data set did not arrive whole");
        goto out;
    }
    /* Make the bytes readable under the temporary name and parse the header. */
    if ((rc = arc_put_flush(in->put, err))) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot write: %.40s",
                   err ? err->message : "");
        arc_log(a, SCP_LOG_ERROR, "object from %s not stored: %s", in->source_ae,
                err ? err->message : tr_strerror(rc));
        goto out;
    }
    /* The whole structure is checked, not just the header: a data set cut short is refused.
     * Values are mapped, not read, so the pixel data costs a length check. */
    struct tr_error perr = TR_ERROR_INIT;
    struct dcm_read_options ropt;
    dcm_read_options_init(&ropt);
    if (dcm_file_read(arc_put_temp_path(in->put), &ropt, &f, &perr) < 0) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_CANNOT_UNDERSTAND, "%.64s", perr.message);
        arc_log(a, SCP_LOG_WARNING, "object from %s refused: %s", in->source_ae, perr.message);
        goto out;
    }
    if (check_header(in, f, res) != DIMSE_STATUS_SUCCESS) {
        arc_put_abort(in->put);
        arc_log(a, SCP_LOG_WARNING, "object %s from %s refused: %s", in->sop_instance,
                in->source_ae, res->comment);
        goto out;
    }
    rec = tr_calloc(1, sizeof(*rec));
    if (!rec || arc_record_from_dataset(rec, f->dataset, &perr) < 0) {
        arc_put_abort(in->put);
        set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "out of memory");
        goto out;
    }
    snprintf(rec->site, sizeof(rec->site), "%s", in->site);
    snprintf(rec->transfer_syntax, sizeof(rec->transfer_syntax), "%s", f->ts_uid);
    snprintf(rec->source_ae, sizeof(rec->source_ae), "%s", in->source_ae);
    rec->size = res->size;
    rec->has_checksum = arc_put_checksum(in->put, &rec->checksum);
    arc_object_key(res->study_uid, in->sop_instance, rec->object_key, sizeof(rec->object_key));

    char temp[4096];
    snprintf(temp, sizeof(temp), "%s", arc_put_temp_path(in->put));
    struct arc_put *put = in->put;
    in->put = NULL;
    struct tr_error cerr = TR_ERROR_INIT;

    if (!arc_put_target_exists(put, rec->object_key)) {
        /* A new object (the common case): the index commits while the object's bytes and
         * name are made durable; the answer waits for both. A crash in between leaves a row
         * without object or an object without row, never acknowledged: reconciliation at the
         * next start removes the one and indexes the other. */
        struct arc_index_job job;
        arc_index_add_begin(a->index, &job, rec);
        rc = arc_put_commit(put, rec->object_key, &cerr);
        struct tr_error ierr = TR_ERROR_INIT;
        int irc = arc_index_add_wait(a->index, &job, &ierr);
        if (rc == TR_EEXIST) {
            /* Lost a race with another copy of this instance arriving at the same time: the
             * other one's row is in; this copy is a duplicate. */
            bool same = false;
            arc_object_same(a->store, rec->object_key, temp, &same, NULL);
            arc_put_abort(put);
            if (!same) /* our row described the other object: describe the stored one */
                arc_index_object(a, rec->object_key, in->site, NULL, NULL);
            if (!same && a->cfg.duplicates == ARC_DUPLICATE_REJECT) {
                set_result(res, DIMSE_STATUS_UNABLE_TO_PROCESS,
                           "a different object with this SOP Instance UID is stored");
                rc = 0;
                goto out;
            }
            res->duplicate = true;
            rc = 0;
        } else if (rc) {
            if (irc == 0)
                arc_index_forget_object(a->index, rec->object_key, NULL);
            set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot store: %.48s", cerr.message);
            arc_log(a, SCP_LOG_ERROR, "object %s from %s not stored: %s", in->sop_instance,
                    in->source_ae, cerr.message);
            tr_error_set(err, rc, "%s", cerr.message);
            goto out;
        }
        if (irc) {
            arc_object_delete(a->store, rec->object_key, NULL);
            set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot index: %.48s", ierr.message);
            arc_log(a, SCP_LOG_ERROR, "object %s from %s not indexed: %s", in->sop_instance,
                    in->source_ae, ierr.message);
            rc = tr_error_set(err, irc, "%s", ierr.message);
            goto out;
        }
        res->status = DIMSE_STATUS_SUCCESS;
        goto out;
    }

    /* The key is taken: the same object again, or a different one under the same UID. */
    bool created = true, row_done = false;
    rc = arc_put_commit(put, rec->object_key, &cerr);
    if (rc == TR_EEXIST) {
        bool same = false;
        arc_object_same(a->store, rec->object_key, temp, &same, NULL);
        if (same) {
            res->duplicate = true;
            created = false;
            arc_put_abort(put);
            rc = 0;
        } else if (a->cfg.duplicates == ARC_DUPLICATE_REPLACE) {
            /* The row first, then the bytes: if indexing fails the stored (acknowledged)
             * object is untouched; if the replacement fails after, the row is put back. */
            struct tr_error ierr = TR_ERROR_INIT;
            rc = arc_index_add(a->index, rec, &ierr);
            if (rc) {
                arc_put_abort(put);
                set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot index: %.48s",
                           ierr.message);
                arc_log(a, SCP_LOG_ERROR, "object %s from %s not indexed (the stored one is "
                                          "kept): %s",
                        in->sop_instance, in->source_ae, ierr.message);
                tr_error_set(err, rc, "%s", ierr.message);
                goto out;
            }
            rc = arc_put_commit_replace(put, rec->object_key, &cerr);
            if (rc == 0) {
                arc_log(a, SCP_LOG_INFO, "object %s replaced by a different one from %s",
                        in->sop_instance, in->source_ae);
            } else {
                arc_index_object(a, rec->object_key, in->site, NULL, NULL);
            }
            created = false;
            row_done = true;
        } else {
            arc_put_abort(put);
            created = false;
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
    /* Durable index row, unless an identical copy is indexed already. */
    if (!row_done && (created || !indexed(a, in->sop_instance))) {
        struct tr_error ierr = TR_ERROR_INIT;
        rc = arc_index_add(a->index, rec, &ierr);
        if (rc) {
            /* Not acknowledged, so not kept: the sender will try again. */
            if (created)
                arc_object_delete(a->store, rec->object_key, NULL);
            set_result(res, DIMSE_STATUS_OUT_OF_RESOURCES, "cannot index: %.48s", ierr.message);
            arc_log(a, SCP_LOG_ERROR, "object %s from %s not indexed: %s", in->sop_instance,
                    in->source_ae, ierr.message);
            tr_error_set(err, rc, "%s", ierr.message);
            goto out;
        }
    }
    res->status = DIMSE_STATUS_SUCCESS;
out:
    tr_free(rec);
    dcm_file_free(f);
    tr_free(in);
    return rc;
}

/* ---- import of files ---------------------------------------------------------------------- */

int arc_ingest_file(struct arc_archive *a, const char *path, const char *site,
                    const char *source_ae, struct arc_ingest_result *res, struct tr_error *err)
{
    struct arc_source src = {.site = site, .calling_ae = source_ae, .peer = "import",
                             .part10 = true};
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

