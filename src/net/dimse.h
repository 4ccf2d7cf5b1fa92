/*
 * dimse.h - DIMSE messages over an association (PS3.7 6, 9 and annex E): command sets encoded
 * in Implicit VR Little Endian with their group length, data sets streamed in the presentation
 * context's transfer syntax.
 *
 * A message is a command set, then (if the command says so) a data set. Receiving a data set
 * streams it, fragment by fragment, into a sink: a 2 GB C-STORE never sits in memory.
 *
 * Exported names start with dimse_.
 */
#ifndef NET_DIMSE_H
#define NET_DIMSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dcm.h"
#include "dul.h"
#include "error.h"
#include "sink.h"

/* Command Field values (PS3.7 E.1). */
enum dimse_command {
    DIMSE_C_STORE_RQ = 0x0001, DIMSE_C_STORE_RSP = 0x8001,
    DIMSE_C_GET_RQ = 0x0010, DIMSE_C_GET_RSP = 0x8010,
    DIMSE_C_FIND_RQ = 0x0020, DIMSE_C_FIND_RSP = 0x8020,
    DIMSE_C_MOVE_RQ = 0x0021, DIMSE_C_MOVE_RSP = 0x8021,
    DIMSE_C_ECHO_RQ = 0x0030, DIMSE_C_ECHO_RSP = 0x8030,
    DIMSE_N_EVENT_REPORT_RQ = 0x0100, DIMSE_N_EVENT_REPORT_RSP = 0x8100,
    DIMSE_N_GET_RQ = 0x0110, DIMSE_N_GET_RSP = 0x8110,
    DIMSE_N_SET_RQ = 0x0120, DIMSE_N_SET_RSP = 0x8120,
    DIMSE_N_ACTION_RQ = 0x0130, DIMSE_N_ACTION_RSP = 0x8130,
    DIMSE_N_CREATE_RQ = 0x0140, DIMSE_N_CREATE_RSP = 0x8140,
    DIMSE_N_DELETE_RQ = 0x0150, DIMSE_N_DELETE_RSP = 0x8150,
    DIMSE_C_CANCEL_RQ = 0x0FFF,
};

#define DIMSE_NO_DATASET 0x0101 /* Command Data Set Type: no data set follows */
#define DIMSE_HAS_DATASET 0x0000

enum dimse_priority { DIMSE_PRIORITY_MEDIUM = 0, DIMSE_PRIORITY_HIGH = 1, DIMSE_PRIORITY_LOW = 2 };

/* Status codes (PS3.7 annex C and the service classes of PS3.4). */
#define DIMSE_STATUS_SUCCESS 0x0000
#define DIMSE_STATUS_PENDING 0xFF00
#define DIMSE_STATUS_PENDING_WARNING 0xFF01          /* C-FIND: optional keys not supported */
#define DIMSE_STATUS_CANCEL 0xFE00
#define DIMSE_STATUS_WARNING_SUBOPS 0xB000           /* C-MOVE/C-GET: some sub-operations failed;
                                                        C-STORE: coercion of data elements */
#define DIMSE_STATUS_WARNING_ELEMENTS_DISCARDED 0xB006
#define DIMSE_STATUS_WARNING_DATASET_MISMATCH 0xB007
#define DIMSE_STATUS_SOP_CLASS_NOT_SUPPORTED 0x0122
#define DIMSE_STATUS_NO_SUCH_SOP_INSTANCE 0x0112
#define DIMSE_STATUS_DUPLICATE_INVOCATION 0x0210
#define DIMSE_STATUS_MISTYPED_ARGUMENT 0x0212
#define DIMSE_STATUS_UNRECOGNIZED_OPERATION 0x0211
#define DIMSE_STATUS_NOT_AUTHORIZED 0x0124
#define DIMSE_STATUS_OUT_OF_RESOURCES 0xA700          /* C-STORE: out of resources */
#define DIMSE_STATUS_FIND_OUT_OF_RESOURCES 0xA700
#define DIMSE_STATUS_MOVE_OUT_OF_RESOURCES_MATCHES 0xA701
#define DIMSE_STATUS_MOVE_OUT_OF_RESOURCES_SUBOPS 0xA702
#define DIMSE_STATUS_MOVE_DESTINATION_UNKNOWN 0xA801
#define DIMSE_STATUS_DATASET_DOES_NOT_MATCH 0xA900    /* C-STORE: not the SOP class; C-FIND:
                                                         identifier does not match */
#define DIMSE_STATUS_CANNOT_UNDERSTAND 0xC000
#define DIMSE_STATUS_UNABLE_TO_PROCESS 0xC001

bool dimse_status_is_pending(uint16_t status);
bool dimse_status_is_warning(uint16_t status);
bool dimse_status_is_failure(uint16_t status);
/* "Success", "Pending", "Warning: ...", "Failure: out of resources (A700)" */
const char *dimse_status_text(uint16_t status);
const char *dimse_command_name(uint16_t command_field);

/* A received command, with the fields every service needs pulled out of the command set. */
struct dimse_message {
    uint8_t pc;                 /* presentation context it arrived on */
    uint16_t command_field;
    uint16_t message_id;        /* requests: Message ID; responses: Message ID Being Responded To */
    uint16_t status;            /* responses */
    uint16_t priority;
    bool has_dataset;
    char sop_class[DCM_UID_MAX + 1];    /* Affected (or Requested) SOP Class UID */
    char sop_instance[DCM_UID_MAX + 1]; /* Affected (or Requested) SOP Instance UID */
    char move_destination[PDU_AE_MAX + 1];
    char move_originator_ae[PDU_AE_MAX + 1];
    uint16_t move_originator_id;
    bool has_counts;            /* sub-operation counts present (C-MOVE / C-GET responses) */
    uint16_t remaining, completed, failed, warning;
    char error_comment[65];
    struct dcm_dataset *command; /* the whole command set (owned) */
};

void dimse_message_release(struct dimse_message *m);

/* ---- sending ------------------------------------------------------------------------------ */

/* Encode and send a command set (Implicit VR LE, group length computed). */
int dimse_send_command(struct dul_assoc *a, uint8_t pc, const struct dcm_dataset *command,
                       struct tr_error *err);
/* Send a command and, if `dataset` is not NULL, its data set, as one message: the data set's
 * first fragments share the command's P-DATA-TF PDU when they fit (PS3.8 9.3.5), and the
 * message is written at once unless the caller holds a batch (dul_batch_begin). */
int dimse_send_message(struct dul_assoc *a, uint8_t pc, const struct dcm_dataset *command,
                       const struct dcm_dataset *dataset, struct tr_error *err);
/* Append a command set to `out` as it goes on the wire (Implicit VR Little Endian, Command
 * Group Length first, any group length in `command` replaced); on error `out` is as it was.
 * For a command sent many times (a C-FIND's pending responses): encode once, then
 * dimse_send_encoded. */
int dimse_encode_command(const struct dcm_dataset *command, struct tr_buf *out,
                         struct tr_error *err);
/* dimse_send_message with the command already encoded by dimse_encode_command. */
int dimse_send_encoded(struct dul_assoc *a, uint8_t pc, const void *command, size_t len,
                       const struct dcm_dataset *dataset, struct tr_error *err);
/* Send a data set encoded in the context's transfer syntax (deflate included). */
int dimse_send_dataset(struct dul_assoc *a, uint8_t pc, const struct dcm_dataset *ds,
                       struct tr_error *err);
/* Send raw data set bytes already in the context's transfer syntax (the body of a file);
 * call repeatedly, last = true with the final part. */
int dimse_send_bytes(struct dul_assoc *a, uint8_t pc, const void *data, size_t len, bool last,
                     struct tr_error *err);

/* ---- receiving ---------------------------------------------------------------------------- */

/* Receive the next command: 1 with *m filled, 0 when the peer asked to release (answer with
 * dul_release_reply), negative on error. Data set fragments left unread from the previous
 * message are an error (the caller must consume or skip them). */
int dimse_receive_command(struct dul_assoc *a, int timeout_ms, struct dimse_message *m,
                          struct tr_error *err);
/* Decode a whole command set (Implicit VR Little Endian, PS3.7 6.3.1) of `len` bytes and pull
 * out the fields of *m, as dimse_receive_command does with what it has gathered: 0 with *m
 * filled (m->pc is left as it was; m->command is owned by *m, release it with
 * dimse_message_release), or TR_EPROTO with m->command NULL and a message saying what is
 * wrong ("a command set without Command Field (0000,0100)"). `data` may be
 * freed afterwards. For tests and fuzzing. */
int dimse_parse_command_set(const void *data, size_t len, struct dimse_message *m,
                            struct tr_error *err);
/* Stream the data set that follows command `m` into `sink` (max bytes at most; more is
 * TR_ELIMIT after draining the rest). *length gets its size. */
int dimse_receive_dataset_to_sink(struct dul_assoc *a, const struct dimse_message *m,
                                  const struct tr_sink *sink, uint64_t max, uint64_t *length,
                                  struct tr_error *err);
/* Receive a (small) data set into memory and parse it in the context's transfer syntax. */
int dimse_receive_dataset(struct dul_assoc *a, const struct dimse_message *m, size_t max,
                          struct dcm_dataset **out, struct tr_error *err);
/* Read and drop the data set that follows `m`. */
int dimse_skip_dataset(struct dul_assoc *a, const struct dimse_message *m, struct tr_error *err);

/* ---- building commands -------------------------------------------------------------------- */

/* A command set with Command Field, Message ID (or Message ID Being Responded To for
 * responses), Command Data Set Type and, if given, Affected SOP Class / Instance UIDs. */
struct dcm_dataset *dimse_command_new(uint16_t command_field, uint16_t message_id,
                                      const char *sop_class, const char *sop_instance,
                                      bool has_dataset);
/* A response to `rq` with `status`. */
struct dcm_dataset *dimse_response_new(const struct dimse_message *rq, uint16_t status,
                                       bool has_dataset);
/* Set the sub-operation counts of a C-MOVE / C-GET response. */
int dimse_set_counts(struct dcm_dataset *command, uint16_t remaining, uint16_t completed,
                     uint16_t failed, uint16_t warning);

#endif
