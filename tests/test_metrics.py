"""harness.metrics: MACs/params against published sizes and two independent counters, top-k, latency."""
from __future__ import annotations

import dataclasses
import types

import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from harness.metrics import Complexity, complexity, latency, topk_accuracy
from harness.models import build_model


def info(in_channels: int = 3, num_classes: int = 10) -> types.SimpleNamespace:
    """Stand-in for harness.data.DatasetInfo (same attribute names)."""
    return types.SimpleNamespace(name="stand-in", num_classes=num_classes, in_channels=in_channels,
                                 image_size=32, mean=(0.5,) * in_channels, std=(0.25,) * in_channels)


def close(value: float, reference: float, rel: float = 0.01) -> bool:
    return abs(value - reference) <= rel * reference


def test_resnet56_reference_size() -> None:
    cx = complexity(build_model("resnet56", info()), (3, 32, 32))
    # 125.49 M is option A; the option-B projections add exactly 2 x 131072 MACs (16x16x32x16 and 8x8x64x32)
    assert cx.macs == 125_485_696 + 262_144
    assert close(cx.macs, 125.49e6) and close(cx.params, 0.85e6)


def test_resnet50_reference_size() -> None:
    cx = complexity(build_model("torchvision.resnet50", info(3, 1000)), (3, 224, 224))
    assert close(cx.macs, 4.11e9) and close(cx.params, 25.56e6)
    assert cx.params == 25_557_032


CONV_LINEAR_OPS = {"convolution", "_convolution", "addmm", "mm", "bmm", "matmul"}


@pytest.mark.parametrize("arch", ["resnet20", "resnet56", "mobilenetv2", "vgg16"])
def test_cross_check_flop_counter_and_torch_pruning(arch: str) -> None:
    model = build_model(arch, info())
    cx = complexity(model, (3, 32, 32))
    x = torch.zeros(1, 3, 32, 32)

    # PyTorch's dispatcher-level counter: FLOPs = 2 x MACs for conv and matmul, biases not counted
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    flops = sum(n for op, n in counter.get_flop_counts()["Global"].items()
                if str(op).split(".")[1] in CONV_LINEAR_OPS)
    assert flops == 2 * cx.macs

    # Torch-Pruning's hook counter; its conv+linear layers also count bias adds (here only the fc bias)
    ops, params, layer_ops, _ = tp.utils.count_ops_and_params(model, x, layer_wise=True)
    assert params == cx.params
    conv_linear = sum(n for m, n in layer_ops.items() if isinstance(m, (nn.Conv2d, nn.Linear)) and n is not None)
    assert close(conv_linear, cx.macs) and conv_linear - cx.macs == 10  # exactly the 10 fc-bias adds
    # Its total also counts BN (2/elt), ReLU and pooling: 0.3 % (VGG) to 5.5 % (MobileNetV2, thin layers) more
    assert cx.macs < ops < 1.06 * cx.macs


def test_complexity_hand_counted_and_mode_restored() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)          # 4*5*5 outs x 2*3*3 = 1800
            self.dw = nn.Conv2d(4, 4, 3, stride=2, groups=4)   # 4*2*2 outs x 1*3*3 = 144
            self.bn = nn.BatchNorm2d(4)
            self.tok = nn.Linear(4, 6)                        # 4 tokens x 4*6 = 96
            self.fc = nn.Linear(6, 3)                         # used twice: 2 x 6*3 = 36

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.bn(self.dw(self.conv(x)))
            x = self.tok(x.flatten(2).transpose(1, 2)).mean(1)
            return self.fc(x) + self.fc(x)

    net = Net().double()  # the probe input must follow the model's dtype
    net.train()
    net.bn.eval()
    cx = complexity(net, (2, 5, 5))
    assert cx == Complexity(macs=1800 + 144 + 96 + 36, params=sum(p.numel() for p in net.parameters()))
    assert net.training and net.conv.training and not net.bn.training
    assert net.bn.num_batches_tracked.item() == 0  # eval forward: running stats untouched
    with pytest.raises(dataclasses.FrozenInstanceError):
        cx.macs = 0  # type: ignore[misc]


class FixedLogits(nn.Module):
    """Returns its input as logits; records the mode it was called in."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return x * self.scale


def test_topk_accuracy_known_answers() -> None:
    logits = torch.tensor([[0.9, 0.1, 0.0],   # label 0: top1
                           [0.5, 0.3, 0.2],   # label 1: top2
                           [0.1, 0.2, 0.7],   # label 0: top3
                           [0.2, 0.6, 0.1]])  # label 1: top1
    labels = torch.tensor([0, 1, 0, 1])
    loader = [(logits[:3], labels[:3]), [logits[3:], labels[3:]]]  # uneven batches, tuple or list
    model = FixedLogits().train()
    acc = topk_accuracy(model, loader, "cpu", ks=(1, 2, 5))
    assert acc == {"top1": 50.0, "top2": 75.0, "top5": 100.0}  # top5 clipped to top3 on 3 classes
    assert model.modes == [False, False] and model.training
    assert topk_accuracy(model, loader, torch.device("cpu")) == {"top1": 50.0, "top5": 100.0}


def test_topk_accuracy_empty_loader() -> None:
    from harness.errors import UserError

    with pytest.raises(UserError):
        topk_accuracy(FixedLogits(), [], "cpu")


def test_latency_fields() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(2, 1, 8, 8))  # materialise the lazy layer
    model.train()
    res = latency(model, (1, 8, 8), "cpu", batch_size=3, warmup=1, repeats=4)
    assert set(res) == {"mean_ms", "std_ms", "p50_ms", "p25_ms", "p75_ms", "batch_size", "warmup", "repeats",
                        "device", "device_name", "threads", "torch_version"}
    assert res["mean_ms"] > 0 and res["p50_ms"] > 0 and res["std_ms"] >= 0
    assert res["p25_ms"] <= res["p50_ms"] <= res["p75_ms"]  # the interquartile range brackets the median
    assert res["device_name"] and res["threads"] == torch.get_num_threads() and res["torch_version"] == torch.__version__
    assert (res["batch_size"], res["warmup"], res["repeats"], res["device"]) == (3, 1, 4, "cpu")
    assert model.training
    one = latency(model, (1, 8, 8), "cpu", warmup=0, repeats=1)
    assert one["std_ms"] == 0.0 and one["batch_size"] == 1
    with pytest.raises(ValueError):
        latency(model, (1, 8, 8), "cpu", repeats=0)


def test_evaluate_writes_latency_rows_for_the_pruned_and_the_base_model() -> None:
    """Issue 14: every run records the measured latency of its model and of its base, on the same device."""
    import copy

    from harness.cli.evaluate import latency_columns
    from harness.models.cifar_resnet import CifarResNet
    from harness.prune import apply_plan

    base = CifarResNet(8, 10, 3, width=0.5).eval()
    pruned = apply_plan(copy.deepcopy(base), {"layer1.0.conv1": [0, 1], "layer2.0.conv1": [0, 1, 2]},
                        torch.zeros(1, 3, 16, 16))
    opts = {"latency_batch_size": 1, "latency_large_batch": 8, "latency_warmup": 1, "latency_repeats": 3}
    cols = latency_columns(pruned, base, (3, 16, 16), torch.device("cpu"), opts)
    for prefix in ("", "base_"):
        for tag in ("", "large_"):
            assert cols[f"{prefix}latency_{tag}ms"] > 0 and cols[f"{prefix}latency_{tag}iqr_ms"] >= 0
    assert (cols["latency_batch_size"], cols["latency_large_batch"]) == (1, 8)
    assert cols["latency_threads"] == torch.get_num_threads() and cols["latency_device"]
    from harness.results.schema import validate_record  # the columns are the run record's
    assert set(cols) <= set(validate_record.__globals__["COLUMN_TYPES"])
