"""Job count of a grid (default: the paper grid, config/paper.yaml) and its GPU-hours from measured speeds.

    python benchmarks/estimate_grid.py --measured .benchmarks/fast_jobs-cuda.json [--dry-run]
    python benchmarks/estimate_grid.py --images-per-s resnet56=12500 --images-per-s torchvision.resnet50=2600 \\
        --episode-s resnet56=0.2 --eval-images-per-s resnet56=60000

Jobs come from the config loader (the same ``harness.config.load_config`` the Snakefile runs); ``--dry-run``
also runs ``snakemake -n`` in an empty folder and checks that its job stats agree. GPU time per job:

* ``train_base``: epochs x train images / train images/s (``pretrained``: the evaluation below only);
* ``prune_<method>``: methods with an ``episodes`` option: episodes x episode time, where the episode time
  is rescaled to the config's search split: overhead + evaluation per image x (search images + BN images),
  plus the PPO update per episode when measured (a PPO update not timed counts 0: say so when quoting); other methods: ``--other-prune-s`` (default 0: seconds);
* ``finetune``: epochs x train images / train images/s, at dense speed (an upper bound) and scaled by the
  MACs left (``1 - target`` for MAC budgets);
* ``evaluate``: test images / evaluation images/s; ``--job-overhead-s`` is added to every GPU job
  (interpreter start, data and model loading).

Speeds come from the benchmark file (benchmarks/test_fast_jobs.py writes it) and/or the command line
(which wins). An architecture without a measurement is scaled from a measured one with the same input
size by MACs per image (episodes: the evaluation part; the policy/PPO overhead is copied), and each such
assumption is printed; with no measured architecture of that size, the script says what is missing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
TRAIN_IMAGES = {"cifar10": 50_000, "cifar100": 50_000, "fashionmnist": 60_000, "imagenet": 1_281_167}
# RL searches whose cost is neither negligible nor graph-RL's episode model (their own benchmarks:
# benchmarks/bench_amc.py, benchmarks/bench_crl.py): estimated only from --prune-s
SEARCH_METHODS = ("amc", "crl-neuron", "crl-layer")
TEST_IMAGES = {"cifar10": 10_000, "cifar100": 10_000, "fashionmnist": 10_000, "imagenet": 50_000}


# ------------------------------------------------------------------------------------------------ jobs
def grid_jobs(config_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """(workflow config, one dict per job of the DAG: rule, dataset, arch, method, budget, seed)."""
    from harness.config import load_config

    with open(config_path, encoding="utf-8") as fh:
        wf = load_config(yaml.safe_load(fh), check_data=False)
    jobs: list[dict[str, Any]] = [{"rule": "fetch_data", "dataset": d} for d in sorted({e.dataset for e in wf.experiments})]
    for exp in wf.experiments:
        for seed in wf.seeds:
            jobs.append({"rule": "train_base", "dataset": exp.dataset, "arch": exp.arch, "seed": seed, "exp": exp})
    for exp, method, budget, seed in wf.runs():
        common = {"dataset": exp.dataset, "arch": exp.arch, "method": method, "budget": budget, "seed": seed, "exp": exp}
        jobs.append({"rule": "prune_" + method.replace("-", "_"), **common})
        jobs.append({"rule": "finetune", **common})
        jobs.append({"rule": "evaluate", **common})
    jobs += [{"rule": "collect"}, {"rule": "figures"}, {"rule": "all"}]
    return wf, jobs


def count_rules(jobs: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for j in jobs:
        out[j["rule"]] = out.get(j["rule"], 0) + 1
    return out


def snakemake_counts(config_path: Path) -> dict[str, int]:
    """Job stats of ``snakemake -n`` run in an empty folder (so every job of the grid is pending)."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--configfile",
               str(Path(config_path).resolve()), "-n", "-d", tmp, "--quiet", "rules"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    table = out.split("Job stats:", 1)[1]
    counts = {}
    for line in table.splitlines():
        m = re.match(r"^(\S+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
        if counts and line.strip().startswith("total"):
            break
    return counts


# ---------------------------------------------------------------------------------------------- speeds
@dataclasses.dataclass
class Speeds:
    """Measured speeds per architecture (keys as in the config: resnet56, torchvision.resnet50, ...)."""

    train_ips: dict[str, dict[str, float]]  # data path ("device", "loader") -> arch -> images/s
    eval_ips: dict[str, float]
    episode: dict[str, dict[str, float]]  # overhead_s, evaluate_s_per_image, ppo_s
    device: str = "given on the command line"

    @classmethod
    def from_file(cls, path: Path | None, policy_on_device: bool = False) -> "Speeds":
        s = cls({"device": {}, "loader": {}}, {}, {})
        if path is None:
            return s
        data = json.loads(Path(path).read_text())
        s.device = data.get("device", str(path))
        for key, row in (data.get("train") or {}).items():
            arch, data_path = key.rsplit("/", 1)
            s.train_ips.setdefault(data_path, {})[arch] = float(row["images_per_s"])
        for key, row in (data.get("evaluate") or {}).items():
            arch = key.split("/", 1)[0]
            s.eval_ips[arch] = max(s.eval_ips.get(arch, 0.0), (row["search_images"] + row["bn_images"]) / row["evaluate_s"])
        suffix = "/policy-on-device"
        for key, row in (data.get("episode") or {}).items():
            if key.endswith(suffix) != policy_on_device:
                continue
            arch = key.removesuffix(suffix)
            images = row["search_images"] + row["bn_images"]
            s.episode[arch] = {"overhead_s": float(row["overhead_s"]), "evaluate_s_per_image": row["evaluate_s"] / images,
                               "ppo_s": float(row.get("ppo_update_per_episode_s") or 0.0)}
            s.eval_ips.setdefault(arch, images / row["evaluate_s"])
        return s


def _pairs(items: list[str], what: str) -> dict[str, float]:
    out = {}
    for item in items or []:
        arch, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: {what} takes ARCH=NUMBER, got {item!r}")
        out[arch] = float(value)
    return out


class Scaler:
    """Speeds of an architecture, measured or scaled by MACs from one with the same input size."""

    def __init__(self, wf: Any) -> None:
        self.wf = wf
        self._macs: dict[tuple[str, str], tuple[int, int]] = {}
        self.notes: list[str] = []

    def macs(self, dataset: str, arch: str) -> tuple[int, int]:
        """(MACs per image, image size) of ``arch`` on ``dataset``."""
        key = (dataset, arch)
        if key not in self._macs:
            from harness.config import data_config
            from harness.data import info_for
            from harness.metrics import complexity
            from harness.models import build_model

            info = info_for(data_config(self.wf, dataset))
            exp = self.wf.experiment(dataset, arch)
            model = build_model(arch, info, **dict(exp.arch_options))
            self._macs[key] = (complexity(model, (info.in_channels, info.image_size, info.image_size)).macs,
                               info.image_size)
        return self._macs[key]

    def rate(self, table: dict[str, float], dataset: str, arch: str, what: str) -> float:
        """Images/s of ``arch`` from ``table``; scaled by MACs from a measured arch of the same image size."""
        if arch in table:
            return table[arch]
        macs, size = self.macs(dataset, arch)
        for exp in self.wf.experiments:
            if exp.arch in table and self.macs(exp.dataset, exp.arch)[1] == size:
                ref_macs = self.macs(exp.dataset, exp.arch)[0]
                note = f"{what} of {arch}: scaled from {exp.arch} by MACs ({ref_macs / 1e6:.0f}M -> {macs / 1e6:.0f}M)"
                if note not in self.notes:
                    self.notes.append(note)
                return table[exp.arch] * ref_macs / macs
        raise SystemExit(f"error: no {what} for {arch} ({size}x{size}) and none measured at that size; "
                         f"pass e.g. --{'images-per-s' if what == 'train images/s' else 'eval-images-per-s'} {arch}=N")


    def episode(self, table: dict[str, dict[str, float]], dataset: str, arch: str) -> dict[str, float]:
        """Episode costs of ``arch``; unmeasured: evaluation per image scaled by MACs, policy/PPO overhead
        copied from a measured arch of the same image size (the policy's cost grows with the channel graph,
        so this is a rough number; the note says so)."""
        if arch in table:
            return table[arch]
        macs, size = self.macs(dataset, arch)
        for exp in self.wf.experiments:
            if exp.arch in table and self.macs(exp.dataset, exp.arch)[1] == size:
                ref = table[exp.arch]
                ref_macs = self.macs(exp.dataset, exp.arch)[0]
                note = (f"episode of {arch}: evaluation scaled from {exp.arch} by MACs, policy/PPO overhead "
                        f"copied from {exp.arch} (its graph differs: rough)")
                if note not in self.notes:
                    self.notes.append(note)
                return {**ref, "evaluate_s_per_image": ref["evaluate_s_per_image"] * macs / ref_macs}
        raise SystemExit(f"error: no episode time for {arch}; pass --episode-s {arch}=SECONDS")


# -------------------------------------------------------------------------------------------- estimate
def estimate(wf: Any, jobs: list[dict[str, Any]], speeds: Speeds, *, data_path: str, other_prune_s: float,
             job_overhead_s: float, prune_s: dict[str, float]) -> tuple[list[dict[str, Any]], list[str]]:
    """Per job: GPU seconds at dense fine-tune speed (``gpu_s``) and with the fine-tune scaled by MACs left;
    and notes (speeds scaled rather than measured, search methods left out). ImageNet always trains from a
    DataLoader. ``prune_s``: seconds per prune job of a method, given on the command line."""
    unestimated: list[str] = []
    from harness import registry
    from harness.config import data_config
    from harness.train import Recipe

    scaler = Scaler(wf)
    recipes = wf.raw["recipes"]
    out = []
    for job in jobs:
        rule = job["rule"]
        if rule in ("fetch_data", "collect", "figures", "all"):
            continue  # CPU jobs
        dataset, arch, exp = job["dataset"], job["arch"], job["exp"]
        dcfg = data_config(wf, dataset)
        path = "loader" if dataset == "imagenet" else data_path
        train_ips = {**speeds.train_ips.get("device" if path == "loader" else "loader", {}),
                     **speeds.train_ips.get(path, {})}  # the other path's number only where this one is missing
        n_train = (dcfg.train_subset or TRAIN_IMAGES[dataset] - dcfg.search_size)
        eval_ips = scaler.rate(speeds.eval_ips, dataset, arch, "evaluation images/s")
        evaluate_s = TEST_IMAGES[dataset] / eval_ips
        seconds = scaled = job_overhead_s
        if rule == "train_base":
            if exp.train == "pretrained":
                part = (TEST_IMAGES[dataset] + dcfg.search_size) / eval_ips
            else:
                recipe = Recipe.from_dict(recipes[exp.train])
                part = recipe.epochs * n_train / scaler.rate(train_ips, dataset, arch, "train images/s")
            seconds, scaled = seconds + part, scaled + part
        elif rule == "finetune":
            recipe = Recipe.from_dict(recipes[exp.finetune])
            steps = n_train // recipe.batch_size
            if recipe.max_batches_per_epoch:
                steps = min(steps, recipe.max_batches_per_epoch)
            part = recipe.epochs * steps * recipe.batch_size / scaler.rate(train_ips, dataset, arch, "train images/s")
            left = 1.0 - job["budget"].target if job["budget"].metric == "macs" else 1.0
            seconds, scaled = seconds + part, scaled + part * left
        elif rule == "evaluate":
            seconds, scaled = seconds + evaluate_s, scaled + evaluate_s
        else:  # prune_<method>
            method = job["method"]
            if method in prune_s:
                part = prune_s[method]
            elif method == "graph-rl":
                opts = registry.options_from_dict(method, wf.raw["methods"].get(method) or {})
                ep = scaler.episode(speeds.episode, dataset, arch)
                search = min(opts.search_images or dcfg.search_size, dcfg.search_size)
                per_episode = (ep["overhead_s"] + ep["ppo_s"]
                               + ep["evaluate_s_per_image"] * (search + opts.bn_batches * opts.eval_batch_size))
                part = opts.episodes * per_episode
            elif method in SEARCH_METHODS:
                if method not in unestimated:
                    unestimated.append(method)
                continue
            else:
                part = other_prune_s
            seconds, scaled = seconds + part, scaled + part
        out.append({"rule": rule, "dataset": dataset, "arch": arch, "gpu_s": seconds, "gpu_s_macs_scaled": scaled})
    notes = scaler.notes + [f"prune_{m.replace('-', '_')} jobs are NOT in the totals: its search cost is not "
                            f"graph-RL's episode; pass --prune-s {m}=SECONDS (per job)" for m in unestimated]
    return out, notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, default=REPO / "config" / "paper.yaml")
    p.add_argument("--measured", type=Path, help="benchmark file (.benchmarks/fast_jobs-<device>.json)")
    p.add_argument("--data-path", choices=("device", "loader"), default="device",
                   help="which training data path's speed to use for tensor datasets (ImageNet always: loader)")
    p.add_argument("--images-per-s", action="append", default=[], metavar="ARCH=N", help="training images/s")
    p.add_argument("--eval-images-per-s", action="append", default=[], metavar="ARCH=N")
    p.add_argument("--episode-s", action="append", default=[], metavar="ARCH=S",
                   help="search episode seconds at the config's search split (overrides the file's)")
    p.add_argument("--policy-on-device", action="store_true",
                   help="use the episodes measured with the policy on the GPU (not what method/search.py does now)")
    p.add_argument("--prune-s", action="append", default=[], metavar="METHOD=S",
                   help="seconds per prune job of METHOD (e.g. amc, crl-neuron from their own benchmarks)")
    p.add_argument("--other-prune-s", type=float, default=0.0,
                   help="seconds of a prune job of a one-shot method (l1-uniform, l1-global, random)")
    p.add_argument("--job-overhead-s", type=float, default=0.0, help="seconds added to every GPU job")
    p.add_argument("--dry-run", action="store_true", help="also count jobs with snakemake -n and compare")
    p.add_argument("--json", type=Path, help="write the per-rule summary here")
    args = p.parse_args(argv)

    wf, jobs = grid_jobs(args.config)
    counts = count_rules(jobs)
    print(f"{args.config}: {sum(counts.values())} jobs")
    if args.dry_run:
        sm = snakemake_counts(args.config)
        agree = "agree" if sm == counts else f"DIFFER: snakemake says {sm}"
        print(f"snakemake -n: {sum(sm.values())} jobs; per-rule counts {agree}")
    speeds = Speeds.from_file(args.measured, args.policy_on_device)
    for table in speeds.train_ips.values():
        table.update(_pairs(args.images_per_s, "--images-per-s"))
    speeds.eval_ips.update(_pairs(args.eval_images_per_s, "--eval-images-per-s"))
    for arch, seconds in _pairs(args.episode_s, "--episode-s").items():
        speeds.episode[arch] = {"overhead_s": seconds, "evaluate_s_per_image": 0.0, "ppo_s": 0.0}
    if not (any(speeds.train_ips.values()) or speeds.eval_ips or speeds.episode):
        for rule, n in counts.items():
            print(f"  {rule:<20s} {n:6d}")
        print("no speeds given (--measured or --images-per-s ...): job count only")
        return 0
    rows, notes = estimate(wf, jobs, speeds, data_path=args.data_path, other_prune_s=args.other_prune_s,
                           job_overhead_s=args.job_overhead_s, prune_s=_pairs(args.prune_s, "--prune-s"))
    summary: dict[str, dict[str, float]] = {}
    for r in rows:
        s = summary.setdefault(r["rule"], {"jobs": 0, "gpu_h": 0.0, "gpu_h_macs_scaled": 0.0})
        s["jobs"] += 1
        s["gpu_h"] += r["gpu_s"] / 3600
        s["gpu_h_macs_scaled"] += r["gpu_s_macs_scaled"] / 3600
    print(f"speeds: {speeds.device} (training data path for tensor datasets: {args.data_path})")
    for note in notes:
        print(f"  note: {note}")
    print(f"  {'rule':<20s} {'jobs':>6s} {'GPU-h (dense FT)':>17s} {'GPU-h (FT x MACs left)':>23s}")
    for rule, s in summary.items():
        print(f"  {rule:<20s} {s['jobs']:6d} {s['gpu_h']:17.1f} {s['gpu_h_macs_scaled']:23.1f}")
    total = sum(s["gpu_h"] for s in summary.values())
    total_scaled = sum(s["gpu_h_macs_scaled"] for s in summary.values())
    print(f"  {'total GPU jobs':<20s} {sum(s['jobs'] for s in summary.values()):6d} {total:17.1f} {total_scaled:23.1f}")
    if args.json:
        args.json.write_text(json.dumps({"config": str(args.config), "jobs": counts, "gpu_hours": summary,
                                         "total_gpu_h": total, "total_gpu_h_macs_scaled": total_scaled,
                                         "speeds_from": speeds.device}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
