"""The Parzen-window log-likelihood against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from lightning_genae.metrics.parzen import MNIST_SIGMAS, parzen_log_likelihood, select_bandwidth


def test_one_sample_is_a_gaussian_density():
    sample, point = torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 1.0]])
    sigma = 0.5
    expected = -1 / (2 * sigma**2) - 2 * math.log(sigma * math.sqrt(2 * math.pi))
    assert parzen_log_likelihood(sample, point, sigma).item() == pytest.approx(expected, abs=1e-12)


def test_many_samples_match_scipy_mixture():
    rng = np.random.default_rng(0)
    samples, points = rng.random((50, 6)), rng.random((13, 6))
    sigma = 0.3
    densities = np.stack(
        [multivariate_normal(mean=s, cov=sigma**2 * np.eye(6)).logpdf(points) for s in samples]
    )
    expected = logsumexp(densities, axis=0) - math.log(len(samples))
    got = parzen_log_likelihood(torch.tensor(samples), torch.tensor(points), sigma, batch=4)
    np.testing.assert_allclose(got.numpy(), expected, rtol=0, atol=1e-9)


def test_the_bandwidth_is_the_grid_value_with_the_best_validation_likelihood():
    torch.manual_seed(0)
    samples = torch.rand(200, 4) * 0.1
    validation = torch.rand(50, 4) * 0.1
    sigma, means = select_bandwidth(samples, validation, (0.001, 0.03, 3.0))
    assert sigma == max(means, key=means.get) == 0.03
    assert len(MNIST_SIGMAS) == 10 and MNIST_SIGMAS[0] == pytest.approx(0.1) and MNIST_SIGMAS[-1] == 1.0
