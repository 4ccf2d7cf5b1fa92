/*
 * test_dataset.c - the data set model: typed setters and getters, order, deletion, sequences,
 * character sets on set and get, copies, allocation failures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"
#include "dcm.h"

static char *json_of(const struct dcm_dataset *ds)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 24);
    struct tr_sink s = tr_sink_buf(&b);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_json_write(ds, NULL, &s, &err), 0);
    return tr_buf_detach(&b, NULL);
}

static void test_strings(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    assert_int_equal(dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Doe^Jane"), 0);
    assert_int_equal(dcm_dataset_set_string(ds, 0x00080008, DCM_VR_NONE, "ORIGINAL\\PRIMARY"), 0);
    char buf[65];
    assert_int_equal(dcm_dataset_get_string(ds, 0x00100010, 0, buf, sizeof(buf)), 8);
    assert_string_equal(buf, "Doe^Jane");
    const struct dcm_element *e = dcm_dataset_get(ds, 0x00080008);
    assert_int_equal(e->vr, DCM_VR_CS);
    assert_int_equal(dcm_element_vm(e), 2);
    assert_int_equal(dcm_dataset_get_string(ds, 0x00080008, 1, buf, sizeof(buf)), 7);
    assert_string_equal(buf, "PRIMARY");
    assert_int_equal(dcm_dataset_get_string(ds, 0x00080008, 2, buf, sizeof(buf)), TR_ENOTFOUND);
    /* Too small a buffer is an error, not a silent truncation. */
    char tiny[4];
    assert_int_equal(dcm_dataset_get_string(ds, 0x00100010, 0, tiny, sizeof(tiny)), TR_ELIMIT);
    char *text = dcm_dataset_get_text(ds, 0x00080008, NULL);
    assert_string_equal(text, "ORIGINAL\\PRIMARY");
    tr_free(text);
    /* Values over the VR's maximum length are refused (CS: 16). */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00080060, DCM_VR_NONE, "ABCDEFGHIJKLMNOPQ"),
                     TR_EINVAL);
    /* A tag the dictionary does not know needs an explicit VR. */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00091010, DCM_VR_NONE, "x"), TR_EINVAL);
    assert_int_equal(dcm_dataset_set_string(ds, 0x00091010, DCM_VR_LO, "private"), 0);
    /* Not a string VR. */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00280010, DCM_VR_NONE, "512"), TR_EINVAL);
    dcm_dataset_free(ds);
}

static void test_trimming(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    /* Raw values with the padding real files carry. */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00080060, DCM_VR_CS, " CT ", 4), 0);
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00080018, DCM_VR_UI, "1.2.3\0", 6), 0);
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00081030, DCM_VR_LO, "  HEAD  ", 8), 0);
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00204000, DCM_VR_LT, "  indented  ", 12), 0);
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00100020, DCM_VR_LO, "    ", 4), 0);
    char buf[64];
    dcm_dataset_get_string(ds, 0x00080060, 0, buf, sizeof(buf));
    assert_string_equal(buf, "CT");
    assert_int_equal(dcm_dataset_get_uid(ds, 0x00080018, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1.2.3");
    dcm_dataset_get_string(ds, 0x00081030, 0, buf, sizeof(buf));
    assert_string_equal(buf, "HEAD");
    /* LT keeps leading spaces (PS3.5 6.2). */
    dcm_dataset_get_string(ds, 0x00204000, 0, buf, sizeof(buf));
    assert_string_equal(buf, "  indented");
    /* Only padding: empty, VM 0, and the getters say so. */
    assert_int_equal(dcm_element_vm(dcm_dataset_get(ds, 0x00100020)), 0);
    assert_int_equal(dcm_dataset_get_string(ds, 0x00100020, 0, buf, sizeof(buf)), TR_ENOTFOUND);
    dcm_dataset_free(ds);
}

static void test_numbers(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    int64_t v;
    double d;
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280010, DCM_VR_NONE, 512), 0);
    assert_int_equal(dcm_dataset_get_int(ds, 0x00280010, 0, &v), 0);
    assert_int_equal(v, 512);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280010, DCM_VR_NONE, 70000), TR_EINVAL);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280010, DCM_VR_NONE, -1), TR_EINVAL);
    const int64_t many[3] = {-5, 0, 2147483647};
    assert_int_equal(dcm_dataset_set_ints(ds, 0x00200013, DCM_VR_IS, many, 3), 0);
    assert_int_equal(dcm_element_vm(dcm_dataset_get(ds, 0x00200013)), 3);
    assert_int_equal(dcm_dataset_get_int(ds, 0x00200013, 2, &v), 0);
    assert_int_equal(v, 2147483647);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00200013, DCM_VR_IS, 1LL << 40), TR_EINVAL);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00189219, DCM_VR_SS, -32768), 0);
    assert_int_equal(dcm_dataset_get_int(ds, 0x00189219, 0, &v), 0);
    assert_int_equal(v, -32768);
    /* SV and UV (64-bit). */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00101001, DCM_VR_SV, INT64_MIN), 0);
    assert_int_equal(dcm_dataset_get_int(ds, 0x00101001, 0, &v), 0);
    assert_true(v == INT64_MIN);
    /* DS keeps to 16 characters and reads back close to the value given. */
    const double pi = 3.14159265358979323846;
    assert_int_equal(dcm_dataset_set_float(ds, 0x00180050, DCM_VR_NONE, pi), 0);
    const struct dcm_element *e = dcm_dataset_get(ds, 0x00180050);
    assert_true(e->length <= 16);
    assert_int_equal(dcm_dataset_get_float(ds, 0x00180050, 0, &d), 0);
    assert_true(d > 3.14159265358 && d < 3.14159265360);
    assert_int_equal(dcm_dataset_set_float(ds, 0x00180050, DCM_VR_NONE, -1.25e-300), 0);
    assert_true(dcm_dataset_get(ds, 0x00180050)->length <= 16);
    assert_int_equal(dcm_dataset_set_float(ds, 0x00180050, DCM_VR_NONE, 0.5), 0);
    char buf[32];
    dcm_dataset_get_string(ds, 0x00180050, 0, buf, sizeof(buf));
    assert_string_equal(buf, "0.5");
    /* FL / FD. */
    assert_int_equal(dcm_dataset_set_float(ds, 0x00189087, DCM_VR_FD, 1e-9), 0);
    assert_int_equal(dcm_dataset_get_float(ds, 0x00189087, 0, &d), 0);
    assert_true(d == 1e-9);
    /* DS strings with padding parse. */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00281050, DCM_VR_DS, " 40 \\-400", 9), 0);
    assert_int_equal(dcm_dataset_get_float(ds, 0x00281050, 1, &d), 0);
    assert_true(d == -400);
    /* AT. */
    assert_int_equal(dcm_dataset_set_tag(ds, 0x00209165, 0x00200032), 0);
    uint32_t t;
    assert_int_equal(dcm_dataset_get_tag(ds, 0x00209165, 0, &t), 0);
    assert_int_equal(t, 0x00200032);
    /* Binary numbers must be a whole number of values. */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00280010, DCM_VR_US, "\x01", 1), TR_EINVAL);
    dcm_dataset_free(ds);
}

static void test_uids(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    assert_int_equal(dcm_dataset_set_uid(ds, 0x0020000D, "1.2.840.113619.2.1"), 0);
    assert_int_equal(dcm_dataset_set_uid(ds, 0x0020000D, "1.2.840.0113619"), TR_EINVAL);
    assert_int_equal(dcm_dataset_set_uid(ds, 0x0020000D, "not a uid"), TR_EINVAL);
    char buf[DCM_UID_MAX + 1];
    assert_int_equal(dcm_dataset_get_uid(ds, 0x0020000D, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "1.2.840.113619.2.1");
    dcm_dataset_free(ds);
}

static void test_order_and_removal(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    static const uint32_t tags[] = {0x00100020, 0x00080060, 0x00200013, 0x00080020, 0x00100010};
    for (size_t i = 0; i < TR_ARRAY_SIZE(tags); i++)
        assert_int_equal(dcm_dataset_set_string(ds, tags[i], DCM_VR_NONE, "1"), 0);
    /* Replacing keeps one element. */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00080060, DCM_VR_NONE, "MR"), 0);
    assert_int_equal(dcm_dataset_count(ds), 5);
    for (size_t i = 1; i < dcm_dataset_count(ds); i++)
        assert_true(dcm_dataset_at(ds, i - 1)->tag < dcm_dataset_at(ds, i)->tag);
    assert_int_equal(dcm_dataset_remove(ds, 0x00200013), 0);
    assert_int_equal(dcm_dataset_remove(ds, 0x00200013), TR_ENOTFOUND);
    assert_null(dcm_dataset_get(ds, 0x00200013));
    assert_int_equal(dcm_dataset_count(ds), 4);
    assert_null(dcm_dataset_at(ds, 4));
    dcm_dataset_free(ds);
}

static bool keep_non_patient(const struct dcm_element *e, void *ctx)
{
    (void)ctx;
    return DCM_TAG_GROUP(e->tag) != 0x0010;
}

static void test_filter(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Doe^Jane");
    dcm_dataset_set_string(ds, 0x00100020, DCM_VR_NONE, "12345");
    dcm_dataset_set_string(ds, 0x00080060, DCM_VR_NONE, "CT");
    dcm_dataset_filter(ds, keep_non_patient, NULL);
    assert_int_equal(dcm_dataset_count(ds), 1);
    assert_int_equal(dcm_dataset_at(ds, 0)->tag, 0x00080060);
    dcm_dataset_free(ds);
}

static void test_sequences(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00081115, &err);
    assert_non_null(item);
    assert_ptr_equal(dcm_dataset_parent(item), ds);
    assert_int_equal(dcm_dataset_depth(item), 1);
    dcm_dataset_set_uid(item, 0x0020000E, "1.2.3.4");
    /* Nest deeper. */
    struct dcm_dataset *cur = item;
    for (int i = 0; i < 10; i++) {
        cur = dcm_dataset_add_item(cur, 0x00081199, &err);
        assert_non_null(cur);
    }
    assert_int_equal(dcm_dataset_depth(cur), 11);
    assert_non_null(dcm_dataset_add_item(ds, 0x00081115, &err));
    const struct dcm_element *seq = dcm_dataset_get(ds, 0x00081115);
    assert_int_equal(seq->vr, DCM_VR_SQ);
    assert_int_equal(dcm_element_item_count(seq), 2);
    assert_int_equal(dcm_element_vm(seq), 2);
    assert_ptr_equal(dcm_element_item(seq, 0), item);
    assert_null(dcm_element_item(seq, 2));
    assert_int_equal(dcm_dataset_remove_item(ds, 0x00081115, 1), 0);
    assert_int_equal(dcm_element_item_count(dcm_dataset_get(ds, 0x00081115)), 1);
    /* Adding an item to something that is not a sequence names the problem. */
    dcm_dataset_set_string(ds, 0x00080060, DCM_VR_NONE, "CT");
    assert_null(dcm_dataset_add_item(ds, 0x00080060, &err));
    assert_int_equal(err.code, TR_EINVAL);
    dcm_dataset_free(ds);
}

static void test_charset_on_set(void **state)
{
    (void)state;
    /* No Specific Character Set: non-ASCII text declares UTF-8 at the root. */
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00081032, &err);
    assert_int_equal(dcm_dataset_set_string(item, 0x00080104, DCM_VR_NONE, "Müller"), 0);
    char buf[64];
    assert_int_equal(dcm_dataset_get_string(ds, DCM_TAG_SpecificCharacterSet, 0, buf, 64), 10);
    assert_string_equal(buf, "ISO_IR 192");
    assert_int_equal(dcm_dataset_get_string(item, 0x00080104, 0, buf, sizeof(buf)), 7);
    assert_string_equal(buf, "Müller");
    dcm_dataset_free(ds);

    /* Latin-1 data set: text is stored in Latin-1 and reads back as UTF-8. */
    ds = dcm_dataset_new();
    dcm_dataset_set_string(ds, DCM_TAG_SpecificCharacterSet, DCM_VR_NONE, "ISO_IR 100");
    assert_int_equal(dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Müller^José"), 0);
    const struct dcm_element *e = dcm_dataset_get(ds, 0x00100010);
    assert_int_equal(e->length, 11);
    assert_int_equal(e->value.bytes[1], 0xFC);
    assert_int_equal(dcm_dataset_get_string(ds, 0x00100010, 0, buf, sizeof(buf)), 13);
    assert_string_equal(buf, "Müller^José");
    /* A character Latin-1 cannot hold is refused, not mangled. */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "王^小明"), TR_ECHARSET);
    /* Invalid UTF-8 input is refused. */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "\xff"), TR_ECHARSET);
    /* ... and converting to UTF-8 re-encodes everything. */
    assert_int_equal(dcm_dataset_convert_to_utf8(ds, &err), 0);
    e = dcm_dataset_get(ds, 0x00100010);
    assert_int_equal(e->length, 13);
    dcm_dataset_get_string(ds, DCM_TAG_SpecificCharacterSet, 0, buf, sizeof(buf));
    assert_string_equal(buf, "ISO_IR 192");
    assert_int_equal(dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "王^小明"), 0);
    dcm_dataset_free(ds);
}

static void test_copy(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    dcm_dataset_set_string(ds, DCM_TAG_SpecificCharacterSet, DCM_VR_NONE, "ISO_IR 100");
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Ørsted^Hans");
    struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00400275, &err);
    dcm_dataset_set_string(item, 0x00321060, DCM_VR_NONE, "Tête");
    uint8_t pixels[6] = {1, 2, 3, 4, 5, 6};
    dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, pixels, sizeof(pixels));
    struct dcm_dataset *copy = dcm_dataset_copy(ds, &err);
    assert_non_null(copy);
    char *a = json_of(ds), *b = json_of(copy);
    assert_string_equal(a, b);
    tr_free(a);
    tr_free(b);
    /* The copy is independent. */
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Changed");
    char buf[64];
    dcm_dataset_get_string(copy, 0x00100010, 0, buf, sizeof(buf));
    assert_string_equal(buf, "Ørsted^Hans");
    /* An item copied out keeps the character set it inherited. */
    struct dcm_dataset *lone = dcm_dataset_copy(item, &err);
    dcm_dataset_get_string(lone, 0x00321060, 0, buf, sizeof(buf));
    assert_string_equal(buf, "Tête");
    dcm_dataset_free(lone);
    dcm_dataset_free(copy);
    dcm_dataset_free(ds);
}

static void test_wildcards(void **state)
{
    (void)state;
    assert_true(dcm_wildcard_match("*", ""));
    assert_true(dcm_wildcard_match("Doe*", "Doe^Jane"));
    assert_true(dcm_wildcard_match("*Jane", "Doe^Jane"));
    assert_true(dcm_wildcard_match("D?e^*", "Doe^Jane"));
    assert_true(dcm_wildcard_match("*^*", "Doe^Jane"));
    assert_true(dcm_wildcard_match("M?ller", "Müller")); /* ? is one character, not one byte */
    assert_false(dcm_wildcard_match("M?ller", "Mueller"));
    assert_false(dcm_wildcard_match("Doe", "Doe^Jane"));
    assert_false(dcm_wildcard_match("?", ""));
    assert_true(dcm_wildcard_match("a*b*c", "aXXbYYc"));
    assert_false(dcm_wildcard_match("a*b*c", "aXXbYY"));
    assert_true(dcm_wildcard_match("**a", "a"));
}

static int build_sample(void)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds)
        return TR_ENOMEM;
    struct tr_error err = TR_ERROR_INIT;
    int rc = 0;
    for (int i = 0; i < 40 && rc == 0; i++)
        rc = dcm_dataset_set_int(ds, DCM_TAG(0x0019, 0x1000 + i), DCM_VR_UL, i);
    if (rc == 0)
        rc = dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Doe^Jane");
    struct dcm_dataset *item = rc == 0 ? dcm_dataset_add_item(ds, 0x00081115, &err) : NULL;
    if (rc == 0 && !item)
        rc = err.code;
    if (rc == 0)
        rc = dcm_dataset_set_string(item, 0x00100010, DCM_VR_NONE, "Ünïcode");
    struct dcm_dataset *copy = rc == 0 ? dcm_dataset_copy(ds, &err) : NULL;
    if (rc == 0 && !copy)
        rc = err.code;
    dcm_dataset_free(copy);
    dcm_dataset_free(ds);
    return rc;
}

static void test_allocation_failures(void **state)
{
    (void)state;
    /* Fail each allocation in turn: every failure is reported, nothing leaks or crashes. */
    int failures = 0;
    for (long n = 0; n < 10000; n++) {
        tr_alloc_fail_after(n);
        int rc = build_sample();
        unsigned long injected = tr_alloc_failures();
        tr_alloc_fail_after(-1);
        if (injected == 0) {
            assert_int_equal(rc, 0);
            break;
        }
        assert_true(rc == TR_ENOMEM || rc == TR_ECHARSET || rc < 0);
        failures++;
    }
    assert_true(failures > 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_trimming),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_uids),
        cmocka_unit_test(test_order_and_removal),
        cmocka_unit_test(test_filter),
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_charset_on_set),
        cmocka_unit_test(test_copy),
        cmocka_unit_test(test_wildcards),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
