/*
 * archive_int.h - private header of the archive (src/services/archive).
 */
#ifndef ARC_ARCHIVE_INT_H
#define ARC_ARCHIVE_INT_H

#include <limits.h>
#include <pthread.h>

#include "archive.h"
#include "index.h"

struct arc_archive {
    struct arc_config cfg;
    char data_dir[PATH_MAX];
    char index_url[PATH_MAX + 16];
    struct arc_objstore *store;
    struct arc_index *index;
    bool sites_configured;
    bool (*resolve_site)(void *ctx, const char *ae, char *site, size_t size);
    void *resolve_ctx;
    struct arc_reconcile_stats reconcile;
    /* the stability timer */
    pthread_t timer;
    bool timer_started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping;
};

void arc_log(struct arc_archive *a, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The object key of an instance: "<2 hex digits of a hash of the study>/<Study Instance UID>/
 * <SOP Instance UID>.dcm": a study's objects share a directory. */
void arc_object_key(const char *study_uid, const char *sop_instance, char *key, size_t size);
/* Read the header (up to the pixel data) of a stored object: from its file on a filesystem,
 * by ranged reads on S3 (64 KiB, more when the header is longer). *object_size (optional) is
 * the stored object's size. */
int arc_read_header(struct arc_objstore *s, const char *key, struct dcm_file **out,
                    uint64_t *object_size, struct tr_error *err);
/* Index one stored object from its header (reconciliation, import). */
int arc_index_object(struct arc_archive *a, const char *key, const char *site,
                     const char *source_ae, struct tr_error *err);

#endif
