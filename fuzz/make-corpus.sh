#!/usr/bin/env bash
# Seed corpus for the libFuzzer harnesses, in fuzz/corpus/seeds/<harness>/ (fuzz/corpus/ is ignored by git).
# Re-run any time: the seed folders are rebuilt from scratch (what the fuzzer found, in fuzz/corpus/grown/, stays). Seeds are kept small where possible (libFuzzer mutates faster on short inputs):
# real CT slices scaled down with dcmscale, then re-encoded into every transfer syntax the engine decodes, plus a
# few full-size and deliberately broken files.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$here/corpus/seeds}
shared=${NEPHRA_SHARED:-$root/../shared}
fixture=$root/tests/data/tcia-kidney-slices

for tool in dcmscale dcmconv dcmcjpeg dcmcjpls dcmcrle dcmodify dcmj2pnm dcmdump; do
  command -v "$tool" >/dev/null || { echo "make-corpus.sh: $tool (DCMTK) is missing" >&2; exit 2; }
done

rm -rf "$out"
mkdir -p "$out/fuzz_dicom_engine" "$out/fuzz_config" "$out/fuzz_preprocess" "$out/fuzz_labels" "$out/fuzz_onnx"
d=$out/fuzz_dicom_engine
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- DICOM ---------------------------------------------------------------------------------------------------
sources=("$fixture/1-066.dcm")
cp "$fixture/1-066.dcm" "$d/fixture-1-066-full.dcm"  # one real 512×512 slice, as sent
if [ -d "$shared/data/dicom/tcia-pancreatic-ct-cbct-seg-001" ]; then
  sources+=("$shared/data/dicom/tcia-pancreatic-ct-cbct-seg-001/1-080.dcm")
  # The JPEG 2000 fixture (blank UIDs): exercises the "unsupported transfer syntax" path.
  j2k=$(find "$shared/data/dicom/totalsegmentator-example-ct-j2k" -type f | sort | head -n 1 || true)
  [ -n "$j2k" ] && [ "$(stat -c %s "$j2k")" -lt 600000 ] && cp "$j2k" "$d/shared-j2k.dcm"
  dup=$(find "$shared/data/dicom/dicom-numpy-dupe-positions" -type f -name '*.dcm' | sort | head -n 1 || true)
  [ -n "$dup" ] && [ "$(stat -c %s "$dup")" -lt 600000 ] && cp "$dup" "$d/shared-dupe-positions.dcm"
fi

n=0
for src in "${sources[@]}"; do
  n=$((n + 1))
  for side in 32 8; do
    base=$work/s$n-$side.dcm
    dcmscale +Sxv "$side" +Syv "$side" "$src" "$base"
    cp "$base" "$d/s$n-${side}px-implicit.dcm"
    dcmconv +te "$base" "$d/s$n-${side}px-explicit-le.dcm"
    dcmconv +tb "$base" "$d/s$n-${side}px-explicit-be.dcm"
    dcmconv +td "$base" "$d/s$n-${side}px-deflated.dcm"
    dcmconv -F "$base" "$d/s$n-${side}px-dataset-only.dcm"  # no preamble, no meta header
    dcmcjpeg +e1 "$base" "$d/s$n-${side}px-jpeg-lossless-sv1.dcm"
    dcmcjpeg +el "$base" "$d/s$n-${side}px-jpeg-lossless.dcm"
    dcmcjpeg +eb "$base" "$d/s$n-${side}px-jpeg-baseline.dcm" 2>/dev/null || true  # needs 8 bit: may refuse
    dcmcjpeg +ee "$base" "$d/s$n-${side}px-jpeg-extended.dcm"
    dcmcjpls "$base" "$d/s$n-${side}px-jpegls.dcm"
    dcmcjpls +en "$base" "$d/s$n-${side}px-jpegls-near.dcm" 2>/dev/null || true  # 16-bit: may refuse
    dcmcrle "$base" "$d/s$n-${side}px-rle.dcm"
  done
  small=$work/s$n-32.dcm
  cp "$small" "$work/m1.dcm"
  dcmodify -nb -m "(0028,0004)=MONOCHROME1" "$work/m1.dcm"
  cp "$work/m1.dcm" "$d/s$n-monochrome1.dcm"
  cp "$small" "$work/sg.dcm"
  dcmodify -nb -m "(0028,0103)=1" -m "(0028,1052)=0" "$work/sg.dcm"
  cp "$work/sg.dcm" "$d/s$n-signed.dcm"
  # Multi-frame: the same 32×32 pixels twice, NumberOfFrames 2.
  dcmdump +W "$work" "$small" >/dev/null
  raw=$(find "$work" -maxdepth 1 -name "*.raw" | head -n 1)
  cat "$raw" "$raw" > "$work/two-frames.bin"
  rm -f "$work"/*.raw
  cp "$small" "$work/mf.dcm"
  dcmodify -nb -i "(0028,0008)=2" -if "(7fe0,0010)=$work/two-frames.bin" "$work/mf.dcm"
  cp "$work/mf.dcm" "$d/s$n-multiframe.dcm"
  # Broken on purpose: truncated inside the pixel data, and inside the header.
  head -c $(( $(stat -c %s "$small") - 100 )) "$small" > "$d/s$n-truncated-pixels.dcm"
  head -c 400 "$small" > "$d/s$n-truncated-header.dcm"
  # What load_slices also accepts: already-windowed PNG and JPEG exports.
  dcmj2pnm +Ww 40 400 +on "$small" "$d/s$n-export.png" >/dev/null
  dcmj2pnm +Ww 40 400 +oj "$small" "$d/s$n-export.jpg" >/dev/null
done
head -c 200000 "$fixture/1-066.dcm" > "$d/fixture-1-066-truncated.dcm"

# --- labels (nephra validate) ---------------------------------------------------------------------------------
printf 'study,Cyst,Stone,Tumor,slices\ncase-1,0,0,1,Tumor:40-46 48\ncase-2,0,0,0,\ncase-3,1,1,0,Cyst:3;Stone:7-9\n' \
  > "$out/fuzz_labels/labels.csv"
printf '\xEF\xBB\xBF# site\nstudy,Tumor,Cyst,Stone\n1.2.840.1,1,0,0\n' > "$out/fuzz_labels/by-uid.csv"

# --- ONNX (the engine's own reader) ---------------------------------------------------------------------------
# Small graphs of the operators the oneDNN path runs (raw and packed float data, grouped convolution, Clip with
# attributes, a residual Add, the classifier head); the shipped model is 8.8 MB, too big a seed.
if /usr/bin/python3 -c "import onnx" 2>/dev/null; then
  /usr/bin/python3 - "$out/fuzz_onnx" <<'PY'
import sys
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
out = sys.argv[1]
def conv(name, x, w, group=1):
    return helper.make_node("Conv", [x, w, w + "_b"], [name], group=group, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                            strides=[1, 1], dilations=[1, 1])
inits = [numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "w1"),
         numpy_helper.from_array(np.zeros(4, np.float32), "w1_b"),
         numpy_helper.from_array(np.ones((4, 1, 3, 3), np.float32), "w2"),
         numpy_helper.from_array(np.zeros(4, np.float32), "w2_b"),
         helper.make_tensor("fc", TensorProto.FLOAT, [3, 4], [0.5] * 12),
         numpy_helper.from_array(np.zeros(3, np.float32), "fc_b")]
nodes = [conv("c1", "x", "w1"), helper.make_node("Clip", ["c1"], ["r1"], min=0.0, max=6.0),
         conv("c2", "r1", "w2", group=4), helper.make_node("Add", ["c2", "r1"], ["s"]),
         helper.make_node("GlobalAveragePool", ["s"], ["p"]), helper.make_node("Flatten", ["p"], ["f"], axis=1),
         helper.make_node("Gemm", ["f", "fc", "fc_b"], ["y"], transB=1)]
g = helper.make_graph(nodes, "seed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3]),
                       helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 4, 8, 8])], inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 10)])
open(out + "/mini.onnx", "wb").write(m.SerializeToString())
open(out + "/mini-truncated.onnx", "wb").write(m.SerializeToString()[:300])
PY
else
  printf '\x3a\x02\x0a\x00' > "$out/fuzz_onnx/empty-graph.onnx"
fi

# --- config --------------------------------------------------------------------------------------------------
c=$out/fuzz_config
cp "$root/config/nephra.toml" "$c/config-nephra.toml"
[ -f "$root/packaging/nephra.toml" ] && cp "$root/packaging/nephra.toml" "$c/packaging-nephra.toml"
for bin in "$root/build/release/app/nephrad" "$root/build/dev/app/nephrad"; do
  if [ -x "$bin" ]; then "$bin" --print-defaults > "$c/defaults.toml" 2>/dev/null || rm -f "$c/defaults.toml"; break; fi
done
cat > "$c/peers.toml" <<'TOML'
[node]
ae_title = "NEPHRA"
port = 11112
[study]
stable_seconds = 0.5
[results]
retry_initial_seconds = 0.1
retry_max_seconds = 2
[[peers]]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = 4242
[[peers]]
ae_title = "PACS_B"
host = "10.0.0.2"
port = 104
TOML
printf '[node]\nport = 99999999999999999999\n' > "$c/overflow.toml"
printf 'node = { ae_title = "X", port = 1 }\npeers = [ { ae_title = "A", host = "h", port = 2 } ]\n' > "$c/inline.toml"
printf '[study]\nstable_seconds = nan\n[results]\nretry_max_seconds = inf\ngive_up_hours = -0.0\n' > "$c/floats.toml"
printf '[log]\nlevel = "\\u00e9\\U0001F600"\n[node]\nspool_dir = """\nmulti\nline"""\n' > "$c/strings.toml"

# --- preprocess_hu: 2 size bytes, then float32 pixels -------------------------------------------------------
p=$out/fuzz_preprocess
python3 - "$p" <<'PY'
import math, struct, sys
out = sys.argv[1]
def seed(name, rows, cols, values):
    with open(f"{out}/{name}", "wb") as f:
        f.write(bytes([rows - 1, cols - 1]) + b"".join(struct.pack("<f", v) for v in values))
# a body: a disc of soft tissue (40 HU) in air (-1000 HU), with a bright spot
disc = []
for r in range(32):
    for c in range(32):
        d = math.hypot(r - 16, c - 16)
        disc.append(700.0 if d < 2 else 40.0 if d < 12 else -1000.0)
seed("disc-32.bin", 32, 32, disc)
seed("air-8.bin", 8, 8, [-1000.0] * 64)
seed("ramp-16x4.bin", 16, 4, [float(-1024 + 64 * i) for i in range(64)])
seed("specials-4.bin", 4, 4, [math.nan, math.inf, -math.inf, 3.4e38, -3.4e38, 0.0, -0.0, 1e-45] * 2)
seed("one-pixel.bin", 1, 1, [40.0])
PY

chmod -R u+w "$out"
echo "corpus in $out:"
for h in "$out"/*/; do echo "  $(basename "$h"): $(find "$h" -type f | wc -l) files, $(du -sh "$h" | cut -f1)"; done
