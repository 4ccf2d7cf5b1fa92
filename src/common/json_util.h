/*
 * json_util.h - small helpers for writing JSON text: string escaping (RFC 8259 section 7) and
 * base64 (RFC 4648) with streaming state, for writers that stream large documents instead of
 * building a tree. Parsing JSON is jansson's job.
 */
#ifndef TR_JSON_UTIL_H
#define TR_JSON_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

/* Append `s` (UTF-8, n bytes) as a quoted JSON string. */
int tr_json_append_string(struct tr_buf *b, const char *s, size_t n);

/* Streaming base64: feed any number of chunks, then finish. */
struct tr_base64 {
    uint8_t carry[3];
    unsigned ncarry;
};
void tr_base64_init(struct tr_base64 *st);
int tr_base64_feed(struct tr_base64 *st, struct tr_buf *out, const uint8_t *p, size_t n);
int tr_base64_finish(struct tr_base64 *st, struct tr_buf *out);
/* Decode standard base64 (padding optional, whitespace not allowed). */
int tr_base64_decode(const char *s, size_t n, struct tr_buf *out);

#endif
