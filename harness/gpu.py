"""GPU lease for local Snakemake jobs.

Snakemake's ``resources: gpu=1`` only counts jobs; it does not say *which* GPU a local job gets, so two
jobs would both land on GPU 0. Each GPU job calls :func:`lease_device` first thing: it takes an exclusive
``flock`` on ``<lock_dir>/gpu<i>.lock`` for the first free GPU ``i`` and pins the process to it with
``CUDA_VISIBLE_DEVICES`` before CUDA initialises. The kernel drops a ``flock`` when its holder dies, so a
killed job never leaves a stale lease. On a cluster that already set ``CUDA_VISIBLE_DEVICES`` (SLURM),
the scheduler's choice is used as is.

This module imports torch only when it has to count real GPUs, so leasing is cheap.
"""
from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from harness.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_LOCK_DIR = "/tmp/prunebench-gpu-locks"
DEFAULT_WAIT_S = 24 * 3600.0  # a queued job may wait behind a long training run
_HELD: list["Lease"] = []  # keeps lock descriptors open for the life of the process


@dataclass(eq=False)  # leases are distinct objects even when they describe the same device
class Lease:
    """The device a job runs on. ``source``: "cluster" (CUDA_VISIBLE_DEVICES was preset, no lock),
    "lease" (we hold the lock of GPU ``index``) or "cpu" (no GPU). Usable as a context manager; if never
    released, the lock is held until the process exits."""

    device: str
    index: int | None
    source: str
    lock_path: Path | None = None
    _fd: int | None = field(default=None, repr=False, compare=False)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Give the GPU back (idempotent). CUDA_VISIBLE_DEVICES is left as is: CUDA is bound already."""
        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None
            _HELD[:] = [h for h in _HELD if h is not self]

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def lease_device(
    *,
    lock_dir: str | os.PathLike | None = None,
    device_count: int | None = None,
    timeout_s: float | None = None,
    poll_s: float = 2.0,
) -> Lease:
    """Pick the device for this process; call before anything touches CUDA.

    ``device_count`` (or env ``PRUNEBENCH_FAKE_GPU_COUNT``, for tests) replaces GPU detection.
    ``lock_dir`` defaults to env ``PRUNEBENCH_GPU_LOCK_DIR`` or ``/tmp/prunebench-gpu-locks``; if every
    GPU is leased, waits up to ``timeout_s`` (default env ``PRUNEBENCH_GPU_WAIT_S`` or 24 h), polling every
    ``poll_s`` seconds, then raises :class:`UserError`.
    """
    preset = os.environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        visible = preset.strip()
        if visible in ("", "-1"):
            log.info("CUDA_VISIBLE_DEVICES=%r hides every GPU: running on CPU", preset)
            return Lease("cpu", None, "cluster")
        if _device_count(device_count) == 0:
            log.warning("CUDA_VISIBLE_DEVICES=%r is set but CUDA finds no GPU: running on CPU", preset)
            return Lease("cpu", None, "cluster")
        log.info("using the GPU(s) the cluster assigned: CUDA_VISIBLE_DEVICES=%s", preset)
        return Lease("cuda", None, "cluster")

    n = _device_count(device_count)
    if n == 0:
        log.warning("no GPU found, running on CPU")
        return Lease("cpu", None, "cpu")

    directory = Path(lock_dir or os.environ.get("PRUNEBENCH_GPU_LOCK_DIR") or DEFAULT_LOCK_DIR)
    _make_lock_dir(directory)
    if timeout_s is None:
        timeout_s = float(os.environ.get("PRUNEBENCH_GPU_WAIT_S", DEFAULT_WAIT_S))
    start = time.monotonic()
    next_note = start
    while True:
        for i in range(n):
            path = directory / f"gpu{i}.lock"
            fd = _try_lock(path)
            if fd is None:
                continue
            return _bind(Lease("cuda", i, "lease", path, fd), waited=time.monotonic() - start)
        waited = time.monotonic() - start
        if waited >= timeout_s:
            raise UserError(
                f"all {n} GPUs are leased by other jobs ({_holders(directory, n)}; locks in {directory}); "
                f"gave up after {waited:.0f}s: run fewer GPU jobs at once (snakemake --resources gpu={n}) "
                f"or raise PRUNEBENCH_GPU_WAIT_S"
            )
        if time.monotonic() >= next_note:
            log.warning("all %d GPUs are busy (%s; locks in %s): waiting for one, up to %.0fs more",
                        n, _holders(directory, n), directory, timeout_s - waited)
            next_note = time.monotonic() + 60.0
        time.sleep(max(0.0, min(poll_s, timeout_s - waited)))


def _bind(lease: Lease, waited: float) -> Lease:
    """Pin the process to the leased GPU, keep the lock alive, and say so."""
    os.environ["CUDA_VISIBLE_DEVICES"] = str(lease.index)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        # Too late for CUDA_VISIBLE_DEVICES to act: address the leased GPU explicitly instead.
        log.warning("CUDA was initialised before the GPU lease; using cuda:%d explicitly", lease.index)
        lease.device = f"cuda:{lease.index}"
    _HELD.append(lease)
    log.info("leased GPU %d (%s)%s", lease.index, lease.lock_path,
             f" after waiting {waited:.0f}s" if waited >= 1 else "")
    return lease


def _try_lock(path: Path) -> int | None:
    """An open descriptor holding an exclusive flock on ``path``, or None if another process holds it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        writable = True
    except PermissionError:  # another user's lock file: flock works on a read-only descriptor too
        fd = os.open(path, os.O_RDONLY)
        writable = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    if writable:  # who holds it, for the waiting message; best effort
        try:
            os.fchmod(fd, 0o666)
        except OSError:
            pass
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        except OSError:
            pass
    return fd


def _holders(directory: Path, n: int) -> str:
    out = []
    for i in range(n):
        try:
            who = (directory / f"gpu{i}.lock").read_text().strip()
        except OSError:
            who = ""
        out.append(f"gpu{i}: {who or 'unknown holder'}")
    return ", ".join(out)


def _make_lock_dir(directory: Path) -> None:
    if directory.is_dir():
        return
    directory.mkdir(parents=True, exist_ok=True)
    try:  # shared by every user's jobs on this machine, like /tmp
        os.chmod(directory, 0o1777)
    except OSError:
        pass


def _device_count(override: int | None) -> int:
    """GPU count: the argument, else env PRUNEBENCH_FAKE_GPU_COUNT, else detection that leaves CUDA
    uninitialised in this process (NVML, or a child process), so CUDA_VISIBLE_DEVICES can still act."""
    if override is not None:
        return max(0, int(override))
    fake = os.environ.get("PRUNEBENCH_FAKE_GPU_COUNT")
    if fake is not None and fake.strip():
        try:
            return max(0, int(fake))
        except ValueError:
            raise UserError(f"PRUNEBENCH_FAKE_GPU_COUNT must be an integer, got {fake!r}") from None
    try:
        import torch
    except ImportError:
        return 0
    if not torch.backends.cuda.is_built():
        return 0
    if torch.cuda.is_initialized() or "CUDA_VISIBLE_DEVICES" in os.environ:
        return torch.cuda.device_count()
    count = _nvml_device_count()
    if count is not None:
        return count
    if torch.version.hip is None and not os.path.exists("/proc/driver/nvidia"):
        return 0  # no NVIDIA driver loaded: skip the slow child-process probe
    return _child_device_count()


def _nvml_device_count() -> int | None:
    """Count GPUs through NVML (the driver's management library), which does not initialise CUDA."""
    try:
        nvml = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    try:
        if nvml.nvmlInit_v2() != 0:
            return None
    except AttributeError:
        return None
    try:
        count = ctypes.c_uint(0)
        if nvml.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        return int(count.value)
    finally:
        nvml.nvmlShutdown()


def _child_device_count() -> int:
    """Ask a child process: CUDA initialises there, not here."""
    try:
        out = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
                             capture_output=True, text=True, timeout=300, check=True)
        return int(out.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return 0
