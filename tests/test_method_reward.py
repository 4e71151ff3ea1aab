"""method.reward: graph-RL's self-competition reward (spec decision 6)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from method.reward import SelfCompetition


def test_self_positive_only_when_best_is_beaten():
    r = SelfCompetition(tau=0.5)
    r.start(70.0)
    assert r.best == 70.0
    assert r(70.0, 0.0, 0.5) == 0.0          # a tie is not a win
    assert r(69.0, 0.0, 0.5) < 0 and r.best == 70.0
    v = r(71.0, 0.0, 0.5)
    assert v == pytest.approx(math.tanh(2.0)) and v > 0 and r.best == 71.0
    assert r(70.5, 0.0, 0.5) == pytest.approx(math.tanh(-1.0))  # against the new best
    assert r(71.0, 0.0, 0.5) == 0.0
    assert r.best == 71.0


def test_violation_penalty_scales_and_leaves_best_alone():
    for variant in ("self", "ranked", "accuracy"):
        r = SelfCompetition(kappa=2.0, variant=variant)
        r.start(50.0)
        assert r(99.0, 0.1, 0.5) == pytest.approx(-1.0 - 2.0 * 0.1 / 0.5)
        assert r(99.0, 0.2, 0.5) == pytest.approx(-1.0 - 2.0 * 0.2 / 0.5)
        assert r(99.0, 0.2, 0.5) < r(99.0, 0.1, 0.5) < -1.0
        assert r.best == 50.0
        assert r(40.0, 0.0, 0.5) > -1.0 - 1e-12 or variant == "ranked"  # feasible never worse than any violation
    assert SelfCompetition(kappa=0.0)(10.0, 0.3, 0.5) == -1.0


def test_ranked_against_percentile_of_recent_feasible():
    r = SelfCompetition(variant="ranked", window=4, percentile=75)
    r.start(60.0)
    assert r(61.0, 0.0, 0.5) == 1.0           # empty window: the bar is the opening best
    assert r(59.0, 0.0, 0.5) == -1.0          # window [61]: bar 61
    for a in (50.0, 52.0):
        r(a, 0.0, 0.5)                        # window [61, 59, 50, 52]
    bar = float(np.percentile([61.0, 59.0, 50.0, 52.0], 75))
    assert r.threshold() == pytest.approx(bar)
    assert r(bar + 0.01, 0.0, 0.5) == 1.0     # window now [59, 50, 52, bar+.01] (maxlen 4)
    assert list(r.recent) == [59.0, 50.0, 52.0, bar + 0.01]
    t = r.threshold()
    assert r(t, 0.0, 0.5) == -1.0             # ties lose (deterministic)
    assert r(t - 1, 0.0, 0.5) == -1.0
    r(100.0, 0.5, 0.5)                        # violated episodes do not enter the window
    assert 100.0 not in r.recent and r.best == max(61.0, bar + 0.01)


def test_accuracy_variant_and_validation():
    r = SelfCompetition(variant="accuracy")
    assert r(87.5, 0.0, 0.5) == pytest.approx(0.875) and r.best == 87.5
    with pytest.raises(ValueError):
        SelfCompetition(variant="nope")
    with pytest.raises(ValueError):
        SelfCompetition(tau=0.0)
    with pytest.raises(RuntimeError):
        SelfCompetition()(50.0, 0.0, 0.5)     # "self" needs start()


def test_state_roundtrip():
    r = SelfCompetition(variant="ranked", window=3)
    r.start(10.0)
    for a in (11.0, 12.0, 9.0, 13.0):
        r(a, 0.0, 0.5)
    s = SelfCompetition(variant="ranked", window=3)
    s.load_state_dict(r.state_dict())
    assert s.best == r.best == 13.0 and list(s.recent) == list(r.recent) == [12.0, 9.0, 13.0]
    assert s(12.5, 0.0, 0.5) == r(12.5, 0.0, 0.5)


# ---------------------------------------------------------------------------------------------- spread
def _episodes(n: int = 200, seed: int = 0) -> list[float]:
    """Search accuracies like a real search's: mostly well below the bar, slowly improving, noisy."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [float(30.0 + 0.05 * i + rng.normal(0.0, 6.0)) for i in range(n)]


def test_spread_reward_is_graded_where_self_competition_saturates() -> None:
    """Issue 12: with the L1 opening bar 13 points above a typical episode, "self" gives r <= -0.99 to most
    episodes; "spread" measures each episode against the agent's own recent ones and stays graded."""
    accs = _episodes()
    saturated = {}
    for variant in ("self", "spread"):
        rc = SelfCompetition(variant=variant, tau=0.5)
        rc.start(45.0)
        rewards = [rc(a, 0.0, 0.5) for a in accs]
        saturated[variant] = sum(abs(r) >= 0.99 for r in rewards[8:]) / len(rewards[8:])
    assert saturated["self"] > 0.8, saturated
    assert saturated["spread"] < 0.05, saturated


def test_spread_reward_orders_episodes_by_accuracy_within_its_window() -> None:
    rc = SelfCompetition(variant="spread", spread_tau=2.0, percentile=50)
    rc.start(None)
    assert rc(40.0, 0.0, 0.5) == 0.0  # no bar yet
    assert rc(50.0, 0.0, 0.5) == pytest.approx(math.tanh((50.0 - 40.0) / 0.5))  # bar = the first, scale = tau
    bar, scale = rc.spread_bar()
    assert bar == pytest.approx(45.0) and scale == pytest.approx(2.0 * 5.0)  # median and 2 x std of (40, 50)
    assert rc(47.0, 0.0, 0.5) > 0.0 > rc(43.0, 0.0, 0.5)
    assert rc(30.0, 0.1, 0.5) < -1.0  # a violated budget is still penalised, whatever the window
    with pytest.raises(ValueError):
        SelfCompetition(variant="spread", spread_tau=0.0)


def test_no_opening_bar_gives_the_first_episode_a_zero_reward() -> None:
    for variant in ("self", "ranked", "spread"):
        rc = SelfCompetition(variant=variant)
        rc.start(None)
        assert rc(40.0, 0.0, 0.5) == 0.0
        assert rc(60.0, 0.0, 0.5) > 0.0
    with pytest.raises(RuntimeError):
        SelfCompetition(variant="spread")(40.0, 0.0, 0.5)  # start() not called
