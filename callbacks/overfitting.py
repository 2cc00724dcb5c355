"""The discriminator's overfitting signal: D's scores of fixed real training and validation images."""

from __future__ import annotations

import pytorch_lightning as pl
from torch import Tensor

from lightning_genae.callbacks.applicability import ModelSpecificCallback
from lightning_genae.datamodules.base import SPLITS
from lightning_genae.metrics.generative import seeded_subset
from lightning_genae.metrics.names import MetricName
from lightning_genae.models import ScoringDiscriminator
from lightning_genae.models.base import evaluation_mode
from lightning_genae.seeding import int_seed

# Images scored per split at each validation (fewer when a split is smaller).
BATCH_SIZE = 256
# Which reals are scored, and the suffix their metrics carry.
SCORED_SPLITS = ("train", "val")


def overfitting_metric(kind: str, split: str) -> str:
    """`val/d_logit_train`: logged with the validation (`val/`), measured on `split`'s fixed batch."""
    return MetricName(f"d_{kind}_{split}", split="val").format()


class DiscriminatorOverfitting(ModelSpecificCallback):
    """Logs D's mean score (and, for logits, mean sign) on fixed training and validation batches of one size,
    drawn once, seeded, from the stored real splits; under DDP the values are averaged over ranks."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        # Stored images of each split's fixed batch, chosen at the first validation.
        self._batches: dict[str, Tensor] | None = None

    def fixed_batches(self, datamodule: pl.LightningDataModule) -> dict[str, Tensor]:
        """The stored images scored at every validation: the same ones throughout the run and on resume."""
        if self._batches is None:
            sizes = {split: datamodule.split_size(split) for split in SCORED_SPLITS}
            n = min(BATCH_SIZE, *sizes.values())
            self._batches = {}
            for split, size in sizes.items():
                seed = int_seed(self.seed, "overfitting batch", SPLITS.index(split))
                self._batches[split] = datamodule.items_at(split, seeded_subset(size, n, seed))[0]
        return self._batches

    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        return isinstance(pl_module, ScoringDiscriminator)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.applies(pl_module, trainer.datamodule):
            return
        datamodule = trainer.datamodule
        # Running batch-norm statistics for both batches: a score must not depend on the rest of its batch.
        values: dict[str, Tensor] = {}
        with evaluation_mode(pl_module):
            for split, images in self.fixed_batches(datamodule).items():
                inputs = datamodule.to_model_range(images.to(pl_module.device))
                scores = pl_module.discriminator_scores(inputs)
                values[overfitting_metric(scores.kind, split)] = scores.values.float().mean()
                if scores.kind == "logit":
                    values[overfitting_metric("sign", split)] = scores.values.float().sign().mean()
        for name, value in values.items():
            pl_module.log(name, value, on_epoch=True, sync_dist=True)
