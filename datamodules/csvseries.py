"""A user's CSV file as series: every column a channel, rows as time steps, cut into sliding windows.

`--data csv --data-dir FILE.csv`. A first row with any non-numeric cell is the header (column names);
every other cell must be a finite number. The rows are split in time order, the first 70% for training,
the next 10% for validation and the last 20% for testing, so no window of the evaluation splits overlaps
a training window; each part is cut into windows of `--seq-len` rows every `--stride` rows.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torch import Tensor

from datamodules.base import Batch
from datamodules.sequence import MIN_SERIES_PER_SPLIT, Normaliser, SequenceDataModule
from lightning_genae.errors import DataError

DEFAULT_SEQ_LEN = 24
DEFAULT_STRIDE = 1
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.2))


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_numeric_csv(path: Path) -> tuple[list[str], Tensor]:
    """(column names, float64 [rows, columns]); a malformed file is one DataError naming row and column."""
    if path.is_dir():
        inside = sorted(child.name for child in path.glob("*.csv"))[:3]
        example = f" such as {path / inside[0]}" if inside else ""
        raise DataError(
            f"--data-dir {path} is a folder, and --data csv reads one CSV file; pass the path of the file"
            f"{example}"
        )
    if not path.is_file():
        raise DataError(f"--data-dir {path}: no such file; for --data csv pass the path of a CSV file")
    try:
        with path.open(newline="") as file:
            rows = [(number, row) for number, row in enumerate(csv.reader(file), start=1) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(
            f"{path}: cannot be read as CSV ({type(error).__name__}: {error}); fix the file"
        ) from None
    if not rows:
        raise DataError(f"{path}: no rows; give a CSV file with one numeric column per channel")
    first_number, first = rows[0]
    has_header = any(_number(cell) is None for cell in first)
    names = [cell.strip() or f"column {index}" for index, cell in enumerate(first, start=1)]
    if not has_header:
        names = [f"column {index}" for index in range(1, len(first) + 1)]
    body = rows[1:] if has_header else rows
    if not body:
        raise DataError(f"{path}: a header and no data rows; add rows of numbers")
    values = []
    for number, row in body:
        if len(row) != len(names):
            raise DataError(
                f"{path}: row {number} has {len(row)} fields, the {'header' if has_header else 'first row'} "
                f"(row {first_number}) has {len(names)}; give every row the same columns"
            )
        parsed = [_number(cell) for cell in row]
        for cell, value, name in zip(row, parsed, names, strict=True):
            if value is None:
                raise DataError(
                    f"{path}: row {number}, column {name!r}: {cell.strip()!r} is not a finite number; "
                    "every column must be numeric (drop or encode that column)"
                )
        values.append(parsed)
    return names, torch.tensor(values, dtype=torch.float64)


def sliding_windows(rows: Tensor, seq_len: int, stride: int) -> Tensor:
    """[rows, C] -> [N, seq_len, C]: windows starting every `stride` rows that fit entirely."""
    return rows.unfold(0, seq_len, stride).permute(0, 2, 1).contiguous()


class CSVSeriesDataModule(SequenceDataModule):
    """Windows of a CSV file's rows; unlabelled; splits in time order (70/10/20)."""

    name = "csv"
    takes = ("seq_len", "stride")
    # The file's names and values once read (per instance; the class default says "not read yet").
    _table: tuple[list[str], Tensor] | None = None

    @property
    def seq_len(self) -> int:
        return self.hparams.seq_len or DEFAULT_SEQ_LEN

    @property
    def stride(self) -> int:
        return self.hparams.stride or DEFAULT_STRIDE

    def table(self) -> tuple[list[str], Tensor]:
        """The file's column names and values, read once."""
        if self._table is None:
            self._table = read_numeric_csv(self.data_dir)
        return self._table

    @property
    def channel_names(self) -> list[str]:
        return self.table()[0]

    @property
    def data_shape(self) -> tuple[int, int]:
        return (self.seq_len, len(self.channel_names))

    def prepare_data(self) -> None:
        self.table()  # a malformed file fails here, before a run folder is made

    def _parts(self) -> dict[str, Tensor]:
        _, rows = self.table()
        parts, start = {}, 0
        for index, (split, fraction) in enumerate(SPLIT_FRACTIONS):
            end = len(rows) if index == len(SPLIT_FRACTIONS) - 1 else start + round(fraction * len(rows))
            parts[split] = rows[start:end]
            start = end
        return parts

    def _load_series(self) -> dict[str, Batch]:
        splits = {}
        for split, rows in self._parts().items():
            fits = len(rows) >= self.seq_len
            windows = sliding_windows(rows, self.seq_len, self.stride) if fits else rows[:0]
            if len(windows) < MIN_SERIES_PER_SPLIT:
                smaller = "--seq-len or --stride" if self.stride > 1 else "--seq-len"
                raise DataError(
                    f"{self.data_dir}: its {split} part has {len(rows)} of the file's {len(self.table()[1])} "
                    f"rows, {len(windows)} window(s) of --seq-len {self.seq_len} every --stride "
                    f"{self.stride}, fewer than the {MIN_SERIES_PER_SPLIT} the evaluation needs; "
                    f"use a smaller {smaller} or a longer file"
                )
            splits[split] = (windows, torch.full((len(windows),), -1, dtype=torch.long))
        return splits

    def _fit_normaliser(self, train_series: Tensor) -> Normaliser:
        # On the training rows themselves: overlapping windows would count middle rows more than edges.
        return Normaliser.fit(self._parts()["train"].unsqueeze(0))
