"""Stopping training on a signal at an iteration boundary every rank agrees on, and `cluster_plugins`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.plugins.environments import ClusterEnvironment, SLURMEnvironment
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.trainer.states import TrainerFn

from lightning_genae.cluster import global_rank, interrupted_by, is_slurm_task, note_stop_signal
from lightning_genae.lightning_internals import kill_launched_processes, validation_follows_batch
from lightning_genae.progress import warn


def cluster_plugins() -> list[ClusterEnvironment]:
    """The Trainer's cluster environment: under SLURM, Lightning's without its auto-requeue, whose
    handlers save from inside a signal handler; `StopOnSignal` stops, saves and requeues instead."""
    return [SLURMEnvironment(auto_requeue=False)] if is_slurm_task() else []


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)


class StopOnSignal(Callback):
    """SIGINT, SIGTERM and SIGUSR1 end training at the next iteration boundary every rank agrees on, with
    `last.ckpt` saved; after SIGUSR1 rank 0 requeues the SLURM job, and a second Ctrl-C exits at once."""

    def __init__(self, checkpoint_path: Path, continue_with: str) -> None:
        self.checkpoint_path = Path(checkpoint_path)
        # How to continue the run, said when it stops (run.py's resume, or the Trainer's).
        self.continue_with = continue_with
        self.received: int | None = None
        self._stop_after_validation = False
        self._stop_due = False
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning's signal connector registered its handlers (it restores the originals at teardown).
        self._trainer = trainer
        self.received = None
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None and signum == signal.SIGINT:
            kept = (
                f"{self.checkpoint_path} holds the last periodic checkpoint"
                if self.checkpoint_path.exists()
                else "no checkpoint was saved yet"
            )
            print(f"second Ctrl-C: stopped at once, without saving; {kept}", file=sys.stderr, flush=True)
            kill_launched_processes(self._trainer, signal.SIGKILL)
            os._exit(128 + signal.SIGINT)
        if self.received is None:
            self.received = signum
            note_stop_signal(signum)
            if signum == signal.SIGINT and global_rank() == 0:
                print(
                    "Ctrl-C: stopping after this iteration and saving last.ckpt (Ctrl-C again stops at once)",
                    file=sys.stderr,
                    flush=True,
                )

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._heard(trainer):
            return
        if validation_follows_batch(trainer):
            # A checkpoint saved now would resume past this iteration's validation: stop once validated and
            # saved; killed during it, the run resumes from the previous periodic checkpoint and validates.
            self._stop_after_validation = True
            return
        trainer.save_checkpoint(self.checkpoint_path)
        self._stop(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            # Only a validation of the training: the same Trainer's later validations (the final
            # evaluation, the chosen checkpoint's) must save nothing as last.ckpt.
            return
        # Or a signal that came during this validation, after its iteration's end was checked: the run is at
        # an iteration boundary again, and in the last iteration nothing else would hear it.
        if not (self._stop_after_validation or self._heard(trainer)):
            return
        self._stop_after_validation = False
        trainer.save_checkpoint(self.checkpoint_path)
        # Stopped at the next hook: the checkpoint callbacks, called last, first write this best.ckpt.
        self._stop_due = True

    def _heard(self, trainer: pl.Trainer) -> bool:
        """Whether any rank got a signal; every rank asks at the same point, so all of them stop alike."""
        return trainer.strategy.reduce_boolean_decision(self.received is not None, all=False)

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._stop_due:
            self._stop(trainer, pl_module)

    def _stop(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Say where the run stopped and end it with 128 + the signal; under SLURM's warning, requeue."""
        signum = self.received if self.received is not None else signal.SIGTERM
        iteration = getattr(pl_module, "iteration", trainer.global_step)
        name = signal.Signals(signum).name
        self._restore()
        raise interrupted_by(
            signum,
            f"stopped by {name} after iteration {iteration}; saved {self.checkpoint_path}",
            f"continue with: {self.continue_with}",
        )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.received = None  # heard, or too late for training to stop on: the final evaluation's own
        if self._stop_due:
            # Nothing is left to train, so a resume would have nothing to do: the run finishes instead.
            self._stop_due = False
            warn("the stop signal came in the last iteration: finishing the run")
        self._restore()

    def _restore(self, *_: Any) -> None:
        for signum, handler in self._previous.items():
            if handler is not None:
                signal.signal(signum, handler)
        self._previous = {}

    on_exception = _restore
