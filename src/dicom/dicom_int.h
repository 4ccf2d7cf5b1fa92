/*
 * dicom_int.h - private header of the DICOM library (src/dicom). Not for other layers.
 */
#ifndef DCM_DICOM_INT_H
#define DCM_DICOM_INT_H

#include <stdatomic.h>

#include "common.h"
#include "dcm.h"

/* ---- internals shared by the dataset, reader and writer ---- */

/* A buffer that element values point into: a mapped file or a heap block. */
struct dcm_source {
    _Atomic unsigned refs;
    void *map;                /* munmap(map, map_length) when the last reference goes */
    size_t map_length;
    void *heap;               /* or tr_free(heap) */
};

struct dcm_source_ref {
    struct dcm_source *source;
    struct dcm_source_ref *next;
};

struct dcm_source *dcm_source_new_heap(void *heap);
struct dcm_source *dcm_source_new_map(void *map, size_t length);
void dcm_source_unref(struct dcm_source *src);

struct dcm_root {
    struct tr_arena arena;
    struct dcm_source_ref *sources; /* referenced sources, nodes in the arena */
};

enum dcm_dataset_flags {
    DCM_DS_UNDEFINED_LENGTH = 1 << 0, /* item read with undefined length */
    DCM_DS_CHARSET_UNKNOWN = 1 << 1,  /* own (0008,0005) has a term we do not know */
};

struct dcm_dataset {
    struct dcm_element *elems; /* ascending tag order */
    size_t count, cap;
    struct dcm_dataset *parent;
    struct dcm_root *root;
    struct dcm_charset *charset; /* own Specific Character Set, NULL = inherit */
    unsigned flags;              /* enum dcm_dataset_flags */
    unsigned depth;
    uint64_t offset;             /* of the item tag in the source, DCM_NO_OFFSET if none */
};

/* Parse and cache (0008,0005) after it was put into ds. */
void dcm_dataset_update_charset(struct dcm_dataset *ds);
/* Find the index of `tag` or where it would go. */
size_t dcm_dataset_find(const struct dcm_dataset *ds, uint32_t tag, bool *found);
/* Format a DS value in at most 16 characters, as precisely as fits; length or TR_EINVAL. */
int dcm_ds_format(double v, char out[32]);
/* Trim the insignificant characters of one string value of `vr` (in place on the pointers). */
void dcm_string_trim(enum dcm_vr vr, const char **start, const char **end);

#endif
