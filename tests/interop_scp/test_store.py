#!/usr/bin/python3
"""test_store.py - DCMTK echoscu and storescu against `telerad serve`.

    /usr/bin/python3 tests/interop_scp/test_store.py build/telerad

  * echoscu: C-ECHO succeeds;
  * storescu of pydicom's test files, one storescu run per file, each proposing the file's
    own transfer syntax (uncompressed little and big endian, implicit VR, deflated, JPEG
    baseline, extended and lossless, JPEG-LS, JPEG 2000, RLE; multi-frame, SR, RT, waveform):
    every file stored, its data set equal to the source's (`telerad json` of both) and the
    stored file a valid Part 10 file (dcmdump exit 0);
  * 200 files generated here with pydicom (explicit LE, implicit LE, big endian), sent by one
    storescu: all stored and equal;
  * four storescu processes in parallel, 50 files each: all stored and equal.
"""
import concurrent.futures
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scp_common as sc  # noqa: E402

# pydicom test files that DCMTK's storescu cannot send (it finds no SOP Class or Instance UID,
# or the file is truncated or broken) - not telerad's business.
NOT_SENDABLE = {
    "MR_truncated.dcm", "rtplan_truncated.dcm", "no_meta.dcm", "empty_charset_LEI.dcm",
    "priv_SQ.dcm", "nested_priv_SQ.dcm", "meta_missing_tsyntax.dcm", "no_meta_group_length.dcm",
    "UN_sequence.dcm", "rtdose_rle.dcm", "rtdose_rle_1frame.dcm", "SC_rgb_jpeg.dcm",
    "ExplVR_BigEndNoMeta.dcm", "ExplVR_LitEndNoMeta.dcm",
}


def main():
    telerad = sc.telerad_path()
    sc.need_programs("echoscu", "storescu", "dcmdump")
    sc.need_pydicom()
    import pydicom
    work = sc.tempdir("telerad-scp-store.")
    checks = sc.Checks("interop_scp_store")
    # Several pydicom test files share a SOP Instance UID with different contents: let the
    # newer replace the older, and compare each right after it is stored.
    server = sc.Server(telerad, work, "--duplicates", "replace").start()
    try:
        rc, out = sc.echoscu(server.port, "-v")
        checks.check(rc == 0, "echoscu", out[-500:])

        # pydicom's test files, each with its own transfer syntax.
        files = sorted(f for f in os.listdir(sc.PYDICOM_TEST_FILES)
                       if f.endswith(".dcm") and f not in NOT_SENDABLE)
        seen_ts = set()
        for name in files:
            path = os.path.join(sc.PYDICOM_TEST_FILES, name)
            opts, ts, uid = sc.storescu_options_for(path)
            rc, out = sc.storescu(server.port, [path], *opts)
            if not checks.check(rc == 0, "storescu %s %s (%s)" % (" ".join(opts), name, ts),
                                out[-600:]):
                continue
            diff = sc.compare_stored(telerad, path, server.stored_path(uid))
            checks.check(diff is None, "stored %s equals the source" % name, diff or "")
            seen_ts.add(ts)
        # The transfer syntaxes that went over the wire as they were in the files.
        for ts in ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
                   "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                   "1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90",
                   "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.5"):
            checks.check(ts in seen_ts, "a file in transfer syntax %s was sent" % ts)
        jpeg = server.stored_path(str(pydicom.dcmread(
            os.path.join(sc.PYDICOM_TEST_FILES, "SC_rgb_jpeg_dcmtk.dcm"),
            stop_before_pixels=True).SOPInstanceUID))
        if jpeg:
            stored_ts = str(pydicom.dcmread(jpeg, stop_before_pixels=True)
                            .file_meta.TransferSyntaxUID)
            checks.check(stored_ts == "1.2.840.10008.1.2.4.50",
                         "a JPEG file is stored as JPEG (as received)", stored_ts)

        # 200 generated files, one storescu.
        gen = os.path.join(work, "generated")
        os.makedirs(gen)
        sources = {}
        tss = [sc.EXPLICIT_LE, sc.IMPLICIT_LE, "1.2.840.10008.1.2.2"]
        for i in range(200):
            p = os.path.join(gen, "img%03d.dcm" % i)
            sources[sc.make_file(p, seed=i, transfer_syntax=tss[i % 3])] = p
        rc, out = sc.storescu(server.port, [gen], "+sd", "-R")
        checks.check(rc == 0, "storescu of 200 generated files in one association", out[-600:])
        bad = []
        for uid, p in sources.items():
            diff = sc.compare_stored(telerad, p, server.stored_path(uid))
            if diff:
                bad.append("%s: %s" % (os.path.basename(p), diff))
        checks.check(not bad, "the 200 generated files are stored and equal",
                     "; ".join(bad[:5]) + (" (%d in all)" % len(bad) if bad else ""))

        # Four associations in parallel, 50 files each.
        par = os.path.join(work, "parallel")
        parts = []
        psources = {}
        for k in range(4):
            d = os.path.join(par, str(k))
            os.makedirs(d)
            parts.append(d)
            for i in range(50):
                p = os.path.join(d, "img%03d.dcm" % i)
                psources[sc.make_file(p, seed=1000 + 50 * k + i)] = p
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda d: sc.storescu(server.port, [d], "+sd", "-R"), parts))
        for k, (rc, out) in enumerate(results):
            checks.check(rc == 0, "parallel storescu %d of 4" % (k + 1), out[-400:])
        bad = [os.path.basename(p) for uid, p in psources.items()
               if sc.compare_stored(telerad, p, server.stored_path(uid))]
        checks.check(not bad, "the 200 files sent in parallel are stored and equal",
                     ", ".join(bad[:5]))
        log = server.log_text()
        checks.check(server.alive(), "the server is still running")
        checks.check(not server.temporaries(), "no half-received object left behind",
                     ", ".join(server.temporaries()[:3]))
    finally:
        status = server.stop()
    checks.check(status == 0, "telerad serve stops cleanly on SIGTERM", "exit status %s" % status)
    if "AddressSanitizer" in log or "runtime error" in log:
        checks.check(False, "no sanitizer report in the server log", log[-3000:])
    if checks.failed:
        print("server log: %s" % server.log_path)
    else:
        shutil.rmtree(work, ignore_errors=True)
    checks.finish()


if __name__ == "__main__":
    main()
