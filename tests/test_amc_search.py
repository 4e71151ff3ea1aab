"""The ``amc`` method end to end on a tiny model: verified plans, search log, determinism, resume after a kill."""
from __future__ import annotations

import copy
import csv
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from harness import registry
from harness.data import DataConfig, build_splits
from harness.errors import UserError
from harness.metrics import complexity
from harness.models import build_model
from harness.prune import Budget, CostModel, apply_plan, find_groups
from baselines.amc.search import LOG_COLUMNS

registry.load_plugins()
FAST = {"episodes": 6, "warmup": 3, "batch_size": 8, "hidden1": 32, "hidden2": 32, "round_to": 1,
        "calib_images": 64, "eval_batch_size": 64, "checkpoint_every": 1}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@lru_cache(maxsize=None)
def _setup():
    torch.manual_seed(0)
    splits = build_splits(DataConfig(name="synthetic", synthetic_train=300, synthetic_test=60, search_size=64,
                                     synthetic_classes=4, synthetic_image_size=12, synthetic_channels=3))
    model = build_model("resnet20", splits.info, width=0.5).eval()
    x = torch.zeros(1, 3, 12, 12)
    groups = find_groups(model, x)
    return splits, model, x, groups, CostModel(model, x, groups)


def _ctx(workdir: Path, *, seed: int = 0, metric: str = "macs", target: float = 0.5, **options):
    splits, model, x, groups, cost = _setup()
    return registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget(metric, target),
        min_keep_fraction=0.1, splits=splits, device=torch.device("cpu"), seed=seed,
        options=registry.options_from_dict("amc", {**FAST, **options}), workdir=workdir, arch="resnet20")


def _run(workdir: Path, **kw) -> dict:
    return registry.get_method("amc")(_ctx(workdir, **kw))  # MethodSpec.__call__ verifies the plan


def _log(workdir: Path) -> list[dict]:
    return list(csv.DictReader(open(workdir / "search_log.csv")))


def test_amc_is_registered_with_the_paper_defaults() -> None:
    spec = registry.get_method("amc")
    d = registry.options_from_dict("amc", {})
    assert spec.structured
    assert (d.episodes, d.warmup, d.state, d.reward, d.scope, d.lbound, d.round_to) == (400, 100, "paper", "err",
                                                                                      "internal", 0.2, 8)
    assert (d.hidden1, d.hidden2, d.lr_actor, d.lr_critic, d.tau, d.batch_size, d.discount) == (300, 300, 1e-4,
                                                                                              1e-3, 0.01, 64, 1.0)
    assert (d.sigma, d.sigma_decay, d.replay_size, d.bn_batches, d.reconstruct) == (0.5, 0.95, 2000, 0, True)
    for bad in ({"warmup": 6, "episodes": 6}, {"scope": "residual"}, {"lbound": 0.0}, {"state": "x"},
                {"reward": "acc"}, {"round_to": 0}, {"reconstruct": "yes"}):
        with pytest.raises(UserError):
            registry.options_from_dict("amc", bad)


@pytest.mark.parametrize("metric,target,options", [
    ("macs", 0.5, {}), ("params", 0.4, {"scope": "all", "state": "code", "reward": "param"}),
    ("macs", 0.3, {"reconstruct": False, "bn_batches": 1, "reward": "flops", "search_size": 32})])
def test_search_plans_meet_the_budget_physically(tmp_path: Path, metric: str, target: float, options: dict) -> None:
    keep = _run(tmp_path, metric=metric, target=target, **options)
    splits, model, x, groups, _ = _setup()
    if options.get("scope") != "all":
        assert all(not g.residual for g in groups if g.id in keep)  # block-internal channels only
    base = complexity(model, (3, 12, 12))
    pruned = complexity(apply_plan(copy.deepcopy(model), keep, x), (3, 12, 12))
    achieved = 1 - (pruned.macs / base.macs if metric == "macs" else pruned.params / base.params)
    assert achieved >= target - 1e-9
    rows = _log(tmp_path)
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [r["phase"] for r in rows] == ["warmup"] * 3 + ["ddpg"] * 3
    assert all(r["feasible"] == "True" and float(r[f"{metric}_reduction"]) >= target - 1e-9 for r in rows)
    best = [float(r["best_reward"]) for r in rows]
    assert best == sorted(best) and best[-1] == max(float(r["reward"]) for r in rows)
    assert [float(r["sigma"]) for r in rows[3:]] == pytest.approx([0.5, 0.475, 0.45125])


def test_reconstruction_fits_the_unpruned_layer_output(tmp_path: Path) -> None:
    """The least-squares re-fit of layer t (3x3 conv) on calibration images brings its output on held-out
    images closer to the unpruned layer's than the masked original weights do; nothing pruned, nothing re-fit."""
    import torch.nn.functional as F

    from baselines.amc.reconstruct import Reconstruction
    from baselines.amc.search import build_env

    splits, model, x, groups, cost = _setup()
    ctx = _ctx(tmp_path)
    env = build_env(ctx, ctx.options)
    rec = Reconstruction(model, x, env.layers, splits.train_plain, images=256, points=10, batch_size=64)
    la = next(la for la in env.layers if la.group.size >= 16)
    conv = model.get_submodule(la.module)
    keep = sorted(env.rank[la.group.id][: la.group.size // 2].tolist())
    refit = rec.weights({la.group.id: keep})[la.module]
    assert rec.weights({la.group.id: list(range(la.group.size))}) == {}
    inputs = []
    handle = conv.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    with torch.no_grad():
        model(torch.stack([splits.search[i][0] for i in range(64)]))
    handle.remove()
    xin = inputs[0]
    mask = torch.zeros(xin.shape[1])
    mask[keep] = 1.0
    xm = xin * mask.view(1, -1, 1, 1)
    y = F.conv2d(xin, conv.weight, None, conv.stride, conv.padding)
    err_masked = (F.conv2d(xm, conv.weight, None, conv.stride, conv.padding) - y).pow(2).mean()
    err_refit = (F.conv2d(xm, refit, None, conv.stride, conv.padding) - y).pow(2).mean()
    assert err_refit < 0.9 * err_masked
    assert (refit[:, [j for j in range(la.group.size) if j not in keep]] == 0).all()


def test_same_seed_same_plan_and_resume_after_a_kill(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    import baselines.amc.search as amc_search

    whole = _run(tmp_path / "whole", seed=1)  # a fresh workdir: the same seed gives the same plan below
    real_episode, calls = amc_search.run_episode, []

    def killed_in_episode_5(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        return real_episode(*args, **kwargs)

    monkeypatch.setattr(amc_search, "run_episode", killed_in_episode_5)
    with pytest.raises(KeyboardInterrupt):  # killed after episode 4's checkpoint (checkpoint_every 1)
        _run(tmp_path / "killed", seed=1)
    monkeypatch.setattr(amc_search, "run_episode", real_episode)
    caplog.set_level("INFO", logger="baselines.amc.search")
    assert _run(tmp_path / "killed", seed=1) == whole
    assert "amc: resuming after episode 4" in caplog.text
    cols = ("reward", "accuracy", "strategy", "best_reward")
    assert [[r[c] for c in cols] for r in _log(tmp_path / "killed")] == \
        [[r[c] for c in cols] for r in _log(tmp_path / "whole")]


def test_unreachable_budget_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="cannot reach"):
        _run(tmp_path, target=0.9)


@pytest.mark.parametrize("options", [{}, {"reconstruct": False, "bn_batches": 1}])
def test_pruned_candidates_give_the_masked_search(tmp_path: Path, options: dict) -> None:
    """Issue 13: scoring on physically pruned copies (re-fitted consumers included) changes the cost only."""
    masked = _run(tmp_path / "masked", seed=1, candidate_eval="masked", **options)
    pruned = _run(tmp_path / "pruned", seed=1, candidate_eval="pruned", **options)
    assert masked == pruned
    acc = lambda rows: [round(float(r["accuracy"]), 6) for r in rows]  # noqa: E731
    assert acc(_log(tmp_path / "masked")) == acc(_log(tmp_path / "pruned"))
    with pytest.raises(UserError, match="candidate_eval must be one of masked, pruned"):
        registry.options_from_dict("amc", {"candidate_eval": "surgery"})
