"""The kidney finder and the synthetic lesions of counterfactual.py on a drawn phantom (no dataset needed):
both kidneys are found beside the spine, a lesion changes pixels in or at a kidney only, a cyst darkens and a stone
brightens it; a slice without a mirrored pair gets no kidneys; in pairs mode a batch holds each lesion slice beside the
same slice without it, augmented alike."""
import sys
import unittest
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from counterfactual import add_lesion, kidneys  # noqa: E402


def phantom(right_kidney=True):
    img = np.zeros((224, 224), np.uint8)
    cv2.ellipse(img, (112, 120), (95, 70), 0, 0, 360, 110, -1)   # body: soft tissue
    cv2.rectangle(img, (100, 135), (124, 160), 250, -1)          # vertebral body
    for x, angle in ((62, 20), (162, -20))[:2 if right_kidney else 1]:  # kidneys: enhancing cortex, darker sinus
        cv2.ellipse(img, (x, 138), (14, 20), angle, 0, 360, 205, -1)
        cv2.ellipse(img, (x, 138), (7, 11), angle, 0, 360, 120, -1)
    return img


class Counterfactual(unittest.TestCase):
    def test_both_kidneys_are_found_beside_the_spine(self):
        hulls = kidneys(phantom())
        self.assertEqual(len(hulls), 2)
        centres = sorted(float(h[:, 0, 0].mean()) for h in hulls)
        self.assertLess(abs(centres[0] - 62), 6)
        self.assertLess(abs(centres[1] - 162), 6)

    def test_a_single_bright_organ_is_not_a_kidney_pair(self):
        self.assertEqual(kidneys(phantom(right_kidney=False)), [])

    def test_solid_bright_organs_are_not_kidneys(self):
        img = phantom()
        for x in (62, 162):  # fill the sinus: a solid region, like the edge of a liver or spleen
            cv2.ellipse(img, (x, 138), (7, 11), 0, 0, 360, 205, -1)
        self.assertEqual(kidneys(img), [])

    def test_lesions_change_only_the_kidney_and_look_their_part(self):
        img = phantom()
        hulls = kidneys(img)
        near = np.zeros(img.shape, np.uint8)
        for h in hulls:
            cv2.fillConvexPoly(near, h, 1)
        near = cv2.dilate(near, np.ones((27, 27), np.uint8))  # a cyst may bulge out of its kidney (up to 11 px + edge)
        rng = np.random.default_rng(0)
        for kind, sign in (("cyst", -1), ("stone", 1)):
            for _ in range(10):
                out = add_lesion(img, hulls, kind, rng)
                self.assertEqual((out.shape, out.dtype), (img.shape, np.uint8))
                diff = out.astype(int) - img.astype(int)
                self.assertTrue(np.any(diff != 0), kind)
                self.assertFalse(np.any(diff[near == 0]), kind)
                self.assertGreater(sign * diff.sum(), 0, kind)

    def test_pairs_differ_by_the_lesion_only(self):
        from train import batches
        img = phantom()
        x, y = np.stack([img] * 4), np.zeros(4, np.int64)
        pool = {i: kidneys(img) for i in range(4)}
        xb, yb, pairs = next(batches(x, y, 4, 224, np.random.default_rng(0), pool=pool, share=1.0, pairs=True))
        self.assertEqual(len(yb), 8)
        self.assertEqual(pairs.tolist(), [[0, 1], [2, 3], [4, 5], [6, 7]])
        for lesion, clean in zip(xb[0::2], xb[1::2]):
            changed = (lesion != clean).any(0)
            self.assertTrue(changed.any())
            self.assertLess(float(changed.float().mean()), 0.02)  # a few hundred pixels at most, not another warp
        self.assertEqual(yb[1::2].tolist(), [0] * 4)
        self.assertTrue(set(yb[0::2].tolist()) <= {1, 2})

    def test_pair_loss_rewards_the_lesion_slice_leading_its_clean_twin(self):
        import torch
        from train import pair_loss
        labels, pairs = torch.tensor([2, 0]), torch.tensor([[0, 1]])
        hedge = torch.tensor([[1.0, 0.0, 1.0, 0.0], [1.0, 0.0, 1.0, 0.0]])   # both slices read alike
        sees = torch.tensor([[0.0, 0.0, 3.0, 0.0], [3.0, 0.0, 0.0, 0.0]])    # the stone slice leads by 6
        self.assertGreater(float(pair_loss(hedge, labels, pairs, 2.0)), float(pair_loss(sees, labels, pairs, 2.0)))
        self.assertLess(float(pair_loss(sees, labels, pairs, 2.0)), 0.02)


if __name__ == "__main__":
    unittest.main()
