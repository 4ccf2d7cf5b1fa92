#!/usr/bin/python3
"""Crash safety of the archive (DESIGN.md invariant 1: acknowledged means durable).

    crash.py TELERAD [--postgresql] [--s3] [--rounds N] [--seed S] [--instances N] [--keep]

Generates ~300 synthetic CT instances (128x128, 6 studies x 5 series x 10, seeded), then for
each round: starts `telerad serve --data D --dicom-port 0`, sends the instances not yet
acknowledged with DCMTK's `storescu -v` (TCP_NODELAY=1), and after a seeded random delay
(log-uniform from 20 ms to 1.5 s after storescu starts, so that kills land while a data set
is received, synced, renamed, indexed and answered) kills the server with SIGKILL. storescu's
verbose output says which files were answered "Success": only those count as acknowledged.
Every sixth round instead kills the server 5-60 ms after it was started, while it opens and
reconciles the archive. When every instance is acknowledged, a new batch of 100 is made.

After every kill, with the server down, the data folder and the index are read directly:
  - every acknowledged instance has its index row and its object, equal to the source;
  - every object under D/objects parses whole and equals its source (no half-written object
    is ever visible under its key);
  - objects without an index row and index rows without an object (the index commits while
    the object is made durable, so a kill can leave either; neither was acknowledged) are
    counted: the next start must report exactly those numbers in its "reconciled" log line
    (indexed, forgotten) and quarantine nothing.
After every start: D/tmp is empty (abandoned temporaries removed).

At the end the server is started once more and, through DICOM only:
  - C-FIND (IMAGE level) lists every acknowledged SOP Instance UID, and the instances it lists
    are exactly the files under D/objects (the index and the object store agree);
  - C-GET (getscu, per study) returns every acknowledged instance, and `telerad json` of the
    retrieved file equals `telerad json` of the source;
  - a clean stop (SIGTERM) exits 0 (for the sanitizer build: no leak, no error report).

--postgresql puts the index on a throw-away PostgreSQL (tests/pg/pg.sh); skips (77) when
PostgreSQL is not installed.

--s3 keeps the objects in S3: the test starts a one-node Ceph with its RADOS Gateway
(tests/s3/ceph.sh) and the server with `--config` naming its s3.conf ([archive] store = s3).
"The objects" are then the bucket's (listed and fetched from outside, tests/s3/s3util.py) and
the temporaries the node's spool files (D/spool); the commit is an upload that returns once the
gateway answered 200. After a kill the test waits a moment before it looks, so that an upload
whose bytes all left before the kill has landed (the gateway finishes it without the client).
Skips (77) when Ceph is not installed.
"""
import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arc_common as ac  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    telerad = ac.telerad_path()
    ap = argparse.ArgumentParser()
    ap.add_argument("telerad")
    ap.add_argument("--postgresql", action="store_true")
    ap.add_argument("--s3", action="store_true")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    ac.need_tools("storescu", "findscu", "getscu")

    name = "archive_crash" + ("_postgresql" if args.postgresql else "") + \
        ("_s3" if args.s3 else "")
    checks = ac.Checks(name)
    work = tempfile.mkdtemp(prefix="telerad-crash-")
    os.chmod(work, 0o755)  # PostgreSQL runs as user postgres and must reach its state folder
    pg_state = None
    ceph_state = None
    try:
        index_url = None
        if args.s3:
            ceph_state = ac.start_ceph(work)
        if args.postgresql:
            if not os.path.exists("/usr/lib/postgresql"):
                ac.skip("PostgreSQL is not installed (apt-get install postgresql)")
            pg_state = os.path.join(work, "pg")
            p = subprocess.run(["bash", os.path.join(HERE, "..", "pg", "pg.sh"), "start",
                                pg_state], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if p.returncode == ac.SKIP:
                ac.skip(p.stdout.decode().strip())
            if p.returncode != 0:
                raise RuntimeError("pg.sh start failed: " + p.stdout.decode())
            with open(os.path.join(pg_state, "url")) as f:
                index_url = f.read().strip()
        run_rounds(telerad, args, work, index_url, checks, ceph_state)
    finally:
        if ceph_state:
            ac.stop_ceph(ceph_state)
        if pg_state:
            subprocess.run(["bash", os.path.join(HERE, "..", "pg", "pg.sh"), "stop", pg_state])
        if args.keep or checks.failed:
            print("work folder kept: %s" % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    checks.finish()


def run_rounds(telerad, args, work, index_url, checks, ceph_state=None):
    rng = ac.seeded(args.seed)
    src_dir = os.path.join(work, "src")
    data = os.path.join(work, "data")
    instances = ac.make_instances(src_dir, rng, studies=6, series_per_study=5, per_series=10,
                                  rows=128)
    by_path = {i.path: i for i in instances}
    by_sop = {i.sop: i.path for i in instances}
    print("seed %d; %d instances in %s; index %s; objects %s" %
          (args.seed, len(instances), src_dir, "PostgreSQL" if index_url else "SQLite",
           "S3" if ceph_state else "files"), flush=True)
    # One node: rows without object are forgotten at the next start at once (no grace for
    # other nodes' uploads, which PostgreSQL would otherwise get: docs/operations.md).
    extra = ["--index", index_url, "--reconcile-grace", "0"] if index_url else []
    if ceph_state:
        extra += ["--config", os.path.join(ceph_state, "s3.conf")]
        store = ac.S3Objects(os.path.join(ceph_state, "env"), data, os.path.join(work, "fetched"))
    else:
        store = ac.FsObjects(data)
    server = ac.Server(telerad, work, data, "--stable-after", "3600", *extra)

    acked = set()          # SOP Instance UIDs answered "Success"
    verified = set()       # object keys already checked whole (objects never change)
    left = (0, 0)          # (objects without row, rows without object) after the last kill
    stats = dict(kills=0, startup_kills=0, finished_before_kill=0, orphans=0, rows_without=0,
                 temporaries=0, reconciled=0, forgotten=0, not_answered=0, batches=1)
    problems = []

    for rnd in range(1, args.rounds + 1):
        pending = [i for i in instances if i.sop not in acked]
        if not pending:
            batch = ac.make_instances(src_dir, rng, studies=2, series_per_study=5, per_series=10,
                                      rows=128, first_patient=4 + stats["batches"])
            stats["batches"] += 1
            instances += batch
            for i in batch:
                by_path[i.path] = i
                by_sop[i.sop] = i.path
            pending = batch
        startup_kill = rnd % 6 == 0
        if startup_kill:
            delay = rng.uniform(0.005, 0.060)
        else:
            delay = math.exp(rng.uniform(math.log(0.020), math.log(1.5)))

        if startup_kill:
            # Kill while the server opens the index and reconciles it with the objects.
            server.spawn()
            time.sleep(delay)
            server.kill()
            stats["kills"] += 1
            stats["startup_kills"] += 1
            answered = []
            what = "killed %.0f ms after start" % (delay * 1000)
        else:
            server.start()
            tmp_left = store.temporaries()
            if tmp_left:
                problems.append("round %d: %d temporaries left after start" %
                                (rnd, len(tmp_left)))
            check_reconcile_log(server, left, rnd, problems, stats)
            scu = subprocess.Popen(ac.storescu_command(server.port, [i.path for i in pending]),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   env=ac.dcmtk_env())
            t0 = time.time()
            while time.time() - t0 < delay and scu.poll() is None:
                time.sleep(0.002)
            if scu.poll() is not None:
                stats["finished_before_kill"] += 1
            server.kill()
            stats["kills"] += 1
            try:
                out, _ = scu.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                scu.kill()
                out, _ = scu.communicate()
            answered = ac.parse_storescu(out.decode("utf-8", "replace"))
            what = "killed %.0f ms into storescu" % (delay * 1000)
        ok = 0
        for path, status, _ in answered:
            if status == "Success":
                acked.add(by_path[path].sop)
                ok += 1
            else:
                stats["not_answered"] += 1
                problems.append("round %d: %s answered %s" % (rnd, path, status))

        # The crash's aftermath, read with the server down.
        if ceph_state:
            time.sleep(0.3)  # an upload whose bytes all left lands without its client
        rows = ac.index_rows(index_url, data)
        objects = store.keys()
        keys = set(rows.values())
        for sop in acked:
            if sop not in rows:
                problems.append("round %d: acknowledged %s has no index row" % (rnd, sop))
            elif rows[sop] not in objects:
                problems.append("round %d: acknowledged %s has no object (%s)" %
                                (rnd, sop, rows[sop]))
        # Rows without object: the index commits while the object is made durable (ingest.c),
        # so a kill in between leaves a row of an instance never acknowledged, which the next
        # start must forget.
        rows_without = [sop for sop, key in rows.items() if key not in objects]
        for sop in rows_without:
            if sop in acked:
                problems.append("round %d: acknowledged %s: its row points to a missing object" %
                                (rnd, sop))
        for key in objects:
            if key in verified:
                continue
            why = ac.object_problem(store.path(key), by_sop)
            if why:
                problems.append("round %d: object %s: %s" % (rnd, key, why))
            verified.add(key)
        orphans = [k for k in objects if k not in keys]
        temporaries = store.temporaries()
        left = (len(orphans), len(rows_without))
        stats["orphans"] += len(orphans)
        stats["rows_without"] += len(rows_without)
        stats["temporaries"] += len(temporaries)
        print("round %2d: %-30s %3d acknowledged (%4d in all), %d objects without row, %d rows "
              "without object, %d temporaries" % (rnd, what, ok, len(acked), len(orphans),
                                                  len(rows_without), len(temporaries)),
              flush=True)

    # The last start: everything through DICOM.
    server.start()
    check_reconcile_log(server, left, "final", problems, stats)
    checks.check(not store.temporaries(), "no temporaries after the start")
    for p in problems:
        print("  " + p)
    checks.check(not problems, "%d rounds: every acknowledged instance had its row and object "
                 "after each kill, every visible object was whole, each start reconciled exactly "
                 "what the kill left" % args.rounds, "%d problems" % len(problems))

    rc, found, out = ac.find_values(server.port, "IMAGE", "SOPInstanceUID")
    found_set = set(found)
    checks.check(rc == 0, "C-FIND IMAGE level answered", out[-500:])
    missing = sorted(acked - found_set)
    checks.check(not missing, "C-FIND lists all %d acknowledged instances" % len(acked),
                 "missing %s" % missing[:5])
    objects = store.keys()
    object_sops = {os.path.basename(k)[:-4] for k in objects}
    checks.check(len(found) == len(objects) and found_set == object_sops,
                 "index and object store agree: %d instances indexed, %d objects" %
                 (len(found), len(objects)),
                 "only indexed %s, only stored %s" % (sorted(found_set - object_sops)[:3],
                                                     sorted(object_sops - found_set)[:3]))
    quarantine = ac.files_under(os.path.join(data, "quarantine"))
    checks.check(not quarantine, "nothing quarantined (no unreadable object was ever visible)",
                 str(quarantine[:3]))

    got = os.path.join(work, "got")
    studies = sorted({by_sop_instance.study for by_sop_instance in instances
                      if by_sop_instance.sop in acked})
    get_ok = True
    for study in studies:
        rc, out = ac.get_study(server.port, study, got)
        get_ok &= rc == 0
        if rc:
            print(out[-800:])
    checks.check(get_ok, "C-GET of %d studies" % len(studies))
    retrieved = {}
    for p in ac.files_under(got):
        sop = os.path.basename(p).split(".", 1)[1] if "." in os.path.basename(p) else ""
        retrieved[sop] = p
    not_retrieved = sorted(acked - set(retrieved))
    checks.check(not not_retrieved, "every acknowledged instance retrieved by C-GET",
                 "missing %s" % not_retrieved[:5])
    pairs = [(by_sop[s], retrieved[s]) for s in sorted(acked) if s in retrieved]
    diffs = [(a, b, d) for a, b, d in ac.same_json(telerad, pairs) if d]
    for a, b, d in diffs[:5]:
        print("  %s vs %s: %s" % (a, b, d))
    checks.check(not diffs, "telerad json of every retrieved instance equals its source's (%d)" %
                 len(pairs), "%d differ" % len(diffs))

    status = server.stop()
    log = server.log_text()
    checks.check(status == 0 and not ac.asan_report(log), "clean stop (exit %s)" % status,
                 log[-1500:])
    print("summary: %d rounds, %d kills (%d during start-up, %d after storescu had finished), "
          "%d instances in %d batches, %d acknowledged; after the kills %d objects without row "
          "and %d rows without object (none acknowledged), of which the next start reported "
          "%d indexed, %d forgotten and %d put back whole from their temporaries; %d "
          "temporaries abandoned" %
          (args.rounds, stats["kills"], stats["startup_kills"], stats["finished_before_kill"],
           len(instances), stats["batches"], len(acked), stats["orphans"],
           stats["rows_without"], stats["reconciled"], stats["forgotten"],
           stats.get("restored", 0), stats["temporaries"]), flush=True)


def check_reconcile_log(server, left, rnd, problems, stats):
    """The start that just happened must have indexed exactly the objects without row and
    forgotten exactly the rows without object seen before it, and quarantined nothing."""
    orphans, rows_without = left
    log = server.log_text()
    report = ac.reconcile_report(log)
    # A row whose object has no name yet but whose temporary holds it whole (the crash came
    # between the commit and the batched directory fsync, src/services/archive/objstore.c) is
    # put back under its name before reconciliation, not forgotten.
    restored = ac.restored_report(log)
    stats["restored"] = stats.get("restored", 0) + restored
    rows_without -= restored
    if orphans == 0 and rows_without == 0:
        if report:
            problems.append("round %s: reconciliation reported %s with nothing to reconcile" %
                            (rnd, report))
        return
    if report is None:
        problems.append("round %s: %d objects without row, %d rows without object, but the log "
                        "does not mention reconciliation" % (rnd, orphans, rows_without))
    elif report != (orphans, rows_without, 0):
        problems.append("round %s: expected reconciliation (%d indexed, %d forgotten, 0 "
                        "quarantined), the log says %s" % (rnd, orphans, rows_without, report))
    else:
        stats["reconciled"] += report[0]
        stats["forgotten"] += report[1]


if __name__ == "__main__":
    main()
