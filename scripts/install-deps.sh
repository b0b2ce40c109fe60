#!/usr/bin/env bash
# Installs every Debian 12 package Nephra needs to build, test, train and run. Idempotent.
set -euo pipefail

BUILD_PKGS=(build-essential cmake ninja-build pkg-config git
  libdcmtk-dev libopencv-dev libeigen3-dev libboost-dev libspdlog-dev libfmt-dev
  libtomlplusplus-dev nlohmann-json3-dev libsystemd-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev libdnnl-dev)
TEST_PKGS=(dcmtk dicom3tools orthanc orthanc-dicomweb libgdcm-tools curl openssl python3 systemd prometheus chromium)
LINT_PKGS=(clang clang-format clang-tidy)
TRAIN_PKGS=(python3-torch python3-torchvision python3-onnx python3-opencv python3-sklearn
  python3-matplotlib python3-numpy python3-pydicom libopenblas0-pthread)

want=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" "${LINT_PKGS[@]}")
# Node.js runs the browser tests; a machine that has it from elsewhere (with its own npm) keeps it.
if ! command -v npm >/dev/null; then want+=(nodejs npm); fi
if [[ "${NEPHRA_WITH_TRAINING:-1}" == "1" ]]; then want+=("${TRAIN_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present"
else
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The browser tests' npm parts (puppeteer-core, the OHIF Viewer's dist/), pinned; again only when the pins change.
viewer="$(dirname "$0")/../tests/viewer"
stamp="$viewer/node_modules/.nephra-installed"
pins=$(cat "$viewer/package.json" "$viewer/package-lock.json" | sha256sum | cut -d' ' -f1)
if [[ "${NEPHRA_WITH_BROWSER:-1}" == "1" && "$(cat "$stamp" 2>/dev/null)" != "$pins" ]]; then
  if "$viewer/install.sh"; then
    echo "$pins" >"$stamp"
  else  # the node builds and runs without them; the browser tests then report skipped, saying why
    echo "install-deps: WARNING: tests/viewer/install.sh failed (npm registry unreachable?): browser tests will skip" >&2
  fi
fi
