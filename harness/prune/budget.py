"""The pruning budget: what a run must remove, and the check that it did.

A budget is a target *reduction* (fraction removed) of MACs, params or batch-1 latency (predicted during a
search by a latency table, measured on the final plan: harness.prune.latency_table). Every plan is checked against it
before it is written: a plan that misses its target is an error, never a result.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Iterable

from harness.errors import BudgetNotMet, UserError
from harness.metrics import Complexity

if TYPE_CHECKING:  # pragma: no cover
    from harness.prune.cost import CostModel
    from harness.prune.groups import Group

METRICS = ("macs", "params", "latency")


@dataclass(frozen=True)
class Budget:
    """Remove ``target`` (a fraction in (0, 1)) of the model's ``metric``; ``tolerance`` is the allowed shortfall."""

    metric: str
    target: float
    tolerance: float = 0.01

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise UserError(f"budget metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if isinstance(self.target, bool) or not isinstance(self.target, (int, float)) or not 0.0 < self.target < 1.0:
            raise UserError(f"budget target must be a fraction removed in (0, 1), got {self.target!r}")
        if isinstance(self.tolerance, bool) or not isinstance(self.tolerance, (int, float)) \
                or not 0.0 <= self.tolerance < 1.0:
            raise UserError(f"budget tolerance must be in [0, 1), got {self.tolerance!r}")
        object.__setattr__(self, "target", float(self.target))
        object.__setattr__(self, "tolerance", float(self.tolerance))

    def to_dict(self) -> dict:
        return {"metric": self.metric, "target": self.target, "tolerance": self.tolerance}

    @classmethod
    def from_dict(cls, d: dict) -> "Budget":
        return cls(d["metric"], d["target"], d.get("tolerance", 0.01))


@dataclass(frozen=True)
class BudgetReport:
    """Base and pruned cost, both reductions, and whether the budget's metric meets its target."""

    base_macs: int
    macs: int
    base_params: int
    params: int
    macs_reduction: float
    params_reduction: float
    achieved: float
    target: float
    ok: bool
    latency_reduction: float | None = None

    def achieved_dict(self) -> dict:
        """The ``achieved`` block of plan.json."""
        d = asdict(self)
        keys = ("base_macs", "macs", "base_params", "params", "macs_reduction", "params_reduction")
        return {k: d[k] for k in keys + (("latency_reduction",) if self.latency_reduction is not None else ())}


def reduction(base: int, value: int) -> float:
    return 1.0 - value / base if base else 0.0


def budget_report(base: Complexity, pruned: Complexity, budget: Budget) -> BudgetReport:
    """The report without raising (for searches that compare candidates)."""
    macs_red = reduction(base.macs, pruned.macs)
    params_red = reduction(base.params, pruned.params)
    achieved = base.reduction_to(pruned, budget.metric)
    latency_red = (base.reduction_to(pruned, "latency")
                   if base.latency_ms is not None and pruned.latency_ms is not None else None)
    return BudgetReport(
        base_macs=int(base.macs), macs=int(pruned.macs), base_params=int(base.params), params=int(pruned.params),
        macs_reduction=macs_red, params_reduction=params_red, achieved=achieved, target=budget.target,
        ok=achieved >= budget.target - budget.tolerance - 1e-12, latency_reduction=latency_red,
    )


def check_budget(base: Complexity, pruned: Complexity, budget: Budget) -> BudgetReport:
    """Report, or raise :class:`BudgetNotMet` when the achieved reduction is below ``target - tolerance``."""
    report = budget_report(base, pruned, budget)
    if not report.ok:
        raise BudgetNotMet(
            f"{budget.metric} reduction {report.achieved:.4f} misses the target {budget.target:g} "
            f"(tolerance {budget.tolerance:g})"
        )
    return report


def check_written_plan(base: Complexity, pruned: Complexity, budget: Budget, meta: dict) -> BudgetReport:
    """Re-check a written plan in a later stage: MACs and params as measured now; a latency plan from the
    prune job's own timing (``meta``: ``latency_base_ms``, ``latency_pruned_ms``, ``latency_check_tolerance``),
    since a later job on another device, or sharing the machine, cannot re-time it comparably."""
    if budget.metric != "latency":
        return check_budget(base, pruned, budget)
    return check_budget(replace(base, latency_ms=float(meta["latency_base_ms"])),
                        replace(pruned, latency_ms=float(meta["latency_pruned_ms"])),
                        Budget("latency", budget.target, tolerance=float(meta["latency_check_tolerance"])))


def min_keep(group: "Group", fraction: float = 0.1) -> int:
    """Channels a group must keep: ``max(1, ceil(fraction * size))`` (a 1e-9 guard absorbs float noise)."""
    return max(1, min(group.size, math.ceil(fraction * group.size - 1e-9)))


def max_reachable_reduction(cost_model: "CostModel", groups: Iterable["Group"], metric: str,
                            min_keep_fraction: float) -> float:
    """The reduction of ``metric`` when every group in ``groups`` is cut to its min_keep (others whole)."""
    if metric not in METRICS:
        raise UserError(f"budget metric must be one of {', '.join(METRICS)}, got {metric!r}")
    floor = cost_model.cost({g.id: min_keep(g, min_keep_fraction) for g in groups})
    return cost_model.base.reduction_to(floor, metric)


def check_reachable(cost_model: "CostModel", groups: Iterable["Group"], budget: Budget, min_keep_fraction: float,
                    arch: str = "model") -> float:
    """Reject, before any work, a target the architecture cannot reach with min_keep channels per group.

    Returns the reachable maximum; raises :class:`UserError` when it is below ``target - tolerance``.
    """
    reachable = max_reachable_reduction(cost_model, groups, budget.metric, min_keep_fraction)
    if reachable < budget.target - budget.tolerance:
        raise UserError(
            f"{arch or 'model'} cannot reach a {budget.metric} reduction of {budget.target:g}: keeping "
            f"{min_keep_fraction:g} of every group removes at most {reachable:.4f}"
        )
    return reachable
