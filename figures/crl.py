"""The constrained-RL search over training: the Lagrange multiplier, and the mean cost against its budget.

Input: the per-update search logs of ``crl-neuron`` / ``crl-layer`` (``search_log.csv`` beside the plan,
columns ``timesteps``, ``mean_cost``, ``budget``, ``nu``; see ``baselines/crl/search.py``). The cost is the
remaining percentage of the budgeted quantity, so the dashed budget line is where the Lagrangian wants the
mean cost; nu rises while the cost is above it and falls below it. Like :mod:`figures.plots`, the Figure is
built without pyplot and saved atomically.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure

from figures.plots import save_figure

REQUIRED = ("timesteps", "mean_cost", "budget", "nu")


def plot_crl_search(logs: Mapping[str, pd.DataFrame] | pd.DataFrame, *, title: str = "") -> Figure:
    """Two panels over environment steps: mean per-step cost with its budget (top), nu (bottom).

    ``logs``: one search log, or ``{label: log}`` (e.g. one per budget or seed), one line each.
    """
    if isinstance(logs, pd.DataFrame):
        logs = {"": logs}
    if not logs:
        raise ValueError("no search log to plot")
    for label, df in logs.items():
        missing = [c for c in REQUIRED if c not in df.columns]
        if missing:
            raise ValueError(f"search log {label or ''!s} lacks column(s) {', '.join(missing)}")
    fig = Figure(figsize=(7.2, 5.6))
    cost_ax, nu_ax = fig.subplots(2, 1, sharex=True)
    colors = [f"C{i % 10}" for i in range(len(logs))]
    for color, (label, df) in zip(colors, logs.items()):
        df = df.sort_values("timesteps")
        x = df["timesteps"].astype(float)
        cost_ax.plot(x, df["mean_cost"].astype(float), color=color, marker=".", label=label or "mean cost")
        cost_ax.plot(x, df["budget"].astype(float), color=color, linestyle="--", linewidth=1,
                     label=f"{label} budget" if label else "budget")
        nu_ax.plot(x, df["nu"].astype(float), color=color, marker=".", label=label or None)
    cost_ax.set_ylabel("mean cost per step\n(% remaining)")
    cost_ax.grid(alpha=0.3)
    cost_ax.legend(fontsize="small", ncol=2)
    nu_ax.set_ylabel("Lagrange multiplier ν")
    nu_ax.set_xlabel("environment steps")
    nu_ax.grid(alpha=0.3)
    if any(logs):
        nu_ax.legend(fontsize="small", ncol=2)
    if title:
        cost_ax.set_title(title)
    fig.tight_layout()
    return fig


def render_crl_search(logs: Mapping[str, pd.DataFrame] | pd.DataFrame, out: str | os.PathLike, *,
                      title: str = "") -> Path:
    """Draw :func:`plot_crl_search` and save it to ``out`` (format from the suffix: .png, .pdf)."""
    return save_figure(plot_crl_search(logs, title=title), out)


def read_logs(paths: Mapping[str, str | os.PathLike]) -> dict[str, pd.DataFrame]:
    """``{label: search_log.csv path}`` -> ``{label: DataFrame}`` (for the figures rule)."""
    return {label: pd.read_csv(p) for label, p in paths.items()}
