/*
 * pixel.h - pixel data: the image pixel module, frames, decoding, encoding, transcoding
 * (PS3.3 C.7.6.3, PS3.5 8 and A.4).
 *
 * A frame is decoded to "native" form: little endian, `bits_allocated` bits per sample (8, 16
 * or 32; 1-bit images are unpacked to 8), samples interleaved (planar configuration 0), pixel
 * values as stored (no rescale, no windowing: that is rendering's job). The codec may change
 * the photometric interpretation (JPEG baseline YBR_FULL_422 comes out as RGB, as DCMTK and
 * pydicom do); the output description says what the bytes are.
 *
 * Encapsulated frames are found with the Extended Offset Table, else the Basic Offset Table,
 * else one fragment per frame when the counts agree, else by scanning for codec start
 * markers; a frame's fragments are concatenated only when it spans several.
 */
#ifndef DCM_PIXEL_H
#define DCM_PIXEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "dataset.h"
#include "error.h"

struct dcm_pixel_desc {
    uint32_t rows, cols;
    uint32_t frames;          /* NumberOfFrames, 1 when absent */
    uint16_t samples;         /* SamplesPerPixel */
    uint16_t bits_allocated;
    uint16_t bits_stored;
    uint16_t high_bit;
    bool is_signed;           /* PixelRepresentation 1 */
    uint16_t planar;          /* PlanarConfiguration (colour only) */
    char photometric[17];     /* PhotometricInterpretation, trimmed */
};

/* Read the image pixel module of a data set. TR_ENOTFOUND when it has no pixel data;
 * TR_EFORMAT naming the attribute when a value is missing or inconsistent. */
int dcm_pixel_desc_read(const struct dcm_dataset *ds, struct dcm_pixel_desc *d,
                        struct tr_error *err);

/* Bytes of one native frame as described (interleaved, bits_allocated per sample; 1-bit
 * images count 8 bits per pixel). */
size_t dcm_pixel_frame_size(const struct dcm_pixel_desc *d);

/* The encoded bytes of frame `index` (0-based) in the data set's transfer syntax `ts_uid`: a
 * slice of the native pixel data, or the frame's compressed bitstream. *bytes points into the
 * data set when the frame is contiguous; otherwise the frame is assembled in `scratch` and
 * *bytes points there. */
int dcm_pixel_frame_encoded(const struct dcm_dataset *ds, const char *ts_uid, uint32_t index,
                            struct tr_buf *scratch, const uint8_t **bytes, size_t *len,
                            struct tr_error *err);

/* Decode frame `index` to native form in `out` (reset first). `out_desc` (may be NULL)
 * receives the description of the decoded bytes (see above). TR_EUNSUPPORTED when no codec
 * handles the transfer syntax; TR_EFORMAT naming the frame when the bitstream is damaged. */
int dcm_pixel_decode_frame(const struct dcm_dataset *ds, const char *ts_uid, uint32_t index,
                           struct tr_buf *out, struct dcm_pixel_desc *out_desc,
                           struct tr_error *err);

/* Whether frames in this transfer syntax can be decoded / encoded. */
bool dcm_pixel_can_decode(const char *ts_uid);
bool dcm_pixel_can_encode(const char *ts_uid);

/* Re-encode the pixel data of `ds` from `from_ts` to `to_ts` in place (the data set's arena
 * holds the new pixel data; photometric interpretation and related attributes are updated).
 * Lossy targets are refused unless `allow_lossy` (TR_EDENIED); a lossy result sets
 * LossyImageCompression and friends and a new SOPInstanceUID (PS3.3 C.7.6.1.1.5). Every frame
 * is decoded and encoded before the data set is changed: on error it is left as it was.
 * TR_EUNSUPPORTED when no encoder exists for `to_ts` (see dcm_pixel_can_encode). */
int dcm_pixel_transcode(struct dcm_dataset *ds, const char *from_ts, const char *to_ts,
                        bool allow_lossy, struct tr_error *err);

#endif
