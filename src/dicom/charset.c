/*
 * charset.c - Specific Character Set (0008,0005): decoding text values to UTF-8 and encoding
 * UTF-8 back (PS3.3 C.12.1.1.2, PS3.5 6.1 and Annexes H, I, J, K). See charset.h.
 *
 * Model. Every character set that allows code extensions is handled as ISO 2022 (PS3.5
 * 6.1.2.5): a value starts in the initial state given by value 1 of (0008,0005) (G0 and G1
 * code elements, Tables C.12-2 to C.12-4), escape sequences designate another set into G0
 * or G1, and the delimiters of PS3.5 6.1.2.5.3 return to the initial state. Bytes below 0x80
 * are read in G0 and bytes from 0x80 in G1, so an escape that changes G0 leaves G1 alone and
 * the other way round. The stand-alone sets (ISO_IR 192, GB18030, GBK; Table C.12-5) have no
 * escapes: the whole value goes through one decoder.
 *
 * Reading is lenient and follows pydicom 2.3 and DCMTK where the standard leaves it open:
 *  - bytes that are invalid in the active set become U+FFFD (one per invalid character or
 *    maximal invalid UTF-8 subsequence); decoding never fails on content;
 *  - an escape sequence that is unknown, incomplete, or designates a set that (0008,0005)
 *    does not declare is not honoured: its ESC becomes U+FFFD, the value goes back to the
 *    initial state and the following bytes are read as text (pydicom reads such a fragment
 *    with the first encoding, keeping the ESC as U+001B; we do not put a raw ESC in UTF-8
 *    text, which XML 1.0 cannot carry);
 *  - escapes are honoured for every set that is not stand-alone, also when (0008,0005) uses
 *    the ISO_IR form, as pydicom does;
 *  - bytes from 0x80 under the default repertoire are read as Latin-1 (pydicom reads with
 *    Python's 'iso8859', i.e. Latin-1); VRs that are not text in the character set (CS, DA,
 *    UI, ...) are read entirely that way;
 *  - the JIS X 0201 Roman G0 of ISO_IR 13 (ESC ( J) is read as ASCII, so 0x5C stays the
 *    value delimiter '\' (pydicom and DCMTK do the same); Shift_JIS double-byte characters
 *    under ISO_IR 13 are decoded, because pydicom reads ISO_IR 13 as Shift_JIS and Japanese
 *    equipment writes such files;
 *  - in a double-byte G0 set (JIS X 0208, JIS X 0212) bytes 0x21-0x7E pair up, so '^', '='
 *    and '\' inside a kanji are not delimiters (a conforming writer has switched back to
 *    ASCII before any delimiter); control characters still end the double-byte run.
 *
 * Writing uses the same model: characters go to the set in use, else to the first term that
 * has them; G0 returns to the initial set before control characters and delimiters and at the
 * end of the value (PS3.5 6.1.2.5.3); after a double-byte G0 run, G1 is designated again
 * before it is used, for readers that keep one current set per escape (DCMTK, pydicom).
 *
 * glibc's iconv does the byte work for the single-byte ISO 8859 sets and TIS 620 (through
 * per-thread lookup tables built from iconv on first use) and for the multi-byte sets (EUC-JP
 * for JIS X 0208/0212, EUC-KR for KS X 1001, EUC-CN for GB 2312, Shift_JIS, GB18030, GBK).
 * iconv_t descriptors are not thread-safe: each thread keeps its own, closed at thread exit.
 * ASCII, Latin-1 and UTF-8 are handled here without iconv.
 */
#include "dicom_int.h"

#include <errno.h>
#include <iconv.h>
#include <pthread.h>
#include <stdio.h>

#define ESC 0x1B
#define REPLACEMENT 0xFFFDu

/* ---------------------------------------------------------------------------------------
 * iconv converters, cached per thread
 */

enum conv_id {
    CONV_EUC_JP_DEC, /* JIS X 0208 and JIS X 0212 as EUC-JP */
    CONV_EUC_KR_DEC, /* KS X 1001 */
    CONV_EUC_CN_DEC, /* GB 2312 */
    CONV_SJIS_DEC,   /* Shift_JIS double-byte characters under ISO_IR 13 */
    CONV_GB18030_DEC,
    CONV_GBK_DEC,
    CONV_EUC_JP_ENC,
    CONV_EUC_KR_ENC,
    CONV_EUC_CN_ENC,
    CONV_GB18030_ENC,
    CONV_GBK_ENC,
    CONV_COUNT
};

static const struct {
    const char *to, *from;
} conv_names[CONV_COUNT] = {
    [CONV_EUC_JP_DEC] = {"UTF-8", "EUC-JP"},
    [CONV_EUC_KR_DEC] = {"UTF-8", "EUC-KR"},
    [CONV_EUC_CN_DEC] = {"UTF-8", "EUC-CN"},
    [CONV_SJIS_DEC] = {"UTF-8", "SHIFT_JIS"},
    [CONV_GB18030_DEC] = {"UTF-8", "GB18030"},
    [CONV_GBK_DEC] = {"UTF-8", "GBK"},
    [CONV_EUC_JP_ENC] = {"EUC-JP", "UTF-8"},
    [CONV_EUC_KR_ENC] = {"EUC-KR", "UTF-8"},
    [CONV_EUC_CN_ENC] = {"EUC-CN", "UTF-8"},
    [CONV_GB18030_ENC] = {"GB18030", "UTF-8"},
    [CONV_GBK_ENC] = {"GBK", "UTF-8"},
};

/* Zero (NULL) means "not opened yet": a valid iconv_t is never NULL. */
static _Thread_local iconv_t conv_cache[CONV_COUNT];

static pthread_once_t conv_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t conv_key;
static bool conv_key_ok;

/* Thread-exit destructor: runs on the exiting thread, so it sees that thread's cache. */
static void conv_cache_close(void *unused)
{
    (void)unused;
    for (size_t i = 0; i < CONV_COUNT; i++) {
        if (conv_cache[i]) {
            iconv_close(conv_cache[i]);
            conv_cache[i] = NULL;
        }
    }
}

static void conv_key_create(void)
{
    conv_key_ok = pthread_key_create(&conv_key, conv_cache_close) == 0;
}

/* The calling thread's converter `id`, opened on first use. */
static int conv_get(enum conv_id id, iconv_t *cd)
{
    if (conv_cache[id]) {
        *cd = conv_cache[id];
        return 0;
    }
    pthread_once(&conv_key_once, conv_key_create);
    /* Without the key the descriptor would leak when the thread exits. */
    if (!conv_key_ok)
        return TR_ENOMEM;
    iconv_t c = iconv_open(conv_names[id].to, conv_names[id].from);
    if (c == (iconv_t)-1)
        return errno == ENOMEM ? TR_ENOMEM : TR_EUNSUPPORTED;
    if (pthread_getspecific(conv_key) == NULL && pthread_setspecific(conv_key, conv_cache) != 0) {
        iconv_close(c);
        return TR_ENOMEM;
    }
    conv_cache[id] = c;
    *cd = c;
    return 0;
}

void dcm_charset_thread_cleanup(void)
{
    conv_cache_close(NULL);
}

/* ---------------------------------------------------------------------------------------
 * UTF-8 (ISO_IR 192, and the output of every decoder)
 */

static size_t utf8_put(char *p, uint32_t cp)
{
    if (cp < 0x80) {
        p[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        p[0] = (char)(0xC0 | (cp >> 6));
        p[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        p[0] = (char)(0xE0 | (cp >> 12));
        p[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        p[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    p[0] = (char)(0xF0 | (cp >> 18));
    p[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    p[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    p[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Read one character of `s` (n > 0 bytes). Returns the bytes consumed (at least 1) and
 * stores the code point, or UINT32_MAX when the bytes are not valid UTF-8; then the count
 * is the maximal subpart of an ill-formed sequence (Unicode 15, 3.9, Table 3-7 and "U+FFFD
 * substitution of maximal subparts"), as Python's decoder replaces. */
static size_t utf8_next(const uint8_t *s, size_t n, uint32_t *cp)
{
    uint8_t c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint8_t lo = 0x80, hi = 0xBF;
    uint32_t v;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0Fu;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07u;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        *cp = UINT32_MAX;
        return 1;
    }
    size_t i = 1;
    for (; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi) {
            *cp = UINT32_MAX;
            return i;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
        lo = 0x80;
        hi = 0xBF;
    }
    *cp = v;
    return i;
}

size_t dcm_utf8_valid_prefix(const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t i = 0;
    while (i < len) {
        if (p[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        size_t k = utf8_next(p + i, len - i, &cp);
        if (cp == UINT32_MAX)
            break;
        i += k;
    }
    return i;
}

/* ---------------------------------------------------------------------------------------
 * Output staging: characters are collected in a small buffer and appended to the caller's
 * tr_buf in chunks. The first error (TR_ENOMEM, TR_ELIMIT) sticks and stops further work.
 */

struct emitter {
    struct tr_buf *out;
    int rc;
    size_t n;
    char tmp[1024];
};

static void emit_flush(struct emitter *e)
{
    if (e->n && e->rc == 0)
        e->rc = tr_buf_add(e->out, e->tmp, e->n);
    e->n = 0;
}

static void emit_cp(struct emitter *e, uint32_t cp)
{
    if (e->n > sizeof(e->tmp) - 4)
        emit_flush(e);
    e->n += utf8_put(e->tmp + e->n, cp);
}

static void emit_bytes(struct emitter *e, const void *p, size_t n)
{
    if (n > sizeof(e->tmp) - e->n) {
        emit_flush(e);
        if (n > sizeof(e->tmp) / 2) {
            if (e->rc == 0)
                e->rc = tr_buf_add(e->out, p, n);
            return;
        }
    }
    memcpy(e->tmp + e->n, p, n);
    e->n += n;
}

/* Convert `n` bytes with decoder `id` and emit the UTF-8. The input is made of units of
 * `unit` bytes (a bad unit is skipped whole) or, with unit 0, of variable-length characters
 * (a bad byte is skipped). Each unconvertible unit or byte, and an incomplete character at
 * the end, becomes one U+FFFD. */
static void emit_iconv(struct emitter *e, enum conv_id id, const uint8_t *in, size_t n,
                       size_t unit)
{
    if (e->rc)
        return;
    iconv_t cd;
    int rc = conv_get(id, &cd);
    if (rc < 0) {
        e->rc = rc;
        return;
    }
    iconv(cd, NULL, NULL, NULL, NULL);
    char *ip = (char *)(uintptr_t)in;
    size_t il = n;
    while (il > 0 && e->rc == 0) {
        if (sizeof(e->tmp) - e->n < 16)
            emit_flush(e);
        char *op = e->tmp + e->n;
        size_t ol = sizeof(e->tmp) - e->n;
        size_t r = iconv(cd, &ip, &il, &op, &ol);
        e->n = (size_t)(op - e->tmp);
        if (r != (size_t)-1)
            break;
        if (errno == E2BIG) {
            emit_flush(e);
        } else if (errno == EINVAL) { /* incomplete character at the end */
            emit_cp(e, REPLACEMENT);
            break;
        } else { /* EILSEQ, or anything unexpected: skip and go on */
            size_t skip = unit ? unit : 1;
            skip = TR_MIN(skip, il);
            emit_cp(e, REPLACEMENT);
            ip += skip;
            il -= skip;
            iconv(cd, NULL, NULL, NULL, NULL);
        }
    }
}

/* ---------------------------------------------------------------------------------------
 * Code elements (PS3.3 Tables C.12-2 to C.12-4) and their escape sequences
 */

enum code_set {
    SET_NONE,        /* G1 not designated: bytes >= 0x80 are invalid */
    SET_HIGH_LATIN1, /* G1 of the default repertoire as pydicom reads it (decoding only) */
    SET_ASCII,       /* ISO-IR 6 in G0: ESC ( B */
    SET_JIS_ROMAN,   /* ISO-IR 14 (JIS X 0201 Roman) in G0: ESC ( J; read as ASCII */
    SET_JIS_X0208,   /* ISO-IR 87 in G0, 94x94: ESC $ B */
    SET_JIS_X0212,   /* ISO-IR 159 in G0, 94x94: ESC $ ( D */
    SET_LATIN1,      /* ISO-IR 100 in G1: ESC - A */
    SET_LATIN2,      /* ISO-IR 101: ESC - B */
    SET_LATIN3,      /* ISO-IR 109: ESC - C */
    SET_LATIN4,      /* ISO-IR 110: ESC - D */
    SET_GREEK,       /* ISO-IR 126: ESC - F */
    SET_ARABIC,      /* ISO-IR 127: ESC - G */
    SET_HEBREW,      /* ISO-IR 138: ESC - H */
    SET_CYRILLIC,    /* ISO-IR 144: ESC - L */
    SET_LATIN5,      /* ISO-IR 148: ESC - M */
    SET_THAI,        /* ISO-IR 166 (TIS 620): ESC - T */
    SET_KATAKANA,    /* ISO-IR 13 (JIS X 0201 Katakana) in G1: ESC ) I */
    SET_KS_X1001,    /* ISO-IR 149 in G1, 94x94: ESC $ ) C */
    SET_GB2312,      /* ISO-IR 58 in G1, 94x94: ESC $ ) A */
    SET_COUNT
};

#define SET_BIT(s) (1u << (s))

/* Single-byte G1 sets that need a table (Latin-1 is the identity). */
#define SB_FIRST SET_LATIN2
#define SB_LAST SET_THAI
#define SB_COUNT (SB_LAST - SB_FIRST + 1)

static const struct set_info {
    char escape[4];         /* the bytes after ESC that designate the set */
    bool g1;                /* designated into G1, else G0 */
    bool double_byte;       /* 94x94 set: two bytes per character */
    const char *iconv_name; /* single-byte: name for the table; else unused */
} sets[SET_COUNT] = {
    [SET_NONE] = {"", true, false, NULL},
    [SET_HIGH_LATIN1] = {"", true, false, NULL},
    [SET_ASCII] = {"(B", false, false, NULL},
    [SET_JIS_ROMAN] = {"(J", false, false, NULL},
    [SET_JIS_X0208] = {"$B", false, true, NULL},
    [SET_JIS_X0212] = {"$(D", false, true, NULL},
    [SET_LATIN1] = {"-A", true, false, NULL},
    [SET_LATIN2] = {"-B", true, false, "ISO-8859-2"},
    [SET_LATIN3] = {"-C", true, false, "ISO-8859-3"},
    [SET_LATIN4] = {"-D", true, false, "ISO-8859-4"},
    [SET_GREEK] = {"-F", true, false, "ISO-8859-7"},
    [SET_ARABIC] = {"-G", true, false, "ISO-8859-6"},
    [SET_HEBREW] = {"-H", true, false, "ISO-8859-8"},
    [SET_CYRILLIC] = {"-L", true, false, "ISO-8859-5"},
    [SET_LATIN5] = {"-M", true, false, "ISO-8859-9"},
    [SET_THAI] = {"-T", true, false, "TIS-620"},
    [SET_KATAKANA] = {")I", true, false, NULL},
    [SET_KS_X1001] = {"$)C", true, true, NULL},
    [SET_GB2312] = {"$)A", true, true, NULL},
};

/* ---------------------------------------------------------------------------------------
 * Defined terms (PS3.3 Tables C.12-2 to C.12-5)
 */

enum standalone {
    SA_NONE,
    SA_UTF8,
    SA_GB18030,
    SA_GBK,
};

static const struct term_info {
    const char *name;       /* defined term */
    const char *compact;    /* upper case without separators, for lenient matching */
    enum code_set g0, g1;   /* initial G0 and G1 when this is value 1 */
    enum code_set extra;    /* set reached through an escape sequence, or SET_NONE */
    bool iso2022;           /* code extension form ("ISO 2022 ...") */
    enum standalone alone;  /* stand-alone set without code extensions (Table C.12-5) */
} terms[DCM_CS_TERM_COUNT] = {
    [DCM_CS_DEFAULT] = {"", "", SET_ASCII, SET_HIGH_LATIN1, SET_NONE, false, SA_NONE},
    [DCM_CS_ISO_IR_100] = {"ISO_IR 100", "ISOIR100", SET_ASCII, SET_LATIN1, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_101] = {"ISO_IR 101", "ISOIR101", SET_ASCII, SET_LATIN2, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_109] = {"ISO_IR 109", "ISOIR109", SET_ASCII, SET_LATIN3, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_110] = {"ISO_IR 110", "ISOIR110", SET_ASCII, SET_LATIN4, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_144] = {"ISO_IR 144", "ISOIR144", SET_ASCII, SET_CYRILLIC, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_127] = {"ISO_IR 127", "ISOIR127", SET_ASCII, SET_ARABIC, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_126] = {"ISO_IR 126", "ISOIR126", SET_ASCII, SET_GREEK, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_138] = {"ISO_IR 138", "ISOIR138", SET_ASCII, SET_HEBREW, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_148] = {"ISO_IR 148", "ISOIR148", SET_ASCII, SET_LATIN5, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_166] = {"ISO_IR 166", "ISOIR166", SET_ASCII, SET_THAI, SET_NONE, false,
                           SA_NONE},
    [DCM_CS_ISO_IR_13] = {"ISO_IR 13", "ISOIR13", SET_JIS_ROMAN, SET_KATAKANA, SET_NONE, false,
                          SA_NONE},
    [DCM_CS_ISO_IR_192] = {"ISO_IR 192", "ISOIR192", SET_ASCII, SET_NONE, SET_NONE, false,
                           SA_UTF8},
    [DCM_CS_GB18030] = {"GB18030", "GB18030", SET_ASCII, SET_NONE, SET_NONE, false, SA_GB18030},
    [DCM_CS_GBK] = {"GBK", "GBK", SET_ASCII, SET_NONE, SET_NONE, false, SA_GBK},
    [DCM_CS_ISO2022_IR_6] = {"ISO 2022 IR 6", "ISO2022IR6", SET_ASCII, SET_HIGH_LATIN1,
                             SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_100] = {"ISO 2022 IR 100", "ISO2022IR100", SET_ASCII, SET_LATIN1,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_101] = {"ISO 2022 IR 101", "ISO2022IR101", SET_ASCII, SET_LATIN2,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_109] = {"ISO 2022 IR 109", "ISO2022IR109", SET_ASCII, SET_LATIN3,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_110] = {"ISO 2022 IR 110", "ISO2022IR110", SET_ASCII, SET_LATIN4,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_144] = {"ISO 2022 IR 144", "ISO2022IR144", SET_ASCII, SET_CYRILLIC,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_127] = {"ISO 2022 IR 127", "ISO2022IR127", SET_ASCII, SET_ARABIC,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_126] = {"ISO 2022 IR 126", "ISO2022IR126", SET_ASCII, SET_GREEK,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_138] = {"ISO 2022 IR 138", "ISO2022IR138", SET_ASCII, SET_HEBREW,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_148] = {"ISO 2022 IR 148", "ISO2022IR148", SET_ASCII, SET_LATIN5,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_166] = {"ISO 2022 IR 166", "ISO2022IR166", SET_ASCII, SET_THAI,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_13] = {"ISO 2022 IR 13", "ISO2022IR13", SET_JIS_ROMAN, SET_KATAKANA,
                              SET_NONE, true, SA_NONE},
    /* The multi-byte sets are not allowed as value 1 (PS3.3 C.12.1.1.2); when they are, we
     * start in ASCII and, for the G1 sets, with the set in G1, as pydicom does. */
    [DCM_CS_ISO2022_IR_87] = {"ISO 2022 IR 87", "ISO2022IR87", SET_ASCII, SET_NONE,
                              SET_JIS_X0208, true, SA_NONE},
    [DCM_CS_ISO2022_IR_159] = {"ISO 2022 IR 159", "ISO2022IR159", SET_ASCII, SET_NONE,
                               SET_JIS_X0212, true, SA_NONE},
    [DCM_CS_ISO2022_IR_149] = {"ISO 2022 IR 149", "ISO2022IR149", SET_ASCII, SET_KS_X1001,
                               SET_NONE, true, SA_NONE},
    [DCM_CS_ISO2022_IR_58] = {"ISO 2022 IR 58", "ISO2022IR58", SET_ASCII, SET_GB2312, SET_NONE,
                              true, SA_NONE},
};

/* Names seen in the wild that are not defined terms (pydicom accepts Python codec names and
 * the terms of DICOM CP 1234 drafts). Compared in compact form. */
static const struct {
    const char *compact;
    enum dcm_charset_term term;
} aliases[] = {
    {"ISOIR6", DCM_CS_DEFAULT},
    {"UTF8", DCM_CS_ISO_IR_192},
    {"GB2312", DCM_CS_ISO2022_IR_58},
    {"EUCCN", DCM_CS_ISO2022_IR_58},
    {"ISO202258", DCM_CS_ISO2022_IR_58},
    {"ISO2022GBK", DCM_CS_GBK},
    {"LATIN1", DCM_CS_ISO_IR_100},
    {"ISO88591", DCM_CS_ISO_IR_100},
};

const char *dcm_charset_term_name(enum dcm_charset_term term)
{
    if ((unsigned)term >= DCM_CS_TERM_COUNT)
        return "?";
    return terms[term].name;
}

/* The set that a term adds to the sets escape sequences may designate. */
static uint32_t term_sets(enum dcm_charset_term t)
{
    const struct term_info *ti = &terms[t];
    uint32_t m = SET_BIT(ti->g0);
    if (ti->g1 != SET_NONE && ti->g1 != SET_HIGH_LATIN1)
        m |= SET_BIT(ti->g1);
    if (ti->extra != SET_NONE)
        m |= SET_BIT(ti->extra);
    return m;
}

/* Upper-case `s` without spaces, '-' and '_' into `out` (size outsz); false if too long. */
static bool compact_name(const char *s, size_t n, char *out, size_t outsz)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == ' ' || c == '-' || c == '_')
            continue;
        if (c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        if (k + 1 >= outsz)
            return false;
        out[k++] = c;
    }
    out[k] = '\0';
    return true;
}

static bool lookup_term(const char *s, size_t n, enum dcm_charset_term *term)
{
    for (int t = 0; t < DCM_CS_TERM_COUNT; t++) {
        if (strlen(terms[t].name) == n && memcmp(terms[t].name, s, n) == 0) {
            *term = (enum dcm_charset_term)t;
            return true;
        }
    }
    /* Misspellings: "ISO-IR 100", "ISO_IR100", "ISO IR 192", "iso_2022_ir_87", "utf-8" */
    char c[32];
    if (!compact_name(s, n, c, sizeof(c)))
        return false;
    for (int t = 1; t < DCM_CS_TERM_COUNT; t++) {
        if (strcmp(terms[t].compact, c) == 0) {
            *term = (enum dcm_charset_term)t;
            return true;
        }
    }
    for (size_t i = 0; i < TR_ARRAY_SIZE(aliases); i++) {
        if (strcmp(aliases[i].compact, c) == 0) {
            *term = aliases[i].term;
            return true;
        }
    }
    return false;
}

int dcm_charset_parse(const char *value, size_t len, struct dcm_charset *cs, struct tr_error *err)
{
    memset(cs, 0, sizeof(*cs));
    if (!value)
        len = 0;
    enum dcm_charset_term list[DCM_CHARSET_MAX_TERMS];
    unsigned count = 0, index = 0;
    size_t pos = 0;
    for (;;) {
        size_t end = pos;
        while (end < len && value[end] != '\\')
            end++;
        /* CS: leading and trailing spaces are not significant (PS3.5 6.2); NUL padding is
         * wrong but common. */
        size_t a = pos, b = end;
        while (a < b && (value[a] == ' ' || value[a] == '\0'))
            a++;
        while (b > a && (value[b - 1] == ' ' || value[b - 1] == '\0'))
            b--;
        enum dcm_charset_term t = DCM_CS_DEFAULT;
        if (b > a && !lookup_term(value + a, b - a, &t)) {
            int n = (int)TR_MIN(b - a, (size_t)64);
            return tr_error_set(err, TR_EUNSUPPORTED,
                                "unknown Specific Character Set (0008,0005) term '%.*s' "
                                "(value %u)", n, value + a, index + 1);
        }
        /* An empty value 1 is the default repertoire (PS3.3 C.12.1.1.2); an empty later value
         * adds nothing (pydicom reads it as the default too). */
        bool keep = index == 0 || t != DCM_CS_DEFAULT;
        /* Stand-alone sets cannot be code extensions (PS3.5 6.1.2.5.4 d): after value 1
         * they are ignored, as pydicom does. */
        if (index > 0 && terms[t].alone != SA_NONE)
            keep = false;
        for (unsigned i = 0; keep && i < count; i++)
            if (list[i] == t)
                keep = false; /* duplicate */
        if (keep) {
            if (count == DCM_CHARSET_MAX_TERMS)
                return tr_error_set(err, TR_ELIMIT,
                                    "Specific Character Set (0008,0005) has more than %d "
                                    "different terms", DCM_CHARSET_MAX_TERMS);
            list[count++] = t;
        }
        index++;
        if (end >= len)
            break;
        pos = end + 1;
    }
    /* A stand-alone value 1 makes the rest meaningless (pydicom ignores the rest). */
    if (count > 0 && terms[list[0]].alone != SA_NONE)
        count = 1;
    if (count == 1 && list[0] == DCM_CS_DEFAULT)
        count = 0;
    /* Value 1 empty (or "ISO_IR 6") with extensions: the initial code element is ISO-IR 6,
     * which a later value may repeat. */
    if (count > 1 && list[0] == DCM_CS_DEFAULT) {
        list[0] = DCM_CS_ISO2022_IR_6;
        unsigned k = 1;
        for (unsigned i = 1; i < count; i++)
            if (list[i] != DCM_CS_ISO2022_IR_6)
                list[k++] = list[i];
        count = k;
    }
    cs->count = count;
    for (unsigned i = 0; i < count; i++) {
        cs->terms[i] = list[i];
        if (terms[list[i]].iso2022)
            cs->code_extensions = true;
    }
    return 0;
}

bool dcm_charset_ascii_compatible(const struct dcm_charset *cs)
{
    if (!cs)
        return true;
    for (unsigned i = 0; i < cs->count && i < DCM_CHARSET_MAX_TERMS; i++)
        if ((unsigned)cs->terms[i] >= DCM_CS_TERM_COUNT)
            return false;
    return true;
}

/* Value 1 of `cs`, or the default repertoire. */
static enum dcm_charset_term first_term(const struct dcm_charset *cs)
{
    if (!cs || cs->count == 0 || (unsigned)cs->terms[0] >= DCM_CS_TERM_COUNT)
        return DCM_CS_DEFAULT;
    return cs->terms[0];
}

static unsigned term_count(const struct dcm_charset *cs)
{
    return cs ? TR_MIN(cs->count, (unsigned)DCM_CHARSET_MAX_TERMS) : 0;
}

/* ---------------------------------------------------------------------------------------
 * Single-byte tables, built per thread from iconv on first use
 */

#define SB_UNDEFINED 0xFFFFu

static _Thread_local struct sb_table {
    bool built;
    uint16_t map[96]; /* bytes 0xA0-0xFF; 0x80-0x9F are the C1 controls in every set */
} sb_tables[SB_COUNT];

static int sb_table_get(enum code_set set, const struct sb_table **table)
{
    struct sb_table *t = &sb_tables[set - SB_FIRST];
    if (t->built) {
        *table = t;
        return 0;
    }
    iconv_t cd = iconv_open("UTF-8", sets[set].iconv_name);
    if (cd == (iconv_t)-1)
        return errno == ENOMEM ? TR_ENOMEM : TR_EUNSUPPORTED;
    for (unsigned b = 0xA0; b <= 0xFF; b++) {
        char in = (char)b, out[8];
        char *ip = &in, *op = out;
        size_t il = 1, ol = sizeof(out);
        uint32_t cp = UINT32_MAX;
        iconv(cd, NULL, NULL, NULL, NULL);
        if (iconv(cd, &ip, &il, &op, &ol) != (size_t)-1 && op > out)
            utf8_next((const uint8_t *)out, (size_t)(op - out), &cp);
        t->map[b - 0xA0] = cp <= 0xFFFF ? (uint16_t)cp : SB_UNDEFINED;
    }
    iconv_close(cd);
    t->built = true;
    *table = t;
    return 0;
}

/* ---------------------------------------------------------------------------------------
 * Decoding
 */

/* Delimiters that return to the initial code elements (PS3.5 6.1.2.5.3). */
struct delimiters {
    bool backslash; /* multi-valued VRs: the value delimiter */
    bool pn;        /* PN: component '^' and group '=' delimiters */
};

static struct delimiters delimiters_for(enum dcm_vr vr)
{
    struct delimiters d;
    d.backslash = dcm_vr_info(vr)->kind == DCM_VR_KIND_STRING;
    d.pn = vr == DCM_VR_PN;
    return d;
}

static bool is_delimiter(const struct delimiters *d, uint8_t c)
{
    switch (c) {
    case '\r':
    case '\n':
    case '\f':
    case '\t':
        return true;
    case '\\':
        return d->backslash;
    case '^':
    case '=':
        return d->pn;
    default:
        return false;
    }
}

struct decoder {
    struct emitter *e;
    struct delimiters delim;
    enum code_set g0, g1;           /* current code elements */
    enum code_set init_g0, init_g1; /* from value 1 */
    uint32_t declared;              /* sets that escapes may designate */
};

static void decoder_reset(struct decoder *d)
{
    d->g0 = d->init_g0;
    d->g1 = d->init_g1;
}

/* Handle the ESC at in[i]; returns the index of the next byte to read. PS3.5 6.1.2.5.1 and
 * PS3.3 Tables C.12-3 and C.12-4 list the sequences. */
static size_t decode_escape(struct decoder *d, const uint8_t *in, size_t len, size_t i)
{
    /* ISO 2022: ESC, intermediate bytes 02/00-02/15, a final byte 03/00-07/14. */
    size_t j = i + 1;
    while (j < len && j - i <= 3 && in[j] >= 0x20 && in[j] <= 0x2F)
        j++;
    if (j < len && j > i + 1 && in[j] >= 0x30 && in[j] <= 0x7E) {
        size_t n = j - i; /* bytes after ESC, final included */
        for (int s = SET_ASCII; s < SET_COUNT; s++) {
            const char *esc = sets[s].escape;
            if (strlen(esc) != n || memcmp(esc, in + i + 1, n) != 0)
                continue;
            if (!(d->declared & SET_BIT(s)))
                break; /* known, but not declared in (0008,0005) */
            if (sets[s].g1)
                d->g1 = (enum code_set)s;
            else
                d->g0 = (enum code_set)s;
            return j + 1;
        }
    }
    /* Not honoured: the ESC becomes U+FFFD and the text goes on in the initial state. */
    emit_cp(d->e, REPLACEMENT);
    decoder_reset(d);
    return i + 1;
}

/* Decode a run of 94x94 characters starting at in[*pos]: bytes 0x21-0x7E in G0 or 0xA1-0xFE
 * in G1. The EUC form of each character goes to iconv. A first byte without a valid second
 * byte becomes U+FFFD. */
static void decode_double_run(struct decoder *d, enum code_set set, const uint8_t *in,
                              size_t len, size_t *pos)
{
    bool high = sets[set].g1;
    uint8_t lo = high ? 0xA1 : 0x21, hi = high ? 0xFE : 0x7E;
    enum conv_id conv = set == SET_KS_X1001 ? CONV_EUC_KR_DEC
                        : set == SET_GB2312 ? CONV_EUC_CN_DEC
                                            : CONV_EUC_JP_DEC;
    size_t unit = set == SET_JIS_X0212 ? 3 : 2;
    uint8_t euc[384];
    size_t i = *pos;
    while (d->e->rc == 0) {
        size_t n = 0;
        while (n + unit <= sizeof(euc) && i + 1 < len && in[i] >= lo && in[i] <= hi &&
               in[i + 1] >= lo && in[i + 1] <= hi) {
            if (set == SET_JIS_X0212)
                euc[n++] = 0x8F;
            euc[n++] = (uint8_t)(in[i] | 0x80);
            euc[n++] = (uint8_t)(in[i + 1] | 0x80);
            i += 2;
        }
        if (n == 0)
            break;
        emit_iconv(d->e, conv, euc, n, unit);
    }
    if (i == *pos) {
        emit_cp(d->e, REPLACEMENT);
        i++;
    }
    *pos = i;
}

/* One byte >= 0x80 (or a character starting there) in G1. */
static int decode_g1(struct decoder *d, const uint8_t *in, size_t len, size_t *pos)
{
    size_t i = *pos;
    uint8_t c = in[i];
    switch (d->g1) {
    case SET_HIGH_LATIN1:
    case SET_LATIN1:
        emit_cp(d->e, c);
        break;
    case SET_KATAKANA:
        if (c >= 0xA1 && c <= 0xDF) {
            emit_cp(d->e, 0xFF61u + (c - 0xA1u));
        } else if (((c >= 0x81 && c <= 0x9F) || (c >= 0xE0 && c <= 0xFC)) && i + 1 < len &&
                   in[i + 1] >= 0x40 && in[i + 1] <= 0xFC && in[i + 1] != 0x7F) {
            /* Shift_JIS double-byte character (see the file comment). */
            emit_iconv(d->e, CONV_SJIS_DEC, in + i, 2, 2);
            i++;
        } else {
            emit_cp(d->e, REPLACEMENT);
        }
        break;
    case SET_KS_X1001:
    case SET_GB2312:
        decode_double_run(d, d->g1, in, len, &i);
        *pos = i;
        return d->e->rc;
    default:
        if (d->g1 >= SB_FIRST && d->g1 <= SB_LAST) {
            uint32_t cp = c;
            if (c >= 0xA0) {
                const struct sb_table *t;
                int rc = sb_table_get(d->g1, &t);
                if (rc < 0)
                    return rc;
                cp = t->map[c - 0xA0];
                if (cp == SB_UNDEFINED)
                    cp = REPLACEMENT;
            }
            emit_cp(d->e, cp);
        } else {
            emit_cp(d->e, REPLACEMENT); /* no G1 set */
        }
        break;
    }
    *pos = i + 1;
    return d->e->rc;
}

static int decode_iso2022(const struct dcm_charset *cs, enum dcm_vr vr, const uint8_t *in,
                          size_t len, struct emitter *e)
{
    struct decoder d;
    const struct term_info *first = &terms[first_term(cs)];
    d.e = e;
    d.delim = delimiters_for(vr);
    d.init_g0 = first->g0;
    d.init_g1 = first->g1;
    d.declared = SET_BIT(SET_ASCII) | term_sets(first_term(cs));
    for (unsigned k = 0; k < term_count(cs); k++)
        if ((unsigned)cs->terms[k] < DCM_CS_TERM_COUNT)
            d.declared |= term_sets(cs->terms[k]);
    decoder_reset(&d);

    size_t i = 0;
    while (i < len && e->rc == 0) {
        uint8_t c = in[i];
        if (c == ESC) {
            i = decode_escape(&d, in, len, i);
        } else if (c >= 0x80) {
            int rc = decode_g1(&d, in, len, &i);
            if (rc < 0)
                return rc;
        } else if (sets[d.g0].double_byte && c >= 0x21 && c <= 0x7E) {
            decode_double_run(&d, d.g0, in, len, &i);
        } else {
            /* ASCII (JIS X 0201 Roman is read as ASCII): copy the run up to a delimiter. */
            size_t j = i;
            while (j < len && in[j] < 0x80 && in[j] != ESC && !is_delimiter(&d.delim, in[j]) &&
                   !(sets[d.g0].double_byte && in[j] >= 0x21 && in[j] <= 0x7E))
                j++;
            if (j > i) {
                emit_bytes(e, in + i, j - i);
                i = j;
            } else {
                emit_bytes(e, in + i, 1); /* the delimiter */
                decoder_reset(&d);
                i++;
            }
        }
    }
    return e->rc;
}

static void decode_utf8(const uint8_t *in, size_t len, struct emitter *e)
{
    size_t i = 0;
    while (i < len && e->rc == 0) {
        size_t j = i;
        while (j < len) {
            if (in[j] < 0x80) {
                j++;
                continue;
            }
            uint32_t cp;
            size_t k = utf8_next(in + j, len - j, &cp);
            if (cp == UINT32_MAX)
                break;
            j += k;
        }
        emit_bytes(e, in + i, j - i);
        if (j < len) {
            uint32_t cp;
            j += utf8_next(in + j, len - j, &cp);
            emit_cp(e, REPLACEMENT);
        }
        i = j;
    }
}

static void decode_latin1(const uint8_t *in, size_t len, struct emitter *e)
{
    size_t i = 0;
    while (i < len && e->rc == 0) {
        size_t j = i;
        while (j < len && in[j] < 0x80)
            j++;
        emit_bytes(e, in + i, j - i);
        for (; j < len && in[j] >= 0x80; j++)
            emit_cp(e, in[j]);
        i = j;
    }
}

int dcm_charset_decode(const struct dcm_charset *cs, enum dcm_vr vr, const char *in, size_t len,
                       struct tr_buf *out)
{
    const uint8_t *p = (const uint8_t *)in;
    if (!p)
        len = 0;
    /* ASCII fast path: no iconv, no state. */
    size_t i = 0;
    while (i < len && p[i] < 0x80 && p[i] != ESC)
        i++;
    if (i == len)
        return len ? tr_buf_add(out, in, len) : 0;

    size_t start = out->len;
    struct emitter em;
    struct emitter *e = &em;
    e->out = out;
    e->rc = 0;
    e->n = 0;
    int rc;
    if (!dcm_vr_info(vr)->charset) {
        decode_latin1(p, len, e);
        rc = e->rc;
    } else {
        switch (terms[first_term(cs)].alone) {
        case SA_UTF8:
            decode_utf8(p, len, e);
            rc = e->rc;
            break;
        case SA_GB18030:
            emit_iconv(e, CONV_GB18030_DEC, p, len, 0);
            rc = e->rc;
            break;
        case SA_GBK:
            emit_iconv(e, CONV_GBK_DEC, p, len, 0);
            rc = e->rc;
            break;
        default:
            rc = decode_iso2022(cs, vr, p, len, e);
            break;
        }
    }
    if (rc == 0) {
        emit_flush(e);
        rc = e->rc;
    }
    if (rc < 0)
        tr_buf_truncate(out, start);
    return rc;
}

/* ---------------------------------------------------------------------------------------
 * Encoding
 */

/* Describe `cs` for messages: "ISO 2022 IR 6\ISO 2022 IR 87". */
static void charset_describe(const struct dcm_charset *cs, char *buf, size_t size)
{
    size_t k = 0;
    buf[0] = '\0';
    if (term_count(cs) == 0) {
        snprintf(buf, size, "the default repertoire (ISO_IR 6)");
        return;
    }
    for (unsigned i = 0; i < term_count(cs) && k < size; i++) {
        int n = snprintf(buf + k, size - k, "%s%s", i ? "\\" : "",
                         dcm_charset_term_name(cs->terms[i]));
        if (n < 0)
            break;
        k += (size_t)n;
    }
}

static int encode_error(const struct dcm_charset *cs, uint32_t cp, size_t offset,
                        struct tr_error *err)
{
    char what[160];
    charset_describe(cs, what, sizeof(what));
    if (cp == UINT32_MAX)
        return tr_error_set(err, TR_ECHARSET, "invalid UTF-8 at byte %zu of the value", offset);
    return tr_error_set(err, TR_ECHARSET,
                        "character U+%04X (byte %zu of the value) cannot be encoded in "
                        "Specific Character Set '%s'", (unsigned)cp, offset, what);
}

/* Encode `cp` with the iconv encoder `id`; returns the byte count (0 if not encodable). */
static int iconv_encode_cp(enum conv_id id, uint32_t cp, uint8_t *out, size_t outsz,
                           size_t *n)
{
    iconv_t cd;
    int rc = conv_get(id, &cd);
    if (rc < 0)
        return rc;
    char in[4];
    char *ip = in, *op = (char *)out;
    size_t il = utf8_put(in, cp), ol = outsz;
    iconv(cd, NULL, NULL, NULL, NULL);
    size_t r = iconv(cd, &ip, &il, &op, &ol);
    iconv(cd, NULL, NULL, NULL, NULL);
    *n = r == (size_t)-1 || il != 0 ? 0 : (size_t)(op - (char *)out);
    return 0;
}

/* The bytes of `cp` in `set` (n = 0 if the set cannot represent it). */
static int encode_in_set(enum code_set set, uint32_t cp, uint8_t out[4], size_t *n)
{
    *n = 0;
    switch (set) {
    case SET_LATIN1:
        if (cp >= 0x80 && cp <= 0xFF) {
            out[0] = (uint8_t)cp;
            *n = 1;
        }
        return 0;
    case SET_KATAKANA:
        if (cp >= 0xFF61 && cp <= 0xFF9F) {
            out[0] = (uint8_t)(cp - 0xFF61 + 0xA1);
            *n = 1;
        }
        return 0;
    case SET_JIS_X0208:
    case SET_JIS_X0212:
    case SET_KS_X1001:
    case SET_GB2312: {
        enum conv_id id = set == SET_KS_X1001 ? CONV_EUC_KR_ENC
                          : set == SET_GB2312 ? CONV_EUC_CN_ENC
                                              : CONV_EUC_JP_ENC;
        uint8_t b[8];
        size_t k;
        int rc = iconv_encode_cp(id, cp, b, sizeof(b), &k);
        if (rc < 0)
            return rc;
        const uint8_t *q = b;
        if (set == SET_JIS_X0212) {
            if (k != 3 || b[0] != 0x8F)
                return 0;
            q++;
            k--;
        }
        if (k != 2 || q[0] < 0xA1 || q[0] > 0xFE || q[1] < 0xA1 || q[1] > 0xFE)
            return 0;
        uint8_t mask = sets[set].g1 ? 0xFF : 0x7F; /* G0 sets use the GL bytes */
        out[0] = q[0] & mask;
        out[1] = q[1] & mask;
        *n = 2;
        return 0;
    }
    default:
        if (set >= SB_FIRST && set <= SB_LAST && cp >= 0x80 && cp <= 0xFFFF) {
            if (cp < 0xA0) {
                out[0] = (uint8_t)cp;
                *n = 1;
                return 0;
            }
            const struct sb_table *t;
            int rc = sb_table_get(set, &t);
            if (rc < 0)
                return rc;
            for (unsigned b = 0; b < 96; b++) {
                if (t->map[b] == cp) {
                    out[0] = (uint8_t)(0xA0 + b);
                    *n = 1;
                    break;
                }
            }
        }
        return 0;
    }
}

/* The set that a term contributes when encoding characters >= U+0080. */
static enum code_set term_encode_set(enum dcm_charset_term t)
{
    const struct term_info *ti = &terms[t];
    if (ti->extra != SET_NONE)
        return ti->extra;
    if (ti->g1 == SET_HIGH_LATIN1)
        return SET_NONE;
    return ti->g1;
}

static void emit_escape(struct emitter *e, enum code_set set)
{
    char b[4] = {ESC};
    size_t n = strlen(sets[set].escape);
    memcpy(b + 1, sets[set].escape, n);
    emit_bytes(e, b, n + 1);
}

/* PS3.5 6.1.2.5.3: before a delimiter or other control character, switch G0 back to the
 * initial code element of value 1; after a delimiter both ends are in the initial state. */
static int encode_iso2022(const struct dcm_charset *cs, enum dcm_vr vr, const uint8_t *in,
                          size_t len, struct emitter *e, struct tr_error *err)
{
    const struct term_info *first = &terms[first_term(cs)];
    struct delimiters delim = delimiters_for(vr);
    enum code_set init_g0 = first->g0, init_g1 = first->g1;
    enum code_set g0 = init_g0, g1 = init_g1;
    size_t i = 0;
    while (i < len && e->rc == 0) {
        uint32_t cp;
        size_t k = utf8_next(in + i, len - i, &cp);
        if (cp == UINT32_MAX)
            return encode_error(cs, cp, i, err);
        if (cp == ESC)
            return encode_error(cs, cp, i, err); /* would start an escape sequence */
        if (cp < 0x80) {
            bool reset = is_delimiter(&delim, (uint8_t)cp);
            if (cp < 0x20 || cp == 0x7F || reset) {
                if (g0 != init_g0) {
                    emit_escape(e, init_g0);
                    g0 = init_g0;
                }
            } else if (sets[g0].double_byte) {
                /* value 1 is never a double-byte G0 set (see terms[]) */
                emit_escape(e, init_g0);
                g0 = init_g0;
            }
            char c = (char)cp;
            emit_bytes(e, &c, 1);
            if (reset) {
                g0 = init_g0;
                g1 = init_g1;
            }
            i += k;
            continue;
        }
        /* Prefer the sets in use, then the terms of (0008,0005) in order. */
        enum code_set candidates[2 + DCM_CHARSET_MAX_TERMS];
        size_t nc = 0;
        candidates[nc++] = g1;
        if (sets[g0].double_byte)
            candidates[nc++] = g0;
        for (unsigned t = 0; t < term_count(cs); t++)
            if ((unsigned)cs->terms[t] < DCM_CS_TERM_COUNT)
                candidates[nc++] = term_encode_set(cs->terms[t]);
        uint8_t bytes[4];
        size_t n = 0;
        enum code_set use = SET_NONE;
        for (size_t c = 0; c < nc && n == 0; c++) {
            if (candidates[c] == SET_NONE || candidates[c] == SET_HIGH_LATIN1)
                continue;
            int rc = encode_in_set(candidates[c], cp, bytes, &n);
            if (rc < 0)
                return rc;
            use = candidates[c];
        }
        if (n == 0)
            return encode_error(cs, cp, i, err);
        if (sets[use].g1 && sets[g0].double_byte) {
            /* ISO 2022 would allow G1 characters with a double-byte set in G0, but readers that
             * keep one current set per escape sequence (DCMTK, pydicom) would read them with
             * the G0 set: return G0 to the initial set and designate G1 again. */
            emit_escape(e, init_g0);
            g0 = init_g0;
            g1 = SET_NONE;
        }
        if (sets[use].g1 && g1 != use) {
            emit_escape(e, use);
            g1 = use;
        } else if (!sets[use].g1 && g0 != use) {
            emit_escape(e, use);
            g0 = use;
        }
        emit_bytes(e, bytes, n);
        i += k;
    }
    if (g0 != init_g0)
        emit_escape(e, init_g0);
    return e->rc;
}

/* Default repertoire (and VRs outside the character set): ASCII only. */
static int encode_ascii(const struct dcm_charset *cs, const uint8_t *in, size_t len,
                        struct emitter *e, struct tr_error *err)
{
    for (size_t i = 0; i < len; i++) {
        if (in[i] >= 0x80 || in[i] == ESC) {
            uint32_t cp;
            utf8_next(in + i, len - i, &cp);
            return encode_error(cs, cp, i, err);
        }
    }
    emit_bytes(e, in, len);
    return e->rc;
}

static int encode_standalone(const struct dcm_charset *cs, enum standalone alone,
                             const uint8_t *in, size_t len, struct emitter *e,
                             struct tr_error *err)
{
    size_t valid = dcm_utf8_valid_prefix((const char *)in, len);
    if (valid < len)
        return encode_error(cs, UINT32_MAX, valid, err);
    if (alone == SA_UTF8) {
        emit_bytes(e, in, len);
        return e->rc;
    }
    iconv_t cd;
    int rc = conv_get(alone == SA_GB18030 ? CONV_GB18030_ENC : CONV_GBK_ENC, &cd);
    if (rc < 0)
        return rc;
    iconv(cd, NULL, NULL, NULL, NULL);
    char *ip = (char *)(uintptr_t)in;
    size_t il = len;
    while (il > 0 && e->rc == 0) {
        if (sizeof(e->tmp) - e->n < 16)
            emit_flush(e);
        char *op = e->tmp + e->n;
        size_t ol = sizeof(e->tmp) - e->n;
        size_t r = iconv(cd, &ip, &il, &op, &ol);
        e->n = (size_t)(op - e->tmp);
        if (r != (size_t)-1)
            break;
        if (errno == E2BIG) {
            emit_flush(e);
            continue;
        }
        size_t off = (size_t)((const uint8_t *)ip - in);
        uint32_t cp;
        utf8_next(in + off, len - off, &cp);
        iconv(cd, NULL, NULL, NULL, NULL);
        return encode_error(cs, cp, off, err);
    }
    return e->rc;
}

int dcm_charset_encode(const struct dcm_charset *cs, enum dcm_vr vr, const char *utf8, size_t len,
                       struct tr_buf *out, struct tr_error *err)
{
    const uint8_t *p = (const uint8_t *)utf8;
    if (!p)
        len = 0;
    size_t start = out->len;
    struct emitter em;
    struct emitter *e = &em;
    e->out = out;
    e->rc = 0;
    e->n = 0;
    int rc;
    enum dcm_charset_term t = first_term(cs);
    if (!dcm_vr_info(vr)->charset || term_count(cs) == 0)
        rc = encode_ascii(cs, p, len, e, err);
    else if (terms[t].alone != SA_NONE)
        rc = encode_standalone(cs, terms[t].alone, p, len, e, err);
    else
        rc = encode_iso2022(cs, vr, p, len, e, err);
    if (rc == 0) {
        emit_flush(e);
        rc = e->rc;
    }
    if (rc < 0) {
        tr_buf_truncate(out, start);
        if (rc == TR_ELIMIT)
            tr_error_set(err, rc, "encoded text value exceeds the buffer limit (%zu bytes)",
                         out->max);
        else if (rc == TR_ENOMEM)
            tr_error_set(err, rc, "out of memory encoding a text value");
        else if (rc == TR_EUNSUPPORTED)
            tr_error_set(err, rc, "the C library's iconv cannot convert this character set");
    }
    return rc;
}
