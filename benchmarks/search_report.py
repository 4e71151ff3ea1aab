"""Issue 12's figures from a finished run's tables: does each search beat its random-search control?

Reads ``runs.csv`` and ``search_logs.csv`` of a results folder (after ``snakemake --configfile
config/<preset>.yaml``) and prints, per budget:

* every search method against its control at the same number of candidate evaluations, seed by seed, on the
  held-out images (``heldout_top1``: a part of the search split no method selected on): graph-rl and
  crl-neuron against ``random-search``, amc against ``l1-random-search``; with the planted ground truth also
  the useful recall of each plan;
* graph-rl's learning signal: the share of episodes after the first PPO update whose reward is saturated
  (|r| >= 0.99), the share of episodes that land within one point of the target reduction, and the mean
  search accuracy of the first and last quarter of its episodes.

    python benchmarks/search_report.py results/planted/tables
    python benchmarks/search_report.py results/tables --first-update 8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CONTROLS = {"graph-rl": "random-search", "crl-neuron": "random-search", "amc": "l1-random-search"}
#: Student t quantiles t(0.975, df) for the 95 % interval of a mean over df + 1 seeds (no scipy in the venv)
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def interval(diff: np.ndarray) -> str:
    """Mean and 95 % Student-t interval of paired differences (n >= 2)."""
    n = len(diff)
    if n < 2:
        return f"{diff.mean():+.2f} (one seed: no interval)"
    half = T975.get(n - 1, 1.96) * diff.std(ddof=1) / np.sqrt(n)
    return f"{diff.mean():+.2f} [{diff.mean() - half:+.2f}, {diff.mean() + half:+.2f}]"


def _achieved(row: pd.Series) -> float:
    return float(row["macs_reduction"] if row["budget_metric"] == "macs" else row["params_reduction"])


def compare(runs: pd.DataFrame) -> list[str]:
    """Seed-by-seed held-out top-1 (and recall) of each search method and its control."""
    lines = []
    have_recall = "useful_recall" in runs and runs["useful_recall"].notna().any()
    for (dataset, arch, metric, target), df in runs.groupby(["dataset", "arch", "budget_metric", "budget_target"]):
        lines.append(f"## {dataset} {arch} {metric} -{100 * float(target):g} %")
        by = {m: d.set_index("seed") for m, d in df.groupby("method")}
        for method, control in CONTROLS.items():
            if method not in by or control not in by:
                continue
            a, b = by[method], by[control]
            seeds = sorted(set(a.index) & set(b.index))
            if not seeds:
                continue
            wins = sum(float(a.loc[s, "heldout_top1"]) > float(b.loc[s, "heldout_top1"]) for s in seeds)
            diff = np.array([float(a.loc[s, "heldout_top1"]) - float(b.loc[s, "heldout_top1"]) for s in seeds])
            n_a = "/".join(str(int(v)) for v in sorted(a["search_evaluations"].dropna().unique())) or "?"
            n_b = "/".join(str(int(v)) for v in sorted(b["search_evaluations"].dropna().unique())) or "?"
            lines.append(f"{method} (N={n_a}) vs {control} (N={n_b}): held-out top-1 wins {wins}/{len(seeds)}, "
                         f"mean paired difference {interval(diff)} points (95 % t interval)")
            for s in seeds:
                rec = (f", recall {float(a.loc[s, 'useful_recall']):.3f} vs {float(b.loc[s, 'useful_recall']):.3f}"
                       if have_recall else "")
                lines.append(f"  seed {s}: {float(a.loc[s, 'heldout_top1']):.2f} vs "
                             f"{float(b.loc[s, 'heldout_top1']):.2f}{rec}")
        if have_recall:
            rec = df.groupby("method")["useful_recall"].agg(["mean", "min", "max"]).round(3)
            lines.append("useful recall by method (mean, min, max over seeds):")
            lines += ["  " + line for line in rec.to_string().splitlines()]
    return lines


def learning_signal(logs: pd.DataFrame, first_update: int) -> list[str]:
    """graph-rl's saturated-reward share, budget precision and first/last-quarter accuracy per run."""
    lines = []
    g = logs[logs["method"] == "graph-rl"]
    if g.empty:
        return ["no graph-rl search logs"]
    rows = []
    for (metric, target, seed), df in g.groupby(["budget_metric", "budget_target", "seed"]):
        df = df.sort_values("episode")
        after = df[df["episode"] >= first_update]
        achieved = df["macs_reduction"] if metric == "macs" else df["params_reduction"]
        q = max(1, len(df) // 4)
        rows.append({"budget": f"{metric}-{target:g}", "seed": seed, "episodes": len(df),
                     "saturated_after_first_update": float((after["reward"].abs() >= 0.99).mean()),
                     "within_1_point": float(((achieved - float(target)).abs() <= 0.01).mean()),
                     "first_quarter_acc": float(df["accuracy"].iloc[:q].mean()),
                     "last_quarter_acc": float(df["accuracy"].iloc[-q:].mean())})
    table = pd.DataFrame(rows)
    lines.append(table.round(3).to_string(index=False))
    lines.append(f"all runs: saturated share {table['saturated_after_first_update'].mean():.3f}, "
                 f"within one point {np.average(table['within_1_point'], weights=table['episodes']):.3f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("tables", type=Path, help="a results tables folder (runs.csv, search_logs.csv)")
    p.add_argument("--first-update", type=int, default=8, help="episodes before graph-rl's first PPO update")
    args = p.parse_args(argv)
    runs = pd.read_csv(args.tables / "runs.csv")
    logs = pd.read_csv(args.tables / "search_logs.csv")
    print("\n".join(compare(runs)))
    print("\n## graph-rl learning signal (search logs)")
    print("\n".join(learning_signal(logs, args.first_update)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
