"""The run's checkpoints, `last.ckpt` every N iterations and `best.ckpt`, each with its configuration."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

from lightning_genae.errors import describe_error
from lightning_genae.lightning_internals import validation_follows_batch
from lightning_genae.metrics.names import Direction, direction
from lightning_genae.progress import warn
from lightning_genae.run_files import CLUSTER_JOB_KEY, CONFIG_KEY


class PeriodicLastCheckpoint(ModelCheckpoint):
    """checkpoints/last.ckpt every N optimizer steps, its state filed under the class's name (one per
    trainer): Lightning's name holds the cadence, which a resume may change (`--ckpt-every`)."""

    _save_after_validation = False

    @property
    def state_key(self) -> str:
        return type(self).__name__

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # At an iteration that also validates, the save waits for the validation: a run killed during it
        # then resumes before it, rather than past a validation that never ran.
        if validation_follows_batch(trainer):
            self._save_after_validation = True
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._save_after_validation and not trainer.sanity_checking:
            self._save_after_validation = False
            # The parent's batch-end rule (the cadence, not twice at one step), on the state after validation.
            super().on_train_batch_end(trainer, pl_module, None, None, 0)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # Lightning warns at every save of manual optimization that the weights are those after the
        # iteration's updates, as a resume wants them (filtered once: catch_warnings would reset the others).
        warnings.filterwarnings(
            "ignore", ".*ModelCheckpoint with manual optimization and every_n_train_steps"
        )


class BestCheckpoint(ModelCheckpoint):
    """`dirpath`/best.ckpt: the weights with the best value of `monitor`, its better side from the metric
    vocabulary; a resume reads the best value so far from best.ckpt itself, nothing outside the folder."""

    def __init__(self, dirpath: Path, monitor: str) -> None:
        super().__init__(
            dirpath=dirpath,
            filename="best",
            monitor=monitor,
            mode="max" if direction(monitor) is Direction.HIGHER else "min",
            save_top_k=1,
            auto_insert_metric_name=False,
            # A best.ckpt that records no value is replaced, not kept beside best-v1.ckpt.
            enable_version_counter=False,
        )

    @property
    def state_key(self) -> str:
        # A key of its own: a plug-in's ModelCheckpoint on the same metric would otherwise share one.
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing of the resumed checkpoint's record is taken; `on_fit_start` reads best.ckpt."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # At the fit's start: a run resumed at the end of its budget trains nothing and still names best.ckpt.
        super().on_fit_start(trainer, pl_module)
        if trainer.ckpt_path is None or self.dirpath is None:
            return
        # One rank looks at the folder, so all ranks agree on the record (its top-k decisions are collective).
        path = Path(self.dirpath) / f"{self.filename}{self.FILE_EXTENSION}"
        record = trainer.strategy.broadcast(self.record_in(path) if trainer.is_global_zero else None)
        if record is None:
            return
        path, score = record
        self.best_model_path = self.kth_best_model_path = path
        self.best_model_score = self.kth_value = torch.tensor(score)
        self.best_k_models = {path: self.best_model_score}

    def record_in(self, path: Path) -> tuple[str, float] | None:
        """(path, the value best.ckpt was saved for), or None when the file is absent or records none."""
        if not path.is_file():
            return None
        try:
            contents = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # noqa: BLE001 - any unreadable file is one that records nothing
            warn(f"resume: {path} could not be read ({describe_error(error)}); the best is chosen afresh")
            return None
        for state in contents.get("callbacks", {}).values():
            if (
                isinstance(state, dict)
                and state.get("monitor") == self.monitor
                and state.get("best_model_score") is not None
                and Path(str(state.get("best_model_path", ""))).name == path.name
            ):
                return str(path), float(state["best_model_score"])
        return None


class StoreRunConfig(Callback):
    """The run configuration (and the cluster job, if any) in every checkpoint: one alone can be resumed."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from lightning_genae.cluster import current_job

        self.config = dict(config)
        job = current_job()
        self.job_tag = job.tag if job is not None else None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict
    ) -> None:
        checkpoint[CONFIG_KEY] = dict(self.config)
        if self.job_tag is not None:
            checkpoint[CLUSTER_JOB_KEY] = self.job_tag
