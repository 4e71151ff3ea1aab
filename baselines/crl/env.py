"""The constrained pruning MDP of Malik et al. as a ``gymnasium.Env`` (A.1, A.2): one episode = one sweep.

Each step decides one unit (:mod:`baselines.crl.units`) and returns reward 0 and cost 0; the last step builds
the masks, scores them (the caller's ``score`` function, :class:`baselines.crl.scorer.EpisodeScorer`) and
returns reward = top-1 in percent and cost = ``T x remaining %`` (so the per-step mean over whole episodes is
the remaining percentage the Lagrangian bounds, A.2).

* ``variant="layer"`` (coarse, env ``LWOP``): the action is the fraction of the layer's weights to prune,
  clipped to ``[0, c(t)]``; the observation is 10-d (step index, 8 layer features, the sum of the clipped
  actions so far). The plan: per layer the ``n - round((1 - a) n)`` smallest |w| are zeroed.
* ``variant="neuron"`` (fine, env ``FP``): the action is a vector of keep-scores (the first ``size`` entries
  are the group's channels), clipped so that ``1 - score`` is in ``[0, c(t)]``; 9-d observation. During the
  search the scores multiply the channels (``soft``) or are thresholded first; the plan keeps the channels
  with ``score >= threshold``, topped up to the group's min_keep with the highest-scored others.

``c(t)`` and the inner fine-tune count ``k(t)`` are functions of this env's own step counter, as in the
code. With ``score=None`` (the final rollouts) nothing is scored and the reward is 0. The details of the
last finished episode (plan, size, accuracy) are in :attr:`last_episode`; :meth:`state_dict` makes an
episode in progress resumable.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from harness.errors import UserError
from harness.prune.unstructured import WeightSparsity, magnitude_masks
from baselines.crl.cost import CostMeter, Measure
from baselines.crl.units import Unit

VARIANTS = ("layer", "neuron")


@dataclass(frozen=True)
class Episode:
    """A finished episode: its plan (``keep`` or ``sparsity``), size, accuracy (NaN when not scored)."""

    index: int
    keep: dict[str, list[int]] | None
    sparsity: WeightSparsity | None
    measure: Measure
    accuracy: float
    reward: float
    cost: float
    finetune_iters: int
    action_clip: float
    scores: dict[str, list[float]] | None = None  # crl-neuron: the keep-scores (for a projection)


class ConstrainedPruningEnv(gym.Env):
    metadata = {"render_modes": []}

    def __init__(self, variant: str, units: Sequence[Unit], meter: CostMeter, *,
                 action_clip: Callable[[int], float], finetune_iters: Callable[[int], int] = lambda t: 0,
                 score: Callable[..., float] | None = None, act_dim: int | None = None, soft: bool = True,
                 threshold: float = 0.5, min_keep: Mapping[str, int] | None = None,
                 magnitude_orders: Mapping[str, torch.Tensor] | None = None, model: Any = None,
                 seed: int = 0, index: int = 0) -> None:
        if variant not in VARIANTS:
            raise UserError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        self.variant, self.units, self.meter = variant, list(units), meter
        self.action_clip, self.finetune_iters, self.score = action_clip, finetune_iters, score
        self.soft, self.threshold = bool(soft), float(threshold)
        self.min_keep = dict(min_keep or {})
        self.orders, self.model = magnitude_orders, model
        self.seed, self.index = int(seed), int(index)
        if variant == "layer":
            if model is None:
                raise UserError("the layer variant needs the model (for the magnitude masks)")
            self.act_dim, obs_dim = 1, 10
        else:
            largest = max(u.size for u in self.units)
            self.act_dim = int(act_dim or largest)
            if self.act_dim < largest:
                raise UserError(f"action_dim {self.act_dim} is smaller than the largest group ({largest} channels)")
            obs_dim = 9
        self.action_space = spaces.Box(0.0, 1.0, (self.act_dim,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.timesteps = 0   # this env's steps so far (drives c(t) and k(t))
        self.episodes = 0    # finished episodes
        self._t = 0
        self._actions: list[Any] = []
        self.last_episode: Episode | None = None

    # ------------------------------------------------------------------------------------------ gymnasium
    def _obs(self, t: int) -> np.ndarray:
        feats = [float(t), *self.units[t].features]
        if self.variant == "layer":
            feats.append(float(sum(self._actions)))
        return np.asarray(feats, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t, self._actions = 0, []
        return self._obs(0), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.size != self.act_dim or not np.all(np.isfinite(a)):
            raise UserError(f"action must hold {self.act_dim} finite values, got shape {a.shape}")
        a = np.clip(a, 0.0, 1.0)  # the action box (SB3 clips the Gaussian sample to it)
        c = float(self.action_clip(self.timesteps))
        unit = self.units[self._t]
        if self.variant == "layer":
            self._actions.append(float(np.clip(a[0], 0.0, c)))
        else:
            keep = 1.0 - np.clip(1.0 - a[:unit.size], 0.0, c)
            self._actions.append(keep if self.soft else (keep >= self.threshold).astype(np.float64))
        self.timesteps += 1
        self._t += 1
        if self._t < len(self.units):
            return self._obs(self._t), 0.0, False, False, {"cost": 0.0}
        return self._terminal(c)

    # ------------------------------------------------------------------------------------------ terminal
    def plan_keep(self, scores: Sequence[np.ndarray]) -> dict[str, list[int]]:
        """Hard plan of keep-scores: ``score >= threshold``, topped up to min_keep by score (ties: index)."""
        keep: dict[str, list[int]] = {}
        for unit, s in zip(self.units, scores):
            kept = np.flatnonzero(s >= self.threshold)
            need = self.min_keep.get(unit.name, 1)
            if kept.size < need:
                order = np.lexsort((np.arange(s.size), -s))  # highest score first
                kept = np.sort(order[:need])
            keep[unit.name] = [int(i) for i in kept]
        return keep

    def plan_sparsity(self, fractions: Sequence[float]) -> WeightSparsity:
        """Per layer ``n - round((1 - a) n)`` weights zeroed (the code's cutoff; Python's round)."""
        return WeightSparsity({u.name: u.size - int(round((1.0 - a) * u.size)) for u, a in zip(self.units, fractions)})

    def _terminal(self, c: float) -> tuple[np.ndarray, float, bool, bool, dict]:
        k = int(self.finetune_iters(self.timesteps))
        seed = (self.seed * 1_000_003 + self.index * 7_919 + self.episodes) % (2**63 - 1)
        if self.variant == "layer":
            sparsity, keep, scores = self.plan_sparsity(self._actions), None, None
            measure = self.meter.unstructured(sparsity)
        else:
            sparsity = None
            keep = self.plan_keep(self._actions)
            scores = {u.name: [float(v) for v in s] for u, s in zip(self.units, self._actions)}
            measure = self.meter.structured(keep)
        accuracy = float("nan")
        if self.score is not None:
            if self.variant == "layer":
                masks = magnitude_masks(self.model, sparsity, self.orders)
                accuracy = float(self.score(weight_masks=masks, finetune_iters=k, seed=seed))
            else:
                channel = {u.name: torch.as_tensor(s, dtype=torch.float32) for u, s in zip(self.units, self._actions)}
                accuracy = float(self.score(channel_scores=channel, keep=keep, finetune_iters=k, seed=seed))
        reward = 0.0 if self.score is None else accuracy
        cost = len(self.units) * measure.remaining
        self.last_episode = Episode(self.episodes, keep, sparsity, measure, accuracy, reward, cost, k, c, scores)
        self.episodes += 1
        self._t, self._actions = 0, []
        return self._obs(0), reward, True, False, {"cost": cost}

    # ------------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"timesteps": self.timesteps, "episodes": self.episodes, "t": self._t,
                "actions": [np.copy(a) if isinstance(a, np.ndarray) else a for a in self._actions]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.timesteps, self.episodes, self._t = int(state["timesteps"]), int(state["episodes"]), int(state["t"])
        self._actions = list(state["actions"])
