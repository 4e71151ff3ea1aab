"""Shared library of the pruning benchmark: data, models, metrics, training, pruning surgery, results.

Methods (``method/``) and baselines (``baselines/``) import from here; nothing here imports them.
They plug in through :mod:`harness.registry`.
"""

from harness import _startup

_startup.install()
