#!/usr/bin/python3
"""`telerad anonymize` judged by pydicom and dicom3tools.

Input: a synthetic CT study made with ../shared/tools/gen_study.py (two series), to which this
script adds references (Referenced Image Sequence, Source Image Sequence) and a Comprehensive
SR that names the patient in its text and references the images; and Debian python3-pydicom's
test files with sequences, private attributes (CT_small: GE private groups, waveform_ecg,
JPEG2000), structured reports (test-SR, reportsi), RT objects (rtplan, rtdose), an implicit VR,
a big endian and a deflated file.

Checked, with the Basic Profile (no option):
  1. every attribute PS3.15 Table E.1-1 marks D, Z, X (or Z/D, X/Z, X/D, X/Z/D), and every
     private attribute, no longer holds its original value anywhere in the output (a
     recursive walk of the original against every value of the same tag in the output);
     sequences marked X are gone;
  2. every UID the profile replaces (U) is, at the same place in the output, the documented
     keyed mapping "2.25." + decimal(HMAC-SHA256(key, uid)[:16]); no original instance UID
     is left anywhere in the output's bytes; Media Storage SOP Instance UID equals SOP
     Instance UID; all instances of a study share the new Study Instance UID, and every
     reference to an instance of the input set resolves to the output written for it;
  3. Patient ID is the documented pseudonym; Patient Identity Removed is YES and the method
     code sequence holds 113100;
  4. dciodvfy reports no error on an output that it does not report on its input;
  5. a second run with the same key writes byte-identical files; another key, other UIDs;
  6. the command line prints no patient name or ID, refuses to run without a key, holds back
     secondary captures (burned-in text) unless --allow-burned-in;
  7. with --dates modified every date of the patient moves by the documented keyed offset
     and times are kept.

Exit status 0 when all hold, 1 otherwise, 77 (skip) without pydicom or its test files.

usage: deid.py TELERAD
"""
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared"))
GEN_STUDY = os.path.join(SHARED, "tools", "gen_study.py")
PROFILE = os.path.join(SHARED, "data", "standard", "confidentiality_profile_attributes.json")
PYDICOM_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
KEY = b"compat-test-key-0123456789abcdef"
OTHER_KEY = b"another-test-key-fedcba9876543210"

# (file, needs --allow-burned-in)
PYDICOM_SET = ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "rtplan.dcm",
               "rtdose.dcm", "test-SR.dcm", "reportsi.dcm", "waveform_ecg.dcm",
               "ExplVR_BigEnd.dcm", "liver_1frame.dcm"]
BURNED_IN_SET = ["image_dfl.dcm", "JPEG2000.dcm"]  # secondary captures: held back by default

REMOVING = {"D", "Z", "X", "Z/D", "X/Z", "X/D", "X/Z/D"}
DUMMIES = {"ANONYMIZED", "ANONYMIZED^", "19000101", "19000101000000", "000000", "0", "000Y",
           "urn:anonymized"}

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL " + msg)


def run(*cmd, env=None):
    return subprocess.run(cmd, capture_output=True, timeout=600, env=env)


# ---- the documented keyed mappings (src/dicom/deid.h) -----------------------------------------

def map_uid(key, uid):
    uid = uid.rstrip("\0 ").lstrip(" ")
    if not uid or uid.startswith("1.2.840.10008."):
        return uid
    h = hmac.new(key, uid.encode(), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(h[:16], "big"))


def pseudonym(key, issuer, pid):
    h = hmac.new(key, b"patient\0" + issuer.encode() + b"\0" + pid.encode(),
                 hashlib.sha256).hexdigest()
    return "P" + h[:16].upper()


def date_offset(key, issuer, pid, lo=-365, hi=-1):
    h = hmac.new(key, b"date-shift\0" + issuer.encode() + b"\0" + pid.encode(),
                 hashlib.sha256).digest()
    return lo + int.from_bytes(h[:8], "big") % (hi - lo + 1)


# ---- the profile --------------------------------------------------------------------------------

def load_profile():
    rows = json.load(open(PROFILE, encoding="utf-8"))
    exact, masked = {}, []
    for r in rows:
        t = r["tag"]
        if t.startswith("(GGGG"):
            continue
        g, e = t.strip("()").split(",")
        if "X" in (g + e).upper():
            pattern = re.compile("^" + (g + e).upper().replace("X", "[0-9A-F]") + "$")
            masked.append((pattern, r["basicProfile"]))
        else:
            exact[int(g + e, 16)] = r["basicProfile"]
    return exact, masked


EXACT, MASKED = ({}, []) if not os.path.exists(PROFILE) else load_profile()


def action(tag):
    if tag in EXACT:
        return EXACT[tag]
    text = "%08X" % tag
    for pattern, a in MASKED:
        if pattern.match(text) and not (tag >> 16) & 1:
            return a
    return None


# ---- pydicom helpers ----------------------------------------------------------------------------

def norm(value):
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return tuple(str(v) for v in value)
    return str(value)


def empty(value):
    return value is None or value == "" or value == b"" or (
        isinstance(value, (list, tuple)) and len(value) == 0) or str(value) == ""


def all_values(ds, out):
    """tag -> set of normalized values, over the data set and every item."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                all_values(item, out)
        else:
            out.setdefault(int(elem.tag), set()).add(norm(elem.value))


def all_tags(ds, out):
    for elem in ds:
        out.add(int(elem.tag))
        if elem.VR == "SQ":
            for item in elem.value or []:
                all_tags(item, out)


def walk(ds, path=""):
    for elem in ds:
        yield path, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                yield from walk(item, "%s%s[%d]." % (path, elem.tag, i))


def check_removed(name, orig, out):
    """Rule 1: no D/Z/X value and no private value survives."""
    values, tags = {}, set()
    all_values(out, values)
    all_tags(out, tags)
    for path, elem in walk(orig):
        tag = int(elem.tag)
        a = action(tag)
        private = elem.tag.is_private and not elem.tag.is_private_creator
        if elem.VR == "SQ":
            if a == "X" and tag in tags:
                fail("%s: sequence %s%s (X) is still present" % (name, path, elem.tag))
            continue
        if not (a in REMOVING or private) or empty(elem.value):
            continue
        v = norm(elem.value)
        if isinstance(v, str) and v.strip() in DUMMIES:
            continue
        if isinstance(v, bytes) and not v.strip(b"\0"):
            continue  # zeros: what a dummy of a binary VR is
        if v in values.get(tag, ()):
            fail("%s: %s%s %s (%s) kept its original value" % (
                name, path, elem.tag, elem.keyword or "private", a or "private"))


def check_uids(name, orig, out, key, raw):
    """Rule 2, per file: U attributes mapped at the same place; no original UID left."""
    def pairwise(o, n, path):
        for elem in o:
            tag = int(elem.tag)
            if tag not in n:
                continue
            new = n[tag]
            if elem.VR == "SQ" and new.VR == "SQ":
                if len(elem.value or []) == len(new.value or []):
                    for i, (a, b) in enumerate(zip(elem.value, new.value)):
                        pairwise(a, b, "%s%s[%d]." % (path, elem.tag, i))
            elif action(tag) == "U" and elem.VR == "UI" and not empty(elem.value):
                olds = [elem.value] if isinstance(elem.value, str) else list(elem.value)
                news = [new.value] if isinstance(new.value, str) else list(new.value)
                want = [map_uid(key, u) for u in olds]
                if [str(u) for u in news] != want:
                    fail("%s: %s%s is %s, the mapping says %s" % (name, path, elem.tag, news,
                                                                    want))
    pairwise(orig, out, "")
    for path, elem in walk(orig):
        if action(int(elem.tag)) == "U" and elem.VR == "UI" and not empty(elem.value):
            for u in ([elem.value] if isinstance(elem.value, str) else elem.value):
                u = str(u).rstrip("\0 ")
                if len(u) >= 8 and not u.startswith("1.2.840.10008.") and u.encode() in raw:
                    fail("%s: the original UID %s of %s%s is still in the file" % (
                        name, u, path, elem.tag))
    if str(out.file_meta.MediaStorageSOPInstanceUID) != str(out.SOPInstanceUID):
        fail("%s: Media Storage SOP Instance UID differs from SOP Instance UID" % name)


def dciodvfy_errors(path):
    p = run("dciodvfy", "-new", path)
    errors = set()
    for line in (p.stdout + p.stderr).decode("latin-1").splitlines():
        if line.startswith("Error"):
            line = re.sub(r"^Error - </[^>]*> - ", "Error - ", line.strip())
            line = re.sub(r"= <[^>]*>", "= <value>", line)
            errors.add(re.sub(r"\s+", " ", line))
    return errors


# ---- the input ----------------------------------------------------------------------------------

def make_study(pydicom, indir):
    """A CT study from gen_study.py, with references added, and an SR of the study."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    out = os.path.join(indir, "study")
    p = run("/usr/bin/python3", GEN_STUDY, "--modality", "CT", "--series", "2", "--images", "4",
            "--rows", "32", "--cols", "32", "--seed", "7", out)
    if p.returncode:
        fail("gen_study.py: " + p.stderr.decode(errors="replace"))
        return []
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs
                   if f.endswith(".dcm"))
    first = pydicom.dcmread(files[0])
    # Image 2 references image 1, as a derived image would.
    second = pydicom.dcmread(files[1])
    ref = Dataset()
    ref.ReferencedSOPClassUID = first.SOPClassUID
    ref.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.ReferencedImageSequence = Sequence([ref])
    src = Dataset()
    src.ReferencedSOPClassUID = first.SOPClassUID
    src.ReferencedSOPInstanceUID = first.SOPInstanceUID
    second.SourceImageSequence = Sequence([src])
    second.OperatorsName = "Operator^Olga"
    second.ImageComments = "scanned for %s" % first.PatientName
    second.save_as(files[1])
    # An SR that names the patient and references two images.
    sr = Dataset()
    for kw in ("SpecificCharacterSet", "PatientName", "PatientID", "IssuerOfPatientID",
               "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
               "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        if kw in first:
            setattr(sr, kw, getattr(first, kw))
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"
    sr.SOPInstanceUID = generate_uid()
    sr.SeriesInstanceUID = generate_uid()
    sr.Modality = "SR"
    sr.SeriesNumber = 99
    sr.InstanceNumber = 1
    sr.Manufacturer = "TEST"
    sr.ContentDate = first.StudyDate
    sr.ContentTime = "093000"
    sr.ValueType = "CONTAINER"
    sr.ContinuityOfContent = "SEPARATE"
    sr.CompletionFlag = "COMPLETE"
    sr.VerificationFlag = "VERIFIED"
    sr.ReferencedPerformedProcedureStepSequence = Sequence([])
    sr.PerformedProcedureCodeSequence = Sequence([])
    obs = Dataset()
    obs.VerifyingObserverName = "Verifier^Vera"
    obs.VerifyingOrganization = "Reading Group Ltd"
    obs.VerificationDateTime = first.StudyDate + "101010"
    obs.VerifyingObserverIdentificationCodeSequence = Sequence([])
    sr.VerifyingObserverSequence = Sequence([obs])

    def code(value, meaning, scheme="DCM"):
        c = Dataset()
        c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
        return Sequence([c])

    sr.ConceptNameCodeSequence = code("18748-4", "Diagnostic Imaging Report", "LN")
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = code("121071", "Finding")
    text.TextValue = "Nodule seen in %s, MRN %s" % (first.PatientName, first.PatientID)
    image = Dataset()
    image.RelationshipType = "CONTAINS"
    image.ValueType = "IMAGE"
    image.ConceptNameCodeSequence = code("121080", "Best illustration of finding")
    r = Dataset()
    r.ReferencedSOPClassUID = second.SOPClassUID
    r.ReferencedSOPInstanceUID = second.SOPInstanceUID
    image.ReferencedSOPSequence = Sequence([r])
    sr.ContentSequence = Sequence([text, image])
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = second.SeriesInstanceUID
    inst = Dataset()
    inst.ReferencedSOPClassUID = second.SOPClassUID
    inst.ReferencedSOPInstanceUID = second.SOPInstanceUID
    series.ReferencedSOPSequence = Sequence([inst])
    evidence.ReferencedSeriesSequence = Sequence([series])
    sr.CurrentRequestedProcedureEvidenceSequence = Sequence([evidence])
    sr.file_meta = FileMetaDataset()
    sr.file_meta.MediaStorageSOPClassUID = sr.SOPClassUID
    sr.file_meta.MediaStorageSOPInstanceUID = sr.SOPInstanceUID
    sr.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    path = os.path.join(out, "sr.dcm")
    sr.is_little_endian, sr.is_implicit_VR = True, False
    sr.save_as(path, write_like_original=False)
    return files + [path]


def outputs(outdir):
    found = {}
    for d, _, fs in os.walk(outdir):
        for f in fs:
            p = os.path.join(d, f)
            found[os.path.relpath(p, outdir)] = open(p, "rb").read()
    return found


def anonymize(telerad, key_file, outdir, inputs, *flags):
    env = dict(os.environ)
    env.pop("TELERAD_DEID_KEY", None)
    return run(telerad, "anonymize", "--key-file", key_file, "--out", outdir, "-j", "2",
               *flags, *inputs, env=env)


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    telerad = os.path.abspath(sys.argv[1])
    try:
        import pydicom
    except ImportError:
        print("SKIP: pydicom is not installed (apt-get install python3-pydicom)")
        return 77
    if not os.path.isdir(PYDICOM_FILES) or not EXACT:
        print("SKIP: pydicom's test files or %s are absent" % PROFILE)
        return 77
    have_dciodvfy = shutil.which("dciodvfy") is not None
    if not have_dciodvfy:
        print("note: dciodvfy not installed (apt-get install dicom3tools): IOD checks skipped")
    tmp = tempfile.mkdtemp(prefix="telerad-deid-")
    try:
        return check(pydicom, telerad, tmp, have_dciodvfy)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check(pydicom, telerad, tmp, have_dciodvfy):
    indir = os.path.join(tmp, "in")
    os.makedirs(indir)
    study = make_study(pydicom, indir) if os.path.exists(GEN_STUDY) else []
    if not study:
        print("note: %s absent or failed: the synthetic study is skipped" % GEN_STUDY)
    for f in PYDICOM_SET + BURNED_IN_SET:
        shutil.copy(os.path.join(PYDICOM_FILES, f), os.path.join(indir, f))
    key_file = os.path.join(tmp, "key")
    with open(key_file, "wb") as k:
        k.write(KEY + b"\n")  # the final newline is not part of the key
    os.chmod(key_file, 0o600)
    originals = {}
    for d, _, fs in os.walk(indir):
        for f in fs:
            p = os.path.join(d, f)
            originals[p] = pydicom.dcmread(p)
    secrets = set()
    for ds in originals.values():
        for kw in ("PatientName", "PatientID", "OtherPatientIDs"):
            v = str(ds.get(kw, "") or "")
            if len(v) >= 4:
                secrets.add(v)

    # 6. No key: refused, with a message that says why.
    env = dict(os.environ)
    env.pop("TELERAD_DEID_KEY", None)
    p = run(telerad, "anonymize", "--out", os.path.join(tmp, "nokey"), indir, env=env)
    if p.returncode != 2 or b"key" not in p.stderr:
        fail("without a key: status %d, %r" % (p.returncode, p.stderr[:200]))
    if os.path.exists(os.path.join(tmp, "nokey")) and os.listdir(os.path.join(tmp, "nokey")):
        fail("without a key, files were written")

    # 6. --random-key: works, prints nothing about the key, links to nothing.
    rnd = os.path.join(tmp, "random")
    p = run(telerad, "anonymize", "--random-key", "--out", rnd, "--allow-burned-in", indir,
            env=env)
    if p.returncode != 0 or b"key" in p.stdout + p.stderr:
        fail("--random-key: status %d, %r" % (p.returncode, (p.stdout + p.stderr)[-300:]))
    if not outputs(rnd) or set(outputs(rnd)) & {
            os.path.join(map_uid(KEY, str(ds.StudyInstanceUID)),
                         map_uid(KEY, str(ds.SOPInstanceUID)) + ".dcm")
            for ds in originals.values()}:
        fail("--random-key wrote nothing, or the same UIDs as the fixed key")

    # 6. Burned-in: held back without --allow-burned-in.
    held = os.path.join(tmp, "held")
    p = anonymize(telerad, key_file, held, [os.path.join(indir, f) for f in BURNED_IN_SET])
    if p.returncode != 1 or b"held back" not in p.stderr:
        fail("secondary captures were not held back: %d %r" % (p.returncode, p.stderr[-300:]))
    if outputs(held):
        fail("held back instances were written")

    # Folders with other files: those without "DICM" at byte 128 are skipped and counted, not
    # failed; a non-DICOM file named on the command line fails. A large image (its pixel data
    # copied from the input by the kernel) comes out with the same pixels.
    mixed = os.path.join(tmp, "mixed")
    os.makedirs(os.path.join(mixed, "sub"))
    big = pydicom.dcmread(os.path.join(PYDICOM_FILES, "CT_small.dcm"))
    big.Rows, big.Columns = 256, 256
    big.PixelData = bytes((i * 7 + i // 256) & 0xFF for i in range(256 * 256 * 2))
    big.save_as(os.path.join(mixed, "big.dcm"), write_like_original=True)
    shutil.copy(os.path.join(PYDICOM_FILES, "MR_small.dcm"), os.path.join(mixed, "sub"))
    with open(os.path.join(mixed, "notes.txt"), "w") as f:
        f.write("not DICOM\n")
    open(os.path.join(mixed, "empty.dcm"), "wb").close()
    with open(os.path.join(mixed, "sub", "short.bin"), "wb") as f:
        f.write(b"\0" * 50)
    out_mixed = os.path.join(tmp, "out-mixed")
    p = anonymize(telerad, key_file, out_mixed, [mixed])
    err = p.stderr.decode("utf-8", "replace")
    if (p.returncode != 0 or "anonymized 2 of 2 files" not in err or
            "3 files in the folders are not DICOM and were skipped" not in err):
        fail("a folder with non-DICOM files: status %d: %s" % (p.returncode, err[-400:]))
    big_out = [v for k, v in outputs(out_mixed).items() if len(v) > 100000]
    if len(outputs(out_mixed)) != 2 or len(big_out) != 1:
        fail("a folder with non-DICOM files: outputs %s" % sorted(outputs(out_mixed)))
    else:
        out_big = pydicom.dcmread(pydicom.filebase.DicomBytesIO(big_out[0]))
        if out_big.PixelData != big.PixelData or str(out_big.PatientName) == str(big.PatientName):
            fail("the large image: pixel data changed, or the name kept")
    p = anonymize(telerad, key_file, os.path.join(tmp, "out-named"),
                  [os.path.join(mixed, "notes.txt")])
    if p.returncode != 1 or b"DICM" not in p.stderr:
        fail("a non-DICOM file named on the command line: status %d, %r" % (p.returncode,
                                                                            p.stderr[-300:]))

    # The main run, twice, and once with another key.
    out1, out2, out3 = (os.path.join(tmp, n) for n in ("out1", "out2", "out3"))
    p = anonymize(telerad, key_file, out1, [indir], "--allow-burned-in")
    log = (p.stdout + p.stderr).decode("utf-8", "replace")
    print(log.strip())
    if p.returncode != 0:
        fail("telerad anonymize exited with %d" % p.returncode)
    for s in secrets:
        if s in log:
            fail("the command printed a patient name or ID")
    p2 = anonymize(telerad, key_file, out2, [indir], "--allow-burned-in")
    a, b = outputs(out1), outputs(out2)
    if p2.returncode != 0 or a != b:
        fail("two runs with the same key differ (%d vs %d files, %d differ)" % (
            len(a), len(b), sum(1 for k in a if a.get(k) != b.get(k))))
    expected = {os.path.join(map_uid(KEY, str(ds.StudyInstanceUID)),
                             map_uid(KEY, str(ds.SOPInstanceUID)) + ".dcm")
                for ds in originals.values()}  # MR_small and MR_small_implicit are one instance
    if set(a) != expected:
        fail("outputs %s, expected %s" % (sorted(a), sorted(expected)))
    other = os.path.join(tmp, "otherkey")
    with open(other, "wb") as k:
        k.write(OTHER_KEY)
    anonymize(telerad, other, out3, [indir], "--allow-burned-in")
    if set(outputs(out3)) & set(a):
        fail("another key gave the same output names (UIDs)")

    # Per file: rules 1-4.
    out_sops, checked, dciod_checked = {}, 0, 0
    for path, orig in sorted(originals.items()):
        name = os.path.relpath(path, indir)
        sop = map_uid(KEY, str(orig.SOPInstanceUID))
        study_uid = map_uid(KEY, str(orig.StudyInstanceUID))
        out_path = os.path.join(out1, study_uid, sop + ".dcm")
        if not os.path.exists(out_path):
            fail("%s: no output at %s" % (name, os.path.relpath(out_path, out1)))
            continue
        raw = open(out_path, "rb").read()
        out = pydicom.dcmread(out_path)
        out_sops[str(orig.SOPInstanceUID)] = str(out.SOPInstanceUID)
        check_removed(name, orig, out)
        check_uids(name, orig, out, KEY, raw)
        issuer = str(orig.get("IssuerOfPatientID", "") or "")
        pid = str(orig.get("PatientID", "") or "") or str(orig.get("PatientName", "") or "")
        if str(out.get("PatientID", "")) not in ("", pseudonym(KEY, issuer, pid)):
            fail("%s: Patient ID is not the documented pseudonym" % name)
        if out.get("PatientIdentityRemoved") != "YES":
            fail("%s: Patient Identity Removed is not YES" % name)
        codes = [i.CodeValue for i in out.get("DeidentificationMethodCodeSequence", [])]
        if codes != ["113100"]:
            fail("%s: method codes %s" % (name, codes))
        if have_dciodvfy:
            new = dciodvfy_errors(out_path) - dciodvfy_errors(path)
            dciod_checked += 1
            for e in sorted(new):
                fail("%s: dciodvfy: new %s" % (name, e))
        checked += 1

    # 2. References across the study resolve to the outputs of their targets.
    resolved = 0
    study_uids = set()
    for path, orig in originals.items():
        if not path.startswith(os.path.join(indir, "study")):
            continue
        out = pydicom.dcmread(os.path.join(out1, map_uid(KEY, str(orig.StudyInstanceUID)),
                                           map_uid(KEY, str(orig.SOPInstanceUID)) + ".dcm"))
        study_uids.add(str(out.StudyInstanceUID))
        for (_, o), (_, n) in zip(
                [x for x in walk(orig) if int(x[1].tag) == 0x00081155],
                [x for x in walk(out) if int(x[1].tag) == 0x00081155]):
            target = out_sops.get(str(o.value))
            if target is None:
                continue
            resolved += 1
            if str(n.value) != target:
                fail("%s: a reference does not resolve to the output of its target" % path)
    if study and len(study_uids) != 1:
        fail("the study was split into %d studies" % len(study_uids))
    if study and resolved < 4:
        fail("only %d references checked" % resolved)

    # 7. Modified dates: one keyed offset per patient, times kept.
    shifted = 0
    if study:
        out4 = os.path.join(tmp, "out4")
        p = anonymize(telerad, key_file, out4, [os.path.join(indir, "study")], "--dates",
                      "modified")
        if p.returncode:
            fail("--dates modified: status %d" % p.returncode)
        for path in study:
            orig = originals[path]
            out = pydicom.dcmread(os.path.join(out4, map_uid(KEY, str(orig.StudyInstanceUID)),
                                               map_uid(KEY, str(orig.SOPInstanceUID)) + ".dcm"))
            days = date_offset(KEY, str(orig.get("IssuerOfPatientID", "")),
                               str(orig.PatientID))
            import datetime
            for kw in ("StudyDate", "SeriesDate", "ContentDate"):
                if kw in orig and orig.get(kw):
                    d = datetime.datetime.strptime(str(orig.get(kw)), "%Y%m%d").date()
                    want = (d + datetime.timedelta(days=days)).strftime("%Y%m%d")
                    if str(out.get(kw)) != want:
                        fail("%s: %s %s, want %s" % (path, kw, out.get(kw), want))
                    shifted += 1
            for kw in ("StudyTime", "SeriesTime", "ContentTime"):
                if kw in orig and str(out.get(kw)) != str(orig.get(kw)):
                    fail("%s: %s changed under --dates modified" % (path, kw))
            if out.get("LongitudinalTemporalInformationModified") != "MODIFIED":
                fail("%s: Longitudinal Temporal Information Modified is not MODIFIED" % path)

    # Every option at once: still no new dciodvfy error, and the codes say which options.
    out5 = os.path.join(tmp, "out5")
    p = anonymize(telerad, key_file, out5, [indir], "--allow-burned-in", "--retain-safe-private",
                  "--clean-descriptors", "--clean-structured", "--clean-graphics",
                  "--retain-device", "--retain-institution", "--retain-patient-chars",
                  "--dates", "modified")
    if p.returncode:
        fail("all options: status %d: %s" % (p.returncode, p.stderr[-300:]))
    want_codes = ["113100", "113103", "113104", "113105", "113107", "113108", "113109",
                  "113111", "113112"]
    for path, orig in sorted(originals.items()):
        out_path = os.path.join(out5, map_uid(KEY, str(orig.StudyInstanceUID)),
                                map_uid(KEY, str(orig.SOPInstanceUID)) + ".dcm")
        if not os.path.exists(out_path):
            fail("all options: no output for %s" % path)
            continue
        out = pydicom.dcmread(out_path)
        codes = [i.CodeValue for i in out.get("DeidentificationMethodCodeSequence", [])]
        if codes != want_codes:
            fail("all options: %s: method codes %s" % (path, codes))
        if have_dciodvfy:
            for e in sorted(dciodvfy_errors(out_path) - dciodvfy_errors(path)):
                fail("all options: %s: dciodvfy: new %s" % (os.path.relpath(path, indir), e))

    print("%d files de-identified and checked (%d by dciodvfy), %d references resolved, "
          "%d dates shifted: %s" % (checked, dciod_checked, resolved, shifted,
                                    "FAILED (%d)" % len(failures) if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
