"""Baselines (l1-uniform, l1-global, random) and the method registry.

Every method's plan is applied physically and measured: the measured reduction must lie in
[target, target + a few points]. Small local models keep this independent of harness.models.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import pytest
import torch
from torch import nn

from harness import registry
from harness.errors import BudgetNotMet, UserError
from harness.metrics import complexity
from tiny_models import CifarResNet, MobileNetV2Like
from harness.prune import Budget, CostModel, apply_plan, channel_l1, find_groups

registry.load_plugins()
SLACK = 0.05  # "a few points": the uniform ratio moves in steps of 1/size channels per group


@lru_cache(maxsize=None)
def setup(name: str):
    """(model, example input, groups, cost model), built once per model type (never mutated by the tests)."""
    torch.manual_seed(0)
    model = (CifarResNet(blocks=(3, 3, 3)) if name == "resnet" else MobileNetV2Like(widths=(32, 48), head=128)).eval()
    x = torch.randn(1, 3, 32, 32)
    groups = find_groups(model, x)
    return model, x, groups, CostModel(model, x, groups)


def make_ctx(name: str, method: str, metric: str, target: float, seed: int = 0, min_keep_fraction: float = 0.1,
             **options) -> registry.PruneContext:
    model, x, groups, cost = setup(name)
    return registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget(metric, target),
        min_keep_fraction=min_keep_fraction, splits=None, device=torch.device("cpu"), seed=seed,
        options=registry.options_from_dict(method, options), workdir=Path("/nonexistent"), arch=name)


def measured_reduction(name: str, keep: dict, metric: str) -> float:
    model, x, _, _ = setup(name)
    shape = tuple(x.shape[1:])
    base = complexity(model, shape)
    pruned = apply_plan(copy.deepcopy(model), keep, x)
    with torch.no_grad():
        assert pruned(x).shape == (1, 10)
    after = complexity(pruned, shape)
    return 1 - (after.macs / base.macs if metric == "macs" else after.params / base.params)


# ----------------------------------------------------------------------------------------------- registry
def test_registry_lists_the_baselines():
    assert {"l1-uniform", "l1-global", "random"} <= set(registry.method_names())
    assert registry.get_method("l1-global").structured
    loaded = registry.load_plugins(("baselines",))  # idempotent: re-loading registers nothing twice
    assert {"baselines.magnitude", "baselines.random_pruning"} <= set(loaded)
    assert registry.load_plugins(("no_such_plugin_package",)) == []
    with pytest.raises(UserError) as exc:
        registry.get_method("l2-magic")
    assert "l1-uniform" in str(exc.value) and "random" in str(exc.value)


def test_options_from_dict():
    opts = registry.options_from_dict("l1-global", {"max_ratio": 0.5, "normalizer": "max"})
    assert (opts.scope, opts.max_ratio, opts.normalizer) == ("all", 0.5, "max")
    with pytest.raises(UserError) as exc:
        registry.options_from_dict("l1-global", {"max_raito": 0.5})
    assert "max_raito" in str(exc.value) and "max_ratio" in str(exc.value)
    for bad in ({"scope": "stage"}, {"normalizer": "l2"}, {"max_ratio": 1.5}):
        with pytest.raises(UserError):
            registry.options_from_dict("l1-global", bad)
    with pytest.raises(UserError):
        registry.options_from_dict("random", {"seed": 3})


def test_method_results_are_verified():
    @dataclass(frozen=True)
    class NoOptions:
        pass

    @registry.register_method("test-prune-nothing", options=NoOptions)
    def nothing(ctx):
        return {}

    ctx = make_ctx("resnet", "l1-uniform", "macs", 0.5)
    with pytest.raises(BudgetNotMet):
        registry.get_method("test-prune-nothing")(ctx)
    with pytest.raises(ValueError):
        ctx.verify({ctx.groups[0].id: [0]})  # below min_keep (2 of 16)
    with pytest.raises(ValueError):
        ctx.verify({"nope": [0, 1]})


# ----------------------------------------------------------------------------------------------- budgets
@pytest.mark.parametrize("method", ["l1-uniform", "l1-global", "random"])
@pytest.mark.parametrize("metric", ["macs", "params"])
def test_methods_meet_the_budget_when_measured(method, metric):
    for target in (0.3, 0.5, 0.7):
        ctx = make_ctx("resnet", method, metric, target)
        keep = registry.get_method(method)(ctx)
        achieved = measured_reduction("resnet", keep, metric)
        assert target <= achieved <= target + SLACK, (method, metric, target, achieved)
        for g in ctx.groups:
            assert len(keep.get(g.id, range(g.size))) >= ctx.min_keep(g)


@pytest.mark.parametrize("method", ["l1-uniform", "l1-global", "random"])
def test_methods_on_depthwise_net(method):
    ctx = make_ctx("mbv2", method, "macs", 0.5)
    keep = registry.get_method(method)(ctx)
    assert 0.5 <= measured_reduction("mbv2", keep, "macs") <= 0.5 + SLACK


# ----------------------------------------------------------------------------------------------- criteria
def test_l1_uniform_keeps_the_highest_l1_channels_with_one_ratio():
    ctx = make_ctx("resnet", "l1-uniform", "macs", 0.5)
    keep = registry.get_method("l1-uniform")(ctx)
    l1 = channel_l1(ctx.model, ctx.example_input, ctx.groups)
    by_size: dict[int, set[int]] = {}
    for g in ctx.groups:
        kept = keep.get(g.id, list(range(g.size)))
        by_size.setdefault(g.size, set()).add(len(kept))
        dropped = sorted(set(range(g.size)) - set(kept))
        if dropped:
            assert l1[g.id][kept].min() >= l1[g.id][dropped].max()
    assert all(len(counts) == 1 for counts in by_size.values())  # one ratio: same count for same size
    assert set(keep) == {g.id for g in ctx.groups}  # scope "all" prunes residual streams too


def test_l1_uniform_internal_scope_leaves_residual_streams_whole():
    ctx = make_ctx("resnet", "l1-uniform", "macs", 0.4, scope="internal")
    keep = registry.get_method("l1-uniform")(ctx)
    residual = {g.id for g in ctx.groups if g.residual}
    assert residual and not (set(keep) & residual) and keep
    assert measured_reduction("resnet", keep, "macs") >= 0.4
    with pytest.raises(UserError, match="resnet"):  # block-internal channels alone cannot remove 95 %
        registry.get_method("l1-uniform")(make_ctx("resnet", "l1-uniform", "macs", 0.95, scope="internal"))


def test_l1_global_respects_max_ratio_and_ranks_globally():
    ctx = make_ctx("resnet", "l1-global", "macs", 0.5, max_ratio=0.6)
    keep = registry.get_method("l1-global")(ctx)
    for g in ctx.groups:
        assert len(keep.get(g.id, range(g.size))) >= g.size - int(0.6 * g.size)
    # the cut is global: every dropped channel scores below every kept, prunable one (same normalised scale)
    l1 = channel_l1(ctx.model, ctx.example_input, ctx.groups)
    dropped, kept_free = [], []
    for g in ctx.groups:
        score = l1[g.id] / l1[g.id].mean()
        kept = keep.get(g.id, list(range(g.size)))
        floor = max(ctx.min_keep(g), g.size - int(0.6 * g.size))
        dropped += score[sorted(set(range(g.size)) - set(kept))].tolist()
        if len(kept) > floor:  # a group at its cap keeps channels regardless of score
            kept_free += score[kept].tolist()
    assert dropped and max(dropped) <= min(kept_free)
    with pytest.raises(UserError, match="max_ratio"):
        registry.get_method("l1-global")(make_ctx("resnet", "l1-global", "macs", 0.7, max_ratio=0.3))


def test_random_is_seeded_and_matches_uniform_counts():
    run = registry.get_method("random")
    a = run(make_ctx("resnet", "random", "params", 0.5, seed=1))
    b = run(make_ctx("resnet", "random", "params", 0.5, seed=1))
    c = run(make_ctx("resnet", "random", "params", 0.5, seed=2))
    assert a == b and a != c
    uniform = registry.get_method("l1-uniform")(make_ctx("resnet", "l1-uniform", "params", 0.5))
    assert {k: len(v) for k, v in a.items()} == {k: len(v) for k, v in uniform.items()}


def test_learner_config_copies_same_named_options_and_overrides() -> None:
    from dataclasses import dataclass

    from harness.registry import learner_config

    @dataclass(frozen=True)
    class Learner:
        lr: float = 1e-3
        epochs: int = 4
        seed: int = 0

    @dataclass(frozen=True)
    class Options:
        lr: float = 5e-2
        episodes: int = 10  # not the learner's: left out

    cfg = learner_config(Learner, Options(), seed=7)
    assert cfg == Learner(lr=5e-2, epochs=4, seed=7)
