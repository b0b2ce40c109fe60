#!/usr/bin/env bash
# Engine throughput (oneDNN, and OpenCV DNN the reference) against ONNX Runtime and PyTorch on the same
# ONNX/weights, same slices and threads, one run.
#   bench/engine_bench.sh build/release [SLICES]
# Needs Node.js + npm (onnxruntime-node is installed into bench/node_modules on first use).
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/release}"
slices="${2:-256}"
model=models/nephra-kidney.json
onnx=models/nephra-kidney.onnx
# --ignore-scripts: the package bundles the CPU runtime; its install script only fetches the CUDA provider.
if [[ ! -d bench/node_modules/onnxruntime-node ]]; then
  (cd bench && npm install --no-save --ignore-scripts onnxruntime-node >/dev/null)
fi
export MALLOC_MMAP_THRESHOLD_=4000000000 MALLOC_TRIM_THRESHOLD_=4000000000
for threads in 1 2; do
  "$build/bench/nephra_gemm_bench" "$threads"
  for batch in 1 8; do
    "$build/bench/nephra_engine_bench" "$model" "$slices" "$threads" "$batch" --backend onednn
    "$build/bench/nephra_engine_bench" "$model" "$slices" "$threads" "$batch" --backend opencv
    node bench/ort_bench.js "$onnx" "$slices" "$threads" "$batch"
    /usr/bin/python3 bench/torch_bench.py models/nephra-kidney.pt "$slices" "$threads" "$batch"
  done
done
