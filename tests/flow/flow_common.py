"""Helpers of the workflow tests (tests/flow/scenario.py): an independent model of the routing
rules, `telerad serve` on free ports with its REST API, a webhook receiver, studies from
/work/shared/tools/gen_study.py sent by DCMTK's storescu, and the catalog of the scenario
(three sites in three jurisdictions, their contracts, five readers).
"""
import datetime
import glob
import http.client
import http.server
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop_scp"))
from scp_common import dcmtk_env  # noqa: E402

GEN_STUDY = os.environ.get("TELERAD_GEN_STUDY", "/work/shared/tools/gen_study.py")
PRIORITIES = ("STAT", "URGENT", "ROUTINE")


def log(msg):
    print("      " + msg, flush=True)


def utc_now():
    return time.time()


def iso_to_s(text):
    """'2026-11-22T10:30:00Z' (or with an offset) -> seconds since the epoch."""
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def date_in(zone, t, days=0):
    return (datetime.datetime.fromtimestamp(t, ZoneInfo(zone)) +
            datetime.timedelta(days=days)).strftime("%Y-%m-%d")


def hhmm_in(zone, t):
    return datetime.datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%H:%M")


# ---- an independent model of the routing rules ------------------------------------------------
# Written from the issue and docs/api.md, not from the C code: eligible = available (online, or
# inside a shift in the reader's zone, or inside an absolute interval) and a license for the
# site's jurisdiction valid through its expiry date (in the reader's zone) and privileges at the
# site likewise and the required subspecialty and fewer open reads than the cap. The first
# failing condition, in that order, is the reason given.

DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def hhmm(text):
    h, m = int(text[:2]), int(text[3:5])
    return h * 60 + m


def in_weekly(shift, weekday, minute):
    days = shift.get("days") or DAYS
    mask = {DAYS.index(d[:3].lower()) for d in days}
    start, end = hhmm(shift["start"]), hhmm(shift["end"])
    if start < end:
        return weekday in mask and start <= minute < end
    return (weekday in mask and minute >= start) or ((weekday - 1) % 7 in mask and minute < end)


def available(reader, t):
    if reader.get("status") == "online":
        return True
    local = datetime.datetime.fromtimestamp(t, ZoneInfo(reader.get("timezone") or "UTC"))
    for s in reader.get("shifts") or []:
        if "T" in s["start"]:
            if iso_to_s(s["start"]) <= t < iso_to_s(s["end"]):
                return True
        elif in_weekly(s, local.weekday(), local.hour * 60 + local.minute):
            return True
    return False


def verdict(reader, site, subspecialty, open_reads, t, availability=True, cap=True):
    """(verdict, reason) as GET /reads/{id}/routing words them."""
    if availability and not available(reader, t):
        return "unavailable", "offline and outside every shift"
    today = date_in(reader.get("timezone") or "UTC", t)
    lic = [x for x in reader.get("licenses") or [] if x["jurisdiction"] == site["jurisdiction"]]
    if not any(x["expires"] >= today for x in lic):
        if lic:
            return "license expired", "license for %s expired" % site["jurisdiction"]
        return "not licensed", "no license for %s" % site["jurisdiction"]
    priv = [x for x in reader.get("privileges") or [] if x["site"] == site["id"]]
    if not any(x["expires"] >= today for x in priv):
        if priv:
            return "privileges expired", "privileges at %s expired" % site["id"]
        return "not privileged", "no privileges at %s" % site["id"]
    if subspecialty and subspecialty.lower() not in [s.lower() for s in
                                                     reader.get("subspecialties") or []]:
        return "wrong subspecialty", "needs subspecialty %s" % subspecialty
    if cap and open_reads >= reader.get("max_open", 10):
        return "at capacity", "%d open reads, cap %d" % (open_reads, reader.get("max_open", 10))
    return "eligible", ""


def words(text):
    return " " + " ".join(re.findall(r"[A-Za-z0-9\x80-\uffff]+", text.upper())) + " "


def words_match(text, phrase):
    p = words(phrase)
    return len(p) > 2 and p in words(text)


def expected_priority(description, requested, rules):
    """(priority, source) for a study: the higher of the requested procedure priority and the
    matching rules ({id, priority, description_contains, modality, body_part})."""
    best, source = 2, "default"
    req = {"STAT": 0, "URGENT": 1, "ASAP": 1, "HIGH": 1, "ROUTINE": 2, "MEDIUM": 2,
           "LOW": 2}.get((requested or "").upper())
    if req is not None and req < best:
        best, source = req, "requested procedure priority"
    for r in rules:
        p = PRIORITIES.index(r["priority"]) if r["priority"] in PRIORITIES else \
            {"ASAP": 1, "HIGH": 1}.get(r["priority"], 2)
        if p >= best:
            continue
        hit = None
        for w in r.get("description_contains") or []:
            if words_match(description, w):
                hit = w
                break
        if r.get("description_contains") and hit is None:
            continue
        best = p
        source = "rule %d%s" % (r["id"], ": " + hit if hit else "")
    return PRIORITIES[best], source


# ---- the server -------------------------------------------------------------------------------

class Telerad:
    """`telerad serve --dicom-port 0 --http-port 0` in its own folder."""

    def __init__(self, telerad, workdir, name, *args, data=None):
        self.telerad = telerad
        self.name = name
        self.data = data or os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args)
        self.proc = None

    def start(self, timeout=60):
        self.log = open(self.log_path, "ab")
        cmd = [self.telerad, "serve", "--data", self.data, "--dicom-port", "0", "--http-port",
               "0", "--stable-after", "1", "--no-auth"] + self.args
        self.command = " ".join(cmd)
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, env=env)
        deadline = time.time() + timeout
        buf = b""
        self.dicom_port = self.http_port = None
        while time.time() < deadline and (self.dicom_port is None or self.http_port is None):
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    break
                buf += c
                if c == b"\n":
                    line = buf.decode().strip()
                    buf = b""
                    if line.startswith("dicom-port "):
                        self.dicom_port = int(line.split()[1])
                    elif line.startswith("http-port "):
                        self.http_port = int(line.split()[1])
            elif self.proc.poll() is not None:
                break
        if self.dicom_port is None or self.http_port is None:
            self.stop()
            raise RuntimeError("telerad serve did not start (%s): %s" %
                               (self.command, self.log_text()[-3000:]))
        return self

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

    def api(self, method, path, body=None, timeout=60):
        """(status, JSON or text)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=timeout)
        try:
            data = None
            headers = {}
            if body is not None:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
            ctype = resp.getheader("Content-Type") or ""
            if "json" in ctype and raw:
                return resp.status, json.loads(raw)
            return resp.status, raw.decode("utf-8", "replace")
        finally:
            conn.close()

    def get(self, path):
        status, body = self.api("GET", path)
        if status != 200:
            raise RuntimeError("GET %s: %d %s" % (path, status, body))
        return body

    def sanitizer_reports(self):
        text = self.log_text()
        return [line for line in text.splitlines()
                if "AddressSanitizer" in line or "runtime error:" in line or
                "LeakSanitizer" in line]


def wait_for(what, fn, timeout=90, interval=0.5):
    """Poll fn() until it returns something true; returns it (or the last value)."""
    deadline = time.time() + timeout
    value = None
    while time.time() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    log("timed out after %d s waiting for %s" % (timeout, what))
    return value


# ---- a webhook receiver -----------------------------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 that records webhook POSTs and answers 500 to the first
    attempt of each event ((event, read)) when fail_first is set."""

    def __init__(self, fail_first=True):
        self.lock = threading.Lock()
        self.calls = []  # (time, status answered, payload)
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"unparsable": raw.decode("utf-8", "replace")}
                key = (payload.get("event"), payload.get("read"))
                with receiver.lock:
                    seen = any((c[2].get("event"), c[2].get("read")) == key
                               for c in receiver.calls)
                    status = 500 if receiver.fail_first and not seen else 200
                    receiver.calls.append((time.time(), status, payload))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/hook" % self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, kind=None):
        with self.lock:
            return [c for c in self.calls if kind is None or c[2].get("event") == kind]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def check_webhook_delivery(ck, receiver, kinds, what):
    """Every event delivered exactly once (one 200 per (event, read)), after a 500 first."""
    by_key = {}
    for when, status, payload in receiver.events():
        if payload.get("event") in kinds:
            by_key.setdefault((payload["event"], payload.get("read")), []).append((when, status))
    ok_once = all(sum(1 for _, s in v if s == 200) == 1 for v in by_key.values())
    retried = all(v[0][1] == 500 and len(v) >= 2 and v[1][0] - v[0][0] >= 4 for v in by_key.values())
    ck.check(by_key and ok_once, "%s: %d webhook events, each accepted exactly once" %
             (what, len(by_key)), str(by_key))
    ck.check(by_key and retried, "%s: each retried after the receiver's 500 (backoff >= 4 s)" % what,
             str(by_key))
    return by_key


# ---- studies ----------------------------------------------------------------------------------

def gen_study(outdir, modality, studies=1, images=1, seed=1, priority="ROUTINE",
              description=None, patients=0, size=8):
    cmd = ["/usr/bin/python3", GEN_STUDY, outdir, "--modality", modality, "--studies",
           str(studies), "--images", str(images), "--rows", str(size), "--cols", str(size),
           "--seed", str(seed), "--priority", priority]
    if description:
        cmd += ["--description", description]
    if patients:
        cmd += ["--patients", str(patients)]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    if p.returncode != 0:
        raise RuntimeError("gen_study: %s" % p.stderr.decode())
    out = []
    for line in p.stdout.decode().splitlines():
        uid, accession, patient, count, size_ = line.split()
        out.append({"uid": uid, "accession": accession, "patient": patient,
                    "files": sorted(glob.glob(os.path.join(outdir, uid, "*", "*.dcm")))})
    return out


def storescu(port, ae, files, timeout=600):
    """Send files from AE title `ae`; returns (status, output)."""
    cmd = ["storescu", "-aet", ae, "-aec", "TELERAD", "127.0.0.1", str(port)] + list(files)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                       env=dcmtk_env())
    return p.returncode, p.stdout.decode("utf-8", "replace")


def description_of(path):
    import pydicom
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return str(ds.get("StudyDescription", "")), str(ds.get("RequestedProcedurePriority", ""))


# ---- the catalog of the scenario --------------------------------------------------------------

def sites():
    return [
        {"id": "tx-general", "name": "TX General", "jurisdiction": "US-TX",
         "timezone": "America/Chicago", "ae_titles": ["TXGEN", "TXGEN_CT"], "region": "US",
         "results": {"hl7": "mllp://127.0.0.1:2575"}},
        {"id": "london-royal", "name": "London Royal Infirmary", "jurisdiction": "GB-ENG",
         "timezone": "Europe/London", "ae_titles": ["LONROYAL"], "region": "EU",
         "pseudonymize_outside": "EU"},
        {"id": "gz-first", "name": "Guangzhou First People's Hospital", "jurisdiction": "CN-GD",
         "timezone": "Asia/Shanghai", "ae_titles": ["GZFIRST"], "region": "CN"},
    ]


def contracts(now, gz_hours=True):
    out = [
        {"site": "tx-general", "sla_minutes": {"STAT": 30, "URGENT": 60, "ROUTINE": 1440},
         "subspecialty_rules": [{"modality": "MR", "body_part": "BRAIN",
                                 "subspecialty": "neuro"}], "price_per_read": 45},
        {"site": "london-royal", "sla_minutes": {"STAT": 45, "URGENT": 120, "ROUTINE": 2880},
         "price_per_read": 38},
        {"site": "gz-first", "sla_minutes": {"STAT": 30, "URGENT": 90, "ROUTINE": 1440},
         "price_per_read": 30},
    ]
    if gz_hours:
        # Covered every day except the three hours around now (Shanghai time): studies sent
        # now start their clock when coverage resumes, two hours from now.
        out[2]["hours"] = {"start": hhmm_in("Asia/Shanghai", now + 2 * 3600),
                           "end": hhmm_in("Asia/Shanghai", now - 3600)}
    return out


def weekly_shift(zone, t, from_h, to_h):
    """A shift every day from t+from_h to t+to_h hours, in the zone's local time."""
    return {"days": DAYS, "start": hhmm_in(zone, t + from_h * 3600),
            "end": hhmm_in(zone, t + to_h * 3600)}


def readers(now):
    valid = date_in("UTC", now, 700)
    expired = date_in("UTC", now, -10)
    return [
        {"id": "dr-lee", "name": "Dr Jordan Lee", "status": "online",
         "timezone": "America/Chicago",
         "licenses": [{"jurisdiction": "US-TX", "expires": valid}],
         "privileges": [{"site": "tx-general", "expires": valid}],
         "subspecialties": ["neuro"], "max_open": 10, "rvu_target": 12},
        {"id": "dr-patel", "name": "Dr Asha Patel", "status": "online",
         "timezone": "Europe/London",
         "licenses": [{"jurisdiction": "GB-ENG", "expires": valid},
                      {"jurisdiction": "US-TX", "expires": valid}],
         "privileges": [{"site": "london-royal", "expires": valid},
                        {"site": "tx-general", "expires": valid}],
         "subspecialties": ["body", "chest"], "max_open": 10, "rvu_target": 10},
        # One expired license (US-TX) and one expired privilege (london-royal).
        {"id": "dr-garcia", "name": "Dr Maria Garcia", "status": "online",
         "timezone": "America/Chicago",
         "licenses": [{"jurisdiction": "US-TX", "expires": expired},
                      {"jurisdiction": "GB-ENG", "expires": valid}],
         "privileges": [{"site": "tx-general", "expires": valid},
                        {"site": "london-royal", "expires": expired}],
         "subspecialties": ["chest"], "max_open": 10},
        # Offline, but inside a shift now (Shanghai time).
        {"id": "dr-chen", "name": "Dr Wei Chen", "status": "offline", "timezone": "Asia/Shanghai",
         "licenses": [{"jurisdiction": "CN-GD", "expires": valid}],
         "privileges": [{"site": "gz-first", "expires": valid}],
         "subspecialties": ["body", "neuro"], "max_open": 10,
         "shifts": [weekly_shift("Asia/Shanghai", now, -2, 3)]},
        # Offline and outside its shifts (London time).
        {"id": "dr-okafor", "name": "Dr Chidi Okafor", "status": "offline",
         "timezone": "Europe/London",
         "licenses": [{"jurisdiction": "GB-ENG", "expires": valid}],
         "privileges": [{"site": "london-royal", "expires": valid}],
         "subspecialties": ["neuro", "msk"], "max_open": 6,
         "shifts": [weekly_shift("Europe/London", now, 4, 6),
                    {"start": datetime.datetime.fromtimestamp(now + 86400, datetime.timezone.utc)
                     .strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "end": datetime.datetime.fromtimestamp(now + 90000, datetime.timezone.utc)
                     .strftime("%Y-%m-%dT%H:%M:%SZ")}]},
    ]


def create_catalog(ck, srv, now, gz_hours=True, extra_readers=()):
    ok = True
    for s in sites():
        st, body = srv.api("POST", "/api/v1/sites", s)
        ok &= st == 201
    for k in contracts(now, gz_hours):
        st, body = srv.api("POST", "/api/v1/contracts", k)
        ok &= st == 201
        if st != 201:
            log("contract %s: %s %s" % (k["site"], st, body))
    for r in list(readers(now)) + list(extra_readers):
        st, body = srv.api("POST", "/api/v1/readers", r)
        ok &= st == 201
        if st != 201:
            log("reader %s: %s %s" % (r["id"], st, body))
    ck.check(ok, "3 sites, 3 contracts and %d readers created through the API (201)" %
             (5 + len(extra_readers)))
    return ok


def catalog_of(srv):
    return ({s["id"]: s for s in srv.get("/api/v1/sites")},
            {r["id"]: r for r in srv.get("/api/v1/readers")},
            {k["site"]: k for k in srv.get("/api/v1/contracts")},
            srv.get("/api/v1/priority-rules"))


def reads_of(srv, query=""):
    out = []
    offset = 0
    while True:
        page = srv.get("/api/v1/reads?limit=1000&offset=%d%s" % (offset, query))
        out += page
        if len(page) < 1000:
            return out
        offset += 1000


def open_counts(srv):
    counts = {}
    for r in reads_of(srv):
        if r["state"] in ("assigned", "claimed") and r["assignee"]:
            counts[r["assignee"]] = counts.get(r["assignee"], 0) + 1
    return counts
