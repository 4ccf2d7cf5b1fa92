/*
 * render.h - rendering a DICOM image frame to an 8-bit grey or RGB picture and encoding it as
 * PNG (libspng) or JPEG (libjpeg-turbo): what a thumbnail, a DICOMweb rendered resource or a
 * `telerad render` needs (PS3.3 C.11 and C.7.6.3, PS3.4 N.2).
 *
 * The grey pipeline, in this order (PS3.4 N.2.1):
 *   stored value  - masked to BitsStored below HighBit, sign-extended if PixelRepresentation 1
 *   modality LUT  - Modality LUT Sequence, else RescaleSlope/RescaleIntercept (PS3.3 C.11.1),
 *                   for enhanced images per frame from the functional groups
 *   VOI LUT       - a window (LINEAR, LINEAR_EXACT or SIGMOID, PS3.3 C.11.2.1.2) or a VOI LUT
 *                   Sequence table, chosen by `enum dcm_voi_mode`
 *   presentation  - inverted by Presentation LUT Shape INVERSE, or for MONOCHROME1 when the
 *                   image has no Presentation LUT Shape (IDENTITY keeps MONOCHROME1 as is)
 *   8 bits        - the continuous result in [0, 255] truncated, as DCMTK's dcm2pnm does.
 * Colour: RGB as stored (more than 8 bits shifted down), YBR_FULL / YBR_FULL_422 /
 * YBR_PARTIAL_422 converted to RGB (PS3.3 C.7.6.3.1.2), PALETTE COLOR through its red, green
 * and blue tables (8 or 16 bits, segmented or not). Then crop, then the viewport: area
 * averaging when the picture shrinks, bilinear interpolation when it grows.
 *
 * Memory: one decoded frame, its 8-bit picture, the resized picture and the encoded bytes;
 * nothing else of the series or of the other frames is touched.
 */
#ifndef DCM_RENDER_H
#define DCM_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "dataset.h"
#include "error.h"
#include "pixel.h"
#include "sink.h"

/* Which VOI transformation turns modality values into grey levels. */
enum dcm_voi_mode {
    /* The image's first window (WindowCenter/WindowWidth with its VOILUTFunction), else its
     * first VOI LUT, else the frame's min-max window. DCMTK's dcm2pnm +Wi 1, +Wl 1, +Wm. */
    DCM_VOI_AUTO,
    DCM_VOI_WINDOW,       /* window_center, window_width and function from the options */
    DCM_VOI_IMAGE_WINDOW, /* the image's voi_index-th window (error if it has none) */
    DCM_VOI_IMAGE_LUT,    /* the image's voi_index-th VOI LUT Sequence item (error if none) */
    /* center (min + max + 1) / 2, width max - min + 1 over the frame's modality values (the
     * window that maps the values present onto the full output range; dcm2pnm +Wm). */
    DCM_VOI_MINMAX,
    /* No VOI: the whole range the modality output can take (e.g. 0-4095 for 12 bits stored)
     * scaled linearly to 0-255. This is dcm2pnm's default (-W). */
    DCM_VOI_NONE,
};

/* VOI LUT Function (0028,1056), PS3.3 C.11.2.1.3. */
enum dcm_voi_function {
    DCM_VOI_LINEAR,
    DCM_VOI_LINEAR_EXACT,
    DCM_VOI_SIGMOID,
};

enum dcm_image_format {
    DCM_IMAGE_PNG,
    DCM_IMAGE_JPEG,
};

struct dcm_render_options {
    uint32_t frame;                 /* 0-based frame index */
    enum dcm_voi_mode voi;          /* default DCM_VOI_AUTO */
    double window_center;           /* DCM_VOI_WINDOW */
    double window_width;            /* DCM_VOI_WINDOW: > 0 (>= 1 for LINEAR) */
    enum dcm_voi_function function; /* DCM_VOI_WINDOW (default LINEAR) */
    unsigned voi_index;             /* DCM_VOI_IMAGE_WINDOW / _IMAGE_LUT: 0 = the first */
    /* Crop, in pixels of the frame, before resizing; crop_width == 0 or crop_height == 0
     * means the whole frame. The rectangle must lie inside the frame. */
    uint32_t crop_x, crop_y, crop_width, crop_height;
    /* Viewport: the picture is scaled to fit inside width x height keeping its aspect ratio
     * (pixels taken as square). 0 leaves that side free; both 0 keeps the native size. */
    uint32_t width, height;
    enum dcm_image_format format;   /* default PNG */
    int quality;                    /* JPEG quality 1-100, default 90 */
    size_t max_frame_bytes;         /* cap on the decoded frame and on the picture
                                       (default 512 MiB) */
};

void dcm_render_options_init(struct dcm_render_options *opt);

/* An 8-bit picture: `channels` (1 grey, 3 RGB) interleaved bytes per pixel, rows top down. */
struct dcm_image {
    uint32_t width, height;
    unsigned channels;
    uint8_t *pixels; /* width * height * channels bytes, owned (tr_malloc) */
};

/* Free the pixels; the image may be reused. */
void dcm_image_release(struct dcm_image *img);

/* Render one decoded frame of `ds`: `desc` describes `frame` as dcm_pixel_decode_frame
 * produces it (native little endian, bits_allocated per sample, samples interleaved unless
 * desc->planar is 1; YBR_FULL_422 / YBR_PARTIAL_422 either already full or still with chroma
 * shared by pixel pairs, told apart by `len`). The LUT attributes are read from `ds`
 * (opt->frame selects the functional group of an enhanced image). `out` is overwritten (its
 * pixels are allocated: release them with dcm_image_release). Crop and viewport are applied;
 * format and quality are not used. */
int dcm_render_frame(const struct dcm_dataset *ds, const struct dcm_pixel_desc *desc,
                     const uint8_t *frame, size_t len, const struct dcm_render_options *opt,
                     struct dcm_image *out, struct tr_error *err);

/* Decode frame opt->frame of `ds` (in transfer syntax `ts_uid`) with dcm_pixel_decode_frame
 * and render it. Errors name the frame and the attribute at fault. */
int dcm_render_image(const struct dcm_dataset *ds, const char *ts_uid,
                     const struct dcm_render_options *opt, struct dcm_image *out,
                     struct tr_error *err);

/* Encode a picture as PNG or JPEG to `sink`. */
int dcm_image_encode(const struct dcm_image *img, enum dcm_image_format format, int quality,
                     const struct tr_sink *sink, struct tr_error *err);

/* Render and encode in one call: dcm_render_image, then dcm_image_encode with opt->format
 * and opt->quality. To a memory buffer: pass tr_sink_buf(&buf). */
int dcm_render(const struct dcm_dataset *ds, const char *ts_uid,
               const struct dcm_render_options *opt, const struct tr_sink *sink,
               struct tr_error *err);

/* ---- the pieces, exposed for tests -------------------------------------------------------- */

/* The VOI output for modality value x, in [ymin, ymax] (not rounded), by the formulas of
 * PS3.3 C.11.2.1.2.1 (LINEAR), C.11.2.1.3.2 (LINEAR_EXACT) and C.11.2.1.3.1 (SIGMOID). A
 * LINEAR window needs width >= 1, the others width > 0. */
double dcm_voi_window(enum dcm_voi_function function, double center, double width, double x,
                      double ymin, double ymax);

/* YCbCr (full range, 8 bits) to RGB, PS3.3 C.7.6.3.1.2: the inverse of the ITU-R BT.601
 * equations given there, rounded and clamped to 0-255. */
void dcm_ybr_full_to_rgb(uint8_t y, uint8_t cb, uint8_t cr, uint8_t rgb[3]);

/* Resize a picture with area averaging (shrinking) or bilinear interpolation (growing).
 * `out` receives a new picture of width x height. */
int dcm_image_resize(const struct dcm_image *in, uint32_t width, uint32_t height,
                     struct dcm_image *out, struct tr_error *err);

#endif
