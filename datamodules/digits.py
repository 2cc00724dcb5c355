"""scikit-learn's bundled 8x8 handwritten digits at 16x16: real images, no download, trains in seconds."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_genae.datamodules.base import Batch, ImageDataModule
from lightning_genae.datamodules.splits import split_items


def digits_tensors() -> Batch:
    """All 1797 digits as uint8 [N,1,16,16] in [0, 255] and int64 labels, in scikit-learn's order."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Pixel values are 0..16 counts of set bits in a 4x4 block; stretch them to the usual 0..255.
    small = torch.from_numpy(digits.images).mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    large = F.interpolate(small.float(), size=(16, 16), mode="bilinear", antialias=True, align_corners=False)
    images = large.round().clamp(0, 255).to(torch.uint8)
    return images, torch.from_numpy(digits.target).long()


class DigitsDataModule(ImageDataModule):
    """Default dataset: tiny, offline and real; its fixed split is stratified ~70/10/20 train/val/test."""

    name = "digits"
    default_shape = (1, 16, 16)
    classes = 10

    def _load_splits(self) -> dict[str, Batch]:
        return split_items(*digits_tensors())
