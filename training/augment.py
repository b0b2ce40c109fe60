"""Augmentation that imitates other hospitals and scanners, on 8-bit gray CT slices (uint8 HxW in, uint8 res x res out).

One affine warp does flip, rotation, zoom/crop and shift; then window jitter (a different display window), gamma,
brightness/contrast, blur, Gaussian and salt-and-pepper noise, and JPEG re-compression.
"""
import cv2
import numpy as np

cv2.setNumThreads(1)


def affine(img, rng, res):
    h, w = img.shape
    angle = rng.uniform(-15, 15)
    scale = rng.uniform(0.85, 1.25)          # >1 zooms in (crop), <1 zooms out (border)
    aspect = np.exp(rng.uniform(-0.08, 0.08))
    tx, ty = rng.uniform(-0.06, 0.06, size=2) * w
    M = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    M[:, :2] = M[:, :2] @ np.diag([scale * aspect, scale / aspect])
    M[:, 2] += (w / 2, h / 2) - M[:, :2] @ (w / 2, h / 2) + (tx, ty)
    if rng.random() < 0.5:                   # left-right flip
        M = np.array([[-1, 0, w], [0, 1, 0]], np.float64) @ np.vstack([M, [0, 0, 1]])
    M = M * (res / w)
    return cv2.warpAffine(img, M[:2], (res, res), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def intensity(img, rng, gentle=False):
    """gentle: degradations that keep a lesion of a few pixels (a small stone) visible: no salt-and-pepper (bright
    single pixels on lesion-free slices teach the network to ignore exactly what a small stone looks like), blur of
    at most sigma 0.6, noise of at most 0.02, JPEG quality 70 or more."""
    x = img.astype(np.float32) / 255.0
    if rng.random() < 0.7:                   # window jitter: another level/width maps the same tissues elsewhere
        lo = rng.uniform(-0.08, 0.12)
        hi = rng.uniform(0.85, 1.10)
        x = (x - lo) / (hi - lo)
    if rng.random() < 0.5:
        x = np.clip(x, 0, 1) ** np.exp(rng.uniform(-0.35, 0.35))
    if rng.random() < 0.6:                   # brightness / contrast
        x = (x - 0.5) * rng.uniform(0.75, 1.3) + 0.5 + rng.uniform(-0.1, 0.1)
    x = np.clip(x, 0, 1)
    if rng.random() < 0.3:
        x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.3, 0.6) if gentle else rng.uniform(0.4, 1.3))
    if rng.random() < 0.3:
        x = x + rng.normal(0, rng.uniform(0.005, 0.02) if gentle else rng.uniform(0.01, 0.04),
                           x.shape).astype(np.float32)
    out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if not gentle and rng.random() < 0.2:    # salt and pepper
        p = rng.uniform(0.002, 0.02)
        r = rng.random(out.shape)
        out[r < p / 2] = 0
        out[r > 1 - p / 2] = 255
    if rng.random() < 0.4:
        quality = int(rng.integers(70, 95)) if gentle else int(rng.integers(30, 90))
        ok, enc = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out = cv2.imdecode(enc, cv2.IMREAD_GRAYSCALE)
    return out


def rendering(img, rng):
    """Another hospital's rendering of the same slice: CLAHE applied again with other settings (stronger local
    equalisation), or local contrast flattened towards the neighbourhood mean (as if there were no CLAHE); the
    dataset's slices are CLAHE-processed already, so "none" can only be imitated."""
    r = rng.random()
    if r < 0.25:
        tile = int(rng.choice([4, 8, 16]))
        return cv2.createCLAHE(clipLimit=float(rng.uniform(1.5, 4.0)), tileGridSize=(tile, tile)).apply(img)
    if r < 0.5:
        x = img.astype(np.float32)
        local = cv2.GaussianBlur(x, (0, 0), img.shape[0] / rng.uniform(6, 12))
        return np.clip(local + rng.uniform(0.5, 0.9) * (x - local) + 0.5, 0, 255).astype(np.uint8)
    return img


def augment(img, rng, res=224, render=False, gentle=False):
    if render:  # before the warp, at the slice's own size, where the node renders it
        img = rendering(img, rng)
    return intensity(affine(img, rng, res), rng, gentle)


def resize(img, res):
    if img.shape[0] == res:
        return img
    # INTER_AREA to shrink; to enlarge it would repeat pixels, so bilinear, as the training warp does
    return cv2.resize(img, (res, res), interpolation=cv2.INTER_AREA if res < img.shape[0] else cv2.INTER_LINEAR)


def resize_all(gray_u8, res):
    """uint8 [N,H,W] at res x res (what a network trained on upsampled slices is scored on)."""
    if gray_u8.shape[1] == res:
        return gray_u8
    return np.stack([resize(im, res) for im in gray_u8]) if len(gray_u8) else gray_u8.reshape(0, res, res)
