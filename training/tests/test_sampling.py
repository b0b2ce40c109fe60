"""(a) Protocol-balanced sampling keeps every class the same mass and flattens each class's protocol mix;
(b) the rendering jitter returns a slice of the same size and type; (c) the distillation loss is zero where the
student already agrees with its teachers' average and pulls it towards it otherwise; (d) cross-fitted soft targets
keep the label ahead and refuse a file made for another fold; (e) an upsampled recipe's slices are enlarged, not
blocky, and its repeated options are read as train.py reads them (the last one). Seconds; (a) skips without
../shared."""
import sys
import unittest
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from augment import augment, rendering, resize_all  # noqa: E402
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

    def test_the_shipped_recipe_scores_enlarged_slices(self):
        from run_all import RECIPES, deploy_res, schedule_length
        up = RECIPES["shipped"]
        self.assertEqual((deploy_res(up), schedule_length(up)), (336, 7))
        self.assertEqual((deploy_res(RECIPES["v2"]), schedule_length(RECIPES["longer"])), (224, 13))
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (3, 224, 224)).astype(np.uint8)
        self.assertIs(resize_all(x, 224), x)
        big = resize_all(x, 336)
        self.assertEqual((big.shape, big.dtype), ((3, 336, 336), np.uint8))
        self.assertLess(abs(float(big.mean()) - float(x.mean())), 1.0)
        dot = np.zeros((1, 224, 224), np.uint8)  # a one-pixel "stone": bilinear spreads it, repeating would not
        dot[0, 100, 100] = 255
        big_dot = resize_all(dot, 336)
        self.assertTrue(((big_dot > 0) & (big_dot < 255)).any())
        self.assertEqual(augment(x[0], rng, 240).shape, (240, 240))

    def test_distillation_pulls_towards_the_teachers_average(self):
        import torch
        from train import distillation_loss

        class Fixed(torch.nn.Module):  # a teacher whose logits do not depend on the input
            def __init__(self, logits):
                super().__init__()
                self.logits = torch.tensor(logits)

            def forward(self, x):
                return self.logits.expand(len(x), -1)

        teachers = [Fixed([2.0, 0.0, 0.0, 0.0]), Fixed([0.0, 2.0, 0.0, 0.0])]
        xb = torch.zeros(3, 3, 8, 8)
        mean = torch.stack([torch.softmax(t.logits / 2, 0) for t in teachers]).mean(0)
        agree = (torch.log(mean) * 2).expand(3, -1)  # at T = 2 these logits give exactly the teachers' mean
        self.assertAlmostEqual(float(distillation_loss(agree, teachers, xb, 2.0, lambda n, x: n(x))), 0.0, places=6)
        student = torch.zeros(3, 4, requires_grad=True)
        distillation_loss(student, teachers, xb, 2.0, lambda n, x: n(x)).backward()
        # the gradient raises the two classes the teachers share between them and lowers the other two
        self.assertTrue(bool((student.grad[:, :2] < 0).all() and (student.grad[:, 2:] > 0).all()))

    def test_soft_targets_keep_the_label_ahead_and_refuse_another_folds_file(self):
        import csv
        import gzip
        import tempfile
        import torch
        import torch.nn.functional as F
        from train import batches, soft_targets
        rel = ["Tumor/a.jpg", "Normal/b.jpg"]
        y = np.array([3, 0])
        # the teacher reads the Tumor slice as Normal, sure of it; the Normal slice as Normal
        rows = [[rel[0], "Tumor/1", 1, "Tumor", "9", "0", "0", "0", ""],
                [rel[1], "Normal/1", 3, "Normal", "9", "0", "0", "0", ""]]
        header = ["relpath", "study", "fold", "label", "logit_Normal", "logit_Cyst", "logit_Stone", "logit_Tumor",
                  "ood_score"]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "fold{fold}.csv.gz"
            for fold in (1, 2):
                with gzip.open(str(path).format(fold=fold), "wt", newline="") as f:
                    csv.writer(f).writerows([header] + rows)
            t = soft_targets(path, 2, rel, y, 0.5, 2.0)
            np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-6)
            self.assertEqual(list(t.argmax(1)), [3, 0])  # at a weight of 0.5 the label still leads
            self.assertGreater(t[0, 0], 0.45)  # and the teacher's doubt is kept
            with self.assertRaises(SystemExit):  # fold 1's file holds fold 1's slices: made for another fold
                soft_targets(path, 1, rel, y, 0.5, 2.0)
            with self.assertRaises(SystemExit):  # a training slice without a target
                soft_targets(path, 2, rel + ["Cyst/c.jpg"], np.array([3, 0, 1]), 0.5, 2.0)
        # such targets go through batches and the recipe's loss (label smoothing, mixup's second target) as rows
        x = np.zeros((2, 224, 224), np.uint8)
        xb, yb, _ = next(batches(x, t, 2, 64, np.random.default_rng(0)))
        self.assertEqual((tuple(yb.shape), yb.dtype), ((2, 4), torch.float32))
        logits = torch.zeros(2, 4, requires_grad=True)
        loss = F.cross_entropy(logits, yb, label_smoothing=0.1) + F.cross_entropy(logits, yb[torch.tensor([1, 0])])
        loss.backward()
        self.assertTrue(bool(torch.isfinite(loss)) and logits.grad is not None)

if __name__ == "__main__":
    unittest.main()
