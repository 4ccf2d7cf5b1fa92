#!/usr/bin/python3
"""wado.py - WADO-RS retrieval of a whole 500-instance CT study: telerad serve against Orthanc
1.10 with its DICOMweb plugin, and against a static file of the same size that telerad serves
itself.

    /usr/bin/python3 bench/wado.py              # full run: build, generate once, 3 rounds
    /usr/bin/python3 bench/wado.py --profile    # and where telerad's time goes (callgrind,
                                                # strace -c)

What it does:
  1. builds telerad without sanitizers (RelWithDebInfo) in bench/out/build, as the other
     benchmarks do (`cmake -S bench -B bench/out/build`);
  2. generates, once, one CT study of 500 images of 512x512 16-bit (~526 KB each, explicit VR
     little endian) with ../shared/tools/gen_study.py into bench/out/ct-512x512-study500 (a
     stamp file records the command);
  3. re-runs itself in a private network namespace (`unshare -n`, only `lo`, brought up):
     Debian's Orthanc listens on every address and cannot be told to take loopback only;
  4. stores the study in `telerad serve` (with --no-auth, as Orthanc runs without
     authentication here: one request per study, so accounts would cost next to nothing) and
     in Orthanc (storescu, one association each), and
     writes one file of the same total size into a folder that `telerad serve --web-dir DIR`
     serves at / (sendfile);
  5. times, 5 rounds interleaved after one warm-up each (median reported, and the server's
     CPU time per transfer from /proc/PID/stat),
       curl -s -o /dev/null -H 'Accept: multipart/related; type="application/dicom";
            transfer-syntax=*' http://127.0.0.1:PORT/dicom-web/studies/UID
     against telerad and Orthanc, and `curl -s -o /dev/null http://127.0.0.1:PORT/study.bin`
     against telerad's static files; checks that each answer has the study's size;
  6. prints wall time, MB/s and the ratios telerad/Orthanc and telerad/static file (goals:
     >= 3x Orthanc, >= 80 % of the static file rate), and saves the report in
     bench/out/wado.last.txt.

Options: --repeat N (default 5), --no-build, --build-dir DIR, --files N (default 500),
--profile.
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
ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
IN_NAMESPACE = "TELERAD_BENCH_NETNS"
ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log("wado: " + msg)
    sys.exit(1)


def run_quiet(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        die("failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stdout[-4000:]))
    return r.stdout


def build(build_dir):
    log("building telerad (RelWithDebInfo, no sanitizers) in %s" % os.path.relpath(build_dir, ROOT))
    run_quiet(["cmake", "-S", HERE, "-B", build_dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    run_quiet(["cmake", "--build", build_dir, "-j2", "--target", "telerad"])


def generate(data_dir, files):
    cmd = [PYTHON, GEN_STUDY, data_dir, "--modality", "CT", "--studies", "1", "--images",
           str(files), "--rows", "512", "--cols", "512", "--seed", "5"]
    stamp = os.path.join(data_dir, "GENERATED")
    want = " ".join(os.path.relpath(a, ROOT) if a.startswith("/") else a for a in cmd[1:])
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        return want
    if not os.path.exists(GEN_STUDY):
        die("%s is missing (it comes with ../shared)" % GEN_STUDY)
    if os.path.exists(data_dir):
        shutil.rmtree(data_dir)
    log("generating a study of %d CT images 512x512 with gen_study.py ..." % files)
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


def dcmtk_env():
    return dict(os.environ, TCP_NODELAY="1")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def enter_namespace():
    """Re-run this script in a new network namespace with lo up; never returns."""
    if not shutil.which("unshare") or not shutil.which("ip"):
        die("unshare (util-linux) and ip (iproute2) are needed to isolate Orthanc")
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    if probe.returncode != 0:
        die("cannot create a network namespace (unshare -n needs root or user namespaces)")
    env = dict(os.environ, **{IN_NAMESPACE: "1"})
    script = "ip link set lo up && exec %s %s %s" % (
        PYTHON, os.path.abspath(__file__), " ".join("'%s'" % a for a in sys.argv[1:]))
    os.execvpe("unshare", ["unshare", "-n", "bash", "-c", script], env)


class Telerad:
    def __init__(self, telerad, workdir, web_dir, wrapper=()):
        self.data = os.path.join(workdir, "telerad-data")
        self.log = open(os.path.join(workdir, "telerad.log"), "ab")
        self.cmd = list(wrapper) + [telerad, "serve", "--data", self.data, "--dicom-port", "0",
                                    "--http-port", "0", "--web-dir", web_dir, "--no-auth", "-q"]
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=self.log)
        ports = {}
        while len(ports) < 2:
            line = self.proc.stdout.readline().decode()
            if not line:
                die("telerad serve did not start: %s" % " ".join(self.cmd))
            k, v = line.split()
            ports[k] = int(v)
        self.dicom_port, self.http_port = ports["dicom-port"], ports["http-port"]

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


class Orthanc:
    def __init__(self, workdir):
        self.dicom_port, self.http_port = free_port(), free_port()
        cfg = {
            "Name": "telerad-bench",
            "StorageDirectory": os.path.join(workdir, "orthanc-storage"),
            "IndexDirectory": os.path.join(workdir, "orthanc-index"),
            "StorageCompression": False,
            "Plugins": [ORTHANC_DICOMWEB],
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomAet": "ORTHANC",
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomAlwaysAllowStore": True,
            "KeepAlive": True,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        path = os.path.join(workdir, "orthanc.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        self.log = open(os.path.join(workdir, "orthanc.log"), "ab")
        self.proc = subprocess.Popen([ORTHANC, path], stdout=self.log, stderr=self.log,
                                     start_new_session=True)
        if not wait_http("http://127.0.0.1:%d/system" % self.http_port, self.proc):
            die("Orthanc did not start (see %s)" % self.log.name)
        info = json.loads(urllib.request.urlopen(
            "http://127.0.0.1:%d/system" % self.http_port).read())
        plugins = json.loads(urllib.request.urlopen(
            "http://127.0.0.1:%d/plugins" % self.http_port).read())
        if "dicom-web" not in plugins:
            die("Orthanc's DICOMweb plugin did not load: %r" % plugins)
        self.version = info.get("Version")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def storescu(aec, port, files):
    run_quiet(["storescu", "-aec", aec, "127.0.0.1", str(port)] + files, env=dcmtk_env())


def cpu_seconds(pid):
    """User + system CPU seconds of a process and all its threads so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def curl(url, accept=None):
    """Wall seconds and bytes of one curl of `url` to /dev/null."""
    cmd = ["curl", "-s", "-f", "-o", "/dev/null", "-w", "%{size_download}"]
    if accept:
        cmd += ["-H", "Accept: " + accept]
    t0 = time.perf_counter()
    r = subprocess.run(cmd + [url], stdout=subprocess.PIPE, text=True)
    secs = time.perf_counter() - t0
    if r.returncode != 0:
        die("curl %s failed (%d)" % (url, r.returncode))
    return secs, int(r.stdout or 0)


def profile(telerad_bin, workdir, web_dir, study, files):
    report = []
    if shutil.which("valgrind"):
        out = os.path.join(OUT, "callgrind.wado.out")
        for old in [out] + [out + ".%d" % i for i in range(1, 4)]:
            if os.path.exists(old):
                os.unlink(old)
        t = Telerad(telerad_bin, workdir, web_dir,
                    wrapper=("valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                             "--dump-instr=no"))
        try:
            url = "http://127.0.0.1:%d/dicom-web/studies/%s" % (t.http_port, study)
            # Count the transfer only: zero the counters after start-up (which hashes the
            # admin password), dump them after the transfer.
            run_quiet(["callgrind_control", "-z", str(t.proc.pid)])
            secs, _ = curl(url, ACCEPT)
            run_quiet(["callgrind_control", "-d", str(t.proc.pid)])
        finally:
            t.stop()
        dump = out + ".1" if os.path.exists(out + ".1") else out
        report.append("callgrind, telerad serve sending the study (%.1f s under valgrind; "
                      "counters zeroed after start-up), inclusive cost:" % secs)
        ann = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=99", dump],
                             stdout=subprocess.PIPE, text=True).stdout
        report += ["  " + ln.strip() for ln in ann.splitlines()
                   if re.match(r"^\s*[\d,]+ \(", ln)][:15]
    if shutil.which("strace"):
        out = os.path.join(OUT, "strace.wado.txt")
        t = Telerad(telerad_bin, workdir, web_dir)
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(t.proc.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        try:
            url = "http://127.0.0.1:%d/dicom-web/studies/%s" % (t.http_port, study)
            secs, _ = curl(url, ACCEPT)
        finally:
            st.send_signal(signal.SIGINT)
            st.wait(60)
            t.stop()
        report.append("strace -c -f, telerad serve sending the study (%.1f s under strace):" %
                      secs)
        with open(out) as f:
            report += ["  " + ln.rstrip() for ln in f.readlines()[:14]]
    return "\n".join(report)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--build-dir", default=os.path.join(OUT, "build"))
    ap.add_argument("--files", type=int, default=500)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    build_dir = os.path.abspath(args.build_dir)
    telerad_bin = os.path.join(build_dir, "telerad")
    data_dir = os.path.join(OUT, "ct-512x512-study%d" % args.files)
    if os.environ.get(IN_NAMESPACE) != "1":
        for tool in ("storescu", "curl"):
            if not shutil.which(tool):
                die("%s is missing (Debian packages dcmtk, curl)" % tool)
        if not os.path.exists(ORTHANC) or not os.path.exists(ORTHANC_DICOMWEB):
            die("Orthanc and its DICOMweb plugin are needed (Debian packages orthanc, "
                "orthanc-dicomweb)")
        os.makedirs(OUT, exist_ok=True)
        if not args.no_build:
            build(build_dir)
        generate(data_dir, args.files)
        enter_namespace()

    gen_cmd = open(os.path.join(data_dir, "GENERATED")).read().strip()
    files = list_files(data_dir)[:args.files]
    total = sum(os.path.getsize(f) for f in files)
    workdir = tempfile.mkdtemp(prefix="wado-bench.", dir=OUT)
    # The static file: the study's files one after the other, the same number of bytes.
    web_dir = os.path.join(workdir, "web")
    os.makedirs(web_dir)
    with open(os.path.join(web_dir, "study.bin"), "wb") as out:
        for f in files:
            with open(f, "rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)
    study = os.path.basename(os.path.dirname(os.path.dirname(files[0])))  # gen_study's folder
    t = Telerad(telerad_bin, workdir, web_dir)
    o = Orthanc(workdir)
    try:
        log("storing %d files in telerad and in Orthanc %s ..." % (len(files), o.version))
        storescu("TELERAD", t.dicom_port, files)
        storescu("ORTHANC", o.dicom_port, files)
        urls = {
            "telerad": ("http://127.0.0.1:%d/dicom-web/studies/%s" % (t.http_port, study),
                        ACCEPT),
            "orthanc": ("http://127.0.0.1:%d/dicom-web/studies/%s" % (o.http_port, study),
                        ACCEPT),
            "static": ("http://127.0.0.1:%d/study.bin" % t.http_port, None),
        }
        sizes = {}
        for name, (url, accept) in urls.items():  # warm-up (page cache, indexes), not timed
            sizes[name] = curl(url, accept)[1]
        for name in ("telerad", "orthanc"):
            if not total <= sizes[name] < total + 1000 * len(files) + 4096:
                die("%s sent %d bytes for a study of %d" % (name, sizes[name], total))
        if sizes["static"] != total:
            die("the static file came with %d bytes, not %d" % (sizes["static"], total))
        times = {n: [] for n in urls}
        cpu = {n: [] for n in urls}
        pids = {"telerad": t.proc.pid, "orthanc": o.proc.pid, "static": t.proc.pid}
        for rnd in range(args.repeat):
            for name, (url, accept) in urls.items():
                c0 = cpu_seconds(pids[name])
                secs, _ = curl(url, accept)
                cpu[name].append(cpu_seconds(pids[name]) - c0)
                times[name].append(secs)
                log("round %d: %-8s %.3f s (server CPU %.2f s)" % (rnd + 1, name, secs,
                                                                    cpu[name][-1]))
        rss = t.peak_rss_mb()
    finally:
        t.stop()
        o.stop()
    med = {n: statistics.median(v) for n, v in times.items()}
    rate = {n: sizes[n] / med[n] / 1e6 for n in urls}
    lines = []
    lines.append("WADO-RS of one study of %d CT instances (512x512x16 bit, %.0f MB), median of "
                 "%d rounds, on %s (%d CPUs), %s" % (len(files), total / 1e6, args.repeat,
                                                     platform.node(), os.cpu_count(),
                                                     time.strftime("%Y-%m-%d")))
    lines.append("")
    lines.append("| server | what | bytes | wall s | MB/s | server CPU s | all rounds (s) |")
    lines.append("|---|---|---:|---:|---:|---:|---|")
    what = {"telerad": "WADO-RS study, transfer-syntax=*",
            "orthanc": "WADO-RS study, transfer-syntax=* (Orthanc %s, DICOMweb plugin)" %
                       o.version,
            "static": "one static file of the same size (--web-dir, sendfile)"}
    for n in urls:
        lines.append("| %s | %s | %d | %.3f | %.0f | %.2f | %s |" % (
            "telerad serve" if n != "orthanc" else "Orthanc", what[n], sizes[n], med[n],
            rate[n], statistics.median(cpu[n]), ", ".join("%.3f" % x for x in times[n])))
    lines.append("")
    r1 = med["orthanc"] / med["telerad"]
    r2 = rate["telerad"] / rate["static"]
    lines.append("ratio telerad/Orthanc (time): %.2fx (goal >= 3x: %s)" % (
        r1, "met" if r1 >= 3 else "NOT met"))
    lines.append("telerad WADO-RS rate / static file rate: %.0f %% (goal >= 80 %%: %s)" % (
        100 * r2, "met" if r2 >= 0.8 else "NOT met"))
    lines.append("best rounds: telerad %.3f s, Orthanc %.3f s, static %.3f s (telerad/Orthanc "
                 "%.2fx, telerad/static %.0f %%); server CPU per study (median): telerad "
                 "%.2f s, Orthanc %.2f s, static %.2f s" % (
                     min(times["telerad"]), min(times["orthanc"]), min(times["static"]),
                     min(times["orthanc"]) / min(times["telerad"]),
                     100 * min(times["static"]) / min(times["telerad"]),
                     statistics.median(cpu["telerad"]), statistics.median(cpu["orthanc"]),
                     statistics.median(cpu["static"])))
    lines.append("(wall times on this shared 2-vCPU VM move by +-30 % between rounds; the "
                 "loopback itself tops out near the static file's rate)")
    if rss:
        lines.append("telerad serve peak RSS: %.1f MB" % rss)
    lines.append("")
    lines.append("commands (all inside `unshare -n`, lo up; DCMTK with TCP_NODELAY=1):")
    lines.append("  telerad:  %s serve --data DIR --dicom-port 0 --http-port 0 --web-dir WEB "
                 "--no-auth -q" % os.path.relpath(telerad_bin, ROOT))
    lines.append("  Orthanc:  Orthanc CONFIG (StorageCompression false, DicomWeb plugin)")
    lines.append("  load:     storescu -aec AET 127.0.0.1 PORT FILES... (one association)")
    lines.append("  timed:    curl -s -o /dev/null -H 'Accept: %s' URL/dicom-web/studies/UID" %
                 ACCEPT)
    lines.append("            curl -s -o /dev/null URL/study.bin")
    lines.append("  files:    %s" % gen_cmd)
    lines.append("  this run: /usr/bin/python3 bench/wado.py %s" % " ".join(sys.argv[1:]))
    if args.profile:
        lines.append("")
        lines.append(profile(telerad_bin, workdir, web_dir, study, files))
    shutil.rmtree(workdir, ignore_errors=True)
    report = "\n".join(lines)
    print(report)
    with open(os.path.join(OUT, "wado.last.txt"), "w") as f:
        f.write(report + "\n")


if __name__ == "__main__":
    main()
