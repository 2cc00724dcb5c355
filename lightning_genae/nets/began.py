"""BEGAN's own networks (Berthelot et al. 2017): 3x3 convolutions with ELU, nearest-neighbour upsampling,
channels growing linearly, and no batch norm (D sees real-only and fake-only batches, whose statistics it
would learn to tell apart). Scales follow the shared nets' `downsampling_plan`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_genae.nets.conv import ConvAutoencoder, downsampling_plan


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1)


class BEGANDecoder(nn.Module):
    """Code [B, h] -> image [B, C, H, W], unbounded (no tanh, as in the paper); with `skip_connections`
    (3.5.1) the projected base map is upsampled and concatenated at every scale."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        width: int = 64,
        skip_connections: bool = False,
    ) -> None:
        super().__init__()
        channels, height, _ = image_shape
        stages, base = downsampling_plan(height)
        self.base_shape = (width, base, base)
        self.skip_connections = skip_connections
        self.project = nn.Linear(latent_dim, width * base * base)
        layers: list[nn.Module] = []
        for scale in range(stages + 1):
            if scale > 0:
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            # After an upsampling the skip connection adds h0's n channels to the features' n.
            in_ch = 2 * width if skip_connections and scale > 0 else width
            layers += [
                _conv3x3(in_ch, width),
                nn.ELU(inplace=True),
                _conv3x3(width, width),
                nn.ELU(inplace=True),
            ]
        layers.append(_conv3x3(width, channels))
        self.blocks = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        h0 = self.project(z).view(-1, *self.base_shape)
        if not self.skip_connections:
            return self.blocks(h0)
        x = h0
        for layer in self.blocks:
            x = layer(x)
            if isinstance(layer, nn.Upsample):
                x = torch.cat([x, F.interpolate(h0, size=x.shape[-2:], mode="nearest")], dim=1)
        return x


class BEGANEncoder(nn.Module):
    """Image [B, C, H, W] -> embedding [B, h]."""

    def __init__(self, image_shape: tuple[int, int, int], latent_dim: int, width: int = 64) -> None:
        super().__init__()
        channels, height, _ = image_shape
        stages, base = downsampling_plan(height)
        layers: list[nn.Module] = [_conv3x3(channels, width), nn.ELU(inplace=True)]
        in_ch = width
        for scale in range(stages + 1):
            out_ch = width * (scale + 1)
            layers += [
                _conv3x3(in_ch, out_ch),
                nn.ELU(inplace=True),
                _conv3x3(out_ch, out_ch),
                nn.ELU(inplace=True),
            ]
            if scale < stages:
                layers += [_conv3x3(out_ch, out_ch, stride=2), nn.ELU(inplace=True)]
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(in_ch * base * base, latent_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x).flatten(1))


def init_began_weights(module: nn.Module) -> None:
    """Glorot-uniform weights and zero biases, as the paper's reference gets them (TensorFlow-slim): PyTorch's
    default scale shrinks the signal through 10+ unnormalised layers, so a fresh generator draws one image."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class BEGANAutoencoder(ConvAutoencoder):
    """BEGAN's discriminator: image -> embedding -> reconstruction (`skip_connections` its decoder's)."""

    encoder_type = BEGANEncoder
    decoder_type = BEGANDecoder
