"""Stage 3: apply a plan to the base model (physical channel removal) and fine-tune it with the common recipe.

Every method's plan goes through this same code and recipe, so accuracy differences come from the plans.
"""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from harness.cli import common


def main(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    from harness.data import build_splits
    from harness.io import copy_file, write_json
    from harness.metrics import complexity
    from harness.prune import PruningPlan, apply_plan, save_pruned
    from harness.prune.budget import check_written_plan
    from harness.prune.unstructured import apply_sparsity, from_meta, make_permanent, sparse_complexity
    from harness.train import Recipe, fit, seed_everything

    device = common.acquire_device()
    splits = build_splits(common.data_config(spec))
    info = splits.info
    base = common.load_base(spec, info, args.base)
    shape = (info.in_channels, info.image_size, info.image_size)
    base_size = complexity(base, shape)
    plan = PruningPlan.from_json(args.plan)
    model = apply_plan(base, plan, common.example_input(info))
    # An unstructured plan's zeroed weights are held at zero through the fine-tune (torch.nn.utils.prune masks).
    sparsity = from_meta(plan.meta)
    if sparsity is not None:
        model = apply_sparsity(model, sparsity)
    check_written_plan(base_size, (sparse_complexity if sparsity is not None else complexity)(model, shape),
                       plan.budget, plan.meta)

    # A plan may carry its method's own protocol (a method option; the common recipe otherwise).
    recipe = Recipe.from_dict(plan.meta.get("finetune_recipe") or spec["finetune_recipe"])
    seed_everything(args.seed)
    ckpt = Path(args.checkpoint_dir)
    start = time.time()
    model = fit(model, splits.train, recipe, device=device, seed=args.seed, checkpoint_dir=ckpt,
                log_csv=ckpt / "finetune_log.csv", desc=f"finetune {plan.method} {plan.budget.metric}-{plan.budget.target:g}")
    wall = time.time() - start
    copy_file(ckpt / "finetune_log.csv", args.log_csv)
    if sparsity is not None:
        model = make_permanent(model)
    save_pruned(model.cpu().eval(), args.out)
    write_json(args.info, {"finetune_epochs": recipe.epochs, "finetune_wall_s": wall, "device": str(device)})
    shutil.rmtree(ckpt, ignore_errors=True)  # outputs are complete; resumable state is not needed


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True, help="fine-tuned pruned model (whole module)")
    p.add_argument("--info", required=True, help="fine-tune facts (.json) for the run record")
    p.add_argument("--log-csv", required=True)
    p.add_argument("--checkpoint-dir", required=True)
    common.run_main(main, p)
