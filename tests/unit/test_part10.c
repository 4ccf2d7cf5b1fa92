/*
 * test_part10.c - Part 10 reading and writing: every VR through every uncompressed transfer
 * syntax, sequences, encapsulated pixel data, header-only reads, bare data sets, limits, and
 * clean errors for truncated input and failed allocations.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <unistd.h>

#include "common.h"
#include "dcm.h"

static const char *const syntaxes[] = {
    DCM_UID_ExplicitVRLittleEndian,
    DCM_UID_ImplicitVRLittleEndian,
    DCM_UID_ExplicitVRBigEndian,
    DCM_UID_DeflatedExplicitVRLittleEndian,
};

static char *json_of(const struct dcm_dataset *ds)
{
    struct tr_buf b;
    tr_buf_init(&b, 1 << 24);
    struct tr_sink s = tr_sink_buf(&b);
    struct tr_error err = TR_ERROR_INIT;
    int rc = dcm_json_write(ds, NULL, &s, &err);
    if (rc)
        fail_msg("json: %s", err.message);
    return tr_buf_detach(&b, NULL);
}

/* A data set with one attribute of each of the 34 VRs (public tags of that VR, so that implicit
 * VR reads them back with the same VR), a nested sequence and native pixel data. */
static struct dcm_dataset *sample_dataset(void)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_dataset_set_string(ds, DCM_TAG_SpecificCharacterSet, 0, "ISO_IR 192"), 0);
    assert_int_equal(dcm_dataset_set_uid(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.7"), 0);
    assert_int_equal(dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, "1.2.3.4.5.6"), 0);
    static const struct {
        uint32_t tag;
        const char *value;
    } strings[] = {
                {0x00400241, "STATION_AE"},            /* AE PerformedStationAETitle */
        {0x00101010, "042Y"},                  /* AS PatientAge */
        {0x00080060, "OT"},                    /* CS Modality */
        {0x00080020, "20261122"},              /* DA StudyDate */
        {0x00281050, "40\\-1.5e2"},            /* DS WindowCenter */
        {0x0008002A, "20261122101500.123456"}, /* DT AcquisitionDateTime */
        {0x00200013, "7"},                     /* IS InstanceNumber */
        {0x00081030, "CT HEAD Ü"},             /* LO StudyDescription */
        {0x00204000, "line one\r\nline two"},  /* LT ImageComments */
        {0x00100010, "Doe^Jane=独^简=ドウ^ジェーン"}, /* PN PatientName */
        {0x00080050, "ACC-1"},                 /* SH AccessionNumber */
        {0x00081080, "odd\\length"},           /* LO AdmittingDiagnosesDescription */
        {0x0040A160, "short text"},            /* UT TextValue */
        {0x00080030, "101500.5"},              /* TM StudyTime */
                {0x00080120, "https://example.org/x"}, /* UR CodingSchemeURL */
        {0x00321066, "Short text ST"},         /* UT ReasonForVisit */
        {0x00081195, "1.2.3"},                 /* UI TransactionUID */
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(strings); i++) {
        assert_true(dcm_vr_is_string(dcm_dict_vr(strings[i].tag)));
        int rc = dcm_dataset_set_string(ds, strings[i].tag, DCM_VR_NONE, strings[i].value);
        if (rc)
            fail_msg("set (%08X) %s: %d", strings[i].tag, strings[i].value, rc);
    }
    assert_int_equal(dcm_dataset_set_string(ds, 0x00080105, DCM_VR_NONE, "DCMR"), 0); /* CS */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00181030, DCM_VR_NONE, "proto"), 0);
    assert_int_equal(dcm_dataset_set_string(ds, 0x0018A003, DCM_VR_ST, "an ST value"), 0);
    assert_int_equal(dcm_dataset_set_string(ds, 0x00080119, DCM_VR_UC, "a UC value"), 0);
    assert_int_equal(dcm_dataset_set_tag(ds, 0x00209165, 0x00200032), 0);            /* AT */
    assert_int_equal(dcm_dataset_set_float(ds, 0x00189087, DCM_VR_FD, 1.0 / 3), 0);   /* FD */
    assert_int_equal(dcm_dataset_set_float(ds, 0x00186028, DCM_VR_FD, -2.5), 0);
    assert_int_equal(dcm_dataset_set_float(ds, 0x00189327, DCM_VR_FD, 0.25), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00181149, DCM_VR_NONE, 250), 0);        /* IS */
    assert_int_equal(dcm_dataset_set_float(ds, 0x00189306, DCM_VR_FD, 12.5), 0);
    assert_int_equal(dcm_dataset_set_float(ds, 0x00189307, DCM_VR_FD, -0.125), 0);
    assert_int_equal(dcm_dataset_set_float(ds, 0x00109431, DCM_VR_FL, 2.5), 0);       /* FL */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280010, DCM_VR_NONE, 2), 0);        /* US */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280011, DCM_VR_NONE, 3), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280100, DCM_VR_NONE, 16), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280101, DCM_VR_NONE, 12), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280102, DCM_VR_NONE, 11), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280103, DCM_VR_NONE, 1), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00280002, DCM_VR_NONE, 1), 0);
    assert_int_equal(dcm_dataset_set_int(ds, 0x00189219, DCM_VR_SS, -7), 0);          /* SS */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00186020, DCM_VR_SL, -70000), 0);      /* SL */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00081162, DCM_VR_UL, 4000000000), 0);  /* UL */
    assert_int_equal(dcm_dataset_set_int(ds, 0x00720082, DCM_VR_SV, -5000000000), 0); /* SV */
    assert_int_equal(dcm_dataset_set_int(ds, 0x0008040C, DCM_VR_UV, 5000000000), 0);  /* UV */
    uint8_t bytes[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00420011, DCM_VR_OB, bytes, 6), 0);  /* OB */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00660040, DCM_VR_OL, bytes, 8), 0);  /* OL */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00640009, DCM_VR_OF, bytes, 8), 0);  /* OF */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x7FE00009, DCM_VR_OD, bytes, 8), 0);  /* OD */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00720081, DCM_VR_OV, bytes, 8), 0);  /* OV */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00660022, DCM_VR_OD, bytes, 8), 0);  /* OD */
    assert_int_equal(dcm_dataset_set_bytes(ds, 0x00091001, DCM_VR_UN, bytes, 4), 0);  /* UN */
    assert_int_equal(dcm_dataset_set_string(ds, 0x00090010, DCM_VR_LO, "TELERAD TEST"), 0);
    assert_int_equal(dcm_dataset_set_empty(ds, 0x00100020, DCM_VR_NONE), 0);
    /* Sequence, two levels, one item with an empty nested sequence. */
    struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00081115, &err);
    assert_non_null(item);
    assert_int_equal(dcm_dataset_set_uid(item, 0x0020000E, "1.2.3.7"), 0);
    struct dcm_dataset *inner = dcm_dataset_add_item(item, 0x0008114A, &err);
    assert_int_equal(dcm_dataset_set_uid(inner, 0x00081155, "1.2.3.8"), 0);
    assert_int_equal(dcm_dataset_set_sequence(item, 0x00081199), 0);
    assert_non_null(dcm_dataset_add_item(ds, 0x00081115, &err));
    uint8_t pixels[12];
    for (int i = 0; i < 12; i++)
        pixels[i] = (uint8_t)(i * 17);
    assert_int_equal(dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, pixels, 12), 0);
    return ds;
}

static struct dcm_file *file_of(struct dcm_dataset *ds, const char *ts)
{
    struct dcm_file *f = tr_calloc(1, sizeof(*f));
    f->meta = dcm_dataset_new();
    f->dataset = ds;
    f->ts = dcm_ts_lookup(ts);
    return f;
}

static void write_file(const struct dcm_file *f, const char *ts, struct tr_buf *out)
{
    struct dcm_write_options opt;
    dcm_write_options_init(&opt);
    opt.ts_uid = ts;
    struct tr_sink s = tr_sink_buf(out);
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_file_write(f, &opt, &s, &err))
        fail_msg("write %s: %s", ts, err.message);
}

static void test_round_trip_all_syntaxes(void **state)
{
    (void)state;
    struct dcm_dataset *ds = sample_dataset();
    struct dcm_file *f = file_of(ds, DCM_UID_ExplicitVRLittleEndian);
    char *expected = json_of(ds);
    for (size_t i = 0; i < TR_ARRAY_SIZE(syntaxes); i++) {
        struct tr_buf out;
        tr_buf_init(&out, 1 << 24);
        write_file(f, syntaxes[i], &out);
        assert_memory_equal(out.data + 128, "DICM", 4);
        struct dcm_file *g;
        struct tr_error err = TR_ERROR_INIT;
        if (dcm_file_read_memory(out.data, out.len, NULL, &g, &err))
            fail_msg("read back %s: %s", syntaxes[i], err.message);
        assert_string_equal(g->ts->uid, syntaxes[i]);
        char *got = json_of(g->dataset);
        if (strcmp(got, expected) != 0)
            fail_msg("%s changed the data set:\n%s\n%s", syntaxes[i], expected, got);
        /* Writing what was read gives the same bytes (fixpoint). */
        struct tr_buf again;
        tr_buf_init(&again, 1 << 24);
        write_file(g, syntaxes[i], &again);
        assert_int_equal(again.len, out.len);
        assert_memory_equal(again.data, out.data, out.len);
        tr_free(got);
        tr_buf_release(&again);
        dcm_file_free(g);
        tr_buf_release(&out);
    }
    tr_free(expected);
    dcm_file_free(f);
}

static void test_meta_group(void **state)
{
    (void)state;
    struct dcm_file *f = file_of(sample_dataset(), DCM_UID_ExplicitVRLittleEndian);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 24);
    write_file(f, DCM_UID_ImplicitVRLittleEndian, &out);
    struct dcm_file *g;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, NULL, &g, NULL), 0);
    int64_t group_length;
    assert_int_equal(dcm_dataset_get_int(g->meta, 0x00020000, 0, &group_length), 0);
    /* The group length counts the bytes from after its own element to the data set. */
    assert_int_equal((uint64_t)group_length, g->dataset_offset - 132 - 12);
    char uid[65];
    assert_int_equal(dcm_dataset_get_uid(g->meta, 0x00020003, uid, sizeof(uid)), 0);
    assert_string_equal(uid, "1.2.3.4.5.6");
    assert_int_equal(dcm_dataset_get_uid(g->meta, 0x00020012, uid, sizeof(uid)), 0);
    assert_string_equal(uid, DCM_IMPLEMENTATION_CLASS_UID);
    /* Every value has even length. */
    for (size_t i = 0; i < dcm_dataset_count(g->meta); i++)
        assert_int_equal(dcm_dataset_at(g->meta, i)->length % 2, 0);
    dcm_file_free(g);
    tr_buf_release(&out);
    dcm_file_free(f);
}

static void test_encapsulated(void **state)
{
    (void)state;
    /* Build encapsulated pixel data by hand: offset table, two fragments (one odd length). */
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_uid(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.7");
    dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, "1.2.3");
    struct dcm_element e = {.tag = DCM_TAG_PixelData, .vr = DCM_VR_OB,
                            .flags = DCM_ELEM_ENCAPSULATED | DCM_ELEM_UNDEFINED_LENGTH,
                            .length = DCM_UNDEFINED_LENGTH, .offset = DCM_NO_OFFSET};
    struct dcm_element *pe = dcm_dataset_put(ds, &e);
    static const uint8_t bot[4] = {0, 0, 0, 0}, frag1[5] = {0xFF, 0xD8, 1, 2, 3},
                         frag2[2] = {0xFF, 0xD9};
    struct dcm_fragment fr[3] = {{bot, 4, DCM_NO_OFFSET}, {frag1, 5, DCM_NO_OFFSET},
                                 {frag2, 2, DCM_NO_OFFSET}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(dcm_element_append_fragment(ds, pe, &fr[i]), 0);
    struct dcm_file *f = file_of(ds, DCM_UID_JPEGBaseline8Bit);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    struct tr_error err = TR_ERROR_INIT;
    struct tr_sink s = tr_sink_buf(&out);
    assert_int_equal(dcm_file_write(f, NULL, &s, &err), 0);
    struct dcm_file *g;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, NULL, &g, &err), 0);
    assert_string_equal(g->ts->uid, DCM_UID_JPEGBaseline8Bit);
    const struct dcm_element *px = dcm_dataset_get(g->dataset, DCM_TAG_PixelData);
    assert_true(px->flags & DCM_ELEM_ENCAPSULATED);
    assert_int_equal(px->value.fragments.count, 3);
    assert_int_equal(px->value.fragments.fragment[1].length, 6); /* padded to even */
    assert_memory_equal(px->value.fragments.fragment[1].bytes, frag1, 5);
    /* Fragments point into the input: no copy. */
    assert_true(px->value.fragments.fragment[2].bytes > (const uint8_t *)out.data &&
                px->value.fragments.fragment[2].bytes < (const uint8_t *)out.data + out.len);
    /* Compressed pixel data cannot be written uncompressed without a codec. */
    struct dcm_write_options opt;
    dcm_write_options_init(&opt);
    opt.ts_uid = DCM_UID_ExplicitVRLittleEndian;
    struct tr_buf other;
    tr_buf_init(&other, 1 << 20);
    struct tr_sink s2 = tr_sink_buf(&other);
    struct tr_error err2 = TR_ERROR_INIT;
    assert_int_equal(dcm_file_write(g, &opt, &s2, &err2), TR_EUNSUPPORTED);
    assert_non_null(strstr(err2.message, "compressed"));
    tr_buf_release(&other);
    dcm_file_free(g);
    tr_buf_release(&out);
    dcm_file_free(f);
}

static void test_header_only(void **state)
{
    (void)state;
    struct dcm_file *f = file_of(sample_dataset(), DCM_UID_ExplicitVRLittleEndian);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 24);
    write_file(f, DCM_UID_ExplicitVRLittleEndian, &out);
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    struct dcm_file *g;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, &opt, &g, NULL), 0);
    assert_true(g->stopped_before_pixels);
    assert_null(dcm_dataset_get(g->dataset, DCM_TAG_PixelData));
    assert_null(dcm_dataset_get(g->dataset, 0x7FE00009)); /* OD double float pixel data */
    assert_non_null(dcm_dataset_get(g->dataset, 0x00280010));
    /* The offset points at the first pixel data element's tag. */
    assert_int_equal(tr_le16((const uint8_t *)out.data + g->pixel_offset), 0x7FE0);
    dcm_file_free(g);
    tr_buf_release(&out);
    dcm_file_free(f);
}

/* Header-only reads of files first parse a prefix, then map the whole file if the header is
 * longer: both ways must give the same header. */
static void test_header_only_files(void **state)
{
    (void)state;
    for (int big_header = 0; big_header < 2; big_header++) {
        struct dcm_dataset *ds = sample_dataset();
        uint8_t *blob = tr_calloc(1, 40000);
        if (big_header)
            dcm_dataset_set_bytes(ds, 0x00091002, DCM_VR_OB, blob, 40000);
        else
            dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OW, blob, 40000);
        tr_free(blob);
        struct dcm_file *f = file_of(ds, DCM_UID_ExplicitVRLittleEndian);
        char path[] = "/tmp/telerad-test-XXXXXX";
        int fd = mkstemp(path);
        assert_true(fd >= 0);
        close(fd);
        struct tr_error err = TR_ERROR_INIT;
        assert_int_equal(dcm_file_write_path(f, NULL, path, &err), 0);
        struct dcm_read_options opt;
        dcm_read_options_init(&opt);
        opt.header_only = true;
        struct dcm_file *g;
        assert_int_equal(dcm_file_read(path, &opt, &g, &err), 0);
        assert_true(g->stopped_before_pixels);
        assert_non_null(dcm_dataset_get(g->dataset, 0x00280010));
        if (big_header)
            assert_int_equal(dcm_dataset_get(g->dataset, 0x00091002)->length, 40000);
        char *a = NULL, *b = NULL;
        struct dcm_file *full;
        assert_int_equal(dcm_file_read(path, NULL, &full, &err), 0);
        assert_int_equal(g->size, full->size);
        dcm_dataset_remove(full->dataset, DCM_TAG_PixelData);
        dcm_dataset_remove(full->dataset, 0x7FE00009);
        a = json_of(g->dataset);
        b = json_of(full->dataset);
        assert_string_equal(a, b);
        tr_free(a);
        tr_free(b);
        dcm_file_free(full);
        dcm_file_free(g);
        /* A file cut inside the header (inside the 40,000-byte private value, past the
         * prefix) is still refused, with the real message. */
        if (big_header) {
            assert_int_equal(truncate(path, 20000), 0);
            tr_error_clear(&err);
            assert_int_equal(dcm_file_read(path, &opt, &g, &err), TR_ETRUNCATED);
            assert_non_null(strstr(err.message, "(0009,1002)"));
        }
        unlink(path);
        dcm_file_free(f);
    }
}

/* The bytes of the file at `path`. */
static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    struct tr_buf b;
    tr_buf_init(&b, 1 << 26);
    uint8_t chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        assert_int_equal(tr_buf_add(&b, chunk, n), 0);
    fclose(f);
    return (uint8_t *)tr_buf_detach(&b, len);
}

static int temp_file(char *path, int flags)
{
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    if (flags) {
        close(fd);
        fd = open(path, O_WRONLY | O_TRUNC | flags);
        assert_true(fd >= 0);
    }
    return fd;
}

/* Write `f` to a file, read it back through a descriptor, and check that dcm_file_write_fd
 * gives dcm_file_write's bytes: with and without the source descriptor, and to an O_APPEND
 * output (where copy_file_range refuses: written instead). With `abuse`, also that the copy
 * really comes from the source descriptor, and that a source cut short after it was mapped
 * is a clean error. */
static void check_write_fd(struct dcm_file *f, const char *label, bool abuse)
{
    char src_path[] = "/tmp/telerad-test-src-XXXXXX";
    close(temp_file(src_path, 0));
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_file_write_path(f, NULL, src_path, &err), 0);
    int src = open(src_path, O_RDONLY);
    assert_true(src >= 0);
    struct dcm_file *g;
    assert_int_equal(dcm_file_read_fd(src, NULL, &g, &err), 0);
    struct tr_buf want;
    tr_buf_init(&want, 1 << 26);
    struct tr_sink sink = tr_sink_buf(&want);
    assert_int_equal(dcm_file_write(g, NULL, &sink, &err), 0);
    size_t src_len;
    uint8_t *src_bytes = slurp(src_path, &src_len);
    assert_int_equal(src_len, want.len); /* read and written again: the same file */
    assert_memory_equal(src_bytes, want.data, want.len);
    tr_free(src_bytes);

    static const int flags[] = {0, O_APPEND};
    for (int source = 0; source < 2; source++) {
        for (size_t k = 0; k < TR_ARRAY_SIZE(flags); k++) {
            char out_path[] = "/tmp/telerad-test-out-XXXXXX";
            int out = temp_file(out_path, flags[k]);
            uint64_t size = 0;
            tr_error_clear(&err);
            if (dcm_file_write_fd(g, NULL, out, source ? src : -1, &size, &err))
                fail_msg("%s: %s", label, err.message);
            close(out);
            size_t got_len;
            uint8_t *got = slurp(out_path, &got_len);
            assert_int_equal(got_len, want.len);
            assert_int_equal(size, want.len);
            assert_memory_equal(got, want.data, want.len);
            tr_free(got);
            unlink(out_path);
        }
    }
    if (abuse) {
        /* Another file of the same length whose bytes differ (which the API forbids): the
         * copied ranges differ, so they were copied from it. */
        char other_path[] = "/tmp/telerad-test-other-XXXXXX";
        int other = temp_file(other_path, 0);
        uint8_t *zeros = tr_calloc(1, want.len);
        assert_int_equal(write(other, zeros, want.len), (ssize_t)want.len);
        tr_free(zeros);
        char out_path[] = "/tmp/telerad-test-out-XXXXXX";
        int out = temp_file(out_path, 0);
        assert_int_equal(dcm_file_write_fd(g, NULL, out, other, NULL, &err), 0);
        close(out);
        close(other);
        size_t got_len;
        uint8_t *got = slurp(out_path, &got_len);
        assert_int_equal(got_len, want.len);
        assert_memory_not_equal(got, want.data, want.len);
        tr_free(got);
        unlink(out_path);
        unlink(other_path);
        /* The source cut short after it was mapped. */
        assert_int_equal(truncate(src_path, 4096), 0);
        char out2_path[] = "/tmp/telerad-test-out-XXXXXX";
        out = temp_file(out2_path, 0);
        tr_error_clear(&err);
        assert_int_equal(dcm_file_write_fd(g, NULL, out, src, NULL, &err), TR_EIO);
        assert_non_null(strstr(err.message, "changed"));
        close(out);
        unlink(out2_path);
    }
    tr_buf_release(&want);
    dcm_file_free(g);
    close(src);
    unlink(src_path);
}

/* dcm_file_write_fd copies the large values still in the source (in the kernel) and writes
 * everything else: the output is dcm_file_write's, in every transfer syntax (big endian
 * swaps and deflate compresses: those values are written, not copied) and with large
 * fragments of encapsulated pixel data. */
static void test_write_fd_copy(void **state)
{
    (void)state;
    size_t pixels_len = 300001, private_len = 70000; /* odd: padded on the way out */
    uint8_t *pixels = tr_malloc(pixels_len), *private_value = tr_malloc(private_len);
    for (size_t i = 0; i < pixels_len; i++)
        pixels[i] = (uint8_t)(i * 7 + i / 251);
    for (size_t i = 0; i < private_len; i++)
        private_value[i] = (uint8_t)(i * 13);
    for (size_t t = 0; t < TR_ARRAY_SIZE(syntaxes); t++) {
        struct dcm_dataset *ds = sample_dataset();
        assert_int_equal(
            dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OB, pixels, pixels_len), 0);
        assert_int_equal(
            dcm_dataset_set_bytes(ds, 0x00091002, DCM_VR_OB, private_value, private_len), 0);
        struct dcm_file *f = file_of(ds, syntaxes[t]);
        check_write_fd(f, syntaxes[t],
                       strcmp(syntaxes[t], DCM_UID_ExplicitVRLittleEndian) == 0);
        dcm_file_free(f);
    }
    struct dcm_dataset *ds = dcm_dataset_new();
    assert_int_equal(dcm_dataset_set_uid(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.7"),
                     0);
    assert_int_equal(dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, "1.2.3"), 0);
    struct dcm_element e = {.tag = DCM_TAG_PixelData, .vr = DCM_VR_OB,
                            .flags = DCM_ELEM_ENCAPSULATED | DCM_ELEM_UNDEFINED_LENGTH,
                            .length = DCM_UNDEFINED_LENGTH, .offset = DCM_NO_OFFSET};
    struct dcm_element *pe = dcm_dataset_put(ds, &e);
    static const uint8_t bot[4] = {0};
    struct dcm_fragment fr[3] = {{bot, 4, DCM_NO_OFFSET},
                                 {pixels, (uint32_t)pixels_len, DCM_NO_OFFSET},
                                 {private_value, (uint32_t)private_len, DCM_NO_OFFSET}};
    for (int i = 0; i < 3; i++)
        assert_int_equal(dcm_element_append_fragment(ds, pe, &fr[i]), 0);
    struct dcm_file *f = file_of(ds, DCM_UID_JPEGBaseline8Bit);
    check_write_fd(f, "encapsulated", true);
    dcm_file_free(f);
    tr_free(pixels);
    tr_free(private_value);
}

static void test_bare_dataset(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_string(ds, 0x00080060, DCM_VR_NONE, "CT");
    dcm_dataset_set_string(ds, 0x00100010, DCM_VR_NONE, "Doe^Jane");
    for (size_t i = 0; i < 3; i++) {
        struct tr_buf out;
        tr_buf_init(&out, 1 << 20);
        struct tr_sink s = tr_sink_buf(&out);
        assert_int_equal(dcm_dataset_write(ds, syntaxes[i], NULL, &s, NULL), 0);
        struct dcm_file *g;
        struct tr_error err = TR_ERROR_INIT;
        /* Refused by default, with a hint. */
        assert_int_equal(dcm_file_read_memory(out.data, out.len, NULL, &g, &err), TR_EFORMAT);
        assert_non_null(strstr(err.message, "--force"));
        /* Read, with its encoding detected, when allowed. */
        struct dcm_read_options opt;
        dcm_read_options_init(&opt);
        opt.allow_no_meta = true;
        assert_int_equal(dcm_file_read_memory(out.data, out.len, &opt, &g, &err), 0);
        assert_true(g->ts_detected);
        assert_string_equal(g->ts->uid, syntaxes[i]);
        char buf[32];
        assert_int_equal(dcm_dataset_get_string(g->dataset, 0x00100010, 0, buf, 32), 8);
        dcm_file_free(g);
        /* And as a DIMSE data set with a known transfer syntax. */
        struct dcm_dataset *back;
        assert_int_equal(dcm_dataset_read(out.data, out.len, syntaxes[i], NULL, 0, &back, &err),
                         0);
        assert_int_equal(dcm_dataset_count(back), 2);
        dcm_dataset_free(back);
        tr_buf_release(&out);
    }
    dcm_dataset_free(ds);
}

/* Nesting deeper than max_depth: a clean error naming the limit. */
static void test_depth_limit(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    struct dcm_dataset *cur = ds;
    for (int i = 0; i < 100; i++)
        cur = dcm_dataset_add_item(cur, 0x00081115, NULL);
    struct dcm_file *f = file_of(ds, DCM_UID_ExplicitVRLittleEndian);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 24);
    write_file(f, DCM_UID_ExplicitVRLittleEndian, &out);
    struct dcm_file *g;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, NULL, &g, &err), TR_ELIMIT);
    assert_non_null(strstr(err.message, "deeper than 64"));
    assert_non_null(strstr(err.message, "at byte"));
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.max_depth = 200;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, &opt, &g, &err), 0);
    dcm_file_free(g);
    tr_buf_release(&out);
    dcm_file_free(f);
}

/* Every prefix of a valid file is refused cleanly (or, cut between elements at the top level,
 * read as the shorter data set it is); never a crash, always a message with a byte offset. */
static void test_truncation(void **state)
{
    (void)state;
    struct dcm_file *f = file_of(sample_dataset(), DCM_UID_ExplicitVRLittleEndian);
    for (size_t t = 0; t < 2; t++) {
        struct tr_buf out;
        tr_buf_init(&out, 1 << 24);
        write_file(f, syntaxes[t], &out);
        for (size_t len = 0; len < out.len; len++) {
            uint8_t *copy = tr_malloc(len + 1); /* exact size: ASan catches any overread */
            memcpy(copy, out.data, len);
            struct dcm_file *g = NULL;
            struct tr_error err = TR_ERROR_INIT;
            int rc = dcm_file_read_memory(copy, len, NULL, &g, &err);
            if (rc) {
                assert_true(err.code == rc);
                assert_true(strlen(err.message) > 0);
            } else {
                dcm_file_free(g);
            }
            tr_free(copy);
        }
        tr_buf_release(&out);
    }
    dcm_file_free(f);
}

static void test_huge_lengths(void **state)
{
    (void)state;
    /* (0010,0010) LO with length 0xFFFE claims more bytes than the file has. */
    static const uint8_t explicit_bad[] = {0x08, 0x00, 0x60, 0x00, 'C', 'S', 2, 0, 'C', 'T',
                                           0x10, 0x00, 0x10, 0x00, 'P', 'N', 0xFE, 0xFF, 'X', 'Y'};
    struct dcm_dataset *ds;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_dataset_read(explicit_bad, sizeof(explicit_bad),
                                      DCM_UID_ExplicitVRLittleEndian, NULL, 0, &ds, &err),
                     TR_ETRUNCATED);
    assert_non_null(strstr(err.message, "at byte 10"));
    assert_non_null(strstr(err.message, "(0010,0010)"));
    /* Implicit, length 0xFFFFFFF0. */
    static const uint8_t implicit_bad[] = {0x10, 0x00, 0x20, 0x00, 0xF0, 0xFF, 0xFF, 0xFF, 'A'};
    tr_error_clear(&err);
    assert_int_equal(dcm_dataset_read(implicit_bad, sizeof(implicit_bad),
                                      DCM_UID_ImplicitVRLittleEndian, NULL, 0, &ds, &err),
                     TR_ETRUNCATED);
    /* Undefined length on a plain element without a delimiter. */
    static const uint8_t undefined[] = {0x10, 0x00, 0x20, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 'A', 'B'};
    tr_error_clear(&err);
    assert_true(dcm_dataset_read(undefined, sizeof(undefined), DCM_UID_ImplicitVRLittleEndian,
                                 NULL, 0, &ds, &err) < 0);
}

/* An element in group FFFE that is not an item or delimiter has no VR in any encoding; the
 * writer once counted a 12-byte explicit header for it and wrote 8 (found by fuzz_part10). */
static void test_group_fffe_element(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_uid(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.7");
    dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, "1.2.3");
    struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00081115, NULL);
    dcm_dataset_set_bytes(item, 0xFFFE0001, DCM_VR_UN, "abcd", 4);
    dcm_dataset_set_uid(item, 0x0020000E, "1.2.3.4");
    struct dcm_write_options opt;
    dcm_write_options_init(&opt);
    opt.defined_lengths = true;
    struct dcm_file *f = file_of(ds, DCM_UID_ExplicitVRLittleEndian);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    struct tr_sink s = tr_sink_buf(&out);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_file_write(f, &opt, &s, &err), 0);
    struct dcm_file *g;
    if (dcm_file_read_memory(out.data, out.len, NULL, &g, &err))
        fail_msg("re-read: %s", err.message);
    const struct dcm_element *seq = dcm_dataset_get(g->dataset, 0x00081115);
    assert_non_null(seq);
    assert_int_equal(dcm_element_item_count(seq), 1);
    char uid[65];
    assert_int_equal(dcm_dataset_get_uid(dcm_element_item(seq, 0), 0x0020000E, uid, 65), 0);
    assert_string_equal(uid, "1.2.3.4");
    dcm_file_free(g);
    tr_buf_release(&out);
    dcm_file_free(f);
}

static void test_deflate_limit(void **state)
{
    (void)state;
    struct dcm_dataset *ds = dcm_dataset_new();
    dcm_dataset_set_uid(ds, DCM_TAG_SOPClassUID, "1.2.840.10008.5.1.4.1.1.7");
    dcm_dataset_set_uid(ds, DCM_TAG_SOPInstanceUID, "1.2.3");
    uint8_t *zeros = tr_calloc(1, 1 << 20);
    dcm_dataset_set_bytes(ds, DCM_TAG_PixelData, DCM_VR_OB, zeros, 1 << 20);
    tr_free(zeros);
    struct dcm_file *f = file_of(ds, DCM_UID_DeflatedExplicitVRLittleEndian);
    struct tr_buf out;
    tr_buf_init(&out, 1 << 24);
    write_file(f, DCM_UID_DeflatedExplicitVRLittleEndian, &out);
    assert_true(out.len < 20000); /* 1 MiB of zeros deflates well */
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.max_inflated_size = 100000;
    struct dcm_file *g;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_file_read_memory(out.data, out.len, &opt, &g, &err), TR_ELIMIT);
    assert_non_null(strstr(err.message, "limit"));
    dcm_read_options_init(&opt);
    assert_int_equal(dcm_file_read_memory(out.data, out.len, &opt, &g, &err), 0);
    assert_int_equal(dcm_dataset_get(g->dataset, DCM_TAG_PixelData)->length, 1 << 20);
    dcm_file_free(g);
    tr_buf_release(&out);
    dcm_file_free(f);
}

static void test_read_allocation_failures(void **state)
{
    (void)state;
    struct dcm_file *f = file_of(sample_dataset(), DCM_UID_ExplicitVRLittleEndian);
    for (size_t t = 0; t < TR_ARRAY_SIZE(syntaxes); t++) {
        struct tr_buf out;
        tr_buf_init(&out, 1 << 24);
        write_file(f, syntaxes[t], &out);
        bool succeeded = false;
        for (long n = 0; n < 5000 && !succeeded; n++) {
            struct dcm_file *g = NULL;
            struct tr_error err = TR_ERROR_INIT;
            tr_alloc_fail_after(n);
            int rc = dcm_file_read_memory(out.data, out.len, NULL, &g, &err);
            unsigned long injected = tr_alloc_failures();
            tr_alloc_fail_after(-1);
            if (injected == 0) {
                assert_int_equal(rc, 0);
                succeeded = true;
            } else {
                assert_int_equal(rc, TR_ENOMEM);
            }
            dcm_file_free(g);
        }
        assert_true(succeeded);
        tr_buf_release(&out);
    }
    dcm_file_free(f);
}

static void test_file_errors(void **state)
{
    (void)state;
    struct dcm_file *g;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(dcm_file_read("/nonexistent/file.dcm", NULL, &g, &err), TR_ENOTFOUND);
    tr_error_clear(&err);
    assert_int_equal(dcm_file_read("/", NULL, &g, &err), TR_EINVAL);
    assert_non_null(strstr(err.message, "directory"));
    tr_error_clear(&err);
    static const char text[] = "this is not a DICOM file, just some text";
    assert_int_equal(dcm_file_read_memory(text, sizeof(text), NULL, &g, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "DICM"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_all_syntaxes),
        cmocka_unit_test(test_meta_group),
        cmocka_unit_test(test_encapsulated),
        cmocka_unit_test(test_header_only),
        cmocka_unit_test(test_header_only_files),
        cmocka_unit_test(test_write_fd_copy),
        cmocka_unit_test(test_bare_dataset),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_huge_lengths),
        cmocka_unit_test(test_group_fffe_element),
        cmocka_unit_test(test_deflate_limit),
        cmocka_unit_test(test_read_allocation_failures),
        cmocka_unit_test(test_file_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
