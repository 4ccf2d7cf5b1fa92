/*
 * alloc.c - allocation wrappers with failure injection for tests (see alloc.h).
 */
#include "common.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long fail_countdown = -1;
static _Atomic unsigned long fail_count;

static int should_fail(void)
{
    long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (n < 0)
        return 0;
    if (n == 0) {
        atomic_fetch_add(&fail_count, 1);
        return 1;
    }
    atomic_fetch_sub(&fail_countdown, 1);
    return 0;
}

void tr_alloc_fail_after(long n)
{
    atomic_store(&fail_countdown, n);
    atomic_store(&fail_count, 0);
}

unsigned long tr_alloc_failures(void)
{
    return atomic_load(&fail_count);
}

void *tr_malloc(size_t size)
{
    if (should_fail())
        return NULL;
    return malloc(size ? size : 1);
}

void *tr_calloc(size_t count, size_t size)
{
    if (should_fail())
        return NULL;
    if (count == 0 || size == 0)
        count = size = 1;
    return calloc(count, size);
}

void *tr_reallocarray(void *ptr, size_t count, size_t size)
{
    if (size && count > SIZE_MAX / size)
        return NULL;
    if (should_fail())
        return NULL;
    size_t total = count * size;
    return realloc(ptr, total ? total : 1);
}

void tr_free(void *ptr)
{
    free(ptr);
}

char *tr_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *copy = tr_malloc(len + 1);
    if (!copy)
        return NULL;
    memcpy(copy, s, len);
    copy[len] = '\0';
    return copy;
}

char *tr_strdup(const char *s)
{
    return tr_strndup(s, SIZE_MAX);
}
