#!/usr/bin/env bash
# Installs what is missing, builds and runs the whole test suite.
#   scripts/test.sh          the dev preset (warnings are errors)
#   scripts/test.sh asan     the same suite under AddressSanitizer + UBSan
#   scripts/test.sh tsan     the round store and pipeline unit tests under ThreadSanitizer
set -euo pipefail
cd "$(dirname "$0")/.."
preset="${1:-dev}"
./scripts/install-deps.sh
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$(nproc)"
ctest --preset "$preset" -j 2
