/*
 * cmd_hl7.c - `telerad hl7send HOST PORT FILE...`: send HL7 v2 messages over MLLP and print each
 * ACK (for testing an interface and for operations, like HAPI's or hl7apy's senders).
 *
 * A file holds one message or several (each starting with an MSH segment; batch envelope
 * segments FHS, BHS, BTS and FTS are left out). Segments may end in CR, LF or CR LF, as an
 * editor saves them: they are sent with CR, as the standard wants. The messages go one after
 * the other over one connection, each waiting for its ACK (original acknowledgment mode).
 */
#include "cli.h"
#include "common.h"
#include "hl7.h"
#include "mllp.h"
#include "transport.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>

static const char hl7send_help[] =
    "usage: telerad hl7send [options] HOST PORT FILE...\n"
    "       telerad hl7send --dump FILE...\n"
    "\n"
    "Send the HL7 v2 messages in FILEs (\"-\": standard input) to HOST PORT over MLLP, one\n"
    "after the other on one connection, and print each acknowledgment: the file, MSH-10,\n"
    "MSA-1 (AA, AE, AR) and the reason given (MSA-3, else ERR-8).\n"
    "\n"
    "options:\n"
    "  --dump                  send nothing: parse the messages here and print each field\n"
    "                          (SEGMENT[n]-FIELD, then its wire form and, per component of\n"
    "                          the first repetition, the decoded text); checks a file\n"
    "  -to, --timeout SECONDS  to connect, and to wait for each ACK (default 30)\n"
    "  --max-message BYTES     refuse to send a message larger than this (default 16 MiB)\n"
    "  --tls                   MLLP over TLS (1.2 or later); the server's certificate is\n"
    "                          verified against the system's CAs and HOST\n"
    "  --tls-ca FILE           verify the server against these CAs instead; implies --tls\n"
    "  --tls-cert FILE         our client certificate (PEM), with --tls-key; implies --tls\n"
    "  --tls-key FILE          its private key\n"
    "  --tls-no-verify         do not verify the server's certificate (a warning is printed)\n"
    "  -v, --verbose           print each ACK whole (segments on their own lines)\n"
    "  -q, --quiet             print only failures\n"
    "  -h, --help              show this help\n"
    "\n"
    "Exit status: 0 if every message was accepted (AA, or CA); 1 if any was answered AE or AR,\n"
    "a file could not be read or held no message, or the connection failed (messages after a\n"
    "connection failure are not sent); 2 on wrong usage.\n";

/* Split `data` into messages at each MSH segment, with CR between segments. */
static int split_messages(const char *data, size_t len, struct tr_buf *msgs, size_t max,
                          size_t *count)
{
    size_t n = 0;
    size_t pos = 0;
    struct tr_buf *cur = NULL;
    if (len >= 3 && (unsigned char)data[0] == 0xEF && (unsigned char)data[1] == 0xBB &&
        (unsigned char)data[2] == 0xBF)
        pos = 3;
    while (pos < len) {
        size_t end = pos;
        while (end < len && data[end] != '\r' && data[end] != '\n')
            end++;
        size_t seg = end - pos;
        const char *s = data + pos;
        pos = end + ((end + 1 < len && data[end] == '\r' && data[end + 1] == '\n') ? 2 : 1);
        if (seg == 0)
            continue;
        bool envelope = seg >= 3 && (!memcmp(s, "FHS", 3) || !memcmp(s, "BHS", 3) ||
                                     !memcmp(s, "BTS", 3) || !memcmp(s, "FTS", 3));
        if (envelope)
            continue;
        if (seg >= 3 && !memcmp(s, "MSH", 3)) {
            if (n == max)
                return TR_ELIMIT;
            cur = &msgs[n++];
        }
        if (!cur) { /* something before the first MSH: send it as it is, the peer judges */
            if (n == max)
                return TR_ELIMIT;
            cur = &msgs[n++];
        }
        int rc = tr_buf_add(cur, s, seg);
        if (rc == 0)
            rc = tr_buf_addc(cur, '\r');
        if (rc < 0)
            return rc;
    }
    *count = n;
    return 0;
}

static int read_input(const char *path, struct tr_buf *out)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return TR_EIO;
    char chunk[65536];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = tr_buf_add(out, chunk, n);
    if (rc == 0 && ferror(f))
        rc = TR_EIO;
    if (f != stdin)
        fclose(f);
    return rc;
}

#define MAX_PER_FILE 10000

/* --dump: one message's fields, tab-separated, for people and for cross-checking parsers. */
static int dump_message(const char *where, const char *data, size_t len)
{
    struct hl7_message *m = NULL;
    struct tr_error err = TR_ERROR_INIT;
    if (hl7_parse(data, len, NULL, &m, &err) < 0) {
        cli_error("hl7send: %s: %s", where, err.message);
        return CLI_FAILED;
    }
    printf("# %s: %zu segments, character set %s\n", where, hl7_segment_count(m),
           hl7_charset_name(hl7_message_charset(m)));
    struct tr_buf text;
    tr_buf_init(&text, (size_t)1 << 30);
    for (size_t s = 0; s < hl7_segment_count(m); s++) {
        const char *name = hl7_segment_name(m, s);
        long occ = 0;
        for (size_t k = 0; k <= s; k++)
            occ += !strcmp(hl7_segment_name(m, k), name);
        for (size_t f = 1; f <= hl7_field_count(m, s); f++) {
            size_t n;
            const char *raw = hl7_field_raw(m, s, f, &n);
            printf("%s[%ld]-%zu\t%.*s", name, occ, f, (int)n, raw);
            char path[64];
            snprintf(path, sizeof(path), "%s[%ld]-%zu[1]", name, occ, f);
            unsigned comps = (!strcmp(name, "MSH") && f <= 2) ? 0 : hl7_count(m, path);
            for (unsigned c = 1; c <= comps; c++) {
                snprintf(path, sizeof(path), "%s[%ld]-%zu[1].%u", name, occ, f, c);
                hl7_get(m, path, &text, NULL);
                fputc('\t', stdout);
                for (size_t b = 0; b < text.len; b++) /* one line per field */
                    fputs(text.data[b] == '\n'   ? "\\n"
                          : text.data[b] == '\r' ? "\\r"
                                                 : (char[2]){text.data[b], 0},
                          stdout);
            }
            fputc('\n', stdout);
        }
    }
    tr_buf_release(&text);
    hl7_message_free(m);
    return CLI_OK;
}

int cmd_hl7send(int argc, char **argv)
{
    enum { O_TLS = 256, O_CA, O_CERT, O_KEY, O_NOVERIFY, O_TIMEOUT, O_MAX, O_DUMP };
    static const struct option options[] = {
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"max-message", required_argument, NULL, O_MAX},
        {"dump", no_argument, NULL, O_DUMP},
        {"tls", no_argument, NULL, O_TLS},
        {"tls-ca", required_argument, NULL, O_CA},
        {"tls-cert", required_argument, NULL, O_CERT},
        {"tls-key", required_argument, NULL, O_KEY},
        {"tls-no-verify", no_argument, NULL, O_NOVERIFY},
        {"verbose", no_argument, NULL, 'v'},
        {"quiet", no_argument, NULL, 'q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    /* DCMTK's spelling of the timeout, as the DICOM tools take it. */
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "-to") == 0)
            argv[i] = (char *)"--timeout";
    bool tls = false, verify = true;
    const char *ca = NULL, *cert = NULL, *key = NULL;
    int timeout_s = 30, verbose = 0;
    bool quiet = false, dump = false;
    size_t max_message = (size_t)16 << 20;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "vqh", options, NULL)) != -1) {
        char *end;
        long v;
        switch (c) {
        case O_TLS: tls = true; break;
        case O_DUMP: dump = true; break;
        case O_CA: ca = optarg, tls = true; break;
        case O_CERT: cert = optarg, tls = true; break;
        case O_KEY: key = optarg, tls = true; break;
        case O_NOVERIFY: verify = false, tls = true; break;
        case O_TIMEOUT:
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || *end || v < 1 || v > 86400) {
                cli_error("hl7send: --timeout takes seconds (1-86400)");
                return CLI_USAGE;
            }
            timeout_s = (int)v;
            break;
        case O_MAX:
            errno = 0;
            v = strtol(optarg, &end, 10);
            if (errno || *end || v < 16 || v > (1L << 30)) {
                cli_error("hl7send: --max-message takes bytes (16 to 1 GiB)");
                return CLI_USAGE;
            }
            max_message = (size_t)v;
            break;
        case 'v': verbose = 1; break;
        case 'q': quiet = true; break;
        case 'h': fputs(hl7send_help, stdout); return CLI_OK;
        default: fputs(hl7send_help, stderr); return CLI_USAGE;
        }
    }
    if (dump) {
        if (argc - optind < 1) {
            cli_error("hl7send: --dump needs FILE... (try 'telerad hl7send --help')");
            return CLI_USAGE;
        }
        int status = CLI_OK;
        for (int i = optind; i < argc; i++) {
            struct tr_buf data;
            tr_buf_init(&data, (size_t)1 << 30);
            struct tr_buf *msgs = tr_calloc(MAX_PER_FILE, sizeof(*msgs));
            size_t count = 0;
            int rc = msgs ? read_input(argv[i], &data) : TR_ENOMEM;
            for (size_t k = 0; msgs && k < MAX_PER_FILE; k++)
                tr_buf_init(&msgs[k], max_message);
            if (rc == 0)
                rc = split_messages(data.data ? data.data : "", data.len, msgs, MAX_PER_FILE,
                                    &count);
            if (rc < 0 || count == 0) {
                cli_error("hl7send: %s: %s", argv[i],
                          rc == TR_EIO ? strerror(errno)
                          : rc < 0     ? tr_strerror(rc)
                                       : "no HL7 message in it");
                status = CLI_FAILED;
            }
            for (size_t k = 0; k < count; k++) {
                char where[4200];
                snprintf(where, sizeof(where), count > 1 ? "%s#%zu" : "%s", argv[i], k + 1);
                if (dump_message(where, msgs[k].data, msgs[k].len) != CLI_OK)
                    status = CLI_FAILED;
            }
            for (size_t k = 0; msgs && k < MAX_PER_FILE; k++)
                tr_buf_release(&msgs[k]);
            tr_free(msgs);
            tr_buf_release(&data);
        }
        return status;
    }
    if (argc - optind < 3) {
        cli_error("hl7send: give HOST PORT FILE... (try 'telerad hl7send --help')");
        return CLI_USAGE;
    }
    const char *host = argv[optind];
    char *end;
    errno = 0;
    long port = strtol(argv[optind + 1], &end, 10);
    if (errno || *end || port < 1 || port > 65535) {
        cli_error("hl7send: PORT must be a number from 1 to 65535, not '%s'", argv[optind + 1]);
        return CLI_USAGE;
    }
    if (key && !cert) {
        cli_error("hl7send: --tls-key needs --tls-cert");
        return CLI_USAGE;
    }
    struct tr_error err = TR_ERROR_INIT;
    struct net_tls *ctx = NULL;
    if (tls) {
        struct net_tls_options topt;
        net_tls_options_init(&topt);
        topt.ca_file = ca;
        topt.certificate = cert;
        topt.private_key = key;
        topt.verify_peer = verify;
        if (!verify)
            fprintf(stderr, "telerad: hl7send: warning: the server's certificate is not "
                            "verified: anyone on the path could read and change the messages\n");
        ctx = net_tls_client_new(&topt, &err);
        if (!ctx) {
            cli_error("hl7send: TLS: %s", err.message);
            return CLI_FAILED;
        }
    }
    struct mllp_client_options copt;
    mllp_client_options_init(&copt);
    copt.tls = ctx;
    copt.connect_timeout_ms = timeout_s * 1000;
    copt.ack_timeout_ms = timeout_s * 1000;
    struct mllp_client *client = NULL;
    if (mllp_client_connect(host, (int)port, &copt, &client, &err) < 0) {
        cli_error("hl7send: %s", err.message);
        net_tls_free(ctx);
        return CLI_FAILED;
    }
    int status = CLI_OK;
    unsigned sent = 0, accepted = 0;
    bool connection_ok = true;
    for (int i = optind + 2; i < argc && connection_ok; i++) {
        const char *path = argv[i];
        struct tr_buf data;
        tr_buf_init(&data, (size_t)1 << 30);
        if (read_input(path, &data) < 0) {
            cli_error("hl7send: %s: %s", path, errno ? strerror(errno) : "cannot be read");
            status = CLI_FAILED;
            tr_buf_release(&data);
            continue;
        }
        struct tr_buf *msgs = tr_calloc(MAX_PER_FILE, sizeof(*msgs));
        size_t count = 0;
        int rc = msgs ? 0 : TR_ENOMEM;
        for (size_t k = 0; msgs && k < MAX_PER_FILE; k++)
            tr_buf_init(&msgs[k], max_message);
        if (rc == 0)
            rc = split_messages(data.data ? data.data : "", data.len, msgs, MAX_PER_FILE, &count);
        tr_buf_release(&data);
        if (rc < 0 || count == 0) {
            cli_error("hl7send: %s: %s", path,
                      rc == TR_ELIMIT ? "too many messages, or one over --max-message"
                      : rc < 0        ? "out of memory"
                                      : "no HL7 message in the file");
            status = CLI_FAILED;
        }
        for (size_t k = 0; k < count && rc == 0 && connection_ok; k++) {
            struct mllp_ack ack;
            char where[4200];
            if (count > 1)
                snprintf(where, sizeof(where), "%s#%zu", path, k + 1);
            else
                snprintf(where, sizeof(where), "%s", path);
            tr_error_clear(&err);
            sent++;
            if (mllp_client_send(client, msgs[k].data, msgs[k].len, &ack, &err) < 0) {
                cli_error("hl7send: %s: %s", where, err.message);
                status = CLI_FAILED;
                connection_ok = false;
                break;
            }
            bool ok = ack.status == MLLP_ACK_ACCEPT;
            if (ok)
                accepted++;
            else
                status = CLI_FAILED;
            if (!quiet || !ok)
                fprintf(ok ? stdout : stderr, "%s: %s %s%s%s\n", where, ack.control_id, ack.code,
                        ack.text[0] ? " " : "", ack.text);
            if (verbose) {
                for (size_t b = 0; b < ack.raw.len; b++)
                    fputc(ack.raw.data[b] == '\r' ? '\n' : ack.raw.data[b], stdout);
            }
            mllp_ack_release(&ack);
        }
        for (size_t k = 0; msgs && k < MAX_PER_FILE; k++)
            tr_buf_release(&msgs[k]);
        tr_free(msgs);
    }
    if (!quiet)
        fprintf(stdout, "%u sent, %u accepted (%s)\n", sent, accepted, mllp_client_peer(client));
    mllp_client_close(client);
    net_tls_free(ctx);
    return status;
}
