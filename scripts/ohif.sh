#!/usr/bin/env bash
# Install the prebuilt OHIF viewer (npm package @ohif/app, pinned below) for `telerad serve`,
# which serves it at /viewer/ from `ohif/` next to its binary (or --viewer-dir DIR).
#
#   scripts/ohif.sh [DIR]      install into DIR (default: build/ohif of this checkout)
#
# The package tarball is fetched once with `npm pack` into a cache directory
# ($TELERAD_CACHE, default ~/.cache/telerad) and checked against the pinned npm integrity
# (sha512); later installs are offline. An install is skipped when DIR already holds this
# version made by this script (stamp file DIR/.telerad-ohif). What the install changes:
#   - every root-absolute path of the dist ("/app.bundle.js", webpack's public path "/",
#     url(/font.woff2), the manifest's icons) is rewritten to live under /viewer/;
#   - dist/ort (the ONNX runtime of optional AI tools, ~136 MB) is left out: nothing the
#     viewer loads by default needs it;
#   - app-config.js points OHIF at telerad's DICOMweb on the same origin.
# To update OHIF: change OHIF_VERSION and OHIF_INTEGRITY (`npm view @ohif/app@X dist.integrity`),
# run this script, then the browser test (ctest -L browser).
set -euo pipefail

OHIF_VERSION=3.13.2
OHIF_INTEGRITY=sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
BASE=/viewer/ # where telerad serves it (src/cli/cmd_serve.c)

here=$(cd "$(dirname "$0")" && pwd)
target=${1:-$here/../build/ohif}
cache=${TELERAD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/telerad}
tarball=$cache/ohif-app-$OHIF_VERSION.tgz

die() {
    echo "ohif.sh: $*" >&2
    exit 1
}

# The stamp names the version, and this script's own checksum: a changed rewrite reinstalls.
stamp="@ohif/app $OHIF_VERSION $OHIF_INTEGRITY $(sha256sum "$0" | cut -c1-16)"
if [[ -f $target/.telerad-ohif && "$(cat "$target/.telerad-ohif")" == "$stamp" ]]; then
    exit 0
fi

# The pinned integrity as hex, to compare with sha512sum's.
want_sha512=$(printf '%s' "${OHIF_INTEGRITY#sha512-}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
sha512_of() { sha512sum "$1" | cut -d' ' -f1; }

mkdir -p "$cache"
if [[ ! -f $tarball || "$(sha512_of "$tarball")" != "$want_sha512" ]]; then
    command -v npm >/dev/null || die "npm is needed to fetch @ohif/app $OHIF_VERSION once" \
        "(Debian: apt-get install npm), or put ohif-app-$OHIF_VERSION.tgz into $cache"
    echo "ohif.sh: fetching @ohif/app@$OHIF_VERSION (~50 MB, once) into $cache" >&2
    fetch=$(mktemp -d "$cache/fetch.XXXXXX")
    trap 'rm -rf "$fetch"' EXIT
    # npm checks the tarball against the registry's integrity; we check it against ours.
    if ! (cd "$fetch" &&
        npm pack --loglevel=error "@ohif/app@$OHIF_VERSION" >/dev/null 2>"$fetch/log"); then
        cat "$fetch/log" >&2
        die "npm pack @ohif/app@$OHIF_VERSION failed (no network? the registry unreachable?)"
    fi
    got=$(sha512_of "$fetch/ohif-app-$OHIF_VERSION.tgz")
    [[ $got == "$want_sha512" ]] ||
        die "@ohif/app@$OHIF_VERSION: sha512 $got does not match $OHIF_INTEGRITY; not installed"
    mv "$fetch/ohif-app-$OHIF_VERSION.tgz" "$tarball"
fi

# Unpack beside the target, rewrite, then swap it in: never half a viewer in DIR. (A telerad
# already serving DIR keeps the directory it opened: restart it after an update.)
mkdir -p "$(dirname "$target")"
target=$(cd "$(dirname "$target")" && pwd)/$(basename "$target")
new=$target.new.$$
old=$target.old.$$
trap 'rm -rf "$new" "$old" ${fetch:+"$fetch"}' EXIT
mkdir "$new"
tar -xzf "$tarball" -C "$new" --strip-components=2 --exclude=package/dist/ort package/dist
[[ -f $new/index.html ]] || die "$tarball has no dist/index.html"

# Root-absolute paths -> $BASE. Each rewrite must find what it rewrites: a new OHIF that
# changed its layout fails here rather than serving a black page.
rewrite() { # FILE SED-EXPRESSION PATTERN-THAT-MUST-BE-GONE
    sed -i -e "$2" "$1"
    if grep -q -- "$3" "$1"; then
        die "$1: '$3' left after the rewrite"
    fi
}
grep -q 'window.PUBLIC_URL="/"' "$new/index.html" || die "index.html: no PUBLIC_URL to rewrite"
rewrite "$new/index.html" "s#PUBLIC_URL=\"/\"#PUBLIC_URL=\"$BASE\"#g" 'PUBLIC_URL="/"'
rewrite "$new/index.html" "s#\\(href\\|src\\|content\\)=\"/\\([^/]\\)#\\1=\"$BASE\\2#g" 'href="/[^v]'
mapfile -t bundles < <(grep -l '__webpack_require__.p = "/"' "$new"/*.js || true)
[[ " ${bundles[*]} " == *"/app.bundle."* ]] || die "app.bundle: no webpack public path to rewrite"
for f in "${bundles[@]}"; do
    rewrite "$f" "s#__webpack_require__.p = \"/\"#__webpack_require__.p = \"$BASE\"#g" \
        '__webpack_require__.p = "/"'
done
for f in "$new"/*.css; do
    rewrite "$f" "s#url(/\\([^/]\\)#url($BASE\\1#g" 'url(/[^v]'
done
for f in "$new/manifest.json" "$new/assets/manifest.webapp" \
    "$new/assets/yandex-browser-manifest.json" "$new/assets/browserconfig.xml"; do
    if [[ -f $f ]]; then
        rewrite "$f" "s#\"/assets/#\"${BASE}assets/#g" '"/assets/'
    fi
done
# The service worker's precache list (OHIF registers it only off localhost).
if [[ -f $new/sw.js ]]; then
    sed -i "s#\"url\":\"/#\"url\":\"$BASE#g" "$new/sw.js"
fi

# The configuration: telerad's DICOMweb on the same origin (OHIF's config reference:
# https://docs.ohif.org/configuration/configurationFiles).
cat >"$new/app-config.js" <<EOF
/** @type {AppTypes.Config} */
// Written by telerad's scripts/ohif.sh for @ohif/app $OHIF_VERSION: OHIF served by telerad at
// $BASE, reading studies from telerad's DICOMweb on the same origin.
window.config = {
  name: 'telerad',
  routerBasename: '${BASE%/}',
  extensions: [],
  modes: [],
  // No onboarding tour.
  customizationService: { 'ohif.tours': { \$set: [] } },
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: { option: 'never' },
  maxNumRequests: { interaction: 100, thumbnail: 5, prefetch: 25 },
  showErrorDetails: 'always',
  defaultDataSourceName: 'telerad',
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'telerad',
      configuration: {
        friendlyName: 'telerad',
        name: 'telerad',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        wadoUriRoot: '/wado',
        qidoSupportsIncludeField: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        supportsReject: false,
        staticWado: false,
        imageRendering: 'wadors',
        // A JPEG rendered by telerad (/thumbnail): a few kB instead of a whole frame.
        thumbnailRendering: 'thumbnail',
        enableStudyLazyLoad: true,
        bulkDataURI: { enabled: true, relativeResolution: 'studies' },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
};
EOF
printf '%s\n' "$stamp" >"$new/.telerad-ohif"

if [[ -e $target ]]; then
    mv "$target" "$old"
fi
mv "$new" "$target"
rm -rf "$old"
echo "ohif.sh: @ohif/app $OHIF_VERSION installed in $target ($(du -sh "$target" | cut -f1))" >&2
