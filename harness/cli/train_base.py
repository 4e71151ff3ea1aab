"""Stage 1: train (or load pretrained) the dense base model of one (dataset, arch, seed).

A planted arch (``planted-resnetN``, harness/models/planted.py) trains its inner ResNet with the same recipe,
then widens it with decoy channels (function unchanged, checked) and writes the ground truth beside the
model (``--ground-truth``).
"""
from __future__ import annotations

import argparse
import itertools
import shutil
import time
from pathlib import Path
from typing import Any

from harness.cli import common

#: Batches of the training images (eval transforms) that set the decoys' BN statistics.
CALIBRATION_BATCHES = 8
#: Largest |logit difference| between the trained and the planted network allowed on a check batch.
MAX_LOGIT_DIFF = 1e-3


def plant_trained(small: Any, spec: dict[str, Any], splits: Any, seed: int, *, batch_size: int = 128,
                  calibration_batches: int = CALIBRATION_BATCHES) -> tuple[Any, dict[str, list[int]], float]:
    """Widen the trained inner network of a planted arch; returns (planted model, ground truth, max logit diff).

    The decoys' BN statistics come from ``calibration_batches`` seeded batches of ``splits.train_plain``; the
    function is checked on the first ``batch_size`` images of the search split (a part of the training set):
    a difference above :data:`MAX_LOGIT_DIFF` is a UserError.
    """
    import torch

    from harness.data import make_loader
    from harness.errors import UserError
    from harness.models import planted_options
    from harness.models.planted import PlantOptions, plant

    opts = planted_options(spec["arch"], dict(spec.get("arch_options") or {}))
    info = splits.info
    small = small.cpu().eval()
    loader = make_loader(splits.train_plain, batch_size, shuffle=True, seed=seed)
    calibration = (x for x, _ in itertools.islice(loader, calibration_batches))
    wide, truth = plant(small, info.num_classes, info.in_channels,
                        PlantOptions(opts["decoy_ratio"], opts["useful_scale"], opts["decoy_norm"], seed=seed),
                        calibration, width=opts["width"])
    x, _ = next(iter(make_loader(splits.search, batch_size, shuffle=False, seed=0)))
    with torch.no_grad():
        diff = float((wide(x) - small(x)).abs().max())
    if not diff < MAX_LOGIT_DIFF:
        raise UserError(f"planting changed the function of {spec['arch']}: max |logit difference| {diff:.3g} "
                        f">= {MAX_LOGIT_DIFF:g} on {len(x)} search images")
    return wide, truth, diff


def ground_truth_record(model: Any, truth: dict[str, list[int]], spec: dict[str, Any], info: Any, seed: int,
                        max_logit_diff: float) -> dict[str, Any]:
    """ground_truth.json: the useful channels per group, the useful-only reductions, the planting options."""
    from harness.models import planted_options
    from harness.models.planted import GROUND_TRUTH_FORMAT, inner_arch, useful_only_reduction
    from harness.prune import CostModel, find_groups

    example = common.example_input(info)
    groups = find_groups(model, example, scope="all")
    cost = CostModel(model, example, groups)
    return {
        "format": GROUND_TRUTH_FORMAT, "dataset": info.name, "arch": spec["arch"],
        "inner_arch": inner_arch(spec["arch"]), "seed": seed,
        "options": {**planted_options(spec["arch"], dict(spec.get("arch_options") or {})), "seed": seed},
        "useful_only": {m + "_reduction": useful_only_reduction(cost, truth, m) for m in ("macs", "params")},
        "max_logit_diff": max_logit_diff,
        "group_sizes": {g.id: g.size for g in groups},
        "useful": {g.id: truth[g.id] for g in groups},
    }


def main(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    from harness.data import build_splits, make_loader
    from harness.errors import UserError
    from harness.io import copy_file, write_json, write_text
    from harness.metrics import complexity, topk_accuracy
    from harness.models import build_model, planted_options
    from harness.models.planted import inner_arch, is_planted
    from harness.train import Recipe, fit, seed_everything

    planted = is_planted(spec["arch"])
    if planted != bool(args.ground_truth):
        raise UserError(f"--ground-truth is {'required' if planted else 'only'} for planted archs "
                        f"(this is {spec['arch']})")
    device = common.acquire_device()
    splits = build_splits(common.data_config(spec))
    info = splits.info
    seed_everything(args.seed)
    start = time.time()
    if spec["train_recipe"] == "pretrained":
        model = common.build_base_model(spec, info, pretrained=True)
        epochs = 0
    else:
        recipe = Recipe.from_dict(spec["train_recipe"])
        if planted:  # the inner network is trained; the decoys are planted below
            width = planted_options(spec["arch"], dict(spec.get("arch_options") or {}))["width"]
            model = build_model(inner_arch(spec["arch"]), info, width=width)
        else:
            model = common.build_base_model(spec, info)
        ckpt = Path(args.checkpoint_dir)
        model = fit(model, splits.train, recipe, device=device, seed=args.seed, checkpoint_dir=ckpt,
                    log_csv=ckpt / "train_log.csv", desc=f"train {spec['arch']} seed{args.seed}")
        copy_file(ckpt / "train_log.csv", args.log_csv)
        epochs = recipe.epochs
    extra: dict[str, Any] = {}
    if planted:
        model, truth, diff = plant_trained(model, spec, splits, args.seed)
        gt = ground_truth_record(model, truth, spec, info, args.seed, diff)
        extra = {f"useful_only_{k}": v for k, v in gt["useful_only"].items()}
        extra["plant_max_logit_diff"] = diff
    train_wall = time.time() - start

    batch = int(spec["evaluate"].get("batch_size", 256))
    model = model.to(device).eval()
    test = topk_accuracy(model, make_loader(splits.test, batch, shuffle=False, seed=0), device)
    search = topk_accuracy(model, make_loader(splits.search, batch, shuffle=False, seed=0), device)
    size = complexity(model.cpu(), (info.in_channels, info.image_size, info.image_size))
    common.save_base(model.cpu(), spec, args.out)
    if spec["train_recipe"] == "pretrained":
        write_text(args.log_csv, "epoch\n")
    write_json(args.metrics, {
        "dataset": info.name, "arch": spec["arch"], "seed": args.seed, "epochs": epochs,
        "top1": test["top1"], "top5": test["top5"], "search_top1": search["top1"],
        "macs": size.macs, "params": size.params, "train_wall_s": train_wall, "device": str(device),
        "train_images": len(splits.train), "search_images": len(splits.search), "test_images": len(splits.test),
        **extra,
    })
    if planted:
        write_json(args.ground_truth, gt)
    # Only once every output is written: a job killed before this point resumes from the last epoch.
    if spec["train_recipe"] != "pretrained":
        shutil.rmtree(args.checkpoint_dir, ignore_errors=True)


if __name__ == "__main__":
    p = common.parser(__doc__)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, help="model weights (.pt)")
    p.add_argument("--metrics", required=True, help="base metrics (.json)")
    p.add_argument("--log-csv", required=True, help="per-epoch training log (.csv)")
    p.add_argument("--checkpoint-dir", required=True, help="resumable state, outside the rule's outputs")
    p.add_argument("--ground-truth", default=None,
                   help="planted archs only: the useful channels per group (ground_truth.json)")
    common.run_main(main, p)
