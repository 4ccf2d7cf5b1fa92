#!/usr/bin/python3
"""orders.py - HL7 v2 orders in: `telerad serve --hl7-port 0` driven over MLLP by
`telerad hl7send` and by a raw-socket MLLP peer written here.

    /usr/bin/python3 tests/hl7/orders.py build/telerad [fuzz/corpus/hl7]

Checks: every message is acknowledged with MSA-2 = its MSH-10 (AA when stored; AE with the
reason and an ERR segment when malformed or missing a required field; AR for an unknown sending
facility, an unsupported type, an over-size message); orders are stored (the SQLite index read
here read-only) with accession, patient, priority, procedure, provider and status; cancel and
status change; placer number first, filler (accession) later; ADT^A08 updates open orders;
ADT^A40 moves orders to the surviving patient; a message split across TCP reads and two in one
read are both handled; an over-size message is refused and the listener goes on; sites come
from the workflow (site id or AE title in MSH-4) and from --site; patient names never reach the
log. When python3-hl7 is installed it parses the corpus too, and the field trees must agree
with `telerad hl7send --dump` (the oracle part is skipped without it).
With TELERAD_TEST_INDEX_URL=postgresql://... the index (and the orders) are in PostgreSQL,
read back with psql. Exit status 0 passed, 1 failed, 77 skipped.
"""
import json
import os
import re
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

VT, FS, CR = b"\x0b", b"\x1c", b"\r"
FAILURES = []
CHECKS = 0


def check(cond, what):
    global CHECKS
    CHECKS += 1
    if not cond:
        FAILURES.append(what)
        print("FAIL:", what, flush=True)


def msg(*segments):
    return ("\r".join(segments) + "\r").encode("utf-8")


def msh(control_id, mtype, facility="TXGEN_HIS", version="2.5.1", extra=""):
    return (f"MSH|^~\\&|HIS|{facility}|TELERAD|TELERAD|20261122103000||{mtype}|{control_id}|P|"
            f"{version}{extra}")


def seg(name, fields):
    """A segment from {field number: value} (the rest empty)."""
    n = max(fields)
    return "|".join([name] + [fields.get(i, "") for i in range(1, n + 1)])


def frame(data):
    return VT + data + FS + CR


class Peer:
    """A raw MLLP client: writes bytes as told, reads whole frames."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_ack(self, timeout=30):
        deadline = time.time() + timeout
        while True:
            start = self.buf.find(VT)
            end = self.buf.find(FS, start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0:
                ack = self.buf[start + 1:end]
                self.buf = self.buf[end + 1:]
                if self.buf.startswith(CR):
                    self.buf = self.buf[1:]
                return ack
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError("no ACK")
            r, _, _ = select.select([self.sock], [], [], left)
            if r:
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("closed")
                self.buf += chunk

    def exchange(self, data):
        self.send_raw(frame(data))
        return parse_ack(self.read_ack())

    def close(self):
        self.sock.close()


def parse_ack(raw):
    """{'MSA': [...fields], 'ERR': [...], 'MSH': [...]} with fields split at '|'."""
    out = {}
    for seg in raw.decode("utf-8", "replace").split("\r"):
        if seg:
            fields = seg.split("|")
            out.setdefault(fields[0], fields)
    return out


def field(seg, n):
    if seg is None:
        return ""
    if seg[0] == "MSH":
        n -= 1  # MSH-1 is the separator itself
    return seg[n] if n < len(seg) else ""


def query(db, sql, *args):
    if db.startswith("postgres"):
        # psql with the arguments inlined (test values only: no quotes in them).
        for a in args:
            sql = sql.replace("?", "'" + str(a).replace("'", "''") + "'", 1)
        r = subprocess.run(["psql", db, "-X", "-At", "-F", "\x1f", "-c", sql],
                           capture_output=True, timeout=60, check=True)
        rows = [tuple(line.split("\x1f")) for line in r.stdout.decode().splitlines()]
        return [tuple(None if v == "" and i == 10 else v for i, v in enumerate(row))
                for row in rows]
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def order(db, accession, site="tx-general"):
    rows = query(db, "SELECT accession, accession_source, placer_number, filler_number, "
                 "patient_id, patient_authority, patient_name, procedure_code, procedure_text, "
                 "modality, priority, priority_code, ordering_provider, status, order_control "
                 "FROM orders WHERE site = ? AND accession = ?", site, accession)
    if not rows:
        return None
    row = list(rows[0])
    if row[10] is not None:
        row[10] = int(row[10])
    rows = [tuple(row)]
    keys = ["accession", "source", "placer", "filler", "patient_id", "authority", "name",
            "code", "text", "modality", "priority", "priority_code", "provider", "status",
            "control"]
    return dict(zip(keys, rows[0]))


def start_server(telerad, tmp, env):
    data = os.path.join(tmp, "data")
    index = os.environ.get("TELERAD_TEST_INDEX_URL")  # PostgreSQL (tests/pg/pg.sh)
    proc = subprocess.Popen(
        [telerad, "serve", "--data", data, "--dicom-port", "0", "--http-port", "0",
         "--hl7-port", "0", "--no-auth", "--stable-after", "3600",
         "--site", "tx-general=TXGEN_HIS,TXGEN"] + (["--index", index] if index else []),
        stdout=subprocess.PIPE, stderr=open(os.path.join(tmp, "serve.log"), "wb"), env=env)
    ports = {}
    deadline = time.time() + 60
    while len(ports) < 3 and time.time() < deadline:
        line = proc.stdout.readline().decode()
        if not line:
            break
        m = re.match(r"(dicom|http|hl7)-port (\d+)", line)
        if m:
            ports[m.group(1)] = int(m.group(2))
    if len(ports) < 3:
        proc.kill()
        print(open(os.path.join(tmp, "serve.log")).read())
        raise RuntimeError("telerad serve did not start")
    return proc, ports, index or os.path.join(data, "index.sqlite")


def hl7send(telerad, port, *files):
    r = subprocess.run([telerad, "hl7send", "127.0.0.1", str(port), *files],
                       capture_output=True, timeout=120)
    return r.returncode, r.stdout.decode(), r.stderr.decode()


def oracle(telerad, corpus):
    """python3-hl7 and telerad must see the same segments and fields."""
    try:
        import hl7  # python3-hl7 (Debian)
    except ImportError:
        print("SKIP (part): python3-hl7 is not installed; the parser is not cross-checked")
        return
    compared = 0
    for name in sorted(os.listdir(corpus)):
        raw = open(os.path.join(corpus, name), "rb").read()
        text = raw.decode("utf-8", "replace")
        if not text.startswith("MSH") or "\ufffd" in text:
            continue  # python-hl7 reads one message from text: no batches, BOMs, Latin-1
        text = text.replace("\r\n", "\r").replace("\n", "\r")
        if text.count("\rMSH") or not name.startswith("seg_"):
            continue
        try:
            theirs = hl7.parse(text)
        except Exception:  # not every seed is for python-hl7
            continue
        r = subprocess.run([telerad, "hl7send", "--dump", os.path.join(corpus, name)],
                           capture_output=True, timeout=60)
        check(r.returncode == 0, f"hl7send --dump {name}: {r.stderr.decode()}")
        ours = {}
        for line in r.stdout.decode("utf-8").splitlines():
            if line.startswith("#"):
                continue
            path, rest = line.split("\t", 1)
            ours[path] = rest.split("\t")[0]
        seen = {}
        for seg in theirs:
            sname = str(seg[0])
            seen[sname] = seen.get(sname, 0) + 1
            for f in range(1, len(seg)):
                path = f"{sname}[{seen[sname]}]-{f}"
                check(ours.get(path) == str(seg[f]),
                      f"{name}: {path}: telerad {ours.get(path)!r}, python-hl7 {str(seg[f])!r}")
            check(f"{sname}[{seen[sname]}]-{len(seg)}" not in ours,
                  f"{name}: {sname}[{seen[sname]}] has more fields in telerad")
        compared += 1
    check(compared >= 8, f"python-hl7 compared only {compared} corpus messages")
    print(f"oracle: python-hl7 agrees on {compared} corpus messages")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    telerad = os.path.abspath(sys.argv[1])
    corpus = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "fuzz", "corpus", "hl7")
    tmp = tempfile.mkdtemp(prefix="telerad-hl7-")
    env = dict(os.environ, TELERAD_HL7_MAX_MESSAGE="65536")
    proc, ports, db = start_server(telerad, tmp, env)
    port = ports["hl7"]
    try:
        run(telerad, tmp, port, ports["http"], db)
        oracle(telerad, corpus)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            FAILURES.append("telerad serve did not stop on SIGTERM")
    log = open(os.path.join(tmp, "serve.log"), encoding="utf-8", errors="replace").read()
    for name in ("DEMO^JANE", "JANE", "HOUSE", "MULLER", "ÉMILE", "QUINN"):
        check(name not in log, f"the log names a person: {name}")
    check(proc.returncode == 0, f"telerad serve exit status {proc.returncode}")
    if FAILURES:
        print(f"{CHECKS - len(FAILURES)} passed, {len(FAILURES)} failed")
        print("server log:\n" + log[-4000:])
        return 1
    print(f"{CHECKS} passed, 0 failed")
    return 0


def run(telerad, tmp, port, http_port, db):
    # 1. hl7send: ORM^O01 new order, ORC-7 priority S, filler number = accession.
    orm_new = os.path.join(tmp, "orm_new.hl7")
    with open(orm_new, "w", newline="\n") as f:  # LF: as an editor saves it
        f.write("\n".join([
            msh("ORM-1", "ORM^O01", version="2.3.1"),
            "PID|1||MRN100^^^TXGEN^MR~555^^^SSA^SS||DEMO^JANE^Q^^MRS||19800101|F",
            "PV1|1|E",
            "ORC|NW|PL-1^HIS|ACC-1^RIS||SC||^^^20261122103000^^S|||||1234^HOUSE^GREGORY",
            seg("OBR", {1: "1", 2: "PL-1^HIS", 3: "ACC-1^RIS",
                        4: "CTHEAD^CT HEAD WO CONTRAST^L", 24: "CT"}),
        ]) + "\n")
    rc, out, err = hl7send(telerad, port, orm_new)
    check(rc == 0 and "ORM-1 AA" in out, f"hl7send ORM: {rc} {out} {err}")
    o = order(db, "ACC-1")
    check(o is not None, "ORM^O01 stored")
    if o:
        check(o["source"] == "OBR-3" and o["placer"] == "PL-1" and o["filler"] == "ACC-1",
              f"order numbers: {o}")
        check(o["patient_id"] == "MRN100" and o["authority"] == "TXGEN", f"patient: {o}")
        check(o["name"] == "DEMO^JANE^Q^^MRS", f"name: {o['name']}")
        check(o["code"] == "CTHEAD" and o["text"] == "CT HEAD WO CONTRAST", f"procedure: {o}")
        check(o["modality"] == "CT", f"modality: {o}")
        check(o["priority"] == 0 and o["priority_code"] == "S", f"priority: {o}")
        check(o["provider"] == "1234^HOUSE^GREGORY", f"provider: {o}")
        check(o["status"] == "scheduled" and o["control"] == "NW", f"status: {o}")

    peer = Peer(port)
    # 2. Raw peer: OMI^O23 with TQ1-9 priority and IPC-1 accession; MSA-2 = MSH-10.
    a = peer.exchange(msg(
        msh("OMI-\\F\\1", "OMI^O23^OMI_O23", extra="||||||UNICODE UTF-8"),
        "PID|1||MRN200^^^TXGEN&1.2.3&ISO^MR||DEMO^ÉMILE",
        "ORC|NW|PL-2|FL-2||SC||^^^^^R",
        "TQ1|1||||||||A^ASAP^HL70078",
        "OBR|1|PL-2|FL-2|CTA^CTA CHEST PE^L",
        "IPC|ACC-2|RP-1|1.2.3.4|SPS-1|CT"))
    check(field(a.get("MSA"), 1) == "AA", f"OMI: {a}")
    check(field(a.get("MSA"), 2) == "OMI-\\F\\1", f"MSA-2 echoes MSH-10 as sent: {a}")
    check(field(a.get("MSH"), 9) == "ACK^O23^ACK", f"ACK MSH-9: {a.get('MSH')}")
    check(field(a.get("MSH"), 5) == "HIS" and field(a.get("MSH"), 6) == "TXGEN_HIS",
          f"ACK addressed back: {a.get('MSH')}")
    check(field(a.get("MSH"), 18) == "UNICODE UTF-8", f"ACK MSH-18: {a.get('MSH')}")
    o = order(db, "ACC-2")
    check(o is not None and o["source"] == "IPC-1" and o["priority"] == 1 and
          o["priority_code"] == "A" and o["authority"] == "TXGEN" and o["name"] == "DEMO^ÉMILE",
          f"OMI stored: {o}")

    # 3. Priorities: OBR-27 quantity/timing, TM<n>, and none.
    a = peer.exchange(msg(msh("PRI-1", "ORM^O01"), "PID|1||MRN300",
                          "ORC|NW|PL-3|ACC-3",
                          seg("OBR", {1: "1", 2: "PL-3", 3: "ACC-3", 4: "XR^XR CHEST",
                                      27: "^^^^^TM30"})))
    check(field(a.get("MSA"), 1) == "AA", f"OBR-27: {a}")
    o = order(db, "ACC-3")
    check(o and o["priority"] == 0 and o["priority_code"] == "TM30", f"TM30 -> STAT: {o}")
    a = peer.exchange(msg(msh("PRI-2", "ORM^O01"), "PID|1||MRN300", "ORC|NW|PL-4|ACC-4",
                          "OBR|1|PL-4|ACC-4|XR^XR KNEE"))
    o = order(db, "ACC-4")
    check(o and o["priority"] is None, f"no priority given -> NULL: {o}")

    # 4. Status change (SC, ORC-5 IP) and cancel (CA) of ACC-1.
    a = peer.exchange(msg(msh("SC-1", "ORM^O01"), "ORC|SC|PL-1|ACC-1||IP"))
    check(field(a.get("MSA"), 1) == "AA", f"SC: {a}")
    o = order(db, "ACC-1")
    check(o and o["status"] == "in_progress" and o["name"] == "DEMO^JANE^Q^^MRS" and
          o["priority"] == 0, f"SC keeps the rest: {o}")
    # 5. Placer number first, accession (filler) later: one order, renamed.
    peer.exchange(msg(msh("PF-1", "ORM^O01"), "PID|1||MRN400||DEMO^QUINN",
                      "ORC|NW|PL-5", "OBR|1|PL-5||MR^MR BRAIN"))
    o = order(db, "PL-5")
    check(o and o["source"] == "OBR-2", f"placer number as accession: {o}")
    a = peer.exchange(msg(msh("PF-2", "ORM^O01"), "ORC|SC|PL-5|ACC-5||SC",
                          "OBR|1|PL-5|ACC-5|MR^MR BRAIN"))
    check(field(a.get("MSA"), 1) == "AA", f"PF-2: {a}")
    check(order(db, "PL-5") is None and order(db, "ACC-5") is not None,
          "the filler's accession replaces the placer number")
    o = order(db, "ACC-5")
    check(o and o["name"] == "DEMO^QUINN" and o["patient_id"] == "MRN400", f"kept: {o}")

    # 6. ADT^A08: the name on open orders of the patient, not on cancelled ones.
    peer.exchange(msg(msh("CA-1", "ORM^O01"), "ORC|CA|PL-4|ACC-4"))
    check(order(db, "ACC-4")["status"] == "cancelled", "CA cancels")
    a = peer.exchange(msg(msh("A08-1", "ADT^A08^ADT_A01"), "EVN|A08", "PID|1||MRN300||DEMO^NEWNAME"))
    check(field(a.get("MSA"), 1) == "AA", f"A08: {a}")
    check(order(db, "ACC-3")["name"] == "DEMO^NEWNAME", "A08 updates an open order")
    check(order(db, "ACC-4")["name"] == "", "A08 leaves a cancelled order alone")
    # 7. ADT^A40: MRN100's orders move to MRN999.
    a = peer.exchange(msg(msh("A40-1", "ADT^A40^ADT_A39"), "EVN|A40",
                          "PID|1||MRN999^^^TXGEN^MR||DEMO^JANE^Q", "MRG|MRN100^^^TXGEN^MR"))
    check(field(a.get("MSA"), 1) == "AA", f"A40: {a}")
    check(order(db, "ACC-1")["patient_id"] == "MRN999", "A40 moves the merged patient's order")
    check(not query(db, "SELECT 1 FROM orders WHERE patient_id = 'MRN100'"), "nothing left")

    # 8. Errors: malformed -> AE with the reason; required field missing -> AE + ERR;
    # unknown facility -> AR; unsupported type -> AR. MSA-2 always = MSH-10.
    a = peer.exchange(msg(msh("BAD-1", "ORM^O01"), "PID|1||X", "OB!|1|2"))
    check(field(a.get("MSA"), 1) == "AE" and field(a.get("MSA"), 2) == "BAD-1" and
          "segment name" in field(a.get("MSA"), 3), f"malformed: {a}")
    check(field(a.get("ERR"), 3).startswith("102^"), f"ERR-3 102: {a.get('ERR')}")
    a = peer.exchange(b"this is not HL7")
    check(field(a.get("MSA"), 1) == "AE" and field(a.get("MSA"), 2) == "" and
          "MSH" in field(a.get("MSA"), 3), f"not HL7: {a}")
    a = peer.exchange(msg(msh("REQ-1", "ORM^O01"), "PID|1||MRN1", "ORC|NW", "OBR|1|||CT^CT"))
    check(field(a.get("MSA"), 1) == "AE" and field(a.get("MSA"), 2) == "REQ-1", f"no number: {a}")
    check(field(a.get("ERR"), 2) == "OBR^1^3" and field(a.get("ERR"), 3).startswith("101^"),
          f"ERR location and code: {a.get('ERR')}")
    a = peer.exchange(msg(msh("REQ-2", "ORM^O01"), "ORC|NW|P9|F9", "OBR|1|P9|F9|CT^CT"))
    check(field(a.get("MSA"), 1) == "AE" and "PID-3" in field(a.get("MSA"), 3),
          f"new order without patient: {a}")
    a = peer.exchange(msg(msh("UNK-1", "ORM^O01", facility="ELSEWHERE"), "PID|1||X",
                          "ORC|NW|P|F"))
    check(field(a.get("MSA"), 1) == "AR" and "ELSEWHERE" in field(a.get("MSA"), 3) and
          field(a.get("MSA"), 2) == "UNK-1", f"unknown facility: {a}")
    a = peer.exchange(msg(msh("ORU-1", "ORU^R01"), "PID|1||X"))
    check(field(a.get("MSA"), 1) == "AR" and field(a.get("ERR"), 3).startswith("200^"),
          f"unsupported type: {a}")
    a = peer.exchange(msg(msh("A01-1", "ADT^A01"), "PID|1||X"))
    check(field(a.get("MSA"), 1) == "AR" and field(a.get("ERR"), 3).startswith("201^"),
          f"unsupported event: {a}")
    a = peer.exchange(msg(msh("CTL-1", "ORM^O01"), "PID|1||X", "ORC|ZZ|P|F"))
    check(field(a.get("MSA"), 1) == "AE" and field(a.get("ERR"), 3).startswith("103^"),
          f"unknown ORC-1: {a}")
    check(order(db, "F") is None, "nothing stored from refused messages")
    rc, out, err = hl7send(telerad, port, orm_new, os.path.join(tmp, "missing.hl7"))
    check(rc == 1 and "missing.hl7" in err, f"hl7send with an unreadable file: {rc} {err}")
    bad = os.path.join(tmp, "unknown.hl7")
    with open(bad, "wb") as f:
        f.write(msg(msh("UNK-2", "ORM^O01", facility="NOWHERE"), "PID|1||X", "ORC|NW|P|F"))
    rc, out, err = hl7send(telerad, port, bad)
    check(rc == 1 and "UNK-2 AR" in err and "NOWHERE" in err, f"hl7send AR: {rc} {out} {err}")

    # 9. Framing: one message split over three writes; two messages in one write.
    data = frame(msg(msh("SPLIT-1", "ORM^O01"), "PID|1||MRN500", "ORC|NW|PL-6|ACC-6",
                     "OBR|1|PL-6|ACC-6|US^US ABDOMEN"))
    for part in (data[:5], data[5:40], data[40:]):
        peer.send_raw(part)
        time.sleep(0.3)
    a = parse_ack(peer.read_ack())
    check(field(a.get("MSA"), 1) == "AA" and field(a.get("MSA"), 2) == "SPLIT-1", f"split: {a}")
    two = (frame(msg(msh("TWO-1", "ORM^O01"), "PID|1||MRN600", "ORC|NW|PL-7|ACC-7")) +
           frame(msg(msh("TWO-2", "ORM^O01"), "PID|1||MRN600", "ORC|NW|PL-8|ACC-8")))
    peer.send_raw(two)
    a1, a2 = parse_ack(peer.read_ack()), parse_ack(peer.read_ack())
    check(field(a1.get("MSA"), 2) == "TWO-1" and field(a2.get("MSA"), 2) == "TWO-2" and
          field(a1.get("MSA"), 1) == "AA" and field(a2.get("MSA"), 1) == "AA",
          f"two in one read: {a1} {a2}")
    check(order(db, "ACC-7") and order(db, "ACC-8"), "both stored")

    # 10. Over the cap (TELERAD_HL7_MAX_MESSAGE=65536): AR, and the listener goes on - on
    # this connection and on new ones.
    big = msg(msh("BIG-1", "ORM^O01"), "PID|1||MRN700", "ORC|NW|PL-9|ACC-9",
              "NTE|1||" + "x" * 200000)
    a = peer.exchange(big)
    check(field(a.get("MSA"), 1) == "AR" and field(a.get("MSA"), 2) == "BIG-1" and
          "size cap" in field(a.get("MSA"), 3), f"over-size: {a}")
    check(order(db, "ACC-9") is None, "the over-size order is not stored")
    a = peer.exchange(msg(msh("AFTER-1", "ORM^O01"), "PID|1||MRN700", "ORC|NW|PL-10|ACC-10"))
    check(field(a.get("MSA"), 1) == "AA", f"same connection after the over-size one: {a}")
    peer.close()
    peer2 = Peer(port)
    a = peer2.exchange(msg(msh("AFTER-2", "ORM^O01"), "PID|1||MRN700", "ORC|NW|PL-11|ACC-11"))
    check(field(a.get("MSA"), 1) == "AA", f"new connection: {a}")
    # Noise outside frames is skipped.
    peer2.send_raw(b"\r\n garbage \n")
    a = peer2.exchange(msg(msh("NOISE-1", "ADT^A08"), "PID|1||MRN700||DEMO^X"))
    check(field(a.get("MSA"), 1) == "AA", f"after noise: {a}")
    peer2.close()

    # 11. Sites of the workflow: MSH-4 = the site id or one of its AE titles.
    site = {"id": "london-royal", "name": "London Royal", "jurisdiction": "GB-ENG",
            "timezone": "Europe/London", "ae_titles": ["LONROYAL"], "region": "EU"}
    req = urllib.request.Request(f"http://127.0.0.1:{http_port}/api/v1/sites",
                                 data=json.dumps(site).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(req, timeout=30).read()
        created = True
    except Exception as e:  # the workflow's API may change; the rest still counts
        print("note: cannot create a workflow site:", e)
        created = False
    if created:
        p3 = Peer(port)
        for facility, control in (("london-royal", "LR-1"), ("LONROYAL", "LR-2")):
            a = p3.exchange(msg(msh(control, "ORM^O01", facility=facility), "PID|1||L1",
                                f"ORC|NW|P-{control}|ACC-{control}"))
            check(field(a.get("MSA"), 1) == "AA", f"workflow site by {facility}: {a}")
            check(order(db, f"ACC-{control}", site="london-royal") is not None,
                  f"stored for london-royal ({facility})")
        p3.close()

    # 12. Every message is in orders_messages with its ACK code (no PHI there).
    rows = query(db, "SELECT control_id, ack_code FROM orders_messages")
    codes = dict(rows)
    check(codes.get("ORM-1") == "AA" and codes.get("UNK-1") == "AR" and
          codes.get("BAD-1") == "AE" and codes.get("BIG-1") == "AR", f"orders_messages: {codes}")
    check(len(rows) >= 25, f"orders_messages has {len(rows)} rows")


if __name__ == "__main__":
    sys.exit(main())
