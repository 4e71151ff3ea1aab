"""harness.data.DeviceData and fit's device data path, on the CPU (the same code runs on CUDA).

What is checked: the resident split yields the loader path's batches (same images in the same order, same
epoch length; bit-identical values without augmentation), the crop offsets stay within the padding and the
flip is an exact mirror of the crop, the draws follow the seeds, and a device-path training run resumes
bit-exactly from its per-epoch checkpoint.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from harness.data import DeviceData, TensorImageDataset, TensorTransform, make_loader, tensor_source
from harness.errors import UserError
from harness.train import Recipe, fit, steps_per_epoch
from harness.train.loop import resolve_data_path

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def image_set(n: int = 96, size: int = 8, transform: TensorTransform | None = None, seed: int = 0,
              labels: torch.Tensor | None = None) -> TensorImageDataset:
    """Random uint8 images with pixel values 1..255, so a zero in a crop can only come from the padding."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(1, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    if labels is None:
        labels = torch.randint(0, 4, (n,), generator=g)
    return TensorImageDataset(images, labels, transform)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------- sources
def test_tensor_source_unwraps_subset_chains_and_rejects_other_datasets():
    base = image_set(40, transform=TensorTransform(MEAN, STD, pad=2, flip=True))
    outer_idx, inner_idx = [5, 0, 7, 3], list(range(10, 30))
    ds = Subset(Subset(base, inner_idx), outer_idx)
    src = tensor_source(ds)
    assert src is not None and src.transform is base.transform
    expect = [inner_idx[i] for i in outer_idx]
    assert torch.equal(src.images, base.images[expect]) and torch.equal(src.labels, base.labels[expect])

    floats = TensorDataset(torch.randn(6, 3, 4, 4), torch.arange(6))
    assert torch.equal(tensor_source(floats).images, floats.tensors[0])
    assert tensor_source(TensorImageDataset(base.images, base.labels, transform=lambda b: b.float())) is None
    assert tensor_source(TensorDataset(torch.zeros(4, 3, 2, 2, dtype=torch.uint8), torch.arange(4))) is None

    class Lazy(Dataset):  # an ImageFolder-like dataset: items are made on access
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(3, 4, 4), 0

    assert tensor_source(Lazy()) is None


# ---------------------------------------------------------------------------------- batches vs the loader
@pytest.mark.parametrize("channels_last", [False, True])
def test_ordered_batches_are_the_loaders_bit_for_bit(channels_last):
    ds = Subset(image_set(100, transform=TensorTransform(MEAN, STD)), list(range(3, 90)))
    data = DeviceData.from_dataset(ds, "cpu", channels_last=channels_last)
    for shuffle in (False, True):
        ours = data.ordered(16, shuffle=shuffle, seed=5)
        ref = list(make_loader(ds, 16, shuffle=shuffle, seed=5))
        assert len(ours) == len(ref) == 6  # 87 images: 5 full batches and one of 7
        for (x, y), (rx, ry) in zip(ours, ref):
            assert x.dtype == torch.float32 and torch.equal(x, rx) and torch.equal(y, ry)
            assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert len(data.ordered(16, shuffle=True, seed=5, limit=2)) == 2


def test_epoch_visits_the_loader_paths_batches():
    """Labels = image ids: the device epoch holds the same images in the same batches as the DataLoader of
    fit (generator seeded with the epoch seed, shuffle, drop_last), capped at steps_per_epoch."""
    n = 100
    ds = image_set(n, transform=TensorTransform(MEAN, STD, pad=2, flip=True), labels=torch.arange(n))
    recipe = Recipe(epochs=1, batch_size=16, lr=0.1, max_batches_per_epoch=5)
    spe = steps_per_epoch(n, recipe)
    data = DeviceData.from_dataset(ds, "cpu")
    ours = [y for _, y in data.epoch(16, order_seed=11, aug_seed=3, steps=spe)]
    gen = torch.Generator()
    loader = torch.utils.data.DataLoader(ds, batch_size=16, shuffle=True, drop_last=True, generator=gen)
    gen.manual_seed(11)
    ref = [y for _, y in loader][:spe]
    assert len(ours) == len(ref) == spe == 5
    assert all(torch.equal(a, b) for a, b in zip(ours, ref))
    full = [y for _, y in data.epoch(16, order_seed=11, aug_seed=3)]
    assert len(full) == n // 16 and all(len(y) == 16 for y in full)  # drop_last, like fit's loader


# ------------------------------------------------------------------------------------------ augmentation
def _normalise(u8: torch.Tensor) -> torch.Tensor:
    return TensorTransform(MEAN, STD)(u8)


@pytest.mark.parametrize("channels_last", [False, True])
def test_crop_offsets_stay_in_the_padding_and_flip_is_an_exact_mirror(channels_last):
    pad, size, n = 3, 8, 64
    ds = image_set(n, size, TensorTransform(MEAN, STD, pad=pad, flip=True), labels=torch.arange(n))
    data = DeviceData.from_dataset(ds, "cpu", channels_last=channels_last)
    batches = list(data.epoch(n, order_seed=0, aug_seed=42, drop_last=True))
    assert len(batches) == 1
    x, ids = batches[0]
    # The draws the epoch made: offsets (2, n) in [0, 2*pad], then flips, from a generator seeded aug_seed.
    gen = torch.Generator().manual_seed(42)
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=gen)
    flips = torch.rand(n, generator=gen) < 0.5
    padded = torch.nn.functional.pad(ds.images, (pad, pad, pad, pad))
    seen_offsets, n_flipped = set(), 0
    for b in range(n):
        oy, ox, flip = int(offsets[0, b]), int(offsets[1, b]), bool(flips[b])
        crop = padded[int(ids[b]), :, oy:oy + size, ox:ox + size]
        expect = crop.flip(-1) if flip else crop
        assert torch.equal(x[b], _normalise(expect[None])[0]), b
        # the result is one of the (2p+1)^2 crops of the padded image, mirrored or not, and no other
        matches = [(dy, dx, f) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (False, True)
                   if torch.equal(x[b], _normalise((lambda c: c.flip(-1) if f else c)(
                       padded[int(ids[b]), :, dy:dy + size, dx:dx + size])[None])[0])]
        assert (oy, ox, flip) in matches
        seen_offsets.add((oy, ox))
        n_flipped += flip
    assert 0 < n_flipped < n and len(seen_offsets) > 20
    # padding shows up as zeros exactly where the crop leaves the image (pixels are >= 1 elsewhere)
    raw = torch.round((x * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)) * 255)
    for b in range(n):
        oy = int(offsets[0, b])
        zero_rows = (raw[b, 0] == 0).all(dim=1)
        assert int(zero_rows.sum()) == max(0, pad - oy) + max(0, oy - pad)


def test_epoch_draws_follow_the_seeds():
    ds = image_set(64, transform=TensorTransform(MEAN, STD, pad=2, flip=True))
    data = DeviceData.from_dataset(ds, "cpu")

    def run(order_seed, aug_seed):
        return list(data.epoch(16, order_seed=order_seed, aug_seed=aug_seed))

    a, b = run(1, 2), run(1, 2)
    assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))
    c = run(1, 3)  # new augmentation, same order
    assert all(torch.equal(ya, yc) for (_, ya), (_, yc) in zip(a, c))
    assert not all(torch.equal(xa, xc) for (xa, _), (xc, _) in zip(a, c))
    d = run(4, 2)  # new order
    assert not all(torch.equal(ya, yd) for (_, ya), (_, yd) in zip(a, d))


def test_channels_last_batches_hold_the_same_values():
    ds = image_set(48, transform=TensorTransform(MEAN, STD, pad=2, flip=True))
    plain = list(DeviceData.from_dataset(ds, "cpu").epoch(16, order_seed=0, aug_seed=1))
    nhwc = list(DeviceData.from_dataset(ds, "cpu", channels_last=True).epoch(16, order_seed=0, aug_seed=1))
    for (x, y), (xc, yc) in zip(plain, nhwc):
        assert torch.equal(x, xc) and torch.equal(y, yc)
        assert xc.is_contiguous(memory_format=torch.channels_last) and not xc.is_contiguous()


# ------------------------------------------------------------------------------------------------- fit
def tiny_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.1),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))


def _fit(ds, tmp: Path | None, data_path: str, epochs: int = 3, **kw) -> nn.Module:
    torch.manual_seed(0)
    recipe = Recipe(epochs=epochs, batch_size=16, lr=0.05, data_path=data_path, **kw)
    return fit(tiny_cnn(), ds, recipe, device="cpu", seed=3, checkpoint_dir=None if tmp is None else tmp / "ckpt",
               log_csv=None if tmp is None else tmp / "log.csv")


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_device_path_trains_like_the_loader_path_without_augmentation(tmp_path, one_thread):
    """No augmentation: both paths see bit-identical batches in the same order, so training is identical."""
    ds = Subset(image_set(80, transform=TensorTransform(MEAN, STD)), list(range(70)))
    a = _fit(ds, tmp_path / "loader", "loader", epochs=2)
    b = _fit(ds, tmp_path / "device", "device", epochs=2)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    ra, rb = _rows(tmp_path / "loader" / "log.csv"), _rows(tmp_path / "device" / "log.csv")
    assert [r["train_loss"] for r in ra] == [r["train_loss"] for r in rb] and len(ra) == 2


def test_device_path_resumes_bit_exactly(tmp_path, caplog, one_thread):
    """Augmented device path: drop the newest checkpoint, rerun: resumes after epoch 2, same final weights."""
    ds = Subset(image_set(80, transform=TensorTransform(MEAN, STD, pad=2, flip=True)), list(range(5, 77)))
    reference = {k: v.clone() for k, v in _fit(ds, tmp_path, "device").state_dict().items()}
    ref_rows = _rows(tmp_path / "log.csv")
    for p in (tmp_path / "ckpt").glob("epoch-0003.pt*"):
        p.unlink()
    caplog.set_level(logging.INFO, logger="harness.train")
    resumed = _fit(ds, tmp_path, "device")
    assert "resuming after epoch 2/3" in caplog.text
    for k, v in resumed.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert _rows(tmp_path / "log.csv")[-1]["train_loss"] == ref_rows[-1]["train_loss"]
    # augmentation is on: a loader-path run trains differently, and does not reuse the device checkpoints
    caplog.clear()
    other = _fit(ds, tmp_path, "loader")
    assert "different recipe, seed or training set" in caplog.text and "resuming" not in caplog.text
    assert not all(torch.equal(v, reference[k]) for k, v in other.state_dict().items())


def test_data_path_resolution_and_recipe_options(monkeypatch):
    ds = image_set(32, transform=TensorTransform(MEAN, STD, pad=2, flip=True))
    cpu = torch.device("cpu")
    r = lambda **kw: Recipe(epochs=1, batch_size=8, lr=0.1, **kw)  # noqa: E731
    assert resolve_data_path(r(), ds, cpu) is None  # auto: the loader on the CPU
    assert resolve_data_path(r(data_path="loader"), ds, cpu) is None
    assert resolve_data_path(r(data_path="device"), ds, cpu) is not None

    class Lazy(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.zeros(3, 4, 4), 0

    with pytest.raises(UserError, match="data_path=device needs an in-memory tensor dataset"):
        resolve_data_path(r(data_path="device"), Lazy(), cpu)
    for bad in ({"data_path": "gpu"}, {"compile": "fast"}):
        with pytest.raises(UserError, match="must be one of"):
            r(**bad)
    assert r(compile=False).compile == "off" and r(compile=True).compile == "default"  # YAML's off/on

    calls = []

    def fake_compile(model, mode=None):
        calls.append(mode)
        return lambda x: model(x)

    monkeypatch.setattr(torch, "compile", fake_compile)
    _fit(ds, None, "device", epochs=1, compile="reduce-overhead")
    assert calls == ["reduce-overhead"]
    _fit(ds, None, "device", epochs=1)
    assert calls == ["reduce-overhead"]  # off by default
