/*
 * cmd_convert.c - `telerad convert IN OUT`: read a DICOM file and write it again, in its own
 * transfer syntax or another one (like DCMTK's dcmconv, and dcmcjpls/dcmdrle... for the pixel
 * data: a change of compression decodes every frame and encodes it again, see pixel.h).
 */
#include "cli.h"
#include "common.h"
#include "dcm.h"
#include "pixel.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>

static const char convert_help[] =
    "usage: telerad convert [options] IN OUT\n"
    "\n"
    "Read the DICOM file IN and write it to OUT as a conformant Part 10 file: a fresh file\n"
    "meta information group, values padded to even length, group lengths recomputed. The\n"
    "transfer syntax is IN's own unless --ts says otherwise. When the pixel data's compression\n"
    "changes, every frame is decoded and encoded again (PhotometricInterpretation and\n"
    "PlanarConfiguration follow the codec); lossy targets need --lossy.\n"
    "\n"
    "options:\n"
    "  -t, --ts SYNTAX       implicit | explicit | big | deflated (uncompressed), rle,\n"
    "                        jpeg-lossless (SV1), jpegls (lossless), j2k (lossless), jpeg\n"
    "                        (baseline, lossy), a keyword such as ExplicitVRLittleEndian, or\n"
    "                        a transfer syntax UID\n"
    "  -l, --lossy           allow a lossy target (it also gets a new SOPInstanceUID)\n"
    "  -d, --defined-lengths write sequences and items with defined lengths\n"
    "  -f, --force           also read IN without the DICOM Part 10 header (a bare data set)\n"
    "  -j, --from-json       IN is a DICOM JSON object (PS3.18 F.2), as `telerad json` prints;\n"
    "                        OUT is written in Explicit VR Little Endian unless --ts is given\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 on success, 1 if IN cannot be read or OUT cannot be written, 2 on wrong\n"
    "usage.\n";

static const char *transfer_syntax_uid(const char *name)
{
    static const struct {
        const char *name, *uid;
    } short_names[] = {
        {"implicit", DCM_UID_ImplicitVRLittleEndian},
        {"explicit", DCM_UID_ExplicitVRLittleEndian},
        {"big", DCM_UID_ExplicitVRBigEndian},
        {"deflated", DCM_UID_DeflatedExplicitVRLittleEndian},
        {"rle", DCM_UID_RLELossless},
        {"jpeg", DCM_UID_JPEGBaseline8Bit},
        {"jpeg-lossless", DCM_UID_JPEGLosslessSV1},
        {"jpegls", "1.2.840.10008.1.2.4.80"},
        {"j2k", "1.2.840.10008.1.2.4.90"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(short_names); i++) {
        if (strcmp(short_names[i].name, name) == 0)
            return short_names[i].uid;
    }
    const struct dcm_uid_entry *u = dcm_uid_lookup_keyword(name);
    if (u && dcm_ts_lookup(u->uid))
        return u->uid;
    return dcm_ts_lookup(name) ? name : NULL;
}

/* A DICOM JSON file as a dcm_file with an empty meta group. */
static int read_json_file(const char *path, struct dcm_file **out, struct tr_error *err)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!fp)
        return tr_error_set(err, TR_EIO, "cannot open: %s", strerror(errno));
    struct tr_buf text;
    tr_buf_init(&text, (size_t)1 << 32);
    char chunk[65536];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), fp)) > 0)
        rc = tr_buf_add(&text, chunk, n);
    if (rc == 0 && ferror(fp))
        rc = tr_error_set(err, TR_EIO, "cannot read: %s", strerror(errno));
    else if (rc)
        rc = tr_error_set(err, rc, "%s", tr_strerror(rc));
    if (fp != stdin)
        fclose(fp);
    struct dcm_file *f = NULL;
    if (rc == 0) {
        f = tr_calloc(1, sizeof(*f));
        if (!f || !(f->meta = dcm_dataset_new()))
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    if (rc == 0)
        rc = dcm_json_read(text.data ? text.data : "", text.len, NULL, &f->dataset, err);
    tr_buf_release(&text);
    if (rc) {
        dcm_file_free(f);
        return rc;
    }
    f->ts = dcm_ts_lookup(DCM_UID_ExplicitVRLittleEndian);
    *out = f;
    return 0;
}

int cmd_convert(int argc, char **argv)
{
    static const struct option options[] = {
        {"ts", required_argument, NULL, 't'},     {"defined-lengths", no_argument, NULL, 'd'},
        {"force", no_argument, NULL, 'f'},        {"from-json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},        {"lossy", no_argument, NULL, 'l'},
        {NULL, 0, NULL, 0},
    };
    struct dcm_read_options ropt;
    struct dcm_write_options wopt;
    dcm_read_options_init(&ropt);
    dcm_write_options_init(&wopt);
    bool from_json = false, lossy = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "t:dfjhl", options, NULL)) != -1) {
        switch (c) {
        case 't':
            wopt.ts_uid = transfer_syntax_uid(optarg);
            if (!wopt.ts_uid) {
                cli_error("convert: unknown transfer syntax '%s'", optarg);
                return CLI_USAGE;
            }
            break;
        case 'd': wopt.defined_lengths = true; break;
        case 'f': ropt.allow_no_meta = true; break;
        case 'j': from_json = true; break;
        case 'l': lossy = true; break;
        case 'h': fputs(convert_help, stdout); return CLI_OK;
        default: fputs(convert_help, stderr); return CLI_USAGE;
        }
    }
    if (argc - optind != 2) {
        cli_error("convert: give an input and an output file (try 'telerad convert --help')");
        return CLI_USAGE;
    }
    const char *in = argv[optind], *out = argv[optind + 1];
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_file *f;
    if (from_json ? read_json_file(in, &f, &err) < 0 : dcm_file_read(in, &ropt, &f, &err) < 0) {
        cli_error("%s: %s", in, err.message);
        return CLI_FAILED;
    }
    /* A change of compression: transcode the pixel data first. */
    int rc = 0;
    const struct dcm_element *pixels = dcm_dataset_get(f->dataset, DCM_TAG_PixelData);
    if (wopt.ts_uid && f->ts && strcmp(wopt.ts_uid, f->ts->uid) != 0 && pixels &&
        ((pixels->flags & DCM_ELEM_ENCAPSULATED) ||
         (dcm_ts_lookup(wopt.ts_uid)->flags & DCM_TS_ENCAPSULATED))) {
        rc = dcm_pixel_transcode(f->dataset, f->ts->uid, wopt.ts_uid, lossy, &err);
        if (rc < 0) {
            cli_error("%s: %s%s", in, err.message, rc == TR_EDENIED ? " (--lossy)" : "");
            dcm_file_free(f);
            return CLI_FAILED;
        }
    }
    rc = dcm_file_write_path(f, &wopt, out, &err);
    dcm_file_free(f);
    if (rc < 0) {
        cli_error("%s: %s", out, err.message);
        return CLI_FAILED;
    }
    return CLI_OK;
}
