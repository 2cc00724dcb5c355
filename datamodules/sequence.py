"""Series datamodules: float32 [B, T, C], normalised per channel by a `Normaliser` fitted on the training
split alone and saved with the run, so generated series can be put back into the data's own units."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from lightning_genae.datamodules.base import Batch, DataKind, InMemoryDataModule
from lightning_genae.errors import DataError

# The series metrics fit on part of each set and score the rest: two series per split, checked at load.
MIN_SERIES_PER_SPLIT = 2
# A channel whose spread on the training split is at most this fraction of its largest magnitude is constant
# and keeps its scale instead of being divided by zero (relative, so small units still scale).
CONSTANT_RELATIVE_STD = 1e-9


@dataclass(frozen=True)
class Normaliser:
    """Per-channel `normalise(x) = (x - mean) / std` over the last dimension; `low` and `high`: the training
    split's per-channel range (data units) a bounded dataset's generated series are held in, else None."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    low: tuple[float, ...] | None = None
    high: tuple[float, ...] | None = None

    @classmethod
    def fit(cls, series: Tensor) -> Normaliser:
        """Mean and std of every channel over all series and time steps of `series` [N, T, C]."""
        flat = series.double().reshape(-1, series.shape[-1])
        mean, std = flat.mean(dim=0), flat.std(dim=0, unbiased=False)
        finite = mean.isfinite() & std.isfinite()
        if not finite.all():
            raise DataError(
                f"the training series of channel {int((~finite).int().argmax()) + 1} (counted from 1) have "
                "no finite mean and standard deviation (values missing, infinite or too large); fix them"
            )
        magnitude = flat.abs().amax(dim=0)
        constant = std <= CONSTANT_RELATIVE_STD * magnitude
        std = torch.where(constant, torch.ones_like(std), std)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def with_range(self, series: Tensor) -> Normaliser:
        """This normaliser with the per-channel minimum and maximum of `series` [N, T, C] (data units)."""
        flat = series.double().reshape(-1, series.shape[-1])
        return replace(self, low=tuple(flat.amin(dim=0).tolist()), high=tuple(flat.amax(dim=0).tolist()))

    def model_range(self) -> Tensor | None:
        """[2, C]: the recorded range's low and high rows in model (normalised) units; None if unbounded."""
        if self.low is None or self.high is None:
            return None
        return self.normalise(torch.tensor([self.low, self.high], dtype=torch.float64)).float()

    def _tensors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.tensor(self.mean, dtype=like.dtype, device=like.device)
        return mean, torch.tensor(self.std, dtype=like.dtype, device=like.device)

    def normalise(self, series: Tensor) -> Tensor:
        mean, std = self._tensors(series)
        return (series - mean) / std

    def denormalise(self, series: Tensor) -> Tensor:
        """Normalised series back in the data's own units."""
        mean, std = self._tensors(series)
        return series * std + mean

    def to_dict(self) -> dict[str, list[float]]:
        return {key: list(values) for key, values in asdict(self).items() if values is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Normaliser:
        fields = ("mean", "std", "low", "high")
        return cls(**{key: tuple(float(v) for v in values[key]) for key in fields if key in values})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")


class SequenceDataModule(InMemoryDataModule):
    """Series with fixed splits; subclasses implement `_load_series` (raw units) and `data_shape`."""

    name: ClassVar[str] = "series"
    data_kind: ClassVar[DataKind] = "sequence"
    item_noun: ClassVar[str] = "series"
    # Whether the dataset's values are bounded (a known process, pixels): the normaliser then records the
    # training split's per-channel range and a sequence model generates inside it. Unbounded data (a user's
    # recording may leave any range seen in training) keep an unbounded output.
    bounded: ClassVar[bool] = False

    def __init__(
        self,
        data_dir: str | Path,
        seq_len: int | None = None,
        stride: int | None = None,
        channels: int | None = None,
        csv_layout: str | None = None,
        series_id: str | None = None,
        fill_gaps: str | None = None,
        csv_channels: str | None = None,
        csv_bounded: bool = False,
        **shared: Any,
    ) -> None:
        """`shared`: the arguments of `InMemoryDataModule`; the others are the series datasets' options."""
        data_dir = str(data_dir)  # as the saved hyper-parameter (this frame's value is the one kept)
        super().__init__(data_dir, **shared)
        self._normaliser: Normaliser | None = None

    # Every series dataset's: the fixed (float [N,T,C] in the data's units, int64 [N]) splits.
    _load_series: Callable[[], dict[str, Batch]]

    def _fit_normaliser(self, train_series: Tensor) -> Normaliser:
        """Fitted on the training split; a dataset with a known range may fix it instead."""
        return Normaliser.fit(train_series)

    def _load_splits(self) -> dict[str, Batch]:
        raw = self._load_series()
        for split, (series, _) in raw.items():
            if len(series) < MIN_SERIES_PER_SPLIT:
                raise DataError(
                    f"{self.name}: the {split} split has {len(series)} series, fewer than the "
                    f"{MIN_SERIES_PER_SPLIT} the evaluation needs; give more data, or lower seq_len or stride"
                )
        # The whole training split, before any --train-size subset, so every subset shares one scale.
        self._normaliser = self._fit_normaliser(raw["train"][0])
        if self.bounded:
            self._normaliser = self._normaliser.with_range(raw["train"][0])
        return {
            split: (self._normaliser.normalise(series.double()).float().contiguous(), labels.long())
            for split, (series, labels) in raw.items()
        }

    @property
    def normaliser(self) -> Normaliser:
        """The per-channel normalisation of this dataset (loads the data once if needed)."""
        self._load_once()
        assert self._normaliser is not None
        return self._normaliser

    @staticmethod
    def to_model_range(series: Tensor) -> Tensor:
        """Series are stored normalised in float32, which is already the model's input."""
        return series.float()

    @staticmethod
    def to_stored(series: Tensor) -> Tensor:
        """A model's series as the DataModule stores them (float32, no graph)."""
        return series.detach().float()

    def state_dict(self) -> dict[str, Any]:
        """The normaliser, so a checkpoint alone says how to read its model's series in real units."""
        return {**super().state_dict(), "normaliser": self.normaliser.to_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume, normalise and bound as before, or the inputs would shift or the output range change."""
        if "normaliser" not in state_dict:
            return
        saved, now = Normaliser.from_dict(state_dict["normaliser"]).to_dict(), self.normaliser.to_dict()
        same = saved.keys() == now.keys() and all(
            len(saved[key]) == len(now[key])
            and all(abs(a - b) <= 1e-6 * max(1.0, abs(b)) for a, b in zip(saved[key], now[key], strict=True))
            for key in now
        )
        if not same:
            raise DataError(
                f"{self.name}: the data's per-channel mean/std or range differ from the checkpoint's "
                f"(saved {saved}, now {now}); resume with the data it was trained on"
            )
