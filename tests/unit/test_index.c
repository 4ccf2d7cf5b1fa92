/*
 * test_index.c - the archive index, on SQLite by default or on the engine named by
 * TELERAD_TEST_INDEX_URL (the test command runs it a second time on a real PostgreSQL):
 * patients per site, aggregates, every matching type, retrieval lists, group commit,
 * stability events, deletion.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "common.h"
#include "dcm.h"
#include "db.h"
#include "index.h"

static char url[1024];
static char tmpdir[64];

/* A fresh index for each test: a new SQLite file, or an emptied PostgreSQL database. */
static struct arc_index *open_index(void)
{
    const char *pg = getenv("TELERAD_TEST_INDEX_URL");
    if (pg && *pg) {
        snprintf(url, sizeof(url), "%s", pg);
        struct db *db;
        struct tr_error err = TR_ERROR_INIT;
        if (db_open(url, &db, &err) < 0)
            fail_msg("%s", err.message);
        db_exec(db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public", NULL);
        db_close(db);
    } else {
        static int n;
        snprintf(url, sizeof(url), "sqlite:%s/index-%d.sqlite", tmpdir, ++n);
    }
    struct arc_index_options o;
    arc_index_options_init(&o);
    o.url = url;
    o.stable_after = 5;
    struct arc_index *ix;
    struct tr_error err = TR_ERROR_INIT;
    if (arc_index_open(&o, &ix, &err) < 0)
        fail_msg("open %s: %s", url, err.message);
    return ix;
}

static void record(struct arc_record *r, const char *site, const char *patient, const char *name,
                   const char *study, const char *date, const char *series, const char *modality,
                   const char *sop, int number)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->site, sizeof(r->site), "%s", site);
    snprintf(r->patient_id, sizeof(r->patient_id), "%s", patient);
    snprintf(r->patient_name, sizeof(r->patient_name), "%s", name);
    snprintf(r->study_uid, sizeof(r->study_uid), "%s", study);
    snprintf(r->study_date, sizeof(r->study_date), "%s", date);
    snprintf(r->study_time, sizeof(r->study_time), "101500");
    snprintf(r->accession, sizeof(r->accession), "ACC-%s", study + strlen(study) - 1);
    snprintf(r->study_description, sizeof(r->study_description), "CT HEAD");
    snprintf(r->series_uid, sizeof(r->series_uid), "%s", series);
    snprintf(r->modality, sizeof(r->modality), "%s", modality);
    r->has_series_number = true;
    r->series_number = 1;
    snprintf(r->sop_uid, sizeof(r->sop_uid), "%s", sop);
    snprintf(r->sop_class, sizeof(r->sop_class), "1.2.840.10008.5.1.4.1.1.2");
    r->has_instance_number = true;
    r->instance_number = number;
    snprintf(r->transfer_syntax, sizeof(r->transfer_syntax), "1.2.840.10008.1.2.1");
    snprintf(r->object_key, sizeof(r->object_key), "k/%s/%s.dcm", study, sop);
    r->size = 1000;
    r->rows = r->columns = 512;
    r->bits_allocated = 16;
}

static void add(struct arc_index *ix, const struct arc_record *r)
{
    struct tr_error err = TR_ERROR_INIT;
    if (arc_index_add(ix, r, &err) < 0)
        fail_msg("add: %s", err.message);
}

/* Three studies: two sites with the same MRN, names in Latin and Cyrillic. */
static void populate(struct arc_index *ix)
{
    struct arc_record r;
    record(&r, "tx", "12345", "Doe^Jane", "1.2.1", "20261101", "1.2.1.1", "CT", "1.2.1.1.1", 1);
    add(ix, &r);
    record(&r, "tx", "12345", "Doe^Jane", "1.2.1", "20261101", "1.2.1.1", "CT", "1.2.1.1.2", 2);
    add(ix, &r);
    record(&r, "tx", "12345", "Doe^Jane", "1.2.1", "20261101", "1.2.1.2", "SR", "1.2.1.2.1", 1);
    add(ix, &r);
    record(&r, "gb", "12345", "Müller^Jürgen", "1.2.2", "20261115", "1.2.2.1", "MR", "1.2.2.1.1", 1);
    add(ix, &r);
    record(&r, "gb", "777", "Иванов^Иван", "1.2.3", "20250102", "1.2.3.1", "CR", "1.2.3.1.1", 1);
    add(ix, &r);
}

struct collected {
    int n;
    char values[32][128];
    uint32_t tag;
};

static int collect(void *ctx, const struct arc_match *m)
{
    struct collected *c = ctx;
    if (c->n < 32) {
        c->values[c->n][0] = '\0';
        dcm_dataset_get_string(m->attrs, c->tag, 0, c->values[c->n], sizeof(c->values[0]));
    }
    c->n++;
    return 0;
}

/* Run a query with keys given as "tag=value" strings; returns the number of matches. */
static int query(struct arc_index *ix, enum arc_level level, uint32_t collect_tag,
                 const char *const *sites, struct collected *out, ...)
{
    struct dcm_dataset *keys = dcm_dataset_new();
    va_list ap;
    va_start(ap, out);
    for (;;) {
        uint32_t tag = va_arg(ap, uint32_t);
        if (!tag)
            break;
        const char *value = va_arg(ap, const char *);
        enum dcm_vr vr = dcm_dict_vr(tag);
        if (*value)
            dcm_dataset_set_bytes(keys, tag, vr, value, strlen(value));
        else
            dcm_dataset_set_empty(keys, tag, vr);
    }
    va_end(ap);
    if (!dcm_dataset_get(keys, collect_tag))
        dcm_dataset_set_empty(keys, collect_tag, dcm_dict_vr(collect_tag));
    if (!dcm_dataset_get(keys, DCM_TAG_SpecificCharacterSet))
        dcm_dataset_set_string(keys, DCM_TAG_SpecificCharacterSet, DCM_VR_CS, "ISO_IR 192");
    struct arc_query q = {.level = level, .keys = keys, .sites = sites};
    memset(out, 0, sizeof(*out));
    out->tag = collect_tag;
    struct tr_error err = TR_ERROR_INIT;
    int n = arc_index_query(ix, &q, collect, out, &err);
    dcm_dataset_free(keys);
    if (n < 0)
        return n;
    assert_int_equal(n, out->n);
    return n;
}

static void test_schema(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    int v;
    assert_int_equal(arc_index_schema_version(ix, &v, NULL), 0);
    assert_int_equal(v, ARC_INDEX_SCHEMA_VERSION);
    arc_index_close(ix);
    /* Reopening an up-to-date index migrates nothing and keeps the data. */
    struct arc_index_options o;
    arc_index_options_init(&o);
    o.url = url;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(arc_index_open(&o, &ix, &err), 0);
    assert_int_equal(arc_index_schema_version(ix, &v, NULL), 0);
    assert_int_equal(v, ARC_INDEX_SCHEMA_VERSION);
    arc_index_close(ix);
}

static void test_patients_per_site_and_aggregates(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    populate(ix);
    struct arc_index_stats s;
    assert_int_equal(arc_index_stats(ix, &s, NULL), 0);
    /* MRN 12345 at two sites is two patients. */
    assert_int_equal(s.patients, 3);
    assert_int_equal(s.studies, 3);
    assert_int_equal(s.series, 4);
    assert_int_equal(s.instances, 5);
    struct collected c;
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080061, NULL, &c, 0x0020000D, "1.2.1", 0), 1);
    assert_string_equal(c.values[0], "CT");
    struct dcm_dataset *keys = dcm_dataset_new();
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, "1.2.1");
    dcm_dataset_set_empty(keys, 0x00080061, DCM_VR_CS);
    dcm_dataset_set_empty(keys, 0x00201206, DCM_VR_IS);
    dcm_dataset_set_empty(keys, 0x00201208, DCM_VR_IS);
    struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys};
    struct collected all = {.tag = 0x00201208};
    assert_int_equal(arc_index_query(ix, &q, collect, &all, NULL), 1);
    assert_string_equal(all.values[0], "3");
    dcm_dataset_free(keys);
    /* The same instance again (a resend) changes no count. */
    struct arc_record r;
    record(&r, "tx", "12345", "Doe^Jane", "1.2.1", "20261101", "1.2.1.1", "CT", "1.2.1.1.1", 1);
    add(ix, &r);
    assert_int_equal(arc_index_stats(ix, &s, NULL), 0);
    assert_int_equal(s.instances, 5);
    arc_index_close(ix);
}

static void test_matching(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    populate(ix);
    struct collected c;
    /* Single value, wildcard, case-insensitive person names (Latin and Cyrillic). */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "Doe^Jane", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "doe*", 0), 1);
    assert_string_equal(c.values[0], "Doe^Jane");
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "MÜLLER*", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "иванов*", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "?oe^J*", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "*", 0), 3);
    /* LIKE metacharacters in values are literal. */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, "Doe%", 0), 0);
    /* Date ranges. */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080020, NULL, &c, 0x00080020,
                           "20261101-20261130", 0), 2);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080020, NULL, &c, 0x00080020, "-20251231", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080020, NULL, &c, 0x00080020, "20261115-", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080020, NULL, &c, 0x00080020, "20261115", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080020, NULL, &c, 0x00080020, "2026111", 0),
                     TR_EINVAL);
    /* Time range with an upper bound of hour precision. */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080030, NULL, &c, 0x00080030, "09-10", 0), 3);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080030, NULL, &c, 0x00080030, "11-", 0), 0);
    /* List of UIDs. */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x0020000D, NULL, &c, 0x0020000D, "1.2.1\\1.2.3", 0),
                     2);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x0020000D, NULL, &c, 0x0020000D, "1.2.x", 0),
                     TR_EINVAL);
    /* ModalitiesInStudy. */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080061, NULL, &c, 0x00080061, "SR", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00080061, NULL, &c, 0x00080061, "MR\\CR", 0), 2);
    /* Series and image levels, with keys from the levels above. */
    assert_int_equal(query(ix, ARC_LEVEL_SERIES, 0x00080060, NULL, &c, 0x0020000D, "1.2.1", 0), 2);
    assert_int_equal(query(ix, ARC_LEVEL_SERIES, 0x00080060, NULL, &c, 0x00080060, "CT\\MR", 0), 2);
    assert_int_equal(query(ix, ARC_LEVEL_IMAGE, 0x00200013, NULL, &c, 0x0020000E, "1.2.1.1", 0), 2);
    assert_string_equal(c.values[0], "1");
    assert_string_equal(c.values[1], "2");
    assert_int_equal(query(ix, ARC_LEVEL_IMAGE, 0x00080018, NULL, &c, 0x00200013, "2", 0), 1);
    assert_int_equal(query(ix, ARC_LEVEL_PATIENT, 0x00100020, NULL, &c, 0x00100020, "12345", 0), 2);
    /* Component groups (alphabetic=ideographic=phonetic): a wildcard matches any group, a
     * pattern without a trailing '*' a whole group; a value without '*' the alphabetic group
     * or the whole name. */
    struct arc_record jp;
    record(&jp, "jp", "J1", "Yamada^Tarou=山田^太郎=やまだ^たろう", "1.2.4", "20261120", "1.2.4.1",
           "MR", "1.2.4.1.1", 1);
    add(ix, &jp);
    static const char *const groups[] = {"yamada*", "山田*", "やまだ*", "Yamada^Tar?u", "山田^太?",
                                         "やまだ^たろ?", "*太郎", "YAMADA^TAROU",
                                         "Yamada^Tarou=山田^太郎=やまだ^たろう"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(groups); i++) {
        if (query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, groups[i], 0) != 1)
            fail_msg("PatientName %s: %d matches, not 1", groups[i], c.n);
        assert_string_equal(c.values[0], "Yamada^Tarou=山田^太郎=やまだ^たろう");
    }
    static const char *const no_match[] = {"Yamada^Tar?", "山田", "太郎*", "山田^太郎=*x"};
    for (size_t i = 0; i < TR_ARRAY_SIZE(no_match); i++) {
        if (query(ix, ARC_LEVEL_STUDY, 0x00100010, NULL, &c, 0x00100010, no_match[i], 0) != 0)
            fail_msg("PatientName %s: %d matches, not 0", no_match[i], c.n);
    }
    arc_index_close(ix);
}

static void test_sites_and_retrieval(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    populate(ix);
    struct collected c;
    const char *const tx[] = {"tx", NULL}, *const none[] = {NULL};
    /* A site sees its own patients only, even with the same MRN. */
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, tx, &c, 0x00100020, "12345", 0), 1);
    assert_string_equal(c.values[0], "Doe^Jane");
    assert_int_equal(query(ix, ARC_LEVEL_STUDY, 0x00100010, none, &c, 0x00100020, "*", 0), 0);
    /* Retrieval lists at each level. */
    struct dcm_dataset *keys = dcm_dataset_new();
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, "1.2.1");
    dcm_dataset_set_uid(keys, DCM_TAG_SeriesInstanceUID, "9.9.9"); /* below the level: ignored */
    struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys};
    struct arc_instance_ref *refs;
    size_t n;
    assert_int_equal(arc_index_instances(ix, &q, &refs, &n, NULL), 0);
    assert_int_equal(n, 3);
    assert_string_equal(refs[0].object_key, "k/1.2.1/1.2.1.1.1.dcm");
    tr_free(refs);
    q.sites = (const char *const *)none;
    assert_int_equal(arc_index_instances(ix, &q, &refs, &n, NULL), 0);
    assert_int_equal(n, 0);
    tr_free(refs);
    dcm_dataset_free(keys);
    char key[300];
    assert_int_equal(arc_index_find_instance(ix, "gb", "1.2.2.1.1", key, sizeof(key), NULL), 0);
    assert_int_equal(arc_index_find_instance(ix, "tx", "1.2.2.1.1", key, sizeof(key), NULL),
                     TR_ENOTFOUND);
    arc_index_close(ix);
}

struct adder {
    struct arc_index *ix;
    int thread;
};

static void *add_many(void *arg)
{
    struct adder *ad = arg;
    struct arc_record *r = tr_malloc(sizeof(*r));
    for (int i = 0; i < 100; i++) {
        char study[32], series[40], sop[48];
        snprintf(study, sizeof(study), "2.%d", ad->thread);
        snprintf(series, sizeof(series), "2.%d.1", ad->thread);
        snprintf(sop, sizeof(sop), "2.%d.1.%d", ad->thread, i);
        record(r, "tx", "P", "Load^Test", study, "20261122", series, "CT", sop, i);
        if (arc_index_add(ad->ix, r, NULL) < 0)
            abort();
    }
    tr_free(r);
    return NULL;
}

static void test_group_commit(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    pthread_t t[8];
    struct adder ad[8];
    for (int i = 0; i < 8; i++) {
        ad[i] = (struct adder){ix, i};
        pthread_create(&t[i], NULL, add_many, &ad[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    struct arc_index_stats s;
    assert_int_equal(arc_index_stats(ix, &s, NULL), 0);
    assert_int_equal(s.instances, 800);
    assert_int_equal(s.studies, 8);
    assert_int_equal(s.patients, 1);
    arc_index_close(ix);
}

static void test_stability_and_deletion(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    populate(ix);
    int64_t now = (int64_t)time(NULL) * 1000;
    /* Not stable yet (stable_after = 5 s); stable 10 s later, once. */
    assert_int_equal(arc_index_mark_stable(ix, now, NULL), 0);
    assert_int_equal(arc_index_mark_stable(ix, now + 10000, NULL), 3);
    assert_int_equal(arc_index_mark_stable(ix, now + 20000, NULL), 0);
    struct arc_event *ev;
    size_t n;
    assert_int_equal(arc_index_events(ix, "study_stable", &ev, &n, 10, NULL), 0);
    assert_int_equal(n, 3);
    assert_int_equal(arc_index_consume_event(ix, ev[0].id, NULL), 0);
    tr_free(ev);
    assert_int_equal(arc_index_events(ix, "study_stable", &ev, &n, 10, NULL), 0);
    assert_int_equal(n, 2);
    tr_free(ev);
    /* A new instance makes its study unstable again, and stable later with a new event. */
    struct arc_record r;
    record(&r, "tx", "12345", "Doe^Jane", "1.2.1", "20261101", "1.2.1.1", "CT", "1.2.1.1.9", 9);
    r.received_at = now + 30000;
    add(ix, &r);
    assert_int_equal(arc_index_mark_stable(ix, now + 31000, NULL), 0);
    assert_int_equal(arc_index_mark_stable(ix, now + 40000, NULL), 1);
    /* Deletion returns the object keys and leaves no orphan rows. */
    char **keys;
    assert_int_equal(arc_index_delete_study(ix, NULL, "1.2.1", &keys, &n, NULL), 0);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++)
        tr_free(keys[i]);
    tr_free(keys);
    struct arc_index_stats s;
    assert_int_equal(arc_index_stats(ix, &s, NULL), 0);
    assert_int_equal(s.studies, 2);
    assert_int_equal(s.patients, 2);
    assert_int_equal(arc_index_delete_study(ix, NULL, "1.2.1", &keys, &n, NULL), TR_ENOTFOUND);
    /* Forgetting one object updates the counts and removes emptied levels. */
    assert_int_equal(arc_index_forget_object(ix, "k/1.2.3/1.2.3.1.1.dcm", NULL), 0);
    assert_int_equal(arc_index_stats(ix, &s, NULL), 0);
    assert_int_equal(s.studies, 1);
    assert_int_equal(s.instances, 1);
    arc_index_close(ix);
}

/* Several nodes on one database: markers racing (two indexes, as two processes would have,
 * two threads each) record one event per study, not one per marker; an event is taken by one
 * node at a time. On PostgreSQL this is the READ COMMITTED race of two nodes' timers. */
struct marker {
    struct arc_index *ix;
    int64_t now;
    pthread_barrier_t *start;
    int marked;
};

static void *mark_thread(void *arg)
{
    struct marker *m = arg;
    pthread_barrier_wait(m->start);
    for (int i = 0; i < 5; i++) {
        int n = arc_index_mark_stable(m->ix, m->now + i, NULL);
        if (n > 0)
            m->marked += n;
    }
    return NULL;
}

static void test_concurrent_markers(void **state)
{
    (void)state;
    struct arc_index *ix = open_index();
    struct arc_index_options o;
    arc_index_options_init(&o);
    o.url = url;
    o.stable_after = 5;
    struct arc_index *other;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(arc_index_open(&o, &other, &err), 0);
    enum { STUDIES = 300 }; /* more than one batch of the marker */
    struct arc_record r;
    for (int i = 0; i < STUDIES; i++) {
        char study[32], series[40], sop[48];
        snprintf(study, sizeof(study), "1.2.9.%d", i);
        snprintf(series, sizeof(series), "%s.1", study);
        snprintf(sop, sizeof(sop), "%s.1.1", study);
        record(&r, "tx", "555", "Race^Two", study, "20261122", series, "CT", sop, 1);
        add(i % 2 ? other : ix, &r);
    }
    int64_t now = (int64_t)time(NULL) * 1000 + 10000;
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 4);
    struct marker m[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        m[i] = (struct marker){i % 2 ? other : ix, now, &start, 0};
        pthread_create(&t[i], NULL, mark_thread, &m[i]);
    }
    int total = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        total += m[i].marked;
    }
    pthread_barrier_destroy(&start);
    assert_int_equal(total, STUDIES);
    struct arc_event *ev;
    size_t n;
    assert_int_equal(arc_index_events(ix, "study_stable", &ev, &n, 1000, NULL), 0);
    assert_int_equal(n, STUDIES);
    /* Taken once: listed no more; given back (until 0): listed again; consumed: not taken. */
    int64_t id = ev[0].id;
    tr_free(ev);
    assert_int_equal(arc_index_claim_event(ix, id, now, now + 60000, NULL), 1);
    assert_int_equal(arc_index_events(other, "study_stable", &ev, &n, 1000, NULL), 0);
    assert_int_equal(n, STUDIES - 1);
    tr_free(ev);
    assert_int_equal(arc_index_claim_event(other, id, now, 0, NULL), 1); /* same node id */
    assert_int_equal(arc_index_events(other, "study_stable", &ev, &n, 1000, NULL), 0);
    assert_int_equal(n, STUDIES);
    tr_free(ev);
    assert_int_equal(arc_index_consume_event(ix, id, NULL), 0);
    assert_int_equal(arc_index_claim_event(ix, id, now, now + 60000, NULL), 0);
    arc_index_close(other);
    arc_index_close(ix);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/telerad-index-XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema),
        cmocka_unit_test(test_patients_per_site_and_aggregates),
        cmocka_unit_test(test_matching),
        cmocka_unit_test(test_sites_and_retrieval),
        cmocka_unit_test(test_group_commit),
        cmocka_unit_test(test_stability_and_deletion),
        cmocka_unit_test(test_concurrent_markers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
