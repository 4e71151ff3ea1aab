"""The paper's "beyond magnitude" claim as a test: graph-RL keeps useful low-norm channels that L1 drops.

A small CNN is trained on the synthetic task (8 channels in its first layer). It is then widened to 16
channels without changing its function: the 8 trained channels are scaled down 5x (their BN statistics
scaled to match, so their normalised output is unchanged) and 8 decoy channels with large random filters
are added whose consumer kernels are zero, so they never reach the output. Every L1 criterion ranks the
decoys first; at a budget that keeps half of the first layer, L1 pruning keeps the useless channels.
The search must find the useful ones: a clearly higher search-split accuracy than both L1 baselines, a plan
that keeps more useful channels than decoys, and a policy whose keep-probability is higher on them.
"""
from __future__ import annotations

import copy
import csv
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from harness import registry
from harness.data import DataConfig, build_splits, make_loader
from harness.prune import Budget, CostModel, find_groups
from harness.search import SearchEvaluator

registry.load_plugins()

SIZE, CLASSES = 12, 4
SIGNAL, DECOYS = 8, 8


class TwoConvNet(nn.Module):
    def __init__(self, width1: int, width2: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width1)
        self.conv2 = nn.Conv2d(width1, width2, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width2, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.fc(self.pool(x).flatten(1))


@lru_cache(maxsize=None)
def _splits():
    return build_splits(DataConfig(name="synthetic", synthetic_train=1200, synthetic_test=100, search_size=300,
                                   synthetic_classes=CLASSES, synthetic_image_size=SIZE, synthetic_channels=3))


def _accuracy(model: nn.Module, ds) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in make_loader(ds, 256, shuffle=False, seed=0):
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / total


@lru_cache(maxsize=None)
def _decoy_model() -> tuple[TwoConvNet, tuple[int, ...]]:
    """The widened network and the positions of its useful first-layer channels."""
    torch.manual_seed(0)
    splits = _splits()
    small = TwoConvNet(SIGNAL)
    opt = torch.optim.SGD(small.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    small.train()
    for _ in range(12):
        for x, y in make_loader(splits.train, 64, shuffle=True, seed=0):
            opt.zero_grad()
            nn.functional.cross_entropy(small(x), y).backward()
            opt.step()
    small.eval()

    gen = torch.Generator().manual_seed(1)
    useful = torch.randperm(SIGNAL + DECOYS, generator=gen)[:SIGNAL].sort().values
    decoy = torch.tensor(sorted(set(range(SIGNAL + DECOYS)) - set(useful.tolist())))
    wide = TwoConvNet(SIGNAL + DECOYS)
    scale = 0.2
    with torch.no_grad():
        w1 = small.conv1.weight
        wide.conv1.weight[useful] = scale * w1
        # decoys: random filters with 5x the trained filters' mean L1 norm (25x the scaled useful ones)
        rnd = torch.randn(DECOYS, *w1.shape[1:], generator=gen)
        target = 5.0 * w1.abs().flatten(1).sum(1).mean()
        wide.conv1.weight[decoy] = rnd * (target / rnd.abs().flatten(1).sum(1, keepdim=True)).view(-1, 1, 1, 1)
        for name in ("weight", "bias"):
            getattr(wide.bn1, name)[useful] = getattr(small.bn1, name)
        wide.bn1.running_mean[useful] = scale * small.bn1.running_mean
        wide.bn1.running_var[useful] = scale ** 2 * small.bn1.running_var
        wide.conv2.weight.zero_()
        wide.conv2.weight[:, useful] = small.conv2.weight  # decoys' consumer kernels stay zero
        wide.bn2.load_state_dict(small.bn2.state_dict())
        wide.fc.load_state_dict(small.fc.state_dict())
    # decoy BN statistics: estimate them on training data (they never reach the output anyway)
    wide.train()
    with torch.no_grad():
        wide.bn1.momentum = None  # cumulative average
        for i, (x, _) in enumerate(make_loader(splits.train_plain, 128, shuffle=False, seed=0)):
            h = wide.conv1(x)
            wide.bn1(h)
            if i == 4:
                break
        wide.bn1.momentum = 0.1
        for name in ("running_mean", "running_var"):
            getattr(wide.bn1, name)[useful] = getattr(small.bn1, name) * (scale if name == "running_mean" else scale ** 2)
    wide.eval()
    return wide, tuple(useful.tolist())


def _context(method: str, workdir: Path, options: dict | None = None) -> registry.PruneContext:
    model, _ = _decoy_model()
    model = copy.deepcopy(model).eval()
    x = torch.zeros(1, 3, SIZE, SIZE)
    # Only the first layer's channels are prunable (conv2's filters are ignored), so the test measures one
    # choice, which of its 16 channels to keep, without the noise of a second random group.
    groups = find_groups(model, x, ignored_layers=[model.conv2])
    return registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=CostModel(model, x, groups),
        budget=Budget("macs", 0.45), min_keep_fraction=0.1, splits=_splits(), device=torch.device("cpu"), seed=0,
        options=registry.options_from_dict(method, options or {}), workdir=workdir, arch="two-conv")


def _conv1_group(ctx: registry.PruneContext) -> str:
    (group,) = ctx.groups
    return group.id


def test_the_construction_hides_the_signal_from_l1() -> None:
    """Preconditions: widening kept the function, and every useful filter has a smaller L1 than every decoy."""
    model, useful = _decoy_model()
    splits = _splits()
    assert _accuracy(model, splits.search) > 60.0  # trained well above chance (25 %)
    l1 = model.conv1.weight.abs().flatten(1).sum(1)
    decoy = [i for i in range(SIGNAL + DECOYS) if i not in useful]
    assert l1[list(useful)].max() < l1[decoy].min()


def test_graph_rl_keeps_the_useful_low_norm_channels(tmp_path: Path) -> None:
    model, useful = _decoy_model()
    splits = _splits()
    baselines = {}
    for name in ("l1-uniform", "l1-global"):
        ctx = _context(name, tmp_path / name)
        keep = registry.get_method(name)(ctx)
        ev = SearchEvaluator(ctx.model, splits, "cpu", bn_batches=2, batch_size=256, example_input=ctx.example_input,
                             groups=ctx.groups)
        baselines[name] = ev.evaluate(keep)
        kept = set(keep[_conv1_group(ctx)])
        assert len(kept & set(useful)) <= len(kept) // 2, f"{name} should keep mostly decoys: {sorted(kept)}"

    # The spec's reward and PPO settings, a narrower encoder, and lr 3e-3 instead of 3e-4 so that 96
    # episodes suffice (the spec's rate assumes 1,000+). The L1 plan is not a candidate here: the plan must
    # be one the agent found.
    options = {"episodes": 96, "update_every": 8, "ppo_epochs": 4, "layers": 2, "heads": 2, "head_dim": 16,
               "lr": 3e-3, "bn_batches": 2, "eval_batch_size": 256, "opening_plan_is_candidate": False}
    ctx = _context("graph-rl", tmp_path / "graph-rl", options)
    keep = registry.get_method("graph-rl")(ctx)  # verified against the budget
    ev = SearchEvaluator(ctx.model, splits, "cpu", bn_batches=2, batch_size=256, example_input=ctx.example_input,
                         groups=ctx.groups)
    acc = ev.evaluate(keep)
    margin = acc - max(baselines.values())
    assert margin >= 10.0, f"graph-rl {acc:.1f} % vs L1 {baselines}"

    kept = set(keep[_conv1_group(ctx)])
    assert len(kept & set(useful)) > len(kept - set(useful)), f"kept {sorted(kept)}, useful {useful}"

    # It learned, rather than stumbling on a good mask: the last episodes beat the first ones clearly.
    with open(tmp_path / "graph-rl" / "search_log.csv") as fh:
        accs = [float(r["accuracy"]) for r in csv.DictReader(fh)]
    first, last = sum(accs[:16]) / 16, sum(accs[-16:]) / 16
    assert last >= first + 8.0, f"mean search accuracy {first:.1f} % (first 16 episodes) -> {last:.1f} % (last 16)"
