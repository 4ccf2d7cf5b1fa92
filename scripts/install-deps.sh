#!/usr/bin/env bash
# Install the Debian 12 packages telerad needs to build, run and test. Idempotent: packages
# already installed are skipped, and apt-get is only called when something is missing.
# Uses sudo when not run as root.
set -euo pipefail

# Build and run.
BUILD=(build-essential cmake pkg-config zlib1g-dev libjansson-dev libssl-dev libsqlite3-dev
       libjpeg62-turbo-dev libcharls-dev libopenjp2-7-dev libgdcm-dev
       libpq-dev libmicrohttpd-dev libicu-dev libcurl4-openssl-dev
       libargon2-dev libjwt-dev libxxhash-dev)
# Test: unit tests, fuzzing, and the real peers used as oracles.
TEST=(libcmocka-dev clang libclang-rt-14-dev python3 python3-pydicom python3-numpy dcmtk
      dicom3tools time valgrind openssl postgresql orthanc iproute2)
TEST+=(libopenjp2-tools) # opj_decompress: the oracle of tests/compat/codecs.py
BUILD+=(libspng-dev) # rendering to PNG (src/dicom/render.c; JPEG uses libjpeg62-turbo-dev above)
TEST+=(python3-pil) # tests/compat/render.py decodes PNGs faster with it (optional)
TEST+=(chromium) # tests/browser: Debian's Chromium, driven by playwright-core (never its own)
BUILD+=(libcairo2-dev libfontconfig-dev fonts-dejavu-core) # report PDFs (src/services/reports/pdf.c)
TEST+=(poppler-utils python3-hl7) # tests/reports: pdftotext reads the PDFs, python3-hl7 the ORUs
TEST+=(radosgw ceph-mon ceph-osd ceph-base) # tests/s3: a one-node Ceph with its S3 gateway
TEST+=(libgdcm-tools) # gdcmanon: the peer of bench/deid

want=("${BUILD[@]}")
if [[ "${1:-}" == "--test" ]]; then
    want+=("${TEST[@]}")
fi

missing=()
for p in "${want[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# npm fetches the OHIF viewer (scripts/ohif.sh) and the tests' npm packages. A Node.js from
# elsewhere (NodeSource's nodejs bundles npm) is kept: Debian's npm only when npm is missing.
if ! command -v npm >/dev/null; then
    for p in nodejs npm; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
            missing+=("$p")
        fi
    done
fi

# With --test: the tests' npm packages (package.json at the repository root: playwright-core
# for tests/browser), `npm ci` unless node_modules already matches package-lock.json.
npm_ci() {
    [[ "${want_npm:-}" == yes ]] || return 0
    local root lock_sum stamp
    root=$(cd "$(dirname "$0")/.." && pwd)
    [[ -f $root/package-lock.json ]] || return 0
    lock_sum=$(sha256sum "$root/package-lock.json" | cut -d' ' -f1)
    stamp=$root/node_modules/.telerad-package-lock
    if [[ -f $stamp && "$(cat "$stamp")" == "$lock_sum" ]]; then
        return 0
    fi
    echo "install-deps: npm ci (the tests' npm packages)" >&2
    (cd "$root" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$lock_sum" >"$stamp"
}
want_npm=no
if [[ "${1:-}" == "--test" ]]; then
    want_npm=yes
fi

if ((${#missing[@]} == 0)); then
    npm_ci
    exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
npm_ci
