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

DS and IS are left out: pydicom turns them into numbers, not text. The top-level (0008,0005)
is missing too: pydicom converts it while reading the file, so its raw bytes are gone.

Then come synthetic vectors ("file": "synthetic"): byte tables of every supported set (all
bytes of the single-byte sets, every row of JIS X 0208, JIS X 0212, KS X 1001, the two-byte
GB18030 and GBK codes, a sample of four-byte GB18030, valid and invalid UTF-8, escapes and
delimiters), decoded by pydicom's own element conversion. --files-only leaves them out.

Usage: /usr/bin/python3 tests/compat/charset_oracle.py [--files-only] > vectors.jsonl
A summary goes to standard error.
"""

import glob
import json
import os
import sys
import warnings

import pydicom
import pydicom.tag
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
    # Take the raw elements first: converting (0008,0005) below replaces its raw form.
    raws = {tag: ds.get_item(tag) for tag in list(ds.keys())}
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
    for tag, raw in raws.items():
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


# ---------------------------------------------------------------------------------------
# Synthetic vectors: byte tables of every set, run through pydicom's own element conversion
# (DataElement_from_raw, as Dataset.__getitem__ does), written with "file": "synthetic".
# Only input where pydicom follows PS3.5 is generated. Left out on purpose:
# - ISO 2022 IR 58: pydicom 2.3 passes the fragment with its escape sequence to Python's
#   gb2312 codec, which keeps 'ESC $ ) A' in the text.
# - JIS X 0212 0x2237: glibc maps it to U+FF5E, Python to U+007E.
# - KS X 1001 0xA2E8 and 0xA4D4: glibc's newer tables have them, Python's do not.
# - GB18030 and GBK codes that Python maps to the Private Use Area: glibc follows GB18030-2005
#   and maps them to the characters encoded since (U+1E3F, U+FE10-U+FE19, U+9FB4-U+9FBB, ...);
#   GBK 0x80, which glibc reads as the euro sign.
# - Bytes undefined in the set an escape sequence designated: pydicom then reads the whole
#   fragment with the first encoding (mojibake), we put U+FFFD for the byte.
# - Delimiter bytes inside double-byte characters in PN and multi-valued VRs: pydicom splits
#   the raw value at '\\' and '=' before decoding.

TAGS = {"PN": 0x00100010, "LO": 0x00100020, "SH": 0x00080050, "LT": 0x00104000,
        "ST": 0x00080081, "UT": 0x0040A160, "CS": 0x00080060, "DA": 0x00080020,
        "UI": 0x00080018}

# (defined term, code extension term, final bytes of the G1 escape sequence), PS3.3 C.12-3
SINGLE_BYTE = [
    ("ISO_IR 100", "ISO 2022 IR 100", b"-A"), ("ISO_IR 101", "ISO 2022 IR 101", b"-B"),
    ("ISO_IR 109", "ISO 2022 IR 109", b"-C"), ("ISO_IR 110", "ISO 2022 IR 110", b"-D"),
    ("ISO_IR 126", "ISO 2022 IR 126", b"-F"), ("ISO_IR 127", "ISO 2022 IR 127", b"-G"),
    ("ISO_IR 138", "ISO 2022 IR 138", b"-H"), ("ISO_IR 144", "ISO 2022 IR 144", b"-L"),
    ("ISO_IR 148", "ISO 2022 IR 148", b"-M"), ("ISO_IR 166", "ISO 2022 IR 166", b"-T"),
]
ESC = b"\x1b"


def pydicom_decode(terms, vr, raw):
    """What pydicom reads for an element of `vr` with value `raw` under `terms`."""
    from pydicom.dataelem import DataElement_from_raw
    encodings = convert_encodings(list(terms) or [""])
    tag = TAGS[vr]
    elem = DataElement_from_raw(RawDataElement(pydicom.tag.Tag(tag), vr, len(raw), raw, 0,
                                               False, True), encodings)
    return elem, as_text(elem.value)


def decodable(raw, codec):
    try:
        raw.decode(codec)
        return True
    except UnicodeError:
        return False


def is_pua(text):
    return any(0xE000 <= ord(c) <= 0xF8FF for c in text)


def synthetic_vectors():
    """(name, terms, vr, raw) tuples."""
    out = []
    printable = bytes(b for b in range(0x20, 0x7F))
    high = bytes(range(0x80, 0x100))
    for plain, ext, final in SINGLE_BYTE:
        out.append((f"{plain} ascii", [plain], "LT", printable))
        out.append((f"{plain} all high bytes", [plain], "LT", high))
        out.append((f"{ext} all high bytes", [ext], "LT", high))
        out.append((f"{plain} PN", [plain], "PN", b"A" + high[0x40:0x50] + b"^B" + high[0x70:]))
        # from the default repertoire into this set and back at a line end (PS3.5 6.1.2.5.3)
        defined = bytes(b for b in range(0xA0, 0x100)
                        if decodable(bytes([b]), convert_encodings([ext])[0]))
        out.append((f"{ext} escape", ["", ext], "LT",
                    b"abc " + ESC + final + defined + b"\r\nxyz\xe9"))
        out.append((f"{ext} escape multi-valued", ["", ext], "LO",
                    ESC + final + defined[:20] + b"\\" + ESC + final + defined[-20:]))
    # three single-byte sets in one value
    out.append(("latin1 greek cyrillic", ["ISO 2022 IR 100", "ISO 2022 IR 126", "ISO 2022 IR 144"],
                "PN", b"Buc\xe9" + ESC + b"-F\xc4\xe9^J\xe9r=" + ESC + b"-L\xbb\xee\xda"))
    # default repertoire and non-charset VRs: Latin-1
    out.append(("default high bytes", [], "LO", b"J\xe9r\xf4me"))
    for terms in ([], ["ISO_IR 192"], ["", "ISO 2022 IR 87"], ["GB18030"]):
        out.append((f"CS {terms}", terms, "CS", b"ABC\xc4\xe9 "))
        out.append((f"DA {terms}", terms, "DA", b"2024\xb0"))
    # ISO_IR 13: JIS X 0201 katakana in G1, Roman in G0
    kana = bytes(range(0xA1, 0xE0))
    out.append(("ISO_IR 13 katakana", ["ISO_IR 13"], "LT", printable.replace(b"\\", b"") + kana))
    out.append(("ISO 2022 IR 13 katakana PN", ["ISO 2022 IR 13", "ISO 2022 IR 87"], "PN",
                kana[:30] + b"^" + kana[30:]))
    # JIS X 0208 (ISO-IR 87), row by row; rows in LT (no splitting), a PN per row without the
    # bytes pydicom splits at
    for row in range(0x21, 0x7F):
        pairs = [bytes([row, c]) for c in range(0x21, 0x7F)
                 if decodable(ESC + b"$B" + bytes([row, c]), "iso2022_jp")]
        if not pairs:
            continue
        out.append((f"JIS X 0208 row {row:02X}", ["", "ISO 2022 IR 87"], "LT",
                    ESC + b"$B" + b"".join(pairs) + ESC + b"(B"))
        pn = [p for p in pairs if not set(p) & {0x3D, 0x5C}]
        if pn:
            out.append((f"JIS X 0208 row {row:02X} PN", ["ISO 2022 IR 13", "ISO 2022 IR 87"],
                        "PN", b"Yamada^Tarou=" + ESC + b"$B" + b"".join(pn[:20]) + ESC + b"(J^"
                        + ESC + b"$B" + b"".join(pn[20:40]) + ESC + b"(J"))
    # JIS X 0212 (ISO-IR 159)
    for row in range(0x21, 0x7F):
        pairs = [bytes([row, c]) for c in range(0x21, 0x7F)
                 if (row, c) != (0x22, 0x37)
                 and decodable(ESC + b"$(D" + bytes([row, c]), "iso2022_jp_2")]
        if pairs:
            out.append((f"JIS X 0212 row {row:02X}", ["", "ISO 2022 IR 87", "ISO 2022 IR 159"],
                        "LT", ESC + b"$(D" + b"".join(pairs) + ESC + b"(B"))
    # KS X 1001 (ISO-IR 149), G1
    for row in range(0xA1, 0xFF):
        pairs = [bytes([row, c]) for c in range(0xA1, 0xFF)
                 if (row, c) not in ((0xA2, 0xE8), (0xA4, 0xD4))
                 and decodable(bytes([row, c]), "euc_kr")]
        if pairs:
            out.append((f"KS X 1001 row {row:02X}", ["", "ISO 2022 IR 149"], "LT",
                        ESC + b"$)C" + b"".join(pairs) + b" abc \r\n\xe9"))
    out.append(("Korean PN", ["", "ISO 2022 IR 149"], "PN",
                b"Kim^Heejung=" + ESC + b"$)C\xb1\xe8^" + ESC + b"$)C\xc8\xf1\xc1\xdf="
                + ESC + b"$)C\xb1\xe8^" + ESC + b"$)C\xc8\xf1\xc1\xdf"))
    out.append(("Korean multi-valued", ["", "ISO 2022 IR 149"], "LO",
                ESC + b"$)C\xb1\xe8 Kim\\" + ESC + b"$)C\xc8\xf1\\\xe9"))
    # GB18030 and GBK, two-byte rows (LT: pydicom splits other VRs at 0x5C trail bytes)
    for codec, term in (("gb18030", "GB18030"), ("gbk", "GBK")):
        for lead in range(0x81, 0xFF):
            chars = []
            for trail in list(range(0x40, 0x7F)) + list(range(0x80, 0xFF)):
                b = bytes([lead, trail])
                try:
                    text = b.decode(codec)
                except UnicodeError:
                    continue
                if not is_pua(text):
                    chars.append(b)
            if chars:
                out.append((f"{term} lead {lead:02X}", [term], "LT", b"".join(chars)))
    # GB18030 four-byte sequences for a sample of the BMP and beyond
    skip = set(range(0xFE10, 0xFE1A)) | set(range(0x9FB4, 0x9FBC)) | {0x1E3F}
    four = []
    for cp in list(range(0x80, 0x10000, 29)) + [0x10000, 0x1F600, 0x20087, 0x10FFFF]:
        ch = chr(cp)
        if cp in skip or 0xD800 <= cp <= 0xDFFF or 0xE000 <= cp <= 0xF8FF:
            continue
        b = ch.encode("gb18030")
        if len(b) == 4:
            four.append(b)
    for i in range(0, len(four), 64):
        out.append((f"GB18030 four-byte {i // 64}", ["GB18030"], "LT", b"".join(four[i:i + 64])))
    # UTF-8, valid and not (pydicom replaces maximal subparts, as Python's decoder does)
    out.append(("UTF-8 PN", ["ISO_IR 192"], "PN",
                "Wang^XiaoDong=王^小東=Ωμέγα^Ж".encode()))
    out.append(("UTF-8 LT", ["ISO_IR 192"], "LT", "Ærøskøbing 😀 中文 ไทย".encode()))
    for i, bad in enumerate([b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"a\xe4\xb8",
                             b"\xf0\x9f\x98 ", b"\xff\xfe", b"\xe0\x80\xaf", b"\x80abc\xc2"]):
        out.append((f"UTF-8 invalid {i}", ["ISO_IR 192"], "LT", bad))
    # misspelled terms that pydicom corrects
    out.append(("misspelled ISO-IR 100", ["ISO-IR 100"], "LO", b"J\xe9r\xf4me"))
    out.append(("misspelled ISO IR 192", ["ISO IR 192"], "LO", "Jérôme".encode()))
    out.append(("misspelled ISO_2022_IR_87", ["", "ISO_2022_IR_87"], "LO",
                ESC + b"$B;3ED" + ESC + b"(B"))
    return out


def emit_synthetic(out):
    for name, terms, vr, raw in synthetic_vectors():
        elem, text = pydicom_decode(terms, vr, raw)
        out.append({
            "file": "synthetic",
            "tag": f"{TAGS[vr]:08X}",
            "path": name,
            "charset": terms,
            "vr": vr,
            "raw": raw.hex(),
            "expected": text,
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

    synthetic = []
    if "--files-only" not in sys.argv[1:]:
        emit_synthetic(synthetic)
        for vec in synthetic:
            sys.stdout.write(json.dumps(vec, ensure_ascii=True) + "\n")

    for fname, n in per_file:
        print(f"  {fname}: {n} vectors", file=sys.stderr)
    for path, exc in skipped:
        print(f"  skipped {os.path.relpath(path, DATA)}: {exc}", file=sys.stderr)
    print(f"charset_oracle: {total} vectors from {len(per_file)} files, "
          f"{len(synthetic)} synthetic (pydicom {pydicom.__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
