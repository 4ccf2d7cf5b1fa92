/*
 * charset.h - Specific Character Set (0008,0005): decoding text values to UTF-8 and encoding
 * UTF-8 back (PS3.3 C.12.1.1.2, PS3.5 6.1 and Annex H/I/J/K).
 *
 * Supported: the default repertoire (ISO_IR 6), single-byte ISO_IR 100, 101, 109, 110, 126,
 * 127, 138, 144, 148, 166, 13; multi-byte ISO_IR 192 (UTF-8), GB18030, GBK; and ISO 2022 code
 * extensions (ISO 2022 IR 6, 100, 101, 109, 110, 126, 127, 138, 144, 148, 166, 13, 87, 159,
 * 149, 58) with escape sequences switching G0/G1 inside a value. Person names (PN) reset to the
 * initial code element at each component group ('=') and component ('^') delimiter, other VRs
 * at each backslash, CR, LF, FF and TAB (PS3.5 6.1.2.5.3).
 *
 * glibc's iconv does the byte work for the non-trivial code sets.
 */
#ifndef DCM_CHARSET_H
#define DCM_CHARSET_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "error.h"
#include "vr.h"

enum dcm_charset_term {
    DCM_CS_DEFAULT = 0,     /* ISO_IR 6 / empty value: ASCII (G0 = ISO 646) */
    DCM_CS_ISO_IR_100,      /* Latin-1 */
    DCM_CS_ISO_IR_101,      /* Latin-2 */
    DCM_CS_ISO_IR_109,      /* Latin-3 */
    DCM_CS_ISO_IR_110,      /* Latin-4 */
    DCM_CS_ISO_IR_144,      /* Cyrillic */
    DCM_CS_ISO_IR_127,      /* Arabic */
    DCM_CS_ISO_IR_126,      /* Greek */
    DCM_CS_ISO_IR_138,      /* Hebrew */
    DCM_CS_ISO_IR_148,      /* Latin-5 */
    DCM_CS_ISO_IR_166,      /* Thai (TIS 620) */
    DCM_CS_ISO_IR_13,       /* Japanese katakana (JIS X 0201) + romaji */
    DCM_CS_ISO_IR_192,      /* UTF-8 */
    DCM_CS_GB18030,
    DCM_CS_GBK,
    DCM_CS_ISO2022_IR_6,
    DCM_CS_ISO2022_IR_100,
    DCM_CS_ISO2022_IR_101,
    DCM_CS_ISO2022_IR_109,
    DCM_CS_ISO2022_IR_110,
    DCM_CS_ISO2022_IR_144,
    DCM_CS_ISO2022_IR_127,
    DCM_CS_ISO2022_IR_126,
    DCM_CS_ISO2022_IR_138,
    DCM_CS_ISO2022_IR_148,
    DCM_CS_ISO2022_IR_166,
    DCM_CS_ISO2022_IR_13,
    DCM_CS_ISO2022_IR_87,   /* JIS X 0208 kanji */
    DCM_CS_ISO2022_IR_159,  /* JIS X 0212 supplementary kanji */
    DCM_CS_ISO2022_IR_149,  /* KS X 1001 Korean */
    DCM_CS_ISO2022_IR_58,   /* GB 2312 simplified Chinese */
    DCM_CS_TERM_COUNT
};

#define DCM_CHARSET_MAX_TERMS 8

/* A parsed Specific Character Set value. Zero-initialised means the default repertoire. */
struct dcm_charset {
    unsigned count;                              /* number of terms; 0 = default */
    enum dcm_charset_term terms[DCM_CHARSET_MAX_TERMS];
    bool code_extensions;                        /* any ISO 2022 term: escapes are honoured */
};

/* Parse the raw value of (0008,0005) (backslash-separated defined terms, possibly padded with
 * spaces, first value possibly empty). Unknown terms are an error (TR_EUNSUPPORTED) with a
 * message naming the term; callers that want to be lenient fall back to the default
 * repertoire (a zeroed struct dcm_charset), which is what pydicom does for the unknown term
 * (it warns and reads that term as its default). More than DCM_CHARSET_MAX_TERMS different
 * terms is TR_ELIMIT. Common misspellings that DCMTK and pydicom accept ("ISO-IR 100",
 * "ISO_IR100", "ISO IR 192", "iso_2022_ir_87", "utf8", "UTF-8", "GB2312", "ISO 2022 58",
 * "latin1" ...) are accepted. As in pydicom: an empty value 1 of a multi-valued attribute,
 * and "ISO_IR 6", mean ISO 2022 IR 6; a stand-alone set (ISO_IR 192, GB18030, GBK) as value 1
 * makes the other values meaningless and they are dropped, and one in a later value is
 * dropped; empty later values and duplicated terms are dropped. A value that names only the
 * default ("", "ISO_IR 6") gives count 0. Multi-byte sets as value 1 ("ISO 2022 IR 87" alone)
 * are accepted and start in ASCII. */
int dcm_charset_parse(const char *value, size_t len, struct dcm_charset *cs, struct tr_error *err);
/* The term's defined term as written in (0008,0005), e.g. "ISO 2022 IR 87"; "" for
 * DCM_CS_DEFAULT (the default repertoire is written as an absent or empty value). */
const char *dcm_charset_term_name(enum dcm_charset_term term);

/* True when text in `cs` that contains no byte >= 0x80 and no ESC (0x1B) is plain ASCII and
 * needs no decoding. That holds for every supported set, since the JIS X 0201 Roman G0 of
 * ISO_IR 13 is read as ASCII (0x5C stays the value delimiter, as in pydicom and DCMTK); false
 * only for a struct holding out-of-range terms. dcm_charset_decode() takes this fast path
 * itself. */
bool dcm_charset_ascii_compatible(const struct dcm_charset *cs);

/* Append to `out` the UTF-8 form of the value bytes `in` (a whole value, all multiplicities,
 * backslashes kept) of VR `vr` encoded in `cs` (NULL = default repertoire). Bytes that are
 * invalid in the character set decode to U+FFFD (lenient, as DCMTK and pydicom read); so does
 * the ESC of an escape sequence that is unknown, incomplete or designates a set that `cs`
 * does not declare, after which the value continues in its initial state. Escape sequences
 * are honoured for every set except the stand-alone ones (ISO_IR 192, GB18030, GBK), also
 * for the ISO_IR forms, as pydicom does. Under the default repertoire bytes >= 0x80 are read
 * as Latin-1, as pydicom does. VRs that are not affected by the character set (see
 * dcm_vr_info()->charset) are decoded as the default repertoire with bytes >= 0x80 taken as
 * Latin-1 and no escape processing, as pydicom does. Returns 0, TR_ENOMEM or TR_ELIMIT (the
 * buffer's cap), or TR_EUNSUPPORTED if the C library's iconv lacks a needed converter (glibc
 * has them all); on error `out` is left as it was. Thread-safe: iconv descriptors are cached
 * per thread (see dcm_charset_thread_cleanup()). No padding is removed. */
int dcm_charset_decode(const struct dcm_charset *cs, enum dcm_vr vr, const char *in, size_t len,
                       struct tr_buf *out);

/* Append to `out` the bytes of the UTF-8 text `utf8` encoded in `cs` (for setters and for
 * writing). Fails with TR_ECHARSET, naming the first character that cannot be represented as
 * U+XXXX with its byte offset, when the text does not fit the character set, when it is not
 * valid UTF-8, or when it contains ESC outside a stand-alone set. The default repertoire, and
 * every VR that is not affected by the character set, take ASCII only. For ISO 2022 sets,
 * escape sequences are written as needed (characters go to the set in use, else to the first
 * term of `cs` that has them) and G0 returns to the initial code element before every control
 * character and delimiter and at the end of the value (PS3.5 6.1.2.5.3). No padding is added.
 * Other errors: TR_ENOMEM, TR_ELIMIT (the buffer's cap), TR_EUNSUPPORTED (iconv lacks a
 * converter); on error `out` is left as it was. */
int dcm_charset_encode(const struct dcm_charset *cs, enum dcm_vr vr, const char *utf8, size_t len,
                       struct tr_buf *out, struct tr_error *err);

/* Validate UTF-8: returns the number of bytes of the longest valid prefix. */
size_t dcm_utf8_valid_prefix(const char *s, size_t len);

/* Close the calling thread's cached iconv descriptors now. Threads created with pthreads get
 * this automatically when they exit; call it from threads that end otherwise, or before
 * exit() when a leak checker should see no open descriptors. Decoding after it reopens. */
void dcm_charset_thread_cleanup(void);

#endif
