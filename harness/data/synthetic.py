"""A generated dataset that needs no files and is learnable, so the whole pipeline can run anywhere.

Each class has a fixed smooth random prototype (seeded, shared by train and test); an image is its
class prototype, circularly shifted by a few pixels, plus per-pixel noise. A tiny CNN separates the
classes well above chance within a few hundred steps, without saturating (noise + shifts).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

PROTOTYPE_SEED = 20240601
TRAIN_SEED = 1
TEST_SEED = 2
# Prototype weight (prototypes have unit std). 0.35 is hard enough that a tiny CNN is at ~75% after
# 300 steps and still improving, so pruned models of different quality do not all saturate at 100%.
SIGNAL = 0.35
NOISE = (1.0 - SIGNAL**2) ** 0.5  # SIGNAL**2 + NOISE**2 = 1 keeps the pixel spread near SYNTHETIC_STD


def prototypes(num_classes: int, channels: int, size: int) -> torch.Tensor:
    """(K, C, S, S) smooth patterns with zero mean and unit std each, fixed for a given shape."""
    gen = torch.Generator().manual_seed(PROTOTYPE_SEED)
    coarse = torch.randn(num_classes, channels, max(2, size // 4), max(2, size // 4), generator=gen)
    smooth = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    flat = smooth.reshape(num_classes, -1)
    flat = (flat - flat.mean(1, keepdim=True)) / flat.std(1, keepdim=True).clamp_min(1e-6)
    return flat.reshape(num_classes, channels, size, size)


def generate(
    n: int, num_classes: int, channels: int, size: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uint8 images (N, C, S, S) and balanced int64 labels; same arguments give the same bytes."""
    from .info import SYNTHETIC_MEAN, SYNTHETIC_STD

    protos = prototypes(num_classes, channels, size)
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    max_shift = max(1, size // 8)
    dy = torch.randint(-max_shift, max_shift + 1, (n,), generator=gen)
    dx = torch.randint(-max_shift, max_shift + 1, (n,), generator=gen)
    ar = torch.arange(size)
    rows = (ar[None, :] - dy[:, None]) % size  # (N, S): circular shift by dy
    cols = (ar[None, :] - dx[:, None]) % size
    base = protos[labels]  # (N, C, S, S)
    shifted = base[
        torch.arange(n)[:, None, None, None],
        torch.arange(channels)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]
    noise = torch.randn(n, channels, size, size, generator=gen)
    pixels = SYNTHETIC_MEAN + SYNTHETIC_STD * (SIGNAL * shifted + NOISE * noise)
    images = (pixels.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    return images, labels.to(torch.int64)
