/*
 * json.h - the DICOM JSON Model (PS3.18 F.2): data sets to JSON and back.
 *
 * Writing: "vr" and "Value" per attribute in tag order; PN as objects with Alphabetic,
 * Ideographic and Phonetic component groups; IS and DS as JSON numbers; AT as "GGGGEEEE"
 * strings; sequences as arrays of objects; binary VRs as "InlineBinary" (base64) or, when a
 * bulk data callback is given and the value is at least `bulk_threshold` bytes, "BulkDataURI".
 * Text is decoded from the data set's character set to UTF-8.
 *
 * Reading: the same model back to a data set whose text is UTF-8 (Specific Character Set is
 * set to "ISO_IR 192" when non-ASCII text is present). InlineBinary is decoded; BulkDataURI
 * values are passed to a callback or kept as empty elements.
 */
#ifndef DCM_JSON_H
#define DCM_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "buf.h"
#include "dataset.h"
#include "error.h"
#include "sink.h"

enum dcm_json_flags {
    DCM_JSON_SKIP_META = 1 << 0,         /* leave out group 0002 */
    DCM_JSON_PRETTY = 1 << 1,            /* indent with two spaces, one attribute per line */
    DCM_JSON_SKIP_GROUP_LENGTH = 1 << 2, /* leave out (gggg,0000) */
};

struct dcm_json_options {
    unsigned flags;        /* enum dcm_json_flags */
    size_t bulk_threshold; /* values this long or longer go to bulk_uri (if set) */
    /* Append the BulkDataURI for element `e` of data set `ds` to `out`; return 0, or 1 to
     * write the value inline after all, or a negative error. */
    int (*bulk_uri)(void *ctx, const struct dcm_dataset *ds, const struct dcm_element *e,
                    struct tr_buf *out);
    void *ctx;
};

/* Write `ds` as one JSON object. */
int dcm_json_write(const struct dcm_dataset *ds, const struct dcm_json_options *opt,
                   const struct tr_sink *sink, struct tr_error *err);

struct dcm_json_read_options {
    unsigned max_depth; /* sequence nesting limit (default 64) */
    /* Called for each BulkDataURI; may set the element's value with dcm_dataset_set_bytes.
     * NULL: the element is kept empty. */
    int (*bulk_data)(void *ctx, struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                     const char *uri, struct tr_error *err);
    void *ctx;
};

/* Parse one DICOM JSON object (or an array holding exactly one) into a new root data set.
 * Errors name the attribute path ("00081115[0].00081150: ...") and the problem. */
int dcm_json_read(const char *json, size_t len, const struct dcm_json_read_options *opt,
                  struct dcm_dataset **out, struct tr_error *err);
/* Parse a JSON array of data sets (a QIDO-RS response); *out is a tr_malloc'd array of
 * *count roots. */
int dcm_json_read_array(const char *json, size_t len, const struct dcm_json_read_options *opt,
                        struct dcm_dataset ***out, size_t *count, struct tr_error *err);

#endif
