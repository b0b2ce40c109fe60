"""(a) Protocol-balanced sampling keeps every class the same mass and flattens each class's protocol mix;
(b) the rendering jitter returns a slice of the same size and type. Seconds; (a) skips without ../shared."""
import sys
import unittest
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from augment import augment, rendering  # noqa: E402
from paths import DATASET, dataset_present  # noqa: E402


class Sampling(unittest.TestCase):
    def test_strata_weights_balance_classes_and_flatten_protocols(self):
        if not dataset_present():
            self.skipTest(f"{DATASET} is absent")
        from data import label_of, read_list, study_tags
        from train import group_weights, strata_weights
        rel = read_list("train")
        y = np.array([label_of(r) for r in rel])
        cells = [(c, f"{study_tags(r)['view']}|{study_tags(r)['rendering_cluster']}") for c, r in zip(y, rel)]
        for weights in (group_weights(rel, y), strata_weights(rel, y)):
            self.assertAlmostEqual(weights.sum(), 1.0, places=9)
            for c in range(4):
                self.assertAlmostEqual(weights[y == c].sum(), 0.25, places=9)

        def spread(weights):  # the largest protocol stratum's share of its class, worst class
            mass = Counter()
            for cell, w in zip(cells, weights):
                mass[cell] += w
            return max(max(v for k, v in mass.items() if k[0] == c) / 0.25 for c in range(4))
        self.assertLess(spread(strata_weights(rel, y)), spread(group_weights(rel, y)))
        heavy = group_weights(rel, y, (1, 1, 1, 2))
        self.assertAlmostEqual(heavy[y == 3].sum(), 0.4, places=9)
        self.assertAlmostEqual(heavy[y == 0].sum(), 0.2, places=9)

    def test_rendering_jitter_keeps_shape_and_type(self):
        rng = np.random.default_rng(0)
        img = rng.integers(0, 256, (224, 224)).astype(np.uint8)
        for _ in range(16):
            self.assertEqual(rendering(img, rng).shape, (224, 224))
            out = augment(img, rng, 160, render=True)
            self.assertEqual((out.shape, out.dtype), ((160, 160), np.uint8))


if __name__ == "__main__":
    unittest.main()
