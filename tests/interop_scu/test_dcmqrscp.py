#!/usr/bin/python3
"""telerad find, move and get against DCMTK's dcmqrscp, on 127.0.0.1.

usage: test_dcmqrscp.py TELERAD

A dcmqrscp is configured in a temporary folder (an AE with a storage area, loaded with
dcmqridx, and a storescp started by the test as the C-MOVE destination). The archive holds
3 patients, 4 studies, 5 series, 12 images (CT and MR). Checked: match counts at each level in
both information models, wildcards, date ranges, UID lists, sequence keys, --json, C-CANCEL
after N matches; C-MOVE of a study to the storescp (every image arriving with the same data set)
and to an unknown destination (failure, exit 1); C-GET of a study and of a series into --out
(files named by SOP Instance UID, same data sets); a called AE title dcmqrscp does not know
(association rejected, exit 1).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Checks, Peer, describe, run  # noqa: E402

AE = "QR_SCP"


def make_archive(folder):
    """3 patients, 4 studies, 5 series, 12 images. Returns a description of what is where."""
    os.makedirs(folder, exist_ok=True)
    spec = [
        # patient name, id, study date, [(modality, image count)]
        ("DOE^JOHN", "P001", "20240105", [("CT", 3), ("CT", 2)]),
        ("DOE^JOHN", "P001", "20240210", [("CT", 2)]),
        ("DOE^JANE", "P002", "20240301", [("MR", 4)]),
        ("SMITH^ANNA", "P003", "20231220", [("CT", 1)]),
    ]
    studies = []
    n = 0
    for si, (name, pid, date, series_list) in enumerate(spec):
        study = {"uid": common.new_uid(), "patient": pid, "date": date, "series": []}
        for k, (modality, count) in enumerate(series_list):
            series = {"uid": common.new_uid(), "images": {}}
            for i in range(count):
                n += 1
                path = os.path.join(folder, "IMG%03d.dcm" % n)
                uid = common.write_image(path, name, pid, study["uid"], series["uid"], i + 1,
                                         modality=modality, study_date=date,
                                         accession="ACC%d" % (si + 1), study_id=str(si + 1),
                                         series_number=k + 1)
                series["images"][uid] = path
            study["series"].append(series)
        studies.append(study)
    return studies


def write_config(work, port, storage, dest_port):
    cfg = os.path.join(work, "dcmqrscp.cfg")
    with open(cfg, "w") as f:
        f.write("""NetworkTCPPort  = %d
MaxPDUSize      = 16384
MaxAssociations = 16

HostTable BEGIN
store_dest = (STORE_DEST, localhost, %d)
HostTable END

VendorTable BEGIN
VendorTable END

AETable BEGIN
%s  %s  RW  (20, 1024mb)  ANY
AETable END
""" % (port, dest_port, AE, storage))
    return cfg


def matches(out):
    return out.count("# Match ")


def main():
    telerad = common.telerad_path()
    common.need_programs("dcmqrscp", "dcmqridx", "storescp")
    common.need_pydicom()
    work = common.tempdir("telerad-scu-dcmqrscp-")
    c = Checks()
    peers = []
    try:
        studies = make_archive(os.path.join(work, "source"))
        storage = os.path.join(work, "storage")
        os.makedirs(storage)
        files = []
        for st in studies:
            for se in st["series"]:
                for uid, path in se["images"].items():
                    dst = os.path.join(storage, os.path.basename(path))
                    with open(path, "rb") as a, open(dst, "wb") as b:
                        b.write(a.read())
                    files.append(dst)
        rc, so, se = run(["dcmqridx", storage] + files, env=common.DCMTK_ENV)
        if rc != 0:
            raise RuntimeError("dcmqridx failed: " + describe(rc, so, se))

        dest_out = os.path.join(work, "moved")
        os.makedirs(dest_out)
        dest_port = common.free_port()
        peers.append(Peer("storescp", ["storescp", "-aet", "STORE_DEST", "-od", dest_out,
                                       str(dest_port)], work, port=dest_port))
        port = common.free_port()
        cfg = write_config(work, port, storage, dest_port)
        peers.append(Peer("dcmqrscp", ["dcmqrscp", "-c", cfg, str(port)], work, port=port))
        base = ["-aet", "TELERAD", "-aec", AE, "127.0.0.1", str(port)]

        def find(*args):
            return run([telerad, "find"] + list(args) + base)

        a, b, cc, d = studies
        # Echo works on dcmqrscp too.
        rc, so, se = run([telerad, "echo"] + base)
        c.check(rc == 0 and "Success" in so, "echo to dcmqrscp", describe(rc, so, se))

        rc, so, se = find("-k", "PatientName=", "-k", "StudyInstanceUID=")
        c.check(rc == 0 and matches(so) == 4 and "4 matches" in se,
                "find (study root, STUDY level, default): 4 studies", describe(rc, so, se))
        rc, so, se = find("-P", "-k", "PatientName=", "-k", "PatientID=")
        c.check(rc == 0 and matches(so) == 3, "find -P (patient root, PATIENT level): 3 patients",
                describe(rc, so, se))
        rc, so, se = find("-P", "-L", "STUDY", "-k", "PatientID=P001", "-k",
                          "StudyInstanceUID=")
        c.check(rc == 0 and matches(so) == 2, "find -P -L STUDY for patient P001: 2 studies",
                describe(rc, so, se))
        rc, so, se = find("-k", "PatientName=DOE*", "-k", "StudyDate=")
        c.check(rc == 0 and matches(so) == 3, "wildcard PatientName=DOE*: 3 studies",
                describe(rc, so, se))
        rc, so, se = find("-P", "-k", "PatientName=DOE^J?HN", "-k", "PatientID=")
        c.check(rc == 0 and matches(so) == 1 and "P001" in so,
                "wildcard PatientName=DOE^J?HN at PATIENT level: 1 patient",
                describe(rc, so, se))
        rc, so, se = find("-k", "StudyDate=20240101-20240229", "-k", "StudyInstanceUID=")
        c.check(rc == 0 and matches(so) == 2 and a["uid"] in so and b["uid"] in so,
                "date range StudyDate=20240101-20240229: 2 studies", describe(rc, so, se))
        rc, so, se = find("-k", "StudyDate=20240201-", "-k", "StudyInstanceUID=")
        c.check(rc == 0 and matches(so) == 2, "open date range StudyDate=20240201-: 2 studies",
                describe(rc, so, se))
        rc, so, se = find("-k", "StudyInstanceUID=%s\\%s" % (a["uid"], d["uid"]))
        c.check(rc == 0 and matches(so) == 2, "a list of two Study Instance UIDs: 2 studies",
                describe(rc, so, se))
        rc, so, se = find("-L", "SERIES", "-k", "StudyInstanceUID=" + a["uid"], "-k",
                          "SeriesInstanceUID=", "-k", "Modality=")
        c.check(rc == 0 and matches(so) == 2, "SERIES level in a study: 2 series",
                describe(rc, so, se))
        rc, so, se = find("-L", "IMAGE", "-k", "(0020,000D)=" + a["uid"], "-k",
                          "0020000E=" + a["series"][0]["uid"], "-k", "SOPInstanceUID=")
        c.check(rc == 0 and matches(so) == 3,
                "IMAGE level with keys given as (gggg,eeee) and ggggeeee: 3 images",
                describe(rc, so, se))
        rc, so, se = find("--json", "-k", "PatientName=", "-k", "StudyInstanceUID=", "-k",
                          "StudyDate=")
        lines = [ln for ln in so.splitlines() if ln.strip()]
        ok = rc == 0 and len(lines) == 4
        try:
            objs = [json.loads(ln) for ln in lines]
            dates = sorted(o["00080020"]["Value"][0] for o in objs)
            ok = ok and dates == ["20231220", "20240105", "20240210", "20240301"]
        except (ValueError, KeyError, IndexError):
            ok = False
        c.check(ok, "--json: one DICOM JSON object a line, 4 studies with their dates",
                describe(rc, so, se))
        rc, so, se = find("-k", "StudyInstanceUID=", "-k",
                          "ReferencedStudySequence[0].ReferencedSOPClassUID=")
        c.check(rc == 0 and matches(so) == 4, "a sequence key (return key inside an item)",
                describe(rc, so, se))
        rc, so, se = find("--cancel-after", "1", "-k", "StudyInstanceUID=")
        c.check(rc == 0 and matches(so) == 1, "--cancel-after 1: C-CANCEL, 1 match, exit 0",
                describe(rc, so, se))
        rc, so, se = find("-k", "NoSuchKeyword=1")
        c.check(rc == 2 and "NoSuchKeyword" in se, "an unknown keyword: exit 2, named",
                describe(rc, so, se))
        rc, so, se = run([telerad, "find", "-aec", "NOBODY", "127.0.0.1", str(port)])
        c.check(rc == 1 and "rejected" in se and "called AE" in se,
                "a called AE title dcmqrscp does not know: rejected, exit 1",
                describe(rc, so, se))

        # C-MOVE of study A (5 images) to the storescp.
        rc, so, se = run([telerad, "move", "-aem", "STORE_DEST", "-k",
                          "StudyInstanceUID=" + a["uid"]] + base)
        c.check(rc == 0 and "completed 5" not in so and "5 completed, 0 failed" in so,
                "move study A to STORE_DEST: Success, 5 completed", describe(rc, so, se))
        want = {}
        for s in a["series"]:
            want.update(s["images"])
        got = common.index_by_sop_uid(dest_out)
        diffs = [u for u in want if u not in got or common.dataset_differences(want[u], got[u])]
        c.check(len(got) == 5 and not diffs, "the 5 images of study A arrived unchanged",
                "got %d, bad %s" % (len(got), diffs))
        rc, so, se = run([telerad, "move", "-P", "-L", "PATIENT", "-aem", "STORE_DEST", "-k",
                          "PatientID=P003"] + base)
        c.check(rc == 0 and "1 completed" in so, "move -P patient P003: 1 completed",
                describe(rc, so, se))
        rc, so, se = run([telerad, "move", "-aem", "NOWHERE", "-k",
                          "StudyInstanceUID=" + b["uid"]] + base)
        c.check(rc == 1 and "A801" in se, "move to an unknown destination: A801, exit 1",
                describe(rc, so, se))
        rc, so, se = run([telerad, "move", "-k", "StudyInstanceUID=" + b["uid"]] + base)
        c.check(rc == 2, "move without -aem: exit 2", describe(rc, so, se))

        # C-GET of study C (4 MR images) and of one series of study A.
        out = os.path.join(work, "get")
        os.makedirs(out)
        rc, so, se = run([telerad, "get", "--out", out, "-k",
                          "StudyInstanceUID=" + cc["uid"]] + base)
        want = cc["series"][0]["images"]
        names = sorted(os.listdir(out))
        c.check(rc == 0 and names == sorted(u + ".dcm" for u in want),
                "get study C: 4 files named SOPInstanceUID.dcm, nothing else",
                describe(rc, so, se) + "\nfiles: %s" % names)
        diffs = [u for u in want if os.path.exists(os.path.join(out, u + ".dcm")) and
                 common.dataset_differences(want[u], os.path.join(out, u + ".dcm"))]
        c.check(not diffs, "get: the received data sets equal the originals", diffs)
        out2 = os.path.join(work, "get2")
        os.makedirs(out2)
        rc, so, se = run([telerad, "get", "-od", out2, "-L", "SERIES", "-k",
                          "StudyInstanceUID=" + a["uid"], "-k",
                          "SeriesInstanceUID=" + a["series"][1]["uid"]] + base)
        c.check(rc == 0 and len(os.listdir(out2)) == 2, "get -L SERIES (-od DIR): 2 files",
                describe(rc, so, se))
        rc, so, se = run([telerad, "get", "--out", os.path.join(work, "missing"), "-k",
                          "StudyInstanceUID=" + a["uid"]] + base)
        c.check(rc == 1, "get into a folder that does not exist: exit 1", describe(rc, so, se))
    except RuntimeError as e:
        c.check(False, "set-up", str(e))
    finally:
        for p in peers:
            p.stop()
        if c.failed:
            for p in peers:
                print("--- %s log\n%s" % (p.name, p.output()[-3000:]))
        if c.failed == 0 and not os.environ.get("TELERAD_KEEP"):
            import shutil
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("work folder kept: " + work)
    c.finish()


if __name__ == "__main__":
    main()
