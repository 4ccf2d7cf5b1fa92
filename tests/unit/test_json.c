/*
 * test_json.c - the DICOM JSON Model (PS3.18 F.2): writing, reading back, and errors that name
 * the attribute path.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"
#include "dcm.h"

static char *to_json(const struct dcm_dataset *ds, unsigned flags)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 24);
    struct tr_sink s = tr_sink_buf(&b);
    struct dcm_json_options opt = {.flags = flags};
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_json_write(ds, &opt, &s, &err))
        fail_msg("json: %s", err.message);
    return tr_buf_detach(&b, NULL);
}

static struct dcm_dataset *from_json(const char *text, struct tr_error *err)
{
    struct dcm_dataset *ds = NULL;
    dcm_json_read(text, strlen(text), NULL, &ds, err);
    return ds;
}

static void test_write_model(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Yamada^Tarou=山田^太郎=やまだ^たろう");
    dcm_dataset_set_string(ds, 0x00281050, DCM_VR_NONE, "40\\+1.50\\.5");
    dcm_dataset_set_string(ds, 0x00200013, DCM_VR_NONE, " 7 ");
    dcm_dataset_set_tag(ds, 0x00209165, 0x00200032);
    dcm_dataset_set_empty(ds, 0x00100020, DCM_VR_NONE);
    dcm_dataset_set_bytes(ds, 0x00420011, DCM_VR_OB, "\x01\x02\x03\x04", 4);
    dcm_dataset_set_sequence(ds, 0x00081115);
    dcm_dataset_set_float(ds, 0x00189087, DCM_VR_FD, 0.1);
    char *json = to_json(ds, 0);
    assert_string_equal(
        json,
        "{\"00080005\":{\"vr\":\"CS\",\"Value\":[\"ISO_IR 192\"]},"
        "\"00081115\":{\"vr\":\"SQ\"},"
        "\"00100010\":{\"vr\":\"PN\",\"Value\":[{\"Alphabetic\":\"Yamada^Tarou\","
        "\"Ideographic\":\"山田^太郎\",\"Phonetic\":\"やまだ^たろう\"}]},"
        "\"00100020\":{\"vr\":\"LO\"},"
        "\"00189087\":{\"vr\":\"FD\",\"Value\":[0.1]},"
        "\"00200013\":{\"vr\":\"IS\",\"Value\":[7]},"
        "\"00209165\":{\"vr\":\"AT\",\"Value\":[\"00200032\"]},"
        "\"00281050\":{\"vr\":\"DS\",\"Value\":[40,1.5,0.5]},"
        "\"00420011\":{\"vr\":\"OB\",\"InlineBinary\":\"AQIDBA==\"}}");
    tr_free(json);
    dcm_dataset_free(ds);
}

static void test_bad_numbers(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_bytes(ds, 0x00200013, DCM_VR_IS, "1A", 2);
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    struct tr_sink s = tr_sink_buf(&b);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_json_write(ds, NULL, &s, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "(0020,0013)"));
    assert_non_null(strstr(err.message, "1A"));
    tr_buf_release(&b);
    dcm_dataset_free(ds);
}

/* A DS that is a JSON number but no finite double ("1e999") is not written as it is: JSON
 * readers refuse it. Found by fuzz_json. */
static void test_ds_overflow(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_bytes(ds, 0x00281050, DCM_VR_DS, "1e999 ", 6);
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    struct tr_sink s = tr_sink_buf(&b);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_json_write(ds, NULL, &s, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "1e999"));
    tr_buf_release(&b);
    dcm_dataset_free(ds);
}

static void test_round_trip(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    dcm_dataset_set_string(ds, DCM_TAG_SpecificCharacterSet, DCM_VR_NONE, "ISO_IR 100");
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Müller^Jürgen");
    dcm_dataset_set_string(ds, 0x00080008, DCM_VR_NONE, "ORIGINAL\\PRIMARY\\AXIAL");
    const int64_t dims[2] = {512, 512};
    dcm_dataset_set_ints(ds, 0x00280010, DCM_VR_US, dims, 1);
    dcm_dataset_set_int(ds, 0x00189219, DCM_VR_SS, -3);
    dcm_dataset_set_int(ds, 0x0008040C, DCM_VR_UV, 1234567890123LL);
    dcm_dataset_set_float(ds, 0x00109431, DCM_VR_FL, 0.3);
    struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00081115, &err);
    dcm_dataset_set_uid(item, 0x0020000E, "1.2.3.4");
    struct dcm_dataset *inner = dcm_dataset_add_item(item, 0x0008114A, &err);
    dcm_dataset_set_uid(inner, 0x00081155, "1.2.3.5");
    dcm_dataset_add_item(ds, 0x00081115, &err);
    dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, "\x00\x01\x02\x03", 4);
    char *first = to_json(ds, 0);
    struct dcm_dataset *back = from_json(first, &err);
    if (!back)
        fail_msg("read: %s", err.message);
    /* Text came back as UTF-8 and says so. */
    char buf[64];
    dcm_dataset_get_string(back, DCM_TAG_SpecificCharacterSet, 0, buf, sizeof(buf));
    assert_string_equal(buf, "ISO_IR 192");
    dcm_dataset_get_string(back, 0x00100010, 0, buf, sizeof(buf));
    assert_string_equal(buf, "Müller^Jürgen");
    char *second = to_json(back, 0);
    /* Identical but for the character set declaration. */
    const char *a = strstr(first, "\"00080008\""), *b = strstr(second, "\"00080008\"");
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(a, b);
    /* Pretty output parses to the same data set. */
    char *pretty = to_json(back, DCM_JSON_PRETTY);
    assert_non_null(strchr(pretty, '\n'));
    struct dcm_dataset *again = from_json(pretty, &err);
    char *third = to_json(again, 0);
    assert_string_equal(second, third);
    tr_free(first);
    tr_free(second);
    tr_free(third);
    tr_free(pretty);
    dcm_dataset_free(again);
    dcm_dataset_free(back);
    dcm_dataset_free(ds);
}

static void test_read_errors(void **state)
{
    (void)state;
    static const struct {
        const char *json, *expect;
    } cases[] = {
        {"{\"00100010\": ", "invalid JSON at line 1"},
        {"[1, 2]", "expected a DICOM JSON object"},
        {"{\"0010001\":{\"vr\":\"PN\"}}", "0010001: the key is not a tag"},
        {"{\"00100010\":{\"Value\":[]}}", "00100010: missing \"vr\""},
        {"{\"00100010\":{\"vr\":\"XX\"}}", "unknown VR \"XX\""},
        {"{\"00280010\":{\"vr\":\"US\",\"Value\":[70000]}}", "out of range for VR US"},
        {"{\"00280010\":{\"vr\":\"US\",\"Value\":[\"x\"]}}", "expected an integer"},
        {"{\"7FE00010\":{\"vr\":\"OW\",\"InlineBinary\":\"@@@\"}}", "not valid base64"},
        {"{\"00081115\":{\"vr\":\"SQ\",\"Value\":[{\"00081150\":{\"vr\":\"UI\",\"Value\":[5]}}]}}",
         "00081115[0].00081150: expected a string"},
        {"{\"00100010\":{\"vr\":\"PN\",\"Value\":[\"a\"],\"InlineBinary\":\"AA==\"}}",
         "more than one of"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct tr_error err = TR_ERROR_INIT;
        struct dcm_dataset *ds = from_json(cases[i].json, &err);
        if (ds)
            fail_msg("accepted %s", cases[i].json);
        if (!strstr(err.message, cases[i].expect))
            fail_msg("for %s: message \"%s\" lacks \"%s\"", cases[i].json, err.message,
                     cases[i].expect);
    }
}

static void test_read_array_and_bulk(void **state)
{
    (void)state;
    const char *text = "[{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"A\"]}},"
                       "{\"00100020\":{\"vr\":\"LO\",\"Value\":[\"B\"]},"
                       "\"7FE00010\":{\"vr\":\"OW\",\"BulkDataURI\":\"http://x/frames/1\"}}]";
    struct dcm_dataset **list;
    size_t n;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_json_read_array(text, strlen(text), NULL, &list, &n, &err), 0);
    assert_int_equal(n, 2);
    char buf[8];
    dcm_dataset_get_string(list[1], 0x00100020, 0, buf, sizeof(buf));
    assert_string_equal(buf, "B");
    /* Bulk data without a callback: kept as an empty element. */
    const struct dcm_element *px = dcm_dataset_get(list[1], DCM_TAG_PixelData);
    assert_non_null(px);
    assert_int_equal(px->length, 0);
    for (size_t i = 0; i < n; i++)
        dcm_dataset_free(list[i]);
    tr_free(list);
}

static int bulk_uri(void *ctx, const struct dcm_dataset *ds, const struct dcm_element *e,
                    struct tr_buf *out)
{
    (void)ctx;
    (void)ds;
    return tr_buf_addf(out, "bulk/%08X", e->tag);
}

static void test_bulk_uri_threshold(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    uint8_t big[2048] = {0};
    dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, big, sizeof(big));
    dcm_dataset_set_bytes(ds, 0x00420011, DCM_VR_OB, big, 8);
    struct dcm_json_options opt = {.bulk_threshold = 1024, .bulk_uri = bulk_uri};
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    struct tr_sink s = tr_sink_buf(&b);
    assert_int_equal(dcm_json_write(ds, &opt, &s, NULL), 0);
    assert_non_null(strstr(b.data, "\"7FE00010\":{\"vr\":\"OW\",\"BulkDataURI\":\"bulk/7FE00010\"}"));
    assert_non_null(strstr(b.data, "\"00420011\":{\"vr\":\"OB\",\"InlineBinary\":"));
    tr_buf_release(&b);
    dcm_dataset_free(ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_model),        cmocka_unit_test(test_bad_numbers),
        cmocka_unit_test(test_ds_overflow),
        cmocka_unit_test(test_round_trip),         cmocka_unit_test(test_read_errors),
        cmocka_unit_test(test_read_array_and_bulk), cmocka_unit_test(test_bulk_uri_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
