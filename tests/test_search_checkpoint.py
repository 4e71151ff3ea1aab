"""Search checkpoints (``agent.pt``) resume only the search that wrote them (harness.search.checkpoint).

For graph-RL, AMC and crl-neuron on a tiny ResNet and synthetic splits: re-running the same search resumes
it (the log is not recomputed); re-running with another option, a retrained base model or another search
split starts fresh with one warning line, and ends exactly where a fresh run in an empty workdir does.
"""
from __future__ import annotations

import copy
import csv
import dataclasses
import logging
import shutil
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Subset, TensorDataset

from harness import registry
from harness.data import DataConfig, build_splits
from harness.models import build_model
from harness.prune import Budget, CostModel, find_groups
from harness.search import checkpoint as search_checkpoint

registry.load_plugins()

# Each search runs in a fraction of a second; every option not named here is the method's default.
OPTIONS = {
    "graph-rl": {"episodes": 2, "update_every": 1, "ppo_epochs": 1, "layers": 1, "heads": 1, "head_dim": 8,
                 "bn_batches": 0, "eval_batch_size": 64},
    "amc": {"episodes": 3, "warmup": 1, "batch_size": 4, "hidden1": 16, "hidden2": 16, "round_to": 1,
            "calib_images": 64, "eval_batch_size": 64, "checkpoint_every": 1},
    "crl-neuron": {"timesteps": 64, "n_envs": 1, "n_steps": 32, "epochs": 2, "minibatch_size": 32, "lr": 0.01,
                   "reward_split": "search", "reward_samples": 64, "reward_batch_size": 64, "finetune_iters": [0],
                   "final_rollouts": 2, "select_bn_batches": 1, "eval_batch_size": 64, "on_infeasible": "project"},
}
# An option whose change must not resume the old search (a learning rate: the shapes still agree).
CHANGED = {"graph-rl": {"lr": 1e-3}, "amc": {"lr_actor": 1e-3}, "crl-neuron": {"lr": 0.02}}
LOGGERS = {"graph-rl": "method.search", "amc": "baselines.amc.search", "crl-neuron": "baselines.crl.search"}
METHODS = tuple(OPTIONS)


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
    model = build_model("resnet20", splits.info, width=0.25).eval()
    with torch.no_grad():  # BN affine as after training (crl: a fresh BN bias of exactly 0 counts as pruned)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.normal_(1.0, 0.1)
                m.bias.normal_(0.0, 0.1)
    x = torch.zeros(1, 3, 12, 12)
    groups = find_groups(model, x)
    return splits, model, x, groups, CostModel(model, x, groups)


@lru_cache(maxsize=None)
def _retrained() -> torch.nn.Module:
    """The base model after a retrain that changed one weight (same architecture, groups and costs)."""
    model = copy.deepcopy(_setup()[1])
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 0.05
    return model


def _ctx(method: str, workdir: Path, *, model: torch.nn.Module | None = None, splits=None,
         **options) -> registry.PruneContext:
    base_splits, base_model, x, groups, cost = _setup()
    return registry.PruneContext(
        model=model if model is not None else base_model, example_input=x, groups=groups, cost=cost,
        budget=Budget("params", 0.4), min_keep_fraction=0.1, splits=splits if splits is not None else base_splits,
        device=torch.device("cpu"), seed=0, options=registry.options_from_dict(method, {**OPTIONS[method], **options}),
        workdir=workdir, arch="resnet20")


def _run(method: str, workdir: Path, **kw):
    return registry.get_method(method)(_ctx(method, workdir, **kw))  # MethodSpec.__call__ verifies the plan


def _log(workdir: Path) -> list[dict[str, str]]:
    """The search log without its timing columns (wall_s, eval_s, refit_s differ between any two runs)."""
    rows = list(csv.DictReader(open(workdir / "search_log.csv")))
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]


def _records(caplog: pytest.LogCaptureFixture, method: str) -> tuple[list[str], list[str]]:
    """(resume lines, another-search warnings) logged while re-running ``method``."""
    resumed = [r.getMessage() for r in caplog.records if r.name == LOGGERS[method] and "resuming" in r.getMessage()]
    stale = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and "another search" in r.getMessage()]
    return resumed, stale


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[object, Path]]:
    """One finished search per method (its result and workdir); tests copy the workdir before re-running."""
    out = {}
    for method in METHODS:
        workdir = tmp_path_factory.mktemp(method)
        out[method] = (_run(method, workdir), workdir)
    return out


def _copy(finished, method: str, to: Path) -> Path:
    shutil.copytree(finished[method][1], to)
    return to


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.parametrize("method", METHODS)
def test_the_same_search_resumes(method: str, finished, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Same options, weights, budget, seed and splits: the finished search is resumed, nothing recomputed."""
    result, _ = finished[method]
    workdir = _copy(finished, method, tmp_path / "w")
    log_before = (workdir / "search_log.csv").read_text()
    caplog.set_level(logging.INFO)
    assert _run(method, workdir) == result
    resumed, stale = _records(caplog, method)
    assert len(resumed) == 1 and not stale
    assert (workdir / "search_log.csv").read_text() == log_before  # timings included: no episode re-run


@pytest.mark.parametrize("method", METHODS)
def test_another_option_starts_fresh(method: str, finished, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A changed learning rate (same shapes: the old state would load) is a fresh search, not a resumed one."""
    (name, _), = CHANGED[method].items()
    workdir = _copy(finished, method, tmp_path / "w")
    caplog.set_level(logging.INFO)
    result = _run(method, workdir, **CHANGED[method])
    resumed, stale = _records(caplog, method)
    assert not resumed and len(stale) == 1
    assert f"options ({name})" in stale[0] and "weights" not in stale[0]
    assert "\n" not in stale[0]
    fresh = _run(method, tmp_path / "fresh", **CHANGED[method])
    assert result == fresh
    assert _log(workdir) == _log(tmp_path / "fresh")
    # the new checkpoint is the new search's: the same command now resumes it
    caplog.clear()
    assert _run(method, workdir, **CHANGED[method]) == fresh
    resumed, stale = _records(caplog, method)
    assert len(resumed) == 1 and not stale


@pytest.mark.parametrize("method", METHODS)
def test_a_retrained_base_starts_fresh(method: str, finished, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The same options on a retrained base (one weight changed): no plan scored on the old weights."""
    workdir = _copy(finished, method, tmp_path / "w")
    caplog.set_level(logging.INFO)
    result = _run(method, workdir, model=_retrained())
    resumed, stale = _records(caplog, method)
    assert not resumed and len(stale) == 1
    assert "weights" in stale[0] and "options" not in stale[0]
    fresh = _run(method, tmp_path / "fresh", model=_retrained())
    assert result == fresh
    assert _log(workdir) == _log(tmp_path / "fresh")


@pytest.mark.parametrize("method", METHODS)
def test_another_search_split_starts_fresh(method: str, finished, tmp_path: Path,
                                           caplog: pytest.LogCaptureFixture) -> None:
    """The same options and weights scored on other images (e.g. another data split) is another search."""
    splits = _setup()[0]
    other = dataclasses.replace(splits, search=Subset(splits.search, list(range(1, len(splits.search)))))
    workdir = _copy(finished, method, tmp_path / "w")
    caplog.set_level(logging.INFO)
    _run(method, workdir, splits=other)
    resumed, stale = _records(caplog, method)
    assert not resumed and len(stale) == 1
    assert "search_split" in stale[0] and "weights" not in stale[0] and "options" not in stale[0]


@pytest.mark.parametrize("method", METHODS)
def test_an_old_checkpoint_without_fingerprint_is_not_resumed(method: str, tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    """A checkpoint of the previous format (no fingerprint) or a truncated one is a fresh start, never a crash."""
    fresh = _run(method, tmp_path / "fresh")
    for name, write in (("old", lambda p: torch.save({"agent": {}, "rows": [], "best": None, "episode": 1,
                                                       "update": 1}, p)),
                        ("truncated", lambda p: p.write_bytes(b"PK\x03\x04 not a checkpoint"))):
        workdir = tmp_path / name
        workdir.mkdir()
        write(workdir / "agent.pt")
        caplog.clear()
        caplog.set_level(logging.INFO)
        assert _run(method, workdir) == fresh
        resumed, _ = _records(caplog, method)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                    and "agent.pt" in r.getMessage()]
        assert not resumed and len(warnings) == 1
        assert ("no fingerprint" if name == "old" else "unreadable") in warnings[0]


# ---------------------------------------------------------------------------------------------- digests
def test_weights_digest_covers_parameters_and_buffers() -> None:
    model = _setup()[1]
    twin = copy.deepcopy(model)
    digest = search_checkpoint.weights_digest(model)
    assert search_checkpoint.weights_digest(twin) == digest  # the same weights: the same digest
    bn = next(m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d))
    with torch.no_grad():
        bn.running_mean[0] += 1e-3  # BN statistics are part of what a search scores
    assert search_checkpoint.weights_digest(twin) != digest
    twin = copy.deepcopy(model)
    bn = next(m for m in twin.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.num_batches_tracked += 1  # a 0-d integer buffer
    assert search_checkpoint.weights_digest(twin) != digest
    assert search_checkpoint.weights_digest(_retrained()) != digest
    assert search_checkpoint.weights_digest(model) == digest  # nothing above touched the base model


def test_dataset_digest_names_the_images_of_a_subset() -> None:
    root = TensorDataset(torch.zeros(10, 1), torch.zeros(10))
    digest = search_checkpoint.dataset_digest
    assert digest(Subset(root, [1, 2, 3])) == digest(Subset(root, [1, 2, 3]))  # same images, new objects
    assert digest(Subset(root, range(3))) == digest(Subset(root, [0, 1, 2]))
    assert digest(Subset(root, [1, 2, 3])) != digest(Subset(root, [1, 2, 4]))  # another subset
    assert digest(Subset(root, [1, 2, 3])) != digest(Subset(root, [3, 2, 1]))  # the order is what is scored
    assert digest(Subset(Subset(root, [5, 6, 7, 8]), [0, 2])) == digest(Subset(root, [5, 7]))  # nested subsets
    assert digest(root) != digest(TensorDataset(torch.zeros(11, 1), torch.zeros(11)))
    assert digest(None) == "none"
    splits = _setup()[0]
    assert digest(splits.search) != digest(splits.train)
    assert digest(splits.search) == digest(build_splits(DataConfig(
        name="synthetic", synthetic_train=300, synthetic_test=60, search_size=64, synthetic_classes=4,
        synthetic_image_size=12, synthetic_channels=3)).search)  # rebuilt splits: the same images


def test_fingerprint_survives_a_save_and_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Tuples, NaN and nested options compare equal after a round trip; any change of them does not."""
    @dataclasses.dataclass(frozen=True)
    class Opts:
        hidden: tuple = (32, 32)
        ratio: float = float("nan")
        name: str = "a"

    _, model, _, groups, _ = _setup()
    ctx = SimpleNamespace(model=model, options=Opts(), budget=Budget("macs", 0.5), min_keep_fraction=0.1, seed=3,
                          groups=groups, splits=SimpleNamespace(search=Subset(TensorDataset(torch.zeros(4)), [0, 1])))
    fp = search_checkpoint.fingerprint(ctx, "m", units=[("conv", 8)])
    path = tmp_path / "agent.pt"
    search_checkpoint.save(path, fp, {"x": (1, 2)})
    assert search_checkpoint.load(path, search_checkpoint.fingerprint(ctx, "m", units=[("conv", 8)]), "m") == \
        {"x": (1, 2)}
    caplog.set_level(logging.INFO)
    for other in (SimpleNamespace(**{**vars(ctx), "options": Opts(hidden=(32, 16))}),
                  SimpleNamespace(**{**vars(ctx), "seed": 4}),
                  SimpleNamespace(**{**vars(ctx), "budget": Budget("macs", 0.6)})):
        assert search_checkpoint.load(path, search_checkpoint.fingerprint(other, "m", units=[("conv", 8)]), "m") is None
    assert search_checkpoint.load(path, search_checkpoint.fingerprint(ctx, "m", units=[("conv", 4)]), "m") is None
    assert search_checkpoint.load(path, search_checkpoint.fingerprint(ctx, "n", units=[("conv", 8)]), "m") is None
    assert search_checkpoint.load(tmp_path / "missing.pt", fp, "m") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5 and all("another search" in w for w in warnings)  # the missing file is silent
    assert "options (hidden)" in warnings[0] and "seed" in warnings[1] and "budget" in warnings[2]
    assert "units" in warnings[3] and "method" in warnings[4]
