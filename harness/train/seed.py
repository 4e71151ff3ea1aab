"""Seeding: every source of randomness a training run touches, so runs and resumed runs repeat exactly."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy and torch (CPU and every CUDA device).

    Only cheap determinism flags are set: cuDNN autotuning is left off (the default), because it picks
    kernels by timing and so can change numerics between runs; fully deterministic kernels
    (``torch.use_deterministic_algorithms``) are not forced because they slow GPU training a lot.
    """
    seed_rngs(seed)
    torch.backends.cudnn.benchmark = False


def seed_rngs(seed: int) -> None:
    """Seed Python ``random``, NumPy and torch (CPU + CUDA) without touching any backend flag."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device (lazily, no CUDA init)


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``(seed, *keys)``; e.g. one independent seed per epoch.

    SeedSequence hashes the tuple, so neighbouring (seed, epoch) pairs give unrelated streams.
    """
    state = np.random.SeedSequence([int(seed), *(int(k) for k in keys)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker init: seed NumPy/``random`` from the worker's torch seed (itself derived from the
    loader's generator), so augmentation in workers repeats with the epoch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def get_rng_state() -> dict[str, Any]:
    """All RNG states, as plain tensors/lists/tuples so the checkpoint loads with ``weights_only=True``."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`get_rng_state`; a CUDA state is restored only if CUDA is in use here."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.is_initialized():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
