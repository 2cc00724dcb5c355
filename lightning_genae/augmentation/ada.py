"""ADA's augmentation pipeline (Karras et al. 2020): each operation applied to every discriminator input with
probability p, as pure, differentiable functions free of host syncs; geometric operations compose into one
affine matrix per image, resampled once, and colour operations into one 4x4 colour matrix."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.augmentation.adaptive import AdaptiveStrength, ControllerOptions
from lightning_genae.augmentation.common import check_operation_names, drawn, parse_operation_names
from lightning_genae.errors import OptionError, agree
from lightning_genae.plugin_options import option


@dataclass(frozen=True)
class _Operation:
    """One pipeline operation: the random numbers it draws per image, and whether it is RGB-only colour."""

    uniforms: int
    normals: int = 0
    colour: bool = False
    rgb_only: bool = False


# In the order the pipeline applies them (ADA's order: blits, general geometry, colour); a pipeline always
# uses this order whatever the order of its names, since geometric operations do not commute.
ADA_OPERATIONS: dict[str, _Operation] = {
    "xflip": _Operation(2),
    "rotate90": _Operation(2),
    "translation": _Operation(3),
    "scale": _Operation(1, 1),
    "rotate": _Operation(4),
    "tilt": _Operation(2),
    "aniso": _Operation(1, 1),
    "fraction": _Operation(1, 2),
    "brightness": _Operation(1, 1, colour=True),
    "contrast": _Operation(1, 1, colour=True),
    "lumaflip": _Operation(2, colour=True, rgb_only=True),
    "hue": _Operation(2, colour=True, rgb_only=True),
    "saturation": _Operation(1, 1, colour=True, rgb_only=True),
}
GEOMETRIC_OPERATIONS = tuple(name for name, op in ADA_OPERATIONS.items() if not op.colour)
COLOUR_OPERATIONS = tuple(name for name, op in ADA_OPERATIONS.items() if op.colour)
RGB_ONLY_OPERATIONS = tuple(name for name, op in ADA_OPERATIONS.items() if op.rgb_only)

# ADA's strengths ("bgc" configuration); the log-normal ones are standard deviations of log2 of the factor.
_TRANSLATION_MAX = 0.125  # of the side
_SCALE_STD = 0.2
_ANISO_STD = 0.2
_FRACTION_STD = 0.125  # of the side
_BRIGHTNESS_STD = 0.2
_CONTRAST_STD = 0.5
_SATURATION_STD = 1.0
# ADA's full-circle `rotate` turns a 6 into a 9; a tilt of at most 15 degrees cannot, so digits get `tilt`.
_TILT_MAX = math.radians(15)

# ADA's bgc set for RGB: everything but the digits' `tilt`, which `rotate` covers.
_RGB_DEFAULT = tuple(name for name in ADA_OPERATIONS if name != "tilt")
# Single-channel data here are digits: no mirror, quarter turn or full rotation (a 6 turns into a 9, and
# mirrored or sideways digits are not digits), no RGB-only colour operation.
_GREYSCALE_DEFAULT = ("translation", "scale", "tilt", "aniso", "fraction", "brightness", "contrast")


def default_ada_ops(channels: int) -> tuple[str, ...]:
    """The operations that suit the data: ADA's bgc for RGB, the class-preserving subset otherwise."""
    return _RGB_DEFAULT if channels == 3 else _GREYSCALE_DEFAULT


def parse_ada_ops(text: str) -> tuple[str, ...]:
    """Operation names of an `ada_ops` value, in the order given (OptionError if unusable)."""
    return parse_operation_names(text, ADA_OPERATIONS, "ada_ops")


@dataclass(frozen=True)
class AdaOptions(ControllerOptions):
    """`--augment ada`: its pipeline's operations and the controller that sets their probability."""

    ada_ops: str | None = option(
        None,
        "ada: comma list of pipeline operations (default: the class-preserving geometric ones with "
        "brightness and contrast on one channel, ADA's bgc on RGB)",
        canonical=lambda text: ",".join(parse_ada_ops(text)),
    )


def check_ops_fit(ops: Sequence[str], channels: int) -> None:
    """Refuse colour operations that need RGB on data with another number of channels (OptionError)."""
    misfits = [name for name in ops if name in RGB_ONLY_OPERATIONS]
    if channels != 3 and misfits:
        default = ",".join(default_ada_ops(channels))
        raise OptionError(
            "ada_ops",
            f"{','.join(ops)!r}: {', '.join(misfits)} {agree(misfits, 'needs', 'need')} RGB images and the "
            f"data has {channels} channel(s); drop them (the default for this data: {default})",
        )


class _Draws:
    """All random numbers of one call, drawn in two tensors (few kernels, and with a CPU generator two
    host-to-device copies) and handed out one column per parameter."""

    def __init__(
        self, batch: int, uniforms: int, normals: int, device: torch.device, generator: torch.Generator | None
    ) -> None:
        self.batch, self.device = batch, device
        self._uniforms = iter(
            drawn(torch.rand, batch, uniforms, generator=generator, device=device).unbind(1)
        )
        self._normals = iter(drawn(torch.randn, batch, normals, generator=generator, device=device).unbind(1))

    def uniform(self) -> Tensor:
        return next(self._uniforms)

    def normal(self) -> Tensor:
        return next(self._normals)

    def all_used(self) -> bool:
        """Did the operations take exactly the columns drawn for them (`ADA_OPERATIONS` counts them right)."""
        return next(self._uniforms, None) is None and next(self._normals, None) is None

    def applied(self, p: float | Tensor) -> Tensor:
        """Per image: does this operation apply (probability p)."""
        return self.uniform() < p


def _affine(like: Tensor, **entries: Tensor) -> Tensor:
    """[B, 3, 3] homogeneous matrices [[a, b, tx], [c, d, ty], [0, 0, 1]], the identity but for `entries`."""
    zero, one = torch.zeros_like(like), torch.ones_like(like)
    m = {"a": one, "b": zero, "tx": zero, "c": zero, "d": one, "ty": zero, **entries}
    return torch.stack([m["a"], m["b"], m["tx"], m["c"], m["d"], m["ty"], zero, zero, one], 1).view(-1, 3, 3)


def _rotate(cos: Tensor, sin: Tensor) -> Tensor:
    return _affine(cos, a=cos, b=-sin, c=sin, d=cos)


def _rotation_by(theta: Tensor) -> Tensor:
    return _rotate(torch.cos(theta), torch.sin(theta))


def _log2_normal(draws: _Draws, p: float | Tensor, std: float) -> Tensor:
    """A factor 2^N(0, std) where the operation applies, exactly 1 elsewhere."""
    factor = torch.exp2(draws.normal() * std)
    return torch.where(draws.applied(p), factor, torch.ones_like(factor))


def _xflip(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    flip = draws.applied(p) & (draws.uniform() < 0.5)
    sign = 1 - 2 * flip.float()
    return _affine(sign, a=sign)


def _rotate90(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    turns = torch.where(draws.applied(p), (draws.uniform() * 4).floor().clamp(max=3), 0.0)
    # Exact cosines and sines (cos(pi / 2) in floating point is not 0): an exact matrix keeps whole pixels
    # on whole pixels and lets an unrotated image be recognised as untouched.
    cos = (turns == 0).float() - (turns == 2).float()
    sin = (turns == 1).float() - (turns == 3).float()
    return _rotate(cos, -sin)  # inverse map: rotate the output coordinates back


def _shift(applied: Tensor, shift_x: Tensor, shift_y: Tensor) -> Tensor:
    """The inverse map of a shift by (shift_x, shift_y) pixels where the operation applies."""
    zero = torch.zeros_like(shift_x)
    return _affine(zero, tx=-torch.where(applied, shift_x, zero), ty=-torch.where(applied, shift_y, zero))


def _translation(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    applied = draws.applied(p)
    shift_x = torch.round((draws.uniform() * 2 - 1) * _TRANSLATION_MAX * width)
    return _shift(applied, shift_x, torch.round((draws.uniform() * 2 - 1) * _TRANSLATION_MAX * height))


def _isotropic_scale(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    factor = _log2_normal(draws, p, _SCALE_STD)
    return _affine(factor, a=1 / factor, d=1 / factor)


def _random_angle(draws: _Draws, p: float | Tensor, max_angle: float) -> Tensor:
    applied = draws.applied(p)
    theta = (draws.uniform() * 2 - 1) * max_angle
    return torch.where(applied, theta, torch.zeros_like(theta))


def _full_rotation(draws: _Draws, p: float | Tensor) -> tuple[Tensor, Tensor]:
    # ADA rotates before and after the anisotropic scaling (so the stretch has any direction), each with
    # probability 1 - sqrt(1 - p) so that an image is rotated at all with probability p.
    if isinstance(p, Tensor):
        p_each = 1 - torch.sqrt((1 - p).clamp(0, 1))
    else:
        p_each = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))
    before = _random_angle(draws, p_each, math.pi)
    after = _random_angle(draws, p_each, math.pi)
    return _rotation_by(-before), _rotation_by(-after)


def _tilt(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    return _rotation_by(-_random_angle(draws, p, _TILT_MAX))


def _aniso(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    factor = _log2_normal(draws, p, _ANISO_STD)
    return _affine(factor, a=1 / factor, d=factor)


def _fraction(draws: _Draws, p: float | Tensor, height: int, width: int) -> Tensor:
    applied = draws.applied(p)
    shift_x = draws.normal() * _FRACTION_STD * width
    return _shift(applied, shift_x, draws.normal() * _FRACTION_STD * height)


_GEOMETRY: dict[str, Callable[[_Draws, float | Tensor, int, int], Tensor]] = {
    "xflip": _xflip,
    "rotate90": _rotate90,
    "translation": _translation,
    "scale": _isotropic_scale,
    "tilt": _tilt,
    "aniso": _aniso,
    "fraction": _fraction,
}


def _inverse_geometry(
    ops: Sequence[str], draws: _Draws, p: float | Tensor, height: int, width: int
) -> Tensor:
    """Per image, the map from output to input pixel coordinates of the geometric operations in ``ops``,
    composed as ADA does (the first one's inverse on the left); one that does not apply is the identity."""
    inverse = torch.eye(3, device=draws.device).expand(draws.batch, 3, 3)
    rotation_after = None
    for name in GEOMETRIC_OPERATIONS:
        if name == "rotate" and name in ops:
            rotation_before, rotation_after = _full_rotation(draws, p)
            inverse = inverse @ rotation_before
        elif name in ops:
            inverse = inverse @ _GEOMETRY[name](draws, p, height, width)
        if name == "aniso" and rotation_after is not None:
            inverse = inverse @ rotation_after
    return inverse


def _resample(images: Tensor, inverse: Tensor) -> Tensor:
    """Apply per-image inverse maps in centred pixel units with one bilinear grid_sample: RGB reflected at the
    border, as ADA does; single-channel digits filled with black (no mirrored ghost strokes)."""
    batch, channels, height, width = images.shape
    # The inverse map in grid_sample's normalised coordinates (S^-1 @ inverse @ S, S = diag(width / 2,
    # height / 2, 1); align_corners=False, so whole-pixel shifts land on pixel centres) at the output pixel
    # centres, by broadcasting: F.affine_grid's result without its batched product, most of the time.
    device, dtype = images.device, images.dtype
    cols = ((torch.arange(width, device=device, dtype=dtype) * 2 + 1) / width - 1).view(1, 1, width)
    rows = ((torch.arange(height, device=device, dtype=dtype) * 2 + 1) / height - 1).view(1, height, 1)
    (a, b, tx), (c, d, ty) = (
        (entry.to(dtype).view(batch, 1, 1) for entry in inverse[:, 0].unbind(1)),
        (entry.to(dtype).view(batch, 1, 1) for entry in inverse[:, 1].unbind(1)),
    )
    grid_x = a * cols + (b * (height / width)) * rows + tx * (2 / width)
    grid_y = (c * (width / height)) * cols + d * rows + ty * (2 / height)
    grid = torch.stack([grid_x, grid_y], dim=-1)
    if channels == 3:
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    # Zero padding of images + 1 weights each sample by the part of it inside the frame, so subtracting 1
    # blends with -1 exactly where the sample reaches outside.
    shifted = F.grid_sample(images + 1, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return shifted - 1


def _colour_affine(linear: Tensor, offset: Tensor) -> Tensor:
    """[B, 4, 4] from a [B, 3, 3] linear part and a [B, 3] offset: out = linear @ colour + offset."""
    bottom = torch.zeros_like(offset[:, :1]).expand(-1, 3)
    bottom = torch.cat([bottom, torch.ones_like(offset[:, :1])], dim=1)
    top = torch.cat([linear, offset[:, :, None]], dim=2)
    return torch.cat([top, bottom[:, None, :]], dim=1)


def _colour_matrix(ops: Sequence[str], draws: _Draws, p: float | Tensor) -> Tensor:
    """Per image, the colour map of all colour operations in ``ops``, the first acting first (as ADA)."""
    batch, device = draws.batch, draws.device
    identity = torch.eye(3, device=device)
    # Projection on the luma axis v = (1, 1, 1) / sqrt(3) and v's cross-product matrix, from device tensors.
    luma = torch.full((3, 3), 1 / 3, device=device)
    shift = torch.roll(identity, shifts=1, dims=1)
    cross = (shift.T - shift) / math.sqrt(3)
    no_offset = torch.zeros(batch, 3, device=device)
    matrix = torch.eye(4, device=device).expand(batch, 4, 4)
    for name in COLOUR_OPERATIONS:
        if name not in ops:
            continue
        if name == "brightness":
            level = torch.where(draws.applied(p), draws.normal() * _BRIGHTNESS_STD, 0.0)
            step = _colour_affine(identity.expand(batch, 3, 3), level[:, None].expand(-1, 3))
        elif name == "contrast":
            factor = _log2_normal(draws, p, _CONTRAST_STD)
            step = _colour_affine(identity * factor[:, None, None], no_offset)
        elif name == "lumaflip":
            # Householder reflection through the plane orthogonal to the luma axis: luma negated, hue kept.
            flip = (draws.applied(p) & (draws.uniform() < 0.5)).float()[:, None, None]
            step = _colour_affine(identity - 2 * luma * flip, no_offset)
        elif name == "hue":
            theta = _random_angle(draws, p, math.pi)[:, None, None]
            cos, sin = torch.cos(theta), torch.sin(theta)
            step = _colour_affine(cos * identity + sin * cross + (1 - cos) * luma, no_offset)
        else:  # saturation: scale the colour's distance from the luma axis
            factor = _log2_normal(draws, p, _SATURATION_STD)[:, None, None]
            step = _colour_affine(luma + (identity - luma) * factor, no_offset)
        matrix = step @ matrix
    return matrix


def _recolour(images: Tensor, matrix: Tensor) -> Tensor:
    """Per-image colour maps: a batched matrix product for RGB, else one scale and offset in every channel."""
    batch, channels, height, width = images.shape
    if channels == 3:
        flat = images.reshape(batch, 3, height * width)
        return torch.baddbmm(matrix[:, :3, 3:], matrix[:, :3, :3], flat).view_as(images)
    scale, offset = matrix[:, 0, 0].view(batch, 1, 1, 1), matrix[:, 0, 3].view(batch, 1, 1, 1)
    return images * scale + offset


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """The pipeline computes in its own dtype: autocast would round rotation matrices to bf16."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


class AdaPipeline:
    """ADA's augmentation of discriminator inputs; not an nn.Module: `p` (a float, a 0-dim device tensor, or
    the run's controller, read for its p) is read at every call and stays out of checkpoints and DDP."""

    def __init__(self, ops: Sequence[str], p: float | Tensor | AdaptiveStrength = 0.0) -> None:
        names = check_operation_names(list(ops), ADA_OPERATIONS, "ada_ops", ",".join(ops))
        self.ops: tuple[str, ...] = tuple(name for name in ADA_OPERATIONS if name in names)
        self.p = p

    def __repr__(self) -> str:
        p = "adaptive" if isinstance(self.p, Tensor | AdaptiveStrength) else f"{self.p:g}"
        controller = f", {self.p!r}" if isinstance(self.p, AdaptiveStrength) else ""
        return f"ada p={p} ops={','.join(self.ops)}{controller}"

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Augment a float [B, C, H, W] batch in [-1, 1]: same shape, dtype and device, differentiable; images
        no operation applies to come back bit for bit, and with p == 0 as a float, the input itself."""
        p = self.p.p if isinstance(self.p, AdaptiveStrength) else self.p
        if (not isinstance(p, Tensor) and p == 0.0) or not self.ops:
            return images
        batch, channels, height, width = images.shape
        # Without RGB, `_recolour` applies the colour matrix as a scale and offset, which these have none of.
        check_ops_fit(self.ops, channels)
        uniforms = sum(ADA_OPERATIONS[name].uniforms for name in self.ops)
        normals = sum(ADA_OPERATIONS[name].normals for name in self.ops)
        draws = _Draws(batch, uniforms, normals, images.device, generator)
        # Half precision resamples in float32 (bf16 grid coordinates are pixels off on large images).
        work_dtype = torch.promote_types(images.dtype, torch.float32)
        with _no_autocast(images.device):
            out = images
            geometric = [name for name in self.ops if name in GEOMETRIC_OPERATIONS]
            if geometric:
                inverse = _inverse_geometry(geometric, draws, p, height, width)
                untouched = (inverse == torch.eye(3, device=inverse.device)).flatten(1).all(dim=1)
                resampled = _resample(images.to(work_dtype), inverse).to(images.dtype)
                # An image whose map is exactly the identity keeps its pixels bit for bit (resampling
                # would add rounding), with no data-dependent branch: a device p needs no host sync.
                out = torch.where(untouched.view(batch, 1, 1, 1), images, resampled)
            if any(name in COLOUR_OPERATIONS for name in self.ops):
                matrix = _colour_matrix(self.ops, draws, p)
                untouched = (matrix == torch.eye(4, device=matrix.device)).flatten(1).all(dim=1)
                recoloured = _recolour(out.to(work_dtype), matrix.to(work_dtype)).to(images.dtype)
                out = torch.where(untouched.view(batch, 1, 1, 1), out, recoloured)
        assert draws.all_used(), "ADA_OPERATIONS disagrees with what the operations draw"
        return out
