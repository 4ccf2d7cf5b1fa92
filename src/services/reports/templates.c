/*
 * templates.c - the report templates telerad ships, and the choice of one for an exam.
 *
 * Every template has the same five sections (clinical information, technique, comparison,
 * findings, impression); what differs is the starting text a reader edits (a normal report
 * for the exam, in the structure radiologists expect for it) and the document title (LOINC,
 * DICOM CID 7000) used in the SR and the FHIR DiagnosticReport.
 */
#include "common.h"
#include "reports_int.h"

#include <ctype.h>
#include <strings.h>

const char *const rep_section_keys[REP_SECTION_COUNT] = {"clinical_information", "technique",
                                                         "comparison", "findings", "impression"};
const char *const rep_section_titles[REP_SECTION_COUNT] = {"Clinical information", "Technique",
                                                           "Comparison", "Findings", "Impression"};

int rep_section_parse(const char *key)
{
    for (int i = 0; i < REP_SECTION_COUNT; i++) {
        if (key && strcmp(key, rep_section_keys[i]) == 0)
            return i;
    }
    return -1;
}

static const char *const words_ct_head[] = {"HEAD", "BRAIN", "SKULL", "STROKE", "CRANIAL", NULL};
static const char *const words_ct_pe[] = {
    "PE", "PULMONARY EMBOLISM", "PULMONARY ANGIO", "CTPA", "CTA CHEST", "PULMONARY ARTERIES", NULL};
static const char *const words_ct_abd[] = {"ABDOMEN", "ABDOMINAL", "PELVIS", "ABD",
                                           "A/P",     "ABDO",      NULL};
static const char *const words_mr_brain[] = {"BRAIN", "HEAD", NULL};
static const char *const words_xr_chest[] = {"CHEST", "THORAX", "CXR", "LUNG", "LUNGS", NULL};
static const char *const words_any[] = {NULL};

static const struct rep_template templates[] = {
    {"ct-head",
     "CT head",
     "CT",
     words_ct_head,
     "24725-4",
     "CT Head Report",
     {"",
      "Axial CT images of the head were obtained without intravenous contrast, with "
      "multiplanar reformats.",
      "None.",
      "Brain parenchyma: no acute intracranial haemorrhage, mass effect or midline shift. "
      "Grey-white matter differentiation is preserved.\n"
      "Ventricles and extra-axial spaces: normal in size and configuration.\n"
      "Skull and scalp: no fracture.\n"
      "Visualised paranasal sinuses and mastoids: clear.",
      "No acute intracranial abnormality."}},
    {"ct-chest-pe",
     "CT chest, pulmonary embolism",
     "CT",
     words_ct_pe,
     "24627-2",
     "CT Chest Report",
     {"",
      "CT pulmonary angiography after intravenous contrast, timed for the pulmonary "
      "arteries, with multiplanar reformats.",
      "None.",
      "Pulmonary arteries: adequately opacified; no filling defect to the subsegmental level.\n"
      "Right heart: RV/LV ratio below 1; no septal bowing.\n"
      "Lungs and pleura: clear; no effusion.\n"
      "Mediastinum: no lymphadenopathy.\n"
      "Upper abdomen and bones: unremarkable.",
      "No pulmonary embolism."}},
    {"ct-abdomen-pelvis",
     "CT abdomen and pelvis",
     "CT",
     words_ct_abd,
     "41806-1",
     "CT Abdomen Report",
     {"",
      "Axial CT images of the abdomen and pelvis after intravenous contrast in the portal "
      "venous phase, with coronal and sagittal reformats.",
      "None.",
      "Liver, gallbladder, biliary tree: unremarkable.\n"
      "Pancreas, spleen, adrenal glands: unremarkable.\n"
      "Kidneys and ureters: no hydronephrosis or calculus.\n"
      "Bowel and mesentery: no obstruction, no free air or fluid.\n"
      "Bladder and pelvic organs: unremarkable.\n"
      "Vessels and lymph nodes: no aneurysm, no lymphadenopathy.\n"
      "Bones: no aggressive lesion.",
      "No acute abnormality in the abdomen or pelvis."}},
    {"mr-brain",
     "MR brain",
     "MR",
     words_mr_brain,
     "24590-2",
     "MRI Head Report",
     {"",
      "Multiplanar multisequence MR imaging of the brain: sagittal T1, axial T2, FLAIR, "
      "diffusion-weighted imaging with ADC map, susceptibility-weighted imaging.",
      "None.",
      "No restricted diffusion to suggest acute infarction.\n"
      "No intracranial haemorrhage, mass or abnormal enhancement.\n"
      "Ventricles and sulci: normal for age.\n"
      "Major intracranial flow voids: preserved.\n"
      "Orbits, sinuses and mastoids: unremarkable.",
      "No acute intracranial abnormality."}},
    {"xr-chest",
     "XR chest",
     "CR\\DX",
     words_xr_chest,
     "18748-4",
     "Diagnostic Imaging Report",
     {"", "Frontal and lateral radiographs of the chest.", "None.",
      "Lines and tubes: none.\n"
      "Lungs: clear; no consolidation, effusion or pneumothorax.\n"
      "Heart and mediastinum: normal size and contour.\n"
      "Bones and soft tissues: unremarkable.",
      "No acute cardiopulmonary abnormality."}},
    {"generic",
     "Diagnostic imaging report",
     "",
     words_any,
     "18748-4",
     "Diagnostic Imaging Report",
     {"", "", "None.", "", ""}},
};

size_t rep_template_count(void)
{
    return TR_ARRAY_SIZE(templates);
}

const struct rep_template *rep_template_at(size_t i)
{
    return i < TR_ARRAY_SIZE(templates) ? &templates[i] : NULL;
}

const struct rep_template *rep_template_find(const char *id)
{
    for (size_t i = 0; id && i < TR_ARRAY_SIZE(templates); i++) {
        if (strcmp(templates[i].id, id) == 0)
            return &templates[i];
    }
    return NULL;
}

/* Does `phrase` occur in `text` as whole words, ignoring case? Words are runs of letters and
 * digits ("ABD/PELVIS" holds ABD and PELVIS; the phrase "A/P" matches as written). */
static bool has_words(const char *text, const char *phrase)
{
    size_t n = strlen(phrase);
    if (!n)
        return false;
    for (const char *p = text; *p; p++) {
        if (strncasecmp(p, phrase, n) != 0)
            continue;
        bool start = p == text || !isalnum((unsigned char)p[-1]);
        bool end = !isalnum((unsigned char)p[n]);
        if (start && end)
            return true;
    }
    return false;
}

static bool has_modality(const char *study, const char *wanted)
{
    char a[64], b[64];
    snprintf(a, sizeof(a), "%s", study ? study : "");
    snprintf(b, sizeof(b), "%s", wanted);
    char *s1 = NULL;
    for (char *m = strtok_r(a, "\\", &s1); m; m = strtok_r(NULL, "\\", &s1)) {
        char copy[64];
        snprintf(copy, sizeof(copy), "%s", b);
        char *s2 = NULL;
        for (char *w = strtok_r(copy, "\\", &s2); w; w = strtok_r(NULL, "\\", &s2)) {
            if (strcasecmp(m, w) == 0)
                return true;
        }
    }
    return false;
}

const struct rep_template *rep_template_choose(const char *modalities, const char *description,
                                               const char *body_part)
{
    for (size_t i = 0; i < TR_ARRAY_SIZE(templates); i++) {
        const struct rep_template *t = &templates[i];
        if (!*t->modalities || !has_modality(modalities, t->modalities))
            continue;
        for (const char *const *w = t->words; *w; w++) {
            if (has_words(description ? description : "", *w) ||
                has_words(body_part ? body_part : "", *w))
                return t;
        }
    }
    return rep_template_find("generic");
}

json_t *rep_template_json(const struct rep_template *t)
{
    json_t *sections = json_object();
    for (int i = 0; i < REP_SECTION_COUNT; i++)
        json_object_set_new(sections, rep_section_keys[i], json_string(t->text[i]));
    json_t *mods = json_array();
    char copy[64];
    snprintf(copy, sizeof(copy), "%s", t->modalities);
    char *save = NULL;
    for (char *m = strtok_r(copy, "\\", &save); m; m = strtok_r(NULL, "\\", &save))
        json_array_append_new(mods, json_string(m));
    json_t *words = json_array();
    for (const char *const *w = t->words; *w; w++)
        json_array_append_new(words, json_string(*w));
    json_t *order = json_array();
    for (int i = 0; i < REP_SECTION_COUNT; i++)
        json_array_append_new(order, json_pack("{s:s,s:s}", "key", rep_section_keys[i], "title",
                                               rep_section_titles[i]));
    return json_pack("{s:s,s:s,s:o,s:o,s:{s:s,s:s,s:s},s:o,s:o}", "id", t->id, "name", t->name,
                     "modalities", mods, "words", words, "title", "system", "http://loinc.org",
                     "code", t->title_code, "display", t->title_meaning, "sections", order, "text",
                     sections);
}
