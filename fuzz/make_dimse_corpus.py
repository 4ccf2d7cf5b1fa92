#!/usr/bin/python3
"""make_dimse_corpus.py - write the seed corpus of the fuzz_dimse target: DIMSE command sets
(PS3.7 6.3.1: group 0000 in Implicit VR Little Endian, Command Group Length first), the bytes
that dimse_receive_command gathers from the command fragments of P-DATA-TF PDUs.

    /usr/bin/python3 fuzz/make_dimse_corpus.py [OUTDIR]      (default: fuzz/corpus/dimse)

Seeds:
  dcmtk_rq_*   requests captured from DCMTK's echoscu, storescu, findscu, movescu and getscu
               (Debian, run with TCP_NODELAY=1): each tool associates with a small acceptor
               written here (it accepts every presentation context, records the command sets
               it receives and answers each request with a final success response), pydicom's
               CT_small.dcm being the file stored and the query keys being fixed;
  dcmtk_rsp_*  responses of DCMTK's storescp to a C-ECHO and a C-STORE sent by this script;
  synth_*      the other messages, built here from PS3.7 annex E: C-STORE with move originator,
               C-FIND/C-MOVE/C-GET responses (pending with counts, warning, failure with an
               Error Comment and Offending Element), C-CANCEL, N-EVENT-REPORT and N-ACTION
               (storage commitment), a command with a wrong group length, one without it, one
               with an odd-length UID, a 1-byte Status,
               and an empty one.

Needs DCMTK (echoscu, storescu, findscu, movescu, getscu, storescp) for the dcmtk_* seeds:
without them only the synth_* seeds are written. The output is deterministic for one DCMTK
version; files merged into the corpus by fuzzing (see fuzz/run.sh) have other names and are
left alone.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CT_SMALL = "/usr/lib/python3/dist-packages/pydicom/data/test_files/CT_small.dcm"
IMPLICIT_LE = "1.2.840.10008.1.2"
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
STUDY_ROOT_GET = "1.2.840.10008.5.1.4.1.2.2.3"
COMMITMENT = "1.2.840.10008.1.20.1"
COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"


# ---- command sets ----------------------------------------------------------------------------

def element(elem, value):
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0, elem, len(value)) + value


def command_set(elements, group_length=True):
    body = b"".join(element(e, v) for e, v in elements)
    if not group_length:
        return body
    return struct.pack("<HHII", 0, 0, 4, len(body)) + body


def us(v):
    return struct.pack("<H", v)


def uid(u):
    return u.encode("ascii")


def ae(a):
    return a.ljust(16).encode("ascii")


def parse(data):
    out = {}
    pos = 0
    while pos + 8 <= len(data):
        _, e, n = struct.unpack_from("<HHI", data, pos)
        out[e] = data[pos + 8:pos + 8 + n]
        pos += 8 + n
    return out


def response_to(rq, status=0):
    """A final response (no data set) to a request command set."""
    f = parse(rq)
    field = struct.unpack("<H", f[0x0100])[0] | 0x8000
    els = []
    if 0x0002 in f:
        els.append((0x0002, f[0x0002]))
    els += [(0x0100, us(field)), (0x0120, f.get(0x0110, us(1))), (0x0800, us(0x0101)),
            (0x0900, us(status))]
    if 0x1000 in f:
        els.append((0x1000, f[0x1000]))
    if field in (0x8010, 0x8021):
        els += [(0x1021, us(0)), (0x1022, us(0)), (0x1023, us(0))]
    return command_set(els)


# ---- PDUs --------------------------------------------------------------------------------------

def item(t, payload):
    return struct.pack(">BBH", t, 0, len(payload)) + payload


def pdu(t, body):
    return struct.pack(">BBI", t, 0, len(body)) + body


def pdata(pc, data, command, last):
    return pdu(4, struct.pack(">IBB", len(data) + 2, pc, (1 if command else 0) |
                              (2 if last else 0)) + data)


def read_exact(sock, n):
    buf = b""
    while len(buf) < n:
        c = sock.recv(n - len(buf))
        if not c:
            return None
        buf += c
    return buf


def read_pdu(sock):
    h = read_exact(sock, 6)
    if h is None:
        return None
    t, _, n = struct.unpack(">BBI", h)
    body = read_exact(sock, n) if n else b""
    return None if body is None else (t, body)


def contexts_of(rq_body):
    """[(id, abstract syntax, [transfer syntaxes])] of an A-ASSOCIATE-RQ body."""
    out = []
    pos = 68
    while pos + 4 <= len(rq_body):
        t, _, n = struct.unpack_from(">BBH", rq_body, pos)
        if t == 0x20:
            pc = rq_body[pos + 4]
            sub = pos + 8
            abstract, tss = "", []
            while sub < pos + 4 + n:
                st, _, sn = struct.unpack_from(">BBH", rq_body, sub)
                value = rq_body[sub + 4:sub + 4 + sn].decode("ascii").rstrip("\0 ")
                if st == 0x30:
                    abstract = value
                elif st == 0x40:
                    tss.append(value)
                sub += 4 + sn
            out.append((pc, abstract, tss))
        pos += 4 + n
    return out


def associate_ac(rq_body):
    body = struct.pack(">HH", 1, 0) + rq_body[4:36] + b"\0" * 32
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for pc, _, tss in contexts_of(rq_body):
        ts = IMPLICIT_LE if IMPLICIT_LE in tss else tss[0]
        body += item(0x21, struct.pack(">BBBB", pc, 0, 0, 0) + item(0x40, uid(ts)))
    body += item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    return pdu(2, body)


def associate_rq(called, contexts):
    body = struct.pack(">HH", 1, 0) + ae(called) + ae("CORPUS") + b"\0" * 32
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for pc, abstract, ts in contexts:
        body += item(0x20, struct.pack(">BBBB", pc, 0, 0, 0) + item(0x30, uid(abstract)) +
                     item(0x40, uid(ts)))
    body += item(0x50, item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4"))
    return pdu(1, body)


class Acceptor:
    """Accepts one association at a time, records the requests' command sets, answers each
    with a final success response; until stopped."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.commands = []
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            conn.settimeout(30)
            try:
                self.serve(conn)
            except OSError:
                pass
            conn.close()

    def serve(self, conn):
        p = read_pdu(conn)
        if p is None or p[0] != 1:
            return
        conn.sendall(associate_ac(p[1]))
        command = b""
        pending = None
        while True:
            p = read_pdu(conn)
            if p is None:
                return
            if p[0] == 5:
                conn.sendall(pdu(6, b"\0" * 4))
                return
            if p[0] != 4:
                return
            body = p[1]
            pos = 0
            while pos + 6 <= len(body):
                n, pc, control = struct.unpack_from(">IBB", body, pos)
                data = body[pos + 6:pos + 4 + n]
                pos += 4 + n
                if control & 1:
                    command += data
                    if control & 2:
                        self.commands.append(command)
                        f = parse(command)
                        has_data = f.get(0x0800) != us(0x0101)
                        pending = (pc, command)
                        command = b""
                        if not has_data:
                            self.answer(conn, pending)
                            pending = None
                elif control & 2 and pending:
                    self.answer(conn, pending)
                    pending = None

    @staticmethod
    def answer(conn, pending):
        pc, rq = pending
        if struct.unpack("<H", parse(rq)[0x0100])[0] == 0x0FFF:
            return  # C-CANCEL: no response
        conn.sendall(pdata(pc, response_to(rq), True, True))

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def dcmtk_requests(tmp):
    """Command sets sent by DCMTK's SCU tools."""
    env = dict(os.environ, TCP_NODELAY="1")
    acc = Acceptor()
    port = str(acc.port)
    runs = [
        ("echo", ["echoscu", "-aec", "CORPUS", "127.0.0.1", port]),
        ("store", ["storescu", "-aec", "CORPUS", "127.0.0.1", port, CT_SMALL]),
        ("find_study", ["findscu", "-S", "-aec", "CORPUS", "-k", "QueryRetrieveLevel=STUDY",
                        "-k", "PatientName=DOE*", "-k", "StudyInstanceUID", "127.0.0.1", port]),
        ("find_patient", ["findscu", "-P", "-aec", "CORPUS", "-k", "QueryRetrieveLevel=PATIENT",
                          "-k", "PatientID=123", "127.0.0.1", port]),
        ("find_worklist", ["findscu", "-W", "-aec", "CORPUS", "-k", "PatientName",
                           "127.0.0.1", port]),
        ("move", ["movescu", "-S", "-aec", "CORPUS", "-aem", "DESTINATION", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID=1.2.3", "127.0.0.1",
                  port]),
        ("get", ["getscu", "-S", "-aec", "CORPUS", "-k", "QueryRetrieveLevel=STUDY", "-k",
                 "StudyInstanceUID=1.2.3", "-od", tmp, "127.0.0.1", port]),
    ]
    seeds = {}
    try:
        for name, cmd in runs:
            before = len(acc.commands)
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                           timeout=60)
            time.sleep(0.1)
            for k, c in enumerate(acc.commands[before:]):
                seeds["dcmtk_rq_%s_%d" % (name, k)] = c
    finally:
        acc.close()
    return seeds


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dcmtk_responses(tmp):
    """Response command sets of DCMTK's storescp."""
    port = free_port()
    env = dict(os.environ, TCP_NODELAY="1")
    proc = subprocess.Popen(["storescp", "-aet", "ARCHIVE", "-od", tmp, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    seeds = {}
    try:
        for _ in range(100):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                break
            except OSError:
                time.sleep(0.05)
        else:
            return seeds
        s.sendall(associate_rq("ARCHIVE", [(1, "1.2.840.10008.1.1", IMPLICIT_LE),
                                           (3, CT, IMPLICIT_LE)]))
        p = read_pdu(s)
        if p is None or p[0] != 2:
            return seeds
        s.sendall(pdata(1, command_set([(0x0002, uid("1.2.840.10008.1.1")),
                                        (0x0100, us(0x0030)), (0x0110, us(1)),
                                        (0x0800, us(0x0101))]), True, True))
        seeds["dcmtk_rsp_echo"] = first_command(s)
        # A C-STORE of CT_small's data set (implicit VR LE as the file is explicit: rewrite).
        ds = implicit_dataset(CT_SMALL)
        if ds:
            s.sendall(pdata(3, command_set([(0x0002, uid(CT)), (0x0100, us(1)),
                                            (0x0110, us(2)), (0x0700, us(0)),
                                            (0x0800, us(0)), (0x1000, uid(ds[0]))]), True, True))
            data = ds[1]
            for i in range(0, len(data), 16000):  # within storescp's maximum PDU length
                s.sendall(pdata(3, data[i:i + 16000], False, i + 16000 >= len(data)))
            seeds["dcmtk_rsp_store"] = first_command(s)
        s.sendall(pdu(5, b"\0" * 4))
        read_pdu(s)
        s.close()
    finally:
        proc.terminate()
        proc.wait()
    return {k: v for k, v in seeds.items() if v}


def first_command(s):
    data = b""
    while True:
        p = read_pdu(s)
        if p is None or p[0] != 4:
            return None
        body = p[1]
        pos = 0
        while pos + 6 <= len(body):
            n, _, control = struct.unpack_from(">IBB", body, pos)
            if control & 1:
                data += body[pos + 6:pos + 4 + n]
                if control & 2:
                    return data
            pos += 4 + n


def implicit_dataset(path):
    try:
        import pydicom
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_dataset
    except ImportError:
        return None
    ds = pydicom.dcmread(path)
    ds.is_little_endian, ds.is_implicit_VR = True, True
    buf = DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    return str(ds.SOPInstanceUID), buf.getvalue()


def synthetic():
    s = {}
    s["synth_store_rq_move_originator"] = command_set([
        (0x0002, uid(CT)), (0x0100, us(0x0001)), (0x0110, us(9)), (0x0700, us(2)),
        (0x0800, us(0)), (0x1000, uid("1.2.826.0.1.3680043.2.1125.1.2.3")),
        (0x1030, ae("MOVER")), (0x1031, us(77))])
    s["synth_store_rsp_failure_comment"] = command_set([
        (0x0002, uid(CT)), (0x0100, us(0x8001)), (0x0120, us(9)), (0x0800, us(0x0101)),
        (0x0900, us(0xA900)), (0x0901, struct.pack("<HH", 0x0008, 0x0016)),
        (0x0902, b"SOP class differs from the context"),
        (0x1000, uid("1.2.826.0.1.3680043.2.1125.1.2.3"))])
    s["synth_find_rsp_pending"] = command_set([
        (0x0002, uid(STUDY_ROOT_FIND)), (0x0100, us(0x8020)), (0x0120, us(1)),
        (0x0800, us(0)), (0x0900, us(0xFF01))])
    s["synth_move_rsp_pending_counts"] = command_set([
        (0x0002, uid(STUDY_ROOT_MOVE)), (0x0100, us(0x8021)), (0x0120, us(3)),
        (0x0800, us(0x0101)), (0x0900, us(0xFF00)), (0x1020, us(5)), (0x1021, us(2)),
        (0x1022, us(1)), (0x1023, us(0))])
    s["synth_get_rsp_warning"] = command_set([
        (0x0002, uid(STUDY_ROOT_GET)), (0x0100, us(0x8010)), (0x0120, us(4)),
        (0x0800, us(0)), (0x0900, us(0xB000)), (0x1021, us(7)), (0x1022, us(1)),
        (0x1023, us(1))])
    s["synth_cancel_rq"] = command_set([(0x0100, us(0x0FFF)), (0x0120, us(1)),
                                        (0x0800, us(0x0101))])
    s["synth_n_event_report_rq"] = command_set([
        (0x0002, uid(COMMITMENT)), (0x0100, us(0x0100)), (0x0110, us(12)),
        (0x0800, us(0)), (0x1000, uid(COMMITMENT_INSTANCE)), (0x1002, us(1))])
    s["synth_n_action_rq"] = command_set([
        (0x0003, uid(COMMITMENT)), (0x0100, us(0x0130)), (0x0110, us(13)),
        (0x0800, us(0)), (0x1001, uid(COMMITMENT_INSTANCE)), (0x1008, us(1))])
    s["synth_n_action_rsp"] = command_set([
        (0x0002, uid(COMMITMENT)), (0x0100, us(0x8130)), (0x0120, us(13)),
        (0x0800, us(0x0101)), (0x0900, us(0)), (0x1000, uid(COMMITMENT_INSTANCE)),
        (0x1008, us(1))])
    echo = [(0x0002, uid("1.2.840.10008.1.1")), (0x0100, us(0x0030)), (0x0110, us(1)),
            (0x0800, us(0x0101))]
    s["synth_echo_no_group_length"] = command_set(echo, group_length=False)
    wrong = bytearray(command_set(echo))
    struct.pack_into("<I", wrong, 8, 9999)
    s["synth_echo_wrong_group_length"] = bytes(wrong)
    s["synth_echo_odd_uid"] = command_set([(0x0002, b"1.2.840.10008.1.1\0")] + echo[1:])
    s["synth_echo_extra_elements"] = command_set(echo + [(0x4000, b"Tiny comment"),
                                                         (0x5010, b"XY")])
    # An odd-length (1-byte) Status: found by fuzzing; the writer pads it, the reader refuses it.
    s["synth_echo_rsp_status_odd_length"] = command_set([
        (0x0002, uid("1.2.840.10008.1.1")), (0x0100, us(0x8030)), (0x0120, us(1)),
        (0x0800, us(0x0101))]) + struct.pack("<HHI", 0, 0x0900, 1) + b"\x08"
    s["synth_empty"] = b""
    return s


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus", "dimse")
    os.makedirs(out, exist_ok=True)
    seeds = synthetic()
    tools = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")
    if all(shutil.which(t) for t in tools) and os.path.exists(CT_SMALL):
        tmp = tempfile.mkdtemp(prefix="dimse-corpus.")
        try:
            seeds.update(dcmtk_requests(tmp))
            seeds.update(dcmtk_responses(tmp))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("make_dimse_corpus.py: DCMTK or CT_small.dcm missing: synthetic seeds only",
              file=sys.stderr)
    for name, data in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print("%d seeds in %s (%d captured from DCMTK)" %
          (len(seeds), out, sum(1 for k in seeds if k.startswith("dcmtk_"))))


if __name__ == "__main__":
    main()
