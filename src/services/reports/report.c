/*
 * report.c - report versions: drafts, the signing rules, signed versions and addenda, and a
 * signed version as the document every output (ORU, FHIR, SR, PDF) is made from.
 *
 * Rules (rep_sign_check): only the read's assignee writes and signs, in their own name; a
 * preliminary comes before any final and at most once; the final at most once; addenda only
 * after the final. A signed version is never changed (every UPDATE is guarded by "signed_at IS
 * NULL"); a change after signing is a new version or an addendum. Signing changes the read's
 * state through the workflow (guarded by the assignee and the expected states) in the same
 * transaction that signs the version and queues its deliveries: all or nothing.
 */
#include "common.h"
#include "reports_int.h"
#include "dict.h"
#include "uid.h"

#include <inttypes.h>
#include <stdio.h>

const char *const rep_kind_names[REP_KIND_COUNT] = {"draft", "preliminary", "final", "addendum"};

int rep_kind_parse(const char *text)
{
    for (int i = 0; i < REP_KIND_COUNT; i++) {
        if (text && strcmp(text, rep_kind_names[i]) == 0)
            return i;
    }
    return -1;
}

#define MAX_SECTION_TEXT 65536
#define MAX_ADDENDA      16

/* ---- the rules ---------------------------------------------------------------------------- */

int rep_sign_check(const struct rep_progress *p, int kind, const char *signer, char *why,
                   size_t why_size)
{
    if (kind != REP_PRELIMINARY && kind != REP_FINAL && kind != REP_ADDENDUM) {
        snprintf(why, why_size, "a signed version is preliminary, final or an addendum");
        return TR_EINVAL;
    }
    if (!*p->assignee || !signer || strcmp(signer, p->assignee) != 0) {
        snprintf(why, why_size, "only the read's assignee%s%s signs its report",
                 *p->assignee ? ", " : "", p->assignee);
        return TR_EDENIED;
    }
    const char *state = flow_read_state_name(p->read_state);
    switch (kind) {
    case REP_PRELIMINARY:
        if (p->has_final) {
            snprintf(why, why_size, "the report is final: add an addendum");
            return TR_EEXIST;
        }
        if (p->has_preliminary) {
            snprintf(why, why_size, "a preliminary report is signed already: sign the final");
            return TR_EEXIST;
        }
        if (p->read_state != FLOW_READ_ASSIGNED && p->read_state != FLOW_READ_CLAIMED) {
            snprintf(why, why_size, "the read is %s", state);
            return TR_EEXIST;
        }
        return 0;
    case REP_FINAL:
        if (p->has_final) {
            snprintf(why, why_size, "the report is final already: add an addendum");
            return TR_EEXIST;
        }
        if (p->read_state != FLOW_READ_ASSIGNED && p->read_state != FLOW_READ_CLAIMED &&
            p->read_state != FLOW_READ_PRELIMINARY) {
            snprintf(why, why_size, "the read is %s", state);
            return TR_EEXIST;
        }
        return 0;
    default:
        if (!p->has_final || p->read_state != FLOW_READ_FINAL) {
            snprintf(why, why_size, "an addendum follows the signed final report");
            return TR_EEXIST;
        }
        return 0;
    }
}

int rep_draft_check(const struct rep_progress *p, const char *author, char *why, size_t why_size)
{
    if (!*p->assignee || !author || strcmp(author, p->assignee) != 0) {
        snprintf(why, why_size, "only the read's assignee%s%s writes its report",
                 *p->assignee ? ", " : "", p->assignee);
        return TR_EDENIED;
    }
    if (p->has_final) {
        snprintf(why, why_size, "the report is final: add an addendum");
        return TR_EEXIST;
    }
    if (p->read_state != FLOW_READ_ASSIGNED && p->read_state != FLOW_READ_CLAIMED &&
        p->read_state != FLOW_READ_PRELIMINARY) {
        snprintf(why, why_size, "the read is %s", flow_read_state_name(p->read_state));
        return TR_EEXIST;
    }
    return 0;
}

static int invalid(struct rep_invalid *bad, const char *field, const char *why)
{
    snprintf(bad->field, sizeof(bad->field), "%s", field);
    snprintf(bad->why, sizeof(bad->why), "%s", why);
    return TR_EINVAL;
}

/* Text a report may hold: valid UTF-8 (jansson checked that), no control characters but TAB
 * and line ends, within the size cap. */
static bool valid_text(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n > max)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F)
            return false;
    }
    return true;
}

static int critical_validate(json_t *c, struct rep_invalid *bad)
{
    if (json_is_null(c))
        return 0;
    if (!json_is_object(c))
        return invalid(bad, "critical",
                       "critical is {\"category\": 1-3, \"finding\": text} or "
                       "null");
    json_t *cat = json_object_get(c, "category");
    if (!json_is_integer(cat) || json_integer_value(cat) < 1 || json_integer_value(cat) > 3)
        return invalid(bad, "critical.category",
                       "the ACR category: 1 (minutes), 2 (hours) or "
                       "3 (days)");
    json_t *finding = json_object_get(c, "finding");
    if (finding && (!json_is_string(finding) || !valid_text(json_string_value(finding), 4096)))
        return invalid(bad, "critical.finding",
                       "the critical finding in words (up to 4096 "
                       "characters)");
    return 0;
}

int rep_draft_validate(json_t *body, struct rep_invalid *bad)
{
    if (!json_is_object(body))
        return invalid(bad, "", "a report is a JSON object");
    const char *key;
    json_t *v;
    json_object_foreach(body, key, v)
    {
        if (strcmp(key, "template") && strcmp(key, "sections") && strcmp(key, "critical") &&
            strcmp(key, "reader")) {
            char field[96];
            snprintf(field, sizeof(field), "%.80s", key);
            return invalid(bad, field, "unknown member (template, sections, critical)");
        }
    }
    json_t *t = json_object_get(body, "template");
    if (t && (!json_is_string(t) || !rep_template_find(json_string_value(t))))
        return invalid(bad, "template", "no such template (GET /api/v1/templates)");
    json_t *sections = json_object_get(body, "sections");
    if (sections && !json_is_object(sections))
        return invalid(bad, "sections",
                       "sections is an object: clinical_information, "
                       "technique, comparison, findings, impression");
    json_object_foreach(sections, key, v)
    {
        char field[96];
        snprintf(field, sizeof(field), "sections.%.80s", key);
        if (rep_section_parse(key) < 0)
            return invalid(bad, field,
                           "no such section (clinical_information, technique, "
                           "comparison, findings, impression)");
        if (!json_is_string(v) || !valid_text(json_string_value(v), MAX_SECTION_TEXT))
            return invalid(bad, field, "text of up to 65536 bytes without control characters");
    }
    json_t *c = json_object_get(body, "critical");
    return c ? critical_validate(c, bad) : 0;
}

/* ---- documents ---------------------------------------------------------------------------- */

void rep_doc_release(struct rep_doc *d)
{
    for (int i = 0; i < REP_SECTION_COUNT; i++) {
        tr_free(d->sections[i]);
        d->sections[i] = NULL;
    }
    for (unsigned i = 0; i < d->naddenda; i++)
        tr_free(d->addenda[i].text);
    d->naddenda = 0;
    tr_free(d->critical_finding);
    d->critical_finding = NULL;
}

char rep_doc_status(const struct rep_doc *d)
{
    return d->kind == REP_PRELIMINARY ? 'P' : d->kind == REP_ADDENDUM ? 'C' : 'F';
}

static void upper(struct tr_buf *out, const char *s)
{
    for (; *s; s++)
        tr_buf_addc(out, (*s >= 'a' && *s <= 'z') ? (char)(*s - 32) : *s);
}

int rep_doc_text(const struct rep_doc *d, struct tr_buf *out)
{
    if (*d->description)
        tr_buf_addf(out, "%s\n\n", d->description);
    for (int i = 0; i < REP_SECTION_COUNT; i++) {
        if (!d->sections[i] || !*d->sections[i])
            continue;
        upper(out, rep_section_titles[i]);
        tr_buf_addf(out, ":\n%s\n\n", d->sections[i]);
    }
    if (d->critical_category) {
        tr_buf_addf(out, "CRITICAL RESULT (ACR category %d)%s%s\n\n", d->critical_category,
                    d->critical_finding && *d->critical_finding ? ": " : "",
                    d->critical_finding ? d->critical_finding : "");
    }
    for (unsigned i = 0; i < d->naddenda; i++) {
        char when[32];
        rep_iso_time(d->addenda[i].signed_at, when);
        tr_buf_addf(out, "ADDENDUM %u (signed by %s on %s):\n%s\n\n", i + 1,
                    d->addenda[i].signer_name, when, d->addenda[i].text);
    }
    char when[32];
    rep_iso_time(d->kind == REP_ADDENDUM ? d->final_signed_at : d->signed_at, when);
    return tr_buf_addf(out, "%s report electronically signed by %s on %s.\n",
                       d->kind == REP_PRELIMINARY ? "Preliminary" : "Final", d->signer_name, when);
}

/* The study as the archive has it (real identifiers: the hospital gets its own data back). */
struct study_ctx {
    struct rep_doc *d;
    bool found;
};

static int study_emit(void *ctx, const struct dcm_dataset *m)
{
    struct study_ctx *c = ctx;
    struct rep_doc *d = c->d;
    dcm_dataset_get_string(m, 0x00100010, 0, d->patient_name, sizeof(d->patient_name));
    dcm_dataset_get_string(m, 0x00100021, 0, d->issuer, sizeof(d->issuer));
    dcm_dataset_get_string(m, 0x00100030, 0, d->birth_date, sizeof(d->birth_date));
    dcm_dataset_get_string(m, 0x00100040, 0, d->sex, sizeof(d->sex));
    dcm_dataset_get_string(m, 0x00080020, 0, d->study_date, sizeof(d->study_date));
    dcm_dataset_get_string(m, 0x00080030, 0, d->study_time, sizeof(d->study_time));
    dcm_dataset_get_string(m, 0x00080090, 0, d->referring, sizeof(d->referring));
    dcm_dataset_get_string(m, 0x00200010, 0, d->study_id, sizeof(d->study_id));
    int64_t n;
    if (dcm_dataset_get_int(m, 0x00201206, 0, &n) == 0)
        d->series_count = n;
    if (dcm_dataset_get_int(m, 0x00201208, 0, &n) == 0)
        d->instance_count = n;
    c->found = true;
    return -1;
}

static int study_facts(struct rep *r, struct rep_doc *d, struct tr_error *err)
{
    struct dcm_dataset *keys = dcm_dataset_new();
    if (!keys)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    dcm_dataset_set_uid(keys, DCM_TAG_StudyInstanceUID, d->study_uid);
    static const uint32_t ret[] = {0x00100010, 0x00100021, 0x00100030, 0x00100040, 0x00080020,
                                   0x00080030, 0x00080090, 0x00200010, 0x00201206, 0x00201208};
    for (size_t i = 0; i < TR_ARRAY_SIZE(ret); i++)
        dcm_dataset_set_empty(keys, ret[i], dcm_dict_vr(ret[i]));
    const char *sites[2] = {d->site, NULL};
    struct arc_query q = {.level = ARC_LEVEL_STUDY, .keys = keys, .sites = sites, .limit = 1};
    struct study_ctx c = {d, false};
    int rc = arc_find(r->cfg.archive, &q, study_emit, &c, err);
    dcm_dataset_free(keys);
    return rc < 0 ? rc : 0;
}

/* The study's modalities without those of documents about it (our SR and PDF, key objects,
 * presentation states), which arrive in the study once a report is delivered. */
static void exam_modalities(const char *all, char *out, size_t size)
{
    static const char *const documents[] = {"SR", "DOC", "KO", "PR"};
    char copy[64];
    snprintf(copy, sizeof(copy), "%s", all);
    out[0] = '\0';
    char *save = NULL;
    for (char *m = strtok_r(copy, "\\", &save); m; m = strtok_r(NULL, "\\", &save)) {
        bool document = false;
        for (size_t i = 0; i < TR_ARRAY_SIZE(documents); i++)
            document = document || strcmp(m, documents[i]) == 0;
        if (!document)
            snprintf(out + strlen(out), size - strlen(out), "%s%s", *out ? "\\" : "", m);
    }
    if (!*out)
        snprintf(out, size, "%s", all);
}

static char *dup_text(struct db_stmt *st, int col)
{
    return db_column_is_null(st, col) ? NULL : tr_strdup(db_column_text(st, col));
}

/* Sections JSON -> texts. */
static void sections_from_json(const char *text, char *out[REP_SECTION_COUNT])
{
    json_t *j = json_loads(text ? text : "{}", 0, NULL);
    for (int i = 0; i < REP_SECTION_COUNT; i++) {
        const char *s = json_string_value(json_object_get(j, rep_section_keys[i]));
        out[i] = s ? tr_strdup(s) : NULL;
    }
    json_decref(j);
}

int rep_doc_load(struct rep *r, struct db *db, int64_t version_id, struct rep_doc *d,
                 struct tr_error *err)
{
    memset(d, 0, sizeof(*d));
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT read_id, seq, kind, template, sections, critical_category, "
                        "critical_finding, signed_by, signer_name, signed_at, sr_uid, "
                        "pdf_uid FROM rep_versions WHERE id = $1 AND signed_at IS NOT NULL",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, version_id);
    rc = db_step(st, err);
    char *sections_text = NULL;
    if (rc == 1) {
        d->version_id = version_id;
        d->read_id = db_column_int64(st, 0);
        d->seq = (int)db_column_int64(st, 1);
        d->kind = rep_kind_parse(db_column_text(st, 2));
        snprintf(d->template_id, sizeof(d->template_id), "%s", db_column_text(st, 3));
        sections_text = tr_strdup(db_column_text(st, 4));
        d->critical_category = (int)db_column_int64(st, 5);
        d->critical_finding = dup_text(st, 6);
        snprintf(d->signer, sizeof(d->signer), "%s", db_column_text(st, 7));
        snprintf(d->signer_name, sizeof(d->signer_name), "%s", db_column_text(st, 8));
        d->signed_at = db_column_int64(st, 9);
        snprintf(d->sr_uid, sizeof(d->sr_uid), "%s", db_column_text(st, 10));
        snprintf(d->pdf_uid, sizeof(d->pdf_uid), "%s", db_column_text(st, 11));
    }
    db_reset(st);
    if (rc <= 0) {
        tr_free(sections_text);
        return rc < 0 ? rc
                      : tr_error_set(err, TR_ENOTFOUND, "no signed report version %" PRId64,
                                     version_id);
    }
    if (d->kind < 0)
        d->kind = REP_FINAL;
    if (d->kind != REP_ADDENDUM) {
        sections_from_json(sections_text, d->sections);
    } else {
        /* An addendum carries the final report and every addendum up to this one. */
        if ((rc = db_prepare(db,
                             "SELECT id, kind, sections, signed_by, signer_name, signed_at, "
                             "critical_category, critical_finding FROM rep_versions WHERE "
                             "read_id = $1 AND signed_at IS NOT NULL AND kind IN ('final', "
                             "'addendum') AND seq <= $2 ORDER BY seq",
                             &st, err)) == 0) {
            db_bind_int64(st, 1, d->read_id);
            db_bind_int64(st, 2, d->seq);
            while ((rc = db_step(st, err)) == 1) {
                if (strcmp(db_column_text(st, 1), "final") == 0) {
                    for (int i = 0; i < REP_SECTION_COUNT; i++)
                        tr_free(d->sections[i]);
                    sections_from_json(db_column_text(st, 2), d->sections);
                    d->final_signed_at = db_column_int64(st, 5);
                    if (!d->critical_category && db_column_int64(st, 6)) {
                        d->critical_category = (int)db_column_int64(st, 6);
                        tr_free(d->critical_finding);
                        d->critical_finding = dup_text(st, 7);
                    }
                } else if (d->naddenda < MAX_ADDENDA) {
                    json_t *j = json_loads(db_column_text(st, 2), 0, NULL);
                    const char *t = json_string_value(json_object_get(j, "addendum"));
                    struct rep_addendum *a = &d->addenda[d->naddenda++];
                    a->text = tr_strdup(t ? t : "");
                    snprintf(a->signer, sizeof(a->signer), "%s", db_column_text(st, 3));
                    snprintf(a->signer_name, sizeof(a->signer_name), "%s", db_column_text(st, 4));
                    a->signed_at = db_column_int64(st, 5);
                    json_decref(j);
                }
            }
            db_reset(st);
        }
        if (rc < 0)
            goto fail;
    }
    tr_free(sections_text);
    sections_text = NULL;
    /* The version this one follows (its SR is the predecessor document). */
    if ((rc = db_prepare(db,
                         "SELECT sr_uid FROM rep_versions WHERE read_id = $1 AND seq < $2 "
                         "AND signed_at IS NOT NULL ORDER BY seq DESC LIMIT 1",
                         &st, err)) < 0)
        goto fail;
    db_bind_int64(st, 1, d->read_id);
    db_bind_int64(st, 2, d->seq);
    if ((rc = db_step(st, err)) == 1)
        snprintf(d->predecessor_sr, sizeof(d->predecessor_sr), "%s", db_column_text(st, 0));
    db_reset(st);
    if (rc < 0)
        goto fail;
    if ((rc = db_prepare(db,
                         "SELECT site, sr_series, pdf_series FROM rep_reads WHERE read_id = "
                         "$1",
                         &st, err)) < 0)
        goto fail;
    db_bind_int64(st, 1, d->read_id);
    if ((rc = db_step(st, err)) == 1) {
        snprintf(d->sr_series, sizeof(d->sr_series), "%s", db_column_text(st, 1));
        snprintf(d->pdf_series, sizeof(d->pdf_series), "%s", db_column_text(st, 2));
    }
    db_reset(st);
    if (rc < 0)
        goto fail;
    snprintf(d->predecessor_sr_series, sizeof(d->predecessor_sr_series), "%s", d->sr_series);
    struct flow_read_info info;
    if ((rc = flow_read_info(db, d->read_id, &info, err)) < 0)
        goto fail;
    snprintf(d->site, sizeof(d->site), "%s", info.site);
    snprintf(d->study_uid, sizeof(d->study_uid), "%s", info.study_uid);
    snprintf(d->accession, sizeof(d->accession), "%s", info.accession);
    snprintf(d->patient_id, sizeof(d->patient_id), "%s", info.patient_id);
    exam_modalities(info.modality, d->modality, sizeof(d->modality));
    snprintf(d->body_part, sizeof(d->body_part), "%s", info.body_part);
    snprintf(d->description, sizeof(d->description), "%s", info.description);
    d->priority = info.priority;
    snprintf(d->organization, sizeof(d->organization), "%s", r->cfg.organization);
    json_t *site = flow_document(db, "site", info.site);
    const char *name = json_string_value(json_object_get(site, "name"));
    snprintf(d->site_name, sizeof(d->site_name), "%s", name ? name : info.site);
    json_decref(site);
    if ((rc = study_facts(r, d, err)) < 0)
        goto fail;
    return 0;
fail:
    tr_free(sections_text);
    rep_doc_release(d);
    return rc;
}

/* ---- versions in the database ------------------------------------------------------------- */

static int progress_of(struct db *db, const struct flow_read_info *info, struct rep_progress *p,
                       struct tr_error *err)
{
    memset(p, 0, sizeof(*p));
    p->read_state = info->state;
    snprintf(p->assignee, sizeof(p->assignee), "%s", info->assignee);
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT kind, CASE WHEN signed_at IS NULL THEN 1 ELSE 0 END FROM "
                        "rep_versions WHERE read_id = $1",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, info->id);
    while ((rc = db_step(st, err)) == 1) {
        const char *k = db_column_text(st, 0);
        if (db_column_int64(st, 1))
            p->has_draft = true;
        else if (strcmp(k, "preliminary") == 0)
            p->has_preliminary = true;
        else if (strcmp(k, "final") == 0)
            p->has_final = true;
    }
    db_reset(st);
    return rc < 0 ? rc : 0;
}

/* The series our SR and PDF objects of a read go into (made once per read). */
static int ensure_read_row(struct db *db, const struct flow_read_info *info, int64_t now,
                           struct tr_error *err)
{
    char sr[DCM_UID_MAX + 1], pdf[DCM_UID_MAX + 1];
    dcm_uid_generate(sr);
    dcm_uid_generate(pdf);
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "INSERT INTO rep_reads (read_id, site, sr_series, pdf_series, "
                        "created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, info->id);
    db_bind_text(st, 2, info->site);
    db_bind_text(st, 3, sr);
    db_bind_text(st, 4, pdf);
    db_bind_int64(st, 5, now);
    rc = db_step(st, err);
    db_reset(st);
    return rc < 0 ? rc : 0;
}

static int next_seq(struct db *db, int64_t read_id, int *seq, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT COALESCE(MAX(seq), 0) FROM rep_versions WHERE read_id = $1",
                        &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, read_id);
    rc = db_step(st, err);
    *seq = rc == 1 ? (int)db_column_int64(st, 0) + 1 : 1;
    db_reset(st);
    return rc < 0 ? rc : 0;
}

/* The name a reader signs with. */
static void reader_name(struct db *db, const char *reader, char *out, size_t size)
{
    json_t *doc = flow_document(db, "reader", reader);
    const char *name = json_string_value(json_object_get(doc, "name"));
    snprintf(out, size, "%s", name && *name ? name : reader);
    json_decref(doc);
}

/* A version row as the API shows it. */
#define VERSION_COLUMNS                                                                            \
    "id, read_id, seq, kind, template, sections, critical_category, critical_finding, author, "    \
    "created_at, updated_at, signed_by, signer_name, signed_at, sr_uid, pdf_uid"

static json_t *version_json(struct db_stmt *st)
{
    int64_t id = db_column_int64(st, 0);
    bool signed_ = !db_column_is_null(st, 13);
    json_t *sections = json_loads(db_column_text(st, 5), 0, NULL);
    json_t *critical = db_column_int64(st, 6)
                           ? json_pack("{s:I,s:s}", "category", (json_int_t)db_column_int64(st, 6),
                                       "finding", db_column_text(st, 7))
                           : json_null();
    json_t *j = json_pack("{s:I,s:I,s:s,s:b,s:s,s:o,s:o,s:s,s:o,s:o}", "id", (json_int_t)id,
                          "version", (json_int_t)db_column_int64(st, 2), "kind",
                          signed_ ? db_column_text(st, 3) : "draft", "signed", signed_, "template",
                          db_column_text(st, 4), "sections", sections ? sections : json_object(),
                          "critical", critical, "author", db_column_text(st, 8), "created_at",
                          rep_iso_json(db_column_int64(st, 9)), "updated_at",
                          rep_iso_json(db_column_int64(st, 10)));
    if (signed_) {
        json_object_set_new(j, "signed_by", json_string(db_column_text(st, 11)));
        json_object_set_new(j, "signer_name", json_string(db_column_text(st, 12)));
        json_object_set_new(j, "signed_at", rep_iso_json(db_column_int64(st, 13)));
        json_object_set_new(j, "sr_sop_instance_uid", json_string(db_column_text(st, 14)));
        json_object_set_new(j, "pdf_sop_instance_uid", json_string(db_column_text(st, 15)));
        char link[64];
        snprintf(link, sizeof(link), "/api/v1/reports/%" PRId64 "/pdf", id);
        json_object_set_new(j, "pdf", json_string(link));
    }
    return j;
}

int rep_versions_json(struct rep *r, struct db *db, int64_t read_id, bool drafts, json_t **out,
                      struct tr_error *err)
{
    (void)r;
    struct db_stmt *st;
    int rc = db_prepare(db,
                        "SELECT " VERSION_COLUMNS " FROM rep_versions WHERE read_id = $1 "
                        "ORDER BY seq",
                        &st, err);
    if (rc)
        return rc;
    json_t *list = json_array();
    db_bind_int64(st, 1, read_id);
    while ((rc = db_step(st, err)) == 1) {
        if (!drafts && db_column_is_null(st, 13))
            continue;
        json_array_append_new(list, version_json(st));
    }
    db_reset(st);
    /* Each signed version's deliveries. */
    size_t i;
    json_t *v;
    json_array_foreach(list, i, v)
    {
        if (!json_is_true(json_object_get(v, "signed")))
            continue;
        json_t *deliveries = json_array();
        if (db_prepare(db,
                       "SELECT " REP_OUTBOX_COLUMNS " FROM rep_outbox WHERE version_id = $1 "
                       "ORDER BY id",
                       &st, NULL) == 0) {
            db_bind_int64(st, 1, json_integer_value(json_object_get(v, "id")));
            while (db_step(st, NULL) == 1)
                json_array_append_new(deliveries, rep_outbox_json(st));
            db_reset(st);
        }
        json_object_set_new(v, "deliveries", deliveries);
    }
    if (rc < 0) {
        json_decref(list);
        return rc;
    }
    *out = list;
    return 0;
}

static int version_row(struct db *db, int64_t id, json_t **out, struct tr_error *err)
{
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT " VERSION_COLUMNS " FROM rep_versions WHERE id = $1", &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, id);
    rc = db_step(st, err);
    if (rc == 1)
        *out = version_json(st);
    db_reset(st);
    return rc == 1 ? 0 : rc == 0 ? TR_ENOTFOUND : rc;
}

/* Start a transaction and load the read with its report progress. */
static int begin_read(struct db *db, int64_t read_id, struct flow_read_info *info,
                      struct rep_progress *p, struct tr_error *err)
{
    int rc = db_begin(db, err);
    if (rc)
        return rc;
    if ((rc = flow_read_info(db, read_id, info, err)) == 0)
        rc = progress_of(db, info, p, err);
    if (rc)
        db_rollback(db);
    return rc;
}

int rep_draft_save(struct rep *r, struct db *db, int64_t read_id, const char *author, json_t *body,
                   json_t **out, struct rep_invalid *bad, struct tr_error *err)
{
    (void)r;
    int rc = rep_draft_validate(body, bad);
    if (rc)
        return rc;
    int64_t now = rep_now_ms();
    struct flow_read_info info;
    struct rep_progress p;
    if ((rc = begin_read(db, read_id, &info, &p, err)))
        return rc;
    if ((rc = rep_draft_check(&p, author, bad->why, sizeof(bad->why))))
        goto fail;
    if ((rc = ensure_read_row(db, &info, now, err)))
        goto fail;
    /* The starting point: the draft, else the last signed version, else the template. */
    struct db_stmt *st;
    int64_t draft_id = 0;
    char template_id[32] = "";
    json_t *sections = NULL;
    int category = 0;
    char *finding = NULL;
    if ((rc = db_prepare(db,
                         "SELECT id, template, sections, critical_category, critical_finding, "
                         "CASE WHEN signed_at IS NULL THEN 1 ELSE 0 END FROM rep_versions WHERE "
                         "read_id = $1 AND kind <> "
                         "'addendum' ORDER BY seq DESC LIMIT 1",
                         &st, err)))
        goto fail;
    db_bind_int64(st, 1, read_id);
    if ((rc = db_step(st, err)) == 1) {
        if (db_column_int64(st, 5))
            draft_id = db_column_int64(st, 0);
        snprintf(template_id, sizeof(template_id), "%s", db_column_text(st, 1));
        sections = json_loads(db_column_text(st, 2), 0, NULL);
        category = (int)db_column_int64(st, 3);
        finding = tr_strdup(db_column_text(st, 4));
    }
    db_reset(st);
    if (rc < 0)
        goto fail_free;
    const char *wanted = json_string_value(json_object_get(body, "template"));
    const struct rep_template *t =
        wanted         ? rep_template_find(wanted)
        : *template_id ? rep_template_find(template_id)
                       : rep_template_choose(info.modality, info.description, info.body_part);
    if (!t)
        t = rep_template_choose(info.modality, info.description, info.body_part);
    if (!sections) {
        json_decref(sections);
        sections = json_object();
        for (int i = 0; i < REP_SECTION_COUNT; i++)
            json_object_set_new(sections, rep_section_keys[i], json_string(t->text[i]));
    }
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(body, "sections"), key, v)
        json_object_set(sections, key, v);
    json_t *c = json_object_get(body, "critical");
    if (c) {
        category = json_is_object(c) ? (int)json_integer_value(json_object_get(c, "category")) : 0;
        const char *fnd = json_string_value(json_object_get(c, "finding"));
        tr_free(finding);
        finding = tr_strdup(category && fnd ? fnd : "");
    }
    char *text = json_dumps(sections, JSON_COMPACT | JSON_SORT_KEYS);
    if (draft_id) {
        rc = db_prepare(db,
                        "UPDATE rep_versions SET template = $2, sections = $3, "
                        "critical_category = $4, critical_finding = $5, updated_at = $6, "
                        "author = $7 WHERE id = $1 AND signed_at IS NULL",
                        &st, err);
        if (rc == 0) {
            db_bind_int64(st, 1, draft_id);
            db_bind_text(st, 2, t->id);
            db_bind_text(st, 3, text);
            db_bind_int64(st, 4, category);
            db_bind_text(st, 5, finding ? finding : "");
            db_bind_int64(st, 6, now);
            db_bind_text(st, 7, author);
            rc = db_step(st, err);
            bool changed = rc >= 0 && db_changes(st) == 1;
            db_reset(st);
            if (rc >= 0 && !changed) {
                snprintf(bad->why, sizeof(bad->why), "the draft was signed meanwhile");
                rc = TR_EEXIST;
            }
        }
    } else {
        int seq = 1;
        rc = next_seq(db, read_id, &seq, err);
        if (rc == 0)
            rc = db_prepare(db,
                            "INSERT INTO rep_versions (read_id, seq, kind, template, sections, "
                            "critical_category, critical_finding, author, created_at, "
                            "updated_at) VALUES ($1, $2, 'draft', $3, $4, $5, $6, $7, $8, $8) "
                            "RETURNING id",
                            &st, err);
        if (rc == 0) {
            db_bind_int64(st, 1, read_id);
            db_bind_int64(st, 2, seq);
            db_bind_text(st, 3, t->id);
            db_bind_text(st, 4, text);
            db_bind_int64(st, 5, category);
            db_bind_text(st, 6, finding ? finding : "");
            db_bind_text(st, 7, author);
            db_bind_int64(st, 8, now);
            rc = db_step(st, err);
            if (rc == 1)
                draft_id = db_column_int64(st, 0);
            db_reset(st);
            rc = rc < 0 ? rc : 0;
        }
        if (rc == 0) {
            json_t *d = json_pack("{s:I,s:s}", "version", (json_int_t)seq, "template", t->id);
            rc = flow_read_note(db, read_id, "report_draft", author, d, now, err);
            json_decref(d);
        }
    }
    free(text);
    if (rc)
        goto fail_free;
    if ((rc = db_commit(db, err)))
        goto out_free;
    rc = version_row(db, draft_id, out, err);
    goto out_free;
fail_free:
    db_rollback(db);
out_free:
    json_decref(sections);
    tr_free(finding);
    return rc;
fail:
    db_rollback(db);
    return rc;
}

/* Impression required to sign. */
static int signable(const char *sections_text, struct rep_invalid *bad)
{
    json_t *j = json_loads(sections_text, 0, NULL);
    const char *imp = json_string_value(json_object_get(j, "impression"));
    bool ok = imp && strspn(imp, " \t\r\n") < strlen(imp);
    json_decref(j);
    return ok ? 0 : invalid(bad, "sections.impression", "a report is signed with an impression");
}

/* Open a critical communication record for a signed version that flags one: for an addendum
 * always (a new finding), for a preliminary or final when the read has none yet (the flag on
 * the draft usually came with POST /reads/{id}/critical, which opened it). */
static int critical_for_version(struct rep *r, struct db *db, const struct flow_read_info *info,
                                int category, const char *finding, const char *actor, int64_t now,
                                bool always, struct tr_error *err)
{
    if (!category)
        return 0;
    int64_t id;
    if (always)
        return rep_critical_open(r, db, info->id, info->site, category, finding, actor, now, &id,
                                 err);
    struct db_stmt *st;
    int rc = db_prepare(db, "SELECT COUNT(*) FROM rep_critical WHERE read_id = $1", &st, err);
    if (rc)
        return rc;
    db_bind_int64(st, 1, info->id);
    rc = db_step(st, err);
    int64_t n = rc == 1 ? db_column_int64(st, 0) : 0;
    db_reset(st);
    if (rc < 0 || n > 0)
        return rc < 0 ? rc : 0;
    return rep_critical_open(r, db, info->id, info->site, category, finding, actor, now, &id, err);
}

int rep_sign(struct rep *r, struct db *db, int64_t read_id, const char *signer, int kind,
             json_t **out, struct rep_invalid *bad, struct tr_error *err)
{
    int64_t now = rep_now_ms();
    struct flow_read_info info;
    struct rep_progress p;
    int rc = begin_read(db, read_id, &info, &p, err);
    if (rc)
        return rc;
    if ((rc = rep_sign_check(&p, kind, signer, bad->why, sizeof(bad->why))))
        goto fail;
    if (kind == REP_ADDENDUM) {
        rc = invalid(bad, "kind", "addenda are POSTed to /api/v1/reads/{id}/addenda");
        goto fail;
    }
    if ((rc = ensure_read_row(db, &info, now, err)))
        goto fail;
    struct db_stmt *st;
    int64_t version = 0;
    char *sections = NULL;
    int category = 0;
    char *finding = NULL;
    if ((rc = db_prepare(db,
                         "SELECT id, sections, critical_category, critical_finding FROM "
                         "rep_versions WHERE read_id = $1 AND signed_at IS NULL",
                         &st, err)))
        goto fail;
    db_bind_int64(st, 1, read_id);
    if ((rc = db_step(st, err)) == 1) {
        version = db_column_int64(st, 0);
        sections = tr_strdup(db_column_text(st, 1));
        category = (int)db_column_int64(st, 2);
        finding = tr_strdup(db_column_text(st, 3));
    }
    db_reset(st);
    if (rc < 0)
        goto fail_free;
    if (!version && kind == REP_FINAL && p.has_preliminary) {
        /* The final as the preliminary was: a new version with the same text. */
        int seq = 1;
        if ((rc = next_seq(db, read_id, &seq, err)))
            goto fail_free;
        if ((rc = db_prepare(db,
                             "INSERT INTO rep_versions (read_id, seq, kind, template, "
                             "sections, critical_category, critical_finding, author, "
                             "created_at, updated_at) SELECT read_id, $2, 'draft', template, "
                             "sections, critical_category, critical_finding, $3, $4, $4 FROM "
                             "rep_versions WHERE read_id = $1 AND kind = 'preliminary' AND "
                             "signed_at IS NOT NULL RETURNING id, sections, "
                             "critical_category, critical_finding",
                             &st, err)))
            goto fail_free;
        db_bind_int64(st, 1, read_id);
        db_bind_int64(st, 2, seq);
        db_bind_text(st, 3, signer);
        db_bind_int64(st, 4, now);
        if ((rc = db_step(st, err)) == 1) {
            version = db_column_int64(st, 0);
            sections = tr_strdup(db_column_text(st, 1));
            category = (int)db_column_int64(st, 2);
            finding = tr_strdup(db_column_text(st, 3));
        }
        db_reset(st);
        if (rc < 0)
            goto fail_free;
    }
    if (!version) {
        snprintf(bad->why, sizeof(bad->why), "nothing to sign: save a draft first");
        rc = TR_EEXIST;
        goto fail_free;
    }
    if ((rc = signable(sections, bad)))
        goto fail_free;
    char name[128], sr[DCM_UID_MAX + 1], pdf[DCM_UID_MAX + 1];
    reader_name(db, signer, name, sizeof(name));
    dcm_uid_generate(sr);
    dcm_uid_generate(pdf);
    if ((rc = db_prepare(db,
                         "UPDATE rep_versions SET kind = $2, signed_by = $3, signer_name = "
                         "$4, signed_at = $5, updated_at = $5, sr_uid = $6, pdf_uid = $7 "
                         "WHERE id = $1 AND signed_at IS NULL",
                         &st, err)))
        goto fail_free;
    db_bind_int64(st, 1, version);
    db_bind_text(st, 2, rep_kind_names[kind]);
    db_bind_text(st, 3, signer);
    db_bind_text(st, 4, name);
    db_bind_int64(st, 5, now);
    db_bind_text(st, 6, sr);
    db_bind_text(st, 7, pdf);
    rc = db_step(st, err);
    bool changed = rc >= 0 && db_changes(st) == 1;
    db_reset(st);
    if (rc >= 0 && !changed) {
        snprintf(bad->why, sizeof(bad->why), "the draft was signed meanwhile");
        rc = TR_EEXIST;
    }
    if (rc < 0)
        goto fail_free;
    json_t *detail =
        json_pack("{s:I,s:s}", "report_version", (json_int_t)version, "kind", rep_kind_names[kind]);
    struct tr_error serr = TR_ERROR_INIT;
    rc = flow_read_set_report_state(db, read_id, signer,
                                    kind == REP_FINAL ? FLOW_READ_FINAL : FLOW_READ_PRELIMINARY,
                                    detail, now, &serr);
    json_decref(detail);
    if (rc == TR_EEXIST) {
        snprintf(bad->why, sizeof(bad->why), "%.250s", serr.message);
        goto fail_free;
    }
    if (rc < 0) {
        tr_error_set(err, rc, "%s", serr.message);
        goto fail_free;
    }
    if ((rc = critical_for_version(r, db, &info, category, finding, signer, now, false, err)) < 0)
        goto fail_free;
    if ((rc = rep_outbox_queue(r, db, read_id, version, info.site, now, err)) < 0)
        goto fail_free;
    if ((rc = db_commit(db, err)))
        goto out_free;
    rep_log(r, 2, "read %" PRId64 ": %s report (version %" PRId64 ") signed by %s", read_id,
            rep_kind_names[kind], version, signer);
    rep_wake(r);
    rc = version_row(db, version, out, err);
    goto out_free;
fail_free:
    db_rollback(db);
out_free:
    tr_free(sections);
    tr_free(finding);
    return rc;
fail:
    db_rollback(db);
    return rc;
}

int rep_addendum(struct rep *r, struct db *db, int64_t read_id, const char *signer, json_t *body,
                 json_t **out, struct rep_invalid *bad, struct tr_error *err)
{
    const char *text = json_string_value(json_object_get(body, "text"));
    if (!text || strspn(text, " \t\r\n") == strlen(text) || !valid_text(text, MAX_SECTION_TEXT))
        return invalid(bad, "text", "the addendum's text (up to 65536 bytes)");
    json_t *c = json_object_get(body, "critical");
    int rc = c ? critical_validate(c, bad) : 0;
    if (rc)
        return rc;
    int category = json_is_object(c) ? (int)json_integer_value(json_object_get(c, "category")) : 0;
    const char *finding =
        json_is_object(c) ? json_string_value(json_object_get(c, "finding")) : NULL;
    int64_t now = rep_now_ms();
    struct flow_read_info info;
    struct rep_progress p;
    if ((rc = begin_read(db, read_id, &info, &p, err)))
        return rc;
    if ((rc = rep_sign_check(&p, REP_ADDENDUM, signer, bad->why, sizeof(bad->why))))
        goto fail;
    struct db_stmt *st;
    int64_t count = 0;
    if ((rc = db_prepare(db,
                         "SELECT COUNT(*) FROM rep_versions WHERE read_id = $1 AND kind = "
                         "'addendum'",
                         &st, err)))
        goto fail;
    db_bind_int64(st, 1, read_id);
    if ((rc = db_step(st, err)) == 1)
        count = db_column_int64(st, 0);
    db_reset(st);
    if (rc < 0)
        goto fail;
    if (count >= MAX_ADDENDA) {
        snprintf(bad->why, sizeof(bad->why), "a report takes at most %d addenda", MAX_ADDENDA);
        rc = TR_EEXIST;
        goto fail;
    }
    int seq = 1;
    if ((rc = next_seq(db, read_id, &seq, err)))
        goto fail;
    char name[128], sr[DCM_UID_MAX + 1], pdf[DCM_UID_MAX + 1];
    reader_name(db, signer, name, sizeof(name));
    dcm_uid_generate(sr);
    dcm_uid_generate(pdf);
    json_t *sections = json_pack("{s:s}", "addendum", text);
    char *stext = json_dumps(sections, JSON_COMPACT);
    json_decref(sections);
    int64_t version = 0;
    rc = db_prepare(db,
                    "INSERT INTO rep_versions (read_id, seq, kind, template, sections, "
                    "critical_category, critical_finding, author, created_at, updated_at, "
                    "signed_by, signer_name, signed_at, sr_uid, pdf_uid) VALUES ($1, $2, "
                    "'addendum', '', $3, $4, $5, $6, $7, $7, $6, $8, $7, $9, $10) RETURNING id",
                    &st, err);
    if (rc == 0) {
        db_bind_int64(st, 1, read_id);
        db_bind_int64(st, 2, seq);
        db_bind_text(st, 3, stext);
        db_bind_int64(st, 4, category);
        db_bind_text(st, 5, finding ? finding : "");
        db_bind_text(st, 6, signer);
        db_bind_int64(st, 7, now);
        db_bind_text(st, 8, name);
        db_bind_text(st, 9, sr);
        db_bind_text(st, 10, pdf);
        rc = db_step(st, err);
        if (rc == 1)
            version = db_column_int64(st, 0);
        db_reset(st);
        rc = rc < 0 ? rc : 0;
    }
    free(stext);
    if (rc)
        goto fail;
    json_t *detail =
        json_pack("{s:I,s:I}", "report_version", (json_int_t)version, "version", (json_int_t)seq);
    rc = flow_read_note(db, read_id, "addendum", signer, detail, now, err);
    json_decref(detail);
    if (rc == 0)
        rc = critical_for_version(r, db, &info, category, finding, signer, now, true, err);
    if (rc == 0)
        rc = rep_outbox_queue(r, db, read_id, version, info.site, now, err);
    if (rc)
        goto fail;
    if ((rc = db_commit(db, err)))
        return rc;
    rep_log(r, 2, "read %" PRId64 ": addendum (version %" PRId64 ") signed by %s", read_id, version,
            signer);
    rep_wake(r);
    return version_row(db, version, out, err);
fail:
    db_rollback(db);
    return rc;
}
