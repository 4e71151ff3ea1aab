"""ImageNet-style models by name from torchvision (``torchvision.<name>``) and timm (``timm.<name>``).

Random init by default: the benchmark machines may be offline, so pretrained weights are opt-in and a failed
download becomes a one-line :class:`~harness.errors.UserError` instead of a network traceback.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from harness.errors import UserError

TORCHVISION_PREFIX = "torchvision."
TIMM_PREFIX = "timm."


def _one_line(exc: BaseException) -> str:
    """First line of an exception, so nested download errors stay on one line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def torchvision_names() -> list[str]:
    """Classification models only: detection/segmentation/video builders do not fit an image classifier run."""
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def is_torchvision(name: str) -> bool:
    return name in torchvision_names()


def is_timm(name: str) -> bool:
    """``timm.is_model`` also accepts pretrained tags such as ``resnet18.a1_in1k``."""
    import timm

    return bool(timm.is_model(name))


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, new)


def _adapt_input_channels(model: nn.Module, in_channels: int, keep_weights: bool) -> None:
    """torchvision builders are RGB-only: swap the first conv for one with ``in_channels`` inputs.

    With pretrained weights the RGB kernels are folded (summed for 1 channel, tiled and rescaled otherwise, as
    timm does), so a grey-scale model starts from the pretrained filters rather than from scratch.
    """
    for name, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            break
    else:
        raise UserError("model has no Conv2d to adapt to in_channels != 3")
    if conv.in_channels == in_channels:
        return
    new = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                    conv.groups, conv.bias is not None, conv.padding_mode)
    if keep_weights and conv.groups == 1:
        with torch.no_grad():
            w = conv.weight
            if in_channels == 1:
                new.weight.copy_(w.sum(dim=1, keepdim=True))
            else:
                reps = -(-in_channels // w.shape[1])
                new.weight.copy_(w.repeat(1, reps, 1, 1)[:, :in_channels] * (w.shape[1] / in_channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
    _set_submodule(model, name, new.to(conv.weight.device, conv.weight.dtype))


def _replace_last_linear(model: nn.Module, num_classes: int) -> None:
    """Pretrained torchvision weights come with a 1000-way head; swap it for a fresh ``num_classes`` one."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = (name, m)
    if last is None:
        raise UserError("model has no Linear classifier to resize")
    name, m = last
    if m.out_features != num_classes:
        _set_submodule(model, name, nn.Linear(m.in_features, num_classes, bias=m.bias is not None))


def build_torchvision(name: str, num_classes: int, in_channels: int, pretrained: bool = False,
                      **options: Any) -> nn.Module:
    """``torchvision.models.get_model`` with random init (or DEFAULT weights when ``pretrained``)."""
    import torchvision

    arch = TORCHVISION_PREFIX + name
    try:
        if pretrained:
            try:
                model = torchvision.models.get_model(name, weights="DEFAULT", **options)
            except Exception as exc:  # offline, missing cache, no weights for this model
                raise UserError(f"cannot load pretrained weights for {arch}: {_one_line(exc)}") from None
            _replace_last_linear(model, num_classes)
        else:
            model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)
    except TypeError as exc:
        raise UserError(f"bad options for {arch}: {_one_line(exc)}") from None
    if in_channels != 3:
        _adapt_input_channels(model, in_channels, keep_weights=pretrained)
    return model


def build_timm(name: str, num_classes: int, in_channels: int, pretrained: bool = False,
               **options: Any) -> nn.Module:
    """``timm.create_model``; timm itself resizes the head and folds the stem for ``in_chans``."""
    import timm

    arch = TIMM_PREFIX + name
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels,
                                 **options)
    except TypeError as exc:
        raise UserError(f"bad options for {arch}: {_one_line(exc)}") from None
    except Exception as exc:
        if pretrained:
            raise UserError(f"cannot load pretrained weights for {arch}: {_one_line(exc)}") from None
        raise
