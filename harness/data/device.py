"""Device-resident data for in-memory datasets: the whole split as one tensor on the GPU, batched there.

On a GPU a CIFAR-sized model trains faster than a DataLoader can feed it: per-batch Python work (index
lists, collation, host-to-device copies) and worker processes cost more than the step. Here the split is
copied to the device once (uint8, already zero-padded for the random crop), every epoch's shuffled order
and augmentation draws are made at once, and each batch is one gather (crop + flip) and one fused
normalisation on the device; nothing in the hot loop touches the host.

Equivalence with the loader path (``harness.data.make_loader`` / the DataLoader of ``harness.train.fit``):

* order: the index batches come from a DataLoader over ``range(n)`` with the same generator seed,
  ``shuffle`` and ``drop_last``, so both paths visit exactly the same images in the same batches;
* augmentation: the same :class:`~harness.data.tensor_dataset.TensorTransform` (zero-padded random crop,
  horizontal flip, normalisation), with offsets and flips drawn from a ``torch.Generator`` seeded by the
  caller (the loader path draws them from torch's global RNG, so the draws differ, the distribution does not);
* without augmentation the batches are bit-identical on the CPU (same arithmetic in the same order).

Only datasets whose images are already one tensor qualify (:func:`tensor_source`): ``TensorImageDataset``
with a ``TensorTransform`` or no transform, ``torch.utils.data.TensorDataset`` of (images, labels), and
``Subset`` chains over either. ImageNet (``ImageFolder`` + PIL transforms) stays on the DataLoader path.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from .tensor_dataset import TensorImageDataset, TensorTransform

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class TensorSource:
    """A dataset's samples as tensors on the CPU: ``images[i], labels[i]`` is item ``i`` before its transform.

    ``transform`` is the dataset's :class:`TensorTransform` (uint8 images), or None: uint8 images are then
    scaled to [0, 1] (what ``TensorImageDataset`` does without a transform), float images are used as they are.
    """

    images: torch.Tensor
    labels: torch.Tensor
    transform: TensorTransform | None

    @property
    def pad(self) -> int:
        return self.transform.pad if self.transform is not None else 0

    def device_bytes(self) -> int:
        """Bytes the images take on the device (padded for the crop)."""
        n, c, h, w = self.images.shape
        p = self.pad
        return n * c * (h + 2 * p) * (w + 2 * p) * self.images.element_size()


def tensor_source(ds: Dataset) -> TensorSource | None:
    """The tensors behind ``ds`` in ``ds``'s own item order, or None when ``ds`` is not an in-memory tensor set.

    Unwraps ``Subset`` chains (indices composed, images gathered once on the CPU). A ``TensorImageDataset``
    whose transform is not a ``TensorTransform`` (so its effect cannot be replayed on the device) is None.
    """
    indices: torch.Tensor | None = None
    while isinstance(ds, Subset):
        idx = torch.as_tensor(ds.indices, dtype=torch.long)
        indices = idx if indices is None else idx[indices]
        ds = ds.dataset
    if isinstance(ds, TensorImageDataset):
        if ds.transform is not None and not isinstance(ds.transform, TensorTransform):
            return None
        images, labels, transform = ds.images, ds.labels, ds.transform
    elif isinstance(ds, TensorDataset) and len(ds.tensors) == 2 and ds.tensors[0].dim() == 4:
        images, labels, transform = ds.tensors[0], ds.tensors[1], None
        if not images.is_floating_point():
            return None  # integer images without a transform: no defined normalisation
    else:
        return None
    labels = torch.as_tensor(labels).view(-1).to(torch.int64)
    if indices is not None:
        images, labels = images[indices], labels[indices]
    return TensorSource(images, labels, transform)


def loader_batches(n: int, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool) -> list[torch.Tensor]:
    """The index batches a ``DataLoader(ds, batch_size, shuffle, generator=Generator().manual_seed(seed),
    drop_last)`` visits for any dataset of length ``n`` (the DataLoader itself decides, so this stays exact
    across torch versions, including the seed draw it makes from the generator before shuffling)."""
    gen = torch.Generator().manual_seed(int(seed))
    return list(DataLoader(range(n), batch_size=batch_size, shuffle=shuffle, generator=gen, drop_last=drop_last))


class DeviceData:
    """A tensor dataset resident on ``device``: batches (normalised float32, int64 labels) made on the device.

    ``channels_last`` makes the image batches NHWC in memory (for CUDA convolutions); values are the same.
    """

    def __init__(self, source: TensorSource, device: str | torch.device, *, channels_last: bool = False) -> None:
        self.device = torch.device(device)
        self.transform = source.transform
        self.channels_last = bool(channels_last)
        n, c, h, w = source.images.shape
        self.num_samples, self.channels, self.height, self.width = int(n), int(c), int(h), int(w)
        p = self.pad = source.pad
        images = source.images.to(self.device)
        self.images = F.pad(images, (p, p, p, p)) if p else images  # zero = black, as TensorTransform pads
        self.labels = source.labels.to(self.device)
        self.augments = self.transform is not None and self.transform.augments
        if self.transform is not None:
            std = torch.tensor(self.transform.std, dtype=torch.float32).view(1, -1, 1, 1)
            mean = torch.tensor(self.transform.mean, dtype=torch.float32).view(1, -1, 1, 1)
            # the same two float32 constants TensorTransform uses, so the CPU result is bit-identical
            self._scale = (1.0 / (255.0 * std)).to(self.device)
            self._shift = (-mean / std).to(self.device)
        self._ar_h = torch.arange(self.height, device=self.device)
        self._ar_w = torch.arange(self.width, device=self.device)
        self._ar_c = torch.arange(self.channels, device=self.device)

    @classmethod
    def from_dataset(cls, ds: Dataset, device: str | torch.device, *, channels_last: bool = False) -> "DeviceData":
        source = tensor_source(ds)
        if source is None:
            raise TypeError(f"{type(ds).__name__} is not an in-memory tensor dataset")
        return cls(source, device, channels_last=channels_last)

    def __len__(self) -> int:
        return self.num_samples

    # -- batches -----------------------------------------------------------------------------------------
    def epoch(self, batch_size: int, *, order_seed: int, aug_seed: int, steps: int | None = None,
              shuffle: bool = True, drop_last: bool = True) -> Iterator[Batch]:
        """One epoch of augmented batches: the loader path's order (``order_seed``), augmentation drawn from a
        ``torch.Generator`` seeded with ``aug_seed``; at most ``steps`` batches. Draws for the whole epoch
        are made up front on the CPU and copied once, so the same seeds give the same batches on any device."""
        order = loader_batches(self.num_samples, batch_size, shuffle=shuffle, seed=order_seed, drop_last=drop_last)
        if steps is not None:
            order = order[:steps]
        if not order:
            return
        sizes = [len(b) for b in order]
        flat = torch.cat(order)
        m = int(flat.numel())
        offsets = flips = None
        if self.augments:
            gen = torch.Generator().manual_seed(int(aug_seed))
            span = 2 * self.pad + 1
            offsets = torch.randint(0, span, (2, m), generator=gen).to(self.device, non_blocking=True)
            flips = (torch.rand(m, generator=gen) < 0.5).to(self.device, non_blocking=True) \
                if self.transform.flip else None  # type: ignore[union-attr]
        flat = flat.to(self.device, non_blocking=True)
        start = 0
        for size in sizes:
            sl = slice(start, start + size)
            start += size
            idx = flat[sl]
            if offsets is None:
                yield self._finish(self._plain(idx)), self.labels[idx]
            else:
                yield self._finish(self._crop_flip(idx, offsets[0, sl], offsets[1, sl],
                                                   None if flips is None else flips[sl])), self.labels[idx]

    def ordered(self, batch_size: int, *, shuffle: bool = False, seed: int = 0, limit: int | None = None,
                drop_last: bool = False) -> list[Batch]:
        """Batches without augmentation, in ``make_loader(ds, batch_size, shuffle=shuffle, seed=seed)`` order
        (the first ``limit`` of them): the evaluation view of the split, resident on the device."""
        order = loader_batches(self.num_samples, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)
        if limit is not None:
            order = order[:limit]
        out = []
        for idx in order:
            idx = idx.to(self.device)
            out.append((self._finish(self._plain(idx)), self.labels[idx]))
        return out

    # -- per-batch kernels -------------------------------------------------------------------------------
    def _plain(self, idx: torch.Tensor) -> torch.Tensor:
        """Centre window of the padded images (= the unpadded images), NCHW or NHWC as configured."""
        p = self.pad
        x = self.images[idx]
        if p:
            x = x[:, :, p:p + self.height, p:p + self.width]
        return x.contiguous(memory_format=torch.channels_last if self.channels_last else torch.contiguous_format)

    def _crop_flip(self, idx: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor,
                   flip: torch.Tensor | None) -> torch.Tensor:
        """One gather: sample b takes rows oy[b]..oy[b]+H-1 and columns ox[b]..ox[b]+W-1 of its padded image,
        the columns reversed where flip[b] (a flip of the crop, as TensorTransform does it)."""
        rows = oy[:, None] + self._ar_h[None, :]  # (B, H)
        cols = ox[:, None] + self._ar_w[None, :]  # (B, W)
        if flip is not None:
            cols = torch.where(flip[:, None], cols.flip(1), cols)
        b = idx[:, None, None, None]
        if self.channels_last:  # gather straight into NHWC memory, viewed as NCHW
            x = self.images[b, self._ar_c[None, None, None, :], rows[:, :, None, None], cols[:, None, :, None]]
            return x.permute(0, 3, 1, 2)
        return self.images[b, self._ar_c[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 -> normalised float32 with TensorTransform's arithmetic (x * scale + shift); keeps the layout."""
        if self.transform is not None:
            return x.to(torch.float32) * self._scale + self._shift
        if x.dtype == torch.uint8:
            return x.to(torch.float32) / 255.0
        return x


def device_data_fits(source: TensorSource, device: torch.device, fraction: float = 0.25) -> bool:
    """Whether the padded images take at most ``fraction`` of the device's memory (CUDA; always True otherwise)."""
    if device.type != "cuda":
        return True
    total = torch.cuda.get_device_properties(device).total_memory
    return source.device_bytes() <= fraction * total


__all__ = ["DeviceData", "TensorSource", "device_data_fits", "loader_batches", "tensor_source"]
