"""The constrained MDP of the graph-RL pruner as a ``gymnasium.Env`` (spec ``graph-rl.md``, decisions 4, 5, 6, 8).

What is the paper's: a constrained MDP whose actions are fine-grained binary keep/prune decisions and whose
reward is self-competition. What is ours (each a constructor knob): the episode layout (one step per prunable
group in model order, or one-shot), the AMC-style action wall, the terminal projection and its penalty, and
the score order used to repair an infeasible action (the agent's keep score first, channel L1 second).

Feasibility by construction: in ``"sequential"`` mode the wall caps every group's keep count so that the
groups decided so far plus the min_keep of every later group (``wall_reserve = 0``, the spec) or their share
at the fair ratio (``wall_reserve = 1``, harness.search.wall) still meet the target, so the terminal
projection only has work left when the target is unreachable; with ``fill`` the terminal step gives the
highest-scored pruned channels back while the target holds, so no plan removes much more than it must; in ``"one-shot"`` mode the single action is
repaired by min_keep and then by the global projection (drop the globally lowest-scored kept channels),
optionally after the same per-group wall (``one_shot_wall=True``; off by default because a model-order wall
would always cut the *later* groups first, while the projection cuts the globally least useful channels).

Observation: the :class:`~method.graph.PruningGraph`'s ``data`` (a torch-geometric ``Data``), built once and
updated in place (mask state, is-current flag, global context). Every ``reset``/``step`` returns **the same
object**; clone it (``data.clone()``) before storing it in a rollout buffer.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from harness.errors import UserError
from harness.prune import Budget, CostModel, channel_l1, min_keep
from harness.prune.groups import Group, build_graph
from harness.search import complete, max_keep_allowed
from method.graph import CONTEXT_COLS, EDGE_FEATURES, NODE_FEATURES, PruningData, PruningGraph, build_graph_observation
from method.reward import SelfCompetition

MODES = ("sequential", "one-shot")
ACTIONS = ("binary", "ratio")
_EPS = 1e-9  # float noise when comparing a reduction with the target (the wall/projection use 1e-12)


class PruningEnv(gym.Env):
    """One episode = one pruning plan of ``model`` under ``budget``; only the terminal step is rewarded.

    Actions (documented choice for "lowest keep-logit first"):

    * ``action="binary"``: a 0/1 keep mask over the current group's channels (sequential) or over all channels
      in channel-node order, group by group (one-shot). Accepted forms:
      - a bool/integer tensor, array or list: keep = value != 0; no agent scores (all 0);
      - a float tensor/array of keep probabilities: keep = value > 0.5 and the probabilities are the scores;
      - a dict ``{"keep": mask, "scores": float vector}`` (e.g. the sampled mask plus the keep logits).
    * ``action="ratio"``: a keep ratio in [0, 1] (sequential: a scalar; one-shot: one per group), turned into
      ``round(ratio * size)`` channels, the top ones by group L1 (``harness.prune.channel_l1``); scores = L1.

    Whenever channels must be dropped (wall, projection) the lowest (score, L1) kept channels go first; when
    min_keep adds channels back, the highest (score, L1) pruned channels come first. Ties: channel index.

    ``action_space`` is a shape hint only: ``MultiBinary(size of the current group)`` in sequential binary
    mode (it is reassigned at every step, so ``env.action_space.sample()`` draws a valid random action),
    ``MultiBinary(C)`` in one-shot binary, ``Box(0, 1, (1,))`` / ``Box(0, 1, (G,))`` for ratios.
    ``observation_space`` is a ``gymnasium.spaces.Graph`` with the node/edge feature widths, declared because
    gymnasium wants one; the real observation is the ``PruningData`` object, not a ``GraphInstance``.

    Terminal reward = ``reward(acc, violation, target) - projection_penalty * projection_dropped / C``
    (C = all prunable channels). ``reward`` (a :class:`SelfCompetition`) must have been started by the caller
    (``reward.start(l1_uniform_accuracy)``); the env only calls it. ``evaluator.evaluate(keep) -> float`` gives
    the search-split top-1 in percent (a :class:`harness.search.SearchEvaluator`; any such object in tests).
    """

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group], cost: CostModel,
                 budget: Budget, evaluator: Any, reward: SelfCompetition, min_keep_fraction: float = 0.1,
                 mode: str = "sequential", action: str = "binary", topk_channel_edges: int = 0,
                 projection_penalty: float = 1.0, *, one_shot_wall: bool = False,
                 graph: Any = None, wall_reserve: float = 0.0, fill: bool = False) -> None:
        if mode not in MODES:
            raise UserError(f"env mode must be one of {', '.join(MODES)}, got {mode!r}")
        if action not in ACTIONS:
            raise UserError(f"env action must be one of {', '.join(ACTIONS)}, got {action!r}")
        if not 0.0 <= min_keep_fraction < 1.0:
            raise UserError(f"min_keep_fraction must be in [0, 1), got {min_keep_fraction}")
        if projection_penalty < 0:
            raise UserError(f"projection_penalty must be >= 0, got {projection_penalty}")
        self.groups = list(groups)
        self.cost, self.budget, self.evaluator, self.reward = cost, budget, evaluator, reward
        self.metric, self.target = budget.metric, float(budget.target)
        self.min_keep_fraction = float(min_keep_fraction)
        self.mode, self.action_type = mode, action
        self.projection_penalty = float(projection_penalty)
        self.one_shot_wall = bool(one_shot_wall)
        if not 0.0 <= wall_reserve <= 1.0:
            raise UserError(f"wall_reserve must be in [0, 1], got {wall_reserve}")
        self.wall_reserve, self.fill = float(wall_reserve), bool(fill)
        dep_graph = graph if graph is not None else build_graph(model, example_input)
        # built once: the episode only rewrites mask/current/context columns of data.x
        self.pg: PruningGraph = build_graph_observation(
            model, example_input, self.groups, cost, topk_channel_edges=topk_channel_edges,
            budget_target=self.target, metric=self.metric, graph=dep_graph)
        l1 = channel_l1(model, example_input, self.groups, graph=dep_graph)
        self.l1: dict[str, torch.Tensor] = {g.id: l1[g.id].double() for g in self.groups}
        self._l1_order = {g.id: torch.argsort(-self.l1[g.id], stable=True) for g in self.groups}  # highest first
        self.min_keeps = {g.id: min_keep(g, self.min_keep_fraction) for g in self.groups}
        self.num_channels = sum(g.size for g in self.groups)
        self.observation_space = spaces.Graph(
            node_space=spaces.Box(-np.inf, np.inf, (NODE_FEATURES,), np.float32),
            edge_space=spaces.Box(-np.inf, np.inf, (EDGE_FEATURES,), np.float32))
        self.action_space = self._space_for(0)
        self._step: int | None = None  # None: not reset / episode over
        self._keep: dict[str, torch.Tensor] = {}    # decided groups: kept root indices (sorted)
        self._scores: dict[str, torch.Tensor] = {}  # decided groups: agent scores per channel (float64)
        self._wall_dropped = 0
        self._min_keep_added = 0

    # -- spaces ---------------------------------------------------------------------------------------------
    def _space_for(self, gi: int | None) -> spaces.Space:
        if self.action_type == "ratio":
            n = 1 if self.mode == "sequential" else len(self.groups)
            return spaces.Box(0.0, 1.0, (n,), np.float32)
        if self.mode == "sequential" and gi is not None:
            return spaces.MultiBinary(self.groups[gi].size)
        return spaces.MultiBinary(self.num_channels)

    @property
    def data(self) -> PruningData:
        """The observation (the same object for the whole life of the env)."""
        return self.pg.data

    @property
    def current_group(self) -> int | None:
        """Index of the group the next step decides (None in one-shot mode or when no episode runs)."""
        return self._step if self.mode == "sequential" else None

    # -- gymnasium API --------------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[PruningData, dict]:
        """Every channel undecided, the first group current, context (1, 1, target, target)."""
        super().reset(seed=seed)
        self._keep, self._scores = {}, {}
        self._wall_dropped = self._min_keep_added = 0
        self._step = 0
        self.pg.set_undecided()
        self.pg.set_current(0 if self.mode == "sequential" else None)
        self._update_context()
        self.action_space = self._space_for(0)
        if seed is not None:
            self.action_space.seed(seed)
        return self.pg.data, self._info()

    def step(self, action: Any) -> tuple[PruningData, float, bool, bool, dict]:
        if self._step is None:
            raise RuntimeError("call reset() before step() (the episode is over)")
        if self.mode == "sequential":
            gi = self._step
            keep, scores = self._parse(action, gi)
            step_info = self._decide(gi, keep, scores, wall=True)
            self._step += 1
            if self._step < len(self.groups):
                self.pg.set_current(self._step)
                self._update_context()
                self.action_space = self._space_for(self._step)
                return self.pg.data, 0.0, False, False, {**self._info(), **step_info}
        else:
            per_group = self._parse_all(action)
            for gi, (keep, scores) in enumerate(per_group):
                self._decide(gi, keep, scores, wall=self.one_shot_wall)
        return self._terminal()

    # -- actions --------------------------------------------------------------------------------------------
    def _parse(self, action: Any, gi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(keep mask, scores) for group ``gi`` from a sequential action."""
        g = self.groups[gi]
        if self.action_type == "ratio":
            r = torch.as_tensor(action, dtype=torch.float64).reshape(-1)
            if r.numel() != 1:
                raise UserError(f"a sequential ratio action is one number, got {r.numel()}")
            return self._ratio_mask(gi, float(r[0])), self.l1[g.id].clone()
        return _mask_and_scores(action, g.size, g.id)

    def _parse_all(self, action: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per group (keep mask, scores) from a one-shot action."""
        if self.action_type == "ratio":
            r = torch.as_tensor(action, dtype=torch.float64).reshape(-1)
            if r.numel() != len(self.groups):
                raise UserError(f"a one-shot ratio action has one ratio per group ({len(self.groups)}), "
                                f"got {r.numel()}")
            return [(self._ratio_mask(gi, float(r[gi])), self.l1[g.id].clone()) for gi, g in enumerate(self.groups)]
        keep, scores = _mask_and_scores(action, self.num_channels, "all channels")
        out = []
        for gi in range(len(self.groups)):
            rows = self.pg.channel_slice(gi)
            out.append((keep[rows], scores[rows]))
        return out

    def _ratio_mask(self, gi: int, ratio: float) -> torch.Tensor:
        """The top ``round(ratio * size)`` channels by group L1 (min_keep and the wall come after)."""
        g = self.groups[gi]
        if not np.isfinite(ratio):
            raise UserError(f"keep ratio must be finite, got {ratio}")
        n = int(round(min(max(ratio, 0.0), 1.0) * g.size))
        mask = torch.zeros(g.size, dtype=torch.bool)
        mask[self._l1_order[g.id][:n]] = True
        return mask

    def _order(self, gid: str, scores: torch.Tensor) -> torch.Tensor:
        """Channel indices of group ``gid`` from lowest to highest (score, L1); ties by index."""
        perm = np.lexsort((np.arange(scores.numel()), self.l1[gid].numpy(), scores.numpy()))
        return torch.from_numpy(perm.astype(np.int64))

    def _decide(self, gi: int, keep: torch.Tensor, scores: torch.Tensor, *, wall: bool) -> dict[str, Any]:
        """Apply min_keep and (optionally) the wall to one group's mask; record it in the graph."""
        g = self.groups[gi]
        lo = self.min_keeps[g.id]
        hi = max_keep_allowed(self.cost, self.groups, {k: int(v.numel()) for k, v in self._keep.items()}, gi,
                              self.metric, self.target, self.min_keep_fraction,
                              reserve=self.wall_reserve) if wall else g.size
        keep = keep.clone()
        n = int(keep.sum())
        order = self._order(g.id, scores)
        dropped = added = 0
        if n > hi:  # the wall: drop the lowest-scored kept channels
            low_kept = order[keep[order]]
            keep[low_kept[: n - hi]] = False
            dropped = n - hi
        elif n < lo:  # min_keep: add back the highest-scored pruned channels
            high_pruned = order.flip(0)[~keep[order.flip(0)]]
            keep[high_pruned[: lo - n]] = True
            added = lo - n
        self._wall_dropped += dropped
        self._min_keep_added += added
        self._keep[g.id] = keep.nonzero().flatten()
        self._scores[g.id] = scores
        self.pg.set_group_mask(gi, keep)
        return {"decided_group": gi, "decided_keep": self._keep[g.id].tolist(), "max_keep": hi,
                "wall_dropped": dropped, "min_keep_added": added}

    # -- bookkeeping ----------------------------------------------------------------------------------------
    def _reductions(self, counts: Mapping[str, int]) -> tuple[int, int, float, float, float]:
        """(MACs, params, their reductions, the budget metric's reduction) of a plan's keep counts."""
        c = self.cost.cost(counts)
        base = self.cost.base
        return (c.macs, c.params, 1.0 - c.macs / base.macs, 1.0 - c.params / base.params,
                base.reduction_to(c, self.metric))

    def _update_context(self) -> None:
        """Remaining MACs/params ratios with the undecided groups whole, target, reduction still to find."""
        _, _, mr, pr, achieved = self._reductions({k: int(v.numel()) for k, v in self._keep.items()})
        self.pg.set_context(1.0 - mr, 1.0 - pr, self.target, max(0.0, self.target - achieved))

    def _info(self) -> dict[str, Any]:
        x = self.pg.data.x
        rem_macs, rem_params, target, rem_budget = (float(v) for v in x[0, CONTEXT_COLS])
        gi = self.current_group
        if gi is not None and gi >= len(self.groups):
            gi = None
        info: dict[str, Any] = {"group_index": gi, "step": self._step, "num_groups": len(self.groups),
                                "remaining_macs": rem_macs, "remaining_params": rem_params, "target": target,
                                "remaining_budget": rem_budget, "metric": self.metric}
        if gi is not None:
            g = self.groups[gi]
            info["group_id"] = g.id
            info["group_size"] = g.size
            info["min_keep"] = self.min_keeps[g.id]
            info["max_keep"] = max_keep_allowed(self.cost, self.groups,
                                                {k: int(v.numel()) for k, v in self._keep.items()}, gi,
                                                self.metric, self.target, self.min_keep_fraction,
                                                reserve=self.wall_reserve)
        return info

    def _terminal(self) -> tuple[PruningData, float, bool, bool, dict]:
        """Projection, evaluation and the only non-zero reward of the episode."""
        self.pg.set_current(None)
        scores = self._global_rank()
        keep, n_proj, n_fill = complete(self.cost, self.groups, self._keep, scores, self.metric, self.target,
                                        self.min_keep_fraction, fill_up=self.fill)
        for gi, g in enumerate(self.groups):
            if keep[g.id].numel() != self._keep[g.id].numel():
                mask = torch.zeros(g.size, dtype=torch.bool)
                mask[keep[g.id]] = True
                self.pg.set_group_mask(gi, mask)
        self._keep = {gid: v.sort().values for gid, v in keep.items()}
        self._update_context()
        plan = {g.id: self._keep[g.id].tolist() for g in self.groups}
        macs, params, mr, pr, achieved = self._reductions({k: len(v) for k, v in plan.items()})
        violation = max(0.0, self.target - achieved) if achieved < self.target - _EPS else 0.0
        acc = float(self.evaluator.evaluate(plan))
        base_r = float(self.reward(acc, violation, self.target))
        penalty = self.projection_penalty * n_proj / self.num_channels
        r = base_r - penalty
        info = {**self._info(), "keep": plan, "accuracy": acc, "macs": macs, "params": params,
                "macs_reduction": mr, "params_reduction": pr, "achieved": achieved,
                "feasible": violation == 0.0, "violation": violation, "cost": violation,
                "cost_signed": self.target - achieved, "projection_dropped": int(n_proj), "fill_added": int(n_fill),
                "projection_penalty": penalty, "base_reward": base_r, "wall_dropped": self._wall_dropped,
                "min_keep_added": self._min_keep_added, "best": self.reward.best}
        self._step = None
        return self.pg.data, r, True, False, info

    def _global_rank(self) -> dict[str, torch.Tensor]:
        """One comparable score per channel for the projection: rank by (agent score, L1), then group, index."""
        ids = [g.id for g in self.groups]
        s = torch.cat([self._scores[i] for i in ids]).numpy()
        l1 = torch.cat([self.l1[i] for i in ids]).numpy()
        perm = np.lexsort((np.arange(s.size), l1, s))
        rank = np.empty(s.size, dtype=np.float64)
        rank[perm] = np.arange(s.size, dtype=np.float64)
        out, start = {}, 0
        for g in self.groups:
            out[g.id] = torch.from_numpy(rank[start:start + g.size].copy())
            start += g.size
        return out


def _mask_and_scores(action: Any, size: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(bool keep mask, float64 scores) from a binary action in one of the documented forms."""
    scores = None
    if isinstance(action, Mapping):
        if "keep" not in action:
            raise UserError("a dict action needs a 'keep' entry (and optionally 'scores')")
        keep_t = torch.as_tensor(np.asarray(action["keep"]) if not torch.is_tensor(action["keep"]) else action["keep"])
        if action.get("scores") is not None:
            scores = torch.as_tensor(action["scores"]).detach().to("cpu", torch.float64).reshape(-1)
        keep = keep_t.detach().cpu().reshape(-1)
        keep = keep > 0.5 if keep.is_floating_point() else keep != 0
    else:
        t = action if torch.is_tensor(action) else torch.as_tensor(np.asarray(action))
        t = t.detach().cpu().reshape(-1)
        if t.is_floating_point():
            keep, scores = t > 0.5, t.to(torch.float64)
        else:
            keep = t != 0
    if keep.numel() != size:
        raise UserError(f"binary action for {what} has {keep.numel()} entries, expected {size}")
    if scores is None:
        scores = torch.zeros(size, dtype=torch.float64)
    if scores.numel() != size or not torch.isfinite(scores).all():
        raise UserError(f"scores for {what} must be {size} finite numbers")
    return keep, scores
