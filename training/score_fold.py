#!/usr/bin/python3
"""Logits of one network, or of the average of several networks' weights, on a held-out grouped fold, in the
out-of-fold CSV format (ood_score left 0: no OOD model is fitted), for networks that no recipe of oof.py makes: a
fine-tune of a fold network, a weight average. compare_recipes.py and study_rule.py read the result like oof.py's.
    /usr/bin/python3 training/score_fold.py --fold 2 --out DIR/fold2.csv.gz A/final.pt [B/final.pt ...]
"""
import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from evaluate import infer  # noqa: E402
from model import build_model  # noqa: E402
from oof import row, write_fold_csv  # noqa: E402
from paths import tune_malloc  # noqa: E402
from soup import average  # noqa: E402
from train import load_data  # noqa: E402


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fold", type=int, required=True)
    p.add_argument("--out", required=True, help="a .csv.gz")
    p.add_argument("weights", nargs="+", help="state_dict .pt files; several are averaged into one network")
    args = p.parse_args()
    torch.set_num_threads(2)
    net = build_model(pretrained=False)
    net.load_state_dict(average(args.weights))  # every weight and BatchNorm statistic the mean
    _, (rel, x, y) = load_data(argparse.Namespace(random_split=False, fold=args.fold, tiny=0))
    logits, _ = infer(net, x)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_fold_csv(args.out, (row(r, label, args.fold, lo, "0") for r, label, lo in zip(rel, y, logits)))


if __name__ == "__main__":
    main()
