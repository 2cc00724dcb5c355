"""DiffAugment (Zhao et al. 2020): differentiable per-sample augmentation of every image D sees."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_genae.augmentation.common import check_operation_names, drawn, parse_operation_names
from lightning_genae.plugin_options import PluginOptions, option

DIFFAUG_OPERATIONS = ("color", "translation", "cutout")


# Fractions of the image size used by the paper; the sizes are rounded half up like the reference.
TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5
# The largest ratio each sized operation accepts (0 turns it off): a shift of half the side keeps a quarter of
# the image in view, a larger one could leave the discriminator a blank; a cutout is at most the image.
RATIO_LIMITS: dict[str, float] = {"translation": 0.5, "cutout": 1.0}


@dataclass(frozen=True)
class DiffAugmentOptions(PluginOptions):
    """`--augment diffaug`: the policy and the size of its translation and cutout."""

    diffaug_policy: str = option(
        "color,translation,cutout",
        "diffaug: comma list of color, translation, cutout",
        tunable=True,
        canonical=lambda text: ",".join(parse_policy(text)),
    )
    diffaug_translation: float = option(
        TRANSLATION_RATIO,
        "diffaug: largest shift per axis as a fraction of the image size, in [0, 0.5]",
        at_least=0,
        at_most=RATIO_LIMITS["translation"],
        tunable=True,
    )
    diffaug_cutout: float = option(
        CUTOUT_RATIO,
        "diffaug: side of the cut-out square as a fraction of the image size, in [0, 1]",
        at_least=0,
        at_most=RATIO_LIMITS["cutout"],
        tunable=True,
    )

    def unread(self) -> dict[str, str]:
        """A ratio sizes one operation; the policy may leave that operation out."""
        policy = self.diffaug_policy.split(",")
        return {
            f"diffaug_{operation}": (
                f"sizes DiffAugment's {operation}, which diffaug_policy {self.diffaug_policy} leaves out; "
                f"drop it or add {operation} to diffaug_policy"
            )
            for operation in RATIO_LIMITS
            if operation not in policy
        }


def parse_policy(text: str) -> tuple[str, ...]:
    """Operation names of a `diffaug_policy` value, in the order given (OptionError if unusable)."""
    return parse_operation_names(text, DIFFAUG_OPERATIONS, "diffaug_policy")


def _uniform(images: Tensor, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    """One U(low, high) value per sample, shaped [B, 1, 1, 1] to broadcast, in the images' dtype."""
    values = drawn(torch.rand, (images.shape[0], 1, 1, 1), generator=generator, device=images.device)
    return (values * (high - low) + low).to(images.dtype)


def _randint(images: Tensor, low: int, high: int, generator: torch.Generator | None) -> Tensor:
    """One integer per sample, uniform over [low, high] inclusive, shaped [B, 1]."""
    return drawn(
        torch.randint, low, high + 1, (images.shape[0], 1), generator=generator, device=images.device
    )


def _color(images: Tensor, generator: torch.Generator | None) -> Tensor:
    x = images + _uniform(images, -0.5, 0.5, generator)
    if x.shape[1] > 1:
        # Pulling pixels towards their own grey level: factor 0 gives greyscale, 2 doubles the chroma.
        grey = x.mean(dim=1, keepdim=True)
        x = (x - grey) * _uniform(x, 0.0, 2.0, generator) + grey
    level = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - level) * _uniform(x, 0.5, 1.5, generator) + level


def _translation(images: Tensor, generator: torch.Generator | None, ratio: float) -> Tensor:
    batch, channels, height, width = images.shape
    max_dy = int(height * ratio + 0.5)
    max_dx = int(width * ratio + 0.5)
    dy = _randint(images, -max_dy, max_dy, generator)
    dx = _randint(images, -max_dx, max_dx, generator)
    # A zero border as wide as the largest shift keeps every source index inside the padded tensor, so a
    # plain gather replaces per-sample slicing and out-of-image reads come back as 0 (mid-grey).
    padded = F.pad(images, (max_dx, max_dx, max_dy, max_dy))
    rows = torch.arange(height, device=images.device) - dy + max_dy  # output row i reads row i - dy
    cols = torch.arange(width, device=images.device) - dx + max_dx
    rows = rows.view(batch, 1, height, 1).expand(batch, channels, height, padded.shape[3])
    shifted = padded.gather(2, rows)
    cols = cols.view(batch, 1, 1, width).expand(batch, channels, height, width)
    return shifted.gather(3, cols)


def _cutout(images: Tensor, generator: torch.Generator | None, ratio: float) -> Tensor:
    batch, _, height, width = images.shape
    side_h = int(height * ratio + 0.5)
    side_w = int(width * ratio + 0.5)
    # The top-left corner ranges so the square's centre covers the whole image and both borders clip
    # the square equally often: at least ceil(side / 2) rows/columns always remain inside.
    top = _randint(images, -(side_h // 2), height - (side_h + 1) // 2, generator)
    left = _randint(images, -(side_w // 2), width - (side_w + 1) // 2, generator)
    rows = torch.arange(height, device=images.device)
    cols = torch.arange(width, device=images.device)
    in_rows = (rows >= top) & (rows < top + side_h)  # [B, H]
    in_cols = (cols >= left) & (cols < left + side_w)  # [B, W]
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return images * keep[:, None].to(images.dtype)


def diff_augment(
    images: Tensor,
    policy: Sequence[str],
    generator: torch.Generator | None = None,
    *,
    translation: float = TRANSLATION_RATIO,
    cutout: float = CUTOUT_RATIO,
) -> Tensor:
    """Apply `policy`'s operations in order, fresh per sample, to a float [B, C, H, W] batch in [-1, 1]."""
    names = check_operation_names(list(policy), DIFFAUG_OPERATIONS, "diffaug_policy", ",".join(policy))
    operations: dict[str, Callable[[Tensor, torch.Generator | None], Tensor]] = {
        "color": _color,
        "translation": partial(_translation, ratio=translation),
        "cutout": partial(_cutout, ratio=cutout),
    }
    for name in names:
        images = operations[name](images, generator)
    return images
