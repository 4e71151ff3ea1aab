"""Collect run records into tables: runs.csv, summary.csv, kept_channels.csv, reported.csv, <dataset>_<arch>.md.

Only the files passed in are read (the Snakemake collect rule passes the exact list), so a stale or
half-finished run lying in results/runs can never leak into a table. Every output is written atomically.

CLI::

    python -m harness.results.collect --metrics <metrics.json ...> --plans <plan.json ...> \\
        --out results/tables --reported results/reported

File lists may also come from a list file, one path per line: ``--metrics @metrics.txt``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from harness.results.markdown import render_table
from harness.results.reported import REPORTED_COLUMNS, load_reported
from harness.results.schema import COLUMN_TYPES, NULLABLE, RUN_COLUMNS, validate_record
from harness.results.stats import Interval, mean_interval, paired_difference

#: Keys that identify one run; two metrics.json files with the same key are an error.
RUN_KEY: tuple[str, ...] = ("dataset", "arch", "method", "budget_metric", "budget_target", "seed")
#: Grouping of summary.csv: one row per setting, aggregated over seeds.
GROUP_KEYS: tuple[str, ...] = ("dataset", "arch", "method", "structured", "budget_metric", "budget_target")
#: Columns aggregated in summary.csv (``delta_top1`` = top1 - base_top1 per run, then aggregated).
SUMMARY_METRICS: tuple[str, ...] = (
    "top1", "top5", "base_top1", "delta_top1", "macs_reduction", "params_reduction", "achieved_reduction",
    "search_wall_s", "finetune_wall_s", "search_images_scored",
    "heldout_top1",
    "useful_recall",
    "latency_ms", "latency_large_ms", "base_latency_ms", "base_latency_large_ms",
    "latency_reduction", "latency_large_reduction",
)
#: Metrics whose mean gets a 95 % Student-t interval (``<m>_ci_low``, ``<m>_ci_high``; harness.results.stats).
INTERVAL_METRICS: tuple[str, ...] = ("top1", "delta_top1", "heldout_top1", "useful_recall")
#: Every method is compared with this one over the seeds both ran (paired differences of these metrics).
PAIRED_REFERENCE = "l1-uniform"
PAIRED_METRICS: tuple[str, ...] = ("top1", "heldout_top1")
#: Column order of summary.csv.
SUMMARY_COLUMNS: tuple[str, ...] = GROUP_KEYS + ("n", "seeds", "search_evaluations", "search_device", "latency_device", "best_is_opening_n") + tuple(
    f"{m}_{s}" for m in SUMMARY_METRICS for s in ("mean", "std")) + tuple(
    f"{m}_ci_{s}" for m in INTERVAL_METRICS for s in ("low", "high")) + tuple(
    f"{m}_vs_reference_{s}" for m in PAIRED_METRICS for s in ("mean", "low", "high", "n"))
#: Column order of kept_channels.csv.
KEPT_COLUMNS: tuple[str, ...] = (
    "dataset", "arch", "method", "budget_metric", "budget_target", "seed",
    "group_index", "group_id", "size", "kept", "kept_fraction", "l1_jaccard",
)
PLAN_FORMAT = "prunebench-plan/1"
#: Integer run columns that may be blank (``search_evaluations``).
NULLABLE_INT: tuple[str, ...] = tuple(c for c in RUN_COLUMNS if COLUMN_TYPES[c] is int and c in NULLABLE)
#: Boolean run columns that may be blank (``best_is_opening``).
NULLABLE_BOOL: tuple[str, ...] = tuple(c for c in RUN_COLUMNS if COLUMN_TYPES[c] is bool and c in NULLABLE)


def _read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: not valid JSON ({exc})") from None


def load_runs(metrics_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One validated row per metrics.json, in :data:`RUN_COLUMNS` order, sorted by :data:`RUN_KEY`."""
    records, origin = [], {}
    for path in metrics_paths:
        rec = validate_record(_read_json(path), source=path)
        key = tuple(rec[k] for k in RUN_KEY)
        if key in origin:
            raise ValueError(f"duplicate run {dict(zip(RUN_KEY, key))}: {origin[key]} and {os.fspath(path)}")
        origin[key] = os.fspath(path)
        records.append(rec)
    df = pd.DataFrame.from_records(records, columns=list(RUN_COLUMNS))
    if df.empty:
        return _typed_empty_runs()
    df = df.astype({c: "Int64" for c in NULLABLE_INT})  # blank cells, not 24.0
    df = df.astype({c: "boolean" for c in NULLABLE_BOOL})  # blank cells, not False (NaN from the validator)
    return df.sort_values(list(RUN_KEY), kind="stable").reset_index(drop=True)


def _typed_empty_runs() -> pd.DataFrame:
    from harness.results.schema import COLUMN_TYPES
    kind = {str: "str", int: "int64", float: "float64", bool: "bool"}
    return pd.DataFrame({c: pd.Series(dtype="Int64" if c in NULLABLE_INT else "boolean" if c in NULLABLE_BOOL
                                      else kind[COLUMN_TYPES[c]])
                         for c in RUN_COLUMNS})


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    """Per :data:`GROUP_KEYS`: mean, std (ddof=1; NaN when n == 1, written as a blank cell) and n over seeds,
    the 95 % t interval of the mean for :data:`INTERVAL_METRICS`, and for :data:`PAIRED_METRICS` the mean
    paired difference to :data:`PAIRED_REFERENCE` (same dataset, arch and budget; the seeds both ran) with its
    interval (``<m>_vs_reference_{mean,low,high,n}``; blank for the reference itself and without common seeds).

    Why NaN and not 0 for a single seed: a zero std would claim a precision that one seed cannot show.
    """
    if runs.empty:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in SUMMARY_COLUMNS})
    df = runs.copy()
    df["delta_top1"] = df["top1"] - df["base_top1"]
    for tag in ("", "large_"):  # fraction of the base model's measured latency removed (same job, same device)
        df[f"latency_{tag}reduction"] = 1.0 - df[f"latency_{tag}ms"].astype("float64") / df[
            f"base_latency_{tag}ms"].astype("float64")
    setting = ["dataset", "arch", "budget_metric", "budget_target"]
    reference = {key: g.set_index("seed") for key, g in df[df["method"] == PAIRED_REFERENCE].groupby(setting)}
    rows = []
    for key, g in df.groupby(list(GROUP_KEYS), sort=True, dropna=False):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        row["n"] = len(g)
        row["seeds"] = ";".join(str(s) for s in sorted(g["seed"]))
        # candidates the search scored: one number when every seed agrees (blank for methods that do not say)
        evals = g["search_evaluations"].dropna() if "search_evaluations" in g else []
        row["search_evaluations"] = ";".join(str(int(v)) for v in sorted(set(evals)))
        for col in ("search_device", "latency_device"):  # the distinct devices of the seeds, ";"-joined
            values = g[col].replace("", math.nan).dropna() if col in g else []
            row[col] = ";".join(sorted(set(map(str, values))))
        # seeds whose search returned its opening plan (another method's): blank when the method cannot
        opening = g["best_is_opening"].dropna() if "best_is_opening" in g else []
        row["best_is_opening_n"] = int(sum(bool(v) for v in opening)) if len(opening) else math.nan
        for m in SUMMARY_METRICS:
            vals = g[m].astype("float64")
            row[f"{m}_mean"] = float(vals.mean()) if vals.notna().any() else math.nan
            row[f"{m}_std"] = float(vals.std(ddof=1)) if vals.notna().sum() > 1 else math.nan
        for m in INTERVAL_METRICS:
            ci = mean_interval(g[m].astype("float64"))
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = ci.low, ci.high
        ref = reference.get(tuple(row[k] for k in setting))
        for m in PAIRED_METRICS:
            diff = Interval(math.nan, math.nan, 0, math.nan, math.nan)
            if ref is not None and row["method"] != PAIRED_REFERENCE:
                mine = g.set_index("seed")[m].astype("float64")
                diff = paired_difference(mine.to_dict(), ref[m].astype("float64").to_dict())
            row[f"{m}_vs_reference_mean"], row[f"{m}_vs_reference_low"] = diff.mean, diff.low
            row[f"{m}_vs_reference_high"], row[f"{m}_vs_reference_n"] = diff.high, diff.n
        rows.append(row)
    out = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    return out.sort_values(list(GROUP_KEYS), kind="stable").reset_index(drop=True)


def _plan_rows(plan: Any, path: str | os.PathLike) -> list[dict[str, Any]]:
    where = os.fspath(path)
    if not isinstance(plan, dict):
        raise ValueError(f"{where}: plan is not a JSON object")
    if plan.get("format") != PLAN_FORMAT:
        raise ValueError(f"{where}: format is {plan.get('format')!r}, expected {PLAN_FORMAT!r}")
    for k in ("method", "dataset", "arch", "seed", "budget", "groups"):
        if k not in plan:
            raise ValueError(f"{where}: plan is missing key {k!r}")
    budget = plan["budget"]
    if not isinstance(budget, dict) or "metric" not in budget or "target" not in budget:
        raise ValueError(f"{where}: plan budget needs 'metric' and 'target'")
    rows = []
    overlap = (plan.get("meta") or {}).get("l1_jaccard") or {}
    for i, g in enumerate(plan["groups"]):
        for k in ("id", "size", "keep"):
            if k not in g:
                raise ValueError(f"{where}: group {i} is missing key {k!r}")
        size, kept = int(g["size"]), len(g["keep"])
        if size <= 0 or kept > size:
            raise ValueError(f"{where}: group {g['id']!r} keeps {kept} of {size} channels")
        rows.append({
            "dataset": str(plan["dataset"]), "arch": str(plan["arch"]), "method": str(plan["method"]),
            "budget_metric": str(budget["metric"]), "budget_target": float(budget["target"]),
            "seed": int(plan["seed"]), "group_index": i, "group_id": str(g["id"]), "size": size,
            "kept": kept, "kept_fraction": kept / size,
            "l1_jaccard": float(overlap[g["id"]]) if g["id"] in overlap else float("nan"),
        })
    return rows


def load_kept_channels(plan_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """One row per (plan, prunable group): how many of the group's channels the plan keeps."""
    rows: list[dict[str, Any]] = []
    for path in plan_paths:
        rows += _plan_rows(_read_json(path), path)
    df = pd.DataFrame(rows, columns=list(KEPT_COLUMNS))
    key = [c for c in KEPT_COLUMNS[:7]]
    return df.sort_values(key, kind="stable").reset_index(drop=True) if len(df) else df


#: Test hook, unset in normal use: seconds to sleep after runs.csv is written and before the other tables,
#: so that tests/test_faults.py can kill the collect job between two of its writes (collect otherwise takes
#: well under a second, too short to hit reliably from outside).
TEST_PAUSE_ENV = "PRUNEBENCH_TEST_COLLECT_PAUSE_S"


def _test_pause() -> None:
    seconds = os.environ.get(TEST_PAUSE_ENV)
    if seconds:
        import time

        print(f"collect: {TEST_PAUSE_ENV}={seconds}: pausing after runs.csv", file=sys.stderr, flush=True)
        time.sleep(float(seconds))


def _csv(df: pd.DataFrame) -> str:
    # NaN -> blank cell; floats at full precision (repr) so nothing is lost between tables and figures.
    return df.to_csv(index=False, na_rep="", lineterminator="\n")


def collect(metrics_paths: Sequence[str | os.PathLike], plan_paths: Sequence[str | os.PathLike],
            out_dir: str | os.PathLike, reported_dir: str | os.PathLike | None = None) -> list[Path]:
    """Build every table from exactly the given files; return the paths written.

    Writes ``runs.csv``, ``summary.csv``, ``kept_channels.csv`` (with each group's Jaccard overlap with the
    L1 top-k), ``search_logs.csv`` (every search log beside a plan), ``reported.csv`` (the validated published
    rows, so that figures read tables only) and one ``<dataset>_<arch>.md`` per dataset/arch among the runs.
    ``reported_dir=None`` means no published rows.
    """
    from harness.io import write_text
    from harness.results.search_logs import load_search_logs

    out = Path(out_dir)
    runs = load_runs(metrics_paths)
    summary = summarize(runs)
    kept = load_kept_channels(plan_paths)
    reported = (load_reported(reported_dir) if reported_dir is not None
                else pd.DataFrame({c: pd.Series(dtype="str") for c in REPORTED_COLUMNS}))
    written = [write_text(out / "runs.csv", _csv(runs))]
    _test_pause()
    written += [
        write_text(out / "summary.csv", _csv(summary)),
        write_text(out / "kept_channels.csv", _csv(kept)),
        write_text(out / "reported.csv", _csv(reported)),
        write_text(out / "search_logs.csv", _csv(load_search_logs(plan_paths))),
    ]
    pairs = sorted({(d, a) for d, a in zip(runs["dataset"], runs["arch"])})
    for dataset, arch in pairs:
        written.append(write_text(out / f"{dataset}_{arch}.md", render_table(dataset, arch, summary, reported)))
    return written


class _ListFileParser(argparse.ArgumentParser):
    """``@listfile`` holds one argument per line; blank lines and ``#`` comments are skipped."""

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        line = arg_line.strip()
        return [] if not line or line.startswith("#") else [line]


def build_parser() -> argparse.ArgumentParser:
    p = _ListFileParser(prog="python -m harness.results.collect", description=__doc__.split("\n\n")[0],
                        fromfile_prefix_chars="@")
    p.add_argument("--metrics", nargs="*", default=[], help="metrics.json files of the runs (or @listfile)")
    p.add_argument("--plans", nargs="*", default=[], help="plan.json files of the runs (or @listfile)")
    p.add_argument("--out", required=True, help="output folder, e.g. results/tables")
    p.add_argument("--reported", default=None, help="folder of published-number CSVs, e.g. results/reported")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        written = collect(args.metrics, args.plans, args.out, args.reported)
    except (ValueError, OSError) as exc:
        print(f"collect: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0


class _CallableModule(types.ModuleType):
    """Lets ``harness.results.collect`` (the module, which the import system binds on the package once it is
    imported) also be called as the function ``collect``: the package name and the function name coincide."""

    def __call__(self, *args: Any, **kwargs: Any) -> list[Path]:
        return collect(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
