"""A latency budget (issue 14): the per-(arch, device) latency table, its cache, methods meeting a latency
target through it, and the measured check of the final plan, on a small CNN on the CPU.

Timing-based: the tolerances are the suite's (``prune.latency_check_tolerance``, 0.05 of the base latency)
and the model is sized so that convolutions, not Python overhead, dominate its batch-1 latency.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from harness import registry
from harness.cli.prune import _check_measured_latency
from harness.errors import BudgetNotMet, UserError
from harness.prune import Budget, CostModel, apply_plan, find_groups
from harness.prune.latency_table import TableSettings, cached_table, measured_reduction

registry.load_plugins()
SETTINGS = TableSettings()  # the prune stage's own
CHECK_TOLERANCE = 0.05


class ConvNet(nn.Module):
    """Four 3x3 convs of 64-96 channels on 32x32: a few milliseconds per image, most of it convolution."""

    def __init__(self) -> None:
        super().__init__()
        widths = (3, 64, 96, 96, 64)
        layers: list[nn.Module] = []
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = ConvNet().eval()
    x = torch.randn(1, 3, 32, 32)
    groups = find_groups(model, x)
    cost = CostModel(model, x, groups)
    cache = tmp_path_factory.mktemp("tables")
    table, path, made = cached_table(cache, "convnet", model, x, cost, "cpu", SETTINGS)
    cost.attach_latency(table)
    return model, x, groups, cost, cache, path, made


def ctx_for(setup, method: str, target: float, **options) -> registry.PruneContext:
    model, x, groups, cost, *_ = setup
    return registry.PruneContext(
        model=model, example_input=x, groups=groups, cost=cost, budget=Budget("latency", target),
        min_keep_fraction=0.1, splits=None, device=torch.device("cpu"), seed=0,
        options=registry.options_from_dict(method, options), workdir=Path("/nonexistent"), arch="convnet")


def test_table_is_measured_once_and_cached(setup) -> None:
    model, x, groups, cost, cache, path, made = setup
    assert made and path.exists()
    again, path2, made2 = cached_table(cache, "convnet", model, x, CostModel(model, x, groups), "cpu", SETTINGS)
    assert path2 == path and not made2 and again.digest == cost.latency.digest
    # the calibration's own fit: whole models at five keep fractions within 15 % of the prediction
    assert cost.latency.max_relative_error < 0.15
    assert cost.base.latency_ms == pytest.approx(cost.latency.data["calibration"]["points"][0]["predicted_ms"])


def test_table_of_another_model_is_refused(setup) -> None:
    *_, cache, path, _ = setup
    other = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 10))
    x = torch.randn(1, 3, 32, 32)
    groups = find_groups(other, x)
    from harness.prune.latency_table import LatencyTable

    with pytest.raises(UserError, match="another model"):
        LatencyTable.load(path).attach(CostModel(other, x, groups))


@pytest.mark.parametrize("method", ["l1-uniform", "l1-global", "random"])
def test_latency_budget_met_and_measured(setup, method: str) -> None:
    """The method meets 30 % by the table; the plan, pruned physically and timed against the base, meets it
    within the check tolerance and delivers the prediction (else _check_measured_latency raises)."""
    model, x, groups, cost, *_ = setup
    ctx = ctx_for(setup, method, 0.3)
    keep = registry.get_method(method)(ctx)
    full = {g.id: list(keep.get(g.id, range(g.size))) for g in groups}
    predicted = cost.reduction({k: len(v) for k, v in full.items()}, "latency")
    assert predicted >= 0.3 - 0.01
    pruned = apply_plan(copy.deepcopy(model), full, x)
    report, facts = _check_measured_latency(model, pruned, (3, 32, 32), "cpu", cost, full, ctx.budget, CHECK_TOLERANCE)
    assert report.ok and facts["latency_measured_reduction"] >= predicted - CHECK_TOLERANCE
    assert facts["latency_measured_reduction"] >= 0.3 - CHECK_TOLERANCE


def test_a_plan_that_misses_the_measured_target_is_rejected(setup) -> None:
    """Switch the mechanism's input off: a plan that keeps everything, or a table that predicts 40 % too much
    reduction, is rejected by the measured check like an over-budget plan."""
    model, x, groups, cost, *_ = setup
    whole = {g.id: list(range(g.size)) for g in groups}
    with pytest.raises(BudgetNotMet, match="latency reduction"):
        _check_measured_latency(model, copy.deepcopy(model), (3, 32, 32), "cpu", cost, whole, Budget("latency", 0.3),
                                CHECK_TOLERANCE)
    half = {g.id: list(range(g.size // 2)) for g in groups}
    pruned = apply_plan(copy.deepcopy(model), half, x)
    wrong = copy.deepcopy(cost)
    # the table now claims a far larger reduction than the device delivers: the half plan's predicted
    # latency drops by 80 % of itself, the base's by the same milliseconds
    wrong.latency.b -= 0.8 * cost.cost({k: len(v) for k, v in half.items()}).latency_ms
    wrong.base = wrong.cost({})
    with pytest.raises(BudgetNotMet, match="falls short of the latency table's prediction"):
        _check_measured_latency(model, pruned, (3, 32, 32), "cpu", wrong, half, Budget("latency", 0.1),
                                CHECK_TOLERANCE)


def test_latency_measurement_reduction_is_real(setup) -> None:
    """Half the channels of every group take measurably less time than the base (a sanity floor)."""
    model, x, groups, *_ = setup
    pruned = apply_plan(copy.deepcopy(model), {g.id: list(range(g.size // 2)) for g in groups}, x)
    m = measured_reduction(model, pruned, (3, 32, 32), "cpu")
    assert m["reduction"] > 0.3 and m["pruned_ms"] < m["base_ms"]
