/*
 * test_hl7.c - the HL7 v2 parser and writer (src/hl7/hl7.c): separators from MSH-1/MSH-2,
 * addressing of repetitions, components and subcomponents, empty vs missing vs null, escape
 * sequences both ways, character sets, the writer's round trip, and errors that name the
 * segment, field and byte offset.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "hl7.h"

static const char orm[] =
    "MSH|^~\\&|HIS|TXGEN_HIS|TELERAD|TELERAD|20261122103000||ORM^O01|MSG00001|P|2.3.1\r"
    "PID|1||MRN12345^^^TXGEN&1.2.3&ISO^MR~998877^^^SSA^SS||DEMO^JANE^Q||\"\"|F\r"
    "ORC|NW|ORD1001^HIS|ACC2001^RIS||SC||^^^20261122103000^^S\r"
    "OBR|1|ORD1001^HIS|ACC2001^RIS|CTHEAD^CT HEAD \\T\\ NECK^L\r"
    "OBR|2|ORD1002^HIS|ACC2002^RIS|XR^XR CHEST\r";

static struct hl7_message *parse_ok(const char *text, size_t len)
{
    struct hl7_message *m = NULL;
    struct tr_error err = TR_ERROR_INIT;
    int rc = hl7_parse(text, len, NULL, &m, &err);
    if (rc != 0)
        fail_msg("parse failed: %s", err.message);
    return m;
}

static void expect(const struct hl7_message *m, const char *path, int presence, const char *value)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    struct tr_error err = TR_ERROR_INIT;
    int rc = hl7_get(m, path, &b, &err);
    if (rc != presence)
        fail_msg("%s: presence %d, expected %d (%s)", path, rc, presence, err.message);
    if (value && strcmp(b.data ? b.data : "", value) != 0)
        fail_msg("%s: \"%s\", expected \"%s\"", path, b.data ? b.data : "", value);
    tr_buf_release(&b);
}

static void addressing(void **state)
{
    (void)state;
    struct hl7_message *m = parse_ok(orm, sizeof(orm) - 1);
    assert_int_equal(hl7_segment_count(m), 5);
    assert_string_equal(hl7_segment_name(m, 1), "PID");
    assert_int_equal(hl7_field_count(m, 0), 12);
    assert_int_equal(hl7_message_charset(m), HL7_CHARSET_UTF8); /* empty MSH-18, ASCII bytes */
    expect(m, "MSH-1", HL7_VALUE, "|");
    expect(m, "MSH-2", HL7_VALUE, "^~\\&");
    expect(m, "MSH-9", HL7_VALUE, "ORM^O01");
    expect(m, "MSH-9.2", HL7_VALUE, "O01");
    expect(m, "MSH-10", HL7_VALUE, "MSG00001");
    expect(m, "PID-3", HL7_VALUE, "MRN12345^^^TXGEN&1.2.3&ISO^MR");
    expect(m, "PID-3[1].1", HL7_VALUE, "MRN12345");
    expect(m, "PID-3.1", HL7_VALUE, "MRN12345");
    expect(m, "PID-3[1].4", HL7_VALUE, "TXGEN&1.2.3&ISO");
    expect(m, "PID-3[1].4.2", HL7_VALUE, "1.2.3");
    expect(m, "PID-3[2].1", HL7_VALUE, "998877");
    expect(m, "PID-3[2].5", HL7_VALUE, "SS");
    expect(m, "OBR[2]-3.1", HL7_VALUE, "ACC2002");
    expect(m, "OBR-4.2", HL7_VALUE, "CT HEAD & NECK");
    expect(m, "ORC-7.6", HL7_VALUE, "S");
    /* Empty, missing, null. */
    expect(m, "PID-2", HL7_EMPTY, "");
    expect(m, "PID-3[1].2", HL7_EMPTY, "");
    expect(m, "PID-7", HL7_NULL, "");
    expect(m, "PID-9", HL7_MISSING, "");
    expect(m, "PID-3[3]", HL7_MISSING, "");
    expect(m, "PID-3[1].6", HL7_MISSING, "");
    expect(m, "PID-3[1].4.4", HL7_MISSING, "");
    expect(m, "OBR[3]-1", HL7_MISSING, "");
    expect(m, "ZZZ-1", HL7_MISSING, "");
    /* Counts. */
    assert_int_equal(hl7_count(m, "PID-3"), 2);
    assert_int_equal(hl7_count(m, "PID-3[1]"), 5);
    assert_int_equal(hl7_count(m, "PID-3[1].4"), 3);
    assert_int_equal(hl7_count(m, "PID-2"), 0);
    assert_int_equal(hl7_count(m, "PID-40"), 0);
    assert_int_equal(hl7_segment_find(m, "OBR", 2), 4);
    assert_int_equal(hl7_segment_find(m, "OBR", 3), -1);
    char text[8];
    assert_int_equal(hl7_get_text(m, "PID-5.1", text, sizeof(text)), HL7_VALUE);
    assert_string_equal(text, "DEMO");
    assert_int_equal(hl7_get_text(m, "OBR-4.2", text, sizeof(text)), HL7_VALUE);
    assert_string_equal(text, "CT HEAD"); /* truncated to fit */
    hl7_message_free(m);
}

static void paths(void **state)
{
    (void)state;
    struct hl7_path p;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(hl7_path_parse("OBX[2]-5[3].1.2", &p, &err), 0);
    assert_string_equal(p.segment, "OBX");
    assert_int_equal(p.occurrence, 2);
    assert_int_equal(p.field, 5);
    assert_int_equal(p.repetition, 3);
    assert_int_equal(p.component, 1);
    assert_int_equal(p.subcomponent, 2);
    const char *bad[] = {"PID",     "PID-",        "PID-0", "pid-3",  "PID-3.",       "PID-3[0]",
                         "PID-3[1", "PID-3.1.2.3", "PID3",  "PID-3x", "PID-99999999", "P1D-3x"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(bad); i++) {
        tr_error_clear(&err);
        assert_int_equal(hl7_path_parse(bad[i], &p, &err), TR_EINVAL);
        assert_non_null(strstr(err.message, "not an HL7 address"));
    }
}

/* Every separator and escape of a message with unusual separators. */
static void every_delimiter(void **state)
{
    (void)state;
    static const char text[] = "MSH$@*!%#$HIS$FAC$$$$$ORM@O01$ID1$P$2.7\r"
                               "PID$1$$A1@@@AUTH%1.2%ISO*A2$$O!F!BRIEN@JO!S!E!T!!R!!E!!P!\r";
    struct hl7_message *m = parse_ok(text, sizeof(text) - 1);
    const struct hl7_encoding *e = hl7_message_encoding(m);
    assert_int_equal(e->field, '$');
    assert_int_equal(e->component, '@');
    assert_int_equal(e->repetition, '*');
    assert_int_equal(e->escape, '!');
    assert_int_equal(e->subcomponent, '%');
    assert_int_equal(e->truncation, '#');
    expect(m, "MSH-2", HL7_VALUE, "@*!%#");
    expect(m, "MSH-9.1", HL7_VALUE, "ORM");
    expect(m, "PID-3[1].4.2", HL7_VALUE, "1.2");
    expect(m, "PID-3[2].1", HL7_VALUE, "A2");
    expect(m, "PID-5.1", HL7_VALUE, "O$BRIEN");
    expect(m, "PID-5.2", HL7_VALUE, "JO@E%*!#");
    /* Setting escapes them again, with this message's characters. */
    assert_int_equal(hl7_set(m, "PID-6.1", "a$b@c*d!e%f#g", NULL), 0);
    const char *raw;
    size_t len;
    struct hl7_path p;
    hl7_path_parse("PID-6", &p, NULL);
    assert_int_equal(hl7_get_raw(m, &p, &raw, &len), HL7_VALUE);
    assert_int_equal(len, strlen("a!F!b!S!c!R!d!E!e!T!f!P!g"));
    assert_memory_equal(raw, "a!F!b!S!c!R!d!E!e!T!f!P!g", len);
    expect(m, "PID-6.1", HL7_VALUE, "a$b@c*d!e%f#g");
    hl7_message_free(m);
}

static void escapes_decoded(void **state)
{
    (void)state;
    struct hl7_encoding enc;
    hl7_encoding_default(&enc);
    static const struct {
        const char *raw, *text;
    } cases[] = {
        {"a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f", "a|b^c&d~e\\f"},
        {"\\X41\\\\X4243\\", "ABC"},
        {"caf\\XC3A9\\", "caf\xc3\xa9"},
        {"one\\.br\\two", "one\ntwo"},
        {"a\\.sp 2\\b\\.sp\\c", "a\n\nb\nc"},
        {"\\H\\bold\\N\\ \\.fi\\\\.nf\\\\.in -2\\\\.ti 3\\\\.sk 1\\\\.ce\\x", "bold x"},
        {"\\C2842\\abc\\M2442\\\\Zlocal\\", "abc"},
        {"\\X0D0A\\", "\r\n"},
        {"\\X00\\z", "z"},              /* NUL dropped */
        {"\\P\\", "\\P\\"},             /* no truncation character in |^~\& */
        {"trail\\", "trail\\"},         /* incomplete: literal (lenient) */
        {"C:\\temp\\x", "C:\\temp\\x"}, /* unknown sequence: literal */
        {"\\X4\\", "\\X4\\"},           /* odd hex digits */
        {"\\\\", "\\\\"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct tr_buf b;
        tr_buf_init(&b, 1024);
        assert_int_equal(
            hl7_decode(&enc, HL7_CHARSET_UTF8, cases[i].raw, strlen(cases[i].raw), &b, NULL), 0);
        if (strcmp(b.data ? b.data : "", cases[i].text) != 0)
            fail_msg("case %zu: \"%s\" decoded to \"%s\"", i, cases[i].raw, b.data);
        tr_buf_release(&b);
    }
    /* Latin-1 bytes from \X..\ in an 8859/1 message. */
    struct tr_buf b;
    tr_buf_init(&b, 1024);
    assert_int_equal(hl7_decode(&enc, HL7_CHARSET_LATIN1, "\\XE9\\\xfc", 6, &b, NULL), 0);
    assert_string_equal(b.data, "\xc3\xa9\xc3\xbc");
    tr_buf_reset(&b);
    assert_int_equal(hl7_decode(&enc, HL7_CHARSET_LATIN9, "\xa4", 1, &b, NULL), 0);
    assert_string_equal(b.data, "\xe2\x82\xac"); /* the euro sign */
    tr_buf_reset(&b);
    /* Bad UTF-8 from \X..\ in a UTF-8 message becomes U+FFFD. */
    assert_int_equal(hl7_decode(&enc, HL7_CHARSET_UTF8, "\\XFF\\", 5, &b, NULL), 0);
    assert_string_equal(b.data, "\xef\xbf\xbd");
    tr_buf_release(&b);
}

static void escapes_encoded(void **state)
{
    (void)state;
    struct hl7_encoding enc;
    hl7_encoding_default(&enc);
    static const struct {
        const char *text, *raw;
    } cases[] = {
        {"a|b^c&d~e\\f", "a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f"},
        {"one\ntwo\r\x01\tx", "one\\.br\\two\\X0D\\\\X01\\\tx"},
        {"caf\xc3\xa9", "caf\xc3\xa9"},
        {"\"\"", "\\X22\\\""}, /* the text "" is not the null value */
        {"#", "#"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct tr_buf b, back;
        tr_buf_init(&b, 1024);
        tr_buf_init(&back, 1024);
        assert_int_equal(
            hl7_encode(&enc, HL7_CHARSET_UTF8, cases[i].text, strlen(cases[i].text), &b, NULL), 0);
        if (strcmp(b.data, cases[i].raw) != 0)
            fail_msg("case %zu: encoded to \"%s\"", i, b.data);
        assert_int_equal(hl7_decode(&enc, HL7_CHARSET_UTF8, b.data, b.len, &back, NULL), 0);
        assert_string_equal(back.data, cases[i].text);
        tr_buf_release(&b);
        tr_buf_release(&back);
    }
    struct tr_buf b;
    tr_buf_init(&b, 1024);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(hl7_encode(&enc, HL7_CHARSET_LATIN1, "\xc3\xa9", 2, &b, NULL), 0);
    assert_string_equal(b.data, "\xe9");
    tr_buf_reset(&b);
    assert_int_equal(hl7_encode(&enc, HL7_CHARSET_LATIN1, "\xe2\x82\xac", 3, &b, &err),
                     TR_ECHARSET);
    assert_non_null(strstr(err.message, "U+20AC"));
    tr_buf_reset(&b);
    assert_int_equal(hl7_encode(&enc, HL7_CHARSET_LATIN9, "\xe2\x82\xac", 3, &b, NULL), 0);
    assert_string_equal(b.data, "\xa4");
    tr_buf_reset(&b);
    assert_int_equal(hl7_encode(&enc, HL7_CHARSET_ASCII, "\xc3\xa9", 2, &b, NULL), TR_ECHARSET);
    assert_int_equal(hl7_encode(&enc, HL7_CHARSET_UTF8, "\xc3", 1, &b, NULL), TR_ECHARSET);
    tr_buf_release(&b);
}

static void strict_escapes(void **state)
{
    (void)state;
    static const char text[] = "MSH|^~\\&|A|B\rOBX|1|TX|X||C:\\temp|\r";
    struct hl7_limits lim;
    hl7_limits_init(&lim);
    lim.flags = HL7_STRICT_ESCAPES;
    struct hl7_message *m = NULL;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(hl7_parse(text, sizeof(text) - 1, &lim, &m, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "segment 2 (OBX) field 5, byte 27"));
    /* Lenient (the default): literal. */
    m = parse_ok(text, sizeof(text) - 1);
    expect(m, "OBX-5", HL7_VALUE, "C:\\temp");
    hl7_message_free(m);
}

static void round_trip(void **state)
{
    (void)state;
    struct hl7_message *m = parse_ok(orm, sizeof(orm) - 1);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    assert_int_equal(hl7_write(m, &out, NULL), 0);
    assert_int_equal(out.len, sizeof(orm) - 1);
    assert_memory_equal(out.data, orm, out.len);
    hl7_message_free(m);
    /* LF, CR LF, blank lines and no final separator: written with CR. */
    static const char lf[] = "MSH|^~\\&|A\nPID|1\r\n\r\nPV1||I";
    m = parse_ok(lf, sizeof(lf) - 1);
    assert_int_equal(hl7_segment_count(m), 3);
    tr_buf_reset(&out);
    assert_int_equal(hl7_write(m, &out, NULL), 0);
    assert_string_equal(out.data, "MSH|^~\\&|A\rPID|1\rPV1||I\r");
    hl7_message_free(m);
    /* A byte order mark is skipped; offsets still count it. */
    static const char bom[] = "\xef\xbb\xbfMSH|^~\\&|A\rP!D|1\r";
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(hl7_parse(bom, sizeof(bom) - 1, NULL, &m, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "segment 2, byte 14"));
    tr_buf_release(&out);
}

static void build(void **state)
{
    (void)state;
    struct hl7_message *m = hl7_message_new(NULL);
    assert_non_null(m);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(hl7_set(m, "MSH-9.1", "ACK", &err), 0);
    assert_int_equal(hl7_set(m, "MSH-9.3", "ACK", &err), 0);
    assert_int_equal(hl7_set(m, "MSH-10", "X|1", &err), 0);
    assert_int_equal(hl7_set(m, "MSH-1", "!", &err), TR_EINVAL);
    assert_int_equal(hl7_set(m, "MSH-2", "!", &err), TR_EINVAL);
    assert_int_equal(hl7_set(m, "MSA-1", "AA", &err), TR_ENOTFOUND);
    assert_int_equal(hl7_segment_add(m, "MSA", &err), 1);
    assert_int_equal(hl7_segment_add(m, "msa", &err), TR_EINVAL);
    assert_int_equal(hl7_set(m, "MSA-1", "AA", &err), 0);
    assert_int_equal(hl7_set(m, "MSA-3", "a~b", &err), 0);
    assert_int_equal(hl7_segment_add(m, "PID", &err), 2);
    assert_int_equal(hl7_set(m, "PID-3[2].4.2", "1.2.3", &err), 0);
    assert_int_equal(hl7_set(m, "PID-3[1].1", "A", &err), 0);
    assert_int_equal(hl7_set(m, "PID-3[2].1", "B", &err), 0);
    struct hl7_path p;
    hl7_path_parse("PID-5.1", &p, NULL);
    assert_int_equal(hl7_set_raw(m, &p, "X^Y", 3, &err), TR_EINVAL);
    assert_int_equal(hl7_set_raw(m, &p, "X&Y", 3, &err), 0);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    assert_int_equal(hl7_write(m, &out, &err), 0);
    assert_string_equal(out.data, "MSH|^~\\&|||||||ACK^^ACK|X\\F\\1\r"
                                  "MSA|AA||a\\R\\b\r"
                                  "PID|||A~B^^^&1.2.3||X&Y\r");
    /* MSH-18 switches the character set of later values. */
    assert_int_equal(hl7_set(m, "MSH-18", "8859/1", &err), 0);
    assert_int_equal(hl7_message_charset(m), HL7_CHARSET_LATIN1);
    assert_int_equal(hl7_set(m, "PID-5.2", "\xc3\xa9", &err), 0);
    expect(m, "PID-5.2", HL7_VALUE, "\xc3\xa9");
    assert_int_equal(hl7_set(m, "MSH-18", "EBCDIC", &err), TR_EUNSUPPORTED);
    hl7_message_free(m);
    tr_buf_release(&out);
}

static void character_sets(void **state)
{
    (void)state;
    static const char latin1[] = "MSH|^~\\&|A|B|||||||||||||8859/1\rPID|1||X||M\xdcLLER\r";
    struct hl7_message *m = parse_ok(latin1, sizeof(latin1) - 1);
    assert_int_equal(hl7_message_charset(m), HL7_CHARSET_LATIN1);
    expect(m, "PID-5", HL7_VALUE, "M\xc3\x9cLLER");
    hl7_message_free(m);
    /* Empty MSH-18: UTF-8 when the bytes are UTF-8, else 8859/1. */
    static const char guess_utf8[] = "MSH|^~\\&|A\rPID|1||X||\xe5\xbc\xa0\r";
    m = parse_ok(guess_utf8, sizeof(guess_utf8) - 1);
    assert_int_equal(hl7_message_charset(m), HL7_CHARSET_UTF8);
    hl7_message_free(m);
    static const char guess_latin1[] = "MSH|^~\\&|A\rPID|1||X||\xe9\r";
    m = parse_ok(guess_latin1, sizeof(guess_latin1) - 1);
    assert_int_equal(hl7_message_charset(m), HL7_CHARSET_LATIN1);
    expect(m, "PID-5", HL7_VALUE, "\xc3\xa9");
    hl7_message_free(m);
    struct tr_error err = TR_ERROR_INIT;
    static const char ascii[] = "MSH|^~\\&|A|||||||||||||||ASCII\rPID|1||\xe9\r";
    assert_int_equal(hl7_parse(ascii, sizeof(ascii) - 1, NULL, &m, &err), TR_ECHARSET);
    assert_non_null(strstr(err.message, "segment 2 (PID) field 3, byte 38: byte 0xE9 is not "
                                        "ASCII"));
    static const char utf8[] = "MSH|^~\\&|A|||||||||||||||UNICODE UTF-8\rPID|1||\xc3(\r";
    tr_error_clear(&err);
    assert_int_equal(hl7_parse(utf8, sizeof(utf8) - 1, NULL, &m, &err), TR_ECHARSET);
    assert_non_null(strstr(err.message, "field 3, byte 46: invalid UTF-8"));
    static const char other[] = "MSH|^~\\&|A|||||||||||||||ISO IR87\r";
    tr_error_clear(&err);
    assert_int_equal(hl7_parse(other, sizeof(other) - 1, NULL, &m, &err), TR_EUNSUPPORTED);
    assert_non_null(strstr(err.message, "segment 1 (MSH) field 18"));
    assert_non_null(strstr(err.message, "\"ISO IR87\" is not supported"));
}

static void errors(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        size_t len;
        int code;
        const char *message;
    } cases[] = {
        {"", 0, TR_ETRUNCATED, "empty"},
        {"MSH|^~", 6, TR_ETRUNCATED, "ends before its header"},
        {"hello world\r", 12, TR_EFORMAT, "starts with \"hel\", not with an MSH segment"},
        {"MSHX^~\\&|A\r", 11, TR_EFORMAT, "byte 0x58 cannot be the field separator"},
        {"MSH|^~|A\r", 9, TR_EFORMAT, "field 2, byte 4: the encoding characters \"^~\" are not"},
        {"MSH|^^\\&|A\r", 11, TR_EFORMAT, "field 2, byte 5: encoding character 2"},
        {"MSH|^~\\&|A\rPI|1\r", 16, TR_EFORMAT,
         "segment 2, byte 11: segment name \"PI\" is not three"},
        {"MSH|^~\\&|A\rPID|1|a\0b\r", 20, TR_EFORMAT,
         "segment 2 (PID) field 2, byte 18: byte 0x00 is not allowed"},
        {"MSH|^~\\&|A\rPID|1|a\x0b\r", 19, TR_EFORMAT, "byte 0x0B is not allowed"},
        {"MSH|^~\\&|A\rMSH|^~\\&#|B\r", 23, TR_EFORMAT,
         "segment 2 (MSH), byte 11: MSH has other separators"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct hl7_message *m = NULL;
        struct tr_error err = TR_ERROR_INIT;
        int rc = hl7_parse(cases[i].text, cases[i].len, NULL, &m, &err);
        if (rc != cases[i].code || !strstr(err.message, cases[i].message))
            fail_msg("case %zu: %d \"%s\"", i, rc, err.message);
        assert_null(m);
    }
}

static void limits(void **state)
{
    (void)state;
    struct hl7_limits lim;
    struct hl7_message *m = NULL;
    struct tr_error err = TR_ERROR_INIT;
    hl7_limits_init(&lim);
    lim.max_message = 50;
    assert_int_equal(hl7_parse(orm, sizeof(orm) - 1, &lim, &m, &err), TR_ELIMIT);
    assert_non_null(strstr(err.message, "over the cap of 50"));
    hl7_limits_init(&lim);
    lim.max_fields = 8;
    tr_error_clear(&err);
    assert_int_equal(hl7_parse(orm, sizeof(orm) - 1, &lim, &m, &err), TR_ELIMIT);
    assert_non_null(strstr(err.message, "segment 1 (MSH), byte 0: more than 8 fields"));
    hl7_limits_init(&lim);
    lim.max_segments = 3;
    tr_error_clear(&err);
    assert_int_equal(hl7_parse(orm, sizeof(orm) - 1, &lim, &m, &err), TR_ELIMIT);
    assert_non_null(strstr(err.message, "more than 3 segments"));
    hl7_limits_init(&lim);
    lim.max_field = 20;
    tr_error_clear(&err);
    assert_int_equal(hl7_parse(orm, sizeof(orm) - 1, &lim, &m, &err), TR_ELIMIT);
    if (!strstr(err.message, "segment 2 (PID) field 3, byte 87: field longer than 20"))
        fail_msg("%s", err.message);
    assert_null(m);
}

/* Every allocation of a parse and a write may fail: an error, never a crash or a leak. */
static void allocation_failures(void **state)
{
    (void)state;
    for (long n = 0; n < 200; n++) {
        struct hl7_message *m = NULL;
        struct tr_error err = TR_ERROR_INIT;
        tr_alloc_fail_after(n);
        int rc = hl7_parse(orm, sizeof(orm) - 1, NULL, &m, &err);
        if (rc == 0) {
            struct tr_buf out;
            tr_buf_init(&out, 1 << 20);
            rc = hl7_write(m, &out, &err);
            if (rc == 0)
                rc = hl7_set(m, "PID-3[4].2.3", "x|y", &err);
            tr_buf_release(&out);
            hl7_message_free(m);
        }
        tr_alloc_fail_after(-1);
        if (rc != 0)
            assert_int_equal(rc, TR_ENOMEM);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(addressing),      cmocka_unit_test(paths),
        cmocka_unit_test(every_delimiter), cmocka_unit_test(escapes_decoded),
        cmocka_unit_test(escapes_encoded), cmocka_unit_test(strict_escapes),
        cmocka_unit_test(round_trip),      cmocka_unit_test(build),
        cmocka_unit_test(character_sets),  cmocka_unit_test(errors),
        cmocka_unit_test(limits),          cmocka_unit_test(allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
