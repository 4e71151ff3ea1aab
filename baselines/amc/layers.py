"""AMC's "layer t" for each prunable group, its static state features and its input-channel L1 scores.

AMC (He et al., ECCV 2018) prunes the *input* channels of layer t, i.e. the output channels of the layer
before it (spec B.2: the preserve ratio of layer t's input channels). In the suite the unit of pruning is a
Torch-Pruning dependency group (``harness.prune.Group``: a producer's output channels plus everything tied
to them), so one AMC step decides one group, and AMC's layer t is the group's *consumer*: the first
(in execution order) plain conv or linear layer that reads the group's channels on its input side. Depthwise
convs in the group are AMC's "buffer" layers: they are not steps, and their cost follows the group (the
CostModel counts it). A group with several consumers (a residual stream, option ``scope: all``) takes its
shape features from the first consumer and its FLOPs[t] from all of them. A group with no plain consumer
(rare: only depthwise readers) falls back to its producer for the features and to the producer's filter L1
(``harness.prune.channel_l1``) for the channel ranking.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from harness.prune import Group, build_graph, consumer_l1
from harness.prune.groups import consumer_items, execution_order, hooked_forward

STATES = ("paper", "code")
PAPER_FEATURES = ("t", "n", "c", "h", "w", "stride", "k", "flops", "reduced", "rest", "prev_action")
CODE_FEATURES = ("t", "type", "c", "n", "stride", "k", "weights", "reduced", "rest", "prev_action")
DYNAMIC = 3  # reduced, rest, a_{t-1}: the last three columns of both layouts



@dataclass(frozen=True)
class AMCLayer:
    """One AMC step: the group it decides and the shape of its layer t (the group's first consumer)."""

    group: Group
    module: str                  # layer t: the first consumer (or the producer, see the module docstring)
    consumers: tuple[str, ...]   # every plain conv/linear reading the group's channels, in execution order
    kind: str                    # "conv" | "linear"
    n: int                       # output channels / features of layer t
    c: int                       # input channels / features of layer t
    h: int                       # input height of layer t (1 for linear)
    w: int                       # input width of layer t (1 for linear)
    stride: int                  # conv stride (0 for linear, as the official code)
    k: int                       # kernel size (1 for linear)
    weights: int                 # weight count of layer t (the official code's state)
    flops: float                 # FLOPs[t]: base MACs per image of the consumers


def _consumer_items(graph, group: Group, names: dict[nn.Module, str]) -> list:
    return consumer_items(graph, group, names)


def build_layers(model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group], *,
                 graph=None) -> list[AMCLayer]:
    """The AMC layer of every group, in the order of ``groups`` (model order)."""
    graph = graph or build_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    order = execution_order(model, example_input)
    shapes: dict[nn.Module, tuple[tuple[int, ...], float]] = {}  # input shape, MACs per image

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        batch = int(args[0].shape[0])
        if isinstance(m, nn.Conv2d):
            macs = out.numel() / batch * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            macs = out.numel() / batch * m.in_features
        shapes[m] = (tuple(args[0].shape[1:]), shapes.get(m, ((), 0.0))[1] + macs)

    hooked_forward(model, example_input, [m.register_forward_hook(hook) for m in model.modules()
                                          if isinstance(m, (nn.Conv2d, nn.Linear))])
    layers = []
    for group in groups:
        consumers = sorted({names[item.dep.target.module] for item in _consumer_items(graph, group, names)},
                           key=lambda n: (order.get(n, len(order)), n))
        name = consumers[0] if consumers else group.id
        m = model.get_submodule(name)
        in_shape = shapes[m][0]
        if isinstance(m, nn.Conv2d):
            kind, n, c, k, stride = "conv", m.out_channels, m.in_channels, m.kernel_size[0], m.stride[0]
            h, w = int(in_shape[-2]), int(in_shape[-1])
        else:
            kind, n, c, k, stride, h, w = "linear", m.out_features, m.in_features, 1, 0, 1, 1
        flops = sum(shapes[model.get_submodule(cn)][1] for cn in consumers) if consumers else shapes[m][1]
        layers.append(AMCLayer(group=group, module=name, consumers=tuple(consumers), kind=kind, n=int(n), c=int(c),
                               h=h, w=w, stride=int(stride), k=int(k), weights=int(m.weight.numel()),
                               flops=float(flops)))
    return layers


def input_channel_l1(model: nn.Module, example_input: torch.Tensor, layers: Sequence[AMCLayer], *,
                     graph=None) -> dict[str, torch.Tensor]:
    """AMC's channel ranking: per group channel, the L1 of the consumers' input-channel weights.

    The official code ranks layer t's input channels by ``|W|.sum((0, 2, 3))`` (over output channels and
    kernel positions); here summed over every consumer of the group (one, for block-internal groups):
    :func:`harness.prune.consumer_l1`, which l1-random-search (AMC without learning) shares. Float64 CPU
    tensors of length ``group.size`` in the root's channel order.
    """
    return consumer_l1(model, example_input, [la.group for la in layers], graph=graph)


def static_features(layers: Sequence[AMCLayer], state: str = "paper") -> np.ndarray:
    """The static columns of the state, one row per layer, min-max normalised over the network.

    ``paper`` (11-d state): t, n, c, h, w, stride, k, FLOPs[t]; ``code`` (the official 10-d state): t, type
    (0 conv, 1 linear), c, n, stride, k, #weights. A constant column becomes 0 (the official code leaves it
    raw, which can fall outside [0, 1]; the paper scales every feature into [0, 1]).
    """
    if state not in STATES:
        raise ValueError(f"state must be one of {', '.join(STATES)}, got {state!r}")
    rows = []
    for t, la in enumerate(layers):
        if state == "paper":
            rows.append([t, la.n, la.c, la.h, la.w, la.stride, la.k, la.flops])
        else:
            rows.append([t, 0 if la.kind == "conv" else 1, la.c, la.n, la.stride, la.k, la.weights])
    x = np.asarray(rows, dtype=np.float64).reshape(len(layers), -1)
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    return np.where(hi > lo, (x - lo) / span, 0.0)
