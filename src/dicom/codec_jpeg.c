/*
 * codec_jpeg.c - JPEG (ISO 10918-1) and the JPEG family front.
 *
 * dcm_jpeg_decode reads the markers up to the frame header and sends the frame to the decoder
 * of its process, whatever the transfer syntax claims (files labelled baseline that hold a
 * lossless stream exist): SOF3 to our lossless decoder, SOF55 to CharLS (JPEG-LS), 8-bit
 * DCT processes (SOF0/1/2, arithmetic SOF9/10) to libjpeg-turbo, 12-bit DCT to GDCM's 12-bit
 * IJG build (codec_jpeg12.c).
 *
 * Colour (PS3.5 8.2.1): a 3-component stream is converted from YCbCr to RGB when the data set
 * says YBR_FULL, YBR_FULL_422 or YBR_PARTIAL_*; when it says RGB the components are taken as
 * they are (as DCMTK does), unless an Adobe APP14 marker declares the YCbCr transform.
 * libjpeg's "corrupt data" warnings that mean pixels were invented (premature end, a marker in
 * the middle of the data, a bad Huffman code) are errors here, not warnings.
 */
#include "codec_int.h"

#include <setjmp.h>
/* jpeglib.h needs FILE and size_t declared first. */
#include <stdio.h>
#include <jerror.h>
#include <jpeglib.h>

#define MAX_SCANS 1000 /* a progressive stream with more scans is refused (CPU exhaustion) */

/* ---- the front --------------------------------------------------------------------------------- */

/* Find the frame header: its marker (0xC0-0xCF, 0xF7) and sample precision. */
static int frame_header(const struct dcm_codec_frame *f, unsigned *sof, unsigned *precision,
                        struct tr_error *err)
{
    const uint8_t *p = f->bytes;
    size_t len = f->len, pos = 2;
    if (len < 4 || p[0] != 0xFF || p[1] != 0xD8)
        return dcm_codec_fail(err, f, "JPEG", 0, "no start of image marker (FFD8)");
    for (;;) {
        if (pos >= len)
            return dcm_codec_fail(err, f, "JPEG", pos, "the data ends before a frame header");
        if (p[pos] != 0xFF)
            return dcm_codec_fail(err, f, "JPEG", pos, "a marker expected, found 0x%02X", p[pos]);
        while (pos < len && p[pos] == 0xFF)
            pos++;
        if (pos >= len)
            continue;
        unsigned m = p[pos++];
        if ((m >= 0xD0 && m <= 0xD8) || m == 0x01)
            continue;
        if (m == 0xD9 || m == 0xDA)
            return dcm_codec_fail(err, f, "JPEG", pos - 2, "%s before any frame header",
                                  m == 0xD9 ? "end of image" : "a scan");
        if (len - pos < 2 || tr_be16(p + pos) < 2 || tr_be16(p + pos) > len - pos)
            return dcm_codec_fail(err, f, "JPEG", pos - 2,
                                  "marker 0x%02X has a length that runs past the end", m);
        bool is_sof = (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) ||
                      m == 0xF7;
        if (is_sof) {
            if (tr_be16(p + pos) < 3)
                return dcm_codec_fail(err, f, "JPEG", pos - 2, "the frame header is empty");
            *sof = m;
            *precision = p[pos + 2];
            return 0;
        }
        pos += tr_be16(p + pos);
    }
}

int dcm_jpeg_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                    struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    unsigned sof = 0, precision = 0;
    int rc = frame_header(f, &sof, &precision, err);
    if (rc)
        return rc;
    switch (sof) {
    case 0xC3: return dcm_jpeg_lossless_decode(f, out, out_desc, err);
    case 0xF7: return dcm_jpegls_decode(f, out, out_desc, err);
    case 0xC0: case 0xC1: case 0xC2: case 0xC9: case 0xCA:
        if (precision == 8)
            return dcm_jpeg8_decode(f, out, out_desc, err);
        if (precision == 12 && sof != 0xC9 && sof != 0xCA)
            return dcm_jpeg12_decode(f, out, out_desc, err);
        return dcm_codec_fail_code(err, TR_EUNSUPPORTED, f, "JPEG", SIZE_MAX,
                                   "%u-bit DCT JPEG (SOF%u) is not supported", precision,
                                   sof - 0xC0);
    default:
        return dcm_codec_fail_code(err, TR_EUNSUPPORTED, f, "JPEG", SIZE_MAX,
                                   "JPEG process SOF%u (hierarchical, lossless arithmetic or "
                                   "differential) is not supported", sof - 0xC0);
    }
}

/* ---- libjpeg-turbo ------------------------------------------------------------------------------ */

struct jpeg_fail {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
};

static void on_error_exit(j_common_ptr c)
{
    struct jpeg_fail *e = (struct jpeg_fail *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}

/* Warnings that mean the decoder made pixels up become errors; others are ignored. Nothing is
 * ever printed. */
static void on_emit_message(j_common_ptr c, int level)
{
    if (level >= 0)
        return;
    int code = c->err->msg_code;
    c->err->num_warnings++;
    if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_MUST_RESYNC ||
        code == JWRN_HUFF_BAD_CODE)
        on_error_exit(c);
}

static void on_output_message(j_common_ptr c)
{
    (void)c;
}

static void on_progress(j_common_ptr c)
{
    if (c->is_decompressor && ((j_decompress_ptr)c)->input_scan_number > MAX_SCANS) {
        struct jpeg_fail *e = (struct jpeg_fail *)c->err;
        snprintf(e->msg, sizeof(e->msg), "more than %d scans", MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

static bool is_ybr(const char *photometric)
{
    return strncmp(photometric, "YBR_", 4) == 0;
}

/* Decode into `out`. Separate from the caller so that nothing it keeps in registers across
 * setjmp is modified after it. */
static int jpeg8_run(const struct dcm_codec_frame *f, struct tr_buf *out,
                     struct dcm_pixel_desc *od, struct tr_error *err)
{
    const struct dcm_pixel_desc *d = f->desc;
    struct jpeg_decompress_struct cinfo;
    struct jpeg_fail jerr;
    struct jpeg_progress_mgr progress = {.progress_monitor = on_progress};
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error_exit;
    jerr.pub.emit_message = on_emit_message;
    jerr.pub.output_message = on_output_message;
    jerr.msg[0] = '\0';
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return dcm_codec_fail(err, f, "JPEG (libjpeg-turbo)", SIZE_MAX, "%s", jerr.msg);
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &progress;
    cinfo.mem->max_memory_to_use = (long)512 << 20;
    jpeg_mem_src(&cinfo, f->bytes, (unsigned long)f->len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.image_width != d->cols || cinfo.image_height != d->rows ||
        cinfo.num_components != d->samples || (d->samples != 1 && d->samples != 3)) {
        int rc = dcm_codec_fail(err, f, "JPEG", SIZE_MAX,
                                "the stream is %u x %u with %d components; the data set says "
                                "%u x %u with %u samples per pixel",
                                cinfo.image_width, cinfo.image_height, cinfo.num_components,
                                d->cols, d->rows, d->samples);
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    if (d->samples == 3) {
        if (is_ybr(d->photometric) ||
            (cinfo.saw_Adobe_marker && cinfo.Adobe_transform == 1)) {
            cinfo.jpeg_color_space = JCS_YCbCr;
            cinfo.out_color_space = JCS_RGB;
            snprintf(od->photometric, sizeof(od->photometric), "RGB");
        } else {
            cinfo.jpeg_color_space = JCS_RGB;
            cinfo.out_color_space = JCS_RGB;
        }
    } else {
        cinfo.out_color_space = JCS_GRAYSCALE;
    }
    jpeg_start_decompress(&cinfo);
    size_t stride = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    size_t size = stride * cinfo.output_height;
    int rc = tr_buf_grow(out, size);
    if (rc < 0) {
        jpeg_destroy_decompress(&cinfo);
        return tr_error_set(err, rc, "frame %u: %s", f->index + 1, tr_strerror(rc));
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = (JSAMPROW)out->data + stride * cinfo.output_scanline;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->len = size;
    od->bits_allocated = 8;
    return 0;
}

int dcm_jpeg8_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                     struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    return jpeg8_run(f, out, out_desc, err);
}

/* Baseline (process 1) encoder: 8-bit samples, quality 90; colour as YCbCr 4:2:2, which DICOM
 * calls YBR_FULL_422 (PS3.5 8.2.1). Lossy. */
int dcm_jpeg8_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                     struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    if (desc->bits_allocated != 8 || desc->bits_stored > 8 || desc->is_signed)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "JPEG baseline takes unsigned 8-bit samples, not %u bits stored in %u%s",
                            desc->bits_stored, desc->bits_allocated,
                            desc->is_signed ? " (signed)" : "");
    bool gray = desc->samples == 1 && strncmp(desc->photometric, "MONOCHROME", 10) == 0;
    bool rgb = desc->samples == 3 && strcmp(desc->photometric, "RGB") == 0;
    bool ybr = desc->samples == 3 && strcmp(desc->photometric, "YBR_FULL") == 0;
    if (!gray && !rgb && !ybr)
        return tr_error_set(err, TR_EUNSUPPORTED, "JPEG baseline cannot encode %s",
                            desc->photometric);
    size_t stride = (size_t)desc->cols * desc->samples;
    if (len != stride * desc->rows || desc->rows > 65500 || desc->cols > 65500)
        return tr_error_set(err, TR_EINVAL, "JPEG: the frame has %zu bytes, not %zu", len,
                            stride * desc->rows);
    struct jpeg_compress_struct cinfo;
    struct jpeg_fail jerr;
    unsigned char *volatile mem = NULL;
    unsigned long mem_size = 0;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error_exit;
    jerr.pub.emit_message = on_emit_message;
    jerr.pub.output_message = on_output_message;
    if (setjmp(jerr.jump)) {
        jpeg_destroy_compress(&cinfo);
        free(mem);
        return tr_error_set(err, TR_EINVAL, "JPEG (libjpeg-turbo): %s", jerr.msg);
    }
    jpeg_create_compress(&cinfo);
    unsigned char *buffer = NULL;
    jpeg_mem_dest(&cinfo, &buffer, &mem_size);
    cinfo.image_width = desc->cols;
    cinfo.image_height = desc->rows;
    cinfo.input_components = desc->samples;
    cinfo.in_color_space = gray ? JCS_GRAYSCALE : rgb ? JCS_RGB : JCS_YCbCr;
    jpeg_set_defaults(&cinfo);
    jpeg_set_quality(&cinfo, 90, TRUE);
    cinfo.write_JFIF_header = FALSE;
    cinfo.write_Adobe_marker = FALSE;
    if (!gray) {
        jpeg_set_colorspace(&cinfo, JCS_YCbCr);
        cinfo.comp_info[0].h_samp_factor = 2;
        cinfo.comp_info[0].v_samp_factor = 1;
    }
    jpeg_start_compress(&cinfo, TRUE);
    while (cinfo.next_scanline < cinfo.image_height) {
        JSAMPROW row = (JSAMPROW)(native + stride * cinfo.next_scanline);
        jpeg_write_scanlines(&cinfo, &row, 1);
        mem = buffer;
    }
    jpeg_finish_compress(&cinfo);
    mem = buffer;
    int rc = tr_buf_add(out, buffer, mem_size);
    jpeg_destroy_compress(&cinfo);
    free(buffer);
    if (rc < 0)
        return tr_error_set(err, rc, "JPEG: %s", tr_strerror(rc));
    if (!gray)
        snprintf(out_desc->photometric, sizeof(out_desc->photometric), "YBR_FULL_422");
    return 0;
}
