"""Convolutional autoencoder; `denoise > 0` turns it into a denoising autoencoder."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.metrics.reconstruction import ReconstructionQuality
from lightning_genae.models.base import GenerativeModule
from lightning_genae.nets import ConvDecoder, ConvEncoder

ReconLoss = Literal["mse", "bce"]


def reconstruction_loss(logits_or_images: Tensor, target: Tensor, kind: ReconLoss) -> Tensor:
    """Per-image reconstruction loss, summed over pixels.

    `mse` compares images in [-1, 1]; `bce` treats pixels rescaled to [0, 1] as Bernoulli targets of
    the decoder's logits.
    """
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits_or_images, (target + 1) / 2, reduction="none")
    else:
        per_pixel = (logits_or_images - target) ** 2
    return per_pixel.flatten(1).sum(1)


def logits_to_image(logits: Tensor) -> Tensor:
    """sigmoid(logits) mapped from [0, 1] to [-1, 1]."""
    return torch.tanh(logits / 2)


class AutoencoderModule(GenerativeModule):
    """Deterministic conv autoencoder trained on reconstruction (optionally from noisy inputs)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int = 32,
        width: int = 64,
        lr: float = 1e-3,
        recon_loss: ReconLoss = "mse",
        denoise: float = 0.0,
    ) -> None:
        super().__init__(image_shape, latent_dim)
        self.save_hyperparameters(logger=False)
        self.encoder = ConvEncoder(image_shape, latent_dim, width=width)
        self.decoder = ConvDecoder(
            image_shape, latent_dim, width=width, output="logits" if recon_loss == "bce" else "tanh"
        )
        self.reconstruction_quality = ReconstructionQuality()

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def decode(self, latents: Tensor) -> Tensor:
        out = self.decoder(latents)
        return logits_to_image(out) if self.hparams.recon_loss == "bce" else out

    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))

    def corrupt(self, images: Tensor) -> Tensor:
        """Gaussian input noise of std `denoise` (in [-1, 1] units), clipped to the image range."""
        if self.hparams.denoise <= 0:
            return images
        return (images + self.hparams.denoise * torch.randn_like(images)).clamp(-1, 1)

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, _ = batch
        inputs = self.corrupt(images) if stage == "train" else images
        out = self.decoder(self.encode(inputs))
        loss = reconstruction_loss(out, images, self.hparams.recon_loss).mean() / images[0].numel()
        recon = logits_to_image(out) if self.hparams.recon_loss == "bce" else out
        # Pixel MSE is logged for every loss choice so that runs compare on one scale.
        mse = F.mse_loss(recon.detach(), images)
        on_step = stage == "train"
        self.log(
            f"{stage}/loss", loss, on_step=on_step, on_epoch=not on_step, prog_bar=True, sync_dist=not on_step
        )
        self.log(f"{stage}/mse", mse, on_step=on_step, on_epoch=not on_step, sync_dist=not on_step)
        if stage != "train":
            self.log_dict(self.reconstruction_quality.update(stage, recon, images), on_epoch=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.model_step(batch, "train")
        self.ensure_finite(**{"train/loss": loss})
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.model_step(batch, "test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
