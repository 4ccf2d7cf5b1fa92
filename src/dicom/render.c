/*
 * render.c - a decoded frame to an 8-bit picture: modality LUT, VOI LUT, presentation, colour
 * models, crop and resize (PS3.3 C.11, C.7.6.3, C.7.9; PS3.4 N.2), then PNG (libspng) or
 * JPEG (libjpeg-turbo). See render.h for the pipeline and docs/dicom-library.md for the
 * defaults and how they compare with DCMTK's dcm2pnm.
 *
 * Grey frames of up to 16 bits stored go through one table of 2^BitsStored output bytes,
 * built once per frame (every stage folded into it, as DCMTK does); deeper frames are mapped
 * pixel by pixel.
 */
#include "render.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>

#include <jpeglib.h>
#include <jerror.h>
#include <spng.h>

#include "dict.h"
#include "pixel.h"
#include "common.h"

/* Attributes of the image pixel, modality LUT, VOI LUT, palette and presentation modules. */
#define TAG_PhotometricInterpretation DCM_TAG(0x0028, 0x0004)
#define TAG_WindowCenter DCM_TAG(0x0028, 0x1050)
#define TAG_WindowWidth DCM_TAG(0x0028, 0x1051)
#define TAG_RescaleIntercept DCM_TAG(0x0028, 0x1052)
#define TAG_RescaleSlope DCM_TAG(0x0028, 0x1053)
#define TAG_VOILUTFunction DCM_TAG(0x0028, 0x1056)
#define TAG_RedPaletteDescriptor DCM_TAG(0x0028, 0x1101)
#define TAG_RedPaletteData DCM_TAG(0x0028, 0x1201)
#define TAG_SegmentedRedPaletteData DCM_TAG(0x0028, 0x1221)
#define TAG_ModalityLUTSequence DCM_TAG(0x0028, 0x3000)
#define TAG_LUTDescriptor DCM_TAG(0x0028, 0x3002)
#define TAG_LUTData DCM_TAG(0x0028, 0x3006)
#define TAG_VOILUTSequence DCM_TAG(0x0028, 0x3010)
#define TAG_FrameVOILUTSequence DCM_TAG(0x0028, 0x9132)
#define TAG_PixelValueTransformationSequence DCM_TAG(0x0028, 0x9145)
#define TAG_PresentationLUTShape DCM_TAG(0x2050, 0x0020)
#define TAG_SharedFunctionalGroupsSequence DCM_TAG(0x5200, 0x9229)
#define TAG_PerFrameFunctionalGroupsSequence DCM_TAG(0x5200, 0x9230)

#define DEFAULT_MAX_FRAME_BYTES ((size_t)512 << 20)
#define MAX_OUTPUT_SIDE 65535u

void dcm_render_options_init(struct dcm_render_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->voi = DCM_VOI_AUTO;
    opt->function = DCM_VOI_LINEAR;
    opt->format = DCM_IMAGE_PNG;
    opt->quality = 90;
    opt->max_frame_bytes = DEFAULT_MAX_FRAME_BYTES;
}

void dcm_image_release(struct dcm_image *img)
{
    if (!img)
        return;
    tr_free(img->pixels);
    memset(img, 0, sizeof(*img));
}

static int image_alloc(struct dcm_image *img, uint32_t width, uint32_t height, unsigned channels,
                       size_t cap, struct tr_error *err)
{
    memset(img, 0, sizeof(*img));
    uint64_t size = (uint64_t)width * height * channels;
    if (size == 0 || size > cap)
        return tr_error_set(err, TR_ELIMIT, "a %ux%u picture exceeds the cap of %zu bytes", width,
                            height, cap);
    img->pixels = tr_malloc((size_t)size);
    if (!img->pixels)
        return tr_error_set(err, TR_ENOMEM, "out of memory for a %ux%u picture", width, height);
    img->width = width;
    img->height = height;
    img->channels = channels;
    return 0;
}

/* ---- the VOI functions (PS3.3 C.11.2.1.2, C.11.2.1.3) ------------------------------------- */

double dcm_voi_window(enum dcm_voi_function function, double center, double width, double x,
                      double ymin, double ymax)
{
    switch (function) {
    case DCM_VOI_LINEAR_EXACT:
        /* C.11.2.1.3.2 */
        if (x <= center - width / 2)
            return ymin;
        if (x > center + width / 2)
            return ymax;
        return ((x - center) / width + 0.5) * (ymax - ymin) + ymin;
    case DCM_VOI_SIGMOID:
        /* C.11.2.1.3.1 */
        return (ymax - ymin) / (1 + exp(-4 * (x - center) / width)) + ymin;
    case DCM_VOI_LINEAR:
    default:
        /* C.11.2.1.2.1: with width 1 the step is at center - 0.5. */
        if (x <= center - 0.5 - (width - 1) / 2)
            return ymin;
        if (x > center - 0.5 + (width - 1) / 2)
            return ymax;
        return ((x - (center - 0.5)) / (width - 1) + 0.5) * (ymax - ymin) + ymin;
    }
}

static bool window_width_valid(enum dcm_voi_function function, double width)
{
    return function == DCM_VOI_LINEAR ? width >= 1 : width > 0;
}

/* ---- lookup tables (PS3.3 C.11.1.1, C.11.2.1.1, C.7.6.3.1.5, C.7.9.2) ---------------------- */

struct lut {
    uint32_t count;      /* entries */
    int32_t first;       /* the first input value mapped */
    unsigned bits;       /* bits per entry, 8 or 16 (up to 16) */
    const uint8_t *data; /* entries: 16-bit little endian words, or bytes (entry_size 1) */
    unsigned entry_size;
    unsigned word_shift; /* 8-bit entries kept in the high byte of their word */
    uint16_t *owned;     /* expanded segmented table (tr_malloc), else NULL */
};

static void lut_release(struct lut *l)
{
    tr_free(l->owned);
    memset(l, 0, sizeof(*l));
}

static uint32_t lut_entry(const struct lut *l, uint32_t i)
{
    if (l->owned)
        return l->owned[i];
    if (l->entry_size == 1)
        return l->data[i];
    return (uint32_t)tr_le16(l->data + 2 * (size_t)i) >> l->word_shift;
}

/* The table's output for input x: clamped to the first and last entries (C.11.1.1.1). */
static uint32_t lut_lookup(const struct lut *l, double x)
{
    double i = floor(x) - l->first;
    if (i <= 0)
        return lut_entry(l, 0);
    if (i >= l->count - 1)
        return lut_entry(l, l->count - 1);
    return lut_entry(l, (uint32_t)i);
}

static const char *tag_text(uint32_t tag, char buf[80])
{
    const char *kw = dcm_dict_keyword(tag);
    snprintf(buf, 80, "(%04X,%04X)%s%s", DCM_TAG_GROUP(tag), DCM_TAG_ELEMENT(tag), *kw ? " " : "",
             kw);
    return buf;
}

/* A value of a binary element as raw words: what LUT descriptors and data are. */
static const struct dcm_element *binary_element(const struct dcm_dataset *ds, uint32_t tag)
{
    const struct dcm_element *e = dcm_dataset_get(ds, tag);
    if (!e || e->length == 0 || (e->flags & DCM_ELEM_ENCAPSULATED))
        return NULL;
    enum dcm_vr_kind kind = dcm_vr_info(e->vr)->kind;
    if (kind != DCM_VR_KIND_NUMBER && kind != DCM_VR_KIND_BYTES)
        return NULL;
    return e;
}

/* Read a LUT descriptor (count, first mapped, bits). The first mapped value is signed when the
 * element is SS or `signed_input` says the values it maps are signed (C.11.1.1.1). */
static int read_descriptor(const struct dcm_dataset *ds, uint32_t tag, bool signed_input,
                           struct lut *l, struct tr_error *err)
{
    char name[80];
    const struct dcm_element *e = binary_element(ds, tag);
    if (!e || e->length < 6)
        return tr_error_set(err, TR_EFORMAT, "%s is missing or has fewer than 3 values",
                            tag_text(tag, name));
    uint16_t count = tr_le16(e->value.bytes), first = tr_le16(e->value.bytes + 2),
             bits = tr_le16(e->value.bytes + 4);
    l->count = count ? count : 65536;
    l->first = (signed_input || e->vr == DCM_VR_SS) ? (int32_t)(int16_t)first : (int32_t)first;
    if (bits < 1 || bits > 16)
        return tr_error_set(err, TR_EFORMAT, "%s: %u bits per entry (1 to 16 are possible)",
                            tag_text(tag, name), bits);
    l->bits = bits;
    return 0;
}

/* Point the LUT at its data: 16-bit words, or for tables of 8-bit entries either bytes (as
 * PS3.3 C.7.6.3.1.6 says) or one entry per word (as many writers do), told by the length. */
static int attach_data(const struct dcm_dataset *ds, uint32_t tag, struct lut *l,
                       struct tr_error *err)
{
    char name[80];
    const struct dcm_element *e = binary_element(ds, tag);
    if (!e)
        return tr_error_set(err, TR_EFORMAT, "%s is missing", tag_text(tag, name));
    l->data = e->value.bytes;
    if (e->length >= 2 * (uint64_t)l->count) {
        l->entry_size = 2;
        if (l->bits <= 8) {
            /* One 8-bit entry per word: in the low byte, or in the high byte when no low
             * byte is used. */
            uint32_t low = 0, high = 0;
            for (uint32_t i = 0; i < l->count; i++) {
                low |= l->data[2 * (size_t)i];
                high |= l->data[2 * (size_t)i + 1];
            }
            l->word_shift = (low == 0 && high != 0) ? 8 : 0;
            if (l->word_shift == 0 && high != 0)
                l->bits = 16; /* the words use all 16 bits, whatever the descriptor says */
        }
        return 0;
    }
    if (l->bits <= 8 && e->length >= l->count) {
        l->entry_size = 1;
        return 0;
    }
    return tr_error_set(err, TR_EFORMAT, "%s has %u bytes, too few for %u entries",
                        tag_text(tag, name), e->length, l->count);
}

/* Expand segmented palette data (PS3.3 C.7.9.2): discrete (0), linear (1) and indirect (2)
 * segments of 16-bit words. An indirect segment may not point at another indirect segment, so
 * the expansion is at most two levels deep. */
static int expand_segments(const uint8_t *words, uint32_t nwords, uint32_t pos, uint32_t nsegments,
                           bool allow_indirect, uint16_t *out, uint32_t cap, uint32_t *n)
{
    for (uint32_t seg = 0; seg < nsegments && pos < nwords; seg++) {
        if (pos + 2 > nwords)
            return TR_EFORMAT;
        uint16_t opcode = tr_le16(words + 2 * (size_t)pos), length = tr_le16(words + 2 * (size_t)pos + 2);
        pos += 2;
        if (opcode == 0) {
            if ((uint64_t)pos + length > nwords || (uint64_t)*n + length > cap)
                return TR_EFORMAT;
            for (uint32_t i = 0; i < length; i++)
                out[(*n)++] = tr_le16(words + 2 * (size_t)(pos + i));
            pos += length;
        } else if (opcode == 1) {
            if (pos + 1 > nwords || *n == 0 || (uint64_t)*n + length > cap)
                return TR_EFORMAT;
            double y0 = out[*n - 1], y1 = tr_le16(words + 2 * (size_t)pos);
            pos += 1;
            for (uint32_t i = 1; i <= length; i++)
                out[(*n)++] = (uint16_t)lround(y0 + (y1 - y0) * i / length);
        } else if (opcode == 2 && allow_indirect) {
            if (pos + 2 > nwords || *n == 0)
                return TR_EFORMAT;
            /* The byte offset, least significant word first; the segments start there. */
            uint32_t offset = tr_le16(words + 2 * (size_t)pos) |
                              ((uint32_t)tr_le16(words + 2 * (size_t)pos + 2) << 16);
            pos += 2;
            if (offset % 2 || offset / 2 >= nwords)
                return TR_EFORMAT;
            int rc = expand_segments(words, nwords, offset / 2, length, false, out, cap, n);
            if (rc)
                return rc;
        } else {
            return TR_EFORMAT;
        }
    }
    return 0;
}

static int attach_segmented(const struct dcm_dataset *ds, uint32_t tag, struct lut *l,
                            struct tr_error *err)
{
    char name[80];
    const struct dcm_element *e = binary_element(ds, tag);
    if (!e)
        return tr_error_set(err, TR_EFORMAT, "%s is missing", tag_text(tag, name));
    l->owned = tr_malloc(sizeof(uint16_t) * l->count);
    if (!l->owned)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    uint32_t n = 0;
    if (expand_segments(e->value.bytes, e->length / 2, 0, UINT32_MAX, true, l->owned, l->count,
                        &n) < 0 ||
        n == 0)
        return tr_error_set(err, TR_EFORMAT, "%s: malformed segments", tag_text(tag, name));
    /* Entries past the last segment repeat its value. */
    for (uint32_t i = n; i < l->count; i++)
        l->owned[i] = l->owned[n - 1];
    return 0;
}

/* A LUT from an item holding LUT Descriptor and LUT Data (modality and VOI LUT sequences). */
static int read_sequence_lut(const struct dcm_dataset *item, bool signed_input, struct lut *l,
                             struct tr_error *err)
{
    int rc = read_descriptor(item, TAG_LUTDescriptor, signed_input, l, err);
    if (rc == 0)
        rc = attach_data(item, TAG_LUTData, l, err);
    return rc;
}

/* ---- where the attributes are: top level or functional groups (PS3.3 C.7.6.16) ------------ */

static const struct dcm_dataset *first_item(const struct dcm_dataset *ds, uint32_t tag)
{
    const struct dcm_element *e = ds ? dcm_dataset_get(ds, tag) : NULL;
    if (!e || e->vr != DCM_VR_SQ)
        return NULL;
    return dcm_element_item(e, 0);
}

/* The item of functional group `macro` for `frame`: per-frame first, then shared. */
static const struct dcm_dataset *functional_group(const struct dcm_dataset *ds, uint32_t frame,
                                                  uint32_t macro)
{
    const struct dcm_element *e = dcm_dataset_get(ds, TAG_PerFrameFunctionalGroupsSequence);
    if (e && e->vr == DCM_VR_SQ && frame < dcm_element_item_count(e)) {
        const struct dcm_dataset *item = first_item(dcm_element_item(e, frame), macro);
        if (item)
            return item;
    }
    return first_item(first_item(ds, TAG_SharedFunctionalGroupsSequence), macro);
}

/* ---- grey --------------------------------------------------------------------------------- */

enum voi_kind { VOI_KIND_WINDOW, VOI_KIND_LUT, VOI_KIND_NONE };

struct grey {
    /* stored values (PS3.5 8.1.1) */
    unsigned bytes; /* per sample */
    unsigned shift; /* HighBit + 1 - BitsStored */
    uint32_t mask;
    unsigned bits;
    bool is_signed;
    int64_t stored_min, stored_max; /* the range BitsStored allows */
    /* modality */
    bool has_modality_lut;
    struct lut modality_lut;
    double slope, intercept;
    /* VOI */
    enum voi_kind voi;
    enum dcm_voi_function function;
    double center, width;
    struct lut voi_lut;
    double abs_min, abs_max; /* VOI_KIND_NONE */
    bool invert;
};

static inline int64_t stored_value(const struct grey *g, const uint8_t *p)
{
    uint32_t raw = g->bytes == 1 ? p[0] : g->bytes == 2 ? tr_le16(p) : tr_le32(p);
    uint32_t v = (raw >> g->shift) & g->mask;
    if (g->is_signed && ((v >> (g->bits - 1)) & 1))
        return (int64_t)v - ((int64_t)1 << g->bits);
    return v;
}

static inline double modality_value(const struct grey *g, int64_t s)
{
    if (g->has_modality_lut)
        return lut_lookup(&g->modality_lut, (double)s);
    return (double)s * g->slope + g->intercept;
}

/* The grey level before truncation, presentation applied. */
static inline double grey_level(const struct grey *g, double m)
{
    double y;
    switch (g->voi) {
    case VOI_KIND_WINDOW:
        y = dcm_voi_window(g->function, g->center, g->width, m, 0, 255);
        break;
    case VOI_KIND_LUT:
        /* Table values span 0 .. 2^bits - 1; as dcm2pnm: y = v * 256 / 2^bits. */
        y = lut_lookup(&g->voi_lut, m) * 256.0 / (double)((uint32_t)1 << g->voi_lut.bits);
        break;
    case VOI_KIND_NONE:
    default:
        y = (m - g->abs_min) * 256.0 / (g->abs_max - g->abs_min + 1);
        break;
    }
    if (g->invert)
        y = 255 - y;
    return y;
}

static inline uint8_t to_byte(double y)
{
    if (!(y > 0)) /* also NaN */
        return 0;
    if (y >= 255)
        return 255;
    return (uint8_t)y;
}

/* The modality values' range over the frame (for the min-max window). */
static void frame_min_max(const struct grey *g, const uint8_t *frame, size_t npixels,
                          double *min, double *max)
{
    int64_t smin = INT64_MAX, smax = INT64_MIN;
    double mmin = INFINITY, mmax = -INFINITY;
    for (size_t i = 0; i < npixels; i++) {
        int64_t s = stored_value(g, frame + i * g->bytes);
        if (g->has_modality_lut) {
            double m = modality_value(g, s);
            mmin = m < mmin ? m : mmin;
            mmax = m > mmax ? m : mmax;
        } else {
            smin = s < smin ? s : smin;
            smax = s > smax ? s : smax;
        }
    }
    if (!g->has_modality_lut) {
        double a = modality_value(g, smin), b = modality_value(g, smax);
        mmin = a < b ? a : b;
        mmax = a < b ? b : a;
    }
    *min = mmin;
    *max = mmax;
}

static void read_rescale(const struct dcm_dataset *ds, uint32_t frame, struct grey *g)
{
    g->slope = 1;
    g->intercept = 0;
    const struct dcm_dataset *src = functional_group(ds, frame, TAG_PixelValueTransformationSequence);
    if (!src || !dcm_dataset_get(src, TAG_RescaleSlope))
        src = ds;
    double v;
    if (dcm_dataset_get_float(src, TAG_RescaleSlope, 0, &v) == 0 && isfinite(v) && v != 0)
        g->slope = v;
    if (dcm_dataset_get_float(src, TAG_RescaleIntercept, 0, &v) == 0 && isfinite(v))
        g->intercept = v;
}

static enum dcm_voi_function read_function(const struct dcm_dataset *ds)
{
    char text[32];
    if (dcm_dataset_get_string(ds, TAG_VOILUTFunction, 0, text, sizeof(text)) < 0)
        return DCM_VOI_LINEAR;
    if (strcmp(text, "LINEAR_EXACT") == 0)
        return DCM_VOI_LINEAR_EXACT;
    if (strcmp(text, "SIGMOID") == 0)
        return DCM_VOI_SIGMOID;
    return DCM_VOI_LINEAR;
}

/* The data set's `index`-th window: TR_ENOTFOUND when it has none, or none usable. */
static int image_window(const struct dcm_dataset *ds, uint32_t frame, unsigned index,
                        struct grey *g)
{
    const struct dcm_dataset *src = functional_group(ds, frame, TAG_FrameVOILUTSequence);
    if (!src || !dcm_dataset_get(src, TAG_WindowCenter))
        src = ds;
    double c, w;
    if (dcm_dataset_get_float(src, TAG_WindowCenter, index, &c) < 0 ||
        dcm_dataset_get_float(src, TAG_WindowWidth, index, &w) < 0 || !isfinite(c) ||
        !isfinite(w))
        return TR_ENOTFOUND;
    enum dcm_voi_function f = read_function(src);
    if (!window_width_valid(f, w))
        return TR_ENOTFOUND;
    g->voi = VOI_KIND_WINDOW;
    g->function = f;
    g->center = c;
    g->width = w;
    return 0;
}

/* The data set's `index`-th VOI LUT: TR_ENOTFOUND when it has none. */
static int image_voi_lut(const struct dcm_dataset *ds, uint32_t frame, unsigned index,
                         struct grey *g, struct tr_error *err)
{
    const struct dcm_element *e = NULL;
    const struct dcm_dataset *fg = functional_group(ds, frame, TAG_FrameVOILUTSequence);
    if (fg)
        e = dcm_dataset_get(fg, TAG_VOILUTSequence);
    if (!e)
        e = dcm_dataset_get(ds, TAG_VOILUTSequence);
    if (!e || e->vr != DCM_VR_SQ || index >= dcm_element_item_count(e))
        return TR_ENOTFOUND;
    /* VOI LUT input is the modality output: signed when the stored values are signed and no
     * modality LUT made them unsigned, or when rescaling can make them negative. */
    bool signed_input = g->has_modality_lut ? false
                                            : (g->is_signed || g->intercept < 0 || g->slope < 0);
    int rc = read_sequence_lut(dcm_element_item(e, index), signed_input, &g->voi_lut, err);
    if (rc) {
        tr_error_prefix(err, "VOI LUT Sequence item %u", index + 1);
        return rc;
    }
    g->voi = VOI_KIND_LUT;
    return 0;
}

/* The window from the lowest to the highest modality value of the frame, as dcm2pnm +Wm
 * computes it: center (min + max + 1) / 2, width max - min + 1. */
static void set_min_max_window(struct grey *g, const uint8_t *frame, size_t npixels)
{
    double min, max;
    frame_min_max(g, frame, npixels, &min, &max);
    g->voi = VOI_KIND_WINDOW;
    g->function = DCM_VOI_LINEAR;
    g->center = (min + max + 1) / 2;
    g->width = max - min + 1;
}

static int setup_voi(const struct dcm_dataset *ds, const struct dcm_render_options *opt,
                     const uint8_t *frame, size_t npixels, struct grey *g, struct tr_error *err)
{
    int rc;
    switch (opt->voi) {
    case DCM_VOI_WINDOW:
        if (!window_width_valid(opt->function, opt->window_width) ||
            !isfinite(opt->window_center))
            return tr_error_set(err, TR_EINVAL,
                                "window width %g is not valid (a LINEAR window needs a width of "
                                "at least 1, the other functions a width above 0)",
                                opt->window_width);
        g->voi = VOI_KIND_WINDOW;
        g->function = opt->function;
        g->center = opt->window_center;
        g->width = opt->window_width;
        return 0;
    case DCM_VOI_IMAGE_WINDOW:
        if (image_window(ds, opt->frame, opt->voi_index, g) < 0)
            return tr_error_set(err, TR_ENOTFOUND,
                                "the image has no usable window %u (WindowCenter/WindowWidth)",
                                opt->voi_index + 1);
        return 0;
    case DCM_VOI_IMAGE_LUT:
        rc = image_voi_lut(ds, opt->frame, opt->voi_index, g, err);
        if (rc == TR_ENOTFOUND)
            return tr_error_set(err, rc, "the image has no VOI LUT %u (VOILUTSequence)",
                                opt->voi_index + 1);
        return rc;
    case DCM_VOI_NONE: {
        g->voi = VOI_KIND_NONE;
        if (g->has_modality_lut) {
            g->abs_min = 0;
            g->abs_max = (double)(((uint32_t)1 << g->modality_lut.bits) - 1);
        } else {
            double a = modality_value(g, g->stored_min), b = modality_value(g, g->stored_max);
            g->abs_min = a < b ? a : b;
            g->abs_max = a < b ? b : a;
        }
        return 0;
    }
    case DCM_VOI_AUTO:
        if (image_window(ds, opt->frame, 0, g) == 0)
            return 0;
        rc = image_voi_lut(ds, opt->frame, 0, g, err);
        if (rc != TR_ENOTFOUND)
            return rc;
        set_min_max_window(g, frame, npixels);
        return 0;
    case DCM_VOI_MINMAX:
    default:
        set_min_max_window(g, frame, npixels);
        return 0;
    }
}

static bool is_word(const char *text, const char *word)
{
    return strcmp(text, word) == 0;
}

static int render_grey(const struct dcm_dataset *ds, const struct dcm_pixel_desc *d,
                       const uint8_t *frame, const struct dcm_render_options *opt,
                       struct dcm_image *out, struct tr_error *err)
{
    struct grey g;
    memset(&g, 0, sizeof(g));
    g.bytes = d->bits_allocated <= 8 ? 1 : d->bits_allocated / 8;
    g.bits = d->bits_stored;
    g.shift = d->high_bit + 1u - d->bits_stored;
    g.mask = g.bits == 32 ? UINT32_MAX : ((uint32_t)1 << g.bits) - 1;
    g.is_signed = d->is_signed;
    g.stored_min = g.is_signed ? -((int64_t)1 << (g.bits - 1)) : 0;
    g.stored_max = g.is_signed ? ((int64_t)1 << (g.bits - 1)) - 1 : ((int64_t)1 << g.bits) - 1;
    size_t npixels = (size_t)d->rows * d->cols;
    int rc = 0;
    uint8_t *table = NULL;

    /* Modality: the Modality LUT Sequence wins over rescaling (PS3.3 C.11.1: they are
     * mutually exclusive). */
    const struct dcm_dataset *mlut = first_item(ds, TAG_ModalityLUTSequence);
    if (mlut) {
        rc = read_sequence_lut(mlut, g.is_signed, &g.modality_lut, err);
        if (rc) {
            tr_error_prefix(err, "Modality LUT Sequence");
            goto out;
        }
        g.has_modality_lut = true;
    } else {
        read_rescale(ds, opt->frame, &g);
    }

    rc = setup_voi(ds, opt, frame, npixels, &g, err);
    if (rc)
        goto out;

    /* Presentation (PS3.3 C.11.6.1.2, PS3.4 N.2): Presentation LUT Shape, when present, says
     * whether the VOI output is inverted (INVERSE) or not (IDENTITY); without it, MONOCHROME1
     * is inverted (low values white). So MONOCHROME1 with INVERSE, as DX images carry it, is
     * one inversion, not two; dcm2pnm decides the same way. */
    char shape[32];
    if (dcm_dataset_get_string(ds, TAG_PresentationLUTShape, 0, shape, sizeof(shape)) >= 0 &&
        (is_word(shape, "INVERSE") || is_word(shape, "IDENTITY")))
        g.invert = is_word(shape, "INVERSE");
    else
        g.invert = is_word(d->photometric, "MONOCHROME1");

    rc = image_alloc(out, d->cols, d->rows, 1, opt->max_frame_bytes, err);
    if (rc)
        goto out;
    if (g.bits <= 16) {
        size_t entries = (size_t)1 << g.bits;
        table = tr_malloc(entries);
        if (!table) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < entries; i++)
            table[i] = to_byte(grey_level(&g, modality_value(&g, g.stored_min + (int64_t)i)));
        for (size_t i = 0; i < npixels; i++)
            out->pixels[i] = table[stored_value(&g, frame + i * g.bytes) - g.stored_min];
    } else {
        for (size_t i = 0; i < npixels; i++)
            out->pixels[i] =
                to_byte(grey_level(&g, modality_value(&g, stored_value(&g, frame + i * g.bytes))));
    }
out:
    tr_free(table);
    lut_release(&g.modality_lut);
    lut_release(&g.voi_lut);
    if (rc)
        dcm_image_release(out);
    return rc;
}

/* ---- colour ------------------------------------------------------------------------------- */

static inline uint8_t clamp_round(double v)
{
    if (!(v > 0))
        return 0;
    if (v >= 255)
        return 255;
    return (uint8_t)(v + 0.5 >= 255 ? 255 : v + 0.5);
}

void dcm_ybr_full_to_rgb(uint8_t y, uint8_t cb, uint8_t cr, uint8_t rgb[3])
{
    /* PS3.3 C.7.6.3.1.2 gives Y = .2990R + .5870G + .1140B, CB = -.1687R - .3313G + .5000B
     * + 128, CR = .5000R - .4187G - .0813B + 128; this is its inverse. */
    double b = cb - 128.0, r = cr - 128.0;
    rgb[0] = clamp_round(y + 1.402 * r);
    rgb[1] = clamp_round(y - 0.344136 * b - 0.714136 * r);
    rgb[2] = clamp_round(y + 1.772 * b);
}

/* YBR_PARTIAL (ITU-R BT.601 studio range: Y 16-235, CB and CR 16-240) to RGB. */
static void ybr_partial_to_rgb(uint8_t y, uint8_t cb, uint8_t cr, uint8_t rgb[3])
{
    double yy = 1.164383 * (y - 16.0), b = cb - 128.0, r = cr - 128.0;
    rgb[0] = clamp_round(yy + 1.596027 * r);
    rgb[1] = clamp_round(yy - 0.391762 * b - 0.812968 * r);
    rgb[2] = clamp_round(yy + 2.017232 * b);
}

struct colour {
    unsigned bytes, bits;
    uint32_t mask;
    size_t npixels;
    bool planar;
    bool pairs; /* chroma shared by pixel pairs: Y0 Y1 CB CR */
};

static inline uint32_t sample_at(const struct colour *c, const uint8_t *frame, size_t i,
                                 unsigned s)
{
    size_t k;
    if (c->pairs)
        k = (i / 2) * 4 + (s == 0 ? (i & 1) : s + 1);
    else if (c->planar)
        k = s * c->npixels + i;
    else
        k = i * 3 + s;
    const uint8_t *p = frame + k * c->bytes;
    uint32_t raw = c->bytes == 1 ? p[0] : c->bytes == 2 ? tr_le16(p) : tr_le32(p);
    return raw & c->mask;
}

/* A sample of `bits` bits to 8 bits: shifted down, or stretched as dcm2pnm does. */
static inline uint8_t sample_to_8(uint32_t v, unsigned bits)
{
    if (bits == 8)
        return (uint8_t)v;
    if (bits > 8)
        return (uint8_t)(v >> (bits - 8));
    return (uint8_t)((double)v * 255.0 / (double)(((uint32_t)1 << bits) - 1));
}

static int render_colour(const struct dcm_pixel_desc *d, const uint8_t *frame, size_t len,
                         const struct dcm_render_options *opt, struct dcm_image *out,
                         struct tr_error *err)
{
    struct colour c;
    memset(&c, 0, sizeof(c));
    c.bytes = d->bits_allocated <= 8 ? 1 : d->bits_allocated / 8;
    c.bits = d->bits_stored;
    c.mask = c.bits == 32 ? UINT32_MAX : ((uint32_t)1 << c.bits) - 1;
    c.npixels = (size_t)d->rows * d->cols;
    c.planar = d->planar == 1;
    const char *pi = d->photometric;
    bool full = is_word(pi, "YBR_FULL") || is_word(pi, "YBR_FULL_422");
    bool partial = is_word(pi, "YBR_PARTIAL_422") || is_word(pi, "YBR_PARTIAL_420");
    bool subsampled = is_word(pi, "YBR_FULL_422") || partial;
    /* JPEG 2000's YBR_ICT / YBR_RCT are undone by the codec, which says RGB; a decoder that
     * keeps the label has still produced RGB samples (the transform is part of the codestream). */
    if (!full && !partial && !is_word(pi, "RGB") && !is_word(pi, "YBR_ICT") &&
        !is_word(pi, "YBR_RCT"))
        return tr_error_set(err, TR_EUNSUPPORTED, "photometric interpretation %s is not supported",
                            pi);
    if (subsampled && len < c.npixels * 3 * c.bytes) {
        /* Native YBR_FULL_422: two luminance samples share one CB and one CR (PS3.3
         * C.7.6.3.1.2), pixel pairs counted through the frame as a whole. */
        if (len < (c.npixels + 1) / 2 * 4 * c.bytes)
            return tr_error_set(err, TR_EFORMAT, "%s frame of %zu bytes is too short", pi, len);
        c.pairs = true;
        c.planar = false;
    } else if (len < c.npixels * 3 * c.bytes) {
        return tr_error_set(err, TR_EFORMAT, "frame of %zu bytes is too short for %ux%u %s", len,
                            d->cols, d->rows, pi);
    }
    int rc = image_alloc(out, d->cols, d->rows, 3, opt->max_frame_bytes, err);
    if (rc)
        return rc;
    uint8_t *q = out->pixels;
    for (size_t i = 0; i < c.npixels; i++, q += 3) {
        uint8_t s0 = sample_to_8(sample_at(&c, frame, i, 0), c.bits),
                s1 = sample_to_8(sample_at(&c, frame, i, 1), c.bits),
                s2 = sample_to_8(sample_at(&c, frame, i, 2), c.bits);
        if (full) {
            dcm_ybr_full_to_rgb(s0, s1, s2, q);
        } else if (partial) {
            ybr_partial_to_rgb(s0, s1, s2, q);
        } else {
            q[0] = s0;
            q[1] = s1;
            q[2] = s2;
        }
    }
    return 0;
}

/* PALETTE COLOR (PS3.3 C.7.6.3.1.5): each stored value indexes the red, green and blue tables. */
static int render_palette(const struct dcm_dataset *ds, const struct dcm_pixel_desc *d,
                          const uint8_t *frame, const struct dcm_render_options *opt,
                          struct dcm_image *out, struct tr_error *err)
{
    struct lut lut[3];
    memset(lut, 0, sizeof(lut));
    int rc = 0;
    for (unsigned k = 0; k < 3 && rc == 0; k++) {
        rc = read_descriptor(ds, TAG_RedPaletteDescriptor + k, d->is_signed, &lut[k], err);
        if (rc)
            break;
        if (dcm_dataset_get(ds, TAG_RedPaletteData + k))
            rc = attach_data(ds, TAG_RedPaletteData + k, &lut[k], err);
        else
            rc = attach_segmented(ds, TAG_SegmentedRedPaletteData + k, &lut[k], err);
    }
    if (rc == 0)
        rc = image_alloc(out, d->cols, d->rows, 3, opt->max_frame_bytes, err);
    if (rc)
        goto out;
    struct grey g;
    memset(&g, 0, sizeof(g));
    g.bytes = d->bits_allocated <= 8 ? 1 : d->bits_allocated / 8;
    g.bits = d->bits_stored;
    g.shift = d->high_bit + 1u - d->bits_stored;
    g.mask = g.bits == 32 ? UINT32_MAX : ((uint32_t)1 << g.bits) - 1;
    g.is_signed = d->is_signed;
    size_t npixels = (size_t)d->rows * d->cols;
    uint8_t *q = out->pixels;
    for (size_t i = 0; i < npixels; i++) {
        double s = (double)stored_value(&g, frame + i * g.bytes);
        for (unsigned k = 0; k < 3; k++)
            *q++ = sample_to_8(lut_lookup(&lut[k], s), lut[k].bits > 8 ? 16 : 8);
    }
out:
    for (unsigned k = 0; k < 3; k++)
        lut_release(&lut[k]);
    if (rc)
        dcm_image_release(out);
    return rc;
}

/* ---- crop and resize ---------------------------------------------------------------------- */

/* One output coordinate's source pixels: `count` from `start`, weights at `weights`. */
struct contributions {
    uint32_t *start, *count;
    float *weights;
    unsigned stride; /* weights per output coordinate */
};

static void contributions_release(struct contributions *c)
{
    tr_free(c->start);
    tr_free(c->count);
    tr_free(c->weights);
}

/* Area averaging when shrinking: output pixel i covers [i * scale, (i + 1) * scale) of the
 * input, and each input pixel counts by the length it overlaps. Bilinear when growing. */
static int make_contributions(uint32_t in, uint32_t out, struct contributions *c)
{
    double scale = (double)in / out;
    c->stride = scale > 1 ? (unsigned)ceil(scale) + 1 : 2;
    c->start = tr_calloc(out, sizeof(uint32_t));
    c->count = tr_calloc(out, sizeof(uint32_t));
    c->weights = tr_calloc((size_t)out * c->stride, sizeof(float));
    if (!c->start || !c->count || !c->weights)
        return TR_ENOMEM;
    for (uint32_t i = 0; i < out; i++) {
        float *w = c->weights + (size_t)i * c->stride;
        if (scale > 1) {
            double x0 = i * scale, x1 = (i + 1) * scale;
            uint32_t j0 = (uint32_t)floor(x0), j1 = (uint32_t)ceil(x1);
            if (j1 > in)
                j1 = in;
            double total = 0;
            c->start[i] = j0;
            for (uint32_t j = j0; j < j1 && c->count[i] < c->stride; j++) {
                double a = x0 > j ? x0 : j, b = x1 < j + 1.0 ? x1 : j + 1.0;
                w[c->count[i]++] = (float)(b - a);
                total += b - a;
            }
            for (uint32_t k = 0; k < c->count[i]; k++)
                w[k] = (float)(w[k] / total);
        } else {
            double x = (i + 0.5) * scale - 0.5;
            if (x < 0)
                x = 0;
            if (x > in - 1)
                x = in - 1;
            uint32_t j0 = (uint32_t)floor(x);
            double f = x - j0;
            c->start[i] = j0;
            if (f == 0 || j0 + 1 >= in) {
                c->count[i] = 1;
                w[0] = 1;
            } else {
                c->count[i] = 2;
                w[0] = (float)(1 - f);
                w[1] = (float)f;
            }
        }
    }
    return 0;
}

int dcm_image_resize(const struct dcm_image *in, uint32_t width, uint32_t height,
                     struct dcm_image *out, struct tr_error *err)
{
    unsigned ch = in->channels;
    struct contributions cx, cy;
    memset(&cx, 0, sizeof(cx));
    memset(&cy, 0, sizeof(cy));
    float *tmp = NULL;
    int rc = image_alloc(out, width, height, ch, (size_t)width * height * ch, err);
    if (rc)
        return rc;
    tmp = tr_malloc(sizeof(float) * (size_t)width * ch * in->height);
    if (!tmp || make_contributions(in->width, width, &cx) < 0 ||
        make_contributions(in->height, height, &cy) < 0) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory resizing to %ux%u", width, height);
        goto out;
    }
    /* Rows first: every input row to `width` columns. */
    for (uint32_t y = 0; y < in->height; y++) {
        const uint8_t *row = in->pixels + (size_t)y * in->width * ch;
        float *t = tmp + (size_t)y * width * ch;
        for (uint32_t x = 0; x < width; x++) {
            const float *w = cx.weights + (size_t)x * cx.stride;
            for (unsigned k = 0; k < ch; k++) {
                float sum = 0;
                for (uint32_t j = 0; j < cx.count[x]; j++)
                    sum += w[j] * row[(size_t)(cx.start[x] + j) * ch + k];
                t[(size_t)x * ch + k] = sum;
            }
        }
    }
    /* Then columns. */
    for (uint32_t y = 0; y < height; y++) {
        const float *w = cy.weights + (size_t)y * cy.stride;
        uint8_t *q = out->pixels + (size_t)y * width * ch;
        for (size_t x = 0; x < (size_t)width * ch; x++) {
            float sum = 0;
            for (uint32_t j = 0; j < cy.count[y]; j++)
                sum += w[j] * tmp[(size_t)(cy.start[y] + j) * width * ch + x];
            q[x] = clamp_round(sum);
        }
    }
out:
    tr_free(tmp);
    contributions_release(&cx);
    contributions_release(&cy);
    if (rc)
        dcm_image_release(out);
    return rc;
}

static int crop(struct dcm_image *img, const struct dcm_render_options *opt, struct tr_error *err)
{
    if (opt->crop_width == 0 || opt->crop_height == 0)
        return 0;
    if ((uint64_t)opt->crop_x + opt->crop_width > img->width ||
        (uint64_t)opt->crop_y + opt->crop_height > img->height)
        return tr_error_set(err, TR_EINVAL, "crop %u,%u,%u,%u is outside the %ux%u frame",
                            opt->crop_x, opt->crop_y, opt->crop_width, opt->crop_height,
                            img->width, img->height);
    /* In place: each cropped row moves to an address at or before its old one. */
    size_t ch = img->channels, row = (size_t)opt->crop_width * ch;
    for (uint32_t y = 0; y < opt->crop_height; y++)
        memmove(img->pixels + y * row,
                img->pixels + ((size_t)(opt->crop_y + y) * img->width + opt->crop_x) * ch, row);
    img->width = opt->crop_width;
    img->height = opt->crop_height;
    return 0;
}

/* The size that fits inside the viewport keeping the aspect ratio. */
static void fit(uint32_t w, uint32_t h, uint32_t vw, uint32_t vh, uint32_t *ow, uint32_t *oh)
{
    double sx = vw ? (double)vw / w : INFINITY, sy = vh ? (double)vh / h : INFINITY;
    double s = sx < sy ? sx : sy;
    double fw = floor(w * s + 0.5), fh = floor(h * s + 0.5);
    if (vw && fw > vw)
        fw = vw;
    if (vh && fh > vh)
        fh = vh;
    *ow = fw < 1 ? 1 : fw > MAX_OUTPUT_SIDE ? MAX_OUTPUT_SIDE : (uint32_t)fw;
    *oh = fh < 1 ? 1 : fh > MAX_OUTPUT_SIDE ? MAX_OUTPUT_SIDE : (uint32_t)fh;
}

static int viewport(struct dcm_image *img, const struct dcm_render_options *opt,
                    struct tr_error *err)
{
    if (opt->width == 0 && opt->height == 0)
        return 0;
    uint32_t w, h;
    fit(img->width, img->height, opt->width, opt->height, &w, &h);
    if (w == img->width && h == img->height)
        return 0;
    if ((uint64_t)w * h * img->channels > opt->max_frame_bytes)
        return tr_error_set(err, TR_ELIMIT, "a %ux%u picture exceeds the cap of %zu bytes", w, h,
                            opt->max_frame_bytes);
    struct dcm_image resized;
    int rc = dcm_image_resize(img, w, h, &resized, err);
    if (rc)
        return rc;
    dcm_image_release(img);
    *img = resized;
    return 0;
}

/* ---- the whole ---------------------------------------------------------------------------- */

static int check_desc(const struct dcm_pixel_desc *d, size_t len, struct tr_error *err)
{
    if (d->rows == 0 || d->cols == 0)
        return tr_error_set(err, TR_EFORMAT, "the image has %u rows and %u columns", d->rows,
                            d->cols);
    if (d->samples != 1 && d->samples != 3)
        return tr_error_set(err, TR_EUNSUPPORTED, "%u samples per pixel (1 or 3 are rendered)",
                            d->samples);
    if (d->bits_allocated != 1 && d->bits_allocated != 8 && d->bits_allocated != 16 &&
        d->bits_allocated != 32)
        return tr_error_set(err, TR_EUNSUPPORTED, "BitsAllocated %u (1, 8, 16 or 32 are rendered)",
                            d->bits_allocated);
    unsigned alloc = d->bits_allocated < 8 ? 8 : d->bits_allocated;
    if (d->bits_stored == 0 || d->bits_stored > d->bits_allocated || d->high_bit >= alloc ||
        d->high_bit + 1u < d->bits_stored)
        return tr_error_set(err, TR_EFORMAT,
                            "BitsStored %u and HighBit %u do not fit BitsAllocated %u",
                            d->bits_stored, d->high_bit, d->bits_allocated);
    size_t bytes = alloc / 8;
    size_t need = (size_t)d->rows * d->cols * bytes;
    /* Colour frames are checked by the colour code (YBR_FULL_422 may be subsampled). */
    if (d->samples == 1 && len < need)
        return tr_error_set(err, TR_EFORMAT, "the frame has %zu bytes, %ux%u pixels need %zu", len,
                            d->cols, d->rows, need);
    return 0;
}

int dcm_render_frame(const struct dcm_dataset *ds, const struct dcm_pixel_desc *desc,
                     const uint8_t *frame, size_t len, const struct dcm_render_options *opt,
                     struct dcm_image *out, struct tr_error *err)
{
    struct dcm_render_options defaults;
    if (!opt) {
        dcm_render_options_init(&defaults);
        opt = &defaults;
    }
    memset(out, 0, sizeof(*out));
    int rc = check_desc(desc, len, err);
    if (rc)
        return rc;
    const char *pi = desc->photometric;
    if (desc->samples == 1 && is_word(pi, "PALETTE COLOR"))
        rc = render_palette(ds, desc, frame, opt, out, err);
    else if (desc->samples == 1 && (is_word(pi, "MONOCHROME1") || is_word(pi, "MONOCHROME2") ||
                                    pi[0] == '\0'))
        rc = render_grey(ds, desc, frame, opt, out, err);
    else if (desc->samples == 3)
        rc = render_colour(desc, frame, len, opt, out, err);
    else
        rc = tr_error_set(err, TR_EUNSUPPORTED,
                          "photometric interpretation '%s' with %u sample(s) per pixel is not "
                          "supported",
                          pi, desc->samples);
    if (rc == 0)
        rc = crop(out, opt, err);
    if (rc == 0)
        rc = viewport(out, opt, err);
    if (rc)
        dcm_image_release(out);
    return rc;
}

int dcm_render_image(const struct dcm_dataset *ds, const char *ts_uid,
                     const struct dcm_render_options *opt, struct dcm_image *out,
                     struct tr_error *err)
{
    struct dcm_render_options defaults;
    if (!opt) {
        dcm_render_options_init(&defaults);
        opt = &defaults;
    }
    memset(out, 0, sizeof(*out));
    struct dcm_pixel_desc desc;
    int rc = dcm_pixel_desc_read(ds, &desc, err);
    if (rc)
        return rc;
    if (opt->frame >= desc.frames)
        return tr_error_set(err, TR_EINVAL, "there is no frame %u: the image has %u frame%s",
                            opt->frame + 1, desc.frames, desc.frames == 1 ? "" : "s");
    size_t need = dcm_pixel_frame_size(&desc);
    if (need > opt->max_frame_bytes)
        return tr_error_set(err, TR_ELIMIT,
                            "frame %u needs %zu bytes decoded, more than the cap of %zu",
                            opt->frame + 1, need, opt->max_frame_bytes);
    struct tr_buf frame;
    tr_buf_init(&frame, opt->max_frame_bytes);
    struct dcm_pixel_desc decoded = desc;
    rc = dcm_pixel_decode_frame(ds, ts_uid, opt->frame, &frame, &decoded, err);
    if (rc == 0) {
        rc = dcm_render_frame(ds, &decoded, (const uint8_t *)frame.data, frame.len, opt, out, err);
        if (rc)
            tr_error_prefix(err, "frame %u", opt->frame + 1);
    }
    tr_buf_release(&frame);
    return rc;
}

int dcm_render(const struct dcm_dataset *ds, const char *ts_uid,
               const struct dcm_render_options *opt, const struct tr_sink *sink,
               struct tr_error *err)
{
    struct dcm_render_options defaults;
    if (!opt) {
        dcm_render_options_init(&defaults);
        opt = &defaults;
    }
    struct dcm_image img;
    int rc = dcm_render_image(ds, ts_uid, opt, &img, err);
    if (rc)
        return rc;
    rc = dcm_image_encode(&img, opt->format, opt->quality, sink, err);
    dcm_image_release(&img);
    return rc;
}

/* ---- PNG (libspng) ------------------------------------------------------------------------ */

/* libspng allocates through telerad's wrappers, so that tests can make it fail. */
static void *png_malloc(size_t size)
{
    return tr_malloc(size);
}
static void *png_realloc(void *ptr, size_t size)
{
    return tr_reallocarray(ptr, size, 1);
}
static void *png_calloc(size_t count, size_t size)
{
    return tr_calloc(count, size);
}
static void png_free(void *ptr)
{
    tr_free(ptr);
}

struct png_out {
    const struct tr_sink *sink;
    int status;
};

static int png_write(spng_ctx *ctx, void *user, void *data, size_t len)
{
    (void)ctx;
    struct png_out *o = user;
    int rc = tr_sink_write(o->sink, data, len);
    if (rc) {
        o->status = rc;
        return SPNG_IO_ERROR;
    }
    return 0;
}

static int encode_png(const struct dcm_image *img, const struct tr_sink *sink,
                      struct tr_error *err)
{
    struct spng_alloc alloc = {png_malloc, png_realloc, png_calloc, png_free};
    spng_ctx *ctx = spng_ctx_new2(&alloc, SPNG_CTX_ENCODER);
    if (!ctx)
        return tr_error_set(err, TR_ENOMEM, "out of memory for the PNG encoder");
    struct png_out o = {sink, 0};
    struct spng_ihdr ihdr;
    memset(&ihdr, 0, sizeof(ihdr));
    ihdr.width = img->width;
    ihdr.height = img->height;
    ihdr.bit_depth = 8;
    ihdr.color_type = img->channels == 3 ? SPNG_COLOR_TYPE_TRUECOLOR : SPNG_COLOR_TYPE_GRAYSCALE;
    int rc = spng_set_png_stream(ctx, png_write, &o);
    /* zlib level 4 and the Paeth filter on every row: on 512 x 512 CT slices a third of the
     * time of libspng's defaults (level 6, adaptive filters) for the same size or smaller. */
    if (rc == 0)
        rc = spng_set_option(ctx, SPNG_IMG_COMPRESSION_LEVEL, 4);
    if (rc == 0)
        rc = spng_set_option(ctx, SPNG_FILTER_CHOICE, SPNG_FILTER_CHOICE_PAETH);
    if (rc == 0)
        rc = spng_set_ihdr(ctx, &ihdr);
    if (rc == 0)
        rc = spng_encode_image(ctx, img->pixels,
                               (size_t)img->width * img->height * img->channels, SPNG_FMT_PNG,
                               SPNG_ENCODE_FINALIZE);
    spng_ctx_free(ctx);
    if (o.status)
        return tr_error_set(err, o.status, "writing the PNG: %s", tr_strerror(o.status));
    /* zlib's initialisation fails for want of memory only (spng gives it our allocator). */
    if (rc == SPNG_EMEM || rc == SPNG_EZLIB_INIT)
        return tr_error_set(err, TR_ENOMEM, "out of memory encoding the PNG");
    if (rc)
        return tr_error_set(err, TR_EINVAL, "encoding the PNG: %s", spng_strerror(rc));
    return 0;
}

/* ---- JPEG (libjpeg-turbo) ----------------------------------------------------------------- */

/* libjpeg reports errors by calling error_exit, which must not return: it jumps back to
 * encode_jpeg with the message kept (libraries never print). */
struct jpeg_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void jpeg_error_exit(j_common_ptr cinfo)
{
    struct jpeg_error *e = (struct jpeg_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->message);
    longjmp(e->jump, 1);
}

static void jpeg_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* warnings are not printed */
}

/* A destination that passes 64 KiB chunks to the sink. */
struct jpeg_out {
    struct jpeg_destination_mgr pub;
    const struct tr_sink *sink;
    int status;
    JOCTET buf[65536];
};

static void jpeg_init_destination(j_compress_ptr cinfo)
{
    struct jpeg_out *o = (struct jpeg_out *)cinfo->dest;
    o->pub.next_output_byte = o->buf;
    o->pub.free_in_buffer = sizeof(o->buf);
}

static boolean jpeg_empty_output_buffer(j_compress_ptr cinfo)
{
    /* libjpeg's contract: write the whole buffer, whatever free_in_buffer says. */
    struct jpeg_out *o = (struct jpeg_out *)cinfo->dest;
    int rc = tr_sink_write(o->sink, o->buf, sizeof(o->buf));
    if (rc) {
        o->status = rc;
        ERREXIT(cinfo, JERR_FILE_WRITE);
    }
    jpeg_init_destination(cinfo);
    return TRUE;
}

static void jpeg_term_destination(j_compress_ptr cinfo)
{
    struct jpeg_out *o = (struct jpeg_out *)cinfo->dest;
    int rc = tr_sink_write(o->sink, o->buf, sizeof(o->buf) - o->pub.free_in_buffer);
    if (rc) {
        o->status = rc;
        ERREXIT(cinfo, JERR_FILE_WRITE);
    }
}

/* Everything that lives across setjmp is in this structure, which is not modified between the
 * setjmp and a longjmp in a way that matters after it (see C17 7.13.2.1). */
struct jpeg_job {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error error;
    struct jpeg_out *out;
};

static int encode_jpeg(const struct dcm_image *img, int quality, const struct tr_sink *sink,
                       struct tr_error *err)
{
    if (img->width > JPEG_MAX_DIMENSION || img->height > JPEG_MAX_DIMENSION)
        return tr_error_set(err, TR_ELIMIT, "a %ux%u picture is too large for JPEG (at most %u)",
                            img->width, img->height, (unsigned)JPEG_MAX_DIMENSION);
    struct jpeg_job *job = tr_calloc(1, sizeof(*job));
    struct jpeg_out *out = tr_calloc(1, sizeof(*out));
    if (!job || !out) {
        tr_free(job);
        tr_free(out);
        return tr_error_set(err, TR_ENOMEM, "out of memory for the JPEG encoder");
    }
    job->out = out;
    out->sink = sink;
    out->pub.init_destination = jpeg_init_destination;
    out->pub.empty_output_buffer = jpeg_empty_output_buffer;
    out->pub.term_destination = jpeg_term_destination;
    job->cinfo.err = jpeg_std_error(&job->error.pub);
    job->error.pub.error_exit = jpeg_error_exit;
    job->error.pub.output_message = jpeg_output_message;
    int rc = 0;
    if (setjmp(job->error.jump)) {
        if (job->out->status)
            rc = tr_error_set(err, job->out->status, "writing the JPEG: %s",
                              tr_strerror(job->out->status));
        else
            rc = tr_error_set(err, TR_EINVAL, "encoding the JPEG: %s", job->error.message);
        jpeg_destroy_compress(&job->cinfo);
        tr_free(job->out);
        tr_free(job);
        return rc;
    }
    jpeg_create_compress(&job->cinfo);
    job->cinfo.dest = &job->out->pub;
    job->cinfo.image_width = img->width;
    job->cinfo.image_height = img->height;
    job->cinfo.input_components = (int)img->channels;
    job->cinfo.in_color_space = img->channels == 3 ? JCS_RGB : JCS_GRAYSCALE;
    jpeg_set_defaults(&job->cinfo);
    jpeg_set_quality(&job->cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
    jpeg_start_compress(&job->cinfo, TRUE);
    size_t stride = (size_t)img->width * img->channels;
    while (job->cinfo.next_scanline < job->cinfo.image_height) {
        JSAMPROW row = img->pixels + job->cinfo.next_scanline * stride;
        jpeg_write_scanlines(&job->cinfo, &row, 1);
    }
    jpeg_finish_compress(&job->cinfo);
    jpeg_destroy_compress(&job->cinfo);
    tr_free(job->out);
    tr_free(job);
    return 0;
}

int dcm_image_encode(const struct dcm_image *img, enum dcm_image_format format, int quality,
                     const struct tr_sink *sink, struct tr_error *err)
{
    if (!img->pixels || img->width == 0 || img->height == 0 ||
        (img->channels != 1 && img->channels != 3))
        return tr_error_set(err, TR_EINVAL, "no picture to encode");
    switch (format) {
    case DCM_IMAGE_JPEG:
        return encode_jpeg(img, quality, sink, err);
    case DCM_IMAGE_PNG:
    default:
        return encode_png(img, sink, err);
    }
}
