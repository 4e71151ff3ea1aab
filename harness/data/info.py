"""Static facts about each dataset (classes, channels, resolution, normalisation).

Models and cost models need these before any data is loaded, so they live apart from the loaders.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError

DATASETS = ("cifar10", "cifar100", "imagenet", "fashionmnist", "synthetic")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model builder needs to know about a dataset's images and labels."""

    name: str
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
FASHIONMNIST_MEAN = (0.2860,)
FASHIONMNIST_STD = (0.3530,)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The synthetic generator centres pixels on 0.5 with a spread of about 0.25 (see synthetic.py).
SYNTHETIC_MEAN = 0.5
SYNTHETIC_STD = 0.25
SYNTHETIC_DEFAULTS = {"num_classes": 10, "in_channels": 3, "image_size": 16}


def validate_name(name: str) -> str:
    """Reject an unknown dataset name with the list of valid ones (a config typo, not a crash)."""
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}")
    return name


def dataset_info(name: str, image_size: int | None = None) -> DatasetInfo:
    """Facts for ``name``; ``image_size`` overrides the ImageNet crop (and the synthetic side length)."""
    validate_name(name)
    if image_size is not None and (not isinstance(image_size, int) or image_size < 1):
        raise UserError(f"image_size must be a positive integer, got {image_size!r}")
    if name == "cifar10":
        return DatasetInfo(name, 10, 3, 32, CIFAR10_MEAN, CIFAR10_STD)
    if name == "cifar100":
        return DatasetInfo(name, 100, 3, 32, CIFAR100_MEAN, CIFAR100_STD)
    if name == "fashionmnist":
        return DatasetInfo(name, 10, 1, 28, FASHIONMNIST_MEAN, FASHIONMNIST_STD)
    if name == "imagenet":
        return DatasetInfo(name, 1000, 3, image_size or 224, IMAGENET_MEAN, IMAGENET_STD)
    return synthetic_info(
        SYNTHETIC_DEFAULTS["num_classes"],
        SYNTHETIC_DEFAULTS["in_channels"],
        image_size or SYNTHETIC_DEFAULTS["image_size"],
    )


def synthetic_info(num_classes: int, in_channels: int, image_size: int) -> DatasetInfo:
    """The synthetic dataset's facts depend on its config, so they are built here from the three sizes."""
    return DatasetInfo(
        "synthetic",
        num_classes,
        in_channels,
        image_size,
        (SYNTHETIC_MEAN,) * in_channels,
        (SYNTHETIC_STD,) * in_channels,
    )
