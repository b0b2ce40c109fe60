#!/usr/bin/python3
"""Reference outputs of the shipped model, computed in PyTorch, for the C++ engine's parity and heatmap tests.

For each committed fixture slice (tests/data/tcia-kidney-slices): the sha256 of the network input (training/
preprocess.py's rendering, enlarged to the manifest's input size where that is larger), the logits, calibrated
probabilities, OOD score and Grad-CAM (autograd: gradient of the class logit w.r.t. the last feature map, averaged per
channel, weighted sum, ReLU) of every class at the feature map's size, normalised to max 1. Written to
tests/data/engine_reference.json (small; regenerate whenever the model changes).
    /usr/bin/python3 training/engine_reference.py
"""
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pydicom
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from augment import resize_all  # noqa: E402
from export_onnx import load_deployed  # noqa: E402
from model import to_input  # noqa: E402
from paths import REPO  # noqa: E402
from preprocess import dicom_slice_to_u8, hu_of  # noqa: E402

MODELS = REPO / "models"
FIXTURE = REPO / "tests" / "data" / "tcia-kidney-slices"


def ood_score(man, pooled):
    """The manifest's formula, from the manifest's (rounded) numbers, as the engine computes it."""
    o = man["ood"]
    comps = np.array(o["pca_components"])
    centred = pooled - np.array(o["pca_mean"])
    z = centred @ comps.T
    d = z[None, :] - np.array(o["class_means"])
    maha = float(np.einsum("ck,kl,cl->c", d, np.array(o["precision"]), d).min())
    return maha / len(comps) + float(((centred - z @ comps) ** 2).sum()) / o["residual_scale"]


def grad_cams(model, x):
    feats = model.features(model.norm(x)).detach().requires_grad_(True)
    logits = model.fc(feats.mean((2, 3)))
    cams = []
    for c in range(logits.shape[1]):
        g, = torch.autograd.grad(logits[0, c], feats, retain_graph=True)
        cam = torch.relu((g.mean((2, 3), keepdim=True) * feats).sum(1))[0].detach().numpy()
        cams.append((cam / cam.max() if cam.max() > 0 else cam).round(6).tolist())
    return logits.detach().numpy()[0], feats.detach().mean((2, 3)).numpy()[0].astype(np.float64), cams


def main():
    man = json.loads((MODELS / "nephra-kidney.json").read_text())
    model = load_deployed(MODELS / "nephra-kidney.pt")
    pre = man["preprocessing"]["dicom"]
    out = {"model_onnx_sha256": man["onnx_sha256"], "slices": []}
    for path in sorted(FIXTURE.glob("*.dcm")):
        rendered = dicom_slice_to_u8(hu_of(pydicom.dcmread(path)), pre["window_center"], pre["window_width"])
        u8 = resize_all(rendered[None], man["input"]["width"])[0]
        logits, pooled, cams = grad_cams(model, to_input(u8[None]))
        z = logits / man["temperature"]
        p = np.exp(z - z.max())
        out["slices"].append({"file": path.name, "input_sha256": hashlib.sha256(u8.tobytes()).hexdigest(),
                              "logits": logits.round(6).tolist(), "probabilities": (p / p.sum()).round(6).tolist(),
                              "ood_score": round(ood_score(man, pooled), 4), "gradcam": cams})
    (REPO / "tests" / "data" / "engine_reference.json").write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps([(s["file"], s["probabilities"]) for s in out["slices"]]))


if __name__ == "__main__":
    main()
