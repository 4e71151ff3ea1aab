"""The graph-RL search end to end on a tiny model: feasible plans, determinism, resume after a kill."""
from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import pytest
import torch

from harness import registry
from harness.data import DataConfig, build_splits
from harness.errors import UserError
from harness.models import build_model
from harness.prune import Budget, CostModel, apply_plan, find_groups
from harness.metrics import complexity

registry.load_plugins()
FAST = {"episodes": 6, "update_every": 3, "ppo_epochs": 2, "layers": 1, "heads": 1, "head_dim": 8,
        "bn_batches": 1, "eval_batch_size": 64}


@lru_cache(maxsize=None)
def _setup():
    torch.manual_seed(0)
    splits = build_splits(DataConfig(name="synthetic", synthetic_train=300, synthetic_test=60, search_size=64,
                                     synthetic_classes=4, synthetic_image_size=12, synthetic_channels=3))
    model = build_model("resnet20", splits.info, width=0.25).eval()
    x = torch.zeros(1, 3, 12, 12)
    groups = find_groups(model, x)
    return splits, model, x, groups, CostModel(model, x, groups)


def _run(workdir: Path, *, seed: int = 0, metric: str = "macs", target: float = 0.5, **options) -> dict:
    splits, model, x, groups, cost = _setup()
    ctx = registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget(metric, target),
        min_keep_fraction=0.1, splits=splits, device=torch.device("cpu"), seed=seed,
        options=registry.options_from_dict("graph-rl", {**FAST, **options}), workdir=workdir, arch="resnet20")
    return registry.get_method("graph-rl")(ctx)  # MethodSpec.__call__ verifies the plan against the budget


def test_graph_rl_is_registered_with_the_spec_defaults() -> None:
    spec = registry.get_method("graph-rl")
    defaults = registry.options_from_dict("graph-rl", {})
    assert spec.structured
    assert (defaults.encoder, defaults.action, defaults.heads, defaults.head_dim, defaults.layers) == ("gat", "binary", 4, 64, 3)
    assert (defaults.clip, defaults.lr, defaults.gamma) == (0.2, 3e-4, 1.0)
    # issue 12's learning-signal defaults, each with the spec's value selectable (docs/graph-rl.md)
    assert (defaults.gae_lambda, defaults.reward, defaults.wall_reserve, defaults.fill) == (1.0, "spread", 1.0, True)
    assert (defaults.ppo_ratio, defaults.ppo_action, defaults.opening_bar) == ("per-element", "sampled", "none")
    spec = registry.options_from_dict("graph-rl", {"gae_lambda": 0.95, "reward": "self", "wall_reserve": 0.0,
                                                   "fill": False, "ppo_ratio": "joint", "opening_bar": "l1-uniform",
                                                   "feature_skip": False})
    assert spec.reward == "self" and not spec.feature_skip


@pytest.mark.parametrize("metric,target", [("macs", 0.3), ("macs", 0.6), ("params", 0.5)])
def test_search_plans_meet_the_budget_physically(tmp_path: Path, metric: str, target: float) -> None:
    keep = _run(tmp_path, metric=metric, target=target)
    _, model, x, groups, _ = _setup()
    import copy

    base = complexity(model, (3, 12, 12))
    pruned = complexity(apply_plan(copy.deepcopy(model), keep, x), (3, 12, 12))
    achieved = 1 - (pruned.macs / base.macs if metric == "macs" else pruned.params / base.params)
    assert achieved >= target - 0.01
    rows = list(csv.DictReader(open(tmp_path / "search_log.csv")))
    assert len(rows) == FAST["episodes"]
    assert all(r["feasible"] == "True" for r in rows)
    best = [float(r["best_accuracy"]) for r in rows]
    assert best == sorted(best)


def test_same_seed_same_plan(tmp_path: Path) -> None:
    assert _run(tmp_path / "a", seed=3) == _run(tmp_path / "b", seed=3)


def test_pruned_candidates_give_the_masked_search(tmp_path: Path) -> None:
    """Issue 13: scoring on physically pruned copies changes a candidate's cost, not the search."""
    assert _run(tmp_path / "a", seed=2, candidate_eval="masked") == _run(tmp_path / "b", seed=2, candidate_eval="pruned")
    rewards = [[r["accuracy"] for r in csv.DictReader(open(tmp_path / d / "search_log.csv"))] for d in "ab"]
    assert rewards[0] == rewards[1]
    with pytest.raises(UserError, match="candidate_eval must be one of masked, pruned"):
        registry.options_from_dict("graph-rl", {"candidate_eval": "surgery"})


class _Killed(Exception):
    pass


def test_killed_search_resumes_to_the_same_plan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """A search stopped after its first PPO update and restarted ends where an uninterrupted one does."""
    import method.search as search

    whole = _run(tmp_path / "whole", seed=1)
    real_save = search.search_checkpoint.save

    def save_then_die(*args, **kwargs):  # the job is killed right after the first checkpoint
        real_save(*args, **kwargs)
        raise _Killed

    monkeypatch.setattr(search.search_checkpoint, "save", save_then_die)
    with pytest.raises(_Killed):
        _run(tmp_path / "killed", seed=1)
    monkeypatch.setattr(search.search_checkpoint, "save", real_save)
    with caplog.at_level("INFO", logger="method.search"):
        resumed = _run(tmp_path / "killed", seed=1)
    assert "resuming after episode 3" in caplog.text
    assert resumed == whole
    log_whole = [r["accuracy"] for r in csv.DictReader(open(tmp_path / "whole" / "search_log.csv"))]
    log_resumed = [r["accuracy"] for r in csv.DictReader(open(tmp_path / "killed" / "search_log.csv"))]
    assert log_resumed == log_whole


def test_greedy_final_scores_the_policys_mode_once_and_never_learns_from_it(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """greedy_final: the last of the `episodes` candidates is the policy's mode; PPO sees only sampled episodes."""
    from harness.search.ppo import PPO
    from method.policy import GraphPolicy

    acts: list[bool] = []
    learned: list[int] = []
    real_act, real_update = GraphPolicy.act, PPO.update

    def act(self, out, gi=None, *, deterministic=False, generator=None):
        acts.append(deterministic)
        return real_act(self, out, gi, deterministic=deterministic, generator=generator)

    def update(self, buffer):
        learned.append(len(buffer))
        return real_update(self, buffer)

    monkeypatch.setattr(GraphPolicy, "act", act)
    monkeypatch.setattr(PPO, "update", update)
    _run(tmp_path / "g", seed=1)  # the default
    steps = len(_setup()[3])  # one step per group (sequential mode)
    rows = list(csv.DictReader(open(tmp_path / "g" / "search_log.csv")))
    assert len(rows) == FAST["episodes"]  # the greedy episode is one of the candidates, not an extra one
    assert acts == [False] * (FAST["episodes"] - 1) * steps + [True] * steps
    assert learned == [3 * steps, 2 * steps]  # updates after episodes 3 and 5; episode 6 is never learned from
    acts.clear(), learned.clear()
    _run(tmp_path / "s", seed=1, greedy_final=False)
    assert not any(acts) and learned == [3 * steps, 3 * steps]
    acts.clear(), learned.clear()
    _run(tmp_path / "one", seed=1, episodes=1)  # one episode: nothing to learn from, so it samples
    assert not any(acts) and learned == [steps]


@pytest.mark.parametrize("options", [{"mode": "one-shot"}, {"action": "ratio"}, {"encoder": "mlp"},
                                     {"observation": "layer-vector"}, {"reward": "ranked"}])
def test_ablations_run_and_stay_feasible(tmp_path: Path, options: dict) -> None:
    keep = _run(tmp_path, **options)
    assert keep


def test_opening_plan_is_returned_when_no_episode_beats_it(tmp_path: Path) -> None:
    """With a one-episode search the L1-uniform opening plan usually stays best; then it is the output."""
    keep = _run(tmp_path / "g", seed=0, episodes=1, update_every=1, opening_bar="l1-uniform")
    rows = list(csv.DictReader(open(tmp_path / "g" / "search_log.csv")))
    splits, model, x, groups, cost = _setup()
    ctx = registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget("macs", 0.5), min_keep_fraction=0.1,
        splits=splits, device=torch.device("cpu"), seed=0, options=registry.options_from_dict("l1-uniform", {}),
        workdir=tmp_path / "l1", arch="resnet20")
    l1 = registry.get_method("l1-uniform")(ctx)
    if rows[-1]["best_is_opening"] == "True":
        assert keep == {k: list(v) for k, v in l1.items()}
    else:  # the episode beat the bar: then the returned plan is the episode's, and better than the bar
        assert keep != l1 and float(rows[-1]["best_accuracy"]) == float(rows[-1]["accuracy"])
    # without the opening plan as a candidate, the output is always the agent's own
    keep_agent = _run(tmp_path / "a", seed=0, episodes=1, update_every=1, opening_bar="l1-uniform",
                      opening_plan_is_candidate=False)
    rows = list(csv.DictReader(open(tmp_path / "a" / "search_log.csv")))
    assert rows[-1]["best_is_opening"] == "False"
    assert float(rows[-1]["best_accuracy"]) == float(rows[-1]["accuracy"])
    assert keep_agent is not None


def test_initial_keep_sets_how_much_the_first_episodes_keep(tmp_path: Path) -> None:
    fractions = {}
    for p in (0.3, 0.9):
        _run(tmp_path / str(p), seed=0, episodes=2, update_every=2, target=0.1, initial_keep=p, fill=False)
        rows = list(csv.DictReader(open(tmp_path / str(p) / "search_log.csv")))
        fractions[p] = sum(float(r["keep_fraction"]) for r in rows) / len(rows)
    # a loose budget (10 % of MACs) leaves the sampled masks alone: the keep fraction follows p
    assert fractions[0.3] < 0.5 < fractions[0.9]
    with pytest.raises(Exception, match="initial_keep"):
        registry.options_from_dict("graph-rl", {"initial_keep": 1.5})


def test_search_images_scores_on_a_fixed_subset(tmp_path: Path) -> None:
    from harness.search.subset import search_subset as _search_subset

    splits = _setup()[0]
    sub = _search_subset(splits, 16)
    assert len(sub.search) == 16 and len(splits.search) == 64
    again = _search_subset(splits, 16)
    assert list(sub.search.indices) == list(again.search.indices)  # the same subset for every seed and run
    assert _search_subset(splits, 0) is splits and _search_subset(splits, 1000) is splits
    keep = _run(tmp_path, search_images=16)
    assert keep  # a verified plan from the cut search split
