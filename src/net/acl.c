/*
 * acl.c - address lists (see acl.h).
 */
#include "common.h"
#include "acl.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>

static int parse_one(const char *text, struct net_cidr *c)
{
    char addr[64];
    const char *slash = strchr(text, '/');
    size_t n = slash ? (size_t)(slash - text) : strlen(text);
    if (n == 0 || n >= sizeof(addr))
        return TR_EINVAL;
    memcpy(addr, text, n);
    addr[n] = '\0';
    memset(c, 0, sizeof(*c));
    if (inet_pton(AF_INET, addr, c->addr) == 1) {
        c->family = AF_INET;
        c->prefix = 32;
    } else if (inet_pton(AF_INET6, addr, c->addr) == 1) {
        c->family = AF_INET6;
        c->prefix = 128;
    } else {
        return TR_EINVAL;
    }
    if (slash) {
        char *end;
        long p = strtol(slash + 1, &end, 10);
        if (*end || end == slash + 1 || p < 0 || p > (long)c->prefix)
            return TR_EINVAL;
        c->prefix = (unsigned)p;
    }
    return 0;
}

int net_acl_parse(struct net_acl *acl, const char *text, struct tr_error *err)
{
    acl->count = 0;
    const char *p = text;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (!*p)
            break;
        const char *e = p;
        while (*e && *e != ' ' && *e != ',' && *e != '\t')
            e++;
        char one[80];
        size_t n = (size_t)(e - p);
        if (n >= sizeof(one) || acl->count >= NET_ACL_MAX ||
            (memcpy(one, p, n), one[n] = '\0', parse_one(one, &acl->entry[acl->count]) < 0))
            return tr_error_set(err, TR_EINVAL, "\"%.*s\" is not an address or address/prefix",
                                (int)TR_MIN(n, (size_t)60), p);
        acl->count++;
        p = e;
    }
    return 0;
}

static bool prefix_equal(const uint8_t *a, const uint8_t *b, unsigned bits)
{
    unsigned bytes = bits / 8, rest = bits % 8;
    if (memcmp(a, b, bytes) != 0)
        return false;
    if (!rest)
        return true;
    uint8_t mask = (uint8_t)(0xFF << (8 - rest));
    return (a[bytes] & mask) == (b[bytes] & mask);
}

bool net_acl_allows(const struct net_acl *acl, const char *ip)
{
    if (!acl || acl->count == 0)
        return true;
    uint8_t a4[4], a6[16];
    bool v4 = inet_pton(AF_INET, ip, a4) == 1;
    bool v6 = !v4 && inet_pton(AF_INET6, ip, a6) == 1;
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    if (v6 && memcmp(a6, mapped, 12) == 0) {
        memcpy(a4, a6 + 12, 4);
        v4 = true;
    }
    for (unsigned i = 0; i < acl->count; i++) {
        const struct net_cidr *c = &acl->entry[i];
        if (c->family == AF_INET && v4 && prefix_equal(c->addr, a4, c->prefix))
            return true;
        if (c->family == AF_INET6 && v6 && prefix_equal(c->addr, a6, c->prefix))
            return true;
    }
    return false;
}
