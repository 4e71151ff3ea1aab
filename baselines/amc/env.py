"""AMC's channel-pruning environment as a ``gymnasium.Env`` (spec B.1, B.2, B.4).

One episode walks the prunable groups in model order (one step per group: AMC's "layer t", see
``baselines.amc.layers``). The action is layer t's input-channel preserve ratio; it is clipped to
[lbound, rbound], capped by the action wall, turned into a channel count (rounded to a multiple of
``round_to``) and the count's top channels by the consumers' input-channel L1 are kept. Only the last step
is rewarded: the search-split top-1 of the masked network, without fine-tuning, through ``reward``.

The action wall (the official ``_action_wall``): assume every later group is cut to its floor (the count
``lbound`` gives after rounding, never below the suite's min_keep); the largest count of the current group
that still lets the budget be met is the cap (``harness.search.max_keep_allowed``). Unlike the official code,
which rounds *up* to a multiple of 8 after the wall and can overshoot, a capped count is rounded *down*
(never below the floor), so every terminal plan meets the budget by construction; the constructor rejects
a budget that even all floors cannot meet (UserError). The budget is on whole-network MACs/params; groups
outside the episode (``scope: internal`` leaves the residual streams out) stay whole.

State (11-d ``paper`` or 10-d ``code``, see ``baselines.amc.layers.static_features``): the static columns,
then *reduced* (fraction of the base MACs removed by the groups decided so far, later groups whole: the
paper's definition; the official code counts undecided layers at lbound there), *rest* (FLOPs[t'] of the
later layers over the base MACs) and a_{t-1} (the executed preserve ratio of the previous step; 1 at t=0).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from harness.errors import UserError
from harness.prune import Budget, CostModel, Group, build_graph, min_keep
from harness.search import max_keep_allowed
from baselines.amc.layers import AMCLayer, build_layers, input_channel_l1, static_features
from baselines.amc.rewards import REWARDS, reward_fn

_EPS = 1e-12


class AMCEnv(gym.Env):
    """Layer-by-layer AMC pruning of ``model`` under ``budget``; ``evaluator.evaluate(keep) -> top-1 %``.

    ``groups`` are the groups the agent decides (in model order); ``cost`` may hold more (they stay whole).
    ``info`` of the terminal step: ``keep`` ({group id: kept channels}), ``accuracy``, ``macs``, ``params``,
    ``macs_reduction``, ``params_reduction``, ``strategy`` (executed preserve ratios), ``eval_s``.
    """

    metadata = {"render_modes": []}

    def __init__(self, model: nn.Module, example_input: torch.Tensor, groups: Sequence[Group], cost: CostModel,
                 budget: Budget, evaluator: Any, *, lbound: float = 0.2, rbound: float = 1.0, round_to: int = 8,
                 min_keep_fraction: float = 0.1, state: str = "paper", reward: str = "err", graph: Any = None,
                 arch: str = "model") -> None:
        if not 0.0 < lbound <= rbound <= 1.0:
            raise UserError(f"AMC needs 0 < lbound <= rbound <= 1, got lbound={lbound}, rbound={rbound}")
        if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
            raise UserError(f"round_to must be a positive integer, got {round_to!r}")
        if reward not in REWARDS:
            raise UserError(f"AMC reward must be one of {', '.join(REWARDS)}, got {reward!r}")
        if not groups:
            raise UserError(f"{arch} has no group for AMC to prune")
        self.groups = list(groups)
        self.cost, self.budget, self.evaluator = cost, budget, evaluator
        self.lbound, self.rbound, self.round_to = float(lbound), float(rbound), int(round_to)
        self.min_keep_fraction = float(min_keep_fraction)
        self.reward_name = reward
        self._reward: Callable[[float, int, int], float] = reward_fn(reward)
        dep_graph = graph if graph is not None else build_graph(model, example_input)
        self.layers: list[AMCLayer] = build_layers(model, example_input, self.groups, graph=dep_graph)
        scores = input_channel_l1(model, example_input, self.layers, graph=dep_graph)
        self.rank = {g.id: torch.argsort(-scores[g.id], stable=True) for g in self.groups}  # best first
        self.floors = {g.id: self._floor(g) for g in self.groups}
        self.static = static_features(self.layers, state)
        self.state_kind = state
        base_macs = float(cost.base.macs)
        flops = np.array([la.flops for la in self.layers], dtype=np.float64)
        self._rest = np.array([flops[t + 1:].sum() / base_macs for t in range(len(self.layers))])
        self.max_reduction = cost.reduction(self.floors, budget.metric)
        if self.max_reduction < budget.target - _EPS:
            raise UserError(
                f"{arch} cannot reach a {budget.metric} reduction of {budget.target:g} with AMC: cutting every "
                f"group it prunes to lbound={lbound:g} (rounded to a multiple of {round_to}) removes at most "
                f"{self.max_reduction:.4f}; lower lbound or round_to, or use scope: all")
        dim = self.static.shape[1] + 3
        self.observation_space = spaces.Box(0.0, 1.0, (dim,), np.float32)
        self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self._t: int | None = None
        self._counts: dict[str, int] = {}
        self._strategy: list[float] = []

    # -- counts -----------------------------------------------------------------------------------------
    def _round(self, group: Group, ratio: float) -> int:
        """Official ``prune_kernel`` rounding: round(c * ratio) >= 1, then up to a multiple of round_to.

        A count above the group's size becomes the size (the official code floors to the largest multiple
        of 8 below c instead; the same whenever c is a multiple of round_to)."""
        d = max(1, int(np.around(group.size * ratio)))
        d = int(math.ceil(d / self.round_to) * self.round_to)
        return min(d, group.size)

    def _floor(self, group: Group) -> int:
        return max(min_keep(group, self.min_keep_fraction), self._round(group, self.lbound))

    def count_for(self, t: int, action: float) -> int:
        """Kept channels of group t for a raw action, after clipping, the wall and rounding."""
        group = self.groups[t]
        ratio = float(np.clip(action, self.lbound, self.rbound))
        desired = self._round(group, ratio)
        decided = {**self._counts, **{g.id: self.floors[g.id] for g in self.groups[t + 1:]}}
        cap = max_keep_allowed(self.cost, self.groups[:t + 1], decided, t, self.budget.metric, self.budget.target,
                               self.min_keep_fraction)
        n = min(desired, cap)
        if n < desired:  # capped: largest multiple of round_to under the cap, never below the floor
            n = max(self.floors[group.id], (n // self.round_to) * self.round_to)
        return n

    # -- gymnasium ----------------------------------------------------------------------------------------
    @property
    def num_steps(self) -> int:
        return len(self.groups)

    def _obs(self, t: int) -> np.ndarray:
        reduced = 1.0 - self.cost.cost(self._counts).macs / self.cost.base.macs
        prev = self._strategy[-1] if self._strategy else 1.0
        return np.concatenate([self.static[t], [reduced, self._rest[t], prev]]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: Mapping | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t, self._counts, self._strategy = 0, {}, []
        return self._obs(0), {"step": 0, "group": self.groups[0].id}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._t is None:
            raise RuntimeError("call reset() before step()")
        t = self._t
        a = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        group = self.groups[t]
        n = self.count_for(t, a)
        self._counts[group.id] = n
        self._strategy.append(n / group.size)
        if t + 1 < self.num_steps:
            self._t = t + 1
            return self._obs(t + 1), 0.0, False, False, {"step": t + 1, "group": self.groups[t + 1].id,
                                                          "kept": n, "ratio": n / group.size}
        self._t = None
        keep = self.keep()
        t0 = time.perf_counter()
        acc = float(self.evaluator.evaluate(keep))
        eval_s = time.perf_counter() - t0
        c = self.cost.cost(self._counts)
        base = self.cost.base
        info = {"keep": keep, "accuracy": acc, "macs": c.macs, "params": c.params,
                "macs_reduction": 1.0 - c.macs / base.macs, "params_reduction": 1.0 - c.params / base.params,
                "strategy": list(self._strategy), "counts": dict(self._counts), "eval_s": eval_s,
                "kept": n, "ratio": n / group.size}
        obs = self._obs(t)  # the official code returns the last state again
        return obs, float(self._reward(acc, c.macs, c.params)), True, False, info

    def keep(self) -> dict[str, list[int]]:
        """Kept channels of the decided groups: the top counts by input-channel L1 (sorted indices)."""
        return {gid: sorted(int(i) for i in self.rank[gid][:n]) for gid, n in self._counts.items()}
