#!/usr/bin/python3
"""Reports and the delivery of results, end to end against `telerad serve`:

1. Reports and delivery (no accounts): a study arrives from a site whose "results" name an
   MLLP receiver, a FHIR server and a PACS; its reader drafts, signs a preliminary, a final and
   an addendum (the signing rules refused along the way, validation errors name the field).
   The receiver ACKs AA, then AE twice and drops the connection once (retried, the AE shown by
   the API), then AR (rejected, shown, retried by an administrator). The ORUs are checked with
   python3-hl7 (MSH, PID, OBR-3 accession, OBR-25 P/F/C, the report text unescaped, the PDF in
   OBX ED); each version reaches the receiver once (one accepted MSH-10 per version). The FHIR
   resources are checked for their R4 required elements and their references resolve; the SR
   and the Encapsulated PDF pass dciodvfy and come back through QIDO-RS / WADO-RS; pdftotext
   finds the impression in the PDF; the PACS receives both objects.
2. Critical results: one not acknowledged in time is escalated (webhook, history), one
   acknowledged in time is not.
3. Exactly once across a crash: the server is killed (SIGKILL) while the receiver holds an
   ORU unanswered, and started again: the ORU is sent again with the same MSH-10 and
   acknowledged once; the receiver stopped during delivery and started again receives the
   next version once.
4. With accounts: only the assignee signs (another reader and the administrator are
   refused); only the site's users acknowledge its critical results; site users see signed
   versions only.

Usage: delivery.py TELERAD   (TELERAD_TEST_INDEX_URL=postgresql://... for scenarios 1-3 on
PostgreSQL; TELERAD_TEST_KEEP=DIR keeps logs and objects)
"""
import base64
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from rep_common import (Checks, Client, HttpRecorder, MllpReceiver, Server, StoreScp,  # noqa
                        dciodvfy, hl7_field, make_study, multipart_parts, need, skip,
                        storescu, wait_for)

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
PDF_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"
IMPRESSION = "Acute infarct | left MCA ^ territory & more ~ see \\ notes\nSecond line: no bleed"


def prerequisites():
    need("storescu", "storescp", "dciodvfy", "pdftotext")
    try:
        import pydicom  # noqa: F401
        import hl7  # noqa: F401
    except ImportError as e:
        skip("%s (Debian packages python3-pydicom, python3-hl7)" % e)


def config(workdir, webhook_port, name="telerad.conf", extra=""):
    path = os.path.join(workdir, name)
    with open(path, "w") as f:
        f.write("[flow]\nwebhook_url = http://127.0.0.1:%d/hook\n\n"
                "[reports]\norganization = Test Reading Group\ncritical_ack_seconds_1 = 3\n"
                "critical_ack_seconds_2 = 3600\nretry_seconds = 1\nretry_max_seconds = 2\n"
                "ack_timeout = 3\nmax_attempts = 30\n%s" % (webhook_port, extra))
    return path


def site_doc(site_id, ae, results):
    return {"id": site_id, "name": "Hospital " + site_id, "jurisdiction": "US-TX",
            "timezone": "America/Chicago", "ae_titles": [ae], "results": results}


def reader_doc(reader_id, name, sites):
    return {"id": reader_id, "name": name, "status": "online", "timezone": "America/Chicago",
            "licenses": [{"jurisdiction": "US-TX", "expires": "2099-01-01"}],
            "privileges": [{"site": s, "expires": "2099-01-01"} for s in sites], "max_open": 50}


def arrive(c, server, workdir, ae, name, accession, description, body_part,
           patient="Müller^Jürgen", modality="CT"):
    """Send a study as `ae`; return (read id, study uid) once the read exists."""
    study, files = make_study(os.path.join(workdir, name), name.upper(), patient, accession,
                              description, body_part, modality)
    rc, out = storescu(server.dicom_port, ae, files)
    if rc != 0:
        raise RuntimeError("storescu: " + out)

    def read():
        r = c.get("/api/v1/reads?study_uid=" + study)
        return r.status == 200 and r.json() and r.json()[0]["id"]
    rid = wait_for(read, 60)
    if not rid:
        raise RuntimeError("no read for study %s: %s" % (study, server.log_text()[-2000:]))
    return rid, study


def take(c, rid, reader):
    """Make `reader` the assignee and claim (as an administrator names the reader)."""
    r = c.post("/api/v1/reads/%d/reassign" % rid, {"reader": reader})
    if r.status != 200:
        raise RuntimeError("reassign: %r" % r)
    r = c.post("/api/v1/reads/%d/claim" % rid, {"reader": reader})
    if r.status != 200:
        raise RuntimeError("claim: %r" % r)


def deliveries(c, rid):
    r = c.get("/api/v1/reads/%d/deliveries" % rid)
    return r.json() if r.status == 200 else []


def all_delivered(c, rid, count):
    d = deliveries(c, rid)
    return len(d) == count and all(x["state"] == "delivered" for x in d) and d


def field_of(body):
    try:
        return body.json().get("field")
    except ValueError:
        return None


# ---- 1. reports and delivery ---------------------------------------------------------------------

def reports_and_delivery(ck, telerad, workdir):
    import hl7
    import pydicom
    hook = HttpRecorder()
    fhir = HttpRecorder(status=200)
    mllp = MllpReceiver().start()
    pacs = StoreScp(workdir)
    # TELERAD_TEST_INDEX_URL: run on that PostgreSQL database instead of SQLite.
    index = os.environ.get("TELERAD_TEST_INDEX_URL")
    server = Server(telerad, workdir, "--no-auth", "--stable-after", "1", "--config",
                    config(workdir, hook.port), *(["--index", index] if index else []),
                    name="one").start()
    try:
        c = Client(server.http_port)
        results = {"hl7": "127.0.0.1:%d" % mllp.port, "hl7_receiver": "RIS^SITEA",
                   "fhir": "http://127.0.0.1:%d/fhir" % fhir.port,
                   "dicom": "%s@127.0.0.1:%d" % (pacs.aet, pacs.port)}
        ck.check(c.post("/api/v1/sites", site_doc("site-a", "SITEA", results)).status == 201,
                 "site with results endpoints")
        for rid_, name in (("dr-a", "Dr Ada Reader"), ("dr-b", "Dr Bo Other")):
            c.post("/api/v1/readers", reader_doc(rid_, name, ["site-a"]))

        # Templates
        r = c.get("/api/v1/templates")
        ids = [t["id"] for t in r.json()] if r.status == 200 else []
        ck.check(all(t in ids for t in ("ct-head", "ct-chest-pe", "ct-abdomen-pelvis",
                                        "mr-brain", "xr-chest")), "templates shipped", ids)
        for q, want in (("modality=CT&description=CT%20HEAD%20WO", "ct-head"),
                        ("modality=CT&description=CTA%20CHEST%20PE%20PROTOCOL", "ct-chest-pe"),
                        ("modality=CT&description=CT%20ABDOMEN%20PELVIS", "ct-abdomen-pelvis"),
                        ("modality=MR&description=MR%20BRAIN%20W%20WO", "mr-brain"),
                        ("modality=DX&description=XR%20CHEST%202%20VIEWS", "xr-chest"),
                        ("modality=US&description=US%20THYROID", "generic")):
            r = c.get("/api/v1/templates?" + q)
            got = r.json()[0]["id"] if r.status == 200 and r.json() else None
            ck.check(got == want, "template for %s is %s" % (q, want), got)
        t = c.get("/api/v1/templates/ct-head").json()
        ck.check([s["key"] for s in t["sections"]] == ["clinical_information", "technique",
                                                       "comparison", "findings", "impression"],
                 "template sections", t.get("sections"))

        mllp.script = ["AA", "AE", "AE", "DROP", "AA", "AR"]
        rid, study = arrive(c, server, workdir, "SITEA", "p1", "ACC-0001", "CT HEAD WO CONTRAST",
                            "HEAD")
        take(c, rid, "dr-a")

        # Drafts and validation (422 naming the field)
        base = "/api/v1/reads/%d" % rid
        for body, field in (({"sections": {"bogus": "x"}}, "sections.bogus"),
                            ({"sections": {"findings": 3}}, "sections.findings"),
                            ({"template": "nope"}, "template"),
                            ({"critical": {"category": 5}}, "critical.category"),
                            ({"colour": "red"}, "colour")):
            r = c.post(base + "/report", body)
            ck.check(r.status == 422 and field_of(r) == field, "422 names %s" % field, r)
        r = c.post(base + "/report/sign", {"kind": "preliminary"})
        ck.check(r.status == 409, "nothing to sign before a draft: 409", r)
        r = c.post(base + "/report", {"sections": {"clinical_information": "Sudden aphasia.",
                                                   "impression": "Preliminary: " + IMPRESSION}})
        ck.check(r.status == 200 and r.json()["kind"] == "draft" and
                 r.json()["template"] == "ct-head" and
                 r.json()["sections"]["technique"].startswith("Axial CT"),
                 "draft saved from the exam's template", r)
        r = c.post(base + "/report", {"reader": "dr-b", "sections": {"findings": "x"}})
        ck.check(r.status == 403, "another reader cannot write the draft", r)
        r = c.post(base + "/report/sign", {"kind": "preliminary", "reader": "dr-b"})
        ck.check(r.status == 403, "another reader cannot sign", r)
        r = c.post(base + "/report/sign", {"kind": "addendum"})
        ck.check(r.status == 422 and field_of(r) == "kind", "sign kind validated", r)
        r = c.post(base + "/addenda", {"text": "too early"})
        ck.check(r.status == 409, "no addendum before the final", r)
        r = c.post(base + "/report/sign", {"kind": "preliminary"})
        ck.check(r.status == 201 and r.json()["kind"] == "preliminary" and
                 r.json()["signed_by"] == "dr-a" and r.json()["signer_name"] == "Dr Ada Reader",
                 "preliminary signed by the assignee", r)
        prelim = r.json().get("id") if r.status == 201 else None
        rd = c.get(base).json()
        ck.check(rd["state"] == "preliminary" and rd["clocks"]["preliminary"],
                 "read is preliminary", rd.get("state"))
        ck.check(c.post(base + "/report/sign", {"kind": "preliminary"}).status == 409,
                 "a second preliminary is refused")
        r = c.post(base + "/report", {"sections": {"impression": IMPRESSION,
                                                   "findings": "Hypodensity, left MCA.\n\nNo haemorrhage."}})
        ck.check(r.status == 200 and r.json()["kind"] == "draft" and r.json()["version"] == 2,
                 "new draft after the preliminary is version 2", r)
        # The AE window: the preliminary was ACKed AA; the final gets AE, AE, a dropped
        # connection, then AA.
        r = c.post(base + "/report/sign", {"kind": "final"})
        ck.check(r.status == 201 and r.json()["kind"] == "final", "final signed", r)
        final = r.json().get("id") if r.status == 201 else None
        ck.check(c.get(base).json()["state"] == "final", "read is final")
        ck.check(c.post(base + "/report", {"sections": {"findings": "x"}}).status == 409,
                 "no draft after the final")
        ck.check(c.post(base + "/report/sign", {"kind": "final"}).status == 409,
                 "a second final is refused")

        def ae_seen():
            for d in deliveries(c, rid):
                if d["target"] == "hl7" and d["report_version"] == final and \
                        (d.get("last_ack") or "").startswith("AE"):
                    return d
        d = wait_for(ae_seen, 30, 0.05)
        ck.check(d and d["state"] == "pending" and "AE" in (d.get("last_error") or ""),
                 "an AE is shown by the API, the delivery pending", d)

        r = c.post(base + "/addenda", {"text": "Addendum: CTA shows M1 occlusion."})
        ck.check(r.status == 201 and r.json()["kind"] == "addendum", "addendum signed", r)
        addendum = r.json().get("id") if r.status == 201 else None

        def rejected():
            for d in deliveries(c, rid):
                if d["target"] == "hl7" and d["report_version"] == addendum and \
                        d["state"] == "rejected":
                    return d
        d = wait_for(rejected, 60)
        ck.check(d and (d.get("last_ack") or "").startswith("AR"),
                 "an AR rejects the delivery, shown by the API", d)
        hist = [e["kind"] for e in c.get(base).json().get("history", [])]
        ck.check("report_rejected" in hist, "the rejection is in the read's history", hist)
        if d:
            r = c.post("/api/v1/deliveries/%d/retry" % d["id"])
            ck.check(r.status == 202, "an administrator retries a rejected delivery", r)
        ok = wait_for(lambda: all_delivered(c, rid, 15), 90)
        ck.check(ok, "every version delivered to every target (archive SR, PDF, HL7, FHIR, "
                     "DICOM)", deliveries(c, rid))

        # The ORUs: one accepted MSH-10 per version, each with its status.
        msgs = mllp.received()
        per_version = {}
        for d in deliveries(c, rid):
            if d["target"] == "hl7":
                per_version[d["report_version"]] = "TR%d" % d["id"]
        ck.check(len(set(mllp.accepted) & set(per_version.values())) == 3,
                 "three versions, three accepted control ids", list(mllp.accepted))
        final_msgs = [m for m in msgs if m[1] == per_version.get(final)]
        ck.check([m[2] for m in final_msgs] == ["AE", "AE", "DROP", "AA"],
                 "the final was retried after AE, AE and a dropped connection, with the same "
                 "MSH-10", [m[2] for m in final_msgs])
        statuses = {}
        for version, control in per_version.items():
            text = mllp.accepted.get(control)
            if not text:
                continue
            m = hl7.parse(text)
            statuses[version] = str(m.segment("OBR")[25])
            ck.check(str(m.segment("MSH")[9]) == "ORU^R01^ORU_R01" and
                     str(m.segment("MSH")[12]) == "2.5.1" and
                     str(m.segment("MSH")[18]) == "UNICODE UTF-8",
                     "MSH of version %d" % version, str(m.segment("MSH"))[:200])
            ck.check(str(m.segment("OBR")[3]) == "ACC-0001" and
                     str(m.segment("ORC")[1]) == "RE",
                     "accession in OBR-3 (version %d)" % version, str(m.segment("OBR"))[:200])
            ck.check(m.unescape(str(m.segment("PID")[5])) == "Müller^Jürgen" and
                     str(m.segment("PID")[3][0][0]) == "P1",
                     "PID with the real identifiers in UTF-8", str(m.segment("PID")))
            obx = {str(s[3][0][0]): s for s in m.segments("OBX")}
            imp = obx.get("19005-8")
            want = (IMPRESSION if version != prelim else "Preliminary: " + IMPRESSION)
            ck.check(imp is not None and m.unescape(str(imp[5])).replace("\r", "\n") == want and
                     str(imp[2]) == "FT",
                     "impression OBX unescaped equals the text (version %d)" % version,
                     imp and str(imp[5]))
            ck.check(imp is not None and "\\F\\" in str(imp[5]) and "\\S\\" in str(imp[5]) and
                     "\\T\\" in str(imp[5]) and "\\R\\" in str(imp[5]) and
                     "\\E\\" in str(imp[5]), "separators escaped in OBX-5", imp and str(imp[5]))
            ed = obx.get("18748-4")
            pdf = base64.b64decode(str(ed[5][0][4])) if ed is not None else b""
            ck.check(ed is not None and str(ed[2]) == "ED" and pdf.startswith(b"%PDF"),
                     "the PDF in OBX ED, base64 (version %d)" % version)
            if version == addendum:
                ck.check("55107-7" in obx, "the addendum has its OBX")
        ck.check(statuses == {prelim: "P", final: "F", addendum: "C"},
                 "OBR-25 is P, F, C for preliminary, final, addendum", statuses)

        # FHIR under /fhir/
        r = c.get("/fhir/DiagnosticReport/%d" % rid)
        dr = r.json() if r.status == 200 else {}
        ck.check(r.status == 200 and (r.header("content-type") or "").startswith(
            "application/fhir+json"), "DiagnosticReport readable as application/fhir+json", r)
        ck.check(dr.get("resourceType") == "DiagnosticReport" and dr.get("status") == "appended"
                 and dr.get("code", {}).get("coding", [{}])[0].get("code") == "18748-4" and
                 dr["code"]["coding"][0].get("system") == "http://loinc.org",
                 "DiagnosticReport: status and code (R4 required)", dr.get("status"))
        ck.check(dr.get("subject", {}).get("identifier", {}).get("value") == "P1" and
                 dr.get("issued") and dr.get("conclusion") == IMPRESSION,
                 "DiagnosticReport: subject, issued, conclusion")
        forms = {f.get("contentType"): f for f in dr.get("presentedForm", [])}
        ck.check("application/pdf" in forms and base64.b64decode(
            forms["application/pdf"]["data"]).startswith(b"%PDF"), "presentedForm has the PDF")
        for ref in [x["reference"] for x in dr.get("imagingStudy", []) + dr.get("basedOn", [])]:
            r = c.get("/fhir/" + ref)
            res = r.json() if r.status == 200 else {}
            need_fields = {"ImagingStudy": ("status", "subject"),
                           "ServiceRequest": ("status", "intent", "subject")}[ref.split("/")[0]]
            ck.check(r.status == 200 and res.get("resourceType") == ref.split("/")[0] and
                     all(res.get(k) for k in need_fields), "reference %s resolves with %s" %
                     (ref, ", ".join(need_fields)), r)
        r = c.get("/fhir/ImagingStudy/%d" % rid).json()
        ck.check(any(i.get("value") == "urn:oid:" + study for i in r.get("identifier", [])),
                 "ImagingStudy names the Study Instance UID")
        r = c.get("/fhir/DiagnosticReport/%d/_history/1" % rid)
        ck.check(r.status == 200 and r.json().get("status") == "preliminary",
                 "version 1 of the DiagnosticReport is preliminary", r)
        r = c.get("/fhir/metadata")
        ck.check(r.status == 200 and r.json().get("fhirVersion") == "4.0.1",
                 "CapabilityStatement")
        bundles = [b for b in fhir.bodies if b[2] and b[2].get("resourceType") == "Bundle"]
        ck.check(len(bundles) == 3 and all(
            b[1].startswith("application/fhir+json") and b[2]["type"] == "transaction" and
            [e["request"]["method"] for e in b[2]["entry"]] == ["PUT"] * 3 for b in bundles),
            "three transaction Bundles POSTed to the site's FHIR server", len(bundles))

        # DICOM SR and Encapsulated PDF: QIDO-RS, WADO-RS, dciodvfy
        r = c.get("/dicom-web/studies/%s/series" % study, headers={"Accept": "application/dicom+json"})
        series = {s["0020000E"]["Value"][0]: s["00080060"]["Value"][0] for s in r.json()} \
            if r.status == 200 else {}
        ck.check(sorted(series.values()) == ["CT", "DOC", "SR"], "QIDO-RS shows the SR and PDF "
                                                                  "series", series)
        objects = {}
        for uid, modality in series.items():
            if modality == "CT":
                continue
            r = c.get("/dicom-web/studies/%s/series/%s" % (study, uid),
                      headers={"Accept": 'multipart/related; type="application/dicom"'})
            parts = multipart_parts(r.header("content-type"), r.body) if r.status == 200 else []
            objects[modality] = parts
            ck.check(len(parts) == 3, "WADO-RS retrieves three %s objects" % modality, r)
        import io
        for modality, parts in objects.items():
            for i, blob in enumerate(parts):
                path = os.path.join(workdir, "%s-%d.dcm" % (modality, i))
                with open(path, "wb") as f:
                    f.write(blob)
                errors, out = dciodvfy(path)
                ds = pydicom.dcmread(io.BytesIO(blob))
                ck.check(not errors, "dciodvfy: no errors in %s %d (%s)" % (
                    modality, i, ds.get("CompletionFlag", ds.get("DocumentTitle", ""))),
                    "\n".join(errors) + "\n" + out[-1500:])
                if modality == "SR":
                    ck.check(ds.SOPClassUID == SR_CLASS and
                             ds.ConceptNameCodeSequence[0].CodeValue == "18748-4" and
                             ds.ConceptNameCodeSequence[0].CodingSchemeDesignator == "LN" and
                             ds.ContentTemplateSequence[0].TemplateIdentifier == "2000",
                             "Basic Text SR, TID 2000, 18748-4")
                    texts = []

                    def walk(items):
                        for it in items:
                            if it.ValueType == "TEXT":
                                texts.append(it.TextValue)
                            walk(it.get("ContentSequence", []))
                    walk(ds.ContentSequence)
                    ck.check(any(IMPRESSION in t for t in texts),
                             "the SR's TEXT items hold the impression (%s)" %
                             ds.get("PreliminaryFlag"), texts[:3])
                    ck.check(ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID
                             == study and ds.ReferencedRequestSequence[0].AccessionNumber ==
                             "ACC-0001", "the SR references the study and the request")
                else:
                    doc = bytes(ds.EncapsulatedDocument)
                    ck.check(ds.SOPClassUID == PDF_CLASS and doc.startswith(b"%PDF") and
                             ds.MIMETypeOfEncapsulatedDocument == "application/pdf",
                             "Encapsulated PDF starts with %PDF")
                    pdf = os.path.join(workdir, "doc-%d.pdf" % i)
                    with open(pdf, "wb") as f:
                        f.write(doc[:int(ds.get("EncapsulatedDocumentLength", len(doc)))])
                    text = subprocess.run(["pdftotext", "-enc", "UTF-8", pdf, "-"],
                                          stdout=subprocess.PIPE).stdout.decode("utf-8")
                    flat = " ".join(text.split())
                    ck.check("left MCA ^ territory & more" in flat and "Jürgen" in flat,
                             "pdftotext finds the impression and the patient", flat[:300])
        flags = sorted(str(pydicom.dcmread(io.BytesIO(b)).get("PreliminaryFlag"))
                       for b in objects.get("SR", []))
        ck.check(flags == ["FINAL", "FINAL", "PRELIMINARY"], "SR flags per version", flags)
        r = c.get("/api/v1/reports/%d/pdf" % final)
        ck.check(r.status == 200 and r.header("content-type") == "application/pdf" and
                 r.body.startswith(b"%PDF"), "GET /api/v1/reports/{id}/pdf", r)
        ck.check(len(pacs.files()) == 6, "the PACS received the SR and the PDF of each version",
                 pacs.files())
        rep = c.get(base + "/report").json()
        ck.check([v["kind"] for v in rep["versions"]] == ["preliminary", "final", "addendum"] and
                 rep["current"]["kind"] == "addendum" and
                 all(len(v["deliveries"]) == 5 for v in rep["versions"]),
                 "GET report lists the versions with their deliveries",
                 [v["kind"] for v in rep.get("versions", [])])
        return server, c, hook, mllp
    except Exception:
        server.stop()
        pacs.stop()
        raise
    finally:
        pacs.stop()


# ---- 2. critical results -------------------------------------------------------------------------

def critical_results(ck, server, c, hook, workdir):
    rid, _ = arrive(c, server, workdir, "SITEA", "p2", "ACC-0002", "CTA CHEST PE PROTOCOL", "CHEST")
    take(c, rid, "dr-a")
    base = "/api/v1/reads/%d" % rid
    r = c.post(base + "/critical", {"category": 4, "finding": "x"})
    ck.check(r.status == 422 and field_of(r) == "category", "422 names category", r)
    r = c.post(base + "/critical", {"category": 1})
    ck.check(r.status == 422 and field_of(r) == "finding", "422 names finding", r)
    r = c.post(base + "/critical", {"category": 1, "finding": "Saddle pulmonary embolism"})
    ck.check(r.status == 201 and r.json()["state"] == "open", "critical result opened", r)
    late = r.json()["id"]
    r = c.post(base + "/critical", {"category": 1, "finding": "Right heart strain"})
    on_time = r.json()["id"]
    r = c.post("/api/v1/critical/%d/ack" % on_time, {"by": "Dr Ed Attending", "method": "fax2"})
    ck.check(r.status == 422 and field_of(r) == "method", "422 names method", r)
    r = c.post("/api/v1/critical/%d/ack" % on_time, {"method": "phone"})
    ck.check(r.status == 422 and field_of(r) == "by", "422 names by", r)
    r = c.post("/api/v1/critical/%d/ack" % on_time, {"by": "Dr Ed Attending", "method": "phone",
                                                     "note": "read back"})
    ck.check(r.status == 200 and r.json()["acknowledgement"]["by"] == "Dr Ed Attending" and
             r.json()["acknowledgement"]["method"] == "phone" and
             not r.json()["acknowledgement"]["late"], "acknowledged in time: who, how, when", r)
    r = c.post("/api/v1/critical/%d/ack" % on_time, {"by": "x", "method": "phone"})
    ck.check(r.status == 409, "a second acknowledgement is refused", r)
    open_ = c.get("/api/v1/critical?state=open").json()
    ck.check(late in [x["id"] for x in open_] and on_time not in [x["id"] for x in open_],
             "GET /critical?state=open", [x["id"] for x in open_])

    def escalated():
        return [b for b in hook.bodies if b[2] and b[2].get("event") == "critical.escalation"
                and b[2].get("critical") == late]
    ev = wait_for(escalated, 20)
    ck.check(ev and ev[0][2]["category"] == 1 and ev[0][2]["read"] == rid,
             "not acknowledged in time: escalation on the webhook", hook.bodies[-3:])
    time.sleep(2)
    ck.check(not [b for b in hook.bodies if b[2] and b[2].get("event") == "critical.escalation"
                  and b[2].get("critical") == on_time],
             "acknowledged in time: no escalation")
    rec = c.get("/api/v1/critical/%d" % late).json()
    ck.check(rec["escalations"] >= 1 and rec["state"] == "open", "the record counts escalations",
             rec)
    hist = [e["kind"] for e in c.get(base).json()["history"]]
    ck.check("critical_result" in hist and "critical_escalated" in hist and
             "critical_acknowledged" in hist, "everything is in the read's history", hist)
    ck.check("escalation" in server.log_text(), "the escalation is logged")
    r = c.post("/api/v1/critical/%d/ack" % late, {"by": "Dr Late", "method": "in_person"})
    ck.check(r.status == 200 and r.json()["acknowledgement"]["late"],
             "a late acknowledgement is recorded as late", r)


# ---- 3. exactly once across a crash --------------------------------------------------------------

def crash_and_restart(ck, telerad, workdir, server, c, mllp):
    rid, _ = arrive(c, server, workdir, "SITEA", "p3", "ACC-0003", "MR BRAIN", "BRAIN")
    take(c, rid, "dr-a")
    base = "/api/v1/reads/%d" % rid
    mllp.script = ["HOLD"]
    c.post(base + "/report", {"sections": {"impression": "No acute abnormality."}})
    r = c.post(base + "/report/sign", {"kind": "preliminary"})
    ck.check(r.status == 201, "preliminary signed", r)
    prelim = r.json()["id"]
    control = None

    def held():
        for m in mllp.received():
            if m[2] == "HOLD":
                return m[1]
    control = wait_for(held, 30)
    ck.check(control, "the receiver holds the ORU unanswered")
    server.kill()
    mllp.release()
    server.start()
    c = Client(server.http_port)

    def done():
        d = [x for x in deliveries(c, rid) if x["target"] == "hl7" and
             x["report_version"] == prelim]
        return d and d[0]["state"] == "delivered" and d[0]
    d = wait_for(done, 60)
    ck.check(d, "after the restart the preliminary is delivered", deliveries(c, rid))
    got = mllp.received(control)
    ck.check([m[2] for m in got] == ["HOLD", "AA"], "sent again after the crash with the same "
                                                   "MSH-10, acknowledged once",
             [m[2] for m in got])

    # The receiver down during delivery, then up again: the final arrives once.
    mllp.stop()
    c.post(base + "/report", {"sections": {"impression": "No acute intracranial abnormality."}})
    r = c.post(base + "/report/sign", {"kind": "final"})
    ck.check(r.status == 201, "final signed while the receiver is down", r)
    final = r.json()["id"]

    def failing():
        d = [x for x in deliveries(c, rid) if x["target"] == "hl7" and
             x["report_version"] == final]
        return d and d[0]["attempts"] >= 2 and d[0]
    d = wait_for(failing, 30)
    ck.check(d and d["state"] == "pending" and d.get("last_error"),
             "attempts fail while the receiver is down, the delivery stays pending", d)
    before = len(mllp.received())
    mllp.start()

    def done_final():
        d = [x for x in deliveries(c, rid) if x["target"] == "hl7" and
             x["report_version"] == final]
        return d and d[0]["state"] == "delivered"
    ck.check(wait_for(done_final, 30), "delivered once the receiver is back")
    time.sleep(3)
    after = mllp.received()[before:]
    ck.check(len(after) == 1 and after[0][2] == "AA" and
             hl7_field(after[0][3], "OBR", 25) == "F", "the receiver got the final exactly once",
             [(m[1], m[2]) for m in after])
    versions = {}
    for m in mllp.received():
        if m[2] == "AA":
            versions.setdefault(m[1], 0)
            versions[m[1]] += 1
    ck.check(all(n == 1 for n in versions.values()), "every MSH-10 acknowledged exactly once",
             versions)
    return server


# ---- 4. accounts ---------------------------------------------------------------------------------

def with_accounts(ck, telerad, workdir):
    hook = HttpRecorder()
    password = "admin-pass-for-tests-1"
    server = Server(telerad, workdir, "--stable-after", "1", "--config",
                    config(workdir, hook.port, "accounts.conf"),
                    env={"TELERAD_ADMIN_PASSWORD": password}, name="accounts").start()
    try:
        anon = Client(server.http_port)
        r = anon.post("/api/v1/auth/login", {"username": "admin", "password": password})
        if r.status != 200:
            ck.check(False, "admin login", r)
            return
        cookie = "; ".join(v.split(";")[0] for k, v in r.raw_headers
                           if k.lower() == "set-cookie")
        session = {"Cookie": cookie, "X-CSRF-Token": r.json().get("csrf", "")}

        def admin_key(user):
            rr = anon.post("/api/v1/api-keys", {"user": user, "label": "tests"}, headers=session)
            if rr.status != 201:
                raise RuntimeError("api key for %s: %r" % (user, rr))
            return rr.json()["key"]
        admin = Client(server.http_port, admin_key("admin"))
        for s, ae in (("site-a", "SITEA"), ("site-b", "SITEB")):
            admin.post("/api/v1/sites", site_doc(s, ae, {}))
        admin.post("/api/v1/readers", reader_doc("dr-a", "Dr Ada Reader", ["site-a"]))
        admin.post("/api/v1/readers", reader_doc("dr-b", "Dr Bo Other", ["site-a"]))
        users = {"ada": {"role": "reader", "reader": "dr-a"},
                 "bob": {"role": "reader", "reader": "dr-b"},
                 "sam": {"role": "site_user", "site": "site-a"},
                 "olga": {"role": "site_user", "site": "site-b"}}
        keys = {}
        for name, u in users.items():
            rr = admin.post("/api/v1/users", dict(u, username=name, password="pw-" + name + "-12345"))
            ck.check(rr.status == 201, "user %s created" % name, rr)
            keys[name] = Client(server.http_port, admin_key(name))
        rid, _ = arrive(admin, server, workdir, "SITEA", "p4", "ACC-0004", "XR CHEST 2 VIEWS",
                        "CHEST", modality="DX")
        take(admin, rid, "dr-a")
        base = "/api/v1/reads/%d" % rid
        ada, bob, sam, olga = keys["ada"], keys["bob"], keys["sam"], keys["olga"]
        r = ada.post(base + "/report", {"sections": {"impression": "No acute abnormality."}})
        ck.check(r.status == 200 and r.json()["template"] == "xr-chest", "the assignee saves a "
                                                                          "draft", r)
        r = bob.post(base + "/report/sign", {"kind": "final"})
        ck.check(r.status in (403, 404), "another reader cannot sign", r)
        r = admin.post(base + "/report/sign", {"kind": "final"})
        ck.check(r.status == 403, "an administrator cannot sign for the reader", r)
        r = sam.post(base + "/report/sign", {"kind": "final"})
        ck.check(r.status == 403, "a site user cannot sign", r)
        r = sam.get(base + "/report")
        ck.check(r.status == 200 and r.json()["versions"] == [],
                 "the site does not see the unsigned draft", r)
        r = olga.get(base + "/report")
        ck.check(r.status == 404, "another site does not see the read", r)
        r = ada.post(base + "/report/sign", {"kind": "final"})
        ck.check(r.status == 201 and r.json()["signed_by"] == "dr-a", "the assignee signs", r)
        r = sam.get(base + "/report")
        ck.check(r.status == 200 and [v["kind"] for v in r.json()["versions"]] == ["final"],
                 "the site sees the signed final", r)
        r = ada.post(base + "/critical", {"category": 2, "finding": "Pneumothorax, right"})
        ck.check(r.status == 201, "the assignee opens a critical result", r)
        cid = r.json()["id"]
        for who, name in ((olga, "a user of another site"), (ada, "the reader"),
                          (bob, "another reader"), (admin, "an administrator")):
            rr = who.post("/api/v1/critical/%d/ack" % cid, {"by": "Nurse X", "method": "phone"})
            ck.check(rr.status in (403, 404), "%s cannot acknowledge" % name, rr)
        r = sam.get("/api/v1/critical?state=open")
        ck.check(r.status == 200 and [x["id"] for x in r.json()] == [cid],
                 "the site lists its open critical results", r)
        ck.check(olga.get("/api/v1/critical?state=open").json() == [],
                 "another site lists none")
        r = sam.post("/api/v1/critical/%d/ack" % cid, {"by": "Dr Ed Attending",
                                                       "method": "secure_message"})
        ck.check(r.status == 200 and r.json()["acknowledgement"]["user"] == "sam",
                 "the site's user acknowledges, recorded with the account", r)
        r = olga.get("/fhir/DiagnosticReport/%d" % rid)
        ck.check(r.status == 404, "FHIR: another site does not see the report", r)
        r = sam.get("/fhir/DiagnosticReport/%d" % rid)
        ck.check(r.status == 200 and r.json()["status"] == "final", "FHIR: the site reads it", r)
    finally:
        server.stop()
        hook.stop()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    telerad = os.path.abspath(sys.argv[1])
    prerequisites()
    ck = Checks("reports_delivery")
    keep = os.environ.get("TELERAD_TEST_KEEP")  # a folder to keep the logs and objects in
    if keep:
        os.makedirs(keep, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="telerad-reports-", dir=keep) as tmp:
        workdir = tmp if not keep else tempfile.mkdtemp(prefix="run-", dir=keep)
        server = None
        mllp = None
        try:
            server, c, hook, mllp = reports_and_delivery(ck, telerad, workdir)
            critical_results(ck, server, c, hook, workdir)
            server = crash_and_restart(ck, telerad, workdir, server, c, mllp)
        except Exception as e:  # a broken step fails the test, with the server's log
            import traceback
            traceback.print_exc()
            ck.check(False, "scenario ran to the end", "%s\n%s" % (
                e, server.log_text()[-3000:] if server else ""))
        finally:
            if server:
                server.stop()
            if mllp:
                mllp.stop()
        try:
            with_accounts(ck, telerad, workdir)
        except Exception as e:
            import traceback
            traceback.print_exc()
            ck.check(False, "accounts scenario ran to the end", e)
    ck.finish()


if __name__ == "__main__":
    main()
