"""Readers for the on-disk formats, returning one uint8 NCHW tensor and an int64 label tensor.

We parse the files ourselves instead of going through torchvision's dataset classes because those
verify MD5 sums on every load (slow, and they reject our small test fixtures) and return PIL images,
while training wants a single in-memory tensor.
"""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

from harness.errors import DatasetUnavailable

# IDX magic numbers: 0x0000 08 03 (uint8, 3 dims) for images, 0x0000 08 01 for labels.
IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


def _load_pickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def read_cifar_batches(paths: list[Path], label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate CIFAR python-pickle batches (``data``: N x 3072 uint8, row-major RGB planes)."""
    images, labels = [], []
    for path in paths:
        try:
            entry = _load_pickle(path)
            data = np.asarray(entry["data"], dtype=np.uint8)
            images.append(data.reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[label_key], dtype=np.int64))
        except (OSError, KeyError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            raise DatasetUnavailable(f"cannot read CIFAR file {path}: {type(exc).__name__}: {exc}") from None
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def read_idx(path: Path) -> np.ndarray:
    """Parse an IDX file (optionally gzipped): big-endian magic, big-endian dims, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
        magic = struct.unpack(">i", raw[:4])[0]
        if magic not in (IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC):
            raise ValueError(f"bad magic number {magic}")
        ndim = magic & 0xFF
        dims = struct.unpack(f">{ndim}i", raw[4 : 4 + 4 * ndim])
        data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
        if data.size != int(np.prod(dims)):
            raise ValueError(f"expected {int(np.prod(dims))} values for shape {dims}, found {data.size}")
    except (OSError, EOFError, ValueError, struct.error) as exc:
        raise DatasetUnavailable(f"cannot read IDX file {path}: {type(exc).__name__}: {exc}") from None
    return data.reshape(dims)


def read_idx_pair(images: Path, labels: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """An IDX image file (N x H x W) and its label file, as (N, 1, H, W) uint8 and int64 labels."""
    x = read_idx(images)
    y = read_idx(labels)
    if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
        raise DatasetUnavailable(f"IDX files {images} and {labels} do not match: shapes {x.shape} and {y.shape}")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))
