"""PPO-Lagrangian (harness.search.ppo_lagrangian) on a small synthetic constrained environment.

The environment: episodes of 3 steps, an action a in [0, 1] per step; at the last step the reward is
100 x mean(a) and the cost 3 x 100 x mean(a), so the per-step mean cost over whole episodes is the mean
action in percent: the reward pulls a up, a budget below the policy's cost pushes it down.
"""
from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from harness.search.ppo import compute_gae
from harness.search.ppo_lagrangian import LagrangeMultiplier, PPOLagConfig, PPOLagrangian, step_costs

torch.set_num_threads(1)


class BudgetBandit(gym.Env):
    def __init__(self, length: int = 3) -> None:
        self.length = length
        self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self._t, self._acts = 0, []

    def _obs(self) -> np.ndarray:
        return np.array([self._t, sum(self._acts)], dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t, self._acts = 0, []
        return self._obs(), {}

    def step(self, action):
        self._acts.append(float(np.clip(action[0], 0, 1)))
        self._t += 1
        if self._t < self.length:
            return self._obs(), 0.0, False, False, {"cost": 0.0}
        m = float(np.mean(self._acts))
        return self._obs(), 100.0 * m, True, False, {"cost": self.length * 100.0 * m}


def _run(budget: float, updates: int, seed: int = 0, **kw) -> tuple[PPOLagrangian, list[dict]]:
    cfg = PPOLagConfig(n_envs=2, n_steps=24, minibatch_size=16, epochs=4, lr=3e-3, budget=budget, penalty_lr=0.1,
                       seed=seed, **kw)
    envs = SyncVectorEnv([BudgetBandit for _ in range(cfg.n_envs)], autoreset_mode=AutoresetMode.SAME_STEP)
    agent = PPOLagrangian(2, 1, cfg)
    agent.start(envs.reset(seed=seed)[0])
    stats = []
    for _ in range(updates):
        nu_before = agent.dual.nu
        agent.collect(envs)
        s = agent.update()
        stats.append({**s, "nu_before": nu_before})
    return agent, stats


def test_multiplier_rises_while_over_budget() -> None:
    _, stats = _run(budget=5.0, updates=6)
    for s in stats:
        assert s["mean_cost"] > 5.0
        assert s["nu"] > s["nu_before"], s


def test_multiplier_falls_while_under_budget() -> None:
    _, stats = _run(budget=99.0, updates=6)
    for s in stats:
        assert s["mean_cost"] < 99.0
        assert s["nu"] < s["nu_before"], s


def test_multiplier_follows_the_sign_of_the_violation() -> None:
    """Fed a cost over the budget, then under it: nu climbs, peaks shortly after the switch, then falls."""
    dual = LagrangeMultiplier(init=1.0, lr=0.1)
    trace = [dual.nu] + [dual.update(mean_cost=30.0, budget=20.0) for _ in range(10)]
    assert all(b > a for a, b in zip(trace, trace[1:]))
    later = [dual.update(mean_cost=10.0, budget=20.0) for _ in range(20)]
    top = int(np.argmax(later))
    assert top < 6  # Adam's momentum carries it a few steps past the switch, no more
    assert all(b < a for a, b in zip(later[top:], later[top + 1:]))
    assert later[-1] < trace[-1]
    floor = LagrangeMultiplier(init=1.0, lr=1.0, min_value=0.8)
    assert min(floor.update(0.0, 50.0) for _ in range(10)) == pytest.approx(0.8)


def test_constrained_policy_lowers_its_cost_towards_the_budget() -> None:
    """Reward alone pulls the mean action up; a budget of 15 % must bring the mean cost down instead."""
    _, stats = _run(budget=15.0, updates=15)
    first, last = np.mean([s["mean_cost"] for s in stats[:3]]), np.mean([s["mean_cost"] for s in stats[-3:]])
    assert last < first - 5.0, (first, last)


def test_step_costs_read_final_info_for_finished_envs() -> None:
    envs = SyncVectorEnv([BudgetBandit, BudgetBandit], autoreset_mode=AutoresetMode.SAME_STEP)
    envs.reset(seed=0)
    costs = []
    for _ in range(3):
        _, _, term, trunc, infos = envs.step(np.full((2, 1), 0.5, dtype=np.float32))
        costs.append(step_costs(infos, np.logical_or(term, trunc), 2))
    assert [list(c) for c in costs] == [[0, 0], [0, 0], [150.0, 150.0]]


def test_gae_matches_a_hand_computation() -> None:
    r = torch.tensor([0.0, 0.0, 1.0, 0.0])
    v = torch.tensor([0.5, 0.4, 0.3, 0.2])
    d = torch.tensor([0.0, 0.0, 1.0, 0.0])
    adv, ret = compute_gae(r, v, d, gamma=0.9, lmbda=0.8, last_value=0.7)
    # step 3 (unfinished episode): bootstrapped with last_value; step 2 ends an episode: no bootstrap
    d3 = 0.0 + 0.9 * 0.7 - 0.2
    d2 = 1.0 - 0.3
    d1 = 0.0 + 0.9 * 0.3 - 0.4
    d0 = 0.0 + 0.9 * 0.4 - 0.5
    expect = [d0 + 0.72 * (d1 + 0.72 * d2), d1 + 0.72 * d2, d2, d3]
    assert adv.tolist() == pytest.approx(expect, abs=1e-6)
    assert ret.tolist() == pytest.approx([a + b for a, b in zip(expect, v.tolist())], abs=1e-6)


def test_checkpoint_resumes_bit_for_bit() -> None:
    cfg = PPOLagConfig(n_envs=2, n_steps=12, minibatch_size=8, epochs=2, budget=20.0, seed=3)
    envs = SyncVectorEnv([BudgetBandit, BudgetBandit], autoreset_mode=AutoresetMode.SAME_STEP)
    agent = PPOLagrangian(2, 1, cfg)
    agent.start(envs.reset(seed=3)[0])
    agent.collect(envs)
    agent.update()
    saved = copy.deepcopy(agent.state_dict())
    env_state = [copy.deepcopy((e._t, e._acts)) for e in envs.envs]
    agent.collect(envs)
    a = agent.update()

    other = PPOLagrangian(2, 1, cfg)
    other.load_state_dict(saved)
    envs2 = SyncVectorEnv([BudgetBandit, BudgetBandit], autoreset_mode=AutoresetMode.SAME_STEP)
    for e, (t, acts) in zip(envs2.envs, env_state):
        e._t, e._acts = t, list(acts)
    other.collect(envs2)
    b = other.update()
    assert a == b
    for p, q in zip(agent.policy.parameters(), other.policy.parameters()):
        assert torch.equal(p, q)
