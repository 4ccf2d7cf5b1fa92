/*
 * orders.h - orders in over HL7 v2: ORM^O01 and OMI^O23 (new order, cancel, status change by
 * ORC-1), ADT^A08 (patient information update) and ADT^A40 (patient merge) from a client
 * site's systems, stored durably in table `orders` (schema component "orders", in the archive's
 * database) before the ACK, so that the workflow can give a read its order's priority when the
 * study arrives (orders_lookup), or raise it when the order comes after the images (on_order).
 *
 * Every message gets an ACK (HL7 v2.5.1 2.9.2, original acknowledgment mode), never silence:
 *   AA  stored (or nothing to do, e.g. an A08 for a patient without open orders);
 *   AE  the content is wrong: not HL7, a required field missing or unusable (MSA-3 and an ERR
 *       segment say which: ERR-2 the location, ERR-3 the HL7 table 0357 code, ERR-8 the text);
 *   AR  rejected whatever the content: an unknown sending facility (MSH-4), a message type or
 *       event we do not take, a processing ID other than P / T / D, a message over the size
 *       cap, or a failure of ours (the database) - the sender may retry later.
 * MSA-2 echoes MSH-10 (as sent, escapes and all). Nothing is stored unless the whole message
 * is (one transaction; invariant 6 of DESIGN.md).
 *
 * Fields used (docs/conformance.md, "HL7 v2", has the full table):
 *   site        MSH-4 (sending facility, HD.1, else HD.2) -> site_of(); MSH-3 is passed along
 *   accession   IPC-1 (OMI, IHE RAD-4), else OBR-3.1 / ORC-3.1 (filler order number: the
 *               radiology system's accession), else OBR-2.1 / ORC-2.1 (placer order number)
 *   patient     PID-3, first repetition with an ID: .1 the ID, .4 the assigning authority
 *               (HD.1, else HD.2); PID-5 (first repetition) the name, as DICOM PN
 *               Family^Given^Middle^Prefix^Suffix, kept in the orders table only, never logged
 *   procedure   OBR-4 (.1 code, .2 text, else .5 alternate text); modality OBR-24 or IPC-5
 *   priority    TQ1-9.1, else ORC-7.6, else OBR-27.6, else OBR-5 (table 0027):
 *               S -> STAT; A, P, C -> URGENT; R, T -> ROUTINE; TS<n>/TM<n> (within n seconds /
 *               minutes, n <= 60) -> STAT, TH<n> -> URGENT, TD/TW/TL -> ROUTINE; also the words
 *               STAT, STROKE, EMERGENCY / E, URGENT / U / ASAP / HIGH, ROUTINE / LOW;
 *               anything else: no priority (the workflow's own rules decide)
 *   provider    ORC-12, else OBR-16 (XCN: ID^Family^Given)
 *   status      ORC-1 NW new, XO / XX changed -> "scheduled" (kept if already further);
 *               CA / OC / DC / OD / CR / DR -> "cancelled"; SC / SS -> ORC-5 (SC scheduled,
 *               IP in_progress, CM completed, HD hold, CA / DC cancelled)
 * The raw message is not kept (it is PHI far beyond what a read needs); table orders_messages
 * records every message's MSH-10, type, facility, site, ACK code and reason (no PHI).
 *
 * Exported names start with orders_ (and struct order).
 */
#ifndef HL7_ORDERS_H
#define HL7_ORDERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

struct db;
struct mllp_request;

/* The workflow's priorities (flow_int.h enum flow_priority has the same values). */
enum order_priority {
    ORDER_PRIORITY_NONE = -1, /* the order says nothing usable */
    ORDER_PRIORITY_STAT = 0,
    ORDER_PRIORITY_URGENT = 1,
    ORDER_PRIORITY_ROUTINE = 2,
};

#define ORDER_TEXT_MAX 256

struct order {
    int64_t id;
    char site[65];
    char accession[65];
    char accession_source[8]; /* "IPC-1", "OBR-3", "ORC-3", "OBR-2", "ORC-2" */
    char placer_number[65];
    char filler_number[65];
    char patient_id[65];
    char patient_authority[65];
    char procedure_code[65];
    char procedure_text[ORDER_TEXT_MAX];
    char modality[17];
    int priority;           /* enum order_priority */
    char priority_code[32]; /* as sent ("S", "A", "TM30", ...) */
    char ordering_provider[ORDER_TEXT_MAX];
    char status[16];              /* "scheduled", "in_progress", "completed", "hold",
                                     "cancelled" */
    char order_control[3];        /* ORC-1 of the last message that changed the order */
    char message_control_id[200]; /* its MSH-10 */
    int64_t received_at;          /* ms since the epoch: first received */
    int64_t updated_at;           /* last changed */
};

/* "STAT", "URGENT", "ROUTINE", or "" for ORDER_PRIORITY_NONE. */
const char *order_priority_name(int priority);
/* Table 0027 and the usual words (see above) -> enum order_priority. */
int order_priority_parse(const char *code);

struct orders_config {
    const char *db_url; /* the archive's index (sqlite:PATH or postgresql://...) */
    /* Which site is MSH-4 (facility; MSH-3, the application, for context)? true and the site
     * id in `site`, or false: the message is rejected (AR). Called from several threads. */
    bool (*site_of)(void *ctx, const char *facility, const char *application, char *site,
                    size_t size);
    void *site_ctx;
    /* After an order is stored (new, changed, cancelled, status), outside any transaction, in
     * the listener's connection thread: the workflow raises the priority of a read already
     * made from the order's study (orders that arrive after the images). Keep it short; it
     * must be thread-safe. NULL: nobody listens. */
    void (*on_order)(void *ctx, const struct order *o);
    void *on_order_ctx;
    /* Log lines: control IDs, types, sites, accessions and ACK codes - never names. */
    void (*log)(void *ctx, int level, const char *message);
    void *log_ctx;
    const char *application; /* MSH-3 of our ACKs (default "TELERAD") */
    const char *facility;    /* MSH-4 of our ACKs (default "TELERAD") */
};

void orders_config_init(struct orders_config *cfg);

struct orders;

/* Open the database (a pool of connections) and bring schema component "orders" up to date. */
int orders_open(const struct orders_config *cfg, struct orders **out, struct tr_error *err);
void orders_close(struct orders *o);

/* Handle one message (its bytes, or its first bytes when `truncated`: it was over the
 * listener's cap) and append the ACK (unframed) to `ack`. Returns 0 when the message was
 * accepted (AA), 1 when it was answered AE or AR; a negative error only when not even an ACK
 * could be made (out of memory). */
int orders_handle(struct orders *o, const char *data, size_t len, bool truncated, const char *peer,
                  struct tr_buf *ack);

/* The MLLP listener's handler (struct mllp_config.handle) over orders_handle; ctx is the
 * struct orders. */
void orders_mllp_handle(void *ctx, const struct mllp_request *rq, struct tr_buf *reply);

/* Create or upgrade the schema (orders_open does it; for tools and tests). */
int orders_migrate(struct db *db, struct tr_error *err);

/* The order of (site, accession), whatever its status (check out->status: a cancelled order
 * should not raise a priority). 0 and *out filled, TR_ENOTFOUND, or another negative error.
 * For the workflow: call it when a read is made from a study (read_from_study) with the
 * study's Accession Number, in the workflow's own connection (the tables share a database). */
int orders_lookup(struct db *db, const char *site, const char *accession, struct order *out,
                  struct tr_error *err);

#endif
