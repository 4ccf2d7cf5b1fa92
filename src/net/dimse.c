/*
 * dimse.c - DIMSE message exchange (PS3.7 6, 9.3, E): command sets in Implicit VR Little
 * Endian with group length, data sets streamed between the association and a sink.
 */
#include "common.h"
#include "dimse.h"

#include <stdio.h>

#define MAX_COMMAND_SET (1u << 20) /* a command set is a few hundred bytes; cap what we buffer */

/* ---- status codes ------------------------------------------------------------------------- */

bool dimse_status_is_pending(uint16_t status)
{
    return status == 0xFF00 || status == 0xFF01;
}

bool dimse_status_is_warning(uint16_t status)
{
    return status == 0x0001 || (status & 0xF000) == 0xB000 || status == 0x0107 ||
           status == 0x0116;
}

bool dimse_status_is_failure(uint16_t status)
{
    return status != DIMSE_STATUS_SUCCESS && !dimse_status_is_pending(status) &&
           !dimse_status_is_warning(status) && status != DIMSE_STATUS_CANCEL;
}

const char *dimse_status_text(uint16_t status)
{
    switch (status) {
    case 0x0000: return "Success";
    case 0xFF00: return "Pending";
    case 0xFF01: return "Pending (optional keys not supported)";
    case 0xFE00: return "Cancel";
    case 0xB000: return "Warning: sub-operations completed with failures, or data coerced";
    case 0xB006: return "Warning: elements discarded";
    case 0xB007: return "Warning: data set does not match SOP class";
    case 0x0107: return "Warning: attribute list error";
    case 0x0116: return "Warning: attribute value out of range";
    case 0x0112: return "Failure: no such SOP instance";
    case 0x0118: return "Failure: no such SOP class";
    case 0x0122: return "Failure: SOP class not supported";
    case 0x0124: return "Failure: not authorized";
    case 0x0210: return "Failure: duplicate invocation";
    case 0x0211: return "Failure: unrecognized operation";
    case 0x0212: return "Failure: mistyped argument";
    case 0xA700: return "Failure: refused, out of resources";
    case 0xA701: return "Failure: out of resources, unable to calculate number of matches";
    case 0xA702: return "Failure: out of resources, unable to perform sub-operations";
    case 0xA801: return "Failure: move destination unknown";
    case 0xA900: return "Failure: data set does not match SOP class";
    case 0xC000: return "Failure: cannot understand";
    case 0xC001: return "Failure: unable to process";
    default: break;
    }
    if ((status & 0xF000) == 0xA000)
        return "Failure: refused";
    if ((status & 0xF000) == 0xC000)
        return "Failure: error";
    if ((status & 0xF000) == 0xB000)
        return "Warning";
    return "Failure";
}

const char *dimse_command_name(uint16_t command_field)
{
    switch (command_field) {
    case DIMSE_C_STORE_RQ: return "C-STORE-RQ";
    case DIMSE_C_STORE_RSP: return "C-STORE-RSP";
    case DIMSE_C_GET_RQ: return "C-GET-RQ";
    case DIMSE_C_GET_RSP: return "C-GET-RSP";
    case DIMSE_C_FIND_RQ: return "C-FIND-RQ";
    case DIMSE_C_FIND_RSP: return "C-FIND-RSP";
    case DIMSE_C_MOVE_RQ: return "C-MOVE-RQ";
    case DIMSE_C_MOVE_RSP: return "C-MOVE-RSP";
    case DIMSE_C_ECHO_RQ: return "C-ECHO-RQ";
    case DIMSE_C_ECHO_RSP: return "C-ECHO-RSP";
    case DIMSE_C_CANCEL_RQ: return "C-CANCEL-RQ";
    case DIMSE_N_EVENT_REPORT_RQ: return "N-EVENT-REPORT-RQ";
    case DIMSE_N_EVENT_REPORT_RSP: return "N-EVENT-REPORT-RSP";
    case DIMSE_N_GET_RQ: return "N-GET-RQ";
    case DIMSE_N_SET_RQ: return "N-SET-RQ";
    case DIMSE_N_ACTION_RQ: return "N-ACTION-RQ";
    case DIMSE_N_ACTION_RSP: return "N-ACTION-RSP";
    case DIMSE_N_CREATE_RQ: return "N-CREATE-RQ";
    case DIMSE_N_DELETE_RQ: return "N-DELETE-RQ";
    default: return "unknown command";
    }
}

/* ---- building commands -------------------------------------------------------------------- */

struct dcm_dataset *dimse_command_new(uint16_t command_field, uint16_t message_id,
                                      const char *sop_class, const char *sop_instance,
                                      bool has_dataset)
{
    struct dcm_dataset *c = dcm_dataset_new();
    if (!c)
        return NULL;
    bool response = command_field & 0x8000;
    int rc = 0;
    if (sop_class && *sop_class)
        rc = dcm_dataset_set_bytes(c, 0x00000002, DCM_VR_UI, sop_class, strlen(sop_class));
    if (rc == 0)
        rc = dcm_dataset_set_int(c, 0x00000100, DCM_VR_US, command_field);
    if (rc == 0)
        rc = dcm_dataset_set_int(c, response ? 0x00000120 : 0x00000110, DCM_VR_US, message_id);
    if (rc == 0)
        rc = dcm_dataset_set_int(c, 0x00000800, DCM_VR_US,
                                 has_dataset ? DIMSE_HAS_DATASET : DIMSE_NO_DATASET);
    if (rc == 0 && sop_instance && *sop_instance)
        rc = dcm_dataset_set_bytes(c, 0x00001000, DCM_VR_UI, sop_instance, strlen(sop_instance));
    if (rc) {
        dcm_dataset_free(c);
        return NULL;
    }
    return c;
}

struct dcm_dataset *dimse_response_new(const struct dimse_message *rq, uint16_t status,
                                       bool has_dataset)
{
    struct dcm_dataset *c = dimse_command_new(rq->command_field | 0x8000, rq->message_id,
                                              rq->sop_class, rq->sop_instance, has_dataset);
    if (c && dcm_dataset_set_int(c, 0x00000900, DCM_VR_US, status) < 0) {
        dcm_dataset_free(c);
        return NULL;
    }
    return c;
}

int dimse_set_counts(struct dcm_dataset *command, uint16_t remaining, uint16_t completed,
                     uint16_t failed, uint16_t warning)
{
    int rc = dcm_dataset_set_int(command, 0x00001020, DCM_VR_US, remaining);
    if (rc == 0)
        rc = dcm_dataset_set_int(command, 0x00001021, DCM_VR_US, completed);
    if (rc == 0)
        rc = dcm_dataset_set_int(command, 0x00001022, DCM_VR_US, failed);
    if (rc == 0)
        rc = dcm_dataset_set_int(command, 0x00001023, DCM_VR_US, warning);
    return rc;
}

/* ---- sending ------------------------------------------------------------------------------ */

int dimse_encode_command(const struct dcm_dataset *command, struct tr_buf *out,
                         struct tr_error *err)
{
    /* PS3.7 6.3.1: Implicit VR Little Endian, with Command Group Length first: 12 bytes
     * reserved for it, the rest written after them, then the length filled in. */
    struct tr_sink s = tr_sink_buf(out);
    struct dcm_dataset *copy = NULL;
    if (dcm_dataset_get(command, 0x00000000)) { /* the caller's group length: ours replaces it */
        copy = dcm_dataset_copy(command, err);
        if (!copy)
            return err ? err->code : TR_ENOMEM;
        dcm_dataset_remove(copy, 0x00000000);
        command = copy;
    }
    size_t start = out->len;
    uint8_t gl[12] = {0};
    int rc = tr_buf_add(out, gl, sizeof(gl));
    if (rc == 0)
        rc = dcm_dataset_write(command, DCM_UID_ImplicitVRLittleEndian, NULL, &s, err);
    else
        rc = tr_error_set(err, rc, "cannot encode a command set: %s", tr_strerror(rc));
    dcm_dataset_free(copy);
    if (rc) {
        tr_buf_truncate(out, start);
        return rc;
    }
    uint8_t *p = (uint8_t *)out->data + start;
    tr_put_le16(p, 0x0000);
    tr_put_le16(p + 2, 0x0000);
    tr_put_le32(p + 4, 4);
    tr_put_le32(p + 8, (uint32_t)(out->len - start - sizeof(gl)));
    return 0;
}

int dimse_send_command(struct dul_assoc *a, uint8_t pc, const struct dcm_dataset *command,
                       struct tr_error *err)
{
    struct tr_buf body;
    tr_buf_init(&body, MAX_COMMAND_SET);
    int rc = dimse_encode_command(command, &body, err);
    if (rc == 0)
        rc = dul_send(a, pc, true, body.data, body.len, true, err);
    tr_buf_release(&body);
    return rc;
}

int dimse_send_encoded(struct dul_assoc *a, uint8_t pc, const void *command, size_t len,
                       const struct dcm_dataset *dataset, struct tr_error *err)
{
    dul_batch_begin(a);
    int rc = dul_send(a, pc, true, command, len, true, err);
    if (rc == 0 && dataset)
        rc = dimse_send_dataset(a, pc, dataset, err);
    int erc = dul_batch_end(a, rc ? NULL : err);
    return rc ? rc : erc;
}

int dimse_send_message(struct dul_assoc *a, uint8_t pc, const struct dcm_dataset *command,
                       const struct dcm_dataset *dataset, struct tr_error *err)
{
    struct tr_buf body;
    tr_buf_init(&body, MAX_COMMAND_SET);
    int rc = dimse_encode_command(command, &body, err);
    if (rc == 0)
        rc = dimse_send_encoded(a, pc, body.data, body.len, dataset, err);
    tr_buf_release(&body);
    return rc;
}

struct send_ctx {
    struct dul_assoc *a;
    uint8_t pc;
    struct tr_error *err;
};

static int send_sink_write(void *ctx, const void *data, size_t len)
{
    struct send_ctx *sc = ctx;
    return dul_send(sc->a, sc->pc, false, data, len, false, sc->err);
}

int dimse_send_dataset(struct dul_assoc *a, uint8_t pc, const struct dcm_dataset *ds,
                       struct tr_error *err)
{
    const struct dul_context *c = dul_context_by_id(a, pc);
    if (!c || !c->transfer_syntax)
        return tr_error_set(err, TR_EINVAL, "presentation context %u is not accepted", pc);
    struct send_ctx sc = {a, pc, err};
    struct tr_sink sink = {send_sink_write, &sc};
    int rc = dcm_dataset_write(ds, c->transfer_syntax, NULL, &sink, err);
    if (rc == 0)
        rc = dul_send(a, pc, false, NULL, 0, true, err);
    return rc;
}

int dimse_send_bytes(struct dul_assoc *a, uint8_t pc, const void *data, size_t len, bool last,
                     struct tr_error *err)
{
    return dul_send(a, pc, false, data, len, last, err);
}

/* ---- receiving ---------------------------------------------------------------------------- */

void dimse_message_release(struct dimse_message *m)
{
    dcm_dataset_free(m->command);
    m->command = NULL;
}

static void get_uid(const struct dcm_dataset *c, uint32_t tag, char *out)
{
    out[0] = '\0';
    dcm_dataset_get_uid(c, tag, out, DCM_UID_MAX + 1);
}

static void get_text(const struct dcm_dataset *c, uint32_t tag, char *out, size_t size)
{
    out[0] = '\0';
    if (dcm_dataset_get_string(c, tag, 0, out, size) < 0)
        out[0] = '\0';
}

/* Pull the fields of m->command into *m. */
static int parse_command(struct dimse_message *m, struct tr_error *err)
{
    const struct dcm_dataset *c = m->command;
    int64_t v;
    if (dcm_dataset_get_int(c, 0x00000100, 0, &v) < 0)
        return tr_error_set(err, TR_EPROTO, "a command set without Command Field (0000,0100)");
    m->command_field = (uint16_t)v;
    bool response = m->command_field & 0x8000;
    if (dcm_dataset_get_int(c, response ? 0x00000120 : 0x00000110, 0, &v) == 0)
        m->message_id = (uint16_t)v;
    else if (m->command_field != DIMSE_C_CANCEL_RQ)
        return tr_error_set(err, TR_EPROTO, "a %s without %s",
                            dimse_command_name(m->command_field),
                            response ? "Message ID Being Responded To" : "Message ID");
    if (m->command_field == DIMSE_C_CANCEL_RQ && dcm_dataset_get_int(c, 0x00000120, 0, &v) == 0)
        m->message_id = (uint16_t)v;
    m->has_dataset = !(dcm_dataset_get_int(c, 0x00000800, 0, &v) == 0 && v == DIMSE_NO_DATASET);
    if (dcm_dataset_get_int(c, 0x00000900, 0, &v) == 0)
        m->status = (uint16_t)v;
    else if (response) /* a response without a readable Status is no success */
        return tr_error_set(err, TR_EPROTO, "a %s without a readable Status (0000,0900)",
                            dimse_command_name(m->command_field));
    m->priority = dcm_dataset_get_int(c, 0x00000700, 0, &v) == 0 ? (uint16_t)v : 0;
    get_uid(c, 0x00000002, m->sop_class);
    if (!m->sop_class[0])
        get_uid(c, 0x00000003, m->sop_class);
    get_uid(c, 0x00001000, m->sop_instance);
    if (!m->sop_instance[0])
        get_uid(c, 0x00001001, m->sop_instance);
    get_text(c, 0x00000600, m->move_destination, sizeof(m->move_destination));
    get_text(c, 0x00001030, m->move_originator_ae, sizeof(m->move_originator_ae));
    m->move_originator_id = dcm_dataset_get_int(c, 0x00001031, 0, &v) == 0 ? (uint16_t)v : 0;
    m->has_counts = dcm_dataset_get(c, 0x00001021) != NULL;
    m->remaining = dcm_dataset_get_int(c, 0x00001020, 0, &v) == 0 ? (uint16_t)v : 0;
    m->completed = dcm_dataset_get_int(c, 0x00001021, 0, &v) == 0 ? (uint16_t)v : 0;
    m->failed = dcm_dataset_get_int(c, 0x00001022, 0, &v) == 0 ? (uint16_t)v : 0;
    m->warning = dcm_dataset_get_int(c, 0x00001023, 0, &v) == 0 ? (uint16_t)v : 0;
    get_text(c, 0x00000902, m->error_comment, sizeof(m->error_comment));
    return 0;
}

int dimse_parse_command_set(const void *data, size_t len, struct dimse_message *m,
                            struct tr_error *err)
{
    uint8_t pc = m->pc;
    memset(m, 0, sizeof(*m));
    m->pc = pc;
    struct tr_error perr = TR_ERROR_INIT;
    int rc = dcm_dataset_read(data ? data : "", len, DCM_UID_ImplicitVRLittleEndian, NULL, 0,
                              &m->command, &perr);
    if (rc == 0) {
        /* The data set references `data`: keep the bytes alive with the command. */
        struct dcm_dataset *copy = dcm_dataset_copy(m->command, &perr);
        dcm_dataset_free(m->command);
        m->command = copy;
        if (!copy)
            rc = perr.code;
    }
    if (rc) {
        m->command = NULL;
        return tr_error_set(err, TR_EPROTO, "a command set that cannot be read: %s",
                            perr.message);
    }
    rc = parse_command(m, err);
    if (rc)
        dimse_message_release(m);
    return rc;
}

int dimse_receive_command(struct dul_assoc *a, int timeout_ms, struct dimse_message *m,
                          struct tr_error *err)
{
    memset(m, 0, sizeof(*m));
    struct tr_buf body;
    tr_buf_init(&body, MAX_COMMAND_SET);
    int rc;
    bool first = true;
    for (;;) {
        struct pdu_pdv pdv;
        rc = dul_receive(a, first ? timeout_ms : -1, &pdv, err);
        if (rc <= 0)
            goto out;
        if (!pdv.command) {
            rc = tr_error_set(err, TR_EPROTO,
                              "%s sent data set fragments where a command was expected",
                              dul_peer_ae(a));
            dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_UNEXPECTED_PDU);
            goto out;
        }
        if (!first && pdv.context_id != m->pc) {
            rc = tr_error_set(err, TR_EPROTO, "command fragments on two presentation contexts");
            dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
            goto out;
        }
        m->pc = pdv.context_id;
        first = false;
        if (tr_buf_add(&body, pdv.data, pdv.length) < 0) {
            rc = tr_error_set(err, TR_ELIMIT, "a command set larger than %u bytes",
                              MAX_COMMAND_SET);
            dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER);
            goto out;
        }
        if (pdv.last)
            break;
    }
    struct tr_error perr = TR_ERROR_INIT;
    rc = dimse_parse_command_set(body.data, body.len, m, &perr);
    if (rc) {
        tr_error_set(err, rc, "%s sent %s", dul_peer_ae(a), perr.message);
        goto out;
    }
    rc = 1;
out:
    tr_buf_release(&body);
    if (rc <= 0 && m->command)
        dimse_message_release(m);
    return rc;
}

int dimse_receive_dataset_to_sink(struct dul_assoc *a, const struct dimse_message *m,
                                  const struct tr_sink *sink, uint64_t max, uint64_t *length,
                                  struct tr_error *err)
{
    uint64_t total = 0;
    int status = 0;
    if (length)
        *length = 0;
    if (!m->has_dataset)
        return 0;
    for (;;) {
        struct pdu_pdv pdv;
        int rc = dul_receive(a, -1, &pdv, err);
        if (rc == 0)
            return tr_error_set(err, TR_EPROTO, "%s asked to release in the middle of a data set",
                                dul_peer_ae(a));
        if (rc < 0)
            return rc;
        if (pdv.command || pdv.context_id != m->pc) {
            dul_abort(a, PDU_ABORT_PROVIDER, PDU_ABORT_UNEXPECTED_PDU);
            return tr_error_set(err, TR_EPROTO,
                                "%s interrupted a data set with a %s on context %u",
                                dul_peer_ae(a), pdv.command ? "command" : "data set fragment",
                                pdv.context_id);
        }
        total += pdv.length;
        if (status == 0 && total > max)
            status = tr_error_set(err, TR_ELIMIT, "the data set is larger than %llu bytes",
                                  (unsigned long long)max);
        if (status == 0) {
            int wrc = tr_sink_write(sink, pdv.data, pdv.length);
            if (wrc)
                status = tr_error_set(err, wrc, "cannot store the data set: %s",
                                      tr_strerror(wrc));
        }
        /* After a failure keep reading to the end of the data set, so the association stays
         * in step and the sender gets a status. */
        if (pdv.last)
            break;
    }
    if (length)
        *length = total;
    return status;
}

int dimse_receive_dataset(struct dul_assoc *a, const struct dimse_message *m, size_t max,
                          struct dcm_dataset **out, struct tr_error *err)
{
    *out = NULL;
    const struct dul_context *c = dul_context_by_id(a, m->pc);
    if (!c || !c->transfer_syntax)
        return tr_error_set(err, TR_EPROTO, "no accepted context %u", m->pc);
    struct tr_buf b;
    tr_buf_init(&b, max);
    struct tr_sink s = tr_sink_buf(&b);
    uint64_t length;
    int rc = dimse_receive_dataset_to_sink(a, m, &s, max, &length, err);
    if (rc == 0) {
        struct dcm_dataset *parsed;
        struct tr_error perr = TR_ERROR_INIT;
        const struct dcm_transfer_syntax *ts = dcm_ts_lookup(c->transfer_syntax);
        if (ts && (ts->flags & DCM_TS_DEFLATED)) {
            rc = tr_error_set(err, TR_EUNSUPPORTED,
                              "deflated data sets in queries are not supported");
        } else {
            rc = dcm_dataset_read(b.data ? b.data : "", b.len, c->transfer_syntax, NULL, 0,
                                  &parsed, &perr);
            if (rc == 0) {
                *out = dcm_dataset_copy(parsed, &perr); /* detach from the buffer */
                dcm_dataset_free(parsed);
                if (!*out)
                    rc = perr.code;
            }
            if (rc)
                tr_error_set(err, rc, "the data set cannot be read: %s", perr.message);
        }
    }
    tr_buf_release(&b);
    return rc;
}

static int discard(void *ctx, const void *data, size_t len)
{
    (void)ctx;
    (void)data;
    (void)len;
    return 0;
}

int dimse_skip_dataset(struct dul_assoc *a, const struct dimse_message *m, struct tr_error *err)
{
    struct tr_sink s = {discard, NULL};
    return dimse_receive_dataset_to_sink(a, m, &s, UINT64_MAX, NULL, err);
}
