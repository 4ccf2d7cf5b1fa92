/*
 * multipart.h - a streaming multipart parser (RFC 2046 5.1, RFC 2387 multipart/related) for
 * STOW-RS request bodies: the body is fed in chunks as it arrives and each part's bytes are
 * handed on as they come, so a part of any size passes with a few kilobytes of memory.
 *
 * Also the media-type helpers the DICOMweb code needs (type and parameters of a Content-Type
 * or Accept value, RFC 9110 8.3.1: case-insensitive names, quoted or token values).
 */
#ifndef WEB_MULTIPART_H
#define WEB_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

#define MP_MAX_HEADERS 16
#define MP_HEADER_BYTES 8192
#define MP_BOUNDARY_MAX 70 /* RFC 2046: 1 to 70 characters */

struct mp_headers {
    unsigned count;
    const char *name[MP_MAX_HEADERS];  /* as sent */
    const char *value[MP_MAX_HEADERS]; /* trimmed */
};

/* The value of a header (case-insensitive name), or NULL. */
const char *mp_header(const struct mp_headers *h, const char *name);

struct mp_callbacks {
    /* A part starts; its headers are valid during the call. Return negative to stop. */
    int (*part_begin)(void *ctx, const struct mp_headers *h);
    int (*part_data)(void *ctx, const void *data, size_t len);
    int (*part_end)(void *ctx);
};

enum mp_state { MP_PREAMBLE, MP_AFTER_DELIMITER, MP_HEADERS, MP_BODY, MP_EPILOGUE, MP_FAILED };

struct mp_parser {
    struct mp_callbacks cb;
    void *ctx;
    char delimiter[MP_BOUNDARY_MAX + 5]; /* "\r\n--" boundary */
    size_t dlen;
    char held[MP_BOUNDARY_MAX + 5];      /* bytes that may start a delimiter */
    size_t nheld;
    enum mp_state state;
    int after;                           /* MP_AFTER_DELIMITER: 0 start, '-' one dash, ' ' LWSP,
                                            '\r' CR seen */
    char header[MP_HEADER_BYTES + 1];
    size_t nheader;
    unsigned parts;
    unsigned long long offset;           /* bytes fed so far, for messages */
};

/* Start parsing a body whose Content-Type is `content_type` (must be multipart/...; its
 * boundary parameter is required). */
int mp_init(struct mp_parser *p, const char *content_type, const struct mp_callbacks *cb,
            void *ctx, struct tr_error *err);
/* Feed the next bytes. Errors name the byte offset in the body. */
int mp_feed(struct mp_parser *p, const void *data, size_t len, struct tr_error *err);
/* The body ended: TR_ETRUNCATED unless the close delimiter was seen. */
int mp_finish(struct mp_parser *p, struct tr_error *err);

/* "Application/DICOM; transfer-syntax=..." -> "application/dicom" (lower case). */
void mp_media_type(const char *value, char *out, size_t size);
/* The value of parameter `name` of a media type ("type", "boundary", "transfer-syntax"),
 * unquoted; false when absent. */
bool mp_media_param(const char *value, const char *name, char *out, size_t size);

#endif
