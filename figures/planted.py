"""The planted-ground-truth benchmark: does a method keep the channels that matter, and what accuracy follows?

Input: ``results/tables/runs.csv`` only (collect's table of every run). For a planted experiment
(``planted-resnetN``, harness/models/planted.py: a trained ResNet widened with large-norm decoy channels that
never reach the output) each run carries ``useful_recall``, the fraction of the useful channels its plan
kept. :func:`plot_planted` draws, for each budget (one column), the useful recall per method (top) and the
accuracy per method (bottom): test top-1 after the common fine-tune, and, when the column is there and filled,
``heldout_top1`` (the pruned model before fine-tuning on the held-out part of the search split). Bars are
means over seeds, the dots the individual seeds. A method that ranks channels by filter magnitude keeps the
decoys first: at a budget that allows keeping every useful channel it should reach recall 1, and recall 0 is
the magnitude trap. Unstructured methods keep every channel (no recall): "n/a".

``figures.render.render_all`` writes ``planted_<dataset>_<arch>.<png|pdf>`` for every planted dataset/arch of
runs.csv, the names ``rules/common.smk`` lists in ``FIGURES``.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from figures.style import method_colour

#: arch names of the planted benchmark (harness.models.planted.PREFIX; not imported: it would load torch)
PLANTED_PREFIX = "planted-"
#: accuracy columns drawn, with their legend labels (``heldout_top1`` only when present and non-empty)
ACCURACY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("top1", "test top-1, fine-tuned"),
    ("heldout_top1", "held-out top-1, before fine-tune"),
)


def planted_pairs(runs: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, arch) pairs of runs.csv whose arch is a planted one, sorted."""
    if runs.empty or "arch" not in runs.columns:
        return []
    sel = runs[runs["arch"].astype(str).str.startswith(PLANTED_PREFIX)]
    return sorted({(str(d), str(a)) for d, a in zip(sel["dataset"], sel["arch"])})


def _has_values(df: pd.DataFrame, col: str) -> bool:
    return col in df.columns and pd.to_numeric(df[col], errors="coerce").notna().any()


def planted_runs(runs: pd.DataFrame, *, dataset: str, arch: str) -> pd.DataFrame:
    """The rows of one planted dataset/arch; a ValueError when there are none or runs.csv lacks the recall."""
    if "useful_recall" not in runs.columns:
        raise ValueError("runs.csv has no useful_recall column (re-run collect)")
    sel = runs[(runs["dataset"].astype(str) == dataset) & (runs["arch"].astype(str) == arch)].copy()
    if sel.empty:
        raise ValueError(f"no runs for {dataset}/{arch}")
    for col in ("useful_recall", "top1", "heldout_top1", "base_top1", "budget_target"):
        if col in sel.columns:
            sel[col] = pd.to_numeric(sel[col], errors="coerce")
    return sel


def _bars(ax, x: float, values: pd.Series, *, width: float, colour: str, label: str | None,
          hatch: str | None = None) -> None:
    """One bar at the mean of ``values`` (NaN dropped), the individual values as dots on it."""
    vals = values.dropna().to_numpy(dtype=float)
    if not len(vals):
        return
    ax.bar([x], [float(vals.mean())], width=width, color=colour, alpha=0.55, edgecolor=colour, hatch=hatch,
           label=label)
    jitter = np.linspace(-0.25, 0.25, len(vals)) * width if len(vals) > 1 else np.zeros(1)
    ax.scatter(x + jitter, vals, s=14, color="black", zorder=3)


def plot_planted(runs: pd.DataFrame, *, dataset: str, arch: str) -> Figure:
    """Per budget (columns): useful recall per method (top row), accuracy per method (bottom row).

    Bars: means over seeds; dots: the seeds. Axes order: the top row left to right, then the bottom row.
    """
    sel = planted_runs(runs, dataset=dataset, arch=arch)
    methods = sorted(sel["method"].astype(str).unique().tolist())
    budgets = sorted({(str(m), float(t)) for m, t in zip(sel["budget_metric"], sel["budget_target"])})
    accuracy = [(c, label) for c, label in ACCURACY_COLUMNS if _has_values(sel, c)]
    fig = Figure(figsize=(max(4.8, 1.0 + 0.62 * len(methods)) * len(budgets), 6.8))
    axes = fig.subplots(2, len(budgets), squeeze=False, sharey="row")
    x = np.arange(len(methods), dtype=float)
    width = 0.7 / max(1, len(accuracy))
    for col, (metric, target) in enumerate(budgets):
        recall_ax, acc_ax = axes[0][col], axes[1][col]
        b = sel[(sel["budget_metric"].astype(str) == metric) & np.isclose(sel["budget_target"], target)]
        for i, method in enumerate(methods):
            m = b[b["method"].astype(str) == method]
            if m.empty:
                continue
            if m["useful_recall"].notna().any():
                _bars(recall_ax, x[i], m["useful_recall"], width=0.6, colour=method_colour(method), label=None)
            else:  # unstructured (or a run without a ground truth): no channel is removed, no recall
                recall_ax.text(x[i], 0.02, "n/a", ha="center", va="bottom", fontsize="small", color="0.4")
            for k, (column, label) in enumerate(accuracy):
                offset = (k - (len(accuracy) - 1) / 2) * width
                _bars(acc_ax, x[i] + offset, m[column], width=width, colour=f"C{k}", hatch="//" if k else None,
                      label=label if label not in acc_ax.get_legend_handles_labels()[1] else None)
        recall_ax.axhline(1.0, color="0.5", linestyle=":", linewidth=1)
        recall_ax.set_ylim(0.0, 1.08)
        recall_ax.set_title(f"{metric} reduction {target:g}")
        recall_ax.grid(True, axis="y", alpha=0.3)
        base = b["base_top1"].dropna()
        if len(base):
            acc_ax.axhline(float(base.mean()), color="0.3", linestyle=":", linewidth=1,
                           label="unpruned base (test)")
        values = pd.concat([b[c] for c, _ in accuracy] + [base]).dropna()
        if len(values):
            low = float(values.min())
            acc_ax.set_ylim(max(0.0, math.floor(low / 5.0) * 5.0 - 5.0), 100.0)
        acc_ax.grid(True, axis="y", alpha=0.3)
        for ax in (recall_ax, acc_ax):
            ax.set_xticks(x)
            ax.set_xticklabels(methods, rotation=35, ha="right", fontsize="small")
        if col == 0:
            recall_ax.set_ylabel("useful recall\n(fraction of useful channels kept)")
            acc_ax.set_ylabel("top-1 (%)")
    legend: dict[str, object] = {}  # one legend for the figure, below the panels (never over a bar)
    for ax in axes[1]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=len(legend), fontsize="small",
                   frameon=False)
    fig.suptitle(f"{dataset} / {arch}: planted ground truth (bars = mean over seeds, dots = seeds)",
                 fontsize="medium")
    fig.tight_layout(rect=(0.0, 0.05 if legend else 0.0, 1.0, 1.0))
    return fig
