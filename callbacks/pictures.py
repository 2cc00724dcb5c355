"""Pictures of a run: PNG files in `<run>/images/`, and the same to every logger that shows images."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torchvision.utils import make_grid, save_image

from lightning_genae.callbacks.applicability import ModelSpecificCallback
from lightning_genae.errors import RunFolderGone
from lightning_genae.models.base import evaluation_mode

# Run folders a training in this process writes to, not to be made again once gone, each with how to
# continue the run once it is back (RunFolderPresence keeps it).
WATCHED_RUN_FOLDERS: dict[Path, str] = {}


def _picture_path(trainer: pl.Trainer, key: str, step: int) -> Path:
    """`<run>/images/<key>_step<step>.png`, its folder made if need be; RunFolderGone when the run folder is a
    watched one and gone (a picture must not make it again, without config.yaml, for the run to go on in)."""
    run_dir = Path(trainer.default_root_dir)
    if not run_dir.is_dir() and run_dir.resolve() in WATCHED_RUN_FOLDERS:
        raise RunFolderGone.at(run_dir, WATCHED_RUN_FOLDERS[run_dir.resolve()])
    (run_dir / "images").mkdir(parents=True, exist_ok=True)
    return run_dir / "images" / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', key).strip('_')}_step{step:07d}.png"


def interleaved(versions: list[torch.Tensor], nrow: int = 8) -> torch.Tensor:
    """Rows of `nrow` in groups: row i of every version, then row i + 1 of every version."""
    starts = range(0, len(versions[0]), nrow)
    return torch.cat([version[start : start + nrow].float() for start in starts for version in versions])


@rank_zero_only
def log_image_grid(trainer: pl.Trainer, key: str, images: torch.Tensor, step: int, nrow: int = 8) -> None:
    """Write images in [-1, 1] as one PNG grid to `<run>/images/` and every image-capable logger."""
    path = _picture_path(trainer, key, step)
    grid = make_grid(
        images.detach().float().cpu().clamp(-1, 1), nrow=nrow, normalize=True, value_range=(-1, 1), padding=2
    )
    save_image(grid, path)
    _log_picture(trainer, key, grid, step)


def _log_picture(trainer: pl.Trainer, key: str, picture: torch.Tensor, step: int) -> None:
    """A [C, H, W] picture in [0, 1] to every image-capable logger (CSV keeps the PNG file alone)."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            # wandb.Image reads float pixels as 0-255, so a [0, 1] picture would be black: 8-bit [H, W, C],
            # at the picture's own iteration (without a step W&B files it at the last scalar row's).
            pixels = (picture.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
            image = pixels[0] if pixels.shape[0] == 1 else pixels.permute(1, 2, 0)
            logger.log_image(key=key, images=[image.numpy()], step=step, caption=[f"step {step}"])
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(key, picture, global_step=step)


@rank_zero_only
def log_figure(trainer: pl.Trainer, key: str, figure: Any, step: int) -> None:
    """Write a matplotlib `Figure` as a PNG to `<run>/images/`, and that PNG to every image-capable logger."""
    import numpy as np
    from PIL import Image

    path = _picture_path(trainer, key, step)
    figure.savefig(path, dpi=100)
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    _log_picture(trainer, key, torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), step)


class PeriodicDrawing(ModelSpecificCallback, ABC):
    """Runs `draw` on rank 0 every `every_n_steps` iterations and when training ends, for models of
    `data_kinds` that offer what it needs; `count` images (a series figure shows SERIES_SHOWN), seeded."""

    # The kinds of data the picture is drawn for: images, and for some series ("sequence").
    data_kinds: ClassVar[tuple[str, ...]] = ("image",)
    count: int

    def __init__(self, every_n_steps: int = 500, seed: int = 0, count: int | None = None) -> None:
        self.every_n_steps = every_n_steps
        self.seed = seed
        if count is not None:
            self.count = count
        self._last_drawn_step = -1

    @abstractmethod
    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        """Whether the model offers what this picture needs (sampling, reconstruction)."""

    @abstractmethod
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Make and log the picture; runs on rank 0, in eval mode, without gradients."""

    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        return getattr(pl_module, "data_kind", "image") in self.data_kinds and self.applies_to(pl_module)

    def _maybe_draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = pl_module.iteration
        if not trainer.is_global_zero or step == self._last_drawn_step:
            return
        if not self.applies(pl_module, trainer.datamodule):
            return
        # Batch norm uses its running statistics, so a picture does not depend on the rest of its batch.
        with evaluation_mode(pl_module):
            self.draw(trainer, pl_module, step)
        self._last_drawn_step = step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.every_n_steps > 0 and pl_module.iteration % self.every_n_steps == 0:
            self._maybe_draw(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._maybe_draw(trainer, pl_module)
