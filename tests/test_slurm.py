"""The smoke DAG on a real SLURM gives the same results as a local run.

``.ci/slurm_up.sh`` starts munge, slurmctld and slurmd (Debian's packages) as a one-node cluster on
loopback with two fake GPUs of type ``testgpu``; the DAG runs with ``--executor slurm`` through the
user-facing ``profiles/slurm`` plus ``tests/slurm_profile`` (what only this cluster needs: no account,
squeue polling, its partition). A local run of the same config runs beside it. Their results tables
(``runs.csv`` without wall times, device and commit; ``kept_channels.csv``) must be identical. Each GPU job
must have reached SLURM with the resources the config asked for (``--gpus=testgpu:1``,
``--cpus-per-gpu`` = the rule's threads, ``-t`` and ``--mem`` from ``resources:``), and the harness must
have taken the GPU SLURM assigned (``CUDA_VISIBLE_DEVICES``, harness/gpu.py) instead of leasing one.
The daemons are stopped at the end, also when the test fails.

To stay within a few minutes on 2 cores, the DAG is the smoke preset reduced to its first budget and two
methods, l1-uniform and graph-rl (a seeded search, whose plan must not depend on where it ran); set
PRUNEBENCH_SLURM_FULL=1 to run the whole smoke preset. Skipped where the machine cannot run SLURM (not root, or no slurmctld).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from harness.results.schema import LATENCY_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]
SLURM_PROFILES = ["--profile", str(ROOT / "profiles" / "slurm"), "--profile", str(ROOT / "tests" / "slurm_profile")]
GPU_MODEL = "testgpu"  # the GRES type .ci/slurm_up.sh declares
RESOURCES = {"default": {"runtime": 15, "mem_mb": 1000, "gpu_model": GPU_MODEL}, "train_base": {"runtime": 20}}
# Provenance, not results: they differ between a local and a cluster run by design.
NOT_COMPARED = ("search_wall_s", "finetune_wall_s", "device", "git_commit",
                *LATENCY_COLUMNS)  # measured timings differ run to run (and node to node)
TIMEOUT_S = 1200  # 12 min measured on a 2-core machine shared with 5 other busy agents

pytestmark = pytest.mark.slow


def _dry_run(tmp_path: Path, config: dict) -> subprocess.CompletedProcess:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return subprocess.run(SNAKEMAKE + ["--directory", str(tmp_path), "--configfile", "config.yaml", "-n"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)


def test_dry_run_shows_each_rules_cluster_resources(tmp_path: Path) -> None:
    """No SLURM needed: the rules take runtime/memory from `resources:` (rule entry over `default`), and
    only the GPU rules get gpu=1, the GPU model and cpus_per_gpu (= the rule's threads)."""
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    config["resources"] = {"default": {"runtime": 7, "mem_mb": 1234, "gpu_model": "a100"},
                           "finetune": {"runtime": 9}}
    result = _dry_run(tmp_path, config)
    assert result.returncode == 0, result.stderr[-3000:]
    shown = re.findall(r"^(?:local)?rule (\w+):.*?^\s+resources: ([^\n]*)", result.stdout, re.S | re.M)
    by_rule = {rule: dict(kv.split("=", 1) for kv in res.split(", ")) for rule, res in shown if rule != "all"}
    assert {"fetch_data", "train_base", "finetune", "evaluate"} <= set(by_rule), sorted(by_rule)
    for rule, res in by_rule.items():
        gpu_rule = rule in ("train_base", "finetune", "evaluate") or rule.startswith("prune_")
        assert res["mem_mb"] == "1234", (rule, res)
        assert res["runtime"] == ("9" if rule == "finetune" else "7"), (rule, res)
        assert (res.get("gpu"), res.get("gpu_model")) == (("1", "a100") if gpu_rule else (None, None)), (rule, res)
        if gpu_rule:
            stage = "prune" if rule.startswith("prune_") else rule.replace("_base", "")
            assert res["cpus_per_gpu"] == str(SMOKE["threads"][stage]), (rule, res)


def test_resources_for_an_unknown_rule_stop_the_dry_run(tmp_path: Path) -> None:
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    config["resources"] = {"finetun": {"runtime": 9}}
    result = _dry_run(tmp_path, config)
    assert result.returncode != 0
    assert "resources.finetun: no rule of that name (valid values: collect, default, evaluate," in (
        result.stdout + result.stderr)
    assert not (tmp_path / SMOKE["results_dir"]).exists()


def _cannot_run_slurm() -> str | None:
    if os.geteuid() != 0:
        return "SLURM test needs root (it starts slurmctld and slurmd)"
    missing = [t for t in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(t) is None]
    if missing:
        return (f"SLURM test needs {', '.join(missing)}: install Debian's slurmctld slurmd slurm-client munge "
                "(.ci/run does)")
    conf = Path("/etc/slurm/slurm.conf")
    if conf.exists() and not conf.read_text().startswith("# prunebench test cluster"):
        return "/etc/slurm/slurm.conf belongs to a real SLURM installation; not replacing it"
    return None


def _test_config() -> dict:
    """The smoke preset with the cluster resources; reduced unless PRUNEBENCH_SLURM_FULL=1."""
    config = yaml.safe_load(yaml.safe_dump(SMOKE))
    config["resources"] = RESOURCES
    if os.environ.get("PRUNEBENCH_SLURM_FULL") != "1":
        names = list(config["methods"])
        keep = [n for n in ("l1-uniform", "graph-rl") if n in names] or names[:1]
        config["methods"] = {n: config["methods"][n] for n in names if n in keep}
        config["budgets"] = config["budgets"][:1]
    return config


@pytest.fixture(scope="module")
def slurm_partition(tmp_path_factory: pytest.TempPathFactory):
    reason = _cannot_run_slurm()
    if reason:
        pytest.skip(reason)
    state = tmp_path_factory.mktemp("slurm-state")
    try:
        up = subprocess.run([str(ROOT / ".ci" / "slurm_up.sh"), str(state), "2"], capture_output=True, text=True,
                            timeout=120)
        assert up.returncode == 0, f"slurm_up.sh failed:\n{up.stdout}\n{up.stderr}"
        partition = up.stdout.strip().splitlines()[-1]
        profile = yaml.safe_load((ROOT / "tests" / "slurm_profile" / "config.yaml").read_text())
        assert profile["default-resources"]["slurm_partition"] == partition
        yield partition
    finally:
        down = subprocess.run([str(ROOT / ".ci" / "slurm_down.sh"), str(state)], capture_output=True, text=True,
                              timeout=120)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def runs(slurm_partition: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The same config run locally and on SLURM, at the same time (the SLURM run spends most of its time
    waiting for the scheduler)."""
    config = _test_config()
    folders = {}
    for kind in ("local", "slurm"):
        folders[kind] = tmp_path_factory.mktemp(f"smoke-{kind}")
        (folders[kind] / "smoke.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def command(kind: str) -> list[str]:
        extra = SLURM_PROFILES if kind == "slurm" else ["--cores", "1"]
        return SNAKEMAKE + ["--directory", str(folders[kind]), "--configfile", "smoke.yaml"] + extra

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "CUDA_VISIBLE_DEVICES"))}
    logs = {kind: (folders[kind] / "snakemake.out").open("w") for kind in folders}
    start = time.monotonic()
    procs = {kind: subprocess.Popen(command(kind), cwd=folders[kind], env=env, stdout=logs[kind],
                                    stderr=subprocess.STDOUT, text=True) for kind in folders}
    try:
        for kind, proc in procs.items():
            rc = proc.wait(timeout=max(1.0, TIMEOUT_S - (time.monotonic() - start)))
            output = (folders[kind] / "snakemake.out").read_text()
            assert rc == 0, f"{kind} run failed:\n{output[-5000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs.values():
            log.close()
    return folders


def _table(folder: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(folder / SMOKE["results_dir"] / "tables" / name)


def test_slurm_results_equal_local_results(runs: dict[str, Path]) -> None:
    config = _test_config()
    local, slurm = (_table(runs[k], "runs.csv") for k in ("local", "slurm"))
    assert len(slurm) == len(config["methods"]) * len(config["budgets"]) * len(config["seeds"])
    assert set(slurm["method"]) == set(config["methods"])
    key = ["dataset", "arch", "method", "budget_metric", "budget_target", "seed"]
    local, slurm = (t.drop(columns=list(NOT_COMPARED)).sort_values(key).reset_index(drop=True) for t in (local, slurm))
    pd.testing.assert_frame_equal(slurm, local, check_exact=True)
    kept = [_table(runs[k], "kept_channels.csv") for k in ("local", "slurm")]
    pd.testing.assert_frame_equal(kept[1], kept[0], check_exact=True)
    assert (runs["slurm"] / SMOKE["figures_dir"]).is_dir()


def _slurm_jobs(folder: Path) -> dict[str, str]:
    """SLURM job id -> the rule it ran, from the plugin's per-job logs (kept by tests/slurm_profile)."""
    logs = sorted((folder / ".snakemake" / "slurm_logs").rglob("*.log"))
    return {p.stem: p.relative_to(folder / ".snakemake" / "slurm_logs").parts[0].removeprefix("rule_")
            for p in logs}


def test_every_gpu_job_went_through_slurm_with_its_resources(runs: dict[str, Path]) -> None:
    config = _test_config()
    jobs = _slurm_jobs(runs["slurm"])
    n_runs = len(config["methods"]) * len(config["budgets"]) * len(config["seeds"])
    rules = sorted(jobs.values())
    assert rules.count("train_base") == len(config["experiments"]) * len(config["seeds"])
    assert rules.count("finetune") == rules.count("evaluate") == n_runs
    assert sum(r.startswith("prune_") for r in rules) == n_runs
    assert not {"fetch_data", "collect", "figures"} & set(rules)  # local rules stay on the submitting host
    for job_id, rule in jobs.items():
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
        assert shown.returncode == 0, shown.stderr
        info = dict(re.findall(r"(\w[\w/:]*)=(\S*)", shown.stdout))
        runtime = RESOURCES.get(rule, {}).get("runtime", RESOURCES["default"]["runtime"])
        assert info["JobState"] == "COMPLETED", (rule, shown.stdout)
        assert info["TimeLimit"] == f"00:{runtime:02d}:00", (rule, info["TimeLimit"])
        assert info["MinMemoryNode"] == f"{RESOURCES['default']['mem_mb']}M", (rule, info["MinMemoryNode"])
        assert info["TresPerJob"] == f"gres:gpu:{GPU_MODEL}:1", (rule, info.get("TresPerJob"))
        threads = config["threads"]["prune" if rule.startswith("prune_") else rule.replace("_base", "")]
        assert info["CpusPerTres"] == f"gres:gpu:{threads}", (rule, info.get("CpusPerTres"))


def test_gpu_jobs_use_the_gpu_slurm_assigned(runs: dict[str, Path]) -> None:
    # Each job logs where it runs (harness/gpu.py): under SLURM it takes the CUDA_VISIBLE_DEVICES that
    # SLURM set (on a CPU-only torch it then says CUDA finds no GPU) instead of leasing a device itself;
    # the local run, with no CUDA_VISIBLE_DEVICES, looks for GPUs itself and never mentions it.
    assigned = re.compile(r"CUDA_VISIBLE_DEVICES='?[0-9]")
    for stage in ("train_base", "prune", "finetune", "evaluate"):
        for kind in ("slurm", "local"):
            logs = list((runs[kind] / SMOKE["results_dir"] / "logs" / stage).rglob("*.log"))
            assert logs, (kind, stage)
            for log in logs:
                text = log.read_text()
                assert bool(assigned.search(text)) == (kind == "slurm"), (kind, log, text[-2000:])
                assert "leased GPU" not in text or kind == "local", (kind, log)
