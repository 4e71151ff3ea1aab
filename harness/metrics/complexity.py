"""MACs and parameter counts, the two budget metrics of every pruning run.

Only convolutions and linear layers are counted (one multiply-add = 1 MAC), the convention of the pruning
literature (ResNet-56 125 M, ResNet-50 4.1 G); BN, activations, pooling, biases and functional matmuls
(e.g. attention scores) are left out. Params are all parameters, BN included.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.nn.modules.conv import _ConvNd


@dataclass(frozen=True)
class Complexity:
    """Per-image cost of a model: ``macs`` (conv + linear multiply-adds) and ``params`` (all parameters).

    ``latency_ms``: batch-1 latency, predicted by a CostModel with a latency table or measured; None when
    neither was asked for (only a ``latency`` budget needs it).
    """

    macs: int
    params: int
    latency_ms: float | None = None

    def value(self, metric: str) -> float:
        """The quantity a budget ``metric`` ("macs" | "params" | "latency") constrains."""
        if metric == "macs":
            return float(self.macs)
        if metric == "params":
            return float(self.params)
        if metric == "latency":
            if self.latency_ms is None:
                raise ValueError("no latency: a latency budget needs the CostModel's latency table "
                                 "(CostModel.attach_latency) or a measured latency")
            return float(self.latency_ms)
        raise ValueError(f"unknown budget metric {metric!r}")

    def reduction_to(self, other: "Complexity", metric: str) -> float:
        """Fraction of this (base) cost's ``metric`` that ``other`` removes."""
        base = self.value(metric)
        return 1.0 - other.value(metric) / base if base else 0.0


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Where and in which float type the model computes, so a probe input matches it (CPU float32 if empty)."""
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.float32


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for a measurement, then each module's own flag back (a frozen-BN submodule stays frozen)."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _conv_macs(m: _ConvNd, inp: torch.Tensor, out: torch.Tensor) -> int:
    kernel = math.prod(m.kernel_size)
    if m.transposed:  # every input element is scattered through a (out/groups x k) kernel slice
        return inp.numel() * (m.out_channels // m.groups) * kernel
    return out.numel() * (m.in_channels // m.groups) * kernel


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out.numel() * m.in_features  # out.numel() = tokens x out_features


def count_params(model: nn.Module) -> int:
    """All (deduplicated) parameters, BN affine included."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def complexity(model: nn.Module, input_shape: tuple[int, int, int]) -> Complexity:
    """MACs of one forward pass of a single ``(C, H, W)`` image, and the parameter count.

    Forward hooks count every call, so a module applied twice is counted twice. The model is put in eval mode
    (batch of 1 with BN in train mode would be fine too, but eval avoids touching running stats).
    """
    device, dtype = model_device_dtype(model)
    total = 0

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, _ConvNd):
            total += _conv_macs(m, args[0], out)
        else:
            total += _linear_macs(m, out)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (_ConvNd, nn.Linear))]
    try:
        with eval_mode(model):
            model(torch.zeros((1, *tuple(input_shape)), device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
    return Complexity(macs=int(total), params=count_params(model))
