#!/usr/bin/python3
"""Cross-fitted soft targets for the slices a fold's network trains on: for outer fold K, each other fold j gets the
logits of a network of the shipped recipe trained on the three folds that are neither K nor j. Every training slice
of fold K's student is then scored by a network that never saw it nor fold K, so a teacher's targets carry what
generalises to unseen studies, not the labels it learnt (in-sample teachers agree with the label on 9514 of 9515
slices: results/README.md, *Distilled recipe*). Written in the out-of-fold CSV format (oof.py; the fold column is j)
to training/results/crossfit/foldK.csv.gz; train.py --soft-targets reads it. Resumable.
The network trained without folds K and j serves fold K (scoring j) and fold j (scoring K) alike: it is kept once,
as <out>/without-<K>-<j> (smaller fold first), so all five folds take ten networks, not twenty.
    /usr/bin/python3 training/crossfit.py --fold 2 --out training/runs/crossfit     # four networks, ~80 min
"""
import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from cv import final_weights, train_fold  # noqa: E402
from oof import fold_rows, write_fold_csv  # noqa: E402
from paths import tune_malloc  # noqa: E402
from run_all import RECIPE  # noqa: E402

RESULTS = HERE / "results" / "crossfit"
FOLDS = range(5)


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, required=True, help="the outer fold K, which no inner network sees")
    p.add_argument("--out", required=True, help="inner networks go to <out>/without-<a>-<b> (ignored by git)")
    args = p.parse_args()
    if RECIPE["soup_epochs"]:  # soup.py re-estimates BatchNorm on every fold but --fold: the inner fold too
        raise SystemExit("crossfit.py takes a recipe that ships its last weights, not averaged ones")
    dest = RESULTS / f"fold{args.fold}.csv.gz"
    if dest.exists():
        print("already in", dest)
        return
    rows = []
    for inner in (j for j in FOLDS if j != args.fold):
        run = Path(args.out) / "without-{}-{}".format(*sorted((args.fold, inner)))
        train_fold(run, args.fold, extra=["--inner-fold", str(inner)])
        rows += fold_rows(run, args.fold, final_weights(), inner_fold=inner)
        print(f"fold {args.fold}: inner fold {inner} scored", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_fold_csv(dest, rows)
    print("wrote", dest, flush=True)


if __name__ == "__main__":
    main()
