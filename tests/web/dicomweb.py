#!/usr/bin/python3
"""DICOMweb (PS3.18) of `telerad serve`, driven as a user would: QIDO-RS, WADO-RS, WADO-URI
and STOW-RS over real HTTP, with pydicom and DCMTK as the judges.

usage: dicomweb.py TELERAD [--keep]

The server is started with `--dicom-port 0 --http-port 0` in a temporary folder and loaded
with DCMTK's storescu: synthetic studies from gen_study.py (UTF-8, GB18030 and Latin-1
character sets, several series) and compressed files from pydicom's test data (JPEG
baseline, JPEG-LS, RLE, JPEG 2000, multi-frame), each sent in its own transfer syntax. Then:

- QIDO-RS at every level and path form, every matching type, includefield, paging, and the
  same answers as DCMTK's findscu (C-FIND) against the same server;
- WADO-RS: instances as stored (byte for byte), decompressed (pixels equal to pydicom's or
  DCMTK's decoding), transcoded (JPEG-LS lossless, RLE round trips), metadata equal to the
  stored headers with every BulkDataURI fetched, frames, rendered and thumbnail images;
  WADO-URI; HEAD;
- STOW-RS: success, partial failure (202), failure (409), a study mismatch, DICOM JSON with
  bulk data, cut bodies, a 200 MB instance with bounded server memory;
- keep-alive and concurrent clients while STOW-RS runs.

Exits 0 when every check held, 1 otherwise, 77 when a tool is missing.
"""
import base64
import glob
import io
import json
import os
import shutil
import socket
import struct
import sys
import threading
import time
import urllib.parse
import warnings
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import web_common as w  # noqa: E402
from web_common import Checks, Client, run  # noqa: E402

warnings.filterwarnings("ignore")

JLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
RLE = "1.2.840.10008.1.2.5"
J2K_TS = ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91")
JPEG_TS = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57",
           "1.2.840.10008.1.2.4.70")
JPEG_LOSSY = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91")
PREFIX = "/dicom-web"

# Study dates given to the generated studies (gen_study.py dates them all alike).
STUDY_DATES = ["20240105", "20240620", "20250310"]


# ---- the data ----------------------------------------------------------------------------------

class Catalog:
    """What was sent: headers (pydicom, no pixels) by SOP Instance UID, and the study /
    series tree."""

    def __init__(self):
        self.path = {}      # sop -> source file
        self.header = {}    # sop -> pydicom data set (header only)
        self.studies = {}   # study -> {series -> [sop]}

    def add(self, path):
        ds = w.read_dicom(path, stop_before_pixels=True)
        sop, study, series = str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), \
            str(ds.SeriesInstanceUID)
        self.path[sop] = path
        self.header[sop] = ds
        self.studies.setdefault(study, {}).setdefault(series, []).append(sop)
        return sop

    def sops(self, study=None, series=None):
        out = []
        for st, ser in self.studies.items():
            if study and st != study:
                continue
            for se, sops in ser.items():
                if series and se != series:
                    continue
                out += sops
        return out

    def series_of(self, study=None):
        return [se for st, ser in self.studies.items() if not study or st == study for se in ser]

    def study_of(self, sop):
        return str(self.header[sop].StudyInstanceUID)

    def series_uid(self, sop):
        return str(self.header[sop].SeriesInstanceUID)

    def multi_series_study(self):
        """A synthetic study with several series."""
        return sorted(s for s in self.studies if len(self.studies[s]) > 1 and
                      str(self.header[self.first(s)].PatientID).startswith("MRN"))[0]

    def first(self, study):
        return self.sops(study)[0]

    def url(self, sop):
        h = self.header[sop]
        return "%s/studies/%s/series/%s/instances/%s" % (PREFIX, h.StudyInstanceUID,
                                                         h.SeriesInstanceUID, sop)

    def by(self, keyword, value):
        """Studies whose instances have keyword == value."""
        return {self.study_of(s) for s, h in self.header.items()
                if str(h.get(keyword, "")) == value}


def make_data(work):
    """Generate and prepare the studies; returns (files, {name: path or study uid})."""
    gen = os.path.join(work, "gen")
    w.gen_study(os.path.join(gen, "ct"), "--studies", "3", "--series", "2", "--images", "3",
                "--rows", "64", "--cols", "64", "--patients", "3", "--seed", "21")
    w.gen_study(os.path.join(gen, "gb"), "--charset", "GB18030", "--studies", "1", "--images",
                "2", "--rows", "32", "--cols", "32", "--seed", "22")
    w.gen_study(os.path.join(gen, "latin"), "--charset", "ISO_IR 100", "--modality", "MR",
                "--studies", "1", "--images", "2", "--rows", "32", "--cols", "32", "--seed", "23")
    # Distinct study dates for range matching: rewrite the generated headers.
    ct_studies = sorted(os.listdir(os.path.join(gen, "ct")))
    dates = {}
    for k, study in enumerate(ct_studies):
        dates[study] = STUDY_DATES[k]
    dates[os.listdir(os.path.join(gen, "gb"))[0]] = "20230915"
    dates[os.listdir(os.path.join(gen, "latin"))[0]] = "20251201"
    files = []
    for path in sorted(glob.glob(os.path.join(gen, "*", "*", "*", "*.dcm"))):
        study = path.split(os.sep)[-3]
        w.retag(path, path, StudyDate=dates[study])
        files.append(path)
    compressed = w.prepare_compressed(os.path.join(work, "compressed"))
    return files, compressed


# ---- comparing ---------------------------------------------------------------------------------

def elements(ds):
    """{tag: element} of a data set's top level without group lengths and padding."""
    return {int(e.tag): e for e in ds if e.tag.element != 0 and int(e.tag) != 0xFFFCFFFC}


def dataset_difference(a, b):
    """None when two pydicom data sets hold the same attributes and values (group lengths,
    trailing padding and the VR of encapsulated pixel data aside), else the first difference."""
    ea, eb = elements(a), elements(b)
    for tag in sorted(set(ea) | set(eb)):
        if tag not in ea or tag not in eb:
            return "(%04X,%04X) only in %s" % (tag >> 16, tag & 0xFFFF,
                                               "the first" if tag in ea else "the second")
        x, y = ea[tag], eb[tag]
        if x.VR == "SQ" or y.VR == "SQ":
            if len(x.value) != len(y.value):
                return "(%04X,%04X): %d vs %d items" % (tag >> 16, tag & 0xFFFF,
                                                        len(x.value), len(y.value))
            for i, (p, q) in enumerate(zip(x.value, y.value)):
                d = dataset_difference(p, q)
                if d:
                    return "(%04X,%04X)[%d] %s" % (tag >> 16, tag & 0xFFFF, i, d)
            continue
        if x.value != y.value:
            return "(%04X,%04X): %.60r vs %.60r" % (tag >> 16, tag & 0xFFFF, x.value, y.value)
    return None


def native_pixels(ds):
    """The native pixel bytes of an uncompressed pydicom data set, little endian."""
    return bytes(ds.PixelData)


def reference_pixels(path, work):
    """Decoded pixel data of a (compressed) file, as DCMTK or pydicom decode it: (numpy array
    of samples, photometric interpretation)."""
    import numpy as np
    ds = w.read_dicom(path)
    ts = str(ds.file_meta.TransferSyntaxUID)
    out = os.path.join(work, "reference.dcm")
    tool = {JLS_LOSSLESS: "dcmdjpls", "1.2.840.10008.1.2.4.81": "dcmdjpls",
            "1.2.840.10008.1.2.4.50": "dcmdjpeg", "1.2.840.10008.1.2.4.51": "dcmdjpeg",
            "1.2.840.10008.1.2.4.57": "dcmdjpeg", "1.2.840.10008.1.2.4.70": "dcmdjpeg",
            RLE: "dcmdrle"}.get(ts)
    if tool and shutil.which(tool):
        rc, text = run([tool, path, out])
        if rc != 0:
            raise RuntimeError("%s: %s" % (tool, text))
        ref = w.read_dicom(out)
        return samples(ref), str(ref.PhotometricInterpretation)
    # JPEG 2000 (and anything else): pydicom's own handlers (Pillow for JPEG 2000).
    arr = ds.pixel_array
    return np.ascontiguousarray(arr).reshape(-1), str(ds.PhotometricInterpretation)


def samples(ds):
    """The pixel samples of an uncompressed data set as a flat numpy array."""
    import numpy as np
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    dtype = {8: "u1", 16: "<u2", 32: "<u4"}[bits]
    if signed:
        dtype = dtype.replace("u", "i")
    arr = np.frombuffer(bytes(ds.PixelData), dtype=dtype)
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = rows * cols * int(ds.SamplesPerPixel) * int(ds.get("NumberOfFrames", 1) or 1)
    arr = arr[:n]
    if int(ds.get("PlanarConfiguration", 0) or 0) == 1 and int(ds.SamplesPerPixel) == 3:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        arr = arr.reshape(frames, 3, rows * cols).transpose(0, 2, 1).reshape(-1)
    return arr


def max_difference(a, b):
    import numpy as np
    if a.shape != b.shape:
        return None
    return int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0


def png_info(data):
    """(width, height, colour type) of a PNG, or None."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    wdt, hgt, depth, ctype = struct.unpack(">IIBB", data[16:26])
    return wdt, hgt, ctype


def png_pixels(data):
    """Grey 8-bit PNG pixels as a numpy array (PIL when present, else zlib by hand)."""
    import numpy as np
    try:
        from PIL import Image
        return np.asarray(Image.open(io.BytesIO(data)))
    except ImportError:
        pass
    wdt, hgt, ctype = png_info(data)
    pos, idat = 8, b""
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + n]
        pos += 12 + n
    raw = zlib.decompress(idat)
    ch = {0: 1, 2: 3}[ctype]
    stride = wdt * ch
    out = np.zeros((hgt, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(hgt):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)], dtype=np.uint8)
        cur = np.zeros(stride, dtype=np.int32)
        for x in range(stride):
            a = cur[x - ch] if x >= ch else 0
            b = prev[x]
            c = prev[x - ch] if x >= ch else 0
            v = int(line[x])
            if f == 1:
                v += a
            elif f == 2:
                v += b
            elif f == 3:
                v += (a + b) // 2
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                v += a if pa <= pb and pa <= pc else b if pb <= pc else c
            cur[x] = v & 0xFF
        out[y] = cur
        prev = cur
    return out.reshape(hgt, wdt, ch) if ch > 1 else out


def json_value(attr):
    return attr.get("Value") if attr else None


def qido_uids(resp, tag="0020000D"):
    return [a[tag]["Value"][0] for a in resp.json()]


def problem_ok(resp, status):
    """A problem+json answer with this status."""
    if resp.status != status or resp.type != "application/problem+json":
        return False
    try:
        j = resp.json()
    except ValueError:
        return False
    return j.get("status") == status and "title" in j and "detail" in j


def path_of(url):
    p = urllib.parse.urlsplit(url)
    return p.path + ("?" + p.query if p.query else "")


# ---- QIDO-RS -----------------------------------------------------------------------------------

def test_qido(c, http, cat):
    q = lambda path, **kw: http.get(PREFIX + path, **kw)  # noqa: E731
    all_studies = set(cat.studies)

    r = q("/studies")
    c.check(r.status == 200 and r.type == "application/dicom+json" and
            set(qido_uids(r)) == all_studies and len(r.json()) == len(all_studies),
            "QIDO /studies: every study once (%d)" % len(all_studies), repr(r))
    # The attributes of each study equal the headers that were sent.
    bad = []
    for a in r.json() if r.status == 200 else []:
        study = a["0020000D"]["Value"][0]
        sops = cat.sops(study)
        h = cat.header[sops[0]]
        want = {
            "00100020": [str(h.PatientID)],
            "00080020": [str(h.StudyDate)],
            "00080050": [str(h.AccessionNumber)],
            "00201208": [len(sops)],
            "00201206": [len(cat.studies[study])],
            "00100010": [{"Alphabetic": str(h.PatientName)}],
        }
        for tag, value in want.items():
            if json_value(a.get(tag)) != value:
                bad.append("%s %s: %r, want %r" % (study[-8:], tag, json_value(a.get(tag)), value))
        mods = sorted({str(cat.header[s].Modality) for s in sops})
        if sorted(json_value(a.get("00080061")) or []) != mods:
            bad.append("%s ModalitiesInStudy %r" % (study[-8:], a.get("00080061")))
        if not a.get("00081190", {}).get("Value", [""])[0].endswith("/studies/" + study):
            bad.append("%s RetrieveURL %r" % (study[-8:], a.get("00081190")))
    c.check(not bad, "QIDO /studies: patient name (UTF-8, GB18030, Latin-1), ID, date, "
            "accession, modalities, counts and RetrieveURL as sent", "; ".join(bad[:5]))

    # Every path form.
    bad = []
    for study in cat.studies:
        r = q("/studies/%s/series" % study)
        if r.status != 200 or sorted(qido_uids(r, "0020000E")) != sorted(cat.series_of(study)):
            bad.append("studies/%s/series: %r" % (study[-8:], r))
        else:
            for a in r.json():
                se = a["0020000E"]["Value"][0]
                n = len(cat.studies[study][se])
                if json_value(a.get("00201209")) != [n] or json_value(a.get("00080060")) != \
                        [str(cat.header[cat.studies[study][se][0]].Modality)]:
                    bad.append("series %s: %r" % (se[-8:], a))
        r = q("/studies/%s/instances" % study)
        if r.status != 200 or sorted(qido_uids(r, "00080018")) != sorted(cat.sops(study)):
            bad.append("studies/%s/instances: %r" % (study[-8:], r))
        for se in cat.studies[study]:
            r = q("/studies/%s/series/%s/instances" % (study, se))
            if r.status != 200 or sorted(qido_uids(r, "00080018")) != \
                    sorted(cat.sops(study, se)):
                bad.append("studies/%s/series/%s/instances: %r" % (study[-8:], se[-8:], r))
            else:
                for a in r.json():
                    sop = a["00080018"]["Value"][0]
                    h = cat.header[sop]
                    if json_value(a.get("00080016")) != [str(h.SOPClassUID)] or \
                            json_value(a.get("00200013")) != ([int(h.InstanceNumber)] if
                                                             h.get("InstanceNumber") not in
                                                             (None, "") else None) or \
                            not a["00081190"]["Value"][0].endswith(cat.url(sop)):
                        bad.append("instance %s: %r" % (sop[-8:], a))
    c.check(not bad, "QIDO studies/{}/series, studies/{}/instances, studies/{}/series/{}/"
            "instances: the right UIDs, counts, modality, SOP class, instance number, URL",
            "; ".join(str(b)[:200] for b in bad[:4]))
    r = q("/series")
    c.check(r.status == 200 and sorted(qido_uids(r, "0020000E")) == sorted(cat.series_of()),
            "QIDO /series: every series once (%d)" % len(cat.series_of()), repr(r))
    first = r.json()[0] if r.status == 200 and r.json() else {}
    c.check("0020000D" in first and "00100010" in first and "00080020" in first,
            "QIDO /series outside a study also returns the study's attributes (PS3.18 "
            "10.6.3.3.1)", repr(first)[:300])
    r = q("/instances")
    c.check(r.status == 200 and sorted(qido_uids(r, "00080018")) == sorted(cat.sops()),
            "QIDO /instances: every instance once (%d)" % len(cat.sops()), repr(r))

    # Matching.
    def studies(query):
        r = q("/studies?" + query)
        return set(qido_uids(r)) if r.status == 200 else ("HTTP %d" % r.status, r.body[:200])

    nguyen = {s for s in cat.studies
              if str(cat.header[cat.first(s)].PatientName).startswith("Nguyen")}
    def date_of(study):
        return str(cat.header[cat.first(study)].StudyDate)

    nguyen_date = date_of(sorted(nguyen)[0])
    one = cat.multi_series_study()
    h = cat.header[cat.first(one)]
    cases = [
        ("single value AccessionNumber", "AccessionNumber=" + str(h.AccessionNumber), {one}),
        ("single value PatientID", "PatientID=" + str(h.PatientID), cat.by("PatientID",
                                                                           str(h.PatientID))),
        ("wildcard *", "PatientName=Nguyen*", nguyen),
        ("wildcard ? and *", "PatientName=%3Fguyen*", nguyen),
        ("wildcard on AccessionNumber", "AccessionNumber=ACC0021*",
         {s for s in cat.studies if str(cat.header[cat.first(s)].AccessionNumber)
          .startswith("ACC0021")}),
        ("PN case-insensitive (lower)", "PatientName=nguyen*", nguyen),
        ("PN case-insensitive (upper)", "PatientName=NGUYEN*", nguyen),
        ("non-ASCII UTF-8 name (Latin-1 / UTF-8 stored)", "PatientName=" +
         urllib.parse.quote("Müller*"), {s for s in cat.studies if str(
             cat.header[cat.first(s)].PatientName).startswith("Müller")}),
        ("non-ASCII name stored in GB18030", "PatientName=" + urllib.parse.quote("王*"),
         {s for s in cat.studies if str(cat.header[cat.first(s)].PatientName)
          .startswith("王")}),
        ("date range", "StudyDate=20240101-20241231",
         {s for s in cat.studies if "20240101" <= date_of(s) <= "20241231"}),
        ("open date range (until)", "StudyDate=-20231231",
         {s for s in cat.studies if str(cat.header[cat.first(s)].StudyDate) <= "20231231"}),
        ("open date range (from)", "StudyDate=20250101-",
         {s for s in cat.studies if str(cat.header[cat.first(s)].StudyDate) >= "20250101"}),
        ("UID list with commas", "StudyInstanceUID=%s,%s" % tuple(sorted(cat.studies)[:2]),
         set(sorted(cat.studies)[:2])),
        ("ModalitiesInStudy", "ModalitiesInStudy=MR", {s for s in cat.studies if any(
            str(cat.header[x].Modality) == "MR" for x in cat.sops(s))}),
        ("fuzzymatching=true: a name-part prefix", "PatientName=mar&fuzzymatching=true",
         {s for s in cat.studies if any(p.lower().startswith("mar") for p in
                                        str(cat.header[cat.first(s)].PatientName)
                                        .replace("^", " ").split())}),
        ("fuzzymatching=false: no prefix match", "PatientName=mar&fuzzymatching=false", set()),
        ("no match", "PatientName=Nobody*", set()),
        ("two keys (AND)", "PatientName=Nguyen*&StudyDate=" + nguyen_date,
         {s for s in nguyen if str(cat.header[cat.first(s)].StudyDate) == nguyen_date}),
    ]
    for what, query, want in cases:
        got = studies(query)
        c.check(got == want and (want or "Nobody" in query or "false" in query),
                "QIDO match, %s: %s -> %d studies" % (what, query, len(want)),
                "got %r" % (got,))
    # Series and instance level matching.
    r = q("/series?Modality=MR")
    want = sorted(se for se in cat.series_of()
                  if str(cat.header[cat.sops(series=se)[0]].Modality) == "MR")
    c.check(r.status == 200 and sorted(qido_uids(r, "0020000E")) == want,
            "QIDO /series?Modality=MR (%d)" % len(want), repr(r))
    two = cat.sops()[:2]
    r = q("/instances?SOPInstanceUID=%s,%s" % tuple(two))
    c.check(r.status == 200 and sorted(qido_uids(r, "00080018")) == sorted(two),
            "QIDO /instances with a SOPInstanceUID list", repr(r))
    r = q("/studies/%s/instances?InstanceNumber=1" % one)
    want = [s for s in cat.sops(one) if int(cat.header[s].InstanceNumber) == 1]
    c.check(r.status == 200 and sorted(qido_uids(r, "00080018")) == sorted(want),
            "QIDO /studies/{}/instances?InstanceNumber=1 (%d)" % len(want), repr(r))

    # includefield.
    r = q("/studies?StudyInstanceUID=%s&includefield=StudyDescription" % one)
    a = r.json()[0] if r.status == 200 and r.json() else {}
    c.check(json_value(a.get("00081030")) == [str(h.StudyDescription)],
            "includefield by keyword (StudyDescription)", repr(a.get("00081030")))
    r = q("/studies?StudyInstanceUID=%s&includefield=00080080" % one)
    a = r.json()[0] if r.status == 200 and r.json() else {}
    c.check(json_value(a.get("00080080")) == [str(h.InstitutionName)],
            "includefield by tag (00080080 InstitutionName, from the header)",
            repr(a.get("00080080")))
    r = q("/studies?StudyInstanceUID=%s&includefield=00080080,PatientAge" % one)
    a = r.json()[0] if r.status == 200 and r.json() else {}
    c.check(json_value(a.get("00080080")) == [str(h.InstitutionName)] and
            json_value(a.get("00101010")) == [str(h.PatientAge)],
            "includefield with a comma-separated list", repr(a)[:300])
    r = q("/studies?StudyInstanceUID=%s&includefield=all" % one)
    a = r.json()[0] if r.status == 200 and r.json() else {}
    c.check(json_value(a.get("00081030")) == [str(h.StudyDescription)] and
            json_value(a.get("00101010")) == [str(h.PatientAge)],
            "includefield=all adds the optional study attributes", repr(a)[:300])
    r = q("/studies/%s/series?includefield=BodyPartExamined,00080021" % one)
    c.check(r.status == 200 and all("00080021" in x for x in r.json()),
            "includefield at series level (00080021 SeriesDate)", repr(r)[:300])
    r = q("/studies?StudyInstanceUID=%s&includefield=NotAKeyword" % one)
    c.check(problem_ok(r, 400), "includefield=NotAKeyword -> 400 problem+json", repr(r))

    # Paging: limit and offset cover every match exactly once, in a stable order.
    full = q("/instances")
    order = qido_uids(full, "00080018") if full.status == 200 else []
    seen = []
    for offset in range(0, len(order) + 5, 5):
        r = q("/instances?limit=5&offset=%d" % offset)
        if r.status != 200:
            seen.append("HTTP %d" % r.status)
            break
        seen += qido_uids(r, "00080018")
    c.check(seen == order and len(set(seen)) == len(order),
            "QIDO /instances?limit=5&offset=k for every k: each of %d instances exactly once, "
            "same order" % len(order), "got %d, %d distinct" % (len(seen), len(set(seen))))
    seen = []
    for offset in range(len(cat.studies)):
        r = q("/studies?limit=1&offset=%d" % offset)
        seen += qido_uids(r) if r.status == 200 else ["HTTP %d" % r.status]
    c.check(sorted(seen) == sorted(cat.studies), "QIDO /studies?limit=1 paged: every study once",
            repr(seen))
    r = q("/studies?offset=%d" % (len(cat.studies) + 10))
    c.check(r.status == 200 and r.json() == [], "offset past the end -> []", repr(r))

    # Errors.
    r = q("/studies?NoSuchAttribute=1")
    c.check(problem_ok(r, 400), "unknown query parameter -> 400 problem+json", repr(r))
    r = q("/studies?StudyInstanceUID=1.2.x.3")
    c.check(problem_ok(r, 400), "bad UID in a query -> 400 problem+json", repr(r))
    r = q("/studies/1.2.x.3/series")
    c.check(problem_ok(r, 400), "bad UID in the path -> 400 problem+json", repr(r))
    r = q("/studies?limit=-1")
    c.check(problem_ok(r, 400), "limit=-1 -> 400", repr(r))
    r = q("/studies?StudyDate=2024-01")
    c.check(problem_ok(r, 400), "a malformed date range -> 400", repr(r))
    r = q("/studies", accept="text/html")
    c.check(problem_ok(r, 406), "Accept: text/html -> 406 problem+json", repr(r))
    r = q("/studies", accept="application/json")
    c.check(r.status == 200, "Accept: application/json -> 200", repr(r))
    r = http.request("PUT", PREFIX + "/studies", {"Content-Type": "text/plain"}, b"x")
    c.check(problem_ok(r, 405) and "GET" in (r.header("allow") or ""),
            "PUT /studies -> 405 with Allow", repr(r))
    r = http.request("DELETE", PREFIX + "/studies/" + one)
    c.check(problem_ok(r, 405), "DELETE /studies/{uid} -> 405", repr(r))
    r = q("/nothing-here")
    c.check(r.status == 404, "an unknown DICOMweb path -> 404", repr(r))


# ---- QIDO-RS and C-FIND give the same answers ------------------------------------------------

CFIND_QUERIES = [
    # (level, {key: value}, lowest UID tag)
    ("STUDY", {"PatientName": "Nguyen*", "StudyInstanceUID": "", "PatientID": "",
               "StudyDate": "", "AccessionNumber": "", "ModalitiesInStudy": "",
               "NumberOfStudyRelatedInstances": "", "NumberOfStudyRelatedSeries": "",
               "StudyDescription": "", "PatientBirthDate": ""}, "0020000D"),
    ("STUDY", {"StudyDate": "20240101-20251231", "StudyInstanceUID": "", "PatientName": "",
               "StudyTime": "", "ReferringPhysicianName": ""}, "0020000D"),
    ("STUDY", {"PatientName": "王*", "StudyInstanceUID": "", "PatientSex": "",
               "StudyID": ""}, "0020000D"),
    ("STUDY", {"PatientName": "müller*", "StudyInstanceUID": "", "PatientID": ""}, "0020000D"),
    ("STUDY", {"AccessionNumber": "ACC0021*", "StudyInstanceUID": "", "PatientName": "",
               "InstitutionName": ""}, "0020000D"),
    ("SERIES", {"StudyInstanceUID": "{study}", "SeriesInstanceUID": "", "Modality": "",
                "SeriesNumber": "", "SeriesDescription": "",
                "NumberOfSeriesRelatedInstances": ""}, "0020000E"),
    ("SERIES", {"StudyInstanceUID": "{compressed}", "SeriesInstanceUID": "", "Modality": "",
                "SeriesNumber": ""}, "0020000E"),
    ("IMAGE", {"StudyInstanceUID": "{study}", "SeriesInstanceUID": "{series}",
               "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": "", "Rows": "",
               "Columns": ""}, "00080018"),
    ("IMAGE", {"StudyInstanceUID": "{compressed}", "SOPInstanceUID": "", "NumberOfFrames": "",
               "BitsAllocated": ""}, "00080018"),
]
KEYWORD_TAG = {}


def tag_of(keyword):
    from pydicom.datadict import tag_for_keyword
    t = tag_for_keyword(keyword)
    return "%08X" % t


def test_cfind_consistency(c, srv, http, cat, work, compressed_study):
    study = cat.multi_series_study()
    series = sorted(cat.studies[study])[0]
    for n, (level, keys, uid_tag) in enumerate(CFIND_QUERIES):
        keys = {k: v.format(study=study, series=series, compressed=compressed_study)
                for k, v in keys.items()}
        out = os.path.join(work, "cfind%d" % n)
        os.makedirs(out, exist_ok=True)
        args = ["findscu", "-S", "-aec", "TELERAD", "-k", "QueryRetrieveLevel=" + level]
        if any(ord(ch) > 127 for v in keys.values() for ch in v):
            args += ["-k", "SpecificCharacterSet=ISO_IR 192"]  # the values are UTF-8
        for k, v in keys.items():
            args += ["-k", "%s=%s" % (k, v) if v else k]
        args += ["-X", "-od", out, "127.0.0.1", str(srv.dicom_port)]
        rc, text = run(args)
        cfind = {}
        for f in sorted(glob.glob(os.path.join(out, "rsp*.dcm"))):
            j = w.read_dicom(f).to_json_dict()
            cfind[j[uid_tag]["Value"][0]] = j
        # The same query over QIDO-RS: matching keys as parameters, return keys as includefield.
        path = {"STUDY": "/studies", "SERIES": "/studies/%s/series" % keys["StudyInstanceUID"],
                "IMAGE": "/studies/%s/instances" % keys["StudyInstanceUID"]}[level]
        params = []
        for k, v in keys.items():
            if k == "StudyInstanceUID" and level != "STUDY":
                continue
            params.append((k, v) if v else ("includefield", k))
        r = http.get(PREFIX + path + "?" + urllib.parse.urlencode(params))
        qido = {a[uid_tag]["Value"][0]: a for a in r.json()} if r.status == 200 else {}
        diffs = []
        if rc != 0:
            diffs.append("findscu exit %d: %s" % (rc, text[-300:]))
        if sorted(qido) != sorted(cfind):
            diffs.append("matches differ: QIDO %d, C-FIND %d" % (len(qido), len(cfind)))
        for uid in set(qido) & set(cfind):
            for k in keys:
                t = tag_of(k)
                a, b = qido[uid].get(t, {}).get("Value"), cfind[uid].get(t, {}).get("Value")
                if a != b:
                    diffs.append("%s %s: QIDO %r, C-FIND %r" % (uid[-8:], k, a, b))
        shown = ", ".join("%s=%s" % (k, v) for k, v in keys.items() if v)
        c.check(not diffs and len(cfind) > 0,
                "QIDO equals findscu C-FIND (%s level, %s): %d matches, same values of %d keys"
                % (level, shown[:60], len(cfind), len(keys)), "; ".join(diffs[:4]))


# ---- WADO-RS: instances ------------------------------------------------------------------------

def check_as_stored(srv, cat, parts, sops):
    """None when the parts are exactly the stored objects of sops (in any order) and their data
    sets equal what was sent."""
    if len(parts) != len(sops):
        return "%d parts for %d instances" % (len(parts), len(sops))
    seen = set()
    for headers, body in parts:
        ds = w.read_dicom(body)
        sop = str(ds.SOPInstanceUID)
        seen.add(sop)
        if sop not in cat.header:
            return "unknown instance %s" % sop
        stored = srv.stored_path(sop)
        if not stored or open(stored, "rb").read() != body:
            return "%s: not the stored bytes" % sop
        ts = str(ds.file_meta.TransferSyntaxUID)
        if headers.get("content-type", "").replace(" ", "") != \
                "application/dicom;transfer-syntax=" + ts:
            return "%s: part Content-Type %r (stored %s)" % (sop, headers.get("content-type"),
                                                            ts)
        d = dataset_difference(w.read_dicom(cat.path[sop]), ds)
        if d:
            return "%s: data set differs from the one sent: %s" % (sop, d)
    if seen != set(sops):
        return "other instances than asked for"
    return None


def test_wado_instances(c, srv, http, cat, compressed, work):
    for study in sorted(cat.studies):
        r = http.get(PREFIX + "/studies/" + study, w.DICOM_ACCEPT_ANY)
        err = check_as_stored(srv, cat, r.parts(), cat.sops(study)) if r.status == 200 else \
            repr(r)
        c.check(err is None and r.type == "multipart/related",
                "WADO-RS study %s… with transfer-syntax=*: %d instances, the stored bytes, "
                "the data sets sent" % (study[:24], len(cat.sops(study))), str(err))
    study = cat.multi_series_study()
    series = sorted(cat.studies[study])[1]
    r = http.get("%s/studies/%s/series/%s" % (PREFIX, study, series), w.DICOM_ACCEPT_ANY)
    err = check_as_stored(srv, cat, r.parts(), cat.sops(study, series)) if r.status == 200 \
        else repr(r)
    c.check(err is None, "WADO-RS series with transfer-syntax=*", str(err))
    sop = cat.sops(study, series)[0]
    r = http.get(cat.url(sop), w.DICOM_ACCEPT_ANY)
    err = check_as_stored(srv, cat, r.parts(), [sop]) if r.status == 200 else repr(r)
    c.check(err is None, "WADO-RS instance with transfer-syntax=*", str(err))
    r = http.get(cat.url(sop), "application/dicom")
    c.check(r.status == 200 and r.type == "application/dicom" and
            r.body == open(srv.stored_path(sop), "rb").read(),
            "Accept: application/dicom on one instance: a single body, the stored file", repr(r))
    r = http.get(cat.url(sop), "application/dicom; transfer-syntax=*")
    c.check(r.status == 200 and r.type == "application/dicom" and r.body[128:132] == b"DICM",
            "Accept: application/dicom; transfer-syntax=* on one instance", repr(r))
    r = http.get("%s/studies/%s" % (PREFIX, study), "application/dicom")
    c.check(problem_ok(r, 406), "Accept: application/dicom on a study -> 406", repr(r))
    r = http.get("%s/studies/%s" % (PREFIX, study), "image/png")
    c.check(problem_ok(r, 406), "Accept: image/png on a study -> 406", repr(r))
    r = http.get("%s/studies/%s" % (PREFIX, w.new_uid()), w.DICOM_ACCEPT_ANY)
    c.check(problem_ok(r, 404), "an unknown study -> 404 problem+json", repr(r))
    r = http.get("%s/studies/%s/series/%s/instances/%s" % (PREFIX, study, series, w.new_uid()))
    c.check(problem_ok(r, 404), "an unknown instance -> 404", repr(r))

    # Compressed instances, decompressed on the way: no transfer-syntax (PS3.18 default:
    # Explicit VR Little Endian) and transfer-syntax=1.2.840.10008.1.2.1 named.
    cstudy = w.read_dicom(compressed[0][0], stop_before_pixels=True).StudyInstanceUID
    references = {}
    for path, what in compressed:
        references[path] = reference_pixels(path, work)
    for accept, how in ((None, "no Accept (default transfer syntax)"),
                        ('multipart/related; type="application/dicom"', "no transfer-syntax"),
                        ('multipart/related; type="application/dicom"; transfer-syntax=' +
                         w.EXPLICIT_LE, "transfer-syntax=1.2.840.10008.1.2.1")):
        r = http.get("%s/studies/%s" % (PREFIX, cstudy), accept)
        parts = r.parts() if r.status == 200 else []
        got = {}
        for headers, body in parts:
            ds = w.read_dicom(body)
            got[str(ds.SOPInstanceUID)] = (headers, ds)
        for path, what in compressed:
            sop = str(w.read_dicom(path, stop_before_pixels=True).SOPInstanceUID)
            headers, ds = got.get(sop, ({}, None))
            problem = None
            if ds is None:
                problem = "missing from the response (%r)" % r
            elif str(ds.file_meta.TransferSyntaxUID) != w.EXPLICIT_LE or \
                    "transfer-syntax=" + w.EXPLICIT_LE not in headers.get("content-type", ""):
                problem = "transfer syntax %s" % ds.file_meta.TransferSyntaxUID
            else:
                ref, photometric = references[path]
                mine = samples(ds)
                d = max_difference(mine, ref)
                src_ts = str(w.read_dicom(path, stop_before_pixels=True)
                             .file_meta.TransferSyntaxUID)
                tolerance = 2 if src_ts in JPEG_LOSSY else 0
                if d is None or d > tolerance:
                    problem = "pixels differ from the reference decoding (max %s, %d vs %d " \
                              "samples)" % (d, mine.size, ref.size)
                elif str(ds.PhotometricInterpretation) != photometric:
                    problem = "PhotometricInterpretation %s, the reference says %s" % (
                        ds.PhotometricInterpretation, photometric)
                elif str(ds.PatientName) != "Pydicom^Files":
                    problem = "header changed"
            c.check(problem is None, "WADO-RS, %s: %s decompressed to Explicit VR LE, pixels as "
                    "%s decodes them" % (how, what, "DCMTK" if not what.startswith("JPEG 2000")
                                         else "pydicom"), str(problem))

    # Transcoding to JPEG-LS lossless and RLE: the pixels come back unchanged.
    plain_sop = cat.sops(study, series)[0]
    j2k = [p for p, what in compressed if what.startswith("JPEG 2000 lossless")]
    targets = [(plain_sop, cat.path[plain_sop], "uncompressed CT 16-bit")]
    if j2k:
        targets.append((str(w.read_dicom(j2k[0], stop_before_pixels=True).SOPInstanceUID),
                        j2k[0], "JPEG 2000 lossless MR"))
    rgb = [p for p, what in compressed if what.startswith("RLE RGB,")]
    for ts, name in ((JLS_LOSSLESS, "JPEG-LS lossless"), (RLE, "RLE")):
        for sop, src, what in targets + ([(str(w.read_dicom(rgb[0], stop_before_pixels=True)
                                               .SOPInstanceUID), rgb[0], "RLE RGB 2 frames")]
                                         if rgb and ts == JLS_LOSSLESS else []):
            r = http.get(cat.url(sop), 'multipart/related; type="application/dicom"; '
                         'transfer-syntax=' + ts)
            problem = None
            if r.status != 200:
                problem = repr(r)
            else:
                headers, body = r.parts()[0]
                ds = w.read_dicom(body)
                if str(ds.file_meta.TransferSyntaxUID) != ts or "transfer-syntax=" + ts not in \
                        headers.get("content-type", ""):
                    problem = "sent in %s" % ds.file_meta.TransferSyntaxUID
                else:
                    tmp = os.path.join(work, "transcoded.dcm")
                    with open(tmp, "wb") as f:
                        f.write(body)
                    back, _ = reference_pixels(tmp, work)
                    orig, _ = reference_pixels(src, work) if "uncompressed" not in what else \
                        (samples(w.read_dicom(src)), None)
                    d = max_difference(back, orig)
                    if d != 0:
                        problem = "pixels changed (max difference %s)" % d
            c.check(problem is None, "WADO-RS transfer-syntax=%s (%s) of a %s: decoded by %s, "
                    "the original pixels" % (ts, name, what,
                                             "dcmdjpls" if ts == JLS_LOSSLESS else "dcmdrle"),
                    str(problem))
    # The other native transfer syntaxes, from an uncompressed and from a compressed instance.
    jls = [p for p, what in compressed if what == "JPEG-LS lossless"]
    natives = [(plain_sop, cat.path[plain_sop])] + (
        [(str(w.read_dicom(jls[0], stop_before_pixels=True).SOPInstanceUID), jls[0])]
        if jls else [])
    for ts, name in (("1.2.840.10008.1.2", "Implicit VR Little Endian"),
                     ("1.2.840.10008.1.2.2", "Explicit VR Big Endian"),
                     ("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian")):
        for sop, src in natives:
            r = http.get(cat.url(sop), 'multipart/related; type="application/dicom"; '
                         'transfer-syntax=' + ts)
            problem = None
            if r.status != 200:
                problem = repr(r)
            else:
                ds = w.read_dicom(r.parts()[0][1])
                ref = w.read_dicom(src, stop_before_pixels=True)
                want = references[src][0] if src in references else samples(w.read_dicom(src))
                if str(ds.file_meta.TransferSyntaxUID) != ts:
                    problem = "sent in %s" % ds.file_meta.TransferSyntaxUID
                elif max_difference(ds.pixel_array.reshape(-1), want) != 0:
                    problem = "pixels differ"
                elif str(ds.PatientName) != str(ref.PatientName):
                    problem = "header differs"
            c.check(problem is None, "WADO-RS transfer-syntax=%s (%s) of %s: pydicom reads the "
                    "same pixels" % (ts, name, os.path.basename(src)), str(problem))
    # A syntax no codec writes: 406 and a hint.
    r = http.get(cat.url(plain_sop), 'multipart/related; type="application/dicom"; '
                 'transfer-syntax=1.2.840.10008.1.2.4.100')
    c.check(problem_ok(r, 406), "transfer-syntax=MPEG-2 -> 406", repr(r))
    # Several acceptable ranges: the first one every instance can be sent in.
    r = http.get(cat.url(plain_sop), 'multipart/related; type="application/dicom"; '
                 'transfer-syntax=1.2.840.10008.1.2.4.100, multipart/related; '
                 'type="application/dicom"; transfer-syntax=' + RLE + ';q=0.5')
    c.check(r.status == 200 and "transfer-syntax=" + RLE in r.parts()[0][0]["content-type"],
            "Accept with two media ranges: falls back to the one that can be served (RLE)",
            repr(r))


# ---- WADO-RS: metadata and bulk data -----------------------------------------------------------

def bulk_bytes(http, url, port):
    r = http.get(path_of(url), "multipart/related; type=\"application/octet-stream\"; "
                 "transfer-syntax=*")
    if r.status != 200:
        return None, r
    return [body for _, body in r.parts()], r


def compare_metadata(http, ours, src_path, port):
    """None when the metadata of one instance equals the source file's header (pydicom's
    to_json_dict) and every BulkDataURI returns the value's bytes."""
    import pydicom
    from pydicom import encaps
    src = pydicom.dcmread(src_path, force=True)
    ref = src.to_json_dict(bulk_data_threshold=1 << 40)
    problems = []
    for tag, v in ref.items():
        if tag.endswith("0000") or tag == "FFFCFFFC":
            continue
        o = ours.get(tag)
        if o is None:
            problems.append("%s missing" % tag)
            continue
        if o.get("vr") != v.get("vr") and not (tag == "7FE00010" and
                                               {o.get("vr"), v.get("vr")} <= {"OB", "OW"}):
            problems.append("%s VR %s vs %s" % (tag, o.get("vr"), v.get("vr")))
        if "BulkDataURI" in o:
            parts, r = bulk_bytes(http, o["BulkDataURI"], port)
            if parts is None:
                problems.append("%s BulkDataURI %s: %r" % (tag, o["BulkDataURI"], r))
                continue
            if tag == "7FE00010" and src["PixelData"].is_undefined_length:
                nframes = int(src.get("NumberOfFrames", 1) or 1)
                frames = list(encaps.generate_pixel_data_frame(src.PixelData, nframes))
                if parts != frames:
                    problems.append("PixelData bulk data: %d parts, not the %d frames" %
                                    (len(parts), len(frames)))
                continue
            want = src[int(tag, 16)].value if tag == "7FE00010" else \
                base64.b64decode(v.get("InlineBinary", ""))
            if len(parts) != 1 or parts[0] != bytes(want):
                problems.append("%s BulkDataURI: %d parts, %d bytes, want one of %d" % (
                    tag, len(parts), sum(len(p) for p in parts), len(want)))
        elif tag == "7FE00010":
            problems.append("PixelData is not a BulkDataURI")
        elif o.get("Value") != v.get("Value") or o.get("InlineBinary") != v.get("InlineBinary"):
            problems.append("%s: %.100r vs %.100r" % (tag, o, v))
    extra = [t for t in ours if t not in ref and t != "00020010"]
    if extra:
        problems.append("extra attributes %r" % extra)
    if ours.get("00020010", {}).get("Value") != [str(src.file_meta.TransferSyntaxUID)] and \
            "00020010" in ours:
        problems.append("00020010 %r" % ours.get("00020010"))
    return "; ".join(problems[:4]) or None


def test_metadata(c, srv, http, cat, port):
    bad = []
    n = 0
    for study in sorted(cat.studies):
        r = http.get("%s/studies/%s/metadata" % (PREFIX, study))
        if r.status != 200 or r.type != "application/dicom+json":
            bad.append("study %s: %r" % (study, r))
            continue
        items = r.json()
        sops = sorted(a["00080018"]["Value"][0] for a in items)
        if sops != sorted(cat.sops(study)):
            bad.append("study %s: other instances" % study)
        for a in items:
            sop = a["00080018"]["Value"][0]
            # Compare with the stored object: what storescu delivered (padding dropped).
            d = compare_metadata(http, a, srv.stored_path(sop), port)
            n += 1
            if d:
                bad.append("%s (%s): %s" % (sop[-10:], os.path.basename(cat.path[sop]), d))
    c.check(not bad and n == len(cat.sops()),
            "WADO-RS study metadata (%d instances): DICOM JSON equal to pydicom's to_json_dict "
            "of the stored objects; every BulkDataURI fetched gives the value's bytes" % n,
            "; ".join(bad[:4]))
    study = cat.multi_series_study()
    series = sorted(cat.studies[study])[0]
    r = http.get("%s/studies/%s/series/%s/metadata" % (PREFIX, study, series))
    c.check(r.status == 200 and sorted(a["00080018"]["Value"][0] for a in r.json()) ==
            sorted(cat.sops(study, series)), "WADO-RS series metadata", repr(r))
    sop = cat.sops(study, series)[0]
    r = http.get(cat.url(sop) + "/metadata")
    d = compare_metadata(http, r.json()[0], cat.path[sop], port) if r.status == 200 else repr(r)
    c.check(d is None, "WADO-RS instance metadata equals the file that was sent", str(d))
    r = http.get(cat.url(sop) + "/metadata", "application/dicom")
    c.check(problem_ok(r, 406), "metadata with Accept: application/dicom -> 406", repr(r))
    r = http.get(cat.url(sop) + "/bulkdata/99999999-4")
    c.check(problem_ok(r, 404), "bulk data outside the object -> 404", repr(r))


# ---- WADO-RS: frames ----------------------------------------------------------------------------

def test_frames(c, srv, http, cat, compressed, work):
    from pydicom import encaps
    by_what = {what: path for path, what in compressed}
    plain = cat.sops(cat.multi_series_study())[0]
    ds = w.read_dicom(cat.path[plain])
    r = http.get(cat.url(plain) + "/frames/1")
    parts = r.parts() if r.status == 200 else []
    c.check(len(parts) == 1 and parts[0][1] == bytes(ds.PixelData) and
            parts[0][0].get("content-type", "").startswith("application/octet-stream"),
            "frames/1 of an uncompressed image: the pixel data, application/octet-stream",
            repr(r))
    multi = by_what.get("uncompressed (implicit VR), 15 frames")
    if multi:
        md = w.read_dicom(multi)
        size = int(md.Rows) * int(md.Columns) * int(md.BitsAllocated) // 8
        pix = bytes(md.PixelData)
        url = "%s/studies/%s/series/%s/instances/%s" % (PREFIX, md.StudyInstanceUID,
                                                        md.SeriesInstanceUID, md.SOPInstanceUID)
        r = http.get(url + "/frames/1,3,15")
        parts = [b for _, b in r.parts()] if r.status == 200 else []
        c.check(parts == [pix[0:size], pix[2 * size:3 * size], pix[14 * size:15 * size]],
                "frames/1,3,15 of a 15-frame image: those three frames in order", repr(r))
        r = http.get(url + "/frames/16")
        c.check(problem_ok(r, 404), "frames/16 of 15 -> 404", repr(r))
        r = http.get(url + "/frames/2,16")
        c.check(problem_ok(r, 404), "frames/2,16 (one out of range) -> 404", repr(r))
        r = http.get(url + "/frames/0")
        c.check(problem_ok(r, 400), "frames/0 -> 400", repr(r))
        r = http.get(url + "/frames/1,x")
        c.check(problem_ok(r, 400), "frames/1,x -> 400", repr(r))
    for path, what in compressed:
        src = w.read_dicom(path)
        ts = str(src.file_meta.TransferSyntaxUID)
        if ts in (w.EXPLICIT_LE, "1.2.840.10008.1.2"):
            continue
        nframes = int(src.get("NumberOfFrames", 1) or 1)
        frames = list(encaps.generate_pixel_data_frame(src.PixelData, nframes))
        url = "%s/studies/%s/series/%s/instances/%s" % (PREFIX, src.StudyInstanceUID,
                                                        src.SeriesInstanceUID, src.SOPInstanceUID)
        ask = ",".join(str(i + 1) for i in range(nframes))
        r = http.get(url + "/frames/" + ask,
                     'multipart/related; type="application/octet-stream"; transfer-syntax=*')
        parts = r.parts() if r.status == 200 else []
        c.check([b for _, b in parts] == frames and all(
            "transfer-syntax=" + ts in h.get("content-type", "") for h, _ in parts),
            "frames/%s of %s with transfer-syntax=*: the stored frames' bitstreams" % (ask, what),
            repr(r))
        # Decoded frames equal the reference decoding.
        r = http.get(url + "/frames/" + ask)
        parts = r.parts() if r.status == 200 else []
        ref, _ = reference_pixels(path, work)
        import numpy as np
        got = b"".join(b for _, b in parts)
        dtype = ref.dtype.newbyteorder("<")
        mine = np.frombuffer(got, dtype=dtype) if len(got) % dtype.itemsize == 0 else None
        d = max_difference(mine, ref) if mine is not None else None
        tol = 2 if ts in JPEG_LOSSY else 0
        c.check(len(parts) == nframes and d is not None and d <= tol and all(
            h.get("content-type", "").startswith("application/octet-stream") for h, _ in parts),
            "frames/%s of %s, no Accept: decoded, equal to the reference decoding" % (ask, what),
            "max difference %s; %r" % (d, r))
    jls = by_what.get("JPEG-LS lossless")
    if jls:
        src = w.read_dicom(jls)
        url = "%s/studies/%s/series/%s/instances/%s" % (PREFIX, src.StudyInstanceUID,
                                                        src.SeriesInstanceUID, src.SOPInstanceUID)
        r = http.get(url + "/frames/1", 'multipart/related; type="image/jls"')
        c.check(r.status == 200 and 'type="image/jls"' in r.header("content-type", "") and
                r.parts()[0][1] == list(encaps.generate_pixel_data_frame(src.PixelData))[0],
                "frames/1 of JPEG-LS with Accept image/jls: the bitstream", repr(r))
        r = http.get(url + "/frames/1", 'multipart/related; type="image/jp2"')
        c.check(problem_ok(r, 406), "frames of JPEG-LS with Accept image/jp2 only -> 406", repr(r))


# ---- WADO-RS: rendered and thumbnails ------------------------------------------------------------

def expected_window(ds, center, width):
    """PS3.3 C.11.2.1.2.1 linear window of the modality values of an uncompressed image."""
    import numpy as np
    px = samples(ds).astype(np.float64) * float(ds.get("RescaleSlope", 1)) + \
        float(ds.get("RescaleIntercept", 0))
    c, wd = center - 0.5, width - 1
    y = ((px - c) / wd + 0.5) * 255
    y = np.where(px <= c - wd / 2, 0, np.where(px > c + wd / 2, 255, y))
    return np.clip(np.rint(y), 0, 255).reshape(int(ds.Rows), int(ds.Columns))


def test_rendered(c, srv, http, cat, compressed):
    study = cat.multi_series_study()
    sop = cat.sops(study)[0]
    url = cat.url(sop)
    ds = w.read_dicom(cat.path[sop])
    r = http.get(url + "/rendered")
    c.check(r.status == 200 and r.type == "image/jpeg" and r.body[:3] == b"\xff\xd8\xff",
            "rendered: image/jpeg by default", repr(r))
    r = http.get(url + "/rendered", "image/png")
    info = png_info(r.body) if r.status == 200 else None
    c.check(r.type == "image/png" and info and info[:2] == (int(ds.Columns), int(ds.Rows)),
            "rendered, Accept: image/png: a PNG of the image's size", "%r %r" % (r, info))
    r = http.get(url + "/rendered?window=40,400", "image/png")
    if r.status == 200 and png_info(r.body):
        got = png_pixels(r.body).astype(int)
        want = expected_window(ds, 40, 400)
        d = int(abs(got.reshape(want.shape) - want).max()) if got.size == want.size else None
    else:
        d = None
    c.check(d is not None and d <= 1, "rendered?window=40,400 (PNG): each pixel the PS3.3 "
            "C.11.2.1.2.1 linear window of the modality value (±1)", "max difference %s" % d)
    r2 = http.get(url + "/rendered?window=1000,200", "image/png")
    c.check(r2.status == 200 and r2.body != r.body, "another window gives another picture",
            repr(r2))
    r = http.get(url + "/rendered?viewport=32,16", "image/png")
    info = png_info(r.body) if r.status == 200 else None
    c.check(info is not None and info[0] <= 32 and info[1] <= 16 and max(info[:2]) > 0,
            "rendered?viewport=32,16 fits the picture in 32x16", "%r" % (info,))
    r = http.get(url + "/rendered?viewport=16,16,0,0,32,32", "image/png")
    info = png_info(r.body) if r.status == 200 else None
    c.check(info is not None and info[:2] == (16, 16), "rendered?viewport with a source "
            "rectangle", "%r %r" % (info, r))
    for fn in ("linear", "linear-exact", "sigmoid", "LINEAR"):
        r = http.get(url + "/rendered?window=40,400," + fn, "image/png")
        c.check(r.status == 200 and png_info(r.body), "rendered?window=40,400,%s (PS3.18 "
                "8.3.5.1.4 function names)" % fn, repr(r))
    lo, hi = http.get(url + "/rendered?quality=5"), http.get(url + "/rendered?quality=100")
    c.check(lo.status == hi.status == 200 and len(lo.body) < len(hi.body),
            "rendered?quality=5 is smaller than quality=100 (%d < %d bytes)" %
            (len(lo.body), len(hi.body)))
    for bad in ("quality=0", "quality=101", "quality=x", "window=abc", "window=40",
                "window=40,0", "window=40,400,cubic", "viewport=10", "viewport=99999,10",
                "viewport=a,b"):
        r = http.get(url + "/rendered?" + bad)
        c.check(problem_ok(r, 400), "rendered?%s -> 400 problem+json" % bad, repr(r))
    r = http.get(url + "/rendered", "text/html")
    c.check(problem_ok(r, 406), "rendered with Accept: text/html -> 406", repr(r))
    by_what = {what: path for path, what in compressed}
    multi = by_what.get("RLE RGB, 2 frames")
    if multi:
        md = w.read_dicom(multi, stop_before_pixels=True)
        murl = "%s/studies/%s/series/%s/instances/%s" % (PREFIX, md.StudyInstanceUID,
                                                         md.SeriesInstanceUID, md.SOPInstanceUID)
        one, two = http.get(murl + "/frames/1/rendered", "image/png"), \
            http.get(murl + "/frames/2/rendered", "image/png")
        info = png_info(two.body) if two.status == 200 else None
        c.check(info is not None and info[2] == 2 and one.body != two.body,
                "frames/2/rendered of an RGB multi-frame: a colour PNG of that frame",
                "%r %r" % (info, two))
        r = http.get(murl + "/frames/3/rendered")
        c.check(problem_ok(r, 404), "frames/3/rendered of 2 frames -> 404", repr(r))
    for name, path in (("study", "%s/studies/%s/thumbnail" % (PREFIX, study)),
                       ("series", "%s/studies/%s/series/%s/thumbnail" % (
                           PREFIX, study, cat.series_uid(sop))),
                       ("instance", url + "/thumbnail")):
        r = http.get(path)
        p = http.get(path, "image/png")
        info = png_info(p.body) if p.status == 200 else None
        c.check(r.status == 200 and r.type == "image/jpeg" and info is not None and
                max(info[:2]) <= 128, "%s thumbnail: JPEG by default, PNG on request, at most "
                "128 pixels" % name, "%r %r" % (r, info))
    r = http.get("%s/studies/%s/thumbnail" % (PREFIX, w.new_uid()))
    c.check(problem_ok(r, 404), "thumbnail of an unknown study -> 404", repr(r))


# ---- WADO-URI and HEAD --------------------------------------------------------------------------

def test_wado_uri(c, srv, http, cat, compressed):
    sop = cat.sops(cat.multi_series_study())[0]
    h = cat.header[sop]
    base = "/wado?requestType=WADO&studyUID=%s&seriesUID=%s&objectUID=%s" % (
        h.StudyInstanceUID, h.SeriesInstanceUID, sop)
    r = http.get(base + "&contentType=application/dicom")
    c.check(r.status == 200 and r.type == "application/dicom" and
            r.body == open(srv.stored_path(sop), "rb").read(),
            "WADO-URI contentType=application/dicom: the stored object", repr(r))
    r = http.get(base)
    c.check(r.status == 200 and r.type == "image/jpeg" and r.body[:2] == b"\xff\xd8",
            "WADO-URI without contentType: image/jpeg", repr(r))
    r = http.get(base + "&contentType=image/png&rows=20&columns=20")
    info = png_info(r.body) if r.status == 200 else None
    c.check(info is not None and max(info[:2]) <= 20, "WADO-URI image/png with rows/columns",
            "%r %r" % (info, r))
    r = http.get(base + "&windowCenter=40&windowWidth=400&contentType=image/png")
    c.check(r.status == 200 and png_info(r.body), "WADO-URI windowCenter/windowWidth", repr(r))
    comp = [p for p, what in compressed if what == "JPEG-LS lossless"]
    if comp:
        ch = w.read_dicom(comp[0], stop_before_pixels=True)
        r = http.get("/wado?requestType=WADO&studyUID=%s&seriesUID=%s&objectUID=%s"
                     "&contentType=application/dicom&transferSyntax=%s" % (
                         ch.StudyInstanceUID, ch.SeriesInstanceUID, ch.SOPInstanceUID,
                         w.EXPLICIT_LE))
        ok = r.status == 200 and str(w.read_dicom(r.body).file_meta.TransferSyntaxUID) == \
            w.EXPLICIT_LE
        c.check(ok, "WADO-URI transferSyntax=1.2.840.10008.1.2.1 decompresses", repr(r))
    for bad, status in (("/wado?requestType=WADO&studyUID=%s&seriesUID=%s" % (
            h.StudyInstanceUID, h.SeriesInstanceUID), 400),
            (base.replace("requestType=WADO", "requestType=XYZ"), 400),
            (base.replace(sop, "1.2.x"), 400),
            (base.replace(sop, w.new_uid()), 404),
            (base + "&contentType=text/html", 406),
            (base + "&frameNumber=0", 400),
            (base + "&rows=99999", 400),
            (base + "&columns=x", 400)):
        r = http.get(bad)
        c.check(problem_ok(r, status), "WADO-URI %s -> %d" % (bad[5:70], status), repr(r))


def test_head(c, http, cat):
    sop = cat.sops(cat.multi_series_study())[0]
    for path, accept, ctype in (
            (PREFIX + "/studies", None, "application/dicom+json"),
            (cat.url(sop), w.DICOM_ACCEPT_ANY, "multipart/related"),
            (cat.url(sop) + "/metadata", None, "application/dicom+json"),
            (cat.url(sop) + "/rendered", None, "image/jpeg")):
        g = http.get(path, accept)
        r = http.request("HEAD", path, {"Accept": accept} if accept else {})
        length = r.header("content-length")
        c.check(r.status == 200 and r.body == b"" and r.type == ctype and g.status == 200 and
                length in (None, str(len(g.body))),
                "HEAD %s: 200, %s, no body, no wrong Content-Length" % (
                    path[len(PREFIX):][:40] or path, ctype), "%r length %s" % (r, length))
    r = http.request("HEAD", PREFIX + "/studies/%s" % w.new_uid())
    c.check(r.status == 404 and r.body == b"", "HEAD of an unknown study -> 404", repr(r))
    r = http.get(PREFIX + "/studies")
    c.check(r.status == 200, "the connection still serves after HEAD", repr(r))


# ---- STOW-RS -------------------------------------------------------------------------------------

def dicom_part(path_or_bytes):
    data = open(path_or_bytes, "rb").read() if isinstance(path_or_bytes, str) else path_or_bytes
    return ({"Content-Type": "application/dicom"}, data)


def post(http, path, parts, content_type=None):
    ctype, body = w.multipart_body(parts)
    return http.request("POST", PREFIX + path, {"Content-Type": content_type or ctype,
                                                "Accept": "application/dicom+json"}, body)


def stow_items(resp, seq):
    try:
        return resp.json().get(seq, {}).get("Value", [])
    except ValueError:
        return []


def qido_has(http, sop):
    r = http.get(PREFIX + "/instances?SOPInstanceUID=" + sop)
    return r.status == 200 and len(r.json()) == 1


def test_stow(c, srv, http, work):
    folder = os.path.join(work, "stow")
    w.gen_study(folder, "--studies", "2", "--images", "3", "--rows", "48", "--cols", "48",
                "--seed", "31")
    studies = sorted(os.listdir(folder))
    files = {s: sorted(glob.glob(os.path.join(folder, s, "*", "*.dcm"))) for s in studies}
    a_files, b_files = files[studies[0]], files[studies[1]]

    r = post(http, "/studies", [dicom_part(f) for f in a_files])
    refs = stow_items(r, "00081199")
    ok = r.status == 200 and r.type == "application/dicom+json" and len(refs) == 3 and \
        "00081198" not in r.json()
    c.check(ok, "STOW-RS of 3 application/dicom parts -> 200, ReferencedSOPSequence of 3",
            repr(r))
    bad = []
    for item, f in zip(sorted(refs, key=lambda i: i["00081155"]["Value"][0]),
                       sorted(a_files, key=lambda p: str(w.read_dicom(
                           p, stop_before_pixels=True).SOPInstanceUID))):
        src = w.read_dicom(f)
        if item.get("00081150", {}).get("Value") != [str(src.SOPClassUID)]:
            bad.append("ReferencedSOPClassUID %r" % item.get("00081150"))
        url = item.get("00081190", {}).get("Value", [""])[0]
        g = http.get(path_of(url), w.DICOM_ACCEPT_ANY)
        if g.status != 200:
            bad.append("RetrieveURL %s: HTTP %d" % (url, g.status))
            continue
        d = dataset_difference(src, w.read_dicom(g.parts()[0][1]))
        if d:
            bad.append(d)
    study_url = r.json().get("00081190", {}).get("Value", [""])[0] if r.status == 200 else ""
    c.check(not bad and study_url.endswith("/studies/" + studies[0]),
            "STOW-RS RetrieveURLs (instances and study) fetch the data sets that were sent",
            "; ".join(bad[:3]) + " study URL %r" % study_url)

    # One broken part among good ones: 202, the good ones stored.
    garbage = b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x14\x00" + b"1.2.840.10008.1.2.1\0" + \
        b"\x08\x00\x18\x00UI\xff\x00truncated"
    r = post(http, "/studies", [dicom_part(b_files[0]), dicom_part(garbage),
                                dicom_part(b_files[1])])
    failed = stow_items(r, "00081198")
    c.check(r.status == 202 and len(stow_items(r, "00081199")) == 2 and len(failed) == 1 and
            failed[0].get("00081197", {}).get("Value", [0])[0] != 0,
            "STOW-RS with a broken part among good ones -> 202, FailedSOPSequence with a "
            "FailureReason", repr(r))
    good = [str(w.read_dicom(f, stop_before_pixels=True).SOPInstanceUID) for f in b_files[:2]]
    c.check(all(qido_has(http, s) for s in good), "... and the good instances are stored")

    # All broken: 409.
    r = post(http, "/studies", [dicom_part(garbage), dicom_part(b"not DICOM at all")])
    c.check(r.status == 409 and len(stow_items(r, "00081198")) == 2 and
            not stow_items(r, "00081199"), "STOW-RS of broken parts only -> 409", repr(r))

    # To /studies/{uid}: an instance of another study is refused, nothing stored.
    other = b_files[2]
    other_sop = str(w.read_dicom(other, stop_before_pixels=True).SOPInstanceUID)
    before = srv.stored_count()
    r = post(http, "/studies/" + studies[0], [dicom_part(other)])
    failed = stow_items(r, "00081198")
    c.check(r.status == 409 and len(failed) == 1 and
            failed[0].get("00081155", {}).get("Value") == [other_sop] and
            not qido_has(http, other_sop) and srv.stored_count() == before,
            "STOW-RS to /studies/{A} of an instance of study B -> 409, nothing stored", repr(r))
    r = post(http, "/studies/" + studies[1], [dicom_part(other)])
    c.check(r.status == 200 and qido_has(http, other_sop),
            "STOW-RS to /studies/{B} of that instance -> 200", repr(r))
    r = post(http, "/studies/1.2.x", [dicom_part(other)])
    c.check(problem_ok(r, 400), "STOW-RS to /studies/{bad UID} -> 400", repr(r))

    # DICOM JSON metadata + bulk data by Content-Location.
    src = w.read_dicom(a_files[0])
    src.SOPInstanceUID = w.new_uid()
    src.file_meta.MediaStorageSOPInstanceUID = src.SOPInstanceUID
    pixel_url = "http://example.org/bulk/pixels-1"
    meta = src.to_json_dict(bulk_data_threshold=1024,
                            bulk_data_element_handler=lambda e: pixel_url
                            if e.tag == 0x7FE00010 else None)
    parts = [({"Content-Type": "application/dicom+json"}, json.dumps([meta]).encode()),
             ({"Content-Type": "application/octet-stream", "Content-Location": pixel_url},
              bytes(src.PixelData))]
    ctype, body = w.multipart_body(parts)
    ctype = ctype.replace('type="application/dicom"', 'type="application/dicom+json"')
    r = http.request("POST", PREFIX + "/studies", {"Content-Type": ctype}, body)
    ok = r.status == 200 and len(stow_items(r, "00081199")) == 1
    g = http.get("%s/studies/%s/series/%s/instances/%s" % (
        PREFIX, src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPInstanceUID),
        w.DICOM_ACCEPT_ANY) if ok else None
    d = dataset_difference(src, w.read_dicom(g.parts()[0][1])) if g and g.status == 200 else \
        "not retrievable"
    c.check(ok and d is None, "STOW-RS of DICOM JSON + bulk data (PixelData by "
            "Content-Location) -> 200, retrievable with the same data set", "%r %s" % (r, d))
    parts[1] = ({"Content-Type": "application/octet-stream",
                 "Content-Location": "http://example.org/other"}, b"\0" * 16)
    ctype, body = w.multipart_body(parts)
    r = http.request("POST", PREFIX + "/studies", {"Content-Type": ctype}, body)
    c.check(r.status == 409, "DICOM JSON whose BulkDataURI names no part -> 409", repr(r))

    # Bad requests.
    r = http.request("POST", PREFIX + "/studies", {"Content-Type": "application/dicom"},
                     open(a_files[0], "rb").read())
    c.check(problem_ok(r, 400), "STOW-RS with a non-multipart body -> 400 (or 415)", repr(r))
    r = http.request("POST", PREFIX + "/studies",
                     {"Content-Type": 'multipart/related; type="application/dicom"'}, b"--x--")
    c.check(problem_ok(r, 400), "STOW-RS without a boundary -> 400", repr(r))
    r = http.request("POST", PREFIX + "/studies", {"Content-Type": w.multipart_body([])[0]},
                     b"")
    c.check(problem_ok(r, 400), "STOW-RS with an empty body -> 400", repr(r))
    return files


def auth_line():
    return "Authorization: %s\r\n" % w.AUTH if w.AUTH else ""


STOW_CUT_TRIES = 40


def stow_cut(c, srv, port, work, files):
    """A body cut in the middle of a part: 400 (chunked, ended early) or a closed connection
    (Content-Length not reached); either way no half object is stored."""
    folder = os.path.join(work, "stow-cut")
    w.gen_study(folder, "--studies", "1", "--images", "2", "--rows", "64", "--cols", "64",
                "--seed", "32")
    fs = sorted(glob.glob(os.path.join(folder, "*", "*", "*.dcm")))
    sops = [str(w.read_dicom(f, stop_before_pixels=True).SOPInstanceUID) for f in fs]
    ctype, body = w.multipart_body([dicom_part(f) for f in fs])
    cut = body.find(b"\r\n--", len(body) // 2) - 1000  # in the middle of the second part
    half = body[:cut]
    # The temporary of the cut part must be gone by the time the answer arrives: the folder is
    # looked at as soon as the status line is in, before the connection closes or anything
    # else is asked, and many times over (a server that answers first and cleans up after
    # loses this race only now and then).
    statuses, left = set(), []
    for _ in range(STOW_CUT_TRIES):
        s = socket.create_connection(("127.0.0.1", port), timeout=60)
        s.sendall(("POST %s/studies HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s"
                   "Transfer-Encoding: chunked\r\n\r\n" % (PREFIX, ctype, auth_line()))
                  .encode())
        s.sendall(b"%x\r\n" % len(half) + half + b"\r\n0\r\n\r\n")
        answer = b""
        while b"\r\n" not in answer:
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
        temporaries = srv.temporaries()
        s.close()
        statuses.add(answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/") else b"none")
        if temporaries:
            left.append(temporaries)
    http = Client(port)
    c.check(statuses == {b"400"} and not left and not qido_has(http, sops[1]) and
            not srv.stored_path(sops[1]), "STOW-RS body (chunked) ending in the middle of a "
            "part -> 400, the cut instance not stored, no temporary left when the answer "
            "arrives (%d tries)" % STOW_CUT_TRIES, "statuses %r, temporaries at %d of %d "
            "answers, first %r" % (sorted(statuses), len(left), STOW_CUT_TRIES,
                                   left[0] if left else None))
    # Content-Length promised but the client goes away.
    sops2 = []
    folder2 = os.path.join(work, "stow-cut2")
    w.gen_study(folder2, "--studies", "1", "--images", "1", "--rows", "256", "--cols", "256",
                "--seed", "33")
    f2 = sorted(glob.glob(os.path.join(folder2, "*", "*", "*.dcm")))
    sops2 = [str(w.read_dicom(f, stop_before_pixels=True).SOPInstanceUID) for f in f2]
    ctype, body = w.multipart_body([dicom_part(f) for f in f2])
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(("POST %s/studies HTTP/1.1\r\nHost: x\r\nContent-Type: %s\r\n%s"
               "Content-Length: %d\r\n\r\n" % (PREFIX, ctype, auth_line(), len(body))).encode())
    s.sendall(body[:len(body) // 2])
    time.sleep(0.5)
    s.close()
    deadline = time.time() + 10
    while srv.temporaries() and time.time() < deadline:
        time.sleep(0.2)
    c.check(srv.alive() and not qido_has(http, sops2[0]) and not srv.stored_path(sops2[0]) and
            not srv.temporaries(), "STOW-RS client gone after half its Content-Length: nothing "
            "stored, no temporary left, the server still up", repr(srv.temporaries()))


class RssSampler:
    """The server's VmRSS before and at most while something runs (a thread reads
    /proc/PID/status every 20 ms): VmHWM alone would hide a big buffer that reuses memory an
    earlier request peaked with and gave back."""

    def __init__(self, srv):
        self.srv = srv
        self.before = srv.status_kb("VmRSS") / 1024
        self.peak = self.before
        self.samples = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run)
        self.thread.start()

    def run(self):
        while not self.done.is_set():
            v = self.srv.status_kb("VmRSS") / 1024
            self.peak = max(self.peak, v)
            self.samples += 1
            time.sleep(0.02)

    def stop(self):
        self.done.set()
        self.thread.join()
        return self.before, self.peak


def big_stow(c, srv, port, work, megabytes):
    """A 200 MB instance through STOW-RS (chunked, streamed from disk): stored, and the server's
    peak memory (VmHWM) grows by far less than the body."""
    import numpy as np
    import pydicom
    side = int((megabytes * 1024 * 1024 / 2) ** 0.5) // 16 * 16
    src = w.read_dicom(sorted(glob.glob(os.path.join(work, "gen", "ct", "*", "*", "*.dcm")))[0])
    ds = src
    ds.SOPInstanceUID = w.new_uid()
    ds.StudyInstanceUID = w.new_uid()
    ds.SeriesInstanceUID = w.new_uid()
    ds.Rows = ds.Columns = side
    ds.PixelData = (np.arange(side * side, dtype=np.uint32) % 4093).astype("<u2").tobytes()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = os.path.join(work, "big.dcm")
    ds.save_as(path, write_like_original=False)
    del ds, src
    size = os.path.getsize(path)
    boundary = "big-boundary-77"
    head = ("--%s\r\nContent-Type: application/dicom\r\n\r\n" % boundary).encode()
    tail = ("\r\n--%s--\r\n" % boundary).encode()

    def body():
        yield head
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                yield b
        yield tail

    sampler = RssSampler(srv)
    http = Client(port, timeout=900)
    t0 = time.time()
    http.conn = None
    http._connect()
    headers = {"Content-Type": 'multipart/related; type="application/dicom"; boundary=' +
               boundary}
    if w.AUTH:
        headers["Authorization"] = w.AUTH
    http.conn.request("POST", PREFIX + "/studies", body=body(), headers=headers,
                      encode_chunked=True)
    resp = http.conn.getresponse()
    data = resp.read()
    elapsed = time.time() - t0
    before_mb, peak_mb = sampler.stop()
    sop = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    stored = srv.stored_path(sop)
    same = False
    if stored:
        a = pydicom.dcmread(path)
        b = pydicom.dcmread(stored)
        same = dataset_difference(a, b) is None
    growth_mb = peak_mb - before_mb
    c.check(resp.status == 200 and same, "STOW-RS of a %.0f MB instance (%dx%d, chunked) -> 200 "
            "in %.1f s, stored with the same data set" % (size / 1e6, side, side, elapsed),
            "HTTP %d %r" % (resp.status, data[:300]))
    c.check(sampler.samples > 3 and growth_mb < size / 1e6 / 4,
            "the server's resident memory (VmRSS, sampled every 20 ms) rose by at most %.1f MB "
            "while it received a %.0f MB body (%.0f MB before; %d samples)" % (
                growth_mb, size / 1e6, before_mb, sampler.samples))
    # And back out: retrieval streams it too.
    sampler = RssSampler(srv)
    r = http.get("%s/studies/%s" % (PREFIX, w.read_dicom(path, stop_before_pixels=True)
                                    .StudyInstanceUID), w.DICOM_ACCEPT_ANY)
    before_mb, peak_mb = sampler.stop()
    c.check(r.status == 200 and len(r.body) > size and peak_mb - before_mb < size / 1e6 / 4,
            "WADO-RS of that study (%.0f MB) raises the server's resident memory by at most "
            "%.1f MB" % (len(r.body) / 1e6, peak_mb - before_mb), repr(r)[:200])
    os.unlink(path)


# ---- keep-alive and concurrency ----------------------------------------------------------------

def test_connections(c, srv, port, cat, work):
    http = Client(port)
    statuses = []
    sops = cat.sops()
    for i in range(150):
        sop = sops[i % len(sops)]
        path = [PREFIX + "/studies", cat.url(sop) + "/metadata",
                PREFIX + "/instances?limit=3", cat.url(sop)][i % 4]
        statuses.append(http.get(path, w.DICOM_ACCEPT_ANY if i % 4 == 3 else None).status)
    c.check(statuses == [200] * 150 and http.connections == 1,
            "keep-alive: 150 requests (QIDO, metadata, instances) on one connection",
            "%d connections, statuses %r" % (http.connections, sorted(set(statuses))))
    http.close()

    # Readers query while a writer stores a study, part by part.
    folder = os.path.join(work, "concurrent")
    w.gen_study(folder, "--studies", "1", "--images", "24", "--rows", "64", "--cols", "64",
                "--seed", "34")
    fs = sorted(glob.glob(os.path.join(folder, "*", "*", "*.dcm")))
    study = os.listdir(folder)[0]
    stop = threading.Event()
    results = []
    lock = threading.Lock()

    def reader(k):
        cl = Client(port)
        n, bad = 0, []
        while not stop.is_set():
            r = cl.get([PREFIX + "/studies", PREFIX + "/studies/%s/instances" % study,
                        PREFIX + "/series?Modality=CT"][n % 3])
            n += 1
            if r.status != 200:
                bad.append(r.status)
            else:
                r.json()
        with lock:
            results.append((n, bad, cl.connections))

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    writer = Client(port)
    stow_status = []
    for i in range(0, len(fs), 6):
        r = post(writer, "/studies", [dicom_part(f) for f in fs[i:i + 6]])
        stow_status.append(r.status)
    stop.set()
    for t in threads:
        t.join(120)
    r = writer.get(PREFIX + "/studies/%s/instances" % study)
    total = sum(n for n, _, _ in results)
    errors = [b for _, bad, _ in results for b in bad]
    c.check(stow_status == [200] * 4 and r.status == 200 and len(r.json()) == len(fs) and
            not errors and total > 0 and all(conns == 1 for _, _, conns in results),
            "4 readers (%d queries, each on one kept connection) while STOW-RS stores %d "
            "instances in 4 requests: all answered 200, all stored" % (total, len(fs)),
            "STOW %r, reader errors %r" % (stow_status, errors[:5]))


# ---- main ----------------------------------------------------------------------------------------

def main():
    telerad = w.scp_common.telerad_path()
    w.need_tools()
    keep = "--keep" in sys.argv
    big_mb = int(os.environ.get("TELERAD_WEB_BIG_MB", "200"))
    work = w.tempdir("telerad-web-")
    c = Checks("web_dicomweb")
    srv = w.WebServer(telerad, work, "-q").start()
    print("server: DICOM port %d, HTTP port %d, work %s" % (srv.dicom_port, srv.http_port, work),
          flush=True)
    try:
        files, compressed = make_data(work)
        failures = w.send_files(srv.dicom_port, files + [p for p, _ in compressed])
        c.check(not failures, "storescu: %d synthetic and %d compressed files stored" % (
            len(files), len(compressed)), "; ".join(failures)[:500])
        cat = Catalog()
        for f in files + [p for p, _ in compressed]:
            cat.add(f)
        compressed_study = str(w.read_dicom(compressed[0][0], stop_before_pixels=True)
                               .StudyInstanceUID)
        key = w.authenticate(srv.http_port, srv.admin_password)
        if key:
            anon = Client(srv.http_port, auth=False)
            r = anon.get(PREFIX + "/studies")
            r2 = anon.get(cat.url(cat.sops()[0]), w.DICOM_ACCEPT_ANY)
            c.check(r.status == 401 and r2.status == 401 and
                    r.type == "application/problem+json", "DICOMweb without credentials -> "
                    "401 problem+json (QIDO and WADO)", "%r %r" % (r, r2))
            print("authenticated with an API key (Bearer)", flush=True)
        http = Client(srv.http_port)
        sections = [
            ("QIDO-RS", lambda: test_qido(c, http, cat)),
            ("QIDO-RS = C-FIND", lambda: test_cfind_consistency(c, srv, http, cat, work,
                                                                compressed_study)),
            ("WADO-RS instances", lambda: test_wado_instances(c, srv, http, cat, compressed,
                                                              work)),
            ("WADO-RS metadata", lambda: test_metadata(c, srv, http, cat, srv.http_port)),
            ("WADO-RS frames", lambda: test_frames(c, srv, http, cat, compressed, work)),
            ("WADO-RS rendered", lambda: test_rendered(c, srv, http, cat, compressed)),
            ("WADO-URI", lambda: test_wado_uri(c, srv, http, cat, compressed)),
            ("HEAD", lambda: test_head(c, http, cat)),
            ("connections", lambda: test_connections(c, srv, srv.http_port, cat, work)),
            ("STOW-RS", lambda: test_stow(c, srv, http, work)),
            ("STOW-RS cut bodies", lambda: stow_cut(c, srv, srv.http_port, work, None)),
            ("STOW-RS big instance", lambda: big_stow(c, srv, srv.http_port, work, big_mb)),
        ]
        only = os.environ.get("TELERAD_WEB_ONLY")
        for name, fn in sections:
            if only and only not in name:
                continue
            print("== %s" % name, flush=True)
            try:
                fn()
            except Exception as e:  # a crash in one section fails it, the others still run
                import traceback
                traceback.print_exc()
                c.check(False, "%s: the section ran to its end" % name, repr(e))
            if not srv.alive():
                c.check(False, "the server is still running after %s" % name,
                        srv.log_text()[-3000:])
                break
    finally:
        rc = srv.stop()
        c.check(rc == 0, "telerad serve stops cleanly on SIGTERM (exit %s)" % rc,
                srv.log_text()[-3000:])
        log = srv.log_text()
        c.check("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
                "no sanitizer report in the server log", log[-3000:])
        if c.failed or keep:
            print("work folder kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
