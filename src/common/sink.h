/*
 * sink.h - where encoders write: a callback with a context, so that the same encoder fills a
 * memory buffer, a file descriptor or a network stream.
 */
#ifndef TR_SINK_H
#define TR_SINK_H

#include <stddef.h>
#include <stdio.h>

#include "buf.h"

struct tr_sink {
    /* Write all `len` bytes or fail: 0 or a negative TR_E* code. */
    int (*write)(void *ctx, const void *data, size_t len);
    void *ctx;
};

/* Sinks over a tr_buf (appends; fails with TR_ELIMIT at the buffer's cap), a stdio stream and a
 * file descriptor (retries short writes and EINTR). */
struct tr_sink tr_sink_buf(struct tr_buf *b);
struct tr_sink tr_sink_stdio(FILE *f);
struct tr_sink tr_sink_fd(int *fd);

static inline int tr_sink_write(const struct tr_sink *s, const void *data, size_t len)
{
    return len ? s->write(s->ctx, data, len) : 0;
}

/* A sink that buffers small writes into `chunk` bytes before passing them on; a write of
 * TR_BUFSINK_DIRECT bytes or more goes straight through (after what is buffered). */
#define TR_BUFSINK_DIRECT 65536
struct tr_bufsink {
    struct tr_sink out;  /* the downstream sink */
    struct tr_sink sink; /* write here */
    unsigned char *buf;
    size_t len, cap;
    int status;          /* first error seen */
};
int tr_bufsink_init(struct tr_bufsink *bs, struct tr_sink out, size_t chunk);
int tr_bufsink_flush(struct tr_bufsink *bs);
void tr_bufsink_release(struct tr_bufsink *bs);

#endif
