"""(a) The whole recipe runs end to end on a tiny subset (40 images, 3 short epochs, weight averaging) and exports an ONNX that
OpenCV 4.6 DNN loads and that matches torch. Takes about a minute on 2 CPU cores."""
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from paths import DATASET, REPO, dataset_present  # noqa: E402
from model import PRETRAINED  # noqa: E402


class TinyRecipe(unittest.TestCase):
    def test_end_to_end_tiny(self):
        if not dataset_present() or not PRETRAINED.exists():
            self.skipTest(f"{DATASET} or the pretrained MobileNetV2 under ../shared is absent")
        import cv2
        import numpy as np
        import torch
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "tiny"
            subprocess.run([sys.executable, str(HERE / "run_all.py"), "--out", str(out), "--tiny"], check=True,
                           cwd=REPO, timeout=600)
            man = json.loads((out / "nephra-kidney.json").read_text())
            onnx_path = out / man["onnx"]
            self.assertEqual(man["classes"], ["Normal", "Cyst", "Stone", "Tumor"])
            self.assertEqual(len(man["head"]["weight"]), 4)
            self.assertEqual(len(man["head"]["weight"][0]), 1280)
            self.assertLessEqual(man["metrics"]["opencv_parity_max_logit_diff"], 1e-4)
            net = cv2.dnn.readNetFromONNX(str(onnx_path))
            self.assertEqual((man["input"]["width"], man["input"]["height"]), (336, 336))  # the shipped recipe's
            self.assertEqual(man["preprocessing"]["render_size"], 224)
            x = np.random.default_rng(0).integers(0, 256, (2, 1, 336, 336)).astype(np.float32).repeat(3, 1)
            net.setInput(x, "input")
            logits, feats = net.forward(["logits", "features"])
            self.assertEqual(logits.shape, (2, 4))
            self.assertEqual(feats.shape, (2, 1280, 11, 11))
            # the head in the manifest reproduces the logits from the feature map (CAM == Grad-CAM premise)
            w = np.array(man["head"]["weight"])
            b = np.array(man["head"]["bias"])
            np.testing.assert_allclose(feats.mean((2, 3)) @ w.T + b, logits, atol=1e-3)
            sd = torch.load(out / "soup.pt")
            self.assertIn("classifier.1.weight", sd)

    def test_a_224_recipe_exports_at_224(self):
        """A recipe trained at the dataset's own size (v2) ships a 224 px network that the engine feeds unenlarged."""
        if not dataset_present() or not PRETRAINED.exists():
            self.skipTest(f"{DATASET} or the pretrained MobileNetV2 under ../shared is absent")
        import cv2
        import numpy as np
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "tiny"
            subprocess.run([sys.executable, str(HERE / "run_all.py"), "--out", str(out), "--tiny", "--recipe", "v2"],
                           check=True, cwd=REPO, timeout=600)
            man = json.loads((out / "nephra-kidney.json").read_text())
            self.assertEqual((man["input"]["width"], man["input"]["height"]), (224, 224))
            self.assertEqual(man["preprocessing"]["render_size"], 224)
            self.assertEqual(man["outputs"]["features_shape"], [1280, 7, 7])
            self.assertLessEqual(man["metrics"]["opencv_parity_max_logit_diff"], 1e-4)
            net = cv2.dnn.readNetFromONNX(str(out / man["onnx"]))
            net.setInput(np.full((1, 3, 224, 224), 128, np.float32), "input")
            _, feats = net.forward(["logits", "features"])
            self.assertEqual(feats.shape, (1, 1280, 7, 7))


if __name__ == "__main__":
    unittest.main()
