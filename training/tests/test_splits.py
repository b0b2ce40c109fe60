"""The committed splits are leak-free: no pseudo-study group crosses train/val/test or folds."""
import csv
import sys
import unittest
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from paths import DATASET, SPLITS, dataset_present  # noqa: E402


def read_list(name):
    return [line for line in (SPLITS / f"{name}.txt").read_text().splitlines() if line]


class CommittedSplits(unittest.TestCase):
    def setUp(self):
        if not dataset_present():
            self.skipTest(f"{DATASET} is absent: the group table is needed to check the split")
        with open(DATASET / "STUDY_GROUPS.csv", newline="") as f:
            self.group = {r["relpath"]: (r["class"], r["study_group"]) for r in csv.DictReader(f)}

    def test_every_image_in_exactly_one_split(self):
        seen = defaultdict(list)
        for name in ("train", "val", "test"):
            for rel in read_list(name):
                seen[rel].append(name)
        self.assertEqual(set(seen), set(self.group))
        self.assertTrue(all(len(v) == 1 for v in seen.values()))

    def test_no_group_crosses_splits(self):
        where = defaultdict(set)
        for name in ("train", "val", "test"):
            for rel in read_list(name):
                where[self.group[rel]].add(name)
        crossing = [g for g, names in where.items() if len(names) > 1]
        self.assertEqual(crossing, [])

    def test_proportions_near_70_15_15_for_every_class(self):
        for cls in ("Normal", "Cyst", "Stone", "Tumor"):
            counts = {n: sum(r.startswith(cls + "/") for r in read_list(n)) for n in ("train", "val", "test")}
            total = sum(counts.values())
            self.assertGreater(counts["train"] / total, 0.55, (cls, counts))
            self.assertGreater(counts["val"] / total, 0.07, (cls, counts))
            self.assertGreater(counts["test"] / total, 0.07, (cls, counts))

    def test_folds_are_grouped(self):
        folds = defaultdict(set)
        with open(SPLITS / "folds.csv", newline="") as f:
            for row in csv.DictReader(f):
                folds[self.group[row["relpath"]]].add(row["fold"])
        self.assertEqual(len(folds), 218)
        self.assertTrue(all(len(v) == 1 for v in folds.values()))


if __name__ == "__main__":
    unittest.main()
