"""The constrained-RL search over training: the Lagrange multiplier, and the mean cost against its budget.

Input: the per-update search logs of ``crl-neuron`` / ``crl-layer`` (``search_log.csv`` beside the plan,
columns ``timesteps``, ``mean_cost``, ``budget``, ``nu``; see ``baselines/crl/search.py``). The cost is the
remaining percentage of the budgeted quantity, so the dashed budget line is where the Lagrangian wants the
mean cost; nu rises while the cost is above it and falls below it. Like :mod:`figures.plots`, the Figure is
built without pyplot and saved atomically.

In the DAG, :func:`crl_search_logs` picks one dataset/arch's logs out of ``results/tables/search_logs.csv``
(collect's table of every search log; its CRL rows keep these columns) and ``figures.render.render_all``
writes ``crl_<dataset>_<arch>.<png|pdf>`` for every dataset/arch with a log of a method in
:data:`CRL_METHODS`, the same names ``rules/common.smk`` lists in ``FIGURES``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import pandas as pd
from matplotlib.figure import Figure

from figures.plots import save_figure

REQUIRED = ("timesteps", "mean_cost", "budget", "nu")
#: methods whose search logs are drawn here (rules/common.smk imports it for the FIGURES list)
CRL_METHODS: tuple[str, ...] = ("crl-neuron", "crl-layer")


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


def crl_pairs(table: pd.DataFrame) -> list[tuple[str, str]]:
    """The (dataset, arch) pairs of ``search_logs.csv`` with at least one CRL log, sorted."""
    if table.empty or "method" not in table.columns:
        return []
    sel = table[table["method"].isin(CRL_METHODS)]
    return sorted({(str(d), str(a)) for d, a in zip(sel["dataset"], sel["arch"])})


def crl_search_logs(table: pd.DataFrame, *, dataset: str, arch: str,
                    seed: int | None = None) -> tuple[dict[str, pd.DataFrame], int]:
    """``({"<method> <metric>-<target>": log}, seed)`` of one dataset/arch from collect's search-log table.

    One log per method x budget, at ``seed`` (default: the smallest present, as the search-curve figure
    does, so that seeds do not overlap). The table holds every method's columns; a CRL row missing one of
    :data:`REQUIRED` is a log from an older version of the search: a ValueError naming the column.
    """
    sel = table[(table["dataset"].astype(str) == dataset) & (table["arch"].astype(str) == arch)
                & table["method"].isin(CRL_METHODS)]
    if sel.empty:
        raise ValueError(f"no crl search logs for {dataset}/{arch}")
    missing = [c for c in REQUIRED if c not in sel.columns or sel[c].isna().any()]
    if missing:
        raise ValueError(f"crl search logs of {dataset}/{arch} lack column(s) {', '.join(missing)}")
    seed = int(sel["seed"].min()) if seed is None else int(seed)
    sel = sel[sel["seed"].astype(int) == seed]
    logs: dict[str, pd.DataFrame] = {}
    keys = sorted({(m, b, float(t)) for m, b, t in zip(sel["method"], sel["budget_metric"], sel["budget_target"])},
                  key=lambda k: (CRL_METHODS.index(k[0]), k[1], k[2]))
    for method, metric, target in keys:
        run = sel[(sel["method"] == method) & (sel["budget_metric"] == metric)
                  & (sel["budget_target"].astype(float) - target).abs().lt(1e-12)]
        logs[f"{method} {metric}-{target:g}"] = run.reset_index(drop=True)
    return logs, seed
