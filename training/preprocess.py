"""The node's preprocessing of a DICOM CT slice, in Python, operation for operation as engine/src/slice.cpp does it:
HU → display window (float32, truncated to 8 bit) → square crop around the body → Lanczos resize → CLAHE."""
import math

import cv2
import numpy as np

BODY_THRESHOLD_HU = -500.0
BODY_MARGIN = 0.04
# An axial slice whose body outline is more than this fraction air cuts through the lungs: not assessed. On the real
# TCIA series the kidney slices hold 0.2-2.4 % air, the chest slices 15-27 % (training/results/README.md).
MAX_AIR_FRACTION = 0.10
# A PNG/JPEG export is windowed already: its body is the region brighter than this gray value. On the TCIA series'
# kidney-level slices gray 0-10 gives the HU threshold's box within 2 px; 20 and above cuts into subcutaneous fat.
EXPORT_BODY_THRESHOLD_GRAY = 10


def hu_of(ds):
    return (ds.pixel_array.astype(np.float32) * np.float32(getattr(ds, "RescaleSlope", 1))
            + np.float32(getattr(ds, "RescaleIntercept", 0)))


def window_u8(hu, center, width):
    low = np.float32(center - width / 2.0)
    v = (hu.astype(np.float32) - low) / np.float32(width) * np.float32(255.0)
    return np.clip(v, 0, 255).astype(np.uint8)


def body_box(hu, threshold=BODY_THRESHOLD_HU, margin=BODY_MARGIN):
    """Square (x, y, side, side) around the largest connected region above `threshold` (HU, or gray for an export),
    with a margin."""
    h_img, w_img = hu.shape
    mask = (hu > np.float32(threshold)).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    best = 0
    for i in range(1, n):
        if best == 0 or stats[i, cv2.CC_STAT_AREA] > stats[best, cv2.CC_STAT_AREA]:
            best = i
    if best == 0 or stats[best, cv2.CC_STAT_AREA] < (h_img * w_img) // 100:
        return 0, 0, w_img, h_img
    x, y, w, h = (int(stats[best, k]) for k in (cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH,
                                                cv2.CC_STAT_HEIGHT))
    side = int(math.floor(max(w, h) * (1.0 + 2.0 * margin) + 0.5))
    x0 = int(math.floor(x + w / 2.0 - side / 2.0 + 0.5))
    y0 = int(math.floor(y + h / 2.0 - side / 2.0 + 0.5))
    return x0, y0, side, side


def body_air(hu, threshold=BODY_THRESHOLD_HU):
    """Fraction of the body's outline (largest region above `threshold`, holes filled) that is not body."""
    mask = (hu > np.float32(threshold)).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if n < 2:
        return 0.0
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < hu.size // 100:
        return 0.0
    body = (labels == best).astype(np.uint8)
    outline, _ = cv2.findContours(body, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(body)
    cv2.drawContours(filled, outline, -1, 1, cv2.FILLED)
    area = int(filled.sum())
    return (area - int(body.sum())) / area if area else 0.0


def crop_square(img, box):
    x0, y0, bw, bh = box
    h, w = img.shape
    if (x0, y0, bw, bh) == (0, 0, w, h):
        return img
    canvas = np.zeros((bh, bw), img.dtype)
    ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + bw, w), min(y0 + bh, h)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = img[iy0:iy1, ix0:ix1]
    return canvas


def dicom_slice_to_u8(hu, center, width, crop=True, size=224, clahe=(4.0, 8)):
    img = window_u8(hu, center, width)
    if crop:
        img = crop_square(img, body_box(hu))
    if img.shape != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LANCZOS4)
    return cv2.createCLAHE(clipLimit=clahe[0], tileGridSize=(clahe[1], clahe[1])).apply(img)
