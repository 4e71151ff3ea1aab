"""L1-norm filter pruning at a MACs/params target (spec: baselines.md C.1-C.3).

``l1-uniform``: Li et al. (ICLR 2017) adapted to a target: one keep ratio r for every group in scope, the
top ``round(r * size)`` channels by group L1 kept in each, r found by bisection on the CostModel so the
reduction is at least the target and as close to it as the ratio's granularity allows.

``l1-global``: one global ranking of per-group-normalised L1 scores (Torch-Pruning's global pruning, default
normaliser "mean"), a per-group cap ``max_ratio`` on the fraction removed; the lowest-scored channels are
removed until the budget holds (bisection on the length of the removal prefix).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from harness.errors import UserError
from harness.prune import Group, channel_l1, check_reachable
from harness.registry import Keep, PruneContext, register_method

NORMALIZERS = ("mean", "max", "sum", "none")


def check_scope(scope: str) -> None:
    if scope not in ("all", "internal"):
        raise UserError(f"scope must be 'all' or 'internal', got {scope!r}")


@dataclass(frozen=True)
class UniformOptions:
    """scope: "all" (every group, residual streams included, DepGraph-style) or "internal" (Li et al.)."""

    scope: str = "all"

    def __post_init__(self) -> None:
        check_scope(self.scope)


@dataclass(frozen=True)
class GlobalOptions:
    """scope as l1-uniform; max_ratio caps the fraction removed from any group; normalizer per group."""

    scope: str = "all"
    max_ratio: float = 0.9
    normalizer: str = "mean"

    def __post_init__(self) -> None:
        check_scope(self.scope)
        if isinstance(self.max_ratio, bool) or not isinstance(self.max_ratio, (int, float)) \
                or not 0.0 < self.max_ratio <= 1.0:
            raise UserError(f"max_ratio must be in (0, 1], got {self.max_ratio!r}")
        if self.normalizer not in NORMALIZERS:
            raise UserError(f"normalizer must be one of {', '.join(NORMALIZERS)}, got {self.normalizer!r}")


def scope_groups(ctx: PruneContext, scope: str) -> list[Group]:
    """The context's groups a method may prune under ``scope`` (model order)."""
    check_scope(scope)
    groups = [g for g in ctx.groups if scope == "all" or not g.residual]
    if not groups:
        raise UserError(f"{ctx.arch or 'model'} has no prunable group in scope {scope!r}")
    return groups


def _achieved(ctx: PruneContext, counts: dict[str, int]) -> float:
    return ctx.cost.reduction(counts, ctx.budget.metric)


def uniform_keep_counts(ctx: PruneContext, groups: Sequence[Group], iters: int = 60) -> dict[str, int]:
    """Keep counts ``clamp(round(r * size), min_keep, size)`` for the largest ratio r meeting the budget.

    Reduction is non-increasing in r, so bisection keeps ``reduction(lo) >= target > reduction(hi)``.
    If even r = 0 (every group at min_keep) misses the target but is within tolerance, r = 0 is returned;
    beyond tolerance a one-line UserError names the reachable maximum.
    """
    check_reachable(ctx.cost, groups, ctx.budget, ctx.min_keep_fraction, ctx.arch)
    floors = {g.id: ctx.min_keep(g) for g in groups}

    def counts(r: float) -> dict[str, int]:
        return {g.id: min(g.size, max(floors[g.id], math.floor(r * g.size + 0.5))) for g in groups}

    target = ctx.budget.target
    lo, hi = 0.0, 1.0
    if _achieved(ctx, counts(lo)) < target:
        return counts(lo)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if _achieved(ctx, counts(mid)) >= target:
            lo = mid
        else:
            hi = mid
    return counts(lo)


def top_channels(score: torch.Tensor, k: int) -> list[int]:
    """Indices of the k highest scores, sorted (ties: the lower index wins)."""
    order = torch.argsort(-score.double(), stable=True)[:k]
    return sorted(int(i) for i in order)


@register_method("l1-uniform", options=UniformOptions,
                 description="Li et al. L1 filter pruning, one keep ratio for all groups, bisected to the target")
def l1_uniform(ctx: PruneContext) -> Keep:
    groups = scope_groups(ctx, ctx.options.scope)
    counts = uniform_keep_counts(ctx, groups)
    l1 = channel_l1(ctx.model, ctx.example_input, groups)
    keep = {g.id: top_channels(l1[g.id], counts[g.id]) for g in groups if counts[g.id] < g.size}
    return ctx.verify(keep, "l1-uniform")


def normalize(score: torch.Tensor, normalizer: str) -> torch.Tensor:
    """Torch-Pruning's per-group normalisers (a zero denominator leaves the scores unscaled)."""
    score = score.double()
    if normalizer == "none":
        return score
    denom = {"mean": score.mean(), "max": score.max(), "sum": score.sum()}[normalizer]
    return score / denom if float(denom) > 0 else score


@register_method("l1-global", options=GlobalOptions,
                 description="global ranking of group-normalised L1 scores with a per-group max prune ratio")
def l1_global(ctx: PruneContext) -> Keep:
    opts: GlobalOptions = ctx.options
    groups = scope_groups(ctx, opts.scope)
    l1 = channel_l1(ctx.model, ctx.example_input, groups)
    floors = [max(ctx.min_keep(g), math.ceil((1.0 - opts.max_ratio) * g.size - 1e-9)) for g in groups]

    # removal candidates: each group's channels in ascending score, minus its protected top `floor`
    scores, owner, chan = [], [], []
    for gi, (g, floor) in enumerate(zip(groups, floors)):
        s = normalize(l1[g.id], opts.normalizer)
        order = torch.argsort(s, stable=True)[: g.size - floor]
        scores.append(s[order].numpy())
        owner.append(np.full(len(order), gi))
        chan.append(order.numpy())
    scores_a, owner_a, chan_a = np.concatenate(scores), np.concatenate(owner), np.concatenate(chan)
    rank = np.lexsort((chan_a, owner_a, scores_a))  # by score, then group, then channel: deterministic
    owner_a, chan_a = owner_a[rank], chan_a[rank]
    sizes = np.array([g.size for g in groups])

    def counts(k: int) -> dict[str, int]:
        kept = sizes - np.bincount(owner_a[:k], minlength=len(groups))
        return {g.id: int(n) for g, n in zip(groups, kept)}

    target, n = ctx.budget.target, len(owner_a)
    reachable = _achieved(ctx, counts(n))
    if reachable < target - ctx.budget.tolerance:
        raise UserError(f"{ctx.arch or 'model'} cannot reach a {ctx.budget.metric} reduction of {target:g} with "
                        f"l1-global (max_ratio {opts.max_ratio:g}, min_keep {ctx.min_keep_fraction:g}): "
                        f"at most {reachable:.4f}")
    lo, hi = 0, n  # smallest k with achieved(k) >= target (or n when only within tolerance)
    while lo < hi:
        mid = (lo + hi) // 2
        if _achieved(ctx, counts(mid)) >= target:
            hi = mid
        else:
            lo = mid + 1
    removed: dict[int, set[int]] = {}
    for gi, c in zip(owner_a[:lo], chan_a[:lo]):
        removed.setdefault(int(gi), set()).add(int(c))
    keep = {groups[gi].id: [i for i in range(groups[gi].size) if i not in drop] for gi, drop in removed.items()}
    return ctx.verify(keep, "l1-global")
