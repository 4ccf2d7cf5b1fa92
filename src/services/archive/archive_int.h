/*
 * archive_int.h - private header of the archive (src/services/archive).
 */
#ifndef ARC_ARCHIVE_INT_H
#define ARC_ARCHIVE_INT_H

#include <limits.h>

#include "archive.h"

struct arc_archive {
    struct arc_config cfg;
    char data_dir[PATH_MAX];
    struct arc_objstore *store;
};

void arc_log(struct arc_archive *a, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The object key of an instance: "<2 hex digits of a hash>/<SOP Instance UID>.dcm". */
void arc_object_key(const char *sop_instance, char *key, size_t size);

#endif
