#!/usr/bin/python3
"""The archive at scale: ingest rate and study-level C-FIND latency with 1,000,000 instances
indexed, on SQLite and on PostgreSQL.

  bench/scale.py [--instances 1000000] [--ingest 300] [--repeat 5] [--queries 200]
                 [--build-dir build-arc] [--no-pg] [--regenerate] [--seed 1] [--queries-only]

--queries-only skips the ingest runs (step 4): the 1 M archive is made or reused, PostgreSQL
loaded, and only the queries timed; the report then goes to bench/out/scale.queries.last.txt
(the full report in scale.last.txt is left alone).

Run with Debian's /usr/bin/python3 (pydicom for the ingest instances). See bench/README.md
("## scale.py") for what is measured and why. Goals (the archive issue):
  - ingest rate with 1 M instances indexed >= 90 % of the rate into an empty index;
  - study-level C-FIND by PatientName wildcard and by StudyDate range at 1 M instances:
    p50 < 5 ms, on SQLite and on PostgreSQL.

What it does:
  1. builds nothing itself unless --build-dir lacks telerad or the libraries (then it runs
     cmake there); compiles bench/scale_query.c against that build's libtr_*.a into
     bench/out/scale/scale_query;
  2. writes, once (a stamp file records the parameters), rows for patients / studies / series /
     instances straight into the index schema (created by the index library itself,
     `scale_query init`) - 10,000 patients, 20,000 studies, 100,000 series, 1,000,000
     instances, random names, dates 2015-2024, skewed series sizes - into a SQLite index
     (bench/out/scale/big/index.sqlite) and as tab-separated files for PostgreSQL's COPY; and
     an empty placeholder file per instance under big/objects/<object key>, because
     `telerad serve` reconciles the index with the object store at start and would forget
     every row whose object is missing;
  3. starts a throw-away PostgreSQL (tests/pg/pg.sh) and loads the same rows with COPY;
  4. ingest: `telerad serve` on a fresh empty archive vs on the 1 M archive, storescu
     (TCP_NODELAY=1, one association) sends --ingest new CT instances (128x128), --repeat
     times, interleaved; the rate is instances / (last response - first file sent), read from
     storescu -v's output as it comes;
  5. queries: --queries PatientName prefix queries ("SMI*", prefixes drawn from the patients'
     family names) and as many StudyDate one-month ranges, timed (a) through the index
     library alone (scale_query index -> arc_index_query) and (b) as C-FINDs on one
     association to `telerad serve` (scale_query dicom); p50 / p90 / p99;
  6. prints the query plans (EXPLAIN QUERY PLAN, EXPLAIN ANALYZE) and a table, and saves the
     report to bench/out/scale.last.txt.

Exit status 0 when every measurement ran (goals met or not), 1 otherwise.
"""
import argparse
import math
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(HERE, "out", "scale")
PG_SH = os.path.join(ROOT, "tests", "pg", "pg.sh")
sys.path.insert(0, os.path.join(ROOT, "tests", "archive"))

REPORT = []


def say(line=""):
    print(line, flush=True)
    REPORT.append(line)


def run_quiet(cmd, **kw):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)
    if p.returncode != 0:
        sys.stderr.write(p.stdout.decode("utf-8", "replace")[-3000:])
        raise RuntimeError("failed: %s" % " ".join(cmd))
    return p.stdout.decode("utf-8", "replace")


# ---- build -----------------------------------------------------------------------------------

def build(build_dir):
    libs = ["libtr_archive.a", "libtr_net.a", "libtr_dicom.a", "libtr_common.a"]
    if not all(os.path.exists(os.path.join(build_dir, f)) for f in libs + ["telerad"]):
        run_quiet(["cmake", "-S", ROOT, "-B", build_dir, "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
        run_quiet(["cmake", "--build", build_dir, "-j%d" % (os.cpu_count() or 2)])
    cache = open(os.path.join(build_dir, "CMakeCache.txt")).read()
    if re.search(r"TELERAD_SANITIZE:BOOL=ON", cache):
        raise RuntimeError("%s is a sanitizer build: no basis for speed numbers" % build_dir)
    build_type = re.search(r"CMAKE_BUILD_TYPE:STRING=(\S*)", cache)
    exe = os.path.join(OUT, "scale_query")
    src = os.path.join(HERE, "scale_query.c")
    inc = ["-I" + os.path.join(ROOT, "src", d) for d in
           ("services/archive", "net", "dicom", "common")]
    run_quiet(["cc", "-O2", "-g", "-std=c17", "-D_GNU_SOURCE", "-Wall", "-Wextra", "-Wpedantic",
               "-Wno-missing-field-initializers"] + inc + [src, "-o", exe] +
              [os.path.join(build_dir, f) for f in libs] +
              ["-lm", "-lz", "-ljansson", "-lssl", "-lcrypto", "-lsqlite3", "-lpq", "-lpthread"])
    return os.path.join(build_dir, "telerad"), exe, build_type.group(1) if build_type else "?"


# ---- the 1 M instance index ------------------------------------------------------------------

SYLLABLES_A = ["BA", "BE", "BRO", "CA", "CHE", "DA", "DO", "FE", "FRA", "GA", "GO", "HA", "HE",
               "JA", "JO", "KA", "KO", "LA", "LE", "LO", "MA", "ME", "MO", "NA", "NO", "PA",
               "PE", "RA", "RO", "SA", "SE", "SO", "TA", "TO", "VA", "WA", "WE", "ZA"]
SYLLABLES_B = ["BER", "DEN", "GAN", "KER", "LAN", "LER", "LIN", "MAN", "MER", "NER", "RIS",
               "SEN", "SON", "TER", "TON", "VIC", "WICZ", "ZAK", "RANDA", "NELLI", "STEIN"]
COMMON = ["SMITH", "SMITHSON", "SMIRNOV", "SMILEY", "SMYTHE", "JOHNSON", "WILLIAMS", "BROWN",
          "JONES", "GARCIA", "MILLER", "DAVIS", "RODRIGUEZ", "MARTINEZ", "NGUYEN", "MULLER",
          "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "ROSSI", "RUSSO", "FERRARI", "KOWALSKI",
          "NOWAK", "DUBOIS", "MARTIN", "BERNARD", "SILVA", "SANTOS", "TANAKA", "SUZUKI"]
GIVEN = ["JOHN", "MARY", "JAMES", "ANNA", "PETER", "LINDA", "MICHAEL", "SARAH", "DAVID", "LAURA",
         "PAUL", "MARIA", "JUAN", "SOFIA", "LUCA", "EMMA", "PIOTR", "OLGA", "HIRO", "AIKO"]
MODALITIES = [("CT", "1.2.840.10008.5.1.4.1.1.2", 0.35), ("MR", "1.2.840.10008.5.1.4.1.1.4", 0.2),
              ("CR", "1.2.840.10008.5.1.4.1.1.1", 0.25), ("US", "1.2.840.10008.5.1.4.1.1.6.1", 0.1),
              ("DX", "1.2.840.10008.5.1.4.1.1.1.1", 0.1)]
DESCRIPTIONS = {"CT": ["CT HEAD WO", "CT CHEST W", "CTA HEAD NECK", "CT ABD PELVIS"],
                "MR": ["MR BRAIN", "MR LSPINE", "MR KNEE"], "CR": ["XR CHEST 2V", "XR HAND"],
                "US": ["US ABDOMEN"], "DX": ["DX CHEST"]}


def object_key(study_uid, sop):
    """arc_object_key() of src/services/archive/archive.c: FNV-1a of the study UID, top byte."""
    h = 2166136261
    for c in study_uid.encode():
        h = ((h ^ c) * 16777619) & 0xFFFFFFFF
    return "%02x/%s/%s.dcm" % (h >> 24, study_uid, sop)


def spread(rng, total, bins, weights=None):
    """`total` items over `bins` bins, each bin at least 1 (skewed by `weights`)."""
    counts = [1] * bins
    for i in rng.choices(range(bins), weights=weights, k=total - bins):
        counts[i] += 1
    return counts


def generate_rows(args, rng):
    """Yields (table, row tuple) in primary-key order, parents before children."""
    n_patients, n_studies, n_series = args.patients, args.studies, args.series
    families = list(COMMON)
    seen = set(families)
    while len(families) < 3000:
        name = rng.choice(SYLLABLES_A) + rng.choice(SYLLABLES_B)
        if rng.random() < 0.3:
            name += rng.choice(["I", "A", "O", "E"])
        if name not in seen:
            seen.add(name)
            families.append(name)
    fam_cum = list(__import__("itertools").accumulate(1.0 / (i + 10)
                                                      for i in range(len(families))))  # Zipf-like
    t_base = 1420070400  # 2015-01-01
    ten_years = 10 * 365 * 86400
    now_ms = int(time.time() * 1000)

    studies_per_patient = spread(rng, n_studies, n_patients)
    series_per_study = spread(rng, n_series, n_studies)
    series_weights = [rng.lognormvariate(0, 1.3) for _ in range(n_series)]
    instances_per_series = spread(rng, args.instances, n_series, series_weights)

    study_pk = series_pk = instance_pk = 0
    for p in range(n_patients):
        family = rng.choices(families, cum_weights=fam_cum)[0]
        name = "%s^%s" % (family, rng.choice(GIVEN))
        if rng.random() < 0.3:
            name += "^" + rng.choice("ABCDEFGHJKLMNPRSTW")
        yield "patients", (p + 1, "", "P%08d" % (p + 1), "", name, name,
                           "19%02d%02d%02d" % (rng.randint(20, 99), rng.randint(1, 12),
                                               rng.randint(1, 28)), rng.choice("MF"))
        for _ in range(studies_per_patient[p]):
            study_pk += 1
            modality, sop_class, _w = rng.choices(MODALITIES,
                                                  weights=[m[2] for m in MODALITIES])[0]
            study_uid = "1.2.826.0.1.3680043.10.543.%d.%d" % (study_pk, rng.getrandbits(40))
            t = t_base + rng.randrange(ten_years)
            date = time.strftime("%Y%m%d", time.gmtime(t))
            stime = time.strftime("%H%M%S", time.gmtime(t))
            nse = series_per_study[study_pk - 1]
            counts = instances_per_series[series_pk:series_pk + nse]
            first_key = None
            series_rows = []
            instance_rows = []
            for k in range(nse):
                series_pk += 1
                series_uid = "%s.%d" % (study_uid, k + 1)
                ser_first = None
                for i in range(counts[k]):
                    instance_pk += 1
                    sop = "2.25.%d" % rng.getrandbits(125)
                    key = object_key(study_uid, sop)
                    ser_first = ser_first or key
                    instance_rows.append((instance_pk, series_pk, sop, sop_class, i + 1,
                                          "1.2.840.10008.1.2.1", key, 0, 512, 512, 16, None,
                                          "MODALITY1", t * 1000))
                first_key = first_key or ser_first
                series_rows.append((series_pk, study_pk, series_uid, modality, k + 1,
                                    "SERIES %d" % (k + 1), "", "", "", counts[k], ser_first))
            referring = "DOC^%s" % rng.choice(GIVEN)
            yield "studies", (study_pk, p + 1, "", study_uid, date, stime,
                              "ACC%09d" % study_pk, "S%d" % study_pk,
                              rng.choice(DESCRIPTIONS[modality]), referring, referring, "",
                              "ISO_IR 100", modality, sop_class, nse, sum(counts), first_key,
                              t * 1000, t * 1000, now_ms)
            for r in series_rows:
                yield "series", r
            for r in instance_rows:
                yield "instances", r


COLUMNS = {
    "patients": "pk, site, patient_id, issuer, patient_name, patient_name_ci, birth_date, sex",
    "studies": "pk, patient_pk, site, study_uid, study_date, study_time, accession, study_id, "
               "description, referring, referring_ci, timezone, charset, modalities, "
               "sop_classes, num_series, num_instances, rep_key, created_at, updated_at, "
               "stable_at",
    "series": "pk, study_pk, series_uid, modality, series_number, description, body_part, "
              "pps_start_date, pps_start_time, num_instances, rep_key",
    "instances": "pk, series_pk, sop_uid, sop_class, instance_number, transfer_syntax, "
                 "object_key, size, num_rows, num_columns, bits_allocated, frames, source_ae, "
                 "received_at",
}


def tsv(value):
    return "\\N" if value is None else str(value)


def schema_fingerprint(scale_query):
    """A hash of the schema the index library creates today (tables, indexes, migration
    bookkeeping): a 1 M archive made with another schema is made again."""
    import hashlib
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "index.sqlite")
        run_quiet([scale_query, "init", "sqlite:" + path])
        db = sqlite3.connect(path)
        rows = list(db.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name"))
        for table in ("schema_migrations", "schema_version"):
            try:
                rows += list(db.execute("SELECT * FROM %s ORDER BY 1" % table))
            except sqlite3.Error:
                pass
        db.close()
    return hashlib.sha1(repr(rows).encode()).hexdigest()[:12]


def make_big(args, scale_query):
    """The 1 M archive: SQLite index, TSV files for PostgreSQL, placeholder objects."""
    big = os.path.join(OUT, "big")
    stamp = os.path.join(big, "stamp")
    want = "instances=%d patients=%d studies=%d series=%d seed=%d schema=%s" % (
        args.instances, args.patients, args.studies, args.series, args.seed,
        schema_fingerprint(scale_query))
    if not args.regenerate and os.path.exists(stamp) and open(stamp).read().strip() == want:
        say("1 M archive: reusing %s (%s)" % (big, want))
        return big
    t0 = time.time()
    shutil.rmtree(big, ignore_errors=True)
    os.makedirs(os.path.join(big, "objects"))
    db_path = os.path.join(big, "index.sqlite")
    run_quiet([scale_query, "init", "sqlite:" + db_path])
    db = sqlite3.connect(db_path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-1000000")
    db.execute("BEGIN")
    files = {t: open(os.path.join(big, t + ".tsv"), "w") for t in COLUMNS}
    sql = {t: "INSERT INTO %s (%s) VALUES (%s)" % (t, c, ", ".join("?" * (c.count(",") + 1)))
           for t, c in COLUMNS.items()}
    rng = random.Random(args.seed)
    batch = {t: [] for t in COLUMNS}
    objects = os.path.join(big, "objects")
    made_dirs = set()
    n = 0
    for table, row in generate_rows(args, rng):
        batch[table].append(row)
        files[table].write("\t".join(tsv(v) for v in row) + "\n")
        if table == "instances":
            key = row[6]
            d = os.path.dirname(key)
            if d not in made_dirs:
                os.makedirs(os.path.join(objects, d), exist_ok=True)
                made_dirs.add(d)
            os.close(os.open(os.path.join(objects, key), os.O_CREAT | os.O_WRONLY, 0o644))
            n += 1
            if n % 200000 == 0:
                print("  %d instances (%.0f s)" % (n, time.time() - t0), flush=True)
        if len(batch[table]) >= 10000:
            # parents first: flush every table in order
            for t in COLUMNS:
                if batch[t]:
                    db.executemany(sql[t], batch[t])
                    batch[t] = []
    for t in COLUMNS:
        if batch[t]:
            db.executemany(sql[t], batch[t])
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for f in files.values():
        f.close()
    with open(stamp, "w") as f:
        f.write(want + "\n")
    say("1 M archive: generated in %.0f s (%s)" % (time.time() - t0, want))
    return big


def pg_load(big, url):
    t0 = time.time()
    for t in COLUMNS:
        path = os.path.join(big, t + ".tsv")
        run_quiet(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c",
                   "\\copy %s (%s) FROM '%s'" % (t, COLUMNS[t], path)])
    for t in COLUMNS:
        run_quiet(["psql", "-X", "-q", url, "-c",
                   "SELECT setval(pg_get_serial_sequence('%s', 'pk'), (SELECT MAX(pk) FROM %s))"
                   % (t, t)])
    run_quiet(["psql", "-X", "-q", url, "-c", "VACUUM ANALYZE"])
    say("PostgreSQL: loaded the same rows with COPY and VACUUM ANALYZE in %.0f s" %
        (time.time() - t0))


# ---- ingest ----------------------------------------------------------------------------------

def timed_store(port, paths):
    """storescu -v over one association: (rate, seconds, per-instance latencies in ms). The rate
    is instances / (last response - first file sent); a latency is from "Sending Store Request"
    to "Received Store Response". Timestamps are taken as storescu's verbose lines arrive."""
    import arc_common as ac
    cmd = ac.storescu_command(port, paths)
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         env=ac.dcmtk_env(), bufsize=0)
    first = last = sent = None
    ok = 0
    lines = []
    latencies = []
    for raw in p.stdout:
        now = time.perf_counter()
        line = raw.decode("utf-8", "replace").rstrip("\n")
        lines.append(line)
        if first is None and line.startswith("I: Sending file:"):
            first = now
        elif line.startswith("I: Sending Store Request"):
            sent = now
        elif line.startswith("I: Received Store Response"):
            last = now
            ok += "(Success)" in line
            if sent is not None:
                latencies.append((now - sent) * 1000.0)
    p.wait()
    if p.returncode != 0 or ok != len(paths):
        raise RuntimeError("storescu: %d of %d stored, exit %d: %s" %
                           (ok, len(paths), p.returncode, "\n".join(lines[-10:])))
    return len(paths) / (last - first), last - first, latencies


def proc_cpu(pids):
    """User + system CPU seconds of these processes."""
    total = 0
    for pid in pids:
        try:
            f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def postgres_pids():
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if open("/proc/%s/comm" % d).read().strip() == "postgres":
                    out.append(int(d))
            except OSError:
                pass
    return out


def write_bytes(pid):
    for line in open("/proc/%d/io" % pid):
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def wal_lsn(url):
    return run_quiet(["psql", "-X", "-At", url, "-c", "SELECT pg_current_wal_lsn()"]).strip()


def ingest_once(telerad, data, index_url, paths):
    """One run; a dict of rate, start-up time, median latency, and per-instance work: telerad's
    CPU and bytes written, and for PostgreSQL the server processes' CPU and WAL bytes."""
    import arc_common as ac
    extra = ["--index", index_url] if index_url else []
    server = ac.Server(telerad, OUT, data, *extra)
    t0 = time.perf_counter()
    server.start(timeout=600)
    r = {"startup": time.perf_counter() - t0}
    pg = index_url is not None
    try:
        pgp = postgres_pids() if pg else []
        lsn0 = wal_lsn(index_url) if pg else None
        cpu0, pgcpu0 = proc_cpu([server.proc.pid]), proc_cpu(pgp)
        wb0 = write_bytes(server.proc.pid)
        rate, secs, lat = timed_store(server.port, paths)
        cpu1, pgcpu1 = proc_cpu([server.proc.pid]), proc_cpu(pgp)
        wb1 = write_bytes(server.proc.pid)
        n = float(len(paths))
        r.update(rate=rate, p50=statistics.median(lat), cpu_ms=(cpu1 - cpu0) * 1000 / n,
                 write_kb=(wb1 - wb0) / 1024.0 / n)
        if pg:
            lsn1 = wal_lsn(index_url)
            wal = run_quiet(["psql", "-X", "-At", index_url, "-c",
                             "SELECT pg_wal_lsn_diff('%s', '%s')" % (lsn1, lsn0)])
            r.update(pg_cpu_ms=(pgcpu1 - pgcpu0) * 1000 / n, wal_kb=float(wal) / 1024.0 / n)
    finally:
        status = server.stop()
    if status != 0:
        raise RuntimeError("telerad serve exit %s: %s" % (status, server.log_text()[-1000:]))
    return r


def ingest(telerad, engine, big, big_url, pg_admin_url, sets, repeat):
    """`repeat` pairs of runs, interleaved (empty, 1 M, empty, 1 M ...); lists of run dicts."""
    empty, full = [], []
    for r in range(repeat):
        tmp = tempfile.mkdtemp(prefix="empty-", dir=OUT)
        url = None
        if engine == "PostgreSQL":
            name = "empty_%d_%d" % (os.getpid(), r)
            run_quiet(["psql", "-X", "-q", pg_admin_url, "-c", "CREATE DATABASE %s" % name])
            url = re.sub(r"/[^/]*$", "/" + name, pg_admin_url)
        empty.append(ingest_once(telerad, os.path.join(tmp, "data"), url, sets[0]))
        shutil.rmtree(tmp, ignore_errors=True)
        full.append(ingest_once(telerad, big, big_url, sets[1 + r]))
        e, f = empty[-1], full[-1]
        say("  %-10s run %d: empty %6.1f inst/s (p50 %.2f ms), 1 M %6.1f inst/s (p50 %.2f ms); "
            "start-up %.2f s / %.1f s" % (engine, r + 1, e["rate"], e["p50"], f["rate"],
                                          f["p50"], e["startup"], f["startup"]))
    return empty, full


def make_ingest_sets(count, n):
    """n sets of `count` new CT instances (fresh UIDs every run: resending stored instances
    would only measure duplicate detection)."""
    import arc_common as ac
    seed = int(time.time() * 1000) & 0xFFFFFFFF
    rng = random.Random(seed)
    base = os.path.join(OUT, "ingest")
    shutil.rmtree(base, ignore_errors=True)
    sets = []
    for i in range(n):
        per_study = max(1, count // 3)
        made = ac.make_instances(os.path.join(base, str(i)), rng, studies=3, series_per_study=1,
                                 per_series=per_study, rows=128, first_patient=i * 3)
        sets.append([m.path for m in made][:count])
    return sets


# ---- queries ---------------------------------------------------------------------------------

def make_queries(big, n, seed):
    rng = random.Random(seed + 1)
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(big, "index.sqlite"), uri=True)
    names = [r[0] for r in db.execute("SELECT patient_name FROM patients")]
    db.close()
    lines = []
    for i in range(n):
        lines.append("pn %s*" % rng.choice(names)[:3])
    for i in range(n):
        y, m = rng.randint(2015, 2024), rng.randint(1, 12)
        lines.append("date %04d%02d01-%04d%02d31" % (y, m, y, m))
    # interleave the kinds so that neither gets a warmer cache
    pn, dt = lines[:n], lines[n:]
    mixed = [x for pair in zip(pn, dt) for x in pair]
    path = os.path.join(OUT, "queries.txt")
    with open(path, "w") as f:
        f.write("\n".join(mixed[:20] + mixed) + "\n")  # 20 warm-up lines, then the timed ones
    return path


def percentile(values, q):
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(math.ceil(q / 100.0 * len(s))) - 1))
    return s[k]


def query_stats(output):
    by = {"pn": [], "date": []}
    matches = {"pn": [], "date": []}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[0] in by:
            by[parts[0]].append(int(parts[2]) / 1000.0)
            matches[parts[0]].append(int(parts[3]))
    return {k: (percentile(v, 50), percentile(v, 90), percentile(v, 99), len(v),
                statistics.median(matches[k]), max(matches[k])) for k, v in by.items() if v}


# The statement query.c builds for a study-level C-FIND with these return keys (every key_defs
# column at or above STUDY level, src/services/archive/query.c:40-58 and 431-452).
STUDY_SELECT = (
    "SELECT p.patient_name, p.patient_id, p.issuer, p.birth_date, p.sex, "
    "(SELECT COUNT(*) FROM studies x WHERE x.patient_pk = p.pk), "
    "(SELECT COALESCE(SUM(x.num_series), 0) FROM studies x WHERE x.patient_pk = p.pk), "
    "(SELECT COALESCE(SUM(x.num_instances), 0) FROM studies x WHERE x.patient_pk = p.pk), "
    "s.study_uid, s.study_date, s.study_time, s.accession, s.study_id, s.description, "
    "s.referring, s.timezone, s.modalities, s.sop_classes, s.num_series, s.num_instances, "
    "p.site, s.rep_key FROM studies s JOIN patients p ON p.pk = s.patient_pk WHERE %s "
    "ORDER BY s.study_date DESC, s.study_time DESC, s.pk LIMIT 100000 OFFSET 0")
PN_WHERE = "((p.patient_name_ci LIKE {a} ESCAPE '!' OR p.patient_name_ci LIKE {b} ESCAPE '!'))"
DATE_WHERE = "s.study_date >= {a} AND s.study_date <= {b} AND s.study_date <> ''"


def explain(big, pg_url):
    pn = ("'SMI%'", "'%=SMI%'")
    dt = ("'20210301'", "'20210331'")
    qs = [("PatientName SMI*", PN_WHERE.format(a=pn[0], b=pn[1])),
          ("StudyDate 20210301-20210331", DATE_WHERE.format(a=dt[0], b=dt[1]))]
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(big, "index.sqlite"), uri=True)
    db.execute("PRAGMA case_sensitive_like=ON")  # as db.c opens the index
    for what, where in qs:
        say("SQLite EXPLAIN QUERY PLAN, %s:" % what)
        for row in db.execute("EXPLAIN QUERY PLAN " + STUDY_SELECT % where):
            say("    " + row[3])
    # Would the prefix alone use the index? (the second, '%=...' alternative forces a scan)
    say("SQLite EXPLAIN QUERY PLAN, the prefix alone (p.patient_name_ci LIKE 'SMI%' ESCAPE '!'):")
    for row in db.execute("EXPLAIN QUERY PLAN SELECT pk FROM patients p WHERE "
                          "p.patient_name_ci LIKE 'SMI%' ESCAPE '!'"):
        say("    " + row[3])
    db.close()
    if not pg_url:
        return
    for what, where in qs:
        say("PostgreSQL EXPLAIN ANALYZE, %s:" % what)
        out = run_quiet(["psql", "-X", "-q", "-At", pg_url, "-c",
                         "EXPLAIN (ANALYZE, COSTS OFF) " + STUDY_SELECT % where])
        for line in out.splitlines():
            say("    " + line)


# ---- main ------------------------------------------------------------------------------------

def main():
    global OUT
    ap = argparse.ArgumentParser()
    ap.add_argument("--instances", type=int, default=1000000)
    ap.add_argument("--patients", type=int, default=10000)
    ap.add_argument("--studies", type=int, default=20000)
    ap.add_argument("--series", type=int, default=100000)
    ap.add_argument("--ingest", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--build-dir", default=os.path.join(ROOT, "build-arc"))
    ap.add_argument("--no-pg", action="store_true")
    ap.add_argument("--regenerate", action="store_true")
    ap.add_argument("--out", default=OUT, help="work folder (default bench/out/scale)")
    ap.add_argument("--queries-only", action="store_true",
                    help="no ingest runs: time the queries on the 1 M archive only")
    args = ap.parse_args()
    OUT = os.path.abspath(args.out)
    os.makedirs(OUT, exist_ok=True)
    import arc_common as ac

    say("bench/scale.py: %s" % " ".join(sys.argv[1:]))
    telerad, scale_query, build_type = build(os.path.abspath(args.build_dir))
    rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                         stdout=subprocess.PIPE).stdout.decode().strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"],
                           stdout=subprocess.PIPE).stdout.decode().strip()
    say("load average before: %s" % open("/proc/loadavg").read().strip())
    say("telerad %s%s (%s, %s); %s; %d CPUs; sqlite %s" %
        (rev, " + uncommitted changes in src/" if dirty else "", args.build_dir, build_type,
         platform.platform(), os.cpu_count(), sqlite3.sqlite_version))
    big = make_big(args, scale_query)
    pg_state = None
    pg_url = None
    results = {}
    try:
        if not args.no_pg:
            if not os.path.exists("/usr/lib/postgresql"):
                say("PostgreSQL is not installed: SQLite only")
            else:
                pg_state = os.path.join(OUT, "pg")
                os.chmod(OUT, 0o755)
                run_quiet(["bash", PG_SH, "start", pg_state])
                pg_admin = open(os.path.join(pg_state, "url")).read().strip()
                pg_url = pg_admin
                run_quiet([scale_query, "init", pg_url])
                pg_load(big, pg_url)
        engines = [("SQLite", None)] + ([("PostgreSQL", pg_url)] if pg_url else [])
        queries = make_queries(big, args.queries, args.seed)
        if not args.queries_only:
            sets = make_ingest_sets(args.ingest, 1 + args.repeat * len(engines))
            say()
            say("Ingest: %d CT instances of 128x128 (32 KB) per run, storescu, one association" %
                args.ingest)
            for n, (engine, url) in enumerate(engines):
                mine = [sets[0]] + sets[1 + n * args.repeat:1 + (n + 1) * args.repeat]
                results[engine, "ingest"] = ingest(telerad, engine, big, url, pg_url, mine,
                                                   args.repeat)

        say()
        say("Queries: %d PatientName prefix queries and %d StudyDate month ranges, "
            "study level (after 20 untimed)" % (args.queries, args.queries))
        for engine, url in engines:
            index_url = url or "sqlite:" + os.path.join(big, "index.sqlite")
            out = run_quiet([scale_query, "index", index_url, queries])
            results[engine, "index"] = query_stats(out)
            server = ac.Server(telerad, OUT, big, *(["--index", url] if url else []))
            server.start(timeout=600)
            try:
                out = run_quiet([scale_query, "dicom", "127.0.0.1", str(server.port), queries])
            finally:
                server.stop()
            results[engine, "dicom"] = query_stats(out)
        say()
        explain(big, pg_url)
    finally:
        if pg_state:
            subprocess.run(["bash", PG_SH, "stop", pg_state])
    report(args, results)
    name = "scale.queries.last.txt" if args.queries_only else "scale.last.txt"
    with open(os.path.join(os.path.dirname(OUT), name), "w") as f:
        f.write("\n".join(REPORT) + "\n")


def report(args, results):
    say()
    say("load average after: %s" % open("/proc/loadavg").read().strip())
    say("Results (%d instances indexed; this machine, one run)" % args.instances)
    say()
    med = lambda runs, k: statistics.median(x[k] for x in runs if k in x)  # noqa: E731
    if not args.queries_only:
        say("ingest, median of %d interleaved runs   empty index    1 M index   1 M / empty   "
            "goal >= 90 %%" % args.repeat)
    for engine in ("SQLite", "PostgreSQL"):
        r = results.get((engine, "ingest"))
        if not r:
            continue
        e, f = r
        ratio = med(f, "rate") / med(e, "rate")
        say("  %-10s instances/s               %10.1f   %10.1f   %9.0f %%     %s" %
            (engine, med(e, "rate"), med(f, "rate"), ratio * 100,
             "met" if ratio >= 0.9 else "MISSED"))
        rows = [("median latency per instance, ms", "p50", "%10.2f"),
                ("telerad CPU per instance, ms", "cpu_ms", "%10.2f"),
                ("telerad bytes written per instance, KB", "write_kb", "%10.1f"),
                ("PostgreSQL CPU per instance, ms", "pg_cpu_ms", "%10.2f"),
                ("PostgreSQL WAL per instance, KB", "wal_kb", "%10.1f"),
                ("server start-up (reconciliation), s", "startup", "%10.2f")]
        for label, k, fmt in rows:
            if k in e[0]:
                a, b = med(e, k), med(f, k)
                say(("  %-10s %-38s " + fmt + "   " + fmt + "   %9.0f %%") %
                    ("", label, a, b, 100.0 * b / a if a else float("nan")))
        say("  %-10s runs (inst/s): empty %s; 1 M %s" %
            ("", " ".join("%.0f" % x["rate"] for x in e), " ".join("%.0f" % x["rate"] for x in f)))
    say()
    say("study-level query latency, ms            p50      p90      p99   matches (median/max)"
        "   goal p50 < 5 ms")
    for engine in ("SQLite", "PostgreSQL"):
        for mode, label in (("index", "arc_index_query"), ("dicom", "C-FIND, one association")):
            r = results.get((engine, mode))
            if not r:
                continue
            for kind, name in (("pn", "PatientName SMI*"), ("date", "StudyDate 1 month")):
                p50, p90, p99, n, med, mx = r[kind]
                say("  %-10s %-24s %-17s %6.2f %8.2f %8.2f   %6.0f / %-6d   %s" %
                    (engine, label, name, p50, p90, p99, med, mx,
                     "met" if p50 < 5 else "MISSED"))
    say()
    say("Commands: %s bench/scale.py %s" % (sys.executable, " ".join(sys.argv[1:])))
    say("  ingest: telerad serve --data DIR [--index URL] --dicom-port 0; "
        "TCP_NODELAY=1 storescu -v -aec TELERAD 127.0.0.1 PORT FILES...")
    say("  queries: bench/out/scale/scale_query index URL bench/out/scale/queries.txt; "
        "scale_query dicom 127.0.0.1 PORT bench/out/scale/queries.txt")


if __name__ == "__main__":
    main()
