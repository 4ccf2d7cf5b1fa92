/*
 * error.h - error codes and the error object that carries a message for the user.
 *
 * Functions return 0 on success or a negative TR_E* code, and, when given a non-NULL
 * `struct tr_error *`, fill it with a message that says what failed, where (file, byte offset,
 * tag, peer) and why. Libraries never print or exit: the CLI and the server decide how to
 * report. The first error set wins: later tr_error_set() calls on an already set error only
 * happen through tr_error_prefix(), which adds context ("CT1.dcm: ...").
 */
#ifndef TR_ERROR_H
#define TR_ERROR_H

#include <stdarg.h>

enum tr_errcode {
    TR_OK = 0,
    TR_EINVAL = -1,       /* invalid argument or value */
    TR_ENOMEM = -2,       /* out of memory */
    TR_EIO = -3,          /* operating-system I/O error */
    TR_ETRUNCATED = -4,   /* input ended before a complete structure */
    TR_EFORMAT = -5,      /* input is malformed */
    TR_ELIMIT = -6,       /* a configured cap (size, depth, count) was exceeded */
    TR_EUNSUPPORTED = -7, /* well-formed but not supported (e.g. unknown transfer syntax) */
    TR_ENOTFOUND = -8,    /* no such element, file, entry */
    TR_EEXIST = -9,       /* already exists */
    TR_ECHARSET = -10,    /* text cannot be converted between character sets */
    TR_ETIMEOUT = -11,
    TR_ECLOSED = -12,     /* peer closed the connection */
    TR_EPROTO = -13,      /* peer violated the protocol */
    TR_EDENIED = -14,     /* refused by policy */
};

#define TR_ERROR_MSG_MAX 512

struct tr_error {
    int code;                       /* 0 while unset */
    char message[TR_ERROR_MSG_MAX]; /* UTF-8, no trailing newline */
};

#define TR_ERROR_INIT {0, {0}}

/* Set `err` (if non-NULL and not yet set) and return `code`, so that callers can write
 * `return tr_error_set(err, TR_EFORMAT, "...", ...);`. */
int tr_error_set(struct tr_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int tr_error_vset(struct tr_error *err, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Prepend context to an already set message: "<prefix>: <message>". */
void tr_error_prefix(struct tr_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void tr_error_clear(struct tr_error *err);
/* A short English name for an error code ("malformed input", ...). */
const char *tr_strerror(int code);

#endif
