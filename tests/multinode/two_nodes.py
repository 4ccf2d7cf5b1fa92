#!/usr/bin/python3
"""Two `telerad serve` nodes on one PostgreSQL and one S3 bucket (docs/operations.md, "Several
nodes").

    two_nodes.py TELERAD PG_URL_FILE S3_ENV_FILE

PG_URL_FILE is the url file of a running tests/pg/pg.sh server (the ctest fixture "postgres"),
S3_ENV_FILE the env file of a running tests/s3/ceph.sh cluster (the fixture "s3"); the test
skips (77) when either is missing, or DCMTK / pydicom are. It makes its own database (pg.sh
newdb) and its own bucket, starts node A and node B on them (each with its own data folder,
holding only its spool and cache) with a webhook receiver of its own, and checks:

  1. the catalog (sites, contracts, readers) created through node A is listed by node B;
  2. three studies sent by storescu to node A: QIDO-RS on node B finds each, WADO-RS on node B
     returns every instance;
  3. one read per study (not two), each "created" once in its history, though both nodes
     detect stability and turn stable events into reads;
  4. every read escalated (nobody can take it) is delivered to the webhook exactly once while
     both nodes run their outbox;
  5. a claim race: the same read claimed at once through A (by one reader) and through B (by
     another), several times over: exactly one 200 per read, the other 409; released, the
     reads are routed by both nodes' routers, each assigned once;
  6. node A is SIGKILLed in the middle of a storescu transfer of many instances: every instance
     storescu saw acknowledged (its -v log) is listed by QIDO-RS and returned by WADO-RS on
     node B, and node B alone turns the study into exactly one read;
  7. node B stops cleanly, with no sanitizer report in either node's log.
"""
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "flow"))
sys.path.insert(0, os.path.join(HERE, "..", "archive"))
sys.path.insert(0, os.path.join(HERE, "..", "s3"))
import arc_common as ac  # noqa: E402
from flow_common import (Receiver, Telerad, create_catalog, gen_study, reads_of,  # noqa: E402
                         storescu, utc_now, wait_for)

SKIP = 77


def skip(why):
    print("SKIP: " + why, flush=True)
    sys.exit(SKIP)


def dicomweb(node, path, accept):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (node.http_port, path),
                                 headers={"Accept": accept})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def qido_instances(node, study):
    import json
    st, body = dicomweb(node, "/dicom-web/studies/%s/instances?limit=10000" % study,
                        "application/dicom+json")
    if st == 204 or not body:
        return {}
    if st != 200:
        return {}
    out = {}
    for item in json.loads(body):
        sop = item.get("00080018", {}).get("Value", [""])[0]
        series = item.get("0020000E", {}).get("Value", [""])[0]
        out[sop] = series
    return out


def wado_count(node, study):
    """Parts of a WADO-RS study retrieve (multipart/related; type=application/dicom)."""
    st, body = dicomweb(node, "/dicom-web/studies/%s" % study,
                        'multipart/related; type="application/dicom"')
    if st != 200:
        return -1
    return body.count(b"DICM")


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    telerad, url_file, env_file = sys.argv[1:4]
    if not os.path.exists(url_file):
        skip("no PostgreSQL: %s is missing (tests/pg/pg.sh start)" % url_file)
    if not os.path.exists(env_file):
        skip("no S3 gateway: %s is missing (tests/s3/ceph.sh start)" % env_file)
    ac.need_tools("storescu", "psql")
    try:
        import pydicom  # noqa: F401
        import numpy  # noqa: F401
    except ImportError:
        skip("pydicom or numpy missing (python3-pydicom python3-numpy)")
    import s3util
    ck = ac.Checks("multinode")
    t_start = time.time()

    p = subprocess.run(["bash", os.path.join(HERE, "..", "pg", "pg.sh"), "newdb",
                        os.path.dirname(url_file)], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    if p.returncode != 0:
        ck.check(False, "pg.sh newdb", p.stdout.decode())
        ck.finish()
    index_url = p.stdout.decode().strip().splitlines()[-1]
    env = s3util.read_env(env_file)
    bucket = "multinode-%d-%d" % (os.getpid(), int(time.time()))
    s3 = s3util.S3.from_env_file(env_file, bucket=bucket)
    s3.create_bucket(bucket)

    work = tempfile.mkdtemp(prefix="telerad-multinode-")
    creds = os.path.join(work, "credentials")
    with open(creds, "w") as f:
        f.write("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n" %
                (env["TELERAD_S3_ACCESS_KEY"], env["TELERAD_S3_SECRET_KEY"]))
    os.chmod(creds, 0o600)
    receiver = Receiver(fail_first=False)
    conf = os.path.join(work, "telerad.conf")
    with open(conf, "w") as f:
        f.write("[archive]\nstore = s3\n\n[s3]\nendpoint = %s\nregion = %s\nbucket = %s\n"
                "credentials_file = %s\naddressing = path\ncache_mb = 64\n\n"
                "[flow]\nwebhook_url = %s\n" %
                (env["TELERAD_S3_ENDPOINT"], env["TELERAD_S3_REGION"], bucket, creds,
                 receiver.url))
    a = Telerad(telerad, work, "node-a", "--config", conf, "--index", index_url,
                data=os.path.join(work, "a-data"))
    b = Telerad(telerad, work, "node-b", "--config", conf, "--index", index_url,
                data=os.path.join(work, "b-data"))
    a.start()
    b.start()
    def node_lines():
        return [line for n in (a, b) for line in n.log_text().splitlines() if "; node " in line]
    nodes_line = wait_for("the nodes' start lines", lambda: len(node_lines()) == 2 and
                          node_lines(), 10, 0.2) or node_lines()
    ck.check(len(nodes_line) == 2 and nodes_line[0].split("; node ")[1] !=
             nodes_line[1].split("; node ")[1],
             "each node logs its own node id at start (%s)" %
             ", ".join(x.split("; node ")[-1] for x in nodes_line))
    a_killed = False
    try:
        # ---- 1. the catalog, through A, seen by B
        now = utc_now()
        create_catalog(ck, a, now, gz_hours=False)
        seen = wait_for("node B's catalog", lambda: len(b.get("/api/v1/readers")) == 5 and
                        len(b.get("/api/v1/sites")) == 3 and
                        len(b.get("/api/v1/contracts")) == 3, 20, 0.3)
        ck.check(seen, "node B lists the 3 sites, 3 contracts and 5 readers created through A")
        # Nobody can take tx-general's reads: they stay in the pool (for the claim race) and
        # are escalated, each once, through the webhook outbox.
        for who in ("dr-lee", "dr-patel"):
            a.api("POST", "/api/v1/readers/%s/status" % who, {"status": "offline"})
        wait_for("node B's view of the readers", lambda: b.get("/api/v1/readers/dr-lee").get(
            "available_now") is False and b.get("/api/v1/readers/dr-patel").get(
            "available_now") is False, 15, 0.2)

        # ---- 2. storescu -> A; QIDO/WADO on B
        made = gen_study(os.path.join(work, "studies"), "CT", studies=3, images=4, seed=71,
                         description="CT HEAD WO CONTRAST")
        uids = [s["uid"] for s in made]
        rc, out = storescu(a.dicom_port, "TXGEN", [f for s in made for f in s["files"]])
        ck.check(rc == 0, "storescu sent 3 studies x 4 instances to node A", out[-1500:])
        ok = all(len(qido_instances(b, u)) == 4 for u in uids)
        ck.check(ok, "QIDO-RS on node B lists the 4 instances of each study stored through A")
        counts = [wado_count(b, u) for u in uids]
        ck.check(counts == [4, 4, 4], "WADO-RS on node B returns every instance (%s)" % counts)

        # ---- 3. one read per study
        def reads_for(u):
            return [r for r in reads_of(b) if r["study_uid"] == u]
        got = wait_for("reads of the 3 studies", lambda: all(reads_for(u) for u in uids), 40,
                       0.5)
        time.sleep(2.5)  # both nodes' stability timers and flow passes have run again
        reads = {u: reads_for(u) for u in uids}
        ck.check(got and all(len(v) == 1 for v in reads.values()),
                 "one read per study (3 reads), not one per node",
                 str({u: [r["id"] for r in v] for u, v in reads.items()}))
        ids = [v[0]["id"] for v in reads.values() if v]
        created = [sum(1 for e in a.get("/api/v1/reads/%d" % i)["history"]
                       if e["kind"] == "created") for i in ids]
        ck.check(created == [1, 1, 1], "each read is created once in its history (%s)" % created)

        # ---- 4. the webhook outbox: each escalation delivered once
        def escalations():
            return [c[2].get("read") for c in receiver.events("read.unassignable")]
        wait_for("escalations", lambda: set(ids) <= set(escalations()), 30, 0.5)
        time.sleep(3)
        esc = escalations()
        ck.check(all(esc.count(i) == 1 for i in ids) and len(esc) == len(set(esc)),
                 "each read's escalation reaches the webhook exactly once with both nodes "
                 "delivering (%d POSTs for %d reads)" % (len(esc), len(ids)), str(esc))

        # ---- 5. the claim race
        results = {i: [] for i in ids}
        rounds = 3
        ok = True
        detail = []
        for rnd in range(rounds):
            barrier = threading.Barrier(2 * len(ids))

            def claim(node, read_id, who):
                barrier.wait()
                st, _ = node.api("POST", "/api/v1/reads/%d/claim" % read_id, {"reader": who})
                results[read_id].append((st, node.name, who))

            for i in ids:
                results[i] = []
            threads = [threading.Thread(target=claim, args=(node, i, who))
                       for i in ids for node, who in ((a, "dr-lee"), (b, "dr-patel"))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for i, res in results.items():
                codes = sorted(x[0] for x in res)
                final = b.get("/api/v1/reads/%d" % i)
                winner = [x for x in res if x[0] == 200]
                good = codes == [200, 409] and final["state"] == "claimed" and \
                    final["assignee"] == winner[0][2]
                ok &= good
                if not good:
                    detail.append("round %d read %d: %s -> %s/%s" % (rnd, i, res, final["state"],
                                                                     final["assignee"]))
                (a, b)[i % 2].api("POST", "/api/v1/reads/%d/release" % i, {})
        ck.check(ok, "%d reads x %d rounds claimed at once through A (dr-lee) and B (dr-patel): "
                 "exactly one 200 and one 409 each time" % (len(ids), rounds), "; ".join(detail))

        # ---- routing by both nodes: each released read is assigned once
        b.api("POST", "/api/v1/readers/dr-lee/status", {"status": "online"})
        routed = wait_for("routing", lambda: all(
            b.get("/api/v1/reads/%d" % i)["state"] == "assigned" for i in ids), 30, 0.5)
        time.sleep(2.5)  # more passes of both routers
        twice = []
        for i in ids:
            h = a.get("/api/v1/reads/%d" % i)["history"]
            last = max(k for k, e in enumerate(h) if e["kind"] == "released")
            n = sum(1 for e in h[last:] if e["kind"] == "assigned")
            if n != 1:
                twice.append("%d: assigned %d times" % (i, n))
        ck.check(routed and not twice, "with both nodes routing, each read is assigned once",
                 "; ".join(twice))

        # ---- 6. SIGKILL node A in the middle of a transfer
        big = gen_study(os.path.join(work, "big"), "CT", studies=1, images=150, seed=72,
                        description="CT CHEST PE PROTOCOL")[0]
        cmd = ac.storescu_command(a.dicom_port, big["files"], "-aet", "TXGEN")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env=ac.dcmtk_env())
        output = []
        acked = [0]
        killed_at = [None]

        def reader_thread():
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace")
                output.append(line)
                if line.startswith("I: Received Store Response"):
                    acked[0] += 1
                    if acked[0] == 40 and killed_at[0] is None:
                        a.proc.kill()  # SIGKILL
                        killed_at[0] = acked[0]

        t = threading.Thread(target=reader_thread)
        t.start()
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        t.join(10)
        if a.proc.poll() is None:
            a.proc.kill()
        a.proc.wait()
        a_killed = True
        answered = ac.parse_storescu("".join(output))
        ok_paths = [pth for pth, status, _ in answered if status == "Success"]
        import pydicom
        sop_of = {pth: str(pydicom.dcmread(pth, stop_before_pixels=True).SOPInstanceUID)
                  for pth in big["files"]}
        acked_sops = {sop_of[pth] for pth in ok_paths}
        ck.check(killed_at[0] is not None and 0 < len(ok_paths) < len(big["files"]),
                 "node A SIGKILLed mid-transfer: %d of %d instances acknowledged" %
                 (len(ok_paths), len(big["files"])))
        listed = qido_instances(b, big["uid"])
        lost = sorted(acked_sops - set(listed))
        ck.check(not lost, "QIDO-RS on node B lists every acknowledged instance (%d acknowledged, "
                 "%d listed, %d lost)" % (len(acked_sops), len(listed), len(lost)), str(lost[:5]))
        bad = []
        for sop in sorted(acked_sops):
            series = listed.get(sop)
            if not series:
                bad.append("%s: not listed" % sop)
                continue
            st, body = dicomweb(b, "/dicom-web/studies/%s/series/%s/instances/%s" %
                                (big["uid"], series, sop),
                                'multipart/related; type="application/dicom"')
            if st != 200 or sop.encode() not in body:
                bad.append("%s: %s" % (sop, st))
        ck.check(not bad, "WADO-RS on node B returns each of the %d acknowledged instances" %
                 len(acked_sops), "; ".join(bad[:5]))
        # Node B alone now: its stability timer and workflow turn the study into one read.
        got = wait_for("the read of the interrupted study", lambda: reads_for(big["uid"]), 40,
                       0.5)
        time.sleep(2)
        ck.check(got and len(reads_for(big["uid"])) == 1,
                 "node B turns the interrupted study into exactly one read after A died")
    finally:
        for node in (a, b):
            if node is a and a_killed:
                continue
            code = node.stop()
            ck.check(code == 0, "%s stopped cleanly (exit %s)" % (node.name, code))
        for node in (a, b):
            reports = node.sanitizer_reports()
            ck.check(not reports, "%s: no sanitizer reports" % node.name, "\n".join(reports[:10]))
        receiver.close()
        base = open(url_file).read().strip()
        subprocess.run(["psql", base, "-q", "-c", "DROP DATABASE IF EXISTS %s" %
                        index_url.rsplit("/", 1)[1]], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT)
    print("run time %.1f s" % (time.time() - t_start), flush=True)
    ck.finish()


if __name__ == "__main__":
    main()
