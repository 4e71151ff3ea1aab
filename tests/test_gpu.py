"""Tests for harness.gpu: concurrent jobs get distinct GPUs, waiters wait, dead holders free their GPU."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness import gpu
from harness.errors import UserError
from harness.gpu import lease_device

REPO = Path(__file__).resolve().parents[1]

# Leases a GPU, writes what it got to argv[1], holds it until the file argv[2] exists (or forever).
HOLDER = textwrap.dedent(
    '''
    import json, logging, os, sys, time
    logging.basicConfig(level=logging.INFO)
    from harness.gpu import lease_device
    out, release = sys.argv[1], sys.argv[2]
    t0 = time.monotonic()
    lease = lease_device(poll_s=0.05)
    info = {"cvd": os.environ.get("CUDA_VISIBLE_DEVICES"), "index": lease.index, "device": lease.device,
            "source": lease.source, "waited": time.monotonic() - t0}
    with open(out + ".tmp", "w") as fh:
        json.dump(info, fh)
    os.replace(out + ".tmp", out)
    while not os.path.exists(release):
        time.sleep(0.02)
    '''
)


@pytest.fixture
def no_cvd():
    """Start without CUDA_VISIBLE_DEVICES and restore the original afterwards (a lease sets it)."""
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PRUNEBENCH_FAKE_GPU_COUNT")}
    for k in saved:
        os.environ.pop(k, None)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    for lease in list(gpu._HELD):
        lease.release()


class Holders:
    """Subprocesses running HOLDER with a shared lock dir and a fake GPU count."""

    def __init__(self, tmp: Path, gpus: int) -> None:
        self.tmp, self.procs = tmp, []
        (tmp / "HOLDER.py").write_text(HOLDER)
        self.env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
        self.env.update(PYTHONPATH=str(REPO), PRUNEBENCH_FAKE_GPU_COUNT=str(gpus),
                        PRUNEBENCH_GPU_LOCK_DIR=str(tmp / "locks"))

    def start(self, name: str) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, str(self.tmp / "HOLDER.py"), str(self.tmp / f"{name}.json"),
                              str(self.tmp / f"{name}.release")], env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def result(self, name: str, timeout: float = 60) -> dict:
        path, deadline = self.tmp / f"{name}.json", time.monotonic() + timeout
        while not path.exists():
            assert time.monotonic() < deadline, f"{name} never got a lease"
            time.sleep(0.02)
        return json.loads(path.read_text())

    def release(self, name: str) -> None:
        (self.tmp / f"{name}.release").touch()

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture
def holders(tmp_path: Path):
    made: list[Holders] = []

    def make(gpus: int) -> Holders:
        made.append(Holders(tmp_path, gpus))
        return made[-1]

    yield make
    for h in made:
        h.close()


def test_concurrent_jobs_get_distinct_gpus_and_a_fourth_waits(holders, tmp_path: Path) -> None:
    h = holders(3)
    for name in ("a", "b", "c"):
        h.start(name)
    got = {name: h.result(name) for name in ("a", "b", "c")}
    assert sorted(r["cvd"] for r in got.values()) == ["0", "1", "2"]
    assert all(r["source"] == "lease" and r["device"] == "cuda" and str(r["index"]) == r["cvd"]
               for r in got.values())

    fourth = h.start("d")
    time.sleep(1.0)
    assert not (tmp_path / "d.json").exists() and fourth.poll() is None, "4th job did not wait"
    freed = next(name for name, r in got.items() if r["index"] == 1)
    h.release(freed)
    d = h.result("d")
    # it was still waiting 1 s after starting (asserted above); under load its start-up eats into that second
    assert d["cvd"] == "1" and d["index"] == 1 and d["waited"] > 0.0
    for name in ("a", "b", "c", "d"):
        h.release(name)
    assert fourth.wait(timeout=30) == 0
    assert "all 3 GPUs are busy" in fourth.stderr.read()


def test_killed_holder_frees_its_gpu(holders, tmp_path: Path, no_cvd) -> None:
    h = holders(1)
    victim = h.start("victim")
    assert h.result("victim")["index"] == 0
    with pytest.raises(UserError, match="all 1 GPUs are leased"):
        lease_device(lock_dir=tmp_path / "locks", device_count=1, timeout_s=0.2, poll_s=0.05)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=30) == -signal.SIGKILL
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    with lease_device(lock_dir=tmp_path / "locks", device_count=1, timeout_s=5, poll_s=0.05) as lease:
        assert (lease.index, lease.source, os.environ["CUDA_VISIBLE_DEVICES"]) == (0, "lease", "0")
    assert not lease.held


def test_release_and_timeout_in_process(tmp_path: Path, no_cvd) -> None:
    first = lease_device(lock_dir=tmp_path, device_count=1)
    assert first.held and first in gpu._HELD
    os.environ.pop("CUDA_VISIBLE_DEVICES")  # pretend to be another job
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        lease_device(lock_dir=tmp_path, device_count=1, timeout_s=0.3, poll_s=0.05)
    assert time.monotonic() - t0 >= 0.3 and "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    assert f"pid {os.getpid()}" in str(e.value)  # names the holder
    first.release()
    first.release()  # idempotent
    assert not gpu._HELD
    second = lease_device(lock_dir=tmp_path, device_count=1, timeout_s=0.3)
    assert second.index == 0
    second.release()


@pytest.mark.parametrize("preset,device", [("3", "cuda"), ("0,1", "cuda"), ("", "cpu"), ("-1", "cpu")])
def test_preset_cuda_visible_devices_is_honoured(tmp_path: Path, no_cvd, preset: str, device: str) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = preset
    lease = lease_device(lock_dir=tmp_path / "locks", device_count=4)
    assert (lease.device, lease.index, lease.source) == (device, None, "cluster")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == preset
    assert not (tmp_path / "locks").exists() and not lease.held


def test_preset_but_no_cuda_runs_on_cpu(tmp_path: Path, no_cvd, caplog) -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = "2"
    os.environ["PRUNEBENCH_FAKE_GPU_COUNT"] = "0"
    with caplog.at_level(logging.WARNING, logger="harness.gpu"):
        lease = lease_device(lock_dir=tmp_path)
    assert lease.device == "cpu" and "no GPU" in caplog.text and os.environ["CUDA_VISIBLE_DEVICES"] == "2"


@pytest.mark.parametrize("how", ["argument", "env"])
def test_no_gpu_gives_cpu_with_warning(tmp_path: Path, no_cvd, caplog, how: str) -> None:
    if how == "env":
        os.environ["PRUNEBENCH_FAKE_GPU_COUNT"] = "0"
    with caplog.at_level(logging.WARNING, logger="harness.gpu"):
        lease = lease_device(lock_dir=tmp_path / "locks", device_count=0 if how == "argument" else None)
    assert (lease.device, lease.index, lease.source) == ("cpu", None, "cpu")
    assert "no GPU found, running on CPU" in caplog.text
    assert "CUDA_VISIBLE_DEVICES" not in os.environ and not (tmp_path / "locks").exists()


def test_real_detection_does_not_crash(tmp_path: Path, no_cvd) -> None:
    """On this machine (GPU or not), detection answers a count and leaves CUDA uninitialised."""
    with lease_device(lock_dir=tmp_path) as lease:
        assert lease.device in ("cpu", "cuda")
        torch = sys.modules.get("torch")
        assert torch is None or not torch.cuda.is_initialized()
