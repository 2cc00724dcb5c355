"""The schedule every picture callback shares: every N training iterations and once at the end, rank 0."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import pytorch_lightning as pl

from lightning_genae.callbacks.applicability import ModelSpecificCallback
from lightning_genae.models.base import evaluation_mode


class PeriodicDrawing(ModelSpecificCallback, ABC):
    """Runs `draw` on rank 0 every `every_n_steps` training iterations and once when training ends, for
    models of `data_kind` that offer what the picture needs (`applies_to`)."""

    # The kind of data the picture is of: the image grids' by default, the series figures "sequence".
    data_kind: ClassVar[str] = "image"

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = every_n_steps
        self._last_drawn_step = -1

    @abstractmethod
    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        """Whether the model offers what this picture needs (sampling, reconstruction)."""

    @abstractmethod
    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        """Make and log the picture; runs on rank 0, in eval mode, without gradients."""

    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        return getattr(pl_module, "data_kind", "image") == self.data_kind and self.applies_to(pl_module)

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
