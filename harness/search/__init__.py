"""Pieces shared by the RL pruners (graph-RL, AMC): masked candidate scoring and the budget wall/projection."""
from __future__ import annotations

from harness.search.evaluator import SearchEvaluator
from harness.search.wall import max_keep_allowed, project

__all__ = ["SearchEvaluator", "max_keep_allowed", "project"]
