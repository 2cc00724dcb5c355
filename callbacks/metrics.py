"""Generative metrics (FD/FID, KID, precision/recall, density/coverage) at every validation and test.

Validation compares samples with the validation split, and the best checkpoint is chosen on it; the
test split is touched only by the final evaluation, so the reported test numbers are not selected on.
Every number is logged under a name that carries its backbone, and `records` keeps the backbone, split
and sample counts that `summary.json` and `eval.json` print beside it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from datamodules.base import ImageDataModule, to_uint8
from lightning_genae.cache import cache_root, write_atomically
from lightning_genae.console import say
from lightning_genae.metrics.backbones import FeatureBackbone
from lightning_genae.metrics.distances import feature_metrics
from lightning_genae.metrics.representation import representation_metrics
from lightning_genae.models import Autoencoder, Sampler

FEATURE_BATCH = 500


def metric_name(key: str, backbone: str) -> str:
    """`fd_classifier`, `kid_inception`, ...; only the Inception Fréchet distance may be called FID."""
    if key == "fd" and backbone == "inception":
        return "fid_inception"
    return f"{key}_{backbone}"


def headline_metric(backbone: str) -> str:
    """The metric that picks a generative model's best checkpoint."""
    return f"val/{metric_name('fd', backbone)}"


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


@torch.no_grad()
def extract_features(backbone: FeatureBackbone, images: Tensor, device: torch.device) -> Tensor:
    """Backbone features of uint8 images, in batches, on `device`; returned on the CPU."""
    # The backbone moves its own chunks to the device, so the whole split never sits there at once.
    return backbone.to(device)(images).cpu()


class RealFeatures:
    """Backbone features of a dataset split, computed once and cached on disk per dataset, split, backbone."""

    def __init__(self, backbone: FeatureBackbone, cache_dir: Path | None = None) -> None:
        self.backbone = backbone
        self.cache_dir = (cache_dir or cache_root()) / "features"
        self._memory: dict[str, Tensor] = {}

    def key(self, datamodule: ImageDataModule, split: str, count: int) -> str:
        where = Path(datamodule.data_dir).resolve()
        identity = f"{datamodule.name}|{where}|{split}|{count}|{self.backbone.description}"
        digest = hashlib.sha256(identity.encode()).hexdigest()[:16]
        return f"{datamodule.name}-{split}-{self.backbone.name}-{digest}"

    def get(self, datamodule: ImageDataModule, split: str, device: torch.device) -> Tensor:
        images, _ = datamodule.split_tensors(split)
        key = self.key(datamodule, split, len(images))
        if key in self._memory:
            return self._memory[key]
        path = self.cache_dir / f"{key}.pt"
        features = None
        if path.is_file():
            try:
                features = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a damaged cache is recomputed, never trusted
                features = None
            if features is not None and len(features) != len(images):
                features = None
        if features is None:
            features = extract_features(self.backbone, images, device)
            write_atomically(path, lambda temporary: torch.save(features, temporary))
        self._memory[key] = features
        return features


def seeded_subset(count: int, n: int, seed: int) -> Tensor:
    """The same n of count indices for every run with this seed (all of them when n >= count)."""
    if n >= count:
        return torch.arange(count)
    return torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:n].sort().values


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
        datamodule = trainer.datamodule
        real_all = self.real_features.get(datamodule, stage, pl_module.device)
        n = min(self.num_samples, len(real_all))
        real = real_all[seeded_subset(len(real_all), n, self.seed)]
        fake = self._fake_features(trainer, pl_module, n, stage)
        values = feature_metrics(real, fake)
        for key in ("fd", "kid", "kid_std", "precision", "recall", "density", "coverage"):
            pl_module.log(
                f"{stage}/{metric_name(key, self.backbone.name)}", float(values[key]), sync_dist=False
            )
        self.records[stage] = {
            "split": stage,
            "n_real": int(len(real)),
            "n_fake": int(len(fake)),
            "backbone": self.backbone.description,
        }
        if trainer.state.fn != "fit":
            say(
                f"{stage}: {metric_name('fd', self.backbone.name)} = {values['fd']:.4g} "
                f"({len(fake)} generated vs {len(real)} real {stage} images, {self.backbone.description})"
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
        )
        for key, value in values.items():
            pl_module.log(f"test/{key}", value, rank_zero_only=True)
