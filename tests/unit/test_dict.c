/*
 * test_dict.c - the generated data dictionary and UID registry.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"
#include "dcm.h"

static void test_size(void **state)
{
    (void)state;
    /* PS3.6 2024b lists 5,129 attributes; the generator adds the PS3.7 command group. */
    assert_true(dcm_dict_size() >= 5129);
    assert_true(dcm_dict_size() < 5129 + 100);
}

static void test_every_entry_found_by_tag_and_keyword(void **state)
{
    (void)state;
    for (unsigned i = 0; i < dcm_dict_size(); i++) {
        const struct dcm_dict_entry *e = dcm_dict_entry_at(i);
        if (e->mask == 0xFFFFFFFFu)
            assert_ptr_equal(dcm_dict_lookup(e->tag), e);
        if (e->keyword[0])
            assert_ptr_equal(dcm_dict_lookup_keyword(e->keyword), e);
    }
    assert_null(dcm_dict_entry_at(dcm_dict_size()));
}

static void test_known_attributes(void **state)
{
    (void)state;
    const struct dcm_dict_entry *e = dcm_dict_lookup(0x00100010);
    assert_non_null(e);
    assert_string_equal(e->keyword, "PatientName");
    assert_string_equal(e->name, "Patient's Name");
    assert_int_equal(e->vr, DCM_VR_PN);
    assert_false(e->retired);
    e = dcm_dict_lookup_keyword("StudyInstanceUID");
    assert_non_null(e);
    assert_int_equal(e->tag, 0x0020000D);
    assert_int_equal(dcm_dict_vr(0x7FE00010), DCM_VR_OB); /* "OB or OW": first choice */
    e = dcm_dict_lookup(0x00280106);                     /* SmallestImagePixelValue */
    assert_int_equal(e->vr, DCM_VR_US);
    assert_int_equal(e->vr_alt, DCM_VR_SS);
    /* Command group (PS3.7 E.1) and file meta (PS3.10 7.1). */
    assert_string_equal(dcm_dict_lookup(0x00000100)->keyword, "CommandField");
    assert_string_equal(dcm_dict_lookup(0x00020010)->keyword, "TransferSyntaxUID");
    assert_null(dcm_dict_lookup_keyword("NoSuchKeyword"));
    assert_null(dcm_dict_lookup_keyword(""));
}

static void test_repeating_groups(void **state)
{
    (void)state;
    /* Overlay Data (60xx,3000) in every even group 6000-601E. */
    for (uint32_t g = 0x6000; g <= 0x601E; g += 2) {
        const struct dcm_dict_entry *e = dcm_dict_lookup(DCM_TAG(g, 0x3000));
        assert_non_null(e);
        assert_string_equal(e->keyword, "OverlayData");
    }
    assert_string_equal(dcm_dict_lookup(0x50020005)->keyword, "CurveDimensions");
    assert_string_equal(dcm_dict_lookup(0x00280410)->keyword, "RowsForNthOrderCoefficients");
    /* An odd group in the same range is private, not an overlay. */
    assert_null(dcm_dict_lookup(0x60013000));
    assert_int_equal(dcm_dict_vr(0x60013000), DCM_VR_UN);
}

static void test_private_and_group_length(void **state)
{
    (void)state;
    assert_true(dcm_tag_is_private(0x00090010));
    assert_true(dcm_tag_is_private_creator(0x00090010));
    assert_false(dcm_tag_is_private_creator(0x00091001));
    assert_int_equal(dcm_dict_vr(0x00090010), DCM_VR_LO);
    assert_int_equal(dcm_dict_vr(0x00091001), DCM_VR_UN);
    assert_string_equal(dcm_dict_keyword(0x00090010), "PrivateCreator");
    assert_int_equal(dcm_dict_vr(0x00180000), DCM_VR_UL);
    assert_string_equal(dcm_dict_keyword(0x00180000), "GenericGroupLength");
    /* Unknown public attribute. */
    assert_int_equal(dcm_dict_vr(0x0008FFF0), DCM_VR_UN);
    assert_string_equal(dcm_dict_keyword(0x0008FFF0), "");
}

static void test_vr_table(void **state)
{
    (void)state;
    int count = 0;
    for (int v = 1; v < DCM_VR_COUNT; v++) {
        const char *name = dcm_vr_name((enum dcm_vr)v);
        assert_int_equal(dcm_vr_from_string(name), v);
        count++;
    }
    assert_int_equal(count, 34);
    assert_int_equal(dcm_vr_from_string("XX"), DCM_VR_NONE);
    assert_true(dcm_vr_info(DCM_VR_UT)->long_header);
    assert_false(dcm_vr_info(DCM_VR_LO)->long_header);
    assert_true(dcm_vr_info(DCM_VR_PN)->charset);
    assert_false(dcm_vr_info(DCM_VR_CS)->charset);
}

static void test_uids(void **state)
{
    (void)state;
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup("1.2.840.10008.1.2.1.99");
    assert_non_null(ts);
    assert_true(ts->flags & DCM_TS_DEFLATED);
    assert_true(dcm_ts_lookup("1.2.840.10008.1.2")->flags & DCM_TS_IMPLICIT_VR);
    assert_true(dcm_ts_lookup("1.2.840.10008.1.2.4.70")->flags & DCM_TS_ENCAPSULATED);
    assert_null(dcm_ts_lookup("1.2.3"));
    const struct dcm_uid_entry *u = dcm_uid_lookup("1.2.840.10008.5.1.4.1.1.2");
    assert_non_null(u);
    assert_string_equal(u->keyword, "CTImageStorage");
    assert_string_equal(dcm_uid_lookup_keyword("VerificationSOPClass")->uid, "1.2.840.10008.1.1");

    assert_true(dcm_uid_is_valid("1.2.840.10008.1.2", 17));
    assert_false(dcm_uid_is_valid("1.2.840.", 8));
    assert_false(dcm_uid_is_valid("1.02.3", 6));
    assert_false(dcm_uid_is_valid("1..2", 4));
    assert_false(dcm_uid_is_valid("1.2a", 4));
    assert_false(dcm_uid_is_valid("", 0));
    char uid[DCM_UID_MAX + 1], other[DCM_UID_MAX + 1];
    assert_int_equal(dcm_uid_generate(uid), 0);
    assert_int_equal(dcm_uid_generate(other), 0);
    assert_true(dcm_uid_is_valid(uid, strlen(uid)));
    assert_memory_equal(uid, "2.25.", 5);
    assert_string_not_equal(uid, other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size),
        cmocka_unit_test(test_every_entry_found_by_tag_and_keyword),
        cmocka_unit_test(test_known_attributes),
        cmocka_unit_test(test_repeating_groups),
        cmocka_unit_test(test_private_and_group_length),
        cmocka_unit_test(test_vr_table),
        cmocka_unit_test(test_uids),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
