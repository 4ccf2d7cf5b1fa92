/*
 * archive.c - the archive's life: opening the object store and the index, reconciling them at
 * start (a crash may leave objects without rows, never acknowledged ones missing), the study
 * stability timer, deletion, sender -> site mapping.
 */
#include "common.h"
#include "archive_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

void arc_config_init(struct arc_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->data_dir = "telerad-data";
    cfg->duplicates = ARC_DUPLICATE_REJECT;
    cfg->min_free_bytes = 256ull << 20;
    cfg->pn_case_insensitive = true;
    cfg->stable_after = 60;
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

const char *arc_site_for_ae(struct arc_archive *a, const char *ae_title)
{
    for (const struct arc_site_ae *s = a->cfg.sites; s && s->ae_title; s++) {
        if (strcmp(s->ae_title, ae_title) == 0)
            return s->site;
    }
    return a->cfg.unknown_ae == ARC_UNKNOWN_AE_REJECT ? NULL : "";
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

int arc_index_object(struct arc_archive *a, const char *key, const char *site,
                     const char *source_ae, struct tr_error *err)
{
    char path[PATH_MAX];
    if (arc_object_path(a->store, key, path, sizeof(path)) < 0)
        return tr_error_set(err, TR_EINVAL, "invalid object key %s", key);
    struct dcm_read_options opt;
    dcm_read_options_init(&opt);
    opt.header_only = true;
    struct dcm_file *f;
    int rc = dcm_file_read(path, &opt, &f, err);
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
        r->size = f->size;
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
};

static int collect_key(void *ctx, const char *key)
{
    struct reconcile_ctx *rc = ctx;
    return set_add(&rc->indexed, key) < 0 ? -1 : 0;
}

static void quarantine(struct arc_archive *a, const char *key)
{
    char from[PATH_MAX], dir[PATH_MAX], to[PATH_MAX + 64];
    if (arc_object_path(a->store, key, from, sizeof(from)) < 0)
        return;
    if (snprintf(dir, sizeof(dir), "%s/quarantine", a->data_dir) >= (int)sizeof(dir))
        return;
    mkdir(dir, 0750);
    const char *base = strrchr(key, '/');
    snprintf(to, sizeof(to), "%s/%s", dir, base ? base + 1 : key);
    rename(from, to);
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
    char path[PATH_MAX];
    char source[17] = "";
    if (arc_object_path(a->store, key, path, sizeof(path)) == 0) {
        struct dcm_read_options opt;
        dcm_read_options_init(&opt);
        opt.header_only = true;
        struct dcm_file *f;
        if (dcm_file_read(path, &opt, &f, NULL) == 0) {
            dcm_dataset_get_string(f->meta, DCM_TAG_SourceApplicationEntityTitle, 0, source,
                                   sizeof(source));
            dcm_file_free(f);
        }
    }
    const char *site = arc_site_for_ae(a, source);
    if (arc_index_object(a, key, site ? site : "", source, &err) < 0) {
        arc_log(a, SCP_LOG_WARNING, "object %s cannot be indexed (%s): moved to quarantine", key,
                err.message);
        quarantine(a, key);
        a->reconcile.unreadable++;
        return 0;
    }
    a->reconcile.indexed++;
    return 0;
}

static int reconcile(struct arc_archive *a, struct tr_error *err)
{
    struct reconcile_ctx ctx = {.a = a};
    int rc = arc_index_each_object(a->index, collect_key, &ctx, err);
    if (rc == 0)
        rc = arc_objstore_reconcile(a->store, check_object, &ctx, err);
    /* What is left in the set: rows whose object is gone. */
    for (size_t i = 0; rc == 0 && i < ctx.indexed.cap; i++) {
        const char *key = ctx.indexed.slot[i];
        if (!key || !*key)
            continue;
        if (arc_index_forget_object(a->index, key, err) == 0)
            a->reconcile.forgotten++;
    }
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
    int rc = arc_objstore_open_fs(a->data_dir, &a->store, err);
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
