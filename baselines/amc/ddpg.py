"""AMC's DDPG agent (spec B.1, B.2 "Agent details" and "Update schedule"), on TorchRL's DDPG pieces.

What is AMC's and kept as the official code has it: actor = two ReLU layers of 300 and a sigmoid output;
critic = state and action each projected to the first hidden width, summed, ReLU, second layer, scalar;
Adam 1e-4 (actor) / 1e-3 (critic); soft target updates with tau = 0.01; minibatch 64; discount 1.
Warm-up episodes act uniformly at random in [0, 1] and learn nothing; afterwards the action is a truncated-
normal draw on [0, 1] around the actor's output with sigma_e = sigma * decay^(e - warmup). Every transition
of an episode is stored with the episode's final reward (Block-QNN), and after the warm-up one DDPG update
follows each stored transition (T updates per episode). Each update subtracts a moving-average baseline
(coefficient 0.5 over minibatch-mean rewards) from the sampled rewards before the critic target
y = r - b + discount * (1 - done) * Q'(s', mu'(s')). Critic: MSE; then the actor maximises Q with the
freshly updated critic; then both targets are soft-updated.

Library pieces: ``torchrl.objectives.DDPGLoss`` (its ``loss_value`` / ``loss_actor``, TD(0) target with the
target actor and critic), ``torchrl.objectives.SoftUpdate``, ``torchrl.data.ReplayBuffer`` over a
``LazyTensorStorage`` (ring buffer, uniform sampling) and ``torchrl.modules.TruncatedNormal``. Written by
hand, because no library has them: the moving-average reward baseline (applied to the sampled rewards before
``loss_value``), the per-episode noise schedule and the order critic-step-then-actor-loss of the official
update (``DDPGLoss.forward`` would compute both losses before either step).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers import RandomSampler
from torchrl.modules import Actor, TruncatedNormal, ValueOperator
from torchrl.objectives import DDPGLoss, SoftUpdate, ValueEstimators


@dataclass(frozen=True)
class DDPGConfig:
    """The agent's hyper-parameters; defaults are the paper's / official code's (spec B.2, B.4.7)."""

    hidden1: int = 300
    hidden2: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    replay_size: int = 2000
    discount: float = 1.0
    warmup: int = 100
    sigma: float = 0.5
    sigma_decay: float = 0.95
    baseline_alpha: float = 0.5


class Critic(nn.Module):
    """Q(s, a): ``fc3(relu(fc2(relu(fc11(s) + fc12(a)))))`` as the official ``Critic``."""

    def __init__(self, obs_dim: int, act_dim: int, hidden1: int, hidden2: int) -> None:
        super().__init__()
        self.fc11 = nn.Linear(obs_dim, hidden1)
        self.fc12 = nn.Linear(act_dim, hidden1)
        self.fc2 = nn.Linear(hidden1, hidden2)
        self.fc3 = nn.Linear(hidden2, 1)

    def forward(self, observation: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc11(observation) + self.fc12(action))
        return self.fc3(torch.relu(self.fc2(h)))


def actor_net(obs_dim: int, act_dim: int, hidden1: int, hidden2: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(obs_dim, hidden1), nn.ReLU(), nn.Linear(hidden1, hidden2), nn.ReLU(),
                         nn.Linear(hidden2, act_dim), nn.Sigmoid())


Transition = tuple[np.ndarray, float, np.ndarray, bool]  # s_t, a_t (as stored), s_{t+1}, done


class DDPGAgent:
    """Acts (:meth:`act`), stores episodes (:meth:`observe`) and learns (:meth:`update`); CPU float32."""

    def __init__(self, obs_dim: int, cfg: DDPGConfig = DDPGConfig()) -> None:
        self.cfg = cfg
        self.obs_dim = int(obs_dim)
        self.actor = Actor(actor_net(obs_dim, 1, cfg.hidden1, cfg.hidden2), in_keys=["observation"])
        critic = ValueOperator(Critic(obs_dim, 1, cfg.hidden1, cfg.hidden2), in_keys=["observation", "action"])
        self.loss = DDPGLoss(self.actor, critic, loss_function="l2", delay_actor=True, delay_value=True)
        self.loss.make_value_estimator(ValueEstimators.TD0, gamma=cfg.discount)
        self.target_update = SoftUpdate(self.loss, tau=cfg.tau)
        self.actor_optim = torch.optim.Adam(self.loss.actor_network_params.values(True, True), lr=cfg.lr_actor)
        self.critic_optim = torch.optim.Adam(self.loss.value_network_params.values(True, True), lr=cfg.lr_critic)
        self.memory = ReplayBuffer(storage=LazyTensorStorage(cfg.replay_size), sampler=RandomSampler(),
                                   batch_size=cfg.batch_size)
        self.moving_average: float | None = None
        self.updates = 0

    # -- acting ---------------------------------------------------------------------------------------------
    def sigma(self, episode: int) -> float:
        """Exploration sigma of an episode after the warm-up (NaN during the warm-up: uniform actions)."""
        if episode < self.cfg.warmup:
            return float("nan")
        return self.cfg.sigma * self.cfg.sigma_decay ** (episode - self.cfg.warmup)

    @torch.no_grad()
    def mean_action(self, obs: np.ndarray) -> float:
        """The actor's output mu(s); its plain module (same parameters as the loss's), without TensorDict
        wrapping, which costs more than the 300-300 forward pass itself at batch size 1."""
        return float(self.actor.module(torch.as_tensor(obs, dtype=torch.float32).view(1, -1)).view(-1)[0])

    @torch.no_grad()
    def act(self, obs: np.ndarray, episode: int) -> float:
        """Uniform in [0, 1] during the warm-up, else a truncated normal on [0, 1] around the actor's output."""
        if episode < self.cfg.warmup:
            return float(torch.rand(()))
        mu = self.mean_action(obs)
        sigma = self.sigma(episode)
        if sigma <= 1e-8:
            return mu
        dist = TruncatedNormal(torch.tensor([mu]), torch.tensor([sigma]), low=0.0, high=1.0)
        return float(min(1.0, max(0.0, float(dist.sample().view(-1)[0]))))

    # -- learning -------------------------------------------------------------------------------------------
    def store(self, transition: Transition, reward: float) -> None:
        """One transition with the episode's final reward into the replay buffer."""
        s, a, s2, done = transition
        self.memory.add(TensorDict({
            "observation": torch.as_tensor(s, dtype=torch.float32).view(-1),
            "action": torch.tensor([float(a)], dtype=torch.float32),
            ("next", "observation"): torch.as_tensor(s2, dtype=torch.float32).view(-1),
            ("next", "reward"): torch.tensor([float(reward)], dtype=torch.float32),
            ("next", "done"): torch.tensor([bool(done)]),
            ("next", "terminated"): torch.tensor([bool(done)]),
        }, []))

    def observe(self, episode: int, transitions: Sequence[Transition], reward: float) -> int:
        """Store an episode; after the warm-up, one update per stored transition. Returns the update count."""
        n = 0
        for tr in transitions:
            self.store(tr, reward)
            if episode >= self.cfg.warmup and len(self.memory) >= self.cfg.batch_size:
                self.update()
                n += 1
        return n

    def update(self) -> dict[str, float]:
        """One DDPG step on a minibatch: baseline, critic, actor, soft target update."""
        batch = self.memory.sample()
        r = batch["next", "reward"]
        mean = float(r.mean())
        self.moving_average = mean if self.moving_average is None else \
            self.moving_average + self.cfg.baseline_alpha * (mean - self.moving_average)
        batch.set(("next", "reward"), r - self.moving_average)
        value_loss, _ = self.loss.loss_value(batch)
        self.critic_optim.zero_grad(set_to_none=True)
        value_loss.backward()
        self.critic_optim.step()
        actor_loss, _ = self.loss.loss_actor(batch)
        self.actor_optim.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_optim.step()
        self.target_update.step()
        self.updates += 1
        return {"value_loss": float(value_loss.detach()), "actor_loss": float(actor_loss.detach())}

    # -- checkpoint -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"loss": self.loss.state_dict(), "actor_optim": self.actor_optim.state_dict(),
                "critic_optim": self.critic_optim.state_dict(), "memory": self.memory.state_dict(),
                "moving_average": self.moving_average, "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loss.load_state_dict(state["loss"])
        self.actor_optim.load_state_dict(state["actor_optim"])
        self.critic_optim.load_state_dict(state["critic_optim"])
        self.memory.load_state_dict(state["memory"])
        self.moving_average = state["moving_average"]
        self.updates = int(state["updates"])


def run_episode(env: Any, agent: DDPGAgent, episode: int, *, seed: int | None = None) -> tuple[float, dict, int]:
    """One episode of the official ``train`` loop: act, step, then store/learn. Returns (reward, info, updates).

    The stored action is the agent's action before the environment's clipping and wall (as the official
    code, which walls inside ``env.step``); the state's a_{t-1} is the executed one.
    """
    obs, info = env.reset(seed=seed)
    transitions: list[Transition] = []
    reward, done = 0.0, False
    while not done:
        action = agent.act(obs, episode)
        obs2, reward, terminated, truncated, info = env.step(np.array([action], dtype=np.float32))
        done = bool(terminated or truncated)
        transitions.append((obs, action, obs2, done))
        obs = obs2
    if not math.isfinite(reward):
        raise RuntimeError(f"episode {episode}: non-finite reward {reward}")
    updates = agent.observe(episode, transitions, float(reward))
    return float(reward), info, updates
