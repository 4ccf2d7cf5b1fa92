#!/usr/bin/python3
"""test_find.py - C-FIND answers of `telerad serve` as real peers read them, and how they lie in
P-DATA-TF PDUs.

    /usr/bin/python3 tests/interop_scp/test_find.py build/telerad

telerad sends a pending C-FIND response as one P-DATA-TF PDU holding two PDVs, the command's
and the data set's (PS3.8 9.3.5 allows several PDVs in a PDU; annex E: the command's fragments,
the last one flagged, before the data set's), and gathers up to 16 responses into one write.
Here, with 40 studies stored (more than two such batches), one of them with a 6,000-character
Study Comments so that its response does not fit a 4,096-byte PDU:

  * DCMTK's findscu with its default maximum PDU (16,384) and with the smallest it allows
    (4,096): every study comes back once (responses written to files with -X and read with
    pydicom), the long Study Comments whole;
  * `telerad find` (our SCU) with --max-pdu 4096: the same;
  * a raw peer announcing 4,096 bytes reads the answer PDU by PDU: every PDU fits, holds one
    message only, and each pending response's data set begins in its command's PDU (the short
    ones are one PDU each, the long one several);
  * a C-CANCEL after the first response still ends the answer with status Cancel (FE00).
"""
import glob
import os
import shutil
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scp_common as sc  # noqa: E402

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDIES = 40
LONG_COMMENT = ("LONG COMMENTS " * 430)[:6000]


def make_studies(folder):
    """STUDIES one-image studies; the first has a 6,000-character Study Comments (LT)."""
    import pydicom
    os.makedirs(folder)
    uids = []
    for i in range(STUDIES):
        path = os.path.join(folder, "s%02d.dcm" % i)
        study = "1.2.826.0.1.3680043.8.498.99.%d" % (i + 1)
        sc.make_file(path, seed=i, rows=8, cols=8, extra={"study": study})
        ds = pydicom.dcmread(path)
        ds.PatientName = "FIND^TEST%02d" % i
        ds.PatientID = "FIND%02d" % i  # one patient each: patient attributes are per patient
        if i == 0:
            ds.StudyComments = LONG_COMMENT
        ds.save_as(path, write_like_original=False)
        uids.append(study)
    return uids


def find_rq(message_id=1):
    return sc.command_set([(0x0002, sc._uid(STUDY_ROOT_FIND)), (0x0100, sc.us(0x0020)),
                           (0x0110, sc.us(message_id)), (0x0700, sc.us(0)),
                           (0x0800, sc.us(0))])


def cancel_rq(message_id=1):
    return sc.command_set([(0x0100, sc.us(0x0FFF)), (0x0120, sc.us(message_id)),
                           (0x0800, sc.us(0x0101))])


def identifier():
    """QueryRetrieveLevel=STUDY, StudyInstanceUID, PatientName and StudyComments asked for
    (Implicit VR Little Endian)."""
    def el(group, elem, value):
        if len(value) % 2:
            value += b" "
        return struct.pack("<HHI", group, elem, len(value)) + value
    return (el(0x0008, 0x0052, b"STUDY") + el(0x0010, 0x0010, b"") +
            el(0x0020, 0x000D, b"") + el(0x0032, 0x4000, b""))


def status_of(command):
    return struct.unpack("<H", command[0x0900])[0]


def raw_find(port, max_pdu, cancel_after=None):
    """A C-FIND by hand, read PDU by PDU: a dict of what was seen, and the rules broken."""
    peer = sc.RawPeer(port)
    out = {"pdus": 0, "pending": 0, "packed": 0, "largest": 0, "status": None, "broken": []}
    try:
        p = peer.associate(sc.associate_rq(contexts=((1, STUDY_ROOT_FIND, (sc.IMPLICIT_LE,)),),
                                           max_pdu=max_pdu))
        if p is None or p[0] != sc.A_ASSOCIATE_AC:
            out["broken"].append("association not accepted: %r" % (p,))
            return out
        peer.send(sc.pdata(1, find_rq(), True, True) + sc.pdata(1, identifier(), False, True))
        want = "command"          # command, dataset
        command = b""
        cancelled = False
        while True:
            p = peer.read_pdu()
            if p is None or p[0] != sc.P_DATA_TF:
                out["broken"].append("expected P-DATA-TF, got %r" % (p if p is None else p[0]))
                return out
            out["pdus"] += 1
            out["largest"] = max(out["largest"], len(p[1]))
            if len(p[1]) > max_pdu:
                out["broken"].append("a P-DATA-TF of %d bytes, maximum %d" % (len(p[1]), max_pdu))
            first = True
            ended_command_here = False
            done = False
            for _pc, is_command, last, data in sc.pdvs(p[1]):
                if want == "command" and command == b"" and not first:
                    out["broken"].append("PDU %d holds a second message" % out["pdus"])
                if is_command != (want == "command"):
                    out["broken"].append("PDU %d: a %s fragment where a %s one was due" %
                                         (out["pdus"], "command" if is_command else "data set",
                                          want))
                if is_command:
                    command += data
                    if last:
                        c = sc.parse_command(command)
                        command = b""
                        status = status_of(c)
                        has_dataset = struct.unpack("<H", c[0x0800])[0] != 0x0101
                        if status in (0xFF00, 0xFF01):
                            out["pending"] += 1
                        else:
                            out["status"] = status
                            done = not has_dataset
                        want = "dataset" if has_dataset else "command"
                        ended_command_here = True
                else:
                    if ended_command_here and out["status"] is None:
                        out["packed"] += 1
                        ended_command_here = False
                    if last:
                        want = "command"
                        done = out["status"] is not None
                first = False
            if cancel_after and out["pending"] >= cancel_after and not cancelled:
                peer.send(sc.pdata(1, cancel_rq(), True, True))
                cancelled = True
            if done and want == "command":
                break
        peer.send(sc.release_rq())
        p = peer.read_pdu()
        if p is None or p[0] != sc.A_RELEASE_RP:
            out["broken"].append("no A-RELEASE-RP: %r" % (p if p is None else p[0]))
        return out
    finally:
        peer.close()


def read_extracted(folder):
    """{StudyInstanceUID: (PatientName, StudyComments)} of findscu -X's rsp*.dcm files."""
    import pydicom
    got = {}
    for path in sorted(glob.glob(os.path.join(folder, "rsp*.dcm"))):
        ds = pydicom.dcmread(path, force=True)
        got[str(ds.get("StudyInstanceUID", ""))] = (str(ds.get("PatientName", "")),
                                                    str(ds.get("StudyComments", "")))
    return got


def main():
    telerad = sc.telerad_path()
    sc.need_programs("findscu", "storescu")
    sc.need_pydicom()
    work = sc.tempdir("telerad-scp-find.")
    checks = sc.Checks("interop_scp_find")
    server = None
    try:
        uids = make_studies(os.path.join(work, "src"))
        server = sc.Server(telerad, work).start()
        rc, out = sc.storescu(server.port, sorted(glob.glob(os.path.join(work, "src", "*.dcm"))))
        checks.check(rc == 0 and len(server.stored()) == STUDIES,
                     "%d studies stored with storescu" % STUDIES, out[-600:])

        # DCMTK's findscu, default and smallest maximum PDU (Study Comments by its tag: some
        # DCMTK dictionaries give the keyword to a private tag).
        for max_pdu in (16384, 4096):
            outdir = os.path.join(work, "findscu-%d" % max_pdu)
            os.makedirs(outdir)
            rc, out = sc.run(["findscu", "-S", "-aec", sc.AET, "--max-pdu", str(max_pdu), "-X",
                              "-od", outdir, "-k", "QueryRetrieveLevel=STUDY", "-k",
                              "StudyInstanceUID", "-k", "PatientName", "-k", "0032,4000",
                              "127.0.0.1", str(server.port)])
            got = read_extracted(outdir)
            checks.check(rc == 0 and sorted(got) == sorted(uids),
                         "findscu --max-pdu %d: %d responses, every study once" %
                         (max_pdu, len(got)), "exit %d, %d responses: %s" % (rc, len(got),
                                                                            out[-800:]))
            first = got.get(uids[0], ("", ""))
            checks.check(first[1] == LONG_COMMENT and first[0] == "FIND^TEST00",
                         "findscu --max-pdu %d: the 6,000-character Study Comments whole" %
                         max_pdu, "PatientName %r, StudyComments of %d characters" %
                         (first[0], len(first[1])))
            names = sorted(v[0] for v in got.values())
            checks.check(names == ["FIND^TEST%02d" % i for i in range(STUDIES)],
                         "findscu --max-pdu %d: every PatientName right" % max_pdu,
                         repr(names[:5]))

        # telerad find (our SCU), small maximum PDU.
        rc, so = sc.run([telerad, "find", "-aec", sc.AET, "--max-pdu", "4096", "--json", "-k",
                         "StudyInstanceUID=", "-k", "StudyComments=", "127.0.0.1",
                         str(server.port)])
        lines = [x for x in so.splitlines() if x.startswith("{")]
        found = [x for x in lines if "1.2.826.0.1.3680043.8.498.99." in x]
        checks.check(rc == 0 and len(found) == STUDIES and
                     sum(LONG_COMMENT in x for x in found) == 1,
                     "telerad find --max-pdu 4096: %d matches, the long one whole" % len(found),
                     so[-600:])

        # The PDUs themselves.
        r = raw_find(server.port, 4096)
        checks.check(not r["broken"] and r["status"] == 0 and r["pending"] == STUDIES,
                     "raw peer (max PDU 4096): %d pending responses in %d PDUs (largest %d "
                     "bytes), final Success, every PDU one message and within 4096 bytes" %
                     (r["pending"], r["pdus"], r["largest"]), repr(r))
        checks.check(r["packed"] == STUDIES and r["pdus"] > STUDIES + 1,
                     "raw peer: each pending response's data set begins in its command's PDU "
                     "(%d of %d); the long one takes more than one" % (r["packed"], STUDIES),
                     repr(r))
        r = raw_find(server.port, 65536)
        checks.check(not r["broken"] and r["pending"] == STUDIES and r["packed"] == STUDIES and
                     r["pdus"] == STUDIES + 1,
                     "raw peer (max PDU 65536): one PDU per response (%d for %d responses and "
                     "the final one)" % (r["pdus"], STUDIES), repr(r))
        r = raw_find(server.port, 16384, cancel_after=1)
        checks.check(not r["broken"] and r["status"] == 0xFE00 and 1 <= r["pending"] <= STUDIES,
                     "raw peer: C-CANCEL after the first response: %d pending, then status "
                     "%s" % (r["pending"], "%04X" % r["status"] if r["status"] is not None
                             else None), repr(r))
    except (RuntimeError, OSError, TimeoutError) as e:
        checks.check(False, "set-up", str(e))
    finally:
        status = server.stop() if server else 0
        if server:
            checks.check(status == 0, "telerad serve stopped cleanly", server.log_text()[-1000:])
        if checks.failed == 0:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("work folder kept: " + work)
    checks.finish()


if __name__ == "__main__":
    main()
