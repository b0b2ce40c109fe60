#!/usr/bin/python3
"""Leak-free splits of the CT KIDNEY dataset: whole pseudo-study groups only, stratified by class.

Writes training/splits/{train,val,test}.txt (a ~70/15/15 grouped split for the shipped model),
folds.csv (grouped, class-stratified 5-fold cross-validation) and summary.json (counts and sha256 of each list).
Deterministic: the same STUDY_GROUPS.csv and seed give byte-identical files.
    /usr/bin/python3 training/splits.py [--seed 0]
"""
import argparse
import csv
import hashlib
import json
import random
from collections import defaultdict

from paths import CLASSES, DATASET, SPLITS

FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}
N_FOLDS = 5


def load_groups():
    """{class: {group id: [relpath, ...]}} from STUDY_GROUPS.csv."""
    groups = defaultdict(lambda: defaultdict(list))
    with open(DATASET / "STUDY_GROUPS.csv", newline="") as f:
        for row in csv.DictReader(f):
            groups[row["class"]][row["study_group"]].append(row["relpath"])
    return groups


def fixed_split(groups, seed):
    """Per class, shuffled groups fill val and test to their share of images; the rest is train."""
    rng = random.Random(seed)
    split = {name: [] for name in FRACTIONS}
    for cls in CLASSES:
        ids = sorted(groups[cls])
        rng.shuffle(ids)
        total = sum(len(groups[cls][g]) for g in ids)
        filled = {"val": 0, "test": 0}
        for g in ids:
            size = len(groups[cls][g])
            target = next((s for s in ("test", "val") if filled[s] + size / 2 <= FRACTIONS[s] * total), "train")
            if target != "train":
                filled[target] += size
            split[target].extend(groups[cls][g])
    return {name: sorted(files) for name, files in split.items()}


def folds(groups, seed):
    """Per class, largest groups first, each into the fold holding the fewest images of that class."""
    rng = random.Random(seed)
    assignment = {}
    for cls in CLASSES:
        ids = sorted(groups[cls], key=lambda g: (-len(groups[cls][g]), rng.random()))
        load = [0] * N_FOLDS
        for g in ids:
            fold = min(range(N_FOLDS), key=lambda k: (load[k], k))
            load[fold] += len(groups[cls][g])
            for rel in groups[cls][g]:
                assignment[rel] = fold
    return dict(sorted(assignment.items()))


def sha256_lines(lines):
    return hashlib.sha256(("\n".join(lines) + "\n").encode()).hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    groups = load_groups()
    SPLITS.mkdir(parents=True, exist_ok=True)
    split = fixed_split(groups, args.seed)
    summary = {"seed": args.seed, "source": "STUDY_GROUPS.csv", "splits": {}, "folds": {}}
    for name, files in split.items():
        (SPLITS / f"{name}.txt").write_text("\n".join(files) + "\n")
        per_class = {c: sum(f.startswith(c + "/") for f in files) for c in CLASSES}
        summary["splits"][name] = {"images": len(files), "per_class": per_class, "sha256": sha256_lines(files)}
    assignment = folds(groups, args.seed)
    with open(SPLITS / "folds.csv", "w", newline="") as f:
        f.write("relpath,fold\n")
        for rel, fold in assignment.items():
            f.write(f"{rel},{fold}\n")
    for k in range(N_FOLDS):
        files = [r for r, fold in assignment.items() if fold == k]
        summary["folds"][str(k)] = {c: sum(f.startswith(c + "/") for f in files) for c in CLASSES}
    (SPLITS / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary["splits"], indent=2))


if __name__ == "__main__":
    main()
