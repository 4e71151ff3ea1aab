"""AMC's least-squares weight reconstruction, extended to any kernel size (spec B.4.5).

The official code re-fits layer t's remaining input weights after pruning so that its output on calibration
data matches the unpruned layer's (sklearn LinearRegression, no intercept; 60 x 50 train images, 10 random
positions per image, inputs taken from the unpruned model), but only for 1x1 convs and linear layers. The
spec recommends the same fit for any kernel size on im2col patches; that is what this module does:

* once: for every consumer conv/linear of a decided group, the patches X (rows: ``points`` random positions
  per calibration image, columns: input channel x kernel position) are reduced to G = X^T X (float64), so no
  episode touches the calibration data again; the original outputs are Y = X W^T (bias left out), so
  X^T Y = G W^T needs no second accumulator;
* per episode: for the kept channels K, W_K = (G_KK + eps I)^-1 (G W^T)_K (eps = 1e-8 x mean diagonal, only
  to keep a dead channel from making G_KK singular); the pruned input columns are zero.

The re-fitted weights only shape the search's reward: they are patched into the evaluator's working copy
for one evaluation and restored after it. The exported plan holds channel indices, as every method's, so
fine-tuning starts from the base weights (the official export re-fits on 300 batches before fine-tuning).
"""
from __future__ import annotations

import time
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch_pruning.pruner import function as tpf

from harness.data import make_loader
from harness.prune import build_graph, tp_group
from harness.prune.groups import hooked_forward
from baselines.amc.layers import AMCLayer

_IN_FNS = (tpf.prune_conv_in_channels, tpf.prune_linear_in_channels)


def _patches(m: nn.Conv2d, x: torch.Tensor, points: int, gen: torch.Generator) -> torch.Tensor:
    """im2col rows of ``points`` random output positions per image: (N * points, C * kh * kw), channel-major
    like ``weight.view(out, -1)``. Only the sampled windows are gathered (a full unfold of an ImageNet stage
    would take gigabytes)."""
    xp = F.pad(x, m._reversed_padding_repeated_twice)
    (kh, kw), (sh, sw), (dh, dw) = m.kernel_size, m.stride, m.dilation
    h_out = (xp.shape[-2] - dh * (kh - 1) - 1) // sh + 1
    w_out = (xp.shape[-1] - dw * (kw - 1) - 1) // sw + 1
    n = x.shape[0]
    oy = torch.randint(0, h_out, (n, points), generator=gen).to(x.device)
    ox = torch.randint(0, w_out, (n, points), generator=gen).to(x.device)
    iy = oy[:, :, None, None] * sh + (torch.arange(kh, device=x.device) * dh)[None, None, :, None]
    ix = ox[:, :, None, None] * sw + (torch.arange(kw, device=x.device) * dw)[None, None, None, :]
    nidx = torch.arange(n, device=x.device)[:, None, None, None]
    win = xp[nidx, :, iy, ix]  # (n, points, kh, kw, C): the advanced indices go first
    return win.permute(0, 1, 4, 2, 3).reshape(n * points, -1)


class _Fit:
    """Normal equations of one consumer layer and its root-channel -> weight-column map."""

    def __init__(self, name: str, module: nn.Module, columns: dict[int, list[int]],
                 device: torch.device = torch.device("cpu")) -> None:
        self.name, self.module = name, module
        self.columns = columns  # root channel -> flat input columns of the weight (in_channel-major)
        cols = module.weight[0].numel()
        self.G = torch.zeros(cols, cols, dtype=torch.float64, device=device)
        self.W = module.weight.detach().to(device, torch.float64).reshape(module.weight.shape[0], -1)
        self.GW: torch.Tensor | None = None  # G W^T, once G is complete
        self.rows = 0

    def add(self, x: torch.Tensor, points: int, gen: torch.Generator) -> None:
        m = self.module
        rows = _patches(m, x, points, gen) if isinstance(m, nn.Conv2d) else x.reshape(-1, x.shape[-1])
        rows = rows.detach().to(self.G.device, torch.float32)
        self.G += (rows.T @ rows).double()  # float32 per batch (fast), summed in float64
        self.rows += rows.shape[0]

    def solve(self, keep: Sequence[int]) -> torch.Tensor:
        """The re-fitted weight (original shape and dtype) when only root channels ``keep`` are fed."""
        cols = torch.as_tensor(sorted(c for k in keep for c in self.columns[int(k)]), dtype=torch.long,
                               device=self.G.device)
        if self.GW is None:  # X^T Y with Y = X W^T, the unpruned layer's output (bias left out)
            self.GW = self.G @ self.W.T
        g = self.G[cols][:, cols]
        eps = 1e-8 * float(g.diagonal().mean().clamp_min(1e-30))
        wk = torch.linalg.solve(g + eps * torch.eye(len(cols), dtype=g.dtype, device=g.device), self.GW[cols])
        w = torch.zeros(self.module.weight.shape[0], self.G.shape[0], dtype=torch.float64, device=g.device)
        w[:, cols] = wk.T
        return w.reshape(self.module.weight.shape).to(self.module.weight.dtype)


class Reconstruction:
    """Fits for the consumers of ``layers``' groups whose input is wholly that group (others: not re-fitted)."""

    def __init__(self, model: nn.Module, example_input: torch.Tensor, layers: Sequence[AMCLayer], dataset: Any,
                 *, images: int = 3000, points: int = 10, batch_size: int = 100, seed: int = 0,
                 device: str | torch.device = "cpu", graph=None) -> None:
        graph = graph or build_graph(model, example_input)
        names = {m: n for n, m in model.named_modules()}
        self.fits: dict[str, list[_Fit]] = {}  # group id -> fits of its consumers
        by_module: dict[nn.Module, _Fit] = {}
        for la in layers:
            fits = []
            for item in tp_group(graph, la.group):
                m = item.dep.target.module
                if item.dep.handler not in _IN_FNS or names.get(m) not in la.consumers or m in by_module:
                    continue
                roots = item.root_idxs
                per = m.weight[0, 0].numel() if isinstance(m, nn.Conv2d) else 1  # columns per input channel
                width = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
                if roots is None or any(r is None for r in roots) or len(item.idxs) != width:
                    continue  # the consumer also reads other channels (a concat): left as it is
                columns: dict[int, list[int]] = {}
                for local, root in zip(item.idxs, roots):
                    columns.setdefault(int(root), []).extend(range(int(local) * per, (int(local) + 1) * per))
                fit = _Fit(names[m], m, columns, torch.device(device))
                by_module[m] = fit
                fits.append(fit)
            if fits:
                self.fits[la.group.id] = fits
        self._collect(model, dataset, by_module, images, points, batch_size, seed, torch.device(device))

    @staticmethod
    @torch.no_grad()
    def _collect(model: nn.Module, dataset: Any, by_module: Mapping[nn.Module, _Fit], images: int, points: int,
                 batch_size: int, seed: int, device: torch.device) -> None:
        if not by_module:
            return
        gen = torch.Generator().manual_seed(seed)
        inputs: dict[nn.Module, torch.Tensor] = {}

        def hook(m: nn.Module, args: tuple) -> None:
            inputs[m] = args[0]

        seen = 0
        model_device = next(model.parameters()).device
        for x, *_ in make_loader(dataset, batch_size, shuffle=True, seed=seed):
            if seen >= images:
                break
            x = x[: images - seen]
            handles = [m.register_forward_pre_hook(hook) for m in by_module]
            hooked_forward(model, x.to(model_device), handles)
            for m, fit in by_module.items():
                fit.add(inputs[m], points, gen)
            inputs.clear()
            seen += x.shape[0]

    def weights(self, counts_keep: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
        """Re-fitted weights {consumer module name: weight} for the pruned groups of ``counts_keep``."""
        out: dict[str, torch.Tensor] = {}
        for gid, keep in counts_keep.items():
            for fit in self.fits.get(gid, ()):
                if len(keep) < len(fit.columns):
                    out[fit.name] = fit.solve(keep)
        return out


class ReconstructingEvaluator:
    """``evaluate(keep)`` of a :class:`harness.search.SearchEvaluator` with the re-fitted consumer weights
    patched into its working copy (``evaluator.net``) for the call and restored afterwards."""

    def __init__(self, evaluator: Any, reconstruction: Reconstruction) -> None:
        self.evaluator, self.reconstruction = evaluator, reconstruction
        self.last_refit_s = 0.0  # time of the last call's least-squares solves (the rest is the forward passes)

    @torch.no_grad()
    def evaluate(self, keep: Mapping[str, Sequence[int]]) -> float:
        net = self.evaluator.net
        saved = {}
        try:
            t0 = time.perf_counter()
            weights = self.reconstruction.weights(keep)
            self.last_refit_s = time.perf_counter() - t0
            for name, w in weights.items():
                param = net.get_submodule(name).weight
                saved[name] = param.detach().clone()
                param.copy_(w.to(param.device))
            return self.evaluator.evaluate(keep)
        finally:
            for name, w in saved.items():
                net.get_submodule(name).weight.copy_(w)
