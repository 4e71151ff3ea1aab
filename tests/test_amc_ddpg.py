"""AMC's DDPG agent: it learns a known reward function; its schedule and checkpoint behave as specified."""
from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

from baselines.amc.ddpg import DDPGAgent, DDPGConfig, run_episode
from baselines.amc.rewards import reward_fn


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class TargetRatios(gym.Env):
    """Six steps; reward = -sum_t (a_t - target_t)^2 at the end. State: one-hot step and previous action."""

    TARGET = np.array([0.2, 0.9, 0.5, 0.3, 0.7, 0.1])

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0.0, 1.0, (7,), np.float32)
        self.action_space = spaces.Box(0.0, 1.0, (1,), np.float32)

    def _obs(self) -> np.ndarray:
        o = np.zeros(7, np.float32)
        o[min(self.t, 5)] = 1.0
        o[6] = self.prev
        return o

    def reset(self, *, seed=None, options=None):
        self.t, self.prev, self.actions = 0, 1.0, []
        return self._obs(), {}

    def step(self, action):
        a = float(np.clip(np.asarray(action).reshape(-1)[0], 0.0, 1.0))
        self.actions.append(a)
        self.prev, self.t = a, self.t + 1
        done = self.t == len(self.TARGET)
        reward = -float(((np.array(self.actions) - self.TARGET) ** 2).sum()) if done else 0.0
        return self._obs(), reward, done, False, {}


def _train(warmup: int, episodes: int, seed: int = 0, batch_size: int = 64) -> tuple[list[float], DDPGAgent]:
    torch.manual_seed(seed)
    agent = DDPGAgent(7, DDPGConfig(warmup=warmup, batch_size=batch_size))
    env, rewards = TargetRatios(), []
    for e in range(episodes):
        torch.manual_seed(seed * 1_000_003 + e)
        r, _, updates = run_episode(env, agent, e)
        assert updates == (0 if e < warmup or 6 * warmup < agent.cfg.batch_size else 6)  # one per transition
        rewards.append(r)
    return rewards, agent


def test_ddpg_beats_its_random_warmup() -> None:
    """With the paper's agent (300-300, lr 1e-4/1e-3, tau 0.01, batch 64), 20 DDPG episodes after 11 random
    ones find a better action sequence than the best random one (uniform actions: the best of 11 is about -0.5)."""
    rewards, agent = _train(warmup=11, episodes=31)
    assert max(rewards[11:]) > max(rewards[:11]) + 0.1
    assert agent.moving_average is not None and agent.updates == 120


def test_noise_schedule_and_actions_stay_in_range() -> None:
    agent = DDPGAgent(3, DDPGConfig(warmup=4))
    assert np.isnan(agent.sigma(3))
    assert agent.sigma(4) == pytest.approx(0.5) and agent.sigma(6) == pytest.approx(0.5 * 0.95 ** 2)
    torch.manual_seed(0)
    obs = np.array([0.1, 0.5, 0.9], np.float32)
    acts = [agent.act(obs, e) for e in range(4)] + [agent.act(obs, 4) for _ in range(200)]
    assert all(0.0 <= a <= 1.0 for a in acts)
    late = DDPGAgent(3, DDPGConfig(warmup=0, sigma_decay=0.5))
    assert late.act(obs, 60) == pytest.approx(late.mean_action(obs))  # sigma ~ 1e-19: the actor's output


def test_checkpoint_round_trip_continues_identically() -> None:
    _, agent = _train(warmup=2, episodes=4, batch_size=8)
    assert agent.updates == 12
    buf = io.BytesIO()
    torch.save(agent.state_dict(), buf)
    buf.seek(0)
    twin = DDPGAgent(7, DDPGConfig(warmup=2, batch_size=8))
    twin.load_state_dict(torch.load(buf, weights_only=False))
    env = TargetRatios()
    out = []
    for a in (agent, twin):
        torch.manual_seed(123)
        out.append(run_episode(env, a, 4)[0])
        out.append(a.mean_action(np.ones(7, np.float32)))
    assert out[:2] == out[2:]


def test_rewards() -> None:
    assert reward_fn("err")(75.0, 100, 10) == pytest.approx(-0.25)
    assert reward_fn("flops")(75.0, 100, 10) == pytest.approx(-0.25 * np.log(100))
    assert reward_fn("param")(75.0, 100, 10) == pytest.approx(-0.25 * np.log(10))
