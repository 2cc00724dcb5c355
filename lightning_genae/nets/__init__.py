"""Plain nn.Module networks, apart from the LightningModules that train them."""

from lightning_genae.nets.conv import (
    ConvDecoder,
    ConvDiscriminator,
    ConvEncoder,
    downsampling_plan,
    init_dcgan_weights,
)
from lightning_genae.nets.mlp import (
    LatentDiscriminator,
    MaxoutDiscriminator,
    MLPDecoder,
    MLPEncoder,
    init_linear,
)

__all__ = [
    "ConvDecoder",
    "ConvDiscriminator",
    "ConvEncoder",
    "LatentDiscriminator",
    "MLPDecoder",
    "MaxoutDiscriminator",
    "MLPEncoder",
    "downsampling_plan",
    "init_dcgan_weights",
    "init_linear",
]
