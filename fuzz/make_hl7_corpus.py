#!/usr/bin/python3
"""make_hl7_corpus.py - write the seed corpus of the fuzz_hl7 target: HL7 v2 messages as
hospitals send them (every name and number is invented).

    /usr/bin/python3 fuzz/make_hl7_corpus.py [OUTDIR]        (default: fuzz/corpus/hl7)

Seeds (seg_* are written with CR between segments, as the standard says; a few use LF or
CR LF, as files and some interface engines do):
  orm_o01_*   new order / cancel / status change (v2.3.1 and v2.5.1, ORC-7 and OBR-27
              quantity-timing priority), several orders in one message
  omi_o23_*   imaging order with TQ1 priority and IPC accession (IHE RAD-4, v2.5.1)
  adt_a08_*   patient information update; adt_a40_* patient merge (PID + MRG)
  oru_r01_*   a report with escapes (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\.br\\ \\X..\\ \\H\\ \\N\\) and
              repetitions, as the delivery writes
  ack_*       ACK with MSA and ERR
  cs_*        MSH-18: 8859/1 bytes, UNICODE UTF-8, an empty MSH-18 with UTF-8
  v27_*       v2.7 with the truncation character (MSH-2 = ^~\\&#, \\P\\)
  odd_*       other separators, a batch (FHS/BHS/BTS/FTS), a byte order mark, trailing
              empty fields and segments

The output is deterministic; inputs merged into the corpus by fuzzing have other names and are
left alone (fuzz/run.sh describes merging).
"""
import os
import sys

MSH = "MSH|^~\\&|{app}|{fac}|TELERAD|TELERAD|20261122103000||{type}|{id}|P|{ver}"

SEEDS = {
    "orm_o01_new_v231": [
        MSH.format(app="HIS", fac="TXGEN_HIS", type="ORM^O01", id="MSG00001", ver="2.3.1"),
        "PID|1||MRN12345^^^TXGEN^MR~998877^^^SSA^SS||DEMO^JANE^Q^^MRS||19800101|F|||"
        "1 MAIN ST^^AUSTIN^TX^78701||(512)555-0100",
        "PV1|1|E|ED^01^01||||1234^WELBY^MARCUS^^^DR|||||||||||V0001",
        "ORC|NW|ORD1001^HIS|ACC2001^RIS||SC||^^^20261122103000^^S||20261122103000|||"
        "1234^WELBY^MARCUS^^^DR",
        "OBR|1|ORD1001^HIS|ACC2001^RIS|CTHEAD^CT HEAD WO CONTRAST^L|||20261122102500|||||||"
        "|1234^WELBY^MARCUS^^^DR||||||||CT|||^^^20261122103000^^S",
        "NTE|1||Code stroke: last known well 09:40",
    ],
    "orm_o01_cancel_v251": [
        MSH.format(app="HIS", fac="TXGEN_HIS", type="ORM^O01^ORM_O01", id="MSG00002",
                   ver="2.5.1"),
        "PID|1||MRN12345^^^TXGEN^MR||DEMO^JANE",
        "ORC|CA|ORD1001^HIS|ACC2001^RIS||CA",
        "OBR|1|ORD1001^HIS|ACC2001^RIS|CTHEAD^CT HEAD WO CONTRAST^L",
    ],
    "orm_o01_status_two_orders": [
        MSH.format(app="HIS", fac="LONROYAL", type="ORM^O01", id="MSG00003", ver="2.4"),
        "PID|1||L-555^^^LRI^MR||DEMO^JOHN^^^^^L",
        "ORC|SC|P-77|F-88||IP||^^^^^R",
        "OBR|1|P-77|F-88|XRCH^XR CHEST 2 VIEWS^LRI||||||||||||9^WHO^DR||||||||DX|||^^^^^R",
        "ORC|NW|P-78|F-89||SC||^^^^^A",
        "OBR|2|P-78|F-89|MRBR^MR BRAIN W WO^LRI|A",
    ],
    "omi_o23_ihe": [
        MSH.format(app="RIS", fac="TXGEN", type="OMI^O23^OMI_O23", id="OMI-42", ver="2.5.1")
        + "||||||UNICODE UTF-8",
        "PID|1||MRN777^^^TXGEN&1.2.3.4&ISO^MR||DEMO^ÉMILE^^^^^L||19700304|M",
        "PV1|1|I|W3^12^A",
        "ORC|NW|PL-9|FL-9||SC|||||||5678^HOUSE^GREGORY",
        "TQ1|1||||||20261122110000||S^Stat^HL70078",
        "OBR|1|PL-9|FL-9|CTA^CTA CHEST PE PROTOCOL^L|||||||||||||||||||CT",
        "IPC|ACC-IPC-9|RP-1|1.2.840.99.1.2.3|SPS-1|CT",
    ],
    "adt_a08": [
        MSH.format(app="ADT", fac="TXGEN_HIS", type="ADT^A08^ADT_A01", id="ADT-8", ver="2.5.1"),
        "EVN|A08|20261122104000",
        "PID|1||MRN12345^^^TXGEN^MR||DEMO^JANET^Q||19800101|F",
        "PV1|1|I|W3^12^A",
    ],
    "adt_a40_merge": [
        MSH.format(app="ADT", fac="TXGEN_HIS", type="ADT^A40^ADT_A39", id="ADT-40", ver="2.5.1"),
        "EVN|A40|20261122104500",
        "PID|1||MRN99999^^^TXGEN^MR||DEMO^JANE^Q",
        "MRG|MRN12345^^^TXGEN^MR",
        "PID|2||MRN99999^^^TXGEN^MR||DEMO^JANE^Q",
        "MRG|MRN12346^^^TXGEN^MR|||MRN12346",
    ],
    "oru_r01_escapes": [
        MSH.format(app="TELERAD", fac="TELERAD", type="ORU^R01^ORU_R01", id="R-1", ver="2.5.1"),
        "PID|1||MRN12345^^^TXGEN^MR||O'DEMO^JANE",
        "ORC|RE|ORD1001|ACC2001",
        "OBR|1|ORD1001|ACC2001|CTHEAD^CT HEAD^L|||20261122102500|||||||||||||||20261122113000"
        "||CT|F",
        "OBX|1|FT|IMPRESSION^Impression||No acute hemorrhage.\\.br\\Pipe \\F\\ caret \\S\\ amp "
        "\\T\\ tilde \\R\\ backslash \\E\\.\\.br\\\\H\\Critical\\N\\: none.||||||F",
        "OBX|2|TX|FINDINGS||Line one~Line two \\X0D0A\\ hex \\XC3A9\\ \\.sp 2\\end||||||F",
        "OBX|3|ED|PDF^Report||^application^pdf^Base64^JVBERi0xLjQK||||||F",
    ],
    "ack_aa": [
        "MSH|^~\\&|TELERAD|TELERAD|HIS|TXGEN_HIS|20261122103001||ACK^O01^ACK|TR1|P|2.5.1",
        "MSA|AA|MSG00001",
    ],
    "ack_ae_err": [
        "MSH|^~\\&|TELERAD|TELERAD|HIS|TXGEN_HIS|20261122103001||ACK^O01^ACK|TR2|P|2.5.1",
        "MSA|AE|MSG00009|required field missing: OBR-4",
        "ERR||OBR^1^4|101^Required field missing^HL70357|E||||OBR-4 (procedure) is empty",
    ],
    "cs_latin1": [
        (MSH.format(app="HIS", fac="HOPITAL", type="ADT^A08", id="L1", ver="2.5")
         + "||||||8859/1").encode("latin-1"),
        "PID|1||F-1^^^HOP^MR||MÜLLER^FRANÇOIS^^^^^L".encode("latin-1"),
    ],
    "cs_utf8_empty_msh18": [
        MSH.format(app="HIS", fac="GZFIRST", type="ORM^O01", id="U1", ver="2.5"),
        "PID|1||GZ-1^^^GZ^MR||张^伟",
        "ORC|NW|GZP1|GZF1",
        "OBR|1|GZP1|GZF1|CTCH^胸部CT",
    ],
    "v27_truncation": [
        "MSH|^~\\&#|HIS|TXGEN_HIS|TELERAD|TELERAD|20261122103000||OMI^O23^OMI_O23|V27-1|P|2.7",
        "PID|1||MRN12345^^^TXGEN^MR||DEMO^JANE#",
        "ORC|NW|P1|F1",
        "OBR|1|P1|F1|CT^CT WITH \\P\\ SIGN",
    ],
    "odd_separators": [
        "MSH$@*!%$HIS$TXGEN_HIS$TELERAD$TELERAD$20261122103000$$ORM@O01$ODD-1$P$2.3",
        "PID$1$$MRN1@@@TXGEN@MR*MRN2$$DEMO@JANE",
        "ORC$NW$P1$F1",
        "OBR$1$P1$F1$CT@CT HEAD !T! ANGIO$",
    ],
}

LF_SEEDS = {
    "odd_lf_trailing_empty": [
        MSH.format(app="HIS", fac="TXGEN_HIS", type="ORM^O01", id="LF-1", ver="2.3") + "|||",
        "PID|1||MRN1||\"\"|",
        "ORC|NW|P1|F1||||||||||",
        "OBR|1|P1|F1|CT^CT|",
        "",
        "",
    ],
}

CRLF_SEEDS = {
    "odd_batch_crlf": [
        "FHS|^~\\&|HIS|TXGEN_HIS|||20261122",
        "BHS|^~\\&|HIS|TXGEN_HIS|||20261122",
        MSH.format(app="HIS", fac="TXGEN_HIS", type="ADT^A08", id="B-1", ver="2.3"),
        "PID|1||MRN1||DEMO^A",
        MSH.format(app="HIS", fac="TXGEN_HIS", type="ADT^A08", id="B-2", ver="2.3"),
        "PID|1||MRN2||DEMO^B",
        "BTS|2",
        "FTS|1",
    ],
}


def join(segments, sep):
    parts = [s if isinstance(s, bytes) else s.encode("utf-8") for s in segments]
    return sep.join(parts) + (sep if parts and parts[-1] else b"")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus", "hl7")
    os.makedirs(out, exist_ok=True)
    files = {}
    for name, segs in SEEDS.items():
        files["seg_" + name] = join(segs, b"\r")
    for name, segs in LF_SEEDS.items():
        files["seg_" + name] = join(segs, b"\n")
    for name, segs in CRLF_SEEDS.items():
        files["seg_" + name] = join(segs, b"\r\n")
    files["seg_odd_bom"] = b"\xef\xbb\xbf" + files["seg_ack_aa"]
    for name, data in sorted(files.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"{len(files)} seeds in {out}")


if __name__ == "__main__":
    main()
