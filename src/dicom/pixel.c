/*
 * pixel.c - the image pixel module, frames, and the codec dispatch (PS3.3 C.7.6.3, PS3.5 8,
 * A.4, Annex G): what pixel.h promises. The codecs themselves are in codec_<name>.c behind
 * codec_int.h.
 *
 * Finding a frame of encapsulated pixel data (PS3.5 A.4), in this order:
 *   1. the Extended Offset Table (7FE0,0001) with its lengths (7FE0,0002);
 *   2. the Basic Offset Table (the first item), when it has one entry per frame;
 *   3. one fragment per frame, when the counts agree (or every fragment for a single frame);
 *   4. fragments that begin with the codec's start marker (JPEG SOI, J2K SOC+SIZ or the JP2
 *      signature box, an RLE header with its segment count and first offset 64).
 * A table whose offsets do not land on fragment boundaries is ignored, not trusted: the next
 * method is tried (pydicom does the same; a wrong table is a common writer bug).
 */
#include "codec_int.h"

#include <stdarg.h>

#define TAG_SamplesPerPixel 0x00280002u
#define TAG_PhotometricInterpretation 0x00280004u
#define TAG_PlanarConfiguration 0x00280006u
#define TAG_NumberOfFrames 0x00280008u
#define TAG_Rows 0x00280010u
#define TAG_Columns 0x00280011u
#define TAG_BitsStored 0x00280101u
#define TAG_HighBit 0x00280102u
#define TAG_LossyImageCompression 0x00282110u
#define TAG_LossyImageCompressionRatio 0x00282112u
#define TAG_LossyImageCompressionMethod 0x00282114u

/* ---- the codec table ------------------------------------------------------------------------ */

static const struct dcm_codec codecs[] = {
    {"1.2.840.10008.1.2.5", "RLE Lossless (telerad)", dcm_rle_decode, dcm_rle_encode, NULL},
    {"1.2.840.10008.1.2.4.50", "JPEG Baseline (libjpeg-turbo)", dcm_jpeg_decode, dcm_jpeg8_encode,
     "ISO_10918_1"},
    {"1.2.840.10008.1.2.4.51", "JPEG Extended (libjpeg-turbo, GDCM 12-bit IJG)", dcm_jpeg_decode,
     NULL, NULL},
    /* Retired JPEG processes: decoded when the stream is one of the processes above (8-bit
       progressive, for one); others are refused by the front with the process named. */
    {"1.2.840.10008.1.2.4.52", "JPEG Extended 3 & 5 (retired)", dcm_jpeg_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.53", "JPEG Spectral Selection 6 & 8 (retired)", dcm_jpeg_decode, NULL,
     NULL},
    {"1.2.840.10008.1.2.4.54", "JPEG Spectral Selection 7 & 9 (retired)", dcm_jpeg_decode, NULL,
     NULL},
    {"1.2.840.10008.1.2.4.55", "JPEG Progressive 10 & 12 (retired)", dcm_jpeg_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.56", "JPEG Progressive 11 & 13 (retired)", dcm_jpeg_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.58", "JPEG Lossless 15 (retired)", dcm_jpeg_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.57", "JPEG Lossless process 14 (telerad)", dcm_jpeg_decode,
     dcm_jpeg_lossless_encode, NULL},
    {"1.2.840.10008.1.2.4.70", "JPEG Lossless SV1 (telerad)", dcm_jpeg_decode,
     dcm_jpeg_lossless_encode, NULL},
    {"1.2.840.10008.1.2.4.80", "JPEG-LS Lossless (CharLS)", dcm_jpeg_decode, dcm_jpegls_encode,
     NULL},
    {"1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless (CharLS)", dcm_jpeg_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless (OpenJPEG)", dcm_j2k_decode, dcm_j2k_encode,
     NULL},
    {"1.2.840.10008.1.2.4.91", "JPEG 2000 (OpenJPEG)", dcm_j2k_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.201", "HTJ2K Lossless (OpenJPEG)", dcm_j2k_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.202", "HTJ2K RPCL Lossless (OpenJPEG)", dcm_j2k_decode, NULL, NULL},
    {"1.2.840.10008.1.2.4.203", "HTJ2K (OpenJPEG)", dcm_j2k_decode, NULL, NULL},
};

const struct dcm_codec *dcm_codec_find(const char *ts_uid)
{
    if (!ts_uid)
        return NULL;
    for (size_t i = 0; i < TR_ARRAY_SIZE(codecs); i++) {
        if (strcmp(codecs[i].ts_uid, ts_uid) == 0)
            return &codecs[i];
    }
    return NULL;
}

static bool ts_is_native(const char *ts_uid)
{
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
    return ts && !(ts->flags & (DCM_TS_ENCAPSULATED | DCM_TS_REFERENCED));
}

bool dcm_pixel_can_decode(const char *ts_uid)
{
    if (ts_is_native(ts_uid))
        return true;
    const struct dcm_codec *c = dcm_codec_find(ts_uid);
    return c && c->decode;
}

bool dcm_pixel_can_encode(const char *ts_uid)
{
    if (ts_is_native(ts_uid))
        return true;
    const struct dcm_codec *c = dcm_codec_find(ts_uid);
    return c && c->encode;
}

static int vfail(struct tr_error *err, int code, const struct dcm_codec_frame *f,
                 const char *codec, size_t offset, const char *fmt, va_list ap)
{
    char why[TR_ERROR_MSG_MAX];
    vsnprintf(why, sizeof(why), fmt, ap);
    if (offset == SIZE_MAX)
        return tr_error_set(err, code, "frame %u: %s: %s", f->index + 1, codec, why);
    if (f->file_offset != DCM_NO_OFFSET)
        return tr_error_set(err, code, "frame %u: %s: at byte %zu of the frame (byte %llu in the file): %s",
                            f->index + 1, codec, offset,
                            (unsigned long long)(f->file_offset + offset), why);
    return tr_error_set(err, code, "frame %u: %s: at byte %zu of the frame: %s", f->index + 1,
                        codec, offset, why);
}

int dcm_codec_fail(struct tr_error *err, const struct dcm_codec_frame *f, const char *codec,
                   size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(err, TR_EFORMAT, f, codec, offset, fmt, ap);
    va_end(ap);
    return rc;
}

int dcm_codec_fail_code(struct tr_error *err, int code, const struct dcm_codec_frame *f,
                        const char *codec, size_t offset, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfail(err, code, f, codec, offset, fmt, ap);
    va_end(ap);
    return rc;
}

/* ---- the image pixel module ----------------------------------------------------------------- */

static int get_us(const struct dcm_dataset *ds, uint32_t tag, const char *name, bool required,
                  int64_t dflt, int64_t *out, struct tr_error *err)
{
    int rc = dcm_dataset_get_int(ds, tag, 0, out);
    if (rc == TR_ENOTFOUND && !required) {
        *out = dflt;
        return 0;
    }
    if (rc == TR_ENOTFOUND)
        return tr_error_set(err, TR_EFORMAT, "(%04X,%04X) %s is missing", DCM_TAG_GROUP(tag),
                            DCM_TAG_ELEMENT(tag), name);
    if (rc < 0 || *out < 0 || *out > 65535)
        return tr_error_set(err, TR_EFORMAT, "(%04X,%04X) %s is not a number from 0 to 65535",
                            DCM_TAG_GROUP(tag), DCM_TAG_ELEMENT(tag), name);
    return 0;
}

int dcm_pixel_desc_read(const struct dcm_dataset *ds, struct dcm_pixel_desc *d,
                        struct tr_error *err)
{
    memset(d, 0, sizeof(*d));
    if (!dcm_dataset_get(ds, DCM_TAG_PixelData))
        return tr_error_set(err, TR_ENOTFOUND, "the data set has no pixel data (7FE0,0010)");
    int64_t rows, cols, samples, ba, bs, hb, pr, planar, frames;
    int rc;
    if ((rc = get_us(ds, TAG_Rows, "Rows", true, 0, &rows, err)) ||
        (rc = get_us(ds, TAG_Columns, "Columns", true, 0, &cols, err)) ||
        (rc = get_us(ds, TAG_SamplesPerPixel, "SamplesPerPixel", false, 1, &samples, err)) ||
        (rc = get_us(ds, DCM_TAG_BitsAllocated, "BitsAllocated", true, 0, &ba, err)) ||
        (rc = get_us(ds, TAG_BitsStored, "BitsStored", false, ba, &bs, err)) ||
        (rc = get_us(ds, TAG_HighBit, "HighBit", false, bs - 1, &hb, err)) ||
        (rc = get_us(ds, DCM_TAG_PixelRepresentation, "PixelRepresentation", false, 0, &pr,
                     err)) ||
        (rc = get_us(ds, TAG_PlanarConfiguration, "PlanarConfiguration", false, 0, &planar, err)))
        return rc;
    rc = dcm_dataset_get_int(ds, TAG_NumberOfFrames, 0, &frames);
    if (rc == TR_ENOTFOUND)
        frames = 1;
    else if (rc < 0 || frames < 1 || frames > INT32_MAX)
        return tr_error_set(err, TR_EFORMAT,
                            "(0028,0008) NumberOfFrames is not a number from 1 to %d", INT32_MAX);
    if (rows == 0 || cols == 0)
        return tr_error_set(err, TR_EFORMAT, "the image has %lld rows and %lld columns",
                            (long long)rows, (long long)cols);
    if (samples < 1 || samples > 4)
        return tr_error_set(err, TR_EFORMAT, "(0028,0002) SamplesPerPixel %lld is not 1 to 4",
                            (long long)samples);
    if (ba != 1 && ba != 8 && ba != 16 && ba != 32)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "(0028,0100) BitsAllocated %lld: only 1, 8, 16 and 32 are supported",
                            (long long)ba);
    if (bs < 1 || bs > ba)
        return tr_error_set(err, TR_EFORMAT, "(0028,0101) BitsStored %lld does not fit in %lld "
                            "bits allocated", (long long)bs, (long long)ba);
    if (hb < bs - 1 || hb >= ba)
        return tr_error_set(err, TR_EFORMAT, "(0028,0102) HighBit %lld is not between %lld and %lld",
                            (long long)hb, (long long)(bs - 1), (long long)(ba - 1));
    if (pr > 1)
        return tr_error_set(err, TR_EFORMAT, "(0028,0103) PixelRepresentation %lld is not 0 or 1",
                            (long long)pr);
    if (samples > 1 && planar > 1)
        return tr_error_set(err, TR_EFORMAT, "(0028,0006) PlanarConfiguration %lld is not 0 or 1",
                            (long long)planar);
    d->rows = (uint32_t)rows;
    d->cols = (uint32_t)cols;
    d->frames = (uint32_t)frames;
    d->samples = (uint16_t)samples;
    d->bits_allocated = (uint16_t)ba;
    d->bits_stored = (uint16_t)bs;
    d->high_bit = (uint16_t)hb;
    d->is_signed = pr == 1;
    d->planar = samples > 1 ? (uint16_t)planar : 0;
    rc = dcm_dataset_get_string(ds, TAG_PhotometricInterpretation, 0, d->photometric,
                                sizeof(d->photometric));
    if (rc == TR_ENOTFOUND) {
        snprintf(d->photometric, sizeof(d->photometric), "%s",
                 samples == 1 ? "MONOCHROME2" : "RGB");
    } else if (rc < 0) {
        return tr_error_set(err, TR_EFORMAT,
                            "(0028,0004) PhotometricInterpretation is not a defined term");
    }
    return 0;
}

size_t dcm_pixel_frame_size(const struct dcm_pixel_desc *d)
{
    return (size_t)d->rows * d->cols * d->samples * dcm_sample_bytes(d->bits_allocated);
}

static bool is_ybr_422(const struct dcm_pixel_desc *d)
{
    return d->samples == 3 && (strcmp(d->photometric, "YBR_FULL_422") == 0 ||
                               strcmp(d->photometric, "YBR_PARTIAL_422") == 0);
}

/* Bytes of one frame as stored natively (1-bit: not used; YBR_FULL_422: two samples per
 * pixel, PS3.3 C.7.6.3.1.2). */
static uint64_t native_frame_bytes(const struct dcm_pixel_desc *d)
{
    uint64_t px = (uint64_t)d->rows * d->cols;
    unsigned b = dcm_sample_bytes(d->bits_allocated);
    if (is_ybr_422(d))
        return (px + 1) / 2 * 4 * b; /* whole pairs (Columns should be even) */
    return px * d->samples * b;
}

/* ---- finding frames ------------------------------------------------------------------------- */

static uint64_t padded_length(uint32_t n)
{
    return (uint64_t)n + (n & 1);
}

/* The fragment (index >= 1) whose item tag is at `offset` from the first fragment's item tag,
 * 0 if none. */
static uint32_t fragment_at(const struct dcm_element *e, uint64_t offset)
{
    uint64_t pos = 0;
    for (uint32_t k = 1; k < e->value.fragments.count; k++) {
        if (pos == offset)
            return k;
        if (pos > offset)
            return 0;
        pos += 8 + padded_length(e->value.fragments.fragment[k].length);
    }
    return 0;
}

struct frame_span {
    uint32_t first, count; /* fragments */
    uint64_t limit;        /* frame length from the EOT, UINT64_MAX if unknown */
};

/* Offsets (already read) of frame `index` and the next one to a span; false if they do not
 * land on fragments. */
static bool span_from_offsets(const struct dcm_element *e, uint64_t start, bool has_next,
                              uint64_t next, struct frame_span *s)
{
    uint32_t nfrag = e->value.fragments.count;
    uint32_t first = fragment_at(e, start);
    if (!first)
        return false;
    uint32_t end = nfrag;
    if (has_next) {
        if (next <= start || !(end = fragment_at(e, next)))
            return false;
    }
    s->first = first;
    s->count = end - first;
    s->limit = UINT64_MAX;
    return true;
}

static bool span_from_eot(const struct dcm_dataset *ds, const struct dcm_element *e,
                          const struct dcm_pixel_desc *d, uint32_t index, struct frame_span *s)
{
    const struct dcm_element *eot = dcm_dataset_get(ds, DCM_TAG_ExtendedOffsetTable);
    if (!eot || (eot->flags & DCM_ELEM_ENCAPSULATED) || eot->vr == DCM_VR_SQ ||
        eot->length / 8 != d->frames || eot->length % 8)
        return false;
    const uint8_t *t = eot->value.bytes;
    bool has_next = index + 1 < d->frames;
    if (!span_from_offsets(e, tr_le64(t + 8 * (size_t)index), has_next,
                           has_next ? tr_le64(t + 8 * ((size_t)index + 1)) : 0, s))
        return false;
    const struct dcm_element *lens = dcm_dataset_get(ds, DCM_TAG_ExtendedOffsetTableLengths);
    if (lens && !(lens->flags & DCM_ELEM_ENCAPSULATED) && lens->vr != DCM_VR_SQ &&
        lens->length == eot->length)
        s->limit = tr_le64(lens->value.bytes + 8 * (size_t)index);
    return true;
}

static bool span_from_bot(const struct dcm_element *e, const struct dcm_pixel_desc *d,
                          uint32_t index, struct frame_span *s)
{
    const struct dcm_fragment *bot = &e->value.fragments.fragment[0];
    if (bot->length == 0 || bot->length % 4 || bot->length / 4 != d->frames ||
        tr_le32(bot->bytes) != 0)
        return false;
    bool has_next = index + 1 < d->frames;
    return span_from_offsets(e, tr_le32(bot->bytes + 4 * (size_t)index), has_next,
                             has_next ? tr_le32(bot->bytes + 4 * ((size_t)index + 1)) : 0, s);
}

static bool starts_jpeg(const struct dcm_fragment *f)
{
    return f->length >= 3 && f->bytes[0] == 0xFF && f->bytes[1] == 0xD8 && f->bytes[2] == 0xFF;
}

static bool starts_j2k(const struct dcm_fragment *f)
{
    static const uint8_t jp2[] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' '};
    return f->length >= 4 &&
           ((f->bytes[0] == 0xFF && f->bytes[1] == 0x4F && f->bytes[2] == 0xFF &&
             f->bytes[3] == 0x51) ||
            (f->length >= 8 && memcmp(f->bytes, jp2, sizeof(jp2)) == 0));
}

static bool starts_rle(const struct dcm_fragment *f, const struct dcm_pixel_desc *d)
{
    return f->length >= 64 &&
           tr_le32(f->bytes) == (uint32_t)d->samples * dcm_sample_bytes(d->bits_allocated) &&
           tr_le32(f->bytes + 4) == 64;
}

static bool fragment_starts_frame(const char *ts_uid, const struct dcm_fragment *f,
                                  const struct dcm_pixel_desc *d)
{
    const struct dcm_codec *c = dcm_codec_find(ts_uid);
    if (c && c->decode == dcm_rle_decode)
        return starts_rle(f, d);
    if (c && c->decode == dcm_jpeg_decode)
        return starts_jpeg(f);
    if (c && c->decode == dcm_j2k_decode)
        return starts_j2k(f);
    return starts_jpeg(f) || starts_j2k(f) || starts_rle(f, d);
}

static int locate_frame(const struct dcm_dataset *ds, const struct dcm_element *e,
                        const struct dcm_pixel_desc *d, const char *ts_uid, uint32_t index,
                        struct frame_span *s, struct tr_error *err)
{
    uint32_t nfrag = e->value.fragments.count;
    if (nfrag < 2)
        return tr_error_set(err, TR_EFORMAT,
                            "frame %u: the encapsulated pixel data has no fragments", index + 1);
    if (span_from_eot(ds, e, d, index, s) || span_from_bot(e, d, index, s))
        return 0;
    s->limit = UINT64_MAX;
    if (nfrag - 1 == d->frames) {
        s->first = index + 1;
        s->count = 1;
        return 0;
    }
    if (d->frames == 1) {
        s->first = 1;
        s->count = nfrag - 1;
        return 0;
    }
    /* Scan for start markers. */
    uint32_t seen = 0, first = 0;
    for (uint32_t k = 1; k < nfrag; k++) {
        if (!fragment_starts_frame(ts_uid, &e->value.fragments.fragment[k], d)) {
            if (k == 1)
                break;
            continue;
        }
        if (seen == index)
            first = k;
        else if (seen == index + 1) {
            s->first = first;
            s->count = k - first;
        }
        seen++;
    }
    if (seen == d->frames && first) {
        if (index + 1 == d->frames) {
            s->first = first;
            s->count = nfrag - first;
        }
        return 0;
    }
    return tr_error_set(err, TR_EFORMAT,
                        "frame %u: cannot tell where it is: %u frames in %u fragments, no usable "
                        "offset table, and %u fragments begin with a start marker",
                        index + 1, d->frames, nfrag - 1, seen);
}

static int encapsulated_frame(const struct dcm_dataset *ds, const struct dcm_element *e,
                              const struct dcm_pixel_desc *d, const char *ts_uid, uint32_t index,
                              struct tr_buf *scratch, const uint8_t **bytes, size_t *len,
                              uint64_t *file_offset, struct tr_error *err)
{
    struct frame_span s = {0};
    int rc = locate_frame(ds, e, d, ts_uid, index, &s, err);
    if (rc)
        return rc;
    const struct dcm_fragment *frag = &e->value.fragments.fragment[s.first];
    if (s.count == 1) {
        *bytes = frag->bytes;
        *len = (size_t)TR_MIN((uint64_t)frag->length, s.limit);
        *file_offset = frag->offset;
        return 0;
    }
    tr_buf_reset(scratch);
    for (uint32_t k = 0; k < s.count; k++) {
        if ((rc = tr_buf_add(scratch, frag[k].bytes, frag[k].length)) < 0)
            return tr_error_set(err, rc, "frame %u: assembling its %u fragments: %s", index + 1,
                                s.count, tr_strerror(rc));
    }
    *bytes = (const uint8_t *)scratch->data;
    *len = (size_t)TR_MIN((uint64_t)scratch->len, s.limit);
    *file_offset = DCM_NO_OFFSET;
    return 0;
}

/* A native frame: a slice of the value, or for 1-bit frames that do not begin on a byte
 * boundary, the bits shifted into `scratch`. */
static int native_frame(const struct dcm_element *e, const struct dcm_pixel_desc *d,
                        uint32_t index, struct tr_buf *scratch, const uint8_t **bytes,
                        size_t *len, struct tr_error *err)
{
    if (e->vr == DCM_VR_SQ)
        return tr_error_set(err, TR_EFORMAT, "(7FE0,0010) PixelData is a sequence");
    const uint8_t *v = e->value.bytes;
    if (d->bits_allocated == 1) {
        uint64_t bits = (uint64_t)d->rows * d->cols * d->samples;
        uint64_t start = bits * index;
        uint64_t nbytes = (bits + 7) / 8;
        uint64_t need = (start + bits + 7) / 8;
        if (need > e->length)
            return tr_error_set(err, TR_EFORMAT,
                                "frame %u: the 1-bit frames need %llu bytes of pixel data, the "
                                "value has %u", index + 1, (unsigned long long)need, e->length);
        uint64_t first = start / 8;
        unsigned shift = (unsigned)(start % 8);
        if (shift == 0) {
            *bytes = v + first;
            *len = (size_t)nbytes;
            return 0;
        }
        tr_buf_reset(scratch);
        int rc = tr_buf_grow(scratch, (size_t)nbytes);
        if (rc < 0)
            return tr_error_set(err, rc, "frame %u: %s", index + 1, tr_strerror(rc));
        uint8_t *o = (uint8_t *)scratch->data;
        for (uint64_t i = 0; i < nbytes; i++) {
            unsigned lo = v[first + i] >> shift;
            unsigned hi = first + i + 1 < e->length ? v[first + i + 1] << (8 - shift) : 0;
            o[i] = (uint8_t)(lo | hi);
        }
        scratch->len = (size_t)nbytes;
        *bytes = o;
        *len = (size_t)nbytes;
        return 0;
    }
    uint64_t flen = native_frame_bytes(d);
    if (flen * (index + 1) > e->length)
        return tr_error_set(err, TR_EFORMAT,
                            "frame %u: it needs bytes %llu to %llu of the pixel data, the value "
                            "has %u",
                            index + 1, (unsigned long long)(flen * index),
                            (unsigned long long)(flen * (index + 1)), e->length);
    *bytes = v + flen * index;
    *len = (size_t)flen;
    return 0;
}

static int check_index(const struct dcm_pixel_desc *d, uint32_t index, struct tr_error *err)
{
    if (index >= d->frames)
        return tr_error_set(err, TR_ENOTFOUND, "there is no frame %u: the image has %u",
                            index + 1, d->frames);
    return 0;
}

static int frame_encoded(const struct dcm_dataset *ds, const struct dcm_pixel_desc *d,
                         const char *ts_uid, uint32_t index, struct tr_buf *scratch,
                         const uint8_t **bytes, size_t *len, uint64_t *file_offset,
                         struct tr_error *err)
{
    const struct dcm_element *e = dcm_dataset_get(ds, DCM_TAG_PixelData);
    int rc = check_index(d, index, err);
    if (rc)
        return rc;
    *file_offset = DCM_NO_OFFSET;
    if (e->flags & DCM_ELEM_ENCAPSULATED)
        return encapsulated_frame(ds, e, d, ts_uid, index, scratch, bytes, len, file_offset,
                                  err);
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
    if (ts && (ts->flags & DCM_TS_ENCAPSULATED))
        return tr_error_set(err, TR_EFORMAT,
                            "the transfer syntax is %s but the pixel data is not encapsulated",
                            ts->name);
    rc = native_frame(e, d, index, scratch, bytes, len, err);
    if (rc == 0 && d->bits_allocated != 1 && e->offset != DCM_NO_OFFSET)
        *file_offset = e->offset + native_frame_bytes(d) * index;
    return rc;
}

int dcm_pixel_frame_encoded(const struct dcm_dataset *ds, const char *ts_uid, uint32_t index,
                            struct tr_buf *scratch, const uint8_t **bytes, size_t *len,
                            struct tr_error *err)
{
    struct dcm_pixel_desc d;
    uint64_t off;
    int rc = dcm_pixel_desc_read(ds, &d, err);
    if (rc)
        return rc;
    return frame_encoded(ds, &d, ts_uid, index, scratch, bytes, len, &off, err);
}

/* ---- decoding --------------------------------------------------------------------------------- */

/* Native bytes to interleaved samples in `out`. */
static int decode_native(const struct dcm_element *e, const struct dcm_pixel_desc *d,
                         const char *ts_uid, const uint8_t *in, size_t len, struct tr_buf *out,
                         struct dcm_pixel_desc *od)
{
    size_t px = (size_t)d->rows * d->cols;
    unsigned b = dcm_sample_bytes(d->bits_allocated);
    size_t size = px * d->samples * b;
    int rc = tr_buf_grow(out, size);
    if (rc < 0)
        return rc;
    uint8_t *o = (uint8_t *)out->data;
    if (d->bits_allocated == 1) {
        for (size_t i = 0; i < size; i++)
            o[i] = (uint8_t)((in[i / 8] >> (i % 8)) & 1);
    } else if (is_ybr_422(d)) {
        /* Y1 Y2 Cb Cr for each pair of pixels: chroma repeated for both. */
        for (size_t p = 0; p < px; p++) {
            size_t pair = p / 2;
            const uint8_t *src = in + pair * 4 * b;
            memcpy(o + (p * 3) * b, src + (p % 2) * b, b);
            memcpy(o + (p * 3 + 1) * b, src + 2 * b, b);
            memcpy(o + (p * 3 + 2) * b, src + 3 * b, b);
        }
        if (strcmp(d->photometric, "YBR_FULL_422") == 0) /* YBR_PARTIAL_422 keeps its name */
            snprintf(od->photometric, sizeof(od->photometric), "YBR_FULL");
    } else if (d->samples > 1 && d->planar == 1) {
        for (unsigned s = 0; s < d->samples; s++) {
            const uint8_t *plane = in + s * px * b;
            for (size_t p = 0; p < px; p++)
                memcpy(o + (p * d->samples + s) * b, plane + p * b, b);
        }
    } else {
        memcpy(o, in, TR_MIN(len, size));
    }
    out->len = size;
    /* Big endian: the reader swapped the value in units of its VR (OB: none, OW: 2 bytes);
     * samples of another size need the file's order restored and swapped by their own size. */
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
    unsigned unit = e->vr == DCM_VR_OW ? 2 : e->vr == DCM_VR_OL || e->vr == DCM_VR_OF ? 4 : 1;
    if (ts && (ts->flags & DCM_TS_BIG_ENDIAN) && b > 1 && unit != b && d->bits_allocated != 1) {
        for (size_t i = 0; i + b <= size; i += b) {
            uint8_t t[4];
            for (unsigned k = 0; k < b; k++) /* undo the reader's swap by `unit` */
                t[k] = o[i + (k / unit) * unit + (unit - 1 - k % unit)];
            for (unsigned k = 0; k < b; k++)
                o[i + k] = t[b - 1 - k];
        }
    }
    return 0;
}

/* Bring a decoder's output to the data set's sample size and sign convention. */
static int normalize(const struct dcm_codec_frame *f, struct tr_buf *out,
                     struct dcm_pixel_desc *od, const char *codec, struct tr_error *err)
{
    const struct dcm_pixel_desc *d = f->desc;
    size_t count = (size_t)d->rows * d->cols * d->samples;
    unsigned have = dcm_sample_bytes(od->bits_allocated);
    unsigned want = dcm_sample_bytes(d->bits_allocated);
    if (out->len != count * have)
        return dcm_codec_fail(err, f, codec, SIZE_MAX,
                              "the bitstream decodes to %zu bytes, the image needs %zu",
                              out->len, count * have);
    if (have != want) {
        if (have > want) { /* narrow when every value fits */
            for (size_t i = 0; i < count; i++) {
                uint32_t v = have == 2 ? tr_le16((uint8_t *)out->data + 2 * i)
                                       : tr_le32((uint8_t *)out->data + 4 * i);
                if (v >> (8 * want))
                    return dcm_codec_fail(err, f, codec, SIZE_MAX,
                                          "the bitstream has %u-bit samples, Bits Allocated is %u",
                                          od->bits_allocated, d->bits_allocated);
            }
            uint8_t *o = (uint8_t *)out->data;
            for (size_t i = 0; i < count; i++) {
                uint32_t v = have == 2 ? tr_le16(o + 2 * i) : tr_le32(o + 4 * i);
                if (want == 1)
                    o[i] = (uint8_t)v;
                else
                    tr_put_le16(o + 2 * i, (uint16_t)v);
            }
        } else {
            int rc = tr_buf_grow(out, count * want - out->len);
            if (rc < 0)
                return tr_error_set(err, rc, "frame %u: %s", f->index + 1, tr_strerror(rc));
            uint8_t *o = (uint8_t *)out->data;
            for (size_t i = count; i-- > 0;) {
                uint32_t v = have == 1 ? o[i] : tr_le16(o + 2 * i);
                if (want == 2)
                    tr_put_le16(o + 2 * i, (uint16_t)v);
                else
                    tr_put_le32(o + 4 * i, v);
            }
        }
        out->len = count * want;
    }
    od->bits_allocated = d->bits_allocated == 1 ? 8 : d->bits_allocated;
    /* Signed samples narrower than their container: sign-extend, as a native writer would. */
    unsigned bits = d->bits_stored;
    if (d->is_signed && bits < 8 * want && d->bits_allocated != 1) {
        uint8_t *o = (uint8_t *)out->data;
        uint32_t sign = 1u << (bits - 1), mask = (bits >= 32 ? 0 : ~0u << bits);
        for (size_t i = 0; i < count; i++) {
            uint32_t v = want == 1 ? o[i] : want == 2 ? tr_le16(o + 2 * i) : tr_le32(o + 4 * i);
            v = (v & sign) ? (v | mask) : (v & ~mask);
            if (want == 1)
                o[i] = (uint8_t)v;
            else if (want == 2)
                tr_put_le16(o + 2 * i, (uint16_t)v);
            else
                tr_put_le32(o + 4 * i, v);
        }
    }
    return 0;
}

static int decode_frame(const struct dcm_dataset *ds, const struct dcm_pixel_desc *d,
                        const char *ts_uid, uint32_t index, struct tr_buf *scratch,
                        struct tr_buf *out, struct dcm_pixel_desc *od, struct tr_error *err)
{
    const struct dcm_element *e = dcm_dataset_get(ds, DCM_TAG_PixelData);
    tr_buf_reset(out);
    *od = *d;
    od->planar = 0;
    size_t size = dcm_pixel_frame_size(d);
    if (size > out->max)
        return tr_error_set(err, TR_ELIMIT,
                            "frame %u: %u x %u x %u samples of %u bits (%zu bytes) is more than "
                            "the %zu bytes allowed",
                            index + 1, d->rows, d->cols, d->samples, d->bits_allocated, size,
                            out->max);
    const struct dcm_codec *c = NULL;
    if (e->flags & DCM_ELEM_ENCAPSULATED) {
        c = dcm_codec_find(ts_uid);
        if (!c || !c->decode) {
            const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
            return tr_error_set(err, TR_EUNSUPPORTED, "telerad has no decoder for %s",
                                ts ? ts->name : ts_uid);
        }
    }
    const uint8_t *bytes;
    size_t len;
    uint64_t file_offset;
    int rc = frame_encoded(ds, d, ts_uid, index, scratch, &bytes, &len, &file_offset, err);
    if (rc)
        return rc;
    if (!c) {
        rc = decode_native(e, d, ts_uid, bytes, len, out, od);
        if (rc < 0)
            return tr_error_set(err, rc, "frame %u: %s", index + 1, tr_strerror(rc));
        od->bits_allocated = d->bits_allocated == 1 ? 8 : d->bits_allocated;
        return 0;
    }
    struct dcm_codec_frame f = {bytes, len, d, index, file_offset};
    rc = c->decode(&f, out, od, err);
    if (rc == 0)
        rc = normalize(&f, out, od, c->name, err);
    if (rc)
        tr_buf_reset(out);
    return rc;
}

int dcm_pixel_decode_frame(const struct dcm_dataset *ds, const char *ts_uid, uint32_t index,
                           struct tr_buf *out, struct dcm_pixel_desc *out_desc,
                           struct tr_error *err)
{
    struct dcm_pixel_desc d, od;
    int rc = dcm_pixel_desc_read(ds, &d, err);
    if (rc)
        return rc;
    struct tr_buf scratch;
    tr_buf_init(&scratch, out->max);
    rc = decode_frame(ds, &d, ts_uid, index, &scratch, out, &od, err);
    tr_buf_release(&scratch);
    if (rc == 0 && out_desc)
        *out_desc = od;
    return rc;
}

/* ---- transcoding ------------------------------------------------------------------------------ */

#define NATIVE_MAX ((size_t)0xFFFFFFFEu) /* one value's length (PS3.5 7.1.1) */

/* Pack unpacked 1-bit samples (one byte each) into `out` at bit position *bit. */
static int pack_bits(struct tr_buf *out, uint64_t *bit, const uint8_t *in, size_t n)
{
    size_t need = (size_t)((*bit + n + 7) / 8);
    if (need > out->len) {
        int rc = tr_buf_grow(out, need - out->len);
        if (rc < 0)
            return rc;
        memset(out->data + out->len, 0, need - out->len);
        out->len = need;
    }
    uint8_t *o = (uint8_t *)out->data;
    for (size_t i = 0; i < n; i++, (*bit)++) {
        if (in[i] & 1)
            o[*bit / 8] |= (uint8_t)(1u << (*bit % 8));
    }
    return 0;
}

static int set_lossy_attributes(struct dcm_dataset *ds, const char *method, double ratio,
                                 struct tr_error *err)
{
    char was[8] = "";
    (void)dcm_dataset_get_string(ds, TAG_LossyImageCompression, 0, was, sizeof(was));
    struct tr_buf v;
    tr_buf_init(&v, 4096);
    int rc = dcm_dataset_set_string(ds, TAG_LossyImageCompression, DCM_VR_CS, "01");
    /* Ratio and method are multi-valued: one value per lossy step (PS3.3 C.7.6.1.1.5.2). */
    if (rc == 0 && method) {
        char *old = strcmp(was, "01") == 0
                        ? dcm_dataset_get_text(ds, TAG_LossyImageCompressionMethod, NULL)
                        : NULL;
        rc = tr_buf_addf(&v, "%s%s%s", old ? old : "", old ? "\\" : "", method);
        tr_free(old);
        if (rc == 0)
            rc = dcm_dataset_set_string(ds, TAG_LossyImageCompressionMethod, DCM_VR_CS, v.data);
        tr_buf_reset(&v);
        old = strcmp(was, "01") == 0
                  ? dcm_dataset_get_text(ds, TAG_LossyImageCompressionRatio, NULL)
                  : NULL;
        char r[32];
        snprintf(r, sizeof(r), "%.2f", ratio);
        if (rc == 0)
            rc = tr_buf_addf(&v, "%s%s%s", old ? old : "", old ? "\\" : "", r);
        tr_free(old);
        if (rc == 0)
            rc = dcm_dataset_set_string(ds, TAG_LossyImageCompressionRatio, DCM_VR_DS, v.data);
    }
    tr_buf_release(&v);
    if (rc < 0)
        return tr_error_set(err, rc, "setting Lossy Image Compression: %s", tr_strerror(rc));
    return 0;
}

int dcm_pixel_transcode(struct dcm_dataset *ds, const char *from_ts, const char *to_ts,
                        bool allow_lossy, struct tr_error *err)
{
    const struct dcm_transfer_syntax *from = dcm_ts_lookup(from_ts);
    const struct dcm_transfer_syntax *to = dcm_ts_lookup(to_ts);
    if (!to)
        return tr_error_set(err, TR_EUNSUPPORTED, "unknown transfer syntax %s", to_ts);
    if (!from)
        return tr_error_set(err, TR_EUNSUPPORTED, "unknown transfer syntax %s", from_ts);
    const struct dcm_element *pe = dcm_dataset_get(ds, DCM_TAG_PixelData);
    if (!pe)
        return 0;
    bool src_encapsulated = pe->flags & DCM_ELEM_ENCAPSULATED;
    bool dst_encapsulated = to->flags & DCM_TS_ENCAPSULATED;
    if (to->flags & DCM_TS_REFERENCED)
        return tr_error_set(err, TR_EUNSUPPORTED, "cannot write %s", to->name);
    if (!src_encapsulated && !dst_encapsulated)
        return 0;
    if (src_encapsulated && dst_encapsulated && strcmp(from->uid, to->uid) == 0)
        return 0;
    const struct dcm_codec *enc = NULL;
    if (dst_encapsulated) {
        enc = dcm_codec_find(to->uid);
        if (!enc || !enc->encode)
            return tr_error_set(err, TR_EUNSUPPORTED, "telerad has no encoder for %s", to->name);
        if ((to->flags & DCM_TS_LOSSY) && enc->lossy_method && !allow_lossy)
            return tr_error_set(err, TR_EDENIED,
                                "%s is lossy: pixel values would change; allow lossy "
                                "compression to use it", to->name);
    }
    struct dcm_pixel_desc d;
    int rc = dcm_pixel_desc_read(ds, &d, err);
    if (rc)
        return rc;

    struct tr_buf scratch, frame, coded, native;
    tr_buf_init(&scratch, NATIVE_MAX);
    tr_buf_init(&frame, NATIVE_MAX);
    tr_buf_init(&coded, NATIVE_MAX);
    tr_buf_init(&native, NATIVE_MAX);
    struct dcm_pixel_desc od = d, ed;
    struct dcm_element ne = {.tag = DCM_TAG_PixelData, .offset = DCM_NO_OFFSET};
    uint8_t *bot = NULL;
    uint64_t bot_pos = 0, bit = 0, encoded_total = 0;
    if (dst_encapsulated) {
        ne.vr = DCM_VR_OB;
        ne.flags = DCM_ELEM_ENCAPSULATED | DCM_ELEM_UNDEFINED_LENGTH;
        ne.length = DCM_UNDEFINED_LENGTH;
        bot = dcm_dataset_alloc(ds, (size_t)d.frames * 4);
        struct dcm_fragment f0 = {bot, d.frames * 4, DCM_NO_OFFSET};
        if (!bot || dcm_element_append_fragment(ds, &ne, &f0) < 0) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out;
        }
    }
    for (uint32_t i = 0; i < d.frames; i++) {
        if ((rc = decode_frame(ds, &d, from->uid, i, &scratch, &frame, &od, err)))
            goto out;
        if (!dst_encapsulated) {
            rc = d.bits_allocated == 1 ? pack_bits(&native, &bit, (uint8_t *)frame.data, frame.len)
                                       : tr_buf_add(&native, frame.data, frame.len);
            if (rc < 0) {
                rc = tr_error_set(err, rc, "frame %u: the native pixel data would be longer "
                                  "than one value can be (4 GiB)", i + 1);
                goto out;
            }
            continue;
        }
        struct dcm_pixel_desc in = od;
        in.bits_allocated = d.bits_allocated; /* 1-bit stays unpacked, as the encoders take it */
        ed = in;
        tr_buf_reset(&coded);
        if ((rc = enc->encode((uint8_t *)frame.data, frame.len, &in, &coded, &ed, err))) {
            tr_error_prefix(err, "frame %u: %s", i + 1, enc->name);
            goto out;
        }
        uint8_t *copy = dcm_dataset_alloc(ds, coded.len);
        struct dcm_fragment f = {copy, (uint32_t)coded.len, DCM_NO_OFFSET};
        if (!copy || dcm_element_append_fragment(ds, &ne, &f) < 0) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(copy, coded.data, coded.len);
        if (bot_pos > UINT32_MAX)
            bot = NULL; /* past 4 GiB the Basic Offset Table cannot say: leave it empty */
        if (bot)
            tr_put_le32(bot + 4 * (size_t)i, (uint32_t)bot_pos);
        bot_pos += 8 + padded_length(f.length);
        encoded_total += coded.len;
        od = ed;
    }
    if (dst_encapsulated) {
        if (!bot)
            ne.value.fragments.fragment[0].length = 0;
    } else {
        ne.vr = d.bits_allocated > 8 ? DCM_VR_OW : DCM_VR_OB;
        ne.length = (uint32_t)native.len;
        uint8_t *copy = dcm_dataset_alloc(ds, native.len);
        if (!copy) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out;
        }
        memcpy(copy, native.data, native.len);
        ne.value.bytes = copy;
    }
    /* Everything decoded and encoded: now change the data set. */
    if (!dcm_dataset_put(ds, &ne)) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    (void)dcm_dataset_remove(ds, DCM_TAG_ExtendedOffsetTable);
    (void)dcm_dataset_remove(ds, DCM_TAG_ExtendedOffsetTableLengths);
    if (strcmp(od.photometric, d.photometric) != 0 &&
        (rc = dcm_dataset_set_string(ds, TAG_PhotometricInterpretation, DCM_VR_CS,
                                     od.photometric)) < 0) {
        rc = tr_error_set(err, rc, "setting PhotometricInterpretation: %s", tr_strerror(rc));
        goto out;
    }
    if (d.samples > 1 && (rc = dcm_dataset_set_int(ds, TAG_PlanarConfiguration, DCM_VR_US, 0))) {
        rc = tr_error_set(err, rc, "setting PlanarConfiguration: %s", tr_strerror(rc));
        goto out;
    }
    /* JPEG baseline and extended are always lossy; the image stays marked so. */
    bool from_lossy = strcmp(from->uid, "1.2.840.10008.1.2.4.50") == 0 ||
                      strcmp(from->uid, "1.2.840.10008.1.2.4.51") == 0;
    if (src_encapsulated && from_lossy && !dcm_dataset_get(ds, TAG_LossyImageCompression)) {
        if ((rc = set_lossy_attributes(ds, NULL, 0, err)))
            goto out;
    }
    if (enc && enc->lossy_method) {
        double ratio = encoded_total ? (double)dcm_pixel_frame_size(&d) * d.frames /
                                           (double)encoded_total
                                     : 0;
        if ((rc = set_lossy_attributes(ds, enc->lossy_method, ratio, err)))
            goto out;
        /* A lossy image is a new image (PS3.3 C.7.6.1.1.5): it gets its own instance UID. */
        char uid[DCM_UID_MAX + 1];
        if ((rc = dcm_uid_generate(uid)) < 0 ||
            (rc = dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, uid)) < 0) {
            rc = tr_error_set(err, rc, "setting a new SOPInstanceUID: %s", tr_strerror(rc));
            goto out;
        }
    }
    rc = 0;
out:
    tr_buf_release(&scratch);
    tr_buf_release(&frame);
    tr_buf_release(&coded);
    tr_buf_release(&native);
    return rc;
}
