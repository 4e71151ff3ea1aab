"""The standard train/eval transforms per dataset (the usual recipes of the pruning literature)."""
from __future__ import annotations

from .info import DatasetInfo
from .tensor_dataset import TensorTransform

# name -> (crop padding, horizontal flip) for training; evaluation never augments.
TRAIN_AUGMENT = {
    "cifar10": (4, True),  # RandomCrop(32, padding=4) + RandomHorizontalFlip
    "cifar100": (4, True),
    "fashionmnist": (2, True),  # RandomCrop(28, padding=2) + RandomHorizontalFlip
    "synthetic": (0, True),  # flip only: the generator already shifts
}


def tensor_transforms(info: DatasetInfo) -> tuple[TensorTransform, TensorTransform]:
    """(train, eval) transforms for the in-memory datasets."""
    pad, flip = TRAIN_AUGMENT[info.name]
    return TensorTransform(info.mean, info.std, pad=pad, flip=flip), TensorTransform(info.mean, info.std)


def imagenet_transforms(info: DatasetInfo):
    """(train, eval) PIL transforms: RandomResizedCrop+flip / Resize(size*256/224)+CenterCrop."""
    from torchvision import transforms as T

    size = info.image_size
    resize = int(round(size * 256 / 224))
    normalize = T.Normalize(info.mean, info.std)
    train = T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    evaluate = T.Compose([T.Resize(resize), T.CenterCrop(size), T.ToTensor(), normalize])
    return train, evaluate
