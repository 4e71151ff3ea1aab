"""Options of ``crl-neuron`` and ``crl-layer``: defaults from the official code, every deviation named.

Sources (``../shared/specs/baselines.md`` A.2-A.5, A.9): the README commands of the official repository for
the PPO-Lagrangian and the coarse-grained environment (table A.3), and the fine-grained runs of
``pruning/exps.sh`` for ``crl-neuron`` (124,000 steps, a fixed 256 inner iterations, no action clip, no
target KL). ``docs/crl.md`` lists each option with its source and the deviations.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from harness.errors import UserError

REWARD_SPLITS = ("train", "search")
COSTS = ("budget", "params", "macs", "latency", "masked-weights")
ON_INFEASIBLE = ("error", "project")
FINETUNES = ("common", "paper")


def _num(name: str, v: object, lo: float | None = None, hi: float | None = None, *, integer: bool = False,
         lo_open: bool = False) -> None:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok or (isinstance(v, float) and not math.isfinite(v)):
        raise UserError(f"{name} must be {'an integer' if integer else 'a number'}, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise UserError(f"{name} must be {'>' if lo_open else '>='} {lo:g}, got {v!r}")
    if hi is not None and v > hi:
        raise UserError(f"{name} must be <= {hi:g}, got {v!r}")


@dataclass(frozen=True)
class CRLOptions:
    """Shared options. PPO-Lagrangian (A.3): ``timesteps`` environment steps over ``n_envs`` environments,
    an update every ``n_steps`` steps per env, ``epochs`` x minibatches of ``minibatch_size``; nu starts at
    ``penalty_init``, learns at ``penalty_lr`` and is floored at ``penalty_min``. The Gaussian policy starts
    at mean ``action_mean_init`` with log-std ``log_std_init`` (SB3: 0, 0; a deviation for short searches:
    start near the budget instead of at keep-score / prune fraction 0).

    Environment (A.2, A.4): the action clip ``c(t) = min(action_clip_init + action_clip_slope * t / r, 1)``
    (t = the env's steps, r = timesteps / n_envs); the inner fine-tune runs ``finetune_iters[i]`` Adam steps
    (lr ``finetune_lr``, batch ``finetune_batch_size``) in the i-th of ``len(finetune_iters)`` equal phases,
    with a fresh optimiser every episode (fix of the official code's carried-over Adam state); the reward is
    top-1 in percent on ``reward_samples`` images in batches of ``reward_batch_size``: random augmented
    training images (``reward_split: train``, the code's choice) or the search split (``search``, fixed
    images, lower variance); ``bn_batches`` > 0 recalibrates BN on train_plain first (deviation; 0 = code).

    Cost (A.2, A.9.2): the per-episode cost is ``T x remaining %`` of ``cost`` (``budget`` = the budget's
    metric over the whole model, the suite's semantics; ``masked-weights`` = the paper's count, crl-layer
    only; ``latency`` = measured, crl-neuron only); the Lagrangian bounds its per-step mean by
    ``cost_budget`` percent (None = ``100 x (1 - target)``).

    Final plan (A.9.4): ``final_rollouts`` stochastic rollouts plus the deterministic action of the final
    policy, with the action clip ``final_action_clip`` (A.5: 1.0); the feasible one with the best search-split
    accuracy (``select_bn_batches`` BN batches; the first ``select_samples`` search images, None = all) wins;
    none feasible is an error
    (``on_infeasible: project`` repairs the deterministic one instead, a named deviation).

    Fine-tune: ``finetune: common`` (the suite's recipe) or ``paper`` (Adam 3e-4, batch 60,
    ``paper_finetune_iters`` iterations from the pretrained weights, A.5).
    """

    timesteps: int = 40_000
    n_envs: int = 3
    n_steps: int = 128
    minibatch_size: int = 64
    epochs: int = 10
    lr: float = 3e-4
    clip: float = 0.2
    gamma: float = 0.99
    gae_lambda: float = 0.95
    cost_gamma: float = 0.99
    cost_gae_lambda: float = 1.0
    target_kl: float | None = 0.1
    max_grad_norm: float = 0.5
    entropy_coef: float = 0.0
    hidden: tuple[int, ...] = (32, 32)
    log_std_init: float = 0.0
    action_mean_init: float = 0.0
    penalty_init: float = 1.0
    penalty_lr: float = 1.0
    penalty_min: float = 0.0
    normalize: bool = True
    action_clip_init: float = 0.9
    action_clip_slope: float = 0.05
    finetune_iters: tuple[int, ...] = (0, 32, 128)
    finetune_batch_size: int = 60
    finetune_lr: float = 3e-4
    reward_split: str = "train"
    reward_samples: int = 20_000
    reward_batch_size: int = 512
    bn_batches: int = 0
    cost: str = "budget"
    cost_budget: float | None = None
    final_rollouts: int = 16
    final_action_clip: float = 1.0
    on_infeasible: str = "error"
    select_bn_batches: int = 10
    select_samples: int | None = None
    eval_batch_size: int = 256
    finetune: str = "common"
    paper_finetune_iters: int = 25_000
    latency_batch_size: int = 1
    latency_repeats: int = 10

    def __post_init__(self) -> None:
        for name in ("timesteps", "n_envs", "n_steps", "minibatch_size", "epochs", "finetune_batch_size",
                     "reward_samples", "reward_batch_size", "eval_batch_size", "paper_finetune_iters",
                     "latency_batch_size", "latency_repeats"):
            _num(name, getattr(self, name), 1, integer=True)
        for name in ("bn_batches", "final_rollouts", "select_bn_batches"):
            _num(name, getattr(self, name), 0, integer=True)
        for name in ("lr", "finetune_lr", "penalty_init", "penalty_lr"):
            _num(name, getattr(self, name), 0, lo_open=True)
        for name in ("gamma", "gae_lambda", "cost_gamma", "cost_gae_lambda"):
            _num(name, getattr(self, name), 0, 1)
        _num("clip", self.clip, 0, 1, lo_open=True)
        _num("penalty_min", self.penalty_min, 0)
        _num("max_grad_norm", self.max_grad_norm, 0, lo_open=True)
        _num("entropy_coef", self.entropy_coef, 0)
        _num("log_std_init", self.log_std_init, -5, 2)
        _num("action_mean_init", self.action_mean_init, -1, 2)
        _num("action_clip_init", self.action_clip_init, 0, 1, lo_open=True)
        _num("action_clip_slope", self.action_clip_slope, 0)
        _num("final_action_clip", self.final_action_clip, 0, 1, lo_open=True)
        if self.target_kl is not None:
            _num("target_kl", self.target_kl, 0, lo_open=True)
        if self.select_samples is not None:
            _num("select_samples", self.select_samples, 1, integer=True)
        if self.cost_budget is not None:
            _num("cost_budget", self.cost_budget, 0, 100, lo_open=True)
        hidden = tuple(self.hidden) if isinstance(self.hidden, (list, tuple)) else (self.hidden,)
        for h in hidden:
            _num("hidden", h, 1, integer=True)
        object.__setattr__(self, "hidden", hidden)
        iters = tuple(self.finetune_iters) if isinstance(self.finetune_iters, (list, tuple)) else (self.finetune_iters,)
        if not iters:
            raise UserError("finetune_iters must list at least one phase (e.g. [0])")
        for k in iters:
            _num("finetune_iters", k, 0, integer=True)
        object.__setattr__(self, "finetune_iters", iters)
        for name, value, valid in (("reward_split", self.reward_split, REWARD_SPLITS), ("cost", self.cost, COSTS),
                                   ("on_infeasible", self.on_infeasible, ON_INFEASIBLE),
                                   ("finetune", self.finetune, FINETUNES)):
            if value not in valid:
                raise UserError(f"{name} must be one of {', '.join(valid)}, got {value!r}")
        if not isinstance(self.normalize, bool):
            raise UserError(f"normalize must be true or false, got {self.normalize!r}")
        if self.n_envs * self.n_steps < 2:
            raise UserError("n_envs * n_steps must be >= 2 (one rollout holds at least two steps)")


@dataclass(frozen=True)
class CRLNeuronOptions(CRLOptions):
    """``crl-neuron`` (fine-grained env ``FP``): per-channel keep-scores of one group per step, soft masks during
    the search (``soft_actions``), hard ``score >= threshold`` for the plan. Defaults of the ``fsp`` runs in
    ``exps.sh``; ``action_dim`` = the Gaussian's width (None = the largest group; the code's is 512)."""

    timesteps: int = 124_000
    action_clip_init: float = 1.0
    action_clip_slope: float = 0.0
    finetune_iters: tuple[int, ...] = (256,)
    target_kl: float | None = None
    soft_actions: bool = True
    threshold: float = 0.5
    action_dim: int | None = None
    # How an episode's plan is scored (issue 13): "pruned" on a physically pruned copy (the accuracy of the
    # 0/1 masks at the pruned network's cost; needs hard actions), "masked" (the official code's masks), or
    # "auto": pruned when soft_actions is false, masked when the search scores soft scores.
    candidate_eval: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.candidate_eval not in ("auto", "masked", "pruned"):
            raise UserError(f"candidate_eval must be one of auto, masked, pruned, got {self.candidate_eval!r}")
        if self.candidate_eval == "pruned" and self.soft_actions:
            raise UserError("candidate_eval pruned scores hard plans: set soft_actions false (soft scores multiply "
                            "channels and cannot be removed physically)")
        if self.cost == "masked-weights":
            raise UserError("cost 'masked-weights' (the paper's weight count) is for crl-layer; crl-neuron's "
                            "costs are budget, params, macs or latency")
        _num("threshold", self.threshold, 0, 1, lo_open=True)
        if self.action_dim is not None:
            _num("action_dim", self.action_dim, 1, integer=True)
        if not isinstance(self.soft_actions, bool):
            raise UserError(f"soft_actions must be true or false, got {self.soft_actions!r}")


@dataclass(frozen=True)
class CRLLayerOptions(CRLOptions):
    """``crl-layer`` (coarse-grained env ``LWOP``): one prune fraction per conv layer, then per-layer magnitude
    pruning; unstructured. ``skip_layers``: convs whose name contains one of these are never pruned (the
    code's plain ``nn.Conv2d`` shortcuts)."""

    skip_layers: tuple[str, ...] = ("downsample", "shortcut")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cost in ("macs", "latency"):
            raise UserError(f"cost {self.cost!r} cannot be lowered by unstructured pruning (dense MACs and latency "
                            "stay the same); crl-layer's costs are budget, params or masked-weights")
        skip = tuple(self.skip_layers) if isinstance(self.skip_layers, (list, tuple)) else (self.skip_layers,)
        if not all(isinstance(s, str) and s for s in skip):
            raise UserError(f"skip_layers must be a list of non-empty names, got {self.skip_layers!r}")
        object.__setattr__(self, "skip_layers", skip)
