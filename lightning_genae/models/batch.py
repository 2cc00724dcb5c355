"""The batch contract every family trains on, checked on each loop's first batch: `(data, labels)`, images
[N, C, H, W] in [-1, 1] or series [N, T, C], finite and of the model's shape; torch refuses the rest."""

import warnings

import torch
from torch import Tensor

from lightning_genae.errors import DataError

_SCALE_FIX = "scale the data to [-1, 1], e.g. x * 2 - 1 for data in [0, 1], x / 127.5 - 1 for [0, 255]"


def check_data(
    data: Tensor,
    data_kind: str,
    data_shape: tuple[int, ...],
    warn_scale: bool = True,
    what: str = "the data",
) -> None:
    """Raise a one-line `DataError` naming the fix when `data` (a batch's, or what a model's `reconstruct`
    is given) breaks the contract; warn on [0, 1] images unless `warn_scale` is off (a model says it once)."""
    layout = "[N, C, H, W]" if data_kind == "image" else "[N, T, C]"
    if tuple(data.shape[1:]) != tuple(data_shape):
        raise DataError(
            f"{what} of shape {list(data.shape)} does not match the model's {layout} = [N, "
            f"{', '.join(map(str, data_shape))}]; build the model with the data's shape or reshape the data"
        )
    finite = torch.isfinite(data)
    if not bool(finite.all()):
        # A NaN compares false with every bound, so the range check below cannot see it.
        raise DataError(
            f"{what} holds {int((~finite).sum())} NaN or infinite values of {data.numel()}; drop or fix them"
        )
    if data_kind != "image" or data.numel() == 0:
        # Series are normalised per channel (mean 0, std 1 on the training split), not bounded.
        return
    low, high = data.min().item(), data.max().item()
    if low < -1.0 - 1e-3 or high > 1.0 + 1e-3:
        raise DataError(f"{what} spans [{low:.3g}, {high:.3g}], outside [-1, 1]; {_SCALE_FIX}")
    if low >= 0.0 and warn_scale:
        # Data in [0, 1] trains without error but every generated sample is off by the scale, so say it once.
        warnings.warn(f"{what} in [{low:.3g}, {high:.3g}] looks like [0, 1]; {_SCALE_FIX}", stacklevel=2)
