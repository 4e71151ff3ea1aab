"""Datasets, the three splits (train / search / test), their transforms and loaders.

See docs/architecture.md ("Data"): the search split is a fixed, seeded subset of the training set,
identical for every method and seed; the test split is only for the reported numbers.
"""
from __future__ import annotations

from .config import DataConfig, info_for
from .device import DeviceData, TensorSource, device_data_fits, loader_batches, tensor_source
from .download import fetch
from .holdout import heldout_positions, hold_out
from .info import DATASETS, DatasetInfo, dataset_info
from .loader import make_loader
from .paths import check_available
from .splits import Splits, build_splits, split_indices
from .tensor_dataset import TensorImageDataset, TensorTransform

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "dataset_info",
    "DataConfig",
    "info_for",
    "check_available",
    "fetch",
    "Splits",
    "build_splits",
    "split_indices",
    "hold_out",
    "heldout_positions",
    "make_loader",
    "TensorImageDataset",
    "TensorTransform",
    "DeviceData",
    "TensorSource",
    "device_data_fits",
    "loader_batches",
    "tensor_source",
]
