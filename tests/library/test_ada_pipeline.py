"""ADA's augmentation pipeline: identity at p = 0, per-image probability p, blits, padding, colour maps."""

import math

import pytest
import torch

from lightning_genae.augmentation.ada import (
    ADA_OPERATIONS,
    AdaPipeline,
    _Draws,
    _inverse_geometry,
    check_ops_fit,
    default_ada_ops,
    parse_ada_ops,
)
from lightning_genae.errors import ConfigError, OptionError

pytestmark = pytest.mark.quick

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 4, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, c, h, w, generator=_gen(seed)) * 2 - 1


def _digit(b: int = 1, size: int = 16) -> torch.Tensor:
    """A digit-like image: background -1, a distinct value in every pixel of a central block."""
    image = torch.full((b, 1, size, size), -1.0)
    block = torch.linspace(-0.9, 0.9, 36).view(6, 6)
    image[:, 0, 5:11, 5:11] = block
    return image


def _changed(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x != y).flatten(1).any(dim=1)


# --- identity and probability ----------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_float_p_zero_returns_the_input_itself(channels):
    x = _images(c=channels)
    assert AdaPipeline(default_ada_ops(channels), p=0.0)(x, _gen()) is x


@pytest.mark.parametrize("channels", [1, 3])
def test_tensor_p_zero_returns_the_input_values_bit_for_bit(channels):
    x = _images(b=16, c=channels)
    y = AdaPipeline(default_ada_ops(channels), p=torch.tensor(0.0))(x, _gen())
    assert torch.equal(x, y)


@pytest.mark.parametrize("channels", [1, 3])
def test_every_image_changes_at_p_one(channels):
    x = _images(b=64, c=channels)
    y = AdaPipeline(default_ada_ops(channels), p=1.0)(x, _gen())
    assert _changed(x, y).all()


# Share of the images an operation visibly changes when it applies: ADA flips half of them, turns three
# quarters, and a whole-pixel shift on 16 px rounds to (0, 0) with probability (1/4)^2.
_CHANGED_SHARE = {"xflip": 0.5, "rotate90": 0.75, "translation": 15 / 16, "lumaflip": 0.5}


@pytest.mark.parametrize("op", list(ADA_OPERATIONS))
def test_share_of_images_an_operation_changes_follows_p(op):
    p, batch = 0.3, 2000
    x = _images(b=batch, c=3)
    y = AdaPipeline((op,), p=p)(x, _gen(1))
    expected = p * _CHANGED_SHARE.get(op, 1.0)
    four_standard_deviations = 4 * math.sqrt(expected * (1 - expected) / batch)
    assert abs(_changed(x, y).float().mean().item() - expected) < four_standard_deviations


def test_tensor_p_gives_the_same_images_as_the_same_float_p():
    x = _images(b=32, c=3)
    ops = default_ada_ops(3)
    assert torch.equal(AdaPipeline(ops, p=0.4)(x, _gen(2)), AdaPipeline(ops, p=torch.tensor(0.4))(x, _gen(2)))


@pytest.mark.parametrize("device", DEVICES)
def test_p_as_a_tensor_on_the_images_device_works(device):
    x = _images(b=64, c=3).to(device)
    pipeline = AdaPipeline(default_ada_ops(3), p=torch.tensor(0.5, device=device))
    y = pipeline(x)
    assert y.device == x.device
    share = _changed(x, y).float().mean().item()
    assert 0.9 < share <= 1.0  # 12 operations at p = 0.5: an image escapes all with probability ~2^-11
    pipeline.p = torch.tensor(0.0, device=device)  # the controller assigns a new tensor
    assert torch.equal(pipeline(x), x)


@pytest.mark.parametrize("channels", [1, 3])
def test_no_value_is_read_back_to_the_host(channels):
    """On the meta device any read of a value (.item(), a Python if on a tensor, boolean indexing) fails,
    so a pipeline that runs there with a meta p never waits for the device."""
    x = torch.empty(8, channels, 16, 16, device="meta", requires_grad=True)
    y = AdaPipeline(default_ada_ops(channels), p=torch.tensor(0.5, device="meta"))(x)
    assert y.shape == x.shape and y.device.type == "meta"
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_device_p_needs_no_host_sync():
    x = _images(b=64, c=3).cuda()
    pipeline = AdaPipeline(default_ada_ops(3), p=torch.tensor(0.5, device="cuda"))
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pipeline(x)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# --- gradients, shapes, dtypes, reproducibility ----------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
def test_gradient_reaches_every_input_image(channels):
    x = _images(b=8, c=channels).requires_grad_()
    weights = torch.randn(x.shape, generator=_gen(3))
    (AdaPipeline(default_ada_ops(channels), p=1.0)(x, _gen()) * weights).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad.flatten(1).abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_preserved(dtype, channels):
    x = _images(b=4, c=channels, h=12, w=20).to(dtype).requires_grad_()
    y = AdaPipeline(default_ada_ops(channels), p=0.7)(x, _gen())
    assert y.shape == x.shape and y.dtype == dtype
    y.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


def test_a_seed_reproduces_and_another_seed_differs():
    x = _images(b=8, c=3)
    pipeline = AdaPipeline(default_ada_ops(3), p=0.5)
    assert torch.equal(pipeline(x, _gen(5)), pipeline(x, _gen(5)))
    assert not torch.equal(pipeline(x, _gen(5)), pipeline(x, _gen(6)))


# --- geometry --------------------------------------------------------------------------------------------


def _shifted(image: torch.Tensor, dy: int, dx: int, fill: float | None) -> torch.Tensor:
    """Reference: content moved by (dy, dx); revealed pixels are ``fill`` or, with None, mirrored."""
    _, _, h, w = image.shape

    def source(index: torch.Tensor, size: int) -> torch.Tensor:
        return torch.where(index < 0, -index - 1, torch.where(index >= size, 2 * size - 1 - index, index))

    rows, cols = torch.arange(h) - dy, torch.arange(w) - dx
    out = image[:, :, source(rows, h)][:, :, :, source(cols, w)]
    if fill is not None:
        outside = ((rows < 0) | (rows >= h))[:, None] | ((cols < 0) | (cols >= w))[None, :]
        out = torch.where(outside, torch.tensor(fill), out)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_translation_moves_pixels_by_whole_pixels(channels):
    """Each output is the input shifted by whole pixels within 1/8 of the side (to float rounding: the
    sampling grid lands on pixel centres to ~1e-6 px); greyscale gaps are background, RGB ones mirrored."""
    size = 16
    x = _digit(b=32, size=size).expand(-1, channels, -1, -1) if channels == 1 else _images(b=32, c=3)
    y = AdaPipeline(("translation",), p=1.0)(x, _gen(4))
    fill = -1.0 if channels == 1 else None
    shifts = set()
    for image, output in zip(x, y, strict=True):
        found = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if torch.allclose(_shifted(image[None], dy, dx, fill)[0], output, atol=1e-5, rtol=0)
        ]
        assert len(found) == 1
        shifts.add(found[0])
    assert len(shifts) > 10  # the shifts vary per image


def test_xflip_and_rotate90_are_exact_symmetries_of_the_square():
    x = _images(b=32, c=1, h=8, w=8)
    y = AdaPipeline(("xflip", "rotate90"), p=1.0)(x, _gen(7))
    seen = set()
    for image, output in zip(x, y, strict=True):
        candidates = [(k, flip) for k in range(4) for flip in (False, True)]
        images = {c: torch.rot90(image.flip(-1) if c[1] else image, c[0], dims=(-2, -1)) for c in candidates}
        found = [c for c, reference in images.items() if torch.allclose(reference, output, atol=1e-5, rtol=0)]
        assert len(found) == 1
        seen.add(found[0])
    assert len(seen) == 8


def test_shrinking_a_digit_fills_the_revealed_border_with_the_background():
    """Greyscale: the gap a shrink opens is -1, not the mirror of a stroke touching the border."""
    x = _digit(b=256)
    x[:, :, 5:11, 0] = 0.5  # a stroke on the left border: reflection would copy it into the gap
    y = AdaPipeline(("scale",), p=1.0)(x, _gen(8))
    # The same draws as the pipeline's, to know each image's factor: shrunk by more than 15%, output
    # column 0 samples more than a pixel left of the image.
    inverse = _inverse_geometry(("scale",), _Draws(256, 1, 1, torch.device("cpu"), _gen(8)), 1.0, 16, 16)
    shrunk = inverse[:, 0, 0] > 1 / 0.85
    assert shrunk.sum() > 10
    assert (y[shrunk][:, 0, :, 0] + 1).abs().max() < 1e-5
    assert (y[shrunk][:, 0, 0, :] + 1).abs().max() < 1e-5


def test_rgb_border_is_mirrored_not_a_constant_frame():
    x = _images(b=16, c=3)
    y = AdaPipeline(("fraction",), p=1.0)(x, _gen(9))
    # A constant frame would make a whole border row or column one value in every image; a mirror keeps
    # the image's own variation there.
    edges = torch.stack([y[:, :, 0, :], y[:, :, -1, :], y[:, :, :, 0], y[:, :, :, -1]], dim=1)
    assert (edges.std(dim=-1) > 0.05).all()


def test_tilt_stays_within_15_degrees_and_rotate_spans_the_circle():
    def angles(op: str) -> torch.Tensor:
        draws = _Draws(4000, 4, 0, torch.device("cpu"), _gen(10))
        inverse = _inverse_geometry((op,), draws, 1.0, 16, 16)
        return torch.rad2deg(torch.atan2(inverse[:, 1, 0], inverse[:, 0, 0])).abs()

    tilt = angles("tilt")
    assert tilt.max() <= 15 + 1e-4 and tilt.max() > 14
    assert angles("rotate").max() > 170


# --- colour ----------------------------------------------------------------------------------------------


def _luma(x: torch.Tensor) -> torch.Tensor:
    return x.mean(dim=1)


def test_hue_and_saturation_keep_the_luma_and_lumaflip_negates_it():
    x = _images(b=16, c=3)
    for op in ("hue", "saturation"):
        y = AdaPipeline((op,), p=1.0)(x, _gen(11))
        assert torch.allclose(_luma(y), _luma(x), atol=1e-5)
        assert _changed(x, y).all()
    y = AdaPipeline(("lumaflip",), p=1.0)(x, _gen(11))
    flipped = _changed(x, y)
    assert torch.allclose(_luma(y[flipped]), -_luma(x[flipped]), atol=1e-5)
    # The chroma (colour minus its luma) is kept.
    assert torch.allclose(y - _luma(y)[:, None], x - _luma(x)[:, None], atol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_brightness_adds_one_level_per_image_and_contrast_scales_about_grey(channels):
    x = _images(b=16, c=channels)
    y = AdaPipeline(("brightness",), p=1.0)(x, _gen(12))
    difference = (y - x).flatten(1)
    assert torch.allclose(difference, difference[:, :1].expand_as(difference), atol=1e-6)
    assert difference[:, 0].std() > 0.05
    y = AdaPipeline(("contrast",), p=1.0)(x, _gen(12))
    ratio = (y / x).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)


# --- names, defaults, errors -----------------------------------------------------------------------------


def test_parse_keeps_the_order_and_strips_spaces():
    assert parse_ada_ops(" translation, rotate ") == ("translation", "rotate")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "unknown operation"),
        ("translation,,scale", "unknown operation"),
        ("shear", "unknown operation shear"),
        ("scale,scale", "scale listed twice"),
    ],
)
def test_parse_refuses_bad_lists_in_one_line_naming_the_option_and_the_choices(text, reason):
    with pytest.raises(OptionError) as error:
        parse_ada_ops(text)
    message = str(error.value)
    assert error.value.option == "ada_ops" and "\n" not in message and reason in message
    assert "choose from xflip, rotate90" in message


def test_rgb_only_operations_are_refused_for_one_channel():
    with pytest.raises(ConfigError) as error:
        check_ops_fit(("translation", "hue", "saturation"), 1)
    message = str(error.value)
    assert "\n" not in message and "hue, saturation need RGB" in message and "1 channel" in message
    check_ops_fit(default_ada_ops(3), 3)
    check_ops_fit(default_ada_ops(1), 1)


def test_greyscale_default_keeps_digits_recognisable():
    ops = default_ada_ops(1)
    assert not {"xflip", "rotate90", "rotate"} & set(ops) and "tilt" in ops
    assert default_ada_ops(3) == tuple(name for name in ADA_OPERATIONS if name != "tilt")


def test_pipeline_is_a_plain_object_applied_in_adas_order():
    pipeline = AdaPipeline(("contrast", "translation"), p=0.25)
    assert not isinstance(pipeline, torch.nn.Module)
    assert repr(pipeline) == "ada p=0.25 ops=translation,contrast"
    pipeline.p = torch.tensor(0.5)
    assert repr(pipeline) == "ada p=adaptive ops=translation,contrast"


def test_the_order_of_the_names_does_not_change_the_augmentation():
    x = _images(b=8, c=3)
    ops = default_ada_ops(3)
    forward = AdaPipeline(ops, p=0.6)(x, _gen(13))
    assert torch.equal(forward, AdaPipeline(tuple(reversed(ops)), p=0.6)(x, _gen(13)))


def test_rgb_only_operation_on_greyscale_images_is_refused_at_call():
    with pytest.raises(OptionError, match="hue needs RGB images"):
        AdaPipeline(("hue",), p=0.5)(_images(c=1))
