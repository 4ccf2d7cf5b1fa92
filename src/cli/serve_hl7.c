/*
 * serve_hl7.c - the HL7 v2 orders listener of `telerad serve` (see serve_hl7.h): MLLP
 * (src/hl7/mllp.h) with the orders handler (src/hl7/orders.h) on the archive's database.
 */
#include "cli.h"
#include "common.h"
#include "flow.h"
#include "mllp.h"
#include "orders.h"
#include "serve_hl7.h"
#include "transport.h"

#include <stdio.h>

struct serve_hl7 {
    struct orders *orders;
    struct mllp_server *server;
    struct flow *flow;
    const struct arc_site_ae *sites;
};

void serve_hl7_config_init(struct serve_hl7_config *c)
{
    c->port = -1;
    c->host = "127.0.0.1";
    c->tls = false;
    c->max_message = (size_t)4 << 20;
    c->max_connections = 32;
    c->idle_timeout = 300;
}

int serve_hl7_configure(const struct cfg *conf, struct serve_hl7_config *c, struct tr_error *err)
{
    long v;
    bool b;
    int rc;
    const char *host = cfg_get(conf, "hl7", "host");
    if (host)
        c->host = host;
    if ((rc = cfg_get_int(conf, "hl7", "port", 0, 65535, &v, err)) < 0)
        return rc;
    if (rc == 0)
        c->port = (int)v;
    if ((rc = cfg_get_bool(conf, "hl7", "tls", &b, err)) < 0)
        return rc;
    if (rc == 0)
        c->tls = b;
    if ((rc = cfg_get_int(conf, "hl7", "max_message", 1024, 1L << 30, &v, err)) < 0)
        return rc;
    if (rc == 0)
        c->max_message = (size_t)v;
    if ((rc = cfg_get_int(conf, "hl7", "max_connections", 1, 10000, &v, err)) < 0)
        return rc;
    if (rc == 0)
        c->max_connections = (unsigned)v;
    if ((rc = cfg_get_int(conf, "hl7", "idle_timeout", 1, 86400, &v, err)) < 0)
        return rc;
    if (rc == 0)
        c->idle_timeout = (int)v;
    return 0;
}

static bool loopback(const char *host)
{
    return strcmp(host, "::1") == 0 || strcmp(host, "localhost") == 0 ||
           strncmp(host, "127.", 4) == 0;
}

int serve_hl7_check(const struct serve_hl7_config *c, bool have_certificate, bool insecure,
                    struct tr_error *err)
{
    if (c->port < 0)
        return 0;
    if (c->tls && !have_certificate)
        return tr_error_set(err, TR_EINVAL,
                            "[hl7] tls needs the server's certificate "
                            "(--tls-cert and --tls-key)");
    if (!c->tls && !loopback(c->host) && !insecure)
        return tr_error_set(err, TR_EINVAL,
                            "HL7 on %s without TLS would send patient data in "
                            "the clear; set [hl7] tls = true (with --tls-cert), or --insecure",
                            c->host);
    return 0;
}

void serve_hl7_describe(const struct serve_hl7_config *c, char *out, size_t size)
{
    if (c->port < 0)
        snprintf(out, size, "hl7 = off");
    else
        snprintf(out, size, "hl7 = %s:%d%s", c->host, c->port, c->tls ? " (TLS)" : "");
}

/* MSH-4 -> site: the workflow's sites (id or AE title), then the configured AE titles. */
static bool site_of(void *ctx, const char *facility, const char *application, char *site,
                    size_t size)
{
    struct serve_hl7 *h = ctx;
    if (h->flow && flow_site_for_facility(h->flow, facility, application, site, size))
        return true;
    for (const struct arc_site_ae *s = h->sites; s && s->ae_title; s++) {
        if (strcmp(s->site, facility) == 0 || strcmp(s->ae_title, facility) == 0) {
            snprintf(site, size, "%s", s->site);
            return true;
        }
    }
    return false;
}

int serve_hl7_start(const struct serve_hl7_config *c, struct arc_archive *archive,
                    struct flow *flow, const struct arc_site_ae *sites, struct net_tls *tls,
                    void (*log)(void *ctx, int level, const char *message), struct serve_hl7 **out,
                    struct tr_error *err)
{
    *out = NULL;
    if (c->port < 0)
        return 0;
    struct serve_hl7 *h = tr_calloc(1, sizeof(*h));
    if (!h)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    h->flow = flow;
    h->sites = sites;
    struct orders_config ocfg;
    orders_config_init(&ocfg);
    ocfg.db_url = arc_index_url(archive);
    ocfg.site_of = site_of;
    ocfg.site_ctx = h;
    ocfg.log = log;
    /* An order after the images raises the read's priority (or cancels it). */
    if (flow) {
        ocfg.on_order = flow_on_order;
        ocfg.on_order_ctx = flow;
    }
    int rc = orders_open(&ocfg, &h->orders, err);
    if (rc < 0) {
        tr_error_prefix(err, "HL7 orders");
        tr_free(h);
        return rc;
    }
    struct mllp_config mcfg;
    mllp_config_init(&mcfg);
    mcfg.host = c->host;
    mcfg.port = c->port;
    mcfg.tls = c->tls ? tls : NULL;
    mcfg.max_message = c->max_message;
    mcfg.max_connections = c->max_connections;
    mcfg.idle_timeout_ms = c->idle_timeout * 1000;
    mcfg.handle = orders_mllp_handle;
    mcfg.log = log;
    mcfg.ctx = h->orders;
    rc = mllp_server_start(&mcfg, &h->server, err);
    if (rc < 0) {
        orders_close(h->orders);
        tr_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

int serve_hl7_port(const struct serve_hl7 *h)
{
    return h ? mllp_server_port(h->server) : -1;
}

void serve_hl7_stop(struct serve_hl7 *h)
{
    if (!h)
        return;
    mllp_server_free(h->server, 5000);
    orders_close(h->orders);
    tr_free(h);
}
