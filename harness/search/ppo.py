"""PPO learner shared by the RL pruners (graph-RL now, the PPO-Lagrangian constrained-RL baseline later).

Defaults follow design decision 7 of ``specs/graph-rl.md``: clip 0.2, Adam lr 3e-4, 4 epochs per update,
gamma 1.0, GAE lambda 0.95, entropy coefficient 0.01 decayed linearly to 0.001, value coefficient 0.5,
gradient-norm clip 0.5.

Why the clipped surrogate is written out here rather than taken from TorchRL's ``ClipPPOLoss``: that loss
drives a TensorDict actor whose observations stack into fixed-shape tensors and whose action distribution
comes from one ``ProbabilisticActor`` call per TensorDict. Our observations are graphs of different sizes
(collated with ``torch_geometric.data.Batch``, not stacked), and each step acts on a different, variable
size set of channels (the group being pruned), so the log-probability is a per-graph sum over a masked
subset (``GraphPolicy.log_prob(out, action, group_index)``). Wrapping that in TensorDicts would need
padding and custom distribution classes for no gain; the surrogate itself is ten lines. GAE on the other
hand is a pure function of per-step tensors, so it comes from TorchRL
(``torchrl.objectives.value.functional.generalized_advantage_estimate``), which is tested upstream.

Lagrangian hook (for ``specs/baselines.md`` A.3): each step may carry a ``cost`` and the caller's cost
critic estimate ``cost_value`` (0 when there is no cost critic, which with ``cost_gae_lambda = 1`` makes the
cost advantage a Monte-Carlo cost-to-go). ``update(buffer, penalty=nu)`` then minimises
``(L_clip + nu * mean(ratio * centred A_c)) / (1 + nu)``. Training a cost critic and updating the dual
variable ``nu`` (once per rollout, after the epochs) are left to the caller: ``GraphPolicy`` has a single
value head.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass
from typing import Any, Protocol, Sequence

import torch
from torch import Tensor, nn
from torch_geometric.data import Batch, Data
from torch_geometric.utils import scatter
from torchrl.objectives.value.functional import generalized_advantage_estimate

__all__ = ["PPOConfig", "RolloutBuffer", "PPO", "compute_gae", "ActorCritic", "RATIOS"]

RATIOS = ("joint", "per-element")


class ActorCritic(Protocol):
    """What :class:`PPO` needs of a policy (``method.policy.GraphPolicy`` satisfies it)."""

    # group_index: the acting group(s); a policy may compute its action head for those only
    def __call__(self, data: Data, group_index: Any = None) -> Any: ...
    def log_prob(self, out: Any, action: Tensor, group_index: Any = None) -> Tensor: ...
    def entropy(self, out: Any, group_index: Any = None) -> Tensor: ...
    # per-element ratio only: (values [K], graph of each element [K])
    def element_log_prob(self, out: Any, action: Tensor, group_index: Any = None) -> tuple[Tensor, Tensor]: ...
    def element_entropy(self, out: Any, group_index: Any = None) -> tuple[Tensor, Tensor]: ...
    def parameters(self) -> Any: ...


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyper-parameters; defaults are design decision 7 of ``specs/graph-rl.md``.

    ``entropy_decay_updates``: number of updates over which the entropy coefficient goes linearly from
    ``entropy_start`` to ``entropy_end`` (then stays there); 1,000-3,000 episodes at 8-16 per update is
    roughly 100-300 updates. ``clip_value``: clip range of the value prediction around the old value
    (None = plain MSE; values here are on the reward's scale, about [-2, 1]). ``target_kl``: stop the
    remaining epochs of an update once the approximate KL exceeds 1.5 x target_kl (None = never; A.3 uses it).
    ``seed`` drives minibatch shuffling, so an update is reproducible and resumable. ``forward_chunk``:
    graphs per forward/backward pass inside a minibatch, gradients accumulated (the same gradient as one
    pass up to float rounding); 0 = 4 on the CPU, where a 64-graph batch of ResNet-56 graphs runs 2.7x
    slower per graph than 4 (cache-bound), and the whole minibatch on a GPU.

    ``ratio``: ``"joint"`` (the spec) takes one importance ratio per step, the product over every element the
    step decided (a group's channels: up to 2,048 Bernoulli decisions), so the clip at 1 +- ``clip`` bounds
    the *joint* change and each channel can move by about clip / n; ``"per-element"`` clips every element's
    ratio on its own (the step's advantage shared by its elements) and averages the surrogate and the
    entropy over the step's elements. It needs the per-element log-probs at rollout time
    (``RolloutBuffer.add(..., element_log_prob=...)``) and a policy with ``element_log_prob`` /
    ``element_entropy``.
    """

    clip: float = 0.2
    lr: float = 3e-4
    epochs: int = 4
    minibatch_size: int = 64
    gamma: float = 1.0
    gae_lambda: float = 0.95
    entropy_start: float = 0.01
    entropy_end: float = 0.001
    entropy_decay_updates: int = 200
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantages: bool = True
    clip_value: float | None = None
    target_kl: float | None = None
    cost_gamma: float = 1.0
    cost_gae_lambda: float = 1.0
    seed: int = 0
    forward_chunk: int = 0
    ratio: str = "joint"

    def __post_init__(self) -> None:
        if self.ratio not in RATIOS:
            raise ValueError(f"ratio must be one of {', '.join(RATIOS)}, got {self.ratio!r}")
        if not 0.0 < self.clip < 1.0:
            raise ValueError(f"clip must be in (0, 1), got {self.clip}")
        if self.lr <= 0 or self.epochs < 1 or self.minibatch_size < 1:
            raise ValueError("lr must be > 0, epochs and minibatch_size >= 1")
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.gae_lambda <= 1.0):
            raise ValueError("gamma and gae_lambda must be in [0, 1]")
        if self.entropy_decay_updates < 0:
            raise ValueError("entropy_decay_updates must be >= 0")
        if self.forward_chunk < 0:
            raise ValueError("forward_chunk must be >= 0 (0 = automatic)")

    def entropy_coef(self, update: int) -> float:
        """Entropy coefficient of the ``update``-th update (0-based): linear from start to end."""
        if self.entropy_decay_updates == 0:
            return self.entropy_end
        frac = min(max(update, 0) / self.entropy_decay_updates, 1.0)
        return self.entropy_start + (self.entropy_end - self.entropy_start) * frac


@dataclass
class _Step:
    obs: Data
    group_index: int | None
    action: Tensor
    log_prob: float
    value: float
    reward: float
    done: bool
    cost: float
    cost_value: float
    element_log_prob: Tensor | None = None


class RolloutBuffer:
    """Steps of whole episodes, in the order they were played (episodes end with ``done=True``).

    Observations: by default only ``x`` is cloned and every other attribute (edge_index, edge_attr, the
    index tensors) is shared with the caller's ``Data``, because the pruning env updates ``x`` in place
    while the graph structure is fixed, and cloning edges for every step would cost hundreds of MB on
    ResNet-sized graphs. Pass ``clone="all"`` to ``add`` if anything else is mutated.
    """

    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def add(self, obs: Data, group_index: int | None, action: Tensor, log_prob: float | Tensor,
            value: float | Tensor, reward: float, done: bool, *, cost: float = 0.0,
            cost_value: float | Tensor = 0.0, clone: str = "x", element_log_prob: Tensor | None = None) -> None:
        """Record one step. ``group_index``: the acting group (None = the whole graph in one step).

        ``action``: flat, as ``GraphPolicy.act(out, group_index)`` returned it (channels of the group for
        the binary action, one keep ratio for the ratio action). ``element_log_prob``: the log-prob of each
        element of ``action`` (needed by ``PPOConfig.ratio = "per-element"``; ``log_prob`` is their sum).
        """
        if clone == "all":
            stored = obs.clone()
        elif clone == "x":
            stored = copy.copy(obs)
            stored.x = obs.x.detach().clone()
        else:
            raise ValueError(f"clone must be 'x' or 'all', got {clone!r}")
        elp = None if element_log_prob is None else element_log_prob.detach().reshape(-1).float().cpu().clone()
        self.steps.append(_Step(stored, None if group_index is None else int(group_index),
                                action.detach().reshape(-1).clone(), float(log_prob), float(value),
                                float(reward), bool(done), float(cost), float(cost_value), elp))

    def clear(self) -> None:
        self.steps.clear()

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def num_episodes(self) -> int:
        return sum(s.done for s in self.steps)

    def tensor(self, field: str) -> Tensor:
        """One scalar field of every step as a float tensor [T]."""
        return torch.tensor([float(getattr(s, field)) for s in self.steps], dtype=torch.float32)


def compute_gae(rewards: Tensor, values: Tensor, dones: Tensor, gamma: float, lmbda: float,
                last_value: float = 0.0) -> tuple[Tensor, Tensor]:
    """GAE over a flat sequence of consecutive episodes [T]; returns (advantages [T], returns [T]).

    Uses TorchRL's functional GAE with shapes [T, 1]: ``terminated`` = the episode's end (no bootstrap
    past it), ``done`` = the same plus the last step (the recursion never runs past the buffer). A trailing
    unfinished episode is bootstrapped with ``last_value``. returns = advantages + values.
    """
    t = rewards.numel()
    values = values.reshape(t, 1).float()
    next_values = torch.cat([values[1:], torch.tensor([[float(last_value)]])], dim=0)
    terminated = dones.reshape(t, 1).bool()
    done = terminated.clone()
    done[-1] = True
    adv, ret = generalized_advantage_estimate(gamma, lmbda, values, next_values,
                                              rewards.reshape(t, 1).float(), done, terminated)
    return adv.reshape(t), ret.reshape(t)


class PPO:
    """Clipped-surrogate PPO over a :class:`RolloutBuffer` of graph observations."""

    def __init__(self, policy: nn.Module, config: PPOConfig | None = None) -> None:
        self.policy = policy
        self.config = config = config or PPOConfig()
        self.optimizer = torch.optim.Adam(policy.parameters(), lr=config.lr)
        self.updates = 0
        self.generator = torch.Generator().manual_seed(config.seed)

    @property
    def entropy_coef(self) -> float:
        """Coefficient the next update will use."""
        return self.config.entropy_coef(self.updates)

    def advantages(self, buffer: RolloutBuffer, last_value: float = 0.0) -> tuple[Tensor, Tensor]:
        """Reward (advantages, returns) [T] of the buffer's steps."""
        c = self.config
        return compute_gae(buffer.tensor("reward"), buffer.tensor("value"), buffer.tensor("done"),
                           c.gamma, c.gae_lambda, last_value)

    @staticmethod
    def _group_index(steps: Sequence[_Step]) -> Tensor | None:
        gis = [s.group_index for s in steps]
        if all(g is None for g in gis):
            return None
        if any(g is None for g in gis):
            raise ValueError("a minibatch mixes whole-graph (None) and per-group steps")
        return torch.tensor(gis, dtype=torch.long)

    def update(self, buffer: RolloutBuffer, *, penalty: float = 0.0, last_value: float = 0.0) -> dict[str, float]:
        """``epochs`` passes of shuffled minibatches over the buffer; returns mean diagnostics.

        ``penalty``: Lagrange multiplier nu >= 0 of the cost term (0 = plain PPO). The buffer is not cleared.
        """
        c = self.config
        if len(buffer) == 0:
            raise ValueError("empty buffer")
        if penalty < 0:
            raise ValueError("penalty must be >= 0")
        adv, ret = self.advantages(buffer, last_value)
        if penalty > 0:
            cost_adv, _ = compute_gae(buffer.tensor("cost"), buffer.tensor("cost_value"),
                                      buffer.tensor("done"), c.cost_gamma, c.cost_gae_lambda)
        old_lp = buffer.tensor("log_prob")
        old_v = buffer.tensor("value")
        ent_coef = self.entropy_coef
        stats: dict[str, list[float]] = {k: [] for k in
                                         ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")}
        device = next(self.policy.parameters()).device
        chunk = c.forward_chunk or (4 if device.type == "cpu" else c.minibatch_size)
        self.policy.train()
        n = len(buffer)
        stop = False
        for _ in range(c.epochs):
            perm = torch.randperm(n, generator=self.generator)
            for start in range(0, n, c.minibatch_size):
                idx = perm[start:start + c.minibatch_size]
                a_all = adv[idx]
                if c.normalize_advantages and a_all.numel() > 1:
                    a_all = (a_all - a_all.mean()) / (a_all.std() + 1e-8)
                ca_all = None
                if penalty > 0:
                    ca_all = cost_adv[idx]
                    ca_all = ca_all - ca_all.mean()  # A.3: cost advantages are centred, not rescaled
                self.optimizer.zero_grad(set_to_none=True)
                mb = {k: 0.0 for k in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction")}
                # Gradient accumulation over chunks of the minibatch: every term below is a mean over the
                # minibatch's steps, so chunk means weighted by chunk size give the one-pass gradient.
                for c0 in range(0, idx.numel(), chunk):
                    terms = self._chunk_terms(buffer, idx[c0:c0 + chunk], a_all[c0:c0 + chunk],
                                              None if ca_all is None else ca_all[c0:c0 + chunk],
                                              old_lp, old_v, ret, penalty, ent_coef, device)
                    weight = terms.pop("count") / idx.numel()
                    (weight * terms.pop("loss")).backward()
                    for k, v in terms.items():
                        mb[k] += weight * v
                nn.utils.clip_grad_norm_(self.policy.parameters(), c.max_grad_norm)
                self.optimizer.step()
                for k, v in mb.items():
                    stats[k].append(v)
                if c.target_kl is not None and mb["approx_kl"] > 1.5 * c.target_kl:
                    stop = True
                    break
            if stop:
                break
        self.updates += 1
        result = {k: (sum(v) / len(v) if v else math.nan) for k, v in stats.items()}
        result["entropy_coef"] = ent_coef
        result["minibatches"] = float(len(stats["policy_loss"]))
        return result

    def _chunk_terms(self, buffer: RolloutBuffer, idx: Tensor, a: Tensor, ca: Tensor | None, old_lp: Tensor,
                     old_v: Tensor, ret: Tensor, penalty: float, ent_coef: float,
                     device: torch.device) -> dict[str, Any]:
        """Loss (a mean over the chunk's steps, graph attached) and detached diagnostics of one chunk."""
        c = self.config
        steps = [buffer.steps[i] for i in idx.tolist()]
        batch = Batch.from_data_list([s.obs for s in steps]).to(device)
        gi = self._group_index(steps)
        gi = None if gi is None else gi.to(device)
        actions = torch.cat([s.action for s in steps]).to(device)
        out = self.policy(batch, gi)
        value = out.value.reshape(-1)
        a = a.to(device)
        if c.ratio == "per-element":
            if any(s.element_log_prob is None for s in steps):
                raise ValueError("PPOConfig.ratio='per-element' needs element_log_prob on every buffered step")
            lp, graph = self.policy.element_log_prob(out, actions, gi)
            old = torch.cat([s.element_log_prob for s in steps]).to(device)
            if old.numel() != lp.numel():
                raise ValueError(f"{old.numel()} stored element log-probs for {lp.numel()} elements")
            log_ratio = lp - old
            ratio = log_ratio.exp()
            adv = a[graph]
            surr = torch.min(ratio * adv, ratio.clamp(1 - c.clip, 1 + c.clip) * adv)
            n = out.num_graphs
            policy_loss = -scatter(surr, graph, dim=0, dim_size=n, reduce="mean").mean()
            if ca is not None:
                cost_term = scatter(ratio * ca.to(device)[graph], graph, dim=0, dim_size=n, reduce="mean").mean()
                policy_loss = (policy_loss + penalty * cost_term) / (1.0 + penalty)
            ent_el, egraph = self.policy.element_entropy(out, gi)
            ent = scatter(ent_el, egraph, dim=0, dim_size=n, reduce="mean").mean()
        else:
            lp = self.policy.log_prob(out, actions, gi)
            ent = self.policy.entropy(out, gi).mean()
            log_ratio = lp - old_lp[idx].to(device)
            ratio = log_ratio.exp()
            surr = torch.min(ratio * a, ratio.clamp(1 - c.clip, 1 + c.clip) * a)
            policy_loss = -surr.mean()
            if ca is not None:
                policy_loss = (policy_loss + penalty * (ratio * ca.to(device)).mean()) / (1.0 + penalty)

        r = ret[idx].to(device)
        if c.clip_value is not None:
            ov = old_v[idx].to(device)
            v_clip = ov + (value - ov).clamp(-c.clip_value, c.clip_value)
            value_loss = torch.max((value - r) ** 2, (v_clip - r) ** 2).mean()
        else:
            value_loss = ((value - r) ** 2).mean()
        loss = policy_loss + c.value_coef * value_loss - ent_coef * ent
        with torch.no_grad():
            # k3 estimator (Schulman): unbiased, always >= 0.
            kl = ((ratio - 1) - log_ratio).mean().item()
            clip_fraction = ((ratio - 1).abs() > c.clip).float().mean().item()
        return {"loss": loss, "count": idx.numel(), "policy_loss": policy_loss.item(),
                "value_loss": value_loss.item(), "entropy": ent.item(), "approx_kl": kl,
                "clip_fraction": clip_fraction}

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Everything a killed search needs to resume bit-for-bit: policy, optimizer, update count, RNG."""
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "updates": self.updates, "generator": self.generator.get_state(),
                "config": asdict(self.config)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.updates = int(state["updates"])
        if "generator" in state:
            self.generator.set_state(state["generator"])
