"""Render every figure from results/tables (the only input): ``python -m figures --tables ... --out ...``.

Inputs: ``summary.csv`` (required), ``kept_channels.csv`` (optional: no layer figures without it), ``runs.csv``
(optional: the planted-benchmark figures) and the
published points from ``reported.csv`` in the tables folder (written by collect), or from ``--reported DIR``
(results/reported/*.csv through :func:`harness.results.load_reported`) when given.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from figures.crl import crl_pairs, crl_search_logs, plot_crl_search
from figures.planted import planted_pairs, plot_planted
from figures.search import plot_l1_overlap, plot_search_curves, plot_search_efficiency
from figures.plots import (
    budget_slug, default_budget, has_latency, parse_budget, plot_accuracy_vs_latency, plot_accuracy_vs_macs,
    plot_kept_channels, save_figure,
    available_budgets,
)

FORMATS: tuple[str, ...] = ("png", "pdf")


def _read_table(path: Path) -> pd.DataFrame:
    # Keys as strings (an arch such as "1.0x" must not become a float); everything else parsed normally.
    return pd.read_csv(path, dtype={"dataset": "str", "arch": "str", "method": "str", "budget_metric": "str",
                                    "group_id": "str", "seeds": "str"})


def _load_reported(tables_dir: Path, reported_dir: str | os.PathLike | None) -> pd.DataFrame | None:
    from harness.results.reported import load_reported, validate_reported

    if reported_dir is not None:
        return load_reported(reported_dir)
    path = tables_dir / "reported.csv"
    if not path.exists():
        return None
    return validate_reported(pd.read_csv(path, dtype="str", keep_default_na=False), source=path)


def render_all(tables_dir: str | os.PathLike, out_dir: str | os.PathLike, budget: str | None = None,
               reported_dir: str | os.PathLike | None = None,
               formats: Sequence[str] = FORMATS) -> list[Path]:
    """Write all figures into ``out_dir`` and return their paths.

    * ``accuracy_vs_macs_<dataset>_<arch>.<fmt>`` for every dataset/arch in summary.csv, and
      ``accuracy_vs_latency_<dataset>_<arch>.<fmt>`` where it holds measured latencies;
    * ``search_<dataset>_<arch>.<fmt>`` for every dataset/arch in search_logs.csv (searching methods only), and
      ``search_efficiency_<dataset>_<arch>.<fmt>``: best search accuracy vs. candidate evaluations, all of them;
    * ``crl_<dataset>_<arch>.<fmt>`` for every dataset/arch with crl-neuron / crl-layer logs in search_logs.csv
      (nu and the mean cost against the budget over training, one line per method x budget);
    * ``planted_<dataset>_<arch>.<fmt>`` for every planted arch in runs.csv (useful recall and accuracy per
      method and budget, figures/planted.py);
    * ``l1_overlap_<dataset>_<arch>_<metric>-<target>.<fmt>`` beside each kept-channels figure;
    * ``kept_channels_<dataset>_<arch>_<metric>-<target>.<fmt>`` for every dataset/arch in kept_channels.csv,
      at ``budget`` (``"macs-0.5"``) or, if ``None``, at the MACs budget closest to 0.5 present. A dataset/arch
      without the requested budget is skipped with a warning on stderr.
    """
    tables = Path(tables_dir)
    out = Path(out_dir)
    summary = _read_table(tables / "summary.csv")
    reported = _load_reported(tables, reported_dir)
    written: list[Path] = []
    for dataset, arch in sorted({(d, a) for d, a in zip(summary["dataset"], summary["arch"])}):
        fig = plot_accuracy_vs_macs(summary, reported, dataset=dataset, arch=arch)
        for fmt in formats:
            written.append(save_figure(fig, out / f"accuracy_vs_macs_{dataset}_{arch}.{fmt}"))
        if has_latency(summary, dataset, arch):
            fig = plot_accuracy_vs_latency(summary, dataset=dataset, arch=arch)
            for fmt in formats:
                written.append(save_figure(fig, out / f"accuracy_vs_latency_{dataset}_{arch}.{fmt}"))
    runs_path = tables / "runs.csv"
    if runs_path.exists():
        runs = _read_table(runs_path)
        for dataset, arch in planted_pairs(runs):
            fig = plot_planted(runs, dataset=dataset, arch=arch)
            for fmt in formats:
                written.append(save_figure(fig, out / f"planted_{dataset}_{arch}.{fmt}"))
    logs_path = tables / "search_logs.csv"
    if logs_path.exists():
        logs = _read_table(logs_path)
        pairs = sorted({(d, a) for d, a in zip(logs["dataset"], logs["arch"])}) if len(logs) else []
        for dataset, arch in pairs:
            fig = plot_search_curves(logs, dataset=dataset, arch=arch)
            for fmt in formats:
                written.append(save_figure(fig, out / f"search_{dataset}_{arch}.{fmt}"))
            fig = plot_search_efficiency(logs, dataset=dataset, arch=arch)
            for fmt in formats:
                written.append(save_figure(fig, out / f"search_efficiency_{dataset}_{arch}.{fmt}"))
        # the constrained-RL searches: Lagrange multiplier and mean cost against the budget (figures/crl.py)
        for dataset, arch in crl_pairs(logs):
            crl, seed = crl_search_logs(logs, dataset=dataset, arch=arch)
            fig = plot_crl_search(crl, title=f"{dataset} / {arch}: constrained-RL search (seed {seed})")
            for fmt in formats:
                written.append(save_figure(fig, out / f"crl_{dataset}_{arch}.{fmt}"))
    kept_path = tables / "kept_channels.csv"
    if not kept_path.exists():
        return written
    kept = _read_table(kept_path)
    wanted = parse_budget(budget) if budget is not None else None
    for dataset, arch in sorted({(d, a) for d, a in zip(kept["dataset"], kept["arch"])}):
        if wanted is None:
            chosen = default_budget(kept, dataset, arch)
        else:
            present = [b for b in available_budgets(kept, dataset, arch)
                       if b[0] == wanted[0] and abs(b[1] - wanted[1]) < 1e-9]
            chosen = present[0] if present else None
            if chosen is None:
                print(f"figures: warning: no {budget_slug(*wanted)} plans for {dataset}/{arch}; "
                      f"kept-channels figure skipped", file=sys.stderr)
        if chosen is None:
            continue
        metric, target = chosen
        fig = plot_kept_channels(kept, dataset=dataset, arch=arch, metric=metric, target=target)
        for fmt in formats:
            name = f"kept_channels_{dataset}_{arch}_{budget_slug(metric, target)}.{fmt}"
            written.append(save_figure(fig, out / name))
        if "l1_jaccard" in kept.columns:
            fig = plot_l1_overlap(kept, dataset=dataset, arch=arch, metric=metric, target=target)
            for fmt in formats:
                name = f"l1_overlap_{dataset}_{arch}_{budget_slug(metric, target)}.{fmt}"
                written.append(save_figure(fig, out / name))
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m figures", description=__doc__.split("\n\n")[0])
    p.add_argument("--tables", default="results/tables", help="folder of collect's tables (default: %(default)s)")
    p.add_argument("--out", default="figures/out", help="output folder (default: %(default)s)")
    p.add_argument("--budget", default=None,
                   help="budget of the kept-channels figures, e.g. macs-0.5 (default: MACs budget closest to 0.5)")
    p.add_argument("--reported", default=None,
                   help="folder of published-number CSVs (default: <tables>/reported.csv if present)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    args = build_parser().parse_args(argv)
    try:
        if args.budget is not None:
            parse_budget(args.budget)
        written = render_all(args.tables, args.out, args.budget, args.reported)
    except (ValueError, OSError) as exc:
        print(f"figures: error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return 0
