/*
 * find.c - C-FIND and QIDO-RS answers: the index matches, and whatever the index does not keep
 * (return keys it has no column for, sequence matching) comes from the header of a
 * representative instance of each match.
 */
#include "common.h"
#include "archive_int.h"

#include <stdio.h>

struct find_ctx {
    struct arc_archive *a;
    const struct dcm_dataset *keys;
    const char *level_text;
    int (*emit)(void *emit_ctx, const struct dcm_dataset *match);
    int (*emit_site)(void *emit_ctx, const struct dcm_dataset *match, const char *site);
    void *emit_ctx;
    /* The header of the last representative object read (consecutive matches share it). */
    char header_key[300];
    struct dcm_dataset *header;
    bool stopped;
};

static const struct dcm_dataset *header_of(struct find_ctx *fc, const char *key)
{
    if (!*key)
        return NULL;
    if (fc->header && strcmp(fc->header_key, key) == 0)
        return fc->header;
    dcm_dataset_free(fc->header);
    fc->header = NULL;
    struct dcm_file *f;
    if (arc_read_header(fc->a->store, key, &f, NULL, NULL) < 0)
        return NULL;
    fc->header = dcm_file_take_dataset(f);
    dcm_file_free(f);
    /* Answers are UTF-8: convert the header once. */
    if (fc->header && dcm_dataset_convert_to_utf8(fc->header, NULL) < 0) {
        dcm_dataset_free(fc->header);
        fc->header = NULL;
    }
    snprintf(fc->header_key, sizeof(fc->header_key), "%s", key);
    return fc->header;
}

/* Sequence matching (PS3.4 C.2.2.2.6), the basics: a sequence key whose item has values
 * matches when some item of the stored sequence has those values (single value or wildcard,
 * nested sequences the same way). The index has no columns for sequences: this runs on the
 * representative instance's header, after the SQL matching. */
static bool item_matches(const struct dcm_dataset *want, const struct dcm_dataset *have,
                         unsigned depth);

/* Does a sequence key hold any value to match (not just empty return keys)? */
static bool has_values(const struct dcm_element *seq, unsigned depth)
{
    struct dcm_dataset *item = dcm_element_item(seq, 0);
    for (size_t i = 0; item && depth < 8 && i < dcm_dataset_count(item); i++) {
        const struct dcm_element *e = dcm_dataset_at(item, i);
        if (e->vr == DCM_VR_SQ ? has_values(e, depth + 1) : e->length > 0)
            return true;
    }
    return false;
}

static bool sequence_matches(const struct dcm_dataset *want_ds, const struct dcm_element *want,
                             const struct dcm_dataset *have, unsigned depth)
{
    (void)want_ds;
    struct dcm_dataset *wanted = dcm_element_item(want, 0);
    if (!wanted || !has_values(want, depth))
        return true; /* universal: only return keys (PS3.4 C.2.2.2.6) */
    const struct dcm_element *h = dcm_dataset_get(have, want->tag);
    for (unsigned i = 0; h && i < dcm_element_item_count(h); i++) {
        if (item_matches(wanted, dcm_element_item(h, i), depth + 1))
            return true;
    }
    return false;
}

static bool item_matches(const struct dcm_dataset *want, const struct dcm_dataset *have,
                         unsigned depth)
{
    if (depth > 8)
        return false;
    for (size_t i = 0; i < dcm_dataset_count(want); i++) {
        const struct dcm_element *w = dcm_dataset_at(want, i);
        if (w->vr == DCM_VR_SQ) {
            if (!sequence_matches(want, w, have, depth))
                return false;
            continue;
        }
        struct tr_buf wv, hv;
        tr_buf_init(&wv, 1 << 16);
        tr_buf_init(&hv, 1 << 16);
        bool ok = true;
        if (dcm_vr_is_string((enum dcm_vr)w->vr) &&
            dcm_element_get_string(want, w, DCM_ALL_VALUES, &wv) == 0 && wv.len &&
            strcmp(wv.data, "*") != 0) {
            const struct dcm_element *h = dcm_dataset_get(have, w->tag);
            ok = h && dcm_element_get_string(have, h, DCM_ALL_VALUES, &hv) == 0 &&
                 dcm_wildcard_match(wv.data, hv.data ? hv.data : "");
        }
        tr_buf_release(&wv);
        tr_buf_release(&hv);
        if (!ok)
            return false;
    }
    return true;
}

static int on_match(void *ctx, const struct arc_match *m)
{
    struct find_ctx *fc = ctx;
    struct dcm_dataset *r = m->attrs;
    /* Sequence keys with values filter here (see sequence_matches). */
    for (size_t i = 0; i < dcm_dataset_count(fc->keys); i++) {
        const struct dcm_element *k = dcm_dataset_at(fc->keys, i);
        if (k->vr != DCM_VR_SQ || !has_values(k, 0))
            continue;
        const struct dcm_dataset *hdr = header_of(fc, m->object_key);
        if (!hdr || !sequence_matches(fc->keys, k, hdr, 0))
            return 0; /* not a match: skip it */
    }
    if (fc->level_text)
        dcm_dataset_set_string(r, 0x00080052, DCM_VR_CS, fc->level_text);
    /* Every other requested key: from the representative instance's header, or empty. */
    const struct dcm_dataset *hdr = NULL;
    bool header_read = false;
    for (size_t i = 0; i < dcm_dataset_count(fc->keys); i++) {
        const struct dcm_element *k = dcm_dataset_at(fc->keys, i);
        if (dcm_dataset_get(r, k->tag) || DCM_TAG_GROUP(k->tag) == 0x0000 ||
            DCM_TAG_GROUP(k->tag) == 0x0002 || k->tag == DCM_TAG_SpecificCharacterSet)
            continue;
        if (k->tag == 0x00080056) { /* Instance Availability */
            dcm_dataset_set_string(r, k->tag, DCM_VR_CS, "ONLINE");
            continue;
        }
        if (!header_read) {
            hdr = header_of(fc, m->object_key);
            header_read = true;
        }
        if (!hdr || dcm_dataset_copy_element(r, hdr, k->tag, NULL) < 0)
            dcm_dataset_set_empty(r, k->tag, (enum dcm_vr)k->vr);
    }
    /* Say what the text is in: UTF-8 if anything is not ASCII (the setters add it for index
     * values; the converted header carries it for copied ones). */
    if (hdr && !dcm_dataset_get(r, DCM_TAG_SpecificCharacterSet))
        dcm_dataset_copy_element(r, hdr, DCM_TAG_SpecificCharacterSet, NULL);
    if (!dcm_dataset_get(r, DCM_TAG_SpecificCharacterSet) &&
        dcm_dataset_get(fc->keys, DCM_TAG_SpecificCharacterSet))
        dcm_dataset_set_empty(r, DCM_TAG_SpecificCharacterSet, DCM_VR_CS);
    if ((fc->emit_site ? fc->emit_site(fc->emit_ctx, r, m->site) : fc->emit(fc->emit_ctx, r)) <
        0) {
        fc->stopped = true;
        return -1;
    }
    return 0;
}

int arc_find(struct arc_archive *a, const struct arc_query *q,
             int (*emit)(void *ctx, const struct dcm_dataset *match), void *emit_ctx,
             struct tr_error *err)
{
    static const char *const names[] = {"", "PATIENT", "STUDY", "SERIES", "IMAGE"};
    bool dimse = dcm_dataset_get(q->keys, 0x00080052) != NULL;
    struct find_ctx fc = {.a = a, .keys = q->keys,
                          .level_text = dimse ? names[q->level] : NULL,
                          .emit = emit, .emit_ctx = emit_ctx};
    int n = arc_index_query(a->index, q, on_match, &fc, err);
    dcm_dataset_free(fc.header);
    return n;
}

int arc_find_sites(struct arc_archive *a, const struct arc_query *q,
                   int (*emit)(void *ctx, const struct dcm_dataset *match, const char *site),
                   void *emit_ctx, struct tr_error *err)
{
    static const char *const names[] = {"", "PATIENT", "STUDY", "SERIES", "IMAGE"};
    bool dimse = dcm_dataset_get(q->keys, 0x00080052) != NULL;
    struct find_ctx fc = {.a = a, .keys = q->keys,
                          .level_text = dimse ? names[q->level] : NULL,
                          .emit_site = emit, .emit_ctx = emit_ctx};
    int n = arc_index_query(a->index, q, on_match, &fc, err);
    dcm_dataset_free(fc.header);
    return n;
}
