"""The constrained-RL figure in the DAG: search logs -> collect's table -> crl_<dataset>_<arch> figures.

Logs are written with the search's own column list (``baselines.crl.search.LOG_COLUMNS``) and known values,
next to graph-RL logs, so the table mixes both kinds; the Snakemake dry run checks that the figures rule
asks for exactly the crl figures that ``render_all`` writes.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from baselines.crl.search import LOG_COLUMNS
from figures import render_all
from figures.crl import crl_pairs, crl_search_logs, plot_crl_search
from figures.search import plot_search_curves
from harness.results.collect import collect

ROOT = Path(__file__).resolve().parents[1]
UPDATES = 4


def _plan(d: Path, method: str, arch: str, metric: str, target: float, seed: int = 0) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    plan = {"format": "prunebench-plan/1", "method": method, "dataset": "synthetic", "arch": arch, "seed": seed,
            "budget": {"metric": metric, "target": target, "tolerance": 0.01},
            "groups": [{"id": "conv1", "size": 4, "members": ["conv1"], "residual": False, "keep": [0, 1]}],
            "achieved": {}, "meta": {}}
    (d / "plan.json").write_text(json.dumps(plan))
    return d / "plan.json"


def _crl_log(d: Path, target: float, nu0: float) -> pd.DataFrame:
    """A per-update log as baselines/crl/search.py writes it: nu rises while the cost is over the budget."""
    budget = 100.0 * (1.0 - target)
    cost = [budget + 20.0, budget + 10.0, budget + 2.0, budget - 3.0]
    nu = [nu0, nu0 + 0.8, nu0 + 1.3, nu0 + 1.1]
    rows = []
    for u in range(UPDATES):
        row = {c: 0.0 for c in LOG_COLUMNS}
        row.update(update=u + 1, timesteps=64 * (u + 1), episode=2 * (u + 1), reward=60.0 + u, accuracy=60.0 + u,
                   feasible=cost[u] <= budget, best_accuracy=60.0 + u, wall_s=1.5 * (u + 1), mean_cost=cost[u],
                   budget=budget, nu=nu[u], feasible_fraction=0.5, finetune_iters=0, episodes_in_rollout=2)
        rows.append(row)
    df = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    df.to_csv(d / "search_log.csv", index=False)
    return df


def _graph_rl_log(d: Path) -> None:
    pd.DataFrame({"episode": range(3), "reward": 0.0, "accuracy": [50.0, 55.0, 52.0],
                  "best_accuracy": [50.0, 55.0, 55.0], "feasible": True}).to_csv(d / "search_log.csv", index=False)


@pytest.fixture()
def tables(tmp_path: Path) -> Path:
    plans = []
    for method, metric, target, nu0 in (("crl-neuron", "macs", 0.5, 1.0), ("crl-neuron", "params", 0.4, 2.0),
                                        ("crl-layer", "params", 0.4, 3.0)):
        d = tmp_path / "runs" / f"{method}-{metric}-{target}"
        plans.append(_plan(d, method, "resnet20", metric, target))
        _crl_log(d, target, nu0)
    d = tmp_path / "runs" / "crl-neuron-seed1"  # a second seed: not drawn (the smallest seed is)
    plans.append(_plan(d, "crl-neuron", "resnet20", "macs", 0.5, seed=1))
    _crl_log(d, 0.5, 9.0)
    for arch in ("resnet20", "vgg16"):  # vgg16 has graph-RL only: a search figure, no crl figure
        d = tmp_path / "runs" / f"graph-rl-{arch}"
        plans.append(_plan(d, "graph-rl", arch, "macs", 0.5))
        _graph_rl_log(d)
    collect([], plans, tmp_path / "tables")
    return tmp_path / "tables"


def test_collected_table_keeps_the_lagrangian_columns(tables: Path) -> None:
    logs = pd.read_csv(tables / "search_logs.csv")
    crl = logs[logs["method"].str.startswith("crl-")]
    assert len(crl) == 4 * UPDATES and len(logs) == 4 * UPDATES + 2 * 3
    assert crl[["timesteps", "mean_cost", "budget", "nu"]].notna().all().all()
    assert logs.loc[logs["method"] == "graph-rl", "nu"].isna().all()  # the other methods leave them blank
    assert crl_pairs(logs) == [("synthetic", "resnet20")]


def test_crl_figure_has_one_line_per_method_and_budget(tables: Path) -> None:
    logs = pd.read_csv(tables / "search_logs.csv", dtype={"arch": "str", "dataset": "str"})
    selected, seed = crl_search_logs(logs, dataset="synthetic", arch="resnet20")
    assert seed == 0
    assert list(selected) == ["crl-neuron macs-0.5", "crl-neuron params-0.4", "crl-layer params-0.4"]
    fig = plot_crl_search(selected)
    cost_ax, nu_ax = fig.axes
    nu = {ln.get_label(): ln.get_ydata().tolist() for ln in nu_ax.get_lines()}
    assert nu == {"crl-neuron macs-0.5": [1.0, 1.8, 2.3, 2.1], "crl-neuron params-0.4": [2.0, 2.8, 3.3, 3.1],
                  "crl-layer params-0.4": [3.0, 3.8, 4.3, 4.1]}
    budget = {ln.get_label(): set(ln.get_ydata()) for ln in cost_ax.get_lines() if ln.get_label().endswith("budget")}
    assert budget == {"crl-neuron macs-0.5 budget": {50.0}, "crl-neuron params-0.4 budget": {60.0},
                      "crl-layer params-0.4 budget": {60.0}}
    assert nu_ax.get_lines()[0].get_xdata().tolist() == [64, 128, 192, 256]  # environment steps
    with pytest.raises(ValueError, match="lack column"):  # an old log without the multiplier
        crl_search_logs(logs.assign(nu=np.nan), dataset="synthetic", arch="resnet20")


def test_render_all_writes_crl_figures_and_the_search_figure_still_draws_crl(tables: Path, tmp_path: Path) -> None:
    written = {p.name: p for p in render_all(tables, tmp_path / "out", "macs-0.5")}
    for ext in ("png", "pdf"):
        assert written[f"crl_synthetic_resnet20.{ext}"].stat().st_size > 1000
        assert f"search_synthetic_resnet20.{ext}" in written and f"search_synthetic_vgg16.{ext}" in written
    assert not any(n.startswith("crl_synthetic_vgg16") for n in written)
    fig = plot_search_curves(pd.read_csv(tables / "search_logs.csv"), dataset="synthetic", arch="resnet20")
    assert [ax.get_title() for ax in fig.axes[:3]] == ["crl-layer", "crl-neuron", "graph-rl"]


def test_figures_rule_lists_the_crl_figure_of_experiments_that_run_crl(tmp_path: Path) -> None:
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    assert {"crl-neuron", "crl-layer"} <= set(config["methods"])
    first = config["experiments"][0]
    config["experiments"].append({**first, "arch": "vgg16", "arch_options": {"width": 0.25},
                                  "methods": ["l1-uniform"]})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"),
                             "--directory", str(tmp_path), "--configfile", str(tmp_path / "c.yaml"), "-n", "figures"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = (result.stdout + result.stderr).splitlines()
    at = next(i for i, ln in enumerate(lines) if ln.strip() == "rule figures:")
    outputs = next(ln for ln in lines[at:] if ln.strip().startswith("output:")).split(":", 1)[1]
    names = {Path(p.strip()).name for p in outputs.split(",")}
    assert {n for n in names if n.startswith("crl_")} == {"crl_synthetic_resnet20.png", "crl_synthetic_resnet20.pdf"}
    assert {"search_synthetic_resnet20.png", "accuracy_vs_macs_synthetic_vgg16.png"} <= names
