"""Constrained-RL pruning (Malik et al., ICPR 2022): methods ``crl-neuron`` and ``crl-layer``.

A PPO-Lagrangian agent (:mod:`harness.search.ppo_lagrangian`) sweeps the network layer by layer
(:class:`baselines.crl.env.ConstrainedPruningEnv`); the reward is the masked network's accuracy, the cost its
remaining size, and the Lagrange multiplier holds the mean cost under the budget *in expectation*
(``../shared/specs/baselines.md`` A.1-A.4). Because a single rollout may still miss the budget, the plan is
chosen from ``final_rollouts`` stochastic rollouts plus the deterministic action of the final policy: the
feasible one (suite budget, with its tolerance) with the best search-split accuracy
(:class:`harness.search.SearchEvaluator`) wins, and no feasible one is an error (A.9.4).

``crl-neuron`` is the fine-grained variant (keep-scores per channel, one dependency group per step; structured,
physically pruned: the one compared with the other methods). ``crl-layer`` is the coarse variant the code runs
by default (a prune fraction per conv layer, then per-layer weight-magnitude pruning): unstructured, so its
params are non-zeros, its MACs dense, and it only takes params budgets.

The agent, the normalisation statistics, the environments' episodes in progress and the log are checkpointed
after every update (``agent.pt`` in the workdir, with a fingerprint of the options, base weights and reward
images: another search's checkpoint is ignored), so a killed search resumes where it stopped; with a fixed
seed the search is deterministic on the CPU (except with ``cost: latency``, which is measured).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from torch import nn
from torch.utils.data import Subset

from harness.errors import BudgetNotMet, UserError
from harness.io import write_csv
from harness.prune.unstructured import WeightSparsity, magnitude_masks, magnitude_order
from harness.registry import Keep, PruneContext, learner_config, register_method
from harness.search import SearchEvaluator, project
from harness.search import checkpoint as search_checkpoint
from harness.search.ppo_lagrangian import PPOLagConfig, PPOLagrangian
from baselines.crl.cost import CostMeter
from baselines.crl.env import ConstrainedPruningEnv, Episode
from baselines.crl.options import CRLLayerOptions, CRLNeuronOptions, CRLOptions
from baselines.crl.scorer import EpisodeScorer
from baselines.crl.units import Unit, classifier_weights, layer_units, neuron_units

log = logging.getLogger(__name__)

LOG_COLUMNS = ("update", "timesteps", "episode", "reward", "accuracy", "macs", "params", "macs_reduction",
               "params_reduction", "feasible", "best_accuracy", "wall_s", "mean_cost", "budget", "nu",
               "feasible_fraction", "masked_remaining", "action_clip", "finetune_iters", "episodes_in_rollout",
               "policy_loss", "value_loss", "cost_value_loss", "approx_kl", "clip_fraction", "action_std")
FINAL_COLUMNS = ("candidate", "kind", "macs", "params", "macs_reduction", "params_reduction", "remaining",
                 "feasible", "search_accuracy", "chosen")


# ---------------------------------------------------------------------------------------------- schedules
def action_clip_schedule(opts: CRLOptions) -> Any:
    """c(t) = min(init + slope * t / r, 1), r = timesteps / n_envs (the code's per-env horizon)."""
    r = opts.timesteps / opts.n_envs
    return lambda t: min(opts.action_clip_slope * t / r + opts.action_clip_init, 1.0)


def finetune_schedule(opts: CRLOptions) -> Any:
    """k(t) = finetune_iters[i] in the i-th of len(finetune_iters) equal phases of r steps."""
    phases = opts.finetune_iters
    span = max(1, int(opts.timesteps / opts.n_envs / len(phases)))
    return lambda t: int(phases[min(max(int(t / span), 0), len(phases) - 1)])


def cost_budget(ctx: PruneContext) -> float:
    """The Lagrangian's bound on the per-step mean cost, in percent remaining."""
    b = ctx.options.cost_budget
    return float(b) if b is not None else 100.0 * (1.0 - ctx.budget.target)


def paper_finetune_recipe(ctx: PruneContext) -> dict[str, Any]:
    """A.5's protocol as a suite recipe: Adam 3e-4, batch 60, ``paper_finetune_iters`` iterations (rounded up
    to whole epochs of ``max_batches_per_epoch``), constant lr, no weight decay, from the pretrained weights."""
    n = int(ctx.options.paper_finetune_iters)
    spe = max(1, len(ctx.splits.train) // 60)
    epochs = math.ceil(n / spe)
    return {"optimizer": "adam", "lr": 3e-4, "batch_size": 60, "epochs": epochs,
            "max_batches_per_epoch": math.ceil(n / epochs), "momentum": 0.0, "nesterov": False,
            "weight_decay": 0.0, "schedule": "constant"}


# ---------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def masked_weights(net: nn.Module, masks: Mapping[str, torch.Tensor]) -> Iterator[nn.Module]:
    """``net`` with the weights of ``masks`` multiplied in, restored on exit."""
    saved = {}
    with torch.no_grad():
        for name, mask in masks.items():
            w = net.get_submodule(name).weight
            saved[name] = w.detach().clone()
            w.mul_(mask.to(w.device, w.dtype))
    try:
        yield net
    finally:
        with torch.no_grad():
            for name, w in saved.items():
                net.get_submodule(name).weight.copy_(w)


def project_sparsity(sparsity: WeightSparsity, units: list[Unit], orders: Mapping[str, torch.Tensor],
                     model: nn.Module, zeroed_needed: int) -> WeightSparsity:
    """Zero the globally smallest |w| still kept in the pruned layers until ``zeroed_needed`` weights are zero."""
    extra = zeroed_needed - sparsity.total
    if extra <= 0:
        return sparsity
    vals, owner = [], []
    for i, u in enumerate(units):
        w = model.get_submodule(u.name).weight.detach().abs().reshape(-1).cpu()
        rest = orders[u.name][sparsity.pruned[u.name]:]
        vals.append(w[rest].double())
        owner.append(torch.full((rest.numel(),), i, dtype=torch.long))
    v, o = torch.cat(vals), torch.cat(owner)
    extra = min(extra, v.numel())
    pick = torch.argsort(v, stable=True)[:extra]
    counts = torch.bincount(o[pick], minlength=len(units))
    return WeightSparsity({u.name: sparsity.pruned[u.name] + int(counts[i]) for i, u in enumerate(units)})


# ---------------------------------------------------------------------------------------------- the search
class _Search:
    def __init__(self, ctx: PruneContext, variant: str) -> None:
        self.ctx, self.variant = ctx, variant
        self.opts = opts = ctx.options
        if ctx.splits is None:
            raise UserError(f"crl-{variant} needs data (it scores masked networks)")
        self.workdir = Path(ctx.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        model = ctx.model
        self.orders: dict[str, torch.Tensor] | None = None
        if variant == "layer":
            self.units = layer_units(model, opts.skip_layers)
            self.orders = {u.name: magnitude_order(model.get_submodule(u.name).weight) for u in self.units}
            masked = sum(u.size for u in self.units) + classifier_weights(model)
            self.min_keep: dict[str, int] = {}
        else:
            self.units = neuron_units(model, ctx.groups)
            masked = 0
            self.min_keep = {g.id: ctx.min_keep(g) for g in ctx.groups}
        self.meter = CostMeter(ctx, opts.cost, masked_weights=masked, latency_batch_size=opts.latency_batch_size,
                               latency_repeats=opts.latency_repeats)
        self.budget = cost_budget(ctx)
        self.act_dim = 1 if variant == "layer" else int(opts.action_dim or max(u.size for u in self.units))

    def env(self, *, index: int = 0, score: Any = None, final: bool = False) -> ConstrainedPruningEnv:
        o = self.opts
        clip = (lambda t: o.final_action_clip) if final else action_clip_schedule(o)
        return ConstrainedPruningEnv(
            self.variant, self.units, self.meter, action_clip=clip, finetune_iters=finetune_schedule(o),
            score=score, act_dim=self.act_dim, soft=final or getattr(o, "soft_actions", True),  # final: keep raw scores
            threshold=getattr(o, "threshold", 0.5), min_keep=self.min_keep, magnitude_orders=self.orders,
            model=self.ctx.model, seed=self.ctx.seed, index=index)

    def agent(self, obs_dim: int) -> PPOLagrangian:
        o = self.opts
        cfg = learner_config(PPOLagConfig, o, budget=self.budget, normalize_obs=o.normalize,
                             normalize_reward=o.normalize, normalize_cost=o.normalize, seed=self.ctx.seed)
        return PPOLagrangian(obs_dim, self.act_dim, cfg)

    def candidate_mode(self) -> str:
        """The EpisodeScorer's mode: crl-neuron's hard plans on pruned copies (``candidate_eval``), else masked."""
        mode = getattr(self.opts, "candidate_eval", "masked")
        if mode == "auto":
            return "masked" if getattr(self.opts, "soft_actions", True) else "pruned"
        return mode

    def reward_images(self) -> Any:
        """The images the episode rewards are measured on (:class:`EpisodeScorer`): the first
        ``reward_samples`` of the search split, or random draws from the augmented training split."""
        splits, o = self.ctx.splits, self.opts
        if o.reward_split == "search":
            return Subset(splits.search, range(min(o.reward_samples, len(splits.search))))
        return splits.train

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed (else the search starts over, with a warning): method and
        variant, options, base weights, budget, seed, groups, units, the reward images and the training
        images the inner fine-tune draws from (:mod:`harness.search.checkpoint`)."""
        return search_checkpoint.fingerprint(
            self.ctx, f"crl-{self.variant}", search_split=self.reward_images(),
            units=[(u.name, u.size) for u in self.units],
            train_split=search_checkpoint.dataset_digest(self.ctx.splits.train))

    # ------------------------------------------------------------------------------------------ training
    def train(self) -> tuple[PPOLagrangian, list[dict[str, Any]]]:
        o, ctx = self.opts, self.ctx
        self.scorer = scorer = EpisodeScorer(
            ctx.model, ctx.splits, ctx.device, ctx.example_input,
            groups=ctx.groups if self.variant == "neuron" else None, reward_split=o.reward_split,
            reward_samples=o.reward_samples, reward_batch_size=o.reward_batch_size,
            finetune_batch_size=o.finetune_batch_size, finetune_lr=o.finetune_lr, bn_batches=o.bn_batches,
            bn_batch_size=o.eval_batch_size, mode=self.candidate_mode())
        envs = SyncVectorEnv([lambda i=i: self.env(index=i, score=scorer.score) for i in range(o.n_envs)],
                             autoreset_mode=AutoresetMode.SAME_STEP)
        agent = self.agent(envs.single_observation_space.shape[0])
        n_updates = math.ceil(o.timesteps / (o.n_envs * o.n_steps))
        checkpoint = self.workdir / "agent.pt"
        fingerprint = self.fingerprint()
        rows: list[dict[str, Any]] = []
        best = math.nan
        start = 0
        state = search_checkpoint.load(checkpoint, fingerprint, f"crl-{self.variant}")  # None: start fresh
        if state is not None:
            agent.load_state_dict(state["agent"])
            for env, es in zip(envs.envs, state["envs"]):
                env.load_state_dict(es)
            rows, best, start = state["rows"], state["best"], state["update"]
            log.info("crl-%s: resuming after update %d/%d from %s", self.variant, start, n_updates, checkpoint)
        if start == 0:
            obs, _ = envs.reset(seed=ctx.seed)
            agent.start(obs)
        for update in range(start, n_updates):
            t0 = time.perf_counter()
            finished: list[Episode] = []

            def on_step(rewards: np.ndarray, dones: np.ndarray, infos: dict) -> None:
                finished.extend(envs.envs[i].last_episode for i in np.flatnonzero(dones))

            agent.collect(envs, on_step)
            stats = agent.update()
            for ep in finished:
                if ep.measure.feasible and not ep.accuracy <= best:  # NaN-safe running max
                    best = ep.accuracy
            rows.append(self._row(update, agent, stats, finished, best, time.perf_counter() - t0, envs))
            search_checkpoint.save(checkpoint, fingerprint, {
                "agent": agent.state_dict(), "envs": [e.state_dict() for e in envs.envs], "rows": rows,
                "best": best, "update": update + 1})
            write_csv(self.workdir / "search_log.csv", LOG_COLUMNS, rows)
            r = rows[-1]
            log.info("crl-%s update %d/%d: reward %.2f, mean cost %.2f (budget %.2f), nu %.3f, %.1fs",
                     self.variant, update + 1, n_updates, r["reward"], r["mean_cost"], self.budget, r["nu"],
                     r["wall_s"])
        write_csv(self.workdir / "search_log.csv", LOG_COLUMNS, rows)
        # every finished training episode was scored once (its reward), whether or not it was resumed
        self.train_episodes = int(rows[-1]["episode"]) if rows else 0
        self.train_rows = rows
        return agent, rows

    def _row(self, update: int, agent: PPOLagrangian, stats: dict[str, float], eps: list[Episode], best: float,
             wall: float, envs: SyncVectorEnv) -> dict[str, Any]:
        def mean(values: list[float]) -> float:
            return float(np.mean(values)) if values else math.nan

        env0 = envs.envs[0]
        return {
            "update": update + 1, "timesteps": agent.timesteps, "episode": sum(e.episodes for e in envs.envs),
            "reward": mean([e.reward for e in eps]), "accuracy": mean([e.accuracy for e in eps]),
            "macs": mean([e.measure.macs for e in eps]), "params": mean([e.measure.params for e in eps]),
            "macs_reduction": mean([e.measure.macs_reduction for e in eps]),
            "params_reduction": mean([e.measure.params_reduction for e in eps]),
            "feasible": bool(stats["mean_cost"] <= self.budget), "best_accuracy": best, "wall_s": wall,
            "mean_cost": stats["mean_cost"], "budget": self.budget, "nu": stats["nu"],
            "feasible_fraction": mean([float(e.measure.feasible) for e in eps]),
            "masked_remaining": mean([e.measure.masked_remaining for e in eps]),
            "action_clip": float(env0.action_clip(env0.timesteps)),
            "finetune_iters": env0.finetune_iters(env0.timesteps),
            "episodes_in_rollout": len(eps),
            **{k: stats[k] for k in ("policy_loss", "value_loss", "cost_value_loss", "approx_kl", "clip_fraction",
                                     "action_std")},
        }

    # ------------------------------------------------------------------------------------------ final plan
    def final(self, agent: PPOLagrangian) -> Keep | WeightSparsity:
        o, ctx = self.opts, self.ctx
        env = self.env(final=True)
        gen = torch.Generator().manual_seed(ctx.seed * 1_000_003 + 424_242)
        candidates: list[tuple[str, Episode]] = []
        for k in range(o.final_rollouts + 1):
            kind = "deterministic" if k == 0 else "stochastic"
            obs, _ = env.reset()
            done = False
            while not done:
                action = agent.predict(obs[None], deterministic=(k == 0), generator=gen)[0]
                obs, _, done, _, _ = env.step(action)
            candidates.append((kind, env.last_episode))
        splits = ctx.splits
        if o.select_samples is not None and o.select_samples < len(splits.search):
            splits = dataclasses.replace(splits, search=Subset(splits.search, range(o.select_samples)))
        evaluator = SearchEvaluator(ctx.model, splits, ctx.device, bn_batches=o.select_bn_batches,
                                    batch_size=o.eval_batch_size, example_input=ctx.example_input, groups=ctx.groups)
        rows, scored = [], {}
        best: tuple[float, int] | None = None
        for i, (kind, ep) in enumerate(candidates):
            acc = math.nan
            if ep.measure.feasible:
                key = self._key(ep)
                if key not in scored:
                    scored[key] = self._accuracy(evaluator, ep)
                acc = scored[key]
                if best is None or acc > best[0]:
                    best = (acc, i)
            m = ep.measure
            rows.append({"candidate": i, "kind": kind, "macs": m.macs, "params": m.params,
                         "macs_reduction": m.macs_reduction, "params_reduction": m.params_reduction,
                         "remaining": m.remaining, "feasible": m.feasible, "search_accuracy": acc, "chosen": False})
        projected = False
        if best is None:
            achieved = [c.measure.achieved for _, c in candidates]
            if o.on_infeasible == "error":
                write_csv(self.workdir / "final_candidates.csv", FINAL_COLUMNS, rows)
                raise BudgetNotMet(
                    f"crl-{self.variant}: none of the {len(candidates)} final rollouts meets the {ctx.budget.metric} "
                    f"budget (best reduction {max(achieved):.4f} < {ctx.budget.target:g} - {ctx.budget.tolerance:g}); "
                    "train longer, lower cost_budget, or set on_infeasible: project")
            result, acc = self._project(candidates[0][1], evaluator), math.nan
            projected, chosen = True, 0
        else:
            acc, chosen = best
            rows[chosen]["chosen"] = True
            ep = candidates[chosen][1]
            result = ep.sparsity if self.variant == "layer" else ep.keep
        write_csv(self.workdir / "final_candidates.csv", FINAL_COLUMNS, rows)
        # candidates scored: one per training episode, plus the distinct feasible final rollouts
        ctx.meta["search_evaluations"] = getattr(self, "train_episodes", 0) + len(scored)
        trained = sum(int(r["episodes_in_rollout"]) * self.scorer.images_per_episode(int(r["finetune_iters"]))
                      for r in getattr(self, "train_rows", [])) if hasattr(self, "scorer") else 0
        ctx.meta["search_images_scored"] = int(trained + len(scored) * evaluator.images_per_candidate)
        ctx.meta["crl"] = {"candidates": len(candidates), "feasible": sum(r["feasible"] for r in rows),
                           "chosen": chosen, "chosen_kind": candidates[chosen][0], "search_accuracy": acc,
                           "projected": projected, "updates": agent.updates, "timesteps": agent.timesteps,
                           "nu": agent.dual.nu, "cost_budget_percent": self.budget,
                           "cost": self.meter.kind}
        if o.finetune == "paper":
            ctx.meta["finetune_recipe"] = paper_finetune_recipe(ctx)
        return result

    def _key(self, ep: Episode) -> tuple:
        if self.variant == "layer":
            return tuple(sorted(ep.sparsity.pruned.items()))
        return tuple((k, tuple(v)) for k, v in sorted(ep.keep.items()))

    def _accuracy(self, evaluator: SearchEvaluator, ep: Episode) -> float:
        if self.variant == "neuron":
            return float(evaluator.evaluate(ep.keep))
        with masked_weights(evaluator.net, magnitude_masks(self.ctx.model, ep.sparsity, self.orders)):
            return float(evaluator.evaluate({}))

    def _project(self, ep: Episode, evaluator: SearchEvaluator) -> Keep | WeightSparsity:
        """on_infeasible: project. crl-neuron: drop the globally lowest keep-scores (harness.search.project);
        crl-layer: zero the globally smallest remaining |w| in the pruned layers."""
        ctx = self.ctx
        if self.variant == "layer":
            needed = math.ceil(ctx.budget.target * ctx.cost.base.params)
            return project_sparsity(ep.sparsity, self.units, self.orders, ctx.model, needed)
        scores = {gid: torch.as_tensor(s, dtype=torch.float64) for gid, s in ep.scores.items()}
        keep, _ = project(ctx.cost, ctx.groups, {k: torch.as_tensor(v) for k, v in ep.keep.items()}, scores,
                          ctx.budget.metric, ctx.budget.target, ctx.min_keep_fraction)
        return {gid: [int(i) for i in v] for gid, v in keep.items()}


def search(ctx: PruneContext, variant: str) -> Keep | WeightSparsity:
    """Train the agent (resuming from the workdir's checkpoint), then pick the final plan."""
    s = _Search(ctx, variant)
    agent, _ = s.train()
    return s.final(agent)


@register_method("crl-neuron", options=CRLNeuronOptions, search_log=True,
                 description="constrained RL (PPO-Lagrangian), per-channel keep-scores per group; structured")
def crl_neuron(ctx: PruneContext) -> Keep:
    return search(ctx, "neuron")  # type: ignore[return-value]


@register_method("crl-layer", options=CRLLayerOptions, structured=False, budget_metrics=("params",),
                 search_log=True,
                 description="constrained RL (PPO-Lagrangian), per-layer prune fraction + weight magnitude; "
                             "unstructured")
def crl_layer(ctx: PruneContext) -> WeightSparsity:
    return search(ctx, "layer")  # type: ignore[return-value]
