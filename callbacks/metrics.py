"""Generative metrics at every validation and test, named by their backbone; `records` feeds summary.json."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_genae.callbacks.applicability import ModelSpecificCallback, StageRecords
from lightning_genae.datamodules.base import SPLITS, to_uint8
from lightning_genae.datamodules.pixels import bernoulli_pixels
from lightning_genae.errors import ConfigError, DataError
from lightning_genae.lightning_internals import log_global_value
from lightning_genae.metrics.backbones import FeatureBackbone
from lightning_genae.metrics.generative import (
    RealFeatures,
    comparison_size,
    extract_features,
    score_generated,
)
from lightning_genae.metrics.names import metric_name
from lightning_genae.metrics.representation import probe_train_indices, representation_metrics
from lightning_genae.models import Autoencoder, Sampler
from lightning_genae.progress import evaluation_progress, say
from lightning_genae.seeding import generator, int_seed

FEATURE_BATCH = 500


class FeatureBank(Metric):
    """Features gathered from every rank, put back in sample order by each row's sample index, so they are
    those a single process would have made, whatever the world size."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("features", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, features: Tensor, indices: Tensor) -> None:
        self.features.append(features)
        self.indices.append(indices)

    def compute(self) -> Tensor:
        features, indices = dim_zero_cat(self.features), dim_zero_cat(self.indices)
        order = torch.argsort(indices)
        if not torch.equal(indices[order].cpu(), torch.arange(len(indices))):
            raise RuntimeError("generated samples were lost or duplicated in the gather from the ranks")
        return features[order]


def sample_generator(seed: int, stage: str, chunk: int) -> torch.Generator:
    """The random stream of one chunk of generated samples: per chunk, not per rank, so the samples (and
    the metrics) are the same whether one process or eight generate them, and the same on re-evaluation."""
    return generator(seed, "generated images", SPLITS.index(stage), chunk)


# How summary.json's evaluation block names generated images binarized before their features.
BINARIZED = "binarized, one Bernoulli draw per pixel"


def _checked_samples(samples: Any, size: int, pl_module: pl.LightningModule, trainer: pl.Trainer) -> Tensor:
    """A family's `sample(size)` as the metrics read it: float images [size, C, H, W] of the data's shape,
    finite; anything else is one line naming the family (stored as pixels, NaN would score as black)."""
    if not isinstance(samples, Tensor) or not samples.is_floating_point():
        got = f"a tensor of {samples.dtype}" if isinstance(samples, Tensor) else type(samples).__name__
        problem = f"returned {got}; a family samples float images in [-1, 1]"
    elif list(samples.shape) != (
        expected := [size, *getattr(getattr(trainer, "datamodule", None), "data_shape", samples.shape[1:])]
    ):
        problem = f"returned shape {list(samples.shape)}; the metrics need {expected}"
    elif not bool(torch.isfinite(samples).all()):
        step = getattr(pl_module, "iteration", "?")
        problem = f"returned NaN or infinite values at step {step}, which cannot be scored as images"
    else:
        return samples
    raise DataError(f"{type(pl_module).__name__}.sample({size}) {problem}")


class GenerativeMetrics(StageRecords):
    """N generated images against N real ones of the stage's split. Under DDP each rank featurises its share
    of the chunks and rank 0 scores them all and broadcasts the numbers, so every rank logs the same."""

    def __init__(self, backbone: FeatureBackbone, num_samples: int = 10_000, seed: int = 0) -> None:
        self.backbone = backbone
        self.num_samples = num_samples
        self.seed = seed
        self.real_features = RealFeatures(backbone)
        self.records: dict[str, dict[str, Any]] = {}

    def state_dict(self) -> dict[str, Any]:
        # A resumed run must measure in the same feature space, or its history would mix two backbones.
        return {
            "backbone": self.backbone.name,
            "weights_sha256": self.backbone.weights_sha256,
            **super().state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume: refuse a backbone whose weights differ from the ones the run measured with."""
        stored = state_dict.get("weights_sha256")
        current = self.backbone.weights_sha256
        super().load_state_dict(state_dict)
        if stored is None or current is None or stored == current:
            return  # an older checkpoint, or weights with no file to identify them by
        raise ConfigError(
            f"the run's image metrics were measured with the {state_dict.get('backbone')} of sha256 "
            f"{stored[:12]}, not {current[:12]}; resume with its weights (its classifier_weights or "
            "inception_weights, none where it used the dataset's own classifier), or start a new run"
        )

    def _fake_features(
        self, trainer: pl.Trainer, pl_module: Sampler, n: int, stage: str, binary: bool = False
    ) -> Tensor:
        """Features of the n generated samples in sample order, on every rank; binarized first if `binary`."""
        device = pl_module.device
        bank = FeatureBank().to(device)
        chunks = range(trainer.global_rank, -(-n // FEATURE_BATCH), trainer.world_size)
        # Rank 0 speaks for all: its share of the chunks is as long as any rank's, give or take one.
        progress = evaluation_progress(
            f"{stage}: generating {n} samples and their {self.backbone.name} features",
            len(chunks),
            f"chunk of {FEATURE_BATCH}",
        )
        for chunk in chunks:
            start = chunk * FEATURE_BATCH
            size = min(FEATURE_BATCH, n - start)
            draws = sample_generator(self.seed, stage, chunk)
            samples = _checked_samples(pl_module.sample(size, generator=draws), size, pl_module, trainer)
            if binary:
                samples = bernoulli_pixels(samples, draws)
            features = extract_features(self.backbone, to_uint8(samples), device)
            bank.update(features.to(device), torch.arange(start, start + size, device=device))
            if trainer.is_global_zero:
                progress.advance()
        if not chunks:
            bank.update(
                torch.empty(0, self.backbone.feature_dim, device=device),
                torch.empty(0, dtype=torch.long, device=device),
            )
        return bank.compute().cpu()

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(pl_module, Sampler) or trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        n = comparison_size(datamodule, stage, self.num_samples)
        binary = getattr(datamodule, "binary_pixels", False)
        fake = self._fake_features(trainer, pl_module, n, stage, binary)
        score = None
        if trainer.is_global_zero:
            score = score_generated(
                self.real_features,
                datamodule,
                stage,
                lambda _: fake,
                num_samples=self.num_samples,
                device=pl_module.device,
            )
        score = trainer.strategy.broadcast(score, src=0)
        for name, value in score.logged().items():
            log_global_value(pl_module, name, value)
        self.records[stage] = score.record()
        if binary:
            # A protocol of its own: runs that scored the generated images as generated are not comparable.
            self.records[stage]["generated"] = BINARIZED
        if trainer.state.fn != "fit":
            headline = metric_name("fd", self.backbone.name)
            say(
                f"{stage}: {headline} = {score.values[headline]:.4g} ({score.n_fake} generated vs "
                f"{score.n_real} real {stage} images, {score.backbone})"
            )


class RepresentationMetrics(ModelSpecificCallback):
    """Linear-probe accuracy of the latent codes and the PCA baseline, once, on the test split."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        return isinstance(pl_module, Autoencoder)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not self.applies(pl_module, datamodule):
            return
        seed = int_seed(self.seed, "representation probe")
        # At most MAX_PROBE_TRAIN training items, read alone where the training split is streamed.
        probed = probe_train_indices(datamodule.split_size("train"), seed)
        values = representation_metrics(
            pl_module.encode,
            datamodule.items_at("train", probed),
            datamodule.split_batches("test"),
            pl_module.latent_dim,
            pl_module.device,
            seed=seed,
            prepare=datamodule.to_model_range,
        )
        for key, value in values.items():
            log_global_value(pl_module, f"test/{key}", value, rank_zero_only=True)
