"""Fast jobs on GPUs: training throughput on both data paths, candidate evaluation, and a graph-RL search
episode split into evaluation and overhead, for CIFAR ResNet-56 (32x32) and torchvision ResNet-50 (224x224).

    python -m pytest benchmarks/test_fast_jobs.py --benchmark-enable -s     # (-k resnet56 for a part)

The device is CUDA when present, else the CPU (``PRUNEBENCH_BENCH_DEVICE`` overrides). Every number is
also expressed as a FLOP ratio (benchmarks/fast_jobs.py): measured time / time the FLOPs need at the
device's matmul rate measured in the same session (bf16 on CUDA, fp32 on the CPU). Sizes default to the
real jobs on CUDA (a 50,000-image CIFAR epoch, a 5,000-image search split, graph-RL's 10 BN batches of
256) and to small runs on the CPU, where the per-image cost is what carries over; environment variables
change them (see ``_size``). The results are merged into ``.benchmarks/fast_jobs-<cpu|cuda>.json``, the
input of benchmarks/estimate_grid.py. Data are synthetic (random uint8 images): speed does not depend on
the pixels. Models have random weights: neither does the cost of a forward pass.
"""
from __future__ import annotations

import csv
import os
import statistics
import time
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import Subset

from fast_jobs import TRAIN_PASSES, flop_ratio, macs_per_image, sync, timed
from harness.data import TensorImageDataset, TensorTransform
from harness.data.info import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD
from harness.models import build_model
from harness.train import Recipe, fit

CIFAR_EPOCH_IMAGES = 50_000  # the target is stated for a 50,000-image epoch
ARCHS = {  # arch -> (image size, classes, mean, std)
    "resnet56": (32, 10, CIFAR10_MEAN, CIFAR10_STD),
    "torchvision.resnet50": (224, 1000, IMAGENET_MEAN, IMAGENET_STD),
}


def _size(name: str, cuda: int, cpu: int, device: torch.device) -> int:
    """A benchmark size: ``PRUNEBENCH_BENCH_<NAME>`` if set, else the CUDA or the CPU default."""
    env = os.environ.get(f"PRUNEBENCH_BENCH_{name}")
    return int(env) if env else (cuda if device.type == "cuda" else cpu)


def _dataset(arch: str, n: int, *, augment: bool, seed: int = 0) -> TensorImageDataset:
    size, classes, mean, std = ARCHS[arch]
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, classes, (n,), generator=g)
    tf = TensorTransform(mean, std, pad=4, flip=True) if augment else TensorTransform(mean, std)
    return TensorImageDataset(images, labels, tf)


def _model(arch: str) -> torch.nn.Module:
    size, classes, _, _ = ARCHS[arch]
    torch.manual_seed(0)
    return build_model(arch, SimpleNamespace(name="bench", num_classes=classes, in_channels=3, image_size=size))


def _shape(arch: str) -> tuple[int, int, int]:
    size = ARCHS[arch][0]
    return (3, size, size)


# ------------------------------------------------------------------------------------------------ train
@pytest.mark.parametrize("data_path", ["loader", "device"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_train_images_per_second(benchmark, device, rate, measurements, tmp_path, arch, data_path):
    """Two epochs of ``harness.train.fit`` (the code every train/fine-tune job runs); the second, warm epoch
    is reported: images/s, the projected 50,000-image epoch (ResNet-56) and the FLOP ratio."""
    if arch == "resnet56":
        batch = _size("R56_BATCH", 128, 128, device)
        steps = _size("R56_STEPS", CIFAR_EPOCH_IMAGES // batch, 3, device)
    else:
        batch = _size("R50_BATCH", 64, 8, device)
        steps = _size("R50_STEPS", 50, 2, device)
    n = batch * steps + batch // 2  # a ragged tail, as drop_last sees it in real epochs
    train = Subset(_dataset(arch, n + 100, augment=True), list(range(100, 100 + n)))  # like splits.train
    workers = 4 if device.type == "cuda" and data_path == "loader" else 0  # the paper recipes' num_workers
    recipe = Recipe(epochs=2, batch_size=batch, lr=0.05, schedule="constant", data_path=data_path,
                    num_workers=workers, compile=os.environ.get("PRUNEBENCH_BENCH_COMPILE", "off"))
    model = _model(arch)
    macs = macs_per_image(model, _shape(arch))
    log = tmp_path / "log.csv"

    def run() -> None:
        fit(model, train, recipe, device=device, seed=0, checkpoint_dir=None, log_csv=log, desc=f"bench {arch}")

    benchmark.pedantic(run, rounds=1, iterations=1)
    with open(log, newline="") as fh:
        warm = list(csv.DictReader(fh))[-1]
    seconds, ips = float(warm["epoch_seconds"]), float(warm["images_per_second"])
    images = batch * steps
    ratio = flop_ratio(seconds, TRAIN_PASSES * 2 * macs * images, rate)
    result = {"batch": batch, "steps": steps, "images_per_s": ips, "epoch_s": seconds, "flop_ratio": ratio,
              "macs_per_image": macs, "threads": torch.get_num_threads(), "num_workers": workers,
              "compile": recipe.compile}
    if arch == "resnet56":
        result["cifar_epoch_s"] = CIFAR_EPOCH_IMAGES / ips
    measurements.put("train", f"{arch}/{data_path}", result)
    benchmark.extra_info.update(result)
    extra = f", 50k-image epoch {result['cifar_epoch_s']:.1f} s (target <= 4 s on one H100)" if arch == "resnet56" else ""
    print(f"\n{arch} train [{data_path}] batch {batch}: {ips:.1f} img/s{extra}; {ratio:.1f}x the FLOP time")


def _count_ops(fn) -> int:
    """Number of aten operators ``fn`` dispatches (forward, backward, optimizer): one kernel launch each on CUDA."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


@pytest.mark.parametrize("arch", list(ARCHS))
def test_train_step_host_overhead(benchmark, device, measurements, arch):
    """What a training step costs when the arithmetic is negligible (2 images of 16x16 on the CPU): the
    per-step host work (Python, dispatcher, optimizer loop) a GPU step cannot go below in eager mode."""
    model = _model(arch).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(2, 3, 16, 16), torch.randint(0, ARCHS[arch][1], (2,))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step()
        ops = _count_ops(step)
        times = [timed(step, torch.device("cpu")) for _ in range(7)]
        benchmark.pedantic(step, rounds=3, iterations=1)
    finally:
        torch.set_num_threads(before)
    seconds = statistics.median(times)
    result = {"ops_per_step": ops, "tiny_step_s": seconds, "s_per_op": seconds / ops}
    measurements.put("host_overhead", arch, result)
    benchmark.extra_info.update(result)
    print(f"\n{arch} tiny training step on 1 CPU thread: {seconds * 1e3:.1f} ms for {ops} aten ops "
          f"({seconds / ops * 1e6:.1f} us/op)")


# -------------------------------------------------------------------------------------------- search
def _search_setup(arch: str, device: torch.device, search: int, bn_batches: int, bn_batch: int):
    from harness.prune import CostModel, find_groups

    model = _model(arch).eval()
    n_plain = bn_batches * bn_batch
    full = _dataset(arch, search + n_plain, augment=False, seed=1)
    splits = SimpleNamespace(search=Subset(full, list(range(search))),
                             train_plain=Subset(full, list(range(search, search + n_plain))), test=None)
    example = torch.zeros(1, *_shape(arch))
    groups = find_groups(model, example)
    return model, splits, example, groups, CostModel(model, example, groups)


def _search_sizes(arch: str, device: torch.device) -> tuple[int, int, int]:
    if arch == "resnet56":  # graph-rl's defaults on CUDA: 5,000 search images, 10 BN batches of 256
        return (_size("SEARCH_SIZE", 5000, 500, device), _size("BN_BATCHES", 10, 2, device),
                _size("BN_BATCH", 256, 256, device))
    return (_size("R50_SEARCH_SIZE", 10000, 32, device), _size("R50_BN_BATCHES", 10, 1, device),
            _size("R50_BN_BATCH", 256, 16, device))


@pytest.mark.parametrize("chunk", ["bn-batch", "whole-split"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_evaluate_candidate(benchmark, device, rate, measurements, arch, chunk):
    """One SearchEvaluator.evaluate: BN recalibration + the search split, with the search split scored in
    BN-sized batches (graph-rl's current setting) or in one chunk (``eval_batch_size``)."""
    from harness.search import SearchEvaluator

    search, bn_batches, bn_batch = _search_sizes(arch, device)
    model, splits, example, groups, _ = _search_setup(arch, device, search, bn_batches, bn_batch)
    # ResNet-50 on a GPU: chunks of 1,024 (all 10,000 images at once would need tens of GB of activations)
    whole = search if device.type == "cpu" or arch == "resnet56" else 1024
    ev = SearchEvaluator(model, splits, device, bn_batches=bn_batches, batch_size=bn_batch, example_input=example,
                         groups=groups, eval_batch_size=whole if chunk == "whole-split" else None)
    keep = {g.id: list(range(0, g.size, 2)) for g in groups}  # half of every group
    ev.evaluate(keep)  # warm-up: lazy initialisation, cuDNN plans
    rounds = _size("EVAL_ROUNDS", 10, 2 if arch == "resnet56" else 1, device)
    times = [timed(lambda: ev.evaluate(keep), device) for _ in range(rounds)]
    benchmark.pedantic(ev.evaluate, args=(keep,), rounds=1, iterations=1)
    seconds = statistics.median(times)
    macs = macs_per_image(model, _shape(arch))
    images = search + bn_batches * bn_batch
    result = {"search_images": search, "bn_images": bn_batches * bn_batch, "eval_batch_size": ev.eval_batch_size,
              "evaluate_s": seconds, "flop_ratio": flop_ratio(seconds, 2 * macs * images, rate), "amp": ev.amp}
    measurements.put("evaluate", f"{arch}/{chunk}", result)
    benchmark.extra_info.update(result)
    print(f"\n{arch} evaluate [{chunk}] {search} search + {bn_batches}x{bn_batch} BN images: {seconds:.3f} s; "
          f"{result['flop_ratio']:.1f}x the FLOP time")


class _TimedEvaluator:
    """The evaluator seen by the environment, with the wall time of its calls added up."""

    def __init__(self, ev, device):
        self.ev, self.device, self.seconds, self.calls = ev, device, 0.0, 0

    def evaluate(self, keep):
        sync(self.device)
        t = time.perf_counter()
        acc = self.ev.evaluate(keep)  # ends with a host sync (the accuracy)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return acc


@pytest.mark.parametrize("policy_on", ["cpu", "device"])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_graph_rl_episode(benchmark, device, rate, measurements, arch, policy_on):
    """Graph-RL episodes as method/search.py plays them (one policy step per group, the final plan evaluated),
    then one PPO update over them; time split into evaluation, policy, environment and PPO.

    ``policy_on="cpu"`` is what method/search.py does today (the policy stays on the CPU);
    ``"device"`` puts the policy on the benchmark device (observations copied there every step, actions
    back), to show what moving it would buy. On a CPU-only machine the two are the same and ``device`` is
    skipped (``PRUNEBENCH_BENCH_ALL=1`` runs it anyway, to exercise its code path).
    """
    if policy_on == "device" and device.type == "cpu" and not os.environ.get("PRUNEBENCH_BENCH_ALL"):
        pytest.skip("the policy is on the CPU already")
    from harness.prune import Budget
    from harness.search import SearchEvaluator
    from harness.search.ppo import PPO, PPOConfig, RolloutBuffer
    from method.env import PruningEnv
    from method.graph import EDGE_FEATURES, NODE_FEATURES
    from method.policy import GraphPolicy, PolicyConfig
    from method.reward import SelfCompetition
    from method.search import GraphRLOptions

    opts = GraphRLOptions()
    r50 = arch != "resnet56"
    search, bn_batches, bn_batch = _search_sizes(arch, device)
    rounds = _size("R50_EPISODES" if r50 else "EPISODES", 10, 1 if r50 else 2, device)
    warmup = _size("WARMUP_EPISODES", 1, 0 if r50 else 1, device)
    # PPO epochs actually run (the cost is linear in them and is reported scaled to graph-rl's ppo_epochs);
    # 0 skips the update (ResNet-50 on the CPU: tens of minutes on a busy 2-core machine)
    ppo_epochs = _size("R50_PPO_EPOCHS" if r50 else "PPO_EPOCHS", opts.ppo_epochs, 0 if r50 else 1, device)
    model, splits, example, groups, cost = _search_setup(arch, device, search, bn_batches, bn_batch)
    t = time.perf_counter()
    # candidate_eval: graph-rl's default (pruned copies) unless PRUNEBENCH_BENCH_CANDIDATE_EVAL=masked
    candidate_eval = os.environ.get("PRUNEBENCH_BENCH_CANDIDATE_EVAL", opts.candidate_eval)
    ev = _TimedEvaluator(SearchEvaluator(model, splits, device, bn_batches=bn_batches, batch_size=bn_batch,
                                         example_input=example, groups=groups, mode=candidate_eval), device)
    reward = SelfCompetition(kappa=opts.kappa, tau=opts.tau, variant=opts.reward)
    reward.start(0.0)
    env = PruningEnv(model, example, groups, cost, Budget("macs", 0.5), ev, reward, min_keep_fraction=0.1,
                     mode=opts.mode, action=opts.action, topk_channel_edges=opts.topk_channel_edges,
                     projection_penalty=opts.projection_penalty, wall_reserve=opts.wall_reserve, fill=opts.fill)
    pdev = device if policy_on == "device" else torch.device("cpu")
    policy = GraphPolicy(NODE_FEATURES, EDGE_FEATURES, PolicyConfig(
        encoder=opts.encoder, layers=opts.layers, heads=opts.heads, head_dim=opts.head_dim,
        action=opts.action, observation=opts.observation, self_loops=opts.self_loops,
        feature_skip=opts.feature_skip, feature_skip_gain=opts.feature_skip_gain)).to(pdev)
    ppo = PPO(policy, PPOConfig(lr=opts.lr, clip=opts.clip, epochs=max(1, ppo_epochs), gamma=opts.gamma,
                                gae_lambda=opts.gae_lambda, value_coef=opts.value_coef,
                                max_grad_norm=opts.max_grad_norm, seed=0, forward_chunk=opts.ppo_forward_chunk,
                                ratio=opts.ppo_ratio))
    setup_s = time.perf_counter() - t
    buffer = RolloutBuffer()
    generator = torch.Generator(device=pdev).manual_seed(0)
    episodes: list[dict[str, float]] = []

    def episode(seed: int) -> None:
        t0 = time.perf_counter()
        eval_before, policy_s = ev.seconds, 0.0
        obs, info = env.reset(seed=seed)
        done, steps = False, 0
        while not done:
            tp = time.perf_counter()
            gi = int(info["group_index"])
            with torch.no_grad():
                out = policy(obs.to(pdev) if pdev.type != "cpu" else obs, gi)
                action = policy.act(out, gi, generator=generator)
                lp_el, _ = policy.element_log_prob(out, action, gi)
                logp = float(lp_el.sum())
                value = float(out.value.view(-1)[0])
                action = action.cpu()
                step_action = {"keep": action, "scores": policy.distribution(out, gi).logits.cpu()}
            buffer.add(obs, gi, action, logp, value, 0.0, False,  # CPU copies; PPO moves batches to the policy
                       element_log_prob=lp_el.cpu() if opts.ppo_ratio == "per-element" else None)
            policy_s += time.perf_counter() - tp
            obs, r, terminated, truncated, info = env.step(step_action)
            done = bool(terminated or truncated)
            buffer.steps[-1].reward, buffer.steps[-1].done = float(r), done
            steps += 1
        total = time.perf_counter() - t0
        evaluate = ev.seconds - eval_before
        episodes.append({"total_s": total, "evaluate_s": evaluate, "policy_s": policy_s,
                         "env_s": total - evaluate - policy_s, "steps": steps})

    for i in range(warmup):  # lazy mask resolution, cuDNN plans, allocator
        episode(100 + i)
    buffer.clear()
    episodes.clear()
    benchmark.pedantic(episode, args=(0,), rounds=1, iterations=1)
    for i in range(1, rounds):
        episode(i)
    n_buffer = len(episodes)
    ppo_s = timed(lambda: ppo.update(buffer), pdev) * opts.ppo_epochs / ppo_epochs if ppo_epochs else None
    mean = {k: statistics.mean(e[k] for e in episodes) for k in episodes[0]}
    overhead = mean["total_s"] - mean["evaluate_s"]
    macs = macs_per_image(model, _shape(arch))
    images = search + bn_batches * bn_batch
    result = {"search_images": search, "bn_images": bn_batches * bn_batch, "groups": len(groups),
              "episode_s": mean["total_s"], "evaluate_s": mean["evaluate_s"], "overhead_s": overhead,
              "policy_s": mean["policy_s"], "env_s": mean["env_s"], "setup_s": setup_s, "episodes": n_buffer,
              "ppo_update_per_episode_s": None if ppo_s is None else ppo_s / n_buffer,
              "ppo_epochs_run": ppo_epochs, "policy_on": pdev.type, "amp": ev.ev.amp, "candidate_eval": candidate_eval,
              "evaluate_flop_ratio": flop_ratio(mean["evaluate_s"], 2 * macs * images, rate)}
    measurements.put("episode", arch if policy_on == "cpu" else f"{arch}/policy-on-device", result)
    benchmark.extra_info.update(result)
    target = " (target <= 0.2 s on one H100 with 5,000 images)" if arch == "resnet56" else ""
    ppo_text = "not timed" if ppo_s is None else f"{ppo_s / n_buffer:.3f} s per episode"
    print(f"\n{arch} graph-RL episode, policy on {pdev.type} ({len(groups)} steps, {search} search + "
          f"{bn_batches}x{bn_batch} BN images): {mean['total_s']:.3f} s{target} = evaluate {mean['evaluate_s']:.3f} s "
          f"({result['evaluate_flop_ratio']:.1f}x its FLOP time) + policy {mean['policy_s']:.3f} s "
          f"+ env {mean['env_s']:.3f} s; PPO update {ppo_text}")
