/*
 * common.h - the utilities every telerad layer may use: allocation, errors, buffers, arenas,
 * byte order. Product sources include this (it pulls in banned.h last).
 */
#ifndef TR_COMMON_H
#define TR_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
/* System headers that declare banned functions come before banned.h (which is last). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "alloc.h"
#include "arena.h"
#include "buf.h"
#include "error.h"
#include "sink.h"

#define TR_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TR_MIN(a, b) ((a) < (b) ? (a) : (b))
#define TR_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ALWAYS/NEVER (after SQLite): mark defensive branches that should never be taken. In debug
 * builds a wrong assumption aborts; in release builds the branch is handled gracefully. */
#ifdef TR_DEBUG
#include <assert.h>
#define ALWAYS(x) (assert(x), 1)
#define NEVER(x) (assert(!(x)), 0)
#else
#define ALWAYS(x) (x)
#define NEVER(x) (x)
#endif

static inline uint16_t tr_le16(const uint8_t *p)
{
    return (uint16_t)(p[0] | (p[1] << 8));
}
static inline uint32_t tr_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t tr_le64(const uint8_t *p)
{
    return (uint64_t)tr_le32(p) | ((uint64_t)tr_le32(p + 4) << 32);
}
static inline uint16_t tr_be16(const uint8_t *p)
{
    return (uint16_t)((p[0] << 8) | p[1]);
}
static inline uint32_t tr_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}
static inline void tr_put_le16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}
static inline void tr_put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}
static inline void tr_put_le64(uint8_t *p, uint64_t v)
{
    tr_put_le32(p, (uint32_t)v);
    tr_put_le32(p + 4, (uint32_t)(v >> 32));
}
static inline void tr_put_be16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void tr_put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

#include "banned.h"

#endif
