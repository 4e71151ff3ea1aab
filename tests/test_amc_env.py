"""AMC environment: the action wall keeps every plan within budget; the state features are the paper's."""
from __future__ import annotations

import copy
from functools import lru_cache

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import UserError
from harness.metrics import complexity
from harness.prune import Budget, CostModel, apply_plan, build_graph, find_groups
from baselines.amc.env import AMCEnv
from baselines.amc.layers import build_layers, input_channel_l1, static_features
from tests.tiny_models import CifarResNet, VGGLike, randomize_bn


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one thread avoids oversubscription (10-100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class ConstantEvaluator:
    def evaluate(self, keep) -> float:
        return 50.0


@lru_cache(maxsize=None)
def _model(name: str):
    torch.manual_seed(0)
    model = randomize_bn(CifarResNet() if name == "resnet" else VGGLike())
    x = torch.zeros(1, 3, 32, 32)
    graph = build_graph(model, x)
    groups = find_groups(model, x, graph=graph)
    return model, x, groups, CostModel(model, x, groups, graph=graph), graph


def _episode(env: AMCEnv, actions) -> dict:
    env.reset(seed=0)
    for t in range(env.num_steps):
        obs, reward, terminated, truncated, info = env.step(np.array([actions[t]], dtype=np.float32))
        assert env.observation_space.contains(obs)
        assert terminated == (t == env.num_steps - 1) and not truncated
    assert reward == pytest.approx(-0.5)  # R_err = -(1 - 50 / 100)
    return info


@pytest.mark.parametrize("name", ["resnet", "vgg"])
@pytest.mark.parametrize("metric", ["macs", "params"])
@pytest.mark.parametrize("scope", ["internal", "all"])
@pytest.mark.parametrize("round_to", [1, 8])
def test_action_wall_meets_every_reachable_budget(name: str, metric: str, scope: str, round_to: int) -> None:
    """Random and greedy (keep-everything) actions: the plan meets the target, or the env refuses upfront."""
    model, x, all_groups, cost, graph = _model(name)
    groups = [g for g in all_groups if scope == "all" or not g.residual]
    for target in (0.3, 0.5, 0.7):
        budget = Budget(metric, target)
        # what every group at its floor (lbound 0.2 rounded up to a multiple of round_to) removes
        floors = {g.id: min(g.size, -(-max(1, round(0.2 * g.size)) // round_to) * round_to) for g in groups}
        reachable = cost.reduction(floors, metric)
        if reachable < target:
            with pytest.raises(UserError, match="cannot reach"):
                AMCEnv(model, x, groups, cost, budget, ConstantEvaluator(), round_to=round_to, graph=graph)
            continue
        env = AMCEnv(model, x, groups, cost, budget, ConstantEvaluator(), round_to=round_to, graph=graph)
        assert env.max_reduction == pytest.approx(reachable)
        rng = np.random.default_rng(int(target * 10))
        for actions in [np.ones(len(groups))] + [rng.uniform(0, 1, len(groups)) for _ in range(3)]:
            info = _episode(env, actions)
            counts = {gid: len(v) for gid, v in info["keep"].items()}
            assert cost.reduction(counts, metric) >= target - 1e-12
            assert info[f"{metric}_reduction"] >= target - 1e-12
            for g in groups:  # the floor and the rounding hold
                n = counts[g.id]
                assert floors[g.id] <= n <= g.size
                assert n == g.size or n % round_to == 0 or n == floors[g.id]
    if name == "resnet" and metric == "macs" and scope == "internal" and round_to == 1:
        keep = info["keep"]  # the last plan, measured physically
        pruned = apply_plan(copy.deepcopy(model), keep, x)
        base, after = complexity(model, (3, 32, 32)), complexity(pruned, (3, 32, 32))
        assert 1 - after.macs / base.macs == pytest.approx(info["macs_reduction"], abs=1e-9)


def test_wall_only_binds_when_needed() -> None:
    """With a loose budget the executed ratios are the (rounded) actions themselves."""
    model, x, all_groups, cost, graph = _model("vgg")
    env = AMCEnv(model, x, all_groups, cost, Budget("macs", 0.05), ConstantEvaluator(), round_to=1, graph=graph)
    info = _episode(env, [0.5, 1.0, 0.75, 0.25, 0.1, 0.5])
    sizes = [g.size for g in all_groups]
    expect = [round(0.5 * sizes[0]), sizes[1], round(0.75 * sizes[2]), round(0.25 * sizes[3]), round(0.2 * sizes[4]),
              round(0.5 * sizes[5])]  # 0.1 is clipped to lbound 0.2
    assert [info["counts"][g.id] for g in all_groups] == expect


class Small(nn.Module):
    """3x8x8 input: conv 3->8 (3x3), conv 8->16 (3x3, stride 2), conv 16->16 (1x1), pool, linear 16->10."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, 1, 1)
        self.c2 = nn.Conv2d(8, 16, 3, 2, 1)
        self.c3 = nn.Conv2d(16, 16, 1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.c3(F.relu(self.c2(F.relu(self.c1(x))))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_state_features_of_a_known_network() -> None:
    model = Small().eval()
    x = torch.zeros(1, 3, 8, 8)
    groups = find_groups(model, x)
    assert [g.id for g in groups] == ["c1", "c2", "c3"]
    cost = CostModel(model, x, groups)
    # MACs by hand: c1 64*3*9*8 = 13824, c2 16*8*9*16 = 18432, c3 16*16*16 = 4096, fc 16*10 = 160
    assert cost.base.macs == 36512
    layers = build_layers(model, x, groups)
    assert [(la.module, la.n, la.c, la.h, la.w, la.stride, la.k, la.flops) for la in layers] == [
        ("c2", 16, 8, 8, 8, 2, 3, 18432.0), ("c3", 16, 16, 4, 4, 1, 1, 4096.0), ("fc", 10, 16, 1, 1, 0, 1, 160.0)]
    # paper columns t, n, c, h, w, stride, k, FLOPs[t], min-max normalised over the three layers
    paper = np.array([[0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0],
                      [0.5, 1.0, 1.0, 3 / 7, 3 / 7, 0.5, 0.0, 3936 / 18272],
                      [1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(static_features(layers, "paper"), paper, atol=1e-12)
    # code columns t, type, c, n, stride, k, #weights (1152, 256, 160)
    code = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0],
                     [0.5, 0.0, 1.0, 1.0, 0.5, 0.0, 96 / 992],
                     [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_allclose(static_features(layers, "code"), code, atol=1e-12)

    env = AMCEnv(model, x, groups, cost, Budget("macs", 0.1), ConstantEvaluator(), round_to=1)
    obs, _ = env.reset()
    np.testing.assert_allclose(obs, np.r_[paper[0], 0.0, 4256 / 36512, 1.0], atol=1e-6)  # reduced, rest, a_{t-1}
    obs, *_ = env.step([0.5])  # c1 keeps 4 of 8: c1 and c2 MACs halve (6912 + 9216 removed)
    np.testing.assert_allclose(obs, np.r_[paper[1], 16128 / 36512, 160 / 36512, 0.5], atol=1e-6)
    obs, *_ = env.step([1.0])
    np.testing.assert_allclose(obs, np.r_[paper[2], 16128 / 36512, 0.0, 1.0], atol=1e-6)
    code_env = AMCEnv(model, x, groups, cost, Budget("macs", 0.1), ConstantEvaluator(), round_to=1, state="code")
    assert code_env.reset()[0].shape == (10,)


def test_channels_are_ranked_by_input_channel_l1() -> None:
    """AMC keeps the input channels of layer t with the largest sum |W[:, j]| (official prune_kernel)."""
    model = Small().eval()
    x = torch.zeros(1, 3, 8, 8)
    groups = find_groups(model, x)
    with torch.no_grad():
        model.c2.weight.zero_()
        for j, v in enumerate([3.0, 0.1, 5.0, 0.2, 4.0, 0.3, 2.0, 1.0]):
            model.c2.weight[:, j] = v
    layers = build_layers(model, x, groups)
    scores = input_channel_l1(model, x, layers)
    assert torch.argsort(-scores["c1"])[:4].tolist() == [2, 4, 0, 6]
    env = AMCEnv(model, x, groups, CostModel(model, x, groups), Budget("macs", 0.1), ConstantEvaluator(),
                 round_to=1)
    info = _episode_small(env, [0.5, 1.0, 1.0])
    assert info["keep"]["c1"] == [0, 2, 4, 6]


def _episode_small(env: AMCEnv, actions) -> dict:
    env.reset()
    for a in actions:
        _, _, done, _, info = env.step([a])
    assert done
    return info
