"""Model families. A new family is one file here plus one line in MODELS."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_genae.models.ae import AutoencoderModule
from lightning_genae.models.base import Autoencoder, GenerativeModule, Sampler
from lightning_genae.models.gan import GANModule
from lightning_genae.models.vae import VAEModule


@dataclass(frozen=True)
class ModelSpec:
    """A registered family: its LightningModule, a one-line description, and the options it takes."""

    module: type[GenerativeModule]
    description: str
    options: tuple[str, ...]


COMMON_OPTIONS = ("latent_dim", "width", "lr")

MODELS: dict[str, ModelSpec] = {
    "ae": ModelSpec(
        AutoencoderModule,
        "conv autoencoder (MSE/BCE); --denoise SIGMA makes it denoising",
        COMMON_OPTIONS + ("recon_loss", "denoise"),
    ),
    "vae": ModelSpec(
        VAEModule,
        "variational autoencoder with beta and KL warm-up; samples from the prior",
        COMMON_OPTIONS + ("recon_loss", "beta", "kl_warmup"),
    ),
    "gan": ModelSpec(
        GANModule,
        "DCGAN, non-saturating or hinge loss, optional generator EMA",
        COMMON_OPTIONS + ("gan_loss", "ema", "spectral_norm"),
    ),
}

__all__ = [
    "MODELS",
    "Autoencoder",
    "AutoencoderModule",
    "GANModule",
    "GenerativeModule",
    "ModelSpec",
    "Sampler",
    "VAEModule",
]
