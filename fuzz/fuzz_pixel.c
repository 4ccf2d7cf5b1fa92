/*
 * fuzz_pixel.c - libFuzzer target for the pixel data path: finding frames in native and
 * encapsulated pixel data (PS3.5 A.4: offset tables, fragments, start markers) and every
 * decoder (RLE and lossless JPEG of ours; libjpeg-turbo, the 12-bit IJG, CharLS, OpenJPEG).
 *
 * Each input is read as a DICOM file (bare data sets too). Every frame (at most 8) is taken
 * with dcm_pixel_frame_encoded and decoded with dcm_pixel_decode_frame in the file's transfer
 * syntax and, for encapsulated pixel data, in one other compressed syntax picked from the
 * input, so that any bitstream reaches any decoder. Small images are then transcoded to
 * native and to RLE and back.
 *
 * Invariants checked with abort(): a failed call sets a message; a decoded frame has the size
 * its description says; RLE encoding of a decoded image decodes to the same bytes.
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DTELERAD_FUZZ=ON && cmake --build build-fuzz
 * Run:   build-fuzz/fuzz/fuzz_pixel -max_len=65536 fuzz/corpus/pixel
 */
#include "common.h"
#include "dcm.h"
#include "pixel.h"

#include <stdio.h>
#include <stdlib.h>

#define MAX_FRAMES 8
#define FRAME_CAP ((size_t)32 << 20)
#define TRANSCODE_MAX_SAMPLES (256 * 256 * 4)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void invariant_failed(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "fuzz_pixel: invariant failed: %s: %s\n", what,
            err && err->code ? err->message : "(no message)");
    abort();
}

static volatile uint8_t sink;

static void decode_all(const struct dcm_dataset *ds, const char *ts)
{
    struct dcm_pixel_desc d;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_pixel_desc_read(ds, &d, &err) < 0) {
        if (!err.message[0])
            invariant_failed("dcm_pixel_desc_read failed without a message", NULL);
        return;
    }
    struct tr_buf out, scratch;
    tr_buf_init(&out, FRAME_CAP);
    tr_buf_init(&scratch, FRAME_CAP);
    uint32_t frames = TR_MIN(d.frames, (uint32_t)MAX_FRAMES);
    for (uint32_t i = 0; i <= frames; i++) { /* one past the last, too */
        const uint8_t *bytes;
        size_t len;
        tr_error_clear(&err);
        if (dcm_pixel_frame_encoded(ds, ts, i, &scratch, &bytes, &len, &err) == 0) {
            uint8_t x = 0;
            for (size_t k = 0; k < len; k++)
                x ^= bytes[k];
            sink ^= x;
        } else if (!err.message[0]) {
            invariant_failed("dcm_pixel_frame_encoded failed without a message", NULL);
        }
        struct dcm_pixel_desc od;
        tr_error_clear(&err);
        if (dcm_pixel_decode_frame(ds, ts, i, &out, &od, &err) == 0) {
            if (out.len != dcm_pixel_frame_size(&od))
                invariant_failed("a decoded frame does not have the size its description says",
                                 NULL);
        } else if (!err.message[0]) {
            invariant_failed("dcm_pixel_decode_frame failed without a message", NULL);
        }
    }
    tr_buf_release(&out);
    tr_buf_release(&scratch);
}

/* Native -> RLE -> native, twice: the second round trip gives the bytes of the first. (The
 * first may legitimately change the bytes: planar to interleaved, YBR_FULL_422 to YBR_FULL.) */
static int rle_and_back(struct dcm_dataset *ds, struct tr_buf *native, struct tr_error *err)
{
    tr_error_clear(err);
    if (dcm_pixel_transcode(ds, DCM_UID_ExplicitVRLittleEndian, DCM_UID_RLELossless, false,
                            err) < 0)
        return -1;
    tr_error_clear(err);
    if (dcm_pixel_transcode(ds, DCM_UID_RLELossless, DCM_UID_ExplicitVRLittleEndian, false,
                            err) < 0)
        invariant_failed("telerad cannot decode the RLE it wrote", err);
    const struct dcm_element *e = dcm_dataset_get(ds, DCM_TAG_PixelData);
    tr_buf_reset(native);
    return tr_buf_add(native, e->value.bytes, e->length);
}

static void transcode_round_trip(const struct dcm_dataset *ds, const char *ts)
{
    struct dcm_pixel_desc d;
    if (dcm_pixel_desc_read(ds, &d, NULL) < 0 || d.frames > 4 ||
        (uint64_t)d.rows * d.cols * d.samples * d.frames > TRANSCODE_MAX_SAMPLES)
        return;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *copy = dcm_dataset_copy(ds, &err);
    if (!copy)
        return;
    if (dcm_pixel_transcode(copy, ts, DCM_UID_ExplicitVRLittleEndian, false, &err) < 0) {
        if (!err.message[0])
            invariant_failed("dcm_pixel_transcode failed without a message", NULL);
        dcm_dataset_free(copy);
        return;
    }
    struct tr_buf first, second;
    tr_buf_init(&first, FRAME_CAP);
    tr_buf_init(&second, FRAME_CAP);
    if (rle_and_back(copy, &first, &err) == 0 && rle_and_back(copy, &second, &err) == 0 &&
        (first.len != second.len || memcmp(first.data, second.data, first.len) != 0))
        invariant_failed("an RLE round trip changed the pixels", NULL);
    tr_buf_release(&first);
    tr_buf_release(&second);
    dcm_dataset_free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const others[] = {
        DCM_UID_RLELossless, "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80",
        "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.201"};
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.allow_no_meta = true;
    struct dcm_file *f = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_file_read_memory(data, size, &opt, &f, &err) < 0)
        return 0;
    const struct dcm_element *e = dcm_dataset_get(f->dataset, DCM_TAG_PixelData);
    if (e) {
        decode_all(f->dataset, f->ts_uid);
        if (e->flags & DCM_ELEM_ENCAPSULATED) {
            const char *other = others[size % TR_ARRAY_SIZE(others)];
            if (strcmp(other, f->ts_uid) != 0)
                decode_all(f->dataset, other);
        }
        transcode_round_trip(f->dataset, f->ts_uid);
    }
    dcm_file_free(f);
    return 0;
}
