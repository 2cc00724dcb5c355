"""Generative metrics (FD/FID, KID, precision/recall, density/coverage) at every validation and test.

Validation compares samples with the validation split, and the best checkpoint is chosen on it; the
test split is touched only by the final evaluation, so the reported test numbers are not selected on.
Every number is logged under a name that carries its backbone, and `records` keeps the backbone, split
and sample counts that `summary.json` and `eval.json` print beside it. The scoring itself is
`lightning_genae.metrics.generative.score_generated`; this module only generates and logs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from datamodules.base import to_uint8
from lightning_genae.console import say
from lightning_genae.metrics.backbones import FeatureBackbone
from lightning_genae.metrics.generative import RealFeatures, extract_features, score_generated
from lightning_genae.metrics.names import metric_name
from lightning_genae.metrics.representation import representation_metrics
from lightning_genae.models import Autoencoder, Sampler

FEATURE_BATCH = 500


class FeatureBank(Metric):
    """Features gathered from every rank: each device generates its share, torchmetrics concatenates."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor) -> None:
        self.features.append(features)

    def compute(self) -> Tensor:
        return dim_zero_cat(self.features)


class GenerativeMetrics(Callback):
    """N generated images against N real ones of the stage's split, for every model that can sample."""

    def __init__(
        self,
        backbone: FeatureBackbone,
        num_samples: int = 10_000,
        seed: int = 0,
        cache_dir: Path | None = None,
    ) -> None:
        self.backbone = backbone
        self.num_samples = num_samples
        self.seed = seed
        self.real_features = RealFeatures(backbone, cache_dir)
        self.records: dict[str, dict[str, Any]] = {}

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.evaluate(trainer, pl_module, "test")

    def _fake_features(self, trainer: pl.Trainer, pl_module: Sampler, n: int, stage: str) -> Tensor:
        world, rank = trainer.world_size, trainer.global_rank
        share = n // world + (1 if rank < n % world else 0)
        # Seeded per stage and rank: a re-evaluation of the same checkpoint draws the same samples.
        generator = torch.Generator().manual_seed(self.seed * 1_000 + rank * 10 + (stage == "test"))
        bank = FeatureBank().to(pl_module.device)
        for start in range(0, share, FEATURE_BATCH):
            samples = pl_module.sample(min(FEATURE_BATCH, share - start), generator=generator)
            bank.update(
                extract_features(self.backbone, to_uint8(samples), pl_module.device).to(pl_module.device)
            )
        if share == 0:
            bank.update(torch.empty(0, self.backbone.feature_dim, device=pl_module.device))
        return bank.compute().cpu()

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Sampler) or trainer.sanity_checking:
            return
        score = score_generated(
            self.real_features,
            trainer.datamodule,
            stage,
            lambda n: self._fake_features(trainer, pl_module, n, stage),
            num_samples=self.num_samples,
            seed=self.seed,
            device=pl_module.device,
        )
        for name, value in score.logged().items():
            pl_module.log(name, value, sync_dist=False)
        self.records[stage] = score.record()
        if trainer.state.fn != "fit":
            headline = metric_name("fd", self.backbone.name)
            say(
                f"{stage}: {headline} = {score.values[headline]:.4g} ({score.n_fake} generated vs "
                f"{score.n_real} real {stage} images, {score.backbone})"
            )


class RepresentationMetrics(Callback):
    """Linear-probe accuracy of the latent codes and the PCA baseline, once, on the test split."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not isinstance(pl_module, Autoencoder) or not trainer.is_global_zero:
            return
        datamodule = trainer.datamodule
        values = representation_metrics(
            pl_module.encode,
            datamodule.split_tensors("train"),
            datamodule.split_tensors("test"),
            pl_module.latent_dim,
            pl_module.device,
            seed=self.seed,
            prepare=datamodule.to_model_range,
        )
        for key, value in values.items():
            pl_module.log(f"test/{key}", value, rank_zero_only=True)
