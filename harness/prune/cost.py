"""Analytic MACs/params of a model for any per-group keep count, without touching the model.

Searches (RL, bisection) ask for the cost of thousands of candidate plans; a forward pass or a pruned copy
per query would dominate them. Channel pruning does not change spatial sizes, so one hooked forward pass
records each conv/linear's output positions, and each layer's input and output widths are affine in the
groups' keep counts (read from the Torch-Pruning groups: which dependency prunes which layer's in/out dim).
Then per layer ``MACs = positions * k * in_eff * out`` and ``params = k * in_eff * out + bias * out``, and
a query is two small matrix-vector products. The count convention is :func:`harness.metrics.complexity`'s
(conv + linear multiply-adds per image, all parameters incl. BN), and the base cost is checked against it.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner import function as tpf

from harness.errors import UserError
from harness.metrics import Complexity, complexity
from harness.prune.groups import Group, build_graph, hooked_forward, tp_group

_CONV_OUT = (tpf.prune_conv_out_channels,)
_CONV_IN = (tpf.prune_conv_in_channels,)
_DW = (tpf.prune_depthwise_conv_out_channels, tpf.prune_depthwise_conv_in_channels)
_LIN_OUT = (tpf.prune_linear_out_channels,)
_LIN_IN = (tpf.prune_linear_in_channels,)


def _vector_channels(m: nn.Module) -> int | None:
    """Width of a per-channel layer (BN, norms, PReLU, embedding), or None when it has no channel axis."""
    if isinstance(m, (ops.TORCH_BATCHNORM, ops.TORCH_INSTANCENORM)):
        return m.num_features
    if isinstance(m, ops.TORCH_GROUPNORM):
        return m.num_channels
    if isinstance(m, ops.TORCH_LAYERNORM):
        return m.normalized_shape[-1]
    if isinstance(m, ops.TORCH_PRELU):
        return m.num_parameters if m.num_parameters > 1 else None
    if isinstance(m, ops.TORCH_EMBED):
        return m.embedding_dim
    return None


class _Unit:
    """One parametrised layer: in/out widths as (constant, {group index: channels per kept group channel})."""

    def __init__(self, name: str, module: nn.Module | None, in_total: float, out_total: float,
                 macs_coef: float, w_coef: float, b_coef: float, fixed_in: bool = False) -> None:
        self.name, self.module = name, module
        self.in_total, self.out_total = in_total, out_total
        self.macs_coef, self.w_coef, self.b_coef = macs_coef, w_coef, b_coef
        self.fixed_in = fixed_in  # depthwise: kernels per filter never change
        self.in_seg: dict[int, int] = {}
        self.out_seg: dict[int, int] = {}


class CostModel:
    """MACs per image and params of ``model`` as if group ``id`` kept ``keep_counts[id]`` channels.

    Built once (one DependencyGraph, one hooked forward); :meth:`cost` is analytic and fast. Groups absent
    from a query keep all their channels.
    """

    def __init__(self, model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group], *,
                 graph=None) -> None:
        self.groups = list(groups)
        self._index = {g.id: i for i, g in enumerate(self.groups)}
        self._full = np.array([g.size for g in self.groups], dtype=np.float64)
        batch = int(example_input.shape[0]) if example_input.dim() > 0 else 1
        graph = graph or build_graph(model, example_input)
        positions = self._positions(model, example_input, batch)
        names = {m: n for n, m in model.named_modules()}

        units: dict[nn.Module, _Unit] = {}
        seen_params: set[int] = set()
        fixed = 0
        for name, m in model.named_modules():
            own = [p for p in m.parameters(recurse=False) if id(p) not in seen_params]
            seen_params.update(id(p) for p in own)
            unit = self._make_unit(name, m, positions.get(m, 0.0), own)
            if unit is None:
                fixed += sum(p.numel() for p in own)
            else:
                units[m] = unit
        # unwrapped nn.Parameters (not owned by a known layer) are counted as fixed above

        for gi, group in enumerate(self.groups):
            for dep, idxs in tp_group(graph, group):
                target = dep.target.module
                if not isinstance(target, nn.Module) or target not in units:
                    if isinstance(target, nn.Parameter):
                        raise UserError(f"group {group.id} prunes a bare parameter; the cost model cannot count it")
                    if isinstance(target, nn.Module) and target in names and any(True for _ in target.parameters(False)):
                        raise UserError(f"group {group.id} prunes {names[target]} ({type(target).__name__}), "
                                        "a layer type the cost model does not support")
                    continue
                unit, n, fn = units[target], len(idxs), dep.handler
                if fn in _CONV_IN or fn in _LIN_IN:
                    unit.in_seg[gi] = unit.in_seg.get(gi, 0) + n
                elif fn in _CONV_OUT or fn in _LIN_OUT or fn in _DW or _vector_channels(target) is not None:
                    unit.out_seg[gi] = unit.out_seg.get(gi, 0) + n

        self._build_arrays(list(units.values()), fixed)
        self.units = list(units.values())
        self.latency = None  # a LatencyTable once attach_latency ran (budget metric "latency")
        self.base = self.cost({})
        measured = complexity(model, tuple(example_input.shape[1:]))
        if not (_close(self.base.macs, measured.macs) and _close(self.base.params, measured.params)):
            raise UserError(f"cost model disagrees with the measured complexity of the unpruned model "
                            f"({self.base} vs {measured}): unsupported layer types?")

    @staticmethod
    @torch.no_grad()
    def _positions(model: nn.Module, example_input: torch.Tensor, batch: int) -> dict[nn.Module, float]:
        """Output positions per image (H*W for conv, tokens for linear; input positions for transposed conv)."""
        pos: dict[nn.Module, float] = {}

        def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if isinstance(m, ops.TORCH_CONV) and m.transposed:
                n = args[0].numel() / (batch * m.in_channels)
            else:
                width = m.out_channels if isinstance(m, ops.TORCH_CONV) else m.out_features
                n = out.numel() / (batch * width)
            pos[m] = pos.get(m, 0.0) + n

        hooked_forward(model, example_input, [m.register_forward_hook(hook) for m in model.modules()
                                              if isinstance(m, (ops.TORCH_CONV, ops.TORCH_LINEAR))])
        return pos

    @staticmethod
    def _make_unit(name: str, m: nn.Module, pos: float, own: list[nn.Parameter]) -> _Unit | None:
        if isinstance(m, ops.TORCH_CONV):
            k = math.prod(m.kernel_size)
            bias = 1.0 if m.bias is not None else 0.0
            if m.transposed:  # weight (in, out/groups, k): MACs = in_positions * in * out/groups * k
                return _Unit(name, m, m.in_channels, m.out_channels, pos * k / m.groups, k / m.groups, bias)
            if m.groups == m.out_channels and m.out_channels > 1:  # depthwise: in/groups is constant
                per = m.in_channels // m.groups
                return _Unit(name, m, per, m.out_channels, pos * k, k, bias, fixed_in=True)
            return _Unit(name, m, m.in_channels / m.groups, m.out_channels, pos * k, k, bias)
        if isinstance(m, ops.TORCH_LINEAR):
            return _Unit(name, m, m.in_features, m.out_features, pos, 1.0, 1.0 if m.bias is not None else 0.0)
        channels = _vector_channels(m)
        if channels is not None and own:
            return _Unit(name, m, 0.0, channels, 0.0, 0.0, sum(p.numel() for p in own) / channels)
        return None

    def _build_arrays(self, units: list[_Unit], fixed: int) -> None:
        n, g = len(units), len(self.groups)
        self._b_in, self._b_out = np.zeros(n), np.zeros(n)
        self._m_in, self._m_out = np.zeros((n, g)), np.zeros((n, g))
        self._mc, self._wc, self._bc = np.zeros(n), np.zeros(n), np.zeros(n)
        self._fixed = float(fixed)
        for i, u in enumerate(units):
            div = 1.0
            m = u.module
            if isinstance(m, ops.TORCH_CONV) and not m.transposed and not u.fixed_in:
                div = float(m.groups)  # in_eff = in / groups
            self._b_in[i] = u.in_total
            if not u.fixed_in:
                for gi, cnt in u.in_seg.items():
                    mult = cnt / self._full[gi] / div
                    self._b_in[i] -= mult * self._full[gi]
                    self._m_in[i, gi] += mult
            self._b_out[i] = u.out_total
            for gi, cnt in u.out_seg.items():
                mult = cnt / self._full[gi]
                self._b_out[i] -= mult * self._full[gi]
                self._m_out[i, gi] += mult
            self._mc[i], self._wc[i], self._bc[i] = u.macs_coef, u.w_coef, u.b_coef

    def keep_vector(self, keep_counts: Mapping[str, int]) -> np.ndarray:
        """Keep counts as an array in group order (missing groups = full size)."""
        keep = self._full.copy()
        for gid, n in keep_counts.items():
            i = self._index.get(gid)
            if i is None:
                raise UserError(f"unknown group {gid!r} in keep counts")
            if not 0 <= n <= self._full[i]:
                raise UserError(f"group {gid!r} keeps {n} of {int(self._full[i])} channels")
            keep[i] = n
        return keep

    def widths(self, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per unit (``self.units`` order): effective input and output width for a keep-count array."""
        return self._b_in + self._m_in @ keep, self._b_out + self._m_out @ keep

    def attach_latency(self, table) -> None:
        """Predict latency too (``Complexity.latency_ms``) with a :class:`~harness.prune.latency_table.LatencyTable`."""
        table.attach(self)
        self.latency = table
        self.base = self.cost({})

    def cost_array(self, keep: np.ndarray) -> Complexity:
        """Cost for a keep-count array in ``self.groups`` order (the fast path for searches)."""
        w_in, w_out = self.widths(keep)
        both = w_in * w_out
        macs = float(self._mc @ both)
        params = self._fixed + float(self._wc @ both) + float(self._bc @ w_out)
        latency = None if self.latency is None else self.latency.predict(w_in, w_out)
        return Complexity(macs=int(round(macs)), params=int(round(params)), latency_ms=latency)

    def cost(self, keep_counts: Mapping[str, int]) -> Complexity:
        """MACs per image and params with ``keep_counts[id]`` channels kept in group ``id``."""
        return self.cost_array(self.keep_vector(keep_counts))

    def reduction(self, keep_counts: Mapping[str, int], metric: str) -> float:
        """Fraction of ``metric`` ("macs" | "params" | "latency") removed by ``keep_counts``."""
        return self.base.reduction_to(self.cost(keep_counts), metric)


def _close(a: int, b: int, rel: float = 1e-6) -> bool:
    return abs(a - b) <= rel * max(abs(a), abs(b), 1)
