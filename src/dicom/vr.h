/*
 * vr.h - the 34 value representations of PS3.5 6.2 and their encoding rules.
 */
#ifndef DCM_VR_H
#define DCM_VR_H

#include <stdbool.h>
#include <stdint.h>

enum dcm_vr {
    DCM_VR_NONE = 0, /* no VR (items, delimiters) or not yet known */
    DCM_VR_AE, DCM_VR_AS, DCM_VR_AT, DCM_VR_CS, DCM_VR_DA, DCM_VR_DS, DCM_VR_DT, DCM_VR_FD,
    DCM_VR_FL, DCM_VR_IS, DCM_VR_LO, DCM_VR_LT, DCM_VR_OB, DCM_VR_OD, DCM_VR_OF, DCM_VR_OL,
    DCM_VR_OV, DCM_VR_OW, DCM_VR_PN, DCM_VR_SH, DCM_VR_SL, DCM_VR_SQ, DCM_VR_SS, DCM_VR_ST,
    DCM_VR_SV, DCM_VR_TM, DCM_VR_UC, DCM_VR_UI, DCM_VR_UL, DCM_VR_UN, DCM_VR_UR, DCM_VR_US,
    DCM_VR_UT, DCM_VR_UV,
    DCM_VR_COUNT
};

/* How a VR's value is laid out. */
enum dcm_vr_kind {
    DCM_VR_KIND_NONE,   /* DCM_VR_NONE */
    DCM_VR_KIND_STRING, /* character string; multiple values separated by backslash */
    DCM_VR_KIND_TEXT,   /* LT, ST, UT: character string, backslash is not a delimiter */
    DCM_VR_KIND_NUMBER, /* binary numbers of a fixed size (AT, FD, FL, SL, SS, SV, UL, US, UV) */
    DCM_VR_KIND_BYTES,  /* OB, OD, OF, OL, OV, OW, UN: an opaque byte or word stream */
    DCM_VR_KIND_SEQUENCE,
};

struct dcm_vr_info {
    char code[3];          /* "AE" */
    enum dcm_vr_kind kind;
    uint8_t size;          /* bytes per value for NUMBER and word size for BYTES (OW: 2) */
    bool long_header;      /* explicit VR uses the 12-byte header with a 32-bit length */
    bool charset;          /* value is text in the Specific Character Set (SH, LO, ST, LT, UC, UT, PN) */
    char pad;              /* padding byte to reach an even length (' ' or '\0') */
    uint32_t max_length;   /* maximum length of one value in characters (strings), 0 = no limit */
};

const struct dcm_vr_info *dcm_vr_info(enum dcm_vr vr);
/* The two-letter code, "??" for values outside the table. */
const char *dcm_vr_name(enum dcm_vr vr);
/* Parse two bytes of an explicit-VR header; DCM_VR_NONE if they are not a VR. */
enum dcm_vr dcm_vr_from_code(const uint8_t code[2]);
enum dcm_vr dcm_vr_from_string(const char *s);

static inline bool dcm_vr_is_string(enum dcm_vr vr)
{
    enum dcm_vr_kind k = dcm_vr_info(vr)->kind;
    return k == DCM_VR_KIND_STRING || k == DCM_VR_KIND_TEXT;
}

#endif
