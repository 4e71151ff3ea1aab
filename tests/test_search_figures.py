"""Search logs and L1 overlap: from plans and logs to tables (collect) to figures, checked by hand."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from figures import render_all
from figures.search import plot_l1_overlap, plot_search_curves
from harness.prune.overlap import jaccard, l1_jaccard, top_k_channels
from harness.results.collect import collect
from harness.results.search_logs import load_search_logs


def test_top_k_and_jaccard_by_hand() -> None:
    scores = torch.tensor([0.5, 3.0, 1.0, 3.0, 0.1])
    assert top_k_channels(scores, 2) == [1, 3]  # the two 3.0s
    assert top_k_channels(scores, 3) == [1, 2, 3]
    assert jaccard([1, 2], [2, 3]) == pytest.approx(1 / 3)
    assert jaccard([], []) == 1.0
    out = l1_jaccard({"g": [0, 4], "h": [1, 3]}, {"g": scores, "h": scores})
    assert out["g"] == 0.0  # keeps the two smallest: no overlap with the top-2
    assert out["h"] == 1.0


def _plan(d: Path, method: str, target: float, keep: list[int], meta: dict) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    plan = {"format": "prunebench-plan/1", "method": method, "dataset": "cifar10", "arch": "resnet56", "seed": 0,
            "budget": {"metric": "macs", "target": target, "tolerance": 0.01},
            "groups": [{"id": "conv1", "size": 4, "members": ["conv1"], "residual": False, "keep": keep}],
            "achieved": {}, "meta": meta}
    (d / "plan.json").write_text(json.dumps(plan))
    return d / "plan.json"


def _log(d: Path, accs: list[float], feasible: list[bool]) -> None:
    best = np.maximum.accumulate(accs).tolist()
    pd.DataFrame({"episode": range(len(accs)), "reward": 0.0, "accuracy": accs, "best_accuracy": best,
                  "feasible": feasible}).to_csv(d / "search_log.csv", index=False)


@pytest.fixture()
def runs(tmp_path: Path) -> list[Path]:
    plans = []
    for target in (0.3, 0.5):
        d = tmp_path / "runs" / f"graph-rl-{target}"
        plans.append(_plan(d, "graph-rl", target, [0, 1], {"l1_jaccard": {"conv1": 0.5}}))
        _log(d, [50.0, 60.0, 55.0, 70.0], [True, True, False, True])
    plans.append(_plan(tmp_path / "runs" / "l1", "l1-uniform", 0.5, [2, 3], {"l1_jaccard": {"conv1": 1.0}}))
    plans.append(_plan(tmp_path / "runs" / "old", "random", 0.5, [1, 3], {}))  # a plan from before the column
    return plans


def test_search_logs_table(runs: list[Path]) -> None:
    logs = load_search_logs(runs)
    assert len(logs) == 8  # 2 graph-rl logs x 4 episodes; the magnitude plans have no log
    assert list(logs.columns[:6]) == ["dataset", "arch", "method", "budget_metric", "budget_target", "seed"]
    first = logs[logs["budget_target"] == 0.3]
    assert first["best_accuracy"].tolist() == [50.0, 60.0, 60.0, 70.0]
    assert set(logs["method"]) == {"graph-rl"}
    assert load_search_logs(runs[2:]).empty


def test_collect_writes_overlap_and_search_logs_then_figures(runs: list[Path], tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    collect([], runs, tables)
    kept = pd.read_csv(tables / "kept_channels.csv")
    by_method = kept.set_index(["method", "budget_target"])["l1_jaccard"]
    assert by_method[("graph-rl", 0.5)] == 0.5 and by_method[("l1-uniform", 0.5)] == 1.0
    assert np.isnan(by_method[("random", 0.5)])
    assert len(pd.read_csv(tables / "search_logs.csv")) == 8

    fig = plot_l1_overlap(kept, dataset="cifar10", arch="resnet56", metric="macs", target=0.5)
    lines = {ln.get_label().split(" ")[0]: ln.get_ydata().tolist() for ln in fig.axes[0].get_lines()}
    assert lines == {"graph-rl": [0.5], "l1-uniform": [1.0]}  # the plan without overlap data draws nothing

    logs = pd.read_csv(tables / "search_logs.csv")
    fig = plot_search_curves(logs, dataset="cifar10", arch="resnet56")
    top, bottom = fig.axes[0], fig.axes[1]
    best = [ln for ln in top.get_lines() if "best so far" in ln.get_label()]
    assert len(best) == 2 and best[0].get_ydata().tolist() == [50.0, 60.0, 60.0, 70.0]
    feasible = bottom.get_lines()[0].get_ydata().tolist()
    assert feasible == pytest.approx([1.0, 1.0, 2 / 3, 0.75])  # rolling mean over the episodes so far


def test_render_all_draws_the_search_figures(runs: list[Path], tmp_path: Path) -> None:
    tables = tmp_path / "tables"
    collect([], runs, tables)
    # collect wrote an empty summary (no metrics): render_all still draws the plan/log figures
    written = {p.name for p in render_all(tables, tmp_path / "out", "macs-0.5", formats=("png",))}
    assert {"search_cifar10_resnet56.png", "l1_overlap_cifar10_resnet56_macs-0.5.png"} <= written


def test_every_method_has_its_own_colour_and_every_metric_its_marker() -> None:
    """Issue 14: 14 series no longer cycle through 10 colours; a new method never borrows a built-in's."""
    from figures.style import METHOD_COLOURS, METRIC_MARKERS, method_colour, metric_marker

    colours = [method_colour(m) for m in METHOD_COLOURS]
    assert len(set(colours)) == len(colours)
    for new in ("slimming", "hrank", "my-method"):
        assert method_colour(new) not in colours and method_colour(new) == method_colour(new)
    assert len({metric_marker(m) for m in METRIC_MARKERS}) == len(METRIC_MARKERS)


def test_search_efficiency_puts_every_search_and_its_control_on_one_axis_per_budget() -> None:
    from figures.search import plot_search_efficiency
    from figures.style import method_colour

    rows = []
    for method, accs in (("graph-rl", [40, 60, 55, 80]), ("random-search", [45, 50, 52, 51])):
        for seed in (0, 1):
            best = np.maximum.accumulate(np.array(accs, dtype=float) + seed)
            rows += [{"dataset": "d", "arch": "a", "method": method, "budget_metric": "macs", "budget_target": 0.5,
                      "seed": seed, "episode": e, "best_accuracy": b} for e, b in enumerate(best)]
    # constrained RL logs once per PPO update, its episode column counting finished episodes: one point
    rows.append({"dataset": "d", "arch": "a", "method": "crl-neuron", "budget_metric": "macs", "budget_target": 0.5,
                 "seed": 0, "episode": 4, "update": 1, "best_accuracy": 30.0})
    fig = plot_search_efficiency(pd.DataFrame(rows), dataset="d", arch="a")
    ax = fig.axes[0]
    lines = {line.get_label().split(" (")[0]: line for line in ax.get_lines()}
    assert set(lines) == {"graph-rl", "random-search", "crl-neuron"}
    x, y = lines["graph-rl"].get_data()
    assert list(x) == [1, 2, 3, 4] and list(y) == [40.5, 60.5, 60.5, 80.5]  # mean of the seeds' best so far
    assert lines["graph-rl"].get_color() == method_colour("graph-rl")
    crl_x, _ = lines["crl-neuron"].get_data()
    assert list(crl_x) == [4] and lines["crl-neuron"].get_marker() == "o"  # one point, drawn as a dot
