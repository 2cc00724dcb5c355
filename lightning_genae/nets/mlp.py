"""Fully connected nets: the adversarial autoencoder's latent discriminator, and the image encoder and
decoder of the adversarial autoencoder paper's MNIST experiments, apart from their module."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def two_hidden_layers(inputs: int, hidden: int, outputs: int, negative_slope: float = 0.0) -> nn.Sequential:
    """Linear, two hidden layers of `hidden` units (ReLU, or leaky ReLU with a negative slope), linear out."""
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(negative_slope) if negative_slope else nn.ReLU(),
        nn.Linear(hidden, outputs),
    )


class LatentDiscriminator(nn.Module):
    """Code [B, latent_dim] (and an optional one-hot condition [B, condition_dim]) -> one logit per code.

    Two hidden LeakyReLU layers, as the adversarial autoencoder's discriminator (Makhzani et al. 2015):
    codes are vectors, so no convolution; a condition (the class or mixture component) is concatenated
    to the code, which is how the paper's label-incorporating variant tells D which component to expect.
    """

    def __init__(
        self, latent_dim: int, hidden: int, condition_dim: int = 0, negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        self.net = two_hidden_layers(latent_dim + condition_dim, hidden, 1, negative_slope)

    def forward(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.condition_dim:
            if condition is None:
                raise ValueError("this discriminator is conditioned: pass the one-hot condition")
            codes = torch.cat([codes, condition.to(codes.dtype)], dim=1)
        return self.net(codes).squeeze(1)


class MLPEncoder(nn.Module):
    """Image [B, C, H, W] -> vector [B, out_features]: the flattened pixels through two hidden ReLU layers."""

    def __init__(self, image_shape: tuple[int, int, int], out_features: int, hidden: int = 1000) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.net = two_hidden_layers(channels * height * width, hidden, out_features)

    def forward(self, images: Tensor) -> Tensor:
        return self.net(images.flatten(1))


class MLPDecoder(nn.Module):
    """Code [B, latent_dim] -> image [B, C, H, W] through two hidden ReLU layers: tanh images in [-1, 1]
    (the paper's sigmoid on [0, 1], rescaled), or logits for a Bernoulli likelihood (`output="logits"`)."""

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, hidden: int = 1000, output: str = "tanh"
    ) -> None:
        super().__init__()
        if output not in ("tanh", "logits"):
            raise ValueError(f"output must be tanh or logits, not {output!r}")
        self.image_shape = tuple(image_shape)
        channels, height, width = image_shape
        self.net = two_hidden_layers(latent_dim, hidden, channels * height * width)
        self.output = output

    def forward(self, latents: Tensor) -> Tensor:
        out = self.net(latents).view(-1, *self.image_shape)
        return torch.tanh(out) if self.output == "tanh" else out
