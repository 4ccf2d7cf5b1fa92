/*
 * codec_jpeg12.c - 12-bit DCT JPEG (ISO 10918-1 extended process 4, TS 1.2.840.10008.1.2.4.51)
 * with the 12-bit build of the IJG library that GDCM ships in Debian (libgdcm-dev:
 * libgdcmjpeg12, headers in /usr/include/gdcm-3.0/gdcmjpeg/12, symbols prefixed
 * gdcmjpeg12_ so that it lives beside libjpeg-turbo).
 *
 * Why this library: Debian 12's libjpeg62-turbo 2.1.5 is built for 8-bit samples only (12-bit
 * needs libjpeg-turbo 3), and DCMTK's libijg12 (libdcmtk-dev) ships without its headers. See
 * docs/decisions.md. This file must not include libjpeg-turbo's jpeglib.h: both define the
 * same types with different sample sizes.
 */
#include "codec_int.h"

#include <setjmp.h>
#include <stdio.h>

/* The library was built with lossless support, which adds a method to struct
 * jpeg_memory_mgr (jpeglib.h, NEED_DARRAY): say so, or every field after it is misplaced. */
#define D_LOSSLESS_SUPPORTED
#include <gdcm-3.0/gdcmjpeg/12/jpeglib.h>
#include <gdcm-3.0/gdcmjpeg/12/jerror.h>

#define MAX_SCANS 1000

struct jpeg12_fail {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
};

static void on_error_exit(j_common_ptr c)
{
    struct jpeg12_fail *e = (struct jpeg12_fail *)c->err;
    c->err->format_message(c, e->msg);
    longjmp(e->jump, 1);
}

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
        struct jpeg12_fail *e = (struct jpeg12_fail *)c->err;
        snprintf(e->msg, sizeof(e->msg), "more than %d scans", MAX_SCANS);
        longjmp(e->jump, 1);
    }
}

/* A memory source (the IJG 6b API has none). Past the end it reports a premature end, which
 * on_emit_message turns into an error. */
static void src_init(j_decompress_ptr c)
{
    (void)c;
}

static boolean src_fill(j_decompress_ptr c)
{
    static const JOCTET eoi[2] = {0xFF, JPEG_EOI};
    c->err->msg_code = JWRN_JPEG_EOF;
    c->err->emit_message((j_common_ptr)c, -1); /* does not return */
    c->src->next_input_byte = eoi;
    c->src->bytes_in_buffer = 2;
    return TRUE;
}

static void src_skip(j_decompress_ptr c, long n)
{
    if (n <= 0)
        return;
    if ((size_t)n > c->src->bytes_in_buffer) {
        src_fill(c);
        return;
    }
    c->src->next_input_byte += n;
    c->src->bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr c)
{
    (void)c;
}

static bool is_ybr(const char *photometric)
{
    return strncmp(photometric, "YBR_", 4) == 0;
}

int dcm_jpeg12_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                      struct dcm_pixel_desc *od, struct tr_error *err)
{
    const struct dcm_pixel_desc *d = f->desc;
    struct jpeg_decompress_struct cinfo;
    struct jpeg12_fail jerr;
    struct jpeg_source_mgr src = {
        .init_source = src_init, .fill_input_buffer = src_fill, .skip_input_data = src_skip,
        .resync_to_restart = jpeg_resync_to_restart, .term_source = src_term,
        .next_input_byte = f->bytes, .bytes_in_buffer = f->len};
    struct jpeg_progress_mgr progress = {.progress_monitor = on_progress};
    JSAMPLE *volatile row = NULL;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = on_error_exit;
    jerr.pub.emit_message = on_emit_message;
    jerr.pub.output_message = on_output_message;
    jerr.msg[0] = '\0';
    if (setjmp(jerr.jump)) {
        jpeg_destroy_decompress(&cinfo);
        tr_free(row);
        return dcm_codec_fail(err, f, "JPEG 12-bit (IJG)", SIZE_MAX, "%s", jerr.msg);
    }
    jpeg_create_decompress(&cinfo);
    cinfo.progress = &progress;
    cinfo.mem->max_memory_to_use = (long)512 << 20;
    cinfo.src = &src;
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.image_width != d->cols || cinfo.image_height != d->rows ||
        cinfo.num_components != d->samples || (d->samples != 1 && d->samples != 3) ||
        cinfo.data_precision != 12) {
        int rc = dcm_codec_fail(err, f, "JPEG", SIZE_MAX,
                                "the stream is %u x %u with %d components of %d bits; the data "
                                "set says %u x %u with %u samples per pixel",
                                cinfo.image_width, cinfo.image_height, cinfo.num_components,
                                cinfo.data_precision, d->cols, d->rows, d->samples);
        jpeg_destroy_decompress(&cinfo);
        return rc;
    }
    if (d->samples == 3) {
        if (is_ybr(d->photometric) || (cinfo.saw_Adobe_marker && cinfo.Adobe_transform == 1)) {
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
    size_t count = (size_t)cinfo.output_width * (size_t)cinfo.output_components;
    size_t size = count * cinfo.output_height * 2;
    int rc = tr_buf_grow(out, size);
    JSAMPLE *r = rc == 0 ? tr_malloc(count * sizeof(JSAMPLE) + 1) : NULL;
    row = r;
    if (!r) {
        jpeg_destroy_decompress(&cinfo);
        return tr_error_set(err, rc ? rc : TR_ENOMEM, "frame %u: %s", f->index + 1,
                            tr_strerror(rc ? rc : TR_ENOMEM));
    }
    uint8_t *o = (uint8_t *)out->data;
    while (cinfo.output_scanline < cinfo.output_height) {
        size_t y = cinfo.output_scanline;
        JSAMPROW rows[1] = {r};
        if (jpeg_read_scanlines(&cinfo, rows, 1) != 1) {
            snprintf(jerr.msg, sizeof(jerr.msg), "no scanline %zu", y + 1);
            longjmp(jerr.jump, 1);
        }
        for (size_t i = 0; i < count; i++)
            tr_put_le16(o + 2 * (y * count + i), (uint16_t)r[i]);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    tr_free(r);
    out->len = size;
    od->bits_allocated = 16;
    return 0;
}
