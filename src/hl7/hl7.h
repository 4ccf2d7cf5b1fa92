/*
 * hl7.h - HL7 version 2 messages: parse, address, read, change and write them (HL7 v2.5.1
 * chapter 2, "Control"; v2.7 for the truncation character).
 *
 * A message is a list of segments separated by CR (LF and CR LF are accepted too); a segment is
 * a three-character name and fields separated by the field separator; a field holds repetitions,
 * a repetition components, a component subcomponents. The separators are the message's own:
 * MSH-1 is the field separator (the fourth byte of the message) and MSH-2 the encoding
 * characters, in this order: component, repetition, escape, subcomponent and, from v2.7 and
 * only when present, truncation (2.5.1: "^~\&", 2.7: "^~\&#").
 *
 * The tree keeps every field as it arrived on the wire (escaped, in the message's character
 * set), so writing a parsed message gives the same bytes back (segments ending in CR). Values
 * are decoded when read (hl7_get: escapes resolved, converted to UTF-8) and encoded when set
 * (hl7_set: converted from UTF-8, every separator escaped), so the round trip
 * parse -> write -> parse gives the same tree, and get(set(v)) == v for any representable v.
 *
 * Addresses ("paths") name a piece of a message, HL7 style:
 *     "PID-3"          the first repetition of PID-3 (all its components)
 *     "PID-3[2].1"     component 1 of the second repetition of PID-3
 *     "PID-3[1].4.2"   subcomponent 2 of component 4
 *     "OBX[2]-5"       field 5 of the second OBX segment
 *     "MSH-9.2"        the trigger event
 * Numbers are 1-based. A path without [n] after the field means the first repetition, in
 * hl7_get and hl7_set alike. MSH-1 and MSH-2 are the separators themselves: read verbatim,
 * never split, never set.
 *
 * Escape sequences (2.7.4): \F\ \S\ \T\ \R\ \E\ (the separators and the escape character),
 * \P\ (the truncation character, v2.7), \Xhh...\ (bytes in the message's character set),
 * \.br\ (a line break, decoded to LF; \.sp n\ to n line breaks). Formatting and highlighting
 * (\H\ \N\ \.fi\ \.nf\ \.in n\ \.ti n\ \.sk n\ \.ce\), character-set switches (\Cxxyy\
 * \Mxxyyzz\) and locally defined escapes (\Z...\) decode to nothing. An escape character that
 * starts no complete sequence is literal text, unless the message was parsed with
 * HL7_STRICT_ESCAPES, which makes it an error. NUL bytes from \X00\ are dropped. When encoding,
 * LF becomes \.br\, CR and other control characters but TAB become \Xhh\.
 *
 * Character sets (MSH-18, first repetition; 2.15.9.18, table 0211): "ASCII", "8859/1",
 * "8859/15", "UNICODE UTF-8" (also spelled "UTF-8"). Empty means ASCII in the standard; since
 * many senders leave it empty and send Latin-1 or UTF-8, an empty MSH-18 takes UTF-8 when the
 * bytes are valid UTF-8 and 8859/1 otherwise. Bytes outside a declared set (a byte >= 0x80 in an
 * "ASCII" message, invalid UTF-8 in a "UNICODE UTF-8" one) are an error naming the segment,
 * field and byte offset; any other MSH-18 value is TR_EUNSUPPORTED (multi-byte sets such as
 * GB 18030 or ISO IR87 can hide a separator inside a character, and UTF-16 has no byte
 * separators at all).
 *
 * Errors name where: "HL7 segment 3 (PID) field 5, byte 210: ..." (segments and fields
 * 1-based, the byte offset 0-based from the start of the message).
 *
 * Exported names start with hl7_. A message is used by one thread at a time.
 */
#ifndef HL7_HL7_H
#define HL7_HL7_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "error.h"

/* The separators of a message. escape and truncation are 0 when the message has none. */
struct hl7_encoding {
    char field;        /* MSH-1, '|' */
    char component;    /* '^' */
    char repetition;   /* '~' */
    char escape;       /* '\\' */
    char subcomponent; /* '&' */
    char truncation;   /* '#' (v2.7), 0 when MSH-2 has four characters */
};

/* |^~\& (no truncation character: what v2.5.1 receivers expect). */
void hl7_encoding_default(struct hl7_encoding *enc);

enum hl7_charset {
    HL7_CHARSET_ASCII = 1,
    HL7_CHARSET_LATIN1, /* 8859/1 */
    HL7_CHARSET_LATIN9, /* 8859/15 */
    HL7_CHARSET_UTF8,   /* UNICODE UTF-8 */
};

enum hl7_parse_flags {
    HL7_STRICT_ESCAPES = 1 << 0, /* an incomplete or unknown escape sequence is an error */
};

/* Caps on what a parse accepts (every one is checked before memory is used for it). */
struct hl7_limits {
    size_t max_message;  /* bytes (default 16 MiB) */
    size_t max_segments; /* (default 100000) */
    size_t max_fields;   /* per segment (default 1000) */
    size_t max_field;    /* bytes in one field (default: max_message) */
    unsigned flags;      /* enum hl7_parse_flags */
};

void hl7_limits_init(struct hl7_limits *lim);

struct hl7_message;

/* Parse `len` bytes (a leading UTF-8 byte order mark is skipped; empty segments, e.g. a trailing
 * CR LF, are ignored). The first segment must be MSH (or a batch or file header, BHS / FHS,
 * which have MSH's layout); later header segments must use the same separators. lim may be
 * NULL (the defaults). Errors: TR_EFORMAT (malformed, with segment, field and byte offset),
 * TR_ETRUNCATED (too short to hold a header), TR_ELIMIT, TR_ECHARSET, TR_EUNSUPPORTED
 * (MSH-18), TR_ENOMEM. On success *out is the caller's (hl7_message_free). */
int hl7_parse(const void *data, size_t len, const struct hl7_limits *lim, struct hl7_message **out,
              struct tr_error *err);

/* A new message with only an MSH segment holding MSH-1 and MSH-2 (enc NULL: the default), in
 * UTF-8 until MSH-18 is set. NULL when out of memory. */
struct hl7_message *hl7_message_new(const struct hl7_encoding *enc);
void hl7_message_free(struct hl7_message *m);

const struct hl7_encoding *hl7_message_encoding(const struct hl7_message *m);
enum hl7_charset hl7_message_charset(const struct hl7_message *m);

/* ---- the tree ---------------------------------------------------------------------------- */

size_t hl7_segment_count(const struct hl7_message *m);
/* "PID"; NULL past the end. */
const char *hl7_segment_name(const struct hl7_message *m, size_t index);
/* Fields the segment has (the highest field number present; for MSH, MSH-1 and MSH-2 count). */
size_t hl7_field_count(const struct hl7_message *m, size_t segment);
/* The wire form of field `field` (1-based) of segment `segment` (0-based); NULL when absent. */
const char *hl7_field_raw(const struct hl7_message *m, size_t segment, size_t field, size_t *len);
/* Index of the `occurrence`-th (1-based) segment named `name`, or -1. */
long hl7_segment_find(const struct hl7_message *m, const char *name, unsigned occurrence);
/* Append a segment (no fields yet): its index, or a negative error (TR_EINVAL for a name that
 * is not three upper-case letters or digits, TR_ELIMIT, TR_ENOMEM). */
long hl7_segment_add(struct hl7_message *m, const char *name, struct tr_error *err);

/* ---- addressing -------------------------------------------------------------------------- */

struct hl7_path {
    char segment[4];
    unsigned occurrence;   /* of the segment, >= 1 */
    unsigned field;        /* >= 1 */
    unsigned repetition;   /* 0: not given (the first) */
    unsigned component;    /* 0: the whole repetition */
    unsigned subcomponent; /* 0: the whole component */
};

/* "PID-3[1].4.2" -> path. TR_EINVAL with a message for anything else. */
int hl7_path_parse(const char *text, struct hl7_path *out, struct tr_error *err);

/* What is at an address. */
enum hl7_presence {
    HL7_MISSING = 0, /* the segment, field, repetition, component or subcomponent is not there */
    HL7_EMPTY = 1,   /* there, but empty (the sender says nothing about it) */
    HL7_NULL = 2,    /* the value "" (two double quotes): the sender says delete it */
    HL7_VALUE = 3,   /* a value */
};

/* Read the piece at `path` decoded to UTF-8 into `out` (reset first; "" unless HL7_VALUE).
 * Decoding a piece that holds lower-level separators (a whole field or component) keeps those
 * separators as they are. Returns the presence, or a negative error (TR_EINVAL: bad path;
 * TR_ELIMIT: out's cap). */
int hl7_get(const struct hl7_message *m, const char *path, struct tr_buf *out,
            struct tr_error *err);
int hl7_get_path(const struct hl7_message *m, const struct hl7_path *path, struct tr_buf *out,
                 struct tr_error *err);
/* The same into a fixed buffer (truncated at a UTF-8 character boundary to fit; "" on error
 * or when not HL7_VALUE). Returns the presence or a negative error. */
int hl7_get_text(const struct hl7_message *m, const char *path, char *out, size_t size);
/* The wire form of the piece (escaped, in the message's character set): points into the
 * message, valid until it changes. Returns the presence (*raw NULL when HL7_MISSING). */
int hl7_get_raw(const struct hl7_message *m, const struct hl7_path *path, const char **raw,
                size_t *len);
/* Number of repetitions of a field (0 when absent or empty), of components of a repetition,
 * of subcomponents of a component, whichever level `path` stops at. */
unsigned hl7_count(const struct hl7_message *m, const char *path);

/* Set the piece at `path` to the UTF-8 text `value` (converted to the message's character set
 * and escaped), adding the fields, repetitions, components and subcomponents that are not
 * there yet. The segment must exist. Setting MSH-18 changes the message's character set (an
 * unsupported one is TR_EUNSUPPORTED). Errors: TR_EINVAL (bad path, MSH-1, MSH-2),
 * TR_ENOTFOUND (no such segment), TR_ECHARSET (not representable), TR_ELIMIT, TR_ENOMEM. */
int hl7_set(struct hl7_message *m, const char *path, const char *value, struct tr_error *err);
int hl7_set_path(struct hl7_message *m, const struct hl7_path *path, const char *value, size_t len,
                 struct tr_error *err);
/* Set a piece to wire-form bytes as they are (e.g. copied from another message with the same
 * separators): TR_EINVAL if they hold a separator of the piece's level or above, CR or LF. */
int hl7_set_raw(struct hl7_message *m, const struct hl7_path *path, const char *raw, size_t len,
                struct tr_error *err);

/* ---- writing ----------------------------------------------------------------------------- */

/* Append the message to `out`: segments separated and ended by CR. */
int hl7_write(const struct hl7_message *m, struct tr_buf *out, struct tr_error *err);

/* ---- values ------------------------------------------------------------------------------ */

/* Decode wire-form bytes (one piece, as from hl7_get_raw) to UTF-8, appending to out. */
int hl7_decode(const struct hl7_encoding *enc, enum hl7_charset cs, const char *raw, size_t len,
               struct tr_buf *out, struct tr_error *err);
/* Encode UTF-8 text to wire form (character set, then escapes), appending to out. TR_ECHARSET
 * when the text is not valid UTF-8 or not representable in cs. */
int hl7_encode(const struct hl7_encoding *enc, enum hl7_charset cs, const char *text, size_t len,
               struct tr_buf *out, struct tr_error *err);

/* The character set named by an MSH-18 value (see above), or 0 when unsupported. "" gives 0
 * too: the empty value is decided by the bytes (hl7_parse). */
enum hl7_charset hl7_charset_parse(const char *name);
/* The MSH-18 spelling: "ASCII", "8859/1", "8859/15", "UNICODE UTF-8". */
const char *hl7_charset_name(enum hl7_charset cs);

#endif
