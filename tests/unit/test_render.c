/*
 * test_render.c - rendering: the VOI formulas of PS3.3 at their edges, MONOCHROME1 and
 * Presentation LUT Shape INVERSE, stored bits with junk above the high bit and sign extension,
 * rescale and modality LUTs, VOI LUTs, YCbCr to RGB, palettes (8 and 16 bit, segmented),
 * multi-frame and planar images through the decoder, crop and resize, PNG and JPEG encoding,
 * errors, and allocation failures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <math.h>
#include <spng.h>

#include "common.h"
#include "dcm.h"
#include "render.h"

#define TAG_SamplesPerPixel 0x00280002u
#define TAG_PhotometricInterpretation 0x00280004u
#define TAG_PlanarConfiguration 0x00280006u
#define TAG_NumberOfFrames 0x00280008u
#define TAG_Rows 0x00280010u
#define TAG_Columns 0x00280011u
#define TAG_BitsStored 0x00280101u
#define TAG_HighBit 0x00280102u
#define TAG_WindowCenter 0x00281050u
#define TAG_WindowWidth 0x00281051u
#define TAG_RescaleIntercept 0x00281052u
#define TAG_RescaleSlope 0x00281053u
#define TAG_VOILUTFunction 0x00281056u
#define TAG_RedDescriptor 0x00281101u
#define TAG_RedData 0x00281201u
#define TAG_SegmentedRedData 0x00281221u
#define TAG_ModalityLUTSequence 0x00283000u
#define TAG_LUTDescriptor 0x00283002u
#define TAG_LUTData 0x00283006u
#define TAG_VOILUTSequence 0x00283010u
#define TAG_FrameVOILUTSequence 0x00289132u
#define TAG_PresentationLUTShape 0x20500020u
#define TAG_PerFrameFunctionalGroupsSequence 0x52009230u

/* ---- helpers ------------------------------------------------------------------------------ */

static struct dcm_pixel_desc grey_desc(uint32_t cols, uint32_t rows, unsigned allocated,
                                       unsigned stored, unsigned high, bool is_signed,
                                       const char *photometric)
{
    struct dcm_pixel_desc d;
    memset(&d, 0, sizeof(d));
    d.rows = rows;
    d.cols = cols;
    d.frames = 1;
    d.samples = 1;
    d.bits_allocated = (uint16_t)allocated;
    d.bits_stored = (uint16_t)stored;
    d.high_bit = (uint16_t)high;
    d.is_signed = is_signed;
    snprintf(d.photometric, sizeof(d.photometric), "%s", photometric);
    return d;
}

/* Render a 16-bit frame of `n` pixels in one row; the bytes go to `out` (n bytes). */
static int render16(const struct dcm_dataset *ds, const struct dcm_pixel_desc *d,
                    const uint16_t *values, size_t n, const struct dcm_render_options *opt,
                    uint8_t *out)
{
    uint8_t frame[256];
    assert_true(n * 2 <= sizeof(frame));
    for (size_t i = 0; i < n; i++)
        tr_put_le16(frame + 2 * i, values[i]);
    struct dcm_image img;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_pixel_desc row = *d;
    row.cols = (uint32_t)n;
    row.rows = 1;
    int rc = dcm_render_frame(ds, &row, frame, n * 2, opt, &img, &err);
    if (rc == 0) {
        assert_int_equal(img.channels, 1);
        assert_int_equal(img.width * img.height, n);
        memcpy(out, img.pixels, n);
        dcm_image_release(&img);
    } else {
        print_message("render: %s\n", err.message);
    }
    return rc;
}

static void window_options(struct dcm_render_options *opt, double c, double w,
                           enum dcm_voi_function f)
{
    dcm_render_options_init(opt);
    opt->voi = DCM_VOI_WINDOW;
    opt->window_center = c;
    opt->window_width = w;
    opt->function = f;
}

/* For 8-bit unsigned samples, no VOI maps each value to itself (v * 256 / 256). */
static void identity_options(struct dcm_render_options *opt)
{
    dcm_render_options_init(opt);
    opt->voi = DCM_VOI_NONE;
}

static void set_us(struct dcm_dataset *ds, uint32_t tag, int64_t v)
{
    assert_int_equal(dcm_dataset_set_int(ds, tag, DCM_VR_US, v), 0);
}

/* ---- the VOI formulas --------------------------------------------------------------------- */

static void test_linear_formula(void **state)
{
    (void)state;
    /* PS3.3 C.11.2.1.2.1: c 2048, w 4096 selects 0..4095 (the note's example). */
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, 0, 0, 255) == 0);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, 4095, 0, 255) == 255);
    assert_true(fabs(dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, 1, 0, 255) -
                     ((1 - 2047.5) / 4095 + 0.5) * 255) < 1e-9);
    /* Beyond the borders: ymin and ymax. */
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, -5000, 0, 255) == 0);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, 70000, 0, 255) == 255);
    /* Width 1: a step between c - 1 and c (x <= c - 0.5 is ymin, x > c - 0.5 is ymax). */
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 100, 1, 99, 0, 255) == 0);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 100, 1, 99.5, 0, 255) == 0);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 100, 1, 99.6, 0, 255) == 255);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 100, 1, 100, 0, 255) == 255);
    /* A CT soft tissue window, the middle value. */
    assert_true(fabs(dcm_voi_window(DCM_VOI_LINEAR, 40, 400, 40, 0, 255) -
                     (0.5 / 399 + 0.5) * 255) < 1e-9);
    /* Swapped output range (what MONOCHROME1 is). */
    assert_true(dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, 0, 255, 0) == 255);
}

static void test_linear_exact_and_sigmoid_formulas(void **state)
{
    (void)state;
    /* PS3.3 C.11.2.1.3.2: x <= c - w/2 is ymin, x > c + w/2 is ymax, else linear in w. */
    assert_true(dcm_voi_window(DCM_VOI_LINEAR_EXACT, 0, 100, -50, 0, 255) == 0);
    assert_true(fabs(dcm_voi_window(DCM_VOI_LINEAR_EXACT, 0, 100, -49, 0, 255) - 2.55) < 1e-9);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR_EXACT, 0, 100, 0, 0, 255) == 127.5);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR_EXACT, 0, 100, 50, 0, 255) == 255);
    assert_true(dcm_voi_window(DCM_VOI_LINEAR_EXACT, 0, 100, 51, 0, 255) == 255);
    /* LINEAR_EXACT allows widths below 1. */
    assert_true(dcm_voi_window(DCM_VOI_LINEAR_EXACT, 10, 0.5, 10, 0, 255) == 127.5);
    /* PS3.3 C.11.2.1.3.1: the centre maps to the middle, symmetric around it. */
    assert_true(dcm_voi_window(DCM_VOI_SIGMOID, 100, 50, 100, 0, 255) == 127.5);
    double lo = dcm_voi_window(DCM_VOI_SIGMOID, 100, 50, 75, 0, 255);
    double hi = dcm_voi_window(DCM_VOI_SIGMOID, 100, 50, 125, 0, 255);
    assert_true(fabs(lo + hi - 255) < 1e-9);
    assert_true(fabs(hi - 255 / (1 + exp(-2.0))) < 1e-9);
}

static void test_window_through_render(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_pixel_desc d = grey_desc(6, 1, 16, 12, 11, false, "MONOCHROME2");
    struct dcm_render_options opt;
    uint8_t out[6];
    /* The result is truncated (as dcm2pnm), not rounded: 127.82 gives 127. */
    const uint16_t v[6] = {0, 1, 2047, 2048, 4094, 4095};
    window_options(&opt, 2048, 4096, DCM_VOI_LINEAR);
    assert_int_equal(render16(ds, &d, v, 6, &opt, out), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(out[i], (uint8_t)dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, v[i], 0, 255));
    assert_int_equal(out[0], 0);
    assert_int_equal(out[2], 127);
    assert_int_equal(out[3], 127); /* ((2048 - 2047.5) / 4095 + 0.5) * 255 = 127.53 */
    assert_int_equal(out[5], 255);
    /* Width 1. */
    const uint16_t step[3] = {99, 100, 101};
    window_options(&opt, 100, 1, DCM_VOI_LINEAR);
    assert_int_equal(render16(ds, &d, step, 3, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 255);
    assert_int_equal(out[2], 255);
    /* A LINEAR window narrower than 1 is refused; LINEAR_EXACT takes it. */
    window_options(&opt, 100, 0.5, DCM_VOI_LINEAR);
    assert_int_equal(render16(ds, &d, step, 3, &opt, out), TR_EINVAL);
    window_options(&opt, 100, 0.5, DCM_VOI_LINEAR_EXACT);
    assert_int_equal(render16(ds, &d, step, 3, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 127);
    assert_int_equal(out[2], 255);
    /* The image's window and its VOI LUT Function. */
    dcm_render_options_init(&opt);
    assert_int_equal(dcm_dataset_set_float(ds, TAG_WindowCenter, DCM_VR_DS, 100), 0);
    assert_int_equal(dcm_dataset_set_float(ds, TAG_WindowWidth, DCM_VR_DS, 50), 0);
    assert_int_equal(dcm_dataset_set_string(ds, TAG_VOILUTFunction, DCM_VR_CS, "SIGMOID"), 0);
    assert_int_equal(render16(ds, &d, step, 3, &opt, out), 0);
    assert_int_equal(out[1], 127);
    assert_int_equal(out[0], (uint8_t)(255 / (1 + exp(4.0 / 50))));
    dcm_dataset_free(ds);
}

static void test_min_max(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_pixel_desc d = grey_desc(3, 1, 16, 16, 15, false, "MONOCHROME2");
    uint8_t out[3];
    /* No window, no VOI LUT: min-max, center (min + max + 1) / 2, width max - min + 1. */
    const uint16_t v[3] = {100, 200, 300};
    assert_int_equal(render16(ds, &d, v, 3, NULL, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 127);
    assert_int_equal(out[2], 255);
    /* Four levels spread over the whole output: width 4 (not 3), center 2. */
    const uint16_t four[4] = {0, 1, 2, 3};
    uint8_t out4[4];
    assert_int_equal(render16(ds, &d, four, 4, NULL, out4), 0);
    assert_int_equal(out4[0], 0);
    assert_int_equal(out4[1], 85);
    assert_int_equal(out4[2], 170);
    assert_int_equal(out4[3], 255);
    /* A constant frame does not divide by zero: width 1, everything at the step's bottom. */
    const uint16_t flat[3] = {7, 7, 7};
    assert_int_equal(render16(ds, &d, flat, 3, NULL, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[2], 0);
    /* DCM_VOI_NONE: the whole 16-bit range. */
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    opt.voi = DCM_VOI_NONE;
    const uint16_t full[3] = {0, 32768, 65535};
    assert_int_equal(render16(ds, &d, full, 3, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 128);
    assert_int_equal(out[2], 255);
    dcm_dataset_free(ds);
}

/* ---- presentation --------------------------------------------------------------------------- */

static void test_monochrome1_and_inverse(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    const uint16_t v[4] = {0, 1000, 2000, 4095};
    uint8_t mono2[4], mono1[4], inverse[4], both[4];
    struct dcm_render_options opt;
    window_options(&opt, 2048, 4096, DCM_VOI_LINEAR);
    struct dcm_pixel_desc d2 = grey_desc(4, 1, 16, 12, 11, false, "MONOCHROME2");
    struct dcm_pixel_desc d1 = grey_desc(4, 1, 16, 12, 11, false, "MONOCHROME1");
    assert_int_equal(render16(ds, &d2, v, 4, &opt, mono2), 0);
    assert_int_equal(render16(ds, &d1, v, 4, &opt, mono1), 0);
    /* MONOCHROME1: low values white; the window is mirrored before truncation. */
    assert_int_equal(mono2[0], 0);
    assert_int_equal(mono1[0], 255);
    assert_int_equal(mono1[3], 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(mono1[i],
                         (uint8_t)(255 - dcm_voi_window(DCM_VOI_LINEAR, 2048, 4096, v[i], 0, 255)));
    /* Presentation LUT Shape INVERSE does the same to MONOCHROME2 ... */
    assert_int_equal(dcm_dataset_set_string(ds, TAG_PresentationLUTShape, DCM_VR_CS, "INVERSE"), 0);
    assert_int_equal(render16(ds, &d2, v, 4, &opt, inverse), 0);
    assert_memory_equal(inverse, mono1, 4);
    /* ... and on MONOCHROME1 it is the one inversion, not a second (PS3.3 C.8.11.7: DX
     * images say INVERSE with MONOCHROME1). */
    assert_int_equal(render16(ds, &d1, v, 4, &opt, both), 0);
    assert_memory_equal(both, mono1, 4);
    /* IDENTITY changes nothing on MONOCHROME2, and on MONOCHROME1 it says the values are
     * already presentation values: no inversion (PS3.4 N.2; dcm2pnm agrees). */
    assert_int_equal(dcm_dataset_set_string(ds, TAG_PresentationLUTShape, DCM_VR_CS, "IDENTITY"), 0);
    assert_int_equal(render16(ds, &d2, v, 4, &opt, inverse), 0);
    assert_memory_equal(inverse, mono2, 4);
    assert_int_equal(render16(ds, &d1, v, 4, &opt, inverse), 0);
    assert_memory_equal(inverse, mono2, 4);
    dcm_dataset_free(ds);
}

/* ---- stored values ------------------------------------------------------------------------ */

static void test_signed_12_in_16(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    opt.voi = DCM_VOI_NONE; /* -2048..2047 onto 0..255 */
    uint8_t out[5];
    /* High bit 11: bits 12-15 hold junk that must be masked off before sign extension. */
    struct dcm_pixel_desc d = grey_desc(5, 1, 16, 12, 11, true, "MONOCHROME2");
    const uint16_t low[5] = {0x0800 | 0xA000, 0x0FFF | 0x5000, 0x0000 | 0xF000, 0x07FF | 0x3000,
                             0x0001};
    assert_int_equal(render16(ds, &d, low, 5, &opt, out), 0);
    assert_int_equal(out[0], 0);   /* -2048 */
    assert_int_equal(out[1], 127); /* -1: (2047 * 256 / 4096) = 127.94 */
    assert_int_equal(out[2], 128); /* 0 */
    assert_int_equal(out[3], 255); /* 2047 */
    assert_int_equal(out[4], 128); /* 1: 128.06 */
    /* The same values stored in bits 4-15 (high bit 15), junk in bits 0-3. */
    struct dcm_pixel_desc up = grey_desc(5, 1, 16, 12, 15, true, "MONOCHROME2");
    uint16_t high[5];
    for (int i = 0; i < 5; i++)
        high[i] = (uint16_t)(((low[i] & 0x0FFF) << 4) | (i * 3 & 0xF));
    uint8_t out2[5];
    assert_int_equal(render16(ds, &up, high, 5, &opt, out2), 0);
    assert_memory_equal(out, out2, 5);
    /* Unsigned, the same bits mean other values. */
    struct dcm_pixel_desc u = grey_desc(5, 1, 16, 12, 11, false, "MONOCHROME2");
    assert_int_equal(render16(ds, &u, low, 5, &opt, out), 0);
    assert_int_equal(out[0], 128); /* 2048 */
    assert_int_equal(out[1], 255); /* 4095 */
    assert_int_equal(out[2], 0);
    dcm_dataset_free(ds);
}

/* ---- modality ----------------------------------------------------------------------------- */

static void test_rescale(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_pixel_desc d = grey_desc(3, 1, 16, 16, 15, false, "MONOCHROME2");
    struct dcm_render_options opt;
    window_options(&opt, 0, 2001, DCM_VOI_LINEAR);
    const uint16_t v[3] = {0, 500, 1000};
    uint8_t out[3];
    /* Without rescale, 0..1000 are all above the window's middle. */
    assert_int_equal(render16(ds, &d, v, 3, &opt, out), 0);
    assert_int_equal(out[0], 127);
    assert_int_equal(out[2], 255);
    /* Slope 2, intercept -1000: -1000, 0, 1000. */
    assert_int_equal(dcm_dataset_set_float(ds, TAG_RescaleSlope, DCM_VR_DS, 2), 0);
    assert_int_equal(dcm_dataset_set_float(ds, TAG_RescaleIntercept, DCM_VR_DS, -1000), 0);
    assert_int_equal(render16(ds, &d, v, 3, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 127); /* ((0 + 0.5) / 2000 + 0.5) * 255 = 127.56 */
    assert_int_equal(out[2], 255);
    /* A fractional slope is kept exact (dcm2pnm truncates to integers first). */
    assert_int_equal(dcm_dataset_set_float(ds, TAG_RescaleSlope, DCM_VR_DS, 0.5), 0);
    assert_int_equal(dcm_dataset_set_float(ds, TAG_RescaleIntercept, DCM_VR_DS, 0.25), 0);
    window_options(&opt, 250.75, 2, DCM_VOI_LINEAR_EXACT); /* 249.75 .. 251.75 */
    const uint16_t f[3] = {499, 500, 502};                /* 249.75, 250.25, 251.25 */
    assert_int_equal(render16(ds, &d, f, 3, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], (uint8_t)((-0.5 / 2 + 0.5) * 255));
    assert_int_equal(out[2], (uint8_t)((0.5 / 2 + 0.5) * 255));
    dcm_dataset_free(ds);
}

static void test_modality_lut(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    /* Rescale present too: the Modality LUT Sequence wins. */
    assert_int_equal(dcm_dataset_set_float(ds, TAG_RescaleSlope, DCM_VR_DS, 100), 0);
    struct dcm_dataset *item = dcm_dataset_add_item(ds, TAG_ModalityLUTSequence, &err);
    assert_non_null(item);
    const int64_t desc[3] = {4, 10, 16};
    assert_int_equal(dcm_dataset_set_ints(item, TAG_LUTDescriptor, DCM_VR_US, desc, 3), 0);
    uint8_t data[8];
    const uint16_t entries[4] = {0, 1000, 2000, 3000};
    for (int i = 0; i < 4; i++)
        tr_put_le16(data + 2 * i, entries[i]);
    assert_int_equal(dcm_dataset_set_bytes(item, TAG_LUTData, DCM_VR_OW, data, 8), 0);
    struct dcm_pixel_desc d = grey_desc(5, 1, 16, 16, 15, false, "MONOCHROME2");
    struct dcm_render_options opt;
    window_options(&opt, 1500, 3001, DCM_VOI_LINEAR);
    /* Below the first value mapped: the first entry; past the last: the last. */
    const uint16_t v[5] = {9, 10, 11, 13, 20};
    uint8_t out[5];
    assert_int_equal(render16(ds, &d, v, 5, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 85); /* 1000: ((1000 - 1499.5) / 3000 + 0.5) * 255 = 85.04 */
    assert_int_equal(out[3], 255);
    assert_int_equal(out[4], 255);
    /* Signed input and an SS descriptor: the first value mapped is negative. */
    const int64_t sdesc[3] = {4, -2, 16};
    assert_int_equal(dcm_dataset_set_ints(item, TAG_LUTDescriptor, DCM_VR_SS, sdesc, 3), 0);
    struct dcm_pixel_desc s = grey_desc(2, 1, 16, 16, 15, true, "MONOCHROME2");
    const uint16_t sv[2] = {(uint16_t)-2, 1}; /* entries 0 and 3 */
    assert_int_equal(render16(ds, &s, sv, 2, &opt, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 255);
    dcm_dataset_free(ds);
}

static void test_voi_lut(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *item = dcm_dataset_add_item(ds, TAG_VOILUTSequence, &err);
    assert_non_null(item);
    const int64_t desc[3] = {3, 100, 8};
    assert_int_equal(dcm_dataset_set_ints(item, TAG_LUTDescriptor, DCM_VR_US, desc, 3), 0);
    /* 8-bit entries, one per 16-bit word. */
    uint8_t data[6] = {0, 0, 128, 0, 255, 0};
    assert_int_equal(dcm_dataset_set_bytes(item, TAG_LUTData, DCM_VR_OW, data, 6), 0);
    struct dcm_pixel_desc d = grey_desc(4, 1, 16, 16, 15, false, "MONOCHROME2");
    const uint16_t v[4] = {99, 100, 101, 102};
    uint8_t out[4];
    /* Default: no window in the image, so its VOI LUT (as dcm2pnm +Wl 1). */
    assert_int_equal(render16(ds, &d, v, 4, NULL, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 128);
    assert_int_equal(out[3], 255);
    /* A window in the image comes first. */
    assert_int_equal(dcm_dataset_set_float(ds, TAG_WindowCenter, DCM_VR_DS, 100.5), 0);
    assert_int_equal(dcm_dataset_set_float(ds, TAG_WindowWidth, DCM_VR_DS, 1), 0);
    assert_int_equal(render16(ds, &d, v, 4, NULL, out), 0);
    assert_int_equal(out[0], 0);
    assert_int_equal(out[1], 0);
    assert_int_equal(out[2], 255);
    /* Asking for the LUT. */
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    opt.voi = DCM_VOI_IMAGE_LUT;
    assert_int_equal(render16(ds, &d, v, 4, &opt, out), 0);
    assert_int_equal(out[2], 128);
    opt.voi_index = 1;
    assert_int_equal(render16(ds, &d, v, 4, &opt, out), TR_ENOTFOUND);
    dcm_dataset_free(ds);
}

static void test_functional_groups(void **state)
{
    (void)state;
    /* An enhanced image: frame 2's window in its per-frame Frame VOI LUT group. */
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    for (int f = 0; f < 2; f++) {
        struct dcm_dataset *frame = dcm_dataset_add_item(ds, TAG_PerFrameFunctionalGroupsSequence, &err);
        assert_non_null(frame);
        struct dcm_dataset *voi = dcm_dataset_add_item(frame, TAG_FrameVOILUTSequence, &err);
        assert_non_null(voi);
        assert_int_equal(dcm_dataset_set_float(voi, TAG_WindowCenter, DCM_VR_DS, f ? 1000 : 10), 0);
        assert_int_equal(dcm_dataset_set_float(voi, TAG_WindowWidth, DCM_VR_DS, 2), 0);
    }
    struct dcm_pixel_desc d = grey_desc(1, 1, 16, 16, 15, false, "MONOCHROME2");
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    const uint16_t v[1] = {500};
    uint8_t out[1];
    assert_int_equal(render16(ds, &d, v, 1, &opt, out), 0);
    assert_int_equal(out[0], 255); /* above frame 1's window at 10 */
    opt.frame = 1;
    assert_int_equal(render16(ds, &d, v, 1, &opt, out), 0);
    assert_int_equal(out[0], 0); /* below frame 2's window at 1000 */
    dcm_dataset_free(ds);
}

/* ---- colour ------------------------------------------------------------------------------- */

static void test_ybr_known_values(void **state)
{
    (void)state;
    uint8_t rgb[3];
    /* Grey stays grey; black and white stay. */
    dcm_ybr_full_to_rgb(128, 128, 128, rgb);
    assert_int_equal(rgb[0], 128);
    assert_int_equal(rgb[1], 128);
    assert_int_equal(rgb[2], 128);
    dcm_ybr_full_to_rgb(0, 128, 128, rgb);
    assert_int_equal(rgb[0] | rgb[1] | rgb[2], 0);
    dcm_ybr_full_to_rgb(255, 128, 128, rgb);
    assert_int_equal(rgb[0] & rgb[1] & rgb[2], 255);
    /* Pure red, green and blue through PS3.3's forward equations and back. */
    const uint8_t colours[3][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    for (int i = 0; i < 3; i++) {
        double r = colours[i][0], g = colours[i][1], b = colours[i][2];
        double y = .2990 * r + .5870 * g + .1140 * b;
        double cb = -.1687 * r - .3313 * g + .5000 * b + 128;
        double cr = .5000 * r - .4187 * g - .0813 * b + 128;
        uint8_t yy = (uint8_t)lround(y), bb = (uint8_t)lround(fmin(cb, 255)),
                rr = (uint8_t)lround(fmin(cr, 255));
        dcm_ybr_full_to_rgb(yy, bb, rr, rgb);
        for (int k = 0; k < 3; k++)
            assert_true(abs((int)rgb[k] - (int)colours[i][k]) <= 2);
    }
    /* Known values: Y 76, CB 85, CR 255 (red): R = 76 + 1.402 * 127 = 254.05. */
    dcm_ybr_full_to_rgb(76, 85, 255, rgb);
    assert_int_equal(rgb[0], 254);
    assert_int_equal(rgb[1], 0);
    assert_int_equal(rgb[2], 0);
    /* Y 50, CR 234: R = 50 + 1.402 * 106 = 198.61 (a coefficient of 1.4 would give 198). */
    dcm_ybr_full_to_rgb(50, 128, 234, rgb);
    assert_int_equal(rgb[0], 199);
    assert_int_equal(rgb[1], 0); /* 50 - 0.714136 * 106 < 0 */
    assert_int_equal(rgb[2], 50);
    /* Y 128, CB 28: B = 128 - 1.772 * 100 < 0; G = 128 + 34.41 = 162.41. */
    dcm_ybr_full_to_rgb(128, 28, 128, rgb);
    assert_int_equal(rgb[0], 128);
    assert_int_equal(rgb[1], 162);
    assert_int_equal(rgb[2], 0);
    /* Y 100, CB 150, CR 90: R = 100 - 53.276 = 46.72, G = 100 - 7.571 + 27.137 = 119.57,
     * B = 100 + 38.984 = 138.98. */
    dcm_ybr_full_to_rgb(100, 150, 90, rgb);
    assert_int_equal(rgb[0], 47);
    assert_int_equal(rgb[1], 120);
    assert_int_equal(rgb[2], 139);
}

static void render_colour(const char *photometric, const uint8_t *frame, size_t len, uint32_t cols,
                          uint16_t planar, uint8_t *out)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_pixel_desc d = grey_desc(cols, 1, 8, 8, 7, false, photometric);
    d.samples = 3;
    d.planar = planar;
    struct dcm_image img;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_render_frame(ds, &d, frame, len, NULL, &img, &err), 0);
    assert_int_equal(img.channels, 3);
    assert_int_equal(img.width, cols);
    memcpy(out, img.pixels, (size_t)cols * 3);
    dcm_image_release(&img);
    dcm_dataset_free(ds);
}

static void test_colour_models(void **state)
{
    (void)state;
    uint8_t out[6], expect[6];
    /* RGB interleaved and planar. */
    const uint8_t rgb[6] = {10, 20, 30, 40, 50, 60};
    render_colour("RGB", rgb, 6, 2, 0, out);
    assert_memory_equal(out, rgb, 6);
    const uint8_t planes[6] = {10, 40, 20, 50, 30, 60};
    render_colour("RGB", planes, 6, 2, 1, out);
    assert_memory_equal(out, rgb, 6);
    /* YBR_FULL, and YBR_FULL_422 still subsampled: Y0 Y1 CB CR shared by the pair. */
    const uint8_t ybr[6] = {100, 150, 90, 60, 150, 90};
    render_colour("YBR_FULL", ybr, 6, 2, 0, expect);
    dcm_ybr_full_to_rgb(100, 150, 90, out);
    assert_memory_equal(out, expect, 3);
    const uint8_t ybr422[4] = {100, 60, 150, 90};
    render_colour("YBR_FULL_422", ybr422, 4, 2, 0, out);
    assert_memory_equal(out, expect, 6);
    /* YBR_FULL_422 already expanded by the decoder (3 samples per pixel). */
    render_colour("YBR_FULL_422", ybr, 6, 2, 0, out);
    assert_memory_equal(out, expect, 6);
}

static void test_palette(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    /* 16-bit entries, 4 of them, the first mapped value 2. */
    const uint16_t tables[3][4] = {{0x0000, 0x4000, 0x8000, 0xFFFF},
                                   {0xFFFF, 0x8000, 0x4000, 0x0000},
                                   {0x1234, 0x1234, 0x1234, 0x1234}};
    for (unsigned k = 0; k < 3; k++) {
        const int64_t desc[3] = {4, 2, 16};
        assert_int_equal(dcm_dataset_set_ints(ds, TAG_RedDescriptor + k, DCM_VR_US, desc, 3), 0);
        uint8_t data[8];
        for (int i = 0; i < 4; i++)
            tr_put_le16(data + 2 * i, tables[k][i]);
        assert_int_equal(dcm_dataset_set_bytes(ds, TAG_RedData + k, DCM_VR_OW, data, 8), 0);
    }
    struct dcm_pixel_desc d = grey_desc(4, 1, 8, 8, 7, false, "PALETTE COLOR");
    const uint8_t frame[4] = {0, 3, 5, 200};
    struct dcm_image img;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_render_frame(ds, &d, frame, 4, NULL, &img, &err), 0);
    assert_int_equal(img.channels, 3);
    const uint8_t expect[12] = {0x00, 0xFF, 0x12, 0x40, 0x80, 0x12,
                                0xFF, 0x00, 0x12, 0xFF, 0x00, 0x12};
    assert_memory_equal(img.pixels, expect, 12);
    dcm_image_release(&img);

    /* 8-bit entries packed two to a word (PS3.3 C.7.6.3.1.6). */
    for (unsigned k = 0; k < 3; k++) {
        const int64_t desc[3] = {4, 0, 8};
        assert_int_equal(dcm_dataset_set_ints(ds, TAG_RedDescriptor + k, DCM_VR_US, desc, 3), 0);
        const uint8_t data[4] = {(uint8_t)(k * 10), 50, 100, 250};
        assert_int_equal(dcm_dataset_set_bytes(ds, TAG_RedData + k, DCM_VR_OW, data, 4), 0);
    }
    const uint8_t f2[2] = {1, 3};
    d.cols = 2;
    assert_int_equal(dcm_render_frame(ds, &d, f2, 2, NULL, &img, &err), 0);
    const uint8_t e2[6] = {50, 50, 50, 250, 250, 250};
    assert_memory_equal(img.pixels, e2, 6);
    dcm_image_release(&img);

    /* Segmented (PS3.3 C.7.9.2): discrete 10, 20; linear to 40 over 2; indirect copy of
     * the first segment. */
    for (unsigned k = 0; k < 3; k++) {
        const int64_t desc[3] = {7, 0, 16};
        assert_int_equal(dcm_dataset_set_ints(ds, TAG_RedDescriptor + k, DCM_VR_US, desc, 3), 0);
        assert_int_equal(dcm_dataset_remove(ds, TAG_RedData + k), 0);
        const uint16_t seg[] = {0, 2, 0x0A00, 0x1400, 1, 2, 0x2800, 2, 1, 0, 0};
        uint8_t data[sizeof(seg)];
        for (size_t i = 0; i < TR_ARRAY_SIZE(seg); i++)
            tr_put_le16(data + 2 * i, seg[i]);
        assert_int_equal(
            dcm_dataset_set_bytes(ds, TAG_SegmentedRedData + k, DCM_VR_OW, data, sizeof(data)), 0);
    }
    const uint8_t f3[7] = {0, 1, 2, 3, 4, 5, 6};
    d.cols = 7;
    assert_int_equal(dcm_render_frame(ds, &d, f3, 7, NULL, &img, &err), 0);
    const uint8_t reds[7] = {0x0A, 0x14, 0x1E, 0x28, 0x0A, 0x14, 0x14};
    for (int i = 0; i < 7; i++)
        assert_int_equal(img.pixels[3 * i], reds[i]);
    dcm_image_release(&img);
    dcm_dataset_free(ds);
}

/* ---- resize and crop ---------------------------------------------------------------------- */

static void test_viewport_constant(void **state)
{
    (void)state;
    /* A constant image stays constant when shrunk, by any ratio, and when grown. */
    const struct {
        uint32_t w, h, vw, vh, ow, oh;
        unsigned ch;
    } cases[] = {
        {512, 512, 128, 128, 128, 128, 1}, {37, 23, 10, 10, 10, 6, 3},
        {7, 7, 3, 3, 3, 3, 1},             {1000, 3, 64, 0, 64, 1, 3},
        {2, 2, 5, 5, 5, 5, 3},
    };
    for (size_t c = 0; c < TR_ARRAY_SIZE(cases); c++) {
        struct dcm_dataset *ds = dcm_dataset_new();
        struct dcm_pixel_desc d = grey_desc(cases[c].w, cases[c].h, 8, 8, 7, false,
                                            cases[c].ch == 3 ? "RGB" : "MONOCHROME2");
        d.samples = (uint16_t)cases[c].ch;
        size_t n = (size_t)cases[c].w * cases[c].h * cases[c].ch;
        uint8_t *frame = tr_malloc(n);
        assert_non_null(frame);
        for (size_t i = 0; i < n; i++)
            frame[i] = cases[c].ch == 3 ? (uint8_t)(99 + 51 * (i % 3)) : 99;
        struct dcm_render_options opt;
        identity_options(&opt);
        opt.width = cases[c].vw;
        opt.height = cases[c].vh;
        struct dcm_image img;
        struct tr_error err = TR_ERROR_INIT;
        assert_int_equal(dcm_render_frame(ds, &d, frame, n, &opt, &img, &err), 0);
        assert_int_equal(img.width, cases[c].ow);
        assert_int_equal(img.height, cases[c].oh);
        uint8_t first = img.pixels[0];
        for (size_t i = 0; i < (size_t)img.width * img.height * img.channels; i++)
            assert_int_equal(img.pixels[i],
                             cases[c].ch == 3 ? img.pixels[i % 3] : first);
        if (cases[c].ch == 3) {
            assert_int_equal(img.pixels[0], 99);
            assert_int_equal(img.pixels[1], 150);
            assert_int_equal(img.pixels[2], 201);
        }
        dcm_image_release(&img);
        tr_free(frame);
        dcm_dataset_free(ds);
    }
}

static void test_area_average(void **state)
{
    (void)state;
    /* 4 x 2 stripes shrunk to 2 x 1: each output pixel is the mean of its 2 x 2 block; a
     * nearest-neighbour scaler would give 0 or 255. */
    const uint8_t px[8] = {0, 255, 0, 255, 0, 255, 100, 100};
    struct dcm_image in = {4, 2, 1, (uint8_t *)px};
    struct dcm_image out;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_image_resize(&in, 2, 1, &out, &err), 0);
    assert_int_equal(out.pixels[0], 128); /* 127.5 rounded */
    assert_int_equal(out.pixels[1], 114); /* (0 + 255 + 100 + 100) / 4 = 113.75 */
    dcm_image_release(&out);
    /* 3 -> 2: thirds weigh as they overlap. */
    const uint8_t row[3] = {0, 90, 180};
    struct dcm_image in3 = {3, 1, 1, (uint8_t *)row};
    assert_int_equal(dcm_image_resize(&in3, 2, 1, &out, &err), 0);
    assert_int_equal(out.pixels[0], 30);  /* (0 * 1 + 90 * 0.5) / 1.5 */
    assert_int_equal(out.pixels[1], 150); /* (90 * 0.5 + 180) / 1.5 */
    dcm_image_release(&out);
}

static void test_crop(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_pixel_desc d = grey_desc(4, 4, 8, 8, 7, false, "MONOCHROME2");
    uint8_t frame[16];
    for (int i = 0; i < 16; i++)
        frame[i] = (uint8_t)(i * 16);
    struct dcm_render_options opt;
    identity_options(&opt);
    opt.crop_x = 1;
    opt.crop_y = 2;
    opt.crop_width = 2;
    opt.crop_height = 2;
    struct dcm_image img;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_render_frame(ds, &d, frame, 16, &opt, &img, &err), 0);
    assert_int_equal(img.width, 2);
    assert_int_equal(img.height, 2);
    assert_int_equal(img.pixels[0], 9 * 16);
    assert_int_equal(img.pixels[1], 10 * 16);
    assert_int_equal(img.pixels[2], 13 * 16);
    assert_int_equal(img.pixels[3], 14 * 16);
    dcm_image_release(&img);
    opt.crop_x = 3;
    assert_int_equal(dcm_render_frame(ds, &d, frame, 16, &opt, &img, &err), TR_EINVAL);
    dcm_dataset_free(ds);
}

/* ---- through the decoder, and encoding ------------------------------------------------------ */

static struct dcm_dataset *native_image(uint32_t cols, uint32_t rows, unsigned samples,
                                        unsigned frames, const char *photometric,
                                        const uint8_t *pixels, size_t len)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    set_us(ds, TAG_SamplesPerPixel, samples);
    assert_int_equal(dcm_dataset_set_string(ds, TAG_PhotometricInterpretation, DCM_VR_CS,
                                            photometric), 0);
    if (samples == 3)
        set_us(ds, TAG_PlanarConfiguration, 0);
    if (frames > 1)
        assert_int_equal(dcm_dataset_set_int(ds, TAG_NumberOfFrames, DCM_VR_IS, frames), 0);
    set_us(ds, TAG_Rows, rows);
    set_us(ds, TAG_Columns, cols);
    set_us(ds, DCM_TAG_BitsAllocated, 8);
    set_us(ds, TAG_BitsStored, 8);
    set_us(ds, TAG_HighBit, 7);
    set_us(ds, DCM_TAG_PixelRepresentation, 0);
    assert_int_equal(dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OB, pixels, len), 0);
    return ds;
}

static void test_multiframe_and_planar(void **state)
{
    (void)state;
    /* Three 2 x 1 frames: frame k holds k*50 and k*50 + 100. */
    uint8_t pixels[6];
    for (int k = 0; k < 3; k++) {
        pixels[2 * k] = (uint8_t)(k * 50);
        pixels[2 * k + 1] = (uint8_t)(k * 50 + 100);
    }
    struct dcm_dataset *ds = native_image(2, 1, 1, 3, "MONOCHROME2", pixels, 6);
    struct dcm_render_options opt;
    identity_options(&opt);
    struct dcm_image img;
    struct tr_error err = TR_ERROR_INIT;
    for (uint32_t k = 0; k < 3; k++) {
        opt.frame = k;
        assert_int_equal(dcm_render_image(ds, DCM_UID_ExplicitVRLittleEndian, &opt, &img, &err), 0);
        assert_int_equal(img.pixels[0], k * 50);
        assert_int_equal(img.pixels[1], k * 50 + 100);
        dcm_image_release(&img);
    }
    opt.frame = 3;
    assert_int_equal(dcm_render_image(ds, DCM_UID_ExplicitVRLittleEndian, &opt, &img, &err),
                     TR_EINVAL);
    assert_non_null(strstr(err.message, "frame 4"));
    dcm_dataset_free(ds);

    /* Planar configuration 1 in the file: the decoder interleaves it. */
    const uint8_t planes[6] = {10, 40, 20, 50, 30, 60};
    ds = native_image(2, 1, 3, 1, "RGB", planes, 6);
    set_us(ds, TAG_PlanarConfiguration, 1);
    assert_int_equal(dcm_render_image(ds, DCM_UID_ExplicitVRLittleEndian, NULL, &img, &err), 0);
    const uint8_t rgb[6] = {10, 20, 30, 40, 50, 60};
    assert_memory_equal(img.pixels, rgb, 6);
    dcm_image_release(&img);
    dcm_dataset_free(ds);
}

static void test_png_and_jpeg(void **state)
{
    (void)state;
    uint8_t pixels[64 * 48 * 3];
    for (size_t i = 0; i < sizeof(pixels); i++)
        pixels[i] = (uint8_t)(i * 7 + i / 192);
    struct dcm_dataset *ds = native_image(64, 48, 3, 1, "RGB", pixels, sizeof(pixels));
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 24);
    struct tr_sink sink = tr_sink_buf(&out);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_render(ds, DCM_UID_ExplicitVRLittleEndian, &opt, &sink, &err), 0);
    /* PNG, decoded again: the same pixels (lossless). */
    assert_memory_equal(out.data, "\x89PNG\r\n\x1a\n", 8);
    spng_ctx *ctx = spng_ctx_new(0);
    assert_non_null(ctx);
    assert_int_equal(spng_set_png_buffer(ctx, out.data, out.len), 0);
    struct spng_ihdr ihdr;
    assert_int_equal(spng_get_ihdr(ctx, &ihdr), 0);
    assert_int_equal(ihdr.width, 64);
    assert_int_equal(ihdr.height, 48);
    assert_int_equal(ihdr.color_type, SPNG_COLOR_TYPE_TRUECOLOR);
    assert_int_equal(ihdr.bit_depth, 8);
    static uint8_t decoded[64 * 48 * 3];
    assert_int_equal(spng_decode_image(ctx, decoded, sizeof(decoded), SPNG_FMT_RGB8, 0), 0);
    assert_memory_equal(decoded, pixels, sizeof(decoded));
    spng_ctx_free(ctx);
    /* JPEG: SOI, a baseline SOF with the size, EOI; a thumbnail's size. */
    tr_buf_reset(&out);
    opt.format = DCM_IMAGE_JPEG;
    opt.quality = 80;
    opt.width = opt.height = 32;
    assert_int_equal(dcm_render(ds, DCM_UID_ExplicitVRLittleEndian, &opt, &sink, &err), 0);
    const uint8_t *j = (const uint8_t *)out.data;
    assert_true(out.len > 100);
    assert_true(j[0] == 0xFF && j[1] == 0xD8);
    assert_true(j[out.len - 2] == 0xFF && j[out.len - 1] == 0xD9);
    bool found = false;
    for (size_t i = 2; i + 9 < out.len && !found; i++) {
        if (j[i] == 0xFF && j[i + 1] == 0xC0) {
            assert_int_equal(tr_be16(j + i + 5), 24); /* 64 x 48 fitted into 32 x 32 */
            assert_int_equal(tr_be16(j + i + 7), 32);
            assert_int_equal(j[i + 9], 3);
            found = true;
        }
    }
    assert_true(found);
    /* A sink that fails: the error is the sink's. */
    struct tr_buf tiny;
    tr_buf_init(&tiny, 10);
    struct tr_sink small = tr_sink_buf(&tiny);
    opt.format = DCM_IMAGE_PNG;
    assert_int_equal(dcm_render(ds, DCM_UID_ExplicitVRLittleEndian, &opt, &small, &err),
                     TR_ELIMIT);
    tr_error_clear(&err);
    tr_buf_reset(&tiny);
    opt.format = DCM_IMAGE_JPEG;
    assert_int_equal(dcm_render(ds, DCM_UID_ExplicitVRLittleEndian, &opt, &small, &err),
                     TR_ELIMIT);
    tr_buf_release(&tiny);
    tr_buf_release(&out);
    dcm_dataset_free(ds);
}

static void test_errors(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_image img;
    struct tr_error err = TR_ERROR_INIT;
    uint8_t frame[16] = {0};
    struct dcm_pixel_desc d = grey_desc(4, 2, 16, 17, 16, false, "MONOCHROME2");
    assert_int_equal(dcm_render_frame(ds, &d, frame, 16, NULL, &img, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "BitsStored"));
    tr_error_clear(&err);
    d = grey_desc(4, 2, 16, 12, 11, false, "MONOCHROME2");
    assert_int_equal(dcm_render_frame(ds, &d, frame, 15, NULL, &img, &err), TR_EFORMAT);
    tr_error_clear(&err);
    d.samples = 3;
    snprintf(d.photometric, sizeof(d.photometric), "CMYK");
    assert_int_equal(dcm_render_frame(ds, &d, frame, 16, NULL, &img, &err), TR_EUNSUPPORTED);
    tr_error_clear(&err);
    d = grey_desc(4, 2, 16, 12, 11, false, "MONOCHROME2");
    struct dcm_render_options opt;
    dcm_render_options_init(&opt);
    opt.voi = DCM_VOI_IMAGE_WINDOW;
    assert_int_equal(dcm_render_frame(ds, &d, frame, 16, &opt, &img, &err), TR_ENOTFOUND);
    tr_error_clear(&err);
    /* Palette without its tables. */
    d = grey_desc(4, 2, 8, 8, 7, false, "PALETTE COLOR");
    assert_int_equal(dcm_render_frame(ds, &d, frame, 8, NULL, &img, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "RedPaletteColorLookupTableDescriptor"));
    /* No pixel data at all. */
    tr_error_clear(&err);
    assert_true(dcm_render_image(ds, DCM_UID_ExplicitVRLittleEndian, NULL, &img, &err) < 0);
    dcm_dataset_free(ds);
}

/* Every allocation of the pipeline and of the encoders (libspng allocates through telerad's
 * wrappers) fails in turn: ENOMEM each time, no leak, then success. Decoding is the pixel
 * module's (test_pixel). */
static void test_allocation_failures(void **state)
{
    (void)state;
    uint8_t pixels[40 * 30 * 2];
    for (size_t i = 0; i < sizeof(pixels); i++)
        pixels[i] = (uint8_t)(i * 13);
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *item = dcm_dataset_add_item(ds, TAG_ModalityLUTSequence, &err);
    assert_non_null(item);
    const int64_t desc[3] = {0, 0, 16}; /* 65536 entries */
    assert_int_equal(dcm_dataset_set_ints(item, TAG_LUTDescriptor, DCM_VR_US, desc, 3), 0);
    static uint8_t lut[65536 * 2];
    for (size_t i = 0; i < 65536; i++)
        tr_put_le16(lut + 2 * i, (uint16_t)(i / 2));
    assert_int_equal(dcm_dataset_set_bytes(item, TAG_LUTData, DCM_VR_OW, lut, sizeof(lut)), 0);
    const struct {
        struct dcm_pixel_desc d;
        enum dcm_image_format format;
    } cases[] = {
        {grey_desc(40, 30, 16, 16, 15, false, "MONOCHROME2"), DCM_IMAGE_PNG},
        {grey_desc(40, 30, 16, 16, 15, false, "MONOCHROME2"), DCM_IMAGE_JPEG},
    };
    for (size_t c = 0; c < TR_ARRAY_SIZE(cases); c++) {
        struct dcm_render_options opt;
        dcm_render_options_init(&opt);
        opt.width = 17;
        bool succeeded = false;
        for (long n = 0; n < 500 && !succeeded; n++) {
            struct tr_buf out;
            tr_buf_init(&out, 1 << 20);
            struct tr_sink sink = tr_sink_buf(&out);
            struct dcm_image img;
            tr_error_clear(&err);
            tr_alloc_fail_after(n);
            int rc = dcm_render_frame(ds, &cases[c].d, pixels, sizeof(pixels), &opt, &img, &err);
            if (rc == 0) {
                rc = dcm_image_encode(&img, cases[c].format, 90, &sink, &err);
                dcm_image_release(&img);
            }
            tr_alloc_fail_after(-1);
            if (rc == 0)
                succeeded = true;
            else if (rc != TR_ENOMEM)
                fail_msg("allocation %ld failing: %s", n, err.message);
            tr_buf_release(&out);
        }
        assert_true(succeeded);
    }
    dcm_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_formula),
        cmocka_unit_test(test_linear_exact_and_sigmoid_formulas),
        cmocka_unit_test(test_window_through_render),
        cmocka_unit_test(test_min_max),
        cmocka_unit_test(test_monochrome1_and_inverse),
        cmocka_unit_test(test_signed_12_in_16),
        cmocka_unit_test(test_rescale),
        cmocka_unit_test(test_modality_lut),
        cmocka_unit_test(test_voi_lut),
        cmocka_unit_test(test_functional_groups),
        cmocka_unit_test(test_ybr_known_values),
        cmocka_unit_test(test_colour_models),
        cmocka_unit_test(test_palette),
        cmocka_unit_test(test_viewport_constant),
        cmocka_unit_test(test_area_average),
        cmocka_unit_test(test_crop),
        cmocka_unit_test(test_multiframe_and_planar),
        cmocka_unit_test(test_png_and_jpeg),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
