/*
 * arena.h - region allocator: many small allocations freed together.
 *
 * A parsed data set (all its elements, sequence items and value copies) lives in one arena, so
 * freeing a data set is one walk over a few blocks instead of thousands of free() calls. Per
 * association and per request arenas work the same way. Memory is never returned before
 * tr_arena_release().
 */
#ifndef TR_ARENA_H
#define TR_ARENA_H

#include <stddef.h>

struct tr_arena_block;

struct tr_arena {
    struct tr_arena_block *head; /* current block; older blocks chained behind it */
    size_t block_size;           /* size of ordinary blocks */
    size_t total;                /* bytes allocated from the system, for accounting */
};

void tr_arena_init(struct tr_arena *a, size_t block_size);
void tr_arena_release(struct tr_arena *a);
/* Memory aligned for any type; NULL on allocation failure. size 0 returns a valid pointer. */
void *tr_arena_alloc(struct tr_arena *a, size_t size);
void *tr_arena_calloc(struct tr_arena *a, size_t count, size_t size);
void *tr_arena_memdup(struct tr_arena *a, const void *p, size_t size);
char *tr_arena_strndup(struct tr_arena *a, const char *s, size_t n);
/* Grow the most recent allocation in place when possible, else allocate and copy. */
void *tr_arena_realloc(struct tr_arena *a, void *p, size_t old_size, size_t new_size);

#endif
