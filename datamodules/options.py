"""The datasets' options, one `PluginOptions` dataclass per kind of dataset, apart from the DataModules so
that `--help` reads them without Lightning; a value left unset (None) is the DataModule's to decide."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from lightning_genae.errors import OptionError
from lightning_genae.plugin_options import PluginOptions, option


@dataclass(frozen=True)
class ChannelsOptions(PluginOptions):
    channels: int | None = option(
        None,
        "1 (grayscale) or 3 channels for --data folder; channels of --data sines",
        at_least=1,
        shown_default="3 for folder, 1 for sines",
    )


@dataclass(frozen=True)
class SeqLenOptions(PluginOptions):
    # At least 2: a one-step series has no time in it, and the series scores predict a next step.
    seq_len: int | None = option(
        None,
        "time steps per series for --data sines and csv",
        at_least=2,
        shown_default="24; a CSV panel's own length when all its series have one",
    )


@dataclass(frozen=True)
class ImageOptions(ChannelsOptions):
    """Every image dataset's: a dataset of fixed geometry takes only its own values (folder: any)."""

    image_size: int | None = option(None, "image side for --data folder", at_least=1, shown_default="64")


@dataclass(frozen=True)
class SinesOptions(SeqLenOptions, ChannelsOptions):
    """The synthetic sines' length and channel count."""


def parse_channel_names(text: str) -> list[str]:
    """`csv_channels` as a list of column names; an empty or repeated one is its OptionError."""
    names = [name.strip() for name in str(text).split(",")]
    # A repeated name would weigh one column twice in every per-channel score.
    if not all(names) or len(set(names)) < len(names):
        raise OptionError("csv_channels", f"{text!r}: give each column's name once, separated by commas")
    return names


@dataclass(frozen=True)
class CSVSeriesOptions(SeqLenOptions):
    """How a CSV file is read into series and cut into windows."""

    stride: int | None = option(
        None, "rows between the starts of two windows for --data csv", at_least=1, shown_default="1"
    )
    csv_layout: Literal["time", "rows", "ucr", "long"] | None = option(
        None,
        "--data csv: time (rows are time steps of one recording), rows (a series per row), ucr (a series "
        "per row after its class label) or long (rows of many series, named by --series-id)",
        shown_default="time",
    )
    series_id: str | None = option(
        None, "--data csv --csv-layout long: the column that names each row's series"
    )
    fill_gaps: Literal["linear", "ffill"] | None = option(
        None,
        "--data csv: fill empty or NA cells by linear interpolation along time or by the last value "
        "(unset: a gap is refused)",
    )
    csv_channels: str | None = option(
        None,
        "--data csv --csv-layout time or long: the columns to read as channels, comma-separated header "
        "names (unset: every numeric column but timestamps, --series-id and index or counter columns)",
        canonical=lambda text: ",".join(parse_channel_names(text)),
    )
    csv_bounded: bool = option(
        False,
        "--data csv: the values cannot leave the range the training rows span (a share, a level, pixels), "
        "so rae generates inside it (unset: a recording may leave it, and rae's output stays unbounded)",
    )

    def unread(self) -> dict[str, str]:
        unread = super().unread()
        layout = self.csv_layout or "time"
        if layout in ("rows", "ucr"):
            unread["csv_channels"] = (
                f"names the channel columns of csv_layout time or long, not {layout}; drop it"
            )
        if layout != "long":
            unread["series_id"] = (
                f"names the series of csv_layout long, and this file is read as {layout}; drop it or add "
                "csv_layout long"
            )
        return unread
