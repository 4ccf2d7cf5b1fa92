/*
 * part10_read.c - reading DICOM files (PS3.10 7.1) and data sets in any transfer syntax
 * (PS3.5 7.1, 7.5, A.1-A.5): preamble and meta group, implicit/explicit VR, little/big endian,
 * deflate, sequences and items of defined and undefined length, encapsulated pixel data.
 *
 * The reader works on one contiguous buffer (a mapped file, or an inflated data set) and never
 * copies values out of it, except to swap big endian numbers. Every length is checked against
 * what is left before it is used. Nesting is bounded by dcm_read_options.max_depth (recursion
 * depth is at most that). See part10.h for the tolerances and the strictness.
 */
#include "dicom_int.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define MAX_DEPTH_LIMIT 1024          /* hard cap on max_depth: bounds the recursion */
#define DEFAULT_MAX_INFLATED (512ull << 20)
#define MAX_STREAM_READ (4ull << 30)   /* cap on a non-seekable input read into memory */

struct reader {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    uint64_t base_offset; /* file offset of buf[0] */
    bool implicit;        /* current encoding (may change inside UN sequences) */
    bool big_endian;
    bool inflated;        /* buf is an inflated data set: offsets are into it */
    const struct dcm_read_options *opt;
    struct tr_error *err;
    struct dcm_dataset *root;
    unsigned ambiguous;   /* elements whose VR must be resolved after parsing */
    bool stopped;         /* header_only stop reached */
    uint32_t sequence;    /* tag of the innermost sequence being read, for messages;
                             UINT32_MAX at the top level */
    bool partial;         /* buf is only the first part of the file (header-only fast path):
                             running out of it means "read more", reported as TR_ETRUNCATED */
    uint64_t stop_offset;
};

void dcm_read_options_init(struct dcm_read_options *opt)
{
    opt->max_depth = 64;
    opt->header_only = false;
    opt->allow_no_meta = false;
    opt->max_inflated_size = DEFAULT_MAX_INFLATED;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static uint64_t offset_of(const struct reader *r, size_t pos)
{
    return r->base_offset + pos;
}

static int fail(struct reader *r, int code, size_t pos, uint32_t tag, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(struct reader *r, int code, size_t pos, uint32_t tag, const char *fmt, ...)
{
    char what[TR_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (tag != UINT32_MAX)
        return tr_error_set(r->err, code, "at byte %" PRIu64 "%s, in (%04X,%04X) %s: %s",
                            offset_of(r, pos), r->inflated ? " of the inflated data set" : "",
                            DCM_TAG_GROUP(tag), DCM_TAG_ELEMENT(tag), dcm_dict_keyword(tag), what);
    return tr_error_set(r->err, code, "at byte %" PRIu64 "%s: %s", offset_of(r, pos),
                        r->inflated ? " of the inflated data set" : "", what);
}

static inline uint16_t rd16(const struct reader *r, const uint8_t *p)
{
    return r->big_endian ? tr_be16(p) : tr_le16(p);
}

static inline uint32_t rd32(const struct reader *r, const uint8_t *p)
{
    return r->big_endian ? tr_be32(p) : tr_le32(p);
}

static inline uint32_t read_tag(const struct reader *r, const uint8_t *p)
{
    return ((uint32_t)rd16(r, p) << 16) | rd16(r, p + 2);
}

static inline bool is_upper(uint8_t c)
{
    return c >= 'A' && c <= 'Z';
}

/* The VR code at p looks like a VR (two upper-case letters), as DCMTK and pydicom test. */
static inline bool looks_explicit(const uint8_t *p)
{
    return is_upper(p[0]) && is_upper(p[1]);
}

/* ---- element header ----------------------------------------------------------------------- */

struct header {
    uint32_t tag;
    enum dcm_vr vr;     /* DCM_VR_NONE when implicit */
    uint32_t length;
    size_t size;        /* header bytes */
    bool vr_invalid;    /* explicit stream, but the VR field was not a VR */
};

static int read_header(struct reader *r, struct header *h, size_t end)
{
    size_t left = end - r->pos;
    const uint8_t *p = r->buf + r->pos;
    if (left < 8)
        return fail(r, TR_ETRUNCATED, r->pos, left >= 4 ? read_tag(r, p) : r->sequence,
                    "the data ends inside an element header (%zu of 8 bytes)", left);
    h->tag = read_tag(r, p);
    h->vr = DCM_VR_NONE;
    h->vr_invalid = false;
    /* Items and delimiters have no VR in any transfer syntax (PS3.5 7.5). */
    if (r->implicit || DCM_TAG_GROUP(h->tag) == 0xFFFE) {
        h->length = rd32(r, p + 4);
        h->size = 8;
        return 0;
    }
    if (!looks_explicit(p + 4)) {
        /* Not a VR: this element is implicit VR in an explicit stream (pydicom and DCMTK read
         * it so). */
        h->vr_invalid = true;
        h->length = rd32(r, p + 4);
        h->size = 8;
        return 0;
    }
    enum dcm_vr vr = dcm_vr_from_code(p + 4);
    if (vr == DCM_VR_NONE) {
        /* An unknown VR made of letters: DCMTK assumes a 2-byte length and reads it as UN. */
        h->vr = DCM_VR_UN;
        h->vr_invalid = true;
        h->length = rd16(r, p + 6);
        h->size = 8;
        return 0;
    }
    h->vr = vr;
    if (dcm_vr_info(vr)->long_header) {
        if (left < 12)
            return fail(r, TR_ETRUNCATED, r->pos, h->tag,
                        "the data ends inside an element header (%zu of 12 bytes)", left);
        h->length = rd32(r, p + 8);
        h->size = 12;
    } else {
        h->length = rd16(r, p + 6);
        h->size = 8;
    }
    return 0;
}

/* ---- values ------------------------------------------------------------------------------- */

/* The bytes of a value, swapped to little endian when the stream is big endian. */
static int value_bytes(struct reader *r, struct dcm_dataset *ds, enum dcm_vr vr, size_t pos,
                       uint32_t length, const uint8_t **out)
{
    const uint8_t *p = r->buf + pos;
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    unsigned size = info->size;
    bool swap = r->big_endian && size > 1 &&
                (info->kind == DCM_VR_KIND_NUMBER || info->kind == DCM_VR_KIND_BYTES);
    if (!swap) {
        *out = length ? p : (const uint8_t *)"";
        return 0;
    }
    uint8_t *copy = dcm_dataset_alloc(ds, length);
    if (!copy)
        return TR_ENOMEM;
    /* AT is a pair of 16-bit numbers (PS3.5 6.2), not one 32-bit number. */
    if (vr == DCM_VR_AT)
        size = 2;
    uint32_t whole = length - length % size;
    for (uint32_t i = 0; i < whole; i += size) {
        for (unsigned k = 0; k < size; k++)
            copy[i + k] = p[i + size - 1 - k];
    }
    memcpy(copy + whole, p + whole, length - whole);
    *out = copy;
    return 0;
}

/* ---- data sets, sequences, fragments ------------------------------------------------------ */

enum end_reason {
    END_LIMIT,     /* reached the end of a defined length (or of the input at the top) */
    END_ITEM,      /* consumed an item delimiter */
    END_SEQUENCE,  /* saw (not consumed) a sequence delimiter: the item's sequence ends */
    END_STOPPED,   /* header-only stop */
};

static int parse_dataset(struct reader *r, struct dcm_dataset *ds, size_t end, bool undefined,
                         enum end_reason *why);
static int parse_items(struct reader *r, struct dcm_dataset *ds, uint32_t seq_tag, size_t start,
                       size_t end, bool undefined);

static int check_depth(struct reader *r, struct dcm_dataset *ds, size_t pos, uint32_t tag)
{
    unsigned limit = TR_MIN(r->opt->max_depth, MAX_DEPTH_LIMIT);
    if (ds->depth + 1 > limit)
        return fail(r, TR_ELIMIT, pos, tag, "sequences nested deeper than %u levels", limit);
    return 0;
}

/* Items of a sequence. `end` is the hard limit: the end of a defined-length sequence, or of
 * whatever encloses an undefined-length one (which ends at its sequence delimiter). */
static int parse_sequence(struct reader *r, struct dcm_dataset *ds, uint32_t seq_tag,
                          size_t end, bool undefined)
{
    size_t start = r->pos;
    int rc = check_depth(r, ds, start, seq_tag);
    if (rc)
        return rc;
    uint32_t outer = r->sequence;
    r->sequence = seq_tag;
    rc = parse_items(r, ds, seq_tag, start, end, undefined);
    r->sequence = outer;
    return rc;
}

static int parse_items(struct reader *r, struct dcm_dataset *ds, uint32_t seq_tag, size_t start,
                       size_t end, bool undefined)
{
    int rc;
    for (;;) {
        if (r->pos >= end) {
            if (!undefined)
                return 0;
            return fail(r, TR_ETRUNCATED, start, seq_tag,
                        "the data ends inside this sequence (no sequence delimiter)");
        }
        if (end - r->pos < 8)
            return fail(r, TR_ETRUNCATED, r->pos, seq_tag,
                        "the data ends inside an item header of this sequence");
        const uint8_t *p = r->buf + r->pos;
        uint32_t tag = read_tag(r, p);
        uint32_t length = rd32(r, p + 4);
        size_t item_pos = r->pos;
        if (tag == DCM_TAG_SequenceDelimitationItem) {
            r->pos += 8;
            return 0;
        }
        if (tag == DCM_TAG_ItemDelimitationItem) {
            r->pos += 8; /* a stray item delimiter: skip it, as DCMTK does */
            continue;
        }
        if (tag != DCM_TAG_Item)
            return fail(r, TR_EFORMAT, item_pos, seq_tag,
                        "expected an item (FFFE,E000) in this sequence, found (%04X,%04X)",
                        DCM_TAG_GROUP(tag), DCM_TAG_ELEMENT(tag));
        r->pos += 8;
        struct dcm_dataset *item = dcm_dataset_new_item(ds);
        if (!item)
            return fail(r, TR_ENOMEM, item_pos, seq_tag, "out of memory");
        item->offset = offset_of(r, item_pos);
        enum end_reason why;
        if (length == DCM_UNDEFINED_LENGTH) {
            rc = parse_dataset(r, item, end, true, &why);
        } else {
            item->flags &= ~(unsigned)DCM_DS_UNDEFINED_LENGTH;
            /* An item longer than what is left: DCMTK and pydicom read its elements up to the
             * end of the data, which loses nothing if they are complete (a DICOMDIR whose
             * last record's length was miscounted). A truncated element is still an error. */
            size_t item_end = length > end - r->pos ? end : r->pos + length;
            rc = parse_dataset(r, item, item_end, false, &why);
        }
        if (rc)
            return rc;
        /* Parsing an item never touches ds's element array, but look the sequence up again
         * rather than keep a pointer across the call. */
        struct dcm_element *seq = (struct dcm_element *)dcm_dataset_get(ds, seq_tag);
        if (!seq || dcm_element_append_item(ds, seq, item) < 0)
            return fail(r, TR_ENOMEM, item_pos, seq_tag, "out of memory");
        if (why == END_SEQUENCE) {
            /* The item had no delimiter and the sequence delimiter came: consume it. */
            r->pos += 8;
            return 0;
        }
    }
}

/* Fragments of encapsulated pixel data (PS3.5 A.4), up to the sequence delimiter. */
static int parse_fragments(struct reader *r, struct dcm_dataset *ds, uint32_t tag, size_t end)
{
    for (;;) {
        if (end - r->pos < 8)
            return fail(r, TR_ETRUNCATED, r->pos, tag,
                        "the data ends inside the encapsulated pixel data");
        const uint8_t *p = r->buf + r->pos;
        uint32_t ftag = read_tag(r, p);
        uint32_t length = rd32(r, p + 4);
        if (ftag == DCM_TAG_SequenceDelimitationItem) {
            r->pos += 8;
            return 0;
        }
        if (ftag != DCM_TAG_Item)
            return fail(r, TR_EFORMAT, r->pos, tag,
                        "expected a fragment item (FFFE,E000), found (%04X,%04X)",
                        DCM_TAG_GROUP(ftag), DCM_TAG_ELEMENT(ftag));
        if (length == DCM_UNDEFINED_LENGTH)
            return fail(r, TR_EFORMAT, r->pos, tag, "a pixel data fragment has undefined length");
        if (length > end - r->pos - 8)
            return fail(r, TR_ETRUNCATED, r->pos, tag,
                        "fragment length %" PRIu32 " exceeds the %zu bytes left", length,
                        end - r->pos - 8);
        struct dcm_fragment f = {.bytes = p + 8, .length = length,
                                 .offset = offset_of(r, r->pos + 8)};
        struct dcm_element *e = (struct dcm_element *)dcm_dataset_get(ds, tag);
        if (!e || dcm_element_append_fragment(ds, e, &f) < 0)
            return fail(r, TR_ENOMEM, r->pos, tag, "out of memory");
        r->pos += 8 + (size_t)length;
    }
}

/* Scan for a sequence delimiter (FFFE,E0DD) with zero length: the value of a non-SQ element of
 * undefined length that is not encapsulated (pydicom's read_undefined_length_value). */
static int scan_to_delimiter(struct reader *r, uint32_t tag, size_t end, size_t *value_end)
{
    uint8_t pattern[8];
    if (r->big_endian) {
        tr_put_be16(pattern, 0xFFFE);
        tr_put_be16(pattern + 2, 0xE0DD);
    } else {
        tr_put_le16(pattern, 0xFFFE);
        tr_put_le16(pattern + 2, 0xE0DD);
    }
    memset(pattern + 4, 0, 4);
    const uint8_t *hit = memmem(r->buf + r->pos, end - r->pos, pattern, sizeof(pattern));
    if (!hit)
        return fail(r, TR_ETRUNCATED, r->pos, tag,
                    "undefined length value without a sequence delimiter");
    *value_end = (size_t)(hit - r->buf);
    return 0;
}

static bool next_is_item(const struct reader *r, size_t end)
{
    if (end - r->pos < 4)
        return false;
    return read_tag(r, r->buf + r->pos) == DCM_TAG_Item;
}

/* Parse a sequence whose bytes are implicit VR little endian whatever the stream is (the
 * value of a UN element, PS3.5 6.2.2). */
static int parse_un_sequence(struct reader *r, struct dcm_dataset *ds, uint32_t tag, size_t end,
                             bool undefined)
{
    bool implicit = r->implicit, big = r->big_endian;
    r->implicit = true;
    r->big_endian = false;
    int rc = parse_sequence(r, ds, tag, end, undefined);
    r->implicit = implicit;
    r->big_endian = big;
    return rc;
}

/* Decide the encoding of a data set from its first element, as pydicom does: an explicit VR
 * data set may turn out to be implicit and the reverse. Items in an implicit stream stay
 * implicit. */
static void detect_vr_encoding(struct reader *r, struct dcm_dataset *ds, size_t end)
{
    if (end - r->pos < 6)
        return;
    const uint8_t *p = r->buf + r->pos;
    uint32_t tag = read_tag(r, p);
    if (DCM_TAG_GROUP(tag) == 0xFFFE)
        return;
    bool explicit_found = looks_explicit(p + 4);
    if (r->implicit && explicit_found && ds->depth == 0)
        r->implicit = false;
    else if (!r->implicit && !explicit_found)
        r->implicit = true;
}

static bool is_ambiguous_tag(uint32_t tag)
{
    const struct dcm_dict_entry *d = dcm_dict_lookup(tag);
    return d && d->vr_alt != DCM_VR_NONE;
}

static int parse_dataset(struct reader *r, struct dcm_dataset *ds, size_t end, bool undefined,
                         enum end_reason *why)
{
    bool implicit = r->implicit;
    detect_vr_encoding(r, ds, end);
    int rc = 0;
    *why = END_LIMIT;
    while (r->pos < end) {
        if (ds->depth == 0 && end - r->pos < 8 && !undefined) {
            /* Up to 7 trailing bytes after the last element of the file: padding some writers
             * leave; pydicom and DCMTK ignore it. */
            if (r->partial) {
                rc = TR_ETRUNCATED;
                goto out;
            }
            break;
        }
        size_t pos = r->pos;
        struct header h;
        if ((rc = read_header(r, &h, end)))
            goto out;
        if (h.tag == DCM_TAG_ItemDelimitationItem) {
            r->pos += 8;
            if (undefined && ds->depth > 0) {
                *why = END_ITEM;
                goto out;
            }
            continue; /* stray delimiter: ignore, as DCMTK does */
        }
        if (h.tag == DCM_TAG_SequenceDelimitationItem) {
            if (undefined && ds->depth > 0) {
                *why = END_SEQUENCE; /* item without its delimiter: let the sequence end */
                goto out;
            }
            r->pos += 8;
            continue; /* stray delimiter at the top level */
        }
        if (h.tag == DCM_TAG_Item) {
            rc = fail(r, TR_EFORMAT, pos, h.tag, "an item where a data element was expected");
            goto out;
        }
        if (ds->depth == 0 && r->opt->header_only && h.tag >= DCM_TAG_FloatPixelData &&
            DCM_TAG_GROUP(h.tag) == 0x7FE0) {
            r->stopped = true;
            r->stop_offset = offset_of(r, pos);
            *why = END_STOPPED;
            goto out;
        }
        r->pos += h.size;
        struct dcm_element e = {.tag = h.tag, .vr = (uint8_t)h.vr, .length = h.length,
                                .offset = offset_of(r, r->pos)};
        bool implicit_vr = h.vr == DCM_VR_NONE;
        if (implicit_vr) {
            e.vr = (uint8_t)dcm_dict_vr(h.tag);
            e.flags |= DCM_ELEM_IMPLICIT_VR;
        }
        if (h.vr_invalid)
            e.flags |= DCM_ELEM_VR_GUESSED;
        size_t limit = end;

        if (h.length == DCM_UNDEFINED_LENGTH) {
            e.flags |= DCM_ELEM_UNDEFINED_LENGTH;
            bool un_seq = e.vr == DCM_VR_UN && (!implicit_vr || next_is_item(r, limit));
            if (e.vr == DCM_VR_SQ || un_seq) {
                bool was_un = e.vr == DCM_VR_UN;
                if (was_un) {
                    e.vr = DCM_VR_SQ;
                    e.flags |= DCM_ELEM_VR_GUESSED;
                }
                if (!dcm_dataset_put(ds, &e)) {
                    rc = fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
                    goto out;
                }
                rc = was_un && !implicit_vr ? parse_un_sequence(r, ds, h.tag, limit, true)
                                            : parse_sequence(r, ds, h.tag, limit, true);
                if (rc)
                    goto out;
                continue;
            }
            if (e.vr == DCM_VR_OB || e.vr == DCM_VR_OW || e.vr == DCM_VR_UN ||
                h.tag == DCM_TAG_PixelData || next_is_item(r, limit)) {
                if (next_is_item(r, limit)) {
                    /* Encapsulated (PS3.5 A.4). pydicom names it OB whatever was written. */
                    e.flags |= DCM_ELEM_ENCAPSULATED;
                    if (implicit_vr || e.vr == DCM_VR_UN)
                        e.vr = DCM_VR_OB; /* PS3.5 A.4; an explicit OW is kept as written */
                    e.value.fragments.count = 0;
                    if (!dcm_dataset_put(ds, &e)) {
                        rc = fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
                        goto out;
                    }
                    if ((rc = parse_fragments(r, ds, h.tag, limit)))
                        goto out;
                    continue;
                }
            }
            /* Any other undefined-length value: up to the sequence delimiter. */
            size_t value_end = 0;
            if ((rc = scan_to_delimiter(r, h.tag, limit, &value_end)))
                goto out;
            e.length = (uint32_t)(value_end - r->pos);
            e.value.bytes = r->buf + r->pos;
            r->pos = value_end + 8;
            if (!dcm_dataset_put(ds, &e)) {
                rc = fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
                goto out;
            }
            continue;
        }

        if (h.length > limit - r->pos && e.vr == DCM_VR_SQ && !(e.flags & DCM_ELEM_VR_GUESSED)) {
            /* A sequence longer than what is left: read its items up to the end (see the
             * same case for items in parse_sequence). */
            e.length = h.length = (uint32_t)(limit - r->pos);
        }
        if (h.length > limit - r->pos) {
            rc = fail(r, TR_ETRUNCATED, pos, h.tag,
                      "value length %" PRIu32 " exceeds the %zu bytes left%s", h.length,
                      limit - r->pos, limit == r->len ? " in the file" : " in the item");
            goto out;
        }
        /* An explicit UN holding a public attribute: use the dictionary's VR (as pydicom and
         * DCMTK do); the value is implicit VR little endian (PS3.5 6.2.2). */
        if (e.vr == DCM_VR_UN && !implicit_vr && h.length < 0xFFFF &&
            (!dcm_tag_is_private(h.tag) || dcm_tag_is_private_creator(h.tag))) {
            enum dcm_vr known = dcm_dict_vr(h.tag); /* LO for a private creator */
            if (known != DCM_VR_UN) {
                e.vr = (uint8_t)known;
                e.flags |= DCM_ELEM_VR_GUESSED;
            }
        }
        if (e.vr == DCM_VR_SQ) {
            if (!dcm_dataset_put(ds, &e)) {
                rc = fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
                goto out;
            }
            size_t seq_end = r->pos + h.length;
            rc = (e.flags & DCM_ELEM_VR_GUESSED) && !implicit_vr
                     ? parse_un_sequence(r, ds, h.tag, seq_end, false)
                     : parse_sequence(r, ds, h.tag, seq_end, false);
            if (rc)
                goto out;
            if (r->pos != seq_end) {
                /* A sequence delimiter inside a defined-length sequence ended it early. */
                r->pos = seq_end;
            }
            continue;
        }
        if ((rc = value_bytes(r, ds, (enum dcm_vr)e.vr, r->pos, h.length, &e.value.bytes))) {
            rc = fail(r, rc, pos, h.tag, "out of memory");
            goto out;
        }
        r->pos += h.length;
        if ((implicit_vr || (e.flags & DCM_ELEM_VR_GUESSED)) && is_ambiguous_tag(h.tag))
            r->ambiguous++;
        if (!dcm_dataset_put(ds, &e)) {
            rc = fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
            goto out;
        }
    }
    if (undefined && ds->depth > 0)
        rc = fail(r, TR_ETRUNCATED, r->pos, r->sequence,
                  "the data ends inside an item of this sequence (no item delimiter)");
out:
    r->implicit = implicit;
    return rc;
}

/* ---- ambiguous VRs (PS3.6 "US or SS", "OB or OW", "US or OW") ----------------------------- */

static int64_t find_int_upwards(const struct dcm_dataset *ds, uint32_t tag, bool *found)
{
    for (; ds; ds = ds->parent) {
        int64_t v;
        if (dcm_dataset_get_int(ds, tag, 0, &v) == 0) {
            *found = true;
            return v;
        }
    }
    *found = false;
    return 0;
}

/* Resolve as pydicom's correct_ambiguous_vr_element() does, from the standard's rules:
 * PixelData implicit -> OW; "US or SS" by Pixel Representation (nearest data set that has it);
 * LUT Data by the LUT Descriptor's first value; waveform and overlay data -> OW. */
static void resolve_ambiguous(struct dcm_dataset *ds, bool big_endian)
{
    for (size_t i = 0; i < ds->count; i++) {
        struct dcm_element *e = &ds->elems[i];
        if (e->vr == DCM_VR_SQ) {
            for (uint32_t k = 0; k < e->value.items.count; k++)
                resolve_ambiguous(e->value.items.item[k], big_endian);
            continue;
        }
        if (!(e->flags & (DCM_ELEM_IMPLICIT_VR | DCM_ELEM_VR_GUESSED)))
            continue;
        const struct dcm_dict_entry *d = dcm_dict_lookup(e->tag);
        if (!d || d->vr_alt == DCM_VR_NONE)
            continue;
        if (e->flags & DCM_ELEM_ENCAPSULATED) {
            e->vr = DCM_VR_OB;
        } else if (d->vr == DCM_VR_US && d->vr_alt == DCM_VR_SS) {
            bool found;
            int64_t pr = find_int_upwards(ds, DCM_TAG_PixelRepresentation, &found);
            e->vr = found && pr != 0 ? DCM_VR_SS : DCM_VR_US;
        } else if (d->vr == DCM_VR_US && d->vr_alt == DCM_VR_OW) {
            /* LUT Data (0028,3006): US when the LUT Descriptor says one entry. */
            int64_t entries;
            bool one = dcm_dataset_get_int(ds, 0x00283002, 0, &entries) == 0 && entries == 1;
            e->vr = one ? DCM_VR_US : DCM_VR_OW;
        } else if (d->vr == DCM_VR_OB && d->vr_alt == DCM_VR_OW) {
            e->vr = DCM_VR_OW;
        }
    }
    (void)big_endian;
}

/* ---- meta group and transfer syntax ------------------------------------------------------- */

static void copy_uid(char *dst, size_t size, const uint8_t *src, uint32_t len)
{
    const char *s = (const char *)src, *e = s + len;
    dcm_string_trim(DCM_VR_UI, &s, &e);
    size_t n = TR_MIN((size_t)(e - s), size - 1);
    memcpy(dst, s, n);
    dst[n] = '\0';
}

/* Guess the encoding of a bare data set from its first bytes: endianness from the group
 * number (small groups come first in real data sets), VR from the VR field. */
static void guess_encoding(const uint8_t *p, size_t len, bool *implicit, bool *big_endian)
{
    *implicit = false;
    *big_endian = false;
    if (len < 8)
        return;
    uint16_t g_le = tr_le16(p), g_be = tr_be16(p);
    bool explicit_vr = looks_explicit(p + 4);
    if (g_le > 0x00FF && g_be <= 0x00FF && g_be != 0)
        *big_endian = true;
    *implicit = !explicit_vr;
    if (*implicit)
        *big_endian = false; /* Implicit VR Big Endian does not exist */
}

static int read_meta(struct reader *r, struct dcm_file *f)
{
    /* PS3.10 7.1: the meta group is always Explicit VR Little Endian. Read elements while the
     * group is 0002, whatever (0002,0000) says, as pydicom does; tolerate implicit encoding. */
    r->implicit = false;
    r->big_endian = false;
    while (r->len - r->pos >= 8 && tr_le16(r->buf + r->pos) == 0x0002) {
        size_t pos = r->pos;
        struct header h;
        int rc = read_header(r, &h, r->len);
        if (rc)
            return rc;
        if (h.length == DCM_UNDEFINED_LENGTH)
            return fail(r, TR_EFORMAT, pos, h.tag, "undefined length in the file meta information");
        r->pos += h.size;
        if (h.length > r->len - r->pos)
            return fail(r, TR_ETRUNCATED, pos, h.tag,
                        "value length %" PRIu32 " exceeds the %zu bytes left in the file",
                        h.length, r->len - r->pos);
        struct dcm_element e = {.tag = h.tag, .vr = (uint8_t)h.vr, .length = h.length,
                                .offset = offset_of(r, r->pos)};
        if (h.vr == DCM_VR_NONE) {
            e.vr = (uint8_t)dcm_dict_vr(h.tag);
            e.flags |= DCM_ELEM_IMPLICIT_VR;
        }
        if (e.vr == DCM_VR_SQ) {
            if (!dcm_dataset_put(f->meta, &e))
                return fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
            if ((rc = parse_sequence(r, f->meta, h.tag, r->pos + h.length, false)))
                return rc;
            continue;
        }
        e.value.bytes = r->buf + r->pos;
        r->pos += h.length;
        if (!dcm_dataset_put(f->meta, &e))
            return fail(r, TR_ENOMEM, pos, h.tag, "out of memory");
        f->has_meta = true;
    }
    return 0;
}

static int inflate_dataset(struct reader *r, struct dcm_file *f)
{
    size_t cap = (size_t)TR_MIN(r->opt->max_inflated_size, (uint64_t)SIZE_MAX / 2);
    size_t alloc = TR_MIN(TR_MAX((r->len - r->pos) * 4, (size_t)65536), cap);
    uint8_t *out = tr_malloc(alloc);
    if (!out)
        return fail(r, TR_ENOMEM, r->pos, UINT32_MAX, "out of memory inflating the data set");
    z_stream z;
    memset(&z, 0, sizeof(z));
    /* PS3.5 A.5: raw deflate (RFC 1951) without zlib header. Some writers add the zlib
     * header; detect it (CMF 0x78 with a valid check) and accept both. */
    const uint8_t *in = r->buf + r->pos;
    size_t in_len = r->len - r->pos;
    int wbits = -MAX_WBITS;
    if (in_len >= 2 && in[0] == 0x78 && ((in[0] << 8) | in[1]) % 31 == 0)
        wbits = MAX_WBITS;
    if (inflateInit2(&z, wbits) != Z_OK) {
        tr_free(out);
        return fail(r, TR_ENOMEM, r->pos, UINT32_MAX, "cannot start inflating");
    }
    size_t produced = 0;
    int zrc = Z_OK;
    size_t consumed = 0;
    while (zrc != Z_STREAM_END) {
        if (produced == alloc) {
            if (alloc >= cap) {
                inflateEnd(&z);
                tr_free(out);
                return fail(r, TR_ELIMIT, r->pos, UINT32_MAX,
                            "the deflated data set inflates beyond the %zu-byte limit", cap);
            }
            size_t bigger = TR_MIN(alloc * 2, cap);
            uint8_t *p = tr_reallocarray(out, bigger, 1);
            if (!p) {
                inflateEnd(&z);
                tr_free(out);
                return fail(r, TR_ENOMEM, r->pos, UINT32_MAX, "out of memory inflating");
            }
            out = p;
            alloc = bigger;
        }
        z.next_in = (Bytef *)(in + consumed);
        z.avail_in = (uInt)TR_MIN(in_len - consumed, (size_t)UINT32_MAX);
        z.next_out = out + produced;
        z.avail_out = (uInt)TR_MIN(alloc - produced, (size_t)UINT32_MAX);
        uInt before_in = z.avail_in;
        uInt before_out = z.avail_out;
        zrc = inflate(&z, Z_NO_FLUSH);
        consumed += before_in - z.avail_in;
        produced += before_out - z.avail_out;
        if (zrc == Z_STREAM_END)
            break;
        if (zrc == Z_BUF_ERROR && consumed == in_len) {
            /* Input ended without the end-of-stream marker: take what came out, as DCMTK
             * does for streams truncated after the last element. */
            break;
        }
        if (zrc != Z_OK && zrc != Z_BUF_ERROR) {
            size_t at = r->pos + consumed;
            inflateEnd(&z);
            tr_free(out);
            return fail(r, TR_EFORMAT, at, UINT32_MAX, "the deflated data set is corrupt (%s)",
                        z.msg ? z.msg : "inflate error");
        }
    }
    inflateEnd(&z);
    struct dcm_source *src = dcm_source_new_heap(out);
    if (!src) {
        tr_free(out);
        return fail(r, TR_ENOMEM, r->pos, UINT32_MAX, "out of memory");
    }
    dcm_dataset_attach_source(f->dataset, src);
    dcm_source_unref(src);
    r->buf = out;
    r->len = produced;
    r->base_offset = 0;
    r->pos = 0;
    r->inflated = true;
    return 0;
}

static int parse_file(struct reader *r, struct dcm_file *f)
{
    int rc;
    const uint8_t *p = r->buf;
    if (r->len >= 132 && memcmp(p + 128, "DICM", 4) == 0) {
        f->has_preamble = true;
        r->pos = 132;
    } else if (!r->opt->allow_no_meta) {
        bool implicit, big;
        guess_encoding(p, r->len, &implicit, &big);
        bool plausible = r->len >= 8 && (tr_le16(p) <= 0x0008 || tr_be16(p) == 0x0008) &&
                         !(implicit && tr_le32(p + 4) > r->len);
        if (plausible)
            return tr_error_set(r->err, TR_EFORMAT,
                                "not a DICOM Part 10 file: no \"DICM\" prefix at byte 128; it "
                                "looks like a bare data set (%s VR %s endian) - read it with "
                                "--force",
                                implicit ? "implicit" : "explicit", big ? "big" : "little");
        return tr_error_set(r->err, TR_EFORMAT,
                            "not a DICOM file: no \"DICM\" prefix at byte 128%s",
                            r->len < 132 ? " (the file is shorter than 132 bytes)" : "");
    }
    if ((rc = read_meta(r, f)))
        return rc;

    const struct dcm_element *ts = dcm_dataset_get(f->meta, DCM_TAG_TransferSyntaxUID);
    if (ts && ts->length)
        copy_uid(f->ts_uid, sizeof(f->ts_uid), ts->value.bytes, ts->length);
    f->ts = f->ts_uid[0] ? dcm_ts_lookup(f->ts_uid) : NULL;
    f->dataset_offset = offset_of(r, r->pos);

    if (f->ts) {
        r->implicit = f->ts->flags & DCM_TS_IMPLICIT_VR;
        r->big_endian = f->ts->flags & DCM_TS_BIG_ENDIAN;
        if (f->ts->flags & DCM_TS_DEFLATED) {
            if (r->partial)
                return TR_ETRUNCATED; /* inflate needs the whole stream */
            if ((rc = inflate_dataset(r, f)))
                return rc;
        }
    } else {
        /* No or unknown transfer syntax: detect the encoding (an unknown one is most likely a
         * private compressed syntax, explicit VR little endian with encapsulated pixels). */
        guess_encoding(r->buf + r->pos, r->len - r->pos, &r->implicit, &r->big_endian);
        f->ts_detected = true;
        const char *uid = r->implicit     ? DCM_UID_ImplicitVRLittleEndian
                          : r->big_endian ? DCM_UID_ExplicitVRBigEndian
                                          : DCM_UID_ExplicitVRLittleEndian;
        if (!f->ts_uid[0])
            snprintf(f->ts_uid, sizeof(f->ts_uid), "%s", uid);
        f->ts = dcm_ts_lookup(uid);
    }
    enum end_reason why;
    rc = parse_dataset(r, f->dataset, r->len, false, &why);
    if (rc)
        return rc;
    if (r->partial && !r->stopped)
        return TR_ETRUNCATED; /* the header goes on past the part that was read */
    if (r->ambiguous)
        resolve_ambiguous(f->dataset, r->big_endian);
    f->stopped_before_pixels = r->stopped;
    f->pixel_offset = r->stop_offset;
    return 0;
}

/* ---- public entry points ------------------------------------------------------------------ */

static int file_new(struct dcm_file **out)
{
    struct dcm_file *f = tr_calloc(1, sizeof(*f));
    if (!f)
        return TR_ENOMEM;
    f->meta = dcm_dataset_new();
    f->dataset = dcm_dataset_new();
    if (!f->meta || !f->dataset) {
        dcm_file_free(f);
        return TR_ENOMEM;
    }
    *out = f;
    return 0;
}

void dcm_file_free(struct dcm_file *f)
{
    if (!f)
        return;
    dcm_dataset_free(f->meta);
    dcm_dataset_free(f->dataset);
    tr_free(f);
}

struct dcm_dataset *dcm_file_take_dataset(struct dcm_file *f)
{
    struct dcm_dataset *ds = f->dataset;
    f->dataset = NULL;
    return ds;
}

static int read_buffer(const uint8_t *data, size_t len, struct dcm_source *src, bool partial,
                       const struct dcm_read_options *opt, struct dcm_file **out,
                       struct tr_error *err)
{
    struct dcm_read_options defaults;
    if (!opt) {
        dcm_read_options_init(&defaults);
        opt = &defaults;
    }
    struct dcm_file *f;
    if (file_new(&f) < 0)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    if (src) {
        dcm_dataset_attach_source(f->meta, src);
        dcm_dataset_attach_source(f->dataset, src);
    }
    f->size = len;
    struct reader r = {.buf = data, .len = len, .opt = opt, .err = partial ? NULL : err,
                       .root = f->dataset, .partial = partial, .sequence = UINT32_MAX};
    int rc = parse_file(&r, f);
    if (rc) {
        dcm_file_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

int dcm_file_read_memory(const void *data, size_t len, const struct dcm_read_options *opt,
                         struct dcm_file **out, struct tr_error *err)
{
    return read_buffer(data, len, NULL, false, opt, out, err);
}

static int read_stream(int fd, uint8_t **data, size_t *len, struct tr_error *err)
{
    struct tr_buf b;
    tr_buf_init(&b, (size_t)MAX_STREAM_READ);
    for (;;) {
        int rc = tr_buf_grow(&b, 65536);
        if (rc < 0) {
            tr_buf_release(&b);
            return tr_error_set(err, rc, "%s", rc == TR_ELIMIT ? "input larger than 4 GiB"
                                                                : "out of memory");
        }
        ssize_t n = read(fd, b.data + b.len, 65536);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            tr_buf_release(&b);
            return tr_error_set(err, TR_EIO, "read failed: %s", strerror(e));
        }
        if (n == 0)
            break;
        b.len += (size_t)n;
    }
    *data = (uint8_t *)tr_buf_detach(&b, len);
    return *data ? 0 : tr_error_set(err, TR_ENOMEM, "out of memory");
}

/* Header-only reads first try the first HEADER_PREFIX bytes of the file. */
#define HEADER_PREFIX 16384

static int read_prefix(int fd, size_t file_size, const struct dcm_read_options *opt,
                       struct dcm_file **out, struct tr_error *err)
{
    uint8_t *buf = tr_malloc(HEADER_PREFIX);
    if (!buf)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    size_t got = 0;
    while (got < HEADER_PREFIX) {
        ssize_t n = pread(fd, buf + got, HEADER_PREFIX - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < HEADER_PREFIX) {
        tr_free(buf);
        return TR_ETRUNCATED; /* the file changed under us: let the mapped read decide */
    }
    struct dcm_source *src = dcm_source_new_heap(buf);
    if (!src) {
        tr_free(buf);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    /* Errors other than running out of the prefix are real: repeat them with `err`. */
    int rc = read_buffer(buf, HEADER_PREFIX, src, true, opt, out, NULL);
    dcm_source_unref(src);
    if (rc == 0)
        (*out)->size = file_size;
    else if (rc != TR_ETRUNCATED)
        rc = TR_ETRUNCATED; /* re-read mapped to get the full message */
    return rc;
}

int dcm_file_read_fd(int fd, const struct dcm_read_options *opt, struct dcm_file **out,
                     struct tr_error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return tr_error_set(err, TR_EIO, "cannot stat: %s", strerror(errno));
    if (S_ISDIR(st.st_mode))
        return tr_error_set(err, TR_EINVAL, "is a directory");
    struct dcm_source *src;
    const uint8_t *data;
    size_t len;
    if (S_ISREG(st.st_mode)) {
        if (st.st_size == 0)
            return tr_error_set(err, TR_EFORMAT, "the file is empty");
        if ((uint64_t)st.st_size > SIZE_MAX)
            return tr_error_set(err, TR_ELIMIT, "the file is too large to map");
        len = (size_t)st.st_size;
        if (opt && opt->header_only && len > HEADER_PREFIX) {
            /* Most headers are a few KB: one pread is much cheaper than mapping the file
             * (mmap, page faults, munmap). If the header does not end in the prefix, the
             * parse says so and the whole file is mapped instead. */
            int rc = read_prefix(fd, len, opt, out, err);
            if (rc != TR_ETRUNCATED)
                return rc;
        }
        void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED)
            return tr_error_set(err, TR_EIO, "cannot map: %s", strerror(errno));
        src = dcm_source_new_map(map, len);
        if (!src) {
            munmap(map, len);
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        }
        data = map;
    } else {
        uint8_t *heap;
        int rc = read_stream(fd, &heap, &len, err);
        if (rc)
            return rc;
        src = dcm_source_new_heap(heap);
        if (!src) {
            tr_free(heap);
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        }
        data = heap;
    }
    int rc = read_buffer(data, len, src, false, opt, out, err);
    dcm_source_unref(src);
    return rc;
}

int dcm_file_read(const char *path, const struct dcm_read_options *opt, struct dcm_file **out,
                  struct tr_error *err)
{
    int fd = strcmp(path, "-") == 0 ? dup(STDIN_FILENO) : open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return tr_error_set(err, errno == ENOENT ? TR_ENOTFOUND : TR_EIO, "cannot open: %s",
                            strerror(errno));
    int rc = dcm_file_read_fd(fd, opt, out, err);
    close(fd);
    return rc;
}

int dcm_dataset_read(const void *data, size_t len, const char *ts_uid,
                     const struct dcm_read_options *opt, uint64_t base_offset,
                     struct dcm_dataset **out, struct tr_error *err)
{
    struct dcm_read_options defaults;
    if (!opt) {
        dcm_read_options_init(&defaults);
        opt = &defaults;
    }
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
    if (!ts)
        return tr_error_set(err, TR_EUNSUPPORTED, "unknown transfer syntax %s", ts_uid);
    if (ts->flags & DCM_TS_DEFLATED)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "a deflated data set must be inflated before dcm_dataset_read");
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    struct reader r = {.buf = data, .len = len, .base_offset = base_offset, .opt = opt,
                       .err = err, .root = ds, .sequence = UINT32_MAX,
                       .implicit = ts->flags & DCM_TS_IMPLICIT_VR,
                       .big_endian = ts->flags & DCM_TS_BIG_ENDIAN};
    enum end_reason why;
    int rc = parse_dataset(&r, ds, len, false, &why);
    if (rc) {
        dcm_dataset_free(ds);
        return rc;
    }
    if (r.ambiguous)
        resolve_ambiguous(ds, r.big_endian);
    *out = ds;
    return 0;
}
