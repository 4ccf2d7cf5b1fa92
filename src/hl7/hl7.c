/*
 * hl7.c - HL7 v2 messages: the parser (segments and fields, HL7 v2.5.1 section 2.5-2.7), the
 * addressing of repetitions, components and subcomponents, escape sequences (2.7.4), character
 * sets (MSH-18), and the writer. See hl7.h.
 *
 * The parser is one bounded pass over a private copy of the bytes: segments are split at CR, LF
 * or CR LF, fields at the field separator; deeper levels are split when addressed (they cannot
 * hold a field separator, so a field's wire form is all the tree keeps).
 */
#include "common.h"
#include "hl7.h"

#include <stdarg.h>

#define NOT_FROM_INPUT SIZE_MAX /* offset of a field set by hl7_set */
#define MAX_INDEX      1000000u /* largest number in a path */

struct field {
    const char *raw; /* wire form; not NUL-terminated */
    size_t len;
    size_t offset; /* in the parsed message, or NOT_FROM_INPUT */
};

struct segment {
    char name[4];
    bool header; /* MSH, BHS, FHS: field 1 is the separator, field 2 the encoding */
    size_t offset;
    size_t nfields, cap; /* fields[1..nfields]; fields[0] unused */
    struct field *fields;
};

struct hl7_message {
    struct tr_arena arena;
    struct hl7_encoding enc;
    char enc_text[6]; /* MSH-2 as sent */
    enum hl7_charset charset;
    struct segment *seg;
    size_t nseg, capseg;
    struct hl7_limits lim;
};

void hl7_encoding_default(struct hl7_encoding *enc)
{
    *enc = (struct hl7_encoding){'|', '^', '~', '\\', '&', 0};
}

void hl7_limits_init(struct hl7_limits *lim)
{
    lim->max_message = (size_t)16 << 20;
    lim->max_segments = 100000;
    lim->max_fields = 1000;
    lim->max_field = lim->max_message;
    lim->flags = 0;
}

const struct hl7_encoding *hl7_message_encoding(const struct hl7_message *m)
{
    return &m->enc;
}

enum hl7_charset hl7_message_charset(const struct hl7_message *m)
{
    return m->charset;
}

/* ---- character sets ---------------------------------------------------------------------- */

/* ISO 8859-15 differs from 8859-1 in eight places. */
static const struct {
    uint8_t byte;
    uint16_t cp;
} latin9_diff[] = {
    {0xA4, 0x20AC}, {0xA6, 0x0160}, {0xA8, 0x0161}, {0xB4, 0x017D},
    {0xB8, 0x017E}, {0xBC, 0x0152}, {0xBD, 0x0153}, {0xBE, 0x0178},
};

static bool name_is(const char *a, const char *b)
{
    return strcasecmp(a, b) == 0;
}

enum hl7_charset hl7_charset_parse(const char *name)
{
    if (name_is(name, "ASCII"))
        return HL7_CHARSET_ASCII;
    if (name_is(name, "8859/1") || name_is(name, "ISO-8859-1") || name_is(name, "ISO_8859-1") ||
        name_is(name, "LATIN1"))
        return HL7_CHARSET_LATIN1;
    if (name_is(name, "8859/15") || name_is(name, "ISO-8859-15"))
        return HL7_CHARSET_LATIN9;
    if (name_is(name, "UNICODE UTF-8") || name_is(name, "UTF-8") || name_is(name, "UTF8"))
        return HL7_CHARSET_UTF8;
    return 0;
}

const char *hl7_charset_name(enum hl7_charset cs)
{
    switch (cs) {
    case HL7_CHARSET_ASCII: return "ASCII";
    case HL7_CHARSET_LATIN1: return "8859/1";
    case HL7_CHARSET_LATIN9: return "8859/15";
    case HL7_CHARSET_UTF8: return "UNICODE UTF-8";
    }
    return "";
}

/* One UTF-8 character at s (n > 0 bytes available): its length and code point, or 0 when the
 * bytes are not a valid, shortest-form, non-surrogate character. */
static size_t utf8_one(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
        return 0;
    *cp = v;
    return len;
}

/* Offset of the first invalid UTF-8 byte, or n when all are valid. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_one(s + i, n - i, &cp);
        if (!k)
            return i;
        i += k;
    }
    return n;
}

static int put_utf8(struct tr_buf *out, uint32_t cp)
{
    char b[4];
    size_t n;
    if (cp < 0x80) {
        b[0] = (char)cp, n = 1;
    } else if (cp < 0x800) {
        b[0] = (char)(0xC0 | (cp >> 6)), b[1] = (char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
        b[0] = (char)(0xE0 | (cp >> 12)), b[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        b[2] = (char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
        b[0] = (char)(0xF0 | (cp >> 18)), b[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        b[2] = (char)(0x80 | ((cp >> 6) & 0x3F)), b[3] = (char)(0x80 | (cp & 0x3F)), n = 4;
    }
    return tr_buf_add(out, b, n);
}

/* Bytes in `cs` -> UTF-8 (invalid UTF-8 becomes U+FFFD; NUL is dropped). */
static int bytes_to_utf8(enum hl7_charset cs, const unsigned char *s, size_t n, struct tr_buf *out)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        unsigned char c = s[i];
        if (c == 0) {
            i++;
            continue;
        }
        if (c < 0x80) {
            size_t k = i;
            while (k < n && s[k] && s[k] < 0x80)
                k++;
            rc = tr_buf_add(out, s + i, k - i);
            i = k;
            continue;
        }
        if (cs == HL7_CHARSET_UTF8) {
            uint32_t cp;
            size_t k = utf8_one(s + i, n - i, &cp);
            if (k) {
                rc = tr_buf_add(out, s + i, k);
                i += k;
            } else {
                rc = put_utf8(out, 0xFFFD);
                i++;
            }
            continue;
        }
        uint32_t cp = c; /* 8859/1 (and stray high bytes in ASCII) */
        if (cs == HL7_CHARSET_LATIN9) {
            for (size_t d = 0; d < TR_ARRAY_SIZE(latin9_diff); d++)
                if (latin9_diff[d].byte == c)
                    cp = latin9_diff[d].cp;
        }
        rc = put_utf8(out, cp);
        i++;
    }
    return rc;
}

/* ---- escape sequences (2.7.4) ------------------------------------------------------------ */

static bool is_separator(const struct hl7_encoding *enc, char c)
{
    return c == enc->field || c == enc->component || c == enc->repetition || c == enc->subcomponent;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static bool all_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (hexval(s[i]) < 0)
            return false;
    return true;
}

/* ".sp 2", ".in -3": the optional signed number after a formatting command. */
static bool format_arg(const char *s, size_t n, long *value)
{
    size_t i = 0;
    while (i < n && s[i] == ' ')
        i++;
    bool neg = false;
    if (i < n && (s[i] == '+' || s[i] == '-'))
        neg = s[i++] == '-';
    long v = 0;
    size_t digits = 0;
    while (i < n && s[i] >= '0' && s[i] <= '9' && digits < 6) {
        v = v * 10 + (s[i++] - '0');
        digits++;
    }
    if (i != n || (digits == 0 && (neg || n > 0)))
        return false;
    *value = digits ? (neg ? -v : v) : 1;
    return true;
}

/* The bytes an escape sequence's content `c` (between the escape characters) stands for:
 * appended to out; false when it is no sequence we know. */
static bool escape_value(const struct hl7_encoding *enc, const char *c, size_t n,
                         struct tr_buf *out, int *rc)
{
    if (n == 0)
        return false;
    if (n == 1) {
        char v = 0;
        switch (c[0]) {
        case 'F': v = enc->field; break;
        case 'S': v = enc->component; break;
        case 'T': v = enc->subcomponent; break;
        case 'R': v = enc->repetition; break;
        case 'E': v = enc->escape; break;
        case 'P': v = enc->truncation; break;
        case 'H':
        case 'N': return true; /* highlighting on / off */
        default: return false;
        }
        if (!v)
            return false; /* \P\ without a truncation character */
        *rc = tr_buf_addc(out, v);
        return true;
    }
    switch (c[0]) {
    case 'X':
        if ((n - 1) % 2 || !all_hex(c + 1, n - 1))
            return false;
        for (size_t i = 1; i + 1 < n && *rc == 0; i += 2)
            *rc = tr_buf_addc(out, (char)(hexval(c[i]) * 16 + hexval(c[i + 1])));
        return true;
    case 'C': /* \Cxxyy\ single-byte, \Mxxyyzz\ multi-byte character set switches */
        return n == 5 && all_hex(c + 1, 4);
    case 'M': return (n == 5 || n == 7) && all_hex(c + 1, n - 1);
    case 'Z': return true; /* locally defined */
    case '.': {
        long arg;
        if (n == 3 && memcmp(c, ".br", 3) == 0) {
            *rc = tr_buf_addc(out, '\n');
            return true;
        }
        if (n < 3 || !format_arg(c + 3, n - 3, &arg))
            return false;
        if (memcmp(c, ".sp", 3) == 0) {
            if (arg < 0)
                return false;
            for (long i = 0; i < TR_MIN(arg, 100L) && *rc == 0; i++)
                *rc = tr_buf_addc(out, '\n');
            return true;
        }
        if ((memcmp(c, ".fi", 3) == 0 || memcmp(c, ".nf", 3) == 0 || memcmp(c, ".ce", 3) == 0) &&
            n == 3)
            return true;
        return memcmp(c, ".in", 3) == 0 || memcmp(c, ".ti", 3) == 0 || memcmp(c, ".sk", 3) == 0;
    }
    default: return false;
    }
}

/* Resolve the escapes of wire-form bytes into bytes of the message's character set (separators
 * in `raw` are kept as they are). Strict: an escape character that starts no known, complete
 * sequence is an error at *bad; otherwise it is literal. */
static int unescape(const struct hl7_encoding *enc, const char *raw, size_t len, bool strict,
                    struct tr_buf *out, size_t *bad)
{
    int rc = 0;
    size_t i = 0;
    while (i < len && rc == 0) {
        size_t k = i;
        while (k < len && raw[k] != enc->escape)
            k++;
        if (k > i && (rc = tr_buf_add(out, raw + i, k - i)) < 0)
            return rc;
        if (k == len)
            break;
        /* raw[k] is the escape character: find its end, before any separator. */
        size_t e = k + 1;
        while (e < len && raw[e] != enc->escape && !is_separator(enc, raw[e]))
            e++;
        if (e < len && raw[e] == enc->escape &&
            escape_value(enc, raw + k + 1, e - k - 1, out, &rc)) {
            i = e + 1;
            continue;
        }
        if (strict) {
            *bad = k;
            return TR_EFORMAT;
        }
        rc = tr_buf_addc(out, enc->escape);
        i = k + 1;
    }
    return rc;
}

int hl7_decode(const struct hl7_encoding *enc, enum hl7_charset cs, const char *raw, size_t len,
               struct tr_buf *out, struct tr_error *err)
{
    struct tr_buf bytes;
    tr_buf_init(&bytes, out->max);
    size_t bad = 0;
    int rc = unescape(enc, raw, len, false, &bytes, &bad);
    if (rc == 0)
        rc = bytes_to_utf8(cs, (const unsigned char *)bytes.data, bytes.len, out);
    tr_buf_release(&bytes);
    if (rc == TR_ELIMIT)
        return tr_error_set(err, rc, "HL7 value longer than %zu bytes", out->max);
    if (rc < 0)
        return tr_error_set(err, rc, "out of memory");
    return 0;
}

static int escape_byte(const struct hl7_encoding *enc, unsigned char c, struct tr_buf *out)
{
    char e = enc->escape;
    char code = 0;
    if (c == (unsigned char)enc->field)
        code = 'F';
    else if (c == (unsigned char)enc->component)
        code = 'S';
    else if (c == (unsigned char)enc->subcomponent)
        code = 'T';
    else if (c == (unsigned char)enc->repetition)
        code = 'R';
    else if (c == (unsigned char)enc->escape)
        code = 'E';
    else if (enc->truncation && c == (unsigned char)enc->truncation)
        code = 'P';
    if (code)
        return tr_buf_addf(out, "%c%c%c", e, code, e);
    if (c == '\n' && !is_separator(enc, '.'))
        return tr_buf_addf(out, "%c.br%c", e, e); /* (with '.' a separator, \X0A\ below) */
    if ((c < 0x20 && c != '\t') || c == 0x7F)
        return tr_buf_addf(out, "%cX%02X%c", e, c, e);
    return tr_buf_addc(out, (char)c);
}

int hl7_encode(const struct hl7_encoding *enc, enum hl7_charset cs, const char *text, size_t len,
               struct tr_buf *out, struct tr_error *err)
{
    const unsigned char *s = (const unsigned char *)text;
    int rc = 0;
    if (len == 2 && text[0] == '"' && text[1] == '"') {
        /* The text "" is not the null value "" (2.5.3): escape one quote. */
        rc = tr_buf_addf(out, "%cX22%c", enc->escape, enc->escape);
        s += 1, len -= 1;
    }
    for (size_t i = 0; i < len && rc == 0;) {
        uint32_t cp;
        size_t k = utf8_one(s + i, len - i, &cp);
        if (!k)
            return tr_error_set(err, TR_ECHARSET, "HL7 value: invalid UTF-8 at byte %zu", i);
        if (cp < 0x80) {
            rc = escape_byte(enc, (unsigned char)cp, out);
        } else if (cs == HL7_CHARSET_UTF8) {
            rc = tr_buf_add(out, s + i, k);
        } else {
            int byte = -1;
            if (cs == HL7_CHARSET_LATIN1 && cp <= 0xFF)
                byte = (int)cp;
            if (cs == HL7_CHARSET_LATIN9) {
                bool replaced = false;
                for (size_t d = 0; d < TR_ARRAY_SIZE(latin9_diff); d++) {
                    if (latin9_diff[d].cp == cp)
                        byte = latin9_diff[d].byte;
                    if (latin9_diff[d].byte == cp)
                        replaced = true;
                }
                if (byte < 0 && cp <= 0xFF && !replaced)
                    byte = (int)cp;
            }
            if (byte < 0)
                return tr_error_set(err, TR_ECHARSET,
                                    "HL7 value: U+%04X cannot be written in "
                                    "character set %s",
                                    (unsigned)cp, hl7_charset_name(cs));
            rc = tr_buf_addc(out, (char)byte);
        }
        i += k;
    }
    if (rc == TR_ELIMIT)
        return tr_error_set(err, rc, "HL7 value longer than %zu bytes", out->max);
    if (rc < 0)
        return tr_error_set(err, rc, "out of memory");
    return 0;
}

/* ---- parsing ----------------------------------------------------------------------------- */

static bool valid_separator(unsigned char c)
{
    return c > 0x20 && c < 0x7F &&
           !((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'));
}

static bool valid_name(const char *s, size_t n)
{
    if (n != 3 || !(s[0] >= 'A' && s[0] <= 'Z'))
        return false;
    for (size_t i = 1; i < 3; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9')))
            return false;
    return true;
}

static bool is_header(const char *name)
{
    return !strcmp(name, "MSH") || !strcmp(name, "BHS") || !strcmp(name, "FHS");
}

/* Printable text of untrusted bytes for a message (at most 16 characters). */
static const char *shown(const char *s, size_t n, char *out, size_t size)
{
    size_t k = 0;
    for (size_t i = 0; i < n && i < 16 && k + 1 < size; i++)
        out[k++] = (s[i] >= 0x20 && s[i] < 0x7F && s[i] != '"') ? s[i] : '?';
    out[k] = '\0';
    return out;
}

/* Which segment and field hold byte `offset` of the input (for error messages). */
static void locate(const struct hl7_message *m, size_t offset, size_t *segment, size_t *field)
{
    *segment = 0, *field = 0;
    for (size_t i = 0; i < m->nseg && m->seg[i].offset <= offset; i++) {
        *segment = i;
        *field = 0;
        for (size_t f = 1; f <= m->seg[i].nfields; f++)
            if (m->seg[i].fields[f].offset <= offset)
                *field = f;
    }
}

static int error_at(const struct hl7_message *m, struct tr_error *err, int code, size_t offset,
                    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static int error_at(const struct hl7_message *m, struct tr_error *err, int code, size_t offset,
                    const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    size_t s, f;
    locate(m, offset, &s, &f);
    if (m->nseg == 0)
        return tr_error_set(err, code, "HL7 byte %zu: %s", offset, why);
    if (f == 0)
        return tr_error_set(err, code, "HL7 segment %zu (%s), byte %zu: %s", s + 1, m->seg[s].name,
                            offset, why);
    return tr_error_set(err, code, "HL7 segment %zu (%s) field %zu, byte %zu: %s", s + 1,
                        m->seg[s].name, f, offset, why);
}

static struct hl7_message *message_alloc(size_t block)
{
    struct hl7_message *m = tr_calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    tr_arena_init(&m->arena, block);
    hl7_limits_init(&m->lim);
    return m;
}

void hl7_message_free(struct hl7_message *m)
{
    if (!m)
        return;
    tr_arena_release(&m->arena);
    tr_free(m->seg);
    tr_free(m);
}

static struct segment *segment_append(struct hl7_message *m)
{
    if (m->nseg == m->capseg) {
        size_t cap = m->capseg ? m->capseg * 2 : 16;
        struct segment *s = tr_reallocarray(m->seg, cap, sizeof(*s));
        if (!s)
            return NULL;
        m->seg = s;
        m->capseg = cap;
    }
    struct segment *s = &m->seg[m->nseg++];
    memset(s, 0, sizeof(*s));
    return s;
}

/* One segment: s[0..n) at `offset` in the input (no CR / LF inside). */
static int parse_segment(struct hl7_message *m, const char *s, size_t n, size_t offset,
                         struct tr_error *err)
{
    char sep = m->enc.field;
    char tmp[20];
    if (m->nseg >= m->lim.max_segments)
        return error_at(m, err, TR_ELIMIT, offset, "more than %zu segments", m->lim.max_segments);
    size_t name_len = 0;
    while (name_len < n && s[name_len] != sep)
        name_len++;
    if (!valid_name(s, name_len))
        return tr_error_set(err, TR_EFORMAT,
                            "HL7 segment %zu, byte %zu: segment name \"%s\" is "
                            "not three upper-case letters or digits",
                            m->nseg + 1, offset, shown(s, name_len, tmp, sizeof(tmp)));
    struct segment *seg = segment_append(m);
    if (!seg)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    memcpy(seg->name, s, 3);
    seg->offset = offset;
    seg->header = is_header(seg->name);
    size_t pos = 3, first = 1;
    size_t count = 0;
    for (size_t i = 3; i < n; i++)
        count += s[i] == sep;
    if (seg->header) {
        /* MSH-1 is the separator itself, MSH-2 runs to the next separator. */
        size_t e = 4;
        while (e < n && s[e] != sep)
            e++;
        if (n < 4 || e - 4 != strlen(m->enc_text) || memcmp(s + 4, m->enc_text, e - 4) != 0)
            return error_at(m, err, TR_EFORMAT, offset,
                            "%s has other separators than the "
                            "message's first header (%c%s)",
                            seg->name, sep, m->enc_text);
        count += 1; /* MSH-2 has no separator of its own */
    }
    if (count > m->lim.max_fields)
        return error_at(m, err, TR_ELIMIT, offset, "more than %zu fields", m->lim.max_fields);
    seg->fields = tr_arena_calloc(&m->arena, count + 1, sizeof(*seg->fields));
    if (!seg->fields)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    seg->cap = count;
    seg->nfields = 0; /* grows as fields are filled, so that errors locate the right one */
    if (seg->header) {
        seg->fields[1] = (struct field){s + 3, 1, offset + 3};
        size_t e = 4;
        while (e < n && s[e] != sep)
            e++;
        seg->fields[2] = (struct field){s + 4, e - 4, offset + 4};
        seg->nfields = 2;
        pos = e;
        first = 3;
    }
    for (size_t f = first; f <= count; f++) {
        /* s[pos] is the separator before field f. */
        size_t b = pos + 1, e = b;
        while (e < n && s[e] != sep)
            e++;
        seg->fields[f] = (struct field){s + b, e - b, offset + b};
        seg->nfields = f;
        if (e - b > m->lim.max_field)
            return error_at(m, err, TR_ELIMIT, offset + b, "field longer than %zu bytes",
                            m->lim.max_field);
        pos = e;
    }
    return 0;
}

static int check_charset(struct hl7_message *m, const unsigned char *data, size_t len,
                         struct tr_error *err)
{
    const char *raw = NULL;
    size_t n = 0;
    struct hl7_path p = {"MSH", 1, 18, 1, 1, 0};
    long msh = hl7_segment_find(m, "MSH", 1); /* a batch's first message header */
    int presence = hl7_get_raw(m, &p, &raw, &n);
    char name[64] = "";
    if (presence == HL7_VALUE) {
        /* Escapes resolved: with '/' as a separator, 8859/1 is sent as 8859\S\1. */
        struct tr_buf b;
        tr_buf_init(&b, sizeof(name) * 4);
        if (hl7_decode(&m->enc, HL7_CHARSET_LATIN1, raw, TR_MIN(n, sizeof(name)), &b, NULL) == 0)
            snprintf(name, sizeof(name), "%s", b.data ? b.data : "");
        tr_buf_release(&b);
    }
    if (!name[0]) {
        m->charset = utf8_invalid_at(data, len) == len ? HL7_CHARSET_UTF8 : HL7_CHARSET_LATIN1;
        return 0;
    }
    m->charset = hl7_charset_parse(name);
    char tmp[20];
    if (!m->charset)
        return error_at(m, err, TR_EUNSUPPORTED, m->seg[msh].fields[18].offset,
                        "character set "
                        "\"%s\" is not supported (ASCII, 8859/1, 8859/15, UNICODE UTF-8)",
                        shown(name, strlen(name), tmp, sizeof(tmp)));
    if (m->charset == HL7_CHARSET_ASCII) {
        for (size_t i = 0; i < len; i++)
            if (data[i] >= 0x80)
                return error_at(m, err, TR_ECHARSET, i,
                                "byte 0x%02X is not ASCII, the character "
                                "set MSH-18 names",
                                data[i]);
    } else if (m->charset == HL7_CHARSET_UTF8) {
        size_t bad = utf8_invalid_at(data, len);
        if (bad < len)
            return error_at(m, err, TR_ECHARSET, bad, "invalid UTF-8 (MSH-18 is %s)", name);
    }
    return 0;
}

static int check_escapes(struct hl7_message *m, struct tr_error *err)
{
    struct tr_buf scratch;
    tr_buf_init(&scratch, SIZE_MAX / 2);
    int rc = 0;
    for (size_t s = 0; s < m->nseg && rc == 0; s++) {
        for (size_t f = m->seg[s].header ? 3 : 1; f <= m->seg[s].nfields && rc == 0; f++) {
            const struct field *fl = &m->seg[s].fields[f];
            size_t bad = 0;
            tr_buf_reset(&scratch);
            rc = unescape(&m->enc, fl->raw, fl->len, true, &scratch, &bad);
            if (rc == TR_EFORMAT)
                rc = error_at(m, err, rc, fl->offset + bad,
                              "escape character that starts no "
                              "complete escape sequence (write it as %cE%c)",
                              m->enc.escape, m->enc.escape);
            else if (rc < 0)
                rc = tr_error_set(err, rc, "out of memory");
        }
    }
    tr_buf_release(&scratch);
    return rc;
}

int hl7_parse(const void *data, size_t len, const struct hl7_limits *lim, struct hl7_message **out,
              struct tr_error *err)
{
    struct hl7_limits defaults;
    if (!lim) {
        hl7_limits_init(&defaults);
        lim = &defaults;
    }
    const unsigned char *p = data;
    size_t skip = 0;
    if (!data || len == 0)
        return tr_error_set(err, TR_ETRUNCATED, "HL7 message is empty");
    if (len > lim->max_message)
        return tr_error_set(err, TR_ELIMIT, "HL7 message of %zu bytes is over the cap of %zu", len,
                            lim->max_message);
    if (len >= 3 && p[0] == 0xEF && p[1] == 0xBB && p[2] == 0xBF)
        skip = 3;
    const char *s = (const char *)p + skip;
    size_t n = len - skip;
    char tmp[20];
    bool header_prefix = !memcmp(s, "MSH", TR_MIN(n, 3)) || !memcmp(s, "BHS", TR_MIN(n, 3)) ||
                         !memcmp(s, "FHS", TR_MIN(n, 3));
    if (n < 8 && header_prefix && !memchr(s, '\r', n) && !memchr(s, '\n', n))
        return tr_error_set(err, TR_ETRUNCATED,
                            "HL7 message of %zu bytes ends before its "
                            "header (MSH|^~\\&) does",
                            len);
    if (n < 8 || (memcmp(s, "MSH", 3) != 0 && memcmp(s, "BHS", 3) != 0 && memcmp(s, "FHS", 3) != 0))
        return tr_error_set(err, TR_EFORMAT,
                            "HL7 byte %zu: the message starts with \"%s\", not "
                            "with an MSH segment",
                            skip, shown(s, TR_MIN(n, 3), tmp, sizeof(tmp)));
    /* 2.5.1 MSH-1 and MSH-2: the separators. */
    struct hl7_encoding enc = {0};
    enc.field = s[3];
    size_t e = 4;
    while (e < n && s[e] != enc.field && s[e] != '\r' && s[e] != '\n')
        e++;
    size_t nenc = e - 4;
    if (!valid_separator((unsigned char)enc.field))
        return tr_error_set(err, TR_EFORMAT,
                            "HL7 segment 1 (%.3s) field 1, byte %zu: byte 0x%02X "
                            "cannot be the field separator",
                            s, skip + 3, (unsigned char)enc.field);
    if (nenc < 4 || nenc > 5)
        return tr_error_set(err, TR_EFORMAT,
                            "HL7 segment 1 (%.3s) field 2, byte %zu: the "
                            "encoding characters \"%s\" are not 4 (component, repetition, escape, "
                            "subcomponent) or 5 (and truncation)",
                            s, skip + 4, shown(s + 4, nenc, tmp, sizeof(tmp)));
    char chars[6] = {enc.field};
    for (size_t i = 0; i < nenc; i++) {
        if (!valid_separator((unsigned char)s[4 + i]) || memchr(chars, s[4 + i], i + 1))
            return tr_error_set(err, TR_EFORMAT,
                                "HL7 segment 1 (%.3s) field 2, byte %zu: "
                                "encoding character %zu (0x%02X) is repeated or not a visible "
                                "punctuation character",
                                s, skip + 4 + i, i + 1, (unsigned char)s[4 + i]);
        chars[i + 1] = s[4 + i];
    }
    enc.component = s[4], enc.repetition = s[5], enc.escape = s[6], enc.subcomponent = s[7];
    enc.truncation = nenc == 5 ? s[8] : 0;

    struct hl7_message *m = message_alloc(TR_MAX((size_t)16384, n / 4 + 1024));
    if (!m)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    m->lim = *lim;
    m->enc = enc;
    memcpy(m->enc_text, s + 4, nenc);
    char *copy = tr_arena_memdup(&m->arena, s, n);
    int rc = 0;
    if (!copy) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    /* Segments end at CR, LF or CR LF; offsets in messages count from the input's start. */
    for (size_t pos = 0; pos < n && rc == 0;) {
        size_t end = pos;
        while (end < n && copy[end] != '\r' && copy[end] != '\n')
            end++;
        if (end > pos)
            rc = parse_segment(m, copy + pos, end - pos, skip + pos, err);
        if (rc)
            goto out;
        for (size_t i = pos; i < end; i++) {
            unsigned char c = (unsigned char)copy[i];
            if (c == 0x00 || c == 0x0B || c == 0x1C) {
                rc = error_at(m, err, TR_EFORMAT, skip + i,
                              "byte 0x%02X is not allowed in a "
                              "message (escape it as %cX%02X%c)",
                              c, enc.escape, c, enc.escape);
                goto out;
            }
        }
        pos = end + ((end + 1 < n && copy[end] == '\r' && copy[end + 1] == '\n') ? 2 : 1);
    }
    rc = check_charset(m, (const unsigned char *)s, n, err);
    if (rc == 0 && (lim->flags & HL7_STRICT_ESCAPES))
        rc = check_escapes(m, err);
out:
    if (rc) {
        hl7_message_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

/* ---- building ---------------------------------------------------------------------------- */

struct hl7_message *hl7_message_new(const struct hl7_encoding *enc)
{
    struct hl7_message *m = message_alloc(4096);
    if (!m)
        return NULL;
    if (enc)
        m->enc = *enc;
    else
        hl7_encoding_default(&m->enc);
    size_t k = 0;
    m->enc_text[k++] = m->enc.component;
    m->enc_text[k++] = m->enc.repetition;
    m->enc_text[k++] = m->enc.escape;
    m->enc_text[k++] = m->enc.subcomponent;
    if (m->enc.truncation)
        m->enc_text[k++] = m->enc.truncation;
    m->charset = HL7_CHARSET_UTF8;
    if (hl7_segment_add(m, "MSH", NULL) < 0) {
        hl7_message_free(m);
        return NULL;
    }
    return m;
}

/* Make room for field `field` in segment s (new fields are empty). */
static int ensure_field(struct hl7_message *m, struct segment *s, size_t field)
{
    if (field <= s->nfields)
        return 0;
    if (field > m->lim.max_fields)
        return TR_ELIMIT;
    if (field > s->cap) {
        size_t cap = TR_MAX(field, s->cap * 2);
        cap = TR_MIN(cap, m->lim.max_fields);
        struct field *f = tr_arena_realloc(&m->arena, s->fields, (s->cap + 1) * sizeof(*f),
                                           (cap + 1) * sizeof(*f));
        if (!f)
            return TR_ENOMEM;
        s->fields = f;
        s->cap = cap;
    }
    for (size_t i = s->nfields + 1; i <= field; i++)
        s->fields[i] = (struct field){"", 0, NOT_FROM_INPUT};
    s->nfields = field;
    return 0;
}

long hl7_segment_add(struct hl7_message *m, const char *name, struct tr_error *err)
{
    char tmp[20];
    if (!name || !valid_name(name, strlen(name)))
        return tr_error_set(err, TR_EINVAL,
                            "HL7 segment name \"%s\" is not three upper-case "
                            "letters or digits",
                            name ? shown(name, strlen(name), tmp, 20) : "");
    if (m->nseg >= m->lim.max_segments)
        return tr_error_set(err, TR_ELIMIT, "HL7 message: more than %zu segments",
                            m->lim.max_segments);
    struct segment *s = segment_append(m);
    if (!s)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    memcpy(s->name, name, 4);
    s->header = is_header(name);
    s->offset = NOT_FROM_INPUT;
    if (s->header) {
        char *sep = tr_arena_memdup(&m->arena, &m->enc.field, 1);
        if (!sep || ensure_field(m, s, 2) < 0) {
            m->nseg--;
            return tr_error_set(err, TR_ENOMEM, "out of memory");
        }
        s->fields[1] = (struct field){sep, 1, NOT_FROM_INPUT};
        s->fields[2] = (struct field){m->enc_text, strlen(m->enc_text), NOT_FROM_INPUT};
    }
    return (long)(m->nseg - 1);
}

/* ---- the tree ---------------------------------------------------------------------------- */

size_t hl7_segment_count(const struct hl7_message *m)
{
    return m->nseg;
}

const char *hl7_segment_name(const struct hl7_message *m, size_t index)
{
    return index < m->nseg ? m->seg[index].name : NULL;
}

size_t hl7_field_count(const struct hl7_message *m, size_t segment)
{
    return segment < m->nseg ? m->seg[segment].nfields : 0;
}

const char *hl7_field_raw(const struct hl7_message *m, size_t segment, size_t field, size_t *len)
{
    if (segment >= m->nseg || field == 0 || field > m->seg[segment].nfields)
        return NULL;
    *len = m->seg[segment].fields[field].len;
    return m->seg[segment].fields[field].raw;
}

long hl7_segment_find(const struct hl7_message *m, const char *name, unsigned occurrence)
{
    unsigned seen = 0;
    for (size_t i = 0; i < m->nseg; i++)
        if (!strcmp(m->seg[i].name, name) && ++seen == occurrence)
            return (long)i;
    return -1;
}

/* ---- paths ------------------------------------------------------------------------------- */

static bool read_number(const char **p, unsigned *out)
{
    const char *s = *p;
    unsigned long v = 0;
    if (*s < '1' || *s > '9')
        return false;
    while (*s >= '0' && *s <= '9') {
        v = v * 10 + (unsigned long)(*s++ - '0');
        if (v > MAX_INDEX)
            return false;
    }
    *out = (unsigned)v;
    *p = s;
    return true;
}

int hl7_path_parse(const char *text, struct hl7_path *out, struct tr_error *err)
{
    memset(out, 0, sizeof(*out));
    const char *p = text;
    char tmp[20];
    if (!text || strlen(text) < 5 || !valid_name(text, 3))
        goto bad;
    memcpy(out->segment, text, 3);
    out->occurrence = 1;
    p += 3;
    if (*p == '[') {
        p++;
        if (!read_number(&p, &out->occurrence) || *p++ != ']')
            goto bad;
    }
    if (*p++ != '-' || !read_number(&p, &out->field))
        goto bad;
    if (*p == '[') {
        p++;
        if (!read_number(&p, &out->repetition) || *p++ != ']')
            goto bad;
    }
    if (*p == '.') {
        p++;
        if (!read_number(&p, &out->component))
            goto bad;
        if (*p == '.') {
            p++;
            if (!read_number(&p, &out->subcomponent))
                goto bad;
        }
    }
    if (*p)
        goto bad;
    return 0;
bad:
    return tr_error_set(err, TR_EINVAL, "\"%s\" is not an HL7 address such as PID-3[1].4.2",
                        text ? shown(text, strlen(text), tmp, sizeof(tmp)) : "");
}

/* The idx-th (1-based) piece of s[0..n) split at delim: false when there are fewer. */
static bool piece(const char *s, size_t n, char delim, unsigned idx, size_t *start, size_t *len)
{
    size_t b = 0;
    unsigned k = 1;
    for (size_t i = 0; i <= n; i++) {
        if (i == n || s[i] == delim) {
            if (k == idx) {
                *start = b;
                *len = i - b;
                return true;
            }
            k++;
            b = i + 1;
        }
    }
    return false;
}

static unsigned pieces(const char *s, size_t n, char delim)
{
    if (n == 0)
        return 0;
    unsigned k = 1;
    for (size_t i = 0; i < n; i++)
        k += s[i] == delim;
    return k;
}

int hl7_get_raw(const struct hl7_message *m, const struct hl7_path *path, const char **raw,
                size_t *len)
{
    *raw = NULL;
    *len = 0;
    long si = hl7_segment_find(m, path->segment, path->occurrence ? path->occurrence : 1);
    if (si < 0)
        return HL7_MISSING;
    const struct segment *s = &m->seg[si];
    if (path->field == 0 || path->field > s->nfields)
        return HL7_MISSING;
    const char *p = s->fields[path->field].raw;
    size_t n = s->fields[path->field].len;
    if (s->header && path->field <= 2) {
        if (path->repetition > 1 || path->component > 1 || path->subcomponent > 1)
            return HL7_MISSING;
    } else {
        size_t b, l;
        if (!piece(p, n, m->enc.repetition, path->repetition ? path->repetition : 1, &b, &l))
            return HL7_MISSING;
        p += b, n = l;
        if (path->component) {
            if (!piece(p, n, m->enc.component, path->component, &b, &l))
                return HL7_MISSING;
            p += b, n = l;
            if (path->subcomponent) {
                if (!piece(p, n, m->enc.subcomponent, path->subcomponent, &b, &l))
                    return HL7_MISSING;
                p += b, n = l;
            }
        }
    }
    *raw = p;
    *len = n;
    if (n == 0)
        return HL7_EMPTY;
    if (n == 2 && p[0] == '"' && p[1] == '"')
        return HL7_NULL;
    return HL7_VALUE;
}

int hl7_get_path(const struct hl7_message *m, const struct hl7_path *path, struct tr_buf *out,
                 struct tr_error *err)
{
    tr_buf_reset(out);
    const char *raw;
    size_t len;
    int presence = hl7_get_raw(m, path, &raw, &len);
    if (presence != HL7_VALUE)
        return presence;
    const struct segment *s =
        &m->seg[hl7_segment_find(m, path->segment, path->occurrence ? path->occurrence : 1)];
    if (s->header && path->field <= 2) {
        int rc = tr_buf_add(out, raw, len);
        return rc < 0 ? tr_error_set(err, rc, "HL7 value too long") : presence;
    }
    int rc = hl7_decode(&m->enc, m->charset, raw, len, out, err);
    return rc < 0 ? rc : presence;
}

int hl7_get(const struct hl7_message *m, const char *path, struct tr_buf *out, struct tr_error *err)
{
    struct hl7_path p;
    int rc = hl7_path_parse(path, &p, err);
    if (rc < 0)
        return rc;
    return hl7_get_path(m, &p, out, err);
}

int hl7_get_text(const struct hl7_message *m, const char *path, char *out, size_t size)
{
    if (size == 0)
        return TR_EINVAL;
    out[0] = '\0';
    struct tr_buf b;
    tr_buf_init(&b, TR_MAX(size * 2, (size_t)64));
    int rc = hl7_get(m, path, &b, NULL);
    if (rc == TR_ELIMIT) {
        /* Longer than we keep: decode a prefix of the wire form instead. */
        struct hl7_path p;
        const char *raw;
        size_t len;
        tr_buf_reset(&b);
        if (hl7_path_parse(path, &p, NULL) == 0 && hl7_get_raw(m, &p, &raw, &len) == HL7_VALUE &&
            hl7_decode(&m->enc, m->charset, raw, TR_MIN(len, size), &b, NULL) == 0)
            rc = HL7_VALUE;
    }
    if (rc == HL7_VALUE) {
        size_t n = TR_MIN(b.len, size - 1);
        /* Do not cut a UTF-8 character. */
        if (n < b.len)
            while (n > 0 && ((unsigned char)b.data[n] & 0xC0) == 0x80)
                n--;
        memcpy(out, b.data, n);
        out[n] = '\0';
    }
    tr_buf_release(&b);
    return rc;
}

unsigned hl7_count(const struct hl7_message *m, const char *text)
{
    struct hl7_path p;
    if (hl7_path_parse(text, &p, NULL) < 0)
        return 0;
    long si = hl7_segment_find(m, p.segment, p.occurrence);
    if (si < 0 || p.field > m->seg[si].nfields)
        return 0;
    const struct field *f = &m->seg[si].fields[p.field];
    if (m->seg[si].header && p.field <= 2)
        return f->len ? 1 : 0;
    if (!p.repetition && !p.component)
        return pieces(f->raw, f->len, m->enc.repetition);
    const char *raw;
    size_t len;
    if (hl7_get_raw(m, &p, &raw, &len) == HL7_MISSING)
        return 0;
    if (p.subcomponent)
        return len ? 1 : 0;
    if (p.component)
        return pieces(raw, len, m->enc.subcomponent);
    return pieces(raw, len, m->enc.component);
}

/* ---- setting ----------------------------------------------------------------------------- */

/* Replace b[lo, hi) by the bytes of (p, n): in a new buffer, swapped in. */
static int splice(struct tr_buf *b, size_t lo, size_t hi, const char *p, size_t n, char pad,
                  size_t npad)
{
    struct tr_buf t;
    tr_buf_init(&t, b->max);
    int rc = tr_buf_add(&t, b->data ? b->data : "", lo);
    for (size_t i = 0; i < npad && rc == 0; i++)
        rc = tr_buf_addc(&t, pad);
    if (rc == 0)
        rc = tr_buf_add(&t, p, n);
    if (rc == 0)
        rc = tr_buf_add(&t, (b->data ? b->data : "") + hi, b->len - hi);
    if (rc) {
        tr_buf_release(&t);
        return rc;
    }
    tr_buf_release(b);
    *b = t;
    return 0;
}

static int set_raw(struct hl7_message *m, const struct hl7_path *path, const char *raw, size_t len,
                   struct tr_error *err)
{
    long si = hl7_segment_find(m, path->segment, path->occurrence ? path->occurrence : 1);
    if (si < 0)
        return tr_error_set(err, TR_ENOTFOUND, "HL7 message has no %s segment number %u",
                            path->segment, path->occurrence ? path->occurrence : 1);
    struct segment *s = &m->seg[si];
    if (path->field == 0 || (s->header && path->field <= 2))
        return tr_error_set(err, TR_EINVAL, "%s-%u cannot be set", s->name, path->field);
    int rc = ensure_field(m, s, path->field);
    if (rc == TR_ELIMIT)
        return tr_error_set(err, rc, "HL7 segment %s: more than %zu fields", s->name,
                            m->lim.max_fields);
    if (rc)
        return tr_error_set(err, rc, "out of memory");
    struct field *f = &s->fields[path->field];
    struct tr_buf b;
    tr_buf_init(&b, m->lim.max_field);
    rc = tr_buf_add(&b, f->raw, f->len);
    size_t lo = 0, hi = f->len;
    const struct {
        char delim;
        unsigned idx;
    } levels[3] = {
        {m->enc.repetition, path->repetition ? path->repetition : 1},
        {m->enc.component, path->component},
        {m->enc.subcomponent, path->component ? path->subcomponent : 0},
    };
    for (int l = 0; l < 3 && rc == 0 && levels[l].idx; l++) {
        size_t start, plen;
        if (piece(b.data + lo, hi - lo, levels[l].delim, levels[l].idx, &start, &plen)) {
            lo += start;
            hi = lo + plen;
            continue;
        }
        unsigned have = pieces(b.data + lo, hi - lo, levels[l].delim);
        if (have == 0)
            have = 1; /* an empty span is one empty piece */
        size_t add = levels[l].idx - have;
        rc = splice(&b, hi, hi, "", 0, levels[l].delim, add);
        lo = hi = hi + add;
    }
    if (rc == 0)
        rc = splice(&b, lo, hi, raw, len, 0, 0);
    if (rc == 0) {
        char *copy = tr_arena_memdup(&m->arena, b.data ? b.data : "", b.len);
        if (!copy)
            rc = TR_ENOMEM;
        else
            *f = (struct field){copy, b.len, NOT_FROM_INPUT};
    }
    tr_buf_release(&b);
    if (rc == TR_ELIMIT)
        return tr_error_set(err, rc, "HL7 %s-%u would be longer than %zu bytes", s->name,
                            path->field, m->lim.max_field);
    if (rc)
        return tr_error_set(err, rc, "out of memory");
    return 0;
}

int hl7_set_raw(struct hl7_message *m, const struct hl7_path *path, const char *raw, size_t len,
                struct tr_error *err)
{
    const struct hl7_encoding *e = &m->enc;
    for (size_t i = 0; i < len; i++) {
        char c = raw[i];
        bool bad = c == '\r' || c == '\n' || c == e->field || c == e->repetition ||
                   (path->component && c == e->component) ||
                   (path->subcomponent && c == e->subcomponent);
        if (bad)
            return tr_error_set(err, TR_EINVAL,
                                "HL7 %s-%u: byte %zu of the value (0x%02X) is a "
                                "separator at this level",
                                path->segment, path->field, i, (unsigned char)c);
    }
    return set_raw(m, path, raw, len, err);
}

int hl7_set_path(struct hl7_message *m, const struct hl7_path *path, const char *value, size_t len,
                 struct tr_error *err)
{
    enum hl7_charset cs = 0;
    long si = hl7_segment_find(m, path->segment, path->occurrence ? path->occurrence : 1);
    bool charset = si == 0 && m->seg[0].header && path->field == 18 && path->repetition <= 1 &&
                   path->component <= 1 && path->subcomponent <= 1;
    if (charset) {
        char name[64];
        snprintf(name, sizeof(name), "%.*s", (int)TR_MIN(len, sizeof(name) - 1), value);
        cs = name[0] ? hl7_charset_parse(name) : HL7_CHARSET_UTF8;
        if (!cs)
            return tr_error_set(err, TR_EUNSUPPORTED,
                                "HL7 character set \"%s\" is not "
                                "supported",
                                name);
    }
    struct tr_buf b;
    tr_buf_init(&b, m->lim.max_field);
    int rc = hl7_encode(&m->enc, m->charset, value, len, &b, err);
    if (rc == 0)
        rc = set_raw(m, path, b.data ? b.data : "", b.len, err);
    tr_buf_release(&b);
    if (rc == 0 && charset)
        m->charset = cs;
    return rc;
}

int hl7_set(struct hl7_message *m, const char *path, const char *value, struct tr_error *err)
{
    struct hl7_path p;
    int rc = hl7_path_parse(path, &p, err);
    if (rc < 0)
        return rc;
    return hl7_set_path(m, &p, value ? value : "", value ? strlen(value) : 0, err);
}

/* ---- writing ----------------------------------------------------------------------------- */

int hl7_write(const struct hl7_message *m, struct tr_buf *out, struct tr_error *err)
{
    int rc = 0;
    for (size_t i = 0; i < m->nseg && rc == 0; i++) {
        const struct segment *s = &m->seg[i];
        rc = tr_buf_add(out, s->name, 3);
        size_t f = 1;
        if (s->header && s->nfields >= 2) {
            rc = rc ? rc : tr_buf_addc(out, m->enc.field);
            rc = rc ? rc : tr_buf_add(out, s->fields[2].raw, s->fields[2].len);
            f = 3;
        }
        for (; f <= s->nfields && rc == 0; f++) {
            rc = tr_buf_addc(out, m->enc.field);
            if (rc == 0)
                rc = tr_buf_add(out, s->fields[f].raw, s->fields[f].len);
        }
        if (rc == 0)
            rc = tr_buf_addc(out, '\r');
    }
    if (rc == TR_ELIMIT)
        return tr_error_set(err, rc, "HL7 message longer than %zu bytes", out->max);
    if (rc)
        return tr_error_set(err, rc, "out of memory");
    return 0;
}
