#!/usr/bin/python3
"""The web application against a real telerad, in headless Chromium (driver of app.mjs).

  app_test.py TELERAD --ohif DIR --artifacts DIR

Assembles the web application (scripts/web.sh, into a temporary folder), starts
`telerad serve --demo --stable-after 1` on free 127.0.0.1 ports in a temporary data folder
with TELERAD_ADMIN_PASSWORD, waits until the demo's nine reads exist, then runs app.mjs
(playwright-core driving Debian's Chromium): an administrator, a reader and a site user work
through the application. Screenshots are left in the artifacts folder. Exits 0 on success,
1 on failure, 77 (SKIP) when Chromium, node or the npm packages (npm ci) are missing. Without
the OHIF viewer (scripts/ohif.sh DIR) everything runs but the viewer's image check.
"""
import argparse
import http.cookiejar
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

SKIP = 77
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def skip(message):
    print("SKIP: " + message, flush=True)
    sys.exit(SKIP)


def start_server(cmd, env, log_path):
    """Starts telerad; returns (process, {"dicom-port": N, "http-port": N}) or (process, None)."""
    log = open(log_path, "wb")
    server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, env=env)
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
    return server, (ports if len(ports) == 2 else None)


def wait_for_reads(base, password, count, timeout=60):
    """Signs in as admin and waits until `count` reads exist; returns how many there are."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    body = json.dumps({"username": "admin", "password": password}).encode()
    opener.open(urllib.request.Request(base + "/api/v1/auth/login", data=body,
                                       headers={"Content-Type": "application/json"}), timeout=10)
    deadline = time.time() + timeout
    n = 0
    while time.time() < deadline:
        with opener.open(base + "/api/v1/reads?limit=1000", timeout=10) as res:
            reads = json.load(res)
        n = len(reads)
        if n >= count:
            return n
        time.sleep(0.5)
    return n


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
    for package in ("playwright-core", "chart.js"):
        if not os.path.isdir(os.path.join(ROOT, "node_modules", package)):
            skip("%s is not installed: run `npm ci` in %s (scripts/install-deps.sh --test does)"
                 % (package, ROOT))
    have_viewer = os.path.isfile(os.path.join(args.ohif, "index.html"))
    telerad = os.path.abspath(args.telerad)

    work = tempfile.mkdtemp(prefix="telerad-app-")
    server = None
    try:
        web = os.path.join(work, "web")
        subprocess.run([os.path.join(ROOT, "scripts", "web.sh"), web], check=True,
                       env=dict(os.environ, TELERAD_WEB_NO_NPM="1"))
        password = "app-test-" + os.urandom(8).hex()
        cmd = [telerad, "serve", "--demo", "--stable-after", "1", "--data",
               os.path.join(work, "data"), "--dicom-port", "0", "--http-port", "0",
               "--web-dir", web]
        if have_viewer:
            cmd += ["--viewer-dir", os.path.abspath(args.ohif)]
        log_path = os.path.join(work, "server.log")
        server, ports = start_server(cmd, dict(os.environ, TELERAD_ADMIN_PASSWORD=password),
                                     log_path)
        if not ports:
            print("FAIL  telerad serve did not start: %s" % " ".join(cmd))
            print(open(log_path, errors="replace").read()[-3000:])
            return 1
        base = "http://127.0.0.1:%d" % ports["http-port"]
        print("telerad: %s (web application from %s%s)"
              % (base, web, ", viewer from " + args.ohif if have_viewer else ", no viewer"),
              flush=True)
        n = wait_for_reads(base, password, 9)
        if n < 9:
            print("FAIL  the demo made %d reads, not 9" % n)
            print(open(log_path, errors="replace").read()[-3000:])
            return 1
        print("ok    the demo's %d reads are routed" % n, flush=True)

        os.makedirs(args.artifacts, exist_ok=True)
        browser = subprocess.run(
            [node, os.path.join(HERE, "app.mjs"), base, os.path.abspath(args.artifacts)]
            + ([] if have_viewer else ["--no-viewer"]),
            cwd=ROOT, timeout=500,
            env=dict(os.environ, CHROMIUM=chromium, TELERAD_ADMIN_PASSWORD=password))
        print("screenshots: %s" % os.path.abspath(args.artifacts), flush=True)
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = "no exit within 30 s"
        if code != 0:
            print("FAIL  telerad serve stopped with %s after SIGTERM" % code, flush=True)
            browser.returncode = browser.returncode or 1
        if browser.returncode not in (0, SKIP):
            print("---- telerad's log (end) ----")
            print(open(log_path, errors="replace").read()[-4000:])
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
