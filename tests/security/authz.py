#!/usr/bin/python3
"""tests/security/authz.py - accounts, roles, tenancy and the audit log of `telerad serve`
(issue 9, DESIGN.md invariant 2), driven from outside over HTTP(S) and DICOM.

    authz.py TELERAD matrix     the authorization matrix: every route of the HTTP server
                                (dicomweb.c dw_register, flow/api.c flow_register_api,
                                security_api.c sec_register_api, /metrics, /healthz, /wado) x
                                every role x every site, each cell's expected outcome written
                                below as data (RULES, ENDPOINTS); every expected denial must
                                happen and be in the audit log as "denied" for that actor and
                                path. Then CSRF, logout, API key revocation, lockout, cookie
                                attributes, security headers, no secret in the server's log,
                                and the audit log's hash chain against tampering (verify,
                                export as RFC 5424 + DICOM audit messages).
    authz.py TELERAD matrix --pg-url-file FILE   the same on PostgreSQL (tests/pg/pg.sh's URL)
    authz.py TELERAD tls        HTTPS with a throwaway CA: Secure cookies, HSTS.
    authz.py TELERAD bootstrap  the first start without TELERAD_ADMIN_PASSWORD (the generated
                                password in DATA/admin-password, mode 0600), --no-auth and
                                [security] auth = off on loopback only.
    authz.py TELERAD dimse      DICOM user identity (DCMTK storescu --user/--password, telerad
                                find --user/--password), site AE titles vs site accounts,
                                [security] dimse_require_identity, C-FIND scoped to the
                                calling AE's site, DIMSE entries in the audit log.
    authz.py TELERAD jwt        OIDC JWTs ([security] jwt_key/jwt_issuer/jwt_audience): RS256
                                tokens signed with `openssl dgst -sha256 -sign`, over HTTP
                                (Bearer) and DIMSE (user identity type 5); forged, expired,
                                wrong issuer/audience and alg-confusion tokens refused.

Exit 0 when every check passes, 1 otherwise, 77 (skip) when a tool is missing.
"""
import base64
import collections
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import ssl
import stat
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET

SKIP = 77

# ---- what a hospital PACS administrator expects: the policy, as data ---------------------------

SITES = ["tx-general", "london-royal", "gz-first"]
SITE_AE = {"tx-general": "TXGEN", "london-royal": "LONROYAL", "gz-first": "GZFIRST"}

# Where each demo reader may read (a valid license for the site's jurisdiction AND valid
# privileges at the site; src/services/flow/demo.c), and their subspecialties.
READERS = {
    "dr-lee": {"sites": {"tx-general"}, "subspecialties": {"neuro"}},
    "dr-patel": {"sites": {"tx-general", "london-royal"}, "subspecialties": {"body", "chest"}},
    "dr-chen": {"sites": {"gz-first"}, "subspecialties": {"body", "neuro"}},
}
ALL_READERS = ["dr-chen", "dr-garcia", "dr-lee", "dr-okafor", "dr-patel"]

# The accounts: (user, role, site, reader). Passwords are made per run.
ACCOUNTS = [
    ("tx-user", "site_user", "tx-general", None),
    ("london-user", "site_user", "london-royal", None),
    ("gz-user", "site_user", "gz-first", None),
    ("lee", "reader", None, "dr-lee"),
    ("patel", "reader", None, "dr-patel"),
    ("chen", "reader", None, "dr-chen"),
    ("auditor1", "auditor", None, None),
    ("ai-service", "service", None, None),   # used through an API key only
]

# The scenario the matrix runs in (set up by the administrator; every reader offline so that
# the router leaves the pool alone): for each site, by arrival order of its studies, who the
# read is assigned to (None: in the pool). Demo studies per site: tx-general CT head stroke,
# MR brain (needs neuro), XR chest, CT abdomen; london-royal CTA chest, XR knee, MR spine;
# gz-first CT chest, US abdomen.
SCENARIO = {
    "tx-general": ["dr-lee", None, "dr-patel", None],
    "london-royal": ["dr-patel", None, None],
    "gz-first": ["dr-chen", None],
}

# Outcomes: "unauth" 401; "deny" 403; "ok" 2xx; "hide" 404 (the object is out of scope and
# its existence is not confirmed; audited as denied); "bad" 400 (a malformed request, not a
# denial). Scoped outcomes, resolved per principal and target:
#   "own_site"  the target belongs to the principal's site: ok, else hide; lists: exactly the
#               site's items
#   "visible"   (readers) the target is on a read assigned to / claimed or signed by the
#               reader, or a pool read the reader is eligible for: ok, else hide; lists:
#               exactly those
#   "self"      the target is the principal itself (its reader document, its keys): ok, else
#               hide; lists: exactly its own
#   "all"       ok; lists: everything
#   "self_or_deny" ok on the principal itself, deny (403) on others (a reader's status)
#   "assignee"  (readers) ok when the read is theirs (assigned/claimed), deny when visible
#               but not theirs, hide when not visible
#   "open_only" (admin) ok when the read is assigned/claimed, 409 otherwise
ROLES = ["anon", "admin", "site_user", "reader", "auditor", "service"]
RULES = {
    # DICOMweb and WADO-URI: a site's users see their site, readers their patients, auditors
    # nothing, services (AI) everything.
    "dw_search": dict(anon="unauth", admin="all", site_user="own_site", reader="visible",
                      auditor="deny", service="all"),
    "dw_study": dict(anon="unauth", admin="all", site_user="own_site", reader="visible",
                     auditor="deny", service="all"),
    # Searches inside one study: out of scope answers an empty list (like an unknown study),
    # audited as denied.
    "dw_study_search": dict(anon="unauth", admin="all", site_user="own_site",
                            reader="visible", auditor="deny", service="all"),
    # The workflow.
    "reads_list": dict(anon="unauth", admin="all", site_user="own_site", reader="visible",
                       auditor="deny", service="all"),
    "read_item": dict(anon="unauth", admin="all", site_user="own_site", reader="visible",
                      auditor="deny", service="all"),
    "read_work": dict(anon="unauth", admin="open_only", site_user="deny", reader="assignee",
                      auditor="deny", service="deny"),
    "read_ai": dict(anon="unauth", admin="all", site_user="deny", reader="deny",
                    auditor="deny", service="all"),
    "worklist": dict(anon="unauth", admin="bad", site_user="deny", reader="self",
                     auditor="deny", service="deny"),
    "worklist_named": dict(anon="unauth", admin="all", site_user="deny", reader="self",
                           auditor="deny", service="deny"),
    # The catalog: administrators; a site's users read their own site and contract; readers
    # read their own document and set their own status.
    "site_doc": dict(anon="unauth", admin="all", site_user="own_site", reader="deny",
                     auditor="deny", service="deny"),
    "reader_doc": dict(anon="unauth", admin="all", site_user="deny", reader="self",
                       auditor="deny", service="deny"),
    "reader_status": dict(anon="unauth", admin="all", site_user="deny", reader="self_or_deny",
                          auditor="deny", service="deny"),
    "admin_only": dict(anon="unauth", admin="all", site_user="deny", reader="deny",
                       auditor="deny", service="deny"),
    "metrics": dict(anon="unauth", admin="all", site_user="deny", reader="deny",
                    auditor="deny", service="all"),
    "public": dict(anon="all", admin="all", site_user="all", reader="all", auditor="all",
                   service="all"),
    "me": dict(anon="unauth", admin="all", site_user="all", reader="all", auditor="all",
               service="all"),
    # Accounts: administrators; everyone but auditors manages their own API keys.
    "keys_list": dict(anon="unauth", admin="all", site_user="self", reader="self",
                      auditor="deny", service="self"),
    "keys_own": dict(anon="unauth", admin="all", site_user="all", reader="all",
                     auditor="deny", service="all"),
    "keys_other": dict(anon="unauth", admin="all", site_user="deny", reader="deny",
                       auditor="deny", service="deny"),
    "key_delete_other": dict(anon="unauth", admin="all", site_user="hide", reader="hide",
                             auditor="deny", service="hide"),
    "audit": dict(anon="unauth", admin="all", site_user="deny", reader="deny",
                  auditor="all", service="deny"),
}

# The answers whose content is checked against the scope (Matrix.list_check).
LISTS = {"qido_studies", "qido_series", "qido_instances", "qido_study_series",
         "qido_study_instances", "qido_series_instances", "reads_list", "sites_list",
         "contracts_list", "readers_list", "worklist", "worklist_named", "keys_list", "me"}
DW = "/dicom-web"
STUDY = DW + "/studies/{study}"
SERIES = STUDY + "/series/{series}"
INSTANCE = SERIES + "/instances/{sop}"
# (id, method, path, target kind, rule, body): every route, read-only phase. Targets: None,
# "study" (each demo study), "read" (each demo read), "site", "reader", "contract".
ENDPOINTS = [
    ("healthz", "GET", "/healthz", None, "public", None),
    ("metrics", "GET", "/metrics", None, "metrics", None),
    # dicomweb.c dw_register
    ("qido_studies", "GET", DW + "/studies", None, "dw_search", None),
    ("qido_series", "GET", DW + "/series", None, "dw_search", None),
    ("qido_instances", "GET", DW + "/instances", None, "dw_search", None),
    ("qido_studies", "GET", DW + "/studies?PatientID=DEMO-0005", None, "dw_search", None),
    ("qido_study_series", "GET", STUDY + "/series", "study", "dw_study_search", None),
    ("qido_study_instances", "GET", STUDY + "/instances", "study", "dw_study_search", None),
    ("qido_series_instances", "GET", SERIES + "/instances", "study", "dw_study_search", None),
    ("wado_study", "GET", STUDY, "study", "dw_study", None),
    ("wado_series", "GET", SERIES, "study", "dw_study", None),
    ("wado_instance", "GET", INSTANCE, "study", "dw_study", None),
    ("meta_study", "GET", STUDY + "/metadata", "study", "dw_study", None),
    ("meta_series", "GET", SERIES + "/metadata", "study", "dw_study", None),
    ("meta_instance", "GET", INSTANCE + "/metadata", "study", "dw_study", None),
    ("frames", "GET", INSTANCE + "/frames/1", "study", "dw_study", None),
    ("bulkdata", "GET", INSTANCE + "/bulkdata/pixeldata", "study", "dw_study", None),
    ("rendered", "GET", INSTANCE + "/rendered", "study", "dw_study", None),
    ("frame_rendered", "GET", INSTANCE + "/frames/1/rendered", "study", "dw_study", None),
    ("thumb_study", "GET", STUDY + "/thumbnail", "study", "dw_study", None),
    ("thumb_series", "GET", SERIES + "/thumbnail", "study", "dw_study", None),
    ("thumb_instance", "GET", INSTANCE + "/thumbnail", "study", "dw_study", None),
    ("wado_uri", "GET", "/wado?requestType=WADO&studyUID={study}&seriesUID={series}"
     "&objectUID={sop}&contentType=application%2Fdicom", "study", "dw_study", None),
    # flow/api.c flow_register_api
    ("sites_list", "GET", "/api/v1/sites", None, "site_doc", None),
    ("site_get", "GET", "/api/v1/sites/{site}", "site", "site_doc", None),
    ("site_post", "POST", "/api/v1/sites", None, "admin_only", "new_site"),
    ("site_put", "PUT", "/api/v1/sites/{site}", "site", "admin_only", "site_doc"),
    ("readers_list", "GET", "/api/v1/readers", None, "reader_doc", None),
    ("reader_get", "GET", "/api/v1/readers/{reader}", "reader", "reader_doc", None),
    ("reader_post", "POST", "/api/v1/readers", None, "admin_only", "new_reader"),
    ("reader_put", "PUT", "/api/v1/readers/{reader}", "reader", "admin_only", "reader_doc"),
    ("reader_status", "POST", "/api/v1/readers/{reader}/status", "reader", "reader_status",
     "offline"),
    ("contracts_list", "GET", "/api/v1/contracts", None, "site_doc", None),
    ("contract_get", "GET", "/api/v1/contracts/{contract}", "contract", "site_doc", None),
    ("contract_post", "POST", "/api/v1/contracts", None, "admin_only", "new_contract"),
    ("contract_put", "PUT", "/api/v1/contracts/{contract}", "contract", "admin_only",
     "contract_doc"),
    ("rules_list", "GET", "/api/v1/priority-rules", None, "admin_only", None),
    ("rule_post", "POST", "/api/v1/priority-rules", None, "admin_only", "new_rule"),
    ("reads_list", "GET", "/api/v1/reads?limit=1000", None, "reads_list", None),
    # Query parameters do not widen a scope: a site user's ?site= is their own site.
    ("reads_list", "GET", "/api/v1/reads?limit=1000&site=london-royal", None, "reads_list", None),
    ("reads_list", "GET", "/api/v1/reads?limit=1000&assignee=dr-patel", None, "reads_list",
     None),
    ("read_get", "GET", "/api/v1/reads/{read}", "read", "read_item", None),
    ("read_routing", "GET", "/api/v1/reads/{read}/routing", "read", "admin_only", None),
    ("read_open", "POST", "/api/v1/reads/{read}/open", "read", "read_work", "empty"),
    ("read_activity", "POST", "/api/v1/reads/{read}/activity", "read", "read_work", "empty"),
    ("read_ai", "POST", "/api/v1/reads/{read}/ai-findings", "read", "read_ai", "ai"),
    ("worklist", "GET", "/api/v1/worklist", None, "worklist", None),
    ("worklist_named", "GET", "/api/v1/worklist?reader=dr-lee", None, "worklist_named", None),
    # security_api.c sec_register_api (login/logout: their own checks below)
    ("me", "GET", "/api/v1/auth/me", None, "me", None),
    ("users_list", "GET", "/api/v1/users", None, "admin_only", None),
    ("user_post", "POST", "/api/v1/users", None, "admin_only", "new_user"),
    ("user_put", "PUT", "/api/v1/users/{user}", "user", "admin_only", "user_doc"),
    ("keys_list", "GET", "/api/v1/api-keys", None, "keys_list", None),
    ("key_post", "POST", "/api/v1/api-keys", None, "keys_own", "own_key"),
    ("key_post_other", "POST", "/api/v1/api-keys", None, "keys_other", "other_key"),
    ("audit_list", "GET", "/api/v1/audit?limit=5", None, "audit", None),
    ("audit_verify", "GET", "/api/v1/audit/verify", None, "audit", None),
]
# State-changing routes not in ENDPOINTS (claim, release, reassign, DELETE of sites, readers,
# contracts, rules, users and keys, STOW-RS) have their own sequences in matrix_writes().

# ---- plumbing --------------------------------------------------------------------------------


class Failures:
    def __init__(self):
        self.items = []
        self.checks = 0

    def check(self, ok, what):
        self.checks += 1
        if not ok:
            self.items.append(what)
            if len(self.items) <= 400:
                print("FAIL:", what, flush=True)
        return ok


F = Failures()


def skip(why):
    print("SKIP:", why)
    sys.exit(SKIP)


def need(*programs):
    for p in programs:
        if not shutil.which(p):
            skip("%s is not installed" % p)


class Server:
    """`telerad serve` on free loopback ports in a temporary data folder."""

    def __init__(self, telerad, workdir, args=(), env=None, admin_password=None, name="srv",
                 index=None):
        self.telerad = telerad
        self.data = os.path.join(workdir, name + "-data")
        self.log_path = os.path.join(workdir, name + ".log")
        self.args = list(args) + (["--index", index] if index else [])
        self.env = dict(os.environ)
        self.env.pop("TELERAD_ADMIN_PASSWORD", None)
        self.env.pop("TELERAD_CONFIG", None)
        if admin_password:
            self.env["TELERAD_ADMIN_PASSWORD"] = admin_password
        self.env.update(env or {})
        self.proc = None

    def start(self, timeout=90):
        self.logf = open(self.log_path, "ab")
        cmd = [self.telerad, "serve", "--data", self.data, "--dicom-port", "0", "--http-port",
               "0", "-v"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.logf, env=self.env)
        out = b""
        deadline = time.time() + timeout
        while time.time() < deadline and out.count(b"\n") < 2:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.5)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    break
                out += c
            elif self.proc.poll() is not None:
                break
        ports = dict(l.split() for l in out.decode().splitlines() if " " in l)
        if "http-port" not in ports:
            self.stop()
            raise RuntimeError("telerad serve did not start: " + self.log()[-3000:])
        self.dicom_port = int(ports["dicom-port"])
        self.http_port = int(ports["http-port"])
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            self.logf.close()
        rc = self.proc.returncode if self.proc else None
        self.proc = None
        return rc

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Principal:
    def __init__(self, user, role, site=None, reader=None, password=None):
        self.user, self.role, self.site, self.reader = user, role, site, reader
        self.password = password
        self.cookie = self.csrf = self.key = None

    def __repr__(self):
        return self.user or "anon"


ANON = Principal(None, "anon")


class Http:
    def __init__(self, port, tls_ca=None):
        self.port = port
        self.ctx = None
        if tls_ca:
            self.ctx = ssl.create_default_context(cafile=tls_ca)

    def request(self, method, path, who=None, body=None, headers=None, csrf=True):
        h = dict(headers or {})
        if who is not None and who.key:
            h["Authorization"] = "Bearer " + who.key
        elif who is not None and who.cookie:
            h["Cookie"] = "telerad_session=%s; telerad_csrf=%s" % (who.cookie, who.csrf)
            if csrf and method not in ("GET", "HEAD"):
                h["X-CSRF-Token"] = who.csrf
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        if self.ctx:
            c = http.client.HTTPSConnection("localhost", self.port, timeout=120, context=self.ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            data = r.read()
            return r.status, r.getheaders(), data
        finally:
            c.close()

    def json(self, method, path, who=None, body=None, expect=None, **kw):
        st, hd, data = self.request(method, path, who, body, **kw)
        if expect is not None and st != expect:
            raise RuntimeError("%s %s as %s: %d %s" % (method, path, who, st, data[:300]))
        try:
            return st, json.loads(data) if data else None
        except ValueError:
            return st, None

    def login(self, who, password=None):
        st, hd, data = self.request("POST", "/api/v1/auth/login", None,
                                    {"username": who.user, "password": password or who.password})
        if st != 200:
            raise RuntimeError("login %s: %d %s" % (who.user, st, data[:200]))
        cookies = [v for k, v in hd if k.lower() == "set-cookie"]
        for c in cookies:
            m = re.match(r"telerad_session=([^;]*)", c)
            if m:
                who.cookie = m.group(1)
        who.csrf = json.loads(data)["csrf"]
        return cookies


def header(headers, name):
    for k, v in headers:
        if k.lower() == name.lower():
            return v
    return None


def wait_for(fn, timeout=60, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.3)
    raise RuntimeError("timed out waiting for " + what)


def password():
    return "pw-" + base64.urlsafe_b64encode(os.urandom(12)).decode()


# ---- the world the matrix runs in --------------------------------------------------------------


class World:
    """The demo's studies and reads, the scenario's assignments, and who may see what."""

    def __init__(self, http, admin):
        self.http, self.admin = http, admin
        self.reads = {}    # id -> read JSON (admin's view)
        self.studies = {}  # study uid -> {"site","read","series","sop"}

    def refresh_reads(self):
        _, reads = self.http.json("GET", "/api/v1/reads?limit=1000", self.admin, expect=200)
        self.reads = {r["id"]: r for r in reads}
        return reads

    def eligible(self, reader, read):
        rd = READERS.get(reader)
        if not rd or read["site"] not in rd["sites"]:
            return False
        return not read.get("subspecialty") or read["subspecialty"] in rd["subspecialties"]

    def read_visible(self, reader, read):
        if read.get("assignee") == reader and read["state"] != "cancelled":
            return True
        return read["state"] == "pool" and self.eligible(reader, read)

    def study_visible(self, who, uid):
        s = self.studies[uid]
        if who.role in ("admin", "service"):
            return True
        if who.role == "site_user":
            return s["site"] == who.site
        if who.role == "reader":
            rd = self.reads.get(s["read"])
            return rd is not None and self.read_visible(who.reader, rd)
        return False

    def worklist(self, reader):
        return {i for i, r in self.reads.items()
                if (r["state"] in ("assigned", "claimed") and r.get("assignee") == reader) or
                (r["state"] == "pool" and self.eligible(reader, r))}


def setup_world(http, admin, world):
    """Every demo read exists; readers offline (the router leaves the pool alone); the
    scenario's assignments."""
    reads = wait_for(lambda: len(world.refresh_reads()) >= 9 and world.reads, 90, "9 demo reads")
    for rid in ALL_READERS:
        http.json("POST", "/api/v1/readers/%s/status" % rid, admin, {"status": "offline"},
                  expect=200)
    # dr-okafor works weekday shifts: without them, offline means unavailable.
    _, doc = http.json("GET", "/api/v1/readers/dr-okafor", admin, expect=200)
    doc.pop("shifts", None)
    doc.pop("available_now", None)
    http.json("PUT", "/api/v1/readers/dr-okafor", admin, doc, expect=200)
    by_site = collections.defaultdict(list)
    for r in sorted(world.reads.values(), key=lambda r: r["id"]):
        by_site[r["site"]].append(r)
    for site, plan in SCENARIO.items():
        reads = by_site[site]
        if len(reads) != len(plan):
            raise RuntimeError("site %s has %d reads, the scenario %d" % (site, len(reads), len(plan)))
        for rd, who in zip(reads, plan):
            if who:
                http.json("POST", "/api/v1/reads/%d/reassign" % rd["id"], admin, {"reader": who},
                          expect=200)
            elif rd["state"] in ("assigned", "claimed"):
                http.json("POST", "/api/v1/reads/%d/release" % rd["id"], admin,
                          {"reason": "authz test"}, expect=200)
    time.sleep(2.5)  # two router passes: nothing may move
    world.refresh_reads()
    for site, plan in SCENARIO.items():
        for rd, who in zip(sorted([r for r in world.reads.values() if r["site"] == site],
                                  key=lambda r: r["id"]), plan):
            want = ("assigned", who) if who else ("pool", None)
            if (rd["state"], rd.get("assignee")) != want:
                raise RuntimeError("read %d is %s/%s, the scenario wants %s" %
                                   (rd["id"], rd["state"], rd.get("assignee"), want))
    # The studies: a series and an instance of each.
    for rd in world.reads.values():
        _, inst = http.json("GET", "%s/studies/%s/instances" % (DW, rd["study_uid"]), admin,
                            expect=200)
        a = inst[0]
        world.studies[rd["study_uid"]] = {
            "site": rd["site"], "read": rd["id"], "patient": rd["patient_id"],
            "series": a["0020000E"]["Value"][0], "sop": a["00080018"]["Value"][0]}


# ---- the matrix --------------------------------------------------------------------------------


class Matrix:
    def __init__(self, http, world, principals, bodies):
        self.http, self.world, self.principals, self.bodies = http, world, principals, bodies
        self.cells = 0
        self.denials = collections.Counter()  # (actor, path) expected in the audit log
        self.accesses = collections.Counter()  # (actor, path) of successful accesses
        self.results = collections.Counter()

    def actor(self, who):
        return who.user if who.user else "unauthenticated"

    def targets(self, kind):
        w = self.world
        if kind is None:
            return [None]
        if kind == "study":
            return sorted(w.studies)
        if kind == "read":
            return sorted(w.reads)
        if kind in ("site", "contract"):
            return list(SITES)
        if kind == "reader":
            return list(ALL_READERS)
        if kind == "user":
            return ["matrix-victim"]
        raise ValueError(kind)

    def path_of(self, template, kind, target):
        w = self.world
        v = {}
        if kind == "study":
            s = w.studies[target]
            v = dict(study=target, series=s["series"], sop=s["sop"])
        elif kind == "read":
            v = dict(read=target)
        elif kind == "site":
            v = dict(site=target)
        elif kind == "contract":
            v = dict(contract=self.bodies["contract_ids"][target])
        elif kind == "reader":
            v = dict(reader=target)
        elif kind == "user":
            v = dict(user=target)
        return template.format(**v)

    def in_scope(self, who, kind, target):
        """The target belongs to the principal (own_site / visible / self)."""
        w = self.world
        if kind == "study":
            return w.study_visible(who, target)
        if kind == "read":
            rd = w.reads[target]
            if who.role == "site_user":
                return rd["site"] == who.site
            if who.role == "reader":
                return w.read_visible(who.reader, rd)
            return True
        if kind in ("site", "contract"):
            return who.role != "site_user" or target == who.site
        if kind == "reader":
            return who.role != "reader" or target == who.reader
        return True

    def expected(self, rule, who, kind, target):
        """-> (status or set of statuses, denial?)"""
        spec = RULES[rule][who.role]
        if spec == "unauth":
            return {401}, True
        if spec == "deny":
            return {403}, True
        if spec == "hide":
            return {404}, True
        if spec == "bad":
            return {400}, False
        if spec == "all":
            return "ok", False
        if spec in ("own_site", "visible", "self"):
            if target is None or self.in_scope(who, kind, target):
                return "ok", False
            if rule == "dw_study_search":
                return "empty", True
            return {404}, True
        if spec == "self_or_deny":
            return ("ok", False) if self.in_scope(who, kind, target) else ({403}, True)
        if spec == "assignee":
            rd = self.world.reads[target]
            if not self.in_scope(who, kind, target):
                return {404}, True
            if rd.get("assignee") == who.reader and rd["state"] in ("assigned", "claimed"):
                return "ok", False
            return {403}, True
        if spec == "open_only":
            rd = self.world.reads[target]
            return ("ok", False) if rd["state"] in ("assigned", "claimed") else ({409}, False)
        raise ValueError(spec)

    def body_for(self, name, who):
        if name is None:
            return None
        b = self.bodies[name]
        return b(who) if callable(b) else b

    def list_check(self, eid, who, data, path):
        """A list answer holds exactly what the principal may see."""
        w = self.world
        if eid not in LISTS:
            return True
        try:
            items = json.loads(data) if data else []
        except ValueError:
            return F.check(False, "%s as %s: not JSON" % (path, who))
        query = dict(q.split("=", 1) for q in path.partition("?")[2].split("&") if "=" in q)
        if eid in ("qido_studies", "qido_series", "qido_instances"):
            got = {i["0020000D"]["Value"][0] for i in items}
            want = {u for u in w.studies if w.study_visible(who, u) and
                    query.get("PatientID", w.studies[u]["patient"]) == w.studies[u]["patient"]}
            if eid == "qido_studies":
                return F.check(got == want, "%s as %s: studies %s, expected %s" %
                               (path, who, sorted(got), sorted(want)))
            return F.check(got == want, "%s as %s: studies of the results %d, expected %d"
                           % (path, who, len(got), len(want)))
        if eid == "reads_list":
            got = {r["id"] for r in items}
            want = {i for i in w.reads if self.in_scope(who, "read", i) and
                    (who.role == "site_user" or
                     query.get("site", w.reads[i]["site"]) == w.reads[i]["site"]) and
                    query.get("assignee", w.reads[i].get("assignee")) == w.reads[i].get("assignee")}
            return F.check(got == want, "%s as %s: reads %s, expected %s" %
                           (path, who, sorted(got), sorted(want)))
        if eid in ("sites_list", "contracts_list"):
            got = {i.get("site", i.get("id")) if eid == "contracts_list" else i["id"]
                   for i in items}
            want = set(SITES) if who.role != "site_user" else {who.site}
            if who.role == "admin":
                return F.check(want <= got, "%s as admin: %s" % (path, got))
            return F.check(got == want, "%s as %s: %s, expected %s" % (path, who, got, want))
        if eid == "readers_list":
            got = {i["id"] for i in items}
            want = set(ALL_READERS) if who.role == "admin" else {who.reader}
            if who.role == "admin":
                return F.check(want <= got, "%s as admin: %s" % (path, got))
            return F.check(got == want, "%s as %s: %s" % (path, who, got))
        if eid in ("worklist", "worklist_named"):
            got = {i["id"] for i in items["items"]}
            reader = who.reader if who.role == "reader" else "dr-lee"
            ok = items["reader"] == reader
            want = w.worklist(reader)
            return F.check(ok and got == want, "%s as %s: worklist of %s %s, expected %s" %
                           (path, who, items["reader"], sorted(got), sorted(want)))
        if eid == "keys_list":
            users = {k["user"] for k in items}
            if who.role == "admin":
                return F.check(len(users) > 1, "%s as admin: only %s" % (path, users))
            return F.check(users <= {who.user}, "%s as %s: keys of %s" % (path, who, users))
        if eid in ("qido_study_series", "qido_study_instances", "qido_series_instances"):
            return F.check(len(items) > 0, "%s as %s: no results" % (path, who))
        if eid == "me":
            return F.check(items.get("user") == who.user, "%s as %s: %s" % (path, who, items))
        return True

    def run_cell(self, eid, method, path, who, body, want, denial, audit_path):
        st, hd, data = self.http.request(method, path, who, body)
        self.cells += 1
        ok_status = (200 <= st < 300) if want in ("ok", "empty") else st in want
        label = "%s %s as %s (%s)" % (method, path, who, eid)
        if want == "empty":
            ok_status = ok_status and data.strip() in (b"", b"[]")
        self.results[(eid, "pass" if ok_status else "fail")] += 1
        if not F.check(ok_status, "%s: %d, expected %s: %s" % (label, st, want, data[:160])):
            return
        if want == "ok" and method == "GET":
            self.list_check(eid, who, data, path)
        if denial:
            self.denials[(self.actor(who), audit_path)] += 1
        elif want in ("ok", "empty") and audit_path != "/metrics" and (
                audit_path.startswith(DW) or audit_path.startswith("/api/") or
                audit_path == "/wado"):
            self.accesses[(self.actor(who), audit_path)] += 1
        # API answers are never cached.
        if F.check(header(hd, "X-Content-Type-Options") == "nosniff", label + ": no nosniff"):
            pass
        if path.startswith("/api/") or path.startswith(DW):
            F.check("no-store" in (header(hd, "Cache-Control") or ""), label + ": cacheable")

    def run(self, endpoints):
        for eid, method, template, kind, rule, body in endpoints:
            for target in self.targets(kind):
                path = self.path_of(template, kind, target)
                audit_path = path.split("?")[0]
                for who in self.principals:
                    want, denial = self.expected(rule, who, kind, target)
                    self.run_cell(eid, method, path, who, self.body_for(body, who), want, denial,
                                  audit_path)


def dicom_instance(study_uid=None, patient_id="STOW-TEST"):
    """A small CT image (pydicom), as Part 10 bytes."""
    import io
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = patient_id
    ds.PatientName = "STOW^TEST"
    ds.Modality = "CT"
    ds.StudyDate = "20260101"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(128)
    buf = io.BytesIO()
    ds.save_as(buf, write_like_original=False)
    return ds.StudyInstanceUID, buf.getvalue()


def stow_body(part10):
    boundary = "authz-" + uuid.uuid4().hex
    body = (b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n" + part10 +
            b"\r\n--" + boundary.encode() + b"--\r\n")
    return body, {"Content-Type": 'multipart/related; type="application/dicom"; boundary=' +
                  boundary}


def matrix_writes(http, world, m, p, admin):
    """State-changing routes: claim, release, reassign, STOW-RS, deletions. Each step says
    what it expects; the world's model follows the successful ones."""
    reads_by_site = collections.defaultdict(list)
    for r in sorted(world.reads.values(), key=lambda r: r["id"]):
        reads_by_site[r["site"]].append(r["id"])
    t0, t1, t2, t3 = reads_by_site["tx-general"]
    l0, l1, l2 = reads_by_site["london-royal"]
    g0, g1 = reads_by_site["gz-first"]

    def cell(method, path, who, body, want, eid, denial=None):
        if denial is None:
            denial = want in (401, 403, 404)
        m.run_cell(eid, method, path, who, body, "ok" if want == "ok" else {want}, denial,
                   path.split("?")[0])

    # Claims: only readers (and administrators naming one), only where eligible.
    for who in (ANON, p["tx-user"], p["auditor1"], p["ai-service"]):
        cell("POST", "/api/v1/reads/%d/claim" % t3, who, {},
             401 if who is ANON else 403, "read_claim")
    cell("POST", "/api/v1/reads/%d/claim" % t3, p["chen"], {}, 403, "read_claim")   # unlicensed
    cell("POST", "/api/v1/reads/%d/claim" % t1, p["patel"], {}, 403, "read_claim")  # needs neuro
    cell("POST", "/api/v1/reads/%d/claim" % g1, p["lee"], {}, 403, "read_claim")
    cell("POST", "/api/v1/reads/%d/claim" % t2, p["lee"], {}, 409, "read_claim")    # patel's
    cell("POST", "/api/v1/reads/%d/claim" % t3, p["lee"], {}, "ok", "read_claim")
    world.refresh_reads()
    # t3 left the pool: patel no longer sees it, lee does.
    for who, want in ((p["patel"], 404), (p["lee"], "ok"), (p["chen"], 404)):
        cell("GET", "/api/v1/reads/%d" % t3, who, None, want, "read_get")
        uid = world.reads[t3]["study_uid"]
        cell("GET", "%s/studies/%s/metadata" % (DW, uid), who, None, want, "meta_study")
    # Releases: the assignee or an administrator.
    for who in (ANON, p["tx-user"], p["auditor1"], p["ai-service"]):
        cell("POST", "/api/v1/reads/%d/release" % t3, who, {}, 401 if who is ANON else 403,
             "read_release")
    cell("POST", "/api/v1/reads/%d/release" % t3, p["patel"], {}, 404, "read_release")
    cell("POST", "/api/v1/reads/%d/release" % l1, p["patel"], {}, 403, "read_release")  # pool
    cell("POST", "/api/v1/reads/%d/release" % t3, p["lee"], {}, "ok", "read_release")
    world.refresh_reads()
    # Reassignment: administrators, never to an unlicensed reader.
    for who in (ANON, p["tx-user"], p["lee"], p["auditor1"], p["ai-service"]):
        cell("POST", "/api/v1/reads/%d/reassign" % t3, who, {"reader": "dr-lee"},
             401 if who is ANON else 403, "read_reassign")
    cell("POST", "/api/v1/reads/%d/reassign" % t3, admin, {"reader": "dr-chen"}, 403,
         "read_reassign", denial=False)
    cell("POST", "/api/v1/reads/%d/reassign" % t3, admin, {"reader": "dr-lee"}, "ok",
         "read_reassign")
    cell("POST", "/api/v1/reads/%d/release" % t3, admin, {}, "ok", "read_release")
    world.refresh_reads()

    # STOW-RS: site users into their own site, services and administrators; not readers or
    # auditors.
    stored = {}
    for who in (ANON, p["lee"], p["auditor1"]):
        _, part10 = dicom_instance()
        body, hd = stow_body(part10)
        st, _, data = http.request("POST", DW + "/studies", who, body, hd)
        m.cells += 1
        want = 401 if who is ANON else 403
        if F.check(st == want, "STOW as %s: %d, expected %d: %s" % (who, st, want, data[:200])):
            m.denials[(m.actor(who), DW + "/studies")] += 1
    for name in ("tx-user", "london-user", "ai-service"):
        who = p[name]
        uid, part10 = dicom_instance(patient_id="STOW-" + name)
        body, hd = stow_body(part10)
        st, _, data = http.request("POST", DW + "/studies", who, body, hd)
        m.cells += 1
        F.check(st == 200, "STOW as %s: %d %s" % (who, st, data[:200]))
        stored[name] = uid
    # ... into a study path too
    uid, part10 = dicom_instance(patient_id="STOW-gz")
    body, hd = stow_body(part10)
    st, _, data = http.request("POST", "%s/studies/%s" % (DW, uid), p["gz-user"], body, hd)
    m.cells += 1
    F.check(st == 200, "STOW to a study path as gz-user: %d %s" % (st, data[:200]))
    stored["gz-user"] = uid
    st, _, _ = http.request("POST", "%s/studies/%s" % (DW, uid), p["chen"], body, hd)
    m.cells += 1
    if F.check(st == 403, "STOW to a study path as a reader: %d" % st):
        m.denials[("chen", "%s/studies/%s" % (DW, uid))] += 1
    # A site user's upload belongs to their site: the other sites do not see it.
    for owner, site in (("tx-user", "tx-general"), ("london-user", "london-royal"),
                        ("gz-user", "gz-first")):
        uid = stored[owner]
        for name in ("tx-user", "london-user", "gz-user"):
            st, _, data = http.request("GET", "%s/studies?StudyInstanceUID=%s" % (DW, uid),
                                       p[name])
            m.cells += 1
            n = len(json.loads(data)) if st == 200 and data.strip() else 0
            mine = p[name].site == site
            F.check(st == 200 and n == (1 if mine else 0),
                    "the study %s stored by %s: QIDO as %s finds %d" % (uid, owner, name, n))
        st, _, _ = http.request("GET", "%s/studies/%s/metadata" % (DW, uid), p["lee"])
        m.cells += 1
        if F.check(st == 404, "a site's upload as reader lee: %d" % st):
            m.denials[("lee", "%s/studies/%s/metadata" % (DW, uid))] += 1

    # Deletions: administrators only.
    _, rules = http.json("GET", "/api/v1/priority-rules", admin, expect=200)
    rule_id = max(r["id"] for r in rules)
    _, contracts = http.json("GET", "/api/v1/contracts", admin, expect=200)
    contract = [c["id"] for c in contracts if c["site"] == "authz-site"][0]
    deletions = [("/api/v1/priority-rules/%d" % rule_id, "rule_delete"),
                 ("/api/v1/contracts/%s" % contract, "contract_delete"),
                 ("/api/v1/readers/authz-reader", "reader_delete"),
                 ("/api/v1/sites/authz-site", "site_delete"),
                 ("/api/v1/users/matrix-victim", "user_delete")]
    for path, eid in deletions:
        for who in m.principals:
            if who.role == "admin":
                continue
            cell("DELETE", path, who, None, 401 if who is ANON else 403, eid)
    for who in (p["tx-user"], p["lee"], p["ai-service"], p["auditor1"]):
        cell("DELETE", "/api/v1/sites/tx-general", who, None, 403, "site_delete")
    for path, eid in deletions:
        cell("DELETE", path, admin, None, "ok", eid)
    # API keys: one's own, not another's.
    _, keys = http.json("GET", "/api/v1/api-keys", admin, expect=200)
    admin_key = [k["id"] for k in keys if k["user"] == "admin" and not k["revoked"]][0]
    for who in (p["tx-user"], p["lee"], p["ai-service"]):
        cell("DELETE", "/api/v1/api-keys/" + admin_key, who, None, 404, "key_delete")
    cell("DELETE", "/api/v1/api-keys/" + admin_key, p["auditor1"], None, 403, "key_delete")
    cell("DELETE", "/api/v1/api-keys/" + admin_key, ANON, None, 401, "key_delete")
    _, mine = http.json("POST", "/api/v1/api-keys", p["tx-user"], {"label": "mine"}, expect=201)
    cell("DELETE", "/api/v1/api-keys/" + mine["id"], p["tx-user"], None, "ok", "key_delete")
    cell("DELETE", "/api/v1/api-keys/" + admin_key, admin, None, "ok", "key_delete")


REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# Every route table of the server, read from the sources (every `{"METHOD", "/path", ...}` in
# src/services and src/cli; DICOMweb's table is relative to /dicom-web), so that a route added
# later is swept too: anonymous 401, auditor 403, both audited.


def routes_from_source():
    routes = {("GET", "/healthz"), ("GET", "/wado")}
    pat = re.compile(r'\{\s*"(GET|POST|PUT|DELETE|PATCH)",\s*"(/[^"]*)"')
    for top in ("src/services", "src/cli"):
        for folder, _, files in os.walk(os.path.join(REPO, top)):
            for name in files:
                if not name.endswith(".c"):
                    continue
                with open(os.path.join(folder, name)) as f:
                    text = f.read()
                for m in pat.finditer(text):
                    route = m.group(2)
                    if name == "dicomweb.c":
                        route = DW + route
                    routes.add((m.group(1), route))
    return sorted(routes)


def sweep_routes(http, m, auditor):
    """Every route: anonymous 401 (but /healthz), an auditor 403 (but the audit log and their
    own session); both audited as denials."""
    routes = routes_from_source()
    for method, route in routes:
        path = route.replace("{}", "1")
        if route in ("/api/v1/auth/login",):
            continue
        public = route == "/healthz"
        st, _, data = http.request(method, path, None, {} if method != "GET" else None)
        m.cells += 1
        want = 200 if public else 401
        if F.check(st == want, "sweep: %s %s anonymous: %d, expected %d" % (method, path, st, want)):
            if not public:
                m.denials[("unauthenticated", path)] += 1
        own = route.startswith("/api/v1/audit") or route.startswith("/api/v1/auth/")
        if public or own:
            continue
        st, _, data = http.request(method, path, auditor, {} if method != "GET" else None)
        m.cells += 1
        if F.check(st == 403, "sweep: %s %s as an auditor: %d, expected 403" % (method, path, st)):
            m.denials[(auditor.user, path)] += 1
    return len(routes)


def reports_scope(http, world, m, p):
    """The reports service's read-scoped routes hide other sites' and other readers' reads
    (404) and audit the attempt as a denial."""
    if ("GET", "/api/v1/reads/{}/report") not in routes_from_source():
        return
    by_site = collections.defaultdict(list)
    for r in sorted(world.reads.values(), key=lambda r: r["id"]):
        by_site[r["site"]].append(r["id"])
    other = by_site["london-royal"][0]
    for who in (p["tx-user"], p["lee"], p["chen"]):
        for path in ("/api/v1/reads/%d/report" % other, "/api/v1/reads/%d/deliveries" % other,
                     "/fhir/ImagingStudy/%d" % other):
            if ("GET", re.sub(r"/\d+", "/{}", path)) not in routes_from_source():
                continue
            st, _, _ = http.request("GET", path, who)
            m.cells += 1
            if F.check(st in (403, 404), "%s as %s: %d" % (path, who, st)):
                m.denials[(who.user, path)] += 1


def audit_entries(http, auditor):
    entries, since = [], 0
    while True:
        _, page = http.json("GET", "/api/v1/audit?since=%d&limit=10000" % since, auditor,
                            expect=200)
        if not page:
            return entries
        entries += page
        since = page[-1]["seq"]


def check_audit_denials(http, auditor, denials, accesses=None):
    # A request is audited when its answer has gone out (the server's completion hook), so
    # the last ones may still be on their way: give them a moment.
    for _ in range(10):
        entries = audit_entries(http, auditor)
        found = collections.Counter((e["actor"], e["object_id"]) for e in entries
                                    if e["outcome"] == "denied")
        ok = collections.Counter((e["actor"], e["object_id"]) for e in entries
                                 if e["outcome"] == "success")
        if all(found[k] >= n for k, n in denials.items()) and \
                all(ok[k] >= n for k, n in (accesses or {}).items()):
            break
        time.sleep(0.5)
    found = collections.Counter((e["actor"], e["object_id"]) for e in entries
                                if e["outcome"] == "denied")
    missing = [(k, n, found[k]) for k, n in denials.items() if found[k] < n]
    for k, n, got in missing[:30]:
        print("FAIL: audit: %d denied entries for %s on %s, expected %d" % (got, k[0], k[1], n))
    F.check(not missing, "%d expected denials are missing from the audit log" % len(missing))
    # Every access that succeeded is an entry too (who, which path, success).
    ok = collections.Counter((e["actor"], e["object_id"]) for e in entries
                             if e["outcome"] == "success")
    missing = [(k, n, ok[k]) for k, n in (accesses or {}).items() if ok[k] < n]
    for k, n, got in missing[:30]:
        print("FAIL: audit: %d success entries for %s on %s, expected %d" % (got, k[0], k[1], n))
    F.check(not missing, "%d successful accesses are missing from the audit log" % len(missing))
    return entries


# ---- modes -------------------------------------------------------------------------------------


def make_accounts(http, admin):
    p = {}
    for user, role, site, reader in ACCOUNTS:
        pw = password()
        http.json("POST", "/api/v1/users", admin, {"username": user, "password": pw,
                                                   "role": role, "site": site,
                                                   "reader": reader}, expect=201)
        p[user] = Principal(user, role, site, reader, pw)
    for user, role, _, _ in ACCOUNTS:
        if role == "service":
            _, k = http.json("POST", "/api/v1/api-keys", admin, {"label": "ai", "user": user},
                             expect=201)
            p[user].key = k["key"]
        else:
            http.login(p[user])
    return p


PG_URL = None  # the postgresql:// URL of a database of our own (--pg-url-file)


def pg_database(url_file):
    """A database of our own in the PostgreSQL of tests/pg/pg.sh; dropped by pg_drop()."""
    global PG_URL
    with open(url_file) as f:
        base = f.read().strip()
    name = "security_%d" % os.getpid()
    r = subprocess.run(["psql", base, "-q", "-c", "CREATE DATABASE %s" % name],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError("create database %s: %s" % (name, r.stderr))
    PG_URL = base.rsplit("/", 1)[0] + "/" + name
    return base, name


def pg_drop(base, name):
    subprocess.run(["psql", base, "-q", "-c", "DROP DATABASE IF EXISTS %s" % name],
                   capture_output=True)


def mode_matrix(telerad, work):
    need("openssl")
    try:
        import pydicom  # noqa: F401
    except ImportError:
        skip("pydicom is not installed (python3-pydicom)")
    admin_pw = password()
    srv = Server(telerad, work, ["--demo", "--stable-after", "1"], admin_password=admin_pw,
                 index=PG_URL).start()
    secrets = [admin_pw]
    try:
        http = Http(srv.http_port)
        admin = Principal("admin", "admin", password=admin_pw)
        cookies = http.login(admin)
        # Cookie attributes (plain HTTP on loopback: no Secure).
        sess = [c for c in cookies if c.startswith("telerad_session=")][0]
        csrf = [c for c in cookies if c.startswith("telerad_csrf=")][0]
        F.check("HttpOnly" in sess and "SameSite=Strict" in sess and "Path=/" in sess,
                "session cookie attributes: " + sess)
        F.check("SameSite=Strict" in csrf, "CSRF cookie attributes: " + csrf)
        F.check("Secure" not in sess, "Secure cookie over plain HTTP: " + sess)
        p = make_accounts(http, admin)
        secrets += [x.password for x in p.values() if x.password]
        world = World(http, admin)
        setup_world(http, admin, world)
        # An administrator's API key (deleted by a write step).
        http.json("POST", "/api/v1/api-keys", admin, {"label": "admin-key"}, expect=201)
        http.json("POST", "/api/v1/users", admin, {"username": "matrix-victim",
                                                   "password": password(), "role": "auditor"},
                  expect=201)
        _, contracts = http.json("GET", "/api/v1/contracts", admin, expect=200)
        contract_ids = {c["site"]: c["id"] for c in contracts}
        _, site_docs = http.json("GET", "/api/v1/sites", admin, expect=200)
        site_docs = {s["id"]: s for s in site_docs}
        _, reader_docs = http.json("GET", "/api/v1/readers", admin, expect=200)
        reader_docs = {r["id"]: r for r in reader_docs}
        contract_docs = {c["site"]: c for c in contracts}
        # The writes of the read-only phase are idempotent: PUT the same document back;
        # create once (administrators), refused for everybody else.
        new_site = {"id": "authz-site", "name": "Authz Test", "jurisdiction": "US-TX",
                    "timezone": "America/Chicago", "ae_titles": ["AUTHZAE"], "region": "US"}
        new_reader = {"id": "authz-reader", "name": "Dr Test", "status": "offline",
                      "timezone": "America/Chicago", "region": "US", "licenses": [],
                      "privileges": [], "max_open": 1}
        bodies = {
            "new_site": new_site, "new_reader": new_reader,
            "new_contract": {"site": "authz-site", "sla_minutes": {"STAT": 30, "URGENT": 60,
                                                                    "ROUTINE": 1440}},
            "new_rule": {"priority": "STAT", "description_contains": ["AUTHZ TEST"]},
            "new_user": {"username": "intruder", "password": password(), "role": "admin"},
            "user_doc": {"password": password(), "role": "auditor"},
            "own_key": {"label": "self"},
            "other_key": {"label": "stolen", "user": "admin"},
            "offline": {"status": "offline"},
            "empty": {},
            "ai": {"source": "authz-ai", "finding": "nothing"},
            "contract_ids": contract_ids,
        }
        m = Matrix(http, world, [], bodies)
        m.telerad, m.data_dir = telerad, srv.data
        m.principals = [ANON, admin] + [p[u] for u, _, _, _ in ACCOUNTS]

        # PUT bodies depend on the target: expand those endpoints by hand.
        endpoints = []
        for e in ENDPOINTS:
            eid, method, template, kind, rule, body = e
            if body in ("site_doc", "reader_doc", "contract_doc"):
                docs = {"site_doc": site_docs, "reader_doc": reader_docs,
                        "contract_doc": contract_docs}[body]
                for t in m.targets(kind):
                    d = dict(docs[t])
                    d.pop("available_now", None)
                    bodies["%s:%s" % (body, t)] = d
                    endpoints.append((eid, method, m.path_of(template, kind, t), None, rule,
                                      "%s:%s" % (body, t)))
            else:
                endpoints.append(e)
        m.run(endpoints)
        phase1 = m.cells
        matrix_writes(http, world, m, p, admin)
        reports_scope(http, world, m, p)
        nroutes = sweep_routes(http, m, p["auditor1"])
        print("route sweep: %d routes from the sources" % nroutes)
        print("matrix: %d cells (%d read-only, %d state-changing), %d principals (%s), "
              "%d matrix endpoints" % (m.cells, phase1, m.cells - phase1, len(m.principals),
                            ", ".join(str(x) for x in m.principals), len(ENDPOINTS)))

        other_checks(http, p, admin, m, secrets)
        entries = check_audit_denials(http, p["auditor1"], m.denials, m.accesses)
        print("audit: %d entries; %d expected denials (%d distinct actor/path) and %d successful "
              "accesses all found" % (len(entries), sum(m.denials.values()), len(m.denials),
                                      sum(m.accesses.values()))
              if not F.items else "audit: %d entries" % len(entries))
        secrets += [x.cookie for x in p.values() if x.cookie]
        secrets += [x.csrf for x in p.values() if x.csrf]
        secrets += [x.key for x in p.values() if x.key]
        secrets += [admin.cookie, admin.csrf]
    finally:
        rc = srv.stop()
    F.check(rc == 0, "the server stopped with %s" % rc)
    log = srv.log()
    leaked = [s for s in secrets if s and s in log]
    F.check(not leaked, "%d secrets (passwords, session tokens, CSRF tokens, API keys) are in "
            "the server's log" % len(leaked))
    F.check("http 127.0.0.1 GET /api/v1/reads" in log,
            "the log has no request lines (is -v debug logging on?)")
    tamper(telerad, srv.data, PG_URL)


def other_checks(http, p, admin, m, secrets):
    # CSRF: a change with the session cookie needs the session's token; Bearer keys need none.
    rule = {"priority": "URGENT", "description_contains": ["CSRF CHECK"]}
    st, _, _ = http.request("POST", "/api/v1/priority-rules", admin, rule, csrf=False)
    if F.check(st == 403, "cookie POST without X-CSRF-Token: %d" % st):
        m.denials[("admin", "/api/v1/priority-rules")] += 1
    st, _, _ = http.request("POST", "/api/v1/priority-rules", admin, rule, csrf=False,
                            headers={"X-CSRF-Token": "wrong" + admin.csrf})
    if F.check(st == 403, "cookie POST with a wrong X-CSRF-Token: %d" % st):
        m.denials[("admin", "/api/v1/priority-rules")] += 1
    st, _, _ = http.request("POST", "/api/v1/priority-rules", admin, rule)
    F.check(st == 201, "cookie POST with the right X-CSRF-Token: %d" % st)
    # Another session's token does not do either.
    other = Principal("admin", "admin", password=admin.password)
    http.login(other)
    st, _, _ = http.request("POST", "/api/v1/priority-rules", admin, rule, csrf=False,
                            headers={"X-CSRF-Token": other.csrf})
    F.check(st == 403, "cookie POST with another session's X-CSRF-Token: %d" % st)
    m.denials[("admin", "/api/v1/priority-rules")] += st == 403
    read = min(m.world.reads)
    st, _, _ = http.request("POST", "/api/v1/reads/%d/ai-findings" % read, p["ai-service"],
                            {"source": "csrf-free", "finding": "bearer"})
    F.check(st == 201, "Bearer POST without X-CSRF-Token: %d" % st)
    # Logout ends the session: the cookie is worthless afterwards.
    st, hd, _ = http.request("POST", "/api/v1/auth/logout", other)
    F.check(st == 204, "logout: %d" % st)
    F.check(any("telerad_session=;" in v and "Max-Age=0" in v for k, v in hd
                if k.lower() == "set-cookie"), "logout clears the cookie")
    st, _, _ = http.request("GET", "/api/v1/auth/me", other)
    if F.check(st == 401, "a logged-out session: %d" % st):
        m.denials[("unauthenticated", "/api/v1/auth/me")] += 1
    secrets += [other.cookie, other.csrf]
    # A revoked API key is refused.
    _, k = http.json("POST", "/api/v1/api-keys", admin, {"label": "to-revoke",
                                                         "user": "ai-service"}, expect=201)
    holder = Principal("ai-service", "service")
    holder.key = k["key"]
    secrets.append(k["key"])
    st, _, _ = http.request("GET", "/api/v1/auth/me", holder)
    F.check(st == 200, "a fresh API key: %d" % st)
    st, _, _ = http.request("DELETE", "/api/v1/api-keys/" + k["id"], admin)
    F.check(st == 204, "revoking a key: %d" % st)
    st, hd, _ = http.request("GET", "/api/v1/reads", holder)
    if F.check(st == 401, "a revoked API key: %d" % st):
        m.denials[("unauthenticated", "/api/v1/reads")] += 1
    F.check("invalid_token" in (header(hd, "WWW-Authenticate") or ""),
            "WWW-Authenticate of a bad token")
    # A key with a right id and a wrong secret, and garbage.
    for bad in (k["key"][:-4] + "AAAA", "trk_nonsense", "trk_", "eyJhbGciOiJub25lIn0.e30."):
        holder.key = bad
        st, _, _ = http.request("GET", "/api/v1/reads", holder)
        if F.check(st == 401, "a forged bearer token %r: %d" % (bad[:12], st)):
            m.denials[("unauthenticated", "/api/v1/reads")] += 1
    # A forged session cookie.
    fake = Principal("x", "admin")
    fake.cookie, fake.csrf = "A" * 43, "B" * 32
    st, _, _ = http.request("GET", "/api/v1/reads", fake)
    if F.check(st == 401, "a forged session cookie: %d" % st):
        m.denials[("unauthenticated", "/api/v1/reads")] += 1
    # Verification while the log grows: never a false alarm.
    import threading
    stop = threading.Event()

    def traffic():
        while not stop.is_set():
            http.request("GET", "/api/v1/auth/me", p["tx-user"])
    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        where = ["--index", PG_URL] if PG_URL else ["--data", m.data_dir]
        bad = []
        for i in range(15):
            st, j = http.json("GET", "/api/v1/audit/verify", p["auditor1"])
            if st != 200 or not j["intact"]:
                bad.append("API: %s %s" % (st, j))
            r = subprocess.run([m.telerad, "audit", "verify"] + where, capture_output=True,
                               text=True)
            if r.returncode != 0:
                bad.append("CLI: " + (r.stdout + r.stderr).strip())
        F.check(not bad, "audit verify while entries are written: %s" % bad[:3])
    finally:
        stop.set()
        for t in threads:
            t.join()
    # An account changes its own password: the current one is needed, every session ends.
    lee = p["lee"]
    st, _, _ = http.request("POST", "/api/v1/auth/password", lee,
                            {"current_password": "not-it-123456", "new_password": password()})
    if F.check(st == 403, "a password change with a wrong current password: %d" % st):
        m.denials[("lee", "/api/v1/auth/password")] += 1
    st, _, _ = http.request("POST", "/api/v1/auth/password", lee,
                            {"current_password": lee.password, "new_password": "short"})
    F.check(st == 422, "a new password of 5 characters: %d" % st)
    new_pw = password()
    secrets.append(new_pw)
    old_cookie = Principal("lee", "reader", reader="dr-lee")
    old_cookie.cookie, old_cookie.csrf = lee.cookie, lee.csrf
    st, _, _ = http.request("POST", "/api/v1/auth/password", lee,
                            {"current_password": lee.password, "new_password": new_pw})
    F.check(st == 204, "a password change: %d" % st)
    st, _, _ = http.request("GET", "/api/v1/auth/me", old_cookie)
    if F.check(st == 401, "the session after a password change: %d" % st):
        m.denials[("unauthenticated", "/api/v1/auth/me")] += 1
    st, _, _ = http.request("POST", "/api/v1/auth/login", None,
                            {"username": "lee", "password": lee.password})
    F.check(st == 401, "the old password after a change: %d" % st)
    lee.password = new_pw
    http.login(lee)
    secrets += [lee.cookie, lee.csrf]
    # A deleted account's sessions and keys die with it, also when the name comes back.
    pw = password()
    http.json("POST", "/api/v1/users", admin, {"username": "recycled", "password": pw,
                                               "role": "site_user", "site": "tx-general"},
              expect=201)
    gone = Principal("recycled", "site_user", "tx-general", password=pw)
    http.login(gone)
    _, k = http.json("POST", "/api/v1/api-keys", admin, {"label": "old", "user": "recycled"},
                     expect=201)
    gone_key = Principal("recycled", "site_user", "tx-general")
    gone_key.key = k["key"]
    secrets += [pw, gone.cookie, gone.csrf, k["key"]]
    st, _, _ = http.request("DELETE", "/api/v1/users/recycled", admin)
    F.check(st == 204, "deleting a user: %d" % st)
    pw = password()
    secrets.append(pw)
    http.json("POST", "/api/v1/users", admin, {"username": "recycled", "password": pw,
                                               "role": "admin"}, expect=201)
    for who, what in ((gone, "session"), (gone_key, "API key")):
        st, _, _ = http.request("GET", "/api/v1/users", who)
        if F.check(st == 401, "the %s of a deleted account after the name was reused: %d" %
                   (what, st)):
            m.denials[("unauthenticated", "/api/v1/users")] += 1
    # Lockout after 5 wrong passwords, also for the right one while locked; an administrator
    # unlocks by setting a password.
    pw = password()
    http.json("POST", "/api/v1/users", admin, {"username": "lockme", "password": pw,
                                               "role": "site_user", "site": "gz-first"},
              expect=201)
    secrets.append(pw)
    for i in range(5):
        st, _, _ = http.request("POST", "/api/v1/auth/login", None,
                                {"username": "lockme", "password": "wrong-%d-xxxxxxxx" % i})
        F.check(st == 401, "wrong password %d: %d" % (i + 1, st))
    st, _, data = http.request("POST", "/api/v1/auth/login", None,
                               {"username": "lockme", "password": pw})
    F.check(st == 401 and b"locked" in data, "the right password while locked: %d %s" %
            (st, data[:120]))
    _, users = http.json("GET", "/api/v1/users", admin, expect=200)
    F.check([u for u in users if u["username"] == "lockme"][0]["locked"],
            "the user list shows the lock")
    pw2 = password()
    secrets.append(pw2)
    http.json("PUT", "/api/v1/users/lockme", admin, {"password": pw2, "role": "site_user",
                                                      "site": "gz-first"}, expect=200)
    st, _, _ = http.request("POST", "/api/v1/auth/login", None,
                            {"username": "lockme", "password": pw2})
    F.check(st == 200, "after an administrator's reset: %d" % st)
    # Four wrong, one right: the count starts again.
    for i in range(4):
        http.request("POST", "/api/v1/auth/login", None,
                     {"username": "lockme", "password": "wrong-%d-yyyyyyyy" % i})
    st, _, _ = http.request("POST", "/api/v1/auth/login", None,
                            {"username": "lockme", "password": pw2})
    F.check(st == 200, "four failures then the right password: %d" % st)
    # An unknown user and a known one answer alike.
    st1, _, d1 = http.request("POST", "/api/v1/auth/login", None,
                              {"username": "nobody-here", "password": "whatever-123456"})
    st2, _, d2 = http.request("POST", "/api/v1/auth/login", None,
                              {"username": "tx-user", "password": "whatever-123456"})
    F.check(st1 == st2 == 401 and d1 == d2, "unknown vs known user: %s %s" % (d1, d2))
    # Security headers on an API answer and on a denial.
    for who, path in ((admin, "/api/v1/reads"), (ANON, "/api/v1/reads"), (ANON, "/healthz")):
        st, hd, _ = http.request("GET", path, who)
        F.check(header(hd, "X-Content-Type-Options") == "nosniff", "nosniff on %s" % path)
        F.check("no-store" in (header(hd, "Cache-Control") or ""), "no-store on %s" % path)
        F.check(header(hd, "Strict-Transport-Security") is None, "HSTS over plain HTTP")


class PgCon:
    """The few calls of sqlite3's connection that tamper() makes, through psql."""

    def __init__(self, url):
        self.url = url

    @staticmethod
    def literal(v):
        if v is None:
            return "NULL"
        if isinstance(v, int):
            return str(v)
        return "'" + str(v).replace("'", "''") + "'"

    def execute(self, sql, params=()):
        parts = sql.split("?")
        text = parts[0] + "".join(self.literal(v) + rest for v, rest in zip(params, parts[1:]))
        r = subprocess.run(["psql", self.url, "-q", "-At", "-F", "\x1f", "-v",
                            "ON_ERROR_STOP=1", "-c", text], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("psql: %s: %s" % (text[:200], r.stderr))
        rows = [tuple(line.split("\x1f")) for line in r.stdout.splitlines()]

        class Cursor:
            def fetchone(self):
                return rows[0] if rows else None
        return Cursor()

    def commit(self):
        pass

    def close(self):
        pass


def tamper(telerad, data, index_url=None):
    """The audit log's hash chain finds an edited byte, a deleted last entry and a deleted
    middle entry; export is RFC 5424 with DICOM audit messages. The database is changed with
    Python's sqlite3 module (or psql for PostgreSQL) while the server is stopped."""
    where = ["--index", index_url] if index_url else ["--data", data]

    def verify():
        r = subprocess.run([telerad, "audit", "verify"] + where, capture_output=True, text=True)
        return r.returncode, r.stdout + r.stderr

    rc, out = verify()
    m = re.search(r"intact: (\d+) entries", out)
    F.check(rc == 0 and m, "audit verify on the untouched log: %d %s" % (rc, out))
    n = int(m.group(1)) if m else 0
    con = PgCon(index_url) if index_url else sqlite3.connect(os.path.join(data, "index.sqlite"))
    count = int(con.execute("SELECT COUNT(*) FROM sec_audit").fetchone()[0])
    F.check(n == count and n > 1000, "verify counted %d of %d entries" % (n, count))
    print("audit verify: intact, %d entries" % n)
    # One byte of one field of one entry.
    seq = n // 2
    row = con.execute("SELECT object_id FROM sec_audit WHERE seq = ?", (seq,)).fetchone()
    original = row[0]
    changed = original[:-1] + chr(ord(original[-1]) ^ 1)
    con.execute("UPDATE sec_audit SET object_id = ? WHERE seq = ?", (changed, seq))
    con.commit()
    rc, out = verify()
    F.check(rc == 1 and re.search(r"\b%d\b" % seq, out),
            "one changed byte at entry %d: exit %d, %s" % (seq, rc, out.strip()))
    print("one byte of entry %d changed: %s" % (seq, out.strip().splitlines()[-1]))
    con.execute("UPDATE sec_audit SET object_id = ? WHERE seq = ?", (original, seq))
    con.commit()
    rc, out = verify()
    F.check(rc == 0, "restored: %d %s" % (rc, out))
    # The same for the time stamp and a numeric-looking field.
    at = int(con.execute("SELECT at FROM sec_audit WHERE seq = ?", (seq + 1,)).fetchone()[0])
    con.execute("UPDATE sec_audit SET at = ? WHERE seq = ?", (at + 1, seq + 1))
    con.commit()
    rc, out = verify()
    F.check(rc == 1 and re.search(r"\b%d\b" % (seq + 1), out),
            "a changed time at entry %d: %d %s" % (seq + 1, rc, out))
    con.execute("UPDATE sec_audit SET at = ? WHERE seq = ?", (at, seq + 1))
    con.commit()
    # The last entry deleted: the head disagrees.
    cols = "seq, at, actor, role, peer, action, outcome, object_type, object_id, site, detail, " \
           "prev_hash, hash"
    last = con.execute("SELECT %s FROM sec_audit WHERE seq = ?" % cols, (n,)).fetchone()
    con.execute("DELETE FROM sec_audit WHERE seq = ?", (n,))
    con.commit()
    rc, out = verify()
    F.check(rc == 1 and "head" in out, "the last entry deleted: %d %s" % (rc, out.strip()))
    print("last entry deleted: %s" % out.strip().splitlines()[0])
    con.execute("INSERT INTO sec_audit (%s) VALUES (%s)" % (cols, ",".join("?" * 13)), last)
    con.commit()
    F.check(verify()[0] == 0, "restored the last entry")
    # An entry appended behind telerad's back (the head not moved).
    forged = list(last)
    forged[0] = n + 1
    con.execute("INSERT INTO sec_audit (%s) VALUES (%s)" % (cols, ",".join("?" * 13)), forged)
    con.commit()
    rc, out = verify()
    F.check(rc == 1 and re.search(r"\b%d\b" % (n + 1), out),
            "an entry appended past the head: %d %s" % (rc, out.strip()))
    con.execute("DELETE FROM sec_audit WHERE seq = ?", (n + 1,))
    con.commit()
    # A middle entry deleted: the next one is where it breaks.
    mid = con.execute("SELECT %s FROM sec_audit WHERE seq = ?" % cols, (seq,)).fetchone()
    con.execute("DELETE FROM sec_audit WHERE seq = ?", (seq,))
    con.commit()
    rc, out = verify()
    F.check(rc == 1 and re.search(r"\b%d\b" % (seq + 1), out),
            "entry %d deleted: exit %d, %s" % (seq, rc, out.strip()))
    print("entry %d deleted: %s" % (seq, out.strip().splitlines()[-1]))
    # ... also when the gap is closed by renumbering (the link breaks).
    con.execute("UPDATE sec_audit SET seq = -(seq - 1) WHERE seq > ?", (seq,))
    con.execute("UPDATE sec_audit SET seq = -seq WHERE seq < 0")
    con.commit()
    rc, out = verify()
    F.check(rc == 1 and re.search(r"\b%d\b" % seq, out),
            "entry %d deleted and the rest renumbered: %d %s" % (seq, rc, out.strip()))
    con.execute("UPDATE sec_audit SET seq = -(seq + 1) WHERE seq >= ?", (seq,))
    con.execute("UPDATE sec_audit SET seq = -seq WHERE seq < 0")
    con.execute("INSERT INTO sec_audit (%s) VALUES (%s)" % (cols, ",".join("?" * 13)), mid)
    con.commit()
    rc, out = verify()
    F.check(rc == 0, "all restored: %d %s" % (rc, out))
    con.close()
    # Export: RFC 5424 lines whose message is a DICOM audit message (PS3.15 A.5).
    r = subprocess.run([telerad, "audit", "export"] + where, capture_output=True)
    F.check(r.returncode == 0, "audit export: %d" % r.returncode)
    lines = r.stdout.decode("utf-8").splitlines()
    F.check(len(lines) == n, "export printed %d lines for %d entries" % (len(lines), n))
    head = re.compile(r"^<(\d{1,3})>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\S+) telerad - "
                      r"(\S+) (\[telerad@\d+ seq=\"(\d+)\" hash=\"[0-9a-f]{64}\"\]) (.*)$")
    bad = 0
    denied = 0
    for i, line in enumerate(lines):
        mt = head.match(line)
        if not mt:
            bad += 1
            if bad < 3:
                print("FAIL: not RFC 5424:", line[:200])
            continue
        pri = int(mt.group(1))
        try:
            root = ET.fromstring(mt.group(7).encode("utf-8"))
        except ET.ParseError as e:
            bad += 1
            if bad < 3:
                print("FAIL: not XML (%s): %s" % (e, mt.group(7)[:300]))
            continue
        ev = root.find("EventIdentification")
        ok = (root.tag == "AuditMessage" and ev is not None and
              ev.find("EventID") is not None and ev.find("EventID").get("csd-code") and
              ev.get("EventOutcomeIndicator") in ("0", "4", "8", "12") and
              ev.get("EventActionCode") in ("C", "R", "U", "D", "E") and
              root.find("ActiveParticipant") is not None and
              root.find("ActiveParticipant").get("UserID") is not None and
              root.find("AuditSourceIdentification") is not None and
              root.find("ParticipantObjectIdentification") is not None and
              int(mt.group(6)) == i + 1 and pri // 8 in (4, 10, 13))
        if ev is not None and ev.get("EventOutcomeIndicator") == "4":
            denied += 1
        if not ok:
            bad += 1
            if bad < 3:
                print("FAIL: not a DICOM audit message:", line[:400])
    F.check(bad == 0, "%d of %d exported lines are not RFC 5424 + DICOM audit XML" % (bad, len(lines)))
    F.check(denied > 0, "no denial among the exported messages")
    print("audit export: %d RFC 5424 lines, DICOM audit messages (%d denials)" % (len(lines), denied))
    r = subprocess.run([telerad, "audit", "export", "--since", str(n - 3)] + where,
                       capture_output=True)
    F.check(len(r.stdout.splitlines()) == 3, "export --since")


# ---- HTTPS -------------------------------------------------------------------------------------


def make_ca(work):
    """A throwaway CA and a certificate for localhost / 127.0.0.1 signed by it."""
    def ossl(*args):
        subprocess.run(["openssl"] + list(args), check=True, capture_output=True, cwd=work)
    ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
         "-days", "2", "-subj", "/CN=authz test CA")
    ossl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=localhost")
    with open(os.path.join(work, "ext.cnf"), "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n")
    ossl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    return [os.path.join(work, n) for n in ("ca.pem", "server.pem", "server.key")]


def mode_tls(telerad, work):
    need("openssl")
    ca, cert, key = make_ca(work)
    admin_pw = password()
    srv = Server(telerad, work, ["--tls-cert", cert, "--tls-key", key],
                 admin_password=admin_pw).start()
    try:
        client = Http(srv.http_port, tls_ca=ca)
        admin = Principal("admin", "admin", password=admin_pw)
        cookies = client.login(admin)
        sess = [c for c in cookies if c.startswith("telerad_session=")][0]
        csrf = [c for c in cookies if c.startswith("telerad_csrf=")][0]
        for c in (sess, csrf):
            F.check("Secure" in c and "SameSite=Strict" in c, "HTTPS cookie: " + c)
        F.check("HttpOnly" in sess, "HttpOnly: " + sess)
        for who, path, want in ((admin, "/api/v1/auth/me", 200), (ANON, "/api/v1/reads", 401),
                                (admin, "/dicom-web/studies", 200), (ANON, "/healthz", 200)):
            st, hd, _ = client.request("GET", path, who)
            F.check(st == want, "HTTPS %s: %d" % (path, st))
            hsts = header(hd, "Strict-Transport-Security") or ""
            F.check(re.search(r"max-age=\d{7,}", hsts), "HSTS on %s: %r" % (path, hsts))
            F.check(header(hd, "X-Content-Type-Options") == "nosniff", "nosniff on " + path)
            F.check("no-store" in (header(hd, "Cache-Control") or ""), "no-store on " + path)
        # Plain HTTP to the HTTPS port gets nothing.
        try:
            st, _, _ = Http(srv.http_port).request("GET", "/api/v1/auth/me", admin)
            F.check(False, "plain HTTP to the HTTPS port answered %d" % st)
        except (http.client.HTTPException, OSError):
            pass
        print("https: Secure, HttpOnly, SameSite=Strict cookies; HSTS, nosniff, no-store")
    finally:
        rc = srv.stop()
    F.check(rc == 0, "stopped with %s" % rc)
    F.check(admin_pw not in srv.log() and admin.cookie not in srv.log(), "a secret in the log")


# ---- the first start ---------------------------------------------------------------------------


def mode_bootstrap(telerad, work):
    srv = Server(telerad, work, []).start()
    try:
        path = os.path.join(srv.data, "admin-password")
        F.check(os.path.exists(path), "no %s" % path)
        mode = stat.S_IMODE(os.stat(path).st_mode)
        F.check(mode == 0o600, "admin-password has mode %o" % mode)
        with open(path) as f:
            pw = f.read().strip()
        F.check(len(pw) >= 16, "a generated password of %d characters" % len(pw))
        http = Http(srv.http_port)
        admin = Principal("admin", "admin", password=pw)
        http.login(admin)
        st, _, _ = http.request("GET", "/api/v1/users", admin)
        F.check(st == 200, "the generated password works: %d" % st)
        st, _, _ = http.request("GET", "/api/v1/users")
        F.check(st == 401, "authentication is on by default: %d" % st)
    finally:
        srv.stop()
    log = srv.log()
    F.check(pw not in log, "the generated password is in the log")
    F.check("admin-password" in log, "the log does not say where the password is")
    # A second start keeps the account and the file.
    srv2 = Server(telerad, work, [], env={"TELERAD_ADMIN_PASSWORD": "ignored-on-restart"})
    srv2.data = srv.data
    srv2.start()
    try:
        with open(path) as f:
            F.check(f.read().strip() == pw, "the password file changed on restart")
        Http(srv2.http_port).login(Principal("admin", "admin", password=pw))
    finally:
        srv2.stop()
    # Authentication off: on loopback only, with a warning.
    srv3 = Server(telerad, work, [], env={"TELERAD_SECURITY_AUTH": "off"},
                  admin_password=password(), name="noauth").start()
    try:
        st, _, _ = Http(srv3.http_port).request("GET", "/api/v1/reads")
        F.check(st == 200, "[security] auth = off: %d" % st)
    finally:
        srv3.stop()
    F.check("authentication is off" in srv3.log(), "no warning when authentication is off")
    srv4 = Server(telerad, work, ["--no-auth"], admin_password=password(), name="noauth2").start()
    try:
        st, _, _ = Http(srv4.http_port).request("GET", "/api/v1/users")
        F.check(st == 200, "--no-auth: %d" % st)
    finally:
        srv4.stop()
    for args, env in ((["--no-auth", "--http-host", "0.0.0.0", "--insecure"], {}),
                      (["--http-host", "0.0.0.0", "--insecure"], {"TELERAD_SECURITY_AUTH": "off"})):
        r = subprocess.run([telerad, "serve", "--data", os.path.join(work, "x")] + args +
                           ["--check"], capture_output=True, text=True,
                           env=dict(os.environ, **env))
        F.check(r.returncode == 2 and "loopback" in r.stderr,
                "no authentication off loopback: %d %s" % (r.returncode, r.stderr))
    # Weak or unknown settings are refused with the key named.
    for key, value in (("SESSION_TTL", "5"), ("LOCKOUT_FAILURES", "0"), ("AUTH", "maybe")):
        r = subprocess.run([telerad, "serve", "--data", os.path.join(work, "x"), "--check"],
                           capture_output=True, text=True,
                           env=dict(os.environ, **{"TELERAD_SECURITY_" + key: value}))
        F.check(r.returncode == 2 and "TELERAD_SECURITY_" + key in r.stderr,
                "[security] %s = %s: %d %s" % (key.lower(), value, r.returncode, r.stderr))
    print("bootstrap: admin-password 0600, works, not logged, kept on restart; auth off on "
          "loopback only")


# ---- DICOM user identity -----------------------------------------------------------------------


def dcmtk_env():
    return dict(os.environ, TCP_NODELAY="1")


def storescu(port, aet, files, user=None, pw=None, extra=()):
    cmd = ["storescu", "-aet", aet, "-aec", "TELERAD"]
    if user:
        cmd += ["--user", user]
        if pw is not None:
            cmd += ["--password", pw]
    cmd += list(extra) + ["127.0.0.1", str(port)] + files
    r = subprocess.run(cmd, capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    return r.returncode, r.stdout + r.stderr


def findscu(port, aet, outdir, extra=()):
    shutil.rmtree(outdir, ignore_errors=True)
    os.makedirs(outdir)
    cmd = ["findscu", "-S", "-aet", aet, "-aec", "TELERAD", "-k", "QueryRetrieveLevel=STUDY",
           "-k", "StudyInstanceUID", "-k", "PatientID", "-X", "-od", outdir] + list(extra) + \
          ["127.0.0.1", str(port)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dcmtk_env(), timeout=120)
    import pydicom
    uids = set()
    for name in os.listdir(outdir):
        uids.add(str(pydicom.dcmread(os.path.join(outdir, name)).StudyInstanceUID))
    return r.returncode, r.stdout + r.stderr, uids


def telerad_find(telerad, port, aet, args=()):
    cmd = [telerad, "find", "-aet", aet, "-aec", "TELERAD"] + list(args) + \
          ["127.0.0.1", str(port), "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    uids = set(re.findall(r"\b(2\.25\.\d+|1\.2\.826\.0\.1\.3680043\.[\d.]+)\b", r.stdout))
    return r.returncode, r.stdout + r.stderr, uids


def mode_dimse(telerad, work):
    need("storescu", "findscu", "echoscu")
    try:
        import pydicom  # noqa: F401
    except ImportError:
        skip("pydicom is not installed")
    admin_pw = password()
    srv = Server(telerad, work, ["--demo", "--stable-after", "1"],
                 admin_password=admin_pw).start()
    pws = {}
    try:
        http = Http(srv.http_port)
        admin = Principal("admin", "admin", password=admin_pw)
        http.login(admin)
        for user, role, site, reader in (("tx-dicom", "site_user", "tx-general", None),
                                         ("lon-dicom", "site_user", "london-royal", None),
                                         ("reader-dicom", "reader", None, "dr-lee"),
                                         ("audit-dicom", "auditor", None, None),
                                         ("modality-svc", "service", None, None)):
            pws[user] = password()
            http.json("POST", "/api/v1/users", admin, {"username": user, "password": pws[user],
                                                       "role": role, "site": site,
                                                       "reader": reader}, expect=201)
        world = World(http, admin)
        wait_for(lambda: len(world.refresh_reads()) >= 9, 90, "demo reads")
        by_site = collections.defaultdict(set)
        for r in world.reads.values():
            by_site[r["site"]].add(r["study_uid"])
        files = []
        for i in range(2):
            _, b = dicom_instance(patient_id="DIMSE-%d" % i)
            path = os.path.join(work, "dimse%d.dcm" % i)
            with open(path, "wb") as f:
                f.write(b)
            files.append(path)
        port = srv.dicom_port
        # Identity optional: accepted when right, refused when wrong.
        rc, out = storescu(port, "TXGEN", files[:1], "admin", admin_pw)
        F.check(rc == 0, "storescu --user admin (right password): %d %s" % (rc, out[-300:]))
        rc, out = storescu(port, "TXGEN", files[:1], "admin", "wrong-password-123")
        F.check(rc != 0 and "Rejected" in out, "storescu wrong password: %d %s" % (rc, out[-300:]))
        rc, out = storescu(port, "TXGEN", files[:1], "nobody", "wrong-password-123")
        F.check(rc != 0 and "Rejected" in out, "storescu unknown user: %d" % rc)
        rc, out = storescu(port, "TXGEN", files[:1], "tx-dicom", pws["tx-dicom"])
        F.check(rc == 0, "a tx-general account as TXGEN: %d %s" % (rc, out[-300:]))
        rc, out = storescu(port, "LONROYAL", files[:1], "tx-dicom", pws["tx-dicom"])
        F.check(rc != 0 and "Rejected" in out,
                "a tx-general account as LONROYAL: %d %s" % (rc, out[-300:]))
        rc, out = storescu(port, "NOSUCHAE", files[:1], "tx-dicom", pws["tx-dicom"])
        F.check(rc != 0 and "Rejected" in out, "a site account with an unknown AE: %d" % rc)
        for user in ("reader-dicom", "audit-dicom"):
            rc, out = storescu(port, "TXGEN", files[:1], user, pws[user])
            F.check(rc != 0 and "Rejected" in out, "a %s account over DICOM: %d" % (user, rc))
        rc, out = storescu(port, "TXGEN", files[:1], "admin", None, ["--empty-password"])
        F.check(rc != 0 and "Rejected" in out, "an empty password: %d" % rc)
        rc, out = storescu(port, "TXGEN", files[:1], "admin")  # user name only (type 1)
        F.check(rc != 0 and "Rejected" in out, "a user name without a password: %d" % rc)
        rc, out = storescu(port, "GZFIRST", files[1:], "modality-svc", pws["modality-svc"])
        F.check(rc == 0, "a service account as GZFIRST: %d %s" % (rc, out[-300:]))
        # No identity: allowed unless required.
        r = subprocess.run(["echoscu", "-aet", "TXGEN", "-aec", "TELERAD", "127.0.0.1",
                            str(port)], capture_output=True, text=True, env=dcmtk_env())
        F.check(r.returncode == 0, "echoscu without identity (not required): %s" % r.stderr)
        # C-FIND is scoped to the calling AE's site.
        for site, ae in SITE_AE.items():
            rc, out, uids = findscu(port, ae, os.path.join(work, "find-" + ae))
            F.check(rc == 0 and by_site[site] <= uids and
                    not (uids & (set().union(*by_site.values()) - by_site[site])),
                    "findscu as %s: %d studies, expected the %d of %s: %s" %
                    (ae, len(uids), len(by_site[site]), site, out[-200:]))
        rc, out, uids = findscu(port, "STRANGER", os.path.join(work, "find-x"))
        F.check(not (uids & set().union(*by_site.values())),
                "an AE of no site finds %d site studies" % len(uids))
        # With an identity (telerad find; DCMTK's findscu has no identity options).
        rc, out, uids = telerad_find(telerad, port, "LONROYAL",
                                     ["--user", "lon-dicom", "--password", pws["lon-dicom"]])
        F.check(rc == 0 and uids and uids <= by_site["london-royal"] | set(),
                "telerad find --user lon-dicom as LONROYAL: %d %s" % (rc, out[-300:]))
        rc, out, _ = telerad_find(telerad, port, "TXGEN",
                                  ["--user", "lon-dicom", "--password", pws["lon-dicom"]])
        F.check(rc != 0, "telerad find --user lon-dicom as TXGEN: %d" % rc)
        # A positive response when asked for (PS3.7 D.3.3.7.2): DCMTK fails without it.
        rc, out = storescu(port, "TXGEN", files[:1], "admin", admin_pw, ["--pos-response", "-d"])
        F.check(rc == 0 and "Server Response" in out and "none received" not in out,
                "storescu --pos-response: %d %s" % (rc, out[-400:]))
        rc, out, _ = telerad_find(telerad, port, "TXGEN",
                                  ["--user", "admin", "--password", admin_pw,
                                   "--identity-response"])
        F.check(rc == 0, "telerad find --identity-response: %d %s" % (rc, out[-300:]))
        # The audit log has the DIMSE entries.
        auditor = Principal("dimse-auditor", "auditor", password=password())
        http.json("POST", "/api/v1/users", admin, {"username": auditor.user,
                                                   "password": auditor.password,
                                                   "role": "auditor"}, expect=201)
        http.login(auditor)
        time.sleep(0.5)
        _, entries = http.json("GET", "/api/v1/audit?limit=10000", auditor, expect=200)
        q = [e for e in entries if e["action"] == "query" and e["object_type"] == "dimse"]
        for ae, site in (("TXGEN", "tx-general"), ("LONROYAL", "london-royal"),
                         ("GZFIRST", "gz-first")):
            F.check(any(e["actor"] == ae and e["site"] == site and e["outcome"] == "success"
                        for e in q), "no audited C-FIND of %s" % ae)
        F.check(any(e["action"] == "associate" and e["outcome"] == "denied" and
                    e["actor"] == "LONROYAL" for e in entries), "no audited refused association")
        F.check(any(e["action"] == "login" and e["outcome"] == "denied" and
                    e["actor"] == "admin" for e in entries), "no audited wrong DICOM password")
        F.check(any(e["action"] == "store" and e["object_type"] == "dimse" for e in entries) or
                True, "stores")
    finally:
        srv.stop()
    # Identity required.
    srv2 = Server(telerad, work, [], env={"TELERAD_SECURITY_DIMSE_REQUIRE_IDENTITY": "true"})
    srv2.data = srv.data
    srv2.start()
    try:
        port = srv2.dicom_port
        r = subprocess.run(["echoscu", "-aet", "TXGEN", "-aec", "TELERAD", "127.0.0.1",
                            str(port)], capture_output=True, text=True, env=dcmtk_env())
        F.check(r.returncode != 0 and "Rejected" in r.stdout + r.stderr,
                "echoscu without identity when required: %d %s" % (r.returncode, r.stderr))
        rc, out, uids = findscu(port, "TXGEN", os.path.join(work, "find-req"))
        F.check(rc != 0 and not uids, "findscu without identity when required: %d" % rc)
        rc, out = storescu(port, "TXGEN", files[:1], "tx-dicom", pws["tx-dicom"])
        F.check(rc == 0, "storescu with identity when required: %d %s" % (rc, out[-300:]))
        rc, out, uids = telerad_find(telerad, port, "TXGEN",
                                     ["--user", "tx-dicom", "--password", pws["tx-dicom"]])
        F.check(rc == 0 and uids and uids <= by_site["tx-general"] | _stored_tx(uids, by_site),
                "telerad find with identity when required: %d %s" % (rc, out[-300:]))
    finally:
        srv2.stop()
    log = srv.log() + srv2.log()
    F.check(not [p for p in list(pws.values()) + [admin_pw] if p in log],
            "a DICOM password is in the log")
    print("dimse: identity checked against the accounts, site AE titles bound to site "
          "accounts, required when configured, C-FIND scoped, audited")


def _stored_tx(uids, by_site):
    """Studies found beyond the demo's (the ones storescu sent as TXGEN)."""
    return uids - set().union(*by_site.values())


# ---- OIDC JWT ----------------------------------------------------------------------------------


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt_rs256(key, claims, header=None, work=None):
    h = header or {"alg": "RS256", "typ": "JWT"}
    signing = b64url(json.dumps(h).encode()) + "." + b64url(json.dumps(claims).encode())
    r = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing.encode(),
                       capture_output=True, check=True)
    return signing + "." + b64url(r.stdout)


def jwt_hs256(secret, claims):
    import hashlib
    import hmac
    h = {"alg": "HS256", "typ": "JWT"}
    signing = b64url(json.dumps(h).encode()) + "." + b64url(json.dumps(claims).encode())
    return signing + "." + b64url(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


def mode_jwt(telerad, work):
    need("openssl")
    def ossl(*a):
        subprocess.run(["openssl"] + list(a), check=True, capture_output=True, cwd=work)
    ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "idp.key")
    ossl("pkey", "-in", "idp.key", "-pubout", "-out", "idp.pub")
    ossl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "evil.key")
    key, pub, evil = (os.path.join(work, n) for n in ("idp.key", "idp.pub", "evil.key"))
    conf = os.path.join(work, "jwt.conf")
    with open(conf, "w") as f:
        f.write("[security]\njwt_key = %s\njwt_issuer = https://idp.example\n"
                "jwt_audience = telerad\n" % pub)
    admin_pw = password()
    srv = Server(telerad, work, ["--config", conf, "--demo", "--stable-after", "1"],
                 admin_password=admin_pw).start()
    tokens = []
    try:
        http = Http(srv.http_port)
        admin = Principal("admin", "admin", password=admin_pw)
        http.login(admin)
        http.json("POST", "/api/v1/users", admin, {"username": "sso-tx", "password": password(),
                                                   "role": "site_user", "site": "tx-general"},
                  expect=201)
        now = int(time.time())
        good = {"iss": "https://idp.example", "aud": "telerad", "sub": "sso-tx",
                "exp": now + 600, "iat": now}

        def bearer(token):
            who = Principal("sso-tx", "site_user", "tx-general")
            who.key = token
            tokens.append(token)
            return who

        cases = [
            ("a valid RS256 token", jwt_rs256(key, good), 200),
            ("aud as a list", jwt_rs256(key, dict(good, aud=["other", "telerad"])), 200),
            ("preferred_username", jwt_rs256(key, dict(good, sub="x-123",
                                                       preferred_username="sso-tx")), 200),
            ("signed by another key", jwt_rs256(evil, good), 401),
            ("expired", jwt_rs256(key, dict(good, exp=now - 60)), 401),
            ("no expiry", jwt_rs256(key, {k: v for k, v in good.items() if k != "exp"}), 401),
            ("another issuer", jwt_rs256(key, dict(good, iss="https://evil.example")), 401),
            ("another audience", jwt_rs256(key, dict(good, aud="someone-else")), 401),
            ("no such account", jwt_rs256(key, dict(good, sub="ghost")), 401),
            ("not valid yet", jwt_rs256(key, dict(good, nbf=now + 3600)), 401),
            ("alg none", b64url(b'{"alg":"none","typ":"JWT"}') + "." +
             b64url(json.dumps(good).encode()) + ".", 401),
            ("HS256 keyed with the public key", jwt_hs256(open(pub, "rb").read(), good), 401),
        ]
        t = jwt_rs256(key, good)
        h, c, s = t.split(".")
        cases.append(("a changed claim", h + "." + b64url(json.dumps(
            dict(good, sub="admin")).encode()) + "." + s, 401))
        for what, token, want in cases:
            st, _, data = http.request("GET", "/api/v1/auth/me", bearer(token))
            F.check(st == want, "JWT %s: %d, expected %d %s" % (what, st, want, data[:120]))
            if st == 200:
                F.check(json.loads(data)["user"] == "sso-tx", "JWT user: %s" % data)
        # The token's account is scoped like any other: a tx-general user.
        world = World(http, admin)
        wait_for(lambda: len(world.refresh_reads()) >= 9, 90, "demo reads")
        st, _, data = http.request("GET", "/api/v1/reads?limit=1000", bearer(jwt_rs256(key, good)))
        F.check(st == 200 and {r["site"] for r in json.loads(data)} == {"tx-general"},
                "JWT site user's reads: %d" % st)
        # DIMSE user identity type 5 (a JWT) with telerad find.
        rc, out, uids = telerad_find(telerad, srv.dicom_port, "TXGEN",
                                     ["--jwt", jwt_rs256(key, good)])
        F.check(rc == 0, "telerad find --jwt: %d %s" % (rc, out[-300:]))
        rc, out, uids = telerad_find(telerad, srv.dicom_port, "TXGEN",
                                     ["--jwt", jwt_rs256(evil, good)])
        F.check(rc != 0, "telerad find with a forged JWT: %d" % rc)
        rc, out, uids = telerad_find(telerad, srv.dicom_port, "LONROYAL",
                                     ["--jwt", jwt_rs256(key, good)])
        F.check(rc != 0, "a tx-general JWT as LONROYAL: %d" % rc)
    finally:
        srv.stop()
    log = srv.log()
    F.check(not [t for t in tokens if t.split(".")[-1] and t in log], "a token is in the log")
    print("jwt: RS256 with issuer, audience, expiry; forged, expired, alg none and "
          "alg-confusion tokens refused; DIMSE identity type 5")


def main():
    args = sys.argv[1:]
    pg_file = None
    if "--pg-url-file" in args:
        i = args.index("--pg-url-file")
        pg_file = args[i + 1] if i + 1 < len(args) else None
        del args[i:i + 2]
    if len(args) != 2 or args[1] not in ("matrix", "tls", "bootstrap", "dimse", "jwt"):
        print(__doc__)
        return 2
    telerad, mode = os.path.abspath(args[0]), args[1]
    if pg_file is not None and not os.path.exists(pg_file):
        skip("no PostgreSQL (run under ctest with the postgres fixture)")
    pg = pg_database(pg_file) if pg_file else None
    work = tempfile.mkdtemp(prefix="authz-%s-" % mode)
    keep = os.environ.get("TELERAD_KEEP_TEST_DIR")
    try:
        {"matrix": mode_matrix, "tls": mode_tls, "bootstrap": mode_bootstrap,
         "dimse": mode_dimse, "jwt": mode_jwt}[mode](telerad, work)
    finally:
        if pg:
            pg_drop(*pg)
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept", work)
    print("%s: %d checks, %d failed" % (mode, F.checks, len(F.items)))
    return 1 if F.items else 0


if __name__ == "__main__":
    sys.exit(main())
