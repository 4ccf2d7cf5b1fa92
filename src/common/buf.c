/*
 * buf.c - growable capped byte buffer (see buf.h).
 */
#include "common.h"

#include <stdio.h>
#include <string.h>

void tr_buf_init(struct tr_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    b->max = max;
}

void tr_buf_release(struct tr_buf *b)
{
    tr_free(b->data);
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
}

void tr_buf_reset(struct tr_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

int tr_buf_grow(struct tr_buf *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra)
        return TR_ELIMIT;
    size_t need = b->len + extra + 1;
    if (need <= b->alloc)
        return 0;
    size_t alloc = b->alloc ? b->alloc : 64;
    while (alloc < need)
        alloc = alloc > SIZE_MAX / 2 ? need : alloc * 2;
    if (alloc > b->max + 1)
        alloc = b->max + 1 >= need ? b->max + 1 : need;
    char *p = tr_reallocarray(b->data, alloc, 1);
    if (!p)
        return TR_ENOMEM;
    b->data = p;
    b->alloc = alloc;
    return 0;
}

int tr_buf_add(struct tr_buf *b, const void *p, size_t n)
{
    /* Fast path: room enough and under the cap. */
    if (b->alloc - b->len > n && b->len + n <= b->max) {
        memcpy(b->data + b->len, p, n);
        b->len += n;
        b->data[b->len] = '\0';
        return 0;
    }
    int rc = tr_buf_grow(b, n);
    if (rc < 0)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int tr_buf_addc(struct tr_buf *b, char c)
{
    return tr_buf_add(b, &c, 1);
}

int tr_buf_adds(struct tr_buf *b, const char *s)
{
    return tr_buf_add(b, s, strlen(s));
}

int tr_buf_vaddf(struct tr_buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[256];
    int n = vsnprintf(small, sizeof(small), fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return TR_EINVAL;
    if ((size_t)n < sizeof(small))
        return tr_buf_add(b, small, (size_t)n);
    int rc = tr_buf_grow(b, (size_t)n);
    if (rc < 0)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int tr_buf_addf(struct tr_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tr_buf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void tr_buf_truncate(struct tr_buf *b, size_t len)
{
    if (len < b->len) {
        b->len = len;
        b->data[len] = '\0';
    }
}

char *tr_buf_detach(struct tr_buf *b, size_t *len)
{
    char *p = b->data;
    if (!p) {
        p = tr_malloc(1);
        if (p)
            p[0] = '\0';
    }
    if (len)
        *len = b->len;
    b->data = NULL;
    b->len = 0;
    b->alloc = 0;
    return p;
}
