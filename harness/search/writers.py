"""Which modules write a dependency group's channels: the one resolution rule behind every channel mask.

Masking a pruned channel means scaling it at the output of *every* module that writes it: the group's
conv/linear filters, BN and other per-channel layers, and the residual partners that are added to it.
Torch-Pruning's dependency group of the root layer lists them; :class:`WriterIndex` walks it once per group
and keeps, per writer module, which of its output channels map to which root channels. Its users differ
only in the mask they build from that map: :class:`harness.search.SearchEvaluator` 0/1 masks (hard pruning
without surgery), :class:`harness.search.channel_masks.ChannelMasker` continuous keep-scores (crl-neuron's
soft masks). Both then multiply the outputs with :func:`mask_hook`.
"""
from __future__ import annotations

import torch
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from harness.errors import UserError
from harness.prune.groups import tp_group

# handlers that remove a conv/linear's output channels (its filters)
_OUT_FILTER_FNS = (tpf.prune_conv_out_channels, tpf.prune_linear_out_channels, tpf.prune_depthwise_conv_out_channels)
# per-channel layers: whatever handler touches them, the channel is in their output
_CHANNEL_FIRST = (ops.TORCH_BATCHNORM, ops.TORCH_INSTANCENORM, ops.TORCH_GROUPNORM, ops.TORCH_PRELU)
_CHANNEL_LAST = (ops.TORCH_LAYERNORM,)


def channel_dim(m: nn.Module) -> int | None:
    """Axis of the output that holds the channels, or None when ``m`` does not write channels we can mask."""
    if isinstance(m, (ops.TORCH_CONV,) + _CHANNEL_FIRST):
        return 1
    if isinstance(m, (ops.TORCH_LINEAR,) + _CHANNEL_LAST):
        return -1
    return None


def out_width(m: nn.Module) -> int:
    """Number of output channels of a writer module."""
    for attr in ("out_channels", "out_features", "num_features", "num_channels", "num_parameters"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    if isinstance(m, ops.TORCH_LAYERNORM):
        return int(m.normalized_shape[-1])
    raise UserError(f"cannot mask the output of {type(m).__name__}")


class Writer:
    """One module that writes (some of) the channels of one or more groups.

    ``parts``: per group, ``(group id, local output indices, root channel indices)``: output channel
    ``local[i]`` of this module is root channel ``roots[i]`` of the group.
    """

    __slots__ = ("module", "name", "dim", "width", "parts")

    def __init__(self, module: nn.Module, name: str, dim: int, width: int) -> None:
        self.module, self.name, self.dim, self.width = module, name, dim, width
        self.parts: list[tuple[str, torch.Tensor, torch.Tensor]] = []


class WriterIndex:
    """Resolves, once per group id and lazily, the writers of a group's channels in ``net``.

    ``graph`` is Torch-Pruning's dependency graph traced on ``net`` (the same module objects: moving ``net``
    to another device afterwards keeps them). A module written by several groups is one :class:`Writer`
    with one part per group.
    """

    def __init__(self, net: nn.Module, graph) -> None:
        self._graph = graph
        self._names = {m: n for n, m in net.named_modules()}
        self._groups: dict[str, list[Writer]] = {}
        self._writers: dict[nn.Module, Writer] = {}

    @property
    def writers(self) -> list[Writer]:
        """Every writer resolved so far, in the order first seen."""
        return list(self._writers.values())

    def resolve(self, gid: str) -> list[Writer]:
        """The writers of group ``gid``'s channels (in Torch-Pruning's group order, each once)."""
        if gid in self._groups:
            return self._groups[gid]
        writers: list[Writer] = []
        for item in tp_group(self._graph, gid):
            m = item.dep.target.module
            if not isinstance(m, nn.Module) or m not in self._names:
                continue
            is_out = item.dep.handler in _OUT_FILTER_FNS or isinstance(m, _CHANNEL_FIRST + _CHANNEL_LAST)
            dim = channel_dim(m)
            if not is_out or dim is None:
                continue
            roots = item.root_idxs
            if roots is None or any(r is None for r in roots):
                raise UserError(f"group {gid}: cannot map the channels of {self._names[m]} to the root")
            w = self._writers.get(m)
            if w is None:
                w = self._writers[m] = Writer(m, self._names[m], dim, out_width(m))
            w.parts.append((gid, torch.as_tensor(list(item.idxs), dtype=torch.long),
                            torch.as_tensor(list(roots), dtype=torch.long)))
            if w not in writers:
                writers.append(w)
        self._groups[gid] = writers
        return writers


def mask_hook(mask: torch.Tensor, dim: int):
    """A forward hook multiplying a module's output by ``mask`` along the channel axis ``dim``."""
    def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        shape = [1] * out.dim()
        shape[dim if dim >= 0 else out.dim() + dim] = -1
        return out * mask.to(out.dtype).view(shape)
    return hook
