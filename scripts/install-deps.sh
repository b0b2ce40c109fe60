#!/usr/bin/env bash
# Installs every Debian 12 package Nephra needs to build, test, train and run. Idempotent.
set -euo pipefail

BUILD_PKGS=(build-essential cmake ninja-build pkg-config git
  libdcmtk-dev libopencv-dev libeigen3-dev libboost-dev libspdlog-dev libfmt-dev
  libtomlplusplus-dev nlohmann-json3-dev libsystemd-dev libssl-dev
  libgtest-dev libgmock-dev libbenchmark-dev)
TEST_PKGS=(dcmtk dicom3tools orthanc libgdcm-tools curl openssl python3 systemd prometheus)
LINT_PKGS=(clang clang-format clang-tidy)
TRAIN_PKGS=(python3-torch python3-torchvision python3-onnx python3-opencv python3-sklearn
  python3-matplotlib python3-numpy python3-pydicom libopenblas0-pthread)

want=("${BUILD_PKGS[@]}" "${TEST_PKGS[@]}" "${LINT_PKGS[@]}")
if [[ "${NEPHRA_WITH_TRAINING:-1}" == "1" ]]; then want+=("${TRAIN_PKGS[@]}"); fi

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#want[@]} packages present"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
