/*
 * cmd_net.c - the DICOM network tools, as SCU: `telerad echo | send | find | move | get`.
 *
 * They take the peer as HOST PORT and the AE titles as -aet (ours) and -aec (theirs), as DCMTK's
 * echoscu, storescu, findscu, movescu and getscu do, so that commands written for those work
 * here with few changes. DCMTK's single-dash long options are mapped to ours by a pre-pass over
 * argv (see dcmtk_spelling below) rather than by getopt_long_only, which would also turn any
 * unique prefix such as "-ti" into a long option and make typos silently meaningful.
 *
 * Everything below this file is the network layer (scu.h: the DIMSE services, dul.h: the
 * associations); this file only parses, reports and, for `send`, schedules files over
 * parallel associations.
 */
#include "cli.h"
#include "common.h"
#include "query_key.h"
#include "scu.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_OPTIONS     64
#define MAX_WALK_DEPTH  64
#define FAILURES_LISTED 100 /* failures listed one by one in the summary of send */

/* ---- the options every command shares ------------------------------------------------------ */

static const char common_help[] =
    "  -aet, --aet TITLE      our AE title (default TELERAD)\n"
    "  -aec, --aec TITLE      the peer's AE title (default ANY-SCP)\n"
    "  -v, --verbose          association details (accepted contexts, peer implementation)\n"
    "                         and every response\n"
    "  -q, --quiet            print only errors\n"
    "  -to, --timeout SECONDS connect, association and DIMSE timeout (default 30 to connect\n"
    "                         and associate, 300 for a response)\n"
    "  -pdu, --max-pdu N      largest PDU we receive, 4096-16777216 (default 262144)\n"
    "  --tls                  DICOM over TLS (PS3.15 B.9, TLS 1.2 or later)\n"
    "  --tls-ca FILE          verify the server against these CA certificates (PEM;\n"
    "                         default: the system's CAs); implies --tls\n"
    "  --tls-cert FILE        our client certificate (PEM), with --tls-key; implies --tls\n"
    "  --tls-key FILE         its private key\n"
    "  --tls-no-verify        do not verify the server's certificate (prints a warning)\n"
    "  --user NAME            user identity (PS3.7 D.3.3.7): user name (type 1) ...\n"
    "  --password PASS        ... with a passcode (type 2)\n"
    "  --jwt TOKEN            user identity: a JSON web token (type 5)\n"
    "  --identity-response    ask the peer for a positive user identity response\n"
    "  -h, --help             show this help\n";

static const char exit_help[] =
    "\n"
    "Exit status: 0 if everything succeeded; 1 if the association was rejected or aborted, the\n"
    "connection failed, or any response had a failure status (one message on standard error\n"
    "for each); 2 on wrong usage.\n";

enum {
    O_AET = 256,
    O_AEC,
    O_TIMEOUT,
    O_MAX_PDU,
    O_TLS,
    O_TLS_CA,
    O_TLS_CERT,
    O_TLS_KEY,
    O_TLS_NO_VERIFY,
    O_USER,
    O_PASSWORD,
    O_JWT,
    O_IDENTITY_RESPONSE,
    /* command-specific */
    O_NO_PROGRESS,
    O_JSON,
    O_CANCEL_AFTER,
    O_AEM,
    O_OUT,
};

static const struct option common_options[] = {
    {"aet", required_argument, NULL, O_AET},
    {"aec", required_argument, NULL, O_AEC},
    {"verbose", no_argument, NULL, 'v'},
    {"quiet", no_argument, NULL, 'q'},
    {"timeout", required_argument, NULL, O_TIMEOUT},
    {"max-pdu", required_argument, NULL, O_MAX_PDU},
    {"tls", no_argument, NULL, O_TLS},
    {"tls-ca", required_argument, NULL, O_TLS_CA},
    {"tls-cert", required_argument, NULL, O_TLS_CERT},
    {"tls-key", required_argument, NULL, O_TLS_KEY},
    {"tls-no-verify", no_argument, NULL, O_TLS_NO_VERIFY},
    {"user", required_argument, NULL, O_USER},
    {"password", required_argument, NULL, O_PASSWORD},
    {"jwt", required_argument, NULL, O_JWT},
    {"identity-response", no_argument, NULL, O_IDENTITY_RESPONSE},
    {"help", no_argument, NULL, 'h'},
};

/* DCMTK spells some long options with one dash; each is mapped to ours before getopt_long. */
static const struct {
    const char *dcmtk, *ours;
} dcmtk_spelling[] = {
    {"-aet", "--aet"},    {"-aec", "--aec"},     {"-aem", "--aem"},
    {"-to", "--timeout"}, {"-pdu", "--max-pdu"}, {"-od", "--out"},
};

struct net_opts {
    const char *cmd;
    const char *aet, *aec;
    bool verbose, quiet;
    int timeout_ms; /* 0: the defaults of dul_config */
    uint32_t max_pdu;
    bool tls, tls_no_verify;
    const char *tls_ca, *tls_cert, *tls_key;
    const char *user, *password, *jwt;
    bool identity_response;
    const char *host;
    int port;
    struct net_tls *tls_ctx;
    struct dul_config dul;
};

struct parser {
    struct option table[MAX_OPTIONS];
    char **argv; /* argv after the DCMTK spelling pass (tr_malloc'd) */
    int argc;
};

static int parse_long(const char *text, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static bool option_takes_argument(const struct option *table, const char *shorts, const char *arg)
{
    if (arg[0] != '-' || arg[1] == '\0')
        return false;
    if (arg[1] == '-') {
        const char *name = arg + 2;
        if (strchr(name, '='))
            return false;
        for (const struct option *o = table; o->name; o++) {
            if (strcmp(o->name, name) == 0)
                return o->has_arg == required_argument;
        }
        return false;
    }
    /* A cluster of short options: the last one may take the next argument. */
    for (const char *p = arg + 1; *p; p++) {
        const char *s = strchr(shorts, *p);
        if (s && s[1] == ':')
            return p[1] == '\0';
    }
    return false;
}

/* Merge the common options with a command's own, and map DCMTK's spellings. */
static int parser_init(struct parser *p, int argc, char **argv, const struct option *extra,
                       size_t extra_count, const char *shorts)
{
    size_t n = 0;
    for (size_t i = 0; i < TR_ARRAY_SIZE(common_options); i++)
        p->table[n++] = common_options[i];
    for (size_t i = 0; i < extra_count && n < MAX_OPTIONS - 1; i++)
        p->table[n++] = extra[i];
    memset(&p->table[n], 0, sizeof(p->table[n]));
    p->argv = tr_calloc((size_t)argc + 1, sizeof(*p->argv));
    if (!p->argv)
        return TR_ENOMEM;
    p->argc = argc;
    bool skip_next = false, done = false;
    for (int i = 0; i < argc; i++) {
        char *arg = argv[i];
        p->argv[i] = arg;
        if (i == 0 || done || skip_next) {
            skip_next = false;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            done = true;
            continue;
        }
        for (size_t k = 0; k < TR_ARRAY_SIZE(dcmtk_spelling); k++) {
            if (strcmp(arg, dcmtk_spelling[k].dcmtk) == 0) {
                p->argv[i] = (char *)dcmtk_spelling[k].ours;
                break;
            }
        }
        skip_next = option_takes_argument(p->table, shorts, p->argv[i]);
    }
    return 0;
}

static void parser_release(struct parser *p)
{
    tr_free(p->argv);
}

static void net_opts_init(struct net_opts *o, const char *cmd)
{
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    o->aet = "TELERAD";
    o->aec = "ANY-SCP";
}

/* Handle a common option: 1 handled, 0 not a common option, -1 usage error (reported). */
static int common_option(struct net_opts *o, int c, const char *arg)
{
    long v;
    switch (c) {
    case O_AET:
    case O_AEC:
        if (!pdu_ae_title_is_valid(arg)) {
            cli_error("%s: '%s' is not an AE title (1-16 characters, no backslash)", o->cmd, arg);
            return -1;
        }
        *(c == O_AET ? &o->aet : &o->aec) = arg;
        return 1;
    case 'v':
        o->verbose = true;
        o->quiet = false;
        return 1;
    case 'q':
        o->quiet = true;
        o->verbose = false;
        return 1;
    case O_TIMEOUT:
        if (parse_long(arg, 1, 86400, &v) < 0) {
            cli_error("%s: --timeout takes seconds (1-86400)", o->cmd);
            return -1;
        }
        o->timeout_ms = (int)v * 1000;
        return 1;
    case O_MAX_PDU:
        if (parse_long(arg, DUL_MIN_MAX_PDU, 1L << 24, &v) < 0) {
            cli_error("%s: --max-pdu takes a size from 4096 to 16777216", o->cmd);
            return -1;
        }
        o->max_pdu = (uint32_t)v;
        return 1;
    case O_TLS: o->tls = true; return 1;
    case O_TLS_CA:
        o->tls_ca = arg;
        o->tls = true;
        return 1;
    case O_TLS_CERT:
        o->tls_cert = arg;
        o->tls = true;
        return 1;
    case O_TLS_KEY:
        o->tls_key = arg;
        o->tls = true;
        return 1;
    case O_TLS_NO_VERIFY:
        o->tls_no_verify = true;
        o->tls = true;
        return 1;
    case O_USER: o->user = arg; return 1;
    case O_PASSWORD: o->password = arg; return 1;
    case O_JWT: o->jwt = arg; return 1;
    case O_IDENTITY_RESPONSE: o->identity_response = true; return 1;
    default: return 0;
    }
}

/* After the options: HOST PORT, and the checks that span several options. Returns the index of
 * the first argument after PORT, or -1 after reporting a usage error. */
static int finish_options(struct net_opts *o, int argc, char **argv, int optind_)
{
    if (argc - optind_ < 2) {
        cli_error("%s: give the peer as HOST PORT (try 'telerad %s --help')", o->cmd, o->cmd);
        return -1;
    }
    o->host = argv[optind_];
    long port;
    if (parse_long(argv[optind_ + 1], 1, 65535, &port) < 0) {
        cli_error("%s: '%s' is not a port number (1-65535)", o->cmd, argv[optind_ + 1]);
        return -1;
    }
    o->port = (int)port;
    if (o->password && !o->user) {
        cli_error("%s: --password needs --user", o->cmd);
        return -1;
    }
    if (o->jwt && o->user) {
        cli_error("%s: give either --user or --jwt, not both", o->cmd);
        return -1;
    }
    if (o->identity_response && !o->user && !o->jwt) {
        cli_error("%s: --identity-response needs --user or --jwt", o->cmd);
        return -1;
    }
    const char *id[] = {o->user, o->password, o->jwt};
    for (size_t i = 0; i < TR_ARRAY_SIZE(id); i++) {
        if (id[i] && (strlen(id[i]) == 0 || strlen(id[i]) > PDU_IDENTITY_MAX)) {
            cli_error("%s: user identity values have 1 to 65535 bytes", o->cmd);
            return -1;
        }
    }
    if (o->tls_key && !o->tls_cert) {
        cli_error("%s: --tls-key needs --tls-cert", o->cmd);
        return -1;
    }
    if (o->tls_no_verify && o->tls_ca) {
        cli_error("%s: --tls-ca and --tls-no-verify contradict each other", o->cmd);
        return -1;
    }
    return optind_ + 2;
}

/* Make the TLS context and the upper layer configuration. */
static int net_opts_setup(struct net_opts *o)
{
    dul_config_init(&o->dul);
    o->dul.ae_title = o->aet;
    if (o->max_pdu)
        o->dul.max_pdu = o->max_pdu;
    if (o->timeout_ms) {
        o->dul.timeout_ms = o->timeout_ms;
        o->dul.connect_timeout_ms = o->timeout_ms;
        o->dul.artim_ms = o->timeout_ms;
    }
    if (!o->tls)
        return 0;
    struct net_tls_options topt;
    net_tls_options_init(&topt);
    topt.ca_file = o->tls_ca;
    topt.certificate = o->tls_cert;
    topt.private_key = o->tls_key;
    topt.verify_peer = !o->tls_no_verify;
    if (o->tls_no_verify)
        fprintf(stderr,
                "telerad: %s: warning: --tls-no-verify: the server's certificate is not "
                "checked, so anyone on the path could read and change the data\n",
                o->cmd);
    struct tr_error err = TR_ERROR_INIT;
    o->tls_ctx = net_tls_client_new(&topt, &err);
    if (!o->tls_ctx) {
        cli_error("%s: TLS: %s", o->cmd, err.message);
        return -1;
    }
    o->dul.tls = o->tls_ctx;
    return 0;
}

static void net_opts_release(struct net_opts *o)
{
    net_tls_free(o->tls_ctx);
    o->tls_ctx = NULL;
}

/* A new A-ASSOCIATE-RQ with our AE titles and user identity (contexts added by the caller). */
static struct pdu_associate *request_new(const struct net_opts *o)
{
    struct pdu_associate *rq = tr_malloc(sizeof(*rq));
    if (!rq)
        return NULL;
    pdu_associate_init(rq);
    snprintf(rq->calling_ae, sizeof(rq->calling_ae), "%s", o->aet);
    snprintf(rq->called_ae, sizeof(rq->called_ae), "%s", o->aec);
    struct pdu_user_identity *id = &rq->identity;
    if (o->jwt) {
        id->type = PDU_IDENTITY_JWT;
        id->primary = o->jwt;
        id->primary_length = (uint16_t)strlen(o->jwt);
    } else if (o->user) {
        id->type = o->password ? PDU_IDENTITY_USERNAME_PASSCODE : PDU_IDENTITY_USERNAME;
        id->primary = o->user;
        id->primary_length = (uint16_t)strlen(o->user);
        if (o->password) {
            id->secondary = o->password;
            id->secondary_length = (uint16_t)strlen(o->password);
        }
    }
    id->positive_response = o->identity_response;
    return rq;
}

static void request_free(struct pdu_associate *rq)
{
    if (rq) {
        pdu_associate_release(rq);
        tr_free(rq);
    }
}

static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static void print_association(const struct net_opts *o, struct dul_assoc *a)
{
    pthread_mutex_lock(&print_lock);
    struct net_conn *conn = dul_connection(a);
    fprintf(stderr, "association with %s at %s accepted%s%s\n", dul_peer_ae(a), dul_peer_address(a),
            conn && net_is_tls(conn) ? " over " : "",
            conn && net_is_tls(conn) ? net_tls_version(conn) : "");
    fprintf(stderr, "  peer implementation: %s%s%s%s, max PDU %" PRIu32 "\n",
            dul_peer_implementation(a), *dul_peer_version(a) ? " (" : "", dul_peer_version(a),
            *dul_peer_version(a) ? ")" : "", dul_peer_max_pdu(a));
    const struct pdu_user_identity *id = dul_identity(a);
    if (id && id->type != PDU_IDENTITY_NONE)
        fprintf(stderr, "  user identity: type %u%s\n", id->type,
                id->positive_response ? ", positive response requested" : "");
    unsigned accepted = 0;
    for (unsigned i = 0; i < dul_context_count(a); i++) {
        const struct dul_context *c = dul_context_at(a, i);
        const struct dcm_uid_entry *as = dcm_uid_lookup(c->abstract_syntax);
        if (c->result == PDU_PC_ACCEPTANCE) {
            accepted++;
            const struct dcm_transfer_syntax *ts = dcm_ts_lookup(c->transfer_syntax);
            fprintf(stderr, "  context %3u: %s: %s%s\n", c->id, as ? as->name : c->abstract_syntax,
                    ts ? ts->name : c->transfer_syntax,
                    c->requestor_scp ? (c->requestor_scu ? " (SCU and SCP role)" : " (SCP role)")
                                     : "");
        } else {
            static const char *const why[] = {
                "accepted", "rejected by the user", "rejected, no reason",
                "abstract syntax not supported", "transfer syntaxes not supported"};
            fprintf(stderr, "  context %3u: %s: %s\n", c->id, as ? as->name : c->abstract_syntax,
                    c->result < TR_ARRAY_SIZE(why) ? why[c->result] : "rejected");
        }
    }
    fprintf(stderr, "  %u of %u presentation contexts accepted\n", accepted, dul_context_count(a));
    (void)o;
    pthread_mutex_unlock(&print_lock);
}

/* Open an association; the request passes to it on success and is freed on failure. */
static int associate(const struct net_opts *o, struct pdu_associate *rq, struct dul_assoc **out,
                     struct tr_error *err)
{
    int rc = dul_request(&o->dul, o->host, o->port, rq, out, err);
    if (rc) {
        request_free(rq);
        return rc;
    }
    if (o->verbose)
        print_association(o, *out);
    return 0;
}

static void release(const struct net_opts *o, struct dul_assoc *a)
{
    struct tr_error err = TR_ERROR_INIT;
    if (dul_release(a, &err) < 0 && !o->quiet)
        fprintf(stderr, "telerad: %s: release: %s\n", o->cmd, err.message);
    else if (o->verbose)
        fprintf(stderr, "association with %s released\n", dul_peer_ae(a));
    dul_free(a);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "Success (0000)", "Failure: cannot understand (C000)" */
static void status_words(uint16_t status, char *buf, size_t size)
{
    snprintf(buf, size, "%s (%04X)", dimse_status_text(status), status);
}

/* ---- echo ---------------------------------------------------------------------------------- */

static const char echo_help[] =
    "usage: telerad echo [options] HOST PORT\n"
    "\n"
    "Send C-ECHO (verification, PS3.4 A) to the DICOM node at HOST PORT and print its status and\n"
    "the round-trip time, as DCMTK's echoscu does.\n"
    "\n"
    "options:\n"
    "  -r, --repeat N         send N C-ECHOs on the association (default 1)\n";

int cmd_echo(int argc, char **argv)
{
    static const struct option extra[] = {{"repeat", required_argument, NULL, 'r'}};
    static const char shorts[] = "vqhr:";
    struct net_opts o;
    net_opts_init(&o, "echo");
    struct parser p;
    if (parser_init(&p, argc, argv, extra, TR_ARRAY_SIZE(extra), shorts) < 0) {
        cli_error("out of memory");
        return CLI_FAILED;
    }
    long repeat = 1;
    int c, status = CLI_USAGE;
    optind = 1;
    while ((c = getopt_long(p.argc, p.argv, shorts, p.table, NULL)) != -1) {
        int r = common_option(&o, c, optarg);
        if (r < 0)
            goto out;
        if (r > 0)
            continue;
        switch (c) {
        case 'r':
            if (parse_long(optarg, 1, 65535, &repeat) < 0) {
                cli_error("echo: --repeat takes a number from 1 to 65535");
                goto out;
            }
            break;
        case 'h':
            printf("%s%s%s", echo_help, common_help, exit_help);
            status = CLI_OK;
            goto out;
        default: fprintf(stderr, "%s%s%s", echo_help, common_help, exit_help); goto out;
        }
    }
    int rest = finish_options(&o, p.argc, p.argv, optind);
    if (rest < 0)
        goto out;
    if (rest < p.argc) {
        cli_error("echo: unexpected argument '%s'", p.argv[rest]);
        goto out;
    }
    status = CLI_FAILED;
    if (net_opts_setup(&o) < 0)
        goto out;
    struct pdu_associate *rq = request_new(&o);
    if (!rq) {
        cli_error("out of memory");
        goto out;
    }
    static const char *const ts[] = {DCM_UID_ExplicitVRLittleEndian, DCM_UID_ImplicitVRLittleEndian,
                                     NULL};
    scu_add_context(rq, SCU_VERIFICATION, ts);
    struct tr_error err = TR_ERROR_INIT;
    struct dul_assoc *a;
    if (associate(&o, rq, &a, &err) < 0) {
        cli_error("echo: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        goto out;
    }
    status = CLI_OK;
    for (long i = 0; i < repeat; i++) {
        uint16_t st = 0;
        double t0 = now_seconds();
        if (scu_echo(a, (uint16_t)(i + 1), &st, &err) < 0) {
            cli_error("echo: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
            dul_abort(a, PDU_ABORT_USER, 0);
            dul_free(a);
            status = CLI_FAILED;
            goto out;
        }
        double ms = (now_seconds() - t0) * 1000;
        char words[128];
        status_words(st, words, sizeof(words));
        if (st != DIMSE_STATUS_SUCCESS) {
            cli_error("echo: %s answered %s", o.aec, words);
            status = CLI_FAILED;
        } else if (!o.quiet) {
            printf("C-ECHO to %s at %s:%d: %s in %.1f ms\n", o.aec, o.host, o.port, words, ms);
        }
    }
    fflush(stdout);
    release(&o, a);
out:
    net_opts_release(&o);
    parser_release(&p);
    return status;
}

/* ---- send ---------------------------------------------------------------------------------- */

static const char send_help[] =
    "usage: telerad send [options] HOST PORT FILE|DIR...\n"
    "\n"
    "Send DICOM files with C-STORE (PS3.4 B) to the node at HOST PORT, as DCMTK's storescu\n"
    "does. Folders are walked recursively; files in them that are not DICOM (no \"DICM\" at\n"
    "byte 128) and DICOMDIR files are skipped and counted. Each file goes in its own transfer\n"
    "syntax: for each SOP class telerad proposes the transfer syntaxes of its files (a\n"
    "context per compressed syntax; uncompressed ones together with Explicit and Implicit VR\n"
    "Little Endian as fallback, to which uncompressed files are converted if the peer accepts\n"
    "nothing else). Past 128 presentation contexts, further associations carry the rest.\n"
    "\n"
    "options:\n"
    "  -j, --jobs N           N associations in parallel (default 1, at most 64)\n"
    "  --no-progress          no progress bar (it is shown on standard error when that is\n"
    "                         a terminal, unless -v or -q)\n";

static const char send_exit_help[] =
    "\n"
    "At the end a summary: files sent of files found, time, instances/s and MB/s (1 MB =\n"
    "1,000,000 bytes of file), then each failure with its status code, text and comment.\n"
    "\n"
    "Exit status: 0 if every file was stored (warnings such as B000 coercion count as stored);\n"
    "1 if any file failed (unreadable or bad file, failure status, association rejected or\n"
    "aborted); 2 on wrong usage.\n";

enum item_state { ITEM_QUEUED, ITEM_SENT, ITEM_WARNING, ITEM_FAILED, ITEM_SKIPPED };

struct send_item {
    char *path;
    char sop_class[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    char ts[DCM_UID_MAX + 1];
    uint64_t dataset_offset, size;
    unsigned context; /* index into send_run.contexts */
    unsigned group;   /* association group (128 contexts each) */
    enum item_state state;
    bool has_status, not_sent;
    uint16_t status;
    char *message; /* failure text or status comment (tr_malloc'd) */
};

struct send_context {
    const char *sop_class;
    bool compressed;
    unsigned ts_count;
    const char *ts[PDU_MAX_TRANSFER_SYNTAXES + 1];
    unsigned group;
};

struct send_run {
    struct net_opts *o;
    struct send_item *items;
    size_t count, cap;
    size_t skipped; /* non-DICOM files in folders */
    struct send_context *contexts;
    unsigned context_count, group_count;
    char **group_error; /* first association failure of each group */
    size_t *queue;      /* indexes of items to send, ordered by group */
    size_t queue_len, next;
    size_t returned[64]; /* items handed back by workers that gave up */
    size_t returned_len;
    unsigned connected, connecting;
    /* progress */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    size_t done, sent, failed;
    uint64_t bytes;
    double start;
    bool finished, progress;
};

static int add_item(struct send_run *r, const char *path, struct send_item **out)
{
    if (r->count == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        struct send_item *n = tr_reallocarray(r->items, cap, sizeof(*n));
        if (!n)
            return TR_ENOMEM;
        r->items = n;
        r->cap = cap;
    }
    struct send_item *it = &r->items[r->count];
    memset(it, 0, sizeof(*it));
    it->path = tr_strdup(path);
    if (!it->path)
        return TR_ENOMEM;
    r->count++;
    *out = it;
    return 0;
}

static void item_fail(struct send_item *it, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void item_fail(struct send_item *it, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    struct tr_buf b;
    tr_buf_init(&b, 4096);
    tr_buf_vaddf(&b, fmt, ap);
    va_end(ap);
    tr_free(it->message);
    it->message = tr_buf_detach(&b, NULL);
    it->state = ITEM_FAILED;
}

static bool has_dicm_magic(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return true; /* unreadable: let the probe report why */
    char buf[132];
    ssize_t n = pread(fd, buf, sizeof(buf), 0);
    close(fd);
    return n == (ssize_t)sizeof(buf) && memcmp(buf + 128, "DICM", 4) == 0;
}

#define DICOMDIR_SOP_CLASS "1.2.840.10008.1.3.10"

/* Probe one file: an item ready to queue, a failed item, or (in a folder) a skipped file. */
static int probe_file(struct send_run *r, const char *path, bool in_folder)
{
    struct tr_error err = TR_ERROR_INIT;
    struct scu_file *f = tr_malloc(sizeof(*f));
    if (!f)
        return TR_ENOMEM;
    int prc = scu_file_probe(path, f, &err);
    bool skip = false;
    const char *why = "";
    if (in_folder && prc < 0 && !has_dicm_magic(path)) {
        skip = true;
        why = "not a DICOM file";
    } else if (in_folder && prc == 0 && strcmp(f->sop_class, DICOMDIR_SOP_CLASS) == 0) {
        skip = true;
        why = "a DICOMDIR";
    }
    if (skip) {
        tr_free(f);
        r->skipped++;
        if (r->o->verbose)
            fprintf(stderr, "skipping %s: %s\n", path, why);
        return 0;
    }
    struct send_item *it;
    int rc = add_item(r, path, &it);
    if (rc == 0) {
        if (prc < 0) {
            item_fail(it, "%s", err.message);
        } else {
            memcpy(it->sop_class, f->sop_class, sizeof(it->sop_class));
            memcpy(it->sop_instance, f->sop_instance, sizeof(it->sop_instance));
            memcpy(it->ts, f->transfer_syntax, sizeof(it->ts));
            it->dataset_offset = f->dataset_offset;
            it->size = f->size;
        }
    }
    tr_free(f);
    return rc;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int walk(struct send_run *r, const char *dir, unsigned depth)
{
    if (depth > MAX_WALK_DEPTH) {
        struct send_item *it;
        if (add_item(r, dir, &it) < 0)
            return TR_ENOMEM;
        item_fail(it, "folders nested deeper than %d levels", MAX_WALK_DEPTH);
        return 0;
    }
    DIR *d = opendir(dir);
    if (!d) {
        struct send_item *it;
        if (add_item(r, dir, &it) < 0)
            return TR_ENOMEM;
        item_fail(it, "cannot open the folder: %s", strerror(errno));
        return 0;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char **nn = tr_reallocarray(names, ncap, sizeof(*nn));
            if (!nn) {
                rc = TR_ENOMEM;
                break;
            }
            names = nn;
            cap = ncap;
        }
        if (!(names[n] = tr_strdup(e->d_name))) {
            rc = TR_ENOMEM;
            break;
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, n, sizeof(*names), compare_names);
    struct tr_buf path;
    tr_buf_init(&path, PATH_MAX);
    for (size_t i = 0; i < n && rc == 0; i++) {
        tr_buf_reset(&path);
        if (tr_buf_addf(&path, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", names[i]) < 0)
            continue;
        struct stat st;
        if (lstat(path.data, &st) < 0)
            continue;
        if (S_ISLNK(st.st_mode)) {
            /* Follow links to files, not to folders (no loops). */
            if (stat(path.data, &st) < 0 || S_ISDIR(st.st_mode))
                continue;
        }
        if (S_ISDIR(st.st_mode))
            rc = walk(r, path.data, depth + 1);
        else if (S_ISREG(st.st_mode))
            rc = probe_file(r, path.data, true);
    }
    tr_buf_release(&path);
    for (size_t i = 0; i < n; i++)
        tr_free(names[i]);
    tr_free(names);
    return rc;
}

static bool ts_is_compressed(const char *uid)
{
    const struct dcm_transfer_syntax *ts = dcm_ts_lookup(uid);
    /* An unknown transfer syntax can only go as it is: treat it as compressed. */
    return !ts || (ts->flags & (DCM_TS_ENCAPSULATED | DCM_TS_REFERENCED));
}

static int compare_contexts(const void *a, const void *b)
{
    const struct send_context *x = a, *y = b;
    int c = strcmp(x->sop_class, y->sop_class);
    if (c)
        return c;
    if (x->compressed != y->compressed)
        return x->compressed ? 1 : -1;
    return strcmp(x->ts[0], y->ts[0]);
}

static bool context_matches(const struct send_context *c, const struct send_item *it)
{
    if (strcmp(c->sop_class, it->sop_class) != 0)
        return false;
    bool compressed = ts_is_compressed(it->ts);
    return c->compressed == compressed && (!compressed || strcmp(c->ts[0], it->ts) == 0);
}

/* Presentation contexts for the files: per SOP class, one per compressed transfer syntax and
 * one for the uncompressed ones (theirs, then Explicit and Implicit VR Little Endian). */
static int build_contexts(struct send_run *r)
{
    size_t cap = 0;
    for (size_t i = 0; i < r->count; i++) {
        struct send_item *it = &r->items[i];
        if (it->state != ITEM_QUEUED)
            continue;
        struct send_context *c = NULL;
        for (unsigned k = 0; k < r->context_count && !c; k++) {
            if (context_matches(&r->contexts[k], it))
                c = &r->contexts[k];
        }
        if (!c) {
            if (r->context_count == cap) {
                size_t ncap = cap ? cap * 2 : 32;
                struct send_context *nc = tr_reallocarray(r->contexts, ncap, sizeof(*nc));
                if (!nc)
                    return TR_ENOMEM;
                r->contexts = nc;
                cap = ncap;
            }
            c = &r->contexts[r->context_count++];
            memset(c, 0, sizeof(*c));
            c->sop_class = it->sop_class;
            c->compressed = ts_is_compressed(it->ts);
            if (c->compressed)
                c->ts[c->ts_count++] = it->ts;
        }
        if (!c->compressed) {
            bool seen = false;
            for (unsigned t = 0; t < c->ts_count && !seen; t++)
                seen = strcmp(c->ts[t], it->ts) == 0;
            if (!seen && c->ts_count < PDU_MAX_TRANSFER_SYNTAXES - 2)
                c->ts[c->ts_count++] = it->ts;
        }
    }
    static const char *const fallback[] = {DCM_UID_ExplicitVRLittleEndian,
                                           DCM_UID_ImplicitVRLittleEndian};
    for (unsigned k = 0; k < r->context_count; k++) {
        struct send_context *c = &r->contexts[k];
        for (size_t f = 0; f < TR_ARRAY_SIZE(fallback) && !c->compressed; f++) {
            bool seen = false;
            for (unsigned t = 0; t < c->ts_count && !seen; t++)
                seen = strcmp(c->ts[t], fallback[f]) == 0;
            if (!seen)
                c->ts[c->ts_count++] = fallback[f];
        }
        c->ts[c->ts_count] = NULL;
    }
    if (r->context_count)
        qsort(r->contexts, r->context_count, sizeof(*r->contexts), compare_contexts);
    for (unsigned k = 0; k < r->context_count; k++)
        r->contexts[k].group = k / PDU_MAX_CONTEXTS;
    r->group_count = (r->context_count + PDU_MAX_CONTEXTS - 1) / PDU_MAX_CONTEXTS;
    r->group_error = tr_calloc(r->group_count + 1, sizeof(*r->group_error));
    r->queue = tr_calloc(r->count + 1, sizeof(*r->queue));
    if (!r->group_error || !r->queue)
        return TR_ENOMEM;
    for (size_t i = 0; i < r->count; i++) {
        struct send_item *it = &r->items[i];
        if (it->state != ITEM_QUEUED)
            continue;
        for (unsigned k = 0; k < r->context_count; k++) {
            if (context_matches(&r->contexts[k], it)) {
                it->context = k;
                it->group = r->contexts[k].group;
                break;
            }
        }
    }
    /* The queue: files by group (a stable pass per group keeps the command line's order). */
    for (unsigned g = 0; g < r->group_count; g++) {
        for (size_t i = 0; i < r->count; i++) {
            if (r->items[i].state == ITEM_QUEUED && r->items[i].group == g)
                r->queue[r->queue_len++] = i;
        }
    }
    return 0;
}

static void count_done(struct send_run *r, struct send_item *it)
{
    /* under r->lock */
    r->done++;
    if (it->state == ITEM_SENT || it->state == ITEM_WARNING) {
        r->sent++;
        r->bytes += it->size;
    } else {
        r->failed++;
    }
}

/* The next file to send (NULL when there is none); files of a group whose association failed
 * are failed here. */
static struct send_item *take_next(struct send_run *r, bool connected)
{
    pthread_mutex_lock(&r->lock);
    struct send_item *it = NULL;
    while (!it) {
        if (r->returned_len)
            it = &r->items[r->returned[--r->returned_len]];
        else if (r->next < r->queue_len)
            it = &r->items[r->queue[r->next++]];
        else
            break;
        if (r->group_error[it->group]) {
            item_fail(it, "not sent: %s", r->group_error[it->group]);
            it->not_sent = true;
            count_done(r, it);
            it = NULL;
        }
    }
    /* A worker that gets nothing leaves: it no longer counts as connected, so that a file
     * handed back by another worker is not left to it. */
    if (!it && connected)
        r->connected--;
    pthread_mutex_unlock(&r->lock);
    return it;
}

static int open_group(struct send_run *r, unsigned group, struct dul_assoc **out,
                      struct tr_error *err)
{
    struct pdu_associate *rq = request_new(r->o);
    if (!rq)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    for (unsigned k = 0; k < r->context_count; k++) {
        if (r->contexts[k].group == group)
            scu_add_context(rq, r->contexts[k].sop_class, r->contexts[k].ts);
    }
    return associate(r->o, rq, out, err);
}

static bool association_broken(int rc)
{
    /* Errors after which the association cannot carry another message. EUNSUPPORTED (no
     * accepted context for the file) is found before anything is sent. */
    return rc != TR_EUNSUPPORTED;
}

static void *send_worker(void *arg)
{
    struct send_run *r = arg;
    struct net_opts *o = r->o;
    struct dul_assoc *a = NULL;
    unsigned group = UINT_MAX;
    uint16_t message_id = 0;
    struct scu_file *f = tr_malloc(sizeof(*f));
    struct send_item *it;
    while (f && (it = take_next(r, a != NULL)) != NULL) {
        struct tr_error err = TR_ERROR_INIT;
        if (a && it->group != group) {
            release(o, a);
            a = NULL;
            pthread_mutex_lock(&r->lock);
            r->connected--;
            pthread_mutex_unlock(&r->lock);
        }
        if (!a) {
            pthread_mutex_lock(&r->lock);
            r->connecting++;
            pthread_mutex_unlock(&r->lock);
            int rc = open_group(r, it->group, &a, &err);
            pthread_mutex_lock(&r->lock);
            r->connecting--;
            if (rc < 0) {
                a = NULL;
                if (r->connected + r->connecting > 0 &&
                    r->returned_len < TR_ARRAY_SIZE(r->returned)) {
                    /* Others are connected: leave the files to them (a peer may limit how
                     * many associations it takes). */
                    r->returned[r->returned_len++] = (size_t)(it - r->items);
                    pthread_mutex_unlock(&r->lock);
                    if (o->verbose)
                        fprintf(stderr,
                                "telerad: send: a parallel association failed (%s); "
                                "continuing with fewer\n",
                                err.message);
                    break;
                }
                if (!r->group_error[it->group])
                    r->group_error[it->group] = tr_strdup(err.message);
                item_fail(it, "not sent: %s", err.message);
                it->not_sent = true;
                count_done(r, it);
                pthread_mutex_unlock(&r->lock);
                continue;
            }
            r->connected++;
            pthread_mutex_unlock(&r->lock);
            group = it->group;
            message_id = 0;
        }
        memset(f, 0, sizeof(*f));
        snprintf(f->path, sizeof(f->path), "%s", it->path);
        memcpy(f->sop_class, it->sop_class, sizeof(f->sop_class));
        memcpy(f->sop_instance, it->sop_instance, sizeof(f->sop_instance));
        memcpy(f->transfer_syntax, it->ts, sizeof(f->transfer_syntax));
        f->dataset_offset = it->dataset_offset;
        f->size = it->size;
        uint16_t status = 0;
        char comment[128];
        if (++message_id == 0)
            message_id = 1;
        int rc = scu_store_file(a, f, message_id, NULL, 0, &status, comment, sizeof(comment), &err);
        pthread_mutex_lock(&r->lock);
        if (rc < 0) {
            item_fail(it, "%s", err.message);
        } else {
            it->has_status = true;
            it->status = status;
            it->message = comment[0] ? tr_strdup(comment) : NULL;
            it->state = dimse_status_is_failure(status)   ? ITEM_FAILED
                        : dimse_status_is_warning(status) ? ITEM_WARNING
                                                          : ITEM_SENT;
        }
        count_done(r, it);
        pthread_mutex_unlock(&r->lock);
        if (o->verbose) {
            char words[128];
            status_words(status, words, sizeof(words));
            pthread_mutex_lock(&print_lock);
            if (rc < 0)
                fprintf(stderr, "%s: %s\n", it->path, err.message);
            else
                fprintf(stderr, "%s: %s%s%s\n", it->path, words, comment[0] ? ": " : "", comment);
            pthread_mutex_unlock(&print_lock);
        }
        if (rc < 0 && association_broken(rc)) {
            dul_abort(a, PDU_ABORT_USER, 0);
            dul_free(a);
            a = NULL;
            pthread_mutex_lock(&r->lock);
            r->connected--;
            pthread_mutex_unlock(&r->lock);
        }
    }
    if (a)
        release(o, a); /* take_next has already stopped counting it */
    tr_free(f);
    return NULL;
}

static void draw_progress(struct send_run *r, bool last)
{
    /* under r->lock */
    double t = now_seconds() - r->start;
    if (t <= 0)
        t = 1e-9;
    size_t total = r->queue_len;
    unsigned width = 24,
             fill = total ? (unsigned)((double)width * (double)r->done / (double)total) : width;
    char bar[32];
    for (unsigned i = 0; i < width; i++)
        bar[i] = i < fill ? '=' : (i == fill ? '>' : ' ');
    bar[width] = '\0';
    fprintf(stderr, "\r[%s] %zu/%zu files  %.1f inst/s  %.1f MB/s  %zu failed\033[K%s", bar,
            r->done, total, (double)r->sent / t, (double)r->bytes / 1e6 / t, r->failed,
            last ? "\r\033[K" : "");
    fflush(stderr);
}

static void *progress_thread(void *arg)
{
    struct send_run *r = arg;
    pthread_mutex_lock(&r->lock);
    while (!r->finished) {
        draw_progress(r, false);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->wake, &r->lock, &ts);
    }
    draw_progress(r, true);
    pthread_mutex_unlock(&r->lock);
    return NULL;
}

static void print_send_summary(struct send_run *r, double elapsed)
{
    struct net_opts *o = r->o;
    size_t total = r->count, sent = 0, warned = 0, failed = 0, not_sent = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; i < r->count; i++) {
        const struct send_item *it = &r->items[i];
        if (it->state == ITEM_SENT || it->state == ITEM_WARNING) {
            sent++;
            bytes += it->size;
            warned += it->state == ITEM_WARNING;
        } else if (it->state == ITEM_FAILED) {
            failed++;
            not_sent += it->not_sent;
        }
    }
    double t = elapsed > 0 ? elapsed : 1e-9;
    if (!o->quiet || failed) {
        printf("sent %zu of %zu files (%.1f MB) in %.2f s: %.1f instances/s, %.1f MB/s\n", sent,
               total, (double)bytes / 1e6, elapsed, (double)sent / t, (double)bytes / 1e6 / t);
        if (r->skipped)
            printf("skipped %zu files that are not DICOM\n", r->skipped);
        if (warned)
            printf("%zu stored with a warning status\n", warned);
    }
    for (unsigned g = 0; g < r->group_count; g++) {
        if (r->group_error[g])
            printf("association to %s at %s:%d failed: %s\n", o->aec, o->host, o->port,
                   r->group_error[g]);
    }
    if (not_sent)
        printf("%zu files not sent because no association could be made\n", not_sent);
    if (failed > not_sent || (failed && o->verbose)) {
        printf("%zu failed:\n", o->verbose ? failed : failed - not_sent);
        size_t listed = 0;
        for (size_t i = 0; i < r->count; i++) {
            const struct send_item *it = &r->items[i];
            bool show = (it->state == ITEM_FAILED && (!it->not_sent || o->verbose)) ||
                        (it->state == ITEM_WARNING && o->verbose);
            if (!show)
                continue;
            if (listed++ == FAILURES_LISTED && !o->verbose) {
                printf("  ... and more (-v lists all)\n");
                break;
            }
            if (it->has_status)
                printf("  %s: %04X %s%s%s\n", it->path, it->status, dimse_status_text(it->status),
                       it->message ? ": " : "", it->message ? it->message : "");
            else
                printf("  %s: %s\n", it->path, it->message ? it->message : "failed");
        }
    }
    fflush(stdout);
    if (failed)
        cli_error("send: %zu of %zu files failed%s", failed, total,
                  not_sent ? " (some were not sent: see above)" : "");
}

static void send_run_release(struct send_run *r)
{
    for (size_t i = 0; i < r->count; i++) {
        tr_free(r->items[i].path);
        tr_free(r->items[i].message);
    }
    tr_free(r->items);
    tr_free(r->contexts);
    for (unsigned g = 0; r->group_error && g < r->group_count; g++)
        tr_free(r->group_error[g]);
    tr_free(r->group_error);
    tr_free(r->queue);
}

int cmd_send(int argc, char **argv)
{
    static const struct option extra[] = {
        {"jobs", required_argument, NULL, 'j'},
        {"no-progress", no_argument, NULL, O_NO_PROGRESS},
    };
    static const char shorts[] = "vqhj:";
    struct net_opts o;
    net_opts_init(&o, "send");
    struct parser p;
    if (parser_init(&p, argc, argv, extra, TR_ARRAY_SIZE(extra), shorts) < 0) {
        cli_error("out of memory");
        return CLI_FAILED;
    }
    struct send_run r;
    memset(&r, 0, sizeof(r));
    r.o = &o;
    pthread_mutex_init(&r.lock, NULL);
    pthread_cond_init(&r.wake, NULL);
    long jobs = 1;
    bool no_progress = false;
    int c, status = CLI_USAGE;
    optind = 1;
    while ((c = getopt_long(p.argc, p.argv, shorts, p.table, NULL)) != -1) {
        int k = common_option(&o, c, optarg);
        if (k < 0)
            goto out;
        if (k > 0)
            continue;
        switch (c) {
        case 'j':
            if (parse_long(optarg, 1, 64, &jobs) < 0) {
                cli_error("send: --jobs takes a number from 1 to 64");
                goto out;
            }
            break;
        case O_NO_PROGRESS: no_progress = true; break;
        case 'h':
            printf("%s%s%s", send_help, common_help, send_exit_help);
            status = CLI_OK;
            goto out;
        default: fprintf(stderr, "%s%s%s", send_help, common_help, send_exit_help); goto out;
        }
    }
    int rest = finish_options(&o, p.argc, p.argv, optind);
    if (rest < 0)
        goto out;
    if (rest >= p.argc) {
        cli_error("send: no file or folder given (try 'telerad send --help')");
        goto out;
    }
    status = CLI_FAILED;
    if (net_opts_setup(&o) < 0)
        goto out;

    /* 1. Find and probe the files (header only). */
    double t0 = now_seconds();
    for (int i = rest; i < p.argc; i++) {
        struct stat st;
        int rc;
        if (stat(p.argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            rc = walk(&r, p.argv[i], 0);
        } else {
            rc = probe_file(&r, p.argv[i], false);
        }
        if (rc < 0) {
            cli_error("send: out of memory");
            goto out;
        }
    }
    if (build_contexts(&r) < 0) {
        cli_error("send: out of memory");
        goto out;
    }
    if (o.verbose)
        fprintf(stderr,
                "%zu files probed in %.2f s: %zu to send in %u presentation contexts "
                "(%u association%s), %zu skipped\n",
                r.count, now_seconds() - t0, r.queue_len, r.context_count, r.group_count,
                r.group_count == 1 ? "" : "s", r.skipped);
    if (r.count == 0) {
        cli_error("send: no DICOM files found%s",
                  r.skipped ? " (only files that are not DICOM)" : "");
        goto out;
    }

    /* 2. Send over `jobs` associations; the files are shared through the queue. */
    if ((size_t)jobs > r.queue_len)
        jobs = r.queue_len ? (long)r.queue_len : 1;
    r.start = now_seconds();
    r.progress = !no_progress && !o.quiet && !o.verbose && isatty(STDERR_FILENO);
    pthread_t progress, workers[64];
    bool progress_started =
        r.progress && r.queue_len && pthread_create(&progress, NULL, progress_thread, &r) == 0;
    long started = 0;
    for (long i = 0; i < jobs && r.queue_len; i++) {
        if (pthread_create(&workers[i], NULL, send_worker, &r) != 0)
            break;
        started++;
    }
    if (r.queue_len && started == 0)
        send_worker(&r);
    for (long i = 0; i < started; i++)
        pthread_join(workers[i], NULL);
    double elapsed = now_seconds() - r.start;
    if (progress_started) {
        pthread_mutex_lock(&r.lock);
        r.finished = true;
        pthread_cond_signal(&r.wake);
        pthread_mutex_unlock(&r.lock);
        pthread_join(progress, NULL);
    }
    /* Files left when every worker gave up (cannot happen: the last one fails them). */
    for (size_t i = 0; i < r.count; i++) {
        if (r.items[i].state == ITEM_QUEUED) {
            item_fail(&r.items[i], "not sent");
            r.items[i].not_sent = true;
        }
    }
    print_send_summary(&r, elapsed);
    status = CLI_OK;
    for (size_t i = 0; i < r.count; i++) {
        if (r.items[i].state == ITEM_FAILED)
            status = CLI_FAILED;
    }
out:
    send_run_release(&r);
    pthread_cond_destroy(&r.wake);
    pthread_mutex_destroy(&r.lock);
    net_opts_release(&o);
    parser_release(&p);
    return status;
}

/* ---- query keys (find, move, get) ---------------------------------------------------------- */

static const char query_help[] =
    "  -P, --patient-root     the Patient Root information model\n"
    "  -S, --study-root       the Study Root information model (default)\n"
    "  -L, --level LEVEL      PATIENT, STUDY, SERIES or IMAGE: the Query/Retrieve Level\n"
    "                         (default STUDY; PATIENT with -P)\n"
    "  -k, --key KEY=VALUE    a key (repeat for more). KEY is a keyword (PatientName), a tag\n"
    "                         (0010,0010) or 00100010, or a path into a sequence\n"
    "                         (ReferencedStudySequence[0].ReferencedSOPClassUID). An empty\n"
    "                         VALUE asks for the attribute back; wildcards (* ?), ranges\n"
    "                         (20240101-20240131) and lists of UIDs (a\\b) as PS3.4 C.2.2.2\n"
    "                         says. -k QueryRetrieveLevel=... overrides -L.\n";

struct query_opts {
    bool patient_root;
    const char *level;
    const char *keys[256];
    size_t key_count;
};

static int query_option(const char *cmd, struct query_opts *q, int c, const char *arg)
{
    switch (c) {
    case 'P': q->patient_root = true; return 1;
    case 'S': q->patient_root = false; return 1;
    case 'L':
        if (strcmp(arg, "PATIENT") && strcmp(arg, "STUDY") && strcmp(arg, "SERIES") &&
            strcmp(arg, "IMAGE")) {
            cli_error("%s: --level is PATIENT, STUDY, SERIES or IMAGE", cmd);
            return -1;
        }
        q->level = arg;
        return 1;
    case 'k':
        if (q->key_count == TR_ARRAY_SIZE(q->keys)) {
            cli_error("%s: too many keys", cmd);
            return -1;
        }
        q->keys[q->key_count++] = arg;
        return 1;
    default: return 0;
    }
}

static const struct option query_options[] = {
    {"patient-root", no_argument, NULL, 'P'},
    {"study-root", no_argument, NULL, 'S'},
    {"level", required_argument, NULL, 'L'},
    {"key", required_argument, NULL, 'k'},
};

#define TAG_QueryRetrieveLevel 0x00080052u

/* The identifier from -L and the -k keys; NULL after reporting an error. */
static struct dcm_dataset *build_identifier(const char *cmd, const struct query_opts *q)
{
    struct dcm_dataset *ds = dcm_dataset_new();
    if (!ds) {
        cli_error("out of memory");
        return NULL;
    }
    const char *level = q->level ? q->level : q->patient_root ? "PATIENT" : "STUDY";
    dcm_dataset_set_string(ds, TAG_QueryRetrieveLevel, DCM_VR_CS, level);
    for (size_t i = 0; i < q->key_count; i++) {
        struct tr_error err = TR_ERROR_INIT;
        const char *spec = q->keys[i], *eq = strchr(spec, '=');
        if (dcm_query_key_set(ds, spec, eq ? (size_t)(eq - spec) : strlen(spec), eq ? eq + 1 : "",
                              &err) < 0) {
            cli_error("%s: -k %s: %s", cmd, q->keys[i], err.message);
            dcm_dataset_free(ds);
            return NULL;
        }
    }
    return ds;
}

static void print_identifier(const struct net_opts *o, const struct dcm_dataset *ds)
{
    if (!o->verbose)
        return;
    fprintf(stderr, "identifier:\n");
    fflush(stderr);
    struct tr_sink sink = tr_sink_stdio(stderr);
    struct tr_error err = TR_ERROR_INIT;
    dcm_dump_dataset(ds, DCM_DUMP_FULL_VALUES, &sink, &err);
    fflush(stderr);
}

/* Parse the options of find, move and get: common ones, query ones and `extra`. Returns 1 to
 * go on (HOST PORT parsed; nothing may follow), or an exit status. */
typedef int (*extra_option_fn)(void *ctx, int c, const char *arg);

static int parse_query_command(struct net_opts *o, struct query_opts *q, struct parser *p, int argc,
                               char **argv, const struct option *extra, size_t extra_count,
                               const char *shorts, extra_option_fn handle, void *ctx,
                               const char *help, const char *exit_text)
{
    struct option all[MAX_OPTIONS];
    size_t n = 0;
    for (size_t i = 0; i < TR_ARRAY_SIZE(query_options); i++)
        all[n++] = query_options[i];
    for (size_t i = 0; i < extra_count && n < MAX_OPTIONS; i++)
        all[n++] = extra[i];
    if (parser_init(p, argc, argv, all, n, shorts) < 0) {
        cli_error("out of memory");
        return CLI_FAILED;
    }
    int c;
    optind = 1;
    while ((c = getopt_long(p->argc, p->argv, shorts, p->table, NULL)) != -1) {
        int k = common_option(o, c, optarg);
        if (k == 0)
            k = query_option(o->cmd, q, c, optarg);
        if (k == 0 && handle)
            k = handle(ctx, c, optarg);
        if (k < 0)
            return CLI_USAGE;
        if (k > 0)
            continue;
        if (c == 'h') {
            printf("%s%s%s%s", help, query_help, common_help, exit_text);
            return CLI_OK;
        }
        fprintf(stderr, "%s%s%s%s", help, query_help, common_help, exit_text);
        return CLI_USAGE;
    }
    int rest = finish_options(o, p->argc, p->argv, optind);
    if (rest < 0)
        return CLI_USAGE;
    if (rest < p->argc) {
        cli_error("%s: unexpected argument '%s'", o->cmd, p->argv[rest]);
        return CLI_USAGE;
    }
    return net_opts_setup(o) < 0 ? CLI_FAILED : 1;
}

static const char *const uncompressed_ts[] = {DCM_UID_ExplicitVRLittleEndian,
                                              DCM_UID_ImplicitVRLittleEndian, NULL};

/* ---- find ---------------------------------------------------------------------------------- */

static const char find_help[] =
    "usage: telerad find [options] HOST PORT\n"
    "\n"
    "Query the node at HOST PORT with C-FIND (PS3.4 C), as DCMTK's findscu does, and print each\n"
    "match as a listing like `telerad dump` (or DICOM JSON with --json, one object a line).\n"
    "The number of matches is printed on standard error at the end.\n"
    "\n"
    "options:\n"
    "  --json                 each match as one line of DICOM JSON (PS3.18 F.2)\n"
    "  --cancel-after N       send C-CANCEL after N matches\n";

static const char find_exit_help[] =
    "\n"
    "Exit status: 0 if the query ended with success (or with Cancel after --cancel-after); 1\n"
    "if the association failed or the peer answered with a failure status; 2 on wrong usage.\n";

struct find_ctx {
    const struct net_opts *o;
    bool json;
    long cancel_after;
    size_t matches;
    struct tr_bufsink out;
    int write_error;
};

static int find_extra(void *ctx, int c, const char *arg)
{
    struct find_ctx *f = ctx;
    switch (c) {
    case O_JSON: f->json = true; return 1;
    case O_CANCEL_AFTER:
        if (parse_long(arg, 1, LONG_MAX, &f->cancel_after) < 0) {
            cli_error("find: --cancel-after takes a number from 1");
            return -1;
        }
        return 1;
    default: return 0;
    }
}

static int on_match(void *ctx, const struct dcm_dataset *match)
{
    struct find_ctx *f = ctx;
    f->matches++;
    struct tr_error err = TR_ERROR_INIT;
    int rc;
    if (f->json) {
        struct dcm_json_options jopt = {.flags = DCM_JSON_SKIP_GROUP_LENGTH};
        rc = dcm_json_write(match, &jopt, &f->out.sink, &err);
        if (rc == 0)
            rc = tr_sink_write(&f->out.sink, "\n", 1);
    } else {
        char title[64];
        int n = snprintf(title, sizeof(title), "%s# Match %zu\n", f->matches > 1 ? "\n" : "",
                         f->matches);
        rc = tr_sink_write(&f->out.sink, title, (size_t)n);
        if (rc == 0)
            rc = dcm_dump_dataset(match, DCM_DUMP_FULL_VALUES, &f->out.sink, &err);
    }
    if (rc == 0)
        rc = tr_bufsink_flush(&f->out);
    fflush(stdout);
    if (rc < 0 && !f->write_error) {
        f->write_error = rc;
        cli_error("find: match %zu: %s", f->matches,
                  err.message[0] ? err.message : "cannot write to standard output");
    }
    if (f->cancel_after > 0 && f->matches >= (size_t)f->cancel_after)
        return -1;
    return 0;
}

int cmd_find(int argc, char **argv)
{
    static const struct option extra[] = {
        {"json", no_argument, NULL, O_JSON},
        {"cancel-after", required_argument, NULL, O_CANCEL_AFTER},
    };
    static const char shorts[] = "vqhPSL:k:";
    struct net_opts o;
    net_opts_init(&o, "find");
    struct query_opts q = {0};
    struct find_ctx f = {.o = &o};
    struct parser p = {0};
    struct dcm_dataset *identifier = NULL;
    bool sink_ready = false;
    int status = parse_query_command(&o, &q, &p, argc, argv, extra, TR_ARRAY_SIZE(extra), shorts,
                                     find_extra, &f, find_help, find_exit_help);
    if (status != 1)
        goto out;
    status = CLI_FAILED;
    if (!(identifier = build_identifier("find", &q))) {
        status = CLI_USAGE;
        goto out;
    }
    print_identifier(&o, identifier);
    if (tr_bufsink_init(&f.out, tr_sink_stdio(stdout), 1 << 16) < 0) {
        cli_error("out of memory");
        goto out;
    }
    sink_ready = true;
    const char *model = q.patient_root ? SCU_PATIENT_ROOT_FIND : SCU_STUDY_ROOT_FIND;
    struct pdu_associate *rq = request_new(&o);
    if (!rq) {
        cli_error("out of memory");
        goto out;
    }
    scu_add_context(rq, model, uncompressed_ts);
    struct tr_error err = TR_ERROR_INIT;
    struct dul_assoc *a;
    if (associate(&o, rq, &a, &err) < 0) {
        cli_error("find: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        goto out;
    }
    uint16_t st = 0;
    if (scu_find(a, model, identifier, DIMSE_PRIORITY_MEDIUM, on_match, &f, &st, &err) < 0) {
        cli_error("find: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        dul_abort(a, PDU_ABORT_USER, 0);
        dul_free(a);
        goto out;
    }
    release(&o, a);
    char words[128];
    status_words(st, words, sizeof(words));
    bool cancelled = f.cancel_after > 0 && f.matches >= (size_t)f.cancel_after;
    if (dimse_status_is_failure(st) && !(st == DIMSE_STATUS_CANCEL && cancelled)) {
        cli_error("find: %s answered %s after %zu match%s", o.aec, words, f.matches,
                  f.matches == 1 ? "" : "es");
        goto out;
    }
    if (!o.quiet)
        fprintf(stderr, "%zu match%s (%s%s)\n", f.matches, f.matches == 1 ? "" : "es",
                cancelled ? "C-CANCEL sent; final status " : "", words);
    status = f.write_error ? CLI_FAILED : CLI_OK;
out:
    if (sink_ready)
        tr_bufsink_release(&f.out);
    dcm_dataset_free(identifier);
    net_opts_release(&o);
    parser_release(&p);
    return status;
}

/* ---- move and get -------------------------------------------------------------------------- */

static void print_progress(void *ctx, const struct scu_progress *p)
{
    const struct net_opts *o = ctx;
    if (o->quiet)
        return;
    fprintf(stderr, "pending: %u remaining, %u completed, %u failed, %u warning\n", p->remaining,
            p->completed, p->failed, p->warning);
}

/* The final report of a C-MOVE or C-GET; the exit status. */
static int retrieve_result(const struct net_opts *o, const char *what, uint16_t st,
                           const struct scu_progress *fin, const char *extra)
{
    char words[128];
    status_words(st, words, sizeof(words));
    bool failed = dimse_status_is_failure(st) || fin->failed > 0;
    if (!o->quiet || failed)
        fprintf(failed ? stderr : stdout, "%s: %s: %u completed, %u failed, %u warning%s\n", what,
                words, fin->completed, fin->failed, fin->warning, extra);
    if (failed)
        cli_error("%s: %s", o->cmd,
                  dimse_status_is_failure(st) ? "the peer answered with a failure status"
                                              : "some sub-operations failed");
    return failed ? CLI_FAILED : CLI_OK;
}

static const char move_help[] =
    "usage: telerad move [options] -aem DEST HOST PORT\n"
    "\n"
    "Ask the node at HOST PORT to send what the keys select to the AE DEST (C-MOVE, PS3.4 C),\n"
    "as DCMTK's movescu does; the node must know DEST's address. Prints the pending counts as\n"
    "they come and the final status.\n"
    "\n"
    "options:\n"
    "  -aem, --aem DEST       the move destination AE title (required)\n";

static const char retrieve_exit_help[] =
    "\n"
    "Exit status: 0 if the retrieve ended with success (or a warning without failed\n"
    "sub-operations); 1 if the association failed, the final status is a failure, or any\n"
    "sub-operation failed; 2 on wrong usage.\n";

static int move_extra(void *ctx, int c, const char *arg)
{
    const char **dest = ctx;
    if (c != O_AEM)
        return 0;
    if (!pdu_ae_title_is_valid(arg)) {
        cli_error("move: '%s' is not an AE title", arg);
        return -1;
    }
    *dest = arg;
    return 1;
}

int cmd_move(int argc, char **argv)
{
    static const struct option extra[] = {{"aem", required_argument, NULL, O_AEM}};
    static const char shorts[] = "vqhPSL:k:";
    struct net_opts o;
    net_opts_init(&o, "move");
    struct query_opts q = {0};
    struct parser p = {0};
    const char *dest = NULL;
    struct dcm_dataset *identifier = NULL;
    int status = parse_query_command(&o, &q, &p, argc, argv, extra, TR_ARRAY_SIZE(extra), shorts,
                                     move_extra, &dest, move_help, retrieve_exit_help);
    if (status != 1)
        goto out;
    if (!dest) {
        cli_error("move: give the destination with -aem DEST");
        status = CLI_USAGE;
        goto out;
    }
    status = CLI_FAILED;
    if (!(identifier = build_identifier("move", &q))) {
        status = CLI_USAGE;
        goto out;
    }
    print_identifier(&o, identifier);
    const char *model = q.patient_root ? SCU_PATIENT_ROOT_MOVE : SCU_STUDY_ROOT_MOVE;
    struct pdu_associate *rq = request_new(&o);
    if (!rq) {
        cli_error("out of memory");
        goto out;
    }
    scu_add_context(rq, model, uncompressed_ts);
    struct tr_error err = TR_ERROR_INIT;
    struct dul_assoc *a;
    if (associate(&o, rq, &a, &err) < 0) {
        cli_error("move: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        goto out;
    }
    uint16_t st = 0;
    struct scu_progress fin;
    if (scu_move(a, model, dest, identifier, print_progress, &o, &st, &fin, &err) < 0) {
        cli_error("move: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        dul_abort(a, PDU_ABORT_USER, 0);
        dul_free(a);
        goto out;
    }
    release(&o, a);
    char extra_text[64];
    snprintf(extra_text, sizeof(extra_text), " (to %s)", dest);
    status = retrieve_result(&o, "C-MOVE", st, &fin, extra_text);
out:
    dcm_dataset_free(identifier);
    net_opts_release(&o);
    parser_release(&p);
    return status;
}

static const char get_help[] =
    "usage: telerad get [options] HOST PORT\n"
    "\n"
    "Retrieve what the keys select from the node at HOST PORT with C-GET (PS3.4 C), as DCMTK's\n"
    "getscu does: the instances come back on the same association and are written as Part 10\n"
    "files named SOPInstanceUID.dcm in --out (through a temporary name, renamed once\n"
    "complete). Every storage SOP class is proposed (up to 127) with the uncompressed and the\n"
    "common compressed transfer syntaxes, each file keeping the one the peer sends.\n"
    "\n"
    "options:\n"
    "  -od, --out DIR         where to write the files (default: the current folder)\n";

/* Transfer syntaxes a C-GET accepts besides the uncompressed ones: the data set bytes are
 * written as they come, so any syntax is fine. */
static const char *const get_extra_ts[] = {
    "1.2.840.10008.1.2.4.50",  /* JPEG Baseline */
    "1.2.840.10008.1.2.4.51",  /* JPEG Extended */
    "1.2.840.10008.1.2.4.57",  /* JPEG Lossless */
    "1.2.840.10008.1.2.4.70",  /* JPEG Lossless SV1 */
    "1.2.840.10008.1.2.4.80",  /* JPEG-LS Lossless */
    "1.2.840.10008.1.2.4.81",  /* JPEG-LS Near-Lossless */
    "1.2.840.10008.1.2.4.90",  /* JPEG 2000 Lossless */
    "1.2.840.10008.1.2.4.91",  /* JPEG 2000 */
    "1.2.840.10008.1.2.4.201", /* HTJ2K Lossless */
    "1.2.840.10008.1.2.4.203", /* HTJ2K */
    "1.2.840.10008.1.2.5",     /* RLE Lossless */
    "1.2.840.10008.1.2.1.99",  /* Deflated Explicit VR Little Endian */
    "1.2.840.10008.1.2.2",     /* Explicit VR Big Endian */
    NULL,
};

struct get_ctx {
    const struct net_opts *o;
    mode_t file_mode; /* 0666 less the umask, as open(2) would give */
    const char *out_dir;
    const char *peer_ae;
    size_t written, failed;
};

struct get_file {
    int fd;
    char tmp[PATH_MAX];
    char final[PATH_MAX];
    struct get_ctx *g;
};

static bool uid_is_safe(const char *uid)
{
    /* The name of the file comes from the peer: digits and dots only, never a path. */
    return *uid && dcm_uid_is_valid(uid, strlen(uid)) && uid[0] != '.';
}

static int get_begin(void *ctx, const char *sop_class, const char *sop_instance,
                     const char *transfer_syntax, struct tr_sink *sink, void **handle)
{
    struct get_ctx *g = ctx;
    if (!uid_is_safe(sop_instance) || !*transfer_syntax) {
        cli_error("get: refusing an instance with SOP Instance UID '%s'", sop_instance);
        g->failed++;
        return -1;
    }
    struct get_file *h = tr_calloc(1, sizeof(*h));
    if (!h)
        return -1;
    h->g = g;
    snprintf(h->final, sizeof(h->final), "%s/%s.dcm", g->out_dir, sop_instance);
    snprintf(h->tmp, sizeof(h->tmp), "%s/.%s.XXXXXX", g->out_dir, sop_instance);
    h->fd = mkstemp(h->tmp);
    if (h->fd >= 0 && fchmod(h->fd, g->file_mode) != 0) {
        close(h->fd);
        unlink(h->tmp);
        h->fd = -1;
    }
    if (h->fd < 0) {
        cli_error("get: cannot create a file in %s: %s", g->out_dir, strerror(errno));
        g->failed++;
        tr_free(h);
        return -1;
    }
    struct tr_sink fs = tr_sink_fd(&h->fd);
    struct tr_error err = TR_ERROR_INIT;
    if (dcm_file_write_header(sop_class, sop_instance, transfer_syntax, g->peer_ae, &fs, &err) <
        0) {
        cli_error("get: %s: %s", h->final, err.message);
        close(h->fd);
        unlink(h->tmp);
        g->failed++;
        tr_free(h);
        return -1;
    }
    *sink = fs;
    *handle = h;
    return 0;
}

static uint16_t get_end(void *ctx, void *handle, bool complete)
{
    struct get_ctx *g = ctx;
    struct get_file *h = handle;
    uint16_t st = DIMSE_STATUS_SUCCESS;
    if (close(h->fd) != 0 && complete) {
        cli_error("get: cannot write %s: %s", h->final, strerror(errno));
        complete = false;
    }
    if (complete && rename(h->tmp, h->final) != 0) {
        cli_error("get: cannot rename %s to %s: %s", h->tmp, h->final, strerror(errno));
        complete = false;
    }
    if (!complete) {
        unlink(h->tmp);
        g->failed++;
        st = DIMSE_STATUS_OUT_OF_RESOURCES;
    } else {
        g->written++;
        if (g->o->verbose)
            fprintf(stderr, "received %s\n", h->final);
    }
    tr_free(h);
    return st;
}

static int get_extra(void *ctx, int c, const char *arg)
{
    struct get_ctx *g = ctx;
    if (c != O_OUT)
        return 0;
    g->out_dir = arg;
    return 1;
}

int cmd_get(int argc, char **argv)
{
    static const struct option extra[] = {{"out", required_argument, NULL, O_OUT}};
    static const char shorts[] = "vqhPSL:k:";
    struct net_opts o;
    net_opts_init(&o, "get");
    struct query_opts q = {0};
    struct parser p = {0};
    struct get_ctx g = {.o = &o, .out_dir = ".", .peer_ae = NULL};
    struct dcm_dataset *identifier = NULL;
    int status = parse_query_command(&o, &q, &p, argc, argv, extra, TR_ARRAY_SIZE(extra), shorts,
                                     get_extra, &g, get_help, retrieve_exit_help);
    if (status != 1)
        goto out;
    struct stat st_dir;
    if (stat(g.out_dir, &st_dir) != 0 || !S_ISDIR(st_dir.st_mode)) {
        cli_error("get: --out %s is not a folder", g.out_dir);
        status = CLI_FAILED;
        goto out;
    }
    g.peer_ae = o.aec;
    mode_t mask = umask(0);
    umask(mask);
    g.file_mode = 0666 & ~mask;
    status = CLI_FAILED;
    if (!(identifier = build_identifier("get", &q))) {
        status = CLI_USAGE;
        goto out;
    }
    print_identifier(&o, identifier);
    const char *model = q.patient_root ? SCU_PATIENT_ROOT_GET : SCU_STUDY_ROOT_GET;
    struct pdu_associate *rq = request_new(&o);
    if (!rq) {
        cli_error("out of memory");
        goto out;
    }
    scu_add_context(rq, model, uncompressed_ts);
    scu_add_storage_contexts(rq, get_extra_ts, true, PDU_MAX_CONTEXTS - 1);
    struct tr_error err = TR_ERROR_INIT;
    struct dul_assoc *a;
    if (associate(&o, rq, &a, &err) < 0) {
        cli_error("get: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        goto out;
    }
    struct scu_get_store store = {.ctx = &g, .begin = get_begin, .end = get_end};
    uint16_t st = 0;
    struct scu_progress fin;
    if (scu_get(a, model, identifier, &store, print_progress, &o, &st, &fin, &err) < 0) {
        cli_error("get: %s:%d (%s): %s", o.host, o.port, o.aec, err.message);
        dul_abort(a, PDU_ABORT_USER, 0);
        dul_free(a);
        goto out;
    }
    release(&o, a);
    char extra_text[PATH_MAX + 64];
    snprintf(extra_text, sizeof(extra_text), "; %zu file%s written to %s", g.written,
             g.written == 1 ? "" : "s", g.out_dir);
    status = retrieve_result(&o, "C-GET", st, &fin, extra_text);
    if (g.failed && status == CLI_OK) {
        cli_error("get: %zu instance%s could not be written", g.failed, g.failed == 1 ? "" : "s");
        status = CLI_FAILED;
    }
out:
    dcm_dataset_free(identifier);
    net_opts_release(&o);
    parser_release(&p);
    return status;
}
