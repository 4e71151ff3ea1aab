"""Constrained-RL pruning (crl-neuron, crl-layer) end to end on a tiny ResNet and synthetic splits.

Plans come through the registry (``MethodSpec.__call__`` verifies them) and are then measured for real:
crl-neuron's by physical surgery and the saved module, crl-layer's by counting non-zeros before and after
a fine-tune with the masks held by ``torch.nn.utils.prune``.
"""
from __future__ import annotations

import copy
import csv
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import registry
from harness.data import DataConfig, build_splits
from harness.errors import BudgetNotMet, UserError
from harness.metrics import complexity
from harness.models import build_model
from harness.prune import Budget, CostModel, apply_plan, find_groups, load_pruned, save_pruned
from harness.prune.unstructured import (WeightSparsity, apply_sparsity, make_permanent, nonzero_params,
                                        sparse_complexity)
from harness.search.ppo_lagrangian import PPOLagrangian
from harness.train import Recipe, fit
from split_guards import ForbiddenSplit as _ForbiddenSplit

torch.set_num_threads(1)
registry.load_plugins()
SHAPE = (3, 12, 12)
FAST = {"timesteps": 128, "n_envs": 2, "n_steps": 32, "epochs": 4, "minibatch_size": 32, "lr": 0.01,
        "reward_split": "search", "reward_samples": 64, "reward_batch_size": 64, "finetune_iters": [0],
        "final_rollouts": 6, "select_bn_batches": 1, "eval_batch_size": 64}


@lru_cache(maxsize=None)
def _setup():
    torch.manual_seed(0)
    splits = build_splits(DataConfig(name="synthetic", synthetic_train=300, synthetic_test=60, search_size=64,
                                     synthetic_classes=4, synthetic_image_size=12, synthetic_channels=3))
    model = build_model("resnet20", splits.info, width=0.25).eval()
    with torch.no_grad():  # BN affine as after training (a fresh BN bias is exactly 0: it would count as pruned)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    x = torch.zeros(1, *SHAPE)
    groups = find_groups(model, x)
    return splits, model, x, groups, CostModel(model, x, groups)


def _ctx(method: str, workdir: Path, metric: str, target: float, seed: int = 0, **options) -> registry.PruneContext:
    splits, model, x, groups, cost = _setup()
    return registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget(metric, target), min_keep_fraction=0.1,
        splits=splits, device=torch.device("cpu"), seed=seed,
        options=registry.options_from_dict(method, {**FAST, **options}), workdir=workdir, arch="resnet20")


@lru_cache(maxsize=None)
def _plan(method: str, metric: str, target: float, seed: int):
    """(result, plan meta, workdir) of one search, run once per test session."""
    workdir = Path(tempfile.mkdtemp(prefix=f"{method}-"))
    ctx = _ctx(method, workdir, metric, target, seed)
    return registry.get_method(method)(ctx), ctx.meta, workdir


def _reduction(result, metric: str) -> float:
    _, model, x, _, _ = _setup()
    base = complexity(model, SHAPE)
    if isinstance(result, WeightSparsity):
        after = sparse_complexity(apply_sparsity(copy.deepcopy(model), result), SHAPE)
    else:
        after = complexity(apply_plan(copy.deepcopy(model), result, x), SHAPE)
    return 1 - (after.macs / base.macs if metric == "macs" else after.params / base.params)


# ---------------------------------------------------------------------------------------------- registry
def test_both_variants_are_registered_with_the_official_defaults() -> None:
    neuron, layer = registry.get_method("crl-neuron"), registry.get_method("crl-layer")
    # crl-neuron meets a latency budget through the cost model's latency table (docs/latency.md)
    assert neuron.structured and neuron.budget_metrics == ("macs", "params", "latency")
    assert not layer.structured and layer.budget_metrics == ("params",)
    n, c = registry.options_from_dict("crl-neuron", {}), registry.options_from_dict("crl-layer", {})
    for o in (n, c):  # README commands (specs/baselines.md A.3)
        assert (o.n_steps, o.n_envs, o.minibatch_size, o.epochs, o.lr, o.clip) == (128, 3, 64, 10, 3e-4, 0.2)
        assert (o.penalty_init, o.penalty_lr, o.penalty_min, o.cost_gae_lambda, o.gamma) == (1, 1, 0, 1.0, 0.99)
        assert (o.hidden, o.reward_samples, o.finetune_batch_size, o.finetune_lr) == ((32, 32), 20000, 60, 3e-4)
        assert (o.reward_split, o.final_rollouts, o.on_infeasible, o.finetune) == ("train", 16, "error", "common")
    assert (c.timesteps, c.target_kl, c.action_clip_init, c.action_clip_slope, c.finetune_iters) == (
        40000, 0.1, 0.9, 0.05, (0, 32, 128))
    assert (n.timesteps, n.target_kl, n.action_clip_init, n.action_clip_slope, n.finetune_iters) == (
        124000, None, 1.0, 0.0, (256,))  # exps.sh fine-grained runs
    assert n.soft_actions and n.threshold == 0.5


@pytest.mark.parametrize("method,options", [
    ("crl-layer", {"cost": "macs"}), ("crl-layer", {"cost": "latency"}), ("crl-neuron", {"cost": "masked-weights"}),
    ("crl-neuron", {"reward_split": "test"}), ("crl-layer", {"finetune_iters": []}), ("crl-neuron", {"n_envs": 0}),
    ("crl-layer", {"action_clip_init": 1.5}), ("crl-neuron", {"threshold": 0}), ("crl-layer", {"on_infeasible": "x"}),
    ("crl-neuron", {"cost_budget": 150}), ("crl-layer", {"bogus": 1}), ("crl-neuron", {"candidate_eval": "x"}),
    ("crl-neuron", {"candidate_eval": "pruned"}),  # soft actions (the default) cannot be removed physically
    ("crl-layer", {"candidate_eval": "pruned"}),   # unstructured masks: no such option
])
def test_bad_options_are_one_line_user_errors(method: str, options: dict) -> None:
    with pytest.raises(UserError) as err:
        registry.options_from_dict(method, options)
    assert "\n" not in str(err.value)


def test_crl_layer_rejects_a_macs_budget(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot meet a macs budget"):
        registry.get_method("crl-layer")(_ctx("crl-layer", tmp_path, "macs", 0.3))


def test_schedules_follow_the_code() -> None:
    from baselines.crl.search import action_clip_schedule, finetune_schedule

    o = registry.options_from_dict("crl-layer", {"timesteps": 300, "n_envs": 3})  # r = 100 steps per env
    clip, ft = action_clip_schedule(o), finetune_schedule(o)
    assert [round(clip(t), 6) for t in (0, 50, 100, 1000)] == [0.9, 0.925, 0.95, 1.0]
    assert [ft(t) for t in (0, 32, 33, 65, 66, 99, 500)] == [0, 0, 32, 32, 128, 128, 128]


# ---------------------------------------------------------------------------------------------- environment
def _env(variant: str, **kw):
    from baselines.crl.cost import CostMeter
    from baselines.crl.env import ConstrainedPruningEnv
    from baselines.crl.units import layer_units, neuron_units

    splits, model, x, groups, cost = _setup()
    ctx = _ctx("crl-layer" if variant == "layer" else "crl-neuron", Path("/nonexistent"), "params", 0.5)
    units = layer_units(model, ("downsample",)) if variant == "layer" else neuron_units(model, groups)
    meter = CostMeter(ctx, "budget")
    return ConstrainedPruningEnv(variant, units, meter, model=model, min_keep={g.id: ctx.min_keep(g) for g in groups},
                                 **kw), units, ctx


def test_layer_env_cost_is_steps_times_remaining_percent() -> None:
    seen = []
    env, units, ctx = _env("layer", action_clip=lambda t: 0.6, score=lambda **kw: seen.append(kw) or 42.0)
    obs, _ = env.reset()
    assert obs.shape == (10,) and len(units) == 19  # 19 convs of ResNet-20, the two 1x1 shortcuts skipped
    done, t = False, 0
    while not done:
        obs, reward, done, _, info = env.step(np.array([0.9 if t % 2 else 0.25], dtype=np.float32))
        t += 1
        if not done:
            assert reward == 0.0 and info["cost"] == 0.0 and obs[-1] > 0  # the running sum of clipped actions
    ep = env.last_episode
    fractions = [0.6 if i % 2 else 0.25 for i in range(len(units))]  # 0.9 is clipped to c(t) = 0.6
    assert ep.sparsity.pruned == {u.name: u.size - round((1 - a) * u.size) for u, a in zip(units, fractions)}
    assert reward == 42.0 and set(seen[0]) == {"weight_masks", "finetune_iters", "seed"}
    base = ctx.cost.base.params
    assert info["cost"] == pytest.approx(len(units) * 100.0 * (base - ep.sparsity.total) / base)


def test_neuron_env_thresholds_scores_and_tops_up_min_keep() -> None:
    env, units, ctx = _env("neuron", action_clip=lambda t: 1.0, score=None)
    env.reset()
    rng = np.random.default_rng(0)
    actions = []
    for u in units:
        a = np.zeros(env.act_dim, dtype=np.float32)
        a[: u.size] = rng.uniform(0, 1, u.size) if len(actions) else 0.1  # the first group: all below 0.5
        actions.append(a)
        env.step(a)
    keep = env.last_episode.keep
    first = units[0]
    assert len(keep[first.name]) == ctx.min_keep(_setup()[3][0])
    for u, a in list(zip(units, actions))[1:]:
        expect = np.flatnonzero(a[: u.size] >= 0.5)
        if expect.size >= env.min_keep[u.name]:
            assert keep[u.name] == expect.tolist()


# ---------------------------------------------------------------------------------------------- end to end
CASES = [("crl-layer", "params", 0.5), ("crl-neuron", "macs", 0.5), ("crl-neuron", "params", 0.4)]


@pytest.mark.parametrize("method,metric,target", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_final_plan_meets_the_budget(method: str, metric: str, target: float, seed: int) -> None:
    result, meta, _ = _plan(method, metric, target, seed)
    assert _reduction(result, metric) >= target - 0.01
    assert meta["crl"]["feasible"] >= 1 and not meta["crl"]["projected"]


def test_crl_neuron_saved_module_is_physically_smaller(tmp_path: Path) -> None:
    keep, _, _ = _plan("crl-neuron", "macs", 0.5, 0)
    _, model, x, _, _ = _setup()
    save_pruned(apply_plan(copy.deepcopy(model), keep, x), tmp_path / "pruned.pt")
    pruned = load_pruned(tmp_path / "pruned.pt")
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert pruned(torch.zeros(2, *SHAPE)).shape == (2, 4)


def test_crl_layer_has_the_claimed_non_zeros_through_the_finetune(tmp_path: Path) -> None:
    sparsity, _, _ = _plan("crl-layer", "params", 0.5, 0)
    splits, model, _, _, cost = _setup()
    claimed = cost.base.params - sparsity.total
    net = apply_sparsity(copy.deepcopy(model), sparsity)
    assert nonzero_params(net) == claimed
    recipe = Recipe(epochs=1, batch_size=50, lr=0.05, max_batches_per_epoch=3)
    net = fit(net, splits.train, recipe, device="cpu", seed=0, checkpoint_dir=None, log_csv=None)
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.state_dict().values()))
    save_pruned(make_permanent(net), tmp_path / "sparse.pt")
    saved = load_pruned(tmp_path / "sparse.pt")
    assert not any(n.endswith("_orig") for n, _ in saved.named_parameters())
    assert nonzero_params(saved) == claimed
    assert sparse_complexity(saved, SHAPE).macs == complexity(model, SHAPE).macs  # dense MACs


def test_search_log_has_the_common_and_lagrangian_columns() -> None:
    _, _, workdir = _plan("crl-layer", "params", 0.5, 0)
    rows = list(csv.DictReader(open(workdir / "search_log.csv")))
    assert len(rows) == 2  # 128 steps / (2 envs x 32 steps)
    for col in ("episode", "reward", "accuracy", "macs", "params", "macs_reduction", "params_reduction", "feasible",
                "best_accuracy", "wall_s", "mean_cost", "budget", "nu", "masked_remaining"):
        assert col in rows[0]
    assert float(rows[0]["budget"]) == pytest.approx(50.0)
    final = list(csv.DictReader(open(workdir / "final_candidates.csv")))
    assert len(final) == FAST["final_rollouts"] + 1 and sum(r["chosen"] == "True" for r in final) == 1


def test_unreachable_budget_is_an_error_unless_projected(tmp_path: Path) -> None:
    with pytest.raises(BudgetNotMet, match="none of the 7 final rollouts"):
        registry.get_method("crl-layer")(_ctx("crl-layer", tmp_path / "a", "params", 0.85, timesteps=64))
    ctx = _ctx("crl-layer", tmp_path / "b", "params", 0.85, timesteps=64, on_infeasible="project")
    sparsity = registry.get_method("crl-layer")(ctx)
    assert ctx.meta["crl"]["projected"] and _reduction(sparsity, "params") >= 0.85 - 0.01


def test_killed_search_resumes_to_the_same_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    whole = registry.get_method("crl-neuron")(_ctx("crl-neuron", tmp_path / "whole", "params", 0.4, seed=2,
                                                   timesteps=128))
    real_update, calls = PPOLagrangian.update, []

    def crash_on_second(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_update(self)

    monkeypatch.setattr(PPOLagrangian, "update", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        registry.get_method("crl-neuron")(_ctx("crl-neuron", tmp_path / "killed", "params", 0.4, seed=2, timesteps=128))
    monkeypatch.setattr(PPOLagrangian, "update", real_update)
    caplog.set_level("INFO", logger="baselines.crl.search")
    resumed = registry.get_method("crl-neuron")(_ctx("crl-neuron", tmp_path / "killed", "params", 0.4, seed=2,
                                                     timesteps=128))
    assert resumed == whole
    assert "crl-neuron: resuming after update 1/2" in caplog.text
    log = lambda d: [r["nu"] + r["reward"] for r in csv.DictReader(open(tmp_path / d / "search_log.csv"))]  # noqa
    assert log("killed") == log("whole") and len(log("whole")) == 2


def test_pruned_candidates_give_the_masked_search(tmp_path: Path) -> None:
    """Issue 13: crl-neuron's hard plans scored on physically pruned copies: the same rewards, the same search."""
    from baselines.crl.search import _Search as CRLSearch

    hard = {"soft_actions": False, "timesteps": 128}
    runs = {}
    for mode in ("masked", "pruned", "auto"):
        ctx = _ctx("crl-neuron", tmp_path / mode, "macs", 0.5, seed=1, candidate_eval=mode, **hard)
        runs[mode] = registry.get_method("crl-neuron")(ctx)
    rewards = lambda d: [(r["reward"], r["accuracy"]) for r in csv.DictReader(open(tmp_path / d / "search_log.csv"))]  # noqa
    assert runs["masked"] == runs["pruned"] == runs["auto"]
    assert rewards("masked") == rewards("pruned") == rewards("auto")
    modes = {o: CRLSearch(_ctx("crl-neuron", tmp_path / "m", "macs", 0.5, **opts), "neuron").candidate_mode()
             for o, opts in (("soft", {}), ("hard", hard))}
    assert modes == {"soft": "masked", "hard": "pruned"}


@pytest.mark.parametrize("finetune_iters", [0, 3])
def test_pruned_scorer_matches_the_masks(finetune_iters: int) -> None:
    """The pruned copy is the 0/1-masked network, through the inner fine-tune (pruned filters get no gradient)."""
    from baselines.crl.scorer import EpisodeScorer

    splits, model, x, groups, _ = _setup()
    kw = dict(groups=groups, reward_split="search", reward_samples=64, reward_batch_size=64, bn_batches=1,
              bn_batch_size=64)
    masked, pruned = (EpisodeScorer(model, splits, "cpu", x, mode=m, **kw) for m in ("masked", "pruned"))
    rng = np.random.default_rng(0)
    for trial in range(3):
        keep = {g.id: sorted(rng.choice(g.size, max(1, g.size // 2), replace=False).tolist()) for g in groups}
        scores = {g.id: torch.zeros(g.size).index_fill_(0, torch.tensor(keep[g.id]), 1.0) for g in groups}
        a = masked.score(channel_scores=scores, keep=keep, finetune_iters=finetune_iters, seed=trial)
        b = pruned.score(channel_scores=scores, keep=keep, finetune_iters=finetune_iters, seed=trial)
        assert abs(a - b) <= (100 / 64 if finetune_iters else 1e-9)  # fine-tune: float order, at most one image
    with pytest.raises(UserError, match="hard plans only"):
        pruned.score(channel_scores={groups[0].id: torch.full((groups[0].size,), 0.7)}, keep=keep)


def test_multiplier_and_cost_figure(tmp_path: Path) -> None:
    import pandas as pd

    from figures.crl import render_crl_search

    _, _, workdir = _plan("crl-layer", "params", 0.5, 0)
    log = pd.read_csv(workdir / "search_log.csv")
    out = render_crl_search({"params-0.5": log, "copy": log.assign(nu=log["nu"] * 2)}, tmp_path / "crl.png")
    assert out.stat().st_size > 1000
    with pytest.raises(ValueError, match="lacks column"):
        render_crl_search(log.drop(columns=["nu"]), tmp_path / "bad.png")


def test_paper_finetune_protocol_is_a_valid_adam_recipe(tmp_path: Path) -> None:
    from baselines.crl.search import paper_finetune_recipe

    ctx = _ctx("crl-neuron", tmp_path, "macs", 0.5, finetune="paper", paper_finetune_iters=25)
    recipe = Recipe.from_dict(paper_finetune_recipe(ctx))
    assert (recipe.optimizer, recipe.lr, recipe.batch_size, recipe.schedule) == ("adam", 3e-4, 60, "constant")
    assert recipe.epochs * recipe.max_batches_per_epoch >= 25  # 236 train images / 60 = 3 batches per epoch


# ---------------------------------------------------------------------------------------------- test split

@pytest.mark.parametrize("method,metric,options", [
    # the code's reward data (augmented training images), BN recalibration, projection allowed
    ("crl-neuron", "macs", {"reward_split": "train", "bn_batches": 1, "on_infeasible": "project"}),
    # rewards on the search split, the final selection on a subset of it
    ("crl-layer", "params", {"reward_split": "search", "select_samples": 32}),
])
def test_search_never_reads_the_test_split(tmp_path: Path, method: str, metric: str, options: dict) -> None:
    import dataclasses

    splits, model, x, groups, cost = _setup()
    forbidden = _ForbiddenSplit()
    ctx = registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget(metric, 0.5), min_keep_fraction=0.1,
        splits=dataclasses.replace(splits, test=forbidden), device=torch.device("cpu"), seed=0,
        options=registry.options_from_dict(method, {**FAST, "timesteps": 64, "final_rollouts": 3, **options}),
        workdir=tmp_path, arch="resnet20")
    result = registry.get_method(method)(ctx)  # reward, rollouts, final selection (and verify) all ran
    assert forbidden.reads == []
    assert _reduction(result, metric) >= 0.5 - 0.01
    assert len(list(csv.DictReader(open(tmp_path / "final_candidates.csv")))) == 4
