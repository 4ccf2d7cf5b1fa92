"""Helpers for the DICOMweb tests: `telerad serve --dicom-port 0 --http-port 0` in a temporary
data folder, an HTTP client that keeps its connection (http.client), multipart/related
parsing, and the test studies: synthetic ones from /work/shared/tools/gen_study.py (UTF-8,
GB18030 and Latin-1 character sets) and compressed files from pydicom's test data (JPEG
baseline, JPEG-LS, RLE, JPEG 2000, multi-frame), given fresh UIDs and sent with DCMTK's
storescu in their own transfer syntax.

The Checks class, skip(), run() and the storescu helpers come from
tests/interop_scp/scp_common.py.
"""
import glob
import http.client
import json
import os
import re
import select
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop_scp"))
import scp_common  # noqa: E402
from scp_common import (SKIP, Checks, dcmtk_env, run, skip,  # noqa: E402,F401
                        storescu_options_for, tempdir)

REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
GEN_STUDY = os.environ.get("TELERAD_GEN_STUDY", "/work/shared/tools/gen_study.py")
if not os.path.exists(GEN_STUDY):
    GEN_STUDY = os.path.join(REPO, "..", "shared", "tools", "gen_study.py")
PYDICOM_FILES = scp_common.PYDICOM_TEST_FILES
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DICOM_ACCEPT_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'
# "Bearer trk_..." once authenticate() has made an API key; every Client sends it.
AUTH = None


def need_tools():
    scp_common.need_pydicom()
    try:
        import numpy  # noqa: F401
    except ImportError:
        skip("numpy is not installed (Debian package python3-numpy)")
    scp_common.need_programs("storescu", "findscu")
    if not os.path.exists(GEN_STUDY):
        skip("no gen_study.py at %s" % GEN_STUDY)


# ---- the server --------------------------------------------------------------------------------

class WebServer:
    """`telerad serve` with DICOM and HTTP on free loopback ports."""

    def __init__(self, telerad, workdir, *args, name="server"):
        self.telerad = telerad
        # The first start creates `admin` with this password (security.h).
        self.admin_password = "web-test-" + os.urandom(8).hex()
        self.data = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args)
        self.proc = None
        self.dicom_port = self.http_port = None

    def start(self, timeout=60):
        self.log = open(self.log_path, "ab")
        cmd = [self.telerad, "serve", "--data", self.data, "--dicom-port", "0",
               "--http-port", "0"] + self.args
        env = dict(os.environ, TELERAD_ADMIN_PASSWORD=self.admin_password)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        deadline = time.time() + timeout
        out = b""
        while time.time() < deadline and out.count(b"\n") < 2:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    break
                out += c
            elif self.proc.poll() is not None:
                break
        ports = dict(line.split() for line in out.decode().splitlines() if " " in line)
        if "dicom-port" not in ports or "http-port" not in ports:
            self.stop()
            raise RuntimeError("telerad serve did not start (%s): %s" %
                               (" ".join(cmd), self.log_text()[-2000:]))
        self.dicom_port = int(ports["dicom-port"])
        self.http_port = int(ports["http-port"])
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def status_kb(self, field):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            pass
        return -1

    def stop(self, timeout=60):
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

    def stored_path(self, sop_instance):
        found = glob.glob(os.path.join(self.data, "objects", "**", sop_instance + ".dcm"),
                          recursive=True)
        return found[0] if found else None

    def stored_count(self):
        return len(glob.glob(os.path.join(self.data, "objects", "**", "*.dcm"), recursive=True))

    def temporaries(self):
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


# ---- HTTP ----------------------------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # {lower-case name: value}
        self.body = body

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    @property
    def type(self):
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def json(self):
        return json.loads(self.body)

    def parts(self):
        return multipart_parts(self.header("content-type"), self.body)

    def __repr__(self):
        return "HTTP %d %s %.300r" % (self.status, self.header("content-type"), self.body)


class Client:
    """One keep-alive HTTP/1.1 connection (reopened when the server closes it)."""

    def __init__(self, port, host="127.0.0.1", timeout=300, auth=True):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None
        self.connections = 0
        self.auth = auth  # False: no Authorization header

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.connections += 1

    def request(self, method, path, headers=None, body=None):
        for attempt in (0, 1):
            if self.conn is None:
                self._connect()
            try:
                h = dict(headers or {})
                if self.auth and AUTH and "Authorization" not in h:
                    h["Authorization"] = AUTH
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                self.last_headers = r.getheaders()
                resp = Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
                if r.will_close:
                    self.close()
                return resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.close()
                if attempt or body is not None and not isinstance(body, (bytes, str)):
                    raise
            except Exception:
                self.close()  # a broken answer: the next request starts afresh
                raise
        raise RuntimeError("unreachable")

    def get(self, path, accept=None, headers=None):
        h = dict(headers or {})
        if accept is not None:
            h["Accept"] = accept
        return self.request("GET", path, h)

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def authenticate(port, password):
    """Log in as admin (POST /api/v1/auth/login), make an API key (POST /api/v1/api-keys, with
    the session cookie and its CSRF token) and keep "Bearer KEY" in AUTH for every Client.
    Returns the key, or None when the server has no accounts (no such route)."""
    global AUTH
    c = Client(port, auth=False)
    r = c.request("POST", "/api/v1/auth/login", {"Content-Type": "application/json"},
                  json.dumps({"username": "admin", "password": password}))
    if r.status == 404:
        return None
    if r.status != 200:
        raise RuntimeError("login failed: %r" % r)
    cookies = []
    for k, v in c.last_headers:
        if k.lower() == "set-cookie":
            cookies.append(v.split(";", 1)[0])
    csrf = r.json().get("csrf", "")
    r = c.request("POST", "/api/v1/api-keys", {"Content-Type": "application/json",
                                               "Cookie": "; ".join(cookies),
                                               "X-CSRF-Token": csrf},
                  json.dumps({"label": "web tests"}))
    if r.status not in (200, 201):
        raise RuntimeError("cannot make an API key: %r" % r)
    key = r.json()["key"]
    AUTH = "Bearer " + key
    c.close()
    return key


def multipart_parts(content_type, body):
    """[(headers {lower name: value}, bytes)] of a multipart body."""
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        raise ValueError("no boundary in %r" % content_type)
    delim = b"--" + m.group(1).encode()
    parts = []
    pos = body.find(delim)
    if pos < 0:
        raise ValueError("no delimiter in the body")
    while True:
        pos += len(delim)
        if body[pos:pos + 2] == b"--":
            return parts
        eol = body.find(b"\r\n", pos)
        head_end = body.find(b"\r\n\r\n", eol)
        if eol < 0 or head_end < 0:
            raise ValueError("part headers are cut")
        headers = {}
        for line in body[eol + 2:head_end].split(b"\r\n"):
            if line:
                k, _, v = line.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
        start = head_end + 4
        nxt = body.find(b"\r\n" + delim, start)
        if nxt < 0:
            raise ValueError("the body has no closing delimiter")
        parts.append((headers, body[start:nxt]))
        pos = nxt + 2


def multipart_body(parts, boundary="telerad-test-boundary-5c1d"):
    """(content type, bytes) of multipart/related with [(headers dict, bytes)] parts."""
    out = b""
    for headers, data in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        for k, v in headers.items():
            out += ("%s: %s\r\n" % (k, v)).encode()
        out += b"\r\n" + data + b"\r\n"
    out += b"--" + boundary.encode() + b"--\r\n"
    return 'multipart/related; type="application/dicom"; boundary=%s' % boundary, out


# ---- DICOM -------------------------------------------------------------------------------------

def read_dicom(data_or_path, **kw):
    import io
    import pydicom
    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    return pydicom.dcmread(src, force=True, **kw)


def new_uid():
    from pydicom.uid import generate_uid
    return generate_uid()


def gen_study(outdir, *args):
    p = subprocess.run(["/usr/bin/python3", GEN_STUDY, outdir] + list(args),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=900)
    if p.returncode != 0:
        raise RuntimeError("gen_study.py: %s" % p.stderr.decode("utf-8", "replace"))
    return [line.split() for line in p.stdout.decode().splitlines() if line.strip()]


def retag(path, out, **values):
    """Rewrite a file's header attributes (keyword=value), leaving the pixel data bytes as they
    are; the file meta follows the SOP Instance UID."""
    import pydicom
    ds = pydicom.dcmread(path, force=True)
    for k, v in values.items():
        setattr(ds, k, v)
    if "SOPInstanceUID" in values:
        ds.file_meta.MediaStorageSOPInstanceUID = values["SOPInstanceUID"]
    ds.save_as(out, write_like_original=True)
    return out


# Compressed (and multi-frame) files from pydicom's test data: name, what it is.
COMPRESSED = [
    ("SC_rgb_jpeg_dcmtk.dcm", "JPEG baseline, YBR_FULL"),
    ("MR_small_jpeg_ls_lossless.dcm", "JPEG-LS lossless"),
    ("MR_small_RLE.dcm", "RLE"),
    ("MR_small_jp2klossless.dcm", "JPEG 2000 lossless"),
    ("SC_rgb_rle_16bit_2frame.dcm", "RLE RGB 16-bit, 2 frames"),
    ("SC_rgb_rle_2frame.dcm", "RLE RGB, 2 frames"),
    ("rtdose.dcm", "uncompressed (implicit VR), 15 frames"),
    ("JPEG2000.dcm", "JPEG 2000"),
]


def prepare_compressed(folder):
    """Copies of the compressed test files in one study of their own (fresh Study, Series and
    SOP Instance UIDs, one patient). Returns [(path, description)]."""
    os.makedirs(folder, exist_ok=True)
    study = new_uid()
    out = []
    for i, (name, what) in enumerate(COMPRESSED):
        src = os.path.join(PYDICOM_FILES, name)
        if not os.path.exists(src):
            continue
        dst = os.path.join(folder, name)
        retag(src, dst, StudyInstanceUID=study, SeriesInstanceUID=new_uid(),
              SOPInstanceUID=new_uid(), PatientName="Pydicom^Files", PatientID="PYD0001",
              StudyDate="20190704", AccessionNumber="PYDACC1", SeriesNumber=i + 1)
        out.append((dst, what))
    return out


def send_files(port, files, timeout=600):
    """storescu each file in its own transfer syntax (uncompressed ones together)."""
    plain, failures = [], []
    for f in files:
        opts, ts, _ = storescu_options_for(f)
        if len(opts) == 1 and ts in (EXPLICIT_LE, "1.2.840.10008.1.2"):
            plain.append(f)
            continue
        rc, out = scp_common.storescu(port, [f], *opts, timeout=timeout)
        if rc != 0:
            failures.append("%s: %s" % (f, out[-300:]))
    for i in range(0, len(plain), 200):
        rc, out = scp_common.storescu(port, plain[i:i + 200], timeout=timeout)
        if rc != 0:
            failures.append("storescu: %s" % out[-300:])
    return failures
