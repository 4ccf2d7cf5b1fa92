#!/usr/bin/python3
"""Write -> read round trips, checked on real files, with dicom3tools' dciodvfy as the judge.

For every file of the corpus that `telerad json` reads (Debian python3-pydicom's test and
charset files, and ../shared/data/pydicom-data when present):

  1. `telerad convert IN A` (IN's own transfer syntax): A's data set equals IN's (the DICOM JSON
     of both is identical, but for group lengths, which are recomputed, and odd-length binary
     values, which gain their padding byte);
  2. `telerad convert A B`: B is byte-identical to A (writing is a fixpoint);
  3. for files whose pixel data is not compressed: converted to Explicit VR Little Endian,
     Implicit VR Little Endian, Explicit VR Big Endian and Deflated, the data set is unchanged
     (in implicit VR, attributes the dictionary does not know come back as UN: PS3.5 6.2.2);
  4. dciodvfy (if installed) reports no error on A that it does not report on IN.

Exit status 0 when all hold, 1 otherwise, 77 (skip) when pydicom's files are absent.

usage: roundtrip.py TELERAD
"""
import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

PYDICOM_DATA = "/usr/lib/python3/dist-packages/pydicom/data"
HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data", "pydicom-data"))
SYNTAXES = ["explicit", "implicit", "big", "deflated"]


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, timeout=120)


def telerad_json(telerad, path):
    p = run(telerad, "json", path)
    return p.stdout if p.returncode == 0 else None


def dciodvfy_errors(path):
    p = run("dciodvfy", "-new", path)
    out = (p.stdout + p.stderr).decode("latin-1")
    errors = set()
    for line in out.splitlines():
        if line.startswith("Error"):
            # Drop the element path: the same wrong value may be reported at another path
            # (a data set's invalid SOP Instance UID is copied into the meta group, as PS3.10
            # requires).
            line = re.sub(r"^Error - </[^>]*> - ", "Error - ", line.strip())
            errors.add(re.sub(r"\s+", " ", line))
    return errors


def ambiguous(tag):
    """The dictionary gives this attribute a choice of VRs ("US or SS", "OB or OW" ...)."""
    try:
        from pydicom.datadict import dictionary_VR
        return " or " in dictionary_VR(int(tag, 16))
    except (ImportError, KeyError):
        return False


def padded(x, y):
    """y is x's binary value padded to even length with one NUL (PS3.5 7.1.1)."""
    if "InlineBinary" not in x or "InlineBinary" not in y:
        return False
    a, b = base64.b64decode(x["InlineBinary"]), base64.b64decode(y["InlineBinary"])
    return len(a) % 2 == 1 and b == a + b"\0"


def equivalent(original, converted, implicit):
    """Data sets equal but for what writing a conformant file changes: group lengths (recomputed,
    and they count bytes of the encoding), odd-length binary values (padded with a NUL), and in
    implicit VR the VR of private attributes (UN, PS3.5 6.2.2) and of attributes with a choice
    of VR (resolved by the rules of PS3.5 and PS3.3)."""
    a, b = json.loads(original), json.loads(converted)

    def same(x, y):
        if set(x) != set(y):
            return False
        for tag in x:
            ex, ey = x[tag], y[tag]
            if ex == ey:
                continue
            if tag.endswith("0000") and ex.get("vr") == ey.get("vr") == "UL":
                continue  # group length
            if ex.get("vr") == ey.get("vr") and padded(ex, ey):
                continue
            if implicit and ey.get("vr") == "UN" and int(tag[:4], 16) % 2 == 1:
                continue  # private: VR not recoverable
            if implicit and ambiguous(tag):
                continue
            if ex.get("vr") == "SQ" and ey.get("vr") == "SQ":
                vx, vy = ex.get("Value", []), ey.get("Value", [])
                if len(vx) == len(vy) and all(same(i, j) for i, j in zip(vx, vy)):
                    continue
            return False
        return True

    return same(a, b)


def check(telerad, path, tmp, have_dciodvfy):
    problems = []
    original = telerad_json(telerad, path)
    if original is None:
        return "skipped", problems
    base = os.path.join(tmp, str(abs(hash(path))))
    a, b = base + "_a.dcm", base + "_b.dcm"
    p = run(telerad, "convert", path, a)
    if p.returncode:
        return "fail", ["convert failed: " + p.stderr.decode().strip()]
    written = telerad_json(telerad, a)
    if written != original and (written is None or not equivalent(original, written, False)):
        problems.append("data set changed by writing it in its own transfer syntax")
    p = run(telerad, "convert", a, b)
    if p.returncode or open(a, "rb").read() != open(b, "rb").read():
        problems.append("writing is not a fixpoint (convert of the output differs)")
    # Encapsulated pixel data (convert --ts now decodes it, so the data set changes: the codecs
    # are checked by codecs.py).
    compressed = b"(PixelSequence" in run(telerad, "dump", path).stdout
    if not compressed:
        for ts in SYNTAXES:
            out = "%s_%s.dcm" % (base, ts)
            p = run(telerad, "convert", "--ts", ts, path, out)
            if p.returncode:
                problems.append("convert --ts %s failed: %s" % (ts, p.stderr.decode().strip()))
                continue
            back = telerad_json(telerad, out)
            if back == original:
                continue
            if back is not None and equivalent(original, back, ts == "implicit"):
                continue
            problems.append("data set changed when written as %s" % ts)
    if have_dciodvfy:
        new_errors = dciodvfy_errors(a) - dciodvfy_errors(path)
        if new_errors:
            problems.append("dciodvfy errors not in the input: " + "; ".join(sorted(new_errors)))
    for f in os.listdir(tmp):
        if f.startswith(os.path.basename(base)):
            os.unlink(os.path.join(tmp, f))
    return ("fail" if problems else "ok"), problems


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    telerad = sys.argv[1]
    roots = [PYDICOM_DATA + "/test_files", PYDICOM_DATA + "/charset_files"]
    if not os.path.isdir(roots[0]):
        print("SKIP: %s is absent (apt-get install python3-pydicom)" % roots[0])
        return 77
    if os.path.isdir(SHARED):
        roots.append(SHARED)
    files = [os.path.join(d, n) for r in roots for d, _, ns in os.walk(r) for n in sorted(ns)]
    have_dciodvfy = shutil.which("dciodvfy") is not None
    if not have_dciodvfy:
        print("note: dciodvfy not installed (apt-get install dicom3tools): IOD checks skipped")
    tmp = tempfile.mkdtemp(prefix="telerad-roundtrip-")
    counts = {"ok": 0, "fail": 0, "skipped": 0}
    try:
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            results = pool.map(lambda f: (f, check(telerad, f, tmp, have_dciodvfy)), files)
            for path, (status, problems) in results:
                counts[status] += 1
                if problems:
                    print("FAIL %s" % path)
                    for pr in problems:
                        print("     " + pr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d files: %d round trips identical, %d failed, %d not DICOM files telerad reads"
          % (len(files), counts["ok"], counts["fail"], counts["skipped"]))
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
