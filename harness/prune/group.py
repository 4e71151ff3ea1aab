"""A prunable channel group as plans and methods see it: plain data, importable without Torch-Pruning (so a stage
that only reads plans, like evaluate, starts without importing Torch-Pruning, timm and torchvision)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Group:
    """A prunable channel group: ``id`` = root module name, ``size`` = channels, ``members`` = touched modules."""

    id: str
    size: int
    members: tuple[str, ...]
    residual: bool

    def to_dict(self) -> dict:
        return {"id": self.id, "size": self.size, "members": list(self.members), "residual": self.residual}

    @classmethod
    def from_dict(cls, d: dict) -> "Group":
        return cls(id=str(d["id"]), size=int(d["size"]), members=tuple(str(m) for m in d["members"]),
                   residual=bool(d["residual"]))
