#!/usr/bin/python3
"""Recipes side by side on the grouped folds all of them have scored (out of fold, real slices only), while a recipe
under trial is still short of five folds: slice-level macro-F1 and recall at the argmax, and per study the decisions
of the shipped recipe's nested rule for that fold (study_rule.json per_fold_choice: temperature and rule chosen on
the shipped recipe's other folds). One fixed yardstick for every recipe; a recipe gets its own nested rule once its
five folds are in (study_rule.py --oof).
    /usr/bin/python3 training/compare_recipes.py [oof oof-v2 oof-candidate oof-counterfactual ...]
    /usr/bin/python3 training/compare_recipes.py oof-v2 crossfit/fold2.csv.gz   # networks trained on 4 folds against 3
"""
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import f1_score

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from paths import CLASSES  # noqa: E402
from study_rule import FINDINGS, Studies, decide, load, read_rows  # noqa: E402

RESULTS = HERE / "results"


def folds_of(name):
    if (RESULTS / name).is_file():  # one CSV of several folds (crossfit.py)
        return {int(r["fold"]) for r in read_rows(RESULTS / name)}
    return {int(p.name[4:-7]) for p in (RESULTS / name).glob("fold*.csv.gz")}


def main():
    names = sys.argv[1:] or ["oof"] + sorted(p.name for p in RESULTS.glob("oof-*") if p.is_dir())
    common = sorted(set.intersection(*(folds_of(n) for n in names)))
    if not common:
        raise SystemExit(f"no fold scored by all of {names}")
    choice = json.loads((RESULTS / "study_rule.json").read_text())["per_fold_choice"]
    print(f"folds scored by all of {', '.join(names)}: {common}")
    for name in names:
        study, fold, logits, y = load(RESULTS / name, common)
        st = Studies(study, fold, logits, y)
        present = {c: np.zeros(len(st.ids), bool) for c in FINDINGS}
        for k in common:
            rule = choice[str(k)]
            decided = decide(st, rule["temperature"], rule["rule"])
            for c in FINDINGS:
                present[c][st.sfold == k] = decided[c][st.sfold == k]
        pred = logits.argmax(1)
        recall = " ".join(f"{c} {np.mean(pred[y == i] == i):.3f}" for i, c in enumerate(CLASSES))
        sens = " ".join(f"{c} {int(present[c][st.cls == CLASSES.index(c)].sum())}/"
                        f"{int((st.cls == CLASSES.index(c)).sum())}" for c in FINDINGS)
        normal = st.cls == 0
        ffr = int(np.any([present[c] for c in FINDINGS], axis=0)[normal].sum())
        print(f"{name:20s} slice macro-F1 {f1_score(y, pred, average='macro'):.3f} | recall {recall} | "
              f"studies found {sens} | any finding on Normal {ffr}/{int(normal.sum())}")


if __name__ == "__main__":
    main()
