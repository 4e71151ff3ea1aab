"""Continuous per-channel multipliers on a network, for searches that score *soft* masks.

:class:`harness.search.SearchEvaluator` zeroes pruned channels (0/1 masks) at the output of every module
that writes them. The constrained-RL pruner's fine-grained variant (``specs/baselines.md`` A.1) trains on
*soft* masks: every channel of a layer is multiplied by its keep-score in [0, 1]. This module multiplies
the outputs of every module that writes a group's channels (convs, linears, BN and other per-channel
layers, the residual partners) by the scores with forward hooks. Which modules those are is resolved once
per group by :class:`harness.search.writers.WriterIndex`, the evaluator's rule too, so a score of 0 or 1 is
exactly the evaluator's hard mask (and the physical removal): the consumers of a zeroed channel only ever
see zeros.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import nn

from harness.errors import UserError
from harness.prune.groups import Group, build_graph
from harness.search.writers import WriterIndex, mask_hook


class ChannelMasker:
    """Multiply the channels of ``groups`` in ``net`` (in place, via hooks) by per-channel scores.

    ``net`` is the network the hooks go on (the caller's copy); ``example_input`` traces it once.
    """

    def __init__(self, net: nn.Module, example_input: torch.Tensor, groups: Sequence[Group]) -> None:
        self.net = net
        self.sizes = {g.id: g.size for g in groups}
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        graph = build_graph(net, example_input.to(device))
        index = WriterIndex(net, graph)
        for g in groups:
            index.resolve(g.id)
        self._writers = {w.name: w for w in index.writers}
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
            self._handles.append(module.register_forward_hook(mask_hook(mask.to(device), self._writers[name].dim)))

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

