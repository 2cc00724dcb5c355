"""Callbacks that act only for some models or data, and the filter that leaves the others out of a run:
Lightning calls every callback at every hook, so one that can never act costs every iteration its dispatch."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

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
