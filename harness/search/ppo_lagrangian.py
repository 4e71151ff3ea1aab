"""PPO-Lagrangian for vector observations and continuous actions (the constrained-RL pruner's learner).

Faithful to the official code of Malik et al. (ICPR 2022; ``specs/baselines.md`` A.3), a fork of
Stable-Baselines3 (SB3): what SB3 does is reproduced, and where we write it ourselves it is because the
fork is not a dependency we can take (an SB3 fork pinned to 2021) and the pieces are short:

* **Actor and two critics**: separate MLPs (default 2 x 32, tanh) for the policy mean, the reward value
  and the cost value; SB3's orthogonal init (gain sqrt(2) for hidden layers, 0.01 for the action mean, 1 for
  the values); a state-independent log-std (init 0); Adam (SB3's PPO eps 1e-5).
* **Normalisation** (SB3 ``VecNormalize`` extended with costs, as ``pruning/utils.py`` builds it with
  ``norm_cost=True``): observations by running mean/var (clip 10); rewards and costs divided by the running
  std of their discounted return (clip 10). The running statistics are gymnasium's ``RunningMeanStd``.
* **Advantages**: separate GAE for reward and cost (TorchRL's functional GAE via
  :func:`harness.search.ppo.compute_gae`), per env, bootstrapped with the critics at the rollout's end.
* **Loss per minibatch**: reward advantages standardised, cost advantages mean-centred;
  ``(L_clip + nu * mean(ratio * A_c)) / (1 + nu)`` + 0.5 MSE per critic; entropy coefficient 0; gradient-norm
  clip 0.5; the remaining epochs stop once the approximate KL exceeds 1.5 x target_kl (SB3 >= 1.1: checked
  before the step).
* **Dual variable**: ``nu = softplus(theta)``, its own Adam on ``-nu * (mean cost - budget)`` once per
  rollout after the policy epochs, where the mean cost is the *unnormalised* per-step cost over the whole
  rollout buffer; then clamped to ``nu >= penalty_min``. So nu rises while the mean cost is over the budget.

Generic over environments: :meth:`PPOLagrangian.collect` drives any gymnasium ``VectorEnv`` in
``SAME_STEP`` autoreset mode (SB3's semantics: the observation after a terminal step is the reset one)
whose step infos carry a ``"cost"``. Everything is seeded by explicit generators and checkpointable with
:meth:`PPOLagrangian.state_dict`, so a search resumes bit-for-bit on the CPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch
from gymnasium.wrappers.utils import RunningMeanStd
from torch import Tensor, nn

from harness.search.ppo import compute_gae

__all__ = ["PPOLagConfig", "GaussianActorTwoCritics", "LagrangeMultiplier", "VecNormalizer", "PPOLagrangian",
           "RolloutStorage", "inverse_softplus"]


@dataclass(frozen=True)
class PPOLagConfig:
    """PPO-Lagrangian hyper-parameters; defaults are the README commands of the official code (A.3).

    ``budget``: the bound on the mean per-step unnormalised cost (README ``-b``). ``n_envs`` x ``n_steps``
    transitions per rollout (README: 3 x 128). ``penalty_*``: nu's initial value, learning rate and floor
    (README: 1, 1, 0). ``log_std_init`` / ``action_mean_init``: the Gaussian's initial log-std and mean
    (SB3: 0 and 0).
    """

    n_envs: int = 3
    n_steps: int = 128
    minibatch_size: int = 64
    epochs: int = 10
    lr: float = 3e-4
    adam_eps: float = 1e-5
    clip: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    cost_gamma: float = 0.99
    cost_gae_lambda: float = 1.0
    value_coef: float = 0.5
    cost_value_coef: float = 0.5
    entropy_coef: float = 0.0
    max_grad_norm: float = 0.5
    target_kl: float | None = 0.1
    hidden: tuple[int, ...] = (32, 32)
    log_std_init: float = 0.0
    action_mean_init: float = 0.0
    penalty_init: float = 1.0
    penalty_lr: float = 1.0
    penalty_min: float = 0.0
    budget: float = 0.0
    normalize_obs: bool = True
    normalize_reward: bool = True
    normalize_cost: bool = True
    clip_obs: float = 10.0
    clip_reward: float = 10.0
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_envs, self.n_steps, self.minibatch_size, self.epochs) < 1:
            raise ValueError("n_envs, n_steps, minibatch_size and epochs must be >= 1")
        if self.lr <= 0 or self.penalty_lr <= 0:
            raise ValueError("lr and penalty_lr must be > 0")
        if not 0.0 < self.clip < 1.0:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")
        for name in ("gamma", "gae_lambda", "cost_gamma", "cost_gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.penalty_init <= 0 or self.penalty_min < 0:
            raise ValueError("penalty_init must be > 0 and penalty_min >= 0")
        if self.target_kl is not None and self.target_kl <= 0:
            raise ValueError("target_kl must be > 0 or None")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("hidden must list at least one layer width >= 1")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def inverse_softplus(y: float) -> float:
    """theta with softplus(theta) = y (> 0)."""
    return float(y + math.log(-math.expm1(-y)))


def _mlp(inp: int, hidden: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(inp, h), nn.Tanh()]
        inp = h
    return nn.Sequential(*layers)


def _ortho(module: nn.Module, gain: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, gain=gain)
            nn.init.zeros_(m.bias)


class GaussianActorTwoCritics(nn.Module):
    """SB3's ``ActorTwoCriticsPolicy`` without shared layers: policy, reward-value and cost-value MLPs."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: tuple[int, ...] = (32, 32),
                 log_std_init: float = 0.0, action_mean_init: float = 0.0) -> None:
        super().__init__()
        self.pi, self.vf, self.cvf = _mlp(obs_dim, hidden), _mlp(obs_dim, hidden), _mlp(obs_dim, hidden)
        self.mean = nn.Linear(hidden[-1], act_dim)
        self.value = nn.Linear(hidden[-1], 1)
        self.cost_value = nn.Linear(hidden[-1], 1)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        for body in (self.pi, self.vf, self.cvf):
            _ortho(body, math.sqrt(2))
        _ortho(self.mean, 0.01)
        nn.init.constant_(self.mean.bias, float(action_mean_init))  # SB3: 0
        _ortho(self.value, 1.0)
        _ortho(self.cost_value, 1.0)

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(action mean [B, A], reward value [B], cost value [B])."""
        return (self.mean(self.pi(obs)), self.value(self.vf(obs)).squeeze(-1),
                self.cost_value(self.cvf(obs)).squeeze(-1))

    def log_prob(self, mean: Tensor, action: Tensor) -> Tensor:
        """Diagonal Gaussian log-density summed over action dims [B] (written out: no Distribution overhead)."""
        z = (action - mean) * torch.exp(-self.log_std)
        return (-0.5 * z.pow(2) - self.log_std - _HALF_LOG_2PI).sum(-1)

    def entropy(self, mean: Tensor) -> Tensor:
        return (0.5 + _HALF_LOG_2PI + self.log_std).sum().expand(mean.shape[:-1])

    def sample(self, mean: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype)
        return mean + self.log_std.exp() * noise


class LagrangeMultiplier(nn.Module):
    """nu = softplus(theta), learned by its own Adam on ``-nu * (mean_cost - budget)``; floor ``min_value``."""

    def __init__(self, init: float = 1.0, lr: float = 1.0, min_value: float = 0.0) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(inverse_softplus(init), dtype=torch.float64))
        self.min_value = float(min_value)
        self.optimizer = torch.optim.Adam([self.theta], lr=lr)

    @property
    def nu(self) -> float:
        with torch.no_grad():
            return float(nn.functional.softplus(self.theta))

    def update(self, mean_cost: float, budget: float) -> float:
        """One dual step; returns the new nu."""
        loss = -nn.functional.softplus(self.theta) * (float(mean_cost) - float(budget))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.min_value > 0:
            with torch.no_grad():
                self.theta.clamp_(min=inverse_softplus(self.min_value))
        return self.nu

    def state(self) -> dict[str, Any]:
        return {"theta": self.theta.detach().clone(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.theta.copy_(state["theta"])
        self.optimizer.load_state_dict(state["optimizer"])


class VecNormalizer:
    """SB3 ``VecNormalize`` with costs: running obs statistics and discounted-return scaling of rewards/costs."""

    def __init__(self, obs_dim: int, n_envs: int, config: PPOLagConfig) -> None:
        self.c = config
        self.obs_rms = RunningMeanStd(shape=(obs_dim,))
        self.ret_rms = RunningMeanStd(shape=())
        self.cost_ret_rms = RunningMeanStd(shape=())
        self.returns = np.zeros(n_envs)
        self.cost_returns = np.zeros(n_envs)
        self.training = True
        self.eps = 1e-8

    def obs(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        if not self.c.normalize_obs:
            return obs.astype(np.float32)
        if self.training:
            self.obs_rms.update(obs)
        out = (obs - self.obs_rms.mean) / np.sqrt(self.obs_rms.var + self.eps)
        return np.clip(out, -self.c.clip_obs, self.c.clip_obs).astype(np.float32)

    def _scaled(self, x: np.ndarray, dones: np.ndarray, rets: np.ndarray, rms: RunningMeanStd, gamma: float,
                on: bool) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if not on:
            return x
        if self.training:
            rets *= gamma
            rets += x
            rms.update(rets)
        out = np.clip(x / np.sqrt(rms.var + self.eps), -self.c.clip_reward, self.c.clip_reward)
        rets[np.asarray(dones, dtype=bool)] = 0.0
        return out

    def reward(self, r: np.ndarray, dones: np.ndarray) -> np.ndarray:
        return self._scaled(r, dones, self.returns, self.ret_rms, self.c.gamma, self.c.normalize_reward)

    def cost(self, c: np.ndarray, dones: np.ndarray) -> np.ndarray:
        return self._scaled(c, dones, self.cost_returns, self.cost_ret_rms, self.c.cost_gamma, self.c.normalize_cost)

    def state(self) -> dict[str, Any]:
        return {name: {"mean": np.copy(r.mean), "var": np.copy(r.var), "count": float(r.count)}
                for name, r in (("obs", self.obs_rms), ("ret", self.ret_rms), ("cost_ret", self.cost_ret_rms))} | {
            "returns": np.copy(self.returns), "cost_returns": np.copy(self.cost_returns)}

    def load_state(self, state: dict[str, Any]) -> None:
        for name, r in (("obs", self.obs_rms), ("ret", self.ret_rms), ("cost_ret", self.cost_ret_rms)):
            r.mean, r.var, r.count = np.copy(state[name]["mean"]), np.copy(state[name]["var"]), state[name]["count"]
        self.returns, self.cost_returns = np.copy(state["returns"]), np.copy(state["cost_returns"])


class RolloutStorage:
    """One rollout: ``n_steps`` x ``n_envs`` transitions (normalised obs, rewards and costs; raw costs too)."""

    def __init__(self) -> None:
        self.obs: list[np.ndarray] = []
        self.actions: list[Tensor] = []
        self.log_probs: list[Tensor] = []
        self.values: list[Tensor] = []
        self.cost_values: list[Tensor] = []
        self.rewards: list[np.ndarray] = []
        self.costs: list[np.ndarray] = []
        self.raw_costs: list[np.ndarray] = []
        self.dones: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.obs)

    def clear(self) -> None:
        self.__init__()

    def stacked(self, field: str) -> Tensor:
        """[n_steps, n_envs, ...] float tensor of one field."""
        items = getattr(self, field)
        return torch.stack([torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x, dtype=torch.float32)
                            for x in items])


class PPOLagrangian:
    """The learner: actor and critics, the multiplier, the normaliser, generators; one rollout at a time."""

    def __init__(self, obs_dim: int, act_dim: int, config: PPOLagConfig | None = None, *,
                 action_low: float = 0.0, action_high: float = 1.0) -> None:
        self.config = c = config or PPOLagConfig()
        with torch.random.fork_rng(devices=[]):  # the networks' init from the seed, without touching global RNG
            torch.manual_seed(c.seed)
            self.policy = GaussianActorTwoCritics(obs_dim, act_dim, c.hidden, c.log_std_init, c.action_mean_init)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=c.lr, eps=c.adam_eps)
        self.dual = LagrangeMultiplier(c.penalty_init, c.penalty_lr, c.penalty_min)
        self.normalizer = VecNormalizer(obs_dim, c.n_envs, c)
        self.action_low, self.action_high = float(action_low), float(action_high)
        self.generator = torch.Generator().manual_seed(c.seed)            # action noise
        self.shuffle = torch.Generator().manual_seed(c.seed + 1_000_003)  # minibatch order
        self.storage = RolloutStorage()
        self.last_obs: np.ndarray | None = None  # normalised observation of every env, before its next step
        self.updates = 0
        self.timesteps = 0

    # ------------------------------------------------------------------------------------------ acting
    def start(self, raw_obs: np.ndarray) -> None:
        """Begin from the envs' reset observations (updates the obs statistics, as SB3's reset does)."""
        self.last_obs = self.normalizer.obs(raw_obs)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = False,
            generator: torch.Generator | None = None) -> tuple[Tensor, np.ndarray, Tensor, Tensor, Tensor]:
        """(raw action, action clipped to the action box, value, cost value, log-prob) for normalised ``obs``."""
        mean, value, cost_value = self.policy(torch.as_tensor(obs, dtype=torch.float32))
        action = mean if deterministic else self.policy.sample(mean, generator or self.generator)
        log_prob = self.policy.log_prob(mean, action)
        clipped = action.clamp(self.action_low, self.action_high).numpy().astype(np.float32)
        return action, clipped, value, cost_value, log_prob

    def predict(self, raw_obs: np.ndarray, *, deterministic: bool, generator: torch.Generator) -> np.ndarray:
        """A clipped action for raw observations with frozen normalisation statistics (final rollouts)."""
        training, self.normalizer.training = self.normalizer.training, False
        try:
            return self.act(self.normalizer.obs(raw_obs), deterministic, generator)[1]
        finally:
            self.normalizer.training = training

    def collect(self, envs: Any, on_step: Callable[[np.ndarray, np.ndarray, dict], None] | None = None) -> None:
        """Play ``n_steps`` vector steps in ``envs`` (gymnasium VectorEnv, SAME_STEP autoreset) into the storage.

        Each env's step info must hold ``"cost"`` (0 at intermediate steps). ``on_step(rewards, dones, infos)``
        sees the raw rewards of every step (e.g. to log finished episodes).
        """
        if self.last_obs is None:
            raise RuntimeError("call start(envs.reset()[0]) before collect()")
        self.storage.clear()
        for _ in range(self.config.n_steps):
            action, clipped, value, cost_value, log_prob = self.act(self.last_obs)
            raw_obs, rewards, terminated, truncated, infos = envs.step(clipped)
            dones = np.logical_or(terminated, truncated)
            costs = step_costs(infos, dones, len(dones))
            s = self.storage
            s.obs.append(self.last_obs)
            s.actions.append(action)
            s.log_probs.append(log_prob)
            s.values.append(value)
            s.cost_values.append(cost_value)
            s.rewards.append(self.normalizer.reward(rewards, dones))
            s.raw_costs.append(np.asarray(costs, dtype=np.float64))
            s.costs.append(self.normalizer.cost(costs, dones))
            s.dones.append(dones.astype(np.float32))
            self.last_obs = self.normalizer.obs(raw_obs)
            self.timesteps += len(dones)
            if on_step is not None:
                on_step(np.asarray(rewards), dones, infos)

    # ------------------------------------------------------------------------------------------ learning
    @torch.no_grad()
    def _advantages(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        c, s = self.config, self.storage
        _, last_v, last_cv = self.policy(torch.as_tensor(self.last_obs, dtype=torch.float32))
        rewards, costs, dones = s.stacked("rewards"), s.stacked("costs"), s.stacked("dones")
        values, cost_values = s.stacked("values"), s.stacked("cost_values")
        adv, ret, cadv, cret = (torch.zeros_like(rewards) for _ in range(4))
        for e in range(rewards.shape[1]):
            adv[:, e], ret[:, e] = compute_gae(rewards[:, e], values[:, e], dones[:, e], c.gamma, c.gae_lambda,
                                               float(last_v[e]))
            cadv[:, e], cret[:, e] = compute_gae(costs[:, e], cost_values[:, e], dones[:, e], c.cost_gamma,
                                                 c.cost_gae_lambda, float(last_cv[e]))
        return adv.reshape(-1), ret.reshape(-1), cadv.reshape(-1), cret.reshape(-1)

    def update(self) -> dict[str, float]:
        """PPO epochs on the rollout with the current nu, then one dual step; returns mean diagnostics."""
        c, s = self.config, self.storage
        if len(s) == 0:
            raise ValueError("empty rollout")
        adv, ret, cadv, cret = self._advantages()
        obs = torch.as_tensor(np.stack(s.obs).reshape(-1, s.obs[0].shape[-1]), dtype=torch.float32)
        actions = torch.stack(s.actions).reshape(obs.shape[0], -1)
        old_lp = torch.stack(s.log_probs).reshape(-1)
        nu = self.dual.nu
        stats: dict[str, list[float]] = {k: [] for k in ("policy_loss", "value_loss", "cost_value_loss", "entropy",
                                                          "approx_kl", "clip_fraction")}
        n = obs.shape[0]
        stop = False
        self.policy.train()
        for _ in range(c.epochs):
            perm = torch.randperm(n, generator=self.shuffle)
            for start in range(0, n, c.minibatch_size):
                idx = perm[start:start + c.minibatch_size]
                mean, value, cost_value = self.policy(obs[idx])
                lp = self.policy.log_prob(mean, actions[idx])
                a = adv[idx]
                if a.numel() > 1:
                    a = (a - a.mean()) / (a.std() + 1e-8)
                ca = cadv[idx] - cadv[idx].mean()
                log_ratio = lp - old_lp[idx]
                ratio = log_ratio.exp()
                surr = torch.min(ratio * a, ratio.clamp(1 - c.clip, 1 + c.clip) * a)
                policy_loss = (-surr.mean() + nu * (ratio * ca).mean()) / (1.0 + nu)
                value_loss = nn.functional.mse_loss(value, ret[idx])
                cost_value_loss = nn.functional.mse_loss(cost_value, cret[idx])
                entropy = self.policy.entropy(mean).mean()
                loss = (policy_loss - c.entropy_coef * entropy + c.value_coef * value_loss
                        + c.cost_value_coef * cost_value_loss)
                with torch.no_grad():
                    kl = float(((ratio - 1) - log_ratio).mean())
                if c.target_kl is not None and kl > 1.5 * c.target_kl:
                    stop = True  # SB3 >= 1.1: the offending minibatch is not stepped, later epochs are skipped
                    break
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                stats["policy_loss"].append(policy_loss.item())
                stats["value_loss"].append(value_loss.item())
                stats["cost_value_loss"].append(cost_value_loss.item())
                stats["entropy"].append(entropy.item())
                stats["approx_kl"].append(kl)
                stats["clip_fraction"].append(float(((ratio - 1).abs() > c.clip).float().mean()))
            if stop:
                break
        self.policy.eval()
        mean_cost = float(np.mean(np.stack(s.raw_costs)))
        new_nu = self.dual.update(mean_cost, c.budget)
        self.updates += 1
        out = {k: (sum(v) / len(v) if v else math.nan) for k, v in stats.items()}
        out.update({"nu_used": nu, "nu": new_nu, "mean_cost": mean_cost, "budget": c.budget,
                    "minibatches": float(len(stats["policy_loss"])), "early_stop": float(stop),
                    "action_std": self.policy.log_std.detach().exp().mean().item()})
        return out

    # ------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-for-bit between rollouts (the storage is empty then)."""
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "dual": self.dual.state(), "normalizer": self.normalizer.state(),
                "generator": self.generator.get_state(), "shuffle": self.shuffle.get_state(),
                "last_obs": None if self.last_obs is None else np.copy(self.last_obs),
                "updates": self.updates, "timesteps": self.timesteps, "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.dual.load_state(state["dual"])
        self.normalizer.load_state(state["normalizer"])
        self.generator.set_state(state["generator"])
        self.shuffle.set_state(state["shuffle"])
        self.last_obs = None if state["last_obs"] is None else np.copy(state["last_obs"])
        self.updates, self.timesteps = int(state["updates"]), int(state["timesteps"])


def step_costs(infos: dict, dones: np.ndarray, n: int) -> np.ndarray:
    """Per-env cost of one vector step: from ``final_info`` for envs that just finished (SAME_STEP mode)."""
    out = np.zeros(n)
    top, top_mask = infos.get("cost"), infos.get("_cost")
    final, final_mask = infos.get("final_info"), infos.get("_final_info")
    for i in range(n):
        if dones[i] and final is not None and (final_mask is None or final_mask[i]):
            fc, fm = final.get("cost"), final.get("_cost")
            if fc is not None and (fm is None or fm[i]):
                out[i] = float(fc[i])
        elif top is not None and (top_mask is None or top_mask[i]):
            out[i] = float(top[i])
    return out
