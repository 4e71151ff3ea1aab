"""Structured pruning: dependency groups, an analytic cost model, the plan (plan.json), surgery, budget check.

Typical use::

    groups = find_groups(model, x)                 # Torch-Pruning dependency groups, model order
    cost = CostModel(model, x, groups)             # analytic MACs/params for any keep counts
    keep = {...}                                   # a method's choice: kept root channels per group id
    apply_plan(model, keep, x)                     # physical removal, in place
    check_budget(cost.base, complexity(model, shape), budget)
"""
from __future__ import annotations

from harness.prune.budget import (Budget, BudgetReport, budget_report, check_budget, check_reachable,
                                  max_reachable_reduction, min_keep)
from harness.prune.cost import CostModel
from harness.prune.groups import (Group, build_graph, channel_l1, consumer_l1, default_classifier, find_groups,
                                  tp_group)
from harness.prune.plan import PruningPlan, validate_keep
from harness.prune.surgery import apply_plan, load_pruned, save_pruned

__all__ = [
    "Budget", "BudgetReport", "CostModel", "Group", "PruningPlan", "apply_plan", "budget_report", "build_graph",
    "channel_l1", "consumer_l1", "check_budget", "check_reachable", "default_classifier", "find_groups", "load_pruned",
    "max_reachable_reduction", "min_keep", "save_pruned", "tp_group", "validate_keep",
]
