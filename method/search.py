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

import csv
import dataclasses
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from harness import registry
from harness.io import torch_save, write_text
from harness.registry import Keep, PruneContext, register_method
from harness.search import SearchEvaluator
from harness.search.ppo import PPO, PPOConfig, RolloutBuffer
from method.env import PruningEnv
from method.graph import EDGE_FEATURES, NODE_FEATURES
from method.policy import GraphPolicy, PolicyConfig
from method.reward import SelfCompetition

log = logging.getLogger(__name__)

LOG_COLUMNS = ("episode", "reward", "accuracy", "macs", "params", "macs_reduction", "params_reduction",
               "feasible", "best_accuracy", "projection_dropped", "wall_s")


@dataclass(frozen=True)
class GraphRLOptions:
    """Defaults from the spec (design decisions 3-8); each is a config knob of method ``graph-rl``."""

    episodes: int = 1000
    update_every: int = 8
    ppo_epochs: int = 4
    lr: float = 3e-4
    clip: float = 0.2
    gamma: float = 1.0
    gae_lambda: float = 0.95
    entropy_start: float = 0.01
    entropy_end: float = 0.001
    value_coef: float = 0.5
    max_grad_norm: float = 0.5
    encoder: str = "gat"
    action: str = "binary"
    observation: str = "graph"
    layers: int = 3
    heads: int = 4
    head_dim: int = 64
    mode: str = "sequential"
    reward: str = "self"
    tau: float = 0.5
    kappa: float = 1.0
    projection_penalty: float = 1.0
    topk_channel_edges: int = 0
    bn_batches: int = 10
    eval_batch_size: int = 256
    opening_bar: str = "l1-uniform"


def _opening_bar(ctx: PruneContext, evaluator: SearchEvaluator, method: str) -> float:
    """Search-split accuracy of a registered method's plan at the same budget (spec: L1-uniform)."""
    spec = registry.get_method(method)
    options = registry.options_from_dict(method, {})
    keep = spec(dataclasses.replace(ctx, options=options))
    return evaluator.evaluate(keep)


def _write_log(path: Path, rows: list[dict[str, Any]]) -> None:
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


@register_method("graph-rl", options=GraphRLOptions,
                 description="GAT policy over the layer/channel graph, binary keep actions, self-competition PPO")
def graph_rl(ctx: PruneContext) -> Keep:
    opts: GraphRLOptions = ctx.options
    torch.manual_seed(ctx.seed)
    random.seed(ctx.seed)
    np.random.seed(ctx.seed)
    workdir = Path(ctx.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    evaluator = SearchEvaluator(ctx.model, ctx.splits, ctx.device, bn_batches=opts.bn_batches,
                                batch_size=opts.eval_batch_size, example_input=ctx.example_input,
                                groups=ctx.groups)
    reward = SelfCompetition(kappa=opts.kappa, tau=opts.tau, variant=opts.reward)
    env = PruningEnv(ctx.model, ctx.example_input, ctx.groups, ctx.cost, ctx.budget, evaluator, reward,
                     min_keep_fraction=ctx.min_keep_fraction, mode=opts.mode, action=opts.action,
                     topk_channel_edges=opts.topk_channel_edges, projection_penalty=opts.projection_penalty)
    policy = GraphPolicy(NODE_FEATURES, EDGE_FEATURES, PolicyConfig(
        encoder=opts.encoder, layers=opts.layers, heads=opts.heads, head_dim=opts.head_dim, action=opts.action,
        observation=opts.observation))
    updates = max(1, opts.episodes // max(1, opts.update_every))
    ppo = PPO(policy, PPOConfig(lr=opts.lr, clip=opts.clip, epochs=opts.ppo_epochs, gamma=opts.gamma,
                                gae_lambda=opts.gae_lambda, entropy_start=opts.entropy_start,
                                entropy_end=opts.entropy_end, entropy_decay_updates=updates,
                                value_coef=opts.value_coef, max_grad_norm=opts.max_grad_norm, seed=ctx.seed))
    buffer = RolloutBuffer()

    checkpoint = workdir / "agent.pt"
    rows: list[dict[str, Any]] = []
    best: tuple[float, Keep] | None = None
    start_episode = 0
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        ppo.load_state_dict(state["ppo"])
        reward.load_state_dict(state["reward"])
        rows, best, start_episode = state["rows"], state["best"], state["episode"]
        log.info("graph-rl: resuming after episode %d from %s", start_episode, checkpoint)
    else:
        reward.start(_opening_bar(ctx, evaluator, opts.opening_bar))

    generator = torch.Generator().manual_seed(ctx.seed)
    for episode in range(start_episode, opts.episodes):
        t0 = time.perf_counter()
        # Per-episode seeds: a resumed search draws exactly what an uninterrupted one would have drawn.
        torch.manual_seed(ctx.seed * 1_000_003 + episode)
        generator.manual_seed(ctx.seed * 1_000_003 + episode)
        obs, info = env.reset(seed=ctx.seed * 1_000_003 + episode)
        done = False
        while not done:
            gi = None if opts.mode == "one-shot" else int(info["group_index"])
            with torch.no_grad():
                out = policy(obs)
                action = policy.act(out, gi, generator=generator)
                logp = float(policy.log_prob(out, action, gi).sum())
                value = float(out.value.view(-1)[0])
                # Binary: the keep-logits rank channels for the action wall and the projection.
                step_action = ({"keep": action, "scores": policy.distribution(out, gi).logits}
                               if opts.action == "binary" else action)
            buffer.add(obs, gi, action, logp, value, 0.0, False)  # the buffer clones x (the env edits it in place)
            obs, r, terminated, truncated, info = env.step(step_action)
            done = bool(terminated or truncated)
            buffer.steps[-1].reward, buffer.steps[-1].done = float(r), done
        acc = float(info["accuracy"])
        if info["feasible"] and (best is None or acc > best[0]):
            best = (acc, {k: list(map(int, v)) for k, v in info["keep"].items()})
        rows.append({"episode": episode, "reward": float(r), "accuracy": acc, "macs": info["macs"],
                     "params": info["params"], "macs_reduction": info["macs_reduction"],
                     "params_reduction": info["params_reduction"], "feasible": bool(info["feasible"]),
                     "best_accuracy": best[0] if best else float("nan"),
                     "projection_dropped": int(info["projection_dropped"]), "wall_s": time.perf_counter() - t0})
        if (episode + 1) % opts.update_every == 0 or episode + 1 == opts.episodes:
            torch.manual_seed(ctx.seed * 1_000_003 + 7 * episode + 1)  # minibatch shuffling of this update
            ppo.update(buffer)
            buffer.clear()
            # The buffer is empty after an update: the agent, reward state, log and best plan are all there is.
            torch_save({"ppo": ppo.state_dict(), "reward": reward.state_dict(), "rows": rows, "best": best,
                        "episode": episode + 1}, checkpoint)
            _write_log(workdir / "search_log.csv", rows)
    _write_log(workdir / "search_log.csv", rows)
    if best is None:
        raise RuntimeError("graph-rl found no feasible plan (the environment's projection should make every plan feasible)")
    return {gid: idxs for gid, idxs in best[1].items()}
