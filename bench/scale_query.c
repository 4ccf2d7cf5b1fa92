/*
 * scale_query.c - study-level query latency against a large index, for bench/scale.py.
 *
 *   scale_query init URL                 create (or migrate) the index schema at URL, as
 *                                        `telerad serve` would, and exit
 *   scale_query index URL QUERIES        run each query through arc_index_query (the index
 *                                        library alone: SQL built, run, matches turned into
 *                                        data sets) and time it
 *   scale_query dicom HOST PORT QUERIES  run each query as a study-root C-FIND on ONE
 *                                        association (no process or association set-up in the
 *                                        timings) and time it, until the final response
 *
 * QUERIES is a file of lines "pn VALUE" (PatientName, e.g. SMI*) or "date VALUE" (StudyDate,
 * e.g. 20210301-20210331). The first --warmup lines (default 20) are run once untimed. Output:
 * one line per timed query, "KIND VALUE MICROSECONDS MATCHES".
 *
 * The identifier asks for the usual study-level return keys, all of which the index holds, so
 * that neither mode reads object files.
 */
#include "common.h"
#include "dcm.h"
#include "dul.h"
#include "index.h"
#include "scu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static const struct {
    uint32_t tag;
    enum dcm_vr vr;
} return_keys[] = {
    {0x00100010, DCM_VR_PN}, /* PatientName */
    {0x00100020, DCM_VR_LO}, /* PatientID */
    {0x00100030, DCM_VR_DA}, /* PatientBirthDate */
    {0x00100040, DCM_VR_CS}, /* PatientSex */
    {0x0020000D, DCM_VR_UI}, /* StudyInstanceUID */
    {0x00080020, DCM_VR_DA}, /* StudyDate */
    {0x00080030, DCM_VR_TM}, /* StudyTime */
    {0x00080050, DCM_VR_SH}, /* AccessionNumber */
    {0x00200010, DCM_VR_SH}, /* StudyID */
    {0x00081030, DCM_VR_LO}, /* StudyDescription */
    {0x00080090, DCM_VR_PN}, /* ReferringPhysicianName */
    {0x00080061, DCM_VR_CS}, /* ModalitiesInStudy */
    {0x00201206, DCM_VR_IS}, /* NumberOfStudyRelatedSeries */
    {0x00201208, DCM_VR_IS}, /* NumberOfStudyRelatedInstances */
};

struct query {
    char kind[8];
    char value[128];
};

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int read_queries(const char *path, struct query **out, size_t *count)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "scale_query: %s: %s\n", path, strerror(errno));
        return -1;
    }
    size_t n = 0, cap = 0;
    struct query *q = NULL;
    char line[256];
    while (fgets(line, sizeof(line), f)) {
        char kind[8], value[128];
        if (sscanf(line, "%7s %127s", kind, value) != 2)
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 256;
            struct query *p = tr_reallocarray(q, cap, sizeof(*q));
            if (!p) {
                tr_free(q);
                fclose(f);
                return -1;
            }
            q = p;
        }
        snprintf(q[n].kind, sizeof(q[n].kind), "%s", kind);
        snprintf(q[n].value, sizeof(q[n].value), "%s", value);
        n++;
    }
    fclose(f);
    *out = q;
    *count = n;
    return 0;
}

/* The identifier: every return key empty, then the matching key set. */
static struct dcm_dataset *identifier(const struct query *q, bool with_level)
{
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys)
        return NULL;
    if (with_level)
        dcm_dataset_set_string(keys, 0x00080052, DCM_VR_CS, "STUDY");
    for (size_t i = 0; i < TR_ARRAY_SIZE(return_keys); i++)
        dcm_dataset_set_empty(keys, return_keys[i].tag, return_keys[i].vr);
    uint32_t tag = strcmp(q->kind, "pn") == 0 ? 0x00100010 : 0x00080020;
    enum dcm_vr vr = tag == 0x00100010 ? DCM_VR_PN : DCM_VR_DA;
    if (dcm_dataset_set_string(keys, tag, vr, q->value) < 0)
        dcm_dataset_set_bytes(keys, tag, vr, q->value, strlen(q->value));
    return keys;
}

static int count_match(void *ctx, const struct arc_match *m)
{
    (void)m;
    (*(long *)ctx)++;
    return 0;
}

static int count_dataset(void *ctx, const struct dcm_dataset *m)
{
    (void)m;
    (*(long *)ctx)++;
    return 0;
}

static int run_index(const char *url, const struct query *qs, size_t n, size_t warmup)
{
    struct arc_index_options o;
    arc_index_options_init(&o);
    o.url = url;
    struct arc_index *ix;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_index_open(&o, &ix, &err) < 0) {
        fprintf(stderr, "scale_query: %s\n", err.message);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct dcm_dataset *keys = identifier(&qs[i], false);
        struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys};
        long matches = 0;
        double t0 = now_us();
        int r = arc_index_query(ix, &q, count_match, &matches, &err);
        double t = now_us() - t0;
        dcm_dataset_free(keys);
        if (r < 0) {
            fprintf(stderr, "scale_query: %s %s: %s\n", qs[i].kind, qs[i].value, err.message);
            rc = 1;
        } else if (i >= warmup) {
            printf("%s %s %.0f %ld\n", qs[i].kind, qs[i].value, t, matches);
        }
    }
    arc_index_close(ix);
    return rc;
}

static int run_dicom(const char *host, int port, const struct query *qs, size_t n, size_t warmup)
{
    struct dul_config cfg;
    dul_config_init(&cfg);
    cfg.ae_title = "SCALEBENCH";
    struct pdu_associate *rq = tr_malloc(sizeof(*rq));
    if (!rq)
        return 1;
    pdu_associate_init(rq);
    snprintf(rq->calling_ae, sizeof(rq->calling_ae), "%s", "SCALEBENCH");
    snprintf(rq->called_ae, sizeof(rq->called_ae), "%s", "TELERAD");
    static const char *const ts[] = {"1.2.840.10008.1.2.1", "1.2.840.10008.1.2", NULL};
    scu_add_context(rq, SCU_STUDY_ROOT_FIND, ts);
    struct dul_assoc *a;
    struct tr_error err = TR_ERROR_INIT;
    if (dul_request(&cfg, host, port, rq, &a, &err) < 0) {
        pdu_associate_release(rq);
        tr_free(rq);
        fprintf(stderr, "scale_query: association: %s\n", err.message);
        return 1;
    }
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct dcm_dataset *keys = identifier(&qs[i], true);
        long matches = 0;
        uint16_t status = 0;
        double t0 = now_us();
        int r = scu_find(a, SCU_STUDY_ROOT_FIND, keys, 0, count_dataset, &matches, &status, &err);
        double t = now_us() - t0;
        dcm_dataset_free(keys);
        if (r < 0 || status != 0) {
            fprintf(stderr, "scale_query: C-FIND %s %s: %s (status %04X)\n", qs[i].kind,
                    qs[i].value, r < 0 ? err.message : "failed", status);
            rc = 1;
        } else if (i >= warmup) {
            printf("%s %s %.0f %ld\n", qs[i].kind, qs[i].value, t, matches);
        }
    }
    if (dul_release(a, &err) < 0)
        fprintf(stderr, "scale_query: release: %s\n", err.message);
    dul_free(a);
    return rc;
}

int main(int argc, char **argv)
{
    size_t warmup = 20;
    if (argc > 2 && strcmp(argv[1], "--warmup") == 0) {
        warmup = (size_t)strtoul(argv[2], NULL, 10);
        argv += 2;
        argc -= 2;
    }
    if (argc == 3 && strcmp(argv[1], "init") == 0) {
        struct arc_index_options o;
        arc_index_options_init(&o);
        o.url = argv[2];
        struct arc_index *ix;
        struct tr_error err = TR_ERROR_INIT;
        if (arc_index_open(&o, &ix, &err) < 0) {
            fprintf(stderr, "scale_query: %s\n", err.message);
            return 1;
        }
        arc_index_close(ix);
        return 0;
    }
    struct query *qs = NULL;
    size_t n = 0;
    int rc = 2;
    if (argc == 4 && strcmp(argv[1], "index") == 0) {
        if (read_queries(argv[3], &qs, &n) < 0)
            return 1;
        rc = run_index(argv[2], qs, n, warmup);
    } else if (argc == 5 && strcmp(argv[1], "dicom") == 0) {
        if (read_queries(argv[4], &qs, &n) < 0)
            return 1;
        rc = run_dicom(argv[2], (int)strtol(argv[3], NULL, 10), qs, n, warmup);
    } else {
        fprintf(stderr, "usage: scale_query [--warmup N] init URL | index URL QUERIES | "
                        "dicom HOST PORT QUERIES\n");
    }
    tr_free(qs);
    return rc;
}
