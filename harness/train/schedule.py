"""SGD optimizer and per-iteration learning-rate schedules built from a :class:`Recipe` (torch scheduler classes)."""
from __future__ import annotations

from torch import nn
from torch.optim import SGD, Adam, Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    SequentialLR,
)

from harness.train.recipe import Recipe


def build_optimizer(model: nn.Module, recipe: Recipe) -> Optimizer:
    """SGD over every trainable parameter, weight decay on all of them (the usual CIFAR ResNet recipe);
    Adam (torch defaults, the recipe's lr and weight decay) for ``optimizer: adam``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if getattr(recipe, "optimizer", "sgd") == "adam":
        return Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return SGD(
        params,
        lr=recipe.lr,
        momentum=recipe.momentum,
        nesterov=recipe.nesterov,
        weight_decay=recipe.weight_decay,
    )


def build_scheduler(optimizer: Optimizer, recipe: Recipe, steps_per_epoch: int) -> LRScheduler:
    """A scheduler to be stepped once per iteration, ``recipe.epochs * steps_per_epoch`` steps in total.

    - cosine: linear warm-up, then cosine annealing to 0 at the last iteration;
    - step: warm-up, then ``lr * gamma**k`` after the k-th milestone (fractions of the whole run);
    - constant: warm-up, then ``lr``;
    - onecycle: :class:`OneCycleLR` (its own warm-up: ``warmup_epochs`` if set, else 30 % of the run);
      momentum is not cycled, so the recipe's momentum holds throughout.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    total = recipe.epochs * steps_per_epoch
    warm = min(int(round(recipe.warmup_epochs * steps_per_epoch)), total - 1)

    if recipe.schedule == "onecycle" and total >= 2:
        # Peak at iteration ``warm``, as with the linear warm-up of the other schedules.
        pct = (warm + 1) / total if warm > 0 else 0.3
        # OneCycleLR divides by the length of each phase: keep both phases non-empty on tiny runs.
        pct = min(max(pct, 1.5 / total), 1 - 0.5 / total)
        return OneCycleLR(
            optimizer,
            max_lr=recipe.lr,
            total_steps=total,
            pct_start=pct,
            anneal_strategy="cos",
            cycle_momentum=False,
        )
    if recipe.schedule == "onecycle":  # a single iteration: nothing to cycle
        return ConstantLR(optimizer, factor=1.0, total_iters=0)

    rest = total - warm
    main: LRScheduler
    if recipe.schedule == "cosine":
        main = CosineAnnealingLR(optimizer, T_max=rest, eta_min=0.0)
    elif recipe.schedule == "step":
        # Milestones are fractions of the whole run; the main scheduler counts from the end of warm-up.
        milestones = sorted({max(1, int(round(m * total)) - warm) for m in recipe.milestones})
        main = MultiStepLR(optimizer, milestones=milestones, gamma=recipe.gamma)
    elif recipe.schedule == "constant":
        main = ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:  # Recipe validation makes this unreachable
        raise ValueError(f"unknown schedule {recipe.schedule!r}")
    if warm == 0:
        return main
    warmup = LinearLR(optimizer, start_factor=1.0 / (warm + 1), end_factor=1.0, total_iters=warm)
    return SequentialLR(optimizer, schedulers=[warmup, main], milestones=[warm])
