/*
 * uid.c - UID validation (PS3.5 9.1), generation (PS3.5 B.2, UUID-derived 2.25 UIDs) and
 * registry lookups over the generated uid_table.c.
 */
#include "dicom_int.h"
#include "uid_int.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

const struct dcm_transfer_syntax *dcm_ts_lookup(const char *uid)
{
    if (!uid)
        return NULL;
    for (unsigned i = 0; i < dcm_ts_count; i++) {
        if (strcmp(dcm_ts_table[i].uid, uid) == 0)
            return &dcm_ts_table[i];
    }
    return NULL;
}

const struct dcm_transfer_syntax *dcm_ts_at(unsigned i)
{
    return i < dcm_ts_count ? &dcm_ts_table[i] : NULL;
}

static int uid_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct dcm_uid_entry *)elem)->uid);
}

const struct dcm_uid_entry *dcm_uid_lookup(const char *uid)
{
    if (!uid)
        return NULL;
    return bsearch(uid, dcm_uid_table, dcm_uid_count, sizeof(dcm_uid_table[0]), uid_cmp);
}

const struct dcm_uid_entry *dcm_uid_lookup_keyword(const char *keyword)
{
    if (!keyword)
        return NULL;
    for (unsigned i = 0; i < dcm_uid_count; i++) {
        if (strcmp(dcm_uid_table[i].keyword, keyword) == 0)
            return &dcm_uid_table[i];
    }
    return NULL;
}

const struct dcm_uid_entry *dcm_uid_at(unsigned i)
{
    return i < dcm_uid_count ? &dcm_uid_table[i] : NULL;
}

bool dcm_uid_is_storage(const struct dcm_uid_entry *e)
{
    if (strcmp(e->type, "SOP Class") != 0)
        return false;
    size_t n = strlen(e->name);
    if (n < 7 || strcmp(e->name + n - 7, "Storage") != 0)
        return strstr(e->name, "Storage - For ") != NULL; /* "... Storage - For Presentation" */
    return strcmp(e->uid, "1.2.840.10008.1.3.10") != 0; /* Media Storage Directory */
}

bool dcm_uid_is_valid(const char *uid, size_t len)
{
    if (!uid || len == 0 || len > DCM_UID_MAX)
        return false;
    size_t component_start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || uid[i] == '.') {
            size_t n = i - component_start;
            if (n == 0)
                return false; /* empty component: leading, trailing or double dot */
            if (n > 1 && uid[component_start] == '0')
                return false; /* leading zero */
            component_start = i + 1;
        } else if (uid[i] < '0' || uid[i] > '9') {
            return false;
        }
    }
    return true;
}

int dcm_uid_generate(char buf[DCM_UID_MAX + 1])
{
    uint8_t bytes[16];
    size_t got = 0;
    while (got < sizeof(bytes)) {
        ssize_t n = getrandom(bytes + got, sizeof(bytes) - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return TR_EIO;
        }
        got += (size_t)n;
    }
    /* RFC 4122 version 4 (random) UUID, as PS3.5 B.2 asks. */
    bytes[6] = (uint8_t)((bytes[6] & 0x0F) | 0x40);
    bytes[8] = (uint8_t)((bytes[8] & 0x3F) | 0x80);

    /* The UUID as a 128-bit unsigned integer in decimal: repeated division by 10 of four
     * 32-bit limbs, most significant first. */
    uint32_t limb[4];
    for (int i = 0; i < 4; i++)
        limb[i] = tr_be32(bytes + 4 * i);
    char digits[40];
    int nd = 0;
    for (;;) {
        uint64_t rem = 0;
        bool zero = true;
        for (int i = 0; i < 4; i++) {
            uint64_t cur = (rem << 32) | limb[i];
            limb[i] = (uint32_t)(cur / 10);
            rem = cur % 10;
            if (limb[i])
                zero = false;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero)
            break;
    }
    memcpy(buf, "2.25.", 5);
    for (int i = 0; i < nd; i++)
        buf[5 + i] = digits[nd - 1 - i];
    buf[5 + nd] = '\0';
    return 0;
}
