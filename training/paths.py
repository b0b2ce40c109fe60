"""Where the recipe finds its inputs: ../shared beside the checkout, or $NEPHRA_SHARED."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NEPHRA_SHARED", REPO.parent / "shared"))
DATASET = SHARED / "data" / "ct-kidney"
SPLITS = REPO / "training" / "splits"
CLASSES = ["Normal", "Cyst", "Stone", "Tumor"]


def dataset_present() -> bool:
    return (DATASET / "STUDY_GROUPS.csv").exists()
