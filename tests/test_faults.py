"""Reliability under faults (issue 6): SIGKILL the whole Snakemake process group (Snakemake and its jobs)
during training, during a search and during collect; the same command run again finishes with the same
tables as an uninterrupted run (CPU, same seeds), no finished job is recomputed, and no partial file is ever
read as a result.

One module-scoped fixture runs the DAG twice, side by side in temporary folders (``--directory``): once
without interruption (the reference) and once killed three times, each time re-running the same command.
A small config (the smoke preset's data and model) keeps it fast: graph-rl only, one budget, a 4-epoch base
training (checkpointed per epoch) and an 8-episode search (agent checkpointed every 2 episodes).

Kill points: training after its first epoch checkpoint; the search after its first agent checkpoint;
collect after it wrote ``runs.csv`` and before the other tables. Collect takes well under a second, so it
is held there by a test hook (``PRUNEBENCH_TEST_COLLECT_PAUSE_S``, read by ``harness.results.collect``).

The command passes ``--rerun-incomplete``: Snakemake refuses to start when a killed job had written all of
its outputs before Snakemake could record it as finished (docs/faults.md). Stale Snakemake lock files of the
killed runs are removed by the Snakefile itself (``harness.workflow_lock``); nothing else is done between
the kill and the rerun.
"""
from __future__ import annotations

import ast
import csv
import hashlib
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
EPOCHS, EPISODES, UPDATE_EVERY = 4, 8, 2
# The smoke preset's data, model and narrow graph-rl policy, spelled out so that edits to smoke.yaml do not
# move the kill points; graph-rl only, one budget, a base training and a search long enough to be cut.
CONFIG = {
    "preset": "faults",
    "data_root": "data",
    "results_dir": "results",
    "figures_dir": "figures/out",
    "seeds": [0],
    "threads": {"train": 1, "finetune": 1, "prune": 1, "evaluate": 1},
    "data": {"synthetic": {"synthetic_train": 600, "synthetic_test": 200, "search_size": 100,
                           "synthetic_image_size": 16, "synthetic_classes": 4, "synthetic_channels": 3}},
    "experiments": [{"dataset": "synthetic", "arch": "resnet20", "arch_options": {"width": 0.5},
                     "train": "base", "finetune": "ft"}],
    "budgets": [{"metric": "macs", "target": 0.5}],
    "methods": {"graph-rl": {"episodes": EPISODES, "update_every": UPDATE_EVERY, "ppo_epochs": 1, "layers": 1,
                             "heads": 1, "head_dim": 8, "bn_batches": 1, "eval_batch_size": 100}},
    "prune": {"min_keep_fraction": 0.1, "tolerance": 0.01, "scope": "all", "heldout_images": 40},
    "recipes": {"base": {"epochs": EPOCHS, "batch_size": 50, "lr": 0.1, "weight_decay": 5.0e-4, "schedule": "cosine"},
                "ft": {"epochs": 1, "batch_size": 50, "lr": 0.1, "weight_decay": 5.0e-4, "schedule": "cosine"}},
    "evaluate": {"batch_size": 200},
}
COMMAND = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--configfile", "faults.yaml",
           "--cores", "2", "--rerun-incomplete"]
PAUSE_ENV = "PRUNEBENCH_TEST_COLLECT_PAUSE_S"
TIMEOUT = 900  # seconds for any one phase; the machine may be shared

BASE = "results/base/synthetic/resnet20/seed0"
RUN = "results/runs/synthetic/resnet20/graph-rl/macs-0.5/seed0"
TRAIN_CKPT = "results/checkpoints/base/synthetic/resnet20/seed0"
AGENT = "results/checkpoints/prune/synthetic/resnet20/graph-rl/macs-0.5/seed0/agent.pt"
TABLES = ["runs.csv", "summary.csv", "kept_channels.csv", "reported.csv", "synthetic_resnet20.md"]
# The declared outputs of every rule (one job per rule in this config).
OUTPUTS = {
    "fetch_data": ["data/.ready/synthetic"],
    "train_base": [f"{BASE}/model.pt", f"{BASE}/metrics.json", f"{BASE}/train_log.csv"],
    "prune_graph_rl": [f"{RUN}/plan.json", f"{RUN}/search_log.csv"],
    "finetune": [f"{RUN}/finetuned.pt", f"{RUN}/finetune.json", f"{RUN}/finetune_log.csv"],
    "evaluate": [f"{RUN}/metrics.json"],
    "collect": [f"results/tables/{t}" for t in TABLES],
    "figures": [f"figures/out/{n}.{e}" for n in ("accuracy_vs_macs_synthetic_resnet20",
                                                 "kept_channels_synthetic_resnet20_macs-0.5") for e in ("png", "pdf")],
}
# Columns and keys that measure time or name the commit: they differ between any two runs.
VOLATILE = re.compile(r"wall_s|seconds|per_second|git_commit|latency")  # measured timings differ run to run


# ------------------------------------------------------------------------------------------ running the DAG
def _start(workdir: Path, log_name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The same command every time; its own session, so that killpg reaches Snakemake and all its jobs."""
    log = open(workdir / log_name, "w")
    try:
        return subprocess.Popen(COMMAND, cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
    finally:
        log.close()


def _kill_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    try:
        while not ready():
            assert proc.poll() is None, f"the DAG ended (rc {proc.returncode}) before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        _stop(proc)
    for _ in range(100):  # the jobs were orphaned by the kill: wait until none of the group is left
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _jobs(log_text: str) -> tuple[list[str], list[str]]:
    """Rules whose jobs Snakemake started and finished, from its own log lines."""
    started = re.findall(r"^(?:local)?rule (\w+):$", log_text, flags=re.M)
    finished = re.findall(r"^Finished jobid: \d+ \(Rule: (\w+)\)$", log_text, flags=re.M)
    return [r for r in started if r != "all"], [r for r in finished if r != "all"]


def _digest(path: Path) -> tuple[int, str]:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


def _unreadable(path: Path) -> str | None:
    """Why a result file is not a complete file of its kind, or None."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".csv":
            rows = list(csv.reader(io.StringIO(path.read_text())))
            assert rows and all(len(r) == len(rows[0]) for r in rows), "ragged rows"
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=False)
        elif path.suffix in (".png", ".pdf"):
            data = path.read_bytes()
            assert data.startswith(b"\x89PNG" if path.suffix == ".png" else b"%PDF"), "bad header"
            assert (b"IEND" in data[-16:]) if path.suffix == ".png" else (b"%%EOF" in data[-32:]), "truncated"
        elif path.suffix == ".md":
            assert path.read_text().endswith("\n"), "truncated"
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return f"{path}: {type(exc).__name__}: {exc}"
    return None


@dataclass
class Phase:
    name: str
    log: str
    started: list[str]
    finished: list[str]
    present: dict[str, bool] = field(default_factory=dict)  # declared output -> exists after the phase
    unreadable: list[str] = field(default_factory=list)      # result files that did not load after the kill
    collect_log: str = ""


@dataclass
class Runs:
    reference: Path
    killed: Path
    phases: dict[str, Phase]
    finished_digests: dict[str, tuple[int, str]]  # outputs of jobs finished before a kill -> (mtime, sha256)
    wall_s: float


def _observe(workdir: Path, name: str, log_name: str) -> Phase:
    text = (workdir / log_name).read_text()
    started, finished = _jobs(text)
    phase = Phase(name, text, started, finished)
    if (workdir / "results/logs/collect.log").exists():
        phase.collect_log = (workdir / "results/logs/collect.log").read_text()
    for outputs in OUTPUTS.values():
        for rel in outputs:
            phase.present[rel] = (workdir / rel).exists()
    for folder in ("results", "figures"):
        for path in sorted((workdir / folder).rglob("*")):
            if path.is_file() and not path.name.startswith(".") and (problem := _unreadable(path)):
                phase.unreadable.append(problem)
    return phase


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    t0 = time.monotonic()
    reference, killed = tmp_path_factory.mktemp("reference"), tmp_path_factory.mktemp("killed")
    for workdir in (reference, killed):
        (workdir / "faults.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    ref_proc = _start(reference, "snakemake.log")  # runs beside the killed one: the DAGs are mostly sequential
    procs = [ref_proc]
    phases: dict[str, Phase] = {}
    digests: dict[str, tuple[int, str]] = {}
    try:
        kills = [
            ("train", lambda: (killed / TRAIN_CKPT / "epoch-0001.pt.sha256").exists(), None),
            ("search", lambda: (killed / AGENT).exists(), None),
            ("collect", lambda: (killed / "results/tables/runs.csv").exists(), {PAUSE_ENV: "600"}),
        ]
        for name, ready, env in kills:
            proc = _start(killed, f"{name}.log", env)
            _kill_when(proc, ready, f"the kill point of {name!r}")
            phases[name] = _observe(killed, name, f"{name}.log")
            done = {rule for phase in phases.values() for rule in phase.finished}
            for rule in done:
                for rel in OUTPUTS[rule]:
                    digests.setdefault(rel, _digest(killed / rel))
        final = _start(killed, "final.log")
        procs.append(final)
        assert final.wait(timeout=TIMEOUT) == 0, (killed / "final.log").read_text()[-3000:]
        phases["final"] = _observe(killed, "final", "final.log")
        assert ref_proc.wait(timeout=TIMEOUT) == 0, (reference / "snakemake.log").read_text()[-3000:]
    finally:
        for proc in procs:
            _stop(proc)
    wall = time.monotonic() - t0
    print(f"faults: reference and killed-three-times DAGs in {wall:.0f}s")
    return Runs(reference, killed, phases, digests, wall)


# ------------------------------------------------------------------------------------------- comparisons
def _table(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df[[c for c in df.columns if not VOLATILE.search(c)]]


def _markdown(path: Path) -> str:
    """A Markdown table without its measured columns (latency, search wall time: they differ run to run)."""
    lines, masked = [], []
    for line in path.read_text().splitlines():
        cells = line.split(" | ")
        if line.startswith("|") and any("Latency" in c or "wall time" in c for c in cells):
            masked = [i for i, c in enumerate(cells) if "Latency" in c or "wall time" in c]  # a header row
        elif line.startswith("|") and masked and not line.startswith("|---"):
            line = " | ".join("<measured>" if i in masked else c for i, c in enumerate(cells))
        elif not line.startswith("|"):
            masked = []
        lines.append(line)
    return "\n".join(lines)


def _json(path: Path) -> dict:
    return {k: v for k, v in json.loads(path.read_text()).items() if not VOLATILE.search(k)}


def _state(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=False)
    return obj["state_dict"] if isinstance(obj, dict) else obj.state_dict()


def _assert_same_state(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), f"{key} differs between {a} and {b}"


def _plan(path: Path) -> dict:
    plan = json.loads(path.read_text())
    plan["meta"] = {k: v for k, v in plan["meta"].items() if not VOLATILE.search(k)}
    return plan


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.slow
def test_killed_training_resumes_from_its_checkpoint(runs: Runs) -> None:
    train = runs.phases["train"]
    assert train.started[-1] == "train_base" and "train_base" not in train.finished
    assert not train.present[f"{BASE}/model.pt"], "killed too late: training had finished"
    log = (runs.killed / "results/logs/train_base/synthetic/resnet20/seed0.log").read_text()
    resumed = re.search(rf"resuming after epoch (\d+)/{EPOCHS}", log)
    assert resumed and 1 <= int(resumed.group(1)) < EPOCHS, log[-2000:]
    assert "train_base" in runs.phases["search"].finished
    # Bit-identical to the uninterrupted run: weights, per-epoch log, accuracy.
    _assert_same_state(runs.reference / BASE / "model.pt", runs.killed / BASE / "model.pt")
    pd.testing.assert_frame_equal(_table(runs.reference / BASE / "train_log.csv"),
                                  _table(runs.killed / BASE / "train_log.csv"))
    assert _json(runs.reference / BASE / "metrics.json") == _json(runs.killed / BASE / "metrics.json")
    assert not (runs.killed / TRAIN_CKPT).exists()  # resumable state removed once the outputs are complete


@pytest.mark.slow
def test_killed_search_resumes_from_its_agent_checkpoint(runs: Runs) -> None:
    search = runs.phases["search"]
    assert "prune_graph_rl" in search.started and "prune_graph_rl" not in search.finished
    assert not search.present[f"{RUN}/plan.json"], "killed too late: the search had finished"
    log = (runs.killed / "results/logs/prune/synthetic/resnet20/graph-rl/macs-0.5/seed0.log").read_text()
    resumed = re.search(r"graph-rl: resuming after episode (\d+)", log)
    assert resumed and UPDATE_EVERY <= int(resumed.group(1)) < EPISODES, log[-2000:]
    assert "opening bar" not in log  # the resumed search took its reward state from the checkpoint
    # The resumed search ends where the uninterrupted one does: same episodes, same plan.
    pd.testing.assert_frame_equal(_table(runs.reference / RUN / "search_log.csv"),
                                  _table(runs.killed / RUN / "search_log.csv"))
    assert len(pd.read_csv(runs.killed / RUN / "search_log.csv")) == EPISODES
    assert _plan(runs.reference / RUN / "plan.json") == _plan(runs.killed / RUN / "plan.json")
    _assert_same_state(runs.reference / RUN / "finetuned.pt", runs.killed / RUN / "finetuned.pt")


@pytest.mark.slow
def test_killed_collect_leaves_no_table_that_is_read(runs: Runs) -> None:
    collect = runs.phases["collect"]
    assert collect.started[-1] == "collect" and "collect" not in collect.finished
    assert "pausing after runs.csv" in collect.collect_log  # the hook held it there when the kill came
    # Killed between two writes: runs.csv is complete, the other tables were never written, nothing read them.
    assert collect.present["results/tables/runs.csv"]
    assert not collect.present["results/tables/summary.csv"]
    assert "figures" not in collect.started
    final = runs.phases["final"]
    assert sorted(final.started) == ["collect", "figures"], final.started
    assert final.started.index("collect") < final.started.index("figures")


@pytest.mark.slow
def test_rerun_gives_the_tables_of_an_uninterrupted_run(runs: Runs) -> None:
    for name in TABLES:
        ref, got = runs.reference / "results/tables" / name, runs.killed / "results/tables" / name
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(_table(ref), _table(got), check_exact=True)
        else:
            assert _markdown(ref) == _markdown(got)
    runs_csv = pd.read_csv(runs.killed / "results/tables/runs.csv")
    assert list(runs_csv["method"]) == ["graph-rl"] and (runs_csv["achieved_reduction"] >= 0.49).all()
    assert _json(runs.reference / RUN / "metrics.json") == _json(runs.killed / RUN / "metrics.json")
    for rel in OUTPUTS["figures"]:
        assert (runs.killed / rel).stat().st_size > 1000


@pytest.mark.slow
def test_no_finished_job_is_recomputed(runs: Runs) -> None:
    order = ["train", "search", "collect", "final"]
    for i, name in enumerate(order[1:], start=1):
        done_before = {r for earlier in order[:i] for r in runs.phases[earlier].finished}
        again = done_before & set(runs.phases[name].started)
        assert not again, f"{name}: re-ran finished jobs {sorted(again)}"
    # Each phase started only the jobs the previous one had not finished.
    assert "fetch_data" in runs.phases["train"].finished
    assert "train_base" in runs.phases["search"].started
    assert runs.finished_digests, "no job had finished before a kill"
    changed = [rel for rel, digest in runs.finished_digests.items() if _digest(runs.killed / rel) != digest]
    assert not changed, f"outputs of finished jobs were rewritten: {changed}"
    print(f"faults: {len(runs.finished_digests)} outputs of finished jobs unchanged; fixture {runs.wall_s:.0f}s")


@pytest.mark.slow
def test_no_partial_file_after_a_kill(runs: Runs) -> None:
    for name, phase in runs.phases.items():
        assert not phase.unreadable, f"after {name}: {phase.unreadable}"
    # Temp files of writes the kills cut short are gone once the same destinations were written again.
    leftovers = [str(p) for p in (runs.killed / "results").rglob("*.tmp")]
    assert not leftovers, leftovers


# ------------------------------------------------------------------------------ atomic writes, unit level
def test_exception_mid_write_leaves_no_file(tmp_path: Path) -> None:
    from harness.io import atomic_write, write_text

    dest = tmp_path / "out" / "table.csv"

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_text("a,b\n1,")
        raise KeyboardInterrupt  # BaseException too: Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        atomic_write(dest, half_then_fail)
    assert not dest.exists() and list(dest.parent.iterdir()) == []
    write_text(dest, "a,b\n1,2\n")
    with pytest.raises(RuntimeError):
        atomic_write(dest, lambda tmp: (Path(tmp).write_text("garbage"), (_ for _ in ()).throw(RuntimeError())))
    assert dest.read_text() == "a,b\n1,2\n"  # the old complete file, untouched
    assert [p.name for p in dest.parent.iterdir()] == ["table.csv"]


KILLED_WRITER = """
import os, signal, sys
from pathlib import Path
from harness.io import atomic_write

def write(tmp):
    Path(tmp).write_text("half of a file")
    os.kill(os.getpid(), signal.SIGKILL)

atomic_write(sys.argv[1], write)
"""


def test_sigkill_mid_write_leaves_no_file_and_the_next_write_cleans_up(tmp_path: Path) -> None:
    from harness.io import remove_stale_temps, write_json

    dest = tmp_path / "metrics.json"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(dest)], cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == -signal.SIGKILL
    assert not dest.exists()
    stale = list(tmp_path.glob(".metrics.json.*.tmp"))
    assert len(stale) == 1 and stale[0].read_text() == "half of a file"
    # A temp file of a live writer (this process) is never taken for stale.
    mine = tmp_path / f".metrics.json.{socket.gethostname()}-{os.getpid()}.abc.tmp"
    mine.write_text("in progress")
    write_json(dest, {"top1": 90.5})
    assert json.loads(dest.read_text()) == {"top1": 90.5}
    assert not stale[0].exists() and mine.exists()
    assert remove_stale_temps(dest) == []


# Writes that put bytes at a destination path; inside an atomic_write callback the destination is `tmp`.
_WRITERS = {"save": "torch.save / np.save", "savefig": "savefig", "copyfile": "shutil.copyfile",
            "copy": "shutil.copy", "copy2": "shutil.copy2", "to_csv": "DataFrame.to_csv",
            "to_parquet": "DataFrame.to_parquet", "to_pickle": "DataFrame.to_pickle"}


#: Names under which the searches import modules whose ``save`` is atomic (harness.search.checkpoint).
_ATOMIC_MODULES = ("search_checkpoint",)


def _direct_writes(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        args = list(node.args)
        dest: ast.expr | None = None
        if name == "open" and isinstance(node.func, ast.Name):
            mode = args[1] if len(args) > 1 else next((k.value for k in node.keywords if k.arg == "mode"), None)
            if isinstance(mode, ast.Constant) and any(c in str(mode.value) for c in "wax+"):
                dest = args[0]
        elif name in ("write_text", "write_bytes") and isinstance(node.func, ast.Attribute) and len(args) == 1:
            dest = node.func.value  # Path.write_text(text); harness.io.write_text(path, text) has two arguments
        elif name == "save" and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) \
                and node.func.value.id in _ATOMIC_MODULES:
            dest = None  # harness.search.checkpoint.save(path, fingerprint, state) writes through harness.io
        elif name in ("save", "savefig"):
            dest = args[1] if name == "save" and len(args) > 1 else (args[0] if name == "savefig" and args else None)
        elif name in ("copyfile", "copy", "copy2") and len(args) == 2:
            dest = args[1]
        elif name in ("to_csv", "to_parquet", "to_pickle"):
            dest = args[0] if args else next((k.value for k in node.keywords if k.arg in ("path_or_buf", "path")), None)
        if dest is not None and not (isinstance(dest, ast.Name) and dest.id == "tmp"):
            found.append(f"{path.relative_to(root)}:{node.lineno}: {name}(...) writes in place")
    return found


def test_every_result_is_written_through_the_atomic_helpers() -> None:
    """Static guard: no code of the suite writes a file in place (harness/io.py is where writes happen)."""
    files = [p for folder in ("harness", "baselines", "method", "figures") for p in sorted((ROOT / folder).rglob("*.py"))
             if p != ROOT / "harness" / "io.py"]
    assert len(files) > 20
    found = [hit for p in files for hit in _direct_writes(p)]
    assert not found, "\n".join(found)


def test_direct_write_detector_finds_in_place_writes(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import torch, shutil\nfrom pathlib import Path\n"
                     "torch.save(m, 'model.pt')\nPath('a').write_text('x')\nopen('b', 'w')\n"
                     "shutil.copyfile('a', 'b')\ndf.to_csv('t.csv')\nfig.savefig('f.png')\n"
                     "torch.save(m, tmp)\nopen(tmp, 'wb')\nopen('r.txt')\ndf.to_csv(index=False)\n"
                     "write_text(path, text)\nfig.savefig(tmp, format='png')\n")
    found = [hit.split(": ", 1)[1] for hit in _direct_writes(probe, root=tmp_path)]
    assert found == [f"{name}(...) writes in place"
                     for name in ("save", "write_text", "open", "copyfile", "to_csv", "savefig")]


# ---------------------------------------------------------------------------------- stale Snakemake locks
HOLDER = """
import sys, time
from harness.workflow_lock import release_stale_locks
release_stale_locks(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def test_stale_snakemake_locks_are_removed_only_when_no_run_is_alive(tmp_path: Path) -> None:
    locks = tmp_path / ".snakemake" / "locks"

    def stale() -> None:
        locks.mkdir(parents=True, exist_ok=True)
        (locks / "0.output.lock").write_text("results/tables/runs.csv\n")

    stale()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "holding"  # it found no live run: it removed the stale lock
        assert not locks.exists()
        stale()  # a live run's lock now: another run starting beside it must leave it alone
        probe = subprocess.run([sys.executable, "-c", "import sys; from harness.workflow_lock import "
                                "release_stale_locks as r; print(r(sys.argv[1]))", str(tmp_path)],
                               cwd=ROOT, capture_output=True, text=True, timeout=60,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert probe.stdout.strip() == "False", probe.stderr
        assert (locks / "0.output.lock").exists()
    finally:
        holder.kill()
        holder.wait()
    # The holder died (SIGKILL): its lock is stale now, and the next run removes it.
    probe = subprocess.run([sys.executable, "-c", "import sys; from harness.workflow_lock import "
                            "release_stale_locks as r; print(r(sys.argv[1]))", str(tmp_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert probe.stdout.strip() == "True", probe.stderr
    assert not locks.exists()
