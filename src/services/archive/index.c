/*
 * index.c - the archive index (see index.h): schema and migrations, group-committed ingest,
 * lifecycle (stability events, deletion, reconciliation). Queries are in query.c.
 */
#include "common.h"
#include "index_int.h"

#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <wctype.h>

/* ---- schema (one for both engines; see db.h for the dialect words) ------------------------ */

static const char *const migrations[] = {
    /* 1: the four levels, events. */
    "CREATE TABLE patients ("
    "  pk {SERIAL},"
    "  site TEXT NOT NULL,"
    "  patient_id TEXT NOT NULL,"
    "  issuer TEXT NOT NULL,"
    "  patient_name TEXT NOT NULL DEFAULT '',"
    "  patient_name_ci TEXT NOT NULL DEFAULT '',"
    "  birth_date TEXT NOT NULL DEFAULT '',"
    "  sex TEXT NOT NULL DEFAULT '',"
    "  UNIQUE (site, patient_id, issuer));"
    "CREATE INDEX patients_name ON patients (patient_name);"
    "CREATE INDEX patients_name_ci ON patients (patient_name_ci);"
    "CREATE INDEX patients_id ON patients (patient_id);"
    "CREATE TABLE studies ("
    "  pk {SERIAL},"
    "  patient_pk {BIGINT} NOT NULL REFERENCES patients (pk) ON DELETE CASCADE,"
    "  site TEXT NOT NULL,"
    "  study_uid TEXT NOT NULL,"
    "  study_date TEXT NOT NULL DEFAULT '',"
    "  study_time TEXT NOT NULL DEFAULT '',"
    "  accession TEXT NOT NULL DEFAULT '',"
    "  study_id TEXT NOT NULL DEFAULT '',"
    "  description TEXT NOT NULL DEFAULT '',"
    "  referring TEXT NOT NULL DEFAULT '',"
    "  referring_ci TEXT NOT NULL DEFAULT '',"
    "  timezone TEXT NOT NULL DEFAULT '',"
    "  charset TEXT NOT NULL DEFAULT '',"
    "  modalities TEXT NOT NULL DEFAULT '',"
    "  sop_classes TEXT NOT NULL DEFAULT '',"
    "  num_series {BIGINT} NOT NULL DEFAULT 0,"
    "  num_instances {BIGINT} NOT NULL DEFAULT 0,"
    "  rep_key TEXT NOT NULL DEFAULT '',"
    "  created_at {BIGINT} NOT NULL,"
    "  updated_at {BIGINT} NOT NULL,"
    "  stable_at {BIGINT},"
    "  UNIQUE (site, study_uid));"
    "CREATE INDEX studies_patient ON studies (patient_pk);"
    "CREATE INDEX studies_uid ON studies (study_uid);"
    "CREATE INDEX studies_date ON studies (study_date);"
    "CREATE INDEX studies_accession ON studies (accession);"
    "CREATE INDEX studies_referring_ci ON studies (referring_ci);"
    "CREATE INDEX studies_unstable ON studies (updated_at) WHERE stable_at IS NULL;"
    "CREATE TABLE series ("
    "  pk {SERIAL},"
    "  study_pk {BIGINT} NOT NULL REFERENCES studies (pk) ON DELETE CASCADE,"
    "  series_uid TEXT NOT NULL,"
    "  modality TEXT NOT NULL DEFAULT '',"
    "  series_number {BIGINT},"
    "  description TEXT NOT NULL DEFAULT '',"
    "  body_part TEXT NOT NULL DEFAULT '',"
    "  pps_start_date TEXT NOT NULL DEFAULT '',"
    "  pps_start_time TEXT NOT NULL DEFAULT '',"
    "  num_instances {BIGINT} NOT NULL DEFAULT 0,"
    "  rep_key TEXT NOT NULL DEFAULT '',"
    "  UNIQUE (study_pk, series_uid));"
    "CREATE INDEX series_uid ON series (series_uid);"
    "CREATE TABLE instances ("
    "  pk {SERIAL},"
    "  series_pk {BIGINT} NOT NULL REFERENCES series (pk) ON DELETE CASCADE,"
    "  sop_uid TEXT NOT NULL,"
    "  sop_class TEXT NOT NULL,"
    "  instance_number {BIGINT},"
    "  transfer_syntax TEXT NOT NULL,"
    "  object_key TEXT NOT NULL,"
    "  size {BIGINT} NOT NULL,"
    "  num_rows {BIGINT},"
    "  num_columns {BIGINT},"
    "  bits_allocated {BIGINT},"
    "  frames {BIGINT},"
    "  source_ae TEXT NOT NULL DEFAULT '',"
    "  received_at {BIGINT} NOT NULL,"
    "  UNIQUE (series_pk, sop_uid));"
    "CREATE INDEX instances_sop ON instances (sop_uid);"
    "CREATE INDEX instances_key ON instances (object_key);"
    "CREATE TABLE events ("
    "  pk {SERIAL},"
    "  kind TEXT NOT NULL,"
    "  site TEXT NOT NULL,"
    "  study_uid TEXT NOT NULL,"
    "  created_at {BIGINT} NOT NULL,"
    "  consumed_at {BIGINT});"
    "CREATE INDEX events_pending ON events (kind, pk) WHERE consumed_at IS NULL;",
    /* 2: several nodes on one database: an event is taken by one node at a time (a per-row
     * lease, arc_index_claim_event), so that two nodes never act on the same event. */
    "ALTER TABLE events ADD COLUMN claimed_by TEXT;"
    "ALTER TABLE events ADD COLUMN claimed_until {BIGINT}",
    /* 3: a person name's ideographic and phonetic component groups in columns of their own,
     * so that a wildcard ("SMI*", "山田*") is a prefix search on an index of each group (a
     * MULTI-INDEX OR) instead of LIKE '%=SMI%' over every row (bench/README.md, scale.py);
     * the name indexes serve LIKE under PostgreSQL's collations too. Existing rows are split
     * here: a group is what lies between two '='. */
    "ALTER TABLE patients ADD COLUMN patient_name_i_ci TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE patients ADD COLUMN patient_name_p_ci TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE studies ADD COLUMN referring_i_ci TEXT NOT NULL DEFAULT '';"
    "ALTER TABLE studies ADD COLUMN referring_p_ci TEXT NOT NULL DEFAULT '';"
    "UPDATE patients SET patient_name_i_ci = substr(patient_name_ci, "
    "  {STRPOS}(patient_name_ci, '=') + 1) WHERE patient_name_ci LIKE '%=%';"
    "UPDATE patients SET patient_name_p_ci = substr(patient_name_i_ci, "
    "  {STRPOS}(patient_name_i_ci, '=') + 1), patient_name_i_ci = substr(patient_name_i_ci, 1, "
    "  {STRPOS}(patient_name_i_ci, '=') - 1) WHERE patient_name_i_ci LIKE '%=%';"
    "UPDATE studies SET referring_i_ci = substr(referring_ci, {STRPOS}(referring_ci, '=') + 1) "
    "  WHERE referring_ci LIKE '%=%';"
    "UPDATE studies SET referring_p_ci = substr(referring_i_ci, "
    "  {STRPOS}(referring_i_ci, '=') + 1), referring_i_ci = substr(referring_i_ci, 1, "
    "  {STRPOS}(referring_i_ci, '=') - 1) WHERE referring_i_ci LIKE '%=%';"
    "DROP INDEX patients_name_ci;"
    "CREATE INDEX patients_name_ci ON patients (patient_name_ci{PATTERN_OPS});"
    "CREATE INDEX patients_name_i_ci ON patients (patient_name_i_ci{PATTERN_OPS});"
    "CREATE INDEX patients_name_p_ci ON patients (patient_name_p_ci{PATTERN_OPS});"
    "DROP INDEX studies_referring_ci;"
    "CREATE INDEX studies_referring_ci ON studies (referring_ci{PATTERN_OPS});"
    "CREATE INDEX studies_referring_i_ci ON studies (referring_i_ci{PATTERN_OPS});"
    "CREATE INDEX studies_referring_p_ci ON studies (referring_p_ci{PATTERN_OPS})",
    /* 4: the checksum (XXH3-64, as a signed 64-bit integer) of each stored object: after a
     * crash, it tells whether a temporary file holds the whole object its row describes
     * (objstore.c, arc_objstore_recover_puts). NULL for rows from before. */
    "ALTER TABLE instances ADD COLUMN object_hash {BIGINT}",
};

/* ---- connections -------------------------------------------------------------------------- */

int ix_acquire(struct arc_index *ix, struct db **out, struct tr_error *err)
{
    pthread_mutex_lock(&ix->pool_lock);
    struct ix_conn *c = ix->idle;
    if (c)
        ix->idle = c->next;
    pthread_mutex_unlock(&ix->pool_lock);
    if (c) {
        *out = c->db;
        tr_free(c);
        return 0;
    }
    return db_open(ix->opt.url, out, err);
}

void ix_release(struct arc_index *ix, struct db *db)
{
    struct ix_conn *c = tr_malloc(sizeof(*c));
    if (!c) {
        db_close(db);
        return;
    }
    c->db = db;
    pthread_mutex_lock(&ix->pool_lock);
    c->next = ix->idle;
    ix->idle = c;
    pthread_mutex_unlock(&ix->pool_lock);
}

int64_t ix_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- migrations --------------------------------------------------------------------------- */

static int migrate(struct db *db, struct tr_error *err)
{
    /* Indexes made before versions were kept per component (table schema_version): carry
     * their version over once. */
    int version = 0;
    struct db_stmt *st;
    if (db_schema_version(db, "archive", &version, NULL) == 0 && version == 0 &&
        db_prepare_temp(db, "SELECT MAX(version) FROM schema_version", &st, NULL) == 0) {
        int64_t legacy = db_step(st, NULL) == 1 ? db_column_int64(st, 0) : 0;
        db_finalize(st);
        if (legacy > 0 && db_prepare(db, "INSERT INTO schema_migrations (component, version) "
                                         "VALUES ('archive', $1)",
                                     &st, NULL) == 0) {
            db_bind_int64(st, 1, legacy);
            db_step(st, NULL);
            db_reset(st);
        }
    }
    return db_migrate(db, "archive", migrations, TR_ARRAY_SIZE(migrations), err);
}

int arc_index_schema_version(struct arc_index *ix, int *version, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    rc = db_schema_version(db, "archive", version, err);
    ix_release(ix, db);
    return rc;
}

/* ---- text helpers ------------------------------------------------------------------------- */

static locale_t utf8_locale;
static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;

static void init_utf8_locale(void)
{
    utf8_locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
}

/* Decode one UTF-8 sequence; 0 on an invalid one. */
static size_t utf8_decode(const unsigned char *p, size_t len, uint32_t *cp)
{
    if (p[0] < 0x80) {
        *cp = p[0];
        return 1;
    }
    size_t n = p[0] >= 0xF0 ? 4 : p[0] >= 0xE0 ? 3 : p[0] >= 0xC0 ? 2 : 0;
    if (n == 0 || n > len)
        return 0;
    uint32_t v = p[0] & (0x7F >> n);
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        v = (v << 6) | (p[i] & 0x3F);
    }
    *cp = v;
    return n;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Upper-case UTF-8 with the Unicode simple case mapping of glibc's C.UTF-8 locale, for
 * case-insensitive person name matching ("müller" matches "MÜLLER"). */
void ix_upper(const char *in, char *out, size_t size)
{
    pthread_once(&utf8_once, init_utf8_locale);
    const unsigned char *p = (const unsigned char *)in;
    size_t len = strlen(in), n = 0;
    while (len && n + 5 < size) {
        uint32_t cp;
        size_t k = utf8_decode(p, len, &cp);
        if (k == 0) {
            out[n++] = (char)*p; /* not UTF-8: copied as is */
            p++;
            len--;
            continue;
        }
        if (cp < 0x80)
            cp = cp >= 'a' && cp <= 'z' ? cp - 32 : cp;
        else if (utf8_locale)
            cp = (uint32_t)towupper_l((wint_t)cp, utf8_locale);
        n += utf8_encode(cp, out + n);
        p += k;
        len -= k;
    }
    out[n] = '\0';
}

/* ---- records from data sets --------------------------------------------------------------- */

static void text_of(const struct dcm_dataset *ds, uint32_t tag, char *out, size_t size)
{
    out[0] = '\0';
    char *t = dcm_dataset_get_text(ds, tag, NULL);
    if (t) {
        snprintf(out, size, "%s", t);
        tr_free(t);
    }
}

static int64_t int_of(const struct dcm_dataset *ds, uint32_t tag, bool *has)
{
    int64_t v;
    bool ok = dcm_dataset_get_int(ds, tag, 0, &v) == 0;
    if (has)
        *has = ok;
    return ok ? v : 0;
}

int arc_record_from_dataset(struct arc_record *r, const struct dcm_dataset *ds,
                            struct tr_error *err)
{
    text_of(ds, 0x00100020, r->patient_id, sizeof(r->patient_id));
    text_of(ds, 0x00100021, r->issuer, sizeof(r->issuer));
    text_of(ds, 0x00100010, r->patient_name, sizeof(r->patient_name));
    text_of(ds, 0x00100030, r->birth_date, sizeof(r->birth_date));
    text_of(ds, 0x00100040, r->sex, sizeof(r->sex));
    text_of(ds, DCM_TAG_StudyInstanceUID, r->study_uid, sizeof(r->study_uid));
    text_of(ds, 0x00080020, r->study_date, sizeof(r->study_date));
    text_of(ds, 0x00080030, r->study_time, sizeof(r->study_time));
    text_of(ds, 0x00080050, r->accession, sizeof(r->accession));
    text_of(ds, 0x00200010, r->study_id, sizeof(r->study_id));
    text_of(ds, 0x00081030, r->study_description, sizeof(r->study_description));
    text_of(ds, 0x00080090, r->referring_physician, sizeof(r->referring_physician));
    text_of(ds, 0x00080201, r->timezone, sizeof(r->timezone));
    text_of(ds, DCM_TAG_SpecificCharacterSet, r->charset, sizeof(r->charset));
    text_of(ds, DCM_TAG_SeriesInstanceUID, r->series_uid, sizeof(r->series_uid));
    text_of(ds, 0x00080060, r->modality, sizeof(r->modality));
    r->series_number = int_of(ds, 0x00200011, &r->has_series_number);
    text_of(ds, 0x0008103E, r->series_description, sizeof(r->series_description));
    text_of(ds, 0x00180015, r->body_part, sizeof(r->body_part));
    text_of(ds, 0x00400244, r->pps_start_date, sizeof(r->pps_start_date));
    text_of(ds, 0x00400245, r->pps_start_time, sizeof(r->pps_start_time));
    text_of(ds, DCM_TAG_SOPInstanceUID, r->sop_uid, sizeof(r->sop_uid));
    text_of(ds, DCM_TAG_SOPClassUID, r->sop_class, sizeof(r->sop_class));
    r->instance_number = int_of(ds, 0x00200013, &r->has_instance_number);
    r->rows = int_of(ds, 0x00280010, NULL);
    r->columns = int_of(ds, 0x00280011, NULL);
    r->bits_allocated = int_of(ds, 0x00280100, NULL);
    r->frames = int_of(ds, 0x00280008, NULL);
    if (!r->study_uid[0] || !r->series_uid[0] || !r->sop_uid[0])
        return tr_error_set(err, TR_EINVAL, "missing Study, Series or SOP Instance UID");
    return 0;
}

/* ---- adding instances --------------------------------------------------------------------- */

static int step_done(struct db_stmt *st, struct tr_error *err)
{
    int rc = db_step(st, err);
    db_reset(st);
    return rc < 0 ? rc : 0;
}

/* Append `value` to a backslash-separated set unless it is already there. */
static bool add_to_set(char *set, size_t size, const char *value)
{
    if (!*value)
        return false;
    size_t n = strlen(value);
    for (const char *p = set; *p;) {
        const char *q = strchr(p, '\\');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == n && memcmp(p, value, n) == 0)
            return false;
        p = q ? q + 1 : p + len;
    }
    size_t used = strlen(set);
    if (used + n + 2 > size)
        return false;
    if (used)
        set[used++] = '\\';
    memcpy(set + used, value, n + 1);
    return true;
}

/* The ideographic and phonetic component groups of an (upper-cased) person name: what follows
 * the first '=', up to the second, and what follows the second; empty when absent. `ideo` and
 * `phon` are at least as large as `name`. */
static void pn_groups(const char *name, char *ideo, char *phon)
{
    ideo[0] = phon[0] = '\0';
    const char *a = strchr(name, '=');
    if (!a)
        return;
    const char *b = strchr(a + 1, '=');
    size_t n = b ? (size_t)(b - a - 1) : strlen(a + 1);
    memcpy(ideo, a + 1, n);
    ideo[n] = '\0';
    if (b)
        memcpy(phon, b + 1, strlen(b + 1) + 1);
}

static int add_one(struct arc_index *ix, struct db *db, const struct arc_record *r,
                   struct tr_error *err)
{
    struct db_stmt *st;
    int rc;
    char name_ci[sizeof(r->patient_name) * 2], ref_ci[sizeof(r->referring_physician) * 2];
    ix_upper(r->patient_name, name_ci, sizeof(name_ci));
    ix_upper(r->referring_physician, ref_ci, sizeof(ref_ci));
    char name_i[sizeof(name_ci)], name_p[sizeof(name_ci)], ref_i[sizeof(ref_ci)],
        ref_p[sizeof(ref_ci)];
    pn_groups(name_ci, name_i, name_p);
    pn_groups(ref_ci, ref_i, ref_p);
    int64_t now = r->received_at ? r->received_at : ix_now_ms();

    /* Patient: (site, PatientID, issuer); later instances refresh the demographics. Looked up
     * first: the upsert rewrites the row even when nothing changed, and with it every index on
     * a column it sets (four name indexes): pages in every commit for nothing. */
    int64_t patient_pk = 0;
    if ((rc = db_prepare(db,
                         "SELECT pk, patient_name, birth_date, sex FROM patients WHERE site = $1 "
                         "AND patient_id = $2 AND issuer = $3",
                         &st, err)))
        return rc;
    db_bind_text(st, 1, r->site);
    db_bind_text(st, 2, r->patient_id);
    db_bind_text(st, 3, r->issuer);
    rc = db_step(st, err);
    if (rc == 1 && (!r->patient_name[0] || strcmp(db_column_text(st, 1), r->patient_name) == 0) &&
        (!r->birth_date[0] || strcmp(db_column_text(st, 2), r->birth_date) == 0) &&
        (!r->sex[0] || strcmp(db_column_text(st, 3), r->sex) == 0))
        patient_pk = db_column_int64(st, 0);
    db_reset(st);
    if (rc < 0)
        return rc;
    if (!patient_pk) {
        if ((rc = db_prepare(db,
                             "INSERT INTO patients (site, patient_id, issuer, patient_name, "
                             "patient_name_ci, birth_date, sex, patient_name_i_ci, "
                             "patient_name_p_ci) "
                             "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                             "ON CONFLICT (site, patient_id, issuer) DO UPDATE SET "
                             "patient_name = CASE WHEN excluded.patient_name <> '' THEN "
                             "excluded.patient_name ELSE patients.patient_name END, "
                             "patient_name_ci = CASE WHEN excluded.patient_name <> '' THEN "
                             "excluded.patient_name_ci ELSE patients.patient_name_ci END, "
                             "patient_name_i_ci = CASE WHEN excluded.patient_name <> '' THEN "
                             "excluded.patient_name_i_ci ELSE patients.patient_name_i_ci END, "
                             "patient_name_p_ci = CASE WHEN excluded.patient_name <> '' THEN "
                             "excluded.patient_name_p_ci ELSE patients.patient_name_p_ci END, "
                             "birth_date = CASE WHEN excluded.birth_date <> '' THEN "
                             "excluded.birth_date ELSE patients.birth_date END, "
                             "sex = CASE WHEN excluded.sex <> '' THEN excluded.sex "
                             "ELSE patients.sex END RETURNING pk",
                             &st, err)))
            return rc;
        db_bind_text(st, 1, r->site);
        db_bind_text(st, 2, r->patient_id);
        db_bind_text(st, 3, r->issuer);
        db_bind_text(st, 4, r->patient_name);
        db_bind_text(st, 5, name_ci);
        db_bind_text(st, 6, r->birth_date);
        db_bind_text(st, 7, r->sex);
        db_bind_text(st, 8, name_i);
        db_bind_text(st, 9, name_p);
        rc = db_step(st, err);
        patient_pk = rc == 1 ? db_column_int64(st, 0) : 0;
        db_reset(st);
        if (rc != 1)
            return rc < 0 ? rc : tr_error_set(err, TR_EIO, "index: no patient row");
    }

    /* Study: a new instance makes it unstable again. A known study is updated by its key,
     * and its patient only when that changed (studies_patient is not rewritten each time). */
    int64_t study_pk = 0;
    char modalities[256] = "", sop_classes[2048] = "";
    if ((rc = db_prepare(db,
                         "SELECT pk, patient_pk, modalities, sop_classes FROM studies WHERE "
                         "site = $1 AND study_uid = $2",
                         &st, err)))
        return rc;
    db_bind_text(st, 1, r->site);
    db_bind_text(st, 2, r->study_uid);
    rc = db_step(st, err);
    int64_t old_patient = 0;
    if (rc == 1) {
        study_pk = db_column_int64(st, 0);
        old_patient = db_column_int64(st, 1);
        snprintf(modalities, sizeof(modalities), "%s", db_column_text(st, 2));
        snprintf(sop_classes, sizeof(sop_classes), "%s", db_column_text(st, 3));
    }
    db_reset(st);
    if (rc < 0)
        return rc;
    if (study_pk) {
        add_to_set(modalities, sizeof(modalities), r->modality);
        add_to_set(sop_classes, sizeof(sop_classes), r->sop_class);
        bool moved = old_patient != patient_pk;
        if ((rc = db_prepare(db,
                             moved ? "UPDATE studies SET updated_at = $2, stable_at = NULL, "
                                     "modalities = $3, sop_classes = $4, patient_pk = $5 "
                                     "WHERE pk = $1"
                                   : "UPDATE studies SET updated_at = $2, stable_at = NULL, "
                                     "modalities = $3, sop_classes = $4 WHERE pk = $1",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, study_pk);
        db_bind_int64(st, 2, now);
        db_bind_text(st, 3, modalities);
        db_bind_text(st, 4, sop_classes);
        if (moved)
            db_bind_int64(st, 5, patient_pk);
        if ((rc = step_done(st, err)))
            return rc;
    } else {
        if ((rc = db_prepare(db,
                             "INSERT INTO studies (patient_pk, site, study_uid, study_date, "
                             "study_time, accession, study_id, description, referring, "
                             "referring_ci, timezone, charset, rep_key, created_at, updated_at, "
                             "referring_i_ci, referring_p_ci) VALUES ($1, $2, $3, $4, $5, $6, "
                             "$7, $8, $9, $10, $11, $12, $13, $14, $14, $15, $16) "
                             "ON CONFLICT (site, study_uid) DO UPDATE SET updated_at = "
                             "excluded.updated_at, stable_at = NULL, "
                             "patient_pk = excluded.patient_pk "
                             "RETURNING pk, modalities, sop_classes",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, patient_pk);
        db_bind_text(st, 2, r->site);
        db_bind_text(st, 3, r->study_uid);
        db_bind_text(st, 4, r->study_date);
        db_bind_text(st, 5, r->study_time);
        db_bind_text(st, 6, r->accession);
        db_bind_text(st, 7, r->study_id);
        db_bind_text(st, 8, r->study_description);
        db_bind_text(st, 9, r->referring_physician);
        db_bind_text(st, 10, ref_ci);
        db_bind_text(st, 11, r->timezone);
        db_bind_text(st, 12, r->charset);
        db_bind_text(st, 13, r->object_key);
        db_bind_int64(st, 14, now);
        db_bind_text(st, 15, ref_i);
        db_bind_text(st, 16, ref_p);
        rc = db_step(st, err);
        study_pk = rc == 1 ? db_column_int64(st, 0) : 0;
        snprintf(modalities, sizeof(modalities), "%s", rc == 1 ? db_column_text(st, 1) : "");
        snprintf(sop_classes, sizeof(sop_classes), "%s", rc == 1 ? db_column_text(st, 2) : "");
        db_reset(st);
        if (rc != 1)
            return rc < 0 ? rc : tr_error_set(err, TR_EIO, "index: no study row");
        bool changed = add_to_set(modalities, sizeof(modalities), r->modality);
        changed |= add_to_set(sop_classes, sizeof(sop_classes), r->sop_class);
        if (changed) {
            if ((rc = db_prepare(db, "UPDATE studies SET modalities = $2, sop_classes = $3 "
                                     "WHERE pk = $1",
                                 &st, err)))
                return rc;
            db_bind_int64(st, 1, study_pk);
            db_bind_text(st, 2, modalities);
            db_bind_text(st, 3, sop_classes);
            if ((rc = step_done(st, err)))
                return rc;
        }
    }

    /* Series. */
    if ((rc = db_prepare(db,
                         "INSERT INTO series (study_pk, series_uid, modality, series_number, "
                         "description, body_part, pps_start_date, pps_start_time, rep_key) "
                         "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) "
                         "ON CONFLICT (study_pk, series_uid) DO NOTHING RETURNING pk",
                         &st, err)))
        return rc;
    db_bind_int64(st, 1, study_pk);
    db_bind_text(st, 2, r->series_uid);
    db_bind_text(st, 3, r->modality);
    if (r->has_series_number)
        db_bind_int64(st, 4, r->series_number);
    else
        db_bind_null(st, 4);
    db_bind_text(st, 5, r->series_description);
    db_bind_text(st, 6, r->body_part);
    db_bind_text(st, 7, r->pps_start_date);
    db_bind_text(st, 8, r->pps_start_time);
    db_bind_text(st, 9, r->object_key);
    rc = db_step(st, err);
    int64_t series_pk = rc == 1 ? db_column_int64(st, 0) : 0;
    db_reset(st);
    if (rc < 0)
        return rc;
    if (rc == 1) {
        if ((rc = db_prepare(db, "UPDATE studies SET num_series = num_series + 1 WHERE pk = $1",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, study_pk);
        if ((rc = step_done(st, err)))
            return rc;
    } else {
        if ((rc = db_prepare(db, "SELECT pk FROM series WHERE study_pk = $1 AND series_uid = $2",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, study_pk);
        db_bind_text(st, 2, r->series_uid);
        rc = db_step(st, err);
        series_pk = rc == 1 ? db_column_int64(st, 0) : 0;
        db_reset(st);
        if (rc != 1)
            return rc < 0 ? rc : tr_error_set(err, TR_EIO, "index: series row vanished");
    }

    /* Instance: a known one (sent again) is updated; a new one counts. */
    if ((rc = db_prepare(db, "SELECT pk FROM instances WHERE series_pk = $1 AND sop_uid = $2",
                         &st, err)))
        return rc;
    db_bind_int64(st, 1, series_pk);
    db_bind_text(st, 2, r->sop_uid);
    rc = db_step(st, err);
    int64_t instance_pk = rc == 1 ? db_column_int64(st, 0) : 0;
    db_reset(st);
    if (rc < 0)
        return rc;
    if (instance_pk) {
        if ((rc = db_prepare(db,
                             "UPDATE instances SET sop_class = $2, instance_number = $3, "
                             "transfer_syntax = $4, object_key = $5, size = $6, num_rows = $7, "
                             "num_columns = $8, bits_allocated = $9, frames = $10, source_ae = "
                             "$11, received_at = $12, object_hash = $14 WHERE pk = $1 AND "
                             "sop_uid = $13",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, instance_pk);
        db_bind_text(st, 13, r->sop_uid); /* every parameter used: PostgreSQL types them */
    } else {
        if ((rc = db_prepare(db,
                             "INSERT INTO instances (series_pk, sop_class, instance_number, "
                             "transfer_syntax, object_key, size, num_rows, num_columns, "
                             "bits_allocated, frames, source_ae, received_at, sop_uid, "
                             "object_hash) VALUES "
                             "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, series_pk);
        db_bind_text(st, 13, r->sop_uid);
    }
    db_bind_text(st, 2, r->sop_class);
    if (r->has_instance_number)
        db_bind_int64(st, 3, r->instance_number);
    else
        db_bind_null(st, 3);
    db_bind_text(st, 4, r->transfer_syntax);
    db_bind_text(st, 5, r->object_key);
    db_bind_int64(st, 6, (int64_t)r->size);
    /* 0 means absent (no image has 0 rows): stored as NULL, returned empty. */
    const int64_t dims[4] = {r->rows, r->columns, r->bits_allocated, r->frames};
    for (int d = 0; d < 4; d++) {
        if (dims[d])
            db_bind_int64(st, 7 + d, dims[d]);
        else
            db_bind_null(st, 7 + d);
    }
    db_bind_text(st, 11, r->source_ae);
    db_bind_int64(st, 12, now);
    if (r->has_checksum)
        db_bind_int64(st, 14, (int64_t)r->checksum);
    else
        db_bind_null(st, 14);
    if ((rc = step_done(st, err)))
        return rc;
    if (!instance_pk) {
        if ((rc = db_prepare(db, "UPDATE series SET num_instances = num_instances + 1 "
                                 "WHERE pk = $1",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, series_pk);
        if ((rc = step_done(st, err)))
            return rc;
        if ((rc = db_prepare(db, "UPDATE studies SET num_instances = num_instances + 1 "
                                 "WHERE pk = $1",
                             &st, err)))
            return rc;
        db_bind_int64(st, 1, study_pk);
        if ((rc = step_done(st, err)))
            return rc;
    }
    (void)ix;
    return 0;
}

/* ---- group commit ------------------------------------------------------------------------- */

static void *writer_main(void *arg)
{
    struct arc_index *ix = arg;
    pthread_mutex_lock(&ix->lock);
    for (;;) {
        while (!ix->queue && !ix->stopping)
            pthread_cond_wait(&ix->work, &ix->lock);
        if (!ix->queue && ix->stopping)
            break;
        struct arc_index_job *batch = ix->queue;
        ix->queue = ix->queue_tail = NULL;
        pthread_mutex_unlock(&ix->lock);

        /* One transaction (and one fsync) for everything queued meanwhile. Each record has a
         * savepoint, so one bad record fails alone. */
        struct tr_error err = TR_ERROR_INIT;
        int rc = db_begin(ix->writer, &err);
        for (struct arc_index_job *j = batch; j; j = j->next) {
            if (rc) {
                j->rc = rc;
                j->err = err;
                continue;
            }
            db_exec(ix->writer, "SAVEPOINT record", NULL);
            j->rc = add_one(ix, ix->writer, j->record, &j->err);
            if (j->rc)
                db_exec(ix->writer, "ROLLBACK TO SAVEPOINT record", NULL);
            db_exec(ix->writer, "RELEASE SAVEPOINT record", NULL);
        }
        if (rc == 0 && (rc = db_commit(ix->writer, &err))) {
            db_rollback(ix->writer);
            for (struct arc_index_job *j = batch; j; j = j->next) {
                if (j->rc == 0) {
                    j->rc = rc;
                    j->err = err;
                }
            }
        }
        pthread_mutex_lock(&ix->lock);
        ix->batches++;
        for (struct arc_index_job *j = batch; j; j = j->next)
            j->done = true;
        pthread_cond_broadcast(&ix->done);
    }
    pthread_mutex_unlock(&ix->lock);
    return NULL;
}

void arc_index_add_begin(struct arc_index *ix, struct arc_index_job *job,
                         const struct arc_record *r)
{
    memset(job, 0, sizeof(*job));
    job->record = r;
    pthread_mutex_lock(&ix->lock);
    if (ix->stopping) {
        job->rc = tr_error_set(&job->err, TR_ECLOSED, "the index is closing");
        job->done = true;
        pthread_mutex_unlock(&ix->lock);
        return;
    }
    if (ix->queue_tail)
        ix->queue_tail->next = job;
    else
        ix->queue = job;
    ix->queue_tail = job;
    pthread_cond_signal(&ix->work);
    pthread_mutex_unlock(&ix->lock);
}

int arc_index_add_wait(struct arc_index *ix, struct arc_index_job *job, struct tr_error *err)
{
    pthread_mutex_lock(&ix->lock);
    while (!job->done)
        pthread_cond_wait(&ix->done, &ix->lock);
    pthread_mutex_unlock(&ix->lock);
    if (job->rc && err && err->code == 0)
        *err = job->err;
    return job->rc;
}

int arc_index_add(struct arc_index *ix, const struct arc_record *r, struct tr_error *err)
{
    struct arc_index_job job;
    arc_index_add_begin(ix, &job, r);
    return arc_index_add_wait(ix, &job, err);
}

/* ---- open / close ------------------------------------------------------------------------- */

void arc_index_options_init(struct arc_index_options *o)
{
    memset(o, 0, sizeof(*o));
    o->url = "sqlite:telerad-data/index.sqlite";
    o->pn_case_insensitive = true;
    o->max_matches = 100000;
    o->stable_after = 60;
}

int arc_index_open(const struct arc_index_options *o, struct arc_index **out,
                   struct tr_error *err)
{
    struct arc_index *ix = tr_calloc(1, sizeof(*ix));
    if (!ix)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    ix->opt = *o;
    snprintf(ix->url, sizeof(ix->url), "%s", o->url);
    ix->opt.url = ix->url;
    pthread_mutex_init(&ix->pool_lock, NULL);
    pthread_mutex_init(&ix->lock, NULL);
    pthread_cond_init(&ix->work, NULL);
    pthread_cond_init(&ix->done, NULL);
    int rc = db_open(ix->url, &ix->writer, err);
    if (rc == 0)
        rc = migrate(ix->writer, err);
    if (rc == 0 && pthread_create(&ix->thread, NULL, writer_main, ix) != 0)
        rc = tr_error_set(err, TR_ENOMEM, "cannot start the index writer");
    else if (rc == 0)
        ix->thread_started = true;
    if (rc) {
        arc_index_close(ix);
        return rc;
    }
    *out = ix;
    return 0;
}

void arc_index_close(struct arc_index *ix)
{
    if (!ix)
        return;
    if (ix->thread_started) {
        pthread_mutex_lock(&ix->lock);
        ix->stopping = true;
        pthread_cond_signal(&ix->work);
        pthread_mutex_unlock(&ix->lock);
        pthread_join(ix->thread, NULL);
    }
    db_close(ix->writer);
    while (ix->idle) {
        struct ix_conn *n = ix->idle->next;
        db_close(ix->idle->db);
        tr_free(ix->idle);
        ix->idle = n;
    }
    pthread_mutex_destroy(&ix->pool_lock);
    pthread_mutex_destroy(&ix->lock);
    pthread_cond_destroy(&ix->work);
    pthread_cond_destroy(&ix->done);
    tr_free(ix);
}

/* ---- lookups and lifecycle ---------------------------------------------------------------- */

int arc_index_find_instance(struct arc_index *ix, const char *site, const char *sop_uid,
                            char *object_key, size_t size, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db,
                    "SELECT i.object_key FROM instances i JOIN series se ON se.pk = i.series_pk "
                    "JOIN studies s ON s.pk = se.study_pk WHERE i.sop_uid = $1 AND "
                    "($2 = '*' OR s.site = $2) LIMIT 1",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, sop_uid);
        db_bind_text(st, 2, site ? site : "*");
        rc = db_step(st, err);
        if (rc == 1)
            snprintf(object_key, size, "%s", db_column_text(st, 0));
        db_reset(st);
        rc = rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
    }
    ix_release(ix, db);
    return rc;
}

int arc_index_study_times(struct arc_index *ix, const char *site, const char *study_uid,
                          int64_t *received_at, int64_t *stable_at, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db, "SELECT created_at, stable_at FROM studies WHERE site = $1 AND "
                        "study_uid = $2",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, site);
        db_bind_text(st, 2, study_uid);
        rc = db_step(st, err);
        if (rc == 1) {
            *received_at = db_column_int64(st, 0);
            *stable_at = db_column_is_null(st, 1) ? 0 : db_column_int64(st, 1);
        }
        db_reset(st);
        rc = rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
    }
    ix_release(ix, db);
    return rc;
}

int arc_index_delete_study(struct arc_index *ix, const char *site, const char *study_uid,
                           char ***object_keys, size_t *count, struct tr_error *err)
{
    *object_keys = NULL;
    *count = 0;
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    struct tr_buf keys;
    tr_buf_init(&keys, SIZE_MAX / 2);
    size_t n = 0;
    if ((rc = db_begin(db, err)))
        goto out;
    rc = db_prepare(db,
                    "SELECT i.object_key FROM instances i JOIN series se ON se.pk = i.series_pk "
                    "JOIN studies s ON s.pk = se.study_pk WHERE s.study_uid = $1 AND "
                    "($2 = '*' OR s.site = $2)",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, study_uid);
        db_bind_text(st, 2, site ? site : "*");
        while ((rc = db_step(st, err)) == 1) {
            tr_buf_add(&keys, db_column_text(st, 0), strlen(db_column_text(st, 0)) + 1);
            n++;
        }
        db_reset(st);
    }
    if (rc == 0)
        rc = db_prepare(db, "DELETE FROM studies WHERE study_uid = $1 AND ($2 = '*' OR site = $2)",
                        &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, study_uid);
        db_bind_text(st, 2, site ? site : "*");
        rc = step_done(st, err);
    }
    /* Patients left without studies go too. */
    if (rc == 0)
        rc = db_exec(db, "DELETE FROM patients WHERE pk NOT IN (SELECT patient_pk FROM studies)",
                     err);
    if (rc == 0)
        rc = db_commit(db, err);
    else
        db_rollback(db);
    if (rc == 0 && n == 0)
        rc = tr_error_set(err, TR_ENOTFOUND, "no study %s", study_uid);
    if (rc == 0) {
        char **list = tr_calloc(n + 1, sizeof(*list));
        const char *p = keys.data;
        for (size_t i = 0; list && i < n; i++, p += strlen(p) + 1)
            list[i] = tr_strdup(p);
        if (!list)
            rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        *object_keys = list;
        *count = list ? n : 0;
    }
out:
    tr_buf_release(&keys);
    ix_release(ix, db);
    return rc;
}

/* Remove the rows of the instance stored as object_key if it was received before before_ms:
 * 1 removed, 0 not (no such row, or younger), negative on errors. */
static int forget_object(struct arc_index *ix, const char *object_key, int64_t before_ms,
                         struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    int64_t pk = 0, series = 0, study = 0;
    if ((rc = db_begin(db, err)))
        goto out;
    rc = db_prepare(db,
                    "SELECT i.pk, i.series_pk, se.study_pk FROM instances i JOIN series se ON "
                    "se.pk = i.series_pk WHERE i.object_key = $1 AND i.received_at < $2",
                    &st, err);
    if (rc == 0) {
        db_bind_text(st, 1, object_key);
        db_bind_int64(st, 2, before_ms);
        rc = db_step(st, err);
        if (rc == 1) {
            pk = db_column_int64(st, 0);
            series = db_column_int64(st, 1);
            study = db_column_int64(st, 2);
        }
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    if (rc == 0 && pk) {
        static const struct {
            const char *sql;
            int which; /* 0 instance, 1 series, 2 study */
        } steps[] = {
            {"DELETE FROM instances WHERE pk = $1", 0},
            {"UPDATE series SET num_instances = num_instances - 1 WHERE pk = $1", 1},
            {"UPDATE studies SET num_instances = num_instances - 1 WHERE pk = $1", 2},
            {"DELETE FROM series WHERE pk = $1 AND num_instances <= 0", 1},
        };
        const int64_t ids[3] = {pk, series, study};
        for (size_t i = 0; i < TR_ARRAY_SIZE(steps) && rc == 0; i++) {
            if ((rc = db_prepare(db, steps[i].sql, &st, err)))
                break;
            db_bind_int64(st, 1, ids[steps[i].which]);
            rc = step_done(st, err);
        }
        if (rc == 0)
            rc = db_exec(db,
                         "UPDATE studies SET num_series = (SELECT COUNT(*) FROM series WHERE "
                         "study_pk = studies.pk) WHERE num_instances >= 0;"
                         "DELETE FROM studies WHERE num_instances <= 0;"
                         "DELETE FROM patients WHERE pk NOT IN (SELECT patient_pk FROM studies)",
                         err);
    }
    if (rc == 0)
        rc = db_commit(db, err);
    else
        db_rollback(db);
out:
    ix_release(ix, db);
    return rc ? rc : pk != 0;
}

int arc_index_forget_object(struct arc_index *ix, const char *object_key, struct tr_error *err)
{
    int rc = forget_object(ix, object_key, INT64_MAX, err);
    return rc < 0 ? rc : 0;
}

int arc_index_object_checksum(struct arc_index *ix, const char *object_key, uint64_t *size,
                              bool *has_checksum, uint64_t *checksum, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db, "SELECT size, object_hash FROM instances WHERE object_key = $1", &st,
                    err);
    if (rc == 0) {
        db_bind_text(st, 1, object_key);
        rc = db_step(st, err);
        if (rc == 1) {
            *size = (uint64_t)db_column_int64(st, 0);
            *has_checksum = !db_column_is_null(st, 1);
            *checksum = *has_checksum ? (uint64_t)db_column_int64(st, 1) : 0;
        }
        db_reset(st);
        rc = rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
    }
    ix_release(ix, db);
    return rc;
}

int arc_index_forget_object_before(struct arc_index *ix, const char *object_key,
                                   int64_t before_ms, struct tr_error *err)
{
    return forget_object(ix, object_key, before_ms, err);
}

int arc_index_each_object(struct arc_index *ix, int (*fn)(void *ctx, const char *key), void *ctx,
                          struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db, "SELECT object_key FROM instances", &st, err);
    while (rc == 0 && (rc = db_step(st, err)) == 1)
        rc = fn(ctx, db_column_text(st, 0)) < 0 ? 1 : 0;
    if (rc >= 0 || rc == 1) {
        db_reset(st);
        rc = rc == 1 ? 0 : rc;
    }
    ix_release(ix, db);
    return rc < 0 ? rc : 0;
}

#define STABLE_BATCH 256

int arc_index_mark_stable(struct arc_index *ix, int64_t now_ms, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    int64_t cutoff = now_ms - (int64_t)ix->opt.stable_after * 1000;
    int marked = 0;
    struct {
        char site[65];
        char study_uid[DCM_UID_MAX + 1];
    } *batch = tr_calloc(STABLE_BATCH, sizeof(*batch));
    if (!batch) {
        rc = tr_error_set(err, TR_ENOMEM, "out of memory");
        goto out;
    }
    size_t n;
    do {
        n = 0;
        struct db_stmt *st;
        if ((rc = db_begin(db, err)))
            goto out;
        /* Mark first, then record the event of each study this transaction marked, in one
         * transaction: a restart neither loses nor repeats it. Several nodes run this at once
         * on one PostgreSQL: the outer `stable_at IS NULL` is checked again on the row's
         * latest version once a concurrent marker's transaction ends (READ COMMITTED), so
         * only the transaction that flips stable_at gets the row back, and only it inserts
         * the event. */
        rc = db_prepare(db,
                        "UPDATE studies SET stable_at = $2 WHERE pk IN (SELECT pk FROM studies "
                        "WHERE stable_at IS NULL AND updated_at <= $1 ORDER BY pk LIMIT $3) AND "
                        "stable_at IS NULL AND updated_at <= $1 RETURNING site, study_uid",
                        &st, err);
        if (rc == 0) {
            db_bind_int64(st, 1, cutoff);
            db_bind_int64(st, 2, now_ms);
            db_bind_int64(st, 3, STABLE_BATCH);
            while (n < STABLE_BATCH && (rc = db_step(st, err)) == 1) {
                snprintf(batch[n].site, sizeof(batch[n].site), "%s", db_column_text(st, 0));
                snprintf(batch[n].study_uid, sizeof(batch[n].study_uid), "%s",
                         db_column_text(st, 1));
                n++;
            }
            db_reset(st);
            rc = rc < 0 ? rc : 0;
        }
        for (size_t i = 0; rc == 0 && i < n; i++) {
            rc = db_prepare(db,
                            "INSERT INTO events (kind, site, study_uid, created_at) VALUES "
                            "('study_stable', $1, $2, $3)",
                            &st, err);
            if (rc)
                break;
            db_bind_text(st, 1, batch[i].site);
            db_bind_text(st, 2, batch[i].study_uid);
            db_bind_int64(st, 3, now_ms);
            rc = step_done(st, err);
        }
        if (rc == 0)
            rc = db_commit(db, err);
        else
            db_rollback(db);
        if (rc == 0)
            marked += (int)n;
    } while (rc == 0 && n == STABLE_BATCH);
out:
    tr_free(batch);
    ix_release(ix, db);
    return rc ? rc : marked;
}

int arc_index_events(struct arc_index *ix, const char *kind, struct arc_event **events,
                     size_t *count, unsigned max, struct tr_error *err)
{
    *events = NULL;
    *count = 0;
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct arc_event *list = tr_calloc(max + 1, sizeof(*list));
    struct db_stmt *st;
    rc = list ? db_prepare(db,
                           "SELECT pk, kind, site, study_uid, created_at FROM events WHERE "
                           "consumed_at IS NULL AND kind = $1 AND (claimed_until IS NULL OR "
                           "claimed_until < $3) ORDER BY pk LIMIT $2",
                           &st, err)
              : tr_error_set(err, TR_ENOMEM, "out of memory");
    size_t n = 0;
    if (rc == 0) {
        db_bind_text(st, 1, kind);
        db_bind_int64(st, 2, max);
        db_bind_int64(st, 3, ix_now_ms());
        while (n < max && (rc = db_step(st, err)) == 1) {
            struct arc_event *e = &list[n++];
            e->id = db_column_int64(st, 0);
            snprintf(e->kind, sizeof(e->kind), "%s", db_column_text(st, 1));
            snprintf(e->site, sizeof(e->site), "%s", db_column_text(st, 2));
            snprintf(e->study_uid, sizeof(e->study_uid), "%s", db_column_text(st, 3));
            e->created_at = db_column_int64(st, 4);
        }
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    ix_release(ix, db);
    if (rc) {
        tr_free(list);
        return rc;
    }
    *events = list;
    *count = n;
    return 0;
}

int arc_index_claim_event(struct arc_index *ix, int64_t id, int64_t now_ms, int64_t until_ms,
                          struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db,
                    "UPDATE events SET claimed_by = $2, claimed_until = $3 WHERE pk = $1 AND "
                    "consumed_at IS NULL AND (claimed_until IS NULL OR claimed_until < $4 OR "
                    "claimed_by = $2)",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, id);
        db_bind_text(st, 2, db_node_id());
        db_bind_int64(st, 3, until_ms);
        db_bind_int64(st, 4, now_ms);
        rc = db_step(st, err);
        bool taken = rc >= 0 && db_changes(st) == 1;
        db_reset(st);
        rc = rc < 0 ? rc : taken ? 1 : 0;
    }
    ix_release(ix, db);
    return rc;
}

int arc_index_consume_event(struct arc_index *ix, int64_t id, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db, "UPDATE events SET consumed_at = $2 WHERE pk = $1", &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, id);
        db_bind_int64(st, 2, ix_now_ms());
        rc = step_done(st, err);
    }
    ix_release(ix, db);
    return rc;
}

int arc_index_stats(struct arc_index *ix, struct arc_index_stats *s, struct tr_error *err)
{
    struct db *db;
    int rc = ix_acquire(ix, &db, err);
    if (rc)
        return rc;
    struct db_stmt *st;
    rc = db_prepare(db,
                    "SELECT (SELECT COUNT(*) FROM patients), (SELECT COUNT(*) FROM studies), "
                    "(SELECT COUNT(*) FROM series), (SELECT COUNT(*) FROM instances)",
                    &st, err);
    if (rc == 0 && (rc = db_step(st, err)) == 1) {
        s->patients = db_column_int64(st, 0);
        s->studies = db_column_int64(st, 1);
        s->series = db_column_int64(st, 2);
        s->instances = db_column_int64(st, 3);
        rc = 0;
    }
    if (rc >= 0)
        db_reset(st);
    ix_release(ix, db);
    return rc < 0 ? rc : 0;
}
