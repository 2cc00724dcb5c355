"""Sequence metrics at validation and test (`metrics.sequences.score_sequences`), scored on rank 0."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor

from lightning_genae.callbacks.applicability import StageRecords
from lightning_genae.datamodules.base import SPLITS
from lightning_genae.lightning_internals import log_global_value
from lightning_genae.metrics.backbones import BackboneUnavailable
from lightning_genae.metrics.generative import REAL_SUBSET_SEED, seeded_subset
from lightning_genae.metrics.sequence_classifier import SequenceFeatures, shipped_sequence_features
from lightning_genae.metrics.sequences import DEFAULT_STEPS, score_sequences
from lightning_genae.metrics.timegan import REPETITIONS
from lightning_genae.models import Sampler
from lightning_genae.progress import say
from lightning_genae.seeding import generator

SAMPLE_BATCH = 500


def real_datamodule(datamodule: pl.LightningDataModule) -> pl.LightningDataModule:
    """The dataset itself, not an augmentation wrapper around it: metrics compare with real data only."""
    return getattr(datamodule, "base", datamodule)


# The seed of the scores' own randomness, the same for every run.
SCORE_SEED = 0


class SequenceMetrics(StageRecords):
    """N generated series against N (at most `num_samples`) real ones of the stage's split."""

    # Fits per post-hoc GRU: TimeGAN's reference makes 10, which would make every validation 10 times as long.
    fits = 1
    test_fits = REPETITIONS

    def __init__(
        self,
        num_samples: int = 1000,
        seed: int = 0,
        steps: int = DEFAULT_STEPS,
        features: SequenceFeatures | None = None,
    ) -> None:
        self.num_samples = num_samples
        self.seed = seed
        self.steps = steps
        self.features = features
        self.records: dict[str, dict[str, Any]] = {}
        self._real: dict[tuple[int, str], Tensor] = {}

    def _real_series(self, datamodule: pl.LightningDataModule, split: str) -> Tensor:
        """The split's series as the model sees them (after `on_after_batch_transfer`), float32 on the CPU."""
        base = real_datamodule(datamodule)
        key = (id(base), split)
        if key not in self._real:
            loader = base.val_dataloader() if split == "val" else base.test_dataloader()
            series = torch.cat([base.on_after_batch_transfer(batch, 0)[0].float().cpu() for batch in loader])
            # One reference set: the same N real series for every run, seed, evaluation and loader order.
            if len(series) > self.num_samples:
                series = series[seeded_subset(len(series), self.num_samples, REAL_SUBSET_SEED)]
            self._real[key] = series
        return self._real[key]

    def _training_range(self, datamodule: pl.LightningDataModule) -> Tensor:
        """[2, C]: the training split's per-channel low and high (model units), or the normaliser's."""
        base = real_datamodule(datamodule)
        key = (id(base), "train range")
        if key not in self._real:
            recorded = base.normaliser.model_range() if hasattr(base, "normaliser") else None
            if recorded is None:
                # Each block's extremes as it is read, so that the blocks are never held together.
                per_block = []
                for series, _ in base.split_batches("train"):
                    block = base.to_model_range(series).float()
                    per_block.append(torch.stack([block.amin(dim=(0, 1)), block.amax(dim=(0, 1))]))
                extremes = torch.stack(per_block)
                recorded = torch.stack([extremes[:, 0].amin(dim=0), extremes[:, 1].amax(dim=0)]).cpu()
            self._real[key] = recorded
        return self._real[key]

    def _training_sample(self, datamodule: pl.LightningDataModule, count: int) -> Tensor:
        """`count` training series in model units, the same every run, read by index."""
        base = real_datamodule(datamodule)
        index = seeded_subset(base.split_size("train"), count, REAL_SUBSET_SEED)
        return base.to_model_range(base.items_at("train", index)[0]).float().cpu()

    def score(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule, stage: str) -> Any:
        """The stage's GenerativeScore of `pl_module` (on this process; `evaluate` runs it on rank 0)."""
        real = self._real_series(datamodule, stage)
        # Seeded per stage: a re-evaluation of the same checkpoint draws the same samples.
        draws = generator(self.seed, "generated series", SPLITS.index(stage))
        with torch.no_grad():
            generated = torch.cat(
                [
                    pl_module.sample(min(SAMPLE_BATCH, len(real) - start), generator=draws).float().cpu()
                    for start in range(0, len(real), SAMPLE_BATCH)
                ]
            )
        train_range = self._training_range(datamodule)
        # The wide discriminator and its floor, at the test: two more GRUs, fitted on as many training series.
        train_series = self._training_sample(datamodule, len(real)) if stage == "test" else None
        # The scores' own draws (the post-hoc GRUs' initialisation and batches, KID's subsets) are fixed, as
        # the image metrics' are: seeded by the run, they spread the seeds' figures by the metric's noise.
        return score_sequences(
            real,
            stage,
            generated=generated,
            features=self.features,
            seed=SCORE_SEED,
            steps=self.steps,
            fits=self.test_fits if stage == "test" else self.fits,
            train_range=train_range,
            train_series=train_series,
        )

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.sanity_checking or not isinstance(pl_module, Sampler):
            return
        payload = None
        if trainer.is_global_zero:
            score = self.score(pl_module, trainer.datamodule, stage)
            payload = (score.logged(), score.record())
        logged, record = trainer.strategy.broadcast(payload, src=0)
        for name, value in logged.items():
            log_global_value(pl_module, name, value)
        self.records[stage] = record
        if trainer.state.fn != "fit":
            # Named without the split, which the line starts with (as the image metrics' line).
            prefix = f"{stage}/"
            shown = ", ".join(f"{name.removeprefix(prefix)} = {value:.4g}" for name, value in logged.items())
            say(f"{stage}: {shown} ({record['n_real']} real {stage} series, {record['n_fake']} generated)")


def build_sequence_metrics(
    model: pl.LightningModule,
    datamodule: pl.LightningDataModule,
    *,
    num_samples: int,
    seed: int,
    feature_metrics: bool = True,
) -> SequenceMetrics | None:
    """The sequence metric callback for a sampling model on series, else None; a broken classifier warns."""
    if not isinstance(model, Sampler) or datamodule.data_kind != "sequence":
        return None
    features = None
    try:
        if feature_metrics:
            features = shipped_sequence_features(real_datamodule(datamodule).name)
    except BackboneUnavailable as error:
        rank_zero_warn(f"sequence feature metrics skipped: {error}")
    return SequenceMetrics(num_samples=num_samples, seed=seed, features=features)
