"""A small MLP discriminator of latent codes: the adversarial autoencoder's, apart from its module."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class LatentDiscriminator(nn.Module):
    """Code [B, latent_dim] (and an optional one-hot condition [B, condition_dim]) -> one logit per code.

    Two hidden LeakyReLU layers, as the adversarial autoencoder's discriminator (Makhzani et al. 2015):
    codes are vectors, so no convolution; a condition (the class or mixture component) is concatenated
    to the code, which is how the paper's label-incorporating variant tells D which component to expect.
    """

    def __init__(self, latent_dim: int, hidden: int, condition_dim: int = 0) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim + condition_dim, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, hidden),
            nn.LeakyReLU(0.2),
            nn.Linear(hidden, 1),
        )

    def forward(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.condition_dim:
            if condition is None:
                raise ValueError("this discriminator is conditioned: pass the one-hot condition")
            codes = torch.cat([codes, condition.to(codes.dtype)], dim=1)
        return self.net(codes).squeeze(1)
