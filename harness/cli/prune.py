"""Stage 2: run one pruning method on a trained base model and write its pruning plan (plan.json).

The plan is applied to a copy and measured before it is written: a plan that misses its budget is an
error (BudgetNotMet), never a file.

A latency budget (``--metric latency``) predicts plans' latency with the (arch, device) latency table
(measured once, cached under ``prune.latency_table_dir``) and times the final plan against its base: a
measured reduction below ``target - prune.latency_check_tolerance``, or one that falls short of the table's
prediction (it promised more than the device delivers) by more than that, is a BudgetNotMet like an
over-budget plan.

The method sees the search split less ``prune.heldout_images`` held-out images (harness.data.hold_out, the
same images for every method and seed); its final, physically pruned model is scored on them afterwards,
with BN re-estimated on ``prune.heldout_bn_batches`` seeded training batches: ``meta.heldout_top1``.
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path
from typing import Any

from harness.cli import common

#: Batch size of the BN re-estimation before the held-out score (and of its forward passes).
HELDOUT_BATCH = 256


def heldout_top1(model: Any, heldout: Any, train_plain: Any, bn_batches: int, device: Any) -> float:
    """Top-1 (percent) of a copy of ``model`` on ``heldout`` after re-estimating its BN statistics on the first
    ``bn_batches`` batches of ``train_plain`` (batches of 256, shuffled with seed 0; 0 = keep the statistics)."""
    from harness.data import make_loader
    from harness.metrics import topk_accuracy
    from harness.train import recalibrate_bn

    net = copy.deepcopy(model).to(device).eval()
    if bn_batches:
        recalibrate_bn(net, make_loader(train_plain, HELDOUT_BATCH, shuffle=True, seed=0), bn_batches, device)
    return topk_accuracy(net, make_loader(heldout, HELDOUT_BATCH, shuffle=False, seed=0), device, ks=(1,))["top1"]


def _attach_latency_table(spec: dict[str, Any], model: Any, example: Any, cost: Any, device: Any,
                          prune_cfg: dict[str, Any]) -> dict[str, Any]:
    """Load (or measure and cache) the latency table of (arch, device) and let ``cost`` predict latency."""
    import logging

    from harness.prune.latency_table import cached_table

    table, path, made = cached_table(Path(prune_cfg.get("latency_table_dir", "results/latency_tables")),
                                     spec["arch"], model.to(device).eval(), example.to(device), cost, device)
    cost.attach_latency(table)
    logging.getLogger(__name__).info("latency table %s (%s; calibration max relative error %.3f)", path,
                                     "measured now" if made else "cached", table.max_relative_error)
    return {"latency_table": str(path), "latency_table_digest": table.digest,
            "latency_table_max_relative_error": table.max_relative_error}


def _check_measured_latency(base: Any, pruned: Any, shape: tuple[int, ...], device: Any, cost: Any,
                            keep: dict[str, list[int]], budget: Any, check_tolerance: float,
                            lock_dir: Path | None = None) -> tuple[Any, dict]:
    """Time the final plan against its base; reject it like an over-budget plan when the measurement misses
    the target, or falls short of the table's prediction, by more than ``check_tolerance``."""
    from harness.errors import BudgetNotMet
    from harness.metrics import Complexity, complexity
    from harness.prune import Budget, check_budget
    from harness.prune.latency_table import measured_reduction

    predicted = cost.reduction({gid: len(v) for gid, v in keep.items()}, "latency")
    m = measured_reduction(base, pruned, shape, device, lock_dir=lock_dir)
    b, p = complexity(base, shape), complexity(pruned, shape)
    try:
        report = check_budget(Complexity(b.macs, b.params, m["base_ms"]), Complexity(p.macs, p.params, m["pruned_ms"]),
                              Budget("latency", budget.target, tolerance=check_tolerance))
    except BudgetNotMet as exc:
        raise BudgetNotMet(f"measured {exc} ({m['pruned_ms']:.3f} of {m['base_ms']:.3f} ms; the latency table "
                           f"predicted a reduction of {predicted:.4f})") from None
    if m["reduction"] < predicted - check_tolerance:  # faster than promised is no error; slower is
        raise BudgetNotMet(f"measured latency reduction {m['reduction']:.4f} falls short of the latency table's "
                           f"prediction {predicted:.4f} by more than {check_tolerance:g}: the table does not fit "
                           "this device now (re-measure it: delete the table)")
    return report, {"latency_check_tolerance": check_tolerance, "latency_predicted_reduction": predicted, "latency_measured_reduction": m["reduction"],
                    "latency_base_ms": m["base_ms"], "latency_pruned_ms": m["pruned_ms"]}


def main(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    from harness import registry
    from harness.data import build_splits, hold_out
    from harness.data.holdout import DEFAULT_HELDOUT_BN_BATCHES, DEFAULT_HELDOUT_IMAGES
    from harness.io import copy_file
    from harness.metrics import complexity
    from harness.errors import UserError
    from harness.prune import (Budget, CostModel, PruningPlan, apply_plan, channel_l1, check_budget,
                               check_reachable, find_groups)
    from harness.prune.overlap import l1_jaccard
    from harness.prune.unstructured import META_KEY, WeightSparsity, apply_sparsity, sparse_complexity
    from harness.train import seed_everything

    registry.load_plugins(tuple(spec["method_packages"]))
    method = registry.get_method(args.method)
    options = registry.options_from_dict(args.method, spec.get("method_options") or {})
    prune_cfg = spec.get("prune") or {}
    budget = Budget(args.metric, float(args.target), tolerance=float(prune_cfg.get("tolerance", 0.01)))
    min_keep_fraction = float(prune_cfg.get("min_keep_fraction", 0.1))
    heldout_images = int(prune_cfg.get("heldout_images", DEFAULT_HELDOUT_IMAGES))
    heldout_bn_batches = int(prune_cfg.get("heldout_bn_batches", DEFAULT_HELDOUT_BN_BATCHES))
    if not method.supports(budget.metric):
        raise UserError(f"method {args.method!r} cannot meet a {budget.metric} budget "
                        f"(it supports: {', '.join(method.budget_metrics)})")

    device = common.acquire_device()
    splits = build_splits(common.data_config(spec))
    # The method never sees the held-out images: they score its final plan below (a too-large
    # prune.heldout_images is a one-line UserError here, before the method runs).
    method_splits, heldout = hold_out(splits, heldout_images)
    info = splits.info
    model = common.load_base(spec, info, args.base)
    example = common.example_input(info)
    groups = find_groups(model, example, scope=prune_cfg.get("scope", "all"))
    cost = CostModel(model, example, groups)
    latency_meta: dict[str, Any] = {}
    if budget.metric == "latency":
        latency_meta = _attach_latency_table(spec, model, example, cost, device, prune_cfg)
    check_reachable(cost, groups, budget, min_keep_fraction, arch=spec["arch"])

    seed_everything(args.seed)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ctx = registry.PruneContext(
        model=model.to(device), example_input=example.to(device), groups=groups, cost=cost, budget=budget,
        min_keep_fraction=min_keep_fraction, splits=method_splits, device=device, seed=args.seed, options=options,
        workdir=workdir, arch=spec["arch"],
    )
    start = time.time()
    keep = method(ctx)  # runs the method and verifies its keep sets against the budget
    search_wall = time.time() - start
    # An unstructured method keeps every channel and zeroes weights (harness.prune.unstructured): its size is
    # measured with dense MACs and non-zero params.
    sparsity = keep if isinstance(keep, WeightSparsity) else None
    if sparsity is not None:
        keep = {}

    by_id = {g.id: g for g in groups}
    unknown = sorted(set(keep) - set(by_id))
    if unknown:
        raise RuntimeError(f"method {args.method} returned unknown groups {unknown[:3]}")
    full_keep = {g.id: sorted(int(i) for i in keep.get(g.id, range(g.size))) for g in groups}
    # per group: Jaccard of the kept channels with the L1 top-k at the same count (figures' overlap plot)
    overlap = l1_jaccard(full_keep, channel_l1(model.cpu(), example.cpu(), groups))
    pruned = apply_plan(copy.deepcopy(model).cpu(), full_keep, example.cpu())
    shape = (info.in_channels, info.image_size, info.image_size)
    if sparsity is not None:
        size = sparse_complexity(apply_sparsity(pruned, sparsity), shape)
    else:
        size = complexity(pruned, shape)
    if budget.metric == "latency":
        report, measured = _check_measured_latency(
            model.cpu(), pruned, shape, device, cost, full_keep, budget,
            float(prune_cfg.get("latency_check_tolerance", 0.05)),
            lock_dir=Path(prune_cfg.get("latency_table_dir", "results/latency_tables")))
        latency_meta.update(measured)
    else:
        report = check_budget(complexity(model.cpu(), shape), size, budget)
    # the final model (an unstructured plan with its sparsity applied) on images the method did not select on
    heldout_acc = (heldout_top1(pruned, heldout, splits.train_plain, heldout_bn_batches, device)
                   if heldout is not None else None)
    plan = PruningPlan(
        method=args.method, dataset=info.name, arch=spec["arch"], seed=args.seed, budget=budget,
        groups=tuple((g, tuple(full_keep[g.id])) for g in groups),
        achieved=report.achieved_dict(),
        meta={**ctx.meta, "search_wall_s": search_wall, "options": spec.get("method_options") or {},
              "structured": method.structured, "device": str(device),
              "l1_jaccard": overlap, "heldout_top1": heldout_acc, "heldout_images": heldout_images, **latency_meta,
              **({META_KEY: sparsity.to_dict()} if sparsity is not None else {})},
    )
    if args.search_log:
        log_file = workdir / "search_log.csv"
        if not log_file.exists():
            raise RuntimeError(f"method {args.method} wrote no search log in {workdir}")
        copy_file(log_file, args.search_log)
    plan.to_json(args.out)


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--method", required=True)
    p.add_argument("--metric", required=True, choices=["macs", "params", "latency"])
    p.add_argument("--target", required=True, type=float)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--base", required=True, help="base model weights from train_base")
    p.add_argument("--out", required=True, help="plan.json")
    p.add_argument("--workdir", required=True, help="the method's own logs and checkpoints")
    p.add_argument("--search-log", help="copy the method's search_log.csv here (methods that search)")
    common.run_main(main, p)
