"""figures: render from small hand-made tables (results/tables/*.csv) into tmp_path."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from figures import (
    budget_slug, default_budget, main, parse_budget, plot_accuracy_vs_macs, plot_kept_channels, render_all,
)
from harness.results import REPORTED_COLUMNS

METHODS = ("l1-uniform", "random")
TARGETS = (0.3, 0.5)


def summary_frame() -> pd.DataFrame:
    rows = []
    for i, method in enumerate(METHODS):
        for t in TARGETS:
            rows.append({
                "dataset": "cifar10", "arch": "resnet56", "method": method, "structured": True,
                "budget_metric": "macs", "budget_target": t, "n": 2, "seeds": "0;1",
                "top1_mean": 92.0 - 4 * t - i, "top1_std": 0.2, "base_top1_mean": 93.2, "base_top1_std": 0.1,
                "macs_reduction_mean": t + 0.005, "macs_reduction_std": 0.001,
            })
    return pd.DataFrame(rows)


def kept_frame() -> pd.DataFrame:
    rows = []
    for method in METHODS:
        for t in TARGETS:
            for seed in (0, 1):
                for g, size in enumerate((16, 32, 64)):
                    kept = int(size * (1 - t)) - (seed if method == "random" else 0)
                    rows.append({
                        "dataset": "cifar10", "arch": "resnet56", "method": method, "budget_metric": "macs",
                        "budget_target": t, "seed": seed, "group_index": g, "group_id": f"layer{g + 1}.0.conv1",
                        "size": size, "kept": kept, "kept_fraction": kept / size,
                    })
    return pd.DataFrame(rows)


def reported_frame() -> pd.DataFrame:
    return pd.DataFrame([
        ["cifar10", "resnet56", "amc", 92.8, 91.9, 0.5, float("nan"), "Distiller AMC README", ""],
        ["cifar10", "resnet56", "depgraph-nosl", 93.53, 93.46, 0.5261, float("nan"), "Torch-Pruning readme", ""],
        ["cifar10", "resnet56", "gnn-rl", float("nan"), 94.31, float("nan"), float("nan"), "GNN-RL", "no x"],
        ["cifar10", "vgg16", "l1-li2017", 93.25, 93.4, 0.342, 0.64, "Li et al.", ""],
    ], columns=list(REPORTED_COLUMNS))


@pytest.fixture()
def tables(tmp_path: Path) -> Path:
    d = tmp_path / "tables"
    d.mkdir()
    summary_frame().to_csv(d / "summary.csv", index=False)
    kept_frame().to_csv(d / "kept_channels.csv", index=False)
    reported_frame().to_csv(d / "reported.csv", index=False)
    return d


def test_accuracy_figure_lines(tables: Path) -> None:
    fig = plot_accuracy_vs_macs(summary_frame(), reported_frame(), dataset="cifar10", arch="resnet56")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == len(METHODS)  # one line per method
    assert sorted(c.get_label() for c in bars) == sorted(METHODS)
    for c in bars:  # the data line of each method goes through its budgets in x order
        x = list(c.lines[0].get_xdata())
        assert x == sorted(x) and len(x) == len(TARGETS)
    data_lines = {id(c.lines[0]) for c in bars}
    caplines = {id(line) for c in bars for line in c.lines[1]}
    others = [line for line in ax.lines if id(line) not in data_lines | caplines]
    assert len(others) == 1  # the unpruned reference line
    ref = others[0]
    assert ref.get_gid() == "reference" and list(ref.get_ydata()) == pytest.approx([93.2, 93.2])
    labels = [c.get_label() for c in ax.collections if c.get_label().endswith("(reported)")]
    assert sorted(labels) == ["amc (reported)", "depgraph-nosl (reported)"]  # no x for gnn-rl, vgg16 elsewhere
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "amc (reported)" in legend and any(t.startswith("unpruned") for t in legend)


def test_kept_channels_figure(tables: Path) -> None:
    fig = plot_kept_channels(kept_frame(), dataset="cifar10", arch="resnet56", metric="macs", target=0.5)
    ax = fig.axes[0]
    assert len(ax.lines) == len(METHODS)
    rnd = next(line for line in ax.lines if line.get_label().startswith("random"))
    assert list(rnd.get_xdata()) == [0, 1, 2]
    # mean over seeds 0 and 1: kept = size/2 - seed
    assert list(rnd.get_ydata()) == pytest.approx([(8 + 7) / 2 / 16, (16 + 15) / 2 / 32, (32 + 31) / 2 / 64])


def test_render_all_writes_png_and_pdf(tables: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    files = render_all(tables, out)
    names = sorted(p.name for p in files)
    assert names == sorted([
        "accuracy_vs_macs_cifar10_resnet56.png", "accuracy_vs_macs_cifar10_resnet56.pdf",
        "kept_channels_cifar10_resnet56_macs-0.5.png", "kept_channels_cifar10_resnet56_macs-0.5.pdf",
    ])
    for p in files:
        assert p.exists() and p.stat().st_size > 0
        head = p.read_bytes()[:8]
        assert head.startswith(b"\x89PNG") if p.suffix == ".png" else head.startswith(b"%PDF")
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_render_budget_argument_and_cli(tables: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(["--tables", str(tables), "--out", str(out), "--budget", "macs-0.3"]) == 0
    assert (out / "kept_channels_cifar10_resnet56_macs-0.3.png").exists()
    assert not (out / "kept_channels_cifar10_resnet56_macs-0.5.png").exists()
    printed = capsys.readouterr().out.split()
    assert len(printed) == 4
    assert main(["--tables", str(tables), "--out", str(out), "--budget", "flops-2"]) == 1


def test_budget_helpers() -> None:
    assert parse_budget("macs-0.5") == ("macs", 0.5)
    assert budget_slug("macs", 0.50) == "macs-0.5"
    assert default_budget(kept_frame(), "cifar10", "resnet56") == ("macs", 0.5)
    k = kept_frame()
    k = k[k["budget_target"] == 0.3]
    assert default_budget(k, "cifar10", "resnet56") == ("macs", 0.3)
    with pytest.raises(ValueError):
        parse_budget("0.5")


def test_render_from_collect_tables(tmp_path: Path) -> None:
    """The tables written by harness.results.collect are exactly what the figures read."""
    from harness.results import validate_record
    from harness.results.collect import _csv, load_kept_channels, summarize

    base = {
        "dataset": "cifar10", "arch": "resnet56", "budget_metric": "macs", "base_top1": 93.0, "base_top5": 99.0,
        "top5": 98.0, "base_macs": 100, "base_params": 10, "macs": 50, "params": 5, "params_reduction": 0.5,
        "finetune_epochs": 1, "search_wall_s": 0.0, "finetune_wall_s": 1.0, "git_commit": "x",
        "python_version": "3", "torch_version": "2", "torchvision_version": "0", "torch_pruning_version": "1",
        "timm_version": "1", "device": "cpu",
    }
    runs, plans = [], []
    for method, structured in (("a", True), ("b", False)):
        for t in TARGETS:
            for seed in (0, 1):
                runs.append(validate_record({**base, "method": method, "structured": structured,
                                             "budget_target": t, "seed": seed, "top1": 90.0 - t - seed,
                                             "macs_reduction": t, "achieved_reduction": t}))
                p = tmp_path / f"plan_{method}_{t}_{seed}.json"
                p.write_text(pd.Series({
                    "format": "prunebench-plan/1", "method": method, "dataset": "cifar10", "arch": "resnet56",
                    "seed": seed, "budget": {"metric": "macs", "target": t},
                    "groups": [{"id": "conv1", "size": 4, "keep": [0, 1]}]}).to_json())
                plans.append(p)
    tables = tmp_path / "tables"
    tables.mkdir()
    (tables / "summary.csv").write_text(_csv(summarize(pd.DataFrame(runs))))
    (tables / "kept_channels.csv").write_text(_csv(load_kept_channels(plans)))
    files = render_all(tables, tmp_path / "out")
    assert len(files) == 6 and all(p.stat().st_size > 0 for p in files)  # accuracy, kept channels, L1 overlap
    fig = plot_accuracy_vs_macs(pd.read_csv(tables / "summary.csv"), None, dataset="cifar10", arch="resnet56")
    labels = sorted(c.get_label() for c in fig.axes[0].containers)
    assert labels == ["a", "b (unstructured)"]


def test_render_with_no_runs(tmp_path: Path) -> None:
    from harness.results.collect import KEPT_COLUMNS, SUMMARY_COLUMNS

    (tmp_path / "summary.csv").write_text(",".join(SUMMARY_COLUMNS) + "\n")
    (tmp_path / "kept_channels.csv").write_text(",".join(KEPT_COLUMNS) + "\n")
    assert render_all(tmp_path, tmp_path / "out") == []


def test_accuracy_vs_latency_places_plans_where_the_device_puts_them() -> None:
    """Issue 14: a figure of accuracy against measured latency, batch 1 and a large batch, base marked."""
    from figures.plots import has_latency, plot_accuracy_vs_latency
    from figures.style import method_colour

    rows = []
    for method, lat, top1 in (("l1-uniform", 2.0, 90.0), ("graph-rl", 1.5, 91.0)):
        rows.append({"dataset": "d", "arch": "a", "method": method, "budget_metric": "macs", "budget_target": 0.5,
                     "top1_mean": top1, "top1_std": 0.1, "latency_ms_mean": lat, "latency_ms_std": 0.05,
                     "latency_large_ms_mean": 10 * lat, "latency_large_ms_std": 0.5, "base_latency_ms_mean": 3.0,
                     "base_latency_large_ms_mean": 30.0, "latency_device": "cpu-x"})
    summary = pd.DataFrame(rows)
    assert has_latency(summary, "d", "a") and not has_latency(summary.assign(latency_ms_mean=float("nan")), "d", "a")
    fig = plot_accuracy_vs_latency(summary, dataset="d", arch="a")
    small, large = fig.axes[:2]
    series = {c.get_label(): c.lines[0] for c in small.containers}  # errorbar: (data line, caps, bars)
    assert series["graph-rl (macs budget)"].get_xdata()[0] == 1.5
    assert series["graph-rl (macs budget)"].get_color() == method_colour("graph-rl")
    assert [line.get_xdata()[0] for line in large.get_lines() if line.get_label().startswith("unpruned")] == [30.0]
    assert "cpu-x" in fig._suptitle.get_text()
