"""Helpers for the archive tests (crash.py, full_disk.py): synthetic instances made with pydicom
(seeded, so that a run can be repeated), `telerad serve` started and killed, DCMTK's storescu /
findscu / getscu / echoscu run against it (with TCP_NODELAY=1: Debian's DCMTK leaves Nagle's
algorithm on otherwise and crawls) and their verbose output parsed, and a look at the archive's
data folder and index from outside (objects/, tmp/, the SQLite or PostgreSQL index).

Every test script takes the telerad binary as its first argument, prints one line per check,
exits 0 when every check held, 1 when one failed, and 77 (ctest's SKIP_RETURN_CODE) with a
message when something it needs (DCMTK, pydicom, PostgreSQL, a mount namespace) is missing.
"""
import atexit
import concurrent.futures
import json
import os
import random
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings

warnings.filterwarnings("ignore")

SKIP = 77
AET = "TELERAD"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"

FAMILY = ["SMITH", "SMYTHE", "JONES", "NGUYEN", "MULLER", "GARCIA", "KOWALSKI", "ROSSI"]
GIVEN = ["ANA", "JOHN", "MARIA", "PIOTR", "LUCA", "HANAKO"]
DESCRIPTIONS = ["CT HEAD WO CONTRAST", "CT CHEST PE PROTOCOL", "CT ABDOMEN PELVIS W CONTRAST"]


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def need_tools(*names):
    for n in names:
        if not shutil.which(n):
            skip("%s is not installed (Debian package dcmtk)" % n)
    try:
        import numpy  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        skip("pydicom/numpy are not installed (Debian: python3-pydicom python3-numpy; run with "
             "/usr/bin/python3)")


def telerad_path():
    if len(sys.argv) < 2:
        print("usage: %s TELERAD [options]" % sys.argv[0])
        sys.exit(2)
    path = os.path.abspath(sys.argv[1])
    if not os.access(path, os.X_OK):
        skip("no telerad binary at %s" % path)
    return path


class Checks:
    """Counts checks; prints each one."""

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


# ---- synthetic instances ---------------------------------------------------------------------

class Instance:
    def __init__(self, path, sop, study, series):
        self.path = path
        self.sop = sop
        self.study = study
        self.series = series


def _uid(rng):
    # 2.25 + a random 120-bit integer (PS3.5 B.2), from the seeded generator.
    return "2.25.%d" % rng.getrandbits(120)


def make_instances(outdir, rng, studies, series_per_study, per_series, rows, first_patient=0,
                   patients=4):
    """Write studies x series x instances CT images (rows x rows, 16-bit, structured noise) as
    OUTDIR/<n>.dcm; returns [Instance]. Everything (UIDs, names, dates, pixels) comes from rng."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset

    os.makedirs(outdir, exist_ok=True)
    out = []
    n = len(os.listdir(outdir))
    for s in range(studies):
        p = first_patient + s % patients
        study_uid = _uid(rng)
        name = "%s^%s" % (FAMILY[p % len(FAMILY)], GIVEN[p % len(GIVEN)])
        date = "2024%02d%02d" % (rng.randint(1, 12), rng.randint(1, 28))
        accession = "A%07d" % rng.randint(0, 9999999)
        for se in range(series_per_study):
            series_uid = _uid(rng)
            for i in range(per_series):
                ds = Dataset()
                ds.SpecificCharacterSet = "ISO_IR 100"
                ds.SOPClassUID = CT_IMAGE
                ds.SOPInstanceUID = _uid(rng)
                ds.StudyDate = date
                ds.StudyTime = "%02d%02d00" % (rng.randint(0, 23), rng.randint(0, 59))
                ds.AccessionNumber = accession
                ds.Modality = "CT"
                ds.Manufacturer = "SYNTHETIC"
                ds.ReferringPhysicianName = "REFERRER^ALEX"
                ds.StudyDescription = DESCRIPTIONS[s % len(DESCRIPTIONS)]
                ds.SeriesDescription = "AXIAL %d" % (se + 1)
                ds.PatientName = name
                ds.PatientID = "PAT%04d" % p
                ds.PatientBirthDate = "19%02d0101" % (40 + p)
                ds.PatientSex = "MF"[p % 2]
                ds.StudyInstanceUID = study_uid
                ds.SeriesInstanceUID = series_uid
                ds.StudyID = "S%d" % (s + 1)
                ds.SeriesNumber = se + 1
                ds.InstanceNumber = i + 1
                ds.ImagePositionPatient = [0, 0, i * 2.5]
                ds.SamplesPerPixel = 1
                ds.PhotometricInterpretation = "MONOCHROME2"
                ds.Rows = rows
                ds.Columns = rows
                ds.BitsAllocated = 16
                ds.BitsStored = 12
                ds.HighBit = 11
                ds.PixelRepresentation = 0
                seed = rng.getrandbits(32)
                y, x = np.mgrid[0:rows, 0:rows]
                img = np.where(((y - rows / 2) ** 2 + (x - rows / 2) ** 2) < (rows * 0.4) ** 2,
                               1000, 20)
                img = img + np.random.default_rng(seed).integers(0, 64, (rows, rows))
                ds.PixelData = img.astype("<u2").tobytes()
                meta = FileMetaDataset()
                meta.MediaStorageSOPClassUID = ds.SOPClassUID
                meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                meta.TransferSyntaxUID = EXPLICIT_LE
                ds.file_meta = meta
                ds.is_little_endian = True
                ds.is_implicit_VR = False
                path = os.path.join(outdir, "%05d.dcm" % n)
                n += 1
                ds.save_as(path, write_like_original=False)
                out.append(Instance(path, ds.SOPInstanceUID, study_uid, series_uid))
    return out


# ---- the server ------------------------------------------------------------------------------

_SERVERS = []


@atexit.register
def _kill_servers():
    """A test that stops on an exception must not leave a server behind."""
    for s in _SERVERS:
        if s.alive():
            s.kill()


class Server:
    """`telerad serve --data DATA --dicom-port 0 ARGS...`; each start logs to its own file."""

    def __init__(self, telerad, workdir, data, *args):
        self.telerad = telerad
        self.workdir = workdir
        self.data = data
        self.args = list(args)
        self.proc = None
        self.port = None
        self.starts = 0
        self.log_path = None

    def spawn(self):
        self.starts += 1
        self.log_path = os.path.join(self.workdir, "server-%03d.log" % self.starts)
        self._log = open(self.log_path, "wb")
        cmd = [self.telerad, "serve", "--data", self.data, "--dicom-port", "0"]
        if serve_has_http(self.telerad):
            cmd += ["--http-port", "0"]  # not the default 8080, which may be taken
        cmd += self.args
        self.command = " ".join(cmd)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log)
        self.port = None
        if self not in _SERVERS:
            _SERVERS.append(self)

    def wait_port(self, timeout=60):
        """Read stdout up to the "dicom-port N" line (an "http-port N" line may come first)."""
        deadline = time.time() + timeout
        buf = b""
        line = b""
        while time.time() < deadline:
            if b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.startswith(b"dicom-port "):
                    break
                continue
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    break
                buf += c
            elif self.proc.poll() is not None:
                break
        if not line.startswith(b"dicom-port "):
            self.kill()
            raise RuntimeError("telerad serve did not start (%s): %s" %
                               (self.command, self.log_text()[-3000:]))
        self.port = int(line.split()[1])
        return self.port

    def start(self, timeout=60):
        self.spawn()
        return self.wait_port(timeout)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL: the crash."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def stop(self, timeout=60):
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
        self._close()
        return self.proc.returncode

    def _close(self):
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""


_HTTP = {}


def serve_has_http(telerad):
    """Does this telerad serve also listen for HTTP (then it takes --http-port)?"""
    if telerad not in _HTTP:
        p = subprocess.run([telerad, "serve", "--help"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)
        _HTTP[telerad] = b"--http-port" in p.stdout
    return _HTTP[telerad]


# ---- DCMTK -----------------------------------------------------------------------------------

def dcmtk_env():
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def run(cmd, timeout=120, env=None):
    """Run a command; returns (exit status, output). A timeout is exit status -999."""
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                           env=env if env is not None else dcmtk_env())
        return p.returncode, p.stdout.decode("utf-8", "replace")
    except subprocess.TimeoutExpired as e:
        return -999, (e.output or b"").decode("utf-8", "replace")


def storescu_command(port, paths, *opts):
    # -v: one "Sending file: X" per file, then "Received Store Response (STATUS)" once the
    # answer arrived; -d adds the response's DIMSE status in hex ("Status : 0xa700 ...").
    return ["storescu", "-v", "-aec", AET] + list(opts) + ["127.0.0.1", str(port)] + list(paths)


_SENDING = re.compile(r"^I: Sending file: (.*)$")
_RESPONSE = re.compile(r"^I: Received Store Response(?: \((.*)\))?\s*$")
_STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


def parse_storescu(output):
    """[(path, status text, status code or None)] for every file whose C-STORE response arrived,
    in order. The status code is only there with -d (storescu's debug dump of the response)."""
    out = []
    current = None
    for line in output.splitlines():
        m = _SENDING.match(line)
        if m:
            current = m.group(1)
            continue
        m = _RESPONSE.match(line)
        if m and current is not None:
            out.append([current, m.group(1) or "", None])
            current = None
            continue
        m = _STATUS.search(line)
        if m and out and out[-1][2] is None and current is None:
            out[-1][2] = int(m.group(1), 16)
            if not out[-1][1]:
                out[-1][1] = line.split(":", 2)[-1].strip()
    return [tuple(x) for x in out]


def find_values(port, level, return_key, *keys, timeout=120):
    """C-FIND (study root) at `level`; the values of `return_key` (a keyword) in the answers, and
    findscu's exit status and output."""
    cmd = ["findscu", "-v", "-S", "-aec", AET, "-k", "QueryRetrieveLevel=%s" % level,
           "-k", return_key]
    for k in keys:
        cmd += ["-k", k]
    cmd += ["127.0.0.1", str(port)]
    rc, out = run(cmd, timeout=timeout)
    values = []
    pat = re.compile(r"\) [A-Z][A-Z] \[(.*?)\]\s+#.*\b%s$" % re.escape(return_key))
    for line in out.splitlines():
        m = pat.search(line.strip())
        if m:
            values.append(m.group(1).strip().rstrip("\0"))
    return rc, values, out


def get_study(port, study_uid, outdir, timeout=300):
    os.makedirs(outdir, exist_ok=True)
    return run(["getscu", "-S", "-aec", AET, "-k", "QueryRetrieveLevel=STUDY",
                "-k", "StudyInstanceUID=%s" % study_uid, "-od", outdir, "127.0.0.1", str(port)],
               timeout=timeout)


def echo(port, timeout=60):
    return run(["echoscu", "-aec", AET, "127.0.0.1", str(port)], timeout=timeout)


# ---- telerad json comparison -----------------------------------------------------------------

def telerad_json(telerad, path):
    p = subprocess.run([telerad, "json", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120)
    if p.returncode != 0:
        return None, p.stderr.decode("utf-8", "replace").strip()
    return json.loads(p.stdout), None


def same_json(telerad, pairs, jobs=4):
    """For [(source, copy)]: [(source, copy, None or what differs)] comparing `telerad json`."""
    def one(pair):
        a, ea = telerad_json(telerad, pair[0])
        b, eb = telerad_json(telerad, pair[1])
        if ea or eb:
            return pair[0], pair[1], "telerad json failed: %s" % (ea or eb)
        if a != b:
            keys = sorted(set(a) | set(b))
            diff = [k for k in keys if a.get(k) != b.get(k)]
            return pair[0], pair[1], "data sets differ in %s" % ", ".join(diff[:5])
        return pair[0], pair[1], None
    with concurrent.futures.ThreadPoolExecutor(jobs) as ex:
        return list(ex.map(one, pairs))


# ---- the archive seen from outside -----------------------------------------------------------

def files_under(path):
    out = []
    for root, _, files in os.walk(path):
        out += [os.path.join(root, f) for f in files]
    return sorted(out)


def pool_file_in_order(path):
    """A "pool-*" file of the object store (src/services/archive/objstore.c) that is not a
    half-received object: empty (created ahead of time for a next put), or the second name of a
    stored object (its directory fsync and the removal of this name are batched), or gone."""
    if not os.path.basename(path).startswith("pool-"):
        return False
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return True
    return st.st_size == 0 or st.st_nlink > 1


def temporaries_under(tmp):
    """Files of half-received objects under DATA/tmp (not the pool's, see above)."""
    return [p for p in files_under(tmp) if not pool_file_in_order(p)]


def object_files(data):
    """{relative key: path} of everything under DATA/objects."""
    base = os.path.join(data, "objects")
    return {os.path.relpath(p, base): p for p in files_under(base)}


class FsObjects:
    """The objects of a filesystem object store, seen from outside: DATA/objects, DATA/tmp."""

    def __init__(self, data):
        self.data = data

    def keys(self):
        """{key: size}"""
        return {k: os.path.getsize(p) for k, p in object_files(self.data).items()}

    def path(self, key):
        return os.path.join(self.data, "objects", key)

    def temporaries(self):
        return temporaries_under(os.path.join(self.data, "tmp"))


class S3Objects:
    """The objects of an S3 object store (the bucket named in a tests/s3/ceph.sh env file),
    seen from outside with tests/s3/s3util.py; objects are downloaded into `scratch` when a
    test needs their bytes (objects never change under a key in these tests). Temporaries are
    the node's spool files, DATA/spool."""

    def __init__(self, env_file, data, scratch):
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3"))
        import s3util
        self.s3 = s3util.S3.from_env_file(env_file)
        self.data = data
        self.scratch = scratch

    def keys(self):
        return self.s3.list()

    def path(self, key):
        p = os.path.join(self.scratch, key)
        if not os.path.exists(p):
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p + ".part", "wb") as f:
                f.write(self.s3.get(key))
            os.rename(p + ".part", p)
        return p

    def temporaries(self):
        return files_under(os.path.join(self.data, "spool"))


def start_ceph(work):
    """Start a one-node Ceph with its S3 gateway in WORK/ceph (tests/s3/ceph.sh); returns the
    state folder (its env and s3.conf files), or skips (77) when Ceph is not installed."""
    state = os.path.join(work, "ceph")
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3", "ceph.sh")
    t0 = time.time()
    p = subprocess.run(["bash", script, "start", state], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode == SKIP:
        skip(p.stdout.decode().strip())
    if p.returncode != 0:
        raise RuntimeError("ceph.sh start failed: " + p.stdout.decode())
    print("%s (%.1f s)" % (p.stdout.decode().strip(), time.time() - t0), flush=True)
    return state


def stop_ceph(state):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s3", "ceph.sh")
    subprocess.run(["bash", script, "stop", state])


def object_problem(path, sources_by_sop=None):
    """None if the object parses whole (pydicom, every element, pixel data of the right length)
    and, given the sources, equals its source data set; else what is wrong."""
    import pydicom
    try:
        ds = pydicom.dcmread(path)
        ds.walk(lambda d, e: e.value)  # decode every element
        pixels = ds.get("PixelData")
        if pixels is None or len(pixels) != ds.Rows * ds.Columns * ds.BitsAllocated // 8:
            return "pixel data missing or of the wrong length"
        if sources_by_sop is not None:
            src = sources_by_sop.get(str(ds.SOPInstanceUID))
            if src is None:
                return "SOP Instance UID %s was never sent" % ds.SOPInstanceUID
            if pydicom.dcmread(src) != ds:
                return "data set differs from its source %s" % src
    except Exception as e:  # noqa: BLE001 - any parse failure is the finding
        return "%s: %s" % (type(e).__name__, e)
    return None


def index_rows(index_url, data):
    """{sop_uid: object_key} read straight from the index (the server must not be running)."""
    if index_url and index_url.startswith("postgres"):
        p = subprocess.run(["psql", "-X", "-q", "-At", "-F", "|", index_url, "-c",
                            "SELECT sop_uid, object_key FROM instances"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("psql: " + p.stderr.decode())
        rows = [l.split("|", 1) for l in p.stdout.decode().splitlines() if l]
        return {a: b for a, b in rows}
    path = os.path.join(data, "index.sqlite")
    if not os.path.exists(path):
        return {}
    db = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=30)
    try:
        return {a: b for a, b in db.execute("SELECT sop_uid, object_key FROM instances")}
    finally:
        db.close()


_RECONCILED = re.compile(r"reconciled the index with the object store: (\d+) objects indexed, "
                         r"(\d+) rows without object removed, (\d+) unreadable objects "
                         r"quarantined")


_RESTORED = re.compile(r"after a crash: (\d+) stored objects put back under their names")


def restored_report(log):
    """How many objects the start put back under their names from their temporaries."""
    m = _RESTORED.search(log)
    return int(m.group(1)) if m else 0


def reconcile_report(log):
    """(indexed, forgotten, quarantined) from the server's log, or None if it said nothing."""
    m = _RECONCILED.search(log)
    return tuple(int(x) for x in m.groups()) if m else None


def asan_report(log):
    return "AddressSanitizer" in log or "LeakSanitizer" in log or "runtime error:" in log


def seeded(seed):
    return random.Random(seed)
