/*
 * codec_int.h - the internal interface between pixel.c and the pixel data codecs
 * (codec_<name>.c). Private to src/dicom.
 *
 * A decoder turns one frame's bitstream into native samples; an encoder does the reverse.
 * pixel.c finds the frame (PS3.5 A.4), picks the codec by transfer syntax, and afterwards
 * brings the decoder's output to the data set's Bits Allocated and sign convention, so that
 * each codec stays small: it only has to report honestly what it produced.
 *
 * Decoder contract. Input: the frame's bytes and the data set's description. Output, appended
 * to `out` (empty on entry): rows x cols x samples samples, interleaved (planar configuration
 * 0), little endian, out_desc->bits_allocated bits each (8, 16 or 32); out_desc starts as a
 * copy of the data set's description and the decoder changes bits_allocated (to what it wrote)
 * and photometric (when it converted colour, e.g. YBR_FULL_422 -> RGB). 1-bit images come out
 * as one byte per pixel (0 or 1). Damaged input is TR_EFORMAT with a message made by
 * dcm_codec_fail() (it names the frame and the byte offset); nothing may be read or written out
 * of bounds whatever the bytes are.
 *
 * Encoder contract. Input: one native frame as above with the data set's bits_allocated (8, 16
 * or 32; 1-bit images unpacked to one byte per pixel) and `desc` describing it. Output: the
 * bitstream appended to `out`; out_desc->photometric changed when the encoding implies another
 * colour space (JPEG 2000 with the reversible colour transform: YBR_RCT).
 */
#ifndef DCM_CODEC_INT_H
#define DCM_CODEC_INT_H

#include "dicom_int.h"
#include "pixel.h"

/* One frame handed to a decoder. */
struct dcm_codec_frame {
    const uint8_t *bytes;
    size_t len;
    const struct dcm_pixel_desc *desc; /* the data set's image pixel module */
    uint32_t index;                    /* 0-based frame number (messages say index + 1) */
    uint64_t file_offset;              /* of bytes[0] in the file, or DCM_NO_OFFSET when the
                                          frame was assembled from several fragments */
};

typedef int (*dcm_decode_fn)(const struct dcm_codec_frame *f, struct tr_buf *out,
                             struct dcm_pixel_desc *out_desc, struct tr_error *err);
typedef int (*dcm_encode_fn)(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                             struct tr_buf *out, struct dcm_pixel_desc *out_desc,
                             struct tr_error *err);

struct dcm_codec {
    const char *ts_uid;
    const char *name;          /* for messages and docs: "RLE Lossless (telerad)" */
    dcm_decode_fn decode;      /* NULL: cannot decode */
    dcm_encode_fn encode;      /* NULL: cannot encode */
    const char *lossy_method;  /* Lossy Image Compression Method of the encoder's output
                                  (PS3.3 C.7.6.1.1.5.1), NULL when the encoder is lossless */
};

/* The codec registered for a transfer syntax, NULL if none. */
const struct dcm_codec *dcm_codec_find(const char *ts_uid);

/* TR_EFORMAT: "frame 3: JPEG-LS: at byte 52 of the frame (byte 1410 in the file): <why>".
 * `offset` is relative to f->bytes (SIZE_MAX: no offset known). Returns TR_EFORMAT. */
int dcm_codec_fail(struct tr_error *err, const struct dcm_codec_frame *f, const char *codec,
                   size_t offset, const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* The same with another code (TR_EUNSUPPORTED for valid streams we cannot decode). */
int dcm_codec_fail_code(struct tr_error *err, int code, const struct dcm_codec_frame *f,
                        const char *codec, size_t offset, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));

/* Bytes per sample of bits_allocated (1-bit: 1, as unpacked). */
static inline unsigned dcm_sample_bytes(unsigned bits_allocated)
{
    return bits_allocated <= 8 ? 1 : bits_allocated <= 16 ? 2 : 4;
}

/* ---- the codecs ---------------------------------------------------------------------------- */

/* RLE Lossless, PS3.5 Annex G (codec_rle.c). */
int dcm_rle_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                   struct dcm_pixel_desc *out_desc, struct tr_error *err);
int dcm_rle_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                   struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err);

/* The JPEG family front (codec_jpeg.c): reads the frame header of an ISO 10918-1 / 14495-1
 * stream and hands it to the decoder for its process: lossless (SOF3) to ours, JPEG-LS (SOF55)
 * to CharLS, 8-bit DCT to libjpeg-turbo, 12-bit DCT to the 12-bit IJG library. Files whose
 * transfer syntax names one process but whose stream holds another are decoded all the same. */
int dcm_jpeg_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                    struct dcm_pixel_desc *out_desc, struct tr_error *err);
/* 8-bit DCT JPEG with libjpeg-turbo (codec_jpeg.c); baseline encoder (lossy, 8-bit only). */
int dcm_jpeg8_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                     struct dcm_pixel_desc *out_desc, struct tr_error *err);
int dcm_jpeg8_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                     struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err);
/* 12-bit DCT JPEG with GDCM's 12-bit build of the IJG library (codec_jpeg12.c). */
int dcm_jpeg12_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                      struct dcm_pixel_desc *out_desc, struct tr_error *err);

/* Lossless JPEG, ISO 10918-1 process 14 with Huffman coding (codec_jpeg_lossless.c). */
int dcm_jpeg_lossless_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                             struct dcm_pixel_desc *out_desc, struct tr_error *err);
/* Selection value 1, no point transform (the DICOM default, TS .70). */
int dcm_jpeg_lossless_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                             struct tr_buf *out, struct dcm_pixel_desc *out_desc,
                             struct tr_error *err);
/* Any predictor 1-7, point transform 0..P-1 and restart interval (in MCUs, a multiple of the
 * columns as lossless JPEG requires; 0: none). Tests use them all. With a point transform the
 * low `point_transform` bits are dropped (lossy). The decoder also takes restarts that begin
 * in the middle of a line (predictions start over there; DCMTK refuses them). */
int dcm_jpeg_lossless_encode_ex(const uint8_t *native, size_t len,
                                const struct dcm_pixel_desc *desc, unsigned predictor,
                                unsigned point_transform, unsigned restart_interval,
                                struct tr_buf *out, struct tr_error *err);

/* JPEG-LS, ISO 14495-1, with CharLS (codec_jpegls.c); encoder lossless only. */
int dcm_jpegls_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                      struct dcm_pixel_desc *out_desc, struct tr_error *err);
int dcm_jpegls_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                      struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err);

/* JPEG 2000 (ISO 15444-1) and High-Throughput JPEG 2000 (15444-15), codestream or JP2, with
 * OpenJPEG (codec_j2k.c); encoder: reversible 5/3, one layer, codestream. */
int dcm_j2k_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                   struct dcm_pixel_desc *out_desc, struct tr_error *err);
int dcm_j2k_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                   struct tr_buf *out, struct dcm_pixel_desc *out_desc, struct tr_error *err);

#endif
