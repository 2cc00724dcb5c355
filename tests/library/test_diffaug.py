"""DiffAugment: each operation against an independent per-sample reference or the statistics it documents."""

import pytest
import torch

from lightning_genae.augmentation.diffaug import DIFFAUG_OPERATIONS, diff_augment, parse_policy
from lightning_genae.augmentation.discriminator import DiffAugment
from lightning_genae.errors import ConfigError

pytestmark = pytest.mark.quick

ALL = ("color", "translation", "cutout")
DEVICES = ["cpu", "meta"] + (["cuda"] if torch.cuda.is_available() else [])


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(b: int = 4, c: int = 3, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    """Values in [-1, -0.1] U [0.1, 1]: no exact zeros, so zeroed pixels are unambiguous."""
    g = _gen(seed)
    magnitude = torch.rand(b, c, h, w, generator=g) * 0.9 + 0.1
    sign = torch.where(torch.rand(b, c, h, w, generator=g) < 0.5, -1.0, 1.0)
    return magnitude * sign


def _shift(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference translation of one [C, H, W] image by slicing: content moves by (dy, dx), gaps are 0."""
    _, h, w = image.shape
    out = torch.zeros_like(image)
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = image[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _matching_shifts(image: torch.Tensor, output: torch.Tensor, max_dy: int, max_dx: int) -> list:
    return [
        (dy, dx)
        for dy in range(-max_dy, max_dy + 1)
        for dx in range(-max_dx, max_dx + 1)
        if torch.equal(_shift(image, dy, dx), output)
    ]


# --- gradients -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",), ALL])
def test_gradient_reaches_input_through_operation(policy):
    x = _images(b=3, c=3, h=12, w=12).requires_grad_()
    weights = torch.randn(3, 3, 12, 12, generator=_gen(1))
    (diff_augment(x, policy, _gen()) * weights).sum().backward()
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()
    # Each sample keeps most of its pixels, so each must receive gradient.
    assert (x.grad.flatten(1).abs().sum(1) > 0).all()


def test_gradient_of_translation_and_cutout_is_the_pixel_selection():
    """d out / d in is 1 for every input pixel that survives and 0 for those shifted out or cut."""
    x = _images(b=6, c=1, h=16, w=16).requires_grad_()
    out = diff_augment(x, ("translation", "cutout"), _gen(3))
    out.sum().backward()
    # Inputs are never zero, so the surviving pixels are exactly the non-zero outputs; each appears once.
    assert int(x.grad.sum()) == int((out != 0).sum())
    assert set(x.grad.unique().tolist()) <= {0.0, 1.0}


# --- shape, dtype, device --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels", [1, 3])
def test_shape_and_dtype_preserved(dtype, channels):
    x = _images(b=2, c=channels, h=10, w=14).to(dtype).requires_grad_()
    out = diff_augment(x, ALL, _gen())
    assert out.shape == x.shape and out.dtype == dtype
    out.float().sum().backward()
    assert x.grad.dtype == dtype and torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("device", DEVICES)
def test_device_preserved_with_and_without_generator(device):
    x = torch.zeros(2, 3, 8, 8, device=device)
    for generator in (None, _gen()):
        out = diff_augment(x, ALL, generator)
        assert out.device == x.device and out.shape == x.shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_seed_gives_same_augmentation_on_cpu_and_cuda():
    x = _images()
    cpu = diff_augment(x, ALL, _gen(5))
    cuda = diff_augment(x.cuda(), ALL, _gen(5)).cpu()
    torch.testing.assert_close(cuda, cpu)


def test_output_dtype_unchanged_under_autocast():
    x = _images(b=2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert diff_augment(x, ALL, _gen()).dtype == torch.float32
        assert diff_augment(x.bfloat16(), ALL, _gen()).dtype == torch.bfloat16


def test_empty_policy_is_identity():
    x = _images()
    assert diff_augment(x, (), _gen()) is x


# --- translation -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("seeded", [True, False], ids=["generator", "global-rng"])
def test_translation_is_an_integer_shift_within_an_eighth_with_zero_fill(seeded):
    h, w = 16, 24  # allowed shifts: |dy| <= 2, |dx| <= 3
    x = _images(b=64, c=3, h=h, w=w)
    torch.manual_seed(7)
    out = diff_augment(x, ("translation",), _gen(7) if seeded else None)
    shifts = []
    for image, result in zip(x, out, strict=True):
        matches = _matching_shifts(image, result, 2, 3)
        assert len(matches) == 1, "output is not a shift of its input within the allowed range"
        shifts.append(matches[0])
    # Per-sample offsets that reach both ends of the inclusive range on each axis.
    assert {dy for dy, _ in shifts} == set(range(-2, 3))
    assert {dx for _, dx in shifts} == set(range(-3, 4))


@pytest.mark.parametrize(("h", "w", "limit_y", "limit_x"), [(12, 11, 2, 1), (11, 12, 1, 2), (3, 4, 0, 1)])
def test_translation_range_rounds_like_the_paper(h, w, limit_y, limit_x):
    """int(size * 0.125 + 0.5) per axis: 12 -> 2 (not 1), 11 -> 1, 4 -> 1, 3 -> 0 (never shifted)."""
    x = _images(b=48, c=1, h=h, w=w)
    out = diff_augment(x, ("translation",), _gen(h))
    seen_y, seen_x = set(), set()
    for image, result in zip(x, out, strict=True):
        matches = _matching_shifts(image, result, limit_y, limit_x)
        assert len(matches) == 1
        seen_y.add(abs(matches[0][0]))
        seen_x.add(abs(matches[0][1]))
    assert max(seen_y) == limit_y and max(seen_x) == limit_x


# --- cutout ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w"), [(16, 16), (9, 13)])
def test_cutout_zeroes_one_clipped_square_and_leaves_the_rest(h, w):
    side_h, side_w = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
    x = _images(b=96, c=3, h=h, w=w)
    out = diff_augment(x, ("cutout",), _gen(11))
    clipped_at = set()
    tops = set()
    for image, result in zip(x, out, strict=True):
        cut = result == 0
        # Same pixels cut in every channel, nothing else changed.
        assert (cut == cut[:1]).all()
        torch.testing.assert_close(result[~cut], image[~cut], rtol=0, atol=0)
        rows = cut[0].any(1).nonzero().flatten().tolist()
        cols = cut[0].any(0).nonzero().flatten().tolist()
        # One rectangle: its bounding box is completely zero.
        assert rows == list(range(rows[0], rows[-1] + 1)) and cols == list(range(cols[0], cols[-1] + 1))
        assert int(cut[0].sum()) == len(rows) * len(cols)
        for extent, first, last, side, size, axis in [
            (len(rows), rows[0], rows[-1], side_h, h, "y"),
            (len(cols), cols[0], cols[-1], side_w, w, "x"),
        ]:
            # Full side unless clipped by a border; at least half the square stays inside.
            assert (side + 1) // 2 <= extent <= side
            if extent < side:
                assert first == 0 or last == size - 1
                clipped_at.add((axis, "low" if first == 0 else "high"))
        tops.add(rows[0])
    assert clipped_at == {("y", "low"), ("y", "high"), ("x", "low"), ("x", "high")}
    assert len(tops) > 3


# --- color -----------------------------------------------------------------------------------------------


def test_color_changes_a_constant_image_only_by_a_per_sample_brightness_shift():
    values = torch.linspace(-0.8, 0.8, 32)
    x = values.view(32, 1, 1, 1).expand(32, 3, 8, 8).contiguous()
    out = diff_augment(x, ("color",), _gen(2))
    shift = out - x
    per_sample = shift[:, :1, :1, :1]
    torch.testing.assert_close(shift, per_sample.expand_as(shift))
    assert (per_sample.abs() <= 0.5).all()
    assert per_sample.unique().numel() == 32  # independent draw per sample
    assert per_sample.min() < -0.3 and per_sample.max() > 0.3


def test_color_on_one_channel_is_brightness_then_contrast_without_saturation():
    """out - mean(out) = c * (x - mean(x)) with c in [0.5, 1.5]; mean(out) - mean(x) in [-0.5, 0.5]."""
    x = _images(b=32, c=1, h=8, w=8)
    out = diff_augment(x, ("color",), _gen(4))
    x_dev = x - x.mean(dim=(1, 2, 3), keepdim=True)
    out_dev = out - out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (out_dev * x_dev).sum(dim=(1, 2, 3)) / (x_dev**2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out_dev, contrast.view(-1, 1, 1, 1) * x_dev, atol=1e-5, rtol=1e-5)
    assert ((contrast >= 0.5 - 1e-5) & (contrast <= 1.5 + 1e-5)).all()
    brightness = (out - x).mean(dim=(1, 2, 3))
    assert (brightness.abs() <= 0.5 + 1e-6).all()
    assert contrast.std() > 0.1 and brightness.std() > 0.1


def test_color_on_three_channels_scales_chroma_by_saturation_times_contrast():
    """Split each pixel into grey level m and chroma d = x - m; then
    out grey = c * (m - M) + M + b and out chroma = s * c * d, with b, s, c the documented draws."""
    x = _images(b=32, c=3, h=8, w=8)
    out = diff_augment(x, ("color",), _gen(6))
    grey, out_grey = x.mean(1, keepdim=True), out.mean(1, keepdim=True)
    chroma, out_chroma = x - grey, out - out_grey
    grey_dev = grey - grey.mean(dim=(1, 2, 3), keepdim=True)
    out_grey_dev = out_grey - out_grey.mean(dim=(1, 2, 3), keepdim=True)
    contrast = (out_grey_dev * grey_dev).sum(dim=(1, 2, 3)) / (grey_dev**2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out_grey_dev, contrast.view(-1, 1, 1, 1) * grey_dev, atol=1e-5, rtol=1e-5)
    both = (out_chroma * chroma).sum(dim=(1, 2, 3)) / (chroma**2).sum(dim=(1, 2, 3))
    torch.testing.assert_close(out_chroma, both.view(-1, 1, 1, 1) * chroma, atol=1e-5, rtol=1e-5)
    saturation = both / contrast
    brightness = (out - x).mean(dim=(1, 2, 3))
    assert ((contrast >= 0.5 - 1e-5) & (contrast <= 1.5 + 1e-5)).all()
    assert ((saturation >= -1e-5) & (saturation <= 2 + 1e-5)).all()
    assert (brightness.abs() <= 0.5 + 1e-6).all()
    # Saturation spans its range across the batch (rather than, say, [0.5, 1.5] or a fixed value).
    assert saturation.min() < 0.3 and saturation.max() > 1.7


# --- randomness ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [("color",), ("translation",), ("cutout",), ALL])
def test_parameters_differ_between_samples_of_one_batch(policy):
    x = _images(b=1, h=16, w=16).expand(8, -1, -1, -1)
    out = diff_augment(x, policy, _gen(9))
    distinct = {tuple(sample.flatten().tolist()) for sample in out}
    assert len(distinct) >= 6


def test_same_seed_same_output_other_seed_different():
    x = _images()
    first = diff_augment(x, ALL, _gen(123))
    torch.testing.assert_close(diff_augment(x, ALL, _gen(123)), first, rtol=0, atol=0)
    assert not torch.equal(diff_augment(x, ALL, _gen(124)), first)


def test_without_generator_uses_the_global_rng():
    x = _images()
    torch.manual_seed(0)
    first = diff_augment(x, ALL)
    torch.manual_seed(0)
    torch.testing.assert_close(DiffAugment()(x), first, rtol=0, atol=0)
    assert not torch.equal(diff_augment(x, ALL), first)


# --- policy parsing and the module -----------------------------------------------------------------------


def test_parse_policy_keeps_order_and_tolerates_whitespace():
    assert parse_policy("color, translation") == ("color", "translation")
    assert parse_policy(" cutout ,color ") == ("cutout", "color")
    assert set(DIFFAUG_OPERATIONS) == set(ALL)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("colr", "unknown operation colr"),
        ("color,zoom", "unknown operation zoom"),
        ("color,color", "color listed twice"),
        ("", "unknown operation"),
        ("  ", "unknown operation"),
        ("color,,cutout", "unknown operation"),
    ],
)
def test_parse_policy_rejects_bad_policy_with_one_line_naming_the_choices(text, problem):
    with pytest.raises(ConfigError) as info:
        parse_policy(text)
    message = str(info.value)
    assert "\n" not in message
    assert problem in message
    assert "color, translation, cutout" in message


def test_diff_augment_rejects_unknown_names():
    with pytest.raises(ConfigError, match="unknown operation zoom"):
        diff_augment(_images(), ("color", "zoom"))


def test_diff_augment_wrapper_shows_its_policy():
    module = DiffAugment("translation, cutout")
    assert module.policy == ("translation", "cutout")
    assert repr(module).startswith("diffaug translation,cutout")
    assert DiffAugment().policy == ALL
    with pytest.raises(ConfigError, match="color listed twice"):
        DiffAugment("color,color")


# --- ratios (--diffaug-translation, --diffaug-cutout) ----------------------------------------------------


def _largest_shifts(x: torch.Tensor, out: torch.Tensor, limit: int) -> tuple[int, int]:
    """The largest |dy| and |dx| over the batch, each output matched to exactly one shift of its input."""
    seen_y, seen_x = set(), set()
    for image, result in zip(x, out, strict=True):
        matches = _matching_shifts(image, result, limit, limit)
        assert len(matches) == 1, "output is not a shift of its input within the limit"
        seen_y.add(abs(matches[0][0]))
        seen_x.add(abs(matches[0][1]))
    return max(seen_y), max(seen_x)


def test_translation_ratio_zero_leaves_images_unshifted():
    x = _images(b=16, c=1, h=16, w=16)
    assert torch.equal(diff_augment(x, ("translation",), _gen(), translation=0.0), x)


@pytest.mark.parametrize(("ratio", "limit"), [(0.125, 2), (0.25, 4), (0.5, 8)])
def test_translation_ratio_sets_the_largest_shift(ratio, limit):
    """16 px at ratio r: shifts reach exactly round(16 r) px, so a larger ratio shifts further."""
    x = _images(b=64, c=1, h=16, w=16)
    out = diff_augment(x, ("translation",), _gen(5), translation=ratio)
    assert _largest_shifts(x, out, 8) == (limit, limit)


@pytest.mark.parametrize(("ratio", "side"), [(0.25, 4), (0.5, 8), (0.75, 12)])
def test_cutout_ratio_sets_the_side_of_the_square(ratio, side):
    x = _images(b=48, c=1, h=16, w=16)
    out = diff_augment(x, ("cutout",), _gen(9), cutout=ratio)
    extents = set()
    for result in out:
        cut = result[0] == 0
        extents.add((int(cut.any(1).sum()), int(cut.any(0).sum())))
    # Unclipped squares are side x side; clipped ones keep at least half of each side inside.
    assert (side, side) in extents
    assert all((side + 1) // 2 <= h <= side and (side + 1) // 2 <= w <= side for h, w in extents)


def test_cutout_ratio_zero_cuts_nothing():
    x = _images(b=16, c=3, h=12, w=12)
    assert torch.equal(diff_augment(x, ("cutout",), _gen(), cutout=0.0), x)


def test_the_discriminator_wrapper_passes_the_ratios_on():
    x = _images(b=8, c=1, h=16, w=16)
    assert torch.equal(DiffAugment("translation,cutout", translation=0.0, cutout=0.0)(x), x)
    torch.manual_seed(3)
    wide = DiffAugment("translation", translation=0.5)(x)
    assert _largest_shifts(x, wide, 8) > (2, 2), "shifts stayed within the default eighth"
    assert repr(DiffAugment("color,cutout", cutout=0.25)) == "diffaug color,cutout (cutout 0.25)"
