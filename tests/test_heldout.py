"""The held-out part of the search split (prune.heldout_images): methods never see it, every method and seed
loses the same images, and the final plan's score on it (plan.json meta.heldout_top1) is what an independent
computation gives. The prune CLI runs in-process on synthetic data with probe methods that record what they see.
"""
from __future__ import annotations

import argparse
import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import Subset

import harness.data
from harness import registry
from harness.cli import common, prune as prune_cli
from harness.config import load_config
from harness.data import DataConfig, build_splits, hold_out, make_loader
from harness.errors import UserError
from harness.metrics import topk_accuracy
from harness.models import build_model
from harness.prune import apply_plan
from harness.prune.unstructured import WeightSparsity, apply_sparsity, from_meta
from harness.train import recalibrate_bn

ROOT = Path(__file__).resolve().parents[1]
DATA = dict(name="synthetic", synthetic_train=400, synthetic_test=60, search_size=128, synthetic_classes=4,
            synthetic_image_size=12, synthetic_channels=3)
HELDOUT, BN_BATCHES = 48, 1
SEEN: list[dict] = []  # what the probe methods saw, one entry per call


def _root_indices(ds) -> list[int]:
    """Indices of a (nested) Subset into its root dataset."""
    idx = None
    while isinstance(ds, Subset):
        here = np.asarray(ds.indices)
        idx = here if idx is None else here[idx]
        ds = ds.dataset
    return [int(i) for i in idx]


def _record(ctx: registry.PruneContext, tag: str) -> None:
    SEEN.append({"tag": tag, "seed": ctx.seed, "search": _root_indices(ctx.splits.search),
                 "search_indices": [int(i) for i in ctx.splits.search_indices]})


@dataclass(frozen=True)
class ProbeOptions:
    delegate: str = "l1-uniform"


@registry.register_method("test-heldout-probe", options=ProbeOptions)
def _probe(ctx: registry.PruneContext):
    """Records ctx.splits, then prunes as ``delegate`` does."""
    _record(ctx, ctx.options.delegate)
    spec = registry.get_method(ctx.options.delegate)
    return spec.fn(replace(ctx, options=registry.options_from_dict(ctx.options.delegate, {})))


@registry.register_method("test-heldout-sparse", structured=False, budget_metrics=("params",))
def _sparse(ctx: registry.PruneContext):
    """Records ctx.splits, then zeroes 60 % of every conv's weights (an unstructured plan)."""
    _record(ctx, "sparse")
    return WeightSparsity({name: int(0.6 * m.weight.numel()) for name, m in ctx.model.named_modules()
                           if isinstance(m, torch.nn.Conv2d)})


class _ForbiddenSplit:
    """Stands in for ``splits.test``: any use fails the test."""

    def __len__(self):
        raise AssertionError("the prune stage read the test split")

    def __getitem__(self, i):
        raise AssertionError("the prune stage read the test split")

    def __getattr__(self, name):
        raise AssertionError(f"the prune stage read the test split ({name})")


def _spec(**prune) -> dict:
    return {"dataset": DATA, "arch": "resnet20", "arch_options": {"width": 0.25}, "method_packages": ["baselines"],
            "method_options": {}, "prune": {"min_keep_fraction": 0.1, "tolerance": 0.01, "scope": "all",
                                            "heldout_images": HELDOUT, "heldout_bn_batches": BN_BATCHES, **prune}}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A briefly trained base model (above chance, so held-out scores differ between plans)."""
    splits = build_splits(DataConfig(**DATA))
    torch.manual_seed(0)
    model = build_model("resnet20", splits.info, width=0.25)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for epoch in range(4):
        for x, y in make_loader(splits.train, 32, shuffle=True, seed=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    path = tmp_path_factory.mktemp("base") / "model.pt"
    common.save_base(model.eval(), _spec(), path)
    return path


def _prune(tmp: Path, base: Path, method: str, *, seed: int = 0, metric: str = "macs", target: float = 0.5,
           options: dict | None = None, monkeypatch: pytest.MonkeyPatch | None = None, **prune) -> dict:
    if monkeypatch is not None:  # the test split of the prune stage is poisoned
        real = harness.data.build_splits
        monkeypatch.setattr(harness.data, "build_splits", lambda cfg: replace(real(cfg), test=_ForbiddenSplit()))
    out = tmp / f"{method}-{seed}-{metric}" / "plan.json"
    args = argparse.Namespace(method=method, metric=metric, target=target, seed=seed, base=str(base), out=str(out),
                              workdir=str(out.parent / "work"), search_log=None)
    spec = {**_spec(**prune), "method_options": options or {}}
    prune_cli.main(args, spec)
    return json.loads(out.read_text())


def _independent_heldout_top1(plan: dict, base: Path, seen_search: list[int]) -> tuple[float, int]:
    """The plan's model, BN re-estimated on the first batches of train_plain, scored on the search images the
    method did not see: built here from build_splits, not from hold_out or the CLI."""
    splits = build_splits(DataConfig(**DATA))
    positions = [p for p, i in enumerate(splits.search_indices) if int(i) not in set(seen_search)]
    heldout = Subset(splits.search, positions)
    keep = {g["id"]: g["keep"] for g in plan["groups"]}
    model = common.load_base(_spec(), splits.info, base)
    x = common.example_input(splits.info)
    pruned = apply_plan(copy.deepcopy(model), keep, x)
    sparsity = from_meta(plan["meta"])
    if sparsity is not None:
        pruned = apply_sparsity(pruned, sparsity)
    recalibrate_bn(pruned, make_loader(splits.train_plain, 256, shuffle=True, seed=0), BN_BATCHES, "cpu")
    return topk_accuracy(pruned, make_loader(heldout, 100, shuffle=False, seed=0), "cpu", ks=(1,))["top1"], len(positions)


# ------------------------------------------------------------------------------------------------ hold_out
def test_hold_out_is_a_fixed_disjoint_part_of_the_search_split() -> None:
    splits = build_splits(DataConfig(**DATA))
    kept, held = hold_out(splits, HELDOUT)
    again, held_again = hold_out(build_splits(DataConfig(**DATA)), HELDOUT)
    seen, out = set(_root_indices(kept.search)), set(_root_indices(held))
    assert len(out) == HELDOUT and len(seen) == len(splits.search) - HELDOUT
    assert not seen & out and seen | out == {int(i) for i in splits.search_indices}
    assert _root_indices(kept.search) == [int(i) for i in kept.search_indices]  # indices follow the split
    assert _root_indices(held) == _root_indices(held_again) and _root_indices(again.search) == sorted(seen)
    assert not out & {int(i) for i in splits.train_indices}  # still a part of the search split only
    assert kept.train is splits.train and kept.test is splits.test and kept.train_plain is splits.train_plain
    # not just the largest indices: the split is sorted by training-set index, which may follow the classes
    assert sorted(out) != sorted(int(i) for i in splits.search_indices)[-HELDOUT:]
    # a larger held-out part contains the smaller one; 0 leaves the splits alone
    assert out <= set(_root_indices(hold_out(splits, 2 * HELDOUT)[1]))
    assert hold_out(splits, 0) == (splits, None)


@pytest.mark.parametrize("n", [128, 129, 1000])
def test_too_many_heldout_images_is_one_line(n: int) -> None:
    splits = build_splits(DataConfig(**DATA))
    with pytest.raises(UserError) as exc:
        hold_out(splits, n)
    assert "heldout_images" in str(exc.value) and "\n" not in str(exc.value)


def test_config_rejects_a_heldout_part_as_large_as_the_search_split() -> None:
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    size = smoke["data"]["synthetic"]["search_size"]
    assert 0 < smoke["prune"]["heldout_images"] < size  # the preset itself is valid
    load_config(smoke, check_data=False)
    for n in (size, size + 1):
        with pytest.raises(UserError) as exc:
            load_config({**smoke, "prune": {**smoke["prune"], "heldout_images": n}}, check_data=False)
        msg = str(exc.value)
        assert "prune.heldout_images" in msg and str(size) in msg and "\n" not in msg
    off = load_config({**smoke, "prune": {**smoke["prune"], "heldout_images": 0}}, check_data=False)
    assert off.raw["prune"]["heldout_images"] == 0
    # the schema's default (1000) applies when the key is absent, and is checked the same way
    no_key = {k: v for k, v in smoke["prune"].items() if k != "heldout_images"}
    with pytest.raises(UserError, match="heldout_images: 1000"):
        load_config({**smoke, "prune": no_key}, check_data=False)
    with pytest.raises(UserError, match="heldout_bn_batches"):
        load_config({**smoke, "prune": {**smoke["prune"], "heldout_bn_batches": -1}}, check_data=False)


# ------------------------------------------------------------------------------------------ the prune CLI
def test_methods_never_see_the_heldout_images_and_all_lose_the_same(tmp_path: Path, base: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    SEEN.clear()
    plans = [_prune(tmp_path, base, "test-heldout-probe", seed=0, monkeypatch=monkeypatch),
             _prune(tmp_path, base, "test-heldout-probe", seed=1),
             _prune(tmp_path, base, "test-heldout-probe", seed=0, options={"delegate": "random"}, target=0.3),
             _prune(tmp_path, base, "test-heldout-sparse", seed=2, metric="params", target=0.4)]
    assert [(s["tag"], s["seed"]) for s in SEEN] == [("l1-uniform", 0), ("l1-uniform", 1), ("random", 0),
                                                     ("sparse", 2)]
    full = {int(i) for i in build_splits(DataConfig(**DATA)).search_indices}
    for seen in SEEN:
        assert seen["search"] == SEEN[0]["search"]  # the same images for every method and seed
        assert seen["search_indices"] == seen["search"]  # search_indices names exactly the images of search
        assert len(seen["search"]) == len(full) - HELDOUT and set(seen["search"]) < full
    for plan in plans:
        assert plan["meta"]["heldout_images"] == HELDOUT
        top1 = plan["meta"]["heldout_top1"]
        assert isinstance(top1, float) and 0.0 <= top1 <= 100.0
        expected, n = _independent_heldout_top1(plan, base, SEEN[0]["search"])
        assert n == HELDOUT
        assert top1 == pytest.approx(expected, abs=1e-9)
    assert from_meta(plans[-1]["meta"]) is not None  # the unstructured plan was scored with its sparsity


def test_heldout_off_and_too_large(tmp_path: Path, base: Path) -> None:
    SEEN.clear()
    plan = _prune(tmp_path, base, "test-heldout-probe", heldout_images=0)
    assert plan["meta"]["heldout_top1"] is None and plan["meta"]["heldout_images"] == 0
    assert len(SEEN[0]["search"]) == DATA["search_size"]  # the method sees the whole search split
    SEEN.clear()
    with pytest.raises(UserError) as exc:
        _prune(tmp_path / "big", base, "test-heldout-probe", heldout_images=DATA["search_size"])
    assert "heldout_images" in str(exc.value) and "\n" not in str(exc.value)
    assert SEEN == []  # refused before the method ran
    assert not (tmp_path / "big").exists() or not list((tmp_path / "big").rglob("plan.json"))
