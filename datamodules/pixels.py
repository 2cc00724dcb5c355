"""The pixel ranges: uint8 images as stored, [-1, 1] floats as every model sees them (without Lightning)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_genae.datamodules.placement import host_to_device


def to_model_range(images: Tensor) -> Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1], the range every model works in."""
    return images.float().div_(127.5).sub_(1.0)


def to_uint8(images: Tensor) -> Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255] (clamped, rounded), for saving and metrics."""
    return images.detach().float().clamp(-1.0, 1.0).add(1.0).mul_(127.5).round_().to(torch.uint8)


def bernoulli_pixels(images: Tensor, generator: torch.Generator) -> Tensor:
    """Images in [-1, 1] -> {-1, +1} drawn per pixel with probability (x + 1) / 2, as a binary dataset's
    images are; drawn on the host from `generator`, the same on every rank and device."""
    probability = images.float().add(1.0).div(2.0).clamp(0.0, 1.0)
    uniform = host_to_device(torch.rand(probability.shape, generator=generator), probability.device)
    return torch.where(uniform < probability, 1.0, -1.0).to(images.dtype)
