"""Plotting functions: each takes table frames (results/tables/*.csv) and returns a matplotlib Figure.

They never read run outputs. The Figure objects are built without pyplot (no global state, nothing to
close, no display needed: saving uses matplotlib's Agg/PDF canvases), so importing this module does not
change the user's backend, and tests can inspect a Figure before it is saved.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from figures.style import method_colour, metric_marker
from harness.io import atomic_write

#: Markers of the published points, one per reported method (ours use "o" with error bars).
REPORTED_MARKERS = ("*", "D", "P", "X", "v", "^", "s", "<", ">", "h")
_BUDGET_RE = re.compile(r"^(macs|params|latency)-([0-9]*\.?[0-9]+)$")


def parse_budget(text: str) -> tuple[str, float]:
    """``"macs-0.5"`` -> ``("macs", 0.5)`` (the config's ``figures.layer_budget`` format)."""
    m = _BUDGET_RE.match(text.strip())
    if not m:
        raise ValueError(f"budget must look like 'macs-0.5' or 'params-0.3', got {text!r}")
    return m.group(1), float(m.group(2))


def budget_slug(metric: str, target: float) -> str:
    """File-name form of a budget: ``macs-0.5`` (target with ``%g``, so 0.50 and 0.5 name the same file)."""
    return f"{metric}-{float(target):g}"


def reference_top1(summary: pd.DataFrame) -> float:
    """Mean unpruned top-1 over all runs in ``summary`` (each setting weighted by its number of seeds)."""
    s = summary[summary["base_top1_mean"].notna()]
    if s.empty:
        return math.nan
    return float(np.average(s["base_top1_mean"].astype(float), weights=s["n"].astype(float)))


def plot_accuracy_vs_macs(summary: pd.DataFrame, reported: pd.DataFrame | None = None, *, dataset: str,
                          arch: str) -> Figure:
    """Top-1 vs. MACs reduction for one dataset/arch.

    One error-bar line per method (per budget metric, if a method was run under both): x = mean
    macs_reduction, y = mean top1, bars = std over seeds. A dotted horizontal line marks our mean unpruned
    top-1. Published points are separate markers labelled "<method> (reported)", plotted as published:
    their baselines differ from ours (and from each other), which the reader must keep in mind.
    """
    ours = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
    fig = Figure(figsize=(8.4, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    multi_metric = ours.groupby("method")["budget_metric"].nunique()
    for (method, metric, structured), g in ours.groupby(["method", "budget_metric", "structured"], sort=True):
        g = g.sort_values("macs_reduction_mean")
        label = str(method)
        if multi_metric.get(method, 1) > 1:
            label += f" ({metric} budget)"
        if not _truthy(structured):
            label += " (unstructured)"
        ax.errorbar(g["macs_reduction_mean"].astype(float), g["top1_mean"].astype(float),
                    yerr=g["top1_std"].astype(float).fillna(0.0), marker=metric_marker(metric), capsize=3,
                    linewidth=1.5, color=method_colour(str(method)),
                    linestyle="-" if _truthy(structured) else "--", label=label)
    base = reference_top1(ours)
    if not math.isnan(base):
        ax.axhline(base, color="black", linestyle=":", linewidth=1.2, label=f"unpruned (ours, {base:.2f} %)",
                   gid="reference")
    if reported is not None and len(reported):
        pub = reported[(reported["dataset"] == dataset) & (reported["arch"] == arch)
                       & reported["macs_reduction"].notna() & reported["top1"].notna()]
        palette = matplotlib.colormaps["Set2"].colors  # pastel: apart from the saturated colours of our lines
        for i, (method, g) in enumerate(pub.groupby("method", sort=True)):
            ax.scatter(g["macs_reduction"].astype(float), g["top1"].astype(float), s=70,
                       marker=REPORTED_MARKERS[i % len(REPORTED_MARKERS)], color=palette[i % len(palette)],
                       edgecolors="black", linewidths=0.6, zorder=3, label=f"{method} (reported)")
    ax.set_xlabel("MACs reduction (fraction of the unpruned model's MACs removed)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{dataset} / {arch}: accuracy vs. MACs reduction")
    ax.grid(True, alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    if handles:  # ours and the reference first, then the published points; outside so no point is hidden
        order = sorted(range(len(labels)), key=lambda i: (labels[i].endswith("(reported)"), i))
        ax.legend([handles[i] for i in order], [labels[i] for i in order], fontsize="small",
                  loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    return fig


def has_latency(summary: pd.DataFrame, dataset: str, arch: str) -> bool:
    """Whether ``summary`` holds measured latencies for ``dataset``/``arch`` (evaluate.latency on)."""
    if "latency_ms_mean" not in summary.columns:
        return False
    sel = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
    return bool(pd.to_numeric(sel["latency_ms_mean"], errors="coerce").notna().any())


def plot_accuracy_vs_latency(summary: pd.DataFrame, *, dataset: str, arch: str) -> Figure:
    """Top-1 against the measured latency (median ms per batch) at batch 1 and at a large batch, one panel
    each: FLOPs do not predict latency, so the same plans are placed where the device puts them. Error bars:
    std over seeds (both axes); dotted: the base model's latency measured in the same jobs."""
    ours = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
    fig = Figure(figsize=(11.0, 4.6))
    axes = fig.subplots(1, 2, squeeze=False)[0]
    for ax, tag, title in ((axes[0], "", "batch 1"), (axes[1], "large_", "large batch")):
        col = f"latency_{tag}ms"
        for (method, metric), g in ours.groupby(["method", "budget_metric"], sort=True):
            g = g[pd.to_numeric(g[f"{col}_mean"], errors="coerce").notna()].sort_values(f"{col}_mean")
            if g.empty:
                continue
            ax.errorbar(g[f"{col}_mean"].astype(float), g["top1_mean"].astype(float),
                        xerr=g[f"{col}_std"].astype(float).fillna(0.0), yerr=g["top1_std"].astype(float).fillna(0.0),
                        marker=metric_marker(metric), capsize=3, linewidth=1.2, color=method_colour(str(method)),
                        label=f"{method} ({metric} budget)")
        base = pd.to_numeric(ours[f"base_{col}_mean"], errors="coerce").dropna()
        if len(base):
            ax.axvline(float(base.mean()), color="black", linestyle=":", linewidth=1.2,
                       label=f"unpruned ({float(base.mean()):.2f} ms)")
        ax.set_xlabel(f"measured latency, {title} (median ms per batch)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    device = ""
    if "latency_device" in ours.columns:
        names = sorted({str(d) for d in ours["latency_device"].dropna() if str(d)})
        device = f" on {', '.join(names)}" if names else ""
    fig.suptitle(f"{dataset} / {arch}: accuracy vs. measured latency{device}", fontsize="medium")
    handles, labels = axes[1].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                       borderaxespad=0.0)
    fig.tight_layout()
    return fig


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1")
    return bool(value)


def available_budgets(kept: pd.DataFrame, dataset: str, arch: str) -> list[tuple[str, float]]:
    """The (metric, target) budgets present in kept_channels for one dataset/arch, sorted."""
    k = kept[(kept["dataset"] == dataset) & (kept["arch"] == arch)]
    return sorted({(str(m), float(t)) for m, t in zip(k["budget_metric"], k["budget_target"])})


def default_budget(kept: pd.DataFrame, dataset: str, arch: str) -> tuple[str, float] | None:
    """The MACs budget closest to 0.5 (ties: the smaller target); if there is none, the closest params budget."""
    budgets = available_budgets(kept, dataset, arch)
    for metric in ("macs", "params"):
        cands = [b for b in budgets if b[0] == metric]
        if cands:
            return min(cands, key=lambda b: (abs(b[1] - 0.5), b[1]))
    return None


def plot_kept_channels(kept: pd.DataFrame, *, dataset: str, arch: str, metric: str, target: float) -> Figure:
    """Kept fraction of each prunable group (model order on x) at one budget, one line per method.

    Each point is the mean over seeds; this shows *where* each method removes channels at equal cost.
    """
    k = kept[(kept["dataset"] == dataset) & (kept["arch"] == arch) & (kept["budget_metric"] == metric)
             & np.isclose(kept["budget_target"].astype(float), float(target))]
    fig = Figure(figsize=(max(6.4, 0.22 * k["group_index"].nunique() + 2.0), 4.6))
    ax = fig.add_subplot(1, 1, 1)
    # Methods can keep identical counts (random uses l1-uniform's); distinct styles keep both lines visible.
    styles = [("-", "o", 3), ("--", "s", 5), (":", "^", 7), ("-.", "D", 4)]
    for i, (method, g) in enumerate(k.groupby("method", sort=True)):
        per_group = g.groupby("group_index", sort=True)["kept_fraction"].mean()
        n_seeds = g["seed"].nunique()
        linestyle, marker, size = styles[i % len(styles)]
        ax.plot(per_group.index.to_numpy(), per_group.to_numpy(), marker=marker, markersize=size, linewidth=1.3,
                linestyle=linestyle, markerfacecolor="none" if i % 2 else None, color=method_colour(str(method)),
                label=f"{method} (mean of {n_seeds} seed{'s' if n_seeds != 1 else ''})")
    label_group_axis(ax, k)
    ax.set_ylabel("kept fraction of channels")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(f"{dataset} / {arch}: kept channels at {metric} reduction {float(target):g}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def label_group_axis(ax, rows: pd.DataFrame) -> None:
    """x axis of a per-group figure: the group ids as ticks (when few enough to read), in model order."""
    ids = rows.drop_duplicates("group_index").sort_values("group_index")
    if 0 < len(ids) <= 60:
        ax.set_xticks(ids["group_index"].to_numpy())
        ax.set_xticklabels(ids["group_id"].astype(str).to_list(), rotation=90, fontsize=6)
    ax.set_xlabel("prunable group (model order)")


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Save atomically (temp file in the same folder, then rename): a killed render leaves no half file."""
    fmt = Path(path).suffix.lstrip(".").lower()
    metadata = {"CreationDate": None} if fmt == "pdf" else None  # reproducible PDFs
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata,
                                                      bbox_inches="tight"))
