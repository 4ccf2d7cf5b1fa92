/*
 * codec_jpeg_lossless.c - lossless JPEG (ISO 10918-1 / ITU-T T.81 process 14: Annex H,
 * Huffman coding), decoder and encoder, written here.
 *
 * Why ours: libjpeg-turbo 2.1 (Debian 12) has no lossless mode, and the IJG forks that do
 * (DCMTK's, GDCM's) are built per sample precision. Lossless JPEG is small: a Huffman decoder,
 * seven predictors and a point transform (H.1.2). Supported: precision 2-16, 1-4 components
 * with sampling factors 1x1, interleaved or one scan per component, all seven predictors,
 * point transform, restart intervals. Not supported (TR_EUNSUPPORTED): arithmetic coding,
 * hierarchical mode, subsampled components, DNL.
 *
 * Robustness: every marker length and table is checked before use; the bit reader feeds zeros
 * past the end of the data or at a marker and the decoder fails if it ever consumed them
 * ("the entropy-coded data ends early"), so a truncated stream is an error, never a read out
 * of bounds.
 */
#include "codec_int.h"

#include <stdarg.h>

static const char codec[] = "lossless JPEG";

#define LOOKAHEAD 9

struct huff {
    bool defined;
    uint8_t bits[17]; /* bits[l]: number of codes of length l */
    uint8_t vals[256];
    int32_t maxcode[18], mincode[17], valptr[17];
    uint16_t look[1 << LOOKAHEAD]; /* (length << 8) | value; 0: longer code */
};

struct bits {
    const uint8_t *p;
    size_t pos, end;
    uint64_t acc; /* next bits MSB first */
    int n;        /* valid bits in acc */
    unsigned fake; /* zero bytes fed past the data */
    bool marker;  /* pos is at a marker: feed zeros */
};

struct component {
    uint8_t id;
    uint8_t pt;   /* point transform of the scan that coded it */
    bool decoded;
    uint16_t *plane;
};

struct decoder {
    const struct dcm_codec_frame *f;
    const uint8_t *p;
    size_t len;
    bool have_frame;
    unsigned precision, width, height, ncomp;
    struct component comp[4];
    struct huff huff[4];
    unsigned restart_interval;
    struct tr_error *err;
};

/* ---- Huffman tables (Annex C) ------------------------------------------------------------------ */

/* Build the decoding tables; false if the code lengths overflow (more codes than fit). */
static bool huff_build(struct huff *h)
{
    int32_t code = 0;
    int k = 0;
    memset(h->look, 0, sizeof(h->look));
    for (int l = 1; l <= 16; l++) {
        h->valptr[l] = k;
        h->mincode[l] = code;
        for (int i = 0; i < h->bits[l]; i++, k++, code++) {
            if (code >= (1 << l))
                return false;
            if (l <= LOOKAHEAD) {
                int shift = LOOKAHEAD - l;
                for (int c = code << shift; c < (code + 1) << shift; c++)
                    h->look[c] = (uint16_t)((l << 8) | h->vals[k]);
            }
        }
        h->maxcode[l] = h->bits[l] ? code - 1 : -1;
        code <<= 1;
    }
    h->maxcode[17] = INT32_MAX;
    return true;
}

/* ---- bit reader (F.2.2.5, with the zero stuffing of B.1.1.5) ------------------------------- */

static void bits_init(struct bits *b, const uint8_t *p, size_t pos, size_t end)
{
    b->p = p;
    b->pos = pos;
    b->end = end;
    b->acc = 0;
    b->n = 0;
    b->fake = 0;
    b->marker = false;
}

static void bits_fill(struct bits *b)
{
    while (b->n <= 56) {
        unsigned c = 0;
        if (b->marker || b->pos >= b->end) {
            b->fake++;
        } else if (b->p[b->pos] == 0xFF) {
            if (b->pos + 1 < b->end && b->p[b->pos + 1] == 0x00) {
                c = 0xFF;
                b->pos += 2;
            } else {
                b->marker = true; /* leave pos at the marker */
                b->fake++;
            }
        } else {
            c = b->p[b->pos++];
        }
        b->acc |= (uint64_t)c << (56 - b->n);
        b->n += 8;
    }
}

/* True once bits fed past the data were consumed. */
static bool bits_overrun(const struct bits *b)
{
    return (int64_t)b->fake * 8 > b->n;
}

static inline unsigned bits_get(struct bits *b, int k)
{
    unsigned v = (unsigned)(b->acc >> (64 - k));
    b->acc <<= k;
    b->n -= k;
    return v;
}

/* Next Huffman-coded value, -1 for a code not in the table. Needs >= 16 bits in acc. */
static inline int huff_decode(struct bits *b, const struct huff *h)
{
    unsigned e = h->look[b->acc >> (64 - LOOKAHEAD)];
    if (e) {
        b->acc <<= e >> 8;
        b->n -= (int)(e >> 8);
        return e & 0xFF;
    }
    int32_t code = (int32_t)(b->acc >> 48);
    for (int l = LOOKAHEAD + 1; l <= 16; l++) {
        int32_t c = code >> (16 - l);
        if (c <= h->maxcode[l]) {
            b->acc <<= l;
            b->n -= l;
            return h->vals[h->valptr[l] + c - h->mincode[l]];
        }
    }
    return -1;
}

/* ---- markers ------------------------------------------------------------------------------------- */

static int fail(struct decoder *dec, size_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct decoder *dec, size_t at, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return dcm_codec_fail(dec->err, dec->f, codec, at, "%s", why);
}

static int parse_sof(struct decoder *dec, size_t at, const uint8_t *s, size_t n)
{
    const struct dcm_pixel_desc *d = dec->f->desc;
    if (dec->have_frame)
        return fail(dec, at, "a second frame header (SOF)");
    if (n < 6)
        return fail(dec, at, "the frame header (SOF3) is %zu bytes long", n);
    dec->precision = s[0];
    dec->height = tr_be16(s + 1);
    dec->width = tr_be16(s + 3);
    dec->ncomp = s[5];
    if (dec->precision < 2 || dec->precision > 16)
        return fail(dec, at, "sample precision %u is not 2 to 16", dec->precision);
    if (dec->ncomp < 1 || dec->ncomp > 4 || n < 6 + 3 * (size_t)dec->ncomp)
        return fail(dec, at, "the frame header lists %u components in %zu bytes", dec->ncomp, n);
    if (dec->height == 0)
        return dcm_codec_fail_code(dec->err, TR_EUNSUPPORTED, dec->f, codec, at,
                                   "the number of lines is given later (DNL)");
    if (dec->width != d->cols || dec->height != d->rows || dec->ncomp != d->samples)
        return fail(dec, at,
                    "the stream is %u x %u with %u components; the data set says %u x %u with "
                    "%u samples per pixel",
                    dec->width, dec->height, dec->ncomp, d->cols, d->rows, d->samples);
    for (unsigned c = 0; c < dec->ncomp; c++) {
        dec->comp[c].id = s[6 + 3 * c];
        if (s[7 + 3 * c] != 0x11)
            return dcm_codec_fail_code(dec->err, TR_EUNSUPPORTED, dec->f, codec, at,
                                       "component %u is subsampled (%ux%u)", c + 1,
                                       s[7 + 3 * c] >> 4, s[7 + 3 * c] & 15);
        for (unsigned k = 0; k < c; k++) {
            if (dec->comp[k].id == dec->comp[c].id)
                return fail(dec, at, "two components have the id %u", dec->comp[c].id);
        }
    }
    size_t plane = (size_t)dec->width * dec->height;
    for (unsigned c = 0; c < dec->ncomp; c++) {
        dec->comp[c].plane = tr_calloc(plane, sizeof(uint16_t));
        if (!dec->comp[c].plane)
            return tr_error_set(dec->err, TR_ENOMEM, "out of memory");
    }
    dec->have_frame = true;
    return 0;
}

static int parse_dht(struct decoder *dec, size_t at, const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (n - i < 17)
            return fail(dec, at + 4 + i, "a Huffman table is cut short");
        unsigned th = s[i] & 15, tc = s[i] >> 4;
        if (th > 3 || tc > 1)
            return fail(dec, at + 4 + i, "Huffman table class %u id %u", tc, th);
        struct huff *h = &dec->huff[th];
        unsigned total = 0;
        h->bits[0] = 0;
        for (int l = 1; l <= 16; l++) {
            h->bits[l] = s[i + l];
            total += s[i + l];
        }
        if (total > 256 || n - i - 17 < total)
            return fail(dec, at + 4 + i, "a Huffman table has %u codes in %zu bytes", total,
                        n - i - 17);
        memcpy(h->vals, s + i + 17, total);
        if (!huff_build(h))
            return fail(dec, at + 4 + i, "the Huffman code lengths do not form a code");
        h->defined = true;
        i += 17 + total;
    }
    return 0;
}

/* ---- scans (H.2) ------------------------------------------------------------------------------ */

/* Skip from b->pos to the next marker (the end of a scan's data); returns its position. */
static size_t next_marker(const uint8_t *p, size_t pos, size_t end)
{
    while (pos + 1 < end) {
        if (p[pos] == 0xFF && p[pos + 1] != 0x00 && p[pos + 1] != 0xFF)
            return pos;
        pos++;
    }
    return end;
}

static int decode_scan(struct decoder *dec, size_t at, const uint8_t *s, size_t n, size_t data,
                       size_t *scan_end)
{
    if (!dec->have_frame)
        return fail(dec, at, "a scan (SOS) before the frame header (SOF3)");
    if (n < 1 || s[0] < 1 || s[0] > 4 || n < 4 + 2 * (size_t)s[0])
        return fail(dec, at, "the scan header is malformed");
    unsigned ns = s[0];
    struct component *sc[4];
    const struct huff *tab[4];
    for (unsigned i = 0; i < ns; i++) {
        uint8_t id = s[1 + 2 * i], td = s[2 + 2 * i] >> 4;
        sc[i] = NULL;
        for (unsigned c = 0; c < dec->ncomp; c++) {
            if (dec->comp[c].id == id)
                sc[i] = &dec->comp[c];
        }
        if (!sc[i] || sc[i]->decoded)
            return fail(dec, at, "the scan codes component id %u, %s", id,
                        sc[i] ? "which an earlier scan coded" : "which the frame does not have");
        for (unsigned k = 0; k < i; k++) {
            if (sc[k] == sc[i])
                return fail(dec, at, "the scan lists component id %u twice", id);
        }
        if (td > 3 || !dec->huff[td].defined)
            return fail(dec, at, "the scan uses Huffman table %u, which is not defined", td);
        tab[i] = &dec->huff[td];
    }
    unsigned predictor = s[1 + 2 * ns], se = s[2 + 2 * ns], ah = s[3 + 2 * ns] >> 4,
             pt = s[3 + 2 * ns] & 15;
    if (predictor < 1 || predictor > 7 || se != 0 || ah != 0)
        return fail(dec, at, "predictor %u (Ss), Se %u, Ah %u: not a lossless scan", predictor,
                    se, ah);
    if (pt >= dec->precision)
        return fail(dec, at, "point transform %u with precision %u", pt, dec->precision);

    const unsigned w = dec->width, h = dec->height;
    const int initial = 1 << (dec->precision - pt - 1);
    struct bits b;
    bits_init(&b, dec->p, data, dec->len);
    unsigned ri = dec->restart_interval, left = ri, next_rst = 0;
    unsigned line0 = 0, col0 = 0; /* where the current restart interval began */
    for (unsigned y = 0; y < h; y++) {
        for (unsigned x = 0; x < w; x++) {
            if (ri && left == 0) {
                /* A restart marker, byte aligned (F.1.2.3); predictions start over (H.1.2.1). */
                size_t m = b.marker ? b.pos : next_marker(dec->p, b.pos, dec->len);
                while (m + 1 < dec->len && dec->p[m + 1] == 0xFF)
                    m++;
                if (m + 1 >= dec->len || dec->p[m + 1] != (0xD0 | next_rst))
                    return fail(dec, m, "restart marker RST%u expected at line %u", next_rst,
                                y + 1);
                next_rst = (next_rst + 1) & 7;
                bits_init(&b, dec->p, m + 2, dec->len);
                left = ri;
                line0 = y;
                col0 = x;
            }
            if (ri)
                left--;
            if (b.n < 32)
                bits_fill(&b);
            for (unsigned i = 0; i < ns; i++) {
                uint16_t *pl = sc[i]->plane;
                size_t o = (size_t)y * w + x;
                int pred;
                if (y == line0 && x == col0)
                    pred = initial;
                else if (y == line0)
                    pred = pl[o - 1];
                else if (x == 0)
                    pred = pl[o - w];
                else {
                    int ra = pl[o - 1], rb = pl[o - w], rc = pl[o - w - 1];
                    switch (predictor) {
                    case 1: pred = ra; break;
                    case 2: pred = rb; break;
                    case 3: pred = rc; break;
                    case 4: pred = ra + rb - rc; break;
                    /* H.1.2.1: the shifts are arithmetic; the sums are non-negative here
                       except rb - rc and ra - rc, halved with floor division */
                    case 5: pred = ra + ((rb - rc) >= 0 ? (rb - rc) >> 1 : -((rc - rb + 1) >> 1)); break;
                    case 6: pred = rb + ((ra - rc) >= 0 ? (ra - rc) >> 1 : -((rc - ra + 1) >> 1)); break;
                    default: pred = (ra + rb) >> 1; break;
                    }
                }
                if (b.n < 32)
                    bits_fill(&b);
                int t = huff_decode(&b, tab[i]);
                if (t < 0 || t > 16) {
                    if (bits_overrun(&b))
                        return fail(dec, b.pos, "the entropy-coded data ends early, at line %u "
                                    "of %u", y + 1, h);
                    return fail(dec, b.pos, "%s at line %u, column %u",
                                t < 0 ? "a Huffman code not in the table" : "a difference "
                                "category above 16", y + 1, x + 1);
                }
                int diff;
                if (t == 0)
                    diff = 0;
                else if (t == 16)
                    diff = 32768;
                else {
                    int v = (int)bits_get(&b, t);
                    diff = v < (1 << (t - 1)) ? v - (1 << t) + 1 : v;
                }
                pl[o] = (uint16_t)((pred + diff) & 0xFFFF);
            }
        }
        if (bits_overrun(&b))
            return fail(dec, b.pos, "the entropy-coded data ends early, at line %u of %u", y + 1,
                        h);
    }
    for (unsigned i = 0; i < ns; i++) {
        sc[i]->decoded = true;
        sc[i]->pt = (uint8_t)pt;
    }
    *scan_end = b.marker ? b.pos : next_marker(dec->p, b.pos, dec->len);
    return 0;
}

static void decoder_release(struct decoder *dec)
{
    for (unsigned c = 0; c < 4; c++)
        tr_free(dec->comp[c].plane);
}

int dcm_jpeg_lossless_decode(const struct dcm_codec_frame *f, struct tr_buf *out,
                             struct dcm_pixel_desc *out_desc, struct tr_error *err)
{
    struct decoder dec;
    memset(&dec, 0, sizeof(dec));
    dec.f = f;
    dec.p = f->bytes;
    dec.len = f->len;
    dec.err = err;
    const uint8_t *p = f->bytes;
    size_t len = f->len, pos = 2;
    int rc = 0;
    if (len < 4 || p[0] != 0xFF || p[1] != 0xD8) {
        rc = fail(&dec, 0, "no start of image marker (FFD8)");
        goto out;
    }
    bool eoi = false;
    while (!eoi && rc == 0) {
        if (pos >= len)
            break;
        if (p[pos] != 0xFF) {
            rc = fail(&dec, pos, "a marker expected, found 0x%02X", p[pos]);
            break;
        }
        while (pos < len && p[pos] == 0xFF)
            pos++;
        if (pos >= len)
            break;
        size_t at = pos - 1;
        unsigned m = p[pos++];
        if (m == 0xD9) {
            eoi = true;
            break;
        }
        if (m == 0xD8 || (m >= 0xD0 && m <= 0xD7) || m == 0x01)
            continue; /* stand-alone markers */
        if (len - pos < 2 || tr_be16(p + pos) < 2 || tr_be16(p + pos) > len - pos) {
            rc = fail(&dec, at, "marker 0x%02X has a length that runs past the end", m);
            break;
        }
        size_t seglen = tr_be16(p + pos);
        const uint8_t *s = p + pos + 2;
        size_t n = seglen - 2;
        switch (m) {
        case 0xC3: rc = parse_sof(&dec, at, s, n); break;
        case 0xC4: rc = parse_dht(&dec, at, s, n); break;
        case 0xDD:
            if (n < 2)
                rc = fail(&dec, at, "the restart interval segment (DRI) is too short");
            else
                dec.restart_interval = tr_be16(s);
            break;
        case 0xDA: {
            size_t end = len;
            rc = decode_scan(&dec, at, s, n, pos + seglen, &end);
            pos = end;
            continue;
        }
        case 0xC0: case 0xC1: case 0xC2: case 0xC5: case 0xC6: case 0xC7: case 0xC9:
        case 0xCA: case 0xCB: case 0xCD: case 0xCE: case 0xCF:
            rc = dcm_codec_fail_code(err, TR_EUNSUPPORTED, f, codec, at,
                                     "frame type SOF%u is not lossless Huffman (SOF3)", m - 0xC0);
            break;
        case 0xCC:
            rc = dcm_codec_fail_code(err, TR_EUNSUPPORTED, f, codec, at,
                                     "arithmetic coding is not supported");
            break;
        default: break; /* APPn, COM, DQT, DNL...: skipped */
        }
        pos += seglen;
    }
    if (rc)
        goto out;
    if (!dec.have_frame) {
        rc = fail(&dec, SIZE_MAX, "the stream has no frame header (SOF3)");
        goto out;
    }
    for (unsigned c = 0; c < dec.ncomp; c++) {
        if (!dec.comp[c].decoded) {
            rc = fail(&dec, SIZE_MAX, "component %u is in no scan (the data ends at byte %zu)",
                      c + 1, len);
            goto out;
        }
    }
    size_t px = (size_t)dec.width * dec.height;
    unsigned bytes = dec.precision <= 8 ? 1 : 2;
    size_t size = px * dec.ncomp * bytes;
    if ((rc = tr_buf_grow(out, size)) < 0) {
        rc = tr_error_set(err, rc, "frame %u: %s", f->index + 1, tr_strerror(rc));
        goto out;
    }
    uint8_t *o = (uint8_t *)out->data;
    for (unsigned c = 0; c < dec.ncomp; c++) {
        const uint16_t *pl = dec.comp[c].plane;
        unsigned pt = dec.comp[c].pt;
        if (bytes == 1) {
            for (size_t i = 0; i < px; i++)
                o[i * dec.ncomp + c] = (uint8_t)(pl[i] << pt);
        } else {
            for (size_t i = 0; i < px; i++)
                tr_put_le16(o + 2 * (i * dec.ncomp + c), (uint16_t)(pl[i] << pt));
        }
    }
    out->len = size;
    out_desc->bits_allocated = (uint16_t)(8 * bytes);
out:
    decoder_release(&dec);
    return rc;
}

/* ---- encoder -------------------------------------------------------------------------------- */

/* Optimal Huffman code lengths for the 17 difference categories (Annex K.2, figures K.1-K.3),
 * limited to 16 bits; fills bits[] and vals[] as a DHT segment lists them. */
static void huff_optimal(const uint32_t freq_in[17], uint8_t bits[17], uint8_t vals[17],
                         unsigned *nvals)
{
    enum { N = 18 }; /* 17 categories + the reserved symbol that keeps a code of all ones out */
    uint64_t freq[N];
    int codesize[N], others[N];
    for (int i = 0; i < N; i++) {
        freq[i] = i < 17 ? freq_in[i] : 1;
        codesize[i] = 0;
        others[i] = -1;
    }
    for (;;) {
        int v1 = -1, v2 = -1;
        for (int i = 0; i < N; i++) { /* least frequency; ties: the larger symbol */
            if (freq[i] && (v1 < 0 || freq[i] <= freq[v1]))
                v1 = i;
        }
        for (int i = 0; i < N; i++) {
            if (freq[i] && i != v1 && (v2 < 0 || freq[i] <= freq[v2]))
                v2 = i;
        }
        if (v2 < 0)
            break;
        freq[v1] += freq[v2];
        freq[v2] = 0;
        for (codesize[v1]++; others[v1] >= 0; codesize[v1]++)
            v1 = others[v1];
        others[v1] = v2;
        for (codesize[v2]++; others[v2] >= 0; codesize[v2]++)
            v2 = others[v2];
    }
    int count[40] = {0};
    for (int i = 0; i < N; i++) {
        if (codesize[i])
            count[codesize[i]]++;
    }
    for (int i = 39; i > 16; i--) { /* K.3: limit the lengths to 16 */
        while (count[i] > 0) {
            int j = i - 2;
            while (count[j] == 0)
                j--;
            count[i] -= 2;
            count[i - 1]++;
            count[j + 1] += 2;
            count[j]--;
        }
    }
    int i = 16;
    while (count[i] == 0)
        i--;
    count[i]--; /* drop the reserved symbol's code (the longest) */
    bits[0] = 0;
    for (int l = 1; l <= 16; l++)
        bits[l] = (uint8_t)count[l];
    /* K.4: values sorted by code size, then by value. */
    unsigned k = 0;
    for (int size = 1; size <= 39; size++) {
        for (int s = 0; s < 17; s++) {
            if (codesize[s] == size)
                vals[k++] = (uint8_t)s;
        }
    }
    *nvals = k;
}

struct bitwriter {
    struct tr_buf *out;
    uint32_t acc;
    int n;
    int rc;
};

static void put_bits(struct bitwriter *w, uint32_t v, int k)
{
    if (k == 0)
        return;
    w->acc = (w->acc << k) | (v & ((1u << k) - 1));
    w->n += k;
    while (w->n >= 8) {
        uint8_t c = (uint8_t)(w->acc >> (w->n - 8));
        w->n -= 8;
        if (w->rc == 0)
            w->rc = tr_buf_addc(w->out, (char)c);
        if (c == 0xFF && w->rc == 0)
            w->rc = tr_buf_addc(w->out, 0); /* B.1.1.5: stuff a zero after 0xFF */
    }
    w->acc &= (1u << w->n) - 1;
}

static int category(int d)
{
    if (d == 32768)
        return 16;
    unsigned a = (unsigned)(d < 0 ? -d : d);
    int s = 0;
    while (a) {
        s++;
        a >>= 1;
    }
    return s;
}

int dcm_jpeg_lossless_encode_ex(const uint8_t *native, size_t len,
                                const struct dcm_pixel_desc *desc, unsigned predictor,
                                unsigned point_transform, unsigned restart_interval,
                                struct tr_buf *out, struct tr_error *err)
{
    const unsigned P = desc->bits_stored, nc = desc->samples, w = desc->cols, h = desc->rows;
    const unsigned sb = dcm_sample_bytes(desc->bits_allocated);
    if (P < 2 || P > 16 || sb > 2)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "lossless JPEG: %u bits stored in %u allocated: the precision must be "
                            "2 to 16 bits in 8 or 16", P, desc->bits_allocated);
    if (predictor < 1 || predictor > 7 || point_transform >= P || w > 65535 || h > 65535 ||
        nc > 4 || restart_interval > 65535 || (restart_interval && restart_interval % w))
        return tr_error_set(err, TR_EINVAL,
                            "lossless JPEG: predictor %u, point transform %u, restart interval %u "
                            "(a multiple of the %u columns, H.1.1)",
                            predictor, point_transform, restart_interval, w);
    size_t px = (size_t)w * h;
    if (len != px * nc * sb)
        return tr_error_set(err, TR_EINVAL, "lossless JPEG: the frame has %zu bytes, not %zu",
                            len, px * nc * sb);
    /* The samples, masked to the precision and point-transformed, one plane per component. */
    uint16_t *plane = tr_malloc(px * nc * sizeof(uint16_t) + 1);
    if (!plane)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    uint32_t mask = (1u << P) - 1;
    for (size_t i = 0; i < px; i++) {
        for (unsigned c = 0; c < nc; c++) {
            size_t k = i * nc + c;
            uint32_t v = sb == 1 ? native[k] : tr_le16(native + 2 * k);
            plane[c * px + i] = (uint16_t)((v & mask) >> point_transform);
        }
    }
    const int initial = 1 << (P - point_transform - 1);
    uint32_t freq[17] = {0};
    uint8_t bits[17], vals[17];
    unsigned nvals;
    uint16_t code[17] = {0};
    uint8_t size[17] = {0};
    struct bitwriter bw = {out, 0, 0, 0};
    size_t base = out->len;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            huff_optimal(freq, bits, vals, &nvals);
            /* Annex C: canonical codes in the order of vals. */
            unsigned k = 0, c = 0;
            for (int l = 1; l <= 16; l++) {
                for (unsigned i = 0; i < bits[l]; i++, k++, c++) {
                    code[vals[k]] = (uint16_t)c;
                    size[vals[k]] = (uint8_t)l;
                }
                c <<= 1;
            }
            uint8_t hdr[64];
            size_t n = 0;
            hdr[n++] = 0xFF, hdr[n++] = 0xD8;                        /* SOI */
            hdr[n++] = 0xFF, hdr[n++] = 0xC3;                        /* SOF3 */
            tr_put_be16(hdr + n, (uint16_t)(8 + 3 * nc)), n += 2;
            hdr[n++] = (uint8_t)P;
            tr_put_be16(hdr + n, (uint16_t)h), n += 2;
            tr_put_be16(hdr + n, (uint16_t)w), n += 2;
            hdr[n++] = (uint8_t)nc;
            for (unsigned c2 = 0; c2 < nc; c2++)
                hdr[n++] = (uint8_t)(c2 + 1), hdr[n++] = 0x11, hdr[n++] = 0;
            hdr[n++] = 0xFF, hdr[n++] = 0xC4;                        /* DHT */
            tr_put_be16(hdr + n, (uint16_t)(2 + 17 + nvals)), n += 2;
            hdr[n++] = 0x00;
            bw.rc = tr_buf_add(out, hdr, n);
            if (bw.rc == 0)
                bw.rc = tr_buf_add(out, bits + 1, 16);
            if (bw.rc == 0)
                bw.rc = tr_buf_add(out, vals, nvals);
            n = 0;
            if (restart_interval) {                                  /* DRI */
                hdr[n++] = 0xFF, hdr[n++] = 0xDD, hdr[n++] = 0, hdr[n++] = 4;
                tr_put_be16(hdr + n, (uint16_t)restart_interval), n += 2;
            }
            hdr[n++] = 0xFF, hdr[n++] = 0xDA;                        /* SOS */
            tr_put_be16(hdr + n, (uint16_t)(6 + 2 * nc)), n += 2;
            hdr[n++] = (uint8_t)nc;
            for (unsigned c2 = 0; c2 < nc; c2++)
                hdr[n++] = (uint8_t)(c2 + 1), hdr[n++] = 0x00;
            hdr[n++] = (uint8_t)predictor;
            hdr[n++] = 0;
            hdr[n++] = (uint8_t)point_transform;
            if (bw.rc == 0)
                bw.rc = tr_buf_add(out, hdr, n);
        }
        unsigned line0 = 0, col0 = 0, rst = 0;
        size_t mcu = 0;
        for (unsigned y = 0; y < h && bw.rc == 0; y++) {
            for (unsigned x = 0; x < w; x++, mcu++) {
                if (restart_interval && mcu && mcu % restart_interval == 0) {
                    /* F.1.2.3: byte-align with ones, RSTm; predictions start over (H.1.2.1) */
                    if (pass == 1) {
                        if (bw.n)
                            put_bits(&bw, 0x7F, 8 - bw.n);
                        if (bw.rc == 0)
                            bw.rc = tr_buf_add(out, (const char[]){(char)0xFF, (char)(0xD0 | rst)}, 2);
                    }
                    rst = (rst + 1) & 7;
                    line0 = y;
                    col0 = x;
                }
                for (unsigned c = 0; c < nc; c++) {
                    const uint16_t *pl = plane + c * px;
                    size_t o = (size_t)y * w + x;
                    int pred;
                    if (y == line0 && x == col0)
                        pred = initial;
                    else if (y == line0)
                        pred = pl[o - 1];
                    else if (x == 0)
                        pred = pl[o - w];
                    else {
                        int ra = pl[o - 1], rb = pl[o - w], rc = pl[o - w - 1];
                        switch (predictor) {
                        case 1: pred = ra; break;
                        case 2: pred = rb; break;
                        case 3: pred = rc; break;
                        case 4: pred = ra + rb - rc; break;
                        case 5: pred = ra + ((rb - rc) >= 0 ? (rb - rc) >> 1 : -((rc - rb + 1) >> 1)); break;
                        case 6: pred = rb + ((ra - rc) >= 0 ? (ra - rc) >> 1 : -((rc - ra + 1) >> 1)); break;
                        default: pred = (ra + rb) >> 1; break;
                        }
                    }
                    int d = (pl[o] - pred) & 0xFFFF; /* modulo 2^16 (H.1.2.1) */
                    if (d > 32768)
                        d -= 65536;
                    int t = category(d);
                    if (pass == 0) {
                        freq[t]++;
                        continue;
                    }
                    put_bits(&bw, code[t], size[t]);
                    if (t && t < 16)
                        put_bits(&bw, (uint32_t)(d < 0 ? d + (1 << t) - 1 : d), t);
                }
            }
        }
    }
    if (bw.n)
        put_bits(&bw, 0x7F, 8 - bw.n); /* pad the last byte with ones (F.1.2.3) */
    if (bw.rc == 0)
        bw.rc = tr_buf_add(out, "\xFF\xD9", 2);
    tr_free(plane);
    if (bw.rc < 0) {
        tr_buf_truncate(out, base);
        return tr_error_set(err, bw.rc, "lossless JPEG: %s", tr_strerror(bw.rc));
    }
    return 0;
}

int dcm_jpeg_lossless_encode(const uint8_t *native, size_t len, const struct dcm_pixel_desc *desc,
                             struct tr_buf *out, struct dcm_pixel_desc *out_desc,
                             struct tr_error *err)
{
    (void)out_desc;
    return dcm_jpeg_lossless_encode_ex(native, len, desc, 1, 0, 0, out, err);
}
