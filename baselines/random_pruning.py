"""Random channel pruning, the floor every criterion must beat (spec: baselines.md C.1, "random filters").

Keep counts are exactly l1-uniform's (same per-group ratio found by bisection), so the only difference to
l1-uniform is which channels are kept: drawn uniformly at random with a numpy Generator seeded by ctx.seed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from baselines.magnitude import check_scope, scope_groups, uniform_keep_counts
from harness.registry import Keep, PruneContext, register_method


@dataclass(frozen=True)
class RandomOptions:
    """scope: "all" (every group) or "internal" (block-internal groups only)."""

    scope: str = "all"

    def __post_init__(self) -> None:
        check_scope(self.scope)


@register_method("random", options=RandomOptions,
                 description="uniform keep ratio as l1-uniform, channels drawn at random (seeded)")
def random_pruning(ctx: PruneContext) -> Keep:
    groups = scope_groups(ctx, ctx.options.scope)
    counts = uniform_keep_counts(ctx, groups)
    rng = np.random.default_rng(ctx.seed)
    keep = {g.id: sorted(int(i) for i in rng.choice(g.size, size=counts[g.id], replace=False))
            for g in groups if counts[g.id] < g.size}
    return ctx.verify(keep, "random")
