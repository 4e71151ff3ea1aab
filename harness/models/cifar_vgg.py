"""CIFAR VGG-16 with BatchNorm: 13 conv3x3+BN+ReLU in five blocks separated by 2x2 max-pools, one Linear.

The classifier is a single ``Linear(512, classes)`` after global average pooling (the common CIFAR variant,
e.g. Liu et al. 2017 "network slimming" without the hidden FC), which gives 313.20 M MACs and 14.72 M params
at 32x32 / 10 classes. Pools use ``ceil_mode=True`` so 28x28 inputs survive five halvings (28-14-7-4-2-1);
at 32x32 this is identical to the usual floor pooling.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from harness.models._util import scale_channels

# Output channels per block; each block ends in a max-pool.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class CifarVGG(nn.Module):
    """``features`` with readable names (``features.conv3_2``, ``features.bn3_2``, ...), then ``classifier``."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 blocks: tuple[tuple[int, ...], ...] = VGG16_BLOCKS) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        c_in = in_channels
        for b, block in enumerate(blocks, start=1):
            for i, channels in enumerate(block, start=1):
                c_out = scale_channels(channels, width)
                layers[f"conv{b}_{i}"] = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
                layers[f"bn{b}_{i}"] = nn.BatchNorm2d(c_out)
                layers[f"relu{b}_{i}"] = nn.ReLU(inplace=True)
                c_in = c_out
            layers[f"pool{b}"] = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.features = nn.Sequential(layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def cifar_vgg16(num_classes: int, in_channels: int, width: float = 1.0) -> CifarVGG:
    """Build ``vgg16``."""
    return CifarVGG(num_classes=num_classes, in_channels=in_channels, width=width)
