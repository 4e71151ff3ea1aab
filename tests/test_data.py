"""Tests for harness.data: on-disk formats, the three splits, transforms, loaders and offline errors.

Fake datasets are written in the exact on-disk formats (CIFAR python pickles, IDX gz, ImageFolder
PNGs) so the real readers run; the real Fashion-MNIST from the Debian package is used when installed.
"""
from __future__ import annotations

import gzip
import hashlib
import pickle
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from harness.data import (
    DATASETS,
    DataConfig,
    DatasetInfo,
    TensorImageDataset,
    TensorTransform,
    build_splits,
    check_available,
    dataset_info,
    fetch,
    make_loader,
)
import harness.data.download as fetch_module
from harness.data.info import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD
from harness.errors import DatasetUnavailable, UserError

torch.set_num_threads(1)

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
TEST_ID_OFFSET = 1000  # ids of test images in the fake CIFAR sets, disjoint from train ids


# ----------------------------------------------------------------------------------------- fixtures


def id_image(image_id: int) -> np.ndarray:
    """A constant-colour 3x32x32 image whose colour encodes ``image_id``: crops and flips keep the
    centre pixel, so the id can be decoded from any augmented view."""
    colour = np.array([image_id // 256, image_id % 256, 77], dtype=np.uint8)
    return np.broadcast_to(colour[:, None, None], (3, 32, 32)).copy()


def decode_ids(batch: torch.Tensor, mean, std) -> list[int]:
    """Inverse of id_image on normalised (B, 3, 32, 32) tensors, read at the centre pixel."""
    centre = batch[:, :, 16, 16]
    pix = torch.round((centre * torch.tensor(std) + torch.tensor(mean)) * 255).to(torch.int64)
    assert torch.all(pix[:, 2] == 77), "centre pixel is not an original image pixel"
    return (pix[:, 0] * 256 + pix[:, 1]).tolist()


def _write_pickle(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def write_fake_cifar10(root: Path, per_batch: int = 12, n_test: int = 20) -> dict[str, np.ndarray]:
    """cifar-10-batches-py with 5 training batches and a test batch of id-coloured images."""
    folder = root / "cifar10" / "cifar-10-batches-py"
    rng = np.random.default_rng(0)
    train_labels = []
    for b in range(5):
        ids = range(b * per_batch, (b + 1) * per_batch)
        labels = rng.integers(0, 10, per_batch).tolist()
        train_labels += labels
        data = np.stack([id_image(i).reshape(-1) for i in ids])
        _write_pickle(folder / f"data_batch_{b + 1}",
                      {"batch_label": f"training batch {b + 1} of 5", "labels": labels, "data": data,
                       "filenames": [f"img{i}.png" for i in ids]})
    test_labels = rng.integers(0, 10, n_test).tolist()
    test_data = np.stack([id_image(TEST_ID_OFFSET + i).reshape(-1) for i in range(n_test)])
    _write_pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels,
                                          "data": test_data, "filenames": [f"t{i}.png" for i in range(n_test)]})
    _write_pickle(folder / "batches.meta", {"label_names": [f"c{i}" for i in range(10)], "num_vis": 3072})
    return {"train_labels": np.array(train_labels), "test_labels": np.array(test_labels)}


def write_fake_cifar100(root: Path, n_train: int = 60, n_test: int = 20) -> dict[str, np.ndarray]:
    folder = root / "cifar100" / "cifar-100-python"
    rng = np.random.default_rng(1)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = rng.integers(0, 100, n)
        fine[0] = 99  # the top label must survive the round trip
        _write_pickle(folder / name, {"filenames": [f"{i}.png" for i in range(n)], "batch_label": name,
                                      "fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist(),
                                      "data": data})
        out[f"{name}_data"], out[f"{name}_labels"] = data, fine
    _write_pickle(folder / "meta", {"fine_label_names": [str(i) for i in range(100)],
                                    "coarse_label_names": [str(i) for i in range(20)]})
    return out


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    """IDX: big-endian int32 magic (2051 images / 2049 labels), big-endian int32 dims, uint8 data."""
    magic = 2051 if array.ndim == 3 else 2049
    payload = struct.pack(">i", magic) + struct.pack(f">{array.ndim}i", *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(path, "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def write_fake_idx_set(folder: Path, n_train: int = 30, n_test: int = 10) -> dict[str, np.ndarray]:
    """The four Fashion-MNIST files (gzipped) in ``folder``."""
    rng = np.random.default_rng(2)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for stem, arr in arrays.items():
        write_idx(folder / f"{stem}.gz", arr)
    return arrays


def write_fake_imagenet(root: Path, classes=("ant", "bee", "cat"), n_train: int = 4, n_val: int = 2) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for split, n in (("train", n_train), ("val", n_val)):
        for cls in classes:
            d = root / "imagenet" / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = rng.integers(36, 60, 2)
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(d / f"{i}.png")


@pytest.fixture
def cifar10_root(tmp_path: Path) -> Path:
    write_fake_cifar10(tmp_path)
    return tmp_path


def cifar10_cfg(root: Path, **kw) -> DataConfig:
    kw.setdefault("search_size", 10)
    return DataConfig("cifar10", root=str(root), download=False, **kw)


def all_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.clone(), y.clone()) for x, y in loader]


# ------------------------------------------------------------------------------------- dataset info


def test_dataset_info_values_and_unknown_name():
    assert DATASETS == ("cifar10", "cifar100", "imagenet", "fashionmnist", "synthetic")
    c10 = dataset_info("cifar10")
    assert (c10.num_classes, c10.in_channels, c10.image_size) == (10, 3, 32)
    assert dataset_info("cifar100").num_classes == 100
    fm = dataset_info("fashionmnist")
    assert (fm.in_channels, fm.image_size, fm.mean, fm.std) == (1, 28, (0.2860,), (0.3530,))
    assert dataset_info("imagenet").image_size == 224
    assert dataset_info("imagenet", image_size=160).image_size == 160
    with pytest.raises(Exception):
        c10.num_classes = 3  # frozen
    with pytest.raises(UserError, match="cifar10, cifar100, imagenet, fashionmnist, synthetic"):
        dataset_info("mnist")


# --------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_pickles_load_into_splits(cifar10_root: Path):
    meta = write_fake_cifar10(cifar10_root)
    splits = build_splits(cifar10_cfg(cifar10_root))
    assert splits.info == dataset_info("cifar10")
    assert (len(splits.train), len(splits.search), len(splits.test), len(splits.train_plain)) == (50, 10, 20, 50)
    x, y = splits.test[3]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == meta["test_labels"][3]
    # Normalisation: eval transform maps pixel p to (p/255 - mean)/std exactly.
    expected = (torch.from_numpy(id_image(TEST_ID_OFFSET + 3)).float() / 255
                - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR10_STD).view(3, 1, 1)
    torch.testing.assert_close(x, expected)
    # Labels of the train split are the file's labels at train_indices.
    labels = torch.cat([b[1] for b in make_loader(splits.train, 16, shuffle=False, seed=0)])
    assert labels.tolist() == meta["train_labels"][splits.train_indices].tolist()
    assert 0 <= labels.min() and labels.max() < 10
    # Training views are padded crops: black (pixel 0) borders show up in some draws, never in eval views.
    black = (-torch.tensor(CIFAR10_MEAN) / torch.tensor(CIFAR10_STD)).view(3, 1, 1)
    has_border = lambda x: bool(torch.isclose(x, black, atol=1e-5).all(0).any())  # noqa: E731
    torch.manual_seed(0)
    assert sum(has_border(splits.train[0][0]) for _ in range(20)) > 10
    assert not any(has_border(splits.train_plain[i][0]) for i in range(len(splits.train_plain)))


@pytest.mark.parametrize("name, pad", [("cifar10", 4), ("cifar100", 4), ("fashionmnist", 2), ("synthetic", 0)])
def test_standard_train_augmentation(name: str, pad: int):
    from harness.data.transforms import tensor_transforms

    train_tf, eval_tf = tensor_transforms(dataset_info(name))
    assert (train_tf.pad, train_tf.flip) == (pad, True)
    assert (eval_tf.pad, eval_tf.flip) == (0, False)
    assert train_tf.mean == dataset_info(name).mean and eval_tf.std == dataset_info(name).std


def test_cifar100_pickles_fine_labels(tmp_path: Path):
    meta = write_fake_cifar100(tmp_path)
    splits = build_splits(DataConfig("cifar100", root=str(tmp_path), search_size=10, download=False))
    assert splits.info.num_classes == 100
    x, y = next(iter(make_loader(splits.test, 20, shuffle=False, seed=0)))
    assert x.shape == (20, 3, 32, 32)
    assert y.tolist() == meta["test_labels"].tolist() and y.max() == 99
    raw = torch.from_numpy(meta["test_data"]).view(20, 3, 32, 32).float() / 255
    expected = (raw - torch.tensor(CIFAR100_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR100_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected)
    # search split uses eval transforms: same image -> same tensor every time
    idx = int(splits.search_indices[0])
    xs, ys = splits.search[0]
    raw_s = torch.from_numpy(meta["train_data"][idx]).view(3, 32, 32).float() / 255
    torch.testing.assert_close(xs, (raw_s - torch.tensor(CIFAR100_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR100_STD).view(3, 1, 1))
    assert ys == meta["train_labels"][idx]


# ---------------------------------------------------------------------------------- ImageNet folder


def test_imagenet_imagefolder(tmp_path: Path):
    write_fake_imagenet(tmp_path)
    cfg = DataConfig("imagenet", root=str(tmp_path), search_size=3, image_size=32)
    splits = build_splits(cfg)
    assert splits.info.num_classes == 3 and splits.info.image_size == 32
    assert (len(splits.train), len(splits.search), len(splits.test)) == (9, 3, 6)
    for ds in (splits.train, splits.search, splits.test, splits.train_plain):
        x, y = next(iter(make_loader(ds, 3, shuffle=False, seed=0)))
        assert x.shape == (3, 3, 32, 32) and 0 <= y.min() and y.max() <= 2
    assert sorted(y for _, y in splits.test) == [0, 0, 1, 1, 2, 2]
    # eval transform is deterministic, train transform is random
    torch.testing.assert_close(splits.train_plain[0][0], splits.train_plain[0][0])
    assert not torch.equal(splits.train[0][0], splits.train[0][0])


def test_imagenet_missing_val_names_the_folder(tmp_path: Path):
    write_fake_imagenet(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "imagenet" / "val")
    with pytest.raises(DatasetUnavailable) as err:
        build_splits(DataConfig("imagenet", root=str(tmp_path), search_size=3, image_size=32))
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "imagenet") in msg and "train/ and val/" in msg


# ------------------------------------------------------------------------------------ Fashion-MNIST


def test_fashionmnist_fake_idx_gz(tmp_path: Path):
    raw = tmp_path / "fashionmnist" / "FashionMNIST" / "raw"
    arrays = write_fake_idx_set(raw)
    cfg = DataConfig("fashionmnist", root=str(tmp_path), search_size=5, download=False)
    splits = build_splits(cfg)  # reads the .gz files directly
    assert (len(splits.train), len(splits.search), len(splits.test)) == (25, 5, 10)
    x, y = next(iter(make_loader(splits.test, 10, shuffle=False, seed=0)))
    assert x.shape == (10, 1, 28, 28)
    expected = (torch.from_numpy(arrays["t10k-images-idx3-ubyte"]).float().unsqueeze(1) / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(x, expected)
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    # fetch unpacks them into the layout torchvision reads, and torchvision agrees with our reader
    fetch(cfg)
    assert (raw / "train-images-idx3-ubyte").is_file()
    import torchvision

    tv = torchvision.datasets.FashionMNIST(root=str(tmp_path / "fashionmnist"), train=True, download=False)
    assert torch.equal(tv.data, torch.from_numpy(arrays["train-images-idx3-ubyte"]))


def test_fashionmnist_fetch_copies_from_debian_layout(tmp_path: Path, monkeypatch):
    fake_debian = tmp_path / "usr-share"
    arrays = write_fake_idx_set(fake_debian, n_train=12, n_test=4)
    monkeypatch.setattr(fetch_module, "DEBIAN_FASHIONMNIST", fake_debian)
    root = tmp_path / "data"
    cfg = DataConfig("fashionmnist", root=str(root), search_size=2)
    with pytest.raises(DatasetUnavailable):
        check_available(cfg)
    splits = build_splits(cfg)  # download=True: fetch copies from the (fake) Debian package
    raw = root / "fashionmnist" / "FashionMNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted(arrays)
    assert (len(splits.train), len(splits.search), len(splits.test)) == (10, 2, 4)


@pytest.mark.skipif(not DEBIAN_FMNIST.is_dir(), reason=f"{DEBIAN_FMNIST} missing (apt install dataset-fashion-mnist)")
def test_fashionmnist_real_debian_package(tmp_path: Path):
    cfg = DataConfig("fashionmnist", root=str(tmp_path))
    fetch(cfg)
    check_available(cfg)
    splits = build_splits(cfg)
    assert (len(splits.train), len(splits.search), len(splits.test)) == (55000, 5000, 10000)
    assert len(splits.train) + len(splits.search) == 60000
    x, y = next(iter(make_loader(splits.test, 256, shuffle=False, seed=0)))
    assert x.shape == (256, 1, 28, 28) and 0 <= y.min() and y.max() <= 9
    # The normalisation constants fit the real data: test-set pixels come out near mean 0, std 1.
    assert abs(x.mean().item()) < 0.1 and abs(x.std().item() - 1) < 0.1


# ---------------------------------------------------------------------------------- offline / errors


@pytest.mark.parametrize("name, folder", [("cifar10", "cifar10/cifar-10-batches-py"),
                                          ("cifar100", "cifar100/cifar-100-python"),
                                          ("fashionmnist", "fashionmnist/FashionMNIST/raw")])
def test_check_available_empty_root_one_line(tmp_path: Path, name: str, folder: str):
    with pytest.raises(DatasetUnavailable) as err:
        check_available(DataConfig(name, root=str(tmp_path)))
    msg = str(err.value)
    assert "\n" not in msg
    assert str(tmp_path / folder) in msg
    assert f"python -m harness.cli.fetch_data --dataset {name} --root {tmp_path}" in msg


def test_unknown_dataset_is_a_user_error(tmp_path: Path):
    with pytest.raises(UserError) as err:
        check_available(DataConfig("mnist", root=str(tmp_path)))
    assert type(err.value) is UserError and "valid names" in str(err.value) and "fashionmnist" in str(err.value)


@pytest.fixture
def offline(monkeypatch):
    """torchvision's downloader fails as it does without network."""
    import torchvision.datasets.cifar as tv_cifar

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", no_network)


def test_fetch_offline_cifar10_one_line(tmp_path: Path, offline):
    cfg = DataConfig("cifar10", root=str(tmp_path))
    with pytest.raises(DatasetUnavailable) as err:
        fetch(cfg)
    msg = str(err.value)
    assert "\n" not in msg and "URLError" in msg
    assert str(tmp_path / "cifar10" / "cifar-10-batches-py") in msg
    assert f"python -m harness.cli.fetch_data --dataset cifar10 --root {tmp_path}" in msg
    with pytest.raises(DatasetUnavailable):  # build_splits with download=True goes through fetch
        build_splits(cfg)


def test_fetch_data_cli(tmp_path: Path, offline, capsys):
    from harness.cli.fetch_data import main

    assert main(["--dataset", "cifar10", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cifar10 not found at") and err.count("\n") == 1
    assert main(["--dataset", "mnist", "--root", str(tmp_path)]) == 2
    assert "valid names" in capsys.readouterr().err
    write_fake_cifar10(tmp_path)
    assert main(["--dataset", "cifar10", "--root", str(tmp_path)]) == 0  # present: no download
    assert main(["--dataset", "synthetic", "--root", str(tmp_path)]) == 0


def test_search_size_must_be_smaller_than_train(cifar10_root: Path):
    with pytest.raises(UserError, match="search_size=60"):
        build_splits(cifar10_cfg(cifar10_root, search_size=60))
    with pytest.raises(UserError, match="search_size"):
        build_splits(DataConfig("synthetic"))  # default 5000 > 2000 synthetic training images


# ------------------------------------------------------------------------------- splits: disjointness


def test_train_search_test_disjoint_in_every_batch(cifar10_root: Path):
    splits = build_splits(cifar10_cfg(cifar10_root))
    train_idx, search_idx = splits.train_indices, splits.search_indices
    assert len(np.intersect1d(train_idx, search_idx)) == 0
    assert np.union1d(train_idx, search_idx).tolist() == list(range(60))
    info = splits.info
    seen: list[int] = []
    torch.manual_seed(0)
    for x, _ in make_loader(splits.train, 7, shuffle=True, seed=1):  # augmented batches
        seen += decode_ids(x, info.mean, info.std)
    search_ids = [i for x, _ in make_loader(splits.search, 7, shuffle=False, seed=0)
                  for i in decode_ids(x, info.mean, info.std)]
    test_ids = [i for x, _ in make_loader(splits.test, 7, shuffle=False, seed=0)
                for i in decode_ids(x, info.mean, info.std)]
    assert sorted(seen) == train_idx.tolist()  # every train image exactly once per epoch
    assert search_ids == search_idx.tolist()
    assert test_ids == list(range(TEST_ID_OFFSET, TEST_ID_OFFSET + 20))
    assert not set(seen) & set(search_ids) and not set(seen) & set(test_ids)
    plain_ids = [i for x, _ in make_loader(splits.train_plain, 50, shuffle=False, seed=0)
                 for i in decode_ids(x, info.mean, info.std)]
    assert plain_ids == train_idx.tolist()


def _hashes(images_uint8: torch.Tensor) -> set[str]:
    return {hashlib.sha1(img.contiguous().numpy().tobytes()).hexdigest() for img in images_uint8}


def test_synthetic_train_loader_never_shows_search_or_test_images():
    cfg = DataConfig("synthetic", search_size=100, synthetic_train=400, synthetic_test=100)
    splits = build_splits(cfg)
    base = splits.train.dataset  # full training set (TensorImageDataset)
    test_images = splits.test.images
    search_images = base.images[torch.as_tensor(splits.search_indices)]
    train_images = base.images[torch.as_tensor(splits.train_indices)]
    forbidden = _hashes(search_images) | _hashes(search_images.flip(-1)) | _hashes(test_images) | _hashes(test_images.flip(-1))
    allowed = _hashes(train_images) | _hashes(train_images.flip(-1))
    mean = torch.tensor(splits.info.mean).view(1, -1, 1, 1)
    std = torch.tensor(splits.info.std).view(1, -1, 1, 1)
    n = 0
    torch.manual_seed(5)
    for x, _ in make_loader(splits.train, 64, shuffle=True, seed=2):
        pix = torch.round((x * std + mean) * 255).to(torch.uint8)  # undo normalisation exactly
        h = _hashes(pix)
        assert h <= allowed and not h & forbidden
        n += len(x)
    assert n == 300


def test_search_split_fixed_across_calls_and_seeds(cifar10_root: Path):
    torch.manual_seed(1)
    np.random.seed(1)
    a = build_splits(cifar10_cfg(cifar10_root))
    torch.manual_seed(2)  # a different training seed must not move the search split
    np.random.seed(2)
    b = build_splits(cifar10_cfg(cifar10_root))
    assert np.array_equal(a.search_indices, b.search_indices)
    assert np.array_equal(a.train_indices, b.train_indices)
    assert np.all(np.diff(a.search_indices) > 0)  # sorted
    c = build_splits(cifar10_cfg(cifar10_root, split_seed=1))
    assert not np.array_equal(a.search_indices, c.search_indices)
    # train_subset caps the train split deterministically and leaves the search split alone
    d = build_splits(cifar10_cfg(cifar10_root, train_subset=20))
    e = build_splits(cifar10_cfg(cifar10_root, train_subset=20))
    assert len(d.train) == 20 and np.array_equal(d.train_indices, e.train_indices)
    assert np.array_equal(d.search_indices, a.search_indices)
    assert set(d.train_indices) <= set(a.train_indices)


# ---------------------------------------------------------------------------------- determinism


def test_seeded_train_loader_repeats_exactly(cifar10_root: Path):
    write_fake_cifar100(cifar10_root)  # random pixels so crops/flips are visible
    splits = build_splits(DataConfig("cifar100", root=str(cifar10_root), search_size=10, download=False))

    def run(torch_seed: int, loader_seed: int):
        torch.manual_seed(torch_seed)
        return all_batches(make_loader(splits.train, 8, shuffle=True, seed=loader_seed, drop_last=True))

    first, second = run(0, 3), run(0, 3)
    assert len(first) == 50 // 8
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    other_aug = run(1, 3)  # same order, different augmentation
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, other_aug))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other_aug))
    other_order = run(0, 4)
    assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other_order))


def test_loader_with_workers_is_reproducible(cifar10_root: Path):
    write_fake_cifar100(cifar10_root)
    splits = build_splits(DataConfig("cifar100", root=str(cifar10_root), search_size=10, download=False))
    runs = []
    for global_seed in (0, 1):  # worker seeds come from the loader's generator, not the global RNG
        torch.manual_seed(global_seed)
        runs.append(all_batches(make_loader(splits.train, 10, shuffle=True, seed=7, num_workers=2)))
    for (x1, y1), (x2, y2) in zip(*runs):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


# ------------------------------------------------------------------------------ tensor transforms


def test_tensor_transform_is_padded_random_crop_and_flip():
    torch.manual_seed(0)
    img = torch.randint(1, 256, (1, 3, 8, 8), dtype=torch.uint8)
    tf = TensorTransform((0.0, 0.0, 0.0), (1 / 255,) * 3, pad=2, flip=True)  # output == raw pixel values
    padded = torch.nn.functional.pad(img[0], (2, 2, 2, 2))
    candidates = {}
    for oy in range(5):
        for ox in range(5):
            crop = padded[:, oy:oy + 8, ox:ox + 8]
            candidates[(oy, ox, False)] = crop
            candidates[(oy, ox, True)] = crop.flip(-1)
    hits = []
    out = tf(img.expand(400, -1, -1, -1))
    for o in out:
        o = o.round().to(torch.uint8)
        match = [k for k, c in candidates.items() if torch.equal(c, o)]
        assert match, "output is not a padded crop (optionally flipped) of the input"
        hits.append(match[0])
    assert {(k[0], k[1]) for k in hits} == {(oy, ox) for oy in range(5) for ox in range(5)}  # every offset
    flips = sum(k[2] for k in hits)
    assert 120 < flips < 280
    eval_tf = TensorTransform((0.5,) * 3, (0.25,) * 3)
    torch.testing.assert_close(eval_tf(img), (img.float() / 255 - 0.5) / 0.25)


def test_tensor_image_dataset_batch_and_item_paths_agree():
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    ds = TensorImageDataset(images, torch.arange(10), TensorTransform((0.2,), (0.3,)))
    sub = Subset(ds, [7, 2])
    items = sub.__getitems__([0, 1])
    torch.testing.assert_close(items[0][0], ds[7][0])
    assert [y for _, y in items] == [7, 2]
    with pytest.raises(ValueError):
        TensorImageDataset(images.float(), torch.arange(10), None)
    with pytest.raises(ValueError):
        TensorImageDataset(images, torch.arange(9), None)


# ----------------------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_and_train_differs_from_test():
    cfg = DataConfig("synthetic", search_size=50, synthetic_train=200, synthetic_test=60,
                     synthetic_classes=4, synthetic_image_size=12, synthetic_channels=2)
    a, b = build_splits(cfg), build_splits(cfg)
    assert a.info == DatasetInfo("synthetic", 4, 2, 12, (0.5, 0.5), (0.25, 0.25))
    assert torch.equal(a.train.dataset.images, b.train.dataset.images)
    assert torch.equal(a.test.images, b.test.images)
    assert not _hashes(a.test.images) & _hashes(a.train.dataset.images)
    assert torch.bincount(a.train.dataset.labels).tolist() == [50] * 4  # balanced
    x, _ = a.test[0]
    assert x.shape == (2, 12, 12)


def test_synthetic_is_learnable():
    splits = build_splits(DataConfig("synthetic", search_size=100, synthetic_train=1100, synthetic_test=300))
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(32, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = 0
    while steps < 300:
        for x, y in make_loader(splits.train, 64, shuffle=True, seed=steps):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    model.eval()
    with torch.no_grad():
        x, y = next(iter(make_loader(splits.test, 300, shuffle=False, seed=0)))
        acc = (model(x).argmax(1) == y).float().mean().item()
    assert acc > 0.4, f"synthetic test accuracy {acc:.2f} after 300 steps (chance 0.10)"
