"""Tests for harness.train: resume after SIGKILL is bit-exact, corrupt checkpoints are skipped, logs, BN."""
from __future__ import annotations

import csv
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from harness.errors import CorruptCheckpoint, UserError
from harness.train import (
    CSV_COLUMNS,
    Recipe,
    build_optimizer,
    build_scheduler,
    fit,
    load_checkpoint,
    recalibrate_bn,
    seed_everything,
)

REPO = Path(__file__).resolve().parents[1]


def tiny_cnn(num_classes: int = 4, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Dropout(dropout), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes),
    )


def separable_set(n: int = 256, num_classes: int = 4, seed: int = 0) -> TensorDataset:
    """Class c brightens (c < 3) or darkens (c = 3) one channel: linearly separable after pooling."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    for c in range(num_classes):
        x[y == c, c % 3] += 2.0 if c < 3 else -2.0
    return TensorDataset(x, y)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def one_thread():
    """Single-threaded CPU kernels: bit-exact repeatability within the process."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------------------------- kill test
KILL_SCRIPT = textwrap.dedent(
    '''
    import logging, os, sys, time
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    from harness.train import Recipe, fit

    ckpt, log_csv, out = sys.argv[1:4]
    stall_at = int(os.environ.get("STALL_AT_FETCH", "0"))

    class Augmented(Dataset):
        """Random flips in __getitem__ so the data order AND augmentation RNG must repeat on resume."""
        def __init__(self):
            g = torch.Generator().manual_seed(123)
            self.x = torch.randn(256, 3, 8, 8, generator=g)
            self.y = torch.randint(0, 4, (256,), generator=g)
            for c in range(4):
                self.x[self.y == c, c % 3] += 1.0
            self.fetches = 0
        def __len__(self):
            return len(self.y)
        def __getitem__(self, i):
            self.fetches += 1
            if stall_at and self.fetches == stall_at:  # mid-epoch: tell the test, then wait to be killed
                open(os.environ["STALL_MARKER"], "w").close()
                time.sleep(600)
            x = self.x[i]
            if torch.rand(()) < 0.5:
                x = x.flip(-1)
            return x, self.y[i]

    data_path = os.environ.get("DATA_PATH", "loader")
    batches = 0

    def noise(x, y):
        global batches
        batches += 1
        if data_path == "device" and stall_at and batches == stall_at:  # the device path fetches no items
            open(os.environ["STALL_MARKER"], "w").close()
            time.sleep(600)
        return x + 0.05 * torch.randn_like(x), y

    if data_path == "device":  # the training set on the "device", crop + flip drawn there
        from harness.data import TensorImageDataset, TensorTransform
        g = torch.Generator().manual_seed(123)
        labels = torch.randint(0, 4, (256,), generator=g)
        images = torch.randint(0, 200, (256, 3, 8, 8), generator=g, dtype=torch.uint8)
        for c in range(4):
            images[labels == c, c % 3] += 50
        train = TensorImageDataset(images, labels, TensorTransform((0.5,) * 3, (0.25,) * 3, pad=2, flip=True))
    else:
        train = Augmented()
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    recipe = Recipe(epochs=4, batch_size=32, lr=0.05, warmup_epochs=0.5, label_smoothing=0.1, data_path=data_path)
    fit(model, train, recipe, device="cpu", seed=7, checkpoint_dir=ckpt, log_csv=log_csv,
        batch_transform=noise)
    torch.save(model.state_dict(), out)
    '''
)


@pytest.mark.slow
@pytest.mark.parametrize("data_path", ["loader", "device"])
def test_kill_and_resume_is_bit_exact(tmp_path: Path, data_path: str) -> None:
    """SIGKILL mid-epoch 3, rerun the same command: final weights equal an uninterrupted run's.
    ``device``: the training set resident on the device (here the CPU) with crop/flip done there."""
    script = tmp_path / "train_tiny.py"
    script.write_text(KILL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "DATA_PATH": data_path}
    # mid-epoch 3: the loader path counts item fetches (256 per epoch), the device path batches (8 per epoch)
    stall_at = 2 * 256 + 100 if data_path == "loader" else 2 * 8 + 3
    marker = tmp_path / "stalled"

    def cmd(name: str) -> list[str]:
        d = tmp_path / name
        return [sys.executable, str(script), str(d / "ckpt"), str(d / "log.csv"), str(d / "final.pt")]

    t0 = time.monotonic()
    reference = subprocess.Popen(cmd("ref"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = subprocess.Popen(cmd("killed"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**env, "STALL_AT_FETCH": str(stall_at), "STALL_MARKER": str(marker)})
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert victim.poll() is None, "training script died before reaching epoch 3"
            assert time.monotonic() < deadline, "training script never reached epoch 3"
            time.sleep(0.05)
        ckpt = tmp_path / "killed" / "ckpt"
        assert (ckpt / "epoch-0002.pt").exists() and not (ckpt / "epoch-0003.pt").exists()
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()

    resumed = subprocess.run(cmd("killed"), env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after epoch 2/4" in resumed.stderr
    out, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    assert "resuming" not in err

    ref = torch.load(tmp_path / "ref" / "final.pt", weights_only=True)
    got = torch.load(tmp_path / "killed" / "final.pt", weights_only=True)
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    torch.manual_seed(0)  # same init as the script: training must have moved the weights
    assert not torch.equal(ref["0.weight"], nn.Conv2d(3, 8, 3, padding=1, bias=False).weight.detach())
    # The log is one row per epoch in both runs, and the per-epoch losses agree exactly.
    rows_ref, rows_got = read_csv(tmp_path / "ref" / "log.csv"), read_csv(tmp_path / "killed" / "log.csv")
    assert [r["epoch"] for r in rows_got] == ["1", "2", "3", "4"]
    assert [r["train_loss"] for r in rows_ref] == [r["train_loss"] for r in rows_got]
    print(f"kill test: {time.monotonic() - t0:.1f}s")


# ------------------------------------------------------------------------------------- corrupt checkpoints
def _run(tmp_path: Path, seed: int = 0, epochs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return fit(tiny_cnn(dropout=0.1), separable_set(64), Recipe(epochs=epochs, batch_size=16, lr=0.05),
               device="cpu", seed=seed, checkpoint_dir=tmp_path / "ckpt", log_csv=tmp_path / "log.csv")


def _corrupt(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif how == "missing_sidecar":
        path.with_name(path.name + ".sha256").unlink()
    elif how == "garbage_with_matching_sidecar":  # checksum passes, payload still unloadable
        import hashlib
        junk = os.urandom(len(data))
        path.write_bytes(junk)
        path.with_name(path.name + ".sha256").write_text(f"{hashlib.sha256(junk).hexdigest()} {len(junk)}\n")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("how", ["truncate", "garbage", "missing_sidecar", "garbage_with_matching_sidecar"])
def test_corrupt_newest_checkpoint_falls_back(tmp_path: Path, how: str, caplog, one_thread) -> None:
    reference = {k: v.clone() for k, v in _run(tmp_path).state_dict().items()}
    newest = tmp_path / "ckpt" / "epoch-0003.pt"
    _corrupt(newest, how)
    with pytest.raises(CorruptCheckpoint):
        load_checkpoint(newest)

    caplog.set_level(logging.INFO, logger="harness.train")
    model = _run(tmp_path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("epoch-0003.pt" in r.getMessage() for r in warnings), caplog.text
    assert "resuming after epoch 2/3" in caplog.text
    # Epoch 3 was retrained from the epoch-2 state: same weights as before, a valid checkpoint again.
    for k, v in model.state_dict().items():
        assert torch.equal(v, reference[k]), k
    assert load_checkpoint(newest)["epoch"] == 3
    assert [r["epoch"] for r in read_csv(tmp_path / "log.csv")] == ["1", "2", "3"]


def test_all_checkpoints_corrupt_restarts_from_scratch(tmp_path: Path, caplog) -> None:
    _run(tmp_path)
    for p in (tmp_path / "ckpt").glob("epoch-*.pt"):
        _corrupt(p, "garbage")
    stale_tmp = tmp_path / "ckpt" / ".epoch-0004.pt.x1y2.tmp"  # left by a write killed midway
    stale_tmp.write_bytes(b"partial")
    caplog.set_level(logging.INFO, logger="harness.train")
    _run(tmp_path)
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 2
    assert "resuming" not in caplog.text
    assert len(read_csv(tmp_path / "log.csv")) == 3
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("epoch-*.pt")) == ["epoch-0002.pt", "epoch-0003.pt"]
    assert not stale_tmp.exists()


def test_checkpoint_of_another_run_is_not_used(tmp_path: Path, caplog) -> None:
    _run(tmp_path, seed=0, epochs=2)
    caplog.set_level(logging.INFO, logger="harness.train")
    _run(tmp_path, seed=1, epochs=2)
    assert "different recipe, seed" in caplog.text and "resuming" not in caplog.text


def test_finished_run_returns_without_training(tmp_path: Path, caplog) -> None:
    first = {k: v.clone() for k, v in _run(tmp_path, epochs=1).state_dict().items()}
    (tmp_path / "log.csv").unlink()
    caplog.set_level(logging.INFO, logger="harness.train")
    again = _run(tmp_path, epochs=1)
    assert "resuming after epoch 1/1" in caplog.text and "epoch 1/1:" not in caplog.text
    assert all(torch.equal(v, first[k]) for k, v in again.state_dict().items())
    assert len(read_csv(tmp_path / "log.csv")) == 1  # rewritten from the checkpoint


# ----------------------------------------------------------------------------------------- log, schedule
def test_csv_log_and_schedules(tmp_path: Path) -> None:
    data = separable_set(64)
    lrs = {}
    for schedule in ("cosine", "step"):
        recipe = Recipe(epochs=4, batch_size=16, lr=0.1, schedule=schedule, max_batches_per_epoch=3)
        fit(tiny_cnn(), data, recipe, device="cpu", seed=0, checkpoint_dir=None, log_csv=tmp_path / f"{schedule}.csv")
        with open(tmp_path / f"{schedule}.csv", newline="") as fh:
            assert next(csv.reader(fh)) == list(CSV_COLUMNS)
        rows = read_csv(tmp_path / f"{schedule}.csv")
        assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
        for r in rows:
            assert float(r["train_loss"]) > 0 and 0 <= float(r["train_acc"]) <= 100
            assert float(r["epoch_seconds"]) > 0 and float(r["images_per_second"]) > 0
        lrs[schedule] = [float(r["lr"]) for r in rows]
    cos = lrs["cosine"]
    # last-iteration lr of each epoch: cos(pi * 11/12) -> 1.7 % of the peak, and 0 after the final step
    assert all(a > b for a, b in zip(cos, cos[1:])) and cos[0] > 0.08 and cos[-1] < 0.02 * 0.1
    assert lrs["step"] == pytest.approx([0.1, 0.1, 0.01, 0.001])


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant", "onecycle"])
@pytest.mark.parametrize("warmup", [0, 1.5])
def test_scheduler_shapes_and_state_roundtrip(schedule: str, warmup: float, tmp_path: Path) -> None:
    recipe = Recipe(epochs=4, batch_size=8, lr=1.0, schedule=schedule, warmup_epochs=warmup)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, recipe)
    sched = build_scheduler(opt, recipe, steps_per_epoch=5)
    lrs = []
    for i in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
        if i == 8:
            torch.save({"o": opt.state_dict(), "s": sched.state_dict()}, tmp_path / "s.pt")
    warm = round(warmup * 5)
    if warm:  # linear warm-up ramps up to the peak
        assert all(a < b for a, b in zip(lrs[:warm], lrs[1 : warm + 1]))
    if schedule in ("cosine", "onecycle"):
        assert max(lrs) == pytest.approx(1.0) and lrs[-1] < 0.05
    elif schedule == "step":
        assert lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(0.1) and lrs[15] == pytest.approx(0.01)
    else:
        assert lrs[warm:] == pytest.approx([1.0] * (20 - warm))
    # A scheduler restored from a weights_only checkpoint continues identically.
    state = torch.load(tmp_path / "s.pt", weights_only=True)
    opt2 = build_optimizer(nn.Linear(2, 2), recipe)
    sched2 = build_scheduler(opt2, recipe, steps_per_epoch=5)
    opt2.load_state_dict(state["o"])
    sched2.load_state_dict(state["s"])
    rest = []
    for _ in range(9, 20):
        rest.append(opt2.param_groups[0]["lr"])
        opt2.step()
        sched2.step()
    assert rest == lrs[9:]


# ------------------------------------------------------------------------------------------------ recipe
def test_recipe_from_dict_rejects_unknown_key() -> None:
    with pytest.raises(UserError) as e:
        Recipe.from_dict({"epochs": 1, "batch_size": 8, "lr": 0.1, "learning_rate": 0.1})
    msg = str(e.value)
    assert "\n" not in msg and "'learning_rate'" in msg and "valid keys" in msg and "weight_decay" in msg


def test_recipe_from_dict_normalises_and_validates() -> None:
    r = Recipe.from_dict({"epochs": 2, "batch_size": 8, "lr": 0.1, "weight_decay": "5e-4", "milestones": [0.3, 0.6]})
    assert r.milestones == (0.3, 0.6) and r.weight_decay == 5e-4 and hash(r) == hash(Recipe.from_dict(r.to_dict()))
    for bad in ({"schedule": "linear"}, {"epochs": 0}, {"milestones": [0.8, 0.2]}, {"nesterov": True, "momentum": 0.0}):
        with pytest.raises(UserError):
            Recipe.from_dict({"epochs": 2, "batch_size": 8, "lr": 0.1, **bad})
    with pytest.raises(UserError, match="fewer than batch_size"):
        fit(tiny_cnn(), separable_set(4), Recipe(epochs=1, batch_size=8, lr=0.1), device="cpu", seed=0,
            checkpoint_dir=None, log_csv=None)


# ---------------------------------------------------------------------------------------------------- BN
def test_recalibrate_bn_matches_data_statistics() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Dropout(0.5), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    bn = model[0]
    bn.momentum = 0.1
    good = 3.0 + 2.0 * torch.randn(5 * 64, 3, 4, 4)
    bad = 100.0 + torch.randn(5 * 64, 3, 4, 4)  # must not be seen: only num_batches batches are used
    loader = DataLoader(TensorDataset(torch.cat([good, bad]), torch.zeros(10 * 64, dtype=torch.long)), batch_size=64)
    model.train()
    recalibrate_bn(model, loader, num_batches=5, device="cpu")
    assert torch.allclose(bn.running_mean, torch.full((3,), 3.0), atol=0.05)
    assert torch.allclose(bn.running_var, torch.full((3,), 4.0), atol=0.15)
    assert int(bn.num_batches_tracked) == 5
    assert bn.momentum == 0.1 and not model.training and not any(m.training for m in model.modules())


# -------------------------------------------------------------------------------------- seeds, learning
def test_seed_everything_repeats() -> None:
    import random

    import numpy as np

    def draw():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(5)
    a = draw()
    seed_everything(5)
    assert draw() == a
    seed_everything(6)
    assert draw() != a


def test_training_learns_separable_task(tmp_path: Path) -> None:
    data = separable_set(256)
    torch.manual_seed(0)
    model = fit(tiny_cnn(), data, Recipe(epochs=5, batch_size=32, lr=0.1), device="cpu", seed=0,
                checkpoint_dir=tmp_path / "ckpt", log_csv=tmp_path / "log.csv")
    assert float(read_csv(tmp_path / "log.csv")[-1]["train_acc"]) >= 95.0
    with torch.no_grad():
        acc = (model(data.tensors[0]).argmax(1) == data.tensors[1]).float().mean().item()
    assert acc >= 0.95 and not model.training
    assert model[0].weight.is_contiguous()  # channels_last is undone for the caller (surgery, saving)
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "epoch-0004.pt", "epoch-0004.pt.sha256", "epoch-0005.pt", "epoch-0005.pt.sha256"]


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant", "onecycle"])
def test_schedules_survive_tiny_runs(schedule: str) -> None:
    """Smoke runs (1 epoch, 1-2 iterations, fractional warm-up) must not break a torch scheduler."""
    for epochs, spe, warmup in [(1, 1, 0), (1, 2, 0.5), (2, 1, 1.5), (3, 3, 0.2)]:
        recipe = Recipe(epochs=epochs, batch_size=1, lr=1.0, schedule=schedule, warmup_epochs=warmup)
        opt = build_optimizer(nn.Linear(1, 1), recipe)
        sched = build_scheduler(opt, recipe, spe)
        for _ in range(epochs * spe):
            assert 0 <= opt.param_groups[0]["lr"] <= 1.0 + 1e-9
            opt.step()
            sched.step()


def test_channels_last_is_not_used_on_cpu_where_onednn_gets_strided_1x1_gradients_wrong(tmp_path) -> None:
    """A pruned ResNet has strided 1x1 shortcut convs with odd channel counts; channels_last on the CPU
    gives wrong weight gradients for them (torch 2.14, oneDNN). fit must train the same with the flag on."""
    import torch
    from torch import nn

    from harness.train import Recipe, fit

    def run(channels_last: bool) -> nn.Module:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 11, 1, stride=2),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(11, 3))
        data = torch.utils.data.TensorDataset(torch.randn(64, 3, 8, 8), torch.randint(0, 3, (64,)))
        recipe = Recipe(epochs=1, batch_size=16, lr=0.1, channels_last=channels_last)
        return fit(model, data, recipe, device="cpu", seed=0, checkpoint_dir=None, log_csv=None)

    with_flag, without = run(True), run(False)
    for (name, a), b in zip(with_flag.state_dict().items(), without.state_dict().values()):
        assert torch.equal(a, b), name
