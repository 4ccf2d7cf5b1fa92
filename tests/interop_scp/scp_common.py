"""Helpers for the SCP interoperability tests: `telerad serve` started on a free 127.0.0.1 port
in a temporary data folder, DCMTK's tools run against it (with TCP_NODELAY=1: Debian's DCMTK
leaves Nagle's algorithm on otherwise and crawls), a raw-socket DICOM upper layer peer that
speaks PDUs byte by byte (PS3.8 9.3), DICOM files made with pydicom, and the comparison of a
stored object with its source (`telerad json` of both, and dcmdump must read the stored file).

Every test script takes the telerad binary as its first argument, prints one line per check,
exits 0 when every check held, 1 when one failed, and 77 (ctest's SKIP_RETURN_CODE) with a
message when a peer (DCMTK, openssl) or pydicom is missing.
"""
import glob
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import warnings

warnings.filterwarnings("ignore")  # pydicom's remarks about its own odd test files

SKIP = 77
AET = "TELERAD"
PYDICOM_TEST_FILES = "/usr/lib/python3/dist-packages/pydicom/data/test_files"
VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"

# PDU types (PS3.8 9.3.1)
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF = 1, 2, 3, 4
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 5, 6, 7
PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF",
             5: "A-RELEASE-RQ", 6: "A-RELEASE-RP", 7: "A-ABORT"}


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def need_programs(*names):
    for n in names:
        if not shutil.which(n):
            skip("%s is not installed (Debian: dcmtk, openssl)" % n)


def need_pydicom():
    try:
        import pydicom  # noqa: F401
    except ImportError:
        skip("pydicom is not installed (Debian package python3-pydicom)")


def telerad_path():
    if len(sys.argv) < 2:
        print("usage: %s TELERAD" % sys.argv[0])
        sys.exit(2)
    path = os.path.abspath(sys.argv[1])
    if not os.access(path, os.X_OK):
        skip("no telerad binary at %s" % path)
    return path


class Checks:
    """Counts checks; prints each failure (and, verbosely, each success)."""

    def __init__(self, name):
        self.name = name
        self.failed = 0
        self.passed = 0
        self.t0 = time.time()

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("ok    %s" % what, flush=True)
        else:
            self.failed += 1
            print("FAIL  %s%s" % (what, (": " + detail) if detail else ""), flush=True)
        return ok

    def finish(self):
        print("%s: %d passed, %d failed (%.1f s)" % (self.name, self.passed, self.failed,
                                                     time.time() - self.t0), flush=True)
        sys.exit(1 if self.failed else 0)


# ---- the server ------------------------------------------------------------------------------

class Server:
    """`telerad serve` on a free port (--dicom-port 0), in its own data folder."""

    def __init__(self, telerad, workdir, *args, env=None, name="server"):
        self.telerad = telerad
        self.data = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args)
        self.env = dict(os.environ)
        if env:
            self.env.update(env)
        self.proc = None
        self.port = None

    def start(self, timeout=30):
        self.log = open(self.log_path, "ab")
        cmd = [self.telerad, "serve", "--data", self.data, "--dicom-port", "0",
               "--http-port", "0"] + self.args
        self.command = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log,
                                     env=self.env)
        deadline = time.time() + timeout
        line = b""
        while time.time() < deadline and not line.endswith(b"\n"):
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    break
                line += c
            elif self.proc.poll() is not None:
                break
        if not line.startswith(b"dicom-port "):
            self.stop()
            raise RuntimeError("telerad serve did not start (%s): %s" %
                               (self.command, self.log_text()[-2000:]))
        self.port = int(line.split()[1])
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def pid(self):
        return self.proc.pid

    def status_kb(self, field):
        """A field of /proc/PID/status in kB (VmHWM: peak RSS, VmRSS), or -1."""
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return -1

    def stop(self, timeout=30):
        """SIGTERM, then wait; returns the exit status (negative: a signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stored(self):
        """Paths of the committed objects (DIR/objects/.../SOP-INSTANCE-UID.dcm; the folders in
        between are the object store's business)."""
        return sorted(glob.glob(os.path.join(self.data, "objects", "**", "*.dcm"),
                                recursive=True))

    def stored_path(self, sop_instance):
        found = glob.glob(os.path.join(self.data, "objects", "**", sop_instance + ".dcm"),
                          recursive=True)
        return found[0] if found else None

    def temporaries(self):
        """Files left under the object store's temporary folder (half-received objects)."""
        out = []
        for root, _, files in os.walk(os.path.join(self.data, "tmp")):
            out += [os.path.join(root, f) for f in files]
        # Not the object store's "pool-*" files that are in order (src/services/archive/
        # objstore.c): empty (created ahead of time for the next puts), or the second name of a
        # stored object until its directory fsync (batched) removes it.
        def in_order(path):
            if not os.path.basename(path).startswith("pool-"):
                return False
            try:
                st = os.stat(path)
            except FileNotFoundError:
                return True
            return st.st_size == 0 or st.st_nlink > 1
        return [p for p in out if not in_order(p)]


def dcmtk_env():
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run(cmd, timeout=120, env=None, input=None):
    """Run a command; returns (exit status, output). A timeout is exit status -999."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env=env if env is not None else dcmtk_env(), input=input)
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode("utf-8", "replace") if e.stdout else ""
        return -999, out + "\n(timed out after %d s)" % timeout


def echoscu(port, *opts, aec=AET, timeout=60):
    return run(["echoscu", "-aec", aec] + list(opts) + ["127.0.0.1", str(port)], timeout)


def storescu(port, files, *opts, aec=AET, timeout=600):
    return run(["storescu", "-aec", aec] + list(opts) + ["127.0.0.1", str(port)] + list(files),
               timeout)


# storescu options that propose a file's own (compressed) transfer syntax besides the
# uncompressed ones, each in a separate presentation context, so that the file goes as it is.
STORESCU_TS_OPTION = {
    "1.2.840.10008.1.2.4.50": "-xy",   # JPEG baseline
    "1.2.840.10008.1.2.4.51": "-xx",   # JPEG extended (12 bit)
    "1.2.840.10008.1.2.4.57": "-xs",
    "1.2.840.10008.1.2.4.70": "-xs",   # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80": "-xt",   # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81": "-xu",   # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90": "-xv",   # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91": "-xw",   # JPEG 2000
    "1.2.840.10008.1.2.5": "-xr",      # RLE
    "1.2.840.10008.1.2.1.99": "-xd",   # deflated explicit VR LE
    "1.2.840.10008.1.2.2": "-xb",      # explicit VR big endian
}


def storescu_options_for(path):
    import pydicom
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta \
        else IMPLICIT_LE  # no meta information: DCMTK reads it as implicit VR LE
    opts = ["-R"]  # only the contexts the files need
    if ts in STORESCU_TS_OPTION:
        opts.append(STORESCU_TS_OPTION[ts])
    return opts, ts, str(ds.SOPInstanceUID)


# ---- comparing objects ----------------------------------------------------------------------

def telerad_json(telerad, path):
    p = subprocess.run([telerad, "json", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    if p.returncode != 0:
        raise RuntimeError("telerad json %s: %s" % (path, p.stderr.decode("utf-8", "replace")))
    return json.loads(p.stdout)


def first_difference(a, b, where=""):
    if type(a) is not type(b):
        return "%s: %r vs %r" % (where or "top", a, b)
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                return "%s/%s only in %s" % (where, k, "stored" if k in b else "source")
            d = first_difference(a[k], b[k], where + "/" + k)
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return "%s: %d vs %d values" % (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            d = first_difference(x, y, "%s[%d]" % (where, i))
            if d:
                return d
        return None
    return None if a == b else "%s: %.80r vs %.80r" % (where, a, b)


def normalize(js):
    """What DCMTK's storescu changes on the way, by design, removed from a DICOM JSON data set:
    group lengths (gggg,0000) and data set trailing padding (FFFC,FFFC), which it drops or
    recomputes, and the VR of encapsulated Pixel Data, which it writes as OB (PS3.5 A.4)
    whatever the file said."""
    out = {}
    for tag, value in js.items():
        if tag.endswith("0000") or tag == "FFFCFFFC":
            continue
        if isinstance(value, dict):
            value = dict(value)
            if tag == "7FE00010" and value.get("vr") in ("OB", "OW"):
                value["vr"] = "OB/OW"
            if "Value" in value and value.get("vr") == "SQ":
                value["Value"] = [normalize(item) for item in value["Value"]]
        out[tag] = value
    return out


def pydicom_values(path):
    """{tag: value} of a file with pydicom (for files telerad json refuses)."""
    import pydicom
    ds = pydicom.dcmread(path, force=True)
    out = {}
    for elem in ds.iterall():
        if elem.tag.element == 0 or elem.tag == 0xFFFCFFFC:
            continue
        out[(int(elem.tag), id(elem) if elem.VR == "SQ" else 0)] = None if elem.VR == "SQ" \
            else str(elem.value)
    return sorted((k[0], v) for k, v in out.items())


def compare_stored(telerad, source, stored):
    """None when the stored object's data set equals the source's and dcmdump reads it; else
    what differs. The judge is `telerad json` of both; where telerad refuses the source (a
    value it finds invalid), pydicom's reading of both."""
    if stored is None or not os.path.exists(stored):
        return "not stored"
    rc, out = run(["dcmdump", "-q", stored], timeout=120)
    if rc != 0:
        return "dcmdump exit %d: %s" % (rc, out[-300:])
    try:
        a = telerad_json(telerad, source)
    except RuntimeError:
        a = None
    if a is None:
        pa, pb = pydicom_values(source), pydicom_values(stored)
        return None if pa == pb else first_difference(pa, pb)
    try:
        b = telerad_json(telerad, stored)
    except RuntimeError as e:
        return str(e)
    return first_difference(normalize(a), normalize(b))


# ---- a raw upper layer peer (PS3.8 9.3) --------------------------------------------------------

def _item(item_type, payload):
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _uid(u):
    return u.encode("ascii")


def associate_rq(called=AET, calling="RAWPEER", contexts=((1, VERIFICATION, (IMPLICIT_LE,)),),
                 max_pdu=16384, version=1, app_context=APPLICATION_CONTEXT, user_items=None):
    """An A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) as bytes."""
    body = struct.pack(">HH", version, 0)
    body += called.ljust(16).encode("ascii")[:16] + calling.ljust(16).encode("ascii")[:16]
    body += b"\0" * 32
    body += _item(0x10, _uid(app_context))
    for pc_id, abstract, tss in contexts:
        sub = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(t)) for t in tss)
        body += _item(0x20, struct.pack(">BBBB", pc_id, 0, 0, 0) + sub)
    if user_items is None:
        user_items = (_item(0x51, struct.pack(">I", max_pdu)) + _item(0x52, b"1.2.3.4.5") +
                      _item(0x55, b"RAWPEER"))
    body += _item(0x50, user_items)
    return struct.pack(">BBI", A_ASSOCIATE_RQ, 0, len(body)) + body


def pdu(pdu_type, body):
    return struct.pack(">BBI", pdu_type, 0, len(body)) + body


def release_rq():
    return pdu(A_RELEASE_RQ, b"\0" * 4)


def abort_pdu(source=0, reason=0):
    return pdu(A_ABORT, struct.pack(">BBBB", 0, 0, source, reason))


def pdata(pc_id, data, command, last):
    """A P-DATA-TF with one PDV (PS3.8 9.3.5, E.2)."""
    control = (1 if command else 0) | (2 if last else 0)
    pdv = struct.pack(">IBB", len(data) + 2, pc_id, control) + data
    return pdu(P_DATA_TF, pdv)


def _element(group, elem, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", group, elem, len(value)) + value


def command_set(elements):
    """An Implicit VR LE command set with its group length: elements is [(elem, bytes)] of
    group 0000, in order."""
    body = b"".join(_element(0, e, v) for e, v in elements)
    return _element(0, 0, struct.pack("<I", len(body))) + body


def us(v):
    return struct.pack("<H", v)


def echo_rq(message_id=1):
    return command_set([(0x0002, _uid(VERIFICATION)), (0x0100, us(0x0030)),
                        (0x0110, us(message_id)), (0x0800, us(0x0101))])


def store_rq(sop_class, sop_instance, message_id=1):
    return command_set([(0x0002, _uid(sop_class)), (0x0100, us(0x0001)),
                        (0x0110, us(message_id)), (0x0700, us(0)), (0x0800, us(0)),
                        (0x1000, _uid(sop_instance))])


def parse_command(data):
    """The elements of an Implicit VR LE command set: {elem: bytes}."""
    out = {}
    pos = 0
    while pos + 8 <= len(data):
        g, e, n = struct.unpack_from("<HHI", data, pos)
        out[e] = data[pos + 8:pos + 8 + n]
        pos += 8 + n
    return out


class RawPeer:
    """A blocking socket speaking PDUs by hand."""

    def __init__(self, port, timeout=30):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout

    def send(self, data):
        self.sock.sendall(data)

    def _read(self, n, timeout):
        buf = b""
        deadline = time.time() + timeout
        while len(buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no data from the server for %.0f s" % timeout)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(buf))
            except socket.timeout:
                raise TimeoutError("no data from the server for %.0f s" % timeout)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                return None
            buf += chunk
        return buf

    def read_pdu(self, timeout=None):
        """(type, body), or None when the server closed the connection."""
        t = self.timeout if timeout is None else timeout
        h = self._read(6, t)
        if h is None:
            return None
        pdu_type, _, length = struct.unpack(">BBI", h)
        body = self._read(length, t) if length else b""
        if body is None:
            return None
        return pdu_type, body

    def associate(self, rq=None):
        """Send an A-ASSOCIATE-RQ and return the answer (type, body)."""
        self.send(rq if rq is not None else associate_rq())
        return self.read_pdu()

    def outcome(self, timeout=None):
        """Read until the server closes: the types of the PDUs it sent ([] if none)."""
        seen = []
        t = self.timeout if timeout is None else timeout
        deadline = time.time() + t
        while True:
            left = deadline - time.time()
            if left <= 0:
                seen.append("timeout")
                return seen
            try:
                p = self.read_pdu(left)
            except TimeoutError:
                seen.append("timeout")
                return seen
            if p is None:
                return seen
            seen.append(p[0])

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def reject_reason(body):
    """(result, source, reason) of an A-ASSOCIATE-RJ body."""
    return body[1], body[2], body[3]


def pdvs(body):
    """The PDVs of a P-DATA-TF body: [(pc, command, last, data)]."""
    out = []
    pos = 0
    while pos + 6 <= len(body):
        n, pc, control = struct.unpack_from(">IBB", body, pos)
        out.append((pc, bool(control & 1), bool(control & 2), body[pos + 6:pos + 4 + n]))
        pos += 4 + n
    return out


def read_response(peer, timeout=None):
    """Read P-DATA-TF PDUs up to the end of a command; returns its elements."""
    data = b""
    while True:
        p = peer.read_pdu(timeout)
        if p is None or p[0] != P_DATA_TF:
            raise RuntimeError("expected a response, got %s" %
                               ("close" if p is None else PDU_NAMES.get(p[0], p[0])))
        for pc, command, last, chunk in pdvs(p[1]):
            if command:
                data += chunk
                if last:
                    return parse_command(data)


# ---- DICOM files -------------------------------------------------------------------------------

def make_file(path, sop_class=CT_STORAGE, sop_instance=None, rows=64, cols=64, seed=0,
              transfer_syntax=EXPLICIT_LE, extra=None):
    """A small, valid Part 10 image with pydicom (no numpy needed)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid
    sop_instance = sop_instance or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = "1.2.826.0.1.3680043.8.498.1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyInstanceUID = (extra or {}).get("study", "1.2.826.0.1.3680043.8.498.77.%d" %
                                            (seed // 50))
    ds.SeriesInstanceUID = ds.StudyInstanceUID + ".1"
    ds.Modality = "CT"
    ds.PatientName = ["Müller^Jürgen", "Nguyen^Ana", "王^小明"][seed % 3]
    ds.PatientID = "PID%05d" % (seed % 7)
    ds.AccessionNumber = "ACC%06d" % seed
    ds.StudyDate = "20240102"
    ds.StudyTime = "101010.123"
    ds.InstanceNumber = seed
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = [0.5, 0.5]
    ds.ImagePositionPatient = [-120.0, -120.0, float(seed) * 1.25]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    item = Dataset()
    item.CodeValue = "T-A0100"
    item.CodingSchemeDesignator = "SRT"
    item.CodeMeaning = "Brain"
    ds.AnatomicRegionSequence = Sequence([item])
    ds.add_new(0x00091010, "LO", "PRIVATE CREATOR")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    pixels = bytearray(rows * cols * 2)
    for i in range(0, len(pixels), 2):
        v = ((i * 2654435761 + seed * 97) >> 7) & 0x0FFF
        pixels[i] = v & 0xFF
        pixels[i + 1] = v >> 8
    ds.PixelData = bytes(pixels)
    ds["PixelData"].VR = "OW"
    if transfer_syntax == IMPLICIT_LE:
        ds.is_little_endian, ds.is_implicit_VR = True, True
    elif transfer_syntax == "1.2.840.10008.1.2.2":
        ds.is_little_endian, ds.is_implicit_VR = False, False
    else:
        ds.is_little_endian, ds.is_implicit_VR = True, False
    pydicom.dcmwrite(path, ds, write_like_original=False)
    return sop_instance


def tempdir(prefix):
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("TMPDIR", "/tmp"))
