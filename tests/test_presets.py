"""Every shipped preset loads, validates and runs every registered method (the issues ask for each method in
smoke, quick and paper). A YAML slip in a preset that no other test reads would otherwise only show when a
user types ``make quick``.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from harness import registry
from harness.config import load_config

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("smoke", "quick", "paper", "planted")
# Methods the issues require in every preset; quick and paper (the user's and the paper's runs) have them all.
EVERY_PRESET = {"l1-uniform", "graph-rl", "amc", "crl-neuron", "crl-layer"}


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_loads_and_runs_every_method(preset: str) -> None:
    raw = yaml.safe_load((ROOT / "config" / f"{preset}.yaml").read_text())
    assert raw.get("preset") == preset
    config = load_config(raw, check_data=False)
    registry.load_plugins(("baselines", "method"))
    ran = {method for _, method, _, _ in config.runs()}
    shipped = {m for m in registry.method_names()  # not the throw-away methods other tests register
               if registry.get_method(m).fn.__module__.split(".")[0] in ("baselines", "method")}
    wanted = EVERY_PRESET if preset == "smoke" else shipped
    assert wanted <= ran, f"{preset} misses {sorted(wanted - ran)}"


@pytest.mark.parametrize("preset", PRESETS)
def test_every_budget_metric_of_a_preset_is_run(preset: str) -> None:
    config = load_config(yaml.safe_load((ROOT / "config" / f"{preset}.yaml").read_text()), check_data=False)
    run_budgets = {(b.metric, b.target) for _, _, b, _ in config.runs()}
    assert run_budgets == {(b.metric, b.target) for b in config.budgets}


# The controls every search must beat run with the RL searches' budget of candidates and their evaluator settings
# (the tables say N): random-search against graph-rl's episodes, l1-random-search against amc's.
CONTROLS = {"random-search": ("graph-rl", "episodes"), "l1-random-search": ("amc", "episodes")}
SAME_AS_GRAPH_RL = ("search_images", "bn_batches", "eval_batch_size")


@pytest.mark.parametrize("preset", sorted(p.stem for p in (ROOT / "config").glob("*.yaml") if p.stem != "schema"))
def test_random_search_controls_match_the_rl_searches(preset: str) -> None:
    raw = yaml.safe_load((ROOT / "config" / f"{preset}.yaml").read_text())
    registry.load_plugins(("baselines", "method"))
    methods = raw.get("methods") or {}
    resolved = {m: registry.options_from_dict(m, methods[m] or {}) for m in methods if m in registry.method_names()}
    checked = 0
    for control, (rl, episodes) in CONTROLS.items():
        if control not in resolved:
            continue
        assert rl in resolved, f"{preset}: {control} runs without {rl}, the search it controls for"
        assert resolved[control].evaluations == getattr(resolved[rl], episodes), (preset, control)
        for option in SAME_AS_GRAPH_RL:
            assert getattr(resolved[control], option) == getattr(resolved["graph-rl"], option), (preset, control, option)
        checked += 1
    if preset in PRESETS:
        assert checked == len(CONTROLS), f"{preset} must run both random-search controls"
