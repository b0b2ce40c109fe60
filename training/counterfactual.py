"""Counterfactual lesions: a synthetic cyst or stone placed in a kidney of a Normal axial slice, so that the same
study and protocol appear with and without a finding and the network cannot tell them apart by the rendering.

The kidneys are found without labels: the vertebral body (the largest bone-bright region low in the middle), then,
at a few brightness thresholds of the smoothed slice, a bright compact region on each side of it; only a mirrored
pair (same level, similar size and distance from the spine) of regions that fill their hull loosely (a bright cortex
around a darker sinus: an enhancing kidney) counts. By eye on random axial Normal slices it finds kidneys in about a
fifth of them, and about one in twenty of the regions it finds lies elsewhere (liver edge, body wall, colon).
Lesion appearance comes from ranges read off real slices of the dataset by eye (not measured on masks, which the
dataset does not have): a cyst is a round-to-oval, homogeneous region darker than the parenchyma with a soft edge,
3-22 px across at 224 px; a stone a bright (calcium) blob 3-8 px across in the kidney's darker sinus. Never scored on.
"""
from pathlib import Path

import cv2
import numpy as np

BONE = 235
THRESHOLDS = (165, 175, 185, 195, 205)
MAX_SOLIDITY = 0.85


def vertebra(img):
    """(x, y, w, h) of the vertebral body of an axial slice, or None."""
    h, w = img.shape
    n, _, st, cen = cv2.connectedComponentsWithStats((img >= BONE).astype(np.uint8), connectivity=8)
    best = None
    for i in range(1, n):
        area = st[i, cv2.CC_STAT_AREA]
        cx, cy = cen[i]
        if area < 60 or abs(cx - w / 2) > 0.12 * w or cy < 0.45 * h:
            continue
        score = area - 3 * abs(cx - w / 2)
        if best is None or score > best[0]:
            best = (score, i)
    return None if best is None else tuple(int(v) for v in st[best[1], :4])


def _side(smooth, spine, threshold, side):
    x, y, bw, bh = spine
    vx, vy = x + bw / 2, y + bh / 2
    mask = (smooth >= threshold).astype(np.uint8)
    mask[max(0, y - 2):y + bh + 2, max(0, x - 2):x + bw + 2] = 0
    n, labels, st, cen = cv2.connectedComponentsWithStats(mask, connectivity=8)
    out = []
    for i in range(1, n):
        cx, cy = cen[i]
        area, cw, ch = st[i, cv2.CC_STAT_AREA], st[i, cv2.CC_STAT_WIDTH], st[i, cv2.CC_STAT_HEIGHT]
        if ((cx - vx) * side <= 0 or not 0.4 * bw * bh <= area <= 3.5 * bw * bh or max(cw, ch) > 2.0 * min(cw, ch)
                or not 1.1 * bw <= abs(cx - vx) <= 3.2 * bw or abs(cy - vy) > 0.9 * bh
                or st[i, cv2.CC_STAT_LEFT] == 0 or st[i, cv2.CC_STAT_TOP] == 0):
            continue
        pts = np.column_stack(np.nonzero(labels == i))[:, ::-1].astype(np.int32)
        hull = cv2.convexHull(pts)
        # An enhanced kidney is a bright cortex around a darker sinus: its region fills its hull far less than
        # the solid edge of a liver or spleen does.
        if area > MAX_SOLIDITY * cv2.contourArea(hull):
            continue
        out.append((float(area), float(cx), float(cy), hull))
    return out


def kidneys(img):
    """Both kidneys of an axial uint8 slice as convex hulls (left, right), or [] unless found as a mirrored pair."""
    spine = vertebra(img)
    if spine is None:
        return []
    x, y, bw, bh = spine
    vx = x + bw / 2
    smooth = cv2.GaussianBlur(img, (0, 0), 2.0)
    best = None
    for t in THRESHOLDS:
        for a1, x1, y1, h1 in _side(smooth, spine, t, -1):
            for a2, x2, y2, h2 in _side(smooth, spine, t, 1):
                off = abs(abs(x1 - vx) - abs(x2 - vx))
                if abs(y1 - y2) > 0.6 * bh or max(a1, a2) > 2.2 * min(a1, a2) or off > bw:
                    continue
                score = -(abs(y1 - y2) / bh + abs(np.log(a1 / a2)) + off / bw)
                if best is None or score > best[0]:
                    best = (score, [h1, h2])
    return [] if best is None else best[1]


def normal_axial_kidneys(rel, x, y):
    """(index, kidney hulls) of every Normal axial slice whose kidneys are found."""
    from data import study_tags
    for i in np.flatnonzero(y == 0):
        if study_tags(rel[i])["view"] == "axial" and (hulls := kidneys(x[i])):
            yield int(i), hulls


def _inside(hull, shape, erode=0):
    mask = np.zeros(shape, np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    if erode:
        mask = cv2.erode(mask, np.ones((2 * erode + 1, 2 * erode + 1), np.uint8))
    return mask


def add_lesion(img, hulls, kind, rng):
    """img with one synthetic `kind` ("cyst" or "stone") in one of the kidneys; None if it does not fit."""
    hull = hulls[int(rng.integers(len(hulls)))]
    inside = _inside(hull, img.shape, 3 if kind == "stone" else 1)
    if kind == "stone" and inside.any():  # in the darker sinus (calyces, pelvis), where stones sit and show
        smooth = cv2.GaussianBlur(img, (0, 0), 1.5)
        inside &= (smooth < np.median(smooth[inside > 0])).astype(np.uint8)
    where = np.column_stack(np.nonzero(inside))
    if len(where) == 0:
        return None
    cy, cx = where[int(rng.integers(len(where)))]
    if kind == "cyst":
        axes = rng.uniform(1.5, 11.0) * np.exp(rng.uniform(-0.25, 0.25, 2))
    else:
        axes = rng.uniform(1.5, 4.0) * np.exp(rng.uniform(-0.3, 0.3, 2))
    blob = np.zeros(img.shape, np.float32)
    cv2.ellipse(blob, (int(cx), int(cy)), (max(1, int(round(axes[0]))), max(1, int(round(axes[1])))),
                float(rng.uniform(0, 180)), 0, 360, 1.0, -1, cv2.LINE_AA)
    blob = cv2.GaussianBlur(blob, (0, 0), float(rng.uniform(0.6, 1.2) if kind == "cyst" else rng.uniform(0.4, 0.7)))
    x = img.astype(np.float32)
    parenchyma = float(np.median(x[_inside(hull, img.shape) > 0]))
    if kind == "cyst":
        # homogeneous water-like content; keep a little of the slice's own texture so it is not a flat disc
        texture = x - cv2.GaussianBlur(x, (0, 0), 1.5)
        value = parenchyma * rng.uniform(0.3, 0.6) + 0.25 * texture
    else:
        value = np.full_like(x, rng.uniform(235, 255))
    out = x * (1 - blob) + value * blob
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def examples(out, n=4, seed=0):
    """A figure of what training sees: Normal axial slices with the kidneys found (green), then with a synthetic
    cyst (top row) or stone (bottom row), cropped around the spine."""
    from data import load_split
    rel, x, y = load_split("train")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    rel, x, y = [rel[i] for i in order], x[order], y[order]
    found = []
    for i, hulls in normal_axial_kidneys(rel, x, y):
        found.append((x[i], hulls))
        if len(found) == 2 * n:
            break

    def crop(img, gray):
        spine = vertebra(gray)
        cx, cy = (112, 140) if spine is None else (spine[0] + spine[2] // 2, spine[1] + spine[3] // 2)
        x0, y0 = int(np.clip(cx - 64, 0, 96)), int(np.clip(cy - 80, 0, 96))
        return img[y0:y0 + 128, x0:x0 + 128]

    rows = []
    for kind, group in (("cyst", found[:n]), ("stone", found[n:])):
        tiles = []
        for img, hulls in group:
            shown = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            cv2.polylines(shown, hulls, True, (0, 200, 0), 1)
            lesion = add_lesion(img, hulls, kind, rng)
            tiles += [crop(shown, img), crop(cv2.cvtColor(lesion, cv2.COLOR_GRAY2BGR), img)]
        rows.append(np.hstack(tiles))
    cv2.imwrite(str(out), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])


def probe(weights, split="test", fold=None, seed=0):
    """Does a network see a lesion in an enhancing kidney? Every Normal axial slice of `split` (or of held-out grouped
    fold `fold`, for a fold's network) whose kidneys are found, as it is and with a synthetic cyst or stone, through
    the network at the manifest's temperature; the real Cyst and Stone slices beside them for reference."""
    import json
    import torch
    from augment import resize_all
    from data import load_split
    from model import build_model, forward_all, to_input
    from paths import CLASSES, REPO
    torch.set_num_threads(2)
    manifest = json.loads((REPO / "models" / "nephra-kidney.json").read_text())
    t, thr = manifest["temperature"], manifest["decision_thresholds"]
    net = build_model(pretrained=False)
    net.load_state_dict(torch.load(weights, map_location="cpu"))
    net.eval()
    if fold is None:
        rel, x, y = load_split(split)
    else:
        from argparse import Namespace
        from train import load_data
        _, (rel, x, y) = load_data(Namespace(random_split=False, fold=fold, tiny=0))
    rng = np.random.default_rng(seed)
    sets = {"Normal, as it is": [], "Normal + synthetic cyst": [], "Normal + synthetic stone": []}
    for i, hulls in normal_axial_kidneys(rel, x, y):
        sets["Normal, as it is"].append(x[i])
        sets["Normal + synthetic cyst"].append(add_lesion(x[i], hulls, "cyst", rng))
        sets["Normal + synthetic stone"].append(add_lesion(x[i], hulls, "stone", rng))
    for c in ("Cyst", "Stone"):
        sets[f"real {c} slices (all views)"] = list(x[y == CLASSES.index(c)])
    out = {"split": split if fold is None else f"held-out fold {fold}", "weights": str(weights), "temperature": t,
           "thresholds": thr, "sets": {}}
    size = manifest["input"]["width"]  # the network's input: the 224 px slices enlarged, as the engine does
    with torch.no_grad():
        for name, imgs in sets.items():
            batches = [resize_all(np.stack(imgs[j:j + 16]), size) for j in range(0, len(imgs), 16)]
            p = torch.cat([torch.softmax(forward_all(net, to_input(b))[0] / t, 1) for b in batches]).numpy()
            out["sets"][name] = {"slices": len(imgs),
                                 "argmax": dict(zip(CLASSES, np.bincount(p.argmax(1), minlength=4).tolist())),
                                 "mean_probability": dict(zip(CLASSES, [round(float(v), 4) for v in p.mean(0)])),
                                 "flagged": {c: round(float((p[:, CLASSES.index(c)] >= thr[c]).mean()), 4)
                                             for c in ("Cyst", "Stone")}}
            print(name, json.dumps(out["sets"][name]), flush=True)
    return out


if __name__ == "__main__":
    import argparse
    import json
    import sys
    ap = argparse.ArgumentParser(description="counterfactual lesions: the examples figure, or a network's probe")
    ap.add_argument("--examples", default="training/results/counterfactual_examples.jpg")
    ap.add_argument("--probe", help="weights (state_dict .pt) to probe; writes --probe-out")
    ap.add_argument("--probe-out", default="training/results/counterfactual_probe.json")
    ap.add_argument("--fold", type=int, help="probe on this held-out grouped fold (a fold's network) instead of test")
    a = ap.parse_args()
    if a.probe:
        Path(a.probe_out).write_text(json.dumps(probe(a.probe, fold=a.fold), indent=1) + "\n")
    else:
        examples(a.examples)
    sys.exit(0)
