"""Seed statistics for the tables: a mean with its Student-t interval, and paired differences over seeds.

One seed proves nothing, so every summary cell carries n, the standard deviation and a 95 % confidence
interval of the mean (Student t with n - 1 degrees of freedom, scipy); a method is compared with a
reference method (``l1-uniform``) by the mean of the per-seed differences over the seeds both ran, with the
interval of that mean. A difference whose interval contains zero is "not different" at that level.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """Mean of ``n`` values, their sample standard deviation and the two-sided t interval of the mean
    (NaN where ``n`` is too small: no std for n = 1, no interval for n < 2)."""

    mean: float
    std: float
    n: int
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies wholly above or below zero (NaN bounds: False)."""
        return bool(self.low > 0 or self.high < 0)


def mean_interval(values: Iterable[float], level: float = LEVEL) -> Interval:
    """The mean of the finite ``values`` with its Student-t interval at ``level``."""
    x = np.asarray([float(v) for v in values], dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Interval(math.nan, math.nan, 0, math.nan, math.nan)
    mean = float(x.mean())
    if n == 1:
        return Interval(mean, math.nan, 1, math.nan, math.nan)
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * std / math.sqrt(n)
    return Interval(mean, std, n, mean - half, mean + half)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float],
                      level: float = LEVEL) -> Interval:
    """Mean over the seeds present (and finite) in both of ``values[s] - reference[s]``, with its interval."""
    seeds = sorted(s for s in set(values) & set(reference)
                   if math.isfinite(float(values[s])) and math.isfinite(float(reference[s])))
    return mean_interval((float(values[s]) - float(reference[s]) for s in seeds), level)
