"""Structured pruning: dependency groups, an analytic cost model, the plan (plan.json), surgery, budget check.

Typical use::

    groups = find_groups(model, x)                 # Torch-Pruning dependency groups, model order
    cost = CostModel(model, x, groups)             # analytic MACs/params for any keep counts
    keep = {...}                                   # a method's choice: kept root channels per group id
    apply_plan(model, keep, x)                     # physical removal, in place
    check_budget(cost.base, complexity(model, shape), budget)
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> submodule; imported on first use (PEP 562), so a stage that only reads plans and budgets
#: does not pay for Torch-Pruning, timm and torchvision (about 2-3 s of every job's start-up, issue 13)
_EXPORTS = {
    **dict.fromkeys(("Budget", "BudgetReport", "budget_report", "check_budget", "check_reachable",
                     "max_reachable_reduction", "min_keep"), "budget"),
    "CostModel": "cost",
    "Group": "group",
    **dict.fromkeys(("build_graph", "channel_l1", "consumer_l1", "default_classifier", "find_groups", "tp_group"),
                    "groups"),
    **dict.fromkeys(("PruningPlan", "validate_keep"), "plan"),
    **dict.fromkeys(("apply_plan", "load_pruned", "save_pruned", "pruned_copy"), "surgery"),
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"harness.prune.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness.prune' has no attribute {name!r}")


__all__ = [
    "Budget", "BudgetReport", "CostModel", "Group", "PruningPlan", "apply_plan", "budget_report", "build_graph",
    "channel_l1", "consumer_l1", "check_budget", "check_reachable", "default_classifier", "find_groups", "load_pruned",
    "max_reachable_reduction", "min_keep", "pruned_copy", "save_pruned", "tp_group", "validate_keep",
]
