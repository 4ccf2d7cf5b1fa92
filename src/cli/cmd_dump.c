/*
 * cmd_dump.c - `telerad dump FILE...` and `telerad json FILE`: read DICOM files and show them.
 */
#include "cli.h"
#include "common.h"
#include "dcm.h"

#include <getopt.h>
#include <stdio.h>

static const char dump_help[] =
    "usage: telerad dump [options] FILE...\n"
    "\n"
    "List the elements of DICOM files: tag, VR, value (text decoded to UTF-8), length,\n"
    "value multiplicity and keyword, sequences and items indented, as DCMTK's dcmdump does.\n"
    "FILE may be '-' for standard input.\n"
    "\n"
    "options:\n"
    "  -f, --force        also read files without the DICOM Part 10 header (bare data sets)\n"
    "  -H, --header-only  stop before the pixel data\n"
    "  -F, --full         show long values whole\n"
    "  -M, --no-meta      leave out the file meta information\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 if every file was read, 1 if any could not be (one message per file on\n"
    "standard error naming the byte offset and the tag), 2 on wrong usage.\n";

static const char json_help[] =
    "usage: telerad json [options] FILE\n"
    "\n"
    "Print the data set of a DICOM file as DICOM JSON (PS3.18 F.2) on standard output:\n"
    "person names as Alphabetic/Ideographic/Phonetic, IS and DS as numbers, binary values as\n"
    "InlineBinary. The file meta information (group 0002) is left out.\n"
    "\n"
    "options:\n"
    "  -f, --force        also read files without the DICOM Part 10 header (bare data sets)\n"
    "  -p, --pretty       indent the output\n"
    "  -h, --help         show this help\n"
    "\n"
    "Exit status: 0 on success, 1 if the file cannot be read or converted (one message on\n"
    "standard error naming the byte offset and the tag), 2 on wrong usage.\n";

int cmd_dump(int argc, char **argv)
{
    static const struct option options[] = {
        {"force", no_argument, NULL, 'f'},      {"header-only", no_argument, NULL, 'H'},
        {"full", no_argument, NULL, 'F'},       {"no-meta", no_argument, NULL, 'M'},
        {"help", no_argument, NULL, 'h'},       {NULL, 0, NULL, 0},
    };
    struct dcm_read_options ropt;
    dcm_read_options_init(&ropt);
    unsigned flags = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fHFMh", options, NULL)) != -1) {
        switch (c) {
        case 'f': ropt.allow_no_meta = true; break;
        case 'H': ropt.header_only = true; break;
        case 'F': flags |= DCM_DUMP_FULL_VALUES; break;
        case 'M': flags |= DCM_DUMP_NO_META; break;
        case 'h': fputs(dump_help, stdout); return CLI_OK;
        default: fputs(dump_help, stderr); return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        cli_error("dump: no file given (try 'telerad dump --help')");
        return CLI_USAGE;
    }
    int status = CLI_OK;
    struct tr_bufsink out;
    if (tr_bufsink_init(&out, tr_sink_stdio(stdout), 1 << 16) < 0) {
        cli_error("out of memory");
        return CLI_FAILED;
    }
    for (int i = optind; i < argc; i++) {
        struct tr_error err = TR_ERROR_INIT;
        struct dcm_file *f;
        if (dcm_file_read(argv[i], &ropt, &f, &err) < 0) {
            tr_bufsink_flush(&out);
            fflush(stdout);
            cli_error("%s: %s", argv[i], err.message);
            status = CLI_FAILED;
            continue;
        }
        if (argc - optind > 1) {
            char title[4200];
            int n = snprintf(title, sizeof(title), "\n# File: %s\n", argv[i]);
            tr_sink_write(&out.sink, title, (size_t)TR_MIN(n, (int)sizeof(title) - 1));
        }
        if (dcm_dump_file(f, flags, &out.sink, &err) < 0) {
            cli_error("%s: %s", argv[i], err.message);
            status = CLI_FAILED;
        }
        dcm_file_free(f);
    }
    if (tr_bufsink_flush(&out) < 0 || fflush(stdout) != 0) {
        cli_error("cannot write to standard output");
        status = CLI_FAILED;
    }
    tr_bufsink_release(&out);
    return status;
}

int cmd_json(int argc, char **argv)
{
    static const struct option options[] = {
        {"force", no_argument, NULL, 'f'},
        {"pretty", no_argument, NULL, 'p'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dcm_read_options ropt;
    dcm_read_options_init(&ropt);
    struct dcm_json_options jopt = {.flags = DCM_JSON_SKIP_META};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "fph", options, NULL)) != -1) {
        switch (c) {
        case 'f': ropt.allow_no_meta = true; break;
        case 'p': jopt.flags |= DCM_JSON_PRETTY; break;
        case 'h': fputs(json_help, stdout); return CLI_OK;
        default: fputs(json_help, stderr); return CLI_USAGE;
        }
    }
    if (argc - optind != 1) {
        cli_error("json: give exactly one file (try 'telerad json --help')");
        return CLI_USAGE;
    }
    const char *path = argv[optind];
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_file *f;
    if (dcm_file_read(path, &ropt, &f, &err) < 0) {
        cli_error("%s: %s", path, err.message);
        return CLI_FAILED;
    }
    /* Convert into memory first: on an error, nothing but the message is printed. */
    struct tr_buf json;
    tr_buf_init(&json, SIZE_MAX / 2);
    struct tr_sink sink = tr_sink_buf(&json);
    int rc = dcm_json_write(f->dataset, &jopt, &sink, &err);
    dcm_file_free(f);
    if (rc < 0) {
        tr_buf_release(&json);
        cli_error("%s: %s", path, err.message);
        return CLI_FAILED;
    }
    tr_buf_addc(&json, '\n');
    int status = CLI_OK;
    if (fwrite(json.data, 1, json.len, stdout) != json.len || fflush(stdout) != 0) {
        cli_error("cannot write to standard output");
        status = CLI_FAILED;
    }
    tr_buf_release(&json);
    return status;
}
