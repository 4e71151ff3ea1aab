"""Stale Snakemake locks after a crash: re-running the same command after a kill must just work.

Snakemake locks its working directory with plain files (``.snakemake/locks/*.lock``). A Snakemake that is
killed (SIGKILL, the OOM killer, a lost SSH session, a power cut) never removes them, and the next run stops
with ``LockException`` until someone runs ``snakemake --unlock``, which cannot tell a stale lock from the
lock of a run that is still going.

Every main Snakemake process of this workflow holds a kernel lock (``flock``) on
``.snakemake/prunebench.flock`` for its whole life, shared with any other live run in the same directory;
the kernel drops it when the process dies, however it dies. A starting run that can take that lock
*exclusively* therefore knows that no other run of this workflow is alive in this directory, so Snakemake
lock files still present are stale: it removes them, then keeps holding the lock shared. When another run
is alive, nothing is removed and Snakemake's own lock check decides, as before.

Limits: runs of Snakemake that do not load this Snakefile do not take the kernel lock; a Snakemake killed
alone while its jobs live on leaves orphan jobs that no lock covers (kill the process group, as
``docs/faults.md`` says); on a filesystem without working ``flock`` nothing is removed.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import sys
from pathlib import Path

FLOCK_NAME = "prunebench.flock"
_held: dict[str, int] = {}  # working dir -> fd of the kernel lock, kept open for the life of the process


def release_stale_locks(workdir: str | os.PathLike = ".") -> bool:
    """Hold this process's share of the workflow lock; remove Snakemake's lock files if they are stale.

    Returns True when stale lock files were removed. Call once per main Snakemake process, at parse time
    (Snakemake checks its locks after parsing the Snakefile). Safe to call again: the lock is taken once.
    """
    meta = Path(workdir).resolve() / ".snakemake"
    key = str(meta)
    if key in _held:
        return False
    try:
        meta.mkdir(parents=True, exist_ok=True)
        fd = os.open(meta / FLOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by jobs (PEP 446)
    except OSError:
        return False
    removed = False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        alone = True
    except BlockingIOError:
        alone = False  # another run of this workflow is alive here: its locks are not ours to judge
    except OSError:
        os.close(fd)  # no working flock on this filesystem: leave everything to Snakemake
        return False
    locks = meta / "locks"
    if alone and locks.is_dir() and any(locks.iterdir()):
        shutil.rmtree(locks, ignore_errors=True)
        removed = True
        print(f"prunebench: removed stale Snakemake locks in {locks} (left by a killed run; "
              "no other run of this workflow is alive in this directory)", file=sys.stderr)
    # Shared from now on: other runs may start beside this one (Snakemake's own lock decides whether they
    # may), and none of them will take this run's locks for stale. Blocks only while another starting run
    # holds the lock exclusively, i.e. for the moment of its own check.
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held[key] = fd
    return removed
