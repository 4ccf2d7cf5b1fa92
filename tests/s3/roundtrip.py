#!/usr/bin/python3
"""DCMTK storescu -> telerad serve (objects in S3) -> WADO-RS and C-GET, byte for byte.

    roundtrip.py TELERAD S3_ENV_FILE

S3_ENV_FILE is the env file of a running tests/s3/ceph.sh cluster (the ctest fixture "s3");
skips (77) when it is missing. The test makes its own bucket there and:

  1. writes a configuration file with [archive] store = s3 and [s3] endpoint, region, bucket,
     credentials_file (mode 0600, AWS format), multipart_threshold_mb = 5, part_size_mb = 5;
     `telerad serve --check` names the backend and prints no key;
  2. generates 24 CT instances (128x128, 2 studies) and one large one (2500x2500x16 bit,
     12.5 MB: a multipart upload of 3 parts) with pydicom, and sends them with storescu;
  3. every object in the bucket holds its source's data set byte for byte (after the meta
     group, which telerad writes itself), and nothing else is in the bucket;
  4. WADO-RS of each instance (application/dicom) returns the bucket's object byte for byte,
     first from the write-through cache, then after a restart (cache emptied) from S3;
     QIDO-RS lists both studies;
  5. C-GET of each study (getscu) returns data sets byte-identical to the sources;
  6. bulk data by byte range (the pixel data's BulkDataURI in the metadata), asked for with the
     cache empty, comes by a ranged GET and equals those bytes of the object; so do native
     frames (WADO-RS .../frames/1: the header and the frame by ranged GETs);
  7. the secret key is in no log line and no output; a clean stop exits 0.
"""
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "archive"))
import arc_common as ac  # noqa: E402
import s3util  # noqa: E402


def dataset_bytes(data):
    """The data set of a Part 10 file: what follows the preamble, "DICM" and group 0002."""
    if len(data) < 144 or data[128:132] != b"DICM":
        raise ValueError("not a Part 10 file")
    # (0002,0000) UL, explicit VR little endian: tag 4, VR 2, length 2, value 4.
    group_length = int.from_bytes(data[140:144], "little")
    return data[144 + group_length:]


class Serve:
    def __init__(self, telerad, work, data, conf, n):
        self.log_path = os.path.join(work, "serve-%d.log" % n)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [telerad, "serve", "--config", conf, "--data", data, "--dicom-port", "0",
             "--http-port", "0", "--no-auth"],
            stdout=subprocess.PIPE, stderr=self.log)
        self.dicom = self.http = None
        buf = b""
        end = time.time() + 60
        while (self.dicom is None or self.http is None) and time.time() < end:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if r:
                c = os.read(self.proc.stdout.fileno(), 1)
                if not c:
                    break
                buf += c
                if c == b"\n":
                    line = buf.decode().strip()
                    buf = b""
                    if line.startswith("dicom-port "):
                        self.dicom = int(line.split()[1])
                    elif line.startswith("http-port "):
                        self.http = int(line.split()[1])
            elif self.proc.poll() is not None:
                break
        if self.dicom is None or self.http is None:
            self.stop()
            raise RuntimeError("telerad serve did not start: " + self.text()[-2000:])

    def text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def get(self, path, accept):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.http, path),
                                     headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()
        self.log.close()
        return self.proc.returncode


def big_instance(path, study_uid, rng):
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    ds = Dataset()
    ds.SOPClassUID = ac.CT_IMAGE
    ds.SOPInstanceUID = "2.25.%d" % rng.getrandbits(120)
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = "2.25.%d" % rng.getrandbits(120)
    ds.Modality = "CT"
    ds.PatientName = "LARGE^ONE"
    ds.PatientID = "BIG0001"
    ds.StudyDate = "20240101"
    ds.SeriesNumber = 9
    ds.InstanceNumber = 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 2500
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = np.random.default_rng(rng.getrandbits(32)).integers(
        0, 4096, (2500, 2500)).astype("<u2").tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ac.EXPLICIT_LE
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.save_as(path, write_like_original=False)
    return ac.Instance(path, ds.SOPInstanceUID, study_uid, ds.SeriesInstanceUID)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    telerad, env_file = sys.argv[1], sys.argv[2]
    if not os.path.exists(env_file):
        ac.skip("no S3 gateway: %s is missing (tests/s3/ceph.sh start)" % env_file)
    ac.need_tools("storescu", "getscu")
    checks = ac.Checks("s3_roundtrip")
    env = s3util.read_env(env_file)
    secret = env["TELERAD_S3_SECRET_KEY"]
    bucket = "roundtrip-%d-%d" % (os.getpid(), int(time.time()))
    s3 = s3util.S3.from_env_file(env_file, bucket=bucket)
    s3.create_bucket(bucket)
    work = tempfile.mkdtemp(prefix="telerad-s3rt-")
    server = None
    try:
        creds = os.path.join(work, "credentials")
        with open(creds, "w") as f:
            f.write("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n" %
                    (env["TELERAD_S3_ACCESS_KEY"], secret))
        os.chmod(creds, 0o600)
        conf = os.path.join(work, "telerad.conf")
        with open(conf, "w") as f:
            f.write("[archive]\nstore = s3\n\n[s3]\nendpoint = %s\nregion = %s\nbucket = %s\n"
                    "credentials_file = %s\naddressing = path\nmultipart_threshold_mb = 5\n"
                    "part_size_mb = 5\ncache_mb = 256\n" %
                    (env["TELERAD_S3_ENDPOINT"], env["TELERAD_S3_REGION"], bucket, creds))
        p = subprocess.run([telerad, "serve", "--config", conf, "--check"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        out = p.stdout.decode()
        checks.check(p.returncode == 0 and "store = s3 %s bucket %s" %
                     (env["TELERAD_S3_ENDPOINT"], bucket) in out and secret not in out and
                     env["TELERAD_S3_ACCESS_KEY"] not in out,
                     "serve --check names the S3 backend, without the keys", out)

        rng = ac.seeded(20261122)
        src = os.path.join(work, "src")
        instances = ac.make_instances(src, rng, studies=2, series_per_study=3, per_series=4,
                                      rows=128)
        instances.append(big_instance(os.path.join(src, "big.dcm"), instances[0].study, rng))
        by_sop = {i.sop: i for i in instances}
        data = os.path.join(work, "data")
        server = Serve(telerad, work, data, conf, 1)
        t0 = time.time()
        rc, out = ac.run(ac.storescu_command(server.dicom, [i.path for i in instances]))
        answered = ac.parse_storescu(out)
        ok = sum(1 for _, st, _ in answered if st == "Success")
        checks.check(rc == 0 and ok == len(instances), "storescu: %d of %d stored (%.1f s)" %
                     (ok, len(instances), time.time() - t0), out[-1500:])

        listing = s3.list()
        keys = {os.path.basename(k)[:-4]: k for k in listing}
        checks.check(set(keys) == set(by_sop), "the bucket holds exactly the %d objects sent" %
                     len(by_sop), "%s" % sorted(set(keys) ^ set(by_sop))[:4])
        stored = {}
        bad = []
        for sop, key in keys.items():
            obj = s3.get(key)
            stored[sop] = obj
            with open(by_sop[sop].path, "rb") as f:
                if dataset_bytes(obj) != dataset_bytes(f.read()):
                    bad.append(sop)
        big = instances[-1]
        checks.check(not bad and len(stored.get(big.sop, b"")) > 12_000_000,
                     "each object in S3 holds its source's data set byte for byte (the large "
                     "one, %d bytes, as a multipart upload)" % len(stored.get(big.sop, b"")),
                     str(bad[:3]))

        def wado_all(tag):
            differ = []
            for i in instances:
                status, ctype, body = server.get(
                    "/dicom-web/studies/%s/series/%s/instances/%s" % (i.study, i.series, i.sop),
                    "application/dicom; transfer-syntax=*")
                if status != 200 or body != stored[i.sop]:
                    differ.append((i.sop, status, ctype, len(body)))
            checks.check(not differ, "WADO-RS returns every object byte for byte (%s)" % tag,
                         str(differ[:3]))

        wado_all("from the write-through cache")
        # The pixel data's BulkDataURI (a byte range of the stored object), for later.
        i = instances[1]
        status, _, body = server.get("/dicom-web/studies/%s/series/%s/instances/%s/metadata" %
                                     (i.study, i.series, i.sop), "application/dicom+json")
        uri = json.loads(body)[0].get("7FE00010", {}).get("BulkDataURI", "")
        checks.check("/dicom-web/" in uri, "the metadata gives the pixel data as a BulkDataURI",
                     uri)
        bulk_path = uri[uri.index("/dicom-web/"):] if "/dicom-web/" in uri else ""
        status, _, body = server.get("/dicom-web/studies", "application/dicom+json")
        studies = {s["0020000D"]["Value"][0] for s in json.loads(body)}
        checks.check({i.study for i in instances} <= studies, "QIDO-RS lists both studies")
        checks.check(server.stop() == 0 and not ac.asan_report(server.text()),
                     "clean stop (exit 0)", server.text()[-1500:])
        logs = server.text()

        server = Serve(telerad, work, data, conf, 2)  # a restart empties the cache
        cache = os.path.join(data, "cache")
        checks.check(not os.listdir(cache), "the cache is empty after a restart")
        # Bulk data by byte range, the cache still empty: a ranged GET, nothing cached.
        if bulk_path:
            status, ctype, part = server.get(bulk_path, "multipart/related; "
                                                        "type=\"application/octet-stream\"")
            pixels = 128 * 128 * 2
            obj = stored[instances[1].sop]
            checks.check(status == 200 and obj[-pixels:] in part and
                         len(part) < len(obj) + 400 and not os.listdir(cache),
                         "bulk data by range (a ranged GET, not the whole object) equals those "
                         "bytes of the object", "%s %d %s" % (ctype, len(part), os.listdir(cache)))
        # Native frames: the small object (under the 64 KiB first range) comes whole and is
        # cached; the 12.5 MB one by ranged GETs of its header and its frame, not cached.
        for inst, pixels, cached in ((instances[1], 128 * 128 * 2, 1),
                                     (instances[-1], 2500 * 2500 * 2, 0)):
            before = len(os.listdir(cache))
            status, ctype, part = server.get(
                "/dicom-web/studies/%s/series/%s/instances/%s/frames/1" %
                (inst.study, inst.series, inst.sop), "multipart/related; "
                "type=\"application/octet-stream\"; transfer-syntax=*")
            obj = stored[inst.sop]
            checks.check(status == 200 and "application/octet-stream" in ctype and
                         obj[-pixels:] in part and len(part) < pixels + 400 and
                         len(os.listdir(cache)) == before + cached,
                         "frame 1 of a %d-byte object equals its pixel data (%s)" %
                         (len(obj), "by ranged GETs, nothing cached" if not cached else
                          "the whole object, now cached"),
                         "%d %s %d %s" % (status, ctype, len(part), os.listdir(cache)))
        wado_all("fetched from S3")
        checks.check(len(os.listdir(cache)) == len(instances),
                     "the objects fetched are in the cache (%d files)" % len(os.listdir(cache)))

        got = os.path.join(work, "got")
        get_ok = True
        for study in sorted({i.study for i in instances}):
            rc, out = ac.get_study(server.dicom, study, got)
            get_ok &= rc == 0
        differ = []
        retrieved = {}
        for pth in ac.files_under(got):
            sop = os.path.basename(pth).split(".", 1)[1]
            retrieved[sop] = pth
        for sop, inst in by_sop.items():
            if sop not in retrieved:
                differ.append((sop, "not retrieved"))
                continue
            with open(retrieved[sop], "rb") as a, open(inst.path, "rb") as b:
                if dataset_bytes(a.read()) != dataset_bytes(b.read()):
                    differ.append((sop, "differs"))
        checks.check(get_ok and not differ, "C-GET returns every data set byte for byte (%d)" %
                     len(retrieved), str(differ[:3]))
        checks.check(server.stop() == 0 and not ac.asan_report(server.text()),
                     "clean stop after the restart (exit 0)", server.text()[-1500:])
        logs += server.text()
        server = None
        checks.check(secret not in logs and env["TELERAD_S3_ACCESS_KEY"] not in logs,
                     "neither key appears in the server's log (%d lines)" % logs.count("\n"))
    finally:
        if server:
            server.stop()
        for key in s3.list():
            s3.delete(key)
        s3.request("DELETE")
        if checks.failed:
            print("work folder kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
