#!/usr/bin/env bash
# Assemble the web application that `telerad serve` serves at / : the files of web/ (plain ES
# modules, no build step) plus the charting library from npm (chart.js, pinned in
# package.json), copied to vendor/ so that nothing is fetched from elsewhere at run time.
#
#   scripts/web.sh [DIR]      assemble into DIR (default: build/web of this checkout, which
#                             `telerad serve` finds next to its binary)
#
# When node_modules lacks chart.js it runs `npm ci` once (set TELERAD_WEB_NO_NPM=1 to skip
# that: the analytics page then shows its numbers as tables only). DIR is updated in place
# (a running server keeps serving it); files that are no longer in web/ are removed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/build/web}
chart=$root/node_modules/chart.js/dist/chart.umd.min.js

if [[ ! -f $chart && "${TELERAD_WEB_NO_NPM:-}" != 1 ]]; then
    echo "web.sh: npm ci (chart.js for the analytics charts)" >&2
    if ! (cd "$root" && npm ci --no-audit --no-fund --loglevel=error) >&2; then
        echo "web.sh: npm ci failed: the web application is assembled without charts" >&2
    fi
fi

mkdir -p "$out"
cp -R "$root/web/." "$out/"
# Files left from an earlier web/ (renamed or deleted pages) go.
(cd "$out" && find . -type f ! -path './vendor/*' -print) | while read -r f; do
    [[ -e "$root/web/$f" ]] || rm -f "$out/$f"
done
mkdir -p "$out/vendor"
if [[ -f $chart ]]; then
    cp "$chart" "$out/vendor/chart.umd.min.js"
    cp "$root/node_modules/chart.js/LICENSE.md" "$out/vendor/chart.js-LICENSE.md"
else
    rm -f "$out/vendor/chart.umd.min.js"
fi
echo "web.sh: web application in $out" >&2
