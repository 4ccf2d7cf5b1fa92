"""Helpers for the SCU interoperability tests: peers started on 127.0.0.1 ports, telerad runs,
DICOM files made with pydicom, data set comparison with pydicom as the judge.

Every test script takes the telerad binary as its first argument, exits 0 when every check
held, 1 when one failed, and 77 (ctest's SKIP_RETURN_CODE) with a message when a peer or
pydicom is missing.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings

# pydicom warns about the odd invalid value in its own test files; the checks say what matters.
warnings.filterwarnings("ignore")

SKIP = 77
PYDICOM_TEST_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def need_programs(*names):
    for n in names:
        if not shutil.which(n):
            skip("%s is not installed (Debian: scripts/install-deps.sh --test)" % n)


def need_pydicom():
    try:
        import pydicom  # noqa: F401
    except ImportError:
        skip("pydicom is not installed (Debian package python3-pydicom)")


def telerad_path():
    if len(sys.argv) < 2:
        print("usage: %s TELERAD" % sys.argv[0])
        sys.exit(2)
    return os.path.abspath(sys.argv[1])


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20, proc=None, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


# Debian's DCMTK leaves Nagle's algorithm on unless told: without this every DIMSE exchange
# waits for a delayed ACK (~40 ms).
DCMTK_ENV = dict(os.environ, TCP_NODELAY="1")


class Peer:
    """A peer process (its output in a log file), stopped when the test ends."""

    def __init__(self, name, cmd, workdir, port=None, env=None, ready_timeout=30):
        self.name = name
        self.log_path = os.path.join(workdir, name + ".log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env or DCMTK_ENV, cwd=workdir,
                                     start_new_session=True)
        if port is not None and not wait_port(port, ready_timeout, self.proc):
            self.stop()
            raise RuntimeError("%s did not start listening on port %d:\n%s"
                               % (name, port, self.output()))

    def output(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Checks:
    """Counts checks; prints each one so that the ctest log tells what was tested."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what, detail=""):
        if cond:
            self.passed += 1
            print("ok   - " + what, flush=True)
        else:
            self.failed += 1
            print("FAIL - " + what, flush=True)
            if detail:
                for line in str(detail).rstrip().splitlines()[:60]:
                    print("       " + line)
        return cond

    def finish(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


def run(cmd, timeout=300, env=None, cwd=None):
    """Run a command; returns (exit status, stdout, stderr) as text."""
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env, cwd=cwd)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    print("$ %s  -> %d (%.2f s)" % (" ".join(str(c) for c in cmd), p.returncode,
                                    time.time() - t0), flush=True)
    return p.returncode, out, err


def describe(rc, out, err):
    return "exit %d\n--- stdout\n%s\n--- stderr\n%s" % (rc, out[-4000:], err[-4000:])


# ---- DICOM files ------------------------------------------------------------------------------

def new_uid():
    from pydicom.uid import generate_uid
    return generate_uid()


def write_image(path, patient_name, patient_id, study_uid, series_uid, instance, modality="CT",
                study_date="20240105", study_time="101500", rows=64, cols=64, accession="",
                study_id="1", series_number=1, sop_uid=None, birth_date="19700101",
                series_description=""):
    """An uncompressed CT or MR image in Explicit VR Little Endian; returns its SOP Instance UID."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian
    sop_class = {"CT": "1.2.840.10008.5.1.4.1.1.2",
                 "MR": "1.2.840.10008.5.1.4.1.1.4"}[modality]
    sop_uid = sop_uid or new_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession
    ds.Modality = modality
    ds.Manufacturer = "telerad test"
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = birth_date
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = study_id
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0, 0, float(instance) * 2.5]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = new_uid()
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [0.7, 0.7]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    if modality == "CT":
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.KVP = 120
    # Deterministic content that differs per image (a gradient shifted by the instance).
    row = bytes((x * 7 + instance) & 0xFF for x in range(cols * 2))
    ds.PixelData = row * rows
    ds.save_as(path, write_like_original=False)
    return sop_uid


def without_group_lengths(ds):
    for elem in list(ds):
        if elem.tag.element == 0 and elem.tag.group != 0:
            del ds[elem.tag]
        elif elem.VR == "SQ":
            for item in elem.value:
                without_group_lengths(item)
    return ds


def dataset_differences(a_path, b_path):
    """Differences between the data sets of two files (file meta and group lengths aside), as
    pydicom sees them; [] when they are the same. Encapsulated pixel data compares as bytes."""
    import pydicom
    a = without_group_lengths(pydicom.dcmread(a_path))
    b = without_group_lengths(pydicom.dcmread(b_path))
    diffs = []
    # Data Set Trailing Padding may be dropped by a receiver (PS3.10 7.2).
    tags = sorted((set(a.keys()) | set(b.keys())) - {0xFFFCFFFC})
    for t in tags:
        ea, eb = a.get(t), b.get(t)
        if ea is None or eb is None:
            diffs.append("%s only in %s" % (t, a_path if eb is None else b_path))
        elif ea.VR in ("OW", "OF", "OL", "OD", "OV") and isinstance(ea.value, bytes) \
                and a.is_little_endian != b.is_little_endian:
            # Raw words as pydicom holds them: in each file's own byte order.
            size = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}[ea.VR]
            be = ea.value if not a.is_little_endian else eb.value
            le = eb.value if not a.is_little_endian else ea.value
            swapped = b"".join(be[i:i + size][::-1] for i in range(0, len(be), size))
            if swapped != le:
                diffs.append("%s %s differs (byte order considered)" % (t, ea.keyword))
        elif ea.value != eb.value:
            diffs.append("%s %s differs: %r vs %r" % (t, ea.keyword, str(ea.value)[:80],
                                                      str(eb.value)[:80]))
    return diffs


def index_by_sop_uid(folder):
    """{SOP Instance UID: path} for every DICOM file under folder."""
    import pydicom
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
                out[str(ds.SOPInstanceUID)] = path
            except Exception:  # noqa: BLE001 - not DICOM: ignored
                pass
    return out


def transfer_syntax_of(path):
    import pydicom
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def compressed_test_files(workdir):
    """Copies of pydicom's compressed test files, each with a new SOP Instance UID (several
    share one), in their own transfer syntax. Returns [(path, transfer syntax UID)]."""
    import pydicom
    names = [
        "SC_rgb_jpeg_dcmtk.dcm",          # JPEG Baseline
        "JPEG-lossy.dcm",                  # JPEG Extended
        "JPEG-LL.dcm",                     # JPEG Lossless SV1
        "MR_small_RLE.dcm",                # RLE Lossless
        "JPEG2000.dcm",                    # JPEG 2000
        "MR_small_jp2klossless.dcm",       # JPEG 2000 Lossless
        "MR_small_jpeg_ls_lossless.dcm",   # JPEG-LS Lossless
    ]
    os.makedirs(workdir, exist_ok=True)
    out = []
    for n in names:
        src = os.path.join(PYDICOM_TEST_FILES, n)
        if not os.path.exists(src):
            continue
        ds = pydicom.dcmread(src)
        ds.SOPInstanceUID = new_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        dst = os.path.join(workdir, n)
        ds.save_as(dst, write_like_original=True)
        out.append((dst, str(ds.file_meta.TransferSyntaxUID)))
    return out


def tempdir(prefix):
    base = os.environ.get("TMPDIR", "/tmp")
    return tempfile.mkdtemp(prefix=prefix, dir=base)
