"""The budget wall during an episode and the projection at its end (spec decision 5; AMC's action wall).

Both make every terminal state of an RL pruner feasible by construction: the wall caps the current group's
keep count so that the remaining groups can still meet the target; the projection repairs whatever is left
by dropping the globally least useful channels. They only query the analytic CostModel, so they cost
microseconds per step.

Two additions (issue 12, each a knob of the callers, the spec's behaviour at 0 / off):

* ``reserve`` of :func:`max_keep_allowed`: the spec's wall assumes every later group can be cut to its
  min_keep, so a sequential episode pushes all the overshoot of the early groups onto the last ones (measured
  on ResNet-56: the last three groups kept 0.57 / 0.48 / 0.43 against 0.70 elsewhere). With ``reserve = 1``
  the later groups are assumed to keep the *fair ratio* (:func:`fair_ratio`: the one uniform ratio that meets
  the target from here on), so no group can take budget that the later groups need at that ratio; values in
  between blend the two.
* :func:`fill`: the opposite of the projection. A plan that removes more than the target (the wall and
  min_keep only ever remove) gets the highest-scored pruned channels back while the target still holds, so
  every plan lands within about one channel's cost of the target instead of over-pruning.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import torch

from harness.errors import UserError
from harness.prune.budget import METRICS, min_keep
from harness.prune.cost import CostModel
from harness.prune.groups import Group

_EPS = 1e-12  # float noise in the reduction comparison


def _reduction(cost: CostModel, vec: np.ndarray, metric: str) -> float:
    return cost.base.reduction_to(cost.cost_array(vec), metric)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UserError(f"budget metric must be one of {', '.join(METRICS)}, got {metric!r}")


def _ratio_counts(groups: Sequence[Group], ratio: float, min_keep_fraction: float) -> dict[str, int]:
    return {g.id: min(g.size, max(min_keep(g, min_keep_fraction), math.floor(ratio * g.size + 0.5)))
            for g in groups}


def fair_ratio(cost: CostModel, groups: Sequence[Group], decided: Mapping[str, int], start_index: int,
               metric: str, target: float, min_keep_fraction: float, iters: int = 40) -> float:
    """The largest uniform keep ratio r for ``groups[start_index:]`` that meets ``target``.

    Each of those groups keeps ``clamp(round(r * size), min_keep, size)`` channels, the groups in ``decided``
    their decided counts, every other group all its channels. 0.0 when even min_keep everywhere misses the
    target (then nothing can be reserved), 1.0 when keeping everything already meets it.
    """
    _check_metric(metric)
    rest = list(groups[start_index:])
    fixed = {k: int(v) for k, v in decided.items() if k not in {g.id for g in rest}}

    def ok(r: float) -> bool:
        return _reduction(cost, cost.keep_vector({**fixed, **_ratio_counts(rest, r, min_keep_fraction)}),
                          metric) >= target - _EPS

    if not rest or ok(1.0):
        return 1.0
    if not ok(0.0):
        return 0.0
    lo, hi = 0.0, 1.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


def max_keep_allowed(cost: CostModel, groups: Sequence[Group], decided: Mapping[str, int], current_index: int,
                     metric: str, target: float, min_keep_fraction: float, reserve: float = 0.0) -> int:
    """Largest keep count for ``groups[current_index]`` that still lets the budget be met.

    Assumes the groups in ``decided`` keep their decided counts, every other group all its channels, and every
    later group (``groups[current_index+1:]``) its min_keep (``reserve = 0``, the spec's wall) or, with
    ``reserve`` in (0, 1], ``clamp(round(reserve * r * size), min_keep, size)`` with r the :func:`fair_ratio` of
    ``groups[current_index:]``; returns the largest n in [min_keep, size] with reduction >= ``target``. When
    even min_keep misses the target, returns min_keep (the wall cannot go lower; the final projection reports
    the shortfall). Pass ``budget.target`` (not target - tolerance) to aim exact.
    """
    _check_metric(metric)
    if not 0.0 <= reserve <= 1.0:
        raise UserError(f"wall reserve must be in [0, 1], got {reserve}")
    group = groups[current_index]
    later_groups = list(groups[current_index + 1:])
    if reserve > 0 and later_groups:
        r = fair_ratio(cost, groups, decided, current_index, metric, target, min_keep_fraction)
        later = _ratio_counts(later_groups, reserve * r, min_keep_fraction)
    else:
        later = {g.id: min_keep(g, min_keep_fraction) for g in later_groups}
    vec = cost.keep_vector({**{k: int(v) for k, v in decided.items() if k != group.id}, **later})
    pos = [g.id for g in cost.groups].index(group.id)

    def ok(n: int) -> bool:
        vec[pos] = n
        return _reduction(cost, vec, metric) >= target - _EPS

    lo, hi = min_keep(group, min_keep_fraction), group.size
    if not ok(lo):
        return lo
    while lo < hi:  # invariant: ok(lo); cost is monotone in n, so feasibility is a prefix
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _complement(idx: torch.Tensor, size: int) -> torch.Tensor:
    """The channels of a group of ``size`` that are not in ``idx`` (sorted)."""
    mask = torch.ones(size, dtype=torch.bool)
    mask[idx] = False
    return mask.nonzero().flatten()


def _candidates(order: Sequence[Group], channels: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(score, position in ``order``, channel) of every channel in ``channels[group id]``, group by group;
    None when there is none. The candidates the projection drops from and the fill adds from."""
    cand_score, cand_group, cand_chan = [], [], []
    for gi, g in enumerate(order):
        idx = channels[g.id]
        if idx.numel() == 0:
            continue
        s = torch.as_tensor(scores[g.id], dtype=torch.float64).view(-1)
        if s.numel() != g.size:
            raise UserError(f"group {g.id}: {s.numel()} scores for {g.size} channels")
        cand_score.append(s[idx])
        cand_group.append(torch.full((idx.numel(),), gi, dtype=torch.long))
        cand_chan.append(idx)
    if not cand_score:
        return None
    return torch.cat(cand_score), torch.cat(cand_group), torch.cat(cand_chan)


def project(cost: CostModel, groups: Sequence[Group], keep: Mapping[str, torch.Tensor | Sequence[int]],
            scores: Mapping[str, torch.Tensor], metric: str, target: float,
            min_keep_fraction: float) -> tuple[dict[str, torch.Tensor], int]:
    """Drop the globally lowest-score kept channels until reduction >= ``target``; returns (keep, n_dropped).

    ``scores[id][j]`` scores root channel j of group ``id`` (higher = more useful, e.g. the keep logit);
    a group of ``groups`` missing from ``keep`` keeps all its channels, and one missing from ``scores`` is
    never dropped from. No group goes below its min_keep. Ties drop in model order, then channel order.
    Nothing is dropped when the target already holds; when it cannot be reached, every droppable channel is
    dropped (the caller sees the shortfall in the CostModel). Returned keeps are sorted LongTensors.
    """
    _check_metric(metric)
    cur: dict[str, torch.Tensor] = {}
    for g in groups:
        idx = keep.get(g.id)
        cur[g.id] = torch.arange(g.size) if idx is None else torch.as_tensor(idx, dtype=torch.long).view(-1).sort().values
    for gid, idx in keep.items():  # groups outside ``groups`` pass through untouched
        cur.setdefault(gid, torch.as_tensor(idx, dtype=torch.long).view(-1).sort().values)
    counts = {gid: int(v.numel()) for gid, v in cur.items()}
    vec = cost.keep_vector(counts)
    if _reduction(cost, vec, metric) >= target - _EPS:
        return {gid: cur[gid] for gid in keep}, 0

    # the greedy drop order: all kept, scored channels, lowest score first (stable: model, then channel order)
    pos = {g.id: i for i, g in enumerate(cost.groups)}
    order = [g for g in groups if g.id in scores]
    cands = _candidates(order, {g.id: cur[g.id] for g in order}, scores)
    if cands is None:
        return {gid: cur[gid] for gid in keep}, 0
    sc, gr, ch = cands
    perm = np.lexsort((ch.numpy(), gr.numpy(), sc.numpy()))  # last key is primary
    left = [counts[g.id] for g in order]
    floor = [min(min_keep(g, min_keep_fraction), counts[g.id]) for g in order]
    drops: list[int] = []  # positions into the candidate arrays, in drop order
    for p in perm:
        gi = int(gr[p])
        if left[gi] > floor[gi]:
            left[gi] -= 1
            drops.append(int(p))

    # smallest prefix of the drop order that meets the target (each drop lowers the cost: monotone)
    cols = np.array([pos[order[int(gr[p])].id] for p in drops], dtype=np.int64)

    def vec_after(k: int) -> np.ndarray:
        v = vec.copy()
        np.subtract.at(v, cols[:k], 1.0)
        return v

    lo, hi = 1, len(drops)
    if hi == 0 or _reduction(cost, vec_after(hi), metric) < target - _EPS:
        k = hi  # unreachable: drop everything droppable
    else:
        while lo < hi:
            mid = (lo + hi) // 2
            if _reduction(cost, vec_after(mid), metric) >= target - _EPS:
                hi = mid
            else:
                lo = mid + 1
        k = lo
    dropped: dict[str, list[int]] = {}
    for p in drops[:k]:
        dropped.setdefault(order[int(gr[p])].id, []).append(int(ch[p]))
    out = {gid: cur[gid] for gid in keep}
    for gid, chans in dropped.items():
        mask = torch.ones(cur[gid].numel(), dtype=torch.bool)
        mask &= ~torch.isin(cur[gid], torch.tensor(chans, dtype=torch.long))
        out[gid] = cur[gid][mask]
    return out, k


def _scale_up(cost: CostModel, groups: Sequence[Group], cur: Mapping[str, torch.Tensor],
              scores: Mapping[str, torch.Tensor], metric: str, target: float) -> tuple[dict[str, torch.Tensor], int]:
    """Every scored group's keep count scaled by one common factor s >= 1 (the largest that meets ``target``),
    the added channels the group's highest-scored pruned ones: the plan's allocation across groups is kept."""
    order = [g for g in groups if g.id in scores and g.id in cur]
    counts = np.array([cur[g.id].numel() for g in order], dtype=np.float64)
    sizes = np.array([g.size for g in order], dtype=np.float64)
    if not order or np.all(counts >= sizes):
        return dict(cur), 0
    fixed = {k: int(v.numel()) for k, v in cur.items()}

    def scaled(factor: float) -> dict[str, int]:
        n = np.minimum(sizes, np.maximum(counts, np.floor(factor * counts + 1e-9)))
        return {**fixed, **{g.id: int(c) for g, c in zip(order, n)}}

    def ok(factor: float) -> bool:
        return _reduction(cost, cost.keep_vector(scaled(factor)), metric) >= target - _EPS

    lo, hi = 1.0, float(np.max(sizes / np.maximum(counts, 1.0)))
    if ok(hi):
        lo = hi
    else:
        for _ in range(40):
            mid = 0.5 * (lo + hi)
            if ok(mid):
                lo = mid
            else:
                hi = mid
    target_counts = scaled(lo)
    out, added = dict(cur), 0
    for g in order:
        extra = target_counts[g.id] - cur[g.id].numel()
        if extra <= 0:
            continue
        s = torch.as_tensor(scores[g.id], dtype=torch.float64).view(-1)
        idx = _complement(cur[g.id], g.size)
        best = idx[torch.argsort(-s[idx], stable=True)[:extra]]
        out[g.id] = torch.cat([cur[g.id], best]).sort().values
        added += int(extra)
    return out, added


def fill(cost: CostModel, groups: Sequence[Group], keep: Mapping[str, torch.Tensor | Sequence[int]],
         scores: Mapping[str, torch.Tensor], metric: str, target: float) -> tuple[dict[str, torch.Tensor], int]:
    """Give back the highest-score pruned channels while reduction >= ``target``; returns (keep, n_added).

    The counterpart of :func:`project` for a plan that removes more than it must, in two passes:

    1. every group's keep count is scaled up by one common factor (the largest that meets the target), each
       group taking back its own highest-scored pruned channels: the plan's allocation across groups is
       preserved. (Filling by one global score order instead hands the whole slack to whichever group's
       scores happen to sit highest: with a policy's keep-logits, a group-wide offset of 0.05 moved a whole
       group to 100 % kept and the next update to another one.)
    2. what slack is left (less than one channel per group) goes to channels in descending score (ties: model
       order, then channel order): the longest feasible prefix of that order, then every later channel that
       still fits (a cheaper group's channel may fit where a costly one did not).

    A plan that misses the target is returned unchanged, as are groups missing from ``scores``.
    Returned keeps are sorted LongTensors for every group of ``keep``.
    """
    _check_metric(metric)
    cur = {gid: torch.as_tensor(v, dtype=torch.long).view(-1).sort().values for gid, v in keep.items()}
    vec = cost.keep_vector({k: int(v.numel()) for k, v in cur.items()})
    if _reduction(cost, vec, metric) < target - _EPS:
        return cur, 0
    cur, scaled_added = _scale_up(cost, groups, cur, scores, metric, target)
    vec = cost.keep_vector({k: int(v.numel()) for k, v in cur.items()})
    pos = {g.id: i for i, g in enumerate(cost.groups)}
    order = [g for g in groups if g.id in scores and g.id in cur]
    cands = _candidates(order, {g.id: _complement(cur[g.id], g.size) for g in order}, scores)
    if cands is None:
        return cur, scaled_added
    sc, gr, ch = cands
    perm = np.lexsort((ch.numpy(), gr.numpy(), -sc.numpy()))  # highest score first
    cols = np.array([pos[order[int(gr[p])].id] for p in perm], dtype=np.int64)

    def vec_after(k: int) -> np.ndarray:
        v = vec.copy()
        np.add.at(v, cols[:k], 1.0)
        return v

    lo, hi = 0, len(perm)  # largest k with the first k added still feasible (cost grows with k)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _reduction(cost, vec_after(mid), metric) >= target - _EPS:
            lo = mid
        else:
            hi = mid - 1
    added = list(perm[:lo])
    v = vec_after(lo)
    blocked: set[int] = set()
    for p, col in zip(perm[lo:], cols[lo:]):  # the rest, one at a time; a group that did not fit stays out
        gi = int(gr[p])
        if gi in blocked:
            continue
        v[col] += 1.0
        if _reduction(cost, v, metric) >= target - _EPS:
            added.append(p)
        else:
            v[col] -= 1.0
            blocked.add(gi)
    extra: dict[str, list[int]] = {}
    for p in added:
        extra.setdefault(order[int(gr[p])].id, []).append(int(ch[p]))
    out = dict(cur)
    for gid, chans in extra.items():
        out[gid] = torch.cat([cur[gid], torch.tensor(chans, dtype=torch.long)]).sort().values
    return out, scaled_added + len(added)


def complete(cost: CostModel, groups: Sequence[Group], keep: Mapping[str, torch.Tensor | Sequence[int]],
             scores: Mapping[str, torch.Tensor], metric: str, target: float, min_keep_fraction: float, *,
             fill_up: bool = True) -> tuple[dict[str, torch.Tensor], int, int]:
    """A plan made feasible (:func:`project`) and, with ``fill_up``, brought back to the target (:func:`fill`).

    Returns (keep for every group of ``groups``, channels dropped, channels added). The one repair the RL
    searches and their random-search controls share, so that they differ only in how they choose.
    """
    full = {g.id: keep.get(g.id, torch.arange(g.size)) for g in groups}
    out, dropped = project(cost, groups, full, scores, metric, target, min_keep_fraction)
    added = 0
    if fill_up:
        out, added = fill(cost, groups, out, scores, metric, target)
    return out, dropped, added
