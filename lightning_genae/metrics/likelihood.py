"""Test log-likelihood of a latent-variable model by importance sampling: the IWAE estimator.

Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", ICLR 2016, section 5 (the k = 5,000
test log-likelihoods of Table 1; reference code yburda/iwae): with z_1..z_k drawn from the encoder's
q(z|x),

    log p(x) ~= log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x),

an estimate whose expectation is a lower bound on log p(x) that tightens as k grows, and that is exact for
every draw when q is the true posterior. The sum is taken in log space (logsumexp) in float64, over
chunks of the k draws, so k = 5,000 fits in memory for a batch of images.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["gaussian_log_density", "importance_sampled_log_likelihood"]

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z: Tensor, mean: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mean, diag(exp(log_var))), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mean) ** 2 / log_var.exp()).sum(-1)


def importance_sampled_log_likelihood(
    mean: Tensor,
    log_var: Tensor,
    log_likelihood: Callable[[Tensor], Tensor],
    k: int,
    chunk: int = 500,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Per-example log p(x) estimates [B] from a diagonal Gaussian q(z|x) = N(mean, exp(log_var)) [B, L].

    `log_likelihood(z)` maps draws [n, B, L] to log p(x|z) [n, B] for the batch's own examples; the prior
    is N(0, I). Draws come from `generator` (seeded for a reproducible estimate).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    mean, log_var = mean.double(), log_var.double()
    std = (0.5 * log_var).exp()
    running = torch.full(mean.shape[:1], -math.inf, dtype=torch.float64, device=mean.device)
    done = 0
    while done < k:
        n = min(chunk, k - done)
        noise = torch.randn((n, *mean.shape), generator=generator, dtype=torch.float64, device=mean.device)
        z = mean + std * noise
        log_prior = gaussian_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        log_posterior = gaussian_log_density(z, mean, log_var)
        log_weights = log_likelihood(z).double() + log_prior - log_posterior
        running = torch.logaddexp(running, torch.logsumexp(log_weights, dim=0))
        done += n
    return running - math.log(k)
