"""Job start-up: keep Torch-Pruning from importing timm (and through it torchvision) when nothing needs them.

Torch-Pruning's FLOP counter (``torch_pruning.utils.op_counter``, which the suite does not use: MACs come from
:mod:`harness.metrics.complexity`) tries ``import timm`` at import time for its timm-specific layer table;
timm imports torchvision, and the three cost about 2-3 s of every job that prunes (issue 13 measured 4.5-8 s
of imports per job). This finder answers "not installed" to that one import, from that one module, only when
timm is not loaded yet; every other ``import timm`` (the timm model zoo in :mod:`harness.models.hub`, the
tests) works as usual, and a timm model built before Torch-Pruning is imported keeps the full table.
"""
from __future__ import annotations

import importlib.abc
import sys

_GUARDED = "torch_pruning.utils.op_counter"


class _SkipOptionalTimm(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # noqa: ANN001 (the finder protocol)
        if name != "timm" or "timm" in sys.modules:
            return None
        frame = sys._getframe(1)
        while frame is not None:  # is the import statement in Torch-Pruning's op counter?
            if frame.f_globals.get("__name__") == _GUARDED:
                raise ModuleNotFoundError("timm is not imported for Torch-Pruning's unused FLOP counter", name=name)
            frame = frame.f_back
        return None


def install() -> None:
    """Put the finder first on ``sys.meta_path`` (once)."""
    if not any(isinstance(f, _SkipOptionalTimm) for f in sys.meta_path):
        sys.meta_path.insert(0, _SkipOptionalTimm())
