#!/usr/bin/python3
"""make_corpus.py - write the seed corpora of telerad's fuzz targets.

    /usr/bin/python3 fuzz/make_corpus.py [OUTDIR]     (default: fuzz/corpus)

Writes OUTDIR/part10/*.dcm (seeds for fuzz_part10) and OUTDIR/json/*.json (seeds for
fuzz_json). Every file is SYNTHETIC and small (a few KB at most): the element encoder below
writes exactly the bytes each case needs, including the ones a conforming writer never would
(odd lengths, undefined-length items, UN holding a sequence, ...). pydicom (Debian's
/usr/bin/python3 has 2.3.1) is used only to encode the multi-byte character sets and to produce
DICOM JSON with an independent implementation; the script still writes the binary seeds
without it.

The output is deterministic: running the script again rewrites the same bytes, so the committed
corpus can be checked against it (git diff after a run shows nothing). Entries found by fuzzing
and merged into the corpus (see fuzz/run.sh) live beside these under other names and are not
touched.

Coverage, per the fuzzing issue: each uncompressed transfer syntax (implicit LE, explicit LE,
explicit BE, deflated), bare data sets without meta, nested sequences with defined and undefined
lengths, undefined-length items, encapsulated pixel data with an offset table and several
fragments, UN of undefined length holding a sequence, private creators and private tags, all 34
VRs, ISO 2022 IR 87 / GB18030 / UTF-8 text, odd lengths.
"""
import json
import os
import struct
import sys
import zlib

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SC_IMAGE = "1.2.840.10008.5.1.4.1.1.7"

# PS3.5 7.1.2: VRs whose explicit header has two reserved bytes and a 32-bit length.
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class Enc:
    """Encodes elements in one transfer syntax. Values are given as bytes already in the
    stream's byte order (use the helpers num() and text())."""

    def __init__(self, implicit=False, big=False):
        self.implicit = implicit
        self.big = big
        self.order = ">" if big else "<"

    def tag(self, tag):
        return struct.pack(self.order + "HH", tag >> 16, tag & 0xFFFF)

    def u32(self, v):
        return struct.pack(self.order + "I", v)

    def num(self, fmt, *values):
        """Binary numbers: one format letter repeated for each value, or one per value."""
        if len(fmt) == 1:
            fmt *= len(values)
        return struct.pack(self.order + fmt, *values)

    def el(self, tag, vr, value, length=None):
        n = len(value) if length is None else length
        if self.implicit or tag >> 16 == 0xFFFE:
            return self.tag(tag) + self.u32(n) + value
        if vr in LONG_VRS or len(vr) != 2 or n > 0xFFFF:
            return self.tag(tag) + vr.encode() + b"\0\0" + self.u32(n) + value
        return self.tag(tag) + vr.encode() + struct.pack(self.order + "H", n) + value

    def item(self, content, undefined=False):
        if undefined:
            return self.tag(ITEM) + self.u32(UNDEFINED) + content + self.tag(ITEM_END) + self.u32(0)
        return self.tag(ITEM) + self.u32(len(content)) + content

    def seq(self, tag, items, undefined=False, vr="SQ"):
        body = b"".join(items)
        if undefined:
            return self.el(tag, vr, body + self.tag(SEQ_END) + self.u32(0), UNDEFINED)
        return self.el(tag, vr, body)

    def encapsulated(self, tag, fragments, vr="OB"):
        body = b"".join(self.tag(ITEM) + self.u32(len(f)) + f for f in fragments)
        return self.el(tag, vr, body + self.tag(SEQ_END) + self.u32(0), UNDEFINED)


def text(s, pad=b" ", charset="ascii"):
    b = s.encode(charset) if isinstance(s, str) else s
    return b + pad if len(b) % 2 else b


def uid(s):
    return text(s, b"\0")


def meta(ts, sop_class=SC_IMAGE, sop_instance="1.2.826.0.1.3680043.8.498.1", group_length=True,
         extra=b""):
    """Preamble, "DICM" and a file meta group (always explicit VR little endian)."""
    e = Enc()
    body = (e.el(0x00020001, "OB", b"\0\1") + e.el(0x00020002, "UI", uid(sop_class)) +
            e.el(0x00020003, "UI", uid(sop_instance)) + e.el(0x00020010, "UI", uid(ts)) +
            e.el(0x00020012, "UI", uid("1.2.826.0.1.3680043.8.498.2")) +
            e.el(0x00020013, "SH", text("FUZZSEED")) + extra)
    head = e.el(0x00020000, "UL", e.num("I", len(body))) if group_length else b""
    return b"\0" * 128 + b"DICM" + head + body


def patient(e, name="Doe^Jane", charset=None):
    out = b""
    if charset:
        out += e.el(0x00080005, "CS", text(charset))
    out += e.el(0x00080016, "UI", uid(SC_IMAGE))
    out += e.el(0x00080018, "UI", uid("1.2.826.0.1.3680043.8.498.1"))
    out += e.el(0x00080020, "DA", text("20240131"))
    out += e.el(0x00080060, "CS", text("OT"))
    out += e.el(0x00100010, "PN", text(name))
    out += e.el(0x00100020, "LO", text("FUZZ-001"))
    return out


def image(e, rows=4, cols=4, pixels=True):
    out = (e.el(0x00280002, "US", e.num("H", 1)) + e.el(0x00280004, "CS", text("MONOCHROME2")) +
           e.el(0x00280010, "US", e.num("H", rows)) + e.el(0x00280011, "US", e.num("H", cols)) +
           e.el(0x00280100, "US", e.num("H", 16)) + e.el(0x00280101, "US", e.num("H", 12)) +
           e.el(0x00280102, "US", e.num("H", 11)) + e.el(0x00280103, "US", e.num("H", 0)))
    if pixels:
        out += e.el(0x7FE00010, "OW", e.num("H", *range(rows * cols)))
    return out


def referenced_series(e, undefined_seq, undefined_items, depth=2):
    """(0008,1115) Referenced Series Sequence with a nested (0008,114A)/(0008,1199) below."""
    inner = e.el(0x00081150, "UI", uid(CT_IMAGE)) + e.el(0x00081155, "UI", uid("1.2.3.4.5"))
    level = e.seq(0x00081199, [e.item(inner, undefined_items)] * 2, undefined_seq)
    for _ in range(depth - 1):
        content = e.el(0x0020000E, "UI", uid("1.2.3.4")) + level
        level = e.seq(0x00081115, [e.item(content, undefined_items)], undefined_seq)
    return level


def all_vrs(e):
    """One element of each of the 34 VRs (PS3.5 6.2), in a private block of group 0009."""
    values = [
        ("AE", text("TELERAD_SCP")), ("AS", text("042Y")), ("AT", e.num("HH", 0x0010, 0x0010)),
        ("CS", text("ORIGINAL\\PRIMARY")), ("DA", text("20240229")),
        ("DS", text("1.5\\-2e3\\ 7 ")), ("DT", text("20240229123456.789+0100")),
        ("FD", e.num("d", 3.141592653589793, -0.0)), ("FL", e.num("f", 1.25, 1e30)),
        ("IS", text("-12\\+34")), ("LO", text("long string")), ("LT", text("long\\text\r\n")),
        ("OB", bytes(range(7)) + b"\0"), ("OD", e.num("d", 1.0, 2.0)), ("OF", e.num("f", 0.5)),
        ("OL", e.num("I", 0xDEADBEEF)), ("OV", e.num("Q", 2**63 + 5)), ("OW", e.num("H", 1, 2, 3)),
        ("PN", text("Smith^John^^Dr.=^=")), ("SH", text("short")), ("SL", e.num("i", -7, 7)),
        ("SS", e.num("h", -1, 1)), ("ST", text("short text")), ("SV", e.num("q", -(2**62))),
        ("TM", text("235959.999999")), ("UC", text("unlimited\\characters")),
        ("UI", uid("1.2.840.10008.1.2.1")), ("UL", e.num("I", 4294967295)), ("UN", b"\x01\x02"),
        ("UR", text("http://example.invalid/a b")), ("US", e.num("H", 65535, 0)),
        ("UT", text("unlimited text \\ with backslash")), ("UV", e.num("Q", 2**64 - 1)),
    ]
    out = e.el(0x00090010, "LO", text("TELERAD FUZZ"))
    for i, (vr, value) in enumerate(values, 1):
        if vr == "SQ":
            continue
        out += e.el(0x00091000 + i, vr, value)
    # The 34th, SQ, as a private sequence with one item.
    out += e.seq(0x00091030, [e.item(e.el(0x00091031, "LO", text("in item")))])
    return out


def sq_of(e, tag, content, undefined=False, items=1, item_undefined=False):
    return e.seq(tag, [e.item(content, item_undefined)] * items, undefined)


def deep(e, levels, undefined):
    """`levels` nested (0008,1115) sequences of one item each."""
    content = e.el(0x00100010, "PN", text("Deep^Nest"))
    for _ in range(levels):
        content = sq_of(e, 0x00081115, content, undefined, item_undefined=undefined)
    return content


def part10_seeds():
    le, ile, be = Enc(), Enc(implicit=True), Enc(big=True)
    seeds = {}

    # Each transfer syntax, with defined- and undefined-length sequences.
    for name, e, ts in (("implicit_le", ile, IMPLICIT_LE), ("explicit_le", le, EXPLICIT_LE),
                        ("explicit_be", be, EXPLICIT_BE)):
        body = patient(e) + referenced_series(e, False, False) + image(e)
        seeds[name + ".dcm"] = meta(ts) + body
        body = patient(e) + referenced_series(e, True, True, depth=3) + image(e)
        seeds[name + "_undefined_lengths.dcm"] = meta(ts) + body
        seeds[name + "_all_vrs.dcm"] = meta(ts) + patient(e) + all_vrs(e)

    # Deflated explicit VR LE (PS3.5 A.5): raw deflate, and the zlib-wrapped variant some
    # writers produce.
    body = patient(le) + referenced_series(le, True, False) + image(le, 8, 8)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    seeds["deflated.dcm"] = meta(DEFLATED_LE) + raw.compress(body) + raw.flush()
    seeds["deflated_zlib_header.dcm"] = meta(DEFLATED_LE) + zlib.compress(body, 9)
    bomb = le.el(0x7FE00010, "OB", b"\0" * 65536)
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    seeds["deflated_expands.dcm"] = meta(DEFLATED_LE) + raw.compress(patient(le) + bomb) + raw.flush()

    # Bare data sets without preamble or meta (read with --force / allow_no_meta).
    seeds["bare_implicit_le.dcm"] = patient(ile) + referenced_series(ile, True, True)
    seeds["bare_explicit_le.dcm"] = patient(le) + referenced_series(le, False, False) + image(le)
    seeds["bare_explicit_be.dcm"] = patient(be) + image(be)
    seeds["bare_group_0000.dcm"] = (ile.el(0x00000000, "UL", ile.num("I", 18)) +
                                    ile.el(0x00000100, "US", ile.num("H", 0x0030)) +
                                    ile.el(0x00000110, "US", ile.num("H", 1)))

    # Encapsulated pixel data (PS3.5 A.4): offset table and several fragments, in JPEG and RLE;
    # also an empty offset table and OW instead of OB.
    bot = le.num("I", 0, 24)
    frags = [bot, b"\xFF\xD8\xFF\xE0" + bytes(12), b"\x11" * 7 + b"\xFF", b"\xFF\xD9\0\0" + bytes(12)]
    seeds["encapsulated_jpeg.dcm"] = (meta(JPEG_BASELINE) + patient(le) + image(le, pixels=False)
                                      + le.encapsulated(0x7FE00010, frags))
    rle = le.num("I", 1, 64) + bytes(56) + b"\x0F" + bytes(16)
    seeds["encapsulated_rle.dcm"] = (meta(RLE_LOSSLESS) + patient(le) + image(le, pixels=False) +
                                     le.encapsulated(0x7FE00010, [b"", rle + b"\0", b"\x80" * 4],
                                                     vr="OW"))
    seeds["encapsulated_implicit.dcm"] = (meta(IMPLICIT_LE) + patient(ile) +
                                          ile.encapsulated(0x7FE00010, [b"", b"\1\2\3\4"]))

    # UN of undefined length holding an implicit VR sequence (PS3.5 6.2.2), public and private;
    # UN of defined length whose public tag is a sequence.
    implicit_item = ile.item(ile.el(0x00081150, "UI", uid(CT_IMAGE)), True)
    un_seq = le.el(0x00081115, "UN", implicit_item + le.tag(SEQ_END) + le.u32(0), UNDEFINED)
    priv = (le.el(0x00290010, "LO", text("SIEMENS CSA HEADER")) +
            le.el(0x00291010, "UN", implicit_item + le.tag(SEQ_END) + le.u32(0), UNDEFINED))
    defined = le.el(0x00081140, "UN", ile.item(ile.el(0x00081155, "UI", uid("1.2.3"))))
    seeds["un_sequence.dcm"] = meta(EXPLICIT_LE) + patient(le) + un_seq + defined + priv

    # Private creators, private tags and a private sequence, in implicit VR (all UN then).
    pe = ile
    priv = (pe.el(0x00090010, "LO", text("ACME 1.0")) + pe.el(0x00090011, "LO", text("OTHER")) +
            pe.el(0x00091001, "LO", text("private value")) + pe.el(0x00091102, "US", pe.num("H", 3)) +
            pe.seq(0x00091105, [pe.item(pe.el(0x00100020, "LO", text("X")), True)], True) +
            pe.el(0x00110010, "LO", text("")) + pe.el(0x0011FF00, "OB", b"\0" * 4))
    seeds["private_tags.dcm"] = meta(IMPLICIT_LE) + patient(pe) + priv

    # Character sets: ISO 2022 IR 87 (PS3.5 H.3.1 example), GB18030, UTF-8, Latin-1.
    seeds["charset_ir87.dcm"] = meta(EXPLICIT_LE) + patient(
        le, text(b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B=\x1b$B$d$^$@\x1b(B^\x1b$B$?$m$&\x1b(B"),
        "\\ISO 2022 IR 87")
    seeds["charset_gb18030.dcm"] = meta(EXPLICIT_LE) + patient(
        le, text("Wang^XiaoDong=王^小东=".encode("gb18030")), "GB18030")
    seeds["charset_utf8.dcm"] = meta(EXPLICIT_LE) + patient(
        le, text("Gröbner^Ærøskøbing=山田^太郎=やまだ^たろう".encode("utf-8")), "ISO_IR 192")
    seeds["charset_latin1.dcm"] = meta(IMPLICIT_LE) + patient(
        ile, text("Buc^Jérôme".encode("latin-1")), "ISO_IR 100")
    item_charset = sq_of(le, 0x00081115, le.el(0x00080005, "CS", text("ISO_IR 192")) +
                         le.el(0x00100010, "PN", text("Müller^Jürgen".encode("utf-8"))))
    seeds["charset_in_item.dcm"] = (meta(EXPLICIT_LE) +
                                    patient(le, text(b"M\xfcller"), "ISO_IR 100") + item_charset)

    # Odd lengths (not padded), an unknown VR made of letters, an implicit element in an
    # explicit stream, stray delimiters, trailing padding, a meta group without group length.
    odd = (le.el(0x00100010, "PN", b"Odd^Len") + le.el(0x00100020, "LO", b"ABC") +
           le.el(0x00181000, "LO", b"X") + le.el(0x00190010, "LO", b"PRIV") +
           le.el(0x00191001, "ZZ", b"\1\2\3") + le.el(0x00200013, "IS", b"1"))
    seeds["odd_lengths.dcm"] = meta(EXPLICIT_LE) + odd + b"\0\0\0"
    mixed = (le.el(0x00080060, "CS", text("OT")) + ile.el(0x00100010, "", text("Implicit^In")) +
             le.tag(ITEM_END) + le.u32(0) + le.tag(SEQ_END) + le.u32(0) +
             le.el(0x00100020, "LO", text("ID")))
    seeds["mixed_encoding.dcm"] = meta(EXPLICIT_LE, group_length=False) + mixed
    seeds["declared_implicit_is_explicit.dcm"] = meta(IMPLICIT_LE) + patient(le) + image(le)

    # Ambiguous VRs in implicit VR (US or SS by Pixel Representation, LUT Data).
    amb = (ile.el(0x00280103, "US", ile.num("H", 1)) + ile.el(0x00280106, "", ile.num("h", -5)) +
           sq_of(ile, 0x00283010, ile.el(0x00283002, "", ile.num("HHH", 1, 0, 16)) +
                 ile.el(0x00283006, "", ile.num("H", 7))))
    seeds["ambiguous_vrs.dcm"] = meta(IMPLICIT_LE) + patient(ile) + amb

    # Nesting: a little below and at the limit, defined and undefined, plus an undefined-length
    # OB value scanned to its delimiter and a sequence delimiter ending a defined sequence.
    seeds["nested_16_undefined.dcm"] = meta(EXPLICIT_LE) + deep(le, 16, True)
    seeds["nested_16_defined_implicit.dcm"] = meta(IMPLICIT_LE) + deep(ile, 16, False)
    seeds["nested_65.dcm"] = meta(EXPLICIT_LE) + deep(le, 65, True)
    scan = le.el(0x00091010, "OB", b"abcdefgh" + le.tag(SEQ_END) + le.u32(0), UNDEFINED)
    early = le.seq(0x00081115, [le.item(le.el(0x00100020, "LO", text("A"))),
                                le.tag(SEQ_END) + le.u32(0)])
    early = early + le.el(0x00100021, "LO", text("after"))
    seeds["delimiters.dcm"] = (meta(EXPLICIT_LE) + le.el(0x00090010, "LO", text("X")) + scan +
                               early)
    # Header only stops here: float pixel data and pixel data after an empty sequence.
    seeds["pixels_after_sequence.dcm"] = (meta(EXPLICIT_LE) + patient(le) +
                                          le.seq(0x00081115, [], True) + image(le, 2, 2) +
                                          le.el(0x7FE00008, "OF", le.num("f", 1.0)))
    return seeds


# ---- JSON ----------------------------------------------------------------------------------

def json_seeds(part10):
    seeds = {}
    try:
        import pydicom  # noqa: F401 - Debian's python3 has it
        from pydicom.filebase import DicomBytesIO
        from pydicom import dcmread
    except ImportError:
        dcmread = None
        print("make_corpus.py: no pydicom; JSON seeds from pydicom skipped", file=sys.stderr)
    if dcmread:
        for name in ("explicit_le.dcm", "implicit_le_undefined_lengths.dcm",
                     "explicit_le_all_vrs.dcm", "charset_ir87.dcm", "charset_gb18030.dcm",
                     "charset_utf8.dcm", "ambiguous_vrs.dcm", "private_tags.dcm",
                     "encapsulated_jpeg.dcm", "un_sequence.dcm"):
            try:
                ds = dcmread(DicomBytesIO(part10[name]), force=True)
                ds.decode()
                text_json = ds.to_json(bulk_data_threshold=1 << 20)
            except Exception as exc:  # pydicom rejects some deliberately odd seeds
                print(f"make_corpus.py: pydicom cannot convert {name}: {exc}", file=sys.stderr)
                continue
            out = json.dumps(json.loads(text_json), sort_keys=True, ensure_ascii=False)
            seeds["pydicom_" + name.replace(".dcm", ".json")] = out.encode("utf-8")

    # Hand-written: the shapes PS3.18 F.2 allows and the ones a reader must refuse.
    pn = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou",
                                              "Ideographic": "山田^太郎",
                                              "Phonetic": "やまだ^たろう"}]}}
    study = {
        "00080005": {"vr": "CS", "Value": ["ISO_IR 192"]},
        "00080020": {"vr": "DA", "Value": ["20240131"]},
        "00080061": {"vr": "CS", "Value": ["CT", "MR"]},
        "00081190": {"vr": "UR", "Value": ["http://example.invalid/studies/1.2.3"]},
        "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
        "00200010": {"vr": "SH", "Value": ["S1"]},
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00201206": {"vr": "IS", "Value": [3]},
        "00280030": {"vr": "DS", "Value": [0.5, 1e-3]},
    }
    seeds["qido_studies.json"] = [study, dict(study, **pn), {}]
    seeds["person_name_groups.json"] = pn
    seeds["binary_and_numbers.json"] = {
        "00280010": {"vr": "US", "Value": [512]},
        "00281052": {"vr": "DS", "Value": [-1024]},
        "00280106": {"vr": "SS", "Value": [-32768]},
        "00189219": {"vr": "SV", "Value": [-9007199254740991]},
        "0008041F": {"vr": "UV", "Value": [18446744073709551615]},
        "00209165": {"vr": "AT", "Value": ["00100010", "7FE00010"]},
        "00181318": {"vr": "FD", "Value": [2.5, -0.0]},
        "00189087": {"vr": "FL", "Value": [3.4e38]},
        "7FE00010": {"vr": "OW", "InlineBinary": "AAECAwQFBgc="},
        "00091001": {"vr": "OB", "BulkDataURI": "http://example.invalid/bulk/1"},
        "00090010": {"vr": "LO", "Value": ["ACME"]},
        "00091002": {"vr": "UN", "InlineBinary": "AQI"},
    }
    inner = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
             "00081155": {"vr": "UI", "Value": ["1.2.3.4"]}}
    seq = {"00081115": {"vr": "SQ", "Value": [{"00081199": {"vr": "SQ", "Value": [inner, inner]},
                                               "0020000E": {"vr": "UI", "Value": ["1.2.3"]}}]},
           "00081110": {"vr": "SQ", "Value": []}, "00081111": {"vr": "SQ"}}
    seeds["sequences.json"] = seq
    nested = {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Deep"}]}}
    for _ in range(70):
        nested = {"00081115": {"vr": "SQ", "Value": [nested]}}
    seeds["nested_70.json"] = nested
    seeds["nulls_and_empty.json"] = {
        "00080018": {"vr": "UI"}, "00100010": {"vr": "PN", "Value": [None, {"Alphabetic": None}]},
        "00100020": {"vr": "LO", "Value": None}, "00201041": {"vr": "DS", "Value": [None, 1]},
        "00080008": {"vr": "CS", "Value": ["ORIGINAL", None, "AXIAL"]},
        "00321060": {"vr": "LT", "Value": ["back\\slash and \u0000 nul"]}}
    seeds["single_in_array.json"] = [{"00100020": {"vr": "LO", "Value": ["one"]}}]
    out = {}
    for name, value in seeds.items():
        out[name] = value if isinstance(value, bytes) else json.dumps(
            value, ensure_ascii=False, sort_keys=True).encode("utf-8")
    # A few malformed ones: wrong types, bad tags, bad base64, trailing garbage.
    out["bad_shapes.json"] = (b'{"0010001": {"vr": "PN"}, "00100020": {"vr": "XX"},'
                              b' "00100030": {"vr": "DA", "Value": "20240101"}}')
    out["bad_binary.json"] = b'{"7FE00010": {"vr": "OB", "InlineBinary": "!!!!", "Value": [1]}}'
    out["bad_number.json"] = b'{"00280010": {"vr": "US", "Value": [70000, "1", 1.5]}} x'
    return out


def write_all(directory, files):
    os.makedirs(directory, exist_ok=True)
    for name, data in sorted(files.items()):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    part10 = part10_seeds()
    js = json_seeds(part10)
    for name, data in list(part10.items()) + list(js.items()):
        assert len(data) <= 8192, f"{name} is {len(data)} bytes: seeds must stay small"
    write_all(os.path.join(outdir, "part10"), part10)
    write_all(os.path.join(outdir, "json"), js)
    total = sum(map(len, part10.values())) + sum(map(len, js.values()))
    print(f"make_corpus.py: {len(part10)} Part 10 seeds, {len(js)} JSON seeds, {total} bytes "
          f"in {outdir}")


if __name__ == "__main__":
    main()
