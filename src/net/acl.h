/*
 * acl.h - address lists: which peers may connect ("10.0.0.0/8, 192.168.1.7, ::1").
 */
#ifndef NET_ACL_H
#define NET_ACL_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"

#define NET_ACL_MAX 64

struct net_cidr {
    int family;       /* AF_INET or AF_INET6 */
    uint8_t addr[16];
    unsigned prefix;  /* bits */
};

struct net_acl {
    unsigned count;   /* 0: everyone */
    struct net_cidr entry[NET_ACL_MAX];
};

/* Parse a comma- or space-separated list of addresses and CIDR blocks. */
int net_acl_parse(struct net_acl *acl, const char *text, struct tr_error *err);
/* Is `ip` (a numeric address as net_peer_ip gives) in the list? An empty list allows all.
 * IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) match IPv4 entries. */
bool net_acl_allows(const struct net_acl *acl, const char *ip);

#endif
