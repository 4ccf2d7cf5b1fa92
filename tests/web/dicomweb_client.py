#!/usr/bin/python3
"""telerad's DICOMweb against npm's dicomweb-client 0.11 (the DICOMweb client of OHIF), run in
Node by dicomweb_client.mjs.

usage: dicomweb_client.py TELERAD [--keep]

Starts `telerad serve --dicom-port 0 --http-port 0`, stores a few studies with storescu
(synthetic CT, compressed JPEG-LS and RLE multi-frame files from pydicom's test data), writes a
plan for the Node script, runs it (searchForStudies, searchForSeries, searchForInstances,
retrieveStudyMetadata, retrieveSeriesMetadata, retrieveInstanceFrames,
retrieveInstanceRendered, storeInstances, retrieveInstance), counts its checks, and judges what
it saved with pydicom and DCMTK: metadata equal to the headers sent, frames equal to the pixel
data (or the stored bitstreams, or the reference decoding), the stored-and-retrieved instance
equal to the file sent.

Exits 77 when node or node_modules/dicomweb-client (npm ci at the repository root) is missing.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import web_common as w  # noqa: E402
import dicomweb as dw  # noqa: E402

warnings.filterwarnings("ignore")
HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    telerad = w.scp_common.telerad_path()
    w.need_tools()
    node = shutil.which("node")
    if not node:
        w.skip("node is not installed (Debian package nodejs)")
    if not os.path.exists(os.path.join(w.REPO, "node_modules", "dicomweb-client")):
        w.skip("node_modules/dicomweb-client is missing: run `npm ci` at the repository root")
    keep = "--keep" in sys.argv
    work = w.tempdir("telerad-web-client-")
    c = w.Checks("web_dicomweb_client")
    srv = w.WebServer(telerad, work, "-q").start()
    try:
        gen = os.path.join(work, "gen")
        w.gen_study(gen, "--studies", "2", "--series", "2", "--images", "2", "--rows", "64",
                    "--cols", "64", "--seed", "41")
        files = sorted(glob.glob(os.path.join(gen, "*", "*", "*.dcm")))
        compressed = [(p, what) for p, what in w.prepare_compressed(os.path.join(work, "comp"))
                      if what in ("JPEG-LS lossless", "RLE RGB, 2 frames")]
        failures = w.send_files(srv.dicom_port, files + [p for p, _ in compressed])
        c.check(not failures, "storescu: %d files stored" % (len(files) + len(compressed)),
                "; ".join(failures)[:400])
        cat = dw.Catalog()
        for f in files + [p for p, _ in compressed]:
            cat.add(f)

        # What to store through the client: a new instance of a new study.
        store = w.read_dicom(files[0])
        store.StudyInstanceUID, store.SeriesInstanceUID, store.SOPInstanceUID = \
            w.new_uid(), w.new_uid(), w.new_uid()
        store.file_meta.MediaStorageSOPInstanceUID = store.SOPInstanceUID
        store.PatientName, store.PatientID = "Stored^Through^Client", "STOW0001"
        store_path = os.path.join(work, "store.dcm")
        store.save_as(store_path, write_like_original=False)

        plain = files[0]
        ph = w.read_dicom(plain, stop_before_pixels=True)
        frames = [{"what": "uncompressed CT", "study": str(ph.StudyInstanceUID),
                   "series": str(ph.SeriesInstanceUID), "sop": str(ph.SOPInstanceUID),
                   "frames": [1]}]
        for p, what in compressed:
            h = w.read_dicom(p, stop_before_pixels=True)
            n = int(h.get("NumberOfFrames", 1) or 1)
            base = {"study": str(h.StudyInstanceUID), "series": str(h.SeriesInstanceUID),
                    "sop": str(h.SOPInstanceUID), "frames": list(range(1, n + 1))}
            frames.append(dict(base, what=what + " as stored",
                               mediaTypes=[{"mediaType": "application/octet-stream",
                                            "transferSyntaxUID": "*"}]))
            frames.append(dict(base, what=what + " decoded", sop_key="decoded"))
        plan = {
            "studies": {s: {"series": {se: sops for se, sops in ser.items()}}
                        for s, ser in cat.studies.items()},
            "search": {"patientName": "nguyen*", "count": len({
                s for s in cat.studies if str(cat.header[cat.first(s)].PatientName).lower()
                .startswith("nguyen")})},
            "frames": {"study": str(ph.StudyInstanceUID), "series": str(ph.SeriesInstanceUID),
                       "instances": frames},
            "rendered": {"study": str(ph.StudyInstanceUID), "series": str(ph.SeriesInstanceUID),
                         "sop": str(ph.SOPInstanceUID)},
            "store": {"file": store_path, "study": str(store.StudyInstanceUID),
                      "series": str(store.SeriesInstanceUID), "sop": str(store.SOPInstanceUID)},
        }
        key = w.authenticate(srv.http_port, srv.admin_password)
        plan["headers"] = {"Authorization": "Bearer " + key} if key else {}
        # Decoded and as-stored frames of one instance would overwrite each other's files: run
        # the script twice (its second storeInstances sends an identical object, which the
        # archive acknowledges again and keeps once).
        out_raw, out_dec = os.path.join(work, "out-raw"), os.path.join(work, "out-decoded")
        plan_raw = dict(plan, frames=dict(plan["frames"], instances=[
            f for f in frames if "mediaTypes" in f or f["what"] == "uncompressed CT"]))
        plan_dec = dict(plan, frames=dict(plan["frames"], instances=[
            f for f in frames if f.get("sop_key") == "decoded"]))
        plan_dec["studies"] = dict(plan["studies"], **{plan["store"]["study"]: {"series": {
            plan["store"]["series"]: [plan["store"]["sop"]]}}})  # stored by the first pass
        base_url = "http://127.0.0.1:%d/dicom-web" % srv.http_port
        outputs = {}
        for name, p, out in (("raw", plan_raw, out_raw), ("decoded", plan_dec, out_dec)):
            os.makedirs(out, exist_ok=True)
            plan_path = os.path.join(work, "plan-%s.json" % name)
            with open(plan_path, "w") as f:
                json.dump(p, f)
            proc = subprocess.run([node, os.path.join(HERE, "dicomweb_client.mjs"), base_url,
                                   plan_path, out], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=300, cwd=w.REPO)
            text = proc.stdout.decode("utf-8", "replace")
            outputs[name] = out
            for line in text.splitlines():
                if line.startswith("ok    ") or line.startswith("FAIL  "):
                    c.check(line.startswith("ok"), "[node %s] %s" % (name, line[6:]))
            c.check(proc.returncode == 0, "dicomweb_client.mjs (%s pass) exit 0" % name,
                    "\n".join(line for line in text.splitlines()
                              if not line.startswith("ok"))[-2000:])

        # Judge what the client received.
        bad = []
        for study in cat.studies:
            mpath = os.path.join(out_raw, "metadata-%s.json" % study)
            if not os.path.exists(mpath):
                bad.append("no metadata for %s" % study)
                continue
            for item in json.load(open(mpath)):
                sop = item["00080018"]["Value"][0]
                src = w.read_dicom(cat.path[sop], stop_before_pixels=True)
                for tag, kw in (("00100010", "PatientName"), ("00100020", "PatientID"),
                                ("0020000E", "SeriesInstanceUID"), ("00080060", "Modality")):
                    got = item.get(tag, {}).get("Value", [None])[0]
                    if isinstance(got, dict):
                        got = got.get("Alphabetic")
                    if got != str(src.get(kw)):
                        bad.append("%s %s: %r vs %r" % (sop[-8:], kw, got, str(src.get(kw))))
        c.check(not bad, "retrieveStudyMetadata: names, IDs, series and modality as sent",
                "; ".join(bad[:4]))
        pd = w.read_dicom(plain)
        got = open(os.path.join(out_raw, "frame-%s-1.bin" % ph.SOPInstanceUID), "rb").read() \
            if os.path.exists(os.path.join(out_raw, "frame-%s-1.bin" % ph.SOPInstanceUID)) else b""
        c.check(got == bytes(pd.PixelData), "retrieveInstanceFrames of an uncompressed image: "
                "the pixel data bytes (%d)" % len(got))
        from pydicom import encaps
        import numpy as np
        for p, what in compressed:
            src = w.read_dicom(p)
            n = int(src.get("NumberOfFrames", 1) or 1)
            want = list(encaps.generate_pixel_data_frame(src.PixelData, n))
            got = [open(os.path.join(out_raw, "frame-%s-%d.bin" % (src.SOPInstanceUID, i + 1)),
                        "rb").read() if os.path.exists(os.path.join(
                            out_raw, "frame-%s-%d.bin" % (src.SOPInstanceUID, i + 1))) else None
                   for i in range(n)]
            c.check(got == want, "retrieveInstanceFrames(%s, transfer-syntax=*): the stored "
                    "bitstreams of %d frames" % (what, n))
            ref, _ = dw.reference_pixels(p, work)
            data = b"".join(open(os.path.join(out_dec, "frame-%s-%d.bin" % (
                src.SOPInstanceUID, i + 1)), "rb").read() for i in range(n)
                if os.path.exists(os.path.join(out_dec, "frame-%s-%d.bin" % (
                    src.SOPInstanceUID, i + 1))))
            dt = ref.dtype.newbyteorder("<")
            mine = np.frombuffer(data, dtype=dt) if len(data) % dt.itemsize == 0 else None
            d = dw.max_difference(mine, ref) if mine is not None else None
            c.check(d == 0, "retrieveInstanceFrames(%s), default media type: decoded frames "
                    "equal DCMTK's decoding" % what, "max difference %s" % d)
        png = os.path.join(out_raw, "rendered.png")
        info = dw.png_info(open(png, "rb").read()) if os.path.exists(png) else None
        c.check(info is not None and max(info[:2]) <= 32,
                "retrieveInstanceRendered(image/png, viewport=32,32): at most 32 pixels",
                repr(info))
        got = os.path.join(out_raw, "retrieved.dcm")
        d = dw.dataset_difference(w.read_dicom(store_path), w.read_dicom(got)) \
            if os.path.exists(got) else "nothing retrieved"
        c.check(d is None, "storeInstances then retrieveInstance: the same data set", str(d))
    finally:
        rc = srv.stop()
        c.check(rc == 0, "telerad serve stops cleanly (exit %s)" % rc, srv.log_text()[-2000:])
        log = srv.log_text()
        c.check("ERROR: AddressSanitizer" not in log and "runtime error:" not in log,
                "no sanitizer report in the server log", log[-3000:])
        if c.failed or keep:
            print("work folder kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    c.finish()


if __name__ == "__main__":
    main()
