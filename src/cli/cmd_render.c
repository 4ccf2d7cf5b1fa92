/*
 * cmd_render.c - `telerad render IN -o OUT`: one frame of a DICOM image as an 8-bit PNG or
 * JPEG (like DCMTK's dcm2pnm), with the window, size and crop a viewer or a thumbnail needs.
 */
#include "cli.h"
#include "common.h"
#include "dcm.h"
#include "render.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static const char render_help[] =
    "usage: telerad render [options] IN -o OUT\n"
    "\n"
    "Render one frame of the DICOM image IN to OUT as an 8-bit PNG or JPEG: modality LUT\n"
    "(rescale slope and intercept, or Modality LUT Sequence), VOI (window or VOI LUT),\n"
    "MONOCHROME1 and Presentation LUT Shape INVERSE, colour models (RGB, YBR_FULL,\n"
    "YBR_FULL_422, PALETTE COLOR) to RGB. OUT is written whole or not at all.\n"
    "\n"
    "options:\n"
    "  -o, --output FILE     the picture to write; '-' for standard output\n"
    "  -F, --frame N         frame number, from 1 (default 1)\n"
    "  -w, --window SPEC     how values become grey levels:\n"
    "                          C,W[,FUNCTION]  this window center and width; FUNCTION is\n"
    "                                          linear (default), linear_exact or sigmoid\n"
    "                          auto     the image's first window, else its first VOI LUT,\n"
    "                                   else minmax (the default)\n"
    "                          image[N] the image's N-th window (default 1)\n"
    "                          lut[N]   the image's N-th VOI LUT (default 1)\n"
    "                          minmax   the frame's lowest to highest value\n"
    "                          none     the whole range of the stored bits (dcm2pnm's default)\n"
    "  -s, --size WxH        fit inside W x H pixels keeping the aspect ratio (shrinking\n"
    "                        averages areas); 'W' or 'Wx' or 'xH' constrain one side\n"
    "  -c, --crop X,Y,W,H    crop to this rectangle of the frame before resizing\n"
    "  -t, --format FORMAT   png or jpeg (default: from OUT's extension, .jpg and .jpeg give\n"
    "                        jpeg, anything else png)\n"
    "  -q, --quality Q       JPEG quality, 1-100 (default 90)\n"
    "  -f, --force           also read IN without the DICOM Part 10 header (a bare data set)\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 on success, 1 if IN cannot be read or rendered or OUT cannot be written,\n"
    "2 on wrong usage.\n";

static bool parse_u32(const char *s, char **end, uint32_t *out)
{
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long v = strtoul(s, end, 10);
    if (errno || v > UINT32_MAX)
        return false;
    *out = (uint32_t)v;
    return true;
}

static bool parse_double(const char *s, char **end, double *out)
{
    errno = 0;
    double v = strtod(s, end);
    if (*end == s || errno || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* "C,W[,FUNCTION]", "auto", "image[N]", "lut[N]", "minmax", "none". */
static bool parse_window(const char *s, struct dcm_render_options *opt)
{
    static const struct {
        const char *name;
        enum dcm_voi_mode mode;
    } words[] = {
        {"auto", DCM_VOI_AUTO},          {"minmax", DCM_VOI_MINMAX},
        {"none", DCM_VOI_NONE},          {"image", DCM_VOI_IMAGE_WINDOW},
        {"lut", DCM_VOI_IMAGE_LUT},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(words); i++) {
        size_t n = strlen(words[i].name);
        if (strncmp(s, words[i].name, n) != 0)
            continue;
        opt->voi = words[i].mode;
        opt->voi_index = 0;
        if (s[n] == '\0')
            return true;
        char *end;
        uint32_t index;
        if ((words[i].mode != DCM_VOI_IMAGE_WINDOW && words[i].mode != DCM_VOI_IMAGE_LUT) ||
            !parse_u32(s + n, &end, &index) || *end || index == 0)
            return false;
        opt->voi_index = index - 1;
        return true;
    }
    char *end;
    if (!parse_double(s, &end, &opt->window_center) || *end != ',' ||
        !parse_double(end + 1, &end, &opt->window_width))
        return false;
    opt->voi = DCM_VOI_WINDOW;
    opt->function = DCM_VOI_LINEAR;
    if (*end == '\0')
        return true;
    if (*end != ',')
        return false;
    const char *f = end + 1;
    if (strcasecmp(f, "linear") == 0)
        opt->function = DCM_VOI_LINEAR;
    else if (strcasecmp(f, "linear_exact") == 0)
        opt->function = DCM_VOI_LINEAR_EXACT;
    else if (strcasecmp(f, "sigmoid") == 0)
        opt->function = DCM_VOI_SIGMOID;
    else
        return false;
    return true;
}

/* "WxH", "W", "Wx", "xH". */
static bool parse_size(const char *s, uint32_t *w, uint32_t *h)
{
    char *end = (char *)s;
    *w = *h = 0;
    if (*s != 'x' && !parse_u32(s, &end, w))
        return false;
    if (*end == 'x' && end[1] != '\0' && !parse_u32(end + 1, &end, h))
        return false;
    if (*end == 'x')
        end++;
    return *end == '\0' && *w <= 65535 && *h <= 65535 && (*w || *h);
}

static bool parse_crop(const char *s, struct dcm_render_options *opt)
{
    uint32_t v[4];
    char *end = (char *)s;
    for (int i = 0; i < 4; i++) {
        if (!parse_u32(end, &end, &v[i]) || *end != (i < 3 ? ',' : '\0'))
            return false;
        if (i < 3)
            end++;
    }
    if (v[2] == 0 || v[3] == 0)
        return false;
    opt->crop_x = v[0];
    opt->crop_y = v[1];
    opt->crop_width = v[2];
    opt->crop_height = v[3];
    return true;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

/* Write all of `data` to `path` through a temporary file in the same folder and a rename, so
 * that OUT is never left half written. */
static int write_whole(const char *path, const void *data, size_t len, struct tr_error *err)
{
    if (strcmp(path, "-") == 0) {
        if (fwrite(data, 1, len, stdout) != len || fflush(stdout) != 0)
            return tr_error_set(err, TR_EIO, "cannot write to standard output: %s",
                                strerror(errno));
        return 0;
    }
    struct tr_buf tmp;
    tr_buf_init(&tmp, 8192);
    int rc = tr_buf_addf(&tmp, "%s.tmpXXXXXX", path);
    if (rc < 0) {
        tr_buf_release(&tmp);
        return tr_error_set(err, rc, "file name too long");
    }
    int fd = mkstemp(tmp.data);
    if (fd < 0) {
        rc = tr_error_set(err, TR_EIO, "cannot create: %s", strerror(errno));
        tr_buf_release(&tmp);
        return rc;
    }
    /* mkstemp makes the file 0600; give it the mode any new file would have. */
    rc = 0;
    mode_t mask = umask(0);
    umask(mask);
    if (fchmod(fd, 0666 & ~mask) != 0)
        rc = tr_error_set(err, TR_EIO, "cannot set the mode: %s", strerror(errno));
    struct tr_sink sink = tr_sink_fd(&fd);
    if (rc == 0)
        rc = tr_sink_write(&sink, data, len);
    if (rc < 0)
        tr_error_set(err, rc, "cannot write: %s", strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = tr_error_set(err, TR_EIO, "cannot write: %s", strerror(errno));
    if (rc == 0 && rename(tmp.data, path) != 0)
        rc = tr_error_set(err, TR_EIO, "cannot write: %s", strerror(errno));
    if (rc < 0)
        unlink(tmp.data);
    tr_buf_release(&tmp);
    return rc;
}

int cmd_render(int argc, char **argv)
{
    static const struct option options[] = {
        {"output", required_argument, NULL, 'o'}, {"frame", required_argument, NULL, 'F'},
        {"window", required_argument, NULL, 'w'}, {"size", required_argument, NULL, 's'},
        {"crop", required_argument, NULL, 'c'},   {"format", required_argument, NULL, 't'},
        {"quality", required_argument, NULL, 'q'}, {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct dcm_render_options opt;
    struct dcm_read_options ropt;
    dcm_render_options_init(&opt);
    dcm_read_options_init(&ropt);
    const char *out = NULL, *format = NULL;
    char *end;
    uint32_t n;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:F:w:s:c:t:q:fh", options, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'F':
            if (!parse_u32(optarg, &end, &n) || *end || n == 0) {
                cli_error("render: --frame takes a frame number from 1, not '%s'", optarg);
                return CLI_USAGE;
            }
            opt.frame = n - 1;
            break;
        case 'w':
            if (!parse_window(optarg, &opt)) {
                cli_error("render: --window takes C,W[,linear|linear_exact|sigmoid], auto, "
                          "image[N], lut[N], minmax or none, not '%s'",
                          optarg);
                return CLI_USAGE;
            }
            break;
        case 's':
            if (!parse_size(optarg, &opt.width, &opt.height)) {
                cli_error("render: --size takes WxH (1-65535 each, one may be left out), not '%s'",
                          optarg);
                return CLI_USAGE;
            }
            break;
        case 'c':
            if (!parse_crop(optarg, &opt)) {
                cli_error("render: --crop takes X,Y,W,H with W and H above 0, not '%s'", optarg);
                return CLI_USAGE;
            }
            break;
        case 't': format = optarg; break;
        case 'q':
            if (!parse_u32(optarg, &end, &n) || *end || n < 1 || n > 100) {
                cli_error("render: --quality takes 1-100, not '%s'", optarg);
                return CLI_USAGE;
            }
            opt.quality = (int)n;
            break;
        case 'f': ropt.allow_no_meta = true; break;
        case 'h': fputs(render_help, stdout); return CLI_OK;
        default: fputs(render_help, stderr); return CLI_USAGE;
        }
    }
    if (argc - optind != 1 || !out) {
        cli_error("render: give one input file and -o OUT (try 'telerad render --help')");
        return CLI_USAGE;
    }
    if (format) {
        if (strcasecmp(format, "png") == 0) {
            opt.format = DCM_IMAGE_PNG;
        } else if (strcasecmp(format, "jpeg") == 0 || strcasecmp(format, "jpg") == 0) {
            opt.format = DCM_IMAGE_JPEG;
        } else {
            cli_error("render: --format takes png or jpeg, not '%s'", format);
            return CLI_USAGE;
        }
    } else {
        opt.format = has_suffix(out, ".jpg") || has_suffix(out, ".jpeg") ? DCM_IMAGE_JPEG
                                                                          : DCM_IMAGE_PNG;
    }

    const char *in = argv[optind];
    struct tr_error err = TR_ERROR_INIT;
    /* Only the pixel data of the frame rendered is touched: the file is mapped, not read. */
    struct dcm_file *f;
    if (dcm_file_read(in, &ropt, &f, &err) < 0) {
        cli_error("%s: %s", in, err.message);
        return CLI_FAILED;
    }
    struct tr_buf encoded;
    tr_buf_init(&encoded, (size_t)1 << 30);
    struct tr_sink sink = tr_sink_buf(&encoded);
    int rc = dcm_render(f->dataset, f->ts_uid, &opt, &sink, &err);
    dcm_file_free(f);
    if (rc < 0) {
        cli_error("%s: %s", in, err.message);
        tr_buf_release(&encoded);
        return CLI_FAILED;
    }
    rc = write_whole(out, encoded.data, encoded.len, &err);
    tr_buf_release(&encoded);
    if (rc < 0) {
        cli_error("%s: %s", out, err.message);
        return CLI_FAILED;
    }
    return CLI_OK;
}
