/*
 * model.c - sites, readers, contracts and priority rules: validation of their JSON documents
 * (errors name the field), and the catalog snapshot the router works from.
 */
#include "common.h"
#include "flow_int.h"

#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <strings.h>

const char *const flow_priority_names[PRIO_COUNT] = {"STAT", "URGENT", "ROUTINE"};

int flow_priority_parse(const char *text)
{
    if (!text)
        return -1;
    if (strcasecmp(text, "STAT") == 0)
        return PRIO_STAT;
    if (strcasecmp(text, "URGENT") == 0 || strcasecmp(text, "ASAP") == 0 ||
        strcasecmp(text, "HIGH") == 0)
        return PRIO_URGENT;
    if (strcasecmp(text, "ROUTINE") == 0 || strcasecmp(text, "MEDIUM") == 0 ||
        strcasecmp(text, "LOW") == 0)
        return PRIO_ROUTINE;
    return -1;
}

static int invalid(struct flow_invalid *bad, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int invalid(struct flow_invalid *bad, const char *field, const char *fmt, ...)
{
    snprintf(bad->field, sizeof(bad->field), "%s", field);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(bad->why, sizeof(bad->why), fmt, ap);
    va_end(ap);
    return TR_EINVAL;
}

/* A string member: required or not, length 1..max-1. */
static int get_text(json_t *doc, const char *name, bool required, char *out, size_t max,
                    struct flow_invalid *bad)
{
    json_t *v = json_object_get(doc, name);
    if (!v || json_is_null(v)) {
        if (required)
            return invalid(bad, name, "%s is required", name);
        out[0] = '\0';
        return 1;
    }
    if (!json_is_string(v))
        return invalid(bad, name, "%s must be a string", name);
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n == 0 && required)
        return invalid(bad, name, "%s must not be empty", name);
    if (n >= max)
        return invalid(bad, name, "%s is longer than %zu characters", name, max - 1);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20)
            return invalid(bad, name, "%s holds a control character", name);
    }
    memcpy(out, s, n + 1);
    return 0;
}

static bool valid_id(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++) {
        if (!(islower((unsigned char)*s) || isdigit((unsigned char)*s) || *s == '-' ||
              *s == '_' || *s == '.'))
            return false;
    }
    return true;
}

/* ISO 3166-2: two letters, '-', 1-3 letters or digits ("US-TX", "GB-ENG", "CN-GD"). */
static bool valid_jurisdiction(const char *s)
{
    size_t n = strlen(s);
    if (n < 4 || n > 6 || !isupper((unsigned char)s[0]) || !isupper((unsigned char)s[1]) ||
        s[2] != '-')
        return false;
    for (size_t i = 3; i < n; i++) {
        if (!isupper((unsigned char)s[i]) && !isdigit((unsigned char)s[i]))
            return false;
    }
    return true;
}

static bool valid_date(const char *s)
{
    if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++) {
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i]))
            return false;
    }
    int y = (s[0] - '0') * 1000 + (s[1] - '0') * 100 + (s[2] - '0') * 10 + (s[3] - '0');
    int m = (s[5] - '0') * 10 + (s[6] - '0'), d = (s[8] - '0') * 10 + (s[9] - '0');
    static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1)
        return false;
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return d <= days[m - 1] + (m == 2 && leap ? 1 : 0);
}

static int parse_hhmm(const char *s)
{
    if (strlen(s) != 5 || s[2] != ':' || !isdigit((unsigned char)s[0]) ||
        !isdigit((unsigned char)s[1]) || !isdigit((unsigned char)s[3]) ||
        !isdigit((unsigned char)s[4]))
        return -1;
    int h = (s[0] - '0') * 10 + (s[1] - '0'), m = (s[3] - '0') * 10 + (s[4] - '0');
    if (h == 24 && m == 0)
        return 1440;
    return h < 24 && m < 60 ? h * 60 + m : -1;
}

/* "2026-11-22T10:30:00Z" or with an offset "+01:00" -> ms since the epoch. */
static int parse_iso(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec = 0, n = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d%n", &y, &mo, &d, &h, &mi, &n) != 5)
        return -1;
    const char *p = s + n;
    if (*p == ':') {
        int k = 0;
        if (sscanf(p, ":%2d%n", &sec, &k) != 1)
            return -1;
        p += k;
        if (*p == '.') {
            p++;
            while (isdigit((unsigned char)*p))
                p++;
        }
    }
    int offset = 0;
    if (*p == 'Z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om, k = 0;
        if (sscanf(p + 1, "%2d:%2d%n", &oh, &om, &k) != 2)
            return -1;
        offset = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 1 + k;
    } else {
        return -1;
    }
    if (*p || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60)
        return -1;
    struct tm tm = {.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d, .tm_hour = h,
                    .tm_min = mi, .tm_sec = sec};
    time_t t = timegm(&tm);
    *out = ((int64_t)t - (int64_t)offset * 60) * 1000;
    return 0;
}

static int parse_days(json_t *days, const char *field, uint8_t *mask, struct flow_invalid *bad)
{
    static const char *const names[] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};
    *mask = 0;
    if (!days) {
        *mask = 0x7F;
        return 0;
    }
    if (!json_is_array(days) || json_array_size(days) == 0)
        return invalid(bad, field, "days is a non-empty list such as [\"mon\",\"tue\"]");
    size_t i;
    json_t *d;
    json_array_foreach(days, i, d)
    {
        const char *t = json_string_value(d);
        int k = -1;
        for (int j = 0; t && j < 7; j++) {
            if (strncasecmp(t, names[j], 3) == 0)
                k = j;
        }
        if (k < 0)
            return invalid(bad, field, "a day is one of mon, tue, wed, thu, fri, sat, sun");
        *mask |= (uint8_t)(1u << k);
    }
    return 0;
}

static int parse_window(json_t *w, const char *field, struct flow_window *out,
                        struct flow_invalid *bad)
{
    if (!json_is_object(w))
        return invalid(bad, field, "expected {\"days\":[...],\"start\":\"HH:MM\",\"end\":\"HH:MM\"}");
    char f[96];
    snprintf(f, sizeof(f), "%s.days", field);
    if (parse_days(json_object_get(w, "days"), f, &out->days, bad))
        return TR_EINVAL;
    const char *start = json_string_value(json_object_get(w, "start"));
    const char *end = json_string_value(json_object_get(w, "end"));
    out->start = start ? parse_hhmm(start) : -1;
    out->end = end ? parse_hhmm(end) : -1;
    if (out->start < 0 || out->start == 1440) {
        snprintf(f, sizeof(f), "%s.start", field);
        return invalid(bad, f, "start is a time \"HH:MM\"");
    }
    if (out->end < 0) {
        snprintf(f, sizeof(f), "%s.end", field);
        return invalid(bad, f, "end is a time \"HH:MM\"");
    }
    return 0;
}

static int parse_strings(json_t *doc, const char *name, char **out, unsigned *n, size_t max_len,
                         struct flow_invalid *bad)
{
    json_t *a = json_object_get(doc, name);
    *n = 0;
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return invalid(bad, name, "%s must be a list of strings", name);
    if (json_array_size(a) > FLOW_MAX_LIST)
        return invalid(bad, name, "%s holds more than %d entries", name, FLOW_MAX_LIST);
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        char field[96];
        snprintf(field, sizeof(field), "%s[%zu]", name, i);
        if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > max_len)
            return invalid(bad, field, "must be a string of 1 to %zu characters", max_len);
        out[*n] = tr_strdup(json_string_value(v));
        if (!out[*n])
            return invalid(bad, field, "out of memory");
        (*n)++;
    }
    return 0;
}

void flow_site_release(struct flow_site *s)
{
    for (unsigned i = 0; i < s->nae; i++)
        tr_free(s->ae_titles[i]);
    s->nae = 0;
}

int flow_site_parse(json_t *doc, struct flow_site *s, struct flow_invalid *bad)
{
    memset(s, 0, sizeof(*s));
    if (!json_is_object(doc))
        return invalid(bad, "", "a site is a JSON object");
    if (get_text(doc, "id", true, s->id, sizeof(s->id), bad) < 0)
        return TR_EINVAL;
    if (!valid_id(s->id))
        return invalid(bad, "id", "id uses lower-case letters, digits, '-', '_' and '.'");
    if (get_text(doc, "name", true, s->name, sizeof(s->name), bad) < 0 ||
        get_text(doc, "jurisdiction", true, s->jurisdiction, sizeof(s->jurisdiction), bad) < 0 ||
        get_text(doc, "timezone", true, s->timezone, sizeof(s->timezone), bad) < 0 ||
        get_text(doc, "region", false, s->region, sizeof(s->region), bad) < 0 ||
        get_text(doc, "pseudonymize_outside", false, s->pseudonymize_outside,
                 sizeof(s->pseudonymize_outside), bad) < 0)
        return TR_EINVAL;
    if (!valid_jurisdiction(s->jurisdiction))
        return invalid(bad, "jurisdiction",
                       "jurisdiction is an ISO 3166-2 code such as US-TX, GB-ENG or CN-GD");
    if (!flow_tz_valid(s->timezone))
        return invalid(bad, "timezone", "timezone is an IANA time zone such as America/Chicago");
    if (parse_strings(doc, "ae_titles", s->ae_titles, &s->nae, 16, bad) < 0) {
        flow_site_release(s);
        return TR_EINVAL;
    }
    for (unsigned i = 0; i < s->nae; i++) {
        for (const char *c = s->ae_titles[i]; *c; c++) {
            if (*c == '\\' || (unsigned char)*c < 0x20 || (unsigned char)*c > 0x7E) {
                char field[32];
                snprintf(field, sizeof(field), "ae_titles[%u]", i);
                flow_site_release(s);
                return invalid(bad, field, "an AE title is printable ASCII without '\\'");
            }
        }
    }
    json_t *results = json_object_get(doc, "results");
    if (results && !json_is_object(results) && !json_is_null(results)) {
        flow_site_release(s);
        return invalid(bad, "results", "results is an object naming where reports go");
    }
    return 0;
}

void flow_reader_release(struct flow_reader *r)
{
    for (unsigned i = 0; i < r->nsubspecialties; i++)
        tr_free(r->subspecialties[i]);
    r->nsubspecialties = 0;
}

int flow_reader_parse(json_t *doc, struct flow_reader *r, struct flow_invalid *bad)
{
    memset(r, 0, sizeof(*r));
    if (!json_is_object(doc))
        return invalid(bad, "", "a reader is a JSON object");
    char status[16];
    if (get_text(doc, "id", true, r->id, sizeof(r->id), bad) < 0)
        return TR_EINVAL;
    if (!valid_id(r->id))
        return invalid(bad, "id", "id uses lower-case letters, digits, '-', '_' and '.'");
    if (get_text(doc, "name", true, r->name, sizeof(r->name), bad) < 0 ||
        get_text(doc, "status", false, status, sizeof(status), bad) < 0 ||
        get_text(doc, "timezone", false, r->timezone, sizeof(r->timezone), bad) < 0 ||
        get_text(doc, "region", false, r->region, sizeof(r->region), bad) < 0)
        return TR_EINVAL;
    if (*status && strcmp(status, "online") && strcmp(status, "offline"))
        return invalid(bad, "status", "status is online or offline");
    r->online = strcmp(status, "online") == 0;
    if (!*r->timezone)
        snprintf(r->timezone, sizeof(r->timezone), "UTC");
    else if (!flow_tz_valid(r->timezone))
        return invalid(bad, "timezone", "timezone is an IANA time zone such as Europe/London");
    json_t *a = json_object_get(doc, "licenses");
    if (a && !json_is_array(a))
        return invalid(bad, "licenses", "licenses is a list");
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        char field[64];
        if (i >= FLOW_MAX_LIST)
            return invalid(bad, "licenses", "more than %d licenses", FLOW_MAX_LIST);
        snprintf(field, sizeof(field), "licenses[%zu].jurisdiction", i);
        const char *j = json_string_value(json_object_get(v, "jurisdiction"));
        if (!j || !valid_jurisdiction(j))
            return invalid(bad, field, "an ISO 3166-2 code such as US-TX");
        snprintf(field, sizeof(field), "licenses[%zu].expires", i);
        const char *e = json_string_value(json_object_get(v, "expires"));
        if (!e || !valid_date(e))
            return invalid(bad, field, "a date YYYY-MM-DD");
        snprintf(r->licenses[r->nlicenses].jurisdiction, 16, "%s", j);
        snprintf(r->licenses[r->nlicenses].expires, 11, "%s", e);
        r->nlicenses++;
    }
    a = json_object_get(doc, "privileges");
    if (a && !json_is_array(a))
        return invalid(bad, "privileges", "privileges is a list");
    json_array_foreach(a, i, v)
    {
        char field[64];
        if (i >= FLOW_MAX_LIST)
            return invalid(bad, "privileges", "more than %d privileges", FLOW_MAX_LIST);
        snprintf(field, sizeof(field), "privileges[%zu].site", i);
        const char *s = json_string_value(json_object_get(v, "site"));
        if (!s || !*s || strlen(s) >= FLOW_ID_MAX)
            return invalid(bad, field, "a site id");
        snprintf(field, sizeof(field), "privileges[%zu].expires", i);
        const char *e = json_string_value(json_object_get(v, "expires"));
        if (!e || !valid_date(e))
            return invalid(bad, field, "a date YYYY-MM-DD");
        snprintf(r->privileges[r->nprivileges].site, FLOW_ID_MAX, "%s", s);
        snprintf(r->privileges[r->nprivileges].expires, 11, "%s", e);
        r->nprivileges++;
    }
    if (parse_strings(doc, "subspecialties", r->subspecialties, &r->nsubspecialties, 31, bad) <
        0) {
        flow_reader_release(r); /* the entries before the bad one */
        return TR_EINVAL;
    }
    r->max_open = 10;
    json_t *m = json_object_get(doc, "max_open");
    if (m) {
        if (!json_is_integer(m) || json_integer_value(m) < 1 || json_integer_value(m) > 10000) {
            flow_reader_release(r);
            return invalid(bad, "max_open", "max_open is a number of reads from 1");
        }
        r->max_open = (int)json_integer_value(m);
    }
    r->rvu_target = 10.0;
    json_t *t = json_object_get(doc, "rvu_target");
    if (t) {
        if (!json_is_number(t) || json_number_value(t) <= 0 || json_number_value(t) > 1000) {
            flow_reader_release(r);
            return invalid(bad, "rvu_target", "rvu_target is RVUs per hour, more than 0");
        }
        r->rvu_target = json_number_value(t);
    }
    a = json_object_get(doc, "shifts");
    if (a && !json_is_array(a)) {
        flow_reader_release(r);
        return invalid(bad, "shifts", "shifts is a list");
    }
    json_array_foreach(a, i, v)
    {
        char field[64];
        snprintf(field, sizeof(field), "shifts[%zu]", i);
        if (i >= FLOW_MAX_LIST) {
            flow_reader_release(r);
            return invalid(bad, "shifts", "more than %d shifts", FLOW_MAX_LIST);
        }
        const char *start = json_string_value(json_object_get(v, "start"));
        if (start && strchr(start, 'T')) {
            /* An absolute interval. */
            const char *end = json_string_value(json_object_get(v, "end"));
            struct flow_interval *iv = &r->intervals[r->nintervals];
            if (parse_iso(start, &iv->start) < 0 || !end || parse_iso(end, &iv->end) < 0 ||
                iv->end <= iv->start) {
                flow_reader_release(r);
                return invalid(bad, field, "an interval has ISO 8601 start and end "
                                           "(\"2026-11-22T22:00:00Z\"), end after start");
            }
            r->nintervals++;
            continue;
        }
        if (parse_window(v, field, &r->shifts[r->nshifts], bad) < 0) {
            flow_reader_release(r);
            return TR_EINVAL;
        }
        r->nshifts++;
    }
    return 0;
}

int flow_contract_parse(json_t *doc, struct flow_contract *k, struct flow_invalid *bad)
{
    memset(k, 0, sizeof(*k));
    if (!json_is_object(doc))
        return invalid(bad, "", "a contract is a JSON object");
    if (get_text(doc, "site", true, k->site, sizeof(k->site), bad) < 0 ||
        get_text(doc, "id", false, k->id, sizeof(k->id), bad) < 0 ||
        get_text(doc, "currency", false, k->currency, sizeof(k->currency), bad) < 0)
        return TR_EINVAL;
    if (!*k->id)
        snprintf(k->id, sizeof(k->id), "%s", k->site);
    if (!valid_id(k->id))
        return invalid(bad, "id", "id uses lower-case letters, digits, '-', '_' and '.'");
    json_t *sla = json_object_get(doc, "sla_minutes");
    if (!json_is_object(sla))
        return invalid(bad, "sla_minutes",
                       "sla_minutes is required: {\"STAT\":30,\"URGENT\":60,\"ROUTINE\":1440}");
    for (int p = 0; p < PRIO_COUNT; p++) {
        json_t *m = json_object_get(sla, flow_priority_names[p]);
        char field[48];
        snprintf(field, sizeof(field), "sla_minutes.%s", flow_priority_names[p]);
        if (!json_is_integer(m) || json_integer_value(m) < 1 ||
            json_integer_value(m) > 60 * 24 * 365)
            return invalid(bad, field, "minutes from 1, for each of STAT, URGENT and ROUTINE");
        k->sla[p] = (unsigned)json_integer_value(m);
    }
    const char *key;
    json_t *v;
    json_object_foreach(sla, key, v)
    {
        if (flow_priority_parse(key) < 0 || (strcasecmp(key, "STAT") && strcasecmp(key, "URGENT") &&
                                             strcasecmp(key, "ROUTINE"))) {
            char field[96];
            snprintf(field, sizeof(field), "sla_minutes.%.60s", key);
            return invalid(bad, field, "priorities are STAT, URGENT and ROUTINE");
        }
    }
    if (k->sla[PRIO_STAT] > k->sla[PRIO_URGENT] || k->sla[PRIO_URGENT] > k->sla[PRIO_ROUTINE])
        return invalid(bad, "sla_minutes", "STAT must be due no later than URGENT, URGENT no "
                                           "later than ROUTINE");
    json_t *hours = json_object_get(doc, "hours");
    if (hours && !json_is_null(hours)) {
        if (parse_window(hours, "hours", &k->hours, bad) < 0)
            return TR_EINVAL;
        k->has_hours = true;
    }
    json_t *rules = json_object_get(doc, "subspecialty_rules");
    if (rules && !json_is_array(rules))
        return invalid(bad, "subspecialty_rules", "subspecialty_rules is a list");
    size_t i;
    json_array_foreach(rules, i, v)
    {
        char field[64];
        if (i >= FLOW_MAX_LIST)
            return invalid(bad, "subspecialty_rules", "more than %d rules", FLOW_MAX_LIST);
        struct flow_subspecialty_rule *r = &k->rules[k->nrules];
        snprintf(field, sizeof(field), "subspecialty_rules[%zu]", i);
        if (!json_is_object(v))
            return invalid(bad, field, "a rule is {\"modality\":\"MR\",\"body_part\":\"BRAIN\","
                                       "\"subspecialty\":\"neuro\"}");
        struct flow_invalid inner;
        if (get_text(v, "subspecialty", true, r->subspecialty, sizeof(r->subspecialty),
                     &inner) < 0 ||
            get_text(v, "modality", false, r->modality, sizeof(r->modality), &inner) < 0 ||
            get_text(v, "body_part", false, r->body_part, sizeof(r->body_part), &inner) < 0 ||
            get_text(v, "description", false, r->words, sizeof(r->words), &inner) < 0) {
            char f2[160];
            snprintf(f2, sizeof(f2), "%s.%s", field, inner.field);
            return invalid(bad, f2, "%s", inner.why);
        }
        k->nrules++;
    }
    json_t *price = json_object_get(doc, "price_per_read");
    if (price) {
        if (!json_is_number(price) || json_number_value(price) < 0)
            return invalid(bad, "price_per_read", "price_per_read is an amount, 0 or more");
        k->price_cents = (int64_t)(json_number_value(price) * 100 + 0.5);
    }
    return 0;
}

int flow_rule_parse(json_t *doc, struct flow_priority_rule *r, struct flow_invalid *bad)
{
    memset(r, 0, sizeof(*r));
    if (!json_is_object(doc))
        return invalid(bad, "", "a priority rule is a JSON object");
    char prio[16];
    if (get_text(doc, "priority", true, prio, sizeof(prio), bad) < 0)
        return TR_EINVAL;
    r->priority = flow_priority_parse(prio);
    if (r->priority < 0)
        return invalid(bad, "priority", "priority is STAT, URGENT or ROUTINE");
    if (get_text(doc, "modality", false, r->modality, sizeof(r->modality), bad) < 0 ||
        get_text(doc, "body_part", false, r->body_part, sizeof(r->body_part), bad) < 0)
        return TR_EINVAL;
    json_t *a = json_object_get(doc, "description_contains");
    if (a && !json_is_array(a))
        return invalid(bad, "description_contains", "a list of words or phrases");
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        char field[64];
        snprintf(field, sizeof(field), "description_contains[%zu]", i);
        if (i >= FLOW_MAX_LIST || !json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) >= 64)
            return invalid(bad, field, "a word or phrase of 1 to 63 characters");
        snprintf(r->words[r->nwords++], 64, "%s", json_string_value(v));
    }
    if (!r->nwords && !*r->modality && !*r->body_part)
        return invalid(bad, "description_contains",
                       "a rule needs description_contains, modality or body_part");
    return 0;
}

/* ---- the catalog -------------------------------------------------------------------------- */

/* Lookups by id: binary search over the sorted positions (1,000 sites and 500 readers are
 * looked up for every routing decision and claim), or a linear search without them. */
struct order_key {
    const char *base;
    size_t size;   /* of an element */
    size_t offset; /* of its id (a char array) */
};

static const char *id_at(const struct order_key *k, size_t i)
{
    return k->base + i * k->size + k->offset;
}

static const void *find_by_id(const struct order_key *k, size_t n, const size_t *order,
                              const char *id)
{
    if (!id)
        return NULL;
    if (!order) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(id_at(k, i), id) == 0)
                return id_at(k, i) - k->offset;
        }
        return NULL;
    }
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(id_at(k, order[mid]), id);
        if (cmp == 0)
            return id_at(k, order[mid]) - k->offset;
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct flow_site *flow_catalog_site(const struct flow_catalog *c, const char *id)
{
    struct order_key k = {(const char *)c->sites, sizeof(struct flow_site),
                          offsetof(struct flow_site, id)};
    return find_by_id(&k, c->nsites, c->site_order, id);
}

const struct flow_reader *flow_catalog_reader(const struct flow_catalog *c, const char *id)
{
    struct order_key k = {(const char *)c->readers, sizeof(struct flow_reader),
                          offsetof(struct flow_reader, id)};
    return find_by_id(&k, c->nreaders, c->reader_order, id);
}

const struct flow_contract *flow_catalog_contract(const struct flow_catalog *c, const char *site)
{
    struct order_key k = {(const char *)c->contracts, sizeof(struct flow_contract),
                          offsetof(struct flow_contract, site)};
    return find_by_id(&k, c->ncontracts, c->contract_order, site);
}

/* qsort has no context argument: the key being sorted, per thread. */
static _Thread_local const struct order_key *sorting;

static int cmp_order(const void *a, const void *b)
{
    return strcmp(id_at(sorting, *(const size_t *)a), id_at(sorting, *(const size_t *)b));
}

static size_t *sorted_positions(const struct order_key *k, size_t n)
{
    size_t *order = tr_calloc(n + 1, sizeof(*order));
    if (!order)
        return NULL;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    sorting = k;
    qsort(order, n, sizeof(*order), cmp_order);
    sorting = NULL;
    return order;
}

void flow_catalog_free(struct flow_catalog *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nsites; i++)
        flow_site_release(&c->sites[i]);
    for (size_t i = 0; i < c->nreaders; i++)
        flow_reader_release(&c->readers[i]);
    tr_free(c->site_order);
    tr_free(c->reader_order);
    tr_free(c->contract_order);
    tr_free(c->sites);
    tr_free(c->readers);
    tr_free(c->contracts);
    tr_free(c->rules);
    tr_free(c);
}

/* Load every document of a table and parse it with `parse` into an array of `size`-byte
 * structs. Documents were validated when stored; one that no longer parses (a newer
 * telerad wrote it) is skipped. */
static int load_table(struct db *db, const char *sql, size_t size,
                      int (*parse)(json_t *, void *, struct flow_invalid *), void **out,
                      size_t *count, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, sql, &st, err);
    if (rc)
        return rc;
    char *items = NULL;
    size_t n = 0, cap = 0;
    while ((rc = db_step(st, err)) == 1) {
        json_t *doc = json_loads(db_column_text(st, 1), 0, NULL);
        if (!doc)
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            char *p = tr_reallocarray(items, ncap, size);
            if (!p) {
                json_decref(doc);
                rc = tr_error_set(err, TR_ENOMEM, "out of memory");
                break;
            }
            items = p;
            cap = ncap;
        }
        struct flow_invalid bad;
        if (parse(doc, items + n * size, &bad) == 0) {
            /* Rules carry their row id. */
            if (size == sizeof(struct flow_priority_rule))
                ((struct flow_priority_rule *)(void *)(items + n * size))->id =
                    db_column_int64(st, 0);
            n++;
        }
        json_decref(doc);
    }
    db_reset(st);
    *out = items;
    *count = n;
    return rc < 0 ? rc : 0;
}

static int parse_site_v(json_t *d, void *o, struct flow_invalid *b) { return flow_site_parse(d, o, b); }
static int parse_reader_v(json_t *d, void *o, struct flow_invalid *b) { return flow_reader_parse(d, o, b); }
static int parse_contract_v(json_t *d, void *o, struct flow_invalid *b) { return flow_contract_parse(d, o, b); }
static int parse_rule_v(json_t *d, void *o, struct flow_invalid *b) { return flow_rule_parse(d, o, b); }

int flow_catalog_load(struct db *db, struct flow_catalog **out, struct tr_error *err)
{
    struct flow_catalog *c = tr_calloc(1, sizeof(*c));
    if (!c)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    void *p;
    int rc = load_table(db, "SELECT 0, doc FROM flow_sites ORDER BY id", sizeof(struct flow_site),
                        parse_site_v, &p, &c->nsites, err);
    c->sites = p;
    if (rc == 0) {
        rc = load_table(db, "SELECT 0, doc FROM flow_readers ORDER BY id",
                        sizeof(struct flow_reader), parse_reader_v, &p, &c->nreaders, err);
        c->readers = p;
    }
    if (rc == 0) {
        rc = load_table(db, "SELECT 0, doc FROM flow_contracts ORDER BY id",
                        sizeof(struct flow_contract), parse_contract_v, &p, &c->ncontracts, err);
        c->contracts = p;
    }
    if (rc == 0) {
        rc = load_table(db, "SELECT id, doc FROM flow_priority_rules ORDER BY id",
                        sizeof(struct flow_priority_rule), parse_rule_v, &p, &c->nrules, err);
        c->rules = p;
    }
    if (rc == 0) {
        struct order_key ks = {(const char *)c->sites, sizeof(struct flow_site),
                               offsetof(struct flow_site, id)};
        struct order_key kr = {(const char *)c->readers, sizeof(struct flow_reader),
                               offsetof(struct flow_reader, id)};
        struct order_key kc = {(const char *)c->contracts, sizeof(struct flow_contract),
                               offsetof(struct flow_contract, site)};
        c->site_order = sorted_positions(&ks, c->nsites);
        c->reader_order = sorted_positions(&kr, c->nreaders);
        c->contract_order = sorted_positions(&kc, c->ncontracts);
        if (!c->site_order || !c->reader_order || !c->contract_order)
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    if (rc) {
        flow_catalog_free(c);
        return rc;
    }
    atomic_init(&c->refs, 1);
    *out = c;
    return 0;
}
