"""Cost of the constrained-RL search (crl-neuron / crl-layer) per 1,000 environment steps on CIFAR ResNet-56.

    .venv/bin/python benchmarks/bench_crl.py [--variant both] [--steps 1000] [--reward-samples 512] [--threads 1]

Runs the real search loop (PPO-Lagrangian, 3 envs x 128 steps per update, the README's settings) on a
randomly initialised ResNet-56 (harness.models, 32x32, 10 classes; weights do not change the cost) and
synthetic 32x32 images, with rewards on ``--reward-samples`` search images and no inner fine-tune
(``--finetune-iters`` to add it). Reports, per variant: wall seconds per 1,000 environment steps of training,
the share spent scoring masked networks (the accuracy evaluation: masking + optional inner fine-tune +
forward passes), and the **overhead** = everything else (policy, environment, cost model, magnitude masks,
PPO updates, checkpoints, logs). Target: overhead <= 25 % of the training time. The final selection
(``--final-rollouts`` rollouts scored on the search split) is timed separately.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def run(variant: str, args: argparse.Namespace) -> dict[str, float]:
    import torch

    from baselines.crl import search as crl
    from baselines.crl.scorer import EpisodeScorer
    from harness import registry
    from harness.data import DataConfig, build_splits
    from harness.models import build_model
    from harness.prune import Budget, CostModel, find_groups

    registry.load_plugins()
    torch.manual_seed(0)
    splits = build_splits(DataConfig(name="synthetic", synthetic_train=2000, synthetic_test=100,
                                     search_size=max(args.reward_samples, 512), synthetic_classes=10,
                                     synthetic_image_size=32, synthetic_channels=3))
    model = build_model(args.arch, splits.info).eval()
    x = torch.zeros(1, 3, 32, 32)
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    method = f"crl-{variant}"
    metric, target = ("macs", 0.5) if variant == "neuron" else ("params", 0.5)
    options = {"timesteps": args.steps, "reward_split": "search", "reward_samples": args.reward_samples,
               "reward_batch_size": min(args.reward_samples, 256), "finetune_iters": [args.finetune_iters],
               "final_rollouts": args.final_rollouts, "select_samples": 512, "select_bn_batches": 2,
               "on_infeasible": "project"}
    ctx = registry.PruneContext(model=model, example_input=x, groups=groups, cost=cost,
                                budget=Budget(metric, target), min_keep_fraction=0.1, splits=splits,
                                device=torch.device("cpu"), seed=0,
                                options=registry.options_from_dict(method, options),
                                workdir=Path(tempfile.mkdtemp(prefix=f"bench-{method}-")), arch=args.arch)
    scoring = {"s": 0.0, "n": 0}
    real_score = EpisodeScorer.score

    def timed(self, **kw):
        t = time.perf_counter()
        try:
            return real_score(self, **kw)
        finally:
            scoring["s"] += time.perf_counter() - t
            scoring["n"] += 1

    EpisodeScorer.score = timed
    try:
        s = crl._Search(ctx, variant)
        t0 = time.perf_counter()
        agent, rows = s.train()
        train = time.perf_counter() - t0
        t1 = time.perf_counter()
        s.final(agent)
        final = time.perf_counter() - t1
    finally:
        EpisodeScorer.score = real_score
    steps = agent.timesteps
    return {"units": len(s.units), "steps": steps, "episodes": scoring["n"], "train_s": train,
            "per_1000": 1000.0 * train / steps, "scoring_share": scoring["s"] / train,
            "overhead_share": 1.0 - scoring["s"] / train, "per_episode_score_s": scoring["s"] / max(1, scoring["n"]),
            "final_s": final}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=["neuron", "layer", "both"], default="both")
    parser.add_argument("--arch", default="resnet56")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--reward-samples", type=int, default=512)
    parser.add_argument("--finetune-iters", type=int, default=0)
    parser.add_argument("--final-rollouts", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    ok = True
    for variant in (["neuron", "layer"] if args.variant == "both" else [args.variant]):
        r = run(variant, args)
        print(f"crl-{variant} on {args.arch} @ 32x32, {args.threads} thread(s): {r['units']} steps per episode, "
              f"{r['steps']} steps ({r['episodes']} episodes), reward on {args.reward_samples} images, "
              f"{args.finetune_iters} inner iterations")
        print(f"  {r['per_1000']:.1f} s per 1,000 steps; scoring {100 * r['scoring_share']:.1f} % "
              f"({r['per_episode_score_s']:.2f} s per episode), overhead {100 * r['overhead_share']:.1f} % "
              f"(target <= 25 %)")
        print(f"  final selection ({args.final_rollouts + 1} rollouts, 512 search images each): {r['final_s']:.1f} s")
        ok &= r["overhead_share"] <= 0.25
    print("OK" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
