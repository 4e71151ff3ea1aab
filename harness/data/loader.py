"""DataLoaders whose order depends only on an explicit seed (not on what ran before)."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset


def make_loader(
    ds: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader shuffled by its own ``torch.Generator`` seeded with ``seed``.

    The generator also derives the worker seeds, so with ``num_workers > 0`` augmentation is
    reproducible too; with ``num_workers == 0`` augmentation draws from torch's global RNG, which the
    caller seeds. The generator is exposed as ``loader.generator`` so a resumable loop can save it.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=gen,
        num_workers=num_workers,
        drop_last=drop_last,
        persistent_workers=False,
    )
