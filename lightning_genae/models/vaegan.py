"""VAE-GAN (Larsen et al. 2016): a VAE whose decoder is also a GAN's generator, its reconstructions compared
in the discriminator's features; three updates per iteration: discriminator, encoder, decoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.metrics.reconstruction import ReconstructionQuality
from lightning_genae.models.adversarial import ImageAdversarialModule, discriminator_loss, generator_loss
from lightning_genae.models.base import inference
from lightning_genae.models.options import VAEGANOptions
from lightning_genae.models.variational import GaussianEncoding, gaussian_kl, reparameterize
from lightning_genae.nets.conv import ConvDecoder, ConvDiscriminator, ConvEncoder, init_dcgan_weights


def feature_reconstruction_loss(reconstruction_features: Tensor, image_features: Tensor) -> Tensor:
    """Squared error between discriminator features, summed per image (the -log p of a Gaussian of variance
    1/2 up to constants, in nats beside the KL, which is summed over latent dimensions) and batch-averaged."""
    return (reconstruction_features - image_features).pow(2).flatten(1).sum(1).mean()


class VAEGANModule(GaussianEncoding, ImageAdversarialModule):
    """Shared conv encoder (mean and log-variance), decoder (tanh) and discriminator, trained as a VAE-GAN."""

    gives_real_logits = True

    options_type = VAEGANOptions
    options: VAEGANOptions
    optimizer_steps_per_iteration = 3

    def __init__(self, image_shape: tuple[int, int, int] | list[int], **options: Any) -> None:
        super().__init__(image_shape, **options)
        width = self.options.width
        self.encoder = ConvEncoder(self.image_shape, 2 * self.latent_dim, width=width)
        self.decoder = ConvDecoder(self.image_shape, self.latent_dim, width=width, output="tanh")
        self.discriminator = ConvDiscriminator(self.image_shape, width=width)
        for network in (self.encoder, self.decoder, self.discriminator):
            network.apply(init_dcgan_weights)
        self.reconstruction_quality = ReconstructionQuality()

    def decode(self, latents: Tensor) -> Tensor:
        return self.decoder(latents)

    @inference
    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))

    def objective_form(self) -> str | None:
        return "the feature loss takes each reconstruction and its image in one discriminator pass"

    def paired_features(self, reconstructions: Tensor, images: Tensor) -> tuple[Tensor, Tensor]:
        """Discriminator features of reconstructions and their images from one batch, as the reference
        concatenates them (batch norm per half would forgive a shift), augmented alike (replayed draws)."""
        replayed = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=replayed), torch.no_grad():
            shown_images = self.discriminator_input(images)
        shown_reconstructions = self.discriminator_input(reconstructions)
        features = self.discriminator.features(torch.cat([shown_reconstructions, shown_images]))
        reconstruction_features, image_features = features.split(images.size(0))
        return reconstruction_features, image_features

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        real, _ = batch
        opt_d, opt_enc, opt_dec = self.optimizers()
        n = real.size(0)

        with self.toggled_optimizer(opt_d):
            with torch.no_grad():
                reconstructed = self.decoder(reparameterize(*self.posterior(real)))
                prior_samples = self.decoder(self.training_noise(n))
            real_logits = self.discriminate(real)
            recon_logits = self.discriminate(reconstructed)
            prior_logits = self.discriminate(prior_samples)
            # The paper's L_GAN: real against both kinds of fake, each term a mean over its batch.
            loss_d = discriminator_loss(real_logits, recon_logits) + F.softplus(prior_logits).mean()
            self.manual_update(opt_d, "train/loss_d", loss_d)
            self.observe_real_logits(real_logits)

        with self.toggled_optimizer(opt_enc):
            mean, log_var = self.posterior(real)
            latents = reparameterize(mean, log_var)
            reconstructed = self.decoder(latents)
            kl = gaussian_kl(mean, log_var).mean()
            feature_loss = feature_reconstruction_loss(*self.paired_features(reconstructed, real))
            loss_enc = self.options.beta * kl + feature_loss
            self.manual_update(opt_enc, "train/loss_enc", loss_enc)

        with self.toggled_optimizer(opt_dec):
            # The same latents as the encoder's update: the decoder learns to reconstruct the same draw.
            reconstructed = self.decoder(latents.detach())
            prior_samples = self.decoder(self.training_noise(n))
            decoder_feature_loss = feature_reconstruction_loss(*self.paired_features(reconstructed, real))
            # The reconstructions' logits from a batch of their own, as the discriminator's update sees them.
            gan_loss = generator_loss(self.discriminate(reconstructed)) + generator_loss(
                self.discriminate(prior_samples)
            )
            loss_dec = self.options.vaegan_gamma * decoder_feature_loss + gan_loss
            self.manual_update(opt_dec, "train/loss_dec", loss_dec)

        self.log_training(
            {
                "train/loss_d": loss_d.detach(),
                "train/loss_enc": loss_enc.detach(),
                "train/loss_dec": loss_dec.detach(),
            },
            prog_bar=True,
        )
        self.log_training(
            {
                "train/kl": kl.detach(),
                "train/feature": feature_loss.detach(),
                "train/loss_g": gan_loss.detach(),
                "train/mse": F.mse_loss(reconstructed.detach(), real),
                "train/d_real": real_logits.detach().mean(),
                "train/d_fake": torch.cat([recon_logits, prior_logits]).detach().mean(),
            },
        )

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        images, _ = batch
        mean, log_var = self.posterior(images)
        # Scored on the posterior mean's reconstruction, the deterministic one tools use.
        reconstructed = self.decode(mean)
        values = {
            f"{stage}/mse": F.mse_loss(reconstructed, images),
            f"{stage}/kl": gaussian_kl(mean, log_var).mean(),
        }
        self.log_split_means(values, len(images))
        self.log_dict(self.reconstruction_quality.update(stage, reconstructed, images), on_epoch=True)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.adam_for(self.discriminator), self.adam_for(self.encoder), self.adam_for(self.decoder)]
