/*
 * json_read.c - the DICOM JSON Model (PS3.18 F.2) back to data sets. jansson parses the JSON
 * text; this file maps its values to DICOM values and reports, for anything it cannot map, the
 * attribute path ("00081115[0].00081150") and what was expected.
 */
#include "dicom_int.h"
#include "json_util.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

struct jr {
    const struct dcm_json_read_options *opt;
    struct tr_error *err;
    bool non_ascii; /* some text value is not ASCII: the result is UTF-8 */
    char path[256];
};

static int fail(struct jr *r, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int fail(struct jr *r, int code, const char *fmt, ...)
{
    char what[TR_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    return tr_error_set(r->err, code, "%s: %s", r->path[0] ? r->path : "(top level)", what);
}

static int parse_object(struct jr *r, json_t *obj, struct dcm_dataset *ds);

static int parse_tag(const char *key, uint32_t *tag)
{
    if (strlen(key) != 8)
        return TR_EFORMAT;
    uint32_t v = 0;
    for (int i = 0; i < 8; i++) {
        char c = key[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
        if (d < 0)
            return TR_EFORMAT;
        v = (v << 4) | (uint32_t)d;
    }
    *tag = v;
    return 0;
}

static void note_text(struct jr *r, const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s >= 0x80) {
            r->non_ascii = true;
            return;
        }
    }
}

/* One value of a string VR into `out` (without separators). */
static int string_value(struct jr *r, enum dcm_vr vr, json_t *v, struct tr_buf *out)
{
    if (json_is_null(v))
        return 0;
    if (vr == DCM_VR_PN && json_is_object(v)) {
        static const char *const groups[3] = {"Alphabetic", "Ideographic", "Phonetic"};
        size_t last = 0, start = out->len;
        for (int g = 0; g < 3; g++) {
            json_t *c = json_object_get(v, groups[g]);
            if (g)
                tr_buf_addc(out, '=');
            if (c && !json_is_string(c) && !json_is_null(c))
                return fail(r, TR_EFORMAT, "PN component group %s is not a string", groups[g]);
            if (json_is_string(c) && json_string_length(c)) {
                note_text(r, json_string_value(c));
                if (tr_buf_add(out, json_string_value(c), json_string_length(c)) < 0)
                    return fail(r, TR_ENOMEM, "out of memory");
                last = out->len;
            }
        }
        /* drop trailing empty component groups: "Doe^John==" -> "Doe^John" */
        tr_buf_truncate(out, last > start ? last : start);
        return 0;
    }
    if (json_is_string(v)) {
        if (memchr(json_string_value(v), '\\', json_string_length(v)) &&
            dcm_vr_info(vr)->kind == DCM_VR_KIND_STRING)
            return fail(r, TR_EFORMAT, "a %s value contains a backslash", dcm_vr_name(vr));
        note_text(r, json_string_value(v));
        return tr_buf_add(out, json_string_value(v), json_string_length(v)) < 0
                   ? fail(r, TR_ENOMEM, "out of memory")
                   : 0;
    }
    if ((vr == DCM_VR_IS || vr == DCM_VR_DS) && json_is_number(v)) {
        char text[32];
        if (json_is_integer(v)) {
            snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        } else if (vr == DCM_VR_DS) {
            if (dcm_ds_format(json_real_value(v), text) < 0)
                return fail(r, TR_EFORMAT, "DS value is not finite");
        } else {
            double d = json_real_value(v);
            if (d != floor(d) || fabs(d) > 2147483647.0)
                return fail(r, TR_EFORMAT, "IS value %g is not an integer", d);
            snprintf(text, sizeof(text), "%.0f", d);
        }
        return tr_buf_adds(out, text) < 0 ? fail(r, TR_ENOMEM, "out of memory") : 0;
    }
    return fail(r, TR_EFORMAT, "expected a %s for VR %s",
                vr == DCM_VR_PN ? "person name object" : "string", dcm_vr_name(vr));
}

static int number_value(struct jr *r, enum dcm_vr vr, json_t *v, struct tr_buf *out)
{
    uint8_t b[8];
    if (vr == DCM_VR_AT) {
        uint32_t tag;
        if (!json_is_string(v) || parse_tag(json_string_value(v), &tag) < 0)
            return fail(r, TR_EFORMAT, "expected an attribute tag string \"GGGGEEEE\"");
        tr_put_le16(b, DCM_TAG_GROUP(tag));
        tr_put_le16(b + 2, DCM_TAG_ELEMENT(tag));
        return tr_buf_add(out, b, 4);
    }
    if (vr == DCM_VR_FL || vr == DCM_VR_FD) {
        double d;
        if (json_is_number(v)) {
            d = json_number_value(v);
        } else if (json_is_string(v) && strcmp(json_string_value(v), "NaN") == 0) {
            d = NAN;
        } else if (json_is_string(v) && strcmp(json_string_value(v), "Infinity") == 0) {
            d = INFINITY;
        } else if (json_is_string(v) && strcmp(json_string_value(v), "-Infinity") == 0) {
            d = -INFINITY;
        } else {
            return fail(r, TR_EFORMAT, "expected a number for VR %s", dcm_vr_name(vr));
        }
        if (vr == DCM_VR_FL) {
            float f = (float)d;
            uint32_t bits;
            memcpy(&bits, &f, 4);
            tr_put_le32(b, bits);
            return tr_buf_add(out, b, 4);
        }
        uint64_t bits;
        memcpy(&bits, &d, 8);
        tr_put_le64(b, bits);
        return tr_buf_add(out, b, 8);
    }
    json_int_t i;
    if (json_is_integer(v)) {
        i = json_integer_value(v);
    } else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
               fabs(json_real_value(v)) < 9.2e18) {
        i = (json_int_t)json_real_value(v);
    } else if (json_is_string(v)) {
        char *end;
        i = strtoll(json_string_value(v), &end, 10);
        if (*end || end == json_string_value(v))
            return fail(r, TR_EFORMAT, "expected an integer for VR %s", dcm_vr_name(vr));
    } else {
        return fail(r, TR_EFORMAT, "expected an integer for VR %s", dcm_vr_name(vr));
    }
    bool ok = true;
    switch (vr) {
    case DCM_VR_US: ok = i >= 0 && i <= UINT16_MAX; tr_put_le16(b, (uint16_t)i); break;
    case DCM_VR_SS: ok = i >= INT16_MIN && i <= INT16_MAX; tr_put_le16(b, (uint16_t)i); break;
    case DCM_VR_UL: ok = i >= 0 && i <= UINT32_MAX; tr_put_le32(b, (uint32_t)i); break;
    case DCM_VR_SL: ok = i >= INT32_MIN && i <= INT32_MAX; tr_put_le32(b, (uint32_t)i); break;
    case DCM_VR_SV: tr_put_le64(b, (uint64_t)i); break;
    case DCM_VR_UV: ok = i >= 0; tr_put_le64(b, (uint64_t)i); break;
    default: ok = false; break;
    }
    if (!ok)
        return fail(r, TR_EFORMAT, "value %" JSON_INTEGER_FORMAT " out of range for VR %s", i,
                    dcm_vr_name(vr));
    return tr_buf_add(out, b, dcm_vr_info(vr)->size);
}

static int parse_sequence(struct jr *r, struct dcm_dataset *ds, uint32_t tag, json_t *value)
{
    if (dcm_dataset_set_sequence(ds, tag) < 0)
        return fail(r, TR_ENOMEM, "out of memory");
    if (!value)
        return 0;
    if (ds->depth + 1 > r->opt->max_depth)
        return fail(r, TR_ELIMIT, "sequences nested deeper than %u levels", r->opt->max_depth);
    size_t mark = strlen(r->path);
    size_t i;
    json_t *item;
    json_array_foreach(value, i, item)
    {
        snprintf(r->path + mark, sizeof(r->path) - mark, "[%zu]", i);
        if (!json_is_object(item))
            return fail(r, TR_EFORMAT, "a sequence item is not an object");
        struct tr_error e2 = TR_ERROR_INIT;
        struct dcm_dataset *child = dcm_dataset_add_item(ds, tag, &e2);
        if (!child)
            return fail(r, e2.code, "%s", e2.message);
        int rc = parse_object(r, item, child);
        if (rc)
            return rc;
    }
    r->path[mark] = '\0';
    return 0;
}

static int parse_attribute(struct jr *r, struct dcm_dataset *ds, uint32_t tag, json_t *attr)
{
    if (!json_is_object(attr))
        return fail(r, TR_EFORMAT, "the attribute is not an object");
    json_t *jvr = json_object_get(attr, "vr");
    if (!json_is_string(jvr))
        return fail(r, TR_EFORMAT, "missing \"vr\"");
    enum dcm_vr vr = dcm_vr_from_string(json_string_value(jvr));
    if (vr == DCM_VR_NONE)
        return fail(r, TR_EFORMAT, "unknown VR \"%s\"", json_string_value(jvr));
    json_t *value = json_object_get(attr, "Value");
    json_t *inline_binary = json_object_get(attr, "InlineBinary");
    json_t *bulk = json_object_get(attr, "BulkDataURI");
    if (!!value + !!inline_binary + !!bulk > 1)
        return fail(r, TR_EFORMAT, "more than one of Value, InlineBinary, BulkDataURI");
    if (value && !json_is_array(value) && !json_is_null(value))
        return fail(r, TR_EFORMAT, "\"Value\" is not an array");
    if (json_is_null(value))
        value = NULL;

    if (vr == DCM_VR_SQ)
        return parse_sequence(r, ds, tag, value);

    if (bulk) {
        if (!json_is_string(bulk))
            return fail(r, TR_EFORMAT, "\"BulkDataURI\" is not a string");
        if (dcm_dataset_set_empty(ds, tag, vr) < 0)
            return fail(r, TR_ENOMEM, "out of memory");
        if (r->opt->bulk_data)
            return r->opt->bulk_data(r->opt->ctx, ds, tag, vr, json_string_value(bulk), r->err);
        return 0;
    }

    struct tr_buf b;
    tr_buf_init(&b, DCM_UNDEFINED_LENGTH - 2);
    int rc = 0;
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    if (inline_binary) {
        if (!json_is_string(inline_binary))
            rc = fail(r, TR_EFORMAT, "\"InlineBinary\" is not a string");
        else if (tr_base64_decode(json_string_value(inline_binary),
                                  json_string_length(inline_binary), &b) < 0)
            rc = fail(r, TR_EFORMAT, "\"InlineBinary\" is not valid base64");
    } else if (value) {
        size_t i;
        json_t *v;
        json_array_foreach(value, i, v)
        {
            if (rc)
                break;
            if (info->kind == DCM_VR_KIND_STRING || info->kind == DCM_VR_KIND_TEXT) {
                if (i && info->kind == DCM_VR_KIND_STRING)
                    rc = tr_buf_addc(&b, '\\');
                else if (i)
                    rc = fail(r, TR_EFORMAT, "VR %s has a single value", dcm_vr_name(vr));
                if (rc == 0)
                    rc = string_value(r, vr, v, &b);
            } else if (info->kind == DCM_VR_KIND_NUMBER) {
                rc = number_value(r, vr, v, &b);
            } else {
                rc = fail(r, TR_EFORMAT, "VR %s takes InlineBinary or BulkDataURI, not Value",
                          dcm_vr_name(vr));
            }
        }
    }
    if (rc == 0) {
        rc = dcm_dataset_set_bytes(ds, tag, vr, b.data ? b.data : "", b.len);
        if (rc < 0)
            rc = fail(r, rc, "cannot store the value (%s)", tr_strerror(rc));
    }
    tr_buf_release(&b);
    return rc;
}

static int parse_object(struct jr *r, json_t *obj, struct dcm_dataset *ds)
{
    size_t mark = strlen(r->path);
    const char *key;
    json_t *attr;
    json_object_foreach(obj, key, attr)
    {
        uint32_t tag;
        snprintf(r->path + mark, sizeof(r->path) - mark, "%s%s", mark ? "." : "", key);
        if (parse_tag(key, &tag) < 0)
            return fail(r, TR_EFORMAT, "the key is not a tag of 8 hex digits");
        int rc = parse_attribute(r, ds, tag, attr);
        if (rc)
            return rc;
    }
    r->path[mark] = '\0';
    return 0;
}

static void drop_item_charsets(struct dcm_dataset *ds)
{
    for (size_t i = 0; i < dcm_dataset_count(ds); i++) {
        const struct dcm_element *e = dcm_dataset_at(ds, i);
        for (unsigned k = 0; k < dcm_element_item_count(e); k++) {
            struct dcm_dataset *item = dcm_element_item(e, k);
            dcm_dataset_remove(item, DCM_TAG_SpecificCharacterSet);
            drop_item_charsets(item);
        }
    }
}

static int read_one(struct jr *r, json_t *obj, struct dcm_dataset **out)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds)
        return fail(r, TR_ENOMEM, "out of memory");
    r->non_ascii = false;
    int rc = parse_object(r, obj, ds);
    if (rc == 0 && r->non_ascii) {
        /* JSON text is UTF-8 (PS3.18 F.2): say so, whatever the original data set said. */
        drop_item_charsets(ds);
        rc = dcm_dataset_set_string(ds, DCM_TAG_SpecificCharacterSet, DCM_VR_CS, "ISO_IR 192");
        if (rc)
            rc = fail(r, rc, "cannot set the character set");
    }
    if (rc) {
        dcm_dataset_free(ds);
        return rc;
    }
    *out = ds;
    return 0;
}

static json_t *load(const char *json, size_t len, struct tr_error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        tr_error_set(err, TR_EFORMAT, "invalid JSON at line %d, column %d (byte %d): %s",
                     jerr.line, jerr.column, jerr.position, jerr.text);
    return root;
}

int dcm_json_read(const char *json, size_t len, const struct dcm_json_read_options *opt,
                  struct dcm_dataset **out, struct tr_error *err)
{
    struct dcm_json_read_options defaults = {.max_depth = 64};
    struct jr r = {.opt = opt ? opt : &defaults, .err = err};
    json_t *root = load(json, len, err);
    if (!root)
        return TR_EFORMAT;
    json_t *obj = root;
    if (json_is_array(root) && json_array_size(root) == 1)
        obj = json_array_get(root, 0);
    int rc;
    if (!json_is_object(obj))
        rc = fail(&r, TR_EFORMAT, "expected a DICOM JSON object");
    else
        rc = read_one(&r, obj, out);
    json_decref(root);
    return rc;
}

int dcm_json_read_array(const char *json, size_t len, const struct dcm_json_read_options *opt,
                        struct dcm_dataset ***out, size_t *count, struct tr_error *err)
{
    struct dcm_json_read_options defaults = {.max_depth = 64};
    struct jr r = {.opt = opt ? opt : &defaults, .err = err};
    json_t *root = load(json, len, err);
    if (!root)
        return TR_EFORMAT;
    int rc = 0;
    size_t n = json_is_array(root) ? json_array_size(root) : 0;
    struct dcm_dataset **list = NULL;
    if (!json_is_array(root))
        rc = fail(&r, TR_EFORMAT, "expected an array of DICOM JSON objects");
    else if (!(list = tr_calloc(n + 1, sizeof(*list))))
        rc = fail(&r, TR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && rc == 0; i++) {
        snprintf(r.path, sizeof(r.path), "[%zu]", i);
        json_t *obj = json_array_get(root, i);
        if (!json_is_object(obj))
            rc = fail(&r, TR_EFORMAT, "not an object");
        else {
            r.path[0] = '\0';
            rc = read_one(&r, obj, &list[i]);
            if (rc)
                tr_error_prefix(err, "data set %zu", i);
        }
    }
    json_decref(root);
    if (rc) {
        for (size_t i = 0; list && i < n; i++)
            dcm_dataset_free(list[i]);
        tr_free(list);
        return rc;
    }
    *out = list;
    *count = n;
    return 0;
}
