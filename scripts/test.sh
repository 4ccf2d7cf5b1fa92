#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 checkout: installs what it needs, then builds
# and runs every test twice - a release build with warnings as errors, and a build with
# AddressSanitizer + UndefinedBehaviorSanitizer - and finally a short fuzzing run.
#
#   scripts/test.sh            everything (what CI runs)
#   scripts/test.sh --quick    the release build's tests only
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --test

jobs=$(nproc)
step() { printf '\n== %s ==\n' "$*"; }

step "release build (-Werror)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTELERAD_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
# The OHIF viewer for the browser tests (tests/browser): fetched once, then from the cache.
# (The web application's test assembles web/ itself with scripts/web.sh.)
scripts/ohif.sh build/ohif
scripts/web.sh build/web
step "tests (release)"
ctest --test-dir build --output-on-failure -j"$jobs"

if [[ "${1:-}" == "--quick" ]]; then
    exit 0
fi

step "sanitizer build (ASan + UBSan, -Werror)"
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DTELERAD_SANITIZE=ON -DTELERAD_WERROR=ON \
    -DTELERAD_OHIF_DIR="$PWD/build/ohif" >/dev/null
cmake --build build-asan -j"$jobs"
step "tests (ASan + UBSan)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ctest --test-dir build-asan --output-on-failure -j"$jobs"

step "fuzzing (libFuzzer, short run)"
CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DTELERAD_FUZZ=ON -DTELERAD_TESTS=OFF \
    >/dev/null
cmake --build build-fuzz -j"$jobs"
# Replays the committed corpora, then fuzzes every target for a minute in all.
ctest --test-dir build-fuzz --output-on-failure

step "all tests passed"
