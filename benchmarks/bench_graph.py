"""Cost of building the graph-RL observation for ImageNet ResNet-50 (the scale the spec's hierarchy targets).

    .venv/bin/python benchmarks/bench_graph.py [--arch torchvision.resnet50] [--size 224] [--topk 8]

Times, on one CPU thread: the Torch-Pruning dependency graph, ``find_groups``, ``CostModel`` and
``build_graph_observation``; then one forward pass of the default policy (3 GATv2 layers, 4 heads x 64) on
that graph. Prints each step, the total and the process's peak RSS. Targets: graph < 10 s, policy forward
< 1 s, peak RSS < 4 GiB. Random init (weights do not change the cost).
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from types import SimpleNamespace


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="torchvision.resnet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--topk", type=int, default=8)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from harness.models import build_model
    from harness.prune import CostModel, build_graph, find_groups
    from method.graph import build_graph_observation

    torch.manual_seed(0)
    model = build_model(args.arch, SimpleNamespace(num_classes=args.classes, in_channels=3)).eval()
    x = torch.randn(1, 3, args.size, args.size)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # ru_maxrss is KiB on Linux

    times: dict[str, float] = {}
    t0 = time.perf_counter()
    graph = build_graph(model, x)
    times["dependency graph"] = time.perf_counter() - t0
    t = time.perf_counter()
    groups = find_groups(model, x, graph=graph)
    times["find_groups"] = time.perf_counter() - t
    t = time.perf_counter()
    cost = CostModel(model, x, groups, graph=graph)
    times["CostModel"] = time.perf_counter() - t
    t = time.perf_counter()
    pg = build_graph_observation(model, x, groups, cost, topk_channel_edges=args.topk, budget_target=0.5,
                                 metric="macs", graph=graph)
    times["build_graph_observation"] = time.perf_counter() - t
    total = time.perf_counter() - t0

    from method.graph import EDGE_FEATURES, NODE_FEATURES
    from method.policy import GraphPolicy

    policy = GraphPolicy(NODE_FEATURES, EDGE_FEATURES).eval()
    forwards = []
    with torch.no_grad():
        for _ in range(4):  # the first call pays one-off allocations; report the median of the rest
            t = time.perf_counter()
            policy(pg.data)
            forwards.append(time.perf_counter() - t)
    forward = sorted(forwards[1:])[1]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    d = pg.data
    print(f"{args.arch} @ {args.size}x{args.size}, topk={args.topk}, threads={torch.get_num_threads()}")
    print(f"groups={len(groups)} channels={pg.num_channels} nodes={d.num_nodes} edges={d.edge_index.shape[1]} "
          f"x={tuple(d.x.shape)} edge_attr={tuple(d.edge_attr.shape)}")
    for name, s in times.items():
        print(f"  {name:<24s} {s:7.2f} s")
    print(f"  {'total':<24s} {total:7.2f} s   (target < 10 s)")
    print(f"policy forward (median of 3 after a warm-up) {forward:.2f} s   (target < 1 s)")
    print(f"peak RSS {peak:.0f} MiB (model built: {rss_before:.0f} MiB; target < 4096 MiB)")
    ok = total < 10.0 and forward < 1.0 and peak < 4096
    print("OK" if ok else "OVER TARGET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
