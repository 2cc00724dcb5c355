"""Callbacks that act only for some models or data, and the filter that leaves the others out of a run.

Lightning calls every callback at every hook, whether it acts or not: about seven hooks per training
iteration for a GAN (two optimizers), each costing a few microseconds per callback in Lightning's dispatch.
A GAN run on images carried seven callbacks that could never act on it (reconstruction and series pictures,
the normaliser, representation metrics); leaving them out once the model and data are known removes that
cost from every iteration without changing what the run writes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback


class ModelSpecificCallback(Callback, ABC):
    """A callback that says, from the model and the data alone, whether it can act in a run."""

    @abstractmethod
    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        """Whether this callback can do anything for `pl_module` trained on `datamodule`.

        Fixed for a run: it may read the model's type and the data's kind, never the training state.
        """


def applicable(
    callbacks: Iterable[Callback], pl_module: pl.LightningModule, datamodule: pl.LightningDataModule
) -> list[Callback]:
    """`callbacks` in order, without the model-specific ones that cannot act for this model and data."""
    return [
        callback
        for callback in callbacks
        if not isinstance(callback, ModelSpecificCallback) or callback.applies(pl_module, datamodule)
    ]
