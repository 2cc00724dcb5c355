import pytest
import torch

from lightning_genae.errors import ConfigError
from lightning_genae.nets.conv import ConvDecoder, ConvDiscriminator, ConvEncoder, downsampling_plan

pytestmark = pytest.mark.quick


@pytest.mark.parametrize(
    ("size", "stages", "base"), [(16, 2, 4), (28, 2, 7), (32, 3, 4), (64, 4, 4), (48, 3, 6)]
)
def test_downsampling_plan_halves_to_a_small_map(size, stages, base):
    assert downsampling_plan(size) == (stages, base)


@pytest.mark.parametrize("size", [16, 28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_nets_round_trip_every_supported_size(size, channels):
    shape = (channels, size, size)
    images = torch.rand(3, *shape) * 2 - 1
    latents = ConvEncoder(shape, out_features=12, width=8)(images)
    assert latents.shape == (3, 12)
    decoded = ConvDecoder(shape, latent_dim=12, width=8)(latents)
    assert decoded.shape == (3, *shape)
    assert decoded.abs().max() <= 1
    assert ConvDiscriminator(shape, width=8)(decoded).shape == (3,)
    assert ConvDiscriminator(shape, width=8, spectral_norm=True)(decoded).shape == (3,)


@pytest.mark.parametrize("size", [25, 2, 9])
def test_unsupported_sizes_are_rejected_with_the_fix(size):
    with pytest.raises(ConfigError, match="use"):
        downsampling_plan(size)


def test_logits_decoder_is_unbounded():
    decoder = ConvDecoder((1, 16, 16), latent_dim=4, width=8, output="logits")
    assert decoder(torch.randn(2, 4) * 50).abs().max() > 1


def test_a_width_past_the_conv_nets_widest_layer_is_refused_naming_the_fix():
    """Every stage is capped at the widest layer, so a wider width would build the capped nets while the run
    recorded the width asked."""
    from lightning_genae.errors import ConfigError
    from lightning_genae.nets.conv import ConvEncoder

    assert sum(p.numel() for p in ConvEncoder((1, 16, 16), 8, width=512).parameters()) > 0
    refusal = r"a width of 513 is wider than the conv nets' widest layer \(512\)"
    with pytest.raises(ConfigError, match=refusal):
        ConvEncoder((1, 16, 16), 8, width=513)
