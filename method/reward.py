"""Graph-RL's terminal reward: self-competition under the budget constraint (spec decision 6).

The abstract says only that the agent is rewarded for beating its own previous best while the constraints
hold; the shape below is ours. ``best`` opens at L1-uniform's accuracy at the same budget, so a positive
reward always means "better than everything feasible seen so far, and better than magnitude pruning".
"""
from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

VARIANTS = ("self", "ranked", "spread", "accuracy")


class SelfCompetition:
    """Reward of one terminal state: ``r = reward(acc, violation, target)``.

    * violated (``violation > 0``, the budget-metric reduction still missing): ``-1 - kappa * violation / target``;
      violated episodes never move ``best`` or the ranked window.
    * ``"self"``: ``tanh((acc - best) / tau)`` then ``best = max(best, acc)``: positive only when the previous
      best is beaten, 0 on a tie, negative below.
    * ``"ranked"`` (Ranked Reward, Laterre et al. 2018): +1 if ``acc`` is above the ``percentile``-th percentile
      of the last ``window`` feasible accuracies (before this one is added), else -1; ties get -1 (deterministic,
      and consistent with "self": only strictly beating the bar pays). With an empty window the bar is ``best``.
    * ``"spread"`` (ours, issue 12): ``tanh((acc - bar) / (spread_tau * spread))`` against the agent's own recent
      episodes: ``bar`` is the ``percentile``-th percentile and ``spread`` the standard deviation (at least
      ``min_spread`` points) of the last ``window`` feasible accuracies before this one (with fewer than two:
      ``bar = best``, ``spread * spread_tau = tau``). Still self-competition, but graded: "self" measures
      every episode against the best ever seen, which a typical episode misses by 10+ points, so 90 % of
      its rewards sat at -1 (tanh saturated) and PPO learned from noise; here the scale follows the spread
      of the accuracies the policy actually produces, so a reward says how much better or worse than usual.
    * ``"accuracy"``: ``acc / 100`` (ablation).
    ``acc`` is in percent; ``best`` is tracked by every variant.
    """

    def __init__(self, kappa: float = 1.0, tau: float = 0.5, variant: str = "self", window: int = 64,
                 percentile: float = 75, spread_tau: float = 2.0, min_spread: float = 0.1) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"reward variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if kappa < 0 or tau <= 0 or window < 1 or not 0 <= percentile <= 100:
            raise ValueError("need kappa >= 0, tau > 0, window >= 1 and 0 <= percentile <= 100")
        if spread_tau <= 0 or min_spread <= 0:
            raise ValueError("need spread_tau > 0 and min_spread > 0")
        self.kappa, self.tau, self.variant = float(kappa), float(tau), variant
        self.window, self.percentile = int(window), float(percentile)
        self.spread_tau, self.min_spread = float(spread_tau), float(min_spread)
        self.best: float | None = None
        self.recent: deque[float] = deque(maxlen=self.window)

    def start(self, best_initial: float | None) -> None:
        """Open the competition at ``best_initial`` (the spec: L1-uniform's search accuracy at the same budget).

        None opens it without a bar: the first feasible episode then gets reward 0 and becomes the bar
        (``"spread"`` and ``"ranked"`` give 0 until their window has two / one accuracies).
        """
        self.best = None if best_initial is None else float(best_initial)
        self.recent.clear()
        self._started = True

    def _check_started(self) -> None:
        if not getattr(self, "_started", False):
            raise RuntimeError("SelfCompetition.start(best_initial) was not called")

    def threshold(self) -> float | None:
        """The ranked variant's current bar (None before any bar exists)."""
        self._check_started()
        if self.recent:
            return float(np.percentile(np.fromiter(self.recent, dtype=np.float64), self.percentile))
        return self.best

    def spread_bar(self) -> tuple[float | None, float]:
        """The spread variant's (bar, scale) for the next episode (bar None before any bar exists)."""
        self._check_started()
        if len(self.recent) >= 2:
            window = np.fromiter(self.recent, dtype=np.float64)
            spread = max(float(window.std()), self.min_spread)
            return float(np.percentile(window, self.percentile)), self.spread_tau * spread
        return self.best, self.tau

    def __call__(self, acc: float, violation: float, target: float) -> float:
        if violation > 0:
            return -1.0 - self.kappa * float(violation) / float(target)
        acc = float(acc)
        if self.variant == "accuracy":
            r = acc / 100.0
        elif self.variant == "self":
            self._check_started()
            r = 0.0 if self.best is None else math.tanh((acc - self.best) / self.tau)
        elif self.variant == "spread":
            bar, scale = self.spread_bar()
            r = 0.0 if bar is None else math.tanh((acc - bar) / scale)
            self.recent.append(acc)
        else:
            bar = self.threshold()
            r = 0.0 if bar is None else (1.0 if acc > bar else -1.0)
            self.recent.append(acc)
        self.best = acc if self.best is None else max(self.best, acc)
        return r

    def state_dict(self) -> dict[str, Any]:
        """For a resumable search."""
        return {"best": self.best, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._started = True
        self.best = None if state["best"] is None else float(state["best"])
        self.recent = deque((float(a) for a in state["recent"]), maxlen=self.window)
