"""Helpers for the report and delivery tests: `telerad serve` on free loopback ports in a
temporary folder (started, killed with SIGKILL, started again on the same data), a JSON HTTP
client, the peers a hospital would run (an MLLP receiver that answers ACKs as a script says and
records every message, an HTTP recorder for the webhook and the FHIR server, DCMTK's storescp
as the PACS), test studies made with pydicom and sent with storescu, multipart/related
parsing for WADO-RS, and dciodvfy.

Every check prints one line; the script exits 0 when all held, 1 otherwise, 77 (ctest's
SKIP_RETURN_CODE) when a tool is missing.
"""
import http.client
import http.server
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

SKIP = 77


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def need(*programs):
    for p in programs:
        if not shutil.which(p):
            skip("%s is not installed" % p)


class Checks:
    def __init__(self, name):
        self.name = name
        self.failed = 0
        self.passed = 0

    def check(self, ok, what, detail=""):
        if ok:
            self.passed += 1
            print("ok   %s" % what, flush=True)
        else:
            self.failed += 1
            print("FAIL %s%s" % (what, (": " + str(detail)[:1500]) if detail != "" else ""),
                  flush=True)
        return ok

    def finish(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        sys.exit(1 if self.failed else 0)


def wait_for(fn, timeout, step=0.2):
    """Call fn until it returns something true (returned) or the time is up (None)."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() >= deadline:
            return None
        time.sleep(step)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---- the server --------------------------------------------------------------------------------

class Server:
    """`telerad serve` with DICOM and HTTP on loopback; ports fixed at the first start so that a
    restart on the same data listens where the peers expect it."""

    def __init__(self, telerad, workdir, *args, env=None, name="server"):
        self.telerad = telerad
        self.data = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args)
        self.env = dict(os.environ, **(env or {}))
        self.proc = None
        self.dicom_port = free_port()
        self.http_port = free_port()

    def start(self, timeout=60):
        self.log = open(self.log_path, "ab")
        cmd = [self.telerad, "serve", "--data", self.data, "--dicom-port", str(self.dicom_port),
               "--http-port", str(self.http_port)] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log,
                                     env=self.env)
        ok = wait_for(lambda: self.proc.poll() is not None or self._answers(), timeout, 0.2)
        if not ok or self.proc.poll() is not None:
            raise RuntimeError("telerad serve did not start: %s" % self.log_text()[-3000:])
        return self

    def _answers(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=2)
            c.request("GET", "/healthz")
            ok = c.getresponse().status == 200
            c.close()
            return ok
        except OSError:
            return False

    def kill(self):
        """SIGKILL: no clean shutdown, as a crash."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.log.close()

    def stop(self, timeout=60):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""


class Response:
    def __init__(self, status, headers, body, raw_headers=()):
        self.status = status
        self.headers = headers
        self.body = body
        self.raw_headers = list(raw_headers)  # [(name, value)] as sent, repeats kept

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "HTTP %d %.400r" % (self.status, self.body)


class Client:
    """HTTP/1.1 to the server, with an optional Bearer token."""

    def __init__(self, port, token=None):
        self.port = port
        self.token = token

    def request(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.token:
            h["Authorization"] = "Bearer " + self.token
        data = None
        if body is not None:
            data = body if isinstance(body, (bytes, str)) else json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request(method, path, body=data, headers=h)
            r = c.getresponse()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(),
                            r.getheaders())
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)


def multipart_parts(content_type, body):
    m = re.search(r'boundary="?([^";]+)"?', content_type or "")
    if not m:
        raise ValueError("no boundary in %r" % content_type)
    delim = b"--" + m.group(1).encode()
    parts = []
    chunks = body.split(delim)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        if payload.endswith(b"\r\n"):
            payload = payload[:-2]
        parts.append(payload)
    return parts


# ---- peers -------------------------------------------------------------------------------------

VT, FS, CR = b"\x0b", b"\x1c", b"\r"


def hl7_field(message, segment, field):
    """Field `field` of the first `segment` of an HL7 message (str), raw (escaped)."""
    for seg in message.split("\r"):
        parts = seg.split("|")
        if parts[0] == segment:
            if segment == "MSH":
                parts = ["MSH", "|"] + parts[1:]
            return parts[field] if field < len(parts) else ""
    return None


class MllpReceiver:
    """A hospital's results interface: accepts MLLP connections, records every message and
    answers each as the script says: "AA", "AE", "AR" (an ACK with that code), "DROP" (close
    the connection without answering), "HOLD" (keep the connection open and answer nothing
    until release()). When the script is empty the answer is `default`. Messages whose MSH-10
    was acknowledged AA before are repeats: they are answered AA and counted."""

    def __init__(self, port=0, default="AA"):
        self.port = port or free_port()
        self.default = default
        self.script = []
        self.messages = []      # (time, control id, answer, text)
        self.accepted = {}      # control id -> text of the message acknowledged AA
        self.repeats = {}       # control id -> count of repeats after AA
        self.lock = threading.Lock()
        self.held = threading.Event()
        self.sock = None
        self.thread = None
        self.running = False

    def start(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(16)
        self.running = True
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.running = False
        if self.sock:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        if self.thread:
            self.thread.join(5)

    def release(self):
        self.held.set()

    def _accept(self):
        while self.running:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        buf = b""
        conn.settimeout(120)
        try:
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                buf += data
                while VT in buf and FS in buf:
                    start = buf.index(VT)
                    end = buf.index(FS, start)
                    text = buf[start + 1:end].decode("utf-8", "replace")
                    buf = buf[end + 2:]
                    if not self._answer(conn, text):
                        return
        except OSError:
            return
        finally:
            conn.close()

    def _answer(self, conn, text):
        control = hl7_field(text, "MSH", 10)
        with self.lock:
            if control in self.accepted:
                action = "AA"
                self.repeats[control] = self.repeats.get(control, 0) + 1
            else:
                action = self.script.pop(0) if self.script else self.default
            self.messages.append((time.time(), control, action, text))
        if action == "DROP":
            return False
        if action == "HOLD":
            self.held.wait(300)
            return False  # the sender is gone by then; close
        ack = ("MSH|^~\\&|RIS|HOSP|TELERAD|GROUP|20260101000000||ACK^R01^ACK|A%s|P|2.5.1\r"
               "MSA|%s|%s|%s\r" % (control, action, control,
                                   "" if action == "AA" else "test says " + action))
        if action == "AA":
            with self.lock:
                self.accepted.setdefault(control, text)
        conn.sendall(VT + ack.encode() + FS + CR)
        return True

    def received(self, control=None):
        with self.lock:
            return [m for m in self.messages if control is None or m[1] == control]


class HttpRecorder:
    """Records POSTed JSON bodies (the webhook, a FHIR server) and answers `status`."""

    def __init__(self, status=200):
        self.status = status
        self.bodies = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                recorder.bodies.append((self.path, self.headers.get("Content-Type"), doc))
                reply = b'{"resourceType":"Bundle","type":"transaction-response"}'
                self.send_response(recorder.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


class StoreScp:
    """DCMTK storescp as the hospital's PACS."""

    def __init__(self, workdir, aet="PACS"):
        self.dir = os.path.join(workdir, "pacs")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.aet = aet
        self.proc = subprocess.Popen(["storescp", "-aet", aet, "-od", self.dir, "+xa",
                                      str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, env=dict(os.environ,
                                                                         TCP_NODELAY="1"))
        time.sleep(0.5)

    def files(self):
        return sorted(os.path.join(self.dir, f) for f in os.listdir(self.dir))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


# ---- studies -----------------------------------------------------------------------------------

def make_study(folder, patient_id, patient_name, accession, description, body_part, modality="CT",
               images=2):
    """A small study (64x64 16-bit images) written with pydicom; returns (study uid, paths)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    os.makedirs(folder, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    paths = []
    for i in range(images):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "19600214", "F"
        ds.AccessionNumber, ds.StudyDescription, ds.BodyPartExamined = (accession, description,
                                                                         body_part)
        ds.StudyDate, ds.StudyTime, ds.StudyID = "20261122", "101500", "1"
        ds.ReferringPhysicianName = "Referrer^Rita"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, 1, i + 1
        ds.Rows = ds.Columns = 64
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = bytes(64 * 64 * 2)
        p = os.path.join(folder, "img%d.dcm" % i)
        pydicom.dcmwrite(p, ds, write_like_original=False)
        paths.append(p)
    return study, paths


def storescu(port, calling_ae, files):
    p = subprocess.run(["storescu", "-aet", calling_ae, "-aec", "TELERAD", "127.0.0.1", str(port)]
                       + list(files), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=120, env=dict(os.environ, TCP_NODELAY="1"))
    return p.returncode, p.stdout.decode("utf-8", "replace")


def dciodvfy(path):
    """(errors, whole output) of dicom3tools' dciodvfy on a file."""
    p = subprocess.run(["dciodvfy", "-new", path], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    out = p.stdout.decode("utf-8", "replace")
    errors = [line for line in out.splitlines() if line.startswith("Error")]
    return errors, out
