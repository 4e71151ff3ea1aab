"""Continuous per-channel multipliers on a network, for searches that score *soft* masks.

:class:`harness.search.SearchEvaluator` zeroes pruned channels (0/1 masks) at the output of every module
that writes them. The constrained-RL pruner's fine-grained variant (``specs/baselines.md`` A.1) trains on
*soft* masks: every channel of a layer is multiplied by its keep-score in [0, 1]. This module resolves, once
per group and through Torch-Pruning's dependency group, which modules write a group's channels (convs,
linears, BN and other per-channel layers, the residual partners), and multiplies their outputs by the
scores with forward hooks. A score of 0 or 1 is then exactly the evaluator's hard mask (and the physical
removal): the consumers of a zeroed channel only ever see zeros.

Written here rather than on top of ``SearchEvaluator``'s private resolver, which is tuned for 0/1 masks
(and owned by another part of the suite); the resolution rule is the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from harness.errors import UserError
from harness.prune.groups import Group, build_graph, tp_group

_OUT_FILTER_FNS = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels, tpf.prune_depthwise_conv_out_channels)
_CHANNEL_FIRST = (ops.TORCH_BATCHNORM, ops.TORCH_INSTANCENORM, ops.TORCH_GROUPNORM, ops.TORCH_PRELU)
_CHANNEL_LAST = (ops.TORCH_LAYERNORM,)


def _channel_dim(m: nn.Module) -> int | None:
    if isinstance(m, (ops.TORCH_CONV,) + _CHANNEL_FIRST):
        return 1
    if isinstance(m, (ops.TORCH_LINEAR,) + _CHANNEL_LAST):
        return -1
    return None


def _out_width(m: nn.Module) -> int:
    for attr in ("out_channels", "out_features", "num_features", "num_channels", "num_parameters"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    if isinstance(m, ops.TORCH_LAYERNORM):
        return int(m.normalized_shape[-1])
    raise UserError(f"cannot mask the output of {type(m).__name__}")


@dataclass
class _Writer:
    name: str
    dim: int
    width: int
    parts: list[tuple[str, torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (gid, local, root idxs)


class ChannelMasker:
    """Multiply the channels of ``groups`` in ``net`` (in place, via hooks) by per-channel scores.

    ``net`` is the network the hooks go on (the caller's copy); ``example_input`` traces it once.
    """

    def __init__(self, net: nn.Module, example_input: torch.Tensor, groups: Sequence[Group]) -> None:
        self.net = net
        self.sizes = {g.id: g.size for g in groups}
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        graph = build_graph(net, example_input.to(device))
        names = {m: n for n, m in net.named_modules()}
        self._writers: dict[str, _Writer] = {}
        for g in groups:
            for item in tp_group(graph, g.id):
                m = item.dep.target.module
                if not isinstance(m, nn.Module) or m not in names:
                    continue
                is_out = item.dep.handler in _OUT_FILTER_FNS or isinstance(m, _CHANNEL_FIRST + _CHANNEL_LAST)
                dim = _channel_dim(m)
                if not is_out or dim is None:
                    continue
                roots = item.root_idxs
                if roots is None or any(r is None for r in roots):
                    raise UserError(f"group {g.id}: cannot map the channels of {names[m]} to the root")
                w = self._writers.setdefault(names[m], _Writer(names[m], dim, _out_width(m)))
                w.parts.append((g.id, torch.as_tensor(list(item.idxs), dtype=torch.long),
                                torch.as_tensor(list(roots), dtype=torch.long)))
        self._handles: list = []

    def masks(self, scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per writer module name, its output multiplier vector (1 where no scored group owns the channel)."""
        for gid, s in scores.items():
            if gid not in self.sizes:
                raise UserError(f"unknown group {gid!r}")
            if torch.as_tensor(s).numel() != self.sizes[gid]:
                raise UserError(f"group {gid}: {torch.as_tensor(s).numel()} scores for {self.sizes[gid]} channels")
        out: dict[str, torch.Tensor] = {}
        for w in self._writers.values():
            parts = [(gid, local, roots) for gid, local, roots in w.parts if gid in scores]
            if not parts:
                continue
            mask = torch.ones(w.width)
            for gid, local, roots in parts:
                mask[local] = torch.as_tensor(scores[gid], dtype=torch.float32).reshape(-1)[roots]
            out[w.name] = mask
        return out

    def apply(self, scores: Mapping[str, torch.Tensor]) -> None:
        """Install the hooks for ``scores`` (removing earlier ones)."""
        self.remove()
        device = next((p.device for p in self.net.parameters()), torch.device("cpu"))
        for name, mask in self.masks(scores).items():
            module = self.net.get_submodule(name)
            self._handles.append(module.register_forward_hook(_hook(mask.to(device), self._writers[name].dim)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _hook(mask: torch.Tensor, dim: int):
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        shape = [1] * out.dim()
        shape[dim if dim >= 0 else out.dim() + dim] = -1
        return out * mask.to(out.dtype).view(shape)
    return hook
