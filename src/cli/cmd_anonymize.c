/*
 * cmd_anonymize.c - `telerad anonymize IN... --out DIR`: de-identify DICOM files and folders
 * with the PS3.15 Annex E Basic Profile and its options (src/dicom/deid.h), keyed so that the
 * same key gives the same UIDs, pseudonyms and date shifts in every run.
 *
 * Files are read, de-identified and written by a pool of threads. Each output is written
 * without a name (O_TMPFILE) and linked under its final name once whole, or, where the file
 * system cannot, written to a temporary name and renamed: DIR never holds a half-written file
 * under a final name (and after a crash, no temporary file either). The pixel data goes from
 * the input file to the output inside the kernel (dcm_file_write_fd): it never passes through
 * this process. Files found in folders are checked for "DICM" by the thread that reads them,
 * not by the walk, so that a file is opened once. Instances whose
 * pixels may show identity (burned-in annotation) are held back unless --allow-burned-in.
 * Nothing of a patient (names, IDs) is ever printed: only paths, tags and counts.
 */
#include "cli.h"
#include "common.h"
#include "dcm.h"
#include "deid.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

static const char anonymize_help[] =
    "usage: telerad anonymize [options] --out DIR IN...\n"
    "\n"
    "De-identify DICOM files (IN: files or folders, walked recursively) with the Basic\n"
    "Application Level Confidentiality Profile of PS3.15 Annex E and the options below, and\n"
    "write each to DIR/<new Study Instance UID>/<new SOP Instance UID>.dcm. New UIDs, the\n"
    "patient pseudonym and date shifts are computed from a key (HMAC-SHA256): the same key\n"
    "gives the same output in every run, and the studies of one patient stay linked.\n"
    "Pixel data is not changed: an instance whose pixels may show identity (Burned In\n"
    "Annotation YES, Recognizable Visual Features YES, or a secondary capture, ultrasound or\n"
    "photograph that does not say) is held back unless --allow-burned-in. DICOMDIR files\n"
    "are not copied; an instance found twice (one SOP Instance UID) is written once.\n"
    "\n"
    "key (one is required):\n"
    "  --key-file FILE          the key: FILE's bytes (16 to 4096; a final newline is ignored)\n"
    "  TELERAD_DEID_KEY         or this environment variable's value\n"
    "  --random-key             a random key for this run only (outputs cannot be linked to\n"
    "                           any other run)\n"
    "\n"
    "options (PS3.15 E.3):\n"
    "  -o, --out DIR            where to write (created if missing); required\n"
    "  --retain-uids            keep the original UIDs (Retain UIDs)\n"
    "  --retain-device          keep device identity: serial numbers, station names\n"
    "  --retain-institution     keep institution names and addresses\n"
    "  --retain-patient-chars   keep age, sex, size, weight, smoking and pregnancy status\n"
    "  --dates full|modified|remove\n"
    "                           keep dates, shift them by a keyed per-patient offset of\n"
    "                           -365..-1 days, or remove them (default remove)\n"
    "  --clean-descriptors      keep descriptions (study, series, protocol ...) reduced to an\n"
    "                           allow-list of radiology words, instead of removing them\n"
    "  --clean-structured       keep structured content (SR trees, acquisition context) with\n"
    "                           its text replaced, instead of replacing it whole\n"
    "  --clean-graphics         keep overlays, curves and graphic annotations, their text\n"
    "                           cleaned (their bitmaps are not inspected)\n"
    "  --retain-safe-private    keep the private attributes known to be safe (PS3.15 E.3.10)\n"
    "  --allow-burned-in        write instances whose pixels may show identity (warned)\n"
    "  -j, --jobs N             files processed in parallel (default: the number of CPUs)\n"
    "  --no-progress            no progress bar\n"
    "  -v, --verbose            name every file written\n"
    "  -h, --help               show this help\n"
    "\n"
    "Exit status: 0 if every DICOM file was de-identified and written, 1 if any failed or was\n"
    "held back, 2 on wrong usage (including no key).\n";

/* ---- the list of files -------------------------------------------------------------------- */

struct input {
    char *path;
    bool in_folder; /* found in a folder (taken only if it looks like DICOM), not named */
};

struct file_list {
    struct input *file;
    size_t count, cap;
};

static int add_file(struct file_list *l, const char *path, bool in_folder)
{
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 256;
        struct input *p = tr_reallocarray(l->file, cap, sizeof(*p));
        if (!p)
            return TR_ENOMEM;
        l->file = p;
        l->cap = cap;
    }
    struct input *in = &l->file[l->count];
    if (!(in->path = tr_strdup(path)))
        return TR_ENOMEM;
    in->in_folder = in_folder;
    l->count++;
    return 0;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(((const struct input *)a)->path, ((const struct input *)b)->path);
}

static void free_files(struct file_list *l)
{
    for (size_t i = 0; i < l->count; i++)
        tr_free(l->file[i].path);
    tr_free(l->file);
}

/* Files given by name are taken as they are; files found in folders only if they look like
 * DICOM ("DICM" at 128), others are counted as skipped (checked by the workers: see
 * looks_like_dicom). A folder's regular files are taken from readdir's d_type without a
 * stat; other entries (links, and file systems that do not fill d_type) are stat'd. */
static int walk(struct file_list *l, const char *path, int depth)
{
    struct stat st;
    if (stat(path, &st) < 0) {
        cli_error("anonymize: %s: %s", path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode))
        return add_file(l, path, depth > 0) < 0 ? -1 : 0;
    if (!S_ISDIR(st.st_mode) || depth > 64)
        return 0;
    DIR *d = opendir(path);
    if (!d) {
        cli_error("anonymize: %s: %s", path, strerror(errno));
        return -1;
    }
    int rc = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue; /* ".", "..", hidden files and our own temporary files */
        char child[4096];
        if (snprintf(child, sizeof(child), "%s/%s", path, de->d_name) >= (int)sizeof(child))
            continue;
        if (de->d_type == DT_REG) {
            if (add_file(l, child, true) < 0)
                rc = -1;
        } else if (walk(l, child, depth + 1) < 0) {
            rc = -1;
        }
    }
    closedir(d);
    return rc;
}

/* ---- the key ------------------------------------------------------------------------------ */

struct key {
    uint8_t bytes[DCM_DEID_MAX_KEY_LENGTH + 2];
    size_t length;
};

static int read_key_file(const char *path, struct key *k)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        cli_error("anonymize: cannot read the key file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && (st.st_mode & 077))
        fprintf(stderr,
                "telerad: warning: the key file %s can be read by other users "
                "(chmod 600 it)\n",
                path);
    k->length = fread(k->bytes, 1, sizeof(k->bytes), f);
    bool error = ferror(f), more = !feof(f) && fgetc(f) != EOF;
    fclose(f);
    if (error) {
        cli_error("anonymize: cannot read the key file %s", path);
        return -1;
    }
    if (k->length && k->bytes[k->length - 1] == '\n')
        k->length--;
    if (k->length && k->bytes[k->length - 1] == '\r')
        k->length--;
    if (more || k->length > DCM_DEID_MAX_KEY_LENGTH || k->length < DCM_DEID_MIN_KEY_LENGTH) {
        cli_error("anonymize: the key in %s must have %d to %d bytes", path,
                  DCM_DEID_MIN_KEY_LENGTH, DCM_DEID_MAX_KEY_LENGTH);
        return -1;
    }
    return 0;
}

static int get_key(const char *key_file, bool random_key, struct key *k)
{
    if (key_file)
        return read_key_file(key_file, k);
    if (random_key) {
        k->length = 32;
        if (getrandom(k->bytes, k->length, 0) != (ssize_t)k->length) {
            cli_error("anonymize: cannot get random bytes: %s", strerror(errno));
            return -1;
        }
        return 0;
    }
    const char *env = getenv("TELERAD_DEID_KEY");
    if (!env || !*env) {
        cli_error("anonymize: no key. The new UIDs, pseudonyms and date shifts are computed "
                  "from a secret key, so that the same key gives the same mapping in every "
                  "run: give --key-file FILE or set TELERAD_DEID_KEY (16 bytes or more), or "
                  "use --random-key for a one-off mapping nobody can reproduce");
        return -1;
    }
    size_t n = strlen(env);
    if (n < DCM_DEID_MIN_KEY_LENGTH || n > DCM_DEID_MAX_KEY_LENGTH) {
        cli_error("anonymize: TELERAD_DEID_KEY must have %d to %d bytes", DCM_DEID_MIN_KEY_LENGTH,
                  DCM_DEID_MAX_KEY_LENGTH);
        return -1;
    }
    memcpy(k->bytes, env, n);
    k->length = n;
    return 0;
}

/* ---- the work ----------------------------------------------------------------------------- */

struct failure {
    char *path, *reason;
};

/* Which input an output file belongs to: two inputs holding one instance (the same SOP
 * Instance UID, say in two transfer syntaxes) write one file, that of the input whose path
 * sorts first, whatever the order the threads finish in. */
struct claim {
    char *path;
    size_t input;
    struct claim *next;
};

struct job {
    const struct file_list *files;
    const struct dcm_deid_options *opt;
    const char *out_dir;
    bool allow_burned_in, verbose;
    struct claim **claims; /* hash table of output paths, under `lock` */
    size_t claim_buckets;
    atomic_size_t next, written, failed, held, burned_written, duplicates;
    atomic_size_t replaced;  /* written, then replaced by an earlier input's file */
    atomic_size_t dicomdirs; /* not copied: a DICOMDIR describes the input's layout */
    atomic_size_t skipped;   /* found in a folder, not DICOM */
    atomic_uint_fast64_t bytes;
    long pid;               /* in the temporary names */
    bool link_unnamed;      /* /proc/self/fd is there to link an O_TMPFILE file by */
    atomic_bool named_only; /* the output file system has no O_TMPFILE: temporary names */
    pthread_mutex_t lock;   /* report, failures, output */
    struct dcm_deid_report report;
    struct failure *failures;
    size_t failure_count, failure_cap;
    atomic_uint worker_ids;
};

static size_t path_hash(const char *s, size_t buckets)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h & (buckets - 1);
}

/* Under job->lock: the claim for `path`, created for `input` if absent (NULL when out of
 * memory). */
static struct claim *claim_for(struct job *job, const char *path, size_t input, bool *created)
{
    struct claim **slot = &job->claims[path_hash(path, job->claim_buckets)];
    *created = false;
    for (struct claim *c = *slot; c; c = c->next) {
        if (strcmp(c->path, path) == 0)
            return c;
    }
    *created = true;
    struct claim *c = tr_malloc(sizeof(*c));
    if (!c || !(c->path = tr_strdup(path))) {
        tr_free(c);
        return NULL;
    }
    c->input = input;
    c->next = *slot;
    *slot = c;
    return c;
}

static void free_claims(struct job *job)
{
    for (size_t i = 0; job->claims && i < job->claim_buckets; i++) {
        for (struct claim *c = job->claims[i], *next; c; c = next) {
            next = c->next;
            tr_free(c->path);
            tr_free(c);
        }
    }
    tr_free(job->claims);
}

static void record_failure(struct job *job, const char *path, const char *reason)
{
    pthread_mutex_lock(&job->lock);
    if (job->failure_count == job->failure_cap) {
        size_t cap = job->failure_cap ? job->failure_cap * 2 : 16;
        struct failure *f = tr_reallocarray(job->failures, cap, sizeof(*f));
        if (f) {
            job->failures = f;
            job->failure_cap = cap;
        }
    }
    if (job->failure_count < job->failure_cap) {
        struct failure *f = &job->failures[job->failure_count];
        f->path = tr_strdup(path);
        f->reason = tr_strdup(reason);
        if (f->path && f->reason) {
            job->failure_count++;
        } else {
            tr_free(f->path);
            tr_free(f->reason);
        }
    }
    pthread_mutex_unlock(&job->lock);
}

static const char *burned_in_reason(unsigned flags)
{
    if (flags & DCM_DEID_FLAG_BURNED_IN_ANNOTATION)
        return "Burned In Annotation is YES";
    if (flags & DCM_DEID_FLAG_RECOGNIZABLE_FEATURES)
        return "Recognizable Visual Features is YES";
    return "its SOP class usually has burned-in text and Burned In Annotation is absent";
}

static void set_reason(char *reason, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_reason(char *reason, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, size, fmt, ap); /* a long path may be cut: it is only a message */
    va_end(ap);
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) == 0 || errno == EEXIST)
        return 0;
    return -1;
}

/* What one worker keeps from file to file. */
struct worker {
    unsigned id;         /* in the temporary names */
    char made_dir[4096]; /* the study folder it created or found last ("" none) */
};

enum outcome { WRITTEN, FAILED, HELD_BACK, DUPLICATE, DICOMDIR, NOT_DICOM };

/* "DICM" at byte 128 (PS3.10 7.1): what a file found in a folder must have to be taken. */
static bool looks_like_dicom(int fd)
{
    unsigned char b[132];
    ssize_t n;
    do {
        n = pread(fd, b, sizeof(b), 0);
    } while (n < 0 && errno == EINTR);
    return n == (ssize_t)sizeof(b) && memcmp(b + 128, "DICM", 4) == 0;
}

/* An output being written: an unnamed file in its folder, or one under `tmp`. */
struct output {
    int fd;
    bool named; /* under tmp (no O_TMPFILE): renamed when published, unlinked if not */
};

/* Open the output in `dir` (created unless it is the worker's last): unnamed if the file
 * system can, else under `tmp`. */
static int open_output(struct job *job, struct worker *w, const char *dir, const char *tmp,
                       struct output *out, struct tr_error *err)
{
    bool made = strcmp(dir, w->made_dir) == 0;
    for (;;) {
        if (!made && make_dir(dir) < 0)
            return tr_error_set(err, TR_EIO, "cannot create %s: %s", dir, strerror(errno));
        out->named = !job->link_unnamed || atomic_load(&job->named_only);
        if (!out->named) {
            out->fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644);
            if (out->fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
                atomic_store(&job->named_only, true); /* not on this file system */
                out->named = true;
            }
        }
        if (out->named)
            out->fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (out->fd < 0 && errno == ENOENT && made) {
            made = false; /* the folder was removed since: make it again */
            continue;
        }
        if (out->fd < 0)
            return tr_error_set(err, TR_EIO, "cannot create a file in %s: %s", dir,
                                strerror(errno));
        snprintf(w->made_dir, sizeof(w->made_dir), "%s", dir);
        return 0;
    }
}

/* Give the whole output its final name, replacing a file of that name. */
static int publish_output(const struct output *out, const char *tmp, const char *final,
                          struct tr_error *err)
{
    if (!out->named) {
        /* open(2), O_TMPFILE: linkat through /proc makes the unnamed file visible. */
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", out->fd);
        if (linkat(AT_FDCWD, self, AT_FDCWD, final, AT_SYMLINK_FOLLOW) == 0)
            return 0;
        if (errno != EEXIST)
            return tr_error_set(err, TR_EIO, "cannot create %s: %s", final, strerror(errno));
        /* Replace the file there whole: a temporary name, then a rename over it. */
        if (linkat(AT_FDCWD, self, AT_FDCWD, tmp, AT_SYMLINK_FOLLOW) < 0)
            return tr_error_set(err, TR_EIO, "cannot create %s: %s", tmp, strerror(errno));
    }
    if (rename(tmp, final) < 0) {
        int e = errno;
        unlink(tmp);
        return tr_error_set(err, TR_EIO, "cannot rename to %s: %s", final, strerror(e));
    }
    return 0;
}

/* De-identify and write input `index`; a message in `reason` when it is not written. */
static enum outcome process(struct job *job, struct worker *w, size_t index, char *reason,
                            size_t size)
{
    const struct input *in = &job->files->file[index];
    const char *path = in->path;
    struct dcm_read_options ropt;
    dcm_read_options_init(&ropt);
    struct dcm_file *f = NULL;
    struct tr_error err = TR_ERROR_INIT;
    struct dcm_deid_report report;
    dcm_deid_report_init(&report);
    int rc;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = tr_error_set(&err, errno == ENOENT ? TR_ENOTFOUND : TR_EIO, "cannot open: %s",
                          strerror(errno));
    } else {
        /* A file read without error has "DICM" at 128 (no allow_no_meta): only a failed
         * read asks whether a file found in a folder was DICOM at all. */
        rc = dcm_file_read_fd(fd, &ropt, &f, &err);
        if (rc && in->in_folder && !looks_like_dicom(fd)) {
            close(fd);
            return NOT_DICOM;
        }
    }
    char sop_class[DCM_UID_MAX + 1] = "";
    if (rc == 0 &&
        (dcm_dataset_get_uid(f->dataset, DCM_TAG_SOPClassUID, sop_class, sizeof(sop_class)) == 0 ||
         dcm_dataset_get_uid(f->meta, DCM_TAG_MediaStorageSOPClassUID, sop_class,
                             sizeof(sop_class)) == 0) &&
        strcmp(sop_class, "1.2.840.10008.1.3.10") == 0) {
        dcm_file_free(f);
        close(fd);
        return DICOMDIR;
    }
    if (rc == 0)
        rc = dcm_deid_file(f, job->opt, &report, &err);
    enum outcome outcome = FAILED;
    char study[DCM_UID_MAX + 1], sop[DCM_UID_MAX + 1];
    char dir[4096], tmp[4096], final[4096];
    uint64_t bytes = 0;
    struct output out = {.fd = -1};
    if (rc) {
        set_reason(reason, size, "%s", err.message[0] ? err.message : tr_strerror(rc));
    } else if ((report.flags & DCM_DEID_FLAGS_PIXELS) && !job->allow_burned_in) {
        set_reason(reason, size,
                   "held back: its pixels may show identity (%s); --allow-burned-in writes it",
                   burned_in_reason(report.flags));
        outcome = HELD_BACK;
    } else if (dcm_dataset_get_uid(f->dataset, DCM_TAG_SOPInstanceUID, sop, sizeof(sop)) < 0) {
        set_reason(reason, size, "no SOP Instance UID (0008,0018): cannot name the output");
    } else {
        if (dcm_dataset_get_uid(f->dataset, DCM_TAG_StudyInstanceUID, study, sizeof(study)) < 0)
            snprintf(study, sizeof(study), "no-study-uid");
        if (snprintf(dir, sizeof(dir), "%s/%s", job->out_dir, study) >= (int)sizeof(dir) ||
            snprintf(tmp, sizeof(tmp), "%s/.%s.%ld.%u.tmp", dir, sop, job->pid, w->id) >=
                (int)sizeof(tmp) ||
            snprintf(final, sizeof(final), "%s/%s.dcm", dir, sop) >= (int)sizeof(final)) {
            set_reason(reason, size, "the output path is too long");
        } else {
            rc = open_output(job, w, dir, tmp, &out, &err);
            if (rc == 0)
                rc = dcm_file_write_fd(f, NULL, out.fd, fd, &bytes, &err);
            /* A named file is closed before it is renamed (a failed close is a failed write);
             * an unnamed one stays open to be linked. */
            if (out.fd >= 0 && out.named) {
                if (close(out.fd) < 0 && rc == 0)
                    rc = tr_error_set(&err, TR_EIO, "cannot write %s: %s", tmp, strerror(errno));
                out.fd = -1;
            }
            outcome = WRITTEN;
        }
    }
    dcm_file_free(f);
    if (fd >= 0)
        close(fd);
    if (outcome != WRITTEN)
        return outcome;
    /* The output is named under the lock, after the claim check: the file left in place is
     * that of the first input (in path order) holding this instance. */
    bool duplicate = false, published = false;
    pthread_mutex_lock(&job->lock);
    bool created = false;
    struct claim *claim = rc ? NULL : claim_for(job, final, index, &created);
    if (rc == 0 && !claim) {
        rc = tr_error_set(&err, TR_ENOMEM, "out of memory");
    } else if (rc == 0 && claim->input < index) {
        duplicate = true;
    } else if (rc == 0) {
        if (!created) { /* a later input wrote it first: it becomes the duplicate */
            atomic_fetch_add(&job->duplicates, 1);
            atomic_fetch_add(&job->replaced, 1);
        }
        claim->input = index;
        rc = publish_output(&out, tmp, final, &err);
        published = rc == 0;
    }
    if (out.fd >= 0) { /* unnamed: closed once linked (or dropped) */
        if (close(out.fd) < 0 && published) {
            rc = tr_error_set(&err, TR_EIO, "cannot write %s: %s", final, strerror(errno));
            unlink(final);
            published = false;
        }
        out.fd = -1;
    }
    if (rc == 0 && !duplicate) {
        dcm_deid_report_add(&job->report, &report);
        if (job->verbose)
            fprintf(stderr, "\r%s -> %s\n", path, final);
    }
    pthread_mutex_unlock(&job->lock);
    if (out.named && !published)
        unlink(tmp);
    if (duplicate) {
        set_reason(reason, size, "the same instance (SOP Instance UID) as another input");
        return DUPLICATE;
    }
    if (rc) {
        set_reason(reason, size, "%s", err.message);
        return FAILED;
    }
    if (report.flags & DCM_DEID_FLAGS_PIXELS)
        atomic_fetch_add(&job->burned_written, 1);
    atomic_fetch_add(&job->bytes, bytes);
    return WRITTEN;
}

static void *work(void *arg)
{
    struct job *job = arg;
    struct worker w = {.id = atomic_fetch_add(&job->worker_ids, 1)};
    for (;;) {
        size_t i = atomic_fetch_add(&job->next, 1);
        if (i >= job->files->count)
            break;
        char reason[TR_ERROR_MSG_MAX + 128];
        const char *path = job->files->file[i].path;
        switch (process(job, &w, i, reason, sizeof(reason))) {
        case WRITTEN: atomic_fetch_add(&job->written, 1); break;
        case NOT_DICOM: atomic_fetch_add(&job->skipped, 1); break;
        case DUPLICATE:
            atomic_fetch_add(&job->duplicates, 1);
            if (job->verbose) {
                pthread_mutex_lock(&job->lock);
                fprintf(stderr, "\r%s: %s: written once\n", path, reason);
                pthread_mutex_unlock(&job->lock);
            }
            break;
        case DICOMDIR: atomic_fetch_add(&job->dicomdirs, 1); break;
        case HELD_BACK:
            atomic_fetch_add(&job->held, 1);
            record_failure(job, path, reason);
            break;
        default:
            atomic_fetch_add(&job->failed, 1);
            record_failure(job, path, reason);
            break;
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

/* The DICOM files among the inputs: all but those found in folders without "DICM" (known
 * once they are read). */
static size_t files_total(struct job *job)
{
    return job->files->count - atomic_load(&job->skipped);
}

/* Files written and not replaced by an earlier input's (read apart, hence the guard). */
static size_t files_written(struct job *job)
{
    size_t w = atomic_load(&job->written), r = atomic_load(&job->replaced);
    return w > r ? w - r : 0;
}

static void progress(struct job *job, const struct timespec *t0, bool final)
{
    size_t written = files_written(job), failed = atomic_load(&job->failed),
           held = atomic_load(&job->held);
    size_t done =
        written + failed + held + atomic_load(&job->duplicates) + atomic_load(&job->dicomdirs);
    size_t total = files_total(job);
    double s = seconds_since(t0);
    double rate = s > 0 ? (double)written / s : 0;
    int width = 30, filled = total ? (int)((double)done / (double)total * width) : width;
    char bar[32];
    for (int i = 0; i < width; i++)
        bar[i] = i < filled ? '=' : ' ';
    bar[width] = '\0';
    pthread_mutex_lock(&job->lock);
    fprintf(stderr, "\r[%s] %zu/%zu files  %.1f inst/s  %zu failed  %zu held back%s", bar, done,
            total, rate, failed, held, final ? "\n" : "");
    fflush(stderr);
    pthread_mutex_unlock(&job->lock);
}

static bool parse_jobs(const char *s, int *jobs)
{
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || *end || n < 1 || n > 64)
        return false;
    *jobs = (int)n;
    return true;
}

static void summary(struct job *job, double seconds)
{
    size_t written = files_written(job), skipped = atomic_load(&job->skipped);
    const struct dcm_deid_report *r = &job->report;
    fprintf(stderr, "anonymized %zu of %zu files into %s in %.1f s (%.1f inst/s, %.1f MB/s)\n",
            written, files_total(job), job->out_dir, seconds,
            seconds > 0 ? (double)written / seconds : 0,
            seconds > 0 ? (double)atomic_load(&job->bytes) / 1e6 / seconds : 0);
    fprintf(stderr,
            "  elements: %lu dummy values, %lu emptied, %lu removed (%lu private), %lu cleaned, "
            "%lu kept; %lu UIDs mapped, %lu dates shifted, %lu safe private kept\n",
            r->dummied, r->emptied, r->removed, r->private_removed, r->cleaned, r->kept,
            r->uids_mapped, r->dates_shifted, r->private_retained);
    if (skipped)
        fprintf(stderr, "  %zu files in the folders are not DICOM and were skipped\n", skipped);
    size_t dicomdirs = atomic_load(&job->dicomdirs);
    if (dicomdirs)
        fprintf(stderr, "  %zu DICOMDIR files not copied (they describe the input's layout)\n",
                dicomdirs);
    size_t duplicates = atomic_load(&job->duplicates);
    if (duplicates)
        fprintf(stderr,
                "  %zu files hold an instance another input holds too (same SOP Instance "
                "UID): written once\n",
                duplicates);
    if (r->flags & DCM_DEID_FLAG_GRAPHICS_RETAINED)
        fprintf(stderr, "  warning: overlay or curve data was kept (--clean-graphics); its "
                        "bitmaps were not inspected\n");
    size_t burned = atomic_load(&job->burned_written);
    if (burned)
        fprintf(stderr,
                "  warning: %zu written instances may show identity in their pixels "
                "(--allow-burned-in)\n",
                burned);
    size_t held = atomic_load(&job->held), failed = atomic_load(&job->failed);
    if (held || failed) {
        fprintf(stderr, "%zu failed, %zu held back:\n", failed, held);
        size_t shown = TR_MIN(job->failure_count, (size_t)200);
        for (size_t i = 0; i < shown; i++)
            fprintf(stderr, "  %s: %s\n", job->failures[i].path, job->failures[i].reason);
        if (job->failure_count > shown)
            fprintf(stderr, "  ... and %zu more\n", job->failure_count - shown);
    }
}

int cmd_anonymize(int argc, char **argv)
{
    enum {
        O_KEY_FILE = 256,
        O_RANDOM_KEY,
        O_RETAIN_UIDS,
        O_RETAIN_DEVICE,
        O_RETAIN_INSTITUTION,
        O_RETAIN_PATIENT,
        O_DATES,
        O_CLEAN_DESC,
        O_CLEAN_STRUCT,
        O_CLEAN_GRAPHICS,
        O_SAFE_PRIVATE,
        O_ALLOW_BURNED,
        O_NO_PROGRESS,
    };
    static const struct option options[] = {
        {"out", required_argument, NULL, 'o'},
        {"key-file", required_argument, NULL, O_KEY_FILE},
        {"random-key", no_argument, NULL, O_RANDOM_KEY},
        {"retain-uids", no_argument, NULL, O_RETAIN_UIDS},
        {"retain-device", no_argument, NULL, O_RETAIN_DEVICE},
        {"retain-institution", no_argument, NULL, O_RETAIN_INSTITUTION},
        {"retain-patient-chars", no_argument, NULL, O_RETAIN_PATIENT},
        {"dates", required_argument, NULL, O_DATES},
        {"clean-descriptors", no_argument, NULL, O_CLEAN_DESC},
        {"clean-structured", no_argument, NULL, O_CLEAN_STRUCT},
        {"clean-graphics", no_argument, NULL, O_CLEAN_GRAPHICS},
        {"retain-safe-private", no_argument, NULL, O_SAFE_PRIVATE},
        {"allow-burned-in", no_argument, NULL, O_ALLOW_BURNED},
        {"jobs", required_argument, NULL, 'j'},
        {"no-progress", no_argument, NULL, O_NO_PROGRESS},
        {"verbose", no_argument, NULL, 'v'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *out_dir = NULL, *key_file = NULL;
    bool random_key = false, allow_burned_in = false, verbose = false;
    bool show_progress = isatty(STDERR_FILENO);
    unsigned opts = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int jobs = cpus < 1 ? 1 : cpus > 64 ? 64 : (int)cpus;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:j:vh", options, NULL)) != -1) {
        switch (c) {
        case 'o': out_dir = optarg; break;
        case O_KEY_FILE: key_file = optarg; break;
        case O_RANDOM_KEY: random_key = true; break;
        case O_RETAIN_UIDS: opts |= DCM_DEID_RETAIN_UIDS; break;
        case O_RETAIN_DEVICE: opts |= DCM_DEID_RETAIN_DEVICE_IDENTITY; break;
        case O_RETAIN_INSTITUTION: opts |= DCM_DEID_RETAIN_INSTITUTION_IDENTITY; break;
        case O_RETAIN_PATIENT: opts |= DCM_DEID_RETAIN_PATIENT_CHARACTERISTICS; break;
        case O_DATES:
            opts &= ~(unsigned)(DCM_DEID_RETAIN_FULL_DATES | DCM_DEID_RETAIN_MODIFIED_DATES);
            if (strcmp(optarg, "full") == 0) {
                opts |= DCM_DEID_RETAIN_FULL_DATES;
            } else if (strcmp(optarg, "modified") == 0) {
                opts |= DCM_DEID_RETAIN_MODIFIED_DATES;
            } else if (strcmp(optarg, "remove") != 0) {
                cli_error("anonymize: --dates is full, modified or remove");
                return CLI_USAGE;
            }
            break;
        case O_CLEAN_DESC: opts |= DCM_DEID_CLEAN_DESCRIPTORS; break;
        case O_CLEAN_STRUCT: opts |= DCM_DEID_CLEAN_STRUCTURED_CONTENT; break;
        case O_CLEAN_GRAPHICS: opts |= DCM_DEID_CLEAN_GRAPHICS; break;
        case O_SAFE_PRIVATE: opts |= DCM_DEID_RETAIN_SAFE_PRIVATE; break;
        case O_ALLOW_BURNED: allow_burned_in = true; break;
        case 'j':
            if (!parse_jobs(optarg, &jobs)) {
                cli_error("anonymize: --jobs takes a number from 1 to 64");
                return CLI_USAGE;
            }
            break;
        case O_NO_PROGRESS: show_progress = false; break;
        case 'v': verbose = true; break;
        case 'h': fputs(anonymize_help, stdout); return CLI_OK;
        default: fputs(anonymize_help, stderr); return CLI_USAGE;
        }
    }
    if (!out_dir) {
        cli_error("anonymize: give the output folder with --out DIR (try 'telerad anonymize "
                  "--help')");
        return CLI_USAGE;
    }
    if (optind >= argc) {
        cli_error("anonymize: give files or folders to de-identify (try 'telerad anonymize "
                  "--help')");
        return CLI_USAGE;
    }
    if (key_file && random_key) {
        cli_error("anonymize: --key-file and --random-key exclude each other");
        return CLI_USAGE;
    }
    struct key *key = tr_calloc(1, sizeof(*key));
    if (!key) {
        cli_error("anonymize: out of memory");
        return CLI_FAILED;
    }
    if (get_key(key_file, random_key, key) < 0) {
        OPENSSL_cleanse(key, sizeof(*key));
        tr_free(key);
        return CLI_USAGE;
    }
    struct dcm_deid_options opt;
    dcm_deid_options_init(&opt);
    opt.options = opts;
    opt.key = key->bytes;
    opt.key_length = key->length;
    struct tr_error prepare_err = TR_ERROR_INIT;
    if (dcm_deid_options_prepare(&opt, &prepare_err) < 0) {
        cli_error("anonymize: %s", prepare_err.message);
        OPENSSL_cleanse(key, sizeof(*key));
        tr_free(key);
        return CLI_FAILED;
    }

    int status = CLI_OK;
    struct file_list files = {0};
    for (int i = optind; i < argc; i++) {
        if (walk(&files, argv[i], 0) < 0)
            status = CLI_FAILED;
    }
    if (mkdir(out_dir, 0755) < 0 && errno != EEXIST) {
        cli_error("anonymize: cannot create %s: %s", out_dir, strerror(errno));
        free_files(&files);
        dcm_deid_options_release(&opt);
        OPENSSL_cleanse(key, sizeof(*key));
        tr_free(key);
        return CLI_FAILED;
    }
    /* Path order makes the outcome independent of the threads (see struct claim). */
    if (files.count > 1)
        qsort(files.file, files.count, sizeof(files.file[0]), compare_paths);
    struct job job = {.files = &files,
                      .opt = &opt,
                      .out_dir = out_dir,
                      .allow_burned_in = allow_burned_in,
                      .verbose = verbose,
                      .pid = (long)getpid(),
                      .link_unnamed = access("/proc/self/fd", X_OK) == 0};
    job.claim_buckets = 64;
    while (job.claim_buckets < files.count * 2)
        job.claim_buckets *= 2;
    job.claims = tr_calloc(job.claim_buckets, sizeof(job.claims[0]));
    if (!job.claims) {
        cli_error("anonymize: out of memory");
        free_files(&files);
        dcm_deid_options_release(&opt);
        OPENSSL_cleanse(key, sizeof(*key));
        tr_free(key);
        return CLI_FAILED;
    }
    dcm_deid_report_init(&job.report);
    pthread_mutex_init(&job.lock, NULL);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pthread_t threads[64];
    int started = 0;
    if ((size_t)jobs > files.count)
        jobs = files.count ? (int)files.count : 1;
    for (int i = 0; i < jobs; i++) {
        if (pthread_create(&threads[started], NULL, work, &job) == 0)
            started++;
    }
    if (started == 0)
        work(&job);
    while (show_progress && atomic_load(&job.next) < files.count) {
        progress(&job, &t0, false);
        usleep(200000);
    }
    for (int i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if (show_progress)
        progress(&job, &t0, true);
    summary(&job, seconds_since(&t0));
    if (atomic_load(&job.failed) || atomic_load(&job.held))
        status = CLI_FAILED;
    for (size_t i = 0; i < job.failure_count; i++) {
        tr_free(job.failures[i].path);
        tr_free(job.failures[i].reason);
    }
    tr_free(job.failures);
    free_claims(&job);
    pthread_mutex_destroy(&job.lock);
    free_files(&files);
    dcm_deid_options_release(&opt);
    OPENSSL_cleanse(key, sizeof(*key));
    tr_free(key);
    return status;
}
