"""Fixtures of the fast-jobs benchmarks: the device, its matmul rate (measured once per session) and the
measurements file every benchmark adds to (written at the end of the session)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fast_jobs import Measurements, bench_device, describe, matmul_rate  # noqa: E402


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The benchmark device; on the CPU torch uses ``PRUNEBENCH_BENCH_THREADS`` threads (default 1, what a
    quick-preset job uses; several threads on a shared, busy machine mostly measure the other tenants)."""
    dev = bench_device()
    threads = os.environ.get("PRUNEBENCH_BENCH_THREADS")
    if threads or dev.type == "cpu":
        torch.set_num_threads(int(threads or 1))
    return dev


@pytest.fixture(scope="session")
def measurements(device):
    m = Measurements(device)
    yield m
    m.write()
    print(f"\nmeasurements ({describe(device)}) written to {m.path}")


@pytest.fixture(scope="session")
def rate(device, measurements) -> float:
    """The device's dense matmul rate in FLOP/s (bf16 on CUDA, fp32 on the CPU)."""
    flops, dtype = matmul_rate(device)
    measurements.put("matmul", "rate", {"flops_per_s": flops, "dtype": dtype})
    print(f"\n{describe(device)}: {dtype} matmul {flops / 1e12:.3f} TFLOP/s")
    return flops
