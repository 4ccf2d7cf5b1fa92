#!/usr/bin/env bash
# Install the Debian 12 packages telerad needs to build, run and test. Idempotent: packages
# already installed are skipped, and apt-get is only called when something is missing.
# Uses sudo when not run as root.
set -euo pipefail

# Build and run.
BUILD=(build-essential cmake pkg-config zlib1g-dev libjansson-dev libssl-dev libsqlite3-dev
       libpq-dev)
# Test: unit tests, fuzzing, and the real peers used as oracles.
TEST=(libcmocka-dev clang libclang-rt-14-dev python3 python3-pydicom python3-numpy dcmtk
      dicom3tools time valgrind openssl postgresql orthanc iproute2)

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
if ((${#missing[@]} == 0)); then
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
