"""Wall time and peak memory of a finished DAG, from the benchmark: files Snakemake writes for every job.

    python benchmarks/job_stats.py results/benchmarks

Prints per rule: job count, total and max wall seconds, max peak RSS (MiB); and the overall peak RSS.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def job_stats(folder: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted(folder.rglob("*.tsv")):
        frame = pd.read_csv(tsv, sep="\t")
        rule = tsv.relative_to(folder).parts[0]
        rows.append({"rule": rule, "seconds": float(frame["s"].iloc[-1]),
                     "max_rss_mib": float(pd.to_numeric(frame["max_rss"], errors="coerce").iloc[-1])})
    jobs = pd.DataFrame(rows)
    return jobs.groupby("rule").agg(jobs=("seconds", "size"), total_s=("seconds", "sum"), max_s=("seconds", "max"),
                                    max_rss_mib=("max_rss_mib", "max"))


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "results/benchmarks")
    stats = job_stats(folder)
    print(stats.round(1).to_string())
    print(f"sum of job wall times: {stats['total_s'].sum():.0f} s; peak RSS of any job: {stats['max_rss_mib'].max():.0f} MiB")
