"""Wall-clock inference latency: a secondary metric (MACs are the budget; latency shows what they buy)."""
from __future__ import annotations

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


@torch.inference_mode()
def latency(model: nn.Module, input_shape: tuple[int, int, int], device: torch.device | str,
            batch_size: int = 1, warmup: int = 10, repeats: int = 50) -> dict[str, Any]:
    """Time ``repeats`` forward passes of a random ``(batch_size, *input_shape)`` batch after ``warmup`` ones.

    The model is moved to ``device`` and run in eval mode (training flags restored). Returns milliseconds per
    batch: ``mean_ms``, ``std_ms`` (sample std, 0 for one repeat), ``p50_ms``, plus the settings used.
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
    return {
        "mean_ms": statistics.fmean(times),
        "std_ms": statistics.stdev(times) if len(times) > 1 else 0.0,
        "p50_ms": statistics.median(times),
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "device": str(device),
    }
