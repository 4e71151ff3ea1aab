"""CIFAR ResNet-{20,32,44,56,110} (He et al. 2016, Sec. 4.2) with option-B projection shortcuts.

Option B (1x1 conv + BN where the shape changes) is used instead of the paper's zero-padding option A because a
real conv is a node Torch-Pruning can track: the residual channels then form an ordinary dependency group.
At 32x32 / 10 classes ResNet-56 is 125.75 M MACs and 0.856 M params (option A: 125.49 M / 0.853 M; the two
projections add 0.26 M MACs and 2.75 K params, 0.2 % / 0.3 %).
"""
from __future__ import annotations

import torch
from torch import nn

from harness.models._util import scale_channels

DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet44": 44, "resnet56": 56, "resnet110": 110}


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN with an identity (or 1x1 projection, named ``downsample``) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class CifarResNet(nn.Module):
    """3x3 stem (16 ch), three stages of n BasicBlocks at 16/32/64 ch (strides 1/2/2), global pool, ``fc``.

    Global average pooling is adaptive, so any input size >= 1x1 works (28x28 Fashion-MNIST as well as 32x32).
    """

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 widths: tuple[int, int, int] | None = None) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        # ``widths`` (the three stage widths) overrides ``width``: the planted benchmark's widened copies
        widths = list(widths) if widths is not None else [scale_channels(c, width) for c in (16, 32, 64)]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        in_planes = widths[0]
        stages = []
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(in_planes, planes, stride=2 if (i > 0 and j == 0) else 1))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _init(model: nn.Module) -> None:
    """Kaiming-normal convs and unit BN, as in the reference training setups (random init is all we have offline)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def cifar_resnet(arch: str, num_classes: int, in_channels: int, width: float = 1.0) -> CifarResNet:
    """Build ``resnet20``..``resnet110`` by name."""
    return CifarResNet(DEPTHS[arch], num_classes=num_classes, in_channels=in_channels, width=width)
