"""Fully connected nets: the AAE's latent discriminator, and the AAE, GAN and IWAE papers' MNIST nets."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn


def two_hidden_layers(
    inputs: int, hidden: int, outputs: int, activation: Callable[[], nn.Module] = nn.ReLU
) -> nn.Sequential:
    """Linear, two hidden layers of `hidden` units (each followed by a fresh `activation()`), linear out."""
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        activation(),
        nn.Linear(hidden, hidden),
        activation(),
        nn.Linear(hidden, outputs),
    )


class LatentDiscriminator(nn.Module):
    """Code [B, latent_dim] (and an optional one-hot condition, the paper's label variant) -> one logit."""

    def __init__(
        self, latent_dim: int, hidden: int, condition_dim: int = 0, negative_slope: float = 0.2
    ) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        activation = partial(nn.LeakyReLU, negative_slope) if negative_slope else nn.ReLU
        self.net = two_hidden_layers(latent_dim + condition_dim, hidden, 1, activation)

    def forward(self, codes: Tensor, condition: Tensor | None = None) -> Tensor:
        if self.condition_dim:
            codes = torch.cat([codes, condition.to(codes.dtype)], dim=1)
        return self.net(codes).squeeze(1)


class MLPEncoder(nn.Module):
    """Image [B, C, H, W] -> vector [B, out_features] via two hidden layers; `unit_pixels`: read on [0, 1]."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        out_features: int,
        hidden: int = 1000,
        unit_pixels: bool = False,
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.net = two_hidden_layers(channels * height * width, hidden, out_features, activation)
        self.unit_pixels = unit_pixels

    def forward(self, images: Tensor) -> Tensor:
        pixels = images.flatten(1)
        return self.net((pixels + 1) / 2 if self.unit_pixels else pixels)


class MLPDecoder(nn.Module):
    """Code [B, latent_dim] -> image [B, C, H, W] through two hidden layers. `output`: "tanh"; "sigmoid", the
    GAN paper's [0, 1] pixels shown as 2 sigmoid(a) - 1; "logits", for a Bernoulli likelihood."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        hidden: int = 1000,
        output: str = "tanh",
        activation: Callable[[], nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        channels, height, width = image_shape
        self.net = two_hidden_layers(latent_dim, hidden, channels * height * width, activation)
        self.output = output

    def forward(self, latents: Tensor) -> Tensor:
        out = self.net(latents).view(-1, *self.image_shape)
        if self.output == "tanh":
            return torch.tanh(out)
        if self.output == "sigmoid":
            return 2 * torch.sigmoid(out) - 1
        return out

    @torch.no_grad()
    def start_at_pixel_means(self, means: Tensor, clip: float = 1e-7) -> None:
        """Output biases such that a zero pre-activation draws the per-pixel `means` in [0, 1], clipped to
        [clip, 1 - clip]: pylearn2's `init_sigmoid_bias_from_marginals`, as the GAN and IWAE papers."""
        layer = self.net[-1]
        logits = torch.logit(means.double().clamp(clip, 1 - clip)).flatten()
        layer.bias.copy_(logits.to(layer.bias))


class Maxout(nn.Module):
    """A maxout layer (Goodfellow et al. 2013): `units` outputs, each the largest of `pieces` linear ones."""

    def __init__(self, inputs: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(inputs, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(-1, self.units, self.pieces).amax(dim=2)


class MaxoutDiscriminator(nn.Module):
    """Image -> one logit: the GAN paper's MNIST discriminator (goodfeli/adversarial mnist.yaml), two maxout
    layers on [0, 1] pixels, input dropout keeping 0.8 of pixels and 0.5 of units (`dropout_masks`)."""

    KEEP = (0.8, 0.5, 0.5)

    def __init__(self, image_shape: tuple[int, int, int], units: int = 240, pieces: int = 5) -> None:
        super().__init__()
        channels, height, width = image_shape
        self.widths = (channels * height * width, units, units)
        self.hidden = nn.ModuleList([Maxout(self.widths[0], units, pieces), Maxout(units, units, pieces)])
        self.logit = nn.Linear(units, 1)

    def dropout_masks(self, n: int, reference: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One draw of the three layers' input masks for n items, each 0 or 1 / keep, like `reference`."""
        like = {"device": reference.device, "dtype": reference.dtype}
        return tuple(  # type: ignore[return-value]
            torch.bernoulli(torch.full((n, size), keep, **like)) / keep
            for size, keep in zip(self.widths, self.KEEP, strict=True)
        )

    def forward(self, x: Tensor, masks: tuple[Tensor, ...] | None = None) -> Tensor:
        h = (x.flatten(1) + 1) / 2
        if masks is None and self.training:
            masks = self.dropout_masks(x.size(0), h)
        for layer, mask in zip((*self.hidden, self.logit), masks or (None, None, None), strict=True):
            h = layer(h if mask is None else h * mask)
        return h.squeeze(1)


def init_linear(kind: str, scale: float = 1.0) -> Callable[[nn.Module], None]:
    """An `apply` function: linear layers' biases 0, weights N(0, scale^2) (`normal`: AAE paper), U(-scale,
    scale) (`uniform`: GAN paper) or Glorot-uniform times scale (`glorot`: IWAE paper)."""

    def init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            if kind == "normal":
                nn.init.normal_(module.weight, std=scale)
            elif kind == "glorot":
                nn.init.xavier_uniform_(module.weight, gain=scale)
            else:
                nn.init.uniform_(module.weight, -scale, scale)
            nn.init.zeros_(module.bias)

    return init
