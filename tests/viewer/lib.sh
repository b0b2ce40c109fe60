# Shared by the browser tests (sourced): bench/lib/common.sh's helpers, skip (77) and fail, and the browser check.
# shellcheck shell=bash
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=../../bench/lib/common.sh
. "$root/bench/lib/common.sh"

skip() { nb_log "SKIP: $*"; exit 77; }
fail() { nb_log "FAIL: $*"; exit 1; }

# Sets $chromium, or skips saying what is missing: the browser, Node.js or the npm parts.
vt_require_browser() {
  chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
  [ -n "$chromium" ] && [ -x "$chromium" ] || skip "chromium is not installed (apt-get install -y chromium)"
  command -v node >/dev/null || skip "node is not installed (apt-get install -y nodejs)"
  [ -f "$(dirname "${BASH_SOURCE[0]}")/node_modules/puppeteer-core/package.json" ] ||
    skip "tests/viewer/node_modules is not installed (tests/viewer/install.sh)"
}
