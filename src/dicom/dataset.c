/*
 * dataset.c - the data set model (PS3.5 7): elements sorted by tag in an arena, sequences,
 * fragments, typed getters and setters, character set bookkeeping.
 */
#include "dicom_int.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

/* ---- sources ------------------------------------------------------------------------------ */

static struct dcm_source *source_new(void)
{
    struct dcm_source *src = tr_calloc(1, sizeof(*src));
    if (src)
        atomic_init(&src->refs, 1);
    return src;
}

struct dcm_source *dcm_source_new_heap(void *heap)
{
    struct dcm_source *src = source_new();
    if (src)
        src->heap = heap;
    return src;
}

struct dcm_source *dcm_source_new_map(void *map, size_t length)
{
    struct dcm_source *src = source_new();
    if (src) {
        src->map = map;
        src->map_length = length;
    }
    return src;
}

void dcm_source_unref(struct dcm_source *src)
{
    if (!src || atomic_fetch_sub(&src->refs, 1) != 1)
        return;
    if (src->map)
        munmap(src->map, src->map_length);
    tr_free(src->heap);
    tr_free(src);
}

void dcm_dataset_attach_source(struct dcm_dataset *ds, struct dcm_source *src)
{
    struct dcm_root *root = ds->root;
    struct dcm_source_ref *ref = tr_arena_alloc(&root->arena, sizeof(*ref));
    if (!ref)
        return; /* the caller keeps its reference; nothing leaks, values stay valid while it
                   holds it. Only reachable on allocation failure. */
    atomic_fetch_add(&src->refs, 1);
    ref->source = src;
    ref->next = root->sources;
    root->sources = ref;
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

static const struct dcm_charset default_charset = {0};

struct dcm_dataset *dcm_dataset_new(void)
{
    struct tr_arena arena;
    tr_arena_init(&arena, 16384);
    struct dcm_root *root = tr_arena_calloc(&arena, 1, sizeof(*root));
    struct dcm_dataset *ds = root ? tr_arena_calloc(&arena, 1, sizeof(*ds)) : NULL;
    if (!ds) {
        tr_arena_release(&arena);
        return NULL;
    }
    root->arena = arena; /* from here on, allocate through root->arena only */
    ds->root = root;
    ds->offset = DCM_NO_OFFSET;
    return ds;
}

void dcm_dataset_free(struct dcm_dataset *ds)
{
    if (!ds || NEVER(ds->parent != NULL))
        return;
    struct dcm_root *root = ds->root;
    for (struct dcm_source_ref *r = root->sources; r; r = r->next)
        dcm_source_unref(r->source);
    struct tr_arena arena = root->arena; /* root lives in the arena it describes */
    tr_arena_release(&arena);
}

struct dcm_dataset *dcm_dataset_new_item(struct dcm_dataset *ds)
{
    struct dcm_dataset *item = tr_arena_calloc(&ds->root->arena, 1, sizeof(*item));
    if (!item)
        return NULL;
    item->root = ds->root;
    item->parent = ds;
    item->depth = ds->depth + 1;
    item->offset = DCM_NO_OFFSET;
    item->flags = DCM_DS_UNDEFINED_LENGTH;
    return item;
}

void *dcm_dataset_alloc(struct dcm_dataset *ds, size_t size)
{
    return tr_arena_alloc(&ds->root->arena, size);
}

struct dcm_dataset *dcm_dataset_parent(const struct dcm_dataset *ds)
{
    return ds->parent;
}

unsigned dcm_dataset_depth(const struct dcm_dataset *ds)
{
    return ds->depth;
}

size_t dcm_dataset_count(const struct dcm_dataset *ds)
{
    return ds->count;
}

const struct dcm_element *dcm_dataset_at(const struct dcm_dataset *ds, size_t i)
{
    return i < ds->count ? &ds->elems[i] : NULL;
}

size_t dcm_dataset_find(const struct dcm_dataset *ds, uint32_t tag, bool *found)
{
    size_t lo = 0, hi = ds->count;
    /* Files are read in ascending order: check the end first. */
    if (hi && ds->elems[hi - 1].tag < tag) {
        *found = false;
        return hi;
    }
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint32_t t = ds->elems[mid].tag;
        if (t == tag) {
            *found = true;
            return mid;
        }
        if (t < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

const struct dcm_element *dcm_dataset_get(const struct dcm_dataset *ds, uint32_t tag)
{
    bool found;
    size_t i = dcm_dataset_find(ds, tag, &found);
    return found ? &ds->elems[i] : NULL;
}

static struct dcm_element *get_mutable(struct dcm_dataset *ds, uint32_t tag)
{
    bool found;
    size_t i = dcm_dataset_find(ds, tag, &found);
    return found ? &ds->elems[i] : NULL;
}

struct dcm_element *dcm_dataset_put(struct dcm_dataset *ds, const struct dcm_element *e)
{
    bool found;
    size_t i = dcm_dataset_find(ds, e->tag, &found);
    if (!found) {
        if (ds->count == ds->cap) {
            size_t cap = ds->cap ? ds->cap * 2 : 16;
            struct dcm_element *elems =
                tr_arena_realloc(&ds->root->arena, ds->elems, ds->cap * sizeof(*elems),
                                 cap * sizeof(*elems));
            if (!elems)
                return NULL;
            ds->elems = elems;
            ds->cap = cap;
        }
        if (i < ds->count)
            memmove(&ds->elems[i + 1], &ds->elems[i], (ds->count - i) * sizeof(ds->elems[0]));
        ds->count++;
    }
    ds->elems[i] = *e;
    if (e->tag == DCM_TAG_SpecificCharacterSet)
        dcm_dataset_update_charset(ds);
    return &ds->elems[i];
}

int dcm_dataset_remove(struct dcm_dataset *ds, uint32_t tag)
{
    bool found;
    size_t i = dcm_dataset_find(ds, tag, &found);
    if (!found)
        return TR_ENOTFOUND;
    memmove(&ds->elems[i], &ds->elems[i + 1], (ds->count - i - 1) * sizeof(ds->elems[0]));
    ds->count--;
    if (tag == DCM_TAG_SpecificCharacterSet)
        dcm_dataset_update_charset(ds);
    return 0;
}

void dcm_dataset_filter(struct dcm_dataset *ds,
                        bool (*keep)(const struct dcm_element *e, void *ctx), void *ctx)
{
    size_t out = 0;
    bool charset_gone = false;
    for (size_t i = 0; i < ds->count; i++) {
        if (keep(&ds->elems[i], ctx))
            ds->elems[out++] = ds->elems[i];
        else if (ds->elems[i].tag == DCM_TAG_SpecificCharacterSet)
            charset_gone = true;
    }
    ds->count = out;
    if (charset_gone)
        dcm_dataset_update_charset(ds);
}

/* ---- character sets ----------------------------------------------------------------------- */

void dcm_dataset_update_charset(struct dcm_dataset *ds)
{
    const struct dcm_element *e = dcm_dataset_get(ds, DCM_TAG_SpecificCharacterSet);
    ds->flags &= ~(unsigned)DCM_DS_CHARSET_UNKNOWN;
    if (!e || (e->flags & DCM_ELEM_ENCAPSULATED) || e->vr == DCM_VR_SQ) {
        ds->charset = NULL;
        return;
    }
    if (!ds->charset) {
        ds->charset = tr_arena_calloc(&ds->root->arena, 1, sizeof(*ds->charset));
        if (!ds->charset)
            return;
    }
    if (dcm_charset_parse((const char *)e->value.bytes, e->length, ds->charset, NULL) < 0) {
        /* Unknown term: read as the default repertoire (bytes >= 0x80 as Latin-1), as
         * pydicom and DCMTK do, and remember it for writers that care. */
        memset(ds->charset, 0, sizeof(*ds->charset));
        ds->flags |= DCM_DS_CHARSET_UNKNOWN;
    }
}

const struct dcm_charset *dcm_dataset_charset(const struct dcm_dataset *ds)
{
    for (; ds; ds = ds->parent) {
        if (ds->charset)
            return ds->charset;
    }
    return &default_charset;
}

/* ---- value access ------------------------------------------------------------------------- */

static bool is_pad(char c)
{
    return c == ' ' || c == '\0';
}

void dcm_string_trim(enum dcm_vr vr, const char **start, const char **end)
{
    const char *s = *start, *e = *end;
    /* PS3.5 6.2: trailing padding is never significant (NUL for UI, space elsewhere; some
     * writers pad with the other, so drop both). */
    while (e > s && is_pad(e[-1]))
        e--;
    switch (vr) {
    case DCM_VR_AE:
    case DCM_VR_CS:
    case DCM_VR_DS:
    case DCM_VR_IS:
    case DCM_VR_LO:
    case DCM_VR_SH:
    case DCM_VR_AS:
    case DCM_VR_UI:
        /* "may be padded with leading and/or trailing spaces" */
        while (s < e && *s == ' ')
            s++;
        break;
    default:
        break; /* leading spaces are significant in text (LT, ST, UT, UC), PN, DA, TM, DT */
    }
    *start = s;
    *end = e;
}

/* Decode the whole value of a string element to UTF-8 (charset-affected VRs through the
 * data set's character set, others as ASCII with Latin-1 for stray high bytes). */
static int decode_value(const struct dcm_dataset *ds, const struct dcm_element *e,
                        struct tr_buf *out)
{
    const struct dcm_charset *cs = ds ? dcm_dataset_charset(ds) : &default_charset;
    return dcm_charset_decode(cs, (enum dcm_vr)e->vr, (const char *)e->value.bytes, e->length,
                              out);
}

static bool needs_decoding(const struct dcm_element *e)
{
    for (uint32_t i = 0; i < e->length; i++) {
        if (e->value.bytes[i] >= 0x80 || e->value.bytes[i] == 0x1B)
            return true;
    }
    return false;
}

unsigned dcm_element_vm(const struct dcm_element *e)
{
    const struct dcm_vr_info *info = dcm_vr_info((enum dcm_vr)e->vr);
    if (e->vr == DCM_VR_SQ)
        return e->value.items.count;
    if (e->flags & DCM_ELEM_ENCAPSULATED)
        return 1;
    if (e->length == 0)
        return 0;
    switch (info->kind) {
    case DCM_VR_KIND_STRING: {
        const char *s = (const char *)e->value.bytes;
        const char *end = s + e->length;
        dcm_string_trim((enum dcm_vr)e->vr, &s, &end);
        if (s == end)
            return 0;
        unsigned n = 1;
        for (uint32_t i = 0; i < e->length; i++)
            n += e->value.bytes[i] == '\\';
        return n;
    }
    case DCM_VR_KIND_TEXT: {
        const char *s = (const char *)e->value.bytes;
        const char *end = s + e->length;
        dcm_string_trim((enum dcm_vr)e->vr, &s, &end);
        return s == end ? 0 : 1;
    }
    case DCM_VR_KIND_NUMBER: return e->length / info->size;
    case DCM_VR_KIND_BYTES: return 1;
    default: return 0;
    }
}

bool dcm_element_is_empty(const struct dcm_element *e)
{
    return dcm_element_vm(e) == 0;
}

/* Find value `index` in a UTF-8 (or ASCII) buffer of backslash-separated values. */
static int select_value(enum dcm_vr vr, const char *s, size_t len, unsigned index,
                        const char **vs, const char **ve)
{
    const char *end = s + len;
    const char *p = s;
    if (index != DCM_ALL_VALUES && dcm_vr_info(vr)->kind == DCM_VR_KIND_STRING) {
        for (unsigned i = 0; i < index; i++) {
            const char *bs = memchr(p, '\\', (size_t)(end - p));
            if (!bs)
                return TR_ENOTFOUND;
            p = bs + 1;
        }
        const char *bs = memchr(p, '\\', (size_t)(end - p));
        if (bs)
            end = bs;
    } else if (index != DCM_ALL_VALUES && index > 0) {
        return TR_ENOTFOUND;
    }
    dcm_string_trim(vr, &p, &end);
    *vs = p;
    *ve = end;
    return 0;
}

int dcm_element_get_string(const struct dcm_dataset *ds, const struct dcm_element *e,
                           unsigned index, struct tr_buf *out)
{
    if (!dcm_vr_is_string((enum dcm_vr)e->vr) || (e->flags & DCM_ELEM_ENCAPSULATED))
        return TR_EINVAL;
    const char *vs, *ve;
    int rc;
    if (!needs_decoding(e)) {
        rc = select_value((enum dcm_vr)e->vr, (const char *)e->value.bytes, e->length, index, &vs,
                          &ve);
        if (rc == 0)
            rc = tr_buf_add(out, vs, (size_t)(ve - vs));
        return rc;
    }
    struct tr_buf tmp;
    tr_buf_init(&tmp, (size_t)e->length * 4 + 16);
    rc = decode_value(ds, e, &tmp);
    if (rc == 0)
        rc = select_value((enum dcm_vr)e->vr, tmp.data ? tmp.data : "", tmp.len, index, &vs, &ve);
    if (rc == 0)
        rc = tr_buf_add(out, vs, (size_t)(ve - vs));
    tr_buf_release(&tmp);
    return rc;
}

/* The raw (undecoded) bytes of value `index` of a string element that is ASCII-compatible
 * (numbers, dates, codes), trimmed; used by the numeric getters. */
static int raw_value(const struct dcm_element *e, unsigned index, char *buf, size_t size)
{
    const char *vs, *ve;
    int rc = select_value((enum dcm_vr)e->vr, (const char *)e->value.bytes, e->length, index, &vs,
                          &ve);
    if (rc)
        return rc;
    size_t n = (size_t)(ve - vs);
    if (n >= size)
        return TR_EINVAL;
    memcpy(buf, vs, n);
    buf[n] = '\0';
    return (int)n;
}

static int number_at(const struct dcm_element *e, unsigned index, const uint8_t **p)
{
    const struct dcm_vr_info *info = dcm_vr_info((enum dcm_vr)e->vr);
    if (info->kind != DCM_VR_KIND_NUMBER && e->vr != DCM_VR_OF && e->vr != DCM_VR_OD &&
        e->vr != DCM_VR_OL && e->vr != DCM_VR_OV)
        return TR_EINVAL;
    if (e->flags & DCM_ELEM_ENCAPSULATED)
        return TR_EINVAL;
    uint32_t n = e->length / info->size;
    if (index >= n)
        return TR_ENOTFOUND;
    *p = e->value.bytes + (size_t)index * info->size;
    return 0;
}

int dcm_element_get_int(const struct dcm_element *e, unsigned index, int64_t *out)
{
    if (e->vr == DCM_VR_IS || e->vr == DCM_VR_DS) {
        char buf[64];
        int rc = raw_value(e, index, buf, sizeof(buf));
        if (rc < 0)
            return rc;
        if (rc == 0)
            return TR_ENOTFOUND;
        char *end;
        errno = 0;
        long long v = strtoll(buf, &end, 10);
        if (errno || *end != '\0') {
            if (e->vr != DCM_VR_DS)
                return TR_EINVAL;
            double d = strtod(buf, &end);
            if (*end != '\0' || !(d >= -9.2e18 && d <= 9.2e18) || d != floor(d))
                return TR_EINVAL;
            v = (long long)d;
        }
        *out = v;
        return 0;
    }
    const uint8_t *p;
    int rc = number_at(e, index, &p);
    if (rc)
        return rc;
    switch (e->vr) {
    case DCM_VR_US: *out = tr_le16(p); return 0;
    case DCM_VR_SS: *out = (int16_t)tr_le16(p); return 0;
    case DCM_VR_UL:
    case DCM_VR_OL: *out = tr_le32(p); return 0;
    case DCM_VR_SL: *out = (int32_t)tr_le32(p); return 0;
    case DCM_VR_SV: *out = (int64_t)tr_le64(p); return 0;
    case DCM_VR_UV:
    case DCM_VR_OV: {
        uint64_t v = tr_le64(p);
        if (v > INT64_MAX)
            return TR_EINVAL;
        *out = (int64_t)v;
        return 0;
    }
    case DCM_VR_AT: *out = ((uint32_t)tr_le16(p) << 16) | tr_le16(p + 2); return 0;
    default: return TR_EINVAL;
    }
}

int dcm_element_get_uint(const struct dcm_element *e, unsigned index, uint64_t *out)
{
    if (e->vr == DCM_VR_UV || e->vr == DCM_VR_OV) {
        const uint8_t *p;
        int rc = number_at(e, index, &p);
        if (rc == 0)
            *out = tr_le64(p);
        return rc;
    }
    int64_t v;
    int rc = dcm_element_get_int(e, index, &v);
    if (rc)
        return rc;
    if (v < 0)
        return TR_EINVAL;
    *out = (uint64_t)v;
    return 0;
}

int dcm_element_get_float(const struct dcm_element *e, unsigned index, double *out)
{
    if (e->vr == DCM_VR_DS || e->vr == DCM_VR_IS) {
        char buf[64];
        int rc = raw_value(e, index, buf, sizeof(buf));
        if (rc < 0)
            return rc;
        if (rc == 0)
            return TR_ENOTFOUND;
        char *end;
        double v = strtod(buf, &end);
        if (*end != '\0')
            return TR_EINVAL;
        *out = v;
        return 0;
    }
    const uint8_t *p;
    switch (e->vr) {
    case DCM_VR_FL:
    case DCM_VR_OF: {
        int rc = number_at(e, index, &p);
        if (rc)
            return rc;
        uint32_t bits = tr_le32(p);
        float f;
        memcpy(&f, &bits, sizeof(f));
        *out = f;
        return 0;
    }
    case DCM_VR_FD:
    case DCM_VR_OD: {
        int rc = number_at(e, index, &p);
        if (rc)
            return rc;
        uint64_t bits = tr_le64(p);
        double d;
        memcpy(&d, &bits, sizeof(d));
        *out = d;
        return 0;
    }
    case DCM_VR_UV: {
        uint64_t u;
        int rc = dcm_element_get_uint(e, index, &u);
        if (rc == 0)
            *out = (double)u;
        return rc;
    }
    default: {
        int64_t v;
        int rc = dcm_element_get_int(e, index, &v);
        if (rc == 0)
            *out = (double)v;
        return rc;
    }
    }
}

int dcm_element_get_tag(const struct dcm_element *e, unsigned index, uint32_t *out)
{
    if (e->vr != DCM_VR_AT)
        return TR_EINVAL;
    int64_t v;
    int rc = dcm_element_get_int(e, index, &v);
    if (rc == 0)
        *out = (uint32_t)v;
    return rc;
}

unsigned dcm_element_item_count(const struct dcm_element *e)
{
    return e->vr == DCM_VR_SQ ? e->value.items.count : 0;
}

struct dcm_dataset *dcm_element_item(const struct dcm_element *e, unsigned index)
{
    if (e->vr != DCM_VR_SQ || index >= e->value.items.count)
        return NULL;
    return e->value.items.item[index];
}

/* ---- getters by tag ----------------------------------------------------------------------- */

static const struct dcm_element *get_present(const struct dcm_dataset *ds, uint32_t tag)
{
    const struct dcm_element *e = dcm_dataset_get(ds, tag);
    if (!e || e->length == 0 || (e->vr != DCM_VR_SQ && dcm_element_is_empty(e)))
        return NULL;
    return e;
}

int dcm_dataset_get_string(const struct dcm_dataset *ds, uint32_t tag, unsigned index, char *buf,
                           size_t size)
{
    const struct dcm_element *e = get_present(ds, tag);
    if (!e)
        return TR_ENOTFOUND;
    struct tr_buf b;
    tr_buf_init(&b, size ? size - 1 : 0);
    int rc = dcm_element_get_string(ds, e, index, &b);
    if (rc == 0) {
        if (size)
            memcpy(buf, b.data ? b.data : "", b.len + 1);
        rc = (int)b.len;
    }
    tr_buf_release(&b);
    return rc;
}

char *dcm_dataset_get_text(const struct dcm_dataset *ds, uint32_t tag, struct tr_error *err)
{
    const struct dcm_element *e = get_present(ds, tag);
    if (!e) {
        tr_error_set(err, TR_ENOTFOUND, "(%04X,%04X) is absent or empty", DCM_TAG_GROUP(tag),
                     DCM_TAG_ELEMENT(tag));
        return NULL;
    }
    struct tr_buf b;
    tr_buf_init(&b, (size_t)e->length * 4 + 16);
    int rc = dcm_element_get_string(ds, e, DCM_ALL_VALUES, &b);
    if (rc < 0) {
        tr_buf_release(&b);
        tr_error_set(err, rc, "(%04X,%04X): %s", DCM_TAG_GROUP(tag), DCM_TAG_ELEMENT(tag),
                     rc == TR_EINVAL ? "not a string" : tr_strerror(rc));
        return NULL;
    }
    return tr_buf_detach(&b, NULL);
}

int dcm_dataset_get_int(const struct dcm_dataset *ds, uint32_t tag, unsigned index, int64_t *out)
{
    const struct dcm_element *e = get_present(ds, tag);
    return e ? dcm_element_get_int(e, index, out) : TR_ENOTFOUND;
}

int dcm_dataset_get_float(const struct dcm_dataset *ds, uint32_t tag, unsigned index, double *out)
{
    const struct dcm_element *e = get_present(ds, tag);
    return e ? dcm_element_get_float(e, index, out) : TR_ENOTFOUND;
}

int dcm_dataset_get_tag(const struct dcm_dataset *ds, uint32_t tag, unsigned index, uint32_t *out)
{
    const struct dcm_element *e = get_present(ds, tag);
    return e ? dcm_element_get_tag(e, index, out) : TR_ENOTFOUND;
}

int dcm_dataset_get_uid(const struct dcm_dataset *ds, uint32_t tag, char *buf, size_t size)
{
    const struct dcm_element *e = get_present(ds, tag);
    if (!e)
        return TR_ENOTFOUND;
    if (e->vr != DCM_VR_UI)
        return TR_EINVAL;
    return raw_value(e, 0, buf, size) < 0 ? TR_ELIMIT : 0;
}

/* ---- setters ------------------------------------------------------------------------------ */

static int resolve_vr(uint32_t tag, enum dcm_vr *vr)
{
    if (*vr != DCM_VR_NONE)
        return (unsigned)*vr < DCM_VR_COUNT ? 0 : TR_EINVAL;
    if (dcm_tag_is_group_length(tag)) {
        *vr = DCM_VR_UL;
        return 0;
    }
    if (dcm_tag_is_private_creator(tag)) {
        *vr = DCM_VR_LO;
        return 0;
    }
    const struct dcm_dict_entry *d = dcm_dict_lookup(tag);
    if (!d || d->vr == DCM_VR_NONE)
        return TR_EINVAL;
    *vr = (enum dcm_vr)d->vr;
    return 0;
}

static int put_value(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const void *data,
                     size_t length)
{
    if (length >= DCM_UNDEFINED_LENGTH)
        return TR_ELIMIT;
    struct dcm_element e = {.tag = tag, .vr = (uint8_t)vr, .length = (uint32_t)length,
                            .offset = DCM_NO_OFFSET};
    if (length) {
        e.value.bytes = tr_arena_memdup(&ds->root->arena, data, length);
        if (!e.value.bytes)
            return TR_ENOMEM;
    } else {
        e.value.bytes = (const uint8_t *)"";
    }
    return dcm_dataset_put(ds, &e) ? 0 : TR_ENOMEM;
}

static bool is_ascii_text(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80 || s[i] == 0x1B)
            return false;
    }
    return true;
}

static struct dcm_dataset *root_of(struct dcm_dataset *ds)
{
    while (ds->parent)
        ds = ds->parent;
    return ds;
}

/* Check a string value (one of possibly several) of a VR outside the charset-affected ones. */
static int check_ascii_value(enum dcm_vr vr, const char *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c >= 0x80 || (c < 0x20 && vr != DCM_VR_LT && vr != DCM_VR_ST && vr != DCM_VR_UT))
            return TR_EINVAL;
    }
    if (vr == DCM_VR_UI && n && !dcm_uid_is_valid(v, n))
        return TR_EINVAL;
    return 0;
}

int dcm_dataset_set_string(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const char *utf8)
{
    int rc = resolve_vr(tag, &vr);
    if (rc)
        return rc;
    if (!dcm_vr_is_string(vr))
        return TR_EINVAL;
    size_t len = strlen(utf8);
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    if (dcm_utf8_valid_prefix(utf8, len) != len)
        return TR_ECHARSET;
    /* Check each value against the VR's limits (in characters). */
    const char *p = utf8, *end = utf8 + len;
    while (p <= end) {
        const char *q = info->kind == DCM_VR_KIND_STRING ? memchr(p, '\\', (size_t)(end - p)) : NULL;
        if (!q)
            q = end;
        size_t chars = 0;
        for (const char *c = p; c < q; c++)
            chars += ((unsigned char)*c & 0xC0) != 0x80;
        if (info->max_length && chars > info->max_length && vr != DCM_VR_PN)
            return TR_EINVAL;
        if (!info->charset && check_ascii_value(vr, p, (size_t)(q - p)) < 0)
            return TR_EINVAL;
        p = q + 1;
    }
    if (!info->charset || is_ascii_text(utf8, len))
        return put_value(ds, tag, vr, utf8, len);

    const struct dcm_charset *cs = dcm_dataset_charset(ds);
    struct tr_buf enc;
    tr_buf_init(&enc, len * 4 + 16);
    struct tr_error err = TR_ERROR_INIT;
    rc = dcm_charset_encode(cs, vr, utf8, len, &enc, &err);
    if (rc == TR_ECHARSET && cs->count == 0) {
        /* No Specific Character Set anywhere above: declare UTF-8 at the root. */
        struct dcm_dataset *root = root_of(ds);
        rc = put_value(root, DCM_TAG_SpecificCharacterSet, DCM_VR_CS, "ISO_IR 192", 10);
        if (rc == 0) {
            tr_buf_release(&enc);
            return put_value(ds, tag, vr, utf8, len);
        }
    }
    if (rc == 0)
        rc = put_value(ds, tag, vr, enc.data ? enc.data : "", enc.len);
    tr_buf_release(&enc);
    return rc;
}

int dcm_dataset_set_strings(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                            const char *const *values, size_t count)
{
    struct tr_buf b;
    tr_buf_init(&b, DCM_UNDEFINED_LENGTH - 2);
    int rc = 0;
    for (size_t i = 0; i < count && rc == 0; i++) {
        if (strchr(values[i], '\\'))
            rc = TR_EINVAL;
        else if (i)
            rc = tr_buf_addc(&b, '\\');
        if (rc == 0)
            rc = tr_buf_adds(&b, values[i]);
    }
    if (rc == 0)
        rc = dcm_dataset_set_string(ds, tag, vr, b.data ? b.data : "");
    tr_buf_release(&b);
    return rc;
}

int dcm_dataset_set_ints(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                         const int64_t *values, size_t count)
{
    int rc = resolve_vr(tag, &vr);
    if (rc)
        return rc;
    if (vr == DCM_VR_IS) {
        struct tr_buf b;
        tr_buf_init(&b, DCM_UNDEFINED_LENGTH - 2);
        for (size_t i = 0; i < count && rc == 0; i++) {
            if (values[i] < INT32_MIN || values[i] > INT32_MAX)
                rc = TR_EINVAL;
            else
                rc = tr_buf_addf(&b, "%s%" PRId64, i ? "\\" : "", values[i]);
        }
        if (rc == 0)
            rc = put_value(ds, tag, vr, b.data ? b.data : "", b.len);
        tr_buf_release(&b);
        return rc;
    }
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    if (info->kind != DCM_VR_KIND_NUMBER && vr != DCM_VR_OL && vr != DCM_VR_OV)
        return TR_EINVAL;
    if (vr == DCM_VR_FL || vr == DCM_VR_FD) {
        double *d = tr_malloc(count * sizeof(*d) + 1);
        if (!d)
            return TR_ENOMEM;
        for (size_t i = 0; i < count; i++)
            d[i] = (double)values[i];
        rc = dcm_dataset_set_floats(ds, tag, vr, d, count);
        tr_free(d);
        return rc;
    }
    if (count > (DCM_UNDEFINED_LENGTH - 1) / info->size)
        return TR_ELIMIT;
    uint8_t *bytes = tr_malloc(count * info->size + 1);
    if (!bytes)
        return TR_ENOMEM;
    for (size_t i = 0; i < count && rc == 0; i++) {
        int64_t v = values[i];
        uint8_t *p = bytes + i * info->size;
        switch (vr) {
        case DCM_VR_US:
            if (v < 0 || v > UINT16_MAX)
                rc = TR_EINVAL;
            tr_put_le16(p, (uint16_t)v);
            break;
        case DCM_VR_SS:
            if (v < INT16_MIN || v > INT16_MAX)
                rc = TR_EINVAL;
            tr_put_le16(p, (uint16_t)(int16_t)v);
            break;
        case DCM_VR_UL:
        case DCM_VR_OL:
            if (v < 0 || v > UINT32_MAX)
                rc = TR_EINVAL;
            tr_put_le32(p, (uint32_t)v);
            break;
        case DCM_VR_SL:
            if (v < INT32_MIN || v > INT32_MAX)
                rc = TR_EINVAL;
            tr_put_le32(p, (uint32_t)(int32_t)v);
            break;
        case DCM_VR_SV: tr_put_le64(p, (uint64_t)v); break;
        case DCM_VR_UV:
        case DCM_VR_OV:
            if (v < 0)
                rc = TR_EINVAL;
            tr_put_le64(p, (uint64_t)v);
            break;
        case DCM_VR_AT:
            if (v < 0 || v > UINT32_MAX)
                rc = TR_EINVAL;
            tr_put_le16(p, (uint16_t)((uint64_t)v >> 16));
            tr_put_le16(p + 2, (uint16_t)v);
            break;
        default: rc = TR_EINVAL; break;
        }
    }
    if (rc == 0)
        rc = put_value(ds, tag, vr, bytes, count * info->size);
    tr_free(bytes);
    return rc;
}

int dcm_dataset_set_int(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, int64_t value)
{
    return dcm_dataset_set_ints(ds, tag, vr, &value, 1);
}

/* Format a DS value in at most 16 characters (PS3.5 6.2), as precisely as fits. */
int dcm_ds_format(double v, char out[32])
{
    if (!isfinite(v))
        return TR_EINVAL;
    for (int precision = 16; precision >= 1; precision--) {
        int n = snprintf(out, 32, "%.*G", precision, v);
        if (n > 0 && n <= 16) {
            /* Prefer the shortest text that reads back to the same double. */
            for (int p = 1; p < precision; p++) {
                char shorter[32];
                int m = snprintf(shorter, sizeof(shorter), "%.*G", p, v);
                if (m > 0 && strtod(shorter, NULL) == v) {
                    memcpy(out, shorter, (size_t)m + 1);
                    return m;
                }
            }
            return n;
        }
    }
    return TR_EINVAL;
}

int dcm_dataset_set_floats(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                           const double *values, size_t count)
{
    int rc = resolve_vr(tag, &vr);
    if (rc)
        return rc;
    if (vr == DCM_VR_DS) {
        struct tr_buf b;
        tr_buf_init(&b, DCM_UNDEFINED_LENGTH - 2);
        for (size_t i = 0; i < count && rc == 0; i++) {
            char text[32];
            int n = dcm_ds_format(values[i], text);
            if (n < 0)
                rc = n;
            else
                rc = tr_buf_addf(&b, "%s%s", i ? "\\" : "", text);
        }
        if (rc == 0)
            rc = put_value(ds, tag, vr, b.data ? b.data : "", b.len);
        tr_buf_release(&b);
        return rc;
    }
    size_t size;
    if (vr == DCM_VR_FL || vr == DCM_VR_OF)
        size = 4;
    else if (vr == DCM_VR_FD || vr == DCM_VR_OD)
        size = 8;
    else {
        /* Integer VRs: only exact integral values. */
        int64_t *iv = tr_malloc(count * sizeof(*iv) + 1);
        if (!iv)
            return TR_ENOMEM;
        for (size_t i = 0; i < count && rc == 0; i++) {
            if (!(values[i] >= -9.2e18 && values[i] <= 9.2e18) || values[i] != floor(values[i]))
                rc = TR_EINVAL;
            else
                iv[i] = (int64_t)values[i];
        }
        if (rc == 0)
            rc = dcm_dataset_set_ints(ds, tag, vr, iv, count);
        tr_free(iv);
        return rc;
    }
    if (count > (DCM_UNDEFINED_LENGTH - 1) / size)
        return TR_ELIMIT;
    uint8_t *bytes = tr_malloc(count * size + 1);
    if (!bytes)
        return TR_ENOMEM;
    for (size_t i = 0; i < count; i++) {
        if (size == 4) {
            float f = (float)values[i];
            uint32_t bits;
            memcpy(&bits, &f, sizeof(bits));
            tr_put_le32(bytes + i * 4, bits);
        } else {
            uint64_t bits;
            memcpy(&bits, &values[i], sizeof(bits));
            tr_put_le64(bytes + i * 8, bits);
        }
    }
    rc = put_value(ds, tag, vr, bytes, count * size);
    tr_free(bytes);
    return rc;
}

int dcm_dataset_set_float(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, double value)
{
    return dcm_dataset_set_floats(ds, tag, vr, &value, 1);
}

int dcm_dataset_set_tag(struct dcm_dataset *ds, uint32_t tag, uint32_t value)
{
    return dcm_dataset_set_int(ds, tag, DCM_VR_AT, value);
}

int dcm_dataset_set_uid(struct dcm_dataset *ds, uint32_t tag, const char *uid)
{
    if (!dcm_uid_is_valid(uid, strlen(uid)))
        return TR_EINVAL;
    return put_value(ds, tag, DCM_VR_UI, uid, strlen(uid));
}

int dcm_dataset_set_bytes(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const void *data,
                          size_t length)
{
    int rc = resolve_vr(tag, &vr);
    if (rc)
        return rc;
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    if (vr == DCM_VR_SQ || vr == DCM_VR_NONE)
        return TR_EINVAL;
    if ((info->kind == DCM_VR_KIND_NUMBER || info->kind == DCM_VR_KIND_BYTES) && info->size > 1 &&
        length % info->size)
        return TR_EINVAL;
    return put_value(ds, tag, vr, data, length);
}

int dcm_dataset_set_empty(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr)
{
    int rc = resolve_vr(tag, &vr);
    if (rc)
        return rc;
    if (vr == DCM_VR_SQ)
        return dcm_dataset_set_sequence(ds, tag);
    return put_value(ds, tag, vr, NULL, 0);
}

int dcm_dataset_set_sequence(struct dcm_dataset *ds, uint32_t tag)
{
    struct dcm_element e = {.tag = tag, .vr = DCM_VR_SQ, .flags = DCM_ELEM_UNDEFINED_LENGTH,
                            .length = DCM_UNDEFINED_LENGTH, .offset = DCM_NO_OFFSET};
    return dcm_dataset_put(ds, &e) ? 0 : TR_ENOMEM;
}

int dcm_element_append_item(struct dcm_dataset *ds, struct dcm_element *e,
                            struct dcm_dataset *item)
{
    if (e->value.items.count == e->value.items.cap) {
        uint32_t cap = e->value.items.cap ? e->value.items.cap * 2 : 4;
        struct dcm_dataset **items =
            tr_arena_realloc(&ds->root->arena, e->value.items.item,
                             e->value.items.cap * sizeof(*items), cap * sizeof(*items));
        if (!items)
            return TR_ENOMEM;
        e->value.items.item = items;
        e->value.items.cap = cap;
    }
    e->value.items.item[e->value.items.count++] = item;
    return 0;
}

int dcm_element_append_fragment(struct dcm_dataset *ds, struct dcm_element *e,
                                const struct dcm_fragment *f)
{
    if (e->value.fragments.count == e->value.fragments.cap) {
        uint32_t cap = e->value.fragments.cap ? e->value.fragments.cap * 2 : 8;
        struct dcm_fragment *frags =
            tr_arena_realloc(&ds->root->arena, e->value.fragments.fragment,
                             e->value.fragments.cap * sizeof(*frags), cap * sizeof(*frags));
        if (!frags)
            return TR_ENOMEM;
        e->value.fragments.fragment = frags;
        e->value.fragments.cap = cap;
    }
    e->value.fragments.fragment[e->value.fragments.count++] = *f;
    return 0;
}

struct dcm_dataset *dcm_dataset_add_item(struct dcm_dataset *ds, uint32_t tag,
                                         struct tr_error *err)
{
    struct dcm_element *e = get_mutable(ds, tag);
    if (!e) {
        if (dcm_dataset_set_sequence(ds, tag) < 0) {
            tr_error_set(err, TR_ENOMEM, "out of memory");
            return NULL;
        }
        e = get_mutable(ds, tag);
    }
    if (e->vr != DCM_VR_SQ) {
        tr_error_set(err, TR_EINVAL, "(%04X,%04X) is %s, not a sequence", DCM_TAG_GROUP(tag),
                     DCM_TAG_ELEMENT(tag), dcm_vr_name((enum dcm_vr)e->vr));
        return NULL;
    }
    struct dcm_dataset *item = dcm_dataset_new_item(ds);
    if (!item || dcm_element_append_item(ds, e, item) < 0) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    return item;
}

int dcm_dataset_remove_item(struct dcm_dataset *ds, uint32_t tag, unsigned index)
{
    struct dcm_element *e = get_mutable(ds, tag);
    if (!e || e->vr != DCM_VR_SQ || index >= e->value.items.count)
        return TR_ENOTFOUND;
    memmove(&e->value.items.item[index], &e->value.items.item[index + 1],
            (e->value.items.count - index - 1) * sizeof(e->value.items.item[0]));
    e->value.items.count--;
    return 0;
}

/* ---- copy --------------------------------------------------------------------------------- */

static int copy_into(struct dcm_dataset *dst, const struct dcm_dataset *src, struct tr_error *err)
{
    struct tr_arena *arena = &dst->root->arena;
    dst->flags = src->flags;
    for (size_t i = 0; i < src->count; i++) {
        const struct dcm_element *s = &src->elems[i];
        struct dcm_element e = *s;
        e.offset = DCM_NO_OFFSET;
        if (s->vr == DCM_VR_SQ) {
            memset(&e.value, 0, sizeof(e.value));
            struct dcm_element *d = dcm_dataset_put(dst, &e);
            if (!d)
                return tr_error_set(err, TR_ENOMEM, "out of memory");
            for (uint32_t k = 0; k < s->value.items.count; k++) {
                struct dcm_dataset *item = dcm_dataset_new_item(dst);
                if (!item)
                    return tr_error_set(err, TR_ENOMEM, "out of memory");
                int rc = copy_into(item, s->value.items.item[k], err);
                if (rc)
                    return rc;
                /* `d` may have moved if copy_into touched dst: it did not (items only). */
                if (dcm_element_append_item(dst, d, item) < 0)
                    return tr_error_set(err, TR_ENOMEM, "out of memory");
            }
        } else if (s->flags & DCM_ELEM_ENCAPSULATED) {
            memset(&e.value, 0, sizeof(e.value));
            struct dcm_element *d = dcm_dataset_put(dst, &e);
            if (!d)
                return tr_error_set(err, TR_ENOMEM, "out of memory");
            for (uint32_t k = 0; k < s->value.fragments.count; k++) {
                struct dcm_fragment f = s->value.fragments.fragment[k];
                f.bytes = tr_arena_memdup(arena, f.bytes, f.length);
                f.offset = DCM_NO_OFFSET;
                if (!f.bytes || dcm_element_append_fragment(dst, d, &f) < 0)
                    return tr_error_set(err, TR_ENOMEM, "out of memory");
            }
        } else {
            e.value.bytes = tr_arena_memdup(arena, s->value.bytes, s->length);
            if (!e.value.bytes || !dcm_dataset_put(dst, &e))
                return tr_error_set(err, TR_ENOMEM, "out of memory");
        }
    }
    return 0;
}

int dcm_dataset_copy_element(struct dcm_dataset *dst, const struct dcm_dataset *src, uint32_t tag,
                             struct tr_error *err)
{
    const struct dcm_element *e = dcm_dataset_get(src, tag);
    if (!e)
        return TR_ENOTFOUND;
    /* Copy through a one-element data set so that copy_into does the deep work. */
    struct dcm_dataset one = {.elems = (struct dcm_element *)e, .count = 1, .cap = 1,
                              .parent = src->parent, .root = src->root, .depth = src->depth,
                              .flags = dst->flags};
    return copy_into(dst, &one, err);
}

struct dcm_dataset *dcm_dataset_copy(const struct dcm_dataset *ds, struct tr_error *err)
{
    struct dcm_dataset *copy = dcm_dataset_new();
    if (!copy) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    if (copy_into(copy, ds, err) < 0) {
        dcm_dataset_free(copy);
        return NULL;
    }
    /* A copied item becomes a root: it must carry the character set it inherited. */
    if (ds->parent && !copy->charset) {
        const struct dcm_dataset *p = ds->parent;
        while (p && !p->charset)
            p = p->parent;
        if (p) {
            const struct dcm_element *cs = dcm_dataset_get(p, DCM_TAG_SpecificCharacterSet);
            if (cs && put_value(copy, cs->tag, DCM_VR_CS, cs->value.bytes, cs->length) < 0) {
                dcm_dataset_free(copy);
                tr_error_set(err, TR_ENOMEM, "out of memory");
                return NULL;
            }
        }
    }
    return copy;
}

/* ---- conversion to UTF-8 ------------------------------------------------------------------ */

static int convert_utf8(struct dcm_dataset *ds, bool *non_ascii, struct tr_error *err)
{
    for (size_t i = 0; i < ds->count; i++) {
        struct dcm_element *e = &ds->elems[i];
        if (e->vr == DCM_VR_SQ) {
            for (uint32_t k = 0; k < e->value.items.count; k++) {
                int rc = convert_utf8(e->value.items.item[k], non_ascii, err);
                if (rc)
                    return rc;
            }
            continue;
        }
        if (!dcm_vr_info((enum dcm_vr)e->vr)->charset || (e->flags & DCM_ELEM_ENCAPSULATED))
            continue;
        if (!needs_decoding(e))
            continue;
        *non_ascii = true;
        struct tr_buf b;
        tr_buf_init(&b, (size_t)e->length * 4 + 16);
        int rc = decode_value(ds, e, &b);
        if (rc == 0 && b.len >= DCM_UNDEFINED_LENGTH)
            rc = TR_ELIMIT;
        if (rc == 0) {
            uint8_t *copy = tr_arena_memdup(&ds->root->arena, b.data ? b.data : "", b.len);
            if (copy) {
                e->value.bytes = copy;
                e->length = (uint32_t)b.len;
            } else {
                rc = TR_ENOMEM;
            }
        }
        tr_buf_release(&b);
        if (rc)
            return tr_error_set(err, rc, "(%04X,%04X): cannot convert to UTF-8: %s",
                                DCM_TAG_GROUP(e->tag), DCM_TAG_ELEMENT(e->tag), tr_strerror(rc));
    }
    return 0;
}

static void drop_item_charsets(struct dcm_dataset *ds)
{
    for (size_t i = 0; i < ds->count; i++) {
        struct dcm_element *e = &ds->elems[i];
        if (e->vr != DCM_VR_SQ)
            continue;
        for (uint32_t k = 0; k < e->value.items.count; k++) {
            struct dcm_dataset *item = e->value.items.item[k];
            dcm_dataset_remove(item, DCM_TAG_SpecificCharacterSet);
            drop_item_charsets(item);
        }
    }
}

int dcm_dataset_convert_to_utf8(struct dcm_dataset *ds, struct tr_error *err)
{
    bool non_ascii = false;
    int rc = convert_utf8(ds, &non_ascii, err);
    if (rc)
        return rc;
    drop_item_charsets(ds);
    if (non_ascii)
        return put_value(ds, DCM_TAG_SpecificCharacterSet, DCM_VR_CS, "ISO_IR 192", 10);
    dcm_dataset_remove(ds, DCM_TAG_SpecificCharacterSet);
    return 0;
}

/* ---- wildcard matching -------------------------------------------------------------------- */

static const char *next_char(const char *s)
{
    s++;
    while ((*s & 0xC0) == 0x80)
        s++;
    return s;
}

bool dcm_wildcard_match(const char *pattern, const char *text)
{
    /* Iterative with one backtrack point for the last '*' (linear in practice, no recursion). */
    const char *p = pattern, *t = text, *star = NULL, *resume = NULL;
    while (*t) {
        if (*p == '*') {
            star = ++p;
            resume = t;
        } else if (*p == '?' || (*p && *p == *t)) {
            if (*p == '?') {
                p++;
                t = next_char(t);
            } else {
                p++;
                t++;
            }
        } else if (star) {
            p = star;
            resume = next_char(resume);
            t = resume;
        } else {
            return false;
        }
    }
    while (*p == '*')
        p++;
    return *p == '\0';
}
