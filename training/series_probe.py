#!/usr/bin/python3
"""What fold networks of recipes under trial read on the TCIA series' kidney-level slices (instances 55-90: both
kidneys, unremarkable by eye; another hospital's CT, not in the training data), rendered as the node renders them
(training/preprocess.py at 224 px, the manifest's window) and enlarged to each network's size. A recipe that reads
lesions into these slices generalises worse than its folds say. Uncalibrated softmax, no OOD check, no study rule:
a probe of the network, not of the product (that is ood_series.py).
    /usr/bin/python3 training/series_probe.py runs/cv-longer/fold2:224 runs/cv/fold2:336 ...
"""
import json
import sys

import numpy as np
import torch

from augment import resize_all
from dicom_window import KIDNEY_INSTANCES
from evaluate import SERIES, dicom_series, infer
from model import build_model
from paths import CLASSES, REPO


def kidney_slices():
    window = json.loads((REPO / "models" / "nephra-kidney.json").read_text())["preprocessing"]["dicom"]
    series = dicom_series(window["window_center"], window["window_width"])
    return np.stack([series[k][0] for k in sorted(series) if k in KIDNEY_INSTANCES])


def main():
    if not SERIES.is_dir():
        sys.exit(f"SKIP: {SERIES} is absent")
    torch.set_num_threads(1)
    x = kidney_slices()
    for spec in sys.argv[1:]:
        run, res = spec.rsplit(":", 1)
        net = build_model(pretrained=False)
        net.load_state_dict(torch.load(REPO / "training" / run / "final.pt", map_location="cpu"))
        p = torch.softmax(torch.from_numpy(infer(net, resize_all(x, int(res)))[0]), 1).numpy()
        called = {c: int((p.argmax(1) == i).sum()) for i, c in enumerate(CLASSES)}
        top = {c: round(float(p[:, i].max()), 2) for i, c in enumerate(CLASSES) if i}
        print(f"{run} at {res} px, {len(x)} slices: argmax {called}; highest p {top}")


if __name__ == "__main__":
    main()
