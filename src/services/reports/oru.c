/*
 * oru.c - a report version as an HL7 v2.5.1 ORU^R01 (chapter 7, "Observation Reporting"),
 * written with the message writer of src/hl7 (which escapes every separator in the values),
 * sent in original acknowledgment mode (MSH-15/16 empty: the receiver answers with an
 * application ACK, which src/hl7/mllp.c's client reads).
 *
 *   MSH  ...|ORU^R01^ORU_R01|<control id>|P|2.5.1|...|UNICODE UTF-8
 *   PID  1, patient identifier list (ID^^^issuer^MR), name, birth date, sex
 *   ORC  RE, placer and filler order numbers (the accession), order status (IP/CM)
 *   OBR  1, placer (OBR-2) and filler order number = accession (OBR-3), universal service id
 *        (modality^study description), observation time, ordering provider, status change
 *        time (OBR-22), section RAD, result status OBR-25 (P preliminary, F final, C an
 *        addendum corrects the final), priority (OBR-27.6), principal interpreter (OBR-32)
 *   OBX  FT per section (LOINC section codes of DICOM CID 7001), the critical result (73568-8,
 *        abnormal flag AA), each addendum (55107-7), the PDF (ED: ^AP^PDF^Base64^...)
 */
#include "common.h"
#include "hl7.h"
#include "reports_int.h"

#include <stdio.h>

/* LOINC section codes (DICOM CID 7001, "Diagnostic Imaging Report Heading"). */
static const char *const section_codes[REP_SECTION_COUNT][2] = {
    {"55752-0", "Clinical Information"},
    {"55111-9", "Current Procedure Descriptions"},
    {"55114-3", "Prior Procedure Descriptions"},
    {"59776-5", "Findings"},
    {"19005-8", "Impressions"},
};

struct oru {
    struct hl7_message *m;
    struct tr_error *err;
    int rc;
};

static void set(struct oru *o, const char *path, const char *value)
{
    if (o->rc == 0 && value && *value)
        o->rc = hl7_set(o->m, path, value, o->err);
}

static void setf(struct oru *o, const char *seg, unsigned occurrence, const char *field,
                 const char *value)
{
    char path[64];
    snprintf(path, sizeof(path), "%s[%u]-%s", seg, occurrence, field);
    set(o, path, value);
}

static void add(struct oru *o, const char *name)
{
    if (o->rc == 0) {
        long rc = hl7_segment_add(o->m, name, o->err);
        if (rc < 0)
            o->rc = (int)rc;
    }
}

/* DICOM PN "FAMILY^GIVEN^MIDDLE^PREFIX^SUFFIX" (first component group) -> XPN/XCN pieces. */
static void name_part(const char *pn, int index, char *out, size_t size)
{
    out[0] = '\0';
    const char *p = pn;
    for (int i = 0; i < index && p; i++) {
        p = strchr(p, '^');
        if (p)
            p++;
    }
    if (!p)
        return;
    size_t n = strcspn(p, "^=");
    snprintf(out, size, "%.*s", (int)(n < size ? n : size - 1), p);
}

/* "20261122" + "103000.123" -> "20261122103000" (HL7 DTM, local time of the study). */
static void study_dtm(const struct rep_doc *d, char *out, size_t size)
{
    char t[7] = "";
    size_t k = 0;
    for (const char *p = d->study_time; *p && k < 6; p++) {
        if (*p >= '0' && *p <= '9')
            t[k++] = *p;
    }
    t[k] = '\0';
    snprintf(out, size, "%s%s", d->study_date, *d->study_date ? t : "");
}

int rep_oru_build(const struct rep_doc *d, const char *control_id, const char *receiver,
                  int64_t now, const void *pdf, size_t pdf_len, struct tr_buf *out,
                  struct tr_error *err)
{
    struct oru o = {hl7_message_new(NULL), err, 0};
    if (!o.m)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    char buf[256], when[32], signed_at[32];
    const char status[2] = {rep_doc_status(d), '\0'};
    rep_hl7_time(now, when);
    rep_hl7_time(d->signed_at, signed_at);

    /* MSH (2.15.9) */
    set(&o, "MSH-3", "TELERAD");
    set(&o, "MSH-4", d->organization);
    if (receiver && *receiver) {
        char app[128], fac[128];
        name_part(receiver, 0, app, sizeof(app));
        name_part(receiver, 1, fac, sizeof(fac));
        set(&o, "MSH-5", app);
        set(&o, "MSH-6", *fac ? fac : d->site);
    } else {
        set(&o, "MSH-6", d->site);
    }
    set(&o, "MSH-7", when);
    set(&o, "MSH-9.1", "ORU");
    set(&o, "MSH-9.2", "R01");
    set(&o, "MSH-9.3", "ORU_R01");
    set(&o, "MSH-10", control_id);
    set(&o, "MSH-11", "P");
    set(&o, "MSH-12", "2.5.1");
    set(&o, "MSH-18", "UNICODE UTF-8");

    /* PID (3.4.2) */
    add(&o, "PID");
    set(&o, "PID-1", "1");
    set(&o, "PID-3.1", d->patient_id);
    set(&o, "PID-3.4", *d->issuer ? d->issuer : d->site);
    set(&o, "PID-3.5", "MR");
    for (int i = 0; i < 5; i++) {
        static const char *const xpn[] = {"PID-5.1", "PID-5.2", "PID-5.3", "PID-5.5", "PID-5.4"};
        name_part(d->patient_name, i, buf, sizeof(buf));
        set(&o, xpn[i], buf);
    }
    set(&o, "PID-7", d->birth_date);
    set(&o, "PID-8", d->sex);

    /* ORC (4.5.1) */
    add(&o, "ORC");
    set(&o, "ORC-1", "RE");
    set(&o, "ORC-2", d->accession);
    set(&o, "ORC-3", d->accession);
    set(&o, "ORC-5", d->kind == REP_PRELIMINARY ? "IP" : "CM");
    set(&o, "ORC-9", signed_at);

    /* OBR (7.4.1) */
    add(&o, "OBR");
    set(&o, "OBR-1", "1");
    set(&o, "OBR-2", d->accession);
    set(&o, "OBR-3", d->accession);
    char modality[17];
    snprintf(modality, sizeof(modality), "%.*s", (int)strcspn(d->modality, "\\"), d->modality);
    set(&o, "OBR-4.1", *modality ? modality : "IMG");
    set(&o, "OBR-4.2", *d->description ? d->description : "Diagnostic imaging study");
    set(&o, "OBR-4.3", "L");
    study_dtm(d, buf, sizeof(buf));
    set(&o, "OBR-7", buf);
    for (int i = 0; i < 3; i++) {
        static const char *const xcn[] = {"OBR-16.2", "OBR-16.3", "OBR-16.4"};
        name_part(d->referring, i, buf, sizeof(buf));
        set(&o, xcn[i], buf);
    }
    set(&o, "OBR-22", signed_at);
    set(&o, "OBR-24", "RAD");
    set(&o, "OBR-25", status);
    set(&o, "OBR-27.6", d->priority == 0 ? "S" : d->priority == 1 ? "A" : "R");
    set(&o, "OBR-32.1.1", d->signer);
    set(&o, "OBR-32.1.2", d->signer_name);

    /* OBX (7.4.2): one per section, formatted text (line breaks as \.br\). */
    unsigned n = 0;
    char seq[16];
    for (int i = 0; i < REP_SECTION_COUNT && o.rc == 0; i++) {
        if (!d->sections[i] || !*d->sections[i])
            continue;
        add(&o, "OBX");
        n++;
        snprintf(seq, sizeof(seq), "%u", n);
        setf(&o, "OBX", n, "1", seq);
        setf(&o, "OBX", n, "2", "FT");
        setf(&o, "OBX", n, "3.1", section_codes[i][0]);
        setf(&o, "OBX", n, "3.2", section_codes[i][1]);
        setf(&o, "OBX", n, "3.3", "LN");
        setf(&o, "OBX", n, "4", "1");
        setf(&o, "OBX", n, "5", d->sections[i]);
        if (i == REP_IMPRESSION && d->critical_category)
            setf(&o, "OBX", n, "8", "AA");
        setf(&o, "OBX", n, "11", status);
        setf(&o, "OBX", n, "14", signed_at);
        setf(&o, "OBX", n, "16.1", d->signer);
        setf(&o, "OBX", n, "16.2", d->signer_name);
    }
    if (d->critical_category && o.rc == 0) {
        add(&o, "OBX");
        n++;
        snprintf(seq, sizeof(seq), "%u", n);
        snprintf(buf, sizeof(buf), "ACR category %d", d->critical_category);
        struct tr_buf text;
        tr_buf_init(&text, 8192);
        tr_buf_addf(&text, "Critical result, %s: %s", buf,
                    d->critical_finding ? d->critical_finding : "");
        setf(&o, "OBX", n, "1", seq);
        setf(&o, "OBX", n, "2", "FT");
        setf(&o, "OBX", n, "3.1", "73568-8");
        setf(&o, "OBX", n, "3.2", "Communication of Critical Results");
        setf(&o, "OBX", n, "3.3", "LN");
        setf(&o, "OBX", n, "4", "1");
        setf(&o, "OBX", n, "5", text.data);
        setf(&o, "OBX", n, "8", "AA");
        setf(&o, "OBX", n, "11", status);
        setf(&o, "OBX", n, "14", signed_at);
        tr_buf_release(&text);
    }
    for (unsigned a = 0; a < d->naddenda && o.rc == 0; a++) {
        add(&o, "OBX");
        n++;
        snprintf(seq, sizeof(seq), "%u", n);
        char sub[16], at[32];
        snprintf(sub, sizeof(sub), "%u", a + 1);
        rep_hl7_time(d->addenda[a].signed_at, at);
        setf(&o, "OBX", n, "1", seq);
        setf(&o, "OBX", n, "2", "FT");
        setf(&o, "OBX", n, "3.1", "55107-7");
        setf(&o, "OBX", n, "3.2", "Addendum");
        setf(&o, "OBX", n, "3.3", "LN");
        setf(&o, "OBX", n, "4", sub);
        setf(&o, "OBX", n, "5", d->addenda[a].text);
        setf(&o, "OBX", n, "11", status);
        setf(&o, "OBX", n, "14", at);
        setf(&o, "OBX", n, "16.1", d->addenda[a].signer);
        setf(&o, "OBX", n, "16.2", d->addenda[a].signer_name);
    }
    if (pdf && pdf_len && o.rc == 0) {
        /* ED (2.A.24): source application ^ type of data ^ subtype ^ encoding ^ data. */
        struct tr_buf b64;
        tr_buf_init(&b64, 64u << 20);
        o.rc = rep_base64(pdf, pdf_len, &b64) < 0 ? tr_error_set(err, TR_ELIMIT, "PDF too big") : 0;
        add(&o, "OBX");
        n++;
        snprintf(seq, sizeof(seq), "%u", n);
        setf(&o, "OBX", n, "1", seq);
        setf(&o, "OBX", n, "2", "ED");
        setf(&o, "OBX", n, "3.1", "18748-4");
        setf(&o, "OBX", n, "3.2", "Diagnostic Imaging Report");
        setf(&o, "OBX", n, "3.3", "LN");
        setf(&o, "OBX", n, "4", "PDF");
        setf(&o, "OBX", n, "5.1", "TELERAD");
        setf(&o, "OBX", n, "5.2", "AP");
        setf(&o, "OBX", n, "5.3", "PDF");
        setf(&o, "OBX", n, "5.4", "Base64");
        setf(&o, "OBX", n, "5.5", b64.data);
        setf(&o, "OBX", n, "11", status);
        setf(&o, "OBX", n, "14", signed_at);
        tr_buf_release(&b64);
    }
    int rc = o.rc;
    if (rc == 0)
        rc = hl7_write(o.m, out, err);
    hl7_message_free(o.m);
    return rc;
}
