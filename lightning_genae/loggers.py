"""Experiment loggers (CSV always, TensorBoard, W&B) and one adapter that logs images to all of them."""

from __future__ import annotations

import csv
import netrc
import os
import re
import secrets
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from lightning_fabric.loggers.csv_logs import _ExperimentWriter
from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torchvision.utils import make_grid, save_image

from lightning_genae.console import say

LOGGER_CHOICES = {
    "csv": "metrics.csv in the run folder (always on)",
    "tensorboard": "TensorBoard event files in <output>/tensorboard",
    "wandb": "Weights & Biases; offline (sync later) when there is no API key or no network",
}
WANDB_HOST = "api.wandb.ai"


class _AppendingWriter(_ExperimentWriter):
    """CSV writer that keeps an existing metrics.csv, dropping rows a resumed run will log again."""

    def __init__(self, log_dir: str, keep_before_step: int | None) -> None:
        self._keep_before_step = keep_before_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        if self._keep_before_step is None:
            path.unlink()
            return
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            self.metrics_keys = sorted(reader.fieldnames or [])
            rows = [row for row in reader if self._logged_before_resume(row)]
        with path.open("w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)

    def _logged_before_resume(self, row: dict[str, str]) -> bool:
        step = int(float(row.get("step") or 0))
        if step < self._keep_before_step:
            return True
        # Validation at the resume step ran before that checkpoint was saved; training rows there did not.
        is_training_row = any(row.get(key) for key in row if key.startswith("train/"))
        return step == self._keep_before_step and not is_training_row


class RunFolderCSVLogger(CSVLogger):
    """`<run>/metrics.csv` with no version sub-folders; on resume it continues the same file."""

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        super().__init__(save_dir=str(run_dir), name="", version="")
        self._resume_step = resume_step

    @property
    def log_dir(self) -> str:
        return self.save_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.save_dir, exist_ok=True)
            self._experiment = _AppendingWriter(self.save_dir, keep_before_step=self._resume_step)
        return self._experiment

    @rank_zero_only
    def log_hyperparams(self, params: Any = None) -> None:
        # config.yaml in the run folder is the record of the configuration.
        return None


def wandb_offline_reason() -> str | None:
    """Why W&B must run offline (no key, no network, or WANDB_MODE), or None when it can go online."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "dryrun", "disabled"):
        return f"WANDB_MODE={mode}"
    has_key = bool(os.environ.get("WANDB_API_KEY"))
    if not has_key:
        try:
            has_key = netrc.netrc().authenticators(WANDB_HOST) is not None
        except (OSError, netrc.NetrcParseError):
            has_key = False
    if not has_key:
        return "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    try:
        # A short probe: wandb.init would otherwise retry for minutes before giving up.
        socket.create_connection((WANDB_HOST, 443), timeout=3).close()
    except OSError:
        return f"{WANDB_HOST} is unreachable"
    return None


def build_loggers(
    names: Sequence[str],
    run_dir: Path,
    run_name: str,
    wandb_project: str,
    wandb_group: str | None = None,
    resume_step: int | None = None,
) -> list[Logger]:
    """CSV first (always), then the requested TensorBoard/W&B loggers, all writing under `run_dir`."""
    loggers: list[Logger] = [RunFolderCSVLogger(run_dir, resume_step=resume_step)]
    if "tensorboard" in names:
        loggers.append(
            TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False)
        )
    if "wandb" in names:
        reason = wandb_offline_reason()
        offline = reason is not None
        wandb_dir = run_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        wandb_logger = WandbLogger(
            project=wandb_project,
            name=run_name,
            group=wandb_group,
            save_dir=str(run_dir),
            offline=offline,
            # Resuming a run folder continues its W&B run rather than starting a second one.
            id=_stable_wandb_id(run_dir),
            resume="allow",
        )
        if offline:
            say(f"wandb: offline ({reason}); upload later with: wandb sync {wandb_dir}/offline-run-*")
        loggers.append(wandb_logger)
    return loggers


@rank_zero_only
def finish_loggers(loggers: Sequence[Logger], final_metrics: dict[str, float]) -> None:
    """Close W&B runs with the final metrics in their summary, so the next run in-process starts fresh."""
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update(final_metrics)
            logger.experiment.finish()


def _stable_wandb_id(run_dir: Path) -> str:
    """One W&B run id per run folder, kept in the folder so a resume finds it again."""
    id_file = run_dir / "wandb" / "run_id"
    if id_file.is_file():
        return id_file.read_text().strip()
    run_id = secrets.token_hex(4)
    id_file.write_text(run_id)
    return run_id


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key).strip("_")


@rank_zero_only
def log_image_grid(
    trainer: pl.Trainer, key: str, images: torch.Tensor, step: int, nrow: int = 8
) -> Path | None:
    """Write images in [-1, 1] as one PNG grid to `<run>/images/` and to every image-capable logger.

    Returns the PNG path. Works whatever loggers are active; CSV gets the PNG file alone.
    """
    run_dir = Path(trainer.default_root_dir)
    image_dir = run_dir / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    grid = make_grid(
        images.detach().float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2
    )
    path = image_dir / f"{_safe_name(key)}_step{step:07d}.png"
    save_image(grid, path)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[grid], step=None, caption=[f"step {step}"])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, grid, global_step=step)
    return path
