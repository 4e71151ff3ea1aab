"""harness.models: CIFAR archs build for any channels/classes/size, hub models by name, one-line errors."""
from __future__ import annotations

import types
import urllib.error

import pytest
import torch
from torch import nn

from harness.errors import UserError
from harness.models import ARCHS, CIFAR_ARCHS, HUB_PREFIXES, build_model, classifier, known_arch


def info(in_channels: int = 3, num_classes: int = 10, image_size: int = 32) -> types.SimpleNamespace:
    """Stand-in for harness.data.DatasetInfo (same attribute names)."""
    return types.SimpleNamespace(name="stand-in", num_classes=num_classes, in_channels=in_channels,
                                 image_size=image_size, mean=(0.5,) * in_channels, std=(0.25,) * in_channels)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_arch_lists() -> None:
    assert CIFAR_ARCHS == ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "vgg16", "mobilenetv2")
    assert set(CIFAR_ARCHS) <= set(ARCHS)
    assert HUB_PREFIXES == ("torchvision.", "timm.")


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
@pytest.mark.parametrize(("in_channels", "num_classes", "size"), [(1, 10, 28), (3, 100, 32), (3, 7, 28), (1, 2, 32)])
def test_cifar_arch_forward(arch: str, in_channels: int, num_classes: int, size: int) -> None:
    torch.manual_seed(0)
    model = build_model(arch, info(in_channels, num_classes, size)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    head = classifier(model)
    assert isinstance(head, nn.Linear) and head.out_features == num_classes


@pytest.mark.parametrize("arch", CIFAR_ARCHS)
def test_width_shrinks_params(arch: str) -> None:
    full = build_model(arch, info())
    small = build_model(arch, info(), width=0.25)
    assert n_params(small) < n_params(full) / 4
    tiny = build_model(arch, info(1, 3), width=0.001)  # every layer clamps to >= 1 channel and still runs
    assert all(m.out_channels >= 1 for m in tiny.modules() if isinstance(m, nn.Conv2d))
    assert tiny.eval()(torch.randn(1, 1, 28, 28)).shape == (1, 3)


def test_vgg_width_rounding() -> None:
    vgg = build_model("vgg16", info(), width=0.25)
    convs = [m.out_channels for m in vgg.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    assert classifier(vgg).in_features == 128


@pytest.mark.parametrize(("arch", "depth"), [("resnet20", 20), ("resnet32", 32), ("resnet56", 56), ("resnet110", 110)])
def test_resnet_depth_and_names(arch: str, depth: int) -> None:
    model = build_model(arch, info())
    names = dict(model.named_modules())
    convs = [n for n, m in names.items() if isinstance(m, nn.Conv2d)]
    # depth = stem + 6n convs + fc; plus the two option-B projection shortcuts
    assert len(convs) == depth - 1 + 2
    assert {"conv1", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2", "layer2.0.downsample.0",
            "layer3.0.downsample.1", "fc"} <= set(names)
    assert names["layer1.0"].downsample is None
    assert classifier(model) is model.fc


def test_vgg16_structure() -> None:
    model = build_model("vgg16", info())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and all(c.kernel_size == (3, 3) for c in convs)
    assert [m for m in model.modules() if isinstance(m, nn.Linear)] == [model.classifier]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 13
    assert "features.conv5_3" in dict(model.named_modules())
    assert 14.6e6 < n_params(model) < 14.8e6


def test_mobilenetv2_structure() -> None:
    model = build_model("mobilenetv2", info())
    assert len(model.blocks) == 17
    assert model.conv1.stride == (1, 1)
    dws = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert len(dws) == 17 and all(m.groups == m.in_channels == m.out_channels for m in dws)
    assert model.blocks[0].expand is None and model.blocks[1].expand is not None
    assert classifier(model) is model.classifier and model.classifier.in_features == 1280
    # a 32x32 input reaches the head at 4x4 (stride 8 overall), as in the CIFAR ports
    feats = {}
    model.conv2.register_forward_hook(lambda m, i, o: feats.setdefault("o", o))
    model.eval()(torch.randn(1, 3, 32, 32))
    assert feats["o"].shape[-2:] == (4, 4)


def test_known_arch() -> None:
    for arch in CIFAR_ARCHS:
        assert known_arch(arch)
    assert known_arch("torchvision.resnet50")
    assert known_arch("timm.resnet18")
    assert known_arch("timm.resnet18.a1_in1k")
    assert not known_arch("resnet50")  # ImageNet names need their library prefix
    assert not known_arch("torchvision.fasterrcnn_resnet50_fpn")  # not a classifier
    assert not known_arch("torchvision.nope")
    assert not known_arch("timm.nope_nope")
    assert not known_arch("")
    assert not known_arch(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("arch", ["resnet57", "torchvision.nope", "timm.nope_nope", "resnet50", ""])
def test_unknown_arch_is_one_line_user_error(arch: str) -> None:
    with pytest.raises(UserError) as err:
        build_model(arch, info())
    msg = str(err.value)
    assert "\n" not in msg
    assert "resnet20" in msg and "mobilenetv2" in msg and "torchvision.<name>" in msg and "timm.<name>" in msg


def test_bad_options_are_user_errors() -> None:
    with pytest.raises(UserError, match="width"):
        build_model("resnet20", info(), width=0)
    with pytest.raises(UserError, match="width"):
        build_model("resnet20", info(), width="wide")
    with pytest.raises(UserError, match="depth_mult"):
        build_model("resnet20", info(), depth_mult=2)
    with pytest.raises(UserError, match="pretrained"):
        build_model("resnet20", info(), pretrained=True)
    with pytest.raises(UserError, match="width"):
        build_model("torchvision.resnet18", info(), width=0.5)
    build_model("resnet20", info(), pretrained=False)


def test_timm_models_random_init() -> None:
    torch.manual_seed(0)
    model = build_model("timm.test_resnet", info(1, 7)).eval()
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    head = classifier(model)
    assert head is model.get_classifier() and head.out_features == 7
    vit = build_model("timm.test_vit", info(3, 5)).eval()
    assert vit(torch.randn(1, 3, vit.default_cfg["input_size"][-1], vit.default_cfg["input_size"][-1])).shape == (1, 5)
    assert classifier(vit).out_features == 5


def test_torchvision_model_random_init_and_channels() -> None:
    torch.manual_seed(0)
    model = build_model("torchvision.mobilenet_v3_small", info(1, 4)).eval()
    assert model.features[0][0].in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 4)
    head = classifier(model)
    assert head is model.classifier[-1] and head.out_features == 4


def test_pretrained_offline_is_one_line_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import timm.models._builder
    import torchvision.models._api

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution\nsecond line")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", offline)
    for arch in ("torchvision.resnet18", "timm.resnet18"):
        with pytest.raises(UserError) as err:
            build_model(arch, info(), pretrained=True)
        msg = str(err.value)
        assert "\n" not in msg and "pretrained" in msg and arch in msg


def test_classifier_fallbacks() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    assert classifier(model) is model[2]
    with pytest.raises(UserError):
        classifier(nn.Sequential(nn.Conv2d(3, 3, 1)))
