"""Run-record schema, published numbers, and ``collect`` (run records -> results/tables).

Importing this package does not import torch (figures use it); only :func:`collect` writing files does,
through :mod:`harness.io`. The names of :mod:`harness.results.collect` are loaded lazily so that
``python -m harness.results.collect`` does not find its own module already imported by the package.
``harness.results.collect`` is that module, made callable: ``harness.results.collect(...)`` and
``from harness.results.collect import collect`` are the same function whatever was imported first.
"""
from __future__ import annotations

import importlib
from typing import Any

from harness.results.markdown import render_table
from harness.results.reported import REPORTED_COLUMNS, load_reported, validate_reported
from harness.results.schema import COLUMN_TYPES, RUN_COLUMNS, read_runs, validate_record

__all__ = [
    "RUN_COLUMNS", "COLUMN_TYPES", "validate_record", "read_runs",
    "REPORTED_COLUMNS", "load_reported", "validate_reported",
    "GROUP_KEYS", "SUMMARY_METRICS", "SUMMARY_COLUMNS", "KEPT_COLUMNS",
    "load_runs", "summarize", "load_kept_channels", "collect", "render_table",
]

_FROM_COLLECT = frozenset({"GROUP_KEYS", "SUMMARY_METRICS", "SUMMARY_COLUMNS", "KEPT_COLUMNS", "load_runs",
                           "summarize", "load_kept_channels"})


def __getattr__(name: str) -> Any:
    # `collect` itself resolves to the submodule, which is callable as the function (see collect.py).
    if name in _FROM_COLLECT or name == "collect":
        module = importlib.import_module("harness.results.collect")
        return module if name == "collect" else getattr(module, name)
    raise AttributeError(f"module 'harness.results' has no attribute {name!r}")
