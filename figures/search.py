"""Figures of the searches: search curves (search_logs.csv) and channel overlap with L1 (kept_channels.csv).

* :func:`plot_search_curves`: per method with a logged search, accuracy of each episode on the search split
  (faint) and the best feasible accuracy so far (bold), one colour per budget; below, the fraction of feasible
  episodes over a sliding window (graph-RL's projection makes every terminal plan feasible, so a dip there
  is a bug, and for constrained RL it shows the multiplier at work).
* :func:`plot_l1_overlap`: per prunable group, the Jaccard overlap between the channels a method keeps and
  the L1 top-k at the same count (1 = magnitude's choice), one line per method: the spec's "beyond
  magnitude" view of *which* channels a method keeps, next to the kept-channels figure's *how many*.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from figures.plots import label_group_axis
from figures.style import method_colour

#: x axis of a search log: episodes for graph-RL and AMC, PPO updates for constrained RL.
STEP_COLUMNS = ("episode", "update")
FEASIBLE_WINDOW = 20


def _step_column(log: pd.DataFrame) -> str:
    for c in STEP_COLUMNS:
        if c in log.columns and log[c].notna().any():
            return c
    raise ValueError(f"search log has none of the step columns {STEP_COLUMNS}")


def _as_bool(series: pd.Series) -> pd.Series:
    return series.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))


def searched_methods(logs: pd.DataFrame, dataset: str, arch: str) -> list[str]:
    """Methods with a search log for ``dataset``/``arch``, sorted."""
    if logs.empty or "method" not in logs.columns:
        return []
    sel = logs[(logs["dataset"] == dataset) & (logs["arch"] == arch)]
    return sorted(sel["method"].dropna().unique().tolist())


def plot_search_curves(logs: pd.DataFrame, *, dataset: str, arch: str, seed: int | None = None) -> Figure:
    """One column per searched method: accuracy and best-so-far per budget (top), feasible fraction (bottom).

    ``seed``: the seed to draw (default: the smallest present), so curves of different seeds do not overlap.
    """
    methods = searched_methods(logs, dataset, arch)
    if not methods:
        raise ValueError(f"no search logs for {dataset}/{arch}")
    sel = logs[(logs["dataset"] == dataset) & (logs["arch"] == arch)]
    seed = int(sel["seed"].min()) if seed is None else int(seed)
    sel = sel[sel["seed"] == seed]
    fig = Figure(figsize=(4.6 * len(methods), 5.6))
    axes = fig.subplots(2, len(methods), squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 1]})
    colours = ["C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7"]
    for col, method in enumerate(methods):
        top, bottom = axes[0][col], axes[1][col]
        m = sel[sel["method"] == method]
        budgets = sorted({(b, float(t)) for b, t in zip(m["budget_metric"], m["budget_target"])})
        for i, (metric, target) in enumerate(budgets):
            run = m[(m["budget_metric"] == metric) & np.isclose(m["budget_target"].astype(float), target)]
            step = _step_column(run)
            run = run.sort_values(step)
            x = run[step].to_numpy(dtype=float)
            colour = colours[i % len(colours)]
            label = f"{metric} -{target:g}"
            dot = "o" if len(x) == 1 else None  # a one-point series (one PPO update) draws no line
            if "accuracy" in run.columns:
                top.plot(x, run["accuracy"].to_numpy(dtype=float), color=colour, alpha=0.3, linewidth=0.8,
                         marker=dot)
            if "best_accuracy" in run.columns:
                top.plot(x, run["best_accuracy"].to_numpy(dtype=float), color=colour, linewidth=1.8,
                         marker=dot, label=f"{label}: best so far")
            if "feasible" in run.columns:
                feasible = _as_bool(run["feasible"]).astype(float)
                window = min(FEASIBLE_WINDOW, max(1, len(feasible)))
                bottom.plot(x, feasible.rolling(window, min_periods=1).mean().to_numpy(), color=colour,
                            linewidth=1.2, marker=dot, label=label)
        top.set_title(f"{method}")
        top.set_ylabel("search-split top-1 (%)")
        top.grid(True, alpha=0.3)
        if top.get_legend_handles_labels()[0]:
            top.legend(fontsize="x-small", loc="lower right")
        bottom.set_ylim(-0.05, 1.05)
        bottom.set_ylabel(f"feasible\n(last {FEASIBLE_WINDOW})")
        bottom.set_xlabel(_step_column(m) if len(m) else "episode")
        bottom.grid(True, alpha=0.3)
    fig.suptitle(f"{dataset} / {arch}: search curves (seed {seed}; faint = each episode, bold = best so far)",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def candidates_axis(run: pd.DataFrame) -> np.ndarray:
    """Candidate evaluations so far at each row of one run's log: ``episode + 1`` for per-episode logs
    (graph-RL, AMC, the random searches), the cumulative ``episode`` count for per-update logs (constrained
    RL writes one row per PPO update, its ``episode`` column counting the episodes finished)."""
    per_update = "update" in run.columns and run["update"].notna().any()
    episodes = run["episode"].to_numpy(dtype=float)
    return episodes if per_update else episodes + 1.0


def plot_search_efficiency(logs: pd.DataFrame, *, dataset: str, arch: str) -> Figure:
    """Best search-split accuracy so far against candidate evaluations, every search method and the
    random-search controls on the same axes, one panel per budget: mean over seeds (line), min-max (band).

    The question a reviewer asks of a search method: is it above random search at the same number of
    evaluations, and from when on?
    """
    sel = logs[(logs["dataset"] == dataset) & (logs["arch"] == arch)]
    sel = sel[sel["best_accuracy"].notna()] if "best_accuracy" in sel.columns else sel.iloc[0:0]
    if sel.empty:
        raise ValueError(f"no search logs with best_accuracy for {dataset}/{arch}")
    budgets = sorted({(str(b), float(t)) for b, t in zip(sel["budget_metric"], sel["budget_target"])})
    fig = Figure(figsize=(5.2 * len(budgets) + 1.8, 4.4))
    axes = fig.subplots(1, len(budgets), squeeze=False, sharey=True)[0]
    for ax, (metric, target) in zip(axes, budgets):
        b = sel[(sel["budget_metric"] == metric) & np.isclose(sel["budget_target"].astype(float), target)]
        for method, m in sorted(b.groupby("method"), key=lambda kv: str(kv[0])):
            curves = []
            for _, run in m.groupby("seed"):
                run = run.sort_values("episode")
                curves.append(pd.Series(run["best_accuracy"].to_numpy(dtype=float), index=candidates_axis(run)))
            grid = pd.concat(curves, axis=1).sort_index().ffill()
            x = grid.index.to_numpy(dtype=float)
            colour = method_colour(str(method))
            mean = grid.mean(axis=1).to_numpy()
            ax.plot(x, mean, color=colour, linewidth=1.8, marker="o" if len(x) == 1 else None,
                    label=f"{method} ({grid.shape[1]} seed{'s' if grid.shape[1] != 1 else ''})")
            if grid.shape[1] > 1:
                ax.fill_between(x, grid.min(axis=1).to_numpy(), grid.max(axis=1).to_numpy(), color=colour,
                                alpha=0.15, linewidth=0)
        ax.set_title(f"{metric} -{target:g}")
        ax.set_xlabel("candidate evaluations")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("best search-split top-1 so far (%)")
    handles, labels = axes[0].get_legend_handles_labels()
    for ax in axes[1:]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if handles:
        axes[-1].legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                        borderaxespad=0.0)
    fig.suptitle(f"{dataset} / {arch}: search efficiency (line: mean over seeds; band: min-max)",
                 fontsize="medium")
    fig.tight_layout()
    return fig


def plot_l1_overlap(kept: pd.DataFrame, *, dataset: str, arch: str, metric: str, target: float) -> Figure:
    """Per prunable group, Jaccard(kept channels, L1 top-k at the same count), mean over seeds, per method."""
    if "l1_jaccard" not in kept.columns:
        raise ValueError("kept_channels.csv has no l1_jaccard column (re-run collect)")
    k = kept[(kept["dataset"] == dataset) & (kept["arch"] == arch) & (kept["budget_metric"] == metric)
             & np.isclose(kept["budget_target"].astype(float), float(target))]
    k = k[k["l1_jaccard"].notna()]
    fig = Figure(figsize=(max(6.4, 0.22 * k["group_index"].nunique() + 2.0), 4.6))
    ax = fig.add_subplot(1, 1, 1)
    styles = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D")]
    for i, (method, g) in enumerate(k.groupby("method", sort=True)):
        per_group = g.groupby("group_index", sort=True)["l1_jaccard"].mean()
        linestyle, marker = styles[i % len(styles)]
        ax.plot(per_group.index.to_numpy(), per_group.to_numpy(), linestyle=linestyle, marker=marker,
                markersize=4, linewidth=1.2, color=method_colour(str(method)),
                label=f"{method} (mean {per_group.mean():.2f})")
    label_group_axis(ax, k)
    ax.set_ylabel("Jaccard(kept, L1 top-k)")
    ax.set_ylim(-0.02, 1.05)
    ax.set_title(f"{dataset} / {arch}: overlap with L1's choice at {metric} reduction {float(target):g}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig
