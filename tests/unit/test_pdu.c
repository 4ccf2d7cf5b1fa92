/*
 * test_pdu.c - the PDUs of the DICOM upper layer (src/net/pdu.c): round trips of every item
 * and sub-item, a byte-exact A-ASSOCIATE-RQ written by hand from PS3.8, PDUs captured from
 * DCMTK 3.6.7, malformed input (every truncation, bad lengths, limits), P-DATA-TF iteration,
 * and allocation failures.
 *
 * Decoders are always given a heap copy of exactly the body's size, so that AddressSanitizer
 * catches any read past the end, and the copy is freed before the decoded structure is
 * inspected, so that a string left pointing into the body is caught too.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "common.h"
#include "pdu.h"

#define UID_VERIFICATION "1.2.840.10008.1.1"
#define UID_CT_STORAGE   "1.2.840.10008.5.1.4.1.1.2"
#define UID_MR_STORAGE   "1.2.840.10008.5.1.4.1.1.4"
#define UID_STUDY_GET    "1.2.840.10008.5.1.4.1.2.2.3"
#define UID_IMPLICIT_LE  "1.2.840.10008.1.2"
#define UID_EXPLICIT_LE  "1.2.840.10008.1.2.1"
#define UID_EXPLICIT_BE  "1.2.840.10008.1.2.2"
#define UID_APP_CONTEXT  "1.2.840.10008.3.1.1.1"
#define UID_DCMTK_367    "1.2.276.0.7230010.3.0.3.6.7"

/* ---- PDUs captured from DCMTK -------------------------------------------------------------
 *
 * How they were captured (Debian's DCMTK 3.6.7, TCP_NODELAY=1 in the environment): a
 * 40-line Python relay listened on 127.0.0.1:42000, forwarded to `storescp -aet ARCHIVE
 * 42001` and wrote every PDU it relayed, header included, to a file; the SCUs were run
 * against the relay:
 *   echoscu -aet A -aec ARCHIVE 127.0.0.1 42000
 *   findscu -aet FINDSCU -aec ARCHIVE -S -k 0008,0052=STUDY 127.0.0.1 42000
 *   storescu -R -aet STORESCU -aec ARCHIVE --user alice --password secret -rsp \
 *       127.0.0.1 42000 CT_small.dcm
 *   storescu -xf t.cfg Test -aet CFG -aec ARCHIVE 127.0.0.1 42000 CT_small.dcm
 * where CT_small.dcm is pydicom's test file and t.cfg proposes CT, MR and Verification with
 * explicit and implicit VR little endian, roles CT = BOTH and MR = SCP, and extended
 * negotiation 01 02 for CT ([[SCPSCURoleSelection]] and [[ExtendedNegotiation]] sections).
 * The JWT request was captured the same way from a Python listener that answered with an
 * A-ASSOCIATE-RJ:
 *   storescu -R -aet STORESCU -aec ARCHIVE --jwt jwt.txt -rsp 127.0.0.1 PORT CT_small.dcm
 * with jwt.txt holding "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZWxlcmFkIn0.c2lnbmF0dXJl".
 * fuzz/make_pdu_corpus.py holds the same captures (and bigger ones) as fuzzing seeds.
 */

/* echoscu -aet A -aec ARCHIVE: A-ASSOCIATE-RQ (211 bytes) */
static const uint8_t dcmtk_echo_rq[] = {
    0x01, 0x00, 0x00, 0x00, 0x00, 0xcd, 0x00, 0x01, 0x00, 0x00, 0x41, 0x52, 0x43, 0x48, 0x49, 0x56,
    0x45, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x41, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e,
    0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x20, 0x00, 0x00, 0x2e, 0x01, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x11, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x31,
    0x40, 0x00, 0x00, 0x11, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30,
    0x38, 0x2e, 0x31, 0x2e, 0x32, 0x50, 0x00, 0x00, 0x3a, 0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40,
    0x00, 0x52, 0x00, 0x00, 0x1b, 0x31, 0x2e, 0x32, 0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37,
    0x32, 0x33, 0x30, 0x30, 0x31, 0x30, 0x2e, 0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37,
    0x55, 0x00, 0x00, 0x0f, 0x4f, 0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43, 0x4d, 0x54, 0x4b, 0x5f,
    0x33, 0x36, 0x37,
};

/* storescp -aet ARCHIVE answering it: A-ASSOCIATE-AC (190 bytes) */
static const uint8_t dcmtk_echo_ac[] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x41, 0x52, 0x43, 0x48, 0x49, 0x56,
    0x45, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x41, 0x20, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e,
    0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x21, 0x00, 0x00, 0x19, 0x01, 0x00, 0x00, 0x00, 0x40, 0x00, 0x00, 0x11, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32,
    0x50, 0x00, 0x00, 0x3a, 0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00, 0x52, 0x00, 0x00, 0x1b,
    0x31, 0x2e, 0x32, 0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37, 0x32, 0x33, 0x30, 0x30, 0x31,
    0x30, 0x2e, 0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37, 0x55, 0x00, 0x00, 0x0f, 0x4f,
    0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43, 0x4d, 0x54, 0x4b, 0x5f, 0x33, 0x36, 0x37,
};

/* echoscu: P-DATA-TF with the C-ECHO-RQ command (80 bytes) */
static const uint8_t dcmtk_echo_pdata_rq[] = {
    0x04, 0x00, 0x00, 0x00, 0x00, 0x4a, 0x00, 0x00, 0x00, 0x46, 0x01, 0x03, 0x00, 0x00, 0x00, 0x00,
    0x04, 0x00, 0x00, 0x00, 0x38, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x12, 0x00, 0x00, 0x00,
    0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e,
    0x31, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x00, 0x00, 0x00, 0x10, 0x01,
    0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02, 0x00, 0x00, 0x00, 0x01, 0x01,
};

/* storescp: P-DATA-TF with the C-ECHO-RSP command (90 bytes) */
static const uint8_t dcmtk_echo_pdata_rsp[] = {
    0x04, 0x00, 0x00, 0x00, 0x00, 0x54, 0x00, 0x00, 0x00, 0x50, 0x01, 0x03, 0x00, 0x00, 0x00,
    0x00, 0x04, 0x00, 0x00, 0x00, 0x42, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x12, 0x00,
    0x00, 0x00, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38,
    0x2e, 0x31, 0x2e, 0x31, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x30, 0x80,
    0x00, 0x00, 0x20, 0x01, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x08, 0x02,
    0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x09, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00,
};

/* echoscu: A-RELEASE-RQ (10 bytes) */
static const uint8_t dcmtk_release_rq[] = {
    0x05, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
};

/* storescp: A-RELEASE-RP (10 bytes) */
static const uint8_t dcmtk_release_rp[] = {
    0x06, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00,
};

/* storescp answering findscu -S: A-ASSOCIATE-AC rejecting the only context (result 3) (190 bytes)
 */
static const uint8_t dcmtk_find_ac[] = {
    0x02, 0x00, 0x00, 0x00, 0x00, 0xb8, 0x00, 0x01, 0x00, 0x00, 0x41, 0x52, 0x43, 0x48, 0x49, 0x56,
    0x45, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x46, 0x49, 0x4e, 0x44, 0x53, 0x43,
    0x55, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e,
    0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x21, 0x00, 0x00, 0x19, 0x01, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x11, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32,
    0x50, 0x00, 0x00, 0x3a, 0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00, 0x52, 0x00, 0x00, 0x1b,
    0x31, 0x2e, 0x32, 0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37, 0x32, 0x33, 0x30, 0x30, 0x31,
    0x30, 0x2e, 0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37, 0x55, 0x00, 0x00, 0x0f, 0x4f,
    0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43, 0x4d, 0x54, 0x4b, 0x5f, 0x33, 0x36, 0x37,
};

/* storescu -R --user alice --password secret -rsp: A-ASSOCIATE-RQ with user identity type 2 (323
 * bytes) */
static const uint8_t dcmtk_user_rq[] = {
    0x01, 0x00, 0x00, 0x00, 0x01, 0x3d, 0x00, 0x01, 0x00, 0x00, 0x41, 0x52, 0x43, 0x48, 0x49, 0x56,
    0x45, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x53, 0x54, 0x4f, 0x52, 0x45, 0x53,
    0x43, 0x55, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e,
    0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x20, 0x00, 0x00, 0x38, 0x01, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x19, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e, 0x31,
    0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32, 0x2e,
    0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x31, 0x20,
    0x00, 0x00, 0x4d, 0x03, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x19, 0x31, 0x2e, 0x32, 0x2e, 0x38,
    0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e, 0x31, 0x2e, 0x34, 0x2e, 0x31,
    0x2e, 0x31, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e,
    0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x11, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32,
    0x50, 0x00, 0x00, 0x4f, 0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00, 0x52, 0x00, 0x00, 0x1b,
    0x31, 0x2e, 0x32, 0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37, 0x32, 0x33, 0x30, 0x30, 0x31,
    0x30, 0x2e, 0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37, 0x55, 0x00, 0x00, 0x0f, 0x4f,
    0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43, 0x4d, 0x54, 0x4b, 0x5f, 0x33, 0x36, 0x37, 0x58, 0x00,
    0x00, 0x11, 0x02, 0x01, 0x00, 0x05, 0x61, 0x6c, 0x69, 0x63, 0x65, 0x00, 0x06, 0x73, 0x65, 0x63,
    0x72, 0x65, 0x74,
};

/* storescu -R --jwt FILE -rsp: A-ASSOCIATE-RQ with user identity type 5 (369 bytes) */
static const uint8_t dcmtk_jwt_rq[] = {
    0x01, 0x00, 0x00, 0x00, 0x01, 0x6b, 0x00, 0x01, 0x00, 0x00, 0x41, 0x52, 0x43, 0x48, 0x49, 0x56,
    0x45, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x53, 0x54, 0x4f, 0x52, 0x45, 0x53,
    0x43, 0x55, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e,
    0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x20, 0x00, 0x00, 0x38, 0x01, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x19, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e, 0x31,
    0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32, 0x2e,
    0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x31, 0x20,
    0x00, 0x00, 0x4d, 0x03, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x19, 0x31, 0x2e, 0x32, 0x2e, 0x38,
    0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e, 0x31, 0x2e, 0x34, 0x2e, 0x31,
    0x2e, 0x31, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e,
    0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x11, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32,
    0x50, 0x00, 0x00, 0x7d, 0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00, 0x52, 0x00, 0x00, 0x1b,
    0x31, 0x2e, 0x32, 0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37, 0x32, 0x33, 0x30, 0x30, 0x31,
    0x30, 0x2e, 0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37, 0x55, 0x00, 0x00, 0x0f, 0x4f,
    0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43, 0x4d, 0x54, 0x4b, 0x5f, 0x33, 0x36, 0x37, 0x58, 0x00,
    0x00, 0x3f, 0x05, 0x01, 0x00, 0x39, 0x65, 0x79, 0x4a, 0x68, 0x62, 0x47, 0x63, 0x69, 0x4f, 0x69,
    0x4a, 0x49, 0x55, 0x7a, 0x49, 0x31, 0x4e, 0x69, 0x4a, 0x39, 0x2e, 0x65, 0x79, 0x4a, 0x7a, 0x64,
    0x57, 0x49, 0x69, 0x4f, 0x69, 0x4a, 0x30, 0x5a, 0x57, 0x78, 0x6c, 0x63, 0x6d, 0x46, 0x6b, 0x49,
    0x6e, 0x30, 0x2e, 0x63, 0x32, 0x6c, 0x6e, 0x62, 0x6d, 0x46, 0x30, 0x64, 0x58, 0x4a, 0x6c, 0x00,
    0x00,
};

/* storescu -xf CFG Test: A-ASSOCIATE-RQ with role selection and extended negotiation (495 bytes) */
static const uint8_t dcmtk_cfg_rq[] = {
    0x01, 0x00, 0x00, 0x00, 0x01, 0xe9, 0x00, 0x01, 0x00, 0x00, 0x41, 0x52, 0x43, 0x48, 0x49, 0x56,
    0x45, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x43, 0x46, 0x47, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x15, 0x31, 0x2e,
    0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x33, 0x2e, 0x31, 0x2e,
    0x31, 0x2e, 0x31, 0x20, 0x00, 0x00, 0x4d, 0x01, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x19, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e, 0x31,
    0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x32, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32, 0x2e,
    0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x31, 0x40,
    0x00, 0x00, 0x11, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38,
    0x2e, 0x31, 0x2e, 0x32, 0x20, 0x00, 0x00, 0x4d, 0x03, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00, 0x19,
    0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e,
    0x31, 0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x34, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32,
    0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x31,
    0x40, 0x00, 0x00, 0x11, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30,
    0x38, 0x2e, 0x31, 0x2e, 0x32, 0x20, 0x00, 0x00, 0x45, 0x05, 0x00, 0xff, 0x00, 0x30, 0x00, 0x00,
    0x11, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31,
    0x2e, 0x31, 0x40, 0x00, 0x00, 0x13, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30,
    0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x2e, 0x31, 0x40, 0x00, 0x00, 0x11, 0x31, 0x2e, 0x32,
    0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x31, 0x2e, 0x32, 0x50, 0x00,
    0x00, 0x9d, 0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00, 0x52, 0x00, 0x00, 0x1b, 0x31, 0x2e,
    0x32, 0x2e, 0x32, 0x37, 0x36, 0x2e, 0x30, 0x2e, 0x37, 0x32, 0x33, 0x30, 0x30, 0x31, 0x30, 0x2e,
    0x33, 0x2e, 0x30, 0x2e, 0x33, 0x2e, 0x36, 0x2e, 0x37, 0x54, 0x00, 0x00, 0x1d, 0x00, 0x19, 0x31,
    0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e, 0x31,
    0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x32, 0x01, 0x01, 0x54, 0x00, 0x00, 0x1d, 0x00, 0x19,
    0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30, 0x38, 0x2e, 0x35, 0x2e,
    0x31, 0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x34, 0x00, 0x01, 0x55, 0x00, 0x00, 0x0f, 0x4f,
    0x46, 0x46, 0x49, 0x53, 0x5f, 0x44, 0x43, 0x4d, 0x54, 0x4b, 0x5f, 0x33, 0x36, 0x37, 0x56, 0x00,
    0x00, 0x1d, 0x00, 0x19, 0x31, 0x2e, 0x32, 0x2e, 0x38, 0x34, 0x30, 0x2e, 0x31, 0x30, 0x30, 0x30,
    0x38, 0x2e, 0x35, 0x2e, 0x31, 0x2e, 0x34, 0x2e, 0x31, 0x2e, 0x31, 0x2e, 0x32, 0x01, 0x02,
};

/* ---- helpers ----------------------------------------------------------------------------- */

#define JWT_SMALL "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ0ZWxlcmFkIn0.c2lnbmF0dXJl"

static struct pdu_associate *new_associate(void)
{
    struct pdu_associate *a = tr_malloc(sizeof(*a));
    assert_non_null(a);
    pdu_associate_init(a);
    return a;
}

static void free_associate(struct pdu_associate *a)
{
    pdu_associate_release(a);
    tr_free(a);
}

/* Decode a body from an exact-size heap copy, freed before returning. */
static int decode_body(enum pdu_type type, const uint8_t *body, size_t len, struct pdu_associate *a,
                       struct tr_error *err)
{
    uint8_t *copy = tr_malloc(len ? len : 1);
    assert_non_null(copy);
    if (len)
        memcpy(copy, body, len);
    int rc = pdu_decode_associate(type, copy, len, a, err);
    memset(copy, 0xAA, len);
    tr_free(copy);
    return rc;
}

/* Decode a whole PDU after checking its header. */
static int decode_pdu(const uint8_t *pdu, size_t n, struct pdu_associate *a, struct tr_error *err)
{
    assert_true(n >= PDU_HEADER_SIZE);
    assert_int_equal(tr_be32(pdu + 2), n - PDU_HEADER_SIZE);
    return decode_body((enum pdu_type)pdu[0], pdu + PDU_HEADER_SIZE, n - PDU_HEADER_SIZE, a, err);
}

static void assert_bytes_equal(const void *x, size_t xn, const void *y, size_t yn)
{
    assert_int_equal(xn, yn);
    if (xn)
        assert_memory_equal(x, y, xn);
}

/* Equality of everything an encoder writes for `type`. */
static void assert_associate_equal(enum pdu_type type, const struct pdu_associate *x,
                                   const struct pdu_associate *y)
{
    bool rq = type == PDU_ASSOCIATE_RQ;
    assert_int_equal(x->protocol_version, y->protocol_version);
    assert_string_equal(x->called_ae, y->called_ae);
    assert_string_equal(x->calling_ae, y->calling_ae);
    assert_string_equal(x->application_context[0] ? x->application_context : UID_APP_CONTEXT,
                        y->application_context[0] ? y->application_context : UID_APP_CONTEXT);
    assert_int_equal(x->context_count, y->context_count);
    for (unsigned i = 0; i < x->context_count; i++) {
        const struct pdu_presentation_context *p = &x->context[i], *q = &y->context[i];
        assert_int_equal(p->id, q->id);
        if (rq) {
            assert_string_equal(p->abstract_syntax, q->abstract_syntax);
        } else {
            assert_int_equal(p->result, q->result);
            if (p->result != PDU_PC_ACCEPTANCE)
                continue; /* the transfer syntax of a rejected context is not tested */
        }
        assert_int_equal(p->ts_count, q->ts_count);
        for (unsigned k = 0; k < p->ts_count; k++)
            assert_string_equal(p->transfer_syntax[k], q->transfer_syntax[k]);
    }
    assert_int_equal(x->max_length, y->max_length);
    assert_string_equal(x->implementation_class_uid, y->implementation_class_uid);
    assert_string_equal(x->implementation_version, y->implementation_version);
    assert_int_equal(x->has_async, y->has_async);
    if (x->has_async) {
        assert_int_equal(x->max_ops_invoked, y->max_ops_invoked);
        assert_int_equal(x->max_ops_performed, y->max_ops_performed);
    }
    assert_int_equal(x->role_count, y->role_count);
    for (unsigned i = 0; i < x->role_count; i++) {
        assert_string_equal(x->role[i].sop_class, y->role[i].sop_class);
        assert_int_equal(x->role[i].scu, y->role[i].scu);
        assert_int_equal(x->role[i].scp, y->role[i].scp);
    }
    assert_int_equal(x->extended_count, y->extended_count);
    for (unsigned i = 0; i < x->extended_count; i++) {
        assert_string_equal(x->extended[i].sop_class, y->extended[i].sop_class);
        assert_bytes_equal(x->extended[i].info, x->extended[i].info_length, y->extended[i].info,
                           y->extended[i].info_length);
    }
    const struct pdu_user_identity *p = &x->identity, *q = &y->identity;
    if (rq) {
        assert_int_equal(p->type, q->type);
        if (p->type != PDU_IDENTITY_NONE) {
            assert_int_equal(p->positive_response, q->positive_response);
            assert_bytes_equal(p->primary, p->primary_length, q->primary, q->primary_length);
            if (p->type == PDU_IDENTITY_USERNAME_PASSCODE)
                assert_bytes_equal(p->secondary, p->secondary_length, q->secondary,
                                   q->secondary_length);
        }
    } else {
        assert_int_equal(p->has_response, q->has_response);
        if (p->has_response)
            assert_bytes_equal(p->response, p->response_length, q->response, q->response_length);
    }
}

/* Encode `a` as `type`, decode the result, compare, and return the encoding's length. */
static size_t round_trip(enum pdu_type type, const struct pdu_associate *a)
{
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(pdu_check_associate(type, a, &err), 0);
    int rc = type == PDU_ASSOCIATE_RQ ? pdu_encode_associate_rq(a, &out)
                                      : pdu_encode_associate_ac(a, &out);
    assert_int_equal(rc, 0);
    assert_int_equal(out.data[0], type);
    struct pdu_associate *b = new_associate();
    rc = decode_pdu((const uint8_t *)out.data, out.len, b, &err);
    if (rc < 0)
        fail_msg("decoding what was encoded: %s", err.message);
    assert_associate_equal(type, a, b);
    /* And the same bytes again from the decoded structure, unless the decoder dropped the
     * transfer syntax of a rejected context (not significant, PS3.8 9.3.3.2). */
    bool dropped = false;
    for (unsigned i = 0; i < a->context_count; i++)
        dropped |= type == PDU_ASSOCIATE_AC && a->context[i].result != PDU_PC_ACCEPTANCE &&
                   a->context[i].ts_count > 0;
    struct tr_buf again;
    tr_buf_init(&again, 1 << 20);
    rc = type == PDU_ASSOCIATE_RQ ? pdu_encode_associate_rq(b, &again)
                                  : pdu_encode_associate_ac(b, &again);
    assert_int_equal(rc, 0);
    if (!dropped)
        assert_bytes_equal(out.data, out.len, again.data, again.len);
    size_t n = out.len;
    tr_buf_release(&again);
    tr_buf_release(&out);
    free_associate(b);
    return n;
}

/* Expect decoding to fail with `code` and a message containing `needle`. */
static void expect_error(enum pdu_type type, const uint8_t *body, size_t len, int code,
                         const char *needle)
{
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    int rc = decode_body(type, body, len, a, &err);
    if (rc != code || !strstr(err.message, needle))
        fail_msg("expected %d \"%s\", got %d \"%s\"", code, needle, rc, err.message);
    free_associate(a);
}

/* A writable copy of a captured PDU's body. */
static uint8_t *body_copy(const uint8_t *pdu, size_t n, size_t *len)
{
    *len = n - PDU_HEADER_SIZE;
    uint8_t *b = tr_malloc(*len);
    assert_non_null(b);
    memcpy(b, pdu + PDU_HEADER_SIZE, *len);
    return b;
}

/* Offsets in a body of the bytes named by PDU offsets in the comments (which count from the
 * PDU start, header included, as the decoder's messages do). */
#define AT(pdu_offset) ((pdu_offset)-PDU_HEADER_SIZE)

/* A small builder of A-ASSOCIATE bodies for malformed input: items are opened, filled, and
 * closed (which patches their 16-bit length). */
struct builder {
    struct tr_buf b;
    size_t open[4];
    int depth;
};

static void b_init(struct builder *bd, const char *called, const char *calling)
{
    tr_buf_init(&bd->b, 1 << 24);
    bd->depth = 0;
    uint8_t fixed[68] = {0x00, 0x01};
    memset(fixed + 4, ' ', 32);
    memcpy(fixed + 4, called, strlen(called));
    memcpy(fixed + 20, calling, strlen(calling));
    assert_int_equal(tr_buf_add(&bd->b, fixed, sizeof(fixed)), 0);
}

static void b_bytes(struct builder *bd, const void *p, size_t n)
{
    assert_int_equal(tr_buf_add(&bd->b, p, n), 0);
}

static void b_u8(struct builder *bd, uint8_t v)
{
    b_bytes(bd, &v, 1);
}

static void b_u16(struct builder *bd, uint16_t v)
{
    uint8_t x[2];
    tr_put_be16(x, v);
    b_bytes(bd, x, 2);
}

static void b_open(struct builder *bd, uint8_t type)
{
    bd->open[bd->depth++] = bd->b.len;
    uint8_t h[4] = {type, 0, 0, 0};
    b_bytes(bd, h, 4);
}

static void b_close(struct builder *bd)
{
    size_t at = bd->open[--bd->depth];
    size_t n = bd->b.len - at - 4;
    assert_true(n <= 0xFFFF);
    tr_put_be16((uint8_t *)bd->b.data + at + 2, (uint16_t)n);
}

static void b_string_item(struct builder *bd, uint8_t type, const char *s)
{
    b_open(bd, type);
    b_bytes(bd, s, strlen(s));
    b_close(bd);
}

static void b_context(struct builder *bd, uint8_t id, const char *abstract, unsigned ts_count)
{
    b_open(bd, 0x20);
    uint8_t fixed[4] = {id, 0, 0, 0};
    b_bytes(bd, fixed, 4);
    if (abstract)
        b_string_item(bd, 0x30, abstract);
    for (unsigned i = 0; i < ts_count; i++)
        b_string_item(bd, 0x40, UID_IMPLICIT_LE);
    b_close(bd);
}

static void b_user_info(struct builder *bd)
{
    b_open(bd, 0x50);
    b_open(bd, 0x51);
    uint8_t max[4] = {0, 0, 0x40, 0};
    b_bytes(bd, max, 4);
    b_close(bd);
    b_string_item(bd, 0x52, "1.2.3.4");
    b_close(bd);
}

static void b_release(struct builder *bd)
{
    tr_buf_release(&bd->b);
}

/* A full request: three contexts, every user information sub-item. */
static void fill_request(struct pdu_associate *a)
{
    snprintf(a->called_ae, sizeof(a->called_ae), "ARCHIVE");
    snprintf(a->calling_ae, sizeof(a->calling_ae), "CT SCANNER 7");
    snprintf(a->application_context, sizeof(a->application_context), UID_APP_CONTEXT);
    a->context_count = 3;
    a->context[0] = (struct pdu_presentation_context){.id = 1,
                                                      .abstract_syntax = UID_VERIFICATION,
                                                      .ts_count = 1,
                                                      .transfer_syntax = {UID_IMPLICIT_LE}};
    a->context[1] = (struct pdu_presentation_context){
        .id = 3,
        .abstract_syntax = UID_CT_STORAGE,
        .ts_count = 3,
        .transfer_syntax = {UID_EXPLICIT_LE, UID_EXPLICIT_BE, UID_IMPLICIT_LE}};
    a->context[2] = (struct pdu_presentation_context){.id = 255,
                                                      .abstract_syntax = UID_STUDY_GET,
                                                      .ts_count = 1,
                                                      .transfer_syntax = {UID_EXPLICIT_LE}};
    a->max_length = 65536;
    snprintf(a->implementation_class_uid, sizeof(a->implementation_class_uid), "1.2.3.4.5.6");
    snprintf(a->implementation_version, sizeof(a->implementation_version), "TELERAD_0.1");
    a->has_async = true;
    a->max_ops_invoked = 5;
    a->max_ops_performed = 0;
    a->role_count = 2;
    a->role[0] = (struct pdu_role){UID_CT_STORAGE, false, true};
    a->role[1] = (struct pdu_role){UID_MR_STORAGE, true, true};
    static const uint8_t info_ct[] = {1, 0, 1};
    a->extended_count = 2;
    a->extended[0] = (struct pdu_extended){UID_CT_STORAGE, info_ct, sizeof(info_ct)};
    a->extended[1] = (struct pdu_extended){UID_STUDY_GET, NULL, 0};
}

/* ---- names ------------------------------------------------------------------------------- */

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(pdu_type_name(PDU_ASSOCIATE_RQ), "A-ASSOCIATE-RQ");
    assert_string_equal(pdu_type_name(PDU_P_DATA_TF), "P-DATA-TF");
    assert_string_equal(pdu_type_name(PDU_ABORT), "A-ABORT");
    assert_string_equal(pdu_type_name(0x42), "unknown PDU type");
    struct pdu_reject rj = {PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER, PDU_RJ_CALLING_AE_NOT_RECOGNIZED};
    assert_string_equal(pdu_reject_text(&rj),
                        "rejected permanently by the called AE: calling AE title not recognized");
    rj = (struct pdu_reject){PDU_RJ_TRANSIENT, PDU_RJ_SOURCE_PROVIDER_PRESENTATION,
                             PDU_RJ_TEMPORARY_CONGESTION};
    assert_string_equal(pdu_reject_text(&rj), "rejected transiently by the called upper layer "
                                              "(presentation): temporary congestion");
    rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_PROVIDER_ACSE,
                             PDU_RJ_PROTOCOL_VERSION_NOT_SUPPORTED};
    assert_non_null(strstr(pdu_reject_text(&rj), "protocol version not supported"));
    rj = (struct pdu_reject){9, 9, 9};
    assert_non_null(strstr(pdu_reject_text(&rj), "unknown"));
    rj = (struct pdu_reject){PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER, 5};
    assert_non_null(strstr(pdu_reject_text(&rj), "reserved"));
    assert_string_equal(pdu_abort_text(PDU_ABORT_USER, 0),
                        "aborted by the peer application (service-user)");
    assert_string_equal(pdu_abort_text(PDU_ABORT_PROVIDER, PDU_ABORT_UNEXPECTED_PDU),
                        "aborted by the upper layer (service-provider): unexpected PDU");
    assert_non_null(strstr(pdu_abort_text(1, 0), "reserved"));
    assert_non_null(strstr(pdu_abort_text(PDU_ABORT_PROVIDER, 3), "reserved"));
}

/* ---- byte-exact encoding ----------------------------------------------------------------- */

/* A small A-ASSOCIATE-RQ written out by hand from PS3.8 Tables 9-11 to 9-16 and PS3.7
 * Table D.3-1 / D.3-3, field by field. */
/* clang-format off */
static const uint8_t reference_rq[] = {
    /* PS3.8 Table 9-11: PDU type 01, reserved, PDU length 0xB4 = 180 (68 fixed bytes, then
     * items of 25, 50 and 37 bytes) */
    0x01, 0x00, 0x00, 0x00, 0x00, 0xB4,
    /* protocol version 0001, reserved 0000 */
    0x00, 0x01, 0x00, 0x00,
    /* called AE title "ARCHIVE" padded with spaces to 16 */
    'A', 'R', 'C', 'H', 'I', 'V', 'E', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ',
    /* calling AE title "MODALITY" */
    'M', 'O', 'D', 'A', 'L', 'I', 'T', 'Y', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ',
    /* 32 reserved bytes */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* Table 9-12: application context item 10, reserved, length 21, "1.2.840.10008.3.1.1.1" */
    0x10, 0x00, 0x00, 0x15,
    '1', '.', '2', '.', '8', '4', '0', '.', '1', '0', '0', '0', '8', '.', '3', '.', '1', '.',
    '1', '.', '1',
    /* Table 9-13: presentation context item 20, length 4 + 21 + 21 = 46 (0x2E), ID 1, three
     * reserved bytes */
    0x20, 0x00, 0x00, 0x2E, 0x01, 0x00, 0x00, 0x00,
    /* Table 9-14: abstract syntax sub-item 30, length 17, "1.2.840.10008.1.1" */
    0x30, 0x00, 0x00, 0x11,
    '1', '.', '2', '.', '8', '4', '0', '.', '1', '0', '0', '0', '8', '.', '1', '.', '1',
    /* Table 9-15: transfer syntax sub-item 40, length 17, "1.2.840.10008.1.2" */
    0x40, 0x00, 0x00, 0x11,
    '1', '.', '2', '.', '8', '4', '0', '.', '1', '0', '0', '0', '8', '.', '1', '.', '2',
    /* Table 9-16: user information item 50, length 8 + 11 + 14 = 33 (0x21) */
    0x50, 0x00, 0x00, 0x21,
    /* PS3.8 Table D.1-1: maximum length sub-item 51, length 4, 16384 */
    0x51, 0x00, 0x00, 0x04, 0x00, 0x00, 0x40, 0x00,
    /* PS3.7 Table D.3-1: implementation class UID sub-item 52, length 7, "1.2.3.4" */
    0x52, 0x00, 0x00, 0x07, '1', '.', '2', '.', '3', '.', '4',
    /* PS3.7 Table D.3-3: implementation version name sub-item 55, length 10, "TELERAD_01" */
    0x55, 0x00, 0x00, 0x0A, 'T', 'E', 'L', 'E', 'R', 'A', 'D', '_', '0', '1',
};
/* clang-format on */

static void test_encode_reference_rq(void **state)
{
    (void)state;
    assert_int_equal(sizeof(reference_rq), 6 + 180);
    struct pdu_associate *a = new_associate();
    snprintf(a->called_ae, sizeof(a->called_ae), "ARCHIVE");
    snprintf(a->calling_ae, sizeof(a->calling_ae), "MODALITY");
    /* application_context left empty: the DICOM one is written */
    a->context_count = 1;
    a->context[0] = (struct pdu_presentation_context){.id = 1,
                                                      .abstract_syntax = UID_VERIFICATION,
                                                      .ts_count = 1,
                                                      .transfer_syntax = {UID_IMPLICIT_LE}};
    a->max_length = 16384;
    snprintf(a->implementation_class_uid, sizeof(a->implementation_class_uid), "1.2.3.4");
    snprintf(a->implementation_version, sizeof(a->implementation_version), "TELERAD_01");
    struct tr_buf out;
    tr_buf_init(&out, 4096);
    assert_int_equal(tr_buf_adds(&out, "prefix"), 0); /* encoders append */
    assert_int_equal(pdu_encode_associate_rq(a, &out), 0);
    assert_bytes_equal(out.data + 6, out.len - 6, reference_rq, sizeof(reference_rq));
    /* And the reference decodes to the same fields. */
    struct pdu_associate *b = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu(reference_rq, sizeof(reference_rq), b, &err), 0);
    assert_string_equal(b->application_context, UID_APP_CONTEXT);
    assert_associate_equal(PDU_ASSOCIATE_RQ, a, b);
    tr_buf_release(&out);
    free_associate(a);
    free_associate(b);
}

static void test_encode_short_pdus(void **state)
{
    (void)state;
    struct tr_buf out;
    tr_buf_init(&out, 1024);
    assert_int_equal(pdu_encode_release_rq(&out), 0);
    assert_bytes_equal(out.data, out.len, dcmtk_release_rq, sizeof(dcmtk_release_rq));
    tr_buf_reset(&out);
    assert_int_equal(pdu_encode_release_rp(&out), 0);
    assert_bytes_equal(out.data, out.len, dcmtk_release_rp, sizeof(dcmtk_release_rp));

    /* A-ASSOCIATE-RJ (PS3.8 Table 9-21) both ways. */
    tr_buf_reset(&out);
    struct pdu_reject rj = {PDU_RJ_PERMANENT, PDU_RJ_SOURCE_USER, PDU_RJ_CALLED_AE_NOT_RECOGNIZED};
    assert_int_equal(pdu_encode_associate_rj(&rj, &out), 0);
    static const uint8_t rj_bytes[] = {0x03, 0, 0, 0, 0, 4, 0, 1, 1, 7};
    assert_bytes_equal(out.data, out.len, rj_bytes, sizeof(rj_bytes));
    struct pdu_reject back = {0};
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(pdu_decode_associate_rj((const uint8_t *)out.data + 6, 4, &back, &err), 0);
    assert_int_equal(back.result, 1);
    assert_int_equal(back.source, 1);
    assert_int_equal(back.reason, 7);
    assert_int_equal(pdu_decode_associate_rj(rj_bytes + 6, 3, &back, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "A-ASSOCIATE-RJ"));
    /* Codes PS3.8 does not define are not sent. */
    size_t before = out.len;
    struct pdu_reject bad[] = {{3, 1, 1}, {1, 4, 1}, {1, 1, 4}, {1, 1, 0},
                               {2, 2, 3}, {1, 3, 0}, {1, 3, 3}};
    for (size_t i = 0; i < TR_ARRAY_SIZE(bad); i++)
        assert_int_equal(pdu_encode_associate_rj(&bad[i], &out), TR_EINVAL);
    assert_int_equal(out.len, before);

    /* A-ABORT (PS3.8 Table 9-26). */
    tr_buf_reset(&out);
    assert_int_equal(pdu_encode_abort(PDU_ABORT_PROVIDER, PDU_ABORT_INVALID_PARAMETER, &out), 0);
    static const uint8_t abort_bytes[] = {0x07, 0, 0, 0, 0, 4, 0, 0, 2, 6};
    assert_bytes_equal(out.data, out.len, abort_bytes, sizeof(abort_bytes));
    uint8_t source = 9, reason = 9;
    assert_int_equal(pdu_decode_abort(abort_bytes + 6, 4, &source, &reason, &err), 0);
    assert_int_equal(source, 2);
    assert_int_equal(reason, 6);
    tr_error_clear(&err);
    assert_int_equal(pdu_decode_abort(abort_bytes + 6, 2, &source, &reason, &err), TR_EFORMAT);
    assert_int_equal(pdu_encode_abort(PDU_ABORT_USER, 1, &out), TR_EINVAL);
    assert_int_equal(pdu_encode_abort(1, 0, &out), TR_EINVAL);
    assert_int_equal(pdu_encode_abort(PDU_ABORT_PROVIDER, 3, &out), TR_EINVAL);
    assert_int_equal(pdu_encode_abort(PDU_ABORT_PROVIDER, 7, &out), TR_EINVAL);
    assert_int_equal(pdu_encode_abort(PDU_ABORT_USER, 0, &out), 0);

    /* The buffer's cap is respected and the buffer left as it was. */
    struct tr_buf small;
    tr_buf_init(&small, 15);
    assert_int_equal(pdu_encode_release_rq(&small), 0);
    assert_int_equal(pdu_encode_release_rp(&small), TR_ELIMIT);
    assert_int_equal(small.len, 10);
    tr_buf_release(&small);
    tr_buf_release(&out);
}

static void test_pdata_header(void **state)
{
    (void)state;
    uint8_t hdr[12];
    pdu_encode_pdata_header(1, true, true, 68, hdr);
    /* Exactly the first 12 bytes DCMTK's echoscu sent for its 68-byte C-ECHO-RQ command. */
    assert_memory_equal(hdr, dcmtk_echo_pdata_rq, 12);
    pdu_encode_pdata_header(255, false, false, 0x10000, hdr);
    static const uint8_t expect[] = {0x04, 0, 0, 0x01, 0, 0x06, 0, 0x01, 0, 0x02, 0xFF, 0x00};
    assert_memory_equal(hdr, expect, 12);
    pdu_encode_pdata_header(3, false, true, 0, hdr);
    assert_int_equal(hdr[11], 0x02);
    pdu_encode_pdata_header(3, true, false, 0, hdr);
    assert_int_equal(hdr[11], 0x01);
}

/* ---- round trips ------------------------------------------------------------------------- */

static void test_round_trip_rq(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    fill_request(a);
    round_trip(PDU_ASSOCIATE_RQ, a);

    /* User identity of each type (PS3.7 Table D.3-14), with a 60000-byte JWT. */
    size_t jwt_len = 60000;
    char *jwt = tr_malloc(jwt_len);
    assert_non_null(jwt);
    for (size_t i = 0; i < jwt_len; i++)
        jwt[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."[i % 65];
    static const char kerberos[] = {0x60, 0x00, 0x01, 0x02, 0x00, 0x7F}; /* binary, NULs */
    static const char saml[] = "<samlp:AuthnRequest ID=\"x\"/>";
    struct pdu_user_identity ids[] = {
        {.type = PDU_IDENTITY_USERNAME, .primary = "alice", .primary_length = 5},
        {.type = PDU_IDENTITY_USERNAME_PASSCODE,
         .positive_response = true,
         .primary = "bob",
         .primary_length = 3,
         .secondary = "s3cret",
         .secondary_length = 6},
        {.type = PDU_IDENTITY_USERNAME_PASSCODE, .primary = "carol", .primary_length = 5},
        {.type = PDU_IDENTITY_KERBEROS,
         .positive_response = true,
         .primary = kerberos,
         .primary_length = sizeof(kerberos)},
        {.type = PDU_IDENTITY_SAML, .primary = saml, .primary_length = sizeof(saml) - 1},
        {.type = PDU_IDENTITY_JWT,
         .positive_response = true,
         .primary = jwt,
         .primary_length = (uint16_t)jwt_len},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(ids); i++) {
        a->identity = ids[i];
        size_t n = round_trip(PDU_ASSOCIATE_RQ, a);
        if (ids[i].type == PDU_IDENTITY_JWT)
            assert_true(n > jwt_len);
    }
    /* The decoded identity fields are NUL-terminated copies. */
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    a->identity = ids[1];
    assert_int_equal(pdu_encode_associate_rq(a, &out), 0);
    struct pdu_associate *b = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu((const uint8_t *)out.data, out.len, b, &err), 0);
    assert_string_equal(b->identity.primary, "bob");
    assert_string_equal(b->identity.secondary, "s3cret");
    assert_true(b->identity.positive_response);

    /* Limits at their maximum: 128 contexts, 32 transfer syntaxes, 128 roles. */
    pdu_associate_release(a);
    fill_request(a);
    static char uids[PDU_MAX_CONTEXTS][PDU_UID_MAX + 1];
    a->context_count = PDU_MAX_CONTEXTS;
    a->role_count = PDU_MAX_ROLES;
    for (unsigned i = 0; i < PDU_MAX_CONTEXTS; i++) {
        /* A 64-character UID: the longest allowed. */
        snprintf(uids[i], sizeof(uids[i]), "1.2.840.10008.5.1.4.1.1.%03u.%036u", i, i);
        assert_int_equal(strlen(uids[i]), 64);
        struct pdu_presentation_context *pc = &a->context[i];
        *pc = (struct pdu_presentation_context){.id = (uint8_t)(2 * i + 1),
                                                .abstract_syntax = uids[i]};
        pc->ts_count = i == 7 ? PDU_MAX_TRANSFER_SYNTAXES : 2;
        for (unsigned k = 0; k < pc->ts_count; k++)
            pc->transfer_syntax[k] = k % 2 ? UID_IMPLICIT_LE : UID_EXPLICIT_LE;
        a->role[i] = (struct pdu_role){uids[i], i % 2 == 0, i % 3 == 0};
    }
    a->identity = (struct pdu_user_identity){0};
    round_trip(PDU_ASSOCIATE_RQ, a);

    tr_buf_release(&out);
    free_associate(b);
    tr_free(jwt);
    free_associate(a);
}

static void test_round_trip_ac(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    fill_request(a);
    for (unsigned i = 0; i < a->context_count; i++)
        a->context[i].abstract_syntax = NULL; /* not in an AC */
    a->context[0].result = PDU_PC_ACCEPTANCE;
    a->context[1].result = PDU_PC_ACCEPTANCE;
    a->context[1].ts_count = 1;
    a->context[2].result = PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED;
    a->context[2].ts_count = 0; /* written as an empty transfer syntax sub-item */
    a->role[0].scu = false;
    a->identity.has_response = true;
    round_trip(PDU_ASSOCIATE_AC, a);

    /* A rejected context may also carry the proposed transfer syntax (DCMTK does). */
    a->context[2].ts_count = 1;
    a->context[2].result = PDU_PC_TRANSFER_SYNTAXES_NOT_SUPPORTED;
    round_trip(PDU_ASSOCIATE_AC, a);

    /* Server responses: empty (types 1 and 2) and a 60000-byte token. */
    a->identity = (struct pdu_user_identity){.has_response = true};
    round_trip(PDU_ASSOCIATE_AC, a);
    size_t n = 60000;
    char *token = tr_malloc(n);
    assert_non_null(token);
    memset(token, 'k', n);
    token[17] = '\0';
    a->identity.response = token;
    a->identity.response_length = (uint16_t)n;
    round_trip(PDU_ASSOCIATE_AC, a);

    /* A user identity RQ sub-item is not written in an AC, nor a response in an RQ. */
    a->identity = (struct pdu_user_identity){
        .type = PDU_IDENTITY_USERNAME, .primary = "x", .primary_length = 1};
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    assert_int_equal(pdu_encode_associate_ac(a, &out), 0);
    struct pdu_associate *b = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu((const uint8_t *)out.data, out.len, b, &err), 0);
    assert_int_equal(b->identity.type, PDU_IDENTITY_NONE);
    assert_false(b->identity.has_response);

    tr_buf_release(&out);
    free_associate(b);
    tr_free(token);
    free_associate(a);
}

/* Decoding into a structure again discards what the previous decode stored. */
static void test_decode_reuses_structure(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu(dcmtk_cfg_rq, sizeof(dcmtk_cfg_rq), a, &err), 0);
    assert_int_equal(a->role_count, 2);
    assert_int_equal(decode_pdu(dcmtk_echo_rq, sizeof(dcmtk_echo_rq), a, &err), 0);
    assert_int_equal(a->role_count, 0);
    assert_int_equal(a->extended_count, 0);
    assert_int_equal(a->context_count, 1);
    assert_string_equal(a->calling_ae, "A");
    free_associate(a);
}

/* ---- DCMTK's PDUs ------------------------------------------------------------------------ */

static void test_dcmtk_echo(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu(dcmtk_echo_rq, sizeof(dcmtk_echo_rq), a, &err), 0);
    assert_int_equal(a->protocol_version, 1);
    assert_string_equal(a->called_ae, "ARCHIVE");
    assert_string_equal(a->calling_ae, "A");
    assert_string_equal(a->application_context, UID_APP_CONTEXT);
    assert_int_equal(a->context_count, 1);
    /* DCMTK sends 0xFF in the reserved result byte of an RQ context: not tested. */
    assert_int_equal(dcmtk_echo_rq[99 + 6], 0xFF);
    assert_int_equal(a->context[0].id, 1);
    assert_string_equal(a->context[0].abstract_syntax, UID_VERIFICATION);
    assert_int_equal(a->context[0].ts_count, 1);
    assert_string_equal(a->context[0].transfer_syntax[0], UID_IMPLICIT_LE);
    assert_int_equal(a->max_length, 16384);
    assert_string_equal(a->implementation_class_uid, UID_DCMTK_367);
    assert_string_equal(a->implementation_version, "OFFIS_DCMTK_367");
    assert_false(a->has_async);
    assert_int_equal(a->role_count, 0);
    assert_int_equal(a->identity.type, PDU_IDENTITY_NONE);
    /* Re-encoded, it is the very same bytes: DCMTK orders and pads as telerad does. */
    struct tr_buf out;
    tr_buf_init(&out, 4096);
    a->context[0].id = 1;
    assert_int_equal(pdu_encode_associate_rq(a, &out), 0);
    assert_int_equal(out.len, sizeof(dcmtk_echo_rq));
    uint8_t expect[sizeof(dcmtk_echo_rq)];
    memcpy(expect, dcmtk_echo_rq, sizeof(expect));
    expect[99 + 6] = 0; /* but we send the reserved byte as 0 */
    assert_memory_equal(out.data, expect, sizeof(expect));

    /* storescp's answer. */
    struct pdu_associate *ac = new_associate();
    assert_int_equal(decode_pdu(dcmtk_echo_ac, sizeof(dcmtk_echo_ac), ac, &err), 0);
    assert_string_equal(ac->called_ae, "ARCHIVE");
    assert_string_equal(ac->calling_ae, "A");
    assert_int_equal(ac->context_count, 1);
    assert_int_equal(ac->context[0].result, PDU_PC_ACCEPTANCE);
    assert_null(ac->context[0].abstract_syntax);
    assert_int_equal(ac->context[0].ts_count, 1);
    assert_string_equal(ac->context[0].transfer_syntax[0], UID_IMPLICIT_LE);
    assert_int_equal(ac->max_length, 16384);
    assert_false(ac->identity.has_response);
    /* Byte-exact as an AC too. */
    tr_buf_reset(&out);
    assert_int_equal(pdu_encode_associate_ac(ac, &out), 0);
    assert_bytes_equal(out.data, out.len, dcmtk_echo_ac, sizeof(dcmtk_echo_ac));
    /* Decoded as the other type, neither has a presentation context. */
    assert_int_equal(decode_pdu(dcmtk_echo_ac, sizeof(dcmtk_echo_ac), a, &err), 0);
    tr_error_clear(&err);
    assert_int_equal(
        decode_body(PDU_ASSOCIATE_RQ, dcmtk_echo_ac + 6, sizeof(dcmtk_echo_ac) - 6, a, &err),
        TR_EFORMAT);
    assert_string_equal(err.message, "A-ASSOCIATE-RQ: no presentation context item");
    tr_error_clear(&err);
    assert_int_equal(
        decode_body(PDU_ASSOCIATE_AC, dcmtk_echo_rq + 6, sizeof(dcmtk_echo_rq) - 6, a, &err),
        TR_EFORMAT);
    tr_error_clear(&err);
    assert_int_equal(
        decode_body(PDU_P_DATA_TF, dcmtk_echo_rq + 6, sizeof(dcmtk_echo_rq) - 6, a, &err),
        TR_EINVAL);
    tr_buf_release(&out);
    free_associate(ac);
    free_associate(a);
}

static void test_dcmtk_rejected_context(void **state)
{
    (void)state;
    struct pdu_associate *ac = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu(dcmtk_find_ac, sizeof(dcmtk_find_ac), ac, &err), 0);
    assert_string_equal(ac->calling_ae, "FINDSCU");
    assert_int_equal(ac->context_count, 1);
    assert_int_equal(ac->context[0].result, PDU_PC_ABSTRACT_SYNTAX_NOT_SUPPORTED);
    /* DCMTK sends a transfer syntax; for a rejected context it is not significant. */
    assert_int_equal(ac->context[0].ts_count, 0);
    /* Even a malformed one (here: an embedded NUL) is not tested. */
    size_t len;
    uint8_t *body = body_copy(dcmtk_find_ac, sizeof(dcmtk_find_ac), &len);
    body[AT(107) + 4 + 3] = 0;
    assert_int_equal(decode_body(PDU_ASSOCIATE_AC, body, len, ac, &err), 0);
    /* But it is for an accepted one. */
    body[AT(99) + 6] = PDU_PC_ACCEPTANCE;
    expect_error(PDU_ASSOCIATE_AC, body, len, TR_EFORMAT,
                 "A-ASSOCIATE-AC: presentation context item at byte 99: transfer syntax "
                 "sub-item at byte 107: UID has byte 0x00 at position 3");
    /* An unknown result. */
    body[AT(99) + 6] = 5;
    expect_error(PDU_ASSOCIATE_AC, body, len, TR_EFORMAT, "unknown result 5");
    tr_free(body);
    free_associate(ac);
}

static void test_dcmtk_user_identity(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu(dcmtk_user_rq, sizeof(dcmtk_user_rq), a, &err), 0);
    assert_string_equal(a->calling_ae, "STORESCU");
    assert_int_equal(a->context_count, 2);
    assert_int_equal(a->context[1].id, 3);
    assert_int_equal(a->context[1].ts_count, 2);
    assert_string_equal(a->context[1].transfer_syntax[0], UID_EXPLICIT_BE);
    assert_string_equal(a->context[1].transfer_syntax[1], UID_IMPLICIT_LE);
    assert_int_equal(a->identity.type, PDU_IDENTITY_USERNAME_PASSCODE);
    assert_true(a->identity.positive_response);
    assert_int_equal(a->identity.primary_length, 5);
    assert_string_equal(a->identity.primary, "alice");
    assert_int_equal(a->identity.secondary_length, 6);
    assert_string_equal(a->identity.secondary, "secret");
    round_trip(PDU_ASSOCIATE_RQ, a);

    assert_int_equal(decode_pdu(dcmtk_jwt_rq, sizeof(dcmtk_jwt_rq), a, &err), 0);
    assert_int_equal(a->identity.type, PDU_IDENTITY_JWT);
    assert_true(a->identity.positive_response);
    assert_int_equal(a->identity.primary_length, strlen(JWT_SMALL));
    assert_string_equal(a->identity.primary, JWT_SMALL);
    assert_int_equal(a->identity.secondary_length, 0);
    round_trip(PDU_ASSOCIATE_RQ, a);
    free_associate(a);
}

static void test_dcmtk_roles_and_extended(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_pdu(dcmtk_cfg_rq, sizeof(dcmtk_cfg_rq), a, &err), 0);
    assert_string_equal(a->calling_ae, "CFG");
    assert_int_equal(a->context_count, 3);
    assert_string_equal(a->context[2].abstract_syntax, UID_VERIFICATION);
    assert_int_equal(a->role_count, 2);
    assert_string_equal(a->role[0].sop_class, UID_CT_STORAGE);
    assert_true(a->role[0].scu);
    assert_true(a->role[0].scp);
    assert_string_equal(a->role[1].sop_class, UID_MR_STORAGE);
    assert_false(a->role[1].scu);
    assert_true(a->role[1].scp);
    assert_int_equal(a->extended_count, 1);
    assert_string_equal(a->extended[0].sop_class, UID_CT_STORAGE);
    assert_int_equal(a->extended[0].info_length, 2);
    assert_int_equal(a->extended[0].info[0], 1);
    assert_int_equal(a->extended[0].info[1], 2);
    /* Byte-exact again (DCMTK writes the version name between roles and extended
     * negotiation, in increasing type order, as telerad does). */
    struct tr_buf out;
    tr_buf_init(&out, 4096);
    assert_int_equal(pdu_encode_associate_rq(a, &out), 0);
    uint8_t expect[sizeof(dcmtk_cfg_rq)];
    memcpy(expect, dcmtk_cfg_rq, sizeof(expect));
    expect[99 + 6] = expect[180 + 6] = expect[261 + 6] = 0; /* the reserved 0xFF bytes */
    assert_bytes_equal(out.data, out.len, expect, sizeof(expect));
    tr_buf_release(&out);
    round_trip(PDU_ASSOCIATE_RQ, a);
    free_associate(a);
}

/* ---- malformed input --------------------------------------------------------------------- */

/* Every truncation of a valid body fails, with a message, and reads nothing past the end. */
static void test_every_truncation(void **state)
{
    (void)state;
    const struct {
        const uint8_t *pdu;
        size_t n;
    } pdus[] = {
        {dcmtk_echo_rq, sizeof(dcmtk_echo_rq)}, {dcmtk_echo_ac, sizeof(dcmtk_echo_ac)},
        {dcmtk_user_rq, sizeof(dcmtk_user_rq)}, {dcmtk_jwt_rq, sizeof(dcmtk_jwt_rq)},
        {dcmtk_cfg_rq, sizeof(dcmtk_cfg_rq)},   {dcmtk_find_ac, sizeof(dcmtk_find_ac)},
    };
    struct pdu_associate *a = new_associate();
    for (size_t k = 0; k < TR_ARRAY_SIZE(pdus); k++) {
        const uint8_t *body = pdus[k].pdu + PDU_HEADER_SIZE;
        size_t len = pdus[k].n - PDU_HEADER_SIZE;
        enum pdu_type type = (enum pdu_type)pdus[k].pdu[0];
        for (size_t n = 0; n < len; n++) {
            struct tr_error err = TR_ERROR_INIT;
            int rc = decode_body(type, body, n, a, &err);
            if (rc >= 0)
                fail_msg("PDU %zu truncated to %zu of %zu bytes decoded", k, n, len);
            assert_true(rc == TR_EFORMAT);
            assert_true(err.message[0] != '\0');
        }
        struct tr_error err = TR_ERROR_INIT;
        assert_int_equal(decode_body(type, body, len, a, &err), 0);
    }
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, dcmtk_echo_rq + 6, 67, a, &err), TR_EFORMAT);
    assert_string_equal(err.message,
                        "A-ASSOCIATE-RQ: body of 67 bytes is shorter than its 68 fixed bytes");
    tr_error_clear(&err);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, dcmtk_echo_rq + 6, 100, a, &err), TR_EFORMAT);
    assert_string_equal(err.message,
                        "A-ASSOCIATE-RQ: presentation context item (type 0x20) at byte 99: "
                        "length 46 exceeds the 3 bytes left");
    tr_error_clear(&err);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, dcmtk_echo_rq + 6, 95, a, &err), TR_EFORMAT);
    assert_string_equal(err.message, "A-ASSOCIATE-RQ: item at byte 99: 2 bytes left, too few "
                                     "for an item header");
    free_associate(a);
}

static void test_lengths_too_large(void **state)
{
    (void)state;
    size_t len;
    uint8_t *body = body_copy(dcmtk_echo_rq, sizeof(dcmtk_echo_rq), &len);
    /* Each item's length set to 0xFFFF in turn: application context (74), presentation
     * context (99), abstract syntax (107), transfer syntax (128), user information (149),
     * maximum length (153), implementation class UID (161), version name (192). */
    static const size_t items[] = {74, 99, 107, 128, 149, 153, 161, 192};
    for (size_t i = 0; i < TR_ARRAY_SIZE(items); i++) {
        uint8_t *p = body + AT(items[i]) + 2;
        uint8_t saved[2] = {p[0], p[1]};
        p[0] = p[1] = 0xFF;
        expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT, "length 65535 exceeds");
        /* One more than the item holds: the next item is misread or the end overrun. */
        tr_put_be16(p, (uint16_t)(tr_be16(saved) + 1));
        struct pdu_associate *a = new_associate();
        struct tr_error err = TR_ERROR_INIT;
        assert_true(decode_body(PDU_ASSOCIATE_RQ, body, len, a, &err) < 0);
        free_associate(a);
        p[0] = saved[0];
        p[1] = saved[1];
    }
    /* A sub-item longer than its item but within the PDU. */
    tr_put_be16(body + AT(107) + 2, 17 + 4 + 17 + 1);
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: presentation context item at byte 99: abstract syntax "
                 "sub-item (type 0x30) at byte 107: length 39 exceeds the 38 bytes left");
    tr_free(body);

    /* Items of the PDV stream and of user identity. */
    struct builder bd;
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_open(&bd, 0x50);
    b_open(&bd, 0x58);
    uint8_t identity[] = {1, 0, 0x00, 0x05, 'a', 'l', 'i', 'c', 'e', 0x00, 0x00};
    b_bytes(&bd, identity, sizeof(identity));
    b_close(&bd);
    b_close(&bd);
    uint8_t *v = (uint8_t *)bd.b.data + bd.b.len - sizeof(identity);
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err), 0);
    assert_string_equal(a->identity.primary, "alice");
    v[3] = 8; /* primary length past the item */
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "user identity sub-item at byte");
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "primary field length 8 exceeds the item");
    v[3] = 5;
    v[10] = 1; /* secondary length 1, nothing left */
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "secondary field length 1 does not match the 0 bytes left");
    v[10] = 0;
    v[0] = 6; /* an identity type PS3.7 does not define */
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "unknown user identity type 6");
    v[0] = 1;
    v[3] = 0; /* empty primary field */
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "empty primary field");
    free_associate(a);
    b_release(&bd);
}

static void test_zero_length_items(void **state)
{
    (void)state;
    struct builder bd;
    /* Zero-length application context, presentation context, abstract syntax, transfer
     * syntax, maximum length and user information items. */
    b_init(&bd, "B", "A");
    b_open(&bd, 0x10);
    b_close(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: application context item at byte 74: empty UID");
    b_release(&bd);

    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_open(&bd, 0x20);
    b_close(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "presentation context item at byte 99: length 0 is shorter than the 4 fixed "
                 "bytes");
    b_release(&bd);

    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_open(&bd, 0x20);
    uint8_t fixed[4] = {1, 0, 0, 0};
    b_bytes(&bd, fixed, 4);
    b_string_item(&bd, 0x30, "");
    b_close(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "presentation context item at byte 99: abstract syntax sub-item at byte 107: "
                 "empty UID");
    b_release(&bd);

    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_open(&bd, 0x20);
    b_bytes(&bd, fixed, 4);
    b_string_item(&bd, 0x30, UID_VERIFICATION);
    b_string_item(&bd, 0x40, "");
    b_close(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "transfer syntax sub-item at byte 128: empty UID");
    b_release(&bd);

    /* An empty user information item is tolerated (no maximum length: 0), as are
     * zero-length unknown items at both levels. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_open(&bd, 0x99);
    b_close(&bd);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_open(&bd, 0x50);
    b_close(&bd);
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err), 0);
    assert_int_equal(a->max_length, 0);
    assert_string_equal(a->implementation_class_uid, "");
    b_release(&bd);

    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_open(&bd, 0x50);
    b_open(&bd, 0x51);
    b_close(&bd);
    b_close(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "user information item at byte 149: maximum length sub-item at byte 153: "
                 "length 0 is not 4");
    b_release(&bd);
    free_associate(a);
}

static void test_context_ids(void **state)
{
    (void)state;
    size_t len;
    uint8_t *body = body_copy(dcmtk_cfg_rq, sizeof(dcmtk_cfg_rq), &len);
    body[AT(180) + 4] = 2;
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: presentation context item at byte 180: presentation context "
                 "ID 2 is even (IDs are odd, 1-255)");
    body[AT(180) + 4] = 0;
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT, "presentation context ID 0 is even");
    body[AT(180) + 4] = 1;
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "presentation context item at byte 180: presentation context ID 1 is used "
                 "twice");
    body[AT(180) + 4] = 255;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, body, len, a, &err), 0);
    assert_int_equal(a->context[1].id, 255);
    free_associate(a);
    tr_free(body);
}

static void test_limits(void **state)
{
    (void)state;
    struct builder bd;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;

    /* 300 contexts: the 129th is refused, whatever its ID. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    for (unsigned i = 0; i < 300; i++)
        b_context(&bd, (uint8_t)(2 * i + 1), UID_VERIFICATION, 1);
    b_user_info(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_ELIMIT,
                 "more than 128 presentation contexts");
    b_release(&bd);

    /* 128 are fine. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    for (unsigned i = 0; i < 128; i++)
        b_context(&bd, (uint8_t)(255 - 2 * i), UID_VERIFICATION, 1);
    b_user_info(&bd);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err), 0);
    assert_int_equal(a->context_count, 128);
    assert_int_equal(a->context[127].id, 1);
    b_release(&bd);

    /* 32 transfer syntaxes are fine, 33 are not. */
    for (unsigned ts = 32; ts <= 33; ts++) {
        b_init(&bd, "B", "A");
        b_string_item(&bd, 0x10, UID_APP_CONTEXT);
        b_context(&bd, 1, UID_VERIFICATION, ts);
        b_user_info(&bd);
        tr_error_clear(&err);
        int rc = decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err);
        if (ts == 32) {
            assert_int_equal(rc, 0);
            assert_int_equal(a->context[0].ts_count, 32);
        } else {
            assert_int_equal(rc, TR_ELIMIT);
            assert_non_null(strstr(err.message, "more than 32 transfer syntaxes"));
        }
        b_release(&bd);
    }

    /* 129 role selections and extended negotiations. */
    for (uint8_t type = 0x54; type <= 0x56; type += 2) {
        b_init(&bd, "B", "A");
        b_string_item(&bd, 0x10, UID_APP_CONTEXT);
        b_context(&bd, 1, UID_VERIFICATION, 1);
        b_open(&bd, 0x50);
        for (unsigned i = 0; i < 129; i++) {
            char uid[32];
            int n = snprintf(uid, sizeof(uid), "1.2.3.%u", i);
            b_open(&bd, type);
            b_u16(&bd, (uint16_t)n);
            b_bytes(&bd, uid, (size_t)n);
            b_u8(&bd, 1);
            b_u8(&bd, 0);
            b_close(&bd);
        }
        b_close(&bd);
        expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_ELIMIT,
                     type == 0x54 ? "more than 128 role selections"
                                  : "more than 128 extended negotiations");
        b_release(&bd);
    }
    free_associate(a);
}

static void test_bad_uids(void **state)
{
    (void)state;
    static const char uid64[] = "1.2.840.10008.5.1.4.1.1.2.12345678901234567890123456789012345678";
    static const char uid65[] = "1.2.840.10008.5.1.4.1.1.2.123456789012345678901234567890123456789";
    assert_int_equal(strlen(uid64), 64);
    assert_int_equal(strlen(uid65), 65);
    struct builder bd;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    const struct {
        const char *uid;
        size_t n;
        const char *error; /* NULL: decodes to `decoded` */
        const char *decoded;
    } cases[] = {
        {uid64, 64, NULL, uid64},
        {uid65, 65, "UID of 65 bytes is longer than 64", NULL},
        {"1.2.840.10008.1.2\0", 18, NULL, UID_IMPLICIT_LE}, /* PS3.5 NUL padding */
        {"1.2.840.10008.1.2 ", 18, NULL, UID_IMPLICIT_LE},  /* space padding */
        {"1.2.840.10008.1.2\0\0\0 ", 21, NULL, UID_IMPLICIT_LE},
        {"1.2.840\0.10008.1.2", 18, "UID has byte 0x00 at position 7", NULL},
        {" 1.2.840.10008.1.2", 18, "UID has byte 0x20 at position 0", NULL},
        {"1.2.840.10008.1.2\n", 18, "UID has byte 0x0a at position 17", NULL},
        {"\0\0\0\0", 4, "empty UID", NULL},
        {"1.2.840.10008.1.2x", 18, NULL, "1.2.840.10008.1.2x"}, /* judged by the layers above */
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(cases); i++) {
        /* As a transfer syntax, and as the application context. */
        for (int where = 0; where < 2; where++) {
            b_init(&bd, "B", "A");
            b_open(&bd, 0x10);
            if (where == 0)
                b_bytes(&bd, UID_APP_CONTEXT, strlen(UID_APP_CONTEXT));
            else
                b_bytes(&bd, cases[i].uid, cases[i].n);
            b_close(&bd);
            b_open(&bd, 0x20);
            uint8_t fixed[4] = {1, 0, 0, 0};
            b_bytes(&bd, fixed, 4);
            b_string_item(&bd, 0x30, UID_VERIFICATION);
            b_open(&bd, 0x40);
            if (where == 0)
                b_bytes(&bd, cases[i].uid, cases[i].n);
            else
                b_bytes(&bd, UID_IMPLICIT_LE, strlen(UID_IMPLICIT_LE));
            b_close(&bd);
            b_close(&bd);
            b_user_info(&bd);
            tr_error_clear(&err);
            int rc = decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err);
            if (cases[i].error) {
                if (rc != TR_EFORMAT || !strstr(err.message, cases[i].error))
                    fail_msg("case %zu: got %d \"%s\"", i, rc, err.message);
            } else {
                if (rc != 0)
                    fail_msg("case %zu: %s", i, err.message);
                assert_string_equal(where == 0 ? a->context[0].transfer_syntax[0]
                                               : a->application_context,
                                    cases[i].decoded);
            }
            b_release(&bd);
        }
    }

    /* A role selection whose UID length disagrees with its item length. */
    size_t len;
    uint8_t *body = body_copy(dcmtk_cfg_rq, sizeof(dcmtk_cfg_rq), &len);
    tr_put_be16(body + AT(377) + 4, 0x18);
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: user information item at byte 334: SCP/SCU role selection "
                 "sub-item at byte 377: UID length 24 does not match the item length 29");
    tr_put_be16(body + AT(377) + 4, 0x19);
    /* An extended negotiation whose UID is longer than the item. */
    tr_put_be16(body + AT(462) + 4, 0x1C);
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "SOP class extended negotiation sub-item at byte 462: UID length 28 exceeds the "
                 "item length 29");
    tr_free(body);
    free_associate(a);
}

static void test_ae_titles(void **state)
{
    (void)state;
    size_t len;
    uint8_t *body = body_copy(dcmtk_echo_rq, sizeof(dcmtk_echo_rq), &len);
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    /* Leading and trailing spaces go, and trailing NULs some peers pad with. */
    memcpy(body + AT(26), "  A B\0\0\0\0\0\0\0\0\0\0\0", 16);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, body, len, a, &err), 0);
    assert_string_equal(a->calling_ae, "A B");
    memcpy(body + AT(26), "0123456789ABCDEF", 16);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, body, len, a, &err), 0);
    assert_string_equal(a->calling_ae, "0123456789ABCDEF");
    memset(body + AT(26), ' ', 16);
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: calling AE title at byte 26 is empty");
    memcpy(body + AT(26), "A\\B             ", 16);
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "calling AE title at byte 26 has byte 0x5c at position 1");
    memcpy(body + AT(10), "AR\0CHIVE        ", 16);
    expect_error(PDU_ASSOCIATE_RQ, body, len, TR_EFORMAT,
                 "called AE title at byte 10 has byte 0x00 at position 2");
    /* In an AC they are not tested. */
    tr_free(body);
    body = body_copy(dcmtk_echo_ac, sizeof(dcmtk_echo_ac), &len);
    memcpy(body + AT(10), "AR\0CH\\VE\xC3\xA9      ", 16);
    memset(body + AT(26), ' ', 16);
    assert_int_equal(decode_body(PDU_ASSOCIATE_AC, body, len, a, &err), 0);
    assert_string_equal(a->called_ae, "AR?CH?VE??");
    assert_string_equal(a->calling_ae, "");
    tr_free(body);

    /* The implementation version name is informational: truncated to 16 characters, then
     * trimmed, unprintable bytes replaced (a fuzzing find: trimming before truncating left
     * trailing spaces that did not survive a round trip). */
    body = body_copy(dcmtk_echo_rq, sizeof(dcmtk_echo_rq), &len);
    memcpy(body + AT(192) + 4, "OFFIS\001DCMTK_ \0\0", 15);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, body, len, a, &err), 0);
    assert_string_equal(a->implementation_version, "OFFIS?DCMTK_");
    struct builder bd;
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_open(&bd, 0x50);
    b_string_item(&bd, 0x52, "1.2.3");
    b_string_item(&bd, 0x55, "TWELVE CHARS    MORE     ");
    b_close(&bd);
    assert_int_equal(decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err), 0);
    assert_string_equal(a->implementation_version, "TWELVE CHARS");
    round_trip(PDU_ASSOCIATE_RQ, a);
    b_release(&bd);
    tr_free(body);
    free_associate(a);

    assert_true(pdu_ae_title_is_valid("ARCHIVE"));
    assert_true(pdu_ae_title_is_valid("A B"));
    assert_true(pdu_ae_title_is_valid("0123456789ABCDEF"));
    assert_false(pdu_ae_title_is_valid("0123456789ABCDEFG"));
    assert_false(pdu_ae_title_is_valid(""));
    assert_false(pdu_ae_title_is_valid("    "));
    assert_false(pdu_ae_title_is_valid("A\\B"));
    assert_false(pdu_ae_title_is_valid("A\tB"));
    assert_false(pdu_ae_title_is_valid("\xC3\xA9"));
    assert_false(pdu_ae_title_is_valid(NULL));
}

static void test_missing_and_repeated(void **state)
{
    (void)state;
    struct builder bd;
    /* No application context. */
    b_init(&bd, "B", "A");
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_user_info(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: no application context item");
    b_release(&bd);
    /* No user information. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: no user information item");
    b_release(&bd);
    /* No abstract syntax; no transfer syntax. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, NULL, 1);
    b_user_info(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "A-ASSOCIATE-RQ: presentation context item at byte 99: presentation context 1 "
                 "has no abstract syntax");
    b_release(&bd);
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 0);
    b_user_info(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "presentation context 1 has no transfer syntax");
    b_release(&bd);
    /* Two abstract syntaxes. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_open(&bd, 0x20);
    uint8_t fixed[4] = {1, 0, 0, 0};
    b_bytes(&bd, fixed, 4);
    b_string_item(&bd, 0x30, UID_VERIFICATION);
    b_string_item(&bd, 0x30, UID_CT_STORAGE);
    b_string_item(&bd, 0x40, UID_IMPLICIT_LE);
    b_close(&bd);
    b_user_info(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "abstract syntax sub-item at byte 128: a second abstract syntax");
    b_release(&bd);
    /* Two application contexts, two user information items. */
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "application context item at byte 99: appears twice");
    b_release(&bd);
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_user_info(&bd);
    b_user_info(&bd);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "user information item at byte 172: appears twice");
    b_release(&bd);

    /* Sub-items: a second maximum length is an error; a repeated role selection is skipped
     * when identical and an error when it differs. */
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    for (int variant = 0; variant < 4; variant++) {
        b_init(&bd, "B", "A");
        b_string_item(&bd, 0x10, UID_APP_CONTEXT);
        b_context(&bd, 1, UID_VERIFICATION, 1);
        b_open(&bd, 0x50);
        for (int k = 0; k < 2; k++) {
            if (variant == 0) {
                b_open(&bd, 0x51);
                b_bytes(&bd, "\0\0\x40\0", 4);
                b_close(&bd);
            } else if (variant == 3) {
                b_open(&bd, 0x56);
                b_u16(&bd, (uint16_t)strlen(UID_CT_STORAGE));
                b_bytes(&bd, UID_CT_STORAGE, strlen(UID_CT_STORAGE));
                b_u8(&bd, (uint8_t)k);
                b_close(&bd);
            } else {
                b_open(&bd, 0x54);
                b_u16(&bd, (uint16_t)strlen(UID_CT_STORAGE));
                b_bytes(&bd, UID_CT_STORAGE, strlen(UID_CT_STORAGE));
                b_u8(&bd, 1);
                b_u8(&bd, variant == 2 ? (uint8_t)k : 1);
                b_close(&bd);
            }
        }
        b_close(&bd);
        tr_error_clear(&err);
        int rc = decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err);
        if (variant == 1) {
            assert_int_equal(rc, 0);
            assert_int_equal(a->role_count, 1);
        } else {
            assert_int_equal(rc, TR_EFORMAT);
            assert_non_null(strstr(err.message, variant == 0   ? "appears twice"
                                                : variant == 2 ? "conflicting role selections"
                                                               : "conflicting extended"));
        }
        b_release(&bd);
    }
    free_associate(a);
}

/* Unrecognized items are skipped (PS3.8 9.3.1, D.2): unknown types, out-of-place ones, and
 * the common extended negotiation telerad does not negotiate. */
static void test_unknown_items_skipped(void **state)
{
    (void)state;
    struct builder bd;
    b_init(&bd, "B", "A");
    b_string_item(&bd, 0x99, "future top-level item");
    b_string_item(&bd, 0x10, UID_APP_CONTEXT);
    b_context(&bd, 1, UID_VERIFICATION, 1);
    b_open(&bd, 0x21); /* an AC context in an RQ */
    b_bytes(&bd, "\x02\0\0\0", 4);
    b_close(&bd);
    b_open(&bd, 0x50);
    b_string_item(&bd, 0x77, "future sub-item");
    b_string_item(&bd, 0x59, "\0\0"); /* an AC user identity in an RQ */
    b_open(&bd, 0x57);                /* PS3.7 D.3.3.6 */
    b_u16(&bd, (uint16_t)strlen(UID_CT_STORAGE));
    b_bytes(&bd, UID_CT_STORAGE, strlen(UID_CT_STORAGE));
    b_u16(&bd, 19);
    b_bytes(&bd, "1.2.840.10008.4.2\0\0", 19);
    b_u16(&bd, 2 + 25);
    b_u16(&bd, 25);
    b_bytes(&bd, "1.2.840.10008.5.1.4.1.1.4", 25);
    b_close(&bd);
    b_open(&bd, 0x53);
    b_bytes(&bd, "\0\x03\0\x01", 4);
    b_close(&bd);
    b_close(&bd);
    b_open(&bd, 0x60); /* after the user information too */
    b_close(&bd);
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    int rc = decode_body(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, a, &err);
    if (rc)
        fail_msg("%s", err.message);
    assert_int_equal(a->context_count, 1);
    assert_true(a->has_async);
    assert_int_equal(a->max_ops_invoked, 3);
    assert_int_equal(a->max_ops_performed, 1);
    assert_false(a->identity.has_response);

    /* A malformed common extended negotiation is reported. */
    uint8_t *p = memmem(bd.b.data, bd.b.len, "1.2.840.10008.4.2", 17);
    assert_non_null(p);
    tr_put_be16(p - 2, 40);
    expect_error(PDU_ASSOCIATE_RQ, (uint8_t *)bd.b.data, bd.b.len, TR_EFORMAT,
                 "SOP class common extended negotiation sub-item at byte");
    b_release(&bd);
    free_associate(a);
}

/* What is particular to an A-ASSOCIATE-AC (PS3.8 9.3.3, PS3.7 D.3.3.7.2). */
static void test_ac_specifics(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    struct tr_error err = TR_ERROR_INIT;
    for (int variant = 0; variant < 6; variant++) {
        struct builder bd;
        b_init(&bd, "B", "A");
        b_string_item(&bd, 0x10, UID_APP_CONTEXT);
        b_open(&bd, 0x21);
        uint8_t fixed[4] = {1, 0, variant == 2 ? PDU_PC_USER_REJECTION : 0, 0};
        b_bytes(&bd, fixed, 4);
        if (variant == 0 || variant >= 3)
            b_string_item(&bd, 0x40, UID_IMPLICIT_LE);
        if (variant == 0)
            b_string_item(&bd, 0x40, UID_EXPLICIT_LE);
        b_close(&bd);
        b_open(&bd, 0x50);
        b_string_item(&bd, 0x52, "1.2.3");
        b_string_item(&bd, 0x58, "\x01\x01\x00\x01x\x00\x00"); /* an RQ identity: skipped */
        if (variant >= 4) {
            b_open(&bd, 0x59);
            b_u16(&bd, variant == 5 ? 3 : 2);
            b_bytes(&bd, "ok", 2);
            b_close(&bd);
        }
        if (variant == 4)
            b_string_item(&bd, 0x59, "\x00\x00");
        b_close(&bd);
        tr_error_clear(&err);
        int rc = decode_body(PDU_ASSOCIATE_AC, (uint8_t *)bd.b.data, bd.b.len, a, &err);
        static const char *const errors[] = {
            "A-ASSOCIATE-AC: presentation context item at byte 99: transfer syntax sub-item at "
            "byte 128: a second transfer syntax in an AC",
            "accepted presentation context 1 has no transfer syntax",
            NULL, /* a rejected context without a transfer syntax sub-item: tolerated */
            NULL,
            "user identity sub-item at byte 155: appears twice",
            "server response length 3 does not match the item length 4",
        };
        if (errors[variant]) {
            if (rc != TR_EFORMAT || !strstr(err.message, errors[variant]))
                fail_msg("variant %d: %d \"%s\"", variant, rc, err.message);
        } else {
            if (rc != 0)
                fail_msg("variant %d: %s", variant, err.message);
            assert_int_equal(a->identity.type, PDU_IDENTITY_NONE);
            assert_false(a->identity.has_response);
            assert_int_equal(a->context[0].ts_count, variant == 2 ? 0 : 1);
        }
        b_release(&bd);
    }
    free_associate(a);
}

/* ---- encoder validation ------------------------------------------------------------------ */

#define expect_invalid(type, a, code, needle) expect_invalid_at(__LINE__, type, a, code, needle)

static void expect_invalid_at(int line, enum pdu_type type, const struct pdu_associate *a, int code,
                              const char *needle)
{
    struct tr_buf out;
    tr_buf_init(&out, 1 << 20);
    assert_int_equal(tr_buf_adds(&out, "keep"), 0);
    int rc = type == PDU_ASSOCIATE_RQ ? pdu_encode_associate_rq(a, &out)
                                      : pdu_encode_associate_ac(a, &out);
    if (rc != code)
        fail_msg("line %d: expected %d, got %d", line, code, rc);
    assert_int_equal(out.len, 4);
    assert_string_equal(out.data, "keep");
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(pdu_check_associate(type, a, &err), code);
    if (!strstr(err.message, needle))
        fail_msg("line %d: expected \"%s\" in \"%s\"", line, needle, err.message);
    tr_buf_release(&out);
}

static void test_encoder_validation(void **state)
{
    (void)state;
    struct pdu_associate *a = new_associate();
    fill_request(a);
    assert_int_equal(pdu_check_associate(PDU_ASSOCIATE_RQ, a, NULL), 0);

    snprintf(a->called_ae, sizeof(a->called_ae), "%s", "");
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "called AE title");
    snprintf(a->called_ae, sizeof(a->called_ae), "%s", "A\\B");
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "called AE title \"A\\B\"");
    snprintf(a->called_ae, sizeof(a->called_ae), "%s", "ARCHIVE");
    snprintf(a->calling_ae, sizeof(a->calling_ae), "%s", "A\x01");
    expect_invalid(PDU_ASSOCIATE_AC, a, TR_EINVAL, "calling AE title");
    snprintf(a->calling_ae, sizeof(a->calling_ae), "%s", "SCU");

    a->context[1].id = 4;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "presentation context ID 4 is not odd");
    a->context[1].id = 1;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "presentation context ID 1 is used twice");
    a->context[1].id = 3;
    a->context[1].abstract_syntax = NULL;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "abstract syntax is not a valid UID");
    a->context[1].abstract_syntax = /* 65 characters */
        "1.2.840.10008.5.1.4.1.1.2.123456789012345678901234567890123456789";
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "abstract syntax is not a valid UID");
    a->context[1].abstract_syntax = UID_CT_STORAGE;
    a->context[1].transfer_syntax[1] = "";
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "transfer syntax 1 is not a valid UID");
    a->context[1].transfer_syntax[1] = UID_EXPLICIT_BE;
    a->context[1].ts_count = 0;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "0 transfer syntaxes");
    a->context[1].ts_count = 33;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "33 transfer syntaxes");
    a->context[1].ts_count = 3;
    expect_invalid(PDU_ASSOCIATE_AC, a, TR_EINVAL, "3 transfer syntaxes in an AC");
    a->context[1].ts_count = 1;
    a->context[1].result = 5;
    expect_invalid(PDU_ASSOCIATE_AC, a, TR_EINVAL, "result 5 is unknown");
    a->context[1].result = 0;
    a->context[1].ts_count = 0;
    expect_invalid(PDU_ASSOCIATE_AC, a, TR_EINVAL, "0 transfer syntaxes in an AC");
    a->context[1].ts_count = 3;
    a->context_count = 0;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "0 presentation contexts");
    a->context_count = 129;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "129 presentation contexts");
    a->context_count = 3;

    a->implementation_class_uid[0] = '\0';
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "implementation class UID");
    snprintf(a->implementation_class_uid, sizeof(a->implementation_class_uid), "1.2.3");
    snprintf(a->implementation_version, sizeof(a->implementation_version), "%s", "BAD\tNAME");
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "implementation version name");
    a->implementation_version[0] = '\0';
    a->role[1].sop_class = UID_CT_STORAGE;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "two role selections for SOP class");
    a->role[1].sop_class = UID_MR_STORAGE;
    a->extended[1].sop_class = UID_CT_STORAGE;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "two extended negotiations");
    a->extended[1].sop_class = UID_STUDY_GET;
    a->extended[1].info_length = 3; /* with info NULL */
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "no information");
    a->extended[1].info_length = 0;

    a->identity = (struct pdu_user_identity){.type = 6, .primary = "x", .primary_length = 1};
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "unknown user identity type 6");
    a->identity = (struct pdu_user_identity){.type = PDU_IDENTITY_USERNAME};
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "without a primary field");
    a->identity = (struct pdu_user_identity){.type = PDU_IDENTITY_USERNAME,
                                             .primary = "x",
                                             .primary_length = 1,
                                             .secondary = "y",
                                             .secondary_length = 1};
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_EINVAL, "only type 2");
    /* (not written in an AC, so not checked there) */
    assert_int_equal(pdu_check_associate(PDU_ASSOCIATE_AC, a, NULL), TR_EINVAL); /* ts 3 */

    /* Too big for the 16-bit lengths: a user identity sub-item, the user information item. */
    char *big = tr_calloc(1, 65535);
    assert_non_null(big);
    a->identity = (struct pdu_user_identity){.type = PDU_IDENTITY_USERNAME_PASSCODE,
                                             .primary = big,
                                             .primary_length = 65000,
                                             .secondary = big,
                                             .secondary_length = 600};
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_ELIMIT, "do not fit in a sub-item");
    a->identity = (struct pdu_user_identity){
        .type = PDU_IDENTITY_JWT, .primary = big, .primary_length = 65500};
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_ELIMIT, "exceeds the 65535 of an item");
    a->identity.primary_length = 65400;
    a->extended[1].info = (const uint8_t *)big;
    a->extended[1].info_length = 65520;
    expect_invalid(PDU_ASSOCIATE_RQ, a, TR_ELIMIT, "is too long");
    a->extended[1].info_length = 0;
    a->identity =
        (struct pdu_user_identity){.has_response = true, .response = big, .response_length = 65534};
    a->context[1].ts_count = 1;
    expect_invalid(PDU_ASSOCIATE_AC, a, TR_ELIMIT, "server response of 65534 bytes");
    a->identity.response_length = 65450;
    expect_invalid(PDU_ASSOCIATE_AC, a, TR_ELIMIT, "exceeds the 65535 of an item");
    a->identity = (struct pdu_user_identity){0};
    assert_int_equal(pdu_check_associate(PDU_ASSOCIATE_AC, a, NULL), 0);

    /* The buffer's cap. */
    struct tr_buf out;
    tr_buf_init(&out, 100);
    assert_int_equal(pdu_encode_associate_ac(a, &out), TR_ELIMIT);
    assert_int_equal(out.len, 0);
    tr_buf_release(&out);
    assert_int_equal(pdu_check_associate(PDU_P_DATA_TF, a, NULL), TR_EINVAL);
    tr_free(big);
    free_associate(a);
}

/* ---- P-DATA-TF ----------------------------------------------------------------------------- */

static void test_pdv_dcmtk(void **state)
{
    (void)state;
    const uint8_t *body = dcmtk_echo_pdata_rq + 6;
    size_t len = sizeof(dcmtk_echo_pdata_rq) - 6, pos = 0;
    struct pdu_pdv pdv;
    struct tr_error err = TR_ERROR_INIT;
    assert_int_equal(pdu_next_pdv(body, len, &pos, &pdv, &err), 1);
    assert_int_equal(pdv.context_id, 1);
    assert_true(pdv.command);
    assert_true(pdv.last);
    assert_int_equal(pdv.length, 68);
    assert_ptr_equal(pdv.data, body + 6);
    /* The command starts with (0000,0000) UL, implicit VR little endian. */
    assert_int_equal(tr_le32(pdv.data), 0);
    assert_int_equal(tr_le32(pdv.data + 4), 4);
    assert_int_equal(pdu_next_pdv(body, len, &pos, &pdv, &err), 0);
    assert_int_equal(pdu_next_pdv(body, len, &pos, &pdv, &err), 0);

    body = dcmtk_echo_pdata_rsp + 6;
    len = sizeof(dcmtk_echo_pdata_rsp) - 6;
    pos = 0;
    assert_int_equal(pdu_next_pdv(body, len, &pos, &pdv, &err), 1);
    assert_int_equal(pdv.length, 78);
    assert_int_equal(pdu_next_pdv(body, len, &pos, &pdv, &err), 0);
}

static void test_pdv_multi_and_malformed(void **state)
{
    (void)state;
    /* Three PDVs in one P-DATA-TF: the end of a command, a data fragment, an empty last data
     * fragment (PS3.8 E.2 allows it). */
    uint8_t body[64];
    size_t n = 0;
    uint8_t hdr[12];
    pdu_encode_pdata_header(3, true, true, 5, hdr);
    memcpy(body + n, hdr + 6, 6);
    memcpy(body + n + 6, "CMD!!", 5);
    n += 11;
    pdu_encode_pdata_header(3, false, false, 7, hdr);
    memcpy(body + n, hdr + 6, 6);
    memcpy(body + n + 6, "DATA...", 7);
    n += 13;
    pdu_encode_pdata_header(3, false, true, 0, hdr);
    memcpy(body + n, hdr + 6, 6);
    n += 6;
    hdr[11] |= 0xFC; /* reserved bits are not tested */
    body[n - 1] = hdr[11];

    struct {
        bool command, last;
        const char *data;
    } expect[] = {{true, true, "CMD!!"}, {false, false, "DATA..."}, {false, true, ""}};
    uint8_t *copy = tr_malloc(n);
    assert_non_null(copy);
    memcpy(copy, body, n);
    size_t pos = 0;
    struct pdu_pdv pdv;
    struct tr_error err = TR_ERROR_INIT;
    for (size_t i = 0; i < TR_ARRAY_SIZE(expect); i++) {
        assert_int_equal(pdu_next_pdv(copy, n, &pos, &pdv, &err), 1);
        assert_int_equal(pdv.context_id, 3);
        assert_int_equal(pdv.command, expect[i].command);
        assert_int_equal(pdv.last, expect[i].last);
        assert_bytes_equal(pdv.data, pdv.length, expect[i].data, strlen(expect[i].data));
    }
    assert_int_equal(pdu_next_pdv(copy, n, &pos, &pdv, &err), 0);
    assert_int_equal(pos, n);

    /* Every truncation: an error at the first PDV cut short, never a read past the end. */
    for (size_t cut = 0; cut < n; cut++) {
        uint8_t *c = tr_malloc(cut ? cut : 1);
        memcpy(c, body, cut);
        pos = 0;
        int rc;
        unsigned got = 0;
        tr_error_clear(&err);
        while ((rc = pdu_next_pdv(c, cut, &pos, &pdv, &err)) == 1)
            got++;
        bool boundary = cut == 11 || cut == 24;
        if (boundary) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, TR_EFORMAT);
            assert_true(err.message[0]);
        }
        tr_free(c);
    }
    tr_error_clear(&err);
    pos = 0;
    assert_int_equal(pdu_next_pdv(copy, 0, &pos, &pdv, &err), TR_EFORMAT);
    assert_string_equal(err.message, "P-DATA-TF: no presentation data value item");

    /* Item lengths 0 and 1, past the end, 0xFFFFFFFF; an even context ID. */
    const struct {
        uint32_t item_length;
        uint8_t id;
        const char *error;
    } bad[] = {
        {0, 1, "P-DATA-TF: PDV item at byte 6: item length 0 is less than 2"},
        {1, 1, "item length 1 is less than 2"},
        {8, 1, "P-DATA-TF: PDV item at byte 6: item length 8 exceeds the 7 bytes left"},
        {0xFFFFFFFF, 1, "item length 4294967295 exceeds"},
        {7, 2, "P-DATA-TF: PDV item at byte 6: presentation context ID 2 is even"},
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(bad); i++) {
        memcpy(copy, body, 11);
        tr_put_be32(copy, bad[i].item_length);
        copy[4] = bad[i].id;
        pos = 0;
        tr_error_clear(&err);
        assert_int_equal(pdu_next_pdv(copy, 11, &pos, &pdv, &err), TR_EFORMAT);
        assert_non_null(strstr(err.message, bad[i].error));
        assert_int_equal(pos, 0);
    }
    /* The error's offset is that of the bad item, not the first. */
    memcpy(copy, body, n);
    copy[11 + 4] = 4;
    pos = 0;
    tr_error_clear(&err);
    assert_int_equal(pdu_next_pdv(copy, n, &pos, &pdv, &err), 1);
    assert_int_equal(pdu_next_pdv(copy, n, &pos, &pdv, &err), TR_EFORMAT);
    assert_non_null(strstr(err.message, "PDV item at byte 17"));
    pos = n + 1;
    assert_int_equal(pdu_next_pdv(copy, n, &pos, &pdv, NULL), TR_EINVAL);
    tr_free(copy);
}

/* ---- allocation failures ----------------------------------------------------------------- */

static void test_allocation_failures(void **state)
{
    (void)state;
    const uint8_t *body = dcmtk_cfg_rq + 6;
    size_t len = sizeof(dcmtk_cfg_rq) - 6;
    struct pdu_associate *a = new_associate();
    uint8_t *copy = tr_malloc(len);
    assert_non_null(copy);
    memcpy(copy, body, len);
    /* Fail the n-th allocation, for every n until decoding succeeds. */
    bool done = false;
    for (long n = 0; n < 1000 && !done; n++) {
        struct tr_error err = TR_ERROR_INIT;
        tr_alloc_fail_after(n);
        int rc = pdu_decode_associate(PDU_ASSOCIATE_RQ, copy, len, a, &err);
        unsigned long failures = tr_alloc_failures();
        tr_alloc_fail_after(-1);
        if (rc == 0) {
            assert_int_equal(failures, 0);
            done = true;
        } else {
            assert_int_equal(rc, TR_ENOMEM);
            assert_non_null(strstr(err.message, "out of memory"));
        }
        pdu_associate_release(a);
    }
    assert_true(done);
    /* The encoders too. */
    assert_int_equal(pdu_decode_associate(PDU_ASSOCIATE_RQ, copy, len, a, NULL), 0);
    done = false;
    for (long n = 0; n < 100 && !done; n++) {
        struct tr_buf out;
        tr_buf_init(&out, 1 << 20);
        tr_alloc_fail_after(n);
        int rc = pdu_encode_associate_rq(a, &out);
        tr_alloc_fail_after(-1);
        if (rc == 0)
            done = true;
        else
            assert_int_equal(rc, TR_ENOMEM);
        tr_buf_release(&out);
    }
    assert_true(done);
    tr_free(copy);
    free_associate(a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_encode_reference_rq),
        cmocka_unit_test(test_encode_short_pdus),
        cmocka_unit_test(test_pdata_header),
        cmocka_unit_test(test_round_trip_rq),
        cmocka_unit_test(test_round_trip_ac),
        cmocka_unit_test(test_decode_reuses_structure),
        cmocka_unit_test(test_dcmtk_echo),
        cmocka_unit_test(test_dcmtk_rejected_context),
        cmocka_unit_test(test_dcmtk_user_identity),
        cmocka_unit_test(test_dcmtk_roles_and_extended),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_lengths_too_large),
        cmocka_unit_test(test_zero_length_items),
        cmocka_unit_test(test_context_ids),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_bad_uids),
        cmocka_unit_test(test_ae_titles),
        cmocka_unit_test(test_missing_and_repeated),
        cmocka_unit_test(test_unknown_items_skipped),
        cmocka_unit_test(test_ac_specifics),
        cmocka_unit_test(test_encoder_validation),
        cmocka_unit_test(test_pdv_dcmtk),
        cmocka_unit_test(test_pdv_multi_and_malformed),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
