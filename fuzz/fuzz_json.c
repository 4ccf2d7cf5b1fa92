/*
 * fuzz_json.c - libFuzzer target for the DICOM JSON reader (PS3.18 F.2): dcm_json_read() and
 * dcm_json_read_array() on the input, and for what they build: every data set read is written
 * back as JSON and as a binary data set, and walked with the typed getters.
 *
 * Invariant checked with abort(): JSON that telerad wrote from a data set it read from JSON
 * reads again (the same nesting limit applies to both, and the writer only emits the model
 * the reader accepts).
 *
 * Build and run: see fuzz/fuzz_part10.c and fuzz/run.sh.
 */
#include "common.h"
#include "dcm.h"

#include <stdio.h>
#include <stdlib.h>

#define JSON_CAP ((size_t)64 << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint8_t discarded;

static int discard_write(void *ctx, const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    discarded ^= x;
    *(size_t *)ctx += n;
    return 0;
}

static void invariant_failed(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "fuzz_json: invariant failed: %s: %s\n", what,
            err && err->code ? err->message : "(no message)");
    abort();
}

/* A BulkDataURI callback that fetches nothing but stores a few bytes, as a client would. */
static int bulk_data(void *ctx, struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                     const char *uri, struct tr_error *err)
{
    (void)ctx;
    static const uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    size_t n = strlen(uri) % 9;
    int rc = dcm_dataset_set_bytes(ds, tag, vr, bytes, n);
    if (rc == TR_EINVAL)
        return 0; /* not a whole number of values for the VR: leave the element empty */
    if (rc < 0)
        return tr_error_set(err, rc, "cannot store the bulk data of %s", uri);
    return 0;
}

static void use_values(const struct dcm_dataset *ds)
{
    struct tr_buf text;
    tr_buf_init(&text, 1 << 20);
    for (size_t i = 0; i < dcm_dataset_count(ds); i++) {
        const struct dcm_element *e = dcm_dataset_at(ds, i);
        if (e->vr == DCM_VR_SQ) {
            for (unsigned k = 0; k < dcm_element_item_count(e); k++)
                use_values(dcm_element_item(e, k));
            continue;
        }
        unsigned vm = TR_MIN(dcm_element_vm(e), 16u);
        for (unsigned k = 0; k <= vm; k++) {
            int64_t i64;
            double d;
            tr_buf_reset(&text);
            (void)dcm_element_get_string(ds, e, k, &text);
            (void)dcm_element_get_int(e, k, &i64);
            (void)dcm_element_get_float(e, k, &d);
        }
    }
    tr_buf_release(&text);
}

/* Write `ds` as JSON and read the output again; then as a binary data set. */
static void round_trip(const struct dcm_dataset *ds, const struct dcm_json_read_options *ropt)
{
    struct tr_buf json;
    tr_buf_init(&json, JSON_CAP);
    struct tr_sink sink = tr_sink_buf(&json);
    struct dcm_json_options wopt = {.flags = 0};
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_json_write(ds, &wopt, &sink, &err) == 0) {
        struct dcm_dataset *again = NULL;
        tr_error_clear(&err);
        if (dcm_json_read(json.data, json.len, ropt, &again, &err) < 0)
            invariant_failed("telerad cannot read JSON it wrote", &err);
        dcm_dataset_free(again);
    }
    tr_buf_release(&json);

    size_t total = 0;
    struct tr_sink discard = {discard_write, &total};
    tr_error_clear(&err);
    (void)dcm_json_write(ds, &(struct dcm_json_options){.flags = DCM_JSON_PRETTY}, &discard,
                         &err);
    tr_error_clear(&err);
    (void)dcm_dataset_write(ds, DCM_UID_ExplicitVRLittleEndian, NULL, &discard, &err);
    tr_error_clear(&err);
    (void)dcm_dump_dataset(ds, 0, &discard, &err);
    use_values(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data;
    struct dcm_json_read_options defaults = {.max_depth = 64};
    struct dcm_json_read_options tight = {.max_depth = 3, .bulk_data = bulk_data};
    const struct dcm_json_read_options *options[] = {&defaults, &tight};

    for (size_t o = 0; o < TR_ARRAY_SIZE(options); o++) {
        struct dcm_dataset *ds = NULL;
        struct tr_error err = TR_ERROR_INIT;
        if (dcm_json_read(json, size, options[o], &ds, &err) == 0) {
            round_trip(ds, options[o]);
            dcm_dataset_free(ds);
        } else if (!err.code || !err.message[0]) {
            invariant_failed("a failed read set no message", NULL);
        }
    }

    struct dcm_dataset **list = NULL;
    size_t count = 0;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_json_read_array(json, size, NULL, &list, &count, &err) == 0) {
        for (size_t i = 0; i < count; i++) {
            round_trip(list[i], &defaults);
            dcm_dataset_free(list[i]);
        }
        tr_free(list);
    } else if (!err.code || !err.message[0]) {
        invariant_failed("a failed array read set no message", NULL);
    }
    return 0;
}
