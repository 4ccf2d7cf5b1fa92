#!/usr/bin/python3
"""The teleradiology workflow (issue 6) with real DICOM traffic against `telerad serve`.

    scenario.py TELERAD [--part scenario|random|clocks|postgresql|demo|all] [--pg-url-file FILE]
                        [--reads N] [--seed S] [--keep]

Parts (each a ctest test of its own, tests/flow/CMakeLists.txt):

scenario    three sites in three jurisdictions (US-TX, GB-ENG, CN-GD) with their AE titles,
            contracts (SLAs, a subspecialty rule, covered hours), five readers with differing
            licenses (one expired), privileges (one expired), subspecialties and shifts (one
            offline inside a shift, one offline outside); studies from
            /work/shared/tools/gen_study.py sent by DCMTK's storescu from each site's AE title.
            Reads appear with the right priority, priority source and due time; only eligible
            readers get them; GET /reads/{id}/routing names the true reason for every reader
            (checked against an independent model of the rules in flow_common.py); patient affinity;
            a reader at the cap and the escalation webhook; concurrent claims (exactly one
            200, the others 409); claims and reassignment refused for ineligible readers;
            release; AI findings raising priority and due time; the worklist; /metrics.
random      >= 1,000 reads from small studies stored by several AE titles in parallel while
            readers change at random through the API (status, licenses, privileges,
            subspecialties, caps) and reads are claimed, released and reassigned at random.
            Afterwards every assignment in every read's history (router, claim, reassignment)
            is re-checked against the reader's document as it was at that moment: an
            ineligible assignment must never happen (DESIGN.md invariant 4).
clocks      [flow] claim_timeout = 60 and sla_alert_lead = 30 in a configuration file, a
            contract with 1-minute STAT: a claim lapses after 60 s without activity (one kept
            alive does not), the SLA warning and breach reach a webhook receiver exactly once
            each although it answers 500 to the first attempt of every event.
postgresql  two `telerad serve` processes sharing one PostgreSQL (tests/pg/pg.sh, the ctest
            fixture `postgres`): reads are created once, claims raced across both processes
            give exactly one winner, no read is ever held by two readers.
demo        `telerad serve --demo` produces reads that route to eligible readers.

Every server runs with --no-auth (loopback): requests act as an administrator, naming the
reader they act for; the roles are tests/security's subject. Randomness: --seed (default the
time, printed; TELERAD_FLOW_SEED) makes the random part repeatable as far as timing allows.
Prints one line per check; exits 0 when all held, 1 when one failed, 77 (skip) when DCMTK,
pydicom or numpy (for gen_study.py) is missing, or PostgreSQL for the postgresql part.
"""
import argparse
import datetime
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from zoneinfo import ZoneInfo

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "interop_scp"))
from scp_common import Checks, need_programs, skip  # noqa: E402

sys.path.insert(0, HERE)
from flow_common import (  # noqa: E402
    GEN_STUDY, Receiver, Telerad, catalog_of, check_webhook_delivery, create_catalog, date_in,
    description_of, expected_priority, gen_study, iso_to_s, open_counts, reads_of, readers,
    sites, storescu, utc_now, verdict, wait_for, weekly_shift, words_match)


# ---- part: scenario ---------------------------------------------------------------------------

def part_scenario(ck, telerad, work):
    receiver = Receiver(fail_first=True)
    srv = Telerad(telerad, work, "scenario", "--webhook", receiver.url).start()
    try:
        scenario_checks(ck, srv, receiver, work)
    finally:
        code = srv.stop()
        receiver.close()
        ck.check(code == 0, "scenario: server stopped cleanly (exit %s)" % code)
        reports = srv.sanitizer_reports()
        ck.check(not reports, "scenario: no sanitizer reports in the server log",
                 "\n".join(reports[:10]))


def scenario_checks(ck, srv, receiver, work):
    now = utc_now()
    # ---- validation: 4xx problem+json naming the field
    bad_site = dict(sites()[0], id="bad", ae_titles=["BADAE"], jurisdiction="Texas")
    st, body = srv.api("POST", "/api/v1/sites", bad_site)
    ck.check(st == 422 and body.get("field") == "jurisdiction",
             "POST /sites with jurisdiction \"Texas\": 422 naming field jurisdiction",
             "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/sites", dict(bad_site, jurisdiction="US-TX",
                                                      timezone="America/Houston"))
    ck.check(st == 422 and body.get("field") == "timezone",
             "POST /sites with an unknown IANA zone: 422 naming field timezone", "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/sites", "{\"id\": ")
    ck.check(st == 400, "POST /sites with malformed JSON: 400", "%s %s" % (st, body))
    if not create_catalog(ck, srv, now):
        return
    st, body = srv.api("POST", "/api/v1/sites", sites()[0])
    ck.check(st == 409 and body.get("field") == "id", "POST of an existing site id: 409 (field id)",
             "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/sites", dict(sites()[1], id="other", ae_titles=["TXGEN"]))
    ck.check(st == 409 and body.get("field") == "ae_titles[0]",
             "an AE title of another site: 409 naming ae_titles[0]", "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/readers",
                       dict(readers(now)[0], id="dr-x",
                            privileges=[{"site": "nowhere", "expires": "2030-01-01"}]))
    ck.check(st == 422 and body.get("field") == "privileges[0].site",
             "a reader privileged at an unknown site: 422 naming privileges[0].site",
             "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/readers",
                       dict(readers(now)[0], id="dr-x",
                            licenses=[{"jurisdiction": "US-TX", "expires": "2027-02-30"}]))
    ck.check(st == 422 and body.get("field") == "licenses[0].expires",
             "a license expiring on 30 February: 422 naming licenses[0].expires",
             "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/contracts",
                       {"site": "nowhere", "sla_minutes": {"STAT": 1, "URGENT": 2, "ROUTINE": 3}})
    ck.check(st == 422 and body.get("field") == "site", "a contract for an unknown site: 422 (site)",
             "%s %s" % (st, body))
    st, body = srv.api("PUT", "/api/v1/contracts/tx-general",
                       {"site": "tx-general",
                        "sla_minutes": {"STAT": 90, "URGENT": 60, "ROUTINE": 1440}})
    ck.check(st == 422 and body.get("field") == "sla_minutes",
             "SLA STAT 90 > URGENT 60: 422 naming sla_minutes", "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/contracts",
                       {"site": "tx-general",
                        "sla_minutes": {"STAT": 30, "URGENT": 60, "ROUTINE": 1440}})
    ck.check(st == 409, "a second contract for a site: 409", "%s %s" % (st, body))
    st, rule = srv.api("POST", "/api/v1/priority-rules",
                       {"priority": "URGENT", "description_contains": ["WRIST"]})
    ck.check(st == 201 and isinstance(rule.get("id"), int),
             "POST /priority-rules (URGENT for WRIST): 201 with an id", "%s %s" % (st, rule))
    st, body = srv.api("POST", "/api/v1/priority-rules", {"priority": "SOON"})
    ck.check(st == 422 and body.get("field") == "priority", "a rule with priority SOON: 422 (priority)",
             "%s %s" % (st, body))
    site_docs, reader_docs, contract_docs, rules = catalog_of(srv)
    ck.check(reader_docs["dr-chen"].get("available_now") is None,
             "GET /readers lists the documents as stored")
    st, chen = srv.api("GET", "/api/v1/readers/dr-chen")
    st2, okafor = srv.api("GET", "/api/v1/readers/dr-okafor")
    ck.check(chen.get("available_now") is True and okafor.get("available_now") is False,
             "GET /readers/{id}: dr-chen (offline, in a shift) available now, dr-okafor (offline, "
             "outside its shifts) not", "%s %s" % (chen.get("available_now"),
                                                   okafor.get("available_now")))

    # ---- studies from each site's AE title
    plan = [  # ae, modality, description, requested priority, seed (patient), expected
        ("TXGEN", "CT", "CTA HEAD AND NECK STROKE", "ROUTINE", 11, "STAT", "STROKE"),
        ("TXGEN", "MR", "MR BRAIN WO WITH CONTRAST", "ROUTINE", 12, "ROUTINE", "default"),
        ("TXGEN", "CR", "XR CHEST 2 VIEWS", "HIGH", 11, "URGENT", "requested"),
        ("TXGEN_CT", "US", "US ABDOMEN COMPLETE", "STAT", 11, "STAT", "requested"),
        ("TXGEN", "CR", "XR WRIST LEFT", "ROUTINE", 11, "URGENT", "WRIST"),
        ("LONROYAL", "CT", "CT CHEST PE PROTOCOL", "ROUTINE", 21, "STAT", "PE"),
        ("LONROYAL", "CT", "CT ABDOMEN PELVIS W CONTRAST", "ROUTINE", 22, "ROUTINE", "default"),
        ("LONROYAL", "MR", "MR KNEE RIGHT", "MEDIUM", 23, "ROUTINE", "default"),
        ("GZFIRST", "CT", "CT CERVICAL SPINE TRAUMA", "ROUTINE", 31, "STAT", "TRAUMA"),
        ("GZFIRST", "US", "US PELVIS TRANSVAGINAL", "ROUTINE", 31, "ROUTINE", "default"),
    ]
    studies = []
    for i, (ae, mod, desc, prio, seed, want, why) in enumerate(plan):
        out = os.path.join(work, "scenario-studies", str(i))
        s = gen_study(out, mod, images=2, seed=seed, priority=prio, description=desc)[0]
        s.update(ae=ae, modality=mod, description=desc, requested=prio, want=want, why=why)
        studies.append(s)
    d0, p0 = description_of(studies[2]["files"][0])
    ck.check(d0 == "XR CHEST 2 VIEWS" and p0 == "HIGH",
             "gen_study writes StudyDescription (--description) and RequestedProcedurePriority "
             "(--priority) at the top level", "%r %r" % (d0, p0))
    by_ae = {}
    for s in studies:
        by_ae.setdefault(s["ae"], []).extend(s["files"])
    sent_at = utc_now()
    for ae, files in by_ae.items():
        code, out = storescu(srv.dicom_port, ae, files)
        ck.check(code == 0, "storescu -aet %s: %d files stored" % (ae, len(files)), out[-500:])
    site_of_ae = {ae: s["id"] for s in sites() for ae in s["ae_titles"]}
    uids = {s["uid"] for s in studies}

    def all_routed():
        rs = [r for r in reads_of(srv) if r["study_uid"] in uids]
        return rs if len(rs) == len(uids) and all(r["state"] != "pool" or r["clocks"]["stable"]
                                                  for r in rs) else None

    reads = wait_for("10 reads", all_routed, 120)
    ck.check(reads and len(reads) == 10, "10 reads appeared, one per study",
             "%d" % len(reads or []))
    if not reads:
        return
    time.sleep(2.5)  # a routing pass after the last read appeared
    reads = {r["study_uid"]: r for r in reads_of(srv) if r["study_uid"] in uids}
    rules = srv.get("/api/v1/priority-rules")
    rule_ids = {w: r["id"] for r in rules for w in r.get("description_contains", [])}
    for s in studies:
        r = reads[s["uid"]]
        site = site_of_ae[s["ae"]]
        s["read"] = r
        want_src = {"default": "default", "requested": "requested procedure priority"}.get(
            s["why"], "rule %d: %s" % (rule_ids.get(s["why"], -1), s["why"]))
        exp_prio, exp_src = expected_priority(s["description"], s["requested"], rules)
        ck.check(r["site"] == site and r["priority"] == s["want"] and
                 r["priority_source"] == want_src and (exp_prio, exp_src) == (s["want"], want_src),
                 "%s %s from %s: read of site %s, priority %s (%s)" %
                 (s["modality"], s["description"], s["ae"], site, s["want"], want_src),
                 "got %s %s %s" % (r["site"], r["priority"], r["priority_source"]))
        received = iso_to_s(r["clocks"]["received"])
        minutes = contract_docs[site]["sla_minutes"][r["priority"]]
        if site == "gz-first":
            # Outside covered hours: the clock starts at the next covered minute.
            start_local = contract_docs[site]["hours"]["start"]
            zone = ZoneInfo("Asia/Shanghai")
            local = datetime.datetime.fromtimestamp(received, zone)
            start = local.replace(hour=int(start_local[:2]), minute=int(start_local[3:]),
                                  second=0, microsecond=0)
            if start <= local:
                start += datetime.timedelta(days=1)
            want_due = start.timestamp() + minutes * 60
            ck.check(abs(iso_to_s(r["due_at"]) - want_due) < 1,
                     "%s at gz-first (arrived outside covered hours): due at %s local + %d min" %
                     (s["description"], start_local, minutes),
                     "due %s, expected %s" % (r["due_at"], datetime.datetime.fromtimestamp(
                         want_due, datetime.timezone.utc).isoformat()))
        else:
            ck.check(iso_to_s(r["due_at"]) - received == minutes * 60,
                     "%s: due_at = received + %d min (%s)" % (s["description"], minutes,
                                                              r["due_at"]),
                     "received %s due %s" % (r["clocks"]["received"], r["due_at"]))
        ck.check(sent_at - 5 <= received <= utc_now(), "%s: received clock is the arrival time" %
                 s["description"], r["clocks"]["received"])
    mr = reads[studies[1]["uid"]]
    ck.check(mr["subspecialty"] == "neuro", "MR BRAIN at tx-general needs neuro (contract rule)",
             str(mr["subspecialty"]))
    ck.check(all(reads[s["uid"]]["subspecialty"] is None for s in studies if s is not studies[1]),
             "no other read needs a subspecialty")

    # ---- routing: only eligible readers, the explanation names the true reasons
    expected_eligible = {
        "tx-general": {"dr-lee", "dr-patel"}, "london-royal": {"dr-patel"},
        "gz-first": {"dr-chen"}}
    for s in studies:
        r = reads[s["uid"]]
        ok_assignee = r["state"] == "assigned" and r["assignee"] in expected_eligible[r["site"]]
        if r["subspecialty"] == "neuro":
            ok_assignee = r["assignee"] == "dr-lee"
        ck.check(ok_assignee, "%s: assigned to an eligible reader (%s)" % (s["description"],
                                                                          r["assignee"]),
                 "%s %s" % (r["state"], r["assignee"]))
        routing = srv.get("/api/v1/reads/%d/routing" % r["id"])
        decision = routing.get("decision") or {}
        decided = iso_to_s(decision.get("decided_at", "1970-01-01T00:00:00Z"))
        wrong = []
        for c in decision.get("considered", []):
            rd = reader_docs[c["reader"]]
            v, reason = verdict(rd, site_docs[r["site"]], r["subspecialty"], c["open_reads"],
                                decided)
            got = c["verdict"]
            if got == "chosen":
                if v != "eligible" or c["reader"] != r["assignee"]:
                    wrong.append("%s chosen but %s" % (c["reader"], v))
            elif got != v or c.get("reason", "") != reason:
                wrong.append("%s: %s/%s, expected %s/%s" % (c["reader"], got, c.get("reason"), v,
                                                           reason))
        ck.check(len(decision.get("considered", [])) == 5 and not wrong and
                 decision.get("chosen") == r["assignee"],
                 "%s: routing explanation names the chosen reader and the true reason for each "
                 "of the other 4" % s["description"], "; ".join(wrong) or json.dumps(decision))
    r_mr = srv.get("/api/v1/reads/%d/routing" % mr["id"])["decision"]
    reasons = {c["reader"]: (c["verdict"], c.get("reason")) for c in r_mr["considered"]}
    ck.check(reasons.get("dr-patel") == ("wrong subspecialty", "needs subspecialty neuro") and
             reasons.get("dr-garcia") == ("license expired", "license for US-TX expired") and
             reasons.get("dr-chen") == ("not licensed", "no license for US-TX") and
             reasons.get("dr-okafor") == ("unavailable", "offline and outside every shift"),
             "MR BRAIN: patel wrong subspecialty, garcia license expired, chen not licensed, "
             "okafor unavailable", json.dumps(reasons))
    pe = reads[studies[5]["uid"]]
    r_pe = srv.get("/api/v1/reads/%d/routing" % pe["id"])["decision"]
    reasons = {c["reader"]: (c["verdict"], c.get("reason")) for c in r_pe["considered"]}
    ck.check(reasons.get("dr-garcia") == ("privileges expired",
                                          "privileges at london-royal expired") and
             reasons.get("dr-lee") == ("not licensed", "no license for GB-ENG"),
             "CT PE at london-royal: garcia's privileges expired, lee not licensed for GB-ENG",
             json.dumps(reasons))
    # Patient affinity: the four tx-general studies of one patient go to one reader.
    p1 = [reads[s["uid"]] for s in studies if s["ae"].startswith("TXGEN") and s is not studies[1]]
    holders = {r["assignee"] for r in p1}
    rules_used = [srv.get("/api/v1/reads/%d/routing" % r["id"])["decision"]["rule"] for r in p1]
    ck.check(len(holders) == 1 and sum("this patient" in x for x in rules_used) >= 1,
             "a patient's four unread tx-general studies all went to %s (affinity)" %
             ",".join(holders), "%s %s" % (holders, rules_used))

    # ---- at the cap: the read waits in the pool and the escalation webhook fires
    counts = open_counts(srv)
    patel = dict(reader_docs["dr-patel"])
    patel["max_open"] = max(1, counts.get("dr-patel", 0))
    st, _ = srv.api("PUT", "/api/v1/readers/dr-patel", patel)
    ck.check(st == 200, "PUT /readers/dr-patel (cap = its %d open reads): 200" % patel["max_open"])
    extra = gen_study(os.path.join(work, "scenario-studies", "cap"), "MR", images=1, seed=24,
                      description="MR LUMBAR SPINE")[0]
    storescu(srv.dicom_port, "LONROYAL", extra["files"])
    capped = wait_for("the capped read", lambda: [r for r in reads_of(srv)
                                                  if r["study_uid"] == extra["uid"]], 60)
    time.sleep(2.5)
    capped = srv.get("/api/v1/reads/%d" % capped[0]["id"])
    routing = srv.get("/api/v1/reads/%d/routing" % capped["id"])
    reasons = {c["reader"]: (c["verdict"], c.get("reason"))
               for c in routing["decision"]["considered"]}
    ck.check(capped["state"] == "pool" and reasons.get("dr-patel") == (
        "at capacity", "%d open reads, cap %d" % (patel["max_open"], patel["max_open"])) and
        routing["decision"]["chosen"] is None,
        "a london-royal read while dr-patel is at the cap waits in the pool; routing says "
        "\"at capacity\"", json.dumps(reasons))
    ck.check(any(h["kind"] == "escalated" for h in capped["history"]),
             "... and is escalated (history)", json.dumps(capped["history"]))
    patel["max_open"] = 10
    srv.api("PUT", "/api/v1/readers/dr-patel", patel)
    wait_for("the capped read routed", lambda: srv.get("/api/v1/reads/%d" % capped["id"])[
        "state"] == "assigned", 30)
    ck.check(srv.get("/api/v1/reads/%d" % capped["id"])["assignee"] == "dr-patel",
             "raising the cap again routes it to dr-patel")

    # ---- claims: of concurrent claims exactly one wins
    for who in ("dr-lee", "dr-patel"):
        st, body = srv.api("POST", "/api/v1/readers/%s/status" % who, {"status": "offline"})
        ck.check(st == 200 and body.get("status") == "offline",
                 "POST /readers/%s/status offline: 200" % who, "%s %s" % (st, body))
    race = gen_study(os.path.join(work, "scenario-studies", "race"), "CT", studies=5, images=1,
                     seed=41, description="CT HEAD WO CONTRAST")
    storescu(srv.dicom_port, "TXGEN", [f for s in race for f in s["files"]])
    race_uids = {s["uid"] for s in race}
    pool = wait_for("5 pool reads", lambda: [r for r in reads_of(srv) if
                                             r["study_uid"] in race_uids] if len(
        [r for r in reads_of(srv) if r["study_uid"] in race_uids]) == 5 else None, 60)
    time.sleep(2.5)
    pool = [srv.get("/api/v1/reads/%d" % r["id"]) for r in pool or []]
    ck.check(len(pool) == 5 and all(r["state"] == "pool" for r in pool),
             "5 tx-general reads wait in the pool while its eligible readers are offline",
             str([r["state"] for r in pool]))
    routing = srv.get("/api/v1/reads/%d/routing" % pool[0]["id"])["decision"]
    reasons = {c["reader"]: c["verdict"] for c in routing["considered"]}
    ck.check(reasons.get("dr-lee") == "unavailable" and reasons.get("dr-patel") == "unavailable",
             "routing: dr-lee and dr-patel unavailable", json.dumps(reasons))
    st, body = srv.api("POST", "/api/v1/reads/%d/claim" % pool[0]["id"], {"reader": "dr-chen"})
    ck.check(st == 403 and "not licensed" in body.get("detail", ""),
             "dr-chen (no US-TX license) may not claim: 403 naming the reason",
             "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/reads/%d/claim" % pool[0]["id"], {"reader": "dr-garcia"})
    ck.check(st == 403 and "license expired" in body.get("detail", ""),
             "dr-garcia (expired US-TX license) may not claim: 403", "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/reads/%d/claim" % pool[0]["id"], {})
    ck.check(st == 422 and body.get("field") == "reader", "a claim naming no reader: 422 (reader)",
             "%s %s" % (st, body))
    results = {r["id"]: [] for r in pool}
    barrier = threading.Barrier(8 * len(pool))

    def claim(read_id, who):
        barrier.wait()
        st, body = srv.api("POST", "/api/v1/reads/%d/claim" % read_id, {"reader": who})
        results[read_id].append((st, who, body.get("assignee") if isinstance(body, dict) else
                                 None))

    threads = [threading.Thread(target=claim, args=(r["id"], ("dr-lee", "dr-patel")[k % 2]))
               for r in pool for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for read_id, res in results.items():
        wins = [x for x in res if x[0] == 200]
        losses = [x for x in res if x[0] == 409]
        final = srv.get("/api/v1/reads/%d" % read_id)
        ck.check(len(wins) == 1 and len(losses) == 7 and final["state"] == "claimed" and
                 final["assignee"] == wins[0][1] == wins[0][2],
                 "read %d: 8 concurrent claims, exactly one 200 (%s), seven 409" %
                 (read_id, wins[0][1] if wins else "-"), str(res))
    for who in ("dr-lee", "dr-patel"):
        srv.api("POST", "/api/v1/readers/%s/status" % who, {"status": "online"})

    # ---- release, reassign
    target = pool[0]["id"]
    st, body = srv.api("POST", "/api/v1/reads/%d/release" % target, {"reason": "shift over"})
    ck.check(st == 200 and body.get("state") == "pool", "admin release of a claimed read: 200",
             "%s %s" % (st, body))
    st, body = srv.api("POST", "/api/v1/reads/%d/release" % target, {})
    ck.check(st == 409, "releasing it again: 409", "%s %s" % (st, body))
    rerouted = wait_for("re-routing", lambda: srv.get("/api/v1/reads/%d" % target)["state"] ==
                        "assigned", 30)
    after = srv.get("/api/v1/reads/%d" % target)
    kinds = [h["kind"] for h in after["history"]]
    ck.check(rerouted and after["assignee"] in ("dr-lee", "dr-patel") and
             kinds[-2:] == ["released", "assigned"],
             "the released read is routed again to an eligible reader", str(kinds))
    for who, reason in (("dr-chen", "not licensed"), ("dr-garcia", "license expired"),
                        ("dr-okafor", "not licensed"), ("nobody", "no such reader")):
        st, body = srv.api("POST", "/api/v1/reads/%d/reassign" % target, {"reader": who})
        ck.check(st == 403 and reason in body.get("detail", ""),
                 "reassign to %s: refused (403, %s)" % (who, reason), "%s %s" % (st, body))
    other = "dr-patel" if after["assignee"] == "dr-lee" else "dr-lee"
    st, body = srv.api("POST", "/api/v1/reads/%d/reassign" % target, {"reader": other})
    final = srv.get("/api/v1/reads/%d" % target)
    ck.check(st == 200 and final["assignee"] == other and final["state"] == "assigned" and
             final["history"][-1]["kind"] == "reassigned",
             "reassign to %s (licensed, privileged): 200, assigned" % other, "%s %s" % (st, body))
    st, _ = srv.api("POST", "/api/v1/reads/999999/reassign", {"reader": "dr-lee"})
    ck.check(st == 404, "reassigning an unknown read: 404")

    # ---- the worklist
    wl = srv.get("/api/v1/worklist?reader=dr-lee")
    dues = [iso_to_s(i["due_at"]) for i in wl["items"]]
    ck.check(wl["reader"] == "dr-lee" and wl["items"] and dues == sorted(dues) and
             all(i["assignee"] == "dr-lee" or i["state"] == "pool" for i in wl["items"]) and
             all(abs(i["time_left_seconds"] - (iso_to_s(i["due_at"]) - utc_now())) < 10
                 for i in wl["items"]),
             "GET /worklist?reader=dr-lee: %d items, by due time, with time left" %
             len(wl["items"]), json.dumps(wl)[:600])
    st, body = srv.api("GET", "/api/v1/worklist")
    ck.check(st == 400, "GET /worklist without a reader (admin): 400", "%s" % st)

    # ---- AI findings raise priority and bring the due time forward
    knee = reads[studies[7]["uid"]]
    st, body = srv.api("POST", "/api/v1/reads/%d/ai-findings" % knee["id"],
                       {"source": "aidoc", "finding": "fracture suspected", "priority": "STAT"})
    received = iso_to_s(knee["clocks"]["received"])
    ck.check(st == 201 and body["priority"] == "STAT" and body["priority_source"] == "ai: aidoc"
             and iso_to_s(body["due_at"]) - received == 45 * 60,
             "AI finding (STAT) on a ROUTINE london-royal read: STAT, source ai: aidoc, due = "
             "received + 45 min", "%s %s" % (st, body))
    gz = reads[studies[9]["uid"]]
    st, body = srv.api("POST", "/api/v1/reads/%d/ai-findings" % gz["id"],
                       {"source": "qure", "finding": "free fluid", "priority": "STAT"})
    old_due = iso_to_s(gz["due_at"])
    ck.check(st == 201 and body["priority"] == "STAT" and
             abs(iso_to_s(body["due_at"]) - (old_due - (1440 - 30) * 60)) < 1,
             "AI finding on a gz-first read that arrived outside covered hours: due = coverage "
             "start + 30 min", "%s %s (was %s)" % (st, body.get("due_at"), gz["due_at"]))
    st, body = srv.api("POST", "/api/v1/reads/%d/ai-findings" % knee["id"],
                       {"source": "other-ai", "finding": "nothing", "priority": "ROUTINE"})
    full = srv.get("/api/v1/reads/%d" % knee["id"])
    ck.check(st == 201 and full["priority"] == "STAT" and len(full["ai_findings"]) == 2 and
             full["history"][-1]["detail"]["priority_raised"] is False,
             "a lower-priority AI finding is recorded and changes nothing", json.dumps(full)[:400])
    st, body = srv.api("POST", "/api/v1/reads/%d/ai-findings" % knee["id"], {"finding": "x"})
    ck.check(st == 422 and body.get("field") == "source", "an AI finding without source: 422",
             "%s %s" % (st, body))

    # ---- metrics
    st, text = srv.api("GET", "/metrics")
    all_reads = reads_of(srv)
    by_state = {}
    for r in all_reads:
        by_state[r["state"]] = by_state.get(r["state"], 0) + 1
    ok = st == 200 and "# TYPE telerad_reads gauge" in text and \
        "# TYPE telerad_read_turnaround_seconds histogram" in text and \
        "telerad_reads_overdue{priority=\"STAT\"}" in text and "telerad_outbox_pending" in text
    for state in ("pool", "assigned", "claimed", "preliminary", "final", "cancelled"):
        m = re.search(r'^telerad_reads\{state="%s"\} (\d+)$' % state, text, re.M)
        ok &= bool(m) and int(m.group(1)) == by_state.get(state, 0)
    ck.check(ok, "/metrics: reads by state match the API (%s), overdue, turnaround histogram, "
             "outbox" % json.dumps(by_state), text[:800])

    # ---- the escalation webhook (receiver answers 500 first)
    wait_for("escalation deliveries", lambda: len([c for c in receiver.events(
        "read.unassignable") if c[1] == 200]) >= 6, 60)
    check_webhook_delivery(ck, receiver, {"read.unassignable"}, "escalations")
    ids = {c[2]["read"] for c in receiver.events("read.unassignable")}
    ck.check(capped["id"] in ids and {r["id"] for r in pool} <= ids,
             "escalation events name the capped read and the 5 reads nobody could take",
             str(sorted(ids)))


# ---- part: random -----------------------------------------------------------------------------

class ChangeLog:
    """Reader documents over time: [(t_before, t_after, doc)] per reader."""

    def __init__(self):
        self.versions = {}
        self.lock = threading.Lock()

    def add(self, rid, t0, t1, doc):
        with self.lock:
            self.versions.setdefault(rid, []).append((t0, t1, json.loads(json.dumps(doc))))

    def candidates(self, rid, t, slack, before=0.01):
        """The documents that may have been used by a decision stamped t: the last one whose
        PUT had returned before t (its commit marked the catalog stale before the decision
        loaded it), and those whose PUT started by t + slack (a decision loads the catalog a
        moment after taking its timestamp)."""
        vs = self.versions.get(rid, [])
        out = []
        base = None
        for t0, t1, doc in vs:
            if t1 < t - before:
                base = doc
            elif t0 <= t + slack:
                out.append(doc)
        return ([base] if base is not None else []) + out


def part_random(ck, telerad, work, nreads, seed):
    rng = random.Random(seed)
    srv = Telerad(telerad, work, "random").start()
    try:
        random_checks(ck, srv, work, nreads, rng)
    finally:
        code = srv.stop()
        ck.check(code == 0, "random: server stopped cleanly (exit %s)" % code)
        reports = srv.sanitizer_reports()
        ck.check(not reports, "random: no sanitizer reports in the server log",
                 "\n".join(reports[:10]))
    verify_history(ck, srv, work)


RANDOM_EXTRA_READERS = [
    {"id": "dr-kim", "name": "Dr Min Kim", "status": "online", "timezone": "Asia/Seoul",
     "licenses": [], "privileges": [], "subspecialties": [], "max_open": 20},
    {"id": "dr-novak", "name": "Dr Eva Novak", "status": "offline", "timezone": "Europe/Prague",
     "licenses": [], "privileges": [], "subspecialties": ["neuro"], "max_open": 20},
    {"id": "dr-silva", "name": "Dr João Silva", "status": "online",
     "timezone": "America/Sao_Paulo", "licenses": [], "privileges": [],
     "subspecialties": ["body"], "max_open": 20},
]


def random_checks(ck, srv, work, nreads, rng):
    now = utc_now()
    extra = [dict(r, shifts=[weekly_shift(r["timezone"], now, -1 + k, 1 + k)])
             for k, r in enumerate(RANDOM_EXTRA_READERS)]
    if not create_catalog(ck, srv, now, gz_hours=False, extra_readers=extra):
        return
    # Start from readers who can take most reads (so that many assignments happen), then let
    # the changes below take that away and give it back at random.
    site_docs, reader_docs, contract_docs, rules = catalog_of(srv)
    for rid, doc in sorted(reader_docs.items()):
        doc.pop("available_now", None)
        doc["licenses"] = [{"jurisdiction": s["jurisdiction"], "expires": date_in("UTC", now, 400)}
                           for s in site_docs.values() if rng.random() < 0.8]
        doc["privileges"] = [{"site": s, "expires": date_in("UTC", now, 400)}
                             for s in site_docs if rng.random() < 0.8]
        doc["max_open"] = rng.choice([50, 100, 200, 300])
        doc["status"] = "online" if rng.random() < 0.8 else "offline"
        st, body = srv.api("PUT", "/api/v1/readers/%s" % rid, doc)
        if st != 200:
            ck.check(False, "PUT /readers/%s" % rid, "%s %s" % (st, body))
            return
    changes = ChangeLog()
    site_docs, reader_docs, contract_docs, rules = catalog_of(srv)
    for rid, doc in reader_docs.items():
        changes.add(rid, 0, 0, doc)
    with open(os.path.join(work, "random-catalog.json"), "w") as f:
        json.dump({"sites": site_docs, "contracts": contract_docs, "rules": rules}, f)

    # Studies: ~nreads of 1 tiny image, 4 modalities x 3 sites, patients shared within a site.
    t0 = time.time()
    per = max(1, (nreads + 11) // 12)
    batches = []  # (ae, [files])
    studies = {}
    for si, (ae, site) in enumerate((("TXGEN", "tx-general"), ("LONROYAL", "london-royal"),
                                     ("GZFIRST", "gz-first"))):
        for mi, mod in enumerate(("CT", "MR", "CR", "US")):
            prio = ("ROUTINE", "HIGH", "STAT", "LOW")[(si + mi) % 4]
            out = os.path.join(work, "random-studies", site, mod)
            made = gen_study(out, mod, studies=per, images=1, seed=si + 1, priority=prio,
                             patients=max(1, per // 3), size=4)
            for s in made:
                studies[s["uid"]] = dict(s, site=site, modality=mod, requested=prio)
            files = [s["files"][0] for s in made]
            for k in range(0, len(files), 30):
                batches.append((ae, files[k:k + 30]))
    rng.shuffle(batches)
    ck.check(len(studies) >= nreads, "%d small studies generated (%.1f s)" %
             (len(studies), time.time() - t0))

    stop = threading.Event()
    stats = {"changes": 0, "claims": 0, "releases": 0, "reassigns": 0, "errors": []}
    jurisdictions = ["US-TX", "GB-ENG", "CN-GD"]
    site_ids = list(site_docs)

    def mutate(doc, t):
        doc = json.loads(json.dumps(doc))
        zone = doc.get("timezone") or "UTC"
        what = rng.choice(["status", "status", "license", "license", "privilege", "privilege",
                           "cap", "cap", "subspecialty"])
        when = rng.choice([date_in(zone, t, 300), date_in(zone, t, 300), date_in(zone, t, 0),
                           date_in(zone, t, -1), date_in(zone, t, 1), date_in(zone, t, -30)])
        if what == "status":
            doc["status"] = rng.choice(["online", "offline"])
        elif what == "license":
            j = rng.choice(jurisdictions)
            lic = [x for x in doc.get("licenses", []) if x["jurisdiction"] != j]
            if rng.random() < 0.75:
                lic.append({"jurisdiction": j, "expires": when})
            doc["licenses"] = lic
        elif what == "privilege":
            s = rng.choice(site_ids)
            priv = [x for x in doc.get("privileges", []) if x["site"] != s]
            if rng.random() < 0.75:
                priv.append({"site": s, "expires": when})
            doc["privileges"] = priv
        elif what == "cap":
            doc["max_open"] = rng.choice([1, 2, 5, 10, 20, 40, 80, 150, 300, 300, 500])
        else:
            subs = set(doc.get("subspecialties", []))
            subs ^= {rng.choice(["neuro", "body", "chest", "msk"])}
            doc["subspecialties"] = sorted(subs)
        return doc

    def changer():
        docs = {rid: doc for rid, doc in reader_docs.items()}
        for d in docs.values():
            d.pop("available_now", None)
        while not stop.is_set():
            rid = rng.choice(sorted(docs))
            t_before = utc_now()
            new = mutate(docs[rid], t_before)
            try:
                st, body = srv.api("PUT", "/api/v1/readers/%s" % rid, new)
            except OSError as e:
                stats["errors"].append("PUT %s: %s" % (rid, e))
                continue
            t_after = utc_now()
            if st == 200:
                docs[rid] = new
                changes.add(rid, t_before, t_after, new)
                stats["changes"] += 1
            else:
                stats["errors"].append("PUT %s: %s %s" % (rid, st, body))
            time.sleep(rng.uniform(0.02, 0.15))

    def churner():
        while not stop.is_set():
            time.sleep(rng.uniform(0.01, 0.1))
            action = rng.choice(["claim", "claim", "release", "release", "release", "reassign"])
            state = {"claim": "pool", "release": "assigned"}.get(action, "assigned")
            try:
                reads = srv.get("/api/v1/reads?limit=100&state=%s&offset=%d" %
                                (state, rng.randrange(0, 100)))
            except (OSError, RuntimeError):
                continue
            if not reads:
                continue
            r = rng.choice(reads)
            who = rng.choice(sorted(reader_docs))
            if action != "reassign" and r["assignee"] and rng.random() < 0.5:
                who = r["assignee"]
            if action == "claim":
                st, _ = srv.api("POST", "/api/v1/reads/%d/claim" % r["id"], {"reader": who})
                stats["claims"] += st == 200
            elif action == "release":
                st, _ = srv.api("POST", "/api/v1/reads/%d/release" % r["id"], {})
                stats["releases"] += st == 200
            else:
                st, _ = srv.api("POST", "/api/v1/reads/%d/reassign" % r["id"], {"reader": who})
                stats["reassigns"] += st == 200
            if st >= 500:
                stats["errors"].append("%s read %d: %s" % (action, r["id"], st))

    workers = [threading.Thread(target=changer), threading.Thread(target=churner),
               threading.Thread(target=churner)]
    for w in workers:
        w.start()
    t0 = time.time()
    sent = 0
    send_errors = []
    lock = threading.Lock()

    def sender(my_batches):
        nonlocal sent
        for ae, files in my_batches:
            code, out = storescu(srv.dicom_port, ae, files)
            with lock:
                if code != 0:
                    send_errors.append(out[-300:])
                else:
                    sent += len(files)
            time.sleep(rng.uniform(0, 0.5))

    senders = [threading.Thread(target=sender, args=(batches[k::3],)) for k in range(3)]
    for s in senders:
        s.start()
    for s in senders:
        s.join()
    ck.check(not send_errors and sent == len(studies),
             "%d studies sent by 3 storescu processes at a time from 3 AE titles (%.1f s)" %
             (sent, time.time() - t0), "; ".join(send_errors[:3]))
    total = wait_for("%d reads" % len(studies),
                     lambda: len(srv.get("/api/v1/reads?limit=1&offset=%d" % (len(studies) - 1)))
                     == 1, 600, 2)
    time.sleep(15)  # keep changing and churning while the last reads route
    stop.set()
    for w in workers:
        w.join()
    time.sleep(3)  # the last routing pass
    reads = reads_of(srv)
    ck.check(total and len(reads) == len(studies), "%d reads created (%.1f s after the first send)"
             % (len(reads), time.time() - t0))
    ck.check(stats["changes"] >= 100 and not stats["errors"],
             "%d random reader changes, %d claims, %d releases, %d reassignments through the API"
             % (stats["changes"], stats["claims"], stats["releases"], stats["reassigns"]),
             "; ".join(stats["errors"][:5]))
    # Every read: priority from its description and requested priority, due = received + SLA.
    rules = srv.get("/api/v1/priority-rules")
    bad = []
    for r in reads:
        s = studies.get(r["study_uid"])
        if not s or r["site"] != s["site"]:
            bad.append("%s: unknown study or wrong site %s" % (r["study_uid"], r["site"]))
            continue
        want, src = expected_priority(r["description"], s["requested"], rules)
        if (r["priority"], r["priority_source"]) != (want, src):
            bad.append("read %d %r %s: %s/%s, expected %s/%s" % (
                r["id"], r["description"], s["requested"], r["priority"], r["priority_source"],
                want, src))
        minutes = contract_docs[r["site"]]["sla_minutes"][r["priority"]]
        if iso_to_s(r["due_at"]) - iso_to_s(r["clocks"]["received"]) != minutes * 60:
            bad.append("read %d: due %s received %s" % (r["id"], r["due_at"],
                                                       r["clocks"]["received"]))
        want_sub = "neuro" if r["site"] == "tx-general" and s["modality"] == "MR" and \
            words_match(r["description"], "BRAIN") else None
        if r["subspecialty"] != want_sub:
            bad.append("read %d: subspecialty %s" % (r["id"], r["subspecialty"]))
    ck.check(not bad, "every read's site, priority, priority source, subspecialty and due time "
             "as the rules say", "; ".join(bad[:5]))
    # Worklists: every read a reader holds is on it, whatever the length of the pool, and the
    # pool reads on it are ones the reader may claim; all by due time. First a long pool:
    # everyone offline (recorded like the other changes), the reads of all but the busiest
    # reader released.
    for rid in sorted(reader_docs):
        doc = srv.get("/api/v1/readers/%s" % rid)
        doc.pop("available_now", None)
        doc["status"] = "offline"
        doc["shifts"] = []
        t_before = utc_now()
        srv.api("PUT", "/api/v1/readers/%s" % rid, doc)
        changes.add(rid, t_before, utc_now(), doc)
    time.sleep(1.5)
    held_by = {}
    for r in reads:
        if r["state"] in ("assigned", "claimed"):
            held_by.setdefault(r["assignee"], []).append(r)
    busiest = max(held_by, key=lambda k: len(held_by[k])) if held_by else None
    for who, rs in held_by.items():
        if who != busiest:
            for r in rs:
                srv.api("POST", "/api/v1/reads/%d/release" % r["id"], {"reason": "test"})
    time.sleep(1.5)
    reads = reads_of(srv)
    pool_n = sum(1 for r in reads if r["state"] == "pool")
    bad = []
    for rid in sorted(reader_docs):
        wl = srv.get("/api/v1/worklist?reader=%s" % rid)
        ids = {i["id"] for i in wl["items"]}
        held = {r["id"] for r in reads if r["assignee"] == rid and
                r["state"] in ("assigned", "claimed")}
        dues = [(iso_to_s(i["due_at"]), i["id"]) for i in wl["items"]]
        if not held <= ids or dues != sorted(dues) or wl["open_reads"] != len(held):
            bad.append("%s: %d held, %d of them listed, open_reads %s" % (
                rid, len(held), len(held & ids), wl["open_reads"]))
        doc = srv.get("/api/v1/readers/%s" % rid)
        for i in wl["items"]:
            if i["state"] == "pool":
                v, reason = verdict(doc, site_docs[i["site"]], i["subspecialty"], 0, utc_now(),
                                    availability=False, cap=False)
                if v != "eligible":
                    bad.append("%s: pool read %d listed but %s" % (rid, i["id"], reason))
    ck.check(not bad and pool_n > 500,
             "worklists of all 8 readers: every held read listed (%s holds %d; pool of %d), by "
             "due time, pool reads only claimable ones" % (
                 busiest, len(held_by.get(busiest, [])), pool_n), "; ".join(bad[:5]))
    with open(os.path.join(work, "random-changes.json"), "w") as f:
        json.dump(changes.versions, f)


def verify_history(ck, srv, work):
    """Replay every read's history from the database, in the order it was written, and check
    each assignment against the reader's document as it was then."""
    db_path = os.path.join(srv.data, "index.sqlite")
    if not os.path.exists(os.path.join(work, "random-changes.json")):
        return
    with open(os.path.join(work, "random-changes.json")) as f:
        versions = json.load(f)
    with open(os.path.join(work, "random-catalog.json")) as f:
        catalog = json.load(f)
    changes = ChangeLog()
    changes.versions = {k: [tuple(v) for v in vs] for k, vs in versions.items()}
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    reads = {row[0]: {"site": row[1], "subspecialty": row[2], "routing": row[3]} for row in
             db.execute("SELECT id, site, subspecialty, routing FROM flow_reads")}
    events = db.execute("SELECT id, read_id, at, kind, actor, detail FROM flow_read_events "
                        "ORDER BY id").fetchall()
    db.close()
    holder = {}  # read -> reader holding it (assigned or claimed)
    open_of = {}
    slack = 0.2  # seconds: a decision may use the document of a change this close after it
    checked = {"assigned": 0, "claimed": 0, "reassigned": 0}
    near_change = 0  # eligible only under a document changed within `slack` of the decision
    bad = []
    for eid, rid, at_ms, kind, actor, detail in events:
        t = at_ms / 1000.0
        d = json.loads(detail) if detail else {}
        if kind in ("assigned", "claimed", "reassigned"):
            who = d.get("reader")
            prev = holder.get(rid)
            opens = open_of.get(who, 0) - (1 if prev == who else 0)
            site = catalog["sites"][reads[rid]["site"]]
            sub = reads[rid]["subspecialty"] or None
            docs = changes.candidates(who, t, slack)
            ok = False
            why = []
            for n, doc in enumerate(docs):
                if n == 1:
                    near_change += 1
                v, reason = verdict(doc, site, sub, opens, t, availability=kind == "assigned",
                                    cap=kind != "reassigned")
                if v == "eligible":
                    ok = True
                    break
                why.append(v + ": " + reason)
            checked[kind] += 1
            if not ok:
                bad.append("event %d: read %d %s to %s at %s: %s" % (
                    eid, rid, kind, who, datetime.datetime.fromtimestamp(
                        t, datetime.timezone.utc).isoformat(), "; ".join(why) or "no document"))
            if prev:
                open_of[prev] -= 1
            holder[rid] = who
            open_of[who] = open_of.get(who, 0) + 1
        elif kind in ("released", "claim_lapsed"):
            prev = holder.pop(rid, None)
            if prev:
                open_of[prev] -= 1
    ck.check(sum(checked.values()) >= 600 and not bad,
             "every assignment re-checked against the reader's document at that time: %d by the "
             "router, %d claims, %d reassignments (%d within %.1f s of a change of that reader, "
             "judged by either document); ineligible: %d" % (
                 checked["assigned"], checked["claimed"], checked["reassigned"],
                 near_change, slack, len(bad)),
             "\n".join(bad[:10]))
    # The last routing decision of every read names the true verdict and reason for each
    # reader (decided_at has whole seconds: the documents of that second are candidates).
    wrong = []
    decisions = 0
    for rid, r in reads.items():
        if not r["routing"]:
            continue
        d = json.loads(r["routing"])
        t = iso_to_s(d["decided_at"]) + 0.5
        site = catalog["sites"][r["site"]]
        decisions += 1
        for c in d["considered"]:
            docs = changes.candidates(c["reader"], t, 1.0, before=1.0)
            want = {verdict(doc, site, r["subspecialty"] or None, c["open_reads"], t)
                    for doc in docs}
            got = c["verdict"]
            if got == "chosen":
                ok = ("eligible", "") in want and d["chosen"] == c["reader"]
            else:
                ok = (got, c.get("reason", "")) in want
            if not ok:
                wrong.append("read %d at %s: %s %s/%s, expected one of %s" % (
                    rid, d["decided_at"], c["reader"], got, c.get("reason"), sorted(want)))
    ck.check(decisions >= 1000 and not wrong,
             "the stored routing explanations of %d reads name the true verdict and reason for "
             "each of the 8 readers" % decisions, "\n".join(wrong[:10]))


# ---- part: clocks -----------------------------------------------------------------------------

def part_clocks(ck, telerad, work):
    receiver = Receiver(fail_first=True)
    conf = os.path.join(work, "clocks.conf")
    with open(conf, "w") as f:
        f.write("[flow]\nclaim_timeout = 60\nsla_alert_lead = 30\nwebhook_url = %s\n" %
                receiver.url)
    srv = Telerad(telerad, work, "clocks", "--config", conf).start()
    try:
        clocks_checks(ck, srv, receiver, work)
    finally:
        code = srv.stop()
        receiver.close()
        ck.check(code == 0, "clocks: server stopped cleanly (exit %s)" % code)
        reports = srv.sanitizer_reports()
        ck.check(not reports, "clocks: no sanitizer reports", "\n".join(reports[:10]))


def clocks_checks(ck, srv, receiver, work):
    now = utc_now()
    site = sites()[0]
    srv.api("POST", "/api/v1/sites", site)
    st, _ = srv.api("POST", "/api/v1/contracts", {"site": "tx-general", "sla_minutes": {
        "STAT": 1, "URGENT": 2, "ROUTINE": 3}})
    ck.check(st == 201, "a contract with STAT 1 min, URGENT 2, ROUTINE 3")
    for r in readers(now)[:2]:
        srv.api("POST", "/api/v1/readers", r)
    made = gen_study(os.path.join(work, "clock-studies"), "CT", studies=3, images=1, seed=51,
                     description="CT HEAD CODE STROKE")
    uids = {s["uid"] for s in made}
    storescu(srv.dicom_port, "TXGEN", [s["files"][0] for s in made])
    reads = wait_for("3 assigned reads", lambda: [r for r in reads_of(srv) if r["study_uid"] in
                                                 uids and r["state"] == "assigned"]
                     if len([r for r in reads_of(srv) if r["study_uid"] in uids and
                             r["state"] == "assigned"]) == 3 else None, 60)
    if not reads:
        ck.check(False, "3 STAT reads assigned")
        return
    reads.sort(key=lambda r: r["id"])
    idle, alive = reads[0], reads[1]
    claimed_at = utc_now()
    for r in (idle, alive):
        st, body = srv.api("POST", "/api/v1/reads/%d/claim" % r["id"], {"reader": r["assignee"]})
        ck.check(st == 200 and body["state"] == "claimed", "read %d claimed by %s" %
                 (r["id"], r["assignee"]), "%s %s" % (st, body))
    st, _ = srv.api("POST", "/api/v1/reads/%d/open" % alive["id"])
    ck.check(st == 204, "POST /reads/{id}/open: 204")
    # Keep one claim alive; let the other lapse (claim_timeout = 60 s).
    deadline = claimed_at + 78
    while utc_now() < deadline:
        srv.api("POST", "/api/v1/reads/%d/activity" % alive["id"])
        time.sleep(10)
    a = srv.get("/api/v1/reads/%d" % alive["id"])
    i = srv.get("/api/v1/reads/%d" % idle["id"])
    kinds = [h["kind"] for h in i["history"]]
    lapsed = [h for h in i["history"] if h["kind"] == "claim_lapsed"]
    ck.check(a["state"] == "claimed" and a["clocks"]["opened"],
             "a claim kept alive by /activity is still claimed after 78 s (opened clock set)",
             "%s" % a["state"])
    ck.check(lapsed and i["state"] != "claimed" and
             59 <= iso_to_s(lapsed[0]["at"]) - claimed_at <= 70,  # "at" has whole seconds
             "a claim without activity lapsed after 60 s ([flow] claim_timeout) and was routed "
             "again", "%s %s, lapsed %.1f s after the claim" % (
                 i["state"], kinds, iso_to_s(lapsed[0]["at"]) - claimed_at if lapsed else -1))
    # SLA warning (30 s before due) and breach (at due), each delivered once after a 500.
    wait_for("breaches delivered", lambda: len([c for c in receiver.events("sla.breach")
                                               if c[1] == 200]) >= 3, 60)
    warn = receiver.events("sla.warning")
    breach = receiver.events("sla.breach")
    by_read = {}
    for when, status, p in warn + breach:
        by_read.setdefault((p["event"], p["read"]), []).append(when)
    ok = True
    for r in reads:
        due = iso_to_s(r["due_at"])
        w = by_read.get(("sla.warning", r["id"]))
        b = by_read.get(("sla.breach", r["id"]))
        ok &= bool(w) and bool(b) and due - 31 <= w[0] <= due and due - 1 <= b[0] <= due + 3
    ck.check(ok, "each of the 3 STAT reads: sla.warning from 30 s before due, sla.breach at due",
             json.dumps({"%s %s" % k: v for k, v in by_read.items()}))
    check_webhook_delivery(ck, receiver, {"sla.warning", "sla.breach"}, "SLA alerts")
    p = breach[0][2] if breach else {}
    ck.check(set(p) >= {"event", "read", "site", "priority", "state", "due_at", "seconds_left"},
             "a breach event names the read, site, priority, state, due time, seconds left",
             json.dumps(p))
    full = srv.get("/api/v1/reads/%d" % alive["id"])
    kinds = [h["kind"] for h in full["history"]]
    ck.check(full["clocks"]["sla_warning"] and full["clocks"]["sla_breached"] and
             "sla_warning" in kinds and "sla_breached" in kinds,
             "the read's clocks and history record the warning and the breach", str(kinds))
    st, text = srv.api("GET", "/metrics")
    m = re.search(r'^telerad_reads_overdue\{priority="STAT"\} (\d+)$', text, re.M)
    ck.check(m and int(m.group(1)) == 3, "/metrics: telerad_reads_overdue{priority=\"STAT\"} 3",
             text[:500])
    m = re.search(r'^telerad_outbox_pending (\d+)$', text, re.M)
    ck.check(m and int(m.group(1)) == 0, "/metrics: nothing pending in the outbox", text[-300:])
    ck.check("SLA breached" in srv.log_text() and "SLA due soon" in srv.log_text(),
             "the log records the warnings and breaches")


# ---- part: postgresql -------------------------------------------------------------------------

def part_postgresql(ck, telerad, work, url_file):
    if not url_file or not os.path.exists(url_file):
        skip("no PostgreSQL (run under ctest with the postgres fixture, or --pg-url-file)")
    with open(url_file) as f:
        base = f.read().strip()
    dbname = "flow_%d" % os.getpid()
    p = subprocess.run(["psql", base, "-q", "-c", "CREATE DATABASE %s" % dbname],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        ck.check(False, "create database %s" % dbname, p.stdout.decode())
        return
    url = base.rsplit("/", 1)[0] + "/" + dbname
    data = os.path.join(work, "shared-data")  # one object store for both nodes
    a = Telerad(telerad, work, "node-a", "--index", url, data=data).start()
    b = Telerad(telerad, work, "node-b", "--index", url, data=data).start()
    try:
        postgresql_checks(ck, a, b, work)
    finally:
        for node in (a, b):
            code = node.stop()
            ck.check(code == 0, "%s stopped cleanly (exit %s)" % (node.name, code))
            reports = node.sanitizer_reports()
            ck.check(not reports, "%s: no sanitizer reports" % node.name, "\n".join(reports[:10]))
        subprocess.run(["psql", base, "-q", "-c", "DROP DATABASE IF EXISTS %s" % dbname],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def postgresql_checks(ck, a, b, work):
    now = utc_now()
    if not create_catalog(ck, a, now, gz_hours=False):
        return
    # Node B sees node A's catalog (its cache expires within 5 s).
    seen = wait_for("node B's catalog", lambda: len(b.get("/api/v1/readers")) == 5, 20)
    ck.check(seen, "node B lists the readers created through node A")
    # Nobody available for tx-general: reads stay in the pool for the race. Node B's catalog
    # sees the change made through node A within its 5 s cache time.
    for who in ("dr-lee", "dr-patel"):
        a.api("POST", "/api/v1/readers/%s/status" % who, {"status": "offline"})
    t0 = time.time()
    seen = wait_for("node B's view of dr-lee", lambda: b.get("/api/v1/readers/dr-lee").get(
        "available_now") is False and b.get("/api/v1/readers/dr-patel").get("available_now") is
        False, 15, 0.2)
    ck.check(seen and time.time() - t0 <= 7,
             "a reader set offline through node A is unavailable on node B after %.1f s (cache "
             "5 s)" % (time.time() - t0))
    time.sleep(1.5)  # a routing pass of each node with the new catalog
    made = gen_study(os.path.join(work, "pg-studies"), "CT", studies=10, images=1, seed=61,
                     description="CT HEAD WO CONTRAST")
    uids = {s["uid"] for s in made}
    half = len(made) // 2
    storescu(a.dicom_port, "TXGEN", [s["files"][0] for s in made[:half]])
    storescu(b.dicom_port, "TXGEN", [s["files"][0] for s in made[half:]])
    pool = wait_for("10 pool reads", lambda: [r for r in reads_of(a) if r["study_uid"] in uids]
                    if len([r for r in reads_of(a) if r["study_uid"] in uids]) == 10 else None,
                    90)
    time.sleep(3)
    ck.check(pool and len(pool) == 10 and len({r["study_uid"] for r in pool}) == 10,
             "10 studies stored through both nodes: 10 reads, one per study (both nodes ingest)")
    if not pool:
        return
    results = {r["id"]: [] for r in pool}
    nthreads = 6
    barrier = threading.Barrier(nthreads * len(pool))

    def claim(node, read_id, who):
        barrier.wait()
        st, body = node.api("POST", "/api/v1/reads/%d/claim" % read_id, {"reader": who})
        results[read_id].append((st, node.name, who))

    threads = [threading.Thread(target=claim, args=((a, b)[k % 2], r["id"],
                                                    ("dr-lee", "dr-patel")[(k // 2) % 2]))
               for r in pool for k in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ok = True
    detail = []
    for read_id, res in results.items():
        wins = [x for x in res if x[0] == 200]
        final = b.get("/api/v1/reads/%d" % read_id)
        good = len(wins) == 1 and all(x[0] == 409 for x in res if x[0] != 200) and \
            final["state"] == "claimed" and final["assignee"] == wins[0][2]
        ok &= good
        if not good:
            detail.append("%d: %s -> %s/%s" % (read_id, res, final["state"], final["assignee"]))
    nodes = {x[1] for res in results.values() for x in res if x[0] == 200}
    ck.check(ok, "10 reads x %d concurrent claims across two nodes sharing PostgreSQL: exactly "
             "one 200 per read, the rest 409 (winners on %s)" % (nthreads, ", ".join(sorted(nodes))),
             "; ".join(detail))
    # Both routers at work: bring the readers back, release everything, let them route.
    for who in ("dr-lee", "dr-patel"):
        b.api("POST", "/api/v1/readers/%s/status" % who, {"status": "online"})
    for r in pool:
        (a, b)[r["id"] % 2].api("POST", "/api/v1/reads/%d/release" % r["id"], {})
    routed = wait_for("routing by both nodes", lambda: all(
        x["state"] == "assigned" for x in reads_of(a) if x["study_uid"] in uids), 60)
    ck.check(routed, "released reads are routed again (by either node)")
    bad = []
    for r in pool:
        h = a.get("/api/v1/reads/%d" % r["id"])["history"]
        holding = None
        for e in h:
            if e["kind"] in ("assigned", "claimed", "reassigned"):
                if holding and e["kind"] == "assigned":
                    bad.append("%d: assigned while held by %s" % (r["id"], holding))
                holding = e["detail"]["reader"]
            elif e["kind"] in ("released", "claim_lapsed"):
                holding = None
        if sum(1 for e in h if e["kind"] == "created") != 1:
            bad.append("%d: created %d times" % (r["id"], sum(1 for e in h if e["kind"] ==
                                                              "created")))
    ck.check(not bad, "no read was ever assigned twice at once or created twice", "; ".join(bad))
    # The cap across nodes: dr-lee alone (cap 2), every read back in the pool, both routers
    # and claims through both nodes at once.
    lee = a.get("/api/v1/readers/dr-lee")
    lee.pop("available_now", None)
    lee["max_open"] = 2
    a.api("PUT", "/api/v1/readers/dr-lee", lee)
    a.api("POST", "/api/v1/readers/dr-patel/status", {"status": "offline"})
    wait_for("node B's view of the cap", lambda: b.get("/api/v1/readers/dr-patel").get(
        "available_now") is False, 15, 0.2)
    time.sleep(5.5)  # node B's cache has lee's new cap too
    claims = []

    def claimer(node):
        for r in pool:
            st, _ = node.api("POST", "/api/v1/reads/%d/claim" % r["id"], {"reader": "dr-lee"})
            claims.append(st)

    for r in pool:
        (a, b)[r["id"] % 2].api("POST", "/api/v1/reads/%d/release" % r["id"], {})
    threads = [threading.Thread(target=claimer, args=(node,)) for node in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    time.sleep(3)
    held = [x for x in reads_of(a) if x["study_uid"] in uids and x["assignee"] == "dr-lee" and
            x["state"] in ("assigned", "claimed")]
    ck.check(len(held) == 2, "dr-lee's cap of 2 holds with both routers and claims through both "
             "nodes at once: %d held, %d claims won" % (len(held), claims.count(200)),
             str([(x["id"], x["state"]) for x in held]))


# ---- part: demo -------------------------------------------------------------------------------

def part_demo(ck, telerad, work):
    srv = Telerad(telerad, work, "demo", "--demo").start()
    try:
        reads = wait_for("9 routed demo reads", lambda: (lambda rs: rs if len(rs) == 9 and all(
            r["state"] == "assigned" for r in rs) else None)(reads_of(srv)), 90)
        ck.check(reads and len(reads) == 9, "--demo: 9 reads appear and all route",
                 str([(r["id"], r["state"]) for r in reads_of(srv)]))
        site_docs, reader_docs, _, _ = catalog_of(srv)
        ck.check(len(site_docs) == 3 and len(reader_docs) == 5,
                 "--demo: 3 sites and 5 readers through the API")
        bad = []
        for r in reads or []:
            d = srv.get("/api/v1/reads/%d/routing" % r["id"])["decision"]
            v, reason = verdict(reader_docs[r["assignee"]], site_docs[r["site"]],
                                r["subspecialty"], 0, iso_to_s(d["decided_at"]), cap=False)
            if v != "eligible":
                bad.append("%d -> %s: %s" % (r["id"], r["assignee"], reason))
        ck.check(reads and not bad, "--demo: every read went to an eligible reader", str(bad))
        wl = srv.get("/api/v1/worklist?reader=dr-lee")
        ck.check(wl["items"], "--demo: dr-lee has a live worklist (%d items)" % len(wl["items"]))
        st, _ = srv.api("GET", "/metrics")
        ck.check(st == 200, "--demo: /metrics answers")
    finally:
        code = srv.stop()
        ck.check(code == 0, "demo: server stopped cleanly (exit %s)" % code)
        reports = srv.sanitizer_reports()
        ck.check(not reports, "demo: no sanitizer reports", "\n".join(reports[:10]))
    # A second start with --demo seeds nothing more.
    srv = Telerad(telerad, work, "demo", "--demo", data=srv.data).start()
    try:
        time.sleep(3)
        ck.check(len(reads_of(srv)) == 9, "--demo again on the same data: nothing seeded twice")
    finally:
        srv.stop()


# ---- main -------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("telerad")
    ap.add_argument("--part", default="all",
                    choices=["scenario", "random", "clocks", "postgresql", "demo", "all"])
    ap.add_argument("--pg-url-file")
    ap.add_argument("--reads", type=int, default=1080)
    ap.add_argument("--seed", type=int, default=int(os.environ.get("TELERAD_FLOW_SEED", "0"))
                    or int(time.time()))
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    telerad = os.path.abspath(args.telerad)
    if not os.access(telerad, os.X_OK):
        skip("no telerad binary at %s" % telerad)
    need_programs("storescu")
    try:
        import numpy  # noqa: F401
        import pydicom  # noqa: F401
    except ImportError:
        skip("gen_study.py needs python3-pydicom and python3-numpy")
    if not os.path.exists(GEN_STUDY):
        skip("no %s" % GEN_STUDY)
    work = tempfile.mkdtemp(prefix="telerad-flow-", dir=os.environ.get("TMPDIR", "/tmp"))
    ck = Checks("flow %s" % args.part)
    print("work folder %s, seed %d" % (work, args.seed), flush=True)
    parts = ["scenario", "random", "clocks", "demo", "postgresql"] if args.part == "all" \
        else [args.part]
    try:
        for part in parts:
            print("== %s" % part, flush=True)
            try:
                if part == "scenario":
                    part_scenario(ck, telerad, work)
                elif part == "random":
                    part_random(ck, telerad, work, args.reads, args.seed)
                elif part == "clocks":
                    part_clocks(ck, telerad, work)
                elif part == "postgresql":
                    part_postgresql(ck, telerad, work, args.pg_url_file)
                elif part == "demo":
                    part_demo(ck, telerad, work)
            except SystemExit:
                raise
            except Exception as e:  # a crash of the test is a failure with its reason
                import traceback
                traceback.print_exc()
                ck.check(False, "%s: %s" % (part, e))
    finally:
        if ck.failed or args.keep:
            print("kept %s" % work, flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    ck.finish()


if __name__ == "__main__":
    main()
