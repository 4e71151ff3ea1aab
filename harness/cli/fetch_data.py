"""Put a dataset under the data root before a run (the only stage that may touch the network).

    python -m harness.cli.fetch_data --dataset cifar10 --root data
"""
from __future__ import annotations

import argparse
import sys

from harness.data import DATASETS, DataConfig, fetch
from harness.data.paths import data_dir
from harness.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.cli.fetch_data", description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help=f"one of: {', '.join(DATASETS)}")
    parser.add_argument("--root", default="data", help="data root (default: data)")
    args = parser.parse_args(argv)
    cfg = DataConfig(name=args.dataset, root=args.root)
    try:
        fetch(cfg)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{cfg.name} ready at {data_dir(cfg)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
