/*
 * dump.c - a readable listing of a data set, laid out like DCMTK's dcmdump so that people who
 * know one read the other: "(gggg,eeee) VR value   # length, VM Keyword", items and sequences
 * indented by two spaces per level. Text is decoded to UTF-8; control characters are shown as
 * escapes so that a listing is always one line per element.
 */
#include "dicom_int.h"

#include <inttypes.h>
#include <stdio.h>

#define VALUE_WIDTH 40     /* dcmdump's value column */
#define MAX_SHOWN 64       /* characters of a value shown unless DCM_DUMP_FULL_VALUES */
#define MAX_BINARY_SHOWN 16 /* binary numbers / words shown */

struct dumper {
    struct tr_buf line;
    struct tr_buf text;
    const struct tr_sink *sink;
    unsigned flags;
    struct tr_error *err;
};

static int emit(struct dumper *d)
{
    int rc = tr_buf_addc(&d->line, '\n');
    if (rc == 0)
        rc = tr_sink_write(d->sink, d->line.data, d->line.len);
    tr_buf_reset(&d->line);
    if (rc)
        return tr_error_set(d->err, rc, "write failed: %s", tr_strerror(rc));
    return 0;
}

/* Number of UTF-8 characters (for column alignment). */
static size_t display_width(const char *s, size_t n)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        w += ((unsigned char)s[i] & 0xC0) != 0x80;
    return w;
}

static const char hexdigits[] = "0123456789ABCDEF";

/* "(GGGG,EEEE) VR " after the indentation, formatted by hand: a listing of 1,000 files has
 * 100,000 of these and printf was most of the cost. */
static int start_line(struct dumper *d, unsigned depth, uint32_t tag, const char *vr)
{
    char text[2 * 64 + 16];
    size_t n = 0;
    for (unsigned i = 0; i < depth && n < 2 * 64; i++) {
        text[n++] = ' ';
        text[n++] = ' ';
    }
    text[n++] = '(';
    for (int shift = 28; shift >= 0; shift -= 4) {
        text[n++] = hexdigits[(tag >> shift) & 15];
        if (shift == 16)
            text[n++] = ',';
    }
    text[n++] = ')';
    text[n++] = ' ';
    text[n++] = vr[0];
    text[n++] = vr[1];
    text[n++] = ' ';
    return tr_buf_add(&d->line, text, n);
}

static size_t format_unsigned(char *out, uint64_t v)
{
    char digits[24];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = digits[n - 1 - i];
    return n;
}

static int finish_line(struct dumper *d, size_t value_start, const char *length, unsigned vm,
                       const char *keyword)
{
    static const char spaces[VALUE_WIDTH] = "                                        ";
    size_t width = display_width(d->line.data + value_start, d->line.len - value_start);
    if (width < VALUE_WIDTH)
        tr_buf_add(&d->line, spaces, VALUE_WIDTH - width);
    char text[64];
    size_t n = 0, len = strlen(length);
    text[n++] = ' ';
    text[n++] = '#';
    text[n++] = ' ';
    for (size_t pad = len; pad < 4; pad++)
        text[n++] = ' ';
    memcpy(text + n, length, len);
    n += len;
    text[n++] = ',';
    text[n++] = ' ';
    n += format_unsigned(text + n, vm);
    text[n++] = ' ';
    tr_buf_add(&d->line, text, n);
    tr_buf_adds(&d->line, keyword);
    return emit(d);
}

/* Append text with control characters escaped, shortened to MAX_SHOWN characters. */
static void add_shown_text(struct dumper *d, const char *s, size_t n)
{
    size_t shown = 0, run = 0;
    bool full = d->flags & DCM_DUMP_FULL_VALUES;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c & 0xC0) != 0x80) {
            if (!full && shown == MAX_SHOWN) {
                tr_buf_add(&d->line, s + i - run, run);
                tr_buf_adds(&d->line, "...");
                return;
            }
            shown++;
        }
        if (c >= 0x20 && c != 0x7F) {
            run++;
            continue;
        }
        tr_buf_add(&d->line, s + i - run, run);
        run = 0;
        tr_buf_addf(&d->line, "\\x%02x", c);
    }
    tr_buf_add(&d->line, s + n - run, run);
}

static void add_binary(struct dumper *d, const struct dcm_element *e)
{
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    unsigned size = info->size ? info->size : 1;
    if (vr == DCM_VR_OB || vr == DCM_VR_UN)
        size = 1;
    unsigned n = e->length / size;
    unsigned shown = (d->flags & DCM_DUMP_FULL_VALUES) ? n : TR_MIN(n, (unsigned)MAX_BINARY_SHOWN);
    for (unsigned i = 0; i < shown; i++) {
        const uint8_t *p = e->value.bytes + (size_t)i * size;
        uint64_t v = size == 1 ? p[0] : size == 2 ? tr_le16(p) : size == 4 ? tr_le32(p) : tr_le64(p);
        char text[20];
        size_t k = 0;
        if (i)
            text[k++] = '\\';
        for (int shift = (int)size * 8 - 4; shift >= 0; shift -= 4)
            text[k++] = "0123456789abcdef"[(v >> shift) & 15];
        tr_buf_add(&d->line, text, k);
    }
    if (shown < n)
        tr_buf_adds(&d->line, "...");
}

static void add_numbers(struct dumper *d, const struct dcm_element *e)
{
    unsigned n = dcm_element_vm(e);
    unsigned shown = (d->flags & DCM_DUMP_FULL_VALUES) ? n : TR_MIN(n, (unsigned)MAX_BINARY_SHOWN);
    for (unsigned i = 0; i < shown; i++) {
        if (i)
            tr_buf_addc(&d->line, '\\');
        if (e->vr == DCM_VR_AT) {
            uint32_t t = 0;
            dcm_element_get_tag(e, i, &t);
            tr_buf_addf(&d->line, "(%04X,%04X)", DCM_TAG_GROUP(t), DCM_TAG_ELEMENT(t));
        } else if (e->vr == DCM_VR_FL || e->vr == DCM_VR_FD) {
            double v = 0;
            dcm_element_get_float(e, i, &v);
            tr_buf_addf(&d->line, "%.*g", e->vr == DCM_VR_FL ? 8 : 17, v);
        } else if (e->vr == DCM_VR_UV) {
            uint64_t v = 0;
            dcm_element_get_uint(e, i, &v);
            tr_buf_addf(&d->line, "%" PRIu64, v);
        } else {
            int64_t v = 0;
            dcm_element_get_int(e, i, &v);
            char text[24];
            size_t k = 0;
            if (v < 0)
                text[k++] = '-';
            k += format_unsigned(text + k, v < 0 ? 0 - (uint64_t)v : (uint64_t)v);
            tr_buf_add(&d->line, text, k);
        }
    }
    if (shown < n)
        tr_buf_adds(&d->line, "...");
}

static int dump_dataset(struct dumper *d, const struct dcm_dataset *ds, unsigned depth);

static void length_text(char *buf, size_t size, uint32_t length, bool undefined)
{
    if (undefined || size < 12) {
        memcpy(buf, "u/l", 4);
        return;
    }
    buf[format_unsigned(buf, length)] = '\0';
}

static int dump_element(struct dumper *d, const struct dcm_dataset *ds,
                        const struct dcm_element *e, unsigned depth)
{
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    const char *keyword = dcm_dict_keyword(e->tag);
    if (!*keyword)
        keyword = dcm_tag_is_private(e->tag) ? "PrivateTag" : "Unknown Tag & Data";
    char len[24];
    int rc;
    if (vr == DCM_VR_SQ) {
        bool undefined = e->flags & DCM_ELEM_UNDEFINED_LENGTH;
        start_line(d, depth, e->tag, "SQ");
        size_t vs = d->line.len;
        tr_buf_addf(&d->line, "(Sequence with %s length #=%" PRIu32 ")",
                    undefined ? "undefined" : "explicit", e->value.items.count);
        length_text(len, sizeof(len), e->length, undefined);
        if ((rc = finish_line(d, vs, len, 1, keyword)))
            return rc;
        for (uint32_t i = 0; i < e->value.items.count; i++) {
            const struct dcm_dataset *item = e->value.items.item[i];
            bool iu = item->flags & DCM_DS_UNDEFINED_LENGTH;
            start_line(d, depth + 1, DCM_TAG_Item, "na");
            vs = d->line.len;
            tr_buf_addf(&d->line, "(Item with %s length #=%zu)", iu ? "undefined" : "explicit",
                        item->count);
            if ((rc = finish_line(d, vs, iu ? "u/l" : "-", 1, "Item")))
                return rc;
            if ((rc = dump_dataset(d, item, depth + 2)))
                return rc;
            if (iu) {
                start_line(d, depth + 1, DCM_TAG_ItemDelimitationItem, "na");
                vs = d->line.len;
                tr_buf_adds(&d->line, "(ItemDelimitationItem)");
                if ((rc = finish_line(d, vs, "0", 0, "ItemDelimitationItem")))
                    return rc;
            }
        }
        if (undefined) {
            start_line(d, depth, DCM_TAG_SequenceDelimitationItem, "na");
            vs = d->line.len;
            tr_buf_adds(&d->line, "(SequenceDelimitationItem)");
            return finish_line(d, vs, "0", 0, "SequenceDelimitationItem");
        }
        return 0;
    }
    if (e->flags & DCM_ELEM_ENCAPSULATED) {
        start_line(d, depth, e->tag, dcm_vr_name(vr));
        size_t vs = d->line.len;
        tr_buf_addf(&d->line, "(PixelSequence #=%" PRIu32 ")", e->value.fragments.count);
        if ((rc = finish_line(d, vs, "u/l", 1, keyword)))
            return rc;
        for (uint32_t i = 0; i < e->value.fragments.count; i++) {
            const struct dcm_fragment *f = &e->value.fragments.fragment[i];
            start_line(d, depth + 1, DCM_TAG_Item, "pi");
            vs = d->line.len;
            struct dcm_element fe = {.tag = DCM_TAG_Item, .vr = DCM_VR_OB, .length = f->length,
                                     .value.bytes = f->bytes};
            if (f->length)
                add_binary(d, &fe);
            else
                tr_buf_adds(&d->line, "(no value available)");
            length_text(len, sizeof(len), f->length, false);
            if ((rc = finish_line(d, vs, len, 1, i == 0 ? "Item (offset table)" : "Item")))
                return rc;
        }
        start_line(d, depth, DCM_TAG_SequenceDelimitationItem, "na");
        vs = d->line.len;
        tr_buf_adds(&d->line, "(SequenceDelimitationItem)");
        return finish_line(d, vs, "0", 0, "SequenceDelimitationItem");
    }

    start_line(d, depth, e->tag, dcm_vr_name(vr));
    size_t vs = d->line.len;
    unsigned vm = dcm_element_vm(e);
    length_text(len, sizeof(len), e->length, false);
    if (e->length == 0 || (vm == 0 && dcm_vr_is_string(vr))) {
        tr_buf_adds(&d->line, "(no value available)");
        return finish_line(d, vs, len, 0, keyword);
    }
    switch (dcm_vr_info(vr)->kind) {
    case DCM_VR_KIND_STRING:
    case DCM_VR_KIND_TEXT: {
        tr_buf_reset(&d->text);
        rc = dcm_element_get_string(ds, e, DCM_ALL_VALUES, &d->text);
        if (rc)
            return tr_error_set(d->err, rc, "(%04X,%04X): %s", DCM_TAG_GROUP(e->tag),
                                DCM_TAG_ELEMENT(e->tag), tr_strerror(rc));
        const struct dcm_uid_entry *u = NULL;
        if (vr == DCM_VR_UI && vm == 1)
            u = dcm_uid_lookup(d->text.data ? d->text.data : "");
        if (u) {
            tr_buf_addf(&d->line, "=%s", u->keyword);
        } else {
            tr_buf_addc(&d->line, '[');
            add_shown_text(d, d->text.data ? d->text.data : "", d->text.len);
            tr_buf_addc(&d->line, ']');
        }
        break;
    }
    case DCM_VR_KIND_NUMBER: add_numbers(d, e); break;
    default: add_binary(d, e); break;
    }
    return finish_line(d, vs, len, vm, keyword);
}

static int dump_dataset(struct dumper *d, const struct dcm_dataset *ds, unsigned depth)
{
    for (size_t i = 0; i < ds->count; i++) {
        if ((d->flags & DCM_DUMP_NO_META) && DCM_TAG_GROUP(ds->elems[i].tag) == 0x0002)
            continue;
        int rc = dump_element(d, ds, &ds->elems[i], depth);
        if (rc)
            return rc;
    }
    return 0;
}

static void dumper_init(struct dumper *d, const struct tr_sink *sink, unsigned flags,
                        struct tr_error *err)
{
    tr_buf_init(&d->line, (size_t)1 << 30);
    tr_buf_init(&d->text, (size_t)1 << 34);
    d->sink = sink;
    d->flags = flags;
    d->err = err;
}

static void dumper_release(struct dumper *d)
{
    tr_buf_release(&d->line);
    tr_buf_release(&d->text);
}

int dcm_dump_dataset(const struct dcm_dataset *ds, unsigned flags, const struct tr_sink *sink,
                     struct tr_error *err)
{
    struct dumper d;
    dumper_init(&d, sink, flags, err);
    int rc = dump_dataset(&d, ds, 0);
    dumper_release(&d);
    return rc;
}

int dcm_dump_file(const struct dcm_file *f, unsigned flags, const struct tr_sink *sink,
                  struct tr_error *err)
{
    struct dumper d;
    dumper_init(&d, sink, flags, err);
    int rc = 0;
    const char *ts_name = f->ts ? f->ts->name : f->ts_uid;
    if (!(flags & DCM_DUMP_NO_META)) {
        tr_buf_addf(&d.line, "\n# Dicom-File-Format\n\n# Dicom-Meta-Information-Header\n"
                             "# Used TransferSyntax: Explicit VR Little Endian");
        rc = emit(&d);
        if (rc == 0)
            rc = dump_dataset(&d, f->meta, 0);
        if (rc == 0) {
            tr_buf_addc(&d.line, '\n');
            tr_buf_adds(&d.line, "# Dicom-Data-Set");
            rc = emit(&d);
        }
    } else {
        tr_buf_adds(&d.line, "# Dicom-Data-Set");
        rc = emit(&d);
    }
    if (rc == 0) {
        tr_buf_addf(&d.line, "# Used TransferSyntax: %s%s", ts_name,
                    f->ts_detected ? " (detected)" : "");
        rc = emit(&d);
    }
    if (rc == 0)
        rc = dump_dataset(&d, f->dataset, 0);
    if (rc == 0 && f->stopped_before_pixels) {
        tr_buf_addf(&d.line, "# (stopped before the pixel data at byte %" PRIu64 ")",
                    f->pixel_offset);
        rc = emit(&d);
    }
    dumper_release(&d);
    return rc;
}
