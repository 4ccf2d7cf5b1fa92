/*
 * orders.c - the orders interface: ORM^O01 / OMI^O23 / ADT^A08 / ADT^A40 in, table `orders`
 * (schema component "orders"), the ACK out. See orders.h for the fields used and the ACK rules.
 */
#include "common.h"
#include "db.h"
#include "hl7.h"
#include "mllp.h"
#include "orders.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>

#define MAX_ORDERS    100 /* order groups (ORC / OBR) in one message */
#define MSA_TEXT_MAX  80  /* MSA-3 is ST(80) */
#define ORDER_KEY_MAX 64  /* accession, placer and filler numbers we keep */

/* Schema (component "orders"); see db.h for the dialect words. Times are ms since the epoch. */
static const char *const migrations[] = {
    /* 1 */
    "CREATE TABLE orders ("
    "  id {SERIAL},"
    "  site TEXT NOT NULL,"
    "  accession TEXT NOT NULL,"
    "  accession_source TEXT NOT NULL DEFAULT '',"
    "  placer_number TEXT NOT NULL DEFAULT '',"
    "  filler_number TEXT NOT NULL DEFAULT '',"
    "  patient_id TEXT NOT NULL DEFAULT '',"
    "  patient_authority TEXT NOT NULL DEFAULT '',"
    "  patient_name TEXT NOT NULL DEFAULT '',"
    "  procedure_code TEXT NOT NULL DEFAULT '',"
    "  procedure_text TEXT NOT NULL DEFAULT '',"
    "  modality TEXT NOT NULL DEFAULT '',"
    "  priority INTEGER,"
    "  priority_code TEXT NOT NULL DEFAULT '',"
    "  ordering_provider TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL,"
    "  order_control TEXT NOT NULL DEFAULT '',"
    "  message_control_id TEXT NOT NULL DEFAULT '',"
    "  received_at {BIGINT} NOT NULL,"
    "  updated_at {BIGINT} NOT NULL,"
    "  UNIQUE (site, accession));"
    "CREATE INDEX orders_patient ON orders (site, patient_id);"
    "CREATE INDEX orders_placer ON orders (site, placer_number);"
    "CREATE TABLE orders_messages ("
    "  id {SERIAL},"
    "  received_at {BIGINT} NOT NULL,"
    "  site TEXT NOT NULL DEFAULT '',"
    "  facility TEXT NOT NULL DEFAULT '',"
    "  control_id TEXT NOT NULL DEFAULT '',"
    "  message_type TEXT NOT NULL DEFAULT '',"
    "  ack_code TEXT NOT NULL,"
    "  ack_text TEXT NOT NULL DEFAULT '',"
    "  peer TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX orders_messages_received ON orders_messages (received_at)",
};

#define ORDER_COLUMNS                                                                              \
    "id, site, accession, accession_source, placer_number, filler_number, patient_id, "            \
    "patient_authority, procedure_code, procedure_text, modality, priority, priority_code, "       \
    "ordering_provider, status, order_control, message_control_id, received_at, updated_at"

struct orders {
    struct orders_config cfg;
    struct db_pool *pool;
    char application[64], facility[64];
    atomic_uint_fast64_t next_ack;
};

void orders_config_init(struct orders_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->application = "TELERAD";
    cfg->facility = "TELERAD";
}

static void logf_(struct orders *o, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(struct orders *o, int level, const char *fmt, ...)
{
    if (!o->cfg.log)
        return;
    char line[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    o->cfg.log(o->cfg.log_ctx, level, line);
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- priorities (HL7 table 0027) --------------------------------------------------------- */

const char *order_priority_name(int priority)
{
    switch (priority) {
    case ORDER_PRIORITY_STAT: return "STAT";
    case ORDER_PRIORITY_URGENT: return "URGENT";
    case ORDER_PRIORITY_ROUTINE: return "ROUTINE";
    }
    return "";
}

int order_priority_parse(const char *code)
{
    char c[32];
    size_t n = 0;
    for (const char *p = code; *p && n + 1 < sizeof(c); p++)
        if (!isspace((unsigned char)*p))
            c[n++] = (char)toupper((unsigned char)*p);
    c[n] = '\0';
    static const char *const stat[] = {"S", "STAT", "STROKE", "E", "EMERGENCY", "EMERGENT"};
    static const char *const urgent[] = {"A",        "ASAP", "P",      "PREOP", "C",
                                         "CALLBACK", "U",    "URGENT", "HIGH"};
    static const char *const routine[] = {"R",   "ROUTINE", "T",        "LOW",
                                          "PRN", "NORMAL",  "ELECTIVE", "MEDIUM"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(stat); i++)
        if (!strcmp(c, stat[i]))
            return ORDER_PRIORITY_STAT;
    for (size_t i = 0; i < TR_ARRAY_SIZE(urgent); i++)
        if (!strcmp(c, urgent[i]))
            return ORDER_PRIORITY_URGENT;
    for (size_t i = 0; i < TR_ARRAY_SIZE(routine); i++)
        if (!strcmp(c, routine[i]))
            return ORDER_PRIORITY_ROUTINE;
    /* Timing critical within <n> seconds, minutes, hours, days, weeks, months. */
    if (n >= 3 && c[0] == 'T' && strchr("SMHDWL", c[1])) {
        long v = 0;
        for (size_t i = 2; i < n; i++) {
            if (c[i] < '0' || c[i] > '9' || v > 100000)
                return ORDER_PRIORITY_NONE;
            v = v * 10 + (c[i] - '0');
        }
        long minutes = c[1] == 'S' ? v / 60 : c[1] == 'M' ? v : c[1] == 'H' ? v * 60 : 100000;
        if (minutes <= 60)
            return ORDER_PRIORITY_STAT;
        if (minutes <= 240)
            return ORDER_PRIORITY_URGENT;
        return ORDER_PRIORITY_ROUTINE;
    }
    return ORDER_PRIORITY_NONE;
}

/* ---- schema and lookups ------------------------------------------------------------------ */

int orders_migrate(struct db *db, struct tr_error *err)
{
    return db_migrate(db, "orders", migrations, TR_ARRAY_SIZE(migrations), err);
}

static void copy(char *out, size_t size, const char *text)
{
    if (!size)
        return;
    size_t n = text ? strnlen(text, size - 1) : 0;
    if (n)
        memcpy(out, text, n);
    out[n] = '\0';
}

static void order_from_row(struct db_stmt *st, struct order *o)
{
    memset(o, 0, sizeof(*o));
    o->id = db_column_int64(st, 0);
    copy(o->site, sizeof(o->site), db_column_text(st, 1));
    copy(o->accession, sizeof(o->accession), db_column_text(st, 2));
    copy(o->accession_source, sizeof(o->accession_source), db_column_text(st, 3));
    copy(o->placer_number, sizeof(o->placer_number), db_column_text(st, 4));
    copy(o->filler_number, sizeof(o->filler_number), db_column_text(st, 5));
    copy(o->patient_id, sizeof(o->patient_id), db_column_text(st, 6));
    copy(o->patient_authority, sizeof(o->patient_authority), db_column_text(st, 7));
    copy(o->procedure_code, sizeof(o->procedure_code), db_column_text(st, 8));
    copy(o->procedure_text, sizeof(o->procedure_text), db_column_text(st, 9));
    copy(o->modality, sizeof(o->modality), db_column_text(st, 10));
    o->priority = db_column_is_null(st, 11) ? ORDER_PRIORITY_NONE : (int)db_column_int64(st, 11);
    copy(o->priority_code, sizeof(o->priority_code), db_column_text(st, 12));
    copy(o->ordering_provider, sizeof(o->ordering_provider), db_column_text(st, 13));
    copy(o->status, sizeof(o->status), db_column_text(st, 14));
    copy(o->order_control, sizeof(o->order_control), db_column_text(st, 15));
    copy(o->message_control_id, sizeof(o->message_control_id), db_column_text(st, 16));
    o->received_at = db_column_int64(st, 17);
    o->updated_at = db_column_int64(st, 18);
}

/* The order with (site, column = value): 1 found, 0 not, negative error. */
static int find_order(struct db *db, const char *sql, const char *site, const char *value,
                      struct order *out, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, site);
    db_bind_text(st, 2, value);
    rc = db_step(st, err);
    if (rc == 1)
        order_from_row(st, out);
    db_reset(st);
    return rc;
}

int orders_lookup(struct db *db, const char *site, const char *accession, struct order *out,
                  struct tr_error *err)
{
    if (!accession || !accession[0])
        return TR_ENOTFOUND;
    int rc = find_order(db,
                        "SELECT " ORDER_COLUMNS " FROM orders WHERE site = $1 AND "
                        "accession = $2",
                        site ? site : "", accession, out, err);
    if (rc == 1)
        return 0;
    return rc < 0 ? rc : TR_ENOTFOUND;
}

int orders_open(const struct orders_config *cfg, struct orders **out, struct tr_error *err)
{
    if (!cfg->db_url || !cfg->site_of)
        return tr_error_set(err, TR_EINVAL,
                            "the orders interface needs a database and a site "
                            "resolver");
    struct orders *o = tr_calloc(1, sizeof(*o));
    if (!o)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    o->cfg = *cfg;
    copy(o->application, sizeof(o->application), cfg->application ? cfg->application : "TELERAD");
    copy(o->facility, sizeof(o->facility), cfg->facility ? cfg->facility : "TELERAD");
    int rc = db_pool_open(cfg->db_url, &o->pool, err);
    struct db *db = NULL;
    if (rc == 0)
        rc = db_pool_acquire(o->pool, &db, err);
    if (rc == 0) {
        rc = orders_migrate(db, err);
        db_pool_release(o->pool, db);
    }
    if (rc) {
        orders_close(o);
        return rc;
    }
    *out = o;
    return 0;
}

void orders_close(struct orders *o)
{
    if (!o)
        return;
    db_pool_close(o->pool);
    tr_free(o);
}

/* ---- the ACK (2.9.2, original mode) ------------------------------------------------------ */

/* Why a message is not accepted: MSA-1, MSA-3 and the ERR segment. */
struct refusal {
    char code[3]; /* "AE" or "AR" */
    char text[400];
    char segment[4]; /* ERR-2: where ("" none) */
    unsigned sequence, field;
    int hl7_error; /* ERR-3, table 0357 */
};

static const char *hl7_error_text(int code)
{
    switch (code) {
    case 100: return "Segment sequence error";
    case 101: return "Required field missing";
    case 102: return "Data type error";
    case 103: return "Table value not found";
    case 104: return "Value too long";
    case 200: return "Unsupported message type";
    case 201: return "Unsupported event code";
    case 202: return "Unsupported processing id";
    case 203: return "Unsupported version id";
    case 204: return "Unknown key identifier";
    case 205: return "Duplicate key identifier";
    case 206: return "Application record locked";
    }
    return "Application internal error";
}

static int refuse(struct refusal *r, const char *code, int hl7_error, const char *segment,
                  unsigned sequence, unsigned field, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static int refuse(struct refusal *r, const char *code, int hl7_error, const char *segment,
                  unsigned sequence, unsigned field, const char *fmt, ...)
{
    copy(r->code, sizeof(r->code), code);
    r->hl7_error = hl7_error;
    copy(r->segment, sizeof(r->segment), segment ? segment : "");
    r->sequence = sequence;
    r->field = field;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
    return 1;
}

/* Build the ACK of `in` (NULL when not even its header could be read). */
static int build_ack(struct orders *o, const struct hl7_message *in, const struct refusal *r,
                     struct tr_buf *out)
{
    struct hl7_message *ack = hl7_message_new(in ? hl7_message_encoding(in) : NULL);
    if (!ack)
        return TR_ENOMEM;
    char text[200], event[16] = "", stamp[32], id[48];
    int rc = 0;
    struct tr_error err = TR_ERROR_INIT;
    if (in && hl7_get_text(in, "MSH-18", text, sizeof(text)) == HL7_VALUE)
        rc = hl7_set(ack, "MSH-18", hl7_charset_name(hl7_message_charset(in)), &err);
    /* Addressed back to the sender: its application and facility become the receivers. */
    rc = rc ? rc : hl7_set(ack, "MSH-3", o->application, &err);
    rc = rc ? rc : hl7_set(ack, "MSH-4", o->facility, &err);
    static const char *const swap[][2] = {{"MSH-3", "MSH-5"}, {"MSH-4", "MSH-6"}};
    for (size_t i = 0; i < 2 && rc == 0 && in; i++) {
        struct hl7_path from, to;
        const char *raw;
        size_t len;
        hl7_path_parse(swap[i][0], &from, NULL);
        hl7_path_parse(swap[i][1], &to, NULL);
        if (hl7_get_raw(in, &from, &raw, &len) >= HL7_NULL)
            rc = hl7_set_raw(ack, &to, raw, len, &err);
        if (rc == TR_EINVAL) /* repetitions in the sender's value: keep none */
            rc = 0;
    }
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(stamp, sizeof(stamp), "%Y%m%d%H%M%S+0000", &tm);
    rc = rc ? rc : hl7_set(ack, "MSH-7", stamp, &err);
    if (in)
        hl7_get_text(in, "MSH-9.2", event, sizeof(event));
    rc = rc ? rc : hl7_set(ack, "MSH-9.1", "ACK", &err);
    if (event[0])
        rc = rc ? rc : hl7_set(ack, "MSH-9.2", event, &err);
    rc = rc ? rc : hl7_set(ack, "MSH-9.3", "ACK", &err);
    snprintf(id, sizeof(id), "TR%" PRId64 "-%" PRIuFAST64, now_ms(),
             atomic_fetch_add(&o->next_ack, 1) + 1);
    rc = rc ? rc : hl7_set(ack, "MSH-10", id, &err);
    if (!in || hl7_get_text(in, "MSH-11.1", text, sizeof(text)) != HL7_VALUE)
        copy(text, sizeof(text), "P");
    rc = rc ? rc : hl7_set(ack, "MSH-11", text, &err);
    if (!in || hl7_get_text(in, "MSH-12.1", text, sizeof(text)) != HL7_VALUE)
        copy(text, sizeof(text), "2.5.1");
    rc = rc ? rc : hl7_set(ack, "MSH-12", text, &err);
    if (rc == 0 && hl7_segment_add(ack, "MSA", &err) < 0)
        rc = err.code ? err.code : TR_ENOMEM;
    rc = rc ? rc : hl7_set(ack, "MSA-1", r ? r->code : "AA", &err);
    if (in && rc == 0) {
        struct hl7_path from, to;
        const char *raw;
        size_t len;
        hl7_path_parse("MSH-10", &from, NULL);
        hl7_path_parse("MSA-2", &to, NULL);
        int have = hl7_get_raw(in, &from, &raw, &len);
        if (have >= HL7_NULL && hl7_set_raw(ack, &to, raw, len, NULL) < 0) {
            /* MSH-10 with repetitions: echo its text instead. */
            char control[200];
            hl7_get_text(in, "MSH-10", control, sizeof(control));
            rc = hl7_set(ack, "MSA-2", control, &err);
        }
    }
    if (r && rc == 0) {
        char msa3[MSA_TEXT_MAX + 1];
        copy(msa3, sizeof(msa3), r->text);
        size_t n = strlen(msa3); /* do not cut a UTF-8 character */
        if (strlen(r->text) > n)
            while (n > 0 && ((unsigned char)msa3[n] & 0xC0) == 0x80)
                msa3[--n] = '\0';
        rc = hl7_set(ack, "MSA-3", msa3, &err);
        if (rc == 0 && hl7_segment_add(ack, "ERR", &err) < 0)
            rc = err.code ? err.code : TR_ENOMEM;
        char num[16];
        if (rc == 0 && r->segment[0]) {
            /* ERR-1 (2.3-2.4, ELD) and ERR-2 (2.5+, ERL): segment^sequence^field. */
            static const char *const where[][3] = {{"ERR-1.1", "ERR-1.2", "ERR-1.3"},
                                                   {"ERR-2.1", "ERR-2.2", "ERR-2.3"}};
            for (int w = 0; w < 2 && rc == 0; w++) {
                rc = hl7_set(ack, where[w][0], r->segment, &err);
                snprintf(num, sizeof(num), "%u", r->sequence ? r->sequence : 1);
                rc = rc ? rc : hl7_set(ack, where[w][1], num, &err);
                if (r->field) {
                    snprintf(num, sizeof(num), "%u", r->field);
                    rc = rc ? rc : hl7_set(ack, where[w][2], num, &err);
                }
            }
        }
        snprintf(num, sizeof(num), "%d", r->hl7_error);
        rc = rc ? rc : hl7_set(ack, "ERR-3.1", num, &err);
        rc = rc ? rc : hl7_set(ack, "ERR-3.2", hl7_error_text(r->hl7_error), &err);
        rc = rc ? rc : hl7_set(ack, "ERR-3.3", "HL70357", &err);
        rc = rc ? rc : hl7_set(ack, "ERR-4", "E", &err);
        rc = rc ? rc : hl7_set(ack, "ERR-8", r->text, &err);
    }
    if (rc == TR_ECHARSET && r) {
        /* A reason that the sender's character set cannot carry (a non-ASCII value quoted in
         * an ASCII message): say it without the value. */
        hl7_message_free(ack);
        struct refusal plain = *r;
        copy(plain.text, sizeof(plain.text), hl7_error_text(r->hl7_error));
        return build_ack(o, in, &plain, out);
    }
    if (rc == 0)
        rc = hl7_write(ack, out, &err);
    hl7_message_free(ack);
    return rc;
}

/* ---- reading messages -------------------------------------------------------------------- */

/* Text at a path, "" unless it is a value. */
static const char *text_at(const struct hl7_message *m, char *out, size_t size, const char *fmt,
                           ...) __attribute__((format(printf, 4, 5)));

static const char *text_at(const struct hl7_message *m, char *out, size_t size, const char *fmt,
                           ...)
{
    char path[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(path, sizeof(path), fmt, ap);
    va_end(ap);
    if (hl7_get_text(m, path, out, size) != HL7_VALUE)
        out[0] = '\0';
    return out;
}

/* The patient of PID[occurrence] or MRG[occurrence] (field 3 / 1): ID and assigning authority
 * from the first repetition that has an ID. false when none has. */
static bool patient_of(const struct hl7_message *m, const char *segment, unsigned occurrence,
                       unsigned field, char *id, size_t id_size, char *authority, size_t asize)
{
    char path[32];
    snprintf(path, sizeof(path), "%s[%u]-%u", segment, occurrence, field);
    unsigned reps = hl7_count(m, path);
    for (unsigned r = 1; r <= reps && r <= 16; r++) {
        text_at(m, id, id_size, "%s[%u]-%u[%u].1", segment, occurrence, field, r);
        if (!id[0])
            continue;
        text_at(m, authority, asize, "%s[%u]-%u[%u].4.1", segment, occurrence, field, r);
        if (!authority[0])
            text_at(m, authority, asize, "%s[%u]-%u[%u].4.2", segment, occurrence, field, r);
        return true;
    }
    id[0] = authority[0] = '\0';
    return false;
}

/* PID-5 (first repetition) as a DICOM person name: Family^Given^Middle^Prefix^Suffix. */
static void patient_name(const struct hl7_message *m, unsigned occurrence, char *out, size_t size)
{
    char part[128];
    size_t n = 0, keep = 0;
    out[0] = '\0';
    for (unsigned c = 1; c <= 5; c++) {
        text_at(m, part, sizeof(part), "PID[%u]-5[1].%u", occurrence, c);
        if (c > 1 && n + 1 < size)
            out[n++] = '^';
        size_t k = strlen(part);
        if (n + k >= size)
            k = size - n - 1;
        memcpy(out + n, part, k);
        n += k;
        out[n] = '\0';
        if (part[0])
            keep = n;
    }
    out[keep] = '\0'; /* no trailing carets */
}

/* One order group of an ORM / OMI: an ORC and the OBR, TQ1, IPC after it. */
struct group {
    unsigned orc, obr, tq1, ipc; /* occurrences (1-based), 0 when absent */
};

struct parsed_order {
    struct order o;
    char patient_name[256];
    bool has_patient;
    bool has_priority;
};

/* XCN (ID^Family^Given) of ORC-12 or OBR-16. */
static void provider(const struct hl7_message *m, const char *seg, unsigned occ, unsigned field,
                     char *out, size_t size)
{
    char id[64], family[96], given[96];
    text_at(m, id, sizeof(id), "%s[%u]-%u.1", seg, occ, field);
    text_at(m, family, sizeof(family), "%s[%u]-%u.2", seg, occ, field);
    text_at(m, given, sizeof(given), "%s[%u]-%u.3", seg, occ, field);
    if (!id[0] && !family[0] && !given[0])
        out[0] = '\0';
    else
        snprintf(out, size, "%s^%s^%s", id, family, given);
}

/* Fill one order from its group; 0, or 1 with the refusal filled. */
static int read_order(const struct hl7_message *m, const struct group *g, unsigned index,
                      struct parsed_order *p, struct refusal *r)
{
    struct order *o = &p->o;
    char tmp[ORDER_TEXT_MAX];
    if (g->orc) {
        text_at(m, o->order_control, sizeof(o->order_control), "ORC[%u]-1", g->orc);
        if (!o->order_control[0])
            return refuse(r, "AE", 101, "ORC", g->orc, 1,
                          "ORC-1 (order control) is empty in "
                          "order %u",
                          index);
    } else {
        copy(o->order_control, sizeof(o->order_control), "NW"); /* an OBR alone: an order */
    }
    /* Order numbers: EI.1 of ORC-2/OBR-2 (placer) and ORC-3/OBR-3 (filler). */
    char placer_orc[128] = "", placer_obr[128] = "", filler_orc[128] = "", filler_obr[128] = "",
         ipc[128] = "";
    if (g->orc) {
        text_at(m, placer_orc, sizeof(placer_orc), "ORC[%u]-2.1", g->orc);
        text_at(m, filler_orc, sizeof(filler_orc), "ORC[%u]-3.1", g->orc);
    }
    if (g->obr) {
        text_at(m, placer_obr, sizeof(placer_obr), "OBR[%u]-2.1", g->obr);
        text_at(m, filler_obr, sizeof(filler_obr), "OBR[%u]-3.1", g->obr);
    }
    if (g->ipc)
        text_at(m, ipc, sizeof(ipc), "IPC[%u]-1.1", g->ipc);
    const char *placer = placer_obr[0] ? placer_obr : placer_orc;
    const char *filler = filler_obr[0] ? filler_obr : filler_orc;
    const struct {
        const char *value, *source, *seg;
        unsigned occ, field;
    } choices[] = {
        {ipc, "IPC-1", "IPC", g->ipc, 1},        {filler_obr, "OBR-3", "OBR", g->obr, 3},
        {filler_orc, "ORC-3", "ORC", g->orc, 3}, {placer_obr, "OBR-2", "OBR", g->obr, 2},
        {placer_orc, "ORC-2", "ORC", g->orc, 2},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(choices) && !o->accession[0]; i++) {
        if (!choices[i].value[0])
            continue;
        if (strlen(choices[i].value) > ORDER_KEY_MAX)
            return refuse(r, "AE", 104, choices[i].seg, choices[i].occ, choices[i].field,
                          "%s is longer than %d characters", choices[i].source, ORDER_KEY_MAX);
        copy(o->accession, sizeof(o->accession), choices[i].value);
        copy(o->accession_source, sizeof(o->accession_source), choices[i].source);
    }
    if (!o->accession[0])
        return refuse(r, "AE", 101, g->obr ? "OBR" : "ORC", g->obr ? g->obr : g->orc, 3,
                      "order %u has no number: IPC-1, OBR-3, ORC-3, OBR-2 and ORC-2 are all "
                      "empty",
                      index);
    if (strlen(placer) > ORDER_KEY_MAX || strlen(filler) > ORDER_KEY_MAX)
        return refuse(r, "AE", 104, g->obr ? "OBR" : "ORC", g->obr ? g->obr : g->orc, 2,
                      "an order number of order %u is longer than %d characters", index,
                      ORDER_KEY_MAX);
    copy(o->placer_number, sizeof(o->placer_number), placer);
    copy(o->filler_number, sizeof(o->filler_number), filler);
    /* Status by ORC-1 (table 0119) and ORC-5 (table 0038). */
    static const char *const cancels[] = {"CA", "OC", "DC", "OD", "CR", "DR"};
    const char *c = o->order_control;
    if (!strcmp(c, "NW") || !strcmp(c, "XO") || !strcmp(c, "XX")) {
        copy(o->status, sizeof(o->status), "scheduled");
    } else if (!strcmp(c, "SC") || !strcmp(c, "SS")) {
        char s5[8];
        text_at(m, s5, sizeof(s5), "ORC[%u]-5", g->orc);
        static const char *const map[][2] = {
            {"SC", "scheduled"}, {"IP", "in_progress"}, {"CM", "completed"}, {"HD", "hold"},
            {"CA", "cancelled"}, {"DC", "cancelled"},   {"A", "in_progress"}};
        o->status[0] = '\0';
        for (size_t i = 0; i < TR_ARRAY_SIZE(map); i++)
            if (!strcmp(s5, map[i][0]))
                copy(o->status, sizeof(o->status), map[i][1]);
        if (s5[0] && !o->status[0])
            return refuse(r, "AE", 103, "ORC", g->orc, 5,
                          "ORC-5 order status \"%s\" of order "
                          "%u is not one of SC, IP, CM, HD, CA, DC, A",
                          s5, index);
    } else {
        bool cancel = false;
        for (size_t i = 0; i < TR_ARRAY_SIZE(cancels); i++)
            cancel |= !strcmp(c, cancels[i]);
        if (!cancel)
            return refuse(r, "AE", 103, "ORC", g->orc, 1,
                          "ORC-1 order control \"%s\" is not "
                          "taken (NW, XO, XX, CA, OC, DC, OD, CR, DR, SC, SS)",
                          c);
        copy(o->status, sizeof(o->status), "cancelled");
    }
    /* What is ordered. */
    if (g->obr) {
        text_at(m, o->procedure_code, sizeof(o->procedure_code), "OBR[%u]-4.1", g->obr);
        text_at(m, o->procedure_text, sizeof(o->procedure_text), "OBR[%u]-4.2", g->obr);
        if (!o->procedure_text[0])
            text_at(m, o->procedure_text, sizeof(o->procedure_text), "OBR[%u]-4.5", g->obr);
        text_at(m, o->modality, sizeof(o->modality), "OBR[%u]-24", g->obr);
    }
    if (g->ipc && !o->modality[0])
        text_at(m, o->modality, sizeof(o->modality), "IPC[%u]-5.1", g->ipc);
    /* Priority: TQ1-9, ORC-7.6, OBR-27.6, OBR-5. */
    o->priority = ORDER_PRIORITY_NONE;
    const struct {
        const char *seg;
        unsigned occ;
        const char *field;
    } sources[] = {
        {"TQ1", g->tq1, "9.1"},
        {"ORC", g->orc, "7.6"},
        {"OBR", g->obr, "27.6"},
        {"OBR", g->obr, "5"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(sources) && !p->has_priority; i++) {
        if (!sources[i].occ)
            continue;
        text_at(m, tmp, sizeof(tmp), "%s[%u]-%s", sources[i].seg, sources[i].occ, sources[i].field);
        if (!tmp[0])
            continue;
        copy(o->priority_code, sizeof(o->priority_code), tmp);
        o->priority = order_priority_parse(tmp);
        p->has_priority = true;
    }
    if (g->orc)
        provider(m, "ORC", g->orc, 12, o->ordering_provider, sizeof(o->ordering_provider));
    if (!o->ordering_provider[0] && g->obr)
        provider(m, "OBR", g->obr, 16, o->ordering_provider, sizeof(o->ordering_provider));
    return 0;
}

/* The order groups of an ORM / OMI, in order. */
static int order_groups(const struct hl7_message *m, struct group *groups, size_t *count,
                        struct refusal *r)
{
    size_t n = 0;
    unsigned seen[4] = {0}; /* ORC, OBR, TQ1, IPC occurrences so far */
    static const char *const names[4] = {"ORC", "OBR", "TQ1", "IPC"};
    struct group *g = NULL;
    for (size_t i = 0; i < hl7_segment_count(m); i++) {
        const char *name = hl7_segment_name(m, i);
        int k = -1;
        for (int j = 0; j < 4; j++)
            if (!strcmp(name, names[j]))
                k = j;
        if (k < 0)
            continue;
        unsigned occ = ++seen[k];
        /* A new group at each ORC, and at an OBR that finds its group's OBR taken. */
        if (k == 0 || !g || (k == 1 && g->obr)) {
            if (n == MAX_ORDERS)
                return refuse(r, "AE", 100, name, occ, 0, "more than %d orders in one message",
                              MAX_ORDERS);
            g = &groups[n++];
            memset(g, 0, sizeof(*g));
        }
        unsigned *slot = k == 0 ? &g->orc : k == 1 ? &g->obr : k == 2 ? &g->tq1 : &g->ipc;
        if (!*slot)
            *slot = occ;
    }
    if (n == 0)
        return refuse(r, "AE", 100, "ORC", 1, 0, "the message has no ORC or OBR segment");
    *count = n;
    return 0;
}

/* ---- storing ----------------------------------------------------------------------------- */

/* Insert or update one order (in the caller's transaction); the stored order in p->o. */
static int store_order(struct db *db, const char *site, const char *control_id,
                       struct parsed_order *p, int64_t now, struct tr_error *err)
{
    struct order *o = &p->o;
    copy(o->site, sizeof(o->site), site);
    copy(o->message_control_id, sizeof(o->message_control_id), control_id);
    struct order old;
    int rc = find_order(db,
                        "SELECT " ORDER_COLUMNS " FROM orders WHERE site = $1 AND "
                        "accession = $2",
                        site, o->accession, &old, err);
    if (rc == 0 && o->placer_number[0])
        /* First sent with the placer's number only, now with the filler's (or the reverse). */
        rc = find_order(db,
                        "SELECT " ORDER_COLUMNS " FROM orders WHERE site = $1 AND "
                        "placer_number = $2 ORDER BY id LIMIT 1",
                        site, o->placer_number, &old, err);
    if (rc < 0)
        return rc;
    struct db_stmt *st;
    if (rc == 0) {
        rc = db_prepare(db,
                        "INSERT INTO orders (site, accession, accession_source, "
                        "placer_number, filler_number, patient_id, patient_authority, "
                        "patient_name, procedure_code, procedure_text, modality, priority, "
                        "priority_code, ordering_provider, status, order_control, "
                        "message_control_id, received_at, updated_at) VALUES ($1, $2, $3, "
                        "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
                        "$18, $18) RETURNING id",
                        &st, err);
        if (rc)
            return rc;
        o->received_at = o->updated_at = now;
    } else {
        /* Keep what this message does not say. */
        if (!p->has_patient) {
            copy(o->patient_id, sizeof(o->patient_id), old.patient_id);
            copy(o->patient_authority, sizeof(o->patient_authority), old.patient_authority);
        }
        if (!o->procedure_code[0] && !o->procedure_text[0]) {
            copy(o->procedure_code, sizeof(o->procedure_code), old.procedure_code);
            copy(o->procedure_text, sizeof(o->procedure_text), old.procedure_text);
        }
        if (!o->modality[0])
            copy(o->modality, sizeof(o->modality), old.modality);
        if (!p->has_priority) {
            o->priority = old.priority;
            copy(o->priority_code, sizeof(o->priority_code), old.priority_code);
        }
        if (!o->ordering_provider[0])
            copy(o->ordering_provider, sizeof(o->ordering_provider), old.ordering_provider);
        if (!o->placer_number[0])
            copy(o->placer_number, sizeof(o->placer_number), old.placer_number);
        if (!o->filler_number[0])
            copy(o->filler_number, sizeof(o->filler_number), old.filler_number);
        /* A resent new order or a change keeps the status it has reached (a cancelled order
         * ordered again is scheduled again); status messages without ORC-5 keep it too. */
        bool keep = (!strcmp(o->order_control, "NW") && strcmp(old.status, "cancelled") != 0) ||
                    !strcmp(o->order_control, "XO") || !strcmp(o->order_control, "XX") ||
                    !o->status[0];
        if (keep)
            copy(o->status, sizeof(o->status), old.status);
        o->received_at = old.received_at;
        o->updated_at = now;
        o->id = old.id;
        rc = db_prepare(db,
                        "UPDATE orders SET site = $1, accession = $2, accession_source = $3,"
                        " placer_number = $4, filler_number = $5, patient_id = $6, "
                        "patient_authority = $7, patient_name = CASE WHEN $8 = '' THEN "
                        "patient_name ELSE $8 END, procedure_code = $9, procedure_text = "
                        "$10, modality = $11, priority = $12, priority_code = $13, "
                        "ordering_provider = $14, status = $15, order_control = $16, "
                        "message_control_id = $17, updated_at = $18 WHERE id = $19 "
                        "RETURNING id",
                        &st, err);
        if (rc)
            return rc;
        db_bind_int64(st, 19, old.id);
    }
    if (!o->status[0])
        copy(o->status, sizeof(o->status), "scheduled");
    db_bind_text(st, 1, o->site);
    db_bind_text(st, 2, o->accession);
    db_bind_text(st, 3, o->accession_source);
    db_bind_text(st, 4, o->placer_number);
    db_bind_text(st, 5, o->filler_number);
    db_bind_text(st, 6, o->patient_id);
    db_bind_text(st, 7, o->patient_authority);
    db_bind_text(st, 8, p->has_patient ? p->patient_name : "");
    db_bind_text(st, 9, o->procedure_code);
    db_bind_text(st, 10, o->procedure_text);
    db_bind_text(st, 11, o->modality);
    if (o->priority == ORDER_PRIORITY_NONE)
        db_bind_null(st, 12);
    else
        db_bind_int64(st, 12, o->priority);
    db_bind_text(st, 13, o->priority_code);
    db_bind_text(st, 14, o->ordering_provider);
    db_bind_text(st, 15, o->status);
    db_bind_text(st, 16, o->order_control);
    db_bind_text(st, 17, o->message_control_id);
    db_bind_int64(st, 18, now);
    rc = db_step(st, err);
    if (rc == 1)
        o->id = db_column_int64(st, 0);
    db_reset(st);
    return rc < 0 ? rc : 0;
}

static int record_message(struct db *db, int64_t now, const char *site, const char *facility,
                          const char *control_id, const char *type, const char *code,
                          const char *text, const char *peer, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "INSERT INTO orders_messages (received_at, site, facility, "
                        "control_id, message_type, ack_code, ack_text, peer) VALUES ($1, $2,"
                        " $3, $4, $5, $6, $7, $8)",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, now);
    db_bind_text(st, 2, site);
    db_bind_text(st, 3, facility);
    db_bind_text(st, 4, control_id);
    db_bind_text(st, 5, type);
    db_bind_text(st, 6, code);
    db_bind_text(st, 7, text);
    db_bind_text(st, 8, peer ? peer : "");
    rc = db_step(st, err);
    db_reset(st);
    return rc < 0 ? rc : 0;
}

/* ---- the messages ------------------------------------------------------------------------ */

struct context {
    struct orders *o;
    const struct hl7_message *m;
    char site[65];
    char facility[200];
    char control_id[200];
    char type[32];
    const char *peer;
    int64_t now;
    struct parsed_order *orders; /* stored, for on_order */
    size_t norders;
    char summary[300]; /* for the log line (no PHI) */
};

static int handle_order(struct context *x, struct db *db, struct refusal *r, struct tr_error *err)
{
    struct group groups[MAX_ORDERS];
    size_t n = 0;
    if (order_groups(x->m, groups, &n, r))
        return 1;
    x->orders = tr_calloc(n, sizeof(*x->orders));
    if (!x->orders)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    char id[65], authority[65], name[256];
    bool has_patient = patient_of(x->m, "PID", 1, 3, id, sizeof(id), authority, sizeof(authority));
    if (has_patient)
        patient_name(x->m, 1, name, sizeof(name));
    for (size_t i = 0; i < n; i++) {
        struct parsed_order *p = &x->orders[i];
        if (read_order(x->m, &groups[i], (unsigned)i + 1, p, r))
            return 1;
        p->has_patient = has_patient;
        if (has_patient) {
            copy(p->o.patient_id, sizeof(p->o.patient_id), id);
            copy(p->o.patient_authority, sizeof(p->o.patient_authority), authority);
            copy(p->patient_name, sizeof(p->patient_name), name);
        }
        if (!has_patient && !strcmp(p->o.order_control, "NW"))
            return refuse(r, "AE", 101, "PID", 1, 3,
                          "a new order needs the patient: PID-3 "
                          "(patient identifier list) is empty or missing");
    }
    x->norders = n;
    for (size_t i = 0; i < n; i++) {
        int rc = store_order(db, x->site, x->control_id, &x->orders[i], x->now, err);
        if (rc)
            return rc;
    }
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < sizeof(x->summary); i++) {
        const struct order *o = &x->orders[i].o;
        int w = snprintf(x->summary + k, sizeof(x->summary) - k, "%s%s %s %s%s", i ? ", " : "",
                         o->accession, o->order_control, o->status, o->priority >= 0 ? " " : "");
        if (w < 0)
            break;
        k = TR_MIN(k + (size_t)w, sizeof(x->summary) - 1);
        if (o->priority >= 0) {
            w = snprintf(x->summary + k, sizeof(x->summary) - k, "%s",
                         order_priority_name(o->priority));
            k = TR_MIN(k + (size_t)TR_MAX(w, 0), sizeof(x->summary) - 1);
        }
    }
    return 0;
}

/* ADT^A08: the patient's name on the site's open orders. */
static int handle_update(struct context *x, struct db *db, struct refusal *r, struct tr_error *err)
{
    char id[65], authority[65], name[256];
    if (!patient_of(x->m, "PID", 1, 3, id, sizeof(id), authority, sizeof(authority)))
        return refuse(r, "AE", 101, "PID", 1, 3,
                      "PID-3 (patient identifier list) is empty or "
                      "missing");
    patient_name(x->m, 1, name, sizeof(name));
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "UPDATE orders SET patient_name = $4, updated_at = $5, "
                        "message_control_id = $6 WHERE site = $1 AND patient_id = $2 AND "
                        "($3 = '' OR patient_authority = '' OR patient_authority = $3) AND "
                        "status NOT IN ('cancelled', 'completed')",
                        &st, err);
    if (rc)
        return rc;
    db_bind_text(st, 1, x->site);
    db_bind_text(st, 2, id);
    db_bind_text(st, 3, authority);
    db_bind_text(st, 4, name);
    db_bind_int64(st, 5, x->now);
    db_bind_text(st, 6, x->control_id);
    rc = db_step(st, err);
    int64_t changed = db_changes(st);
    db_reset(st);
    if (rc < 0)
        return rc;
    snprintf(x->summary, sizeof(x->summary), "%" PRId64 " open orders updated", changed);
    return 0;
}

/* ADT^A40: each MRG's prior patient's orders move to the PID before it. */
static int handle_merge(struct context *x, struct db *db, struct refusal *r, struct tr_error *err)
{
    unsigned merges = 0;
    int64_t moved = 0;
    for (unsigned k = 1; hl7_segment_find(x->m, "MRG", k) >= 0; k++) {
        char id[65], authority[65], old_id[65], old_authority[65], name[256];
        if (!patient_of(x->m, "PID", k, 3, id, sizeof(id), authority, sizeof(authority)))
            return refuse(r, "AE", 101, "PID", k, 3,
                          "PID-3 (the surviving patient) of merge %u"
                          " is empty or missing",
                          k);
        if (!patient_of(x->m, "MRG", k, 1, old_id, sizeof(old_id), old_authority,
                        sizeof(old_authority)))
            return refuse(r, "AE", 101, "MRG", k, 1,
                          "MRG-1 (the merged patient) of merge %u is "
                          "empty",
                          k);
        patient_name(x->m, k, name, sizeof(name));
        struct db_stmt *st;
        int rc = db_prepare(db,
                            "UPDATE orders SET patient_id = $4, patient_authority = CASE "
                            "WHEN $5 = '' THEN patient_authority ELSE $5 END, patient_name ="
                            " CASE WHEN $6 = '' THEN patient_name ELSE $6 END, updated_at ="
                            " $7, message_control_id = $8 WHERE site = $1 AND patient_id = "
                            "$2 AND ($3 = '' OR patient_authority = '' OR patient_authority "
                            "= $3)",
                            &st, err);
        if (rc)
            return rc;
        db_bind_text(st, 1, x->site);
        db_bind_text(st, 2, old_id);
        db_bind_text(st, 3, old_authority);
        db_bind_text(st, 4, id);
        db_bind_text(st, 5, authority);
        db_bind_text(st, 6, name);
        db_bind_int64(st, 7, x->now);
        db_bind_text(st, 8, x->control_id);
        rc = db_step(st, err);
        moved += db_changes(st);
        db_reset(st);
        if (rc < 0)
            return rc;
        merges++;
    }
    if (!merges)
        return refuse(r, "AE", 100, "MRG", 1, 0, "ADT^A40 without an MRG segment");
    snprintf(x->summary, sizeof(x->summary), "%u merges, %" PRId64 " orders moved", merges, moved);
    return 0;
}

enum kind { KIND_ORDER, KIND_UPDATE, KIND_MERGE };

/* Header checks: 0 and *kind, or 1 with the refusal. */
static int check_header(struct context *x, enum kind *kind, struct refusal *r)
{
    char processing[8], type[16], event[16], structure[16], application[200];
    text_at(x->m, processing, sizeof(processing), "MSH-11.1");
    text_at(x->m, type, sizeof(type), "MSH-9.1");
    text_at(x->m, event, sizeof(event), "MSH-9.2");
    text_at(x->m, structure, sizeof(structure), "MSH-9.3");
    snprintf(x->type, sizeof(x->type), "%s^%s", type, event);
    if (!x->control_id[0])
        return refuse(r, "AE", 101, "MSH", 1, 10, "MSH-10 (message control ID) is empty");
    if (processing[0] && strcmp(processing, "P") && strcmp(processing, "T") &&
        strcmp(processing, "D"))
        return refuse(r, "AR", 202, "MSH", 1, 11, "MSH-11 processing ID \"%s\" is not P, T or D",
                      processing);
    if (!type[0])
        return refuse(r, "AE", 101, "MSH", 1, 9, "MSH-9 (message type) is empty");
    if (!strcmp(type, "ORM") && (!event[0] || !strcmp(event, "O01")))
        *kind = KIND_ORDER;
    else if (!strcmp(type, "OMI") && (!event[0] || !strcmp(event, "O23")))
        *kind = KIND_ORDER;
    else if (!strcmp(type, "ADT") && !strcmp(event, "A08"))
        *kind = KIND_UPDATE;
    else if (!strcmp(type, "ADT") && !strcmp(event, "A40"))
        *kind = KIND_MERGE;
    else if (!strcmp(type, "ORM") || !strcmp(type, "OMI") || !strcmp(type, "ADT"))
        return refuse(r, "AR", 201, "MSH", 1, 9,
                      "event %s^%s is not taken (ORM^O01, OMI^O23, "
                      "ADT^A08, ADT^A40)",
                      type, event);
    else
        return refuse(r, "AR", 200, "MSH", 1, 9,
                      "message type %s is not taken (ORM^O01, "
                      "OMI^O23, ADT^A08, ADT^A40)",
                      type);
    text_at(x->m, x->facility, sizeof(x->facility), "MSH-4.1");
    if (!x->facility[0])
        text_at(x->m, x->facility, sizeof(x->facility), "MSH-4.2");
    text_at(x->m, application, sizeof(application), "MSH-3.1");
    if (!x->facility[0])
        return refuse(r, "AR", 101, "MSH", 1, 4,
                      "MSH-4 (sending facility) is empty: the site "
                      "is unknown");
    if (!x->o->cfg.site_of(x->o->cfg.site_ctx, x->facility, application, x->site, sizeof(x->site)))
        return refuse(r, "AR", 204, "MSH", 1, 4,
                      "sending facility \"%s\" (MSH-4) is not a "
                      "site of ours",
                      x->facility);
    return 0;
}

/* The header alone (the first segment), to answer a message that does not parse whole. */
static struct hl7_message *header_only(const char *data, size_t len)
{
    size_t n = 0;
    while (n < len && data[n] != '\r' && data[n] != '\n')
        n++;
    struct hl7_message *m = NULL;
    if (hl7_parse(data, n, NULL, &m, NULL) < 0)
        return NULL;
    return m;
}

int orders_handle(struct orders *o, const char *data, size_t len, bool truncated, const char *peer,
                  struct tr_buf *ack)
{
    struct context x = {.o = o, .peer = peer, .now = now_ms()};
    struct refusal r = {0};
    bool refused = false;
    struct hl7_message *m = NULL;
    struct tr_error err = TR_ERROR_INIT;
    struct db *db = NULL;
    if (truncated) {
        m = header_only(data, len);
        refused = refuse(&r, "AR", 104, NULL, 0, 0,
                         "the message is over the size cap of %zu "
                         "bytes: refused",
                         len);
    } else if (hl7_parse(data, len, NULL, &m, &err) < 0) {
        m = header_only(data, len);
        refused = refuse(&r, "AE", 102, NULL, 0, 0, "%s", err.message);
    }
    x.m = m;
    if (m) {
        char type[16], event[16];
        text_at(m, x.control_id, sizeof(x.control_id), "MSH-10");
        text_at(m, x.facility, sizeof(x.facility), "MSH-4.1");
        snprintf(x.type, sizeof(x.type), "%s^%s", text_at(m, type, sizeof(type), "MSH-9.1"),
                 text_at(m, event, sizeof(event), "MSH-9.2"));
    }
    enum kind kind = KIND_ORDER;
    if (!refused)
        refused = check_header(&x, &kind, &r);
    int rc = 0;
    if (!refused) {
        rc = db_pool_acquire(o->pool, &db, &err);
        if (rc == 0)
            rc = db_begin(db, &err);
        if (rc == 0) {
            int done = kind == KIND_ORDER    ? handle_order(&x, db, &r, &err)
                       : kind == KIND_UPDATE ? handle_update(&x, db, &r, &err)
                                             : handle_merge(&x, db, &r, &err);
            if (done == 0)
                done = record_message(db, x.now, x.site, x.facility, x.control_id, x.type, "AA", "",
                                      peer, &err);
            if (done == 0)
                done = db_commit(db, &err);
            else
                db_rollback(db);
            if (done == 1)
                refused = true;
            else
                rc = done;
        }
        if (rc < 0) {
            logf_(o, 0, "HL7 %s %s from %s: not stored: %s", x.type, x.control_id, x.facility,
                  err.message);
            refused =
                refuse(&r, "AR", 207, NULL, 0, 0, "not stored (try again later): %s", err.message);
        }
    }
    if (refused) {
        if (!db && db_pool_acquire(o->pool, &db, NULL) < 0)
            db = NULL;
        struct tr_error rerr = TR_ERROR_INIT;
        if (db && record_message(db, x.now, x.site, x.facility, x.control_id, x.type, r.code,
                                 r.text, peer, &rerr) < 0)
            logf_(o, 1, "HL7 %s: cannot record the refusal: %s", x.control_id, rerr.message);
        logf_(o, 1, "HL7 %s %s from %s (%s): %s %s", x.type[0] ? x.type : "message",
              x.control_id[0] ? x.control_id : "(no MSH-10)", x.facility[0] ? x.facility : "?",
              peer ? peer : "", r.code, r.text);
    } else {
        logf_(o, 2, "HL7 %s %s from %s (site %s): AA, %s", x.type, x.control_id, x.facility, x.site,
              x.summary);
    }
    if (db)
        db_pool_release(o->pool, db);
    rc = build_ack(o, m, refused ? &r : NULL, ack);
    if (!refused && o->cfg.on_order)
        for (size_t i = 0; i < x.norders; i++)
            o->cfg.on_order(o->cfg.on_order_ctx, &x.orders[i].o);
    tr_free(x.orders);
    hl7_message_free(m);
    if (rc < 0)
        return rc;
    return refused ? 1 : 0;
}

void orders_mllp_handle(void *ctx, const struct mllp_request *rq, struct tr_buf *reply)
{
    struct orders *o = ctx;
    if (orders_handle(o, rq->data, rq->len, rq->truncated, rq->peer ? rq->peer->address : "",
                      reply) < 0)
        logf_(o, 0, "HL7 from %s: no ACK could be made (out of memory)",
              rq->peer ? rq->peer->address : "?");
}
