/*
 * archive.c - the archive's life: opening the object store and the index, reconciling them at
 * start (a crash may leave objects without rows, never acknowledged ones missing), the study
 * stability timer, deletion, sender -> site mapping.
 */
#include "common.h"
#include "archive_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void arc_config_init(struct arc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->data_dir = "telerad-data";
    cfg->duplicates = ARC_DUPLICATE_REJECT;
    cfg->min_free_bytes = 256ull << 20;
    cfg->pn_case_insensitive = true;
    cfg->stable_after = 60;
    cfg->reconcile_grace = -1;
}

int arc_duplicate_policy_parse(const char *text, enum arc_duplicate_policy *out)
{
    static const struct {
        const char *name;
        enum arc_duplicate_policy policy;
    } names[] = {{"reject", ARC_DUPLICATE_REJECT},
                 {"replace", ARC_DUPLICATE_REPLACE},
                 {"keep-first", ARC_DUPLICATE_KEEP_FIRST}};
    for (size_t i = 0; i < TR_ARRAY_SIZE(names); i++) {
        if (strcmp(text, names[i].name) == 0) {
            *out = names[i].policy;
            return 0;
        }
    }
    return TR_EINVAL;
}

void arc_log(struct arc_archive *a, int level, const char *fmt, ...)
{
    if (!a->cfg.log)
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    a->cfg.log(a->cfg.log_ctx, level, line);
}

void arc_object_key(const char *study_uid, const char *sop_instance, char *key, size_t size)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)study_uid; *p; p++)
        h = (h ^ *p) * 16777619u;
    snprintf(key, size, "%02x/%s/%s.dcm", (unsigned)(h >> 24), study_uid, sop_instance);
}

int arc_site_of_ae(struct arc_archive *a, const char *ae_title, char *site, size_t size)
{
    for (const struct arc_site_ae *s = a->cfg.sites; s && s->ae_title; s++) {
        if (strcmp(s->ae_title, ae_title) == 0) {
            snprintf(site, size, "%s", s->site);
            return 0;
        }
    }
    if (a->resolve_site && a->resolve_site(a->resolve_ctx, ae_title, site, size))
        return 0;
    snprintf(site, size, "%s", "");
    return a->cfg.unknown_ae == ARC_UNKNOWN_AE_REJECT ? TR_ENOTFOUND : 1;
}

void arc_set_site_resolver(struct arc_archive *a,
                           bool (*resolve)(void *ctx, const char *ae, char *site, size_t size),
                           void *ctx)
{
    a->resolve_site = resolve;
    a->resolve_ctx = ctx;
}

void arc_set_security(struct arc_archive *a,
                      int (*check_identity)(void *ctx, const struct pdu_user_identity *id,
                                            const char *peer, char *site, size_t site_size),
                      void *identity_ctx, bool require_identity,
                      void (*audit)(void *ctx, const char *calling_ae, const char *peer,
                                    const char *action, const char *outcome, const char *object,
                                    const char *site),
                      void *audit_ctx)
{
    a->cfg.check_identity = check_identity;
    a->cfg.identity_ctx = identity_ctx;
    a->cfg.require_identity = require_identity;
    a->cfg.audit = audit;
    a->cfg.audit_ctx = audit_ctx;
}

const char *arc_index_url(struct arc_archive *a)
{
    return a->index_url;
}

struct arc_objstore *arc_objects(struct arc_archive *a)
{
    return a->store;
}

struct arc_index *arc_index(struct arc_archive *a)
{
    return a->index;
}

void arc_last_reconcile(struct arc_archive *a, struct arc_reconcile_stats *s)
{
    *s = a->reconcile;
}

/* ---- indexing a stored object ------------------------------------------------------------- */

int arc_read_header(struct arc_objstore *s, const char *key, struct dcm_file **out,
                    uint64_t *object_size, struct tr_error *err)
{
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    /* A filesystem hands out the whole object (the header read maps it and stops before the
     * pixel data, as always); S3 a prefix, grown until the header fits. */
    for (uint64_t want = 64u << 10;; want *= 8) {
        struct arc_object_handle *h;
        int rc = arc_object_open_range(s, key, 0, want, &h, err);
        if (rc)
            return rc;
        struct dcm_file *f = NULL;
        struct tr_error rerr = TR_ERROR_INIT;
        rc = dcm_file_read(arc_object_handle_path(h), &opt, &f, &rerr);
        bool whole = arc_object_handle_complete(h) && arc_object_handle_offset(h) == 0;
        uint64_t size = arc_object_handle_object_size(h);
        arc_object_close(h);
        if (rc == 0 && (whole || f->stopped_before_pixels)) {
            if (object_size)
                *object_size = size;
            *out = f;
            return 0;
        }
        dcm_file_free(f);
        if (whole || want >= size)
            return tr_error_set(err, rc ? rerr.code : TR_EFORMAT, "object %s: %s", key,
                                rc ? rerr.message : "cannot read its header");
    }
}

int arc_index_object(struct arc_archive *a, const char *key, const char *site,
                     const char *source_ae, struct tr_error *err)
{
    struct dcm_file *f;
    uint64_t object_size = 0;
    int rc = arc_read_header(a->store, key, &f, &object_size, err);
    if (rc)
        return rc;
    struct arc_record *r = tr_calloc(1, sizeof(*r));
    if (!r) {
        dcm_file_free(f);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    rc = arc_record_from_dataset(r, f->dataset, err);
    if (rc == 0) {
        snprintf(r->site, sizeof(r->site), "%s", site ? site : "");
        snprintf(r->transfer_syntax, sizeof(r->transfer_syntax), "%s", f->ts_uid);
        snprintf(r->object_key, sizeof(r->object_key), "%s", key);
        snprintf(r->source_ae, sizeof(r->source_ae), "%s", source_ae ? source_ae : "");
        if (!r->source_ae[0])
            dcm_dataset_get_string(f->meta, DCM_TAG_SourceApplicationEntityTitle, 0, r->source_ae,
                                   sizeof(r->source_ae));
        r->size = object_size;
        rc = arc_index_add(a->index, r, err);
    }
    tr_free(r);
    dcm_file_free(f);
    return rc;
}

/* ---- reconciliation ----------------------------------------------------------------------- */

/* A set of strings (open addressing), for the index's object keys. */
struct key_set {
    char **slot;
    size_t cap, count;
};

static uint64_t hash_key(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int set_add(struct key_set *set, const char *key)
{
    if ((set->count + 1) * 2 > set->cap) {
        size_t cap = set->cap ? set->cap * 2 : 1024;
        char **slot = tr_calloc(cap, sizeof(*slot));
        if (!slot)
            return TR_ENOMEM;
        for (size_t i = 0; i < set->cap; i++) {
            if (!set->slot[i])
                continue;
            size_t j = hash_key(set->slot[i]) & (cap - 1);
            while (slot[j])
                j = (j + 1) & (cap - 1);
            slot[j] = set->slot[i];
        }
        tr_free(set->slot);
        set->slot = slot;
        set->cap = cap;
    }
    size_t j = hash_key(key) & (set->cap - 1);
    while (set->slot[j]) {
        if (strcmp(set->slot[j], key) == 0)
            return 0;
        j = (j + 1) & (set->cap - 1);
    }
    if (!(set->slot[j] = tr_strdup(key)))
        return TR_ENOMEM;
    set->count++;
    return 0;
}

/* Remove `key` from the set; true if it was there. */
static bool set_take(struct key_set *set, const char *key)
{
    if (!set->cap)
        return false;
    size_t j = hash_key(key) & (set->cap - 1);
    while (set->slot[j]) {
        if (strcmp(set->slot[j], key) == 0) {
            /* Keep probing chains intact: mark as taken with an empty string. */
            set->slot[j][0] = '\0';
            return true;
        }
        j = (j + 1) & (set->cap - 1);
    }
    return false;
}

static void set_free(struct key_set *set)
{
    for (size_t i = 0; i < set->cap; i++)
        tr_free(set->slot[i]);
    tr_free(set->slot);
}

struct reconcile_ctx {
    struct arc_archive *a;
    struct key_set indexed;
    size_t total; /* indexed objects */
};

static int collect_key(void *ctx, const char *key)
{
    struct reconcile_ctx *rc = ctx;
    rc->total++;
    return set_add(&rc->indexed, key) < 0 ? -1 : 0;
}

/* Copy a file (a quarantined object from S3's cache). */
static int copy_file(const char *from, const char *to)
{
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return TR_EIO;
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int rc = out < 0 ? TR_EIO : 0;
    char buf[65536];
    for (ssize_t n; rc == 0 && (n = read(in, buf, sizeof(buf))) != 0;) {
        if (n < 0 && errno == EINTR)
            continue;
        struct tr_sink sink = tr_sink_fd(&out);
        rc = n < 0 ? TR_EIO : tr_sink_write(&sink, buf, (size_t)n);
    }
    if (rc == 0 && fsync(out) < 0)
        rc = TR_EIO;
    close(in);
    if (out >= 0)
        close(out);
    return rc;
}

/* Move an unreadable object out of the store into DATA/quarantine (for a person to look at). */
static void quarantine(struct arc_archive *a, const char *key)
{
    char from[PATH_MAX], dir[PATH_MAX], to[PATH_MAX + 64];
    if (snprintf(dir, sizeof(dir), "%s/quarantine", a->data_dir) >= (int)sizeof(dir))
        return;
    mkdir(dir, 0750);
    const char *base = strrchr(key, '/');
    snprintf(to, sizeof(to), "%s/%s", dir, base ? base + 1 : key);
    if (arc_object_path(a->store, key, from, sizeof(from)) == 0) {
        rename(from, to);
        return;
    }
    /* S3: a local copy first, then the object goes from the bucket. */
    struct arc_object_handle *h;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_object_open(a->store, key, &h, &err) < 0) {
        arc_log(a, SCP_LOG_WARNING, "quarantine of %s: %s", key, err.message);
        return;
    }
    int rc = copy_file(arc_object_handle_path(h), to);
    arc_object_close(h);
    if (rc == 0)
        rc = arc_object_delete(a->store, key, &err);
    if (rc)
        arc_log(a, SCP_LOG_WARNING, "quarantine of %s: %s", key,
                err.code ? err.message : "cannot copy it");
}

static int check_object(void *ctx, const char *key, uint64_t size)
{
    struct reconcile_ctx *rc = ctx;
    struct arc_archive *a = rc->a;
    (void)size;
    if (set_take(&rc->indexed, key))
        return 0;
    /* An object without its index row: stored, then the process stopped before the row was
     * committed (so it was never acknowledged). Index it now. The site is unknown here: the
     * source AE title in its meta group says who sent it. */
    struct tr_error err = TR_ERROR_INIT;
    char source[17] = "";
    struct dcm_file *f;
    if (arc_read_header(a->store, key, &f, NULL, NULL) == 0) {
        dcm_dataset_get_string(f->meta, DCM_TAG_SourceApplicationEntityTitle, 0, source,
                               sizeof(source));
        dcm_file_free(f);
    }
    char site[ARC_SITE_MAX];
    arc_site_of_ae(a, source, site, sizeof(site));
    if (arc_index_object(a, key, site, source, &err) < 0) {
        arc_log(a, SCP_LOG_WARNING, "object %s cannot be indexed (%s): moved to quarantine", key,
                err.message);
        quarantine(a, key);
        a->reconcile.unreadable++;
        return 0;
    }
    a->reconcile.indexed++;
    return 0;
}

/* A temporary file left by a crash (arc_objstore_recover_puts): is it the whole object an
 * index row describes? Its header names the object's key; the row's size and checksum say
 * whether every byte of it reached the disk. */
static int recover_decide(void *ctx, const char *temp, char *key, size_t key_size)
{
    struct arc_archive *a = ctx;
    struct dcm_read_options ro;
    dcm_read_options_init(&ro);
    ro.header_only = true;
    struct dcm_file *f;
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_file_read(temp, &ro, &f, &err) < 0)
        return 0;
    char study[DCM_UID_MAX + 1], sop[DCM_UID_MAX + 1];
    bool named = dcm_dataset_get_uid(f->dataset, DCM_TAG_StudyInstanceUID, study,
                                     sizeof(study)) >= 0 &&
                 dcm_dataset_get_uid(f->dataset, DCM_TAG_SOPInstanceUID, sop, sizeof(sop)) >= 0;
    dcm_file_free(f);
    if (!named)
        return 0;
    arc_object_key(study, sop, key, key_size);
    uint64_t size, sum, fsize, fsum;
    bool has_sum;
    if (arc_index_object_checksum(a->index, key, &size, &has_sum, &sum, &err) < 0 || !has_sum ||
        arc_file_checksum(temp, &fsum, &fsize, &err) < 0)
        return 0;
    return size == fsize && sum == fsum ? 1 : 0;
}

#define RECONCILE_GRACE_S 600 /* several nodes: longer than any upload, retries included */

static int reconcile(struct arc_archive *a, struct tr_error *err)
{
    struct reconcile_ctx ctx = {.a = a};
    /* First the objects whose last step (a directory fsync) the crash interrupted. */
    struct arc_recover_stats rs;
    int rc = arc_objstore_recover_puts(a->store, recover_decide, a, &rs, err);
    if (rc == 0 && (rs.restored || rs.discarded))
        arc_log(a, SCP_LOG_WARNING,
                "after a crash: %zu stored objects put back under their names, %zu temporary "
                "files of unfinished stores removed",
                rs.restored, rs.discarded);
    a->reconcile.restored = rs.restored;
    if (rc == 0)
        rc = arc_index_each_object(a->index, collect_key, &ctx, err);
    if (rc == 0)
        rc = arc_objstore_reconcile(a->store, check_object, &ctx, err);
    /* What is left in the set: rows whose object is gone. A crash leaves a few; most of the
     * index missing means the wrong data directory or an unmounted disk: refuse rather than
     * forget the archive. */
    size_t missing = 0, total = ctx.total;
    for (size_t i = 0; rc == 0 && i < ctx.indexed.cap; i++)
        missing += ctx.indexed.slot[i] && *ctx.indexed.slot[i];
    if (rc == 0 && missing > 50 && missing * 20 > total && !a->cfg.reconcile_force) {
        set_free(&ctx.indexed);
        return tr_error_set(err, TR_EINVAL,
                            "%zu of the %zu indexed objects are missing from the object store in "
                            "%s: is this the right data directory, and is its disk mounted? "
                            "Refusing to forget them (start with --reconcile-force to accept)",
                            missing, total, a->data_dir);
    }
    /* Rows younger than the grace are spared: with several nodes on one index and bucket,
     * another node may have committed the row of an instance whose upload is still under
     * way (ingest commits both at once, and answers once both are done). A row left by a node
     * that died mid-upload (never acknowledged) goes at a start after the grace. One node
     * (SQLite) needs no grace: nothing else writes while it starts. */
    int grace = a->cfg.reconcile_grace >= 0 ? a->cfg.reconcile_grace
                : strncmp(a->index_url, "postgres", 8) == 0 ? RECONCILE_GRACE_S : 0;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t before = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 - (int64_t)grace * 1000;
    size_t spared = 0;
    for (size_t i = 0; rc == 0 && i < ctx.indexed.cap; i++) {
        const char *key = ctx.indexed.slot[i];
        if (!key || !*key)
            continue;
        int frc = arc_index_forget_object_before(a->index, key, before, err);
        if (frc == 1)
            a->reconcile.forgotten++;
        else if (frc == 0)
            spared++;
    }
    if (spared)
        arc_log(a, SCP_LOG_INFO,
                "reconciliation: %zu recent rows without object kept (another node may be "
                "uploading them)",
                spared);
    set_free(&ctx.indexed);
    if (a->reconcile.indexed || a->reconcile.forgotten || a->reconcile.unreadable)
        arc_log(a, SCP_LOG_WARNING,
                "reconciled the index with the object store: %zu objects indexed, %zu rows "
                "without object removed, %zu unreadable objects quarantined",
                a->reconcile.indexed, a->reconcile.forgotten, a->reconcile.unreadable);
    return rc;
}

/* ---- the stability timer ------------------------------------------------------------------ */

static void *timer_main(void *arg)
{
    struct arc_archive *a = arg;
    pthread_mutex_lock(&a->lock);
    while (!a->stopping) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 1;
        pthread_cond_timedwait(&a->wake, &a->lock, &until);
        if (a->stopping)
            break;
        pthread_mutex_unlock(&a->lock);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        struct tr_error err = TR_ERROR_INIT;
        int n = arc_index_mark_stable(a->index, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000,
                                      &err);
        if (n < 0)
            arc_log(a, SCP_LOG_WARNING, "study stability: %s", err.message);
        else if (n > 0)
            arc_log(a, SCP_LOG_DEBUG, "%d studies became stable", n);
        pthread_mutex_lock(&a->lock);
    }
    pthread_mutex_unlock(&a->lock);
    return NULL;
}

/* ---- open / close ------------------------------------------------------------------------- */

int arc_open(const struct arc_config *cfg, struct arc_archive **out, struct tr_error *err)
{
    struct arc_archive *a = tr_calloc(1, sizeof(*a));
    if (!a)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    a->cfg = *cfg;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->wake, NULL);
    snprintf(a->data_dir, sizeof(a->data_dir), "%s", cfg->data_dir ? cfg->data_dir : "telerad-data");
    a->cfg.data_dir = a->data_dir;
    int n = cfg->index_url && *cfg->index_url
                ? snprintf(a->index_url, sizeof(a->index_url), "%s", cfg->index_url)
                : snprintf(a->index_url, sizeof(a->index_url), "sqlite:%s/index.sqlite",
                           a->data_dir);
    if (n < 0 || (size_t)n >= sizeof(a->index_url)) {
        tr_free(a);
        return tr_error_set(err, TR_ELIMIT, "the index location is too long");
    }
    a->cfg.index_url = a->index_url;
    a->cfg.s3 = NULL; /* borrowed for the call only */
    int rc;
    if (cfg->s3) {
        struct arc_s3_options o = *cfg->s3;
        if (!o.log) {
            o.log = cfg->log;
            o.log_ctx = cfg->log_ctx;
        }
        rc = arc_objstore_open_s3(&o, a->data_dir, &a->store, err);
    } else {
        rc = arc_objstore_open_fs(a->data_dir, &a->store, err);
    }
    if (rc == 0) {
        struct arc_index_options io;
        arc_index_options_init(&io);
        io.url = a->index_url;
        io.pn_case_insensitive = cfg->pn_case_insensitive;
        io.stable_after = cfg->stable_after;
        rc = arc_index_open(&io, &a->index, err);
    }
    if (rc == 0)
        rc = reconcile(a, err);
    if (rc == 0 && pthread_create(&a->timer, NULL, timer_main, a) == 0)
        a->timer_started = true;
    if (rc) {
        arc_close(a);
        return rc;
    }
    *out = a;
    return 0;
}

void arc_close(struct arc_archive *a)
{
    if (!a)
        return;
    if (a->timer_started) {
        pthread_mutex_lock(&a->lock);
        a->stopping = true;
        pthread_cond_signal(&a->wake);
        pthread_mutex_unlock(&a->lock);
        pthread_join(a->timer, NULL);
    }
    arc_index_close(a->index);
    arc_objstore_close(a->store);
    pthread_mutex_destroy(&a->lock);
    pthread_cond_destroy(&a->wake);
    tr_free(a);
}

int arc_delete_study(struct arc_archive *a, const char *site, const char *study_uid,
                     size_t *instances, struct tr_error *err)
{
    /* Objects first, then rows: a crash in between leaves rows whose objects are gone, which
     * reconciliation removes at the next start; the other order would leave objects without
     * rows, which reconciliation would index again (bringing the study back). */
    struct arc_query q = {.level = ARC_LEVEL_STUDY};
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    int rc = dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, study_uid);
    const char *sites[2] = {site, NULL};
    q.keys = keys;
    q.sites = site ? sites : NULL;
    struct arc_instance_ref *refs = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = arc_index_instances(a->index, &q, &refs, &n, err);
    else
        rc = tr_error_set(err, TR_EINVAL, "invalid Study Instance UID %s", study_uid);
    dcm_dataset_free(keys);
    if (rc)
        return rc;
    if (n == 0) {
        tr_free(refs);
        return tr_error_set(err, TR_ENOTFOUND, "no study %s", study_uid);
    }
    for (size_t i = 0; i < n; i++) {
        struct tr_error derr = TR_ERROR_INIT;
        if (arc_object_delete(a->store, refs[i].object_key, &derr) < 0)
            arc_log(a, SCP_LOG_WARNING, "deleting %s: %s", refs[i].object_key, derr.message);
    }
    tr_free(refs);
    char **left;
    size_t count;
    rc = arc_index_delete_study(a->index, site, study_uid, &left, &count, err);
    for (size_t i = 0; rc == 0 && i < count; i++)
        tr_free(left[i]);
    if (rc == 0)
        tr_free(left);
    if (rc)
        return rc;
    if (instances)
        *instances = n;
    arc_log(a, SCP_LOG_INFO, "study %s deleted (%zu instances)", study_uid, n);
    return 0;
}
