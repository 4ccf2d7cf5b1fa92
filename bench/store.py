#!/usr/bin/python3
"""store.py - C-STORE throughput: DCMTK storescu -> telerad serve, against storescu -> DCMTK
storescp and storescu -> Orthanc 1.10, with the same 500 CT files, one association and four.
bench/ingest (the name the archive issue gives this benchmark) runs this script.

    /usr/bin/python3 bench/store.py              # full run: build, generate once, 3 rounds
    bench/ingest                                 # the same
    /usr/bin/python3 bench/store.py --profile    # and where telerad's time goes (callgrind,
                                                 # strace -c), with file:line
    /usr/bin/python3 bench/store.py --no-orthanc # telerad and storescp only, as before

What it does:
  1. builds telerad without sanitizers (RelWithDebInfo) in bench/out/build, as
     bench/header_parse.py does (`cmake -S bench -B bench/out/build`);
  2. generates, once, 500 CT images of 512x512 16-bit (5 studies of 100, ~526 KB each,
     explicit VR little endian) with ../shared/tools/gen_study.py into
     bench/out/ct-512x512-500 (a stamp file records the command; later runs reuse them);
  3. re-runs itself in a private network namespace (`unshare -n`, only `lo`, brought up), as
     bench/wado.py does: Debian's Orthanc listens on every address and cannot be told to take
     loopback only (not with --no-orthanc);
  4. for each receiver - `telerad serve --data DIR --dicom-port 0` (every object fsync'd
     before its C-STORE success, DESIGN.md invariant 1), `storescp --fork -od DIR PORT`
     (DCMTK 3.6.7: one process per association, files written WITHOUT fsync) and `Orthanc
     CONFIG` (Debian's 1.10, its built-in SQLite index, a generated configuration: DICOM AE
     title TELERAD, storage and index in the round's fresh folder, StorageCompression false,
     no plugins, Orthanc's defaults otherwise, among them SyncStorageArea true and
     DicomThreadsCount 4) - and for one association (one storescu with the 500 files) and four
     (four storescu processes in parallel, a quarter of the files each), times the senders
     from start to the last exit, with a receiver started in a fresh folder for every run, 3
     rounds interleaved (median reported), and checks that all 500 objects arrived (files on
     disk; for Orthanc, CountInstances of its REST /statistics);
  5. prints wall time, instances/s, MB/s, the receiver's CPU time per instance (telerad and
     Orthanc, from /proc/PID/stat) and the ratios telerad/storescp and telerad/Orthanc in
     instances/s (> 1: telerad is faster; goals >= 1.0x and >= 3x), with the commands, and
     saves the report in bench/out/store.last.txt.

Every DCMTK tool, and Orthanc (whose DICOM server is DCMTK's), runs with TCP_NODELAY=1 in its
environment: Debian's DCMTK leaves Nagle's algorithm on otherwise and crawls (about 20
instances/s on loopback). Options: --repeat N
(default 3), --no-build, --build-dir DIR, --files N (default 500, a multiple of 4), --profile,
--no-orthanc.
"""
import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
PYTHON = "/usr/bin/python3"
GEN_STUDY = os.path.normpath(os.path.join(ROOT, "..", "shared", "tools", "gen_study.py"))
AET = "TELERAD"
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
IN_NAMESPACE = "TELERAD_BENCH_NETNS"
# bench/ingest sets this so that the report names the command that was run.
ENTRY = os.environ.get("TELERAD_BENCH_ENTRY", "/usr/bin/python3 bench/store.py")
LABEL = {"telerad": "telerad serve", "storescp": "storescp --fork (no fsync)",
         "orthanc": "Orthanc (SQLite index)"}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log("store: " + msg)
    sys.exit(1)


def run_quiet(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        die("failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stdout[-4000:]))
    return r.stdout


def build(build_dir):
    log("building telerad (RelWithDebInfo, no sanitizers) in %s" % os.path.relpath(build_dir, ROOT))
    run_quiet(["cmake", "-S", HERE, "-B", build_dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    run_quiet(["cmake", "--build", build_dir, "-j%d" % (os.cpu_count() or 2), "--target",
               "telerad"])


def generate(data_dir, files):
    studies = max(1, files // 100)
    images = files // studies
    cmd = [PYTHON, GEN_STUDY, data_dir, "--modality", "CT", "--studies", str(studies),
           "--images", str(images), "--rows", "512", "--cols", "512", "--seed", "2"]
    stamp = os.path.join(data_dir, "GENERATED")
    want = " ".join(os.path.relpath(a, ROOT) if a.startswith("/") else a for a in cmd[1:])
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        return want
    if not os.path.exists(GEN_STUDY):
        die("%s is missing (it comes with ../shared)" % GEN_STUDY)
    if os.path.exists(data_dir):
        shutil.rmtree(data_dir)
    log("generating %d CT files 512x512 with gen_study.py ..." % (studies * images))
    run_quiet(cmd)
    with open(stamp, "w") as f:
        f.write(want + "\n")
    return want


def list_files(data_dir):
    paths = []
    for top, dirs, names in os.walk(data_dir):
        dirs.sort()
        paths += [os.path.join(top, n) for n in sorted(names) if n.endswith(".dcm")]
    return paths


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dcmtk_env():
    return dict(os.environ, TCP_NODELAY="1")


def wait_port(port, proc, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def wait_http(url, proc, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def http_json(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        return json.loads(r.read())


def cpu_seconds(pid):
    """User + system CPU seconds of a process and all its threads so far."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def enter_namespace():
    """Re-run this script in a new network namespace with lo up (as bench/wado.py does);
    never returns."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        die("unshare (util-linux) and ip (iproute2) are needed to isolate Orthanc "
            "(or use --no-orthanc)")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        die("cannot create a network namespace (unshare -n needs root or user namespaces; "
            "or use --no-orthanc)")
    env = dict(os.environ, **{IN_NAMESPACE: "1"})
    script = "ip link set lo up && exec %s %s %s" % (
        PYTHON, os.path.abspath(__file__), " ".join("'%s'" % a for a in sys.argv[1:]))
    os.execvpe("unshare", ["unshare", "-n", "bash", "-c", script], env)


def orthanc_config(path, storage_dir, dicom_port, http_port):
    """Orthanc's configuration for one run: only what the benchmark needs is set, the rest
    keeps Orthanc's built-in defaults (`Orthanc --config=FILE` prints them)."""
    cfg = {
        "Name": "telerad-bench",
        "StorageDirectory": os.path.join(storage_dir, "storage"),
        "IndexDirectory": os.path.join(storage_dir, "index"),  # SQLite (no database plugin)
        "StorageCompression": False,
        "Plugins": [],
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomAet": AET,
        "DicomPort": dicom_port,
    }
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)


class Receiver:
    """A receiver started for one timed run, in a fresh output folder."""

    runs = 0

    def __init__(self, kind, telerad, workdir, wrapper=()):
        self.kind = kind
        # A fresh folder per run, all removed at the very end: removing the last run's 500
        # files just before the next run would charge whoever runs next for it. ext4 without
        # a journal (this VM) skips inodes freed in the last ~5 minutes when it allocates new
        # ones (fs/ext4/ialloc.c, recently_deleted), which made file creation 4-5x slower
        # (perf: 20-35 % of the receiver's CPU in find_inode_bit).
        Receiver.runs += 1
        self.dir = os.path.join(workdir, "%s-%d" % (kind, Receiver.runs))
        os.makedirs(self.dir)
        self.log = open(os.path.join(workdir, kind + ".log"), "ab")
        if kind == "telerad":
            self.cmd = list(wrapper) + [telerad, "serve", "--data", self.dir, "--dicom-port",
                                        "0", "--http-port", "0", "-q"]
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log)
            line = self.proc.stdout.readline().decode()
            if not line.startswith("dicom-port "):
                die("telerad serve did not start: %s" % " ".join(self.cmd))
            self.port = int(line.split()[1])
        elif kind == "orthanc":
            self.port, self.http_port = free_port(), free_port()
            cfg = os.path.join(self.dir, "orthanc.json")
            orthanc_config(cfg, self.dir, self.port, self.http_port)
            self.cmd = [ORTHANC, cfg]
            # Orthanc's DICOM server is DCMTK's: like storescp it needs TCP_NODELAY=1, or
            # Nagle's algorithm holds every C-STORE response and it crawls at ~20/s.
            self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log,
                                         env=dcmtk_env(), start_new_session=True)
            if not wait_http("http://127.0.0.1:%d/system" % self.http_port, self.proc):
                self.proc.kill()
                die("Orthanc did not start (see %s)" % self.log.name)
            self.version = http_json(self.http_port, "/system").get("Version")
            if not wait_port(self.port, self.proc):
                self.proc.kill()
                die("Orthanc's DICOM port did not open (see %s)" % self.log.name)
        else:
            self.port = free_port()
            out = os.path.join(self.dir, "out")
            os.makedirs(out)
            self.cmd = ["storescp", "--fork", "-aet", AET, "-od", out, str(self.port)]
            self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=self.log,
                                         env=dcmtk_env())
            if not wait_port(self.port, self.proc):
                die("storescp did not start")

    def count(self):
        if self.kind == "orthanc":
            return http_json(self.http_port, "/statistics")["CountInstances"]
        n = 0
        for top, _, names in os.walk(self.dir):
            if os.sep + "tmp" in top[len(self.dir):]:
                continue
            n += sum(1 for x in names if x.endswith(".dcm") or re.match(r"^[A-Z]{2}\.", x))
        return n

    def peak_rss_mb(self):
        try:
            with open("/proc/%d/status" % self.proc.pid) as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def send(port, groups):
    """Run one storescu per group of files in parallel; returns wall seconds and the commands."""
    procs = []
    t0 = time.perf_counter()
    for g in groups:
        cmd = ["storescu", "-aec", AET, "127.0.0.1", str(port)] + g
        procs.append((cmd, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                            stderr=subprocess.STDOUT, env=dcmtk_env())))
    for cmd, p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            die("storescu failed (%d): %s" % (p.returncode, out.decode()[-2000:]))
    return time.perf_counter() - t0


def one_run(kind, telerad, workdir, files, associations):
    """Returns wall seconds, the receiver's peak RSS (MB, telerad) and its CPU seconds for
    the run (telerad, Orthanc; storescp forks one process per association: not counted)."""
    r = Receiver(kind, telerad, workdir)
    try:
        # Every run starts on a quiet disk: what the previous receivers left dirty in the page
        # cache (storescp and Orthanc do not fsync: 263 MB each) is written out now, untimed,
        # instead of by the kernel's flusher during the next receiver's run.
        os.sync()
        q = len(files) // associations
        groups = [files[i * q:(i + 1) * q] for i in range(associations)]
        cpu0 = cpu_seconds(r.proc.pid) if kind != "storescp" else None
        secs = send(r.port, groups)
        # storescp --fork children may still be closing their files.
        end = time.time() + 10
        while r.count() < len(files) and time.time() < end:
            time.sleep(0.05)
        got = r.count()
        if got != len(files):
            die("%s stored %d of %d files" % (kind, got, len(files)))
        cpu1 = cpu_seconds(r.proc.pid) if cpu0 is not None else None
        cpu = cpu1 - cpu0 if cpu1 is not None else None
        rss = r.peak_rss_mb() if kind == "telerad" else None
        return secs, rss, cpu, getattr(r, "version", None)
    finally:
        r.stop()


def profile(telerad, workdir, files):
    """callgrind over 50 files (one association) and strace -c over the 500."""
    report = []
    if shutil.which("valgrind"):
        out = os.path.join(OUT, "callgrind.store.out")
        r = Receiver("telerad", telerad, workdir,
                     wrapper=("valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                              "--dump-instr=no"))
        try:
            secs = send(r.port, [files[:50]])
        finally:
            r.stop()
        ann = subprocess.run(["callgrind_annotate", "--inclusive=no", "--threshold=95", out],
                             stdout=subprocess.PIPE, text=True).stdout
        report.append("callgrind, telerad serve receiving 50 files (%.1f s under valgrind), "
                      "self cost:" % secs)
        lines = [ln for ln in ann.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
        report += ["  " + ln.strip() for ln in lines[:18]]
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", out],
                             stdout=subprocess.PIPE, text=True).stdout
        lines = [ln for ln in ann.splitlines() if re.match(r"^\s*[\d,]+ \(", ln)]
        report.append("inclusive:")
        report += ["  " + ln.strip() for ln in lines[:25]]
    if shutil.which("strace"):
        out = os.path.join(OUT, "strace.store.txt")
        r = Receiver("telerad", telerad, workdir)
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(r.proc.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # attached to every thread
        try:
            secs = send(r.port, [files])
        finally:
            st.send_signal(signal.SIGINT)
            st.wait(60)
            r.stop()
        report.append("strace -c -f, telerad serve receiving %d files (%.1f s under strace):" %
                      (len(files), secs))
        with open(out) as f:
            report += ["  " + ln.rstrip() for ln in f.readlines()[:16]]
    return "\n".join(report)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--build-dir", default=os.path.join(OUT, "build"))
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--no-orthanc", action="store_true",
                    help="telerad and storescp only (no network namespace needed)")
    args = ap.parse_args()
    build_dir = os.path.abspath(args.build_dir)
    telerad = os.path.join(build_dir, "telerad")
    data_dir = os.path.join(OUT, "ct-512x512-%d" % args.files)
    if os.environ.get(IN_NAMESPACE) != "1":
        for tool in ("storescu", "storescp"):
            if not shutil.which(tool):
                die("%s is missing (Debian package dcmtk)" % tool)
        if not args.no_orthanc and not os.path.exists(ORTHANC):
            die("Orthanc is missing (Debian package orthanc; or use --no-orthanc)")
        os.makedirs(OUT, exist_ok=True)
        if not args.no_build:
            build(build_dir)
        generate(data_dir, args.files)
        if not args.no_orthanc:
            enter_namespace()
    gen_cmd = open(os.path.join(data_dir, "GENERATED")).read().strip()
    files = list_files(data_dir)[:args.files]
    if len(files) != args.files or args.files % 4:
        die("need %d files (a multiple of 4), have %d" % (args.files, len(files)))
    total_mb = sum(os.path.getsize(f) for f in files) / 1e6
    for f in files:  # warm the page cache
        with open(f, "rb") as fh:
            while fh.read(1 << 20):
                pass
    load_start = loadavg()
    workdir = tempfile.mkdtemp(prefix="store-bench.", dir=OUT)
    kinds = ["telerad", "storescp"] + ([] if args.no_orthanc else ["orthanc"])
    combos = [(k, n) for n in (1, 4) for k in kinds]
    times = {c: [] for c in combos}
    cpus = {c: [] for c in combos}
    rss = []
    version = None
    for k in kinds:  # warm-up (page cache, binaries), not timed
        version = one_run(k, telerad, workdir, files[:20], 1)[3] or version
    for rnd in range(args.repeat):
        for c in combos:
            secs, peak, cpu, _ = one_run(c[0], telerad, workdir, files, c[1])
            times[c].append(secs)
            if cpu is not None:
                cpus[c].append(cpu)
            if peak:
                rss.append(peak)
            log("round %d: %-8s %d association(s): %.2f s%s" % (
                rnd + 1, c[0], c[1], secs,
                "" if cpu is None else " (receiver CPU %.2f s)" % cpu))
    load_end = loadavg()
    med = {c: statistics.median(v) for c, v in times.items()}
    lines = []
    lines.append("C-STORE of %d CT files (512x512x16 bit, %.0f MB), median of %d rounds, "
                 "on %s (%d CPUs), %s" % (len(files), total_mb, args.repeat, platform.node(),
                                          os.cpu_count(), time.strftime("%Y-%m-%d %H:%M")))
    lines.append("load average (1, 5, 15 min): %s at the start, %s at the end" % (
        load_start, load_end))
    lines.append("")
    lines.append("| receiver | associations | wall s | instances/s | MB/s | receiver CPU ms "
                 "per instance | all rounds (s) |")
    lines.append("|---|---:|---:|---:|---:|---:|---|")
    for c in combos:
        sec = med[c]
        label = LABEL[c[0]]
        if c[0] == "orthanc" and version:
            label = "Orthanc %s (SQLite index)" % version
        cpu = ("%.2f" % (1000 * statistics.median(cpus[c]) / len(files))) if cpus[c] else "-"
        lines.append("| %s | %d | %.2f | %.0f | %.0f | %s | %s |" % (
            label, c[1], sec, len(files) / sec, total_mb / sec, cpu,
            ", ".join("%.2f" % x for x in times[c])))
    lines.append("")
    peers = [("storescp", 1.0)] + ([] if args.no_orthanc else [("orthanc", 3.0)])
    for peer, goal in peers:
        for n in (1, 4):
            ratio = med[(peer, n)] / med[("telerad", n)]
            lines.append("ratio telerad/%s, %d association%s: %.2fx (goal >= %.1fx: %s)" % (
                "Orthanc" if peer == "orthanc" else peer, n, "s" if n > 1 else "",
                ratio, goal, "met" if ratio >= goal else "NOT met"))
    if rss:
        lines.append("telerad serve peak RSS: %.1f MB" % max(rss))
    lines.append("")
    lines.append("commands (every DCMTK tool%s with TCP_NODELAY=1 in its environment%s):" % (
        "" if args.no_orthanc else " and Orthanc",
        "" if args.no_orthanc else "; all inside `unshare -n`, lo up"))
    lines.append("  receivers: %s serve --data DIR --dicom-port 0 --http-port 0 -q" %
                 os.path.relpath(telerad, ROOT))
    lines.append("             storescp --fork -aet %s -od DIR PORT" % AET)
    if not args.no_orthanc:
        lines.append("             Orthanc CONFIG (DicomAet %s, StorageDirectory and "
                     "IndexDirectory (SQLite) in DIR, StorageCompression false, no plugins, "
                     "Orthanc's defaults otherwise)" % AET)
    lines.append("  senders:   storescu -aec %s 127.0.0.1 PORT FILES... (1 process with %d "
                 "files, or 4 in parallel with %d each)" % (AET, len(files), len(files) // 4))
    lines.append("  a new receiver in a fresh DIR for every run; rounds interleaved: %s" %
                 ", ".join("%s/%d" % c for c in combos))
    lines.append("  files:     %s" % gen_cmd)
    lines.append("  this run:  %s %s" % (ENTRY, " ".join(sys.argv[1:])))
    if args.profile:
        lines.append("")
        lines.append(profile(telerad, workdir, files))
    shutil.rmtree(workdir, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(OUT, "store.last.txt"), "w") as f:
        f.write(report + "\n")

if __name__ == "__main__":
    main()
