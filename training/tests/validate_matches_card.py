#!/usr/bin/python3
"""`nephra validate` on the fixed test split's 37 pseudo-studies gives the figures the model card and the manifest
(metrics.validate_test_split) state. Exit 77 (skipped) where ../shared is absent.
    /usr/bin/python3 training/tests/validate_matches_card.py build/release/app/nephra
    ... --write    # a new model: record what nephra validate gives in the manifest (then copy it into the card)
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
    manifest_path = REPO / "models" / "nephra-kidney.json"
    manifest = json.loads(manifest_path.read_text())
    expected = dict(manifest["metrics"].get("validate_test_split", {}))
    how = expected.pop("how", "training/validation_set.py --split test, then nephra validate "
                              "(training/tests/validate_matches_card.py); [events, studies]")
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
    if "--write" in sys.argv[2:]:
        manifest["metrics"]["validate_test_split"] = {**got, "how": how}
        manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
        print("validate_matches_card: written", json.dumps(got))
        return
    if got != expected:
        print(f"FAIL: nephra validate gives {json.dumps(got)}\nthe manifest states {json.dumps(expected)}")
        sys.exit(1)
    print("validate_matches_card: OK", json.dumps(got))


if __name__ == "__main__":
    main()
