/*
 * fuzz_dimse.c - libFuzzer target for the DIMSE command decoder (src/net/dimse.c, PS3.7 6.3.1
 * and annex E): the bytes of a command set, read as Implicit VR Little Endian and turned into
 * the fields of a message by dimse_parse_command_set, which is what dimse_receive_command does
 * with the command fragments it gathers from the peer.
 *
 * The seeds (fuzz/corpus/dimse, written by fuzz/make_dimse_corpus.py) are command sets
 * captured from DCMTK's echoscu, storescu, findscu, movescu and getscu and from storescp's
 * responses, and command sets of the other DIMSE messages (N-services, C-CANCEL, responses
 * with counts and error comments) built from PS3.7 annex E.
 *
 * Invariants checked with abort():
 *  - a failed parse returns TR_EPROTO, sets an error with that code and a message, and leaves
 *    no command set owned;
 *  - a successful parse owns a command set and fills NUL-terminated strings within their
 *    arrays; has_dataset is false exactly when Command Data Set Type is 0101H;
 *  - what parsed, written again (Implicit VR LE, as dimse_send_command does) and parsed again,
 *    gives the same fields - when every value length is even (PS3.5 7.1.1): the writer pads an
 *    odd-length value, which may turn a value the reader could not use (a 1-byte US) into one
 *    it can;
 *  - a response built from a parsed request (dimse_response_new) encodes and parses back to
 *    the response command field, the message ID and the status;
 *  - dimse_command_name and dimse_status_text always give a string.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DTELERAD_FUZZ=ON && cmake --build build-fuzz
 * Run:   fuzz/run.sh build-fuzz 300   (or see the top of fuzz/run.sh for longer campaigns)
 */
#include "common.h"
#include "dcm.h"
#include "dimse.h"

#include <stdio.h>
#include <stdlib.h>

#define OUT_CAP ((size_t)4 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void invariant_failed(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "fuzz_dimse: invariant failed: %s: %s\n", what,
            err && err->code ? err->message : "(no message)");
    abort();
}

static void check_string(const char *s, size_t size, const char *what)
{
    if (strnlen(s, size) >= size)
        invariant_failed(what, NULL);
}

static void check_fields(const struct dimse_message *m)
{
    if (!m->command)
        invariant_failed("a parsed message without its command set", NULL);
    check_string(m->sop_class, sizeof(m->sop_class), "SOP class UID not terminated");
    check_string(m->sop_instance, sizeof(m->sop_instance), "SOP instance UID not terminated");
    check_string(m->move_destination, sizeof(m->move_destination), "move destination");
    check_string(m->move_originator_ae, sizeof(m->move_originator_ae), "move originator");
    check_string(m->error_comment, sizeof(m->error_comment), "error comment");
    int64_t v;
    bool no_dataset = dcm_dataset_get_int(m->command, 0x00000800, 0, &v) == 0 &&
                      v == DIMSE_NO_DATASET;
    if (m->has_dataset == no_dataset)
        invariant_failed("has_dataset disagrees with Command Data Set Type", NULL);
    if (!dimse_command_name(m->command_field) || !dimse_status_text(m->status))
        invariant_failed("a name or status text is NULL", NULL);
}

/* Every element of the command set has an even value length (as PS3.5 7.1.1 requires). */
static bool even_lengths(const struct dcm_dataset *command)
{
    for (size_t i = 0; i < dcm_dataset_count(command); i++) {
        const struct dcm_element *e = dcm_dataset_at(command, i);
        if (e->length != DCM_UNDEFINED_LENGTH && (e->length & 1))
            return false;
    }
    return true;
}

static bool same_fields(const struct dimse_message *a, const struct dimse_message *b)
{
    return a->command_field == b->command_field && a->message_id == b->message_id &&
           a->status == b->status && a->priority == b->priority &&
           a->has_dataset == b->has_dataset && strcmp(a->sop_class, b->sop_class) == 0 &&
           strcmp(a->sop_instance, b->sop_instance) == 0 &&
           strcmp(a->move_destination, b->move_destination) == 0 &&
           strcmp(a->move_originator_ae, b->move_originator_ae) == 0 &&
           a->move_originator_id == b->move_originator_id && a->has_counts == b->has_counts &&
           a->remaining == b->remaining && a->completed == b->completed &&
           a->failed == b->failed && a->warning == b->warning &&
           strcmp(a->error_comment, b->error_comment) == 0;
}

/* Write a command set as dimse_send_command does (group length first) into out. Returns 0, or
 * a negative code when the data set cannot be written (some values that read fine cannot be
 * written, e.g. an element whose length the writer checks more strictly). */
static int encode(const struct dcm_dataset *command, struct tr_buf *out)
{
    struct tr_buf body;
    tr_buf_init(&body, OUT_CAP);
    struct tr_sink s = tr_sink_buf(&body);
    struct dcm_dataset *copy = dcm_dataset_copy(command, NULL);
    if (!copy) {
        tr_buf_release(&body);
        return TR_ENOMEM;
    }
    dcm_dataset_remove(copy, 0x00000000);
    int rc = dcm_dataset_write(copy, DCM_UID_ImplicitVRLittleEndian, NULL, &s, NULL);
    dcm_dataset_free(copy);
    if (rc == 0) {
        uint8_t gl[12];
        tr_put_le16(gl, 0);
        tr_put_le16(gl + 2, 0);
        tr_put_le32(gl + 4, 4);
        tr_put_le32(gl + 8, (uint32_t)body.len);
        tr_buf_init(out, OUT_CAP);
        rc = tr_buf_add(out, gl, sizeof(gl));
        if (rc == 0)
            rc = tr_buf_add(out, body.data, body.len);
        if (rc)
            tr_buf_release(out);
    }
    tr_buf_release(&body);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dimse_message m;
    struct tr_error err = TR_ERROR_INIT;
    m.pc = 7;
    int rc = dimse_parse_command_set(data, size, &m, &err);
    if (m.pc != 7)
        invariant_failed("the presentation context was changed", NULL);
    if (rc != 0) {
        if (rc != TR_EPROTO || err.code != rc || !err.message[0])
            invariant_failed("a failed parse without TR_EPROTO and a message", &err);
        if (m.command)
            invariant_failed("a failed parse left a command set", NULL);
        return 0;
    }
    check_fields(&m);

    /* Round trip: write what was read, read it again, same fields. */
    struct tr_buf again;
    if (even_lengths(m.command) && encode(m.command, &again) == 0) {
        struct dimse_message m2;
        struct tr_error err2 = TR_ERROR_INIT;
        m2.pc = m.pc;
        if (dimse_parse_command_set(again.data, again.len, &m2, &err2) != 0)
            invariant_failed("a command set written again does not parse", &err2);
        check_fields(&m2);
        if (!same_fields(&m, &m2))
            invariant_failed("a command set written again parses to other fields", NULL);
        dimse_message_release(&m2);
        tr_buf_release(&again);
    }

    /* A response to it, as the SCP builds them. */
    uint16_t status = size ? (uint16_t)(data[0] << 8 | data[size - 1]) : 0;
    struct dcm_dataset *rsp = dimse_response_new(&m, status, size & 1);
    if (rsp) {
        struct tr_buf rb;
        if (encode(rsp, &rb) == 0) {
            struct dimse_message r;
            struct tr_error rerr = TR_ERROR_INIT;
            r.pc = 1;
            if (dimse_parse_command_set(rb.data, rb.len, &r, &rerr) != 0)
                invariant_failed("a response we built does not parse", &rerr);
            check_fields(&r);
            if (r.command_field != (m.command_field | 0x8000) ||
                r.message_id != m.message_id || r.status != status ||
                r.has_dataset != (bool)(size & 1))
                invariant_failed("a response we built parses to other fields", NULL);
            dimse_message_release(&r);
            tr_buf_release(&rb);
        }
        dcm_dataset_free(rsp);
    }
    dimse_message_release(&m);
    return 0;
}
