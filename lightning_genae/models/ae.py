"""Convolutional autoencoder; `denoise > 0` turns it into a denoising autoencoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.models.options import AutoencoderOptions
from lightning_genae.models.reconstruction import ReconstructionModule, reconstruction_loss


class AutoencoderModule(ReconstructionModule):
    """Deterministic conv autoencoder trained on reconstruction (optionally from noisy inputs)."""

    options_type = AutoencoderOptions
    options: AutoencoderOptions

    def corrupt(self, images: Tensor) -> Tensor:
        """Gaussian input noise of std `denoise` (in [-1, 1] units), clipped to the image range."""
        if self.options.denoise <= 0:
            return images
        return (images + self.options.denoise * torch.randn_like(images)).clamp(-1, 1)

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, _ = batch
        inputs = self.corrupt(images) if stage == "train" else images
        out = self.decoder(self.encode(inputs))
        loss = reconstruction_loss(out, images, self.options.recon_loss).mean() / images[0].numel()
        recon = self.as_image(out)
        # Pixel MSE is logged for every loss choice so that runs compare on one scale.
        mse = F.mse_loss(recon.detach(), images)
        if stage == "train":
            self.log_training({"train/loss": loss}, prog_bar=True)
            self.log_training({"train/mse": mse})
            return loss
        self.log_split_means(
            {f"{stage}/loss": loss, f"{stage}/mse": mse}, len(images), prog_bar=[f"{stage}/loss"]
        )
        self.log_dict(self.reconstruction_quality.update(stage, recon, images), on_epoch=True)
        return loss
