"""The held-out part of the search split: the images a pruning method never selects on.

A search method picks its plan by accuracy on the search split, so that accuracy is biased upwards (the
winner's curse, larger the more candidates a method scores). The prune stage therefore cuts a fixed part
off the search split before the method runs (:func:`hold_out`) and scores the method's final plan on it
afterwards: ``meta.heldout_top1`` of plan.json, ``heldout_top1`` of runs.csv. The held-out images depend on
the search split and ``n`` only (a permutation with a fixed seed), never on the method or the run's seed,
so every method and seed of a config is scored on the same images. The test split is not involved.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from harness.errors import UserError

#: Defaults of ``prune.heldout_images`` and ``prune.heldout_bn_batches`` (config/schema.yaml says the same).
DEFAULT_HELDOUT_IMAGES = 1000
DEFAULT_HELDOUT_BN_BATCHES = 2
#: Seed of the permutation of the search split's positions whose last ``n`` entries are held out.
HOLDOUT_SEED = 0


def heldout_positions(search_size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held-out) positions into a search split of ``search_size`` images, both sorted.

    One permutation of the positions drawn with :data:`HOLDOUT_SEED`; its last ``n`` entries are held out
    (so the held-out images of a smaller ``n`` are a subset of those of a larger one). Not the last ``n``
    positions of the split itself: the split is sorted by training-set index, and a dataset stored class by
    class (ImageFolder) would then hold out the last classes only.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise UserError(f"prune.heldout_images must be an integer >= 0, got {n!r}")
    if n and n >= search_size:
        raise UserError(f"prune.heldout_images={n} must be smaller than the search split ({search_size} images); "
                        "lower it or raise data.<dataset>.search_size")
    perm = np.random.default_rng(HOLDOUT_SEED).permutation(search_size)
    cut = search_size - int(n)
    return np.sort(perm[:cut]).astype(np.int64), np.sort(perm[cut:]).astype(np.int64)


def _select(ds: Dataset, positions: np.ndarray) -> Subset:
    """``ds`` at ``positions``, flattened onto the root dataset when ``ds`` is itself a Subset."""
    if isinstance(ds, Subset):
        return Subset(ds.dataset, np.asarray(ds.indices)[positions].tolist())
    return Subset(ds, positions.tolist())


def hold_out(splits: Any, n: int) -> tuple[Any, Dataset | None]:
    """(``splits`` whose search split lacks the held-out images, the held-out images); ``n = 0``: (splits, None).

    ``search_indices`` (indices into the training set) is cut the same way, so it still names exactly the
    images of ``search``. A too-large ``n`` is a one-line :class:`UserError`.
    """
    size = len(splits.search)
    kept, held = heldout_positions(size, n)
    if not n:
        return splits, None
    search_indices = getattr(splits, "search_indices", None)
    changes: dict[str, Any] = {"search": _select(splits.search, kept)}
    if search_indices is not None and len(search_indices) == size:
        changes["search_indices"] = np.asarray(search_indices)[kept]
    return dataclasses.replace(splits, **changes), _select(splits.search, held)


__all__ = ["DEFAULT_HELDOUT_IMAGES", "DEFAULT_HELDOUT_BN_BATCHES", "HOLDOUT_SEED", "heldout_positions", "hold_out"]
