"""A latency lookup table: predicted batch-1 latency of a model for any per-group keep counts (issue 14).

A latency budget (``metric: latency``, the fraction of the base latency removed) must be met by searches
that query thousands of plans, so a plan's latency is predicted, not measured, during the search; the
final plan is measured (``harness.cli.prune``) and rejected like an over-budget plan when it misses.

The model, in the spirit of NetAdapt's and HALP's per-layer tables: every conv / linear layer of the
:class:`~harness.prune.cost.CostModel` is timed alone at batch 1 on a grid of (input, output) widths, on
its own input size; layers with the same signature share one grid. A plan's prediction is ``a * sum of
the layers' bilinearly interpolated times + b``, where ``a`` and ``b`` are fitted by least squares on whole
models measured at a few uniform keep fractions: they absorb what the layers' sum misses (BN, activations,
residual adds, pooling, framework overhead). The fit's residuals are stored with the table, so how well it
predicts is a number in the file, not a hope.

A table is measured once per (architecture, input, device, threads, torch version) and cached as JSON under
a key of those facts; a lock file serialises the measurement when several prune jobs need the same table.
"""
from __future__ import annotations

import contextlib
import copy
import fcntl
import hashlib
import json
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch_pruning import ops

from harness.errors import UserError
from harness.metrics.latency import device_name

FORMAT = 1
#: one lock file per cache folder: the latency jobs of a workflow measure one at a time (jobs without a latency
#: budget still share the machine: time latency budgets with ``--cores 1`` or one GPU per job)
MEASURE_LOCK = "measure.lock"
#: whole-model keep fractions the calibration measures (1.0 = the base model)
CALIBRATION_FRACTIONS = (1.0, 0.8, 0.6, 0.4, 0.25)


@dataclass(frozen=True)
class TableSettings:
    """How a table is measured: grid points per width axis (at most), warm-up and timed repeats per entry."""

    grid_points: int = 13
    warmup: int = 3
    repeats: int = 9
    calibration_repeats: int = 15


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def _median_ms(fn: Any, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def _grid(total: int, varies: bool, points: int) -> list[int]:
    """Widths timed on one axis: the full width only when no group changes it, else 1, multiples of a step
    and the full width, at most ``points`` of them. The step is a multiple of 8: CPU and GPU convolution
    kernels work in blocks of 8-16 channels, so latency steps there; between grid points it is interpolated."""
    if not varies or total <= 1:
        return [int(total)]
    step = 8 * math.ceil(total / (8 * max(1, points - 1)))
    return sorted({1, *range(step, total, step), int(total)})


def _input_shapes(model: nn.Module, example: torch.Tensor) -> dict[nn.Module, tuple[int, ...]]:
    """Per conv / linear layer: its input's shape without the batch axis (one hooked forward pass)."""
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def hook(m: nn.Module, args: tuple, _out: Any) -> None:
        shapes.setdefault(m, tuple(args[0].shape[1:]))

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (ops.TORCH_CONV, ops.TORCH_LINEAR))]
    try:
        with torch.no_grad():
            was = model.training
            model.eval()
            model(example[:1])
            model.train(was)
    finally:
        for h in handles:
            h.remove()
    return shapes


def _signature(m: nn.Module, in_shape: tuple[int, ...]) -> dict[str, Any]:
    if isinstance(m, ops.TORCH_CONV):
        if m.transposed:
            raise UserError("the latency table does not support transposed convolutions")
        depthwise = m.groups == m.out_channels and m.out_channels > 1
        if m.groups != 1 and not depthwise:
            raise UserError(f"the latency table supports plain and depthwise convolutions, not groups={m.groups}")
        return {"kind": f"conv{len(m.kernel_size)}d", "kernel": list(m.kernel_size), "stride": list(m.stride),
                "padding": list(m.padding) if not isinstance(m.padding, str) else m.padding,
                "dilation": list(m.dilation), "depthwise": depthwise, "bias": m.bias is not None,
                "spatial": list(in_shape[1:])}
    return {"kind": "linear", "bias": m.bias is not None, "tokens": list(in_shape[:-1])}


def _layer(sig: dict[str, Any], cin: int, cout: int) -> nn.Module:
    if sig["kind"] == "linear":
        return nn.Linear(cin, cout, bias=sig["bias"])
    conv = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}[sig["kind"]]
    groups = cout if sig["depthwise"] else 1
    cin = cout if sig["depthwise"] else cin
    return conv(cin, cout, sig["kernel"], stride=sig["stride"], padding=sig["padding"], dilation=sig["dilation"],
                groups=groups, bias=sig["bias"])


def _layer_input(sig: dict[str, Any], cin: int, cout: int, device: torch.device) -> torch.Tensor:
    if sig["kind"] == "linear":
        return torch.randn(1, *sig["tokens"], cin, device=device)
    return torch.randn(1, cout if sig["depthwise"] else cin, *sig["spatial"], device=device)


class LatencyTable:
    """Per-layer latency grids of one model on one device, and the whole-model calibration ``a, b``.

    Built with :meth:`measure` (or loaded with :meth:`load`); :meth:`attach` binds it to a CostModel's layers,
    after which :meth:`predict` maps the CostModel's per-layer widths to milliseconds.
    """

    def __init__(self, data: dict[str, Any]) -> None:
        if data.get("format") != FORMAT:
            raise UserError(f"latency table format {data.get('format')!r} is not {FORMAT}: delete it to re-measure")
        self.data = data
        self._grids = [(np.asarray(g["in"], float), np.asarray(g["out"], float), np.asarray(g["ms"], float))
                       for g in data["grids"]]
        self.a, self.b = float(data["calibration"]["a"]), float(data["calibration"]["b"])
        self._rows: list[int] = []   # CostModel unit index of each timed layer
        self._grid_of: list[int] = []  # grid of each timed layer

    # ------------------------------------------------------------------ building
    @classmethod
    def measure(cls, model: nn.Module, example: torch.Tensor, cost: Any, device: torch.device | str,
                settings: TableSettings = TableSettings(), *, key: dict[str, Any] | None = None) -> "LatencyTable":
        """Time every layer signature's grid, then fit ``a, b`` on whole models at uniform keep fractions."""
        from harness.prune.surgery import apply_plan

        device = torch.device(device)
        shapes = _input_shapes(model, example)
        sigs: list[dict[str, Any]] = []
        grids: list[dict[str, Any]] = []
        layers: list[dict[str, Any]] = []
        for ui, unit in enumerate(cost.units):
            m = unit.module
            if not isinstance(m, (ops.TORCH_CONV, ops.TORCH_LINEAR)):
                continue
            sig = _signature(m, shapes.get(m, ()))
            in_total = m.in_features if isinstance(m, ops.TORCH_LINEAR) else m.in_channels
            out_total = m.out_features if isinstance(m, ops.TORCH_LINEAR) else m.out_channels
            full = {**sig, "in_total": int(in_total), "out_total": int(out_total),
                    "in_varies": bool(unit.in_seg) and not sig.get("depthwise", False),
                    "out_varies": bool(unit.out_seg)}
            if full not in sigs:
                sigs.append(full)
            layers.append({"unit": unit.name, "grid": sigs.index(full)})
        for sig in sigs:
            ins = _grid(sig["in_total"], sig["in_varies"], settings.grid_points)
            outs = _grid(sig["out_total"], sig["out_varies"], settings.grid_points)
            ms = []
            for cin in ins:
                row = []
                for cout in outs:
                    layer = _layer(sig, cin, cout).to(device).eval()
                    x = _layer_input(sig, cin, cout, device)
                    row.append(_median_ms(lambda: layer(x), device, settings.warmup, settings.repeats))
                ms.append(row)
            # a wider layer is never faster: the running maximum along both axes removes timing noise that
            # would make the interpolation non-monotone (and a search prefer a wider plan as "faster")
            ms = np.maximum.accumulate(np.maximum.accumulate(np.asarray(ms), axis=0), axis=1).tolist()
            grids.append({"signature": {k: v for k, v in sig.items()}, "in": ins, "out": outs, "ms": ms})
        data = {"format": FORMAT, "key": key or {}, "settings": settings.__dict__, "layers": layers, "grids": grids,
                "calibration": {"a": 1.0, "b": 0.0, "points": []}}
        table = cls(data)
        table.attach(cost)
        # calibration: whole models (first-k channels of every group; latency does not depend on weights)
        sums, nets, fractions = [], [], list(CALIBRATION_FRACTIONS)
        x = example[:1].to(device)
        for f in fractions:
            keep = {g.id: list(range(max(1, int(round(f * g.size))))) for g in cost.groups}
            net = model if f == 1.0 else apply_plan(copy.deepcopy(model).cpu(), keep, example[:1].cpu())
            nets.append(copy.deepcopy(net).to(device).eval())
            counts = np.asarray([len(keep[g.id]) for g in cost.groups], float)
            sums.append(table.layer_sum(*cost.widths(counts)))
        # interleaved rounds, so a slow spell of a shared machine hits every fraction alike
        rounds: list[list[float]] = [[] for _ in nets]
        for _ in range(3):
            for i, net in enumerate(nets):
                rounds[i].append(_median_ms(lambda: net(x), device, settings.warmup, settings.calibration_repeats))
        measured = [statistics.median(r) for r in rounds]
        design = np.stack([np.asarray(sums), np.ones(len(sums))], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, np.asarray(measured), rcond=None)
        if a <= 0:  # noise swamped the layers' signal: fall back to the sum plus the mean remainder
            a = 1.0
            b = float(np.mean(np.asarray(measured) - np.asarray(sums)))
        predicted = a * np.asarray(sums) + b
        data["calibration"] = {
            "a": float(a), "b": float(b),
            "points": [{"keep_fraction": f, "measured_ms": float(m), "predicted_ms": float(p), "layer_sum_ms": float(s)}
                       for f, m, p, s in zip(fractions, measured, predicted, sums)],
            "max_relative_error": float(np.max(np.abs(predicted - measured) / np.asarray(measured))),
        }
        table.a, table.b = float(a), float(b)
        return table

    # ------------------------------------------------------------------ persistence
    @classmethod
    def load(cls, path: Path) -> "LatencyTable":
        return cls(json.loads(Path(path).read_text()))

    def save(self, path: Path) -> None:
        from harness.io import write_json

        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.data)

    @property
    def digest(self) -> str:
        """A short hash of the table (a search checkpoint made with another table is not resumed)."""
        return hashlib.sha256(json.dumps(self.data, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def max_relative_error(self) -> float:
        return float(self.data["calibration"].get("max_relative_error", float("nan")))

    # ------------------------------------------------------------------ prediction
    def attach(self, cost: Any) -> None:
        """Bind the table's layers to ``cost``'s units (by name); a table of another model is an error."""
        index = {u.name: i for i, u in enumerate(cost.units)}
        names = [layer["unit"] for layer in self.data["layers"]]
        missing = [n for n in names if n not in index]
        timed = {u.name for u in cost.units if isinstance(u.module, (ops.TORCH_CONV, ops.TORCH_LINEAR))}
        if missing or set(names) != timed:
            raise UserError("the latency table was measured on another model (its layers differ): delete it to re-measure")
        self._rows = [index[n] for n in names]
        self._grid_of = [int(layer["grid"]) for layer in self.data["layers"]]

    def layer_sum(self, w_in: np.ndarray, w_out: np.ndarray) -> float:
        """Sum of the timed layers' interpolated latencies at per-unit widths ``w_in`` / ``w_out`` (ms)."""
        total = 0.0
        for row, gi in zip(self._rows, self._grid_of):
            ins, outs, ms = self._grids[gi]  # a depthwise layer's input axis has one point: w_in is ignored
            total += _bilinear(ins, outs, ms, float(w_in[row]), float(w_out[row]))
        return total

    def predict(self, w_in: np.ndarray, w_out: np.ndarray) -> float:
        """Predicted whole-model latency (ms) at per-unit widths (``CostModel.widths``)."""
        return self.a * self.layer_sum(w_in, w_out) + self.b


def _interp_axis(points: np.ndarray, v: float) -> tuple[int, int, float]:
    if len(points) == 1:
        return 0, 0, 0.0
    v = min(max(v, points[0]), points[-1])
    j = int(np.searchsorted(points, v, side="right")) - 1
    j = min(max(j, 0), len(points) - 2)
    t = (v - points[j]) / (points[j + 1] - points[j])
    return j, j + 1, float(t)


def _block(width: float, points: np.ndarray) -> float:
    """``width`` rounded up to a multiple of 8 (not past the axis's last point): kernels pad channels to
    their block, so 65 channels cost about what 72 do; linear interpolation alone predicted 20-30 % less."""
    return min(float(points[-1]), 8.0 * math.ceil(width / 8.0 - 1e-9)) if len(points) > 1 else width


def _bilinear(ins: np.ndarray, outs: np.ndarray, ms: np.ndarray, cin: float, cout: float) -> float:
    i0, i1, ti = _interp_axis(ins, _block(cin, ins))
    o0, o1, to = _interp_axis(outs, _block(cout, outs))
    top = ms[i0, o0] * (1 - to) + ms[i0, o1] * to
    bottom = ms[i1, o0] * (1 - to) + ms[i1, o1] * to
    return float(top * (1 - ti) + bottom * ti)


# ---------------------------------------------------------------------- the cache
def table_key(arch: str, model: nn.Module, example: torch.Tensor, device: torch.device | str,
              settings: TableSettings) -> dict[str, Any]:
    """What a cached table must match: the layers (names and shapes), input, device, threads, torch, settings."""
    layers = [[n, type(m).__name__, list(getattr(m, "weight").shape)] for n, m in model.named_modules()
              if isinstance(m, (ops.TORCH_CONV, ops.TORCH_LINEAR))]
    return {"arch": arch, "input": list(example.shape[1:]), "device": device_name(device),
            "device_type": torch.device(device).type, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "settings": settings.__dict__,
            "layers": hashlib.sha256(json.dumps(layers).encode()).hexdigest()[:16]}


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)  # an empty lock file, never written
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def cached_table(cache_dir: Path, arch: str, model: nn.Module, example: torch.Tensor, cost: Any,
                 device: torch.device | str, settings: TableSettings = TableSettings()) -> tuple["LatencyTable", Path, bool]:
    """The table of (arch, input, device, threads, torch) from ``cache_dir``, measured first if absent.

    Returns (table attached to ``cost``, its file, whether it was measured now).
    """
    key = table_key(arch, model, example, device, settings)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"{arch}-{key['device_type']}-{digest}.json"
    with _locked(Path(cache_dir) / MEASURE_LOCK):
        if path.exists():
            table = LatencyTable.load(path)
            if table.data.get("key") != key:
                raise UserError(f"latency table {path} was made for other settings: delete it to re-measure")
            table.attach(cost)
            return table, path, False
        table = LatencyTable.measure(model, example, cost, device, settings, key=key)
        table.save(path)
        return table, path, True


def measured_reduction(base: nn.Module, pruned: nn.Module, input_shape: Sequence[int], device: torch.device | str,
                       rounds: int = 5, repeats: int = 10, warmup: int = 3, lock_dir: Path | None = None,
                       ) -> dict[str, float]:
    """Measured batch-1 latency of ``base`` and ``pruned``, interleaved in ``rounds`` so drift hits both alike.

    Returns the medians over all timed passes (``base_ms``, ``pruned_ms``) and ``reduction`` = 1 - pruned/base.
    ``lock_dir``: hold that cache folder's measurement lock (no other latency job measures meanwhile).
    """
    if lock_dir is not None:
        with _locked(Path(lock_dir) / MEASURE_LOCK):
            return measured_reduction(base, pruned, input_shape, device, rounds, repeats, warmup)
    device = torch.device(device)
    nets = [copy.deepcopy(base).to(device).eval(), copy.deepcopy(pruned).to(device).eval()]
    x = torch.randn(1, *input_shape, device=device)
    times: list[list[float]] = [[], []]
    for _ in range(rounds):
        for i, net in enumerate(nets):
            times[i].append(_median_ms(lambda: net(x), device, warmup, repeats))
    base_ms, pruned_ms = statistics.median(times[0]), statistics.median(times[1])
    return {"base_ms": base_ms, "pruned_ms": pruned_ms, "reduction": 1.0 - pruned_ms / base_ms}
