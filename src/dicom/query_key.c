/*
 * query_key.c - query keys from text (C-FIND identifiers for `telerad find`, QIDO-RS query
 * parameters): attribute names, sequence paths and values as a user writes them.
 */
#include "common.h"
#include "query_key.h"
#include "dict.h"

#include <errno.h>
#include <stdio.h>

static int hex_digit(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static bool parse_hex(const char *s, size_t n, uint32_t *out)
{
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        int d = hex_digit((unsigned char)s[i]);
        if (d < 0)
            return false;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return true;
}

bool dcm_tag_parse(const char *s, size_t n, uint32_t *tag)
{
    char buf[80];
    if (n == 0 || n >= sizeof(buf))
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    const char *t = buf;
    size_t len = n;
    if (t[0] == '(' && t[len - 1] == ')') {
        t++;
        len -= 2;
    }
    uint32_t g, e;
    if (len == 9 && t[4] == ',' && parse_hex(t, 4, &g) && parse_hex(t + 5, 4, &e)) {
        *tag = DCM_TAG(g, e);
        return true;
    }
    if (len == 8 && parse_hex(t, 8, tag))
        return true;
    const struct dcm_dict_entry *d = dcm_dict_lookup_keyword(buf);
    if (d && d->mask == 0xFFFFFFFFu) {
        *tag = d->tag;
        return true;
    }
    return false;
}

static int set_key_value(struct dcm_dataset *ds, uint32_t tag, const char *value,
                         struct tr_error *err)
{
    enum dcm_vr vr = dcm_dict_vr(tag);
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    if (vr == DCM_VR_SQ) {
        if (*value)
            return tr_error_set(err, TR_EINVAL, "a sequence takes no value (use Seq[0].Key=...)");
        return dcm_dataset_set_sequence(ds, tag);
    }
    if (!*value)
        return dcm_dataset_set_empty(ds, tag, vr);
    int rc;
    if (dcm_vr_is_string(vr) && info->charset) {
        rc = dcm_dataset_set_string(ds, tag, vr, value);
    } else if (dcm_vr_is_string(vr) || vr == DCM_VR_UN) {
        /* Matching keys may be longer than a value of the VR (a date range is 17 characters
         * where a date has 8): set the ASCII bytes as they are. */
        for (const char *c = value; *c; c++) {
            if ((unsigned char)*c < 0x20 || (unsigned char)*c >= 0x7F)
                return tr_error_set(err, TR_EINVAL, "a %s value is printable ASCII",
                                    dcm_vr_name(vr));
        }
        rc = dcm_dataset_set_bytes(ds, tag, vr, value, strlen(value));
    } else if (vr == DCM_VR_AT) {
        uint32_t t;
        if (!dcm_tag_parse(value, strlen(value), &t))
            return tr_error_set(err, TR_EINVAL, "'%s' is not a tag", value);
        rc = dcm_dataset_set_tag(ds, tag, t);
    } else if (info->kind == DCM_VR_KIND_NUMBER) {
        double values[64];
        size_t n = 0;
        const char *s = value;
        bool is_float = vr == DCM_VR_FL || vr == DCM_VR_FD;
        while (*s && n < TR_ARRAY_SIZE(values)) {
            char *end;
            errno = 0;
            values[n] = is_float ? strtod(s, &end) : (double)strtoll(s, &end, 10);
            if (errno || end == s || (*end && *end != '\\'))
                return tr_error_set(err, TR_EINVAL, "'%s' is not a list of numbers", value);
            n++;
            s = *end ? end + 1 : end;
        }
        if (is_float) {
            rc = dcm_dataset_set_floats(ds, tag, vr, values, n);
        } else {
            int64_t ints[64];
            for (size_t i = 0; i < n; i++)
                ints[i] = (int64_t)values[i];
            rc = dcm_dataset_set_ints(ds, tag, vr, ints, n);
        }
    } else {
        return tr_error_set(err, TR_EUNSUPPORTED, "keys of VR %s are not supported",
                            dcm_vr_name(vr));
    }
    if (rc < 0)
        return tr_error_set(err, rc, "'%s' is not a valid %s value", value, dcm_vr_name(vr));
    return 0;
}

int dcm_query_key_set(struct dcm_dataset *ds, const char *key, size_t key_len,
                      const char *value, struct tr_error *err)
{
    const char *p = key, *end = key + key_len;
    struct dcm_dataset *cur = ds;
    while (p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        const char *seg_end = dot ? dot : end;
        const char *bracket = memchr(p, '[', (size_t)(seg_end - p));
        size_t name_len = (size_t)((bracket ? bracket : seg_end) - p);
        uint32_t tag;
        if (!dcm_tag_parse(p, name_len, &tag))
            return tr_error_set(err, TR_EINVAL, "'%.*s' is not a keyword or a tag", (int)name_len,
                                p);
        long index = -1;
        if (bracket) {
            char *close;
            errno = 0;
            index = strtol(bracket + 1, &close, 10);
            if (errno || close == bracket + 1 || *close != ']' || close + 1 != seg_end ||
                index < 0 || index > 1000)
                return tr_error_set(err, TR_EINVAL, "bad item index in '%.*s'", (int)(seg_end - p),
                                    p);
        }
        bool last = seg_end == end;
        if (last && index < 0)
            return set_key_value(cur, tag, value, err);
        /* A sequence: step into item `index` (0 by default), creating the items up to it. */
        if (dcm_dict_vr(tag) != DCM_VR_SQ)
            return tr_error_set(err, TR_EINVAL, "'%.*s' is not a sequence", (int)name_len, p);
        if (index < 0)
            index = 0;
        const struct dcm_element *e = dcm_dataset_get(cur, tag);
        if (!e || e->vr != DCM_VR_SQ) {
            int rc = dcm_dataset_set_sequence(cur, tag);
            if (rc < 0)
                return tr_error_set(err, rc, "cannot add a sequence");
            e = dcm_dataset_get(cur, tag);
        }
        while (e && dcm_element_item_count(e) <= (unsigned)index) {
            if (!dcm_dataset_add_item(cur, tag, err))
                return err->code ? err->code : TR_ENOMEM;
            e = dcm_dataset_get(cur, tag);
        }
        if (!e)
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        cur = dcm_element_item(e, (unsigned)index);
        if (last) {
            if (*value)
                return tr_error_set(err, TR_EINVAL, "an item takes no value");
            return 0;
        }
        p = seg_end + 1;
    }
    return tr_error_set(err, TR_EINVAL, "empty key");
}

