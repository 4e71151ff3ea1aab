"""The planted-ground-truth benchmark: construction, ground truth, base stage, useful recall, DAG and figure.

harness/models/planted.py widens a trained CIFAR ResNet with large-norm decoys that never reach the output;
these tests check the function is unchanged, every filter-L1 ranking puts every decoy above every useful
channel in every group, and the ground truth flows from train_base (ground_truth.json) through evaluate
(useful_recall) into the tables and the figure.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from harness.errors import UserError
from harness.models import build_model, known_arch, planted_options
from harness.models.cifar_resnet import CifarResNet
from harness.models.planted import (GROUND_TRUTH_FORMAT, PlantOptions, inner_arch, is_planted, plant,
                                    read_ground_truth, stage_widths, useful_counts, useful_only_reduction,
                                    useful_recall)
from harness.prune import CostModel, channel_l1, find_groups

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def info(in_channels: int = 3, num_classes: int = 10) -> types.SimpleNamespace:
    return types.SimpleNamespace(name="stand-in", num_classes=num_classes, in_channels=in_channels)


def trained_like(depth: int, width: float, in_channels: int = 3, seed: int = 0) -> CifarResNet:
    """A random ResNet with non-trivial BN: running statistics from data, affine parameters away from 1/0."""
    torch.manual_seed(seed)
    model = CifarResNet(depth, num_classes=10, in_channels=in_channels, width=width)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, in_channels, 16, 16) * 2 + 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return model.eval()


def calibration(in_channels: int = 3, batches: int = 3) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(16, in_channels, 16, 16, generator=gen) for _ in range(batches)]


@pytest.fixture(scope="module")
def planted20() -> tuple[CifarResNet, CifarResNet, dict[str, list[int]]]:
    small = trained_like(20, 0.5)
    wide, truth = plant(small, 10, 3, PlantOptions(seed=3), calibration(), width=0.5)
    return small, wide, truth


# ------------------------------------------------------------------------------------------ construction
@pytest.mark.parametrize(("depth", "width", "ratio"), [(8, 0.5, 1.0), (8, 0.25, 2.0), (14, 0.5, 0.5), (20, 0.5, 1.0)])
def test_planting_preserves_the_function(depth: int, width: float, ratio: float) -> None:
    small = trained_like(depth, width)
    wide, _ = plant(small, 10, 3, PlantOptions(decoy_ratio=ratio, seed=0), calibration(), width=width)
    useful, total = stage_widths(width, ratio)
    assert wide.conv1.out_channels == total[0] and wide.layer3[0].conv2.out_channels == total[2]
    x = torch.randn(8, 3, 16, 16) * 1.5
    with torch.no_grad():
        diff = (wide(x) - small(x)).abs().max().item()
        scale = small(x).abs().max().item()
    assert diff < 1e-4, diff
    assert scale > 0.1  # not a trivially zero network


def test_every_decoy_outranks_every_useful_channel_by_filter_l1(planted20) -> None:
    _, wide, truth = planted20
    example = torch.zeros(1, 3, 16, 16)
    groups = find_groups(wide, example)
    l1 = channel_l1(wide, example, groups)
    assert {g.id for g in groups} == set(truth)
    residual = 0
    for g in groups:
        useful = torch.tensor(truth[g.id])
        decoy = torch.tensor([i for i in range(g.size) if i not in set(truth[g.id])])
        assert len(decoy) > 0
        assert l1[g.id][decoy].min() > l1[g.id][useful].max(), g.id
        residual += g.residual
    assert residual == 3  # the three residual streams are planted too


def test_ground_truth_covers_every_group_with_the_right_counts(planted20) -> None:
    _, wide, truth = planted20
    example = torch.zeros(1, 3, 16, 16)
    groups = find_groups(wide, example)
    useful, total = stage_widths(0.5, 1.0)
    assert useful == (8, 16, 32) and total == (16, 32, 64)
    counts = useful_counts(wide, [g.id for g in groups], 0.5)
    for g in groups:
        idx = truth[g.id]
        assert idx == sorted(set(idx)) and all(0 <= i < g.size for i in idx)
        assert len(idx) == counts[g.id] == g.size // 2
    # the useful-only plan keeps a quarter of most convs: about 3/4 of MACs and params removed
    cost = CostModel(wide, example, groups)
    assert useful_only_reduction(cost, truth, "macs") == pytest.approx(useful_only_reduction(cost, counts, "macs"))
    assert 0.7 < useful_only_reduction(cost, truth, "macs") < 0.8
    assert 0.7 < useful_only_reduction(cost, truth, "params") < 0.8


def test_pruning_exactly_the_decoys_keeps_the_function(planted20) -> None:
    import copy

    from harness.prune import apply_plan

    small, wide, truth = planted20
    pruned = apply_plan(copy.deepcopy(wide), truth, torch.zeros(1, 3, 16, 16)).eval()
    assert pruned.conv1.out_channels == small.conv1.out_channels
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert (pruned(x) - small(x)).abs().max().item() < 1e-4


def test_useful_recall_on_hand_made_plans() -> None:
    truth = {"a": [0, 2], "b": [1, 3, 5, 7]}
    assert useful_recall({"a": [0, 1, 2, 3], "b": [1, 3, 5, 7]}, truth) == 1.0
    assert useful_recall({"a": [1, 3], "b": [0, 2]}, truth) == 0.0
    assert useful_recall({"a": [0], "b": [1, 2]}, truth) == pytest.approx(2 / 6)
    assert useful_recall({"b": [7]}, truth) == pytest.approx(3 / 6)  # a group left out keeps every channel
    with pytest.raises(UserError):
        useful_recall({}, {"a": []})


# ------------------------------------------------------------------------------------------ model zoo
def test_planted_archs_build_the_wide_shape_and_load_planted_weights(planted20) -> None:
    _, wide, _ = planted20
    assert known_arch("planted-resnet20") and known_arch("planted-resnet110")
    assert not known_arch("planted-vgg16") and not known_arch("planted-resnet21")
    assert is_planted("planted-resnet56") and inner_arch("planted-resnet56") == "resnet56"
    model = build_model("planted-resnet20", info(), width=0.5, decoy_ratio=1.0, useful_scale=0.25, decoy_norm=1.0)
    model.load_state_dict(wide.state_dict())  # the base stage's model.pt loads into build_model's shape
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), wide(x))
    default = build_model("planted-resnet20", info(1, 7))  # width 1.0, one decoy per useful channel
    assert default.conv1.out_channels == 32 and default.fc.in_features == 128 and default.fc.out_features == 7


@pytest.mark.parametrize(("options", "match"), [
    ({"decoys": 1.0}, "unknown option"), ({"decoy_ratio": 0}, "decoy_ratio"), ({"useful_scale": 1.5}, "useful_scale"),
    ({"width": -1}, "width"), ({"decoy_norm": "big"}, "decoy_norm"), ({"pretrained": True}, "pretrained"),
])
def test_bad_planted_options_are_one_line_errors(options: dict, match: str) -> None:
    with pytest.raises(UserError, match=match) as err:
        planted_options("planted-resnet20", options)
    assert "\n" not in str(err.value)


def _planted_config(**changes) -> dict:
    config = yaml.safe_load((ROOT / "config" / "planted.yaml").read_text())
    config.update(changes)
    return config


def test_config_rejects_bad_planted_input_in_one_line() -> None:
    from harness.config import load_config

    exp = _planted_config()["experiments"][0]
    cases = {
        "planted-vgg16": ({**exp, "arch": "planted-vgg16"}, "decoys are planted only in CIFAR ResNets"),
        "bad option": ({**exp, "arch_options": {"width": 0.5, "decoy_count": 3}}, "unknown option(s) for"),
        "pretrained": ({**exp, "train": "pretrained"}, "trains its inner network"),
    }
    for case, (experiment, expected) in cases.items():
        with pytest.raises(UserError) as err:
            load_config(_planted_config(experiments=[experiment]), check_data=False)
        assert expected in str(err.value) and "\n" not in str(err.value), case
    with pytest.raises(UserError, match="planted-resnetN"):
        load_config(_planted_config(experiments=[{**exp, "arch": "resnet21"}]), check_data=False)


def test_config_reports_which_budgets_can_keep_every_useful_channel() -> None:
    from harness.config import load_config, planted_feasibility, planted_report

    wf = load_config(_planted_config(), check_data=False)
    rows = {r.budget.tag: r for r in planted_feasibility(wf)}
    assert set(rows) == {"macs-0.6", "params-0.85"}
    assert rows["macs-0.6"].feasible and not rows["params-0.85"].feasible
    assert rows["macs-0.6"].useful_only_reduction == pytest.approx(0.749, abs=0.002)
    assert rows["params-0.85"].useful_only_reduction == pytest.approx(0.748, abs=0.002)
    (line,) = planted_report(wf)
    assert "can keep every useful channel: macs-0.6" in line and "cannot: params-0.85" in line
    # one side only is not an error: it loads, and the report says so
    one_side = load_config(_planted_config(budgets=[{"metric": "params", "target": 0.85}],
                                           methods={"l1-uniform": {}, "random": {}}, figures={}), check_data=False)
    assert [r.feasible for r in planted_feasibility(one_side)] == [False]
    quick = load_config(yaml.safe_load((ROOT / "config" / "quick.yaml").read_text()), check_data=False)
    assert planted_feasibility(quick) == [] and planted_report(quick) == []


# ------------------------------------------------------------------------------------------ base + evaluate CLIs
def _spec(tmp_path: Path) -> dict:
    from harness.config import job_spec, load_config

    config = _planted_config(
        data_root=str(tmp_path / "data"), results_dir=str(tmp_path / "results"), seeds=[0],
        data={"synthetic": {"synthetic_train": 300, "synthetic_test": 100, "search_size": 60,
                            "synthetic_image_size": 16, "synthetic_classes": 4, "synthetic_channels": 3}},
        experiments=[{"dataset": "synthetic", "arch": "planted-resnet20", "arch_options": {"width": 0.25},
                      "train": "tiny", "finetune": "tiny"}],
        budgets=[{"metric": "macs", "target": 0.5}], methods={"l1-uniform": {}}, figures={},
        recipes={"tiny": {"epochs": 1, "batch_size": 50, "lr": 0.05, "max_batches_per_epoch": 3}},
        prune={"min_keep_fraction": 0.1, "tolerance": 0.01, "scope": "all", "heldout_images": 20},
        evaluate={"batch_size": 100},
    )
    return json.loads(job_spec(load_config(config, check_data=False), "synthetic", "planted-resnet20"))


@pytest.fixture(scope="module")
def planted_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from harness.cli import train_base

    tmp = tmp_path_factory.mktemp("planted_base")
    spec = _spec(tmp)
    base = tmp / "base"
    args = argparse.Namespace(seed=0, out=str(base / "model.pt"), metrics=str(base / "metrics.json"),
                              log_csv=str(base / "train_log.csv"), checkpoint_dir=str(tmp / "ckpt"),
                              ground_truth=str(base / "ground_truth.json"))
    torch.set_num_threads(1)
    train_base.main(args, spec)
    return base, spec


def test_train_base_plants_and_writes_the_ground_truth(planted_base) -> None:
    from harness.cli.common import load_base

    base, spec = planted_base
    gt = json.loads((base / "ground_truth.json").read_text())
    assert gt["format"] == GROUND_TRUTH_FORMAT and gt["arch"] == "planted-resnet20" and gt["inner_arch"] == "resnet20"
    assert gt["options"] == {"width": 0.25, "decoy_ratio": 1.0, "useful_scale": 0.25, "decoy_norm": 1.0, "seed": 0}
    assert gt["max_logit_diff"] < 1e-3
    assert list(gt["useful"]) == list(gt["group_sizes"]) and len(gt["useful"]) == 12
    assert all(len(v) == gt["group_sizes"][g] // 2 for g, v in gt["useful"].items())
    assert 0.7 < gt["useful_only"]["macs_reduction"] < 0.8
    metrics = json.loads((base / "metrics.json").read_text())
    assert metrics["useful_only_macs_reduction"] == gt["useful_only"]["macs_reduction"]
    assert {"top1", "top5", "search_top1", "macs", "params", "train_wall_s"} <= set(metrics)
    info = types.SimpleNamespace(num_classes=4, in_channels=3)
    model = load_base(spec, info, base / "model.pt")  # build_model's planted shape takes the planted weights
    assert model.conv1.out_channels == 8  # inner width 0.25 (4 channels) + as many decoys
    truth = read_ground_truth(base / "ground_truth.json")
    example = torch.zeros(1, 3, 16, 16)
    l1 = channel_l1(model, example, find_groups(model, example))
    for gid, useful in truth.items():
        decoy = [i for i in range(len(l1[gid])) if i not in set(useful)]
        assert l1[gid][decoy].min() > l1[gid][useful].max(), gid
    assert not (base.parent / "ckpt").exists()  # checkpoints removed once every output is written


def test_train_base_refuses_a_planted_arch_without_the_ground_truth_path(planted_base, tmp_path: Path) -> None:
    from harness.cli import train_base

    _, spec = planted_base
    args = argparse.Namespace(seed=0, out=str(tmp_path / "m.pt"), metrics=str(tmp_path / "m.json"),
                              log_csv=str(tmp_path / "l.csv"), checkpoint_dir=str(tmp_path / "c"), ground_truth=None)
    with pytest.raises(UserError, match="--ground-truth is required"):
        train_base.main(args, spec)


def _evaluate(base: Path, spec: dict, run: Path, keep: dict, *, structured: bool = True,
              ground_truth: bool = True) -> dict:
    from harness.cli import evaluate
    from harness.cli.common import load_base
    from harness.prune import Budget, PruningPlan, apply_plan, save_pruned

    info = types.SimpleNamespace(num_classes=4, in_channels=3)
    model = load_base(spec, info, base / "model.pt")
    example = torch.zeros(1, 3, 16, 16)
    groups = find_groups(model, example)
    plan = PruningPlan.from_keep(method="hand", dataset="synthetic", arch=spec["arch"], seed=0,
                                 budget=Budget("macs", 0.5), groups=groups, keep=keep,
                                 meta={"structured": structured})
    run.mkdir(parents=True)
    plan.to_json(run / "plan.json")
    save_pruned(apply_plan(model, plan, example), run / "finetuned.pt")
    (run / "finetune.json").write_text(json.dumps({"finetune_epochs": 0, "finetune_wall_s": 0.0}))
    args = argparse.Namespace(seed=0, base_metrics=str(base / "metrics.json"), plan=str(run / "plan.json"),
                              model=str(run / "finetuned.pt"), finetune_info=str(run / "finetune.json"),
                              out=str(run / "metrics.json"),
                              ground_truth=str(base / "ground_truth.json") if ground_truth else None)
    evaluate.main(args, spec)
    return json.loads((run / "metrics.json").read_text())


def test_evaluate_writes_useful_recall(planted_base, tmp_path: Path) -> None:
    from harness.results import validate_record

    base, spec = planted_base
    truth = read_ground_truth(base / "ground_truth.json")
    sizes = json.loads((base / "ground_truth.json").read_text())["group_sizes"]
    # keeping exactly the useful channels: recall 1 and the unpruned accuracy (the decoys never reach the output)
    rec = _evaluate(base, spec, tmp_path / "useful", truth)
    assert rec["useful_recall"] == 1.0
    assert rec["top1"] == pytest.approx(json.loads((base / "metrics.json").read_text())["top1"])
    assert validate_record(rec)["useful_recall"] == 1.0
    # decoys plus one useful channel per group
    keep = {g: sorted({i for i in range(sizes[g]) if i not in set(u)} | {u[0]}) for g, u in truth.items()}
    rec = _evaluate(base, spec, tmp_path / "decoys", keep)
    assert rec["useful_recall"] == pytest.approx(len(truth) / sum(len(u) for u in truth.values()))
    # unstructured plans and runs without a ground truth: null
    assert _evaluate(base, spec, tmp_path / "unstructured", truth, structured=False)["useful_recall"] is None
    rec = _evaluate(base, spec, tmp_path / "plain", truth, ground_truth=False)
    assert rec["useful_recall"] is None and np.isnan(validate_record(rec)["useful_recall"])


# ------------------------------------------------------------------------------------------ tables and figure
def _run_row(method: str, metric: str, target: float, seed: int, recall: float | None, top1: float,
             heldout: float | None = None) -> dict:
    row = {"dataset": "fashionmnist", "arch": "planted-resnet20", "method": method, "structured": recall is not None,
           "budget_metric": metric, "budget_target": target, "seed": seed, "base_top1": 90.0, "top1": top1,
           "useful_recall": recall}
    if heldout is not None:
        row["heldout_top1"] = heldout
    return row


@pytest.fixture()
def runs_table() -> pd.DataFrame:
    rows = []
    for seed, (r_l1, r_rand) in enumerate([(0.0, 0.6), (0.1, 0.8)]):
        rows += [_run_row("l1-uniform", "macs", 0.6, seed, r_l1, 80.0 + seed, 70.0),
                 _run_row("random", "macs", 0.6, seed, r_rand, 84.0 + 2 * seed, 75.0),
                 _run_row("l1-uniform", "params", 0.85, seed, 0.2, 60.0, 50.0),
                 _run_row("crl-layer", "params", 0.85, seed, None, 70.0, 65.0)]
    rows.append({**_run_row("l1-uniform", "macs", 0.6, 0, 0.5, 85.0), "arch": "resnet20"})  # not planted
    return pd.DataFrame(rows)


def test_planted_figure_draws_recall_and_accuracy_per_method_and_budget(runs_table: pd.DataFrame) -> None:
    from figures.planted import planted_pairs, plot_planted

    assert planted_pairs(runs_table) == [("fashionmnist", "planted-resnet20")]
    fig = plot_planted(runs_table, dataset="fashionmnist", arch="planted-resnet20")
    recall_macs, recall_params, acc_macs, acc_params = fig.axes
    assert recall_macs.get_title() == "macs reduction 0.6" and recall_params.get_title() == "params reduction 0.85"
    assert [p.get_height() for p in recall_macs.patches] == pytest.approx([0.05, 0.7])  # means over seeds
    seeds = sorted(np.round(recall_macs.collections[1].get_offsets()[:, 1], 6).tolist())
    assert seeds == [0.6, 0.8]  # the individual seeds as points (random's)
    assert [t.get_text() for t in recall_params.texts] == ["n/a"]  # crl-layer: unstructured, no recall
    assert [t.get_text() for t in recall_macs.get_xticklabels()] == ["crl-layer", "l1-uniform", "random"]
    heights = [p.get_height() for p in acc_macs.patches]
    assert heights == pytest.approx([80.5, 70.0, 85.0, 75.0])  # test top-1 then held-out, per method
    assert {"test top-1, fine-tuned", "held-out top-1, before fine-tune"} <= set(acc_macs.get_legend_handles_labels()[1])
    assert sorted(t.get_text() for t in fig.legends[0].get_texts()) == [  # one legend, below the panels
        "held-out top-1, before fine-tune", "test top-1, fine-tuned", "unpruned base (test)"]
    # without the held-out column (or with it empty) only the test top-1 is drawn
    fig = plot_planted(runs_table.assign(heldout_top1=np.nan), dataset="fashionmnist", arch="planted-resnet20")
    assert [p.get_height() for p in fig.axes[2].patches] == pytest.approx([80.5, 85.0])
    with pytest.raises(ValueError, match="useful_recall"):
        plot_planted(runs_table.drop(columns="useful_recall"), dataset="fashionmnist", arch="planted-resnet20")


def test_collect_and_render_all_carry_useful_recall(tmp_path: Path) -> None:
    from figures import render_all
    from harness.results.collect import SUMMARY_COLUMNS, collect
    from harness.results.schema import RUN_COLUMNS

    assert "useful_recall" in RUN_COLUMNS and {"useful_recall_mean", "useful_recall_std"} <= set(SUMMARY_COLUMNS)
    metrics = []
    for arch, method, seed, recall in (("planted-resnet20", "l1-uniform", 0, 0.25), ("planted-resnet20", "l1-uniform", 1, 0.75),
                                       ("planted-resnet20", "random", 0, 0.5), ("resnet20", "random", 0, None)):
        rec = {"dataset": "fashionmnist", "arch": arch, "method": method, "structured": True, "budget_metric": "macs",
               "budget_target": 0.6, "seed": seed, "base_top1": 90.0, "base_top5": 99.0, "top1": 85.0, "top5": 98.0,
               "base_macs": 1000, "base_params": 100, "macs": 400, "params": 40, "macs_reduction": 0.6,
               "params_reduction": 0.6, "achieved_reduction": 0.6, "finetune_epochs": 1, "search_wall_s": 1.0,
               "finetune_wall_s": 1.0, "git_commit": "x", "python_version": "3", "torch_version": "2",
               "torchvision_version": "0", "torch_pruning_version": "1", "timm_version": "1", "device": "cpu",
               "useful_recall": recall}
        path = tmp_path / "runs" / arch / method / f"seed{seed}" / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(rec))
        metrics.append(path)
    old = json.loads(metrics[-1].read_text())
    del old["useful_recall"]  # a metrics.json from before the column reads as null
    metrics[-1].write_text(json.dumps(old))
    tables = tmp_path / "tables"
    collect(metrics, [], tables)
    runs = pd.read_csv(tables / "runs.csv")
    assert runs["useful_recall"].tolist()[:3] == [0.25, 0.75, 0.5] and np.isnan(runs["useful_recall"].iloc[3])
    summary = pd.read_csv(tables / "summary.csv").set_index(["arch", "method"])
    assert summary.loc[("planted-resnet20", "l1-uniform"), "useful_recall_mean"] == pytest.approx(0.5)
    assert summary.loc[("planted-resnet20", "l1-uniform"), "useful_recall_std"] == pytest.approx(np.sqrt(0.125))
    md = (tables / "fashionmnist_planted-resnet20.md").read_text()
    assert "Useful recall" in md and "0.500 ± 0.354" in md
    assert "Useful recall" not in (tables / "fashionmnist_resnet20.md").read_text()
    written = {p.name for p in render_all(tables, tmp_path / "out")}
    assert {"planted_fashionmnist_planted-resnet20.png", "planted_fashionmnist_planted-resnet20.pdf"} <= written
    assert not any(n.startswith("planted_fashionmnist_resnet20") for n in written)


# ------------------------------------------------------------------------------------------ the DAG
def _dry_run(workdir: Path, config: dict, *targets: str) -> str:
    (workdir / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(SNAKEMAKE + ["--directory", str(workdir), "--configfile", str(workdir / "c.yaml"), "-n",
                                         *targets], capture_output=True, text=True, timeout=600, cwd=workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def _rule_blocks(output: str, rule: str) -> list[dict[str, str]]:
    blocks, lines = [], output.splitlines()
    for i, line in enumerate(lines):
        if line.strip() == f"rule {rule}:":
            block = {}
            for nxt in lines[i + 1:]:
                if not nxt.startswith("    "):
                    break
                key, _, value = nxt.strip().partition(": ")
                block[key] = value
            blocks.append(block)
    return blocks


def test_dry_run_of_the_planted_preset_lists_ground_truth_and_figure(tmp_path: Path) -> None:
    out = _dry_run(tmp_path, _planted_config())
    trains = _rule_blocks(out, "train_planted_base")
    assert len(trains) == 3 and not _rule_blocks(out, "train_base")
    assert all(b["output"].endswith("/ground_truth.json") and "planted-resnet20/seed" in b["output"] for b in trains)
    evaluates = _rule_blocks(out, "evaluate")
    assert len(evaluates) == sum(1 for _ in _planted_runs())
    assert all("/ground_truth.json" in b["input"] for b in evaluates)
    (figures,) = _rule_blocks(out, "figures")
    names = {Path(p.strip()).name for p in figures["output"].split(",")}
    assert {"planted_fashionmnist_planted-resnet20.png", "planted_fashionmnist_planted-resnet20.pdf"} <= names


def _planted_runs():
    from harness.config import load_config

    return load_config(_planted_config(), check_data=False).runs()


def test_dry_run_with_planted_and_plain_archs_is_unambiguous(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    first = config["experiments"][0]
    config["experiments"].append({**first, "arch": "planted-resnet20", "arch_options": {"width": 0.25},
                                  "methods": ["l1-uniform"]})
    out = _dry_run(tmp_path, config)
    (plain,) = _rule_blocks(out, "train_base")
    (planted,) = _rule_blocks(out, "train_planted_base")
    assert "/resnet20/seed0/" in plain["output"] and "ground_truth" not in plain["output"]
    assert "/planted-resnet20/seed0/ground_truth.json" in planted["output"]
    for block in _rule_blocks(out, "evaluate"):
        assert ("ground_truth.json" in block["input"]) == ("planted-resnet20" in block["output"])
    (figures,) = _rule_blocks(out, "figures")
    names = {Path(p.strip()).name for p in figures["output"].split(",")}
    assert {n for n in names if n.startswith("planted_")} == {"planted_synthetic_planted-resnet20.png",
                                                              "planted_synthetic_planted-resnet20.pdf"}


@pytest.mark.slow
def test_tiny_planted_dag_end_to_end(tmp_path: Path) -> None:
    """A real run: synthetic data, planted ResNet-20 (inner width 0.25), two methods, a budget on each side."""
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["experiments"] = [{**config["experiments"][0], "arch": "planted-resnet20", "arch_options": {"width": 0.25}}]
    config["budgets"] = [{"metric": "macs", "target": 0.5}, {"metric": "params", "target": 0.85}]
    config["methods"] = {"l1-uniform": {}, "random": {}}
    config.pop("figures", None)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run(SNAKEMAKE + ["--directory", str(tmp_path), "--configfile", str(tmp_path / "c.yaml"),
                                         "--cores", "2"], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "budgets that can keep every useful channel: macs-0.5" in result.stderr  # onstart's note
    results = tmp_path / config["results_dir"]
    gt = json.loads((results / "base/synthetic/planted-resnet20/seed0/ground_truth.json").read_text())
    assert gt["useful_only"]["macs_reduction"] > 0.5 and gt["useful_only"]["params_reduction"] < 0.85
    runs = pd.read_csv(results / "tables/runs.csv").set_index(["method", "budget_metric"])
    assert runs["useful_recall"].between(0, 1).all()
    # L1 keeps the decoys first: at params -85 % (fewer channels than decoys in most groups) almost no useful one
    assert runs.loc[("l1-uniform", "params"), "useful_recall"] < 0.2
    assert runs.loc[("l1-uniform", "macs"), "useful_recall"] < runs.loc[("random", "macs"), "useful_recall"]
    figure = tmp_path / config["figures_dir"] / "planted_synthetic_planted-resnet20.png"
    assert figure.stat().st_size > 1000
