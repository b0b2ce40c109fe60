#!/usr/bin/python3
"""Evaluate a trained checkpoint on the fixed grouped split: test metrics, temperature scaling + ECE, the
Mahalanobis OOD detector (fitted on train, threshold on validation) and its check on real non-kidney DICOM slices,
natural photos and synthetic non-CT images, decision thresholds, figures. Writes <run>/results.json.
    /usr/bin/python3 training/evaluate.py --run training/runs/v2 [--checkpoint training/runs/v2/final.pt]
"""
import argparse
import gzip
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pydicom
import torch
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, roc_auc_score

from augment import resize_all
from calibrate_ood import MahalanobisPCA, decision_thresholds, ece, fit_temperature, softmax
from data import group_of, load_split
from model import build_model, forward_all, to_input
from paths import CLASSES, SHARED, tune_malloc
from preprocess import MAX_AIR_FRACTION, body_air, dicom_slice_to_u8, hu_of

CLAHE = cv2.createCLAHE(clipLimit=4.0, tileGridSize=(8, 8))
SERIES = SHARED / "data" / "dicom" / "tcia-pancreatic-ct-cbct-seg-001"
PHOTOS = SHARED / "models" / "pretrained" / "test_images"


def dicom_to_u8(ds, center, width):
    """What the node does with a CT slice (training/preprocess.py): HU → window → body crop → Lanczos 224 → CLAHE."""
    return dicom_slice_to_u8(hu_of(ds), center, width)


def image_file_to_u8(img):
    """PNG/JPEG path of the node: taken as already windowed + CLAHE'd; gray, Lanczos 224."""
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return cv2.resize(img, (224, 224), interpolation=cv2.INTER_LANCZOS4)


def dicom_series(center, width):
    """{instance number: (network input, body air fraction)} of the axial TCIA series."""
    out = {}
    for path in sorted(SERIES.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        out[int(ds.InstanceNumber)] = (dicom_to_u8(ds, center, width), body_air(hu_of(ds)))
    return out


def natural_images():
    imgs = {}
    for p in sorted(PHOTOS.glob("*.jpg")):
        imgs[p.name] = image_file_to_u8(cv2.imread(str(p)))
    try:  # photos and an MRI slice that ship with matplotlib (Debian python3-matplotlib)
        import matplotlib
        sample = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
            if (sample / name).exists():
                imgs[name] = image_file_to_u8(cv2.imread(str(sample / name)))
        if (sample / "s1045.ima.gz").exists():  # 256x256 16-bit MR head slice
            mr = np.frombuffer(gzip.open(sample / "s1045.ima.gz").read(), np.uint16).reshape(256, 256)
            mr = cv2.normalize(mr.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
            imgs["mri_head_s1045"] = CLAHE.apply(image_file_to_u8(mr))
    except ImportError:
        pass
    return imgs


def synthetic_images(seed=0):
    """Non-CT inputs a node might be fed: noise, gradients, flat fields, text, shapes, checkerboards."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(4):
        out[f"uniform_noise_{i}"] = rng.integers(0, 256, (224, 224), dtype=np.uint8)
        out[f"gauss_noise_{i}"] = np.clip(rng.normal(128, 20 + 20 * i, (224, 224)), 0, 255).astype(np.uint8)
    ramp = np.tile(np.linspace(0, 255, 224), (224, 1)).astype(np.uint8)
    out["gradient_h"], out["gradient_v"] = ramp, ramp.T.copy()
    yy, xx = np.mgrid[:224, :224]
    out["gradient_diag"] = ((xx + yy) / 446 * 255).astype(np.uint8)
    out["gradient_radial"] = np.clip(255 - np.hypot(xx - 112, yy - 112) * 2, 0, 255).astype(np.uint8)
    for v in (0, 60, 128, 255):
        out[f"flat_{v}"] = np.full((224, 224), v, np.uint8)
    for i, (bg, fg) in enumerate(((0, 255), (255, 0), (40, 200))):
        img = np.full((224, 224), bg, np.uint8)
        for line in range(6):
            cv2.putText(img, f"REPORT {line} kidney ok", (5, 30 + 32 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.6, fg, 1 + i % 2)
        out[f"text_{i}"] = img
    for k in (8, 16, 32):
        out[f"checker_{k}"] = (((xx // k) + (yy // k)) % 2 * 255).astype(np.uint8)
    for i in range(4):
        img = np.zeros((224, 224), np.uint8)
        for _ in range(12):
            c = tuple(int(v) for v in rng.integers(0, 224, 2))
            cv2.circle(img, c, int(rng.integers(5, 50)), int(rng.integers(50, 255)), -1)
        out[f"shapes_{i}"] = img
    return out


@torch.no_grad()
def infer(net, gray_u8, bs=16):
    net.eval()
    lo, fe = [], []
    for i in range(0, len(gray_u8), bs):
        a, b = forward_all(net, to_input(gray_u8[i:i + bs]))
        lo.append(a.numpy())
        fe.append(b.numpy())
    return np.concatenate(lo), np.concatenate(fe)


def cached_infer(net, run, name, gray_u8):
    """Logits and pooled features of one split, cached per checkpoint (name carries the checkpoint's stem)."""
    path = run / "eval" / f"{name}.npz"
    if path.exists():
        z = np.load(path)
        return z["logits"], z["feats"]
    lo, fe = infer(net, gray_u8)
    path.parent.mkdir(exist_ok=True)
    np.savez(path, logits=lo, feats=fe)
    return lo, fe


def classification_report(y, probs):
    pred = probs.argmax(1)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=range(4), zero_division=0)
    auc = {}
    for c in range(4):
        if 0 < (y == c).sum() < len(y):
            auc[CLASSES[c]] = float(roc_auc_score(y == c, probs[:, c]))
    return {"n": int(len(y)), "accuracy": float((pred == y).mean()), "macro_f1": float(f1_score(y, pred, average="macro")),
            "per_class": {CLASSES[c]: {"precision": float(p[c]), "recall": float(r[c]), "f1": float(f[c]),
                                       "support": int(s[c])} for c in range(4)},
            "roc_auc": auc, "confusion_matrix": confusion_matrix(y, pred, labels=range(4)).tolist(),
            "confusion_rows": "true class (Normal, Cyst, Stone, Tumor), columns = predicted"}


def group_bootstrap(rel, y, pred, n=2000, seed=0):
    """95 % intervals of macro-F1 and per-class recall when the split's studies (not its slices) are resampled with
    replacement, per class: the test split holds only a few dozen studies, and this says how much a figure on it
    would move with another draw of patients."""
    rng = np.random.default_rng(seed)
    by_group = {}
    for i, r in enumerate(rel):
        by_group.setdefault(group_of(r), []).append(i)
    per_class = [[np.array(v) for k, v in by_group.items() if CLASSES.index(k[0]) == c] for c in range(4)]
    f1s, recalls = [], []
    for _ in range(n):
        idx = np.concatenate([g[j] for g in per_class if g for j in rng.integers(0, len(g), len(g))])
        f1s.append(f1_score(y[idx], pred[idx], average="macro", labels=range(4), zero_division=0))
        recalls.append([(pred[idx][y[idx] == c] == c).mean() if (y[idx] == c).any() else np.nan for c in range(4)])
    ci = lambda v: [round(float(q), 4) for q in np.nanpercentile(v, [2.5, 97.5])]  # noqa: E731
    recalls = np.array(recalls)
    return {"studies": len(by_group), "resamples": n, "macro_f1_ci95": ci(f1s),
            "recall_ci95": {CLASSES[c]: ci(recalls[:, c]) for c in range(4)}}


def plots(run, history, cm, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train loss (augmented, smoothed, weighted)")
    ax[0].plot(ep, [h.get("val_loss") for h in history], "o-", label="val loss")
    ax[0].set_xlabel("epoch")
    ax[0].legend(fontsize=7)
    ax[1].plot(ep, [h.get("val_macro_f1") for h in history], "o-", label="val macro-F1")
    ax[1].plot(ep, [h.get("val_acc") for h in history], "o-", label="val accuracy")
    for h in history:
        ax[1].annotate(f"{h['stage']}@{h['res']}", (h["epoch"], h.get("val_macro_f1") or 0), fontsize=6,
                       rotation=45)
    ax[1].set_xlabel("epoch")
    ax[1].legend(fontsize=7)
    fig.suptitle("Nephra kidney model: training curves (grouped validation split)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "training_curves.png")
    plt.close(fig)
    cm = np.array(cm)
    fig, ax = plt.subplots(figsize=(4.2, 3.8), dpi=80)
    ax.imshow(cm / cm.sum(1, keepdims=True), cmap="Blues", vmin=0, vmax=1)
    for i in range(4):
        for j in range(4):
            ax.text(j, i, f"{cm[i, j]}\n{cm[i, j] / cm[i].sum():.2f}", ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] / cm[i].sum() > 0.5 else "black")
    ax.set_xticks(range(4), CLASSES)
    ax.set_yticks(range(4), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("grouped test split (counts, row fraction)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "confusion_matrix.png")
    plt.close(fig)


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--tiny", type=int, default=0)
    p.add_argument("--pca-k", type=int, default=64)
    p.add_argument("--ood-percentile", type=float, default=97.0)
    p.add_argument("--window", default=None, help="center,width in HU (default: training/results/dicom_window.json)")
    p.add_argument("--figures", default=None, help="folder for the PNGs (default: <run>)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("NEPHRA_THREADS", "2")))
    run = Path(args.run)
    ck = Path(args.checkpoint) if args.checkpoint else run / "final.pt"
    net = build_model(pretrained=False)
    net.load_state_dict(torch.load(ck, map_location="cpu"), strict=True)
    net.eval()
    # a network trained on enlarged slices (train.py --deploy-res) sees every rendering enlarged, as the node does
    size = json.load(open(run / "config.json")).get("deploy_res", 224) if (run / "config.json").exists() else 224
    if args.window:
        center, width = (float(v) for v in args.window.split(","))
    else:
        best = json.load(open(Path(__file__).parent / "results" / "dicom_window.json"))["best"]
        center, width = float(best["level"]), float(best["width"])

    data = {}
    for split in ("train", "val", "test"):
        rel, x, y = load_split(split, args.tiny)
        lo, fe = cached_infer(net, run, f"{ck.stem}-{split}{'-tiny' if args.tiny else ''}", resize_all(x, size))
        data[split] = (rel, y, lo, fe)
    _, yva, lva, fva = data["val"]
    _, yte, lte, fte = data["test"]
    _, ytr, _, ftr = data["train"]

    T = fit_temperature(lva, yva)
    res = {"checkpoint": str(ck.name), "temperature": T}
    res["ece"] = {s: {"before": ece(softmax(data[s][2]), data[s][1]), "after": ece(softmax(data[s][2], T), data[s][1])}
                  for s in ("val", "test")}
    res["val"] = classification_report(yva, softmax(lva, T))
    res["test"] = classification_report(yte, softmax(lte, T))
    for split in ("val", "test"):
        res[split]["group_bootstrap"] = group_bootstrap(data[split][0], data[split][1], data[split][2].argmax(1))
    thr = decision_thresholds(softmax(lva, T), yva, CLASSES)
    res["decision_thresholds"] = thr
    res["decision_rule"] = ("per finding c: flag when calibrated p(c) >= threshold_c; threshold_c = the value with the "
                            "best grouped-validation F1 for c (grid 0.01..0.5, step 0.005), capped at 0.5")
    pte = softmax(lte, T)
    res["test_flagging"] = {}
    for name, t in thr.items():
        c = CLASSES.index(name)
        flag = pte[:, c] >= t
        tp = int((flag & (yte == c)).sum())
        res["test_flagging"][name] = {"threshold": t, "recall": tp / max(1, int((yte == c).sum())),
                                      "precision": tp / max(1, int(flag.sum()))}

    k = min(args.pca_k, len(ftr) - 1)
    ood = MahalanobisPCA().fit(ftr, ytr, k=k)
    sva, ste = ood.score(fva), ood.score(fte)
    thr_ood = float(np.percentile(sva, args.ood_percentile))
    res["ood"] = {"k": k, "percentile": args.ood_percentile, "threshold": thr_ood,
                  "val_flagged": float((sva > thr_ood).mean()), "test_flagged": float((ste > thr_ood).mean()),
                  "test_flagged_by_class": {CLASSES[c]: float((ste[yte == c] > thr_ood).mean()) for c in range(4)}}
    if SERIES.exists():
        series = dicom_series(center, width)
        inst = sorted(series)
        lo, fe = infer(net, resize_all(np.stack([series[i][0] for i in inst]), size))
        sc = ood.score(fe)
        pr = softmax(lo, T)
        per = {i: {"score": float(s), "air": round(series[i][1], 4), "outside_abdomen": series[i][1] > MAX_AIR_FRACTION,
                   "flagged": bool(s > thr_ood or series[i][1] > MAX_AIR_FRACTION), "pred": CLASSES[int(q.argmax())],
                   "p": [round(float(v), 3) for v in q]} for i, s, q in zip(inst, sc, pr)}
        res["dicom_window"] = {"center": center, "width": width}
        res["dicom_per_instance"] = per
        for name, sel in (("chest_1_35", range(1, 36)), ("upper_abdomen_36_49", range(36, 50)),
                          ("kidney_55_90", range(55, 91)), ("lower_abdomen_pelvis_100_134", range(100, 135))):
            s = [per[i] for i in sel if i in per]
            res["ood"][f"dicom_{name}_flagged"] = float(np.mean([v["flagged"] for v in s]))
            res["ood"][f"dicom_{name}_flagged_by_score"] = float(np.mean([v["score"] > thr_ood for v in s]))
            res["ood"][f"dicom_{name}_n"] = len(s)
            if name == "kidney_55_90":
                res["dicom_kidney_predictions"] = {c: sum(v["pred"] == c for v in s) for c in CLASSES}
    for name, imgs in (("natural", natural_images()), ("synthetic", synthetic_images())):
        keys = sorted(imgs)
        _, fe = infer(net, resize_all(np.stack([imgs[k] for k in keys]), size))
        sc = ood.score(fe)
        res["ood"][f"{name}_flagged"] = float((sc > thr_ood).mean())
        res["ood"][f"{name}_n"] = len(keys)
        res["ood"][f"{name}_missed"] = [k for k, s in zip(keys, sc) if s <= thr_ood]
    res["ood_score_quantiles"] = {"val": np.percentile(sva, [50, 90, 95, 97, 99]).round(2).tolist(),
                                  "test": np.percentile(ste, [50, 90, 95, 97, 99]).round(2).tolist()}
    np.savez(run / "ood_model.npz", mean=ood.mean, components=ood.components, class_means=ood.class_means,
             precision=ood.precision, threshold=thr_ood, residual_scale=ood.residual_scale)
    hist_path = run / "history.json"
    if hist_path.exists():
        plots(run, json.load(open(hist_path)), res["test"]["confusion_matrix"], Path(args.figures or run))
    json.dump(res, open(run / "results.json", "w"), indent=1)
    summary = {k: res[k] for k in ("temperature", "ece", "decision_thresholds", "ood")}
    summary["test"] = {k: res["test"][k] for k in ("accuracy", "macro_f1", "roc_auc")}
    summary["test_recall"] = {c: round(v["recall"], 4) for c, v in res["test"]["per_class"].items()}
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
