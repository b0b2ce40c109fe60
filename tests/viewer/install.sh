#!/usr/bin/env bash
# tests/viewer/install.sh: installs the viewer test's npm parts into tests/viewer/node_modules (git-ignored).
#   - puppeteer-core, exactly as package-lock.json pins it (npm ci; no browser is downloaded: Debian's chromium
#     is used);
#   - the prebuilt OHIF Viewer: @ohif/app's published tarball, version and sha512 pinned in package.json "ohif".
#     It is unpacked, not installed: its package.json depends on unpublished workspace versions (@ohif/i18n
#     3.13.2 is not on the registry), so `npm install @ohif/app` fails, and only its dist/ is needed anyway.
# System packages (Debian 12): apt-get install -y chromium orthanc orthanc-dicomweb dcmtk nodejs npm
#   Needs the npm registry; nothing else is fetched.
set -euo pipefail
cd "$(dirname "$0")"
export PUPPETEER_SKIP_DOWNLOAD=1 PUPPETEER_SKIP_CHROMIUM_DOWNLOAD=1
npm ci --no-audit --no-fund

read -r name version integrity < <(node -e '
  const o = require("./package.json").ohif; console.log(o.package, o.version, o.integrity)')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tarball=$(cd "$tmp" && npm pack "$name@$version" --silent | tail -1)
actual="sha512-$(openssl dgst -sha512 -binary "$tmp/$tarball" | base64 -w0)"
[ "$actual" = "$integrity" ] || { echo "install.sh: $tarball has $actual, package.json pins $integrity" >&2; exit 1; }
mkdir -p "$tmp/x" node_modules/@ohif
tar -xzf "$tmp/$tarball" -C "$tmp/x"
rm -rf "node_modules/$name"
mv "$tmp/x/package" "node_modules/$name"
[ -f "node_modules/$name/dist/index.html" ] || { echo "install.sh: no dist/index.html in $name@$version" >&2; exit 1; }
echo "installed puppeteer-core $(node -p 'require("puppeteer-core/package.json").version') and $name@$version (dist/)"
