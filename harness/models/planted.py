"""The planted-ground-truth benchmark: a trained CIFAR ResNet widened with decoy channels, its function unchanged.

Why: "does the pruner find the channels that matter, beyond weight magnitude?" has no answer on a real
network, where nobody knows which channels matter. Here it is known by construction. A trained
:class:`~harness.models.cifar_resnet.CifarResNet` is copied into a wider one in which **every** prunable
Torch-Pruning group (block-internal channels and the three residual streams) holds

* its trained ("useful") channels at random positions, their filters scaled down by ``useful_scale`` with the
  following BatchNorm's running statistics compensated exactly (``mean * s``, ``(var + eps) * s^2 - eps``),
  so the normalised output, and hence the network's function, is unchanged;
* ``decoy_ratio`` times as many decoy channels whose filters are random with an L1 norm of 1 to 2 (uniform)
  times ``decoy_norm`` times the *largest* trained filter of the same layer (so every filter-L1 criterion
  ranks every decoy above every useful channel) and whose consumer kernels (next convs, projection shortcuts, the classifier) are zero,
  so they never reach the output. Their BN affine parameters are copied from randomly chosen useful channels
  of the same layer (BN-based criteria get no free label) and their running statistics are estimated on data.

The ground truth is ``{group id: sorted useful channel indices}`` over the wide model's groups. The planted
network computes exactly what the trained one does (``max |logits difference|`` is checked by the caller);
keeping all useful channels is feasible only up to the reduction of the useful-only plan
(:func:`useful_only_reduction`), so a benchmark can place one budget below and one above it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterable, Mapping

import torch
from torch import nn

from harness.errors import UserError
from harness.models._util import scale_channels
from harness.models.cifar_resnet import DEPTHS, CifarResNet
from harness.train.bn import recalibrate_bn

PREFIX = "planted-"
#: ``format`` of ground_truth.json (written by harness/cli/train_base.py, read by harness/cli/evaluate.py)
GROUND_TRUTH_FORMAT = "prunebench-planted/1"


@dataclass(frozen=True)
class PlantOptions:
    """How the decoys are planted (see the module docstring); one set for the whole benchmark."""

    decoy_ratio: float = 1.0
    useful_scale: float = 0.25
    decoy_norm: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.decoy_ratio > 0:
            raise UserError(f"planted option decoy_ratio must be > 0, got {self.decoy_ratio!r}")
        if not 0 < self.useful_scale <= 1:
            raise UserError(f"planted option useful_scale must be in (0, 1], got {self.useful_scale!r}")
        if not self.decoy_norm > 0:
            raise UserError(f"planted option decoy_norm must be > 0, got {self.decoy_norm!r}")


def is_planted(arch: str) -> bool:
    return isinstance(arch, str) and arch.startswith(PREFIX) and arch[len(PREFIX):] in DEPTHS


def inner_arch(arch: str) -> str:
    """``planted-resnet20`` -> ``resnet20``: the network that is trained before the decoys are planted."""
    if not is_planted(arch):
        raise UserError(f"{arch!r} is not a planted architecture (planted-<{'|'.join(DEPTHS)}>)")
    return arch[len(PREFIX):]


def stage_widths(width: float, decoy_ratio: float) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """(useful widths, planted widths) of the three stages for a width multiplier and a decoy ratio."""
    useful = tuple(scale_channels(c, width) for c in (16, 32, 64))
    total = tuple(u + max(1, int(round(decoy_ratio * u))) for u in useful)
    return useful, total  # type: ignore[return-value]


def build_planted(arch: str, num_classes: int, in_channels: int, width: float = 1.0,
                  decoy_ratio: float = 1.0) -> CifarResNet:
    """The (untrained) widened network of ``planted-resnetN``: the shape :func:`plant` fills in."""
    _, total = stage_widths(width, decoy_ratio)
    return CifarResNet(DEPTHS[inner_arch(arch)], num_classes=num_classes, in_channels=in_channels, widths=total)


# ------------------------------------------------------------------------------------------ channel roles
def _channel_keys(model: CifarResNet) -> dict[str, tuple[str | None, str | None]]:
    """Per conv/BN/linear name: (key of the channel set it reads, key of the set it writes).

    Keys: ``stream{s}`` for the residual stream of stage s, ``block{s}.{j}`` for a block's internal
    channels, None for the image input or the class scores.
    """
    keys: dict[str, tuple[str | None, str | None]] = {"conv1": (None, "stream1"), "bn1": (None, "stream1")}
    prev = "stream1"
    for s in (1, 2, 3):
        stage = getattr(model, f"layer{s}")
        for j, block in enumerate(stage):
            inner, stream = f"block{s}.{j}", f"stream{s}"
            p = f"layer{s}.{j}"
            keys[f"{p}.conv1"] = (prev, inner)
            keys[f"{p}.bn1"] = (None, inner)
            keys[f"{p}.conv2"] = (inner, stream)
            keys[f"{p}.bn2"] = (None, stream)
            if block.downsample is not None:
                keys[f"{p}.downsample.0"] = (prev, stream)
                keys[f"{p}.downsample.1"] = (None, stream)
            elif prev != stream:
                raise UserError(f"{p} changes width without a projection shortcut; cannot plant decoys")
            prev = stream
    keys["fc"] = (prev, None)
    return keys


def _useful_positions(model: CifarResNet, small: CifarResNet, keys: Mapping[str, tuple[str | None, str | None]],
                      gen: torch.Generator) -> dict[str, torch.Tensor]:
    """For every channel set, the (sorted) positions of the trained channels inside the wide layer."""
    positions: dict[str, torch.Tensor] = {}
    for name in sorted(keys, key=_module_order(keys)):
        _, out_key = keys[name]
        if out_key is None or out_key in positions:
            continue
        wide_n = _width(model.get_submodule(name))
        small_n = _width(small.get_submodule(name))
        if small_n >= wide_n:
            raise UserError(f"{name}: the planted layer ({wide_n}) must be wider than the trained one ({small_n})")
        positions[out_key] = torch.randperm(wide_n, generator=gen)[:small_n].sort().values
    return positions


def _module_order(keys: Mapping[str, object]):
    order = {name: i for i, name in enumerate(keys)}
    return lambda name: order[name]


def _width(m: nn.Module) -> int:
    if isinstance(m, nn.Conv2d):
        return m.out_channels
    if isinstance(m, nn.BatchNorm2d):
        return m.num_features
    if isinstance(m, nn.Linear):
        return m.out_features
    raise TypeError(type(m).__name__)


# ------------------------------------------------------------------------------------------ planting
@torch.no_grad()
def plant(small: CifarResNet, num_classes: int, in_channels: int, opts: PlantOptions,
          calibration: Iterable[torch.Tensor], *, width: float = 1.0) -> tuple[CifarResNet, dict[str, list[int]]]:
    """Widen the trained ``small`` network with decoys; returns (planted model in eval mode, ground truth).

    ``calibration`` yields input batches (training images) for the decoys' BN running statistics.
    The ground truth maps each Torch-Pruning group id of the planted model to its useful channels.
    """
    if not isinstance(small, CifarResNet):
        raise UserError(f"plant: needs a CIFAR ResNet of this suite, got {type(small).__name__}")
    depth = 6 * len(small.layer1) + 2
    useful_w = (small.conv1.out_channels, small.layer2[0].conv1.out_channels, small.layer3[0].conv1.out_channels)
    total = tuple(u + max(1, int(round(opts.decoy_ratio * u))) for u in useful_w)
    wide = CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, widths=total)  # type: ignore[arg-type]
    wide.eval()
    small = copy.deepcopy(small).eval()
    keys = _channel_keys(wide)
    gen = torch.Generator().manual_seed(int(opts.seed))
    pos = _useful_positions(wide, small, keys, gen)
    s = float(opts.useful_scale)

    decoy_bn_sources: dict[str, torch.Tensor] = {}
    for name, (in_key, out_key) in keys.items():
        w_mod, s_mod = wide.get_submodule(name), small.get_submodule(name)
        if isinstance(w_mod, nn.BatchNorm2d):
            out = pos[out_key]
            decoy = _complement(out, w_mod.num_features)
            src = decoy_bn_sources.setdefault(out_key + name, torch.randint(0, out.numel(), (decoy.numel(),), generator=gen))
            for attr in ("weight", "bias"):
                p = getattr(w_mod, attr)
                p[out] = getattr(s_mod, attr)
                p[decoy] = getattr(s_mod, attr)[src]
            w_mod.running_mean.zero_()
            w_mod.running_var.fill_(1.0)
            continue
        if isinstance(w_mod, nn.Linear):  # the classifier: reads the last stream, writes the class scores
            w_mod.weight.zero_()
            w_mod.weight[:, pos[in_key]] = s_mod.weight
            w_mod.bias.copy_(s_mod.bias)
            continue
        # a conv: useful rows read only useful inputs (scaled by s); decoy rows are large random filters
        w_mod.weight.zero_()
        out = pos[out_key]
        inp = torch.arange(w_mod.in_channels) if in_key is None else pos[in_key]
        w_mod.weight[out.view(-1, 1), inp.view(1, -1)] = s * s_mod.weight
        decoy = _complement(out, w_mod.out_channels)
        rnd = torch.randn(decoy.numel(), *w_mod.weight.shape[1:], generator=gen)
        trained_max = float(s_mod.weight.abs().flatten(1).sum(1).max())
        # each decoy's L1 drawn in [1, 2] x decoy_norm x the largest trained filter's (no two decoys alike)
        norm = opts.decoy_norm * trained_max * (1.0 + torch.rand(decoy.numel(), generator=gen))
        rnd *= (norm / rnd.abs().flatten(1).sum(1).clamp_min(1e-12)).view(-1, 1, 1, 1)
        w_mod.weight[decoy] = rnd

    # BN running statistics: data for the decoys, then the exact compensation for the useful channels
    try:
        recalibrate_bn(wide, calibration, None, "cpu")
    except ValueError:
        raise UserError("plant: the calibration data yielded no batch") from None
    for name, (_, out_key) in keys.items():
        w_mod = wide.get_submodule(name)
        if isinstance(w_mod, nn.BatchNorm2d):
            s_mod = small.get_submodule(name)
            out = pos[out_key]
            w_mod.running_mean[out] = s * s_mod.running_mean
            w_mod.running_var[out] = s * s * (s_mod.running_var + s_mod.eps) - w_mod.eps

    example = torch.zeros(1, in_channels, 8, 8)
    truth = ground_truth(wide, example, pos, keys)
    return wide, truth


def _complement(idx: torch.Tensor, n: int) -> torch.Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[idx] = False
    return mask.nonzero().flatten()


def ground_truth(wide: CifarResNet, example: torch.Tensor, pos: Mapping[str, torch.Tensor],
                 keys: Mapping[str, tuple[str | None, str | None]]) -> dict[str, list[int]]:
    """Useful channels per Torch-Pruning group of the planted model (group ids are root module names)."""
    from harness.prune.groups import find_groups

    truth: dict[str, list[int]] = {}
    for g in find_groups(wide, example, scope="all"):
        out_key = keys.get(g.id, (None, None))[1]
        if out_key is None:
            raise UserError(f"planted model: group root {g.id!r} has no known channel role")
        truth[g.id] = [int(i) for i in pos[out_key]]
    return truth


def read_ground_truth(path) -> dict[str, list[int]]:
    """The ``{group id: useful indices}`` of a ground_truth.json; a UserError naming the file if it is not one."""
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read the ground truth ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != GROUND_TRUTH_FORMAT \
            or not isinstance(record.get("useful"), dict):
        raise UserError(f"{path}: not a ground truth of format {GROUND_TRUTH_FORMAT!r}")
    return {str(g): sorted(int(i) for i in idx) for g, idx in record["useful"].items()}


# ------------------------------------------------------------------------------------------ scoring
def useful_recall(keep: Mapping[str, Iterable[int]], truth: Mapping[str, Iterable[int]]) -> float:
    """Fraction of all useful channels a plan keeps (a group absent from ``keep`` keeps every channel)."""
    kept = total = 0
    for gid, useful in truth.items():
        useful_set = {int(i) for i in useful}
        total += len(useful_set)
        kept += len(useful_set) if gid not in keep else len(useful_set & {int(i) for i in keep[gid]})
    if total == 0:
        raise UserError("ground truth lists no useful channel")
    return kept / total


def useful_only_plan(truth: Mapping[str, Iterable[int]]) -> dict[str, list[int]]:
    """The plan that keeps exactly the useful channels (the ground-truth mask)."""
    return {gid: sorted(int(i) for i in useful) for gid, useful in truth.items()}


def useful_counts(wide: CifarResNet, group_ids: Iterable[str], width: float) -> dict[str, int]:
    """Useful channels per group of a planted model of inner ``width``, from the shapes alone (no planting).

    What :func:`useful_only_reduction` needs before any training (config checks): the counts, not the
    positions, fix the useful-only plan's cost."""
    useful, _ = stage_widths(width, 1.0)
    keys = _channel_keys(wide)
    out: dict[str, int] = {}
    for gid in group_ids:
        out_key = keys.get(gid, (None, None))[1]
        if out_key is None:
            raise UserError(f"planted model: group root {gid!r} has no known channel role")
        stage = int(out_key[len("stream"):] if out_key.startswith("stream") else out_key[len("block"):].split(".")[0])
        out[gid] = useful[stage - 1]
    return out


def useful_only_reduction(cost, truth: Mapping[str, Iterable[int] | int], metric: str) -> float:
    """The reduction of ``metric`` of the useful-only plan: budgets above it cannot keep every useful channel.

    ``truth``: the ground truth (useful indices per group) or just the useful counts per group."""
    c = cost.cost({gid: v if isinstance(v, int) else len(list(v)) for gid, v in truth.items()})
    return cost.base.reduction_to(c, metric)

