/*
 * codec_jpegls.c - JPEG-LS (ISO 14495-1, TS 1.2.840.10008.1.2.4.80 and .81) with CharLS 2.4
 * (libcharls-dev), through its C API: decoding of lossless and near-lossless streams in any
 * interleave mode, encoding lossless only.
 *
 * CharLS writes samples of 2 to 8 bits as bytes and 9 to 16 bits as 16-bit words in host
 * order; colour comes out pixel-interleaved for line and sample interleaving and planar for
 * none (interleaved here). The HP colour transforms are undone by CharLS.
 */
#include "codec_int.h"

#include <charls/charls.h>

static const char codec[] = "JPEG-LS (CharLS)";

static bool host_is_big_endian(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 0;
}

static int decode(const struct dcm_codec_frame *f, const uint8_t *bytes, size_t len,
                  struct tr_buf *out, struct dcm_pixel_desc *od, charls_jpegls_errc *failed,
                  struct tr_error *err);

/* CharLS gets a copy of the frame followed by an end of image marker: CharLS 2.4.1 (Debian 12)
 * can loop forever when damaged scan data runs to the very end of its buffer (fixed upstream
 * in 2024, "prevent endless loop during decoding for invalid JPEG-LS input data"); with a
 * marker after the data its reader stops there with an error instead. Found by fuzzing here.
 *
 * Some old encoders (the WG04 JPEG-LS set has one) put zero bytes between the last scan's
 * data and the end of image marker; CharLS 2 refuses that where DCMTK's older CharLS did not.
 * When that is the error, the zeros are dropped and the frame decoded once more. */
int dcm_jpegls_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                      struct dcm_pixel_desc *od, struct tr_error *err)
{
    uint8_t *copy = tr_malloc(f->len + 2);
    if (!copy)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    memcpy(copy, f->bytes, f->len);
    memcpy(copy + f->len, "\xFF\xD9", 2);
    charls_jpegls_errc failed = CHARLS_JPEGLS_ERRC_SUCCESS;
    struct tr_error first = TR_ERROR_INIT;
    int rc = decode(f, copy, f->len + 2, out, od, &failed, &first);
    size_t end = f->len;
    while (end > 2 && f->bytes[end - 1] == 0x00) /* padding after the end of image */
        end--;
    size_t zeros = 0;
    while (end >= 3 + zeros && f->bytes[end - 3 - zeros] == 0x00)
        zeros++;
    if (rc == 0 || failed != CHARLS_JPEGLS_ERRC_JPEG_MARKER_START_BYTE_NOT_FOUND || !zeros ||
        f->bytes[end - 2] != 0xFF || f->bytes[end - 1] != 0xD9) {
        if (rc)
            tr_error_set(err, first.code, "%s", first.message);
        tr_free(copy);
        return rc;
    }
    /* The data up to the zeros, then the end of image marker. */
    memcpy(copy + end - 2 - zeros, "\xFF\xD9", 2);
    tr_buf_reset(out);
    rc = decode(f, copy, end - zeros, out, od, &failed, err);
    tr_free(copy);
    return rc;
}

static int decode(const struct dcm_codec_frame *f, const uint8_t *bytes, size_t len,
                  struct tr_buf *out, struct dcm_pixel_desc *od, charls_jpegls_errc *failed,
                  struct tr_error *err)
{
    const struct dcm_pixel_desc *d = f->desc;
    charls_jpegls_decoder *dec = charls_jpegls_decoder_create();
    if (!dec)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    uint8_t *planar = NULL;
    int rc = 0;
    charls_frame_info info;
    charls_interleave_mode ilv = CHARLS_INTERLEAVE_MODE_NONE;
    size_t size = 0;
    charls_jpegls_errc e = charls_jpegls_decoder_set_source_buffer(dec, bytes, len);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_decoder_read_header(dec);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_decoder_get_frame_info(dec, &info);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_decoder_get_interleave_mode(dec, &ilv);
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS) {
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX, "%s", charls_get_error_message(e));
        goto out;
    }
    if (info.width != d->cols || info.height != d->rows ||
        info.component_count != (int32_t)d->samples || info.bits_per_sample < 2 ||
        info.bits_per_sample > 16) {
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX,
                            "the stream is %u x %u with %d components of %d bits; the data set "
                            "says %u x %u with %u samples per pixel",
                            info.width, info.height, info.component_count, info.bits_per_sample,
                            d->cols, d->rows, d->samples);
        goto out;
    }
    e = charls_jpegls_decoder_get_destination_size(dec, 0, &size);
    unsigned b = info.bits_per_sample <= 8 ? 1 : 2;
    size_t px = (size_t)info.width * info.height;
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS || size != px * d->samples * b) {
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX, "unexpected decoded size %zu (%s)", size,
                            charls_get_error_message(e));
        goto out;
    }
    if ((rc = tr_buf_grow(out, size)) < 0) {
        rc = tr_error_set(err, rc, "frame %u: %s", f->index + 1, tr_strerror(rc));
        goto out;
    }
    bool need_interleave = d->samples > 1 && ilv == CHARLS_INTERLEAVE_MODE_NONE;
    uint8_t *dst = (uint8_t *)out->data;
    if (need_interleave) {
        planar = tr_malloc(size);
        if (!planar) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out;
        }
        dst = planar;
    }
    e = charls_jpegls_decoder_decode_to_buffer(dec, dst, size, 0);
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS) {
        *failed = e;
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX, "%s", charls_get_error_message(e));
        goto out;
    }
    uint8_t *o = (uint8_t *)out->data;
    if (need_interleave) {
        for (unsigned s = 0; s < d->samples; s++) {
            for (size_t p = 0; p < px; p++)
                memcpy(o + (p * d->samples + s) * b, planar + (s * px + p) * b, b);
        }
    }
    if (b == 2 && host_is_big_endian()) {
        for (size_t i = 0; i < size; i += 2) {
            uint8_t t = o[i];
            o[i] = o[i + 1];
            o[i + 1] = t;
        }
    }
    out->len = size;
    od->bits_allocated = (uint16_t)(8 * b);
out:
    tr_free(planar);
    charls_jpegls_decoder_destroy(dec);
    return rc;
}

int dcm_jpegls_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                      struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    (void)out_desc;
    unsigned bits = desc->bits_stored, sb = dcm_sample_bytes(desc->bits_allocated);
    if (bits < 2 || bits > 16 || sb > 2)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "JPEG-LS takes 2 to 16 bits per sample, not %u stored in %u", bits,
                            desc->bits_allocated);
    size_t px = (size_t)desc->rows * desc->cols, count = px * desc->samples;
    if (len != count * sb || desc->rows > 65535 || desc->cols > 65535)
        return tr_error_set(err, TR_EINVAL, "JPEG-LS: the frame has %zu bytes, not %zu", len,
                            count * sb);
    /* CharLS wants bytes for <= 8 bits and host-order words above, with values in range. */
    unsigned b = bits <= 8 ? 1 : 2;
    uint8_t *in = tr_malloc(count * b + 1);
    if (!in)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    uint32_t mask = (1u << bits) - 1;
    for (size_t i = 0; i < count; i++) {
        uint32_t v = (sb == 1 ? native[i] : tr_le16(native + 2 * i)) & mask;
        if (b == 1)
            in[i] = (uint8_t)v;
        else {
            uint16_t w = (uint16_t)v;
            memcpy(in + 2 * i, &w, 2);
        }
    }
    int rc = 0;
    void *dst = NULL;
    size_t cap = 0, written = 0;
    charls_jpegls_encoder *enc = charls_jpegls_encoder_create();
    if (!enc) {
        tr_free(in);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    charls_frame_info info = {desc->cols, desc->rows, (int32_t)bits, desc->samples};
    charls_jpegls_errc e = charls_jpegls_encoder_set_frame_info(enc, &info);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS && desc->samples > 1)
        e = charls_jpegls_encoder_set_interleave_mode(enc, CHARLS_INTERLEAVE_MODE_SAMPLE);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_encoder_set_near_lossless(enc, 0);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_encoder_get_estimated_destination_size(enc, &cap);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS && !(dst = tr_malloc(cap + 1))) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_encoder_set_destination_buffer(enc, dst, cap);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_encoder_encode_from_buffer(enc, in, count * b, 0);
    if (e == CHARLS_JPEGLS_ERRC_SUCCESS)
        e = charls_jpegls_encoder_get_bytes_written(enc, &written);
    if (e != CHARLS_JPEGLS_ERRC_SUCCESS) {
        rc = tr_error_set(err, TR_EINVAL, "JPEG-LS (CharLS): %s", charls_get_error_message(e));
        goto out;
    }
    if ((rc = tr_buf_add(out, dst, written)) < 0)
        rc = tr_error_set(err, rc, "JPEG-LS: %s", tr_strerror(rc));
out:
    charls_jpegls_encoder_destroy(enc);
    tr_free(dst);
    tr_free(in);
    return rc;
}
