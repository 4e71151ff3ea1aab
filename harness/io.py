"""Atomic file writes: a killed job never leaves a half-written file that a later job could read as a result.

Every result file of the suite (plans, models, checkpoints, metrics, logs that are rule outputs, tables,
figures) goes through :func:`atomic_write`: the bytes go to a hidden temp file in the destination's folder,
are flushed to disk, and the temp file is renamed over the destination (``os.replace``, atomic on POSIX).
A reader therefore sees either the old file, or no file, or the whole new file.

A writer killed with SIGKILL cannot delete its temp file. Temp names carry the writer's host and PID
(``.<name>.<host>-<pid>.<random>.tmp``), so the next write of the same destination removes the temp files of
writers on this host that are no longer alive; temp files of live writers and of other hosts are left alone.
"""
from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence


def _temp_prefix(path: Path, host: str) -> str:
    return f".{path.name}.{host}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete temp files that killed writers of ``path`` on this host left behind; return what was removed."""
    path = Path(path)
    prefix = _temp_prefix(path, socket.gethostname())
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        try:
            os.unlink(entry.path)
            removed.append(Path(entry.path))
        except FileNotFoundError:
            pass
    return removed


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then rename it to ``path``.

    On any exception (including KeyboardInterrupt) the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path, socket.gethostname())}{os.getpid()}.",
                               suffix=".tmp", dir=path.parent)
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


def write_csv(path: str | os.PathLike, columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write rows as CSV atomically, in ``columns`` order (keys outside ``columns`` are left out): search logs."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return write_text(path, buf.getvalue())


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy ``src`` to ``dst`` atomically (``shutil.copyfile`` writes the destination in place)."""
    return atomic_write(dst, lambda tmp: shutil.copyfile(src, tmp))


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` atomically."""
    import torch  # here, so that the tables and figures code can use this module without loading torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp))
