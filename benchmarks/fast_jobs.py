"""Shared pieces of the fast-jobs benchmarks (benchmarks/test_fast_jobs.py): the device, its measured matmul
rate, FLOP counts and the file the measurements go to (read by benchmarks/estimate_grid.py).

The "FLOP ratio" of a measurement is measured time / (FLOPs of the work / the device's measured matmul
rate): 1 would mean the job runs at dense-matmul speed; what is above 1 is convolution inefficiency,
memory-bound layers (BN, ReLU, adds), data movement, kernel-launch and Python overhead. FLOPs: 2 per MAC
(the suite's MAC counter, harness.metrics.complexity); a training step counts 3 forward passes (forward,
backward w.r.t. activations and w.r.t. weights), an evaluation 1.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[1]
TRAIN_PASSES = 3


def bench_device() -> torch.device:
    """CUDA when there is one, else the CPU; ``PRUNEBENCH_BENCH_DEVICE`` overrides (e.g. ``cpu`` on a GPU host)."""
    name = os.environ.get("PRUNEBENCH_BENCH_DEVICE")
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()`` with the device drained before and after."""
    sync(device)
    t = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t


def matmul_rate(device: torch.device, n: int | None = None, repeats: int = 5) -> tuple[float, str]:
    """(FLOP/s, dtype name) of an n x n @ n x n matmul: bf16 on CUDA (what autocast runs), fp32 on the CPU.

    The median of ``repeats`` timed runs after a warm-up; 2 n^3 FLOPs per product.
    """
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    inner = 20 if device.type == "cuda" else 2

    def run() -> None:
        for _ in range(inner):
            torch.mm(a, b)

    run()
    times = [timed(run, device) for _ in range(repeats)]
    return 2.0 * n**3 * inner / statistics.median(times), str(dtype).replace("torch.", "")


def macs_per_image(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    from harness.metrics import complexity

    return int(complexity(model, shape).macs)


def flop_ratio(seconds: float, flops: float, rate: float) -> float:
    """Measured time / time the FLOPs alone need at ``rate``."""
    return seconds / (flops / rate)


def out_path(device: torch.device) -> Path:
    """Where the measurements go (``.benchmarks/`` is git-ignored); ``PRUNEBENCH_BENCH_OUT`` overrides."""
    env = os.environ.get("PRUNEBENCH_BENCH_OUT")
    return Path(env) if env else REPO / ".benchmarks" / f"fast_jobs-{device.type}.json"


class Measurements:
    """Results of one benchmark session, merged into the JSON file (so runs of single tests add up)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.path = out_path(device)
        self.data: dict[str, Any] = {}
        if self.path.is_file():
            try:
                self.data = json.loads(self.path.read_text())
            except ValueError:
                self.data = {}
        self.data["device"] = describe(device)
        self.data["device_type"] = device.type

    def put(self, section: str, key: str, value: dict[str, Any]) -> None:
        self.data.setdefault(section, {})[key] = value
        self.data["measured_at"] = time.strftime("%Y-%m-%d %H:%M:%S")

    def write(self) -> None:
        from harness.io import write_json

        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)
