"""MobileNetV2 for Nephra: ImageNet weights, a 4-class head that is exactly global-average-pool + Linear(1280, 4)."""
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from paths import SHARED

PRETRAINED = SHARED / "models" / "pretrained" / "mobilenet_v2_imagenet_tf2ptq" / "mobilenet_v2_imagenet_torchvision.pth"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def build_model(pretrained=True, dropout=0.2):
    m = torchvision.models.mobilenet_v2()
    if pretrained:
        m.load_state_dict(torch.load(PRETRAINED, map_location="cpu"), strict=True)
    m.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, 4))
    return m


def pooled(features):
    return F.adaptive_avg_pool2d(features, 1).flatten(1)


class Deployed(nn.Module):
    """What ships: input = 8-bit gray 0..255 replicated to 3 channels; outputs logits [N,4] and features [N,1280,7,7]."""

    def __init__(self, net):
        super().__init__()
        self.features = net.features
        self.fc = net.classifier[1]
        # x/255, then (x - mean)/std, as a per-channel 1x1 conv: OpenCV 4.6 mis-handles a broadcast Mul by a
        # constant once the batch is > 1, a depthwise conv works for every batch size.
        self.norm = nn.Conv2d(3, 3, 1, groups=3, bias=True)
        with torch.no_grad():
            self.norm.weight.copy_((1.0 / (255.0 * torch.tensor(STD))).view(3, 1, 1, 1))
            self.norm.bias.copy_(-torch.tensor(MEAN) / torch.tensor(STD))

    def forward(self, x):
        f = self.features(self.norm(x))
        return self.fc(pooled(f)), f


def to_input(gray_u8):
    """uint8 [N,H,W] numpy → float tensor [N,3,H,W] holding 0..255 (what the deployed graph takes)."""
    x = torch.from_numpy(gray_u8).float().unsqueeze(1)
    return x.expand(-1, 3, -1, -1).contiguous()


def normalise(x255):
    mean = torch.tensor(MEAN).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(STD).view(1, 3, 1, 1) * 255.0
    return (x255 - mean) / std


def forward_all(net, x255):
    """(logits, pooled features) of a training-layout net on 0..255 input."""
    f = net.features(normalise(x255))
    p = pooled(f)
    return net.classifier(p), p
