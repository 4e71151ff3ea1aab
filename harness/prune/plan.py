"""The pruning plan: which channels of which group a method keeps (plan.json, docs/architecture.md).

The plan is the only hand-off between a method and the rest of the pipeline (fine-tune, evaluate, collect):
it names groups by root module, so it can be re-applied to a freshly built base model.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from harness.errors import UserError
from harness.io import read_json, write_json
from harness.prune.budget import Budget
from harness.prune.group import Group

FORMAT = "prunebench-plan/1"


def validate_keep(gid: str, idxs: Sequence[int], size: int) -> None:
    """Kept indices must be sorted, unique, within ``[0, size)`` and at least one."""
    if len(idxs) == 0:
        raise UserError(f"group {gid} keeps no channel (at least 1 is required)")
    prev = -1
    for i in idxs:
        if isinstance(i, bool) or int(i) != i:
            raise UserError(f"group {gid} keep index {i!r} is not an integer")
        if not 0 <= i < size:
            raise UserError(f"group {gid} keep index {i} is outside [0, {size})")
        if i <= prev:
            raise UserError(f"group {gid} keep indices are not sorted and unique (at {i})")
        prev = i


@dataclass(frozen=True)
class PruningPlan:
    """A method's result: kept root channels per group (every prunable group, model order) + provenance."""

    method: str
    dataset: str
    arch: str
    seed: int
    budget: Budget
    groups: tuple[tuple[Group, tuple[int, ...]], ...]
    achieved: dict = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.budget, Budget):
            raise UserError(f"plan budget must be a Budget, got {type(self.budget).__name__}")
        norm, seen = [], set()
        for group, keep in self.groups:
            if group.id in seen:
                raise UserError(f"group {group.id} appears twice in the plan")
            seen.add(group.id)
            keep = tuple(int(i) for i in keep)
            validate_keep(group.id, keep, group.size)
            norm.append((group, keep))
        object.__setattr__(self, "groups", tuple(norm))

    @classmethod
    def from_keep(cls, *, method: str, dataset: str, arch: str, seed: int, budget: Budget,
                  groups: Sequence[Group], keep: Mapping[str, Sequence[int]], achieved: dict | None = None,
                  meta: dict | None = None) -> "PruningPlan":
        """A plan listing every group of ``groups``; groups missing from ``keep`` keep all their channels."""
        unknown = sorted(set(keep) - {g.id for g in groups})
        if unknown:
            raise UserError(f"keep names unknown groups: {', '.join(unknown[:5])}")
        return cls(method=method, dataset=dataset, arch=arch, seed=int(seed), budget=budget,
                   groups=tuple((g, tuple(sorted(int(i) for i in keep.get(g.id, range(g.size))))) for g in groups),
                   achieved=dict(achieved or {}), meta=dict(meta or {}))

    @property
    def keep(self) -> dict[str, list[int]]:
        return {g.id: list(k) for g, k in self.groups}

    @property
    def keep_counts(self) -> dict[str, int]:
        return {g.id: len(k) for g, k in self.groups}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "method": self.method, "dataset": self.dataset, "arch": self.arch,
            "seed": int(self.seed), "budget": self.budget.to_dict(),
            "groups": [{**g.to_dict(), "keep": list(k)} for g, k in self.groups],
            "achieved": _plain(self.achieved), "meta": _plain(self.meta),
        }

    def to_json(self, path: str | os.PathLike) -> None:
        """Write plan.json atomically (indented, key-sorted)."""
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str = "plan") -> "PruningPlan":
        if not isinstance(d, Mapping) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise UserError(f"{source}: format {got!r} is not {FORMAT}")
        try:
            groups = tuple((Group.from_dict(g), tuple(g["keep"])) for g in d["groups"])
            return cls(method=d["method"], dataset=d["dataset"], arch=d["arch"], seed=int(d["seed"]),
                       budget=Budget.from_dict(d["budget"]), groups=groups, achieved=dict(d.get("achieved", {})),
                       meta=dict(d.get("meta", {})))
        except KeyError as exc:
            raise UserError(f"{source}: missing field {exc.args[0]!r}") from exc
        except UserError as exc:
            raise UserError(f"{source}: {exc}") from exc

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "PruningPlan":
        try:
            d = read_json(path)
        except FileNotFoundError as exc:
            raise UserError(f"plan {os.fspath(path)} does not exist") from exc
        except ValueError as exc:
            raise UserError(f"plan {os.fspath(path)} is not valid JSON: {exc}") from exc
        return cls.from_dict(d, source=os.fspath(path))


def _plain(obj: Any) -> Any:
    """JSON-safe copy (numpy scalars, tuples, paths)."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (str, bool, int, float)) or obj is None:
        return obj
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)
