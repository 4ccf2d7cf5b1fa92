/*
 * buf.h - growable byte buffer with a mandatory size cap (after curl's dynbuf).
 *
 * Every buffer fed from a file or the network has a cap: appending past `max` fails with
 * TR_ELIMIT and leaves the buffer as it was. The content is always NUL-terminated (the NUL is
 * not counted in `len`), so text can be used as a C string.
 *
 *   struct tr_buf b;
 *   tr_buf_init(&b, 1 << 20);
 *   if (tr_buf_add(&b, p, n) < 0) ...;
 *   use(b.data, b.len);
 *   tr_buf_release(&b);
 */
#ifndef TR_BUF_H
#define TR_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct tr_buf {
    char *data;   /* NULL until the first append */
    size_t len;   /* bytes used, excluding the terminating NUL */
    size_t alloc; /* bytes allocated */
    size_t max;   /* cap on len */
};

void tr_buf_init(struct tr_buf *b, size_t max);
/* Free the memory; the buffer may be used again after tr_buf_init(). */
void tr_buf_release(struct tr_buf *b);
/* Empty the buffer, keeping its memory. */
void tr_buf_reset(struct tr_buf *b);
/* Make room for `extra` more bytes. */
int tr_buf_grow(struct tr_buf *b, size_t extra);
int tr_buf_add(struct tr_buf *b, const void *p, size_t n);
int tr_buf_addc(struct tr_buf *b, char c);
int tr_buf_adds(struct tr_buf *b, const char *s);
int tr_buf_addf(struct tr_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tr_buf_vaddf(struct tr_buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Remove the last `n` bytes (or all if fewer). */
void tr_buf_truncate(struct tr_buf *b, size_t len);
/* Hand the memory over to the caller (who frees it with tr_free) and reset the buffer. */
char *tr_buf_detach(struct tr_buf *b, size_t *len);

#endif
