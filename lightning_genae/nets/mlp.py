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


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): `units` outputs, each the largest of `pieces` linear ones."""

    def __init__(self, inputs: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(inputs, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(-1, self.units, self.pieces).amax(dim=2)


class MaxoutDiscriminator(nn.Module):
    """Image -> one logit: the GAN paper's MNIST discriminator (Goodfellow et al. 2014, goodfeli/adversarial
    mnist.yaml): two maxout layers of 240 units with 5 pieces, dropout on every layer's input (the image's
    pixels kept with probability 0.8, the hidden units with 0.5, the kept ones scaled up), a linear logit."""

    def __init__(self, image_shape: tuple[int, int, int], units: int = 240, pieces: int = 5) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.body = nn.Sequential(
            nn.Dropout(0.2),
            Maxout(channels * height * width, units, pieces),
            nn.Dropout(0.5),
            Maxout(units, units, pieces),
        )
        self.head = nn.Sequential(nn.Dropout(0.5), nn.Linear(units, 1))

    def features(self, x: Tensor) -> Tensor:
        """The second maxout layer's units [B, units], the layer the logit is read from."""
        return self.body(x.flatten(1))

    def logits_of_features(self, features: Tensor) -> Tensor:
        return self.head(features).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits_of_features(self.features(x))


def init_uniform(bound: float):
    """An `apply` function: every linear layer's weights U(-bound, bound) and biases 0, as pylearn2's
    `irange` (the GAN paper's generator 0.05, its discriminator 0.005)."""

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.uniform_(module.weight, -bound, bound)
            nn.init.zeros_(module.bias)

    return init
