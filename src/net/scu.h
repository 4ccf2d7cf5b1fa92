/*
 * scu.h - the DIMSE services as SCU (PS3.4 annexes A, B, C; PS3.7 9.1): C-ECHO, C-STORE of
 * files (streamed from disk, never loaded whole), C-FIND, C-MOVE and C-GET (whose C-STORE
 * sub-operations come back on the same association).
 *
 * Exported names start with scu_.
 */
#ifndef NET_SCU_H
#define NET_SCU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dcm.h"
#include "dimse.h"
#include "dul.h"
#include "error.h"
#include "sink.h"

/* Query/retrieve information models (PS3.4 C.3 / C.6). */
#define SCU_PATIENT_ROOT_FIND "1.2.840.10008.5.1.4.1.2.1.1"
#define SCU_PATIENT_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.1.2"
#define SCU_PATIENT_ROOT_GET "1.2.840.10008.5.1.4.1.2.1.3"
#define SCU_STUDY_ROOT_FIND "1.2.840.10008.5.1.4.1.2.2.1"
#define SCU_STUDY_ROOT_MOVE "1.2.840.10008.5.1.4.1.2.2.2"
#define SCU_STUDY_ROOT_GET "1.2.840.10008.5.1.4.1.2.2.3"
#define SCU_VERIFICATION "1.2.840.10008.1.1"

/* Add a presentation context to a request (ids are assigned 1, 3, 5 ...). `ts` is a
 * NULL-terminated list. Returns the id, or a negative error when the request is full. */
int scu_add_context(struct pdu_associate *rq, const char *abstract_syntax, const char *const *ts);
/* Ask for the SCP role (C-GET: the SCP sends us C-STOREs) for a SOP class. */
int scu_add_role(struct pdu_associate *rq, const char *sop_class, bool scu, bool scp);
/* Propose every storage SOP class of the registry with the uncompressed transfer syntaxes and
 * the given extra ones (for C-GET, with the SCP role). Uses up to `max_contexts` contexts. */
int scu_add_storage_contexts(struct pdu_associate *rq, const char *const *extra_ts,
                             bool scp_role, unsigned max_contexts);

/* ---- C-ECHO ------------------------------------------------------------------------------- */

int scu_echo(struct dul_assoc *a, uint16_t message_id, uint16_t *status, struct tr_error *err);

/* ---- C-STORE ------------------------------------------------------------------------------ */

/* What telerad knows of a file it is about to send (from a header-only read). */
struct scu_file {
    char path[4096];
    char sop_class[DCM_UID_MAX + 1];
    char sop_instance[DCM_UID_MAX + 1];
    char transfer_syntax[DCM_UID_MAX + 1];
    uint64_t dataset_offset;  /* where the data set starts in the file */
    uint64_t size;            /* of the file */
};

/* Read the header of a file to send; TR_EFORMAT if it is not a DICOM file with SOP Class and
 * Instance UIDs. */
int scu_file_probe(const char *path, struct scu_file *f, struct tr_error *err);

/* Store a file: the data set goes as it is in the file when a context for its SOP class with
 * its transfer syntax was accepted (streamed in chunks straight from disk), otherwise it is
 * converted to an accepted uncompressed transfer syntax when that is possible. Sub-operations
 * of a C-MOVE pass the originator. *status is the peer's status. */
int scu_store_file(struct dul_assoc *a, const struct scu_file *f, uint16_t message_id,
                   const char *move_originator_ae, uint16_t move_originator_id, uint16_t *status,
                   char *comment, size_t comment_size, struct tr_error *err);

/* ---- C-FIND ------------------------------------------------------------------------------- */

/* Send a query on `model`; on_match is called for each pending response's identifier (return
 * negative to send C-CANCEL and stop). *status is the final status. */
int scu_find(struct dul_assoc *a, const char *model, const struct dcm_dataset *identifier,
             uint16_t priority, int (*on_match)(void *ctx, const struct dcm_dataset *match),
             void *ctx, uint16_t *status, struct tr_error *err);

/* ---- C-MOVE / C-GET ----------------------------------------------------------------------- */

struct scu_progress {
    uint16_t remaining, completed, failed, warning;
};

/* Ask the peer to send what `identifier` selects to AE `destination`. on_progress is called
 * for each pending response. */
int scu_move(struct dul_assoc *a, const char *model, const char *destination,
             const struct dcm_dataset *identifier,
             void (*on_progress)(void *ctx, const struct scu_progress *p), void *ctx,
             uint16_t *status, struct scu_progress *final, struct tr_error *err);

/* Handlers for the C-STORE sub-operations a C-GET brings back (same shape as the SCP's). */
struct scu_get_store {
    void *ctx;
    int (*begin)(void *ctx, const char *sop_class, const char *sop_instance,
                 const char *transfer_syntax, struct tr_sink *sink, void **handle);
    uint16_t (*end)(void *ctx, void *handle, bool complete);
};

int scu_get(struct dul_assoc *a, const char *model, const struct dcm_dataset *identifier,
            const struct scu_get_store *store,
            void (*on_progress)(void *ctx, const struct scu_progress *p), void *ctx,
            uint16_t *status, struct scu_progress *final, struct tr_error *err);

#endif
