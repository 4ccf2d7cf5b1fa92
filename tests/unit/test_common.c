/*
 * test_common.c - allocation wrappers, capped buffers, arenas, sinks, JSON helpers.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"
#include "json_util.h"

static void test_buf_cap(void **state)
{
    (void)state;
    struct tr_buf b;
    tr_buf_init(&b, 8);
    assert_int_equal(tr_buf_adds(&b, "12345678"), 0);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    /* Past the cap: refused, buffer unchanged. */
    assert_int_equal(tr_buf_addc(&b, 'x'), TR_ELIMIT);
    assert_int_equal(b.len, 8);
    assert_string_equal(b.data, "12345678");
    tr_buf_reset(&b);
    assert_int_equal(tr_buf_addf(&b, "%d-%s", 42, "ok"), 0);
    assert_string_equal(b.data, "42-ok");
    assert_int_equal(tr_buf_addf(&b, "%s", "too long for the cap"), TR_ELIMIT);
    tr_buf_release(&b);
}

static void test_buf_long_format(void **state)
{
    (void)state;
    struct tr_buf b;
    tr_buf_init(&b, 1 << 20);
    char big[1000];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    assert_int_equal(tr_buf_addf(&b, "<%s>", big), 0);
    assert_int_equal(b.len, 1001);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[1000], '>');
    size_t len;
    char *p = tr_buf_detach(&b, &len);
    assert_int_equal(len, 1001);
    assert_null(b.data);
    tr_free(p);
}

static void test_alloc_failure_injection(void **state)
{
    (void)state;
    tr_alloc_fail_after(1);
    void *a = tr_malloc(10);
    void *b = tr_malloc(10);
    assert_non_null(a);
    assert_null(b);
    assert_int_equal(tr_alloc_failures(), 1);
    tr_alloc_fail_after(-1);
    b = tr_malloc(10);
    assert_non_null(b);
    tr_free(a);
    tr_free(b);
    /* Overflow of count * size is refused without calling the allocator. */
    assert_null(tr_reallocarray(NULL, SIZE_MAX / 2, 4));
}

static void test_arena(void **state)
{
    (void)state;
    struct tr_arena a;
    tr_arena_init(&a, 256);
    char *s = tr_arena_strndup(&a, "hello world", 5);
    assert_string_equal(s, "hello");
    /* Many allocations across blocks, each aligned and distinct. */
    uintptr_t prev = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t *p = tr_arena_alloc(&a, sizeof(*p) * (size_t)(i % 7 + 1));
        assert_non_null(p);
        assert_int_equal((uintptr_t)p % _Alignof(max_align_t), 0);
        assert_true((uintptr_t)p != prev);
        prev = (uintptr_t)p;
        *p = (uint64_t)i;
    }
    /* A large allocation gets a block of its own and the current block stays usable. */
    void *big = tr_arena_alloc(&a, 100000);
    assert_non_null(big);
    memset(big, 0xAB, 100000);
    /* realloc of the most recent allocation grows in place. */
    char *r = tr_arena_alloc(&a, 16);
    char *r2 = tr_arena_realloc(&a, r, 16, 32);
    assert_ptr_equal(r, r2);
    char *r3 = tr_arena_realloc(&a, r2, 32, 100000);
    assert_non_null(r3);
    tr_arena_release(&a);
}

static void test_error_prefix(void **state)
{
    (void)state;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(tr_error_set(&err, TR_EFORMAT, "at byte %d", 12), TR_EFORMAT);
    /* The first error wins. */
    tr_error_set(&err, TR_EIO, "later");
    assert_string_equal(err.message, "at byte 12");
    tr_error_prefix(&err, "%s", "file.dcm");
    assert_string_equal(err.message, "file.dcm: at byte 12");
    assert_int_equal(err.code, TR_EFORMAT);
    assert_string_equal(tr_strerror(TR_ETRUNCATED), "truncated input");
}

static void test_json_string(void **state)
{
    (void)state;
    struct tr_buf b;
    tr_buf_init(&b, 1024);
    const char s[] = "a\"b\\c\n\x01\xc3\xa9";
    assert_int_equal(tr_json_append_string(&b, s, sizeof(s) - 1), 0);
    assert_string_equal(b.data, "\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\"");
    tr_buf_release(&b);
}

static void test_base64(void **state)
{
    (void)state;
    static const struct {
        const char *plain, *coded;
    } cases[] = {{"", ""}, {"f", "Zg=="}, {"fo", "Zm8="}, {"foo", "Zm9v"},
                 {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        struct tr_buf b;
        tr_buf_init(&b, 1024);
        struct tr_base64 st;
        tr_base64_init(&st);
        /* Feed one byte at a time: the streaming state must carry across chunks. */
        for (const char *p = cases[i].plain; *p; p++)
            assert_int_equal(tr_base64_feed(&st, &b, (const uint8_t *)p, 1), 0);
        assert_int_equal(tr_base64_finish(&st, &b), 0);
        assert_string_equal(b.data ? b.data : "", cases[i].coded);
        struct tr_buf d;
        tr_buf_init(&d, 1024);
        assert_int_equal(tr_base64_decode(cases[i].coded, strlen(cases[i].coded), &d), 0);
        assert_int_equal(d.len, strlen(cases[i].plain));
        assert_memory_equal(d.data, cases[i].plain, d.len);
        tr_buf_release(&b);
        tr_buf_release(&d);
    }
    struct tr_buf d;
    tr_buf_init(&d, 1024);
    assert_int_equal(tr_base64_decode("Zm9v!", 5, &d), TR_EFORMAT);
    tr_buf_release(&d);
}

static void test_bufsink(void **state)
{
    (void)state;
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    struct tr_bufsink bs;
    assert_int_equal(tr_bufsink_init(&bs, tr_sink_buf(&out), 16), 0);
    for (int i = 0; i < 100; i++)
        assert_int_equal(tr_sink_write(&bs.sink, "abc", 3), 0);
    char big[40];
    memset(big, 'z', sizeof(big));
    assert_int_equal(tr_sink_write(&bs.sink, big, sizeof(big)), 0);
    assert_int_equal(tr_bufsink_flush(&bs), 0);
    assert_int_equal(out.len, 340);
    assert_int_equal(out.data[299], 'c');
    assert_int_equal(out.data[300], 'z');
    tr_bufsink_release(&bs);
    tr_buf_release(&out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_cap),         cmocka_unit_test(test_buf_long_format),
        cmocka_unit_test(test_alloc_failure_injection), cmocka_unit_test(test_arena),
        cmocka_unit_test(test_error_prefix),    cmocka_unit_test(test_json_string),
        cmocka_unit_test(test_base64),          cmocka_unit_test(test_bufsink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
