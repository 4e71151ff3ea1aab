"""The budget wall during an episode and the projection at its end (spec decision 5; AMC's action wall).

Both make every terminal state of an RL pruner feasible by construction: the wall caps the current group's
keep count so that the remaining groups, cut to their minimum, can still meet the target; the projection
repairs whatever is left by dropping the globally least useful channels. They only query the analytic
CostModel, so they cost microseconds per step.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from harness.errors import UserError
from harness.prune.budget import METRICS, min_keep
from harness.prune.cost import CostModel
from harness.prune.groups import Group

_EPS = 1e-12  # float noise in the reduction comparison


def _reduction(cost: CostModel, vec: np.ndarray, metric: str) -> float:
    c = cost.cost_array(vec)
    return 1.0 - (c.macs / cost.base.macs if metric == "macs" else c.params / cost.base.params)


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise UserError(f"budget metric must be one of {', '.join(METRICS)}, got {metric!r}")


def max_keep_allowed(cost: CostModel, groups: Sequence[Group], decided: Mapping[str, int], current_index: int,
                     metric: str, target: float, min_keep_fraction: float) -> int:
    """Largest keep count for ``groups[current_index]`` that still lets the budget be met.

    Assumes the groups in ``decided`` keep their decided counts, every later group (``groups[current_index+1:]``)
    its min_keep, and every other group all its channels; returns the largest n in [min_keep, size] with
    reduction >= ``target``. When even min_keep misses the target, returns min_keep (the wall cannot go lower;
    the final projection reports the shortfall). Pass ``budget.target`` (not target - tolerance) to aim exact.
    """
    _check_metric(metric)
    group = groups[current_index]
    later = {g.id: min_keep(g, min_keep_fraction) for g in groups[current_index + 1:]}
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
    cand_score, cand_group, cand_chan = [], [], []
    order = [g for g in groups if g.id in scores]
    for gi, g in enumerate(order):
        idx = cur[g.id]
        s = torch.as_tensor(scores[g.id], dtype=torch.float64).view(-1)
        if s.numel() != g.size:
            raise UserError(f"group {g.id}: {s.numel()} scores for {g.size} channels")
        cand_score.append(s[idx])
        cand_group.append(torch.full((idx.numel(),), gi, dtype=torch.long))
        cand_chan.append(idx)
    if not cand_score:
        return {gid: cur[gid] for gid in keep}, 0
    sc, gr, ch = torch.cat(cand_score), torch.cat(cand_group), torch.cat(cand_chan)
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
