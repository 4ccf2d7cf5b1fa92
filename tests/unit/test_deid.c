/*
 * test_deid.c - de-identification (PS3.15 Annex E) and pseudonymization: every action on a
 * crafted data set, recursion into nested sequences, the keyed UID mapping, the meta group,
 * date shifting, the burned-in flags, the method code sequence per option, allocation
 * failures.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"
#include "dcm.h"
#include "deid.h"

static const uint8_t KEY1[] = "telerad-test-key-number-one-0001";
static const uint8_t KEY2[] = "telerad-test-key-number-two-0002";

#define ORIG_STUDY  "1.2.840.113619.2.55.3.604688119.969.1268071029.320"
#define ORIG_SERIES "1.2.840.113619.2.55.3.604688119.969.1268071029.321"
#define ORIG_SOP    "1.2.840.113619.2.55.3.604688119.969.1268071029.322.1"
#define ORIG_REF    "1.2.840.113619.2.55.3.604688119.969.1268071029.322.7"
#define ORIG_FOR    "1.2.840.113619.2.55.3.604688119.969.1268071029.99"
#define CT_STORAGE  "1.2.840.10008.5.1.4.1.1.2"

static void options(struct dcm_deid_options *opt, const uint8_t *key, unsigned flags)
{
    dcm_deid_options_init(opt);
    opt->key = key;
    opt->key_length = 32;
    opt->options = flags;
}

static char *json_of(const struct dcm_dataset *ds)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 24);
    struct tr_sink s = tr_sink_buf(&b);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_json_write(ds, NULL, &s, &err), 0);
    return tr_buf_detach(&b, NULL);
}

static void set(struct dcm_dataset *ds, uint32_t tag, const char *value)
{
    assert_int_equal(dcm_dataset_set_string(ds, tag, DCM_VR_NONE, value), 0);
}

static void set_vr(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const char *value)
{
    assert_int_equal(dcm_dataset_set_string(ds, tag, vr, value), 0);
}

/* The string value of `tag` in ds, or "<absent>" / "" (empty). */
static const char *value_of(const struct dcm_dataset *ds, uint32_t tag, char *buf, size_t size)
{
    const struct dcm_element *e = dcm_dataset_get(ds, tag);
    if (!e)
        return "<absent>";
    if (dcm_element_is_empty(e))
        return "";
    char *t = dcm_dataset_get_text(ds, tag, NULL);
    assert_non_null(t);
    snprintf(buf, size, "%s", t);
    tr_free(t);
    return buf;
}

#define VALUE(ds, tag) value_of((ds), (tag), buf, sizeof(buf))

/* A CT instance with a bit of everything. */
static struct dcm_dataset *sample(void)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    assert_non_null(ds);
    set(ds, 0x00080016, CT_STORAGE);
    set(ds, 0x00080018, ORIG_SOP);
    set(ds, 0x00080020, "20240301");                 /* Study Date: Z */
    set(ds, 0x00080021, "20240301");                 /* Series Date: X/D */
    set(ds, 0x00080030, "101500");                   /* Study Time: Z */
    set(ds, 0x00080050, "ACC12345");                 /* Accession Number: Z */
    set(ds, 0x00080060, "CT");                       /* Modality: not listed */
    set(ds, 0x00080080, "Saint Elsewhere Hospital"); /* Institution Name: X/Z/D */
    set(ds, 0x00080081, "1 Main Street");            /* Institution Address: X */
    set(ds, 0x00080090, "Referrer^Alex");            /* Referring Physician's Name: Z */
    set(ds, 0x00081010, "CTROOM1");                  /* Station Name: X/Z/D */
    set(ds, 0x00080055, "CTSCANNER01");              /* Station AE Title: X */
    set(ds, 0x00081030, "CT CHEST John Smith");      /* Study Description: X */
    set(ds, 0x0008103E, "AXIAL 5MM");                /* Series Description: X */
    set(ds, 0x00081070, "Tech^Terry");               /* Operators' Name: X/Z/D */
    set(ds, 0x00100010, "Doe^Jane");                 /* Patient's Name: Z */
    set(ds, 0x00100020, "MRN0042");                  /* Patient ID: Z/D */
    set(ds, 0x00100021, "HOSP");                     /* Issuer of Patient ID: X */
    set(ds, 0x00100030, "19540209");                 /* Patient's Birth Date: Z */
    set(ds, 0x00100040, "F");                        /* Patient's Sex: Z */
    set(ds, 0x00101010, "070Y");                     /* Patient's Age: X */
    set(ds, 0x00101030, "61.5");                     /* Patient's Weight: X */
    set(ds, 0x00181000, "SN-778899");                /* Device Serial Number: X/Z/D */
    set(ds, 0x00180050, "1.25");                     /* Slice Thickness: not listed */
    set(ds, 0x0020000D, ORIG_STUDY);
    set(ds, 0x0020000E, ORIG_SERIES);
    set(ds, 0x00200052, ORIG_FOR);
    set(ds, 0x00200010, "STUDY7");                      /* Study ID: Z */
    set(ds, 0x00204000, "patient moved");               /* Image Comments: X */
    set_vr(ds, 0x00140104, DCM_VR_PN, "Reviewer^Rita"); /* a PN the table does not list */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280002, DCM_VR_US, 1), 0);
    /* Private: a creator and two elements, one of them safe. */
    set_vr(ds, 0x00090010, DCM_VR_LO, "ACME PRIVATE");
    set_vr(ds, 0x00091001, DCM_VR_LO, "Doe^Jane again");
    set_vr(ds, 0x00190010, DCM_VR_LO, "GEMS_ACQU_01");
    set_vr(ds, 0x00191023, DCM_VR_DS, "39.375");
    set_vr(ds, 0x00191099, DCM_VR_LO, "secret");
    return ds;
}

static void deid(struct dcm_dataset *ds, const struct dcm_deid_options *opt,
                 struct dcm_deid_report *report)
{
    struct tr_error err = TR_ERROR_INIT;
    int rc = dcm_deid_dataset(ds, opt, report, &err);
    if (rc)
        fail_msg("dcm_deid_dataset: %s", err.message);
}

/* ---- the table --------------------------------------------------------------------------- */

static void test_rules(void **state)
{
    (void)state;
    assert_true(dcm_deid_rule_count > 550);
    const struct dcm_deid_rule *r = dcm_deid_rule_lookup(0x00100010);
    assert_non_null(r);
    assert_int_equal(r->basic, DCM_DEID_Z);
    assert_string_equal(r->name, "Patient's Name");
    assert_int_equal(dcm_deid_rule_lookup(0x00100020)->basic, DCM_DEID_Z_D);
    assert_int_equal(dcm_deid_rule_lookup(0x00081140)->basic, DCM_DEID_X_Z_U);
    assert_int_equal(dcm_deid_rule_lookup(0x00080018)->basic, DCM_DEID_U);
    assert_null(dcm_deid_rule_lookup(0x00080060)); /* Modality */
    /* Repeating groups and private attributes. */
    assert_int_equal(dcm_deid_rule_lookup(0x60023000)->basic, DCM_DEID_X);
    assert_int_equal(dcm_deid_rule_lookup(0x501E0010)->basic, DCM_DEID_X);
    assert_null(dcm_deid_rule_lookup(0x60020010)); /* Overlay Rows: not listed itself */
    assert_ptr_equal(dcm_deid_rule_lookup(0x00091001), &dcm_deid_private_rule);
    /* Options override the profile; C beats K when two options disagree. */
    r = dcm_deid_rule_lookup(0x00080020); /* Study Date */
    assert_int_equal(dcm_deid_rule_action(r, 0), DCM_DEID_Z);
    assert_int_equal(dcm_deid_rule_action(r, DCM_DEID_RETAIN_FULL_DATES), DCM_DEID_K);
    assert_int_equal(dcm_deid_rule_action(r, DCM_DEID_RETAIN_MODIFIED_DATES), DCM_DEID_C);
    r = dcm_deid_rule_lookup(0x00181200); /* Date of Last Calibration */
    assert_int_equal(dcm_deid_rule_action(r, DCM_DEID_RETAIN_DEVICE_IDENTITY), DCM_DEID_K);
    assert_int_equal(
        dcm_deid_rule_action(r, DCM_DEID_RETAIN_DEVICE_IDENTITY | DCM_DEID_RETAIN_MODIFIED_DATES),
        DCM_DEID_C);
    assert_int_equal(dcm_deid_rule_action(dcm_deid_rule_lookup(0x00080018), DCM_DEID_RETAIN_UIDS),
                     DCM_DEID_K);
    assert_string_equal(dcm_deid_action_name(DCM_DEID_X_Z_U), "X/Z/U*");
    /* The generated lists are sorted: lookups depend on it. */
    for (unsigned i = 1; i < dcm_deid_rule_count; i++)
        assert_true(dcm_deid_rules[i - 1].tag < dcm_deid_rules[i].tag);
    for (unsigned i = 1; i < dcm_deid_safe_word_count; i++)
        assert_true(strcmp(dcm_deid_safe_words[i - 1], dcm_deid_safe_words[i]) < 0);
}

/* ---- every action -------------------------------------------------------------------------- */

static void test_actions(void **state)
{
    (void)state;
    struct dcm_dataset *ds = sample();
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    struct dcm_deid_report rep;
    dcm_deid_report_init(&rep);
    deid(ds, &opt, &rep);
    char buf[256];

    /* Z: empty (present, zero length). */
    assert_string_equal(VALUE(ds, 0x00080020), "");
    assert_string_equal(VALUE(ds, 0x00080030), "");
    assert_string_equal(VALUE(ds, 0x00080050), "");
    assert_string_equal(VALUE(ds, 0x00080090), "");
    assert_string_equal(VALUE(ds, 0x00100030), "");
    assert_string_equal(VALUE(ds, 0x00100040), "");
    assert_string_equal(VALUE(ds, 0x00200010), "");
    /* X: removed. */
    assert_string_equal(VALUE(ds, 0x00080081), "<absent>");
    assert_string_equal(VALUE(ds, 0x00080055), "<absent>");
    assert_string_equal(VALUE(ds, 0x00081030), "<absent>");
    assert_string_equal(VALUE(ds, 0x0008103E), "<absent>");
    assert_string_equal(VALUE(ds, 0x00100021), "<absent>");
    assert_string_equal(VALUE(ds, 0x00101010), "<absent>");
    assert_string_equal(VALUE(ds, 0x00101030), "<absent>");
    assert_string_equal(VALUE(ds, 0x00204000), "<absent>");
    /* D (and X/D, X/Z/D resolved to D): a dummy of the VR. */
    assert_string_equal(VALUE(ds, 0x00080080), "ANONYMIZED");
    assert_string_equal(VALUE(ds, 0x00081010), "ANONYMIZED");
    assert_string_equal(VALUE(ds, 0x00081070), "ANONYMIZED^");
    assert_string_equal(VALUE(ds, 0x00181000), "ANONYMIZED");
    assert_string_equal(VALUE(ds, 0x00080021), "19000101");
    assert_string_equal(VALUE(ds, 0x00140104), "ANONYMIZED^"); /* unlisted PN */
    /* Patient's Name and ID: the keyed pseudonym, the same for both. */
    char pseudonym[24];
    assert_int_equal(
        dcm_deid_patient_pseudonym(&opt, "HOSP", "MRN0042", pseudonym, sizeof(pseudonym)), 0);
    assert_int_equal(strlen(pseudonym), 17);
    assert_int_equal(pseudonym[0], 'P');
    char name[32];
    snprintf(name, sizeof(name), "ANON^%s", pseudonym);
    assert_string_equal(VALUE(ds, 0x00100010), name);
    assert_string_equal(VALUE(ds, 0x00100020), pseudonym);
    /* U: mapped. */
    char mapped[DCM_UID_MAX + 1];
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_SOP, strlen(ORIG_SOP), mapped), 0);
    assert_string_equal(VALUE(ds, 0x00080018), mapped);
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_STUDY, strlen(ORIG_STUDY), mapped), 0);
    assert_string_equal(VALUE(ds, 0x0020000D), mapped);
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_FOR, strlen(ORIG_FOR), mapped), 0);
    assert_string_equal(VALUE(ds, 0x00200052), mapped);
    /* K / not listed: kept. */
    assert_string_equal(VALUE(ds, 0x00080016), CT_STORAGE);
    assert_string_equal(VALUE(ds, 0x00080060), "CT");
    assert_string_equal(VALUE(ds, 0x00180050), "1.25");
    /* Private: all gone, creators included (Retain Safe Private is off). */
    for (size_t i = 0; i < dcm_dataset_count(ds); i++)
        assert_false(dcm_tag_is_private(dcm_dataset_at(ds, i)->tag));
    assert_int_equal(rep.private_removed, 5);
    /* Marked de-identified. */
    assert_string_equal(VALUE(ds, 0x00120062), "YES");
    assert_string_equal(VALUE(ds, 0x00280303), "REMOVED");
    const struct dcm_element *seq = dcm_dataset_get(ds, 0x00120064);
    assert_non_null(seq);
    assert_int_equal(dcm_element_item_count(seq), 1);
    struct dcm_dataset *item = dcm_element_item(seq, 0);
    assert_string_equal(VALUE(item, 0x00080100), "113100");
    assert_string_equal(VALUE(item, 0x00080102), "DCM");
    assert_string_equal(VALUE(item, 0x00080104), "Basic Application Confidentiality Profile");
    /* The report counts what was done. */
    assert_true(rep.emptied >= 7);
    assert_true(rep.removed >= 8 + 5);
    assert_true(rep.dummied >= 7);
    assert_int_equal(rep.uids_mapped, 4);
    assert_true(rep.kept >= 3);
    assert_int_equal(rep.flags, 0);
    /* No original value is left anywhere in the encoded data set. */
    char *json = json_of(ds);
    static const char *const originals[] = {
        "Doe",     "Jane",        "MRN0042", "ACC12345", "Elsewhere", "Main Street",   "Referrer",
        "CTROOM1", "CTSCANNER01", "John",    "Terry",    "19540209",  "20240301",      "SN-778899",
        "STUDY7",  "moved",       "Rita",    "secret",   "ACME",      "1.2.840.113619"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(originals); i++) {
        if (strstr(json, originals[i]))
            fail_msg("'%s' survived de-identification", originals[i]);
    }
    tr_free(json);
    dcm_dataset_free(ds);
}

/* D on values that are not text: numbers become zeros, byte streams a zero word. */
static void test_dummy_binary(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    static const uint8_t doc[] = "%PDF-1.4 patient report";
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00420011, DCM_VR_OB, doc, sizeof(doc) - 1), 0);
    set(ds, 0x0072005F, "045Y"); /* Selector AS Value: D */
    assert_int_equal(dcm_dataset_set_empty(ds, 0x0040A124, DCM_VR_UI), 0); /* empty UID: U */
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    deid(ds, &opt, NULL);
    const struct dcm_element *e = dcm_dataset_get(ds, 0x00420011);
    assert_non_null(e);
    assert_int_equal(e->length, 2);
    assert_int_equal(e->value.bytes[0] | e->value.bytes[1], 0);
    char buf[64];
    assert_string_equal(VALUE(ds, 0x0072005F), "000Y");
    assert_string_equal(VALUE(ds, 0x0040A124), ""); /* stays empty */
    dcm_dataset_free(ds);
}

/* ---- sequences ------------------------------------------------------------------------------ */

static void test_sequences(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *ds = sample();
    /* Referenced Series Sequence (not listed) > Referenced Instance Sequence (not listed) >
     * Referenced SOP Instance UID (U), two levels down. */
    struct dcm_dataset *series = dcm_dataset_add_item(ds, 0x00081115, &err);
    set(series, 0x0020000E, ORIG_SERIES);
    struct dcm_dataset *inst = dcm_dataset_add_item(series, 0x0008114A, &err);
    set(inst, 0x00081150, CT_STORAGE);
    set(inst, 0x00081155, ORIG_SOP);
    set(inst, 0x00100010, "Doe^Jane"); /* a name down there: Z, emptied, not the pseudonym */
    set_vr(inst, 0x00291010, DCM_VR_LO, "private in an item");
    /* Source Image Sequence (X/Z/U*): kept, its UIDs mapped. */
    struct dcm_dataset *src = dcm_dataset_add_item(ds, 0x00082112, &err);
    set(src, 0x00081150, CT_STORAGE);
    set(src, 0x00081155, ORIG_REF);
    /* Request Attributes Sequence (X): gone whole. */
    struct dcm_dataset *req = dcm_dataset_add_item(ds, 0x00400275, &err);
    set(req, 0x00401001, "REQ-1");
    /* Content Sequence (D): text replaced, concept codes kept, UIDs mapped, recursively. */
    struct dcm_dataset *c1 = dcm_dataset_add_item(ds, 0x0040A730, &err);
    set(c1, 0x0040A010, "CONTAINS");
    set(c1, 0x0040A040, "TEXT");
    struct dcm_dataset *cn = dcm_dataset_add_item(c1, 0x0040A043, &err);
    set(cn, 0x00080100, "121071");
    set(cn, 0x00080102, "DCM");
    set(cn, 0x00080104, "Finding");
    set(c1, 0x0040A160, "Jane Doe has a nodule");
    struct dcm_dataset *c2 = dcm_dataset_add_item(c1, 0x0040A730, &err);
    set(c2, 0x0040A010, "HAS PROPERTIES");
    set(c2, 0x0040A040, "PNAME");
    set(c2, 0x0040A123, "Doe^Jane");
    struct dcm_dataset *c3 = dcm_dataset_add_item(c1, 0x0040A730, &err);
    set(c3, 0x0040A040, "IMAGE");
    struct dcm_dataset *ref = dcm_dataset_add_item(c3, 0x00081199, &err);
    set(ref, 0x00081150, CT_STORAGE);
    set(ref, 0x00081155, ORIG_REF);
    /* Person Identification Code Sequence (D): its codes identify, they are replaced. */
    struct dcm_dataset *obs = dcm_dataset_add_item(ds, 0x0040A073, &err); /* Verifying Obs. */
    set(obs, 0x0040A075, "Verifier^Vic");
    struct dcm_dataset *pid = dcm_dataset_add_item(obs, 0x00401101, &err);
    set(pid, 0x00080100, "EMP-4711");
    set(pid, 0x00080102, "HOSPITAL");
    set(pid, 0x00080104, "Vic Verifier");

    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    deid(ds, &opt, NULL);
    char buf[256], sop[DCM_UID_MAX + 1], refuid[DCM_UID_MAX + 1], seruid[DCM_UID_MAX + 1];
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_SOP, strlen(ORIG_SOP), sop), 0);
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_REF, strlen(ORIG_REF), refuid), 0);
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_SERIES, strlen(ORIG_SERIES), seruid), 0);

    const struct dcm_element *e = dcm_dataset_get(ds, 0x00081115);
    series = dcm_element_item(e, 0);
    assert_string_equal(VALUE(series, 0x0020000E), seruid);
    inst = dcm_element_item(dcm_dataset_get(series, 0x0008114A), 0);
    assert_string_equal(VALUE(inst, 0x00081155), sop); /* the reference still resolves */
    assert_string_equal(VALUE(inst, 0x00081150), CT_STORAGE);
    assert_string_equal(VALUE(inst, 0x00100010), "");
    assert_null(dcm_dataset_get(inst, 0x00291010));
    src = dcm_element_item(dcm_dataset_get(ds, 0x00082112), 0);
    assert_string_equal(VALUE(src, 0x00081155), refuid);
    assert_null(dcm_dataset_get(ds, 0x00400275));

    c1 = dcm_element_item(dcm_dataset_get(ds, 0x0040A730), 0);
    assert_string_equal(VALUE(c1, 0x0040A160), "ANONYMIZED");
    assert_string_equal(VALUE(c1, 0x0040A040), "TEXT");
    assert_string_equal(VALUE(c1, 0x0040A010), "CONTAINS");
    cn = dcm_element_item(dcm_dataset_get(c1, 0x0040A043), 0);
    assert_string_equal(VALUE(cn, 0x00080104), "Finding");
    assert_string_equal(VALUE(cn, 0x00080100), "121071");
    const struct dcm_element *children = dcm_dataset_get(c1, 0x0040A730);
    assert_int_equal(dcm_element_item_count(children), 2);
    c2 = dcm_element_item(children, 0);
    assert_string_equal(VALUE(c2, 0x0040A123), "ANONYMIZED^");
    c3 = dcm_element_item(children, 1);
    ref = dcm_element_item(dcm_dataset_get(c3, 0x00081199), 0);
    assert_string_equal(VALUE(ref, 0x00081155), refuid);

    obs = dcm_element_item(dcm_dataset_get(ds, 0x0040A073), 0);
    assert_string_equal(VALUE(obs, 0x0040A075), "ANONYMIZED^");
    pid = dcm_element_item(dcm_dataset_get(obs, 0x00401101), 0);
    assert_string_equal(VALUE(pid, 0x00080100), "ANONYMIZED");
    assert_string_equal(VALUE(pid, 0x00080104), "ANONYMIZED");

    char *json = json_of(ds);
    assert_null(strstr(json, "Doe"));
    assert_null(strstr(json, "Vic"));
    assert_null(strstr(json, "EMP-4711"));
    assert_null(strstr(json, "REQ-1"));
    assert_null(strstr(json, "1.2.840.113619"));
    tr_free(json);
    dcm_dataset_free(ds);
}

static void test_clean_structured_content(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_dataset *c1 = dcm_dataset_add_item(ds, 0x0040A730, &err);
    set(c1, 0x0040A160, "CT CHEST nodule in Jane Doe");
    struct dcm_dataset *ac = dcm_dataset_add_item(ds, 0x00400555, &err); /* X/Z, option C */
    set(ac, 0x0040A160, "LEFT LUNG Smith");
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    deid(ds, &opt, NULL);
    char buf[128];
    /* Basic: Acquisition Context Sequence emptied (X/Z -> Z). */
    assert_int_equal(dcm_element_item_count(dcm_dataset_get(ds, 0x00400555)), 0);
    dcm_dataset_free(ds);

    ds = dcm_dataset_new();
    c1 = dcm_dataset_add_item(ds, 0x0040A730, &err);
    set(c1, 0x0040A160, "CT CHEST nodule in Jane Doe");
    ac = dcm_dataset_add_item(ds, 0x00400555, &err);
    set(ac, 0x0040A160, "LEFT LUNG Smith");
    options(&opt, KEY1, DCM_DEID_CLEAN_STRUCTURED_CONTENT);
    deid(ds, &opt, NULL);
    c1 = dcm_element_item(dcm_dataset_get(ds, 0x0040A730), 0);
    assert_string_equal(VALUE(c1, 0x0040A160), "CT CHEST");
    ac = dcm_element_item(dcm_dataset_get(ds, 0x00400555), 0);
    assert_non_null(ac);
    assert_string_equal(VALUE(ac, 0x0040A160), "LEFT LUNG");
    dcm_dataset_free(ds);
}

/* ---- UIDs ------------------------------------------------------------------------------------ */

static void test_uid_mapping(void **state)
{
    (void)state;
    struct dcm_deid_options a, b;
    options(&a, KEY1, 0);
    options(&b, KEY2, 0);
    char u1[DCM_UID_MAX + 1], u2[DCM_UID_MAX + 1], u3[DCM_UID_MAX + 1];
    assert_int_equal(dcm_deid_map_uid(&a, ORIG_STUDY, strlen(ORIG_STUDY), u1), 0);
    assert_int_equal(dcm_deid_map_uid(&a, ORIG_STUDY, strlen(ORIG_STUDY), u2), 0);
    assert_string_equal(u1, u2); /* deterministic */
    assert_int_equal(dcm_deid_map_uid(&b, ORIG_STUDY, strlen(ORIG_STUDY), u3), 0);
    assert_string_not_equal(u1, u3); /* per key */
    assert_int_equal(strncmp(u1, "2.25.", 5), 0);
    assert_true(strlen(u1) <= DCM_UID_MAX);
    assert_true(dcm_uid_is_valid(u1, strlen(u1)));
    assert_true(dcm_uid_is_valid(u3, strlen(u3)));
    /* Padding is not part of the UID. */
    assert_int_equal(dcm_deid_map_uid(&a, ORIG_STUDY "\0", strlen(ORIG_STUDY) + 1, u2), 0);
    assert_string_equal(u1, u2);
    /* Distinct inputs, distinct outputs; every output valid. */
    char prev[DCM_UID_MAX + 1] = "";
    for (int i = 0; i < 2000; i++) {
        char in[64];
        snprintf(in, sizeof(in), "1.2.3.%d", i);
        assert_int_equal(dcm_deid_map_uid(&a, in, strlen(in), u1), 0);
        assert_true(dcm_uid_is_valid(u1, strlen(u1)));
        assert_true(strlen(u1) <= 44);
        assert_string_not_equal(u1, prev);
        snprintf(prev, sizeof(prev), "%s", u1);
    }
    /* Registry UIDs are structural: never replaced. */
    assert_int_equal(dcm_deid_map_uid(&a, CT_STORAGE, strlen(CT_STORAGE), u1), 0);
    assert_string_equal(u1, CT_STORAGE);
    assert_int_equal(dcm_deid_map_uid(&a, "1.2.840.10008.1.4.1.1", 21, u1), 0); /* Talairach */
    assert_string_equal(u1, "1.2.840.10008.1.4.1.1");
    assert_int_equal(dcm_deid_map_uid(&a, "", 0, u1), TR_EINVAL);

    /* In data sets: the same key gives the same UIDs in two files of a study; a multi-valued
     * UID element has each value mapped. */
    struct dcm_dataset *d1 = sample(), *d2 = sample();
    set(d2, 0x00080018, ORIG_REF);
    set(d1, 0x00080058, ORIG_SOP "\\" ORIG_REF); /* Failed SOP Instance UID List */
    deid(d1, &a, NULL);
    deid(d2, &a, NULL);
    char buf[256], buf2[256];
    assert_string_equal(value_of(d1, 0x0020000D, buf, sizeof(buf)),
                        value_of(d2, 0x0020000D, buf2, sizeof(buf2)));
    assert_string_equal(value_of(d1, 0x0020000E, buf, sizeof(buf)),
                        value_of(d2, 0x0020000E, buf2, sizeof(buf2)));
    assert_string_not_equal(value_of(d1, 0x00080018, buf, sizeof(buf)),
                            value_of(d2, 0x00080018, buf2, sizeof(buf2)));
    assert_int_equal(dcm_dataset_get_string(d1, 0x00080058, 1, buf, sizeof(buf)) > 0, 1);
    assert_int_equal(dcm_deid_map_uid(&a, ORIG_REF, strlen(ORIG_REF), u1), 0);
    assert_string_equal(buf, u1);
    dcm_dataset_free(d1);
    dcm_dataset_free(d2);

    /* Retain UIDs. */
    struct dcm_dataset *d3 = sample();
    options(&a, KEY1, DCM_DEID_RETAIN_UIDS);
    deid(d3, &a, NULL);
    assert_string_equal(VALUE(d3, 0x00080018), ORIG_SOP);
    assert_string_equal(VALUE(d3, 0x0020000D), ORIG_STUDY);
    dcm_dataset_free(d3);
}

/* A prepared key (dcm_deid_options_prepare) maps exactly as HMAC() does, for keys shorter
 * than, as long as and longer than SHA-256's 64-byte block; a key changed after preparing is
 * noticed. */
static void test_prepared_key(void **state)
{
    (void)state;
    static uint8_t key[DCM_DEID_MAX_KEY_LENGTH];
    for (size_t i = 0; i < sizeof(key); i++)
        key[i] = (uint8_t)(i * 131 + 7);
    static const size_t lengths[] = {16, 32, 63, 64, 65, 200, DCM_DEID_MAX_KEY_LENGTH};
    for (size_t k = 0; k < TR_ARRAY_SIZE(lengths); k++) {
        struct dcm_deid_options plain, prepared;
        dcm_deid_options_init(&plain);
        plain.key = key;
        plain.key_length = lengths[k];
        prepared = plain;
        struct tr_error err = TR_ERROR_INIT;
        assert_int_equal(dcm_deid_options_prepare(&prepared, &err), 0);
        assert_non_null(prepared.hmac);
        char u1[DCM_UID_MAX + 1], u2[DCM_UID_MAX + 1], p1[24], p2[24];
        assert_int_equal(dcm_deid_map_uid(&plain, ORIG_STUDY, strlen(ORIG_STUDY), u1), 0);
        assert_int_equal(dcm_deid_map_uid(&prepared, ORIG_STUDY, strlen(ORIG_STUDY), u2), 0);
        assert_string_equal(u1, u2);
        assert_int_equal(dcm_deid_patient_pseudonym(&plain, "ISSUER", "MRN0042", p1, 24), 0);
        assert_int_equal(dcm_deid_patient_pseudonym(&prepared, "ISSUER", "MRN0042", p2, 24), 0);
        assert_string_equal(p1, p2);
        int d1 = 0, d2 = 1;
        assert_int_equal(dcm_deid_date_offset(&plain, "", "MRN0042", &d1), 0);
        assert_int_equal(dcm_deid_date_offset(&prepared, "", "MRN0042", &d2), 0);
        assert_int_equal(d1, d2);
        /* A message longer than the stack buffer of keyed_hash. */
        char long_uid[600];
        memset(long_uid, '1', sizeof(long_uid));
        assert_int_equal(dcm_deid_map_uid(&plain, long_uid, sizeof(long_uid), u1), 0);
        assert_int_equal(dcm_deid_map_uid(&prepared, long_uid, sizeof(long_uid), u2), 0);
        assert_string_equal(u1, u2);
        /* Whole data sets, byte for byte. */
        struct dcm_dataset *a = sample(), *b = sample();
        deid(a, &plain, NULL);
        deid(b, &prepared, NULL);
        char *ja = json_of(a), *jb = json_of(b);
        assert_string_equal(ja, jb);
        tr_free(ja);
        tr_free(jb);
        dcm_dataset_free(a);
        dcm_dataset_free(b);
        /* The key swapped under a prepared state: the new key's mapping, not the old one's. */
        prepared.key = KEY2;
        prepared.key_length = 32;
        plain.key = KEY2;
        plain.key_length = 32;
        assert_int_equal(dcm_deid_map_uid(&plain, ORIG_STUDY, strlen(ORIG_STUDY), u1), 0);
        assert_int_equal(dcm_deid_map_uid(&prepared, ORIG_STUDY, strlen(ORIG_STUDY), u2), 0);
        assert_string_equal(u1, u2);
        dcm_deid_options_release(&prepared);
        assert_null(prepared.hmac);
        dcm_deid_options_release(&prepared); /* twice: a no-op */
    }
    /* Bad options are refused, as by dcm_deid_dataset. */
    struct dcm_deid_options bad;
    dcm_deid_options_init(&bad);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_deid_options_prepare(&bad, &err), TR_EINVAL);
    assert_null(bad.hmac);
    /* Out of memory at every step: an error, nothing left allocated. */
    bool succeeded = false;
    for (long n = 0; n < 200 && !succeeded; n++) {
        struct dcm_deid_options opt;
        options(&opt, KEY1, 0);
        tr_error_clear(&err);
        tr_alloc_fail_after(n);
        int rc = dcm_deid_options_prepare(&opt, &err);
        tr_alloc_fail_after(-1);
        if (rc == 0)
            succeeded = true;
        else
            assert_null(opt.hmac);
        dcm_deid_options_release(&opt);
    }
    assert_true(succeeded);
}

static void test_deterministic(void **state)
{
    (void)state;
    struct dcm_deid_options opt;
    options(&opt, KEY1, DCM_DEID_RETAIN_MODIFIED_DATES | DCM_DEID_CLEAN_DESCRIPTORS);
    struct dcm_dataset *d1 = sample(), *d2 = sample();
    deid(d1, &opt, NULL);
    deid(d2, &opt, NULL);
    char *j1 = json_of(d1), *j2 = json_of(d2);
    assert_string_equal(j1, j2);
    tr_free(j1);
    tr_free(j2);
    dcm_dataset_free(d1);
    dcm_dataset_free(d2);
}

/* ---- the meta group -------------------------------------------------------------------------- */

static void test_meta(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_file *f = tr_calloc(1, sizeof(*f));
    f->dataset = sample();
    f->meta = dcm_dataset_new();
    set(f->meta, DCM_TAG_MediaStorageSOPInstanceUID, ORIG_SOP);
    set(f->meta, DCM_TAG_SourceApplicationEntityTitle, "HOSPITALPACS");
    set(f->meta, 0x00020100, "1.2.3.4"); /* Private Information Creator UID */
    assert_int_equal(dcm_dataset_set_bytes(f->meta, 0x00020102, DCM_VR_OB, "Doe^Jane", 8), 0);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 24);
    struct tr_sink sink = tr_sink_buf(&out);
    assert_int_equal(dcm_file_write(f, NULL, &sink, &err), 0);
    dcm_file_free(f);

    struct dcm_file *g = NULL;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, NULL, &g, &err), 0);
    assert_non_null(dcm_dataset_get(g->meta, DCM_TAG_SourceApplicationEntityTitle));
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    assert_int_equal(dcm_deid_file(g, &opt, NULL, &err), 0);
    char buf[128], sop[DCM_UID_MAX + 1];
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_SOP, strlen(ORIG_SOP), sop), 0);
    assert_string_equal(VALUE(g->meta, DCM_TAG_MediaStorageSOPInstanceUID), sop);
    assert_string_equal(VALUE(g->meta, DCM_TAG_MediaStorageSOPClassUID), CT_STORAGE);
    assert_null(dcm_dataset_get(g->meta, DCM_TAG_SourceApplicationEntityTitle));
    assert_null(dcm_dataset_get(g->meta, 0x00020100));
    assert_null(dcm_dataset_get(g->meta, 0x00020102));
    /* Written and read again: the meta group matches the data set. */
    struct tr_buf out2;
    tr_buf_init(&out2, 1 << 24);
    struct tr_sink sink2 = tr_sink_buf(&out2);
    assert_int_equal(dcm_file_write(g, NULL, &sink2, &err), 0);
    struct dcm_file *h = NULL;
    assert_int_equal(dcm_file_read_memory(out2.data, out2.len, NULL, &h, &err), 0);
    char ds_uid[DCM_UID_MAX + 1];
    assert_int_equal(
        dcm_dataset_get_uid(h->dataset, DCM_TAG_SOPInstanceUID, ds_uid, sizeof(ds_uid)), 0);
    assert_string_equal(ds_uid, sop);
    assert_string_equal(VALUE(h->meta, DCM_TAG_MediaStorageSOPInstanceUID), sop);
    assert_null(dcm_dataset_get(h->meta, DCM_TAG_SourceApplicationEntityTitle));
    assert_null(memmem(out2.data, out2.len, "Doe^Jane", 8));
    assert_null(memmem(out2.data, out2.len, "HOSPITALPACS", 12));
    dcm_file_free(h);
    dcm_file_free(g);
    tr_buf_release(&out);
    tr_buf_release(&out2);
}

/* ---- dates ------------------------------------------------------------------------------------
 */

static void test_shift_date(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "20240301", 8, -1, out, sizeof(out)), 0);
    assert_string_equal(out, "20240229"); /* leap year */
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "20230301", 8, -1, out, sizeof(out)), 0);
    assert_string_equal(out, "20230228");
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "20000101", 8, -365, out, sizeof(out)), 0);
    assert_string_equal(out, "19990101");
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "1999.12.31", 10, 1, out, sizeof(out)), 0);
    assert_string_equal(out, "20000101");
    assert_int_equal(
        dcm_deid_shift_date(DCM_VR_DT, "20240101120000.5+0100", 21, -1, out, sizeof(out)), 0);
    assert_string_equal(out, "20231231120000.5+0100"); /* time and zone kept */
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DT, "202401", 6, -1, out, sizeof(out)), 0);
    assert_string_equal(out, "202312"); /* precision kept */
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DT, "2024", 4, -1, out, sizeof(out)), 0);
    assert_string_equal(out, "2023");
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "20240230", 8, 0, out, sizeof(out)), TR_EINVAL);
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "2024013", 7, 0, out, sizeof(out)), TR_EINVAL);
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "unknown", 7, 0, out, sizeof(out)), TR_EINVAL);
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "00010101", 8, -1, out, sizeof(out)),
                     TR_EINVAL);
}

static struct dcm_dataset *patient(const char *id, const char *study_date)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    set(ds, 0x00100020, id);
    set(ds, 0x00100021, "HOSP");
    set(ds, 0x00080020, study_date);
    set(ds, 0x00080030, "101500");
    set(ds, 0x0008002A, "20240301101500.000000"); /* Acquisition DateTime */
    set(ds, 0x00100030, "19540209");
    set(ds, 0x00140102, "20240305"); /* Secondary Review Date: not listed */
    return ds;
}

static int shifted_days(const struct dcm_dataset *ds, const char *original)
{
    char v[16];
    assert_int_equal(dcm_dataset_get_string(ds, 0x00080020, 0, v, sizeof(v)), 8);
    for (int d = -400; d <= 400; d++) {
        char s[32];
        assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, original, 8, d, s, sizeof(s)), 0);
        if (strcmp(s, v) == 0)
            return d;
    }
    fail_msg("%s is no shift of %s", v, original);
    return 0;
}

static void test_date_shift(void **state)
{
    (void)state;
    struct dcm_deid_options opt;
    options(&opt, KEY1, DCM_DEID_RETAIN_MODIFIED_DATES);
    struct dcm_deid_report rep;
    dcm_deid_report_init(&rep);
    /* Two studies of one patient: the same offset, so intervals are kept. */
    struct dcm_dataset *a = patient("MRN1", "20240301"), *b = patient("MRN1", "20240601");
    deid(a, &opt, &rep);
    deid(b, &opt, NULL);
    int da = shifted_days(a, "20240301"), db = shifted_days(b, "20240601");
    assert_int_equal(da, db);
    assert_true(da >= -365 && da <= -1);
    assert_true(rep.flags & DCM_DEID_FLAG_DATES_SHIFTED);
    assert_int_equal(rep.date_shift_days, da);
    int expected;
    assert_int_equal(dcm_deid_date_offset(&opt, "HOSP", "MRN1", &expected), 0);
    assert_int_equal(da, expected);
    char buf[64], want[32];
    /* DT: the date part moves, the time stays; TM kept; unlisted DA moved too. */
    assert_int_equal(
        dcm_deid_shift_date(DCM_VR_DT, "20240301101500.000000", 21, da, want, sizeof(want)), 0);
    assert_string_equal(VALUE(a, 0x0008002A), want);
    assert_string_equal(VALUE(a, 0x00080030), "101500");
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "20240305", 8, da, want, sizeof(want)), 0);
    assert_string_equal(VALUE(a, 0x00140102), want);
    /* The birth date has no date option: Z. */
    assert_string_equal(VALUE(a, 0x00100030), "");
    assert_string_equal(VALUE(a, 0x00280303), "MODIFIED");
    dcm_dataset_free(a);
    dcm_dataset_free(b);
    /* Other patients get other offsets (20 patients cannot all share one). */
    int first = 0;
    bool differ = false;
    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof(id), "MRN%d", 100 + i);
        struct dcm_dataset *p = patient(id, "20240301");
        deid(p, &opt, NULL);
        int d = shifted_days(p, "20240301");
        assert_true(d >= -365 && d <= -1);
        if (i == 0)
            first = d;
        differ = differ || d != first;
        dcm_dataset_free(p);
    }
    assert_true(differ);
    /* A fixed shift. */
    opt.date_shift_min = opt.date_shift_max = -10;
    a = patient("MRN1", "20240301");
    deid(a, &opt, NULL);
    assert_string_equal(VALUE(a, 0x00080020), "20240220");
    dcm_dataset_free(a);
    /* Full dates: kept; no option: removed. */
    options(&opt, KEY1, DCM_DEID_RETAIN_FULL_DATES);
    a = patient("MRN1", "20240301");
    deid(a, &opt, NULL);
    assert_string_equal(VALUE(a, 0x00080020), "20240301");
    assert_string_equal(VALUE(a, 0x0008002A), "20240301101500.000000");
    assert_string_equal(VALUE(a, 0x00280303), "UNMODIFIED");
    dcm_dataset_free(a);
    options(&opt, KEY1, 0);
    a = patient("MRN1", "20240301");
    deid(a, &opt, NULL);
    assert_string_equal(VALUE(a, 0x00080020), "");
    assert_string_equal(VALUE(a, 0x0008002A), "19000101000000"); /* X/Z/D -> D */
    assert_string_equal(VALUE(a, 0x00140102), "19000101");       /* unlisted: dummy */
    dcm_dataset_free(a);
}

/* ---- burned-in annotation -------------------------------------------------------------------- */

static unsigned flags_for(const char *sop_class, const char *burned, const char *features)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    set(ds, 0x00080016, sop_class);
    if (burned)
        set(ds, 0x00280301, burned);
    if (features)
        set(ds, 0x00280302, features);
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    struct dcm_deid_report rep;
    dcm_deid_report_init(&rep);
    deid(ds, &opt, &rep);
    dcm_dataset_free(ds);
    return rep.flags & DCM_DEID_FLAGS_PIXELS;
}

static void test_burned_in(void **state)
{
    (void)state;
    assert_int_equal(flags_for(CT_STORAGE, NULL, NULL), 0);
    assert_int_equal(flags_for(CT_STORAGE, "NO", NULL), 0);
    assert_int_equal(flags_for(CT_STORAGE, "YES", NULL), DCM_DEID_FLAG_BURNED_IN_ANNOTATION);
    assert_int_equal(flags_for(CT_STORAGE, NULL, "YES"), DCM_DEID_FLAG_RECOGNIZABLE_FEATURES);
    /* Secondary capture and ultrasound without the attribute: flagged by class. */
    assert_int_equal(flags_for("1.2.840.10008.5.1.4.1.1.7", NULL, NULL),
                     DCM_DEID_FLAG_BURNED_IN_SOP_CLASS);
    assert_int_equal(flags_for("1.2.840.10008.5.1.4.1.1.6.1", NULL, NULL),
                     DCM_DEID_FLAG_BURNED_IN_SOP_CLASS);
    assert_int_equal(flags_for("1.2.840.10008.5.1.4.1.1.6.1", "NO", NULL), 0);
    assert_int_equal(flags_for("1.2.840.10008.5.1.4.1.1.7", "YES", NULL),
                     DCM_DEID_FLAG_BURNED_IN_ANNOTATION);
}

/* ---- options and the method code sequence ---------------------------------------------------- */

static void codes_of(const struct dcm_dataset *ds, char *out, size_t size)
{
    out[0] = '\0';
    const struct dcm_element *seq = dcm_dataset_get(ds, 0x00120064);
    assert_non_null(seq);
    for (unsigned i = 0; i < dcm_element_item_count(seq); i++) {
        char v[32];
        struct dcm_dataset *item = dcm_element_item(seq, i);
        assert_int_equal(dcm_dataset_get_string(item, 0x00080100, 0, v, sizeof(v)), 6);
        char scheme[16];
        assert_int_equal(dcm_dataset_get_string(item, 0x00080102, 0, scheme, sizeof(scheme)), 3);
        assert_string_equal(scheme, "DCM");
        assert_non_null(dcm_dataset_get(item, 0x00080104));
        size_t n = strlen(out);
        snprintf(out + n, size - n, "%s%s", n ? " " : "", v);
    }
}

static void test_method_codes(void **state)
{
    (void)state;
    static const struct {
        unsigned options;
        const char *codes;
    } cases[] = {
        {0, "113100"},
        {DCM_DEID_CLEAN_GRAPHICS, "113100 113103"},
        {DCM_DEID_CLEAN_STRUCTURED_CONTENT, "113100 113104"},
        {DCM_DEID_CLEAN_DESCRIPTORS, "113100 113105"},
        {DCM_DEID_RETAIN_FULL_DATES, "113100 113106"},
        {DCM_DEID_RETAIN_MODIFIED_DATES, "113100 113107"},
        {DCM_DEID_RETAIN_PATIENT_CHARACTERISTICS, "113100 113108"},
        {DCM_DEID_RETAIN_DEVICE_IDENTITY, "113100 113109"},
        {DCM_DEID_RETAIN_UIDS, "113100 113110"},
        {DCM_DEID_RETAIN_SAFE_PRIVATE, "113100 113111"},
        {DCM_DEID_RETAIN_INSTITUTION_IDENTITY, "113100 113112"},
        {0x3FF & ~(unsigned)DCM_DEID_RETAIN_FULL_DATES,
         "113100 113103 113104 113105 113107 113108 113109 113110 113111 113112"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct dcm_dataset *ds = sample();
        struct dcm_deid_options opt;
        options(&opt, KEY1, cases[i].options);
        deid(ds, &opt, NULL);
        char codes[256];
        codes_of(ds, codes, sizeof(codes));
        assert_string_equal(codes, cases[i].codes);
        /* De-identification Method names the profile too. */
        char v[80];
        assert_true(dcm_dataset_get_string(ds, 0x00120063, 1, v, sizeof(v)) > 0);
        assert_string_equal(v, "Basic Application Confidentiality Profile");
        dcm_dataset_free(ds);
    }
}

static void test_retain_options(void **state)
{
    (void)state;
    char buf[256];
    struct dcm_deid_options opt;
    struct dcm_dataset *ds = sample();
    options(&opt, KEY1,
            DCM_DEID_RETAIN_DEVICE_IDENTITY | DCM_DEID_RETAIN_INSTITUTION_IDENTITY |
                DCM_DEID_RETAIN_PATIENT_CHARACTERISTICS);
    deid(ds, &opt, NULL);
    assert_string_equal(VALUE(ds, 0x00181000), "SN-778899");
    assert_string_equal(VALUE(ds, 0x00081010), "CTROOM1");
    assert_string_equal(VALUE(ds, 0x00080080), "Saint Elsewhere Hospital");
    assert_string_equal(VALUE(ds, 0x00080081), "1 Main Street");
    assert_string_equal(VALUE(ds, 0x00101010), "070Y");
    assert_string_equal(VALUE(ds, 0x00100040), "F");
    assert_string_equal(VALUE(ds, 0x00101030), "61.5");
    /* Station AE Title: C under Retain Device Identity: a keyed pseudonym, stable. */
    const char *ae = VALUE(ds, 0x00080055);
    assert_int_equal(strlen(ae), 16);
    assert_int_equal(ae[0], 'D');
    assert_string_not_equal(ae, "CTSCANNER01");
    dcm_dataset_free(ds);

    /* Clean Descriptors: descriptions keep their safe words only. */
    ds = sample();
    set(ds, 0x00181030, "CT HEAD W/O CONTRAST"); /* Protocol Name */
    options(&opt, KEY1, DCM_DEID_CLEAN_DESCRIPTORS);
    deid(ds, &opt, NULL);
    assert_string_equal(VALUE(ds, 0x00081030), "CT CHEST");
    assert_string_equal(VALUE(ds, 0x0008103E), "AXIAL 5MM");
    assert_string_equal(VALUE(ds, 0x00181030), "CT HEAD W/O CONTRAST");
    assert_string_equal(VALUE(ds, 0x00204000), ""); /* nothing safe left */
    dcm_dataset_free(ds);

    /* Retain Safe Private: the known safe element and its creator stay, the rest goes. */
    ds = sample();
    options(&opt, KEY1, DCM_DEID_RETAIN_SAFE_PRIVATE);
    struct dcm_deid_report rep;
    dcm_deid_report_init(&rep);
    deid(ds, &opt, &rep);
    assert_string_equal(VALUE(ds, 0x00191023), "39.375");
    assert_string_equal(VALUE(ds, 0x00190010), "GEMS_ACQU_01");
    assert_null(dcm_dataset_get(ds, 0x00191099));
    assert_null(dcm_dataset_get(ds, 0x00090010));
    assert_null(dcm_dataset_get(ds, 0x00091001));
    assert_int_equal(rep.private_retained, 1);
    assert_int_equal(rep.private_removed, 3);
    dcm_dataset_free(ds);
}

static void test_graphics(void **state)
{
    (void)state;
    struct dcm_dataset *ds = sample();
    static const uint8_t bits[8] = {0xFF};
    assert_int_equal(dcm_dataset_set_int(ds, 0x60020010, DCM_VR_US, 8), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x60020011, DCM_VR_US, 8), 0);
    set(ds, 0x60020022, "Doe Jane marker");
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x60023000, DCM_VR_OW, bits, sizeof(bits)), 0);
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x50003000, DCM_VR_OW, bits, sizeof(bits)), 0);
    struct dcm_dataset *copy = dcm_dataset_copy(ds, NULL);
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    struct dcm_deid_report rep;
    dcm_deid_report_init(&rep);
    deid(ds, &opt, &rep);
    /* Basic: every element of the overlay and curve groups is gone. */
    for (size_t i = 0; i < dcm_dataset_count(ds); i++) {
        uint16_t g = DCM_TAG_GROUP(dcm_dataset_at(ds, i)->tag);
        assert_false(g >= 0x5000 && g <= 0x60FF);
    }
    assert_false(rep.flags & DCM_DEID_FLAG_GRAPHICS_RETAINED);
    /* Clean Graphics: kept, text cleaned, flagged. */
    options(&opt, KEY1, DCM_DEID_CLEAN_GRAPHICS);
    dcm_deid_report_init(&rep);
    deid(copy, &opt, &rep);
    assert_non_null(dcm_dataset_get(copy, 0x60023000));
    assert_non_null(dcm_dataset_get(copy, 0x60020010));
    assert_non_null(dcm_dataset_get(copy, 0x50003000));
    char buf[64];
    assert_string_equal(VALUE(copy, 0x60020022), "");
    assert_true(rep.flags & DCM_DEID_FLAG_GRAPHICS_RETAINED);
    dcm_dataset_free(ds);
    dcm_dataset_free(copy);
}

static void test_bad_options(void **state)
{
    (void)state;
    struct dcm_dataset *ds = sample();
    struct dcm_deid_options opt;
    dcm_deid_options_init(&opt);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_deid_dataset(ds, &opt, NULL, &err), TR_EINVAL);
    assert_non_null(strstr(err.message, "key"));
    options(&opt, KEY1, 0);
    opt.key_length = 8;
    tr_error_clear(&err);
    assert_int_equal(dcm_deid_dataset(ds, &opt, NULL, &err), TR_EINVAL);
    options(&opt, KEY1, DCM_DEID_RETAIN_FULL_DATES | DCM_DEID_RETAIN_MODIFIED_DATES);
    tr_error_clear(&err);
    assert_int_equal(dcm_deid_dataset(ds, &opt, NULL, &err), TR_EINVAL);
    options(&opt, KEY1, 0);
    opt.date_shift_min = 5;
    opt.date_shift_max = -5;
    tr_error_clear(&err);
    assert_int_equal(dcm_deid_dataset(ds, &opt, NULL, &err), TR_EINVAL);
    /* Nothing was changed by the refusals. */
    char buf[64];
    assert_string_equal(VALUE(ds, 0x00100010), "Doe^Jane");
    /* Caller-supplied replacements. */
    options(&opt, KEY1, 0);
    opt.patient_name = "Teaching^Case^Seven";
    opt.patient_id = "TC007";
    deid(ds, &opt, NULL);
    assert_string_equal(VALUE(ds, 0x00100010), "Teaching^Case^Seven");
    assert_string_equal(VALUE(ds, 0x00100020), "TC007");
    dcm_dataset_free(ds);
}

/* ---- pseudonymization ------------------------------------------------------------------------ */

static void test_pseudonymize(void **state)
{
    (void)state;
    struct dcm_deid_options opt;
    options(&opt, KEY1, 0);
    struct dcm_dataset *ds = sample();
    set(ds, 0x00101040, "1 Patient Road");
    struct dcm_deid_report rep;
    dcm_deid_report_init(&rep);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_pseudonymize_dataset(ds, &opt, &rep, &err), 0);
    char buf[256], pseudonym[24], uid[DCM_UID_MAX + 1], want[32];
    assert_int_equal(
        dcm_deid_patient_pseudonym(&opt, "HOSP", "MRN0042", pseudonym, sizeof(pseudonym)), 0);
    char name[32];
    snprintf(name, sizeof(name), "ANON^%s", pseudonym);
    assert_string_equal(VALUE(ds, 0x00100010), name);
    assert_string_equal(VALUE(ds, 0x00100020), pseudonym);
    /* Other names and identifiers: keyed tokens. */
    const char *ref = VALUE(ds, 0x00080090);
    assert_int_equal(strncmp(ref, "ANON^N", 6), 0);
    assert_int_equal(strlen(ref), 18);
    const char *acc = VALUE(ds, 0x00080050);
    assert_int_equal(acc[0], 'I');
    assert_int_equal(strlen(acc), 16); /* SH: at most 16 */
    assert_string_equal(VALUE(ds, 0x00101040), "<absent>");
    /* Dates shifted by the patient's offset, UIDs mapped. */
    int days;
    assert_int_equal(dcm_deid_date_offset(&opt, "HOSP", "MRN0042", &days), 0);
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "20240301", 8, days, want, sizeof(want)), 0);
    assert_string_equal(VALUE(ds, 0x00080020), want);
    assert_int_equal(dcm_deid_shift_date(DCM_VR_DA, "19540209", 8, days, want, sizeof(want)), 0);
    assert_string_equal(VALUE(ds, 0x00100030), want);
    assert_int_equal(dcm_deid_map_uid(&opt, ORIG_SOP, strlen(ORIG_SOP), uid), 0);
    assert_string_equal(VALUE(ds, 0x00080018), uid);
    /* Everything else kept; not marked de-identified; private removed. */
    assert_string_equal(VALUE(ds, 0x00081030), "CT CHEST John Smith");
    assert_string_equal(VALUE(ds, 0x00080080), "Saint Elsewhere Hospital");
    assert_string_equal(VALUE(ds, 0x00101010), "070Y");
    assert_null(dcm_dataset_get(ds, 0x00120062));
    assert_string_equal(VALUE(ds, 0x00280303), "MODIFIED");
    assert_null(dcm_dataset_get(ds, 0x00091001));
    assert_true(rep.names_replaced >= 4);
    /* The same input, the same output. */
    struct dcm_dataset *again = sample();
    set(again, 0x00101040, "1 Patient Road");
    assert_int_equal(dcm_pseudonymize_dataset(again, &opt, NULL, &err), 0);
    char *j1 = json_of(ds), *j2 = json_of(again);
    assert_string_equal(j1, j2);
    assert_null(strstr(j1, "Doe"));
    assert_null(strstr(j1, "MRN0042"));
    tr_free(j1);
    tr_free(j2);
    dcm_dataset_free(ds);
    dcm_dataset_free(again);
}

/* ---- allocation failures --------------------------------------------------------------------- */

static void test_allocation_failures(void **state)
{
    (void)state;
    struct dcm_deid_options opt;
    options(&opt, KEY1, DCM_DEID_RETAIN_MODIFIED_DATES | DCM_DEID_CLEAN_DESCRIPTORS);
    bool succeeded = false;
    for (long n = 0; n < 5000 && !succeeded; n++) {
        struct dcm_dataset *ds = sample();
        struct tr_error err = TR_ERROR_INIT;
        tr_alloc_fail_after(n);
        int rc = dcm_deid_dataset(ds, &opt, NULL, &err);
        tr_alloc_fail_after(-1);
        if (rc == 0)
            succeeded = true;
        else
            assert_int_equal(rc, TR_ENOMEM);
        dcm_dataset_free(ds);
    }
    assert_true(succeeded);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_dummy_binary),
        cmocka_unit_test(test_sequences),
        cmocka_unit_test(test_clean_structured_content),
        cmocka_unit_test(test_uid_mapping),
        cmocka_unit_test(test_prepared_key),
        cmocka_unit_test(test_deterministic),
        cmocka_unit_test(test_meta),
        cmocka_unit_test(test_shift_date),
        cmocka_unit_test(test_date_shift),
        cmocka_unit_test(test_burned_in),
        cmocka_unit_test(test_method_codes),
        cmocka_unit_test(test_retain_options),
        cmocka_unit_test(test_graphics),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_pseudonymize),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
