"""Small helpers shared by the CIFAR model definitions."""
from __future__ import annotations

from harness.errors import UserError


def scale_channels(channels: int, width: float) -> int:
    """Channel count under a width multiplier: rounded to nearest, never below 1 (a 0-channel layer cannot exist)."""
    return max(1, int(round(channels * width)))


def check_width(width: float) -> float:
    """Reject non-positive or non-numeric multipliers early with a one-line message instead of a shape error later."""
    try:
        value = float(width)
    except (TypeError, ValueError):
        raise UserError(f"width must be a positive number, got {width!r}") from None
    if not value > 0:
        raise UserError(f"width must be a positive number, got {width!r}")
    return value
