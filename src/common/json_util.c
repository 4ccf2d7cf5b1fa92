/*
 * json_util.c - JSON string escaping and base64 (see json_util.h).
 */
#include "common.h"
#include "json_util.h"

static const char hex[] = "0123456789abcdef";

int tr_json_append_string(struct tr_buf *b, const char *s, size_t n)
{
    int rc = tr_buf_addc(b, '"');
    size_t run = 0; /* bytes copied verbatim in one go */
    for (size_t i = 0; i < n && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        if (run)
            rc = tr_buf_add(b, s + i - run, run);
        run = 0;
        if (rc)
            break;
        switch (c) {
        case '"': rc = tr_buf_add(b, "\\\"", 2); break;
        case '\\': rc = tr_buf_add(b, "\\\\", 2); break;
        case '\n': rc = tr_buf_add(b, "\\n", 2); break;
        case '\r': rc = tr_buf_add(b, "\\r", 2); break;
        case '\t': rc = tr_buf_add(b, "\\t", 2); break;
        case '\b': rc = tr_buf_add(b, "\\b", 2); break;
        case '\f': rc = tr_buf_add(b, "\\f", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            rc = tr_buf_add(b, u, 6);
        }
        }
    }
    if (rc == 0 && run)
        rc = tr_buf_add(b, s + n - run, run);
    if (rc == 0)
        rc = tr_buf_addc(b, '"');
    return rc;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void tr_base64_init(struct tr_base64 *st)
{
    st->ncarry = 0;
}

static void encode3(const uint8_t *in, char *out)
{
    out[0] = b64[in[0] >> 2];
    out[1] = b64[((in[0] & 3) << 4) | (in[1] >> 4)];
    out[2] = b64[((in[1] & 15) << 2) | (in[2] >> 6)];
    out[3] = b64[in[2] & 63];
}

int tr_base64_feed(struct tr_base64 *st, struct tr_buf *out, const uint8_t *p, size_t n)
{
    while (st->ncarry && st->ncarry < 3 && n) {
        st->carry[st->ncarry++] = *p++;
        n--;
    }
    if (st->ncarry == 3) {
        char q[4];
        encode3(st->carry, q);
        int rc = tr_buf_add(out, q, 4);
        if (rc)
            return rc;
        st->ncarry = 0;
    }
    size_t whole = n / 3;
    if (whole) {
        if (whole > (SIZE_MAX - 1) / 4)
            return TR_ELIMIT;
        int rc = tr_buf_grow(out, whole * 4);
        if (rc)
            return rc;
        char *o = out->data + out->len;
        for (size_t i = 0; i < whole; i++)
            encode3(p + 3 * i, o + 4 * i);
        out->len += whole * 4;
        out->data[out->len] = '\0';
        p += whole * 3;
        n -= whole * 3;
    }
    while (n--)
        st->carry[st->ncarry++] = *p++;
    return 0;
}

int tr_base64_finish(struct tr_base64 *st, struct tr_buf *out)
{
    if (st->ncarry == 0)
        return 0;
    uint8_t in[3] = {0, 0, 0};
    memcpy(in, st->carry, st->ncarry);
    char q[4];
    encode3(in, q);
    if (st->ncarry == 1)
        q[2] = '=';
    q[3] = '=';
    st->ncarry = 0;
    return tr_buf_add(out, q, 4);
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int tr_base64_decode(const char *s, size_t n, struct tr_buf *out)
{
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return TR_EFORMAT;
    int rc = tr_buf_grow(out, n / 4 * 3 + 3);
    if (rc)
        return rc;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(s[i]);
        if (v < 0)
            return TR_EFORMAT;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out->data[out->len++] = (char)((acc >> bits) & 0xFF);
        }
    }
    out->data[out->len] = '\0';
    return 0;
}
