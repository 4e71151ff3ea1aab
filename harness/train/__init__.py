"""Training: seeds, SGD recipes and schedules, the resumable training loop, BN recalibration."""
from harness.train.bn import recalibrate_bn
from harness.train.checkpoint import load_checkpoint, load_latest_checkpoint, save_checkpoint
from harness.train.loop import CSV_COLUMNS, fit, steps_per_epoch, write_log_csv
from harness.train.recipe import SCHEDULES, Recipe
from harness.train.schedule import build_optimizer, build_scheduler
from harness.train.seed import derive_seed, seed_everything, seed_rngs

__all__ = [
    "CSV_COLUMNS",
    "SCHEDULES",
    "Recipe",
    "build_optimizer",
    "build_scheduler",
    "derive_seed",
    "fit",
    "load_checkpoint",
    "load_latest_checkpoint",
    "recalibrate_bn",
    "save_checkpoint",
    "seed_everything",
    "seed_rngs",
    "steps_per_epoch",
]
