#!/usr/bin/python3
"""test_malformed.py - malformed and hostile PDUs against `telerad serve`, from a raw socket.

    /usr/bin/python3 tests/interop_scp/test_malformed.py build/telerad [--quick]

Every case opens a connection, sends its bytes, half-closes (so the server sees the end at
once and need not wait for ARTIM) and reads what comes back until the server closes. What a
case may end with: an A-ABORT or an A-ASSOCIATE-RJ, or the connection closed without a word -
never an A-ASSOCIATE-AC for something invalid, never a hang (20 s). Mutated requests may
still be valid and then get an A-ASSOCIATE-AC (then we abort). After all of them: the server
process is still running, a normal echoscu succeeds, nothing was stored and no temporary
object is left.

Cases: wrong PDU lengths (longer and shorter than the body, 0xFFFFFFFF, items longer than the
PDU); unknown PDU types before and after association; truncation at many points of an
A-ASSOCIATE-RQ and of a P-DATA-TF, then close; a P-DATA-TF over the negotiated maximum;
P-DATA, A-RELEASE-RQ, A-ABORT and A-ASSOCIATE-AC before association; a second A-ASSOCIATE-RQ
inside one; PDVs on a context that was not accepted, PDV lengths past the PDU, a data set where
a command is expected, command sets that cannot be read, a C-STORE cut off mid-data set;
A-ASSOCIATE-RQs with garbage items (500 seeded mutations); and 10,000 associations opened and
dropped quickly (4 threads).
"""
import concurrent.futures
import os
import random
import shutil
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scp_common as sc  # noqa: E402

CASE_TIMEOUT = 20
OK_ENDINGS = ("abort", "reject", "closed")
# Well-formed DIMSE requests whose data set is unacceptable: answered with a failure status in
# a C-STORE-RSP (a P-DATA-TF), then the connection closes when we do; that nothing was stored
# is checked at the end.
DIMSE_FAILURE_CASES = ("C-STORE of garbage bytes", "C-STORE on the Verification context")


def ending(seen):
    """What the server's answer came down to."""
    if "timeout" in seen:
        return "timeout"
    if not seen:
        return "closed"
    last = seen[-1]
    if last == sc.A_ABORT:
        return "abort"
    if last == sc.A_ASSOCIATE_RJ:
        return "reject"
    if sc.A_ASSOCIATE_AC in seen:
        return "accepted"
    return "other:" + ",".join(sc.PDU_NAMES.get(t, str(t)) for t in seen)


def send_and_watch(port, data, associate_first=None):
    """Connect, (optionally associate first), send data, half-close, watch."""
    peer = sc.RawPeer(port, timeout=CASE_TIMEOUT)
    try:
        if associate_first is not None:
            p = peer.associate(associate_first)
            if p is None or p[0] != sc.A_ASSOCIATE_AC:
                return "not associated: %r" % (p,)
        try:
            peer.send(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        peer.shutdown_write()
        return ending(peer.outcome(CASE_TIMEOUT))
    finally:
        peer.close()


def store_contexts():
    return ((1, sc.CT_STORAGE, (sc.EXPLICIT_LE,)), (3, sc.VERIFICATION, (sc.IMPLICIT_LE,)))


def cases(port):
    """(name, data, associate_first or None, allowed endings)."""
    rq = sc.associate_rq()
    body = rq[6:]
    assoc = sc.associate_rq(contexts=store_contexts(), max_pdu=16384)
    out = []
    # -- lengths
    out.append(("RQ length 0xFFFFFFFF", b"\x01\x00\xff\xff\xff\xff" + body, None))
    out.append(("RQ length too long by 100", struct.pack(">BBI", 1, 0, len(body) + 100) + body,
                None))
    out.append(("RQ length too short by 10", struct.pack(">BBI", 1, 0, len(body) - 10) + body,
                None))
    out.append(("RQ length 0", b"\x01\x00\x00\x00\x00\x00", None))
    out.append(("RQ length 1", b"\x01\x00\x00\x00\x00\x01\x00", None))
    # an item whose length runs past the PDU: the application context item (offset 74)
    bad = bytearray(rq)
    struct.pack_into(">H", bad, 74 + 2, 0xFFF0)
    out.append(("RQ item length past the PDU", bytes(bad), None))
    # the user information item claiming more than is there
    ui = rq.rfind(b"\x50\x00")
    bad = bytearray(rq)
    struct.pack_into(">H", bad, ui + 2, 0x7FFF)
    out.append(("RQ user information length past the PDU", bytes(bad), None))
    # a presentation context with a zero-length item and a zero-length abstract syntax
    out.append(("RQ empty abstract syntax", sc.associate_rq(
        contexts=((1, "", (sc.IMPLICIT_LE,)),)), None))
    out.append(("RQ even presentation context id", sc.associate_rq(
        contexts=((2, sc.VERIFICATION, (sc.IMPLICIT_LE,)),)), None))
    out.append(("RQ no presentation context", sc.associate_rq(contexts=()), None))
    out.append(("RQ 300 presentation contexts", sc.associate_rq(
        contexts=tuple(((2 * i + 1) % 256, sc.VERIFICATION, (sc.IMPLICIT_LE,))
                       for i in range(300))), None))
    out.append(("RQ 4 MB", struct.pack(">BBI", 1, 0, 4 << 20) + body + b"\0" * ((4 << 20) -
                                                                              len(body)), None))
    out.append(("RQ without user information", pdu_without_user_info(), None))
    # -- unknown PDU types
    for t in (0x00, 0x08, 0x09, 0x7F, 0xFF):
        out.append(("unknown PDU type 0x%02X before association" % t,
                    sc.pdu(t, b"\0\0\0\0"), None))
        out.append(("unknown PDU type 0x%02X in an association" % t,
                    sc.pdu(t, b"\0\0\0\0"), assoc))
    # -- out of place PDUs
    out.append(("P-DATA-TF before association", sc.pdata(1, sc.echo_rq(), True, True), None))
    out.append(("A-RELEASE-RQ before association", sc.release_rq(), None))
    out.append(("A-RELEASE-RP before association", sc.pdu(sc.A_RELEASE_RP, b"\0" * 4), None))
    out.append(("A-ABORT before association", sc.abort_pdu(), None))
    out.append(("A-ASSOCIATE-AC before association", sc.pdu(sc.A_ASSOCIATE_AC, body), None))
    out.append(("A-ASSOCIATE-RJ before association", sc.pdu(sc.A_ASSOCIATE_RJ, b"\0\1\1\1"),
                None))
    out.append(("second A-ASSOCIATE-RQ in an association", rq, assoc))
    out.append(("A-ASSOCIATE-AC in an association", sc.pdu(sc.A_ASSOCIATE_AC, body), assoc))
    out.append(("A-RELEASE-RP in an association", sc.pdu(sc.A_RELEASE_RP, b"\0" * 4), assoc))
    # -- P-DATA-TF trouble
    out.append(("P-DATA-TF over the negotiated maximum",
                sc.pdata(1, b"\0" * 300000, False, True), assoc))
    out.append(("P-DATA-TF length 0xFFFFFFF0", b"\x04\x00\xff\xff\xff\xf0" + b"\0" * 64, assoc))
    out.append(("P-DATA-TF empty", sc.pdu(sc.P_DATA_TF, b""), assoc))
    out.append(("PDV length past the PDU", sc.pdu(sc.P_DATA_TF, struct.pack(">IBB", 1000, 1, 3)
                                                  + b"\0" * 10), assoc))
    out.append(("PDV length 1", sc.pdu(sc.P_DATA_TF, struct.pack(">IBB", 1, 1, 3)), assoc))
    out.append(("PDV on a context that was not proposed",
                sc.pdata(5, sc.echo_rq(), True, True), assoc))
    out.append(("PDV on an even context id", sc.pdata(2, sc.echo_rq(), True, True), assoc))
    out.append(("data set where a command is expected",
                sc.pdata(3, b"\x08\x00\x16\x00\x02\x00\x00\x00AB", False, True), assoc))
    out.append(("command set that cannot be read",
                sc.pdata(3, b"\x00\x00\x00\x01\xff\xff\xff\x7f" + b"\0" * 16, True, True), assoc))
    out.append(("command set without Command Field",
                sc.pdata(3, sc.command_set([(0x0110, sc.us(1))]), True, True), assoc))
    out.append(("command set of 2 MB",
                b"".join(sc.pdata(3, b"\0" * 16000, True, False) for _ in range(128)), assoc))
    store = sc.pdata(1, sc.store_rq(sc.CT_STORAGE, "1.2.3.4.5.6"), True, True)
    out.append(("C-STORE cut off mid-data set, then close",
                store + sc.pdata(1, b"\x08\x00\x16\x00UI\x1a\x00" + b"1.2" * 10, False, False),
                assoc))
    out.append(("C-STORE data set then a command before its end",
                store + sc.pdata(1, b"\x08\x00\x16\x00UI\x02\x001\0", False, False) +
                sc.pdata(1, sc.echo_rq(), True, True), assoc))
    out.append(("C-STORE of garbage bytes", store + sc.pdata(1, os.urandom(5000), False, True),
                assoc))
    out.append(("C-STORE on the Verification context",
                sc.pdata(3, sc.store_rq(sc.CT_STORAGE, "1.2.3.4.5.7"), True, True) +
                sc.pdata(3, b"\0" * 100, False, True), assoc))
    return out


def pdu_without_user_info():
    """An A-ASSOCIATE-RQ with no user information item (it is mandatory)."""
    full = sc.associate_rq()
    ui = full.rfind(b"\x50\x00")
    body = full[6:ui]
    return struct.pack(">BBI", 1, 0, len(body)) + body


def truncations(port):
    """An A-ASSOCIATE-RQ and a C-STORE P-DATA-TF cut at many points, then closed."""
    out = []
    rq = sc.associate_rq(contexts=store_contexts())
    for cut in sorted(set(list(range(0, 12)) + list(range(12, len(rq), 7)))):
        out.append(("A-ASSOCIATE-RQ cut at byte %d" % cut, rq[:cut], None))
    store = sc.pdata(1, sc.store_rq(sc.CT_STORAGE, "1.2.3.4.5.8"), True, True)
    for cut in range(0, len(store), 9):
        out.append(("C-STORE command PDU cut at byte %d" % cut, store[:cut], rq))
    return out


def mutations(count, seed=1):
    rng = random.Random(seed)
    base = sc.associate_rq(contexts=store_contexts() + ((5, "1.2.840.10008.5.1.4.1.2.2.1",
                                                        (sc.IMPLICIT_LE, sc.EXPLICIT_LE)),))
    out = []
    for i in range(count):
        b = bytearray(base)
        kind = i % 4
        if kind == 0:      # flip bytes after the header
            for _ in range(rng.randint(1, 8)):
                b[rng.randrange(6, len(b))] ^= 1 << rng.randrange(8)
        elif kind == 1:    # interesting values in a 16-bit item length
            pos = rng.randrange(74, len(b) - 2)
            struct.pack_into(">H", b, pos, rng.choice([0, 1, 0x7FFF, 0x8000, 0xFFFF, 4]))
        elif kind == 2:    # garbage items inserted, PDU length fixed up
            pos = rng.randrange(74, len(b))
            junk = bytes([rng.choice([0x10, 0x20, 0x21, 0x30, 0x40, 0x50, 0x51, 0x52, 0x54,
                                      0x55, 0x56, 0x58, 0x59, 0xFF])]) + b"\0" + \
                struct.pack(">H", rng.randrange(0, 40)) + os.urandom(rng.randrange(0, 40))
            b[pos:pos] = junk
            struct.pack_into(">I", b, 2, len(b) - 6)
        else:              # random bytes over a slice
            pos = rng.randrange(6, len(b))
            n = rng.randrange(1, 32)
            b[pos:pos + n] = bytes(rng.randrange(256) for _ in range(n))
            struct.pack_into(">I", b, 2, len(b) - 6)
        out.append(("mutated A-ASSOCIATE-RQ #%d" % i, bytes(b), None))
    return out


def flood(port, total, threads):
    """Open `total` connections, send an A-ASSOCIATE-RQ on most, drop them at once."""
    rq = sc.associate_rq()
    errors = []

    def worker(n, wid):
        rng = random.Random(wid)
        for i in range(n):
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=10)
                r = rng.random()
                if r < 0.6:
                    s.sendall(rq)
                elif r < 0.8:
                    s.sendall(rq[:rng.randrange(1, len(rq))])
                if rng.random() < 0.5:
                    # RST instead of FIN
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
            except OSError as e:
                errors.append(str(e))
                time.sleep(0.01)

    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda k: worker(total // threads, k), range(threads)))
    return time.time() - t0, errors


def main():
    quick = "--quick" in sys.argv
    telerad = sc.telerad_path()
    sc.need_programs("echoscu")
    work = sc.tempdir("telerad-scp-malformed.")
    checks = sc.Checks("interop_scp_malformed")
    server = sc.Server(telerad, work, "--idle-timeout", "10", "--max-associations", "64",
                       name="malformed").start()
    try:
        all_cases = cases(server.port) + truncations(server.port) + \
            mutations(100 if quick else 500)
        failures = []
        counts = {}
        t0 = time.time()
        for name, data, first in all_cases:
            try:
                end = send_and_watch(server.port, data, first)
            except OSError as e:
                end = "error: %s" % e
            counts[end] = counts.get(end, 0) + 1
            allowed = OK_ENDINGS + (("accepted",) if name.startswith("mutated") else ()) + \
                (("other:P-DATA-TF",) if name in DIMSE_FAILURE_CASES else ())
            if end not in allowed:
                failures.append("%s: %s" % (name, end))
            if not server.alive():
                failures.append("%s: the server died" % name)
                break
        print("      %d cases in %.1f s: %s" % (len(all_cases), time.time() - t0,
                                                  ", ".join("%s %d" % kv for kv in
                                                            sorted(counts.items()))))
        checks.check(not failures, "every malformed case ends in A-ABORT, A-ASSOCIATE-RJ or a "
                     "close", "; ".join(failures[:10]) +
                     (" (%d in all)" % len(failures) if failures else ""))
        checks.check(server.alive(), "the server is still running after the malformed PDUs")
        rc, out = sc.echoscu(server.port)
        checks.check(rc == 0, "echoscu succeeds after the malformed PDUs", out[-300:])

        n = 2000 if quick else 10000
        secs, errors = flood(server.port, n, 4)
        print("      %d connections opened and dropped in %.1f s (%d client-side errors)" %
              (n, secs, len(errors)))
        checks.check(server.alive(), "the server survives %d associations opened and dropped"
                     % n)
        ok = False
        for _ in range(100):
            rc, out = sc.echoscu(server.port)
            if rc == 0:
                ok = True
                break
            time.sleep(0.2)
        checks.check(ok, "echoscu succeeds after the flood", out[-300:])
        # Nothing stored, nothing half-written left (give aborted ingests a moment).
        time.sleep(0.5)
        checks.check(not server.stored(), "no object was stored", ", ".join(server.stored()[:3]))
        checks.check(not server.temporaries(), "no temporary object is left",
                     ", ".join(server.temporaries()[:3]))
        log = server.log_text()
    finally:
        status = server.stop()
    checks.check(status == 0, "telerad serve stops cleanly on SIGTERM", "exit status %s" % status)
    if "AddressSanitizer" in log or "runtime error" in log or "LeakSanitizer" in log:
        checks.check(False, "no sanitizer report in the server log",
                     log[log.find("==ERROR") - 200:][:4000] if "==ERROR" in log else log[-3000:])
    if checks.failed:
        print("server log: %s" % server.log_path)
    else:
        shutil.rmtree(work, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
