"""In-memory image datasets with augmentation done on uint8 tensors, batch at a time.

The quick preset trains on a 2-core CPU, where PIL decoding and per-image transforms dominate the step
time. Holding the whole set as one uint8 tensor and cropping/flipping a whole batch with one gather is
an order of magnitude faster. Randomness comes from torch's global RNG, so seeding torch (or the
per-worker seeding DataLoader does) makes the batches reproducible.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

Transform = Callable[[torch.Tensor], torch.Tensor]


class TensorTransform:
    """uint8 (B, C, H, W) -> normalised float32, with optional zero-padded random crop and random h-flip.

    ``pad`` > 0 is the classic ``RandomCrop(H, padding=pad)``: the image is padded with black and an
    H x W window is taken at a random offset; ``flip`` mirrors half of the images left-right.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], pad: int = 0, flip: bool = False):
        if len(mean) != len(std):
            raise ValueError("mean and std need the same number of channels")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.pad = int(pad)
        self.flip = bool(flip)
        # x_norm = (x/255 - mean) / std = x * scale + shift
        std_t = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t

    @property
    def augments(self) -> bool:
        return self.pad > 0 or self.flip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 (B, C, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        if self.augments:
            images = self._crop_flip(images)
        return images.to(torch.float32) * self._scale + self._shift

    def _crop_flip(self, images: torch.Tensor) -> torch.Tensor:
        b, c, h, w = images.shape
        p = self.pad
        padded = torch.nn.functional.pad(images, (p, p, p, p)) if p else images
        oy = torch.randint(0, 2 * p + 1, (b,)) if p else torch.zeros(b, dtype=torch.long)
        ox = torch.randint(0, 2 * p + 1, (b,)) if p else torch.zeros(b, dtype=torch.long)
        ar_h, ar_w = torch.arange(h), torch.arange(w)
        rows = oy[:, None] + ar_h[None, :]
        cols = ox[:, None] + ar_w[None, :]
        if self.flip:
            flipped = torch.rand(b) < 0.5
            cols = torch.where(flipped[:, None], cols.flip(1), cols)
        return padded[
            torch.arange(b)[:, None, None, None],
            torch.arange(c)[None, :, None, None],
            rows[:, None, :, None],
            cols[:, None, None, :],
        ]

    def __repr__(self) -> str:
        return f"TensorTransform(mean={self.mean}, std={self.std}, pad={self.pad}, flip={self.flip})"


class TensorImageDataset(Dataset):
    """Images held as one uint8 NCHW tensor; items are (normalised float CHW tensor, int label).

    ``__getitems__`` transforms a whole batch at once (DataLoader and Subset call it when present);
    views with other transforms share the same image tensor (see :meth:`with_transform`).
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int], transform: Transform | None):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (images.shape[0],):
            raise ValueError(f"{images.shape[0]} images but labels of shape {tuple(labels.shape)}")
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def with_transform(self, transform: Transform | None) -> "TensorImageDataset":
        """Same images and labels (no copy), different transform: train vs eval views of one set."""
        return TensorImageDataset(self.images, self.labels, transform)

    def _apply(self, batch: torch.Tensor) -> torch.Tensor:
        if self.transform is None:
            return batch.to(torch.float32) / 255.0
        return self.transform(batch)

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        x = self._apply(self.images[idx])
        return list(zip(x.unbind(0), self.labels[idx].tolist()))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([int(index)])[0]
