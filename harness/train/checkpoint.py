"""Per-epoch training checkpoints with a sha256 sidecar: a truncated or garbled file is detected, never used.

Layout in the checkpoint folder: ``epoch-0003.pt`` plus ``epoch-0003.pt.sha256`` (hex digest and byte size).
Both are written atomically, payload first, so a checkpoint without its sidecar is one whose writer was
killed in between: it counts as invalid, and resuming falls back to the previous epoch.
"""
from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Callable

import torch

from harness.errors import CorruptCheckpoint
from harness.io import torch_save, write_text

log = logging.getLogger(__name__)

_NAME = re.compile(r"^epoch-(\d{4,})\.pt$")


def checkpoint_path(directory: Path, epoch: int) -> Path:
    return Path(directory) / f"epoch-{epoch:04d}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(epoch, path)`` of every checkpoint file in ``directory``, newest first (valid or not)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def save_checkpoint(directory: Path, epoch: int, state: dict[str, Any], *, keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``epoch`` (atomic file + sidecar) and keep the newest ``keep``."""
    path = checkpoint_path(directory, epoch)
    _sidecar(path).unlink(missing_ok=True)  # an old sidecar must never vouch for a new payload
    torch_save(state, path)
    write_text(_sidecar(path), f"{sha256_file(path)} {path.stat().st_size}\n")
    for _, old in list_checkpoints(directory)[keep:]:
        remove_checkpoint(old)
    return path


def remove_checkpoint(path: Path) -> None:
    Path(path).unlink(missing_ok=True)
    _sidecar(Path(path)).unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Verify size and sha256 against the sidecar, then load (``weights_only``: no code runs from the file).

    Raises :class:`CorruptCheckpoint` for anything wrong: missing/garbled sidecar, size or digest mismatch,
    a payload torch cannot read, or one that is not a checkpoint dict.
    """
    path = Path(path)
    side = _sidecar(path)
    try:
        fields = side.read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptCheckpoint(f"{path}: no readable checksum file {side.name} ({e.__class__.__name__})") from e
    if len(fields) != 2 or not re.fullmatch(r"[0-9a-f]{64}", fields[0]) or not fields[1].isdigit():
        raise CorruptCheckpoint(f"{path}: malformed checksum file {side.name}")
    digest, size = fields[0], int(fields[1])
    try:
        actual_size = path.stat().st_size
    except OSError as e:
        raise CorruptCheckpoint(f"{path}: cannot stat ({e})") from e
    if actual_size != size:
        raise CorruptCheckpoint(f"{path}: size {actual_size} bytes, expected {size} (truncated?)")
    if sha256_file(path) != digest:
        raise CorruptCheckpoint(f"{path}: sha256 mismatch")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad pickles/zips
        raise CorruptCheckpoint(f"{path}: unreadable ({e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"{path}: not a checkpoint dict")
    return state


def load_latest_checkpoint(
    directory: Path, accept: Callable[[dict[str, Any]], str | None] | None = None
) -> tuple[int, dict[str, Any]] | None:
    """The newest valid checkpoint as ``(epoch, state)``, or None to start from scratch.

    Invalid checkpoints (corrupt, or refused by ``accept``, which returns a reason string to refuse) are
    logged as warnings and deleted, so a later run does not trip over them again; the search then falls
    back to the next older one. Temp files of writes that were killed midway are removed too.
    """
    if Path(directory).is_dir():
        for tmp in Path(directory).glob(".epoch-*.tmp"):
            tmp.unlink(missing_ok=True)
    for epoch, path in list_checkpoints(directory):
        try:
            state = load_checkpoint(path)
            if state.get("epoch") != epoch:
                raise CorruptCheckpoint(f"{path}: records epoch {state.get('epoch')!r}, file name says {epoch}")
            reason = accept(state) if accept is not None else None
            if reason:
                raise CorruptCheckpoint(f"{path}: {reason}")
        except CorruptCheckpoint as e:
            log.warning("ignoring invalid checkpoint: %s; falling back to an older one or to scratch", e)
            remove_checkpoint(path)
            continue
        return epoch, state
    return None
