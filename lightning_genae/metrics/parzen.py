"""Parzen-window log-likelihood of real images under a generator's samples, the GAN paper's estimator
(goodfeli/adversarial parzen_ll.py) that the adversarial autoencoder paper reports on MNIST: an isotropic
Gaussian kernel of width sigma (chosen on a validation set from the reference's grid) on each of N samples,
pixels in [0, 1]. A poor measure of a model (Theis et al. 2016); it is the number these papers publish."""

from __future__ import annotations

import math

import torch
from torch import Tensor

# The reference code's cross-validation grid for MNIST.
MNIST_SIGMAS = tuple(float(s) for s in torch.logspace(-1, 0, 10, dtype=torch.float64))


def parzen_log_likelihood(samples: Tensor, images: Tensor, sigma: float, batch: int = 100) -> Tensor:
    """log p(x) [M] of `images` [M, ...] under a Gaussian-kernel density on `samples` [N, ...], in nats."""
    centres = samples.flatten(1).double()
    points = images.flatten(1).double()
    dim, count = centres.shape[1], len(centres)
    centre_norms = (centres**2).sum(1)
    constant = math.log(count) + dim * math.log(sigma * math.sqrt(2 * math.pi))
    out = []
    for start in range(0, len(points), batch):
        chunk = points[start : start + batch]
        # |x - s|^2 = |x|^2 - 2 x.s + |s|^2, without an [M, N, d] tensor.
        distances = (chunk**2).sum(1, keepdim=True) - 2 * chunk @ centres.T + centre_norms
        out.append(torch.logsumexp(-distances.clamp_min(0) / (2 * sigma**2), dim=1) - constant)
    return torch.cat(out)


def select_bandwidth(
    samples: Tensor, validation: Tensor, sigmas: tuple[float, ...] = MNIST_SIGMAS
) -> tuple[float, dict[float, float]]:
    """The sigma of `sigmas` with the highest mean validation log-likelihood, and every sigma's mean."""
    means = {sigma: parzen_log_likelihood(samples, validation, sigma).mean().item() for sigma in sigmas}
    return max(means, key=means.get), means
