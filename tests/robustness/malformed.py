#!/usr/bin/python3
"""malformed.py - telerad's CLI on malformed and adversarial DICOM files.

    /usr/bin/python3 tests/robustness/malformed.py build/telerad [--jobs N] [--only CATEGORY]
                                                   [--keep DIR] [--strict-tags]

Generates the inputs in a temporary directory and runs `telerad json FILE` and
`telerad dump FILE` on each, in parallel, with a 10 s timeout per run. What the issue promises
for bad input, checked for every run:

  * never a signal (crash, sanitizer abort) and never a hang;
  * exit status 1 with exactly one line on standard error, "telerad: <path>: <message>", and
    for a parse error "at byte N" with N inside the file (or the inflated data set);
  * or exit status 0 - some mutations are still valid files - with nothing on standard error
    and valid output: JSON that parses, a dump that is UTF-8.

Categories:
  truncated  every truncation point (every byte offset) of five small synthetic files:
             implicit VR LE, explicit VR LE, explicit VR BE (with defined and undefined length
             sequences and items, private tags, native pixels), JPEG with encapsulated pixel
             data (offset table, several fragments), and deflated explicit VR LE;
  lengths    every length field of those files (element, item, fragment, meta) set to
             0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFF0, 0x7FFFFFFF, 0x80000000 (for 16-bit lengths
             0xFFFF, 0xFFFE, 0xFFF0, 0x7FFF, 0x8000); the encoder below records where they are;
  nesting    10,000 nested sequences, explicit and implicit VR, defined and undefined
             lengths: must fail with the depth limit (64 levels by default);
  mutations  2,000 seeded (reproducible) random mutations: bit flips, interesting values,
             insertions, deletions, splices of two files;
  bomb       a deflated data set that inflates to 1 GiB of zeros: must fail with the
             inflate limit or succeed, not be killed;
  files      empty file, shorter than 132 bytes, a directory, a nonexistent path.

Exit status 0 when every run behaved, 1 otherwise (each failure printed with the command that
reproduces it; the failing inputs are copied to --keep, default $TMPDIR/telerad-malformed),
77 when telerad is missing (ctest reports it as skipped).

A message without a tag ("in (gggg,eeee)") is counted and shown in the summary: the issue asks
for the tag being read, but where the data ends inside a header there is none to name. With
--strict-tags such messages fail the test.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib

RUN_TIMEOUT = 10          # seconds per telerad run (the issue: no hang)
BOMB_TIMEOUT = 300        # the deflate bomb inflates 1 GiB; under ASan that takes a while
BOMB_MAX_RSS_MIB = 6144   # "succeed within memory": telerad json needs about 3.3 GiB today
NESTING = 10000
MUTATIONS = 2000
SEED = 20240131
DEPTH_LIMIT = 64

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"}
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


# ---- an encoder that remembers where the length fields are ------------------------------------

class Blob:
    """Bytes plus the positions of the length fields in them: (offset, width, big endian)."""

    def __init__(self, data=b"", fields=()):
        self.data = bytes(data)
        self.fields = list(fields)

    def __add__(self, other):
        other = other if isinstance(other, Blob) else Blob(other)
        base = len(self.data)
        return Blob(self.data + other.data,
                    self.fields + [(o + base, w, b) for o, w, b in other.fields])

    def __radd__(self, other):
        return Blob(other) + self


def cat(parts):
    out = Blob()
    for p in parts:
        out = out + p
    return out


class Enc:
    def __init__(self, implicit=False, big=False):
        self.implicit, self.big = implicit, big
        self.order = ">" if big else "<"

    def tag(self, tag):
        return struct.pack(self.order + "HH", tag >> 16, tag & 0xFFFF)

    def length(self, n, width=4):
        return Blob(struct.pack(self.order + ("I" if width == 4 else "H"), n),
                    [(0, width, self.big)])

    def num(self, fmt, *values):
        return struct.pack(self.order + fmt * len(values), *values)

    def header(self, tag, vr, n):
        if self.implicit or tag >> 16 == 0xFFFE:
            return self.tag(tag) + self.length(n)
        if vr in LONG_VRS:
            return self.tag(tag) + vr.encode() + b"\0\0" + self.length(n)
        return self.tag(tag) + vr.encode() + self.length(n, 2)

    def el(self, tag, vr, value, length=None):
        value = value if isinstance(value, Blob) else Blob(value)
        return self.header(tag, vr, len(value.data) if length is None else length) + value

    def item(self, content, undefined=False):
        content = content if isinstance(content, Blob) else Blob(content)
        if undefined:
            return cat([self.tag(ITEM), self.length(UNDEFINED), content, self.tag(ITEM_END),
                        self.length(0)])
        return cat([self.tag(ITEM), self.length(len(content.data)), content])

    def seq(self, tag, items, undefined=False):
        body = cat(items)
        if undefined:
            return self.el(tag, "SQ", body + self.tag(SEQ_END) + self.length(0), UNDEFINED)
        return self.el(tag, "SQ", body)

    def encapsulated(self, tag, fragments):
        body = cat([self.tag(ITEM) + self.length(len(f)) + f for f in fragments])
        return self.el(tag, "OB", body + self.tag(SEQ_END) + self.length(0), UNDEFINED)


def text(s, pad=b" "):
    b = s.encode() if isinstance(s, str) else s
    return b + pad if len(b) % 2 else b


def uid(s):
    return text(s, b"\0")


def meta(ts):
    e = Enc()
    # Only what the reader needs: every byte here is truncated and mutated thousands of times.
    body = cat([e.el(0x00020001, "OB", b"\0\1"), e.el(0x00020010, "UI", uid(ts))])
    return b"\0" * 128 + b"DICM" + e.el(0x00020000, "UL", e.num("I", len(body.data))) + body


def dataset(e, encapsulated=False):
    ref = cat([e.el(0x00081150, "UI", uid("1.2.840.10008.5.1.4.1.1.2")),
               e.el(0x00081155, "UI", uid("1.2.3.4.5"))])
    inner = e.seq(0x00081199, [e.item(ref, True), e.item(ref)], True)
    series = e.seq(0x00081115, [e.item(e.el(0x0020000E, "UI", uid("1.2.3")) + inner)])
    parts = [e.el(0x00080005, "CS", text("ISO_IR 192")),
             e.el(0x00080060, "CS", text("OT")), series,
             e.el(0x00090010, "LO", text("ACME")), e.el(0x00091001, "OB", b"\1\2\3\4"),
             e.el(0x00100010, "PN", text("Müller^Jürgen=山田^太郎".encode())),
             e.el(0x00280010, "US", e.num("H", 2)), e.el(0x00280011, "US", e.num("H", 2)),
             e.el(0x00280100, "US", e.num("H", 16))]
    if encapsulated:
        frags = [struct.pack("<II", 0, 12), b"\xFF\xD8\xFF\xE0" + bytes(6), b"\x55" * 6,
                 b"\xFF\xD9"]
        parts.append(e.encapsulated(0x7FE00010, frags))
    else:
        parts.append(e.el(0x7FE00010, "OW", e.num("H", 1, 2, 3, 4)))
    return cat(parts)


def base_files():
    """The synthetic files the truncation, length and mutation cases start from."""
    le, ile, be = Enc(), Enc(implicit=True), Enc(big=True)
    files = {
        "implicit_le": meta(IMPLICIT_LE) + dataset(ile),
        "explicit_le": meta(EXPLICIT_LE) + dataset(le),
        "explicit_be": meta(EXPLICIT_BE) + dataset(be),
        "jpeg": meta(JPEG_BASELINE) + dataset(le, encapsulated=True),
    }
    raw = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = dataset(le).data
    deflated = meta(DEFLATED_LE)
    files["deflated"] = Blob(deflated.data + raw.compress(body) + raw.flush(), deflated.fields)
    return files


def nested(implicit, undefined, levels=NESTING):
    """`levels` sequences (0008,1115) each holding one item holding the next."""
    e = Enc(implicit=implicit)
    inner = e.el(0x00100010, "PN", text("Deep^Nest")).data
    seq_header = 8 if implicit else 12
    heads, tails = [], []
    if undefined:
        head = (e.header(0x00081115, "SQ", UNDEFINED) + e.tag(ITEM) + e.length(UNDEFINED)).data
        tail = (e.tag(ITEM_END) + e.length(0) + e.tag(SEQ_END) + e.length(0)).data
        body = head * levels + inner + tail * levels
    else:
        # Lengths from the inside out: item = content; sequence = item header + item.
        content = len(inner)
        for _ in range(levels):
            item_len = content
            seq_len = 8 + item_len
            heads.append((e.header(0x00081115, "SQ", seq_len) + e.tag(ITEM) +
                          e.length(item_len)).data)
            content = seq_header + seq_len
        body = b"".join(reversed(heads)) + inner
    return meta(IMPLICIT_LE if implicit else EXPLICIT_LE).data + body


def deflate_bomb(size=1 << 30):
    """A deflated data set holding a (7FE0,0010) OB of `size` zero bytes (about 1 MiB)."""
    le = Enc()
    head = (le.el(0x00100010, "PN", text("Bomb^Deflate")) +
            le.header(0x7FE00010, "OB", size)).data
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = [z.compress(head)]
    chunk = bytes(1 << 22)
    for _ in range(size // len(chunk)):
        out.append(z.compress(chunk))
    out.append(z.flush())
    return meta(DEFLATED_LE).data + b"".join(out)


# ---- mutations -------------------------------------------------------------------------------

INTERESTING32 = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF]


def mutate(rng, data, others):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        n = len(data)
        if n == 0:
            data += bytes([rng.randrange(256)])
            continue
        at = rng.randrange(n)
        if op == 0:                                   # flip one bit
            data[at] ^= 1 << rng.randrange(8)
        elif op == 1:                                 # random byte
            data[at] = rng.randrange(256)
        elif op == 2:                                 # interesting 32-bit value, either order
            v = struct.pack(rng.choice("<>") + "I", rng.choice(INTERESTING32))
            data[at:at + 4] = v
        elif op == 3:                                 # insert random bytes
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4:                                 # delete a range
            del data[at:at + rng.randint(1, 32)]
        elif op == 5:                                 # splice with another file
            other = rng.choice(others)
            cut = rng.randrange(len(other))
            data = data[:at] + bytearray(other[cut:])
        else:                                         # duplicate a chunk
            chunk = data[at:at + rng.randint(1, 64)]
            where = rng.randrange(len(data) + 1)
            data[where:where] = chunk
    return bytes(data)


# ---- running and checking --------------------------------------------------------------------

NO_OFFSET_MESSAGES = ("cannot open", "is a directory", "the file is empty", "not a DICOM")
TAG_RE = re.compile(r"\([0-9A-F]{4},[0-9A-F]{4}\)")
AT_BYTE_RE = re.compile(r"at byte (\d+)( of the inflated data set)?")


class Case:
    def __init__(self, category, path, size, expect_depth=False, max_offset=None,
                 timeout=RUN_TIMEOUT, huge_output=False):
        self.category = category
        self.path = path
        self.size = size
        self.expect_depth = expect_depth
        self.max_offset = size if max_offset is None else max_offset
        self.timeout = timeout
        self.huge_output = huge_output  # discard standard output, measure peak memory


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.runs = collections.Counter()
        self.status = collections.defaultdict(collections.Counter)
        self.failures = []
        self.untagged = collections.Counter()
        self.untagged_examples = {}
        self.notes = []

    def record(self, case, command, status, failure, what):
        """`what`: the message without "telerad: <path>: ", if there was one."""
        with self.lock:
            self.runs[case.category] += 1
            self.status[case.category][status] += 1
            if failure:
                self.failures.append((case, command, failure))
            if (what and not what.startswith(NO_OFFSET_MESSAGES) and AT_BYTE_RE.search(what)
                    and not TAG_RE.search(what)):
                kind = re.sub(r"\d+", "N", what)
                self.untagged[kind] += 1
                self.untagged_examples.setdefault(kind, (case.path, what))


def check(case, command, proc, strict_tags):
    """None if the run behaved, else what went wrong. Also the message, for the summary."""
    rc, out, err, peak_kib = proc
    if rc is None:
        return "hang: no exit within %d s" % case.timeout, None
    if rc < 0:
        return "killed by signal %d" % -rc, None
    try:
        err_text = err.decode("utf-8")
    except UnicodeDecodeError:
        return "standard error is not UTF-8: %r" % err[:300], None
    lines = err_text.splitlines()
    if rc == 0:
        if err_text:
            return "exit 0 but standard error says: %r" % err_text[:300], None
        if case.expect_depth:
            return "exit 0 for sequences nested %d deep (limit %d)" % (NESTING, DEPTH_LIMIT), None
        if case.huge_output:
            if peak_kib > BOMB_MAX_RSS_MIB * 1024:
                return "peak memory %d MiB for a %d-byte file (limit %d MiB)" % (
                    peak_kib // 1024, case.size, BOMB_MAX_RSS_MIB), None
            return None, None
        try:
            out_text = out.decode("utf-8")
        except UnicodeDecodeError as exc:
            return "exit 0 but the output is not UTF-8 (%s)" % exc, None
        if command == "json":
            try:
                if not isinstance(json.loads(out_text), dict):
                    return "exit 0 but the output is not a JSON object", None
            except ValueError as exc:
                return "exit 0 but the output is not valid JSON (%s)" % exc, None
        elif not out_text:
            return "exit 0 but nothing was dumped", None
        return None, None
    if rc != 1:
        return "exit status %d (expected 1): %r" % (rc, err_text[:500]), None
    if len(lines) != 1:
        return "%d lines on standard error (expected 1): %r" % (len(lines), err_text[:800]), None
    message = lines[0]
    prefix = "telerad: %s: " % case.path
    if not message.startswith(prefix):
        return "the message does not start with %r: %r" % (prefix, message), None
    what = message[len(prefix):]
    if command == "json" and out:
        return "exit 1 but JSON was printed: %r" % out[:200], what
    if case.expect_depth and "nested deeper than %d levels" % DEPTH_LIMIT not in what:
        return "expected the depth limit (%d levels) in: %r" % (DEPTH_LIMIT, message), what
    if not what.startswith(NO_OFFSET_MESSAGES):
        m = AT_BYTE_RE.search(what)
        if not m:
            return "a parse error without \"at byte N\": %r" % message, what
        offset = int(m.group(1))
        if not m.group(2) and offset > case.max_offset:
            return "byte offset %d is past the end of the input (%d bytes): %r" % (
                offset, case.max_offset, message), what
        if strict_tags and not TAG_RE.search(what):
            return "no tag named in: %r" % message, what
    return None, what


def run_measured(args, timeout):
    """Run with standard output discarded; also return the peak RSS in KiB (wait4)."""
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    err = p.stderr.read()
    _, status, usage = os.wait4(p.pid, 0)
    timed_out = not timer.is_alive()
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    return (None if timed_out else p.returncode), b"", err, usage.ru_maxrss


def run(telerad, command, case):
    args = [telerad, command, case.path]
    if case.huge_output:
        return run_measured(args, case.timeout)
    try:
        p = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=case.timeout)
        return p.returncode, p.stdout, p.stderr, None
    except subprocess.TimeoutExpired:
        return None, b"", b"", None


def child_environment():
    """Sanitizer failures become signals (the checks above then name them), whatever the
    caller's ASAN_OPTIONS say."""
    env = dict(os.environ)
    env["ASAN_OPTIONS"] = env.get("ASAN_OPTIONS", "") + ":abort_on_error=1:detect_leaks=1"
    env["UBSAN_OPTIONS"] = env.get("UBSAN_OPTIONS", "") + ":halt_on_error=1:print_stacktrace=1"
    return env


# ---- building the cases ----------------------------------------------------------------------

def make_cases(tmp, only):
    cases = []

    def add(category, name, data, **kw):
        path = os.path.join(tmp, category, name)
        with open(path, "wb") as f:
            f.write(data)
        cases.append(Case(category, path, len(data), **kw))

    for category in ("truncated", "lengths", "nesting", "mutations", "bomb", "files"):
        os.makedirs(os.path.join(tmp, category), exist_ok=True)
    bases = base_files()

    if only in (None, "truncated"):
        for name, blob in bases.items():
            data = blob.data
            for n in range(1, len(data)):
                add("truncated", "%s_%04d.dcm" % (name, n), data[:n])

    if only in (None, "lengths"):
        values32 = [0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFF0, 0x7FFFFFFF, 0x80000000]
        for name, blob in bases.items():
            for offset, width, big in blob.fields:
                for v in values32:
                    value = v if width == 4 else v >> 16
                    fmt = (">" if big else "<") + ("I" if width == 4 else "H")
                    data = bytearray(blob.data)
                    data[offset:offset + width] = struct.pack(fmt, value)
                    add("lengths", "%s_at%04d_%08x.dcm" % (name, offset, value), bytes(data))

    if only in (None, "nesting"):
        for implicit in (False, True):
            for undefined in (False, True):
                name = "%s_%s_%d.dcm" % ("implicit" if implicit else "explicit",
                                         "undefined" if undefined else "defined", NESTING)
                add("nesting", name, nested(implicit, undefined), expect_depth=True)

    if only in (None, "mutations"):
        rng = random.Random(SEED)
        originals = [b.data for b in bases.values()]
        for i in range(MUTATIONS):
            add("mutations", "mutation_%04d.dcm" % i, mutate(rng, rng.choice(originals),
                                                              originals))

    if only in (None, "bomb"):
        data = deflate_bomb()
        add("bomb", "deflate_1gib.dcm", data, timeout=BOMB_TIMEOUT, max_offset=len(data),
            huge_output=True)

    if only in (None, "files"):
        add("files", "empty.dcm", b"")
        add("files", "short_random.dcm", bytes(random.Random(SEED).randrange(256)
                                               for _ in range(100)))
        add("files", "short_dicm.dcm", b"\0" * 128 + b"DICM")
        add("files", "preamble_only.dcm", b"\0" * 131)
        add("files", "meta_only.dcm", meta(EXPLICIT_LE).data[:200])
        directory = os.path.join(tmp, "files", "a_directory.dcm")
        os.makedirs(directory)
        cases.append(Case("files", directory, 0))
        cases.append(Case("files", os.path.join(tmp, "files", "does_not_exist.dcm"), 0))
    return cases


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("telerad")
    ap.add_argument("--jobs", type=int, default=2 * (os.cpu_count() or 1),
                    help="runs in parallel (default: twice the CPUs; telerad mostly waits on exec)")
    ap.add_argument("--only", choices=["truncated", "lengths", "nesting", "mutations", "bomb",
                                       "files"])
    ap.add_argument("--keep", default=os.path.join(tempfile.gettempdir(), "telerad-malformed"),
                    help="where failing inputs are copied")
    ap.add_argument("--strict-tags", action="store_true",
                    help="fail parse errors whose message names no tag")
    ap.add_argument("--sample", type=int, default=1, metavar="N",
                    help="run every Nth case of the three large categories (truncated, lengths, "
                         "mutations; the same cases every time) and all of the others. The "
                         "sanitizer build uses 3: the release build runs every case, and the "
                         "fuzzers (fuzz/, instrumented) cover the parser beyond")
    args = ap.parse_args()
    telerad = os.path.abspath(args.telerad)
    if not os.access(telerad, os.X_OK):
        print("malformed.py: %s is not an executable; skipped" % telerad)
        return 77
    os.environ.update(child_environment())

    started = time.monotonic()
    results = Results()
    with tempfile.TemporaryDirectory(prefix="telerad-malformed-") as tmp:
        cases = make_cases(tmp, args.only)
        if args.sample > 1:
            seen = collections.Counter()
            kept = []
            for c in cases:
                if c.category in ("truncated", "lengths", "mutations"):
                    seen[c.category] += 1
                    if (seen[c.category] - 1) % args.sample:
                        continue
                kept.append(c)
            cases = kept
        generated = time.monotonic() - started
        # The slow case first, so that it overlaps with everything else.
        cases.sort(key=lambda c: c.timeout, reverse=True)
        work = [(c, cmd) for c in cases for cmd in ("json", "dump")]

        def one(item):
            case, command = item
            began = time.monotonic()
            proc = run(telerad, command, case)
            failure, message = check(case, command, proc, args.strict_tags)
            status = "hang" if proc[0] is None else ("signal" if proc[0] < 0 else
                                                     "exit %d" % proc[0])
            results.record(case, command, status, failure, message)
            if proc[3] is not None:
                with results.lock:
                    results.notes.append("telerad %s %s: %s, peak RSS %d MiB, %.1f s" % (
                        command, os.path.basename(case.path), status, proc[3] // 1024,
                        time.monotonic() - began))

        with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in concurrent.futures.as_completed([pool.submit(one, w) for w in work]):
                f.result()

        if results.failures:
            os.makedirs(args.keep, exist_ok=True)
            for case, _, _ in results.failures:
                if os.path.isfile(case.path):
                    shutil.copy(case.path, args.keep)

    elapsed = time.monotonic() - started
    print("malformed.py: %d runs of %s in %.1f s (inputs generated in %.1f s), %d in parallel%s"
          % (sum(results.runs.values()), telerad, elapsed, generated, args.jobs,
             "; every %dth case of truncated, lengths, mutations" % args.sample
             if args.sample > 1 else ""))
    print("  %-10s %6s  %s" % ("category", "runs", "outcomes"))
    for category in ("truncated", "lengths", "nesting", "mutations", "bomb", "files"):
        if results.runs[category]:
            outcomes = ", ".join("%s: %d" % kv for kv in sorted(results.status[category].items()))
            print("  %-10s %6d  %s" % (category, results.runs[category], outcomes))
    for note in results.notes:
        print("  " + note)
    if results.untagged:
        print("  parse errors naming no tag: %d runs, %d kinds:" % (
            sum(results.untagged.values()), len(results.untagged)))
        for kind, count in results.untagged.most_common(8):
            path, _ = results.untagged_examples[kind]
            print("    %5d x %s" % (count, kind))
            print("            e.g. %s" % path)
    if not results.failures:
        print("malformed.py: every run exited cleanly with one message naming the file")
        return 0
    print("\nmalformed.py: %d FAILED runs (inputs copied to %s):" % (len(results.failures),
                                                                     args.keep))
    for case, command, failure in sorted(results.failures, key=lambda f: f[0].path)[:40]:
        kept = os.path.join(args.keep, os.path.basename(case.path))
        print("  FAIL [%s] telerad %s %s\n       %s" % (case.category, command, kept, failure))
    if len(results.failures) > 40:
        print("  ... and %d more" % (len(results.failures) - 40))
    return 1


if __name__ == "__main__":
    sys.exit(main())
