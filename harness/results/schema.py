"""The run record: one metrics.json per run = one row of results/tables/runs.csv.

The column list is the contract of docs/architecture.md ("metrics.json of a run"). Validation is strict
(a missing or unknown key is an error naming it) so that a stage writing a half record, or a renamed
field, fails at collect time instead of silently producing a table with holes.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Mapping

import pandas as pd

#: The measured-latency columns (harness.metrics.latency, written by the evaluate stage).
LATENCY_COLUMNS: tuple[str, ...] = (
    "latency_ms", "latency_iqr_ms", "latency_large_ms", "latency_large_iqr_ms",
    "base_latency_ms", "base_latency_iqr_ms", "base_latency_large_ms", "base_latency_large_iqr_ms",
    "latency_batch_size", "latency_large_batch", "latency_device", "latency_threads",
)

RUN_COLUMNS: tuple[str, ...] = (
    "dataset", "arch", "method", "structured", "budget_metric", "budget_target", "seed",
    "base_top1", "base_top5", "top1", "top5",
    "base_macs", "base_params", "macs", "params",
    "macs_reduction", "params_reduction", "achieved_reduction",
    "finetune_epochs", "search_wall_s", "finetune_wall_s",
    "heldout_top1", "search_evaluations", "search_images_scored", "search_device", "best_is_opening",
    "useful_recall",
    *LATENCY_COLUMNS,
    "git_commit", "python_version", "torch_version", "torchvision_version", "torch_pruning_version",
    "timm_version", "device",
)

_STR = ("dataset", "arch", "method", "budget_metric", "git_commit", "python_version", "torch_version",
        "torchvision_version", "torch_pruning_version", "timm_version", "device", "search_device", "latency_device")
_INT = ("seed", "base_macs", "base_params", "macs", "params", "finetune_epochs", "search_evaluations",
        "search_images_scored", "latency_batch_size", "latency_large_batch", "latency_threads")
_FLOAT = ("budget_target", "base_top1", "base_top5", "top1", "top5", "macs_reduction", "params_reduction",
          "achieved_reduction", "search_wall_s", "finetune_wall_s", "heldout_top1",
          "useful_recall", "latency_ms", "latency_iqr_ms", "latency_large_ms", "latency_large_iqr_ms",
          "base_latency_ms", "base_latency_iqr_ms", "base_latency_large_ms", "base_latency_large_iqr_ms")
_BOOL = ("structured", "best_is_opening")

#: Python type of each column after :func:`validate_record`.
COLUMN_TYPES: dict[str, type] = {
    **{c: str for c in _STR}, **{c: int for c in _INT}, **{c: float for c in _FLOAT}, **{c: bool for c in _BOOL}
}
assert set(COLUMN_TYPES) == set(RUN_COLUMNS)

#: Columns that may be null (JSON ``null``): provenance strings become "", wall times NaN.
NULLABLE: frozenset[str] = frozenset({
    "git_commit", "python_version", "torch_version", "torchvision_version", "torch_pruning_version",
    "timm_version", "device", "search_wall_s", "finetune_wall_s",
    "heldout_top1", "search_evaluations", "search_images_scored", "search_device", "best_is_opening",
    "useful_recall", *LATENCY_COLUMNS,
})

#: Columns a record may lack (metrics.json written before they existed): read as null.
#: ``heldout_top1``: top-1 of the final plan on the held-out part of the search split (harness.data.hold_out);
#: ``search_evaluations``: candidates a search method scored (its plan's meta; empty for other methods).
#: ``useful_recall``: fraction of the planted benchmark's useful channels the plan keeps (harness/models/planted.py;
#: null for other archs and for unstructured plans).
#: ``best_is_opening``: the search returned its opening plan, i.e. another method's plan (graph-rl with an
#: ``opening_bar``); null for methods that cannot return another method's plan.
#: ``search_images_scored``: images the search ran through the network (candidates x (BN + scored images),
#: plus constrained RL's inner fine-tunes); ``search_device``: where the prune stage searched.
#: ``latency_*``: median latency (ms) of the pruned model at batch ``latency_batch_size`` and at
#: ``latency_large_batch``, their interquartile ranges, the same for its base model, on ``latency_device``
#: with ``latency_threads`` threads (the evaluate job's; null when ``evaluate.latency`` is off).
OPTIONAL: frozenset[str] = frozenset({"heldout_top1", "search_evaluations", "search_images_scored", "search_device",
                                      "best_is_opening", "useful_recall", *LATENCY_COLUMNS})
assert OPTIONAL <= NULLABLE


def pandas_dtype(col: str) -> str:
    """The pandas dtype of a column in the tables (a nullable integer column is ``Int64``: blank, not 24.0)."""
    typ = COLUMN_TYPES[col]
    if typ is int:
        return "Int64" if col in NULLABLE else "int64"
    if typ is bool:
        return "boolean" if col in NULLABLE else "bool"
    return {str: "str", float: "float64"}[typ]

#: Columns that must be non-empty strings: they are the keys of every table.
_KEY_STR = ("dataset", "arch", "method", "budget_metric")

BUDGET_METRICS = ("macs", "params", "latency")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise TypeError(f"not a boolean: {value!r}")


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(f"not an integer: {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError(f"not an integer: {value!r}")
        return int(value)
    return int(value)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    return float(value)


def _to_str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise TypeError(f"not a string: {value!r}")
    return str(value)


_COERCE: dict[type, Callable[[Any], Any]] = {str: _to_str, int: _to_int, float: _to_float, bool: _to_bool}


def validate_record(d: Mapping[str, Any], *, source: str | os.PathLike | None = None) -> dict[str, Any]:
    """Check one run record against :data:`RUN_COLUMNS` and coerce every value to its column's type.

    Raises ``ValueError`` naming the missing/unknown/ill-typed key (and ``source``, the file it came
    from, when given). Returns a new dict in :data:`RUN_COLUMNS` order.
    """
    where = f" in {os.fspath(source)}" if source is not None else ""
    if not isinstance(d, Mapping):
        raise ValueError(f"run record{where} is not a JSON object")
    missing = [c for c in RUN_COLUMNS if c not in d and c not in OPTIONAL]
    if missing:
        raise ValueError(f"run record{where} is missing column(s): {', '.join(missing)}")
    unknown = sorted(k for k in d if k not in COLUMN_TYPES)
    if unknown:
        raise ValueError(f"run record{where} has unknown column(s): {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for col in RUN_COLUMNS:
        value, typ = d.get(col), COLUMN_TYPES[col]
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if col not in NULLABLE:
                raise ValueError(f"run record{where}: column {col!r} is null")
            out[col] = "" if typ is str else float("nan")
            continue
        try:
            out[col] = _COERCE[typ](value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"run record{where}: column {col!r}: {exc}") from None
    for col in _KEY_STR:
        if not out[col].strip():
            raise ValueError(f"run record{where}: column {col!r} is empty")
    if out["budget_metric"] not in BUDGET_METRICS:
        raise ValueError(f"run record{where}: column 'budget_metric' must be one of {BUDGET_METRICS}, "
                         f"got {out['budget_metric']!r}")
    return out


def read_runs(path: str | os.PathLike) -> pd.DataFrame:
    """Read a runs.csv back with the schema's types.

    Why: version strings such as "2.10" or an all-digit git hash would otherwise be parsed as numbers.
    """
    dtypes = {c: pandas_dtype(c) for c in COLUMN_TYPES}
    df = pd.read_csv(path, dtype={c: "str" for c in _STR}, keep_default_na=False, na_values={
        c: [""] for c in _FLOAT + _INT})
    missing = [c for c in RUN_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{os.fspath(path)} is missing column(s): {', '.join(missing)}")
    df = df[list(RUN_COLUMNS)]
    if len(df):
        for col in _BOOL:  # a blank cell of a nullable flag is <NA>, not False
            df[col] = df[col].map(lambda v: pd.NA if col in NULLABLE and str(v).strip() in ("", "nan", "<NA>")
                                  else _to_bool(v))
    return df.astype(dtypes)
