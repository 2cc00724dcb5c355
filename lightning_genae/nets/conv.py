"""DCGAN-style convolutional encoder, decoder and discriminator shared by every family, so an ablation
compares models on equal networks: stride-2 halvings to a 4-7 pixel map, widths doubling as it shrinks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_genae.errors import ConfigError

MAX_BASE_SIZE = 7
# The widest layer of the conv nets: widths double from --width at full resolution up to this.
MAX_WIDTH = 512


def downsampling_plan(image_size: int, max_base: int = MAX_BASE_SIZE) -> tuple[int, int]:
    """(stride-2 stages, base map size) for a square image side, halving while the side exceeds `max_base`."""
    stages, size = 0, image_size
    while size > max_base and size % 2 == 0:
        size //= 2
        stages += 1
    if size > max_base or stages == 0:
        raise ConfigError(
            f"image size {image_size} cannot be halved to a 4-{max_base} pixel map; use 16, 28, 32 or 64"
        )
    return stages, size


def _widths(width: int, stages: int) -> list[int]:
    """Channel widths from the full-resolution stage down to the base map."""
    if width > MAX_WIDTH:
        # Every stage would be capped at MAX_WIDTH while the run records the width asked.
        raise ConfigError(
            f"a width of {width} is wider than the conv nets' widest layer ({MAX_WIDTH}); give width (or "
            f"augmenter_width) {MAX_WIDTH} or less"
        )
    return [min(width * 2**i, MAX_WIDTH) for i in range(stages)]


class ConvEncoder(nn.Module):
    """Image [B,C,H,W] in [-1,1] -> vector [B, out_features] (latent code, or mean and log-variance)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        out_features: int,
        width: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__()
        channels, height, _ = image_shape
        stages, base = downsampling_plan(height)
        widths = _widths(width, stages)
        layers: list[nn.Module] = []
        in_ch = channels
        for i, out_ch in enumerate(widths):
            layers.append(nn.Conv2d(in_ch, out_ch, 4, stride=2, padding=1, bias=not (batch_norm and i > 0)))
            # DCGAN: no normalisation on the first layer, so the input's statistics reach the net.
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch * base * base, out_features)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(self.features(x), 1))


class ConvDecoder(nn.Module):
    """Latent [B, latent_dim] -> image [B,C,H,W]; `output` picks tanh ([-1,1]) or raw logits."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        width: int = 64,
        output: str = "tanh",
    ) -> None:
        super().__init__()
        channels, height, _ = image_shape
        stages, base = downsampling_plan(height)
        widths = _widths(width, stages)[::-1]
        self.base_shape = (widths[0], base, base)
        self.project = nn.Sequential(
            nn.Linear(latent_dim, widths[0] * base * base, bias=False),
            nn.BatchNorm1d(widths[0] * base * base),
            nn.ReLU(inplace=True),
        )
        layers: list[nn.Module] = []
        for in_ch, out_ch in zip(widths[:-1], widths[1:], strict=True):
            layers += [
                nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.ConvTranspose2d(widths[-1], channels, 4, stride=2, padding=1))
        if output == "tanh":
            layers.append(nn.Tanh())
        self.blocks = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.blocks(self.project(z).view(-1, *self.base_shape))


class ConvDiscriminator(nn.Module):
    """Image -> one real/fake logit per image. `spectral_norm` suits the hinge loss."""

    def __init__(
        self, image_shape: tuple[int, int, int], width: int = 64, spectral_norm: bool = False
    ) -> None:
        super().__init__()
        # Batch norm and spectral norm fight each other; spectral-normalised D goes without BN.
        self.encoder = ConvEncoder(image_shape, out_features=1, width=width, batch_norm=not spectral_norm)
        if spectral_norm:
            for module in self.encoder.modules():
                if isinstance(module, (nn.Conv2d, nn.Linear)):
                    nn.utils.parametrizations.spectral_norm(module)

    def features(self, x: Tensor) -> Tensor:
        """The last conv stage's map [B, C, h, w] the logit is read from (the VAE-GAN's similarity)."""
        return self.encoder.features(x)

    def logits_of_features(self, features: Tensor) -> Tensor:
        """One logit per image from `features(x)`, so a caller needing both runs the convolutions once."""
        return self.encoder.head(torch.flatten(features, 1)).squeeze(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.logits_of_features(self.features(x))


class ConvAutoencoder(nn.Module):
    """Image -> code -> image in [-1, 1]: the shared encoder and tanh decoder (BEGAN's discriminator)."""

    encoder_type: type[nn.Module] = ConvEncoder
    decoder_type: type[nn.Module] = ConvDecoder

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64, **options: object
    ) -> None:
        super().__init__()
        self.encoder = self.encoder_type(image_shape, latent_dim, width)
        self.decoder = self.decoder_type(image_shape, latent_dim, width, **options)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(reconstruction, code): energy losses need the first, EBGAN's pulling-away term the second."""
        code = self.encoder(x)
        return self.decoder(code), code


def init_dcgan_weights(module: nn.Module) -> None:
    """DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) batch-norm scales."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)
