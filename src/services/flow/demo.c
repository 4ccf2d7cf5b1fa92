/*
 * demo.c - `telerad serve --demo`: three client sites in three jurisdictions, five readers
 * with differing licenses, privileges, subspecialties and shifts, contracts, and synthetic
 * studies stored through the archive's ingest (as if sent by each site's AE title), so that a
 * newcomer sees reads appear, get priorities and due times, and route to eligible readers.
 *
 * Every name and identifier is invented: "DEMO^..." patients, "DEMO-..." IDs.
 */
#include "common.h"
#include "flow_int.h"
#include "dict.h"
#include "part10.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <time.h>

static const char *const demo_sites[] = {
    "{\"id\":\"tx-general\",\"name\":\"TX General Hospital\",\"jurisdiction\":\"US-TX\","
    "\"timezone\":\"America/Chicago\",\"ae_titles\":[\"TXGEN\"],\"region\":\"US\"}",
    "{\"id\":\"london-royal\",\"name\":\"London Royal Infirmary\",\"jurisdiction\":\"GB-ENG\","
    "\"timezone\":\"Europe/London\",\"ae_titles\":[\"LONROYAL\"],\"region\":\"EU\","
    "\"pseudonymize_outside\":\"EU\"}",
    "{\"id\":\"gz-first\",\"name\":\"Guangzhou First People's Hospital\",\"jurisdiction\":"
    "\"CN-GD\",\"timezone\":\"Asia/Shanghai\",\"ae_titles\":[\"GZFIRST\"],\"region\":\"CN\"}",
};

static const char *const demo_contracts[] = {
    "{\"site\":\"tx-general\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,\"ROUTINE\":1440},"
    "\"subspecialty_rules\":[{\"modality\":\"MR\",\"body_part\":\"BRAIN\",\"subspecialty\":"
    "\"neuro\"}],\"price_per_read\":45}",
    "{\"site\":\"london-royal\",\"sla_minutes\":{\"STAT\":45,\"URGENT\":120,\"ROUTINE\":2880},"
    "\"price_per_read\":38}",
    "{\"site\":\"gz-first\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":90,\"ROUTINE\":1440},"
    "\"price_per_read\":30}",
};

/* Expiry dates are relative to today so the demo keeps working: +2 years valid, -10 days
 * expired. */
static const char *const demo_readers[] = {
    "{\"id\":\"dr-lee\",\"name\":\"Dr Jordan Lee\",\"status\":\"online\",\"timezone\":"
    "\"America/Chicago\",\"region\":\"US\",\"licenses\":[{\"jurisdiction\":\"US-TX\","
    "\"expires\":\"@VALID\"}],\"privileges\":[{\"site\":\"tx-general\",\"expires\":\"@VALID\"}],"
    "\"subspecialties\":[\"neuro\"],\"max_open\":10,\"rvu_target\":12}",
    "{\"id\":\"dr-patel\",\"name\":\"Dr Asha Patel\",\"status\":\"online\",\"timezone\":"
    "\"Europe/London\",\"region\":\"EU\",\"licenses\":[{\"jurisdiction\":\"GB-ENG\",\"expires\":"
    "\"@VALID\"},{\"jurisdiction\":\"US-TX\",\"expires\":\"@VALID\"}],\"privileges\":[{\"site\":"
    "\"london-royal\",\"expires\":\"@VALID\"},{\"site\":\"tx-general\",\"expires\":\"@VALID\"}],"
    "\"subspecialties\":[\"body\",\"chest\"],\"max_open\":8,\"rvu_target\":10}",
    "{\"id\":\"dr-okafor\",\"name\":\"Dr Chidi Okafor\",\"status\":\"offline\",\"timezone\":"
    "\"Europe/London\",\"region\":\"EU\",\"licenses\":[{\"jurisdiction\":\"GB-ENG\",\"expires\":"
    "\"@VALID\"}],\"privileges\":[{\"site\":\"london-royal\",\"expires\":\"@VALID\"}],"
    "\"subspecialties\":[\"neuro\",\"msk\"],\"shifts\":[{\"days\":[\"mon\",\"tue\",\"wed\","
    "\"thu\",\"fri\"],\"start\":\"08:00\",\"end\":\"18:00\"}],\"max_open\":6}",
    "{\"id\":\"dr-chen\",\"name\":\"Dr Wei Chen\",\"status\":\"online\",\"timezone\":"
    "\"Asia/Shanghai\",\"region\":\"CN\",\"licenses\":[{\"jurisdiction\":\"CN-GD\",\"expires\":"
    "\"@VALID\"}],\"privileges\":[{\"site\":\"gz-first\",\"expires\":\"@VALID\"}],"
    "\"subspecialties\":[\"body\",\"neuro\"],\"max_open\":10}",
    "{\"id\":\"dr-garcia\",\"name\":\"Dr Maria Garcia\",\"status\":\"online\",\"timezone\":"
    "\"America/Chicago\",\"region\":\"US\",\"licenses\":[{\"jurisdiction\":\"US-TX\","
    "\"expires\":\"@EXPIRED\"}],\"privileges\":[{\"site\":\"tx-general\",\"expires\":\"@VALID\"}],"
    "\"subspecialties\":[\"chest\"],\"max_open\":10}",
};

struct demo_study {
    const char *ae;
    const char *modality;
    const char *description;
    const char *body_part;
    const char *requested_priority; /* "" none */
    int images;
};

static const struct demo_study demo_studies[] = {
    {"TXGEN", "CT", "CT HEAD WO CONTRAST CODE STROKE", "HEAD", "", 12},
    {"TXGEN", "MR", "MR BRAIN W WO CONTRAST", "BRAIN", "", 10},
    {"TXGEN", "CR", "XR CHEST 2 VIEWS", "CHEST", "", 2},
    {"TXGEN", "CT", "CT ABDOMEN PELVIS W CONTRAST", "ABDOMEN", "HIGH", 12},
    {"LONROYAL", "CT", "CTA CHEST PE PROTOCOL", "CHEST", "", 12},
    {"LONROYAL", "CR", "XR KNEE LEFT", "KNEE", "", 2},
    {"LONROYAL", "MR", "MR LUMBAR SPINE", "LSPINE", "", 8},
    {"GZFIRST", "CT", "CT CHEST TRAUMA", "CHEST", "", 12},
    {"GZFIRST", "US", "US ABDOMEN COMPLETE", "ABDOMEN", "", 4},
};

static void fill_dates(char *text, size_t size, const char *valid, const char *expired)
{
    char out[4096];
    size_t n = 0;
    for (const char *p = text; *p && n + 12 < sizeof(out);) {
        if (strncmp(p, "@VALID", 6) == 0) {
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", valid);
            p += 6;
        } else if (strncmp(p, "@EXPIRED", 8) == 0) {
            n += (size_t)snprintf(out + n, sizeof(out) - n, "%s", expired);
            p += 8;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    snprintf(text, size, "%s", out);
}

/* One synthetic CT/MR/CR/US image: a disc in a square, 64 x 64, 12 bits. */
static struct dcm_dataset *demo_image(const struct demo_study *s, int index, const char *study,
                                      const char *series, const char *patient_id,
                                      const char *patient_name, const char *accession,
                                      const char *date, char *sop, struct tr_error *err)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    static const struct {
        const char *modality;
        const char *sop_class;
    } classes[] = {{"CT", "1.2.840.10008.5.1.4.1.1.2"},
                   {"MR", "1.2.840.10008.5.1.4.1.1.4"},
                   {"CR", "1.2.840.10008.5.1.4.1.1.1"},
                   {"US", "1.2.840.10008.5.1.4.1.1.6.1"}};
    const char *sop_class = classes[0].sop_class;
    for (size_t i = 0; i < TR_ARRAY_SIZE(classes); i++) {
        if (strcmp(classes[i].modality, s->modality) == 0)
            sop_class = classes[i].sop_class;
    }
    dcm_uid_generate(sop);
    dcm_dataset_set_string(ds, 0x00080005, DCM_VR_CS, "ISO_IR 192");
    dcm_dataset_set_uid(ds, 0x00080016, sop_class);
    dcm_dataset_set_uid(ds, 0x00080018, sop);
    dcm_dataset_set_string(ds, 0x00080020, DCM_VR_DA, date);
    dcm_dataset_set_string(ds, 0x00080030, DCM_VR_TM, "090000");
    dcm_dataset_set_string(ds, 0x00080050, DCM_VR_SH, accession);
    dcm_dataset_set_string(ds, 0x00080060, DCM_VR_CS, s->modality);
    dcm_dataset_set_string(ds, 0x00080090, DCM_VR_PN, "DEMO^Referrer");
    dcm_dataset_set_string(ds, 0x00081030, DCM_VR_LO, s->description);
    dcm_dataset_set_string(ds, 0x0008103E, DCM_VR_LO, s->description);
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_PN, patient_name);
    dcm_dataset_set_string(ds, 0x00100020, DCM_VR_LO, patient_id);
    dcm_dataset_set_string(ds, 0x00100030, DCM_VR_DA, "19700101");
    dcm_dataset_set_string(ds, 0x00100040, DCM_VR_CS, "O");
    dcm_dataset_set_string(ds, 0x00180015, DCM_VR_CS, s->body_part);
    dcm_dataset_set_uid(ds, DCM_TAG_StudyInstanceUID, study);
    dcm_dataset_set_uid(ds, 0x0020000E, series);
    dcm_dataset_set_string(ds, 0x00200010, DCM_VR_SH, "1");
    dcm_dataset_set_int(ds, 0x00200011, DCM_VR_IS, 1);
    dcm_dataset_set_int(ds, 0x00200013, DCM_VR_IS, index + 1);
    if (*s->requested_priority)
        dcm_dataset_set_string(ds, 0x00401003, DCM_VR_SH, s->requested_priority);
    enum { SIZE = 64 };
    dcm_dataset_set_int(ds, 0x00280002, DCM_VR_US, 1);
    dcm_dataset_set_string(ds, 0x00280004, DCM_VR_CS, "MONOCHROME2");
    dcm_dataset_set_int(ds, 0x00280010, DCM_VR_US, SIZE);
    dcm_dataset_set_int(ds, 0x00280011, DCM_VR_US, SIZE);
    dcm_dataset_set_int(ds, 0x00280100, DCM_VR_US, 16);
    dcm_dataset_set_int(ds, 0x00280101, DCM_VR_US, 12);
    dcm_dataset_set_int(ds, 0x00280102, DCM_VR_US, 11);
    dcm_dataset_set_int(ds, 0x00280103, DCM_VR_US, 0);
    dcm_dataset_set_float(ds, 0x00281050, DCM_VR_DS, 1024 + 40);
    dcm_dataset_set_float(ds, 0x00281051, DCM_VR_DS, 400);
    uint16_t pixels[SIZE * SIZE];
    double radius = 14 + 10 * sin(index * 0.5);
    for (int y = 0; y < SIZE; y++) {
        for (int x = 0; x < SIZE; x++) {
            double d = hypot(x - SIZE / 2.0, y - SIZE / 2.0);
            uint16_t v = d < radius ? (uint16_t)(1000 + (int)(60 * cos(d / 3))) : 24;
            if (x < 4 || y < 4 || x >= SIZE - 4 || y >= SIZE - 4)
                v = 0;
            /* little endian */
            uint8_t *b = (uint8_t *)&pixels[y * SIZE + x];
            b[0] = (uint8_t)(v & 0xFF);
            b[1] = (uint8_t)(v >> 8);
        }
    }
    dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, pixels, sizeof(pixels));
    return ds;
}

static int store_demo_study(struct flow *f, const struct demo_study *s, int number,
                            const char *site, struct tr_error *err)
{
    char study[DCM_UID_MAX + 1], series[DCM_UID_MAX + 1];
    dcm_uid_generate(study);
    dcm_uid_generate(series);
    char patient_id[32], patient_name[64], accession[17], date[9];
    static const char *const names[] = {"ALPHA", "BRAVO", "CHARLIE", "DELTA", "ECHO",
                                        "FOXTROT", "GOLF", "HOTEL", "INDIA"};
    snprintf(patient_id, sizeof(patient_id), "DEMO-%04d", number + 1);
    snprintf(patient_name, sizeof(patient_name), "DEMO^%s", names[number % 9]);
    snprintf(accession, sizeof(accession), "DEMOACC%04u", (unsigned)(number + 1) % 10000u);
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(date, sizeof(date), "%Y%m%d", &tm);
    for (int i = 0; i < s->images; i++) {
        char sop[DCM_UID_MAX + 1];
        struct dcm_dataset *ds = demo_image(s, i, study, series, patient_id, patient_name,
                                            accession, date, sop, err);
        if (!ds)
            return err && err->code ? err->code : TR_ENOMEM;
        struct arc_source src = {.site = site, .calling_ae = s->ae, .peer = "demo",
                                 .part10 = true};
        struct arc_ingest *in;
        int rc = arc_ingest_begin(f->cfg.archive, &src, &in, err);
        if (rc == 0) {
            struct tr_sink *sink = arc_ingest_sink(in);
            char cls[DCM_UID_MAX + 1];
            dcm_dataset_get_uid(ds, 0x00080016, cls, sizeof(cls));
            struct dcm_write_options wopt;
            dcm_write_options_init(&wopt);
            bool ok = dcm_file_write_header(cls, sop, "1.2.840.10008.1.2.1", s->ae, sink, err) ==
                          0 &&
                      dcm_dataset_write(ds, "1.2.840.10008.1.2.1", &wopt, sink, err) == 0;
            struct arc_ingest_result res;
            rc = arc_ingest_end(in, ok, &res, err);
            if (rc == 0 && res.status != 0)
                rc = tr_error_set(err, TR_EIO, "demo image refused: %s", res.comment);
        }
        dcm_dataset_free(ds);
        if (rc)
            return rc;
    }
    return 0;
}

int flow_seed_demo(struct flow *f, struct tr_error *err)
{
    struct flow_catalog *c = flow_catalog_get(f, err);
    if (!c)
        return err && err->code ? err->code : TR_EIO;
    bool empty = c->nsites == 0;
    flow_catalog_put(c);
    if (!empty) {
        flow_log(f, 2, "demo: sites exist already, nothing seeded");
        return 0;
    }
    char valid[11], expired[11];
    int64_t now = flow_now_ms();
    flow_tz_date("UTC", now + 2LL * 365 * 86400000, valid);
    flow_tz_date("UTC", now - 10LL * 86400000, expired);
    struct flow_invalid bad;
    const char *const *lists[] = {demo_sites, demo_contracts, demo_readers};
    const size_t counts[] = {TR_ARRAY_SIZE(demo_sites), TR_ARRAY_SIZE(demo_contracts),
                             TR_ARRAY_SIZE(demo_readers)};
    const int kinds[] = {0, 2, 1};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            char text[4096];
            snprintf(text, sizeof(text), "%s", lists[l][i]);
            fill_dates(text, sizeof(text), valid, expired);
            json_t *doc = json_loads(text, 0, NULL);
            if (!doc)
                return tr_error_set(err, TR_EINVAL, "demo document %d/%zu is not JSON", l, i);
            int rc = flow_store_document(f, kinds[l], doc, &bad, err);
            json_decref(doc);
            if (rc)
                return rc;
            /* Readers' privileges name sites: see them before the next document. */
            flow_catalog_changed(f);
        }
    }
    static const char *const ae_site[][2] = {
        {"TXGEN", "tx-general"}, {"LONROYAL", "london-royal"}, {"GZFIRST", "gz-first"}};
    for (size_t i = 0; i < TR_ARRAY_SIZE(demo_studies); i++) {
        const char *site = "";
        for (size_t k = 0; k < TR_ARRAY_SIZE(ae_site); k++) {
            if (strcmp(ae_site[k][0], demo_studies[i].ae) == 0)
                site = ae_site[k][1];
        }
        int rc = store_demo_study(f, &demo_studies[i], (int)i, site, err);
        if (rc)
            return rc;
    }
    flow_log(f, 2, "demo: 3 sites, 5 readers, 3 contracts and %zu studies seeded; reads appear "
                   "once the studies are stable",
             TR_ARRAY_SIZE(demo_studies));
    return 0;
}
