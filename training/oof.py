#!/usr/bin/python3
"""Out-of-fold predictions of the shipped recipe for every slice of the dataset (grouped 5-fold, folds.csv).

For each fold k: the recipe trains on the other four folds (cv.train_fold; weights kept under --out, ignored by git),
then every held-out slice gets its uncalibrated logits and its OOD score (MahalanobisPCA fitted on the training folds'
pooled features, as evaluate.py fits it on the training split). One CSV per fold under training/results/oof/, so a
fold is committed as soon as it finishes and a later checkout runs only the missing ones. The study-level decision
layer is fitted on these, studies as the unit (training/study_rule.py).
    /usr/bin/python3 training/oof.py --out training/runs/cv [--folds 0,1,2,3,4]
    /usr/bin/python3 training/oof.py --recipe candidate --out training/runs/cv-candidate   # a recipe under trial
                                                                    # (run_all.RECIPES), into results/oof-candidate/
"""
import argparse
import csv
import gzip
import io
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_ood import MahalanobisPCA  # noqa: E402
from augment import resize_all  # noqa: E402
from cv import final_weights, train_fold  # noqa: E402
from data import group_of  # noqa: E402
from evaluate import infer  # noqa: E402
from model import build_model  # noqa: E402
from paths import CLASSES, tune_malloc  # noqa: E402
from run_all import RECIPES, deploy_res  # noqa: E402
from train import load_data  # noqa: E402

RESULTS = HERE / "results" / "oof"
FIELDS = ["relpath", "study", "fold", "label"] + [f"logit_{c}" for c in CLASSES] + ["ood_score"]


def fold_rows(run, fold, weights, inner_fold=None, res=224):
    """The held-out slices' rows; with inner_fold (crossfit.py), those of that fold, scored by a network trained
    without it and `fold`, and no OOD score. `res`: the size the network is scored at (run_all.deploy_res)."""
    torch.set_num_threads(2)
    net = build_model(pretrained=False)
    net.load_state_dict(torch.load(run / weights, map_location="cpu"))
    (_, xtr, ytr), (rel, xte, yte) = load_data(argparse.Namespace(random_split=False, fold=fold,
                                                                  inner_fold=inner_fold, tiny=0))
    logits, fte = infer(net, resize_all(xte, res))  # at the deployed size, no augmentation
    if inner_fold is not None:
        yield from (row(r, y, inner_fold, lo, "") for r, y, lo in zip(rel, yte, logits))
        return
    _, ftr = infer(net, resize_all(xtr, res))
    ood = MahalanobisPCA().fit(ftr, ytr).score(fte)
    for r, y, lo, s in zip(rel, yte, logits, ood):
        yield row(r, y, fold, lo, f"{s:.4f}")


def row(relpath, label, fold, logits, ood):
    """One slice's line of a fold CSV (FIELDS); `ood` already formatted."""
    cls, group = group_of(relpath)
    return [relpath, f"{cls}/{group}", fold, CLASSES[int(label)]] + [f"{v:.5f}" for v in logits] + [ood]


def write_fold_csv(path, rows):
    """FIELDS and `rows` into a gzipped CSV; mtime=0: the same predictions give the same bytes, so a re-run does not
    show as a change."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            io.TextIOWrapper(gz, encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(FIELDS)
        w.writerows(rows)


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="where each fold's weights are kept (training/runs/cv)")
    p.add_argument("--folds", default="0,1,2,3,4")
    p.add_argument("--recipe", choices=list(RECIPES), default="shipped",
                   help="a recipe under trial writes into training/results/oof-<recipe>/")
    args = p.parse_args()
    recipe = RECIPES[args.recipe]
    results = RESULTS if args.recipe == "shipped" else RESULTS.with_name("oof-" + args.recipe)
    results.mkdir(parents=True, exist_ok=True)
    for k in (int(v) for v in args.folds.split(",")):
        dest = results / f"fold{k}.csv.gz"
        if dest.exists():
            print(k, "already in", dest, flush=True)
            continue
        run = Path(args.out) / f"fold{k}"
        train_fold(run, k, recipe)
        tmp = dest.with_suffix(".tmp")
        write_fold_csv(tmp, fold_rows(run, k, final_weights(recipe), res=deploy_res(recipe)))
        tmp.rename(dest)
        print(k, "written", dest, flush=True)


if __name__ == "__main__":
    main()
