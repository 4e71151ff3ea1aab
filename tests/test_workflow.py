"""The Snakemake DAG end to end on the smoke preset, the reviewer report, and bad input stopping cleanly.

Snakemake runs with ``--directory`` in a temporary folder, so the repository's own results are untouched.
"""
from __future__ import annotations

import hashlib
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())


def snakemake(workdir: Path, config: Path | None, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cmd = SNAKEMAKE + ["--directory", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(config)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout, cwd=workdir)


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and ".snakemake" not in p.parts}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("smoke")
    config = write_config(workdir / "smoke.yaml", SMOKE)
    result = snakemake(workdir, config, "--cores", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


@pytest.mark.slow
def test_smoke_dag_produces_tables_and_figures(smoke_run: Path) -> None:
    tables = smoke_run / SMOKE["results_dir"] / "tables"
    runs = pd.read_csv(tables / "runs.csv")
    # crl-layer (unstructured) supports params budgets only: the grid skips its MACs budgets
    grid = [(m, b["metric"]) for m in SMOKE["methods"] for b in SMOKE["budgets"]
            if not (m == "crl-layer" and b["metric"] == "macs")]
    assert len(runs) == len(grid) * len(SMOKE["seeds"])
    assert set(runs["method"]) == set(SMOKE["methods"])
    for row in runs.itertuples():
        assert row.achieved_reduction >= row.budget_target - 0.01, row
        reduction = row.macs_reduction if row.budget_metric == "macs" else row.params_reduction
        assert reduction == pytest.approx(row.achieved_reduction)
        assert (row.macs < row.base_macs if row.structured else row.macs == row.base_macs)  # dense MACs
        assert row.params < row.base_params
        assert 0.0 <= row.top1 <= 100.0
    assert runs["git_commit"].notna().all() and runs["torch_version"].notna().all()
    summary = pd.read_csv(tables / "summary.csv")
    assert len(summary) == len(grid)
    assert (tables / "synthetic_resnet20.md").read_text().count("| ours |") == len(summary)
    # every final plan is scored on the held-out part of the search split; the searches say how many candidates
    assert runs["heldout_top1"].between(0.0, 100.0).all()
    md = (tables / "synthetic_resnet20.md").read_text()
    for method in ("random-search", "l1-random-search"):
        if method in SMOKE["methods"]:
            n = SMOKE["methods"][method]["evaluations"]
            assert (runs.loc[runs["method"] == method, "search_evaluations"] == n).all()
            assert f"| {method} (N={n}) |" in md
            logs = list((smoke_run / SMOKE["results_dir"] / "runs").rglob(f"{method}/*/seed*/search_log.csv"))
            assert len(logs) == len(SMOKE["budgets"]) * len(SMOKE["seeds"])
            assert {"episode", "accuracy", "best_accuracy", "feasible"} <= set(logs[0].read_text().split("\n")[0].split(","))
    figures = smoke_run / SMOKE["figures_dir"]
    for name in ("accuracy_vs_macs_synthetic_resnet20", "kept_channels_synthetic_resnet20_macs-0.5"):
        for ext in ("png", "pdf"):
            assert (figures / f"{name}.{ext}").stat().st_size > 1000
    # Logs and benchmarks for every rule, checkpoints outside the outputs.
    results = smoke_run / SMOKE["results_dir"]
    for stage in ("train_base", "prune", "finetune", "evaluate"):
        assert list((results / "logs" / stage).rglob("*.log")), stage
        assert list((results / "benchmarks" / stage).rglob("*.tsv")), stage
    plan = next((results / "runs").rglob("plan.json"))
    assert '"keep"' in plan.read_text()
    if "graph-rl" in SMOKE["methods"]:  # a searching method also leaves its per-episode log beside the plan
        logs = list((results / "runs").rglob("graph-rl/*/seed*/search_log.csv"))
        assert len(logs) == len(SMOKE["budgets"]) * len(SMOKE["seeds"])
        header = logs[0].read_text().splitlines()[0]
        assert header.startswith("episode,reward,accuracy,macs,params")
    for method in ("crl-neuron", "crl-layer"):  # per-update log of the PPO-Lagrangian search
        if method in SMOKE["methods"]:
            logs = list((results / "runs").rglob(f"{method}/*/seed*/search_log.csv"))
            assert len(logs) == sum(m == method for m, _ in grid) * len(SMOKE["seeds"])
            assert {"nu", "mean_cost", "budget", "accuracy"} <= set(logs[0].read_text().splitlines()[0].split(","))


@pytest.mark.slow
def test_rerun_does_nothing_and_report_has_figures(smoke_run: Path) -> None:
    config = write_config(smoke_run / "smoke.yaml", SMOKE)
    before = tree_digest(smoke_run / SMOKE["results_dir"])
    again = snakemake(smoke_run, config, "--cores", "2")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Nothing to be done" in again.stdout + again.stderr
    assert tree_digest(smoke_run / SMOKE["results_dir"]) == before

    report = snakemake(smoke_run, config, "--report", "report.zip")
    assert report.returncode == 0, report.stderr[-2000:]
    names = zipfile.ZipFile(smoke_run / "report.zip").namelist()
    assert any(n.endswith("accuracy_vs_macs_synthetic_resnet20.png") for n in names), names[:20]
    assert any(n.endswith("runs.csv") for n in names), names[:20]


def _bad(config: dict, **changes) -> dict:
    bad = yaml.safe_load(yaml.safe_dump(config))
    for key, value in changes.items():
        bad[key] = value
    return bad


BAD_CONFIGS = {
    "unknown method": (_bad(SMOKE, methods={"l1-uniform": {}, "magic": {}}), "unknown method 'magic'"),
    "unknown arch": (_bad(SMOKE, experiments=[{**SMOKE["experiments"][0], "arch": "resnet21"}]),
                     "unknown architecture 'resnet21'"),
    "unknown dataset": (_bad(SMOKE, experiments=[{**SMOKE["experiments"][0], "dataset": "mnist"}]),
                        "'mnist' is not valid (valid values: cifar10"),
    "unknown metric": (_bad(SMOKE, budgets=[{"metric": "flops", "target": 0.5}]),
                       "'flops' is not valid (valid values: macs, params, latency)"),
    "target above 1": (_bad(SMOKE, budgets=[{"metric": "macs", "target": 1.5}]), "budgets[0].target: 1.5"),
    "target zero": (_bad(SMOKE, budgets=[{"metric": "macs", "target": 0}]), "budgets[0].target: 0"),
    "unknown key": (_bad(SMOKE, seedz=[0]), "unknown key 'seedz'"),
    "figure budget not in the grid": (_bad(SMOKE, figures={"layer_budget": "macs-0.7"}),
                                      "figures.layer_budget: 'macs-0.7' is not a budget of this config"),
    "unknown method option": (_bad(SMOKE, methods={"l1-global": {"max_ratoi": 0.5}}), "max_ratoi"),
    "experiment method not in methods": (
        _bad(SMOKE, experiments=[{**SMOKE["experiments"][0], "methods": ["l1-global"]}]),
        "experiments[0].methods: 'l1-global' is not in methods"),
}


def test_an_experiment_runs_only_its_listed_methods() -> None:
    from harness.config import load_config

    config = _bad(SMOKE, experiments=[{**SMOKE["experiments"][0], "methods": ["random"]},
                                      {**SMOKE["experiments"][0], "arch": "resnet32"}])
    wf = load_config(config, check_data=False)
    runs = {(exp.arch, method) for exp, method, _, _ in wf.runs()}
    assert {m for a, m in runs if a == "resnet20"} == {"random"}
    assert {m for a, m in runs if a == "resnet32"} == set(SMOKE["methods"])


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_one_line_from_load_config(case: str) -> None:
    from harness.config import load_config
    from harness.errors import UserError

    config, expected = BAD_CONFIGS[case]
    with pytest.raises(UserError) as info:
        load_config(config, check_data=False)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


@pytest.mark.slow
@pytest.mark.parametrize("case", ["unknown method", "target above 1"])
def test_bad_config_stops_snakemake_before_any_job_and_keeps_results(smoke_run: Path, case: str) -> None:
    config, expected = BAD_CONFIGS[case]
    before = tree_digest(smoke_run / SMOKE["results_dir"])
    result = snakemake(smoke_run, write_config(smoke_run / "bad.yaml", config), "--cores", "2")
    assert result.returncode != 0
    assert expected in result.stderr
    assert "Select jobs to execute" not in result.stdout + result.stderr
    assert tree_digest(smoke_run / SMOKE["results_dir"]) == before


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("preset: smoke\nexperiments: [unclosed\n")
    result = snakemake(tmp_path, bad, "-n")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "Config file is not valid JSON or YAML" in output  # Snakemake's own one-line message
    assert not (tmp_path / "results").exists()


def _real_run_config(tmp_path: Path, **changes) -> Path:
    config = _bad(SMOKE, **changes)
    return write_config(tmp_path / "config.yaml", config)


def test_unreachable_budget_stops_before_any_job(tmp_path: Path) -> None:
    # Keeping half of every group's channels removes at most about 3/4 of the MACs: 0.9 is out of reach.
    config = _real_run_config(tmp_path, budgets=[{"metric": "macs", "target": 0.9}], methods={"l1-uniform": {}},
                              prune={"min_keep_fraction": 0.5, "tolerance": 0.01, "scope": "all",
                                     "heldout_images": SMOKE["prune"]["heldout_images"]})
    result = snakemake(tmp_path, config, "--cores", "1")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "cannot reach" in output and "macs" in output
    assert not (tmp_path / SMOKE["results_dir"] / "base").exists()


def test_missing_dataset_offline_names_the_fetch_command(tmp_path: Path) -> None:
    experiment = {**SMOKE["experiments"][0], "dataset": "cifar10"}
    config = _real_run_config(tmp_path, experiments=[experiment], data={"cifar10": {"download": False}})
    result = snakemake(tmp_path, config, "--cores", "1")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "python -m harness.cli.fetch_data --dataset cifar10" in output
    assert not (tmp_path / SMOKE["results_dir"]).exists()


def test_dry_run_of_the_paper_grid_shows_the_plan(tmp_path: Path) -> None:
    result = snakemake(tmp_path, ROOT / "config" / "paper.yaml", "-n", "--quiet", "rules")
    assert result.returncode == 0, result.stderr[-3000:]
    from harness.config import load_config

    paper = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())
    # every (experiment, method, budget, seed), less the budgets a method cannot meet (crl-layer: params only)
    runs = sum(1 for _ in load_config(paper, check_data=False).runs())
    assert runs > len(paper["experiments"]) * len(paper["budgets"]) * len(paper["seeds"])
    assert f"finetune{' ' * 1}" in result.stdout or "finetune" in result.stdout
    counts = {line.split()[0]: int(line.split()[1]) for line in result.stdout.splitlines()
              if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert counts["finetune"] == runs and counts["evaluate"] == runs
    assert counts["train_base"] == len(paper["experiments"]) * len(paper["seeds"])
