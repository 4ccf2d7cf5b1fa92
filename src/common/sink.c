/*
 * sink.c - output sinks (see sink.h).
 */
#include "common.h"
#include "sink.h"

#include <errno.h>
#include <unistd.h>

static int buf_write(void *ctx, const void *data, size_t len)
{
    return tr_buf_add(ctx, data, len);
}

struct tr_sink tr_sink_buf(struct tr_buf *b)
{
    return (struct tr_sink){buf_write, b};
}

static int stdio_write(void *ctx, const void *data, size_t len)
{
    return fwrite(data, 1, len, ctx) == len ? 0 : TR_EIO;
}

struct tr_sink tr_sink_stdio(FILE *f)
{
    return (struct tr_sink){stdio_write, f};
}

static int fd_write(void *ctx, const void *data, size_t len)
{
    int fd = *(int *)ctx;
    const char *p = data;
    while (len) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return TR_EIO;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

struct tr_sink tr_sink_fd(int *fd)
{
    return (struct tr_sink){fd_write, fd};
}

static int bufsink_write(void *ctx, const void *data, size_t len)
{
    struct tr_bufsink *bs = ctx;
    if (bs->status)
        return bs->status;
    /* Large values (pixel data) go straight through, after what is buffered: copying them
     * into the buffer first would only add a memcpy (and, for a buffer the size of the
     * value, fresh zero-filled pages to copy into). */
    if (len >= bs->cap || len >= TR_BUFSINK_DIRECT) {
        int rc = tr_bufsink_flush(bs);
        if (rc == 0)
            rc = tr_sink_write(&bs->out, data, len);
        return bs->status = rc;
    }
    if (bs->cap - bs->len < len) {
        int rc = tr_bufsink_flush(bs);
        if (rc)
            return rc;
    }
    memcpy(bs->buf + bs->len, data, len);
    bs->len += len;
    return 0;
}

int tr_bufsink_init(struct tr_bufsink *bs, struct tr_sink out, size_t chunk)
{
    bs->out = out;
    bs->sink = (struct tr_sink){bufsink_write, bs};
    bs->len = 0;
    bs->cap = chunk ? chunk : 65536;
    bs->status = 0;
    bs->buf = tr_malloc(bs->cap);
    return bs->buf ? 0 : TR_ENOMEM;
}

int tr_bufsink_flush(struct tr_bufsink *bs)
{
    if (bs->status)
        return bs->status;
    if (bs->len) {
        int rc = tr_sink_write(&bs->out, bs->buf, bs->len);
        bs->len = 0;
        if (rc)
            return bs->status = rc;
    }
    return 0;
}

void tr_bufsink_release(struct tr_bufsink *bs)
{
    tr_free(bs->buf);
    bs->buf = NULL;
}
