"""Wall-clock inference latency: what MACs and params buy on a real device (issue 14: FLOPs do not predict
latency, so every pruned and base model gets a measured row: median and interquartile range over repeats,
after warm-up, with the device name, the thread count and the torch version that made it)."""
from __future__ import annotations

import platform
import statistics
import time
from typing import Any

import torch
from torch import nn

from harness.metrics.complexity import eval_mode, model_device_dtype


def _sync(device: torch.device) -> None:
    """CUDA kernels run asynchronously; without a sync the timer would measure only the launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device | str) -> str:
    """A human name for ``device``: the GPU's name, or the CPU model (``/proc/cpuinfo``, else platform)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


@torch.inference_mode()
def latency(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device | str,
            batch_size: int = 1, warmup: int = 10, repeats: int = 50) -> dict[str, Any]:
    """Time ``repeats`` forward passes of a random ``(batch_size, *input_shape)`` batch after ``warmup`` ones.

    The model is moved to ``device`` and run in eval mode (training flags restored). Returns milliseconds per
    batch: ``mean_ms``, ``std_ms`` (sample std, 0 for one repeat), ``p50_ms`` (the median), ``p25_ms`` and
    ``p75_ms`` (the interquartile range), plus the settings, the device name, threads and torch version.
    """
    if batch_size < 1 or repeats < 1 or warmup < 0:
        raise ValueError(f"need batch_size >= 1, repeats >= 1, warmup >= 0; got {batch_size}, {repeats}, {warmup}")
    device = torch.device(device)
    model.to(device)
    _, dtype = model_device_dtype(model)
    x = torch.randn((batch_size, *tuple(input_shape)), device=device, dtype=dtype)
    times: list[float] = []
    with eval_mode(model):
        for _ in range(warmup):
            model(x)
        _sync(device)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            _sync(device)
            times.append((time.perf_counter() - start) * 1000.0)
    q = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return {
        "mean_ms": statistics.fmean(times),
        "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "p50_ms": statistics.median(times),
        "p25_ms": q[0],
        "p75_ms": q[2],
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "device": str(device),
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
