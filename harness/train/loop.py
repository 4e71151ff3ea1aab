"""The resumable SGD training loop shared by base training and fine-tuning."""
from __future__ import annotations

import contextlib
import copy
import csv
import io
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from harness.data.device import DeviceData, TensorSource, device_data_fits, tensor_source
from harness.errors import UserError
from harness.io import write_text
from harness.train.checkpoint import load_latest_checkpoint, save_checkpoint
from harness.train.recipe import Recipe
from harness.train.schedule import build_optimizer, build_scheduler
from harness.train.seed import derive_seed, get_rng_state, seed_rngs, set_rng_state, worker_init_fn

log = logging.getLogger(__name__)

CSV_COLUMNS = ("epoch", "train_loss", "train_acc", "lr", "epoch_seconds", "images_per_second")
CHECKPOINT_FORMAT = "prunebench-train-ckpt/1"
_CSV_FORMATS = {"train_loss": "{:.6f}", "train_acc": "{:.4f}", "lr": "{:.6g}",
                "epoch_seconds": "{:.3f}", "images_per_second": "{:.1f}"}

BatchTransform = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


def steps_per_epoch(num_samples: int, recipe: Recipe) -> int:
    """Iterations per epoch: full batches only (``drop_last``), capped by ``max_batches_per_epoch``."""
    full = num_samples // recipe.batch_size
    if full == 0:
        raise UserError(f"training set has {num_samples} samples, fewer than batch_size={recipe.batch_size}")
    return min(full, recipe.max_batches_per_epoch or full)


def write_log_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the whole per-epoch log atomically (rows come from the checkpoint, so log and state agree)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_CSV_FORMATS.get(c, "{}").format(r[c]) for c in CSV_COLUMNS])
    write_text(path, buf.getvalue())


def _fingerprint(recipe: Recipe, seed: int, num_samples: int, spe: int, on_device: bool) -> dict[str, Any]:
    # Everything that changes the trajectory; num_workers and compile only change speed, so they may differ
    # on resume. The data path draws augmentation from other RNGs, so it counts, but as the path actually
    # taken (auto resolves per machine) and only when it is the device path (older checkpoints stay valid).
    r = recipe.to_dict()
    for key in ("num_workers", "compile", "data_path"):
        r.pop(key)
    if r.get("optimizer") == "sgd":  # the default, left out so checkpoints from before the option stay valid
        r.pop("optimizer")
    out = {"recipe": r, "seed": int(seed), "num_samples": int(num_samples), "steps_per_epoch": int(spe)}
    if on_device:
        out["data_path"] = "device"
    return out


def resolve_data_path(recipe: Recipe, train_set: Dataset, device: torch.device) -> TensorSource | None:
    """The training set's tensors when the device path is taken (``recipe.data_path``), else None.

    ``auto`` takes it for an in-memory tensor dataset on CUDA whose padded images fit in a quarter of the
    GPU's memory; ``device`` takes it whenever the dataset qualifies (also on the CPU: tests, benchmarks)
    and is a UserError otherwise; ``loader`` never takes it.
    """
    if recipe.data_path == "loader":
        return None
    source = tensor_source(train_set)
    if recipe.data_path == "device":
        if source is None:
            raise UserError(f"data_path=device needs an in-memory tensor dataset (CIFAR, Fashion-MNIST, synthetic); "
                            f"{type(train_set).__name__} is read through a DataLoader: use data_path auto or loader")
        return source
    if source is None or device.type != "cuda" or not device_data_fits(source, device):
        return None
    return source


def _loader_epochs(train_set: Dataset, recipe: Recipe, device: torch.device,
                   on_cuda: bool) -> Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """The DataLoader path: batches of ``train_set`` shuffled by a generator re-seeded every epoch."""
    generator = torch.Generator()
    loader = DataLoader(
        train_set,
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=True,
        generator=generator,
        num_workers=recipe.num_workers,
        pin_memory=on_cuda,
        worker_init_fn=worker_init_fn if recipe.num_workers > 0 else None,
    )

    def epoch(epoch_seed: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator.manual_seed(epoch_seed)
        for i, (x, y) in enumerate(loader):
            if i >= steps:
                break
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True)

    return epoch


def fit(
    model: nn.Module,
    train_set: Dataset,
    recipe: Recipe,
    *,
    device: str | torch.device,
    seed: int,
    checkpoint_dir: Path | None,
    log_csv: Path | None,
    desc: str = "train",
    batch_transform: BatchTransform | None = None,
) -> nn.Module:
    """Train ``model`` on ``train_set`` with ``recipe``; resumable, and bit-exact across resume on CPU.

    Each epoch is re-seeded from ``(seed, epoch)`` (torch/NumPy/random and the shuffle generator), and a
    checkpoint (model, optimizer, scheduler, RNG states, log rows) is written after every epoch, so a run
    killed at any point and restarted resumes from the newest valid checkpoint and ends with the same
    weights as an uninterrupted run. Corrupt checkpoints, or ones written for another recipe/seed/data
    size/architecture, are logged, deleted and skipped. ``checkpoint_dir=None`` disables checkpointing,
    ``log_csv=None`` the CSV log (columns :data:`CSV_COLUMNS`; ``train_acc`` in percent, ``lr`` the rate of
    the epoch's last iteration).

    Batches come from a DataLoader, or with ``recipe.data_path`` resolving to ``device`` (see
    :func:`resolve_data_path`) from the training set held on ``device`` (:class:`harness.data.DeviceData`):
    the same shuffled batches, crop/flip done on the device from a generator seeded per epoch, no workers.
    ``recipe.compile`` wraps the forward pass in ``torch.compile``.

    ``batch_transform(x, y) -> (x, y)`` runs on the device before the forward pass (GPU augmentation);
    ``y`` may become soft targets (N, C). On CUDA with ``recipe.amp`` the forward pass runs under bf16
    autocast. The trained model is returned in eval mode, contiguous memory format, on ``device``.
    """
    device = torch.device(device)
    on_cuda = device.type == "cuda"
    # channels_last only on CUDA: on the CPU, torch 2.14's oneDNN computes wrong weight gradients (and can
    # corrupt the heap with one thread) for strided 1x1 convs whose channel counts are not multiples of 8,
    # exactly the shapes a pruned ResNet has. tests/test_train.py guards this.
    fmt = torch.channels_last if recipe.channels_last and on_cuda else torch.contiguous_format
    model.to(device=device, memory_format=fmt)  # in place: parameters keep their identity

    num_samples = len(train_set)  # type: ignore[arg-type]
    spe = steps_per_epoch(num_samples, recipe)
    optimizer = build_optimizer(model, recipe)
    scheduler = build_scheduler(optimizer, recipe, spe)
    criterion = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    source = resolve_data_path(recipe, train_set, device)
    fingerprint = _fingerprint(recipe, seed, num_samples, spe, source is not None)

    rows: list[dict[str, Any]] = []
    start = 0
    if checkpoint_dir is not None:
        fresh = (copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict()),
                 copy.deepcopy(scheduler.state_dict()))

        def apply(state: dict[str, Any]) -> str | None:
            """Load ``state`` into the live objects, or return why it does not belong to this run."""
            if state.get("format") != CHECKPOINT_FORMAT:
                return f"unknown format {state.get('format')!r}"
            if state.get("fingerprint") != fingerprint:
                return "written for a different recipe, seed or training set"
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                set_rng_state(state["rng"])
                if not all(set(CSV_COLUMNS) <= set(r) for r in state["log"]):
                    raise ValueError("log rows lack columns")
            except Exception as e:  # architecture mismatch, malformed entries: never half-load a run
                model.load_state_dict(fresh[0])
                optimizer.load_state_dict(fresh[1])
                scheduler.load_state_dict(fresh[2])
                return f"does not fit this model/run ({e.__class__.__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})"
            return None

        found = load_latest_checkpoint(Path(checkpoint_dir), apply)
        del fresh
        if found is not None:
            start, state = found
            rows = list(state["log"])
            log.info("%s: resuming after epoch %d/%d from %s", desc, start, recipe.epochs, checkpoint_dir)

    if source is not None:
        data = DeviceData(source, device, channels_last=fmt is torch.channels_last)
        del source

        def epoch_batches(epoch_seed: int, steps: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            # same order as the loader path (epoch_seed); augmentation from its own stream of the same seed
            return data.epoch(recipe.batch_size, order_seed=epoch_seed, aug_seed=derive_seed(epoch_seed, 1),
                              steps=steps)
    else:
        epoch_batches = _loader_epochs(train_set, recipe, device, on_cuda)
    amp = (torch.autocast(device_type="cuda", dtype=torch.bfloat16) if on_cuda and recipe.amp
           else contextlib.nullcontext())
    forward = model if recipe.compile == "off" else torch.compile(model, mode=recipe.compile)

    for epoch in range(start, recipe.epochs):
        epoch_seed = derive_seed(seed, epoch)
        seed_rngs(epoch_seed)
        model.train()
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        lr = optimizer.param_groups[0]["lr"]
        # Always on: in a Snakemake log (not a tty) the bar updates every 15 s instead of flooding the file.
        interactive = sys.stderr.isatty()
        bar = tqdm(total=spe, desc=f"{desc} {epoch + 1}/{recipe.epochs}", leave=interactive,
                   dynamic_ncols=True, mininterval=0.5 if interactive else 15.0, file=sys.stderr)
        t0 = time.perf_counter()
        try:
            for i, (x, y) in enumerate(epoch_batches(epoch_seed, spe)):
                if batch_transform is not None:
                    x, y = batch_transform(x, y)
                if x.dim() == 4:
                    x = x.contiguous(memory_format=fmt)
                lr = optimizer.param_groups[0]["lr"]
                with amp:
                    out = forward(x)
                loss = criterion(out.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                n = x.shape[0]
                seen += n
                with torch.no_grad():
                    loss_sum += loss.detach().double() * n
                    hard = y.argmax(1) if y.dim() == 2 else y
                    correct += (out.argmax(1) == hard).sum()
                if not bar.disable:
                    if i % 10 == 0:  # .item() syncs the GPU; do it rarely
                        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.3g}", refresh=False)
                    bar.update()
        finally:
            bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        train_loss = loss_sum.item() / seen
        if not math.isfinite(train_loss):
            raise RuntimeError(f"{desc}: training diverged at epoch {epoch + 1} (loss {train_loss}); lower the lr")
        row = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": 100.0 * correct.item() / seen,
            "lr": float(lr),
            "epoch_seconds": seconds,
            "images_per_second": seen / seconds if seconds > 0 else float("inf"),
        }
        rows.append(row)
        if checkpoint_dir is not None:
            save_checkpoint(Path(checkpoint_dir), epoch + 1, {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch + 1,
                "fingerprint": fingerprint,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": get_rng_state(),
                "log": rows,
            })
        if log_csv is not None:
            write_log_csv(Path(log_csv), rows)
        log.info("%s epoch %d/%d: loss %.4f, acc %.2f%%, lr %.4g, %.1fs, %.0f img/s", desc, epoch + 1,
                 recipe.epochs, row["train_loss"], row["train_acc"], row["lr"], seconds, row["images_per_second"])

    if log_csv is not None and start == recipe.epochs:
        write_log_csv(Path(log_csv), rows)  # finished earlier; the CSV may have missed the last write
    model.to(memory_format=torch.contiguous_format)
    model.eval()
    return model
