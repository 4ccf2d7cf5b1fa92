/*
 * pdu.h - the PDUs of the DICOM upper layer protocol (PS3.8 9.3): encoding and decoding.
 *
 * A PDU is a 6-byte header (type, reserved, 32-bit big endian length) and a body. Decoders
 * take the whole body (the reader has checked the length against its cap) and validate every
 * length against what is left; they never read past the body and report errors with the
 * offset of the offending item, counted from 0 at the start of the PDU (header included, as
 * in a hex dump of the wire bytes; the first item of an A-ASSOCIATE is at byte 74):
 * "A-ASSOCIATE-RQ: presentation context item at byte 99: presentation context ID 2 is even
 * (IDs are odd, 1-255)".
 * Encoders validate everything first, then append to a capped tr_buf; on error the buffer is
 * left as it was.
 *
 * Decoding rules where the standard leaves room (details at the top of pdu.c):
 *  - items and sub-items of unrecognized (or out-of-place) types are skipped (PS3.8 9.3.1);
 *    item order is not enforced; reserved fields are not tested;
 *  - single items (application context, user information, maximum length, implementation
 *    class UID and version name, asynchronous window, user identity) may not repeat; a role
 *    selection or extended negotiation repeated for one SOP class must repeat identically;
 *  - RQ AE titles lose leading/trailing spaces (and trailing NULs) and must be 1-16 ISO 646
 *    characters without backslash or control characters; the AC's copies are not tested;
 *  - UIDs lose trailing NULs and spaces and must be 1-64 printable ASCII characters (the PS3.5
 *    digits-and-dots syntax is for the layers above to judge);
 *  - an AC's rejected presentation context has ts_count 0 (its transfer syntax is not tested);
 *  - limits: PDU_MAX_CONTEXTS contexts, PDU_MAX_TRANSFER_SYNTAXES per context, PDU_MAX_ROLES
 *    role selections, PDU_MAX_EXTENDED extended negotiations (TR_ELIMIT past them).
 * Error codes: TR_EFORMAT for malformed input, TR_ELIMIT for a limit, TR_ENOMEM.
 *
 * Exported names start with pdu_.
 */
#ifndef NET_PDU_H
#define NET_PDU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "buf.h"
#include "error.h"

#define PDU_HEADER_SIZE 6
#define PDU_AE_MAX 16
#define PDU_UID_MAX 64
#define PDU_MAX_CONTEXTS 128     /* presentation context IDs are odd numbers 1-255 */
#define PDU_MAX_TRANSFER_SYNTAXES 32
#define PDU_MAX_ROLES 128
#define PDU_MAX_EXTENDED 128

enum pdu_type {
    PDU_ASSOCIATE_RQ = 0x01,
    PDU_ASSOCIATE_AC = 0x02,
    PDU_ASSOCIATE_RJ = 0x03,
    PDU_P_DATA_TF = 0x04,
    PDU_RELEASE_RQ = 0x05,
    PDU_RELEASE_RP = 0x06,
    PDU_ABORT = 0x07,
};

/* PS3.8 Table 9-18: presentation context result/reason in an A-ASSOCIATE-AC. */
enum pdu_context_result {
    PDU_PC_ACCEPTANCE = 0,
    PDU_PC_USER_REJECTION = 1,
    PDU_PC_NO_REASON = 2,
    PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED = 3,
    PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED = 4,
};

/* Strings in these structures are NUL-terminated. Decoded ones live in the PDU's arena;
 * callers building a PDU may point them at any string that outlives the encoding. */
struct pdu_presentation_context {
    uint8_t id;                                  /* odd, 1-255 */
    uint8_t result;                              /* AC only: enum pdu_context_result */
    const char *abstract_syntax;                 /* RQ only */
    unsigned ts_count;                           /* RQ: proposed (>= 1); AC: 1 (0 if rejected) */
    const char *transfer_syntax[PDU_MAX_TRANSFER_SYNTAXES];
};

/* PS3.7 D.3.3.4: SCP/SCU role selection sub-item. */
struct pdu_role {
    const char *sop_class;
    bool scu, scp;
};

/* PS3.7 D.3.3.5: SOP class extended negotiation (application information kept as bytes). */
struct pdu_extended {
    const char *sop_class;
    const uint8_t *info;
    unsigned info_length;
};

/* PS3.7 D.3.3.7: user identity negotiation. */
enum pdu_identity_type {
    PDU_IDENTITY_NONE = 0,
    PDU_IDENTITY_USERNAME = 1,
    PDU_IDENTITY_USERNAME_PASSCODE = 2,
    PDU_IDENTITY_KERBEROS = 3,
    PDU_IDENTITY_SAML = 4,
    PDU_IDENTITY_JWT = 5,
};

#define PDU_IDENTITY_MAX 65535 /* 16-bit lengths */

struct pdu_user_identity {
    uint8_t type;                /* enum pdu_identity_type; NONE = absent */
    bool positive_response;      /* RQ: positive response requested */
    const char *primary;         /* username / token (may hold NULs: use the length) */
    uint16_t primary_length;
    const char *secondary;       /* passcode (type 2) */
    uint16_t secondary_length;
    const char *response;        /* AC: server response (type 3/4/5) */
    uint16_t response_length;
    bool has_response;           /* AC carries a User Identity sub-item */
};

/* A-ASSOCIATE-RQ and A-ASSOCIATE-AC (PS3.8 9.3.2, 9.3.3; user information PS3.7 D.3.3).
 * About 40 KB: allocate it, do not put it on the stack. Lifecycle: pdu_associate_init, then
 * pdu_associate_release (frees what the decoder allocated in the arena). */
struct pdu_associate {
    struct tr_arena arena;                     /* strings of a decoded PDU */
    uint16_t protocol_version;                 /* bit 0 set: version 1 */
    char called_ae[PDU_AE_MAX + 1];            /* leading and trailing spaces removed */
    char calling_ae[PDU_AE_MAX + 1];
    char application_context[PDU_UID_MAX + 1]; /* 1.2.840.10008.3.1.1.1 */
    unsigned context_count;
    struct pdu_presentation_context context[PDU_MAX_CONTEXTS];
    uint32_t max_length;                       /* maximum P-DATA-TF PDU length the sender
                                                  receives; 0 = no limit (PS3.8 D.1) */
    char implementation_class_uid[PDU_UID_MAX + 1];
    char implementation_version[PDU_AE_MAX + 1];
    bool has_async;                            /* asynchronous operations window */
    uint16_t max_ops_invoked, max_ops_performed;
    unsigned role_count;
    struct pdu_role role[PDU_MAX_ROLES];
    unsigned extended_count;
    struct pdu_extended extended[PDU_MAX_EXTENDED];
    struct pdu_user_identity identity;
};

/* A-ASSOCIATE-RJ (PS3.8 9.3.4, Table 9-21). The decoders of RJ and A-ABORT take the values
 * as they come (the texts below name unknown ones) and ignore bytes past the fourth. */
enum pdu_reject_result { PDU_RJ_PERMANENT = 1, PDU_RJ_TRANSIENT = 2 };
enum pdu_reject_source {
    PDU_RJ_SOURCE_USER = 1,                /* DICOM UL service-user */
    PDU_RJ_SOURCE_PROVIDER_ACSE = 2,       /* service-provider (ACSE related function) */
    PDU_RJ_SOURCE_PROVIDER_PRESENTATION = 3,
};
enum pdu_reject_reason {
    /* source 1 */
    PDU_RJ_NO_REASON = 1,
    PDU_RJ_APPLICATION_CONTEXT_NOT_SUPPORTED = 2,
    PDU_RJ_CALLING_AE_NOT_RECOGNIZED = 3,
    PDU_RJ_CALLED_AE_NOT_RECOGNIZED = 7,
    /* source 2 */
    PDU_RJ_PROTOCOL_VERSION_NOT_SUPPORTED = 2,
    /* source 3 */
    PDU_RJ_TEMPORARY_CONGESTION = 1,
    PDU_RJ_LOCAL_LIMIT_EXCEEDED = 2,
};

struct pdu_reject {
    uint8_t result, source, reason;
};

/* A-ABORT (PS3.8 9.3.8): source 0 service-user, 2 service-provider; reasons for source 2. */
enum pdu_abort_source { PDU_ABORT_USER = 0, PDU_ABORT_PROVIDER = 2 };
enum pdu_abort_reason {
    PDU_ABORT_NOT_SPECIFIED = 0,
    PDU_ABORT_UNRECOGNIZED_PDU = 1,
    PDU_ABORT_UNEXPECTED_PDU = 2,
    PDU_ABORT_UNRECOGNIZED_PARAMETER = 4,
    PDU_ABORT_UNEXPECTED_PARAMETER = 5,
    PDU_ABORT_INVALID_PARAMETER = 6,
};

/* One presentation data value of a P-DATA-TF (PS3.8 9.3.5.1, E.2). */
struct pdu_pdv {
    uint8_t context_id;
    bool command;          /* message control header bit 0 */
    bool last;             /* bit 1: last fragment of the command or data set */
    const uint8_t *data;   /* points into the PDU body */
    uint32_t length;
};

void pdu_associate_init(struct pdu_associate *a);
void pdu_associate_release(struct pdu_associate *a);

/* Encoders: append a whole PDU (header included) to out. They return 0, TR_EINVAL when the
 * structure does not satisfy pdu_check_associate (or the reject / abort codes are not ones
 * PS3.8 Tables 9-21 / 9-26 define), TR_ELIMIT past out's cap or a 16-bit item length, or
 * TR_ENOMEM; on error out is unchanged.
 *
 * The A-ASSOCIATE encoders write: the protocol version as given (pdu_associate_init sets 1);
 * the AE titles padded with spaces; application_context, or the DICOM application context
 * name when it is empty; for each context the abstract syntax and transfer syntaxes (RQ) or
 * result and transfer syntax (AC; a rejected context with ts_count 0 gets an empty transfer
 * syntax sub-item); then the user information sub-items in increasing type order: maximum
 * length (always), implementation class UID (required), asynchronous window (has_async),
 * role selections, implementation version name (when not empty), extended negotiations, and
 * user identity (RQ: identity.type != NONE; AC: identity.has_response). */
int pdu_encode_associate_rq(const struct pdu_associate *a, struct tr_buf *out);
int pdu_encode_associate_ac(const struct pdu_associate *a, struct tr_buf *out);
/* What the A-ASSOCIATE encoders check, with a message saying what is wrong: AE titles (see
 * pdu_ae_title_is_valid), UIDs 1-64 printable ASCII characters, 1-PDU_MAX_CONTEXTS contexts
 * with distinct odd IDs, RQ: 1-PDU_MAX_TRANSFER_SYNTAXES transfer syntaxes per context; AC:
 * results 0-4 and exactly one transfer syntax per accepted context; distinct SOP classes in
 * role selections and extended negotiations; a user identity of type 1-5 with a primary field
 * (a secondary field for type 2 only); everything fitting its 16-bit item length. */
int pdu_check_associate(enum pdu_type type, const struct pdu_associate *a, struct tr_error *err);
/* An AE title the encoders accept: 1-16 characters of ISO 646 (0x20-0x7E) without backslash,
 * not all spaces (PS3.8 9.3.2, PS3.5 6.2). */
bool pdu_ae_title_is_valid(const char *ae);
int pdu_encode_associate_rj(const struct pdu_reject *rj, struct tr_buf *out);
int pdu_encode_release_rq(struct tr_buf *out);
int pdu_encode_release_rp(struct tr_buf *out);
/* source PDU_ABORT_USER with reason 0, or PDU_ABORT_PROVIDER with an enum pdu_abort_reason. */
int pdu_encode_abort(uint8_t source, uint8_t reason, struct tr_buf *out);
/* A P-DATA-TF header for one PDV of `length` bytes (the data follows, written by the caller
 * to avoid a copy): 6 + 6 bytes into hdr. length must be at most UINT32_MAX - 6 (in practice
 * it is bounded by the peer's maximum length). */
void pdu_encode_pdata_header(uint8_t context_id, bool command, bool last, uint32_t length,
                             uint8_t hdr[12]);

/* Decoders: `body` is the PDU body (after the 6-byte header) of `len` bytes. On error the
 * message names the item and its offset. pdu_decode_associate fills *a, which must have been
 * initialised with pdu_associate_init (and is released by the caller, even on error); what
 * a previous decode into *a stored is discarded first. Strings, identity fields and
 * extended negotiation information are copied into a->arena (identity fields with a
 * terminating NUL not counted in their length), so body may be freed afterwards. A missing
 * maximum length sub-item leaves max_length 0 and a missing implementation class UID leaves
 * it empty (both are mandatory, but tolerated). */
int pdu_decode_associate(enum pdu_type type, const uint8_t *body, size_t len,
                         struct pdu_associate *a, struct tr_error *err);
int pdu_decode_associate_rj(const uint8_t *body, size_t len, struct pdu_reject *rj,
                            struct tr_error *err);
int pdu_decode_abort(const uint8_t *body, size_t len, uint8_t *source, uint8_t *reason,
                     struct tr_error *err);
/* Iterate over the PDVs of a P-DATA-TF body: *pos starts at 0; returns 1 with *pdv filled,
 * 0 at the end, negative on a malformed item (item length below 2 or past the body, an even
 * presentation context ID) and on an empty body (PS3.8 9.3.5: one or more PDV items). The
 * reserved bits 2-7 of the message control header are not tested. */
int pdu_next_pdv(const uint8_t *body, size_t len, size_t *pos, struct pdu_pdv *pdv,
                 struct tr_error *err);

/* Names for messages and logs: "A-ASSOCIATE-RQ", and the reject / abort reasons in words
 * ("rejected permanently by the called AE: calling AE title not recognized"). Static strings. */
const char *pdu_type_name(uint8_t type);
const char *pdu_reject_text(const struct pdu_reject *rj);
const char *pdu_abort_text(uint8_t source, uint8_t reason);

#endif
