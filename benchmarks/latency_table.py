"""How well a latency table predicts a pruned model's measured latency, and what it costs to build.

    .venv/bin/python benchmarks/latency_table.py [--arch resnet20] [--size 32] [--plans 8] [--threads 1]

Builds the (arch, CPU) latency table with the prune stage's settings (harness.prune.latency_table), then
draws ``--plans`` random plans (per-group keep fractions uniform in [0.2, 1], first-k channels; latency does
not depend on the weights), and compares each plan's predicted latency reduction with the measured one
(the prune stage's own interleaved measurement). Prints the build time, the calibration fit and the
per-plan errors; the prune stage rejects a plan whose measurement falls short of the prediction by more
than ``prune.latency_check_tolerance`` (0.05).
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from types import SimpleNamespace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--plans", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from harness.models import build_model
    from harness.prune import CostModel, apply_plan, find_groups
    from harness.prune.latency_table import LatencyTable, TableSettings, measured_reduction

    torch.manual_seed(0)
    info = SimpleNamespace(name="bench", num_classes=args.classes, in_channels=args.channels, image_size=args.size)
    model = build_model(args.arch, info).eval()
    x = torch.zeros(1, args.channels, args.size, args.size)
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    t = time.perf_counter()
    table = LatencyTable.measure(model, x, cost, "cpu", TableSettings())
    build = time.perf_counter() - t
    cost.attach_latency(table)
    grids = table.data["grids"]
    print(f"{args.arch} @ {args.size}x{args.size}, {len(groups)} groups, {len(table.data['layers'])} timed layers, "
          f"{len(grids)} signatures, {sum(len(g['in']) * len(g['out']) for g in grids)} grid entries, "
          f"threads={torch.get_num_threads()}")
    print(f"table built in {build:.1f} s; base predicted {cost.base.latency_ms:.2f} ms; calibration a={table.a:.3f} "
          f"b={table.b:.3f} ms, max relative error {table.max_relative_error:.3f}")
    rng = np.random.default_rng(args.seed)
    errors = []
    for i in range(args.plans):
        keep = {g.id: list(range(max(1, int(rng.uniform(0.2, 1.0) * g.size)))) for g in groups}
        predicted = cost.reduction({k: len(v) for k, v in keep.items()}, "latency")
        macs = cost.reduction({k: len(v) for k, v in keep.items()}, "macs")
        m = measured_reduction(model, apply_plan(copy.deepcopy(model), keep, x), tuple(x.shape[1:]), "cpu")
        errors.append(m["reduction"] - predicted)
        print(f"  plan {i}: MACs -{100 * macs:4.1f} %  latency predicted -{100 * predicted:4.1f} %  measured "
              f"-{100 * m['reduction']:4.1f} % ({m['pruned_ms']:.2f} / {m['base_ms']:.2f} ms)  "
              f"measured - predicted {100 * errors[-1]:+5.1f} points")
    worst = min(errors)
    print(f"measured - predicted: mean {100 * float(np.mean(errors)):+.1f}, worst shortfall {100 * worst:+.1f} points "
          f"(the prune stage rejects a shortfall beyond 5 points)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
