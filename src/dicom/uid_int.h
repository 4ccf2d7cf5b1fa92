/*
 * uid_int.h - what the generated UID registry (uid_table.c) exports to uid.c.
 */
#ifndef DCM_UID_INT_H
#define DCM_UID_INT_H

#include "uid.h"

extern const struct dcm_transfer_syntax dcm_ts_table[];
extern const unsigned dcm_ts_count;
extern const struct dcm_uid_entry dcm_uid_table[];
extern const unsigned dcm_uid_count;

#endif
