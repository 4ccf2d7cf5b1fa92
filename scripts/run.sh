#!/usr/bin/env bash
# Build telerad and run it on its embedded default (no configuration needed). Arguments are
# passed to the binary: `scripts/run.sh dump FILE` runs `telerad dump FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
if (($# == 0)); then
    # `telerad serve` arrives with the network layer; until then show what the CLI does.
    exec build/telerad --help
fi
exec build/telerad "$@"
