"""Physical channel removal with Torch-Pruning, and saving/loading the pruned module.

A plan names groups by root module and lists the kept root channels; Torch-Pruning's group then removes the
complement from every coupled layer (BN, next-layer inputs, residual partners, depthwise convs, the
classifier's input), so the pruned model runs and its measured cost equals the CostModel's prediction.
"""
from __future__ import annotations

import copy
import os
from typing import Mapping, Sequence

import torch
from torch import nn

from harness.errors import CorruptCheckpoint, UserError
from harness.io import torch_save
from harness.prune.plan import PruningPlan, validate_keep


def plan_keep(plan_or_keep: PruningPlan | Mapping[str, Sequence[int]]) -> dict[str, list[int]]:
    if isinstance(plan_or_keep, PruningPlan):
        return plan_or_keep.keep
    return {str(k): [int(i) for i in v] for k, v in plan_or_keep.items()}


def _root_width(model: nn.Module, gid: str) -> int:
    m = model.get_submodule(gid)
    return int(m.out_channels if hasattr(m, "out_channels") else m.out_features)


def apply_plan(model: nn.Module, plan_or_keep: PruningPlan | Mapping[str, Sequence[int]],
               example_input: torch.Tensor) -> nn.Module:
    """Remove, in place, every channel a plan does not keep; returns ``model`` (pruned).

    ``plan_or_keep`` is a :class:`PruningPlan` or ``{group id: kept root channel indices}``; groups not listed
    (or listing every channel) stay whole. One DependencyGraph is built on the unpruned model and each group
    is pruned through it, as Torch-Pruning's own pruners do.
    """
    keep = plan_keep(plan_or_keep)
    sizes: dict[str, int] = {}
    for gid in keep:
        try:
            sizes[gid] = _root_width(model, gid)
        except AttributeError as exc:
            raise UserError(f"plan group {gid!r} is not a conv/linear module of this model") from exc
    for gid, idxs in keep.items():
        validate_keep(gid, idxs, sizes[gid])
    from harness.prune.groups import build_graph, tp_group  # Torch-Pruning: only where a plan is applied

    graph = build_graph(model, example_input)
    for gid, idxs in keep.items():
        if len(idxs) == sizes[gid]:
            continue
        kept = set(idxs)
        drop = [i for i in range(sizes[gid]) if i not in kept]
        tp_group(graph, gid, drop).prune()
    return model


def pruned_copy(model: nn.Module, keep: Mapping[str, Sequence[int]], example_input: torch.Tensor, *,
                memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """A deep copy of ``model`` with the channels ``keep`` drops removed: how a search scores a candidate at
    the pruned network's cost. Torch-Pruning traces the autograd graph, so the surgery runs with grad on
    even inside a search's ``no_grad``/``inference_mode``."""
    net = copy.deepcopy(model)
    if keep:
        with torch.inference_mode(False), torch.enable_grad():
            apply_plan(net, keep, example_input)
        net = net.to(memory_format=memory_format)
    return net


def save_pruned(model: nn.Module, path: str | os.PathLike) -> None:
    """Save the whole pruned module (architecture + weights) atomically, so it reloads without the plan."""
    torch_save(model, path)


def load_pruned(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Load a module written by :func:`save_pruned` (a full pickle: only load files this suite wrote)."""
    try:
        model = torch.load(path, map_location=map_location, weights_only=False)
    except FileNotFoundError:
        raise UserError(f"pruned model {os.fspath(path)} does not exist")
    except Exception as exc:  # truncated or foreign file
        raise CorruptCheckpoint(f"cannot load pruned model {os.fspath(path)}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise CorruptCheckpoint(f"{os.fspath(path)} holds a {type(model).__name__}, not a pruned nn.Module")
    return model
