"""Score a candidate keep-plan on the search split, masked or physically pruned.

Two ways to the same number (``mode``):

* ``"masked"``: zero a pruned channel at the output of every layer that writes it (conv/linear filters, BN
  and other per-channel layers, on both inputs of a residual add). Numerically the same network as removing
  it: its consumers only ever see zeros. No copy per candidate, but every candidate costs the DENSE network.
* ``"pruned"``: a copy of the network with the channels physically removed (Torch-Pruning, the same
  ``apply_plan`` the prune stage uses), so a candidate costs what the pruned network costs. The surgery is
  a few percent of an evaluation (issue 13 measured 0.04-0.10 s on ResNet-20 against 2.5-4.5 s for BN
  passes and forward), so a candidate at MACs -70 % costs about a third of a masked one.

BN statistics are re-estimated for the candidate (spec decision 8); in the masked mode they are restored
after each call, so every evaluation starts from the same state. Only ``splits.search`` (held out from the
training set) and ``splits.train_plain`` are read; the test split never is.

Speed (docs/fast_jobs.md): the search split and the BN batches are loaded once as tensors on the device
(in-memory datasets are normalised there, :class:`harness.data.DeviceData`); a candidate costs the BN
forward passes plus the search-split forward passes in ``eval_batch_size`` chunks under
``torch.inference_mode``, with one host sync at the end. On CUDA the network and the data are channels_last
and run under bf16 autocast (``amp``; its default is on for CUDA only, off on the CPU).
"""
from __future__ import annotations

import contextlib
import copy
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from harness.data import DeviceData, make_loader, tensor_source
from harness.errors import UserError
from harness.prune.groups import Group, build_graph
from harness.prune.surgery import pruned_copy
from harness.search.writers import Writer, WriterIndex, channel_dim, mask_hook
from harness.train.bn import recalibrate_bn

KeepLike = Mapping[str, "torch.Tensor | Sequence[int]"]
#: SearchEvaluator's ``mode`` values: the search methods' ``candidate_eval`` option
CANDIDATE_MODES = ("masked", "pruned")


class SearchEvaluator:
    """Top-1 (percent) on the search split of the base model with only the channels of ``keep`` left.

    The evaluator works on its own deep copy of ``model`` (the caller's model is never touched); the search
    split and ``bn_batches`` batches of ``splits.train_plain`` (shuffled with ``bn_seed``, the same batches
    for every candidate, which lowers the variance between candidates) are preloaded once as tensors on
    ``device``. ``groups`` (optional) pre-resolves the masks; any conv/linear root id works otherwise.

    ``batch_size`` is the BN-recalibration batch (it shapes the batch statistics); the search split is
    scored in chunks of ``eval_batch_size`` (default ``batch_size``; any size gives the same accuracy, larger
    ones fewer kernel launches). ``amp``: bf16 autocast for the BN and search passes (None = on CUDA only).
    ``mode``: ``"masked"`` or ``"pruned"`` (module docstring); the same accuracy, different cost.
    """

    MODES = CANDIDATE_MODES

    def __init__(self, model: nn.Module, splits: Any, device: str | torch.device, *, bn_batches: int = 10,
                 batch_size: int = 256, example_input: torch.Tensor, groups: Sequence[Group] | None = None,
                 bn_seed: int = 0, eval_batch_size: int | None = None, amp: bool | None = None,
                 mode: str = "masked") -> None:
        if mode not in self.MODES:
            raise UserError(f"candidate evaluation mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode = mode
        if bn_batches < 0 or batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"bn_batches must be >= 0 and batch_size, eval_batch_size >= 1, got {bn_batches}, "
                             f"{batch_size}, {eval_batch_size}")
        self.device = torch.device(device)
        self.bn_batches = int(bn_batches)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        on_cuda = self.device.type == "cuda"
        self.amp = on_cuda if amp is None else bool(amp)
        # channels_last only on CUDA (see harness.train.loop: oneDNN's CPU kernels are not trusted with it)
        self._fmt = torch.channels_last if on_cuda else torch.contiguous_format
        src_device = next((p.device for p in model.parameters()), torch.device("cpu"))
        net = copy.deepcopy(model).to(src_device).eval()
        graph = build_graph(net, example_input.to(src_device))
        self.net = net.to(self.device, memory_format=self._fmt).eval()
        self._example = example_input.to(self.device)
        self._writers = WriterIndex(self.net, graph)  # same modules as the traced graph (moved in place)
        self._groups: dict[str, tuple[int, list[Writer]]] = {}  # id -> (size, writers of its channels)
        for g in groups or ():
            self._resolve(g.id)
        self._bns = [m for m in self.net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        self._bn_state = [{k: v.detach().clone() for k, v in m.named_buffers(recurse=False)} for m in self._bns]
        self.search_batches = self._preload(splits.search, self.eval_batch_size, None)
        self.bn_data = self._preload(splits.train_plain, self.batch_size, self.bn_batches, shuffle=True,
                                     seed=bn_seed) if self.bn_batches and self._bns else []
        if not self.search_batches:
            raise UserError("the search split is empty")

    # -- data ---------------------------------------------------------------------------------------------
    def _preload(self, ds: Any, batch_size: int, limit: int | None, *, shuffle: bool = False,
                 seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The first ``limit`` batches of ``make_loader(ds, batch_size, shuffle=shuffle, seed=seed)`` as device
        tensors: built on the device for in-memory datasets (same values), through the loader otherwise."""
        channels_last = self._fmt is torch.channels_last
        if tensor_source(ds) is not None:
            data = DeviceData.from_dataset(ds, self.device, channels_last=channels_last)
            return data.ordered(batch_size, shuffle=shuffle, seed=seed, limit=limit)
        out = []
        for batch in make_loader(ds, batch_size, shuffle=shuffle, seed=seed):
            if limit is not None and len(out) >= limit:
                break
            x, y = batch[0], batch[1]
            x = x.to(self.device)
            if x.dim() == 4:
                x = x.contiguous(memory_format=self._fmt)
            out.append((x, torch.as_tensor(y).view(-1).to(self.device)))
        return out

    def _autocast(self) -> contextlib.AbstractContextManager:
        if not self.amp:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    # -- masks --------------------------------------------------------------------------------------------
    def _resolve(self, gid: str) -> tuple[int, list[Writer]]:
        """Group ``gid``'s size and every module that writes its channels (:class:`WriterIndex`), once."""
        if gid not in self._groups:
            root = self.net.get_submodule(gid)
            size = int(root.out_channels if hasattr(root, "out_channels") else root.out_features)
            self._groups[gid] = (size, self._writers.resolve(gid))
        return self._groups[gid]

    @staticmethod
    def _kept(gid: str, idxs: "torch.Tensor | Sequence[int]", size: int) -> torch.Tensor:
        """Group ``gid``'s kept indices, sorted and unique; a one-line UserError when empty or out of range."""
        idx = torch.unique(torch.as_tensor(idxs, dtype=torch.long).view(-1))
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= size:
            raise UserError(f"group {gid}: keep indices must be non-empty and within [0, {size})")
        return idx

    def masks(self, keep: KeepLike) -> dict[nn.Module, torch.Tensor]:
        """Per writer module, a float 0/1 vector over its output channels (1 = kept)."""
        group_mask: dict[str, torch.Tensor] = {}
        touched: list[Writer] = []
        for gid, idxs in keep.items():
            size, writers = self._resolve(gid)
            idx = self._kept(gid, idxs, size)
            if idx.numel() == size:
                continue
            gm = torch.zeros(size)
            gm[idx] = 1.0
            group_mask[gid] = gm
            touched.extend(w for w in writers if w not in touched)
        host: list[torch.Tensor] = []
        for w in touched:
            mask = torch.ones(w.width)
            for gid, local, roots in w.parts:
                gm = group_mask.get(gid)
                if gm is not None:
                    mask[local] = gm[roots]
            host.append(mask)
        if not host:
            return {}
        # one host-to-device copy for all the masks, split into views on the device
        flat = torch.cat(host).to(self.device)
        return dict(zip((w.module for w in touched), flat.split([m.numel() for m in host])))

    def _pruned(self, keep: KeepLike) -> nn.Module:
        """A copy of the working network without the channels ``keep`` drops, BN re-estimated."""
        kept: dict[str, list[int]] = {}
        for gid, idxs in keep.items():
            size, _ = self._resolve(gid)
            idx = self._kept(gid, idxs, size)
            if idx.numel() < size:
                kept[gid] = idx.tolist()
        net = pruned_copy(self.net, kept, self._example, memory_format=self._fmt)
        if self.bn_data:
            with self._autocast():
                recalibrate_bn(net, self.bn_data, None, self.device)
        return net.eval()

    @contextlib.contextmanager
    def applied(self, keep: KeepLike) -> Iterator[nn.Module]:
        """The candidate network with BN recalibrated: the working copy with ``keep`` masked in (undone on
        exit), or a physically pruned copy (``mode="pruned"``, dropped on exit)."""
        if self.mode == "pruned":
            yield self._pruned(keep)
            return
        handles = []
        for m, mask in self.masks(keep).items():
            handles.append(m.register_forward_hook(mask_hook(mask, channel_dim(m))))
        try:
            if self.bn_data:
                with self._autocast():
                    recalibrate_bn(self.net, self.bn_data, None, self.device)
            self.net.eval()
            yield self.net
        finally:
            for h in handles:
                h.remove()
            with torch.no_grad():
                dst = [getattr(m, k) for m, state in zip(self._bns, self._bn_state) for k in state]
                src = [v for state in self._bn_state for v in state.values()]
                if dst:
                    torch._foreach_copy_(dst, src)  # one fused launch instead of three per BN layer
            self.net.eval()

    @property
    def images_per_candidate(self) -> int:
        """Images one evaluation runs through the network: the BN passes plus the search split (search cost)."""
        return sum(int(y.numel()) for _, y in self.bn_data) + sum(int(y.numel()) for _, y in self.search_batches)

    def evaluate(self, keep: KeepLike) -> float:
        """Top-1 percent on the search split with ``keep`` ({group id: kept root indices}; absent = whole)."""
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        with self.applied(keep) as net, torch.inference_mode(), self._autocast():
            for x, y in self.search_batches:
                pred = net(x).topk(1, dim=1).indices.view(-1)
                correct += (pred == y).sum()
                seen += y.numel()
        return 100.0 * int(correct) / seen  # the only host sync of the evaluation
