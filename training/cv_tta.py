#!/usr/bin/python3
"""Horizontal-flip test-time augmentation, judged on grouped CV: each fold model that cv.py kept (final.pt) scores its
held-out fold plain and with the logits of the image and its mirror averaged. Writes training/results/cv_tta.json.
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
    import torch
    from sklearn.metrics import f1_score
    from model import build_model
    from train import evaluate, load_data
    torch.set_num_threads(2)
    folds = {}
    for fold in range(5):
        weights = Path(args.runs) / f"fold{fold}" / "final.pt"
        if not weights.exists():
            print(f"fold {fold}: no {weights}, skipped", flush=True)
            continue
        net = build_model(pretrained=False)
        net.load_state_dict(torch.load(weights, map_location="cpu"))
        _, (_, x, y) = load_data(argparse.Namespace(random_split=False, fold=fold, tiny=0))
        plain, lo = evaluate(net, x, y)
        _, lo_flip = evaluate(net, np.ascontiguousarray(x[..., ::-1]), y)
        pred = ((lo + lo_flip) / 2).argmax(1).numpy()
        folds[fold] = {"plain_macro_f1": round(plain["macro_f1"], 4),
                       "tta_macro_f1": round(float(f1_score(y, pred, average="macro")), 4),
                       "plain_tumor_recall": round(plain["recall"][3], 4),
                       "tta_tumor_recall": round(float((pred[y == 3] == 3).mean()), 4)}
        print(fold, json.dumps(folds[fold]), flush=True)
    gain = [v["tta_macro_f1"] - v["plain_macro_f1"] for v in folds.values()]
    res = {"protocol": "fold models of cv.py's run (final.pt), each on its held-out fold at 224 px; TTA = mean of the "
                       "logits of the image and its horizontal mirror, argmax",
           "folds": folds, "macro_f1_gain_mean": round(float(np.mean(gain)), 4) if gain else None}
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
