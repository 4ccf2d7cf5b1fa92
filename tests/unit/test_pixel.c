/*
 * test_pixel.c - pixel data: the image pixel module, finding frames (Extended and Basic Offset
 * Tables, one fragment per frame, start markers, 1-bit frames off byte boundaries), RLE and
 * lossless JPEG round trips on synthetic frames (8 and 16 bits, signed, 1 and 3 samples, every
 * predictor, point transform), JPEG-LS and JPEG 2000 round trips through transcoding, and
 * clean TR_EFORMAT errors for damaged bitstreams (no crash whatever the bytes).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "codec_int.h"
#include "common.h"
#include "dcm.h"
#include "pixel.h"

#define TS_RLE "1.2.840.10008.1.2.5"
#define TS_JPLL "1.2.840.10008.1.2.4.70"
#define TS_JLS "1.2.840.10008.1.2.4.80"
#define TS_J2K "1.2.840.10008.1.2.4.90"
#define TS_JPEG "1.2.840.10008.1.2.4.50"
#define TS_EXPLICIT DCM_UID_ExplicitVRLittleEndian

struct shape {
    uint32_t rows, cols, frames;
    uint16_t samples, ba, bs;
    bool is_signed;
    const char *photometric;
};

static uint32_t lcg = 12345;
static uint32_t rnd(void)
{
    lcg = lcg * 1103515245u + 12345u;
    return lcg >> 8;
}

/* Deterministic native pixels: a gradient with noise and a few flat runs (so that RLE has both
 * run kinds), full-range extremes, signed values sign-extended into their container. */
static uint8_t *make_pixels(const struct shape *s, size_t *len)
{
    size_t b = s->ba == 1 ? 1 : s->ba / 8;
    size_t count = (size_t)s->rows * s->cols * s->samples * s->frames;
    uint8_t *p = test_calloc(count * b + 1, 1);
    uint32_t max = s->bs >= 32 ? 0xFFFFFFFFu : (1u << s->bs) - 1;
    for (size_t i = 0; i < count; i++) {
        size_t px = i / s->samples;
        uint32_t x = (uint32_t)(px % s->cols), y = (uint32_t)((px / s->cols) % s->rows);
        uint32_t v;
        if (x < 4)
            v = 7 & max; /* a flat run at the start of every row */
        else if (i % 97 == 0)
            v = max;
        else
            v = (x * 37 + y * 11 + (rnd() % 5) + (uint32_t)(i % s->samples) * 50) & max;
        if (s->is_signed && s->bs < 32 && (v & (1u << (s->bs - 1))))
            v |= ~max; /* sign-extend */
        if (b == 1)
            p[i] = (uint8_t)(s->ba == 1 ? v & 1 : v);
        else if (b == 2)
            tr_put_le16(p + 2 * i, (uint16_t)v);
        else
            tr_put_le32(p + 4 * i, v);
    }
    *len = count * b;
    return p;
}

static void set_module(struct dcm_dataset *ds, const struct shape *s)
{
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280010, DCM_VR_US, s->rows), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280011, DCM_VR_US, s->cols), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280002, DCM_VR_US, s->samples), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280100, DCM_VR_US, s->ba), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280101, DCM_VR_US, s->bs), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280102, DCM_VR_US, s->bs - 1), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280103, DCM_VR_US, s->is_signed), 0);
    assert_int_equal(dcm_dataset_set_string(ds, 0x00280004, DCM_VR_CS, s->photometric), 0);
    if (s->samples > 1)
        assert_int_equal(dcm_dataset_set_int(ds, 0x00280006, DCM_VR_US, 0), 0);
    if (s->frames > 1)
        assert_int_equal(dcm_dataset_set_int(ds, 0x00280008, DCM_VR_IS, s->frames), 0);
    assert_int_equal(dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, "1.2.3.4"), 0);
}

/* A native data set; for 1-bit images `pixels` holds one byte per sample and is packed. */
static struct dcm_dataset *native_dataset(const struct shape *s, const uint8_t *pixels, size_t len)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    assert_non_null(ds);
    set_module(ds, s);
    if (s->ba == 1) {
        size_t n = (len + 7) / 8;
        uint8_t *packed = test_calloc(n + 1, 1);
        for (size_t i = 0; i < len; i++)
            packed[i / 8] |= (uint8_t)((pixels[i] & 1) << (i % 8));
        assert_int_equal(dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OB, packed, n), 0);
        test_free(packed);
    } else {
        assert_int_equal(dcm_dataset_set_bytes(ds, DCM_TAG_PixelData,
                                               s->ba > 8 ? DCM_VR_OW : DCM_VR_OB, pixels, len),
                         0);
    }
    return ds;
}

/* Decode every frame of ds (in ts) and compare with `pixels`. */
static void check_frames(const struct dcm_dataset *ds, const char *ts, const struct shape *s,
                         const uint8_t *pixels)
{
    struct tr_buf out;
    tr_buf_init(&out, 1 << 26);
    size_t flen = (size_t)s->rows * s->cols * s->samples * (s->ba == 1 ? 1 : s->ba / 8);
    for (uint32_t i = 0; i < s->frames; i++) {
        struct tr_error err = TR_ERROR_INIT;
        struct dcm_pixel_desc od;
        int rc = dcm_pixel_decode_frame(ds, ts, i, &out, &od, &err);
        if (rc)
            fail_msg("decode frame %u in %s: %s", i + 1, ts, err.message);
        assert_int_equal(out.len, flen);
        assert_int_equal(od.planar, 0);
        if (memcmp(out.data, pixels + i * flen, flen) != 0)
            fail_msg("frame %u decoded from %s differs from the original", i + 1, ts);
    }
    tr_buf_release(&out);
}

static const struct shape shapes[] = {
    {16, 20, 1, 1, 8, 8, false, "MONOCHROME2"},
    {17, 23, 2, 1, 16, 16, false, "MONOCHROME2"},
    {16, 16, 1, 1, 16, 12, true, "MONOCHROME2"},
    {9, 31, 1, 1, 16, 16, true, "MONOCHROME2"},
    {12, 13, 2, 3, 8, 8, false, "RGB"},
    {8, 10, 1, 3, 16, 16, false, "RGB"},
    {5, 7, 1, 1, 8, 5, false, "MONOCHROME1"},
};

/* RLE: encode by transcoding, decode each frame, and back to native. */
static void test_rle_round_trip(void **state)
{
    (void)state;
    for (size_t k = 0; k < TR_ARRAY_SIZE(shapes); k++) {
        const struct shape *s = &shapes[k];
        size_t len;
        uint8_t *px = make_pixels(s, &len);
        struct dcm_dataset *ds = native_dataset(s, px, len);
        struct tr_error err = TR_ERROR_INIT;
        if (dcm_pixel_transcode(ds, TS_EXPLICIT, TS_RLE, false, &err))
            fail_msg("shape %zu: %s", k, err.message);
        const struct dcm_element *e = dcm_dataset_get(ds, DCM_TAG_PixelData);
        assert_true(e->flags & DCM_ELEM_ENCAPSULATED);
        assert_int_equal(e->value.fragments.count, s->frames + 1);
        assert_int_equal(e->value.fragments.fragment[0].length, 4 * s->frames); /* BOT */
        assert_int_equal(tr_le32(e->value.fragments.fragment[1].bytes),
                         s->samples * (s->ba / 8));
        check_frames(ds, TS_RLE, s, px);
        assert_int_equal(dcm_pixel_transcode(ds, TS_RLE, TS_EXPLICIT, false, &err), 0);
        e = dcm_dataset_get(ds, DCM_TAG_PixelData);
        assert_false(e->flags & DCM_ELEM_ENCAPSULATED);
        assert_int_equal(e->length, len);
        assert_memory_equal(e->value.bytes, px, len);
        dcm_dataset_free(ds);
        test_free(px);
    }
}

/* 1-bit frames that do not begin on a byte boundary (3 x 3 pixels: 9 bits a frame), native
 * and through RLE (one segment of packed bits). */
static void test_one_bit_frames(void **state)
{
    (void)state;
    struct shape s = {3, 3, 3, 1, 1, 1, false, "MONOCHROME2"};
    size_t len;
    uint8_t *px = make_pixels(&s, &len);
    for (size_t i = 0; i < len; i++)
        px[i] = (uint8_t)((i * 7 + i / 3) % 3 == 0);
    struct dcm_dataset *ds = native_dataset(&s, px, len);
    struct tr_buf scratch;
    tr_buf_init(&scratch, 1024);
    const uint8_t *bytes;
    size_t n;
    struct tr_error err = TR_ERROR_INIT;
    /* Frame 2 starts at bit 9: its bits are shifted into the scratch buffer. */
    assert_int_equal(dcm_pixel_frame_encoded(ds, TS_EXPLICIT, 1, &scratch, &bytes, &n, &err), 0);
    assert_int_equal(n, 2);
    for (unsigned i = 0; i < 9; i++)
        assert_int_equal((bytes[i / 8] >> (i % 8)) & 1, px[9 + i]);
    check_frames(ds, TS_EXPLICIT, &s, px);
    assert_int_equal(dcm_pixel_transcode(ds, TS_EXPLICIT, TS_RLE, false, &err), 0);
    check_frames(ds, TS_RLE, &s, px);
    assert_int_equal(dcm_pixel_transcode(ds, TS_RLE, TS_EXPLICIT, false, &err), 0);
    check_frames(ds, TS_EXPLICIT, &s, px);
    /* Not enough bits for the last frame. */
    struct shape big = s;
    big.frames = 4;
    struct dcm_dataset *short_ds = native_dataset(&s, px, len);
    assert_int_equal(dcm_dataset_set_int(short_ds, 0x00280008, DCM_VR_IS, 4), 0);
    (void)big;
    tr_error_clear(&err);
    assert_int_equal(dcm_pixel_frame_encoded(short_ds, TS_EXPLICIT, 3, &scratch, &bytes, &n, &err),
                     TR_EFORMAT);
    assert_non_null(strstr(err.message, "frame 4"));
    dcm_dataset_free(short_ds);
    tr_buf_release(&scratch);
    dcm_dataset_free(ds);
    test_free(px);
}

/* Lossless JPEG: every predictor, with and without point transform, straight through the codec;
 * then the transfer syntax round trip through pixel.c. */
static void test_jpeg_lossless_round_trip(void **state)
{
    (void)state;
    static const struct shape lj[] = {
        {16, 20, 1, 1, 8, 8, false, "MONOCHROME2"},
        {17, 23, 1, 1, 16, 16, false, "MONOCHROME2"},
        {16, 16, 1, 1, 16, 12, true, "MONOCHROME2"},
        {9, 31, 1, 1, 16, 16, true, "MONOCHROME2"},
        {12, 13, 1, 3, 8, 8, false, "RGB"},
        {8, 10, 1, 3, 16, 16, false, "RGB"},
        {6, 5, 1, 1, 8, 2, false, "MONOCHROME2"},
        {4, 300, 1, 4, 16, 15, false, "ARGB"},
    };
    struct tr_buf enc, dec;
    tr_buf_init(&enc, 1 << 24);
    tr_buf_init(&dec, 1 << 24);
    for (size_t k = 0; k < TR_ARRAY_SIZE(lj); k++) {
        const struct shape *s = &lj[k];
        size_t len;
        uint8_t *px = make_pixels(s, &len);
        struct dcm_pixel_desc d = {s->rows, s->cols, 1, s->samples, s->ba, s->bs,
                                   (uint16_t)(s->bs - 1), s->is_signed, 0, ""};
        snprintf(d.photometric, sizeof(d.photometric), "%s", s->photometric);
        size_t count = len / (s->ba / 8);
        uint32_t mask = (1u << s->bs) - 1;
        for (unsigned pred = 1; pred <= 7; pred++) {
            for (unsigned pt = 0; pt <= 2; pt += 2) {
                if (pt >= s->bs)
                    continue;
                /* Restart intervals: none, every line, every two lines (the row-aligned
                   intervals were also checked against DCMTK's dcmdjpeg). */
                unsigned ri = pred % 3 == 0 ? 0 : pred % 3 == 1 ? s->cols : 2 * s->cols;
                struct tr_error err = TR_ERROR_INIT;
                tr_buf_reset(&enc);
                tr_buf_reset(&dec);
                if (dcm_jpeg_lossless_encode_ex(px, len, &d, pred, pt, ri, &enc, &err))
                    fail_msg("shape %zu predictor %u: %s", k, pred, err.message);
                struct dcm_codec_frame f = {(uint8_t *)enc.data, enc.len, &d, 0, DCM_NO_OFFSET};
                struct dcm_pixel_desc od = d;
                if (dcm_jpeg_lossless_decode(&f, &dec, &od, &err))
                    fail_msg("shape %zu predictor %u pt %u: %s", k, pred, pt, err.message);
                unsigned ob = od.bits_allocated / 8;
                assert_int_equal(dec.len, count * ob);
                for (size_t i = 0; i < count; i++) {
                    uint32_t want = (s->ba == 8 ? px[i] : tr_le16(px + 2 * i)) & mask;
                    want = (want >> pt) << pt;
                    uint32_t got = ob == 1 ? (uint8_t)dec.data[i]
                                           : tr_le16((uint8_t *)dec.data + 2 * i);
                    if (got != want)
                        fail_msg("shape %zu predictor %u pt %u sample %zu: %u, not %u", k, pred,
                                 pt, i, got, want);
                }
            }
        }
        if (s->samples != 4) {
            struct dcm_dataset *ds = native_dataset(s, px, len);
            struct tr_error err = TR_ERROR_INIT;
            if (dcm_pixel_transcode(ds, TS_EXPLICIT, TS_JPLL, false, &err))
                fail_msg("shape %zu: %s", k, err.message);
            check_frames(ds, TS_JPLL, s, px);
            dcm_dataset_free(ds);
        }
        test_free(px);
    }
    tr_buf_release(&enc);
    tr_buf_release(&dec);
}

/* JPEG-LS (CharLS) and JPEG 2000 (OpenJPEG) lossless encoders, decoded by the same path. */
static void test_library_codecs_round_trip(void **state)
{
    (void)state;
    const char *targets[] = {TS_JLS, TS_J2K};
    for (size_t t = 0; t < 2; t++) {
        for (size_t k = 0; k < TR_ARRAY_SIZE(shapes); k++) {
            const struct shape *s = &shapes[k];
            size_t len;
            uint8_t *px = make_pixels(s, &len);
            struct dcm_dataset *ds = native_dataset(s, px, len);
            struct tr_error err = TR_ERROR_INIT;
            if (dcm_pixel_transcode(ds, TS_EXPLICIT, targets[t], false, &err))
                fail_msg("%s shape %zu: %s", targets[t], k, err.message);
            char photometric[17];
            assert_true(dcm_dataset_get_string(ds, 0x00280004, 0, photometric, 17) >= 0);
            if (t == 1 && s->samples == 3)
                assert_string_equal(photometric, "YBR_RCT"); /* reversible colour transform */
            struct tr_buf out;
            tr_buf_init(&out, 1 << 24);
            struct dcm_pixel_desc od;
            assert_int_equal(dcm_pixel_decode_frame(ds, targets[t], 0, &out, &od, &err), 0);
            assert_string_equal(od.photometric, s->photometric);
            tr_buf_release(&out);
            check_frames(ds, targets[t], s, px);
            assert_int_equal(dcm_pixel_transcode(ds, targets[t], TS_EXPLICIT, false, &err), 0);
            assert_true(dcm_dataset_get_string(ds, 0x00280004, 0, photometric, 17) >= 0);
            assert_string_equal(photometric, s->photometric);
            dcm_dataset_free(ds);
            test_free(px);
        }
    }
}

static void test_lossy_needs_permission(void **state)
{
    (void)state;
    struct shape s = {16, 16, 1, 3, 8, 8, false, "RGB"};
    size_t len;
    uint8_t *px = make_pixels(&s, &len);
    struct dcm_dataset *ds = native_dataset(&s, px, len);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_pixel_transcode(ds, TS_EXPLICIT, TS_JPEG, false, &err), TR_EDENIED);
    assert_false(dcm_dataset_get(ds, DCM_TAG_PixelData)->flags & DCM_ELEM_ENCAPSULATED);
    tr_error_clear(&err);
    assert_int_equal(dcm_pixel_transcode(ds, TS_EXPLICIT, TS_JPEG, true, &err), 0);
    char v[65];
    assert_true(dcm_dataset_get_string(ds, 0x00282110, 0, v, sizeof(v)) >= 0);
    assert_string_equal(v, "01");
    assert_true(dcm_dataset_get_string(ds, 0x00282114, 0, v, sizeof(v)) >= 0);
    assert_string_equal(v, "ISO_10918_1");
    assert_true(dcm_dataset_get_string(ds, 0x00280004, 0, v, sizeof(v)) >= 0);
    assert_string_equal(v, "YBR_FULL_422");
    assert_int_equal(dcm_dataset_get_uid(ds, DCM_TAG_SOPInstanceUID, v, sizeof(v)), 0);
    assert_string_not_equal(v, "1.2.3.4");
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    struct dcm_pixel_desc od;
    assert_int_equal(dcm_pixel_decode_frame(ds, TS_JPEG, 0, &out, &od, &err), 0);
    assert_string_equal(od.photometric, "RGB");
    assert_int_equal(out.len, len);
    tr_buf_release(&out);
    assert_false(dcm_pixel_can_encode("1.2.840.10008.1.2.4.91"));
    assert_true(dcm_pixel_can_decode("1.2.840.10008.1.2.4.203"));
    assert_true(dcm_pixel_can_encode(TS_RLE));
    dcm_dataset_free(ds);
    test_free(px);
}

/* ---- frames in fragments ------------------------------------------------------------------ */

/* An encapsulated data set: `nfrag` fragments of the given contents after a BOT (bot_count
 * entries, NULL: empty). */
static struct dcm_dataset *encapsulated(uint32_t frames, const char *const *frags, size_t nfrag,
                                        const uint32_t *bot, size_t bot_count)
{
    struct shape s = {2, 2, frames, 1, 8, 8, false, "MONOCHROME2"};
    struct dcm_dataset *ds = dcm_dataset_new();
    set_module(ds, &s);
    struct dcm_element e = {.tag = DCM_TAG_PixelData, .vr = DCM_VR_OB,
                            .flags = DCM_ELEM_ENCAPSULATED | DCM_ELEM_UNDEFINED_LENGTH,
                            .length = DCM_UNDEFINED_LENGTH, .offset = DCM_NO_OFFSET};
    uint8_t *b = dcm_dataset_alloc(ds, 4 * bot_count + 1);
    for (size_t i = 0; i < bot_count; i++)
        tr_put_le32(b + 4 * i, bot[i]);
    struct dcm_fragment f0 = {b, (uint32_t)(4 * bot_count), DCM_NO_OFFSET};
    assert_int_equal(dcm_element_append_fragment(ds, &e, &f0), 0);
    for (size_t i = 0; i < nfrag; i++) {
        struct dcm_fragment f = {(const uint8_t *)frags[i], (uint32_t)strlen(frags[i]),
                                 DCM_NO_OFFSET};
        assert_int_equal(dcm_element_append_fragment(ds, &e, &f), 0);
    }
    assert_non_null(dcm_dataset_put(ds, &e));
    return ds;
}

static void expect_frame(const struct dcm_dataset *ds, const char *ts, uint32_t index,
                         const char *want)
{
    struct tr_buf scratch;
    tr_buf_init(&scratch, 1024);
    const uint8_t *bytes;
    size_t n;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_pixel_frame_encoded(ds, ts, index, &scratch, &bytes, &n, &err))
        fail_msg("frame %u: %s", index + 1, err.message);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(bytes, want, n);
    tr_buf_release(&scratch);
}

static void test_frame_finding(void **state)
{
    (void)state;
    /* Fragments of even length, as written; offsets count 8 bytes of item header each. */
    static const char *const frags[] = {"\xFF\xD8\xFF" "A", "BB", "\xFF\xD8\xFF" "C", "DD",
                                        "\xFF\xD8\xFF" "E", "FF"};
    /* Basic Offset Table: frame k is fragments 2k and 2k+1. */
    static const uint32_t bot[] = {0, 22, 44};
    struct dcm_dataset *ds = encapsulated(3, frags, 6, bot, 3);
    expect_frame(ds, TS_JPEG, 0, "\xFF\xD8\xFF" "ABB");
    expect_frame(ds, TS_JPEG, 1, "\xFF\xD8\xFF" "CDD");
    expect_frame(ds, TS_JPEG, 2, "\xFF\xD8\xFF" "EFF");
    struct tr_buf scratch;
    tr_buf_init(&scratch, 1024);
    const uint8_t *bytes;
    size_t n;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_pixel_frame_encoded(ds, TS_JPEG, 3, &scratch, &bytes, &n, &err),
                     TR_ENOTFOUND);
    dcm_dataset_free(ds);

    /* No table: start markers (JPEG SOI) tell the frames apart. */
    ds = encapsulated(3, frags, 6, NULL, 0);
    expect_frame(ds, TS_JPEG, 1, "\xFF\xD8\xFF" "CDD");
    expect_frame(ds, TS_JPEG, 2, "\xFF\xD8\xFF" "EFF");
    dcm_dataset_free(ds);

    /* A Basic Offset Table whose offsets miss the fragments is ignored (markers used). */
    static const uint32_t wrong[] = {0, 21, 44};
    ds = encapsulated(3, frags, 6, wrong, 3);
    expect_frame(ds, TS_JPEG, 1, "\xFF\xD8\xFF" "CDD");
    dcm_dataset_free(ds);

    /* Extended Offset Table with lengths (which drop a pad byte), BOT empty. */
    ds = encapsulated(3, frags, 6, NULL, 0);
    uint8_t eot[24], eotl[24];
    uint64_t off[] = {0, 22, 44}, lens[] = {5, 6, 6};
    for (int i = 0; i < 3; i++) {
        tr_put_le64(eot + 8 * i, off[i]);
        tr_put_le64(eotl + 8 * i, lens[i]);
    }
    assert_int_equal(dcm_dataset_set_bytes(ds, DCM_TAG_ExtendedOffsetTable, DCM_VR_OV, eot, 24), 0);
    assert_int_equal(
        dcm_dataset_set_bytes(ds, DCM_TAG_ExtendedOffsetTableLengths, DCM_VR_OV, eotl, 24), 0);
    expect_frame(ds, TS_JPEG, 0, "\xFF\xD8\xFF" "AB");
    expect_frame(ds, TS_JPEG, 2, "\xFF\xD8\xFF" "EFF");
    dcm_dataset_free(ds);

    /* One fragment per frame when the counts agree, whatever the contents. */
    static const char *const plain[] = {"xx", "yyyy", "zz"};
    ds = encapsulated(3, plain, 3, NULL, 0);
    expect_frame(ds, TS_RLE, 1, "yyyy");
    dcm_dataset_free(ds);

    /* A single frame in several fragments. */
    ds = encapsulated(1, plain, 3, NULL, 0);
    expect_frame(ds, TS_RLE, 0, "xxyyyyzz");
    dcm_dataset_free(ds);

    /* Two frames in three fragments without table or markers: a clear error. */
    ds = encapsulated(2, plain, 3, NULL, 0);
    tr_error_clear(&err);
    assert_int_equal(dcm_pixel_frame_encoded(ds, TS_RLE, 1, &scratch, &bytes, &n, &err),
                     TR_EFORMAT);
    assert_non_null(strstr(err.message, "frame 2"));
    dcm_dataset_free(ds);
    tr_buf_release(&scratch);
}

static void test_desc_errors(void **state)
{
    (void)state;
    struct dcm_pixel_desc d;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *ds = dcm_dataset_new();
    assert_int_equal(dcm_pixel_desc_read(ds, &d, &err), TR_ENOTFOUND);
    struct shape s = {4, 4, 1, 1, 16, 12, false, "MONOCHROME2"};
    set_module(ds, &s);
    uint8_t px[32] = {0};
    assert_int_equal(dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, px, 32), 0);
    assert_int_equal(dcm_pixel_desc_read(ds, &d, &err), 0);
    assert_int_equal(dcm_pixel_frame_size(&d), 32);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280101, DCM_VR_US, 17), 0);
    tr_error_clear(&err);
    assert_int_equal(dcm_pixel_desc_read(ds, &d, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "BitsStored"));
    assert_int_equal(dcm_dataset_remove(ds, 0x00280010), 0);
    tr_error_clear(&err);
    assert_int_equal(dcm_pixel_desc_read(ds, &d, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "Rows"));
    dcm_dataset_free(ds);
}

/* Native planar configuration 1 comes out interleaved. */
static void test_planar_native(void **state)
{
    (void)state;
    struct shape s = {2, 3, 1, 3, 8, 8, false, "RGB"};
    uint8_t planes[18];
    for (int i = 0; i < 18; i++)
        planes[i] = (uint8_t)i;
    struct dcm_dataset *ds = native_dataset(&s, planes, 18);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280006, DCM_VR_US, 1), 0);
    struct tr_buf out;
    tr_buf_init(&out, 1024);
    struct dcm_pixel_desc od;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_pixel_decode_frame(ds, TS_EXPLICIT, 0, &out, &od, &err), 0);
    static const uint8_t want[] = {0, 6, 12, 1, 7, 13, 2, 8, 14, 3, 9, 15, 4, 10, 16, 5, 11, 17};
    assert_memory_equal(out.data, want, 18);
    tr_buf_release(&out);
    dcm_dataset_free(ds);
}

/* ---- damaged bitstreams --------------------------------------------------------------------- */

static int decode_bytes(dcm_decode_fn fn, const struct dcm_pixel_desc *d, const uint8_t *p,
                        size_t n, struct tr_error *err)
{
    struct tr_buf out;
    tr_buf_init(&out, 1 << 22);
    struct dcm_codec_frame f = {p, n, d, 0, 1000};
    struct dcm_pixel_desc od = *d;
    int rc = fn(&f, &out, &od, err);
    tr_buf_release(&out);
    return rc;
}

static void expect_format_error(dcm_decode_fn fn, const struct dcm_pixel_desc *d,
                                const uint8_t *p, size_t n, const char *words)
{
    struct tr_error err = TR_ERROR_INIT;
    int rc = decode_bytes(fn, d, p, n, &err);
    if (rc != TR_EFORMAT)
        fail_msg("expected a format error about '%s', got %d: %s", words, rc, err.message);
    assert_non_null(strstr(err.message, "frame 1"));
    if (!strstr(err.message, words))
        fail_msg("'%s' does not say '%s'", err.message, words);
}

static void test_rle_malformed(void **state)
{
    (void)state;
    struct dcm_pixel_desc d = {4, 4, 1, 1, 16, 16, 15, false, 0, "MONOCHROME2"};
    uint8_t f[128] = {0};
    /* A valid frame: 2 segments of 16 bytes, each "repeat 16 times". */
    tr_put_le32(f, 2);
    tr_put_le32(f + 4, 64);
    tr_put_le32(f + 8, 66);
    f[64] = (uint8_t)-15, f[65] = 0x12, f[66] = (uint8_t)-15, f[67] = 0x34;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_bytes(dcm_rle_decode, &d, f, 68, &err), 0);

    uint8_t g[128];
    memcpy(g, f, sizeof(g));
    tr_put_le32(g, 0);
    expect_format_error(dcm_rle_decode, &d, g, 68, "segments");
    tr_put_le32(g, 16);
    expect_format_error(dcm_rle_decode, &d, g, 68, "1 to 15");
    tr_put_le32(g, 3);
    expect_format_error(dcm_rle_decode, &d, g, 68, "need 2");
    memcpy(g, f, sizeof(g));
    tr_put_le32(g + 4, 60);
    expect_format_error(dcm_rle_decode, &d, g, 68, "byte 4");
    memcpy(g, f, sizeof(g));
    tr_put_le32(g + 8, 200); /* past the end */
    expect_format_error(dcm_rle_decode, &d, g, 68, "segment 2");
    memcpy(g, f, sizeof(g));
    tr_put_le32(g + 8, 64); /* segment 1 empty: ends early */
    expect_format_error(dcm_rle_decode, &d, g, 68, "ends after 0");
    memcpy(g, f, sizeof(g));
    g[64] = 20; /* literal run of 21 bytes in a 2-byte segment */
    expect_format_error(dcm_rle_decode, &d, g, 68, "literal run");
    memcpy(g, f, sizeof(g));
    g[66] = (uint8_t)-3; /* repeat run without its byte at the very end */
    expect_format_error(dcm_rle_decode, &d, g, 67, "no byte");
    expect_format_error(dcm_rle_decode, &d, f, 40, "header");
    /* Messages carry the file offset when known. */
    tr_error_clear(&err);
    memcpy(g, f, sizeof(g));
    g[64] = 20;
    decode_bytes(dcm_rle_decode, &d, g, 68, &err);
    assert_non_null(strstr(err.message, "(byte 1064 in the file)"));
}

static void test_jpeg_lossless_malformed(void **state)
{
    (void)state;
    struct shape s = {32, 40, 1, 1, 16, 12, false, "MONOCHROME2"};
    size_t len;
    uint8_t *px = make_pixels(&s, &len);
    struct dcm_pixel_desc d = {32, 40, 1, 1, 16, 12, 11, false, 0, "MONOCHROME2"};
    struct tr_buf enc;
    tr_buf_init(&enc, 1 << 20);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_jpeg_lossless_encode_ex(px, len, &d, 1, 0, 0, &enc, &err), 0);
    const uint8_t *j = (const uint8_t *)enc.data;
    assert_int_equal(decode_bytes(dcm_jpeg_lossless_decode, &d, j, enc.len, &err), 0);
    expect_format_error(dcm_jpeg_lossless_decode, &d, j + 2, enc.len - 2, "FFD8");
    /* Cut in the middle of the entropy-coded data. */
    expect_format_error(dcm_jpeg_lossless_decode, &d, j, enc.len / 2, "ends early");
    /* The wrong size for the data set. */
    struct dcm_pixel_desc other = d;
    other.rows = 31;
    expect_format_error(dcm_jpeg_lossless_decode, &other, j, enc.len, "data set says");
    /* A segment length past the end. */
    uint8_t *bad = test_malloc(enc.len);
    memcpy(bad, j, enc.len);
    bad[4] = 0x7F;
    expect_format_error(dcm_jpeg_lossless_decode, &d, bad, enc.len, "length");
    /* Random damage: any answer but a crash (ASan/UBSan watch the reads). */
    for (int round = 0; round < 3000; round++) {
        memcpy(bad, j, enc.len);
        int flips = 1 + (int)(rnd() % 4);
        for (int k = 0; k < flips; k++)
            bad[rnd() % enc.len] ^= (uint8_t)(1u << (rnd() % 8));
        size_t n = rnd() % 4 == 0 ? rnd() % enc.len : enc.len;
        tr_error_clear(&err);
        int rc = decode_bytes(dcm_jpeg_decode, &d, bad, n, &err);
        if (rc)
            assert_true(err.message[0] != '\0');
    }
    test_free(bad);
    tr_buf_release(&enc);
    test_free(px);
}

/* Random damage to RLE, JPEG-LS and JPEG 2000 frames: errors, never crashes. */
static void test_damaged_streams(void **state)
{
    (void)state;
    struct shape s = {16, 16, 1, 3, 8, 8, false, "RGB"};
    size_t len;
    uint8_t *px = make_pixels(&s, &len);
    const char *targets[] = {TS_RLE, TS_JLS, TS_J2K};
    for (size_t t = 0; t < 3; t++) {
        struct dcm_dataset *ds = native_dataset(&s, px, len);
        struct tr_error err = TR_ERROR_INIT;
        assert_int_equal(dcm_pixel_transcode(ds, TS_EXPLICIT, targets[t], false, &err), 0);
        struct dcm_pixel_desc d;
        assert_int_equal(dcm_pixel_desc_read(ds, &d, &err), 0);
        const struct dcm_fragment *f = &dcm_dataset_get(ds, DCM_TAG_PixelData)->value.fragments.fragment[1];
        uint8_t *bad = test_malloc(f->length);
        dcm_decode_fn fn = dcm_codec_find(targets[t])->decode;
        for (int round = 0; round < 400; round++) {
            memcpy(bad, f->bytes, f->length);
            for (int k = 0; k < 3; k++)
                bad[rnd() % f->length] ^= (uint8_t)(1u << (rnd() % 8));
            size_t n = rnd() % 3 == 0 ? rnd() % f->length : f->length;
            tr_error_clear(&err);
            if (decode_bytes(fn, &d, bad, n, &err))
                assert_true(err.message[0] != '\0');
        }
        test_free(bad);
        dcm_dataset_free(ds);
    }
    test_free(px);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rle_round_trip),
        cmocka_unit_test(test_one_bit_frames),
        cmocka_unit_test(test_jpeg_lossless_round_trip),
        cmocka_unit_test(test_library_codecs_round_trip),
        cmocka_unit_test(test_lossy_needs_permission),
        cmocka_unit_test(test_frame_finding),
        cmocka_unit_test(test_desc_errors),
        cmocka_unit_test(test_planar_native),
        cmocka_unit_test(test_rle_malformed),
        cmocka_unit_test(test_jpeg_lossless_malformed),
        cmocka_unit_test(test_damaged_streams),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
