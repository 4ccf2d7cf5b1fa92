/*
 * codec_j2k.c - JPEG 2000 (ISO 15444-1, TS 1.2.840.10008.1.2.4.90 and .91) and
 * High-Throughput JPEG 2000 (ISO 15444-15, TS .201, .202, .203) with OpenJPEG 2.5
 * (libopenjp2-7-dev). Decoding takes a raw codestream (SOC FF4F) or a JP2 file (signature
 * box), in strict mode so that a truncated codestream is an error rather than a partly grey
 * image. Encoding writes a lossless codestream: reversible 5/3 wavelet, one quality layer, and
 * for RGB the reversible colour transform (then the photometric interpretation is YBR_RCT,
 * PS3.5 8.2.4).
 *
 * OpenJPEG reports errors through callbacks: the first error message is kept for ours; info
 * and warnings are dropped (a library never prints).
 */
#include "codec_int.h"

#include <openjpeg.h>

static const char codec[] = "JPEG 2000 (OpenJPEG)";

struct messages {
    char error[256];
};

static void on_error(const char *msg, void *user)
{
    struct messages *m = user;
    if (m->error[0])
        return;
    snprintf(m->error, sizeof(m->error), "%s", msg);
    size_t n = strlen(m->error);
    while (n && (m->error[n - 1] == '\n' || m->error[n - 1] == ' '))
        m->error[--n] = '\0';
}

static void on_quiet(const char *msg, void *user)
{
    (void)msg;
    (void)user;
}

/* ---- memory streams ----------------------------------------------------------------------------- */

struct in_stream {
    const uint8_t *p;
    size_t len, pos;
};

static OPJ_SIZE_T in_read(void *buf, OPJ_SIZE_T n, void *user)
{
    struct in_stream *s = user;
    if (s->pos >= s->len)
        return (OPJ_SIZE_T)-1;
    size_t k = TR_MIN((size_t)n, s->len - s->pos);
    memcpy(buf, s->p + s->pos, k);
    s->pos += k;
    return k;
}

static OPJ_OFF_T in_skip(OPJ_OFF_T n, void *user)
{
    struct in_stream *s = user;
    if (n < 0) {
        if ((uint64_t)-n > s->pos)
            return -1;
        s->pos -= (size_t)-n;
        return n;
    }
    size_t k = TR_MIN((uint64_t)n, (uint64_t)(s->len - s->pos));
    s->pos += k;
    return (OPJ_OFF_T)k;
}

static OPJ_BOOL in_seek(OPJ_OFF_T n, void *user)
{
    struct in_stream *s = user;
    if (n < 0 || (uint64_t)n > s->len)
        return OPJ_FALSE;
    s->pos = (size_t)n;
    return OPJ_TRUE;
}

struct out_stream {
    struct tr_buf *b;
    size_t base, pos;
};

static OPJ_SIZE_T out_write(void *buf, OPJ_SIZE_T n, void *user)
{
    struct out_stream *s = user;
    size_t end = s->base + s->pos + n;
    if (end > s->b->len) {
        size_t grow = end - s->b->len;
        if (tr_buf_grow(s->b, grow) < 0)
            return (OPJ_SIZE_T)-1;
        memset(s->b->data + s->b->len, 0, grow);
        s->b->len = end;
    }
    memcpy(s->b->data + s->base + s->pos, buf, n);
    s->pos += n;
    return n;
}

static OPJ_OFF_T out_skip(OPJ_OFF_T n, void *user)
{
    struct out_stream *s = user;
    if (n < 0 && (uint64_t)-n > s->pos)
        return -1;
    s->pos = (size_t)((OPJ_OFF_T)s->pos + n);
    return n;
}

static OPJ_BOOL out_seek(OPJ_OFF_T n, void *user)
{
    struct out_stream *s = user;
    if (n < 0)
        return OPJ_FALSE;
    s->pos = (size_t)n;
    return OPJ_TRUE;
}

/* ---- decoding -------------------------------------------------------------------------------- */

static const uint8_t jp2_signature[] = {0, 0, 0, 0x0C, 'j', 'P', ' ', ' ', 0x0D, 0x0A, 0x87, 0x0A};

/* The codestream inside a JP2 file (its jp2c box), or the input if it is one. */
static bool find_codestream(const uint8_t *p, size_t len, size_t *start)
{
    if (len >= 2 && p[0] == 0xFF && p[1] == 0x4F) {
        *start = 0;
        return true;
    }
    size_t pos = 0;
    while (len - pos >= 8) {
        uint64_t box = tr_be32(p + pos), header = 8;
        if (box == 1) {
            if (len - pos < 16)
                return false;
            box = ((uint64_t)tr_be32(p + pos + 8) << 32) | tr_be32(p + pos + 12);
            header = 16;
        } else if (box == 0) {
            box = len - pos;
        }
        if (box < header || box > len - pos)
            return false;
        if (memcmp(p + pos + 4, "jp2c", 4) == 0) {
            *start = pos + (size_t)header;
            return true;
        }
        pos += (size_t)box;
    }
    return false;
}

/* Whether the main header's COD segment asks for the multiple component transform. */
static bool uses_mct(const uint8_t *p, size_t len)
{
    size_t start;
    if (!find_codestream(p, len, &start))
        return false;
    size_t pos = start + 2;
    while (pos + 4 <= len) {
        unsigned marker = tr_be16(p + pos), seglen = tr_be16(p + pos + 2);
        if (marker == 0xFF90 || marker == 0xFF93 || (marker >> 8) != 0xFF)
            return false;
        if (marker == 0xFF52)
            return pos + 9 <= len && seglen >= 7 && p[pos + 8] != 0;
        pos += 2 + (size_t)seglen;
    }
    return false;
}

int dcm_j2k_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                   struct dcm_pixel_desc *od, struct tr_error *err)
{
    const struct dcm_pixel_desc *d = f->desc;
    OPJ_CODEC_FORMAT format;
    if (f->len >= 4 && f->bytes[0] == 0xFF && f->bytes[1] == 0x4F && f->bytes[2] == 0xFF &&
        f->bytes[3] == 0x51)
        format = OPJ_CODEC_J2K;
    else if (f->len >= sizeof(jp2_signature) &&
             memcmp(f->bytes, jp2_signature, sizeof(jp2_signature)) == 0)
        format = OPJ_CODEC_JP2;
    else
        return dcm_codec_fail(err, f, codec, 0,
                              "neither a codestream (FF4F FF51) nor a JP2 file (signature box)");

    struct messages msgs = {{0}};
    struct in_stream in = {f->bytes, f->len, 0};
    opj_codec_t *c = opj_create_decompress(format);
    opj_stream_t *stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_TRUE);
    opj_image_t *image = NULL;
    int rc = 0;
    if (!c || !stream) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    opj_stream_set_read_function(stream, in_read);
    opj_stream_set_skip_function(stream, in_skip);
    opj_stream_set_seek_function(stream, in_seek);
    opj_stream_set_user_data(stream, &in, NULL);
    opj_stream_set_user_data_length(stream, f->len);
    opj_set_error_handler(c, on_error, &msgs);
    opj_set_warning_handler(c, on_quiet, NULL);
    opj_set_info_handler(c, on_quiet, NULL);
    opj_dparameters_t params;
    opj_set_default_decoder_parameters(&params);
    if (!opj_setup_decoder(c, &params) || !opj_decoder_set_strict_mode(c, OPJ_TRUE) ||
        !opj_read_header(stream, c, &image) || !image) {
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX, "%s",
                            msgs.error[0] ? msgs.error : "cannot read the main header");
        goto out;
    }
    /* Check the size before decoding: OpenJPEG allocates what the header says. */
    if (image->numcomps != d->samples || image->x1 - image->x0 != d->cols ||
        image->y1 - image->y0 != d->rows) {
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX,
                            "the codestream is %u x %u with %u components; the data set says "
                            "%u x %u with %u samples per pixel",
                            image->x1 - image->x0, image->y1 - image->y0, image->numcomps,
                            d->cols, d->rows, d->samples);
        goto out;
    }
    if (!opj_decode(c, stream, image) || !opj_end_decompress(c, stream)) {
        rc = dcm_codec_fail(err, f, codec, SIZE_MAX, "%s",
                            msgs.error[0] ? msgs.error : "cannot decode the codestream");
        goto out;
    }
    unsigned prec = 0;
    for (unsigned k = 0; k < image->numcomps; k++) {
        const opj_image_comp_t *cp = &image->comps[k];
        if (cp->w != d->cols || cp->h != d->rows || cp->dx != 1 || cp->dy != 1 || !cp->data ||
            cp->prec < 1 || cp->prec > 16) {
            rc = dcm_codec_fail_code(err, cp->prec > 16 ? TR_EUNSUPPORTED : TR_EFORMAT, f, codec,
                                     SIZE_MAX,
                                     "component %u is %u x %u, subsampled %u x %u, %u bits", k + 1,
                                     cp->w, cp->h, cp->dx, cp->dy, cp->prec);
            goto out;
        }
        prec = TR_MAX(prec, cp->prec);
    }
    unsigned b = prec <= 8 ? 1 : 2;
    size_t px = (size_t)d->rows * d->cols, size = px * d->samples * b;
    if ((rc = tr_buf_grow(out, size)) < 0) {
        rc = tr_error_set(err, rc, "frame %u: %s", f->index + 1, tr_strerror(rc));
        goto out;
    }
    uint8_t *o = (uint8_t *)out->data;
    for (unsigned k = 0; k < image->numcomps; k++) {
        const OPJ_INT32 *src = image->comps[k].data;
        for (size_t i = 0; i < px; i++) {
            uint32_t v = (uint32_t)src[i];
            if (b == 1)
                o[i * d->samples + k] = (uint8_t)v;
            else
                tr_put_le16(o + 2 * (i * d->samples + k), (uint16_t)v);
        }
    }
    out->len = size;
    od->bits_allocated = (uint16_t)(8 * b);
    if (d->samples == 3 && (uses_mct(f->bytes, f->len) || strcmp(d->photometric, "YBR_RCT") == 0 ||
                            strcmp(d->photometric, "YBR_ICT") == 0))
        snprintf(od->photometric, sizeof(od->photometric), "RGB");
out:
    if (image)
        opj_image_destroy(image);
    if (stream)
        opj_stream_destroy(stream);
    if (c)
        opj_destroy_codec(c);
    return rc;
}

/* ---- encoding ------------------------------------------------------------------------------------ */

int dcm_j2k_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                   struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    unsigned bits = desc->bits_stored, sb = dcm_sample_bytes(desc->bits_allocated);
    unsigned nc = desc->samples;
    if (bits > 16 || sb > 2)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "JPEG 2000: telerad encodes at most 16 bits per sample, not %u", bits);
    size_t px = (size_t)desc->rows * desc->cols;
    if (len != px * nc * sb)
        return tr_error_set(err, TR_EINVAL, "JPEG 2000: the frame has %zu bytes, not %zu", len,
                            px * nc * sb);
    bool mct = nc == 3 && strcmp(desc->photometric, "RGB") == 0;
    opj_image_cmptparm_t parm[4];
    memset(parm, 0, sizeof(parm));
    for (unsigned k = 0; k < nc; k++) {
        parm[k].dx = parm[k].dy = 1;
        parm[k].w = desc->cols;
        parm[k].h = desc->rows;
        parm[k].prec = bits;
        parm[k].sgnd = desc->is_signed;
    }
    opj_image_t *image = opj_image_create(nc, parm,
                                          nc == 1 ? OPJ_CLRSPC_GRAY
                                          : mct   ? OPJ_CLRSPC_SRGB
                                                  : OPJ_CLRSPC_UNSPECIFIED);
    if (!image)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    image->x0 = image->y0 = 0;
    image->x1 = desc->cols;
    image->y1 = desc->rows;
    uint32_t mask = bits >= 32 ? ~0u : (1u << bits) - 1, sign = 1u << (bits - 1);
    for (unsigned k = 0; k < nc; k++) {
        OPJ_INT32 *dst = image->comps[k].data;
        for (size_t i = 0; i < px; i++) {
            size_t j = i * nc + k;
            uint32_t v = (sb == 1 ? native[j] : tr_le16(native + 2 * j)) & mask;
            dst[i] = desc->is_signed && (v & sign) ? (OPJ_INT32)v - (OPJ_INT32)(mask + 1)
                                                    : (OPJ_INT32)v;
        }
    }
    opj_cparameters_t params;
    opj_set_default_encoder_parameters(&params);
    params.tcp_numlayers = 1;
    params.tcp_rates[0] = 0; /* lossless */
    params.cp_disto_alloc = 1;
    params.irreversible = 0;
    params.tcp_mct = mct ? 1 : 0;
    unsigned smallest = TR_MIN(desc->rows, desc->cols);
    while (params.numresolution > 1 && (smallest >> (params.numresolution - 1)) == 0)
        params.numresolution--;

    struct messages msgs = {{0}};
    struct out_stream os = {out, out->len, 0};
    opj_codec_t *c = opj_create_compress(OPJ_CODEC_J2K);
    opj_stream_t *stream = opj_stream_create(OPJ_J2K_STREAM_CHUNK_SIZE, OPJ_FALSE);
    int rc = 0;
    if (!c || !stream) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    opj_set_error_handler(c, on_error, &msgs);
    opj_set_warning_handler(c, on_quiet, NULL);
    opj_set_info_handler(c, on_quiet, NULL);
    opj_stream_set_write_function(stream, out_write);
    opj_stream_set_skip_function(stream, out_skip);
    opj_stream_set_seek_function(stream, out_seek);
    opj_stream_set_user_data(stream, &os, NULL);
    if (!opj_setup_encoder(c, &params, image) || !opj_start_compress(c, image, stream) ||
        !opj_encode(c, stream) || !opj_end_compress(c, stream)) {
        tr_buf_truncate(out, os.base);
        rc = tr_error_set(err, TR_EINVAL, "JPEG 2000 (OpenJPEG): %s",
                          msgs.error[0] ? msgs.error : "the encoder failed");
        goto out;
    }
    if (mct)
        snprintf(out_desc->photometric, sizeof(out_desc->photometric), "YBR_RCT");
out:
    if (stream)
        opj_stream_destroy(stream);
    if (c)
        opj_destroy_codec(c);
    opj_image_destroy(image);
    return rc;
}
