/*
 * dict.h - the DICOM data dictionary: PS3.6 Table 6-1 (generated from the standard, see
 * tools/gen_dict.py), the file meta elements of PS3.10 Table 7.1-1 and the command elements of
 * PS3.7 Table E.1-1. Lookups by tag and by keyword are O(1) (open-addressing hash tables built
 * by the generator).
 */
#ifndef DCM_DICT_H
#define DCM_DICT_H

#include <stdbool.h>
#include <stdint.h>

#include "vr.h"

#define DCM_TAG(group, element) ((uint32_t)(((uint32_t)(group) << 16) | (uint16_t)(element)))
#define DCM_TAG_GROUP(tag) ((uint16_t)((tag) >> 16))
#define DCM_TAG_ELEMENT(tag) ((uint16_t)((tag)&0xFFFF))

struct dcm_dict_entry {
    uint32_t tag;        /* for repeating groups: the tag with the x digits zero */
    uint32_t mask;       /* bits of a tag that must equal `tag` (0xFFFFFFFF unless repeating) */
    const char *keyword; /* "PatientName"; "" for a few retired entries the standard leaves unnamed */
    const char *name;    /* "Patient's Name" */
    const char *vm;      /* "1", "1-n", "2-2n", ... */
    uint8_t vr;          /* enum dcm_vr; for ambiguous VRs the first one listed */
    uint8_t vr_alt;      /* for "US or SS": SS; "OB or OW": OW; "US or SS or OW": SS; else NONE */
    uint8_t vr_alt2;     /* third choice ("US or SS or OW": OW) */
    bool retired;
};

/* Look up a tag. Repeating groups (50xx, 60xx, 7Fxx, 1000,xxx0 ...) are found through their
 * masked entry. Returns NULL for private tags and unknown public tags; see dcm_dict_vr(). */
const struct dcm_dict_entry *dcm_dict_lookup(uint32_t tag);
/* Look up a keyword ("PatientName"); case-sensitive, as in PS3.6. */
const struct dcm_dict_entry *dcm_dict_lookup_keyword(const char *keyword);
/* The VR to use for `tag` where the encoding does not carry one (implicit VR): the dictionary
 * VR; UL for group lengths (gggg,0000); LO for private creators (gggg,0010-00FF, odd gggg); UN
 * for other private and unknown tags. Ambiguous VRs give their first choice. */
enum dcm_vr dcm_dict_vr(uint32_t tag);
/* A keyword for display: the dictionary keyword, "GenericGroupLength", "PrivateCreator", or
 * "" */
const char *dcm_dict_keyword(uint32_t tag);
/* Number of entries in the generated table (for tests). */
unsigned dcm_dict_size(void);
const struct dcm_dict_entry *dcm_dict_entry_at(unsigned i);

static inline bool dcm_tag_is_private(uint32_t tag)
{
    uint16_t g = DCM_TAG_GROUP(tag);
    return (g & 1) && g > 0x0008 && g != 0xFFFF;
}
static inline bool dcm_tag_is_private_creator(uint32_t tag)
{
    uint16_t e = DCM_TAG_ELEMENT(tag);
    return dcm_tag_is_private(tag) && e >= 0x0010 && e <= 0x00FF;
}
static inline bool dcm_tag_is_group_length(uint32_t tag)
{
    return DCM_TAG_ELEMENT(tag) == 0x0000;
}

/* Tags the library itself uses. */
#define DCM_TAG_FileMetaInformationGroupLength 0x00020000u
#define DCM_TAG_FileMetaInformationVersion 0x00020001u
#define DCM_TAG_MediaStorageSOPClassUID 0x00020002u
#define DCM_TAG_MediaStorageSOPInstanceUID 0x00020003u
#define DCM_TAG_TransferSyntaxUID 0x00020010u
#define DCM_TAG_ImplementationClassUID 0x00020012u
#define DCM_TAG_ImplementationVersionName 0x00020013u
#define DCM_TAG_SourceApplicationEntityTitle 0x00020016u
#define DCM_TAG_SpecificCharacterSet 0x00080005u
#define DCM_TAG_SOPClassUID 0x00080016u
#define DCM_TAG_SOPInstanceUID 0x00080018u
#define DCM_TAG_StudyInstanceUID 0x0020000Du
#define DCM_TAG_SeriesInstanceUID 0x0020000Eu
#define DCM_TAG_BitsAllocated 0x00280100u
#define DCM_TAG_PixelRepresentation 0x00280103u
#define DCM_TAG_ExtendedOffsetTable 0x7FE00001u
#define DCM_TAG_ExtendedOffsetTableLengths 0x7FE00002u
#define DCM_TAG_FloatPixelData 0x7FE00008u
#define DCM_TAG_DoubleFloatPixelData 0x7FE00009u
#define DCM_TAG_PixelData 0x7FE00010u
#define DCM_TAG_Item 0xFFFEE000u
#define DCM_TAG_ItemDelimitationItem 0xFFFEE00Du
#define DCM_TAG_SequenceDelimitationItem 0xFFFEE0DDu


#endif
