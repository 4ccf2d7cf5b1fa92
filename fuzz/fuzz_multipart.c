/*
 * fuzz_multipart.c - libFuzzer target for the streaming multipart parser (STOW-RS request
 * bodies arrive from any client). The input is a body with boundary "BOUNDARY"; its first
 * byte chooses a chunk size.
 *
 * Invariant checked with abort(): parsing the body in one piece and in chunks gives the same
 * parts, the same bytes and the same result (the parser's held-back bytes must neither be lost
 * nor duplicated at chunk edges).
 */
#include "common.h"
#include "multipart.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct digest {
    unsigned parts, ends;
    uint64_t bytes;
    uint64_t hash;
    int rc;
};

static int on_begin(void *ctx, const struct mp_headers *h)
{
    struct digest *d = ctx;
    d->parts++;
    for (unsigned i = 0; i < h->count; i++) {
        for (const char *c = h->value[i]; *c; c++)
            d->hash = d->hash * 31 + (unsigned char)*c;
    }
    return 0;
}

static int on_data(void *ctx, const void *p, size_t n)
{
    struct digest *d = ctx;
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        d->hash = d->hash * 131 + b[i];
    d->bytes += n;
    return 0;
}

static int on_end(void *ctx)
{
    struct digest *d = ctx;
    d->ends++;
    d->hash = d->hash * 7 + 1;
    return 0;
}

static void run(const uint8_t *body, size_t len, size_t chunk, struct digest *d)
{
    memset(d, 0, sizeof(*d));
    struct mp_parser p;
    struct mp_callbacks cb = {on_begin, on_data, on_end};
    struct tr_error err = TR_ERROR_INIT;
    if (mp_init(&p, "multipart/related; type=\"application/dicom\"; boundary=BOUNDARY", &cb, d,
                &err) < 0)
        abort();
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += chunk) {
        size_t n = len - off < chunk ? len - off : chunk;
        rc = mp_feed(&p, body + off, n, &err);
    }
    if (rc == 0)
        rc = mp_finish(&p, &err);
    d->rc = rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)(data[0] % 17) + 1;
    const uint8_t *body = data + 1;
    size_t len = size - 1;
    struct digest whole, pieces;
    run(body, len, len ? len : 1, &whole);
    run(body, len, chunk, &pieces);
    /* Errors may be found at different bytes; before any error the parts agree. */
    if (whole.rc == 0 || pieces.rc == 0) {
        if (whole.rc != pieces.rc || whole.parts != pieces.parts || whole.ends != pieces.ends ||
            whole.bytes != pieces.bytes || whole.hash != pieces.hash) {
            fprintf(stderr, "fuzz_multipart: chunk %zu: rc %d/%d parts %u/%u bytes %llu/%llu\n",
                    chunk, whole.rc, pieces.rc, whole.parts, pieces.parts,
                    (unsigned long long)whole.bytes, (unsigned long long)pieces.bytes);
            abort();
        }
    }
    return 0;
}
