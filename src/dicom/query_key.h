/*
 * query_key.h - query keys from text: what `telerad find -k` and QIDO-RS query parameters
 * (PS3.18 8.3.4) say, as elements of an identifier data set.
 */
#ifndef DCM_QUERY_KEY_H
#define DCM_QUERY_KEY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "error.h"

/* A tag from a keyword ("PatientName"), "(gggg,eeee)", "gggg,eeee" or "ggggeeee" (the first
 * n bytes of s). Repeating-group keywords are refused (they name no single tag). */
bool dcm_tag_parse(const char *s, size_t n, uint32_t *tag);

/* Set the key named by the first key_len bytes of `key` to `value` in `ds`. The key is a tag
 * (see dcm_tag_parse) or a path through sequences, "Seq.Key" or "Seq[1].Key" (item 0 unless
 * given); items are created as needed. The value is matching text: empty (a return key), a
 * single value, wildcards, a range ("20240101-20241231") or a UID list ("1.2\\1.3"); for text
 * VRs it is UTF-8, for others printable ASCII kept as written (a date range is longer than a
 * date). A sequence itself takes no value. Errors name the problem. */
int dcm_query_key_set(struct dcm_dataset *ds, const char *key, size_t key_len, const char *value,
                      struct tr_error *err);

#endif
