/*
 * pdu.c - the PDUs of the DICOM upper layer protocol (PS3.8 9.3, Annex E) and the user
 * information sub-items of association negotiation (PS3.8 Annex D, PS3.7 D.3.3): encoders,
 * decoders and their names in words. See pdu.h for the API.
 *
 * Decoding rules where the standard leaves room (also listed in pdu.h):
 *  - Items and sub-items of unrecognized types are skipped at every level (PS3.8 9.3.1: "Items
 *    of unrecognized types shall be ignored and skipped"; PS3.8 D.2 note 2 for user
 *    information). An item that is known but out of place (a 0x21 presentation context in an
 *    RQ, a 0x58 user identity in an AC) is unrecognized there and skipped too.
 *  - Item order is not enforced (PS3.8 9.3.1 asks for increasing item types; PS3.8 9.3.2.3
 *    says no significance shall be placed on the order of user information sub-items).
 *  - Reserved fields are never tested (DCMTK, for one, sends 0xFF in the reserved byte of an
 *    RQ presentation context).
 *  - What the standard makes single (application context, user information, and the maximum
 *    length, implementation class UID, asynchronous operations window, implementation
 *    version name and user identity sub-items) is an error when repeated, since the copies may
 *    disagree. A role selection or extended negotiation sub-item repeated for the same SOP
 *    class is skipped when identical and an error when different.
 *  - A-ASSOCIATE-RQ AE titles must be 1-16 characters of ISO 646 without backslash or
 *    control characters once leading and trailing spaces (and trailing NULs, which some peers
 *    pad with) are removed; the AC's copies are not tested (PS3.8 9.3.3) and are kept with
 *    any unprintable byte replaced by '?'.
 *  - UIDs lose trailing NULs and spaces and must then be 1-64 printable ASCII characters
 *    without spaces. The stricter PS3.5 9.1 syntax (digits and dots) is left to the layers
 *    that look UIDs up, so that one odd SOP class UID gets its presentation context rejected
 *    instead of the whole association aborted.
 *  - In an AC, the transfer syntax sub-item of a rejected presentation context is not tested
 *    (PS3.8 9.3.3.2) and ts_count is 0; an accepted one needs exactly one transfer syntax.
 *  - The implementation version name is informational: longer than 16 bytes is truncated and
 *    unprintable bytes become '?'. Role values other than 0 and 1 mean "supported".
 *  - A user identity sub-item whose secondary field length is missing altogether (item ends
 *    after the primary field) is accepted as one with an empty secondary field; the secondary
 *    field is kept for type 2 only.
 *
 * Whatever the decoder accepts, the encoder encodes again (the fuzz target checks it), except
 * that an encoded A-ASSOCIATE needs an implementation class UID and non-empty AE titles.
 */
#include "common.h"
#include "pdu.h"

#define DICOM_APPLICATION_CONTEXT "1.2.840.10008.3.1.1.1"

/* Offsets of the A-ASSOCIATE-RQ/AC fixed fields in the body (PS3.8 Table 9-11). */
#define ASSOC_CALLED_AE  4
#define ASSOC_CALLING_AE 20
#define ASSOC_FIXED_SIZE 68

/* Item types (PS3.8 9.3.2, PS3.7 D.3.3). */
enum {
    ITEM_APPLICATION_CONTEXT = 0x10,
    ITEM_PRESENTATION_CONTEXT_RQ = 0x20,
    ITEM_PRESENTATION_CONTEXT_AC = 0x21,
    ITEM_ABSTRACT_SYNTAX = 0x30,
    ITEM_TRANSFER_SYNTAX = 0x40,
    ITEM_USER_INFORMATION = 0x50,
    ITEM_MAX_LENGTH = 0x51,
    ITEM_IMPLEMENTATION_CLASS = 0x52,
    ITEM_ASYNC_WINDOW = 0x53,
    ITEM_ROLE_SELECTION = 0x54,
    ITEM_IMPLEMENTATION_VERSION = 0x55,
    ITEM_EXTENDED_NEGOTIATION = 0x56,
    ITEM_COMMON_EXTENDED_NEGOTIATION = 0x57,
    ITEM_USER_IDENTITY_RQ = 0x58,
    ITEM_USER_IDENTITY_AC = 0x59,
};

#define ITEM_HEADER_SIZE      4
#define ITEM_MAX_LENGTH_VALUE 0xFFFF /* items have 16-bit lengths */

/* ---- names ------------------------------------------------------------------------------- */

const char *pdu_type_name(uint8_t type)
{
    switch (type) {
    case PDU_ASSOCIATE_RQ: return "A-ASSOCIATE-RQ";
    case PDU_ASSOCIATE_AC: return "A-ASSOCIATE-AC";
    case PDU_ASSOCIATE_RJ: return "A-ASSOCIATE-RJ";
    case PDU_P_DATA_TF: return "P-DATA-TF";
    case PDU_RELEASE_RQ: return "A-RELEASE-RQ";
    case PDU_RELEASE_RP: return "A-RELEASE-RP";
    case PDU_ABORT: return "A-ABORT";
    }
    return "unknown PDU type";
}

static const char *item_name(uint8_t type)
{
    switch (type) {
    case ITEM_APPLICATION_CONTEXT: return "application context item";
    case ITEM_PRESENTATION_CONTEXT_RQ:
    case ITEM_PRESENTATION_CONTEXT_AC: return "presentation context item";
    case ITEM_ABSTRACT_SYNTAX: return "abstract syntax sub-item";
    case ITEM_TRANSFER_SYNTAX: return "transfer syntax sub-item";
    case ITEM_USER_INFORMATION: return "user information item";
    case ITEM_MAX_LENGTH: return "maximum length sub-item";
    case ITEM_IMPLEMENTATION_CLASS: return "implementation class UID sub-item";
    case ITEM_ASYNC_WINDOW: return "asynchronous operations window sub-item";
    case ITEM_ROLE_SELECTION: return "SCP/SCU role selection sub-item";
    case ITEM_IMPLEMENTATION_VERSION: return "implementation version name sub-item";
    case ITEM_EXTENDED_NEGOTIATION: return "SOP class extended negotiation sub-item";
    case ITEM_COMMON_EXTENDED_NEGOTIATION: return "SOP class common extended negotiation sub-item";
    case ITEM_USER_IDENTITY_RQ:
    case ITEM_USER_IDENTITY_AC: return "user identity sub-item";
    }
    return "item";
}

/* The one string per combination, so that no caller has to free or format anything. */
#define REJECT_TEXT(permanent, text)                                                               \
    ((permanent) ? "rejected permanently " text : "rejected transiently " text)

const char *pdu_reject_text(const struct pdu_reject *rj)
{
    /* PS3.8 Table 9-21. */
    if (rj->result != PDU_RJ_PERMANENT && rj->result != PDU_RJ_TRANSIENT)
        return "rejected (unknown result code)";
    bool permanent = rj->result == PDU_RJ_PERMANENT;
    switch (rj->source) {
    case PDU_RJ_SOURCE_USER:
        switch (rj->reason) {
        case PDU_RJ_NO_REASON: return REJECT_TEXT(permanent, "by the called AE: no reason given");
        case PDU_RJ_APPLICATION_CONTEXT_NOT_SUPPORTED:
            return REJECT_TEXT(permanent,
                               "by the called AE: application context name not supported");
        case PDU_RJ_CALLING_AE_NOT_RECOGNIZED:
            return REJECT_TEXT(permanent, "by the called AE: calling AE title not recognized");
        case PDU_RJ_CALLED_AE_NOT_RECOGNIZED:
            return REJECT_TEXT(permanent, "by the called AE: called AE title not recognized");
        }
        return REJECT_TEXT(permanent, "by the called AE: reserved reason code");
    case PDU_RJ_SOURCE_PROVIDER_ACSE:
        switch (rj->reason) {
        case PDU_RJ_NO_REASON:
            return REJECT_TEXT(permanent, "by the called upper layer (ACSE): no reason given");
        case PDU_RJ_PROTOCOL_VERSION_NOT_SUPPORTED:
            return REJECT_TEXT(permanent,
                               "by the called upper layer (ACSE): protocol version not supported");
        }
        return REJECT_TEXT(permanent, "by the called upper layer (ACSE): reserved reason code");
    case PDU_RJ_SOURCE_PROVIDER_PRESENTATION:
        switch (rj->reason) {
        case PDU_RJ_TEMPORARY_CONGESTION:
            return REJECT_TEXT(permanent,
                               "by the called upper layer (presentation): temporary congestion");
        case PDU_RJ_LOCAL_LIMIT_EXCEEDED:
            return REJECT_TEXT(permanent,
                               "by the called upper layer (presentation): local limit exceeded");
        }
        return REJECT_TEXT(permanent,
                           "by the called upper layer (presentation): reserved reason code");
    }
    return REJECT_TEXT(permanent, "by an unknown source");
}

const char *pdu_abort_text(uint8_t source, uint8_t reason)
{
    /* PS3.8 Table 9-26. */
    switch (source) {
    case PDU_ABORT_USER: return "aborted by the peer application (service-user)";
    case PDU_ABORT_PROVIDER:
        switch (reason) {
        case PDU_ABORT_NOT_SPECIFIED:
            return "aborted by the upper layer (service-provider): reason not specified";
        case PDU_ABORT_UNRECOGNIZED_PDU:
            return "aborted by the upper layer (service-provider): unrecognized PDU";
        case PDU_ABORT_UNEXPECTED_PDU:
            return "aborted by the upper layer (service-provider): unexpected PDU";
        case PDU_ABORT_UNRECOGNIZED_PARAMETER:
            return "aborted by the upper layer (service-provider): unrecognized PDU parameter";
        case PDU_ABORT_UNEXPECTED_PARAMETER:
            return "aborted by the upper layer (service-provider): unexpected PDU parameter";
        case PDU_ABORT_INVALID_PARAMETER:
            return "aborted by the upper layer (service-provider): invalid PDU parameter value";
        }
        return "aborted by the upper layer (service-provider): reserved reason code";
    }
    return "aborted (reserved source code)";
}

/* ---- lifecycle --------------------------------------------------------------------------- */

void pdu_associate_init(struct pdu_associate *a)
{
    memset(a, 0, sizeof(*a));
    tr_arena_init(&a->arena, 4096);
    a->protocol_version = 1;
}

void pdu_associate_release(struct pdu_associate *a)
{
    tr_arena_release(&a->arena);
    pdu_associate_init(a);
}

/* ---- validation shared by the encoders --------------------------------------------------- */

/* PS3.8 9.3.2: ISO 646 basic G0 set; PS3.5 6.2 AE: no backslash, no control characters. */
static bool ae_char_ok(unsigned char c)
{
    return c >= 0x20 && c < 0x7F && c != '\\';
}

bool pdu_ae_title_is_valid(const char *ae)
{
    if (!ae)
        return false;
    size_t n = strnlen(ae, PDU_AE_MAX + 1);
    if (n == 0 || n > PDU_AE_MAX)
        return false;
    bool blank = true;
    for (size_t i = 0; i < n; i++) {
        if (!ae_char_ok((unsigned char)ae[i]))
            return false;
        if (ae[i] != ' ')
            blank = false;
    }
    return !blank;
}

/* The decoder's UID rule (see the top of the file): 1-64 printable ASCII, no spaces. */
static bool uid_char_ok(unsigned char c)
{
    return c > 0x20 && c < 0x7F;
}

static bool uid_ok(const char *uid)
{
    if (!uid)
        return false;
    size_t n = strnlen(uid, PDU_UID_MAX + 1);
    if (n == 0 || n > PDU_UID_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!uid_char_ok((unsigned char)uid[i]))
            return false;
    }
    return true;
}

static bool version_name_ok(const char *s)
{
    size_t n = strnlen(s, PDU_AE_MAX + 1);
    if (n > PDU_AE_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7F)
            return false;
    }
    return true;
}

/* Byte sizes of the parts of an A-ASSOCIATE, computed by pdu_check_associate. */
struct assoc_sizes {
    size_t context_item[PDU_MAX_CONTEXTS]; /* each presentation context item, header included */
    size_t user_info;                      /* the user information item, header included */
    size_t body;                           /* the PDU body */
};

static size_t user_identity_rq_size(const struct pdu_user_identity *id)
{
    size_t n = ITEM_HEADER_SIZE + 4 + id->primary_length + 2;
    if (id->type == PDU_IDENTITY_USERNAME_PASSCODE)
        n += id->secondary_length;
    return n;
}

static int check_user_info(enum pdu_type type, const struct pdu_associate *a,
                           struct assoc_sizes *sz, struct tr_error *err)
{
    size_t n = ITEM_HEADER_SIZE + ITEM_HEADER_SIZE + 4; /* the item and its maximum length */
    if (!uid_ok(a->implementation_class_uid))
        return tr_error_set(err, TR_EINVAL,
                            "implementation class UID \"%.64s\" is not 1-64 printable characters",
                            a->implementation_class_uid);
    n += ITEM_HEADER_SIZE + strlen(a->implementation_class_uid);
    if (a->has_async)
        n += ITEM_HEADER_SIZE + 4;
    if (a->role_count > PDU_MAX_ROLES)
        return tr_error_set(err, TR_EINVAL, "%u role selections (at most %d)", a->role_count,
                            PDU_MAX_ROLES);
    for (unsigned i = 0; i < a->role_count; i++) {
        const struct pdu_role *r = &a->role[i];
        if (!uid_ok(r->sop_class))
            return tr_error_set(err, TR_EINVAL, "role selection %u: invalid SOP class UID", i);
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(a->role[j].sop_class, r->sop_class) == 0)
                return tr_error_set(err, TR_EINVAL, "two role selections for SOP class %s",
                                    r->sop_class);
        }
        n += ITEM_HEADER_SIZE + 2 + strlen(r->sop_class) + 2;
    }
    if (!version_name_ok(a->implementation_version))
        return tr_error_set(err, TR_EINVAL,
                            "implementation version name is not 0-16 printable characters");
    if (a->implementation_version[0])
        n += ITEM_HEADER_SIZE + strlen(a->implementation_version);
    if (a->extended_count > PDU_MAX_EXTENDED)
        return tr_error_set(err, TR_EINVAL, "%u extended negotiations (at most %d)",
                            a->extended_count, PDU_MAX_EXTENDED);
    for (unsigned i = 0; i < a->extended_count; i++) {
        const struct pdu_extended *e = &a->extended[i];
        if (!uid_ok(e->sop_class))
            return tr_error_set(err, TR_EINVAL, "extended negotiation %u: invalid SOP class UID",
                                i);
        if (e->info_length && !e->info)
            return tr_error_set(err, TR_EINVAL, "extended negotiation %u: no information", i);
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(a->extended[j].sop_class, e->sop_class) == 0)
                return tr_error_set(err, TR_EINVAL, "two extended negotiations for SOP class %s",
                                    e->sop_class);
        }
        size_t sub = 2 + strlen(e->sop_class) + (size_t)e->info_length;
        if (sub > ITEM_MAX_LENGTH_VALUE)
            return tr_error_set(err, TR_ELIMIT,
                                "extended negotiation for %s: %u bytes of information is too long",
                                e->sop_class, e->info_length);
        n += ITEM_HEADER_SIZE + sub;
    }
    const struct pdu_user_identity *id = &a->identity;
    if (type == PDU_ASSOCIATE_RQ && id->type != PDU_IDENTITY_NONE) {
        if (id->type > PDU_IDENTITY_JWT)
            return tr_error_set(err, TR_EINVAL, "unknown user identity type %u", id->type);
        if (id->primary_length == 0 || !id->primary)
            return tr_error_set(err, TR_EINVAL, "user identity without a primary field");
        if (id->type != PDU_IDENTITY_USERNAME_PASSCODE && id->secondary_length)
            return tr_error_set(err, TR_EINVAL,
                                "user identity type %u has a secondary field (only type 2 has)",
                                id->type);
        if (id->secondary_length && !id->secondary)
            return tr_error_set(err, TR_EINVAL, "user identity secondary field is NULL");
        size_t sub = user_identity_rq_size(id);
        if (sub - ITEM_HEADER_SIZE > ITEM_MAX_LENGTH_VALUE)
            return tr_error_set(err, TR_ELIMIT,
                                "user identity fields of %u + %u bytes do not fit in a sub-item",
                                id->primary_length, id->secondary_length);
        n += sub;
    }
    if (type == PDU_ASSOCIATE_AC && id->has_response) {
        if (id->response_length && !id->response)
            return tr_error_set(err, TR_EINVAL, "user identity server response is NULL");
        if (2 + (size_t)id->response_length > ITEM_MAX_LENGTH_VALUE)
            return tr_error_set(err, TR_ELIMIT,
                                "user identity server response of %u bytes is too long",
                                id->response_length);
        n += ITEM_HEADER_SIZE + 2 + id->response_length;
    }
    if (n - ITEM_HEADER_SIZE > ITEM_MAX_LENGTH_VALUE)
        return tr_error_set(err, TR_ELIMIT,
                            "user information of %zu bytes exceeds the 65535 of an item",
                            n - ITEM_HEADER_SIZE);
    sz->user_info = n;
    return 0;
}

static int check_context(enum pdu_type type, const struct pdu_presentation_context *pc,
                         size_t *size, struct tr_error *err)
{
    if ((pc->id & 1) == 0)
        return tr_error_set(err, TR_EINVAL, "presentation context ID %u is not odd", pc->id);
    size_t n = ITEM_HEADER_SIZE + 4;
    if (type == PDU_ASSOCIATE_RQ) {
        if (!uid_ok(pc->abstract_syntax))
            return tr_error_set(err, TR_EINVAL,
                                "presentation context %u: abstract syntax is not a valid UID",
                                pc->id);
        n += ITEM_HEADER_SIZE + strlen(pc->abstract_syntax);
        if (pc->ts_count == 0 || pc->ts_count > PDU_MAX_TRANSFER_SYNTAXES)
            return tr_error_set(err, TR_EINVAL,
                                "presentation context %u: %u transfer syntaxes (1-%d)", pc->id,
                                pc->ts_count, PDU_MAX_TRANSFER_SYNTAXES);
    } else {
        if (pc->result > PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED)
            return tr_error_set(err, TR_EINVAL, "presentation context %u: result %u is unknown",
                                pc->id, pc->result);
        if (pc->result == PDU_PC_ACCEPTANCE ? pc->ts_count != 1 : pc->ts_count > 1)
            return tr_error_set(err, TR_EINVAL,
                                "presentation context %u: %u transfer syntaxes in an AC", pc->id,
                                pc->ts_count);
        if (pc->ts_count == 0)
            n += ITEM_HEADER_SIZE; /* an empty transfer syntax sub-item (not tested) */
    }
    for (unsigned i = 0; i < pc->ts_count; i++) {
        if (!uid_ok(pc->transfer_syntax[i]))
            return tr_error_set(err, TR_EINVAL,
                                "presentation context %u: transfer syntax %u is not a valid UID",
                                pc->id, i);
        n += ITEM_HEADER_SIZE + strlen(pc->transfer_syntax[i]);
    }
    /* At most 4 + 68 + 32 * 68 bytes: always fits the 16-bit item length. */
    *size = n;
    return 0;
}

static int check_associate(enum pdu_type type, const struct pdu_associate *a,
                           struct assoc_sizes *sz, struct tr_error *err)
{
    if (type != PDU_ASSOCIATE_RQ && type != PDU_ASSOCIATE_AC)
        return tr_error_set(err, TR_EINVAL, "PDU type 0x%02x is not an A-ASSOCIATE-RQ or AC", type);
    if (!pdu_ae_title_is_valid(a->called_ae))
        return tr_error_set(err, TR_EINVAL,
                            "called AE title \"%.16s\" is not 1-16 characters without "
                            "backslash or control characters",
                            a->called_ae);
    if (!pdu_ae_title_is_valid(a->calling_ae))
        return tr_error_set(err, TR_EINVAL,
                            "calling AE title \"%.16s\" is not 1-16 characters without "
                            "backslash or control characters",
                            a->calling_ae);
    const char *app =
        a->application_context[0] ? a->application_context : DICOM_APPLICATION_CONTEXT;
    if (!uid_ok(app))
        return tr_error_set(err, TR_EINVAL, "application context name is not a valid UID");
    size_t body = ASSOC_FIXED_SIZE + ITEM_HEADER_SIZE + strlen(app);
    if (a->context_count == 0 || a->context_count > PDU_MAX_CONTEXTS)
        return tr_error_set(err, TR_EINVAL, "%u presentation contexts (1-%d)", a->context_count,
                            PDU_MAX_CONTEXTS);
    uint8_t used[32] = {0};
    for (unsigned i = 0; i < a->context_count; i++) {
        const struct pdu_presentation_context *pc = &a->context[i];
        int rc = check_context(type, pc, &sz->context_item[i], err);
        if (rc < 0)
            return rc;
        if (used[pc->id / 8] & (1u << (pc->id % 8)))
            return tr_error_set(err, TR_EINVAL, "presentation context ID %u is used twice", pc->id);
        used[pc->id / 8] |= (uint8_t)(1u << (pc->id % 8));
        body += sz->context_item[i];
    }
    int rc = check_user_info(type, a, sz, err);
    if (rc < 0)
        return rc;
    body += sz->user_info;
    sz->body = body;
    return 0;
}

int pdu_check_associate(enum pdu_type type, const struct pdu_associate *a, struct tr_error *err)
{
    struct assoc_sizes sz;
    return check_associate(type, a, &sz, err);
}

/* ---- encoders ---------------------------------------------------------------------------- */

/* Writes into memory reserved beforehand: the sizes were computed and checked. */
struct writer {
    uint8_t *p;
};

static void put8(struct writer *w, uint8_t v)
{
    *w->p++ = v;
}

static void put16(struct writer *w, uint16_t v)
{
    tr_put_be16(w->p, v);
    w->p += 2;
}

static void put32(struct writer *w, uint32_t v)
{
    tr_put_be32(w->p, v);
    w->p += 4;
}

static void put_bytes(struct writer *w, const void *p, size_t n)
{
    if (n)
        memcpy(w->p, p, n);
    w->p += n;
}

static void put_item_header(struct writer *w, uint8_t type, size_t length)
{
    put8(w, type);
    put8(w, 0);
    put16(w, (uint16_t)length);
}

/* An item whose value is a string (UIDs, the version name). */
static void put_string_item(struct writer *w, uint8_t type, const char *s)
{
    size_t n = strlen(s);
    put_item_header(w, type, n);
    put_bytes(w, s, n);
}

static void put_ae(struct writer *w, const char *ae)
{
    size_t n = strlen(ae);
    put_bytes(w, ae, n);
    for (; n < PDU_AE_MAX; n++)
        put8(w, ' ');
}

/* Reserve `size` bytes at the end of out; the caller fills them all. */
static int reserve(struct tr_buf *out, size_t size, struct writer *w)
{
    int rc = tr_buf_grow(out, size);
    if (rc < 0)
        return rc;
    w->p = (uint8_t *)out->data + out->len;
    return 0;
}

/* Account for the `size` bytes written since reserve(). */
static int commit(struct tr_buf *out, const struct writer *w, size_t size)
{
    size_t written = (size_t)(w->p - ((uint8_t *)out->data + out->len));
    if (NEVER(written != size))
        return TR_EINVAL; /* a size computation is wrong; out is left as it was */
    out->len += size;
    out->data[out->len] = '\0';
    return 0;
}

static void put_user_info(struct writer *w, enum pdu_type type, const struct pdu_associate *a,
                          size_t item_size)
{
    /* PS3.8 9.3.2.3; sub-items in increasing type order for older peers (PS3.8 Table 9-16):
     * maximum length (PS3.8 D.1), implementation class UID (PS3.7 D.3.3.2), asynchronous
     * operations window (D.3.3.3), role selections (D.3.3.4), implementation version name
     * (D.3.3.2), extended negotiations (D.3.3.5), user identity (D.3.3.7). */
    put_item_header(w, ITEM_USER_INFORMATION, item_size - ITEM_HEADER_SIZE);
    put_item_header(w, ITEM_MAX_LENGTH, 4);
    put32(w, a->max_length);
    put_string_item(w, ITEM_IMPLEMENTATION_CLASS, a->implementation_class_uid);
    if (a->has_async) {
        put_item_header(w, ITEM_ASYNC_WINDOW, 4);
        put16(w, a->max_ops_invoked);
        put16(w, a->max_ops_performed);
    }
    for (unsigned i = 0; i < a->role_count; i++) {
        const struct pdu_role *r = &a->role[i];
        size_t n = strlen(r->sop_class);
        put_item_header(w, ITEM_ROLE_SELECTION, 2 + n + 2);
        put16(w, (uint16_t)n);
        put_bytes(w, r->sop_class, n);
        put8(w, r->scu ? 1 : 0);
        put8(w, r->scp ? 1 : 0);
    }
    if (a->implementation_version[0])
        put_string_item(w, ITEM_IMPLEMENTATION_VERSION, a->implementation_version);
    for (unsigned i = 0; i < a->extended_count; i++) {
        const struct pdu_extended *e = &a->extended[i];
        size_t n = strlen(e->sop_class);
        put_item_header(w, ITEM_EXTENDED_NEGOTIATION, 2 + n + e->info_length);
        put16(w, (uint16_t)n);
        put_bytes(w, e->sop_class, n);
        put_bytes(w, e->info, e->info_length);
    }
    const struct pdu_user_identity *id = &a->identity;
    if (type == PDU_ASSOCIATE_RQ && id->type != PDU_IDENTITY_NONE) {
        bool two = id->type == PDU_IDENTITY_USERNAME_PASSCODE;
        put_item_header(w, ITEM_USER_IDENTITY_RQ, user_identity_rq_size(id) - ITEM_HEADER_SIZE);
        put8(w, id->type);
        put8(w, id->positive_response ? 1 : 0);
        put16(w, id->primary_length);
        put_bytes(w, id->primary, id->primary_length);
        put16(w, two ? id->secondary_length : 0);
        if (two)
            put_bytes(w, id->secondary, id->secondary_length);
    }
    if (type == PDU_ASSOCIATE_AC && id->has_response) {
        put_item_header(w, ITEM_USER_IDENTITY_AC, 2 + (size_t)id->response_length);
        put16(w, id->response_length);
        put_bytes(w, id->response, id->response_length);
    }
}

static void put_context(struct writer *w, enum pdu_type type,
                        const struct pdu_presentation_context *pc, size_t item_size)
{
    bool rq = type == PDU_ASSOCIATE_RQ;
    /* PS3.8 9.3.2.2 (RQ) and 9.3.3.2 (AC). */
    put_item_header(w, rq ? ITEM_PRESENTATION_CONTEXT_RQ : ITEM_PRESENTATION_CONTEXT_AC,
                    item_size - ITEM_HEADER_SIZE);
    put8(w, pc->id);
    put8(w, 0);
    put8(w, rq ? 0 : pc->result);
    put8(w, 0);
    if (rq)
        put_string_item(w, ITEM_ABSTRACT_SYNTAX, pc->abstract_syntax);
    else if (pc->ts_count == 0)
        put_item_header(w, ITEM_TRANSFER_SYNTAX, 0);
    for (unsigned i = 0; i < pc->ts_count; i++)
        put_string_item(w, ITEM_TRANSFER_SYNTAX, pc->transfer_syntax[i]);
}

static int encode_associate(enum pdu_type type, const struct pdu_associate *a, struct tr_buf *out)
{
    struct assoc_sizes sz;
    int rc = check_associate(type, a, &sz, NULL);
    if (rc < 0)
        return rc;
    if (sz.body > UINT32_MAX) /* cannot happen with 128 contexts, but the field is 32-bit */
        return TR_ELIMIT;
    size_t total = PDU_HEADER_SIZE + sz.body;
    struct writer w;
    rc = reserve(out, total, &w);
    if (rc < 0)
        return rc;
    /* PS3.8 Table 9-11 (RQ) / 9-17 (AC). */
    put8(&w, (uint8_t)type);
    put8(&w, 0);
    put32(&w, (uint32_t)sz.body);
    put16(&w, a->protocol_version);
    put16(&w, 0);
    put_ae(&w, a->called_ae);
    put_ae(&w, a->calling_ae);
    memset(w.p, 0, 32);
    w.p += 32;
    put_string_item(&w, ITEM_APPLICATION_CONTEXT,
                    a->application_context[0] ? a->application_context : DICOM_APPLICATION_CONTEXT);
    for (unsigned i = 0; i < a->context_count; i++)
        put_context(&w, type, &a->context[i], sz.context_item[i]);
    put_user_info(&w, type, a, sz.user_info);
    return commit(out, &w, total);
}

int pdu_encode_associate_rq(const struct pdu_associate *a, struct tr_buf *out)
{
    return encode_associate(PDU_ASSOCIATE_RQ, a, out);
}

int pdu_encode_associate_ac(const struct pdu_associate *a, struct tr_buf *out)
{
    return encode_associate(PDU_ASSOCIATE_AC, a, out);
}

/* The PDUs with a 4-byte body. */
static int encode_short(uint8_t type, uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3,
                        struct tr_buf *out)
{
    const uint8_t pdu[PDU_HEADER_SIZE + 4] = {type, 0, 0, 0, 0, 4, b0, b1, b2, b3};
    return tr_buf_add(out, pdu, sizeof(pdu));
}

static bool reject_valid(const struct pdu_reject *rj)
{
    /* PS3.8 Table 9-21: only the defined combinations are sent. */
    if (rj->result != PDU_RJ_PERMANENT && rj->result != PDU_RJ_TRANSIENT)
        return false;
    switch (rj->source) {
    case PDU_RJ_SOURCE_USER:
        return rj->reason == PDU_RJ_NO_REASON ||
               rj->reason == PDU_RJ_APPLICATION_CONTEXT_NOT_SUPPORTED ||
               rj->reason == PDU_RJ_CALLING_AE_NOT_RECOGNIZED ||
               rj->reason == PDU_RJ_CALLED_AE_NOT_RECOGNIZED;
    case PDU_RJ_SOURCE_PROVIDER_ACSE:
        return rj->reason == PDU_RJ_NO_REASON ||
               rj->reason == PDU_RJ_PROTOCOL_VERSION_NOT_SUPPORTED;
    case PDU_RJ_SOURCE_PROVIDER_PRESENTATION:
        return rj->reason == PDU_RJ_TEMPORARY_CONGESTION ||
               rj->reason == PDU_RJ_LOCAL_LIMIT_EXCEEDED;
    }
    return false;
}

int pdu_encode_associate_rj(const struct pdu_reject *rj, struct tr_buf *out)
{
    if (!reject_valid(rj))
        return TR_EINVAL;
    return encode_short(PDU_ASSOCIATE_RJ, 0, rj->result, rj->source, rj->reason, out);
}

int pdu_encode_release_rq(struct tr_buf *out)
{
    return encode_short(PDU_RELEASE_RQ, 0, 0, 0, 0, out); /* PS3.8 9.3.6 */
}

int pdu_encode_release_rp(struct tr_buf *out)
{
    return encode_short(PDU_RELEASE_RP, 0, 0, 0, 0, out); /* PS3.8 9.3.7 */
}

int pdu_encode_abort(uint8_t source, uint8_t reason, struct tr_buf *out)
{
    /* PS3.8 Table 9-26: a service-user abort has reason 0 ("not significant"). */
    if (source == PDU_ABORT_USER) {
        if (reason != 0)
            return TR_EINVAL;
    } else if (source == PDU_ABORT_PROVIDER) {
        if (reason > PDU_ABORT_INVALID_PARAMETER || reason == 3)
            return TR_EINVAL;
    } else {
        return TR_EINVAL;
    }
    return encode_short(PDU_ABORT, 0, 0, source, reason, out);
}

void pdu_encode_pdata_header(uint8_t context_id, bool command, bool last, uint32_t length,
                             uint8_t hdr[12])
{
    /* PS3.8 9.3.5: PDU header; 9.3.5.1: PDV item length covers the context ID and the message
     * control header (E.2) as well as the data. */
    hdr[0] = PDU_P_DATA_TF;
    hdr[1] = 0;
    tr_put_be32(hdr + 2, length + 6);
    tr_put_be32(hdr + 6, length + 2);
    hdr[10] = context_id;
    hdr[11] = (uint8_t)((command ? 0x01 : 0) | (last ? 0x02 : 0));
}

/* ---- decoders ---------------------------------------------------------------------------- */

struct decoder {
    const uint8_t *body; /* messages give offsets from the PDU start: body - 6 */
    enum pdu_type type;
    struct pdu_associate *a;
    struct tr_error *err;
    uint8_t used_ids[32]; /* presentation context IDs seen */
    bool seen_application_context, seen_user_info;
    bool seen_max_length, seen_implementation_class, seen_async, seen_version, seen_identity;
};

struct item {
    uint8_t type;
    size_t offset;        /* of the item header, from the PDU start */
    const uint8_t *value; /* the item's value (after its 4-byte header) */
    size_t length;
};

static size_t offset_of(const struct decoder *d, const uint8_t *p)
{
    return (size_t)(p - d->body) + PDU_HEADER_SIZE;
}

static int format_error(struct decoder *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int format_error(struct decoder *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tr_error_vset(d->err, TR_EFORMAT, fmt, ap);
    va_end(ap);
    return rc;
}

static int limit_error(struct decoder *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int limit_error(struct decoder *d, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tr_error_vset(d->err, TR_ELIMIT, fmt, ap);
    va_end(ap);
    return rc;
}

static int nomem(struct decoder *d)
{
    return tr_error_set(d->err, TR_ENOMEM, "out of memory");
}

/* The item at p, with `left` bytes up to the end of the enclosing field. */
static int read_item(struct decoder *d, const uint8_t *p, size_t left, struct item *it)
{
    it->offset = offset_of(d, p);
    if (left < ITEM_HEADER_SIZE)
        return format_error(d, "item at byte %zu: %zu bytes left, too few for an item header",
                            it->offset, left);
    it->type = p[0];
    it->length = tr_be16(p + 2);
    it->value = p + ITEM_HEADER_SIZE;
    if (it->length > left - ITEM_HEADER_SIZE)
        return format_error(
            d, "%s (type 0x%02x) at byte %zu: length %zu exceeds the %zu bytes left",
            item_name(it->type), it->type, it->offset, it->length, left - ITEM_HEADER_SIZE);
    return 0;
}

/* Prefix an error raised inside an item with the item's name and position. */
static int in_item(struct decoder *d, const struct item *it, int rc)
{
    if (rc < 0)
        tr_error_prefix(d->err, "%s at byte %zu", item_name(it->type), it->offset);
    return rc;
}

/* A UID: trailing NULs and spaces dropped, then 1-64 printable ASCII characters. */
static int decode_uid(struct decoder *d, const uint8_t *v, size_t n, char out[PDU_UID_MAX + 1])
{
    while (n > 0 && (v[n - 1] == '\0' || v[n - 1] == ' '))
        n--;
    if (n == 0)
        return format_error(d, "empty UID");
    if (n > PDU_UID_MAX)
        return format_error(d, "UID of %zu bytes is longer than %d", n, PDU_UID_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!uid_char_ok(v[i]))
            return format_error(d, "UID has byte 0x%02x at position %zu", v[i], i);
    }
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

static int decode_uid_arena(struct decoder *d, const uint8_t *v, size_t n, const char **out)
{
    char uid[PDU_UID_MAX + 1];
    int rc = decode_uid(d, v, n, uid);
    if (rc < 0)
        return rc;
    char *copy = tr_arena_memdup(&d->a->arena, uid, strlen(uid) + 1);
    if (!copy)
        return nomem(d);
    *out = copy;
    return 0;
}

/* Bytes copied into the arena with a terminating NUL. */
static int copy_bytes(struct decoder *d, const uint8_t *v, size_t n, const char **out)
{
    char *copy = tr_arena_alloc(&d->a->arena, n + 1);
    if (!copy)
        return nomem(d);
    if (n)
        memcpy(copy, v, n);
    copy[n] = '\0';
    *out = copy;
    return 0;
}

static int decode_ae(struct decoder *d, const uint8_t *p, const char *what,
                     char out[PDU_AE_MAX + 1])
{
    size_t start = 0, end = PDU_AE_MAX;
    while (end > 0 && (p[end - 1] == ' ' || p[end - 1] == '\0'))
        end--;
    while (start < end && p[start] == ' ')
        start++;
    size_t n = end - start;
    if (d->type == PDU_ASSOCIATE_RQ) {
        /* PS3.8 9.3.2: 16 spaces "shall not be used"; ISO 646 only. */
        if (n == 0)
            return format_error(d, "%s title at byte %zu is empty", what, offset_of(d, p));
        for (size_t i = start; i < end; i++) {
            if (!ae_char_ok(p[i]))
                return format_error(d, "%s title at byte %zu has byte 0x%02x at position %zu", what,
                                    offset_of(d, p), p[i], i);
        }
        memcpy(out, p + start, n);
    } else {
        /* PS3.8 9.3.3: the AC's copies "shall not be tested". */
        for (size_t i = 0; i < n; i++)
            out[i] = ae_char_ok(p[start + i]) ? (char)p[start + i] : '?';
    }
    out[n] = '\0';
    return 0;
}

/* PS3.8 9.3.2.2 (RQ) and 9.3.3.2 (AC): one presentation context item. */
static int decode_context(struct decoder *d, const struct item *it)
{
    struct pdu_associate *a = d->a;
    bool rq = d->type == PDU_ASSOCIATE_RQ;
    if (it->length < 4)
        return format_error(d, "length %zu is shorter than the 4 fixed bytes", it->length);
    uint8_t id = it->value[0];
    if ((id & 1) == 0)
        return format_error(d, "presentation context ID %u is even (IDs are odd, 1-255)", id);
    if (a->context_count >= PDU_MAX_CONTEXTS)
        return limit_error(d, "more than %d presentation contexts", PDU_MAX_CONTEXTS);
    if (d->used_ids[id / 8] & (1u << (id % 8)))
        return format_error(d, "presentation context ID %u is used twice", id);
    d->used_ids[id / 8] |= (uint8_t)(1u << (id % 8));
    struct pdu_presentation_context *pc = &a->context[a->context_count++];
    memset(pc, 0, sizeof(*pc));
    pc->id = id;
    if (!rq) {
        pc->result = it->value[2];
        if (pc->result > PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED)
            return format_error(d, "presentation context %u: unknown result %u", id, pc->result);
    }
    size_t pos = 4;
    while (pos < it->length) {
        struct item sub;
        int rc = read_item(d, it->value + pos, it->length - pos, &sub);
        if (rc < 0)
            return rc;
        pos += ITEM_HEADER_SIZE + sub.length;
        if (sub.type == ITEM_ABSTRACT_SYNTAX && rq) {
            if (pc->abstract_syntax)
                return in_item(d, &sub, format_error(d, "a second abstract syntax"));
            rc = decode_uid_arena(d, sub.value, sub.length, &pc->abstract_syntax);
        } else if (sub.type == ITEM_TRANSFER_SYNTAX) {
            if (!rq && pc->result != PDU_PC_ACCEPTANCE)
                continue; /* PS3.8 9.3.3.2: not significant, not tested */
            if (!rq && pc->ts_count == 1)
                return in_item(d, &sub, format_error(d, "a second transfer syntax in an AC"));
            if (pc->ts_count >= PDU_MAX_TRANSFER_SYNTAXES)
                return in_item(
                    d, &sub,
                    limit_error(d, "more than %d transfer syntaxes", PDU_MAX_TRANSFER_SYNTAXES));
            rc = decode_uid_arena(d, sub.value, sub.length, &pc->transfer_syntax[pc->ts_count]);
            if (rc == 0)
                pc->ts_count++;
        }
        /* Anything else is skipped (PS3.8 9.3.1). */
        if (rc < 0)
            return in_item(d, &sub, rc);
    }
    if (rq && !pc->abstract_syntax)
        return format_error(d, "presentation context %u has no abstract syntax", id);
    if (rq && pc->ts_count == 0)
        return format_error(d, "presentation context %u has no transfer syntax", id);
    if (!rq && pc->result == PDU_PC_ACCEPTANCE && pc->ts_count == 0)
        return format_error(d, "accepted presentation context %u has no transfer syntax", id);
    return 0;
}

/* PS3.7 D.3.3.4: SCP/SCU role selection. */
static int decode_role(struct decoder *d, const struct item *it)
{
    struct pdu_associate *a = d->a;
    if (it->length < 2)
        return format_error(d, "length %zu is too short", it->length);
    size_t n = tr_be16(it->value);
    if (it->length != 2 + n + 2)
        return format_error(d, "UID length %zu does not match the item length %zu", n, it->length);
    char uid[PDU_UID_MAX + 1];
    int rc = decode_uid(d, it->value + 2, n, uid);
    if (rc < 0)
        return rc;
    bool scu = it->value[2 + n] != 0, scp = it->value[2 + n + 1] != 0;
    for (unsigned i = 0; i < a->role_count; i++) {
        if (strcmp(a->role[i].sop_class, uid) != 0)
            continue;
        if (a->role[i].scu == scu && a->role[i].scp == scp)
            return 0; /* repeated as is: harmless */
        return format_error(d, "conflicting role selections for SOP class %s", uid);
    }
    if (a->role_count >= PDU_MAX_ROLES)
        return limit_error(d, "more than %d role selections", PDU_MAX_ROLES);
    struct pdu_role *r = &a->role[a->role_count];
    rc = copy_bytes(d, (const uint8_t *)uid, strlen(uid), &r->sop_class);
    if (rc < 0)
        return rc;
    r->scu = scu;
    r->scp = scp;
    a->role_count++;
    return 0;
}

/* PS3.7 D.3.3.5: SOP class extended negotiation. */
static int decode_extended(struct decoder *d, const struct item *it)
{
    struct pdu_associate *a = d->a;
    if (it->length < 2)
        return format_error(d, "length %zu is too short", it->length);
    size_t n = tr_be16(it->value);
    if (n > it->length - 2)
        return format_error(d, "UID length %zu exceeds the item length %zu", n, it->length);
    char uid[PDU_UID_MAX + 1];
    int rc = decode_uid(d, it->value + 2, n, uid);
    if (rc < 0)
        return rc;
    const uint8_t *info = it->value + 2 + n;
    size_t info_length = it->length - 2 - n;
    for (unsigned i = 0; i < a->extended_count; i++) {
        const struct pdu_extended *e = &a->extended[i];
        if (strcmp(e->sop_class, uid) != 0)
            continue;
        if (e->info_length == info_length &&
            (!info_length || memcmp(e->info, info, info_length) == 0))
            return 0;
        return format_error(d, "conflicting extended negotiations for SOP class %s", uid);
    }
    if (a->extended_count >= PDU_MAX_EXTENDED)
        return limit_error(d, "more than %d extended negotiations", PDU_MAX_EXTENDED);
    struct pdu_extended *e = &a->extended[a->extended_count];
    const char *copy;
    if ((rc = copy_bytes(d, (const uint8_t *)uid, strlen(uid), &e->sop_class)) < 0 ||
        (rc = copy_bytes(d, info, info_length, &copy)) < 0)
        return rc;
    e->info = (const uint8_t *)copy;
    e->info_length = (unsigned)info_length;
    a->extended_count++;
    return 0;
}

/* PS3.7 D.3.3.6: SOP class common extended negotiation. Not negotiated by telerad (not
 * answering it in the AC means "not supported"), but its structure is checked: SOP class
 * UID, service class UID, then related general SOP class UIDs, each with a 16-bit length. */
static int check_common_extended(struct decoder *d, const struct item *it)
{
    const uint8_t *v = it->value;
    size_t n = it->length, pos = 0;
    for (int field = 0; field < 3; field++) {
        if (n - pos < 2)
            return format_error(d, "ends inside field %d", field + 1);
        size_t len = tr_be16(v + pos);
        pos += 2;
        if (len > n - pos)
            return format_error(d, "field %d length %zu exceeds the %zu bytes left", field + 1, len,
                                n - pos);
        if (field < 2) {
            char uid[PDU_UID_MAX + 1];
            int rc = decode_uid(d, v + pos, len, uid);
            if (rc < 0)
                return rc;
        } else {
            /* Related general SOP class identification: a list of length-prefixed UIDs. */
            size_t end = pos + len;
            while (pos < end) {
                if (end - pos < 2)
                    return format_error(d, "related SOP class list ends inside a length");
                size_t ulen = tr_be16(v + pos);
                pos += 2;
                if (ulen > end - pos)
                    return format_error(d, "related SOP class UID length %zu exceeds the list",
                                        ulen);
                char uid[PDU_UID_MAX + 1];
                int rc = decode_uid(d, v + pos, ulen, uid);
                if (rc < 0)
                    return rc;
                pos += ulen;
            }
            continue;
        }
        pos += len;
    }
    if (pos != n)
        return format_error(d, "%zu bytes after the last field", n - pos);
    return 0;
}

/* PS3.7 D.3.3.7.1: user identity negotiation (RQ). */
static int decode_identity_rq(struct decoder *d, const struct item *it)
{
    struct pdu_user_identity *id = &d->a->identity;
    const uint8_t *v = it->value;
    size_t n = it->length;
    if (n < 4)
        return format_error(d, "length %zu is too short", n);
    uint8_t type = v[0];
    if (type < PDU_IDENTITY_USERNAME || type > PDU_IDENTITY_JWT)
        return format_error(d, "unknown user identity type %u", type);
    size_t primary = tr_be16(v + 2);
    if (primary == 0)
        return format_error(d, "empty primary field");
    if (primary > n - 4)
        return format_error(d, "primary field length %zu exceeds the item", primary);
    size_t pos = 4 + primary, secondary = 0;
    if (pos < n) {
        if (n - pos < 2)
            return format_error(d, "ends inside the secondary field length");
        secondary = tr_be16(v + pos);
        pos += 2;
        if (secondary != n - pos)
            return format_error(d, "secondary field length %zu does not match the %zu bytes left",
                                secondary, n - pos);
    }
    /* else: the secondary field length is missing; taken as 0 (see the top of the file). */
    const char *p;
    int rc = copy_bytes(d, v + 4, primary, &p);
    if (rc < 0)
        return rc;
    id->type = type;
    id->positive_response = v[1] != 0;
    id->primary = p;
    id->primary_length = (uint16_t)primary;
    if (type == PDU_IDENTITY_USERNAME_PASSCODE) {
        /* (no pointer past the item when the secondary field length is missing) */
        rc = copy_bytes(d, secondary ? v + 4 + primary + 2 : v, secondary, &p);
        if (rc < 0)
            return rc;
        id->secondary = p;
        id->secondary_length = (uint16_t)secondary;
    }
    return 0;
}

/* PS3.7 D.3.3.7.2: user identity negotiation (AC). */
static int decode_identity_ac(struct decoder *d, const struct item *it)
{
    struct pdu_user_identity *id = &d->a->identity;
    if (it->length < 2)
        return format_error(d, "length %zu is too short", it->length);
    size_t n = tr_be16(it->value);
    if (n != it->length - 2)
        return format_error(d, "server response length %zu does not match the item length %zu", n,
                            it->length);
    const char *p;
    int rc = copy_bytes(d, it->value + 2, n, &p);
    if (rc < 0)
        return rc;
    id->has_response = true;
    id->response = p;
    id->response_length = (uint16_t)n;
    return 0;
}

static int once(struct decoder *d, bool *seen)
{
    if (*seen)
        return format_error(d, "appears twice");
    *seen = true;
    return 0;
}

/* PS3.8 9.3.2.3 / 9.3.3.3 and Annex D; PS3.7 D.3.3. */
static int decode_user_sub_item(struct decoder *d, const struct item *it)
{
    struct pdu_associate *a = d->a;
    bool rq = d->type == PDU_ASSOCIATE_RQ;
    int rc;
    switch (it->type) {
    case ITEM_MAX_LENGTH:
        if ((rc = once(d, &d->seen_max_length)) < 0)
            return rc;
        if (it->length != 4)
            return format_error(d, "length %zu is not 4", it->length);
        a->max_length = tr_be32(it->value);
        return 0;
    case ITEM_IMPLEMENTATION_CLASS:
        if ((rc = once(d, &d->seen_implementation_class)) < 0)
            return rc;
        return decode_uid(d, it->value, it->length, a->implementation_class_uid);
    case ITEM_ASYNC_WINDOW:
        if ((rc = once(d, &d->seen_async)) < 0)
            return rc;
        if (it->length != 4)
            return format_error(d, "length %zu is not 4", it->length);
        a->has_async = true;
        a->max_ops_invoked = tr_be16(it->value);
        a->max_ops_performed = tr_be16(it->value + 2);
        return 0;
    case ITEM_ROLE_SELECTION: return decode_role(d, it);
    case ITEM_IMPLEMENTATION_VERSION: {
        if ((rc = once(d, &d->seen_version)) < 0)
            return rc;
        /* Informational: truncated to 16, then trailing NULs and spaces dropped (in this
         * order, so that the result has none and encodes back to itself), unprintable bytes
         * replaced. */
        size_t n = TR_MIN(it->length, (size_t)PDU_AE_MAX);
        while (n > 0 && (it->value[n - 1] == '\0' || it->value[n - 1] == ' '))
            n--;
        for (size_t i = 0; i < n; i++) {
            uint8_t c = it->value[i];
            a->implementation_version[i] = c >= 0x20 && c < 0x7F ? (char)c : '?';
        }
        a->implementation_version[n] = '\0';
        return 0;
    }
    case ITEM_EXTENDED_NEGOTIATION: return decode_extended(d, it);
    case ITEM_COMMON_EXTENDED_NEGOTIATION: return check_common_extended(d, it);
    case ITEM_USER_IDENTITY_RQ:
        if (!rq)
            return 0; /* unexpected in an AC: skipped */
        if ((rc = once(d, &d->seen_identity)) < 0)
            return rc;
        return decode_identity_rq(d, it);
    case ITEM_USER_IDENTITY_AC:
        if (rq)
            return 0;
        if ((rc = once(d, &d->seen_identity)) < 0)
            return rc;
        return decode_identity_ac(d, it);
    }
    return 0; /* PS3.8 D.2 note 2: unrecognized sub-items are ignored */
}

static int decode_user_info(struct decoder *d, const struct item *it)
{
    size_t pos = 0;
    while (pos < it->length) {
        struct item sub;
        int rc = read_item(d, it->value + pos, it->length - pos, &sub);
        if (rc < 0)
            return rc;
        pos += ITEM_HEADER_SIZE + sub.length;
        rc = decode_user_sub_item(d, &sub);
        if (rc < 0)
            return in_item(d, &sub, rc);
    }
    return 0;
}

static void reset_associate(struct pdu_associate *a)
{
    tr_arena_release(&a->arena);
    pdu_associate_init(a);
}

int pdu_decode_associate(enum pdu_type type, const uint8_t *body, size_t len,
                         struct pdu_associate *a, struct tr_error *err)
{
    if (type != PDU_ASSOCIATE_RQ && type != PDU_ASSOCIATE_AC)
        return tr_error_set(err, TR_EINVAL, "PDU type 0x%02x is not an A-ASSOCIATE-RQ or AC", type);
    reset_associate(a);
    struct decoder d = {.body = body, .type = type, .a = a, .err = err};
    const char *name = pdu_type_name((uint8_t)type);
    int rc = 0;
    if (len < ASSOC_FIXED_SIZE)
        return tr_error_set(err, TR_EFORMAT,
                            "%s: body of %zu bytes is shorter than its %d fixed bytes", name, len,
                            ASSOC_FIXED_SIZE);
    /* PS3.8 Table 9-11 / 9-17. */
    a->protocol_version = tr_be16(body);
    if ((rc = decode_ae(&d, body + ASSOC_CALLED_AE, "called AE", a->called_ae)) < 0 ||
        (rc = decode_ae(&d, body + ASSOC_CALLING_AE, "calling AE", a->calling_ae)) < 0)
        goto out;
    size_t pos = ASSOC_FIXED_SIZE;
    while (pos < len) {
        struct item it;
        if ((rc = read_item(&d, body + pos, len - pos, &it)) < 0)
            goto out;
        pos += ITEM_HEADER_SIZE + it.length;
        rc = 0;
        switch (it.type) {
        case ITEM_APPLICATION_CONTEXT:
            if ((rc = once(&d, &d.seen_application_context)) == 0)
                rc = decode_uid(&d, it.value, it.length, a->application_context);
            break;
        case ITEM_PRESENTATION_CONTEXT_RQ:
            if (type == PDU_ASSOCIATE_RQ)
                rc = decode_context(&d, &it);
            break;
        case ITEM_PRESENTATION_CONTEXT_AC:
            if (type == PDU_ASSOCIATE_AC)
                rc = decode_context(&d, &it);
            break;
        case ITEM_USER_INFORMATION:
            if ((rc = once(&d, &d.seen_user_info)) == 0)
                rc = decode_user_info(&d, &it);
            break;
        default: break; /* PS3.8 9.3.1: items of unrecognized types are ignored and skipped */
        }
        if (rc < 0) {
            in_item(&d, &it, rc);
            goto out;
        }
    }
    if (!d.seen_application_context)
        rc = tr_error_set(err, TR_EFORMAT, "no application context item");
    else if (a->context_count == 0)
        rc = tr_error_set(err, TR_EFORMAT, "no presentation context item");
    else if (!d.seen_user_info)
        rc = tr_error_set(err, TR_EFORMAT, "no user information item");
out:
    if (rc < 0)
        tr_error_prefix(err, "%s", name);
    return rc;
}

int pdu_decode_associate_rj(const uint8_t *body, size_t len, struct pdu_reject *rj,
                            struct tr_error *err)
{
    /* PS3.8 Table 9-21: reserved, result, source, reason. Extra bytes are ignored so that the
     * reason reaches the user even from a sloppy peer. */
    if (len < 4)
        return tr_error_set(err, TR_EFORMAT, "A-ASSOCIATE-RJ: body of %zu bytes (4 expected)", len);
    rj->result = body[1];
    rj->source = body[2];
    rj->reason = body[3];
    return 0;
}

int pdu_decode_abort(const uint8_t *body, size_t len, uint8_t *source, uint8_t *reason,
                     struct tr_error *err)
{
    /* PS3.8 Table 9-26: reserved, reserved, source, reason. */
    if (len < 4)
        return tr_error_set(err, TR_EFORMAT, "A-ABORT: body of %zu bytes (4 expected)", len);
    *source = body[2];
    *reason = body[3];
    return 0;
}

int pdu_next_pdv(const uint8_t *body, size_t len, size_t *pos, struct pdu_pdv *pdv,
                 struct tr_error *err)
{
    /* PS3.8 9.3.5: one or more PDV items; 9.3.5.1 and E.2 for each. */
    size_t p = *pos;
    if (p > len)
        return tr_error_set(err, TR_EINVAL, "P-DATA-TF: position %zu is past the %zu-byte body", p,
                            len);
    if (p == len) {
        if (len == 0)
            return tr_error_set(err, TR_EFORMAT, "P-DATA-TF: no presentation data value item");
        return 0;
    }
    size_t offset = p + PDU_HEADER_SIZE;
    if (len - p < 6)
        return tr_error_set(err, TR_EFORMAT,
                            "P-DATA-TF: PDV item at byte %zu: %zu bytes left, too few for a "
                            "PDV header (6)",
                            offset, len - p);
    uint32_t item_length = tr_be32(body + p);
    if (item_length < 2)
        return tr_error_set(err, TR_EFORMAT,
                            "P-DATA-TF: PDV item at byte %zu: item length %u is less than 2",
                            offset, item_length);
    if (item_length > len - p - 4)
        return tr_error_set(err, TR_EFORMAT,
                            "P-DATA-TF: PDV item at byte %zu: item length %u exceeds the %zu "
                            "bytes left",
                            offset, item_length, len - p - 4);
    uint8_t id = body[p + 4];
    if ((id & 1) == 0)
        return tr_error_set(err, TR_EFORMAT,
                            "P-DATA-TF: PDV item at byte %zu: presentation context ID %u is even",
                            offset, id);
    uint8_t control = body[p + 5]; /* E.2: bits 2-7 are reserved, not tested */
    pdv->context_id = id;
    pdv->command = (control & 0x01) != 0;
    pdv->last = (control & 0x02) != 0;
    pdv->data = body + p + 6;
    pdv->length = item_length - 2;
    *pos = p + 4 + item_length;
    return 1;
}
