#!/usr/bin/python3
"""store_s3.py - C-STORE throughput into telerad with its objects in S3 against the same with
its objects in files: DCMTK storescu -> telerad serve, the 500 CT files of bench/store.py, one
association and four.

    /usr/bin/python3 bench/store_s3.py                 # S3 on a one-node Ceph, OSD in memory
    /usr/bin/python3 bench/store_s3.py --bluestore     # the OSD on a file (written to disk)

What it does:
  1. builds telerad without sanitizers (as bench/store.py, in bench/out/build; --build-dir,
     --no-build) and uses bench/store.py's 500 CT images of 512x512 16-bit (~526 KB each);
  2. starts a one-node Ceph with its RADOS Gateway on loopback (tests/s3/ceph.sh; memstore, or
     bluestore on a sparse file with --bluestore);
  3. for each store - files (`telerad serve --data DIR`: fdatasync, rename, directory fsync per
     object) and S3 (`telerad serve --data DIR --config S3.CONF`: spool file, then one PUT with
     Content-MD5 and a signed SHA-256 per object, answered 200 by the gateway before the
     C-STORE success) - and one or four associations, times the senders from start to the last
     exit, with a fresh data folder (and a fresh bucket), 3 rounds interleaved (median), and
     checks that all 500 objects arrived (files under objects/, keys in the bucket);
  4. prints wall time, instances/s, MB/s and the ratio S3/files, with the commands.

The gateway, the OSD, the monitor and telerad share this machine's CPUs: the S3 figures
include the store's own work, which a real deployment runs elsewhere.
"""
import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "s3"))
import store as sb  # noqa: E402  bench/store.py
import s3util  # noqa: E402

CEPH = os.path.join(ROOT, "tests", "s3", "ceph.sh")


def one_run(kind, telerad, workdir, files, associations, ceph, n):
    data = os.path.join(workdir, "data-%s-%d" % (kind, n))
    cmd = [telerad, "serve", "--data", data, "--dicom-port", "0", "--http-port", "0", "-q"]
    s3 = None
    if kind == "s3":
        env = s3util.read_env(os.path.join(ceph, "env"))
        bucket = "bench-%d-%d" % (os.getpid(), n)
        s3 = s3util.S3.from_env_file(os.path.join(ceph, "env"), bucket=bucket)
        s3.create_bucket(bucket)
        conf = os.path.join(workdir, "s3-%d.conf" % n)
        with open(conf, "w") as f:
            f.write("[archive]\nstore = s3\n[s3]\nendpoint = %s\nregion = %s\nbucket = %s\n"
                    % (env["TELERAD_S3_ENDPOINT"], env["TELERAD_S3_REGION"], bucket))
        cmd += ["--config", conf]
    environ = dict(os.environ)
    if s3:
        environ["TELERAD_S3_ACCESS_KEY"] = s3.access_key
        environ["TELERAD_S3_SECRET_KEY"] = s3.secret_key
    log = open(os.path.join(workdir, "%s-%d.log" % (kind, n)), "wb")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=environ)
    line = proc.stdout.readline().decode()
    if not line.startswith("dicom-port "):
        sb.die("telerad serve did not start: %s" % " ".join(cmd))
    port = int(line.split()[1])
    try:
        q = len(files) // associations
        secs = sb.send(port, [files[i * q:(i + 1) * q] for i in range(associations)])
        if s3:
            got = len(s3.list())
        else:
            got = sum(len(f) for _, _, f in os.walk(os.path.join(data, "objects")))
        if got != len(files):
            sb.die("%s stored %d of %d files" % (kind, got, len(files)))
        return secs
    finally:
        proc.terminate()
        proc.wait(60)
        proc.stdout.close()
        log.close()
        shutil.rmtree(data, ignore_errors=True)
        if s3:
            for key in s3.list():
                s3.delete(key)
            s3.request("DELETE")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--build-dir", default=os.path.join(sb.OUT, "build"))
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--bluestore", action="store_true")
    args = ap.parse_args()
    build_dir = os.path.abspath(args.build_dir)
    if not args.no_build:
        sb.build(build_dir)
    telerad = os.path.join(build_dir, "telerad")
    data_dir = os.path.join(sb.OUT, "ct-512x512-%d" % args.files)
    gen_cmd = sb.generate(data_dir, args.files)
    files = sb.list_files(data_dir)[:args.files]
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass
    workdir = tempfile.mkdtemp(prefix="store-s3-bench.", dir=sb.OUT)
    ceph = os.path.join(workdir, "ceph")
    t0 = time.time()
    p = subprocess.run(["bash", CEPH, "start", ceph] + (["--bluestore"] if args.bluestore
                                                         else []),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        sb.die("ceph.sh start: " + p.stdout)
    ceph_line = p.stdout.strip()
    sb.log("%s (%.1f s)" % (ceph_line, time.time() - t0))
    try:
        combos = [("fs", 1), ("s3", 1), ("fs", 4), ("s3", 4)]
        times = {c: [] for c in combos}
        n = 0
        one_run("fs", telerad, workdir, files[:20], 1, ceph, n)  # warm-up, not timed
        one_run("s3", telerad, workdir, files[:20], 1, ceph, n)
        for rnd in range(args.repeat):
            for c in combos:
                n += 1
                secs = one_run(c[0], telerad, workdir, files, c[1], ceph, n)
                times[c].append(secs)
                sb.log("round %d: %-2s %d association(s): %.2f s" % (rnd + 1, c[0], c[1], secs))
    finally:
        subprocess.run(["bash", CEPH, "stop", ceph])
        shutil.rmtree(workdir, ignore_errors=True)
    med = {c: statistics.median(v) for c, v in times.items()}
    lines = ["C-STORE of %d CT files (512x512x16 bit, %.0f MB) into telerad serve, objects in "
             "files vs in S3, median of %d rounds, on %s (%d CPUs), %s" %
             (len(files), total_mb, args.repeat, platform.node(), os.cpu_count(),
              time.strftime("%Y-%m-%d")),
             "S3: %s" % ceph_line, "",
             "| objects | associations | wall s | instances/s | MB/s | all rounds (s) |",
             "|---|---:|---:|---:|---:|---|"]
    for c in combos:
        s = med[c]
        lines.append("| %s | %d | %.2f | %.0f | %.0f | %s |" % (
            "files (fsync)" if c[0] == "fs" else "S3 (Ceph RGW)", c[1], s, len(files) / s,
            total_mb / s, ", ".join("%.2f" % x for x in times[c])))
    lines.append("")
    for a in (1, 4):
        lines.append("ratio S3/files in instances/s, %d association%s: %.2fx" % (
            a, "s" if a > 1 else "", med[("fs", a)] / med[("s3", a)]))
    lines += ["", "commands (DCMTK with TCP_NODELAY=1):",
              "  files: %s serve --data DIR --dicom-port 0 -q" % os.path.relpath(telerad, ROOT),
              "  S3:    the same with --config S3.CONF ([archive] store = s3, [s3] endpoint, "
              "region, bucket; keys in TELERAD_S3_ACCESS_KEY / TELERAD_S3_SECRET_KEY)",
              "  senders: storescu -aec TELERAD 127.0.0.1 PORT FILES... (1 process, or 4 with "
              "a quarter each)",
              "  files: %s" % gen_cmd,
              "  this run: /usr/bin/python3 bench/store_s3.py %s" % " ".join(sys.argv[1:])]
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(sb.OUT, "store_s3.last.txt"), "w") as f:
        f.write(report + "\n")


if __name__ == "__main__":
    main()
