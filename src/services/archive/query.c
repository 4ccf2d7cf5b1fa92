/*
 * query.c - C-FIND / QIDO-RS matching against the index (PS3.4 C.2.2.2: single value,
 * wildcard, range, list of UIDs, universal matching), and the instance lists that C-MOVE,
 * C-GET and WADO-RS send.
 *
 * An identifier becomes one SQL statement: the tables of the query level and the levels above
 * joined, one condition per matching key, parameters bound (never spliced into the text).
 */
#include "common.h"
#include "index_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

enum key_kind {
    K_TEXT,  /* single value, wildcard; backslash-separated values match any of them */
    K_PN,    /* person name: as K_TEXT on every component group, optionally case-insensitive */
    K_DATE,  /* DA: single value or range */
    K_TIME,  /* TM: single value or range */
    K_UID,   /* single UID or a list of UIDs */
    K_INT,   /* IS / US: a number */
    K_SET,   /* a column holding a backslash-separated set (ModalitiesInStudy) */
    K_COUNT, /* computed, return only */
};

struct key_def {
    uint32_t tag;
    enum arc_level level;
    enum key_kind kind;
    enum dcm_vr vr;
    const char *column;
    const char *ci_column; /* upper-cased copy for case-insensitive PN matching */
};

/* PS3.4 C.6 (patient root, study root) and PS3.18 Table 10.6.1-5: the attributes the index
 * matches on and returns. */
static const struct key_def key_defs[] = {
    {0x00100010, ARC_LEVEL_PATIENT, K_PN, DCM_VR_PN, "p.patient_name", "p.patient_name_ci"},
    {0x00100020, ARC_LEVEL_PATIENT, K_TEXT, DCM_VR_LO, "p.patient_id", NULL},
    {0x00100021, ARC_LEVEL_PATIENT, K_TEXT, DCM_VR_LO, "p.issuer", NULL},
    {0x00100030, ARC_LEVEL_PATIENT, K_DATE, DCM_VR_DA, "p.birth_date", NULL},
    {0x00100040, ARC_LEVEL_PATIENT, K_TEXT, DCM_VR_CS, "p.sex", NULL},
    {0x00201200, ARC_LEVEL_PATIENT, K_COUNT, DCM_VR_IS,
     "(SELECT COUNT(*) FROM studies x WHERE x.patient_pk = p.pk)", NULL},
    {0x00201202, ARC_LEVEL_PATIENT, K_COUNT, DCM_VR_IS,
     "(SELECT COALESCE(SUM(x.num_series), 0) FROM studies x WHERE x.patient_pk = p.pk)", NULL},
    {0x00201204, ARC_LEVEL_PATIENT, K_COUNT, DCM_VR_IS,
     "(SELECT COALESCE(SUM(x.num_instances), 0) FROM studies x WHERE x.patient_pk = p.pk)", NULL},
    {0x0020000D, ARC_LEVEL_STUDY, K_UID, DCM_VR_UI, "s.study_uid", NULL},
    {0x00080020, ARC_LEVEL_STUDY, K_DATE, DCM_VR_DA, "s.study_date", NULL},
    {0x00080030, ARC_LEVEL_STUDY, K_TIME, DCM_VR_TM, "s.study_time", NULL},
    {0x00080050, ARC_LEVEL_STUDY, K_TEXT, DCM_VR_SH, "s.accession", NULL},
    {0x00200010, ARC_LEVEL_STUDY, K_TEXT, DCM_VR_SH, "s.study_id", NULL},
    {0x00081030, ARC_LEVEL_STUDY, K_TEXT, DCM_VR_LO, "s.description", NULL},
    {0x00080090, ARC_LEVEL_STUDY, K_PN, DCM_VR_PN, "s.referring", "s.referring_ci"},
    {0x00080201, ARC_LEVEL_STUDY, K_TEXT, DCM_VR_SH, "s.timezone", NULL},
    {0x00080061, ARC_LEVEL_STUDY, K_SET, DCM_VR_CS, "s.modalities", NULL},
    {0x00080062, ARC_LEVEL_STUDY, K_SET, DCM_VR_UI, "s.sop_classes", NULL},
    {0x00201206, ARC_LEVEL_STUDY, K_COUNT, DCM_VR_IS, "s.num_series", NULL},
    {0x00201208, ARC_LEVEL_STUDY, K_COUNT, DCM_VR_IS, "s.num_instances", NULL},
    {0x0020000E, ARC_LEVEL_SERIES, K_UID, DCM_VR_UI, "se.series_uid", NULL},
    {0x00080060, ARC_LEVEL_SERIES, K_TEXT, DCM_VR_CS, "se.modality", NULL},
    {0x00200011, ARC_LEVEL_SERIES, K_INT, DCM_VR_IS, "se.series_number", NULL},
    {0x0008103E, ARC_LEVEL_SERIES, K_TEXT, DCM_VR_LO, "se.description", NULL},
    {0x00180015, ARC_LEVEL_SERIES, K_TEXT, DCM_VR_CS, "se.body_part", NULL},
    {0x00400244, ARC_LEVEL_SERIES, K_DATE, DCM_VR_DA, "se.pps_start_date", NULL},
    {0x00400245, ARC_LEVEL_SERIES, K_TIME, DCM_VR_TM, "se.pps_start_time", NULL},
    {0x00201209, ARC_LEVEL_SERIES, K_COUNT, DCM_VR_IS, "se.num_instances", NULL},
    {0x00080018, ARC_LEVEL_IMAGE, K_UID, DCM_VR_UI, "i.sop_uid", NULL},
    {0x00080016, ARC_LEVEL_IMAGE, K_UID, DCM_VR_UI, "i.sop_class", NULL},
    {0x00200013, ARC_LEVEL_IMAGE, K_INT, DCM_VR_IS, "i.instance_number", NULL},
    {0x00280010, ARC_LEVEL_IMAGE, K_INT, DCM_VR_US, "i.num_rows", NULL},
    {0x00280011, ARC_LEVEL_IMAGE, K_INT, DCM_VR_US, "i.num_columns", NULL},
    {0x00280100, ARC_LEVEL_IMAGE, K_INT, DCM_VR_US, "i.bits_allocated", NULL},
    {0x00280008, ARC_LEVEL_IMAGE, K_INT, DCM_VR_IS, "i.frames", NULL},
    {0x00083002, ARC_LEVEL_IMAGE, K_UID, DCM_VR_UI, "i.transfer_syntax", NULL},
};

static const struct key_def *key_def(uint32_t tag)
{
    for (size_t i = 0; i < TR_ARRAY_SIZE(key_defs); i++) {
        if (key_defs[i].tag == tag)
            return &key_defs[i];
    }
    return NULL;
}

/* ---- building the statement --------------------------------------------------------------- */

struct builder {
    struct tr_buf where;
    char *params[2048];
    int nparams;
    struct tr_error *err;
    int rc;
};

static int add_param(struct builder *b, const char *value)
{
    if (b->nparams >= 2000) {
        b->rc = tr_error_set(b->err, TR_ELIMIT, "too many matching values in the query");
        return 0;
    }
    b->params[b->nparams] = tr_strdup(value);
    if (!b->params[b->nparams]) {
        b->rc = tr_error_set(b->err, TR_ENOMEM, "out of memory");
        return 0;
    }
    return ++b->nparams;
}

static void cond(struct builder *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void cond(struct builder *b, const char *fmt, ...)
{
    if (b->rc)
        return;
    tr_buf_adds(&b->where, b->where.len ? " AND " : " WHERE ");
    va_list ap;
    va_start(ap, fmt);
    tr_buf_vaddf(&b->where, fmt, ap);
    va_end(ap);
}

static bool has_wildcard(const char *v)
{
    return strchr(v, '*') || strchr(v, '?');
}

/* DICOM wildcards to a LIKE pattern (escape '!'). */
static int like_pattern(const char *v, char *out, size_t size)
{
    size_t n = 0;
    for (const char *p = v; *p; p++) {
        if (n + 3 >= size)
            return TR_ELIMIT;
        if (*p == '*')
            out[n++] = '%';
        else if (*p == '?')
            out[n++] = '_';
        else {
            if (*p == '%' || *p == '_' || *p == '!')
                out[n++] = '!';
            out[n++] = *p;
        }
    }
    out[n] = '\0';
    return 0;
}

static bool all_digits(const char *s, size_t min, size_t max)
{
    size_t n = strlen(s);
    if (n < min || n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((s[i] < '0' || s[i] > '9') && s[i] != '.')
            return false;
    }
    return true;
}

/* The upper-cased ideographic and phonetic group columns of a PN key (index migration 3). */
static const char *const *pn_group_columns(const struct key_def *k)
{
    static const char *const patient[2] = {"p.patient_name_i_ci", "p.patient_name_p_ci"};
    static const char *const referring[2] = {"s.referring_i_ci", "s.referring_p_ci"};
    if (k->tag == 0x00100010)
        return patient;
    if (k->tag == 0x00080090)
        return referring;
    return NULL;
}

/* One value of a K_TEXT / K_PN key, as an SQL expression (OR'ed by the caller). */
static void text_expr(struct builder *b, const struct key_def *k, const char *value, bool ci,
                      bool fuzzy, struct tr_buf *expr)
{
    char v[1024];
    const char *column = k->column;
    if (k->kind == K_PN && ci && k->ci_column) {
        ix_upper(value, v, sizeof(v));
        column = k->ci_column;
    } else {
        snprintf(v, sizeof(v), "%s", value);
    }
    char pat[2100];
    if (k->kind == K_PN && fuzzy && !has_wildcard(v)) {
        /* Fuzzy (QIDO fuzzymatching=true): any name component starting with the value. */
        if (like_pattern(v, pat, sizeof(pat) - 4) < 0) {
            b->rc = tr_error_set(b->err, TR_ELIMIT, "matching value too long");
            return;
        }
        char p1[2200], p2[2200];
        snprintf(p1, sizeof(p1), "%s%%", pat);
        snprintf(p2, sizeof(p2), "%%^%s%%", pat);
        int a = add_param(b, p1), c = add_param(b, p2);
        char p3[2200];
        snprintf(p3, sizeof(p3), "%% %s%%", pat);
        int d = add_param(b, p3);
        tr_buf_addf(expr, "(%s LIKE $%d ESCAPE '!' OR %s LIKE $%d ESCAPE '!' OR %s LIKE $%d "
                          "ESCAPE '!')",
                    column, a, column, c, column, d);
        return;
    }
    if (has_wildcard(v)) {
        if (like_pattern(v, pat, sizeof(pat)) < 0) {
            b->rc = tr_error_set(b->err, TR_ELIMIT, "matching value too long");
            return;
        }
        int a = add_param(b, pat);
        const char *const *groups = column == k->ci_column ? pn_group_columns(k) : NULL;
        if (groups) {
            /* Any component group: "Yamada*" and "山田*" both match "Yamada^Tarou=山田^太郎".
             * Each group has an indexed column (the alphabetic one is where the whole value
             * starts), so every term is a prefix search when the value starts with a literal:
             * a MULTI-INDEX OR, not a scan. A pattern not ending in '*' must still stop at the
             * end of the alphabetic group, which the whole value continues with "=...". */
            size_t n = strlen(pat);
            tr_buf_addf(expr, "(%s LIKE $%d ESCAPE '!' OR %s LIKE $%d ESCAPE '!' OR %s LIKE $%d "
                              "ESCAPE '!'",
                        column, a, groups[0], a, groups[1], a);
            if (n == 0 || pat[n - 1] != '%') {
                char grp[2200];
                snprintf(grp, sizeof(grp), "%s=%%", pat);
                tr_buf_addf(expr, " OR %s LIKE $%d ESCAPE '!'", column, add_param(b, grp));
            }
            tr_buf_addc(expr, ')');
        } else if (k->kind == K_PN) {
            /* Any component group: "Yamada*" and "山田*" both match "Yamada^Tarou=山田^太郎". */
            char grp[2200];
            snprintf(grp, sizeof(grp), "%%=%s", pat);
            int g = add_param(b, grp);
            tr_buf_addf(expr, "(%s LIKE $%d ESCAPE '!' OR %s LIKE $%d ESCAPE '!')", column, a,
                        column, g);
        } else {
            tr_buf_addf(expr, "%s LIKE $%d ESCAPE '!'", column, a);
        }
        return;
    }
    int a = add_param(b, v);
    if (k->kind == K_PN) {
        char grp[sizeof(pat) + 4];
        if (like_pattern(v, pat, sizeof(pat)) < 0) {
            b->rc = tr_error_set(b->err, TR_ELIMIT, "matching value too long");
            return;
        }
        snprintf(grp, sizeof(grp), "%s=%%", pat);
        int g = add_param(b, grp);
        tr_buf_addf(expr, "(%s = $%d OR %s LIKE $%d ESCAPE '!')", column, a, column, g);
    } else {
        tr_buf_addf(expr, "%s = $%d", column, a);
    }
}

/* A range "a-b", "a-", "-b" or a single value for DA / TM. */
static void range_cond(struct builder *b, const struct key_def *k, const char *value)
{
    const char *dash = strchr(value, '-');
    bool date = k->kind == K_DATE;
    size_t max = date ? 8 : 16;
    char lo[32] = "", hi[32] = "";
    if (dash) {
        snprintf(lo, sizeof(lo), "%.*s", (int)(dash - value), value);
        snprintf(hi, sizeof(hi), "%s", dash + 1);
    } else {
        snprintf(lo, sizeof(lo), "%s", value);
    }
    if ((lo[0] && !all_digits(lo, date ? 8 : 2, max)) || (hi[0] && !all_digits(hi, date ? 8 : 2, max)) ||
        (dash && !lo[0] && !hi[0])) {
        b->rc = tr_error_set(b->err, TR_EINVAL, "(%04X,%04X): invalid %s \"%s\"",
                             DCM_TAG_GROUP(k->tag), DCM_TAG_ELEMENT(k->tag),
                             date ? "date or date range" : "time or time range", value);
        return;
    }
    if (!dash) {
        if (date) {
            cond(b, "%s = $%d", k->column, add_param(b, lo));
        } else {
            /* "1015" matches 10:15:xx: a prefix. */
            char pat[40];
            snprintf(pat, sizeof(pat), "%s%%", lo);
            cond(b, "%s LIKE $%d", k->column, add_param(b, pat));
        }
        return;
    }
    if (lo[0])
        cond(b, "%s >= $%d", k->column, add_param(b, lo));
    if (hi[0]) {
        /* An upper time bound includes everything within its precision ("12" is to 12:59:59). */
        if (!date) {
            size_t n = strlen(hi);
            for (; n < 13 && n + 1 < sizeof(hi); n++)
                hi[n] = n == 6 ? '.' : '9';
            hi[n] = '\0';
        }
        cond(b, "%s <= $%d", k->column, add_param(b, hi));
        cond(b, "%s <> ''", k->column); /* an unknown date is not in any range */
    }
}

static void uid_cond(struct builder *b, const struct key_def *k, const char *value)
{
    struct tr_buf list;
    tr_buf_init(&list, 1 << 20);
    const char *p = value;
    int n = 0;
    while (*p && b->rc == 0) {
        const char *q = strchr(p, '\\');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        char uid[DCM_UID_MAX + 1];
        if (len == 0 || len > DCM_UID_MAX || !dcm_uid_is_valid(p, len)) {
            b->rc = tr_error_set(b->err, TR_EINVAL, "(%04X,%04X): invalid UID \"%.*s\"",
                                 DCM_TAG_GROUP(k->tag), DCM_TAG_ELEMENT(k->tag),
                                 (int)TR_MIN(len, (size_t)64), p);
            break;
        }
        memcpy(uid, p, len);
        uid[len] = '\0';
        tr_buf_addf(&list, "%s$%d", n++ ? ", " : "", add_param(b, uid));
        p = q ? q + 1 : p + len;
    }
    if (b->rc == 0 && n)
        cond(b, n == 1 ? "%s = %s" : "%s IN (%s)", k->column, list.data);
    tr_buf_release(&list);
}

static void key_cond(struct builder *b, struct arc_index *ix, const struct arc_query *q,
                     const struct key_def *k, const char *value)
{
    switch (k->kind) {
    case K_DATE:
    case K_TIME: range_cond(b, k, value); return;
    case K_UID: uid_cond(b, k, value); return;
    case K_COUNT: return; /* return key only */
    case K_INT: {
        char *end;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (errno || *end || end == value) {
            b->rc = tr_error_set(b->err, TR_EINVAL, "(%04X,%04X): \"%s\" is not a number",
                                 DCM_TAG_GROUP(k->tag), DCM_TAG_ELEMENT(k->tag), value);
            return;
        }
        char text[24];
        snprintf(text, sizeof(text), "%lld", v);
        /* Compared as a number in both engines: CAST the parameter. */
        cond(b, "%s = CAST($%d AS {BIGINT})", k->column, add_param(b, text));
        return;
    }
    case K_SET: {
        struct tr_buf expr;
        tr_buf_init(&expr, 1 << 20);
        const char *p = value;
        int n = 0;
        while (*p) {
            const char *e = strchr(p, '\\');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char one[80], pat[200];
            snprintf(one, sizeof(one), "%.*s", (int)TR_MIN(len, (size_t)64), p);
            like_pattern(one, pat, sizeof(pat) - 8);
            char full[220];
            snprintf(full, sizeof(full), "%%\\%s\\%%", pat);
            tr_buf_addf(&expr, "%s('\\' || %s || '\\') LIKE $%d ESCAPE '!'", n++ ? " OR " : "",
                        k->column, add_param(b, full));
            p = e ? e + 1 : p + len;
        }
        if (n)
            cond(b, "(%s)", expr.data);
        tr_buf_release(&expr);
        return;
    }
    case K_TEXT:
    case K_PN: {
        struct tr_buf expr;
        tr_buf_init(&expr, 1 << 20);
        const char *p = value;
        int n = 0;
        while (*p && b->rc == 0) {
            const char *e = k->kind == K_PN ? NULL : strchr(p, '\\');
            size_t len = e ? (size_t)(e - p) : strlen(p);
            char one[1024];
            snprintf(one, sizeof(one), "%.*s", (int)TR_MIN(len, sizeof(one) - 1), p);
            if (n++)
                tr_buf_adds(&expr, " OR ");
            text_expr(b, k, one, ix->opt.pn_case_insensitive, q->fuzzy_names, &expr);
            p = e ? e + 1 : p + len;
        }
        if (n && b->rc == 0)
            cond(b, "(%s)", expr.data);
        tr_buf_release(&expr);
        return;
    }
    }
}

static const char *from_clause(enum arc_level level)
{
    switch (level) {
    case ARC_LEVEL_PATIENT: return " FROM patients p";
    case ARC_LEVEL_STUDY: return " FROM studies s JOIN patients p ON p.pk = s.patient_pk";
    case ARC_LEVEL_SERIES:
        return " FROM series se JOIN studies s ON s.pk = se.study_pk"
               " JOIN patients p ON p.pk = s.patient_pk";
    default:
        return " FROM instances i JOIN series se ON se.pk = i.series_pk"
               " JOIN studies s ON s.pk = se.study_pk JOIN patients p ON p.pk = s.patient_pk";
    }
}

static const char *order_clause(enum arc_level level)
{
    switch (level) {
    case ARC_LEVEL_PATIENT: return " ORDER BY p.patient_name, p.pk";
    case ARC_LEVEL_STUDY: return " ORDER BY s.study_date DESC, s.study_time DESC, s.pk";
    case ARC_LEVEL_SERIES: return " ORDER BY s.pk, se.series_number, se.pk";
    default: return " ORDER BY se.pk, i.instance_number, i.pk";
    }
}

/* The WHERE clause of a query (matching keys at or above its level, visible sites). */
static int build_where(struct arc_index *ix, const struct arc_query *q, struct builder *b)
{
    for (size_t i = 0; q->keys && i < dcm_dataset_count(q->keys) && b->rc == 0; i++) {
        const struct dcm_element *e = dcm_dataset_at(q->keys, i);
        const struct key_def *k = key_def(e->tag);
        if (!k || k->level > q->level || e->vr == DCM_VR_SQ)
            continue;
        struct tr_buf v;
        tr_buf_init(&v, 1 << 16);
        if (dcm_element_get_string(q->keys, e, DCM_ALL_VALUES, &v) == 0 && v.len) {
            /* Universal matching: "*" alone matches everything, even empty values. */
            if (strcmp(v.data, "*") != 0)
                key_cond(b, ix, q, k, v.data);
        } else if (k->vr == DCM_VR_US && e->length >= 2) {
            int64_t n;
            if (dcm_element_get_int(e, 0, &n) == 0) {
                char text[24];
                snprintf(text, sizeof(text), "%lld", (long long)n);
                key_cond(b, ix, q, k, text);
            }
        }
        tr_buf_release(&v);
    }
    if (q->sites && b->rc == 0) {
        struct tr_buf in;
        tr_buf_init(&in, 1 << 16);
        int n = 0;
        for (const char *const *s = q->sites; *s; s++)
            tr_buf_addf(&in, "%s$%d", n++ ? ", " : "", add_param(b, *s));
        if (n)
            /* Not through the (site, ...) index in SQLite: without statistics it takes an
             * equality on it for selective and walked every patient of the site and their
             * studies (10 ms for a month of StudyDate at 1 M instances) instead of the index
             * of the key asked for (0.8 ms). An SQLite archive is one node with a few sites;
             * PostgreSQL, where many sites share an index, plans from statistics. */
            cond(b, "{NOIDX}p.site IN (%s)", in.data);
        else
            cond(b, "1 = 0"); /* no visible site: nothing */
        tr_buf_release(&in);
    }
    if (q->patients && b->rc == 0) {
        struct tr_buf any;
        tr_buf_init(&any, 1 << 20);
        for (size_t i = 0; i < q->npatients; i++) {
            int ps = add_param(b, q->patients[i].site);
            int pp = add_param(b, q->patients[i].patient_id);
            tr_buf_addf(&any, "%s(p.site = $%d AND p.patient_id = $%d)", i ? " OR " : "", ps, pp);
        }
        if (q->npatients)
            cond(b, "(%s)", any.data);
        else
            cond(b, "1 = 0"); /* no patient visible */
        tr_buf_release(&any);
    }
    return b->rc;
}

static void builder_release(struct builder *b)
{
    tr_buf_release(&b->where);
    for (int i = 0; i < b->nparams; i++)
        tr_free(b->params[i]);
}

/* ---- C-FIND / QIDO ------------------------------------------------------------------------ */

/* snprintf(out, size, "%s", text) without its cost (twice per match). */
static void copy_text(char *out, size_t size, const char *text)
{
    size_t n = strnlen(text, size - 1);
    memcpy(out, text, n);
    out[n] = '\0';
}

static bool is_ascii(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] >= 0x80 || s[i] == 0x1B)
            return false;
    }
    return true;
}

static void put_value(struct dcm_dataset *ds, const struct key_def *k, struct db_stmt *st,
                      int col)
{
    if (db_column_is_null(st, col)) {
        dcm_dataset_set_empty(ds, k->tag, k->vr);
        return;
    }
    if (k->vr == DCM_VR_US) {
        dcm_dataset_set_int(ds, k->tag, DCM_VR_US, db_column_int64(st, col));
        return;
    }
    const char *text = db_column_text(st, col);
    size_t len = strlen(text);
    /* ASCII goes in as it is: dcm_dataset_set_string would store the same bytes when they
     * pass its checks, and they are stored as received when they do not; its checks were
     * most of the time a match took to build (bench/README.md, scale.py). Other text is
     * UTF-8, which set_string declares (Specific Character Set). */
    if (!len)
        dcm_dataset_set_empty(ds, k->tag, k->vr);
    else if (is_ascii(text, len) || dcm_dataset_set_string(ds, k->tag, k->vr, text) < 0)
        dcm_dataset_set_bytes(ds, k->tag, k->vr, text, len); /* stored as received */
}

int arc_index_query(struct arc_index *ix, const struct arc_query *q,
                    int (*on_match)(void *ctx, const struct arc_match *m), void *ctx,
                    struct tr_error *err)
{
    if (q->level < ARC_LEVEL_PATIENT || q->level > ARC_LEVEL_IMAGE)
        return tr_error_set(err, TR_EINVAL, "unknown query level");
    struct builder b = {.err = err};
    tr_buf_init(&b.where, 1 << 20);
    /* Columns: every known key at or above the level, then the site and a representative
     * object key. */
    const struct key_def *cols[TR_ARRAY_SIZE(key_defs)];
    bool wanted[TR_ARRAY_SIZE(key_defs)];
    size_t ncols = 0;
    struct tr_buf sql;
    tr_buf_init(&sql, 1 << 20);
    tr_buf_adds(&sql, "SELECT ");
    for (size_t i = 0; i < TR_ARRAY_SIZE(key_defs); i++) {
        if (key_defs[i].level > q->level)
            continue;
        /* Only the keys asked for (all of them without an identifier) are selected: a count
         * not asked for is not computed (the patient-level ones are three correlated
         * subqueries per match, bench/README.md, scale.py, item 3), a column not asked for
         * not read. */
        bool want = !q->keys || dcm_dataset_get(q->keys, key_defs[i].tag);
        tr_buf_addf(&sql, "%s%s", ncols ? ", " : "", want ? key_defs[i].column : "NULL");
        wanted[ncols] = want;
        cols[ncols++] = &key_defs[i];
    }
    const char *rep = q->level == ARC_LEVEL_IMAGE    ? "i.object_key"
                      : q->level == ARC_LEVEL_SERIES ? "se.rep_key"
                      : q->level == ARC_LEVEL_STUDY  ? "s.rep_key"
                                                     : "(SELECT x.rep_key FROM studies x WHERE "
                                                       "x.patient_pk = p.pk LIMIT 1)";
    tr_buf_addf(&sql, ", p.site, %s", rep);
    tr_buf_adds(&sql, from_clause(q->level));
    int rc = build_where(ix, q, &b);
    unsigned limit = q->limit && q->limit < ix->opt.max_matches ? q->limit : ix->opt.max_matches;
    if (rc == 0) {
        tr_buf_adds(&sql, b.where.data ? b.where.data : "");
        tr_buf_adds(&sql, order_clause(q->level));
        tr_buf_addf(&sql, " LIMIT %u OFFSET %u", limit, q->offset);
    }
    struct db *db = NULL;
    struct db_stmt *st = NULL;
    if (rc == 0)
        rc = ix_acquire(ix, &db, err);
    if (rc == 0)
        rc = db_prepare_temp(db, sql.data, &st, err);
    for (int i = 0; rc == 0 && i < b.nparams; i++)
        db_bind_text(st, i + 1, b.params[i]);
    int matches = 0;
    while (rc == 0) {
        int r = db_step(st, err);
        if (r <= 0) {
            rc = r;
            break;
        }
        struct arc_match m = {0};
        m.attrs = dcm_dataset_new();
        if (!m.attrs) {
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
            break;
        }
        for (size_t c = 0; c < ncols; c++) {
            if (wanted[c])
                put_value(m.attrs, cols[c], st, (int)c);
        }
        copy_text(m.site, sizeof(m.site), db_column_text(st, (int)ncols));
        copy_text(m.object_key, sizeof(m.object_key), db_column_text(st, (int)ncols + 1));
        matches++;
        int stop = on_match(ctx, &m);
        dcm_dataset_free(m.attrs);
        if (stop < 0)
            break;
    }
    db_finalize(st);
    if (db)
        ix_release(ix, db);
    builder_release(&b);
    tr_buf_release(&sql);
    return rc < 0 ? rc : matches;
}

int arc_index_instances(struct arc_index *ix, const struct arc_query *q,
                        struct arc_instance_ref **list, size_t *count, struct tr_error *err)
{
    *list = NULL;
    *count = 0;
    struct builder b = {.err = err};
    tr_buf_init(&b.where, 1 << 20);
    struct arc_query all = *q;
    all.level = ARC_LEVEL_IMAGE;
    /* Keys below the query level do not restrict a retrieval (PS3.4 C.4.2.2.1). */
    struct dcm_dataset *keys = NULL;
    if (q->keys && q->level < ARC_LEVEL_IMAGE) {
        keys = dcm_dataset_copy(q->keys, err);
        if (!keys) {
            builder_release(&b);
            return TR_ENOMEM;
        }
        for (size_t i = 0; i < TR_ARRAY_SIZE(key_defs); i++) {
            if (key_defs[i].level > q->level)
                dcm_dataset_remove(keys, key_defs[i].tag);
        }
        all.keys = keys;
    }
    int rc = build_where(ix, &all, &b);
    struct tr_buf sql;
    tr_buf_init(&sql, 1 << 20);
    tr_buf_adds(&sql, "SELECT i.sop_class, i.sop_uid, i.transfer_syntax, i.object_key, "
                      "s.study_uid, se.series_uid, i.size, s.site");
    tr_buf_adds(&sql, from_clause(ARC_LEVEL_IMAGE));
    tr_buf_adds(&sql, b.where.data ? b.where.data : "");
    tr_buf_adds(&sql, " ORDER BY s.pk, se.series_number, se.pk, i.instance_number, i.pk");
    struct db *db = NULL;
    struct db_stmt *st = NULL;
    if (rc == 0)
        rc = ix_acquire(ix, &db, err);
    if (rc == 0)
        rc = db_prepare_temp(db, sql.data, &st, err);
    for (int i = 0; rc == 0 && i < b.nparams; i++)
        db_bind_text(st, i + 1, b.params[i]);
    size_t n = 0, cap = 0;
    struct arc_instance_ref *refs = NULL;
    while (rc == 0) {
        int r = db_step(st, err);
        if (r <= 0) {
            rc = r;
            break;
        }
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            struct arc_instance_ref *p = tr_reallocarray(refs, ncap, sizeof(*p));
            if (!p) {
                rc = tr_error_set(err, TR_ENOMEM, "out of memory");
                break;
            }
            refs = p;
            cap = ncap;
        }
        struct arc_instance_ref *ref = &refs[n++];
        memset(ref, 0, sizeof(*ref));
        snprintf(ref->sop_class, sizeof(ref->sop_class), "%s", db_column_text(st, 0));
        snprintf(ref->sop_uid, sizeof(ref->sop_uid), "%s", db_column_text(st, 1));
        snprintf(ref->transfer_syntax, sizeof(ref->transfer_syntax), "%s", db_column_text(st, 2));
        snprintf(ref->object_key, sizeof(ref->object_key), "%s", db_column_text(st, 3));
        snprintf(ref->study_uid, sizeof(ref->study_uid), "%s", db_column_text(st, 4));
        snprintf(ref->series_uid, sizeof(ref->series_uid), "%s", db_column_text(st, 5));
        ref->size = (uint64_t)db_column_int64(st, 6);
        snprintf(ref->site, sizeof(ref->site), "%s", db_column_text(st, 7));
    }
    db_finalize(st);
    if (db)
        ix_release(ix, db);
    builder_release(&b);
    tr_buf_release(&sql);
    dcm_dataset_free(keys);
    if (rc < 0) {
        tr_free(refs);
        return rc;
    }
    *list = refs;
    *count = n;
    return 0;
}
