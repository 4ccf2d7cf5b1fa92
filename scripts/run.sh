#!/usr/bin/env bash
# Build telerad, assemble the web application and install the OHIF viewer next to it, and start
# the server on its embedded default (no configuration: data in ./telerad-data, SQLite, DICOM
# on 127.0.0.1:11112, HTTP on 127.0.0.1:8080: the web application at http://127.0.0.1:8080/,
# the viewer at http://127.0.0.1:8080/viewer/). Arguments go to `telerad serve`:
# `scripts/run.sh --http-port 8081`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
# The web application at / (web/ plus its npm charting library, into build/web).
scripts/web.sh build/web
# The viewer is fetched once (npm), then installed from the cache; without it telerad still
# serves DICOM and DICOMweb.
if ! scripts/ohif.sh build/ohif; then
    echo "run.sh: the OHIF viewer is not installed; starting telerad without it" >&2
fi
exec build/telerad serve "$@"
