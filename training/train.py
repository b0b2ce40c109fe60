#!/usr/bin/python3
"""Train Nephra's MobileNetV2: stage 1 = frozen ImageNet backbone + new head, stage 2 = whole network at a low LR.

Study-balanced sampling (or inverse-frequency class weights), label smoothing, hospital-imitating augmentation
(augment.py), progressive resolution (cheap low-res epochs first, the last at the deployed 224), optional early
stopping on grouped validation macro-F1 (the shipped recipe, run_all.RECIPE, runs its whole schedule instead).
Resumable: re-running the same command continues from <out>/last.pt.
    /usr/bin/python3 training/run_all.py ...                                 # the shipped recipe calls this
    /usr/bin/python3 training/train.py --out training/runs/cv0 --fold 0      # grouped CV: train on folds != 0
"""
import argparse
import copy
import csv
import json
import math
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score

from augment import augment, resize, resize_all
from data import group_of, label_of, load_split, study_tags
from model import build_model, forward_all, to_input
from paths import CLASSES, SPLITS, tune_malloc


def parse_schedule(text):
    """"160:6,224:2" → [160]*6 + [224]*2."""
    out = []
    for part in text.split(","):
        res, n = part.split(":")
        out += [int(res)] * int(n)
    return out


def load_data(args):
    if args.random_split:  # image-level 70/30 random split: LEAKS (adjacent slices on both sides); for comparison only
        pool_rel, pool_x, pool_y = [], [], []
        for name in ("train", "val", "test"):
            rel, x, y = load_split(name, args.tiny)
            pool_rel += rel
            pool_x.append(x)
            pool_y.append(y)
        x, y = np.concatenate(pool_x), np.concatenate(pool_y)
        perm = np.random.default_rng(args.seed).permutation(len(x))
        cut = int(0.7 * len(x))
        tr, va = perm[:cut], perm[cut:]
        return ([pool_rel[i] for i in tr], x[tr], y[tr]), ([pool_rel[i] for i in va], x[va], y[va])
    if args.fold is None:
        tr = load_split("train", args.tiny)
        va = load_split("val", args.tiny)
        return tr, va
    with open(SPLITS / "folds.csv", newline="") as f:
        rows = [(r["relpath"], int(r["fold"])) for r in csv.DictReader(f)]
    pool = {}  # every image once, from the cached fixed-split arrays
    for name in ("train", "val", "test"):
        rel, x, _ = load_split(name)
        pool.update(zip(rel, x))
    held = args.fold if getattr(args, "inner_fold", None) is None else args.inner_fold
    out = []
    for keep in (lambda k: k not in (args.fold, held), lambda k: k == held):
        rel = [r for r, k in rows if keep(k)]
        if args.tiny:
            rel = rel[:: max(1, len(rel) // args.tiny)][: args.tiny]
        out.append((rel, np.stack([pool[r] for r in rel]), np.array([label_of(r) for r in rel])))
    return out[0], out[1]


@torch.no_grad()
def evaluate(net, x, y, bs=16):
    net.eval()
    logits, feats = [], []
    for i in range(0, len(x), bs):
        lo, fe = forward_all(net, to_input(x[i:i + bs]))
        logits.append(lo)
        feats.append(fe)
    logits = torch.cat(logits)
    return scores(logits, y), logits


def scores(logits, y):
    """Loss, accuracy, macro-F1 and per-class recall/F1 of argmax decisions on logits [N,4] against labels y."""
    pred = logits.argmax(1).numpy()
    return {"loss": float(F.cross_entropy(logits, torch.from_numpy(y)).item()),
            "acc": float((pred == y).mean()),
            "macro_f1": float(f1_score(y, pred, average="macro")),
            "recall": [float((pred[y == c] == c).mean()) if (y == c).any() else None for c in range(4)],
            "f1": [float(v) for v in f1_score(y, pred, average=None, labels=range(4), zero_division=0)]}


def group_weights(rel, y, class_mass=(1, 1, 1, 1)):
    """Per-image sampling weights: every class the same mass (or class_mass's shares), and within a class a study's
    share grows only with the square root of its slice count, so a few long runs of near-identical slices do not
    dominate the epoch."""
    keys = [group_of(r) for r in rel]
    size = Counter(keys)
    w = np.array([size[k] ** -0.5 for k in keys])
    for c in range(4):
        if (y == c).any():
            w[y == c] = w[y == c] / w[y == c].sum() * class_mass[c]
    return w / w.sum()


def strata_weights(rel, y):
    """group_weights with the protocol mix of each class flattened: a protocol stratum is the study's view (axial,
    coronal) and rendering cluster (results/study_views.csv, training/protocol_audit.py), and within a class each
    stratum's mass grows only with the square root of its study count, so a class filmed mostly in one protocol
    (Normal: 18 of 48 studies coronal in the brightest cluster, Tumor: 4 of 26 there) no longer teaches the
    protocol, while a stratum of one study cannot dominate its class."""
    w = group_weights(rel, y)
    keys = ["/".join(group_of(r)) for r in rel]
    cells = np.array([f"{c}|{study_tags(r)['view']}|{study_tags(r)['rendering_cluster']}" for c, r in zip(y, rel)])
    studies = Counter(c for c, _ in set(zip(cells, keys)))
    for cell in np.unique(cells):
        w[cells == cell] *= studies[cell] ** 0.5 / w[cells == cell].sum()
    for c in range(4):
        if (y == c).any():
            w[y == c] /= w[y == c].sum()
    return w / w.sum()


def counterfactual_pool(rel, x, y):
    """{index: kidney hulls} of the Normal axial training slices whose kidneys counterfactual.kidneys finds."""
    from counterfactual import normal_axial_kidneys
    return dict(normal_axial_kidneys(rel, x, y))


def with_counterfactual(x, y, j, pool, keys, share, rng, pairs=False):
    """A list of (image, label): sample j alone; or, with probability `share` each, a slice of the counterfactual
    pool with a synthetic cyst or stone (and that label), or the same kind of slice as it is (Normal), so the network
    sees those studies and their protocol with and without a finding in equal measure. With pairs, with probability
    `share` both at once, the slice with its lesion then as it is, for batches to augment alike: the lesion is then
    all that tells them apart."""
    r = rng.random() if share > 0 and keys else 1.0
    if r >= (1 if pairs else 2) * share:
        return [(x[j], y[j])]
    k = keys[int(rng.integers(len(keys)))]
    if r >= share:
        return [(x[k], y[k])]
    from counterfactual import add_lesion
    kind = "cyst" if rng.random() < 0.5 else "stone"
    out = add_lesion(x[k], pool[k], kind, rng)
    if out is None:
        return [(x[k], y[k])]
    return [(out, 1 if kind == "cyst" else 2)] + ([(x[k], y[k])] if pairs else [])


def batches(x, y, bs, res, rng, aug=True, weights=None, render=False, pool=None, share=0.0, gentle=False,
            pairs=False):
    order = rng.permutation(len(x)) if weights is None else rng.choice(len(x), len(x), p=weights)
    keys = sorted(pool or {})
    for i in range(0, len(order) - bs + 1 if len(order) >= bs else 1, bs):
        idx = order[i:i + bs]
        groups = [with_counterfactual(x, y, int(j), pool, keys, share, rng, pairs) for j in idx]
        imgs, labels, pair_rows = [], [], []
        for group in groups:
            if len(group) == 2:
                pair_rows.append([len(imgs), len(imgs) + 1])
            # one draw for both, so only the lesion differs; gentle, or blur and JPEG could erase a lesion of a few px
            seed = int(rng.integers(1 << 62)) if len(group) == 2 else None
            for im, lab in group:
                if not aug:
                    imgs.append(resize(im, res))
                elif seed is None:
                    imgs.append(augment(im, rng, res, render, gentle))
                else:
                    imgs.append(augment(im, np.random.default_rng(seed), res, render, True))
                labels.append(lab)
        yield (to_input(np.stack(imgs)), torch.from_numpy(np.array(labels, dtype=y.dtype)),
               torch.tensor(pair_rows, dtype=torch.long).reshape(-1, 2))


def pair_loss(logits, labels, pairs, margin):
    """For each (lesion, clean) pair of rows: how much more the lesion's class leads Normal on the slice with the
    lesion than on the same slice without it, pushed past `margin` (softplus): a gradient on the difference itself,
    which a network that hedges on every such slice (both p 0.5) cannot meet."""
    lesion, clean = pairs[:, 0], pairs[:, 1]
    cls = labels[lesion]
    lead = lambda rows: logits[rows, cls] - logits[rows, 0]  # noqa: E731
    return F.softplus(margin - (lead(lesion) - lead(clean))).mean()


def load_teachers(paths, fold):
    """The networks whose averaged softened probabilities the student also learns (--teachers): each a run folder's
    final.pt, "{fold}" replaced by the fold held out, so a fold's student learns only from teachers that never saw
    that fold."""
    nets = []
    for path in paths:
        net = build_model(pretrained=False)
        net.load_state_dict(torch.load(Path(path.format(fold=fold)) / "final.pt", map_location="cpu"))
        nets.append(net.eval())
    return nets


def soft_targets(path, fold, rel, y, weight, temperature):
    """Per training slice, (1 - weight) * its one-hot label + weight * the softened probabilities that a network which
    never saw it gave it (crossfit.py's CSV for this fold). With weight <= 0.5 the label keeps the lead on every slice;
    the rest says how far that slice resembles other studies of its class."""
    from calibrate_ood import softmax
    from study_rule import read_rows
    rows = {r["relpath"]: r for r in read_rows(str(path).format(fold=fold))}
    missing = [r for r in rel if r not in rows]
    if missing or any(int(r["fold"]) == fold for r in rows.values()):
        # a slice of fold K in the file means it was made for another outer fold: its networks saw fold K
        raise SystemExit(f"--soft-targets {path}: {len(missing)} training slices have no target, or the file was "
                         f"made for another fold than {fold}")
    teacher = softmax([[float(rows[r][f"logit_{c}"]) for c in CLASSES] for r in rel], temperature)
    return ((1 - weight) * np.eye(len(CLASSES))[y] + weight * teacher).astype(np.float32)


def distillation_loss(logits, teachers, xb, temperature, teacher_logits=lambda net, x: forward_all(net, x)[0]):
    """KL divergence from the teachers' mean probability at `temperature` to the student's, times temperature**2
    (Hinton et al. 2015), so its gradient keeps the cross-entropy's scale whatever the temperature."""
    with torch.no_grad():
        target = torch.stack([F.softmax(teacher_logits(t, xb) / temperature, 1) for t in teachers]).mean(0)
    return F.kl_div(F.log_softmax(logits / temperature, 1), target, reduction="batchmean") * temperature ** 2


@torch.no_grad()
def update_ema(ema, net, decay):
    """decay 0 copies the weights (stage 1, and the EMA switched off)."""
    for e, p in zip(ema.state_dict().values(), net.state_dict().values()):
        if e.dtype.is_floating_point and decay > 0:
            e.mul_(decay).add_(p, alpha=1 - decay)
        else:
            e.copy_(p)


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--fold", type=int, default=None, help="grouped CV fold held out (default: the fixed split)")
    p.add_argument("--inner-fold", type=int, default=None,
                   help="with --fold K: also leave out this fold, and validate on it instead of K (the inner networks "
                        "of cross-fitted soft targets, crossfit.py: none of them sees fold K)")
    p.add_argument("--random-split", action="store_true",
                   help="image-level random 70/30 split (leaky; only to set beside published figures)")
    p.add_argument("--stage1", default="160:1", help="frozen-backbone epochs, res:epochs")
    p.add_argument("--stage2", default="160:5,224:2", help="full fine-tune epochs, res:epochs,...")
    p.add_argument("--bs", type=int, default=32)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=3e-4, help="stage-2 backbone peak LR (head gets --head-lr)")
    p.add_argument("--wd", type=float, default=0.01)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--patience", type=int, default=3)
    p.add_argument("--validate", choices=["every", "last"], default="every")
    p.add_argument("--tiny", type=int, default=0, help="use only this many images per split (tests)")
    p.add_argument("--max-steps", type=int, default=0, help="cap steps per epoch (tests)")
    p.add_argument("--max-minutes", type=float, default=0, help="stop cleanly after the epoch that passes this")
    p.add_argument("--ema", type=float, default=0.0,
                   help="exponential moving average of the weights in stage 2 (decay per step; 0 = off); the "
                        "averaged weights are the ones validated and saved")
    p.add_argument("--mixup", type=float, default=0.0, help="mixup Beta(a, a) in stage 2 (0 = off)")
    p.add_argument("--freeze-bn", action="store_true",
                   help="stage 2 keeps the ImageNet BatchNorm statistics (small effective data: ~150 studies)")
    p.add_argument("--freeze-blocks", type=int, default=0,
                   help="stage 2 leaves the first N feature blocks at their ImageNet weights")
    p.add_argument("--sampling", choices=["uniform", "group", "strata"], default="uniform",
                   help="group: class-balanced sampling with each study weighted by sqrt(slices) (replaces the "
                        "inverse-frequency class weights of the loss); strata: the same, and each view (axial, "
                        "coronal) and rendering cluster a mass within its class growing with the square root of "
                        "its studies")
    p.add_argument("--class-mass", type=lambda t: [float(v) for v in t.split(",")], default=[1.0, 1.0, 1.0, 1.0],
                   help="with --sampling group: each class's share of an epoch, Normal,Cyst,Stone,Tumor (relative)")
    p.add_argument("--counterfactual", type=float, default=0.0,
                   help="share of the training samples that are a Normal axial slice with found kidneys and a "
                        "synthetic cyst or stone, and as many that are such a slice as it is (counterfactual.py; "
                        "training only, never scored)")
    p.add_argument("--counterfactual-pairs", action="store_true",
                   help="each counterfactual slice comes with its lesion and without it, side by side in the batch "
                        "and augmented alike (gently)")
    p.add_argument("--pair-margin", type=float, default=0.0,
                   help="with --counterfactual-pairs: also push the lesion class's lead over Normal on each pair's "
                        "lesion slice past its lead on the clean one by this margin in logits (0 = off)")
    p.add_argument("--pair-weight", type=float, default=1.0,
                   help="weight of that margin loss beside the labels' cross-entropy")
    p.add_argument("--init", help="start from these weights (a state_dict .pt) instead of ImageNet's: fine-tuning "
                                  "a trained network, e.g. to probe whether a change can be learnt at all")
    p.add_argument("--render-jitter", action="store_true",
                   help="also vary the rendering the node may meet: CLAHE again with other settings, or local contrast "
                        "flattened as if there were none (augment.rendering)")
    p.add_argument("--gentle-degradation", action="store_true",
                   help="blur, noise and JPEG mild enough to keep a lesion of a few pixels, no salt-and-pepper "
                        "(augment.intensity)")
    p.add_argument("--teachers", default="",
                   help="comma-separated run folders (\"{fold}\" stands for --fold) whose final.pt networks, "
                        "averaged, the student also learns from (distillation; needs --distill)")
    p.add_argument("--distill", type=float, default=0.0,
                   help="weight of the teachers' softened probabilities in the loss, 0-1 (the labels get the rest)")
    p.add_argument("--distill-temperature", type=float, default=2.0)
    p.add_argument("--soft-targets", default="",
                   help="crossfit.py's CSV (\"{fold}\" stands for --fold): each training slice's target mixes its "
                        "label with what a network that never saw it read (cross-fitted distillation)")
    p.add_argument("--soft-weight", type=float, default=0.5, help="the soft target's share, 0-0.5")
    p.add_argument("--soft-temperature", type=float, default=2.0)
    p.add_argument("--deploy-res", type=int, default=224,
                   help="the size the network is validated (and would be deployed) at; above 224 the dataset's 224 px "
                        "slices are upsampled, so a lesion of a few pixels covers more of the network's feature map")
    p.add_argument("--snapshots", action="store_true",
                   help="keep the weights after every stage-2 epoch (epoch<N>.pt) for weight averaging (soup.py)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if len(args.class_mass) != 4 or min(args.class_mass) <= 0:
        p.error("--class-mass takes four positive shares: Normal,Cyst,Stone,Tumor")
    if args.class_mass != [1.0, 1.0, 1.0, 1.0] and args.sampling != "group":
        p.error("--class-mass needs --sampling group")
    if not 0 <= args.distill <= 1 or bool(args.teachers) != (args.distill > 0):
        p.error("--teachers and --distill (a weight in (0, 1]) go together")
    if args.pair_margin < 0 or (args.pair_margin > 0 and (not args.counterfactual_pairs or args.mixup > 0)):
        p.error("--pair-margin takes a margin >= 0 and needs --counterfactual-pairs without --mixup (which would mix "
                "each pair with other slices)")
    if args.pair_weight <= 0:
        p.error("--pair-weight must be positive (--pair-margin 0 switches the margin loss off)")
    if args.distill_temperature <= 0:
        p.error("--distill-temperature must be positive")
    teacher_paths = [t for t in args.teachers.split(",") if t]
    if args.teachers and (not teacher_paths or (args.fold is not None
                                                and not all("{fold}" in t for t in teacher_paths))):
        p.error("--teachers: give run folders, each with \"{fold}\" where the fold held out goes, so no teacher has "
                "seen the fold the student is scored on")
    if args.inner_fold is not None and (args.fold is None or args.inner_fold == args.fold or args.random_split
                                        or args.teachers):
        p.error("--inner-fold needs --fold and another fold than it, and goes with neither --random-split nor "
                "--teachers (made for --fold, they saw the inner fold)")
    if args.soft_targets and (args.fold is None or args.counterfactual > 0 or args.teachers
                              or args.sampling == "uniform"
                              or not 0 < args.soft_weight <= 0.5 or args.soft_temperature <= 0):
        p.error("--soft-targets needs --fold, --sampling group or strata (class weights would rescale a soft "
                "target's loss), a --soft-weight in (0, 0.5] and a positive temperature, and goes with neither "
                "--counterfactual (its synthetic slices have no target) nor --teachers")
    if args.counterfactual_pairs and not args.counterfactual > 0:
        p.error("--counterfactual-pairs needs --counterfactual (the share of samples that become pairs)")

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (rtr, xtr, ytr), (_, xva, yva) = load_data(args)
    xva = resize_all(xva, args.deploy_res)
    targets = (soft_targets(args.soft_targets, args.fold, rtr, ytr, args.soft_weight, args.soft_temperature)
               if args.soft_targets else ytr)
    counts = np.bincount(ytr, minlength=4)
    class_w = torch.tensor(len(ytr) / (4 * np.maximum(counts, 1)), dtype=torch.float32)
    weights = None
    if args.sampling in ("group", "strata"):
        weights = (group_weights(rtr, ytr, args.class_mass) if args.sampling == "group"
                   else strata_weights(rtr, ytr))
        class_w = torch.ones(4)
    pool = counterfactual_pool(rtr, xtr, ytr) if args.counterfactual > 0 else {}
    if pool:
        print(f"counterfactual lesions: kidneys found in {len(pool)} of {int((ytr == 0).sum())} Normal slices",
              flush=True)
    plan = [("head", r) for r in parse_schedule(args.stage1)] + [("full", r) for r in parse_schedule(args.stage2)]
    steps_per_epoch = max(1, len(xtr) // args.bs)
    if args.max_steps:
        steps_per_epoch = min(steps_per_epoch, args.max_steps)
    n_full = sum(1 for s, _ in plan if s == "full") * steps_per_epoch
    warm = min(150, max(1, n_full // 10))

    teachers = load_teachers(teacher_paths, args.fold)
    net = build_model(pretrained=True)
    if args.init:
        net.load_state_dict(torch.load(args.init, map_location="cpu"))
    head = list(net.classifier.parameters())
    opt1 = torch.optim.AdamW(head, lr=args.head_lr, weight_decay=args.wd)
    for block in net.features[:args.freeze_blocks]:
        block.requires_grad_(False)
    tuned = [q for q in net.features.parameters() if q.requires_grad]
    opt2 = torch.optim.AdamW([{"params": tuned, "lr": args.lr},
                              {"params": head, "lr": args.head_lr}], weight_decay=args.wd)
    base = [g["lr"] for g in opt2.param_groups]
    state = {"epoch": 0, "full_step": 0, "history": [], "best_f1": -1.0, "bad_epochs": 0, "seconds": 0.0}
    if (out / "last.pt").exists():
        ck = torch.load(out / "last.pt", map_location="cpu")
        net.load_state_dict(ck["net"])
        opt1.load_state_dict(ck["opt1"])
        opt2.load_state_dict(ck["opt2"])
        state = ck["state"]
        print(f"resumed after epoch {state['epoch']}", flush=True)
    ema = copy.deepcopy(net)
    if (out / "last.pt").exists() and "ema" in ck:
        ema.load_state_dict(ck["ema"])
    json.dump({**vars(args), "class_counts": counts.tolist(), "class_weights": class_w.tolist(),
               "plan": plan, "steps_per_epoch": steps_per_epoch}, open(out / "config.json", "w"), indent=2)

    t_start = time.time() - state["seconds"]
    while state["epoch"] < len(plan):
        ep = state["epoch"]
        stage, res = plan[ep]
        rng = np.random.default_rng(args.seed * 1000 + ep)
        torch.manual_seed(args.seed * 1000 + ep)
        t0, seen, loss_sum = time.time(), 0, 0.0
        for step, (xb, yb, pairs) in enumerate(batches(xtr, targets, args.bs, res, rng, weights=weights,
                                                      render=args.render_jitter, pool=pool,
                                                      share=args.counterfactual,
                                                      gentle=args.gentle_degradation,
                                                      pairs=args.counterfactual_pairs)):
            if step >= steps_per_epoch:
                break
            if stage == "head":
                net.eval()
                net.classifier.train()
                with torch.no_grad():
                    _, feats = forward_all(net, xb)
                logits = net.classifier(feats)
                opt = opt1
            else:
                net.train()
                if args.freeze_bn:
                    for m in net.features.modules():
                        if isinstance(m, torch.nn.BatchNorm2d):
                            m.eval()
                frac = state["full_step"] / max(1, n_full)
                mult = min(1.0, (state["full_step"] + 1) / warm) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
                for g, b in zip(opt2.param_groups, base):
                    g["lr"] = b * mult
                lam = 1.0
                if args.mixup > 0:
                    lam = float(rng.beta(args.mixup, args.mixup))
                    perm = torch.from_numpy(rng.permutation(len(yb)))
                    xb = lam * xb + (1 - lam) * xb[perm]
                logits, _ = forward_all(net, xb)
                opt = opt2
                state["full_step"] += 1
            loss = F.cross_entropy(logits, yb, weight=class_w, label_smoothing=args.label_smoothing)
            if stage == "full" and args.mixup > 0:
                loss = lam * loss + (1 - lam) * F.cross_entropy(logits, yb[perm], weight=class_w,
                                                                label_smoothing=args.label_smoothing)
            if args.pair_margin > 0 and len(pairs):
                loss = loss + args.pair_weight * pair_loss(logits, yb, pairs, args.pair_margin)
            if teachers:
                loss = (1 - args.distill) * loss + args.distill * distillation_loss(
                    logits, teachers, xb, args.distill_temperature)
            opt.zero_grad()
            loss.backward()
            opt.step()
            update_ema(ema, net, args.ema if stage == "full" and args.ema > 0 else 0.0)
            seen += len(yb)
            loss_sum += loss.item() * len(yb)
            if step % 50 == 0:
                print(f"ep {ep} {stage}@{res} step {step}/{steps_per_epoch} loss {loss.item():.3f} "
                      f"{seen / (time.time() - t0):.1f} img/s", flush=True)
        rec = {"epoch": ep, "stage": stage, "res": res, "train_loss": loss_sum / max(1, seen),
               "train_seconds": time.time() - t0}
        last = ep == len(plan) - 1
        if args.validate == "every" or last:
            metrics, _ = evaluate(ema, xva, yva)
            rec.update({f"val_{k}": v for k, v in metrics.items()})
            if metrics["macro_f1"] > state["best_f1"]:
                state["best_f1"], state["bad_epochs"] = metrics["macro_f1"], 0
                torch.save(ema.state_dict(), out / "best.pt")
                rec["best"] = True
            elif stage == "full":
                state["bad_epochs"] += 1
        if args.snapshots and stage == "full":
            torch.save(ema.state_dict(), out / f"epoch{ep}.pt")
        state["epoch"] += 1
        state["seconds"] = time.time() - t_start
        rec["elapsed"] = state["seconds"]
        state["history"].append(rec)
        print(json.dumps(rec), flush=True)
        torch.save({"net": net.state_dict(), "ema": ema.state_dict(), "opt1": opt1.state_dict(), "opt2": opt2.state_dict(), "state": state},
                   out / "last.tmp")
        (out / "last.tmp").replace(out / "last.pt")
        json.dump(state["history"], open(out / "history.json", "w"), indent=1)
        if state["bad_epochs"] >= args.patience:
            print("early stop: no validation macro-F1 gain", flush=True)
            break
        if args.max_minutes and state["seconds"] > args.max_minutes * 60:
            print("time cap reached", flush=True)
            break
    torch.save(ema.state_dict(), out / "final.pt")
    if not (out / "best.pt").exists():
        torch.save(ema.state_dict(), out / "best.pt")
    print(f"done in {state['seconds']:.0f} s; best val macro-F1 {state['best_f1']:.4f}", flush=True)


if __name__ == "__main__":
    main()
