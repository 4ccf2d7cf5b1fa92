/*
 * dataset.h - the data set model (PS3.5 7): elements in tag order, sequences of items nested
 * to any depth, encapsulated pixel data as fragments.
 *
 * Memory. A root data set owns an arena in which all of its elements, items and copied values
 * live, and may reference a source buffer (a mapped file) whose bytes element values point
 * into: values are not copied when a file is read. Items belong to their root and are freed
 * with it. Numbers are held little endian whatever the encoding they were read from.
 *
 * Text. String values are held as the bytes of the encoding (the Specific Character Set of
 * the item or, failing that, of its parents). dcm_element_get_string() and friends decode to
 * UTF-8; setters take UTF-8 and encode to the data set's character set (see dataset setters).
 *
 * Pointers. A `const struct dcm_element *` obtained from a data set stays valid until that
 * data set (not its items) is modified. Iterate with dcm_dataset_count()/dcm_dataset_at().
 */
#ifndef DCM_DATASET_H
#define DCM_DATASET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "charset.h"
#include "error.h"
#include "vr.h"

#define DCM_UNDEFINED_LENGTH 0xFFFFFFFFu
#define DCM_NO_OFFSET UINT64_MAX

struct dcm_dataset;

enum dcm_element_flags {
    DCM_ELEM_UNDEFINED_LENGTH = 1 << 0, /* read with undefined length; written the same way */
    DCM_ELEM_ENCAPSULATED = 1 << 1,     /* value.fragments holds the value (compressed pixels) */
    DCM_ELEM_IMPLICIT_VR = 1 << 2,      /* VR came from the dictionary, not from the stream */
    DCM_ELEM_VR_GUESSED = 1 << 3,       /* VR in the stream was invalid or contradicted by content
                                           (e.g. UN holding a sequence) and was replaced */
};

/* One fragment of encapsulated pixel data (PS3.5 A.4). Fragment 0 is the Basic Offset Table. */
struct dcm_fragment {
    const uint8_t *bytes;
    uint32_t length;
    uint64_t offset; /* of the fragment's value in the source, or DCM_NO_OFFSET */
};

struct dcm_element {
    uint32_t tag;
    uint8_t vr;      /* enum dcm_vr */
    uint8_t flags;   /* enum dcm_element_flags */
    uint32_t length; /* bytes of value for plain values; for SQ and encapsulated elements the
                        length as read (DCM_UNDEFINED_LENGTH when undefined) */
    uint64_t offset; /* byte offset of the value in the source (file), or DCM_NO_OFFSET */
    union {
        const uint8_t *bytes; /* plain values: `length` bytes, unpadded as read */
        struct {
            struct dcm_dataset **item;
            uint32_t count, cap;
        } items; /* SQ */
        struct {
            struct dcm_fragment *fragment;
            uint32_t count, cap;
        } fragments; /* DCM_ELEM_ENCAPSULATED */
    } value;
};

/* ---- data sets ---------------------------------------------------------------------------- */

/* A new, empty root data set; NULL when out of memory. */
struct dcm_dataset *dcm_dataset_new(void);
/* Free a root data set with all its items and its reference to the source. NULL is a no-op.
 * Items cannot be freed on their own: remove them from their sequence instead. */
void dcm_dataset_free(struct dcm_dataset *ds);
/* A deep copy as a new root (values copied: it does not reference the source). */
struct dcm_dataset *dcm_dataset_copy(const struct dcm_dataset *ds, struct tr_error *err);

/* Copy element `tag` (deep: sequences with their items) from src into dst, replacing any.
 * TR_ENOTFOUND if src has no such element. Text is copied as bytes: both data sets should use
 * the same character set (convert with dcm_dataset_convert_to_utf8 first). */
int dcm_dataset_copy_element(struct dcm_dataset *dst, const struct dcm_dataset *src, uint32_t tag,
                             struct tr_error *err);

/* The item's parent data set, NULL for a root. */
struct dcm_dataset *dcm_dataset_parent(const struct dcm_dataset *ds);
/* Nesting depth: 0 for a root, 1 for its items ... */
unsigned dcm_dataset_depth(const struct dcm_dataset *ds);

size_t dcm_dataset_count(const struct dcm_dataset *ds);
/* The i-th element in ascending tag order. */
const struct dcm_element *dcm_dataset_at(const struct dcm_dataset *ds, size_t i);
/* The element with `tag`, or NULL. O(log n). */
const struct dcm_element *dcm_dataset_get(const struct dcm_dataset *ds, uint32_t tag);
int dcm_dataset_remove(struct dcm_dataset *ds, uint32_t tag); /* 0 or TR_ENOTFOUND */
/* Remove every element for which `keep` returns false. */
void dcm_dataset_filter(struct dcm_dataset *ds,
                        bool (*keep)(const struct dcm_element *e, void *ctx), void *ctx);

/* The character set in force for text in this data set: its own (0008,0005) or its nearest
 * parent's; the default repertoire if none. */
const struct dcm_charset *dcm_dataset_charset(const struct dcm_dataset *ds);

/* ---- element values ------------------------------------------------------------------------ */

/* Number of values (VM): backslash-separated values for strings (1 for LT/ST/UT/UR), length /
 * size for binary numbers, items for SQ, 1 for non-empty byte VRs, 0 when empty. */
unsigned dcm_element_vm(const struct dcm_element *e);
bool dcm_element_is_empty(const struct dcm_element *e);

/* Append the `index`-th value of a string element, decoded to UTF-8, with the padding and the
 * insignificant spaces of its VR removed (PS3.5 6.2: leading and trailing for most VRs,
 * trailing only for LT, ST, UT, UR, and trailing NULs for UI). `ds` is the data set holding `e`
 * (for its character set). index = -1 (as unsigned: DCM_ALL_VALUES) gives the whole value with
 * its backslashes. TR_ENOTFOUND if there is no such value, TR_EINVAL if `e` is not a string. */
#define DCM_ALL_VALUES (~0u)
int dcm_element_get_string(const struct dcm_dataset *ds, const struct dcm_element *e,
                           unsigned index, struct tr_buf *out);
/* Integer value: IS (parsed), SS, US, SL, UL, SV, UV (if <= INT64_MAX), AT. TR_EINVAL when the
 * VR has no integer reading or the text is not an integer; TR_ENOTFOUND past the last value. */
int dcm_element_get_int(const struct dcm_element *e, unsigned index, int64_t *out);
int dcm_element_get_uint(const struct dcm_element *e, unsigned index, uint64_t *out);
/* Floating value: DS (parsed), FL, FD, OF, OD and every integer VR. */
int dcm_element_get_float(const struct dcm_element *e, unsigned index, double *out);
/* Tag value of an AT element. */
int dcm_element_get_tag(const struct dcm_element *e, unsigned index, uint32_t *out);
/* Sequence items (SQ only; NULL past the end). */
unsigned dcm_element_item_count(const struct dcm_element *e);
struct dcm_dataset *dcm_element_item(const struct dcm_element *e, unsigned index);

/* Convenience getters by tag, on a data set. They return TR_ENOTFOUND when the element is
 * absent or empty. */
/* One value, decoded and trimmed, into buf (NUL-terminated); TR_ELIMIT if it does not fit. */
int dcm_dataset_get_string(const struct dcm_dataset *ds, uint32_t tag, unsigned index, char *buf,
                           size_t size);
/* The whole value decoded and trimmed, as a string the caller frees with tr_free(). NULL if
 * absent, empty or on error (then `err`, if given, says why). */
char *dcm_dataset_get_text(const struct dcm_dataset *ds, uint32_t tag, struct tr_error *err);
int dcm_dataset_get_int(const struct dcm_dataset *ds, uint32_t tag, unsigned index, int64_t *out);
int dcm_dataset_get_float(const struct dcm_dataset *ds, uint32_t tag, unsigned index,
                          double *out);
int dcm_dataset_get_tag(const struct dcm_dataset *ds, uint32_t tag, unsigned index, uint32_t *out);
/* A UID (trailing NUL and space padding removed) into buf of DCM_UID_MAX + 1 bytes. */
int dcm_dataset_get_uid(const struct dcm_dataset *ds, uint32_t tag, char *buf, size_t size);

/* ---- setters -------------------------------------------------------------------------------
 * Each replaces the element if present. `vr` = DCM_VR_NONE takes the VR from the dictionary
 * (an ambiguous VR gives its first choice; a tag unknown to the dictionary is TR_EINVAL).
 * Values are checked against the VR (length, character repertoire, range) and copied. */

/* A string value in UTF-8, multiple values separated by backslashes. Text VRs are encoded in the
 * data set's character set; if that cannot represent the text and the data set has no
 * Specific Character Set of its own or its parents, "ISO_IR 192" is added to the root;
 * otherwise TR_ECHARSET. */
int dcm_dataset_set_string(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const char *utf8);
int dcm_dataset_set_strings(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                            const char *const *values, size_t count);
/* Integers for IS, SS, US, SL, UL, SV, UV, AT; range-checked for the VR. */
int dcm_dataset_set_ints(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                         const int64_t *values, size_t count);
int dcm_dataset_set_int(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, int64_t value);
/* Floats for DS (formatted in at most 16 characters), FL, FD, OF, OD. */
int dcm_dataset_set_floats(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                           const double *values, size_t count);
int dcm_dataset_set_float(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, double value);
int dcm_dataset_set_tag(struct dcm_dataset *ds, uint32_t tag, uint32_t value);
/* A UID, validated (PS3.5 9.1). */
int dcm_dataset_set_uid(struct dcm_dataset *ds, uint32_t tag, const char *uid);
/* Raw value bytes (little endian for binary numbers), copied; any VR but SQ. */
int dcm_dataset_set_bytes(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr, const void *data,
                          size_t length);
/* An empty (zero-length) element, e.g. a type 2 attribute or a C-FIND return key. */
int dcm_dataset_set_empty(struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr);
/* Make `tag` an empty sequence (replacing any value). */
int dcm_dataset_set_sequence(struct dcm_dataset *ds, uint32_t tag);
/* Append a new empty item to sequence `tag` (created if absent) and return it; NULL on error. */
struct dcm_dataset *dcm_dataset_add_item(struct dcm_dataset *ds, uint32_t tag,
                                         struct tr_error *err);
/* Remove item `index` of sequence `tag`. */
int dcm_dataset_remove_item(struct dcm_dataset *ds, uint32_t tag, unsigned index);

/* Re-encode every text value of the data set and its items in UTF-8 and set Specific Character
 * Set to "ISO_IR 192" (or remove it when all text is ASCII). */
int dcm_dataset_convert_to_utf8(struct dcm_dataset *ds, struct tr_error *err);

/* DICOM wildcard matching (PS3.4 C.2.2.2.4): '*' any run of characters, '?' one character
 * (UTF-8 aware), everything else literal. */
bool dcm_wildcard_match(const char *pattern, const char *text);

/* ---- low level (used by the readers) -------------------------------------------------------- */

/* Insert or replace an element by value: `e` is copied but its value bytes, items and
 * fragments are referenced as they are (they must live in this data set's root arena or
 * source). Appending in ascending tag order is O(1). Returns a pointer to the stored element. */
struct dcm_element *dcm_dataset_put(struct dcm_dataset *ds, const struct dcm_element *e);
/* Allocate from the root's arena (for values that will be referenced by elements). */
void *dcm_dataset_alloc(struct dcm_dataset *ds, size_t size);
/* A new empty item belonging to ds's root, with ds as its parent (not yet in any sequence). */
struct dcm_dataset *dcm_dataset_new_item(struct dcm_dataset *ds);
/* Append an item / a fragment to an SQ / encapsulated element stored in ds. */
int dcm_element_append_item(struct dcm_dataset *ds, struct dcm_element *e,
                            struct dcm_dataset *item);
int dcm_element_append_fragment(struct dcm_dataset *ds, struct dcm_element *e,
                                const struct dcm_fragment *f);

/* Reference-counted source buffer that element values may point into. */
struct dcm_source;
/* Attach a source to a root: the data set keeps a reference until it is freed. */
void dcm_dataset_attach_source(struct dcm_dataset *ds, struct dcm_source *src);

#endif
