#!/usr/bin/python3
"""Which HU window makes real DICOM CT look like the dataset's display-windowed exports?

For every (level, width) on a grid, the kidney slices of the real TCIA series are windowed to 8 bit, resized to
224 (Lanczos) and CLAHE'd (4.0, 8x8) exactly as the dataset was, after the node's square crop around the body; the window whose gray-level distribution is
closest to the dataset's (1-D Wasserstein distance of the histograms, body pixels only) wins.
    /usr/bin/python3 training/dicom_window.py [--out training/results/dicom_window.json]
"""
import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pydicom

from paths import DATASET, SHARED, SPLITS
from preprocess import dicom_slice_to_u8, hu_of

SERIES = SHARED / "data" / "dicom" / "tcia-pancreatic-ct-cbct-seg-001"
KIDNEY_INSTANCES = range(55, 91)  # both kidneys visible (see the series README)
CLAHE = cv2.createCLAHE(clipLimit=4.0, tileGridSize=(8, 8))


def histogram(images):
    """Normalised gray-level histogram of pixels above 10 (drops the black surround, which varies by export)."""
    counts = np.zeros(256)
    for img in images:
        counts += np.bincount(img[img > 10].ravel(), minlength=256)
    return counts / counts.sum()


def wasserstein(p, q):
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum())


def dataset_histogram(limit=1500):
    files = [l for l in (SPLITS / "train.txt").read_text().splitlines() if l]
    rng = np.random.default_rng(0)
    picks = rng.choice(len(files), size=min(limit, len(files)), replace=False)
    return histogram(cv2.imread(str(DATASET / files[i]), cv2.IMREAD_GRAYSCALE) for i in picks)


def load_hu_slices():
    slices = []
    for path in sorted(SERIES.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        if int(ds.InstanceNumber) in KIDNEY_INSTANCES:
            slices.append(hu_of(ds))
    return slices


def render(hu, level, width):
    """Exactly what the node does with a DICOM slice (training/preprocess.py), body crop included."""
    return dicom_slice_to_u8(hu, level, width)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "dicom_window.json"))
    parser.add_argument("--plot", default=None, help="only draw the histograms of an existing --out result to this PNG")
    args = parser.parse_args()
    if args.plot:
        return plot(json.loads(Path(args.out).read_text()), args.plot)
    target = dataset_histogram()
    slices = load_hu_slices()
    grid = []
    for level in range(-100, 201, 10):
        for width in range(200, 1601, 50):
            dist = wasserstein(histogram(render(s, level, width) for s in slices), target)
            grid.append({"level": level, "width": width, "distance": round(dist, 3)})
    grid.sort(key=lambda g: g["distance"])
    best = grid[0]
    result = {
        "method": __doc__.strip().splitlines()[2:5],
        "series": SERIES.name, "kidney_instances": [KIDNEY_INSTANCES.start, KIDNEY_INSTANCES.stop - 1],
        "best": best, "top10": grid[:10],
        "reference_windows": {f"{l}/{w}": next(g["distance"] for g in grid if g["level"] == l and g["width"] == w)
                              for l, w in ((40, 400), (50, 350), (60, 400), (40, 600), (0, 1000))},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("best", "reference_windows")}, indent=2))


def plot(result, png):
    """Dataset histogram against the real series' kidney slices under the chosen and some usual windows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    target = dataset_histogram()
    slices = load_hu_slices()
    best = result["best"]
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=80)
    ax.plot(target, "k", lw=2, label="dataset (CLAHE JPEGs)")
    for (level, width), style in (((best["level"], best["width"]), "r-"), ((60, 400), "b--"), ((40, 600), "g:")):
        h = histogram(render(s, level, width) for s in slices)
        ax.plot(h, style, label=f"TCIA kidney slices, L/W {level}/{width} (W1 {wasserstein(h, target):.2f})")
    ax.set_xlabel("gray level after CLAHE (pixels > 10)")
    ax.set_ylabel("fraction")
    ax.legend(fontsize=7)
    ax.set_title("DICOM display window that matches the dataset", fontsize=9)
    fig.tight_layout()
    fig.savefig(png)


if __name__ == "__main__":
    main()
