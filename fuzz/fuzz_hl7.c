/*
 * fuzz_hl7.c - libFuzzer target for the HL7 v2 parser (src/hl7/hl7.c): hl7_parse() on the
 * input, leniently and with HL7_STRICT_ESCAPES, and for what it builds: every piece is
 * addressed, decoded, encoded again and set into a message of our own.
 *
 * Invariants checked with abort():
 *  - parse -> write -> parse gives the same tree (segment names, fields, wire bytes);
 *  - a failed parse sets an error message;
 *  - decode(encode(decode(piece))) == decode(piece) whenever encode succeeds;
 *  - hl7_get after hl7_set of a decoded value gives the value back, and the message written
 *    after the set parses again.
 *
 * Build and run: see fuzz/fuzz_part10.c and fuzz/run.sh (dictionary fuzz/hl7.dict).
 */
#include "common.h"
#include "hl7.h"

#include <stdio.h>
#include <stdlib.h>

#define CAP               ((size_t)4 << 20)
#define MAX_SEGMENTS      16
#define MAX_FIELDS        24
#define MAX_REPS          3
#define MAX_COMPONENTS    6
#define MAX_SUBCOMPONENTS 3

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void invariant_failed(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "fuzz_hl7: invariant failed: %s: %s\n", what,
            err && err->code ? err->message : "(no message)");
    abort();
}

static void same_tree(const struct hl7_message *a, const struct hl7_message *b)
{
    if (hl7_segment_count(a) != hl7_segment_count(b))
        invariant_failed("segment count changed in the round trip", NULL);
    if (hl7_message_charset(a) != hl7_message_charset(b))
        invariant_failed("character set changed in the round trip", NULL);
    for (size_t s = 0; s < hl7_segment_count(a); s++) {
        if (strcmp(hl7_segment_name(a, s), hl7_segment_name(b, s)) != 0 ||
            hl7_field_count(a, s) != hl7_field_count(b, s))
            invariant_failed("segment changed in the round trip", NULL);
        for (size_t f = 1; f <= hl7_field_count(a, s); f++) {
            size_t la = 0, lb = 0;
            const char *ra = hl7_field_raw(a, s, f, &la);
            const char *rb = hl7_field_raw(b, s, f, &lb);
            if (!ra || !rb || la != lb || memcmp(ra, rb, la) != 0)
                invariant_failed("field changed in the round trip", NULL);
        }
    }
}

/* Decode, encode, decode one piece; then set it into `scratch` and read it back. */
static void check_piece(const struct hl7_message *m, const struct hl7_path *p,
                        struct hl7_message *scratch)
{
    struct tr_buf value, wire, again;
    tr_buf_init(&value, CAP);
    tr_buf_init(&wire, CAP);
    tr_buf_init(&again, CAP);
    struct tr_error err = TR_ERROR_INIT;
    int presence = hl7_get_path(m, p, &value, &err);
    /* (A value may decode to nothing, e.g. \H\: there is nothing to set then.) */
    if (presence == HL7_VALUE && value.len > 0) {
        const struct hl7_encoding *enc = hl7_message_encoding(m);
        enum hl7_charset cs = hl7_message_charset(m);
        if (hl7_encode(enc, cs, value.data, value.len, &wire, &err) == 0) {
            tr_error_clear(&err);
            if (hl7_decode(enc, cs, wire.data, wire.len, &again, &err) < 0 ||
                again.len != value.len || memcmp(again.data, value.data, value.len) != 0)
                invariant_failed("decode(encode(value)) is not the value", &err);
            struct hl7_path z = *p;
            memcpy(z.segment, "ZZZ", 4);
            z.occurrence = 1;
            z.field = p->field > 2 ? p->field : 3;
            tr_error_clear(&err);
            if (hl7_set_path(scratch, &z, value.data, value.len, &err) == 0) {
                tr_buf_reset(&again);
                tr_error_clear(&err);
                if (hl7_get_path(scratch, &z, &again, &err) != HL7_VALUE ||
                    again.len != value.len || memcmp(again.data, value.data, value.len) != 0)
                    invariant_failed("hl7_get after hl7_set is not the value", &err);
            }
        }
    }
    tr_buf_release(&value);
    tr_buf_release(&wire);
    tr_buf_release(&again);
}

static void walk(const struct hl7_message *m)
{
    struct hl7_message *scratch = hl7_message_new(hl7_message_encoding(m));
    if (!scratch)
        return;
    struct tr_error err = TR_ERROR_INIT;
    if (hl7_set(scratch, "MSH-18", hl7_charset_name(hl7_message_charset(m)), &err) < 0 ||
        hl7_segment_add(scratch, "ZZZ", &err) < 0)
        invariant_failed("cannot build a scratch message", &err);
    char text[40];
    for (size_t s = 0; s < TR_MIN(hl7_segment_count(m), (size_t)MAX_SEGMENTS); s++) {
        const char *name = hl7_segment_name(m, s);
        long occurrence = 0;
        for (size_t k = 0; k <= s; k++)
            occurrence += strcmp(hl7_segment_name(m, k), name) == 0;
        for (size_t f = 1; f <= TR_MIN(hl7_field_count(m, s), (size_t)MAX_FIELDS); f++) {
            snprintf(text, sizeof(text), "%s[%ld]-%zu", name, occurrence, f);
            unsigned reps = TR_MIN(hl7_count(m, text), (unsigned)MAX_REPS);
            for (unsigned r = 1; r <= reps; r++) {
                struct hl7_path p;
                snprintf(text, sizeof(text), "%s[%ld]-%zu[%u]", name, occurrence, f, r);
                if (hl7_path_parse(text, &p, NULL) < 0)
                    invariant_failed("a path we made does not parse", NULL);
                check_piece(m, &p, scratch);
                unsigned comps = TR_MIN(hl7_count(m, text), (unsigned)MAX_COMPONENTS);
                for (unsigned c = 1; c <= comps; c++) {
                    p.component = c;
                    p.subcomponent = 0;
                    check_piece(m, &p, scratch);
                    snprintf(text, sizeof(text), "%s[%ld]-%zu[%u].%u", name, occurrence, f, r, c);
                    unsigned subs = TR_MIN(hl7_count(m, text), (unsigned)MAX_SUBCOMPONENTS);
                    for (unsigned sc = 1; sc <= subs; sc++) {
                        p.subcomponent = sc;
                        check_piece(m, &p, scratch);
                    }
                }
            }
        }
    }
    struct tr_buf out;
    tr_buf_init(&out, CAP * 4);
    tr_error_clear(&err);
    if (hl7_write(scratch, &out, &err) == 0) {
        struct hl7_message *again = NULL;
        struct hl7_limits lim;
        hl7_limits_init(&lim);
        lim.max_message = CAP * 4;
        if (hl7_parse(out.data, out.len, &lim, &again, &err) < 0)
            invariant_failed("a message built with hl7_set does not parse", &err);
        hl7_message_free(again);
    }
    tr_buf_release(&out);
    hl7_message_free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct hl7_limits lenient, strict;
    hl7_limits_init(&lenient);
    lenient.max_message = CAP;
    strict = lenient;
    strict.flags = HL7_STRICT_ESCAPES;
    strict.max_fields = 64;
    const struct hl7_limits *limits[] = {&lenient, &strict};
    for (size_t i = 0; i < TR_ARRAY_SIZE(limits); i++) {
        struct hl7_message *m = NULL;
        struct tr_error err = TR_ERROR_INIT;
        if (hl7_parse(data, size, limits[i], &m, &err) < 0) {
            if (!err.code || !err.message[0])
                invariant_failed("a failed parse set no message", NULL);
            continue;
        }
        struct tr_buf out;
        tr_buf_init(&out, CAP);
        if (hl7_write(m, &out, &err) < 0)
            invariant_failed("a parsed message cannot be written", &err);
        struct hl7_message *again = NULL;
        if (hl7_parse(out.data, out.len, limits[i], &again, &err) < 0)
            invariant_failed("telerad cannot parse HL7 it wrote", &err);
        same_tree(m, again);
        hl7_message_free(again);
        tr_buf_release(&out);
        if (i == 0)
            walk(m);
        hl7_message_free(m);
    }
    return 0;
}
