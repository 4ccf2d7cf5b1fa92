#!/usr/bin/python3
"""charset_oracle.py - test vectors for src/dicom/charset.c, decoded by pydicom.

Run with Debian's /usr/bin/python3 (it has pydicom 2.3). Walks every file in pydicom's
data/charset_files and every .dcm under data/test_files that uses a non-default Specific
Character Set (0008,0005), and writes one JSON line per text element (recursing into
sequences, with each item's own (0008,0005) taking over from its parent's as in PS3.5 7.5.3
and as pydicom reads it):

  {"file": ..., "tag": "GGGGEEEE", "path": "00081115/0/00100010", "charset": [terms],
   "vr": "PN", "raw": "<hex of the value bytes>", "expected": "<pydicom's str>"}

"charset" is the list of (0008,0005) values in force as pydicom sees them ([] = default).
"expected" is str(value) for single values and the str of each value joined by a backslash
for multi-valued ones; a PN value is str(PersonName), i.e. its groups joined by '='. pydicom's
value model trims some padding (trailing spaces and NULs, trailing empty PN groups, both
ends of AE); tests/unit/test_charset.c applies the same trimming before comparing, since that
is the data set layer's business rather than the character set's.

DS and IS are left out: pydicom turns them into numbers, not text.

Usage: /usr/bin/python3 tests/compat/charset_oracle.py > vectors.jsonl
A summary goes to standard error.
"""

import glob
import json
import os
import sys
import warnings

import pydicom
from pydicom.charset import convert_encodings
from pydicom.dataelem import RawDataElement
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

DATA = os.path.join(os.path.dirname(pydicom.__file__), "data")
CHARSET_DIR = os.path.join(DATA, "charset_files")
TEST_DIR = os.path.join(DATA, "test_files")

TEXT_VRS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI",
            "UR", "UT"}
DEFAULT_TERMS = ("", "ISO_IR 6")
MAX_DEPTH = 32

SPECIFIC_CHARACTER_SET = 0x00080005


def terms_of(value):
    """The (0008,0005) value as a list of str, as pydicom converted it."""
    if value is None or value == "":
        return []
    if isinstance(value, (MultiValue, list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def as_text(value):
    """pydicom's decoded value as one string (multiple values joined by a backslash)."""
    if value is None:
        return ""
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(as_text(v) for v in value)
    if isinstance(value, PersonName):
        return str(value)
    return str(value)


def own_charset(ds):
    """The raw (0008,0005) terms of `ds` itself, or None if it has no such element."""
    if SPECIFIC_CHARACTER_SET not in ds._dict:
        return None
    return terms_of(ds[SPECIFIC_CHARACTER_SET].value)


def walk(ds, inherited, fname, prefix, out, depth):
    """Emit vectors for the elements of `ds`; `inherited` is the parent's charset terms."""
    if depth > MAX_DEPTH:
        raise RuntimeError(f"{fname}: sequences nested deeper than {MAX_DEPTH}")
    own = own_charset(ds)
    terms = inherited if own is None else own
    # Check that we track the character set exactly as pydicom does: an item's own
    # (0008,0005), even an empty one, replaces the parent's (filereader.read_dataset).
    if ds.read_encoding is not None:
        expect = convert_encodings(terms or [""])
        got = ds.read_encoding
        got = [got] if isinstance(got, str) else list(got)
        if got != expect:
            raise RuntimeError(f"{fname} {prefix}: charset tracking {terms} -> {expect}, "
                               f"pydicom reads with {got}")
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        raw_bytes = raw.value if isinstance(raw, RawDataElement) else None
        elem = ds[tag]
        path = f"{prefix}{int(tag):08X}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                walk(item, terms, fname, f"{path}/{i}/", out, depth + 1)
            continue
        if elem.VR not in TEXT_VRS or raw_bytes is None:
            continue
        if not isinstance(raw_bytes, (bytes, bytearray)):
            continue
        out.append({
            "file": fname,
            "tag": f"{int(tag):08X}",
            "path": path,
            "charset": terms,
            "vr": elem.VR,
            "raw": bytes(raw_bytes).hex(),
            "expected": as_text(elem.value),
        })


def uses_non_default_charset(ds, depth=0):
    """True if `ds` or any nested item declares a non-default Specific Character Set."""
    if depth > MAX_DEPTH:
        return False
    own = own_charset(ds)
    if own is not None and any(t not in DEFAULT_TERMS for t in own):
        return True
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement) and raw.VR not in (None, "SQ"):
            continue
        elem = ds[tag]
        if elem.VR == "SQ":
            for item in elem.value or []:
                if uses_non_default_charset(item, depth + 1):
                    return True
    return False


def main():
    warnings.simplefilter("ignore")
    files = sorted(glob.glob(os.path.join(CHARSET_DIR, "*")))
    files = [f for f in files if f.endswith(".dcm")]
    candidates = sorted(glob.glob(os.path.join(TEST_DIR, "**", "*.dcm"), recursive=True))
    skipped = []
    for path in candidates:
        try:
            ds = pydicom.dcmread(path, force=True)
            if uses_non_default_charset(ds):
                files.append(path)
        except Exception as exc:  # unreadable test files (truncated on purpose, ...)
            skipped.append((path, exc))

    total = 0
    per_file = []
    for path in files:
        fname = os.path.relpath(path, DATA)
        out = []
        try:
            ds = pydicom.dcmread(path, force=True)
            walk(ds, [], fname, "", out, 0)
        except RuntimeError:
            raise
        except Exception as exc:
            skipped.append((path, exc))
            continue
        for vec in out:
            sys.stdout.write(json.dumps(vec, ensure_ascii=True) + "\n")
        total += len(out)
        per_file.append((fname, len(out)))

    for fname, n in per_file:
        print(f"  {fname}: {n} vectors", file=sys.stderr)
    for path, exc in skipped:
        print(f"  skipped {os.path.relpath(path, DATA)}: {exc}", file=sys.stderr)
    print(f"charset_oracle: {total} vectors from {len(per_file)} files "
          f"(pydicom {pydicom.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
