"""The training progress bar, counted in training iterations (one D and one G update for a GAN)."""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import Tqdm

from lightning_genae.progress import PhaseProgress, evaluation_progress, format_duration, say


def stdout_is_terminal() -> bool:
    """A terminal with a width: a bar can redraw in place. A pty without a size would show an empty bar."""
    if not sys.stdout.isatty():
        return False
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns > 0
    except (OSError, ValueError):
        return False


def planned_iterations(trainer: pl.Trainer, steps_per_iteration: int) -> int | None:
    """The iteration at which fit stops: the nearer of max_steps and max_epochs (None when unbounded)."""
    limits = []
    if trainer.max_steps is not None and trainer.max_steps > 0:
        # ceil: --fast-dev-run stops a GAN after one optimizer step, still one (half-done) iteration.
        limits.append(math.ceil(trainer.max_steps / steps_per_iteration))
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and math.isfinite(batches):
        # One batch is one iteration for every family, a GAN's included.
        limits.append(trainer.max_epochs * int(batches))
    return min(limits) if limits else None


class IterationProgressBar(TQDMProgressBar):
    """One bar over the whole run in training iterations, across epochs and from a resumed position, on a
    terminal; elsewhere (SLURM log, pipe) a line every `LINE_SECONDS` and at the end, no evaluation bar."""

    REFRESH_SECONDS = 0.2
    LINE_SECONDS = 30.0

    def __init__(self, description: str = "training") -> None:
        super().__init__(leave=False)
        self.description = description
        self.interactive = False
        self.total: int | None = None
        self.first = 0
        self.position = 0
        self._steps_per_iteration = 1
        self._started = 0.0
        self._next_draw = 0.0
        self._shown = -1
        self._evaluation_lines: PhaseProgress | None = None

    def iteration(self, trainer: pl.Trainer) -> int:
        return trainer.global_step // self._steps_per_iteration

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps_per_iteration = getattr(pl_module, "optimizer_steps_per_iteration", 1)
        self.total = planned_iterations(trainer, self._steps_per_iteration)
        self.first = self.position = self.iteration(trainer)
        self._started = time.monotonic()
        self._shown = -1
        self.interactive = stdout_is_terminal()
        # A bar is drawn at once; a log's first line waits until there is a rate worth reporting.
        self._next_draw = self._started + (0 if self.interactive else self.LINE_SECONDS)
        self.train_progress_bar = Tqdm(
            desc=self.description,
            total=self.total,
            initial=self.first,
            disable=self.is_disabled or not self.interactive,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,  # the whole run's average rate, so the time left includes the validations
            bar_format="{desc}: iteration {n_fmt}/{total_fmt} {bar} [{elapsed}<{remaining}, "
            "{rate_noinv_fmt}{postfix}]",
        )

    def on_train_epoch_start(self, *_: Any) -> None:
        """Epochs mean nothing in an iteration-budgeted run: the bar goes on, neither reset nor closed."""

    on_train_epoch_end = on_train_epoch_start

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.position = self.iteration(trainer)
        if self.is_disabled:
            return
        # A clock check per batch; metrics are read and the line drawn only when it is time to. The last
        # iteration is drawn by on_train_end, after the final validation, so it shows that one's metrics.
        now = time.monotonic()
        if now >= self._next_draw and self.position != self.total:
            self._show(trainer, pl_module, now)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.position = self.iteration(trainer)
        if not self.is_disabled and self._shown != self.position:
            self._show(trainer, pl_module, time.monotonic())
        self.train_progress_bar.close()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The base class would redraw the training bar with fresh metrics; our next draw picks them up.
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._train_progress_bar is not None:
            self.train_progress_bar.close()
        if isinstance(exception, KeyboardInterrupt):
            # Lightning's own notice is silenced with its other INFO lines; say where the run stopped.
            total = f"/{self.total}" if self.total else ""
            say(f"interrupted at iteration {self.iteration(trainer)}{total}")

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule, now: float) -> None:
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version folder, not a training value
        if self.interactive:
            self._next_draw = now + self.REFRESH_SECONDS
            bar = self.train_progress_bar
            bar.n = self.position
            bar.set_postfix(metrics, refresh=False)
            bar.refresh()
        else:
            self._next_draw = now + self.LINE_SECONDS
            logged = getattr(pl_module, "last_logged_training", None)
            say(self._line(metrics, now - self._started, None if logged is None else logged.iteration + 1))
        self._shown = self.position

    def _line(self, metrics: dict[str, Any], elapsed: float, values_at: int | None = None) -> str:
        """The progress line; `values_at`, the iteration of the training values in `metrics`, is named where
        it is an earlier one, so that a repeated value does not read as a hang."""
        parts = [f"{self.description}: iteration {self.position}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.position / self.total:.0f}%)"
        parts.append(f"{format_duration(elapsed)} elapsed")
        done = self.position - self.first
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            if self.total and self.position < self.total:
                parts.append(f"{format_duration((self.total - self.position) / rate)} left")
            # A slow run in seconds per iteration: "0.0 it/s" reads as a hang.
            parts.append(f"{rate:.1f} it/s" if rate >= 1 else f"{1 / rate:.1f} s/it")
        parts += [
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in metrics.items()
        ]
        if (
            values_at is not None
            and values_at < self.position
            and any(k.startswith("train/") for k in metrics)
        ):
            parts.append(f"train/ values of iteration {values_at}")
        return ", ".join(parts)

    def _evaluation_bar(self, description: str, position: int) -> Tqdm:
        return Tqdm(
            desc=description,
            position=position,
            disable=self.is_disabled or not stdout_is_terminal(),
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        return self._evaluation_bar("sanity check", 0)

    def init_validation_tqdm(self) -> Tqdm:
        # Below the training bar during fit; alone in trainer.validate.
        return self._evaluation_bar("validation", int(self.trainer.state.fn == "fit"))

    def init_test_tqdm(self) -> Tqdm:
        return self._evaluation_bar("test", 0)

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Reset the loop's bar to its batches (without the base class's "DataLoader 0"); in a log file, where
        no bar is drawn, a long loop still says where it is."""
        if not self.has_dataloader_changed(dataloader_idx):
            return
        if trainer.testing:
            bar, batches, what = self.test_progress_bar, self.total_test_batches_current_dataloader, "test"
        else:
            bar, batches = self.val_progress_bar, self.total_val_batches_current_dataloader
            what = "sanity check" if trainer.sanity_checking else "validation"
        total = int(batches) if math.isfinite(batches) else None
        bar.reset(total=total)
        self._evaluation_lines = None
        if not self.is_disabled and not stdout_is_terminal() and total:
            self._evaluation_lines = evaluation_progress(what, total, "batch", interval=self.LINE_SECONDS)

    on_test_batch_start = on_validation_batch_start

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_validation_batch_end(trainer, *args, **kwargs)
        if self._evaluation_lines is not None:
            self._evaluation_lines.advance()

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_test_batch_end(trainer, *args, **kwargs)
        if self._evaluation_lines is not None:
            self._evaluation_lines.advance()
