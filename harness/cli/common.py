"""What every stage's command line shares: the JSON job spec, one-line errors, threads, device, provenance."""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from harness.errors import UserError

log = logging.getLogger("prunebench")
REPO_ROOT = Path(__file__).resolve().parents[2]


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--spec", required=True, help="job spec as JSON (written by the Snakefile; see harness.config.job_spec)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    return p


def run_main(main: Callable[[argparse.Namespace, dict[str, Any]], None], p: argparse.ArgumentParser) -> None:
    """Parse arguments, set up logging and threads, and turn a UserError into one line and exit code 2."""
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    torch.set_num_threads(max(1, args.threads))
    try:
        spec = json.loads(args.spec)
        main(args, spec)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def acquire_device() -> torch.device:
    """Lease a GPU for this job (or use the one a cluster assigned), else the CPU with a warning."""
    from harness.gpu import lease_device

    lease = lease_device()
    # The lease must live as long as the process: flock is released when the process exits.
    acquire_device._lease = lease  # type: ignore[attr-defined]
    return torch.device(lease.device)


def data_config(spec: dict[str, Any]) -> Any:
    from harness.data import DataConfig

    return DataConfig(**spec["dataset"])


def build_base_model(spec: dict[str, Any], info: Any, *, pretrained: bool = False) -> torch.nn.Module:
    from harness.models import build_model

    options = dict(spec.get("arch_options") or {})
    if pretrained:
        options["pretrained"] = True
    return build_model(spec["arch"], info, **options)


def save_base(model: torch.nn.Module, spec: dict[str, Any], path: str | os.PathLike) -> None:
    """Base weights with what is needed to rebuild the model (arch, options, dataset info)."""
    from harness.io import torch_save

    torch_save({"arch": spec["arch"], "arch_options": spec.get("arch_options") or {},
                "dataset": spec["dataset"], "state_dict": model.state_dict()}, path)


def load_base(spec: dict[str, Any], info: Any, path: str | os.PathLike) -> torch.nn.Module:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = build_base_model(spec, info)
    model.load_state_dict(payload["state_dict"])
    return model.eval()


def example_input(info: Any) -> torch.Tensor:
    return torch.zeros(1, info.in_channels, info.image_size, info.image_size)


def git_commit() -> str:
    """The commit the code ran from (``-dirty`` with uncommitted changes); from a source archive without
    ``.git``, the package version (``prunebench <version>``), so a run always says what made it."""
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return package_version()


def package_version() -> str:
    """``prunebench <version>`` from the installed package metadata, or from pyproject.toml beside the code."""
    from importlib import metadata

    try:
        return f"prunebench {metadata.version('prunebench')}"
    except metadata.PackageNotFoundError:
        pass
    try:
        import tomllib

        with open(REPO_ROOT / "pyproject.toml", "rb") as fh:
            return f"prunebench {tomllib.load(fh)['project']['version']}"
    except (OSError, KeyError, ValueError):
        return "unknown"


def versions() -> dict[str, str]:
    """Library versions from the installed package metadata (importing timm and torchvision costs seconds)."""
    from importlib import metadata

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "unknown"

    return {
        "python_version": platform.python_version(),
        "torch_version": torch.__version__,
        "torchvision_version": version("torchvision"),
        "torch_pruning_version": version("torch-pruning"),
        "timm_version": version("timm"),
    }
