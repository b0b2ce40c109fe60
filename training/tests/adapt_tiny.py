#!/usr/bin/python3
"""Site adaptation end to end in seconds, without ../shared: three copies of the committed 5-slice TCIA fixture
as a site's studies (two labelled normal, one with a tumour labelled on slices 2-3), adapted by training/adapt.py
through the engine given as argv[1]. Checks the engine parity, the new manifest and graph (loaded by the engine),
the card, and that the shipped files are untouched.
    /usr/bin/python3 training/tests/adapt_tiny.py build/dev/app/nephra
"""
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "data" / "tcia-kidney-slices"


def sha(p):
    return hashlib.sha256(Path(p).read_bytes()).hexdigest()


def main():
    nephra = Path(sys.argv[1]).resolve()
    shipped = {p: sha(p) for p in (REPO / "models").iterdir() if p.is_file()}
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        for i in (1, 2, 3):
            (site / f"case-{i}").mkdir(parents=True)
            for f in FIXTURE.glob("*.dcm"):
                (site / f"case-{i}" / f.name).symlink_to(f)
        (site / "labels.csv").write_text("study,Cyst,Stone,Tumor,slices\ncase-1,0,0,0,\ncase-2,0,0,0,\n"
                                         "case-3,0,0,1,Tumor:2-3\n")
        out = Path(tmp) / "adapted"
        subprocess.run(["/usr/bin/python3", str(REPO / "training" / "adapt.py"), "--labels", str(site / "labels.csv"),
                        "--name", "tiny", "--out", str(out), "--nephra", str(nephra)], check=True, timeout=600)
        man = json.loads((out / "model" / "nephra-kidney.json").read_text())
        metrics = man["metrics"]["site_cross_validation"]
        assert metrics["parity_max_probability_diff"] < 2e-3, metrics["parity_max_probability_diff"]
        assert metrics["studies"] == 3 and metrics["labelled_slices"] == 12, metrics
        assert man["version"].endswith("+tiny") and man["adaptation"]["opencv_parity_max_logit_diff"] < 1e-3
        assert man["onnx_sha256"] == sha(out / "model" / man["onnx"])
        assert "adapted: sensitivity" in (out / "model" / "MODEL_CARD.md").read_text()
        run = subprocess.run([str(nephra), "classify", "--model", str(out / "model" / "nephra-kidney.json"),
                              str(FIXTURE / "1-072.dcm")], capture_output=True, text=True, check=True)
        assert json.loads(run.stdout)["probabilities"], run.stdout
        refused = subprocess.run(["/usr/bin/python3", str(REPO / "training" / "adapt.py"), "--labels",
                                  str(site / "labels.csv"), "--name", "tiny", "--out", str(REPO / "models" / "x"),
                                  "--nephra", str(nephra)], capture_output=True, text=True)
        assert refused.returncode != 0 and "must not be under models/" in refused.stderr, refused.stderr
    assert shipped == {p: sha(p) for p in (REPO / "models").iterdir() if p.is_file()}, "models/ changed"
    print("adapt_tiny: OK")


if __name__ == "__main__":
    main()
