/*
 * scu.c - DIMSE services as SCU: C-ECHO (PS3.4 A), C-STORE (B), C-FIND, C-MOVE and C-GET
 * (C.4), with C-CANCEL (PS3.7 9.3.2.3).
 */
#include "common.h"
#include "scu.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#define SEND_CHUNK (1u << 20)   /* bytes read from a file per send */
#define MAX_IDENTIFIER (16u << 20)

static const char *const uncompressed[] = {
    DCM_UID_ExplicitVRLittleEndian,
    DCM_UID_ImplicitVRLittleEndian,
    NULL,
};

/* ---- building requests -------------------------------------------------------------------- */

int scu_add_context(struct pdu_associate *rq, const char *abstract_syntax, const char *const *ts)
{
    if (rq->context_count >= PDU_MAX_CONTEXTS)
        return TR_ELIMIT;
    struct pdu_presentation_context *c = &rq->context[rq->context_count];
    memset(c, 0, sizeof(*c));
    c->id = (uint8_t)(2 * rq->context_count + 1);
    c->abstract_syntax = abstract_syntax;
    for (; *ts && c->ts_count < PDU_MAX_TRANSFER_SYNTAXES; ts++)
        c->transfer_syntax[c->ts_count++] = *ts;
    rq->context_count++;
    return c->id;
}

int scu_add_role(struct pdu_associate *rq, const char *sop_class, bool scu, bool scp)
{
    if (rq->role_count >= PDU_MAX_ROLES)
        return TR_ELIMIT;
    rq->role[rq->role_count++] = (struct pdu_role){sop_class, scu, scp};
    return 0;
}

/* The storage SOP classes a radiology archive meets most, proposed first. */
static const char *const common_storage[] = {
    "1.2.840.10008.5.1.4.1.1.2",      /* CT */
    "1.2.840.10008.5.1.4.1.1.2.1",    /* Enhanced CT */
    "1.2.840.10008.5.1.4.1.1.4",      /* MR */
    "1.2.840.10008.5.1.4.1.1.4.1",    /* Enhanced MR */
    "1.2.840.10008.5.1.4.1.1.1",      /* CR */
    "1.2.840.10008.5.1.4.1.1.1.1",    /* DX for presentation */
    "1.2.840.10008.5.1.4.1.1.1.1.1",  /* DX for processing */
    "1.2.840.10008.5.1.4.1.1.1.2",    /* MG for presentation */
    "1.2.840.10008.5.1.4.1.1.1.2.1",  /* MG for processing */
    "1.2.840.10008.5.1.4.1.1.13.1.3", /* Breast tomosynthesis */
    "1.2.840.10008.5.1.4.1.1.6.1",    /* US */
    "1.2.840.10008.5.1.4.1.1.3.1",    /* US multi-frame */
    "1.2.840.10008.5.1.4.1.1.7",      /* Secondary capture */
    "1.2.840.10008.5.1.4.1.1.7.2",    /* Multi-frame grayscale byte SC */
    "1.2.840.10008.5.1.4.1.1.7.4",    /* Multi-frame true color SC */
    "1.2.840.10008.5.1.4.1.1.128",    /* PET */
    "1.2.840.10008.5.1.4.1.1.20",     /* NM */
    "1.2.840.10008.5.1.4.1.1.12.1",   /* XA */
    "1.2.840.10008.5.1.4.1.1.12.2",   /* RF */
    "1.2.840.10008.5.1.4.1.1.88.11",  /* Basic text SR */
    "1.2.840.10008.5.1.4.1.1.88.22",  /* Enhanced SR */
    "1.2.840.10008.5.1.4.1.1.88.33",  /* Comprehensive SR */
    "1.2.840.10008.5.1.4.1.1.88.67",  /* X-ray radiation dose SR */
    "1.2.840.10008.5.1.4.1.1.104.1",  /* Encapsulated PDF */
    "1.2.840.10008.5.1.4.1.1.66.4",   /* Segmentation */
    "1.2.840.10008.5.1.4.1.1.11.1",   /* Grayscale softcopy presentation state */
    "1.2.840.10008.5.1.4.1.1.481.1",  /* RT image */
    "1.2.840.10008.5.1.4.1.1.481.2",  /* RT dose */
    "1.2.840.10008.5.1.4.1.1.481.3",  /* RT structure set */
    "1.2.840.10008.5.1.4.1.1.481.5",  /* RT plan */
    "1.2.840.10008.5.1.4.1.1.77.1.4", /* VL photographic */
    "1.2.840.10008.5.1.4.1.1.9.1.1",  /* 12-lead ECG */
};

static bool already_proposed(const struct pdu_associate *rq, const char *as)
{
    for (unsigned i = 0; i < rq->context_count; i++) {
        if (strcmp(rq->context[i].abstract_syntax, as) == 0)
            return true;
    }
    return false;
}

int scu_add_storage_contexts(struct pdu_associate *rq, const char *const *extra_ts,
                             bool scp_role, unsigned max_contexts)
{
    const char *ts[PDU_MAX_TRANSFER_SYNTAXES];
    unsigned n = 0;
    for (const char *const *t = uncompressed; *t; t++)
        ts[n++] = *t;
    for (const char *const *t = extra_ts; t && *t && n < PDU_MAX_TRANSFER_SYNTAXES - 1; t++)
        ts[n++] = *t;
    ts[n] = NULL;
    unsigned added = 0;
    for (size_t i = 0; i < TR_ARRAY_SIZE(common_storage) && added < max_contexts; i++) {
        if (already_proposed(rq, common_storage[i]))
            continue;
        if (scu_add_context(rq, common_storage[i], ts) < 0)
            return added;
        if (scp_role)
            scu_add_role(rq, common_storage[i], false, true);
        added++;
    }
    const struct dcm_uid_entry *e;
    for (unsigned i = 0; (e = dcm_uid_at(i)) && added < max_contexts; i++) {
        if (!dcm_uid_is_storage(e) || already_proposed(rq, e->uid))
            continue;
        if (scu_add_context(rq, e->uid, ts) < 0)
            break;
        if (scp_role)
            scu_add_role(rq, e->uid, false, true);
        added++;
    }
    return (int)added;
}

/* ---- common ------------------------------------------------------------------------------- */

static int send_request(struct dul_assoc *a, uint8_t pc, struct dcm_dataset *cmd,
                        const struct dcm_dataset *data, struct tr_error *err)
{
    if (!cmd)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = dimse_send_message(a, pc, cmd, data, err);
    dcm_dataset_free(cmd);
    return rc;
}

/* Receive a response to message `id` of kind `rsp`, skipping nothing: anything else is an
 * error (except C-STORE-RQ during a C-GET, handled by the caller). */
static int receive_response(struct dul_assoc *a, uint16_t rsp, uint16_t id,
                            struct dimse_message *m, struct tr_error *err)
{
    int rc = dimse_receive_command(a, -1, m, err);
    if (rc == 0)
        return tr_error_set(err, TR_EPROTO, "%s asked to release before answering",
                            dul_peer_ae(a));
    if (rc < 0)
        return rc;
    if (m->command_field != rsp || m->message_id != id) {
        rc = tr_error_set(err, TR_EPROTO, "%s answered with %s (message %u) where %s for message "
                                          "%u was expected",
                          dul_peer_ae(a), dimse_command_name(m->command_field), m->message_id,
                          dimse_command_name(rsp), id);
        dimse_message_release(m);
        return rc;
    }
    return 0;
}

static const struct dul_context *context_for(struct dul_assoc *a, const char *model,
                                             struct tr_error *err)
{
    const struct dul_context *c = dul_find_context(a, model, NULL);
    if (!c) {
        const struct dcm_uid_entry *u = dcm_uid_lookup(model);
        tr_error_set(err, TR_EUNSUPPORTED, "%s did not accept %s", dul_peer_ae(a),
                     u ? u->name : model);
    }
    return c;
}

/* ---- C-ECHO ------------------------------------------------------------------------------- */

int scu_echo(struct dul_assoc *a, uint16_t message_id, uint16_t *status, struct tr_error *err)
{
    const struct dul_context *c = context_for(a, SCU_VERIFICATION, err);
    if (!c)
        return TR_EUNSUPPORTED;
    int rc = send_request(a, c->id,
                          dimse_command_new(DIMSE_C_ECHO_RQ, message_id, SCU_VERIFICATION, NULL,
                                            false),
                          NULL, err);
    if (rc)
        return rc;
    struct dimse_message m;
    if ((rc = receive_response(a, DIMSE_C_ECHO_RSP, message_id, &m, err)))
        return rc;
    *status = m.status;
    if (m.has_dataset)
        rc = dimse_skip_dataset(a, &m, err);
    dimse_message_release(&m);
    return rc;
}

/* ---- C-STORE ------------------------------------------------------------------------------ */

int scu_file_probe(const char *path, struct scu_file *f, struct tr_error *err)
{
    memset(f, 0, sizeof(*f));
    if (strlen(path) >= sizeof(f->path))
        return tr_error_set(err, TR_ELIMIT, "path too long");
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    struct dcm_file *file;
    int rc = dcm_file_read(path, &opt, &file, err);
    if (rc)
        return rc;
    memcpy(f->path, path, strlen(path) + 1);
    if (dcm_dataset_get_uid(file->dataset, DCM_TAG_SOPClassUID, f->sop_class,
                            sizeof(f->sop_class)) < 0)
        dcm_dataset_get_uid(file->meta, DCM_TAG_MediaStorageSOPClassUID, f->sop_class,
                            sizeof(f->sop_class));
    if (dcm_dataset_get_uid(file->dataset, DCM_TAG_SOPInstanceUID, f->sop_instance,
                            sizeof(f->sop_instance)) < 0)
        dcm_dataset_get_uid(file->meta, DCM_TAG_MediaStorageSOPInstanceUID, f->sop_instance,
                            sizeof(f->sop_instance));
    snprintf(f->transfer_syntax, sizeof(f->transfer_syntax), "%s", file->ts->uid);
    if (!file->ts_detected && file->ts_uid[0])
        snprintf(f->transfer_syntax, sizeof(f->transfer_syntax), "%s", file->ts_uid);
    f->dataset_offset = file->dataset_offset;
    f->size = file->size;
    dcm_file_free(file);
    if (!f->sop_class[0] || !f->sop_instance[0])
        return tr_error_set(err, TR_EFORMAT, "no SOP Class UID or SOP Instance UID");
    return 0;
}

/* Stream the data set bytes of a file (from dataset_offset to the end) on context pc. */
static int send_file_bytes(struct dul_assoc *a, uint8_t pc, const struct scu_file *f,
                           struct tr_error *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tr_error_set(err, TR_EIO, "cannot open %s: %s", f->path, strerror(errno));
    uint8_t *buf = tr_malloc(SEND_CHUNK);
    if (!buf) {
        close(fd);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    uint64_t off = f->dataset_offset;
    int rc = 0;
    for (;;) {
        ssize_t n = pread(fd, buf, SEND_CHUNK, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = tr_error_set(err, TR_EIO, "cannot read %s: %s", f->path, strerror(errno));
            break;
        }
        off += (uint64_t)n;
        bool last = n == 0 || off >= f->size;
        rc = dimse_send_bytes(a, pc, buf, (size_t)n, last, err);
        if (rc || last)
            break;
    }
    tr_free(buf);
    close(fd);
    return rc;
}

static bool is_uncompressed(const char *ts_uid)
{
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
    return ts && !(ts->flags & (DCM_TS_ENCAPSULATED | DCM_TS_REFERENCED));
}

int scu_store_file(struct dul_assoc *a, const struct scu_file *f, uint16_t message_id,
                   const char *move_originator_ae, uint16_t move_originator_id, uint16_t *status,
                   char *comment, size_t comment_size, struct tr_error *err)
{
    if (comment_size)
        comment[0] = '\0';
    /* A context with the file's own transfer syntax sends the bytes as they are; otherwise an
     * uncompressed file is converted to an accepted uncompressed syntax. */
    const struct dul_context *c = dul_find_context(a, f->sop_class, f->transfer_syntax);
    bool convert = false;
    if (!c && is_uncompressed(f->transfer_syntax)) {
        for (unsigned i = 0; i < dul_context_count(a) && !c; i++) {
            const struct dul_context *k = dul_context_at(a, i);
            if (k->result == PDU_PC_ACCEPTANCE && strcmp(k->abstract_syntax, f->sop_class) == 0 &&
                is_uncompressed(k->transfer_syntax))
                c = k;
        }
        convert = c != NULL;
    }
    if (!c) {
        const struct dcm_uid_entry *u = dcm_uid_lookup(f->sop_class);
        const struct dcm_transfer_syntax *t = dcm_ts_lookup(f->transfer_syntax);
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "%s accepted no presentation context for %s in %s",
                            dul_peer_ae(a), u ? u->name : f->sop_class,
                            t ? t->name : f->transfer_syntax);
    }
    struct dcm_dataset *cmd =
        dimse_command_new(DIMSE_C_STORE_RQ, message_id, f->sop_class, f->sop_instance, true);
    if (!cmd)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, DIMSE_PRIORITY_MEDIUM);
    if (rc == 0 && move_originator_ae && *move_originator_ae) {
        rc = dcm_dataset_set_bytes(cmd, 0x00001030, DCM_VR_AE, move_originator_ae,
                                   strlen(move_originator_ae));
        if (rc == 0)
            rc = dcm_dataset_set_int(cmd, 0x00001031, DCM_VR_US, move_originator_id);
    }
    if (rc) {
        dcm_dataset_free(cmd);
        return tr_error_set(err, rc, "cannot build the C-STORE request");
    }
    struct dcm_file *file = NULL;
    if (convert) {
        /* Read the whole file before sending anything, so that a bad file fails cleanly. */
        if ((rc = dcm_file_read(f->path, NULL, &file, err))) {
            dcm_dataset_free(cmd);
            return rc;
        }
    }
    rc = send_request(a, c->id, cmd, NULL, err);
    if (rc == 0)
        rc = convert ? dimse_send_dataset(a, c->id, file->dataset, err)
                     : send_file_bytes(a, c->id, f, err);
    dcm_file_free(file);
    if (rc)
        return rc;
    struct dimse_message m;
    if ((rc = receive_response(a, DIMSE_C_STORE_RSP, message_id, &m, err)))
        return rc;
    *status = m.status;
    if (comment_size)
        snprintf(comment, comment_size, "%s", m.error_comment);
    if (m.has_dataset)
        rc = dimse_skip_dataset(a, &m, err);
    dimse_message_release(&m);
    return rc;
}

/* ---- C-FIND ------------------------------------------------------------------------------- */

static int send_cancel(struct dul_assoc *a, uint8_t pc, uint16_t id, struct tr_error *err)
{
    struct dcm_dataset *cmd = dcm_dataset_new();
    if (!cmd)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = dcm_dataset_set_int(cmd, 0x00000100, DCM_VR_US, DIMSE_C_CANCEL_RQ);
    if (rc == 0)
        rc = dcm_dataset_set_int(cmd, 0x00000120, DCM_VR_US, id);
    if (rc == 0)
        rc = dcm_dataset_set_int(cmd, 0x00000800, DCM_VR_US, DIMSE_NO_DATASET);
    if (rc) {
        dcm_dataset_free(cmd);
        return tr_error_set(err, rc, "out of memory");
    }
    return send_request(a, pc, cmd, NULL, err);
}

int scu_find(struct dul_assoc *a, const char *model, const struct dcm_dataset *identifier,
             uint16_t priority, int (*on_match)(void *ctx, const struct dcm_dataset *match),
             void *ctx, uint16_t *status, struct tr_error *err)
{
    const struct dul_context *c = context_for(a, model, err);
    if (!c)
        return TR_EUNSUPPORTED;
    uint16_t id = 1;
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_FIND_RQ, id, model, NULL, true);
    if (cmd && dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, priority) < 0) {
        dcm_dataset_free(cmd);
        cmd = NULL;
    }
    int rc = send_request(a, c->id, cmd, identifier, err);
    bool cancelled = false;
    while (rc == 0) {
        struct dimse_message m;
        if ((rc = receive_response(a, DIMSE_C_FIND_RSP, id, &m, err)))
            break;
        if (dimse_status_is_pending(m.status)) {
            struct dcm_dataset *match = NULL;
            if (m.has_dataset)
                rc = dimse_receive_dataset(a, &m, MAX_IDENTIFIER, &match, err);
            if (rc == 0 && match && !cancelled && on_match(ctx, match) < 0) {
                cancelled = true;
                rc = send_cancel(a, c->id, id, err);
            }
            dcm_dataset_free(match);
            dimse_message_release(&m);
            continue;
        }
        *status = m.status;
        if (m.has_dataset)
            rc = dimse_skip_dataset(a, &m, err);
        dimse_message_release(&m);
        break;
    }
    return rc;
}

/* ---- C-MOVE ------------------------------------------------------------------------------- */

static void counts_of(const struct dimse_message *m, struct scu_progress *p)
{
    p->remaining = m->remaining;
    p->completed = m->completed;
    p->failed = m->failed;
    p->warning = m->warning;
}

int scu_move(struct dul_assoc *a, const char *model, const char *destination,
             const struct dcm_dataset *identifier,
             void (*on_progress)(void *ctx, const struct scu_progress *p), void *ctx,
             uint16_t *status, struct scu_progress *final, struct tr_error *err)
{
    const struct dul_context *c = context_for(a, model, err);
    if (!c)
        return TR_EUNSUPPORTED;
    uint16_t id = 1;
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_MOVE_RQ, id, model, NULL, true);
    if (cmd && (dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, DIMSE_PRIORITY_MEDIUM) < 0 ||
                dcm_dataset_set_bytes(cmd, 0x00000600, DCM_VR_AE, destination,
                                      strlen(destination)) < 0)) {
        dcm_dataset_free(cmd);
        cmd = NULL;
    }
    int rc = send_request(a, c->id, cmd, identifier, err);
    memset(final, 0, sizeof(*final));
    while (rc == 0) {
        struct dimse_message m;
        if ((rc = receive_response(a, DIMSE_C_MOVE_RSP, id, &m, err)))
            break;
        struct scu_progress p;
        counts_of(&m, &p);
        if (m.has_dataset)
            rc = dimse_skip_dataset(a, &m, err);
        bool pending = dimse_status_is_pending(m.status);
        if (pending && on_progress)
            on_progress(ctx, &p);
        if (!pending) {
            *status = m.status;
            *final = p;
        }
        dimse_message_release(&m);
        if (!pending)
            break;
    }
    return rc;
}

/* ---- C-GET -------------------------------------------------------------------------------- */

/* A C-STORE sub-operation of a C-GET: receive the data set into the handler, answer. */
static int get_store(struct dul_assoc *a, const struct dimse_message *m,
                     const struct scu_get_store *store, struct tr_error *err)
{
    const struct dul_context *c = dul_context_by_id(a, m->pc);
    struct tr_sink sink = {0};
    void *handle = NULL;
    uint16_t st = DIMSE_STATUS_SUCCESS;
    int rc = 0;
    if (store->begin(store->ctx, m->sop_class, m->sop_instance,
                     c ? c->transfer_syntax : "", &sink, &handle) < 0) {
        st = DIMSE_STATUS_OUT_OF_RESOURCES;
        rc = dimse_skip_dataset(a, m, err);
    } else {
        struct tr_error serr = TR_ERROR_INIT;
        int r = dimse_receive_dataset_to_sink(a, m, &sink, UINT64_MAX, NULL, &serr);
        if (r == TR_ECLOSED || r == TR_EPROTO || r == TR_ETIMEOUT) {
            store->end(store->ctx, handle, false);
            return tr_error_set(err, r, "%s", serr.message);
        }
        st = store->end(store->ctx, handle, r == 0);
        if (r && st == DIMSE_STATUS_SUCCESS)
            st = DIMSE_STATUS_OUT_OF_RESOURCES;
    }
    if (rc)
        return rc;
    return send_request(a, m->pc, dimse_response_new(m, st, false), NULL, err);
}

int scu_get(struct dul_assoc *a, const char *model, const struct dcm_dataset *identifier,
            const struct scu_get_store *store,
            void (*on_progress)(void *ctx, const struct scu_progress *p), void *ctx,
            uint16_t *status, struct scu_progress *final, struct tr_error *err)
{
    const struct dul_context *c = context_for(a, model, err);
    if (!c)
        return TR_EUNSUPPORTED;
    uint16_t id = 1;
    struct dcm_dataset *cmd = dimse_command_new(DIMSE_C_GET_RQ, id, model, NULL, true);
    if (cmd && dcm_dataset_set_int(cmd, 0x00000700, DCM_VR_US, DIMSE_PRIORITY_MEDIUM) < 0) {
        dcm_dataset_free(cmd);
        cmd = NULL;
    }
    int rc = send_request(a, c->id, cmd, identifier, err);
    memset(final, 0, sizeof(*final));
    while (rc == 0) {
        struct dimse_message m;
        rc = dimse_receive_command(a, -1, &m, err);
        if (rc == 0) {
            rc = tr_error_set(err, TR_EPROTO, "%s asked to release during the C-GET",
                              dul_peer_ae(a));
            break;
        }
        if (rc < 0)
            break;
        rc = 0;
        if (m.command_field == DIMSE_C_STORE_RQ) {
            rc = get_store(a, &m, store, err);
            dimse_message_release(&m);
            continue;
        }
        if (m.command_field != DIMSE_C_GET_RSP || m.message_id != id) {
            rc = tr_error_set(err, TR_EPROTO, "%s sent %s during a C-GET", dul_peer_ae(a),
                              dimse_command_name(m.command_field));
            dimse_message_release(&m);
            break;
        }
        struct scu_progress p;
        counts_of(&m, &p);
        if (m.has_dataset)
            rc = dimse_skip_dataset(a, &m, err);
        bool pending = dimse_status_is_pending(m.status);
        if (pending && on_progress)
            on_progress(ctx, &p);
        if (!pending) {
            *status = m.status;
            *final = p;
        }
        dimse_message_release(&m);
        if (!pending)
            break;
    }
    return rc;
}
