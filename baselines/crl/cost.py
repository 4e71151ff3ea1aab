"""The pluggable cost of a terminal state: any function of the pruned network that can be evaluated.

That budgets may be "arbitrary, possibly non-differentiable" functions is the paper's point (abstract), so
the cost is an option: the remaining percentage of params, MACs (analytic, :class:`harness.prune.CostModel`
or the non-zero count of an unstructured plan), measured latency (a physically pruned copy timed with
:func:`harness.metrics.latency`; noisy, so a run with it is not bit-reproducible), or the paper's own count
(``masked-weights``: mask entries kept over the masked convs plus the classifier, A.2). Whatever the cost,
feasibility is always the suite's budget (MACs or params reduction, with its tolerance).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from harness.errors import UserError
from harness.metrics import Complexity, latency
from harness.prune import apply_plan, budget_report
from harness.prune.unstructured import WeightSparsity, sparse_cost
from harness.registry import PruneContext


@dataclass(frozen=True)
class Measure:
    """Size of one candidate: measured ``macs``/``params`` (params = non-zeros for unstructured plans), both
    reductions, ``feasible`` under the suite budget, and ``remaining`` = percent left of the cost's quantity."""

    macs: int
    params: int
    macs_reduction: float
    params_reduction: float
    feasible: bool
    remaining: float
    masked_remaining: float = math.nan
    achieved: float = math.nan  # reduction of the budget's metric


class CostMeter:
    """Measure candidates of one search; ``cost`` is an option of :mod:`baselines.crl.options` (resolved here)."""

    def __init__(self, ctx: PruneContext, cost: str, *, masked_weights: int = 0, latency_batch_size: int = 1,
                 latency_repeats: int = 10) -> None:
        self.ctx = ctx
        # cost "budget" under a latency budget: the latency table's prediction, the quantity feasibility uses
        # (cost "latency" times a pruned copy of every candidate instead)
        self.kind = ("latency-table" if ctx.budget.metric == "latency" else ctx.budget.metric) if cost == "budget" else cost
        self.masked_weights = int(masked_weights)
        if self.kind == "masked-weights" and self.masked_weights < 1:
            raise UserError("cost 'masked-weights' needs the masked layers' weight count")
        self.base = ctx.cost.base
        self._lat = (latency_batch_size, latency_repeats)
        self._shape = tuple(ctx.example_input.shape[1:])
        self.base_latency = self._latency(ctx.model) if self.kind == "latency" else math.nan

    def _latency(self, model) -> float:
        bs, repeats = self._lat
        return float(latency(model, self._shape, self.ctx.device, batch_size=bs, warmup=2, repeats=repeats)["p50_ms"])

    def _measure(self, size: Complexity, remaining: float, masked_remaining: float = math.nan) -> Measure:
        r = budget_report(self.base, size, self.ctx.budget)
        return Measure(r.macs, r.params, r.macs_reduction, r.params_reduction, r.ok, remaining, masked_remaining,
                       r.achieved)

    def _percent(self, size: Complexity) -> float:
        metric = "latency" if self.kind == "latency-table" else self.kind
        return 100.0 * size.value(metric) / self.base.value(metric)

    def structured(self, keep: Mapping[str, Sequence[int]]) -> Measure:
        """A channel plan ({group id: kept root channels}; absent groups whole)."""
        size = self.ctx.cost.cost({gid: len(v) for gid, v in keep.items()})
        if self.kind == "latency":
            model = copy.deepcopy(self.ctx.model).cpu()
            pruned = apply_plan(model, {k: list(map(int, v)) for k, v in keep.items()}, self.ctx.example_input.cpu())
            remaining = 100.0 * self._latency(pruned) / self.base_latency
        elif self.kind == "masked-weights":
            raise UserError("cost 'masked-weights' is for unstructured (crl-layer) plans")
        else:
            remaining = self._percent(size)
        return self._measure(size, remaining)

    def unstructured(self, sparsity: WeightSparsity) -> Measure:
        """A weight-sparsity plan: dense MACs, non-zero params (the pruned weights are non-zero in the base)."""
        size = sparse_cost(self.base, sparsity)
        masked = (100.0 * (1.0 - sparsity.total / self.masked_weights) if self.masked_weights else math.nan)
        if self.kind == "masked-weights":
            remaining = masked
        elif self.kind in ("macs", "latency", "latency-table"):
            raise UserError(f"cost {self.kind!r} cannot be lowered by unstructured pruning")
        else:
            remaining = self._percent(size)
        return self._measure(size, remaining, masked)
