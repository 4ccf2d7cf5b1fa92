/*
 * serve_hl7.h - the HL7 v2 orders listener of `telerad serve` (MLLP, src/hl7/): its settings
 * ([hl7] in the configuration file, --hl7-port / --hl7-host), the site resolver (MSH-4 -> site),
 * start and stop. Kept out of cmd_serve.c so that the server's main function only calls it.
 */
#ifndef TR_SERVE_HL7_H
#define TR_SERVE_HL7_H

#include <stdbool.h>
#include <stddef.h>

#include "archive.h"
#include "config.h"
#include "error.h"

struct flow;
struct net_tls;

struct serve_hl7_config {
    int port;                 /* -1: off (the default); 0: a free port, printed */
    const char *host;         /* default 127.0.0.1 */
    bool tls;                 /* MLLP over TLS with the server's certificate ([tls]) */
    size_t max_message;       /* bytes (default 4 MiB) */
    unsigned max_connections; /* default 32 */
    int idle_timeout;         /* seconds (default 300) */
};

void serve_hl7_config_init(struct serve_hl7_config *c);
/* Read [hl7] (errors go to err, naming the file, line and key). */
int serve_hl7_configure(const struct cfg *conf, struct serve_hl7_config *c, struct tr_error *err);
/* Refuse what would send PHI in the clear: off loopback needs tls (or insecure); tls needs a
 * certificate. 0, or TR_EINVAL with the reason. */
int serve_hl7_check(const struct serve_hl7_config *c, bool have_certificate, bool insecure,
                    struct tr_error *err);
/* "hl7 = 127.0.0.1:2575" / "hl7 = off", for --check. */
void serve_hl7_describe(const struct serve_hl7_config *c, char *out, size_t size);

struct serve_hl7;

/* Open the orders tables in the archive's database and start the listener (nothing when the
 * port is -1: *out is NULL). Sites are the workflow's (flow_site_for_facility), then the
 * configuration's [site NAME] sections / --site flags (`sites`, terminated by a NULL ae): MSH-4
 * names the site or one of its AE titles. */
int serve_hl7_start(const struct serve_hl7_config *c, struct arc_archive *archive,
                    struct flow *flow, const struct arc_site_ae *sites, struct net_tls *tls,
                    void (*log)(void *ctx, int level, const char *message), struct serve_hl7 **out,
                    struct tr_error *err);
int serve_hl7_port(const struct serve_hl7 *h);
/* Stop the listener (connections get a few seconds to finish) and close. NULL is a no-op. */
void serve_hl7_stop(struct serve_hl7 *h);

#endif
