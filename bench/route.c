/*
 * route.c - routing decision time at scale (issue 6: 1,000 sites, 500 readers, 100,000 open
 * reads, p99 < 10 ms per decision), for bench/route.py.
 *
 *   route [--db PATH] [--sites N] [--readers N] [--reads N] [--pool-share F]
 *         [--decisions N] [--passes N] [--seed S] [--no-seed]
 *
 * Seeds a workflow database (SQLite, the flow schema as `telerad serve` creates it) directly:
 * sites across 60 jurisdictions and their contracts, readers with licenses (some expired),
 * privileges at up to 64 sites each (some expired), subspecialties, shifts in their own time
 * zones, and the open reads (assigned and claimed ones spread over the readers privileged at
 * their site, the rest in the pool; patients with several studies). Then measures, with the
 * service's own functions:
 *
 *   decision   flow_affinity (the patient's other open reads: one indexed query) + flow_choose
 *              over every reader with the explanation text the router stores, for --decisions
 *              pool reads: p50, p99, max; also without the explanation;
 *   pass       flow_route_pending, as the background thread runs it: per-reader loads and
 *              availability, up to 200 pool reads by urgency, each decided and written
 *              (guarded assignment, history, explanation) - --passes times.
 *
 * Prints one line per measurement; "p99 ..." lines are what route.py reads.
 */
#include "common.h"
#include "flow_int.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of this thread: what a decision costs, without the time other processes on a
 * busy machine take from it. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static int rnd_int(int n) { return (int)(rnd() % (uint64_t)n); }
static double rnd_unit(void) { return (double)(rnd() >> 11) / 9007199254740992.0; }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t k = (size_t)ceil(p / 100.0 * (double)n);
    return v[k ? k - 1 : 0];
}

/* A positive number from an option, or exit. */
static int count_of(const char *text, const char *option)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < 1 || v > 100000000) {
        fprintf(stderr, "route: --%s takes a number from 1\n", option);
        exit(2);
    }
    return (int)v;
}

static void die(const char *what, const struct tr_error *err)
{
    fprintf(stderr, "route: %s: %s\n", what, err && err->message[0] ? err->message : "failed");
    exit(1);
}

/* 60 jurisdictions, each with a time zone. */
static const struct {
    const char *code, *zone;
} places[] = {
    {"US-AL", "America/Chicago"},   {"US-AK", "America/Anchorage"}, {"US-AZ", "America/Phoenix"},
    {"US-AR", "America/Chicago"},   {"US-CA", "America/Los_Angeles"}, {"US-CO", "America/Denver"},
    {"US-CT", "America/New_York"},  {"US-DE", "America/New_York"},  {"US-FL", "America/New_York"},
    {"US-GA", "America/New_York"},  {"US-HI", "Pacific/Honolulu"},  {"US-ID", "America/Boise"},
    {"US-IL", "America/Chicago"},   {"US-IN", "America/Indiana/Indianapolis"},
    {"US-IA", "America/Chicago"},   {"US-KS", "America/Chicago"},   {"US-KY", "America/New_York"},
    {"US-LA", "America/Chicago"},   {"US-ME", "America/New_York"},  {"US-MD", "America/New_York"},
    {"US-MA", "America/New_York"},  {"US-MI", "America/Detroit"},   {"US-MN", "America/Chicago"},
    {"US-MS", "America/Chicago"},   {"US-MO", "America/Chicago"},   {"US-MT", "America/Denver"},
    {"US-NE", "America/Chicago"},   {"US-NV", "America/Los_Angeles"}, {"US-NH", "America/New_York"},
    {"US-NJ", "America/New_York"},  {"US-NM", "America/Denver"},    {"US-NY", "America/New_York"},
    {"US-NC", "America/New_York"},  {"US-ND", "America/Chicago"},   {"US-OH", "America/New_York"},
    {"US-OK", "America/Chicago"},   {"US-OR", "America/Los_Angeles"}, {"US-PA", "America/New_York"},
    {"US-RI", "America/New_York"},  {"US-SC", "America/New_York"},  {"US-SD", "America/Chicago"},
    {"US-TN", "America/Chicago"},   {"US-TX", "America/Chicago"},   {"US-UT", "America/Denver"},
    {"US-VT", "America/New_York"},  {"US-VA", "America/New_York"},  {"US-WA", "America/Los_Angeles"},
    {"US-WV", "America/New_York"},  {"US-WI", "America/Chicago"},   {"US-WY", "America/Denver"},
    {"GB-ENG", "Europe/London"},    {"GB-SCT", "Europe/London"},    {"IE-D", "Europe/Dublin"},
    {"AU-NSW", "Australia/Sydney"}, {"AU-VIC", "Australia/Melbourne"}, {"CN-GD", "Asia/Shanghai"},
    {"IN-KA", "Asia/Kolkata"},      {"DE-BE", "Europe/Berlin"},     {"CA-ON", "America/Toronto"},
    {"SG-01", "Asia/Singapore"},
};
#define NPLACES ((int)TR_ARRAY_SIZE(places))

static const struct {
    const char *modality, *description;
    int64_t mrvu;
} exams[] = {
    {"CT", "CT HEAD WO CONTRAST", 1500},   {"CT", "CT ABDOMEN PELVIS W CONTRAST", 1500},
    {"CT", "CTA CHEST PE PROTOCOL", 1500}, {"MR", "MR BRAIN W WO CONTRAST", 2000},
    {"MR", "MR LUMBAR SPINE", 2000},       {"CR", "XR CHEST 2 VIEWS", 300},
    {"US", "US ABDOMEN COMPLETE", 700},    {"MG", "MAMMO SCREENING BILATERAL", 800},
};

struct options {
    const char *db;
    int sites, readers, reads, decisions, passes;
    double pool_share;
    bool seed;
};

static void exec_or_die(struct db_stmt *st, const char *what)
{
    struct tr_error err = TR_ERROR_INIT;
    if (db_step(st, &err) < 0)
        die(what, &err);
    db_reset(st);
}

/* site i is in jurisdiction site_place[i] */
static int *site_place;
/* reader r is privileged at priv[r][0..npriv[r]) */
static int (*priv)[FLOW_MAX_LIST];
static int *npriv;

static void seed(struct db *db, const struct options *o, int64_t now)
{
    struct tr_error err = TR_ERROR_INIT;
    char valid[11], expired[11], hhmm_a[8], hhmm_b[8];
    flow_tz_date("UTC", now + 400LL * 86400000, valid);
    flow_tz_date("UTC", now - 30LL * 86400000, expired);
    if (db_begin(db, &err) < 0)
        die("begin", &err);
    struct db_stmt *st;
    char doc[16384];
    site_place = calloc((size_t)o->sites, sizeof(int));
    priv = calloc((size_t)o->readers, sizeof(*priv));
    npriv = calloc((size_t)o->readers, sizeof(int));
    if (!site_place || !priv || !npriv)
        die("out of memory", NULL);
    /* Sites and contracts. */
    for (int i = 0; i < o->sites; i++) {
        int p = i % NPLACES;
        site_place[i] = p;
        char id[32];
        snprintf(id, sizeof(id), "site-%04d", i);
        snprintf(doc, sizeof(doc),
                 "{\"id\":\"%s\",\"name\":\"Hospital %d\",\"jurisdiction\":\"%s\",\"timezone\":"
                 "\"%s\",\"ae_titles\":[\"S%04d\",\"S%04dCT\"]}",
                 id, i, places[p].code, places[p].zone, i, i);
        if (db_prepare(db, "INSERT INTO flow_sites (id, doc, updated_at) VALUES ($1, $2, $3)", &st,
                       &err) < 0)
            die("prepare", &err);
        db_bind_text(st, 1, id);
        db_bind_text(st, 2, doc);
        db_bind_int64(st, 3, now);
        exec_or_die(st, "insert site");
        snprintf(doc, sizeof(doc),
                 "{\"id\":\"%s\",\"site\":\"%s\",\"sla_minutes\":{\"STAT\":30,\"URGENT\":60,"
                 "\"ROUTINE\":1440},\"subspecialty_rules\":[{\"modality\":\"MR\",\"body_part\":"
                 "\"BRAIN\",\"subspecialty\":\"neuro\"},{\"modality\":\"MG\",\"subspecialty\":"
                 "\"breast\"}],\"price_per_read\":40}",
                 id, id);
        if (db_prepare(db, "INSERT INTO flow_contracts (id, site, doc, updated_at) VALUES ($1, $1, "
                           "$2, $3)",
                       &st, &err) < 0)
            die("prepare", &err);
        db_bind_text(st, 1, id);
        db_bind_text(st, 2, doc);
        db_bind_int64(st, 3, now);
        exec_or_die(st, "insert contract");
    }
    /* Readers: licensed in 8-20 jurisdictions (one in ten of them expired), privileged at up to
     * 64 sites of those (one in ten expired), 1-3 subspecialties; 70 % online, the others on
     * weekly shifts in their own zone (about a third covering now). */
    static const char *const subs[] = {"neuro", "body", "chest", "msk", "breast", "peds"};
    for (int r = 0; r < o->readers; r++) {
        bool licensed[NPLACES] = {false};
        int nlic = 8 + rnd_int(13);
        size_t n = 0;
        const char *zone = places[rnd_int(NPLACES)].zone;
        n += (size_t)snprintf(doc + n, sizeof(doc) - n,
                              "{\"id\":\"reader-%03d\",\"name\":\"Reader %d\",\"timezone\":\"%s\","
                              "\"max_open\":%d,\"rvu_target\":%d,\"status\":\"%s\","
                              "\"licenses\":[",
                              r, r, zone, 400 + rnd_int(200), 8 + rnd_int(8),
                              rnd_unit() < 0.7 ? "online" : "offline");
        for (int k = 0; k < nlic; k++) {
            int p = rnd_int(NPLACES);
            if (licensed[p])
                continue;
            licensed[p] = true;
            n += (size_t)snprintf(doc + n, sizeof(doc) - n, "%s{\"jurisdiction\":\"%s\","
                                  "\"expires\":\"%s\"}",
                                  doc[n - 1] == '[' ? "" : ",", places[p].code,
                                  rnd_unit() < 0.1 ? expired : valid);
        }
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "],\"privileges\":[");
        for (int tries = 0; tries < 400 && npriv[r] < FLOW_MAX_LIST; tries++) {
            int s = rnd_int(o->sites);
            if (!licensed[site_place[s]] && rnd_unit() < 0.9)
                continue;
            bool dup = false;
            for (int k = 0; k < npriv[r]; k++)
                dup |= priv[r][k] == s;
            if (dup)
                continue;
            priv[r][npriv[r]++] = s;
            n += (size_t)snprintf(doc + n, sizeof(doc) - n,
                                  "%s{\"site\":\"site-%04d\",\"expires\":\"%s\"}",
                                  doc[n - 1] == '[' ? "" : ",", s,
                                  rnd_unit() < 0.1 ? expired : valid);
        }
        n += (size_t)snprintf(doc + n, sizeof(doc) - n, "],\"subspecialties\":[\"%s\"",
                              subs[rnd_int(6)]);
        if (rnd_unit() < 0.5)
            n += (size_t)snprintf(doc + n, sizeof(doc) - n, ",\"%s\"", subs[rnd_int(6)]);
        /* A shift: 8 hours, starting at a random hour of the day. */
        int start = rnd_int(24);
        snprintf(hhmm_a, sizeof(hhmm_a), "%02d:00", start);
        snprintf(hhmm_b, sizeof(hhmm_b), "%02d:00", (start + 8) % 24);
        snprintf(doc + n, sizeof(doc) - n,
                 "],\"shifts\":[{\"days\":[\"mon\",\"tue\",\"wed\",\"thu\",\"fri\",\"sat\","
                 "\"sun\"],\"start\":\"%s\",\"end\":\"%s\"}]}",
                 hhmm_a, hhmm_b);
        char id[32];
        snprintf(id, sizeof(id), "reader-%03d", r);
        if (db_prepare(db, "INSERT INTO flow_readers (id, doc, updated_at) VALUES ($1, $2, $3)",
                       &st, &err) < 0)
            die("prepare", &err);
        db_bind_text(st, 1, id);
        db_bind_text(st, 2, doc);
        db_bind_int64(st, 3, now);
        exec_or_die(st, "insert reader");
    }
    /* Readers privileged at each site, for the assigned reads. */
    int *site_readers_n = calloc((size_t)o->sites, sizeof(int));
    int **site_readers = calloc((size_t)o->sites, sizeof(int *));
    for (int s = 0; s < o->sites; s++)
        site_readers[s] = calloc((size_t)o->readers, sizeof(int));
    for (int r = 0; r < o->readers; r++) {
        for (int k = 0; k < npriv[r]; k++) {
            int s = priv[r][k];
            site_readers[s][site_readers_n[s]++] = r;
        }
    }
    /* Reads: patients with about two open studies each. */
    if (db_prepare(db,
                   "INSERT INTO flow_reads (site, study_uid, patient_id, accession, modality, "
                   "body_part, description, instances, priority, priority_source, subspecialty, "
                   "mrvu, state, assignee, received_at, stable_at, created_at, assigned_at, "
                   "due_at) VALUES ($1, $2, $3, $4, $5, '', $6, 100, $7, 'default', $8, $9, $10, "
                   "$11, $12, $12, $12, $13, $14)",
                   &st, &err) < 0)
        die("prepare", &err);
    int patients_per_site = o->reads / o->sites / 2 + 1;
    for (int i = 0; i < o->reads; i++) {
        int s = rnd_int(o->sites), e = rnd_int((int)TR_ARRAY_SIZE(exams));
        char site[32], uid[64], patient[32], accession[32];
        snprintf(site, sizeof(site), "site-%04d", s);
        snprintf(uid, sizeof(uid), "2.25.%d%09d", 1 + i / 1000000000, i);
        snprintf(patient, sizeof(patient), "P%04d-%05d", s, rnd_int(patients_per_site));
        snprintf(accession, sizeof(accession), "A%08d", i);
        int prio = rnd_unit() < 0.1 ? PRIO_STAT : rnd_unit() < 0.3 ? PRIO_URGENT : PRIO_ROUTINE;
        static const int sla[] = {30, 60, 1440};
        int64_t received = now - (int64_t)rnd_int(3600) * 1000;
        int state = 0;
        const char *assignee = NULL;
        char who[32];
        if (rnd_unit() >= o->pool_share && site_readers_n[s]) {
            state = rnd_unit() < 0.7 ? ST_ASSIGNED : ST_CLAIMED;
            snprintf(who, sizeof(who), "reader-%03d", site_readers[s][rnd_int(site_readers_n[s])]);
            assignee = who;
        }
        const char *sub = strcmp(exams[e].modality, "MR") == 0 && strstr(exams[e].description,
                                                                         "BRAIN")
                              ? "neuro"
                          : strcmp(exams[e].modality, "MG") == 0 ? "breast"
                                                                 : "";
        db_bind_text(st, 1, site);
        db_bind_text(st, 2, uid);
        db_bind_text(st, 3, patient);
        db_bind_text(st, 4, accession);
        db_bind_text(st, 5, exams[e].modality);
        db_bind_text(st, 6, exams[e].description);
        db_bind_int64(st, 7, prio);
        db_bind_text(st, 8, sub);
        db_bind_int64(st, 9, exams[e].mrvu);
        db_bind_int64(st, 10, state);
        db_bind_text(st, 11, assignee);
        db_bind_int64(st, 12, received);
        db_bind_int64(st, 13, state ? received : 0);
        db_bind_int64(st, 14, received + sla[prio] * 60000LL);
        exec_or_die(st, "insert read");
    }
    if (db_commit(db, &err) < 0)
        die("commit", &err);
    for (int s = 0; s < o->sites; s++)
        free(site_readers[s]);
    free(site_readers);
    free(site_readers_n);
}

int main(int argc, char **argv)
{
    struct options o = {.db = "bench/out/route.sqlite", .sites = 1000, .readers = 500,
                        .reads = 100000, .decisions = 2000, .passes = 5, .pool_share = 0.1,
                        .seed = true};
    static const struct option longopts[] = {
        {"db", required_argument, NULL, 'd'},        {"sites", required_argument, NULL, 's'},
        {"readers", required_argument, NULL, 'r'},   {"reads", required_argument, NULL, 'n'},
        {"decisions", required_argument, NULL, 'k'}, {"passes", required_argument, NULL, 'p'},
        {"seed", required_argument, NULL, 'S'},      {"pool-share", required_argument, NULL, 'P'},
        {"no-seed", no_argument, NULL, 'N'},         {NULL, 0, NULL, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'd': o.db = optarg; break;
        case 's': o.sites = count_of(optarg, "sites"); break;
        case 'r': o.readers = count_of(optarg, "readers"); break;
        case 'n': o.reads = count_of(optarg, "reads"); break;
        case 'k': o.decisions = count_of(optarg, "decisions"); break;
        case 'p': o.passes = count_of(optarg, "passes"); break;
        case 'S': rng_state ^= (uint64_t)strtoull(optarg, NULL, 10) * 0x9E3779B97F4A7C15ULL; break;
        case 'P': o.pool_share = strtod(optarg, NULL); break;
        case 'N': o.seed = false; break;
        default: fprintf(stderr, "usage: see bench/route.c\n"); return 2;
        }
    }
    char url[1200];
    snprintf(url, sizeof(url), "sqlite:%s", o.db);
    if (o.seed) {
        unlink(o.db);
        char side[1100];
        snprintf(side, sizeof(side), "%s-wal", o.db);
        unlink(side);
        snprintf(side, sizeof(side), "%s-shm", o.db);
        unlink(side);
    }
    struct flow_config cfg;
    flow_config_init(&cfg);
    cfg.db_url = url;
    cfg.tick_ms = 0; /* no background thread: passes run here */
    struct flow *f;
    struct tr_error err = TR_ERROR_INIT;
    if (flow_open(&cfg, &f, &err) < 0)
        die("flow_open", &err);
    int64_t now = flow_now_ms();
    struct db *db;
    if (db_pool_acquire(f->pool, &db, &err) < 0)
        die("db", &err);
    double t0 = now_ms();
    if (o.seed) {
        seed(db, &o, now);
        printf("seeded %d sites, %d readers, %d open reads in %.1f s\n", o.sites, o.readers,
               o.reads, (now_ms() - t0) / 1000);
    }
    flow_catalog_changed(f);
    t0 = now_ms();
    struct flow_catalog *cat = flow_catalog_get(f, &err);
    if (!cat)
        die("catalog", &err);
    printf("catalog load: %.1f ms (%zu sites, %zu readers, %zu contracts)\n", now_ms() - t0,
           cat->nsites, cat->nreaders, cat->ncontracts);

    /* The per-pass preparation: loads from the database, availability and local dates. */
    struct flow_load *loads = calloc(cat->nreaders + 1, sizeof(*loads));
    t0 = now_ms();
    if (flow_loads(db, cat, loads, &err) < 0)
        die("loads", &err);
    double t_loads = now_ms() - t0;
    t0 = now_ms();
    for (size_t i = 0; i < cat->nreaders; i++)
        flow_load_prepare(&cat->readers[i], now, &loads[i]);
    double t_prepare = now_ms() - t0;
    printf("per pass: loads (GROUP BY over the open reads) %.1f ms, availability and local dates "
           "of %zu readers %.1f ms\n",
           t_loads, cat->nreaders, t_prepare);

    /* Decisions on pool reads (read-only: nothing is written, loads do not change). */
    struct flow_read *pool = calloc((size_t)o.decisions, sizeof(*pool));
    size_t npool = 0;
    struct db_stmt *st;
    if (db_prepare(db, "SELECT " FLOW_READ_COLUMNS " FROM flow_reads WHERE state = 0 ORDER BY "
                       "priority, due_at LIMIT $1",
                   &st, &err) < 0)
        die("select", &err);
    db_bind_int64(st, 1, o.decisions);
    while (npool < (size_t)o.decisions && db_step(st, &err) == 1)
        flow_read_from_row(st, &pool[npool++]);
    db_reset(st);
    double *with = calloc(npool + 1, sizeof(double)), *without = calloc(npool + 1, sizeof(double)),
           *aff = calloc(npool + 1, sizeof(double)), *cpu = calloc(npool + 1, sizeof(double));
    size_t chosen = 0, affine = 0, text_bytes = 0;
    struct tr_buf why; /* the explanation, as the router stores it */
    tr_buf_init(&why, 64u << 20);
    /* Two more rounds of the same decisions: the best of three wall times of each decision
     * is its cost without the time a busy machine takes away (reported separately). */
    double *best = calloc(npool + 1, sizeof(double));
    for (int round = 1; round < 3; round++) {
        for (size_t i = 0; i < npool; i++) {
            char a[FLOW_ID_MAX];
            double s0 = now_ms();
            flow_affinity(db, &pool[i], a, sizeof(a));
            tr_buf_reset(&why);
            flow_choose(cat, &pool[i], loads, a[0] ? a : NULL, now, &why);
            double t = now_ms() - s0;
            if (round == 1 || t < best[i])
                best[i] = t;
        }
    }
    for (size_t i = 0; i < npool; i++) {
        char a[FLOW_ID_MAX];
        double c0 = cpu_ms();
        double s0 = now_ms();
        flow_affinity(db, &pool[i], a, sizeof(a));
        double s1 = now_ms();
        tr_buf_reset(&why);
        int k = flow_choose(cat, &pool[i], loads, a[0] ? a : NULL, now, &why);
        double s2 = now_ms();
        cpu[i] = cpu_ms() - c0;
        text_bytes += why.len;
        double s3 = now_ms();
        flow_choose(cat, &pool[i], loads, a[0] ? a : NULL, now, NULL);
        double s4 = now_ms();
        with[i] = s2 - s0;
        if (with[i] < best[i])
            best[i] = with[i];
        without[i] = (s1 - s0) + (s4 - s3);
        aff[i] = s1 - s0;
        chosen += k >= 0;
        affine += a[0] != '\0';
    }
    tr_buf_release(&why);
    qsort(with, npool, sizeof(double), cmp_double);
    qsort(without, npool, sizeof(double), cmp_double);
    qsort(aff, npool, sizeof(double), cmp_double);
    qsort(cpu, npool, sizeof(double), cmp_double);
    qsort(best, npool, sizeof(double), cmp_double);
    printf("decisions: %zu pool reads, %zu with an eligible reader, %zu with a patient's other "
           "open read; explanation %.1f KB on average\n",
           npool, chosen, affine, npool ? (double)text_bytes / (double)npool / 1024 : 0);
    printf("p99 decision %.3f ms (p50 %.3f, max %.3f): affinity lookup + flow_choose + "
           "explanation JSON\n",
           percentile(with, npool, 99), percentile(with, npool, 50), with[npool ? npool - 1 : 0]);
    printf("p99 decision-best-of-3 %.3f ms (p50 %.3f, max %.3f): each decision's best wall time "
           "of three rounds\n",
           percentile(best, npool, 99), percentile(best, npool, 50), best[npool ? npool - 1 : 0]);
    printf("p99 decision-cpu %.3f ms (p50 %.3f, max %.3f): the same in this thread's CPU time\n",
           percentile(cpu, npool, 99), percentile(cpu, npool, 50), cpu[npool ? npool - 1 : 0]);
    printf("p99 decision-no-explanation %.3f ms (p50 %.3f, max %.3f)\n",
           percentile(without, npool, 99), percentile(without, npool, 50),
           without[npool ? npool - 1 : 0]);
    printf("p99 affinity %.3f ms (p50 %.3f)\n", percentile(aff, npool, 99),
           percentile(aff, npool, 50));

    /* Full passes, as the background thread runs them (writes included). */
    double *pass = calloc((size_t)o.passes + 1, sizeof(double));
    int routed_total = 0;
    for (int p = 0; p < o.passes; p++) {
        double s0 = now_ms();
        int routed = flow_route_pending(f, flow_now_ms(), &err);
        pass[p] = now_ms() - s0;
        if (routed < 0)
            die("flow_route_pending", &err);
        routed_total += routed;
        printf("pass %d: %.1f ms, %d of up to 400 pool reads assigned\n", p + 1, pass[p], routed);
    }
    qsort(pass, (size_t)o.passes, sizeof(double), cmp_double);
    printf("p50 pass %.1f ms (max %.1f) for 400 decisions: %.2f ms per decision with its writes\n",
           percentile(pass, (size_t)o.passes, 50), pass[o.passes ? o.passes - 1 : 0],
           percentile(pass, (size_t)o.passes, 50) / 400.0);
    (void)routed_total;
    free(pass);
    free(with);
    free(without);
    free(aff);
    free(cpu);
    free(best);
    free(pool);
    free(loads);
    flow_catalog_put(cat);
    db_pool_release(f->pool, db);
    flow_close(f);
    free(site_place);
    free(priv);
    free(npriv);
    return 0;
}
