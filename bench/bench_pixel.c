/*
 * bench_pixel.c - decoding speed of one frame per file: the median of N decodes of frame 1.
 *
 *   cmake --build BUILD --target bench_pixel   (a Release build without sanitizers)
 *   BUILD/bench_pixel [-n 50] FILE...
 *
 * Prints, per file: transfer syntax, frame size, milliseconds per frame (median) and
 * megapixels per second.
 */
#include "common.h"
#include "dcm.h"
#include "pixel.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    int n = 50, first = 1;
    if (argc > 2 && strcmp(argv[1], "-n") == 0) {
        n = (int)strtol(argv[2], NULL, 10);
        first = 3;
    }
    if (first >= argc || n < 1 || n > 100000) {
        fprintf(stderr, "usage: bench_pixel [-n N] FILE...\n");
        return 2;
    }
    double *times = calloc((size_t)n, sizeof(double));
    printf("%-40s %-24s %-14s %10s %10s\n", "file", "transfer syntax", "frame", "ms/frame",
           "Mpx/s");
    for (int a = first; a < argc; a++) {
        struct dcm_file *f;
        struct tr_error err = TR_ERROR_INIT;
        if (dcm_file_read(argv[a], NULL, &f, &err) < 0) {
            fprintf(stderr, "%s: %s\n", argv[a], err.message);
            return 1;
        }
        struct tr_buf out;
        tr_buf_init(&out, (size_t)1 << 30);
        struct dcm_pixel_desc d;
        for (int i = 0; i < n; i++) {
            double t0 = now_ms();
            if (dcm_pixel_decode_frame(f->dataset, f->ts_uid, 0, &out, &d, &err) < 0) {
                fprintf(stderr, "%s: %s\n", argv[a], err.message);
                return 1;
            }
            times[i] = now_ms() - t0;
        }
        qsort(times, (size_t)n, sizeof(double), cmp_double);
        double med = times[n / 2];
        char shape[32];
        snprintf(shape, sizeof(shape), "%ux%ux%u %ub", d.cols, d.rows, d.samples,
                 d.bits_allocated);
        const char *slash = strrchr(argv[a], '/');
        printf("%-40s %-24.24s %-14s %10.2f %10.1f\n", slash ? slash + 1 : argv[a],
               f->ts ? f->ts->keyword : f->ts_uid, shape, med,
               (double)d.rows * d.cols / 1e3 / med);
        tr_buf_release(&out);
        dcm_file_free(f);
    }
    free(times);
    return 0;
}
