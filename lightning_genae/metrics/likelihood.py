"""Test log-likelihood of a latent-variable model by importance sampling: the IWAE estimator (Burda et al.,
ICLR 2016), a lower bound that tightens as k grows, summed in log space in float64. `subset_corrected_mean`
gives a costly k's figure on every image from a cheap k on all and both on a random subset."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

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
    """Per-example log p(x) estimates [B] from a diagonal Gaussian q(z|x) = N(mean, exp(log_var)) [B, L] and
    the prior N(0, I); `log_likelihood(z)` maps draws [n, B, L] to log p(x|z) [n, B]."""
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


def subset_corrected_mean(cheap_all: Tensor, subset: Tensor, costly_subset: Tensor) -> tuple[float, float]:
    """mean(cheap_all) + mean(costly_subset - cheap_all[subset]) and its standard error (finite-population
    corrected): unbiased for the costly estimator's mean over all N, `subset` drawn apart from the model."""
    differences = costly_subset.double() - cheap_all.double()[subset]
    n, total = len(differences), len(cheap_all)
    figure = cheap_all.double().mean() + differences.mean()
    standard_error = differences.std() / math.sqrt(n) * math.sqrt(1 - n / total)
    return figure.item(), standard_error.item()
