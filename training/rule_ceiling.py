#!/usr/bin/python3
"""How far any run rule could go on a recipe's out-of-fold probabilities: an upper bound, not a result.

For each finding, the (threshold, run) of study_rule.py's grid with the highest study sensitivity whose false
findings on Normal studies stay at or under --max-normal, chosen on the very studies it scores (no nesting, so
optimistic by construction). If even this misses a target, no choice of thresholds and run lengths reaches it on
that network: only a better network does.
    /usr/bin/python3 training/rule_ceiling.py [--oof training/results/oof[+training/results/oof-longer]]
"""
import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from calibrate_ood import fit_temperature  # noqa: E402
from paths import CLASSES, REPO  # noqa: E402
from study_rule import FINDINGS, OOF, Studies, choose, decide, load  # noqa: E402


def ceiling(studies, runs, temperature, finding, max_normal, min_threshold, min_run):
    """(studies found, threshold, run): study_rule.choose on all studies at once, applied to the same studies."""
    normal = int((studies.cls == 0).sum())
    rule = choose(runs, studies.cls, np.ones(len(studies.cls), bool), (max_normal + 0.5) / normal, min_threshold,
                  min_run)
    found = decide(studies, temperature, rule)[finding][studies.cls == CLASSES.index(finding)]
    return int(found.sum()), rule[finding]["threshold"], rule[finding]["min_run_slices"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--oof", default=str(OOF))
    p.add_argument("--max-normal", type=int, default=2, help="false findings allowed on Normal studies, per finding")
    args = p.parse_args()
    studies = Studies(*load(args.oof))
    temperature = fit_temperature(studies.logits, studies.y)
    runs = studies.runs(temperature)
    name = "+".join(str(Path(part).resolve().relative_to(REPO)) for part in args.oof.split("+"))
    print(f"{name}: {len(studies.ids)} studies, T = {temperature:.3f}, <= {args.max_normal} of "
          f"{int((studies.cls == 0).sum())} Normal studies called per finding")
    for finding in FINDINGS:
        n = int((studies.cls == CLASSES.index(finding)).sum())
        free = ceiling(studies, runs, temperature, finding, args.max_normal, 0.0, 1)
        floors = ceiling(studies, runs, temperature, finding, args.max_normal, 0.5, 3)
        print(f"  {finding:5s} any rule: {free[0]}/{n} = {free[0] / n:.2f} (p >= {free[1]}, {free[2]} slices); "
              f"with the shipped floors (p >= 0.5, >= 3 slices): {floors[0]}/{n} = {floors[0] / n:.2f}")


if __name__ == "__main__":
    main()
