/*
 * deid.h - de-identification of data sets (PS3.15 Annex E: the Basic Application Level
 * Confidentiality Profile and its options) and keyed pseudonymization.
 *
 * Two entry points, both in place and both deterministic for a given key:
 *
 *  - dcm_deid_dataset() / dcm_deid_file(): the Basic Profile of PS3.15 Table E.1-1 with any of
 *    the options of E.3 (but Clean Pixel Data and Clean Recognizable Visual Features: pixel
 *    data is never changed; burned-in text is flagged in the report, see below). Patient
 *    Identity Removed, De-identification Method and its Code Sequence (CID 7050) are set.
 *    For data leaving the organisation (research, teaching, second opinion).
 *
 *  - dcm_pseudonymize_dataset(): lighter, for on-the-fly use by the server on each response to
 *    a reader outside the data's region (DESIGN.md invariant 3): person names, identifiers,
 *    dates and instance UIDs are replaced by values computed from the key; everything else
 *    (descriptions, institution, technique) stays. The origin keeps the key, so it can map a
 *    pseudonymous UID or ID back by recomputing (dcm_deid_map_uid,
 *    dcm_deid_patient_pseudonym) over its own index: no mapping table is stored.
 *
 * Keyed mappings (both entry points), with K the caller's key (at least 16 bytes):
 *  - a UID u becomes "2.25." + the decimal of the first 128 bits of HMAC-SHA256(K, u): a valid
 *    UID of at most 44 characters (PS3.5 B.2), the same for the same K and u in every file and
 *    run, so that references (Referenced SOP Instance UID in sequences, Frame of Reference,
 *    the meta group's Media Storage SOP Instance UID) stay consistent. UIDs under the DICOM
 *    root 1.2.840.10008 or in the registry (SOP classes, transfer syntaxes, well-known frames
 *    of reference) are never changed.
 *  - Patient ID becomes the patient pseudonym "P" + the first 16 hex digits (upper case) of
 *    HMAC-SHA256(K, "patient\0" issuer "\0" id), where issuer is Issuer of Patient ID and id
 *    Patient ID (Patient's Name when Patient ID is empty), both as decoded text; Patient's
 *    Name becomes "ANON^" + the pseudonym. The caller may supply replacements instead.
 *  - dates are shifted, with Retain Longitudinal Temporal Information Modified Dates (and
 *    always by dcm_pseudonymize_dataset), by a per-patient number of days in
 *    [date_shift_min, date_shift_max] taken from HMAC-SHA256(K, "date-shift\0" issuer "\0" id):
 *    every DA value and the date part of every DT value move by the same offset in every file
 *    of the patient; times are kept.
 *
 * Burned-in identification. Pixel data is not inspected. The report's flags say when the
 * instance declares Burned In Annotation (0028,0301) YES or Recognizable Visual Features
 * (0028,0302) YES, or belongs to a SOP class that usually carries burned-in text (secondary
 * capture, ultrasound, visible light photography and video) without declaring Burned In
 * Annotation. Callers must not release such an instance as de-identified without a decision
 * (the CLI refuses unless --allow-burned-in).
 *
 * Errors and memory: the functions return 0 or a negative TR_E* code with `err` set. On error
 * the data set may be partly changed and must not be released as de-identified. Replacement
 * values are allocated in the data set's arena; values read from a mapped file stay valid.
 * The functions are reentrant: one options struct may be shared by threads.
 *
 * See docs/privacy.md for what each action and option does, and its limits.
 */
#ifndef DCM_DEID_H
#define DCM_DEID_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "error.h"
#include "part10.h"
#include "uid.h"
#include "vr.h"

/* ---- the rules (PS3.15 Table E.1-1, generated into deid_table.c by tools/gen_deid.py) ---- */

/* PS3.15 E.1.1 action codes. */
enum dcm_deid_action {
    DCM_DEID_NONE = 0, /* (option columns) the option does not change the action */
    DCM_DEID_D,        /* replace with a non-zero length dummy value consistent with the VR */
    DCM_DEID_Z,        /* replace with a zero length value */
    DCM_DEID_X,        /* remove */
    DCM_DEID_K,        /* keep (sequences: their items are processed) */
    DCM_DEID_C,        /* clean: replace with values of similar meaning that identify nobody */
    DCM_DEID_U,        /* replace the UID by its keyed mapping */
    DCM_DEID_Z_D,      /* Z unless D is needed for IOD conformance (type 2 vs 1) */
    DCM_DEID_X_Z,      /* X unless Z is needed (type 3 vs 2) */
    DCM_DEID_X_D,      /* X unless D is needed (type 3 vs 1) */
    DCM_DEID_X_Z_D,    /* X unless Z or D is needed */
    DCM_DEID_X_Z_U,    /* X unless Z or U of the contained UIDs is needed (sequences) */
    DCM_DEID_ACTION_COUNT
};

/* The options of PS3.15 E.3 that telerad implements, one bit each. The bit order is the order
 * of the option columns in dcm_deid_rule.option. The code of CID 7050 written into
 * De-identification Method Code Sequence (0012,0064) is given for each. */
enum dcm_deid_option {
    DCM_DEID_RETAIN_SAFE_PRIVATE = 1 << 0,            /* E.3.10, 113111 */
    DCM_DEID_RETAIN_UIDS = 1 << 1,                    /* E.3.9, 113110 */
    DCM_DEID_RETAIN_DEVICE_IDENTITY = 1 << 2,         /* E.3.8, 113109 */
    DCM_DEID_RETAIN_INSTITUTION_IDENTITY = 1 << 3,    /* E.3.11, 113112 */
    DCM_DEID_RETAIN_PATIENT_CHARACTERISTICS = 1 << 4, /* E.3.7, 113108 */
    DCM_DEID_RETAIN_FULL_DATES = 1 << 5,              /* E.3.6, 113106 */
    DCM_DEID_RETAIN_MODIFIED_DATES = 1 << 6,          /* E.3.6, 113107 */
    DCM_DEID_CLEAN_DESCRIPTORS = 1 << 7,              /* E.3.5, 113105 */
    DCM_DEID_CLEAN_STRUCTURED_CONTENT = 1 << 8,       /* E.3.4, 113104 */
    DCM_DEID_CLEAN_GRAPHICS = 1 << 9,                 /* E.3.3, 113103 */
};
#define DCM_DEID_OPTION_COUNT 10

struct dcm_deid_rule {
    uint32_t tag;  /* for repeating groups the tag with the x digits zero */
    uint32_t mask; /* bits of a tag that must equal `tag`: 0xFFFFFFFF, or e.g. 0xFF00FFFF for
                      (60xx,3000) and 0xFF000000 for (50xx,xxxx) */
    uint8_t basic; /* enum dcm_deid_action of the Basic Profile */
    uint8_t option[DCM_DEID_OPTION_COUNT]; /* action under each option, DCM_DEID_NONE if the
                                              option does not change it */
    const char *name;
};

/* One entry of PS3.15 Table E.3.10-1: element (group, xxEE) of the block reserved by
 * `creator`, where EE = element. */
struct dcm_deid_safe_private {
    uint16_t group;
    uint8_t element;
    uint8_t vr;
    const char *creator;
    const char *name;
};

extern const struct dcm_deid_rule dcm_deid_rules[]; /* exact tags, ascending */
extern const unsigned dcm_deid_rule_count;
extern const struct dcm_deid_rule dcm_deid_repeating_rules[]; /* curves, overlays */
extern const unsigned dcm_deid_repeating_rule_count;
extern const struct dcm_deid_rule dcm_deid_private_rule; /* (gggg,eeee), gggg odd */
extern const struct dcm_deid_safe_private dcm_deid_safe_private[];
extern const unsigned dcm_deid_safe_private_count;
extern const char *const dcm_deid_safe_words[]; /* Clean Descriptors allow-list, sorted */
extern const unsigned dcm_deid_safe_word_count;

/* The rule for `tag`: exact, repeating group or private; NULL if Table E.1-1 does not list it. */
const struct dcm_deid_rule *dcm_deid_rule_lookup(uint32_t tag);
/* The action for `rule` under the option bits `options`, before the combined codes (Z/D, X/Z,
 * ...) are resolved: an option's action overrides the profile's; when two options disagree,
 * C (clean) wins over K (keep). */
enum dcm_deid_action dcm_deid_rule_action(const struct dcm_deid_rule *rule, unsigned options);
/* "D", "Z/D", "X/Z/U*" ... */
const char *dcm_deid_action_name(enum dcm_deid_action a);

/* ---- options and report ---------------------------------------------------------------- */

#define DCM_DEID_MIN_KEY_LENGTH 16
#define DCM_DEID_MAX_KEY_LENGTH 4096

struct dcm_deid_hmac; /* the key's HMAC-SHA256 state (dcm_deid_options_prepare) */

struct dcm_deid_options {
    unsigned options;           /* enum dcm_deid_option bits */
    const uint8_t *key;         /* HMAC-SHA256 key (borrowed): same key, same mapping */
    size_t key_length;          /* DCM_DEID_MIN_KEY_LENGTH .. DCM_DEID_MAX_KEY_LENGTH */
    const char *patient_name;   /* replacement Patient's Name (UTF-8), NULL: the pseudonym */
    const char *patient_id;     /* replacement Patient ID, NULL: the pseudonym */
    int date_shift_min;         /* days, default -365 */
    int date_shift_max;         /* days, default -1 (min == max: a fixed shift) */
    struct dcm_deid_hmac *hmac; /* set by dcm_deid_options_prepare, else NULL */
};

/* Defaults: the Basic Profile without options, no key (the caller must set one), dates
 * shifted by -365..-1 days when shifting applies. */
void dcm_deid_options_init(struct dcm_deid_options *opt);
/* Optional, for a caller that de-identifies many data sets with one key (telerad anonymize):
 * compute the key's HMAC-SHA256 state once (RFC 2104: SHA-256 after the key's inner and outer
 * padded blocks), so that each keyed mapping costs two SHA-256 continuations instead of a
 * whole HMAC set-up (a digest fetch and both padded blocks hashed again: ~20 K instructions,
 * half of the user-space work of de-identifying a CT file). The mappings are the same. Call it
 * after setting the key; the state is read-only, so threads may share `opt`. It belongs to
 * `opt`: do not copy `opt` by value, and free it with dcm_deid_options_release (a key changed
 * in between is noticed and hashed the slow way). TR_EINVAL for bad options, TR_ENOMEM. */
int dcm_deid_options_prepare(struct dcm_deid_options *opt, struct tr_error *err);
/* Free what dcm_deid_options_prepare made (the key's state is wiped); a no-op otherwise. */
void dcm_deid_options_release(struct dcm_deid_options *opt);

enum dcm_deid_flag {
    DCM_DEID_FLAG_BURNED_IN_ANNOTATION = 1 << 0,  /* Burned In Annotation (0028,0301) is YES */
    DCM_DEID_FLAG_RECOGNIZABLE_FEATURES = 1 << 1, /* Recognizable Visual Features is YES */
    DCM_DEID_FLAG_BURNED_IN_SOP_CLASS = 1 << 2,   /* a SOP class that usually has burned-in
                                                     text, without (0028,0301) */
    DCM_DEID_FLAG_GRAPHICS_RETAINED = 1 << 3,     /* Clean Graphics kept overlay or curve data,
                                                     whose bitmaps are not inspected */
    DCM_DEID_FLAG_DATES_SHIFTED = 1 << 4,         /* dates were moved by date_shift_days */
};
/* The flags that mean identity may remain in the pixel data. */
#define DCM_DEID_FLAGS_PIXELS                                                                      \
    (DCM_DEID_FLAG_BURNED_IN_ANNOTATION | DCM_DEID_FLAG_RECOGNIZABLE_FEATURES |                    \
     DCM_DEID_FLAG_BURNED_IN_SOP_CLASS)

/* What was done, counted over every element of the data set and its items (the counts add
 * up when one report is passed to several calls). */
struct dcm_deid_report {
    unsigned long dummied;          /* D: replaced with a dummy value */
    unsigned long emptied;          /* Z: emptied */
    unsigned long removed;          /* X: removed (private attributes included) */
    unsigned long kept;             /* K: kept by a rule or an option */
    unsigned long cleaned;          /* C: cleaned (descriptors, AE titles, sequences) */
    unsigned long uids_mapped;      /* U: UID values replaced by their mapping */
    unsigned long dates_shifted;    /* DA/DT values shifted */
    unsigned long names_replaced;   /* pseudonymization: names and identifiers replaced */
    unsigned long private_removed;  /* private elements removed (also counted in removed) */
    unsigned long private_retained; /* safe private elements kept */
    unsigned flags;                 /* enum dcm_deid_flag, or-ed */
    int date_shift_days;            /* the offset applied, when DCM_DEID_FLAG_DATES_SHIFTED */
};

void dcm_deid_report_init(struct dcm_deid_report *r);
/* Add the counts and flags of `from` to `to`. */
void dcm_deid_report_add(struct dcm_deid_report *to, const struct dcm_deid_report *from);

/* ---- de-identification (PS3.15 Annex E) ------------------------------------------------- */

/* De-identify a root data set in place, recursively into sequences, then set Patient
 * Identity Removed (YES), De-identification Method, De-identification Method Code Sequence
 * (113100 and a code per option) and Longitudinal Temporal Information Modified. `report` may
 * be NULL. TR_EINVAL for bad options (no key, a key too short, both date options, a shift
 * range upside down), TR_ELIMIT for nesting deeper than 1024, TR_ENOMEM. */
int dcm_deid_dataset(struct dcm_dataset *ds, const struct dcm_deid_options *opt,
                     struct dcm_deid_report *report, struct tr_error *err);

/* dcm_deid_dataset on f->dataset, then the file meta group made to match (PS3.15 E.1.1 item
 * 7): Media Storage SOP Class/Instance UID from the de-identified data set; the AE titles
 * (0002,0016-0018), the sender's addresses and private information (0002,0026-0028, 0100,
 * 0102) removed. dcm_file_write() then writes a zero preamble and telerad's implementation
 * identification. */
int dcm_deid_file(struct dcm_file *f, const struct dcm_deid_options *opt,
                  struct dcm_deid_report *report, struct tr_error *err);

/* ---- pseudonymization (for the server, per response) ----------------------------------- */

/* Pseudonymize a root data set in place:
 *  - Patient ID and Patient's Name: the patient pseudonym and "ANON^" + it (or
 *    opt->patient_id / patient_name); every other person name (PN) value: "ANON^N" + 12 hex
 *    digits of HMAC(K, "name\0" value);
 *  - identifiers (Other Patient IDs, Accession Number, Study ID, Admission ID, Requested
 *    Procedure ID, Scheduled/Performed Procedure Step ID, Placer/Filler Order Numbers,
 *    Medical Record Locator, Service Episode ID): "I" + hex of HMAC(K, "id\0" value), cut to
 *    the VR's length;
 *  - contact details (addresses, telephone numbers, telecom information): removed;
 *  - every DA and DT shifted by the patient's offset (unless DCM_DEID_RETAIN_FULL_DATES);
 *  - every UID the profile replaces (U in Table E.1-1) mapped (unless DCM_DEID_RETAIN_UIDS);
 *  - private attributes removed, but safe ones with DCM_DEID_RETAIN_SAFE_PRIVATE;
 *  - Longitudinal Temporal Information Modified set to MODIFIED when dates moved.
 * Everything else is kept; Patient Identity Removed is not set (the data is pseudonymous, not
 * de-identified). The burned-in flags are reported as by dcm_deid_dataset. Cheap enough for
 * every response: no I/O, a few HMACs per instance. Call it on a copy (dcm_dataset_copy) when
 * the original must be kept. */
int dcm_pseudonymize_dataset(struct dcm_dataset *ds, const struct dcm_deid_options *opt,
                             struct dcm_deid_report *report, struct tr_error *err);

/* ---- the keyed mappings, for callers that must map identifiers themselves ---------------- */

/* The mapping of one UID (trailing spaces and NULs ignored) into out. A UID under the DICOM
 * root or in the registry is copied unchanged. TR_EINVAL for bad options or an empty UID. */
int dcm_deid_map_uid(const struct dcm_deid_options *opt, const char *uid, size_t length,
                     char out[DCM_UID_MAX + 1]);
/* The patient pseudonym "P" + 16 hex digits for (issuer, id), into out (>= 18 bytes): the
 * Patient ID written for that patient. */
int dcm_deid_patient_pseudonym(const struct dcm_deid_options *opt, const char *issuer,
                               const char *id, char *out, size_t size);
/* The patient's date offset in days, in [date_shift_min, date_shift_max]. */
int dcm_deid_date_offset(const struct dcm_deid_options *opt, const char *issuer, const char *id,
                         int *days);
/* Shift a DA or DT value (one value, no backslash) by `days` into out (>= 27 bytes). Partial
 * dates (YYYY, YYYYMM) keep their precision; the legacy form YYYY.MM.DD is written YYYYMMDD;
 * the time and time zone of a DT are kept. TR_EINVAL if it is not a date. */
int dcm_deid_shift_date(enum dcm_vr vr, const char *value, size_t length, int days, char *out,
                        size_t size);

#endif
