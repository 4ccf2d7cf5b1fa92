/*
 * cmd_serve.c - `telerad serve`: the server on its embedded default (data in ./telerad-data,
 * DICOM on 127.0.0.1:11112 as AE TELERAD), configurable by flags.
 */
#include "cli.h"
#include "common.h"
#include "archive.h"
#include "config.h"
#include "scp.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

static const char serve_help[] =
    "usage: telerad serve [options]\n"
    "\n"
    "Run the telerad server: receive studies over DICOM (C-ECHO, C-STORE) into the archive and\n"
    "answer queries and retrievals (C-FIND, C-MOVE, C-GET; patient and study root). With no options it listens on 127.0.0.1:11112 as AE title TELERAD and keeps its\n"
    "data in ./telerad-data. Stop it with Ctrl-C or SIGTERM: associations in progress finish.\n"
    "\n"
    "Settings come from the configuration file (--config, see docs/configuration.md), then\n"
    "from environment variables TELERAD_<SECTION>_<KEY>, then from these flags.\n"
    "\n"
    "options:\n"
    "  --config FILE           read settings from FILE\n"
    "  --check                 check the settings, print them, and exit\n"
    "  --data DIR              where the archive lives (default ./telerad-data)\n"
    "  --aet TITLE             our AE title (default TELERAD)\n"
    "  --dicom-host ADDRESS    listen address (default 127.0.0.1; anything else needs TLS or\n"
    "                          --insecure)\n"
    "  --dicom-port N          DICOM port (default 11112; 0 picks a free one and prints it)\n"
    "  --tls-cert FILE         serve DICOM over TLS (PS3.15 B.9, TLS 1.2+) with this\n"
    "                          certificate chain (PEM) ...\n"
    "  --tls-key FILE          ... and its key\n"
    "  --tls-ca FILE           CA certificates for client certificates\n"
    "  --tls-verify-client     require a client certificate signed by --tls-ca\n"
    "  --max-associations N    concurrent associations (default 64; more are rejected with\n"
    "                          \"local limit exceeded\")\n"
    "  --any-called-aet        accept any called AE title, not only ours\n"
    "  --allowed-networks LIST addresses and address/prefix blocks that may associate\n"
    "                          (default: any); others are rejected\n"
    "  --site SITE=AE[,AE...]  the AE titles that send for a site (repeatable): their studies\n"
    "                          belong to that site, and they see only that site's studies\n"
    "  --reject-unknown-aets   refuse calling AE titles that belong to no site (default: they\n"
    "                          store into and query the default site)\n"
    "  --move-destination AE=HOST:PORT[:tls]\n"
    "                          where C-MOVE sends for AE title AE (repeatable)\n"
    "  --index URL             the index: sqlite:PATH (default DIR/index.sqlite) or\n"
    "                          postgresql://user@host:port/database\n"
    "  --stable-after SECONDS  a study is stable when no instance came for this long\n"
    "                          (default 60)\n"
    "  --duplicates POLICY     a different object with a stored SOP Instance UID: reject\n"
    "                          (default), replace or keep-first\n"
    "  --idle-timeout SECONDS  abort an association silent for this long (default 300)\n"
    "  --min-free-mb N         refuse C-STOREs (A700) when less than N MB are free\n"
    "                          (default 256)\n"
    "  --insecure              allow listening off loopback without TLS\n"
    "  -v, --verbose           log every C-STORE (debug level)\n"
    "  -q, --quiet             log warnings and errors only\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 after a clean stop, 1 if the server could not start, 2 on wrong usage.\n";

static int log_level = SCP_LOG_INFO;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void log_line(void *ctx, int level, const char *message)
{
    (void)ctx;
    if (level > log_level)
        return;
    static const char *const names[] = {"error", "warning", "info", "debug"};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
    pthread_mutex_lock(&log_lock);
    fprintf(stderr, "%s.%03ldZ %-7s %s\n", when, ts.tv_nsec / 1000000,
            names[level < 0 ? 0 : level > 3 ? 3 : level], message);
    fflush(stderr);
    pthread_mutex_unlock(&log_lock);
}

static bool is_loopback(const char *host)
{
    return strcmp(host, "127.0.0.1") == 0 || strcmp(host, "::1") == 0 ||
           strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0;
}

struct stopper {
    sigset_t signals;
    struct scp_server *server;
};

/* Signals are blocked in every thread and taken here, synchronously. */
static void *wait_for_signal(void *arg)
{
    struct stopper *st = arg;
    int sig;
    /* SIGUSR1 is ours: main says the server stopped by itself, time to go. */
    if (sigwait(&st->signals, &sig) == 0 && sig != SIGUSR1) {
        char msg[64];
        snprintf(msg, sizeof(msg), "signal %d: stopping", sig);
        log_line(NULL, SCP_LOG_INFO, msg);
        scp_server_stop(st->server, 10000);
    }
    return NULL;
}

static int parse_int(const char *text, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || *end || end == text || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

/* Strings from the configuration file (sites' AE title lists are split in place). */
struct config_storage {
    struct arc_site_ae sites[65];
    size_t nsites;
    struct net_acl site_networks[32];
    size_t nnetworks;
    struct arc_move_destination dests[33];
    size_t ndests;
    char *buffers[64];
    size_t nbuffers;
    const struct cfg *conf;
    struct tr_error *err;
};

static void config_storage_release(struct config_storage *st)
{
    for (size_t i = 0; i < st->nbuffers; i++)
        tr_free(st->buffers[i]);
}

static int config_site(void *ctx, const char *name)
{
    struct config_storage *st = ctx;
    char section[300];
    snprintf(section, sizeof(section), "site %s", name);
    const char *list = cfg_get(st->conf, section, "ae_titles");
    if (!list || st->nbuffers >= TR_ARRAY_SIZE(st->buffers))
        return tr_error_set(st->err, TR_EINVAL, "[site %s] needs ae_titles", name);
    const struct net_acl *networks = NULL;
    const char *nets = cfg_get(st->conf, section, "networks");
    if (nets) {
        if (st->nnetworks >= TR_ARRAY_SIZE(st->site_networks))
            return tr_error_set(st->err, TR_ELIMIT, "too many sites with networks");
        struct net_acl *acl = &st->site_networks[st->nnetworks++];
        if (net_acl_parse(acl, nets, st->err) < 0) {
            tr_error_prefix(st->err, "[site %s] networks", name);
            return TR_EINVAL;
        }
        networks = acl;
    }
    char *copy = tr_strdup(list);
    if (!copy)
        return tr_error_set(st->err, TR_ENOMEM, "out of memory");
    st->buffers[st->nbuffers++] = copy;
    char *save = NULL;
    for (char *ae = strtok_r(copy, ", ", &save); ae; ae = strtok_r(NULL, ", ", &save)) {
        if (strlen(ae) > 16 || st->nsites >= TR_ARRAY_SIZE(st->sites) - 1)
            return tr_error_set(st->err, TR_EINVAL, "[site %s]: AE title \"%s\" too long, or too "
                                                    "many AE titles", name, ae);
        st->sites[st->nsites++] = (struct arc_site_ae){ae, name, networks};
    }
    return 0;
}

static int config_destination(void *ctx, const char *name)
{
    struct config_storage *st = ctx;
    char section[300];
    snprintf(section, sizeof(section), "move_destination %s", name);
    const char *host = cfg_get(st->conf, section, "host");
    long port = 0;
    bool tls = false;
    if (!host || cfg_get_int(st->conf, section, "port", 1, 65535, &port, st->err) != 0 ||
        cfg_get_bool(st->conf, section, "tls", &tls, st->err) < 0)
        return st->err->code ? st->err->code
                             : tr_error_set(st->err, TR_EINVAL, "[%s] needs host and port", section);
    if (st->ndests >= TR_ARRAY_SIZE(st->dests) - 1 || strlen(name) > 16)
        return tr_error_set(st->err, TR_EINVAL, "[%s]: too many destinations, or AE title longer "
                                                "than 16", section);
    st->dests[st->ndests++] = (struct arc_move_destination){name, host, (int)port, tls};
    return 0;
}

/* docs/configuration.md lists these. */
static const char *const known_keys[] = {
    "server.data", "server.aet", "server.dicom_host", "server.dicom_port",
    "server.max_associations", "server.any_called_aet", "server.idle_timeout",
    "server.insecure", "server.log_level", "server.allowed_networks",
    "tls.cert", "tls.key", "tls.ca", "tls.verify_client",
    "archive.index", "archive.duplicates", "archive.stable_after", "archive.min_free_mb",
    "archive.reject_unknown_aets", "archive.pn_case_insensitive",
    "site *.ae_titles", "site *.networks",
    "move_destination *.host", "move_destination *.port", "move_destination *.tls",
    NULL,
};

static int apply_config(const struct cfg *c, struct arc_config *acfg, struct scp_config *scfg,
                        struct net_tls_options *topt, bool *insecure, struct config_storage *st,
                        struct tr_error *err)
{
    int rc = cfg_check_keys(c, known_keys, err);
    if (rc)
        return rc;
    const char *v;
    long n;
    bool b;
    if ((v = cfg_get(c, "server", "data")))
        acfg->data_dir = v;
    if ((v = cfg_get(c, "server", "aet"))) {
        if (!*v || strlen(v) > 16)
            return tr_error_set(err, TR_EINVAL, "[server] aet: 1 to 16 characters");
        scfg->dul.ae_title = v;
    }
    if ((v = cfg_get(c, "server", "dicom_host")))
        scfg->host = v;
    if ((rc = cfg_get_int(c, "server", "dicom_port", 0, 65535, &n, err)) < 0)
        return rc;
    if (rc == 0)
        scfg->port = (int)n;
    if ((rc = cfg_get_int(c, "server", "max_associations", 1, 100000, &n, err)) < 0)
        return rc;
    if (rc == 0)
        scfg->max_associations = (unsigned)n;
    if ((rc = cfg_get_bool(c, "server", "any_called_aet", &b, err)) < 0)
        return rc;
    if (rc == 0)
        scfg->accept_any_called_ae = b;
    if ((rc = cfg_get_int(c, "server", "idle_timeout", 1, 86400, &n, err)) < 0)
        return rc;
    if (rc == 0)
        scfg->dul.timeout_ms = (int)n * 1000;
    if ((rc = cfg_get_bool(c, "server", "insecure", &b, err)) < 0)
        return rc;
    if (rc == 0)
        *insecure = b;
    if ((v = cfg_get(c, "server", "allowed_networks")) &&
        net_acl_parse(&scfg->allowed, v, err) < 0) {
        tr_error_prefix(err, "[server] allowed_networks");
        return TR_EINVAL;
    }
    if ((v = cfg_get(c, "server", "log_level"))) {
        if (!strcmp(v, "debug"))
            log_level = SCP_LOG_DEBUG;
        else if (!strcmp(v, "info"))
            log_level = SCP_LOG_INFO;
        else if (!strcmp(v, "warning"))
            log_level = SCP_LOG_WARNING;
        else if (!strcmp(v, "error"))
            log_level = SCP_LOG_ERROR;
        else
            return tr_error_set(err, TR_EINVAL, "[server] log_level: debug, info, warning or "
                                                "error");
    }
    if ((v = cfg_get(c, "tls", "cert")))
        topt->certificate = v;
    if ((v = cfg_get(c, "tls", "key")))
        topt->private_key = v;
    if ((v = cfg_get(c, "tls", "ca")))
        topt->ca_file = v;
    if ((rc = cfg_get_bool(c, "tls", "verify_client", &b, err)) < 0)
        return rc;
    if (rc == 0)
        topt->verify_peer = b;
    if ((v = cfg_get(c, "archive", "index")))
        acfg->index_url = v;
    if ((v = cfg_get(c, "archive", "duplicates")) &&
        arc_duplicate_policy_parse(v, &acfg->duplicates) < 0)
        return tr_error_set(err, TR_EINVAL, "[archive] duplicates: reject, replace or keep-first");
    if ((rc = cfg_get_int(c, "archive", "stable_after", 1, 86400 * 30, &n, err)) < 0)
        return rc;
    if (rc == 0)
        acfg->stable_after = (unsigned)n;
    if ((rc = cfg_get_int(c, "archive", "min_free_mb", 0, 1L << 30, &n, err)) < 0)
        return rc;
    if (rc == 0)
        acfg->min_free_bytes = (uint64_t)n << 20;
    if ((rc = cfg_get_bool(c, "archive", "pn_case_insensitive", &b, err)) < 0)
        return rc;
    if (rc == 0)
        acfg->pn_case_insensitive = b;
    if ((rc = cfg_get_bool(c, "archive", "reject_unknown_aets", &b, err)) < 0)
        return rc;
    if (rc == 0 && b)
        acfg->unknown_ae = ARC_UNKNOWN_AE_REJECT;
    st->conf = c;
    st->err = err;
    if ((rc = cfg_each_section(c, "site", config_site, st)))
        return rc;
    return cfg_each_section(c, "move_destination", config_destination, st);
}

int cmd_serve(int argc, char **argv)
{
    enum { O_DATA = 256, O_AET, O_HOST, O_PORT, O_CERT, O_KEY, O_CA, O_VERIFY, O_MAX, O_ANY,
           O_DUP, O_IDLE, O_INSECURE, O_SITE, O_REJECT_UNKNOWN, O_MOVE, O_INDEX, O_STABLE,
           O_CONFIG, O_MINFREE, O_CHECK, O_NETWORKS };
    static const struct option options[] = {
        {"data", required_argument, NULL, O_DATA},
        {"aet", required_argument, NULL, O_AET},
        {"dicom-host", required_argument, NULL, O_HOST},
        {"dicom-port", required_argument, NULL, O_PORT},
        {"tls-cert", required_argument, NULL, O_CERT},
        {"tls-key", required_argument, NULL, O_KEY},
        {"tls-ca", required_argument, NULL, O_CA},
        {"tls-verify-client", no_argument, NULL, O_VERIFY},
        {"max-associations", required_argument, NULL, O_MAX},
        {"any-called-aet", no_argument, NULL, O_ANY},
        {"duplicates", required_argument, NULL, O_DUP},
        {"idle-timeout", required_argument, NULL, O_IDLE},
        {"insecure", no_argument, NULL, O_INSECURE},
        {"site", required_argument, NULL, O_SITE},
        {"reject-unknown-aets", no_argument, NULL, O_REJECT_UNKNOWN},
        {"move-destination", required_argument, NULL, O_MOVE},
        {"index", required_argument, NULL, O_INDEX},
        {"stable-after", required_argument, NULL, O_STABLE},
        {"config", required_argument, NULL, O_CONFIG},
        {"min-free-mb", required_argument, NULL, O_MINFREE},
        {"check", no_argument, NULL, O_CHECK},
        {"allowed-networks", required_argument, NULL, O_NETWORKS},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct arc_config acfg;
    arc_config_init(&acfg);
    struct scp_config scfg;
    scp_config_init(&scfg);
    struct net_tls_options topt;
    net_tls_options_init(&topt);
    topt.verify_peer = false;
    bool insecure = false, check_only = false;
    struct arc_site_ae sites[65] = {{0}};
    size_t nsites = 0;
    struct arc_move_destination dests[33] = {{0}};
    size_t ndests = 0;
    int c, n;
    /* The configuration file first (flags override it): find --config before the rest. */
    struct cfg conf = {0};
    struct config_storage store = {0};
    const char *config_path = getenv("TELERAD_CONFIG");
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config_path = argv[i + 1];
        else if (strncmp(argv[i], "--config=", 9) == 0)
            config_path = argv[i] + 9;
    }
    struct tr_error cerr = TR_ERROR_INIT;
    if (config_path && cfg_load(&conf, config_path, &cerr) < 0) {
        cli_error("serve: %s", cerr.message);
        return CLI_USAGE;
    }
    if (apply_config(&conf, &acfg, &scfg, &topt, &insecure, &store, &cerr) < 0) {
        cli_error("serve: %s", cerr.message);
        cfg_release(&conf);
        config_storage_release(&store);
        return CLI_USAGE;
    }
    nsites = store.nsites;
    memcpy(sites, store.sites, sizeof(sites));
    ndests = store.ndests;
    memcpy(dests, store.dests, sizeof(dests));
    if (nsites)
        acfg.sites = sites;
    if (ndests)
        acfg.destinations = dests;
    optind = 1;
    while ((c = getopt_long(argc, argv, "vqh", options, NULL)) != -1) {
        switch (c) {
        case O_CONFIG: break; /* read above */
        case O_CHECK: check_only = true; break;
        case O_NETWORKS: {
            struct tr_error nerr = TR_ERROR_INIT;
            if (net_acl_parse(&scfg.allowed, optarg, &nerr) < 0) {
                cli_error("serve: --allowed-networks: %s", nerr.message);
                return CLI_USAGE;
            }
            break;
        }
        case O_MINFREE:
            if (parse_int(optarg, 0, 1 << 30, &n) < 0) {
                cli_error("serve: --min-free-mb takes a number of MB");
                return CLI_USAGE;
            }
            acfg.min_free_bytes = (uint64_t)n << 20;
            break;
        case O_DATA: acfg.data_dir = optarg; break;
        case O_AET:
            if (!*optarg || strlen(optarg) > 16) {
                cli_error("serve: an AE title has 1 to 16 characters");
                return CLI_USAGE;
            }
            scfg.dul.ae_title = optarg;
            break;
        case O_HOST: scfg.host = optarg; break;
        case O_PORT:
            if (parse_int(optarg, 0, 65535, &scfg.port) < 0) {
                cli_error("serve: --dicom-port takes a port number (0-65535)");
                return CLI_USAGE;
            }
            break;
        case O_CERT: topt.certificate = optarg; break;
        case O_KEY: topt.private_key = optarg; break;
        case O_CA: topt.ca_file = optarg; break;
        case O_VERIFY: topt.verify_peer = true; break;
        case O_MAX:
            if (parse_int(optarg, 1, 100000, &n) < 0) {
                cli_error("serve: --max-associations takes a number from 1");
                return CLI_USAGE;
            }
            scfg.max_associations = (unsigned)n;
            break;
        case O_ANY: scfg.accept_any_called_ae = true; break;
        case O_DUP:
            if (arc_duplicate_policy_parse(optarg, &acfg.duplicates) < 0) {
                cli_error("serve: --duplicates is reject, replace or keep-first");
                return CLI_USAGE;
            }
            break;
        case O_IDLE:
            if (parse_int(optarg, 1, 86400, &n) < 0) {
                cli_error("serve: --idle-timeout takes seconds (1-86400)");
                return CLI_USAGE;
            }
            scfg.dul.timeout_ms = n * 1000;
            break;
        case O_INSECURE: insecure = true; break;
        case O_SITE: {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || !eq[1]) {
                cli_error("serve: --site takes SITE=AE[,AE...]");
                return CLI_USAGE;
            }
            *eq = '\0';
            for (char *ae = eq + 1, *next; ae && *ae; ae = next) {
                next = strchr(ae, ',');
                if (next)
                    *next++ = '\0';
                if (nsites >= TR_ARRAY_SIZE(sites) - 1 || strlen(ae) > 16) {
                    cli_error("serve: too many site AE titles, or one longer than 16");
                    return CLI_USAGE;
                }
                sites[nsites++] = (struct arc_site_ae){ae, optarg};
            }
            acfg.sites = sites;
            break;
        }
        case O_REJECT_UNKNOWN: acfg.unknown_ae = ARC_UNKNOWN_AE_REJECT; break;
        case O_MOVE: {
            char *eq = strchr(optarg, '=');
            char *colon = eq ? strchr(eq + 1, ':') : NULL;
            int port;
            if (!eq || !colon || ndests >= TR_ARRAY_SIZE(dests) - 1) {
                cli_error("serve: --move-destination takes AE=HOST:PORT[:tls]");
                return CLI_USAGE;
            }
            *eq = '\0';
            *colon = '\0';
            char *tls_word = strchr(colon + 1, ':');
            if (tls_word)
                *tls_word++ = '\0';
            if (parse_int(colon + 1, 1, 65535, &port) < 0 ||
                (tls_word && strcmp(tls_word, "tls") != 0)) {
                cli_error("serve: --move-destination takes AE=HOST:PORT[:tls]");
                return CLI_USAGE;
            }
            dests[ndests++] = (struct arc_move_destination){optarg, eq + 1, port, tls_word != NULL};
            acfg.destinations = dests;
            break;
        }
        case O_INDEX: acfg.index_url = optarg; break;
        case O_STABLE:
            if (parse_int(optarg, 1, 86400 * 30, &n) < 0) {
                cli_error("serve: --stable-after takes seconds (at least 1)");
                return CLI_USAGE;
            }
            acfg.stable_after = (unsigned)n;
            break;
        case 'v': log_level = SCP_LOG_DEBUG; break;
        case 'q': log_level = SCP_LOG_WARNING; break;
        case 'h': fputs(serve_help, stdout); return CLI_OK;
        default: fputs(serve_help, stderr); return CLI_USAGE;
        }
    }
    if (optind < argc) {
        cli_error("serve: unexpected argument '%s' (try 'telerad serve --help')", argv[optind]);
        return CLI_USAGE;
    }
    if ((topt.private_key || topt.ca_file || topt.verify_peer) && !topt.certificate) {
        cli_error("serve: TLS needs --tls-cert (and --tls-key)");
        return CLI_USAGE;
    }
    if (topt.verify_peer && !topt.ca_file) {
        cli_error("serve: --tls-verify-client needs --tls-ca");
        return CLI_USAGE;
    }
    if (!is_loopback(scfg.host) && !topt.certificate && !insecure) {
        cli_error("serve: listening on %s without TLS would send patient data in the clear; "
                  "give --tls-cert and --tls-key, or --insecure", scfg.host);
        return CLI_USAGE;
    }

    if (check_only) {
        printf("data = %s\nindex = %s\naet = %s\ndicom = %s:%d%s\nmax_associations = %u\n"
               "duplicates = %s\nstable_after = %u\nsites = %zu AE titles\n"
               "move_destinations = %zu\n",
               acfg.data_dir, acfg.index_url ? acfg.index_url : "(sqlite in data)",
               scfg.dul.ae_title, scfg.host, scfg.port, topt.certificate ? " (TLS)" : "",
               scfg.max_associations,
               acfg.duplicates == ARC_DUPLICATE_REPLACE      ? "replace"
               : acfg.duplicates == ARC_DUPLICATE_KEEP_FIRST ? "keep-first"
                                                             : "reject",
               acfg.stable_after, nsites, ndests);
        cfg_release(&conf);
        config_storage_release(&store);
        return CLI_OK;
    }

    /* Block the stop signals in every thread; one thread waits for them. */
    struct stopper st;
    sigemptyset(&st.signals);
    sigaddset(&st.signals, SIGINT);
    sigaddset(&st.signals, SIGTERM);
    sigaddset(&st.signals, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &st.signals, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct tr_error err = TR_ERROR_INIT;
    struct net_tls *tls = NULL;
    if (topt.certificate) {
        tls = net_tls_server_new(&topt, &err);
        if (!tls) {
            cli_error("serve: TLS: %s", err.message);
            return CLI_FAILED;
        }
        scfg.dul.tls = tls;
    }
    struct net_tls *move_tls = NULL;
    for (size_t i = 0; i < ndests; i++) {
        if (!dests[i].tls || move_tls)
            continue;
        /* C-MOVE over TLS: present our certificate, verify the destination with our CA. */
        struct net_tls_options copt;
        net_tls_options_init(&copt);
        copt.certificate = topt.certificate;
        copt.private_key = topt.private_key;
        copt.ca_file = topt.ca_file;
        move_tls = net_tls_client_new(&copt, &err);
        if (!move_tls) {
            cli_error("serve: TLS for C-MOVE destinations: %s", err.message);
            net_tls_free(tls);
            return CLI_FAILED;
        }
        scfg.move_tls = move_tls;
    }
    acfg.log = log_line;
    struct arc_archive *archive;
    if (arc_open(&acfg, &archive, &err) < 0) {
        cli_error("serve: cannot open the archive in %s: %s", acfg.data_dir, err.message);
        net_tls_free(tls);
        net_tls_free(move_tls);
        return CLI_FAILED;
    }
    struct scp_handlers handlers;
    arc_scp_handlers(archive, &handlers);
    struct scp_server *server;
    if (scp_server_new(&scfg, &handlers, &server, &err) < 0) {
        cli_error("serve: %s", err.message);
        arc_close(archive);
        net_tls_free(tls);
        net_tls_free(move_tls);
        return CLI_FAILED;
    }
    if (scfg.port == 0) {
        printf("dicom-port %d\n", scp_server_port(server));
        fflush(stdout);
    }
    st.server = server;
    pthread_t waiter;
    pthread_create(&waiter, NULL, wait_for_signal, &st);
    scp_server_run(server);
    pthread_kill(waiter, SIGUSR1); /* harmless if it already took a stop signal and left */
    pthread_join(waiter, NULL);
    scp_server_free(server);
    arc_close(archive);
    net_tls_free(tls);
    net_tls_free(move_tls);
    log_line(NULL, SCP_LOG_INFO, "stopped");
    cfg_release(&conf);
    config_storage_release(&store);
    return CLI_OK;
}
