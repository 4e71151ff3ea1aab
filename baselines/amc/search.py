"""The method ``amc``: AMC's DDPG search (He et al., ECCV 2018; spec ``baselines.md`` B), resumable and logged.

Defaults are the spec's recommended decisions (B.4): 100 warm-up + 300 DDPG episodes (the paper; the
official code runs 800: ``episodes: 800``), the paper's 11-feature state (``state: code`` for the official
10), preserve ratios in [0.2, 1] under the action wall, channels by input-channel L1 rounded to multiples of
8 (``round_to: 1`` for narrow CIFAR nets), block-internal groups only on residual networks (``scope: all``
adds the residual streams as dependency groups), R_err on the search split's top-1 without fine-tuning and
without BN recalibration (``bn_batches: N`` recalibrates on N train batches), replay buffer 2000. Every
option is listed in docs/amc.md with where it comes from.

The best-reward strategy seen is exported (the official ``best_strategy``). The agent, its replay buffer,
the reward baseline, the log and the best plan are checkpointed in the workdir every ``checkpoint_every``
episodes with a fingerprint (:mod:`harness.search.checkpoint`: options, base weights, budget, seed, search
images; a checkpoint of another search is ignored with a warning), and each episode's random draws come
from a seed derived from (seed, episode), so a killed search resumed from its checkpoint ends with the same
plan as an uninterrupted one (CPU).
"""
from __future__ import annotations

import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from harness.errors import UserError
from harness.io import write_csv
from harness.registry import Keep, PruneContext, learner_config, register_method
from harness.search import CANDIDATE_MODES, SearchEvaluator
from harness.search import checkpoint as search_checkpoint
from baselines.amc.ddpg import DDPGAgent, DDPGConfig, run_episode
from baselines.amc.env import AMCEnv
from baselines.amc.layers import STATES
from baselines.amc.reconstruct import Reconstruction, ReconstructingEvaluator
from baselines.amc.rewards import REWARDS

log = logging.getLogger(__name__)

SCOPES = ("internal", "all")
LOG_COLUMNS = ("episode", "phase", "reward", "accuracy", "macs", "params", "macs_reduction", "params_reduction",
               "feasible", "best_reward", "best_accuracy", "sigma", "updates", "eval_s", "refit_s", "wall_s", "strategy")


@dataclass(frozen=True)
class AMCOptions:
    """Options of method ``amc`` (defaults: the paper / spec B.4; see docs/amc.md for each one's source)."""

    episodes: int = 400          # total, warm-up included (paper 100 + 300; official code 800)
    warmup: int = 100            # random-action episodes without learning
    scope: str = "internal"      # "internal": block-internal groups only; "all": + residual-stream groups
    state: str = "paper"         # "paper" (11 features) | "code" (the official 10)
    reward: str = "err"          # "err" | "flops" | "param"
    lbound: float = 0.2
    rbound: float = 1.0
    round_to: int = 8
    hidden1: int = 300
    hidden2: int = 300
    lr_actor: float = 1e-4
    lr_critic: float = 1e-3
    tau: float = 0.01
    batch_size: int = 64
    replay_size: int = 2000      # the paper's; the official code uses 100 x (number of layers)
    discount: float = 1.0
    sigma: float = 0.5
    sigma_decay: float = 0.95
    baseline_alpha: float = 0.5
    reconstruct: bool = True     # least-squares re-fit of layer t's kept weights (spec B.4.5); False: L1 only
    calib_images: int = 3000     # calibration images (train split) for the re-fit
    calib_points: int = 10       # random positions per image for the re-fit (official: 10)
    bn_batches: int = 0          # BN recalibration batches before each evaluation (0: none, as AMC)
    eval_batch_size: int = 256
    search_size: int = 0         # evaluate on the first N search-split images (0: all of them)
    checkpoint_every: int = 10
    candidate_eval: str = "pruned"  # "pruned" | "masked": SearchEvaluator's mode (the same accuracy, pruned is cheaper)

    def __post_init__(self) -> None:
        if self.candidate_eval not in CANDIDATE_MODES:
            raise UserError(f"amc option candidate_eval must be one of {', '.join(CANDIDATE_MODES)}, "
                            f"got {self.candidate_eval!r}")
        if not isinstance(self.reconstruct, bool):
            raise UserError(f"amc option reconstruct must be true or false, got {self.reconstruct!r}")
        ints = {"episodes": 1, "warmup": 0, "round_to": 1, "calib_images": 1, "calib_points": 1, "hidden1": 1, "hidden2": 1, "batch_size": 1,
                "replay_size": 1, "bn_batches": 0, "eval_batch_size": 1, "search_size": 0, "checkpoint_every": 1}
        for name, low in ints.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise UserError(f"amc option {name} must be an integer >= {low}, got {v!r}")
        for name in ("lbound", "rbound", "lr_actor", "lr_critic", "tau", "discount", "sigma", "sigma_decay",
                     "baseline_alpha"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                raise UserError(f"amc option {name} must be a non-negative number, got {v!r}")
        if not 0.0 < self.lbound <= self.rbound <= 1.0:
            raise UserError(f"amc needs 0 < lbound <= rbound <= 1, got {self.lbound}, {self.rbound}")
        if not 0.0 < self.tau <= 1.0 or not 0.0 < self.baseline_alpha <= 1.0 or self.discount > 1.0:
            raise UserError("amc options tau and baseline_alpha must be in (0, 1], discount in [0, 1]")
        if self.warmup >= self.episodes:
            raise UserError(f"amc: warmup ({self.warmup}) must be smaller than episodes ({self.episodes})")
        if self.scope not in SCOPES:
            raise UserError(f"amc option scope must be one of {', '.join(SCOPES)}, got {self.scope!r}")
        if self.state not in STATES:
            raise UserError(f"amc option state must be one of {', '.join(STATES)}, got {self.state!r}")
        if self.reward not in REWARDS:
            raise UserError(f"amc option reward must be one of {', '.join(REWARDS)}, got {self.reward!r}")

    def ddpg(self) -> DDPGConfig:
        return learner_config(DDPGConfig, self)


def episode_seed(seed: int, episode: int) -> int:
    return seed * 1_000_003 + episode


def seed_episode(seed: int, episode: int) -> int:
    """Seed every RNG an episode draws from (actions, noise, replay sampling) from (seed, episode)."""
    s = episode_seed(seed, episode)
    torch.manual_seed(s)
    np.random.seed(s % 2**32)
    random.seed(s)
    return s


def search_splits(splits: Any, search_size: int) -> Any:
    """``splits`` with the search split cut to its first ``search_size`` images (0: unchanged)."""
    if not search_size or splits is None or search_size >= len(splits.search):
        return splits
    return dataclasses.replace(splits, search=Subset(splits.search, range(search_size)))


def write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    write_csv(path, LOG_COLUMNS, rows)


def build_env(ctx: PruneContext, opts: AMCOptions, evaluator: Any = None) -> AMCEnv:
    """The AMC environment of ``ctx`` (its evaluator may be attached later: ``env.evaluator = ...``)."""
    groups = [g for g in ctx.groups if opts.scope == "all" or not g.residual]
    if not groups:
        raise UserError(f"{ctx.arch or 'model'} has no prunable group in amc scope {opts.scope!r}")
    return AMCEnv(ctx.model, ctx.example_input, groups, ctx.cost, ctx.budget, evaluator, lbound=opts.lbound,
                  rbound=opts.rbound, round_to=opts.round_to, min_keep_fraction=ctx.min_keep_fraction,
                  state=opts.state, reward=opts.reward, arch=ctx.arch or "model")


def build_evaluator(ctx: PruneContext, opts: AMCOptions, env: AMCEnv) -> Any:
    """Search-split top-1 of a keep-plan (masked or pruned candidates), optional BN recalibration and re-fit."""
    evaluator = SearchEvaluator(ctx.model, search_splits(ctx.splits, opts.search_size), ctx.device,
                                bn_batches=opts.bn_batches, batch_size=opts.eval_batch_size,
                                eval_batch_size=opts.eval_batch_size, example_input=ctx.example_input,
                                groups=env.groups, mode=opts.candidate_eval)
    if not opts.reconstruct:
        return evaluator
    rec = Reconstruction(ctx.model, ctx.example_input, env.layers, ctx.splits.train_plain,
                         images=opts.calib_images, points=opts.calib_points, batch_size=opts.eval_batch_size,
                         seed=ctx.seed, device=ctx.device)
    return ReconstructingEvaluator(evaluator, rec)


def search_fingerprint(ctx: PruneContext, opts: AMCOptions) -> dict[str, Any]:
    """What ``agent.pt`` must match to be resumed: method, options, base weights, budget, seed, groups, the
    search images the evaluator scores on, and the training images the re-fit / BN recalibration draw from."""
    splits = ctx.splits
    scored = search_splits(splits, opts.search_size).search if splits is not None else None
    return search_checkpoint.fingerprint(
        ctx, "amc", search_split=scored,
        train_split=search_checkpoint.dataset_digest(getattr(splits, "train_plain", None)))


@register_method("amc", options=AMCOptions, search_log=True,
                 description="AMC (He et al. 2018): DDPG sets each layer's preserve ratio under an action wall")
def amc(ctx: PruneContext) -> Keep:
    opts: AMCOptions = ctx.options
    workdir = Path(ctx.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    env = build_env(ctx, opts)  # rejects an unreachable budget before any data is loaded
    env.evaluator = build_evaluator(ctx, opts, env)
    torch.manual_seed(ctx.seed)
    agent = DDPGAgent(env.observation_space.shape[0], opts.ddpg())

    checkpoint = workdir / "agent.pt"
    fingerprint = search_fingerprint(ctx, opts)
    rows: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start = 0
    state = search_checkpoint.load(checkpoint, fingerprint, "amc")  # None: fresh (another search's is ignored)
    if state is not None:
        agent.load_state_dict(state["agent"])
        rows, best, start = state["rows"], state["best"], int(state["episode"])
        log.info("amc: resuming after episode %d from %s", start, checkpoint)

    for episode in range(start, opts.episodes):
        t0 = time.perf_counter()
        seed = seed_episode(ctx.seed, episode)
        reward, info, updates = run_episode(env, agent, episode, seed=seed)
        if best is None or reward > best["reward"]:
            best = {"reward": reward, "accuracy": info["accuracy"], "episode": episode, "keep": info["keep"],
                    "strategy": info["strategy"]}
        rows.append({"episode": episode, "phase": "warmup" if episode < opts.warmup else "ddpg",
                     "reward": reward, "accuracy": info["accuracy"], "macs": info["macs"], "params": info["params"],
                     "macs_reduction": info["macs_reduction"], "params_reduction": info["params_reduction"],
                     "feasible": True,  # the action wall makes every plan feasible (ctx.verify checks the best)
                     "best_reward": best["reward"], "best_accuracy": best["accuracy"], "sigma": agent.sigma(episode),
                     "updates": updates, "eval_s": info["eval_s"],  # evaluation incl. the re-fit
                     "refit_s": getattr(env.evaluator, "last_refit_s", 0.0), "wall_s": time.perf_counter() - t0,
                     "strategy": " ".join(f"{r:.4f}" for r in info["strategy"])})
        if (episode + 1) % opts.checkpoint_every == 0 or episode + 1 == opts.episodes:
            search_checkpoint.save(checkpoint, fingerprint, {"agent": agent.state_dict(), "rows": rows, "best": best,
                                                             "episode": episode + 1})
            write_log(workdir / "search_log.csv", rows)
    write_log(workdir / "search_log.csv", rows)
    if best is None:
        raise RuntimeError("amc ran no episode")
    log.info("amc: best reward %.4f (top-1 %.2f %%) at episode %d", best["reward"], best["accuracy"], best["episode"])
    ctx.meta["search_evaluations"] = int(opts.episodes)  # one scored candidate per episode
    scorer = getattr(env.evaluator, "evaluator", env.evaluator)  # the SearchEvaluator inside a re-fit wrapper
    ctx.meta["search_images_scored"] = int(opts.episodes) * scorer.images_per_candidate
    ctx.meta["amc"] = {"best_episode": best["episode"], "best_reward": best["reward"],
                       "best_search_top1": best["accuracy"], "strategy": [round(r, 6) for r in best["strategy"]],
                       "layers": [la.module for la in env.layers]}
    return ctx.verify(best["keep"], "amc")
