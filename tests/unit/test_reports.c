/*
 * test_reports.c - the report service's pure parts (src/services/reports): the signing and
 * drafting rules, draft validation (each error names its field), the choice of template, the
 * ORU^R01 (fields, escaping, statuses, the PDF in OBX ED) read back with src/hl7's parser, the
 * FHIR resources' required elements and references, the Basic Text SR's structure (TID 2000)
 * and the Encapsulated PDF, the PDF itself, and endpoint parsing.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "dict.h"
#include "hl7.h"
#include "json_util.h"
#include "part10.h"
#include "reports_int.h"

/* ---- signing rules ----------------------------------------------------------------------- */

static struct rep_progress progress(int state, bool draft, bool prelim, bool final)
{
    struct rep_progress p = {
        .read_state = state, .has_draft = draft, .has_preliminary = prelim, .has_final = final};
    snprintf(p.assignee, sizeof(p.assignee), "dr-a");
    return p;
}

static void test_sign_rules(void **state)
{
    (void)state;
    char why[256];
    struct rep_progress claimed = progress(FLOW_READ_CLAIMED, true, false, false);
    assert_int_equal(rep_sign_check(&claimed, REP_PRELIMINARY, "dr-a", why, sizeof(why)), 0);
    assert_int_equal(rep_sign_check(&claimed, REP_FINAL, "dr-a", why, sizeof(why)), 0);
    /* Only the assignee signs. */
    assert_int_equal(rep_sign_check(&claimed, REP_FINAL, "dr-b", why, sizeof(why)), TR_EDENIED);
    assert_non_null(strstr(why, "dr-a"));
    assert_int_equal(rep_sign_check(&claimed, REP_FINAL, NULL, why, sizeof(why)), TR_EDENIED);
    struct rep_progress nobody = claimed;
    nobody.assignee[0] = '\0';
    assert_int_equal(rep_sign_check(&nobody, REP_FINAL, "", why, sizeof(why)), TR_EDENIED);
    /* Addenda only after the final. */
    assert_int_equal(rep_sign_check(&claimed, REP_ADDENDUM, "dr-a", why, sizeof(why)), TR_EEXIST);
    /* After a preliminary: no second one; the final yes. */
    struct rep_progress prelim = progress(FLOW_READ_PRELIMINARY, false, true, false);
    assert_int_equal(rep_sign_check(&prelim, REP_PRELIMINARY, "dr-a", why, sizeof(why)), TR_EEXIST);
    assert_int_equal(rep_sign_check(&prelim, REP_FINAL, "dr-a", why, sizeof(why)), 0);
    /* After the final: addenda only. */
    struct rep_progress final = progress(FLOW_READ_FINAL, false, true, true);
    assert_int_equal(rep_sign_check(&final, REP_FINAL, "dr-a", why, sizeof(why)), TR_EEXIST);
    assert_int_equal(rep_sign_check(&final, REP_PRELIMINARY, "dr-a", why, sizeof(why)), TR_EEXIST);
    assert_int_equal(rep_sign_check(&final, REP_ADDENDUM, "dr-a", why, sizeof(why)), 0);
    assert_int_equal(rep_sign_check(&final, REP_ADDENDUM, "dr-b", why, sizeof(why)), TR_EDENIED);
    /* A read in the pool or cancelled is not signed. */
    struct rep_progress pool = progress(0, true, false, false);
    assert_int_equal(rep_sign_check(&pool, REP_PRELIMINARY, "dr-a", why, sizeof(why)), TR_EEXIST);
    struct rep_progress cancelled = progress(5, true, false, false);
    assert_int_equal(rep_sign_check(&cancelled, REP_FINAL, "dr-a", why, sizeof(why)), TR_EEXIST);
    /* A draft is not a signed kind. */
    assert_int_equal(rep_sign_check(&claimed, REP_DRAFT, "dr-a", why, sizeof(why)), TR_EINVAL);
    /* Drafts: the assignee, before the final. */
    assert_int_equal(rep_draft_check(&claimed, "dr-a", why, sizeof(why)), 0);
    assert_int_equal(rep_draft_check(&prelim, "dr-a", why, sizeof(why)), 0);
    assert_int_equal(rep_draft_check(&claimed, "dr-b", why, sizeof(why)), TR_EDENIED);
    assert_int_equal(rep_draft_check(&final, "dr-a", why, sizeof(why)), TR_EEXIST);
    assert_int_equal(rep_kind_parse("addendum"), REP_ADDENDUM);
    assert_int_equal(rep_kind_parse("signed"), -1);
}

static void expect_invalid(const char *text, const char *field)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    assert_non_null(j);
    struct rep_invalid bad = {{0}};
    int rc = rep_draft_validate(j, &bad);
    json_decref(j);
    if (rc != TR_EINVAL)
        fail_msg("accepted: %s", text);
    if (strcmp(bad.field, field) != 0)
        fail_msg("%s: field \"%s\", expected \"%s\" (%s)", text, bad.field, field, bad.why);
}

static void test_draft_validation(void **state)
{
    (void)state;
    expect_invalid("[]", "");
    expect_invalid("{\"sections\":{\"impressions\":\"x\"}}", "sections.impressions");
    expect_invalid("{\"sections\":{\"findings\":1}}", "sections.findings");
    expect_invalid("{\"sections\":{\"findings\":\"bell \\u0007\"}}", "sections.findings");
    expect_invalid("{\"sections\":[]}", "sections");
    expect_invalid("{\"template\":\"ct-knee\"}", "template");
    expect_invalid("{\"critical\":{\"category\":0}}", "critical.category");
    expect_invalid("{\"critical\":{\"category\":\"1\"}}", "critical.category");
    expect_invalid("{\"critical\":{\"category\":2,\"finding\":7}}", "critical.finding");
    expect_invalid("{\"critical\":true}", "critical");
    expect_invalid("{\"signature\":\"x\"}", "signature");
    json_t *ok = json_loads("{\"template\":\"mr-brain\",\"sections\":{\"findings\":\"a\\nb\\tc\","
                            "\"impression\":\"\"},\"critical\":null,\"reader\":\"dr-a\"}",
                            0, NULL);
    struct rep_invalid bad;
    assert_int_equal(rep_draft_validate(ok, &bad), 0);
    json_decref(ok);
    ok = json_loads("{\"critical\":{\"category\":3,\"finding\":\"incidental mass\"}}", 0, NULL);
    assert_int_equal(rep_draft_validate(ok, &bad), 0);
    json_decref(ok);
}

static void test_templates(void **state)
{
    (void)state;
    assert_string_equal(rep_template_choose("CT", "CT HEAD WO CONTRAST", "")->id, "ct-head");
    assert_string_equal(rep_template_choose("CT\\SR", "", "HEAD")->id, "ct-head");
    assert_string_equal(rep_template_choose("CT", "CTA CHEST PE PROTOCOL", "CHEST")->id,
                        "ct-chest-pe");
    assert_string_equal(rep_template_choose("CT", "CT ABD/PELVIS W CONTRAST", "")->id,
                        "ct-abdomen-pelvis");
    assert_string_equal(rep_template_choose("CT", "CT A/P", "")->id, "ct-abdomen-pelvis");
    assert_string_equal(rep_template_choose("MR", "MR BRAIN W WO", "BRAIN")->id, "mr-brain");
    assert_string_equal(rep_template_choose("CR", "XR CHEST 2 VIEWS", "")->id, "xr-chest");
    assert_string_equal(rep_template_choose("DX", "", "CHEST")->id, "xr-chest");
    /* Whole words only: "PELVIS" is not "PE"; a head MR is not a CT template. */
    assert_string_equal(rep_template_choose("CT", "CT PELVIS", "")->id, "ct-abdomen-pelvis");
    assert_string_equal(rep_template_choose("MR", "MR HEAD", "")->id, "mr-brain");
    assert_string_equal(rep_template_choose("US", "US THYROID", "NECK")->id, "generic");
    assert_string_equal(rep_template_choose("", "", "")->id, "generic");
    assert_int_equal(rep_template_count(), 6);
    for (size_t i = 0; i < rep_template_count(); i++) {
        json_t *j = rep_template_json(rep_template_at(i));
        assert_non_null(j);
        assert_int_equal(json_array_size(json_object_get(j, "sections")), REP_SECTION_COUNT);
        json_decref(j);
    }
    assert_int_equal(rep_section_parse("impression"), REP_IMPRESSION);
    assert_int_equal(rep_section_parse("summary"), -1);
}

/* ---- a document --------------------------------------------------------------------------- */

static void doc_init(struct rep_doc *d, int kind)
{
    memset(d, 0, sizeof(*d));
    d->read_id = 42;
    d->version_id = 7;
    d->seq = kind == REP_PRELIMINARY ? 1 : 2;
    d->kind = kind;
    snprintf(d->template_id, sizeof(d->template_id), "ct-head");
    d->sections[REP_CLINICAL] = tr_strdup("Sudden aphasia.");
    d->sections[REP_TECHNIQUE] = tr_strdup("Axial CT.");
    d->sections[REP_FINDINGS] = tr_strdup("Hypodensity | left ^ MCA & more ~ x \\ y\nline 2");
    d->sections[REP_IMPRESSION] = tr_strdup("Acute infarct.");
    snprintf(d->signer, sizeof(d->signer), "dr-a");
    snprintf(d->signer_name, sizeof(d->signer_name), "Dr Ada Reader");
    d->signed_at = 1795341600000; /* 2026-11-22T10:00:00Z */
    snprintf(d->site, sizeof(d->site), "site-a");
    snprintf(d->site_name, sizeof(d->site_name), "Site A");
    snprintf(d->organization, sizeof(d->organization), "Reading Group");
    snprintf(d->study_uid, sizeof(d->study_uid), "1.2.3.4");
    snprintf(d->accession, sizeof(d->accession), "ACC-9");
    snprintf(d->patient_id, sizeof(d->patient_id), "P9");
    snprintf(d->patient_name, sizeof(d->patient_name), "Müller^Jürgen^^Dr");
    snprintf(d->birth_date, sizeof(d->birth_date), "19600214");
    snprintf(d->sex, sizeof(d->sex), "M");
    snprintf(d->modality, sizeof(d->modality), "CT");
    snprintf(d->description, sizeof(d->description), "CT HEAD WO");
    snprintf(d->study_date, sizeof(d->study_date), "20261122");
    snprintf(d->study_time, sizeof(d->study_time), "095500.123");
    snprintf(d->referring, sizeof(d->referring), "Referrer^Rita");
    d->priority = 0;
    snprintf(d->sr_uid, sizeof(d->sr_uid), "1.2.3.4.100");
    snprintf(d->pdf_uid, sizeof(d->pdf_uid), "1.2.3.4.101");
    snprintf(d->sr_series, sizeof(d->sr_series), "1.2.3.4.10");
    snprintf(d->pdf_series, sizeof(d->pdf_series), "1.2.3.4.11");
}

static void add_addendum(struct rep_doc *d, const char *text)
{
    struct rep_addendum *a = &d->addenda[d->naddenda++];
    a->text = tr_strdup(text);
    snprintf(a->signer, sizeof(a->signer), "dr-a");
    snprintf(a->signer_name, sizeof(a->signer_name), "Dr Ada Reader");
    a->signed_at = d->signed_at + 3600000;
}

static struct hl7_message *oru_of(const struct rep_doc *d, const void *pdf, size_t len)
{
    struct tr_buf b;
    tr_buf_init(&b, 1u << 24);
    struct tr_error err = TR_ERROR_INIT;
    if (rep_oru_build(d, "TR77", "RIS^HOSP", d->signed_at, pdf, len, &b, &err) < 0)
        fail_msg("ORU: %s", err.message);
    struct hl7_message *m;
    if (hl7_parse(b.data, b.len, NULL, &m, &err) < 0)
        fail_msg("parse: %s", err.message);
    tr_buf_release(&b);
    return m;
}

static void hl7_expect(const struct hl7_message *m, const char *path, const char *want)
{
    char got[4096];
    hl7_get_text(m, path, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("%s is \"%s\", expected \"%s\"", path, got, want);
}

/* The OBX (1-based occurrence) whose OBX-3.1 is `code`, or 0. */
static unsigned obx_with(const struct hl7_message *m, const char *code)
{
    for (unsigned i = 1; hl7_segment_find(m, "OBX", i) >= 0; i++) {
        char path[32], got[64];
        snprintf(path, sizeof(path), "OBX[%u]-3.1", i);
        hl7_get_text(m, path, got, sizeof(got));
        if (strcmp(got, code) == 0)
            return i;
    }
    return 0;
}

static void test_oru(void **state)
{
    (void)state;
    struct rep_doc d;
    doc_init(&d, REP_PRELIMINARY);
    d.critical_category = 1;
    d.critical_finding = tr_strdup("Large vessel occlusion");
    static const unsigned char pdf[] = "%PDF-1.5 fake\n\x01\xff";
    struct hl7_message *m = oru_of(&d, pdf, sizeof(pdf) - 1);
    hl7_expect(m, "MSH-3", "TELERAD");
    hl7_expect(m, "MSH-4", "Reading Group");
    hl7_expect(m, "MSH-5", "RIS");
    hl7_expect(m, "MSH-6", "HOSP");
    hl7_expect(m, "MSH-9.1", "ORU");
    hl7_expect(m, "MSH-9.2", "R01");
    hl7_expect(m, "MSH-9.3", "ORU_R01");
    hl7_expect(m, "MSH-10", "TR77");
    hl7_expect(m, "MSH-11", "P");
    hl7_expect(m, "MSH-12", "2.5.1");
    hl7_expect(m, "MSH-18", "UNICODE UTF-8");
    hl7_expect(m, "PID-3.1", "P9");
    hl7_expect(m, "PID-3.4", "site-a");
    hl7_expect(m, "PID-3.5", "MR");
    hl7_expect(m, "PID-5.1", "Müller");
    hl7_expect(m, "PID-5.2", "Jürgen");
    hl7_expect(m, "PID-5.5", "Dr");
    hl7_expect(m, "PID-7", "19600214");
    hl7_expect(m, "ORC-1", "RE");
    hl7_expect(m, "ORC-5", "IP");
    hl7_expect(m, "OBR-2", "ACC-9");
    hl7_expect(m, "OBR-3", "ACC-9");
    hl7_expect(m, "OBR-4.2", "CT HEAD WO");
    hl7_expect(m, "OBR-7", "20261122095500");
    hl7_expect(m, "OBR-16.2", "Referrer");
    hl7_expect(m, "OBR-22", "20261122100000+0000");
    hl7_expect(m, "OBR-25", "P");
    hl7_expect(m, "OBR-27.6", "S");
    hl7_expect(m, "OBR-32.1.1", "dr-a");
    /* The findings with every separator, escaped on the wire and intact when read. */
    unsigned f = obx_with(m, "59776-5");
    assert_true(f > 0);
    char path[32];
    snprintf(path, sizeof(path), "OBX[%u]-5", f);
    hl7_expect(m, path, "Hypodensity | left ^ MCA & more ~ x \\ y\nline 2");
    struct hl7_path p;
    assert_int_equal(hl7_path_parse(path, &p, NULL), 0);
    const char *raw;
    size_t len;
    assert_int_equal(hl7_get_raw(m, &p, &raw, &len), HL7_VALUE);
    char wire[256];
    snprintf(wire, sizeof(wire), "%.*s", (int)len, raw);
    assert_string_equal(wire, "Hypodensity \\F\\ left \\S\\ MCA \\T\\ more \\R\\ x \\E\\ y\\.br\\"
                              "line 2");
    snprintf(path, sizeof(path), "OBX[%u]-2", f);
    hl7_expect(m, path, "FT");
    snprintf(path, sizeof(path), "OBX[%u]-11", f);
    hl7_expect(m, path, "P");
    /* The impression is flagged critical; the critical result has its own OBX. */
    unsigned imp = obx_with(m, "19005-8");
    snprintf(path, sizeof(path), "OBX[%u]-8", imp);
    hl7_expect(m, path, "AA");
    unsigned crit = obx_with(m, "73568-8");
    assert_true(crit > 0);
    snprintf(path, sizeof(path), "OBX[%u]-5", crit);
    hl7_expect(m, path, "Critical result, ACR category 1: Large vessel occlusion");
    /* The comparison section is empty: no OBX for it. */
    assert_int_equal(obx_with(m, "55114-3"), 0);
    /* The PDF: ED, base64. */
    unsigned ed = obx_with(m, "18748-4");
    assert_true(ed > 0);
    snprintf(path, sizeof(path), "OBX[%u]-2", ed);
    hl7_expect(m, path, "ED");
    snprintf(path, sizeof(path), "OBX[%u]-5.3", ed);
    hl7_expect(m, path, "PDF");
    snprintf(path, sizeof(path), "OBX[%u]-5.4", ed);
    hl7_expect(m, path, "Base64");
    snprintf(path, sizeof(path), "OBX[%u]-5.5", ed);
    char b64[256];
    hl7_get_text(m, path, b64, sizeof(b64));
    struct tr_buf bytes;
    tr_buf_init(&bytes, 1024);
    assert_int_equal(tr_base64_decode(b64, strlen(b64), &bytes), 0);
    assert_int_equal(bytes.len, sizeof(pdf) - 1);
    assert_memory_equal(bytes.data, pdf, bytes.len);
    tr_buf_release(&bytes);
    /* OBX-1 numbers the OBX segments 1, 2, 3 ... */
    for (unsigned i = 1; hl7_segment_find(m, "OBX", i) >= 0; i++) {
        char want[8];
        snprintf(path, sizeof(path), "OBX[%u]-1", i);
        snprintf(want, sizeof(want), "%u", i);
        hl7_expect(m, path, want);
    }
    hl7_message_free(m);
    rep_doc_release(&d);

    /* Final: F, CM; addendum: C with the addenda as OBX 55107-7. */
    doc_init(&d, REP_FINAL);
    m = oru_of(&d, NULL, 0);
    hl7_expect(m, "OBR-25", "F");
    hl7_expect(m, "ORC-5", "CM");
    hl7_expect(m, "OBR-27.6", "S");
    assert_int_equal(obx_with(m, "18748-4"), 0);
    hl7_message_free(m);
    rep_doc_release(&d);
    doc_init(&d, REP_ADDENDUM);
    d.priority = 2;
    add_addendum(&d, "First addendum.");
    add_addendum(&d, "Second | addendum.");
    m = oru_of(&d, NULL, 0);
    hl7_expect(m, "OBR-25", "C");
    hl7_expect(m, "OBR-27.6", "R");
    unsigned a = obx_with(m, "55107-7");
    assert_true(a > 0);
    snprintf(path, sizeof(path), "OBX[%u]-5", a + 1);
    hl7_expect(m, path, "Second | addendum.");
    snprintf(path, sizeof(path), "OBX[%u]-4", a + 1);
    hl7_expect(m, path, "2");
    snprintf(path, sizeof(path), "OBX[%u]-11", a);
    hl7_expect(m, path, "C");
    hl7_message_free(m);
    assert_int_equal(rep_doc_status(&d), 'C');
    rep_doc_release(&d);
}

/* ---- FHIR --------------------------------------------------------------------------------- */

static const char *str_at(json_t *j, const char *path)
{
    /* "a.b.0.c" */
    char copy[128];
    snprintf(copy, sizeof(copy), "%s", path);
    char *save = NULL;
    for (char *k = strtok_r(copy, ".", &save); k && j; k = strtok_r(NULL, ".", &save)) {
        if (json_is_array(j))
            j = json_array_get(j, (size_t)strtoul(k, NULL, 10));
        else
            j = json_object_get(j, k);
    }
    return json_string_value(j);
}

static void json_expect(json_t *j, const char *path, const char *want)
{
    const char *got = str_at(j, path);
    if (!got || strcmp(got, want) != 0)
        fail_msg("%s is \"%s\", expected \"%s\"", path, got ? got : "(none)", want);
}

static void test_fhir(void **state)
{
    (void)state;
    struct rep_doc d;
    doc_init(&d, REP_FINAL);
    json_t *dr = rep_fhir_diagnostic_report(&d, NULL, "%PDF-x", 6);
    assert_non_null(dr);
    json_expect(dr, "resourceType", "DiagnosticReport");
    json_expect(dr, "id", "42");
    json_expect(dr, "status", "final");
    json_expect(dr, "code.coding.0.system", "http://loinc.org");
    json_expect(dr, "code.coding.0.code", "18748-4");
    json_expect(dr, "code.coding.1.code", "24725-4"); /* the CT head template's title */
    json_expect(dr, "category.0.coding.0.code", "RAD");
    json_expect(dr, "subject.identifier.value", "P9");
    json_expect(dr, "subject.identifier.system", "urn:telerad:site:site-a:patient-id");
    json_expect(dr, "issued", "2026-11-22T10:00:00Z");
    json_expect(dr, "effectiveDateTime", "2026-11-22T09:55:00");
    json_expect(dr, "basedOn.0.reference", "ServiceRequest/42");
    json_expect(dr, "imagingStudy.0.reference", "ImagingStudy/42");
    json_expect(dr, "resultsInterpreter.0.display", "Dr Ada Reader");
    json_expect(dr, "conclusion", "Acute infarct.");
    json_expect(dr, "meta.versionId", "2");
    json_expect(dr, "presentedForm.0.contentType", "text/plain; charset=utf-8");
    json_expect(dr, "presentedForm.1.contentType", "application/pdf");
    json_expect(dr, "presentedForm.1.data", "JVBERi14");
    json_decref(dr);

    json_t *is = rep_fhir_imaging_study(&d);
    json_expect(is, "resourceType", "ImagingStudy");
    json_expect(is, "status", "available");
    json_expect(is, "subject.identifier.value", "P9");
    json_expect(is, "identifier.0.value", "urn:oid:1.2.3.4");
    json_expect(is, "identifier.1.type.coding.0.code", "ACSN");
    json_expect(is, "identifier.1.value", "ACC-9");
    json_expect(is, "modality.0.code", "CT");
    json_expect(is, "basedOn.0.reference", "ServiceRequest/42");
    json_decref(is);

    json_t *sr = rep_fhir_service_request(&d);
    json_expect(sr, "resourceType", "ServiceRequest");
    json_expect(sr, "status", "completed");
    json_expect(sr, "intent", "order");
    json_expect(sr, "priority", "stat");
    json_expect(sr, "subject.identifier.value", "P9");
    json_expect(sr, "requester.display", "Referrer Rita");
    json_decref(sr);

    /* FHIR strings and arrays are never empty: no accession, no Patient ID. */
    d.accession[0] = '\0';
    d.patient_id[0] = '\0';
    sr = rep_fhir_service_request(&d);
    assert_null(json_object_get(sr, "identifier"));
    assert_null(json_object_get(json_object_get(sr, "subject"), "identifier"));
    assert_non_null(str_at(sr, "subject.display"));
    json_decref(sr);
    is = rep_fhir_imaging_study(&d);
    assert_int_equal(json_array_size(json_object_get(is, "identifier")), 1);
    json_decref(is);

    /* Statuses per version; the transaction Bundle. */
    rep_doc_release(&d);
    doc_init(&d, REP_PRELIMINARY);
    dr = rep_fhir_diagnostic_report(&d, NULL, NULL, 0);
    json_expect(dr, "status", "preliminary");
    json_decref(dr);
    sr = rep_fhir_service_request(&d);
    json_expect(sr, "status", "active");
    json_decref(sr);
    d.kind = REP_ADDENDUM;
    json_t *b = rep_fhir_bundle(&d, NULL, 0);
    json_expect(b, "resourceType", "Bundle");
    json_expect(b, "type", "transaction");
    assert_int_equal(json_array_size(json_object_get(b, "entry")), 3);
    json_expect(b, "entry.0.request.method", "PUT");
    json_expect(b, "entry.0.request.url", "ServiceRequest/42");
    json_expect(b, "entry.1.request.url", "ImagingStudy/42");
    json_expect(b, "entry.2.request.url", "DiagnosticReport/42");
    json_expect(b, "entry.2.resource.status", "appended");
    json_decref(b);
    rep_doc_release(&d);
}

/* ---- DICOM -------------------------------------------------------------------------------- */

static void dcm_expect_code(const struct dcm_dataset *ds, uint32_t seq, const char *value,
                            const char *scheme)
{
    const struct dcm_element *e = dcm_dataset_get(ds, seq);
    assert_non_null(e);
    struct dcm_dataset *it = dcm_element_item(e, 0);
    assert_non_null(it);
    char v[64], s[64];
    assert_true(dcm_dataset_get_string(it, 0x00080100, 0, v, sizeof(v)) >= 0);
    assert_true(dcm_dataset_get_string(it, 0x00080102, 0, s, sizeof(s)) >= 0);
    assert_string_equal(v, value);
    assert_string_equal(s, scheme);
}

static void dcm_expect(const struct dcm_dataset *ds, uint32_t tag, const char *want)
{
    char got[256] = "";
    dcm_dataset_get_string(ds, tag, 0, got, sizeof(got));
    if (strcmp(got, want) != 0)
        fail_msg("(%04X,%04X) is \"%s\", expected \"%s\"", (unsigned)(tag >> 16),
                 (unsigned)(tag & 0xFFFF), got, want);
}

/* The section CONTAINER of the root with heading `code`, or NULL. */
static struct dcm_dataset *section_of(const struct dcm_dataset *root, const char *code)
{
    const struct dcm_element *content = dcm_dataset_get(root, 0x0040A730);
    for (unsigned i = 0; content && i < dcm_element_item_count(content); i++) {
        struct dcm_dataset *it = dcm_element_item(content, i);
        const struct dcm_element *name = dcm_dataset_get(it, 0x0040A043);
        char v[64] = "";
        if (name)
            dcm_dataset_get_string(dcm_element_item(name, 0), 0x00080100, 0, v, sizeof(v));
        if (strcmp(v, code) == 0)
            return it;
    }
    return NULL;
}

static void test_sr(void **state)
{
    (void)state;
    struct rep_doc d;
    doc_init(&d, REP_FINAL);
    snprintf(d.predecessor_sr, sizeof(d.predecessor_sr), "1.2.3.4.99");
    snprintf(d.predecessor_sr_series, sizeof(d.predecessor_sr_series), "1.2.3.4.10");
    struct rep_evidence ev[3] = {{"1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5.1"},
                                 {"1.2.3.4.5", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5.2"},
                                 {"1.2.3.4.6", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.6.1"}};
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *ds = rep_sr_build(&d, ev, 3, d.signed_at, &err);
    if (!ds)
        fail_msg("SR: %s", err.message);
    dcm_expect(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.88.11");
    dcm_expect(ds, DCM_TAG_SOPInstanceUID, "1.2.3.4.100");
    dcm_expect(ds, DCM_TAG_StudyInstanceUID, "1.2.3.4");
    dcm_expect(ds, DCM_TAG_SeriesInstanceUID, "1.2.3.4.10");
    dcm_expect(ds, 0x00080060, "SR");
    dcm_expect(ds, 0x00080050, "ACC-9");
    dcm_expect(ds, 0x00100010, "Müller^Jürgen^^Dr");
    dcm_expect(ds, DCM_TAG_SpecificCharacterSet, "ISO_IR 192");
    dcm_expect(ds, 0x0040A040, "CONTAINER");
    dcm_expect(ds, 0x0040A050, "SEPARATE");
    dcm_expect(ds, 0x0040A491, "COMPLETE");
    dcm_expect(ds, 0x0040A493, "VERIFIED");
    dcm_expect(ds, 0x0040A496, "FINAL");
    dcm_expect_code(ds, 0x0040A043, "18748-4", "LN");
    const struct dcm_element *tpl = dcm_dataset_get(ds, 0x0040A504);
    assert_non_null(tpl);
    dcm_expect(dcm_element_item(tpl, 0), 0x0040DB00, "2000");
    dcm_expect(dcm_element_item(tpl, 0), 0x00080105, "DCMR");
    /* The verifying observer, named as a person name. */
    const struct dcm_element *vo = dcm_dataset_get(ds, 0x0040A073);
    assert_non_null(vo);
    dcm_expect(dcm_element_item(vo, 0), 0x0040A075, "Reader^Ada^^Dr");
    dcm_expect(dcm_element_item(vo, 0), 0x0040A027, "Reading Group");
    /* Sections: the impression CONTAINER holds a TEXT (121073, DCM) with the text. */
    struct dcm_dataset *imp = section_of(ds, "19005-8");
    assert_non_null(imp);
    dcm_expect(imp, 0x0040A010, "CONTAINS");
    const struct dcm_element *items = dcm_dataset_get(imp, 0x0040A730);
    assert_non_null(items);
    struct dcm_dataset *text = dcm_element_item(items, 0);
    dcm_expect(text, 0x0040A040, "TEXT");
    dcm_expect_code(text, 0x0040A043, "121073", "DCM");
    dcm_expect(text, 0x0040A160, "Acute infarct.");
    assert_non_null(section_of(ds, "59776-5")); /* findings */
    assert_non_null(section_of(ds, "55752-0")); /* clinical information */
    assert_null(section_of(ds, "55114-3"));     /* comparison: empty, absent */
    assert_non_null(section_of(ds, "121049"));  /* language */
    assert_non_null(section_of(ds, "121008"));  /* observer name */
    assert_non_null(section_of(ds, "121018"));  /* procedure study instance UID */
    /* Evidence by series; the request; the predecessor. */
    const struct dcm_element *evs = dcm_dataset_get(ds, 0x0040A375);
    assert_non_null(evs);
    const struct dcm_element *series = dcm_dataset_get(dcm_element_item(evs, 0), 0x00081115);
    assert_int_equal(dcm_element_item_count(series), 2);
    assert_int_equal(
        dcm_element_item_count(dcm_dataset_get(dcm_element_item(series, 0), 0x00081199)), 2);
    const struct dcm_element *req = dcm_dataset_get(ds, 0x0040A370);
    dcm_expect(dcm_element_item(req, 0), 0x00080050, "ACC-9");
    const struct dcm_element *pred = dcm_dataset_get(ds, 0x0040A360);
    assert_non_null(pred);
    /* It writes and reads back as Part 10. */
    struct tr_buf out;
    tr_buf_init(&out, 1u << 20);
    struct tr_sink sink = tr_sink_buf(&out);
    struct dcm_write_options wopt;
    dcm_write_options_init(&wopt);
    assert_int_equal(dcm_file_write_header("1.2.840.10008.5.1.4.1.1.88.11", "1.2.3.4.100",
                                           "1.2.840.10008.1.2.1", NULL, &sink, &err),
                     0);
    assert_int_equal(dcm_dataset_write(ds, "1.2.840.10008.1.2.1", &wopt, &sink, &err), 0);
    struct dcm_file *f;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, NULL, &f, &err), 0);
    assert_non_null(section_of(f->dataset, "19005-8"));
    dcm_file_free(f);
    tr_buf_release(&out);
    dcm_dataset_free(ds);
    rep_doc_release(&d);

    /* A preliminary is partial and unverified, without a verifying observer. */
    doc_init(&d, REP_PRELIMINARY);
    ds = rep_sr_build(&d, NULL, 0, d.signed_at, &err);
    assert_non_null(ds);
    dcm_expect(ds, 0x0040A491, "PARTIAL");
    dcm_expect(ds, 0x0040A493, "UNVERIFIED");
    dcm_expect(ds, 0x0040A496, "PRELIMINARY");
    assert_null(dcm_dataset_get(ds, 0x0040A073));
    assert_null(dcm_dataset_get(ds, 0x0040A375));
    assert_null(dcm_dataset_get(ds, 0x0040A360));
    dcm_dataset_free(ds);
    /* An addendum and a critical result are sections of their own. */
    d.kind = REP_ADDENDUM;
    d.critical_category = 2;
    d.critical_finding = tr_strdup("Pneumothorax");
    add_addendum(&d, "Addendum text.");
    ds = rep_sr_build(&d, NULL, 0, d.signed_at, &err);
    assert_non_null(section_of(ds, "55107-7"));
    assert_non_null(section_of(ds, "73568-8"));
    dcm_dataset_free(ds);

    /* Encapsulated PDF */
    static const char pdf[] = "%PDF-1.5 odd";
    ds = rep_pdf_dataset(&d, pdf, strlen(pdf), d.signed_at, &err);
    assert_non_null(ds);
    dcm_expect(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.104.1");
    dcm_expect(ds, DCM_TAG_SOPInstanceUID, "1.2.3.4.101");
    dcm_expect(ds, 0x00080060, "DOC");
    dcm_expect(ds, 0x00420012, "application/pdf");
    dcm_expect(ds, 0x00280301, "YES");
    dcm_expect(ds, 0x00080064, "WSD");
    dcm_expect_code(ds, 0x0040A043, "18748-4", "LN");
    int64_t n;
    assert_int_equal(dcm_dataset_get_int(ds, 0x00420015, 0, &n), 0);
    assert_int_equal(n, (int64_t)strlen(pdf));
    const struct dcm_element *doc = dcm_dataset_get(ds, 0x00420011);
    assert_non_null(doc);
    assert_memory_equal(doc->value.bytes, pdf, strlen(pdf));
    dcm_dataset_free(ds);
    rep_doc_release(&d);
}

static void test_pdf(void **state)
{
    (void)state;
    struct rep_doc d;
    doc_init(&d, REP_ADDENDUM);
    d.critical_category = 1;
    d.critical_finding = tr_strdup("Large vessel occlusion");
    /* A long section: wrapped, over several pages, with a word wider than a line. */
    struct tr_buf longtext;
    tr_buf_init(&longtext, 1u << 20);
    for (int i = 0; i < 300; i++)
        tr_buf_addf(&longtext, "Line %d of a long findings section with some words. ", i);
    for (int i = 0; i < 300; i++)
        tr_buf_adds(&longtext, "x");
    tr_free(d.sections[REP_FINDINGS]);
    d.sections[REP_FINDINGS] = tr_buf_detach(&longtext, NULL);
    add_addendum(&d, "Addendum with ünïcödé.");
    struct tr_buf pdf;
    tr_buf_init(&pdf, 32u << 20);
    struct tr_error err = TR_ERROR_INIT;
    if (rep_pdf_render(&d, &pdf, &err) < 0)
        fail_msg("PDF: %s", err.message);
    assert_true(pdf.len > 1000);
    assert_memory_equal(pdf.data, "%PDF", 4);
    assert_non_null(memmem(pdf.data, pdf.len, "%%EOF", 5));
    /* The cap holds: a buffer too small fails cleanly. */
    struct tr_buf small;
    tr_buf_init(&small, 100);
    assert_true(rep_pdf_render(&d, &small, &err) < 0);
    tr_buf_release(&small);
    tr_buf_release(&pdf);
    rep_doc_release(&d);
    rep_pdf_cleanup();
}

static void test_endpoints(void **state)
{
    (void)state;
    char host[256], ae[17];
    int port;
    assert_int_equal(rep_parse_hostport("ris.example.org:2575", host, sizeof(host), &port), 0);
    assert_string_equal(host, "ris.example.org");
    assert_int_equal(port, 2575);
    assert_int_equal(rep_parse_hostport("[::1]:104", host, sizeof(host), &port), 0);
    assert_string_equal(host, "::1");
    assert_true(rep_parse_hostport("::1:104", host, sizeof(host), &port) < 0);
    assert_true(rep_parse_hostport("host", host, sizeof(host), &port) < 0);
    assert_true(rep_parse_hostport("host:0", host, sizeof(host), &port) < 0);
    assert_true(rep_parse_hostport("host:70000", host, sizeof(host), &port) < 0);
    assert_true(rep_parse_hostport(":104", host, sizeof(host), &port) < 0);
    assert_int_equal(
        rep_parse_dicom_target("PACS@10.0.0.5:11112", ae, sizeof(ae), host, sizeof(host), &port),
        0);
    assert_string_equal(ae, "PACS");
    assert_string_equal(host, "10.0.0.5");
    assert_int_equal(port, 11112);
    assert_true(rep_parse_dicom_target("10.0.0.5:104", ae, sizeof(ae), host, sizeof(host), &port) <
                0);
    assert_true(rep_parse_dicom_target("AN_AE_TITLE_TOO_LONG@h:1", ae, sizeof(ae), host,
                                       sizeof(host), &port) < 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_rules), cmocka_unit_test(test_draft_validation),
        cmocka_unit_test(test_templates),  cmocka_unit_test(test_oru),
        cmocka_unit_test(test_fhir),       cmocka_unit_test(test_sr),
        cmocka_unit_test(test_pdf),        cmocka_unit_test(test_endpoints),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
