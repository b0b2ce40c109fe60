"""The study-level decision layer (study_rule.py) on a small synthetic out-of-fold set: the rule it picks respects the
false-finding budget on the studies it was chosen on, runs are counted along the patient axis, held-out folds are
never used to choose, and the manifest is only written from all five folds. Needs no data; takes seconds."""
import csv
import gzip
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
import study_rule  # noqa: E402
from paths import CLASSES  # noqa: E402


def write_folds(folder, folds=3, studies=24, seed=0):
    """Studies whose own class is loud on a few adjacent slices; Normal studies have single noisy spikes."""
    rng = np.random.default_rng(seed)
    n = 0
    for f in range(folds):
        rows = []
        for s in range(studies):
            c = s % 4
            length = int(rng.integers(8, 20))
            for i in range(length):
                lo = rng.normal(0, 0.5, 4)
                lo[0] += 2.0
                loud = c if c and 3 <= i < 7 else (1 + s % 3 if not c and i == 5 else 0)
                if loud:  # a lesion slice, or a Normal study's one-slice spike exactly as loud: only runs differ
                    lo = np.array([2.0, 0.0, 0.0, 0.0])
                    lo[loud] = 6.0
                rows.append([f"{CLASSES[c]}/{CLASSES[c]}- ({n}).jpg", f"{CLASSES[c]}/{f}-{s}", f, CLASSES[c]]
                            + [f"{v:.4f}" for v in lo] + ["1.0"])
                n += 1
        with gzip.open(Path(folder) / f"fold{f}.csv.gz", "wt", newline="") as g:
            w = csv.writer(g)
            w.writerow(["relpath", "study", "fold", "label"]
                       + [f"logit_{c}" for c in CLASSES] + ["ood_score"])
            w.writerows(rows)


class StudyRule(unittest.TestCase):
    def test_longest_run_follows_adjacency(self):
        self.assertEqual(study_rule.longest_run([True, False, True, True, True, False, True]), 3)
        self.assertEqual(study_rule.longest_run([]), 0)

    def test_choice_respects_the_budget_and_finds_the_runs(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_folds(tmp)
            st = study_rule.Studies(*study_rule.load(tmp))
            runs = st.runs(1.0)
            everything = np.ones(len(st.ids), bool)
            rule = study_rule.choose(runs, st.cls, everything, 0.0)
            present = study_rule.decide(st, 1.0, rule)
            for c in study_rule.FINDINGS:
                self.assertFalse(present[c][st.cls == 0].any(), c)  # budget 0: no Normal study flagged
                self.assertGreaterEqual(rule[c]["min_run_slices"], 2, c)  # only the run length tells spikes apart
                self.assertGreater(present[c][st.cls == CLASSES.index(c)].mean(), 0.9, c)

    def test_missed_studies_are_the_nested_misses(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_folds(tmp, studies=28, seed=1)
            fold0 = Path(tmp) / "fold0.csv.gz"
            with gzip.open(fold0, "rt", newline="") as g:
                rows = list(csv.reader(g))
            loud_tumor = ["0.0", "0.0", "0.0", "6.0"]
            quiet = ["2.0", "0.0", "0.0", "0.0"]
            rows.append(["Tumor/Tumor- (9000).jpg", "Tumor/one-slice", "0", "Tumor"] + loud_tumor + ["1.0"])
            rows += [[f"Stone/Stone- ({9001 + i}).jpg", "Stone/quiet", "0", "Stone"] + quiet + ["1.0"]
                     for i in range(10)]
            with gzip.open(fold0, "wt", newline="") as g:
                csv.writer(g).writerows(rows)
            out = Path(tmp) / "out"
            subprocess.run([sys.executable, str(HERE / "study_rule.py"), "--oof", tmp, "--out", str(out),
                            "--manifest", str(Path(tmp) / "absent.json")], check=True, capture_output=True)
            subprocess.run([sys.executable, str(HERE / "missed_studies.py"), "--oof", tmp, "--out", str(out)],
                           check=True, capture_output=True)
            nested = json.loads((out / "study_rule.json").read_text())["nested"]["sensitivity"]
            missed = json.loads((out / "missed_studies.json").read_text())["findings"]
            for c in study_rule.FINDINGS:
                self.assertEqual(missed[c]["found"], nested[c]["hits"], c)
                self.assertEqual(missed[c]["found"] + len(missed[c]["missed"]), nested[c]["n"], c)
            by_id = {m["study"]: m for c in study_rule.FINDINGS for m in missed[c]["missed"]}
            self.assertTrue(by_id["Tumor/one-slice"]["shorter_than_run"])
            self.assertEqual(by_id["Tumor/one-slice"]["slices_called"], {"Tumor": 1})
            self.assertFalse(by_id["Stone/quiet"]["shorter_than_run"])
            self.assertEqual(by_id["Stone/quiet"]["slices_called"], {"Normal": 10})
            self.assertEqual(missed["Tumor"]["shorter_than_run"], 1)
            self.assertEqual(missed["Stone"]["missed"][0]["study"], "Stone/quiet")  # long misses before short ones

    def test_script_writes_nested_figures_and_refuses_the_manifest_without_five_folds(self):
        with tempfile.TemporaryDirectory() as tmp:
            write_folds(tmp)
            out = Path(tmp) / "out"
            subprocess.run([sys.executable, str(HERE / "study_rule.py"), "--oof", tmp, "--out", str(out),
                            "--manifest", str(Path(tmp) / "absent.json")], check=True, capture_output=True)
            res = json.loads((out / "study_rule.json").read_text())
            self.assertFalse(res["complete"])
            self.assertEqual(res["folds"], [0, 1, 2])
            self.assertEqual(set(res["per_fold_choice"]), {"0", "1", "2"})
            self.assertEqual(res["nested"]["false_finding_rate_normal"]["any"]["n"], 18)
            self.assertTrue((out / "study_roc.png").exists())
            man = Path(tmp) / "m.json"
            man.write_text(json.dumps({"version": "x", "temperature": 1.0, "decision_thresholds": {
                c: 0.5 for c in study_rule.FINDINGS}, "study_rule": {"min_run_slices": 2}}))
            refused = subprocess.run([sys.executable, str(HERE / "study_rule.py"), "--oof", tmp, "--out", str(out),
                                      "--manifest", str(man), "--write-manifest"], capture_output=True, text=True)
            self.assertNotEqual(refused.returncode, 0)
            self.assertIn("five folds", refused.stderr)
            self.assertEqual(json.loads(man.read_text())["temperature"], 1.0)


if __name__ == "__main__":
    unittest.main()
