/*
 * sr.c - a report version as DICOM objects of the study it reports on:
 *
 * Basic Text SR (PS3.3 A.35.1; SOP class 1.2.840.10008.5.1.4.1.1.88.11) with the content of
 * TID 2000 "Basic Diagnostic Imaging Report" (PS3.16): the root CONTAINER (18748-4, LN,
 * "Diagnostic Imaging Report") with the language (TID 1204), the observer and the study
 * (TID 1001/1002/1005) as context, then one CONTAINER per section (headings of CID 7001) with
 * its TEXT (report elements of CID 7002); the critical result and addenda as sections of
 * their own. A signed preliminary is PARTIAL/UNVERIFIED with Preliminary Flag PRELIMINARY, a
 * final or an addendum COMPLETE/VERIFIED with its Verifying Observer. The request (accession)
 * and the study's instances are referenced (Referenced Request Sequence, Current Requested
 * Procedure Evidence Sequence); a version that follows another names that one's SR in the
 * Predecessor Documents Sequence.
 *
 * Encapsulated PDF (PS3.3 A.45.1; 1.2.840.10008.5.1.4.1.1.104.1): the PDF of the version.
 *
 * Both go into series of their own in the study (one SR series and one PDF series per read),
 * with telerad as manufacturer; text is UTF-8 (ISO_IR 192) when it is not ASCII.
 */
#include "common.h"
#include "reports_int.h"
#include "dict.h"

#include <stdio.h>

#define SOP_BASIC_TEXT_SR    "1.2.840.10008.5.1.4.1.1.88.11"
#define SOP_ENCAPSULATED_PDF "1.2.840.10008.5.1.4.1.1.104.1"

/* Tags by keyword (PS3.6). */
enum {
    T_ContentSequence = 0x0040A730,
    T_RelationshipType = 0x0040A010,
    T_ValueType = 0x0040A040,
    T_ConceptNameCodeSequence = 0x0040A043,
    T_ConceptCodeSequence = 0x0040A168,
    T_TextValue = 0x0040A160,
    T_PersonName = 0x0040A123,
    T_UID = 0x0040A124,
    T_ContinuityOfContent = 0x0040A050,
    T_CodeValue = 0x00080100,
    T_CodingSchemeDesignator = 0x00080102,
    T_CodeMeaning = 0x00080104,
};

struct sr_build {
    struct tr_error *err;
    int rc;
};

static void check(struct sr_build *b, int rc, uint32_t tag)
{
    if (b->rc == 0 && rc < 0)
        b->rc = tr_error_set(b->err, rc, "cannot set (%04X,%04X) in the report object",
                             (unsigned)(tag >> 16), (unsigned)(tag & 0xFFFF));
}

static void str(struct sr_build *b, struct dcm_dataset *ds, uint32_t tag, const char *v)
{
    check(b,
          v && *v ? dcm_dataset_set_string(ds, tag, DCM_VR_NONE, v)
                  : dcm_dataset_set_empty(ds, tag, dcm_dict_vr(tag)),
          tag);
}

static void uid(struct sr_build *b, struct dcm_dataset *ds, uint32_t tag, const char *v)
{
    check(b, dcm_dataset_set_uid(ds, tag, v), tag);
}

static struct dcm_dataset *item(struct sr_build *b, struct dcm_dataset *ds, uint32_t seq)
{
    if (b->rc)
        return NULL;
    struct dcm_dataset *it = dcm_dataset_add_item(ds, seq, b->err);
    if (!it)
        b->rc = b->err && b->err->code ? b->err->code : TR_ENOMEM;
    return it;
}

static void empty_seq(struct sr_build *b, struct dcm_dataset *ds, uint32_t seq)
{
    check(b, dcm_dataset_set_sequence(ds, seq), seq);
}

struct code {
    const char *value, *scheme, *meaning;
};

static void code(struct sr_build *b, struct dcm_dataset *ds, uint32_t seq, struct code c)
{
    struct dcm_dataset *it = item(b, ds, seq);
    if (!it)
        return;
    str(b, it, T_CodeValue, c.value);
    str(b, it, T_CodingSchemeDesignator, c.scheme);
    str(b, it, T_CodeMeaning, c.meaning);
}

/* A content item under `parent` (PS3.3 C.17.3). */
static struct dcm_dataset *content(struct sr_build *b, struct dcm_dataset *parent,
                                   const char *relationship, const char *value_type,
                                   struct code name)
{
    struct dcm_dataset *it = item(b, parent, T_ContentSequence);
    if (!it)
        return NULL;
    str(b, it, T_RelationshipType, relationship);
    str(b, it, T_ValueType, value_type);
    code(b, it, T_ConceptNameCodeSequence, name);
    if (strcmp(value_type, "CONTAINER") == 0)
        str(b, it, T_ContinuityOfContent, "SEPARATE");
    return it;
}

static void text_item(struct sr_build *b, struct dcm_dataset *parent, struct code name,
                      const char *text)
{
    struct dcm_dataset *it = content(b, parent, "CONTAINS", "TEXT", name);
    if (it)
        str(b, it, T_TextValue, text);
}

/* A section: heading CONTAINER with one TEXT. */
static void section(struct sr_build *b, struct dcm_dataset *root, struct code heading,
                    struct code element, const char *text)
{
    if (!text || !*text)
        return;
    struct dcm_dataset *c = content(b, root, "CONTAINS", "CONTAINER", heading);
    if (c)
        text_item(b, c, element, text);
}

/* Headings (CID 7001) and elements (CID 7002) of the five sections. */
static const struct code headings[REP_SECTION_COUNT] = {
    {"55752-0", "LN", "Clinical Information"},
    {"55111-9", "LN", "Current Procedure Descriptions"},
    {"55114-3", "LN", "Prior Procedure Descriptions"},
    {"59776-5", "LN", "Findings"},
    {"19005-8", "LN", "Impressions"},
};
static const struct code elements[REP_SECTION_COUNT] = {
    {"11329-0", "LN", "History"},
    {"121065", "DCM", "Procedure Description"},
    {"121065", "DCM", "Procedure Description"},
    {"121071", "DCM", "Finding"},
    {"121073", "DCM", "Impression"},
};

/* A reader's name ("Dr Ada Reader") as a PN value ("Reader^Ada^^Dr"): the last word is the
 * family name, a leading title the prefix, the words between the given names; each component
 * within the 64 characters of a component group. */
static void person_name(const char *name, char *out, size_t size)
{
    char copy[128];
    size_t k = 0;
    for (const char *p = name; *p && k + 1 < sizeof(copy); p++)
        copy[k++] = (*p == '^' || *p == '=' || *p == '\\') ? ' ' : *p;
    copy[k] = '\0';
    char *words[16];
    size_t n = 0;
    char *save = NULL;
    for (char *w = strtok_r(copy, " ", &save); w && n < TR_ARRAY_SIZE(words);
         w = strtok_r(NULL, " ", &save))
        words[n++] = w;
    static const char *const titles[] = {"Dr", "Dr.", "Prof", "Prof.", "Mr", "Mrs", "Ms", "Mx"};
    const char *prefix = "";
    size_t first = 0;
    for (size_t i = 0; n > 1 && i < TR_ARRAY_SIZE(titles); i++) {
        if (strcmp(words[0], titles[i]) == 0) {
            prefix = words[0];
            first = 1;
        }
    }
    char given[128] = "";
    for (size_t i = first; n && i + 1 < n; i++)
        snprintf(given + strlen(given), sizeof(given) - strlen(given), "%s%s", *given ? " " : "",
                 words[i]);
    snprintf(out, size, "%.20s^%.20s^^%.10s", n ? words[n - 1] : "", given, prefix);
    /* No trailing empty components. */
    size_t len = strlen(out);
    while (len && out[len - 1] == '^')
        out[--len] = '\0';
}

/* Patient, General Study, General Equipment and SOP Common (shared by both IODs). */
static void common_modules(struct sr_build *b, struct dcm_dataset *ds, const struct rep_doc *d,
                           const char *sop_class, const char *sop_uid, const char *modality,
                           const char *series_uid, int series_number, int64_t now)
{
    char date[9], time_[16], number[16];
    rep_dicom_date(now, date);
    rep_dicom_time(now, time_);
    uid(b, ds, DCM_TAG_SOPClassUID, sop_class);
    uid(b, ds, DCM_TAG_SOPInstanceUID, sop_uid);
    str(b, ds, 0x00080012, date);  /* InstanceCreationDate */
    str(b, ds, 0x00080013, time_); /* InstanceCreationTime */
    str(b, ds, 0x00080020, d->study_date);
    str(b, ds, 0x00080030, d->study_time);
    str(b, ds, 0x00080050, d->accession);
    str(b, ds, 0x00080060, modality);
    str(b, ds, 0x00080070, "telerad");       /* Manufacturer */
    str(b, ds, 0x00080080, d->organization); /* InstitutionName */
    str(b, ds, 0x00080090, d->referring);
    str(b, ds, 0x00081030, d->description);
    str(b, ds, 0x0008103E, strcmp(modality, "SR") == 0 ? "Report (SR)" : "Report (PDF)");
    str(b, ds, 0x00100010, d->patient_name);
    str(b, ds, 0x00100020, d->patient_id);
    if (*d->issuer)
        str(b, ds, 0x00100021, d->issuer);
    str(b, ds, 0x00100030, d->birth_date);
    str(b, ds, 0x00100040, d->sex);
    str(b, ds, 0x00181020, TELERAD_VERSION); /* SoftwareVersions */
    uid(b, ds, DCM_TAG_StudyInstanceUID, d->study_uid);
    uid(b, ds, DCM_TAG_SeriesInstanceUID, series_uid);
    str(b, ds, 0x00200010, d->study_id);
    snprintf(number, sizeof(number), "%d", series_number);
    str(b, ds, 0x00200011, number); /* SeriesNumber */
    snprintf(number, sizeof(number), "%d", d->seq);
    str(b, ds, 0x00200013, number);  /* InstanceNumber */
    str(b, ds, 0x00080201, "+0000"); /* TimezoneOffsetFromUTC: our times are UTC */
}

struct dcm_dataset *rep_sr_build(const struct rep_doc *d, const struct rep_evidence *evidence,
                                 size_t count, int64_t now, struct tr_error *err)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    struct sr_build b = {err, 0};
    common_modules(&b, ds, d, SOP_BASIC_TEXT_SR, d->sr_uid, "SR", d->sr_series, 999, now);
    char date[9], time_[16], dt[32], name[80];
    rep_dicom_date(d->signed_at, date);
    rep_dicom_time(d->signed_at, time_);
    snprintf(dt, sizeof(dt), "%s%s+0000", date, time_);
    person_name(d->signer_name, name, sizeof(name));
    bool final = d->kind != REP_PRELIMINARY;

    /* SR Document Series (C.17.1) */
    empty_seq(&b, ds, 0x00081111); /* ReferencedPerformedProcedureStepSequence, type 2 */

    /* SR Document General (C.17.2) */
    str(&b, ds, 0x00080023, date);                              /* ContentDate */
    str(&b, ds, 0x00080033, time_);                             /* ContentTime */
    str(&b, ds, 0x0040A491, final ? "COMPLETE" : "PARTIAL");    /* CompletionFlag */
    str(&b, ds, 0x0040A493, final ? "VERIFIED" : "UNVERIFIED"); /* VerificationFlag */
    str(&b, ds, 0x0040A496, final ? "FINAL" : "PRELIMINARY");   /* PreliminaryFlag */
    if (final) {
        struct dcm_dataset *v = item(&b, ds, 0x0040A073); /* VerifyingObserverSequence */
        if (v) {
            str(&b, v, 0x0040A075, name);            /* VerifyingObserverName */
            empty_seq(&b, v, 0x0040A088);            /* ...IdentificationCodeSequence, type 2 */
            str(&b, v, 0x0040A027, d->organization); /* VerifyingOrganization */
            str(&b, v, 0x0040A030, dt);              /* VerificationDateTime */
        }
    }
    struct dcm_dataset *req = item(&b, ds, 0x0040A370); /* ReferencedRequestSequence */
    if (req) {
        uid(&b, req, DCM_TAG_StudyInstanceUID, d->study_uid);
        empty_seq(&b, req, 0x00081110); /* ReferencedStudySequence, type 2 */
        str(&b, req, 0x00080050, d->accession);
        str(&b, req, 0x00401001, d->accession);   /* RequestedProcedureID */
        str(&b, req, 0x00321060, d->description); /* RequestedProcedureDescription */
        empty_seq(&b, req, 0x00321064);           /* RequestedProcedureCodeSequence, type 2 */
        str(&b, req, 0x00402016, d->accession);   /* PlacerOrderNumberImagingServiceRequest */
        str(&b, req, 0x00402017, d->accession);   /* FillerOrderNumberImagingServiceRequest */
    }
    empty_seq(&b, ds, 0x0040A372); /* PerformedProcedureCodeSequence, type 2 */
    if (*d->predecessor_sr) {
        struct dcm_dataset *p = item(&b, ds, 0x0040A360); /* PredecessorDocumentsSequence */
        struct dcm_dataset *s = p ? item(&b, p, 0x00081115) : NULL;
        struct dcm_dataset *o = s ? item(&b, s, 0x00081199) : NULL;
        if (o) {
            uid(&b, p, DCM_TAG_StudyInstanceUID, d->study_uid);
            uid(&b, s, DCM_TAG_SeriesInstanceUID, d->predecessor_sr_series);
            uid(&b, o, 0x00081150, SOP_BASIC_TEXT_SR);
            uid(&b, o, 0x00081155, d->predecessor_sr);
        }
    }
    if (count) {
        /* CurrentRequestedProcedureEvidenceSequence: the study's instances, by series. */
        struct dcm_dataset *st = item(&b, ds, 0x0040A375);
        if (st) {
            uid(&b, st, DCM_TAG_StudyInstanceUID, d->study_uid);
            struct dcm_dataset *series = NULL;
            const char *current = "";
            for (size_t i = 0; i < count && b.rc == 0; i++) {
                if (!series || strcmp(current, evidence[i].series_uid) != 0) {
                    series = item(&b, st, 0x00081115);
                    if (!series)
                        break;
                    uid(&b, series, DCM_TAG_SeriesInstanceUID, evidence[i].series_uid);
                    current = evidence[i].series_uid;
                }
                struct dcm_dataset *o = item(&b, series, 0x00081199);
                if (o) {
                    uid(&b, o, 0x00081150, evidence[i].sop_class);
                    uid(&b, o, 0x00081155, evidence[i].sop_uid);
                }
            }
        }
    }

    /* SR Document Content (C.17.3), TID 2000 */
    str(&b, ds, T_ValueType, "CONTAINER");
    code(&b, ds, T_ConceptNameCodeSequence,
         (struct code){"18748-4", "LN", "Diagnostic Imaging Report"});
    str(&b, ds, T_ContinuityOfContent, "SEPARATE");
    struct dcm_dataset *tpl = item(&b, ds, 0x0040A504); /* ContentTemplateSequence */
    if (tpl) {
        str(&b, tpl, 0x00080105, "DCMR"); /* MappingResource */
        str(&b, tpl, 0x0040DB00, "2000"); /* TemplateIdentifier */
    }
    struct dcm_dataset *it;
    /* TID 1204: language of content */
    it = content(&b, ds, "HAS CONCEPT MOD", "CODE",
                 (struct code){"121049", "DCM", "Language of Content Item and Descendants"});
    if (it)
        code(&b, it, T_ConceptCodeSequence, (struct code){"en", "RFC5646", "English"});
    /* TID 1002: observer */
    it =
        content(&b, ds, "HAS OBS CONTEXT", "CODE", (struct code){"121005", "DCM", "Observer Type"});
    if (it)
        code(&b, it, T_ConceptCodeSequence, (struct code){"121006", "DCM", "Person"});
    it = content(&b, ds, "HAS OBS CONTEXT", "PNAME",
                 (struct code){"121008", "DCM", "Person Observer Name"});
    if (it)
        str(&b, it, T_PersonName, name);
    /* TID 1005: the procedure (the study) */
    it = content(&b, ds, "HAS OBS CONTEXT", "UIDREF",
                 (struct code){"121018", "DCM", "Procedure Study Instance UID"});
    if (it)
        uid(&b, it, T_UID, d->study_uid);
    /* The sections (TID 2001/2002) */
    for (int i = 0; i < REP_SECTION_COUNT; i++)
        section(&b, ds, headings[i], elements[i], d->sections[i]);
    if (d->critical_category) {
        char text[4200];
        snprintf(text, sizeof(text), "Critical result, ACR category %d%s%s", d->critical_category,
                 d->critical_finding && *d->critical_finding ? ": " : "",
                 d->critical_finding ? d->critical_finding : "");
        section(&b, ds, (struct code){"73568-8", "LN", "Communication of Critical Results"},
                (struct code){"121071", "DCM", "Finding"}, text);
    }
    for (unsigned a = 0; a < d->naddenda; a++) {
        struct tr_buf t;
        tr_buf_init(&t, 1u << 20);
        char when[32];
        rep_iso_time(d->addenda[a].signed_at, when);
        tr_buf_addf(&t, "%s\n(signed by %s on %s)", d->addenda[a].text, d->addenda[a].signer_name,
                    when);
        section(&b, ds, (struct code){"55107-7", "LN", "Addendum"},
                (struct code){"121071", "DCM", "Finding"}, t.data);
        tr_buf_release(&t);
    }
    if (b.rc) {
        dcm_dataset_free(ds);
        return NULL;
    }
    return ds;
}

struct dcm_dataset *rep_pdf_dataset(const struct rep_doc *d, const void *pdf, size_t len,
                                    int64_t now, struct tr_error *err)
{
    if (len > 0xFFFFFFF0u) {
        tr_error_set(err, TR_ELIMIT, "the PDF is too big for one DICOM element");
        return NULL;
    }
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    struct sr_build b = {err, 0};
    common_modules(&b, ds, d, SOP_ENCAPSULATED_PDF, d->pdf_uid, "DOC", d->pdf_series, 998, now);
    char date[9], time_[16], dt[32], title[128];
    rep_dicom_date(d->signed_at, date);
    rep_dicom_time(d->signed_at, time_);
    snprintf(dt, sizeof(dt), "%s%s+0000", date, time_);
    /* SC Equipment (C.8.6.1) */
    str(&b, ds, 0x00080064, "WSD"); /* ConversionType: workstation */
    /* Encapsulated Document (C.24.2) */
    str(&b, ds, 0x00080023, date);  /* ContentDate */
    str(&b, ds, 0x00080033, time_); /* ContentTime */
    str(&b, ds, 0x0008002A, dt);    /* AcquisitionDateTime */
    str(&b, ds, 0x00280301, "YES"); /* BurnedInAnnotation: the PDF names the patient */
    snprintf(title, sizeof(title), "%s report%s",
             d->kind == REP_PRELIMINARY ? "Preliminary"
             : d->kind == REP_ADDENDUM  ? "Final (addended)"
                                        : "Final",
             "");
    str(&b, ds, 0x00420010, title); /* DocumentTitle */
    code(&b, ds, T_ConceptNameCodeSequence,
         (struct code){"18748-4", "LN", "Diagnostic Imaging Report"});
    str(&b, ds, 0x00420012, "application/pdf"); /* MIMETypeOfEncapsulatedDocument */
    check(&b, dcm_dataset_set_int(ds, 0x00420015, DCM_VR_UL, (int64_t)len), 0x00420015);
    check(&b, dcm_dataset_set_bytes(ds, 0x00420011, DCM_VR_OB, pdf, len), 0x00420011);
    if (b.rc) {
        dcm_dataset_free(ds);
        return NULL;
    }
    return ds;
}
