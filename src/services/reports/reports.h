/*
 * reports.h - radiology reports and the delivery of results (issue 7, items 1-3).
 *
 * Reports. Each read has report versions: a draft (one at a time, edited freely), then signed
 * versions that never change again: preliminary, final, and addenda after the final. Only the
 * read's assignee signs, in their own name (an administrator cannot sign for a reader). A
 * report follows a template chosen by the exam (CT head, CT chest PE, CT abdomen/pelvis, MR
 * brain, XR chest, or a generic one) with the sections clinical information, technique,
 * comparison, findings and impression, and may flag a critical finding with its ACR category
 * (1: minutes, 2: hours, 3: days).
 *
 * Critical results. A critical finding opens a communication record that a user of the read's
 * site must acknowledge (who was told, how, when); one not acknowledged within the category's
 * time is escalated (a webhook event, the log, the read's history), again after each further
 * period, up to three times.
 *
 * Delivery. Signing queues the version in a persistent outbox, once per target: the archive
 * (a DICOM Basic Text SR and an Encapsulated PDF of the report, so that QIDO-RS and WADO-RS
 * show them), and the site's own systems as its "results" object names them: "hl7"
 * ("host:port": HL7 v2.5.1 ORU^R01 over MLLP, the PDF in an OBX of type ED), "fhir" (a base
 * URL: a transaction Bundle of ServiceRequest, ImagingStudy and DiagnosticReport) and "dicom"
 * ("AE@host:port": C-STORE of the SR and the PDF). Failed attempts are retried with backoff;
 * the outbox survives restarts; the FHIR resources are also readable under /fhir/.
 *
 * The service keeps its tables (component "reports") in the archive's database and changes
 * reads only through the workflow's functions (flow.h).
 *
 * Exported names start with rep_.
 */
#ifndef REP_REPORTS_H
#define REP_REPORTS_H

#include <stdbool.h>
#include <stdint.h>

#include "archive.h"
#include "error.h"
#include "flow.h"
#include "http.h"

struct rep_config {
    struct arc_archive *archive;
    struct flow *flow;
    const char *db_url;       /* default: the archive's index database */
    const char *organization; /* the reading group: MSH-4, the PDF's heading, the SR's
                                 Institution Name and Verifying Organization ("telerad") */
    const char *ae_title;     /* ours when C-STOREing results (TELERAD) */
    unsigned critical_ack[3]; /* seconds to acknowledge a critical result of ACR category
                                 1, 2, 3 (900, 14400, 259200) */
    unsigned retry_initial;   /* seconds before the first retry, doubled each time (5) */
    unsigned retry_max;       /* longest wait between retries (3600) */
    unsigned max_attempts;    /* failed attempts before a delivery is given up (50) */
    unsigned ack_timeout;     /* seconds to wait for an HL7 ACK or a FHIR answer (30) */
    unsigned tick_ms;         /* background pass period (1000; 0: no thread, call
                                 rep_tick yourself) */
    void (*log)(void *ctx, int level, const char *message); /* levels as scp.h (0 error ..) */
    void *log_ctx;
};

void rep_config_init(struct rep_config *c);

struct rep;

int rep_open(const struct rep_config *cfg, struct rep **out, struct tr_error *err);
void rep_close(struct rep *r);

/* The API: /api/v1/reads/{id}/report..., /api/v1/critical..., /api/v1/templates,
 * /api/v1/reports/{id}/pdf, /api/v1/deliveries..., and the FHIR resources under /fhir/. */
int rep_register_api(struct rep *r, struct web_server *s, struct tr_error *err);

/* One pass of the background work: due deliveries, critical results past their time.
 * Returns what was done or a negative error. */
int rep_tick(struct rep *r, int64_t now_ms, struct tr_error *err);

#endif
