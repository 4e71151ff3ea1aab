"""Stage 1: train (or load pretrained) the dense base model of one (dataset, arch, seed)."""
from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

from harness.cli import common


def main(args: argparse.Namespace, spec: dict[str, Any]) -> None:
    from harness.data import build_splits, make_loader
    from harness.io import copy_file, write_json, write_text
    from harness.metrics import complexity, topk_accuracy
    from harness.train import Recipe, fit, seed_everything

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
        model = common.build_base_model(spec, info)
        ckpt = Path(args.checkpoint_dir)
        model = fit(model, splits.train, recipe, device=device, seed=args.seed, checkpoint_dir=ckpt,
                    log_csv=ckpt / "train_log.csv", desc=f"train {spec['arch']} seed{args.seed}")
        copy_file(ckpt / "train_log.csv", args.log_csv)
        epochs = recipe.epochs
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
    })
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
    common.run_main(main, p)
