/*
 * codec_rle.c - RLE Lossless (PS3.5 Annex G), decoder and encoder, written here: the format
 * is small and no Debian library implements the DICOM flavour.
 *
 * A frame is a 64-byte header (number of segments, then 15 segment offsets, little endian)
 * followed by the segments. Each segment holds one byte of one sample for every pixel of the
 * frame, PackBits-compressed (G.3.1): samples in order, and within a sample the most
 * significant byte first (G.2). 1-bit images have one segment per sample holding the packed
 * bits of the frame. The decoder stops a segment when it has all its bytes (a trailing pad byte
 * or an encoder's overrun is ignored, as DCMTK does) and refuses a segment that ends early.
 */
#include "codec_int.h"

#define RLE_HEADER 64
#define RLE_MAX_SEGMENTS 15
static const char codec[] = "RLE";

/* Bytes one segment decodes to. */
static size_t segment_size(const struct dcm_pixel_desc *d)
{
    size_t px = (size_t)d->rows * d->cols;
    return d->bits_allocated == 1 ? (px + 7) / 8 : px;
}

/* PackBits-decode segment `seg` (bytes [start, end) of the frame) into `n` bytes written at
 * dst[0], dst[stride], dst[2 * stride] ... */
static int decode_segment(const struct dcm_codec_frame *f, unsigned seg, size_t start, size_t end,
                          uint8_t *dst, size_t stride, size_t n, struct tr_error *err)
{
    const uint8_t *p = f->bytes;
    size_t pos = start, i = 0;
    while (i < n) {
        if (pos >= end)
            return dcm_codec_fail(err, f, codec, pos,
                                  "segment %u ends after %zu of its %zu bytes", seg + 1, i, n);
        int8_t h = (int8_t)p[pos++];
        if (h >= 0) {
            size_t run = (size_t)h + 1;
            if (run > end - pos)
                return dcm_codec_fail(err, f, codec, pos - 1,
                                      "a literal run of %zu bytes runs past the end of segment %u",
                                      run, seg + 1);
            size_t take = TR_MIN(run, n - i);
            for (size_t k = 0; k < take; k++)
                dst[(i + k) * stride] = p[pos + k];
            i += take;
            pos += run;
        } else if (h != -128) {
            size_t run = (size_t)(1 - h);
            if (pos >= end)
                return dcm_codec_fail(err, f, codec, pos - 1,
                                      "a repeat run has no byte to repeat at the end of segment %u",
                                      seg + 1);
            uint8_t v = p[pos++];
            size_t take = TR_MIN(run, n - i);
            for (size_t k = 0; k < take; k++)
                dst[(i + k) * stride] = v;
            i += take;
        }
    }
    return 0;
}

int dcm_rle_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                   struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    const struct dcm_pixel_desc *d = f->desc;
    unsigned b = dcm_sample_bytes(d->bits_allocated);
    unsigned want = (unsigned)d->samples * b;
    if (f->len < RLE_HEADER)
        return dcm_codec_fail(err, f, codec, 0, "the frame has %zu bytes, the header alone 64",
                              f->len);
    uint32_t n = tr_le32(f->bytes);
    if (n == 0 || n > RLE_MAX_SEGMENTS)
        return dcm_codec_fail(err, f, codec, 0,
                              "the header gives %u segments; there can be 1 to 15", n);
    if (n != want)
        return dcm_codec_fail(err, f, codec, 0,
                              "the header gives %u segments; %u samples of %u bits need %u", n,
                              d->samples, d->bits_allocated, want);
    uint32_t offset[RLE_MAX_SEGMENTS + 1];
    for (uint32_t k = 0; k < n; k++) {
        offset[k] = tr_le32(f->bytes + 4 + 4 * k);
        if ((k == 0 && offset[k] != RLE_HEADER) || offset[k] < RLE_HEADER ||
            offset[k] > f->len || (k > 0 && offset[k] < offset[k - 1]))
            return dcm_codec_fail(err, f, codec, 4 + 4 * (size_t)k,
                                  "segment %u begins at byte %u: not after the header and the "
                                  "segment before it, within the %zu bytes of the frame",
                                  k + 1, offset[k], f->len);
    }
    offset[n] = (uint32_t)TR_MIN(f->len, (size_t)UINT32_MAX);

    size_t px = (size_t)d->rows * d->cols;
    size_t seg = segment_size(d);
    size_t size = px * d->samples * b;
    int rc = tr_buf_grow(out, size);
    if (rc < 0)
        return tr_error_set(err, rc, "frame %u: %s", f->index + 1, tr_strerror(rc));
    uint8_t *o = (uint8_t *)out->data;
    if (d->bits_allocated == 1) {
        /* One segment of packed bits per sample; unpack to one byte per sample. */
        uint8_t *packed = tr_malloc(seg ? seg : 1);
        if (!packed)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        for (unsigned s = 0; s < n && rc == 0; s++) {
            rc = decode_segment(f, s, offset[s], offset[s + 1], packed, 1, seg, err);
            for (size_t i = 0; rc == 0 && i < px; i++)
                o[i * d->samples + s] = (uint8_t)((packed[i / 8] >> (i % 8)) & 1);
        }
        tr_free(packed);
    } else {
        for (unsigned s = 0; s < n && rc == 0; s++) {
            unsigned sample = s / b, byte = b - 1 - s % b; /* most significant byte first */
            rc = decode_segment(f, s, offset[s], offset[s + 1], o + sample * b + byte,
                                (size_t)d->samples * b, seg, err);
        }
    }
    if (rc)
        return rc;
    out->len = size;
    out_desc->bits_allocated = d->bits_allocated == 1 ? 8 : d->bits_allocated;
    return 0;
}

/* ---- encoder ----------------------------------------------------------------------------------- */

/* PackBits (G.3.1): runs of three or more equal bytes as replicate runs, the rest as literal
 * runs, at most 128 bytes each. */
static int packbits(struct tr_buf *o, const uint8_t *p, size_t n)
{
    size_t i = 0;
    int rc = 0;
    while (i < n && rc == 0) {
        size_t r = 1;
        while (i + r < n && r < 128 && p[i + r] == p[i])
            r++;
        if (r >= 3) {
            uint8_t h[2] = {(uint8_t)(257 - r), p[i]};
            rc = tr_buf_add(o, h, 2);
            i += r;
            continue;
        }
        size_t j = i;
        while (j < n && j - i < 128) {
            if (j + 2 < n && p[j] == p[j + 1] && p[j] == p[j + 2])
                break;
            j++;
        }
        rc = tr_buf_addc(o, (char)(uint8_t)(j - i - 1));
        if (rc == 0)
            rc = tr_buf_add(o, p + i, j - i);
        i = j;
    }
    return rc;
}

int dcm_rle_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                   struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    (void)out_desc;
    unsigned b = dcm_sample_bytes(desc->bits_allocated);
    unsigned n = (unsigned)desc->samples * b;
    size_t px = (size_t)desc->rows * desc->cols;
    if (n > RLE_MAX_SEGMENTS)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "RLE has at most 15 segments; %u samples of %u bits need %u",
                            desc->samples, desc->bits_allocated, n);
    if (len != px * desc->samples * b)
        return tr_error_set(err, TR_EINVAL, "RLE: the frame has %zu bytes, not %zu", len,
                            px * desc->samples * b);
    size_t base = out->len;
    uint8_t header[RLE_HEADER] = {0};
    int rc = tr_buf_add(out, header, sizeof(header));
    size_t rowlen = desc->bits_allocated == 1 ? (px + 7) / 8 : desc->cols;
    uint8_t *row = tr_malloc(rowlen ? rowlen : 1);
    if (!row)
        rc = TR_ENOMEM;
    for (unsigned s = 0; s < n && rc == 0; s++) {
        if (out->len - base > UINT32_MAX) {
            rc = TR_ELIMIT;
            break;
        }
        tr_put_le32(header + 4 + 4 * s, (uint32_t)(out->len - base));
        if (desc->bits_allocated == 1) {
            /* The whole frame's bits for this sample as one run of bytes. */
            memset(row, 0, rowlen);
            for (size_t i = 0; i < px; i++)
                row[i / 8] |= (uint8_t)((native[i * desc->samples + s] & 1) << (i % 8));
            rc = packbits(out, row, rowlen);
        } else {
            unsigned sample = s / b, byte = b - 1 - s % b;
            size_t stride = (size_t)desc->samples * b;
            for (uint32_t y = 0; y < desc->rows && rc == 0; y++) {
                /* Each row separately: a run never crosses a row boundary (G.3.1). */
                const uint8_t *src = native + (size_t)y * desc->cols * stride + sample * b + byte;
                for (uint32_t x = 0; x < desc->cols; x++)
                    row[x] = src[x * stride];
                rc = packbits(out, row, desc->cols);
            }
        }
        if (rc == 0 && (out->len - base) % 2)
            rc = tr_buf_addc(out, 0); /* segments have even length */
    }
    tr_free(row);
    if (rc < 0) {
        tr_buf_truncate(out, base);
        return tr_error_set(err, rc, "RLE: %s", tr_strerror(rc));
    }
    tr_put_le32(header, n);
    memcpy(out->data + base, header, sizeof(header));
    return 0;
}
