/*
 * alloc.h - every heap allocation in telerad goes through these wrappers.
 *
 * As in SQLite, one place to allocate means tests can make any allocation fail: call
 * tr_alloc_fail_after(n) and the n-th following allocation (0 = the next one) returns NULL,
 * as do all later ones until tr_alloc_fail_after(-1). The wrappers never abort; callers handle
 * NULL and report TR_ENOMEM.
 */
#ifndef TR_ALLOC_H
#define TR_ALLOC_H

#include <stddef.h>

void *tr_malloc(size_t size);
void *tr_calloc(size_t count, size_t size);
/* Like realloc(3), but returns NULL and leaves ptr valid if count * size overflows. */
void *tr_reallocarray(void *ptr, size_t count, size_t size);
void tr_free(void *ptr);
char *tr_strdup(const char *s);
char *tr_strndup(const char *s, size_t n);

/* Test hook: make allocations fail after `n` more successes; n < 0 disables. */
void tr_alloc_fail_after(long n);
/* Number of allocations that were made to fail since the last tr_alloc_fail_after(). */
unsigned long tr_alloc_failures(void);

#endif
