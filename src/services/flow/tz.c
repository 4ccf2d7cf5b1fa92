/*
 * tz.c - local time in a named time zone (IANA, e.g. "America/Chicago"), through ICU's
 * calendar: readers' shifts and contracts' covered hours are in local time, clocks are UTC.
 */
#include "common.h"
#include "flow_int.h"

#include <stdio.h>
#include <unicode/ucal.h>
#include <unicode/ustring.h>

static bool to_uchar(const char *zone, UChar *out, size_t cap)
{
    size_t n = strlen(zone);
    if (n == 0 || n >= cap)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)zone[i];
        if (c < 0x20 || c > 0x7E)
            return false;
    }
    u_uastrncpy(out, zone, (int32_t)cap);
    return true;
}

bool flow_tz_valid(const char *zone)
{
    UChar id[80], canon[80];
    if (!zone || !to_uchar(zone, id, TR_ARRAY_SIZE(id)))
        return false;
    UErrorCode status = U_ZERO_ERROR;
    UBool system = 0;
    ucal_getCanonicalTimeZoneID(id, -1, canon, TR_ARRAY_SIZE(canon), &system, &status);
    return U_SUCCESS(status) && system;
}

int flow_tz_local(const char *zone, int64_t ms, struct flow_local *out)
{
    UChar id[80];
    if (!to_uchar(zone && *zone ? zone : "UTC", id, TR_ARRAY_SIZE(id)))
        return TR_EINVAL;
    UErrorCode status = U_ZERO_ERROR;
    UCalendar *cal = ucal_open(id, -1, "en_US_POSIX", UCAL_GREGORIAN, &status);
    if (U_FAILURE(status))
        return TR_EINVAL;
    ucal_setMillis(cal, (UDate)ms, &status);
    out->year = ucal_get(cal, UCAL_YEAR, &status);
    out->month = ucal_get(cal, UCAL_MONTH, &status) + 1;
    out->day = ucal_get(cal, UCAL_DATE, &status);
    int dow = ucal_get(cal, UCAL_DAY_OF_WEEK, &status); /* 1 Sunday .. 7 Saturday */
    out->weekday = (dow + 5) % 7;                         /* 0 Monday .. 6 Sunday */
    out->minute = ucal_get(cal, UCAL_HOUR_OF_DAY, &status) * 60 +
                  ucal_get(cal, UCAL_MINUTE, &status);
    ucal_close(cal);
    return U_SUCCESS(status) ? 0 : TR_EINVAL;
}

void flow_tz_date(const char *zone, int64_t ms, char out[11])
{
    struct flow_local l;
    if (flow_tz_local(zone, ms, &l) < 0)
        flow_tz_local("UTC", ms, &l);
    unsigned y = (unsigned)l.year % 10000u, m = (unsigned)l.month % 100u, d = (unsigned)l.day % 100u;
    snprintf(out, 11, "%04u-%02u-%02u", y, m, d);
}
