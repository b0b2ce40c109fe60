#!/usr/bin/python3
"""Site adaptation: fine-tune the shipped model's head on a site's labelled studies, measured by study-grouped
cross-validation beside the shipped model on the same studies, and write a new model, manifest and model card.

Input: the labels file `nephra validate` reads (study folders of DICOM or image files; 0/1 per finding; optional
`slices` ranges). Every slice is read by the engine itself (`nephra classify --study DIR --inputs`), so training sees
exactly the network input the node makes; a parity check (torch on those inputs against the engine's own
probabilities) stops the run if they differ. Slice labels: every assessed slice of a study labelled normal is
Normal; slices in a labelled range are that finding; other slices of a study with a finding are left out (where
the finding is not known). Only the head (Linear 1280 -> 4) is refitted, with an L2 pull towards the shipped head:
the backbone, its features, the CAMs' meaning and the out-of-distribution model stay those of the shipped model.

    /usr/bin/python3 training/adapt.py --labels site/labels.csv --name site-a --out training/runs/adapt-site-a

Writes OUT/model/{nephra-kidney.json, nephra-kidney-<name>.onnx, nephra-kidney-<name>.pt, MODEL_CARD.md} and
OUT/adapt.json. The shipped files in models/ are never written.
"""
import argparse
import copy
import csv
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from calibrate_ood import fit_temperature, softmax
from model import Deployed, build_model, forward_all, to_input
from paths import CLASSES, REPO
from study_rule import longest_run, rate_ci

FINDINGS = [c for c in CLASSES if c != "Normal"]
PARITY_TOLERANCE = 2e-3  # calibrated probability, torch on the engine's input vs the engine (OpenCV DNN)


def read_labels(path):
    """The labels file as `nephra validate` reads it (the C++ parser is the reference; this one is lenient)."""
    rows = []
    lines = [ln for ln in Path(path).read_text(encoding="utf-8-sig").splitlines() if ln.strip() and not ln.startswith("#")]
    for r in csv.DictReader(lines):
        where = {}
        for part in (r.get("slices") or "").split(";"):
            if ":" not in part:
                continue
            finding, ranges = part.split(":", 1)
            for rng in ranges.split():
                a, _, b = rng.partition("-")
                where.setdefault(finding.strip(), []).append((int(a), int(b or a)))
        rows.append({"study": r["study"].strip(), "truth": {f: r[f].strip() == "1" for f in FINDINGS}, "where": where})
    return rows


def engine_inputs(nephra, model, study_dir, out_dir):
    """The engine's study result and its network inputs (slice number -> uint8 at the network's input size)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    run = subprocess.run([str(nephra), "classify", "--model", str(model), "--study", str(study_dir), "--inputs",
                          str(out_dir)], capture_output=True, text=True)
    if not run.stdout.strip():
        raise SystemExit(f"adapt: nephra could not classify {study_dir}: {run.stderr.strip()}")
    result = json.loads(run.stdout)
    images = {int(p.stem): cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(out_dir.glob("*.png"))}
    return result, images


def slice_labels(study, result):
    """Per slice of the study: a class index, or -1 (not assessed, or a slice of a finding study outside its ranges)."""
    normal = not any(study["truth"].values())
    labels = {}
    for s in result["slices"]:
        n = s["slice"]
        label = -1
        if not s["not_assessed"]:
            if normal:
                label = 0
            for f, ranges in study["where"].items():
                if study["truth"].get(f) and any(a <= n <= b for a, b in ranges):
                    label = CLASSES.index(f)
        labels[n] = label
    return labels


def fit_head(feats, y, w0, b0, pull=1e-3, steps=200):
    """Multinomial logistic regression on pooled features, class-balanced, pulled towards the shipped head."""
    x = torch.tensor(feats, dtype=torch.float32)
    t = torch.tensor(y)
    counts = np.bincount(y, minlength=len(CLASSES)).astype(float)
    weight = torch.tensor(np.where(counts > 0, len(y) / np.maximum(counts, 1) / (counts > 0).sum(), 0.0),
                          dtype=torch.float32)
    w = torch.tensor(w0, dtype=torch.float32, requires_grad=True)
    b = torch.tensor(b0, dtype=torch.float32, requires_grad=True)
    w_ref, b_ref = torch.tensor(w0, dtype=torch.float32), torch.tensor(b0, dtype=torch.float32)
    opt = torch.optim.LBFGS([w, b], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w.T + b, t, weight=weight)
        loss = loss + pull * (((w - w_ref) ** 2).sum() + ((b - b_ref) ** 2).sum())
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach().numpy(), b.detach().numpy()


def study_calls(probs, assessed, rule):
    """The manifest's study rule on one study's slices (in order): {finding: present}."""
    calls = {}
    for f in FINDINGS:
        flags = (probs[:, CLASSES.index(f)] >= rule["thresholds"][f]) & assessed
        calls[f] = bool(longest_run(flags) >= rule["runs"][f])
    return calls


def study_metrics(calls, studies, seed=0):
    rng = np.random.default_rng(seed)
    normal = [not any(s["truth"].values()) for s in studies]
    out = {"sensitivity": {}, "false_finding_rate_normal": {}}
    for f in FINDINGS:
        out["sensitivity"][f] = rate_ci([c[f] for c, s in zip(calls, studies) if s["truth"][f]], rng)
        out["false_finding_rate_normal"][f] = rate_ci([c[f] for c, n in zip(calls, normal) if n], rng)
    out["false_finding_rate_normal"]["any"] = rate_ci([any(c.values()) for c, n in zip(calls, normal) if n], rng)
    return out


def fmt(r):
    return "no study" if r is None else f"{r['hits']}/{r['n']} = {r['rate']:.2f} ({r['ci95'][0]:.2f}-{r['ci95'][1]:.2f})"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labels", required=True, type=Path)
    p.add_argument("--name", required=True, help="the site's short name: lowercase letters, digits and dashes")
    p.add_argument("--out", type=Path, help="default training/runs/adapt-<name>")
    p.add_argument("--model", type=Path, default=REPO / "models" / "nephra-kidney.json", help="the model to adapt")
    p.add_argument("--nephra", type=Path, default=REPO / "build" / "release" / "app" / "nephra")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--pull", type=float, default=1e-3, help="L2 weight pulling the head towards the shipped one")
    args = p.parse_args()
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", args.name):
        raise SystemExit("adapt: --name must be lowercase letters, digits and dashes")
    out = (args.out or REPO / "training" / "runs" / f"adapt-{args.name}").resolve()
    if (REPO / "models").resolve() in [out, *out.parents]:
        raise SystemExit("adapt: --out must not be under models/: the shipped files are never overwritten")
    base = json.loads(args.model.read_text())
    checkpoint = args.model.parent / args.model.name.replace(".json", ".pt")
    rule = {"thresholds": base["decision_thresholds"], "runs": base["study_rule"]["min_run_slices"]}
    if not isinstance(rule["runs"], dict):
        rule["runs"] = {f: int(rule["runs"]) for f in FINDINGS}

    studies = read_labels(args.labels)
    if len(studies) < 2:
        raise SystemExit("adapt: at least two labelled studies are needed (cross-validation is by study)")
    net = build_model(pretrained=False)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"), strict=True)
    net.eval()
    data, parity = [], 0.0
    for i, s in enumerate(studies, 1):
        folder = Path(s["study"]) if Path(s["study"]).is_absolute() else args.labels.parent / s["study"]
        print(f"adapt: [{i}/{len(studies)}] {s['study']}", file=sys.stderr)
        result, images = engine_inputs(args.nephra, args.model, folder, out / "inputs" / f"{i:04d}")
        numbers = [sl["slice"] for sl in result["slices"]]
        x = np.stack([images[n] for n in numbers])
        with torch.no_grad():
            logits, feats = forward_all(net, to_input(x))
        probs = softmax(logits.numpy(), base["temperature"])
        for row, sl in zip(probs, result["slices"]):
            if "probabilities" in sl:
                parity = max(parity, max(abs(row[c] - sl["probabilities"][name]) for c, name in enumerate(CLASSES)))
        labels = slice_labels(s, result)
        data.append({"study": s, "result": result, "feats": feats.numpy(), "logits": logits.numpy(),
                     "y": np.array([labels[n] for n in numbers]),
                     "assessed": np.array([not sl["not_assessed"] for sl in result["slices"]])})
    if parity > PARITY_TOLERANCE:
        raise SystemExit(f"adapt: torch on the engine's inputs differs from the engine by {parity:.4g} "
                         f"(> {PARITY_TOLERANCE}): the training would not see what the node sees")
    print(f"adapt: parity with the engine: max |p_torch - p_engine| = {parity:.2e}", file=sys.stderr)

    w0 = net.classifier[1].weight.detach().numpy()
    b0 = net.classifier[1].bias.detach().numpy()
    folds = max(2, min(args.folds, len(data)))
    fold_of = [i % folds for i in range(len(data))]  # studies dealt round-robin in labels order
    oof = [None] * len(data)
    for k in range(folds):
        train = [d for d, f in zip(data, fold_of) if f != k]
        feats = np.concatenate([d["feats"][d["y"] >= 0] for d in train])
        y = np.concatenate([d["y"][d["y"] >= 0] for d in train])
        w, b = (w0, b0) if len(y) == 0 else fit_head(feats, y, w0, b0, args.pull)
        for i, (d, f) in enumerate(zip(data, fold_of)):
            if f == k:
                oof[i] = d["feats"] @ w.T + b
    labelled = [(o[d["y"] >= 0], d["y"][d["y"] >= 0]) for o, d in zip(oof, data)]

    def temperature_from(studies):
        """T fitted on the out-of-fold logits of these studies' labelled slices (the shipped T without two classes)."""
        y = np.concatenate([labelled[i][1] for i in studies]) if studies else np.array([], int)
        if len(np.unique(y)) < 2:
            return base["temperature"]
        return fit_temperature(np.concatenate([labelled[i][0] for i in studies]), y)

    # Each fold's studies are judged at a temperature fitted on the other folds only; the model ships the pooled one.
    fold_temperature = [temperature_from([i for i, f in enumerate(fold_of) if f != k]) for k in range(folds)]
    temperature = temperature_from(list(range(len(data))))
    oof_y = np.concatenate([b for _, b in labelled])

    shipped_calls = [{f["class"]: f["present"] for f in d["result"]["findings"]} for d in data]
    adapted_calls = [study_calls(softmax(o, fold_temperature[f]), d["assessed"], rule)
                     for o, d, f in zip(oof, data, fold_of)]
    truth = [d["study"] for d in data]
    metrics = {"studies": len(data), "labelled_slices": int(len(oof_y)), "folds": folds,
               "parity_max_probability_diff": parity,
               "shipped": study_metrics(shipped_calls, truth), "adapted_cross_validated": study_metrics(adapted_calls, truth)}

    # The adapted model: the head fitted on every study, in a new graph and manifest.
    feats = np.concatenate([d["feats"][d["y"] >= 0] for d in data])
    y = np.concatenate([d["y"][d["y"] >= 0] for d in data])
    w, b = (w0, b0) if len(y) == 0 else fit_head(feats, y, w0, b0, args.pull)
    sd = copy.deepcopy(net.state_dict())
    sd["classifier.1.weight"] = torch.tensor(w)
    sd["classifier.1.bias"] = torch.tensor(b)
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    stem = f"nephra-kidney-{args.name}"
    torch.save(sd, model_dir / f"{stem}.pt")
    from export_onnx import compare, export
    deployed = export(model_dir / f"{stem}.pt", model_dir / f"{stem}.onnx", base["input"]["width"])
    sample = np.stack([cv2.imread(str(q), cv2.IMREAD_GRAYSCALE) for q in sorted((out / "inputs").glob("*/*.png"))[:8]])
    onnx_parity = max(v["max_logit_diff"] for v in compare(deployed, model_dir / f"{stem}.onnx", sample).values())
    man = copy.deepcopy(base)
    man["version"] = f"{base['version']}+{args.name}"
    man["onnx"] = f"{stem}.onnx"
    man["onnx_sha256"] = hashlib.sha256((model_dir / f"{stem}.onnx").read_bytes()).hexdigest()
    man["head"] = {"weight": [[round(float(v), 7) for v in row] for row in w], "bias": [round(float(v), 7) for v in b]}
    man["temperature"] = round(float(temperature), 6)
    man["adaptation"] = {"base_model": f"{base['name']} {base['version']}", "base_onnx_sha256": base["onnx_sha256"],
                         "site": args.name, "labels_sha256": hashlib.sha256(args.labels.read_bytes()).hexdigest(),
                         "method": "head refitted on the engine's own inputs (backbone, OOD model and study rule "
                                   "unchanged); temperature fitted on cross-validated logits (training/adapt.py)",
                         "opencv_parity_max_logit_diff": onnx_parity}
    man.setdefault("metrics", {})["site_cross_validation"] = metrics
    (model_dir / "nephra-kidney.json").write_text(json.dumps(man, indent=1) + "\n")
    (out / "adapt.json").write_text(json.dumps(metrics, indent=1) + "\n")

    lines = [f"# Model card: {man['name']} {man['version']} (adapted to {args.name})", "",
             f"Adapted from {base['name']} {base['version']} on {len(data)} of the site's labelled studies "
             f"({len(oof_y)} labelled slices) by `training/adapt.py`: the head refitted, the backbone, the "
             "out-of-distribution model and the study rule unchanged. **Research prototype; not for diagnosis.**", "",
             f"Study level on the site's studies, {folds}-fold study-grouped cross-validation for the adapted model "
             "(each study judged by a head and a temperature fitted without it), the shipped model as it is. 95 % intervals: bootstrap "
             "over studies.", "",
             "| finding | shipped: sensitivity | shipped: false finding on normal | adapted: sensitivity | "
             "adapted: false finding on normal |", "|---|---|---|---|---|"]
    for f in FINDINGS:
        s, a = metrics["shipped"], metrics["adapted_cross_validated"]
        lines.append(f"| {f} | {fmt(s['sensitivity'][f])} | {fmt(s['false_finding_rate_normal'][f])} | "
                     f"{fmt(a['sensitivity'][f])} | {fmt(a['false_finding_rate_normal'][f])} |")
    lines += [f"| any finding | | {fmt(metrics['shipped']['false_finding_rate_normal']['any'])} | | "
              f"{fmt(metrics['adapted_cross_validated']['false_finding_rate_normal']['any'])} |", "",
              f"Temperature {temperature:.4f} (shipped {base['temperature']}). Engine parity of the training inputs: "
              f"{parity:.1e}; OpenCV against torch on the new graph: {onnx_parity:.1e} (logits).", "",
              "Use it: set `engine.model` to this folder's `nephra-kidney.json` and restart the node; its results "
              "carry new UIDs (the graph's sha256 differs), so they never replace the shipped model's in the archive. "
              "Check it first with `nephra validate --model` on studies it was not adapted on.", ""]
    (model_dir / "MODEL_CARD.md").write_text("\n".join(lines))
    print("\n".join(lines[4:4 + 2 + len(FINDINGS) + 2]))
    print(f"adapt: wrote {model_dir}")


if __name__ == "__main__":
    main()
