#!/usr/bin/python3
"""Compare `telerad render` with DCMTK's dcm2pnm, pixel by pixel.

Every image that both can decode is rendered by both, with the same VOI choice, to an 8-bit PNG,
and the two pictures must be equal within one grey level (per sample, for colour). The files:

  * Debian python3-pydicom's test_files (MONOCHROME2, RGB, YBR_FULL_422, signed, 32-bit,
    1-bit, multi-frame, big endian, deflate);
  * ../shared/data/wg04/REF (the NEMA WG04 uncompressed references: CT, MR, NM, RG (incl.
    MONOCHROME1), SC, US, VL, XA) and ../shared/data/pydicom-data (palette colour 8 and 16 bit,
    segmented palettes, planar configuration 1, modality and VOI LUT sequences), each skipped
    with a message when absent;
  * images made here with pydicom for what those lack: MONOCHROME1 with a window and with
    Presentation LUT Shape INVERSE or IDENTITY, Presentation LUT Shape INVERSE on MONOCHROME2,
    a SIGMOID window, signed 12 bits in 16 with high bit 11 and junk above
    it, fractional rescale, a 16-bit palette, 8-bit and 16-bit VOI LUTs.

Compressed files take part as soon as telerad decodes their transfer syntax (and dcm2pnm does):
until then they are counted as skipped.

The VOI choice: telerad's default (`--window auto`: the image's first window, else its first VOI
LUT, else min-max) against dcm2pnm's +Wi 1 / +Wl 1 / +Wm; then for every grey image also
`--window minmax` against +Wm, `--window none` against dcm2pnm's default (no VOI), and an
explicit window (`--window C,W` against +Ww C W, LINEAR and SIGMOID). Multi-frame images are
compared at their first, middle and last frames. For a few images, `--size` at half the size must
equal the 2x2 area average of the full-size picture (within one grey level), and a JPEG must
decode to within a few grey levels of the PNG.

Output: one line per comparison with the maximum difference, then per category the number of
files and the largest difference. Exit 0 when all are within one grey level, 1 otherwise, 77 when
pydicom or dcm2pnm is missing.

usage: render.py TELERAD [--verbose]
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib

warnings.simplefilter("ignore")
try:
    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
except ImportError:
    print("SKIP: pydicom and numpy are needed (apt-get install python3-pydicom python3-numpy)")
    sys.exit(77)
try:
    from PIL import Image  # Debian's python3-pil, when installed: faster PNG decoding
except ImportError:
    Image = None

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data"))
PYDICOM_TEST_FILES = os.path.join(os.path.dirname(pydicom.__file__), "data", "test_files")
TOLERANCE = 1

# Images dcm2pnm cannot be asked to render as telerad does by default, and the dcm2pnm options
# that give the same picture.
EQUIVALENT = {
    # An enhanced CT: the window (49/102) is in the Frame VOI LUT functional group, which
    # dcm2pnm 3.6.7 does not read (it does read the rescale from the Pixel Value Transformation
    # group, as telerad does).
    "eCT_Supplemental.dcm": ["+Ww", "49", "102"],
}


# Files dcm2pnm misreads, rendered by dcm2pnm from a twin holding the same pixel values
# (pydicom agrees): dcm2pnm 3.6.7 reads 32-bit samples of big endian OW pixel data with their
# 16-bit halves swapped.
# And JPEG 2000 files compressed without loss, for which DCMTK has no decoder, rendered by
# dcm2pnm from their uncompressed originals.
TWIN = {
    "rtdose_expb.dcm": "rtdose.dcm",
    "rtdose_expb_1frame.dcm": "rtdose_1frame.dcm",
    "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "emri_small_jpeg_2k_lossless.dcm": "emri_small.dcm",
    "liver_j2k.dcm": "liver.dcm",
    "liver_nonbyte_aligned_j2k.dcm": "liver_nonbyte_aligned.dcm",
    "MR2_J2KR.dcm": "MR2_UNCR.dcm",
    "US1_J2KR.dcm": "US1_UNCR.dcm",
    "693_J2KR.dcm": "693_UNCR.dcm",
    "RG3_J2KR.dcm": "../wg04/REF/RG3_UNC",
}


def twin_of(path):
    """The file dcm2pnm renders in place of `path`, when it is not `path` itself."""
    name, folder = os.path.basename(path), os.path.dirname(path)
    if name in TWIN:
        return os.path.normpath(os.path.join(folder, TWIN[name]))
    # WG04: <image>_J2KR is <image>_UNC compressed without loss.
    if os.path.basename(folder) == "J2KR" and name.endswith("_J2KR"):
        return os.path.join(folder, "..", "REF", name[:-len("_J2KR")] + "_UNC")
    return None

# Files telerad refuses on purpose (exit status 1 and a message), with the reason.
REFUSED = {
    "MR_truncated.dcm": "the pixel data is cut short: telerad refuses the file",
    "badVR.dcm": "NumberOfFrames is '1A', not a number: telerad refuses to guess",
}

# DCMTK's tools that decompress a transfer syntax before dcm2pnm renders it (dcm2pnm itself
# has no decoders registered).
DECOMPRESSORS = {
    "1.2.840.10008.1.2.4.50": "dcmdjpeg", "1.2.840.10008.1.2.4.51": "dcmdjpeg",
    "1.2.840.10008.1.2.4.57": "dcmdjpeg", "1.2.840.10008.1.2.4.70": "dcmdjpeg",
    "1.2.840.10008.1.2.5": "dcmdrle",
    "1.2.840.10008.1.2.4.80": "dcmdjpls", "1.2.840.10008.1.2.4.81": "dcmdjpls",
}
LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81"}


def fractional(value):
    try:
        return float(value) != int(float(value))
    except (TypeError, ValueError):
        return False


def deliberate_tolerance(ds, what, width=None):
    """(tolerance, reason) where telerad differs from dcm2pnm on purpose by more than one level."""
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
    if ts in LOSSY:
        return 4, ("lossy JPEG: libjpeg-turbo (telerad) and IJG libjpeg (dcmdjpeg) may round "
                   "the inverse DCT differently by a unit, which a window can amplify")
    if width and (fractional(ds.get("RescaleSlope", 1)) or fractional(ds.get("RescaleIntercept", 0))):
        return TOLERANCE + int(np.ceil(255.0 / width)), (
            "a fractional rescale: dcm2pnm truncates the rescaled values to integers before the "
            "VOI (up to one unit off, %.1f grey levels in a window %g wide); telerad keeps them "
            "exact" % (255.0 / width, width))
    if pi.startswith("YBR"):
        return 2, ("dcm2pnm's 8-bit YCbCr tables truncate each term and take 127.5 as zero "
                   "chroma; telerad rounds the inverse of PS3.3 C.7.6.3.1.2 about 128, as "
                   "pydicom does (checked against pydicom within one level)")
    shape = str(ds.get("PresentationLUTShape", "")).strip()
    inverse = shape == "INVERSE" or (pi == "MONOCHROME1" and shape != "IDENTITY")
    if inverse and what.startswith("none"):
        return 2, ("inverted without VOI, dcm2pnm scales by 254/range (its output range is "
                   "computed as high - low + 1 with low > high) and so never reaches 0; telerad "
                   "mirrors the non-inverted scale")
    return TOLERANCE, ""


# ---- PNG decoding (PIL when present, else zlib and numpy) ---------------------------------------

def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def read_png(path):
    """(array of shape (height, width, channels) uint8) for 8-bit grey/RGB, non-interlaced."""
    if Image is not None:
        with Image.open(path) as im:
            a = np.asarray(im)
        return a.reshape(a.shape[0], a.shape[1], -1)
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("%s: not a PNG" % path)
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, colour, _, _, interlace = ihdr
    if depth != 8 or colour not in (0, 2) or interlace:
        raise ValueError("%s: only 8-bit grey or RGB, non-interlaced" % path)
    bpp = 1 if colour == 0 else 3
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = np.frombuffer(raw, dtype=np.uint8, count=stride, offset=y * (stride + 1) + 1)
        line = line.astype(np.int32)
        if f == 0:
            cur = line
        elif f == 1:
            cur = line.reshape(-1, bpp).cumsum(axis=0).reshape(-1) % 256
        elif f == 2:
            cur = (line + prev) % 256
        else:
            cur = [0] * stride
            for x in range(stride):
                a = cur[x - bpp] if x >= bpp else 0
                b = int(prev[x])
                if f == 3:
                    cur[x] = (int(line[x]) + (a + b) // 2) % 256
                else:
                    c = int(prev[x - bpp]) if x >= bpp else 0
                    cur[x] = (int(line[x]) + paeth(a, b, c)) % 256
            cur = np.array(cur, dtype=np.int32)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, bpp)


def jpeg_size(path):
    """(width, height, components) from a JPEG's SOF marker."""
    data = open(path, "rb").read()
    if data[:2] != b"\xff\xd8":
        raise ValueError("%s: not a JPEG" % path)
    pos = 2
    while pos + 4 <= len(data):
        marker, length = data[pos + 1], struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            h, w, n = struct.unpack(">HHB", data[pos + 5:pos + 10])
            return w, h, n
        pos += 2 + length
    raise ValueError("%s: no SOF marker" % path)


# ---- synthetic images ---------------------------------------------------------------------------

def new_dataset(rows, cols, photometric, samples=1, bits=16, stored=None, high=None, signed=0):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, cols
    ds.SamplesPerPixel = samples
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = bits
    ds.BitsStored = stored if stored else bits
    ds.HighBit = high if high is not None else ds.BitsStored - 1
    ds.PixelRepresentation = signed
    if samples == 3:
        ds.PlanarConfiguration = 0
    return ds


def ramp(rows, cols, lo, hi, seed=1):
    """A ramp from lo to hi with some noise: every value range gets used."""
    rng = np.random.default_rng(seed)
    base = np.linspace(lo, hi, rows * cols).reshape(rows, cols)
    noise = rng.integers(-(hi - lo) // 50 - 1, (hi - lo) // 50 + 2, size=(rows, cols))
    return np.clip(base + noise, lo, hi).astype(np.int64)


def synthetic(folder):
    made = []

    def save(name, ds, pixels, dtype):
        ds.PixelData = np.ascontiguousarray(pixels).astype(dtype).tobytes()
        path = os.path.join(folder, name)
        ds.save_as(path, write_like_original=False)
        made.append(path)

    # MONOCHROME1 with a window: low values white.
    ds = new_dataset(64, 80, "MONOCHROME1", stored=12)
    ds.WindowCenter, ds.WindowWidth = 2000, 1500
    save("synthetic_mono1_window.dcm", ds, ramp(64, 80, 0, 4095), "<u2")
    # MONOCHROME2 with Presentation LUT Shape INVERSE and a window.
    ds = new_dataset(64, 80, "MONOCHROME2", stored=12)
    ds.WindowCenter, ds.WindowWidth = 1000, 3000
    ds.PresentationLUTShape = "INVERSE"
    save("synthetic_plut_inverse.dcm", ds, ramp(64, 80, 0, 4095), "<u2")
    # MONOCHROME1 with Presentation LUT Shape INVERSE (as DX images have it: one inversion)
    # and with IDENTITY (the shape decides: no inversion).
    for shape in ("INVERSE", "IDENTITY"):
        ds = new_dataset(64, 80, "MONOCHROME1", stored=12)
        ds.WindowCenter, ds.WindowWidth = 2000, 1500
        ds.PresentationLUTShape = shape
        save("synthetic_mono1_%s.dcm" % shape.lower(), ds, ramp(64, 80, 0, 4095), "<u2")
    # A SIGMOID window.
    ds = new_dataset(64, 80, "MONOCHROME2", stored=12)
    ds.WindowCenter, ds.WindowWidth = 2048, 1000
    ds.VOILUTFunction = "SIGMOID"
    save("synthetic_sigmoid.dcm", ds, ramp(64, 80, 0, 4095), "<u2")
    # Signed 12 bits in 16, high bit 11, junk in the 4 bits above, rescaled, windowed.
    ds = new_dataset(64, 80, "MONOCHROME2", stored=12, high=11, signed=1)
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1000
    ds.WindowCenter, ds.WindowWidth = -500, 1800
    v = ramp(64, 80, -2048, 2047)
    junk = (np.arange(64 * 80).reshape(64, 80) % 16) << 12
    save("synthetic_signed12_junk.dcm", ds, (v & 0x0FFF) | junk, "<u2")
    # Fractional rescale slope and intercept (as MR often has), min-max.
    ds = new_dataset(64, 80, "MONOCHROME2", stored=12)
    ds.RescaleSlope, ds.RescaleIntercept = "0.37", "-12.5"
    save("synthetic_fractional_rescale.dcm", ds, ramp(64, 80, 100, 3000), "<u2")
    # 8-bit VOI LUT on 12-bit data, and a 16-bit VOI LUT.
    for lut_bits in (8, 16):
        ds = new_dataset(64, 80, "MONOCHROME2", stored=12)
        item = Dataset()
        item.LUTDescriptor = [3000, 500, lut_bits]
        top = (1 << lut_bits) - 1
        table = (np.sin(np.linspace(0, 3, 3000)) ** 2 * top).astype(np.uint16)
        item.LUTData = table.tolist()
        item["LUTData"].VR = "US"
        ds.VOILUTSequence = Sequence([item])
        save("synthetic_voi_lut_%d.dcm" % lut_bits, ds, ramp(64, 80, 0, 4095), "<u2")
    # A 16-bit palette (256 entries, first mapped 0).
    ds = new_dataset(64, 80, "PALETTE COLOR", bits=8)
    x = np.arange(256)
    for colour, table in (("Red", x * 257), ("Green", (255 - x) * 257),
                          ("Blue", (x * 7 % 256) * 257)):
        setattr(ds, colour + "PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, colour + "PaletteColorLookupTableData", table.astype("<u2").tobytes())
    save("synthetic_palette16.dcm", ds, ramp(64, 80, 0, 255), "u1")
    # A multi-frame signed image, each frame different.
    ds = new_dataset(32, 40, "MONOCHROME2", stored=16, signed=1)
    ds.NumberOfFrames = 3
    frames = np.stack([ramp(32, 40, -3000 * (k + 1), 1000 * (k + 1), seed=k) for k in range(3)])
    save("synthetic_multiframe_signed.dcm", ds, frames, "<i2")
    return made


# ---- running the two tools ----------------------------------------------------------------------

def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=300)
    return p.returncode, p.stderr.decode("utf-8", "replace").strip()


def category(ds):
    pi = str(ds.get("PhotometricInterpretation", "")).strip()
    if pi in ("MONOCHROME1", "MONOCHROME2"):
        extra = []
        if ds.get("PixelRepresentation", 0) == 1:
            extra.append("signed")
        if "ModalityLUTSequence" in ds:
            extra.append("modality LUT")
        if "VOILUTSequence" in ds:
            extra.append("VOI LUT")
        return pi + (" (" + ", ".join(extra) + ")" if extra else "")
    if pi.startswith("YBR"):
        return "YBR"
    return pi


def auto_voi(ds):
    """dcm2pnm's options for what telerad's --window auto picks."""
    try:
        c = ds.get("WindowCenter")
        w = ds.get("WindowWidth")
        if c is not None and w is not None:
            c = c[0] if isinstance(c, pydicom.multival.MultiValue) else c
            w = w[0] if isinstance(w, pydicom.multival.MultiValue) else w
            fn = str(ds.get("VOILUTFunction", "LINEAR")).strip()
            if (float(w) >= 1) if fn not in ("LINEAR_EXACT", "SIGMOID") else float(w) > 0:
                return ["+Wi", "1"], "image window"
    except (TypeError, ValueError):
        pass
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        return ["+Wl", "1"], "image VOI LUT"
    return ["+Wm"], "min-max"


class Runner:
    def __init__(self, telerad, work, verbose):
        self.telerad, self.work, self.verbose = telerad, work, verbose
        # (category, file, what, max difference or None when skipped, allowed, note)
        self.results = []
        self.count = 0

    def telerad_render(self, path, out, options):
        return run([self.telerad, "render", "--force", path, "-o", out] + options)

    def dcm2pnm_input(self, path, ds):
        """The file dcm2pnm should render (a decompressed copy, a twin), or (None, why not)."""
        name = os.path.basename(path)
        twin = twin_of(path)
        if twin:
            return (twin, "") if os.path.exists(twin) else (None, "%s is absent" % twin)
        ts = str(getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", ""))
        if "PixelData" in ds and ds["PixelData"].is_undefined_length:
            tool = DECOMPRESSORS.get(ts)
            if not tool or not shutil.which(tool):
                return None, "no DCMTK decoder for transfer syntax %s" % ts
            copy = os.path.join(self.work, "dcmtk-" + name)
            if not os.path.exists(copy):
                rc, msg = run([tool, "-q", path, copy])
                if rc != 0:
                    return None, "%s: %s" % (tool, msg or "failed")
            return copy, ""
        return path, ""

    def render_pair(self, path, ds, frame, ours, theirs):
        """(max difference, telerad's PNG), or (None, why it was not compared), or
        (999, what failed)."""
        self.count += 1
        a = os.path.join(self.work, "t%d.png" % self.count)
        b = os.path.join(self.work, "d%d.png" % self.count)
        rc, msg = self.telerad_render(path, a, ["--frame", str(frame)] + ours)
        if rc != 0:
            name = os.path.basename(path)
            crashed = rc != 1 or "Sanitizer" in msg or "runtime error" in msg
            if not crashed and (name in REFUSED or "has no decoder" in msg):
                return None, "telerad: " + REFUSED.get(name, msg)
            if not crashed and ds["PixelData"].is_undefined_length:
                # A codec's clean refusal of a bitstream is the codecs' test's business
                # (tests/compat/codecs.py); it is listed here, not failed.
                return None, "telerad's decoder refused it: " + msg
            return 999, "telerad failed (exit status %d): %s" % (rc, msg[:300])
        source, why = self.dcm2pnm_input(path, ds)
        if source is None:
            return None, why
        rc, msg = run(["dcm2pnm", "-q", "+on", "-il", "-O", "+F", str(frame)] + theirs +
                      [source, b])
        if rc != 0 or not os.path.exists(b):
            return None, "dcm2pnm: " + (msg or "failed")
        x, y = read_png(a), read_png(b)
        if x.shape != y.shape:
            return 999, "shapes differ: telerad %s, dcm2pnm %s" % (x.shape, y.shape)
        return int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()), a

    def record(self, cat, name, what, diff, allowed, note=""):
        self.results.append((cat, name, what, diff, allowed, note))
        if diff is None:
            print("  %-40s %-32s skipped: %s" % (name, what, note[:110]))
            return
        flag = "ok" if diff <= allowed else "FAIL"
        extra = " (allowed %d: %s)" % (allowed, note) if allowed > TOLERANCE and self.verbose else ""
        print("  %-40s %-32s max diff %3d %s%s" % (name, what, diff, flag, extra))

    def compare(self, path, ds, cat, frame, what, ours, theirs, width=None):
        diff, note = self.render_pair(path, ds, frame, ours, theirs)
        name = os.path.basename(path)
        if diff is None:
            self.record(cat, name, what, None, 0, note)
            return None
        if diff == 999:
            self.record(cat, name, what, diff, 0, note)
            print("    " + note)
            return None
        allowed, reason = deliberate_tolerance(ds, what, width)
        self.record(cat, name, what, diff, allowed, reason)
        return note

    def file(self, path):
        try:
            ds = pydicom.dcmread(path, force=True)
        except Exception:  # noqa: BLE001 - a file pydicom cannot read is not an image here
            return
        if "PixelData" not in ds or "Rows" not in ds or "PhotometricInterpretation" not in ds:
            return
        cat = category(ds)
        name = os.path.basename(path)
        try:
            frames = max(1, int(ds.get("NumberOfFrames", 1) or 1))
        except (TypeError, ValueError):
            frames = 1
        frame_list = sorted({1, (frames + 1) // 2, frames})
        grey = str(ds.PhotometricInterpretation).strip() in ("MONOCHROME1", "MONOCHROME2")
        # Compressed images test decoding more than rendering: one comparison per frame.
        compressed = ds["PixelData"].is_undefined_length
        for frame in frame_list:
            tag = " f%d" % frame if frames > 1 else ""
            if grey:
                theirs, why = EQUIVALENT.get(name), "equivalent window"
                if theirs is None:
                    theirs, why = auto_voi(ds)
                full = self.compare(path, ds, cat, frame, "auto (%s)%s" % (why, tag), [], theirs)
                if full is None:
                    return  # not decodable (yet): one line per file is enough
                if frame == 1 and not compressed:
                    # dcm2pnm applies the image's VOI LUT Function to any window, also one
                    # computed or given on the command line; telerad applies it to the image's
                    # own windows only (PS3.3 C.11.2.1.3) and LINEAR otherwise: +Wfl says so.
                    linear = ["+Wfl"] if "VOILUTFunction" in ds else []
                    self.compare(path, ds, cat, frame, "minmax", ["--window", "minmax"],
                                 ["+Wm"] + linear)
                    self.compare(path, ds, cat, frame, "none", ["--window", "none"], [])
                    c, w = self.fixed_window(ds)
                    self.compare(path, ds, cat, frame, "window %g,%g" % (c, w),
                                 ["--window", "%g,%g" % (c, w)], ["+Ww", str(c), str(w)] + linear,
                                 width=w)
                    self.compare(path, ds, cat, frame, "sigmoid %g,%g" % (c, w),
                                 ["--window", "%g,%g,sigmoid" % (c, w)],
                                 ["+Ww", str(c), str(w), "+Wfs"], width=w)
            else:
                full = self.compare(path, ds, cat, frame, "colour" + tag, [], [])
                if full is None:
                    return
                if (str(ds.PhotometricInterpretation).strip() in ("YBR_FULL", "YBR_FULL_422")
                        and not compressed):
                    self.ybr_oracle(path, ds, cat, frame, full)
            if str(ds.PhotometricInterpretation).strip() == "PALETTE COLOR" and frame == 1:
                self.palette_oracle(path, ds, cat)
            if frame == 1 and name in VIEWPORT_FILES:
                self.viewport(path, ds, cat, full)

    def ybr_oracle(self, path, ds, cat, frame, ours):
        """YCbCr to RGB against pydicom's convert_color_space (PS3.3 C.7.6.3.1.2)."""
        from pydicom.pixel_data_handlers.util import convert_color_space
        name = os.path.basename(path)
        try:
            arr = ds.pixel_array
        except Exception as e:  # noqa: BLE001 - no handler for this transfer syntax
            self.record("YBR (pydicom)", name, "ybr vs pydicom", None, 0, str(e))
            return
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            arr = arr[frame - 1]
        expect = convert_color_space(arr, str(ds.PhotometricInterpretation).strip(), "RGB")
        got = read_png(ours)
        diff = 999 if got.shape != expect.shape else int(
            np.abs(got.astype(np.int16) - expect.astype(np.int16)).max())
        self.record("YBR (pydicom)", name, "ybr to rgb vs pydicom", diff, TOLERANCE)

    def palette_oracle(self, path, ds, cat):
        """PALETTE COLOR against pydicom's apply_color_lut (also for segmented palettes, which
        dcm2pnm refuses); 16-bit entries are taken to 8 bits by their high byte."""
        from pydicom.pixel_data_handlers.util import apply_color_lut
        name = os.path.basename(path)
        out = os.path.join(self.work, "palette.png")
        if not ds.is_little_endian:
            # pydicom 2.3 reads big endian palette data with the bytes swapped; dcm2pnm
            # covers these files.
            return
        try:
            arr = ds.pixel_array
            if int(ds.get("NumberOfFrames", 1) or 1) > 1:
                arr = arr[0]
            rgb = apply_color_lut(arr, ds)
        except Exception as e:  # noqa: BLE001 - no handler for this transfer syntax
            self.record("PALETTE COLOR (pydicom)", name, "palette vs pydicom", None, 0, str(e))
            return
        expect = (rgb >> 8) if rgb.dtype.itemsize > 1 and rgb.max() > 255 else rgb
        rc, msg = self.telerad_render(path, out, [])
        if rc != 0:
            self.record("PALETTE COLOR (pydicom)", name, "palette vs pydicom", 999, 0, msg)
            return
        got = read_png(out)
        diff = 999 if got.shape != expect.shape else int(
            np.abs(got.astype(np.int32) - expect.astype(np.int32)).max())
        self.record("PALETTE COLOR (pydicom)", name, "palette vs pydicom", diff, TOLERANCE)

    @staticmethod
    def fixed_window(ds):
        """A window inside the image's range, so that both ends of the ramp are exercised."""
        bits = int(ds.get("BitsStored", 8))
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        slope = float(ds.get("RescaleSlope", 1) or 1)
        icpt = float(ds.get("RescaleIntercept", 0) or 0)
        a, b = sorted((lo * slope + icpt, hi * slope + icpt))
        if bits > 16:
            return 1000.0, 2000.0
        return round((a + b) / 2 / 7) + 0.5, max(2.0, round((b - a) / 9))

    def viewport(self, path, ds, cat, full_png):
        """--size at half the size against the 2x2 area average of the full picture."""
        name = os.path.basename(path)
        full = read_png(full_png).astype(np.float64)
        h, w = full.shape[0] // 2 * 2, full.shape[1] // 2 * 2
        if full.shape[0] != h or full.shape[1] != w:
            return
        expect = (full[0::2, 0::2] + full[1::2, 0::2] + full[0::2, 1::2] + full[1::2, 1::2]) / 4
        out = os.path.join(self.work, "half.png")
        rc, msg = self.telerad_render(path, out, ["--size", "%dx%d" % (w // 2, h // 2)])
        if rc != 0:
            self.record("viewport (area average)", name, "viewport 1/2", 999, 0, msg)
            return
        got = read_png(out).astype(np.float64)
        diff = 999 if got.shape != expect.shape else int(np.ceil(np.abs(got - expect).max() - 0.5))
        self.record("viewport (area average)", name, "1/2 size vs 2x2 mean", diff, TOLERANCE)
        # JPEG: the right size and, decoded, close to the PNG.
        jpg = os.path.join(self.work, "full.jpg")
        rc, msg = self.telerad_render(path, jpg, ["--quality", "95"])
        diff = 999
        if rc == 0 and jpeg_size(jpg) == (full.shape[1], full.shape[0], full.shape[2]):
            diff = 0
            if Image is not None:
                with Image.open(jpg) as im:
                    j = np.asarray(im).reshape(full.shape).astype(np.float64)
                diff = int(round(np.abs(j - full).mean()))
        self.record("JPEG (mean difference)", name, "jpeg q95 vs png", diff, 3)


VIEWPORT_FILES = {"CT_small.dcm", "MR_small.dcm", "CT1_UNC", "US1_UNC", "SC_rgb.dcm",
                  "OBXXXX1A.dcm", "synthetic_mono1_window.dcm", "SC_ybr_full_422_uncompressed.dcm"}


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    verbose = "--verbose" in sys.argv
    if len(args) != 1:
        print(__doc__)
        return 2
    if not shutil.which("dcm2pnm"):
        print("SKIP: dcm2pnm is not installed (apt-get install dcmtk)")
        return 77
    telerad = os.path.abspath(args[0])
    work = tempfile.mkdtemp(prefix="telerad-render-")
    try:
        runner = Runner(telerad, work, verbose)
        sets = [("pydicom test files", PYDICOM_TEST_FILES)]
        for name in ("wg04/REF", "pydicom-data", "wg04/RLE", "wg04/JPLL", "wg04/JPLY",
                     "wg04/JLSL", "wg04/JLSN", "wg04/J2KR", "wg04/J2KI"):
            folder = os.path.join(SHARED, name)
            if os.path.isdir(folder):
                sets.append((name, folder))
            else:
                print("note: %s is absent: its images are not compared" % folder)
        synth = os.path.join(work, "synthetic")
        os.mkdir(synth)
        sets.append(("synthetic", synth))
        synthetic(synth)
        for label, folder in sets:
            print("%s (%s):" % (label, folder))
            for entry in sorted(os.listdir(folder)):
                path = os.path.join(folder, entry)
                if os.path.isfile(path):
                    runner.file(path)
        return report(runner.results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def report(results):
    print("\nsummary (maximum difference in grey levels, per category):")
    cats = {}
    for cat, name, what, diff, allowed, note in results:
        c = cats.setdefault(cat, {"files": set(), "compared": 0, "skipped": set(), "max": 0,
                                  "failed": 0})
        if diff is None:
            c["skipped"].add(name)
            continue
        c["files"].add(name)
        c["compared"] += 1
        c["max"] = max(c["max"], diff)
        if diff > allowed:
            c["failed"] += 1
    files, skipped, compared, failed = set(), set(), 0, 0
    for cat in sorted(cats):
        c = cats[cat]
        print("  %-34s %3d files, %4d comparisons, max diff %3d%s%s" % (
            cat, len(c["files"]), c["compared"], c["max"],
            ", %d files skipped" % len(c["skipped"]) if c["skipped"] else "",
            ", %d FAILED" % c["failed"] if c["failed"] else ""))
        files |= c["files"]
        skipped |= c["skipped"]
        compared += c["compared"]
        failed += c["failed"]
    print("total: %d files compared, %d comparisons, %d failed; %d files skipped (compressed "
          "without a decoder yet, or refused by one side)" % (
              len(files), compared, failed, len(skipped - files)))
    return 1 if failed or compared == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
