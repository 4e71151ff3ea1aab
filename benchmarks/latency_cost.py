"""What the latency rows cost (issue 14 target: at most 10 s per model on the CPU).

Times ``harness.cli.evaluate.latency_columns`` (batch 1 and the large batch, warm-up and repeats as the
config's defaults, for a pruned model and its base, i.e. two models) on untrained models of the quick and
paper presets' architectures, one torch thread.

    python benchmarks/latency_cost.py
"""
from __future__ import annotations

import copy
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CASES = (("resnet20", 1, 28), ("vgg16", 1, 28), ("resnet56", 3, 32))
#: the defaults of config/schema.yaml's evaluate section
OPTS = {"latency_batch_size": 1, "latency_large_batch": 64, "latency_warmup": 5, "latency_repeats": 20}


def main() -> int:
    from harness.cli.evaluate import latency_columns
    from harness.models import build_model
    from harness.prune import apply_plan, find_groups

    torch.set_num_threads(1)
    print("| model | input | seconds for both models (pruned at half the channels of every group, and its base) "
          "| batch-1 median ms, pruned / base | batch-64 median ms, pruned / base |")
    print("|---|---|---|---|---|")
    for arch, channels, size in CASES:
        info = SimpleNamespace(name="bench", num_classes=10, in_channels=channels, image_size=size)
        base = build_model(arch, info).eval()
        x = torch.zeros(1, channels, size, size)
        keep = {g.id: list(range(max(1, g.size // 2))) for g in find_groups(base, x)}
        pruned = apply_plan(copy.deepcopy(base), keep, x)
        t0 = time.perf_counter()
        cols = latency_columns(pruned, base, (channels, size, size), torch.device("cpu"), OPTS)
        wall = time.perf_counter() - t0
        print(f"| {arch} | {channels}x{size}x{size} | {wall:.2f} | {cols['latency_ms']:.2f} / "
              f"{cols['base_latency_ms']:.2f} | {cols['latency_large_ms']:.1f} / {cols['base_latency_large_ms']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
