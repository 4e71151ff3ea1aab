"""The three splits every run uses: train, search (a fixed slice of the training set), and test.

Pruning methods may score candidates on ``search`` only; because it is cut out of the training set
with a seed that does not depend on the run, every method and every seed sees the same search images
and none of them is ever trained on or used for the reported test number.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset, Subset

from harness.errors import UserError

from .config import DataConfig, info_for, validate
from .download import fetch
from .info import DatasetInfo
from .paths import CIFAR10_FILES, check_available, data_dir, idx_file, missing_files
from .readers import read_cifar_batches, read_idx_pair
from .synthetic import TEST_SEED, TRAIN_SEED, generate
from .tensor_dataset import TensorImageDataset
from .transforms import imagenet_transforms, tensor_transforms


@dataclass
class Splits:
    """Datasets of one run. ``train_plain`` has the train images with eval transforms (BN recalibration).

    ``train_indices`` and ``search_indices`` index the original training set, are sorted and disjoint.
    """

    info: DatasetInfo
    train: Dataset
    search: Dataset
    test: Dataset
    train_plain: Dataset
    train_indices: np.ndarray
    search_indices: np.ndarray


def split_indices(
    n_train: int, search_size: int, split_seed: int, train_subset: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train, search) indices into a training set of ``n_train`` images, both sorted.

    One permutation drawn from ``split_seed`` alone: its first ``search_size`` entries are the search
    split, the next ``train_subset`` (or all the rest) the training split.
    """
    if not 1 <= search_size < n_train:
        raise UserError(
            f"data.search_size={search_size} must be >= 1 and smaller than the {n_train} training images"
        )
    perm = np.random.default_rng(split_seed).permutation(n_train)
    search = np.sort(perm[:search_size])
    rest = perm[search_size:]
    if train_subset is not None:
        rest = rest[:train_subset]
    return np.sort(rest).astype(np.int64), search.astype(np.int64)


def _load_in_memory(cfg: DataConfig, info: DatasetInfo) -> tuple[TensorImageDataset, TensorImageDataset]:
    """(full training set, test set) as uint8 tensors, with no transform yet."""
    folder = data_dir(cfg)
    if cfg.name == "synthetic":
        args = (cfg.synthetic_classes, cfg.synthetic_channels, cfg.synthetic_image_size)
        train = generate(cfg.synthetic_train, *args, seed=TRAIN_SEED)
        test = generate(cfg.synthetic_test, *args, seed=TEST_SEED)
    elif cfg.name == "cifar10":
        train = read_cifar_batches([folder / f for f in CIFAR10_FILES[:-1]], "labels")
        test = read_cifar_batches([folder / "test_batch"], "labels")
    elif cfg.name == "cifar100":
        train = read_cifar_batches([folder / "train"], "fine_labels")
        test = read_cifar_batches([folder / "test"], "fine_labels")
    else:  # fashionmnist
        pair = lambda split: read_idx_pair(  # noqa: E731
            idx_file(folder, f"{split}-images-idx3-ubyte"), idx_file(folder, f"{split}-labels-idx1-ubyte")
        )
        train, test = pair("train"), pair("t10k")
    for images, labels in (train, test):
        if labels.numel() and (labels.min() < 0 or labels.max() >= info.num_classes):
            raise UserError(f"{cfg.name} labels outside 0..{info.num_classes - 1} in {folder}")
    return TensorImageDataset(*train, transform=None), TensorImageDataset(*test, transform=None)


def _imagenet(cfg: DataConfig, info: DatasetInfo):
    from torchvision.datasets import ImageFolder

    folder = data_dir(cfg)
    train_tf, eval_tf = imagenet_transforms(info)
    train_full = ImageFolder(str(folder / "train"), transform=train_tf)
    test = ImageFolder(str(folder / "val"), transform=eval_tf)
    if test.class_to_idx != train_full.class_to_idx:
        raise UserError(f"imagenet class folders differ between {folder / 'train'} and {folder / 'val'}")
    plain_full = copy.copy(train_full)  # shares the sample list; only the transform differs
    plain_full.transform = eval_tf
    info = DatasetInfo(info.name, len(train_full.classes), info.in_channels, info.image_size, info.mean, info.std)
    return info, train_full, plain_full, test


def ensure_available(cfg: DataConfig) -> None:
    """Fetch when allowed and needed, then insist the files are there (one-line error otherwise)."""
    if cfg.download and cfg.name != "imagenet" and missing_files(cfg):
        fetch(cfg)
    check_available(cfg)


def build_splits(cfg: DataConfig) -> Splits:
    """Load ``cfg``'s dataset and cut it into train / search / test (see module docstring)."""
    validate(cfg)
    info = info_for(cfg)
    ensure_available(cfg)
    if cfg.name == "imagenet":
        info, train_full, plain_full, test = _imagenet(cfg, info)
        n_train = len(train_full)
        eval_full = plain_full
    else:
        raw_train, raw_test = _load_in_memory(cfg, info)
        train_tf, eval_tf = tensor_transforms(info)
        train_full = raw_train.with_transform(train_tf)
        eval_full = raw_train.with_transform(eval_tf)
        test = raw_test.with_transform(eval_tf)
        n_train = len(raw_train)
    train_idx, search_idx = split_indices(n_train, cfg.search_size, cfg.split_seed, cfg.train_subset)
    train_list, search_list = train_idx.tolist(), search_idx.tolist()
    return Splits(
        info=info,
        train=Subset(train_full, train_list),
        search=Subset(eval_full, search_list),
        test=test,
        train_plain=Subset(eval_full, train_list),
        train_indices=train_idx,
        search_indices=search_idx,
    )


__all__ = ["Splits", "build_splits", "split_indices", "ensure_available"]
