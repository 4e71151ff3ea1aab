"""What one step of the constrained-RL environment decides, and what the agent sees of it (A.1, A.2).

``crl-layer`` (coarse) steps over the conv layers in ``model.modules()`` order, as the official code steps
over its ``MaskedConv2d`` layers: shortcut convs (plain ``nn.Conv2d`` there) are skipped, the classifier is
never pruned. ``crl-neuron`` (fine) steps over the suite's dependency groups (A.9.9: the code masks filters
without respecting residual coupling; a group prunes coupled channels together, so the plan is physical).
The observation features are the code's: in/out channels, kernel, stride and padding of the step's layer
(for a group, of its root layer), after the step index.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from torch import nn

from harness.errors import UserError
from harness.prune.groups import Group


@dataclass(frozen=True)
class Unit:
    """One step: ``name`` (group id or module name), ``size`` (channels or weights), layer ``features``."""

    name: str
    size: int
    features: tuple[float, ...]


def _pair(v: object, default: int) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    if isinstance(v, (tuple, list)) and v and all(isinstance(i, int) for i in v):
        return (int(v[0]), int(v[1] if len(v) > 1 else v[0]))
    return (default, default)  # e.g. padding="same"


def layer_features(m: nn.Module) -> tuple[float, ...]:
    """(in, out, kernel h, kernel w, stride h, stride w, padding h, padding w) of a conv or linear layer."""
    if isinstance(m, nn.modules.conv._ConvNd):
        k, s, p = _pair(m.kernel_size, 1), _pair(m.stride, 1), _pair(m.padding, 0)
        return (float(m.in_channels), float(m.out_channels), *map(float, k), *map(float, s), *map(float, p))
    if isinstance(m, nn.Linear):
        return (float(m.in_features), float(m.out_features), 1.0, 1.0, 1.0, 1.0, 0.0, 0.0)
    raise UserError(f"cannot describe a {type(m).__name__} layer")


def neuron_units(model: nn.Module, groups: Sequence[Group]) -> list[Unit]:
    """One unit per dependency group (model order), described by its root layer."""
    if not groups:
        raise UserError("the model has no prunable group")
    return [Unit(g.id, g.size, layer_features(model.get_submodule(g.id))) for g in groups]


def layer_units(model: nn.Module, skip: Sequence[str]) -> list[Unit]:
    """One unit per conv layer in module order, less those whose name contains a ``skip`` entry."""
    units = [Unit(name, m.weight.numel(), layer_features(m)) for name, m in model.named_modules()
             if isinstance(m, nn.modules.conv._ConvNd) and not any(s in name for s in skip)]
    if not units:
        raise UserError(f"the model has no conv layer to prune (skip_layers={list(skip)})")
    return units


def classifier_weights(model: nn.Module) -> int:
    """Weights of the last linear layer (masked but never pruned in the code: in its sparsity denominator)."""
    last = None
    for m in model.modules():
        if isinstance(m, nn.Linear):
            last = m
    return 0 if last is None else int(last.weight.numel())
