"""The search logs of every run as one tidy table (results/tables/search_logs.csv), for the search figures.

A method that logs its search (``search_log=True`` in the registry) writes ``search_log.csv`` beside its
``plan.json`` in the same job, so the plan's folder finds it. Each row gets the run's identity columns; the
log's own columns vary by method (episode-based for graph-RL and AMC, update-based for constrained RL) and
are kept as they are, missing ones left blank: the table has the union of the columns, so the constrained-RL
rows keep ``update, timesteps, mean_cost, budget, nu`` (figures/crl.py draws them) next to graph-RL's and
AMC's rows, which leave them blank.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable

import pandas as pd

ID_COLUMNS: tuple[str, ...] = ("dataset", "arch", "method", "budget_metric", "budget_target", "seed")
LOG_NAME = "search_log.csv"


def load_search_logs(plan_paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Every ``search_log.csv`` next to one of ``plan_paths``, with the plan's identity columns in front."""
    frames = []
    for path in plan_paths:
        log = Path(path).with_name(LOG_NAME)
        if not log.exists():
            continue
        plan = json.loads(Path(path).read_text())
        df = pd.read_csv(log)
        if df.empty:
            continue
        ident = {"dataset": plan["dataset"], "arch": plan["arch"], "method": plan["method"],
                 "budget_metric": plan["budget"]["metric"], "budget_target": float(plan["budget"]["target"]),
                 "seed": int(plan["seed"])}
        for i, (k, v) in enumerate(ident.items()):
            df.insert(i, k, v)
        frames.append(df)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in ID_COLUMNS})
    out = pd.concat(frames, ignore_index=True, sort=False)
    return out.sort_values(list(ID_COLUMNS), kind="stable").reset_index(drop=True)
