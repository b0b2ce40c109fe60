#!/usr/bin/python3
"""Grouped, class-stratified 5-fold cross-validation of the recipe (folds from training/splits/folds.csv).

Each fold runs the shipped recipe (run_all.RECIPE: the same training arguments and weight averaging) on the other four
folds, with no early stopping (the held-out fold is never looked at during training), and is scored once on its
held-out fold at the recipe's input size. Writes training/results/cv.json.
    /usr/bin/python3 training/cv.py --out training/runs/cv [--folds 0,1,2,3,4]
    /usr/bin/python3 training/cv.py --from-oof training/results/oof   # the same figures from oof.py's fold files
Resumable: finished folds are skipped, an interrupted fold resumes from its last epoch, and a fold already recorded
in the committed cv.json for the same recipe is carried over (so a fresh checkout runs only the missing folds). cv.json
is rewritten after every fold ("complete": false until all planned folds are in).
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
from run_all import RECIPE, deploy_res, schedule_length, train_args  # noqa: E402


def final_weights(recipe=RECIPE):
    """The file a fold's run of `recipe` ends with: its averaged weights, or its last ones."""
    return "soup.pt" if recipe["soup_epochs"] else "final.pt"


FINAL_WEIGHTS = final_weights()


def load_fold(run, fold):
    """The fold's network with the recipe's final weights, and its held-out images and labels."""
    import torch
    from model import build_model
    from train import load_data
    torch.set_num_threads(2)
    net = build_model(pretrained=False)
    net.load_state_dict(torch.load(run / FINAL_WEIGHTS, map_location="cpu"))
    _, (_, x, y) = load_data(argparse.Namespace(random_split=False, fold=fold, tiny=0))
    return net, x, y


def train_fold(run, fold, recipe=RECIPE, extra=()):
    """Runs the recipe on every fold but `fold` into `run` (resumes; does nothing when its final weights exist);
    `extra`: train.py arguments added (e.g. --inner-fold)."""
    run.mkdir(parents=True, exist_ok=True)
    hist = run / "history.json"
    with open(run / "log.txt", "a") as log:
        if not (hist.exists() and len(json.load(open(hist))) == schedule_length(recipe)):
            subprocess.run([sys.executable, str(HERE / "train.py"), "--out", str(run), "--fold", str(fold)]
                           + train_args(recipe) + ["--validate", "last", *extra],
                           check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        if recipe["soup_epochs"] and not (run / final_weights(recipe)).exists():
            subprocess.run([sys.executable, str(HERE / "soup.py"), "--run", str(run), "--fold", str(fold),
                            "--epochs", recipe["soup_epochs"]],
                           check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)


def score_fold(run, fold):
    """Held-out-fold metrics of the recipe's final weights."""
    from train import evaluate
    metrics, _ = evaluate(*load_fold(run, fold))
    return metrics


def summarise(folds, planned):
    """cv.json: written after every fold, so an interrupted run still records the folds it finished."""
    folds = dict(sorted(folds.items()))
    f1 = np.array([v["macro_f1"] for v in folds.values()])
    res = {"protocol": "grouped class-stratified 5-fold (folds.csv); each fold runs the shipped recipe ("
                       + " ".join(RECIPE["train"]) + (f", weight average of epochs {RECIPE['soup_epochs']}"
                                                      if RECIPE["soup_epochs"] else "")
                       + f") with no early stopping and is scored once at {deploy_res()} px on its held-out fold, "
                         "argmax of uncalibrated logits",
           "recipe": RECIPE, "folds": folds, "n_folds": len(folds), "folds_planned": planned,
           "complete": sorted(folds) == sorted(planned),
           "macro_f1_mean": round(float(f1.mean()), 4), "macro_f1_sd": round(float(f1.std(ddof=1)), 4) if len(f1) > 1 else None,
           "recall_mean": {c: round(float(np.mean([v["recall"][c] for v in folds.values()])), 4) for c in CLASSES},
           "recall_sd": {c: round(float(np.std([v["recall"][c] for v in folds.values()], ddof=1)), 4) if len(f1) > 1 else None
                         for c in CLASSES}}
    return res


def write_results(path, folds, planned):
    res = summarise(folds, planned)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(res, indent=1) + "\n")
    return res


def folds_from_oof(folder):
    """Per-fold figures from oof.py's held-out logits (the same training and scoring as train_fold + score_fold)."""
    import torch
    from study_rule import load
    from train import scores
    _, fold, logits, y = load(folder)
    folds = {}
    for k in sorted(set(fold.tolist())):
        m = scores(torch.from_numpy(logits[fold == k]).float(), y[fold == k])
        folds[k] = {"macro_f1": m["macro_f1"], "accuracy": m["acc"],
                    "recall": dict(zip(CLASSES, m["recall"])), "f1": dict(zip(CLASSES, m["f1"]))}
    return folds


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--results", default=str(HERE / "results" / "cv.json"))
    p.add_argument("--from-oof", help="train nothing: cv.json from a folder of oof.py's fold*.csv.gz of the recipe")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing: write cv.json from the folds already scored (while a run goes on)")
    args = p.parse_args()
    out = Path(args.out)
    folds = {}
    planned = [int(v) for v in args.folds.split(",")]
    if args.from_oof:
        res = write_results(args.results, folds_from_oof(args.from_oof), planned)
        print(json.dumps({k: res[k] for k in ("macro_f1_mean", "macro_f1_sd", "recall_mean")}, indent=1))
        return
    recorded = json.loads(Path(args.results).read_text()) if Path(args.results).exists() else {}
    recorded = recorded.get("folds", {}) if recorded.get("recipe") == RECIPE else {}
    for k in planned:
        run = out / f"fold{k}"
        hist = run / "history.json"
        scored = run / "heldout.json"
        if str(k) in recorded and not scored.exists():
            folds[k] = recorded[str(k)]
            print(k, "recorded in", args.results, json.dumps(folds[k]), flush=True)
            continue
        if args.summary_only and not scored.exists():
            continue
        if not scored.exists():
            train_fold(run, k)
            m = score_fold(run, k) if RECIPE["soup_epochs"] else {
                k2[4:]: v for k2, v in json.load(open(hist))[-1].items() if k2.startswith("val_")}
            scored.write_text(json.dumps(m) + "\n")
        m = json.load(open(scored))
        folds[k] = {"macro_f1": m["macro_f1"], "accuracy": m["acc"],
                    "recall": dict(zip(CLASSES, m["recall"])), "f1": dict(zip(CLASSES, m["f1"])),
                    "train_seconds": sum(h["train_seconds"] for h in json.load(open(hist)))}
        print(k, json.dumps(folds[k]), flush=True)
        write_results(args.results, folds, planned)
    if folds:  # every fold is in the file by now; this only prints the summary
        res = summarise(folds, planned)
        print(json.dumps({k: res[k] for k in ("macro_f1_mean", "macro_f1_sd", "recall_mean")}, indent=1))


if __name__ == "__main__":
    main()
