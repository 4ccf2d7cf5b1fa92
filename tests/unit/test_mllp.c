/*
 * test_mllp.c - MLLP (src/hl7/mllp.c): the deframer fed whole, byte by byte and with noise,
 * over-size and restarted frames; the listener and the client on loopback: the ACK comes back,
 * a reply for another message is an error, a silent peer times out, the connection cap holds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "common.h"
#include "hl7.h"
#include "mllp.h"

#include <unistd.h>

static void deframe_whole_and_bytewise(void **state)
{
    (void)state;
    static const char stream[] = "junk\r\n\x0bMSH|^~\\&|A\rPID|1\x1c\r\n\x0bMSH|^~\\&|B\x1c\r";
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        struct mllp_deframer d;
        mllp_deframer_init(&d, 1024);
        char got[2][64];
        int n = 0;
        size_t len = sizeof(stream) - 1, pos = 0;
        while (pos < len) {
            bool complete;
            size_t chunk = bytewise ? 1 : len - pos;
            size_t used = mllp_deframe(&d, stream + pos, chunk, &complete);
            pos += used;
            if (complete) {
                assert_true(n < 2);
                assert_false(d.truncated);
                snprintf(got[n++], sizeof(got[0]), "%s", d.message.data);
                mllp_deframer_next(&d);
            }
        }
        assert_int_equal(n, 2);
        assert_string_equal(got[0], "MSH|^~\\&|A\rPID|1");
        assert_string_equal(got[1], "MSH|^~\\&|B");
        assert_int_equal(d.skipped, 4); /* "junk"; CR and LF are not counted */
        mllp_deframer_release(&d);
    }
}

static void deframe_oversize_and_restart(void **state)
{
    (void)state;
    struct mllp_deframer d;
    mllp_deframer_init(&d, 8);
    bool complete;
    static const char big[] = "\x0b"
                              "0123456789ABCDEF\x1c\r";
    size_t used = mllp_deframe(&d, big, sizeof(big) - 1, &complete);
    assert_true(complete);
    assert_int_equal(used, sizeof(big) - 2); /* stops after FS */
    assert_true(d.truncated);
    assert_int_equal(d.total, 16);
    assert_int_equal(d.message.len, 8);
    assert_memory_equal(d.message.data, "01234567", 8);
    mllp_deframer_next(&d);
    /* A VT inside a frame starts over: the broken frame is skipped. */
    static const char restart[] = "\x0b"
                                  "broken\x0b"
                                  "ok\x1c";
    used = mllp_deframe(&d, restart, sizeof(restart) - 1, &complete);
    assert_true(complete);
    assert_string_equal(d.message.data, "ok");
    assert_int_equal(d.skipped, 6);
    mllp_deframer_release(&d);
    struct tr_buf b;
    tr_buf_init(&b, 64);
    assert_int_equal(mllp_frame(&b, "X", 1), 0);
    assert_memory_equal(b.data, "\x0bX\x1c\r", 4);
    tr_buf_release(&b);
}

/* The handler: AA with MSA-2 = MSH-10; "WRONG" acknowledges another ID; "SILENT" gets none. */
static void handle(void *ctx, const struct mllp_request *rq, struct tr_buf *reply)
{
    (void)ctx;
    struct hl7_message *m = NULL;
    char id[64] = "";
    if (hl7_parse(rq->data, rq->len, NULL, &m, NULL) == 0)
        hl7_get_text(m, "MSH-10", id, sizeof(id));
    hl7_message_free(m);
    if (!strcmp(id, "SILENT"))
        return;
    tr_buf_addf(reply, "MSH|^~\\&|S|S|||||ACK|A1|P|2.5.1\rMSA|%s|%s|%s",
                rq->truncated ? "AR" : "AA", !strcmp(id, "WRONG") ? "OTHER" : id,
                rq->truncated ? "too big" : "fine");
}

static void client_and_server(void **state)
{
    (void)state;
    struct mllp_config cfg;
    mllp_config_init(&cfg);
    cfg.port = 0;
    cfg.max_message = 4096;
    cfg.max_connections = 1;
    cfg.handle = handle;
    struct mllp_server *s = NULL;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(mllp_server_start(&cfg, &s, &err), 0);
    int port = mllp_server_port(s);
    assert_true(port > 0);
    struct mllp_client_options opt;
    mllp_client_options_init(&opt);
    opt.ack_timeout_ms = 1000;
    struct mllp_client *c = NULL;
    assert_int_equal(mllp_client_connect("127.0.0.1", port, &opt, &c, &err), 0);
    struct mllp_ack ack;
    static const char ok[] = "MSH|^~\\&|A|B|||||ORM^O01|ID-1|P|2.5.1\rPID|1\r";
    assert_int_equal(mllp_client_send(c, ok, sizeof(ok) - 1, &ack, &err), 0);
    assert_int_equal(ack.status, MLLP_ACK_ACCEPT);
    assert_string_equal(ack.code, "AA");
    assert_string_equal(ack.control_id, "ID-1");
    assert_string_equal(ack.text, "fine");
    mllp_ack_release(&ack);
    /* Over the listener's cap: answered (AR), and the connection goes on. */
    char big[6000];
    int n = snprintf(big, sizeof(big), "MSH|^~\\&|A|B|||||ORM^O01|ID-2|P|2.5.1\rNTE|1||");
    memset(big + n, 'x', sizeof(big) - (size_t)n);
    assert_int_equal(mllp_client_send(c, big, sizeof(big), &ack, &err), 0);
    assert_int_equal(ack.status, MLLP_ACK_REJECT);
    assert_string_equal(ack.control_id, "ID-2");
    mllp_ack_release(&ack);
    /* A second connection is over the cap of 1: closed at once. */
    struct mllp_client *c2 = NULL;
    if (mllp_client_connect("127.0.0.1", port, &opt, &c2, &err) == 0) {
        tr_error_clear(&err);
        assert_true(mllp_client_send(c2, ok, sizeof(ok) - 1, &ack, &err) < 0);
        mllp_client_close(c2);
    }
    /* An ACK for another message is an error. */
    static const char wrong[] = "MSH|^~\\&|A|B|||||ORM^O01|WRONG|P|2.5.1\r";
    tr_error_clear(&err);
    assert_int_equal(mllp_client_send(c, wrong, sizeof(wrong) - 1, &ack, &err), TR_EPROTO);
    assert_non_null(strstr(err.message, "MSA-2"));
    /* No ACK: a timeout within the deadline. */
    static const char silent[] = "MSH|^~\\&|A|B|||||ORM^O01|SILENT|P|2.5.1\r";
    tr_error_clear(&err);
    assert_int_equal(mllp_client_send(c, silent, sizeof(silent) - 1, &ack, &err), TR_ETIMEOUT);
    mllp_client_close(c);
    mllp_server_free(s, 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(deframe_whole_and_bytewise),
        cmocka_unit_test(deframe_oversize_and_restart),
        cmocka_unit_test(client_and_server),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
