"""Measurements of a model: MACs/params (budget metrics), top-k accuracy, latency."""
from __future__ import annotations

from harness.metrics.accuracy import topk_accuracy
from harness.metrics.complexity import Complexity, complexity, count_params
from harness.metrics.latency import latency

__all__ = ["Complexity", "complexity", "count_params", "latency", "topk_accuracy"]
