/*
 * fhir.c - a report version as FHIR R4 resources: DiagnosticReport (required: status, code),
 * ImagingStudy (status, subject), ServiceRequest (status, intent, subject); and a transaction
 * Bundle that PUTs the three on a site's FHIR server (PUT by id: sending a version again
 * changes nothing).
 *
 * Ids are the read's id: DiagnosticReport/42 is read 42's report, whose meta.versionId is the
 * report version. The patient is referenced logically, by the site's identifier (the hospital
 * owns its Patient resources and knows its MRNs); the other references are literal and
 * resolve under /fhir/.
 */
#include "common.h"
#include "reports_int.h"

#include <inttypes.h>
#include <stdio.h>

#define DCM_SYSTEM "http://dicom.nema.org/resources/ontology/DCM"
#define LOINC      "http://loinc.org"

static json_t *subject(const struct rep_doc *d)
{
    char system[160];
    snprintf(system, sizeof(system), "urn:telerad:site:%s:patient-id",
             *d->issuer ? d->issuer : d->site);
    /* FHIR strings are never empty: without a Patient ID the reference is a display only. */
    json_t *j = *d->patient_id ? json_pack("{s:{s:s,s:s}}", "identifier", "system", system, "value",
                                           d->patient_id)
                               : json_pack("{s:s}", "display", "unidentified patient");
    if (*d->patient_name) {
        char display[256];
        snprintf(display, sizeof(display), "%s", d->patient_name);
        for (char *p = display; *p; p++) {
            if (*p == '^')
                *p = ' ';
        }
        json_object_set_new(j, "display", json_string(display));
    }
    return j;
}

/* The accession number as an identifier (an empty array when there is none). */
static json_t *accession_identifiers(const struct rep_doc *d)
{
    json_t *list = json_array();
    if (!*d->accession)
        return list;
    char system[160];
    snprintf(system, sizeof(system), "urn:telerad:site:%s:accession", d->site);
    json_array_append_new(list, json_pack("{s:{s:[{s:s,s:s}]},s:s,s:s}", "type", "coding", "system",
                                          "http://terminology.hl7.org/CodeSystem/v2-0203", "code",
                                          "ACSN", "system", system, "value", d->accession));
    return list;
}

static void ref(char *out, size_t size, const char *type, int64_t id)
{
    snprintf(out, size, "%s/%" PRId64, type, id);
}

/* "20261122" "103000" -> "2026-11-22T10:30:00" (the study's local time, no zone), or
 * "2026-11-22" without a time; NULL without a date. */
static json_t *study_datetime(const struct rep_doc *d)
{
    if (strlen(d->study_date) != 8)
        return NULL;
    char out[32];
    const char *t = d->study_time;
    if (strlen(t) >= 6)
        snprintf(out, sizeof(out), "%.4s-%.2s-%.2sT%.2s:%.2s:%.2s", d->study_date,
                 d->study_date + 4, d->study_date + 6, t, t + 2, t + 4);
    else
        snprintf(out, sizeof(out), "%.4s-%.2s-%.2s", d->study_date, d->study_date + 4,
                 d->study_date + 6);
    return json_string(out);
}

static const char *report_status(const struct rep_doc *d)
{
    /* R4 DiagnosticReportStatus: an addendum makes the report "appended". */
    return d->kind == REP_PRELIMINARY ? "preliminary"
           : d->kind == REP_ADDENDUM  ? "appended"
                                      : "final";
}

json_t *rep_fhir_diagnostic_report(const struct rep_doc *d, const char *base, const void *pdf,
                                   size_t pdf_len)
{
    char id[32], sr[32], is[32], version[16], issued[32];
    snprintf(id, sizeof(id), "%" PRId64, d->read_id);
    ref(sr, sizeof(sr), "ServiceRequest", d->read_id);
    ref(is, sizeof(is), "ImagingStudy", d->read_id);
    snprintf(version, sizeof(version), "%d", d->seq);
    rep_iso_time(d->signed_at, issued);
    const struct rep_template *t = rep_template_find(d->template_id);
    json_t *code = json_pack("{s:[{s:s,s:s,s:s}],s:s}", "coding", "system", LOINC, "code",
                             "18748-4", "display", "Diagnostic Imaging Report", "text",
                             *d->description ? d->description : "Diagnostic imaging report");
    if (t && strcmp(t->title_code, "18748-4") != 0)
        json_array_append_new(json_object_get(code, "coding"),
                              json_pack("{s:s,s:s,s:s}", "system", LOINC, "code", t->title_code,
                                        "display", t->title_meaning));
    json_t *j = json_pack(
        "{s:s,s:s,s:{s:s,s:s},s:[{s:s,s:s}],s:[{s:s}],s:s,s:[{s:[{s:s,s:s,s:s}]}],s:o,s:o,s:s,"
        "s:[{s:{s:s,s:s},s:s}],s:[{s:s}]}",
        "resourceType", "DiagnosticReport", "id", id, "meta", "versionId", version, "lastUpdated",
        issued, "identifier", "system", "urn:telerad:report", "value", id, "basedOn", "reference",
        sr, "status", report_status(d), "category", "coding", "system",
        "http://terminology.hl7.org/CodeSystem/v2-0074", "code", "RAD", "display", "Radiology",
        "code", code, "subject", subject(d), "issued", issued, "resultsInterpreter", "identifier",
        "system", "urn:telerad:reader", "value", d->signer, "display", d->signer_name,
        "imagingStudy", "reference", is);
    if (!j)
        return NULL;
    json_t *eff = study_datetime(d);
    if (eff)
        json_object_set_new(j, "effectiveDateTime", eff);
    json_object_set_new(j, "performer", json_pack("[{s:s}]", "display", d->organization));
    if (d->sections[REP_IMPRESSION] && *d->sections[REP_IMPRESSION])
        json_object_set_new(j, "conclusion", json_string(d->sections[REP_IMPRESSION]));
    /* The report itself: plain text, and the PDF. */
    json_t *forms = json_array();
    struct tr_buf text, b64;
    tr_buf_init(&text, 16u << 20);
    tr_buf_init(&b64, 64u << 20);
    if (rep_doc_text(d, &text) == 0 && rep_base64(text.data, text.len, &b64) == 0)
        json_array_append_new(forms,
                              json_pack("{s:s,s:s,s:s,s:s}", "contentType",
                                        "text/plain; charset=utf-8", "language", "en", "data",
                                        b64.data ? b64.data : "", "title", "Report text"));
    tr_buf_reset(&b64);
    if (pdf && pdf_len && rep_base64(pdf, pdf_len, &b64) == 0) {
        json_array_append_new(forms, json_pack("{s:s,s:s,s:s,s:s}", "contentType",
                                               "application/pdf", "language", "en", "data",
                                               b64.data, "title", "Report (PDF)"));
    } else if (base) {
        char url[512];
        snprintf(url, sizeof(url), "%s/api/v1/reports/%" PRId64 "/pdf", base, d->version_id);
        json_array_append_new(forms, json_pack("{s:s,s:s,s:s}", "contentType", "application/pdf",
                                               "url", url, "title", "Report (PDF)"));
    }
    tr_buf_release(&text);
    tr_buf_release(&b64);
    json_object_set_new(j, "presentedForm", forms);
    if (d->critical_category) {
        char text_c[4200];
        snprintf(text_c, sizeof(text_c), "Critical result, ACR category %d%s%s",
                 d->critical_category, d->critical_finding && *d->critical_finding ? ": " : "",
                 d->critical_finding ? d->critical_finding : "");
        json_object_set_new(
            j, "conclusionCode",
            json_pack("[{s:[{s:s,s:s,s:s}],s:s}]", "coding", "system",
                      "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "code",
                      "AA", "display", "Critical abnormal", "text", text_c));
    }
    return j;
}

json_t *rep_fhir_imaging_study(const struct rep_doc *d)
{
    char id[32], sr[32], uid[80];
    snprintf(id, sizeof(id), "%" PRId64, d->read_id);
    ref(sr, sizeof(sr), "ServiceRequest", d->read_id);
    snprintf(uid, sizeof(uid), "urn:oid:%s", d->study_uid);
    json_t *ids = accession_identifiers(d);
    json_array_insert_new(ids, 0, json_pack("{s:s,s:s}", "system", "urn:dicom:uid", "value", uid));
    json_t *j = json_pack("{s:s,s:s,s:o,s:s,s:o,s:[{s:s}]}", "resourceType", "ImagingStudy", "id",
                          id, "identifier", ids, "status", "available", "subject", subject(d),
                          "basedOn", "reference", sr);
    if (!j)
        return NULL;
    json_t *mods = json_array();
    char copy[64];
    snprintf(copy, sizeof(copy), "%s", d->modality);
    char *save = NULL;
    for (char *m = strtok_r(copy, "\\", &save); m; m = strtok_r(NULL, "\\", &save))
        json_array_append_new(mods, json_pack("{s:s,s:s}", "system", DCM_SYSTEM, "code", m));
    json_object_set_new(j, "modality", mods);
    json_t *started = study_datetime(d);
    if (started)
        json_object_set_new(j, "started", started);
    if (d->series_count)
        json_object_set_new(j, "numberOfSeries", json_integer(d->series_count));
    if (d->instance_count)
        json_object_set_new(j, "numberOfInstances", json_integer(d->instance_count));
    if (*d->description)
        json_object_set_new(j, "description", json_string(d->description));
    return j;
}

json_t *rep_fhir_service_request(const struct rep_doc *d)
{
    char id[32];
    snprintf(id, sizeof(id), "%" PRId64, d->read_id);
    static const char *const priorities[] = {"stat", "urgent", "routine"};
    json_t *j = json_pack(
        "{s:s,s:s,s:o,s:s,s:s,s:s,s:{s:s},s:o}", "resourceType", "ServiceRequest", "id", id,
        "identifier", accession_identifiers(d), "status",
        d->kind == REP_PRELIMINARY ? "active" : "completed", "intent", "order", "priority",
        priorities[d->priority >= 0 && d->priority < 3 ? d->priority : 2], "code", "text",
        *d->description ? d->description : "Diagnostic imaging study", "subject", subject(d));
    if (j && !*d->accession)
        json_object_del(j, "identifier"); /* FHIR arrays are never empty */
    if (j && *d->referring) {
        char display[256];
        snprintf(display, sizeof(display), "%s", d->referring);
        for (char *p = display; *p; p++) {
            if (*p == '^')
                *p = ' ';
        }
        json_object_set_new(j, "requester", json_pack("{s:s}", "display", display));
    }
    return j;
}

json_t *rep_fhir_bundle(const struct rep_doc *d, const void *pdf, size_t pdf_len)
{
    json_t *entries = json_array();
    json_t *res[3] = {rep_fhir_service_request(d), rep_fhir_imaging_study(d),
                      rep_fhir_diagnostic_report(d, NULL, pdf, pdf_len)};
    for (int i = 0; i < 3; i++) {
        if (!res[i]) {
            json_decref(entries);
            for (int k = i + 1; k < 3; k++)
                json_decref(res[k]);
            return NULL;
        }
        char url[64];
        snprintf(url, sizeof(url), "%s/%s",
                 json_string_value(json_object_get(res[i], "resourceType")),
                 json_string_value(json_object_get(res[i], "id")));
        json_object_del(res[i], "meta");
        json_array_append_new(entries, json_pack("{s:o,s:{s:s,s:s}}", "resource", res[i], "request",
                                                 "method", "PUT", "url", url));
    }
    return json_pack("{s:s,s:s,s:o}", "resourceType", "Bundle", "type", "transaction", "entry",
                     entries);
}
