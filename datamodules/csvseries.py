"""A user's CSV file as series, in the forms time series are kept in: one long recording, or a panel of many.

`--data csv --data-dir FILE.csv`. The file is read as text (never unpickled); its delimiter (comma, tab or
semicolon) is sniffed from the first line, so the UCR archive's `.tsv` files read as they are, and a first
line of space-separated numbers (its older `.txt` files) splits on whitespace.

`--csv-layout` says how the file holds its series:

- `time` (the default): one recording, rows are time steps and columns are channels. The rows are split in
  time order, the first 70% for training, the next 10% for validation and the last 20% for testing, so no
  window of the evaluation splits overlaps a training window; each part is cut into windows of `--seq-len`
  rows (24) every `--stride` rows (1).
- `rows`: a panel, one univariate series per row, every cell a value.
- `ucr`: a panel as the UCR archive stores it: one univariate series per row, the first cell its class label.
- `long`: a panel in long format: a column named by `--series-id` says which series a row belongs to; each
  series is its rows in file order, the other columns its channels.

A panel's series are independent: they are split 70/10/20 as whole series (labels stratified), never as
windows of one another. Each series is one item when all have the same length and `--seq-len` is not given;
otherwise each is cut into windows of `--seq-len` every `--stride` rows within the series.

A first row with a cell that is neither a number, a gap nor a timestamp is the header (column names), as
is a first row counting 0, 1, 2, ... (pandas' names for unnamed columns). An unnamed column of whole numbers
rising row by row is pandas' index, left out, and so is a time index (the first channel column, or one named
like an index, rising by a fixed step); `--csv-channels` names the channels instead. Columns at the end with
no header and no value are a trailing delimiter. A
timestamp column (every cell a date or date-time such as `2024-01-31` or `31/01/2024 14:00`, or a header
named date, time, datetime, timestamp or ds) is kept out of the channels; its rows must be in time order.
Gaps (an empty cell, NA, NaN, null, ?) are refused unless `--fill-gaps linear` (interpolated along time within
each series and channel; a gap at an end takes the nearest value) or `--fill-gaps ffill` (the last value seen,
the first one for a leading gap) fills them. One recording's gaps are filled within each of its time splits,
so no evaluation value is drawn into a filled training row.

Over 400 lines for one job: every CSV form it reads (layouts, timestamp columns, gaps), each
refused with its fix when it cannot be read.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lightning_genae.datamodules.base import Batch
from lightning_genae.datamodules.options import CSVSeriesOptions, parse_channel_names
from lightning_genae.datamodules.sequence import MIN_SERIES_PER_SPLIT, Normaliser, SequenceDataModule
from lightning_genae.datamodules.splits import fixed_split
from lightning_genae.errors import ConfigError, DataError, OptionError, agree
from lightning_genae.plugin_options import shown_value
from lightning_genae.progress import say

DEFAULT_SEQ_LEN = 24
DEFAULT_STRIDE = 1
SPLIT_FRACTIONS = (("train", 0.7), ("val", 0.1), ("test", 0.2))
CSV_LAYOUTS = ("time", "rows", "ucr", "long")
GAP_CELLS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
TIME_COLUMN_NAMES = frozenset({"date", "time", "datetime", "timestamp", "ds"})
# Headers of a column that counts rows or time (taken for a time index when it rises by a fixed step), beside
# the first channel column, whatever its name: where a file keeps its index.
INDEX_COLUMN_NAMES = frozenset(
    {
        "year",
        "yr",
        "t",
        "step",
        "idx",
        "index",
        "id",
        "obs",
        "observation",
        "n",
        "no",
        "number",
        "cycle",
        "cycles",
        "period",
        "row",
        "sample",
        "epoch",
        "iteration",
    }
)
COUNTER_MIN_ROWS = 10
# A UCR file whose every row has a label of its own (with this many rows or more), or a label beyond this,
# holds ids or years in its first cells rather than classes (the archive's sets number classes from -1, 0
# or 1; Fungi's training split has 18 rows of 18 classes).
UCR_ID_MIN_ROWS = 30
UCR_LABEL_MAX = 1000
# Day-first before month-first: an ambiguous 01/02/2024 reads as 1 February, as most of the world writes it.
DATE_FORMATS = ("%d/%m/%Y", "%m/%d/%Y", "%Y/%m/%d", "%d.%m.%Y", "%Y.%m.%d")
TIME_SUFFIXES = ("", " %H:%M", " %H:%M:%S")
# Forms with the month's name read one way only: Jan-1-1995, 1-Jan-1995, 1 Jan 1995, Jan 1, 1995, Jan 1995.
MONTH_NAME_FORMS = ("%b-%d-%Y", "%d-%b-%Y", "%d %b %Y", "%b %d %Y", "%b %d, %Y", "%b %Y", "%B %Y", "%d %B %Y")
DELIMITERS = (",", "\t", ";")
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A first row counting 0, 1, ... over this many cells or more is pandas' header of unnamed columns; two
# cells counting 0, 1 are as likely a first time step of two channels.
NUMBERED_HEADER_MIN_CELLS = 3


def _number(cell: str) -> float | None:
    # Python reads `1_000` as 1000, as no spreadsheet or pandas does: a cell with `_` is not a number.
    if "_" in cell:
        return None
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def is_gap(cell: str) -> bool:
    """An empty or not-available cell."""
    return cell.strip().lower() in GAP_CELLS


def parse_timestamp(cell: str, date_formats: Sequence[str] = DATE_FORMATS) -> datetime | None:
    """A date or date-time in ISO 8601 or a common day/month/year form (the first of `date_formats` that
    reads it); None otherwise (numbers too)."""
    text = cell.strip()
    if not text or _number(text) is not None:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    period = re.fullmatch(r"(\d{4})-(\d{2})|(\d{4})[-\s]?[Qq]([1-4])", text)
    if period is not None:  # a monthly or quarterly period as pandas writes it: 1949-01, 1974Q1
        year, month, quarter_year, quarter = period.groups()
        try:
            if year is not None:
                return datetime(int(year), int(month), 1)
            return datetime(int(quarter_year), 3 * int(quarter) - 2, 1)
        except ValueError:  # month 13, year 0: no date, as an ISO date of that kind is none
            return None
    for named in MONTH_NAME_FORMS:
        try:
            return datetime.strptime(text, named)
        except ValueError:
            continue
    for date in date_formats:
        for suffix in TIME_SUFFIXES:
            try:
                return datetime.strptime(text, date + suffix)
            except ValueError:
                continue
    return None


@dataclass(frozen=True)
class CSVTable:
    """A CSV file read as text: column names, and the data rows with their line numbers."""

    path: Path
    names: list[str]
    rows: list[tuple[int, list[str]]]
    has_header: bool

    def column(self, index: int) -> list[str]:
        return [row[index] for _, row in self.rows]


def _whitespace_delimited(first_line: str) -> bool:
    """A first line of two or more numbers (and gaps, NaN) separated by spaces alone (no comma, tab or
    semicolon)."""
    cells = first_line.split()
    return (
        not any(delimiter in first_line for delimiter in DELIMITERS)
        and sum(_number(cell) is not None for cell in cells) >= 2
        and all(_number(cell) is not None or is_gap(cell) for cell in cells)
    )


def _sniff_delimiter(first_line: str) -> str:
    counts = {delimiter: first_line.count(delimiter) for delimiter in DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def read_table(path: Path, blank_rows_are_gaps: bool = False) -> CSVTable:
    """The file's rows as text; a missing, unreadable or ragged file is one DataError naming the fix.

    Blank lines are dropped, but with `blank_rows_are_gaps` (rows are time steps) in a one-column file:
    there a blank line between two data rows is a time step whose cell is a gap, which is how pandas writes
    a missing value of one column; dropped, it would silently shorten the series and shift what follows.
    """
    if path.is_dir():
        inside = sorted(child.name for child in path.glob("*.csv"))[:3]
        example = f" such as {path / inside[0]}" if inside else ""
        raise DataError(
            f"data_dir {path} is a folder, and the csv dataset reads one CSV file; pass the path of the file"
            f"{example}"
        )
    if not path.is_file():
        what = "not a regular file (a pipe or device)" if path.exists() else "no such file"
        raise DataError(f"data_dir {path}: {what}; for the csv dataset pass the path of a CSV file")
    try:
        raw = path.read_bytes()
        # utf-8-sig: the byte-order mark Excel's "CSV UTF-8" starts a file with is no part of its first cell;
        # "Unicode Text" is UTF-16 led by its own mark.
        encoding = "utf-16" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
        # "\r\r\n" ends every line of a file Python's csv module wrote on Windows in text mode: one line
        # each, not a line and a blank one.
        text = raw.decode(encoding).replace("\r\r\n", "\r\n")
        first_line = text.splitlines()[0] if text else ""
        if _whitespace_delimited(first_line):
            # The UCR archive's older .txt files: numbers padded and separated by spaces.
            numbered = [(number, line.split()) for number, line in enumerate(text.splitlines(), start=1)]
        else:
            # newline="": the csv reader sees \r, \n and \r\n line ends as they are (\r alone: a Mac export).
            lines = io.StringIO(text, newline="")
            delimiter = _sniff_delimiter(first_line)
            numbered = list(enumerate(csv.reader(lines, delimiter=delimiter), start=1))
    except UnicodeDecodeError as error:
        raise DataError(
            f"{path}: not UTF-8 text (at byte offset {error.start}: {raw[error.start : error.start + 1]!r}); "
            'save it as UTF-8 ("CSV UTF-8" in Excel)'
        ) from None
    except (OSError, csv.Error) as error:
        raise DataError(
            f"{path}: cannot be read as CSV ({type(error).__name__}: {error}); fix the file"
        ) from None
    filled = [position for position, (_, row) in enumerate(numbered) if any(cell.strip() for cell in row)]
    rows = [numbered[position] for position in filled]
    if not rows:
        raise DataError(f"{path}: no rows; give a CSV file with one numeric column per channel")
    first_number, first = rows[0]
    has_header = any(
        _number(cell) is None and not is_gap(cell) and parse_timestamp(cell) is None for cell in first
    )
    if not has_header and _numbers_columns(first):
        has_header = True
        say(
            f"{path}: the first row counts 0, 1, 2, ...: read as the column numbers pandas writes for a "
            "frame without column names, not as data; if it is data, add a header row of channel names"
        )
    if has_header:
        names = [cell.strip() or f"column {index}" for index, cell in enumerate(first, start=1)]
        body = rows[1:]
    else:
        names = [f"column {index}" for index in range(1, len(first) + 1)]
        body = rows
    if not body:
        raise DataError(f"{path}: a header and no data rows; add rows of numbers")
    if blank_rows_are_gaps and len(names) == 1:
        # The blank lines between the first data row and the last, each a time step of one gap.
        start, end = filled[-len(body)], filled[-1]
        body = [
            (number, row if any(cell.strip() for cell in row) else [""])
            for number, row in numbered[start : end + 1]
        ]
    for number, row in body:
        if len(row) != len(names):
            raise DataError(
                f"{path}: row {number} has {len(row)} fields, the {'header' if has_header else 'first row'} "
                f"(row {first_number}) has {len(names)}; give every row the same columns"
            )
    return CSVTable(path, names, body, has_header)


def _numbers_columns(first: Sequence[str]) -> bool:
    """Whether a first row is pandas' header of unnamed columns: 0, 1, 2, ... (three numbers or more),
    after an empty cell where the index was written too. As data it would be a ramp taken for a series (a
    panel) or for the first time step."""
    cells = list(first[1:]) if first and not first[0].strip() else list(first)
    return len(cells) >= NUMBERED_HEADER_MIN_CELLS and [_number(cell) for cell in cells] == [
        float(position) for position in range(len(cells))
    ]


def _counts_up(values: Sequence[float | None]) -> bool:
    """Whether `values` count 0, 1, 2, ... or 1, 2, 3, ...: how pandas numbers an index or unnamed columns."""
    return values[:1] in ([0.0], [1.0]) and all(
        a is not None and b == a + 1 for a, b in zip(values, values[1:], strict=False)
    )


def find_index_columns(table: CSVTable) -> list[int]:
    """Columns with an empty header cell whose values are whole numbers rising down the rows: the index
    pandas' to_csv writes first, counting 0, 1, 2, ... or, once rows were filtered out, with steps. Taken
    as a channel it would add a ramp to every window (a panel: a constant to each series)."""
    found = []
    for index, name in enumerate(table.names):
        # An empty header cell is named by its position (read_table); pandas names a read index that it
        # writes again `Unnamed: 0`.
        unnamed = name == f"column {index + 1}" or re.fullmatch(r"Unnamed: \d+", name) is not None
        if not (table.has_header and unnamed):
            continue
        values = [_number(cell) for cell in table.column(index)]
        whole = None not in values and all(value == round(value) >= 0 for value in values)
        if len(values) >= 2 and whole and all(a < b for a, b in zip(values, values[1:], strict=False)):
            found.append(index)
    return found


def without_index_columns(table: CSVTable, keep: Sequence[int] = ()) -> CSVTable:
    """`table` less its pandas index columns (find_index_columns; those in `keep` stay), with a line naming
    each one left out."""
    dropped = [index for index in find_index_columns(table) if index not in keep]
    if not dropped:
        return table
    say(
        f"{table.path}: {', '.join(repr(table.names[index]) for index in dropped)}, unnamed and rising "
        "row by row, read as pandas' index and left out; give it a name in the header to keep it as data"
    )
    kept = [index for index in range(len(table.names)) if index not in dropped]
    rows = [(number, [row[index] for index in kept]) for number, row in table.rows]
    return CSVTable(table.path, [table.names[index] for index in kept], rows, table.has_header)


def find_time_columns(table: CSVTable) -> list[int]:
    """Columns holding timestamps: every non-gap cell a date, or a header named like a time column."""
    found = []
    for index, name in enumerate(table.names):
        cells = [cell for cell in table.column(index) if not is_gap(cell)]
        all_dates = bool(cells) and all(parse_timestamp(cell) is not None for cell in cells)
        if all_dates or (table.has_header and name.strip().lower() in TIME_COLUMN_NAMES):
            found.append(index)
    return found


def _series_rows(table: CSVTable, id_column: int, ordered_by_time: bool) -> dict[str, list[int]]:
    """The long layout's series: each id's rows, in file order. An empty id cell is refused (its rows
    would become a series named ''). So is, in a file without a time column, an id whose rows come back in a
    second block of a file kept in blocks per id: two recordings sharing an id (a stray repeat, two exports
    appended), which would be joined into one series. Rows of several series that interleave a row at a
    time (a file sorted by time) are read as they are."""
    name = table.names[id_column]
    groups: dict[str, list[int]] = {}
    runs: list[tuple[str, int]] = []  # (id, the row number its block starts at)
    lengths: list[int] = []  # rows in each block
    for position, (number, row) in enumerate(table.rows):
        key = row[id_column].strip()
        if not key:
            raise DataError(
                f"{table.path}: row {number}, column {name!r} (the series id) is empty; give every row its "
                "series' id"
            )
        if not runs or runs[-1][0] != key:
            runs.append((key, number))
            lengths.append(0)
        lengths[-1] += 1
        groups.setdefault(key, []).append(position)
    # Kept in blocks: most blocks hold several rows (two exports appended one after the other included),
    # where a file sorted by time interleaves the series a row at a time.
    in_blocks = bool(lengths) and sorted(lengths)[len(lengths) // 2] >= 2
    if not ordered_by_time and in_blocks and len(runs) > len(groups):
        seen: dict[str, int] = {}
        for key, number in runs:
            if key in seen:
                members = groups[key]
                raise DataError(
                    f"{table.path}: series {key!r} starts at row {seen[key]} and again at row {number} "
                    f"(rows {table.rows[members[0]][0]}-{table.rows[members[-1]][0]}), and the file has no "
                    f"time column to order them by; keep each series' rows together (sort by {name!r}), "
                    "or give two recordings ids of their own"
                )
            seen[key] = number
    return groups


def _check_time_order(table: CSVTable, column: int, groups: dict[str, list[int]]) -> None:
    """The rows of each series must go forward in time: windows cut across a shuffled file mean nothing.

    A column holds one date form: 01/12/2024 is 1 December or 12 January for every cell alike. Of the forms
    that read every cell (both, where no day exceeds 12), the first under which the rows go forward is
    taken; if none, the first form's error is the one raised.
    """
    # ISO 8601 cells read one way only (gaps and numbers are no dates); the others decide the column's form.
    cells = [
        cell
        for cell in (row[column] for _, row in table.rows)
        if not is_gap(cell) and _number(cell) is None and parse_timestamp(cell, ()) is None
    ]
    forms = [
        (date,) for date in DATE_FORMATS if all(parse_timestamp(cell, (date,)) is not None for cell in cells)
    ]
    if len(forms) == len(DATE_FORMATS):  # no cell in a day/month form (all ISO, numbers or gaps)
        forms = []
    errors = []
    for form in forms or [DATE_FORMATS]:
        try:
            repeats = _check_order_in(table, column, groups, form)
        except DataError as error:
            errors.append(error)
            continue
        if repeats:
            count, first = len(repeats), repeats[0]
            say(
                f"{table.path}: {count} row{'s' if count > 1 else ''} (the first: row {first}) "
                f"{agree(repeats, 'repeats', 'repeat')} the time of the row before in column "
                f"{table.names[column]!r}; every row is read as its own step (duplicated rows, or several "
                "series in one file: csv_layout long with series_id COLUMN reads those apart)"
            )
        return
    raise errors[0]


def _check_order_in(
    table: CSVTable, column: int, groups: dict[str, list[int]], date_formats: Sequence[str]
) -> list[int]:
    """Raise DataError where a series goes back in time; returns the line numbers of rows that repeat the
    time of the row before."""
    name = table.names[column]
    repeats = []
    for members in groups.values():
        previous: datetime | float | None = None
        for position in members:
            number, row = table.rows[position]
            cell = row[column]
            stamp = parse_timestamp(cell, date_formats)
            value: datetime | float | None = stamp if stamp is not None else _number(cell)
            if value is None:
                if is_gap(cell):
                    continue
                raise DataError(
                    f"{table.path}: row {number}, column {name!r}: {shown_value(cell.strip())} is not a "
                    "timestamp; fix the cell or rename the column"
                )
            if isinstance(value, datetime) and isinstance(previous, datetime):
                if (value.tzinfo is None) != (previous.tzinfo is None):
                    raise DataError(
                        f"{table.path}: row {number}, column {name!r}: {shown_value(cell.strip())} "
                        f"{'has no' if value.tzinfo is None else 'has a'} time zone and the row before "
                        f"{'has one' if value.tzinfo is None else 'has none'}; give every time in one form"
                    )
            if previous is not None and type(value) is type(previous):
                if value < previous:
                    several = len(groups) > 1
                    raise DataError(
                        f"{table.path}: row {number} goes back in time in column {name!r} ({cell.strip()}); "
                        + (
                            f"sort each series' rows by {name!r}, and give two recordings that share a "
                            "series id ids of their own"
                            if several
                            else f"sort the file by {name!r}"
                        )
                    )
                if value == previous:
                    repeats.append(number)
            previous = value
    return repeats


def _values(table: CSVTable, channels: Sequence[int]) -> np.ndarray:
    """float64 [rows, channels], NaN at gaps; a cell that is neither is a DataError naming row and column."""
    values = np.full((len(table.rows), len(channels)), np.nan)
    for position, (number, row) in enumerate(table.rows):
        for slot, column in enumerate(channels):
            cell = row[column]
            value = _number(cell)
            if value is not None and abs(value) > FLOAT32_MAX:
                raise DataError(
                    f"{table.path}: row {number}, column {table.names[column]!r}: {value:g} is beyond the "
                    "range of the 32-bit numbers models compute in (about 3.4e38); fix the cell or "
                    "rescale the column"
                )
            if value is not None:
                values[position, slot] = value
            elif not is_gap(cell):
                if parse_timestamp(cell) is not None:
                    _refuse_a_cell_no_timestamp(table, column, number)
                fix = (
                    "write numbers with a decimal point (a decimal comma is read as text)"
                    if re.fullmatch(r"[-+]?\d+,\d+", cell.strip())
                    else "every column but a timestamp (or series_id) column must be numeric (drop or "
                    "encode that column)"
                )
                raise DataError(
                    f"{table.path}: row {number}, column {table.names[column]!r}: "
                    f"{shown_value(cell.strip())} is not a finite number; {fix}"
                )
    return values


def _refuse_a_cell_no_timestamp(table: CSVTable, column: int, date_row: int) -> None:
    """A column read as a channel holds a timestamp in row `date_row`. Where most of its cells are
    timestamps (`1949-13` among monthly periods kept it from being a timestamp column), the cell that is
    no timestamp is the one to name; where most are numbers, the timestamp is the stray cell."""
    cells = [row[column] for _, row in table.rows if not is_gap(row[column])]
    numbers = sum(_number(cell) is not None for cell in cells)
    if numbers * 2 >= len(cells):
        cell = next(row[column] for number, row in table.rows if number == date_row)
        raise DataError(
            f"{table.path}: row {date_row}, column {table.names[column]!r}: {shown_value(cell.strip())} is a "
            "date in a column of numbers; fix the cell"
        )
    for number, row in table.rows:
        cell = row[column]
        if not is_gap(cell) and parse_timestamp(cell) is None:
            raise DataError(
                f"{table.path}: row {number}, column {table.names[column]!r}: {shown_value(cell.strip())} "
                "is not a timestamp, where the column's other cells are; fix the cell"
            )


def fill_gaps(series: np.ndarray, method: str) -> np.ndarray:
    """[T, C] with NaN gaps -> filled along time, per channel (`linear` or `ffill`); a channel with no value
    at all stays NaN for the caller to refuse."""
    filled = series.copy()
    steps = np.arange(len(series))
    for channel in range(series.shape[1]):
        column = filled[:, channel]
        known = ~np.isnan(column)
        if known.all() or not known.any():
            continue
        if method == "linear":
            column[~known] = np.interp(steps[~known], steps[known], column[known])
        else:
            last_seen = np.maximum.accumulate(np.where(known, steps, -1))
            column[:] = np.where(last_seen >= 0, column[np.maximum(last_seen, 0)], column[known][0])
    return filled


def time_split_bounds(length: int) -> list[tuple[str, int, int]]:
    """(split, first row, end row) of one recording of `length` rows: its parts in time order."""
    bounds, start = [], 0
    for index, (split, fraction) in enumerate(SPLIT_FRACTIONS):
        end = length if index == len(SPLIT_FRACTIONS) - 1 else start + round(fraction * length)
        bounds.append((split, start, end))
        start = end
    return bounds


def _fill_recording(part: np.ndarray, method: str) -> np.ndarray:
    """One recording's gaps filled within each of its splits, so no value of the validation or test part
    reaches a filled training row (or the other way round) across a split's boundary."""
    filled = part.copy()
    for _, start, end in time_split_bounds(len(part)):
        filled[start:end] = fill_gaps(part[start:end], method)
    return filled


def _first_gap(table: CSVTable, rows: Sequence[int], channels: Sequence[int], values: np.ndarray) -> str:
    position, slot = map(int, np.argwhere(np.isnan(values))[0])
    return f"row {table.rows[rows[position]][0]}, column {table.names[channels[slot]]!r}"


def sliding_windows(rows: Tensor, seq_len: int, stride: int) -> Tensor:
    """[rows, C] -> [N, seq_len, C]: windows starting every `stride` rows that fit entirely."""
    return rows.unfold(0, seq_len, stride).permute(0, 2, 1).contiguous()


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
    """A CSV file in one of CSV_LAYOUTS as its series; malformed input is one DataError naming the fix.

    `channel_columns` (time and long layouts): the columns to read as channels, by header name (or number
    from 1 in a file without a header); unset, every column but timestamps, the series id and the index and
    counter columns found and the columns of one value.
    """
    table = read_table(path, blank_rows_are_gaps=layout == "time")
    if layout in ("rows", "ucr"):
        return _read_row_panel(without_index_columns(table), layout, gaps)
    table = _without_trailing_empty_columns(table)
    if channel_columns is None:
        table = without_index_columns(table, keep=find_time_columns(table))
    time_columns = find_time_columns(table)
    id_column = _id_column(table, series_id) if layout == "long" else None
    excluded = {*time_columns, *([id_column] if id_column is not None else [])}
    if id_column is None:
        groups = {"": list(range(len(table.rows)))}
    else:
        groups = _series_rows(table, id_column, ordered_by_time=bool(time_columns))
    if channel_columns is not None:
        channels = _named_channels(table, channel_columns, excluded)
    else:
        channels = [index for index in range(len(table.names)) if index not in excluded]
    if not channels:
        raise DataError(f"{path}: no numeric column besides the timestamp or id columns; add one per channel")
    for column in time_columns:
        if column != id_column:  # an id column of dates names series; it is no time axis within them
            _check_time_order(table, column, groups)
    values = _values(table, channels)
    if channel_columns is None:
        channels, values = _without_counters(table, channels, values, groups)
        channels, values = _without_constants(table, channels, values)
    series = [
        torch.from_numpy(
            _gaps_filled(table, channels, values, key, members, gaps, one_recording=id_column is None)
        )
        for key, members in groups.items()
    ]
    _refuse_channels_of_one_name(table, channels)
    names = [table.names[index] for index in channels]
    labels = torch.full((len(series),), -1, dtype=torch.long)
    return SeriesTable(names, series, labels, panel=id_column is not None)


def _refuse_channels_of_one_name(table: CSVTable, channels: Sequence[int]) -> None:
    """Refuse channels whose header name another column of the file bears: a run records its channels by
    name (and `csv_channels` picks them so), so two columns `a` would be one channel's name for either."""
    if not table.has_header:
        return
    for index in channels:
        same = [str(column + 1) for column in _columns_named(table, table.names[index])]
        if len(same) > 1:
            raise DataError(
                f"{table.path}: columns {' and '.join(same)} are both named {table.names[index]!r}, and a "
                "run knows its channels by name; give them distinct names in the file's header"
            )


def _gaps_filled(
    table: CSVTable,
    channels: Sequence[int],
    values: np.ndarray,
    key: str,
    members: Sequence[int],
    gaps: str | None,
    one_recording: bool,
) -> np.ndarray:
    """One series' rows of `values`, its gaps filled by `gaps` (one recording within each time split); a gap
    left is a DataError naming its row and column."""
    part = values[members]
    if not np.isnan(part).any():
        return part
    if gaps is not None:
        part = _fill_recording(part, gaps) if one_recording else fill_gaps(part, gaps)
        if not np.isnan(part).any():
            return part
    where = _first_gap(table, members, channels, part)
    if gaps is None:
        fix = "fill gaps with fill_gaps linear or ffill, or fill them in the file"
    elif one_recording:
        fix = (
            "that channel has no value in one of the recording's 70/10/20 time splits, within which gaps "
            "are filled; fill it in the file, or drop the column"
        )
    else:
        fix = f"that channel has no value in series {key!r}; drop the series or the column"
    raise DataError(f"{table.path}: {where} is a gap; {fix}")


def _without_trailing_empty_columns(table: CSVTable) -> CSVTable:
    """`table` less the columns at its end with an empty header cell and no cell filled: a trailing
    delimiter (`1,2,`), not a channel of gaps; a line says so."""
    width = len(table.names)
    while (
        width > 1
        and table.names[width - 1] == f"column {width}"
        and all(not row[width - 1].strip() for _, row in table.rows)
    ):
        width -= 1
    if width == len(table.names):
        return table
    say(
        f"{table.path}: every row ends with {len(table.names) - width} empty cell(s) (a trailing delimiter): "
        "read as the end of each row"
    )
    rows = [(number, row[:width]) for number, row in table.rows]
    return CSVTable(table.path, table.names[:width], rows, table.has_header)


def _without_counters(
    table: CSVTable, channels: list[int], values: np.ndarray, groups: dict[str, list[int]]
) -> tuple[list[int], np.ndarray]:
    """`channels` and their `values` less the time-index columns among them (a counter, `_is_counter`, that is
    the first channel column or has an index-like header), with a line naming them; all are kept when they
    would leave no channel."""
    counting = [
        slot
        for slot, column in enumerate(channels)
        if (slot == 0 or (table.has_header and _index_like(table.names[column])))
        and _is_counter(values[:, slot], groups.values())
    ]
    if not counting or len(counting) == len(channels):
        return channels, values
    named = ", ".join(repr(table.names[channels[slot]]) for slot in counting)
    say(
        f"{table.path}: {named} {agree(counting, 'counts', 'count')} up by a fixed step row by row (a year, "
        "an observation number, a cycle), read as a time index and left out of the channels; name the "
        "channels with csv_channels to keep it"
    )
    return _without_slots(channels, values, counting)


def _without_constants(
    table: CSVTable, channels: list[int], values: np.ndarray
) -> tuple[list[int], np.ndarray]:
    """`channels` and their `values` less the columns holding one value in every row of COUNTER_MIN_ROWS or
    more (a status flag, a unit code): as a channel such a column is predicted perfectly and lifts every
    per-channel score without a better model. A line names them; all are kept when they would leave no
    channel."""
    constant: dict[int, float] = {}  # slot -> its one value
    for slot in range(len(channels)):
        present = values[:, slot][~np.isnan(values[:, slot])]
        if len(present) >= COUNTER_MIN_ROWS and (present == present[0]).all():
            constant[slot] = present[0]
    if not constant or len(constant) == len(channels):
        return channels, values
    named = ", ".join(f"{table.names[channels[slot]]!r} ({value:g})" for slot, value in constant.items())
    say(
        f"{table.path}: {named} {agree(constant, 'holds', 'hold')} one value in every row, left out of the "
        "channels; name the channels with csv_channels to keep it"
    )
    return _without_slots(channels, values, list(constant))


def _without_slots(channels: list[int], values: np.ndarray, slots: list[int]) -> tuple[list[int], np.ndarray]:
    """`channels` and the columns of `values` but those at `slots`."""
    kept = [column for slot, column in enumerate(channels) if slot not in slots]
    return kept, np.delete(values, slots, axis=1)


def _index_like(name: str) -> bool:
    """A header that names a count of rows or of time: year, obs, cycle, id, ... (any case)."""
    return name.strip().lower() in INDEX_COLUMN_NAMES


def _is_counter(column: np.ndarray, groups: Iterable[Sequence[int]]) -> bool:
    """Whether a column's values are whole numbers rising by one fixed step row by row within each series
    of COUNTER_MIN_ROWS rows or more (shorter series are not judged; at least one must be that long): a
    year, an observation number or a cycle count, which as a channel would be a ramp whose test values lie
    beyond every training value."""
    judged = 0
    for members in groups:
        values = column[members]
        if len(values) < COUNTER_MIN_ROWS:
            continue  # too short to tell a counter from a coincidence: the longer series decide
        if not np.array_equal(values, np.round(values)):
            return False  # NaN (a gap) is not equal to itself either
        steps = np.diff(values)
        if steps[0] <= 0 or not (steps == steps[0]).all():
            return False
        judged += 1
    return judged > 0


def _named_channels(table: CSVTable, names: Sequence[str], excluded: Collection[int]) -> list[int]:
    """The columns `names` (csv_channels) as indexes, in the order given; an unknown one, or a timestamp or
    id column, is the OptionError of csv_channels naming the file's columns."""
    chosen = []
    for name in names:
        matches = _columns_named(table, name)
        if not matches:
            raise OptionError(
                "csv_channels",
                f"{name!r}: {table.path} has no such column; its columns are {', '.join(table.names)}",
            )
        if matches[0] in excluded:
            raise OptionError(
                "csv_channels",
                f"{name!r} is {table.path}'s timestamp or series_id column, not a channel; leave it out",
            )
        chosen.append(matches[0])
    return chosen


def _columns_named(table: CSVTable, name: str) -> list[int]:
    """The indexes of the columns `name` names: by header, or by number from 1 in a file without one."""
    return [
        index
        for index, column in enumerate(table.names)
        if column == name or (not table.has_header and name == str(index + 1))
    ]


def _id_column(table: CSVTable, series_id: str | None) -> int:
    if series_id is None:
        raise DataError("csv_layout long needs series_id COLUMN, the column that names each row's series")
    matches = _columns_named(table, series_id)
    if len(matches) > 1:
        raise DataError(
            f"{table.path}: columns {' and '.join(str(index + 1) for index in matches)} are both named "
            f"{series_id!r}, so series_id {series_id} names neither; give them distinct names in the "
            "file's header"
        )
    if matches:
        return matches[0]
    raise DataError(
        f"{table.path}: no column {series_id!r} for series_id; "
        f"the file's columns are {', '.join(table.names)}"
    )


def _read_row_panel(table: CSVTable, layout: str, gaps: str | None) -> SeriesTable:
    """One univariate series per row (`ucr`: the first cell the class label, as the UCR archive stores it)."""
    offset = 1 if layout == "ucr" else 0
    if len(table.names) - offset < 2:
        raise DataError(
            f"{table.path}: rows of {len(table.names)} cells are too short for csv_layout {layout}"
        )
    numbers = [_number(name) for name in table.names[1:] if not is_gap(name)]
    if layout == "ucr" and table.has_header and None not in numbers and not _counts_up(numbers):
        # Taken for a header by its first cell alone: a series whose label is text (a header of pandas'
        # numbered columns counts 0, 1, 2, ... after its label column's name).
        raise DataError(
            f"{table.path}: the first row's label {table.names[0]!r} is not an integer; csv_layout ucr "
            "takes integer class labels in the first cell (number the classes), or use csv_layout rows "
            "for rows without labels"
        )
    values = _values(table, range(len(table.names)))
    if layout == "rows":
        # Cells empty in every row at the rows' end are a trailing delimiter (`1,2,3,`), not a gap per row;
        # a written gap (NA, ?) there is a gap.
        width = values.shape[1]
        while width > 1 and all(len(row) < width or not row[width - 1].strip() for _, row in table.rows):
            width -= 1
        if width < values.shape[1]:
            say(
                f"{table.path}: every row ends with {values.shape[1] - width} empty cell(s) (a trailing "
                "delimiter): read as the end of each row"
            )
            values = values[:, :width]
    series, labels = [], []
    for position, (number, _) in enumerate(table.rows):
        row = values[position, offset:].reshape(-1, 1)
        if layout == "ucr":
            label = values[position, 0]
            if math.isnan(label) or label != round(label):
                raise DataError(
                    f"{table.path}: row {number}: the first cell is the class label in csv_layout ucr and "
                    "must be an integer; use csv_layout rows for rows without labels"
                )
            labels.append(int(label))
        observed = np.flatnonzero(~np.isnan(row[:, 0]))
        if not len(observed):
            raise DataError(f"{table.path}: row {number} has no values; drop it")
        if layout == "ucr":
            # The UCR archive pads the shorter series of a variable-length set with trailing gaps: the
            # series ends there, and filling the padding would append a made-up flat tail.
            row = row[: observed[-1] + 1]
        if np.isnan(row).any():
            if gaps is None:
                raise DataError(
                    f"{table.path}: row {number} has a gap; fill gaps with fill_gaps linear or ffill, "
                    "or fill them in the file"
                )
            row = fill_gaps(row, gaps)
        series.append(torch.from_numpy(row))
    if layout == "ucr":
        classes = sorted(set(labels))
        if (len(classes) == len(labels) >= UCR_ID_MIN_ROWS) or max(map(abs, classes)) > UCR_LABEL_MAX:
            # A year or an id in the first cell reads as a label too; a class of one or two series each is
            # seldom what a labelled set holds, and the probe metrics over it mean nothing.
            say(
                f"{table.path}: csv_layout ucr reads the first cell of each row as its class label, and "
                f"the {len(labels)} rows hold {len(classes)} classes from {classes[0]} to {classes[-1]}; if "
                "that cell is an id, a year or a value, use csv_layout rows"
            )
        label_tensor = torch.tensor([classes.index(label) for label in labels], dtype=torch.long)
    else:
        label_tensor = torch.full((len(series),), -1, dtype=torch.long)
    return SeriesTable(["value"], series, label_tensor, panel=True)


class CSVSeriesDataModule(SequenceDataModule):
    """A CSV file's series: windows of one recording split in time order, or a panel split by series."""

    name = "csv"
    takes = tuple(CSVSeriesOptions.types())
    # The file's series once read (per instance; the class default says "not read yet").
    _table: SeriesTable | None = None

    @property
    def layout(self) -> str:
        return self.hparams.get("csv_layout") or "time"

    @property
    def seq_len(self) -> int:
        if self.hparams.seq_len:
            return self.hparams.seq_len
        table = self.table()
        lengths = {len(series) for series in table.series}
        return lengths.pop() if table.panel and len(lengths) == 1 else DEFAULT_SEQ_LEN

    @property
    def stride(self) -> int:
        return self.hparams.stride or DEFAULT_STRIDE

    def table(self) -> SeriesTable:
        """The file's series, read once."""
        if self._table is None:
            given = self.hparams.get("csv_channels")
            # The command line's value is canonical already; one given in Python is checked the same way.
            channels = None if given is None else parse_channel_names(given)
            table = read_series(
                Path(self.data_dir),
                self.layout,
                self.hparams.get("series_id"),
                self.hparams.get("fill_gaps"),
                channels,
            )
            self._check_windows(table)
            self._table = table
        return self._table

    @property
    def channel_names(self) -> list[str]:
        return self.table().channel_names

    def reading_advice(self) -> str:
        if self.hparams.get("csv_channels") is not None or self.layout in ("rows", "ucr"):
            return ""
        # Which columns are channels is decided by rules that a version may refine (index and counter
        # columns); naming the run's channels reads the file as the run did.
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
        self.table()  # a malformed file fails here, before a run folder is made

    def _check_windows(self, table: SeriesTable) -> None:
        """Refuse windowing options that cannot apply to the file's series; with the file's reading, on every
        rank, so that none goes on while another stops."""
        lengths = {len(series) for series in table.series}
        if self.layout == "ucr" and len(lengths) > 1 and not self.hparams.seq_len:
            raise ConfigError(
                f"the {len(table.series)} series of {self.data_dir} run from {min(lengths)} to "
                f"{max(lengths)} steps (the archive's padding of the shorter ones left off); give seq_len "
                f"{min(lengths)} or less to cut each into windows of that length"
            )
        if table.panel and len(lengths) == 1 and self.hparams.get("stride") and not self.hparams.seq_len:
            raise ConfigError(
                f"stride spaces windows of seq_len rows, and the {len(table.series)} series of "
                f"{self.data_dir} ({lengths.pop()} rows each) are each taken whole without seq_len; drop "
                "stride or give seq_len"
            )

    def _series_parts(self) -> dict[str, list[tuple[Tensor, int]]]:
        """Each split's series and labels: time-ordered parts of one recording, or whole panel series."""
        table = self.table()
        if not table.panel:
            rows = table.series[0]
            return {split: [(rows[start:end], -1)] for split, start, end in time_split_bounds(len(rows))}
        count = len(table.series)
        num_val, num_test = round(0.1 * count), round(0.2 * count)
        if min(num_val, num_test, count - num_val - num_test) < MIN_SERIES_PER_SPLIT:
            raise DataError(
                f"{self.data_dir}: {count} series are too few to split 70/10/20 with at least "
                f"{MIN_SERIES_PER_SPLIT} in each part; give at least {math.ceil(MIN_SERIES_PER_SPLIT / 0.1)}"
            )
        train, val, test = fixed_split(table.labels, num_val, num_test)
        return {
            split: [(table.series[i], int(table.labels[i])) for i in indices.tolist()]
            for split, indices in (("train", train), ("val", val), ("test", test))
        }

    def _load_series(self) -> dict[str, Batch]:
        splits = {}
        table = self.table()
        too_short = []
        for split, members in self._series_parts().items():
            windows, labels = [], []
            for rows, label in members:
                if len(rows) >= self.seq_len:
                    cut = sliding_windows(rows, self.seq_len, self.stride)
                    windows.append(cut)
                    labels += [label] * len(cut)
                else:
                    too_short.append(len(rows))
            count = len(labels)
            if count < MIN_SERIES_PER_SPLIT:
                smaller = "seq_len or stride" if self.stride > 1 else "seq_len"
                windows_text = (
                    f"{count} window(s) of seq_len {self.seq_len} every stride {self.stride}, fewer than "
                    f"the {MIN_SERIES_PER_SPLIT} the evaluation needs"
                )
                if table.panel:
                    # A panel is split by whole series: the file's series, and how long they are, decide it.
                    longest = max((len(rows) for rows, _ in members), default=0)
                    raise DataError(
                        f"{self.data_dir}: its {split} part has {len(members)} of the file's "
                        f"{len(table.series)} series, the longest {longest} steps, which give "
                        f"{windows_text}; use a smaller {smaller}, or more or longer series"
                    )
                rows, total = sum(len(rows) for rows, _ in members), len(table.series[0])
                if rows < self.seq_len:
                    smaller = "seq_len"  # no window fits, whatever the stride
                raise DataError(
                    f"{self.data_dir}: its {split} part has {rows} of the file's {total} rows, which give "
                    f"{windows_text}; use a smaller {smaller} or a longer file"
                )
            splits[split] = (torch.cat(windows), torch.tensor(labels, dtype=torch.long))
        if too_short:
            # Said, not refused: a panel of uneven series often has a few short ones to spare.
            count = len(too_short)
            say(
                f"{self.data_dir}: {count} of its {len(table.series)} series "
                f"{'is' if count == 1 else 'are'} shorter than seq_len {self.seq_len} (the shortest "
                f"{min(too_short)} rows) and left out; a smaller seq_len keeps them"
            )
        return splits

    def _fit_normaliser(self, train_series: Tensor) -> Normaliser:
        # On the training rows themselves: overlapping windows would count middle rows more than edges.
        rows = torch.cat([rows for rows, _ in self._series_parts()["train"]])
        return Normaliser.fit(rows.unsqueeze(0))
