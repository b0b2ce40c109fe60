#!/usr/bin/python3
"""Horizontal-flip test-time augmentation, judged on grouped CV: each fold model that cv.py kept (its final weights)
scores its held-out fold plain and with the logits of the image and its mirror averaged. Writes
training/results/cv_tta.json.
    /usr/bin/python3 training/cv_tta.py --runs training/runs/cv
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paths import tune_malloc  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(HERE / "runs" / "cv"), help="cv.py's --out folder")
    ap.add_argument("--out", default=str(HERE / "results" / "cv_tta.json"))
    args = ap.parse_args()
    tune_malloc()
    from cv import FINAL_WEIGHTS, load_fold
    from train import evaluate, scores
    folds = {}
    for fold in range(5):
        run = Path(args.runs) / f"fold{fold}"
        if not (run / FINAL_WEIGHTS).exists():
            print(f"fold {fold}: no {run / FINAL_WEIGHTS}, skipped", flush=True)
            continue
        net, x, y = load_fold(run, fold)
        plain, lo = evaluate(net, x, y)
        _, lo_flip = evaluate(net, np.ascontiguousarray(x[..., ::-1]), y)
        tta = scores((lo + lo_flip) / 2, y)
        folds[fold] = {"plain_macro_f1": round(plain["macro_f1"], 4), "tta_macro_f1": round(tta["macro_f1"], 4),
                       "plain_tumor_recall": round(plain["recall"][3], 4),
                       "tta_tumor_recall": round(tta["recall"][3], 4)}
        print(fold, json.dumps(folds[fold]), flush=True)
    gain = [v["tta_macro_f1"] - v["plain_macro_f1"] for v in folds.values()]
    res = {"protocol": "fold models of cv.py's run (final weights), each on its held-out fold at 224 px; TTA = mean "
                       "of the logits of the image and its horizontal mirror, argmax",
           "folds": folds, "macro_f1_gain_mean": round(float(np.mean(gain)), 4) if gain else None}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
