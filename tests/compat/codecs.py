#!/usr/bin/python3
"""Pixel data codecs checked against references and other decoders.

telerad decodes a file by `telerad convert --ts explicit IN OUT` (every frame decoded, written
natively); pydicom then reads OUT's pixels, and the same for the reference, so both sides are
read by the same independent reader. Samples are compared on their Bits Stored low bits (a
signed value may or may not be sign-extended above them; both are valid native data).

  (a) WG04 (../shared/data/wg04): every lossless file (JPLL, JLSL, J2KR, RLE) must equal its
      REF/*_UNC pixels exactly. The near-lossless JPEG-LS files (JLSN) must equal DCMTK's
      dcmdjpls output exactly (JPEG-LS decoding is exact); lossy JPEG (JPLY, 8 and 12 bit)
      must be within +-1 of DCMTK's dcmdjpeg (another IDCT may round differently).
  (b) Compressed files of Debian's pydicom test files and ../shared/data/pydicom-data
      (JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE): equal to their
      uncompressed twin where pydicom ships one, else to DCMTK's dcmdjpeg / dcmdjpls /
      dcmdrle output, else (JPEG 2000 without twin) to OpenJPEG's opj_decompress on the
      codestream. Lossy JPEG within +-1 per sample; lossy JPEG 2000 twins within +-1 (the twin
      was made by another decoder). Files known to be damaged must fail with a message.
  (c) Encoding: native files converted to RLE, JPEG-LS, JPEG 2000 (and lossless JPEG) with
      `telerad convert --ts`, decoded by DCMTK (dcmdrle, dcmdjpls, dcmdjpeg) or opj_decompress,
      equal the original pixels bit for bit; dciodvfy reports no error on the written file
      that it does not report on the input.

Exit 0 when all hold, 1 otherwise, 77 (skip) when neither pydicom's files nor the shared data
are present. usage: codecs.py TELERAD
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pydicom
from pydicom.encaps import generate_pixel_data_frame

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "data"))
WG04 = os.path.join(SHARED, "wg04")
PYDATA = os.path.join(SHARED, "pydicom-data")
PYTEST = "/usr/lib/python3/dist-packages/pydicom/data/test_files"

LOSSY_JPEG = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51"}
JPEG_FAMILY = LOSSY_JPEG | {"1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70"}
JPEGLS = {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"}
J2K = {"1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
       "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"}
J2K_LOSSY = {"1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.203"}
RLE = {"1.2.840.10008.1.2.5"}

# Compressed file -> its uncompressed twin, where pydicom ships one.
TWINS = {
    "MR_small_RLE.dcm": "MR_small.dcm", "MR_small_jp2klossless.dcm": "MR_small.dcm",
    "MR_small_jpeg_ls_lossless.dcm": "MR_small.dcm",
    "emri_small_RLE.dcm": "emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm": "emri_small.dcm",
    "emri_small_jpeg_ls_lossless.dcm": "emri_small.dcm",
    "SC_rgb_rle.dcm": "SC_rgb.dcm", "SC_rgb_rle_2frame.dcm": "SC_rgb_2frame.dcm",
    "SC_rgb_rle_16bit.dcm": "SC_rgb_16bit.dcm",
    "SC_rgb_rle_16bit_2frame.dcm": "SC_rgb_16bit_2frame.dcm",
    "SC_rgb_rle_32bit.dcm": "SC_rgb_32bit.dcm",
    "SC_rgb_rle_32bit_2frame.dcm": "SC_rgb_32bit_2frame.dcm",
    "SC_rgb_jpeg_gdcm.dcm": "SC_rgb.dcm",
    "rtdose_rle.dcm": "rtdose.dcm", "rtdose_rle_1frame.dcm": "rtdose_1frame.dcm",
    "OBXXXX1A_rle.dcm": "OBXXXX1A.dcm", "OBXXXX1A_rle_2frame.dcm": "OBXXXX1A_2frame.dcm",
    "liver_rle.dcm": "liver.dcm", "liver_j2k.dcm": "liver.dcm",
    "liver_nonbyte_aligned_rle.dcm": "liver_nonbyte_aligned.dcm",
    "liver_nonbyte_aligned_j2k.dcm": "liver_nonbyte_aligned.dcm",
    "693_J2KR.dcm": "693_UNCR.dcm", "693_J2KI.dcm": "693_UNCI.dcm",
    "MR2_J2KR.dcm": "MR2_UNCR.dcm", "MR2_J2KI.dcm": "MR2_UNCI.dcm",
    "US1_J2KR.dcm": "US1_UNCR.dcm", "US1_J2KI.dcm": "US1_UNCI.dcm",
    "JPEG2000.dcm": "JPEG2000_UNC.dcm",
}
# Files that are damaged on purpose: telerad must refuse them with a message.
MUST_FAIL = {
    "emri_small_jpeg_2k_lossless_too_short.dcm",
    # A parser test: a 250-byte codestream for 1024 x 256 whose SIZ has bytes FE FF DD E0.
    "JPEG2000-embedded-sequence-delimiter.dcm",
}

failures = []


def run(*cmd, timeout=300):
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def find(name):
    for d in (PYTEST, PYDATA):
        p = os.path.join(d, name)
        if os.path.exists(p):
            return p
    return None


def pixels(path):
    """All frames of a native file as a (frames, rows, cols[, samples]) array, masked to Bits
    Stored, plus the photometric interpretation."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp = int(ds.SamplesPerPixel)
    if frames == 1:
        arr = arr[np.newaxis, ...]
    if spp == 1 and arr.ndim == 3:
        pass
    return arr.astype(np.int64), str(ds.PhotometricInterpretation), int(ds.BitsStored)


def telerad_decode(telerad, src, tmp):
    out = os.path.join(tmp, "t_" + os.path.basename(src))
    p = run(telerad, "convert", "--ts", "explicit", src, out)
    if p.returncode != 0:
        return None, p.stderr.decode(errors="replace").strip()
    return out, None


def compare(what, ours, ref, tolerance=0):
    a, pa, ba = ours
    b, pb, bb = ref
    mask = (1 << min(ba, bb)) - 1  # e.g. a twin written with Bits Stored 14 for 16
    a, b = a & mask, b & mask
    if a.shape != b.shape:
        return f"{what}: shape {a.shape} vs {b.shape}"
    diff = np.abs(a - b)
    worst = int(diff.max()) if diff.size else 0
    if worst > tolerance:
        n = int((diff > tolerance).sum())
        return (f"{what}: {n} of {diff.size} samples differ by more than {tolerance} "
                f"(at most {worst}; photometric {pa} vs {pb})")
    return None


def ts_of(path):
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def dcmtk_decode(src, ts, tmp):
    tool = "dcmdjpeg" if ts in JPEG_FAMILY else "dcmdjpls" if ts in JPEGLS else "dcmdrle"
    out = os.path.join(tmp, tool + "_" + os.path.basename(src))
    p = run(tool, src, out)
    if p.returncode != 0:
        return None, f"{tool}: " + (p.stdout + p.stderr).decode(errors="replace").strip()
    return out, None


def opj_decode_frames(src, tmp):
    """Decode every frame's codestream with opj_decompress (raw little endian output)."""
    ds = pydicom.dcmread(src)
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    spp, rows, cols = int(ds.SamplesPerPixel), int(ds.Rows), int(ds.Columns)
    out = []
    for i, frame in enumerate(generate_pixel_data_frame(ds.PixelData, frames)):
        ext = ".jp2" if frame[:4] == b"\0\0\0\x0c" else ".j2k"
        base = os.path.join(tmp, f"opj_{os.path.basename(src)}_{i}")
        with open(base + ext, "wb") as f:
            f.write(frame)
        p = run("opj_decompress", "-i", base + ext, "-o", base + ".rawl")
        if p.returncode != 0:
            return None, "opj_decompress: " + p.stdout.decode(errors="replace")[-300:]
        data = open(base + ".rawl", "rb").read()
        bps = 1 if len(data) == rows * cols * spp else 2
        signed = re.search(rb"signed", p.stdout) is not None and b"unsigned" not in p.stdout
        dt = np.dtype("<i2" if bps == 2 and signed else "<u2" if bps == 2 else "u1")
        a = np.frombuffer(data, dtype=dt).astype(np.int64).reshape(spp, rows, cols)
        a = np.moveaxis(a, 0, -1) if spp > 1 else a[0]
        out.append(a)
    return (np.stack(out), "RGB" if spp == 3 else "MONOCHROME", int(ds.BitsStored)), None


def check_decode(telerad, src, tmp, oracle, tolerance=0, label=None):
    """Decode src with telerad and compare with the oracle; returns a result line."""
    label = label or os.path.basename(src)
    ts = ts_of(src)
    name = os.path.basename(src)
    ours, err = telerad_decode(telerad, src, tmp)
    if name in MUST_FAIL:
        if ours is None and err:
            return f"ok (refused: {err[:120]})"
        failures.append(f"{label}: damaged file decoded without error")
        return "FAIL"
    if ours is None:
        failures.append(f"{label}: telerad: {err}")
        return "FAIL"
    if oracle == "twin":
        ref_path, how = find(TWINS[name]) if name in TWINS else None, "twin " + TWINS.get(name, "")
    elif oracle == "dcmtk":
        ref_path, e = dcmtk_decode(src, ts, tmp)
        how = "dcmtk"
        if ref_path is None:
            return f"skipped (oracle failed: {e[:150]})"
    elif oracle == "opj":
        ref, e = opj_decode_frames(src, tmp)
        if ref is None:
            return f"skipped (oracle failed: {e[:150]})"
        problem = compare(label, pixels(ours), ref, tolerance)
        if problem:
            failures.append(problem)
            return "FAIL"
        return "ok (= opj_decompress)"
    else:
        ref_path, how = oracle, "REF"
    problem = compare(label, pixels(ours), pixels(ref_path), tolerance)
    if problem:
        failures.append(problem)
        return "FAIL"
    return f"ok (= {how}{', +-%d' % tolerance if tolerance else ''})"


def part_a(telerad, tmp, results):
    if not os.path.isdir(WG04):
        print(f"(a) skipped: {WG04} is absent")
        return
    jobs = []
    for d in ("JPLL", "JLSL", "J2KR", "RLE"):
        for name in sorted(os.listdir(os.path.join(WG04, d))):
            ref = os.path.join(WG04, "REF", name.rsplit("_", 1)[0] + "_UNC")
            if os.path.exists(ref):
                jobs.append(("a", d, os.path.join(WG04, d, name), ref, 0))
    for d, tol in (("JLSN", 0), ("JPLY", 1)):
        for name in sorted(os.listdir(os.path.join(WG04, d))):
            jobs.append(("a", d, os.path.join(WG04, d, name), "dcmtk", tol))
    results.extend(jobs)


def part_b(telerad, tmp, results):
    seen = set()
    for d in (PYTEST, PYDATA):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            path = os.path.join(d, name)
            if name in seen or not name.endswith(".dcm"):
                continue
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                ts = str(ds.file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if ts not in JPEG_FAMILY | JPEGLS | J2K | RLE or "BitsAllocated" not in ds:
                continue
            seen.add(name)
            lossy = ts in LOSSY_JPEG or ts in J2K_LOSSY or ts == "1.2.840.10008.1.2.4.81"
            tol = 1 if lossy and ts != "1.2.840.10008.1.2.4.81" else 0
            if name in TWINS and find(TWINS[name]):
                oracle = "twin"
            elif ts in J2K:
                oracle = "opj"
            else:
                oracle = "dcmtk"
            results.append(("b", os.path.basename(d), path, oracle, tol))


ENCODINGS = [  # (convert --ts name, decoder of the oracle)
    ("rle", "dcmdrle"), ("jpegls", "dcmdjpls"), ("j2k", "opj"), ("jpeg-lossless", "dcmdjpeg")]
ENCODE_INPUTS = ["MR_small.dcm", "CT_small.dcm", "SC_rgb.dcm", "SC_rgb_16bit.dcm",
                 "SC_rgb_2frame.dcm", "OBXXXX1A.dcm", "emri_small.dcm", "rtdose.dcm",
                 "liver.dcm", "US1_UNCR.dcm", "MR_small_bigendian.dcm", "color-pl.dcm"]


def dciodvfy_errors(path):
    """dciodvfy's errors, without element paths; None when it cannot read the file (it
    asserts on 32-bit OW pixel data, for one)."""
    if not shutil.which("dciodvfy"):
        return set()
    p = run("dciodvfy", "-new", path)
    out = (p.stdout + p.stderr).decode("latin-1")
    if p.returncode < 0 or "Assertion" in out:
        return None
    errs = set()
    for line in out.splitlines():
        if line.startswith("Error"):
            line = re.sub(r"^Error - </[^>]*> - ", "Error - ", line.strip())
            errs.add(re.sub(r"\s+", " ", line))
    return errs


def encode_job(telerad, src, target, decoder, tmp):
    label = f"{os.path.basename(src)} -> {target}"
    enc = os.path.join(tmp, f"enc_{target}_{os.path.basename(src)}")
    if target == "rle" and int(pydicom.dcmread(src, stop_before_pixels=True).BitsAllocated) == 1:
        # DCMTK's RLE decoder takes whole bytes only; 1-bit RLE is checked against pydicom-data's
        # liver_rle.dcm in (b) and in tests/unit/test_pixel.c.
        return "not checked: no independent decoder of 1-bit RLE"
    p = run(telerad, "convert", "--ts", target, src, enc)
    if p.returncode != 0:
        msg = p.stderr.decode(errors="replace").strip()
        if "takes" in msg or "at most" in msg or "segments" in msg or "precision must" in msg:
            return f"not encodable: {msg[-120:]}"
        failures.append(f"{label}: {msg}")
        return "FAIL"
    if decoder == "opj":
        ref, e = opj_decode_frames(enc, tmp)
    else:
        out = os.path.join(tmp, f"dec_{target}_{os.path.basename(src)}")
        q = run(decoder, enc, out)
        if q.returncode != 0:
            failures.append(f"{label}: {decoder} cannot decode telerad's output: "
                            + (q.stdout + q.stderr).decode(errors="replace")[-300:])
            return "FAIL"
        ref = pixels(out)
    orig = pixels(src)
    problem = compare(label + f" (decoded by {decoder})", ref, orig)
    if problem:
        failures.append(problem)
        return "FAIL"
    before, after = dciodvfy_errors(src), dciodvfy_errors(enc)
    if before is None:
        return f"ok (= original after {decoder}; dciodvfy cannot read the input)"
    new = (after or set()) - before
    if after is None or new:
        failures.append(f"{label}: dciodvfy errors not in the input: {sorted(new)}")
        return "FAIL"
    return f"ok (= original after {decoder})"


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    telerad = os.path.abspath(sys.argv[1])
    if not os.path.isdir(PYTEST) and not os.path.isdir(SHARED):
        print("skipped: neither pydicom's test files nor ../shared/data are present")
        return 77
    tmp = tempfile.mkdtemp(prefix="telerad-codecs-")
    try:
        jobs = []
        part_a(telerad, tmp, jobs)
        part_b(telerad, tmp, jobs)
        if not os.path.isdir(WG04) and not os.path.isdir(PYDATA):
            print(f"(a) and part of (b) skipped: {SHARED} is absent")

        def do(job):
            part, group, path, oracle, tol = job
            try:
                return job, check_decode(telerad, path, tmp, oracle, tol,
                                         f"{group}/{os.path.basename(path)}")
            except Exception as e:  # an oracle that cannot read its own output
                failures.append(f"{group}/{os.path.basename(path)}: {type(e).__name__}: {e}")
                return job, "FAIL"

        counts = {}
        with ThreadPoolExecutor(max_workers=2) as pool:
            for (part, group, path, oracle, tol), res in pool.map(do, jobs):
                print(f"({part}) {group}/{os.path.basename(path)}: {res}")
                key = (part, group)
                ok, total = counts.get(key, (0, 0))
                counts[key] = (ok + res.startswith("ok"), total + 1)

        enc_jobs = []
        for name in ENCODE_INPUTS:
            src = find(name)
            if src:
                for target, decoder in ENCODINGS:
                    enc_jobs.append((src, target, decoder))
        if os.path.isdir(WG04):
            for name in ("CT1_UNC", "MR1_UNC", "XA1_UNC", "US1_UNC", "NM1_UNC"):
                src = os.path.join(WG04, "REF", name)
                if os.path.exists(src):
                    for target, decoder in ENCODINGS:
                        enc_jobs.append((src, target, decoder))

        def enc(job):
            src, target, decoder = job
            try:
                return job, encode_job(telerad, src, target, decoder, tmp)
            except Exception as e:
                failures.append(f"{os.path.basename(src)} -> {target}: {type(e).__name__}: {e}")
                return job, "FAIL"

        with ThreadPoolExecutor(max_workers=2) as pool:
            for (src, target, decoder), res in pool.map(enc, enc_jobs):
                print(f"(c) {os.path.basename(src)} -> {target}: {res}")
                key = ("c", target)
                ok, total = counts.get(key, (0, 0))
                counts[key] = (ok + (res.startswith("ok") or res.startswith("not")), total + 1)

        print()
        for (part, group), (ok, total) in sorted(counts.items()):
            print(f"({part}) {group}: {ok} of {total} ok")
        if failures:
            print(f"\n{len(failures)} failures:")
            for f in failures:
                print("  " + f)
            return 1
        print("all codec checks hold")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
