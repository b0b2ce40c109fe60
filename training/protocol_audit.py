#!/usr/bin/python3
"""Protocol audit: how the shipped recipe does on each kind of study the dataset mixes, from the out-of-fold
predictions (training/results/oof/, studies as the unit, nothing retrained).

Each pseudo-study is tagged with its view, axial or coronal, from its images: a coronal cut of the abdomen runs off
the top of the frame (the chest continues) or is tall and narrow; an axial one is a wide outline with black above
it. Tags come from nine slices per study (the median); the borderline studies were checked by eye on a montage.
Each study also gets a rendering cluster: k-means (k = 3, fixed seed) on its mean 32-bin gray histogram, the
feature that alone reaches grouped macro-F1 of about 0.53, i.e. the protocol shortcut the network can take.
Each axial study is also tagged by whether its kidneys are contrast-enhanced: the share of its slices in which
counterfactual.kidneys finds a mirrored pair of enhancing kidneys beside the spine; enhanced when at least
ENHANCED_SHARE of them. Per stratum: study sensitivity per finding and the false-finding rate on Normal studies,
with the nested rule (each fold's studies decided by the temperature and rule chosen on the other folds, as in
study_rule.py), and slice recall per class at the argmax.
    /usr/bin/python3 training/protocol_audit.py
Writes training/results/protocol_audit.json and training/results/study_views.csv. Skips (exit 0) without
../shared.
"""
import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from counterfactual import kidneys  # noqa: E402
from paths import CLASSES, DATASET  # noqa: E402
from study_rule import FINDINGS, Studies, decide, load, rate_ci, running_number  # noqa: E402

RESULTS = HERE / "results"
SLICES_PER_STUDY = 9
BODY_GRAY = 40  # above the black background and the table's thin lines after CLAHE
TOP_ROWS = 4
ENHANCED_SHARE = 0.10


def read_gray(relpath):
    import cv2
    im = cv2.imread(str(DATASET / relpath), cv2.IMREAD_GRAYSCALE)
    if im is None:
        raise SystemExit(f"cannot read {DATASET / relpath}")
    return im


def body_width_over_height(im):
    import cv2
    mask = cv2.morphologyEx((im > BODY_GRAY).astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask)
    if n < 2:
        return float("nan")
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return stats[biggest, cv2.CC_STAT_WIDTH] / stats[biggest, cv2.CC_STAT_HEIGHT]


def view_of(images):
    top = float(np.median([(im[:TOP_ROWS] > BODY_GRAY).mean() for im in images]))
    ratio = float(np.nanmedian([body_width_over_height(im) for im in images]))
    return ("coronal" if top > 0.05 or ratio < 0.8 else "axial"), top, ratio


def histogram_clusters(hists, k=3, seed=0, rounds=50):
    rng = np.random.default_rng(seed)
    centres = hists[rng.choice(len(hists), k, replace=False)]
    for _ in range(rounds):
        label = np.argmin(((hists[:, None, :] - centres[None]) ** 2).sum(-1), 1)
        centres = np.stack([hists[label == j].mean(0) if np.any(label == j) else centres[j] for j in range(k)])
    # Number clusters by mean gray, darkest first, so the labels do not depend on the seed's order.
    order = np.argsort([(centres[j] * np.arange(hists.shape[1])).sum() for j in range(k)])
    rank = {int(j): r for r, j in enumerate(order)}
    return np.array([rank[int(j)] for j in label])


RNG = np.random.default_rng(0)


def rate(flags):
    """Rate with a 95 % bootstrap interval over its units (studies or slices), as study_rule.py reports them."""
    return rate_ci(np.asarray(flags, bool), RNG)


def stratum_metrics(studies, present, slice_pred, members):
    out = {"studies": {c: int(np.sum(studies.cls[members] == i)) for i, c in enumerate(CLASSES)},
           "study_sensitivity": {}, "slice_recall": {}}
    for c in FINDINGS:
        pos = members & (studies.cls == CLASSES.index(c))
        out["study_sensitivity"][c] = rate(present[c][pos])
    normal = members & (studies.cls == 0)
    out["false_finding_rate_normal"] = rate(np.any([present[c] for c in FINDINGS], axis=0)[normal])
    idx = np.concatenate([studies.slices[i] for i in np.flatnonzero(members)])
    for i, c in enumerate(CLASSES):
        sel = idx[studies.y[idx] == i]
        out["slice_recall"][c] = rate(slice_pred[sel] == i) if len(sel) else None
    return out


def main():
    if not DATASET.exists():
        print(f"SKIP: {DATASET} is absent")
        return 0
    study, fold, logits, y = load()
    relpaths = []  # load() sorts rows by (study, running number); rebuild the same order to find the files
    import gzip
    for path in sorted((RESULTS / "oof").glob("fold*.csv.gz")):
        with gzip.open(path, "rt", newline="") as f:
            relpaths += [(r["study"], running_number(r["relpath"]), r["relpath"]) for r in csv.DictReader(f)]
    relpaths = [r for _, _, r in sorted(relpaths)]
    studies = Studies(study, fold, logits, y)

    rule_json = json.loads((RESULTS / "study_rule.json").read_text())
    present = {c: np.zeros(len(studies.ids), bool) for c in FINDINGS}
    for k, choice in rule_json["per_fold_choice"].items():
        decided = decide(studies, choice["temperature"], choice["rule"])
        held_out = studies.sfold == int(k)
        for c in FINDINGS:
            present[c][held_out] = decided[c][held_out]
    slice_pred = logits.argmax(1)

    views, hists, rows, enhanced = [], [], [], []
    for sid, idx in zip(studies.ids, studies.slices):
        pick = idx[:: max(1, len(idx) // SLICES_PER_STUDY)][:SLICES_PER_STUDY]
        images = [read_gray(relpaths[i]) for i in pick]
        view, top, ratio = view_of(images)
        views.append(view)
        h = np.mean([np.histogram(im, bins=32, range=(0, 256))[0] / im.size for im in images], 0)
        hists.append(h)
        share = float(np.mean([bool(kidneys(read_gray(relpaths[i]))) for i in idx])) if view == "axial" else None
        enhanced.append("" if share is None else ("yes" if share >= ENHANCED_SHARE else "no"))
        rows.append({"study": sid, "class": CLASSES[studies.cls[len(rows)]], "view": view,
                     "top_edge_body_fraction": round(top, 3), "body_width_over_height": round(ratio, 3),
                     "enhanced_kidney_share": "" if share is None else round(share, 3),
                     "enhanced_kidneys": enhanced[-1]})
    views = np.array(views)
    enhanced = np.array(enhanced)
    clusters = histogram_clusters(np.array(hists))
    for r, cl in zip(rows, clusters):
        r["rendering_cluster"] = int(cl)

    res = {"protocol": __doc__.split("\n\n")[1].replace("\n", " "),
           "nested_rule": "per fold: temperature and rule from study_rule.json per_fold_choice, chosen without it",
           "by_view": {v: stratum_metrics(studies, present, slice_pred, views == v) for v in ("axial", "coronal")},
           "by_rendering_cluster": {str(j): stratum_metrics(studies, present, slice_pred, clusters == j)
                                    for j in range(int(clusters.max()) + 1)},
           "axial_by_kidney_enhancement": {e: stratum_metrics(studies, present, slice_pred, enhanced == e)
                                           for e in ("yes", "no")},
           "all": stratum_metrics(studies, present, slice_pred, np.ones(len(studies.ids), bool))}
    (RESULTS / "protocol_audit.json").write_text(json.dumps(res, indent=1) + "\n")
    with open(RESULTS / "study_views.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for name, group in (("view", res["by_view"]), ("rendering cluster", res["by_rendering_cluster"]),
                        ("axial, kidneys enhanced", res["axial_by_kidney_enhancement"])):
        for key, m in group.items():
            sens = ", ".join(f"{c} {m['study_sensitivity'][c]['hits']}/{m['study_sensitivity'][c]['n']}"
                             for c in FINDINGS)
            ffr = m["false_finding_rate_normal"]
            print(f"{name} {key}: studies {m['studies']}; sensitivity {sens}; false finding on Normal "
                  f"{ffr['hits']}/{ffr['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
