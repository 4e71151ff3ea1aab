"""harness.search: masked candidate scoring (vs physical pruning), the budget wall and the final projection."""
from __future__ import annotations

import copy
import random
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import TensorDataset

from harness.data import make_loader
from harness.errors import UserError
from harness.metrics import topk_accuracy
from harness.prune import CostModel, apply_plan, find_groups, min_keep
from harness.search import SearchEvaluator, max_keep_allowed, project
from harness.train.bn import recalibrate_bn
from tiny_models import CifarResNet, MobileNetV2Like, VGGLike, randomize_bn

MODELS = {
    "resnet": lambda: CifarResNet(blocks=(1, 1, 1), widths=(8, 16, 16)),
    "vgg": lambda: VGGLike(cfg=(8, "M", 16, "M", 16, "M"), in_size=16),
    "mobilenet": lambda: MobileNetV2Like(widths=(8, 12), head=24),
}


def _setup(name: str, seed: int = 0):
    """A random model (randomised BN), a synthetic Splits-like object labelled by the model itself."""
    torch.manual_seed(seed)
    model = randomize_bn(MODELS[name](), seed)
    g = torch.Generator().manual_seed(seed + 1)
    x_train = torch.randn(96, 3, 16, 16, generator=g)
    x_search = torch.randn(120, 3, 16, 16, generator=g)
    with torch.no_grad():
        y_train, y_search = model(x_train).argmax(1), model(x_search).argmax(1)
    splits = SimpleNamespace(search=TensorDataset(x_search, y_search), train_plain=TensorDataset(x_train, y_train),
                             test=None)
    example = torch.randn(1, 3, 16, 16)
    return model, splits, example


def _random_keep(groups, rng: random.Random, fraction: float = 0.1):
    keep = {}
    for grp in groups:
        n = rng.randint(min_keep(grp, fraction), grp.size)
        keep[grp.id] = torch.tensor(sorted(rng.sample(range(grp.size), n)))
    return keep


@pytest.mark.parametrize("name", sorted(MODELS))
def test_masked_evaluation_matches_physical_pruning(name):
    model, splits, example = _setup(name)
    groups = find_groups(model, example)
    assert any(g.residual for g in groups) or name == "vgg"
    ev = SearchEvaluator(model, splits, "cpu", bn_batches=3, batch_size=32, example_input=example, groups=groups)
    rng = random.Random(1)
    for trial in range(3):
        keep = _random_keep(groups, rng)
        acc = ev.evaluate(keep)
        pruned = apply_plan(copy.deepcopy(model), {k: v.tolist() for k, v in keep.items()}, example)
        recalibrate_bn(pruned, make_loader(splits.train_plain, 32, shuffle=True, seed=0), 3, "cpu")
        ref = topk_accuracy(pruned, make_loader(splits.search, 32, shuffle=False, seed=0), "cpu", ks=(1,))["top1"]
        assert abs(acc - ref) <= 0.5, (trial, acc, ref)
        # stronger: the logits themselves agree
        x = splits.search.tensors[0][:32]
        with ev.applied(keep) as net, torch.no_grad():
            masked = net(x)
        with torch.no_grad():
            torch.testing.assert_close(masked, pruned(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pruned_mode_scores_the_physically_pruned_network_like_the_masked_mode(name):
    """Issue 13: ``mode="pruned"`` runs the candidate at its own cost and gives the masked mode's numbers."""
    model, splits, example = _setup(name)
    groups = find_groups(model, example)
    kw = dict(bn_batches=3, batch_size=32, example_input=example, groups=groups)
    masked = SearchEvaluator(model, splits, "cpu", **kw)
    pruned = SearchEvaluator(model, splits, "cpu", mode="pruned", **kw)
    dense_params = sum(p.numel() for p in pruned.net.parameters())
    rng = random.Random(2)
    x = splits.search.tensors[0][:48]
    for trial in range(3):
        keep = _random_keep(groups, rng)
        with torch.no_grad():  # a search calls it without grad: the surgery must still trace
            assert pruned.evaluate(keep) == masked.evaluate(keep), trial
        with masked.applied(keep) as a, torch.no_grad():
            ref = a(x)
        with pruned.applied(keep) as b, torch.no_grad():
            got = b(x)
            assert sum(p.numel() for p in b.parameters()) < dense_params  # the channels are gone
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)
    # the working network is never pruned in place: the next candidate starts from the dense one
    assert sum(p.numel() for p in pruned.net.parameters()) == dense_params
    assert pruned.evaluate({}) == masked.evaluate({})


def test_an_unknown_candidate_mode_is_one_line():
    model, splits, example = _setup("resnet")
    with pytest.raises(UserError, match="candidate evaluation mode must be one of masked, pruned"):
        SearchEvaluator(model, splits, "cpu", example_input=example, mode="surgery")


def test_evaluation_restores_state_and_leaves_base_untouched():
    model, splits, example = _setup("resnet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    groups = find_groups(model, example)
    ev = SearchEvaluator(model, splits, "cpu", bn_batches=2, batch_size=32, example_input=example)
    full = ev.evaluate({})
    assert 0.0 <= full <= 100.0
    net_before = {k: v.clone() for k, v in ev.net.state_dict().items()}
    keep = _random_keep(groups, random.Random(0))
    a, b = ev.evaluate(keep), ev.evaluate({k: v.tolist() for k, v in keep.items()})
    assert a == b
    assert a < 100.0  # pruning a self-labelled set loses something
    for k, v in ev.net.state_dict().items():
        assert torch.equal(v, net_before[k]), k
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(m._forward_hooks for m in ev.net.modules())
    assert ev.evaluate({}) == full


def test_evaluator_never_reads_the_test_split():
    model, splits, example = _setup("vgg")

    class Boom:
        def __getattr__(self, item):
            raise AssertionError("the test split was read")

    splits.test = Boom()
    ev = SearchEvaluator(model, splits, "cpu", bn_batches=1, batch_size=64, example_input=example)
    assert len(ev.search_batches) == 2 and len(ev.bn_data) == 1
    assert 0.0 <= ev.evaluate({}) <= 100.0


# ------------------------------------------------------------------------------------------- wall/projection
@pytest.fixture(scope="module")
def resnet_cost():
    model = CifarResNet(blocks=(2, 2, 2), widths=(8, 16, 32))
    example = torch.randn(1, 3, 16, 16)
    groups = find_groups(model, example)
    return CostModel(model, example, groups), groups


def _red(cost, counts, metric):
    return cost.reduction(counts, metric)


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_wall_is_the_largest_feasible_count(resnet_cost, metric):
    cost, groups = resnet_cost
    rng = random.Random(metric)
    frac = 0.1
    checked = 0
    for _ in range(60):
        target = rng.uniform(0.1, 0.8)
        cur = rng.randrange(len(groups))
        decided = {g.id: rng.randint(min_keep(g, frac), g.size) for g in groups[:cur]}
        n = max_keep_allowed(cost, groups, decided, cur, metric, target, frac)
        g = groups[cur]
        assert min_keep(g, frac) <= n <= g.size
        later = {h.id: min_keep(h, frac) for h in groups[cur + 1:]}
        feasible = _red(cost, {**decided, **later, g.id: n}, metric) >= target - 1e-12
        if not feasible:  # nothing is feasible: the wall bottoms out at min_keep
            assert n == min_keep(g, frac)
            continue
        checked += 1
        if n < g.size:
            assert _red(cost, {**decided, **later, g.id: n + 1}, metric) < target
    assert checked > 10


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_projection_ends_feasible_dropping_lowest_scores_first(resnet_cost, metric):
    cost, groups = resnet_cost
    frac = 0.1
    rng = random.Random(7)
    for trial in range(25):
        target = rng.uniform(0.2, 0.85)
        keep = _random_keep(groups, rng, fraction=0.5)
        scores = {g.id: torch.rand(g.size, generator=torch.Generator().manual_seed(trial * 100 + i))
                  for i, g in enumerate(groups)}
        out, n = project(cost, groups, keep, scores, metric, target, frac)
        counts = {gid: int(v.numel()) for gid, v in out.items()}
        before = sum(int(v.numel()) for v in keep.values())
        assert before - sum(counts.values()) == n
        floor = {g.id: min_keep(g, frac) for g in groups}
        reachable = _red(cost, {g.id: min(floor[g.id], int(keep[g.id].numel())) for g in groups}, metric)
        if reachable >= target:
            assert _red(cost, counts, metric) >= target - 1e-12
        for g in groups:
            assert set(out[g.id].tolist()) <= set(keep[g.id].tolist())
            assert out[g.id].numel() >= min(floor[g.id], keep[g.id].numel())
            assert torch.equal(out[g.id], out[g.id].sort().values)
        # every dropped channel scores <= every kept channel of a group that was still above its floor
        dropped = [(float(scores[g.id][j]), g.id) for g in groups
                   for j in set(keep[g.id].tolist()) - set(out[g.id].tolist())]
        if dropped and n:
            worst_dropped = max(s for s, _ in dropped)
            for g in groups:
                if out[g.id].numel() > floor[g.id]:
                    assert float(scores[g.id][out[g.id]].min()) >= worst_dropped
        if n and reachable >= target:  # minimal: restoring the last (highest-score) drop misses the target
            last_gid = max(dropped)[1]
            restored = {**counts, last_gid: counts[last_gid] + 1}
            assert _red(cost, restored, metric) < target


def test_projection_drops_nothing_when_feasible_and_exact_order(resnet_cost):
    cost, groups = resnet_cost
    keep = {g.id: torch.arange(min_keep(g, 0.5), dtype=torch.long) for g in groups}
    target = cost.reduction({k: v.numel() for k, v in keep.items()}, "macs") - 0.01
    scores = {g.id: torch.rand(g.size) for g in groups}
    out, n = project(cost, groups, keep, scores, "macs", target, 0.1)
    assert n == 0 and all(torch.equal(out[k], keep[k]) for k in keep)

    # full model, a target that needs a few drops: they come out of the lowest scores, in order
    full = {g.id: torch.arange(g.size) for g in groups}
    scores = {g.id: torch.arange(g.size, dtype=torch.float32) + 1000.0 for g in groups}
    last = groups[-1]
    scores[last.id] = torch.arange(last.size, dtype=torch.float32)  # lowest everywhere, 0 first
    target = 0.02
    out, n = project(cost, groups, full, scores, "macs", target, 0.1)
    assert 0 < n < last.size
    assert out[last.id].tolist() == list(range(n, last.size))
    assert all(torch.equal(out[g.id], full[g.id]) for g in groups[:-1])
    counts = {k: v.numel() for k, v in out.items()}
    assert cost.reduction(counts, "macs") >= target
    counts[last.id] += 1  # one drop fewer misses it: the projection is minimal
    assert cost.reduction(counts, "macs") < target


def test_projection_unreachable_drops_to_floor(resnet_cost):
    cost, groups = resnet_cost
    full = {g.id: torch.arange(g.size) for g in groups}
    scores = {g.id: torch.rand(g.size) for g in groups}
    out, n = project(cost, groups, full, scores, "params", 0.999, 0.1)
    assert all(out[g.id].numel() == min_keep(g, 0.1) for g in groups)
    assert n == sum(g.size - min_keep(g, 0.1) for g in groups)


# ------------------------------------------------------------------------------------------- fair wall, fill
@pytest.mark.parametrize("metric", ["macs", "params"])
def test_fair_ratio_is_the_largest_uniform_ratio_that_meets_the_target(resnet_cost, metric):
    from harness.search import fair_ratio
    from harness.search.wall import _ratio_counts

    cost, groups = resnet_cost
    rng = random.Random(metric)
    for _ in range(20):
        target = rng.uniform(0.1, 0.7)
        start = rng.randrange(len(groups))
        decided = {g.id: rng.randint(g.size // 2, g.size) for g in groups[:start]}
        r = fair_ratio(cost, groups, decided, start, metric, target, 0.1)
        counts = {**decided, **_ratio_counts(groups[start:], r, 0.1)}
        if 0.0 < r < 1.0:
            assert _red(cost, counts, metric) >= target - 1e-12
            bigger = {**decided, **_ratio_counts(groups[start:], min(1.0, r + 0.02), 0.1)}
            assert _red(cost, bigger, metric) < target or bigger == counts
    assert fair_ratio(cost, groups, {}, 0, metric, 0.0, 0.1) == 1.0
    assert fair_ratio(cost, groups, {}, 0, metric, 0.999, 0.1) == 0.0


def test_the_fair_wall_reserves_the_later_groups_share(resnet_cost):
    """reserve = 1: the first group may keep about the fair ratio, not everything the min_keep wall allows."""
    from harness.search import fair_ratio

    cost, groups = resnet_cost
    spec = max_keep_allowed(cost, groups, {}, 0, "macs", 0.5, 0.1)
    fair = max_keep_allowed(cost, groups, {}, 0, "macs", 0.5, 0.1, reserve=1.0)
    r = fair_ratio(cost, groups, {}, 0, "macs", 0.5, 0.1)
    assert fair < spec and abs(fair - r * groups[0].size) <= 1.5
    with pytest.raises(Exception, match="reserve"):
        max_keep_allowed(cost, groups, {}, 0, "macs", 0.5, 0.1, reserve=1.5)


@pytest.mark.parametrize("metric", ["macs", "params"])
def test_fill_keeps_the_allocation_and_leaves_no_channel_that_fits(resnet_cost, metric):
    from harness.search import fill

    cost, groups = resnet_cost
    g = torch.Generator().manual_seed(0)
    for trial in range(10):
        keep = {grp.id: torch.randperm(grp.size, generator=g)[: max(1, grp.size // 4)] for grp in groups}
        scores = {grp.id: torch.rand(grp.size, generator=g, dtype=torch.float64) for grp in groups}
        out, added = fill(cost, groups, keep, scores, metric, 0.4)
        counts = {k: int(v.numel()) for k, v in out.items()}
        assert _red(cost, counts, metric) >= 0.4 - 1e-12
        assert added == sum(counts.values()) - sum(int(v.numel()) for v in keep.values()) > 0
        for grp in groups:  # kept channels stay kept; the added ones are the group's best-scored pruned ones
            assert set(keep[grp.id].tolist()) <= set(out[grp.id].tolist())
            new = sorted(set(out[grp.id].tolist()) - set(keep[grp.id].tolist()))
            rest = sorted(set(range(grp.size)) - set(out[grp.id].tolist()))
            if new and rest:
                assert min(scores[grp.id][new]) >= max(scores[grp.id][rest]) - 1e-12
            if counts[grp.id] < grp.size:  # maximal: one more channel anywhere breaks the budget
                assert _red(cost, {**counts, grp.id: counts[grp.id] + 1}, metric) < 0.4
    # an infeasible plan is returned unchanged
    full = {grp.id: torch.arange(grp.size) for grp in groups}
    same, n = fill(cost, groups, full, {grp.id: torch.zeros(grp.size) for grp in groups}, metric, 0.4)
    assert n == 0 and all(torch.equal(same[k], v) for k, v in full.items())


def test_fill_scales_every_group_by_one_factor_before_the_global_pass(resnet_cost):
    """A group-wide offset in the scores must not hand the whole slack to that group."""
    from harness.search import fill

    cost, groups = resnet_cost
    keep = {grp.id: torch.arange(max(1, grp.size // 4)) for grp in groups}
    scores = {grp.id: torch.rand(grp.size, dtype=torch.float64) + (10.0 if i == len(groups) - 1 else 0.0)
              for i, grp in enumerate(groups)}
    out, _ = fill(cost, groups, keep, scores, "macs", 0.4)
    fractions = [out[grp.id].numel() / grp.size for grp in groups]
    assert max(fractions) - min(fractions) < 0.35, fractions  # not one group at 1.0 and the rest at 0.25
