"""The graph-RL search (method name ``graph-rl``): PPO on the constrained pruning environment.

Which parts are the paper's and which are ours: the graph observation, the GAT encoder, the binary
per-channel actions, the constrained MDP and the self-competition reward come from the paper's abstract;
every concrete choice (graph features, 3 GATv2 layers, the action wall and projection, tau, PPO settings,
the L1-uniform opening bar) is ours, from ``../shared/specs/graph-rl.md``, and is an option below.

The search scores candidates on the search split only (harness.search.SearchEvaluator), checkpoints the
agent after every PPO update in its workdir so a killed search resumes, logs every episode to
``search_log.csv`` and returns the best feasible plan it has seen.
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
from tqdm.auto import tqdm

from harness import registry
from harness.io import write_csv
from harness.registry import Keep, PruneContext, register_method
from harness.search import CANDIDATE_MODES, SearchEvaluator
from harness.search import checkpoint as search_checkpoint
from harness.search.subset import search_subset
from harness.search.wall import fair_ratio
from harness.search.ppo import PPO, PPOConfig, RolloutBuffer
from method.env import PruningEnv
from method.graph import EDGE_FEATURES, NODE_FEATURES
from method.policy import GraphPolicy, PolicyConfig
from method.reward import SelfCompetition

log = logging.getLogger(__name__)

PPO_ACTIONS = ("executed", "sampled")
LOG_COLUMNS = ("episode", "reward", "accuracy", "macs", "params", "macs_reduction", "params_reduction",
               "feasible", "best_accuracy", "best_is_opening", "projection_dropped", "fill_added", "keep_fraction",
               "wall_s")


@dataclass(frozen=True)
class GraphRLOptions:
    """Defaults from the spec (design decisions 3-8); each is a config knob of method ``graph-rl``."""

    episodes: int = 1000
    update_every: int = 8
    ppo_epochs: int = 4
    lr: float = 3e-4
    clip: float = 0.2
    gamma: float = 1.0
    # 1.0 (Monte-Carlo returns minus the value; spec: 0.95). The only reward is terminal, so lambda < 1 only
    # shrinks the early groups' share of it and mixes in the value head's noise (docs/graph-rl.md).
    gae_lambda: float = 1.0
    entropy_start: float = 0.01
    entropy_end: float = 0.001
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    # Graphs per forward/backward pass of a PPO minibatch (gradients accumulated, the same update): 0 = 4 on
    # the CPU (ResNet-56: 2.7x less time per graph than one 64-graph pass) and the whole minibatch on a GPU.
    ppo_forward_chunk: int = 0
    encoder: str = "gat"
    action: str = "binary"
    observation: str = "graph"
    layers: int = 3
    heads: int = 4
    head_dim: int = 64
    mode: str = "sequential"
    # Issue 12's fixes, each with the spec's behaviour selectable (docs/graph-rl.md "Learning signal"):
    # reward "spread" (spec: "self", which saturates at -1 on ~90 % of episodes), scaled by spread_tau x the
    # running standard deviation of the last reward_window feasible accuracies, around their
    # reward_percentile-th percentile (null: 50 for spread, 75 for ranked).
    reward: str = "spread"
    tau: float = 0.5
    spread_tau: float = 2.0
    reward_window: int = 64
    reward_percentile: float | None = None
    kappa: float = 1.0
    projection_penalty: float = 1.0
    # The wall keeps the later groups' share at the fair ratio (1.0; spec 0.0: their min_keep, which pushes
    # every overshoot onto the last groups) and the terminal step fills an over-pruned plan back to the target
    # (spec: false, plans over-prune by several points).
    wall_reserve: float = 1.0
    fill: bool = True
    # Which mask PPO's log-probabilities are taken of: the Bernoulli sample ("sampled", the spec; the wall,
    # projection and fill are then part of the environment, and the gradient is the score function of what
    # the policy drew) or the mask executed after them ("executed"). Measured on the planted benchmark, the
    # sampled mask learns faster (docs/graph-rl.md "Learning signal"), so it stays the default.
    # One clipped ratio per channel ("per-element"; spec: the product over the whole group, "joint", whose
    # clip acts like clip / n per channel and blocks learning on groups of hundreds of channels).
    ppo_action: str = "sampled"
    ppo_ratio: str = "per-element"
    topk_channel_edges: int = 0
    bn_batches: int = 10
    eval_batch_size: int = 256
    # Score candidates on a fixed random subset of this many search-split images (0 = all of it): for
    # presets that must finish in minutes on a CPU; the spec's 5,000 images is the default.
    search_images: int = 0
    # How a candidate is scored (harness.search.evaluator): "pruned" (a physically pruned copy: the
    # accuracy of "masked" at the pruned network's cost) or "masked" (the dense network with the pruned
    # channels zeroed, as the spec describes it).
    candidate_eval: str = "pruned"
    # The spec opens the self-competition at L1-uniform's accuracy ("l1-uniform", any registered method
    # works). "none" (default): no opening evaluation, so the search spends exactly `episodes` candidate
    # evaluations, like its random-search control, and never returns another method's plan.
    opening_bar: str = "none"
    # The opening bar's plan was scored on the search split, so it is a plan the search has seen: with this
    # on, the search returns it when no episode beats it (search_log.csv's best_is_opening says which).
    opening_plan_is_candidate: bool = True
    # Keep-probability of the untrained binary policy. None: the budget's fair ratio (the one uniform keep
    # ratio that meets the target, harness.search.wall.fair_ratio) as a fraction of all channels, so the
    # first episodes prune about as much as the budget needs instead of p = 0.5 (which over-prunes every
    # group at moderate budgets and wastes the first updates). A number in (0, 1) sets it directly.
    initial_keep: float | None = None
    self_loops: bool = False
    # A linear path from each channel's own features to its keep-logit, its output scaled by
    # feature_skip_gain (with Adam, a gain g is a g-times larger step along that path): see
    # docs/graph-rl.md "Learning signal" for the measurement behind it. Off = the spec's policy head only.
    feature_skip: bool = True
    feature_skip_gain: float = 30.0
    # The last episode takes the policy's mode (keep iff logit > 0; the repair then ranks by logit) instead of
    # a sample: one of the `episodes` candidates (so the count stays equal to the controls'), scored like the
    # others and never learned from. A sampled plan flips every channel whose keep-probability is not yet near
    # 0 or 1, so the plan the policy believes in is otherwise never scored (docs/graph-rl.md "Learning
    # signal"). Off = the spec: every episode samples.
    greedy_final: bool = True

    def __post_init__(self) -> None:
        if self.ppo_action not in PPO_ACTIONS:
            raise ValueError(f"ppo_action must be one of {', '.join(PPO_ACTIONS)}, got {self.ppo_action!r}")
        if not 0.0 <= float(self.wall_reserve) <= 1.0:
            raise ValueError(f"wall_reserve must be in [0, 1], got {self.wall_reserve}")
        if self.reward_window < 1 or self.spread_tau <= 0:
            raise ValueError("reward_window must be >= 1 and spread_tau > 0")
        if self.reward_percentile is not None and not 0.0 <= float(self.reward_percentile) <= 100.0:
            raise ValueError(f"reward_percentile must be in [0, 100] or null, got {self.reward_percentile}")
        if self.episodes < 1 or self.update_every < 1:
            raise ValueError("episodes and update_every must be >= 1")
        if self.search_images < 0:
            raise ValueError(f"search_images must be >= 0, got {self.search_images}")
        if self.candidate_eval not in CANDIDATE_MODES:
            raise ValueError(f"candidate_eval must be one of {', '.join(CANDIDATE_MODES)}, got {self.candidate_eval!r}")
        if self.initial_keep is not None and not 0.0 < float(self.initial_keep) < 1.0:
            raise ValueError(f"initial_keep must be in (0, 1) or null, got {self.initial_keep}")


def _opening_plan(ctx: PruneContext, evaluator: SearchEvaluator, method: str) -> tuple[float, Keep]:
    """A registered method's plan at the same budget (spec: L1-uniform) and its search-split accuracy."""
    spec = registry.get_method(method)
    options = registry.options_from_dict(method, {})
    keep = spec(dataclasses.replace(ctx, options=options))
    return evaluator.evaluate(keep), {k: list(map(int, v)) for k, v in keep.items()}


def _keep_fraction(ctx: PruneContext, keep: Keep) -> float:
    total = sum(g.size for g in ctx.groups)
    return sum(len(keep.get(g.id, range(g.size))) for g in ctx.groups) / max(1, total)


@register_method("graph-rl", options=GraphRLOptions, search_log=True,
                 description="GAT policy over the layer/channel graph, binary keep actions, self-competition PPO")
def graph_rl(ctx: PruneContext) -> Keep:
    opts: GraphRLOptions = ctx.options
    torch.manual_seed(ctx.seed)
    random.seed(ctx.seed)
    np.random.seed(ctx.seed)
    workdir = Path(ctx.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    splits = search_subset(ctx.splits, opts.search_images)
    evaluator = SearchEvaluator(ctx.model, splits, ctx.device, bn_batches=opts.bn_batches,
                                batch_size=opts.eval_batch_size, example_input=ctx.example_input,
                                groups=ctx.groups, mode=opts.candidate_eval)
    percentile = opts.reward_percentile if opts.reward_percentile is not None else (
        50.0 if opts.reward == "spread" else 75.0)
    reward = SelfCompetition(kappa=opts.kappa, tau=opts.tau, variant=opts.reward, window=opts.reward_window,
                             percentile=percentile, spread_tau=opts.spread_tau)
    env = PruningEnv(ctx.model, ctx.example_input, ctx.groups, ctx.cost, ctx.budget, evaluator, reward,
                     min_keep_fraction=ctx.min_keep_fraction, mode=opts.mode, action=opts.action,
                     topk_channel_edges=opts.topk_channel_edges, projection_penalty=opts.projection_penalty,
                     wall_reserve=opts.wall_reserve, fill=opts.fill)
    policy = GraphPolicy(NODE_FEATURES, EDGE_FEATURES, PolicyConfig(
        encoder=opts.encoder, layers=opts.layers, heads=opts.heads, head_dim=opts.head_dim, action=opts.action,
        observation=opts.observation, self_loops=opts.self_loops, feature_skip=opts.feature_skip,
        feature_skip_gain=opts.feature_skip_gain))
    updates = max(1, opts.episodes // max(1, opts.update_every))
    ppo = PPO(policy, PPOConfig(lr=opts.lr, clip=opts.clip, epochs=opts.ppo_epochs, gamma=opts.gamma,
                                gae_lambda=opts.gae_lambda, entropy_start=opts.entropy_start,
                                entropy_end=opts.entropy_end, entropy_decay_updates=updates,
                                value_coef=opts.value_coef, max_grad_norm=opts.max_grad_norm, seed=ctx.seed,
                                forward_chunk=opts.ppo_forward_chunk, ratio=opts.ppo_ratio))
    buffer = RolloutBuffer()

    checkpoint = workdir / "agent.pt"
    fingerprint = search_checkpoint.fingerprint(  # BN re-estimation draws from train_plain too
        ctx, "graph-rl", search_split=getattr(splits, "search", None),
        train_split=search_checkpoint.dataset_digest(getattr(ctx.splits, "train_plain", None)))
    rows: list[dict[str, Any]] = []
    best: tuple[float, Keep] | None = None
    best_is_opening = False
    start_episode = 0
    opened = opts.opening_bar != "none"
    state = search_checkpoint.load(checkpoint, fingerprint, "graph-rl")
    if state is not None:
        ppo.load_state_dict(state["ppo"])
        reward.load_state_dict(state["reward"])
        rows, best, start_episode = state["rows"], state["best"], state["episode"]
        best_is_opening = bool(state.get("best_is_opening", False))
        log.info("graph-rl: resuming after episode %d from %s", start_episode, checkpoint)
    else:
        if opened:
            bar, opening = _opening_plan(ctx, evaluator, opts.opening_bar)
            reward.start(bar)
            log.info("graph-rl: opening bar (%s) %.2f %% on the search split", opts.opening_bar, bar)
            if opts.opening_plan_is_candidate:
                best, best_is_opening = (bar, opening), True
        else:
            reward.start(None)
        if opts.action == "binary":
            p0 = float(opts.initial_keep) if opts.initial_keep is not None else budget_keep_fraction(ctx)
            policy.set_initial_keep(min(max(p0, 0.02), 0.98))

    # The policy runs where the evaluator does (PPO.update moves its minibatches there); the environment and
    # the buffer stay on the CPU. On CPU this is the same code path; sampling on a GPU draws from a CUDA
    # generator, so CPU and GPU searches of the same seed differ (each is reproducible on its own).
    device = torch.device(ctx.device)
    policy.to(device)
    generator = torch.Generator(device=device).manual_seed(ctx.seed)
    per_element = opts.ppo_ratio == "per-element"
    # a one-episode search has nothing to learn from: its episode samples
    sampled_episodes = opts.episodes - (1 if opts.greedy_final and opts.episodes >= 2 else 0)
    for episode in tqdm(range(start_episode, opts.episodes), desc="graph-rl", unit="episode",
                        initial=start_episode, total=opts.episodes, disable=None):
        t0 = time.perf_counter()
        # Per-episode seeds: a resumed search draws exactly what an uninterrupted one would have drawn.
        torch.manual_seed(ctx.seed * 1_000_003 + episode)
        generator.manual_seed(ctx.seed * 1_000_003 + episode)
        obs, info = env.reset(seed=ctx.seed * 1_000_003 + episode)
        done = False
        first_step = len(buffer)
        greedy = episode >= sampled_episodes
        logits_of_step: list[torch.Tensor | None] = []
        while not done:
            gi = None if opts.mode == "one-shot" else int(info["group_index"])
            with torch.no_grad():
                out = policy(obs.to(device) if device.type != "cpu" else obs, gi)
                action = policy.act(out, gi, generator=generator, deterministic=greedy)
                lp_el, _ = policy.element_log_prob(out, action, gi)
                value = float(out.value.view(-1)[0])
                # Binary: the keep-logits rank channels for the action wall and the projection.
                action = action.cpu()
                logits = policy.distribution(out, gi).logits.cpu() if opts.action == "binary" else None
                step_action = {"keep": action, "scores": logits} if opts.action == "binary" else action
            logits_of_step.append(logits)
            if not greedy:  # the buffer clones x (the env edits it in place)
                buffer.add(obs, gi, action, float(lp_el.sum()), value, 0.0, False,
                           element_log_prob=lp_el.cpu() if per_element else None)
            obs, r, terminated, truncated, info = env.step(step_action)
            done = bool(terminated or truncated)
            if not greedy:
                buffer.steps[-1].reward, buffer.steps[-1].done = float(r), done
        if opts.ppo_action == "executed" and opts.action == "binary" and not greedy:  # a ratio action is its own executed action
            _relabel_executed(buffer, first_step, logits_of_step, ctx.groups, info["keep"], per_element)
        acc = float(info["accuracy"])
        if info["feasible"] and (best is None or acc > best[0]):
            best = (acc, {k: list(map(int, v)) for k, v in info["keep"].items()})
            best_is_opening = False
        rows.append({"episode": episode, "reward": float(r), "accuracy": acc, "macs": info["macs"],
                     "params": info["params"], "macs_reduction": info["macs_reduction"],
                     "params_reduction": info["params_reduction"], "feasible": bool(info["feasible"]),
                     "best_accuracy": best[0] if best else float("nan"), "best_is_opening": best_is_opening,
                     "projection_dropped": int(info["projection_dropped"]),
                     "fill_added": int(info.get("fill_added", 0)),
                     "keep_fraction": _keep_fraction(ctx, info["keep"]), "wall_s": time.perf_counter() - t0})
        if greedy:  # nothing to learn from: keep the state of the greedy episode's result
            search_checkpoint.save(checkpoint, fingerprint, {
                "ppo": ppo.state_dict(), "reward": reward.state_dict(), "rows": rows, "best": best,
                "best_is_opening": best_is_opening, "episode": episode + 1})
        elif (episode + 1) % opts.update_every == 0 or episode + 1 == sampled_episodes:
            torch.manual_seed(ctx.seed * 1_000_003 + 7 * episode + 1)  # minibatch shuffling of this update
            stats = ppo.update(buffer)
            log.debug("graph-rl update after episode %d: %s", episode + 1,
                      " ".join(f"{k}={v:.4g}" for k, v in stats.items()))
            buffer.clear()
            # The buffer is empty after an update: the agent, reward state, log and best plan are all there is.
            search_checkpoint.save(checkpoint, fingerprint, {
                "ppo": ppo.state_dict(), "reward": reward.state_dict(), "rows": rows, "best": best,
                "best_is_opening": best_is_opening, "episode": episode + 1})
            write_csv(workdir / "search_log.csv", LOG_COLUMNS, rows)
    write_csv(workdir / "search_log.csv", LOG_COLUMNS, rows)
    if best is None:
        raise RuntimeError("graph-rl found no feasible plan (the environment's projection should make every plan feasible)")
    ctx.meta["search_evaluations"] = opts.episodes + (1 if opened else 0)
    ctx.meta["search_images_scored"] = ctx.meta["search_evaluations"] * evaluator.images_per_candidate
    # runs.csv's best_is_opening: the returned plan is the opening method's (only with an opening bar)
    ctx.meta["best_is_opening"] = bool(best_is_opening)
    ctx.meta["graph_rl"] = {"best_search_top1": best[0], "best_is_opening": best_is_opening,
                            "opening_bar": opts.opening_bar}
    return {gid: idxs for gid, idxs in best[1].items()}


def budget_keep_fraction(ctx: PruneContext) -> float:
    """Kept fraction of all channels when every group keeps the budget's fair ratio (the initial keep bias)."""
    r = fair_ratio(ctx.cost, ctx.groups, {}, 0, ctx.budget.metric, ctx.budget.target, ctx.min_keep_fraction)
    kept = sum(min(g.size, max(ctx.min_keep(g), int(np.floor(r * g.size + 0.5)))) for g in ctx.groups)
    return kept / max(1, sum(g.size for g in ctx.groups))


def _relabel_executed(buffer: RolloutBuffer, first: int, logits: list[torch.Tensor | None], groups: Any,
                      keep: Keep, per_element: bool) -> None:
    """Make the episode's buffered actions the masks that were executed (after the wall, min_keep, the
    projection and the fill), with their log-probabilities under the logits the policy acted with."""
    masks = {}
    for g in groups:
        m = torch.zeros(g.size)
        m[torch.as_tensor(keep.get(g.id, range(g.size)), dtype=torch.long)] = 1.0
        masks[g.id] = m
    for step, lg in zip(buffer.steps[first:], logits):
        if step.group_index is None:
            executed = torch.cat([masks[g.id] for g in groups])
        else:
            executed = masks[groups[step.group_index].id]
        lp = torch.distributions.Bernoulli(logits=lg).log_prob(executed)
        step.action = executed.to(step.action.dtype)
        step.log_prob = float(lp.sum())
        step.element_log_prob = lp.float() if per_element else None
