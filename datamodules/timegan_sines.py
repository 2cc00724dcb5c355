"""TimeGAN's Sines benchmark (Yoon et al., NeurIPS 2019), generated as its reference code does
(jsyoon0823/TimeGAN `sine_data_generation`), drawn by `seeded_uniform`, the same on every machine."""

from __future__ import annotations

import numpy as np
import torch

from lightning_genae.datamodules.base import Batch
from lightning_genae.datamodules.sequence import SequenceDataModule
from lightning_genae.datamodules.splits import FIXED_SPLIT_SEED, seeded_uniform, split_items

NUM_SERIES = 10_000
SEQ_LEN = 24
CHANNELS = 5
# Upper end of both the frequency (radians per step) and the phase (radians) draws.
MAX_DRAW = 0.1


def timegan_sine_series(
    num_series: int = NUM_SERIES, seq_len: int = SEQ_LEN, channels: int = CHANNELS
) -> torch.Tensor:
    """float32 [num_series, seq_len, channels] in [0, 1]: (sin(f t + p) + 1) / 2, f and p ~ U(0, 0.1)."""
    shape = (num_series, 1, channels)
    count = num_series * channels
    frequency = MAX_DRAW * seeded_uniform(count, FIXED_SPLIT_SEED, 11).reshape(shape)
    phase = MAX_DRAW * seeded_uniform(count, FIXED_SPLIT_SEED, 12).reshape(shape)
    steps = np.arange(seq_len, dtype=np.float64).reshape(1, seq_len, 1)
    series = (np.sin(frequency * steps + phase) + 1.0) * 0.5
    return torch.from_numpy(series.astype(np.float32))


class TimeGANSinesDataModule(SequenceDataModule):
    """TimeGAN's 10,000 Sines series (24 x 5), fixed 70/10/20 split, unlabelled, normalised per channel."""

    name = "timegan_sines"
    # Generated series stay inside the training range, as TimeGAN's own (a sigmoid output in min-max units).
    bounded = True

    @property
    def data_shape(self) -> tuple[int, int]:
        return (SEQ_LEN, CHANNELS)

    def _load_series(self) -> dict[str, Batch]:
        return split_items(timegan_sine_series())
