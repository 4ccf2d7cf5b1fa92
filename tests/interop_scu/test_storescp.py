#!/usr/bin/python3
"""telerad echo and send against DCMTK's storescp, on 127.0.0.1.

usage: test_storescp.py TELERAD [plain|tls]

plain: C-ECHO (-r 3); a folder of 220 generated 512x512 CT images (nested folders, one
       non-DICOM file that must be skipped) sent with -j 1 and -j 4, every image arriving with
       the same data set as pydicom reads it; pydicom's compressed test files (JPEG baseline and
       extended, RLE, JPEG 2000, JPEG-LS) arriving in their own transfer syntax; big endian,
       implicit and deflated files arriving with the same data set; a bad file among good
       ones; an association refused by `storescp --refuse`; a closed port; usage errors.
tls:   a throw-away CA, server and client certificates made with `openssl`; `storescp +tls`:
       echo and send verified against the CA, a client certificate required by the server,
       refusal without the CA or without the client certificate, --tls-no-verify.
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from common import Checks, Peer, describe, run  # noqa: E402

CT_COUNT = 220


def start_storescp(work, name, extra=()):
    out = os.path.join(work, name)
    os.makedirs(out, exist_ok=True)
    port = common.free_port()
    peer = Peer(name, ["storescp", "--fork", "+xa", "-od", out] + list(extra) + [str(port)],
                work, port=port)
    return peer, port, out


def make_ct_folder(work):
    folder = os.path.join(work, "ct")
    study = common.new_uid()
    uids = {}
    per_series = CT_COUNT // 2
    for s in range(2):
        series = common.new_uid()
        sub = os.path.join(folder, "series%d" % (s + 1), "slices")
        os.makedirs(sub, exist_ok=True)
        for i in range(per_series):
            path = os.path.join(sub, "IM%04d.dcm" % (i + 1))
            uid = common.write_image(path, "TEST^CT", "CT001", study, series, i + 1,
                                     rows=512, cols=512, series_number=s + 1)
            uids[uid] = path
    with open(os.path.join(folder, "series1", "README.txt"), "w") as f:
        f.write("not a DICOM file\n" * 20)
    return folder, uids


def make_many_classes(folder, count):
    """One small file for each of `count` storage SOP classes pydicom knows."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UID_dictionary
    classes = sorted(uid for uid, v in UID_dictionary.items()
                     if v[1] == "SOP Class" and v[0].endswith("Storage") and
                     not v[0].startswith("Media") and "Retired" not in v[3])
    os.makedirs(folder, exist_ok=True)
    study = common.new_uid()
    out = {}
    for i, sop_class in enumerate(classes[:count]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = common.new_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID = sop_class
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = "MANY^CLASSES", "MANY"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, common.new_uid()
        ds.Modality = "OT"
        path = os.path.join(folder, "F%03d.dcm" % i)
        ds.save_as(path, write_like_original=False)
        out[str(ds.SOPInstanceUID)] = path
    if len(out) < count:
        raise RuntimeError("pydicom knows only %d storage SOP classes" % len(out))
    return out


def check_arrived(c, what, sources, out_dir, compare=True, same_ts=False):
    """Every source file (uid -> path) is in out_dir with the same data set."""
    got = common.index_by_sop_uid(out_dir)
    missing = [u for u in sources if u not in got]
    c.check(not missing, "%s: %d of %d instances arrived" % (what, len(sources) - len(missing),
                                                            len(sources)),
            "missing: %s" % missing[:5])
    if not compare:
        return
    bad = []
    for uid, src in sources.items():
        if uid not in got:
            continue
        d = common.dataset_differences(src, got[uid])
        if d:
            bad.append("%s: %s" % (os.path.basename(src), "; ".join(d[:3])))
        if same_ts:
            ts_src, ts_dst = common.transfer_syntax_of(src), common.transfer_syntax_of(got[uid])
            if ts_src != ts_dst:
                bad.append("%s: sent as %s, arrived as %s" % (os.path.basename(src), ts_src,
                                                              ts_dst))
    c.check(not bad, "%s: data sets identical%s" % (what, ", own transfer syntaxes" if same_ts
                                                     else ""), "\n".join(bad[:20]))


def rate(out):
    m = re.search(r"([\d.]+) instances/s, ([\d.]+) MB/s", out)
    return (float(m.group(1)), float(m.group(2))) if m else (0.0, 0.0)


def test_plain(c, telerad, work):
    peer, port, out = start_storescp(work, "storescp")
    try:
        rc, so, se = run([telerad, "echo", "-aec", "STORESCP", "-r", "3", "127.0.0.1",
                          str(port)])
        c.check(rc == 0 and so.count("Success (0000)") == 3,
                "echo -r 3: three C-ECHOs answered Success (0000)", describe(rc, so, se))

        rc, so, se = run([telerad, "echo", "-v", "--user", "alice", "--password", "s3cret",
                          "--identity-response", "127.0.0.1", str(port)])
        c.check(rc == 0 and "user identity: type 2, positive response requested" in se,
                "echo with user identity (user name and passcode): storescp accepts",
                describe(rc, so, se))
        rc, so, se = run([telerad, "echo", "--jwt", "eyJhbGciOiJub25lIn0.e30.", "127.0.0.1",
                          str(port)])
        c.check(rc == 0, "echo with a JWT user identity", describe(rc, so, se))

        folder, uids = make_ct_folder(work)
        results = {}
        for jobs in (1, 4):
            sub_peer, sub_port, sub_out = start_storescp(work, "storescp_j%d" % jobs)
            try:
                rc, so, se = run([telerad, "send", "-aet", "TELERAD", "-aec", "STORESCP", "-j",
                                  str(jobs), "127.0.0.1", str(sub_port), folder], timeout=600)
            finally:
                sub_peer.stop()
            c.check(rc == 0 and ("sent %d of %d files" % (CT_COUNT, CT_COUNT)) in so
                    and "skipped 1 files that are not DICOM" in so,
                    "send -j %d of a folder of %d CT images (and a text file): exit 0, summary"
                    % (jobs, CT_COUNT), describe(rc, so, se))
            results[jobs] = rate(so)
            check_arrived(c, "send -j %d" % jobs, uids, sub_out, compare=(jobs == 4))
        print("RATE send -j 1: %.1f instances/s, %.1f MB/s; -j 4: %.1f instances/s, %.1f MB/s"
              % (results[1] + results[4]), flush=True)

        # Compressed files, in their own transfer syntax.
        comp = common.compressed_test_files(os.path.join(work, "compressed"))
        sources = {}
        import pydicom
        for path, _ in comp:
            sources[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = path
        rc, so, se = run([telerad, "send", "-v", "-aec", "STORESCP", "127.0.0.1", str(port)]
                         + [p for p, _ in comp])
        c.check(rc == 0 and len(comp) >= 5, "send of %d compressed files (%s): exit 0"
                % (len(comp), ", ".join(sorted({ts for _, ts in comp}))), describe(rc, so, se))
        check_arrived(c, "compressed files", sources, out, same_ts=True)

        # Uncompressed files in other syntaxes: converted if need be, same content.
        others = {}
        for n in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "image_dfl.dcm",
                  "CT_small.dcm", "rtplan.dcm", "rtdose.dcm"):
            src = os.path.join(common.PYDICOM_TEST_FILES, n)
            if os.path.exists(src):
                ds = pydicom.dcmread(src)
                ds.SOPInstanceUID = common.new_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                dst = os.path.join(work, "other_" + n)
                ds.save_as(dst, write_like_original=True)
                others[str(ds.SOPInstanceUID)] = dst
        rc, so, se = run([telerad, "send", "-aec", "STORESCP", "127.0.0.1", str(port)]
                         + list(others.values()))
        c.check(rc == 0, "send of big endian, implicit VR, deflated and RT files: exit 0",
                describe(rc, so, se))
        check_arrived(c, "big endian / implicit / deflated / RT", others, out)

        # More SOP classes than one association can carry (128 presentation contexts): the
        # rest go on a second association. storescp does not know every SOP class: those files
        # fail with "no presentation context", the others must arrive.
        many_dir = os.path.join(work, "many-classes")
        many = make_many_classes(many_dir, 140)
        rc, so, se = run([telerad, "send", "-v", "-j", "2", "-aec", "STORESCP", "127.0.0.1",
                          str(port), many_dir])
        got = common.index_by_sop_uid(out)
        arrived = [u for u in many if u in got]
        unexplained = [p for u, p in many.items() if u not in got and
                       "%s: " % p not in so]
        c.check("in 140 presentation contexts (2 associations)" in se and len(arrived) >= 100
                and not unexplained,
                "140 SOP classes: two associations, %d arrived, the others listed as failures"
                % len(arrived), describe(rc, so, se)[-3000:] + "\nunexplained: %s"
                % unexplained[:5])

        # A bad file among good ones: the good ones arrive, the bad one is listed, exit 1.
        bad = os.path.join(work, "truncated.dcm")
        with open(list(uids.values())[0], "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(data[:700])
        good = list(uids.values())[1:3]
        rc, so, se = run([telerad, "send", "-aec", "STORESCP", "127.0.0.1", str(port), good[0],
                          bad, good[1]])
        c.check(rc == 1 and "sent 2 of 3 files" in so and "truncated.dcm" in so,
                "send with a truncated file: exit 1, the file named in the summary",
                describe(rc, so, se))

        # No such file.
        rc, so, se = run([telerad, "send", "-aec", "STORESCP", "127.0.0.1", str(port),
                          os.path.join(work, "no-such-file.dcm")])
        c.check(rc == 1 and "no-such-file.dcm" in so, "send of a missing file: exit 1",
                describe(rc, so, se))
    finally:
        peer.stop()

    # An association storescp refuses.
    refuse, rport, _ = start_storescp(work, "storescp_refuse", ["--refuse"])
    try:
        rc, so, se = run([telerad, "echo", "-aec", "STORESCP", "127.0.0.1", str(rport)])
        c.check(rc == 1 and "rejected" in se, "echo to storescp --refuse: exit 1, says rejected",
                describe(rc, so, se))
        rc, so, se = run([telerad, "send", "-aec", "STORESCP", "-j", "2", "127.0.0.1",
                          str(rport)] + list(uids.values())[:10])
        c.check(rc == 1 and "rejected" in so and "10 files not sent" in so,
                "send to storescp --refuse: exit 1, reason and count of files not sent",
                describe(rc, so, se))
    finally:
        refuse.stop()

    # Nobody listening.
    closed = common.free_port()
    rc, so, se = run([telerad, "echo", "127.0.0.1", str(closed)])
    c.check(rc == 1 and "refused" in se.lower(), "echo to a closed port: exit 1, says refused",
            describe(rc, so, se))

    # A peer that takes the connection and never answers: --timeout bounds the wait.
    import socket
    import time
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        t0 = time.time()
        rc, so, se = run([telerad, "echo", "--timeout", "1", "127.0.0.1",
                          str(silent.getsockname()[1])])
        took = time.time() - t0
    c.check(rc == 1 and "did not answer" in se and took < 10,
            "--timeout 1 against a silent peer: exit 1 after %.1f s" % took, describe(rc, so, se))

    # Usage.
    for args, what in ((["send"], "send without arguments"),
                       (["echo", "127.0.0.1"], "echo without a port"),
                       (["echo", "-aet", "A\\B", "127.0.0.1", "104"], "a bad AE title"),
                       (["send", "-j", "0", "127.0.0.1", "104", "x"], "send -j 0"),
                       (["echo", "--bogus", "127.0.0.1", "104"], "an unknown option")):
        rc, so, se = run([telerad] + args)
        c.check(rc == 2, "%s: exit 2" % what, describe(rc, so, se))
    for cmd in ("echo", "send", "find", "move", "get"):
        rc, so, se = run([telerad, cmd, "--help"])
        c.check(rc == 0 and "Exit status" in so and "-aet" in so,
                "%s --help: exit 0, documents -aet and the exit status" % cmd,
                describe(rc, so, se))


def openssl(*args, cwd):
    subprocess.run(["openssl"] + list(args), cwd=cwd, check=True, capture_output=True)


def make_pki(d):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all RSA 2048."""
    os.makedirs(d, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.crt", "-days", "2", "-subj", "/CN=telerad test CA", "-addext",
            "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            cwd=d)
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", name + ".key", "-out",
                name + ".csr", "-subj", "/CN=" + name, cwd=d)
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", name + ".crt", "-days", "2", "-extfile",
                name + ".ext", cwd=d)
    return {k: os.path.join(d, k) for k in ("ca.crt", "server.key", "server.crt", "client.key",
                                             "client.crt")}


def test_tls(c, telerad, work):
    common.need_programs("openssl")
    pki = make_pki(os.path.join(work, "pki"))
    folder = os.path.join(work, "files")
    os.makedirs(folder)
    study, series = common.new_uid(), common.new_uid()
    uids = {}
    for i in range(12):
        p = os.path.join(folder, "IM%d.dcm" % i)
        uids[common.write_image(p, "TLS^TEST", "TLS1", study, series, i + 1)] = p

    # Server without client certificates.
    peer, port, out = start_storescp(work, "storescp_tls", [
        "+tls", pki["server.key"], pki["server.crt"], "-ic"])
    try:
        rc, so, se = run([telerad, "echo", "--tls", "--tls-ca", pki["ca.crt"], "-aec",
                          "STORESCP", "127.0.0.1", str(port)])
        c.check(rc == 0 and "Success (0000)" in so, "echo over TLS, server verified with the CA",
                describe(rc, so, se))
        rc, so, se = run([telerad, "echo", "-v", "--tls-ca", pki["ca.crt"], "127.0.0.1",
                          str(port)])
        c.check(rc == 0 and "over TLSv1." in se, "--tls-ca implies --tls; -v names the TLS "
                "version", describe(rc, so, se))
        rc, so, se = run([telerad, "send", "--tls", "--tls-ca", pki["ca.crt"], "-aec",
                          "STORESCP", "-j", "2", "127.0.0.1", str(port), folder])
        c.check(rc == 0 and "sent 12 of 12 files" in so, "send over TLS (-j 2)",
                describe(rc, so, se))
        check_arrived(c, "send over TLS", uids, out)
        rc, so, se = run([telerad, "echo", "--tls", "127.0.0.1", str(port)])
        c.check(rc == 1 and "certificate" in se.lower(),
                "echo over TLS against the system CAs: certificate not trusted, exit 1",
                describe(rc, so, se))
        rc, so, se = run([telerad, "echo", "--tls-no-verify", "127.0.0.1", str(port)])
        c.check(rc == 0 and "warning" in se.lower(), "--tls-no-verify connects, with a warning",
                describe(rc, so, se))
        rc, so, se = run([telerad, "echo", "127.0.0.1", str(port)])
        c.check(rc == 1, "plain DICOM to a TLS port: exit 1", describe(rc, so, se))
    finally:
        peer.stop()

    # Server requiring a client certificate signed by the CA.
    peer, port, out = start_storescp(work, "storescp_tls_client", [
        "+tls", pki["server.key"], pki["server.crt"], "-rc", "+cf", pki["ca.crt"]])
    try:
        rc, so, se = run([telerad, "send", "--tls-ca", pki["ca.crt"], "--tls-cert",
                          pki["client.crt"], "--tls-key", pki["client.key"], "127.0.0.1",
                          str(port), folder])
        c.check(rc == 0 and "sent 12 of 12 files" in so, "send over TLS with a client "
                "certificate the server requires", describe(rc, so, se))
        rc, so, se = run([telerad, "echo", "--tls-ca", pki["ca.crt"], "127.0.0.1", str(port)])
        c.check(rc == 1, "without the client certificate the server refuses: exit 1",
                describe(rc, so, se))
    finally:
        peer.stop()


def main():
    telerad = common.telerad_path()
    mode = sys.argv[2] if len(sys.argv) > 2 else "plain"
    common.need_programs("storescp")
    common.need_pydicom()
    work = common.tempdir("telerad-scu-storescp-")
    c = Checks()
    try:
        (test_tls if mode == "tls" else test_plain)(c, telerad, work)
    finally:
        if c.failed == 0 and not os.environ.get("TELERAD_KEEP"):
            import shutil
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("work folder kept: " + work)
    c.finish()


if __name__ == "__main__":
    main()
