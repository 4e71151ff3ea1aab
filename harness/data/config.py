"""The data section of a run: which dataset, where it lives, and how the training set is split."""
from __future__ import annotations

from dataclasses import dataclass

from harness.errors import UserError

from .info import DatasetInfo, dataset_info, synthetic_info, validate_name


@dataclass(frozen=True)
class DataConfig:
    """Frozen so that one config object can be shared by every stage without being changed underneath them.

    ``search_size`` images of the training set, picked by ``split_seed``, form the search split that
    pruning methods may score on; ``train_subset`` caps the remaining training images for quick runs.
    """

    name: str
    root: str = "data"
    search_size: int = 5000
    split_seed: int = 0
    train_subset: int | None = None
    download: bool = True
    synthetic_train: int = 2000
    synthetic_test: int = 500
    synthetic_classes: int = 10
    synthetic_image_size: int = 16
    synthetic_channels: int = 3
    image_size: int | None = None


def _positive(value: object, what: str, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"data.{what} must be an integer >= {minimum}, got {value!r}")


def validate(cfg: DataConfig) -> DataConfig:
    """Check the fields that do not need the data on disk; a bad value is a one-line UserError."""
    validate_name(cfg.name)
    _positive(cfg.search_size, "search_size")
    _positive(cfg.split_seed, "split_seed", minimum=0)
    if cfg.train_subset is not None:
        _positive(cfg.train_subset, "train_subset")
    if cfg.image_size is not None:
        _positive(cfg.image_size, "image_size")
    if cfg.name == "synthetic":
        _positive(cfg.synthetic_train, "synthetic_train", minimum=2)
        _positive(cfg.synthetic_test, "synthetic_test")
        _positive(cfg.synthetic_classes, "synthetic_classes", minimum=2)
        _positive(cfg.synthetic_image_size, "synthetic_image_size", minimum=4)
        _positive(cfg.synthetic_channels, "synthetic_channels")
    return cfg


def info_for(cfg: DataConfig) -> DatasetInfo:
    """The DatasetInfo this config produces (synthetic sizes and the ImageNet crop come from the config)."""
    validate(cfg)
    if cfg.name == "synthetic":
        return synthetic_info(cfg.synthetic_classes, cfg.synthetic_channels, cfg.synthetic_image_size)
    return dataset_info(cfg.name, cfg.image_size if cfg.name == "imagenet" else None)
