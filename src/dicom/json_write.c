/*
 * json_write.c - data sets to the DICOM JSON Model (PS3.18 F.2).
 *
 * Output is streamed: attributes are appended to a buffer that is flushed to the sink whenever
 * it passes 64 KiB, so a large data set (or a long list of them) never sits whole in memory.
 */
#include "dicom_int.h"
#include "json_util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define FLUSH_AT 65536

struct jw {
    struct tr_buf out;
    const struct tr_sink *sink;
    const struct dcm_json_options *opt;
    struct tr_error *err;
    struct tr_buf scratch; /* decoded text of the current element */
    unsigned indent;
};

static int flush(struct jw *w)
{
    if (w->out.len == 0)
        return 0;
    int rc = tr_sink_write(w->sink, w->out.data, w->out.len);
    tr_buf_reset(&w->out);
    if (rc)
        return tr_error_set(w->err, rc, "write failed: %s", tr_strerror(rc));
    return 0;
}

static int maybe_flush(struct jw *w)
{
    return w->out.len >= FLUSH_AT ? flush(w) : 0;
}

static int newline(struct jw *w)
{
    if (!(w->opt->flags & DCM_JSON_PRETTY))
        return 0;
    int rc = tr_buf_addc(&w->out, '\n');
    for (unsigned i = 0; i < w->indent && rc == 0; i++)
        rc = tr_buf_add(&w->out, "  ", 2);
    return rc;
}

static int fail_element(struct jw *w, const struct dcm_element *e, int code, const char *what)
{
    return tr_error_set(w->err, code, "in (%04X,%04X) %s: %s", DCM_TAG_GROUP(e->tag),
                        DCM_TAG_ELEMENT(e->tag), dcm_dict_keyword(e->tag), what);
}

/* Shortest text that reads back as the same double (JSON has no NaN or infinity: those are
 * written as the strings "NaN", "Infinity", "-Infinity"). */
static int add_double(struct tr_buf *b, double v)
{
    if (isnan(v))
        return tr_buf_adds(b, "\"NaN\"");
    if (isinf(v))
        return tr_buf_adds(b, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
    if (v == floor(v) && fabs(v) < 1e15)
        return tr_buf_addf(b, "%.1f", v);
    char text[40];
    for (int precision = 15; precision <= 17; precision++) {
        snprintf(text, sizeof(text), "%.*g", precision, v);
        if (strtod(text, NULL) == v)
            break;
    }
    return tr_buf_adds(b, text);
}

/* Is `s` a number in JSON's grammar (RFC 8259 section 6)? */
static bool is_json_number(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n)
        return false;
    if (s[i] == '0') {
        i++;
    } else if (s[i] >= '1' && s[i] <= '9') {
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    } else {
        return false;
    }
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || s[i] < '0' || s[i] > '9')
            return false;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || s[i] < '0' || s[i] > '9')
            return false;
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    return i == n;
}

/* One IS or DS value (trimmed text) as a JSON number. */
static int add_number_string(struct jw *w, const struct dcm_element *e, const char *s, size_t n)
{
    char text[64];
    if (n >= sizeof(text))
        return fail_element(w, e, TR_EFORMAT, "number string longer than 63 characters");
    memcpy(text, s, n);
    text[n] = '\0';
    char *end;
    if (e->vr == DCM_VR_IS) {
        errno = 0;
        long long v = strtoll(text, &end, 10);
        if (errno || *end != '\0' || end == text) {
            /* pydicom accepts "1.0" style IS values if integral; so do we. */
            double d = strtod(text, &end);
            if (*end != '\0' || end == text || d != floor(d) || fabs(d) > 9.2e18) {
                char msg[128];
                snprintf(msg, sizeof(msg), "IS value \"%s\" is not an integer", text);
                return fail_element(w, e, TR_EFORMAT, msg);
            }
            v = (long long)d;
        }
        return tr_buf_addf(&w->out, "%lld", v);
    }
    double d = strtod(text, &end);
    /* Written as it is when it is a JSON number and a finite double (jansson and most JSON
     * readers refuse "1e999"). */
    if (is_json_number(text, n) && isfinite(d))
        return tr_buf_add(&w->out, text, n);
    if (*end != '\0' || end == text || !isfinite(d)) {
        char msg[128];
        snprintf(msg, sizeof(msg), "DS value \"%s\" is not a decimal number", text);
        return fail_element(w, e, TR_EFORMAT, msg);
    }
    return add_double(&w->out, d);
}

/* PN value: {"Alphabetic": ..., "Ideographic": ..., "Phonetic": ...} (PS3.18 F.2.2). */
static int add_person_name(struct jw *w, const char *s, size_t n)
{
    static const char *const groups[3] = {"Alphabetic", "Ideographic", "Phonetic"};
    int rc = tr_buf_addc(&w->out, '{');
    bool first = true;
    const char *p = s, *end = s + n;
    for (int g = 0; g < 3 && rc == 0 && p <= end; g++) {
        const char *q = memchr(p, '=', (size_t)(end - p));
        if (!q)
            q = end;
        const char *gs = p, *ge = q;
        if (ge > gs) {
            if (!first)
                rc = tr_buf_addc(&w->out, ',');
            if (rc == 0)
                rc = tr_buf_addf(&w->out, "\"%s\":", groups[g]);
            if (rc == 0)
                rc = tr_json_append_string(&w->out, gs, (size_t)(ge - gs));
            first = false;
        }
        p = q + 1;
    }
    if (rc == 0)
        rc = tr_buf_addc(&w->out, '}');
    return rc;
}

/* How padding is removed from string values in JSON. PS3.5 6.2 makes trailing padding
 * insignificant everywhere and leading spaces in some VRs; we follow pydicom 2.x's reading of
 * that (the reference most DICOMweb clients are tested against): trailing spaces and NULs go
 * from the whole value of CS, DA, DT, TM, UI, AS, UR, PN, LT, ST, UT and from each value of SH,
 * LO, UC; AE values lose spaces on both sides; IS and DS are trimmed to parse as numbers. */
enum trim_rule { TRIM_WHOLE_RIGHT, TRIM_EACH_RIGHT, TRIM_EACH_BOTH };

static enum trim_rule trim_rule(enum dcm_vr vr)
{
    switch (vr) {
    case DCM_VR_SH:
    case DCM_VR_LO:
    case DCM_VR_UC: return TRIM_EACH_RIGHT;
    case DCM_VR_AE:
    case DCM_VR_IS:
    case DCM_VR_DS: return TRIM_EACH_BOTH;
    default: return TRIM_WHOLE_RIGHT;
    }
}

static void trim_right(const char *s, const char **e)
{
    while (*e > s && ((*e)[-1] == ' ' || (*e)[-1] == '\0'))
        (*e)--;
}

static void trim_left(const char **s, const char *e)
{
    while (*s < e && (**s == ' ' || **s == '\t' || **s == '\n' || **s == '\r'))
        (*s)++;
}

static int write_string_values(struct jw *w, const struct dcm_dataset *ds,
                               const struct dcm_element *e)
{
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    tr_buf_reset(&w->scratch);
    int rc = dcm_charset_decode(dcm_dataset_charset(ds), vr, (const char *)e->value.bytes,
                                e->length, &w->scratch);
    if (rc)
        return fail_element(w, e, rc, "cannot decode the text");
    const char *s = w->scratch.data ? w->scratch.data : "";
    const char *end = s + w->scratch.len;
    bool multi = dcm_vr_info(vr)->kind == DCM_VR_KIND_STRING;
    enum trim_rule rule = trim_rule(vr);
    trim_right(s, &end);
    if (rule == TRIM_EACH_BOTH)
        trim_left(&s, end);
    /* An empty value (after trimming) has no "Value" at all (PS3.18 F.2.5). */
    if (s == end)
        return 0;

    rc = tr_buf_adds(&w->out, ",\"Value\":[");
    const char *p = s;
    bool first = true;
    while (rc == 0) {
        const char *q = multi ? memchr(p, '\\', (size_t)(end - p)) : NULL;
        if (!q)
            q = end;
        const char *vs = p, *ve = q;
        if (rule != TRIM_WHOLE_RIGHT)
            trim_right(vs, &ve);
        if (rule == TRIM_EACH_BOTH)
            trim_left(&vs, ve);
        if (!first)
            rc = tr_buf_addc(&w->out, ',');
        first = false;
        if (rc)
            break;
        if (vr == DCM_VR_IS || vr == DCM_VR_DS)
            rc = vs == ve ? tr_buf_adds(&w->out, "null")
                          : add_number_string(w, e, vs, (size_t)(ve - vs));
        else if (vr == DCM_VR_PN)
            rc = add_person_name(w, vs, (size_t)(ve - vs));
        else
            rc = tr_json_append_string(&w->out, vs, (size_t)(ve - vs));
        if (q == end)
            break;
        p = q + 1;
    }
    if (rc == 0)
        rc = tr_buf_addc(&w->out, ']');
    return rc;
}

static int write_number_values(struct jw *w, const struct dcm_element *e)
{
    unsigned n = dcm_element_vm(e);
    if (n == 0)
        return 0;
    int rc = tr_buf_adds(&w->out, ",\"Value\":[");
    for (unsigned i = 0; i < n && rc == 0; i++) {
        if (i)
            rc = tr_buf_addc(&w->out, ',');
        if (rc)
            break;
        if (e->vr == DCM_VR_AT) {
            uint32_t t = 0;
            dcm_element_get_tag(e, i, &t);
            rc = tr_buf_addf(&w->out, "\"%08X\"", t);
        } else if (e->vr == DCM_VR_FL || e->vr == DCM_VR_FD) {
            double d = 0;
            dcm_element_get_float(e, i, &d);
            rc = add_double(&w->out, d);
        } else if (e->vr == DCM_VR_UV) {
            uint64_t u = 0;
            dcm_element_get_uint(e, i, &u);
            rc = tr_buf_addf(&w->out, "%" PRIu64, u);
        } else {
            int64_t v = 0;
            dcm_element_get_int(e, i, &v);
            rc = tr_buf_addf(&w->out, "%" PRId64, v);
        }
        if (rc == 0)
            rc = maybe_flush(w);
    }
    if (rc == 0)
        rc = tr_buf_addc(&w->out, ']');
    return rc;
}

static int add_base64(struct jw *w, struct tr_base64 *st, const uint8_t *p, size_t n)
{
    while (n) {
        size_t chunk = TR_MIN(n, (size_t)FLUSH_AT);
        int rc = tr_base64_feed(st, &w->out, p, chunk);
        if (rc == 0)
            rc = maybe_flush(w);
        if (rc)
            return rc;
        p += chunk;
        n -= chunk;
    }
    return 0;
}

static int write_binary(struct jw *w, const struct dcm_dataset *ds, const struct dcm_element *e)
{
    bool encapsulated = e->flags & DCM_ELEM_ENCAPSULATED;
    if (!encapsulated && e->length == 0)
        return 0;
    size_t size = e->length;
    if (encapsulated) {
        size = 8;
        for (uint32_t i = 0; i < e->value.fragments.count; i++)
            size += 8 + e->value.fragments.fragment[i].length;
    }
    if (w->opt->bulk_uri && size >= w->opt->bulk_threshold) {
        size_t mark = w->out.len;
        int rc = tr_buf_adds(&w->out, ",\"BulkDataURI\":");
        struct tr_buf uri;
        tr_buf_init(&uri, 8192);
        int r = rc ? rc : w->opt->bulk_uri(w->opt->ctx, ds, e, &uri);
        if (r == 0)
            rc = tr_json_append_string(&w->out, uri.data ? uri.data : "", uri.len);
        tr_buf_release(&uri);
        if (r == 0)
            return rc;
        if (r < 0)
            return fail_element(w, e, r, "cannot make a bulk data URI");
        tr_buf_truncate(&w->out, mark); /* r == 1: inline after all */
    }
    int rc = tr_buf_adds(&w->out, ",\"InlineBinary\":\"");
    struct tr_base64 st;
    tr_base64_init(&st);
    if (!encapsulated) {
        if (rc == 0)
            rc = add_base64(w, &st, e->value.bytes, e->length);
    } else {
        /* The encapsulated stream as encoded: items, then the sequence delimiter. */
        for (uint32_t i = 0; i < e->value.fragments.count && rc == 0; i++) {
            const struct dcm_fragment *f = &e->value.fragments.fragment[i];
            uint8_t h[8];
            tr_put_le16(h, 0xFFFE);
            tr_put_le16(h + 2, 0xE000);
            tr_put_le32(h + 4, f->length);
            rc = add_base64(w, &st, h, 8);
            if (rc == 0)
                rc = add_base64(w, &st, f->bytes, f->length);
        }
        uint8_t d[8] = {0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0};
        if (rc == 0)
            rc = add_base64(w, &st, d, 8);
    }
    if (rc == 0)
        rc = tr_base64_finish(&st, &w->out);
    if (rc == 0)
        rc = tr_buf_addc(&w->out, '"');
    return rc;
}

static int write_object(struct jw *w, const struct dcm_dataset *ds);

static int write_element(struct jw *w, const struct dcm_dataset *ds, const struct dcm_element *e)
{
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    const char *vr_name = vr == DCM_VR_NONE ? "UN" : dcm_vr_name(vr);
    int rc = tr_buf_addf(&w->out, "\"%08X\":{\"vr\":\"%s\"", e->tag, vr_name);
    if (rc)
        return rc;
    switch (dcm_vr_info(vr)->kind) {
    case DCM_VR_KIND_SEQUENCE:
        if (e->value.items.count == 0)
            break;
        rc = tr_buf_adds(&w->out, ",\"Value\":[");
        w->indent++;
        for (uint32_t i = 0; i < e->value.items.count && rc == 0; i++) {
            if (i)
                rc = tr_buf_addc(&w->out, ',');
            if (rc == 0)
                rc = newline(w);
            if (rc == 0)
                rc = write_object(w, e->value.items.item[i]);
        }
        w->indent--;
        if (rc == 0)
            rc = tr_buf_addc(&w->out, ']');
        break;
    case DCM_VR_KIND_STRING:
    case DCM_VR_KIND_TEXT: rc = write_string_values(w, ds, e); break;
    case DCM_VR_KIND_NUMBER: rc = write_number_values(w, e); break;
    case DCM_VR_KIND_BYTES:
    case DCM_VR_KIND_NONE: rc = write_binary(w, ds, e); break;
    }
    if (rc == 0)
        rc = tr_buf_addc(&w->out, '}');
    return rc;
}

static int write_object(struct jw *w, const struct dcm_dataset *ds)
{
    int rc = tr_buf_addc(&w->out, '{');
    bool first = true;
    w->indent++;
    for (size_t i = 0; i < ds->count && rc == 0; i++) {
        const struct dcm_element *e = &ds->elems[i];
        if ((w->opt->flags & DCM_JSON_SKIP_META) && DCM_TAG_GROUP(e->tag) == 0x0002)
            continue;
        if ((w->opt->flags & DCM_JSON_SKIP_GROUP_LENGTH) && dcm_tag_is_group_length(e->tag))
            continue;
        if (!first)
            rc = tr_buf_addc(&w->out, ',');
        first = false;
        if (rc == 0)
            rc = newline(w);
        if (rc == 0)
            rc = write_element(w, ds, e);
        if (rc == 0)
            rc = maybe_flush(w);
    }
    w->indent--;
    if (rc == 0 && !first)
        rc = newline(w);
    if (rc == 0)
        rc = tr_buf_addc(&w->out, '}');
    return rc;
}

int dcm_json_write(const struct dcm_dataset *ds, const struct dcm_json_options *opt,
                   const struct tr_sink *sink, struct tr_error *err)
{
    struct dcm_json_options defaults = {0};
    struct jw w = {.sink = sink, .opt = opt ? opt : &defaults, .err = err};
    tr_buf_init(&w.out, SIZE_MAX / 2);
    tr_buf_init(&w.scratch, (size_t)DCM_UNDEFINED_LENGTH * 4);
    int rc = write_object(&w, ds);
    if (rc && err && err->code == 0)
        tr_error_set(err, rc, "%s", tr_strerror(rc));
    if (rc == 0)
        rc = flush(&w);
    tr_buf_release(&w.out);
    tr_buf_release(&w.scratch);
    return rc;
}
