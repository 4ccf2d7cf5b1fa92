#!/usr/bin/python3
"""Full disk and I/O errors in the archive (DESIGN.md invariants 1 and 6): a C-STORE that cannot
be stored is answered 0xA700 (Refused: Out of Resources), nothing is left half-stored, and the
server keeps serving.

    full_disk.py TELERAD [--keep]

Runs itself again inside a private mount namespace (`unshare -m`, as root; exit 77 when that is
not possible) and mounts small tmpfs file systems there, which vanish with the namespace:

A. Objects fill the disk: 24 MB tmpfs as the data folder, `serve --min-free-mb 0`, storescu
   (--no-halt, -d for the DIMSE status in hex) sends 240 CT images of 128 KB (31 MB). Checks:
   some stores succeed, every other one is answered 0xA700; tmp/ is empty; every object under
   objects/ parses whole and equals its source; the instances C-FIND lists are exactly the
   acknowledged ones and exactly the objects on disk; C-ECHO and C-FIND still work.
B. `telerad delete --data <tmpfs>` (a second process on the same SQLite index) of a study frees
   space; storing a refused instance again then succeeds, C-FIND lists it and C-GET returns it
   equal (`telerad json`) to its source. A clean stop exits 0.
C. The index fills while the objects have room: data on a 64 MB tmpfs, index
   (`--index sqlite:...`) alone on a 2 MB tmpfs. Stores are refused with 0xA700 once SQLite
   cannot grow its log, and the object of a store that could not be indexed is removed again:
   objects on disk = instances indexed = instances acknowledged; C-ECHO and C-FIND still work.
D. The default floor: a 64 MB tmpfs and no --min-free-mb (default 256 MB): the first C-STORE
   is refused with 0xA700 before anything is written, and the log says why.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arc_common as ac  # noqa: E402

NS_MARK = "TELERAD_ARCHIVE_TEST_MOUNT_NS"
A700 = 0xA700


def reexec_in_namespace():
    if not shutil.which("unshare"):
        ac.skip("unshare is not installed (util-linux)")
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if probe.returncode != 0:
        ac.skip("cannot make a private mount namespace (unshare -m needs root or user "
                "namespaces): %s" % probe.stdout.decode().strip())
    env = dict(os.environ)
    env[NS_MARK] = "1"
    p = subprocess.run(["unshare", "-m", "--propagation", "private", sys.executable,
                        os.path.abspath(__file__)] + sys.argv[1:], env=env)
    sys.exit(p.returncode)


def mount_tmpfs(path, size_mb):
    os.makedirs(path, exist_ok=True)
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % size_mb, "tmpfs",
                        path], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        ac.skip("cannot mount a tmpfs: %s" % p.stdout.decode().strip())


def store(port, paths, timeout=300):
    """storescu -d --no-halt; returns ({path: status code}, output)."""
    rc, out = ac.run(ac.storescu_command(port, paths, "-d", "--no-halt"), timeout=timeout)
    answers = {}
    for path, text, code in ac.parse_storescu(out):
        answers[path] = code
    return answers, out


def free_mb(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize / 1048576.0


def consistent(checks, what, port, data, acked, by_sop):
    """tmp/ empty, every object whole and equal to its source, objects = indexed = acked."""
    tmp = ac.temporaries_under(os.path.join(data, "tmp"))
    checks.check(not tmp, "%s: nothing left in tmp/" % what, str(tmp[:3]))
    objects = ac.object_files(data)
    bad = [(k, why) for k, why in ((k, ac.object_problem(p, by_sop)) for k, p in objects.items())
           if why]
    checks.check(not bad, "%s: every object under objects/ (%d) parses whole and equals its "
                 "source" % (what, len(objects)), str(bad[:3]))
    rc, found, out = ac.find_values(port, "IMAGE", "SOPInstanceUID")
    object_sops = {os.path.basename(k)[:-4] for k in objects}
    checks.check(rc == 0 and set(found) == object_sops == set(acked) and
                 len(found) == len(objects),
                 "%s: C-FIND lists exactly the %d acknowledged instances, which are exactly the "
                 "objects on disk" % (what, len(acked)),
                 "findscu exit %d; %d found, %d objects, %d acknowledged" %
                 (rc, len(found), len(objects), len(acked)))
    rc, out = ac.echo(port)
    checks.check(rc == 0, "%s: C-ECHO still answered" % what, out[-300:])


def stop(checks, server, what):
    status = server.stop()
    log = server.log_text()
    checks.check(status == 0 and not ac.asan_report(log),
                 "%s: the server ran on and stopped cleanly (exit %s)" % (what, status),
                 log[-1500:])


def main():
    telerad = ac.telerad_path()
    ap = argparse.ArgumentParser()
    ap.add_argument("telerad")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    ac.need_tools("storescu", "findscu", "getscu", "echoscu")
    if os.environ.get(NS_MARK) != "1":
        reexec_in_namespace()

    checks = ac.Checks("archive_full_disk")
    work = tempfile.mkdtemp(prefix="telerad-full-disk-")
    try:
        run(telerad, work, checks)
    finally:
        # The tmpfs mounts go with the namespace; unmount anyway before removing the folder.
        for d in ("disk-a", "disk-c-data", "disk-c-index", "disk-d"):
            subprocess.run(["umount", os.path.join(work, d)], stderr=subprocess.DEVNULL)
        if args.keep or checks.failed:
            print("work folder: %s (the tmpfs contents are gone with the namespace)" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    checks.finish()


def run(telerad, work, checks):
    rng = ac.seeded(7)
    src = os.path.join(work, "src")
    instances = ac.make_instances(src, rng, studies=4, series_per_study=3, per_series=20,
                                  rows=256)
    by_path = {i.path: i for i in instances}
    by_sop = {i.sop: i.path for i in instances}
    paths = [i.path for i in instances]
    total = sum(os.path.getsize(p) for p in paths)
    print("%d instances, %.1f MB in all" % (len(paths), total / 1048576.0), flush=True)

    # ---- A: the objects fill the disk --------------------------------------------------------
    disk = os.path.join(work, "disk-a")
    mount_tmpfs(disk, 24)
    data = os.path.join(disk, "data")
    server = ac.Server(telerad, work, data, "--min-free-mb", "0")
    server.start()
    answers, out = store(server.port, paths)
    acked = {by_path[p].sop for p, code in answers.items() if code == 0}
    refused = [p for p, code in answers.items() if code != 0]
    other = sorted({code for code in answers.values() if code not in (0, A700)},
                   key=lambda c: -1 if c is None else c)
    print("A: %d stored, %d refused, %d without an answer; %.1f MB free" %
          (len(acked), len(refused), len(paths) - len(answers), free_mb(disk)), flush=True)
    checks.check(len(answers) == len(paths), "A: storescu got an answer for every file",
                 out[-800:])
    checks.check(acked and refused, "A: the disk filled: some stores succeeded, some were refused")
    checks.check(not other, "A: every refused store was answered 0xA700",
                 "other statuses: %s" % ["%s" % (c if c is None else "0x%04X" % c)
                                         for c in other])
    checks.check(server.alive(), "A: the server is still running")
    consistent(checks, "A", server.port, data, acked, by_sop)
    rc, found, _ = ac.find_values(server.port, "STUDY", "StudyInstanceUID")
    checks.check(rc == 0 and found, "A: study-level C-FIND still answered (%d studies)" %
                 len(found))
    again, _ = store(server.port, refused[:1])
    checks.check(list(again.values()) == [A700], "A: a refused instance sent again while the "
                 "disk is full is refused again with 0xA700", str(again))

    # ---- B: a deletion frees space, stores succeed again ------------------------------------
    victim = sorted({by_path[p].study for p in paths if by_path[p].sop in acked})[0]
    p = subprocess.run([telerad, "delete", "--data", data, victim], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=120)
    checks.check(p.returncode == 0, "B: telerad delete of study %s while the server runs" % victim,
                 p.stdout.decode()[-500:])
    acked -= {i.sop for i in instances if i.study == victim}
    print("B: %.1f MB free after the deletion" % free_mb(disk), flush=True)
    retry = [p for p in refused if by_path[p].study != victim][:3]
    answers, out = store(server.port, retry)
    checks.check(len(retry) == 3 and all(answers.get(p) == 0 for p in retry),
                 "B: 3 refused instances sent again are stored now",
                 str({os.path.basename(k): v for k, v in answers.items()}))
    acked |= {by_path[p].sop for p in retry if answers.get(p) == 0}
    consistent(checks, "B", server.port, data, acked, by_sop)
    got = os.path.join(work, "got-b")
    rc, out = ac.get_study(server.port, by_path[retry[0]].study, got)
    retrieved = {os.path.basename(f).split(".", 1)[1]: f for f in ac.files_under(got)}
    pairs = [(p, retrieved.get(by_path[p].sop, "/nonexistent")) for p in retry]
    diffs = [d for _, _, d in ac.same_json(telerad, pairs) if d]
    checks.check(rc == 0 and not diffs, "B: C-GET returns the stored instances equal to their "
                 "sources (telerad json)", "getscu exit %d; %s" % (rc, diffs[:2]))
    stop(checks, server, "A+B")

    # ---- C: the index cannot grow ------------------------------------------------------------
    cdata = os.path.join(work, "disk-c-data")
    cindex = os.path.join(work, "disk-c-index")
    mount_tmpfs(cdata, 64)
    mount_tmpfs(cindex, 2)
    data = os.path.join(cdata, "data")
    server = ac.Server(telerad, work, data, "--min-free-mb", "0", "--index",
                       "sqlite:" + os.path.join(cindex, "index.sqlite"))
    server.start()
    answers, out = store(server.port, paths)
    acked = {by_path[p].sop for p, code in answers.items() if code == 0}
    refused = [p for p, code in answers.items() if code != 0]
    other = sorted({code for code in answers.values() if code not in (0, A700)},
                   key=lambda c: -1 if c is None else c)
    print("C: %d stored, %d refused; index file system %.2f MB free, data %.1f MB free" %
          (len(acked), len(refused), free_mb(cindex), free_mb(cdata)), flush=True)
    checks.check(len(answers) == len(paths), "C: storescu got an answer for every file",
                 out[-800:])
    checks.check(acked and refused, "C: the index filled: some stores succeeded, some were "
                 "refused")
    checks.check(not other, "C: every refused store was answered 0xA700",
                 "other statuses: %s" % other)
    checks.check(server.alive(), "C: the server is still running")
    consistent(checks, "C", server.port, data, acked, by_sop)
    stop(checks, server, "C")

    # ---- D: the default free-space floor -----------------------------------------------------
    ddisk = os.path.join(work, "disk-d")
    mount_tmpfs(ddisk, 64)
    data = os.path.join(ddisk, "data")
    server = ac.Server(telerad, work, data)
    server.start()
    answers, out = store(server.port, paths[:2])
    checks.check(list(answers.values()) == [A700, A700],
                 "D: with the default --min-free-mb (256) a 64 MB file system refuses C-STOREs "
                 "with 0xA700", str(answers))
    checks.check(not ac.files_under(os.path.join(data, "objects")) and
                 not ac.temporaries_under(os.path.join(data, "tmp")),
                 "D: nothing was written to objects/ or tmp/")
    log = server.log_text()
    checks.check("MB free" in log, "D: the log says why (\"only N MB free\")", log[-600:])
    rc, out = ac.echo(server.port)
    checks.check(rc == 0, "D: C-ECHO still answered", out[-300:])
    stop(checks, server, "D")


if __name__ == "__main__":
    main()
