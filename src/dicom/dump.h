/*
 * dump.h - a readable listing of a data set, in the manner of DCMTK's dcmdump: one line per
 * element with tag, VR, value (decoded to UTF-8), length, VM and keyword; items and sequences
 * indented.
 */
#ifndef DCM_DUMP_H
#define DCM_DUMP_H

#include "dataset.h"
#include "part10.h"
#include "sink.h"

enum dcm_dump_flags {
    DCM_DUMP_NO_META = 1 << 0,     /* leave out the file meta information */
    DCM_DUMP_FULL_VALUES = 1 << 1, /* do not shorten long values */
};

int dcm_dump_file(const struct dcm_file *f, unsigned flags, const struct tr_sink *sink,
                  struct tr_error *err);
int dcm_dump_dataset(const struct dcm_dataset *ds, unsigned flags, const struct tr_sink *sink,
                     struct tr_error *err);

#endif
