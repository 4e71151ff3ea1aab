"""Atomic file writes: a killed job never leaves a half-written file that a later job could read as a result."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable



def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be read by others
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (temp file in the same folder, then rename)."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return atomic_write(path, write)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically, indented and key-sorted so diffs stay readable."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically."""
    import torch  # here, so that the tables and figures code can use this module without loading torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
