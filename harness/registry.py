"""Method registry: pruning methods plug in by name; the harness never imports them.

A plugin module (in ``baselines/`` or ``method/``) decorates ``fn(ctx: PruneContext) -> {group id: kept
channel indices}`` with :func:`register_method`; :func:`load_plugins` imports every module of the plugin
packages so they register themselves. A method's options are a frozen dataclass built from the config with
:func:`options_from_dict` (unknown keys are errors, not silently ignored).
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from harness.errors import BudgetNotMet, UserError
from harness.prune.budget import METRICS, Budget, check_budget, min_keep
from harness.prune.cost import CostModel
from harness.prune.groups import Group
from harness.prune.unstructured import WeightSparsity, sparse_cost

Keep = dict[str, list[int]]
#: What a method returns: kept channels per group (structured), or per-layer zeroed weights (unstructured,
#: ``register_method(..., structured=False)``; see harness.prune.unstructured).
Result = Keep | WeightSparsity


@dataclass(frozen=True)
class EmptyOptions:
    """Options of a method that has none."""


@dataclass(frozen=True)
class PruneContext:
    """Everything a method may use: the trained base model (eval mode), its groups and cost model, the budget.

    ``splits`` (harness.data.Splits) is None for data-free methods and tests; ``workdir`` is the method's own
    folder for logs and resumable state; ``arch`` only names the model in error messages. ``meta``: JSON-safe
    facts a method adds to plan.json's ``meta`` (the key ``finetune_recipe``, a recipe mapping, replaces the
    common fine-tune recipe for this plan: a method's own faithful protocol, off by default).
    """

    model: nn.Module
    example_input: torch.Tensor
    groups: Sequence[Group]
    cost: CostModel
    budget: Budget
    min_keep_fraction: float
    splits: Any
    device: Any
    seed: int
    options: Any
    workdir: Path
    arch: str = ""
    meta: dict = field(default_factory=dict)

    def min_keep(self, group: Group) -> int:
        """Channels ``group`` must keep: ``max(1, ceil(min_keep_fraction * size))``."""
        return min_keep(group, self.min_keep_fraction)

    def verify(self, keep: Mapping[str, Sequence[int]] | WeightSparsity, method: str = "method") -> Result:
        """Check a method's result (known groups, valid indices, min_keep, budget by the CostModel); return it clean.

        Raises :class:`BudgetNotMet` when the CostModel says the budget is missed: never write an infeasible plan.
        An unstructured result (:class:`WeightSparsity`) is checked with dense MACs and non-zero params.
        """
        if isinstance(keep, WeightSparsity):
            try:
                check_budget(self.cost.base, sparse_cost(self.cost.base, keep), self.budget)
            except BudgetNotMet as exc:
                raise BudgetNotMet(f"{method}: {exc}") from exc
            return keep
        by_id = {g.id: g for g in self.groups}
        clean: Keep = {}
        for gid, idxs in keep.items():
            group = by_id.get(gid)
            if group is None:
                raise ValueError(f"{method} returned unknown group {gid!r}")
            idxs = [int(i) for i in idxs]
            if idxs != sorted(set(idxs)) or (idxs and not 0 <= idxs[0] <= idxs[-1] < group.size):
                raise ValueError(f"{method}: group {gid} keep indices are not sorted, unique and in [0, {group.size})")
            if len(idxs) < self.min_keep(group):
                raise ValueError(f"{method}: group {gid} keeps {len(idxs)} < min_keep {self.min_keep(group)}")
            clean[gid] = idxs
        pruned = self.cost.cost({gid: len(v) for gid, v in clean.items()})
        try:
            check_budget(self.cost.base, pruned, self.budget)
        except BudgetNotMet as exc:
            raise BudgetNotMet(f"{method}: {exc}") from exc
        return clean


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``fn(ctx) -> keep``, its options dataclass, and whether it prunes structurally.

    ``budget_metrics``: the budget metrics it can meet (an unstructured method cannot lower dense MACs);
    the workflow grid skips the others and the prune stage rejects them. ``search_log``: the method writes
    ``search_log.csv`` (one row per episode or update) in its workdir; its rule must declare it as an output
    next to plan.json, and the collect stage gathers it into results/tables/search_logs.csv.
    """

    name: str
    fn: Callable[[PruneContext], Result]
    options: type
    structured: bool = True
    description: str = ""
    budget_metrics: tuple[str, ...] = METRICS
    search_log: bool = False

    def supports(self, metric: str) -> bool:
        return metric in self.budget_metrics

    def __call__(self, ctx: PruneContext) -> Result:
        """Run the method and verify its result (see :meth:`PruneContext.verify`)."""
        if not self.supports(ctx.budget.metric):
            raise UserError(f"method {self.name!r} cannot meet a {ctx.budget.metric} budget "
                            f"(it supports: {', '.join(self.budget_metrics)})")
        return ctx.verify(self.fn(ctx), self.name)


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(name: str, *, options: type = EmptyOptions, structured: bool = True,
                    description: str = "", budget_metrics: Sequence[str] = METRICS, search_log: bool = False,
                    ) -> Callable[[Callable[[PruneContext], Result]], Callable[[PruneContext], Result]]:
    """Decorator: register ``fn(ctx) -> {group id: kept indices}`` under ``name`` (groups omitted stay whole).

    An unstructured method (``structured=False``) returns a :class:`WeightSparsity` instead.
    """
    budget_metrics = tuple(budget_metrics)
    if not budget_metrics or any(m not in METRICS for m in budget_metrics):
        raise TypeError(f"budget_metrics of method {name!r} must be a non-empty subset of {METRICS}")
    if not dataclasses.is_dataclass(options) or not isinstance(options, type) \
            or not options.__dataclass_params__.frozen:  # type: ignore[attr-defined]
        raise TypeError(f"options of method {name!r} must be a frozen dataclass type")

    def wrap(fn: Callable[[PruneContext], Result]) -> Callable[[PruneContext], Result]:
        old = _REGISTRY.get(name)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (fn.__module__, fn.__qualname__):
            raise UserError(f"method {name!r} is registered twice ({old.fn.__module__} and {fn.__module__})")
        _REGISTRY[name] = MethodSpec(name, fn, options, structured, description or (fn.__doc__ or "").strip(),
                                     budget_metrics, bool(search_log))
        return fn

    return wrap


def method_names() -> list[str]:
    return sorted(_REGISTRY)


def get_method(name: str) -> MethodSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(method_names()) or "none (were the plugins loaded?)"
        raise UserError(f"unknown pruning method {name!r}; known methods: {known}") from None


def learner_config(cls: type, options: Any, **overrides: Any) -> Any:
    """``cls`` (a learner's config dataclass) from the same-named fields of a method's flat ``options``.

    Methods expose their learner's knobs (PPO, DDPG, ...) as flat config options under the learner's own
    names; this copies them over instead of a hand-written keyword list that must track both classes.
    ``overrides`` set the fields whose option has another name or that come from the context; they win over
    a same-named option.
    """
    names = {f.name for f in dataclasses.fields(cls)} & {f.name for f in dataclasses.fields(options)}
    return cls(**{**{n: getattr(options, n) for n in names}, **overrides})


def options_from_dict(name: str, d: Mapping[str, Any] | None) -> Any:
    """The method's frozen options from a config mapping; an unknown key is a one-line UserError."""
    cls = get_method(name).options
    d = dict(d or {})
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in d:
        if key not in valid:
            raise UserError(f"method {name!r} has no option {key!r}; valid options: {', '.join(valid) or 'none'}")
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    except (TypeError, ValueError) as exc:
        raise UserError(f"method {name!r} options: {exc}") from exc


def load_plugins(packages: Sequence[str] = ("baselines", "method")) -> list[str]:
    """Import every module of each plugin package (so its methods register); a missing package is skipped."""
    loaded = []
    for pkg_name in packages:
        try:
            pkg = importlib.import_module(pkg_name)
        except ModuleNotFoundError as exc:
            if exc.name == pkg_name:
                continue
            raise
        loaded.append(pkg_name)
        for info in sorted(pkgutil.walk_packages(getattr(pkg, "__path__", []), prefix=pkg_name + "."),
                           key=lambda i: i.name):
            importlib.import_module(info.name)
            loaded.append(info.name)
    return loaded
