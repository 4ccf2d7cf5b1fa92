/*
 * dict.c - data dictionary lookups (PS3.6) over the generated table in dict_table.c.
 *
 * The hash functions must match tools/gen_dict.py: Fibonacci hashing of the 32-bit tag, and
 * FNV-1a of the keyword, both keeping the top bits.
 */
#include "dicom_int.h"
#include "dict_int.h"

static inline unsigned tag_hash(uint32_t tag, unsigned bits)
{
    return (uint32_t)(tag * 2654435761u) >> (32 - bits);
}

static inline unsigned keyword_hash(const char *kw, unsigned bits)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)kw; *p; p++) {
        h ^= *p;
        h *= 16777619u;
    }
    return h >> (32 - bits);
}

static const struct dcm_dict_entry *lookup_exact(uint32_t tag)
{
    const unsigned mask = (1u << DCM_DICT_TAG_BITS) - 1;
    for (unsigned slot = tag_hash(tag, DCM_DICT_TAG_BITS);; slot = (slot + 1) & mask) {
        unsigned idx = dcm_dict_tag_slots[slot];
        if (idx == 0)
            return NULL;
        if (dcm_dict_entries[idx - 1].tag == tag)
            return &dcm_dict_entries[idx - 1];
    }
}

static const struct dcm_dict_entry *lookup_repeating(uint32_t tag)
{
    const unsigned slots = (1u << DCM_DICT_REPEATING_BITS) - 1;
    for (unsigned m = 0; m < dcm_dict_repeating_mask_count; m++) {
        uint32_t mask = dcm_dict_repeating_masks[m];
        uint32_t key = tag & mask;
        for (unsigned slot = tag_hash(key, DCM_DICT_REPEATING_BITS);; slot = (slot + 1) & slots) {
            unsigned idx = dcm_dict_repeating_slots[slot];
            if (idx == 0)
                break;
            const struct dcm_dict_entry *e = &dcm_dict_entries[idx - 1];
            if (e->tag == key && e->mask == mask)
                return e;
        }
    }
    return NULL;
}

const struct dcm_dict_entry *dcm_dict_lookup(uint32_t tag)
{
    if (dcm_tag_is_private(tag))
        return NULL;
    const struct dcm_dict_entry *e = lookup_exact(tag);
    if (e)
        return e;
    return lookup_repeating(tag);
}

const struct dcm_dict_entry *dcm_dict_lookup_keyword(const char *keyword)
{
    if (!keyword || !*keyword)
        return NULL;
    const unsigned mask = (1u << DCM_DICT_KEYWORD_BITS) - 1;
    for (unsigned slot = keyword_hash(keyword, DCM_DICT_KEYWORD_BITS);; slot = (slot + 1) & mask) {
        unsigned idx = dcm_dict_keyword_slots[slot];
        if (idx == 0)
            return NULL;
        if (strcmp(dcm_dict_entries[idx - 1].keyword, keyword) == 0)
            return &dcm_dict_entries[idx - 1];
    }
}

enum dcm_vr dcm_dict_vr(uint32_t tag)
{
    if (dcm_tag_is_group_length(tag))
        return DCM_VR_UL;
    if (dcm_tag_is_private(tag))
        return dcm_tag_is_private_creator(tag) ? DCM_VR_LO : DCM_VR_UN;
    const struct dcm_dict_entry *e = dcm_dict_lookup(tag);
    if (!e || e->vr == DCM_VR_NONE)
        return DCM_VR_UN;
    return (enum dcm_vr)e->vr;
}

const char *dcm_dict_keyword(uint32_t tag)
{
    const struct dcm_dict_entry *e = dcm_dict_lookup(tag);
    if (e && e->keyword[0])
        return e->keyword;
    if (dcm_tag_is_group_length(tag))
        return "GenericGroupLength";
    if (dcm_tag_is_private_creator(tag))
        return "PrivateCreator";
    return "";
}

unsigned dcm_dict_size(void)
{
    return dcm_dict_entry_count;
}

const struct dcm_dict_entry *dcm_dict_entry_at(unsigned i)
{
    return i < dcm_dict_entry_count ? &dcm_dict_entries[i] : NULL;
}
