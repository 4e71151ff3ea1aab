"""Which of graph-RL's learning-signal options make it learn? An ablation on the planted benchmark.

Loads a planted base model and its ground truth from a finished planted run (``snakemake --configfile
config/planted.yaml``), then runs graph-RL with the planted preset's options and with one option at a time
switched back to the spec's behaviour (or learning switched off), and random-search with the same number of
evaluations, for each seed. Every plan is scored like the prune stage scores it: on the held-out part of the
search split (harness.data.hold_out, never selected on), after BN re-estimation; with its useful recall.

    python benchmarks/planted_ablation.py --results results/planted --seeds 0 1 2
    python benchmarks/planted_ablation.py --variants default executed frozen --seeds 0
    python benchmarks/planted_ablation.py --variants default random-search --episodes 144 --jobs 2
    python benchmarks/planted_ablation.py --variants default frozen --seeds 0 --search-seeds 10 11 12 13 14 15

One torch thread per run; ``--jobs 2`` runs two searches at once (one per core).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: option overrides of each variant (graph-rl) on top of the preset's graph-rl options
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "sampled-final": {"greedy_final": False},        # the spec: the last episode samples like the others
    "executed": {"ppo_action": "executed"},           # PPO on the mask executed after the wall and fill
    "joint-ratio": {"ppo_ratio": "joint"},            # the spec's one ratio per group
    "lambda-0.95": {"gae_lambda": 0.95},              # the spec's GAE lambda
    "no-feature-skip": {"feature_skip": False},       # the spec's policy head only
    "spec-wall": {"wall_reserve": 0.0, "fill": False},  # later groups at min_keep, no fill
    "self-reward": {"reward": "self", "opening_bar": "l1-uniform", "opening_plan_is_candidate": False},
    "frozen": {"lr": 1e-30},                          # learning switched off: the initial policy every episode
    "frozen-sampled": {"lr": 1e-30, "greedy_final": False},  # ... and no greedy last episode either
}


def run_one(results: str, config: str, seed: int, variant: str, budget: tuple[str, float],
            episodes: int | None = None, search_seed: int | None = None) -> dict[str, Any]:
    import torch

    from harness import registry
    from harness.cli.common import load_base
    from harness.config import job_spec, load_config
    from harness.data import build_splits, hold_out
    from harness.data.config import DataConfig
    from harness.models.planted import read_ground_truth, useful_recall
    from harness.prune import Budget, CostModel, find_groups
    from harness.search import SearchEvaluator

    torch.set_num_threads(1)
    registry.load_plugins()
    cfg = yaml.safe_load(Path(config).read_text())
    wf = load_config(cfg, check_data=False)
    exp = wf.experiments[0]
    spec = json.loads(job_spec(wf, exp.dataset, exp.arch))
    splits = build_splits(DataConfig(**spec["dataset"]))
    method_splits, heldout = hold_out(splits, int(cfg["prune"]["heldout_images"]))
    base = Path(results) / "base" / exp.dataset / exp.arch / f"seed{seed}"
    model = load_base(spec, splits.info, base / "model.pt")
    truth = read_ground_truth(base / "ground_truth.json")
    x = torch.zeros(1, splits.info.in_channels, splits.info.image_size, splits.info.image_size)
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    b = Budget(budget[0], budget[1])
    if variant == "random-search":
        method, options = "random-search", dict(cfg["methods"]["random-search"])
    else:
        method, options = "graph-rl", {**cfg["methods"]["graph-rl"], **VARIANTS[variant]}
    if episodes is not None:  # the same number of candidates for the search and its control
        options["evaluations" if method == "random-search" else "episodes"] = episodes
    t0 = time.time()
    with tempfile.TemporaryDirectory() as wd:
        ctx = registry.PruneContext(model=model, example_input=x, groups=groups, cost=cost, budget=b,
                                    min_keep_fraction=0.1, splits=method_splits, device=torch.device("cpu"),
                                    seed=seed if search_seed is None else search_seed,
                                    options=registry.options_from_dict(method, options),
                                    workdir=Path(wd), arch=exp.arch)
        keep = registry.get_method(method)(ctx)
        import csv

        with open(Path(wd) / "search_log.csv") as fh:
            rows = list(csv.DictReader(fh))
    import dataclasses

    hev = SearchEvaluator(model, dataclasses.replace(splits, search=heldout), "cpu",
                          bn_batches=int(cfg["prune"].get("heldout_bn_batches", 2)), batch_size=256,
                          example_input=x, groups=groups)
    accs = [float(r["accuracy"]) for r in rows]
    q = max(1, len(accs) // 4)
    out = {"variant": variant, "seed": seed, "search_seed": seed if search_seed is None else search_seed,
           "candidates": len(rows), "budget": f"{budget[0]}-{budget[1]:g}",
           "heldout_top1": round(hev.evaluate(keep), 2), "useful_recall": round(useful_recall(keep, truth), 3),
           "best_search_top1": round(max(accs), 2), "first_quarter": round(sum(accs[:q]) / q, 2),
           "last_quarter": round(sum(accs[-q:]) / q, 2), "wall_s": round(time.time() - t0, 1)}
    if "reward" in rows[0]:
        rewards = [abs(float(r["reward"])) for r in rows[8:]]
        out["saturated"] = round(sum(r >= 0.99 for r in rewards) / max(1, len(rewards)), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results/planted", help="results_dir of a finished planted run")
    p.add_argument("--config", default="config/planted.yaml")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=[*VARIANTS, "random-search"],
                   choices=[*VARIANTS, "random-search"])
    p.add_argument("--budget", default="macs-0.6", help="metric-target, e.g. macs-0.6")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--episodes", type=int, default=None,
                   help="graph-rl's episodes and random-search's evaluations (default: the preset's)")
    p.add_argument("--search-seeds", type=int, nargs="+", default=None,
                   help="search seeds per base seed (policy init and sampling; default: the base seed)")
    args = p.parse_args(argv)
    metric, _, target = args.budget.partition("-")
    todo = [(args.results, args.config, s, v, (metric, float(target)), args.episodes, ss)
            for v in args.variants for s in args.seeds for ss in (args.search_seeds or [None])]
    with cf.ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for result in pool.map(run_one, *zip(*todo)):
            print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
