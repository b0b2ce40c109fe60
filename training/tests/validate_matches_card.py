#!/usr/bin/python3
"""`nephra validate` on the fixed test split's 37 pseudo-studies gives the figures the model card and the manifest
(metrics.validate_test_split) state. Exit 77 (skipped) where ../shared is absent.
    /usr/bin/python3 training/tests/validate_matches_card.py build/release/app/nephra
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "training"))
from paths import DATASET, dataset_present  # noqa: E402


def main():
    if not dataset_present():
        print(f"SKIP: {DATASET} is absent")
        sys.exit(77)
    expected = json.loads((REPO / "models" / "nephra-kidney.json").read_text())["metrics"]["validate_test_split"]
    expected.pop("how", None)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["/usr/bin/python3", str(REPO / "training" / "validation_set.py"), "--split", "test", "--out",
                        f"{tmp}/site"], check=True)
        subprocess.run([sys.argv[1], "validate", "--model", str(REPO / "models" / "nephra-kidney.json"), "--labels",
                        f"{tmp}/site/labels.csv", "--out", f"{tmp}/report"], check=True)
        report = json.loads(Path(f"{tmp}/report/report.json").read_text())
    got = {"studies": report["studies"],
           "any_false_finding_on_normal": [report["any_false_finding_on_normal"][k] for k in ("k", "n")]}
    for f in report["findings"]:
        for key in ("sensitivity", "false_finding_on_normal", "called_on_other_findings"):
            got.setdefault(key, {})[f["finding"]] = [f[key]["k"], f[key]["n"]]
    if got != expected:
        print(f"FAIL: nephra validate gives {json.dumps(got)}\nthe manifest states {json.dumps(expected)}")
        sys.exit(1)
    print("validate_matches_card: OK", json.dumps(got))


if __name__ == "__main__":
    main()
