"""Model families. A new family is one file here plus one line in MODELS."""

from __future__ import annotations

from dataclasses import dataclass

from lightning_genae.models.aae import AAEModule
from lightning_genae.models.ae import AutoencoderModule
from lightning_genae.models.base import (
    Autoencoder,
    DiscriminatorAugmentation,
    FamilyOptions,
    GenerativeModule,
    ImageDiscriminator,
    ReconstructingDiscriminator,
    Sampler,
)
from lightning_genae.models.began import BEGANModule
from lightning_genae.models.gan import GANModule
from lightning_genae.models.rae import RAEModule
from lightning_genae.models.vae import VAEModule
from lightning_genae.models.vaegan import VAEGANModule


@dataclass(frozen=True)
class ModelSpec:
    """A registered family: its LightningModule and a one-line description; its options are the module's."""

    module: type[GenerativeModule]
    description: str

    @property
    def options(self) -> type[FamilyOptions]:
        return self.module.options_type


MODELS: dict[str, ModelSpec] = {
    "ae": ModelSpec(AutoencoderModule, "conv autoencoder (MSE/BCE); --denoise SIGMA makes it denoising"),
    "vae": ModelSpec(VAEModule, "variational autoencoder with beta and KL warm-up; samples from the prior"),
    "gan": ModelSpec(GANModule, "DCGAN, non-saturating or hinge loss, optional generator EMA"),
    "began": ModelSpec(BEGANModule, "BEGAN (or --d-loss ebgan: EBGAN): the discriminator is an autoencoder"),
    "vaegan": ModelSpec(
        VAEGANModule, "VAE-GAN: a VAE whose decoder is the generator, reconstructing in D's features"
    ),
    "aae": ModelSpec(
        AAEModule, "adversarial autoencoder: a latent discriminator matches the codes to a prior"
    ),
    "rae": ModelSpec(RAEModule, "recurrent (LSTM/GRU) autoencoder of series; --variational for the VAE form"),
}

__all__ = [
    "MODELS",
    "AAEModule",
    "Autoencoder",
    "AutoencoderModule",
    "BEGANModule",
    "DiscriminatorAugmentation",
    "FamilyOptions",
    "GANModule",
    "GenerativeModule",
    "ImageDiscriminator",
    "ModelSpec",
    "RAEModule",
    "ReconstructingDiscriminator",
    "Sampler",
    "VAEGANModule",
    "VAEModule",
]
