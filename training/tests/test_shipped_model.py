"""(c) The shipped manifest names the shipped ONNX by its sha256; (d) OpenCV DNN matches torch on 100 images of the
committed grouped test split (max logit difference ≤ 1e-4), batch 1 and batch 8."""
import hashlib
import json
import sys
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from paths import DATASET, REPO, SPLITS, dataset_present  # noqa: E402

MODELS = REPO / "models"
MANIFEST = MODELS / "nephra-kidney.json"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class ShippedManifest(unittest.TestCase):
    def setUp(self):
        self.man = json.loads(MANIFEST.read_text())

    def test_onnx_sha256_matches(self):
        self.assertEqual(self.man["onnx_sha256"], sha256(MODELS / self.man["onnx"]))

    def test_schema(self):
        m = self.man
        self.assertEqual(m["classes"], ["Normal", "Cyst", "Stone", "Tumor"])
        self.assertEqual(m["input"]["name"], "input")
        size = m["input"]["width"]
        self.assertEqual((m["input"]["height"], m["input"]["channels"]), (size, 3))
        self.assertEqual(m["outputs"]["features_shape"], [1280, -(-size // 32), -(-size // 32)])
        self.assertLessEqual(m["preprocessing"].get("render_size", size), size)
        self.assertEqual(m["outputs"], {**m["outputs"], "logits": "logits", "features": "features"})
        self.assertEqual(len(m["head"]["weight"]), 4)
        self.assertTrue(all(len(r) == 1280 for r in m["head"]["weight"]))
        self.assertEqual(len(m["head"]["bias"]), 4)
        k = len(m["ood"]["pca_components"])
        self.assertTrue(all(len(r) == 1280 for r in m["ood"]["pca_components"]))
        self.assertEqual(len(m["ood"]["pca_mean"]), 1280)
        self.assertEqual(len(m["ood"]["class_means"]), 4)
        self.assertTrue(all(len(r) == k for r in m["ood"]["class_means"]))
        self.assertEqual(len(m["ood"]["precision"]), k)
        self.assertGreater(m["temperature"], 0)
        self.assertEqual(set(m["decision_thresholds"]), {"Cyst", "Stone", "Tumor"})
        dicom = m["preprocessing"]["dicom"]
        self.assertGreater(dicom["window_width"], 0)

    def test_split_hashes_match_committed_lists(self):
        for name, digest in self.man["dataset"]["split_sha256"].items():
            self.assertEqual(digest, sha256(SPLITS / f"{name}.txt"), name)

    def test_head_matches_checkpoint(self):
        import numpy as np
        import torch
        sd = torch.load(MODELS / "nephra-kidney.pt", map_location="cpu")
        np.testing.assert_allclose(np.array(self.man["head"]["weight"]), sd["classifier.1.weight"].numpy(), atol=1e-6)
        np.testing.assert_allclose(np.array(self.man["head"]["bias"]), sd["classifier.1.bias"].numpy(), atol=1e-6)


class OpenCVParity(unittest.TestCase):
    def test_opencv_matches_torch_on_100_test_images(self):
        if not dataset_present():
            self.skipTest(f"{DATASET} is absent: the committed-split test images are needed")
        import torch
        from augment import resize_all
        from data import load_split
        from export_onnx import compare, load_deployed
        torch.set_num_threads(2)
        _, x, _ = load_split("test", 100)
        self.assertEqual(len(x), 100)
        man = json.loads(MANIFEST.read_text())
        model = load_deployed(MODELS / "nephra-kidney.pt")
        res = compare(model, MODELS / man["onnx"], resize_all(x, man["input"]["width"]), batches=(1, 8))
        for bs, r in res.items():
            self.assertLessEqual(r["max_logit_diff"], 1e-4, (bs, r))
            self.assertLessEqual(r["max_feature_diff"], 1e-3, (bs, r))


if __name__ == "__main__":
    unittest.main()
