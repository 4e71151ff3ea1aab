"""The SGD training recipe: one frozen value that fully describes how a model is (re)trained."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import UserError

SCHEDULES = ("cosine", "step", "constant", "onecycle")
# auto: the device-resident path for in-memory tensor datasets on CUDA, the DataLoader otherwise
DATA_PATHS = ("auto", "device", "loader")
# torch.compile modes; "off" runs the model eagerly
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# the optimiser: SGD (momentum, nesterov) or Adam (a method's own faithful protocol, e.g. crl's `finetune: paper`)
OPTIMIZERS = ("sgd", "adam")

# Expected kind of every field, checked before the range checks (YAML can hand us strings).
_KINDS = {
    "epochs": "an integer", "batch_size": "an integer", "lr": "a number", "momentum": "a number",
    "nesterov": "a boolean", "weight_decay": "a number", "schedule": "a string",
    "milestones": "a list of numbers", "gamma": "a number", "warmup_epochs": "a number",
    "label_smoothing": "a number", "max_batches_per_epoch": "an integer or null",
    "num_workers": "an integer", "amp": "a boolean", "channels_last": "a boolean",
    "data_path": "a string", "compile": "a string", "optimizer": "a string",
}


def _has_kind(v: Any, kind: str) -> bool:
    def num(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool)

    if kind == "an integer":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "an integer or null":
        return v is None or (isinstance(v, int) and not isinstance(v, bool))
    if kind == "a number":
        return num(v)
    if kind == "a boolean":
        return isinstance(v, bool)
    if kind == "a string":
        return isinstance(v, str)
    return isinstance(v, tuple) and all(num(m) for m in v)


@dataclass(frozen=True)
class Recipe:
    """SGD hyper-parameters. Frozen and hashable so a recipe can be compared, logged and fingerprinted.

    ``milestones`` are fractions of the whole run (step schedule); ``warmup_epochs`` may be fractional;
    the schedule advances every iteration. ``amp`` (bf16 autocast) only takes effect on CUDA.
    ``max_batches_per_epoch`` caps an epoch (smoke tests, quick searches).

    ``data_path`` picks how batches reach the model (docs/fast_jobs.md): ``device`` keeps an in-memory
    tensor dataset (CIFAR, Fashion-MNIST, synthetic) on the device and augments there
    (``harness.data.DeviceData``), ``loader`` uses a DataLoader (ImageNet always does), ``auto`` is
    ``device`` for tensor datasets on CUDA and ``loader`` otherwise. ``compile`` wraps the model in
    ``torch.compile`` with that mode (``off``: eager, the default). ``optimizer``: ``sgd`` (momentum,
    nesterov) or ``adam`` (``momentum``/``nesterov`` unused; set nesterov false).
    """

    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[float, ...] = (0.5, 0.75)
    gamma: float = 0.1
    warmup_epochs: float = 0
    label_smoothing: float = 0.0
    max_batches_per_epoch: int | None = None
    num_workers: int = 0
    amp: bool = True
    channels_last: bool = True
    data_path: str = "auto"
    compile: str = "off"
    optimizer: str = "sgd"

    def __post_init__(self) -> None:
        # Normalise YAML lists to tuples so the dataclass stays hashable.
        if isinstance(self.milestones, (list, tuple)):
            object.__setattr__(self, "milestones", tuple(self.milestones))
        # YAML 1.1 reads `compile: off` as False (and `on`/`true` as True).
        if isinstance(self.compile, bool):
            object.__setattr__(self, "compile", "default" if self.compile else "off")
        # PyYAML reads "5e-4" (no dot) as a string; accept numeric strings for float fields.
        for name, kind in _KINDS.items():
            v = getattr(self, name)
            if kind == "a number" and isinstance(v, str):
                try:
                    object.__setattr__(self, name, float(v))
                except ValueError:
                    pass
        problems = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            kind = _KINDS[f.name]
            if not _has_kind(v, kind):
                problems.append(f"{f.name} must be {kind}, got {v!r}")
        if problems:  # range checks below assume the types are right
            raise UserError("invalid training recipe: " + "; ".join(problems))
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            problems.append(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and self.momentum == 0:
            problems.append("nesterov=true needs momentum > 0")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.schedule not in SCHEDULES:
            problems.append(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if any(not 0 < m < 1 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            problems.append(f"milestones must be increasing fractions in (0, 1), got {list(self.milestones)}")
        if not 0 < self.gamma <= 1:
            problems.append(f"gamma must be in (0, 1], got {self.gamma}")
        if not 0 <= self.warmup_epochs < self.epochs:
            problems.append(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs}")
        if not 0 <= self.label_smoothing < 1:
            problems.append(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.max_batches_per_epoch is not None and self.max_batches_per_epoch < 1:
            problems.append(f"max_batches_per_epoch must be >= 1 or null, got {self.max_batches_per_epoch}")
        if self.num_workers < 0:
            problems.append(f"num_workers must be >= 0, got {self.num_workers}")
        if self.data_path not in DATA_PATHS:
            problems.append(f"data_path must be one of {', '.join(DATA_PATHS)}, got {self.data_path!r}")
        if self.compile not in COMPILE_MODES:
            problems.append(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if problems:
            raise UserError("invalid training recipe: " + "; ".join(problems))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        """Build from a config mapping; an unknown key is a one-line UserError (typos must not be ignored)."""
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in d if k not in valid]
        if unknown:
            raise UserError(
                f"unknown training recipe key {unknown[0]!r}"
                + (f" (and {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else "")
                + f"; valid keys: {', '.join(valid)}"
            )
        missing = [f.name for f in dataclasses.fields(cls)
                   if f.default is dataclasses.MISSING and f.name not in d]
        if missing:
            raise UserError(f"training recipe is missing required key(s): {', '.join(missing)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-safe: milestones as a list)."""
        out = dataclasses.asdict(self)
        out["milestones"] = list(self.milestones)
        return out
