#!/usr/bin/python3
"""telerad echo, send, find, move and get against Orthanc (Debian's orthanc package), and
Orthanc's C-FIND against `telerad serve`.

usage: test_orthanc.py TELERAD

Debian's Orthanc 1.10 listens on every address and cannot be told to take loopback only, so
the test runs in a private network namespace of its own (`unshare -n`, with only `lo`, brought
up): it re-executes itself there, and starts Orthanc, a DCMTK storescp (the C-MOVE destination)
and every telerad run inside. Orthanc gets a generated configuration (storage and index in a
temporary folder, DicomCheckCalledAet false, the test's AEs in DicomModalities). Counts are
read through Orthanc's REST API on 127.0.0.1 inside the namespace, and stored files are fetched
through it to compare their data sets with the originals.
"""
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Checks, Peer, describe, run  # noqa: E402

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOM_PORT = 4242
HTTP_PORT = 8042
DEST_PORT = 11113
IN_NAMESPACE = "TELERAD_INTEROP_NETNS"


def enter_namespace():
    """Re-run this script in a new network namespace; never returns."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        common.skip("unshare (util-linux) and ip (iproute2) are needed to isolate Orthanc")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        common.skip("cannot create a network namespace (unshare -n needs root or user "
                    "namespaces): %s" % probe.stderr.decode(errors="replace").strip())
    env = dict(os.environ, **{IN_NAMESPACE: "1"})
    os.execvpe("unshare", ["unshare", "-n", sys.executable, os.path.abspath(__file__)]
               + sys.argv[1:], env)


def rest(path, raw=False):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (HTTP_PORT, path), timeout=30) as r:
        data = r.read()
    return data if raw else json.loads(data)


def rest_post(path, body):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (HTTP_PORT, path),
                                 data=body.encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def wait_rest(timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            return rest("/system")
        except OSError:
            time.sleep(0.2)
    return None


def orthanc_config(work):
    cfg = {
        "Name": "telerad-interop",
        "StorageDirectory": os.path.join(work, "orthanc-storage"),
        "IndexDirectory": os.path.join(work, "orthanc-index"),
        "StorageCompression": False,
        "Plugins": [],
        "HttpServerEnabled": True,
        "HttpPort": HTTP_PORT,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": "ORTHANC",
        "DicomPort": DICOM_PORT,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomModalities": {
            "telerad": {"AET": "TELERAD", "Host": "127.0.0.1", "Port": 11112,
                        "AllowEcho": True, "AllowFind": True, "AllowMove": True,
                        "AllowGet": True, "AllowStore": True},
            "dest": {"AET": "STORE_DEST", "Host": "127.0.0.1", "Port": DEST_PORT},
        },
        "SynchronousCMove": True,
        "SaveJobs": False,
        "ConcurrentJobs": 2,
        "DicomScpTimeout": 30,
    }
    path = os.path.join(work, "orthanc.json")
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    return path


def make_studies(folder):
    """Two patients, two studies, 3 series, 30 CT/MR images. Returns the study list."""
    os.makedirs(folder, exist_ok=True)
    spec = [("TEST^ONE", "T001", "20240110", [("CT", 12), ("CT", 8)]),
            ("TEST^TWO", "T002", "20240320", [("MR", 10)])]
    studies = []
    n = 0
    for name, pid, date, series_list in spec:
        study = {"uid": common.new_uid(), "images": {}}
        for k, (modality, count) in enumerate(series_list):
            series = common.new_uid()
            for i in range(count):
                n += 1
                path = os.path.join(folder, "study_%s" % pid, "IM%03d.dcm" % n)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                uid = common.write_image(path, name, pid, study["uid"], series, i + 1,
                                         modality=modality, study_date=date,
                                         series_number=k + 1, rows=128, cols=128)
                study["images"][uid] = path
        studies.append(study)
    return studies


def compare_with_orthanc(c, what, sources, work):
    bad = []
    for uid, src in sources.items():
        found = rest_post("/tools/lookup", uid)
        ids = [f["ID"] for f in found if f.get("Type") == "Instance"]
        if not ids:
            bad.append("%s: not in Orthanc" % os.path.basename(src))
            continue
        dst = os.path.join(work, "from-orthanc.dcm")
        with open(dst, "wb") as f:
            f.write(rest("/instances/%s/file" % ids[0], raw=True))
        d = common.dataset_differences(src, dst)
        if d:
            bad.append("%s: %s" % (os.path.basename(src), "; ".join(d[:3])))
    c.check(not bad, "%s: every instance stored in Orthanc with the same data set" % what,
            "\n".join(bad[:20]))


def matches(out):
    return out.count("# Match ")


def main():
    telerad = common.telerad_path()
    if not os.path.exists(ORTHANC):
        common.skip("Orthanc is not installed (Debian package orthanc)")
    common.need_programs("storescp")
    common.need_pydicom()
    if os.environ.get(IN_NAMESPACE) != "1":
        enter_namespace()
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)

    work = common.tempdir("telerad-scu-orthanc-")
    c = Checks()
    peers = []
    try:
        dest_out = os.path.join(work, "moved")
        os.makedirs(dest_out)
        peers.append(Peer("storescp", ["storescp", "-aet", "STORE_DEST", "-od", dest_out,
                                       str(DEST_PORT)], work, port=DEST_PORT))
        cfg = orthanc_config(work)
        peers.append(Peer("orthanc", [ORTHANC, cfg], work, port=DICOM_PORT, ready_timeout=60))
        system = wait_rest()
        if not system:
            raise RuntimeError("Orthanc's REST API did not answer")
        print("Orthanc %s" % system.get("Version"), flush=True)
        base = ["-aet", "TELERAD", "-aec", "ORTHANC", "127.0.0.1", str(DICOM_PORT)]

        rc, so, se = run([telerad, "echo", "-r", "2"] + base)
        c.check(rc == 0 and so.count("Success (0000)") == 2, "echo -r 2 to Orthanc",
                describe(rc, so, se))

        studies = make_studies(os.path.join(work, "src"))
        rc, so, se = run([telerad, "send", "-j", "3"] + base + [os.path.join(work, "src")])
        stats = rest("/statistics")
        c.check(rc == 0 and "sent 30 of 30 files" in so and stats["CountInstances"] == 30,
                "send -j 3 of a folder of 30 images: Orthanc has 30 instances",
                describe(rc, so, se) + "\nstatistics: %s" % stats)
        sources = {}
        for st in studies:
            sources.update(st["images"])
        compare_with_orthanc(c, "send", sources, work)

        comp = common.compressed_test_files(os.path.join(work, "compressed"))
        import pydicom
        comp_sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
                        for p, _ in comp}
        rc, so, se = run([telerad, "send"] + base + [p for p, _ in comp])
        stats = rest("/statistics")
        c.check(rc == 0 and stats["CountInstances"] == 30 + len(comp),
                "send of %d compressed files: stored" % len(comp),
                describe(rc, so, se) + "\nstatistics: %s" % stats)
        compare_with_orthanc(c, "compressed send", comp_sources, work)
        ts_bad = []
        for uid, src in comp_sources.items():
            ids = [f["ID"] for f in rest_post("/tools/lookup", uid)]
            meta = rest("/instances/%s/metadata/TransferSyntax" % ids[0], raw=True).decode()
            if meta != common.transfer_syntax_of(src):
                ts_bad.append("%s: %s" % (os.path.basename(src), meta))
        c.check(not ts_bad, "compressed files stored in their own transfer syntax", ts_bad)

        one, two = studies
        rc, so, se = run([telerad, "find", "-k", "PatientName=TEST*", "-k",
                          "StudyInstanceUID="] + base)
        c.check(rc == 0 and matches(so) == 2, "find PatientName=TEST*: 2 studies",
                describe(rc, so, se))
        rc, so, se = run([telerad, "find", "-P", "-k", "PatientID=T00?", "-k",
                          "PatientName="] + base)
        c.check(rc == 0 and matches(so) == 2, "find -P PatientID=T00?: 2 patients",
                describe(rc, so, se))
        rc, so, se = run([telerad, "find", "-k", "StudyDate=20240301-20240331", "-k",
                          "StudyInstanceUID="] + base)
        c.check(rc == 0 and matches(so) == 1 and two["uid"] in so,
                "find StudyDate=20240301-20240331: study two", describe(rc, so, se))
        rc, so, se = run([telerad, "find", "-L", "SERIES", "-k",
                          "StudyInstanceUID=" + one["uid"], "-k", "SeriesInstanceUID=", "-k",
                          "NumberOfSeriesRelatedInstances="] + base)
        c.check(rc == 0 and matches(so) == 2, "find -L SERIES in study one: 2 series",
                describe(rc, so, se))
        rc, so, se = run([telerad, "find", "--json", "-L", "IMAGE", "-k",
                          "StudyInstanceUID=" + two["uid"], "-k", "SOPInstanceUID="] + base)
        lines = [ln for ln in so.splitlines() if ln.strip()]
        try:
            got = {json.loads(ln)["00080018"]["Value"][0] for ln in lines}
        except (ValueError, KeyError, IndexError):
            got = set()
        c.check(rc == 0 and got == set(two["images"]),
                "find --json -L IMAGE: the 10 SOP Instance UIDs of study two",
                describe(rc, so, se))

        rc, so, se = run([telerad, "move", "-aem", "STORE_DEST", "-k",
                          "StudyInstanceUID=" + one["uid"]] + base, timeout=120)
        got = common.index_by_sop_uid(dest_out)
        c.check(rc == 0 and set(got) == set(one["images"]),
                "move study one (20 images) to a storescp: all arrive",
                describe(rc, so, se) + "\narrived: %d" % len(got))
        bad = [u for u in one["images"] if u in got and
               common.dataset_differences(one["images"][u], got[u])]
        c.check(not bad, "move: data sets unchanged", bad[:5])
        rc, so, se = run([telerad, "move", "-aem", "UNKNOWN_AE", "-k",
                          "StudyInstanceUID=" + one["uid"]] + base)
        c.check(rc == 1, "move to an AE Orthanc does not know: exit 1", describe(rc, so, se))

        out = os.path.join(work, "get")
        os.makedirs(out)
        rc, so, se = run([telerad, "get", "--out", out, "-k",
                          "StudyInstanceUID=" + two["uid"]] + base, timeout=120)
        names = sorted(os.listdir(out))
        c.check(rc == 0 and names == sorted(u + ".dcm" for u in two["images"]),
                "get study two: 10 files named SOPInstanceUID.dcm", describe(rc, so, se)
                + "\nfiles: %s" % names[:5])
        bad = [u for u in two["images"] if os.path.exists(os.path.join(out, u + ".dcm")) and
               common.dataset_differences(two["images"][u], os.path.join(out, u + ".dcm"))]
        c.check(not bad, "get: data sets unchanged", bad[:5])
        out2 = os.path.join(work, "get-compressed")
        os.makedirs(out2)
        jpeg = [u for u, p in comp_sources.items() if p.endswith("SC_rgb_jpeg_dcmtk.dcm")]
        if jpeg:
            rc, so, se = run([telerad, "get", "--out", out2, "-L", "IMAGE", "-k",
                              "StudyInstanceUID=" + str(pydicom.dcmread(
                                  comp_sources[jpeg[0]], stop_before_pixels=True)
                                  .StudyInstanceUID), "-k", "SeriesInstanceUID=" + str(
                                  pydicom.dcmread(comp_sources[jpeg[0]],
                                                  stop_before_pixels=True).SeriesInstanceUID),
                              "-k", "SOPInstanceUID=" + jpeg[0]] + base)
            path = os.path.join(out2, jpeg[0] + ".dcm")
            # Orthanc, as the acceptor, picks the transfer syntax of each storage context from
            # its own preference list, uncompressed first, and decompresses to it: the image
            # may come back as JPEG or as Explicit VR Little Endian. Either way every other
            # attribute is unchanged.
            ts = common.transfer_syntax_of(path) if os.path.exists(path) else "none"
            diffs = common.dataset_differences(comp_sources[jpeg[0]], path) if \
                os.path.exists(path) else ["missing"]
            if ts != "1.2.840.10008.1.2.4.50":
                diffs = [d for d in diffs if "PixelData" not in d and
                         "PhotometricInterpretation" not in d]
            c.check(rc == 0 and not diffs,
                    "get of a JPEG baseline image: it arrives (as %s), attributes unchanged"
                    % ts, describe(rc, so, se) + "\n" + "\n".join(diffs))

        rc, so, se = run([telerad, "find", "-aet", "STRANGER", "-aec", "ORTHANC", "-k",
                          "PatientName=", "127.0.0.1", str(DICOM_PORT)])
        c.check(rc == 1, "find from an AE Orthanc does not know: exit 1 (%s)"
                % (se.strip().splitlines() or ["?"])[-1], describe(rc, so, se))

        # The other way round: Orthanc's C-FIND to `telerad serve` (its modality "telerad",
        # port 11112), whose pending responses come as one P-DATA-TF each (command and data
        # set PDVs, PS3.8 9.3.5), up to 16 of them to a write.
        peers.append(Peer("telerad-serve", [telerad, "serve", "--data",
                                            os.path.join(work, "serve-data"), "--dicom-port",
                                            "11112", "--http-port", "0"], work, port=11112))
        rc, so, se = run([telerad, "send", "-aec", "TELERAD", "127.0.0.1", "11112",
                          os.path.join(work, "src")])
        c.check(rc == 0 and "sent 30 of 30 files" in so, "send of the 30 images to telerad serve",
                describe(rc, so, se))
        for level, query, want in (
                ("Instance", {"StudyInstanceUID": studies[0]["uid"], "SOPInstanceUID": ""},
                 ("SOPInstanceUID", set(studies[0]["images"]))),
                ("Study", {"StudyInstanceUID": "", "PatientName": ""},
                 ("StudyInstanceUID", {st["uid"] for st in studies}))):
            q = rest_post("/modalities/telerad/query",
                          json.dumps({"Level": level, "Query": query}))
            got = []
            for i in rest("/queries/%s/answers" % q["ID"]):
                got.append(rest("/queries/%s/answers/%s/content?simplify" % (q["ID"], i))
                           .get(want[0]))
            c.check(sorted(got) == sorted(want[1]),
                    "Orthanc's C-FIND to telerad serve at %s level: %d answers, each %s once"
                    % (level.upper(), len(got), want[0]),
                    "got %s\nwanted %s" % (sorted(got), sorted(want[1])))
    except (RuntimeError, OSError) as e:
        c.check(False, "set-up or REST call", str(e))
    finally:
        for p in peers:
            p.stop()
        if c.failed:
            for p in peers:
                print("--- %s log\n%s" % (p.name, p.output()[-4000:]))
        if c.failed == 0 and not os.environ.get("TELERAD_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("work folder kept: " + work)
    c.finish()


if __name__ == "__main__":
    main()
