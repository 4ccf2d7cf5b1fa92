/*
 * cmd_archive.c - `telerad import DIR...` (bulk import into the archive, as durable as a
 * C-STORE) and `telerad delete STUDY_UID...`.
 */
#include "cli.h"
#include "common.h"
#include "archive.h"
#include "config.h"
#include "serve_store.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char import_help[] =
    "usage: telerad import [options] PATH...\n"
    "\n"
    "Import DICOM files (PATH: files or folders, walked recursively) into the archive with the\n"
    "same checks and durability as a C-STORE: each object is fsync'd and indexed before it\n"
    "counts as imported. Files that are not DICOM are skipped and counted. A server may run\n"
    "on the same archive meanwhile.\n"
    "\n"
    "options:\n"
    "  --data DIR        the archive (default ./telerad-data)\n"
    "  --index URL       the index (default sqlite:DIR/index.sqlite)\n"
    "  --site SITE       the site the studies belong to (default: the default site)\n"
    "  --duplicates P    reject (default), replace or keep-first\n"
    "  -j, --jobs N      files imported in parallel (default 4)\n"
    "  --no-progress     no progress bar\n"
    "  -v, --verbose     name every file\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 if every DICOM file was imported (or was already there), 1 if any failed,\n"
    "2 on wrong usage.\n";

static const char delete_help[] =
    "usage: telerad delete [options] STUDY_INSTANCE_UID...\n"
    "\n"
    "Delete studies from the archive: their objects, then their index rows.\n"
    "\n"
    "options:\n"
    "  --data DIR        the archive (default ./telerad-data)\n"
    "  --index URL       the index (default sqlite:DIR/index.sqlite)\n"
    "  --site SITE       only the study of this site (default: any site)\n"
    "  -h, --help        show this help\n"
    "\n"
    "Exit status: 0 if every study was deleted, 1 if any was not found or failed, 2 on wrong\n"
    "usage.\n";

static void stderr_log(void *ctx, int level, const char *message)
{
    (void)ctx;
    if (level <= SCP_LOG_WARNING)
        fprintf(stderr, "telerad: %s\n", message);
}

/* ---- the list of files -------------------------------------------------------------------- */

struct file_list {
    char **path;
    size_t count, cap;
};

static int add_file(struct file_list *l, const char *path)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        char **p = tr_reallocarray(l->path, cap, sizeof(*p));
        if (!p)
            return TR_ENOMEM;
        l->path = p;
        l->cap = cap;
    }
    if (!(l->path[l->count] = tr_strdup(path)))
        return TR_ENOMEM;
    l->count++;
    return 0;
}

static int walk(struct file_list *l, const char *path, int depth)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode))
        return add_file(l, path) < 0 ? -1 : 0;
    if (!S_ISDIR(st.st_mode) || depth > 64)
        return 0;
    DIR *d = opendir(path);
    if (!d) {
        cli_error("%s: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        char child[4096];
        if (snprintf(child, sizeof(child), "%s/%s", path, de->d_name) >= (int)sizeof(child))
            continue;
        if (walk(l, child, depth + 1) < 0)
            rc = -1;
    }
    closedir(d);
    return rc;
}

/* ---- import ------------------------------------------------------------------------------- */

struct import_job {
    struct arc_archive *archive;
    struct file_list *files;
    const char *site;
    atomic_size_t next, imported, duplicates, skipped, failed;
    atomic_uint_fast64_t bytes;
    bool verbose;
    pthread_mutex_t out;
};

static bool looks_like_dicom(const char *path)
{
    /* A cheap look before the full read: "DICM" at 128, or a small group at 0 (bare data set,
     * which import refuses with a message anyway). */
    FILE *f = fopen(path, "rb");
    if (!f)
        return true; /* let the import say why */
    unsigned char b[132];
    size_t n = fread(b, 1, sizeof(b), f);
    fclose(f);
    return n == sizeof(b) && memcmp(b + 128, "DICM", 4) == 0;
}

static void *import_worker(void *arg)
{
    struct import_job *job = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&job->next, 1);
        if (i >= job->files->count)
            break;
        const char *path = job->files->path[i];
        if (!looks_like_dicom(path)) {
            atomic_fetch_add(&job->skipped, 1);
            if (job->verbose) {
                pthread_mutex_lock(&job->out);
                fprintf(stderr, "\rskipped (not a DICOM file): %s\n", path);
                pthread_mutex_unlock(&job->out);
            }
            continue;
        }
        struct arc_ingest_result res;
        struct tr_error err = TR_ERROR_INIT;
        int rc = arc_ingest_file(job->archive, path, job->site, "", &res, &err);
        if (rc == 0 && res.status == DIMSE_STATUS_SUCCESS) {
            atomic_fetch_add(res.duplicate ? &job->duplicates : &job->imported, 1);
            atomic_fetch_add(&job->bytes, res.size);
            if (job->verbose) {
                pthread_mutex_lock(&job->out);
                fprintf(stderr, "\r%s: %s\n", path, res.duplicate ? "already stored" : "imported");
                pthread_mutex_unlock(&job->out);
            }
        } else {
            atomic_fetch_add(&job->failed, 1);
            pthread_mutex_lock(&job->out);
            fprintf(stderr, "\rtelerad: %s: %s\n", path,
                    rc ? err.message : (res.comment[0] ? res.comment : dimse_status_text(res.status)));
            pthread_mutex_unlock(&job->out);
        }
    }
    return NULL;
}

static double seconds_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void progress(struct import_job *job, const struct timespec *t0, bool final)
{
    size_t done = atomic_load(&job->imported) + atomic_load(&job->duplicates) +
                  atomic_load(&job->skipped) + atomic_load(&job->failed);
    size_t total = job->files->count;
    double s = seconds_since(t0);
    double rate = s > 0 ? (double)(atomic_load(&job->imported) + atomic_load(&job->duplicates)) / s : 0;
    double mbs = s > 0 ? (double)atomic_load(&job->bytes) / 1e6 / s : 0;
    int width = 30, filled = total ? (int)((double)done / (double)total * width) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '=' : ' ';
    bar[width] = '\0';
    pthread_mutex_lock(&job->out);
    fprintf(stderr, "\r[%s] %zu/%zu files  %.1f inst/s  %.1f MB/s  %zu failed%s", bar, done, total,
            rate, mbs, atomic_load(&job->failed), final ? "\n" : "");
    fflush(stderr);
    pthread_mutex_unlock(&job->out);
}

static int open_archive(const char *data, const char *index, enum arc_duplicate_policy dup,
                        struct arc_archive **out)
{
    struct arc_config cfg;
    arc_config_init(&cfg);
    if (data)
        cfg.data_dir = data;
    cfg.index_url = index;
    cfg.duplicates = dup;
    cfg.log = stderr_log;
    struct tr_error err = TR_ERROR_INIT;
    /* The object store as `telerad serve` has it ([archive] store, [s3]: TELERAD_CONFIG and
     * the environment): an S3 archive opened as files would reconcile every row away. */
    struct cfg conf = {0};
    const char *config = getenv("TELERAD_CONFIG");
    struct serve_store_config store;
    serve_store_config_init(&store);
    if ((config && cfg_load(&conf, config, &err) < 0) ||
        serve_store_configure(&conf, &store, &err) < 0) {
        cli_error("%s", err.message);
        cfg_release(&conf);
        return -1;
    }
    if (store.s3)
        cfg.s3 = &store.s3opt;
    int rc = arc_open(&cfg, out, &err);
    cfg_release(&conf);
    if (rc < 0) {
        cli_error("cannot open the archive in %s: %s", cfg.data_dir, err.message);
        return -1;
    }
    return 0;
}

int cmd_import(int argc, char **argv)
{
    enum { O_DATA = 256, O_INDEX, O_SITE, O_DUP, O_NOPROGRESS };
    static const struct option options[] = {
        {"data", required_argument, NULL, O_DATA},   {"index", required_argument, NULL, O_INDEX},
        {"site", required_argument, NULL, O_SITE},   {"duplicates", required_argument, NULL, O_DUP},
        {"jobs", required_argument, NULL, 'j'},      {"no-progress", no_argument, NULL, O_NOPROGRESS},
        {"verbose", no_argument, NULL, 'v'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *index = NULL, *site = "";
    enum arc_duplicate_policy dup = ARC_DUPLICATE_REJECT;
    int jobs = 4;
    bool show_progress = isatty(STDERR_FILENO), verbose = false;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "j:vh", options, NULL)) != -1) {
        switch (c) {
        case O_DATA: data = optarg; break;
        case O_INDEX: index = optarg; break;
        case O_SITE: site = optarg; break;
        case O_DUP:
            if (arc_duplicate_policy_parse(optarg, &dup) < 0) {
                cli_error("import: --duplicates is reject, replace or keep-first");
                return CLI_USAGE;
            }
            break;
        case 'j': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 64) {
                cli_error("import: --jobs takes a number from 1 to 64");
                return CLI_USAGE;
            }
            jobs = (int)n;
            break;
        }
        case O_NOPROGRESS: show_progress = false; break;
        case 'v': verbose = true; break;
        case 'h': fputs(import_help, stdout); return CLI_OK;
        default: fputs(import_help, stderr); return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        cli_error("import: give files or folders to import (try 'telerad import --help')");
        return CLI_USAGE;
    }
    struct file_list files = {0};
    int status = CLI_OK;
    for (int i = optind; i < argc; i++) {
        if (walk(&files, argv[i], 0) < 0)
            status = CLI_FAILED;
    }
    struct arc_archive *archive;
    if (open_archive(data, index, dup, &archive) < 0) {
        for (size_t i = 0; i < files.count; i++)
            tr_free(files.path[i]);
        tr_free(files.path);
        return CLI_FAILED;
    }
    struct import_job job = {.archive = archive, .files = &files, .site = site,
                             .verbose = verbose};
    pthread_mutex_init(&job.out, NULL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t threads[64];
    int started = 0;
    for (int i = 0; i < jobs; i++) {
        if (pthread_create(&threads[started], NULL, import_worker, &job) == 0)
            started++;
    }
    if (started == 0)
        import_worker(&job);
    while (show_progress && atomic_load(&job.next) < files.count) {
        progress(&job, &t0, false);
        usleep(200000);
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (show_progress)
        progress(&job, &t0, true);
    double s = seconds_since(&t0);
    size_t stored = atomic_load(&job.imported);
    fprintf(stderr,
            "imported %zu files (%zu already stored, %zu not DICOM, %zu failed) in %.1f s, "
            "%.1f inst/s, %.1f MB/s\n",
            stored, atomic_load(&job.duplicates), atomic_load(&job.skipped),
            atomic_load(&job.failed), s, s > 0 ? (double)(stored + atomic_load(&job.duplicates)) / s : 0,
            s > 0 ? (double)atomic_load(&job.bytes) / 1e6 / s : 0);
    if (atomic_load(&job.failed))
        status = CLI_FAILED;
    pthread_mutex_destroy(&job.out);
    arc_close(archive);
    for (size_t i = 0; i < files.count; i++)
        tr_free(files.path[i]);
    tr_free(files.path);
    return status;
}

int cmd_delete(int argc, char **argv)
{
    enum { O_DATA = 256, O_INDEX, O_SITE };
    static const struct option options[] = {
        {"data", required_argument, NULL, O_DATA}, {"index", required_argument, NULL, O_INDEX},
        {"site", required_argument, NULL, O_SITE}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *data = NULL, *index = NULL, *site = NULL;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1) {
        switch (c) {
        case O_DATA: data = optarg; break;
        case O_INDEX: index = optarg; break;
        case O_SITE: site = optarg; break;
        case 'h': fputs(delete_help, stdout); return CLI_OK;
        default: fputs(delete_help, stderr); return CLI_USAGE;
        }
    }
    if (optind >= argc) {
        cli_error("delete: give Study Instance UIDs (try 'telerad delete --help')");
        return CLI_USAGE;
    }
    struct arc_archive *archive;
    if (open_archive(data, index, ARC_DUPLICATE_REJECT, &archive) < 0)
        return CLI_FAILED;
    int status = CLI_OK;
    for (int i = optind; i < argc; i++) {
        size_t n = 0;
        struct tr_error err = TR_ERROR_INIT;
        if (arc_delete_study(archive, site, argv[i], &n, &err) < 0) {
            cli_error("delete: %s: %s", argv[i], err.message);
            status = CLI_FAILED;
        } else {
            printf("deleted study %s (%zu instances)\n", argv[i], n);
        }
    }
    arc_close(archive);
    return status;
}
