#!/usr/bin/env bash
# run.sh - a short, bounded fuzzing run of every telerad fuzz target (what CI does).
#
#   fuzz/run.sh BUILD_DIR SECONDS        e.g.  fuzz/run.sh build-fuzz 60
#
# BUILD_DIR is a build configured with CC=clang and -DTELERAD_FUZZ=ON:
#   CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DTELERAD_FUZZ=ON -DTELERAD_TESTS=OFF
#   cmake --build build-fuzz -j2
# SECONDS is split evenly between the targets, which run one after the other, each on a
# TEMPORARY copy of its committed corpus (fuzz/corpus/NAME): the committed corpus is never
# modified. Exit status 0 when nothing was found; 1 when a target crashed, leaked, timed out
# (-timeout=10 per input) or ran out of memory (-rss_limit_mb=2048): the reproducer is kept
# under BUILD_DIR/fuzz-artifacts/ and its path printed with the command that replays it; 2 on
# wrong usage. libFuzzer's progress goes to BUILD_DIR/fuzz-logs/NAME.log; only the final stats
# and any report are printed.
#
# Longer campaigns (a developer's machine, not CI). Use a work corpus outside the tree and as
# many workers as cores; inputs that find new coverage accumulate in the work corpus:
#   mkdir -p /tmp/fz && cp fuzz/corpus/part10/* /tmp/fz/
#   build-fuzz/fuzz/fuzz_part10 -dict=fuzz/part10.dict -max_len=8192 -timeout=10 \
#       -rss_limit_mb=2048 -jobs=4 -workers=4 -max_total_time=3600 /tmp/fz
# (fuzz_json likewise with fuzz/json.dict and fuzz/corpus/json). Replay one input:
#   build-fuzz/fuzz/fuzz_part10 CRASH_FILE        (or: build/telerad dump --force CRASH_FILE)
# Shrink a crashing input before filing it:
#   build-fuzz/fuzz/fuzz_part10 -minimize_crash=1 -runs=20000 CRASH_FILE
# Add new coverage to the committed corpus - only the inputs that add coverage are copied, and
# existing seeds are kept (commit the result; fuzz/make_corpus.py leaves merged files alone):
#   build-fuzz/fuzz/fuzz_part10 -merge=1 -dict=fuzz/part10.dict fuzz/corpus/part10 /tmp/fz
# Minimise the committed corpus itself (rarely; regenerate the seeds afterwards):
#   mkdir /tmp/min && build-fuzz/fuzz/fuzz_part10 -merge=1 /tmp/min fuzz/corpus/part10
#   /usr/bin/python3 fuzz/make_corpus.py   # then replace fuzz/corpus/part10 by /tmp/min + seeds
# Every crash found becomes a regression: add the (minimised) file to the corpus, and a case to
# tests/robustness/malformed.py if the CLI can reach it.
set -euo pipefail

if [[ $# -ne 2 || ! "$2" =~ ^[0-9]+$ ]]; then
    echo "usage: fuzz/run.sh BUILD_DIR SECONDS" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# target name : corpus directory : dictionary (may be empty) : maximum input length
targets=("fuzz_part10:part10:part10.dict:8192" "fuzz_json:json:json.dict:4096"
         "fuzz_dimse:dimse::4096" "fuzz_pdu:pdu::20000" "fuzz_multipart:multipart::4096"
         "fuzz_hl7:hl7:hl7.dict:8192")
targets+=("fuzz_pixel:pixel::65536") # pixel data frames and codecs
per=$((seconds / ${#targets[@]}))
((per >= 1)) || per=1

work=$(mktemp -d "${TMPDIR:-/tmp}/telerad-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
artifacts="$build/fuzz-artifacts"
logs="$build/fuzz-logs"
mkdir -p "$artifacts" "$logs"

status=0
for spec in "${targets[@]}"; do
    IFS=: read -r target corpus dict max_len <<<"$spec"
    binary="$build/fuzz/$target"
    if [[ ! -x "$binary" ]]; then
        echo "run.sh: $binary is missing: build with CC=clang -DTELERAD_FUZZ=ON" >&2
        exit 2
    fi
    mkdir -p "$work/$corpus"
    cp -R "$here/corpus/$corpus/." "$work/$corpus/"
    seeds=$(find "$work/$corpus" -type f | wc -l)
    log="$logs/$target.log"
    before=$(find "$artifacts" -type f -name "$target-*" | sort)
    echo "== $target: ${per}s on a copy of fuzz/corpus/$corpus ($seeds inputs)"
    set +e
    # -close_fd_mask=1: the targets print nothing useful on stdout; stderr stays open for
    # sanitizer reports and the targets' invariant messages.
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=1:allocator_may_return_null=1" \
    UBSAN_OPTIONS="${UBSAN_OPTIONS:-}:print_stacktrace=1:halt_on_error=1" \
        "$binary" -max_total_time="$per" -timeout=10 -rss_limit_mb=2048 \
        -malloc_limit_mb=2048 -max_len="$max_len" ${dict:+-dict="$here/$dict"} -close_fd_mask=1 \
        -print_final_stats=1 -artifact_prefix="$artifacts/$target-" "$work/$corpus" \
        >"$log" 2>&1
    rc=$?
    set -e
    grep -E '^(stat::|Done|INFO: (Loaded|seed corpus))' "$log" | sed 's/^/   /' || true
    last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
    [[ -n "$last" ]] && echo "   last: $last"
    echo "   corpus after: $(find "$work/$corpus" -type f | wc -l) inputs; log: $log"
    found=$(comm -13 <(echo "$before") <(find "$artifacts" -type f -name "$target-*" | sort) |
            sed '/^$/d')
    if [[ $rc -ne 0 || -n "$found" ]]; then
        status=1
        echo "!! $target FAILED (exit status $rc). The report:"
        # From the first sanitizer/libFuzzer error line to the end.
        awk '/^(==[0-9]+==ERROR|.*runtime error:|.*invariant failed|ALARM|==[0-9]+== ERROR: libFuzzer)/ {p=1} p' \
            "$log" | head -80 | sed 's/^/   /'
        for f in $found; do
            echo "!! reproducer: $f"
            echo "!!   replay:   $binary $f"
        done
    fi
done
if [[ $status -ne 0 ]]; then
    echo "run.sh: fuzzing found a problem (see above)" >&2
else
    echo "run.sh: no crash, leak, timeout or out-of-memory in ${seconds}s"
fi
exit $status
