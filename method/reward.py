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

VARIANTS = ("self", "ranked", "accuracy")


class SelfCompetition:
    """Reward of one terminal state: ``r = reward(acc, violation, target)``.

    * violated (``violation > 0``, the budget-metric reduction still missing): ``-1 - kappa * violation / target``;
      violated episodes never move ``best`` or the ranked window.
    * ``"self"``: ``tanh((acc - best) / tau)`` then ``best = max(best, acc)``: positive only when the previous
      best is beaten, 0 on a tie, negative below.
    * ``"ranked"`` (Ranked Reward, Laterre et al. 2018): +1 if ``acc`` is above the ``percentile``-th percentile
      of the last ``window`` feasible accuracies (before this one is added), else -1; ties get -1 (deterministic,
      and consistent with "self": only strictly beating the bar pays). With an empty window the bar is ``best``.
    * ``"accuracy"``: ``acc / 100`` (ablation).
    ``acc`` is in percent; ``best`` is tracked by every variant.
    """

    def __init__(self, kappa: float = 1.0, tau: float = 0.5, variant: str = "self", window: int = 64,
                 percentile: float = 75) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"reward variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if kappa < 0 or tau <= 0 or window < 1 or not 0 <= percentile <= 100:
            raise ValueError("need kappa >= 0, tau > 0, window >= 1 and 0 <= percentile <= 100")
        self.kappa, self.tau, self.variant = float(kappa), float(tau), variant
        self.window, self.percentile = int(window), float(percentile)
        self.best: float | None = None
        self.recent: deque[float] = deque(maxlen=self.window)

    def start(self, best_initial: float) -> None:
        """Open the competition at ``best_initial`` (L1-uniform's search accuracy at the same budget)."""
        self.best = float(best_initial)
        self.recent.clear()

    def threshold(self) -> float:
        """The ranked variant's current bar."""
        if self.recent:
            return float(np.percentile(np.fromiter(self.recent, dtype=np.float64), self.percentile))
        if self.best is None:
            raise RuntimeError("SelfCompetition.start(best_initial) was not called")
        return self.best

    def __call__(self, acc: float, violation: float, target: float) -> float:
        if violation > 0:
            return -1.0 - self.kappa * float(violation) / float(target)
        acc = float(acc)
        if self.variant == "accuracy":
            r = acc / 100.0
        elif self.variant == "self":
            if self.best is None:
                raise RuntimeError("SelfCompetition.start(best_initial) was not called")
            r = math.tanh((acc - self.best) / self.tau)
        else:
            r = 1.0 if acc > self.threshold() else -1.0
            self.recent.append(acc)
        self.best = acc if self.best is None else max(self.best, acc)
        return r

    def state_dict(self) -> dict[str, Any]:
        """For a resumable search."""
        return {"best": self.best, "recent": list(self.recent)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])
        self.recent = deque((float(a) for a in state["recent"]), maxlen=self.window)
