"""CPU training and evaluation throughput of the quick preset's models (pytest-benchmark).

    python -m pytest benchmarks/test_train_throughput.py --benchmark-enable

images/s = batch size / mean time of one step; the numbers go in the issue's closing note, not in tests.
"""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from harness.models import build_model

BATCH = 128
FMNIST = SimpleNamespace(name="fashionmnist", num_classes=10, in_channels=1, image_size=28)


def _model(arch: str, **options) -> nn.Module:
    torch.manual_seed(0)
    return build_model(arch, FMNIST, **options)


@pytest.mark.parametrize("arch,options", [("resnet20", {}), ("vgg16", {"width": 0.25})])
def test_train_step_images_per_second(benchmark, arch: str, options: dict) -> None:
    torch.set_num_threads(2)
    model = _model(arch, **options).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(BATCH, 1, 28, 28), torch.randint(0, 10, (BATCH,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    step()
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    if benchmark.stats is not None:
        benchmark.extra_info["images_per_second"] = BATCH / benchmark.stats.stats.mean


@pytest.mark.parametrize("arch,options", [("resnet20", {}), ("vgg16", {"width": 0.25})])
def test_eval_images_per_second(benchmark, arch: str, options: dict) -> None:
    torch.set_num_threads(2)
    model = _model(arch, **options).eval()
    x = torch.randn(500, 1, 28, 28)

    def forward() -> None:
        with torch.inference_mode():
            model(x)

    benchmark.pedantic(forward, rounds=5, iterations=1, warmup_rounds=1)
    if benchmark.stats is not None:
        benchmark.extra_info["images_per_second"] = 500 / benchmark.stats.stats.mean
