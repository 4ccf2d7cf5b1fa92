/*
 * part10_write.c - writing data sets (PS3.5 7.1, 7.5, A.1-A.5) and DICOM files (PS3.10 7.1):
 * implicit or explicit VR, little or big endian, deflate; values padded to even length with the
 * padding of their VR (PS3.5 6.2); sequences and items with the lengths they were read with
 * (or defined lengths on request); group lengths recomputed.
 *
 * Writing to a file descriptor (dcm_file_write_fd) can copy the values still held in the
 * source file -- the pixel data, in practice -- from the source's descriptor inside the kernel
 * (copy_file_range(2)): those bytes then never pass through user space, and the reader's
 * mapping of them is never touched.
 */
#include "dicom_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <zlib.h>

/* Values copied from the source file by the kernel (dcm_file_write_fd). */
struct file_copy {
    struct tr_bufsink *buffer; /* what is before a copied value is flushed first */
    const uint8_t *map;        /* the source file as the reader mapped it, from offset 0 */
    size_t map_length;
    int in_fd, out_fd;
    bool unsupported; /* the kernel said no once: write from then on */
    uint64_t copied;  /* bytes copied */
};

/* Values this long or longer are copied rather than written (below it, a write from the
 * mapping costs less than the extra system call). */
#define COPY_MIN 65536

struct writer {
    const struct tr_sink *sink;
    bool implicit;
    bool big_endian;
    bool defined_lengths;
    struct tr_error *err;
    struct file_copy *copy; /* NULL: write every value */
};

void dcm_write_options_init(struct dcm_write_options *opt)
{
    opt->ts_uid = NULL;
    opt->deflate_level = 6;
    opt->defined_lengths = false;
}

/* ---- encoded lengths ---------------------------------------------------------------------- */

static bool uses_long_header(const struct writer *w, enum dcm_vr vr, uint64_t value_length)
{
    if (w->implicit)
        return false;
    return dcm_vr_info(vr)->long_header || value_length > 0xFFFE;
}

static uint64_t header_size(const struct writer *w, enum dcm_vr vr, uint64_t value_length)
{
    if (w->implicit)
        return 8;
    return uses_long_header(w, vr, value_length) ? 12 : 8;
}

static uint64_t padded(uint64_t n)
{
    return n + (n & 1);
}

static uint64_t dataset_length(const struct writer *w, const struct dcm_dataset *ds,
                               bool skip_meta);

static bool item_undefined(const struct writer *w, const struct dcm_dataset *item)
{
    return !w->defined_lengths && (item->flags & DCM_DS_UNDEFINED_LENGTH);
}

static bool element_undefined(const struct writer *w, const struct dcm_element *e)
{
    if (e->flags & DCM_ELEM_ENCAPSULATED)
        return true;
    return e->vr == DCM_VR_SQ && !w->defined_lengths && (e->flags & DCM_ELEM_UNDEFINED_LENGTH);
}

/* Length of the value of e as written (without its header; 0xFFFFFFFF-length values: the
 * content including delimiters). */
static uint64_t value_length(const struct writer *w, const struct dcm_element *e)
{
    if (e->vr == DCM_VR_SQ) {
        uint64_t n = 0;
        for (uint32_t i = 0; i < e->value.items.count; i++) {
            const struct dcm_dataset *item = e->value.items.item[i];
            n += 8 + dataset_length(w, item, false);
            if (item_undefined(w, item))
                n += 8;
        }
        if (element_undefined(w, e))
            n += 8;
        return n;
    }
    if (e->flags & DCM_ELEM_ENCAPSULATED) {
        uint64_t n = 8; /* sequence delimiter */
        for (uint32_t i = 0; i < e->value.fragments.count; i++)
            n += 8 + padded(e->value.fragments.fragment[i].length);
        return n;
    }
    return padded(e->length);
}

static uint64_t element_length(const struct writer *w, const struct dcm_element *e)
{
    uint64_t v = value_length(w, e);
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    /* Group FFFE has no VR in any transfer syntax (put_header writes 8 bytes). */
    if (DCM_TAG_GROUP(e->tag) == 0xFFFE)
        return 8 + v;
    return header_size(w, vr, element_undefined(w, e) ? 0 : v) + v;
}

static bool skip_element(const struct dcm_element *e, bool skip_meta)
{
    return skip_meta && DCM_TAG_GROUP(e->tag) == 0x0002;
}

/* Sum of the encoded lengths of the elements of `group` after index i (for group lengths). */
static uint64_t group_length(const struct writer *w, const struct dcm_dataset *ds, size_t i)
{
    uint16_t group = DCM_TAG_GROUP(ds->elems[i].tag);
    uint64_t n = 0;
    for (size_t k = i + 1; k < ds->count && DCM_TAG_GROUP(ds->elems[k].tag) == group; k++)
        n += element_length(w, &ds->elems[k]);
    return n;
}

static uint64_t dataset_length(const struct writer *w, const struct dcm_dataset *ds,
                               bool skip_meta)
{
    uint64_t n = 0;
    for (size_t i = 0; i < ds->count; i++) {
        if (!skip_element(&ds->elems[i], skip_meta))
            n += element_length(w, &ds->elems[i]);
    }
    return n;
}

/* ---- encoding ----------------------------------------------------------------------------- */

static int put(struct writer *w, const void *p, size_t n)
{
    int rc = tr_sink_write(w->sink, p, n);
    if (rc)
        return tr_error_set(w->err, rc, "write failed: %s", tr_strerror(rc));
    return 0;
}

static void put16(const struct writer *w, uint8_t *p, uint16_t v)
{
    if (w->big_endian)
        tr_put_be16(p, v);
    else
        tr_put_le16(p, v);
}

static void put32(const struct writer *w, uint8_t *p, uint32_t v)
{
    if (w->big_endian)
        tr_put_be32(p, v);
    else
        tr_put_le32(p, v);
}

static int put_header(struct writer *w, uint32_t tag, enum dcm_vr vr, uint32_t length,
                      bool long_header)
{
    uint8_t h[12];
    put16(w, h, DCM_TAG_GROUP(tag));
    put16(w, h + 2, DCM_TAG_ELEMENT(tag));
    if (w->implicit || DCM_TAG_GROUP(tag) == 0xFFFE) {
        put32(w, h + 4, length);
        return put(w, h, 8);
    }
    if (vr == DCM_VR_NONE)
        vr = DCM_VR_UN;
    memcpy(h + 4, dcm_vr_name(vr), 2);
    if (long_header) {
        h[6] = h[7] = 0;
        put32(w, h + 8, length);
        return put(w, h, 12);
    }
    put16(w, h + 6, (uint16_t)length);
    return put(w, h, 8);
}

/* Copy `length` bytes at `p` from the source file when they are its mapped bytes: *copied
 * says whether they were (copied or, when the kernel cannot copy, written). */
static int copy_from_source(struct writer *w, const uint8_t *p, uint32_t length, bool *copied)
{
    struct file_copy *c = w->copy;
    *copied = false;
    if (!c || c->unsupported || length < COPY_MIN || p < c->map ||
        (size_t)(p - c->map) > c->map_length || length > c->map_length - (size_t)(p - c->map))
        return 0;
    int rc = tr_bufsink_flush(c->buffer);
    if (rc)
        return tr_error_set(w->err, rc, "write failed: %s", tr_strerror(rc));
    *copied = true;
    off64_t from = (off64_t)(p - c->map);
    size_t done = 0;
    while (done < length) {
        ssize_t n = copy_file_range(c->in_fd, &from, c->out_fd, NULL, length - done, 0);
        if (n > 0) {
            done += (size_t)n;
            c->copied += (uint64_t)n;
            continue;
        }
        if (n == 0) /* the source ends early: it was cut short after it was mapped */
            return tr_error_set(w->err, TR_EIO,
                                "the input file changed while it was read: it now ends at "
                                "byte %llu, inside a value read from byte %llu",
                                (unsigned long long)from,
                                (unsigned long long)(p - c->map));
        if (errno == EINTR)
            continue;
        if (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP ||
            errno == EBADF) {
            /* Not between these two files (another file system, an old kernel, a pipe):
             * write the rest from the mapping, and do not ask again. */
            c->unsupported = true;
            return put(w, p + done, length - done);
        }
        return tr_error_set(w->err, TR_EIO, "write failed: %s", strerror(errno));
    }
    return 0;
}

static int put_value(struct writer *w, enum dcm_vr vr, const uint8_t *p, uint32_t length)
{
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    int rc;
    unsigned size = vr == DCM_VR_AT ? 2 : info->size;
    bool swap = w->big_endian && size > 1 &&
                (info->kind == DCM_VR_KIND_NUMBER || info->kind == DCM_VR_KIND_BYTES);
    if (!swap) {
        bool copied;
        if ((rc = copy_from_source(w, p, length, &copied)))
            return rc;
        if (!copied && (rc = put(w, p, length)))
            return rc;
    } else {
        uint8_t chunk[4096];
        uint32_t whole = length - length % size;
        for (uint32_t off = 0; off < whole;) {
            uint32_t n = TR_MIN(whole - off, (uint32_t)sizeof(chunk) / 8 * 8);
            n -= n % size;
            for (uint32_t i = 0; i < n; i += size)
                for (unsigned k = 0; k < size; k++)
                    chunk[i + k] = p[off + i + size - 1 - k];
            if ((rc = put(w, chunk, n)))
                return rc;
            off += n;
        }
        if (whole < length && (rc = put(w, p + whole, length - whole)))
            return rc;
    }
    if (length & 1) {
        char pad = dcm_vr_is_string(vr) ? info->pad : '\0';
        if ((rc = put(w, &pad, 1)))
            return rc;
    }
    return 0;
}

static int write_dataset(struct writer *w, const struct dcm_dataset *ds, bool skip_meta);

static int write_element(struct writer *w, const struct dcm_dataset *ds, size_t index)
{
    const struct dcm_element *e = &ds->elems[index];
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    int rc;
    if (vr == DCM_VR_SQ) {
        bool undefined = element_undefined(w, e);
        uint64_t len = undefined ? DCM_UNDEFINED_LENGTH : value_length(w, e);
        if (!undefined && len > 0xFFFFFFFEu)
            return tr_error_set(w->err, TR_ELIMIT, "sequence (%04X,%04X) is longer than 4 GiB",
                                DCM_TAG_GROUP(e->tag), DCM_TAG_ELEMENT(e->tag));
        if ((rc = put_header(w, e->tag, vr, (uint32_t)len, true)))
            return rc;
        for (uint32_t i = 0; i < e->value.items.count; i++) {
            const struct dcm_dataset *item = e->value.items.item[i];
            bool item_undef = item_undefined(w, item);
            uint64_t ilen = item_undef ? DCM_UNDEFINED_LENGTH : dataset_length(w, item, false);
            if (ilen > 0xFFFFFFFEu && !item_undef)
                return tr_error_set(w->err, TR_ELIMIT, "an item is longer than 4 GiB");
            if ((rc = put_header(w, DCM_TAG_Item, DCM_VR_NONE, (uint32_t)ilen, false)))
                return rc;
            if ((rc = write_dataset(w, item, false)))
                return rc;
            if (item_undef &&
                (rc = put_header(w, DCM_TAG_ItemDelimitationItem, DCM_VR_NONE, 0, false)))
                return rc;
        }
        if (undefined)
            return put_header(w, DCM_TAG_SequenceDelimitationItem, DCM_VR_NONE, 0, false);
        return 0;
    }
    if (e->flags & DCM_ELEM_ENCAPSULATED) {
        if ((rc = put_header(w, e->tag, vr == DCM_VR_OW ? DCM_VR_OW : DCM_VR_OB,
                             DCM_UNDEFINED_LENGTH, true)))
            return rc;
        for (uint32_t i = 0; i < e->value.fragments.count; i++) {
            const struct dcm_fragment *f = &e->value.fragments.fragment[i];
            uint32_t flen = (uint32_t)padded(f->length);
            if ((rc = put_header(w, DCM_TAG_Item, DCM_VR_NONE, flen, false)) ||
                (rc = put_value(w, DCM_VR_OB, f->bytes, f->length)))
                return rc;
        }
        return put_header(w, DCM_TAG_SequenceDelimitationItem, DCM_VR_NONE, 0, false);
    }
    uint64_t len = padded(e->length);
    if (len > 0xFFFFFFFEu)
        return tr_error_set(w->err, TR_ELIMIT, "(%04X,%04X) is longer than 4 GiB",
                            DCM_TAG_GROUP(e->tag), DCM_TAG_ELEMENT(e->tag));
    if (dcm_tag_is_group_length(e->tag) && DCM_TAG_GROUP(e->tag) != 0x0000 && vr == DCM_VR_UL &&
        e->length == 4) {
        /* Group lengths are recomputed: the data set may have changed since it was read. */
        uint64_t glen = group_length(w, ds, index);
        uint8_t v[4];
        tr_put_le32(v, (uint32_t)glen);
        if ((rc = put_header(w, e->tag, vr, 4, false)))
            return rc;
        return put_value(w, vr, v, 4);
    }
    bool long_header = uses_long_header(w, vr, len) && DCM_TAG_GROUP(e->tag) != 0xFFFE;
    if (!w->implicit && long_header && !dcm_vr_info(vr)->long_header)
        vr = DCM_VR_UN; /* PS3.5 6.2.2 Note: too long for a 16-bit length: write as UN */
    if ((rc = put_header(w, e->tag, vr, (uint32_t)len, long_header)))
        return rc;
    return put_value(w, vr, e->value.bytes, e->length);
}

static int write_dataset(struct writer *w, const struct dcm_dataset *ds, bool skip_meta)
{
    for (size_t i = 0; i < ds->count; i++) {
        if (skip_element(&ds->elems[i], skip_meta))
            continue;
        int rc = write_element(w, ds, i);
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- deflate sink ------------------------------------------------------------------------- */

struct deflate_sink {
    z_stream z;
    const struct tr_sink *out;
    uint8_t buf[65536];
};

static int deflate_feed(struct deflate_sink *d, const void *data, size_t len, int flush)
{
    d->z.next_in = (Bytef *)data;
    d->z.avail_in = (uInt)len;
    do {
        d->z.next_out = d->buf;
        d->z.avail_out = sizeof(d->buf);
        int zrc = deflate(&d->z, flush);
        if (zrc == Z_STREAM_ERROR)
            return TR_EIO;
        size_t have = sizeof(d->buf) - d->z.avail_out;
        int rc = tr_sink_write(d->out, d->buf, have);
        if (rc)
            return rc;
    } while (d->z.avail_out == 0 || (flush == Z_FINISH && d->z.avail_in > 0));
    return 0;
}

static int deflate_write(void *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len) {
        size_t n = TR_MIN(len, (size_t)1 << 30);
        int rc = deflate_feed(ctx, p, n, Z_NO_FLUSH);
        if (rc)
            return rc;
        p += n;
        len -= n;
    }
    return 0;
}

/* ---- public ------------------------------------------------------------------------------- */

static bool has_encapsulated_pixels(const struct dcm_dataset *ds)
{
    const struct dcm_element *e = dcm_dataset_get(ds, DCM_TAG_PixelData);
    return e && (e->flags & DCM_ELEM_ENCAPSULATED);
}

static int choose_ts(const struct dcm_dataset *ds, const char *wanted,
                     const struct dcm_transfer_syntax *own, const struct dcm_transfer_syntax **ts,
                     struct tr_error *err)
{
    bool encapsulated = has_encapsulated_pixels(ds);
    if (wanted) {
        *ts = dcm_ts_lookup(wanted);
        if (!*ts)
            return tr_error_set(err, TR_EUNSUPPORTED, "unknown transfer syntax %s", wanted);
    } else if (own && (!(own->flags & DCM_TS_ENCAPSULATED) || encapsulated) &&
               !(own->flags & DCM_TS_REFERENCED)) {
        *ts = own;
    } else {
        *ts = dcm_ts_lookup(DCM_UID_ExplicitVRLittleEndian);
    }
    bool target_encapsulated = (*ts)->flags & DCM_TS_ENCAPSULATED;
    if (encapsulated && !target_encapsulated)
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "the pixel data is compressed; writing it as %s needs transcoding",
                            (*ts)->name);
    if (!encapsulated && target_encapsulated && dcm_dataset_get(ds, DCM_TAG_PixelData))
        return tr_error_set(err, TR_EUNSUPPORTED,
                            "the pixel data is not compressed; writing it as %s needs an encoder",
                            (*ts)->name);
    if ((*ts)->flags & DCM_TS_REFERENCED)
        return tr_error_set(err, TR_EUNSUPPORTED, "cannot write %s", (*ts)->name);
    return 0;
}

static int write_body(const struct dcm_dataset *ds, const struct dcm_transfer_syntax *ts,
                      const struct dcm_write_options *opt, const struct tr_sink *sink,
                      struct file_copy *copy, bool skip_meta, struct tr_error *err)
{
    struct writer w = {.sink = sink, .implicit = ts->flags & DCM_TS_IMPLICIT_VR,
                       .big_endian = ts->flags & DCM_TS_BIG_ENDIAN,
                       .defined_lengths = opt->defined_lengths, .err = err, .copy = copy};
    if (!(ts->flags & DCM_TS_DEFLATED))
        return write_dataset(&w, ds, skip_meta);
    w.copy = NULL; /* the values are deflated on their way out */

    struct deflate_sink *d = tr_calloc(1, sizeof(*d));
    if (!d)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    /* PS3.5 A.5: raw deflate, no zlib header. */
    if (deflateInit2(&d->z, opt->deflate_level, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) !=
        Z_OK) {
        tr_free(d);
        return tr_error_set(err, TR_ENOMEM, "cannot start deflating");
    }
    d->out = sink;
    struct tr_sink dsink = {deflate_write, d};
    w.sink = &dsink;
    int rc = write_dataset(&w, ds, skip_meta);
    if (rc == 0) {
        rc = deflate_feed(d, NULL, 0, Z_FINISH);
        if (rc)
            rc = tr_error_set(err, rc, "write failed: %s", tr_strerror(rc));
    }
    deflateEnd(&d->z);
    tr_free(d);
    return rc;
}

int dcm_dataset_write(const struct dcm_dataset *ds, const char *ts_uid,
                      const struct dcm_write_options *opt, const struct tr_sink *sink,
                      struct tr_error *err)
{
    struct dcm_write_options defaults;
    if (!opt) {
        dcm_write_options_init(&defaults);
        opt = &defaults;
    }
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(ts_uid);
    if (!ts)
        return tr_error_set(err, TR_EUNSUPPORTED, "unknown transfer syntax %s",
                            ts_uid ? ts_uid : "(none)");
    return write_body(ds, ts, opt, sink, NULL, false, err);
}

int dcm_dataset_encoded_length(const struct dcm_dataset *ds, const struct dcm_transfer_syntax *ts,
                               const struct dcm_write_options *opt, uint64_t *length)
{
    struct writer w = {.implicit = ts->flags & DCM_TS_IMPLICIT_VR,
                       .big_endian = ts->flags & DCM_TS_BIG_ENDIAN,
                       .defined_lengths = opt ? opt->defined_lengths : false};
    *length = dataset_length(&w, ds, false);
    return 0;
}

/* Copy a meta element from the source meta group, if present. */
static int keep_meta(struct dcm_dataset *meta, const struct dcm_dataset *from, uint32_t tag)
{
    const struct dcm_element *e = from ? dcm_dataset_get(from, tag) : NULL;
    if (!e || e->vr == DCM_VR_SQ || (e->flags & DCM_ELEM_ENCAPSULATED))
        return 0;
    return dcm_dataset_set_bytes(meta, tag, (enum dcm_vr)e->vr, e->value.bytes, e->length);
}

static const char *uid_value(const struct dcm_dataset *ds, uint32_t tag, char *buf)
{
    buf[0] = '\0';
    const struct dcm_element *e = ds ? dcm_dataset_get(ds, tag) : NULL;
    if (!e || e->length == 0 || e->vr == DCM_VR_SQ)
        return buf;
    const char *s = (const char *)e->value.bytes, *end = s + e->length;
    dcm_string_trim(DCM_VR_UI, &s, &end);
    size_t n = TR_MIN((size_t)(end - s), (size_t)DCM_UID_MAX);
    memcpy(buf, s, n);
    buf[n] = '\0';
    return buf;
}

/* PS3.10 7.1: preamble, "DICM", and a meta group built afresh (kept: AE titles, addresses and
 * private information of `old`). */
static int write_header(const char *sop_class, const char *sop_instance, const char *ts_uid,
                        const struct dcm_dataset *old, const char *source_ae,
                        const struct tr_sink *sink, struct tr_error *err)
{
    struct dcm_dataset *meta = dcm_dataset_new();
    if (!meta)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    static const uint8_t version[2] = {0x00, 0x01};
    int rc = dcm_dataset_set_bytes(meta, DCM_TAG_FileMetaInformationVersion, DCM_VR_OB, version, 2);
    if (!rc && sop_class && *sop_class)
        rc = dcm_dataset_set_bytes(meta, DCM_TAG_MediaStorageSOPClassUID, DCM_VR_UI, sop_class,
                                   strlen(sop_class));
    if (!rc && sop_instance && *sop_instance)
        rc = dcm_dataset_set_bytes(meta, DCM_TAG_MediaStorageSOPInstanceUID, DCM_VR_UI,
                                   sop_instance, strlen(sop_instance));
    if (!rc)
        rc = dcm_dataset_set_bytes(meta, DCM_TAG_TransferSyntaxUID, DCM_VR_UI, ts_uid,
                                   strlen(ts_uid));
    if (!rc)
        rc = dcm_dataset_set_bytes(meta, DCM_TAG_ImplementationClassUID, DCM_VR_UI,
                                   DCM_IMPLEMENTATION_CLASS_UID,
                                   strlen(DCM_IMPLEMENTATION_CLASS_UID));
    if (!rc)
        rc = dcm_dataset_set_bytes(meta, DCM_TAG_ImplementationVersionName, DCM_VR_SH,
                                   DCM_IMPLEMENTATION_VERSION_NAME,
                                   strlen(DCM_IMPLEMENTATION_VERSION_NAME));
    if (!rc && source_ae && *source_ae)
        rc = dcm_dataset_set_bytes(meta, DCM_TAG_SourceApplicationEntityTitle, DCM_VR_AE,
                                   source_ae, strnlen(source_ae, 16));
    static const uint32_t kept[] = {0x00020016, 0x00020017, 0x00020018, 0x00020026, 0x00020027,
                                    0x00020028, 0x00020100, 0x00020102};
    for (size_t i = 0; i < TR_ARRAY_SIZE(kept) && !rc; i++) {
        if (!(kept[i] == DCM_TAG_SourceApplicationEntityTitle && source_ae && *source_ae))
            rc = keep_meta(meta, old, kept[i]);
    }
    if (rc) {
        dcm_dataset_free(meta);
        return tr_error_set(err, rc, "cannot build the file meta information: %s",
                            tr_strerror(rc));
    }
    struct writer mw = {.sink = sink, .err = err};
    uint64_t meta_len = dataset_length(&mw, meta, false);
    uint8_t glen[4];
    tr_put_le32(glen, (uint32_t)meta_len);
    rc = dcm_dataset_set_bytes(meta, DCM_TAG_FileMetaInformationGroupLength, DCM_VR_UL, glen, 4);
    if (rc) {
        dcm_dataset_free(meta);
        return tr_error_set(err, rc, "out of memory");
    }
    uint8_t preamble[132];
    memset(preamble, 0, 128);
    memcpy(preamble + 128, "DICM", 4);
    rc = put(&mw, preamble, sizeof(preamble));
    for (size_t i = 0; i < meta->count && !rc; i++)
        rc = write_element(&mw, meta, i);
    dcm_dataset_free(meta);
    return rc;
}

int dcm_file_write_header(const char *sop_class, const char *sop_instance, const char *ts_uid,
                          const char *source_ae, const struct tr_sink *sink, struct tr_error *err)
{
    return write_header(sop_class, sop_instance, ts_uid, NULL, source_ae, sink, err);
}

static int file_write(const struct dcm_file *f, const struct dcm_write_options *opt,
                      const struct tr_sink *sink, struct file_copy *copy, struct tr_error *err)
{
    struct dcm_write_options defaults;
    if (!opt) {
        dcm_write_options_init(&defaults);
        opt = &defaults;
    }
    if (!f->dataset)
        return tr_error_set(err, TR_EINVAL, "no data set to write");
    const struct dcm_transfer_syntax *ts;
    /* A transfer syntax we do not know (a newer or a private one) with compressed pixel data:
     * keep its UID and write the rest as Explicit VR Little Endian, which is what every
     * encapsulated transfer syntax uses (PS3.5 A.4). */
    struct dcm_transfer_syntax unknown = {f->ts_uid, "", "unknown compressed transfer syntax",
                                          DCM_TS_ENCAPSULATED};
    const struct dcm_transfer_syntax *own = f->ts;
    if (f->ts_detected && f->ts_uid[0] && !dcm_ts_lookup(f->ts_uid) &&
        has_encapsulated_pixels(f->dataset) && !(own && (own->flags & DCM_TS_IMPLICIT_VR)))
        own = &unknown;
    int rc = choose_ts(f->dataset, opt->ts_uid, own, &ts, err);
    if (rc)
        return rc;
    /* Media Storage SOP Class / Instance come from the data set (PS3.10 7.1), or the old meta
     * group when the data set lacks them. */
    char sop_class[DCM_UID_MAX + 1], sop_instance[DCM_UID_MAX + 1];
    if (!*uid_value(f->dataset, DCM_TAG_SOPClassUID, sop_class))
        uid_value(f->meta, DCM_TAG_MediaStorageSOPClassUID, sop_class);
    if (!*uid_value(f->dataset, DCM_TAG_SOPInstanceUID, sop_instance))
        uid_value(f->meta, DCM_TAG_MediaStorageSOPInstanceUID, sop_instance);
    rc = write_header(sop_class, sop_instance, ts->uid, f->meta, NULL, sink, err);
    if (rc)
        return rc;
    return write_body(f->dataset, ts, opt, sink, copy, true, err);
}

int dcm_file_write(const struct dcm_file *f, const struct dcm_write_options *opt,
                   const struct tr_sink *sink, struct tr_error *err)
{
    return file_write(f, opt, sink, NULL, err);
}

/* A file descriptor sink that counts what it writes. */
struct fd_out {
    int fd;
    uint64_t written;
};

static int fd_out_write(void *ctx, const void *data, size_t len)
{
    struct fd_out *o = ctx;
    const char *p = data;
    while (len) {
        ssize_t n = write(o->fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return TR_EIO;
        }
        p += n;
        len -= (size_t)n;
        o->written += (uint64_t)n;
    }
    return 0;
}

/* The mapping of the source file the data set's values point into, if it has one. */
static bool source_map(const struct dcm_file *f, const uint8_t **map, size_t *length)
{
    for (const struct dcm_source_ref *r = f->dataset->root->sources; r; r = r->next) {
        if (r->source->map) {
            *map = r->source->map;
            *length = r->source->map_length;
            return true;
        }
    }
    return false;
}

/* dcm_file_write_fd; `path` (or NULL) names the output in messages. */
static int write_fd(const struct dcm_file *f, const struct dcm_write_options *opt, int fd,
                    int source_fd, const char *path, uint64_t *size, struct tr_error *err)
{
    struct fd_out out = {fd, 0};
    struct tr_bufsink bs;
    /* 64 KiB: below malloc's mmap threshold, so the buffer is reused from file to file
     * instead of being mapped, faulted in and unmapped each time; pixel data bypasses it. */
    int rc = tr_bufsink_init(&bs, (struct tr_sink){fd_out_write, &out}, TR_BUFSINK_DIRECT);
    if (rc)
        return tr_error_set(err, rc, "out of memory");
    struct file_copy copy = {.buffer = &bs, .in_fd = source_fd, .out_fd = fd};
    bool copying = source_fd >= 0 && f->dataset && source_map(f, &copy.map, &copy.map_length);
    rc = file_write(f, opt, &bs.sink, copying ? &copy : NULL, err);
    if (rc == 0 && (rc = tr_bufsink_flush(&bs))) {
        if (path)
            tr_error_set(err, rc, "cannot write %s: %s", path, strerror(errno));
        else
            tr_error_set(err, rc, "write failed: %s", strerror(errno));
    }
    tr_bufsink_release(&bs);
    if (rc == 0 && size)
        *size = out.written + copy.copied;
    return rc;
}

int dcm_file_write_fd(const struct dcm_file *f, const struct dcm_write_options *opt, int fd,
                      int source_fd, uint64_t *size, struct tr_error *err)
{
    return write_fd(f, opt, fd, source_fd, NULL, size, err);
}

int dcm_file_write_path(const struct dcm_file *f, const struct dcm_write_options *opt,
                        const char *path, struct tr_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return tr_error_set(err, TR_EIO, "cannot create %s: %s", path, strerror(errno));
    int rc = write_fd(f, opt, fd, -1, path, NULL, err);
    if (close(fd) < 0 && rc == 0)
        rc = tr_error_set(err, TR_EIO, "cannot write %s: %s", path, strerror(errno));
    return rc;
}
