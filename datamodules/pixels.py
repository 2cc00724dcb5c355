"""The pixel ranges: uint8 images as stored, [-1, 1] floats as every model sees them.

Apart from base.py, which imports Lightning, so the metrics' commands and `--help` can use them without it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_genae.datamodules.placement import host_to_device


def to_model_range(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] (as every image split is checked to be) -> float32 in [-1, 1], the range
    every model works in."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255] (clamped, rounded), for saving and metrics."""
    return images.detach().float().clamp(-1.0, 1.0).add(1.0).mul_(127.5).round_().to(torch.uint8)


def bernoulli_pixels(images: Tensor, generator: torch.Generator) -> Tensor:
    """Images in [-1, 1] -> one Bernoulli draw per pixel of probability (x + 1) / 2, in {-1, +1}: what a
    binary dataset's images are (`binary_pixels`). A Bernoulli decoder's samples are its pixel means,
    grey, which set against binary images would measure the kind of pixel rather than the digits. The
    draw continues the samples' own seeded (host) stream, so it is the same on every rank, device and
    re-evaluation; it reaches the device without a wait for it, as it may in a training step."""
    probability = images.float().add(1.0).div(2.0).clamp(0.0, 1.0)
    uniform = host_to_device(torch.rand(probability.shape, generator=generator), probability.device)
    return torch.where(uniform < probability, 1.0, -1.0).to(images.dtype)
