#!/usr/bin/env bash
# tests/viewer/status-page.sh [BUILD_DIR] [OUT_DIR]
#
# The node's status page in a real browser (Debian's chromium, driven by puppeteer-core): nephrad runs with
# http.try_page = true, the committed fixture CT is sent with storescu, then status-page-test.js checks that the page
# loads without a console error, lists the study that just went through (by its hashed key, with its findings;
# storescp plays the archive its results go back to),
# classifies a fixture slice through the try form and explains a bad upload. Screenshots go to OUT_DIR.
# Exit status: 0 success; 77 skipped (chromium or tests/viewer/node_modules missing); anything else a failure.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

build=${1:-${NEPHRA_BUILD:-$root/build/release}}
out=${2:-}
nephrad=$build/app/nephrad
[ -x "$nephrad" ] || fail "$nephrad is missing: build the nephrad target first"
vt_require_browser
nb_require storescu storescp curl

work=$(mktemp -d "${TMPDIR:-/var/tmp}/nephra-status-XXXXXX")
export NB_PIDS_FILE=$work/pids
: >"$NB_PIDS_FILE"
finish() {
  local rc=$?
  nb_cleanup
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 77 ]; then tail -20 "$work/nephrad.log" >&2; fi
  rm -rf "$work"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM
[ -n "$out" ] || out=$(mktemp -d "${TMPDIR:-/var/tmp}/status-out-XXXXXX")
mkdir -p "$out" && out=$(cd "$out" && pwd)

read -r dicom_port http_port archive_port < <(nb_free_ports 3)
mkdir -p "$work/archive"
storescp -aet STORESCU --output-directory "$work/archive" "$archive_port" >"$work/storescp.log" 2>&1 &
nb_track $!
cat >"$work/nephra.toml" <<TOML
[node]
ae_title = "NEPHRA"
bind = "127.0.0.1"
port = $dicom_port
spool_dir = "$work/spool"
[study]
stable_seconds = 1
[engine]
model = "${NEPHRA_MODEL:-$root/models/nephra-kidney.json}"
[http]
port = $http_port
try_page = true
[log]
target = "console"
[[peers]]
ae_title = "STORESCU"
host = "127.0.0.1"
port = $archive_port
TOML
"$nephrad" --config "$work/nephra.toml" >"$work/nephrad.log" 2>&1 &
nb_track $!
nb_wait_http "http://127.0.0.1:$http_port/healthz" 30 || fail "nephrad did not become ready"

fixture=$root/tests/data/tcia-kidney-slices
storescu -aet STORESCU -aec NEPHRA 127.0.0.1 "$dicom_port" "$fixture"/*.dcm >"$work/storescu.log" 2>&1 ||
  fail "storescu failed: $(cat "$work/storescu.log")"
for _ in $(seq 1 600); do
  curl -s "http://127.0.0.1:$http_port/status.json" | grep -q '"state":"done"' && break
  sleep 0.1
done
printf 'this is not an image\n' >"$work/junk.bin"

CHROMIUM=$chromium node "$here/status-page-test.js" "http://127.0.0.1:$http_port/" "$fixture/1-072.dcm" \
  "$work/junk.bin" "$out" || fail "status page test failed (screenshots in $out)"
nb_log "status page OK; screenshots in $out"
