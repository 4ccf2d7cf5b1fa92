#!/usr/bin/python3
"""Generate src/dicom/deid_table.c, the de-identification rules, from the standard.

Input: PS3.15 Table E.1-1 (the Basic Application Level Confidentiality Profile and its options)
as JSON (innolitics/dicom-standard `confidentiality_profile_attributes.json`, DICOM 2024b; in
this workspace at ../shared/data/standard/confidentiality_profile_attributes.json). Written out
below, because the JSON does not hold them:

  - SAFE_PRIVATE: the numeric and coded entries of the sample list of safe private attributes
    in PS3.15 E.3.10 (Table E.3.10-1). Its OB, SQ, UI and free-text entries are left out on
    purpose: PS3.15 E.3.10 Note 2 warns that bulk and text private data may hold identity.
  - SAFE_WORDS: telerad's allow-list for the Clean Descriptors option: words of radiology
    descriptions (modalities, anatomy, technique, orientation) that identify nobody. A
    descriptor keeps only these words (see src/dicom/deid.c).

Output: a C file with the rules sorted by tag (exact tags), the repeating-group rules, the rule
for private attributes, the safe private list and the word list. Run:

    tools/gen_deid.py ../shared/data/standard/confidentiality_profile_attributes.json \\
        > src/dicom/deid_table.c

The generated file is committed; the build does not need the JSON.
"""
import json
import sys

# Option columns of Table E.1-1, in the order of enum dcm_deid_option (src/dicom/deid.h).
OPTION_KEYS = [
    "rtnSafePrivOpt",        # Retain Safe Private
    "rtnUIDsOpt",            # Retain UIDs
    "rtnDevIdOpt",           # Retain Device Identity
    "rtnInstIdOpt",          # Retain Institution Identity
    "rtnPatCharsOpt",        # Retain Patient Characteristics
    "rtnLongFullDatesOpt",   # Retain Longitudinal Temporal Information Full Dates
    "rtnLongModifDatesOpt",  # Retain Longitudinal Temporal Information Modified Dates
    "cleanDescOpt",          # Clean Descriptors
    "cleanStructContOpt",    # Clean Structured Content
    "cleanGraphOpt",         # Clean Graphics
]

ACTIONS = {
    "": "DCM_DEID_NONE", "D": "DCM_DEID_D", "Z": "DCM_DEID_Z", "X": "DCM_DEID_X",
    "K": "DCM_DEID_K", "C": "DCM_DEID_C", "U": "DCM_DEID_U", "Z/D": "DCM_DEID_Z_D",
    "X/Z": "DCM_DEID_X_Z", "X/D": "DCM_DEID_X_D", "X/Z/D": "DCM_DEID_X_Z_D",
    "X/Z/U*": "DCM_DEID_X_Z_U",
}

VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
       "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
       "UR", "US", "UT", "UV"]

# PS3.15 E.3.10, Table E.3.10-1 (sample list of safe private attributes): (group, element
# within the block, private creator, VR, meaning). Numeric and coded values only.
SAFE_PRIVATE = [
    (0x7053, 0x00, "Philips PET Private Group", "DS", "SUV Factor"),
    (0x7053, 0x09, "Philips PET Private Group", "DS", "Activity Concentration Factor"),
    (0x00E1, 0x21, "ELSCINT1", "DS", "DLP"),
    (0x00E1, 0x50, "ELSCINT1", "DS", "Acquisition Duration"),
    (0x01E1, 0x26, "ELSCINT1", "CS", "Phantom Type"),
    (0x01F1, 0x01, "ELSCINT1", "CS", "Acquisition Type"),
    (0x01F1, 0x07, "ELSCINT1", "DS", "Table Velocity"),
    (0x01F1, 0x26, "ELSCINT1", "DS", "Pitch"),
    (0x01F1, 0x27, "ELSCINT1", "DS", "Rotation Time"),
    (0x0019, 0x23, "GEMS_ACQU_01", "DS", "Table Speed [mm/rotation]"),
    (0x0019, 0x24, "GEMS_ACQU_01", "DS", "Mid Scan Time [sec]"),
    (0x0019, 0x27, "GEMS_ACQU_01", "DS", "Rotation Speed (Gantry Period)"),
    (0x0043, 0x27, "GEMS_PARM_01", "SH", "Scan Pitch Ratio"),
    (0x0043, 0x39, "GEMS_PARM_01", "IS", "B Value (first value)"),
    (0x0043, 0x6F, "GEMS_PARM_01", "DS", "Scanner Table Entry + Gradient Coil Selected"),
    (0x0045, 0x01, "GEMS_HELIOS_01", "SS", "Number of Macro Rows in Detector"),
    (0x0045, 0x02, "GEMS_HELIOS_01", "FL", "Macro width at ISO Center"),
    (0x0025, 0x07, "GEMS_SERS_01", "SL", "Images in Series"),
    (0x0903, 0x10, "GEIIS PACS", "US", "Reject Image Flag"),
    (0x0903, 0x11, "GEIIS PACS", "US", "Significant Flag"),
    (0x0903, 0x12, "GEIIS PACS", "US", "Confidential Flag"),
    (0x2001, 0x03, "Philips Imaging DD 001", "FL", "Diffusion B-Factor"),
    (0x2001, 0x04, "Philips Imaging DD 001", "CS", "Diffusion Direction"),
    (0x2005, 0x0D, "Philips MR Imaging DD 001", "FL", "Scale Intercept"),
    (0x2005, 0x0E, "Philips MR Imaging DD 001", "FL", "Scale Slope"),
    (0x0019, 0x0C, "SIEMENS MR HEADER", "IS", "B Value"),
    (0x0019, 0x0D, "SIEMENS MR HEADER", "CS", "Diffusion Directionality"),
    (0x0019, 0x0E, "SIEMENS MR HEADER", "FD", "Diffusion Gradient Direction"),
    (0x0019, 0x27, "SIEMENS MR HEADER", "FD", "B Matrix"),
    (0x0099, 0x04, "NQHeader", "SS", "Return Code"),
    (0x0099, 0x10, "NQHeader", "FL", "MI"),
    (0x0099, 0x20, "NQHeader", "SH", "Units"),
    (0x0099, 0x21, "NQHeader", "FL", "ICV"),
] + [(0x0199, i, "NQLeft", "FL", "NeuroQuant left volume %d" % i) for i in range(0x01, 0x17)] \
  + [(0x0299, i, "NQRight", "FL", "NeuroQuant right volume %d" % i) for i in range(0x01, 0x17)]

# Clean Descriptors allow-list (telerad's): words that may stay in a cleaned description.
SAFE_WORDS = """
2D 3D 4D AAA ABD ABDO ABDOMEN ABDOMINAL ABSCESS ACETABULUM ACUTE ADC ADRENAL AIR AIRWAY AND
ANGIO ANGIOGRAM ANGIOGRAPHY ANKLE ANTERIOR AORTA AORTIC AP APPENDIX ARCH ARM ARTERIAL ARTERY
ARTHROGRAM ASL AX AXIAL B0 B1000 BASELINE BILAT BILATERAL BILIARY BLADDER BODY BOLUS BONE BONES
BOWEL BRAIN BREAST BREASTS BRONCHI BW C CALCIUM CALF CARDIAC CM CAROTID CAROTIDS CERVICAL CHEST CINE
CLAVICLE COCCYX COLON COLONOGRAPHY COMBINED CONTRAST COR CORONAL CORONARY CT CTA CTV CTP CXR
DECUB DELAY DELAYED DIFFUSION DISTAL DIXON DOPPLER DORSAL DOSE DUAL DWI DX ECHO ELBOW EMBOLISM
ENERGY ENHANCED ENTEROGRAPHY EQUILIBRIUM EXAM EXTREMITY FACE FACIAL FAT FEMUR FIBULA FINGER
FINGERS FLAIR FLOW FOOT FOREARM FRONTAL FSE FULL FUNCTIONAL GADO GADOLINIUM GRADIENT GRE HAND
HCT HEAD HEART HU HELICAL HIGH HIP HIPS HRCT HUMERUS IAC IACS ILIAC IMAGE IMAGES INFERIOR INITIAL
INSP INSPIRATION INTERNAL IR IV JOINT KIDNEY KIDNEYS KNEE KUB KV KVP L LAT LATERAL LEFT LEG LIMITED
LIVER LOCALIZER LOW LOWER LT LUMBAR LUNG LUNGS MAMMO MAMMOGRAM MANDIBLE MAS MAXILLOFACIAL MEDIAL
MG MIN MIP MIPS ML MM MPR MR MRA MRCP MRI MRV MSK NECK NEURO NON NONCONTRAST NORMAL O OBLIQUE OF
ORAL ORBIT ORBITS OUTPUT PA PANCREAS PE PELVIS PERFUSION PET PHASE PITUITARY PLAIN POST POSTERIOR
PORTAL PRE PROSTATE PROTOCOL PT PULMONARY R RECON RECONSTRUCTION RENAL RIB RIBS RIGHT ROUTINE RT
RUNOFF SACRUM SAG SAGITTAL SCAN SCAPULA SCOUT SCREENING SE SEC SECONDARY SELLA SERIES SHOULDER
SINUS SINUSES SKULL SLICE SOFT SPECT SPINE STANDARD STIR STONE STROKE STUDY SUMMARY SUPERIOR
SURVEY SWI T1 T2 TEMPORAL THIN THORACIC THORAX THROAT THUMB THYROID TIBIA TISSUE TOF TOPOGRAM
TRAUMA TRUFI TSE UPPER UROGRAM US VENOGRAM VENOUS VIEW VIEWS VOLUME W WAND WITH WITHOUT WO
WRIST WWO X XR ZOOM
""".split()


def parse_tag(text):
    """'(60XX,3000)' -> (tag with x digits 0, mask)."""
    g, e = text.strip("()").split(",")
    digits = (g + e).upper()
    tag = mask = 0
    for ch in digits:
        tag <<= 4
        mask <<= 4
        if ch == "X":
            continue
        tag |= int(ch, 16)
        mask |= 0xF
    return tag, mask


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rule_line(tag, mask, row):
    basic = ACTIONS[row["basicProfile"]]
    opts = ", ".join(ACTIONS[row.get(k, "")] for k in OPTION_KEYS)
    name = row["name"].split("\n")[0].strip()
    return "    {0x%08X, 0x%08X, %s, {%s}, %s},\n" % (tag, mask, basic, opts, c_string(name))


def main():
    rows = json.load(open(sys.argv[1], encoding="utf-8"))
    exact, masked, private = [], [], None
    seen = set()
    for row in rows:
        tagtext = row["tag"].strip()
        if tagtext.startswith("(GGGG,EEEE)"):
            private = row
            continue
        tag, mask = parse_tag(tagtext)
        if (tag, mask) in seen:
            raise SystemExit("duplicate tag %s" % tagtext)
        seen.add((tag, mask))
        if row["basicProfile"] not in ACTIONS:
            raise SystemExit("unknown action %r for %s" % (row["basicProfile"], tagtext))
        (exact if mask == 0xFFFFFFFF else masked).append((tag, mask, row))
    if private is None:
        raise SystemExit("no row for private attributes")
    exact.sort(key=lambda r: r[0])
    masked.sort(key=lambda r: (-bin(r[1]).count("1"), r[0]))  # most specific first

    words = sorted(set(w.upper() for w in SAFE_WORDS))
    for g, _e, creator, vr, _m in SAFE_PRIVATE:
        if not g & 1 or vr not in VRS or len(creator) > 64:
            raise SystemExit("bad safe private entry %s" % creator)

    out = sys.stdout
    out.write("/*\n * deid_table.c - GENERATED by tools/gen_deid.py from PS3.15 Table E.1-1 (DICOM "
              "2024b) and\n * Table E.3.10-1. Do not edit; rerun the generator.\n */\n")
    out.write('#include "deid.h"\n\n')
    out.write("/* Exact tags, ascending. */\n")
    out.write("const struct dcm_deid_rule dcm_deid_rules[] = {\n")
    for tag, mask, row in exact:
        out.write(rule_line(tag, mask, row))
    out.write("};\n")
    out.write("const unsigned dcm_deid_rule_count = %d;\n\n" % len(exact))
    out.write("/* Repeating groups (curves 50xx, overlays 60xx), most specific mask first. */\n")
    out.write("const struct dcm_deid_rule dcm_deid_repeating_rules[] = {\n")
    for tag, mask, row in masked:
        out.write(rule_line(tag, mask, row))
    out.write("};\n")
    out.write("const unsigned dcm_deid_repeating_rule_count = %d;\n\n" % len(masked))
    out.write("/* (gggg,eeee) where gggg is odd. */\n")
    out.write("const struct dcm_deid_rule dcm_deid_private_rule =\n")
    out.write(rule_line(0, 0, private).rstrip().rstrip(",") + ";\n\n")
    out.write("/* PS3.15 Table E.3.10-1, numeric and coded entries. */\n")
    out.write("const struct dcm_deid_safe_private dcm_deid_safe_private[] = {\n")
    for g, e, creator, vr, meaning in sorted(SAFE_PRIVATE, key=lambda r: (r[0], r[2], r[1])):
        out.write("    {0x%04X, 0x%02X, DCM_VR_%s, %s, %s},\n" % (g, e, vr, c_string(creator),
                                                                 c_string(meaning)))
    out.write("};\n")
    out.write("const unsigned dcm_deid_safe_private_count = %d;\n\n" % len(SAFE_PRIVATE))
    out.write("/* Clean Descriptors allow-list, sorted (strcmp order). */\n")
    out.write("const char *const dcm_deid_safe_words[] = {\n")
    line = "   "
    for w in words:
        item = " %s," % c_string(w)
        if len(line) + len(item) > 99:
            out.write(line + "\n")
            line = "   "
        line += item
    out.write(line + "\n};\n")
    out.write("const unsigned dcm_deid_safe_word_count = %d;\n" % len(words))


if __name__ == "__main__":
    main()
