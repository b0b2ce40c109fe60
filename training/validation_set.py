"""Lays out pseudo-studies of the dataset as `nephra validate` reads a site's studies: one folder per study (its
slices as symlinks, numbered in their order along the patient axis) and labels.csv. Nothing is copied.

    /usr/bin/python3 training/validation_set.py --split test --out /tmp/nephra-validation
    ./build/release/app/nephra validate --labels /tmp/nephra-validation/labels.csv --out /tmp/nephra-report
"""
import argparse
import csv
import os
import re
from collections import defaultdict
from pathlib import Path

from data import group_of, read_list
from paths import CLASSES, DATASET

FINDINGS = [c for c in CLASSES if c != "Normal"]


def running_number(relpath):
    m = re.search(r"\((\d+)\)", relpath)
    return int(m.group(1)) if m else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="test", help="train, val or test (training/splits/<split>.txt)")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--slices", action="store_true",
                    help="also write the slices column: every slice of a study carries its class in this dataset")
    args = ap.parse_args()

    studies = defaultdict(list)
    for relpath in read_list(args.split):
        cls, group = group_of(relpath)
        studies[f"{cls}-{int(group):03d}"].append(relpath)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        f.write(f"# pseudo-studies of the {args.split} split of the CT KIDNEY dataset (training/validation_set.py)\n")
        w.writerow(["study"] + FINDINGS + (["slices"] if args.slices else []))
        for study in sorted(studies):
            folder = args.out / study
            folder.mkdir(exist_ok=True)
            for i, relpath in enumerate(sorted(studies[study], key=running_number), start=1):
                link = folder / f"{i:04d}{Path(relpath).suffix}"
                if link.is_symlink() or link.exists():
                    link.unlink()
                os.symlink((DATASET / relpath).resolve(), link)
            cls = study.split("-")[0]
            where = [f"{cls}:1-{len(studies[study])}"] if args.slices and cls != "Normal" else [""] if args.slices else []
            w.writerow([study] + [int(cls == c) for c in FINDINGS] + where)
    print(f"{len(studies)} studies, {sum(map(len, studies.values()))} slices in {args.out}")


if __name__ == "__main__":
    main()
