/*
 * metrics.c - Prometheus metrics (text format 0.0.4) at /metrics, computed from the database
 * at scrape time: every node of a cluster answers the same numbers.
 */
#include "common.h"
#include "flow_int.h"

#include <inttypes.h>
#include <stdio.h>

/* Turnaround buckets, seconds: 5 min .. 2 days. */
static const int64_t buckets[] = {300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800};

int flow_metrics(struct flow *f, struct tr_buf *out, struct tr_error *err)
{
    struct db *db;
    int rc = db_pool_acquire(f->pool, &db, err);
    if (rc)
        return rc;
    int64_t now = flow_now_ms();
    struct db_stmt *st;
    int64_t by_state[ST_COUNT] = {0};
    rc = db_prepare(db, "SELECT state, COUNT(*) FROM flow_reads GROUP BY state", &st, err);
    if (rc == 0) {
        while ((rc = db_step(st, err)) == 1) {
            int64_t s = db_column_int64(st, 0);
            if (s >= 0 && s < ST_COUNT)
                by_state[s] = db_column_int64(st, 1);
        }
        db_reset(st);
    }
    if (rc < 0)
        goto out;
    tr_buf_adds(out, "# HELP telerad_reads Reads by state.\n# TYPE telerad_reads gauge\n");
    for (int s = 0; s < ST_COUNT; s++)
        tr_buf_addf(out, "telerad_reads{state=\"%s\"} %" PRId64 "\n", flow_state_names[s],
                    by_state[s]);

    tr_buf_adds(out, "# HELP telerad_reads_overdue Open reads past their due time, by "
                     "priority.\n# TYPE telerad_reads_overdue gauge\n");
    int64_t overdue[PRIO_COUNT] = {0};
    if ((rc = db_prepare(db, "SELECT priority, COUNT(*) FROM flow_reads WHERE state < 3 AND "
                             "due_at < $1 GROUP BY priority",
                         &st, err)) == 0) {
        db_bind_int64(st, 1, now);
        while ((rc = db_step(st, err)) == 1) {
            int64_t p = db_column_int64(st, 0);
            if (p >= 0 && p < PRIO_COUNT)
                overdue[p] = db_column_int64(st, 1);
        }
        db_reset(st);
    }
    if (rc < 0)
        goto out;
    for (int p = 0; p < PRIO_COUNT; p++)
        tr_buf_addf(out, "telerad_reads_overdue{priority=\"%s\"} %" PRId64 "\n",
                    flow_priority_names[p], overdue[p]);

    /* Turnaround, arrival to final, by priority and site. */
    char sql[1400];
    size_t n = (size_t)snprintf(sql, sizeof(sql),
                                "SELECT priority, site, COUNT(*), SUM(final_at - received_at)");
    for (size_t i = 0; i < TR_ARRAY_SIZE(buckets); i++)
        n += (size_t)snprintf(sql + n, sizeof(sql) - n,
                              ", SUM(CASE WHEN final_at - received_at <= %" PRId64
                              " THEN 1 ELSE 0 END)",
                              buckets[i] * 1000);
    snprintf(sql + n, sizeof(sql) - n, " FROM flow_reads WHERE state = 4 AND final_at IS NOT "
                                       "NULL GROUP BY priority, site ORDER BY priority, site");
    tr_buf_adds(out, "# HELP telerad_read_turnaround_seconds Study arrival to final report.\n"
                     "# TYPE telerad_read_turnaround_seconds histogram\n");
    if ((rc = db_prepare_temp(db, sql, &st, err)) == 0) {
        while ((rc = db_step(st, err)) == 1) {
            int64_t p = db_column_int64(st, 0);
            const char *prio = p >= 0 && p < PRIO_COUNT ? flow_priority_names[p] : "ROUTINE";
            const char *site = db_column_text(st, 1);
            for (size_t i = 0; i < TR_ARRAY_SIZE(buckets); i++)
                tr_buf_addf(out,
                            "telerad_read_turnaround_seconds_bucket{priority=\"%s\",site=\"%s\","
                            "le=\"%" PRId64 "\"} %" PRId64 "\n",
                            prio, site, buckets[i], db_column_int64(st, 4 + (int)i));
            tr_buf_addf(out,
                        "telerad_read_turnaround_seconds_bucket{priority=\"%s\",site=\"%s\","
                        "le=\"+Inf\"} %" PRId64 "\n"
                        "telerad_read_turnaround_seconds_sum{priority=\"%s\",site=\"%s\"} %.3f\n"
                        "telerad_read_turnaround_seconds_count{priority=\"%s\",site=\"%s\"} "
                        "%" PRId64 "\n",
                        prio, site, db_column_int64(st, 2), prio, site,
                        (double)db_column_int64(st, 3) / 1000.0, prio, site,
                        db_column_int64(st, 2));
        }
        db_finalize(st);
    }
    if (rc < 0)
        goto out;

    struct arc_index_stats as;
    if (arc_index_stats(arc_index(f->cfg.archive), &as, NULL) == 0)
        tr_buf_addf(out,
                    "# HELP telerad_archive_studies Studies in the archive.\n"
                    "# TYPE telerad_archive_studies gauge\ntelerad_archive_studies %" PRId64 "\n"
                    "# HELP telerad_archive_instances Instances in the archive.\n"
                    "# TYPE telerad_archive_instances gauge\ntelerad_archive_instances %" PRId64
                    "\n",
                    as.studies, as.instances);
    int64_t pending = 0;
    if (db_prepare(db, "SELECT COUNT(*) FROM flow_outbox WHERE delivered_at IS NULL", &st,
                   NULL) == 0) {
        if (db_step(st, NULL) == 1)
            pending = db_column_int64(st, 0);
        db_reset(st);
    }
    tr_buf_addf(out, "# HELP telerad_outbox_pending Events not yet delivered.\n"
                     "# TYPE telerad_outbox_pending gauge\ntelerad_outbox_pending %" PRId64 "\n",
                pending);
    rc = 0;
out:
    db_pool_release(f->pool, db);
    return rc < 0 ? rc : 0;
}
