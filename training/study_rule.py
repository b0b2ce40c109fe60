#!/usr/bin/python3
"""The study-level decision layer, chosen and measured on out-of-fold predictions with studies as the unit.

A finding (Cyst, Stone, Tumor) is present in a study when at least k adjacent slices (ordered along the patient
axis: the dataset's running numbers) have a calibrated probability >= t. The temperature and each finding's (t, k)
are chosen by nested selection over the grouped folds: for every fold, on the other folds' out-of-fold predictions
only (temperature by NLL; then the (t, k) with the highest study sensitivity whose false-finding rate on Normal
studies is <= --max-ffr), and scored on that fold's studies. The pooled held-out decisions give the figures; the
operating point that ships is chosen the same way on all folds. Reads training/results/oof/fold*.csv.gz (oof.py).
    /usr/bin/python3 training/study_rule.py [--manifest models/nephra-kidney.json] [--write-manifest]
Writes training/results/study_rule.json and training/results/study_roc.png.
"""
import argparse
import csv
import gzip
import json
import re
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_ood import ece, fit_temperature, softmax  # noqa: E402
from paths import CLASSES, REPO  # noqa: E402

OOF = HERE / "results" / "oof"
FINDINGS = [c for c in CLASSES if c != "Normal"]
THRESHOLDS = np.round(np.arange(0.05, 0.991, 0.01), 3)
RUNS = (1, 2, 3, 4, 6, 8)
BOOTSTRAP = 2000


def running_number(relpath):
    m = re.search(r"\((\d+)\)", relpath)
    return int(m.group(1)) if m else 0


def read_rows(oof, folds=None):
    """The rows of every available fold of one folder (or of `folds` only), each study's slices in order. `oof` may
    also name one CSV that holds several folds (crossfit.py's), read by its fold column."""
    rows = []
    if Path(oof).is_file():
        with gzip.open(oof, "rt", newline="") as f:
            rows = [r for r in csv.DictReader(f) if folds is None or int(r["fold"]) in folds]
    for path in sorted(Path(oof).glob("fold*.csv.gz")):
        if folds is not None and int(path.name[4:-7]) not in folds:
            continue
        with gzip.open(path, "rt", newline="") as f:
            rows += list(csv.DictReader(f))
    if not rows:
        raise SystemExit(f"no out-of-fold predictions in {oof}: run training/oof.py first")
    rows.sort(key=lambda r: (r["study"], running_number(r["relpath"])))
    return rows


def load(oof=OOF, folds=None):
    """Slices of every available fold (or of `folds` only): (study ids, study class, fold, logits) with each study's
    slices in order. `oof` may name several folders joined by "+" (oof+oof-longer): their logits are averaged, slice
    by slice, as an ensemble of those recipes' networks would give."""
    tables = [read_rows(part, folds) for part in str(oof).split("+")]
    rows = tables[0]
    for other in tables[1:]:
        if [r["relpath"] for r in other] != [r["relpath"] for r in rows]:
            raise SystemExit(f"{oof}: the folders do not hold the same slices")
    logits = np.mean([[[float(r[f"logit_{c}"]) for c in CLASSES] for r in t] for t in tables], axis=0)
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    study = np.array([r["study"] for r in rows])
    fold = np.array([int(r["fold"]) for r in rows])
    return study, fold, logits, y


def longest_runs(p_c, study_slices):
    """Per study, for each threshold: the longest run of adjacent slices with p >= t ([studies, thresholds])."""
    out = np.zeros((len(study_slices), len(THRESHOLDS)), int)
    for i, idx in enumerate(study_slices):
        flags = p_c[idx][:, None] >= THRESHOLDS[None, :]  # [slices, thresholds]
        run = np.zeros(len(THRESHOLDS), int)
        for row in flags:
            run = np.where(row, run + 1, 0)
            out[i] = np.maximum(out[i], run)
    return out


class Studies:
    def __init__(self, study, fold, logits, y):
        self.logits, self.y, self.fold = logits, y, fold
        order = {}
        for i, s in enumerate(study):
            order.setdefault(s, []).append(i)
        self.ids = list(order)
        self.slices = [np.array(order[s]) for s in self.ids]
        self.cls = np.array([y[idx[0]] for idx in self.slices])
        self.sfold = np.array([fold[idx[0]] for idx in self.slices])

    def runs(self, temperature):
        """{finding: [studies, thresholds] longest run} at this temperature."""
        p = softmax(self.logits, temperature)
        return {c: longest_runs(p[:, CLASSES.index(c)], self.slices) for c in FINDINGS}


def choose(runs, cls, mask, max_ffr, min_threshold=0.0, min_run=1):
    """Per finding: the (t, k) with t >= min_threshold, k >= min_run and the highest sensitivity on the masked
    studies whose Normal-study false-finding rate is <= max_ffr; ties go to the lower false-finding rate, then the
    higher threshold, then the shorter run."""
    normal = mask & (cls == 0)
    out = {}
    for c in FINDINGS:
        pos = mask & (cls == CLASSES.index(c))
        best = None
        for k in (r for r in RUNS if r >= min_run):
            present = runs[c] >= k  # [studies, thresholds]
            sens = present[pos].mean(0)
            ffr = present[normal].mean(0)
            for j, t in enumerate(THRESHOLDS):
                if ffr[j] > max_ffr or t < min_threshold - 1e-9:
                    continue
                key = (sens[j], -ffr[j], t, -k)
                if best is None or key > best[0]:
                    best = (key, float(t), k)
        out[c] = {"threshold": best[1], "min_run_slices": best[2]} if best else {"threshold": 1.0,
                                                                                 "min_run_slices": max(RUNS)}
    return out


def longest_run(flags):
    best = run = 0
    for f in flags:
        run = run + 1 if f else 0
        best = max(best, run)
    return best


def decide(studies, temperature, rule):
    """{finding: bool[studies]}: the rule applied at this temperature (any threshold, not only the grid's)."""
    p = softmax(studies.logits, temperature)
    return {c: np.array([longest_run(p[idx, CLASSES.index(c)] >= rule[c]["threshold"]) >= rule[c]["min_run_slices"]
                         for idx in studies.slices]) for c in FINDINGS}


def nested_decisions(st, max_ffr, min_threshold, min_run):
    """Every fold's studies decided by the temperature and rule chosen on the other folds only: ({finding:
    bool[studies]}, the temperature of every slice, {fold: its temperature and rule})."""
    present = {c: np.zeros(len(st.ids), bool) for c in FINDINGS}
    t_by_slice = np.ones(len(st.y))
    per_fold = {}
    for f in sorted(set(st.fold.tolist())):
        inner = st.fold != f
        if not inner.any():
            raise SystemExit("nested selection needs at least two folds")
        temperature = fit_temperature(st.logits[inner], st.y[inner])
        t_by_slice[~inner] = temperature
        rule = choose(st.runs(temperature), st.cls, st.sfold != f, max_ffr, min_threshold, min_run)
        held = st.sfold == f
        for c, flags in decide(st, temperature, rule).items():
            present[c][held] = flags[held]
        per_fold[f] = {"temperature": round(temperature, 4), "rule": rule}
    return present, t_by_slice, per_fold


def rate_ci(flags, rng):
    flags = np.asarray(flags, float)
    if len(flags) == 0:
        return None
    boots = rng.choice(flags, (BOOTSTRAP, len(flags))).mean(1)
    return {"rate": round(float(flags.mean()), 4), "n": int(len(flags)), "hits": int(flags.sum()),
            "ci95": [round(float(q), 4) for q in np.percentile(boots, [2.5, 97.5])]}


def study_metrics(present, cls, rng):
    """Sensitivity per finding, false-finding rate on Normal studies (any, and per finding), wrong findings on
    studies of another finding."""
    normal = cls == 0
    any_finding = np.any([present[c] for c in FINDINGS], axis=0)
    res = {"sensitivity": {}, "false_finding_rate_normal": {}, "other_finding_rate": {}}
    for c in FINDINGS:
        ci = CLASSES.index(c)
        res["sensitivity"][c] = rate_ci(present[c][cls == ci], rng)
        res["false_finding_rate_normal"][c] = rate_ci(present[c][normal], rng)
        res["other_finding_rate"][c] = rate_ci(present[c][(cls != ci) & ~normal], rng)
    res["false_finding_rate_normal"]["any"] = rate_ci(any_finding[normal], rng)
    return res


def slice_metrics(logits, y, temperature_by_slice):
    from train import scores
    import torch
    m = scores(torch.tensor(logits, dtype=torch.float32), y)
    p_raw = softmax(logits)
    p_cal = np.stack([softmax(logits[i:i + 1], temperature_by_slice[i])[0] for i in range(len(logits))])
    return {"macro_f1": round(m["macro_f1"], 4), "accuracy": round(m["acc"], 4),
            "recall": {c: round(r, 4) for c, r in zip(CLASSES, m["recall"])},
            "ece_uncalibrated": round(ece(p_raw, y), 4), "ece_nested_temperature": round(ece(p_cal, y), 4)}


def roc_figure(studies, runs, rule, temperature, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(FINDINGS), figsize=(4 * len(FINDINGS), 4))
    normal = studies.cls == 0
    for ax, c in zip(axes, FINDINGS):
        pos = studies.cls == CLASSES.index(c)
        k = rule[c]["min_run_slices"]
        present = runs[c] >= k
        ax.plot(present[normal].mean(0), present[pos].mean(0), "-", lw=1.5, label=f"run >= {k} slices, t varies")
        op = decide(studies, temperature, rule)[c]
        ax.plot(op[normal].mean(), op[pos].mean(), "o", color="C3",
                label=f"operating point: t = {rule[c]['threshold']:.2f}, k = {k}")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(f"false-finding rate on Normal studies (n={int(normal.sum())})")
        ax.set_ylabel(f"study sensitivity (n={int(pos.sum())})")
        ax.set_title(f"{c}: study level, out of fold")
        ax.legend(loc="lower right", fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Nephra study-level ROC on out-of-fold predictions (T = {temperature:.3f}; "
                 "the point: the rule chosen on all folds pooled, as the manifest ships it)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-ffr", type=float, default=0.02,
                   help="largest false-finding rate on Normal studies a finding's operating point may have")
    p.add_argument("--min-threshold", type=float, default=0.5,
                   help="lowest calibrated probability a finding's threshold may have: a finding is reported only "
                        "on slices where the model finds it more likely than not, so that a drift of the "
                        "probabilities on another hospital's CT (a baseline of 0.1-0.4) does not become a finding")
    p.add_argument("--min-run", type=int, default=3,
                   help="shortest run of adjacent slices a finding may need: a finding must be seen on a few adjacent "
                        "slices; short spikes (one or two slices) are what other hospitals' CT shows most")
    p.add_argument("--manifest", default=str(REPO / "models" / "nephra-kidney.json"),
                   help="the shipped manifest (--write-manifest writes into it)")
    p.add_argument("--previous", help="the manifest whose rule is measured on the same studies for comparison "
                                      "(default: --manifest; name the shipped one when --manifest is a new run's)")
    p.add_argument("--oof", default=str(OOF),
                   help="folder of oof.py's fold*.csv.gz; A+B averages the logits of two folders (an ensemble)")
    p.add_argument("--out", default=str(HERE / "results"), help="where study_rule.json and study_roc.png go")
    p.add_argument("--write-manifest", action="store_true",
                   help="put the chosen temperature and rule into --manifest (only with all five folds)")
    p.add_argument("--version", help="with --write-manifest: the manifest's new version")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    study, fold, logits, y = load(args.oof)
    st = Studies(study, fold, logits, y)
    folds = sorted(set(fold.tolist()))

    nested_present, t_by_slice, per_fold = nested_decisions(st, args.max_ffr, args.min_threshold, args.min_run)

    # what ships: the same choice on every fold
    temperature = fit_temperature(logits, y)
    runs = st.runs(temperature)
    rule = choose(runs, st.cls, np.ones(len(st.ids), bool), args.max_ffr, args.min_threshold, args.min_run)
    recipe = "the shipped recipe" if Path(args.oof).resolve() == OOF.resolve() else Path(args.oof).name
    res = {"protocol": "out-of-fold logits of " + recipe + " (training/oof.py), grouped folds " + str(folds)
                       + "; temperature and per-finding (threshold, run length) chosen on the other folds only "
                         "(threshold >= " + str(args.min_threshold) + ", run >= " + str(args.min_run)
                       + " slices, highest study sensitivity with false-finding rate on Normal studies <= "
                       + str(args.max_ffr) + "), scored on the held-out fold's studies; 95% intervals: bootstrap "
                         "over studies. OOD abstention is not applied (dataset slices are in distribution).",
           "folds": folds, "complete": folds == [0, 1, 2, 3, 4], "studies": len(st.ids), "slices": int(len(y)),
           "studies_per_class": {c: int((st.cls == i).sum()) for i, c in enumerate(CLASSES)},
           "nested": study_metrics(nested_present, st.cls, rng),
           "slice_level": slice_metrics(logits, y, t_by_slice),
           "per_fold_choice": per_fold,
           "shipped_rule": {"temperature": round(temperature, 6), "rule": rule, "max_ffr": args.max_ffr,
                            "min_threshold": args.min_threshold, "min_run": args.min_run}}
    previous = Path(args.previous or args.manifest)
    if previous.exists():
        man = json.loads(previous.read_text())
        old_rule = {c: {"threshold": man["decision_thresholds"][c],
                        "min_run_slices": (man["study_rule"]["min_run_slices"][c]
                                           if isinstance(man["study_rule"]["min_run_slices"], dict)
                                           else man["study_rule"]["min_run_slices"])} for c in FINDINGS}
        res["previous_rule_on_the_same_studies"] = {
            "version": man["version"], "temperature": man["temperature"], "rule": old_rule,
            "metrics": study_metrics(decide(st, man["temperature"], old_rule), st.cls, rng)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "study_rule.json").write_text(json.dumps(res, indent=1) + "\n")
    roc_figure(st, runs, rule, temperature, out / "study_roc.png")
    print(json.dumps({k: res[k] for k in ("folds", "studies", "shipped_rule")}, indent=1))
    print(json.dumps(res["nested"], indent=1))
    if args.write_manifest:
        if not res["complete"]:
            raise SystemExit("--write-manifest needs all five folds")
        man_path = Path(args.manifest)
        man = json.loads(man_path.read_text())
        if args.version:
            man["version"] = args.version
        man["temperature"] = round(temperature, 6)
        man["decision_thresholds"] = {c: rule[c]["threshold"] for c in FINDINGS}
        man["decision_rule"] = ("per finding c: a slice is flagged when its calibrated p(c) >= threshold_c; "
                                "threshold_c and the run length are chosen per study (training/study_rule.py): the "
                                "highest study sensitivity whose false-finding rate on Normal studies is <= "
                                + str(args.max_ffr) + " with threshold_c >= " + str(args.min_threshold)
                                + ", on out-of-fold predictions of all grouped folds")
        nested = res["nested"]
        man.setdefault("metrics", {})["study_out_of_fold"] = {
            "studies": res["studies"],
            "sensitivity": {c: nested["sensitivity"][c]["rate"] for c in FINDINGS},
            "false_finding_rate_normal": {c: nested["false_finding_rate_normal"][c]["rate"]
                                          for c in list(FINDINGS) + ["any"]},
            "protocol": "nested: each fold's studies scored with a rule chosen on the other folds "
                        "(training/results/study_rule.json)"}
        man["study_rule"] = {"min_run_slices": {c: rule[c]["min_run_slices"] for c in FINDINGS},
                             "rule": "a finding is present in a study when at least min_run_slices[finding] adjacent "
                                     "assessed slices (ordered along the patient axis) reach decision_thresholds["
                                     "finding]; chosen by training/study_rule.py on out-of-fold predictions",
                             "chosen_by": res["protocol"]}
        man_path.write_text(json.dumps(man, indent=1) + "\n")


if __name__ == "__main__":
    main()
