"""Markdown table per dataset/arch: our mean ± std rows with the published ("reported") rows beside them.

The reported rows carry their own baselines and FLOPs conventions, so the table shows Δ top-1 for both
and every reported row names its source; notes go into numbered footnotes to keep the table narrow.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

DASH = "—"


def _cell(text: Any) -> str:
    """Make a value safe inside a Markdown table cell (no pipes, no line breaks)."""
    return str(text).replace("|", "\\|").replace("\r", " ").replace("\n", " ").strip()


def _isnan(x: Any) -> bool:
    try:
        return x is None or math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def fmt_mean_std(mean: Any, std: Any = float("nan"), *, digits: int = 2, scale: float = 1.0,
                 signed: bool = False) -> str:
    """``mean ± std`` (std omitted when undefined, i.e. a single seed or a published number)."""
    if _isnan(mean):
        return DASH
    sign = "+" if signed else ""
    text = f"{float(mean) * scale:{sign}.{digits}f}"
    if not _isnan(std):
        text += f" ± {float(std) * scale:.{digits}f}"
    return text


def fmt_budget(metric: str, target: float) -> str:
    return f"{metric} {float(target):.2f}"


def render_table(dataset: str, arch: str, summary: pd.DataFrame, reported: pd.DataFrame | None) -> str:
    """The Markdown page of one dataset/arch.

    ``summary`` is the frame of summary.csv (any rows; those of ``dataset``/``arch`` are used);
    ``reported`` the frame of :func:`harness.results.reported.load_reported` (or ``None``).
    """
    ours = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
    ours = ours.sort_values(["method", "budget_metric", "budget_target"], kind="stable")
    pub = pd.DataFrame() if reported is None else reported[
        (reported["dataset"] == dataset) & (reported["arch"] == arch)]

    header = ["", "Method", "Budget", "n", "Top-1 (%)", "Δ top-1", "Base top-1 (%)", "Top-5 (%)",
              "MACs ↓ (%)", "Params ↓ (%)", "Source"]
    lines = [
        f"# {dataset} / {arch}",
        "",
        "**ours**: mean ± std over seeds (std with ddof = 1; omitted for n = 1), test split, reductions "
        "measured by this suite's MAC/parameter counter relative to our unpruned model. "
        "**reported**: published numbers copied from the cited source, with their own baseline and FLOPs "
        "convention — compare Δ top-1, not absolute accuracy.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    unstructured = False
    for _, r in ours.iterrows():
        method = str(r["method"])
        if not bool(r["structured"]):
            method += " (unstructured †)"
            unstructured = True
        n = int(r["n"])
        cells = [
            "ours", method, fmt_budget(r["budget_metric"], r["budget_target"]), str(n),
            fmt_mean_std(r["top1_mean"], r["top1_std"]),
            fmt_mean_std(r["delta_top1_mean"], r["delta_top1_std"], signed=True),
            fmt_mean_std(r["base_top1_mean"], r["base_top1_std"]),
            fmt_mean_std(r["top5_mean"], r["top5_std"]),
            fmt_mean_std(r["macs_reduction_mean"], r["macs_reduction_std"], digits=1, scale=100.0),
            fmt_mean_std(r["params_reduction_mean"], r["params_reduction_std"], digits=1, scale=100.0),
            f"this suite (seeds {r['seeds']})",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    notes: list[str] = []
    for _, r in pub.iterrows():
        delta = r["top1"] - r["base_top1"] if not _isnan(r["base_top1"]) else float("nan")
        ref = ""
        if str(r["note"]).strip():
            notes.append(f"{r['method']} (reported): {r['note']}")
            ref = f" [{len(notes)}]"
        cells = [
            "**reported**", f"{r['method']} (reported)", DASH, DASH,
            fmt_mean_std(r["top1"]), fmt_mean_std(delta, signed=True), fmt_mean_std(r["base_top1"]), DASH,
            fmt_mean_std(r["macs_reduction"], digits=1, scale=100.0),
            fmt_mean_std(r["params_reduction"], digits=1, scale=100.0),
            f"{r['source']}{ref}",
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if ours.empty and pub.empty:
        lines.append("| " + " | ".join([DASH] * len(header)) + " |")
    lines.append("")
    if unstructured:
        lines += ["† unstructured run (`structured = false` in its metrics.json): weights are masked rather "
                  "than channels removed, so its reductions do not mean a smaller dense model; do not compare "
                  "them directly with the structured rows.", ""]
    if notes:
        lines += ["Notes on the reported rows:", ""]
        lines += [f"{i}. {_cell(n)}" for i, n in enumerate(notes, 1)]
        lines.append("")
    return "\n".join(lines)
