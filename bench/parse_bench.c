/*
 * parse_bench.c - the cost of the DICOM library's header-only parse, without printing.
 *
 *   parse_bench [-n ROUNDS] [-q] FILE...
 *   parse_bench [-n ROUNDS] [-q] -l LISTFILE      (one path a line)
 *
 * For each round, for each file: dcm_file_read() with header_only, then dcm_file_free(). No
 * output on success except one line on standard error with files, seconds and files/s (left out
 * with -q). Used by bench/header_parse.py next to `telerad dump --header-only`, DCMTK's dcmdump
 * and pydicom, and under callgrind (the loop is parse_files(), which callgrind's
 * --toggle-collect can isolate from process start-up). Exit status 1 if any file fails.
 */
#include "common.h"
#include "dcm.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

/* The measured loop. noinline so that callgrind --toggle-collect=parse_files sees it. */
__attribute__((noinline)) static int parse_files(char **paths, size_t count, unsigned rounds)
{
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    int failures = 0;
    for (unsigned round = 0; round < rounds; round++) {
        for (size_t i = 0; i < count; i++) {
            struct tr_error err = TR_ERROR_INIT;
            struct dcm_file *f;
            if (dcm_file_read(paths[i], &opt, &f, &err) < 0) {
                fprintf(stderr, "parse_bench: %s: %s\n", paths[i], err.message);
                failures++;
                continue;
            }
            dcm_file_free(f);
        }
    }
    return failures;
}

/* Read LISTFILE (one path a line) into a NULL-terminated array of paths pointing into
 * *storage. The caller frees both with tr_free. */
static char **read_list(const char *listfile, size_t *count, char **storage)
{
    FILE *in = fopen(listfile, "rb");
    if (!in)
        return NULL;
    struct tr_buf text;
    tr_buf_init(&text, (size_t)1 << 30);
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), in)) > 0) {
        if (tr_buf_add(&text, chunk, n) < 0) {
            fclose(in);
            tr_buf_release(&text);
            return NULL;
        }
    }
    fclose(in);
    size_t len = text.len;
    char *s = tr_buf_detach(&text, NULL);
    if (!s)
        return NULL;
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += s[i] == '\n';
    char **paths = tr_calloc(lines + 2, sizeof(*paths)); /* + an unterminated last line + NULL */
    if (!paths) {
        tr_free(s);
        return NULL;
    }
    size_t k = 0;
    char *line = s;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\n')
            continue;
        s[i] = '\0';
        if (*line)
            paths[k++] = line;
        line = s + i + 1;
    }
    if (line < s + len && *line)
        paths[k++] = line;
    *count = k;
    *storage = s;
    return paths;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    unsigned rounds = 1;
    const char *listfile = NULL;
    int quiet = 0;
    int c;
    while ((c = getopt(argc, argv, "n:l:q")) != -1) {
        switch (c) {
        case 'n': rounds = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'l': listfile = optarg; break;
        case 'q': quiet = 1; break;
        default:
            fputs("usage: parse_bench [-n ROUNDS] [-q] (-l LISTFILE | FILE...)\n", stderr);
            return 2;
        }
    }
    char **paths = argv + optind;
    size_t count = (size_t)(argc - optind);
    char *storage = NULL;
    char **owned = NULL;
    if (listfile) {
        owned = read_list(listfile, &count, &storage);
        if (!owned) {
            fprintf(stderr, "parse_bench: cannot read %s\n", listfile);
            return 1;
        }
        paths = owned;
    }
    if (count == 0 || rounds == 0) {
        fputs("parse_bench: no file given\n", stderr);
        return 2;
    }
    double start = now();
    int failures = parse_files(paths, count, rounds);
    double seconds = now() - start;
    if (!quiet) {
        double files = (double)count * rounds;
        fprintf(stderr, "parse_bench: %.0f files in %.6f s, %.0f files/s\n", files, seconds,
                files / seconds);
    }
    tr_free(owned);
    tr_free(storage);
    return failures ? 1 : 0;
}
