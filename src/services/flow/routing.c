/*
 * routing.c - who may read what, and who should (issue: the routing engine).
 *
 * Eligible = available (online, or inside one of their shifts) and licensed for the site's
 * jurisdiction (license not expired) and privileged at the site (not expired) and holding
 * the subspecialty the site's contract requires for the exam and under their cap on open
 * reads. Among the eligible: the reader who already holds the patient's other unread studies,
 * else the least RVU-weighted load (hours of queued work: open RVUs / RVU target per hour),
 * then fewer open reads, then the id. Reads are routed most urgent first (priority, then least
 * slack), so STAT pre-empts.
 */
#include "common.h"
#include "flow_int.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <strings.h>
#include <time.h>

#include "json_util.h"

const char *const flow_verdict_text[] = {
    [V_ELIGIBLE] = "eligible",
    [V_UNAVAILABLE] = "unavailable",
    [V_NO_LICENSE] = "not licensed",
    [V_LICENSE_EXPIRED] = "license expired",
    [V_NO_PRIVILEGE] = "not privileged",
    [V_PRIVILEGE_EXPIRED] = "privileges expired",
    [V_SUBSPECIALTY] = "wrong subspecialty",
    [V_AT_CAP] = "at capacity",
};

/* Is `minute` of `weekday` inside the window? A window past midnight belongs to the day it
 * starts on. */
static bool in_window(const struct flow_window *w, int weekday, int minute)
{
    if (w->start < w->end)
        return (w->days & (1u << weekday)) && minute >= w->start && minute < w->end;
    /* Overnight (or 24 h when start == end): the start day's evening, the next morning. */
    int yesterday = (weekday + 6) % 7;
    return ((w->days & (1u << weekday)) && minute >= w->start) ||
           ((w->days & (1u << yesterday)) && minute < w->end);
}

bool flow_reader_available(const struct flow_reader *reader, int64_t now)
{
    if (reader->online)
        return true;
    for (unsigned i = 0; i < reader->nintervals; i++) {
        if (now >= reader->intervals[i].start && now < reader->intervals[i].end)
            return true;
    }
    if (!reader->nshifts)
        return false;
    struct flow_local l;
    if (flow_tz_local(reader->timezone, now, &l) < 0)
        return false;
    for (unsigned i = 0; i < reader->nshifts; i++) {
        if (in_window(&reader->shifts[i], l.weekday, l.minute))
            return true;
    }
    return false;
}

/* Upper-case words of `text` in `out` separated by single spaces, with a space at each end:
 * " CT HEAD W O CONTRAST ". */
static void words_of(const char *text, char *out, size_t size)
{
    size_t n = 0;
    if (size < 3)
        return;
    out[n++] = ' ';
    bool space = true;
    for (const char *p = text; *p && n + 2 < size; p++) {
        unsigned char c = (unsigned char)*p;
        if (isalnum(c) || c >= 0x80) {
            out[n++] = (char)toupper(c);
            space = false;
        } else if (!space) {
            out[n++] = ' ';
            space = true;
        }
    }
    if (!space)
        out[n++] = ' ';
    out[n] = '\0';
}

bool flow_words_match(const char *text, const char *phrase)
{
    char t[600], p[200];
    words_of(text, t, sizeof(t));
    words_of(phrase, p, sizeof(p));
    return strlen(p) > 2 && strstr(t, p) != NULL;
}

static bool modality_matches(const char *modalities, const char *want)
{
    if (!*want)
        return true;
    char copy[64];
    snprintf(copy, sizeof(copy), "%s", modalities);
    char *save = NULL;
    for (char *m = strtok_r(copy, "\\", &save); m; m = strtok_r(NULL, "\\", &save)) {
        if (strcasecmp(m, want) == 0)
            return true;
    }
    return false;
}

/* A body part given in a rule matches BodyPartExamined or a word of the description. */
static bool body_part_matches(const struct flow_read *read, const char *want)
{
    if (!*want)
        return true;
    return strcasecmp(read->body_part, want) == 0 || flow_words_match(read->description, want);
}

void flow_required_subspecialty(const struct flow_contract *k, const struct flow_read *read,
                                char *out, size_t size)
{
    out[0] = '\0';
    if (!k)
        return;
    for (unsigned i = 0; i < k->nrules; i++) {
        const struct flow_subspecialty_rule *r = &k->rules[i];
        if (modality_matches(read->modality, r->modality) && body_part_matches(read, r->body_part) &&
            (!*r->words || flow_words_match(read->description, r->words))) {
            snprintf(out, size, "%s", r->subspecialty);
            return;
        }
    }
}

void flow_load_prepare(const struct flow_reader *reader, int64_t now, struct flow_load *load)
{
    load->available = flow_reader_available(reader, now);
    flow_tz_date(reader->timezone, now, load->today);
    load->known = true;
}

/* The sentence explaining a verdict (what flow_judge puts in `detail`). */
static void reason_text(enum flow_verdict v, const struct flow_reader *reader,
                        const struct flow_site *site, const struct flow_read *read,
                        const struct flow_load *load, char *out, size_t size)
{
    switch (v) {
    case V_UNAVAILABLE: snprintf(out, size, "offline and outside every shift"); break;
    case V_NO_LICENSE: snprintf(out, size, "no license for %s", site->jurisdiction); break;
    case V_LICENSE_EXPIRED: snprintf(out, size, "license for %s expired", site->jurisdiction); break;
    case V_NO_PRIVILEGE: snprintf(out, size, "no privileges at %s", site->id); break;
    case V_PRIVILEGE_EXPIRED: snprintf(out, size, "privileges at %s expired", site->id); break;
    case V_SUBSPECIALTY: snprintf(out, size, "needs subspecialty %s", read->subspecialty); break;
    case V_AT_CAP:
        snprintf(out, size, "%d open reads, cap %d", load ? load->open : 0, reader->max_open);
        break;
    default: snprintf(out, size, "%s", ""); break;
    }
}

enum flow_verdict flow_judge(const struct flow_catalog *c, const struct flow_reader *reader,
                             const struct flow_site *site, const struct flow_read *read,
                             const struct flow_load *load, int64_t now, bool ignore_availability,
                             char *detail, size_t size)
{
    (void)c;
    enum flow_verdict v = V_ELIGIBLE;
    bool available = load && load->known ? load->available : flow_reader_available(reader, now);
    if (!ignore_availability && !available) {
        v = V_UNAVAILABLE;
        goto out;
    }
    /* Licenses and privileges are valid through their expiry date, in the reader's zone. */
    char today[11];
    if (load && load->known)
        memcpy(today, load->today, sizeof(today));
    else
        flow_tz_date(reader->timezone, now, today);
    bool licensed = false, expired = false;
    for (unsigned i = 0; i < reader->nlicenses; i++) {
        if (strcmp(reader->licenses[i].jurisdiction, site->jurisdiction) != 0)
            continue;
        if (strcmp(reader->licenses[i].expires, today) >= 0)
            licensed = true;
        else
            expired = true;
    }
    if (!licensed) {
        v = expired ? V_LICENSE_EXPIRED : V_NO_LICENSE;
        goto out;
    }
    bool privileged = false;
    expired = false;
    for (unsigned i = 0; i < reader->nprivileges; i++) {
        if (strcmp(reader->privileges[i].site, site->id) != 0)
            continue;
        if (strcmp(reader->privileges[i].expires, today) >= 0)
            privileged = true;
        else
            expired = true;
    }
    if (!privileged) {
        v = expired ? V_PRIVILEGE_EXPIRED : V_NO_PRIVILEGE;
        goto out;
    }
    if (read->subspecialty[0]) {
        bool has = false;
        for (unsigned i = 0; i < reader->nsubspecialties && !has; i++)
            has = strcasecmp(reader->subspecialties[i], read->subspecialty) == 0;
        if (!has) {
            v = V_SUBSPECIALTY;
            goto out;
        }
    }
    if (load && load->open >= reader->max_open)
        v = V_AT_CAP;
out:
    if (detail)
        reason_text(v, reader, site, read, load, detail, size);
    return v;
}

/* Hours of queued work: the lower, the more room. */
static double weighted_load(const struct flow_reader *r, const struct flow_load *l)
{
    return (double)l->mrvu / 1000.0 / (r->rvu_target > 0 ? r->rvu_target : 1.0);
}

/* The explanation, as compact JSON text (see flow_int.h). Written by hand: with 500 readers
 * it is ~50 KB per decision, and building it as a jansson tree and serializing that took most
 * of the decision's time (bench/route.py). */
static int explain(struct tr_buf *b, const struct flow_catalog *c, const struct flow_site *site,
                   const struct flow_read *read, const struct flow_load *loads,
                   const uint8_t *verdicts, int chosen, bool affinity, int64_t now)
{
    int rc = 0;
    char at[32];
    time_t t = (time_t)(now / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(at, sizeof(at), "%Y-%m-%dT%H:%M:%SZ", &tm);
    rc |= tr_buf_addf(b, "{\"decided_at\":\"%s\"", at);
    rc |= tr_buf_addf(b, ",\"priority\":\"%s\",\"jurisdiction\":", flow_priority_names[read->priority]);
    rc |= tr_json_append_string(b, site->jurisdiction, strlen(site->jurisdiction));
    if (read->subspecialty[0]) {
        rc |= tr_buf_adds(b, ",\"subspecialty\":");
        rc |= tr_json_append_string(b, read->subspecialty, strlen(read->subspecialty));
    }
    rc |= tr_buf_adds(b, ",\"chosen\":");
    if (chosen >= 0)
        rc |= tr_json_append_string(b, c->readers[chosen].id, strlen(c->readers[chosen].id));
    else
        rc |= tr_buf_adds(b, "null");
    rc |= tr_buf_addf(b, ",\"rule\":\"%s\",\"considered\":[",
                      chosen < 0  ? "no eligible reader: the read waits in the pool"
                      : affinity ? "holds this patient's other unread studies"
                                 : "least RVU-weighted load among the eligible");
    for (size_t i = 0; i < c->nreaders && rc == 0; i++) {
        const struct flow_reader *r = &c->readers[i];
        enum flow_verdict v = (enum flow_verdict)verdicts[i];
        /* Hours with two decimals, without floating-point formatting. */
        long long centi = llround(weighted_load(r, &loads[i]) * 100.0);
        rc |= tr_buf_adds(b, i ? ",{\"reader\":" : "{\"reader\":");
        rc |= tr_json_append_string(b, r->id, strlen(r->id));
        rc |= tr_buf_addf(b, ",\"verdict\":\"%s\",\"open_reads\":%d,\"queued_hours\":%lld.%02lld",
                          (int)i == chosen ? "chosen" : flow_verdict_text[v], loads[i].open,
                          centi / 100, centi % 100);
        if (v != V_ELIGIBLE) {
            char reason[256];
            reason_text(v, r, site, read, &loads[i], reason, sizeof(reason));
            rc |= tr_buf_adds(b, ",\"reason\":");
            rc |= tr_json_append_string(b, reason, strlen(reason));
        }
        rc |= tr_buf_addc(b, '}');
    }
    rc |= tr_buf_adds(b, "]}");
    return rc ? TR_ENOMEM : 0;
}

int flow_choose(const struct flow_catalog *c, const struct flow_read *read,
                const struct flow_load *loads, const char *affinity_reader, int64_t now,
                struct tr_buf *why)
{
    const struct flow_site *site = flow_catalog_site(c, read->site);
    if (!site)
        return -1;
    int best = -1, affinity = -1;
    double best_load = 0;
    uint8_t *verdicts = why ? tr_malloc(c->nreaders + 1) : NULL;
    for (size_t i = 0; i < c->nreaders; i++) {
        const struct flow_reader *r = &c->readers[i];
        enum flow_verdict v = flow_judge(c, r, site, read, &loads[i], now, false, NULL, 0);
        if (verdicts)
            verdicts[i] = (uint8_t)v;
        if (v != V_ELIGIBLE)
            continue;
        double wl = weighted_load(r, &loads[i]);
        if (affinity_reader && strcmp(affinity_reader, r->id) == 0)
            affinity = (int)i;
        /* Ties: fewer open reads, then the smaller id (explicitly: the catalog's order is the
         * database's collation, which differs between engines). */
        if (best < 0 || wl < best_load ||
            (wl == best_load && (loads[i].open < loads[best].open ||
                                 (loads[i].open == loads[best].open &&
                                  strcmp(r->id, c->readers[best].id) < 0)))) {
            best = (int)i;
            best_load = wl;
        }
    }
    int chosen = affinity >= 0 ? affinity : best;
    if (why && (!verdicts || explain(why, c, site, read, loads, verdicts, chosen, affinity >= 0,
                                     now) < 0)) {
        /* Out of memory: the decision stands, its explanation says so. */
        tr_buf_reset(why);
        tr_buf_adds(why, "{\"error\":\"the explanation could not be written (out of memory)\"}");
    }
    tr_free(verdicts);
    return chosen;
}
