/*
 * fuzz_part10.c - libFuzzer target for the Part 10 reader (PS3.10 7.1, PS3.5 7, A.1-A.5) and
 * everything that reads the values it produces.
 *
 * Each input is read as a DICOM file with several option sets (the CLI's defaults, a bare data
 * set, header only, a small nesting limit, a small inflate cap) and as a bare data set in each
 * uncompressed transfer syntax. Whatever reads successfully is then used the way the rest of
 * telerad uses it: converted to DICOM JSON, dumped, walked with every typed getter, copied and
 * converted to UTF-8, and written back as a Part 10 file that must read again.
 *
 * Invariant checked with abort(): a data set telerad read and then wrote in Explicit VR Little
 * Endian reads again. Explicit VR LE is the one encoding in which the writer's output cannot be
 * misread by the reader's encoding detection (an implicit VR data set whose first value length
 * looks like two upper-case letters is, by design, taken for explicit VR, as pydicom does). A
 * write may fail legitimately: compressed pixel data cannot be written uncompressed
 * (TR_EUNSUPPORTED), a meta UID copied from the data set may be invalid for its VR (TR_EINVAL),
 * and the output is capped (TR_ELIMIT).
 *
 * Build: CC=clang cmake -S . -B build-fuzz -DTELERAD_FUZZ=ON && cmake --build build-fuzz
 * Run:   fuzz/run.sh build-fuzz 300   (or see the top of fuzz/run.sh for longer campaigns)
 */
#include "common.h"
#include "dcm.h"

#include <stdio.h>
#include <stdlib.h>

#define WRITE_CAP ((size_t)64 << 20) /* bytes of re-encoded output kept for the re-read */
#define MAX_VALUES 16                /* values per element passed through the getters */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ---- sinks ------------------------------------------------------------------------------- */

static volatile uint8_t discarded; /* keeps the reads below from being optimised away */

static int discard_write(void *ctx, const void *p, size_t n)
{
    /* Touch every byte so that ASan sees reads of freed or out-of-bounds output. */
    const uint8_t *b = p;
    size_t *total = ctx;
    uint8_t x = 0;
    for (size_t i = 0; i < n; i++)
        x ^= b[i];
    discarded ^= x;
    *total += n;
    return 0;
}

static int fake_bulk_uri(void *ctx, const struct dcm_dataset *ds, const struct dcm_element *e,
                         struct tr_buf *out)
{
    (void)ctx;
    (void)ds;
    /* Every other value inline, to cover both answers. */
    if (e->tag & 1)
        return 1;
    return tr_buf_addf(out, "https://example.invalid/bulk/%08X", (unsigned)e->tag);
}

/* Triage: with FUZZ_SAVE_WRITTEN=PATH in the environment, the file that could not be read
 * again is saved there (then `telerad dump PATH` shows where it goes wrong). */
static void save_for_triage(const void *data, size_t len)
{
    const char *path = getenv("FUZZ_SAVE_WRITTEN");
    FILE *f = path ? fopen(path, "wb") : NULL;
    if (!f)
        return;
    fwrite(data, 1, len, f);
    fclose(f);
    fprintf(stderr, "fuzz_part10: the written file is in %s\n", path);
}

/* Stop with a message the fuzzer's report will show. */
static void invariant_failed(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "fuzz_part10: invariant failed: %s: %s\n", what,
            err && err->code ? err->message : "(no message)");
    abort();
}

/* ---- walking the data set ---------------------------------------------------------------- */

static void use_values(const struct dcm_dataset *ds)
{
    struct tr_buf text;
    tr_buf_init(&text, 1 << 20);
    (void)dcm_dataset_charset(ds);
    (void)dcm_dataset_depth(ds);
    (void)dcm_dataset_parent(ds);
    size_t n = dcm_dataset_count(ds);
    for (size_t i = 0; i < n; i++) {
        const struct dcm_element *e = dcm_dataset_at(ds, i);
        if (dcm_dataset_get(ds, e->tag) != e)
            invariant_failed("dcm_dataset_get does not find an element of the data set", NULL);
        unsigned vm = dcm_element_vm(e);
        (void)dcm_element_is_empty(e);
        if (e->vr == DCM_VR_SQ) {
            unsigned items = dcm_element_item_count(e);
            for (unsigned k = 0; k < items; k++) {
                const struct dcm_dataset *item = dcm_element_item(e, k);
                if (!item)
                    invariant_failed("a sequence item is NULL", NULL);
                use_values(item);
            }
            (void)dcm_element_item(e, items);
            continue;
        }
        tr_buf_reset(&text);
        (void)dcm_element_get_string(ds, e, DCM_ALL_VALUES, &text);
        unsigned values = TR_MIN(vm, (unsigned)MAX_VALUES) + 1; /* one past the last, too */
        for (unsigned k = 0; k < values; k++) {
            int64_t i64;
            uint64_t u64;
            double d;
            uint32_t tag;
            tr_buf_reset(&text);
            (void)dcm_element_get_string(ds, e, k, &text);
            (void)dcm_element_get_int(e, k, &i64);
            (void)dcm_element_get_uint(e, k, &u64);
            (void)dcm_element_get_float(e, k, &d);
            (void)dcm_element_get_tag(e, k, &tag);
        }
        char small[80];
        (void)dcm_dataset_get_string(ds, e->tag, 0, small, sizeof(small));
        char *whole = dcm_dataset_get_text(ds, e->tag, NULL);
        tr_free(whole);
        int64_t i64;
        double d;
        char uid[DCM_UID_MAX + 1];
        (void)dcm_dataset_get_int(ds, e->tag, 0, &i64);
        (void)dcm_dataset_get_float(ds, e->tag, 0, &d);
        (void)dcm_dataset_get_uid(ds, e->tag, uid, sizeof(uid));
    }
    tr_buf_release(&text);
}

static void to_json(const struct dcm_dataset *ds, unsigned flags, bool bulk)
{
    size_t total = 0;
    struct tr_sink sink = {discard_write, &total};
    struct dcm_json_options jopt = {.flags = flags};
    if (bulk) {
        jopt.bulk_threshold = 16;
        jopt.bulk_uri = fake_bulk_uri;
    }
    struct tr_error err = TR_ERROR_INIT;
    (void)dcm_json_write(ds, &jopt, &sink, &err);
}

static void copy_and_convert(const struct dcm_dataset *ds)
{
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_dataset *copy = dcm_dataset_copy(ds, &err);
    if (!copy)
        return;
    tr_error_clear(&err);
    if (dcm_dataset_convert_to_utf8(copy, &err) == 0)
        to_json(copy, DCM_JSON_SKIP_GROUP_LENGTH, false);
    dcm_dataset_free(copy);
}

/* Write `f` as Part 10 in `ts_uid` (NULL: its own) and read the output again. */
static void write_and_reread(const struct dcm_file *f, const char *ts_uid, bool defined_lengths,
                             const struct dcm_read_options *ropt, bool must_reread)
{
    struct tr_buf out;
    tr_buf_init(&out, WRITE_CAP);
    struct tr_sink sink = tr_sink_buf(&out);
    struct dcm_write_options wopt;
    dcm_write_options_init(&wopt);
    wopt.ts_uid = ts_uid;
    wopt.defined_lengths = defined_lengths;
    wopt.deflate_level = 1;
    struct tr_error err = TR_ERROR_INIT;
    int rc = dcm_file_write(f, &wopt, &sink, &err);
    if (rc < 0) {
        if (rc != TR_EUNSUPPORTED && rc != TR_EINVAL && rc != TR_ELIMIT)
            invariant_failed("dcm_file_write failed with an unexpected code", &err);
        goto out;
    }
    struct dcm_read_options again = *ropt;
    again.allow_no_meta = false;
    again.header_only = false;
    struct dcm_file *g = NULL;
    tr_error_clear(&err);
    rc = dcm_file_read_memory(out.data, out.len, &again, &g, &err);
    if (rc < 0) {
        if (must_reread) {
            save_for_triage(out.data, out.len);
            invariant_failed("telerad cannot read a file it wrote", &err);
        }
        goto out;
    }
    /* The re-read file must be usable the same way. */
    to_json(g->dataset, 0, false);
    dcm_file_free(g);
out:
    tr_buf_release(&out);
}

static void use_file(const struct dcm_file *f, const struct dcm_read_options *ropt, bool full)
{
    if (!f->ts || !f->meta || !f->dataset)
        invariant_failed("a file read successfully lacks its transfer syntax or data sets", NULL);
    size_t total = 0;
    struct tr_sink sink = {discard_write, &total};
    struct tr_error err = TR_ERROR_INIT;
    (void)dcm_dump_file(f, 0, &sink, &err);
    to_json(f->dataset, DCM_JSON_SKIP_META, false);
    if (!full)
        return;
    tr_error_clear(&err);
    (void)dcm_dump_file(f, DCM_DUMP_FULL_VALUES, &sink, &err);
    to_json(f->dataset, DCM_JSON_PRETTY | DCM_JSON_SKIP_GROUP_LENGTH, true);
    to_json(f->meta, 0, false);
    use_values(f->meta);
    use_values(f->dataset);
    copy_and_convert(f->dataset);
    if (!f->stopped_before_pixels) {
        write_and_reread(f, DCM_UID_ExplicitVRLittleEndian, false, ropt, true);
        write_and_reread(f, DCM_UID_ExplicitVRLittleEndian, true, ropt, true);
        /* In its own transfer syntax the re-read may legitimately differ (see the top). */
        write_and_reread(f, NULL, false, ropt, false);
    }
}

/* ---- entry point ------------------------------------------------------------------------- */

static void read_file(const uint8_t *data, size_t size, const struct dcm_read_options *opt,
                      bool full)
{
    struct dcm_file *f = NULL;
    struct tr_error err = TR_ERROR_INIT;
    int rc = dcm_file_read_memory(data, size, opt, &f, &err);
    if (rc < 0) {
        if (f)
            invariant_failed("a failed read returned a file", &err);
        if (!err.code || !err.message[0])
            invariant_failed("a failed read set no message", NULL);
        return;
    }
    use_file(f, opt, full);
    dcm_file_free(f);
}

static void read_dataset(const uint8_t *data, size_t size, const char *ts_uid)
{
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    struct dcm_dataset *ds = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_dataset_read(data, size, ts_uid, &opt, 1000, &ds, &err) < 0) {
        if (!err.code || !err.message[0])
            invariant_failed("a failed data set read set no message", NULL);
        return;
    }
    use_values(ds);
    to_json(ds, 0, false);
    size_t total = 0;
    struct tr_sink sink = {discard_write, &total};
    tr_error_clear(&err);
    (void)dcm_dump_dataset(ds, 0, &sink, &err);
    tr_error_clear(&err);
    (void)dcm_dataset_write(ds, ts_uid, NULL, &sink, &err);
    dcm_dataset_free(ds);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct dcm_read_options opt;

    /* The CLI's defaults: a Part 10 file. */
    dcm_read_options_init(&opt);
    read_file(data, size, &opt, true);

    /* A bare data set (telerad dump --force); the same as above when "DICM" is there. */
    bool has_prefix = size >= 132 && memcmp(data + 128, "DICM", 4) == 0;
    opt.allow_no_meta = true;
    if (!has_prefix)
        read_file(data, size, &opt, true);

    opt.header_only = true;
    read_file(data, size, &opt, false);

    dcm_read_options_init(&opt);
    opt.allow_no_meta = true;
    opt.max_depth = 2;
    read_file(data, size, &opt, false);

    /* A tight inflate cap: the error path of a deflate bomb. */
    static const char deflated[] = DCM_UID_DeflatedExplicitVRLittleEndian;
    if (memmem(data, size, deflated, sizeof(deflated) - 1)) {
        dcm_read_options_init(&opt);
        opt.allow_no_meta = true;
        opt.max_inflated_size = 4096;
        read_file(data, size, &opt, false);
    }

    /* Bare data sets, as a DIMSE message carries them. */
    read_dataset(data, size, DCM_UID_ImplicitVRLittleEndian);
    read_dataset(data, size, DCM_UID_ExplicitVRLittleEndian);
    read_dataset(data, size, DCM_UID_ExplicitVRBigEndian);
    return 0;
}
