"""The Gaussian posterior of the variational families (vae, rae --variational, vaegan): one KL term."""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Log-variance bounds: exp(-30) and exp(20) keep the KL and the reparameterisation finite in 16-bit
# autocast and fp32 alike, far outside what a trained encoder produces.
LOG_VAR_RANGE = (-30.0, 20.0)


def gaussian_posterior(encoder_output: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and (clamped) log-variance of q(z|x) from an encoder's 2 x latent_dim outputs."""
    mean, log_var = encoder_output.chunk(2, dim=1)
    return mean, log_var.clamp(*LOG_VAR_RANGE)


def reparameterize(mean: Tensor, log_var: Tensor) -> Tensor:
    """A draw z = mean + sigma * eps that gradients flow through."""
    return mean + torch.randn_like(mean) * (0.5 * log_var).exp()


def gaussian_kl(mean: Tensor, log_var: Tensor) -> Tensor:
    """KL(N(mean, exp(log_var)) || N(0, I)) per sample, summed over latent dimensions."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1.0 - log_var).sum(1)


class GaussianEncoding:
    """A family whose encoder gives q(z|x)'s mean and log-variance; its code is the posterior mean."""

    encoder: nn.Module

    def posterior(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return gaussian_posterior(self.encoder(images))

    def encode(self, images: Tensor) -> Tensor:
        """The posterior mean: the deterministic code that tools (probes, augmentation) use."""
        return self.posterior(images)[0]
