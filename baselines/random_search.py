"""Random search over feasible plans: the control every search method must beat at the same number of candidates.

``random-search``: N candidate plans, each with per-group keep ratios drawn at random and random channels;
``l1-random-search``: the same ratios with the channels chosen by AMC's ranking, the L1 of the consumers'
input-channel weights (AMC without the learning: AMC's action is a per-layer ratio, its channels are the top
of that ranking; ``channels: filter-l1`` ranks by Li et al.'s filter L1 instead). Every candidate is made feasible by the repair the RL
searches use (harness.search: the action wall :func:`max_keep_allowed` while the groups are walked in model
order, then :func:`complete` = projection + fill), scored by the same :class:`SearchEvaluator` on the same
search images, and the best feasible one by search-split accuracy is returned. An RL method that does not
beat this at the same N has learnt nothing the budget repair did not already give.

Evaluation i draws from a numpy Generator seeded with ``seed * 1_000_003 + i``: first one keep ratio
``rho_g ~ U(ratio_low, ratio_high)`` per group (model order), then, for ``random-search``, one random
permutation per group as the channel scores. Group g keeps its top ``round(rho_g * size)`` channels by score
(at least min_keep), capped by the wall given the groups before it. Because every draw depends on (seed, i)
only, a search killed and resumed from its checkpoint (every ``checkpoint_every`` evaluations, fingerprinted by
:mod:`harness.search.checkpoint`) ends with the same plan and the same log.

Writes ``search_log.csv`` (graph-RL's column names where they overlap, so the search figures draw it beside the
RL curves) and records ``search_evaluations``, ``best_evaluation`` and ``best_search_accuracy`` in plan.json's
meta.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from harness.errors import UserError
from harness.io import write_csv
from harness.prune import Group, channel_l1, consumer_l1
from harness.prune.budget import min_keep, reduction
from harness.registry import Keep, PruneContext, register_method
from harness.search import CANDIDATE_MODES, SearchEvaluator, complete, max_keep_allowed
from harness.search import checkpoint as search_checkpoint
from harness.search.subset import search_subset

log = logging.getLogger(__name__)

#: search_log.csv: graph-RL's names (method/search.py LOG_COLUMNS) where they overlap, ``episode`` = evaluation.
LOG_COLUMNS = ("episode", "accuracy", "macs", "params", "macs_reduction", "params_reduction", "feasible",
               "best_accuracy", "projection_dropped", "fill_added", "keep_fraction", "wall_s")
CHANNEL_RANKINGS = ("consumer-l1", "filter-l1")
SEED_STRIDE = 1_000_003  # evaluation i of seed s draws from s * SEED_STRIDE + i (graph-RL's and AMC's episodes too)


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class RandomSearchOptions:
    """Options of ``random-search`` and ``l1-random-search``.

    ``evaluations``: N candidate plans (every preset sets it to the RL methods' episode count; default 1000,
    graph-RL's). ``ratio_low`` / ``ratio_high``: the range of the per-group keep ratios (``ratio_low`` null =
    ``prune.min_keep_fraction``). ``wall_reserve``: the wall's reserve for the later groups
    (:func:`harness.search.max_keep_allowed`; 0 = the spec's min_keep wall). ``fill``: give back the best pruned
    channels while the budget holds (:func:`harness.search.fill`). ``search_images``: score on this fixed subset
    of the search split (graph-RL's, :func:`harness.search.subset.search_subset`; 0 = all of it).
    ``bn_batches`` / ``eval_batch_size``: the evaluator's BN recalibration batches and batch size.
    ``candidate_eval``: ``masked`` or ``pruned`` (:class:`harness.search.SearchEvaluator`'s ``mode``).
    """

    evaluations: int = 1000
    ratio_low: float | None = None
    ratio_high: float = 1.0
    wall_reserve: float = 1.0
    fill: bool = True
    search_images: int = 0
    bn_batches: int = 10
    eval_batch_size: int = 256
    checkpoint_every: int = 8
    # l1-random-search's channel ranking: AMC's (the consumers' input-channel L1, harness.prune.consumer_l1;
    # so that the control differs from AMC only in the learning) or Li et al.'s filter L1 ("filter-l1").
    channels: str = "consumer-l1"
    candidate_eval: str = "pruned"

    def __post_init__(self) -> None:
        if self.candidate_eval not in CANDIDATE_MODES:
            raise UserError(f"random-search option candidate_eval must be one of {', '.join(CANDIDATE_MODES)}, "
                            f"got {self.candidate_eval!r}")
        if self.channels not in CHANNEL_RANKINGS:
            raise UserError(f"random-search option channels must be one of {', '.join(CHANNEL_RANKINGS)}, "
                            f"got {self.channels!r}")
        for name, low in (("evaluations", 1), ("search_images", 0), ("bn_batches", 0), ("eval_batch_size", 1),
                          ("checkpoint_every", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                raise UserError(f"random-search option {name} must be an integer >= {low}, got {v!r}")
        if not isinstance(self.fill, bool):
            raise UserError(f"random-search option fill must be true or false, got {self.fill!r}")
        if not _is_num(self.ratio_high) or not 0.0 < self.ratio_high <= 1.0:
            raise UserError(f"random-search option ratio_high must be in (0, 1], got {self.ratio_high!r}")
        if self.ratio_low is not None:
            if not _is_num(self.ratio_low) or not 0.0 <= self.ratio_low <= self.ratio_high:
                raise UserError(f"random-search option ratio_low must be null or in [0, ratio_high = "
                                f"{self.ratio_high}], got {self.ratio_low!r}")
        if not _is_num(self.wall_reserve) or not 0.0 <= self.wall_reserve <= 1.0:
            raise UserError(f"random-search option wall_reserve must be in [0, 1], got {self.wall_reserve!r}")


def evaluation_seed(seed: int, i: int) -> int:
    return int(seed) * SEED_STRIDE + int(i)


def ratio_bounds(ctx: PruneContext) -> tuple[float, float]:
    """(low, high) of the keep-ratio draws; ``ratio_low`` null is ``prune.min_keep_fraction``."""
    o: RandomSearchOptions = ctx.options
    low = float(ctx.min_keep_fraction if o.ratio_low is None else o.ratio_low)
    if low > o.ratio_high:
        raise UserError(f"random-search: ratio_low ({low:g}, from prune.min_keep_fraction) is above ratio_high "
                        f"({o.ratio_high:g})")
    return low, float(o.ratio_high)


def candidate(ctx: PruneContext, groups: Sequence[Group], i: int, l1: dict[str, torch.Tensor] | None,
              ) -> tuple[dict[str, list[int]], int, int]:
    """Evaluation ``i``'s feasible plan (every group of ``groups``), channels dropped by the projection, added by fill.

    ``l1``: the channel scores of ``l1-random-search``; None draws a random permutation per group.
    """
    o: RandomSearchOptions = ctx.options
    low, high = ratio_bounds(ctx)
    rng = np.random.default_rng(evaluation_seed(ctx.seed, i))
    rho = rng.uniform(low, high, size=len(groups))
    if l1 is None:
        scores = {g.id: torch.as_tensor(rng.permutation(g.size), dtype=torch.float64) for g in groups}
    else:
        scores = {g.id: l1[g.id].double() for g in groups}
    metric, target, fraction = ctx.budget.metric, ctx.budget.target, ctx.min_keep_fraction
    decided: dict[str, int] = {}
    keep: dict[str, torch.Tensor] = {}
    for gi, g in enumerate(groups):
        n = min(g.size, max(min_keep(g, fraction), math.floor(rho[gi] * g.size + 0.5)))
        n = min(n, max_keep_allowed(ctx.cost, groups, decided, gi, metric, target, fraction,
                                    reserve=o.wall_reserve))
        order = torch.argsort(-scores[g.id], stable=True)[:n]  # the n best; ties: the lower index
        keep[g.id] = order.sort().values
        decided[g.id] = n
    out, dropped, added = complete(ctx.cost, groups, keep, scores, metric, target, fraction, fill_up=o.fill)
    return {gid: [int(c) for c in v] for gid, v in out.items()}, int(dropped), int(added)


def _search(ctx: PruneContext, name: str, channel_scores: str) -> Keep:
    o: RandomSearchOptions = ctx.options
    groups = list(ctx.groups)
    if not groups:
        raise UserError(f"{ctx.arch or 'model'} has no prunable group")
    ratio_bounds(ctx)  # a bad range fails before the evaluator loads any data
    workdir = Path(ctx.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits = search_subset(ctx.splits, o.search_images)
    evaluator = SearchEvaluator(ctx.model, splits, ctx.device, bn_batches=o.bn_batches, batch_size=o.eval_batch_size,
                                example_input=ctx.example_input, groups=groups, mode=o.candidate_eval)
    l1 = None
    if channel_scores == "l1":
        rank = consumer_l1 if o.channels == "consumer-l1" else channel_l1
        l1 = rank(ctx.model, ctx.example_input, groups)
    base = ctx.cost.base
    total = sum(g.size for g in groups)

    checkpoint = workdir / "search_state.pt"
    fingerprint = search_checkpoint.fingerprint(
        ctx, name, search_split=splits.search,
        train_split=search_checkpoint.dataset_digest(getattr(splits, "train_plain", None)))
    rows: list[dict[str, Any]] = []
    best: tuple[float, int, Keep] | None = None  # (search accuracy, evaluation, plan)
    start = 0
    state = search_checkpoint.load(checkpoint, fingerprint, name)
    if state is not None:
        rows, best, start = state["rows"], state["best"], int(state["next"])
        log.info("%s: resuming after evaluation %d from %s", name, start, checkpoint)
    for i in range(start, o.evaluations):
        t0 = time.perf_counter()
        keep, dropped, added = candidate(ctx, groups, i, l1)
        size = ctx.cost.cost({gid: len(v) for gid, v in keep.items()})
        red = {"macs": reduction(base.macs, size.macs), "params": reduction(base.params, size.params)}
        feasible = base.reduction_to(size, ctx.budget.metric) >= ctx.budget.target - ctx.budget.tolerance
        acc = float(evaluator.evaluate(keep))
        if feasible and (best is None or acc > best[0]):
            best = (acc, i, keep)
        rows.append({"episode": i, "accuracy": acc, "macs": int(size.macs), "params": int(size.params),
                     "macs_reduction": red["macs"], "params_reduction": red["params"], "feasible": bool(feasible),
                     "best_accuracy": best[0] if best is not None else float("nan"), "projection_dropped": dropped,
                     "fill_added": added, "keep_fraction": sum(len(v) for v in keep.values()) / max(1, total),
                     "wall_s": time.perf_counter() - t0})
        if (i + 1) % o.checkpoint_every == 0 or i + 1 == o.evaluations:
            search_checkpoint.save(checkpoint, fingerprint, {"rows": rows, "best": best, "next": i + 1})
            write_csv(workdir / "search_log.csv", LOG_COLUMNS, rows)
    write_csv(workdir / "search_log.csv", LOG_COLUMNS, rows)
    if best is None:
        raise UserError(f"{name}: none of the {o.evaluations} candidates meets the {ctx.budget.metric} budget "
                        f"of {ctx.budget.target:g} (is it reachable with min_keep {ctx.min_keep_fraction:g}?)")
    acc, index, plan = best
    log.info("%s: best of %d evaluations is #%d, %.2f %% on the search split", name, o.evaluations, index, acc)
    ctx.meta.update({"search_evaluations": int(o.evaluations), "best_evaluation": int(index),
                     "best_search_accuracy": float(acc),
                     "search_images_scored": int(o.evaluations) * evaluator.images_per_candidate})
    return {gid: list(v) for gid, v in plan.items()}


@register_method("random-search", options=RandomSearchOptions, search_log=True,
                 description="N random feasible plans (random per-group ratios and channels, the RL wall and "
                             "projection), the best on the search split: the control for search methods")
def random_search(ctx: PruneContext) -> Keep:
    return _search(ctx, "random-search", "random")


@register_method("l1-random-search", options=RandomSearchOptions, search_log=True,
                 description="N random per-group keep ratios with AMC's channel ranking (AMC without "
                             "learning), the best on the search split")
def l1_random_search(ctx: PruneContext) -> Keep:
    return _search(ctx, "l1-random-search", "l1")
