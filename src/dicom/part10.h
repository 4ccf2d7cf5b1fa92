/*
 * part10.h - reading and writing DICOM files (PS3.10 7: preamble, "DICM", file meta
 * information) and data sets in any uncompressed or encapsulated transfer syntax (PS3.5 7, 8,
 * A.1-A.5).
 *
 * Reading maps the file and parses it in place: element values point into the mapping, so bulk
 * data is never copied (except where the encoding forces a conversion: big endian numbers are
 * swapped, and a deflated data set is inflated into memory under a cap). A header-only read
 * stops before the pixel data and does not touch its pages.
 *
 * The reader is tolerant where real files demand it, as DCMTK and pydicom are: a missing
 * preamble or meta group (with allow_no_meta), a meta group without group length, an explicit
 * VR file whose data set is implicit (and the reverse), odd value lengths, invalid VR codes,
 * UN elements and private tags with undefined length holding sequences, undefined-length items
 * and sequences, a missing final sequence delimiter at the end of the file. It is strict where
 * a mistake would lose data: a length past the end of the input, nesting deeper than
 * max_depth, or an unknown transfer syntax whose encoding cannot be guessed, are errors that
 * name the byte offset and the tag being read.
 */
#ifndef DCM_PART10_H
#define DCM_PART10_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dataset.h"
#include "error.h"
#include "sink.h"
#include "uid.h"

struct dcm_read_options {
    unsigned max_depth;         /* deepest sequence nesting accepted (default 64) */
    bool header_only;           /* stop before (7FE0,0008), (7FE0,0009), (7FE0,0010) */
    bool allow_no_meta;         /* accept a bare data set without preamble/"DICM"/meta,
                                   detecting its transfer syntax (default false, as pydicom) */
    uint64_t max_inflated_size; /* cap on a deflated data set once inflated (default 512 MiB:
                                   a deflate bomb must not take the server's memory) */
};

void dcm_read_options_init(struct dcm_read_options *opt);

struct dcm_file {
    struct dcm_dataset *meta;    /* file meta information (group 0002); empty if the file has none */
    struct dcm_dataset *dataset; /* the data set, without group 0002 */
    const struct dcm_transfer_syntax *ts; /* of the data set (never NULL after a successful read) */
    char ts_uid[DCM_UID_MAX + 1];         /* as declared in the meta group, or detected */
    bool has_preamble;           /* 128-byte preamble + "DICM" present */
    bool has_meta;               /* a group 0002 was present */
    bool ts_detected;            /* the transfer syntax was detected, not declared (or declared
                                    wrongly: the declared one is in meta) */
    bool stopped_before_pixels;  /* header_only stopped early */
    uint64_t dataset_offset;     /* byte offset of the data set in the file */
    uint64_t pixel_offset;       /* offset of the pixel data element's tag when
                                    stopped_before_pixels */
    uint64_t size;               /* size of the input in bytes */
};

/* Read a DICOM file. On success *out owns everything (free with dcm_file_free). Errors name
 * the byte offset and the tag: "at byte 1234 in (0010,0010): value length 80 exceeds the 12
 * bytes left". */
int dcm_file_read(const char *path, const struct dcm_read_options *opt, struct dcm_file **out,
                  struct tr_error *err);
/* The same from an open file descriptor, which stays open and is not closed (its file
 * position is not used: a regular file is mapped from offset 0, anything else read to its
 * end). Keep it open to write the file's unchanged bulk data with dcm_file_write_fd. */
int dcm_file_read_fd(int fd, const struct dcm_read_options *opt, struct dcm_file **out,
                     struct tr_error *err);
/* Read from memory. The bytes are referenced, not copied: they must outlive the result. */
int dcm_file_read_memory(const void *data, size_t len, const struct dcm_read_options *opt,
                         struct dcm_file **out, struct tr_error *err);
void dcm_file_free(struct dcm_file *f);
/* Take the data set out of the file (the caller frees it with dcm_dataset_free). */
struct dcm_dataset *dcm_file_take_dataset(struct dcm_file *f);

/* Read a bare data set in the given transfer syntax from memory (e.g. the data set of a DIMSE
 * message). The bytes are referenced; they must outlive the result. `base_offset` is added to
 * the offsets in error messages and elements. */
int dcm_dataset_read(const void *data, size_t len, const char *ts_uid,
                     const struct dcm_read_options *opt, uint64_t base_offset,
                     struct dcm_dataset **out, struct tr_error *err);

struct dcm_write_options {
    const char *ts_uid;   /* transfer syntax to write; NULL = the file's own if telerad can
                             write it, else Explicit VR Little Endian */
    int deflate_level;    /* for Deflated Explicit VR Little Endian (default 6) */
    bool defined_lengths; /* write sequences and items with defined lengths (default: as read) */
};

void dcm_write_options_init(struct dcm_write_options *opt);

/* Write a Part 10 file: preamble, "DICM", a file meta group built from f->meta (kept elements:
 * source/sending/receiving AE titles, private information) with group length, version, SOP
 * class and instance from the data set, the transfer syntax, and telerad's implementation
 * class UID and version name; then the data set. A data set with encapsulated pixel data can
 * only be written in an encapsulated transfer syntax (its own): asking for another is
 * TR_EUNSUPPORTED (transcoding belongs to the codecs). */
int dcm_file_write(const struct dcm_file *f, const struct dcm_write_options *opt,
                   const struct tr_sink *sink, struct tr_error *err);
/* Convenience: write to `path` (created or truncated). Not atomic: the archive does its own
 * temporary-file, fsync and rename. */
int dcm_file_write_path(const struct dcm_file *f, const struct dcm_write_options *opt,
                        const char *path, struct tr_error *err);
/* Write a Part 10 file to the file descriptor `fd` at its current position, as
 * dcm_file_write would. `source_fd`, or -1, is the descriptor `f` was read from by
 * dcm_file_read_fd (still open, the file unchanged): values of 64 KiB or more that are still
 * the mapped file's bytes (pixel data) are then copied from it to `fd` inside the kernel
 * (copy_file_range(2)) instead of through user space; where the kernel cannot (another file
 * system, an old kernel) they are written as usual. The output is the same byte for byte.
 * `size`, if not NULL, receives the number of bytes written. */
int dcm_file_write_fd(const struct dcm_file *f, const struct dcm_write_options *opt, int fd,
                      int source_fd, uint64_t *size, struct tr_error *err);
/* Write the preamble, "DICM" and a file meta group for a data set whose bytes follow
 * (already encoded in `ts_uid`): what a receiver writes before the data set of a C-STORE.
 * source_ae may be NULL. */
int dcm_file_write_header(const char *sop_class, const char *sop_instance, const char *ts_uid,
                          const char *source_ae, const struct tr_sink *sink, struct tr_error *err);

/* Write a bare data set (no meta) in transfer syntax `ts_uid`. */
int dcm_dataset_write(const struct dcm_dataset *ds, const char *ts_uid,
                      const struct dcm_write_options *opt, const struct tr_sink *sink,
                      struct tr_error *err);
/* The encoded length of a data set in `ts` (not deflated), as dcm_dataset_write would write it. */
int dcm_dataset_encoded_length(const struct dcm_dataset *ds, const struct dcm_transfer_syntax *ts,
                               const struct dcm_write_options *opt, uint64_t *length);

#endif
