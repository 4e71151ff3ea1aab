"""CIFAR MobileNetV2 (Sandler et al. 2018) as in the common CIFAR ports: stride-1 stem and stride 1 in the
second stage (instead of 2 and 2), so a 32x32 input reaches the head at 4x4 rather than 1x1.

Residual connections follow the paper (only when stride is 1 and channels match), unlike ports that add
1x1 projection shortcuts. Layout: ``conv1``/``bn1`` stem, ``blocks.<i>`` inverted residuals with ``expand``,
``dw`` (depthwise), ``project`` convs, ``conv2``/``bn2`` 1x1 head to 1280 ch, ``classifier`` Linear.
"""
from __future__ import annotations

import torch
from torch import nn

from harness.models._util import scale_channels

# (expansion t, output channels c, repeats n, first stride s); strides of the stem and stage 2 set to 1.
CIFAR_CFG: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
)


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when t == 1) -> 3x3 depthwise -> 1x1 linear projection, ReLU6 between."""

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = in_planes * expansion
        self.use_residual = stride == 1 and in_planes == out_planes
        self.expand: nn.Module | None = None
        if expansion != 1:
            self.expand = nn.Conv2d(in_planes, hidden, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(hidden)
            self.relu1 = nn.ReLU6(inplace=True)
        self.dw = nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.relu2 = nn.ReLU6(inplace=True)
        self.project = nn.Conv2d(hidden, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.expand is None else self.relu1(self.bn1(self.expand(x)))
        out = self.bn3(self.project(self.relu2(self.bn2(self.dw(out)))))
        return out + x if self.use_residual else out


class CifarMobileNetV2(nn.Module):
    """MobileNetV2 for small images; ``width`` scales every layer but the 1280-ch head (as torchvision does)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        c_in = scale_channels(32, width)
        last = scale_channels(1280, max(1.0, width))
        self.conv1 = nn.Conv2d(in_channels, c_in, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.relu1 = nn.ReLU6(inplace=True)
        blocks = []
        for t, c, n, s in CIFAR_CFG:
            c_out = scale_channels(c, width)
            for i in range(n):
                blocks.append(InvertedResidual(c_in, c_out, t, s if i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.conv2 = nn.Conv2d(c_in, last, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(last)
        self.relu2 = nn.ReLU6(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(self.blocks(x))))
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def cifar_mobilenetv2(num_classes: int, in_channels: int, width: float = 1.0) -> CifarMobileNetV2:
    """Build ``mobilenetv2``."""
    return CifarMobileNetV2(num_classes=num_classes, in_channels=in_channels, width=width)
