"""harness.prune: dependency groups, the analytic cost model, surgery, plan JSON, budget checks.

Small local models (so these tests do not depend on harness.models) plus torchvision's resnet18 and
mobilenet_v2 at small inputs.
"""
from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
import textwrap

import pytest
import torch
import torchvision
from torch import nn

from harness.errors import BudgetNotMet, UserError
from harness.metrics import Complexity, complexity
from harness.prune import (Budget, CostModel, Group, PruningPlan, apply_plan, channel_l1, check_budget,
                           check_reachable, find_groups, load_pruned, max_reachable_reduction, min_keep,
                           save_pruned)
from tiny_models import CifarResNet, MobileNetV2Like, VGGLike, randomize_bn


# ----------------------------------------------------------------------------------------------- models
def build(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name == "cifar_resnet":
        return randomize_bn(CifarResNet()), torch.randn(2, 3, 32, 32)
    if name == "vgg":
        return randomize_bn(VGGLike()), torch.randn(2, 3, 32, 32)
    if name == "mbv2_like":
        return randomize_bn(MobileNetV2Like()), torch.randn(2, 3, 32, 32)
    if name == "tv_resnet18":
        return randomize_bn(torchvision.models.resnet18(num_classes=10)), torch.randn(1, 3, 32, 32)
    if name == "tv_mobilenet_v2":
        return randomize_bn(torchvision.models.mobilenet_v2(num_classes=10)), torch.randn(1, 3, 32, 32)
    raise KeyError(name)


def shape_of(x: torch.Tensor) -> tuple[int, int, int]:
    return tuple(x.shape[1:])


# ----------------------------------------------------------------------------------------------- groups
def test_groups_cifar_resnet_structure():
    model, x = build("cifar_resnet")
    groups = find_groups(model, x)
    ids = [g.id for g in groups]
    assert find_groups(model, x) == groups  # deterministic
    residual = [g for g in groups if g.residual]
    internal = [g for g in groups if not g.residual]
    # one residual-stream group per stage, one internal group per block, nothing else
    assert [g.id for g in residual] == ["conv1", "layer2.0.conv2", "layer3.0.conv2"]
    assert len(internal) == 6 and len(groups) == 9
    assert [g.size for g in residual] == [16, 32, 64]
    stage2 = residual[1].members
    for name in ("layer2.0.conv2", "layer2.0.bn2", "layer2.0.shortcut.0", "layer2.0.shortcut.1", "layer2.1.conv2",
                 "layer2.1.bn2", "layer2.1.conv1", "layer3.0.conv1", "layer3.0.shortcut.0"):
        assert name in stage2
    assert "fc" in residual[2].members  # the classifier's input is pruned with the last stage ...
    assert "fc" not in ids  # ... its output never
    for g in internal:
        block = g.id.rsplit(".", 1)[0]
        assert g.id.endswith(".conv1") and g.members == (f"{block}.conv1", f"{block}.bn1", f"{block}.conv2")
    assert ids[0] == "conv1" and ids.index("layer1.0.conv1") < ids.index("layer1.1.conv1") < ids.index("layer2.0.conv1")

    inner = find_groups(model, x, scope="internal")
    assert inner == internal and not any(g.residual for g in inner)
    with pytest.raises(UserError):
        find_groups(model, x, scope="everything")


def test_groups_depthwise_tied_to_producer():
    model, x = build("mbv2_like")
    groups = {g.id: g for g in find_groups(model, x)}
    assert "blocks.0.conv.3" in groups["blocks.0.conv.0"].members  # depthwise conv in its expand conv's group
    assert "blocks.0.conv.4" in groups["blocks.0.conv.0"].members
    assert not groups["blocks.0.conv.0"].residual
    assert groups["stem.0"].residual and groups["blocks.1.conv.6"].residual  # identity adds
    assert not any(g.endswith("conv.3") for g in groups) and "fc" not in groups

    tv, x = build("tv_mobilenet_v2")
    groups = find_groups(tv, x)
    depthwise = [n for n, m in tv.named_modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    for name in depthwise:
        owners = [g for g in groups if name in g.members]
        assert len(owners) == 1 and owners[0].id != name
    # first block: no expansion conv, its depthwise conv belongs to the stem conv's group
    assert "features.1.conv.0.0" in next(g for g in groups if g.id == "features.0.0").members
    assert "classifier.1" not in [g.id for g in groups]


def test_groups_vgg_and_ignored_layers():
    model, x = build("vgg")
    groups = find_groups(model, x)
    assert [g.id for g in groups] == ["features.0", "features.4", "features.8", "features.11", "features.15",
                                      "classifier.0"]
    assert not any(g.residual for g in groups)
    assert find_groups(model, x, scope="internal") == groups
    fewer = find_groups(model, x, ignored_layers=["features.4"])
    assert "features.4" not in [g.id for g in fewer] and len(fewer) == len(groups) - 1


# ----------------------------------------------------------------------------------------------- cost model
MODELS = ["cifar_resnet", "vgg", "mbv2_like", "tv_resnet18", "tv_mobilenet_v2"]


@pytest.mark.parametrize("name", MODELS)
def test_cost_model_equals_physically_pruned(name):
    model, x = build(name)
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    assert cost.base == complexity(model, shape_of(x))
    rng = random.Random(hash(name) % 1000)
    for trial in range(2):
        keep = {g.id: sorted(rng.sample(range(g.size), rng.randint(1, g.size))) for g in groups}
        if trial == 1:  # and a plan that leaves some groups out (= whole)
            keep = {k: v for i, (k, v) in enumerate(keep.items()) if i % 2}
        pruned = apply_plan(copy.deepcopy(model), keep, x)
        with torch.no_grad():
            assert pruned(x).shape == (x.shape[0], 10)
        assert complexity(pruned, shape_of(x)) == cost.cost({k: len(v) for k, v in keep.items()})


def test_cost_model_is_fast_and_validates():
    model, x = build("cifar_resnet")
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    import time
    start = time.perf_counter()
    for i in range(500):
        cost.cost({groups[i % len(groups)].id: 3})
    assert (time.perf_counter() - start) / 500 < 2e-3  # analytic: microseconds, no forward pass
    assert cost.cost({}) == cost.base
    with pytest.raises(UserError):
        cost.cost({"nope": 3})
    with pytest.raises(UserError):
        cost.cost({groups[0].id: groups[0].size + 1})


# ----------------------------------------------------------------------------------------------- importance
def test_channel_l1_sums_filters_of_output_members():
    model, x = build("cifar_resnet")
    groups = {g.id: g for g in find_groups(model, x)}
    l1 = channel_l1(model, x, list(groups.values()))
    w = model.layer1[0].conv1.weight
    assert torch.allclose(l1["layer1.0.conv1"], w.abs().sum((1, 2, 3)))
    stage = [model.layer2[0].conv2, model.layer2[0].shortcut[0], model.layer2[1].conv2]
    assert torch.allclose(l1["layer2.0.conv2"], sum(m.weight.abs().sum((1, 2, 3)) for m in stage))
    assert torch.allclose(l1["conv1"], sum(m.weight.abs().sum((1, 2, 3)) for m in
                                           [model.conv1, model.layer1[0].conv2, model.layer1[1].conv2]))

    mb, x = build("mbv2_like")
    g = [grp for grp in find_groups(mb, x) if grp.id == "blocks.0.conv.0"]
    expand, dw = mb.blocks[0].conv[0], mb.blocks[0].conv[3]
    expected = expand.weight.abs().sum((1, 2, 3)) + dw.weight.abs().sum((1, 2, 3))
    assert torch.allclose(channel_l1(mb, x, g)["blocks.0.conv.0"], expected)


# ----------------------------------------------------------------------------------------------- surgery
def test_apply_plan_keeps_the_right_channels():
    model, x = build("cifar_resnet")
    orig = copy.deepcopy(model)
    keep = {"layer1.0.conv1": [0, 3, 4, 9, 15], "layer2.0.conv2": list(range(0, 32, 3)),
            "layer3.0.conv2": [1, 2, 5, 60, 63]}
    apply_plan(model, keep, x)
    k1, k2, k3 = (torch.tensor(keep[k]) for k in ("layer1.0.conv1", "layer2.0.conv2", "layer3.0.conv2"))
    b = model.layer1[0]
    assert torch.equal(b.conv1.weight, orig.layer1[0].conv1.weight[k1])
    assert torch.equal(b.bn1.running_mean, orig.layer1[0].bn1.running_mean[k1])
    assert torch.equal(b.conv2.weight, orig.layer1[0].conv2.weight[:, k1])
    # residual stream of stage 2: producers' filters, shortcut, BN, and consumers' input kernels together
    assert torch.equal(model.layer2[0].conv2.weight, orig.layer2[0].conv2.weight[k2])
    assert torch.equal(model.layer2[0].shortcut[0].weight, orig.layer2[0].shortcut[0].weight[k2])
    assert torch.equal(model.layer2[1].bn2.weight, orig.layer2[1].bn2.weight[k2])
    assert torch.equal(model.layer2[1].conv1.weight, orig.layer2[1].conv1.weight[:, k2])
    assert torch.equal(model.layer3[0].shortcut[0].weight, orig.layer3[0].shortcut[0].weight[k3][:, k2])
    assert torch.equal(model.fc.weight, orig.fc.weight[:, k3]) and model.fc.out_features == 10
    with torch.no_grad():
        assert model(x).shape == (2, 10)


def test_pruning_dead_channels_leaves_outputs_unchanged():
    """Channels whose BN output is exactly 0 after ReLU contribute nothing: removing them must not change y."""
    model, x = build("cifar_resnet")
    keep = [0, 2, 5, 7, 8, 11]
    dead = [i for i in range(16) if i not in keep]
    with torch.no_grad():
        model.layer1[1].bn1.weight[dead] = 0.0
        model.layer1[1].bn1.bias[dead] = -1.0  # relu(-1) = 0
        y = model(x)
        pruned = apply_plan(copy.deepcopy(model), {"layer1.1.conv1": keep}, x)
        assert torch.allclose(pruned(x), y, atol=1e-5)


def test_apply_plan_rejects_bad_plans():
    model, x = build("vgg")
    for keep in ({"features.0": []}, {"features.0": [3, 1]}, {"features.0": [1, 1]}, {"features.0": [16]},
                 {"features.99": [0]}):
        with pytest.raises(UserError):
            apply_plan(copy.deepcopy(model), keep, x)


def _plan(groups, keep) -> PruningPlan:
    return PruningPlan.from_keep(method="l1-uniform", dataset="fashionmnist", arch="resnet20", seed=0,
                                 budget=Budget("macs", 0.5), groups=groups, keep=keep,
                                 achieved={"macs_reduction": 0.5}, meta={"search_wall_s": 1.2, "options": {}})


def test_plan_json_roundtrip_and_format(tmp_path):
    model, x = build("cifar_resnet")
    groups = find_groups(model, x)
    plan = _plan(groups, {"layer1.0.conv1": [0, 3, 4]})
    path = tmp_path / "run" / "plan.json"
    plan.to_json(path)
    raw = json.loads(path.read_text())
    assert raw["format"] == "prunebench-plan/1"
    assert set(raw) == {"format", "method", "dataset", "arch", "seed", "budget", "groups", "achieved", "meta"}
    assert raw["budget"] == {"metric": "macs", "target": 0.5, "tolerance": 0.01}
    first = raw["groups"][1]
    assert first == {"id": "layer1.0.conv1", "size": 16, "members": ["layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"],
                     "residual": False, "keep": [0, 3, 4]}
    assert [g["id"] for g in raw["groups"]] == [g.id for g in groups]  # every group, model order
    back = PruningPlan.from_json(path)
    assert back == plan and back.keep["layer1.0.conv1"] == [0, 3, 4] and back.keep_counts["conv1"] == 16
    # the plan applies like its keep dict
    a = apply_plan(copy.deepcopy(model), back, x)
    b = apply_plan(copy.deepcopy(model), {"layer1.0.conv1": [0, 3, 4]}, x)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))

    bad = dict(raw, groups=[dict(raw["groups"][1], keep=[4, 3])])
    path.write_text(json.dumps(bad))
    with pytest.raises(UserError, match="sorted"):
        PruningPlan.from_json(path)
    path.write_text(json.dumps(dict(raw, format="other/1")))
    with pytest.raises(UserError, match="format"):
        PruningPlan.from_json(path)
    for keep in ([], [0, 0], [16], [-1]):
        with pytest.raises(UserError):
            _plan(groups, {"layer1.0.conv1": keep})


def test_save_and_reload_in_fresh_subprocess(tmp_path):
    model, x = build("tv_mobilenet_v2")
    groups = find_groups(model, x)
    rng = random.Random(1)
    keep = {g.id: sorted(rng.sample(range(g.size), max(1, g.size // 2))) for g in groups}
    pruned = apply_plan(model, keep, x)
    with torch.no_grad():
        y = pruned(x)
    path = tmp_path / "pruned.pt"
    save_pruned(pruned, path)
    torch.save({"x": x, "y": y}, tmp_path / "io.pt")
    with torch.no_grad():
        assert torch.equal(load_pruned(path)(x), y)
    script = textwrap.dedent(f"""
        import sys, torch
        m = torch.load({str(path)!r}, weights_only=False).eval()
        io = torch.load({str(tmp_path / 'io.pt')!r})
        with torch.no_grad():
            assert torch.allclose(m(io["x"]), io["y"], atol=1e-6), "outputs differ"
        assert not any(k.split(".")[0] in ("harness", "torch_pruning") for k in sys.modules), "extra imports"
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]

    (tmp_path / "broken.pt").write_bytes(b"not a pickle")
    from harness.errors import CorruptCheckpoint
    with pytest.raises(CorruptCheckpoint):
        load_pruned(tmp_path / "broken.pt")


# ----------------------------------------------------------------------------------------------- budget
def test_budget_validation():
    for args in (("flops", 0.5), ("macs", 0.0), ("macs", 1.0), ("macs", -0.1), ("params", 0.5, -0.01)):
        with pytest.raises(UserError):
            Budget(*args)
    assert Budget("params", 0.5).tolerance == 0.01


def test_check_budget_raises_below_target_minus_tolerance():
    base = Complexity(macs=1000, params=100)
    budget = Budget("macs", 0.5, tolerance=0.01)
    ok = check_budget(base, Complexity(macs=495, params=90), budget)
    assert ok.ok and ok.achieved == pytest.approx(0.505) and ok.params_reduction == pytest.approx(0.1)
    assert check_budget(base, Complexity(macs=505, params=90), budget).ok  # 0.495: within tolerance
    with pytest.raises(BudgetNotMet, match="macs") as exc:
        check_budget(base, Complexity(macs=520, params=10), budget)  # 0.48 < 0.49
    assert "\n" not in str(exc.value) and "0.5" in str(exc.value)
    pbudget = Budget("params", 0.5)
    with pytest.raises(BudgetNotMet, match="params"):
        check_budget(base, Complexity(macs=10, params=60), pbudget)


def test_min_keep_and_max_reachable_reduction():
    g = Group("a", 16, ("a",), False)
    assert min_keep(g) == 2 and min_keep(g, 0.5) == 8 and min_keep(Group("b", 5, ("b",), False), 0.1) == 1
    assert min_keep(Group("c", 10, ("c",), False), 0.1) == 1 and min_keep(Group("c", 3, ("c",), False), 0.0) == 1

    model, x = build("cifar_resnet")
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    floor = cost.cost({grp.id: min_keep(grp, 0.1) for grp in groups})
    reach = max_reachable_reduction(cost, groups, "macs", 0.1)
    assert reach == pytest.approx(1 - floor.macs / cost.base.macs)
    internal = [grp for grp in groups if not grp.residual]
    assert max_reachable_reduction(cost, internal, "macs", 0.1) < reach
    assert max_reachable_reduction(cost, groups, "params", 0.5) < max_reachable_reduction(cost, groups, "params", 0.1)
    assert check_reachable(cost, groups, Budget("macs", 0.5), 0.1, "resnet20") == pytest.approx(reach)
    with pytest.raises(UserError) as exc:
        check_reachable(cost, internal, Budget("macs", 0.95), 0.1, "resnet20")
    msg = str(exc.value)
    assert "resnet20" in msg and "macs" in msg and "0.95" in msg and "\n" not in msg
