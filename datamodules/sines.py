"""Synthetic sine waves, the sequence default: TimeGAN's sines with amplitude and noise, drawn per series and
channel by `seeded_uniform`, the same on every machine."""

from __future__ import annotations

import math

import numpy as np
import torch

from lightning_genae.datamodules.base import Batch
from lightning_genae.datamodules.sequence import SequenceDataModule
from lightning_genae.datamodules.splits import FIXED_SPLIT_SEED, seeded_uniform, split_items

NUM_SERIES = 3000
DEFAULT_SEQ_LEN = 24
# Ranges of the per-series, per-channel draws: cycles per step, amplitude, noise std (data units).
FREQUENCY = (0.02, 0.2)
AMPLITUDE = (0.5, 2.0)
NOISE = (0.0, 0.1)


def _draw(count: int, stream: int, low: float, high: float) -> np.ndarray:
    return low + (high - low) * seeded_uniform(count, FIXED_SPLIT_SEED, stream)


def sine_series(num_series: int, seq_len: int, channels: int) -> torch.Tensor:
    """float32 [num_series, seq_len, channels]: a * sin(2 pi f t + phase) + noise, each drawn per channel."""
    shape = (num_series, 1, channels)
    count = num_series * channels
    frequency = _draw(count, 1, *FREQUENCY).reshape(shape)
    phase = _draw(count, 2, 0.0, 2 * math.pi).reshape(shape)
    amplitude = _draw(count, 3, *AMPLITUDE).reshape(shape)
    noise_std = _draw(count, 4, *NOISE).reshape(shape)
    # Box-Muller from two fixed uniform streams; 1 - u keeps the logarithm finite.
    size = num_series * seq_len * channels
    u1, u2 = 1.0 - seeded_uniform(size, FIXED_SPLIT_SEED, 5), seeded_uniform(size, FIXED_SPLIT_SEED, 6)
    normal = (np.sqrt(-2.0 * np.log(u1)) * np.cos(2 * math.pi * u2)).reshape(num_series, seq_len, channels)
    steps = np.arange(seq_len, dtype=np.float64).reshape(1, seq_len, 1)
    series = amplitude * np.sin(2 * math.pi * frequency * steps + phase) + noise_std * normal
    return torch.from_numpy(series.astype(np.float32))


class SinesDataModule(SequenceDataModule):
    """3000 synthetic series, fixed ~70/10/20 train/val/test split; unlabelled."""

    name = "sines"
    bounded = True

    @property
    def data_shape(self) -> tuple[int, int]:
        return (self.hparams.seq_len or DEFAULT_SEQ_LEN, self.hparams.channels or 1)

    def _load_series(self) -> dict[str, Batch]:
        seq_len, channels = self.data_shape
        return split_items(sine_series(NUM_SERIES, seq_len, channels))
