/*
 * arena.c - region allocator (see arena.h).
 */
#include "common.h"

#include <stdalign.h>
#include <stdint.h>
#include <string.h>

struct tr_arena_block {
    struct tr_arena_block *next;
    size_t size; /* usable bytes after the header */
    size_t used;
    alignas(max_align_t) unsigned char data[];
};

#define ARENA_ALIGN (alignof(max_align_t))

void tr_arena_init(struct tr_arena *a, size_t block_size)
{
    a->head = NULL;
    a->block_size = block_size ? block_size : 16384;
    a->total = 0;
}

void tr_arena_release(struct tr_arena *a)
{
    struct tr_arena_block *b = a->head;
    while (b) {
        struct tr_arena_block *next = b->next;
        tr_free(b);
        b = next;
    }
    a->head = NULL;
    a->total = 0;
}

static size_t align_up(size_t n)
{
    return (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
}

void *tr_arena_alloc(struct tr_arena *a, size_t size)
{
    if (size > SIZE_MAX / 2)
        return NULL;
    size_t need = align_up(size ? size : 1);
    struct tr_arena_block *b = a->head;
    if (!b || b->size - b->used < need) {
        /* Large allocations get a block of their own, placed behind the current one so the
         * current block's free space is not wasted. */
        size_t bsize = need > a->block_size / 4 ? need : a->block_size;
        struct tr_arena_block *nb = tr_malloc(sizeof(*nb) + bsize);
        if (!nb)
            return NULL;
        nb->size = bsize;
        nb->used = 0;
        a->total += sizeof(*nb) + bsize;
        if (b && bsize != a->block_size) {
            nb->next = b->next;
            b->next = nb;
        } else {
            nb->next = b;
            a->head = nb;
        }
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += need;
    return p;
}

void *tr_arena_calloc(struct tr_arena *a, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    void *p = tr_arena_alloc(a, count * size);
    if (p)
        memset(p, 0, count * size);
    return p;
}

void *tr_arena_memdup(struct tr_arena *a, const void *p, size_t size)
{
    void *q = tr_arena_alloc(a, size);
    if (q && size)
        memcpy(q, p, size);
    return q;
}

char *tr_arena_strndup(struct tr_arena *a, const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *q = tr_arena_alloc(a, len + 1);
    if (q) {
        memcpy(q, s, len);
        q[len] = '\0';
    }
    return q;
}

void *tr_arena_realloc(struct tr_arena *a, void *p, size_t old_size, size_t new_size)
{
    struct tr_arena_block *b = a->head;
    if (p && b) {
        size_t old_aligned = align_up(old_size ? old_size : 1);
        unsigned char *start = b->data + b->used - old_aligned;
        if (start == (unsigned char *)p) {
            size_t new_aligned = align_up(new_size ? new_size : 1);
            if (new_aligned <= b->size - (b->used - old_aligned)) {
                b->used = b->used - old_aligned + new_aligned;
                return p;
            }
        }
    }
    if (new_size <= old_size)
        return p;
    void *q = tr_arena_alloc(a, new_size);
    if (q && p && old_size)
        memcpy(q, p, old_size);
    return q;
}
