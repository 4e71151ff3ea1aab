"""Search checkpoints that carry a fingerprint of what made them, so a search never resumes another run's state.

A search's ``agent.pt`` lives in the method's scratch folder, which outlives a change of options (the user
edits ``lr`` and re-runs; Snakemake re-runs the job because its params changed) and a retrained base model.
Resuming it then either crashes on a state_dict mismatch or, worse, silently continues the old search and can
return a "best" plan scored on the old weights. Every search checkpoint therefore stores a fingerprint:

* the method and its resolved options (every field of the options dataclass),
* a digest of the base model's weights (and buffers: BN statistics are part of what was scored),
* the budget, the seed, the prunable groups,
* a digest of the search split as the method sees it (the image indices into the training set),

and :func:`load` returns the saved state only when the fingerprint is equal; otherwise it logs one warning
line and the search starts fresh (the old file is overwritten by the next checkpoint).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from harness.io import torch_save

log = logging.getLogger(__name__)

FORMAT = "prunebench-search-checkpoint/1"


def weights_digest(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer (name, dtype, shape, bytes), in state_dict order."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)  # 0-d buffers (num_batches_tracked) too
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def dataset_digest(ds: Dataset | None) -> str:
    """SHA-256 of which images a (possibly nested) ``Subset`` selects from its root dataset, and that root's
    type and length; the same images in the same order give the same digest."""
    if ds is None:
        return "none"
    indices: np.ndarray | None = None
    while isinstance(ds, Subset):
        idx = np.asarray(ds.indices, dtype=np.int64)
        indices = idx if indices is None else idx[indices]
        ds = ds.dataset
    h = hashlib.sha256()
    h.update(type(ds).__name__.encode())
    h.update(str(len(ds)).encode())  # type: ignore[arg-type]
    if indices is not None:
        h.update(indices.tobytes())
    return h.hexdigest()


def _plain(value: Any) -> Any:
    """Options as plain, comparable data (tuples and lists compare equal after a round trip; NaN, which
    equals nothing, becomes the string "nan" so that a fingerprint holding one still equals itself)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return value


def fingerprint(ctx: Any, method: str, search_split: Dataset | None = None, **extra: Any) -> dict[str, Any]:
    """What a checkpoint of ``method`` on ``ctx`` must match to be resumed.

    ``search_split``: the images the search scores candidates on (default ``ctx.splits.search``); ``extra``:
    anything else that shapes the search (e.g. a variant name).
    """
    split = search_split if search_split is not None else getattr(ctx.splits, "search", None)
    return {
        "format": FORMAT,
        "method": method,
        "options": _plain(ctx.options),
        "weights": weights_digest(ctx.model),
        "budget": _plain(ctx.budget.to_dict()),
        "min_keep_fraction": float(ctx.min_keep_fraction),
        "seed": int(ctx.seed),
        "groups": [[g.id, int(g.size)] for g in ctx.groups],
        "search_split": dataset_digest(split),
        # a latency budget's plans depend on the latency table: another table is another search
        **({"latency_table": ctx.cost.latency.digest} if getattr(getattr(ctx, "cost", None), "latency", None) else {}),
        **{k: _plain(v) for k, v in extra.items()},
    }


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    diff = [k for k in keys if old.get(k) != new.get(k)]
    if "options" in diff and isinstance(old.get("options"), Mapping) and isinstance(new.get("options"), Mapping):
        o, n = old["options"], new["options"]
        names = [k for k in sorted(set(o) | set(n)) if o.get(k) != n.get(k)]
        diff[diff.index("options")] = "options (" + ", ".join(names) + ")"
    return diff


def load(path: str | Path, expected: Mapping[str, Any], label: str) -> dict[str, Any] | None:
    """The saved search state at ``path`` when its fingerprint equals ``expected``; else None.

    A missing file is a fresh start (None, silently); an unreadable file or another run's fingerprint is a
    fresh start with one warning line naming what differs.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file: never fatal, never resumed
        log.warning("%s: %s is unreadable (%s); starting the search fresh", label, path, type(exc).__name__)
        return None
    found = payload.get("fingerprint") if isinstance(payload, Mapping) else None
    if found != dict(expected):
        what = ", ".join(_differences(found or {}, expected)) if isinstance(found, Mapping) else "no fingerprint"
        log.warning("%s: %s was written by another search (%s differ); starting the search fresh",
                    label, path, what)
        return None
    return payload["state"]


def save(path: str | Path, fingerprint: Mapping[str, Any], state: Mapping[str, Any]) -> None:
    """Write the state with its fingerprint atomically (a killed job never leaves a half-written checkpoint)."""
    torch_save({"fingerprint": dict(fingerprint), "state": dict(state)}, path)
