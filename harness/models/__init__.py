"""Model zoo of the benchmark: CIFAR ResNet/VGG/MobileNetV2 built here, ImageNet models from torchvision/timm.

``build_model`` only reads ``num_classes`` and ``in_channels`` from the dataset info (any object with those
attributes), so this package does not depend on :mod:`harness.data`.
"""
from __future__ import annotations

from typing import Any, Protocol

from torch import nn

from harness.errors import UserError
from harness.models._util import check_width
from harness.models.cifar_mobilenetv2 import cifar_mobilenetv2
from harness.models.cifar_resnet import DEPTHS, cifar_resnet
from harness.models.cifar_vgg import cifar_vgg16
from harness.models.hub import (TIMM_PREFIX, TORCHVISION_PREFIX, build_timm, build_torchvision, is_timm,
                                is_torchvision)
from harness.models.planted import PREFIX as PLANTED_PREFIX
from harness.models.planted import build_planted, is_planted

__all__ = ["ARCHS", "CIFAR_ARCHS", "HUB_PREFIXES", "PLANTED_ARCHS", "PLANTED_OPTIONS", "build_model", "classifier",
           "known_arch", "planted_options"]

CIFAR_ARCHS: tuple[str, ...] = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16", "mobilenetv2")
HUB_PREFIXES: tuple[str, ...] = (TORCHVISION_PREFIX, TIMM_PREFIX)
# The planted-ground-truth benchmark (harness/models/planted.py): a trained CIFAR ResNet widened with decoys.
PLANTED_ARCHS: tuple[str, ...] = tuple(PLANTED_PREFIX + name for name in DEPTHS)
#: arch_options of a planted arch and their defaults: ``width`` of the trained inner network, then the
#: :class:`~harness.models.planted.PlantOptions` (the seed is the base seed, not an option)
PLANTED_OPTIONS: dict[str, float] = {"width": 1.0, "decoy_ratio": 1.0, "useful_scale": 0.25, "decoy_norm": 1.0}
# Architectures defined in this package; hub names ("torchvision.<name>", "timm.<name>") are open-ended.
ARCHS: tuple[str, ...] = CIFAR_ARCHS + PLANTED_ARCHS


class _Info(Protocol):
    num_classes: int
    in_channels: int


def known_arch(arch: str) -> bool:
    """True for a CIFAR name or a classification model torchvision/timm can build; never raises."""
    if not isinstance(arch, str):
        return False
    if arch in CIFAR_ARCHS or is_planted(arch):
        return True
    try:
        if arch.startswith(TORCHVISION_PREFIX):
            return is_torchvision(arch[len(TORCHVISION_PREFIX):])
        if arch.startswith(TIMM_PREFIX):
            return is_timm(arch[len(TIMM_PREFIX):])
    except Exception:
        return False
    return False


def _unknown(arch: str) -> UserError:
    return UserError(f"unknown arch {arch!r}: use one of {', '.join(CIFAR_ARCHS)}, "
                     f"planted-resnetN (N in {', '.join(d[len('resnet'):] for d in DEPTHS)}), "
                     f"or torchvision.<name> / timm.<name> (an ImageNet classifier of that library)")


def planted_options(arch: str, options: dict[str, Any]) -> dict[str, float]:
    """The arch_options of a planted arch with defaults filled in; a one-line UserError on a bad one.

    ``pretrained`` is refused (the inner network is trained by the train_base stage)."""
    if options.get("pretrained"):
        raise UserError(f"no pretrained weights for {arch}: its inner network is trained by the train_base stage")
    unknown = sorted(k for k in options if k not in PLANTED_OPTIONS and k != "pretrained")
    if unknown:
        raise UserError(f"unknown option(s) for {arch}: {', '.join(unknown)} "
                        f"(valid values: {', '.join(PLANTED_OPTIONS)})")
    from harness.models.planted import PlantOptions

    out: dict[str, float] = {}
    for key, default in PLANTED_OPTIONS.items():
        value = options.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"option {key} of {arch} must be a number, got {value!r}")
        out[key] = float(value)
    check_width(out["width"])
    PlantOptions(decoy_ratio=out["decoy_ratio"], useful_scale=out["useful_scale"], decoy_norm=out["decoy_norm"])
    return out


def build_model(arch: str, info: _Info, **options: Any) -> nn.Module:
    """Build ``arch`` with random init for ``info.num_classes`` outputs and ``info.in_channels`` inputs.

    CIFAR options: ``width`` (channel multiplier, default 1.0). Planted archs (``planted-resnetN``): the
    widened, untrained shape that :func:`harness.models.planted.plant` fills in, from ``width`` (of the trained
    inner network) and ``decoy_ratio``; ``useful_scale`` and ``decoy_norm`` are accepted (they change
    weights, not the shape). Hub options: ``pretrained`` (default False;
    raises UserError when the weights cannot be loaded), anything else is passed to the library's builder.
    """
    num_classes, in_channels = int(info.num_classes), int(info.in_channels)
    if not known_arch(arch):
        raise _unknown(arch)
    if is_planted(arch):
        opts = planted_options(arch, options)
        return build_planted(arch, num_classes, in_channels, width=opts["width"], decoy_ratio=opts["decoy_ratio"])
    if arch in CIFAR_ARCHS:
        if options.pop("pretrained", False):
            raise UserError(f"no pretrained weights for {arch}: train it with the train_base stage")
        width = check_width(options.pop("width", 1.0))
        if options:
            raise UserError(f"unknown option(s) for {arch}: {', '.join(sorted(options))} (only width)")
        if arch in DEPTHS:
            return cifar_resnet(arch, num_classes, in_channels, width)
        if arch == "vgg16":
            return cifar_vgg16(num_classes, in_channels, width)
        return cifar_mobilenetv2(num_classes, in_channels, width)
    if "width" in options:
        raise UserError(f"option width applies only to {', '.join(CIFAR_ARCHS)}, not {arch}")
    pretrained = bool(options.pop("pretrained", False))
    if arch.startswith(TORCHVISION_PREFIX):
        return build_torchvision(arch[len(TORCHVISION_PREFIX):], num_classes, in_channels, pretrained, **options)
    return build_timm(arch[len(TIMM_PREFIX):], num_classes, in_channels, pretrained, **options)


def classifier(model: nn.Module) -> nn.Module:
    """The final classification layer, which pruning must never shrink on its output side.

    timm models say which it is (``get_classifier``); otherwise it is the last ``nn.Linear`` in module order.
    """
    get = getattr(model, "get_classifier", None)
    if callable(get):
        try:
            head = get()
        except Exception:
            head = None
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()):
            if not isinstance(head, (nn.Linear, nn.Conv2d)):
                inner = [m for m in head.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
                head = inner[-1] if inner else head
            return head
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    if last is None:
        raise UserError(f"{type(model).__name__} has no nn.Linear classifier")
    return last
