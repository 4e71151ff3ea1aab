"""The install lists agree: pyproject.toml (pip) and environment.yml (conda) name the same packages and ranges."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _normalise(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower().replace("_", "-"), spec.replace(" ", "")


def test_environment_yml_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_normalise(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_lists = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    conda_listed = {_normalise(d) for d in env["dependencies"] if isinstance(d, str)}
    listed = {_normalise(r) for r in pip_lists[0]} | {p for p in conda_listed if p[0] not in ("python", "pip")}
    assert listed == wanted, f"only in environment.yml: {listed - wanted}; only in pyproject: {wanted - listed}"


def test_required_libraries_are_pinned_to_ranges() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = dict(_normalise(r) for r in project["dependencies"])
    for name in ("snakemake", "torch-pruning", "torch-geometric", "timm", "pandas", "matplotlib", "tqdm"):
        assert specs.get(name), f"{name} must have a version range"
    assert specs["snakemake"].startswith(">=9")


def test_packages_importable_from_repo_root() -> None:
    import baselines  # noqa: F401
    import harness  # noqa: F401
    import method  # noqa: F401
