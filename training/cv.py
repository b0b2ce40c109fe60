#!/usr/bin/python3
"""Grouped, class-stratified 5-fold cross-validation of the recipe (folds from training/splits/folds.csv).

Each fold trains on the other four folds with a FIXED schedule (no early stopping: the held-out fold is never looked
at during training) and is scored once on its held-out fold at 224 px. Writes training/results/cv.json.
    /usr/bin/python3 training/cv.py --out training/runs/cv [--stage1 160:1 --stage2 192:2] [--folds 0,1,2,3,4]
Resumable: finished folds are skipped, an interrupted fold resumes from its last epoch.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paths import CLASSES, REPO, tune_malloc  # noqa: E402


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--stage1", default="160:1")
    p.add_argument("--stage2", default="192:2")
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--results", default=str(HERE / "results" / "cv.json"))
    args = p.parse_args()
    out = Path(args.out)
    folds = {}
    for k in (int(v) for v in args.folds.split(",")):
        run = out / f"fold{k}"
        hist = run / "history.json"
        done = hist.exists() and len(json.load(open(hist))) == sum(
            int(x.split(":")[1]) for x in (args.stage1 + "," + args.stage2).split(","))
        if not done:
            run.mkdir(parents=True, exist_ok=True)
            with open(run / "log.txt", "a") as log:
                subprocess.run([sys.executable, str(HERE / "train.py"), "--out", str(run), "--fold", str(k),
                                "--stage1", args.stage1, "--stage2", args.stage2, "--validate", "last",
                                "--patience", "99"], check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        last = json.load(open(hist))[-1]
        folds[k] = {"macro_f1": last["val_macro_f1"], "accuracy": last["val_acc"],
                    "recall": dict(zip(CLASSES, last["val_recall"])), "f1": dict(zip(CLASSES, last.get("val_f1", []))),
                    "train_seconds": sum(h["train_seconds"] for h in json.load(open(hist)))}
        print(k, json.dumps(folds[k]), flush=True)
    f1 = np.array([v["macro_f1"] for v in folds.values()])
    res = {"protocol": f"grouped class-stratified 5-fold (folds.csv), fixed schedule stage1 {args.stage1} (frozen "
                       f"backbone) + stage2 {args.stage2} (whole network), no early stopping, scored at 224 px on the "
                       "held-out fold, argmax of uncalibrated logits",
           "folds": folds, "n_folds": len(folds),
           "macro_f1_mean": round(float(f1.mean()), 4), "macro_f1_sd": round(float(f1.std(ddof=1)), 4) if len(f1) > 1 else None,
           "recall_mean": {c: round(float(np.mean([v["recall"][c] for v in folds.values()])), 4) for c in CLASSES},
           "recall_sd": {c: round(float(np.std([v["recall"][c] for v in folds.values()], ddof=1)), 4) if len(f1) > 1 else None
                         for c in CLASSES}}
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: res[k] for k in ("macro_f1_mean", "macro_f1_sd", "recall_mean")}, indent=1))


if __name__ == "__main__":
    main()
