"""AMC's rewards (spec B.1): Error is the search-split top-1 error as a fraction.

* ``err``   R_err   = -Error                  (resource-constrained; the budget lives in the action wall)
* ``flops`` R_FLOPs = -Error * log(MACs)      (accuracy-guaranteed; the official ``acc_flops_reward``)
* ``param`` R_Param = -Error * log(#params)   (accuracy-guaranteed)

The official default ``acc_reward`` is accuracy/100 = 1 - Error, R_err plus a constant, which the moving-
average baseline removes. In the suite every plan must meet its budget, so the action wall stays on with
the accuracy-guaranteed rewards too.
"""
from __future__ import annotations

import math
from typing import Callable

REWARDS = ("err", "flops", "param")


def _error(acc: float) -> float:
    return 1.0 - float(acc) / 100.0


def reward_fn(name: str) -> Callable[[float, int, int], float]:
    """``fn(top1 percent, macs, params) -> reward``."""
    if name == "err":
        return lambda acc, macs, params: -_error(acc)
    if name == "flops":
        return lambda acc, macs, params: -_error(acc) * math.log(max(macs, 1))
    if name == "param":
        return lambda acc, macs, params: -_error(acc) * math.log(max(params, 1))
    raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {name!r}")
