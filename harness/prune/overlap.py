"""How far a plan's kept channels are from magnitude's choice: per-group Jaccard with the L1 top-k.

For a group that keeps k channels, the reference is the k channels of largest filter L1 norm (Li et al.'s
choice at the same per-group count); the Jaccard index |A & B| / |A | B| is 1 when the plan keeps exactly
those and 0 when it keeps none of them. It separates "prunes the same layers harder" from "keeps different
channels", which is the graph-RL paper's "beyond magnitude" claim in numbers (the spec's Jaccard figure).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch


def top_k_channels(scores: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` largest scores, ties broken by the lower index (deterministic)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:k])


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
    sa, sb = set(a), set(b)
    union = sa | sb
    return len(sa & sb) / len(union) if union else 1.0


def l1_jaccard(keep: Mapping[str, Sequence[int]], l1: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per group of ``keep``: Jaccard between its kept channels and the top-``len(kept)`` by L1 norm."""
    return {gid: jaccard(kept, top_k_channels(l1[gid], len(kept))) for gid, kept in keep.items()}
