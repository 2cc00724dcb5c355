"""A user's CSV file as series: one recording split in time order (no evaluation window overlaps a training
one), or a panel split by whole series (docs/data.md, "CSV files"); pandas reads the text."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lightning_genae.datamodules.base import Batch
from lightning_genae.datamodules.options import parse_channel_names
from lightning_genae.datamodules.sequence import Normaliser, SequenceDataModule
from lightning_genae.datamodules.splits import fixed_split
from lightning_genae.errors import ConfigError, DataError, describe_error
from lightning_genae.plugin_options import shown_value
from lightning_genae.progress import say

DEFAULT_SEQ_LEN = 24
DEFAULT_STRIDE = 1
TIME_COLUMN_NAMES = frozenset({"date", "time", "datetime", "timestamp", "ds"})
# A column is taken for a time index or a constant over this many values or more; fewer may be a coincidence.
COUNTER_MIN_ROWS = 10
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A first row counting 0, 1, 2, ... over this many cells is pandas' header of unnamed columns; two cells
# counting 0, 1 are as likely a first time step of two channels.
NUMBERED_HEADER_MIN_CELLS = 3


def _delimiter(first_line: str) -> str:
    counts = {delimiter: first_line.count(delimiter) for delimiter in (",", "\t", ";")}
    best = max(counts, key=counts.__getitem__)
    return best if counts[best] or len(first_line.split()) < 2 else r"\s+"


def _is_header(first: pd.Series) -> bool:
    """Whether a first row names the columns: a cell is neither a number, a gap nor an ISO 8601 date, or its
    cells count 0, 1, 2, ... (pandas' names of unnamed columns, which as data would be a ramp)."""
    cells = first.dropna()
    numbers = pd.to_numeric(cells, errors="coerce")
    text = cells[numbers.isna()]
    if len(text):
        return bool(pd.to_datetime(text, errors="coerce", format="ISO8601").isna().any())
    return len(numbers) >= NUMBERED_HEADER_MIN_CELLS and numbers.tolist() == list(range(len(numbers)))


def read_frame(path: Path) -> pd.DataFrame:
    """The file's cells as text (NaN at gaps) indexed by the file's row numbers, its columns named by its
    header or numbered from 1, less trailing empty columns and pandas' index; unreadable: one DataError."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # Excel's "CSV UTF-8" starts with a byte-order mark
        first = next((line for line in text.splitlines() if line.strip()), "")
        # index_col=False: a trailing delimiter on the data rows alone makes no index of the first column.
        read = partial(pd.read_csv, sep=_delimiter(first), dtype=str, index_col=False)
        header = _is_header(read(io.StringIO(text), header=None, nrows=1).iloc[0])
        with warnings.catch_warnings():
            # Values beyond the header's columns, which index_col=False would drop, are a ragged file.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = read(io.StringIO(text), header=0 if header else None)
    except (OSError, ValueError, pd.errors.ParserWarning) as error:
        raise DataError(f"{path}: not read as CSV ({describe_error(error)}); give UTF-8 CSV text") from None
    if not header:
        frame.columns = [str(number) for number in range(1, frame.shape[1] + 1)]
    frame.index += 2 if header else 1
    filled = frame.notna().any().to_numpy()
    frame = frame.iloc[:, : len(filled) - int(filled[::-1].argmax())]
    first_column = str(frame.columns[0])
    if first_column.startswith("Unnamed: ") and _timestamps(first_column, frame.iloc[:, 0]) is None:
        frame = frame.drop(columns=frame.columns[0])
    return frame


def _timestamps(name: str, column: pd.Series) -> pd.Series | None:
    """A timestamp column's times: every cell a date as pandas reads it (month-first where a cell reads both
    ways, unless day-first alone reads every cell), or a number under a header such as `date` or `time`."""
    time_named = name.strip().lower() in TIME_COLUMN_NAMES
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # that pandas reads each cell alone where no format fits them all
        for read in (pd.to_numeric, pd.to_datetime, partial(pd.to_datetime, dayfirst=True)):
            times = read(column, errors="coerce")
            if times.notna().sum() == column.notna().sum():
                dated = pd.api.types.is_datetime64_any_dtype(times)  # not so where time zones are mixed
                return times if dated or (time_named and read is pd.to_numeric) else None
    return None


def _numbers(path: Path, cells: pd.DataFrame) -> pd.DataFrame:
    """`cells` as float64, NaN at gaps; a cell that is no finite float32 (a model's dtype) is a DataError."""
    values = cells.apply(pd.to_numeric, errors="coerce").astype("float64")
    bad = cells.notna() & ~(values.abs() <= FLOAT32_MAX)
    if bad.to_numpy().any():
        row, column = bad.stack().idxmax()
        raise DataError(
            f"{path}: row {row}, column {column!r}: {shown_value(cells.at[row, column])} is not a finite "
            "number (a channel's cells are numbers, a timestamp column's dates of one form and time zone)"
        )
    return values


def fill_gaps(values: pd.DataFrame, method: str) -> pd.DataFrame:
    """Gaps filled down each column: `linear` interpolation (a gap at an end takes the nearest value) or
    `ffill` (the last value seen; a leading gap takes the first); a column without a value stays a gap."""
    return values.interpolate(limit_direction="both") if method == "linear" else values.ffill().bfill()


def _refuse_gaps(path: Path, values: pd.DataFrame, gaps: str | None) -> None:
    """A gap left in `values` is a DataError naming its row and column."""
    if values.isna().to_numpy().any():
        row, column = values.isna().stack().idxmax()
        fix = "its series or time split has no value to fill it from" if gaps else "fill it with fill_gaps"
        raise DataError(f"{path}: row {row}, column {column!r} is a gap; {fix}")


def time_split_bounds(length: int) -> list[tuple[str, int, int]]:
    """(split, first row, end row) of one recording of `length` rows: 70/10/20% in time order."""
    train = round(0.7 * length)
    val = train + round(0.1 * length)
    return [("train", 0, train), ("val", train, val), ("test", val, length)]


@dataclass(frozen=True)
class SeriesTable:
    """What a CSV file holds: channel names, its series (float64 [T_i, C] each) and their labels."""

    channel_names: list[str]
    series: list[Tensor]
    labels: Tensor
    panel: bool


def read_series(
    path: Path,
    layout: str = "time",
    series_id: str | None = None,
    gaps: str | None = None,
    channel_columns: Sequence[str] | None = None,
) -> SeriesTable:
    """A CSV file in `layout` time, rows, ucr or long as its series; `channel_columns` (time and long) names
    the channels (unset: every column but timestamps, the series id, a time index and a one-value column)."""
    frame = read_frame(path)
    if layout in ("rows", "ucr"):
        return _row_panel(path, frame, layout, gaps)
    named = {"series_id": [series_id] if layout == "long" else [], "csv_channels": channel_columns or []}
    for option, names in named.items():
        if unknown := [name for name in names if name not in frame.columns]:
            raise ConfigError(
                f"{option} {unknown[0]!r}: no column of {path}, only {', '.join(map(str, frame.columns))}"
            )
    ids = None
    if layout == "long":
        ids = frame.pop(series_id)
        if ids.isna().any():
            raise DataError(f"{path}: row {ids.isna().idxmax()} has no series_id; give every row its series")
    groups = np.zeros(len(frame)) if ids is None else ids.to_numpy()
    stamps = {name: times for name in frame.columns if (times := _timestamps(name, frame[name])) is not None}
    for name, times in stamps.items():
        # Windows cut across rows out of time order mean nothing: the rows of each series go forward.
        back = times < times.groupby(groups).cummax()
        if back.any():
            raise DataError(f"{path}: row {back.idxmax()} goes back in time in column {name!r}; sort by it")
    channels = list(channel_columns or [name for name in frame.columns if name not in stamps])
    values = _numbers(path, frame[channels])
    if channel_columns is None:
        values = values.drop(columns=_no_channels(path, values, groups))
    if ids is None:  # one recording, filled within each time split
        parts = [values.iloc[start:end] for _, start, end in time_split_bounds(len(values))]
    else:
        parts = [part for _, part in values.groupby(groups, sort=False)]
    if gaps is not None:
        parts = [fill_gaps(part, gaps) for part in parts]
    _refuse_gaps(path, pd.concat(parts), gaps)
    series = [torch.tensor(part.to_numpy()) for part in parts]
    if ids is None:
        series = [torch.cat(series)]
    labels = torch.full((len(series),), -1, dtype=torch.long)
    return SeriesTable([str(name) for name in values.columns], series, labels, panel=ids is not None)


def _no_channels(path: Path, values: pd.DataFrame, groups: np.ndarray) -> list[str]:
    """The columns that carry no series, unless they are all there is: a counter rising by a fixed step (a
    year, whose test values lie beyond every training one) or one value in every row (a flag)."""
    steps = values.groupby(groups).diff()
    found = []
    for name, column in values.items():
        present, step = column.dropna(), steps[name].dropna()
        counts = (present % 1 == 0).all() and step.nunique() == 1 and step.iloc[0] > 0
        if len(present) >= COUNTER_MIN_ROWS and (counts or present.nunique() == 1):
            found.append(name)
    if not found or len(found) == values.shape[1]:
        return []
    say(
        f"{path}: {', '.join(map(repr, found))} left out of the channels (a time index counting up by a "
        "fixed step, or one value in every row); name the channels with csv_channels to keep them"
    )
    return found


def _row_panel(path: Path, frame: pd.DataFrame, layout: str, gaps: str | None) -> SeriesTable:
    """One univariate series per row (`ucr`: after its class label, as the UCR archive stores it)."""
    values = _numbers(path, frame)
    labels = torch.full((len(values),), -1, dtype=torch.long)
    if layout == "ucr":
        labels = torch.from_numpy(pd.factorize(values.pop(values.columns[0]), sort=True)[0])
    # The UCR archive pads the shorter series of a variable-length set with gaps: the series ends there.
    missing = values.isna().to_numpy()
    padding = np.flip(np.logical_and.accumulate(np.flip(missing, 1), axis=1), 1) & (layout == "ucr")
    filled = values if gaps is None else fill_gaps(values.T, gaps).T
    _refuse_gaps(path, filled.mask(padding, 0.0), gaps)
    series = [
        torch.from_numpy(row[~end]).reshape(-1, 1)
        for row, end in zip(filled.to_numpy(), padding, strict=True)
    ]
    return SeriesTable(["value"], series, labels, panel=True)


class CSVSeriesDataModule(SequenceDataModule):
    """A CSV file's series: windows of one recording split in time order, or a panel split by series."""

    name = "csv"

    @property
    def bounded(self) -> bool:
        """A recording may later leave any range its training rows span: held inside it only if declared."""
        return bool(self.hparams.get("csv_bounded"))

    @property
    def layout(self) -> str:
        return self.hparams.get("csv_layout") or "time"

    @property
    def seq_len(self) -> int:
        if self.hparams.seq_len:
            return self.hparams.seq_len
        table = self.table
        lengths = {len(series) for series in table.series}
        return lengths.pop() if table.panel and len(lengths) == 1 else DEFAULT_SEQ_LEN

    @property
    def stride(self) -> int:
        return self.hparams.stride or DEFAULT_STRIDE

    @cached_property
    def table(self) -> SeriesTable:
        """The file's series, read once."""
        hparams = self.hparams
        given = hparams.get("csv_channels")
        # The command line's value is canonical already; one given in Python is checked the same way.
        channels = None if given is None else parse_channel_names(given)
        table = read_series(
            Path(self.data_dir), self.layout, hparams.get("series_id"), hparams.get("fill_gaps"), channels
        )
        lengths = {len(series) for series in table.series}
        # With the file's reading, on every rank, so that none goes on while another stops.
        if table.panel and len(lengths) == 1 and hparams.get("stride") and not hparams.seq_len:
            raise ConfigError(
                f"stride spaces windows of seq_len rows, and the {len(table.series)} series of "
                f"{self.data_dir} are each taken whole without seq_len; drop stride or give seq_len"
            )
        return table

    @property
    def channel_names(self) -> list[str]:
        return self.table.channel_names

    def reading_advice(self) -> str:
        if self.hparams.get("csv_channels") is not None or self.layout in ("rows", "ucr"):
            return ""
        # Versions may refine which columns are channels; naming the run's channels reads the file as it did.
        taken = ", ".join(self.channel_names)
        return f"name the run's channels with csv_channels (this version takes {taken}), "

    def summary(self) -> str:
        # Which columns became channels: a column taken for data, or data taken for an index, shows here.
        names = self.channel_names
        shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
        return f"{super().summary()}, channels {shown}"

    @property
    def data_shape(self) -> tuple[int, int]:
        return (self.seq_len, len(self.channel_names))

    def prepare_data(self) -> None:
        _ = self.table  # read now: a malformed file fails here, before a run folder is made

    def _series_parts(self) -> dict[str, list[tuple[Tensor, int]]]:
        """Each split's series and labels: time-ordered parts of one recording, or whole panel series."""
        table = self.table
        if not table.panel:
            rows = table.series[0]
            return {split: [(rows[start:end], -1)] for split, start, end in time_split_bounds(len(rows))}
        # Too few series leave a part too few windows, which `SequenceDataModule` refuses.
        count = len(table.series)
        train, val, test = fixed_split(table.labels, round(0.1 * count), round(0.2 * count))
        return {
            split: [(table.series[i], int(table.labels[i])) for i in indices.tolist()]
            for split, indices in (("train", train), ("val", val), ("test", test))
        }

    def _load_series(self) -> dict[str, Batch]:
        splits, too_short = {}, []
        for split, members in self._series_parts().items():
            windows, labels = [], []
            for rows, label in members:
                if len(rows) >= self.seq_len:
                    cut = rows.unfold(0, self.seq_len, self.stride).permute(0, 2, 1)  # [N, seq_len, C]
                    windows.append(cut)
                    labels += [label] * len(cut)
                else:
                    too_short.append(len(rows))
            splits[split] = (torch.cat(windows or [torch.empty(0, self.seq_len, 0)]), torch.tensor(labels))
        if too_short:
            # Said, not refused: a panel of uneven series often has a few short ones to spare.
            say(
                f"{self.data_dir}: {len(too_short)} of {len(self.table.series)} series shorter than seq_len "
                f"{self.seq_len} (the shortest {min(too_short)} rows) left out; a smaller seq_len keeps them"
            )
        return splits

    def _fit_normaliser(self, train_series: Tensor) -> Normaliser:
        # On the training rows themselves: overlapping windows would count middle rows more than edges.
        rows = torch.cat([rows for rows, _ in self._series_parts()["train"]])
        return Normaliser.fit(rows.unsqueeze(0))
