"""How far codes are from their prior: the KL of a Gaussian fitted to the codes, summed over devices."""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

# Added to the fitted covariance's diagonal so that a degenerate fit (fewer codes than dimensions, or a
# collapsed dimension) gives a large finite KL instead of infinity.
COVARIANCE_JITTER = 1e-6


def gaussian_kl_divergence(mean0: Tensor, cov0: Tensor, mean1: Tensor, cov1: Tensor) -> Tensor:
    """KL(N(mean0, cov0) || N(mean1, cov1)) in nats, for full covariances (closed form)."""
    dim = mean0.numel()
    cov1_inverse = torch.linalg.inv(cov1)
    difference = (mean1 - mean0).unsqueeze(1)
    trace = torch.trace(cov1_inverse @ cov0)
    mahalanobis = (difference.T @ cov1_inverse @ difference).squeeze()
    log_det_ratio = torch.linalg.slogdet(cov1)[1] - torch.linalg.slogdet(cov0)[1]
    return 0.5 * (trace + mahalanobis - dim + log_det_ratio)


class CodeGaussianKL(Metric):
    """KL of N(mean, covariance of the codes seen) against the Gaussian of the prior's first two moments (a
    mixture's codes can match them and miss its components), summed in float64 across processes."""

    full_state_update = False

    def __init__(self, prior_mean: Tensor, prior_covariance: Tensor) -> None:
        super().__init__()
        dim = prior_mean.numel()
        self.register_buffer("prior_mean", prior_mean.double(), persistent=False)
        self.register_buffer("prior_covariance", prior_covariance.double(), persistent=False)
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, codes: Tensor) -> None:
        codes = codes.detach().double()
        self.count += codes.size(0)
        self.total += codes.sum(0)
        self.outer += codes.T @ codes

    def compute(self) -> Tensor:
        mean = self.total / self.count
        covariance = (self.outer - self.count * torch.outer(mean, mean)) / (self.count - 1).clamp(min=1)
        covariance.diagonal().add_(COVARIANCE_JITTER)
        # The prior's moments as float64 whatever dtype the module was moved to (bf16-true casts buffers).
        prior_mean, prior_covariance = self.prior_mean.double(), self.prior_covariance.double()
        return gaussian_kl_divergence(mean, covariance, prior_mean, prior_covariance).float()
