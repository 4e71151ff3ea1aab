"""The fixed subset of the search split a short search scores its candidates on."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch.utils.data import Subset


def search_subset(splits: Any, n: int) -> Any:
    """``splits`` with its search split cut to a fixed random subset of ``n`` images (0: unchanged).

    The subset depends on ``n`` and the search split only (generator seed 0), never on the method or its seed,
    so every search method of a preset (graph-RL and its random-search controls) scores on the same images.
    """
    if not n or splits is None or n >= len(splits.search):
        return splits
    idx = torch.randperm(len(splits.search), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return dataclasses.replace(splits, search=Subset(splits.search, idx.tolist()))
