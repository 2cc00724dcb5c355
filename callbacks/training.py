"""Callbacks every run's training gets: per-rank seeds, rows by iteration, a last validation, the guards."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from lightning_genae.callbacks.pictures import WATCHED_RUN_FOLDERS
from lightning_genae.checkpoint import non_finite_state, resume_advice, run_folder_of
from lightning_genae.errors import ConfigError, RunFolderGone, RunFolderRefused, TrainingDiverged
from lightning_genae.lightning_internals import set_logging_step
from lightning_genae.models import GenerativeModule
from lightning_genae.models.base import diverged_before_any_update, is_last_training_batch
from lightning_genae.run_files import CONFIG_KEY, files_named_as_a_runs, last_checkpoint, started_run_files
from lightning_genae.seeding import int_seed


class SeedPerRank(Callback):
    """Every DDP process its own random stream (the run seed's "training" stream at its rank), or all would
    draw the same noise; PL_GLOBAL_SEED stays, as every DistributedSampler must draw the same epoch order."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            rank_seed = int_seed(self.seed, "training", trainer.global_rank)
            random.seed(rank_seed)
            np.random.seed(rank_seed)
            torch.manual_seed(rank_seed)


class LogStepIsIteration(Callback):
    """Training rows at the 0-based index of their iteration, from the optimizer-step count: Lightning's
    batch counter runs one ahead after resuming a checkpoint written at a validation step."""

    def __init__(self, steps_per_iteration: int) -> None:
        self.steps_per_iteration = steps_per_iteration

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # The counter Lightning's logger connector and LearningRateMonitor read for the step of a row.
        set_logging_step(trainer, trainer.global_step // self.steps_per_iteration)


class ValidateLastIteration(Callback):
    """Training's last iteration validates whatever --eval-every is (Lightning validates after a batch that
    asks to stop), so the final weights are a candidate for best.ckpt."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if is_last_training_batch(trainer, batch_idx):
            trainer.should_stop = True


class DivergenceGuard(Callback):
    """Stops a diverged training with one line: the noted losses are checked every `check_every` iterations
    and before each validation, the end and every checkpoint write, which is refused for non-finite state."""

    def __init__(self, checkpoint_dir: Path | None, check_every: tuple[int, ...], precision: str) -> None:
        self.checkpoint_dir = checkpoint_dir
        self.check_every = tuple(every for every in check_every if every > 0)
        self.precision = precision
        # Where a resumed training started: its iteration, its checkpoint's --lr and file (None: not resumed).
        self.started_at = 0
        self.resumed_lr: float | None = None
        self.resumed_from: Path | None = None

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        stored = checkpoint.get(CONFIG_KEY)
        lr = stored.get("lr") if isinstance(stored, dict) else None
        if isinstance(lr, (int, float)) and not isinstance(lr, bool):
            self.resumed_lr = float(lr)

    def on_train_start(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        self.started_at = pl_module.iteration
        self.resumed_from = Path(trainer.ckpt_path) if trainer.ckpt_path else None

    def diverged(self, cause: str, model: GenerativeModule) -> TrainingDiverged:
        """The one-line error: what diverged and what to do (before any update, no resume or rate helps)."""
        if diverged_before_any_update(cause) and self.started_at == 0:
            return TrainingDiverged(cause)
        lr = getattr(model.options, "lr", None)
        advice = resume_advice(
            self.checkpoint_dir,
            model.optimizer_steps_per_iteration,
            lower_lr=model.lower_learning_rate(),
            started_at=self.started_at,
            # A resume at the checkpoint's --lr or above that diverges says nothing of its weights.
            retried_lower=self.resumed_lr is None or not isinstance(lr, float) or lr < self.resumed_lr,
            resumed_from=self.resumed_from,
        )
        if "16" in self.precision:
            advice += " (or train in precision 32-true)"
        return TrainingDiverged(f"{cause}; {advice}")

    def stop_if_diverged(self, trainer: pl.Trainer, model: GenerativeModule, cause: str | None) -> None:
        """Raise on every process when any found a cause: one raising alone would leave the others waiting."""
        if trainer.strategy.reduce_boolean_decision(cause is not None, all=False):
            raise self.diverged(cause or "training diverged in another process", model)

    def check_losses(self, trainer: pl.Trainer, model: GenerativeModule) -> None:
        self.stop_if_diverged(trainer, model, model.first_non_finite_loss())

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: GenerativeModule, *args: Any) -> None:
        if any(pl_module.iteration % every == 0 for every in self.check_every):
            self.check_losses(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        if trainer.state.fn == "fit":
            self.check_losses(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: GenerativeModule) -> None:
        self.check_losses(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: GenerativeModule, checkpoint: dict) -> None:
        self.check_losses(trainer, pl_module)
        # Batch-norm statistics are each process's own under DDP, so one process may find what others do not.
        non_finite, cause = non_finite_state(checkpoint), None
        if non_finite:
            more = f" and {len(non_finite) - 1} more tensor(s)" if len(non_finite) > 1 else ""
            cause = (
                f"{non_finite[0]}{more} of the model or its optimizer became NaN or infinite by step "
                f"{pl_module.iteration}, so that checkpoint was not written"
            )
        self.stop_if_diverged(trainer, pl_module, cause)


class RunFolderPresence(Callback):
    """Stops the run with one line when its folder is gone before a checkpoint is written there, or as a
    later stage on the same Trainer starts: Lightning would make it again and train on without config.yaml."""

    def __init__(self, run_dir: Path, continue_with: str = "--resume last") -> None:
        self.run_dir = run_dir
        # How to continue the run once its folder is back: run.py's resume, or the Trainer's.
        self.continue_with = continue_with
        self._had_the_folder = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit" or not self._had_the_folder:
            # The folder exists from here, so its absence later means it went.
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self._had_the_folder = True
        elif not self.run_dir.is_dir():
            raise RunFolderGone.at(self.run_dir, self.continue_with)
        WATCHED_RUN_FOLDERS[self.run_dir.resolve()] = self.continue_with

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        WATCHED_RUN_FOLDERS.pop(self.run_dir.resolve(), None)

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        # Lightning calls no teardown after an exception.
        WATCHED_RUN_FOLDERS.pop(self.run_dir.resolve(), None)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: GenerativeModule, checkpoint: dict) -> None:
        # Decided together: a process that raised alone would leave the others waiting at the next barrier.
        if trainer.strategy.reduce_boolean_decision(not self.run_dir.is_dir(), all=False):
            raise RunFolderGone.at(self.run_dir, self.continue_with)


class WritesUnder(Callback):
    """Refuses a Trainer whose `default_root_dir` is not the callbacks' folder, and a training over another
    run's files there (those there when the callbacks were made, and after a training with them, all)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._there_before: list[str] | None = self.held()

    def held(self) -> list[str]:
        return list(dict.fromkeys([*started_run_files(self.run_dir), *files_named_as_a_runs(self.run_dir)]))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if Path(trainer.default_root_dir).resolve() != self.run_dir.resolve():
            raise ConfigError(
                f"the callbacks write to {self.run_dir} and the Trainer to {trainer.default_root_dir}; give "
                f"pl.Trainer(default_root_dir={str(self.run_dir)!r}) so that the image grids go there too"
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # trainer.ckpt_path is known from here: a training continuing no run there would overwrite its files.
        before, self._there_before = self._there_before, None
        held = [name for name in self.held() if before is None or name in before]
        if not held:
            return
        shown = ", ".join(held[:4]) + (f" and {len(held) - 4} more" if len(held) > 4 else "")
        if trainer.ckpt_path is None:
            what = f"already holds {shown}"
            fix = "give an output_dir of its own (and the Trainer's default_root_dir), or continue the run "
            fix += f"there with trainer.fit(..., ckpt_path={str(last_checkpoint(self.run_dir))!r})"
        elif self.run_dir.resolve() in Path(trainer.ckpt_path).resolve().parents:
            return  # a checkpoint anywhere in the folder (a plain ModelCheckpoint's subfolder) is its run's
        else:
            continued = run_folder_of(Path(trainer.ckpt_path).resolve())
            what = f"holds another run ({shown}) than the checkpoint's ({continued})"
            fix = f"continue that run with output_dir={str(continued)!r}, or give an output_dir of its own"
        raise RunFolderRefused(f"{self.run_dir} {what}, which this training would write over; {fix}")
