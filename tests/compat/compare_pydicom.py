#!/usr/bin/python3
"""Compare `telerad json FILE` with pydicom's Dataset.to_json_dict(), element by element.

For every file under the given folders (default: Debian python3-pydicom's test_files and
charset_files, and ../shared/data/pydicom-data when present):

  * pydicom reads it (dcmread, default options) and converts it: telerad must print the same
    attributes with the same VR and the same values (binary VRs: InlineBinary present on both
    sides or on neither);
  * pydicom refuses it: telerad must exit non-zero with one message on standard error;
  * and the reader: pydicom's JSON, read by `telerad convert --from-json` into a Part 10 file,
    must come back out of `telerad json` equal to pydicom's JSON.

Known, deliberate differences (each with its reason) are listed in DELIBERATE below; they are
reported but do not fail the run. Exit status: 0 when everything else matches, 1 otherwise.

usage: compare_pydicom.py TELERAD [DIR...] [--verbose]
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

warnings.simplefilter("ignore")
try:
    import pydicom
except ImportError:
    print("SKIP: pydicom is not installed (apt-get install python3-pydicom)")
    sys.exit(77)

PYDICOM_DATA = os.path.dirname(pydicom.__file__) + "/data"
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "pydicom-data"))

POLICY_COUNT = [0]
BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}

# File name -> why telerad differs from pydicom on purpose.
DELIBERATE = {
    "MR_truncated.dcm": "the pixel data is cut short (8,130 of 8,192 bytes): pydicom silently "
                        "keeps the short value, telerad (like DCMTK) refuses the file",
    "rtplan_truncated.dcm": "the file ends inside an element: pydicom keeps what it read, "
                            "telerad (like DCMTK) refuses the file",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "the encapsulated pixel data ends without its "
                            "sequence delimiter: pydicom keeps the fragments it read, telerad "
                            "(like DCMTK) refuses the file",
}

# Private attributes whose VR the file does not state (implicit VR, or explicit "UN") stay UN in
# telerad (issue #2: "private tags kept, VR UN unless explicit"); pydicom looks them up in its
# private dictionary. Such elements are counted, not failed.
def private_vr_policy(tag, ours, theirs):
    group, element = int(tag[:4], 16), int(tag[4:], 16)
    return group % 2 == 1 and element >= 0x1000 and ours.get("vr") == "UN"



def pydicom_json(path):
    try:
        ds = pydicom.dcmread(path)
        return ds.to_json_dict(), None
    except Exception as e:  # pydicom refuses the file
        return None, "%s: %s" % (type(e).__name__, str(e)[:200])


def telerad_json(telerad, path):
    p = subprocess.run([telerad, "json", path], capture_output=True, timeout=60)
    if p.returncode != 0:
        return None, p.stderr.decode("utf-8", "replace").strip(), p.returncode
    try:
        return json.loads(p.stdout.decode("utf-8")), None, 0
    except ValueError as e:
        return None, "output is not JSON: %s" % e, -1


def telerad_json_reader(telerad, theirs, tmp):
    src, out = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.dcm")
    with open(src, "w", encoding="utf-8") as f:
        json.dump(theirs, f, ensure_ascii=False)
    p = subprocess.run([telerad, "convert", "--from-json", src, out], capture_output=True,
                       timeout=60)
    if p.returncode != 0:
        return None, p.stderr.decode("utf-8", "replace").strip()
    back, err, _ = telerad_json(telerad, out)
    return back, err


def norm_pn(v):
    if isinstance(v, dict):
        return {k: x for k, x in v.items() if x not in ("", None)}
    return v


def same_number(a, b):
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b or (abs(a - b) <= 1e-12 * max(abs(a), abs(b)))
    return a == b


def compare(ours, theirs, path, diffs, strict_vr=False):
    """strict_vr: the JSON-reader check. There, what writing a Part 10 file must change is
    accepted: group lengths are recomputed, and text read from JSON (UTF-8) is declared as
    ISO_IR 192 whatever the original Specific Character Set was."""
    for tag in sorted(set(ours) | set(theirs)):
        where = path + tag
        if tag not in ours and strict_vr and tag == "00080005":
            continue  # an item's own character set: the read-back data set is UTF-8 throughout
        if tag not in ours:
            diffs.append("%s: missing in telerad (pydicom: %s)" % (where, short(theirs[tag])))
            continue
        if tag not in theirs:
            diffs.append("%s: extra in telerad: %s" % (where, short(ours[tag])))
            continue
        a, b = ours[tag], theirs[tag]
        if not strict_vr and a.get("vr") != b.get("vr") and private_vr_policy(tag, a, b):
            POLICY_COUNT[0] += 1
            continue
        if a.get("vr") != b.get("vr"):
            diffs.append("%s: VR %s, pydicom %s" % (where, a.get("vr"), b.get("vr")))
            continue
        vr = a["vr"]
        if strict_vr and tag.endswith("0000") and vr == "UL":
            continue
        if strict_vr and tag == "00080005" and a.get("Value") == ["ISO_IR 192"]:
            continue
        if vr in BINARY_VRS:
            if ("InlineBinary" in a) != ("InlineBinary" in b):
                diffs.append("%s: InlineBinary presence differs" % where)
            continue
        va, vb = a.get("Value", []), b.get("Value", [])
        if vr == "SQ":
            if len(va) != len(vb):
                diffs.append("%s: %d items, pydicom %d" % (where, len(va), len(vb)))
                continue
            for i, (ia, ib) in enumerate(zip(va, vb)):
                compare(ia, ib, "%s[%d]." % (where, i), diffs, strict_vr)
            continue
        if vr == "PN":
            va = [norm_pn(v) for v in va]
            vb = [norm_pn(v) for v in vb]
        if len(va) != len(vb) or not all(same_number(x, y) for x, y in zip(va, vb)):
            diffs.append("%s (%s): %s, pydicom %s" % (where, vr, short(va), short(vb)))


def short(v):
    s = json.dumps(v, ensure_ascii=False)
    return s if len(s) < 160 else s[:157] + "..."


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in sys.argv
    if not args:
        print(__doc__)
        return 2
    telerad = args[0]
    roots = args[1:] or [PYDICOM_DATA + "/test_files", PYDICOM_DATA + "/charset_files"]
    if not args[1:]:
        if os.path.isdir(SHARED):
            roots.append(SHARED)
        else:
            print("note: %s is absent; comparing pydicom's own files only" % SHARED)
    files = []
    for root in roots:
        for d, _, names in os.walk(root):
            files += [os.path.join(d, n) for n in sorted(names)]
    counts = {"match": 0, "refused_both": 0, "deliberate": 0, "fail": 0, "reader": 0}
    tmp = tempfile.mkdtemp(prefix="telerad-compare-")
    for path in files:
        name = os.path.basename(path)
        theirs, their_err = pydicom_json(path)
        ours, our_err, rc = telerad_json(telerad, path)
        if theirs is not None:
            back, back_err = telerad_json_reader(telerad, theirs, tmp)
            reader_diffs = []
            if back is None:
                reader_diffs.append("telerad cannot read pydicom's JSON: %s" % back_err)
            else:
                compare(back, theirs, "", reader_diffs, strict_vr=True)
            if reader_diffs:
                counts["fail"] += 1
                print("FAIL %s: JSON read back differs" % path)
                for d in reader_diffs[:8]:
                    print("       " + d)
            else:
                counts["reader"] += 1
        if rc < 0 and rc != -1:
            print("FAIL %s: telerad died with signal %d" % (path, -rc))
            counts["fail"] += 1
            continue
        if theirs is None:
            if ours is None and our_err and "\n" not in our_err:
                counts["refused_both"] += 1
                if verbose:
                    print("ok   %s: both refuse (telerad: %s)" % (name, our_err))
            elif ours is None:
                print("FAIL %s: refused, but not with exactly one message: %r" % (path, our_err))
                counts["fail"] += 1
            else:
                print("FAIL %s: pydicom refuses (%s), telerad accepts" % (path, their_err))
                counts["fail"] += 1
            continue
        if ours is None:
            if name in DELIBERATE:
                counts["deliberate"] += 1
                print("note %s: %s (telerad: %s)" % (name, DELIBERATE[name], our_err))
            else:
                print("FAIL %s: telerad refuses a file pydicom reads: %s" % (path, our_err))
                counts["fail"] += 1
            continue
        diffs = []
        compare(ours, theirs, "", diffs)
        if diffs:
            counts["fail"] += 1
            print("FAIL %s: %d difference(s)" % (path, len(diffs)))
            for d in diffs[:8]:
                print("       " + d)
        else:
            counts["match"] += 1
            if verbose:
                print("ok   %s" % name)
    total = len(files)
    print("%d files: %d equal to pydicom, %d refused by both, %d deliberate differences, "
          "%d failures" % (total, counts["match"], counts["refused_both"], counts["deliberate"],
                           counts["fail"]))
    print("%d private elements kept as UN where pydicom used its private dictionary"
          % POLICY_COUNT[0])
    print("JSON reader: %d of pydicom's JSON documents read back unchanged" % counts["reader"])
    shutil.rmtree(tmp, ignore_errors=True)
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
