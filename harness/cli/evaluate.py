"""Stage 4: the final numbers of one run on the test split: top-1/top-5, MACs, params, reductions.

Writes metrics.json, one row of results/tables/runs.csv. The test split is read here and nowhere in a search.
"""
from __future__ import annotations

import argparse
from typing import Any

from harness.cli import common


def plan_useful_recall(plan: Any, ground_truth: str | None) -> float | None:
    """Fraction of the planted useful channels the plan keeps; None without a ground truth or for an
    unstructured plan (it keeps every channel and zeroes weights instead)."""
    from harness.models.planted import read_ground_truth, useful_recall

    from harness.errors import UserError

    if not ground_truth or not bool(plan.meta.get("structured", True)):
        return None
    truth = read_ground_truth(ground_truth)
    unknown = sorted(set(plan.keep) - set(truth))
    if unknown:
        raise UserError(f"the plan prunes groups the ground truth {ground_truth} does not know: "
                        f"{', '.join(unknown[:5])} (a plan of another model?)")
    return useful_recall(plan.keep, truth)


def main(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    from harness.data import build_splits, make_loader
    from harness.io import read_json, write_json
    from harness.metrics import Complexity, complexity, topk_accuracy
    from harness.prune import PruningPlan, load_pruned
    from harness.prune.budget import check_written_plan
    from harness.prune.unstructured import from_meta, sparse_complexity

    device = common.acquire_device()
    splits = build_splits(common.data_config(spec))
    info = splits.info
    shape = (info.in_channels, info.image_size, info.image_size)
    base = read_json(args.base_metrics)
    plan = PruningPlan.from_json(args.plan)
    ft = read_json(args.finetune_info)
    model = load_pruned(args.model).eval()
    # Unstructured plans: params are the non-zero parameters, MACs stay dense (harness.prune.unstructured).
    size = (sparse_complexity if from_meta(plan.meta) is not None else complexity)(model, shape)
    report = check_written_plan(Complexity(macs=base["macs"], params=base["params"]), size, plan.budget, plan.meta)
    batch = int(spec["evaluate"].get("batch_size", 256))
    acc = topk_accuracy(model.to(device), make_loader(splits.test, batch, shuffle=False, seed=0), device)
    record: dict[str, Any] = {
        "dataset": info.name, "arch": spec["arch"], "method": plan.method,
        "structured": bool(plan.meta.get("structured", True)),
        "budget_metric": plan.budget.metric, "budget_target": plan.budget.target, "seed": args.seed,
        "base_top1": base["top1"], "base_top5": base["top5"], "top1": acc["top1"], "top5": acc["top5"],
        "base_macs": base["macs"], "base_params": base["params"], "macs": size.macs, "params": size.params,
        "macs_reduction": report.macs_reduction, "params_reduction": report.params_reduction,
        "achieved_reduction": report.achieved, "finetune_epochs": ft["finetune_epochs"],
        "search_wall_s": plan.meta.get("search_wall_s", 0.0), "finetune_wall_s": ft["finetune_wall_s"],
        # prune stage facts: the final plan's top-1 on the held-out part of the search split (null when off),
        # and how many candidates a search scored (null for methods that do not say)
        "heldout_top1": plan.meta.get("heldout_top1"), "search_evaluations": plan.meta.get("search_evaluations"),
        # a search that returned its opening plan returned another method's plan (null: the method cannot)
        "best_is_opening": plan.meta.get("best_is_opening"),
        # search cost: images the search scored and the device it ran on (the prune stage's)
        "search_images_scored": plan.meta.get("search_images_scored"), "search_device": plan.meta.get("device"),
        # planted benchmark: fraction of the useful channels the plan keeps (null for other archs / unstructured)
        "useful_recall": plan_useful_recall(plan, args.ground_truth),
        "git_commit": common.git_commit(), "device": str(device), **common.versions(),
    }
    if spec["evaluate"].get("latency", True):
        base_model = getattr(args, "base_model", None)  # without it, only the pruned model is timed
        record.update(latency_columns(model, common.load_base(spec, info, base_model) if base_model else None,
                                      shape, device, spec["evaluate"]))
    write_json(args.out, record)


def latency_columns(model: Any, base: Any, shape: tuple[int, int, int], device: Any,
                    opts: dict[str, Any]) -> dict[str, Any]:
    """runs.csv's latency columns: the pruned model's and (when given) its base's median latency at batch 1
    and at a large batch, the interquartile ranges, and what measured them (device name, threads)."""
    from harness.metrics import latency

    kw = dict(warmup=int(opts.get("latency_warmup", 5)), repeats=int(opts.get("latency_repeats", 20)))
    small, large = int(opts.get("latency_batch_size", 1)), int(opts.get("latency_large_batch", 64))
    out: dict[str, Any] = {"latency_batch_size": small, "latency_large_batch": large}
    for prefix, net in (("", model), ("base_", base)):
        if net is None:
            continue
        for tag, batch in (("", small), ("large_", large)):
            lat = latency(net, shape, device, batch_size=batch, **kw)
            out[f"{prefix}latency_{tag}ms"] = lat["p50_ms"]
            out[f"{prefix}latency_{tag}iqr_ms"] = lat["p75_ms"] - lat["p25_ms"]
            out["latency_device"], out["latency_threads"] = lat["device_name"], lat["threads"]
    return out


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--base-metrics", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--finetune-info", required=True)
    p.add_argument("--base-model", default=None, help="the base model.pt, for its latency on the same device")
    p.add_argument("--out", required=True)
    p.add_argument("--ground-truth", default=None,
                   help="planted archs: ground_truth.json of the base, for the useful_recall column")
    common.run_main(main, p)
