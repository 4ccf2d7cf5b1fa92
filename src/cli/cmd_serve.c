/*
 * cmd_serve.c - `telerad serve`: the server on its embedded default (data in ./telerad-data,
 * DICOM on 127.0.0.1:11112 as AE TELERAD), configurable by flags.
 */
#include "cli.h"
#include "common.h"
#include "archive.h"
#include "config.h"
#include "db.h"
#include "dicomweb.h"
#include "flow.h"
#include "reports.h"
#include "principal.h"
#include "security.h"
#include "http.h"
#include "scp.h"
#include "serve_hl7.h"
#include "serve_store.h"
#include "static.h"

#include <errno.h>
#include <stddef.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

static const char serve_help[] =
    "usage: telerad serve [options]\n"
    "\n"
    "Run the telerad server: receive studies over DICOM (C-ECHO, C-STORE) and DICOMweb\n"
    "(STOW-RS) into the archive, answer queries and retrievals (C-FIND, C-MOVE, C-GET;\n"
    "QIDO-RS, WADO-RS, WADO-URI). With no options it listens for DICOM on 127.0.0.1:11112 as\n"
    "AE title TELERAD and for HTTP on 127.0.0.1:8080 (DICOMweb under /dicom-web), and keeps\n"
    "its data in ./telerad-data. Stop it with Ctrl-C or SIGTERM: associations in progress\n"
    "finish.\n"
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
    "  --http-host ADDRESS     HTTP listen address (default 127.0.0.1; anything else needs\n"
    "                          TLS or --insecure)\n"
    "  --http-port N           HTTP port for DICOMweb, the API and the web app (default 8080;\n"
    "                          0 picks a free one and prints it)\n"
    "  --http-threads N        HTTP worker threads (default 16)\n"
    "  --viewer-dir DIR        the OHIF viewer to serve at /viewer/ (default: ohif/ next to\n"
    "                          the telerad binary, where the run command installs it)\n"
    "  --web-dir DIR           the web application to serve at / (default: web/ next to\n"
    "                          the binary, where scripts/web.sh assembles it, else web/ of\n"
    "                          the source tree)\n"
    "  --tls-cert FILE         serve DICOM over TLS (PS3.15 B.9, TLS 1.2+) and HTTPS with\n"
    "                          this certificate chain (PEM) ...\n"
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
    ;
static const char serve_help_more[] =
    "  --duplicates POLICY     a different object with a stored SOP Instance UID: reject\n"
    "                          (default), replace or keep-first\n"
    "  --idle-timeout SECONDS  abort an association silent for this long (default 300)\n"
    "  --min-free-mb N         refuse C-STOREs (A700) when less than N MB are free\n"
    "                          (default 256)\n"
    "  --demo                  seed three demo sites, five readers, contracts and synthetic\n"
    "                          studies (only into an archive without sites)\n"
    "  --webhook URL           POST SLA warnings, breaches and escalations here (JSON)\n"
    "  --hl7-port N            receive HL7 v2 orders (ORM, OMI, ADT A08/A40) over MLLP on\n"
    "                          this port (default: off; 0 picks a free one and prints it)\n"
    "  --hl7-host ADDRESS      HL7 listen address (default 127.0.0.1; anything else needs\n"
    "                          [hl7] tls or --insecure)\n"
    "  --reconcile-force       at start, forget index rows whose objects are missing even\n"
    "                          when most are (default: refuse: wrong --data or disk?)\n"
    "  --reconcile-grace S     at start, keep index rows without object younger than S\n"
    "                          seconds (other nodes' uploads; default 0 on SQLite, 600 on\n"
    "                          PostgreSQL)\n"
    "  --no-auth               no accounts: every HTTP request has administrator rights\n"
    "                          (HTTP on loopback only; for development and tests)\n"
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

/* Tenancy of DICOMweb (DESIGN.md invariant 2): a site user sees the site's studies, a reader
 * the patients of their reads, an auditor none; administrators and services everything. */
struct scope_glue {
    struct flow *flow;
    struct sec *sec;
};

/* Readers outside a site's region see its data pseudonymized, with the site's key. */
static int dw_pseudonym_key(void *ctx, struct web_request *r, const char *site, uint8_t key[32])
{
    struct scope_glue *g = ctx;
    const struct web_principal *p = web_principal_of(r);
    if (!p || p->role != WEB_ROLE_READER)
        return 0;
    if (!flow_pseudonymize_for(g->flow, p->reader, site))
        return 0;
    if (!site)
        return 1;
    if (sec_site_key(g->sec, site, key, NULL) == 0)
        return 1;
    /* Fail closed: without the site's key the data goes out under a throw-away one, never
     * in the clear. */
    FILE *rnd = fopen("/dev/urandom", "rb");
    size_t got = rnd ? fread(key, 1, 32, rnd) : 0;
    if (rnd)
        fclose(rnd);
    if (got != 32)
        memset(key, 0xA5, 32);
    log_line(NULL, SCP_LOG_ERROR, "no pseudonymization key for a site: answering with a "
                                  "throw-away key");
    return 1;
}

static void free_sites(void *p) { tr_free(p); }

static int dw_scope(void *ctx, struct web_request *r, struct arc_query *q)
{
    struct scope_glue *g = ctx;
    const struct web_principal *p = web_principal_of(r);
    if (!p || p->role == WEB_ROLE_ADMIN || p->role == WEB_ROLE_SERVICE)
        return 0;
    if (p->role == WEB_ROLE_SITE) {
        const char **sites = tr_calloc(2, sizeof(*sites));
        if (!sites || web_attach(r, sites, free_sites) < 0)
            return TR_ENOMEM;
        sites[0] = p->site;
        q->sites = sites;
        return 0;
    }
    if (p->role == WEB_ROLE_READER) {
        struct arc_patient_ref *refs;
        size_t n;
        if (flow_reader_patients(g->flow, p->reader, &refs, &n, NULL) < 0)
            return TR_EIO;
        if (refs && web_attach(r, refs, free_sites) < 0)
            return TR_ENOMEM;
        static const struct arc_patient_ref none[1];
        q->patients = refs ? refs : none; /* set and empty: nothing visible */
        q->npatients = n;
        return 0;
    }
    return TR_EDENIED;
}

/* DIMSE user identity against the accounts: username + passcode, or a JWT. */
static int dimse_identity(void *ctx, const struct pdu_user_identity *id, const char *peer,
                          char *site, size_t size)
{
    struct sec *sec = ctx;
    struct web_principal p;
    int rc = TR_EDENIED;
    if (id->type == PDU_IDENTITY_USERNAME_PASSCODE && id->primary && id->secondary) {
        char user[65], pass[256];
        snprintf(user, sizeof(user), "%.*s", (int)id->primary_length, id->primary);
        snprintf(pass, sizeof(pass), "%.*s", (int)id->secondary_length, id->secondary);
        rc = sec_check_password(sec, user, pass, peer, &p, NULL);
        explicit_bzero(pass, sizeof(pass));
    } else if (id->type == PDU_IDENTITY_JWT && id->primary) {
        char *token = tr_malloc((size_t)id->primary_length + 1);
        if (token) {
            memcpy(token, id->primary, id->primary_length);
            token[id->primary_length] = '\0';
            rc = sec_check_jwt(sec, token, &p, NULL);
            tr_free(token);
        }
    }
    if (rc == 0 && (p.role == WEB_ROLE_AUDITOR || p.role == WEB_ROLE_READER))
        rc = TR_EDENIED; /* DIMSE is for systems and site users; readers use the web */
    snprintf(site, size, "%s", rc == 0 && p.role == WEB_ROLE_SITE ? p.site : "");
    return rc;
}

static void dimse_audit(void *ctx, const char *calling_ae, const char *peer, const char *action,
                        const char *outcome, const char *object, const char *site)
{
    struct sec_audit_event ev = {.actor = calling_ae, .role = "dicom", .peer = peer,
                                 .action = action, .outcome = outcome, .object_type = "dimse",
                                 .object_id = object, .site = site, .detail = ""};
    sec_audit(ctx, &ev);
}

/* STOW-RS: a site's users store into their site; administrators and services (AI results)
 * into the default site; readers and auditors not at all (NULL: 403). */
static const char *dw_store_site(void *ctx, struct web_request *r)
{
    (void)ctx;
    const struct web_principal *p = web_principal_of(r);
    if (p && (p->role == WEB_ROLE_READER || p->role == WEB_ROLE_AUDITOR))
        return NULL;
    return p && p->role == WEB_ROLE_SITE ? p->site : "";
}

/* A directory next to the telerad binary, if it exists. */
static bool beside_binary(const char *name, char *out, size_t size)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0)
        return false;
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return false;
    *slash = '\0';
    if (snprintf(out, size, "%s/%s", exe, name) >= (int)size)
        return false;
    struct stat st;
    return stat(out, &st) == 0 && S_ISDIR(st.st_mode);
}

/* GET /healthz: 200 when the index answers (for load balancers and monitoring). */
static void healthz(void *ctx, struct web_request *r)
{
    struct arc_index_stats st;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_index_stats(arc_index(ctx), &st, &err) < 0) {
        web_reply_problem(r, 503, "Service Unavailable", "the index does not answer: %s",
                          err.message);
        return;
    }
    char body[160];
    int n = snprintf(body, sizeof(body), "{\"status\":\"ok\",\"version\":\"%s\"}",
                     TELERAD_VERSION);
    web_reply(r, 200, "application/json", body, (size_t)n);
}

static int add_health(struct web_server *web, struct arc_archive *archive, struct tr_error *err)
{
    struct web_route route = {.method = "GET", .pattern = "/healthz", .handler = healthz,
                              .ctx = archive};
    if (web_server_route(web, &route) < 0)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    return 0;
}

/* [reports]: report delivery and critical results (docs/configuration.md). */
static int reports_configure(const struct cfg *c, struct rep_config *rc, struct tr_error *err)
{
    static const struct {
        const char *key;
        long min, max;
        size_t offset;
    } ints[] = {
        {"critical_ack_seconds_1", 1, 86400 * 30, offsetof(struct rep_config, critical_ack[0])},
        {"critical_ack_seconds_2", 1, 86400 * 30, offsetof(struct rep_config, critical_ack[1])},
        {"critical_ack_seconds_3", 1, 86400 * 30, offsetof(struct rep_config, critical_ack[2])},
        {"retry_seconds", 1, 86400, offsetof(struct rep_config, retry_initial)},
        {"retry_max_seconds", 1, 7 * 86400, offsetof(struct rep_config, retry_max)},
        {"max_attempts", 1, 100000, offsetof(struct rep_config, max_attempts)},
        {"ack_timeout", 1, 3600, offsetof(struct rep_config, ack_timeout)},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(ints); i++) {
        long v;
        int rc2 = cfg_get_int(c, "reports", ints[i].key, ints[i].min, ints[i].max, &v, err);
        if (rc2 < 0)
            return rc2;
        if (rc2 == 0)
            *(unsigned *)(void *)((char *)rc + ints[i].offset) = (unsigned)v;
    }
    const char *org = cfg_get(c, "reports", "organization");
    if (org)
        rc->organization = org;
    return 0;
}

/* docs/configuration.md lists these. */
static const char *const known_keys[] = {
    "server.data", "server.aet", "server.dicom_host", "server.dicom_port",
    "server.max_associations", "server.any_called_aet", "server.idle_timeout",
    "server.insecure", "server.log_level", "server.allowed_networks",
    "tls.cert", "tls.key", "tls.ca", "tls.verify_client",
    "http.host", "http.port", "http.threads", "http.max_connections", "http.viewer_dir",
    "http.web_dir", "flow.claim_timeout", "flow.sla_alert_lead", "flow.webhook_url",
    "security.auth", "security.session_ttl", "security.lockout_failures",
    "security.lockout_seconds", "security.jwt_key", "security.jwt_issuer",
    "security.jwt_audience", "security.dimse_require_identity",
    "archive.index", "archive.duplicates", "archive.stable_after", "archive.min_free_mb",
    "archive.reconcile_grace",
    "archive.reject_unknown_aets", "archive.pn_case_insensitive",
    "archive.store", "s3.endpoint", "s3.region", "s3.bucket", "s3.prefix", "s3.access_key",
    "s3.secret_key", "s3.credentials_file", "s3.addressing", "s3.multipart_threshold_mb",
    "s3.part_size_mb", "s3.cache_mb", "s3.retries", "s3.ca_file",
    "hl7.port", "hl7.host", "hl7.tls", "hl7.max_message", "hl7.max_connections",
    "hl7.idle_timeout",
    "reports.organization", "reports.critical_ack_seconds_1", "reports.critical_ack_seconds_2",
    "reports.critical_ack_seconds_3", "reports.retry_seconds", "reports.retry_max_seconds",
    "reports.max_attempts", "reports.ack_timeout",
    "site *.ae_titles", "site *.networks",
    "move_destination *.host", "move_destination *.port", "move_destination *.tls",
    NULL,
};

static int apply_config(const struct cfg *c, struct arc_config *acfg, struct scp_config *scfg,
                        struct web_config *wcfg, struct net_tls_options *topt, bool *insecure,
                        struct config_storage *st, struct tr_error *err)
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
    if ((v = cfg_get(c, "http", "host")))
        wcfg->host = v;
    if ((rc = cfg_get_int(c, "http", "port", 0, 65535, &n, err)) < 0)
        return rc;
    if (rc == 0)
        wcfg->port = (int)n;
    if ((rc = cfg_get_int(c, "http", "threads", 1, 1024, &n, err)) < 0)
        return rc;
    if (rc == 0)
        wcfg->threads = (unsigned)n;
    if ((rc = cfg_get_int(c, "http", "max_connections", 1, 100000, &n, err)) < 0)
        return rc;
    if (rc == 0)
        wcfg->max_connections = (unsigned)n;
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
    if ((rc = cfg_get_int(c, "archive", "reconcile_grace", 0, 86400, &n, err)) < 0)
        return rc;
    if (rc == 0)
        acfg->reconcile_grace = (int)n;
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
           O_CONFIG, O_MINFREE, O_CHECK, O_NETWORKS, O_HTTP_HOST, O_HTTP_PORT, O_HTTP_THREADS,
           O_VIEWER, O_WEB, O_DEMO, O_WEBHOOK, O_NOAUTH, O_RECONCILE_FORCE,
           O_RECONCILE_GRACE,
           O_HL7_PORT, O_HL7_HOST };
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
        {"http-host", required_argument, NULL, O_HTTP_HOST},
        {"http-port", required_argument, NULL, O_HTTP_PORT},
        {"http-threads", required_argument, NULL, O_HTTP_THREADS},
        {"viewer-dir", required_argument, NULL, O_VIEWER},
        {"web-dir", required_argument, NULL, O_WEB},
        {"demo", no_argument, NULL, O_DEMO},
        {"webhook", required_argument, NULL, O_WEBHOOK},
        {"hl7-port", required_argument, NULL, O_HL7_PORT},
        {"hl7-host", required_argument, NULL, O_HL7_HOST},
        {"no-auth", no_argument, NULL, O_NOAUTH},
        {"reconcile-force", no_argument, NULL, O_RECONCILE_FORCE},
        {"reconcile-grace", required_argument, NULL, O_RECONCILE_GRACE},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct arc_config acfg;
    arc_config_init(&acfg);
    struct scp_config scfg;
    scp_config_init(&scfg);
    struct web_config wcfg;
    web_config_init(&wcfg);
    struct net_tls_options topt;
    net_tls_options_init(&topt);
    topt.verify_peer = false;
    bool insecure = false, check_only = false;
    const char *viewer_dir = NULL, *web_dir = NULL;
    bool demo = false;
    struct flow_config fcfg;
    flow_config_init(&fcfg);
    struct rep_config rcfg;
    rep_config_init(&rcfg);
    struct serve_hl7_config hcfg;
    serve_hl7_config_init(&hcfg);
    struct serve_store_config stcfg; /* [archive] store, [s3] (serve_store.c) */
    serve_store_config_init(&stcfg);
    struct sec_config scfg_sec;
    sec_config_init(&scfg_sec);
    bool require_identity = false;
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
    if (apply_config(&conf, &acfg, &scfg, &wcfg, &topt, &insecure, &store, &cerr) >= 0) {
        viewer_dir = cfg_get(&conf, "http", "viewer_dir");
        long v;
        if (cfg_get_int(&conf, "flow", "claim_timeout", 60, 86400, &v, &cerr) == 0)
            fcfg.claim_timeout = (unsigned)v;
        if (cfg_get_int(&conf, "flow", "sla_alert_lead", 0, 86400, &v, &cerr) == 0)
            fcfg.sla_alert_lead = (unsigned)v;
        fcfg.webhook_url = cfg_get(&conf, "flow", "webhook_url");
        bool on;
        if (cfg_get_bool(&conf, "security", "auth", &on, &cerr) == 0)
            scfg_sec.auth = on;
        if (cfg_get_int(&conf, "security", "session_ttl", 60, 30 * 86400, &v, &cerr) == 0)
            scfg_sec.session_ttl = (unsigned)v;
        if (cfg_get_int(&conf, "security", "lockout_failures", 1, 1000, &v, &cerr) == 0)
            scfg_sec.lockout_failures = (unsigned)v;
        if (cfg_get_int(&conf, "security", "lockout_seconds", 1, 86400, &v, &cerr) == 0)
            scfg_sec.lockout_seconds = (unsigned)v;
        scfg_sec.jwt_key_file = cfg_get(&conf, "security", "jwt_key");
        scfg_sec.jwt_issuer = cfg_get(&conf, "security", "jwt_issuer");
        scfg_sec.jwt_audience = cfg_get(&conf, "security", "jwt_audience");
        if (cfg_get_bool(&conf, "security", "dimse_require_identity", &on, &cerr) == 0)
            require_identity = on;
        if (!cerr.code)
            serve_hl7_configure(&conf, &hcfg, &cerr);
        if (!cerr.code && serve_store_configure(&conf, &stcfg, &cerr) == 0 && stcfg.s3)
            acfg.s3 = &stcfg.s3opt;
        if (!cerr.code)
            reports_configure(&conf, &rcfg, &cerr);
        if (cerr.code) {
            cli_error("serve: %s", cerr.message);
            cfg_release(&conf);
            config_storage_release(&store);
            return CLI_USAGE;
        }
        web_dir = cfg_get(&conf, "http", "web_dir");
    } else {
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
        case O_HTTP_HOST: wcfg.host = optarg; break;
        case O_VIEWER: viewer_dir = optarg; break;
        case O_WEB: web_dir = optarg; break;
        case O_DEMO: demo = true; break;
        case O_WEBHOOK: fcfg.webhook_url = optarg; break;
        case O_HL7_HOST: hcfg.host = optarg; break;
        case O_HL7_PORT:
            if (parse_int(optarg, 0, 65535, &hcfg.port) < 0) {
                cli_error("serve: --hl7-port takes a port number (0-65535)");
                return CLI_USAGE;
            }
            break;
        case O_NOAUTH: scfg_sec.auth = false; break;
        case O_RECONCILE_FORCE: acfg.reconcile_force = true; break;
        case O_RECONCILE_GRACE:
            if (parse_int(optarg, 0, 86400, &n) < 0) {
                cli_error("serve: --reconcile-grace takes seconds (0-86400)");
                return CLI_USAGE;
            }
            acfg.reconcile_grace = (int)n;
            break;
        case O_HTTP_PORT:
            if (parse_int(optarg, 0, 65535, &wcfg.port) < 0) {
                cli_error("serve: --http-port takes a port number (0-65535)");
                return CLI_USAGE;
            }
            break;
        case O_HTTP_THREADS:
            if (parse_int(optarg, 1, 1024, &n) < 0) {
                cli_error("serve: --http-threads takes a number from 1 to 1024");
                return CLI_USAGE;
            }
            wcfg.threads = (unsigned)n;
            break;
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
        case 'h':
            fputs(serve_help, stdout);
            fputs(serve_help_more, stdout);
            return CLI_OK;
        default:
            fputs(serve_help, stderr);
            fputs(serve_help_more, stderr);
            return CLI_USAGE;
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
    if (!is_loopback(wcfg.host) && !topt.certificate && !insecure) {
        cli_error("serve: HTTP on %s without TLS would send patient data in the clear; "
                  "give --tls-cert and --tls-key, or --insecure", wcfg.host);
        return CLI_USAGE;
    }
    if (topt.certificate && !topt.private_key) {
        cli_error("serve: --tls-cert needs --tls-key");
        return CLI_USAGE;
    }
    wcfg.tls_cert = topt.certificate;
    wcfg.tls_key = topt.private_key;
    if (serve_hl7_check(&hcfg, topt.certificate != NULL, insecure, &cerr) < 0) {
        cli_error("serve: %s", cerr.message);
        return CLI_USAGE;
    }
    if (!scfg_sec.auth && !is_loopback(wcfg.host)) {
        cli_error("serve: HTTP without accounts (--no-auth, [security] auth = off) is allowed on "
                  "loopback only");
        return CLI_USAGE;
    }

    if (check_only) {
        printf("http = %s:%d%s\n", wcfg.host, wcfg.port, wcfg.tls_cert ? " (HTTPS)" : "");
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
        char hl7_line[300];
        serve_hl7_describe(&hcfg, hl7_line, sizeof(hl7_line));
        printf("%s\n", hl7_line);
        char store_line[600];
        serve_store_describe(&stcfg, store_line, sizeof(store_line));
        printf("%s\n", store_line);
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
    /* The workflow: reads from stable studies, routing, SLA clocks. */
    fcfg.archive = archive;
    fcfg.log = log_line;
    struct flow *flow = NULL;
    if (flow_open(&fcfg, &flow, &err) < 0) {
        cli_error("serve: the workflow: %s", err.message);
        scp_server_free(server);
        arc_close(archive);
        net_tls_free(tls);
        net_tls_free(move_tls);
        cfg_release(&conf);
        config_storage_release(&store);
        return CLI_FAILED;
    }
    arc_set_site_resolver(archive, flow_site_for_ae, flow);
    /* Reports, critical results and the delivery of results (after the workflow). */
    rcfg.archive = archive;
    rcfg.flow = flow;
    rcfg.ae_title = scfg.dul.ae_title;
    rcfg.log = log_line;
    struct rep *reports = NULL;
    if (rep_open(&rcfg, &reports, &err) < 0) {
        cli_error("serve: reports: %s", err.message);
        flow_close(flow);
        scp_server_free(server);
        arc_close(archive);
        net_tls_free(tls);
        net_tls_free(move_tls);
        cfg_release(&conf);
        config_storage_release(&store);
        return CLI_FAILED;
    }
    if (demo && flow_seed_demo(flow, &err) < 0)
        log_line(NULL, SCP_LOG_ERROR, err.message);
    /* Accounts, sessions and the audit log, in the same database. */
    scfg_sec.db_url = arc_index_url(archive);
    scfg_sec.data_dir = acfg.data_dir;
    scfg_sec.https = wcfg.tls_cert != NULL;
    scfg_sec.log = log_line;
    struct sec *sec = NULL;
    if (sec_open(&scfg_sec, &sec, &err) < 0) {
        cli_error("serve: security: %s", err.message);
        rep_close(reports);
        flow_close(flow);
        scp_server_free(server);
        arc_close(archive);
        net_tls_free(tls);
        net_tls_free(move_tls);
        cfg_release(&conf);
        config_storage_release(&store);
        return CLI_FAILED;
    }
    if (!scfg_sec.auth)
        log_line(NULL, SCP_LOG_WARNING, "HTTP authentication is off: every request has "
                                        "administrator rights (loopback only)");
    arc_set_security(archive, dimse_identity, sec, require_identity, dimse_audit, sec);
    /* HTTP: DICOMweb, the REST API, the viewer and the web app. */
    wcfg.log = log_line;
    wcfg.filter = sec_http_filter;
    wcfg.filter_ctx = sec;
    wcfg.on_complete = sec_http_complete;
    struct web_server *web = NULL;
    struct scope_glue glue = {.flow = flow, .sec = sec};
    struct dw_config dcfg;
    dw_config_init(&dcfg);
    dcfg.archive = archive;
    dcfg.scope = dw_scope;
    dcfg.store_site = dw_store_site;
    dcfg.pseudonym_key = dw_pseudonym_key;
    dcfg.ctx = &glue;
    char viewer_default[PATH_MAX], web_default[PATH_MAX];
    if (!viewer_dir && beside_binary("ohif", viewer_default, sizeof(viewer_default)))
        viewer_dir = viewer_default;
    /* The assembled app (scripts/web.sh: web/ and its npm charting library) next to the
     * binary; else the source tree's web/ (then without charts). */
    if (!web_dir && (beside_binary("web", web_default, sizeof(web_default)) ||
                     beside_binary("../web", web_default, sizeof(web_default))))
        web_dir = web_default;
    if (web_server_new(&wcfg, &web, &err) < 0 || add_health(web, archive, &err) < 0 ||
        dw_register(web, &dcfg, &err) < 0 || flow_register_api(flow, web, &err) < 0 ||
        rep_register_api(reports, web, &err) < 0 ||
        sec_register_api(sec, web, &err) < 0 ||
        (viewer_dir && web_static_register(web, "/viewer/", viewer_dir, true, &err) < 0) ||
        (web_dir && web_static_register(web, "/", web_dir, true, &err) < 0) ||
        web_server_start(web, &err) < 0) {
        cli_error("serve: HTTP: %s", err.message);
        web_server_free(web);
        sec_close(sec);
        rep_close(reports);
        flow_close(flow);
        scp_server_free(server);
        arc_close(archive);
        net_tls_free(tls);
        net_tls_free(move_tls);
        cfg_release(&conf);
        config_storage_release(&store);
        return CLI_FAILED;
    }
    if (wcfg.port == 0) {
        printf("http-port %d\n", web_server_port(web));
        fflush(stdout);
    }
    /* HL7 v2 orders over MLLP (off unless --hl7-port or [hl7] port). */
    struct serve_hl7 *hl7 = NULL;
    int hl7_rc = serve_hl7_start(&hcfg, archive, flow, acfg.sites, tls, log_line, &hl7, &err);
    if (hl7_rc < 0)
        cli_error("serve: %s", err.message); /* not started: everything is closed below */
    else if (hl7 && hcfg.port == 0) {
        printf("hl7-port %d\n", serve_hl7_port(hl7));
        fflush(stdout);
    }
    {
        char msg[320];
        /* The node id is what this process writes into the rows it leases (claimed_by):
         * with several nodes on one database, it tells which node holds what. */
        snprintf(msg, sizeof(msg), "listening: DICOM %s:%d as %s, HTTP%s %s:%d; node %s",
                 scfg.host, scp_server_port(server), scfg.dul.ae_title,
                 wcfg.tls_cert ? "S" : "", wcfg.host, web_server_port(web), db_node_id());
        log_line(NULL, SCP_LOG_INFO, msg);
    }
    st.server = server;
    pthread_t waiter;
    if (hl7_rc == 0) {
        pthread_create(&waiter, NULL, wait_for_signal, &st);
        scp_server_run(server);
        pthread_kill(waiter, SIGUSR1); /* harmless if it already took a stop signal and left */
        pthread_join(waiter, NULL);
    }
    serve_hl7_stop(hl7);
    web_server_free(web);
    scp_server_free(server);
    sec_close(sec);
    rep_close(reports);
    flow_close(flow);
    arc_close(archive);
    net_tls_free(tls);
    net_tls_free(move_tls);
    log_line(NULL, SCP_LOG_INFO, "stopped");
    cfg_release(&conf);
    config_storage_release(&store);
    return hl7_rc < 0 ? CLI_FAILED : CLI_OK;
}
