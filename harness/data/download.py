"""Put a dataset on disk: torchvision download for CIFAR, the Debian package (or download) for
Fashion-MNIST. Offline failures become one-line DatasetUnavailable errors, never tracebacks.
"""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from harness.errors import DatasetUnavailable
from harness.io import atomic_write

from .config import DataConfig, validate
from .paths import FASHIONMNIST_FILES, check_available, data_dir, dataset_root, missing_files, unavailable_message

# Debian's ``dataset-fashion-mnist`` package installs the original gzipped IDX files here.
DEBIAN_FASHIONMNIST = Path("/usr/share/datasets/fashion-mnist")

# What a failed download raises: URLError/HTTPError/socket errors are OSErrors; torchvision raises
# RuntimeError on a bad checksum; tarfile/gzip errors on a truncated archive.
_DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError, EOFError)


def fetch(cfg: DataConfig) -> None:
    """Make ``cfg``'s dataset available under ``cfg.root``; a no-op when it already is."""
    validate(cfg)
    if cfg.name == "synthetic":
        return
    if cfg.name == "imagenet":
        check_available(cfg)  # nothing can be fetched: say where to put it
        return
    if cfg.name == "fashionmnist":
        _fetch_fashionmnist(cfg)
    elif not missing_files(cfg):
        return
    else:
        _torchvision_download(cfg)
    check_available(cfg)


def _torchvision_download(cfg: DataConfig) -> None:
    import torchvision.datasets as tvd

    cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "fashionmnist": tvd.FashionMNIST}[cfg.name]
    root = dataset_root(cfg)
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(root=str(root), train=True, download=True)
    except _DOWNLOAD_ERRORS as exc:
        reason = f"download failed: {type(exc).__name__}: {exc}"
        hint = f"; without internet, copy the dataset's files into {data_dir(cfg)}"
        raise DatasetUnavailable(unavailable_message(cfg, reason) + hint) from None


def _fetch_fashionmnist(cfg: DataConfig) -> None:
    """Copy the Debian package's files when present (works offline), else download with torchvision.

    The files end up unpacked (``*-ubyte``), which is the layout torchvision's FashionMNIST reads.
    """
    raw = data_dir(cfg)
    if not missing_files(cfg):
        _gunzip_all(raw)
        return
    debian = [DEBIAN_FASHIONMNIST / f"{stem}.gz" for stem in FASHIONMNIST_FILES]
    if all(p.is_file() for p in debian):
        raw.mkdir(parents=True, exist_ok=True)
        for src in debian:
            _atomic_gunzip(src, raw / src.stem)
        return
    _torchvision_download(cfg)


def _gunzip_all(raw: Path) -> None:
    for stem in FASHIONMNIST_FILES:
        gz = raw / f"{stem}.gz"
        if not (raw / stem).is_file() and gz.is_file():
            _atomic_gunzip(gz, raw / stem)


def _atomic_gunzip(src: Path, dest: Path) -> None:
    """Unpack to a temp file then rename, so a killed fetch never leaves a truncated file behind."""
    def unpack(tmp: str) -> None:
        with open(tmp, "wb") as out, gzip.open(src, "rb") as inp:
            shutil.copyfileobj(inp, out, length=1 << 20)

    try:
        atomic_write(dest, unpack)
    except (OSError, EOFError) as exc:
        raise DatasetUnavailable(f"cannot unpack {src} into {dest.parent}: {type(exc).__name__}: {exc}") from None
