#!/usr/bin/python3
"""test_policy.py - association policy of `telerad serve`, seen by DCMTK and by a raw peer.

    /usr/bin/python3 tests/interop_scp/test_policy.py build/telerad

  * a wrong called AE title: echoscu reports "Called AE Title Not Recognized" (A-ASSOCIATE-RJ
    permanent, service-user, reason 7: PS3.8 Table 9-21); --any-called-aet accepts it;
  * --max-associations 2 with two associations held open by raw peers: a third (echoscu, and a
    raw peer) is rejected "transient, service-provider (presentation), local-limit-exceeded";
    once one closes, echoscu succeeds again;
  * --idle-timeout 2: a raw peer that associates and then goes silent gets an A-ABORT after
    about 2 s and the connection is closed; echoscu keeps working meanwhile;
  * a slow peer: a raw peer trickles a C-STORE (about 8 s) while storescu stores 100 files
    at full speed in parallel - storescu is not held up, and the slow one is stored too.
"""
import os
import shutil
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scp_common as sc  # noqa: E402


def main():
    telerad = sc.telerad_path()
    sc.need_programs("echoscu", "storescu", "dcmdump")
    sc.need_pydicom()
    work = sc.tempdir("telerad-scp-policy.")
    checks = sc.Checks("interop_scp_policy")
    logs = []

    # ---- called AE title, and the association cap ----
    server = sc.Server(telerad, work, "--max-associations", "2", name="cap").start()
    try:
        rc, out = sc.echoscu(server.port, aec="SOMEONEELSE")
        checks.check(rc != 0 and "Called AE Title Not Recognized" in out,
                     "wrong called AE: echoscu reports Called AE Title Not Recognized", out[-400:])
        peer = sc.RawPeer(server.port)
        p = peer.associate(sc.associate_rq(called="SOMEONEELSE"))
        checks.check(p is not None and p[0] == sc.A_ASSOCIATE_RJ and
                     sc.reject_reason(p[1]) == (1, 1, 7),
                     "wrong called AE: A-ASSOCIATE-RJ (1, 1, 7)", repr(p))
        peer.close()

        held = []
        for i in range(2):
            peer = sc.RawPeer(server.port)
            p = peer.associate()
            checks.check(p is not None and p[0] == sc.A_ASSOCIATE_AC,
                         "raw association %d of 2 accepted" % (i + 1), repr(p))
            held.append(peer)
        rc, out = sc.echoscu(server.port)
        checks.check(rc != 0 and "Local Limit Exceeded" in out,
                     "a third association (echoscu) is rejected: Local Limit Exceeded",
                     out[-400:])
        peer = sc.RawPeer(server.port)
        p = peer.associate()
        checks.check(p is not None and p[0] == sc.A_ASSOCIATE_RJ and
                     sc.reject_reason(p[1]) == (2, 3, 2),
                     "a third association (raw) gets A-ASSOCIATE-RJ (2, 3, 2)", repr(p))
        peer.close()
        # The two held ones still work: C-ECHO on the first.
        held[0].send(sc.pdata(1, sc.echo_rq(5), True, True))
        try:
            rsp = sc.read_response(held[0])
            ok = struct.unpack("<H", rsp[0x0900])[0] == 0 and \
                struct.unpack("<H", rsp[0x0100])[0] == 0x8030
        except Exception as e:  # noqa: BLE001
            ok, rsp = False, str(e)
        checks.check(ok, "a held association still answers C-ECHO", repr(rsp))
        # Release one: then there is room again.
        held[0].send(sc.release_rq())
        p = held[0].read_pdu()
        checks.check(p is not None and p[0] == sc.A_RELEASE_RP, "release answered", repr(p))
        held[0].close()
        ok = False
        for _ in range(50):
            rc, out = sc.echoscu(server.port)
            if rc == 0:
                ok = True
                break
            time.sleep(0.1)
        checks.check(ok, "after one is released, echoscu is accepted again", out[-300:])
        held[1].close()
        logs.append(server.log_text())
    finally:
        checks.check(server.stop() == 0, "telerad serve stops cleanly")

    server = sc.Server(telerad, work, "--any-called-aet", name="any").start()
    try:
        rc, out = sc.echoscu(server.port, aec="WHATEVER")
        checks.check(rc == 0, "--any-called-aet accepts another called AE title", out[-300:])
        logs.append(server.log_text())
    finally:
        server.stop()

    # ---- idle timeout ----
    server = sc.Server(telerad, work, "--idle-timeout", "2", name="idle").start()
    try:
        peer = sc.RawPeer(server.port)
        p = peer.associate()
        checks.check(p is not None and p[0] == sc.A_ASSOCIATE_AC, "raw association accepted")
        t0 = time.time()
        rc, out = sc.echoscu(server.port)
        checks.check(rc == 0, "echoscu works while the silent peer waits", out[-300:])
        seen = peer.outcome(timeout=30)
        waited = time.time() - t0
        checks.check(seen == [sc.A_ABORT], "the silent peer gets an A-ABORT, then the "
                     "connection closes", repr(seen))
        checks.check(1.5 <= waited <= 10, "... after the idle timeout (2 s)",
                     "after %.1f s" % waited)
        print("      idle peer aborted after %.1f s" % waited)
        peer.close()
        # A peer that keeps talking is not cut off.
        peer = sc.RawPeer(server.port)
        peer.associate()
        ok = True
        for i in range(4):
            time.sleep(1.0)
            peer.send(sc.pdata(1, sc.echo_rq(i + 1), True, True))
            try:
                sc.read_response(peer)
            except Exception:  # noqa: BLE001
                ok = False
        checks.check(ok, "a peer that talks every second survives 4 s with --idle-timeout 2")
        peer.send(sc.release_rq())
        peer.close()
        logs.append(server.log_text())
    finally:
        checks.check(server.stop() == 0, "telerad serve stops cleanly")

    # ---- a slow peer beside a fast one ----
    server = sc.Server(telerad, work, name="slow").start()
    try:
        slow_src = os.path.join(work, "slow.dcm")
        slow_uid = sc.make_file(slow_src, rows=128, cols=128, seed=4242)
        with open(slow_src, "rb") as f:
            raw = f.read()
        # The data set of the file (explicit VR LE) after the meta information.
        import pydicom
        with open(slow_src, "rb") as f:
            pydicom.filereader.read_preamble(f, False)
            pydicom.filereader._read_file_meta_info(f)
            offset = f.tell()
        dataset = raw[offset:]
        fast_dir = os.path.join(work, "fast")
        os.makedirs(fast_dir)
        fast = {}
        for i in range(100):
            p = os.path.join(fast_dir, "img%03d.dcm" % i)
            fast[sc.make_file(p, seed=5000 + i)] = p
        result = {}

        def trickle():
            try:
                peer = sc.RawPeer(server.port, timeout=60)
                p = peer.associate(sc.associate_rq(contexts=(
                    (1, sc.CT_STORAGE, (sc.EXPLICIT_LE,)),)))
                if p is None or p[0] != sc.A_ASSOCIATE_AC:
                    result["error"] = "not accepted: %r" % (p,)
                    return
                peer.send(sc.pdata(1, sc.store_rq(sc.CT_STORAGE, slow_uid), True, True))
                # One P-DATA-TF per 1 KB piece, one piece every ~100 ms.
                pieces = [dataset[i:i + 1024] for i in range(0, len(dataset), 1024)]
                step = max(1, len(pieces) // 80)
                for k, piece in enumerate(pieces):
                    peer.send(sc.pdata(1, piece, False, k == len(pieces) - 1))
                    if k % step == 0:
                        time.sleep(0.1)
                rsp = sc.read_response(peer)
                result["status"] = struct.unpack("<H", rsp[0x0900])[0]
                peer.send(sc.release_rq())
                peer.read_pdu()
                peer.close()
            except Exception as e:  # noqa: BLE001
                result["error"] = str(e)

        t = threading.Thread(target=trickle)
        t0 = time.time()
        t.start()
        time.sleep(0.5)
        tf = time.time()
        rc, out = sc.storescu(server.port, [fast_dir], "+sd", "-R")
        fast_s = time.time() - tf
        checks.check(rc == 0, "storescu of 100 files beside the slow peer", out[-400:])
        slow_running = t.is_alive()
        t.join(120)
        slow_s = time.time() - t0
        print("      100 files: %.1f s while the slow peer took %.1f s" % (fast_s, slow_s))
        checks.check(slow_running and fast_s < slow_s,
                     "storescu finished while the slow peer was still sending",
                     "storescu %.1f s, slow peer %.1f s" % (fast_s, slow_s))
        checks.check(result.get("status") == 0, "the slow C-STORE succeeds",
                     repr(result))
        diff = sc.compare_stored(telerad, slow_src, server.stored_path(slow_uid))
        checks.check(diff is None, "the slow object is stored whole and equal", diff or "")
        bad = [p for uid, p in fast.items()
               if sc.compare_stored(telerad, p, server.stored_path(uid))]
        checks.check(not bad, "the 100 fast files are stored and equal", ", ".join(bad[:3]))
        logs.append(server.log_text())
    finally:
        checks.check(server.stop() == 0, "telerad serve stops cleanly")
    for log in logs:
        if "AddressSanitizer" in log or "runtime error" in log:
            checks.check(False, "no sanitizer report in the server log", log[-3000:])
    if checks.failed:
        print("logs kept in %s" % work)
    else:
        shutil.rmtree(work, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
