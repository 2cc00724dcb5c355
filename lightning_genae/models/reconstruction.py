"""What the autoencoder families share: reconstruction losses, the decoder's output, steps and optimizer."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_genae.metrics.reconstruction import ReconstructionQuality
from lightning_genae.models.base import ObjectiveModule, adam, inference
from lightning_genae.models.options import ReconLoss, ReconstructionOptions, SingleObjectiveOptions
from lightning_genae.nets.conv import ConvDecoder, ConvEncoder


def reconstruction_loss(logits_or_images: Tensor, target: Tensor, kind: ReconLoss) -> Tensor:
    """Per-image reconstruction loss, summed over pixels: `mse` of images in [-1, 1]; `bce` of the
    decoder's logits against the pixels on [0, 1] as Bernoulli targets."""
    if kind == "bce":
        per_pixel = F.binary_cross_entropy_with_logits(logits_or_images, (target + 1) / 2, reduction="none")
    else:
        per_pixel = (logits_or_images - target) ** 2
    return per_pixel.flatten(1).sum(1)


class ReconstructionModule(ObjectiveModule):
    """The shared conv encoder and decoder, and one `model_step` for train, val and test; with `bce` the
    decoder outputs logits, turned into images by `decode`, with `mse` images."""

    options: ReconstructionOptions
    # Encoder outputs per latent dimension: 1 for a code, 2 for a Gaussian's mean and log-variance.
    encoder_outputs_per_latent: ClassVar[int] = 1

    def __init__(self, image_shape: tuple[int, int, int] | list[int], **options: Any) -> None:
        super().__init__(image_shape, **options)
        self.encoder, self.decoder = self.autoencoder_nets()
        self.reconstruction_quality = ReconstructionQuality()

    @property
    def decoder_output(self) -> str:
        """What the decoder's last layer gives: logits for a Bernoulli likelihood, else tanh images."""
        return "logits" if self.options.recon_loss == "bce" else "tanh"

    def autoencoder_nets(self) -> tuple[nn.Module, nn.Module]:
        """(encoder, decoder): the shared conv nets at --width."""
        encoder = ConvEncoder(
            self.image_shape, self.encoder_outputs_per_latent * self.latent_dim, width=self.options.width
        )
        decoder = ConvDecoder(
            self.image_shape, self.latent_dim, width=self.options.width, output=self.decoder_output
        )
        return encoder, decoder

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images)

    def as_image(self, decoder_output: Tensor) -> Tensor:
        """The decoder's output as an image in [-1, 1] (`bce`'s sigmoid on [-1, 1] is tanh(logits / 2))."""
        return torch.tanh(decoder_output / 2) if self.options.recon_loss == "bce" else decoder_output

    def decode(self, latents: Tensor) -> Tensor:
        return self.as_image(self.decoder(latents))

    @inference
    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        optimizer = adam(self.parameters(), lr=self.options.lr)
        if not isinstance(self.options, SingleObjectiveOptions) or self.options.lr_schedule == "constant":
            return optimizer
        # Cosine annealing to 0 at the run's last iteration, stepped every iteration. The length is read
        # when each step is taken, not stored: a run continued to a larger --max-steps anneals over the new
        # length, and past its end the rate stays at 0 (torch's CosineAnnealingLR would rise again).
        trainer = self.trainer

        def cosine(step: int) -> float:
            total = max(int(trainer.estimated_stepping_batches), 1)
            return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
