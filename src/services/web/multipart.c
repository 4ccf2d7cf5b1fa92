/*
 * multipart.c - streaming multipart parser (see multipart.h).
 *
 * The delimiter is CRLF "--" boundary (RFC 2046 5.1.1); the body is treated as if a CRLF came
 * before its first byte, so that a body starting with "--boundary" finds it. In a part's body
 * the parser hands on everything except the last (delimiter length - 1) bytes, which it holds
 * back until it knows they do not begin a delimiter.
 */
#include "common.h"
#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <strings.h>

const char *mp_header(const struct mp_headers *h, const char *name)
{
    for (unsigned i = 0; i < h->count; i++) {
        if (strcasecmp(h->name[i], name) == 0)
            return h->value[i];
    }
    return NULL;
}

void mp_media_type(const char *value, char *out, size_t size)
{
    size_t n = 0;
    if (!size)
        return;
    const char *p = value ? value : "";
    while (*p == ' ' || *p == '\t')
        p++;
    while (*p && *p != ';' && *p != ' ' && *p != '\t' && *p != ',' && n + 1 < size)
        out[n++] = (char)tolower((unsigned char)*p++);
    out[n] = '\0';
}

bool mp_media_param(const char *value, const char *name, char *out, size_t size)
{
    if (!size)
        return false;
    out[0] = '\0'; /* also when absent: callers may use `out` without the result */
    if (!value)
        return false;
    size_t nlen = strlen(name);
    const char *p = strchr(value, ';');
    const char *comma = strchr(value, ',');
    if (comma && (!p || comma < p))
        return false; /* the parameters of the next media range of a list are not ours */
    while (p) {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *eq = strchr(p, '=');
        if (!eq)
            return false;
        const char *name_end = eq;
        while (name_end > p && (name_end[-1] == ' ' || name_end[-1] == '\t'))
            name_end--;
        const char *v = eq + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        size_t n = 0;
        const char *next;
        if (*v == '"') {
            v++;
            while (*v && *v != '"') {
                if (*v == '\\' && v[1])
                    v++;
                if (n + 1 < size)
                    out[n++] = *v;
                v++;
            }
            next = *v ? strchr(v + 1, ';') : NULL;
        } else {
            while (*v && *v != ';' && *v != ',' && *v != ' ' && *v != '\t') {
                if (n + 1 < size)
                    out[n++] = *v;
                v++;
            }
            next = strchr(v, ';');
            const char *next_range = strchr(v, ',');
            if (next_range && (!next || next_range < next))
                next = NULL; /* the next media range of an Accept list */
        }
        out[n] = '\0';
        if ((size_t)(name_end - p) == nlen && strncasecmp(p, name, nlen) == 0)
            return true;
        out[0] = '\0'; /* another parameter's value */
        p = next;
    }
    return false;
}

int mp_init(struct mp_parser *p, const char *content_type, const struct mp_callbacks *cb,
            void *ctx, struct tr_error *err)
{
    memset(p, 0, sizeof(*p));
    char type[64];
    mp_media_type(content_type, type, sizeof(type));
    if (strncmp(type, "multipart/", 10) != 0)
        return tr_error_set(err, TR_EINVAL, "expected a multipart body, not \"%s\"", type);
    char boundary[MP_BOUNDARY_MAX + 2];
    if (!mp_media_param(content_type, "boundary", boundary, sizeof(boundary)) || !*boundary)
        return tr_error_set(err, TR_EINVAL, "the multipart Content-Type has no boundary");
    size_t blen = strlen(boundary);
    if (blen > MP_BOUNDARY_MAX)
        return tr_error_set(err, TR_EINVAL, "the multipart boundary is longer than 70 characters");
    p->cb = *cb;
    p->ctx = ctx;
    p->dlen = (size_t)snprintf(p->delimiter, sizeof(p->delimiter), "\r\n--%s", boundary);
    /* As if the body began with CRLF: the first delimiter may start at byte 0. */
    memcpy(p->held, "\r\n", 2);
    p->nheld = 2;
    p->state = MP_PREAMBLE;
    return 0;
}

static int fail(struct mp_parser *p, struct tr_error *err, int code, const char *what)
{
    p->state = MP_FAILED;
    return tr_error_set(err, code, "multipart body, at byte %llu: %s", p->offset, what);
}

/* Hand body bytes on (or drop them outside parts). */
static int emit(struct mp_parser *p, const void *data, size_t len, struct tr_error *err)
{
    if (p->state != MP_BODY || !len || !p->cb.part_data)
        return 0;
    if (p->cb.part_data(p->ctx, data, len) < 0)
        return fail(p, err, TR_EINVAL, "the part was refused");
    return 0;
}

static int delimiter_found(struct mp_parser *p, struct tr_error *err)
{
    if (p->state == MP_BODY && p->cb.part_end && p->cb.part_end(p->ctx) < 0)
        return fail(p, err, TR_EINVAL, "the part was refused");
    p->state = MP_AFTER_DELIMITER;
    p->after = 0;
    return 0;
}

static int parse_headers(struct mp_parser *p, struct tr_error *err)
{
    struct mp_headers h = {0};
    char *s = p->header;
    s[p->nheader] = '\0';
    while (*s) {
        char *eol = strstr(s, "\r\n");
        if (!eol)
            break;
        *eol = '\0';
        if (*s) {
            char *colon = strchr(s, ':');
            if (!colon || colon == s)
                return fail(p, err, TR_EFORMAT, "a part header is not \"Name: value\"");
            *colon = '\0';
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t n = strlen(v);
            while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
                v[--n] = '\0';
            if (h.count == MP_MAX_HEADERS)
                return fail(p, err, TR_ELIMIT, "too many part headers");
            h.name[h.count] = s;
            h.value[h.count++] = v;
        }
        s = eol + 2;
    }
    p->parts++;
    p->state = MP_BODY;
    if (p->cb.part_begin && p->cb.part_begin(p->ctx, &h) < 0)
        return fail(p, err, TR_EINVAL, "the part was refused");
    /* The delimiter search starts afresh: an empty part is directly followed by CRLF--. */
    p->nheld = 0;
    return 0;
}

/* Body or preamble bytes: search for the delimiter. Returns bytes consumed. */
static long scan(struct mp_parser *p, const char *data, size_t len, struct tr_error *err)
{
    const size_t dlen = p->dlen;
    /* A delimiter that starts in the held bytes. */
    if (p->nheld) {
        char tmp[2 * sizeof(p->delimiter)];
        size_t take = len < dlen ? len : dlen;
        memcpy(tmp, p->held, p->nheld);
        memcpy(tmp + p->nheld, data, take);
        size_t total = p->nheld + take;
        for (size_t i = 0; i < p->nheld; i++) {
            size_t avail = total - i;
            size_t cmp = avail < dlen ? avail : dlen;
            if (memcmp(tmp + i, p->delimiter, cmp) != 0)
                continue;
            if (cmp < dlen) {
                /* Could still be a delimiter: keep holding (all input taken). */
                if (emit(p, tmp, i, err) < 0)
                    return -1;
                memmove(p->held, tmp + i, avail);
                p->nheld = avail;
                return (long)len;
            }
            if (emit(p, tmp, i, err) < 0)
                return -1;
            size_t used = i + dlen - p->nheld; /* bytes of data that were part of it */
            p->nheld = 0;
            if (delimiter_found(p, err) < 0)
                return -1;
            return (long)used;
        }
        if (emit(p, p->held, p->nheld, err) < 0)
            return -1;
        p->nheld = 0;
    }
    const char *hit = memmem(data, len, p->delimiter, dlen);
    if (hit) {
        if (emit(p, data, (size_t)(hit - data), err) < 0)
            return -1;
        if (delimiter_found(p, err) < 0)
            return -1;
        return (long)(hit - data + (long)dlen);
    }
    /* No delimiter: everything but a possible delimiter start goes on. */
    size_t keep = len < dlen - 1 ? len : dlen - 1;
    /* Only hold back from the last CR on (a delimiter starts with CR). */
    size_t k = keep;
    while (k && data[len - k] != '\r')
        k--;
    if (emit(p, data, len - k, err) < 0)
        return -1;
    memcpy(p->held, data + len - k, k);
    p->nheld = k;
    return (long)len;
}

int mp_feed(struct mp_parser *p, const void *data, size_t len, struct tr_error *err)
{
    const char *s = data;
    while (len) {
        long used = 0;
        switch (p->state) {
        case MP_FAILED:
            return tr_error_set(err, TR_EINVAL, "multipart body: parsing failed earlier");
        case MP_EPILOGUE:
            p->offset += len;
            return 0;
        case MP_PREAMBLE:
        case MP_BODY:
            used = scan(p, s, len, err);
            if (used < 0)
                return err ? err->code : TR_EFORMAT;
            break;
        case MP_AFTER_DELIMITER: {
            char c = s[0];
            used = 1;
            if (p->after == 0 && c == '-') {
                p->after = '-';
            } else if (p->after == '-') {
                if (c != '-')
                    return fail(p, err, TR_EFORMAT, "a delimiter is followed by a single '-'");
                p->state = MP_EPILOGUE;
            } else if ((p->after == 0 || p->after == ' ') && (c == ' ' || c == '\t')) {
                p->after = ' ';
            } else if ((p->after == 0 || p->after == ' ') && c == '\r') {
                p->after = '\r';
            } else if (p->after == '\r' && c == '\n') {
                p->state = MP_HEADERS;
                p->nheader = 0;
            } else {
                return fail(p, err, TR_EFORMAT, "a delimiter line does not end with CRLF");
            }
            break;
        }
        case MP_HEADERS: {
            /* Up to and including the blank line. A part without headers starts with CRLF. */
            size_t i = 0;
            while (i < len) {
                if (p->nheader == MP_HEADER_BYTES)
                    return fail(p, err, TR_ELIMIT, "a part's headers exceed 8 KiB");
                p->header[p->nheader++] = s[i++];
                size_t n = p->nheader;
                if ((n == 2 && memcmp(p->header, "\r\n", 2) == 0) ||
                    (n >= 4 && memcmp(p->header + n - 4, "\r\n\r\n", 4) == 0)) {
                    p->offset += i;
                    s += i;
                    len -= i;
                    if (parse_headers(p, err) < 0)
                        return err ? err->code : TR_EFORMAT;
                    i = 0;
                    goto next;
                }
            }
            used = (long)i;
            break;
        }
        }
        p->offset += (unsigned long long)used;
        s += used;
        len -= (size_t)used;
    next:;
    }
    return 0;
}

int mp_finish(struct mp_parser *p, struct tr_error *err)
{
    if (p->state == MP_FAILED)
        return err && err->code ? err->code : TR_EFORMAT;
    if (p->state != MP_EPILOGUE) {
        p->state = MP_FAILED;
        return tr_error_set(err, TR_ETRUNCATED,
                            "multipart body ended at byte %llu before its closing delimiter",
                            p->offset);
    }
    return 0;
}
