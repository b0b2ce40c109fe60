#!/usr/bin/python3
"""Which studies the study-level layer misses, out of fold, and what the network said on their slices.

Each fold's studies are decided as study_rule.py decides them (temperature and rule chosen on the other folds only).
For every Cyst, Stone and Tumor study it misses: its slice count and whether that is shorter than the run the rule
needs (a pseudo-study of the dataset can hold one slice; no run rule can find it, while a real CT series holds dozens
of kidney slices), the class the network gives most of its slices, the finding's highest calibrated probability and
its longest run at the threshold, and the study's protocol tags (results/study_views.csv). What the slices show to
the eye is written beside it in results/README.md (*Missed studies*).
    /usr/bin/python3 training/missed_studies.py [--oof training/results/oof] [--out training/results]
"""
import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_ood import softmax  # noqa: E402
from paths import CLASSES  # noqa: E402
from study_rule import FINDINGS, OOF, Studies, load, longest_run, nested_decisions  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--oof", default=str(OOF))
    p.add_argument("--out", default=str(HERE / "results"), help="where missed_studies.json goes")
    p.add_argument("--max-ffr", type=float, default=0.02)
    p.add_argument("--min-threshold", type=float, default=0.5)
    p.add_argument("--min-run", type=int, default=3)
    args = p.parse_args()
    st = Studies(*load(args.oof))
    present, t_by_slice, per_fold = nested_decisions(st, args.max_ffr, args.min_threshold, args.min_run)
    views = {r["study"]: r for r in csv.DictReader(open(HERE / "results" / "study_views.csv"))}
    res = {"oof": str(Path(args.oof).name), "protocol": "nested as in study_rule.py", "findings": {}}
    for c in FINDINGS:
        ci = CLASSES.index(c)
        of_class = np.flatnonzero(st.cls == ci)
        missed, short = [], 0
        for i in of_class:
            idx = st.slices[i]
            rule = per_fold[int(st.sfold[i])]["rule"][c]
            too_short = len(idx) < rule["min_run_slices"]
            short += too_short
            if present[c][i]:
                continue
            prob = softmax(st.logits[idx], t_by_slice[idx[0]])  # a study lies in one fold: one temperature
            called = Counter(CLASSES[k] for k in prob.argmax(1))
            tags = views.get(st.ids[i], {})
            missed.append({"study": st.ids[i], "fold": int(st.sfold[i]), "slices": int(len(idx)),
                           "rule": rule, "shorter_than_run": bool(too_short),
                           "slices_called": dict(called.most_common()),
                           "max_p": round(float(prob[:, ci].max()), 3),
                           "longest_run_at_threshold": longest_run(prob[:, ci] >= rule["threshold"]),
                           "view": tags.get("view"), "enhanced_kidneys": tags.get("enhanced_kidneys") or None})
        missed.sort(key=lambda m: (m["shorter_than_run"], -sum(v for k, v in m["slices_called"].items() if k != c)))
        res["findings"][c] = {"studies": int(len(of_class)), "found": int(present[c][of_class].sum()),
                              "shorter_than_run": int(short), "missed": missed}
        print(f"{c}: found {res['findings'][c]['found']}/{len(of_class)}; {short} studies shorter than the run "
              f"their fold's rule needs")
        for m in missed:
            short_note = " (too short)" if m["shorter_than_run"] else ""
            print(f"  {m['study']:<10} fold {m['fold']} {m['slices']:>4} slices{short_note}"
                  f"  max p {m['max_p']:.2f}  run {m['longest_run_at_threshold']}/{m['rule']['min_run_slices']}"
                  f"  called {m['slices_called']}  {m['view']}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "missed_studies.json").write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
