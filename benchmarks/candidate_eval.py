"""What one search candidate costs: masked vs physically pruned scoring (issue 13).

For a CIFAR-style ResNet (Fashion-MNIST-shaped input, 10 classes, random weights: the time does not depend on
the values) and a random plan at each MACs target, times in one process, one torch thread, median of
``--repeats``:

* ``masked``: ``SearchEvaluator(mode="masked").evaluate`` (the dense network with pruned channels zeroed);
* ``pruned``: ``SearchEvaluator(mode="pruned").evaluate`` (a physically pruned copy per candidate);
* ``reference``: the same work done by hand: deep copy + ``apply_plan`` (Torch-Pruning surgery) + BN
  re-estimation on the same batches + the pruned network's forward on the same images;
* ``dense``: the unpruned network's forward on the same images.

The target of issue 13: ``pruned / reference <= 1.25``, and ``pruned < dense`` at every budget above 30 %.

    python benchmarks/candidate_eval.py                      # ResNet-20 and -56, MACs -30 % and -70 %
    python benchmarks/candidate_eval.py --depths 20 --targets 0.5 --images 500
"""
from __future__ import annotations

import argparse
import copy
import random
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def random_plan(groups, cost, target: float, seed: int) -> dict[str, list[int]]:
    """Random channels at one keep ratio per group, repaired to the MACs target by the harness's wall."""
    import torch

    from harness.search import complete, fair_ratio

    rng = random.Random(seed)
    r = fair_ratio(cost, groups, {}, 0, "macs", target, 0.1)
    keep = {g.id: sorted(rng.sample(range(g.size), max(1, round(r * g.size)))) for g in groups}
    gen = torch.Generator().manual_seed(seed)
    scores = {g.id: torch.rand(g.size, generator=gen) for g in groups}
    full, _, _ = complete(cost, groups, keep, scores, "macs", target, 0.1)
    return {gid: sorted(int(i) for i in idx) for gid, idx in full.items()}


def measure(depth: int, target: float, *, images: int, bn_batches: int, bn_batch: int, repeats: int) -> dict:
    import torch
    from torch.utils.data import TensorDataset

    from harness.models.cifar_resnet import CifarResNet
    from harness.prune import CostModel, apply_plan, find_groups
    from harness.search import SearchEvaluator
    from harness.train.bn import recalibrate_bn

    torch.manual_seed(0)
    model = CifarResNet(depth, 10, 1).eval()
    x = torch.zeros(1, 1, 28, 28)
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    g = torch.Generator().manual_seed(1)
    search = TensorDataset(torch.randn(images, 1, 28, 28, generator=g), torch.randint(0, 10, (images,), generator=g))
    train = TensorDataset(torch.randn(bn_batches * bn_batch, 1, 28, 28, generator=g),
                          torch.randint(0, 10, (bn_batches * bn_batch,), generator=g))
    splits = SimpleNamespace(search=search, train_plain=train, test=None)
    kw = dict(bn_batches=bn_batches, batch_size=bn_batch, eval_batch_size=256, example_input=x, groups=groups)
    masked = SearchEvaluator(model, splits, "cpu", **kw)
    pruned = SearchEvaluator(model, splits, "cpu", mode="pruned", **kw)
    keep = random_plan(groups, cost, target, seed=0)
    achieved = round(cost.reduction({gid: len(idx) for gid, idx in keep.items()}, "macs"), 4)

    def reference() -> None:
        net = apply_plan(copy.deepcopy(masked.net), keep, x)
        recalibrate_bn(net, masked.bn_data, None, "cpu")
        with torch.inference_mode():
            for xb, _ in masked.search_batches:
                net(xb)

    def dense() -> None:
        with torch.inference_mode():
            for xb, _ in masked.search_batches:
                masked.net(xb)

    def timed(fn) -> float:
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    runs = {"masked": lambda: masked.evaluate(keep), "pruned": lambda: pruned.evaluate(keep),
            "reference": reference, "dense": dense}
    for fn in runs.values():  # warm-up: allocator, oneDNN primitives
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved, so a busy moment hits every variant alike
        for k, fn in runs.items():
            times[k].append(timed(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    assert masked.evaluate(keep) == pruned.evaluate(keep)
    return {"arch": f"resnet{depth}", "target": target, "achieved": achieved, **{f"{k}_s": round(v, 3)
            for k, v in med.items()}, "pruned/reference": round(med["pruned"] / med["reference"], 3),
            "pruned/dense": round(med["pruned"] / med["dense"], 3),
            "masked/pruned": round(med["masked"] / med["pruned"], 2)}


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    p.add_argument("--targets", type=float, nargs="+", default=[0.3, 0.7])
    p.add_argument("--images", type=int, default=2000, help="search images scored per candidate")
    p.add_argument("--bn-batches", type=int, default=2)
    p.add_argument("--bn-batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.images} images, "
          f"{args.bn_batches} BN batches of {args.bn_batch}, median of {args.repeats}", flush=True)
    for depth in args.depths:
        for target in args.targets:
            print(measure(depth, target, images=args.images, bn_batches=args.bn_batches, bn_batch=args.bn_batch,
                          repeats=args.repeats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
