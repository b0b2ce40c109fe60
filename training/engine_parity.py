#!/usr/bin/python3
"""The C++ engine (`nephra classify`) against the Python model on the whole committed grouped test split and on the
real TCIA series: class agreement and largest probability difference, and on the series whether each slice is "outside
the abdomen" (body_air above max_air_fraction). Writes training/results/engine_parity.json.
    /usr/bin/python3 training/engine_parity.py --nephra build/release/app/nephra      # records the figures
    ... --backend opencv   # the reference backend instead of oneDNN (the default)
    ... --manifest DIR/nephra-kidney.json   # another model (its .pt beside it) instead of models/
    ... --check      # the ctest: exit 1 unless agreement >= 99.9 %, max difference <= 1e-3 and the air check agrees
                     # on every slice; writes nothing
Skips (exit 0 with a message) where ../shared is absent.
"""
import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from augment import resize_all  # noqa: E402
from data import load_split  # noqa: E402
from export_onnx import load_deployed  # noqa: E402
from model import to_input  # noqa: E402
from paths import DATASET, REPO, SHARED, dataset_present, tune_malloc  # noqa: E402
from preprocess import MAX_AIR_FRACTION, body_air, dicom_slice_to_u8, hu_of  # noqa: E402

MODELS = REPO / "models"
SERIES = SHARED / "data" / "dicom" / "tcia-pancreatic-ct-cbct-seg-001"


@torch.no_grad()
def python_probs(model, u8, temperature, bs=32):
    out = []
    for i in range(0, len(u8), bs):
        logits, _ = model(to_input(u8[i:i + bs]))
        z = logits.numpy().astype(np.float64) / temperature
        e = np.exp(z - z.max(1, keepdims=True))
        out.append(e / e.sum(1, keepdims=True))
    return np.concatenate(out)


def cpp_rows(nephra, manifest, files, backend):
    """One JSON object per file from `nephra classify`."""
    res = subprocess.run([nephra, "classify", "--model", str(manifest), "--batch", "16",
                          "--backend", backend]
                         + [str(f) for f in files], capture_output=True, text=True, cwd=REPO)
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert len(rows) == len(files), (len(rows), len(files), res.stderr[-2000:])
    return rows


def cpp_probs(rows, classes):
    return np.array([[r["probabilities"][c] for c in classes] for r in rows])


def compare(name, p_py, p_cpp):
    agree = float((p_py.argmax(1) == p_cpp.argmax(1)).mean())
    diff = float(np.abs(p_py - p_cpp).max())
    print(f"{name}: n={len(p_py)} class agreement {agree:.4%}, max |p diff| {diff:.2e}", flush=True)
    return {"n": len(p_py), "class_agreement": agree, "max_probability_diff": diff}


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nephra", required=True)
    p.add_argument("--check", action="store_true", help="exit 1 unless agreement >= 99.9 % and diff <= 1e-3")
    p.add_argument("--backend", default="onednn", choices=["onednn", "opencv"], help="the engine's network backend")
    p.add_argument("--manifest", default=str(MODELS / "nephra-kidney.json"), help="model manifest, its .pt beside it")
    args = p.parse_args()
    if not dataset_present():
        print(f"SKIP: {DATASET} is absent")
        return 0
    torch.set_num_threads(2)
    manifest = Path(args.manifest).resolve()
    man = json.loads(manifest.read_text())
    model = load_deployed(manifest.with_suffix(".pt"))
    rel, x, _ = load_split("test")
    x = resize_all(x, man["input"]["width"])  # a network trained on enlarged slices: the rendering enlarged
    res = {}
    t0 = time.time()
    p_cpp = cpp_probs(cpp_rows(args.nephra, manifest, [DATASET / r for r in rel], args.backend), man["classes"])
    secs = time.time() - t0
    res["test_split"] = compare("grouped test split", python_probs(model, x, man["temperature"]), p_cpp)
    res["test_split"]["cpp_seconds"] = round(secs, 1)
    if SERIES.exists():
        files = sorted(SERIES.glob("*.dcm"))
        pre = man["preprocessing"]["dicom"]
        hus = [hu_of(pydicom.dcmread(f)) for f in files]
        u8 = resize_all(np.stack([dicom_slice_to_u8(hu, pre["window_center"], pre["window_width"]) for hu in hus]),
                        man["input"]["width"])
        rows = cpp_rows(args.nephra, manifest, files, args.backend)
        # a slice outside the abdomen never reaches the C++ network (no probabilities): compare the others
        inferred = [i for i, r in enumerate(rows) if "probabilities" in r]
        res["tcia_series"] = compare("TCIA DICOM series (slices inferred)",
                                     python_probs(model, u8[inferred], man["temperature"]),
                                     cpp_probs([rows[i] for i in inferred], man["classes"]))
        outside_py = [body_air(hu) > MAX_AIR_FRACTION for hu in hus]
        outside_cpp = [bool(r["outside_abdomen"]) for r in rows]
        res["tcia_series"]["outside_abdomen_agreement"] = float(np.mean(np.equal(outside_py, outside_cpp)))
        res["tcia_series"]["outside_abdomen_slices"] = int(sum(outside_cpp))
        print(f"TCIA DICOM series: outside the abdomen {sum(outside_cpp)} slices (C++), {sum(outside_py)} (Python), "
              f"agreement {res['tcia_series']['outside_abdomen_agreement']:.2%}", flush=True)
    res["model_onnx_sha256"] = man["onnx_sha256"]
    res["backend"] = args.backend
    if not args.check:  # the test (--check) must not rewrite a committed file
        (HERE / "results" / "engine_parity.json").write_text(json.dumps(res, indent=1) + "\n")
    ok = all(v["class_agreement"] >= 0.999 and v["max_probability_diff"] <= 1e-3
             and v.get("outside_abdomen_agreement", 1.0) == 1.0 for v in res.values() if isinstance(v, dict))
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
