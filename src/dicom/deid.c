/*
 * deid.c - de-identification (PS3.15 Annex E, the Basic Application Level Confidentiality
 * Profile and its options) and keyed pseudonymization of data sets. The rules come from
 * deid_table.c (generated from PS3.15 Table E.1-1); this file applies them. See deid.h for
 * the API and docs/privacy.md for the choices made where the standard leaves one.
 *
 * The walk. Each data set is visited element by element in tag order (by tag, not by index,
 * since replacing a value may insert Specific Character Set); items of sequences are visited
 * with a scope that says how to treat attributes Table E.1-1 does not list:
 *  - SCOPE_NORMAL: kept (but person names, which get a dummy, and dates, which follow the date
 *    policy: shifted, kept, or replaced by a dummy);
 *  - SCOPE_DUMMY (inside a sequence whose action is D, e.g. Content Sequence): text values get
 *    a dummy, UIDs not in the registry are mapped, codes, numbers and code strings are kept;
 *  - SCOPE_CLEAN (inside a sequence whose action is C): the same, but text is cleaned with the
 *    allow-list instead of being replaced.
 * Inside DUMMY and CLEAN scopes the items of "... Code Sequence" attributes keep the Code
 * Sequence Macro (PS3.3 8.8: code value, scheme, meaning ...): they carry concepts (CID terms),
 * not identities. Listed attributes always follow their rule, whatever the scope.
 */
#include "dicom_int.h"
#include "deid.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define MAX_DEPTH  1024
#define DUMMY_TEXT "ANONYMIZED"

/* ---- rules ------------------------------------------------------------------------------- */

const struct dcm_deid_rule *dcm_deid_rule_lookup(uint32_t tag)
{
    if (dcm_tag_is_private(tag))
        return &dcm_deid_private_rule;
    unsigned lo = 0, hi = dcm_deid_rule_count;
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (dcm_deid_rules[mid].tag == tag)
            return &dcm_deid_rules[mid];
        if (dcm_deid_rules[mid].tag < tag)
            lo = mid + 1;
        else
            hi = mid;
    }
    for (unsigned i = 0; i < dcm_deid_repeating_rule_count; i++) {
        const struct dcm_deid_rule *r = &dcm_deid_repeating_rules[i];
        if ((tag & r->mask) == r->tag && !(DCM_TAG_GROUP(tag) & 1))
            return r;
    }
    return NULL;
}

enum dcm_deid_action dcm_deid_rule_action(const struct dcm_deid_rule *rule, unsigned options)
{
    enum dcm_deid_action a = (enum dcm_deid_action)rule->basic;
    bool overridden = false;
    for (unsigned i = 0; i < DCM_DEID_OPTION_COUNT; i++) {
        enum dcm_deid_action o = (enum dcm_deid_action)rule->option[i];
        if (!(options & (1u << i)) || o == DCM_DEID_NONE)
            continue;
        /* Two options on one attribute (e.g. Retain Device Identity K and Modified Dates C on
         * Date of Last Calibration): cleaning is the one that keeps both promises. */
        if (!overridden || o == DCM_DEID_C)
            a = o;
        overridden = true;
    }
    return a;
}

const char *dcm_deid_action_name(enum dcm_deid_action a)
{
    static const char *const names[DCM_DEID_ACTION_COUNT] = {
        "", "D", "Z", "X", "K", "C", "U", "Z/D", "X/Z", "X/D", "X/Z/D", "X/Z/U*"};
    return (unsigned)a < DCM_DEID_ACTION_COUNT ? names[a] : "?";
}

/* ---- options and report ------------------------------------------------------------------ */

void dcm_deid_options_init(struct dcm_deid_options *opt)
{
    memset(opt, 0, sizeof(*opt));
    opt->date_shift_min = -365;
    opt->date_shift_max = -1;
}

void dcm_deid_report_init(struct dcm_deid_report *r)
{
    memset(r, 0, sizeof(*r));
}

void dcm_deid_report_add(struct dcm_deid_report *to, const struct dcm_deid_report *from)
{
    to->dummied += from->dummied;
    to->emptied += from->emptied;
    to->removed += from->removed;
    to->kept += from->kept;
    to->cleaned += from->cleaned;
    to->uids_mapped += from->uids_mapped;
    to->dates_shifted += from->dates_shifted;
    to->names_replaced += from->names_replaced;
    to->private_removed += from->private_removed;
    to->private_retained += from->private_retained;
    to->flags |= from->flags;
    if (from->flags & DCM_DEID_FLAG_DATES_SHIFTED)
        to->date_shift_days = from->date_shift_days;
}

static int check_options(const struct dcm_deid_options *opt, struct tr_error *err)
{
    if (!opt || !opt->key)
        return tr_error_set(err, TR_EINVAL,
                            "de-identification needs a key: the mapping of UIDs, identifiers "
                            "and dates is computed from it");
    if (opt->key_length < DCM_DEID_MIN_KEY_LENGTH || opt->key_length > DCM_DEID_MAX_KEY_LENGTH)
        return tr_error_set(err, TR_EINVAL, "the de-identification key must have %d to %d bytes",
                            DCM_DEID_MIN_KEY_LENGTH, DCM_DEID_MAX_KEY_LENGTH);
    if ((opt->options & DCM_DEID_RETAIN_FULL_DATES) &&
        (opt->options & DCM_DEID_RETAIN_MODIFIED_DATES))
        return tr_error_set(err, TR_EINVAL,
                            "retaining full dates and modified dates exclude each other");
    if (opt->date_shift_min > opt->date_shift_max || opt->date_shift_min < -100000 ||
        opt->date_shift_max > 100000)
        return tr_error_set(err, TR_EINVAL, "bad date shift range %d..%d days", opt->date_shift_min,
                            opt->date_shift_max);
    if (opt->options >> DCM_DEID_OPTION_COUNT)
        return tr_error_set(err, TR_EINVAL, "unknown de-identification option bits 0x%X",
                            opt->options);
    return 0;
}

/* ---- keyed mappings ---------------------------------------------------------------------- */

/* RFC 2104 with SHA-256, its set-up done once: the states after hashing the key's inner and
 * outer padded blocks. Copying a state costs far less than HMAC() making it again. */
struct dcm_deid_hmac {
    const uint8_t *key; /* the key it was made from: another key takes the slow path */
    size_t key_length;
    EVP_MD_CTX *inner, *outer;
};

#define SHA256_BLOCK 64

void dcm_deid_options_release(struct dcm_deid_options *opt)
{
    if (!opt || !opt->hmac)
        return;
    EVP_MD_CTX_free(opt->hmac->inner); /* the digest's state is cleared when freed */
    EVP_MD_CTX_free(opt->hmac->outer);
    tr_free(opt->hmac);
    opt->hmac = NULL;
}

static bool start_padded(EVP_MD_CTX *ctx, const uint8_t block[SHA256_BLOCK], uint8_t pad)
{
    uint8_t padded[SHA256_BLOCK];
    for (int i = 0; i < SHA256_BLOCK; i++)
        padded[i] = block[i] ^ pad;
    bool ok =
        EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) && EVP_DigestUpdate(ctx, padded, sizeof(padded));
    OPENSSL_cleanse(padded, sizeof(padded));
    return ok;
}

int dcm_deid_options_prepare(struct dcm_deid_options *opt, struct tr_error *err)
{
    int rc = check_options(opt, err);
    if (rc)
        return rc;
    dcm_deid_options_release(opt);
    struct dcm_deid_hmac *h = tr_calloc(1, sizeof(*h));
    if (!h)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    /* RFC 2104 2: a key longer than the block is hashed first; a shorter one padded with
     * zeros. */
    uint8_t block[SHA256_BLOCK] = {0};
    bool ok = true;
    if (opt->key_length > SHA256_BLOCK)
        ok = EVP_Digest(opt->key, opt->key_length, block, NULL, EVP_sha256(), NULL);
    else
        memcpy(block, opt->key, opt->key_length);
    ok = ok && (h->inner = EVP_MD_CTX_new()) && (h->outer = EVP_MD_CTX_new()) &&
         start_padded(h->inner, block, 0x36) && start_padded(h->outer, block, 0x5c);
    OPENSSL_cleanse(block, sizeof(block));
    h->key = opt->key;
    h->key_length = opt->key_length;
    opt->hmac = h;
    if (!ok) {
        dcm_deid_options_release(opt);
        return tr_error_set(err, TR_ENOMEM, "cannot set up HMAC-SHA256");
    }
    return 0;
}

/* HMAC-SHA256 of msg from the prepared state: H(K ^ opad, H(K ^ ipad, msg)). */
static bool prepared_hmac(const struct dcm_deid_hmac *h, const uint8_t *msg, size_t n,
                          uint8_t out[32])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t inner[32];
    unsigned len = 0, outlen = 0;
    bool ok = ctx && EVP_MD_CTX_copy_ex(ctx, h->inner) && EVP_DigestUpdate(ctx, msg, n) &&
              EVP_DigestFinal_ex(ctx, inner, &len) && len == sizeof(inner) &&
              EVP_MD_CTX_copy_ex(ctx, h->outer) && EVP_DigestUpdate(ctx, inner, len) &&
              EVP_DigestFinal_ex(ctx, out, &outlen) && outlen == 32;
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* HMAC-SHA256(key, label "\0" a "\0" b), or HMAC-SHA256(key, a) without a label. */
static int keyed_hash(const struct dcm_deid_options *opt, const char *label, const char *a,
                      size_t alen, const char *b, size_t blen, uint8_t out[32])
{
    uint8_t stack[512];
    uint8_t *msg = stack;
    size_t llen = label ? strlen(label) + 1 : 0;
    size_t n = llen + alen + (b ? 1 + blen : 0);
    if (n > sizeof(stack) && !(msg = tr_malloc(n)))
        return TR_ENOMEM;
    size_t k = 0;
    if (label) {
        memcpy(msg, label, llen); /* with its NUL */
        k = llen;
    }
    if (alen)
        memcpy(msg + k, a, alen);
    k += alen;
    if (b) {
        msg[k++] = 0;
        if (blen)
            memcpy(msg + k, b, blen);
        k += blen;
    }
    bool ok;
    const struct dcm_deid_hmac *h = opt->hmac;
    if (h && h->key == opt->key && h->key_length == opt->key_length) {
        ok = prepared_hmac(h, msg, k, out);
    } else {
        unsigned outlen = 0;
        ok = HMAC(EVP_sha256(), opt->key, (int)opt->key_length, msg, k, out, &outlen) &&
             outlen == 32;
    }
    if (msg != stack)
        tr_free(msg);
    return ok ? 0 : TR_ENOMEM;
}

static void hex_upper(const uint8_t *bytes, size_t digits, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < digits; i++)
        out[i] = hex[(bytes[i / 2] >> (i % 2 ? 0 : 4)) & 0xF];
    out[digits] = '\0';
}

int dcm_deid_map_uid(const struct dcm_deid_options *opt, const char *uid, size_t length,
                     char out[DCM_UID_MAX + 1])
{
    while (length && (uid[length - 1] == ' ' || uid[length - 1] == '\0'))
        length--;
    while (length && uid[0] == ' ') {
        uid++;
        length--;
    }
    if (!opt || !opt->key || length == 0)
        return TR_EINVAL;
    if (length <= DCM_UID_MAX) {
        memcpy(out, uid, length);
        out[length] = '\0';
        /* The DICOM root 1.2.840.10008 holds only UIDs the standard defines (SOP classes,
         * transfer syntaxes, well-known frames of reference ...), never an instance's. */
        if (strncmp(out, "1.2.840.10008.", 14) == 0 || dcm_uid_lookup(out))
            return 0;
    }
    uint8_t h[32];
    int rc = keyed_hash(opt, NULL, uid, length, NULL, 0, h);
    if (rc)
        return rc;
    /* PS3.5 B.2: "2.25." and the decimal of a 128-bit number, here the hash's first 16 bytes
     * read big endian. Long division by 10 on four 32-bit limbs. */
    uint32_t limb[4];
    for (int i = 0; i < 4; i++)
        limb[i] = tr_be32(h + 4 * i);
    char digits[40];
    int n = 0;
    do {
        uint64_t rem = 0;
        for (int i = 0; i < 4; i++) {
            uint64_t cur = (rem << 32) | limb[i];
            limb[i] = (uint32_t)(cur / 10);
            rem = cur % 10;
        }
        digits[n++] = (char)('0' + rem);
    } while (limb[0] | limb[1] | limb[2] | limb[3]);
    memcpy(out, "2.25.", 5);
    for (int i = 0; i < n; i++)
        out[5 + i] = digits[n - 1 - i];
    out[5 + n] = '\0';
    return 0;
}

int dcm_deid_patient_pseudonym(const struct dcm_deid_options *opt, const char *issuer,
                               const char *id, char *out, size_t size)
{
    if (!opt || !opt->key || size < 18)
        return TR_EINVAL;
    uint8_t h[32];
    int rc = keyed_hash(opt, "patient", issuer ? issuer : "", issuer ? strlen(issuer) : 0,
                        id ? id : "", id ? strlen(id) : 0, h);
    if (rc)
        return rc;
    out[0] = 'P';
    hex_upper(h, 16, out + 1);
    return 0;
}

int dcm_deid_date_offset(const struct dcm_deid_options *opt, const char *issuer, const char *id,
                         int *days)
{
    if (!opt || !opt->key || opt->date_shift_min > opt->date_shift_max)
        return TR_EINVAL;
    uint8_t h[32];
    int rc = keyed_hash(opt, "date-shift", issuer ? issuer : "", issuer ? strlen(issuer) : 0,
                        id ? id : "", id ? strlen(id) : 0, h);
    if (rc)
        return rc;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | h[i];
    uint64_t span = (uint64_t)((int64_t)opt->date_shift_max - opt->date_shift_min) + 1;
    *days = (int)((int64_t)opt->date_shift_min + (int64_t)(v % span));
    return 0;
}

/* ---- dates (civil calendar <-> day numbers, after H. Hinnant's algorithms) --------------- */

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
    static const unsigned dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dm[m - 1];
}

static unsigned parse_digits(const char *s, size_t n)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned)(s[i] - '0');
    return v;
}

int dcm_deid_shift_date(enum dcm_vr vr, const char *value, size_t length, int days, char *out,
                        size_t size)
{
    const char *s = value, *end = value + length;
    while (s < end && *s == ' ')
        s++;
    while (end > s && (end[-1] == ' ' || end[-1] == '\0'))
        end--;
    char date[8];
    size_t nd = 0; /* date digits found: 4, 6 or 8 */
    const char *rest = s;
    if (vr == DCM_VR_DA && end - s == 10 && s[4] == '.' && s[7] == '.') {
        /* ACR-NEMA YYYY.MM.DD */
        memcpy(date, s, 4);
        memcpy(date + 4, s + 5, 2);
        memcpy(date + 6, s + 8, 2);
        nd = 8;
        rest = end;
    } else {
        while (rest < end && nd < 8 && *rest >= '0' && *rest <= '9')
            date[nd++] = *rest++;
        if (vr == DCM_VR_DA && rest != end)
            return TR_EINVAL;
    }
    for (size_t i = 0; i < nd; i++) {
        if (date[i] < '0' || date[i] > '9')
            return TR_EINVAL;
    }
    if (nd != 4 && nd != 6 && nd != 8)
        return TR_EINVAL;
    /* A DT's time part starts with a digit only after a full date. */
    if (nd < 8 && rest < end && *rest >= '0' && *rest <= '9')
        return TR_EINVAL;
    int64_t y = parse_digits(date, 4);
    unsigned m = nd >= 6 ? parse_digits(date + 4, 2) : 1;
    unsigned d = nd >= 8 ? parse_digits(date + 6, 2) : 1;
    if (y < 1 || m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return TR_EINVAL;
    civil_from_days(days_from_civil(y, m, d) + days, &y, &m, &d);
    if (y < 1 || y > 9999)
        return TR_EINVAL;
    size_t tail = (size_t)(end - rest);
    if (size < nd + tail + 1)
        return TR_ELIMIT;
    char buf[16];
    snprintf(buf, sizeof(buf), "%04u%02u%02u", (unsigned)y, m, d);
    memcpy(out, buf, nd);
    memcpy(out + nd, rest, tail);
    out[nd + tail] = '\0';
    return 0;
}

/* ---- the walk ---------------------------------------------------------------------------- */

enum scope { SCOPE_NORMAL, SCOPE_DUMMY, SCOPE_CLEAN };

enum date_policy { DATES_DUMMY, DATES_KEEP, DATES_SHIFT };

struct deid {
    const struct dcm_deid_options *opt;
    struct dcm_deid_report *report;
    struct tr_error *err;
    bool pseudonymize;
    enum date_policy dates;
    int date_days;
    char patient_name[256]; /* replacement values (UTF-8) */
    char patient_id[72];
    struct tr_buf scratch; /* decoded text */
};

static int fail(struct deid *c, int rc, uint32_t tag, const char *what)
{
    return tr_error_set(c->err, rc, "cannot %s (%04X,%04X) %s: %s", what, DCM_TAG_GROUP(tag),
                        DCM_TAG_ELEMENT(tag), dcm_dict_keyword(tag), tr_strerror(rc));
}

static bool is_text_vr(enum dcm_vr vr)
{
    switch (vr) {
    case DCM_VR_AE:
    case DCM_VR_LO:
    case DCM_VR_LT:
    case DCM_VR_PN:
    case DCM_VR_SH:
    case DCM_VR_ST:
    case DCM_VR_UC:
    case DCM_VR_UR:
    case DCM_VR_UT: return true;
    default: return false;
    }
}

static bool is_code_sequence(uint32_t tag)
{
    const char *kw = dcm_dict_keyword(tag);
    size_t n = strlen(kw), k = strlen("CodeSequence");
    return n >= k && strcmp(kw + n - k, "CodeSequence") == 0;
}

/* PS3.3 Table 8.8-1, the Code Sequence Macro (and the Enhanced variant). */
static bool is_code_macro(uint32_t tag)
{
    switch (tag) {
    case 0x00080100: /* Code Value */
    case 0x00080102: /* Coding Scheme Designator */
    case 0x00080103: /* Coding Scheme Version */
    case 0x00080104: /* Code Meaning */
    case 0x00080105: /* Mapping Resource */
    case 0x00080106: /* Context Group Version */
    case 0x00080107: /* Context Group Local Version */
    case 0x0008010B: /* Context Group Extension Flag */
    case 0x0008010D: /* Context Group Extension Creator UID */
    case 0x0008010F: /* Context Identifier */
    case 0x00080117: /* Context UID */
    case 0x00080118: /* Mapping Resource UID */
    case 0x00080119: /* Long Code Value */
    case 0x00080120: /* URN Code Value */
    case 0x00080122: /* Mapping Resource Name */ return true;
    default: return false;
    }
}

static const char *dummy_string(enum dcm_vr vr)
{
    switch (vr) {
    case DCM_VR_AS: return "000Y";
    case DCM_VR_DA: return "19000101";
    case DCM_VR_DT: return "19000101000000";
    case DCM_VR_TM: return "000000";
    case DCM_VR_DS:
    case DCM_VR_IS: return "0";
    case DCM_VR_UR: return "urn:anonymized";
    case DCM_VR_PN: return DUMMY_TEXT "^"; /* a family name, not the retired one-part form */
    default: return DUMMY_TEXT;
    }
}

static int set_text(struct deid *c, struct dcm_dataset *ds, uint32_t tag, enum dcm_vr vr,
                    const char *text)
{
    int rc = dcm_dataset_set_string(ds, tag, vr, text);
    return rc ? fail(c, rc, tag, "replace") : 0;
}

static int remove_element(struct deid *c, struct dcm_dataset *ds, uint32_t tag)
{
    dcm_dataset_remove(ds, tag);
    c->report->removed++;
    return 0;
}

static int empty_element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    if (e->flags & DCM_ELEM_ENCAPSULATED)
        return remove_element(c, ds, tag);
    int rc =
        vr == DCM_VR_SQ ? dcm_dataset_set_sequence(ds, tag) : dcm_dataset_set_empty(ds, tag, vr);
    if (rc)
        return fail(c, rc, tag, "empty");
    c->report->emptied++;
    return 0;
}

/* Map every value of a UID element. */
static int map_uids(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    uint32_t tag = e->tag;
    if (e->vr == DCM_VR_SQ || (e->flags & DCM_ELEM_ENCAPSULATED) ||
        dcm_vr_info((enum dcm_vr)e->vr)->kind == DCM_VR_KIND_NUMBER)
        return remove_element(c, ds, tag);
    if (e->length == 0) {
        c->report->emptied++;
        return 0;
    }
    struct tr_buf out;
    tr_buf_init(&out, (size_t)e->length * 2 + 256);
    const char *p = (const char *)e->value.bytes, *end = p + e->length;
    int rc = 0;
    unsigned mapped = 0;
    while (rc == 0 && p <= end) {
        const char *q = memchr(p, '\\', (size_t)(end - p));
        if (!q)
            q = end;
        char uid[DCM_UID_MAX + 1];
        if (p != (const char *)e->value.bytes)
            rc = tr_buf_addc(&out, '\\');
        int m = rc ? rc : dcm_deid_map_uid(c->opt, p, (size_t)(q - p), uid);
        if (m == 0) {
            rc = tr_buf_adds(&out, uid);
            mapped += strlen(uid) != (size_t)(q - p) || memcmp(uid, p, (size_t)(q - p)) != 0;
        } else if (m != TR_EINVAL) { /* TR_EINVAL: an empty value, left empty */
            rc = m;
        }
        p = q + 1;
    }
    if (rc == 0)
        rc = dcm_dataset_set_string(ds, tag, DCM_VR_UI, out.data ? out.data : "");
    tr_buf_release(&out);
    if (rc)
        return fail(c, rc, tag, "map the UIDs of");
    c->report->uids_mapped += mapped;
    return 0;
}

/* A dummy value consistent with the VR (action D). */
static int dummy_element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    const struct dcm_vr_info *info = dcm_vr_info(vr);
    if (e->flags & DCM_ELEM_ENCAPSULATED)
        return remove_element(c, ds, tag);
    if (dcm_element_is_empty(e)) { /* nothing to hide; an empty value stays empty */
        c->report->emptied++;
        return 0;
    }
    if (vr == DCM_VR_UI)
        return map_uids(c, ds, e);
    int rc;
    if (info->kind == DCM_VR_KIND_STRING || info->kind == DCM_VR_KIND_TEXT) {
        rc = dcm_dataset_set_string(ds, tag, vr, dummy_string(vr));
    } else if (info->kind == DCM_VR_KIND_NUMBER || info->kind == DCM_VR_KIND_BYTES) {
        /* Numbers: zeros, as many values as there were. Byte streams: one zero word. */
        size_t n = info->kind == DCM_VR_KIND_NUMBER ? e->length : TR_MAX(2u, info->size);
        uint8_t *zeros = tr_calloc(1, n ? n : 1);
        if (!zeros)
            return fail(c, TR_ENOMEM, tag, "replace");
        rc = dcm_dataset_set_bytes(ds, tag, vr, zeros, n);
        tr_free(zeros);
    } else {
        return remove_element(c, ds, tag);
    }
    if (rc)
        return fail(c, rc, tag, "replace");
    c->report->dummied++;
    return 0;
}

/* Shift every DA/DT value; a value that is not a date gets the dummy. */
static int shift_dates(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    if (e->length == 0) {
        c->report->kept++;
        return 0;
    }
    struct tr_buf out;
    tr_buf_init(&out, (size_t)e->length * 2 + 64);
    const char *p = (const char *)e->value.bytes, *end = p + e->length;
    int rc = 0;
    unsigned shifted = 0;
    bool bad = false;
    while (rc == 0 && p <= end && !bad) {
        const char *q = memchr(p, '\\', (size_t)(end - p));
        if (!q)
            q = end;
        char v[64];
        if (p != (const char *)e->value.bytes)
            rc = tr_buf_addc(&out, '\\');
        const char *s = p, *t = q;
        dcm_string_trim(vr, &s, &t);
        if (rc == 0 && s < t) {
            if (dcm_deid_shift_date(vr, s, (size_t)(t - s), c->date_days, v, sizeof(v)) == 0) {
                rc = tr_buf_adds(&out, v);
                shifted++;
            } else {
                bad = true;
            }
        }
        p = q + 1;
    }
    if (rc == 0 && !bad)
        rc = dcm_dataset_set_string(ds, tag, vr, out.data ? out.data : "");
    tr_buf_release(&out);
    if (rc)
        return fail(c, rc, tag, "shift the dates of");
    if (bad)
        return dummy_element(c, ds, e);
    c->report->dates_shifted += shifted;
    c->report->cleaned++;
    return 0;
}

static int apply_date_policy(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    switch (c->dates) {
    case DATES_SHIFT: return shift_dates(c, ds, e);
    case DATES_KEEP: c->report->kept++; return 0;
    default: return dummy_element(c, ds, e);
    }
}

static int compare_word(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* A word of a description that may stay: in the allow-list, or a short number, or a short
 * number followed by an allowed unit ("5MM"). */
static bool safe_word(const char *w, size_t n)
{
    char up[32];
    if (n == 0 || n >= sizeof(up))
        return false;
    size_t digits = 0;
    while (digits < n && w[digits] >= '0' && w[digits] <= '9')
        digits++;
    if (digits == n)
        return n <= 4;
    if (digits > 4)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)w[i];
        up[i] = (char)(ch >= 'a' && ch <= 'z' ? ch - 32 : ch);
    }
    up[n] = '\0';
    const char *key = up;
    if (bsearch(&key, dcm_deid_safe_words, dcm_deid_safe_word_count, sizeof(char *), compare_word))
        return true;
    key = up + digits;
    return digits && bsearch(&key, dcm_deid_safe_words, dcm_deid_safe_word_count, sizeof(char *),
                             compare_word);
}

static bool word_char(unsigned char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch >= 0x80;
}

/* Clean one value: kept whole when every word is safe, else only its safe words. */
static int clean_value(const char *s, size_t n, struct tr_buf *out)
{
    bool all_safe = true;
    for (size_t i = 0; i < n;) {
        if (!word_char((unsigned char)s[i])) {
            if ((unsigned char)s[i] < 0x20 && s[i] != '\r' && s[i] != '\n' && s[i] != '\t')
                all_safe = false;
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && word_char((unsigned char)s[j]))
            j++;
        if (!safe_word(s + i, j - i))
            all_safe = false;
        i = j;
    }
    if (all_safe)
        return tr_buf_add(out, s, n);
    bool first = true;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0;) {
        if (!word_char((unsigned char)s[i])) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < n && word_char((unsigned char)s[j]))
            j++;
        if (safe_word(s + i, j - i)) {
            if (!first)
                rc = tr_buf_addc(out, ' ');
            if (rc == 0)
                rc = tr_buf_add(out, s + i, j - i);
            first = false;
        }
        i = j;
    }
    return rc;
}

/* AE titles under an option that cleans them: a keyed pseudonym, the same for the same title
 * (so that "the same device" stays visible). */
static int pseudonym_text(struct deid *c, const char *label, char prefix, const char *value,
                          size_t n, size_t digits, char *out)
{
    uint8_t h[32];
    int rc = keyed_hash(c->opt, label, value, n, NULL, 0, h);
    if (rc)
        return rc;
    out[0] = prefix;
    hex_upper(h, TR_MIN(digits, (size_t)64), out + 1);
    return 0;
}

/* Action C on a value: dates shifted, AE titles pseudonymized, text reduced to its safe words,
 * UIDs mapped, names replaced; numbers and codes kept. `dummy_if_empty`: a cleaned value
 * that lost every word gets the dummy rather than staying empty (for attributes whose profile
 * action required a value). */
static int clean_element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                         bool dummy_if_empty)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    if (vr == DCM_VR_DA || vr == DCM_VR_DT)
        return apply_date_policy(c, ds, e);
    if (vr == DCM_VR_UI)
        return map_uids(c, ds, e);
    if (vr == DCM_VR_PN || vr == DCM_VR_UR)
        return dummy_element(c, ds, e);
    if (!is_text_vr(vr) || dcm_element_is_empty(e)) {
        c->report->kept++;
        return 0;
    }
    tr_buf_reset(&c->scratch);
    int got = dcm_element_get_string(ds, e, DCM_ALL_VALUES, &c->scratch);
    if (got == TR_ENOMEM)
        return fail(c, got, tag, "clean");
    if (got < 0)
        return dummy_element(c, ds, e);
    const char *s = c->scratch.data ? c->scratch.data : "";
    size_t n = c->scratch.len;
    struct tr_buf out;
    tr_buf_init(&out, n + 64);
    int rc = 0;
    if (vr == DCM_VR_AE) {
        char ae[20];
        rc = pseudonym_text(c, "ae", 'D', s, n, 15, ae);
        if (rc == 0)
            rc = tr_buf_adds(&out, ae);
    } else {
        bool multi = dcm_vr_info(vr)->kind == DCM_VR_KIND_STRING;
        const char *p = s, *end = s + n;
        while (rc == 0 && p <= end) {
            const char *q = multi ? memchr(p, '\\', (size_t)(end - p)) : NULL;
            if (!q)
                q = end;
            if (p != s)
                rc = tr_buf_addc(&out, '\\');
            if (rc == 0)
                rc = clean_value(p, (size_t)(q - p), &out);
            p = q + 1;
        }
    }
    bool empty = true;
    for (size_t i = 0; i < out.len; i++)
        empty = empty && (out.data[i] == '\\' || out.data[i] == ' ');
    if (rc == 0)
        rc = dcm_dataset_set_string(ds, tag, vr,
                                    empty && dummy_if_empty ? dummy_string(vr)
                                    : empty                 ? ""
                                                            : out.data);
    tr_buf_release(&out);
    if (rc)
        return fail(c, rc, tag, "clean");
    c->report->cleaned++;
    return 0;
}

static int walk(struct deid *c, struct dcm_dataset *ds, enum scope scope, bool coded,
                unsigned depth);

/* Visit the items of a sequence element. */
static int walk_items(struct deid *c, struct dcm_dataset *ds, uint32_t tag, enum scope scope,
                      bool coded, unsigned depth)
{
    const struct dcm_element *e = dcm_dataset_get(ds, tag);
    if (!e || e->vr != DCM_VR_SQ)
        return 0;
    unsigned n = dcm_element_item_count(e);
    for (unsigned i = 0; i < n; i++) {
        /* Items are separate data sets: changing one leaves `e` valid, but refetch anyway. */
        e = dcm_dataset_get(ds, tag);
        struct dcm_dataset *item = e ? dcm_element_item(e, i) : NULL;
        if (!item)
            break;
        int rc = walk(c, item, scope, coded, depth + 1);
        if (rc)
            return rc;
    }
    return 0;
}

/* A sequence with a resolved action. */
static int sequence_action(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                           enum dcm_deid_action a, unsigned depth)
{
    uint32_t tag = e->tag;
    switch (a) {
    case DCM_DEID_X: return remove_element(c, ds, tag);
    case DCM_DEID_Z: return empty_element(c, ds, e);
    case DCM_DEID_D: /* its codes too may identify (Person Identification Code Sequence) */
        c->report->dummied++;
        return walk_items(c, ds, tag, SCOPE_DUMMY, false, depth);
    case DCM_DEID_C:
        c->report->cleaned++;
        return walk_items(c, ds, tag, SCOPE_CLEAN, is_code_sequence(tag), depth);
    default: /* K, and U* (keep, with the contained UIDs mapped by their own rules) */
        c->report->kept++;
        return walk_items(c, ds, tag, SCOPE_NORMAL, false, depth);
    }
}

/* PS3.15 E.1.1: the combined codes, resolved without the IOD at hand as the one that keeps any
 * IOD conformant: the dummy where a value may be required, the empty value where an attribute
 * may be type 2, the sequence with its UIDs replaced for U*. */
static enum dcm_deid_action resolve(enum dcm_deid_action a)
{
    switch (a) {
    case DCM_DEID_Z_D:
    case DCM_DEID_X_D:
    case DCM_DEID_X_Z_D: return DCM_DEID_D;
    case DCM_DEID_X_Z: return DCM_DEID_Z;
    case DCM_DEID_X_Z_U: return DCM_DEID_K;
    default: return a;
    }
}

static int apply_rule(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                      const struct dcm_deid_rule *rule, unsigned depth)
{
    uint32_t tag = e->tag;
    enum dcm_deid_action a = resolve(dcm_deid_rule_action(rule, c->opt->options));
    if (e->vr == DCM_VR_SQ)
        return sequence_action(c, ds, e, a, depth);
    /* Patient's Name and Patient ID (Z, Z/D) of the patient: the pseudonym, not a blank, so
     * that the studies of one patient still group (a dummy value is what Z allows). */
    if (depth == 0 && (tag == 0x00100010 || tag == 0x00100020) &&
        (a == DCM_DEID_Z || a == DCM_DEID_D)) {
        enum dcm_vr vr = dcm_vr_is_string((enum dcm_vr)e->vr) ? (enum dcm_vr)e->vr : DCM_VR_NONE;
        int rc = set_text(c, ds, tag, vr, tag == 0x00100010 ? c->patient_name : c->patient_id);
        if (rc == 0)
            c->report->dummied++;
        return rc;
    }
    if (e->vr == DCM_VR_UN && a != DCM_DEID_K && a != DCM_DEID_X && a != DCM_DEID_U)
        a = DCM_DEID_X; /* no VR to write a dummy or a cleaned value in */
    switch (a) {
    case DCM_DEID_D: return dummy_element(c, ds, e);
    case DCM_DEID_Z: return empty_element(c, ds, e);
    case DCM_DEID_X: return remove_element(c, ds, tag);
    case DCM_DEID_U: return map_uids(c, ds, e);
    case DCM_DEID_C:
        return clean_element(c, ds, e,
                             rule->basic != DCM_DEID_X && rule->basic != DCM_DEID_Z &&
                                 rule->basic != DCM_DEID_X_Z);
    default: c->report->kept++; return 0;
    }
}

/* Attributes Table E.1-1 does not list. */
static int unlisted(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                    enum scope scope, bool coded, unsigned depth)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    if (vr == DCM_VR_SQ) {
        c->report->kept++;
        return walk_items(c, ds, tag, scope, scope != SCOPE_NORMAL && is_code_sequence(tag), depth);
    }
    if (coded && is_code_macro(tag)) {
        c->report->kept++;
        return 0;
    }
    if (vr == DCM_VR_PN) /* a person's name, whatever the attribute */
        return dummy_element(c, ds, e);
    if (vr == DCM_VR_DA || vr == DCM_VR_DT) /* PS3.15 E.1.1 Note 4: dates by their VR */
        return apply_date_policy(c, ds, e);
    if (scope == SCOPE_NORMAL) {
        c->report->kept++;
        return 0;
    }
    if (vr == DCM_VR_UI)
        return map_uids(c, ds, e); /* registry UIDs come back unchanged */
    if (is_text_vr(vr))            /* inside items a value may be required (Text Value is 1C) */
        return scope == SCOPE_DUMMY ? dummy_element(c, ds, e) : clean_element(c, ds, e, true);
    c->report->kept++; /* code strings, numbers, binary data */
    return 0;
}

/* ---- private attributes ------------------------------------------------------------------ */

static bool private_creator(const struct dcm_dataset *ds, uint32_t tag, char *buf, size_t size)
{
    uint16_t block = DCM_TAG_ELEMENT(tag) >> 8;
    if (block < 0x10)
        return false;
    const struct dcm_element *cr = dcm_dataset_get(ds, DCM_TAG(DCM_TAG_GROUP(tag), block));
    if (!cr || cr->vr == DCM_VR_SQ || (cr->flags & DCM_ELEM_ENCAPSULATED))
        return false;
    const char *s = (const char *)cr->value.bytes, *end = s + cr->length;
    dcm_string_trim(DCM_VR_LO, &s, &end);
    size_t n = (size_t)(end - s);
    if (n >= size)
        return false;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return true;
}

static bool safe_private(const struct dcm_dataset *ds, uint32_t tag)
{
    char creator[80];
    if (!private_creator(ds, tag, creator, sizeof(creator)))
        return false;
    for (unsigned i = 0; i < dcm_deid_safe_private_count; i++) {
        const struct dcm_deid_safe_private *s = &dcm_deid_safe_private[i];
        if (s->group == DCM_TAG_GROUP(tag) && s->element == (DCM_TAG_ELEMENT(tag) & 0xFF) &&
            strcmp(s->creator, creator) == 0)
            return true;
    }
    return false;
}

static int private_element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    if (dcm_tag_is_private_creator(e->tag))
        return 0; /* creators: decided once the block's elements are (see drop_creators) */
    if (dcm_tag_is_group_length(e->tag))
        return remove_element(c, ds, e->tag); /* optional; the group may end up empty */
    enum dcm_deid_action a = dcm_deid_rule_action(&dcm_deid_private_rule, c->opt->options);
    if (a == DCM_DEID_C && e->vr != DCM_VR_SQ && safe_private(ds, e->tag)) {
        c->report->private_retained++;
        c->report->kept++;
        return 0;
    }
    c->report->private_removed++;
    return remove_element(c, ds, e->tag);
}

/* Remove private creators whose block has no element left. */
static void drop_creators(struct deid *c, struct dcm_dataset *ds)
{
    for (size_t i = 0; i < dcm_dataset_count(ds);) {
        const struct dcm_element *e = dcm_dataset_at(ds, i);
        uint32_t tag = e->tag;
        if (!dcm_tag_is_private(tag) || !dcm_tag_is_private_creator(tag)) {
            i++;
            continue;
        }
        uint32_t first = DCM_TAG(DCM_TAG_GROUP(tag), DCM_TAG_ELEMENT(tag) << 8);
        bool found;
        size_t k = dcm_dataset_find(ds, first, &found);
        const struct dcm_element *b = dcm_dataset_at(ds, k);
        if (b && b->tag <= (first | 0xFF)) {
            i++;
            continue;
        }
        dcm_dataset_remove(ds, tag);
        c->report->private_removed++;
        c->report->removed++;
    }
}

/* ---- pseudonymization of one element ----------------------------------------------------- */

static bool is_identifier(uint32_t tag)
{
    switch (tag) {
    case 0x00100020: /* Patient ID (in items: another patient's) */
    case 0x00101000: /* Other Patient IDs */
    case 0x00080050: /* Accession Number */
    case 0x00200010: /* Study ID */
    case 0x00380010: /* Admission ID */
    case 0x00380060: /* Service Episode ID */
    case 0x00401001: /* Requested Procedure ID */
    case 0x00400009: /* Scheduled Procedure Step ID */
    case 0x00400253: /* Performed Procedure Step ID */
    case 0x00402016: /* Placer Order Number / Imaging Service Request */
    case 0x00402017: /* Filler Order Number / Imaging Service Request */
    case 0x00101090: /* Medical Record Locator */ return true;
    default: return false;
    }
}

static bool is_contact(uint32_t tag)
{
    switch (tag) {
    case 0x00101040: /* Patient's Address */
    case 0x00102154: /* Patient's Telephone Numbers */
    case 0x00102155: /* Patient's Telecom Information */
    case 0x00102150: /* Country of Residence */
    case 0x00102152: /* Region of Residence */
    case 0x00080092: /* Referring Physician's Address */
    case 0x00080094: /* Referring Physician's Telephone Numbers */
    case 0x00401102: /* Person's Address */
    case 0x00401103: /* Person's Telephone Numbers */
    case 0x00401104: /* Person's Telecom Information */ return true;
    default: return false;
    }
}

/* Replace every value of a name or identifier with its keyed token. */
static int tokenize_values(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                           const char *label, char prefix)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    if (!dcm_vr_is_string(vr))
        return remove_element(c, ds, tag);
    if (dcm_element_is_empty(e)) {
        c->report->kept++;
        return 0;
    }
    tr_buf_reset(&c->scratch);
    int got = dcm_element_get_string(ds, e, DCM_ALL_VALUES, &c->scratch);
    if (got == TR_ENOMEM)
        return fail(c, got, tag, "pseudonymize");
    if (got < 0)
        return dummy_element(c, ds, e);
    size_t max = dcm_vr_info(vr)->max_length;
    size_t digits = vr == DCM_VR_PN ? 12 : TR_MIN(max ? max - 1 : 20, (size_t)20);
    const char *s = c->scratch.data ? c->scratch.data : "", *end = s + c->scratch.len;
    struct tr_buf out;
    tr_buf_init(&out, c->scratch.len * 4 + 256);
    int rc = 0;
    for (const char *p = s; rc == 0 && p <= end;) {
        const char *q = memchr(p, '\\', (size_t)(end - p));
        if (!q)
            q = end;
        if (p != s)
            rc = tr_buf_addc(&out, '\\');
        if (rc == 0 && q > p) {
            char token[24];
            rc = pseudonym_text(c, label, prefix, p, (size_t)(q - p), digits, token);
            if (rc == 0 && vr == DCM_VR_PN)
                rc = tr_buf_adds(&out, "ANON^");
            if (rc == 0)
                rc = tr_buf_adds(&out, token);
        }
        p = q + 1;
    }
    if (rc == 0)
        rc = dcm_dataset_set_string(ds, tag, vr, out.data ? out.data : "");
    tr_buf_release(&out);
    if (rc)
        return fail(c, rc, tag, "pseudonymize");
    c->report->names_replaced++;
    return 0;
}

static int pseudonymize_element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                                unsigned depth)
{
    uint32_t tag = e->tag;
    enum dcm_vr vr = (enum dcm_vr)e->vr;
    if (DCM_TAG_GROUP(tag) & 1)
        return private_element(c, ds, e);
    if (vr == DCM_VR_SQ) {
        c->report->kept++;
        return walk_items(c, ds, tag, SCOPE_NORMAL, false, depth);
    }
    if (depth == 0 && (tag == 0x00100010 || tag == 0x00100020)) {
        if (!dcm_vr_is_string(vr))
            vr = DCM_VR_NONE;
        int rc = set_text(c, ds, tag, vr, tag == 0x00100010 ? c->patient_name : c->patient_id);
        if (rc == 0)
            c->report->names_replaced++;
        return rc;
    }
    if (vr == DCM_VR_PN)
        return tokenize_values(c, ds, e, "name", 'N');
    if (is_identifier(tag))
        return tokenize_values(c, ds, e, "id", 'I');
    if (is_contact(tag))
        return remove_element(c, ds, tag);
    if (vr == DCM_VR_DA || vr == DCM_VR_DT)
        return apply_date_policy(c, ds, e);
    const struct dcm_deid_rule *rule = dcm_deid_rule_lookup(tag);
    if (rule && rule->basic == DCM_DEID_U && !(c->opt->options & DCM_DEID_RETAIN_UIDS))
        return map_uids(c, ds, e);
    c->report->kept++;
    return 0;
}

/* ---- the walk over one data set ---------------------------------------------------------- */

static bool is_overlay_group(uint16_t g)
{
    return g >= 0x6000 && g <= 0x601E && !(g & 1);
}

static bool is_curve_group(uint16_t g)
{
    return g >= 0x5000 && g <= 0x501E && !(g & 1);
}

/* Curves (50xx) and overlays (60xx): removed whole (an overlay without its data would be
 * broken), or with Clean Graphics kept with their text cleaned. */
static int graphics_element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e)
{
    uint32_t tag = e->tag;
    uint16_t g = DCM_TAG_GROUP(tag);
    uint32_t key = is_overlay_group(g) ? DCM_TAG(g, 0x3000) : tag;
    const struct dcm_deid_rule *rule = dcm_deid_rule_lookup(key);
    enum dcm_deid_action a =
        rule ? resolve(dcm_deid_rule_action(rule, c->opt->options)) : DCM_DEID_X;
    if (a != DCM_DEID_C)
        return remove_element(c, ds, tag);
    if (DCM_TAG_ELEMENT(tag) == 0x3000)
        c->report->flags |= DCM_DEID_FLAG_GRAPHICS_RETAINED;
    if (is_text_vr((enum dcm_vr)e->vr))
        return clean_element(c, ds, e, false);
    c->report->kept++;
    return 0;
}

static int element(struct deid *c, struct dcm_dataset *ds, const struct dcm_element *e,
                   enum scope scope, bool coded, unsigned depth)
{
    uint32_t tag = e->tag;
    uint16_t g = DCM_TAG_GROUP(tag);
    if (c->pseudonymize)
        return pseudonymize_element(c, ds, e, depth);
    if (g & 1) /* private, and the odd groups 0001-0007 the standard forbids */
        return private_element(c, ds, e);
    if (dcm_tag_is_group_length(tag) && g != 0x0000)
        return 0;
    if (is_overlay_group(g) || is_curve_group(g))
        return graphics_element(c, ds, e);
    const struct dcm_deid_rule *rule = dcm_deid_rule_lookup(tag);
    if (rule)
        return apply_rule(c, ds, e, rule, depth);
    return unlisted(c, ds, e, scope, coded, depth);
}

static int walk(struct deid *c, struct dcm_dataset *ds, enum scope scope, bool coded,
                unsigned depth)
{
    if (depth > MAX_DEPTH)
        return tr_error_set(c->err, TR_ELIMIT, "sequences nested deeper than %d", MAX_DEPTH);
    uint32_t next = 0;
    for (;;) {
        bool found;
        size_t i = dcm_dataset_find(ds, next, &found);
        const struct dcm_element *e = dcm_dataset_at(ds, i);
        if (!e)
            break;
        uint32_t tag = e->tag;
        int rc = element(c, ds, e, scope, coded, depth);
        if (rc)
            return rc;
        if (tag == UINT32_MAX)
            break;
        next = tag + 1;
    }
    drop_creators(c, ds);
    return 0;
}

/* ---- setup and the attributes added at the end ------------------------------------------- */

/* The decoded value of `tag`, "" when absent, empty or not text; NULL when out of memory. */
static char *text_of(const struct dcm_dataset *ds, uint32_t tag)
{
    struct tr_error err = TR_ERROR_INIT;
    char *s = dcm_dataset_get_text(ds, tag, &err);
    if (s)
        return s;
    return err.code == TR_ENOMEM ? NULL : tr_strdup("");
}

/* The SOP classes whose images usually carry burned-in text (screens, scanned documents,
 * ultrasound) or a face (visible light photography and video). */
static bool burned_in_sop_class(const char *uid)
{
    static const char *const classes[] = {
        "1.2.840.10008.5.1.4.1.1.7",        /* Secondary Capture */
        "1.2.840.10008.5.1.4.1.1.7.1",      /* Multi-frame Single Bit SC */
        "1.2.840.10008.5.1.4.1.1.7.2",      /* Multi-frame Grayscale Byte SC */
        "1.2.840.10008.5.1.4.1.1.7.3",      /* Multi-frame Grayscale Word SC */
        "1.2.840.10008.5.1.4.1.1.7.4",      /* Multi-frame True Color SC */
        "1.2.840.10008.5.1.4.1.1.6",        /* Ultrasound (retired) */
        "1.2.840.10008.5.1.4.1.1.6.1",      /* Ultrasound */
        "1.2.840.10008.5.1.4.1.1.6.2",      /* Enhanced US Volume */
        "1.2.840.10008.5.1.4.1.1.3",        /* Ultrasound Multi-frame (retired) */
        "1.2.840.10008.5.1.4.1.1.3.1",      /* Ultrasound Multi-frame */
        "1.2.840.10008.5.1.4.1.1.77.1.1",   /* VL Endoscopic */
        "1.2.840.10008.5.1.4.1.1.77.1.1.1", /* Video Endoscopic */
        "1.2.840.10008.5.1.4.1.1.77.1.2",   /* VL Microscopic */
        "1.2.840.10008.5.1.4.1.1.77.1.2.1", /* Video Microscopic */
        "1.2.840.10008.5.1.4.1.1.77.1.4",   /* VL Photographic */
        "1.2.840.10008.5.1.4.1.1.77.1.4.1", /* Video Photographic */
    };
    for (size_t i = 0; i < TR_ARRAY_SIZE(classes); i++) {
        if (strcmp(classes[i], uid) == 0)
            return true;
    }
    return false;
}

static void check_burned_in(const struct dcm_dataset *ds, struct dcm_deid_report *r)
{
    char v[32];
    bool declared = dcm_dataset_get(ds, 0x00280301) != NULL;
    if (dcm_dataset_get_string(ds, 0x00280301, 0, v, sizeof(v)) >= 0 && strcmp(v, "YES") == 0)
        r->flags |= DCM_DEID_FLAG_BURNED_IN_ANNOTATION;
    if (dcm_dataset_get_string(ds, 0x00280302, 0, v, sizeof(v)) >= 0 && strcmp(v, "YES") == 0)
        r->flags |= DCM_DEID_FLAG_RECOGNIZABLE_FEATURES;
    char uid[DCM_UID_MAX + 1];
    if (!declared && dcm_dataset_get_uid(ds, DCM_TAG_SOPClassUID, uid, sizeof(uid)) == 0 &&
        burned_in_sop_class(uid))
        r->flags |= DCM_DEID_FLAG_BURNED_IN_SOP_CLASS;
}

static int setup(struct deid *c, struct dcm_dataset *ds, const struct dcm_deid_options *opt,
                 struct dcm_deid_report *report, struct tr_error *err)
{
    memset(c, 0, sizeof(*c));
    c->opt = opt;
    c->report = report;
    c->err = err;
    tr_buf_init(&c->scratch, DCM_UNDEFINED_LENGTH);
    int rc = check_options(opt, err);
    if (rc)
        return rc;
    if (!ds || dcm_dataset_parent(ds))
        return tr_error_set(err, TR_EINVAL, "de-identification works on a root data set");
    char *id = text_of(ds, 0x00100020), *issuer = text_of(ds, 0x00100021);
    if (!id || !issuer) {
        tr_free(id);
        tr_free(issuer);
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    }
    if (!*id) { /* no Patient ID: the name stands in for it */
        tr_free(id);
        id = text_of(ds, 0x00100010);
    }
    char token[24];
    rc = id ? dcm_deid_patient_pseudonym(opt, issuer, id, token, sizeof(token)) : TR_ENOMEM;
    if (rc == 0)
        rc = dcm_deid_date_offset(opt, issuer, id, &c->date_days);
    tr_free(id);
    tr_free(issuer);
    if (rc)
        return tr_error_set(err, rc, "cannot compute the keyed mapping: %s", tr_strerror(rc));
    snprintf(c->patient_id, sizeof(c->patient_id), "%s", opt->patient_id ? opt->patient_id : token);
    if (opt->patient_name)
        snprintf(c->patient_name, sizeof(c->patient_name), "%s", opt->patient_name);
    else
        snprintf(c->patient_name, sizeof(c->patient_name), "ANON^%s", token);
    return 0;
}

struct method {
    unsigned option;
    const char *code, *meaning;
};

/* CID 7050 De-identification Method, in code order. */
static const struct method methods[] = {
    {0, "113100", "Basic Application Confidentiality Profile"},
    {DCM_DEID_CLEAN_GRAPHICS, "113103", "Clean Graphics Option"},
    {DCM_DEID_CLEAN_STRUCTURED_CONTENT, "113104", "Clean Structured Content Option"},
    {DCM_DEID_CLEAN_DESCRIPTORS, "113105", "Clean Descriptors Option"},
    {DCM_DEID_RETAIN_FULL_DATES, "113106",
     "Retain Longitudinal Temporal Information Full Dates Option"},
    {DCM_DEID_RETAIN_MODIFIED_DATES, "113107",
     "Retain Longitudinal Temporal Information Modified Dates Option"},
    {DCM_DEID_RETAIN_PATIENT_CHARACTERISTICS, "113108", "Retain Patient Characteristics Option"},
    {DCM_DEID_RETAIN_DEVICE_IDENTITY, "113109", "Retain Device Identity Option"},
    {DCM_DEID_RETAIN_UIDS, "113110", "Retain UIDs Option"},
    {DCM_DEID_RETAIN_SAFE_PRIVATE, "113111", "Retain Safe Private Option"},
    {DCM_DEID_RETAIN_INSTITUTION_IDENTITY, "113112", "Retain Institution Identity Option"},
};

static int mark_deidentified(struct deid *c, struct dcm_dataset *ds)
{
    unsigned options = c->opt->options;
    int rc = dcm_dataset_set_string(ds, 0x00120062, DCM_VR_CS, "YES");
    /* De-identification Method (LO, 1-n): one value per profile and option. */
    const char *values[TR_ARRAY_SIZE(methods) + 1];
    size_t n = 0;
    values[n++] = "telerad PS3.15 Annex E";
    for (size_t i = 0; i < TR_ARRAY_SIZE(methods); i++) {
        if (methods[i].option == 0 || (options & methods[i].option))
            values[n++] = methods[i].meaning;
    }
    if (rc == 0)
        rc = dcm_dataset_set_strings(ds, 0x00120063, DCM_VR_LO, values, n);
    if (rc == 0)
        rc = dcm_dataset_set_sequence(ds, 0x00120064);
    for (size_t i = 0; i < TR_ARRAY_SIZE(methods) && rc == 0; i++) {
        if (methods[i].option && !(options & methods[i].option))
            continue;
        struct dcm_dataset *item = dcm_dataset_add_item(ds, 0x00120064, c->err);
        if (!item)
            return c->err && c->err->code ? c->err->code : TR_ENOMEM;
        rc = dcm_dataset_set_string(item, 0x00080100, DCM_VR_SH, methods[i].code);
        if (rc == 0)
            rc = dcm_dataset_set_string(item, 0x00080102, DCM_VR_SH, "DCM");
        if (rc == 0)
            rc = dcm_dataset_set_string(item, 0x00080104, DCM_VR_LO, methods[i].meaning);
    }
    /* Longitudinal Temporal Information Modified (0028,0303). */
    const char *lt = c->dates == DATES_SHIFT  ? "MODIFIED"
                     : c->dates == DATES_KEEP ? "UNMODIFIED"
                                              : "REMOVED";
    if (rc == 0)
        rc = dcm_dataset_set_string(ds, 0x00280303, DCM_VR_CS, lt);
    if (rc)
        return tr_error_set(c->err, rc, "cannot mark the data set de-identified: %s",
                            tr_strerror(rc));
    return 0;
}

static int run(struct dcm_dataset *ds, const struct dcm_deid_options *opt,
               struct dcm_deid_report *report, struct tr_error *err, bool pseudonymize)
{
    struct dcm_deid_report local;
    if (!report) {
        dcm_deid_report_init(&local);
        report = &local;
    }
    struct deid c;
    int rc = setup(&c, ds, opt, report, err);
    if (rc == 0) {
        c.pseudonymize = pseudonymize;
        if (opt->options & DCM_DEID_RETAIN_FULL_DATES)
            c.dates = DATES_KEEP;
        else if (pseudonymize || (opt->options & DCM_DEID_RETAIN_MODIFIED_DATES))
            c.dates = DATES_SHIFT;
        else
            c.dates = DATES_DUMMY;
        check_burned_in(ds, report);
        rc = walk(&c, ds, SCOPE_NORMAL, false, 0);
    }
    if (rc == 0 && !pseudonymize)
        rc = mark_deidentified(&c, ds);
    if (rc == 0 && pseudonymize && c.dates == DATES_SHIFT) {
        rc = dcm_dataset_set_string(ds, 0x00280303, DCM_VR_CS, "MODIFIED");
        if (rc)
            tr_error_set(err, rc, "out of memory");
    }
    if (rc == 0 && c.dates == DATES_SHIFT) {
        report->flags |= DCM_DEID_FLAG_DATES_SHIFTED;
        report->date_shift_days = c.date_days;
    }
    tr_buf_release(&c.scratch);
    return rc;
}

int dcm_deid_dataset(struct dcm_dataset *ds, const struct dcm_deid_options *opt,
                     struct dcm_deid_report *report, struct tr_error *err)
{
    return run(ds, opt, report, err, false);
}

int dcm_pseudonymize_dataset(struct dcm_dataset *ds, const struct dcm_deid_options *opt,
                             struct dcm_deid_report *report, struct tr_error *err)
{
    return run(ds, opt, report, err, true);
}

int dcm_deid_file(struct dcm_file *f, const struct dcm_deid_options *opt,
                  struct dcm_deid_report *report, struct tr_error *err)
{
    if (!f || !f->dataset)
        return tr_error_set(err, TR_EINVAL, "no data set to de-identify");
    int rc = dcm_deid_dataset(f->dataset, opt, report, err);
    if (rc || !f->meta)
        return rc;
    /* PS3.15 E.1.1 item 7: nothing of the original meta group but what describes the new
     * data set. */
    static const uint32_t dropped[] = {0x00020016, 0x00020017, 0x00020018, 0x00020026,
                                       0x00020027, 0x00020028, 0x00020100, 0x00020102};
    for (size_t i = 0; i < TR_ARRAY_SIZE(dropped); i++)
        dcm_dataset_remove(f->meta, dropped[i]);
    char uid[DCM_UID_MAX + 1];
    static const uint32_t pairs[][2] = {
        {DCM_TAG_SOPInstanceUID, DCM_TAG_MediaStorageSOPInstanceUID},
        {DCM_TAG_SOPClassUID, DCM_TAG_MediaStorageSOPClassUID}};
    for (size_t i = 0; i < TR_ARRAY_SIZE(pairs) && rc == 0; i++) {
        if (dcm_dataset_get_uid(f->dataset, pairs[i][0], uid, sizeof(uid)) == 0) {
            /* As it is, valid or not (Retain UIDs keeps an invalid one): it must match. */
            rc = dcm_dataset_set_bytes(f->meta, pairs[i][1], DCM_VR_UI, uid, strlen(uid));
        } else if (pairs[i][1] == DCM_TAG_MediaStorageSOPInstanceUID &&
                   dcm_dataset_get_uid(f->meta, pairs[i][1], uid, sizeof(uid)) == 0 &&
                   !(opt->options & DCM_DEID_RETAIN_UIDS)) {
            char mapped[DCM_UID_MAX + 1];
            rc = dcm_deid_map_uid(opt, uid, strlen(uid), mapped);
            if (rc == 0)
                rc = dcm_dataset_set_uid(f->meta, pairs[i][1], mapped);
        }
    }
    if (rc)
        return tr_error_set(err, rc, "cannot update the file meta information: %s",
                            tr_strerror(rc));
    return 0;
}
