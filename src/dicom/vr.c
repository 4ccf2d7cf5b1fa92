/*
 * vr.c - value representation table (PS3.5 6.2, Table 6.2-1; explicit VR header forms from
 * PS3.5 7.1.2).
 */
#include "dicom_int.h"

#define S DCM_VR_KIND_STRING
#define T DCM_VR_KIND_TEXT
#define N DCM_VR_KIND_NUMBER
#define B DCM_VR_KIND_BYTES

static const struct dcm_vr_info vr_table[DCM_VR_COUNT] = {
    [DCM_VR_NONE] = {"--", DCM_VR_KIND_NONE, 0, false, false, 0, 0},
    [DCM_VR_AE] = {"AE", S, 0, false, false, ' ', 16},
    [DCM_VR_AS] = {"AS", S, 0, false, false, ' ', 4},
    [DCM_VR_AT] = {"AT", N, 4, false, false, 0, 0},
    [DCM_VR_CS] = {"CS", S, 0, false, false, ' ', 16},
    [DCM_VR_DA] = {"DA", S, 0, false, false, ' ', 8},
    [DCM_VR_DS] = {"DS", S, 0, false, false, ' ', 16},
    [DCM_VR_DT] = {"DT", S, 0, false, false, ' ', 26},
    [DCM_VR_FD] = {"FD", N, 8, false, false, 0, 0},
    [DCM_VR_FL] = {"FL", N, 4, false, false, 0, 0},
    [DCM_VR_IS] = {"IS", S, 0, false, false, ' ', 12},
    [DCM_VR_LO] = {"LO", S, 0, false, true, ' ', 64},
    [DCM_VR_LT] = {"LT", T, 0, false, true, ' ', 10240},
    [DCM_VR_OB] = {"OB", B, 1, true, false, 0, 0},
    [DCM_VR_OD] = {"OD", B, 8, true, false, 0, 0},
    [DCM_VR_OF] = {"OF", B, 4, true, false, 0, 0},
    [DCM_VR_OL] = {"OL", B, 4, true, false, 0, 0},
    [DCM_VR_OV] = {"OV", B, 8, true, false, 0, 0},
    [DCM_VR_OW] = {"OW", B, 2, true, false, 0, 0},
    [DCM_VR_PN] = {"PN", S, 0, false, true, ' ', 64},
    [DCM_VR_SH] = {"SH", S, 0, false, true, ' ', 16},
    [DCM_VR_SL] = {"SL", N, 4, false, false, 0, 0},
    [DCM_VR_SQ] = {"SQ", DCM_VR_KIND_SEQUENCE, 0, true, false, 0, 0},
    [DCM_VR_SS] = {"SS", N, 2, false, false, 0, 0},
    [DCM_VR_ST] = {"ST", T, 0, false, true, ' ', 1024},
    [DCM_VR_SV] = {"SV", N, 8, true, false, 0, 0},
    [DCM_VR_TM] = {"TM", S, 0, false, false, ' ', 14},
    [DCM_VR_UC] = {"UC", S, 0, true, true, ' ', 0},
    [DCM_VR_UI] = {"UI", S, 0, false, false, '\0', 64},
    [DCM_VR_UL] = {"UL", N, 4, false, false, 0, 0},
    [DCM_VR_UN] = {"UN", B, 1, true, false, 0, 0},
    [DCM_VR_UR] = {"UR", T, 0, true, false, ' ', 0},
    [DCM_VR_US] = {"US", N, 2, false, false, 0, 0},
    [DCM_VR_UT] = {"UT", T, 0, true, true, ' ', 0},
    [DCM_VR_UV] = {"UV", N, 8, true, false, 0, 0},
};

#undef S
#undef T
#undef N
#undef B

const struct dcm_vr_info *dcm_vr_info(enum dcm_vr vr)
{
    if ((unsigned)vr >= DCM_VR_COUNT)
        return &vr_table[DCM_VR_NONE];
    return &vr_table[vr];
}

const char *dcm_vr_name(enum dcm_vr vr)
{
    if ((unsigned)vr >= DCM_VR_COUNT || vr == DCM_VR_NONE)
        return "??";
    return vr_table[vr].code;
}

#define VR_INDEX(a, b) (((a) - 'A') * 26 + ((b) - 'A'))

/* Two upper-case letters -> VR, one table lookup (this runs for every explicit VR element). */
static const uint8_t vr_by_code[26 * 26] = {
    [VR_INDEX('A', 'E')] = DCM_VR_AE, [VR_INDEX('A', 'S')] = DCM_VR_AS,
    [VR_INDEX('A', 'T')] = DCM_VR_AT, [VR_INDEX('C', 'S')] = DCM_VR_CS,
    [VR_INDEX('D', 'A')] = DCM_VR_DA, [VR_INDEX('D', 'S')] = DCM_VR_DS,
    [VR_INDEX('D', 'T')] = DCM_VR_DT, [VR_INDEX('F', 'D')] = DCM_VR_FD,
    [VR_INDEX('F', 'L')] = DCM_VR_FL, [VR_INDEX('I', 'S')] = DCM_VR_IS,
    [VR_INDEX('L', 'O')] = DCM_VR_LO, [VR_INDEX('L', 'T')] = DCM_VR_LT,
    [VR_INDEX('O', 'B')] = DCM_VR_OB, [VR_INDEX('O', 'D')] = DCM_VR_OD,
    [VR_INDEX('O', 'F')] = DCM_VR_OF, [VR_INDEX('O', 'L')] = DCM_VR_OL,
    [VR_INDEX('O', 'V')] = DCM_VR_OV, [VR_INDEX('O', 'W')] = DCM_VR_OW,
    [VR_INDEX('P', 'N')] = DCM_VR_PN, [VR_INDEX('S', 'H')] = DCM_VR_SH,
    [VR_INDEX('S', 'L')] = DCM_VR_SL, [VR_INDEX('S', 'Q')] = DCM_VR_SQ,
    [VR_INDEX('S', 'S')] = DCM_VR_SS, [VR_INDEX('S', 'T')] = DCM_VR_ST,
    [VR_INDEX('S', 'V')] = DCM_VR_SV, [VR_INDEX('T', 'M')] = DCM_VR_TM,
    [VR_INDEX('U', 'C')] = DCM_VR_UC, [VR_INDEX('U', 'I')] = DCM_VR_UI,
    [VR_INDEX('U', 'L')] = DCM_VR_UL, [VR_INDEX('U', 'N')] = DCM_VR_UN,
    [VR_INDEX('U', 'R')] = DCM_VR_UR, [VR_INDEX('U', 'S')] = DCM_VR_US,
    [VR_INDEX('U', 'T')] = DCM_VR_UT, [VR_INDEX('U', 'V')] = DCM_VR_UV,
};

enum dcm_vr dcm_vr_from_code(const uint8_t code[2])
{
    if (code[0] < 'A' || code[0] > 'Z' || code[1] < 'A' || code[1] > 'Z')
        return DCM_VR_NONE;
    return (enum dcm_vr)vr_by_code[VR_INDEX(code[0], code[1])];
}

enum dcm_vr dcm_vr_from_string(const char *s)
{
    if (!s || strlen(s) != 2)
        return DCM_VR_NONE;
    return dcm_vr_from_code((const uint8_t *)s);
}
