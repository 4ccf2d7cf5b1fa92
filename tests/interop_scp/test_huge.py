#!/usr/bin/python3
"""test_huge.py - a ~2 GB multi-frame object through storescu into `telerad serve`, with
bounded memory.

    /usr/bin/python3 tests/interop_scp/test_huge.py build/telerad [--size-mb N]

Writes (streaming, never in memory) a valid Part 10 file: Multi-frame Grayscale Word Secondary
Capture, explicit VR little endian, 512x512 16-bit frames, Pixel Data (OW) of about 2 GB
(4,000 frames = 2,097,152,000 bytes; --size-mb or $TELERAD_HUGE_MB scales it). The header is
made by pydicom; the pixel bytes follow, and their SHA-256 is taken while writing. storescu
sends it; the test then checks that the stored object has the same data set size, that its
last bytes are the whole Pixel Data element with the same SHA-256, that dcmdump reads it, and
that telerad's peak RSS (VmHWM of the server process) stayed below 100 MB.

If the temporary folder has less than 2.5 times the object's size free, the object is scaled
down to what fits (and the test says so).
"""
import hashlib
import os
import shutil
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scp_common as sc  # noqa: E402

MF_GRAYSCALE_WORD_SC = "1.2.840.10008.5.1.4.1.1.7.3"
FRAME = 512 * 512 * 2
MAX_PEAK_RSS_MB = 100
CHUNK = 8 << 20


def write_huge(path, frames):
    """Write the file; returns (SOP Instance UID, data set size, pixel SHA-256 hex)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.uid import generate_uid
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MF_GRAYSCALE_WORD_SC
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = sc.EXPLICIT_LE
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MF_GRAYSCALE_WORD_SC
    ds.SOPInstanceUID = uid
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT"
    ds.PatientName = "Huge^Object"
    ds.PatientID = "HUGE1"
    ds.StudyDate = "20240102"
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = 0x00181063
    ds.FrameTime = 33.3
    ds.Rows = 512
    ds.Columns = 512
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.is_little_endian, ds.is_implicit_VR = True, False
    pydicom.dcmwrite(path, ds, write_like_original=False)  # header: everything but pixels
    size = frames * FRAME
    sha = hashlib.sha256()
    # One 8 MB block of pattern, varied per block so that no two blocks are equal.
    base = bytearray(CHUNK)
    for i in range(0, CHUNK, 4):
        struct.pack_into("<I", base, i, (i * 2654435761) & 0xFFFFFFFF)
    with open(path, "ab") as f:
        f.write(struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, size))
        written = 0
        block = 0
        while written < size:
            n = min(CHUNK, size - written)
            piece = bytearray(base[:n])
            struct.pack_into("<Q", piece, 0, block)
            sha.update(piece)
            f.write(piece)
            written += n
            block += 1
    with open(path, "rb") as f:
        pydicom.filereader.read_preamble(f, False)
        pydicom.filereader._read_file_meta_info(f)
        offset = f.tell()
    return uid, os.path.getsize(path) - offset, size, sha.hexdigest()


def dataset_offset(path):
    import pydicom
    with open(path, "rb") as f:
        pydicom.filereader.read_preamble(f, False)
        pydicom.filereader._read_file_meta_info(f)
        return f.tell()


def tail_pixel_hash(path, pixel_size):
    """SHA-256 of the last pixel_size bytes, after checking the 12 bytes before them are the
    Pixel Data element header (explicit VR LE, OW) with that length."""
    total = os.path.getsize(path)
    with open(path, "rb") as f:
        f.seek(total - pixel_size - 12)
        header = f.read(12)
        want = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, pixel_size)
        if header != want:
            return None, "Pixel Data element header is %r, not %r" % (header, want)
        sha = hashlib.sha256()
        left = pixel_size
        while left:
            b = f.read(min(CHUNK, left))
            if not b:
                return None, "file ends early"
            sha.update(b)
            left -= len(b)
    return sha.hexdigest(), None


def main():
    telerad = sc.telerad_path()
    sc.need_programs("storescu", "dcmdump")
    sc.need_pydicom()
    checks = sc.Checks("interop_scp_huge")
    size_mb = int(os.environ.get("TELERAD_HUGE_MB", "2000"))
    if "--size-mb" in sys.argv:
        size_mb = int(sys.argv[sys.argv.index("--size-mb") + 1])
    frames = max(1, size_mb * (1 << 20) // FRAME)
    work = sc.tempdir("telerad-scp-huge.")
    free = shutil.disk_usage(work).free
    need = frames * FRAME * 2.5
    if free < need:
        frames = max(1, int(free / 2.5 / FRAME) - 1)
        print("NOTE: only %.1f GB free in %s: the object is scaled down to %d frames (%.0f MB)" %
              (free / 1e9, work, frames, frames * FRAME / 1e6), flush=True)
    src = os.path.join(work, "huge.dcm")
    t0 = time.time()
    uid, ds_size, pixel_size, sha = write_huge(src, frames)
    print("      wrote %s: %d frames, %.2f GB in %.1f s" % (src, frames, os.path.getsize(src) / 1e9,
                                                            time.time() - t0), flush=True)
    # Keep ASan's quarantine of freed blocks small, so that a sanitizer build measures telerad's
    # own memory (harmless for other builds).
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16"}
    server = sc.Server(telerad, work, env=env, name="huge").start()
    try:
        base_kb = server.status_kb("VmHWM")
        t0 = time.time()
        rc, out = sc.storescu(server.port, [src], "-R", timeout=1800)
        secs = time.time() - t0
        peak_kb = server.status_kb("VmHWM")
        print("      storescu: %.1f s (%.0f MB/s); telerad peak RSS %.1f MB (%.1f MB at start)" %
              (secs, os.path.getsize(src) / 1e6 / max(secs, 0.001), peak_kb / 1024,
               base_kb / 1024), flush=True)
        checks.check(rc == 0, "storescu of the %.1f GB object" % (os.path.getsize(src) / 1e9),
                     out[-600:])
        stored = server.stored_path(uid)
        checks.check(stored is not None, "the object is stored")
        if stored:
            stored_ds = os.path.getsize(stored) - dataset_offset(stored)
            checks.check(stored_ds == ds_size, "the stored data set has the source's size",
                         "%d vs %d bytes" % (stored_ds, ds_size))
            got, why = tail_pixel_hash(stored, pixel_size)
            checks.check(got == sha, "the stored Pixel Data has the source's SHA-256",
                         why or "%s vs %s" % (got, sha))
            rc, out = sc.run(["dcmdump", "-q", "-M", stored], timeout=600)
            checks.check(rc == 0, "dcmdump reads the stored file", out[-300:])
        checks.check(0 < peak_kb < MAX_PEAK_RSS_MB * 1024,
                     "telerad's peak RSS stayed below %d MB" % MAX_PEAK_RSS_MB,
                     "%.1f MB" % (peak_kb / 1024))
        checks.check(not server.temporaries(), "no temporary object is left")
        log = server.log_text()
    finally:
        status = server.stop()
    checks.check(status == 0, "telerad serve stops cleanly")
    if "AddressSanitizer" in log or "runtime error" in log:
        checks.check(False, "no sanitizer report in the server log", log[-3000:])
    if checks.failed:
        os.remove(src)
        print("server log and data kept in %s (the source was removed)" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
