"""Start-up of the evaluate and finetune stages (issue 13 target: under 3 s each on the 2-core machine).

A stage's start-up is the wall time of a fresh interpreter that imports what the stage imports before it
does any work: its module, and every ``import`` statement of its ``main`` (read from the source with ``ast``,
so the benchmark follows the code), then sets one torch thread. Median of ``--repeats`` runs, one at a time.

    python benchmarks/cli_startup.py
    python benchmarks/cli_startup.py --stages evaluate finetune prune train_base --repeats 7
"""
from __future__ import annotations

import argparse
import ast
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: imports a stage always makes during its work (the lazy ones), counted as start-up too
DEFERRED = {"finetune": ["import harness.prune.groups  # Torch-Pruning, on apply_plan's first call"],
            "prune": ["import harness.prune.groups"]}


def stage_imports(stage: str) -> str:
    """The module import plus every import statement inside ``main`` of ``harness/cli/<stage>.py``."""
    tree = ast.parse((ROOT / "harness" / "cli" / f"{stage}.py").read_text())
    main = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main")
    lines = [ast.unparse(n) for n in ast.walk(main) if isinstance(n, (ast.Import, ast.ImportFrom))]
    return "\n".join([f"import harness.cli.{stage}", *lines, *DEFERRED.get(stage, []), "import torch",
                      "torch.set_num_threads(1)"])


def time_once(code: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", nargs="+", default=["evaluate", "finetune"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    time_once("import torch")  # warm the file cache once
    print("| stage | start-up, median of %d (s) | min | max | heavy packages loaded |" % args.repeats)
    print("|---|---|---|---|---|")
    for stage in args.stages:
        code = stage_imports(stage)
        times = [time_once(code) for _ in range(args.repeats)]
        probe = code + "\nimport sys\nprint(' '.join(m for m in ('torch_pruning', 'timm', 'torchvision', " \
                       "'torch_geometric', 'pandas', 'matplotlib') if m in sys.modules) or '-')"
        loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip().splitlines()[-1]
        print(f"| {stage} | {statistics.median(times):.2f} | {min(times):.2f} | {max(times):.2f} | {loaded} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
