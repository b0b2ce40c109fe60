#!/usr/bin/python3
"""One command from the committed grouped split to the shipped artefacts: train (→ average late epochs, if the recipe says
so) → evaluate/calibrate/OOD → ONNX export + OpenCV parity check → manifest. With --install, copies them into models/.
    /usr/bin/python3 training/run_all.py --out training/runs/v3 --install      # what ships (about 55 min on 2 cores)
    /usr/bin/python3 training/run_all.py --out /tmp/nephra-tiny --tiny          # smoke test, about a minute
    ... --recipe v2     # another recipe of RECIPES (with --tiny: the tiny schedule, that recipe's input size)
The training stage is resumable (re-run the same command). Steps whose outputs exist are not redone.
"""
import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from augment import resize_all
from data import load_split, sha256_file
from export_onnx import compare, export
from paths import CLASSES, DATASET, REPO, SPLITS, tune_malloc
from preprocess import BODY_MARGIN, BODY_THRESHOLD_HU, EXPORT_BODY_THRESHOLD_GRAY, MAX_AIR_FRACTION

HERE = Path(__file__).resolve().parent
PY = sys.executable
# v2: the recipe of models 2.0-2.2 and the base every trial recipe below adds to: a fixed schedule and its last
# weights. Grouped validation holds 32 studies, too few to pick an epoch by (v1's early-stopped epoch: test macro-F1
# 0.66, its last epoch: 0.73); soup_epochs ("3-6") would average the late epochs instead (soup.py), which did not help
# consistently.
V2 = {"train": ["--stage1", "160:1", "--stage2", "160:5,224:1", "--sampling", "group", "--patience", "99"],
      "soup_epochs": None}
# The shipped recipe (3.0), also what every grouped-CV fold runs (cv.py, oof.py): v2's schedule with every slice
# enlarged 1.5x (240 px for 160, 336 for 224) and scored at 336: a stone of 3-8 px at 224 spans 5-12 px, so it survives
# more of MobileNetV2's stride-32 downsampling. Against v2, over all five folds and each study-level rule nested:
# slice macro-F1 0.850 (0.770), Tumor studies 19/26 (17), Cyst 65/71 (61) (results/README.md, *Upsampled recipe*).
# 2.25x v2's compute, in training and in the node.
RECIPE = {"train": V2["train"] + ["--stage1", "240:1", "--stage2", "240:5,336:1", "--deploy-res", "336"],
          "soup_epochs": None}
# Recipes tried: v2 with arguments added (train.py takes the last value of a repeated option). oof.py --recipe NAME
# scores one out of fold beside the shipped recipe; one ships only if its study-level figures, nested over folds, beat
# the shipped recipe's. Where their comments say "the shipped recipe", they mean v2, which shipped when they ran.
# candidate: protocol-balanced sampling (view x rendering-cluster strata flattened within each class) and rendering
# jitter.
CANDIDATE = {"train": V2["train"] + ["--sampling", "strata", "--render-jitter"], "soup_epochs": None}
# counterfactual: 8 % of the samples are a Normal axial slice whose kidneys are found, with a synthetic cyst or stone
# (counterfactual.py), and 8 % such a slice as it is. (At about 1 % of the samples, v0, the network did not learn the
# drawn lesions at all: results/oof-counterfactual-v0/.)
COUNTERFACTUAL = {"train": V2["train"] + ["--counterfactual", "0.08"], "soup_epochs": None}
# longer: twice the whole-network schedule (10 epochs at 160 px, 2 at 224 px); version 1 -> 2 gained from training
# longer, and the last weights of a run beat its early-stopped ones.
LONGER = {"train": V2["train"] + ["--stage2", "160:10,224:2"], "soup_epochs": None}
# small-lesions: what a stone of a few pixels survives in training: more of the schedule at the deployed 224 px
# (2 epochs at 160, 3 at 224) and degradations that keep it (--gentle-degradation: no salt-and-pepper, whose bright
# single pixels on lesion-free slices look like small stones; milder blur, noise and JPEG). Of the Stone studies the
# shipped rule misses, half read as Cyst on most slices (results/README.md, rule_ceiling.py).
SMALL_LESIONS = {"train": V2["train"] + ["--stage2", "160:2,224:3", "--gentle-degradation"], "soup_epochs": None}
# generic-features: the whole-network stage leaves the first 4 feature blocks and every BatchNorm statistic at their
# ImageNet values. The Tumor studies it must learn from are about 21 per fold; the ones the shipped network misses
# include large, plainly visible masses read as Normal (results/README.md, *Missed studies*), which looks like
# memorised studies rather than a lesion too small to see.
GENERIC_FEATURES = {"train": V2["train"] + ["--freeze-blocks", "4", "--freeze-bn"], "soup_epochs": None}
# tumor-mass: Tumor gets twice the share of an epoch that each other class gets (it has 26 studies, Cyst and Stone
# about 70 each): the network spends more of its learning on the one class whose studies it misses most.
TUMOR_MASS = {"train": V2["train"] + ["--class-mass", "1,1,1,2"], "soup_epochs": None}
# v2-seed1, -seed2: v2 with another seed (sampling, augmentation, head initialisation): how far the
# same recipe moves by chance, the yardstick for every difference between recipes above.
V2_SEED1 = {"train": V2["train"] + ["--seed", "1"], "soup_epochs": None}
V2_SEED2 = {"train": V2["train"] + ["--seed", "2"], "soup_epochs": None}
# distilled: the shipped recipe, its loss 0.7 the averaged softened (T = 2) probabilities of the longer and
# small-lesions networks of the same fold and 0.3 the labels: one network with what two learnt (on fold 2 their
# averaged logits are the best model at hand, macro-F1 0.775 and 3 of 5 Tumor studies; over five folds, with their
# own nested rule, 16 of 26). Needs those recipes' fold weights first
# (oof.py --recipe longer / small-lesions, the --out below). Fold 2: the shipped network again (results/README.md).
DISTILLED = {"train": V2["train"] + ["--teachers", "training/runs/cv-longer/fold{fold},"
                                         "training/runs/cv-small-lesions/fold{fold}", "--distill", "0.7"],
             "soup_epochs": None}
# counterfactual-pairs: 15 % of each batch's slots become a pair, a Normal axial slice with found kidneys with a
# synthetic cyst or stone and the same slice without it, augmented alike, and a margin loss on how much more the
# lesion's class leads Normal on the one than on the other. The 8 % counterfactual recipe, whose synthetic slices
# came one at a time, only learnt to hedge on such slices; with pairs and the margin a one-epoch fine-tune of a fold
# network moved the probe, and called a finding on 4 of the fold's 5 axial Normal studies (results/README.md,
# *Counterfactual pairs*): not run from ImageNet.
COUNTERFACTUAL_PAIRS = {"train": V2["train"] + ["--counterfactual", "0.15", "--counterfactual-pairs",
                                                    "--pair-margin", "2"], "soup_epochs": None}
# crossfit-soft: the shipped recipe, each training slice's target half its label, half the T = 2 probabilities that a
# network which saw neither that slice's fold nor the fold scored gave it (crossfit.py, four networks per fold, run
# first). Unlike `distilled`, whose in-sample teachers gave back the labels, these targets carry what generalises to
# unseen studies; at half weight the label keeps the lead on every slice. Fold 2: no gain per slice, and a less
# confident network that the shipped rule finds few Stone studies with (results/README.md).
CROSSFIT_SOFT = {"train": V2["train"] + ["--soft-targets", "training/results/crossfit/fold{fold}.csv.gz",
                                             "--soft-weight", "0.5"], "soup_epochs": None}
# shipped-seed1: the shipped recipe with another seed, the noise yardstick for its fold figures.
SHIPPED_SEED1 = {"train": RECIPE["train"] + ["--seed", "1"], "soup_epochs": None}
RECIPES = {"shipped": RECIPE, "v2": V2, "candidate": CANDIDATE, "counterfactual": COUNTERFACTUAL, "longer": LONGER,
           "small-lesions": SMALL_LESIONS, "generic-features": GENERIC_FEATURES, "tumor-mass": TUMOR_MASS,
           "v2-seed1": V2_SEED1, "v2-seed2": V2_SEED2, "distilled": DISTILLED,
           "counterfactual-pairs": COUNTERFACTUAL_PAIRS, "crossfit-soft": CROSSFIT_SOFT,
           "shipped-seed1": SHIPPED_SEED1}
TINY = {"train": ["--tiny", "40", "--stage1", "160:1", "--stage2", "224:2", "--max-steps", "2", "--bs", "8",
                  "--sampling", "group", "--snapshots", "--patience", "99"],
        "soup_epochs": "1-2"}
NAME = "nephra-kidney"


def train_args(recipe=RECIPE):
    """train.py arguments of a recipe; averaging epochs (soup.py) needs each epoch's weights kept."""
    args = list(recipe["train"])
    if recipe["soup_epochs"] and "--snapshots" not in args:
        args.append("--snapshots")
    return args


def option(recipe, name, default=None):
    """An option's value in the recipe's train.py arguments: the last one given, as train.py takes it."""
    args = recipe["train"]
    at = [i for i, a in enumerate(args) if a == name]
    return args[at[-1] + 1] if at else default


def schedule_length(recipe=RECIPE):
    """Epochs in the recipe's schedule (frozen-backbone plus whole-network)."""
    parts = ",".join(option(recipe, k) for k in ("--stage1", "--stage2"))
    return sum(int(x.split(":")[1]) for x in parts.split(","))


def deploy_res(recipe=RECIPE):
    """The size the recipe's network is scored at (train.py --deploy-res)."""
    return int(option(recipe, "--deploy-res", 224))


def sh(cmd):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=REPO)


def manifest(out, onnx_path, checkpoint, results, parity, recipe=RECIPE):
    sd = torch.load(checkpoint, map_location="cpu")
    ood = __import__("numpy").load(out / "ood_model.npz")
    summary = json.load(open(SPLITS / "summary.json"))
    cv_path = HERE / "results" / "cv.json"
    cv = json.load(open(cv_path)) if cv_path.exists() else {}
    # Figures of another recipe, or of a run that has not finished every fold, must not be shipped as this model's.
    if cv.get("recipe") != recipe or not cv.get("complete"):
        cv = {}
    size = deploy_res(recipe)
    r2 = lambda v: [round(float(a), 7) for a in v]  # noqa: E731
    return {
        "name": "nephra-kidney", "version": "3.0.0", "architecture": "mobilenet_v2",
        "onnx": onnx_path.name, "onnx_sha256": sha256_file(onnx_path),
        "classes": CLASSES,
        "input": {"name": "input", "width": size, "height": size, "channels": 3, "value_range": [0, 255],
                  "layout": "NCHW float32, the 8-bit gray value replicated in all 3 channels", "dynamic_batch": True},
        "outputs": {"logits": "logits", "features": "features",
                    "features_shape": [1280, -(-size // 32), -(-size // 32)],
                    "cam": "CAM_c = sum_k head.weight[c][k] * features[k] (+ bias), equals Grad-CAM for this head"},
        "preprocessing": {
            "render_size": 224,
            "render_to_input": "the 224 px rendering (the dataset's slices' size) is resized bilinearly to the "
                               "input size where they differ, as training enlarged the slices (augment.resize_all)",
            "dicom": {"window_center": results["dicom_window"]["center"] if "dicom_window" in results else None,
                      "window_width": results["dicom_window"]["width"] if "dicom_window" in results else None,
                      "formula": "HU = stored*RescaleSlope + RescaleIntercept; u8 = clamp((HU - (center - width/2)) / "
                                 "width * 255, 0, 255) in float32, truncated to integer; then body crop, resize, "
                                 "CLAHE (training/preprocess.py)",
                      "body_crop": {"threshold_hu": BODY_THRESHOLD_HU, "margin": BODY_MARGIN,
                                    "max_air_fraction": MAX_AIR_FRACTION,
                                    "rule": "largest 8-connected region with HU > threshold_hu; its bounding box "
                                            "centre, side max(w, h) * (1 + 2 * margin) rounded half up; "
                                            "outside the image is 0; an axial slice whose region, holes filled, "
                                            "is more than max_air_fraction not-region (lungs) is not assessed"},
                      "resize": "lanczos4", "clahe": {"clip_limit": 4.0, "tile_grid": 8},
                      "how_chosen": "training/dicom_window.py: grid search of center/width minimising the 1-D "
                                    "Wasserstein distance between gray histograms of the real TCIA series' kidney "
                                    "slices (windowed, resized, CLAHE) and the dataset's"},
            "image_files": {"rule": "a PNG/JPEG export of a windowed slice goes through the DICOM rendering: body "
                                    "crop (largest 8-connected region with gray > body_threshold_gray, same margin), "
                                    "square, resize, CLAHE; an image already render-size square is the dataset's own "
                                    "form (cropped, resized, CLAHE-processed) and is taken as it is",
                            "body_threshold_gray": EXPORT_BODY_THRESHOLD_GRAY,
                            "how_chosen": "on the TCIA series' kidney-level slices windowed as the manifest says, "
                                          "gray 0-10 gives the same body box as threshold_hu within 2 px; 20 and "
                                          "above cuts into subcutaneous fat",
                            "resize": "lanczos4", "clahe": {"clip_limit": 4.0, "tile_grid": 8}},
            "normalisation": "inside the graph: x/255, ImageNet mean/std per channel"},
        "head": {"weight": [r2(w) for w in sd["classifier.1.weight"].tolist()],
                 "bias": r2(sd["classifier.1.bias"].tolist())},
        "temperature": round(results["temperature"], 6),
        "ood": {"method": "mahalanobis-pca", "feature": "global average pool of features",
                "pca_mean": r2(ood["mean"]), "pca_components": [r2(c) for c in ood["components"]],
                "class_means": [r2(c) for c in ood["class_means"]], "precision": [r2(c) for c in ood["precision"]],
                "threshold": round(float(ood["threshold"]), 6),
                "residual_scale": float(ood["residual_scale"]),
                "threshold_rule": f"{results['ood']['percentile']}th percentile of grouped-validation kidney-slice scores",
                "score": "z = (f - pca_mean) C^T; min_c (z - mu_c)^T P (z - mu_c) / K + |f - pca_mean - z C|^2 / "
                         "residual_scale, f = pooled features; score > threshold -> not assessed"},
        "decision_thresholds": {k: round(v, 4) for k, v in results["decision_thresholds"].items()},
        "decision_rule": results["decision_rule"],
        "study_rule": {"min_run_slices": 2,
                       "rule": "a finding is present in a study when at least min_run_slices adjacent slices "
                               "(ordered along the patient axis) are flagged; not-assessed slices are never flagged"},
        "dataset": {"name": "CT KIDNEY (Islam et al. 2022), CLAHE 224 copy",
                    "manifest_sha256": sha256_file(DATASET / "MANIFEST.csv"),
                    "split_sha256": {k: v["sha256"] for k, v in summary["splits"].items()},
                    "split": "grouped by STUDY_GROUPS.csv pseudo-study, class-stratified 70/15/15, seed 0"},
        "metrics": {"test_macro_f1": round(results["test"]["macro_f1"], 4),
                    "test_accuracy": round(results["test"]["accuracy"], 4),
                    "test_recall": {c: round(v["recall"], 4) for c, v in results["test"]["per_class"].items()},
                    "ece_test_before": round(results["ece"]["test"]["before"], 4),
                    "ece_test_after": round(results["ece"]["test"]["after"], 4),
                    "cv_macro_f1_mean": cv.get("macro_f1_mean"), "cv_macro_f1_sd": cv.get("macro_f1_sd"),
                    "cv_protocol": cv.get("protocol", "not measured"),
                    "cv_folds": cv.get("n_folds", 0),
                    "opencv_parity_max_logit_diff": max(v["max_logit_diff"] for v in parity.values())},
    }


def main():
    tune_malloc()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--install", action="store_true", help="copy the artefacts into models/")
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--recipe", default="shipped", choices=sorted(RECIPES))
    args = p.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    recipe = RECIPES[args.recipe]
    size = deploy_res(recipe)  # the network's input size; the tiny schedule keeps the recipe's
    if args.tiny:
        recipe = {**TINY, "train": TINY["train"] + ["--deploy-res", str(size)]}
    tiny = ["--tiny", "40"] if args.tiny else []
    if not args.skip_train:
        sh([PY, HERE / "train.py", "--out", out] + train_args(recipe))
    checkpoint = out / "final.pt"
    if recipe["soup_epochs"]:
        checkpoint = out / "soup.pt"
        if not checkpoint.exists():
            sh([PY, HERE / "soup.py", "--run", out, "--epochs", recipe["soup_epochs"]] + tiny)
    sh([PY, HERE / "evaluate.py", "--run", out, "--checkpoint", checkpoint] + tiny)
    results = json.load(open(out / "results.json"))
    onnx_path = out / f"{NAME}.onnx"
    model = export(checkpoint, onnx_path, size)
    _, x, _ = load_split("test", 16 if args.tiny else 100)
    parity = compare(model, onnx_path, resize_all(x, size), batches=(1, 8))
    print("OpenCV vs torch:", parity, flush=True)
    assert max(v["max_logit_diff"] for v in parity.values()) <= 1e-4, parity
    man = manifest(out, onnx_path, checkpoint, results, parity, RECIPES[args.recipe])
    (out / f"{NAME}.json").write_text(json.dumps(man, indent=1) + "\n")
    if args.install:
        models = REPO / "models"
        models.mkdir(exist_ok=True)
        shutil.copy(onnx_path, models / onnx_path.name)
        shutil.copy(checkpoint, models / f"{NAME}.pt")
        shutil.copy(out / f"{NAME}.json", models / f"{NAME}.json")
        for png in ("training_curves.png", "confusion_matrix.png"):
            if (out / png).exists():
                shutil.copy(out / png, models / png)
    print(f"done in {time.time() - t0:.0f} s: {out / (NAME + '.json')}", flush=True)


if __name__ == "__main__":
    main()
