"""Dataset loading: every JPEG decoded once into a uint8 array (cached under training/runs/cache)."""
import csv
import functools
import hashlib

import cv2
import numpy as np

from paths import CLASSES, DATASET, REPO, SPLITS

CACHE = REPO / "training" / "runs" / "cache"


def read_list(name):
    return [l for l in (SPLITS / f"{name}.txt").read_text().splitlines() if l]


def label_of(relpath):
    return CLASSES.index(relpath.split("/", 1)[0])


@functools.lru_cache(maxsize=1)
def _study_groups():
    with open(DATASET / "STUDY_GROUPS.csv", newline="") as f:
        return {r["relpath"]: (r["class"], r["study_group"]) for r in csv.DictReader(f)}


@functools.lru_cache(maxsize=1)
def _study_tags():
    with open(REPO / "training" / "results" / "study_views.csv", newline="") as f:
        return {r["study"]: r for r in csv.DictReader(f)}


def study_tags(relpath):
    """The protocol tags of a slice's pseudo-study (view, rendering cluster, ...), as protocol_audit.py wrote them
    to results/study_views.csv."""
    return _study_tags()["/".join(_study_groups()[relpath])]


def group_of(relpath):
    """The pseudo-study a slice belongs to: (class, study_group) from STUDY_GROUPS.csv."""
    return _study_groups()[relpath]


def load_gray(path):
    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise IOError(f"cannot read {path}")
    if img.shape != (224, 224):
        img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_LANCZOS4)
    return img


def load_images(relpaths, cache_name=None):
    """uint8 [N,224,224] for relpaths (relative to the dataset root), cached by the list's sha256."""
    key = hashlib.sha256("\n".join(relpaths).encode()).hexdigest()[:16]
    cache = CACHE / f"{cache_name or 'imgs'}-{key}.npy"
    if cache.exists():
        return np.load(cache)
    arr = np.stack([load_gray(DATASET / r) for r in relpaths])
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(cache, arr)
    return arr


def load_split(name, limit=None):
    rel = read_list(name)
    if limit:  # an evenly spaced subset, so every class is present
        rel = rel[:: max(1, len(rel) // limit)][:limit]
    return rel, load_images(rel, name if not limit else None), np.array([label_of(r) for r in rel])


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
