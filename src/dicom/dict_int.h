/*
 * dict_int.h - what the generated dictionary table (dict_table.c) exports to dict.c.
 */
#ifndef DCM_DICT_INT_H
#define DCM_DICT_INT_H

#include <stdint.h>

#include "dict.h"

#define DCM_DICT_TAG_BITS 14
#define DCM_DICT_KEYWORD_BITS 14
#define DCM_DICT_REPEATING_BITS 8

extern const struct dcm_dict_entry dcm_dict_entries[];
extern const unsigned dcm_dict_entry_count;
/* Slot -> entry index + 1 (0 = empty). Hash functions: see dict.c and tools/gen_dict.py. */
extern const uint16_t dcm_dict_tag_slots[1u << DCM_DICT_TAG_BITS];
extern const uint16_t dcm_dict_repeating_slots[1u << DCM_DICT_REPEATING_BITS];
extern const uint16_t dcm_dict_keyword_slots[1u << DCM_DICT_KEYWORD_BITS];
extern const uint32_t dcm_dict_repeating_masks[];
extern const unsigned dcm_dict_repeating_mask_count;

#endif
