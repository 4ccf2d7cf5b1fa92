#!/usr/bin/python3
"""The OHIF viewer against a real telerad, in headless Chromium (driver of viewer.mjs).

  viewer_test.py TELERAD --ohif DIR --artifacts DIR

Starts `telerad serve --viewer-dir DIR` on free 127.0.0.1 ports in a temporary data folder,
stores a synthetic 30-slice CT (gen_study.py) with DCMTK's storescu, then runs viewer.mjs
(playwright-core driving Debian's Chromium): the study list shows the study, the study opens
and paints a non-blank image, no 5xx and no failed DICOMweb request. Screenshots are left in
the artifacts folder. Exits 0 on success, 1 on failure, 77 (SKIP) when Chromium, node,
playwright-core (npm ci), the OHIF dist (scripts/ohif.sh), storescu or pydicom is missing.
"""
import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
GEN_STUDY = os.path.join(ROOT, "..", "shared", "tools", "gen_study.py")
DESCRIPTION = "TELERAD BROWSER CHECK"


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def find_gen_study():
    for path in (os.environ.get("TELERAD_GEN_STUDY", ""), GEN_STUDY,
                 "/work/shared/tools/gen_study.py"):
        if path and os.path.isfile(path):
            return os.path.abspath(path)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("telerad")
    ap.add_argument("--ohif", required=True, help="the installed viewer (scripts/ohif.sh DIR)")
    ap.add_argument("--artifacts", required=True, help="where screenshots go")
    args = ap.parse_args()

    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        skip("no Chromium at %s (Debian: apt-get install chromium)" % chromium)
    node = shutil.which("node")
    if not node:
        skip("node is not installed")
    if not os.path.isdir(os.path.join(ROOT, "node_modules", "playwright-core")):
        skip("playwright-core is not installed: run `npm ci` in %s "
             "(scripts/install-deps.sh --test does)" % ROOT)
    if not os.path.isfile(os.path.join(args.ohif, "index.html")):
        skip("no OHIF viewer in %s: run scripts/ohif.sh %s" % (args.ohif, args.ohif))
    if not shutil.which("storescu"):
        skip("storescu is not installed (Debian: dcmtk)")
    gen = find_gen_study()
    if not gen:
        skip("gen_study.py not found (shared/tools beside the repository)")
    try:
        import numpy  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        skip("gen_study.py needs python3-pydicom and python3-numpy")
    telerad = os.path.abspath(args.telerad)

    work = tempfile.mkdtemp(prefix="telerad-browser-")
    server = None
    try:
        # The study: 30 CT slices of 256x256.
        out = subprocess.run(
            ["/usr/bin/python3", gen, os.path.join(work, "study"), "--modality", "CT",
             "--images", "30", "--rows", "256", "--cols", "256", "--description", DESCRIPTION],
            check=True, capture_output=True, text=True).stdout.split()
        study_uid, accession = out[0], out[1]

        log = open(os.path.join(work, "server.log"), "wb")
        cmd = [telerad, "serve", "--data", os.path.join(work, "data"), "--dicom-port", "0",
               "--http-port", "0", "--viewer-dir", os.path.abspath(args.ohif)]
        # The first start creates `admin` with this password; the browser signs in with it.
        password = "browser-" + os.urandom(8).hex()
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log,
                                  env=dict(os.environ, TELERAD_ADMIN_PASSWORD=password))
        ports = {}
        deadline = time.time() + 60
        buf = b""
        while len(ports) < 2 and time.time() < deadline and server.poll() is None:
            ready, _, _ = select.select([server.stdout], [], [], 0.5)
            if ready:
                chunk = os.read(server.stdout.fileno(), 4096)
                if not chunk:
                    break
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    parts = line.split()
                    if len(parts) == 2 and parts[0] in ("dicom-port", "http-port"):
                        ports[parts[0]] = int(parts[1])
        if len(ports) < 2:
            print("FAIL  telerad serve did not start: %s" % " ".join(cmd))
            print(open(os.path.join(work, "server.log"), errors="replace").read()[-3000:])
            return 1
        base = "http://127.0.0.1:%d" % ports["http-port"]
        print("telerad: DICOM %d, %s (viewer from %s)" % (ports["dicom-port"], base, args.ohif),
              flush=True)

        env = dict(os.environ, TCP_NODELAY="1")  # Debian's DCMTK crawls with Nagle on
        t0 = time.time()
        store = subprocess.run(["storescu", "-aec", "TELERAD", "+sd", "+r", "127.0.0.1",
                                str(ports["dicom-port"]), os.path.join(work, "study")],
                               env=env, capture_output=True, text=True, timeout=120)
        if store.returncode != 0:
            print("FAIL  storescu: %s" % (store.stderr or store.stdout)[-2000:])
            return 1
        print("ok    stored the study with storescu (%.1f s): %s accession %s"
              % (time.time() - t0, study_uid, accession), flush=True)

        os.makedirs(args.artifacts, exist_ok=True)
        browser = subprocess.run(
            [node, os.path.join(HERE, "viewer.mjs"), base, study_uid, DESCRIPTION,
             os.path.abspath(args.artifacts)],
            cwd=ROOT, timeout=400,
            env=dict(os.environ, CHROMIUM=chromium, TELERAD_USER="admin",
                     TELERAD_PASSWORD=password))
        print("screenshots: %s" % os.path.abspath(args.artifacts), flush=True)
        # A clean stop (under the sanitizers: no leak, no error at exit).
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = "no exit within 30 s"
        if code != 0:
            print("FAIL  telerad serve stopped with %s after SIGTERM" % code, flush=True)
            browser.returncode = browser.returncode or 1
        if browser.returncode not in (0, SKIP):
            log.flush()
            print("---- telerad's log (end) ----")
            print(open(os.path.join(work, "server.log"), errors="replace").read()[-4000:])
        return browser.returncode
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
