/*
 * cmd_serve.c - `telerad serve`: the server on its embedded default (data in ./telerad-data,
 * DICOM on 127.0.0.1:11112 as AE TELERAD), configurable by flags.
 */
#include "cli.h"
#include "common.h"
#include "archive.h"
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
    "Run the telerad server: receive studies over DICOM (C-ECHO, C-STORE) and keep them in the\n"
    "archive. With no options it listens on 127.0.0.1:11112 as AE title TELERAD and keeps its\n"
    "data in ./telerad-data. Stop it with Ctrl-C or SIGTERM: associations in progress finish.\n"
    "\n"
    "options:\n"
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
    "  --duplicates POLICY     a different object with a stored SOP Instance UID: reject\n"
    "                          (default), replace or keep-first\n"
    "  --idle-timeout SECONDS  abort an association silent for this long (default 300)\n"
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
    if (sigwait(&st->signals, &sig) == 0) {
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

int cmd_serve(int argc, char **argv)
{
    enum { O_DATA = 256, O_AET, O_HOST, O_PORT, O_CERT, O_KEY, O_CA, O_VERIFY, O_MAX, O_ANY,
           O_DUP, O_IDLE, O_INSECURE };
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
    bool insecure = false;
    int c, n;
    optind = 1;
    while ((c = getopt_long(argc, argv, "vqh", options, NULL)) != -1) {
        switch (c) {
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

    /* Block the stop signals in every thread; one thread waits for them. */
    struct stopper st;
    sigemptyset(&st.signals);
    sigaddset(&st.signals, SIGINT);
    sigaddset(&st.signals, SIGTERM);
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
    acfg.log = log_line;
    struct arc_archive *archive;
    if (arc_open(&acfg, &archive, &err) < 0) {
        cli_error("serve: cannot open the archive in %s: %s", acfg.data_dir, err.message);
        net_tls_free(tls);
        return CLI_FAILED;
    }
    struct scp_handlers handlers;
    arc_scp_handlers(archive, &handlers);
    struct scp_server *server;
    if (scp_server_new(&scfg, &handlers, &server, &err) < 0) {
        cli_error("serve: %s", err.message);
        arc_close(archive);
        net_tls_free(tls);
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
    pthread_cancel(waiter);
    pthread_join(waiter, NULL);
    scp_server_free(server);
    arc_close(archive);
    net_tls_free(tls);
    log_line(NULL, SCP_LOG_INFO, "stopped");
    return CLI_OK;
}
