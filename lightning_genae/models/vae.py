"""Variational autoencoder: Gaussian encoder, reparameterisation, analytic KL, beta and KL warm-up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.metrics.reconstruction import ReconstructionQuality
from lightning_genae.models.ae import ReconLoss, logits_to_image, reconstruction_loss
from lightning_genae.models.base import GenerativeModule
from lightning_genae.nets import ConvDecoder, ConvEncoder


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)


class VAEModule(GenerativeModule):
    """VAE trained on recon + beta_t * KL, beta_t rising linearly to `beta` over `kl_warmup` steps.

    `bce` is a Bernoulli likelihood on pixels in [0, 1] (so `val/elbo` is in nats per image);
    `mse` is a Gaussian one with variance 1/2 on the [-1, 1] scale (constants dropped).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int = 32,
        width: int = 64,
        lr: float = 1e-3,
        recon_loss: ReconLoss = "bce",
        beta: float = 1.0,
        kl_warmup: int = 0,
    ) -> None:
        super().__init__(image_shape, latent_dim)
        self.save_hyperparameters(logger=False)
        self.encoder = ConvEncoder(image_shape, 2 * latent_dim, width=width)
        self.decoder = ConvDecoder(
            image_shape, latent_dim, width=width, output="logits" if recon_loss == "bce" else "tanh"
        )
        self.reconstruction_quality = ReconstructionQuality()

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and log-variance of q(z|x)."""
        mean, log_var = self.encoder(images).chunk(2, dim=1)
        return mean, log_var.clamp(-30.0, 20.0)

    def encode(self, images: Tensor) -> Tensor:
        """The posterior mean: the deterministic code that tools (probes, augmentation) use."""
        return self.posterior(images)[0]

    def decode(self, latents: Tensor) -> Tensor:
        out = self.decoder(latents)
        return logits_to_image(out) if self.hparams.recon_loss == "bce" else out

    def reconstruct(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.decode(self.prior_noise(n, generator))

    def beta_now(self) -> float:
        """KL weight at the current step (linear warm-up avoids early posterior collapse)."""
        warmup = self.hparams.kl_warmup
        if warmup <= 0:
            return self.hparams.beta
        return self.hparams.beta * min(1.0, self.iteration / warmup)

    def model_step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        images, _ = batch
        mean, log_var = self.posterior(images)
        latents = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        out = self.decoder(latents)
        recon = reconstruction_loss(out, images, self.hparams.recon_loss).mean()
        kl = gaussian_kl(mean, log_var).mean()
        # Training follows the warm-up; evaluation uses the target beta so val/loss is comparable over time.
        beta = self.beta_now() if stage == "train" else self.hparams.beta
        loss = recon + beta * kl
        decoded = logits_to_image(out) if self.hparams.recon_loss == "bce" else out
        on_step = stage == "train"
        values = {
            f"{stage}/loss": loss,
            f"{stage}/recon": recon,
            f"{stage}/kl": kl,
            f"{stage}/elbo": -(recon + kl),
            f"{stage}/mse": F.mse_loss(decoded.detach(), images),
        }
        self.log_dict(values, on_step=on_step, on_epoch=not on_step, sync_dist=not on_step)
        if on_step:
            self.log("train/beta", beta, on_step=True, on_epoch=False)
        else:
            # Scored on the posterior mean's reconstruction, the deterministic one tools use.
            quality = self.reconstruction_quality.update(stage, self.decode(mean), images)
            self.log_dict(quality, on_epoch=True)
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
