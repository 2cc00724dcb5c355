"""Callbacks that act only for some models or data, and the filter that leaves the others out of a run
(Lightning dispatches every hook to every callback, each iteration); and the metric callbacks' frame: a score
at every validation and test, with a record of what it measured that survives a resume."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class ModelSpecificCallback(Callback, ABC):
    """A callback that says, from the model and the data alone, whether it can act in a run."""

    @abstractmethod
    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        """Whether it can act for `pl_module` on `datamodule`, by their kinds alone (decided once per run)."""


def applicable(
    callbacks: Iterable[Callback], pl_module: pl.LightningModule, datamodule: pl.LightningDataModule
) -> list[Callback]:
    """`callbacks` in order, without the model-specific ones that cannot act for this model and data."""
    return [
        callback
        for callback in callbacks
        if not isinstance(callback, ModelSpecificCallback) or callback.applies(pl_module, datamodule)
    ]


class StageRecords(Callback, ABC):
    """Scores each validation and test (`evaluate`); `records[stage]`: what its metrics were measured on, for
    summary.json and eval.json, the last validation's checkpointed for a run resumed only to evaluate."""

    records: dict[str, dict[str, Any]]

    @abstractmethod
    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Score `pl_module` on `stage`'s split, log the values and record what they were measured on."""

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, "test")

    def state_dict(self) -> dict[str, Any]:
        return {"val_record": self.records["val"]} if "val" in self.records else {}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """The last validation's record from a resumed checkpoint, until this run validates again."""
        if isinstance(state_dict.get("val_record"), dict):
            self.records.setdefault("val", dict(state_dict["val_record"]))
