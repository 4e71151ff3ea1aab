"""Top-k accuracy, the quality metric reported for every base and pruned model."""
from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import nn

from harness.errors import UserError
from harness.metrics.complexity import eval_mode


@torch.no_grad()
def topk_accuracy(model: nn.Module, loader: Iterable, device: torch.device | str,
                  ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Percent of samples whose label is among the ``k`` highest logits, as ``{"top1": .., "top5": ..}``.

    The model is moved to ``device`` and evaluated in eval mode; module training flags are restored.
    A ``k`` above the number of classes is clipped (top-5 on a 2-class task is 100 %), keeping its key.
    Ties are broken by ``torch.topk``'s order.
    """
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, got {ks}")
    device = torch.device(device)
    model.to(device)
    correct = {k: 0 for k in ks}
    seen = 0
    with eval_mode(model):
        for batch in loader:
            x, y = batch[0], batch[1]
            x = x.to(device, non_blocking=True)
            y = torch.as_tensor(y).to(device, non_blocking=True).view(-1)
            logits = model(x)
            maxk = min(max(ks), logits.shape[1])
            top = logits.topk(maxk, dim=1).indices  # (N, maxk), best first
            hits = top.eq(y.unsqueeze(1))
            for k in ks:
                correct[k] += int(hits[:, : min(k, maxk)].any(dim=1).sum().item())
            seen += y.numel()
    if seen == 0:
        raise UserError("cannot compute accuracy on an empty loader")
    return {f"top{k}": 100.0 * correct[k] / seen for k in ks}
