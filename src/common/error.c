/*
 * error.c - error objects (see error.h).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

int tr_error_vset(struct tr_error *err, int code, const char *fmt, va_list ap)
{
    if (err && err->code == 0) {
        err->code = code;
        vsnprintf(err->message, sizeof(err->message), fmt, ap);
    }
    return code;
}

int tr_error_set(struct tr_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tr_error_vset(err, code, fmt, ap);
    va_end(ap);
    return code;
}

void tr_error_prefix(struct tr_error *err, const char *fmt, ...)
{
    if (!err || err->code == 0)
        return;
    char joined[TR_ERROR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(joined, sizeof(joined), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    size_t used = TR_MIN((size_t)n, sizeof(joined) - 1);
    size_t room = sizeof(joined) - 1 - used;
    size_t sep = TR_MIN(room, (size_t)2);
    memcpy(joined + used, ": ", sep);
    used += sep;
    size_t rest = TR_MIN(strlen(err->message), sizeof(joined) - 1 - used);
    memcpy(joined + used, err->message, rest);
    joined[used + rest] = '\0';
    memcpy(err->message, joined, used + rest + 1);
}

void tr_error_clear(struct tr_error *err)
{
    if (err) {
        err->code = 0;
        err->message[0] = '\0';
    }
}

const char *tr_strerror(int code)
{
    switch (code) {
    case TR_OK: return "success";
    case TR_EINVAL: return "invalid argument";
    case TR_ENOMEM: return "out of memory";
    case TR_EIO: return "I/O error";
    case TR_ETRUNCATED: return "truncated input";
    case TR_EFORMAT: return "malformed input";
    case TR_ELIMIT: return "limit exceeded";
    case TR_EUNSUPPORTED: return "not supported";
    case TR_ENOTFOUND: return "not found";
    case TR_EEXIST: return "already exists";
    case TR_ECHARSET: return "character set conversion failed";
    case TR_ETIMEOUT: return "timed out";
    case TR_ECLOSED: return "connection closed";
    case TR_EPROTO: return "protocol error";
    case TR_EDENIED: return "denied";
    }
    return "unknown error";
}
