/*
 * test_multipart.c - the streaming multipart parser (STOW-RS bodies) and media-type helpers.
 * Every body is parsed whole, byte by byte and in odd-sized chunks: the parts must come out
 * the same whatever the chunking.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "multipart.h"

struct collected {
    char types[8][128];
    struct tr_buf data[8];
    unsigned parts;
    unsigned ended;
};

static int on_begin(void *ctx, const struct mp_headers *h)
{
    struct collected *c = ctx;
    if (c->parts == 8)
        return -1;
    const char *t = mp_header(h, "content-type");
    snprintf(c->types[c->parts], sizeof(c->types[0]), "%s", t ? t : "(none)");
    tr_buf_init(&c->data[c->parts], 1 << 20);
    c->parts++;
    return 0;
}

static int on_data(void *ctx, const void *d, size_t n)
{
    struct collected *c = ctx;
    return tr_buf_add(&c->data[c->parts - 1], d, n);
}

static int on_end(void *ctx)
{
    struct collected *c = ctx;
    c->ended++;
    return 0;
}

static void collected_release(struct collected *c)
{
    for (unsigned i = 0; i < c->parts; i++)
        tr_buf_release(&c->data[i]);
}

/* Parse `body` in chunks of `chunk` bytes (0: whole). Returns mp_finish's result. */
static int parse(const char *ctype, const char *body, size_t len, size_t chunk,
                 struct collected *c, struct tr_error *err)
{
    memset(c, 0, sizeof(*c));
    struct mp_parser p;
    struct mp_callbacks cb = {on_begin, on_data, on_end};
    int rc = mp_init(&p, ctype, &cb, c, err);
    if (rc)
        return rc;
    if (!chunk)
        chunk = len ? len : 1;
    for (size_t off = 0; off < len; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        rc = mp_feed(&p, body + off, n, err);
        if (rc)
            return rc;
    }
    return mp_finish(&p, err);
}

static const char CT[] = "multipart/related; type=\"application/dicom\"; boundary=XyZ";

static void check_all_chunkings(const char *body, size_t len, unsigned parts,
                                const char *const *want_data, const size_t *want_len,
                                const char *const *want_type)
{
    size_t chunks[] = {0, 1, 2, 3, 5, 7, 11};
    for (size_t k = 0; k < sizeof(chunks) / sizeof(chunks[0]); k++) {
        struct collected c;
        struct tr_error err = TR_ERROR_INIT;
        int rc = parse(CT, body, len, chunks[k], &c, &err);
        if (rc)
            fail_msg("chunk %zu: %s", chunks[k], err.message);
        assert_int_equal(c.parts, parts);
        assert_int_equal(c.ended, parts);
        for (unsigned i = 0; i < parts; i++) {
            assert_int_equal(c.data[i].len, want_len[i]);
            if (want_len[i])
                assert_memory_equal(c.data[i].data, want_data[i], want_len[i]);
            assert_string_equal(c.types[i], want_type[i]);
        }
        collected_release(&c);
    }
}

static void two_parts(void **state)
{
    (void)state;
    static const char body[] = "--XyZ\r\nContent-Type: application/dicom\r\n\r\n"
                               "DICM\0\1\2\r\n--X not the end\r\n-"
                               "\r\n--XyZ\r\nContent-Type: application/dicom+json\r\n"
                               "Content-Location: a\r\n\r\n[{}]\r\n--XyZ--\r\n";
    const char *data[] = {"DICM\0\1\2\r\n--X not the end\r\n-", "[{}]"};
    size_t lens[] = {27, 4};
    const char *types[] = {"application/dicom", "application/dicom+json"};
    check_all_chunkings(body, sizeof(body) - 1, 2, data, lens, types);
}

static void preamble_epilogue_empty_part(void **state)
{
    (void)state;
    static const char body[] = "this is a preamble\r\n--XyZ  \r\nContent-Type: a/b\r\n\r\n"
                               "\r\n--XyZ\r\n\r\nno headers\r\n--XyZ--\r\nepilogue --XyZ\r\n";
    const char *data[] = {"", "no headers"};
    size_t lens[] = {0, 10};
    const char *types[] = {"a/b", "(none)"};
    check_all_chunkings(body, sizeof(body) - 1, 2, data, lens, types);
}

static void binary_with_cr_runs(void **state)
{
    (void)state;
    /* A part full of CRs, LFs and dashes: the held-back bytes must all come out. */
    char body[4096];
    char payload[1000];
    for (size_t i = 0; i < sizeof(payload); i++)
        payload[i] = "\r\n-X"[i % 4];
    size_t n = (size_t)snprintf(body, sizeof(body), "--XyZ\r\nContent-Type: x/y\r\n\r\n");
    memcpy(body + n, payload, sizeof(payload));
    n += sizeof(payload);
    memcpy(body + n, "\r\n--XyZ--", 9);
    n += 9;
    const char *data[] = {payload};
    size_t lens[] = {sizeof(payload)};
    const char *types[] = {"x/y"};
    check_all_chunkings(body, n, 1, data, lens, types);
}

static void truncated_and_malformed(void **state)
{
    (void)state;
    struct collected c;
    struct tr_error err = TR_ERROR_INIT;
    static const char cut[] = "--XyZ\r\nContent-Type: a/b\r\n\r\nhalf a part";
    assert_int_equal(parse(CT, cut, sizeof(cut) - 1, 0, &c, &err), TR_ETRUNCATED);
    assert_non_null(strstr(err.message, "closing delimiter"));
    collected_release(&c);

    tr_error_clear(&err);
    static const char bad_line[] = "--XyZ\r\nContent-Type: a/b\r\n\r\nx\r\n--XyZjunk\r\n";
    assert_int_equal(parse(CT, bad_line, sizeof(bad_line) - 1, 0, &c, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "at byte"));
    collected_release(&c);

    tr_error_clear(&err);
    static const char bad_header[] = "--XyZ\r\nno colon here\r\n\r\nx\r\n--XyZ--";
    assert_int_equal(parse(CT, bad_header, sizeof(bad_header) - 1, 0, &c, &err), TR_EFORMAT);
    collected_release(&c);

    /* Headers larger than the cap. */
    tr_error_clear(&err);
    static char huge[MP_HEADER_BYTES + 100];
    size_t n = (size_t)snprintf(huge, sizeof(huge), "--XyZ\r\nX-Long: ");
    memset(huge + n, 'a', sizeof(huge) - n - 1);
    assert_int_equal(parse(CT, huge, sizeof(huge) - 1, 0, &c, &err), TR_ELIMIT);
    collected_release(&c);

    /* Not multipart, or no boundary. */
    struct mp_parser p;
    struct mp_callbacks cb = {0};
    tr_error_clear(&err);
    assert_int_equal(mp_init(&p, "application/dicom", &cb, NULL, &err), TR_EINVAL);
    tr_error_clear(&err);
    assert_int_equal(mp_init(&p, "multipart/related; type=x", &cb, NULL, &err), TR_EINVAL);
    tr_error_clear(&err);
    char longb[200];
    snprintf(longb, sizeof(longb), "multipart/related; boundary=%071d", 0);
    assert_int_equal(mp_init(&p, longb, &cb, NULL, &err), TR_EINVAL);
}

static void media_helpers(void **state)
{
    (void)state;
    char out[128];
    mp_media_type(" Multipart/Related ; type=x", out, sizeof(out));
    assert_string_equal(out, "multipart/related");
    const char *v = "multipart/related; type=\"application/dicom; x=1\"; Boundary=\"a b\\\"c\";"
                    " transfer-syntax=1.2.840.10008.1.2.4.50";
    assert_true(mp_media_param(v, "type", out, sizeof(out)));
    assert_string_equal(out, "application/dicom; x=1");
    assert_true(mp_media_param(v, "boundary", out, sizeof(out)));
    assert_string_equal(out, "a b\"c");
    assert_true(mp_media_param(v, "transfer-syntax", out, sizeof(out)));
    assert_string_equal(out, "1.2.840.10008.1.2.4.50");
    assert_false(mp_media_param(v, "q", out, sizeof(out)));
    /* The next media range of an Accept list is not this one's parameter. */
    assert_false(mp_media_param("image/png, image/jpeg; q=0.5", "q", out, sizeof(out)));
    /* Absent: `out` is empty, not the value of the last parameter looked at (callers that
     * ignore the result took "application/dicom" for a transfer syntax). */
    assert_false(mp_media_param("multipart/related; type=\"application/dicom\"",
                                "transfer-syntax", out, sizeof(out)));
    assert_string_equal(out, "");
    assert_false(mp_media_param("multipart/related; type=application/dicom", "transfer-syntax",
                                out, sizeof(out)));
    assert_string_equal(out, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(two_parts),
        cmocka_unit_test(preamble_epilogue_empty_part),
        cmocka_unit_test(binary_with_cr_runs),
        cmocka_unit_test(truncated_and_malformed),
        cmocka_unit_test(media_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
