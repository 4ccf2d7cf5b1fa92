#!/usr/bin/python3
"""Header-only parse of 1,000 CT files: telerad side by side with DCMTK dcmdump and pydicom.

  bench/header_parse.py [--repeat 3] [--files 1000] [--callgrind-files 100] [--no-callgrind]
                        [--no-build] [--build-dir DIR] [--batch N]
  bench/header_parse.py --profile      (where telerad spends its instructions, file:line)

Run with Debian's /usr/bin/python3 (it has python3-pydicom; a pyenv python3 on PATH may not).
See bench/README.md for what is measured and why. In one run, on this machine:

  1. builds telerad and bench/parse_bench.c without sanitizers in bench/out/build
     (`cmake -S bench -B bench/out/build`; build/ is left alone, it may be an ASan build);
  2. generates, once, 1,000 CT images 512x512 (10 studies of 100) with
     ../shared/tools/gen_study.py into bench/out/ (git-ignored), reusing them afterwards;
  3. reads every file once and runs one untimed warm-up pass of each command (warm page cache);
  4. times each command --repeat times, interleaved (A B C ..., A B C ...), and keeps the median
     wall time; CPU time (user+sys) comes from wait4(2), peak RSS from GNU time's %M (what
     /usr/bin/time -v calls "Maximum resident set size");
  5. counts instructions with callgrind over --callgrind-files files (repeatable on a shared
     machine where wall time is not);
  6. prints a table with files/s and the ratios telerad/peer, and whether the goals are met
     (>= 10x pydicom, >= 3x dcmdump). One run on one machine: ratios, not absolute promises.

Exit status 0 when every command succeeded (whether or not the goals are met), 1 otherwise.
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out")
GEN_STUDY = os.path.normpath(os.path.join(ROOT, "..", "shared", "tools", "gen_study.py"))
PYTHON = "/usr/bin/python3"  # Debian's, with python3-pydicom 2.3.1
TIME = "/usr/bin/time"  # GNU time (Debian package `time`), for the peak RSS
PIXEL_DATA = "7fe0,0010"

GOAL_PYDICOM = 10.0
GOAL_DCMDUMP = 3.0

# The pydicom side: one process, a loop over the files; the loop alone is timed inside, the
# whole process (interpreter start-up and `import pydicom` included) from outside.
PYDICOM_LOOP = r"""
import sys, time, json
import pydicom
paths = [line.rstrip("\n") for line in open(sys.argv[1]) if line.strip()]
wall0, cpu0 = time.perf_counter(), time.process_time()
for p in paths:
    pydicom.dcmread(p, stop_before_pixels=True)
wall1, cpu1 = time.perf_counter(), time.process_time()
json.dump({"loop_wall": wall1 - wall0, "loop_cpu": cpu1 - cpu0}, sys.stderr)
"""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def die(msg):
    log("header_parse: " + msg)
    sys.exit(1)


def run_quiet(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if r.returncode != 0:
        die("failed (%d): %s\n%s" % (r.returncode, " ".join(cmd), r.stdout[-4000:]))
    return r.stdout


def build(build_dir):
    log("building telerad and parse_bench (RelWithDebInfo, no sanitizers) in %s" %
        os.path.relpath(build_dir, ROOT))
    run_quiet(["cmake", "-S", HERE, "-B", build_dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    run_quiet(["cmake", "--build", build_dir, "-j%d" % (os.cpu_count() or 2), "--target",
               "telerad", "parse_bench"])


def generate(data_dir, files):
    """Generate `files` CT images once (studies of 100 images); reuse them on later runs."""
    studies = max(1, files // 100)
    images = files // studies
    cmd = [PYTHON, GEN_STUDY, data_dir, "--modality", "CT", "--studies", str(studies),
           "--images", str(images), "--rows", "512", "--cols", "512", "--seed", "1"]
    stamp = os.path.join(data_dir, "GENERATED")
    want = " ".join(cmd[1:]).replace(ROOT + "/", "")
    if os.path.exists(stamp) and open(stamp).read().strip() == want:
        return want
    if os.path.exists(data_dir):
        shutil.rmtree(data_dir)
    log("generating %d CT files 512x512 (%d studies of %d) with gen_study.py ..." %
        (studies * images, studies, images))
    t = time.perf_counter()
    run_quiet(cmd)
    with open(stamp, "w") as f:
        f.write(want + "\n")
    log("  done in %.0f s" % (time.perf_counter() - t))
    return want


def list_files(data_dir):
    paths = []
    for top, dirs, names in os.walk(data_dir):
        dirs.sort()
        for n in sorted(names):
            if n.endswith(".dcm"):
                paths.append(os.path.relpath(os.path.join(top, n), data_dir))
    return paths


def measure(cmd, cwd, stdin_data=None):
    """Run `cmd` (stdout to /dev/null) under GNU time and return wall seconds, CPU seconds
    (user+sys of the process and its waited-for children, from wait4), peak RSS in KiB (GNU
    time's %M: the largest of the process and its children) and its standard error.

    The RSS comes from /usr/bin/time rather than from our own wait4 because a child's ru_maxrss
    starts at the RSS of the process it was forked from: Python's would hide small peers."""
    with open(os.devnull, "wb") as devnull, tempfile.TemporaryFile() as errf, \
            tempfile.NamedTemporaryFile("r") as rssf:
        start = time.perf_counter()
        p = subprocess.Popen([TIME, "-f", "%M", "-o", rssf.name] + cmd, cwd=cwd, stdout=devnull,
                             stderr=errf,
                             stdin=subprocess.PIPE if stdin_data is not None else subprocess.DEVNULL)
        if stdin_data is not None:
            p.stdin.write(stdin_data)
            p.stdin.close()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - start
        p.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode("utf-8", "replace")
        rss = rssf.read().split()
    if p.returncode != 0:
        die("failed (%d): %s\n%s" % (p.returncode, " ".join(cmd[:6]) + " ...", err[-4000:]))
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_kib": int(rss[-1]),
            "stderr": err}


class Command:
    """One contender: a command line over all files, batched with xargs if it would not fit."""

    def __init__(self, key, label, argv, files, batch, list_file=None, parse_stderr=None):
        self.key, self.label, self.argv = key, label, argv
        self.samples = []
        self.parse_stderr = parse_stderr
        if list_file is not None:
            self.cmd, self.stdin = argv + [list_file], None
        elif batch:
            self.cmd = ["xargs", "-0", "-n", str(batch)] + argv
            self.stdin = b"\0".join(f.encode() for f in files) + b"\0"
        else:
            self.cmd, self.stdin = argv + files, None
        self.shown = " ".join(argv) + (" " + list_file if list_file else " FILES... > /dev/null")
        if batch and list_file is None:
            self.shown = "xargs -0 -n %d %s" % (batch, self.shown)

    def run(self, cwd):
        r = measure(self.cmd, cwd, self.stdin)
        if self.parse_stderr:
            r.update(self.parse_stderr(r["stderr"]))
        return r

    def median(self, field):
        return statistics.median(s[field] for s in self.samples)


def pydicom_stderr(err):
    m = re.search(r"\{.*\}", err)
    if not m:
        die("pydicom loop printed no timing:\n" + err[-2000:])
    return json.loads(m.group(0))


def callgrind_total(cmd, cwd, extra=()):
    """Instructions executed (callgrind Ir), with the given extra valgrind options."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        r = subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=no",
                            "--callgrind-out-file=" + out, *extra] + cmd, cwd=cwd,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            die("callgrind failed: %s\n%s" % (" ".join(cmd[:4]), r.stderr[-3000:]))
        total = None
        with open(out) as f:
            for line in f:
                if line.startswith(("totals:", "summary:")):
                    total = int(line.split()[1])
        if total is None:
            die("no totals in callgrind output for " + " ".join(cmd[:4]))
        return total


def profile(telerad, parse_bench, data_dir, some):
    """Print callgrind's top functions (self cost) and the costliest source lines."""
    some_list = os.path.join(OUT, "profile.list")
    with open(some_list, "w") as f:
        f.write("".join(p + "\n" for p in some))
    runs = [("telerad dump --header-only, %d files" % len(some),
             [telerad, "dump", "--header-only"] + some, []),
            ("library loop (parse_bench), %d files" % len(some),
             [parse_bench, "-q", "-l", some_list], ["--toggle-collect=parse_files"])]
    for title, cmd, extra in runs:
        out = os.path.join(OUT, "callgrind.%s.out" % os.path.basename(cmd[0]))
        subprocess.run(["valgrind", "--tool=callgrind", "--dump-instr=no",
                        "--callgrind-out-file=" + out, *extra] + cmd, cwd=data_dir,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        for inclusive in ("no", "yes"):
            text = subprocess.run(["callgrind_annotate", "--inclusive=" + inclusive, out],
                                  capture_output=True, text=True).stdout
            table = text[text.index("file:function"):].split("\n")[2:27]
            print("== %s: top functions, %s cost (%s)" %
                  (title, "inclusive" if inclusive == "yes" else "self",
                   os.path.relpath(out, ROOT)))
            print("\n".join(l for l in table if l.strip()))
        # Costliest lines of our own sources, calls included (where the time is spent).
        text = subprocess.run(["callgrind_annotate", "--auto=yes", "--inclusive=yes",
                               "--show-percs=no", out], capture_output=True, text=True).stdout
        rows, current, lineno, source = [], None, 0, {}
        for line in text.split("\n"):
            m = re.match(r"-- Auto-annotated source: (\S+)", line)
            if m:
                path = os.path.normpath(os.path.join(ROOT, m.group(1)))
                current = path if path.startswith(ROOT + "/") and os.path.exists(path) else None
                lineno = 0
                continue
            m = re.match(r"-- line (\d+) -", line)
            if m:
                lineno = int(m.group(1)) - 1
                continue
            m = re.match(r"\s*([0-9][0-9,]*|\.)  (.*)$", line)
            if current is None or not m or "events annotated" in line:
                continue
            if m.group(2).startswith("=> "):
                if m.group(1) != ".":
                    callee = m.group(2)[3:].split(" (")[0]
                    rows.append((int(m.group(1).replace(",", "")), current, lineno,
                                 "calls " + callee.replace(ROOT + "/", "")))
                continue
            lineno += 1
            source[(current, lineno)] = m.group(2).strip()
            if m.group(1) != ".":
                rows.append((int(m.group(1).replace(",", "")), current, lineno, None))
        # One row per source line: its own cost plus what it calls.
        per_line = {}
        for ir, path, n, callee in rows:
            entry = per_line.setdefault((path, n), [0, []])
            entry[0] += ir
            if callee:
                entry[1].append(callee)
        ranked = sorted(per_line.items(), key=lambda kv: -kv[1][0])
        print("== %s: costliest lines of telerad's sources (inclusive: the line and its calls)"
              % title)
        shown = 0
        for (path, n), (ir, callees) in ranked:
            code = source.get((path, n), "")
            if code in ("{", "}") or code.startswith(("int main", "static int main")):
                continue
            if re.match(r"(static )?\w[\w\s\*]*\(.*\)\s*$", code) and not code.endswith(";"):
                continue  # a function's opening line carries its whole cost
            print("%12d  %s:%d  %s" % (ir, os.path.relpath(path, ROOT), n, code[:80]))
            shown += 1
            if shown == 20:
                break
        print()
    return 0


def machine():
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fam = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    fam_m = re.search(r"CPU family:\s*(\d+)", fam)
    model_m = re.search(r"Model:\s*(\d+)", fam)
    hyper = re.search(r"Hypervisor vendor:\s*(\S+)", fam)
    extra = []
    if fam_m and model_m:
        extra.append("family %s model %s" % (fam_m.group(1), model_m.group(1)))
    if hyper:
        extra.append("under " + hyper.group(1))
    return "%s (%s), %d CPUs, Linux %s" % (cpu, ", ".join(extra), os.cpu_count() or 0,
                                           platform.release())


def versions(dcmdump):
    import pydicom
    v = subprocess.run([dcmdump, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"dcmdump v(\S+)", v)
    gcc = subprocess.run(["cc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD", "--", "src",
                            "CMakeLists.txt"]).returncode != 0
    return ("telerad %s%s (RelWithDebInfo -O2, %s), DCMTK dcmdump %s, pydicom %s on Python %s" %
            (commit or "?", " + uncommitted changes in src/" if dirty else "", gcc,
             m.group(1) if m else "?", pydicom.__version__, platform.python_version()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1000, help="CT files to parse (default 1000)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs of each command (median)")
    ap.add_argument("--callgrind-files", type=int, default=100,
                    help="files for the instruction counts (default 100)")
    ap.add_argument("--no-callgrind", action="store_true", help="skip the instruction counts")
    ap.add_argument("--no-build", action="store_true", help="use the build dir as it is")
    ap.add_argument("--profile", action="store_true",
                    help="only profile: callgrind over telerad dump --header-only and the "
                         "library loop (--callgrind-files files), top functions by self cost")
    ap.add_argument("--build-dir", default=os.path.join(OUT, "build"),
                    help="where telerad and parse_bench are built (default bench/out/build)")
    ap.add_argument("--batch", type=int, default=0,
                    help="pass files in xargs batches of this size (default: all in one "
                         "process when the argument list fits)")
    args = ap.parse_args()

    try:
        import pydicom  # noqa: F401
    except ImportError:
        die("pydicom is missing: run with /usr/bin/python3 (apt-get install python3-pydicom)")
    dcmdump = shutil.which("dcmdump") or die("dcmdump not found (apt-get install dcmtk)")
    if not os.access(TIME, os.X_OK):
        die("GNU time is missing (apt-get install time)")
    build_dir = os.path.abspath(args.build_dir)
    if not args.no_build:
        build(build_dir)
    telerad = os.path.join(build_dir, "telerad")
    parse_bench = os.path.join(build_dir, "parse_bench")
    for exe in (telerad, parse_bench):
        if not os.access(exe, os.X_OK):
            die("%s is not built" % exe)

    data_dir = os.path.join(OUT, "ct-512x512-%d" % args.files)
    gen_cmd = generate(data_dir, args.files)
    files = list_files(data_dir)
    if len(files) != args.files:
        die("expected %d files in %s, found %d" % (args.files, data_dir, len(files)))
    total_bytes = sum(os.path.getsize(os.path.join(data_dir, f)) for f in files)
    list_file = os.path.join(OUT, "ct-512x512-%d.list" % args.files)
    with open(list_file, "w") as f:
        f.write("".join(p + "\n" for p in files))

    if args.profile:
        return profile(telerad, parse_bench, data_dir, files[:min(args.callgrind_files, len(files))])

    batch = args.batch
    argbytes = sum(len(p) + 1 + 8 for p in files)  # + pointer
    if not batch and argbytes > os.sysconf("SC_ARG_MAX") // 2:
        batch = 500

    cmds = [
        Command("telerad", "telerad dump --header-only", [telerad, "dump", "--header-only"],
                files, batch),
        Command("library", "library: parse_bench (dcm_file_read header_only)",
                [parse_bench, "-l"], files, 0, list_file=list_file,
                parse_stderr=lambda e: {"loop_wall": float(re.search(r"in ([0-9.]+) s", e).group(1))}),
        Command("dcmdump", "dcmdump (plain)", [dcmdump], files, batch),
        Command("dcmdump-M", "dcmdump -M", [dcmdump, "-M"], files, batch),
        # +sb warns once per file that it skipped the rest: -q keeps that off its bill.
        Command("dcmdump-sb", "dcmdump -q +sb " + PIXEL_DATA, [dcmdump, "-q", "+sb", PIXEL_DATA],
                files, batch),
        Command("dcmdump-M-sb", "dcmdump -q -M +sb " + PIXEL_DATA,
                [dcmdump, "-q", "-M", "+sb", PIXEL_DATA], files, batch),
        Command("pydicom", "pydicom dcmread(stop_before_pixels=True)",
                [PYTHON, "-c", PYDICOM_LOOP], files, 0, list_file=list_file,
                parse_stderr=pydicom_stderr),
    ]
    for c in cmds:
        if c.key == "library":
            c.shown = "parse_bench -l LIST  (LIST: the %d paths, one a line)" % len(files)
        if c.key == "pydicom":
            c.shown = ("/usr/bin/python3 -c 'for p in paths: pydicom.dcmread(p, "
                       "stop_before_pixels=True)'")
    by = {c.key: c for c in cmds}

    with open("/proc/loadavg") as f:
        load_before = " ".join(f.read().split()[:3])

    log("reading the %d files once (%.0f MB) and one warm-up pass of each command ..." %
        (len(files), total_bytes / 1e6))
    for p in files:
        with open(os.path.join(data_dir, p), "rb") as f:
            while f.read(1 << 20):
                pass
    for c in cmds:
        c.run(data_dir)
    for i in range(args.repeat):
        log("timed round %d of %d ..." % (i + 1, args.repeat))
        for c in cmds:
            c.samples.append(c.run(data_dir))

    with open("/proc/loadavg") as f:
        load_after = " ".join(f.read().split()[:3])

    n = len(files)
    header_options = [by[k] for k in ("dcmdump-M", "dcmdump-sb", "dcmdump-M-sb")]
    fastest_dcmdump = min(header_options, key=lambda c: c.median("wall"))
    tel = by["telerad"].median("wall")
    lib = by["library"].median("wall")
    py_total = by["pydicom"].median("wall")
    py_loop = by["pydicom"].median("loop_wall")

    lines = []
    out = lines.append
    out("Header-only parse of %d CT files, 512x512, %.1f MB in all (%s)" %
        (n, total_bytes / 1e6, gen_cmd))
    out("Machine: %s" % machine())
    out("Versions: %s" % versions(dcmdump))
    out("Load average before/after: %s / %s. One run on this machine; median of %d timed runs "
        "after one warm-up run each, warm page cache." % (load_before, load_after, args.repeat))
    out("")
    out("%-50s %9s %10s %9s %9s %9s" % ("command (stdout > /dev/null)", "wall ms", "files/s",
                                         "CPU ms", "peak RSS", "telerad x"))

    def row(c):
        wall = c.median("wall")
        walls = [s["wall"] for s in c.samples]
        mark = "*" if c.key == fastest_dcmdump.key else ""
        out("%-50s %9.1f %10.0f %9.1f %7.1f M %8.1fx %-1s [%s]" % (
            c.label, wall * 1000, n / wall, c.median("cpu") * 1000, c.median("rss_kib") / 1024,
            wall / tel, mark, " ".join("%.1f" % (w * 1000) for w in walls)))

    for c in cmds:
        row(c)
        if c.key == "library":
            out("%-50s %9.1f %10.0f %9s %9s %8.1fx" % ("  the loop alone (timed inside)",
                                                       c.median("loop_wall") * 1000,
                                                       n / c.median("loop_wall"), "", "",
                                                       c.median("loop_wall") / tel))
        if c.key == "pydicom":
            out("%-50s %9.1f %10.0f %9.1f %9s %8.1fx" % (
                "  the loop alone (timed inside)", py_loop * 1000, n / py_loop,
                c.median("loop_cpu") * 1000, "", py_loop / tel))
    out("(* the fastest header-limiting dcmdump option; 'telerad x' = that wall time / telerad "
        "dump's; CPU = user+sys;")
    out(" peak RSS as /usr/bin/time -v reports it; [the %d wall times in ms, in run order])"
        % args.repeat)
    out("")
    out("Speed ratios (peer wall time / telerad wall time; goals: >= %gx pydicom, >= %gx dcmdump):"
        % (GOAL_PYDICOM, GOAL_DCMDUMP))

    def ratio(name, ours, peer, goal):
        r = peer / ours
        verdict = "" if goal is None else ("  goal %gx: %s" % (goal, "met" if r >= goal else "MISSED"))
        out("  %-62s %6.1fx%s" % (name, r, verdict))

    ratio("telerad dump / pydicom loop (start-up excluded)", tel, py_loop, GOAL_PYDICOM)
    ratio("telerad dump / pydicom process (start-up included)", tel, py_total, None)
    ratio("telerad dump / dcmdump (plain)", tel, by["dcmdump"].median("wall"), GOAL_DCMDUMP)
    ratio("telerad dump / %s" % fastest_dcmdump.label, tel, fastest_dcmdump.median("wall"),
          GOAL_DCMDUMP)
    ratio("library (parse_bench process) / pydicom loop", lib, py_loop, GOAL_PYDICOM)
    ratio("library (parse_bench process) / dcmdump (plain)", lib, by["dcmdump"].median("wall"),
          GOAL_DCMDUMP)
    ratio("library (parse_bench process) / %s" % fastest_dcmdump.label, lib,
          fastest_dcmdump.median("wall"), GOAL_DCMDUMP)
    out("  (in CPU time: telerad dump / pydicom loop %.1fx, telerad dump / %s %.1fx)" % (
        by["pydicom"].median("loop_cpu") / by["telerad"].median("cpu"), fastest_dcmdump.label,
        fastest_dcmdump.median("cpu") / by["telerad"].median("cpu")))

    if not args.no_callgrind:
        k = min(args.callgrind_files, n)
        log("callgrind instruction counts over %d files (takes a minute) ..." % k)
        some = files[:k]
        some_list = os.path.join(OUT, "ct-512x512-%d.first%d.list" % (n, k))
        one_list = os.path.join(OUT, "ct-512x512-%d.first1.list" % n)
        with open(some_list, "w") as f:
            f.write("".join(p + "\n" for p in some))
        with open(one_list, "w") as f:
            f.write(some[0] + "\n")
        loop_ir = callgrind_total([parse_bench, "-q", "-l", some_list], data_dir,
                                  ["--toggle-collect=parse_files"])
        out("")
        out("Instructions (callgrind Ir, repeatable), over the first %d files:" % k)
        out("  %-62s %13s %12s" % ("", "Ir", "Ir per file"))
        out("  %-62s %13d %12.0f" % ("library loop (parse_bench, --toggle-collect=parse_files)",
                                     loop_ir, loop_ir / k))
        # Per-file cost of the others without their start-up: Ir(k files) - Ir(1 file).
        peers = [
            ("telerad dump --header-only", [telerad, "dump", "--header-only"], None),
            ("dcmdump (plain)", [dcmdump], None),
            (fastest_dcmdump.label, fastest_dcmdump.argv, None),
            ("pydicom dcmread(stop_before_pixels=True)", [PYTHON, "-c", PYDICOM_LOOP], "list"),
        ]
        per_file = {}
        for label, argv, mode in peers:
            if mode == "list":
                many = callgrind_total(argv + [some_list], data_dir)
                one = callgrind_total(argv + [one_list], data_dir)
            else:
                many = callgrind_total(argv + some, data_dir)
                one = callgrind_total(argv + some[:1], data_dir)
            per_file[label] = (many - one) / (k - 1)
            out("  %-62s %13d %12.0f" % (label + " (Ir(%d) - Ir(1))" % k, many - one,
                                         per_file[label]))
        t = per_file["telerad dump --header-only"]
        lib_pf = loop_ir / k
        py_pf = per_file["pydicom dcmread(stop_before_pixels=True)"]
        out("  per-file instruction ratios: pydicom / telerad dump %.1fx, dcmdump / telerad dump "
            "%.1fx, %s / telerad dump %.1fx;" % (py_pf / t, per_file["dcmdump (plain)"] / t,
                                                 fastest_dcmdump.label,
                                                 per_file[fastest_dcmdump.label] / t))
        out("  pydicom / library %.0fx, %s / library %.0fx. Callgrind sees user space only: the "
            "kernel's share" % (py_pf / lib_pf, fastest_dcmdump.label,
                                per_file[fastest_dcmdump.label] / lib_pf))
        out("  (open, mmap, page faults: most of the library's wall time) is not in these counts.")

    out("")
    out("Commands timed (cwd %s):" % os.path.relpath(data_dir, ROOT))
    for c in cmds:
        out("  %-12s %s" % (c.key, c.shown.replace(ROOT + "/", "")))
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    with open(os.path.join(OUT, "header_parse.last.txt"), "w") as f:
        f.write("$ " + " ".join(["/usr/bin/python3 bench/header_parse.py"] + sys.argv[1:]) + "\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
