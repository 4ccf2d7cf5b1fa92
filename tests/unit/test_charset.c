/*
 * test_charset.c - unit tests for src/dicom/charset.c: Specific Character Set parsing,
 * decoding to UTF-8 and encoding back (PS3.3 C.12.1.1.2, PS3.5 6.1 and Annexes H, I, J, K).
 *
 * Hand-written vectors cover every supported set, the examples of PS3.5 Annexes H (Japanese),
 * I (Korean) and K (Chinese), round trips, malformed input, buffer caps and allocation
 * failure. With TELERAD_CHARSET_VECTORS naming a JSON-lines file written by
 * tests/compat/charset_oracle.py, every vector in it is also decoded and compared with what
 * pydicom produced (after pydicom's value-model trimming, see pydicom_normalise()).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dicom_int.h"

#define CAP (1u << 20)

/* ---------------------------------------------------------------------------------------
 * Helpers
 */

static struct dcm_charset charset_of(const char *value)
{
    struct dcm_charset cs;
    struct tr_error err = TR_ERROR_INIT;
    int rc = dcm_charset_parse(value, strlen(value), &cs, &err);
    if (rc != 0)
        fail_msg("parse '%s': %s", value, err.message);
    return cs;
}

/* Decode `raw` (n bytes) in charset `value` and compare with the UTF-8 `expect` (en bytes). */
static void check_decode_n(const char *value, enum dcm_vr vr, const char *raw, size_t n,
                           const char *expect, size_t en)
{
    struct dcm_charset cs = charset_of(value);
    struct tr_buf out;
    tr_buf_init(&out, CAP);
    assert_int_equal(dcm_charset_decode(&cs, vr, raw, n, &out), 0);
    const char *got = out.data ? out.data : "";
    if (out.len != en || memcmp(got, expect, en) != 0) {
        char copy[512];
        snprintf(copy, sizeof(copy), "%s", got);
        tr_buf_release(&out);
        fail_msg("decode in '%s' as %s: got '%s', expected '%s'", value, dcm_vr_name(vr), copy,
                 expect);
    }
    assert_int_equal(dcm_utf8_valid_prefix(got, out.len), out.len);
    tr_buf_release(&out);
}

static void check_decode(const char *value, enum dcm_vr vr, const char *raw, const char *expect)
{
    check_decode_n(value, vr, raw, strlen(raw), expect, strlen(expect));
}

/* Encode `utf8` in charset `value`; compare with `expect` (unless NULL) and decode back. */
static void check_round_trip(const char *value, enum dcm_vr vr, const char *utf8,
                             const char *expect)
{
    struct dcm_charset cs = charset_of(value);
    struct tr_buf enc, dec;
    struct tr_error err = TR_ERROR_INIT;
    tr_buf_init(&enc, CAP);
    tr_buf_init(&dec, CAP);
    int rc = dcm_charset_encode(&cs, vr, utf8, strlen(utf8), &enc, &err);
    if (rc != 0)
        fail_msg("encode '%s' in '%s': %s", utf8, value, err.message);
    if (expect && (enc.len != strlen(expect) || memcmp(enc.data, expect, enc.len) != 0)) {
        char hex[1024] = "";
        for (size_t i = 0; i < enc.len && 3 * i + 4 < sizeof(hex); i++)
            snprintf(hex + 3 * i, 4, "%02x ", (unsigned char)enc.data[i]);
        fail_msg("encode '%s' in '%s': got bytes %s", utf8, value, hex);
    }
    assert_int_equal(dcm_charset_decode(&cs, vr, enc.data, enc.len, &dec), 0);
    if (dec.len != strlen(utf8) || memcmp(dec.data ? dec.data : "", utf8, dec.len) != 0)
        fail_msg("round trip of '%s' in '%s' gave '%s'", utf8, value, dec.data);
    tr_buf_release(&enc);
    tr_buf_release(&dec);
}

/* Encoding must fail with TR_ECHARSET and a message containing `needle`, leaving `out` as
 * it was. */
static void check_encode_fails(const char *value, enum dcm_vr vr, const char *utf8, size_t n,
                               const char *needle)
{
    struct dcm_charset cs = charset_of(value);
    struct tr_buf out;
    struct tr_error err = TR_ERROR_INIT;
    tr_buf_init(&out, CAP);
    assert_int_equal(tr_buf_adds(&out, "keep"), 0);
    assert_int_equal(dcm_charset_encode(&cs, vr, utf8, n, &out, &err), TR_ECHARSET);
    assert_int_equal(err.code, TR_ECHARSET);
    if (!strstr(err.message, needle))
        fail_msg("message '%s' does not contain '%s'", err.message, needle);
    assert_int_equal(out.len, 4);
    assert_string_equal(out.data, "keep");
    tr_buf_release(&out);
}

/* ---------------------------------------------------------------------------------------
 * dcm_charset_parse
 */

static void test_parse_defined_terms(void **state)
{
    (void)state;
    for (int t = 1; t < DCM_CS_TERM_COUNT; t++) {
        const char *name = dcm_charset_term_name((enum dcm_charset_term)t);
        struct dcm_charset cs = charset_of(name);
        assert_int_equal(cs.count, 1);
        assert_int_equal(cs.terms[0], t);
        assert_int_equal(cs.code_extensions, strncmp(name, "ISO 2022", 8) == 0);
    }
    assert_string_equal(dcm_charset_term_name(DCM_CS_DEFAULT), "");
    assert_string_equal(dcm_charset_term_name(DCM_CS_ISO2022_IR_87), "ISO 2022 IR 87");
}

static void test_parse_default_and_padding(void **state)
{
    (void)state;
    struct dcm_charset cs = charset_of("");
    assert_int_equal(cs.count, 0);
    assert_false(cs.code_extensions);
    cs = charset_of("ISO_IR 6");
    assert_int_equal(cs.count, 0);
    cs = charset_of("ISO_IR 100 ");
    assert_int_equal(cs.count, 1);
    assert_int_equal(cs.terms[0], DCM_CS_ISO_IR_100);
    cs = charset_of(" ISO_IR 192");
    assert_int_equal(cs.terms[0], DCM_CS_ISO_IR_192);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_charset_parse(NULL, 0, &cs, &err), 0);
    assert_int_equal(cs.count, 0);
    assert_int_equal(dcm_charset_parse("ISO_IR 100\0\0", 12, &cs, &err), 0);
    assert_int_equal(cs.terms[0], DCM_CS_ISO_IR_100);
}

static void test_parse_multi_valued(void **state)
{
    (void)state;
    /* PS3.5 H.3.1: value 1 empty, i.e. ISO 2022 IR 6 */
    struct dcm_charset cs = charset_of("\\ISO 2022 IR 87");
    assert_int_equal(cs.count, 2);
    assert_int_equal(cs.terms[0], DCM_CS_ISO2022_IR_6);
    assert_int_equal(cs.terms[1], DCM_CS_ISO2022_IR_87);
    assert_true(cs.code_extensions);
    cs = charset_of("ISO 2022 IR 13\\ISO 2022 IR 87\\ISO 2022 IR 159");
    assert_int_equal(cs.count, 3);
    assert_int_equal(cs.terms[2], DCM_CS_ISO2022_IR_159);
    cs = charset_of("ISO_IR 6\\ISO 2022 IR 149");
    assert_int_equal(cs.count, 2);
    assert_int_equal(cs.terms[0], DCM_CS_ISO2022_IR_6);
    /* duplicates and empty later values are dropped */
    cs = charset_of("\\ISO 2022 IR 87\\ISO 2022 IR 87\\");
    assert_int_equal(cs.count, 2);
    cs = charset_of("\\");
    assert_int_equal(cs.count, 0);
    cs = charset_of("ISO_IR 6\\ISO 2022 IR 6\\ISO 2022 IR 87");
    assert_int_equal(cs.count, 2);
    assert_int_equal(cs.terms[0], DCM_CS_ISO2022_IR_6);
    assert_int_equal(cs.terms[1], DCM_CS_ISO2022_IR_87);
    /* stand-alone sets: value 1 wins, later ones are ignored (pydicom) */
    cs = charset_of("ISO_IR 192\\ISO 2022 IR 87");
    assert_int_equal(cs.count, 1);
    assert_int_equal(cs.terms[0], DCM_CS_ISO_IR_192);
    cs = charset_of("ISO 2022 IR 100\\GB18030\\ISO 2022 IR 126");
    assert_int_equal(cs.count, 2);
    assert_int_equal(cs.terms[0], DCM_CS_ISO2022_IR_100);
    assert_int_equal(cs.terms[1], DCM_CS_ISO2022_IR_126);
    /* a multi-byte set as value 1 (not allowed, accepted as pydicom does) */
    cs = charset_of("ISO 2022 IR 87");
    assert_int_equal(cs.count, 1);
    assert_true(cs.code_extensions);
}

static void test_parse_misspellings(void **state)
{
    (void)state;
    static const struct {
        const char *spelling;
        enum dcm_charset_term term;
    } cases[] = {
        {"ISO-IR 100", DCM_CS_ISO_IR_100},   {"ISO_IR100", DCM_CS_ISO_IR_100},
        {"ISO IR 192", DCM_CS_ISO_IR_192},   {"iso_ir 144", DCM_CS_ISO_IR_144},
        {"ISO_2022_IR_87", DCM_CS_ISO2022_IR_87}, {"ISO-2022-IR-149", DCM_CS_ISO2022_IR_149},
        {"ISO 2022 IR100", DCM_CS_ISO2022_IR_100}, {"utf8", DCM_CS_ISO_IR_192},
        {"UTF-8", DCM_CS_ISO_IR_192},        {"GB2312", DCM_CS_ISO2022_IR_58},
        {"ISO 2022 58", DCM_CS_ISO2022_IR_58}, {"ISO 2022 GBK", DCM_CS_GBK},
        {"gb18030", DCM_CS_GB18030},         {"latin1", DCM_CS_ISO_IR_100},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct dcm_charset cs = charset_of(cases[i].spelling);
        if (cs.count != 1 || cs.terms[0] != cases[i].term)
            fail_msg("'%s' parsed as %u terms, first %d", cases[i].spelling, cs.count,
                     (int)cs.terms[0]);
    }
}

static void test_parse_errors(void **state)
{
    (void)state;
    struct dcm_charset cs;
    struct tr_error err = TR_ERROR_INIT;
    const char *v = "ISO_IR 100\\KLINGON";
    assert_int_equal(dcm_charset_parse(v, strlen(v), &cs, &err), TR_EUNSUPPORTED);
    assert_non_null(strstr(err.message, "'KLINGON'"));
    assert_int_equal(cs.count, 0); /* the fallback the callers use */
    tr_error_clear(&err);
    v = "ISO_IR 999";
    assert_int_equal(dcm_charset_parse(v, strlen(v), &cs, &err), TR_EUNSUPPORTED);
    assert_non_null(strstr(err.message, "ISO_IR 999"));
    tr_error_clear(&err);
    v = "\\ISO 2022 IR 100\\ISO 2022 IR 101\\ISO 2022 IR 109\\ISO 2022 IR 110\\ISO 2022 IR 126"
        "\\ISO 2022 IR 127\\ISO 2022 IR 138\\ISO 2022 IR 144";
    assert_int_equal(dcm_charset_parse(v, strlen(v), &cs, &err), TR_ELIMIT);
    /* the error is optional */
    assert_int_equal(dcm_charset_parse("X", 1, &cs, NULL), TR_EUNSUPPORTED);
}

/* ---------------------------------------------------------------------------------------
 * Decoding: single-byte sets (PS3.3 Table C.12-2), values from pydicom's charset_files
 */

static void test_decode_ascii(void **state)
{
    (void)state;
    const char *all[] = {"", "ISO_IR 100", "ISO_IR 13", "ISO_IR 192", "GB18030", "GBK",
                         "\\ISO 2022 IR 87", "ISO 2022 IR 13\\ISO 2022 IR 87",
                         "\\ISO 2022 IR 149", "ISO 2022 IR 58", "ISO_IR 166"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(all); i++) {
        struct dcm_charset cs = charset_of(all[i]);
        assert_true(dcm_charset_ascii_compatible(&cs));
        check_decode(all[i], DCM_VR_PN, "Doe^John=Doe^J\\Smith", "Doe^John=Doe^J\\Smith");
        check_decode(all[i], DCM_VR_LT, "line 1\r\nline 2\ttab", "line 1\r\nline 2\ttab");
        check_decode(all[i], DCM_VR_LO, "", "");
    }
    assert_true(dcm_charset_ascii_compatible(NULL));
}

static void test_decode_single_byte(void **state)
{
    (void)state;
    check_decode("ISO_IR 100", DCM_VR_PN, "Buc^J\xe9r\xf4me", "Buc^Jérôme");
    check_decode("ISO_IR 100", DCM_VR_PN, "\xc4neas^R\xfc" "diger", "Äneas^Rüdiger");
    check_decode("ISO_IR 101", DCM_VR_PN, "Dvo\xf8\xe1k", "Dvořák");
    check_decode("ISO_IR 109", DCM_VR_LO, "\xb1", "ħ");
    check_decode("ISO_IR 110", DCM_VR_LO, "\xe0", "ā");
    check_decode("ISO_IR 126", DCM_VR_PN, "\xc4\xe9\xef\xed\xf5\xf3\xe9\xef\xf2", "Διονυσιος");
    check_decode("ISO_IR 127", DCM_VR_PN, "\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1",
                 "قباني^لنزار");
    check_decode("ISO_IR 138", DCM_VR_PN, "\xf9\xf8\xe5\xef^\xe3\xe1\xe5\xf8\xe4", "שרון^דבורה");
    check_decode("ISO_IR 144", DCM_VR_PN, "\xbb\xee\xda" "ce\xdc\xd1yp\xd3", "Люкceмбypг");
    check_decode("ISO_IR 148", DCM_VR_LO, "\xf0\xfe", "ğş");
    check_decode("ISO_IR 166", DCM_VR_LO, "\xa1\xd2\xc3", "การ");
    check_decode("ISO_IR 13", DCM_VR_PN, "\xd4\xcf\xc0\xde^\xc0\xdb\xb3", "ﾔﾏﾀﾞ^ﾀﾛｳ");
    /* the C1 area of every ISO 8859 set */
    check_decode("ISO_IR 144", DCM_VR_LT, "\x85", "\xc2\x85");
    /* the default repertoire reads bytes >= 0x80 as Latin-1, as pydicom does */
    check_decode("", DCM_VR_LO, "J\xe9r\xf4me", "Jérôme");
}

static void test_decode_single_byte_tables(void **state)
{
    (void)state;
    /* Every byte of every single-byte set decodes to one character and encodes back. */
    const char *names[] = {"ISO_IR 100", "ISO_IR 101", "ISO_IR 109", "ISO_IR 110",
                           "ISO_IR 126", "ISO_IR 127", "ISO_IR 138", "ISO_IR 144",
                           "ISO_IR 148", "ISO_IR 166"};
    for (size_t s = 0; s < TR_ARRAY_SIZE(names); s++) {
        struct dcm_charset cs = charset_of(names[s]);
        unsigned undefined = 0;
        for (unsigned b = 0x80; b <= 0xFF; b++) {
            char in = (char)b;
            struct tr_buf dec, enc;
            tr_buf_init(&dec, CAP);
            tr_buf_init(&enc, CAP);
            assert_int_equal(dcm_charset_decode(&cs, DCM_VR_LT, &in, 1, &dec), 0);
            if (strcmp(dec.data, "\xef\xbf\xbd") == 0) {
                undefined++;
            } else {
                struct tr_error err = TR_ERROR_INIT;
                assert_int_equal(dcm_charset_encode(&cs, DCM_VR_LT, dec.data, dec.len, &enc,
                                                    &err), 0);
                assert_int_equal(enc.len, 1);
                assert_int_equal((unsigned char)enc.data[0], b);
            }
            tr_buf_release(&dec);
            tr_buf_release(&enc);
        }
        /* ISO 8859-1, -2, -4, -5, -9 define all 96; -3 lacks 7, -6 lacks 45, -7 lacks 3,
         * -8 lacks 36, TIS 620 lacks 9 (0xA0, 0xDB-0xDE, 0xFC-0xFF). */
        static const unsigned expect[] = {0, 0, 7, 0, 3, 45, 36, 0, 0, 9};
        if (undefined != expect[s])
            fail_msg("%s: %u undefined bytes", names[s], undefined);
    }
}

/* ---------------------------------------------------------------------------------------
 * Decoding: stand-alone multi-byte sets (PS3.3 Table C.12-5, PS3.5 Annex J)
 */

static void test_decode_utf8(void **state)
{
    (void)state;
    check_decode("ISO_IR 192", DCM_VR_PN, "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1=",
                 "Wang^XiaoDong=王^小東=");
    check_decode("ISO_IR 192", DCM_VR_LT, "\xf0\x9f\x98\x80 ok", "😀 ok");
    /* no code extensions: ESC is an ordinary control character */
    check_decode("ISO_IR 192", DCM_VR_LO, "a\x1b(Bb", "a\x1b(Bb");
}

static void test_decode_gb(void **state)
{
    (void)state;
    check_decode("GB18030", DCM_VR_PN, "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=",
                 "Wang^XiaoDong=王^小东=");
    check_decode("GBK", DCM_VR_PN, "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=",
                 "Wang^XiaoDong=王^小东=");
    /* four-byte GB18030 sequences */
    check_decode("GB18030", DCM_VR_LO, "\x81\x30\x86\x38\x94\x39\xfc\x36", "À😀");
    /* 0x5C as a second byte belongs to the character, it is not a value delimiter */
    check_decode("GBK", DCM_VR_LO, "\x81\x5c", "乗");
    check_decode("GB18030", DCM_VR_PN, "\x81\x5e^a", "乛^a");
}

/* ---------------------------------------------------------------------------------------
 * Decoding: ISO 2022 code extensions (PS3.5 6.1.2.5, Annexes H, I, K)
 */

static const char h31_raw[] = "Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B="
                              "\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B";
static const char h32_raw[] = "\xd4\xcf\xc0\xde^\xc0\xdb\xb3=\x1b$B;3ED\x1b(J^\x1b$BB@O:\x1b(J="
                              "\x1b$B$d$^$@\x1b(J^\x1b$B$?$m$&\x1b(J";
static const char i2_raw[] = "Hong^Gildong=\x1b$)C\xfb\xf3^\x1b$)C\xd1\xce\xd4\xd7="
                             "\x1b$)C\xc8\xab^\x1b$)C\xb1\xe6\xb5\xbf";
static const char k_raw[] = "Zhang^XiaoDong=\x1b$)A\xd5\xc5^\x1b$)A\xd0\xa1\xb6\xab=";

static void test_decode_japanese(void **state)
{
    (void)state;
    /* PS3.5 H.3.1 and H.3.2 */
    check_decode("\\ISO 2022 IR 87", DCM_VR_PN, h31_raw, "Yamada^Tarou=山田^太郎=やまだ^たろう");
    check_decode("ISO 2022 IR 13\\ISO 2022 IR 87", DCM_VR_PN, h32_raw,
                 "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう");
    /* JIS X 0212 (ISO-IR 159) */
    check_decode("\\ISO 2022 IR 87\\ISO 2022 IR 159", DCM_VR_LO,
                 "\x1b$(D0!0$\x1b(B \x1b$BP\"\x1b(B", "丂丌 丐");
    /* '^', '\' and '=' inside a JIS X 0208 run are bytes of kanji, not delimiters */
    check_decode("\\ISO 2022 IR 87", DCM_VR_PN, "\x1b$B<^<\\==\x1b(B^a", "灼尺十^a");
    check_decode("\\ISO 2022 IR 87", DCM_VR_LO, "\x1b$B0\\\x1b(B\\x", "移\\x");
    /* control characters end a double-byte run (PS3.5 6.1.2.5.3) */
    check_decode("\\ISO 2022 IR 87", DCM_VR_LT, "\x1b$B;3\r\nED", "山\r\nED");
    /* ISO_IR 13 read as Shift_JIS, as pydicom does */
    check_decode("ISO_IR 13", DCM_VR_LO, "\x8e\x52\x93\x63\xb1", "山田ｱ");
    /* ESC ( J designates JIS X 0201 Roman, read as ASCII */
    check_decode("ISO 2022 IR 13\\ISO 2022 IR 87", DCM_VR_LO, "\x1b(Ja\\b~", "a\\b~");
}

static void test_decode_korean(void **state)
{
    (void)state;
    /* PS3.5 I.2 */
    check_decode("\\ISO 2022 IR 149", DCM_VR_PN, i2_raw, "Hong^Gildong=洪^吉洞=홍^길동");
    /* G1 stays designated across ASCII in G0; a line end returns to the initial state, in
     * which bytes >= 0x80 are Latin-1 (value 1 empty) */
    check_decode("\\ISO 2022 IR 149", DCM_VR_LT,
                 "\x1b$)C\xb1\xe8 Kim \xc8\xf1\r\n\xb1\xe8", "김 Kim 희\r\n±è");
    /* delimiters by VR: '^' only in PN, '\' not in LT */
    check_decode("\\ISO 2022 IR 149", DCM_VR_PN, "\x1b$)C\xb1\xe8^\xb1\xe8", "김^±è");
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xb1\xe8^\xb1\xe8", "김^김");
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xb1\xe8\\\xb1\xe8", "김\\±è");
    check_decode("\\ISO 2022 IR 149", DCM_VR_LT, "\x1b$)C\xb1\xe8\\\xb1\xe8", "김\\김");
    /* an ESC ( B changes G0 only */
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xb1\xe8\x1b(B\xb1\xe8", "김김");
    /* ISO 2022 IR 149 as value 1 starts with KS X 1001 in G1 (pydicom) */
    check_decode("ISO 2022 IR 149", DCM_VR_LO, "\xb1\xe8", "김");
}

static void test_decode_chinese(void **state)
{
    (void)state;
    /* PS3.5 K.2 */
    check_decode("\\ISO 2022 IR 58", DCM_VR_PN, k_raw, "Zhang^XiaoDong=张^小东=");
    check_decode("GB2312", DCM_VR_LO, "\xd5\xc5", "张");
}

static void test_decode_escapes_single_byte(void **state)
{
    (void)state;
    const char *cs = "ISO 2022 IR 100\\ISO 2022 IR 126\\ISO 2022 IR 144";
    check_decode(cs, DCM_VR_PN, "Buc\x1b-F\xc4\xe9^J\xe9r", "BucΔι^Jér");
    check_decode(cs, DCM_VR_LO, "\xe9\x1b-L\xbb\x1b-A\xe9", "éЛé");
    /* an escape may repeat the initial set */
    check_decode(cs, DCM_VR_LO, "\x1b-A\xe9\x1b(B!", "é!");
    /* ISO_IR forms honour escapes of their own set too (pydicom) */
    check_decode("ISO_IR 100", DCM_VR_LO, "\x1b-A\xe9", "é");
    check_decode("", DCM_VR_LO, "\x1b(Babc", "abc");
}

static void test_decode_malformed(void **state)
{
    (void)state;
    const char *jp = "\\ISO 2022 IR 87";
    /* truncated double-byte characters */
    check_decode(jp, DCM_VR_PN, "\x1b$B;", "\xef\xbf\xbd");
    check_decode(jp, DCM_VR_PN, "\x1b$B;3E\x1b(B", "山\xef\xbf\xbd");
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xb1", "\xef\xbf\xbd");
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xb1" "A", "\xef\xbf\xbd" "A");
    /* unmapped but well-formed KS X 1001 code: one U+FFFD */
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xa2\xff", "\xef\xbf\xbd\xef\xbf\xbd");
    check_decode("\\ISO 2022 IR 149", DCM_VR_LO, "\x1b$)C\xad\xa1!", "\xef\xbf\xbd!");
    /* stray and incomplete ESC */
    check_decode(jp, DCM_VR_LO, "abc\x1b", "abc\xef\xbf\xbd");
    check_decode(jp, DCM_VR_LO, "\x1b$", "\xef\xbf\xbd$");
    check_decode(jp, DCM_VR_LO, "\x1b$(", "\xef\xbf\xbd$(");
    check_decode(jp, DCM_VR_LO, "\x1b\x1b", "\xef\xbf\xbd\xef\xbf\xbd");
    /* unknown escape sequence: the text goes on in the initial state */
    check_decode(jp, DCM_VR_LO, "\x1b(Zabc", "\xef\xbf\xbd(Zabc");
    check_decode(jp, DCM_VR_LO, "\x1b$B;3\x1b(Z;3", "山\xef\xbf\xbd(Z;3");
    /* known, but not declared in (0008,0005) */
    check_decode("ISO_IR 100", DCM_VR_LO, "\x1b$B;3", "\xef\xbf\xbd$B;3");
    check_decode("\\ISO 2022 IR 87", DCM_VR_LO, "\x1b$)C\xb1\xe8", "\xef\xbf\xbd$)C±è");
    /* a lone lead byte, bytes >= 0x80 in a double-byte G0 run */
    check_decode(jp, DCM_VR_LO, "\x1b$B;\x1b(B", "\xef\xbf\xbd");
    check_decode(jp, DCM_VR_LO, "\x1b$B;3\xe9", "山é");
    /* undefined bytes of single-byte sets */
    check_decode("ISO_IR 127", DCM_VR_LO, "\xa1", "\xef\xbf\xbd");
    check_decode("ISO_IR 166", DCM_VR_LO, "\xa0\xff", "\xef\xbf\xbd\xef\xbf\xbd");
    /* JIS X 0201 katakana: bytes outside it */
    check_decode("ISO_IR 13", DCM_VR_LO, "\xa0\xe0", "\xef\xbf\xbd\xef\xbf\xbd");
    check_decode("ISO 2022 IR 87", DCM_VR_LO, "\xe9", "\xef\xbf\xbd");
    /* invalid UTF-8: one U+FFFD per maximal subpart (as Python) */
    check_decode("ISO_IR 192", DCM_VR_LO, "\xc0\x80", "\xef\xbf\xbd\xef\xbf\xbd");
    check_decode("ISO_IR 192", DCM_VR_LO, "\xed\xa0\x80",
                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    check_decode("ISO_IR 192", DCM_VR_LO, "\xf4\x90\x80\x80",
                 "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    check_decode("ISO_IR 192", DCM_VR_LO, "\xe4\xb8" "A", "\xef\xbf\xbd" "A");
    check_decode("ISO_IR 192", DCM_VR_LO, "\xf0\x9f\x98", "\xef\xbf\xbd");
    check_decode("ISO_IR 192", DCM_VR_LO, "a\xff" "b", "a\xef\xbf\xbd" "b");
    /* GB18030 / GBK */
    check_decode("GB18030", DCM_VR_LO, "\xcd", "\xef\xbf\xbd");
    check_decode("GB18030", DCM_VR_LO, "a\x80" "b\xff", "a\xef\xbf\xbd" "b\xef\xbf\xbd");
    check_decode("GB18030", DCM_VR_LO, "\x81\x30\x86", "\xef\xbf\xbd");
    check_decode("GBK", DCM_VR_LO, "\xcd\xf5\xcd", "王\xef\xbf\xbd");
    /* NUL bytes pass through */
    check_decode_n("ISO_IR 100", DCM_VR_LO, "a\0\xe9", 3, "a\0é", 4);
}

static void test_decode_fuzz_no_crash(void **state)
{
    (void)state;
    /* Random bytes, heavy in ESC and delimiters, in every set: must decode to valid UTF-8.
     * A fixed linear congruential generator keeps the test repeatable. */
    const char *sets[] = {"", "ISO_IR 100", "ISO_IR 13", "ISO_IR 192", "GB18030", "GBK",
                          "ISO_IR 166", "\\ISO 2022 IR 87\\ISO 2022 IR 159",
                          "ISO 2022 IR 13\\ISO 2022 IR 87", "\\ISO 2022 IR 149",
                          "\\ISO 2022 IR 58\\ISO 2022 IR 100"};
    static const char alphabet[] = "\x1b$()-BJIDCAL^=\\\r\n\x21\x7e\xa1\xfe\x80\xff\x8f\x5c";
    uint32_t seed = 12345;
    enum dcm_vr vrs[] = {DCM_VR_PN, DCM_VR_LO, DCM_VR_LT, DCM_VR_CS};
    for (int round = 0; round < 4000; round++) {
        char in[64];
        size_t n = (size_t)(round % 64);
        for (size_t i = 0; i < n; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = seed >> 16;
            in[i] = (r & 1) ? (char)(r >> 1) : alphabet[(r >> 1) % (sizeof(alphabet) - 1)];
        }
        struct dcm_charset cs = charset_of(sets[round % TR_ARRAY_SIZE(sets)]);
        struct tr_buf out;
        tr_buf_init(&out, CAP);
        assert_int_equal(dcm_charset_decode(&cs, vrs[round % 4], in, n, &out), 0);
        assert_int_equal(dcm_utf8_valid_prefix(out.data ? out.data : "", out.len), out.len);
        tr_buf_release(&out);
    }
}

static void test_decode_other_vrs(void **state)
{
    (void)state;
    /* VRs outside the character set are the default repertoire, bytes >= 0x80 Latin-1,
     * whatever (0008,0005) says, and no escape processing (pydicom) */
    check_decode("ISO_IR 192", DCM_VR_CS, "\xc4" "BC", "ÄBC");
    check_decode("\\ISO 2022 IR 87", DCM_VR_UI, "1.2\x1b$B", "1.2\x1b$B");
    check_decode("GB18030", DCM_VR_DA, "2024\xb0", "2024°");
    check_decode("ISO_IR 144", DCM_VR_AE, "\xbb", "»");
}

static void test_decode_long_value(void **state)
{
    (void)state;
    /* Exercises the chunked iconv paths: 30000 Korean, Japanese and GB18030 characters. */
    size_t n = 30000;
    char *kr = malloc(2 * n + 4), *jp = malloc(2 * n + 7), *gb = malloc(2 * n);
    char *expect = malloc(3 * n + 1);
    assert_non_null(kr);
    assert_non_null(jp);
    assert_non_null(gb);
    assert_non_null(expect);
    memcpy(kr, "\x1b$)C", 4);
    memcpy(jp, "\x1b$B", 3);
    for (size_t i = 0; i < n; i++) {
        memcpy(kr + 4 + 2 * i, "\xb1\xe8", 2);
        memcpy(jp + 3 + 2 * i, "$d", 2);
        memcpy(gb + 2 * i, "\xcd\xf5", 2);
    }
    memcpy(jp + 3 + 2 * n, "\x1b(B", 3);
    const struct {
        const char *cs, *in;
        size_t len;
        const char *ch;
    } cases[] = {
        {"\\ISO 2022 IR 149", kr, 2 * n + 4, "김"},
        {"\\ISO 2022 IR 87", jp, 2 * n + 6, "や"},
        {"GB18030", gb, 2 * n, "王"},
    };
    for (size_t c = 0; c < TR_ARRAY_SIZE(cases); c++) {
        for (size_t i = 0; i < n; i++)
            memcpy(expect + 3 * i, cases[c].ch, 3);
        struct dcm_charset cs = charset_of(cases[c].cs);
        struct tr_buf out;
        tr_buf_init(&out, CAP);
        assert_int_equal(dcm_charset_decode(&cs, DCM_VR_LT, cases[c].in, cases[c].len, &out),
                         0);
        assert_int_equal(out.len, 3 * n);
        assert_memory_equal(out.data, expect, 3 * n);
        tr_buf_release(&out);
    }
    free(kr);
    free(jp);
    free(gb);
    free(expect);
}

/* ---------------------------------------------------------------------------------------
 * Encoding
 */

static void test_encode_round_trips(void **state)
{
    (void)state;
    /* The PS3.5 examples give back their exact bytes. */
    check_round_trip("\\ISO 2022 IR 87", DCM_VR_PN, "Yamada^Tarou=山田^太郎=やまだ^たろう",
                     h31_raw);
    check_round_trip("ISO 2022 IR 13\\ISO 2022 IR 87", DCM_VR_PN,
                     "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", h32_raw);
    check_round_trip("\\ISO 2022 IR 149", DCM_VR_PN, "Hong^Gildong=洪^吉洞=홍^길동", i2_raw);
    check_round_trip("\\ISO 2022 IR 58", DCM_VR_PN, "Zhang^XiaoDong=张^小东=", k_raw);
    check_round_trip("ISO_IR 100", DCM_VR_PN, "Buc^Jérôme", "Buc^J\xe9r\xf4me");
    check_round_trip("ISO_IR 144", DCM_VR_PN, "Люкceмбypг", "\xbb\xee\xda" "ce\xdc\xd1yp\xd3");
    check_round_trip("ISO_IR 127", DCM_VR_PN, "قباني^لنزار",
                     "\xe2\xc8\xc7\xe6\xea^\xe4\xe6\xd2\xc7\xd1");
    check_round_trip("ISO_IR 166", DCM_VR_LO, "การ", "\xa1\xd2\xc3");
    check_round_trip("ISO_IR 13", DCM_VR_PN, "ﾔﾏﾀﾞ^ﾀﾛｳ", "\xd4\xcf\xc0\xde^\xc0\xdb\xb3");
    check_round_trip("ISO_IR 192", DCM_VR_PN, "Wang^XiaoDong=王^小東=",
                     "Wang^XiaoDong=\xe7\x8e\x8b^\xe5\xb0\x8f\xe6\x9d\xb1=");
    check_round_trip("GB18030", DCM_VR_PN, "Wang^XiaoDong=王^小东=",
                     "Wang^XiaoDong=\xcd\xf5^\xd0\xa1\xb6\xab=");
    check_round_trip("GB18030", DCM_VR_LO, "À😀", "\x81\x30\x86\x38\x94\x39\xfc\x36");
    check_round_trip("GBK", DCM_VR_LO, "王小东", "\xcd\xf5\xd0\xa1\xb6\xab");
    check_round_trip("", DCM_VR_LO, "plain ASCII", "plain ASCII");
    /* JIS X 0212, and back to ASCII at the space, at the end and before control characters
     * (PS3.5 6.1.2.5.3) */
    check_round_trip("\\ISO 2022 IR 87\\ISO 2022 IR 159", DCM_VR_LO, "丂丌 丐",
                     "\x1b$(D0!0$\x1b(B \x1b$BP\"\x1b(B");
    check_round_trip("\\ISO 2022 IR 87", DCM_VR_LT, "山田\r\nabc\t太",
                     "\x1b$B;3ED\x1b(B\r\nabc\t\x1b$BB@\x1b(B");
    check_round_trip("\\ISO 2022 IR 87", DCM_VR_LO, "山\\田",
                     "\x1b$B;3\x1b(B\\\x1b$BED\x1b(B");
    /* Korean: G1 designation again after each delimiter, not before ASCII */
    check_round_trip("\\ISO 2022 IR 149", DCM_VR_LT, "김 Kim 희\r\n김",
                     "\x1b$)C\xb1\xe8 Kim \xc8\xf1\r\n\x1b$)C\xb1\xe8");
    /* several single-byte sets */
    check_round_trip("ISO 2022 IR 100\\ISO 2022 IR 144\\ISO 2022 IR 126", DCM_VR_LO,
                     "Jérôme Люк Δ é", "J\xe9r\xf4me \x1b-L\xbb\xee\xda \x1b-F\xc4 \x1b-A\xe9");
    check_round_trip("ISO 2022 IR 100\\ISO 2022 IR 144", DCM_VR_PN, "Люк^Jé",
                     "\x1b-L\xbb\xee\xda^J\xe9");
    /* Japanese with katakana in G1 and kanji. After a double-byte G0 run, G1 is designated
     * again before it is used: readers that keep one current set per escape sequence
     * (DCMTK, pydicom) need that. */
    check_round_trip("ISO 2022 IR 13\\ISO 2022 IR 87", DCM_VR_LO, "ｱ山ｱa",
                     "\xb1\x1b$B;3\x1b(J\x1b)I\xb1" "a");
    /* mixed: Latin-1 value 1 with Japanese */
    check_round_trip("ISO 2022 IR 100\\ISO 2022 IR 87", DCM_VR_LO, "é山é",
                     "\xe9\x1b$B;3\x1b(B\x1b-A\xe9");
    check_round_trip("ISO 2022 IR 144\\ISO 2022 IR 87", DCM_VR_LO, "Л山Л",
                     "\xbb\x1b$B;3\x1b(B\x1b-L\xbb");
}

static void test_encode_errors(void **state)
{
    (void)state;
    check_encode_fails("ISO_IR 100", DCM_VR_LO, "ab中", 5, "U+4E2D");
    check_encode_fails("ISO_IR 100", DCM_VR_LO, "ab中", 5, "byte 2");
    check_encode_fails("", DCM_VR_PN, "Jérôme", 8, "U+00E9");
    check_encode_fails("", DCM_VR_PN, "Jérôme", 8, "default repertoire");
    check_encode_fails("ISO_IR 192", DCM_VR_CS, "É", 2, "U+00C9"); /* CS is ASCII only */
    check_encode_fails("\\ISO 2022 IR 87", DCM_VR_PN, "김", 3, "U+AE40");
    check_encode_fails("\\ISO 2022 IR 87", DCM_VR_PN, "김", 3, "ISO 2022 IR 6\\ISO 2022 IR 87");
    check_encode_fails("ISO_IR 13", DCM_VR_LO, "山", 3, "U+5C71");
    check_encode_fails("ISO_IR 13", DCM_VR_LO, "¥", 2, "U+00A5");
    check_encode_fails("GBK", DCM_VR_LO, "a😀", 5, "U+1F600");
    check_encode_fails("ISO_IR 192", DCM_VR_LO, "a\xff", 2, "invalid UTF-8 at byte 1");
    check_encode_fails("ISO_IR 100", DCM_VR_LO, "a\xc3", 2, "invalid UTF-8");
    check_encode_fails("\\ISO 2022 IR 87", DCM_VR_LO, "a\x1b(B", 4, "U+001B");
    check_encode_fails("", DCM_VR_LO, "\x1b", 1, "U+001B");
}

/* ---------------------------------------------------------------------------------------
 * Caps, allocation failure, threads, UTF-8 validation
 */

static void test_buffer_cap(void **state)
{
    (void)state;
    struct dcm_charset cs = charset_of("ISO_IR 100");
    struct tr_buf out;
    tr_buf_init(&out, 8);
    assert_int_equal(tr_buf_adds(&out, "ab"), 0);
    /* "Jérôme" is 8 bytes in UTF-8: 2 + 8 > 8 */
    assert_int_equal(dcm_charset_decode(&cs, DCM_VR_PN, "J\xe9r\xf4me", 6, &out), TR_ELIMIT);
    assert_int_equal(out.len, 2);
    assert_string_equal(out.data, "ab");
    assert_int_equal(dcm_charset_decode(&cs, DCM_VR_PN, "abcdefg", 7, &out), TR_ELIMIT);
    assert_int_equal(out.len, 2);
    assert_int_equal(dcm_charset_decode(&cs, DCM_VR_PN, "J\xe9r", 3, &out), 0);
    assert_string_equal(out.data, "abJér");
    tr_buf_release(&out);

    /* a long multi-byte value against a cap in the middle of the iconv output */
    struct dcm_charset kr = charset_of("\\ISO 2022 IR 149");
    char in[4 + 2 * 2000];
    memcpy(in, "\x1b$)C", 4);
    for (size_t i = 0; i < 2000; i++)
        memcpy(in + 4 + 2 * i, "\xb1\xe8", 2);
    tr_buf_init(&out, 4000);
    assert_int_equal(dcm_charset_decode(&kr, DCM_VR_LT, in, sizeof(in), &out), TR_ELIMIT);
    assert_int_equal(out.len, 0);
    tr_buf_release(&out);

    struct tr_error err = TR_ERROR_INIT;
    tr_buf_init(&out, 5);
    assert_int_equal(dcm_charset_encode(&kr, DCM_VR_LO, "김김", 6, &out, &err), TR_ELIMIT);
    assert_int_equal(err.code, TR_ELIMIT);
    assert_int_equal(out.len, 0);
    tr_buf_release(&out);
}

static void test_allocation_failure(void **state)
{
    (void)state;
    struct dcm_charset cs = charset_of("\\ISO 2022 IR 87");
    for (long k = 0; k < 4; k++) {
        struct tr_buf out;
        struct tr_error err = TR_ERROR_INIT;
        tr_buf_init(&out, CAP);
        tr_alloc_fail_after(k);
        int rc = dcm_charset_decode(&cs, DCM_VR_PN, h31_raw, sizeof(h31_raw) - 1, &out);
        int rc2 = dcm_charset_encode(&cs, DCM_VR_PN, "山田", 6, &out, &err);
        tr_alloc_fail_after(-1);
        assert_true(rc == 0 || rc == TR_ENOMEM);
        assert_true(rc2 == 0 || rc2 == TR_ENOMEM);
        if (k == 0) {
            assert_int_equal(rc, TR_ENOMEM);
            assert_int_equal(out.len, 0);
            assert_int_equal(err.code, TR_ENOMEM);
        }
        tr_buf_release(&out);
    }
}

struct thread_job {
    const char *charset, *raw, *expect;
    int failures;
};

static void *thread_main(void *arg)
{
    struct thread_job *job = arg;
    struct dcm_charset cs;
    if (dcm_charset_parse(job->charset, strlen(job->charset), &cs, NULL) != 0) {
        job->failures++;
        return NULL;
    }
    for (int i = 0; i < 300; i++) {
        struct tr_buf out;
        tr_buf_init(&out, CAP);
        if (dcm_charset_decode(&cs, DCM_VR_PN, job->raw, strlen(job->raw), &out) != 0 ||
            strcmp(out.data, job->expect) != 0)
            job->failures++;
        tr_buf_release(&out);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    /* Per-thread iconv descriptors: concurrent use is correct, and they are closed when the
     * threads exit (the leak checker of the sanitizer build would see them otherwise). */
    struct thread_job jobs[6] = {
        {"\\ISO 2022 IR 87", h31_raw, "Yamada^Tarou=山田^太郎=やまだ^たろう", 0},
        {"\\ISO 2022 IR 149", i2_raw, "Hong^Gildong=洪^吉洞=홍^길동", 0},
        {"\\ISO 2022 IR 58", k_raw, "Zhang^XiaoDong=张^小东=", 0},
        {"GB18030", "\xcd\xf5^\xd0\xa1\xb6\xab", "王^小东", 0},
        {"ISO_IR 144", "\xbb\xee\xda", "Люк", 0},
        {"ISO 2022 IR 13\\ISO 2022 IR 87", h32_raw, "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう", 0},
    };
    pthread_t tid[6];
    for (int i = 0; i < 6; i++)
        assert_int_equal(pthread_create(&tid[i], NULL, thread_main, &jobs[i]), 0);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pthread_join(tid[i], NULL), 0);
        assert_int_equal(jobs[i].failures, 0);
    }
}

static void test_utf8_valid_prefix(void **state)
{
    (void)state;
    assert_int_equal(dcm_utf8_valid_prefix("", 0), 0);
    assert_int_equal(dcm_utf8_valid_prefix("abc", 3), 3);
    assert_int_equal(dcm_utf8_valid_prefix("a\xc3\xa9", 3), 3);
    assert_int_equal(dcm_utf8_valid_prefix("a\xc3", 2), 1);
    assert_int_equal(dcm_utf8_valid_prefix("ab\xed\xa0\x80", 5), 2);   /* surrogate */
    assert_int_equal(dcm_utf8_valid_prefix("\xf4\x8f\xbf\xbf", 4), 4); /* U+10FFFF */
    assert_int_equal(dcm_utf8_valid_prefix("\xf4\x90\x80\x80", 4), 0);
    assert_int_equal(dcm_utf8_valid_prefix("\xe0\x9f\xbf", 3), 0); /* overlong */
    assert_int_equal(dcm_utf8_valid_prefix("\xf0\x9f\x98\x80!", 5), 5);
}

/* ---------------------------------------------------------------------------------------
 * Oracle vectors from tests/compat/charset_oracle.py (pydicom 2.3)
 */

/* Python's str.strip() whitespace, restricted to what can occur here. */
static bool py_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f');
}

static size_t rstrip_nul_space(const char *s, size_t n)
{
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\0'))
        n--;
    return n;
}

/* Apply pydicom 2.3's value-model trimming (pydicom/values.py, valuerep.py) to our decoded
 * UTF-8, which keeps every byte of the value. This is the data set layer's job, not the
 * character set's, so it lives here. */
static void pydicom_normalise(const char *vr, const char *s, size_t n, struct tr_buf *out)
{
    bool per_value_rstrip = !strcmp(vr, "SH") || !strcmp(vr, "LO") || !strcmp(vr, "UC");
    bool pn = !strcmp(vr, "PN"), ae = !strcmp(vr, "AE");
    if (!strcmp(vr, "UR")) { /* convert_UR_string: rstrip() */
        while (n > 0 && py_space(s[n - 1]))
            n--;
        tr_buf_add(out, s, n);
        return;
    }
    if (!per_value_rstrip && !ae) /* PN, text and the other string VRs: trailing padding */
        n = rstrip_nul_space(s, n);
    if (!pn && !per_value_rstrip && !ae) {
        tr_buf_add(out, s, n);
        return;
    }
    size_t pos = 0;
    for (;;) {
        size_t end = pos;
        while (end < n && s[end] != '\\')
            end++;
        const char *v = s + pos;
        size_t vn = end - pos;
        if (per_value_rstrip) {
            vn = rstrip_nul_space(v, vn);
        } else if (ae) {
            while (vn > 0 && py_space(v[0])) {
                v++;
                vn--;
            }
            while (vn > 0 && py_space(v[vn - 1]))
                vn--;
        } else {
            /* PersonName: trailing empty component groups are dropped */
            while (vn > 0 && v[vn - 1] == '=')
                vn--;
        }
        if (pos > 0)
            tr_buf_addc(out, '\\');
        tr_buf_add(out, v, vn);
        if (end >= n)
            break;
        pos = end + 1;
    }
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void print_escaped(const char *label, const char *s, size_t n)
{
    fprintf(stderr, "    %s: \"", label);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F || c == '"' || c == '\\')
            fprintf(stderr, "\\x%02x", c);
        else
            fputc(c, stderr);
    }
    fprintf(stderr, "\"\n");
}

/* Check one vector; returns true if equal. */
static bool check_vector(json_t *v, unsigned long line, unsigned long *fallbacks)
{
    const char *file = json_string_value(json_object_get(v, "file"));
    const char *path = json_string_value(json_object_get(v, "path"));
    const char *vr_name = json_string_value(json_object_get(v, "vr"));
    const char *hex = json_string_value(json_object_get(v, "raw"));
    json_t *expected = json_object_get(v, "expected");
    json_t *charset = json_object_get(v, "charset");
    if (!file || !vr_name || !hex || !json_is_string(expected) || !json_is_array(charset))
        fail_msg("vector on line %lu lacks fields", line);
    if (!path)
        path = json_string_value(json_object_get(v, "tag"));

    struct tr_buf value, raw, got, norm;
    tr_buf_init(&value, 4096);
    tr_buf_init(&raw, 1u << 26);
    tr_buf_init(&got, 1u << 28);
    tr_buf_init(&norm, 1u << 28);
    size_t i;
    json_t *term;
    json_array_foreach(charset, i, term) {
        if (i > 0)
            tr_buf_addc(&value, '\\');
        tr_buf_adds(&value, json_string_value(term) ? json_string_value(term) : "");
    }
    struct dcm_charset cs;
    if (dcm_charset_parse(value.data, value.len, &cs, NULL) != 0) {
        memset(&cs, 0, sizeof(cs)); /* pydicom reads an unknown term as its default */
        (*fallbacks)++;
    }
    size_t hn = strlen(hex);
    for (size_t k = 0; k + 1 < hn; k += 2) {
        int hi = hex_value(hex[k]), lo = hex_value(hex[k + 1]);
        if (hi < 0 || lo < 0)
            fail_msg("bad hex on line %lu", line);
        tr_buf_addc(&raw, (char)(hi * 16 + lo));
    }
    enum dcm_vr vr = dcm_vr_from_string(vr_name);
    if (vr == DCM_VR_NONE)
        fail_msg("unknown VR '%s' on line %lu", vr_name, line);
    int rc = dcm_charset_decode(&cs, vr, raw.data, raw.len, &got);
    pydicom_normalise(vr_name, got.data ? got.data : "", got.len, &norm);
    const char *exp = json_string_value(expected);
    size_t en = json_string_length(expected);
    bool equal = rc == 0 && norm.len == en && memcmp(norm.data ? norm.data : "", exp, en) == 0;
    if (!equal) {
        fprintf(stderr, "  MISMATCH line %lu: %s %s %s charset '%s' rc %d\n", line, file, path,
                vr_name, value.data ? value.data : "", rc);
        print_escaped("raw     ", raw.data ? raw.data : "", raw.len);
        print_escaped("pydicom ", exp, en);
        print_escaped("telerad ", norm.data ? norm.data : "", norm.len);
    }
    tr_buf_release(&value);
    tr_buf_release(&raw);
    tr_buf_release(&got);
    tr_buf_release(&norm);
    return equal;
}

static void test_oracle_vectors(void **state)
{
    (void)state;
    const char *name = getenv("TELERAD_CHARSET_VECTORS");
    if (!name || !*name) {
        print_message("TELERAD_CHARSET_VECTORS not set: oracle vectors skipped\n");
        skip();
    }
    FILE *f = fopen(name, "r");
    if (!f)
        fail_msg("cannot open %s", name);
    char *line = NULL;
    size_t cap = 0;
    unsigned long n = 0, equal = 0, lineno = 0, fallbacks = 0;
    unsigned long synth = 0, synth_equal = 0;
    while (getline(&line, &cap, f) != -1) {
        lineno++;
        if (line[0] == '\n' || line[0] == '\0')
            continue;
        json_error_t jerr;
        json_t *v = json_loads(line, JSON_ALLOW_NUL, &jerr);
        if (!v)
            fail_msg("%s:%lu: %s", name, lineno, jerr.text);
        const char *file = json_string_value(json_object_get(v, "file"));
        bool synthetic = file && strncmp(file, "synthetic", 9) == 0;
        bool ok = check_vector(v, lineno, &fallbacks);
        n++;
        equal += ok;
        synth += synthetic;
        synth_equal += synthetic && ok;
        json_decref(v);
    }
    free(line);
    fclose(f);
    fprintf(stderr,
            "charset oracle: %lu vectors, %lu equal (%lu from pydicom's files: %lu equal; "
            "%lu synthetic: %lu equal); %lu with an unknown term read as the default\n",
            n, equal, n - synth, equal - synth_equal, synth, synth_equal, fallbacks);
    assert_true(n > 0);
    assert_int_equal(equal, n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_defined_terms),
        cmocka_unit_test(test_parse_default_and_padding),
        cmocka_unit_test(test_parse_multi_valued),
        cmocka_unit_test(test_parse_misspellings),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_decode_ascii),
        cmocka_unit_test(test_decode_single_byte),
        cmocka_unit_test(test_decode_single_byte_tables),
        cmocka_unit_test(test_decode_utf8),
        cmocka_unit_test(test_decode_gb),
        cmocka_unit_test(test_decode_japanese),
        cmocka_unit_test(test_decode_korean),
        cmocka_unit_test(test_decode_chinese),
        cmocka_unit_test(test_decode_escapes_single_byte),
        cmocka_unit_test(test_decode_malformed),
        cmocka_unit_test(test_decode_fuzz_no_crash),
        cmocka_unit_test(test_decode_other_vrs),
        cmocka_unit_test(test_decode_long_value),
        cmocka_unit_test(test_encode_round_trips),
        cmocka_unit_test(test_encode_errors),
        cmocka_unit_test(test_buffer_cap),
        cmocka_unit_test(test_allocation_failure),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_utf8_valid_prefix),
        cmocka_unit_test(test_oracle_vectors),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    dcm_charset_thread_cleanup();
    return failed;
}
