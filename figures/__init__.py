"""Figures of the benchmark, drawn from results/tables/*.csv only (never from run outputs).

``python -m figures --tables results/tables --out figures/out [--budget macs-0.5]`` renders all of them.
"""
from __future__ import annotations

from figures.plots import (
    available_budgets, budget_slug, default_budget, parse_budget, plot_accuracy_vs_macs, plot_kept_channels,
    reference_top1, save_figure,
)
from figures.render import main, render_all

__all__ = [
    "plot_accuracy_vs_macs", "plot_kept_channels", "save_figure", "render_all", "main",
    "parse_budget", "budget_slug", "default_budget", "available_budgets", "reference_top1",
]
