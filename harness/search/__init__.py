"""Pieces shared by the RL pruners and their random-search controls: candidate scoring (masked or pruned), the budget
wall, projection and fill."""
from __future__ import annotations

from harness.search.evaluator import CANDIDATE_MODES, SearchEvaluator
from harness.search.wall import complete, fair_ratio, fill, max_keep_allowed, project

__all__ = ["CANDIDATE_MODES", "SearchEvaluator", "complete", "fair_ratio", "fill", "max_keep_allowed", "project"]
