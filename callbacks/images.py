"""Image-grid callbacks: fixed-noise samples and input/reconstruction pairs, every N steps and at the end."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch

from lightning_genae.callbacks.applicability import ModelSpecificCallback
from lightning_genae.callbacks.pictures import PeriodicDrawing, interleaved, log_image_grid
from lightning_genae.callbacks.sequences import SERIES_SHOWN, log_versions
from lightning_genae.datamodules.base import to_model_range
from lightning_genae.models import Autoencoder, ImageDiscriminator, ReconstructingDiscriminator, Sampler
from lightning_genae.seeding import generator, int_seed


def first_val_items(datamodule: Any, count: int) -> torch.Tensor:
    """The validation split's first `count` stored items (all if fewer), read alone where it is streamed."""
    return datamodule.items_at("val", torch.arange(min(count, datamodule.split_size("val"))))[0]


class SampleGrid(PeriodicDrawing):
    """Samples from the same noise every time (the run seed's "sample grid" stream), so pictures over
    training show one model improving: a grid of images, or a figure of series."""

    data_kinds = ("image", "sequence")
    count = 64

    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        return isinstance(pl_module, Sampler)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        count = SERIES_SHOWN if pl_module.data_kind == "sequence" else self.count
        samples = pl_module.sample(count, generator=generator(self.seed, "sample grid"))
        titles = [f"sample {index}" for index in range(count)]
        what = f"generated series, step {step}"
        log_versions(trainer, "samples", [samples], ["generated"], titles, what, step)


class ReconstructionGrid(PeriodicDrawing):
    """Fixed validation items beside their reconstructions: alternating image rows, or a figure of series."""

    data_kinds = ("image", "sequence")
    count = 32

    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        return isinstance(pl_module, Autoencoder)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        datamodule = trainer.datamodule
        items = first_val_items(datamodule, SERIES_SHOWN if pl_module.data_kind == "sequence" else self.count)
        inputs = datamodule.to_model_range(items.to(pl_module.device))
        versions = [inputs, pl_module.reconstruct(inputs)]
        titles = [f"val series {index}" for index in range(len(inputs))]
        what = f"validation series and reconstructions, step {step}"
        log_versions(trainer, "reconstructions", versions, ["real", "reconstructed"], titles, what, step)


class DiscriminatorReconstructionGrid(PeriodicDrawing):
    """What an autoencoder discriminator (BEGAN, EBGAN) makes of real and generated images, in rows of 8."""

    count = 32

    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        return isinstance(pl_module, ReconstructingDiscriminator)

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        real = to_model_range(first_val_items(trainer.datamodule, self.count).to(pl_module.device))
        noise = generator(self.seed, "discriminator reconstruction grid")
        grid = interleaved(list(pl_module.discriminator_reconstructions(real, noise).values()))
        log_image_grid(trainer, "d_reconstructions", grid, step, nrow=8)


def slerp(start: torch.Tensor, end: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation: stays where a Gaussian prior has its mass, unlike a straight line."""
    start_unit = start / start.norm(dim=-1, keepdim=True)
    end_unit = end / end.norm(dim=-1, keepdim=True)
    angle = torch.acos((start_unit * end_unit).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    weights = weights.view(-1, 1)
    return (torch.sin((1 - weights) * angle) * start + torch.sin(weights * angle) * end) / torch.sin(angle)


class InterpolationGrid(PeriodicDrawing):
    """Each row walks the latent space between two points: encoded validation images for autoencoders (a
    line), prior draws for models that only sample (slerp, the run seed's "interpolation grid" stream)."""

    # `count` rows of `steps` images each.
    count = 8
    steps = 10

    def applies_to(self, pl_module: pl.LightningModule) -> bool:
        return isinstance(pl_module, (Autoencoder, Sampler)) and hasattr(pl_module, "decode")

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, step: int) -> None:
        weights = torch.linspace(0, 1, self.steps, device=pl_module.device)
        if isinstance(pl_module, Autoencoder):
            # Rows pair consecutive images, so an odd count (a small folder's split) drops its last image.
            pairs = min(self.count, trainer.datamodule.split_size("val") // 2)
            if pairs == 0:
                return
            images = first_val_items(trainer.datamodule, 2 * pairs)
            ends = pl_module.encode(to_model_range(images.to(pl_module.device)))
            starts, stops = ends[0::2], ends[1::2]
            rows = [
                start + weights.view(-1, 1) * (stop - start)
                for start, stop in zip(starts, stops, strict=True)
            ]
        else:
            draws = generator(self.seed, "interpolation grid")
            starts = pl_module.prior_noise(self.count, draws)
            stops = pl_module.prior_noise(self.count, draws)
            rows = [
                slerp(start.expand(self.steps, -1), stop.expand(self.steps, -1), weights)
                for start, stop in zip(starts, stops, strict=True)
            ]
        images = pl_module.decode(torch.cat(rows))
        log_image_grid(trainer, "interpolations", images, step, nrow=self.steps)


class AugmentationPreview(ModelSpecificCallback):
    """Training items beside what the augmentation makes of them (data-side, and D's), as training starts."""

    shown = {"image": 32, "sequence": SERIES_SHOWN}

    def __init__(self, seed: int = 0, discriminator_side: bool = False) -> None:
        self.seed = seed
        self.discriminator_side = discriminator_side

    def _sides(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> tuple[Any, Any]:
        """The data-side augmentation and the discriminator's input, each None where the run has none."""
        shows_discriminator = self.discriminator_side and isinstance(pl_module, ImageDiscriminator)
        discriminator_input = pl_module.discriminator_input if shows_discriminator else None
        return getattr(datamodule, "preview", None), discriminator_input

    def applies(self, pl_module: pl.LightningModule, datamodule: pl.LightningDataModule) -> bool:
        return self._sides(pl_module, datamodule) != (None, None)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not trainer.is_global_zero or not self.applies(pl_module, datamodule):
            return
        data_side, discriminator_side = self._sides(pl_module, datamodule)
        size = datamodule.split_size("train")
        pick = torch.randperm(size, generator=generator(self.seed, "augmentation preview images"))
        pick = pick[: self.shown[datamodule.data_kind]]
        items, labels = datamodule.items_at("train", pick)
        originals = datamodule.to_model_range(items.to(pl_module.device))
        versions = [originals]
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(int_seed(self.seed, "augmentation preview draws"))
            if data_side is not None:
                versions.append(data_side(originals, labels.to(pl_module.device)))
            if discriminator_side is not None:
                versions.append(discriminator_side(originals))
        titles = [f"train series {index}" for index in pick.tolist()]
        what = "training series and their augmentation"
        log_versions(
            trainer, "augmentation", versions, ["real", "augmented"], titles, what, pl_module.iteration
        )
