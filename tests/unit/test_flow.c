/*
 * test_flow.c - the workflow's pure parts (src/services/flow): validation of sites, readers,
 * contracts and priority rules (each error names its field), availability (online, weekly
 * shifts in the reader's zone across midnight and daylight-saving changes, absolute
 * intervals), the eligibility verdicts, the choice among eligible readers, subspecialty rules,
 * whole-word matching, and due times with covered hours.
 *
 * Times are fixed instants (no clock): 2026 daylight-saving changes are America/Chicago
 * 8 March and 1 November, Europe/London 29 March and 25 October.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common.h"
#include "flow_int.h"

/* "2026-11-22T10:30:00Z" -> ms since the epoch. */
static int64_t at(const char *iso)
{
    struct tm tm = {0};
    int y, mo, d, h, mi, s;
    if (sscanf(iso, "%d-%d-%dT%d:%d:%dZ", &y, &mo, &d, &h, &mi, &s) != 6)
        fail_msg("bad time %s", iso);
    tm.tm_year = y - 1900;
    tm.tm_mon = mo - 1;
    tm.tm_mday = d;
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    return (int64_t)timegm(&tm) * 1000;
}

static json_t *doc(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j)
        fail_msg("test JSON: %s: %s", e.text, text);
    return j;
}

/* ---- validation: each error names its field -------------------------------------------- */

static void expect_site_error(const char *text, const char *field)
{
    json_t *j = doc(text);
    struct flow_site s;
    struct flow_invalid bad = {{0}};
    int rc = flow_site_parse(j, &s, &bad);
    json_decref(j);
    if (rc == 0) {
        flow_site_release(&s);
        fail_msg("accepted: %s", text);
    }
    assert_int_equal(rc, TR_EINVAL);
    if (strcmp(bad.field, field) != 0)
        fail_msg("%s: field \"%s\" (%s), expected \"%s\"", text, bad.field, bad.why, field);
    assert_true(bad.why[0] != '\0');
}

static void expect_reader_error(const char *text, const char *field)
{
    json_t *j = doc(text);
    struct flow_reader r;
    struct flow_invalid bad = {{0}};
    int rc = flow_reader_parse(j, &r, &bad);
    json_decref(j);
    if (rc == 0) {
        flow_reader_release(&r);
        fail_msg("accepted: %s", text);
    }
    if (strcmp(bad.field, field) != 0)
        fail_msg("%s: field \"%s\" (%s), expected \"%s\"", text, bad.field, bad.why, field);
}

static void expect_contract_error(const char *text, const char *field)
{
    json_t *j = doc(text);
    struct flow_contract k;
    struct flow_invalid bad = {{0}};
    int rc = flow_contract_parse(j, &k, &bad);
    json_decref(j);
    if (rc == 0)
        fail_msg("accepted: %s", text);
    if (strcmp(bad.field, field) != 0)
        fail_msg("%s: field \"%s\" (%s), expected \"%s\"", text, bad.field, bad.why, field);
}

static void expect_rule_error(const char *text, const char *field)
{
    json_t *j = doc(text);
    struct flow_priority_rule r;
    struct flow_invalid bad = {{0}};
    int rc = flow_rule_parse(j, &r, &bad);
    json_decref(j);
    if (rc == 0)
        fail_msg("accepted: %s", text);
    if (strcmp(bad.field, field) != 0)
        fail_msg("%s: field \"%s\" (%s), expected \"%s\"", text, bad.field, bad.why, field);
}

static void test_site_validation(void **state)
{
    (void)state;
    json_t *j = doc("{\"id\":\"tx-general\",\"name\":\"TX General\",\"jurisdiction\":\"US-TX\","
                    "\"timezone\":\"America/Chicago\",\"ae_titles\":[\"TXGEN\",\"TXGEN_CT\"]}");
    struct flow_site s;
    struct flow_invalid bad;
    assert_int_equal(flow_site_parse(j, &s, &bad), 0);
    assert_string_equal(s.jurisdiction, "US-TX");
    assert_int_equal(s.nae, 2);
    assert_string_equal(s.ae_titles[1], "TXGEN_CT");
    flow_site_release(&s);
    json_decref(j);
    /* GB-ENG and CN-GD are fine too. */
    j = doc("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"GB-ENG\",\"timezone\":\"Europe/London\"}");
    assert_int_equal(flow_site_parse(j, &s, &bad), 0);
    flow_site_release(&s);
    json_decref(j);
    j = doc("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"CN-GD\",\"timezone\":\"Asia/Shanghai\"}");
    assert_int_equal(flow_site_parse(j, &s, &bad), 0);
    flow_site_release(&s);
    json_decref(j);

    expect_site_error("{\"name\":\"A\",\"jurisdiction\":\"US-TX\",\"timezone\":\"UTC\"}", "id");
    expect_site_error("{\"id\":\"Big Id\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"UTC\"}",
                      "id");
    expect_site_error("{\"id\":\"a\",\"jurisdiction\":\"US-TX\",\"timezone\":\"UTC\"}", "name");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"TX\",\"timezone\":\"UTC\"}",
                      "jurisdiction");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"us-tx\","
                      "\"timezone\":\"UTC\"}",
                      "jurisdiction");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TEXAS\","
                      "\"timezone\":\"UTC\"}",
                      "jurisdiction");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":7,\"timezone\":\"UTC\"}",
                      "jurisdiction");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"Mars/Olympus_Mons\"}",
                      "timezone");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"America/Chicag\"}",
                      "timezone");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"UTC\",\"ae_titles\":[\"OK\",\"BAD\\\\AE\"]}",
                      "ae_titles[1]");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"UTC\",\"ae_titles\":[\"SEVENTEEN_CHARS_X\"]}",
                      "ae_titles[0]");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"UTC\",\"ae_titles\":\"TXGEN\"}",
                      "ae_titles");
    expect_site_error("{\"id\":\"a\",\"name\":\"A\",\"jurisdiction\":\"US-TX\","
                      "\"timezone\":\"UTC\",\"results\":\"somewhere\"}",
                      "results");
}

static void test_reader_validation(void **state)
{
    (void)state;
    json_t *j = doc("{\"id\":\"dr-lee\",\"name\":\"Dr Lee\",\"status\":\"online\","
                    "\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2027-12-31\"}],"
                    "\"privileges\":[{\"site\":\"tx-general\",\"expires\":\"2028-02-29\"}],"
                    "\"subspecialties\":[\"neuro\"],\"max_open\":10,"
                    "\"shifts\":[{\"days\":[\"mon\",\"fri\"],\"start\":\"22:00\",\"end\":\"06:00\"},"
                    "{\"start\":\"2026-11-22T22:00:00Z\",\"end\":\"2026-11-23T02:00:00+01:00\"}]}");
    struct flow_reader r;
    struct flow_invalid bad;
    assert_int_equal(flow_reader_parse(j, &r, &bad), 0);
    assert_true(r.online);
    assert_string_equal(r.timezone, "UTC"); /* the default */
    assert_int_equal(r.nlicenses, 1);
    assert_int_equal(r.nprivileges, 1);
    assert_int_equal(r.nshifts, 1);
    assert_int_equal(r.shifts[0].days, 0x01 | 0x10);
    assert_int_equal(r.shifts[0].start, 22 * 60);
    assert_int_equal(r.shifts[0].end, 6 * 60);
    assert_int_equal(r.nintervals, 1);
    assert_int_equal(r.intervals[0].start, at("2026-11-22T22:00:00Z"));
    assert_int_equal(r.intervals[0].end, at("2026-11-23T01:00:00Z"));
    assert_int_equal(r.max_open, 10);
    flow_reader_release(&r);
    json_decref(j);

#define R(extra) "{\"id\":\"r\",\"name\":\"R\"" extra "}"
    expect_reader_error(R(",\"status\":\"busy\""), "status");
    expect_reader_error(R(",\"timezone\":\"Europe/Londres\""), "timezone");
    expect_reader_error(R(",\"licenses\":{}"), "licenses");
    expect_reader_error(R(",\"licenses\":[{\"jurisdiction\":\"USTX\",\"expires\":\"2027-01-01\"}]"),
                        "licenses[0].jurisdiction");
    expect_reader_error(R(",\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2027-01-01\"},"
                          "{\"jurisdiction\":\"GB-ENG\",\"expires\":\"2027-13-01\"}]"),
                        "licenses[1].expires");
    expect_reader_error(R(",\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2027-02-30\"}]"),
                        "licenses[0].expires");
    expect_reader_error(R(",\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2027-02-29\"}]"),
                        "licenses[0].expires"); /* 2027 is no leap year */
    expect_reader_error(R(",\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"31/12/2027\"}]"),
                        "licenses[0].expires");
    expect_reader_error(R(",\"licenses\":[{\"jurisdiction\":\"US-TX\"}]"), "licenses[0].expires");
    expect_reader_error(R(",\"privileges\":[{\"expires\":\"2027-01-01\"}]"), "privileges[0].site");
    expect_reader_error(R(",\"privileges\":[{\"site\":\"a\",\"expires\":\"2027-04-31\"}]"),
                        "privileges[0].expires");
    expect_reader_error(R(",\"subspecialties\":[\"neuro\",\"\"]"), "subspecialties[1]");
    expect_reader_error(R(",\"subspecialties\":[\"neuro\",7]"), "subspecialties[1]");
    expect_reader_error(R(",\"max_open\":0"), "max_open");
    expect_reader_error(R(",\"max_open\":\"ten\""), "max_open");
    expect_reader_error(R(",\"rvu_target\":-1"), "rvu_target");
    expect_reader_error(R(",\"shifts\":{}"), "shifts");
    expect_reader_error(R(",\"shifts\":[{\"start\":\"25:00\",\"end\":\"06:00\"}]"),
                        "shifts[0].start");
    expect_reader_error(R(",\"shifts\":[{\"start\":\"08:00\",\"end\":\"8pm\"}]"), "shifts[0].end");
    expect_reader_error(R(",\"shifts\":[{\"start\":\"08:00\",\"end\":\"18:00\"},"
                          "{\"days\":[\"funday\"],\"start\":\"08:00\",\"end\":\"18:00\"}]"),
                        "shifts[1].days");
    expect_reader_error(R(",\"shifts\":[{\"days\":[],\"start\":\"08:00\",\"end\":\"18:00\"}]"),
                        "shifts[0].days");
    expect_reader_error(R(",\"shifts\":[{\"start\":\"2026-11-23T02:00:00Z\","
                          "\"end\":\"2026-11-22T22:00:00Z\"}]"),
                        "shifts[0]"); /* an interval ending before it starts */
    expect_reader_error(R(",\"shifts\":[{\"start\":\"2026-11-22T22:00:00Z\"}]"), "shifts[0]");
#undef R
}

static void test_contract_and_rule_validation(void **state)
{
    (void)state;
    json_t *j = doc("{\"site\":\"tx-general\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,"
                    "\"ROUTINE\":1440},\"hours\":{\"days\":[\"mon\",\"tue\",\"wed\",\"thu\","
                    "\"fri\"],\"start\":\"08:00\",\"end\":\"18:00\"},\"subspecialty_rules\":["
                    "{\"modality\":\"MR\",\"body_part\":\"BRAIN\",\"subspecialty\":\"neuro\"}],"
                    "\"price_per_read\":45.5}");
    struct flow_contract k;
    struct flow_invalid bad;
    assert_int_equal(flow_contract_parse(j, &k, &bad), 0);
    assert_string_equal(k.id, "tx-general"); /* defaults to the site */
    assert_int_equal(k.sla[PRIO_STAT], 30);
    assert_int_equal(k.sla[PRIO_ROUTINE], 1440);
    assert_true(k.has_hours);
    assert_int_equal(k.hours.days, 0x1F);
    assert_int_equal(k.nrules, 1);
    assert_int_equal(k.price_cents, 4550);
    json_decref(j);
    /* Equal minutes are in order. */
    j = doc("{\"site\":\"a\",\"sla_minutes\":{\"STAT\":60,\"URGENT\":60,\"ROUTINE\":60}}");
    assert_int_equal(flow_contract_parse(j, &k, &bad), 0);
    json_decref(j);

#define SLA(s, u, r) "\"sla_minutes\":{\"STAT\":" #s ",\"URGENT\":" #u ",\"ROUTINE\":" #r "}"
    expect_contract_error("{" SLA(30, 60, 1440) "}", "site");
    expect_contract_error("{\"site\":\"a\"}", "sla_minutes");
    expect_contract_error("{\"site\":\"a\"," SLA(90, 60, 1440) "}", "sla_minutes");
    expect_contract_error("{\"site\":\"a\"," SLA(30, 2000, 1440) "}", "sla_minutes");
    expect_contract_error("{\"site\":\"a\"," SLA(0, 60, 1440) "}", "sla_minutes.STAT");
    expect_contract_error("{\"site\":\"a\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60}}",
                          "sla_minutes.ROUTINE");
    expect_contract_error("{\"site\":\"a\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":\"1h\","
                          "\"ROUTINE\":90}}",
                          "sla_minutes.URGENT");
    expect_contract_error("{\"site\":\"a\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,"
                          "\"ROUTINE\":90,\"EMERGENCY\":5}}",
                          "sla_minutes.EMERGENCY");
    expect_contract_error("{\"site\":\"a\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,"
                          "\"ROUTINE\":90,\"ASAP\":45}}",
                          "sla_minutes.ASAP"); /* a synonym is not a key of its own */
    expect_contract_error("{\"site\":\"a\"," SLA(30, 60, 1440) ",\"hours\":{\"start\":\"8\","
                          "\"end\":\"18:00\"}}",
                          "hours.start");
    expect_contract_error("{\"site\":\"a\"," SLA(30, 60, 1440) ",\"hours\":{\"days\":[\"xyz\"],"
                          "\"start\":\"08:00\",\"end\":\"18:00\"}}",
                          "hours.days");
    expect_contract_error("{\"site\":\"a\"," SLA(30, 60, 1440) ",\"subspecialty_rules\":"
                          "[{\"modality\":\"MR\"}]}",
                          "subspecialty_rules[0].subspecialty");
    expect_contract_error("{\"site\":\"a\"," SLA(30, 60, 1440) ",\"subspecialty_rules\":"
                          "[{\"subspecialty\":\"neuro\"},\"MR\"]}",
                          "subspecialty_rules[1]");
    expect_contract_error("{\"site\":\"a\"," SLA(30, 60, 1440) ",\"price_per_read\":-1}",
                          "price_per_read");
#undef SLA

    struct flow_priority_rule rule;
    j = doc("{\"priority\":\"ASAP\",\"description_contains\":[\"CODE STROKE\"]}");
    assert_int_equal(flow_rule_parse(j, &rule, &bad), 0);
    assert_int_equal(rule.priority, PRIO_URGENT);
    json_decref(j);
    expect_rule_error("{\"description_contains\":[\"PE\"]}", "priority");
    expect_rule_error("{\"priority\":\"SOON\",\"description_contains\":[\"PE\"]}", "priority");
    expect_rule_error("{\"priority\":\"STAT\",\"description_contains\":[\"PE\",\"\"]}",
                      "description_contains[1]");
    expect_rule_error("{\"priority\":\"STAT\"}", "description_contains");
}

/* ---- availability ------------------------------------------------------------------------ */

static struct flow_reader *reader_of(const char *text)
{
    static struct flow_reader readers[16];
    static unsigned next;
    struct flow_reader *r = &readers[next++ % 16];
    flow_reader_release(r);
    json_t *j = doc(text);
    struct flow_invalid bad;
    if (flow_reader_parse(j, r, &bad) != 0)
        fail_msg("reader: %s: %s (%s)", bad.field, bad.why, text);
    json_decref(j);
    return r;
}

static void test_availability_shifts(void **state)
{
    (void)state;
    /* Online: always. Offline without shifts: never. */
    assert_true(flow_reader_available(reader_of("{\"id\":\"a\",\"name\":\"A\",\"status\":"
                                                "\"online\"}"),
                                      at("2026-11-22T03:00:00Z")));
    assert_false(flow_reader_available(reader_of("{\"id\":\"a\",\"name\":\"A\"}"),
                                       at("2026-11-22T03:00:00Z")));

    /* Weekday hours in Chicago (UTC-6 in November): Friday 08:00-18:00 local is 14:00-24:00Z. */
    const struct flow_reader *day = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"status\":\"offline\",\"timezone\":\"America/Chicago\","
        "\"shifts\":[{\"days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"],\"start\":\"08:00\","
        "\"end\":\"18:00\"}]}");
    assert_false(flow_reader_available(day, at("2026-11-20T13:59:00Z")));
    assert_true(flow_reader_available(day, at("2026-11-20T14:00:00Z")));
    assert_true(flow_reader_available(day, at("2026-11-20T23:59:00Z")));
    assert_false(flow_reader_available(day, at("2026-11-21T00:00:00Z"))); /* Fri 18:00 */
    assert_false(flow_reader_available(day, at("2026-11-21T15:00:00Z"))); /* Saturday */

    /* Overnight 22:00-06:00 starting Friday: Friday 22:00 to Saturday 06:00 local, and not
     * Friday morning (the Thursday night shift does not exist). */
    const struct flow_reader *night = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"timezone\":\"America/Chicago\",\"shifts\":[{\"days\":"
        "[\"fri\"],\"start\":\"22:00\",\"end\":\"06:00\"}]}");
    assert_false(flow_reader_available(night, at("2026-11-20T11:00:00Z"))); /* Fri 05:00 */
    assert_false(flow_reader_available(night, at("2026-11-21T03:59:00Z"))); /* Fri 21:59 */
    assert_true(flow_reader_available(night, at("2026-11-21T04:00:00Z")));  /* Fri 22:00 */
    assert_true(flow_reader_available(night, at("2026-11-21T06:00:00Z")));  /* Sat 00:00 */
    assert_true(flow_reader_available(night, at("2026-11-21T11:59:00Z")));  /* Sat 05:59 */
    assert_false(flow_reader_available(night, at("2026-11-21T12:00:00Z"))); /* Sat 06:00 */

    /* Across the fall-back change in Chicago: Saturday 31 October 22:00 CDT (03:00Z) to
     * Sunday 1 November 06:00 CST (12:00Z), nine hours of wall time. A fixed offset would end
     * the shift at 11:00Z. */
    const struct flow_reader *fall = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"timezone\":\"America/Chicago\",\"shifts\":[{\"days\":"
        "[\"sat\"],\"start\":\"22:00\",\"end\":\"06:00\"}]}");
    assert_false(flow_reader_available(fall, at("2026-11-01T02:59:00Z")));
    assert_true(flow_reader_available(fall, at("2026-11-01T03:00:00Z")));
    assert_true(flow_reader_available(fall, at("2026-11-01T06:30:00Z"))); /* 01:30 CDT */
    assert_true(flow_reader_available(fall, at("2026-11-01T07:30:00Z"))); /* 01:30 CST */
    assert_true(flow_reader_available(fall, at("2026-11-01T11:30:00Z"))); /* 05:30 CST */
    assert_false(flow_reader_available(fall, at("2026-11-01T12:00:00Z")));
    /* Across the spring-forward change: Saturday 7 March 22:00 CST (04:00Z) to Sunday 8 March
     * 06:00 CDT (11:00Z), seven hours. */
    assert_false(flow_reader_available(fall, at("2026-03-08T03:59:00Z")));
    assert_true(flow_reader_available(fall, at("2026-03-08T04:00:00Z")));
    assert_true(flow_reader_available(fall, at("2026-03-08T08:30:00Z"))); /* 03:30 CDT */
    assert_true(flow_reader_available(fall, at("2026-03-08T10:59:00Z")));
    assert_false(flow_reader_available(fall, at("2026-03-08T11:00:00Z")));
    assert_false(flow_reader_available(fall, at("2026-03-08T11:30:00Z")));

    /* London: Sunday 08:00-09:00 local is 07:00-08:00Z in summer time, 08:00-09:00Z after 25
     * October, and summer time again from 29 March. */
    const struct flow_reader *london = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"timezone\":\"Europe/London\",\"shifts\":[{\"days\":"
        "[\"sun\"],\"start\":\"08:00\",\"end\":\"09:00\"}]}");
    assert_true(flow_reader_available(london, at("2026-10-18T07:30:00Z")));
    assert_false(flow_reader_available(london, at("2026-10-18T08:30:00Z")));
    assert_false(flow_reader_available(london, at("2026-10-25T07:30:00Z")));
    assert_true(flow_reader_available(london, at("2026-10-25T08:30:00Z")));
    assert_false(flow_reader_available(london, at("2026-03-22T07:30:00Z")));
    assert_true(flow_reader_available(london, at("2026-03-22T08:30:00Z")));
    assert_true(flow_reader_available(london, at("2026-03-29T07:30:00Z")));
    assert_false(flow_reader_available(london, at("2026-03-29T08:30:00Z")));
    /* The night of the London change: Saturday 24 October 23:00 to Sunday 03:00 local, i.e.
     * 22:00Z (BST) to 03:00Z (GMT): five hours. */
    const struct flow_reader *ln = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"timezone\":\"Europe/London\",\"shifts\":[{\"days\":"
        "[\"sat\"],\"start\":\"23:00\",\"end\":\"03:00\"}]}");
    assert_false(flow_reader_available(ln, at("2026-10-24T21:59:00Z")));
    assert_true(flow_reader_available(ln, at("2026-10-24T22:00:00Z")));
    assert_true(flow_reader_available(ln, at("2026-10-25T02:59:00Z")));
    assert_false(flow_reader_available(ln, at("2026-10-25T03:00:00Z")));

    /* A whole day: 00:00-24:00. */
    const struct flow_reader *whole = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"timezone\":\"Asia/Shanghai\",\"shifts\":[{\"days\":"
        "[\"sun\"],\"start\":\"00:00\",\"end\":\"24:00\"}]}");
    assert_false(flow_reader_available(whole, at("2026-11-21T15:59:00Z"))); /* Sat 23:59 */
    assert_true(flow_reader_available(whole, at("2026-11-21T16:00:00Z")));
    assert_true(flow_reader_available(whole, at("2026-11-22T15:59:00Z")));
    assert_false(flow_reader_available(whole, at("2026-11-22T16:00:00Z")));
}

static void test_availability_intervals(void **state)
{
    (void)state;
    const struct flow_reader *r = reader_of(
        "{\"id\":\"a\",\"name\":\"A\",\"status\":\"offline\",\"shifts\":["
        "{\"start\":\"2026-11-22T22:00:00Z\",\"end\":\"2026-11-23T06:00:00Z\"},"
        "{\"start\":\"2026-12-24T18:00:00-06:00\",\"end\":\"2026-12-25T06:00:00-06:00\"}]}");
    assert_false(flow_reader_available(r, at("2026-11-22T21:59:59Z")));
    assert_true(flow_reader_available(r, at("2026-11-22T22:00:00Z")));
    assert_true(flow_reader_available(r, at("2026-11-23T05:59:59Z")));
    assert_false(flow_reader_available(r, at("2026-11-23T06:00:00Z")));
    assert_true(flow_reader_available(r, at("2026-12-25T00:00:00Z")));
    assert_true(flow_reader_available(r, at("2026-12-25T11:59:00Z")));
    assert_false(flow_reader_available(r, at("2026-12-25T12:00:00Z")));
    /* flow_load_prepare caches the same answer and the local date. */
    struct flow_load l = {0};
    flow_load_prepare(r, at("2026-11-22T23:00:00Z"), &l);
    assert_true(l.known);
    assert_true(l.available);
    assert_string_equal(l.today, "2026-11-22");
}

/* ---- eligibility ------------------------------------------------------------------------- */

static struct flow_site site_of(const char *id, const char *jurisdiction, const char *zone)
{
    struct flow_site s;
    memset(&s, 0, sizeof(s));
    snprintf(s.id, sizeof(s.id), "%s", id);
    snprintf(s.name, sizeof(s.name), "%s", id);
    snprintf(s.jurisdiction, sizeof(s.jurisdiction), "%s", jurisdiction);
    snprintf(s.timezone, sizeof(s.timezone), "%s", zone);
    return s;
}

static struct flow_read read_of(const char *site, const char *modality, const char *body_part,
                                const char *description, const char *subspecialty)
{
    struct flow_read r;
    memset(&r, 0, sizeof(r));
    r.id = 1;
    snprintf(r.site, sizeof(r.site), "%s", site);
    snprintf(r.modality, sizeof(r.modality), "%s", modality);
    snprintf(r.body_part, sizeof(r.body_part), "%s", body_part);
    snprintf(r.description, sizeof(r.description), "%s", description);
    snprintf(r.subspecialty, sizeof(r.subspecialty), "%s", subspecialty);
    snprintf(r.patient_id, sizeof(r.patient_id), "P1");
    r.priority = PRIO_ROUTINE;
    r.mrvu = 1500;
    return r;
}

static enum flow_verdict judge(const struct flow_reader *r, const struct flow_site *s,
                               const struct flow_read *rd, const struct flow_load *l,
                               const char *when, bool ignore_availability, char *detail)
{
    char d[256];
    enum flow_verdict v =
        flow_judge(NULL, r, s, rd, l, at(when), ignore_availability, d, sizeof(d));
    if (detail)
        snprintf(detail, 256, "%s", d);
    return v;
}

static void test_judge_verdicts(void **state)
{
    (void)state;
    struct flow_site tx = site_of("tx-general", "US-TX", "America/Chicago");
    struct flow_read rd = read_of("tx-general", "CT", "HEAD", "CT HEAD", "");
    char detail[256];

    /* Licensed through 22 November in the reader's zone (Chicago: UTC-6). */
    const struct flow_reader *lee = reader_of(
        "{\"id\":\"dr-lee\",\"name\":\"L\",\"status\":\"online\",\"timezone\":"
        "\"America/Chicago\",\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":"
        "\"2026-11-22\"}],\"privileges\":[{\"site\":\"tx-general\",\"expires\":\"2027-01-01\"}],"
        "\"max_open\":3}");
    assert_int_equal(judge(lee, &tx, &rd, NULL, "2026-11-23T05:59:00Z", false, detail),
                     V_ELIGIBLE);
    assert_string_equal(detail, "");
    assert_int_equal(judge(lee, &tx, &rd, NULL, "2026-11-23T06:00:00Z", false, detail),
                     V_LICENSE_EXPIRED);
    assert_string_equal(detail, "license for US-TX expired");
    /* The same instant is already the 23rd in Tokyo. */
    const struct flow_reader *tokyo = reader_of(
        "{\"id\":\"dr-sato\",\"name\":\"S\",\"status\":\"online\",\"timezone\":\"Asia/Tokyo\","
        "\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2026-11-22\"}],"
        "\"privileges\":[{\"site\":\"tx-general\",\"expires\":\"2027-01-01\"}]}");
    assert_int_equal(judge(tokyo, &tx, &rd, NULL, "2026-11-22T14:59:00Z", false, NULL),
                     V_ELIGIBLE);
    assert_int_equal(judge(tokyo, &tx, &rd, NULL, "2026-11-22T15:00:00Z", false, NULL),
                     V_LICENSE_EXPIRED);
    /* An expired license next to a valid one for the same jurisdiction: licensed. */
    const struct flow_reader *renewed = reader_of(
        "{\"id\":\"dr-r\",\"name\":\"R\",\"status\":\"online\",\"licenses\":["
        "{\"jurisdiction\":\"US-TX\",\"expires\":\"2020-01-01\"},{\"jurisdiction\":\"US-TX\","
        "\"expires\":\"2030-01-01\"}],\"privileges\":[{\"site\":\"tx-general\",\"expires\":"
        "\"2030-01-01\"}]}");
    assert_int_equal(judge(renewed, &tx, &rd, NULL, "2026-11-22T12:00:00Z", false, NULL),
                     V_ELIGIBLE);

    /* Licensed elsewhere only. */
    const struct flow_reader *uk = reader_of(
        "{\"id\":\"dr-uk\",\"name\":\"U\",\"status\":\"online\",\"licenses\":[{\"jurisdiction\":"
        "\"GB-ENG\",\"expires\":\"2030-01-01\"}],\"privileges\":[{\"site\":\"tx-general\","
        "\"expires\":\"2030-01-01\"}]}");
    assert_int_equal(judge(uk, &tx, &rd, NULL, "2026-11-22T12:00:00Z", false, detail),
                     V_NO_LICENSE);
    assert_string_equal(detail, "no license for US-TX");

    /* Privileges: missing, then expiring on the boundary day (London reader: UTC+0). */
    const struct flow_reader *nopriv = reader_of(
        "{\"id\":\"dr-np\",\"name\":\"N\",\"status\":\"online\",\"licenses\":[{\"jurisdiction\":"
        "\"US-TX\",\"expires\":\"2030-01-01\"}],\"privileges\":[{\"site\":\"other\",\"expires\":"
        "\"2030-01-01\"}]}");
    assert_int_equal(judge(nopriv, &tx, &rd, NULL, "2026-11-22T12:00:00Z", false, detail),
                     V_NO_PRIVILEGE);
    assert_string_equal(detail, "no privileges at tx-general");
    const struct flow_reader *priv = reader_of(
        "{\"id\":\"dr-p\",\"name\":\"P\",\"status\":\"online\",\"timezone\":\"Europe/London\","
        "\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2030-01-01\"}],\"privileges\":"
        "[{\"site\":\"tx-general\",\"expires\":\"2026-11-22\"}]}");
    assert_int_equal(judge(priv, &tx, &rd, NULL, "2026-11-22T23:59:59Z", false, NULL),
                     V_ELIGIBLE);
    assert_int_equal(judge(priv, &tx, &rd, NULL, "2026-11-23T00:00:00Z", false, detail),
                     V_PRIVILEGE_EXPIRED);
    assert_string_equal(detail, "privileges at tx-general expired");

    /* Subspecialty (case-insensitive). */
    struct flow_read neuro = read_of("tx-general", "MR", "BRAIN", "MR BRAIN", "neuro");
    assert_int_equal(judge(renewed, &tx, &neuro, NULL, "2026-11-22T12:00:00Z", false, detail),
                     V_SUBSPECIALTY);
    assert_string_equal(detail, "needs subspecialty neuro");
    const struct flow_reader *neuro_reader = reader_of(
        "{\"id\":\"dr-n\",\"name\":\"N\",\"status\":\"online\",\"subspecialties\":[\"body\","
        "\"Neuro\"],\"licenses\":[{\"jurisdiction\":\"US-TX\",\"expires\":\"2030-01-01\"}],"
        "\"privileges\":[{\"site\":\"tx-general\",\"expires\":\"2030-01-01\"}],\"max_open\":2}");
    assert_int_equal(judge(neuro_reader, &tx, &neuro, NULL, "2026-11-22T12:00:00Z", false, NULL),
                     V_ELIGIBLE);

    /* The cap: open reads at max_open. */
    struct flow_load load = {.open = 1};
    assert_int_equal(judge(neuro_reader, &tx, &neuro, &load, "2026-11-22T12:00:00Z", false, NULL),
                     V_ELIGIBLE);
    load.open = 2;
    assert_int_equal(judge(neuro_reader, &tx, &neuro, &load, "2026-11-22T12:00:00Z", false,
                           detail),
                     V_AT_CAP);
    assert_string_equal(detail, "2 open reads, cap 2");

    /* Unavailable: offline outside every shift; claims and reassignment ignore it. */
    const struct flow_reader *off = reader_of(
        "{\"id\":\"dr-off\",\"name\":\"O\",\"status\":\"offline\",\"licenses\":[{\"jurisdiction\":"
        "\"US-TX\",\"expires\":\"2030-01-01\"}],\"privileges\":[{\"site\":\"tx-general\","
        "\"expires\":\"2030-01-01\"}]}");
    assert_int_equal(judge(off, &tx, &rd, NULL, "2026-11-22T12:00:00Z", false, detail),
                     V_UNAVAILABLE);
    assert_string_equal(detail, "offline and outside every shift");
    assert_int_equal(judge(off, &tx, &rd, NULL, "2026-11-22T12:00:00Z", true, NULL), V_ELIGIBLE);
    /* ... never licensure. */
    assert_int_equal(judge(uk, &tx, &rd, NULL, "2026-11-22T12:00:00Z", true, NULL), V_NO_LICENSE);
    /* A prepared load's availability and date are used as they are. */
    struct flow_load prepared = {0};
    flow_load_prepare(lee, at("2026-11-23T05:00:00Z"), &prepared);
    assert_int_equal(judge(lee, &tx, &rd, &prepared, "2026-11-23T07:00:00Z", false, NULL),
                     V_ELIGIBLE);
}

/* ---- choosing ---------------------------------------------------------------------------- */

#define ELIGIBLE_TX(id, extra)                                                                  \
    "{\"id\":\"" id "\",\"name\":\"" id "\",\"status\":\"online\",\"licenses\":[{"            \
    "\"jurisdiction\":\"US-TX\",\"expires\":\"2030-01-01\"}],\"privileges\":[{\"site\":"      \
    "\"tx-general\",\"expires\":\"2030-01-01\"}]" extra "}"

struct choice_fixture {
    struct flow_catalog c;
    struct flow_site sites[1];
    struct flow_reader readers[4];
    struct flow_load loads[4];
};

static void fixture_reader(struct choice_fixture *f, size_t i, const char *text)
{
    json_t *j = doc(text);
    struct flow_invalid bad;
    if (flow_reader_parse(j, &f->readers[i], &bad) != 0)
        fail_msg("%s: %s", bad.field, bad.why);
    json_decref(j);
}

static void fixture_release(struct choice_fixture *f)
{
    for (size_t i = 0; i < f->c.nreaders; i++)
        flow_reader_release(&f->readers[i]);
}

static void fixture_init(struct choice_fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->sites[0] = site_of("tx-general", "US-TX", "America/Chicago");
    f->c.sites = f->sites;
    f->c.nsites = 1;
    f->c.readers = f->readers;
    f->c.nreaders = 4;
    /* Deliberately not in id order. */
    fixture_reader(f, 0, ELIGIBLE_TX("dr-d", ",\"rvu_target\":10"));
    fixture_reader(f, 1, ELIGIBLE_TX("dr-b", ",\"rvu_target\":20"));
    fixture_reader(f, 2, ELIGIBLE_TX("dr-c", ",\"rvu_target\":10,\"max_open\":5"));
    fixture_reader(f, 3, "{\"id\":\"dr-a\",\"name\":\"A\",\"status\":\"online\"}"); /* unlicensed */
}

/* The chosen reader's id; *why (may be NULL) gets the explanation, parsed. */
static const char *chosen(struct choice_fixture *f, const struct flow_read *rd,
                          const char *affinity, json_t **why)
{
    struct tr_buf text;
    tr_buf_init(&text, 1 << 20);
    int k = flow_choose(&f->c, rd, f->loads, affinity, at("2026-11-22T12:00:00Z"),
                        why ? &text : NULL);
    if (why) {
        json_error_t e;
        *why = json_loads(text.data ? text.data : "", 0, &e);
        if (!*why)
            fail_msg("the explanation is not JSON (%s): %s", e.text, text.data);
    }
    tr_buf_release(&text);
    return k < 0 ? "(none)" : f->readers[k].id;
}

static void test_choose(void **state)
{
    (void)state;
    struct choice_fixture f;
    fixture_init(&f);
    struct flow_read rd = read_of("tx-general", "CT", "HEAD", "CT HEAD", "");

    /* Least RVU-weighted load: dr-b has more RVUs but twice the target per hour. */
    f.loads[0] = (struct flow_load){.open = 1, .mrvu = 3000}; /* dr-d: 0.30 h */
    f.loads[1] = (struct flow_load){.open = 3, .mrvu = 4000}; /* dr-b: 0.20 h */
    f.loads[2] = (struct flow_load){.open = 2, .mrvu = 2500}; /* dr-c: 0.25 h */
    assert_string_equal(chosen(&f, &rd, NULL, NULL), "dr-b");
    /* Equal weighted load: fewer open reads. */
    f.loads[1].mrvu = 5000; /* dr-b: 0.25 h, 3 open; dr-c: 0.25 h, 2 open */
    assert_string_equal(chosen(&f, &rd, NULL, NULL), "dr-c");
    /* Equal on both: the smaller id, whatever the order of the catalog. */
    f.loads[1] = (struct flow_load){.open = 2, .mrvu = 5000};
    assert_string_equal(chosen(&f, &rd, NULL, NULL), "dr-b");
    f.loads[0] = (struct flow_load){.open = 0, .mrvu = 0};
    f.loads[1] = (struct flow_load){.open = 0, .mrvu = 0};
    f.loads[2] = (struct flow_load){.open = 0, .mrvu = 0};
    assert_string_equal(chosen(&f, &rd, NULL, NULL), "dr-b");

    /* Affinity: the reader holding the patient's other unread studies, even when busier ... */
    f.loads[0] = (struct flow_load){.open = 4, .mrvu = 8000};
    assert_string_equal(chosen(&f, &rd, "dr-d", NULL), "dr-d");
    /* ... but not when ineligible (dr-c at cap, dr-a unlicensed, a reader that is gone). */
    f.loads[2] = (struct flow_load){.open = 5, .mrvu = 1000};
    assert_string_equal(chosen(&f, &rd, "dr-c", NULL), "dr-b");
    assert_string_equal(chosen(&f, &rd, "dr-a", NULL), "dr-b");
    assert_string_equal(chosen(&f, &rd, "dr-gone", NULL), "dr-b");

    /* The explanation names every reader, its verdict and the reason. */
    json_t *why;
    assert_string_equal(chosen(&f, &rd, NULL, &why), "dr-b");
    assert_string_equal(json_string_value(json_object_get(why, "chosen")), "dr-b");
    assert_string_equal(json_string_value(json_object_get(why, "rule")),
                        "least RVU-weighted load among the eligible");
    assert_string_equal(json_string_value(json_object_get(why, "decided_at")),
                        "2026-11-22T12:00:00Z");
    assert_string_equal(json_string_value(json_object_get(why, "jurisdiction")), "US-TX");
    json_t *considered = json_object_get(why, "considered");
    assert_int_equal(json_array_size(considered), 4);
    size_t i;
    json_t *e;
    int seen = 0;
    json_array_foreach(considered, i, e)
    {
        const char *who = json_string_value(json_object_get(e, "reader"));
        const char *verdict = json_string_value(json_object_get(e, "verdict"));
        const char *reason = json_string_value(json_object_get(e, "reason"));
        if (strcmp(who, "dr-a") == 0) {
            assert_string_equal(verdict, "not licensed");
            assert_string_equal(reason, "no license for US-TX");
            seen++;
        } else if (strcmp(who, "dr-c") == 0) {
            assert_string_equal(verdict, "at capacity");
            assert_string_equal(reason, "5 open reads, cap 5");
            seen++;
        } else if (strcmp(who, "dr-b") == 0) {
            assert_string_equal(verdict, "chosen");
            assert_null(reason);
            assert_int_equal(json_integer_value(json_object_get(e, "open_reads")), 0);
            assert_true(json_number_value(json_object_get(e, "queued_hours")) == 0.0);
            seen++;
        } else {
            assert_string_equal(verdict, "eligible");
            /* dr-d: 8 RVUs at 10 per hour */
            assert_true(json_number_value(json_object_get(e, "queued_hours")) == 0.8);
            seen++;
        }
    }
    assert_int_equal(seen, 4);
    json_decref(why);

    /* Nobody eligible: -1 and the pool. */
    struct flow_read elsewhere = read_of("gone-site", "CT", "", "", "");
    assert_int_equal(flow_choose(&f.c, &elsewhere, f.loads, NULL, at("2026-11-22T12:00:00Z"),
                                 NULL),
                     -1);
    struct flow_read neuro = read_of("tx-general", "MR", "BRAIN", "", "neuro");
    assert_string_equal(chosen(&f, &neuro, NULL, &why), "(none)");
    assert_true(json_is_null(json_object_get(why, "chosen")));
    assert_string_equal(json_string_value(json_object_get(why, "subspecialty")), "neuro");
    json_decref(why);
    /* Affinity is named as the rule. */
    assert_string_equal(chosen(&f, &rd, "dr-d", &why), "dr-d");
    assert_string_equal(json_string_value(json_object_get(why, "rule")),
                        "holds this patient's other unread studies");
    json_decref(why);
    fixture_release(&f);
}

/* ---- subspecialty rules, words ----------------------------------------------------------- */

static void test_subspecialty_rules(void **state)
{
    (void)state;
    json_t *j = doc("{\"site\":\"tx-general\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,"
                    "\"ROUTINE\":1440},\"subspecialty_rules\":["
                    "{\"modality\":\"MR\",\"body_part\":\"BRAIN\",\"subspecialty\":\"neuro\"},"
                    "{\"modality\":\"MG\",\"subspecialty\":\"breast\"},"
                    "{\"description\":\"CTA HEAD\",\"subspecialty\":\"neuro\"},"
                    "{\"modality\":\"CT\",\"body_part\":\"CHEST\",\"subspecialty\":\"chest\"}]}");
    struct flow_contract k;
    struct flow_invalid bad;
    assert_int_equal(flow_contract_parse(j, &k, &bad), 0);
    json_decref(j);
    char out[32];
    struct flow_read r = read_of("tx-general", "MR", "BRAIN", "MR BRAIN W WO CONTRAST", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "neuro");
    /* Body part from the description's words when BodyPartExamined is empty or other. */
    r = read_of("tx-general", "MR", "", "MR BRAIN W WO CONTRAST", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "neuro");
    r = read_of("tx-general", "MR\\SR", "brain", "", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "neuro");
    /* MR of the knee, CT of the brain: no rule. */
    r = read_of("tx-general", "MR", "KNEE", "MR KNEE RIGHT", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "");
    r = read_of("tx-general", "CT", "BRAIN", "CT HEAD", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "");
    /* "BRAINSTEM" is not "BRAIN". */
    r = read_of("tx-general", "MR", "", "MR BRAINSTEM", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "");
    r = read_of("tx-general", "MG", "BREAST", "MAMMO SCREENING", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "breast");
    r = read_of("tx-general", "CT", "HEAD", "CTA HEAD AND NECK STROKE", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "neuro");
    r = read_of("tx-general", "CT", "CHEST", "CT CHEST PE PROTOCOL", "");
    flow_required_subspecialty(&k, &r, out, sizeof(out));
    assert_string_equal(out, "chest");
    /* No contract: nothing required. */
    flow_required_subspecialty(NULL, &r, out, sizeof(out));
    assert_string_equal(out, "");
}

static void test_words_match(void **state)
{
    (void)state;
    assert_true(flow_words_match("CTA CHEST PE PROTOCOL", "PE"));
    assert_false(flow_words_match("CT ABDOMEN PELVIS W CONTRAST", "PE"));
    assert_false(flow_words_match("PELVIS", "PE"));
    assert_true(flow_words_match("cta chest pe protocol", "PE"));
    assert_true(flow_words_match("CT CHEST (PE)", "pe"));
    assert_true(flow_words_match("CTA HEAD AND NECK STROKE", "CTA HEAD"));
    assert_true(flow_words_match("CTA  HEAD/NECK", "CTA HEAD"));
    assert_true(flow_words_match("CT-HEAD W/O", "CT HEAD"));
    assert_false(flow_words_match("CT HEADACHE PROTOCOL", "HEAD"));
    assert_false(flow_words_match("CTA NECK HEAD", "CTA HEAD"));
    assert_true(flow_words_match("CODE STROKE", "STROKE"));
    assert_false(flow_words_match("STROKES", "STROKE"));
    assert_false(flow_words_match("CT HEAD", ""));
    assert_false(flow_words_match("", "PE"));
}

/* ---- due times --------------------------------------------------------------------------- */

static void test_due_time(void **state)
{
    (void)state;
    static const unsigned defaults[PRIO_COUNT] = {60, 240, 2880};
    struct flow_site tx = site_of("tx-general", "US-TX", "America/Chicago");
    json_t *j = doc("{\"site\":\"tx-general\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,"
                    "\"ROUTINE\":1440}}");
    struct flow_contract k;
    struct flow_invalid bad;
    assert_int_equal(flow_contract_parse(j, &k, &bad), 0);
    json_decref(j);
    int64_t t = at("2026-11-21T15:07:30Z");
    /* Arrival + the SLA for the priority; without a contract, the defaults. */
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_STAT, t), t + 30 * 60000);
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_URGENT, t), t + 60 * 60000);
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_ROUTINE, t), t + 1440 * 60000);
    assert_int_equal(flow_due_time(defaults, NULL, &tx, PRIO_STAT, t), t + 60 * 60000);
    assert_int_equal(flow_due_time(defaults, NULL, &tx, PRIO_ROUTINE, t), t + 2880 * 60000);

    /* Covered hours Monday-Friday 08:00-18:00 Chicago (UTC-6): 14:00Z-24:00Z. */
    j = doc("{\"site\":\"tx-general\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,\"ROUTINE\":"
            "1440},\"hours\":{\"days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\"],\"start\":"
            "\"08:00\",\"end\":\"18:00\"}}");
    assert_int_equal(flow_contract_parse(j, &k, &bad), 0);
    json_decref(j);
    /* Inside: the clock runs from arrival. */
    t = at("2026-11-20T23:59:30Z"); /* Friday 17:59:30 */
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_STAT, t), t + 30 * 60000);
    /* Friday 18:00 and Saturday: the clock starts Monday 08:00 (14:00Z). */
    int64_t monday = at("2026-11-23T14:00:00Z");
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_STAT, at("2026-11-21T00:00:00Z")),
                     monday + 30 * 60000);
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_URGENT, at("2026-11-21T15:07:30Z")),
                     monday + 60 * 60000);
    /* Monday 07:59:30: the next covered minute is 08:00. */
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_STAT, at("2026-11-23T13:59:30Z")),
                     monday + 30 * 60000);
    /* Sunday 1 November, the day Chicago falls back: Monday 08:00 CST is 14:00Z. */
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_STAT, at("2026-11-01T05:00:00Z")),
                     at("2026-11-02T14:00:00Z") + 30 * 60000);
    /* In March, after the change to CDT (UTC-5), Monday 08:00 is 13:00Z. */
    assert_int_equal(flow_due_time(defaults, &k, &tx, PRIO_STAT, at("2026-03-08T12:00:00Z")),
                     at("2026-03-09T13:00:00Z") + 30 * 60000);

    /* Night coverage 20:00-08:00 every day in London (UTC+0 in November). */
    struct flow_site ln = site_of("london-royal", "GB-ENG", "Europe/London");
    j = doc("{\"site\":\"london-royal\",\"sla_minutes\":{\"STAT\":45,\"URGENT\":120,\"ROUTINE\":"
            "2880},\"hours\":{\"start\":\"20:00\",\"end\":\"08:00\"}}");
    assert_int_equal(flow_contract_parse(j, &k, &bad), 0);
    json_decref(j);
    t = at("2026-11-22T07:59:00Z");
    assert_int_equal(flow_due_time(defaults, &k, &ln, PRIO_STAT, t), t + 45 * 60000);
    assert_int_equal(flow_due_time(defaults, &k, &ln, PRIO_STAT, at("2026-11-22T12:00:00Z")),
                     at("2026-11-22T20:00:00Z") + 45 * 60000);
}

static void test_priority_names(void **state)
{
    (void)state;
    assert_int_equal(flow_priority_parse("STAT"), PRIO_STAT);
    assert_int_equal(flow_priority_parse("stat"), PRIO_STAT);
    assert_int_equal(flow_priority_parse("HIGH"), PRIO_URGENT);
    assert_int_equal(flow_priority_parse("ASAP"), PRIO_URGENT);
    assert_int_equal(flow_priority_parse("MEDIUM"), PRIO_ROUTINE);
    assert_int_equal(flow_priority_parse("LOW"), PRIO_ROUTINE);
    assert_int_equal(flow_priority_parse(""), -1);
    assert_int_equal(flow_priority_parse(NULL), -1);
    assert_int_equal(flow_state_parse("claimed"), ST_CLAIMED);
    assert_int_equal(flow_state_parse("done"), -1);
    assert_true(flow_tz_valid("America/Chicago"));
    assert_true(flow_tz_valid("UTC"));
    assert_false(flow_tz_valid("America/Chicag"));
    assert_false(flow_tz_valid(""));
    char date[11];
    flow_tz_date("Pacific/Kiritimati", at("2026-12-31T10:00:00Z"), date); /* UTC+14 */
    assert_string_equal(date, "2027-01-01");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_site_validation),
        cmocka_unit_test(test_reader_validation),
        cmocka_unit_test(test_contract_and_rule_validation),
        cmocka_unit_test(test_availability_shifts),
        cmocka_unit_test(test_availability_intervals),
        cmocka_unit_test(test_judge_verdicts),
        cmocka_unit_test(test_choose),
        cmocka_unit_test(test_subspecialty_rules),
        cmocka_unit_test(test_words_match),
        cmocka_unit_test(test_due_time),
        cmocka_unit_test(test_priority_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
