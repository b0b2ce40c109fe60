#!/usr/bin/python3
"""PyTorch (Debian's python3-torch, CPU) on the same weights: slices per second.
    /usr/bin/python3 bench/torch_bench.py models/nephra-kidney.pt SLICES THREADS BATCH"""
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from export_onnx import load_deployed  # noqa: E402


def main():
    ckpt, slices, threads, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(threads)
    model = load_deployed(ckpt)
    with torch.no_grad():
        model(torch.rand(batch, 3, 224, 224) * 255)
        t0 = time.perf_counter()
        done = 0
        while done < slices:
            n = min(batch, slices - done)
            model(torch.rand(n, 3, 224, 224) * 255)
            done += n
        secs = time.perf_counter() - t0
    print(json.dumps({"bench": "pytorch", "slices": slices, "threads": threads, "batch": batch, "seconds": secs,
                      "slices_per_s": slices / secs, "version": torch.__version__}))


if __name__ == "__main__":
    main()
