#!/usr/bin/python3
"""What the node says on every real DICOM series at hand (other hospitals' CT, none in the training data): per
series and body region, how many slices it leaves "not assessed", what it calls the rest, and the study's
findings, with the product's own `nephra classify --study`. Regions were read off the slices by eye (not a
radiologist's read); "kidney level" is where a kidney is in the slice.
    /usr/bin/python3 training/ood_series.py --nephra build/release/app/nephra
Writes training/results/ood_series.json. The JPEG 2000 series is decoded with GDCM first (DCMTK 3.6.7 cannot; an
archive sends the node a syntax it accepted) after its blanked UIDs are filled in, in a temporary folder.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from paths import REPO, SHARED

DICOM = SHARED / "data" / "dicom"
# instance number → region, per series, by eye
SERIES = {
    "tcia-pancreatic-ct-cbct-seg-001": {
        "what": "TCIA Pancreatic-CT-CBCT-SEG 001, Philips, 3 mm, contrast; lower chest to iliac crest",
        "regions": {"chest": range(1, 36), "upper abdomen": range(36, 50), "kidney level": range(55, 91),
                    "lower abdomen and pelvis": range(100, 135)}},
    "dicom-numpy-dupe-positions": {
        "what": "dicom-numpy fixture, GE, 2.5 mm, 11 sparse slices neck to pelvis (source not stated)",
        "regions": {"neck and chest": (2, 21, 34, 80, 83), "upper abdomen": (126, 131),
                    "kidney level": (138, 145), "lower abdomen and pelvis": (190,)}},
    "totalsegmentator-example-ct-j2k": {
        "what": "TotalSegmentator fixture, Siemens PET/CT, 2 mm, JPEG 2000; liver, stomach and spleen, no kidney",
        "regions": {"upper abdomen": range(267, 287), "kidney level": ()},
        "j2k": True},
}


def decoded_copy(src, dest):
    """The J2K series with study/series/instance UIDs filled in, decompressed by GDCM."""
    for i, f in enumerate(sorted(src.iterdir())):
        tmp = dest / f"j2k-{i}.dcm"
        shutil.copy(f, tmp)
        subprocess.run(["dcmodify", "-nb", "-m", "(0008,0016)=1.2.840.10008.5.1.4.1.1.2", "-m",
                        f"(0008,0018)=2.25.{7700 + i}", "-m", "(0020,000d)=2.25.7701", "-m",
                        "(0020,000e)=2.25.7702", str(tmp)], check=True, capture_output=True)
        subprocess.run(["gdcmconv", "--raw", str(tmp), str(dest / f"{i:03d}.dcm")], check=True, capture_output=True)
        tmp.unlink()
    return dest


def summarise(study, regions):
    out = {}
    for name, numbers in regions.items():
        sl = [s for s in study["slices"] if s.get("instance_number") in set(numbers)]
        assessed = [s for s in sl if not s.get("not_assessed")]
        out[name] = {"slices": len(sl), "not_assessed": len(sl) - len(assessed),
                     "not_assessed_rate": round((len(sl) - len(assessed)) / len(sl), 3) if sl else None,
                     "called": dict(Counter(s["predicted"] for s in assessed))}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nephra", required=True)
    p.add_argument("--model", default=str(REPO / "models" / "nephra-kidney.json"))
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "ood_series.json"))
    args = p.parse_args()
    if not DICOM.is_dir():
        print(f"skipped: {DICOM} is absent")
        return 0
    result = {"model": json.loads(Path(args.model).read_text())["version"], "series": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in SERIES.items():
            folder = DICOM / name
            if spec.get("j2k"):
                folder = decoded_copy(folder, Path(tmp))
            run = subprocess.run([args.nephra, "classify", "--model", args.model, "--threads", "2", "--study",
                                  str(folder)], capture_output=True, text=True)
            study = json.loads(run.stdout)
            result["series"][name] = {
                "what": spec["what"], "summary": study["summary"],
                "findings_present": [f["class"] for f in study["findings"] if f["present"]],
                "regions": summarise(study, spec["regions"])}
            print(name, "|", study["summary"], flush=True)
            for region, r in result["series"][name]["regions"].items():
                print(f"  {region}: {r['not_assessed']}/{r['slices']} not assessed, called {r['called']}")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
