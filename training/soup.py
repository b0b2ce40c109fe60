#!/usr/bin/python3
"""Average the weights of several stage-2 epochs of one run (stochastic weight averaging) and re-estimate the
BatchNorm statistics of the averaged network on augmented training images at the deployed resolution.

Why: grouped validation holds only ~30 studies, so "the best epoch" on it is mostly noise (v1's early-stopped epoch
scored 0.66 test macro-F1, its last epoch 0.73). An average of the late epochs needs no such choice and sits in a
flatter region of the loss, which tends to carry better to unseen patients and scanners.
    /usr/bin/python3 training/soup.py --run training/runs/v2 --epochs 3-6     # writes <run>/soup.pt
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from augment import augment, resize
from model import build_model, normalise, to_input
from paths import tune_malloc
from train import load_data


def average(paths):
    states = [torch.load(p, map_location="cpu") for p in paths]
    out = {}
    for key, first in states[0].items():
        if first.dtype.is_floating_point:
            out[key] = sum(s[key] for s in states) / len(states)
        else:
            out[key] = first.clone()
    return out


@torch.no_grad()
def refresh_batchnorm(net, x, n_images, res, seed, aug=True, bs=32):
    """Cumulative (not momentum) BN statistics over n_images training images, augmented or only resized."""
    rng = np.random.default_rng(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    idx = rng.choice(len(x), min(n_images, len(x)), replace=False)
    for i in range(0, len(idx), bs):
        imgs = np.stack([augment(x[j], rng, res) if aug else resize(x[j], res) for j in idx[i:i + bs]])
        net.features(normalise(to_input(imgs)))
    net.eval()


def parse_range(text):
    lo, _, hi = text.partition("-")
    return range(int(lo), int(hi or lo) + 1)


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--epochs", required=True, help="inclusive range of epoch<N>.pt snapshots, e.g. 3-6")
    p.add_argument("--bn", choices=["augmented", "plain", "average"], default="augmented",
                   help="BatchNorm statistics: re-estimated on augmented or plain training images, or averaged")
    p.add_argument("--out-name", default="soup.pt")
    p.add_argument("--bn-images", type=int, default=2048)
    p.add_argument("--res", type=int, default=224)
    p.add_argument("--fold", type=int, default=None, help="the run's CV fold (BN statistics from its training folds)")
    p.add_argument("--tiny", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = Path(args.run)
    paths = [run / f"epoch{e}.pt" for e in parse_range(args.epochs)]
    missing = [str(q) for q in paths if not q.exists()]
    if missing:
        raise SystemExit(f"missing snapshots: {missing} (train with --snapshots)")
    net = build_model(pretrained=False)
    net.load_state_dict(average(paths))
    (_, x, _), _ = load_data(argparse.Namespace(random_split=False, fold=args.fold, tiny=args.tiny))
    if args.bn != "average":
        refresh_batchnorm(net, x, args.bn_images, args.res, seed=0, aug=args.bn == "augmented")
    torch.save(net.state_dict(), run / args.out_name)
    print(f"averaged {len(paths)} snapshots → {run / args.out_name}", flush=True)


if __name__ == "__main__":
    main()
