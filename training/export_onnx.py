#!/usr/bin/python3
"""Export a trained state_dict to ONNX for OpenCV 4.6 DNN and check OpenCV against torch.

Graph: input `input` [N,3,S,S] float32 = 8-bit gray 0..255 in all 3 channels, S the recipe's deploy size (224, or
336 for a network trained on enlarged slices); /255 and ImageNet mean/std inside; outputs `logits` [N,4] and
`features` [N,1280,S/32,S/32] (last conv map before global average pooling). Opset 10.
    /usr/bin/python3 training/export_onnx.py --checkpoint models/nephra-kidney.pt --onnx models/nephra-kidney.onnx
"""
import argparse

import cv2
import numpy as np
import onnx
import torch

from model import Deployed, build_model, to_input


def load_deployed(checkpoint):
    net = build_model(pretrained=False)
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"), strict=True)
    return Deployed(net.eval()).eval()


def drop_identity(path):
    """Bypass Identity nodes (torch dedups identical initialisers into them; OpenCV 4.6 rejects them)."""
    m = onnx.load(path)
    ids = [n for n in m.graph.node if n.op_type == "Identity"]
    if not ids:
        return 0
    outputs = {o.name for o in m.graph.output}
    for n in ids:
        src, dst = n.input[0], n.output[0]
        if dst in outputs:
            continue
        for other in m.graph.node:
            for i, name in enumerate(other.input):
                if name == dst:
                    other.input[i] = src
        m.graph.node.remove(n)
    onnx.save(m, path)
    return len(ids)


def export(checkpoint, path, res=224):
    model = load_deployed(checkpoint)
    torch.onnx.export(model, torch.full((1, 3, res, res), 128.0), str(path), opset_version=10,
                      input_names=["input"], output_names=["logits", "features"],
                      dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}, "features": {0: "N"}},
                      do_constant_folding=True)
    drop_identity(str(path))
    onnx.checker.check_model(onnx.load(str(path)))
    return model


def opencv_forward(net, x):
    net.setInput(x, "input")
    logits, feats = net.forward(["logits", "features"])
    return logits, feats


def compare(model, path, gray_u8, batches=(1, 8)):
    """Max |logit| and |feature| differences OpenCV vs torch, over all images, for each batch size."""
    net = cv2.dnn.readNetFromONNX(str(path))
    out = {}
    for bs in batches:
        dl = df = 0.0
        for i in range(0, len(gray_u8), bs):
            x = to_input(gray_u8[i:i + bs])
            with torch.no_grad():
                tl, tf = model(x)
            cl, cf = opencv_forward(net, x.numpy())
            assert cl.shape == tuple(tl.shape) and cf.shape == tuple(tf.shape), (cl.shape, cf.shape)
            dl = max(dl, float(np.abs(cl - tl.numpy()).max()))
            df = max(df, float(np.abs(cf - tf.numpy()).max()))
        out[bs] = {"max_logit_diff": dl, "max_feature_diff": df}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--onnx", required=True)
    p.add_argument("--check", type=int, default=100, help="compare on this many committed-split test images")
    p.add_argument("--res", type=int, default=224, help="the network's input size (the recipe's --deploy-res)")
    args = p.parse_args()
    model = export(args.checkpoint, args.onnx, args.res)
    if args.check:
        from augment import resize_all
        from data import load_split
        _, x, _ = load_split("test", args.check)
        print(compare(model, args.onnx, resize_all(x, args.res)))


if __name__ == "__main__":
    main()
