"""The reward of a terminal state (A.2, A.4): top-1 of the masked base network after the inner fine-tune.

Per episode, as the official environment does it: start from the pretrained weights, apply the masks
(crl-neuron: every channel of a group multiplied by its keep-score, soft or 0/1; crl-layer: the zeroed
weights, kept at zero through the fine-tune), run ``k`` Adam iterations (lr 3e-4, batch 60, augmented
training images, BN in train mode) with a **fresh optimiser** (the code carried the Adam moments from
episode to episode: fixed, A.9.7), then measure top-1 in percent on ``reward_samples`` images:
random augmented training images (the code's ``use_train_data``) or the fixed search split. The test split
is never read. All randomness comes from the ``seed`` passed per episode, so a resumed search draws the
same batches.

``mode="pruned"`` (issue 13) scores a hard channel plan on a physically pruned copy instead
(:func:`harness.prune.surgery.pruned_copy`, the random-search and graph-RL evaluator's path): the same
network as the 0/1 masks, so the same accuracy, at the pruned network's cost. Soft scores and crl-layer's
unstructured weight masks cannot be removed physically and are always masked.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from harness.errors import UserError
from harness.prune.groups import Group
from harness.prune.surgery import pruned_copy
from harness.search.channel_masks import ChannelMasker
from harness.train.bn import recalibrate_bn


def fetch(ds: Any, idx: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of ``ds`` at ``idx`` (one batched call for the suite's in-memory datasets)."""
    idx = [int(i) for i in idx]
    items = ds.__getitems__(idx) if hasattr(ds, "__getitems__") else [ds[i] for i in idx]
    return torch.stack([x for x, _ in items]), torch.as_tensor([int(y) for _, y in items], dtype=torch.long)


class EpisodeScorer:
    """Scores masked versions of ``model`` on its own copy (the caller's model is never touched)."""

    def __init__(self, model: nn.Module, splits: Any, device: Any, example_input: torch.Tensor, *,
                 groups: Sequence[Group] | None = None, reward_split: str = "train", reward_samples: int = 20_000,
                 reward_batch_size: int = 512, finetune_batch_size: int = 60, finetune_lr: float = 3e-4,
                 bn_batches: int = 0, bn_batch_size: int = 256, mode: str = "masked") -> None:
        if splits is None:
            raise UserError("the constrained-RL search needs data (splits)")
        if mode not in ("masked", "pruned"):
            raise UserError(f"candidate evaluation mode must be masked or pruned, got {mode!r}")
        self.mode = mode
        self.example_input = example_input.to(device)
        self.device = torch.device(device)
        self.net = copy.deepcopy(model).to(self.device).eval()
        self.base_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
        self._dirty = False
        self.masker = ChannelMasker(self.net, example_input, groups) if groups else None
        self.train = splits.train
        self.reward_split = reward_split
        self.reward_samples = int(reward_samples)
        self.reward_batch_size = int(reward_batch_size)
        self.finetune_batch_size = int(finetune_batch_size)
        self.finetune_lr = float(finetune_lr)
        self.search_batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        if reward_split == "search":
            n = min(self.reward_samples, len(splits.search))
            for s in range(0, n, self.reward_batch_size):
                x, y = fetch(splits.search, range(s, min(n, s + self.reward_batch_size)))
                self.search_batches.append((x.to(self.device), y.to(self.device)))
            if not self.search_batches:
                raise UserError("the search split is empty")
        elif len(self.train) < 1:
            raise UserError("the training split is empty")
        self.bn_data: list[tuple[torch.Tensor, torch.Tensor]] = []
        if bn_batches:
            g = torch.Generator().manual_seed(0)
            perm = torch.randperm(len(splits.train_plain), generator=g)
            for b in range(bn_batches):
                idx = perm[b * bn_batch_size:(b + 1) * bn_batch_size]
                if idx.numel() == 0:
                    break
                x, y = fetch(splits.train_plain, idx.tolist())
                self.bn_data.append((x.to(self.device), y.to(self.device)))

    def images_per_episode(self, finetune_iters: int) -> int:
        """Images one episode's score runs through the network (search cost): the inner fine-tune's batches,
        the BN passes and the reward images."""
        reward = (sum(int(y.numel()) for _, y in self.search_batches) if self.reward_split == "search" else
                  max(1, self.reward_samples // self.reward_batch_size) * min(self.reward_batch_size, self.reward_samples))
        bn = sum(int(y.numel()) for _, y in self.bn_data)
        return int(finetune_iters) * self.finetune_batch_size + bn + reward

    # ------------------------------------------------------------------------------------------ masks
    def _reset(self) -> None:
        if self._dirty:
            self.net.load_state_dict(self.base_state)
            self._dirty = False

    @torch.no_grad()
    def _mask_weights(self, masks: Mapping[str, torch.Tensor]) -> None:
        for name, mask in masks.items():
            w = self.net.get_submodule(name).weight
            w.mul_(mask.to(w.device, w.dtype))
        self._dirty = True

    # ------------------------------------------------------------------------------------------ scoring
    def score(self, *, channel_scores: Mapping[str, torch.Tensor] | None = None,
              weight_masks: Mapping[str, torch.Tensor] | None = None, keep: Mapping[str, Sequence[int]] | None = None,
              finetune_iters: int = 0, seed: int = 0) -> float:
        """Top-1 (percent) of the base network with the masks, after ``finetune_iters`` Adam iterations.

        ``keep`` ({group id: kept channels}) is the hard plan the scores stand for: in ``mode="pruned"`` that
        plan is scored on a physically pruned copy, and ``channel_scores`` must then be 0/1."""
        if self.mode == "pruned" and keep is not None and not weight_masks:
            return self._score_pruned(keep, channel_scores, int(finetune_iters), seed)
        self._reset()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # augmentation draws from the global RNG
            gen = torch.Generator().manual_seed(seed)
            try:
                if channel_scores:
                    if self.masker is None:
                        raise UserError("channel scores need the scorer to be built with the groups")
                    self.masker.apply(channel_scores)
                if weight_masks:
                    self._mask_weights(weight_masks)
                if finetune_iters > 0:
                    self._dirty = True
                    self._finetune(self.net, int(finetune_iters), weight_masks or {}, gen)
                if self.bn_data:
                    recalibrate_bn(self.net, self.bn_data, None, self.device)
                    self._dirty = True
                return self._accuracy(self.net, gen)
            finally:
                if self.masker is not None:
                    self.masker.remove()
                self.net.eval()

    def _score_pruned(self, keep: Mapping[str, Sequence[int]], channel_scores: Mapping[str, torch.Tensor] | None,
                      finetune_iters: int, seed: int) -> float:
        """The plan ``keep`` on a physically pruned copy of the base weights (fine-tune, BN, top-1 as masked)."""
        for gid, s in (channel_scores or {}).items():
            hard = torch.as_tensor(s)
            if not bool(((hard == 0) | (hard == 1)).all()):
                raise UserError(f"group {gid}: candidate_eval pruned scores hard plans only (set soft_actions "
                                "false, or candidate_eval masked)")
        self._reset()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            net = pruned_copy(self.net, {g: list(v) for g, v in keep.items()}, self.example_input).eval()
            if finetune_iters > 0:
                self._finetune(net, finetune_iters, {}, gen)
            if self.bn_data:
                recalibrate_bn(net, self.bn_data, None, self.device)
            return self._accuracy(net, gen)

    def _finetune(self, net: nn.Module, iters: int, weight_masks: Mapping[str, torch.Tensor],
                  gen: torch.Generator) -> None:
        opt = torch.optim.Adam(net.parameters(), lr=self.finetune_lr)  # fresh per episode (A.9.7)
        loss_fn = nn.CrossEntropyLoss()
        net.train()
        n = len(self.train)
        for _ in range(iters):
            idx = torch.randint(n, (self.finetune_batch_size,), generator=gen)
            x, y = fetch(self.train, idx.tolist())
            loss = loss_fn(net(x.to(self.device)), y.to(self.device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if weight_masks:
                self._mask_weights(weight_masks)  # masked weights stay zero, as MaskedConv2d keeps them
        net.eval()

    @torch.no_grad()
    def _accuracy(self, net: nn.Module, gen: torch.Generator) -> float:
        net.eval()
        correct = seen = 0
        if self.reward_split == "search":
            batches = self.search_batches
        else:
            n_batches = max(1, self.reward_samples // self.reward_batch_size)
            size = min(self.reward_batch_size, self.reward_samples)
            perm = torch.randperm(len(self.train), generator=gen)[: n_batches * size]
            batches = (fetch(self.train, perm[b * size:(b + 1) * size].tolist()) for b in range(n_batches))
        for x, y in batches:
            pred = net(x.to(self.device)).argmax(1)
            correct += int((pred == y.to(self.device)).sum())
            seen += int(y.numel())
        return 100.0 * correct / max(seen, 1)
