"""Markdown table per dataset/arch: our mean ± std rows with the published ("reported") rows beside them.

The reported rows carry their own baselines and FLOPs conventions, so the table shows Δ top-1 for both
and every reported row names its source; notes go into numbered footnotes to keep the table narrow.
"""
from __future__ import annotations

import math
from typing import Any

import pandas as pd

DASH = "—"
#: arch names of the planted-ground-truth benchmark (harness.models.planted.PREFIX; not imported: torch)
PLANTED_PREFIX = "planted-"


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


def fmt_interval(low: Any, high: Any, *, digits: int = 2, signed: bool = False) -> str:
    """``[low, high]`` (— when undefined: fewer than two seeds)."""
    if _isnan(low) or _isnan(high):
        return DASH
    sign = "+" if signed else ""
    return f"[{float(low):{sign}.{digits}f}, {float(high):{sign}.{digits}f}]"


def fmt_paired(mean: Any, low: Any, high: Any, n: Any, *, digits: int = 2, bold: bool = True) -> str:
    """A paired difference to the reference method: ``+0.55 [-0.31, +1.41] n.s.`` when its 95 % interval
    contains zero (not different), in bold when it does not; ``+0.55 (n = 1)`` for one common seed."""
    if _isnan(mean):
        return DASH
    text = f"{float(mean):+.{digits}f}"
    if _isnan(low) or _isnan(high):
        return f"{text} (n = {int(float(n))}, no interval)"
    text += " " + fmt_interval(low, high, digits=digits, signed=True)
    if float(low) <= 0.0 <= float(high):
        return text + " n.s."
    return f"**{text}**" if bold else text


def fmt_evaluations(value: Any) -> str:
    """``search_evaluations`` of a summary row as text: "" (not a search), "24", or "24;48" (seeds differ)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def fmt_budget(metric: str, target: float) -> str:
    return f"{metric} {float(target):.2f}"


def search_cost_table(ours: pd.DataFrame) -> list[str]:
    """What each search cost (issue 14): candidates scored, images run through the network, wall time, device."""
    rows = ours[ours["search_evaluations"].map(lambda v: bool(fmt_evaluations(v)))]
    lines = ["**Search cost** (mean ± std over seeds): candidates scored, images run through the network "
             "(BN passes, scored images, constrained RL's inner fine-tunes), search wall time, device.", "",
             "| Method | Budget | Candidates | Images scored (millions) | Search wall time (s) | Device |",
             "|---|---|---|---|---|---|"]
    for _, r in rows.iterrows():
        lines.append("| " + " | ".join(_cell(c) for c in (
            r["method"], fmt_budget(r["budget_metric"], r["budget_target"]), fmt_evaluations(r["search_evaluations"]),
            fmt_mean_std(r.get("search_images_scored_mean"), r.get("search_images_scored_std"), digits=2,
                         scale=1e-6),
            fmt_mean_std(r.get("search_wall_s_mean"), r.get("search_wall_s_std"), digits=1),
            r.get("search_device") if isinstance(r.get("search_device"), str) and r.get("search_device") else DASH,
        )) + " |")
    return lines + [""]


def render_table(dataset: str, arch: str, summary: pd.DataFrame, reported: pd.DataFrame | None) -> str:
    """The Markdown page of one dataset/arch.

    ``summary`` is the frame of summary.csv (any rows; those of ``dataset``/``arch`` are used);
    ``reported`` the frame of :func:`harness.results.reported.load_reported` (or ``None``).
    """
    ours = summary[(summary["dataset"] == dataset) & (summary["arch"] == arch)]
    ours = ours.sort_values(["method", "budget_metric", "budget_target"], kind="stable")
    pub = pd.DataFrame() if reported is None else reported[
        (reported["dataset"] == dataset) & (reported["arch"] == arch)]

    header = ["", "Method", "Budget", "n", "Top-1 (%)", "Top-1 95 % CI", "Top-1 vs l1-uniform (paired)", "Δ top-1",
              "Base top-1 (%)", "Top-5 (%)", "Held-out top-1 (%)", "MACs ↓ (%)", "Params ↓ (%)",
              "Latency ↓ (%), batch 1", "Source"]
    # the planted benchmark (harness/models/planted.py): the fraction of the useful channels each plan kept
    planted = str(arch).startswith(PLANTED_PREFIX)
    if planted:
        header.insert(-1, "Useful recall")
    lines = [
        f"# {dataset} / {arch}",
        "",
        "**ours**: mean ± std over seeds (std with ddof = 1; omitted for n = 1), test split; the 95 % "
        "Student-t interval of the mean; the mean paired difference to l1-uniform over the seeds both ran, "
        "with its interval (**bold**: the interval excludes zero; n.s.: not different at that level); latency "
        "reduction measured in the evaluate job against the base timed in the same job; reductions "
        "measured by this suite's MAC/parameter counter relative to our unpruned model. "
        "**reported**: published numbers copied from the cited source, with their own baseline and FLOPs "
        "convention — compare Δ top-1, not absolute accuracy. **Held-out top-1**: the pruned model before "
        "fine-tuning (BN re-estimated) on the part of the search split no method selects on.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] * len(header)) + "|",
    ]
    unstructured = searched = opening = False
    for _, r in ours.iterrows():
        method = str(r["method"])
        evaluations = fmt_evaluations(r.get("search_evaluations"))
        if evaluations:
            method += f" (N={evaluations})"  # candidates its search scored: the table says so
            searched = True
        returned_opening = not _isnan(r.get("best_is_opening_n")) and float(r.get("best_is_opening_n")) > 0
        if returned_opening:  # it returned another method's plan in some seeds: never a win over that method
            method += f" ‡ (opening plan in {int(float(r['best_is_opening_n']))} of {int(r['n'])} seeds)"
            opening = True
        if not bool(r["structured"]):
            method += " (unstructured †)"
            unstructured = True
        n = int(r["n"])
        cells = [
            "ours", method, fmt_budget(r["budget_metric"], r["budget_target"]), str(n),
            fmt_mean_std(r["top1_mean"], r["top1_std"]),
            fmt_interval(r.get("top1_ci_low"), r.get("top1_ci_high")),
            ("‡ " if returned_opening else "") + fmt_paired(
                r.get("top1_vs_reference_mean"), r.get("top1_vs_reference_low"), r.get("top1_vs_reference_high"),
                r.get("top1_vs_reference_n"), bold=not returned_opening),
            fmt_mean_std(r["delta_top1_mean"], r["delta_top1_std"], signed=True),
            fmt_mean_std(r["base_top1_mean"], r["base_top1_std"]),
            fmt_mean_std(r["top5_mean"], r["top5_std"]),
            fmt_mean_std(r.get("heldout_top1_mean"), r.get("heldout_top1_std")),
            fmt_mean_std(r["macs_reduction_mean"], r["macs_reduction_std"], digits=1, scale=100.0),
            fmt_mean_std(r["params_reduction_mean"], r["params_reduction_std"], digits=1, scale=100.0),
            # measured on the evaluate job's device, against the base timed in the same job
            fmt_mean_std(r.get("latency_reduction_mean"), r.get("latency_reduction_std"), digits=1, scale=100.0),
            f"this suite (seeds {r['seeds']})",
        ]
        if planted:
            cells.insert(-1, fmt_mean_std(r.get("useful_recall_mean"), r.get("useful_recall_std"), digits=3))
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
            fmt_mean_std(r["top1"]), DASH, DASH, fmt_mean_std(delta, signed=True), fmt_mean_std(r["base_top1"]),
            DASH, DASH,
            fmt_mean_std(r["macs_reduction"], digits=1, scale=100.0),
            fmt_mean_std(r["params_reduction"], digits=1, scale=100.0), DASH,
            f"{r['source']}{ref}",
        ]
        if planted:
            cells.insert(-1, DASH)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if ours.empty and pub.empty:
        lines.append("| " + " | ".join([DASH] * len(header)) + " |")
    lines.append("")
    if planted:
        lines += ["Useful recall: the fraction of the planted useful channels the plan kept (the others are "
                  "large-norm decoys that never reach the output; 1 = all kept; — for unstructured plans). "
                  "Where a budget is above the reduction of the useful-only plan (ground_truth.json), no plan "
                  "can reach 1.", ""]
    if searched:
        lines += ["N = candidate plans a search method scored on the search split before returning its best (RL "
                  "episodes; random-search evaluations); a search method should beat random-search at the same N.",
                  ""]
    if opening:
        lines += ["‡ the search returned its opening plan (the plan of the method named by its `opening_bar`, "
                  "scored before the first episode) in the seeds stated: there it returned another method's plan, so "
                  "its difference to that method is fine-tuning noise, not a win (never shown in bold).", ""]
    if searched:
        lines += search_cost_table(ours)
    if unstructured:
        lines += ["† unstructured run (`structured = false` in its metrics.json): weights are masked rather "
                  "than channels removed, so its reductions do not mean a smaller dense model; do not compare "
                  "them directly with the structured rows.", ""]
    if notes:
        lines += ["Notes on the reported rows:", ""]
        lines += [f"{i}. {_cell(n)}" for i, n in enumerate(notes, 1)]
        lines.append("")
    return "\n".join(lines)
