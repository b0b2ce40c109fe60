#!/usr/bin/env bash
# Installs what is missing, builds the release preset and runs the node in the foreground
# with the shipped configuration (or the file given as $1).
set -euo pipefail
cd "$(dirname "$0")/.."
NEPHRA_WITH_TRAINING=0 ./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target nephrad
exec ./build/release/app/nephrad --config "${1:-config/nephra.toml}"
