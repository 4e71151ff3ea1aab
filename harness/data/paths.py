"""Where each dataset lives under the data root, and the one-line message when it is not there.

The layouts match what torchvision's downloaders produce, so a folder fetched by torchvision elsewhere
can be copied in as is.
"""
from __future__ import annotations

from pathlib import Path

from harness.errors import DatasetUnavailable

from .config import DataConfig, validate

CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
CIFAR100_FILES = ("train", "test")
FASHIONMNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def dataset_root(cfg: DataConfig) -> Path:
    """``<root>/<name>``: the folder handed to torchvision's downloader for this dataset."""
    return Path(cfg.root) / cfg.name


def data_dir(cfg: DataConfig) -> Path:
    """The folder that holds the dataset's files themselves."""
    base = dataset_root(cfg)
    return {
        "cifar10": base / "cifar-10-batches-py",
        "cifar100": base / "cifar-100-python",
        "fashionmnist": base / "FashionMNIST" / "raw",
        "imagenet": base,
        "synthetic": base,
    }[cfg.name]


def idx_file(folder: Path, stem: str) -> Path | None:
    """An IDX file either unpacked or gzipped (the Debian package ships .gz; torchvision unpacks)."""
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def missing_files(cfg: DataConfig) -> list[str]:
    """Names of the files/folders this dataset needs that are absent (empty when it is ready)."""
    validate(cfg)
    folder = data_dir(cfg)
    if cfg.name == "synthetic":
        return []
    if cfg.name == "cifar10":
        return [f for f in CIFAR10_FILES if not (folder / f).is_file()]
    if cfg.name == "cifar100":
        return [f for f in CIFAR100_FILES if not (folder / f).is_file()]
    if cfg.name == "fashionmnist":
        return [f for f in FASHIONMNIST_FILES if idx_file(folder, f) is None]
    return [d for d in ("train", "val") if not (folder / d).is_dir()]


def fetch_command(cfg: DataConfig) -> str:
    return f"python -m harness.cli.fetch_data --dataset {cfg.name} --root {cfg.root}"


def unavailable_message(cfg: DataConfig, reason: str | None = None) -> str:
    """One line: what is missing, where we looked, and how to get it."""
    folder = data_dir(cfg)
    why = f" ({_one_line(reason)})" if reason else ""
    if cfg.name == "imagenet":
        return (
            f"imagenet not found at {folder}{why}; it cannot be downloaded: place ImageFolder train/ and "
            f"val/ folders (one subfolder per class) under {folder}"
        )
    return f"{cfg.name} not found at {folder}{why}; fetch it with: {fetch_command(cfg)}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def check_available(cfg: DataConfig) -> None:
    """Raise DatasetUnavailable (one line, path + fetch command) unless the dataset is on disk."""
    missing = missing_files(cfg)
    if missing:
        raise DatasetUnavailable(unavailable_message(cfg, "missing " + ", ".join(missing)))
