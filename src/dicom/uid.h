/*
 * uid.h - UIDs: validation, generation, and the registry of transfer syntaxes and SOP classes
 * (PS3.6 Annex A).
 */
#ifndef DCM_UID_H
#define DCM_UID_H

#include <stdbool.h>
#include <stddef.h>

#define DCM_UID_MAX 64

/* telerad's implementation class UID (PS3.7 D.3.3.2) and version name. The root 2.25 is the
 * UUID-derived arc of PS3.5 B.2; the number is fixed for this implementation. */
#define DCM_IMPLEMENTATION_CLASS_UID "2.25.255841346434981862766452371626493557041"
#define DCM_IMPLEMENTATION_VERSION_NAME "TELERAD_010"

#define DCM_UID_ImplicitVRLittleEndian "1.2.840.10008.1.2"
#define DCM_UID_ExplicitVRLittleEndian "1.2.840.10008.1.2.1"
#define DCM_UID_DeflatedExplicitVRLittleEndian "1.2.840.10008.1.2.1.99"
#define DCM_UID_ExplicitVRBigEndian "1.2.840.10008.1.2.2"
#define DCM_UID_RLELossless "1.2.840.10008.1.2.5"
#define DCM_UID_JPEGBaseline8Bit "1.2.840.10008.1.2.4.50"
#define DCM_UID_JPEGLosslessSV1 "1.2.840.10008.1.2.4.70"

/* Flags of a transfer syntax. */
enum dcm_ts_flags {
    DCM_TS_IMPLICIT_VR = 1 << 0,
    DCM_TS_BIG_ENDIAN = 1 << 1,
    DCM_TS_DEFLATED = 1 << 2,     /* the data set after the meta group is a raw deflate stream */
    DCM_TS_ENCAPSULATED = 1 << 3, /* pixel data in fragments (compressed) */
    DCM_TS_LOSSY = 1 << 4,
    DCM_TS_RETIRED = 1 << 5,
    DCM_TS_REFERENCED = 1 << 6,   /* pixel data not in the data set (JPIP referenced) */
};

struct dcm_transfer_syntax {
    const char *uid;
    const char *keyword; /* "ExplicitVRLittleEndian" */
    const char *name;    /* "Explicit VR Little Endian" */
    unsigned flags;      /* enum dcm_ts_flags */
};

/* NULL if the UID is not a transfer syntax we know. */
const struct dcm_transfer_syntax *dcm_ts_lookup(const char *uid);
const struct dcm_transfer_syntax *dcm_ts_at(unsigned i); /* iterate; NULL past the end */

struct dcm_uid_entry {
    const char *uid;
    const char *keyword; /* "CTImageStorage" */
    const char *name;    /* "CT Image Storage" */
    const char *type;    /* "Transfer Syntax", "SOP Class", "Well-known SOP Instance", ... */
};
/* Any UID of the registry (transfer syntaxes, SOP classes, well-known instances). */
const struct dcm_uid_entry *dcm_uid_lookup(const char *uid);
const struct dcm_uid_entry *dcm_uid_lookup_keyword(const char *keyword);
/* Iterate over the registry (sorted by UID); NULL past the end. */
const struct dcm_uid_entry *dcm_uid_at(unsigned i);
/* True for a storage SOP class (a SOP class for C-STORE: "... Storage", not media storage
 * directories). */
bool dcm_uid_is_storage(const struct dcm_uid_entry *e);

/* PS3.5 9.1: 1-64 characters, digits and dots, components without leading zeros, not empty. */
bool dcm_uid_is_valid(const char *uid, size_t len);
/* Write a new unique UID ("2.25." + a random 128-bit UUID as decimal) into buf (>= 65 bytes). */
int dcm_uid_generate(char buf[DCM_UID_MAX + 1]);

#endif
