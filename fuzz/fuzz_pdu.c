/*
 * fuzz_pdu.c - libFuzzer target for the DICOM upper layer PDU decoders (src/net/pdu.c,
 * PS3.8 9.3 and PS3.7 D.3.3).
 *
 * Each input is a PDU body (what follows the 6-byte header), given to every decoder: as an
 * A-ASSOCIATE-RQ and as an A-ASSOCIATE-AC, as an A-ASSOCIATE-RJ and an A-ABORT, and as a
 * P-DATA-TF whose PDVs are iterated. The seeds (fuzz/corpus/pdu, written by
 * fuzz/make_pdu_corpus.py) are bodies of each type, several captured from DCMTK.
 *
 * Invariants checked with abort():
 *  - a failed decode sets an error with a message and the same code;
 *  - a decoded A-ASSOCIATE satisfies the documented limits (odd distinct context IDs, counts,
 *    UID lengths, an AC's rejected contexts without transfer syntax);
 *  - whatever the A-ASSOCIATE decoder accepts, the encoder encodes, and decoding that gives
 *    the same fields; encoding those again gives the same bytes. Two documented gaps are
 *    bridged first: an absent implementation class UID (tolerated by the decoder, required
 *    by the encoder) gets a placeholder, and so do an AC's empty AE titles (not tested when
 *    received). Re-encoding may legitimately exceed a 16-bit item length only when the input
 *    has a user information item close to 64 KB (the encoder always writes the maximum
 *    length sub-item and a secondary field length), so TR_ELIMIT is accepted for inputs
 *    of more than 65000 bytes;
 *  - each PDV lies within the body, the iteration always advances, and the header
 *    pdu_encode_pdata_header writes for it matches the item's bytes (but for the reserved
 *    bits of the message control header);
 *  - A-ASSOCIATE-RJ and A-ABORT values that the encoders accept decode back to themselves.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DTELERAD_FUZZ=ON && cmake --build build-fuzz
 * Run:   fuzz/run.sh build-fuzz 300   (or see the top of fuzz/run.sh for longer campaigns)
 */
#include "common.h"
#include "pdu.h"

#include <stdio.h>
#include <stdlib.h>

#define OUT_CAP ((size_t)16 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void invariant_failed(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "fuzz_pdu: invariant failed: %s: %s\n", what,
            err && err->code ? err->message : "(no message)");
    abort();
}

static void check_error(int rc, const struct tr_error *err)
{
    if (rc >= 0)
        return;
    if (err->code != rc || !err->message[0])
        invariant_failed("a failed decode set no matching error", err);
}

static bool same_bytes(const void *x, size_t xn, const void *y, size_t yn)
{
    return xn == yn && (xn == 0 || memcmp(x, y, xn) == 0);
}

static bool uid_sane(const char *s)
{
    if (!s)
        return false;
    size_t n = strnlen(s, PDU_UID_MAX + 1);
    return n >= 1 && n <= PDU_UID_MAX;
}

/* What the decoder promises about a structure it filled. */
static void check_decoded(enum pdu_type type, const struct pdu_associate *a)
{
    bool rq = type == PDU_ASSOCIATE_RQ;
    if (a->context_count == 0 || a->context_count > PDU_MAX_CONTEXTS)
        invariant_failed("presentation context count out of range", NULL);
    if (!uid_sane(a->application_context))
        invariant_failed("application context name", NULL);
    if (rq && (!pdu_ae_title_is_valid(a->called_ae) || !pdu_ae_title_is_valid(a->calling_ae)))
        invariant_failed("an RQ with an invalid AE title", NULL);
    uint8_t used[32] = {0};
    for (unsigned i = 0; i < a->context_count; i++) {
        const struct pdu_presentation_context *pc = &a->context[i];
        if ((pc->id & 1) == 0 || (used[pc->id / 8] & (1u << (pc->id % 8))))
            invariant_failed("even or repeated presentation context ID", NULL);
        used[pc->id / 8] |= (uint8_t)(1u << (pc->id % 8));
        if (pc->ts_count > PDU_MAX_TRANSFER_SYNTAXES)
            invariant_failed("too many transfer syntaxes", NULL);
        if (rq && (!uid_sane(pc->abstract_syntax) || pc->ts_count == 0))
            invariant_failed("RQ context without abstract or transfer syntax", NULL);
        if (!rq && pc->ts_count != (pc->result == PDU_PC_ACCEPTANCE ? 1u : 0u))
            invariant_failed("AC context with a wrong transfer syntax count", NULL);
        for (unsigned k = 0; k < pc->ts_count; k++) {
            if (!uid_sane(pc->transfer_syntax[k]))
                invariant_failed("transfer syntax UID", NULL);
        }
    }
    if (a->role_count > PDU_MAX_ROLES || a->extended_count > PDU_MAX_EXTENDED)
        invariant_failed("role or extended negotiation count", NULL);
    for (unsigned i = 0; i < a->role_count; i++) {
        if (!uid_sane(a->role[i].sop_class))
            invariant_failed("role SOP class UID", NULL);
    }
    for (unsigned i = 0; i < a->extended_count; i++) {
        if (!uid_sane(a->extended[i].sop_class))
            invariant_failed("extended negotiation SOP class UID", NULL);
    }
    const struct pdu_user_identity *id = &a->identity;
    if (id->type != PDU_IDENTITY_NONE) {
        if (!rq || id->type > PDU_IDENTITY_JWT || !id->primary || id->primary_length == 0 ||
            id->primary[id->primary_length] != '\0')
            invariant_failed("user identity request fields", NULL);
        if (id->secondary_length && (id->type != PDU_IDENTITY_USERNAME_PASSCODE || !id->secondary ||
                                     id->secondary[id->secondary_length] != '\0'))
            invariant_failed("user identity secondary field", NULL);
    }
    if (id->has_response && (rq || !id->response || id->response[id->response_length] != '\0'))
        invariant_failed("user identity response", NULL);
    (void)pdu_check_associate(type, a, NULL);
}

/* The fields an encoder writes, compared. */
static bool associate_equal(enum pdu_type type, const struct pdu_associate *x,
                            const struct pdu_associate *y)
{
    bool rq = type == PDU_ASSOCIATE_RQ;
    if (x->protocol_version != y->protocol_version || strcmp(x->called_ae, y->called_ae) ||
        strcmp(x->calling_ae, y->calling_ae) ||
        strcmp(x->application_context, y->application_context) ||
        x->context_count != y->context_count)
        return false;
    for (unsigned i = 0; i < x->context_count; i++) {
        const struct pdu_presentation_context *p = &x->context[i], *q = &y->context[i];
        if (p->id != q->id || p->ts_count != q->ts_count)
            return false;
        if (rq ? strcmp(p->abstract_syntax, q->abstract_syntax) != 0 : p->result != q->result)
            return false;
        for (unsigned k = 0; k < p->ts_count; k++) {
            if (strcmp(p->transfer_syntax[k], q->transfer_syntax[k]) != 0)
                return false;
        }
    }
    if (x->max_length != y->max_length ||
        strcmp(x->implementation_class_uid, y->implementation_class_uid) ||
        strcmp(x->implementation_version, y->implementation_version) ||
        x->has_async != y->has_async || x->max_ops_invoked != y->max_ops_invoked ||
        x->max_ops_performed != y->max_ops_performed || x->role_count != y->role_count ||
        x->extended_count != y->extended_count)
        return false;
    for (unsigned i = 0; i < x->role_count; i++) {
        if (strcmp(x->role[i].sop_class, y->role[i].sop_class) ||
            x->role[i].scu != y->role[i].scu || x->role[i].scp != y->role[i].scp)
            return false;
    }
    for (unsigned i = 0; i < x->extended_count; i++) {
        const struct pdu_extended *p = &x->extended[i], *q = &y->extended[i];
        if (strcmp(p->sop_class, q->sop_class) ||
            !same_bytes(p->info, p->info_length, q->info, q->info_length))
            return false;
    }
    const struct pdu_user_identity *p = &x->identity, *q = &y->identity;
    if (p->type != q->type || p->has_response != q->has_response)
        return false;
    if (p->type != PDU_IDENTITY_NONE &&
        (p->positive_response != q->positive_response ||
         !same_bytes(p->primary, p->primary_length, q->primary, q->primary_length) ||
         !same_bytes(p->secondary, p->secondary_length, q->secondary, q->secondary_length)))
        return false;
    if (p->has_response &&
        !same_bytes(p->response, p->response_length, q->response, q->response_length))
        return false;
    return true;
}

static int encode(enum pdu_type type, const struct pdu_associate *a, struct tr_buf *out)
{
    return type == PDU_ASSOCIATE_RQ ? pdu_encode_associate_rq(a, out)
                                    : pdu_encode_associate_ac(a, out);
}

static void associate(enum pdu_type type, const uint8_t *data, size_t size)
{
    struct pdu_associate *a = tr_malloc(sizeof(*a));
    struct pdu_associate *b = tr_malloc(sizeof(*b));
    if (!a || !b)
        invariant_failed("out of memory in the harness", NULL);
    pdu_associate_init(a);
    pdu_associate_init(b);
    struct tr_buf out, again;
    tr_buf_init(&out, OUT_CAP);
    tr_buf_init(&again, OUT_CAP);
    struct tr_error err = TR_ERROR_INIT;
    int rc = pdu_decode_associate(type, data, size, a, &err);
    check_error(rc, &err);
    if (rc < 0)
        goto out;
    check_decoded(type, a);

    /* The two documented gaps between what is decoded and what is encoded. */
    if (!a->implementation_class_uid[0])
        memcpy(a->implementation_class_uid, "1.2.3", sizeof("1.2.3"));
    if (type == PDU_ASSOCIATE_AC) {
        if (!pdu_ae_title_is_valid(a->called_ae))
            memcpy(a->called_ae, "CALLED", sizeof("CALLED"));
        if (!pdu_ae_title_is_valid(a->calling_ae))
            memcpy(a->calling_ae, "CALLING", sizeof("CALLING"));
    }
    tr_error_clear(&err);
    rc = encode(type, a, &out);
    if (rc < 0) {
        if (rc == TR_ELIMIT && size > 65000)
            goto out;
        pdu_check_associate(type, a, &err);
        invariant_failed("a decoded A-ASSOCIATE does not encode", &err);
    }
    if (out.len < PDU_HEADER_SIZE || (uint8_t)out.data[0] != type ||
        tr_be32((const uint8_t *)out.data + 2) != out.len - PDU_HEADER_SIZE)
        invariant_failed("encoded PDU header", NULL);
    tr_error_clear(&err);
    rc = pdu_decode_associate(type, (const uint8_t *)out.data + PDU_HEADER_SIZE,
                              out.len - PDU_HEADER_SIZE, b, &err);
    if (rc < 0)
        invariant_failed("an encoded A-ASSOCIATE does not decode", &err);
    if (!associate_equal(type, a, b))
        invariant_failed("decode(encode(decode(x))) differs from decode(x)", NULL);
    if (encode(type, b, &again) < 0 || !same_bytes(out.data, out.len, again.data, again.len))
        invariant_failed("encoding is not stable", NULL);
out:
    tr_buf_release(&out);
    tr_buf_release(&again);
    pdu_associate_release(a);
    pdu_associate_release(b);
    tr_free(a);
    tr_free(b);
}

static void reject_and_abort(const uint8_t *data, size_t size)
{
    struct tr_error err = TR_ERROR_INIT;
    struct tr_buf out;
    tr_buf_init(&out, 64);

    struct pdu_reject rj;
    int rc = pdu_decode_associate_rj(data, size, &rj, &err);
    check_error(rc, &err);
    if (rc == 0) {
        if (!pdu_reject_text(&rj))
            invariant_failed("no reject text", NULL);
        if (pdu_encode_associate_rj(&rj, &out) == 0) {
            struct pdu_reject back;
            if (out.len != 10 ||
                pdu_decode_associate_rj((const uint8_t *)out.data + 6, 4, &back, NULL) < 0 ||
                back.result != rj.result || back.source != rj.source || back.reason != rj.reason)
                invariant_failed("A-ASSOCIATE-RJ round trip", NULL);
        }
    }

    uint8_t source, reason;
    tr_error_clear(&err);
    tr_buf_reset(&out);
    rc = pdu_decode_abort(data, size, &source, &reason, &err);
    check_error(rc, &err);
    if (rc == 0) {
        if (!pdu_abort_text(source, reason))
            invariant_failed("no abort text", NULL);
        if (pdu_encode_abort(source, reason, &out) == 0) {
            uint8_t s2, r2;
            if (out.len != 10 ||
                pdu_decode_abort((const uint8_t *)out.data + 6, 4, &s2, &r2, NULL) < 0 ||
                s2 != source || r2 != reason)
                invariant_failed("A-ABORT round trip", NULL);
        }
    }
    tr_buf_release(&out);
}

static void pdvs(const uint8_t *data, size_t size)
{
    size_t pos = 0;
    struct pdu_pdv pdv;
    struct tr_error err = TR_ERROR_INIT;
    int rc;
    while ((rc = pdu_next_pdv(data, size, &pos, &pdv, &err)) == 1) {
        size_t start = (size_t)(pdv.data - data);
        if (pdv.data < data + 6 || start > size || pdv.length > size - start ||
            pos != start + pdv.length)
            invariant_failed("a PDV outside the body or no progress", NULL);
        uint8_t hdr[12];
        pdu_encode_pdata_header(pdv.context_id, pdv.command, pdv.last, pdv.length, hdr);
        const uint8_t *item = pdv.data - 6;
        if (memcmp(hdr + 6, item, 5) != 0 || (hdr[11] ^ item[5]) & 0x03)
            invariant_failed("PDV header differs from pdu_encode_pdata_header's", NULL);
        if (tr_be32(hdr + 2) != pdv.length + 6)
            invariant_failed("P-DATA-TF length", NULL);
    }
    check_error(rc, &err);
    if (rc == 0 && pos != size)
        invariant_failed("PDV iteration ended before the body", NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    associate(PDU_ASSOCIATE_RQ, data, size);
    associate(PDU_ASSOCIATE_AC, data, size);
    reject_and_abort(data, size);
    pdvs(data, size);
    return 0;
}
