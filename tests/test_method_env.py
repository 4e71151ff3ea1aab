"""The graph-RL environment: every terminal plan meets the budget, the wall caps actions, masks update in
place, the reward is wired to self-competition, and episodes are deterministic."""
from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from harness.metrics import complexity
from harness.prune import Budget, CostModel, apply_plan, build_graph, find_groups
from method.env import PruningEnv
from method.graph import COL_CURRENT, COL_KEPT, COL_PRUNED, COL_UNDECIDED
from method.reward import SelfCompetition
from tiny_models import CifarResNet, MobileNetV2Like, randomize_bn

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class FakeEval:
    """Accuracy from a fixed list (cycled), or a constant; records every plan it saw."""

    def __init__(self, accs=(50.0,)) -> None:
        self.accs, self.calls = list(accs), []

    def evaluate(self, keep) -> float:
        self.calls.append(keep)
        return float(self.accs[(len(self.calls) - 1) % len(self.accs)])


def _setup(cls):
    torch.manual_seed(0)
    model = randomize_bn(cls())
    graph = build_graph(model, X)
    groups = find_groups(model, X, graph=graph)
    return model, graph, groups, CostModel(model, X, groups, graph=graph)


@pytest.fixture(scope="module")
def resnet():
    return _setup(CifarResNet)


@pytest.fixture(scope="module")
def mobilenet():
    return _setup(MobileNetV2Like)


def _env(setup, metric="macs", target=0.5, mode="sequential", action="binary", evaluator=None, reward=None,
         **kw) -> PruningEnv:
    model, graph, groups, cost = setup
    if reward is None:
        reward = SelfCompetition()
        reward.start(0.0)
    return PruningEnv(model, X, groups, cost, Budget(metric, target), evaluator or FakeEval(), reward,
                      0.1, mode, action, graph=graph, **kw)


def _random_action(env: PruningEnv, rng: np.random.Generator, style: int):
    """Random actions in every accepted form: ratios, 0/1 ints, probabilities, dict with logits."""
    if env.action_type == "ratio":
        return rng.random(env.action_space.shape[0])
    n = env.action_space.n
    p = rng.random()  # keep probability of this episode/step: from almost nothing to almost everything
    if style == 0:
        return (rng.random(n) < p).astype(np.int64)
    if style == 1:
        return torch.from_numpy(rng.random(n)).float()
    return {"keep": torch.from_numpy(rng.random(n) < p), "scores": torch.from_numpy(rng.normal(size=n))}


def _run(env: PruningEnv, seed: int, actions=None):
    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    done, taken, r = False, [], 0.0
    while not done:
        a = actions[len(taken)] if actions is not None else _random_action(env, rng, seed % 3)
        taken.append(a)
        obs, r, done, trunc, info = env.step(a)
        assert not trunc
        if not done:
            assert r == 0.0
    return r, info, taken


def _check_min_keep(env: PruningEnv, keep: dict) -> None:
    for g in env.groups:
        assert len(keep[g.id]) >= env.min_keeps[g.id]
        assert keep[g.id] == sorted(set(keep[g.id]))
        assert all(0 <= i < g.size for i in keep[g.id])


@pytest.mark.parametrize("mode,action", list(itertools.product(("sequential", "one-shot"), ("binary", "ratio"))))
@pytest.mark.parametrize("metric", ["macs", "params"])
def test_random_actions_always_feasible(resnet, mobilenet, mode, action, metric):
    for setup, seeds in ((resnet, range(20)), (mobilenet, range(5))):
        for target in (0.3, 0.5, 0.7):
            env = _env(setup, metric, target, mode, action)
            for seed in seeds:
                r, info, _ = _run(env, seed)
                _check_min_keep(env, info["keep"])
                achieved = env.cost.reduction({k: len(v) for k, v in info["keep"].items()}, metric)
                assert achieved >= target - 1e-9, (mode, action, metric, target, seed)
                assert info["feasible"] and info["violation"] == 0.0 and info["cost"] == 0.0
                assert info["achieved"] == pytest.approx(achieved)
                if mode == "sequential":  # the wall alone keeps every step feasible
                    assert info["projection_dropped"] == 0


@pytest.mark.parametrize("mode,action,metric,target",
                         [("sequential", "binary", "macs", 0.5), ("one-shot", "binary", "params", 0.7),
                          ("sequential", "ratio", "params", 0.3), ("one-shot", "ratio", "macs", 0.7)])
def test_physical_pruning_meets_target(resnet, mode, action, metric, target):
    model = resnet[0]
    base = complexity(model, (3, 32, 32))
    env = _env(resnet, metric, target, mode, action)
    for seed in range(2):
        _, info, _ = _run(env, seed)
        pruned = apply_plan(copy.deepcopy(model), info["keep"], X)
        c = complexity(pruned, (3, 32, 32))
        assert (c.macs, c.params) == (info["macs"], info["params"])
        red = 1 - (c.macs / base.macs if metric == "macs" else c.params / base.params)
        assert red >= target - 1e-9


@pytest.mark.parametrize("metric", ["macs", "params"])
@pytest.mark.parametrize("target", [0.3, 0.7])
def test_wall_caps_keep_everything(resnet, metric, target):
    env = _env(resnet, metric, target)
    env.reset(seed=0)
    done, walled = False, 0
    while not done:
        gi = env.current_group
        cap = env._info()["max_keep"]
        _, r, done, _, info = env.step(torch.ones(env.groups[gi].size, dtype=torch.bool))
        if not done:
            assert len(info["decided_keep"]) == min(cap, env.groups[gi].size)
        walled += env.groups[gi].size - cap
    assert info["feasible"] and info["projection_dropped"] == 0
    assert info["wall_dropped"] == walled > 0
    assert env.cost.reduction({k: len(v) for k, v in info["keep"].items()}, metric) >= target - 1e-9


def test_wall_drops_lowest_scores_and_min_keep_adds_highest(resnet):
    env = _env(resnet, "macs", 0.7)
    env.reset(seed=0)
    # walk to the first group whose wall binds, keeping everything before it
    while env._info()["max_keep"] == env.groups[env.current_group].size:
        g = env.groups[env.current_group]
        env.step(torch.ones(g.size, dtype=torch.bool))
    g = env.groups[env.current_group]
    cap = env._info()["max_keep"]
    scores = torch.randn(g.size, generator=torch.Generator().manual_seed(1)).double()
    _, _, _, _, info = env.step({"keep": torch.ones(g.size, dtype=torch.bool), "scores": scores})
    assert info["decided_keep"] == sorted(scores.argsort(descending=True)[:cap].tolist())
    # min_keep: keep nothing -> the highest-scored channels come back
    env.reset(seed=0)
    g = env.groups[0]
    scores = torch.randn(g.size, generator=torch.Generator().manual_seed(2)).double()
    _, _, _, _, info = env.step({"keep": torch.zeros(g.size), "scores": scores})
    assert info["min_keep_added"] == env.min_keeps[g.id]
    assert info["decided_keep"] == sorted(scores.argsort(descending=True)[:env.min_keeps[g.id]].tolist())


def test_one_shot_projection_drops_lowest_scores(resnet):
    env = _env(resnet, "macs", 0.5, "one-shot", projection_penalty=2.0)
    env.reset(seed=0)
    scores = torch.randn(env.num_channels, generator=torch.Generator().manual_seed(3)).double()
    _, r, done, _, info = env.step({"keep": torch.ones(env.num_channels), "scores": scores})
    assert done and info["feasible"] and info["projection_dropped"] > 0
    dropped_scores, kept_scores = [], []
    for gi, g in enumerate(env.groups):
        s = scores[env.pg.channel_slice(gi)]
        kept = set(info["keep"][g.id])
        for j in range(g.size):
            (kept_scores if j in kept else dropped_scores).append(float(s[j]))
        if len(kept) == env.min_keeps[g.id]:
            continue  # a group at its floor may keep low scores
    assert info["projection_penalty"] == pytest.approx(2.0 * info["projection_dropped"] / env.num_channels)
    assert r == pytest.approx(info["base_reward"] - info["projection_penalty"])
    # every dropped channel scores below the median kept one (dropping is global, lowest first)
    assert max(dropped_scores) <= float(np.quantile(kept_scores, 0.9))


def test_mask_state_in_place(resnet):
    env = _env(resnet, "params", 0.5, topk_channel_edges=4)
    data0, x0 = env.data, env.data.x
    ptr = x0.data_ptr()
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=0)
    assert obs is data0 and obs.x is x0
    decided: dict[int, list[int]] = {}
    done = False
    while not done:
        gi = env.current_group
        rows = env.pg.channel_slice(gi)
        assert (obs.x[rows, COL_CURRENT] == 1).all() and int(obs.x[:, COL_CURRENT].sum()) == env.groups[gi].size + 1
        obs, r, done, _, info = env.step(_random_action(env, rng, 0))
        assert obs is data0 and obs.x is x0 and obs.x.data_ptr() == ptr
        if not done:
            decided[gi] = info["decided_keep"]
            for gj, g in enumerate(env.groups):
                rows = env.pg.channel_slice(gj)
                if gj in decided:
                    want = torch.zeros(g.size)
                    want[decided[gj]] = 1
                    assert torch.equal(obs.x[rows, COL_KEPT], want)
                    assert torch.equal(obs.x[rows, COL_PRUNED], 1 - want)
                    assert (obs.x[rows, COL_UNDECIDED] == 0).all()
                else:
                    assert (obs.x[rows, COL_UNDECIDED] == 1).all()
            assert info["remaining_budget"] == pytest.approx(
                max(0.0, 0.5 - env.cost.reduction({env.groups[k].id: len(v) for k, v in decided.items()}, "params")),
                abs=1e-6)
    for gi, g in enumerate(env.groups):
        want = torch.zeros(g.size)
        want[info["keep"][g.id]] = 1
        assert torch.equal(obs.x[env.pg.channel_slice(gi), COL_KEPT], want)
    assert (obs.x[:, COL_CURRENT] == 0).all()
    env.reset(seed=1)
    assert obs.x is x0 and (obs.x[env.pg.channel_slice(0), COL_UNDECIDED] == 1).all()
    assert (obs.x[env.pg.channel_slice(0), COL_CURRENT] == 1).all()


def test_reward_positive_exactly_when_best_beaten(resnet):
    accs = [50.0, 49.0, 51.0, 51.0, 52.5, 52.0, 60.0]
    reward = SelfCompetition(tau=0.5)
    reward.start(49.5)
    env = _env(resnet, "macs", 0.5, evaluator=FakeEval(accs), reward=reward)
    best = 49.5
    for seed, acc in enumerate(accs):
        r, info, _ = _run(env, seed)
        assert info["accuracy"] == acc and info["projection_dropped"] == 0
        assert (r > 0) == (acc > best), (acc, best, r)
        if acc == best:
            assert r == 0.0
        best = max(best, acc)
        assert info["best"] == best


def test_infeasible_target_gets_violation_reward(resnet):
    reward = SelfCompetition(kappa=1.0)
    reward.start(0.0)
    env = _env(resnet, "params", 0.99, reward=reward)
    r, info, _ = _run(env, 0)
    assert not info["feasible"] and info["violation"] > 0 and info["cost"] == info["violation"]
    assert info["base_reward"] == pytest.approx(-1 - info["violation"] / 0.99)
    _check_min_keep(env, info["keep"])


@pytest.mark.parametrize("mode,action", list(itertools.product(("sequential", "one-shot"), ("binary", "ratio"))))
def test_deterministic(resnet, mode, action):
    out = []
    for _ in range(2):
        env = _env(resnet, "macs", 0.5, mode, action, evaluator=FakeEval([55.0]))
        r, info, actions = _run(env, 7)
        r2, info2, _ = _run(env, 7, actions)  # replay the same actions in the same env
        assert info2["keep"] == info["keep"]
        out.append((r, info["keep"], env.action_space.sample() if mode == "sequential" else None))
    assert out[0][0] == out[1][0] and out[0][1] == out[1][1]


def test_rejects_bad_actions(resnet):
    from harness.errors import UserError
    env = _env(resnet)
    env.reset(seed=0)
    with pytest.raises(UserError):
        env.step(torch.ones(env.groups[0].size + 1))
    with pytest.raises(UserError):
        _env(resnet, mode="bogus")
    env2 = _env(resnet)
    with pytest.raises(RuntimeError):
        env2.step(torch.ones(3))
