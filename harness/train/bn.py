"""BatchNorm recalibration: after pruning, running statistics no longer match the features they normalise."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module, loader: Iterable, num_batches: int | None, device: str | torch.device
) -> None:
    """Reset every BatchNorm's running mean/var and re-estimate them as an exact cumulative average
    (``momentum=None``) over the first ``num_batches`` batches of ``loader`` (all if None); no gradients.

    Only the BN layers are put in train mode, everything else (dropout) stays in eval mode, so the
    statistics are those of the network as it is evaluated. The model is left in eval mode with the
    original BN momenta restored. Batches may be ``(inputs, targets)`` or bare inputs.
    """
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    model.eval()
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    try:
        for m in bns:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        seen = 0
        for batch in loader:
            if num_batches is not None and seen >= num_batches:
                break
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            model(x.to(device, non_blocking=True))
            seen += 1
        if seen == 0:
            raise ValueError("recalibrate_bn: the loader yielded no batches")
    finally:
        for m, mom in zip(bns, momenta):
            m.momentum = mom
        model.eval()
