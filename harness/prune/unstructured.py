"""Unstructured (weight-level) sparsity in a plan: per-layer magnitude masks, kept through the fine-tune.

The pipeline is built around physically removed channels. An unstructured method (``crl-layer``) zeroes
weights *inside* layers instead, so its plan keeps every channel and carries, in
``meta["weight_sparsity"]``, how many weights each layer loses. The masks themselves are not stored: they
are recomputed from the base weights (smallest |w| first, ties by flat index), so the plan stays a small
JSON that re-applies to a freshly built base model, exactly like a keep plan.

Counting convention (``docs/crl.md``): such a model's **params are its non-zero parameters** and its
**MACs are dense** (the zeros are still multiplied), so an unstructured plan can meet a params budget but
never a MACs budget. During the fine-tune the masks are held by ``torch.nn.utils.prune`` (a forward
pre-hook computes ``weight = weight_orig * weight_mask``), so the masked weights stay exactly zero;
:func:`make_permanent` folds them in before the model is saved.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from harness.errors import UserError
from harness.metrics import Complexity, complexity

META_KEY = "weight_sparsity"
CRITERIA = ("magnitude",)


@dataclass(frozen=True)
class WeightSparsity:
    """``pruned[name]``: weights zeroed in module ``name``'s ``weight`` (the smallest by |w|); others dense."""

    pruned: Mapping[str, int] = field(default_factory=dict)
    criterion: str = "magnitude"

    def __post_init__(self) -> None:
        if self.criterion not in CRITERIA:
            raise UserError(f"weight sparsity criterion must be one of {', '.join(CRITERIA)}, got {self.criterion!r}")
        clean: dict[str, int] = {}
        for name, n in dict(self.pruned).items():
            if isinstance(n, bool) or int(n) != n or n < 0:
                raise UserError(f"weight sparsity of {name!r} must be a count >= 0, got {n!r}")
            clean[str(name)] = int(n)
        object.__setattr__(self, "pruned", clean)

    @property
    def total(self) -> int:
        """Weights zeroed over all layers."""
        return sum(self.pruned.values())

    def to_dict(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "pruned": dict(self.pruned)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WeightSparsity":
        try:
            return cls(pruned=dict(d["pruned"]), criterion=str(d.get("criterion", "magnitude")))
        except (KeyError, TypeError) as exc:
            raise UserError(f"malformed weight sparsity {d!r}") from exc


def from_meta(meta: Mapping[str, Any]) -> WeightSparsity | None:
    """The plan's weight sparsity (``plan.meta``), or None for a structured plan."""
    d = meta.get(META_KEY)
    return None if d is None else WeightSparsity.from_dict(d)


def sparse_cost(base: Complexity, sparsity: WeightSparsity) -> Complexity:
    """Dense MACs, params minus the zeroed weights (assumes the base weights are non-zero, as trained ones are)."""
    return Complexity(macs=base.macs, params=base.params - sparsity.total)


def magnitude_order(weight: torch.Tensor) -> torch.Tensor:
    """Flat indices of ``weight`` from the smallest |w| to the largest (stable: ties keep index order)."""
    return torch.argsort(weight.detach().abs().reshape(-1).cpu(), stable=True)


def _weight_of(model: nn.Module, name: str) -> torch.Tensor:
    try:
        module = model.get_submodule(name)
    except AttributeError:
        raise UserError(f"weight sparsity names {name!r}, which is not a module of this model") from None
    w = getattr(module, "weight_orig", None)
    if w is None:
        w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        raise UserError(f"weight sparsity names {name!r}, which has no weight")
    return w


def magnitude_masks(model: nn.Module, sparsity: WeightSparsity,
                    orders: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Per named module a float 0/1 mask shaped like its weight: the ``pruned[name]`` smallest |w| are 0.

    ``orders`` (optional) are precomputed :func:`magnitude_order` results of the same weights.
    """
    masks: dict[str, torch.Tensor] = {}
    for name, n in sparsity.pruned.items():
        w = _weight_of(model, name)
        if n > w.numel():
            raise UserError(f"weight sparsity zeroes {n} weights of {name!r}, which has {w.numel()}")
        order = orders[name] if orders is not None and name in orders else magnitude_order(w)
        mask = torch.ones(w.numel(), dtype=w.dtype)
        mask[order[:n]] = 0.0
        masks[name] = mask.view_as(w).to(w.device)
    return masks


def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Hold each module's weight at ``weight_orig * mask`` (``torch.nn.utils.prune``), in place; returns ``model``.

    Zeroes stay zero through any optimiser (the forward only ever sees the masked weight, and the masked
    entries get no gradient through it).
    """
    for name, mask in masks.items():
        module = model.get_submodule(name)
        torch_prune.custom_from_mask(module, "weight", mask.to(_weight_of(model, name).device))
    return model


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into a plain ``weight`` (so the saved module needs no hooks); returns ``model``."""
    for module in model.modules():
        if torch_prune.is_pruned(module) and hasattr(module, "weight_mask"):
            torch_prune.remove(module, "weight")
    return model


def nonzero_params(model: nn.Module) -> int:
    """Non-zero parameters; a masked weight (``weight_orig`` + mask) counts its effective, masked values."""
    total, seen = 0, set()
    for module in model.modules():
        for pname, p in module.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            effective = getattr(module, pname[:-5], None) if pname.endswith("_orig") else None
            total += int((effective if isinstance(effective, torch.Tensor) else p).count_nonzero())
    return total


def sparse_complexity(model: nn.Module, input_shape: tuple[int, int, int]) -> Complexity:
    """Dense MACs and non-zero params of ``model`` (the counting convention of unstructured plans)."""
    dense = complexity(model, input_shape)
    return Complexity(macs=dense.macs, params=nonzero_params(model))


def apply_sparsity(model: nn.Module, sparsity: WeightSparsity) -> nn.Module:
    """Mask ``model`` (unpruned base weights) as the plan's sparsity says; returns ``model``."""
    return apply_masks(model, magnitude_masks(model, sparsity))


__all__ = ["CRITERIA", "META_KEY", "WeightSparsity", "apply_masks", "apply_sparsity", "from_meta",
           "magnitude_masks", "magnitude_order", "make_permanent", "nonzero_params", "sparse_complexity",
           "sparse_cost"]
