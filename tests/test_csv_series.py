"""CSV series as users keep them: timestamps, gaps, panels of many short series (UCR rows, long format)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.csvseries import fill_gaps, parse_timestamp, read_series
from lightning_genae.errors import ConfigError, DataError, OptionError


def write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_pandas_export_keeps_its_date_column_out_of_the_channels(tmp_path):
    # pandas' to_csv writes the index (dates) as the first column, with an empty or named header.
    lines = ["date,co2,temperature"] + [
        f"1958-{1 + i // 28:02d}-{1 + i % 28:02d},{315 + 0.1 * i:.2f},{10 + math.sin(i):.4f}"
        for i in range(300)
    ]
    datamodule = build_datamodule("csv", data_dir=write(tmp_path / "co2.csv", lines), seq_len=12)
    assert datamodule.channel_names == ["co2", "temperature"]
    assert datamodule.data_shape == (12, 2)
    train, _ = datamodule.split_tensors("train")
    assert train.shape == (210 - 12 + 1, 12, 2)


def test_a_pandas_range_index_is_kept_out_of_the_channels(tmp_path):
    # df.to_csv() writes the RangeIndex first, under an empty header cell.
    lines = [",TEMP,SUNACTIVITY"] + [f"{i},{(i * 5) % 11},{(i * 7) % 13}.5" for i in range(120)]
    table = read_series(write(tmp_path / "sunspots.csv", lines))
    assert table.channel_names == ["TEMP", "SUNACTIVITY"]
    # Read by pandas and written again, the index is named `Unnamed: 0`.
    lines[0] = "Unnamed: 0,TEMP,SUNACTIVITY"
    assert read_series(write(tmp_path / "again.csv", lines)).channel_names == ["TEMP", "SUNACTIVITY"]
    # An unnamed column that does not rise row by row is data.
    lines = [",value"] + [f"{(7 * i) % 60},{i % 5}" for i in range(60)]
    assert read_series(write(tmp_path / "shuffled.csv", lines)).channel_names == ["column 1", "value"]
    lines = [",value"] + [f"{i + 0.5},{i % 5}" for i in range(60)]
    assert read_series(write(tmp_path / "halves.csv", lines)).channel_names == ["column 1", "value"]


def test_the_index_of_a_filtered_pandas_frame_is_kept_out_and_named(tmp_path, capsys):
    # df[df.value > 0].to_csv(): the index keeps the numbers of the rows that stayed, with steps.
    kept = [i for i in range(200) if i % 3]
    lines = [",value,temperature"] + [f"{i},{i % 5},{i % 7}" for i in kept]
    table = read_series(write(tmp_path / "filtered.csv", lines))
    assert table.channel_names == ["value", "temperature"]
    assert table.series[0][:, 0].tolist() == [float(i % 5) for i in kept]
    assert "'column 1', unnamed and rising row by row, read as pandas' index" in capsys.readouterr().out


def test_pandas_numbered_column_names_are_a_header_not_a_series(tmp_path, capsys):
    # pd.DataFrame(array).to_csv(index=False): the columns are named 0, 1, ..., n - 1.
    length = 30
    rows = [",".join(f"{math.sin(0.2 * t + k):.4f}" for t in range(length)) for k in range(40)]
    numbered = write(tmp_path / "panel.csv", [",".join(str(t) for t in range(length))] + rows)
    table = read_series(numbered, layout="rows")
    assert len(table.series) == 40
    assert table.series[0][:3, 0].tolist() == pytest.approx([0.0, 0.1987, 0.3894])
    assert "the first row counts 0, 1, 2, ...: read as the column numbers pandas writes" in (
        capsys.readouterr().out
    )
    # With the index written too (df.to_csv()): an empty cell first, and each row's number left out.
    indexed = write(
        tmp_path / "indexed.csv",
        ["," + ",".join(str(t) for t in range(length))] + [f"{k},{row}" for k, row in enumerate(rows)],
    )
    again = read_series(indexed, layout="rows")
    assert len(again.series) == 40 and all(
        torch.equal(a, b) for a, b in zip(again.series, table.series, strict=True)
    )
    # A UCR file read by pandas without a header and written again: label column 0, then 1, 2, ...
    ucr_rows = [f"{1 + k % 2}," + row for k, row in enumerate(rows)]
    ucr = write(tmp_path / "ucr.csv", [",".join(str(t) for t in range(length + 1))] + ucr_rows)
    assert len(read_series(ucr, layout="ucr").series) == 40
    # One recording of three unnamed channels.
    steps = [f"{t % 4},{t % 5},{t % 6}" for t in range(60)]
    recording = read_series(write(tmp_path / "time.csv", ["0,1,2"] + steps))
    assert recording.channel_names == ["0", "1", "2"] and recording.series[0].shape == (60, 3)
    # Two cells counting 0, 1 are a first time step as likely as a header: data.
    pairs = [f"{t % 4},{t % 5}" for t in range(1, 60)]
    first = read_series(write(tmp_path / "two.csv", ["0,1"] + pairs)).series[0]
    assert first.shape == (60, 2) and first[0].tolist() == [0.0, 1.0]


def test_a_file_without_header_whose_first_column_is_dates_is_read(tmp_path):
    lines = [f"2024-01-{1 + i // 24:02d} {i % 24:02d}:00,{i}" for i in range(100)]
    table = read_series(write(tmp_path / "x.csv", lines))
    assert table.channel_names == ["column 2"] and table.series[0][:, 0].tolist() == list(range(100))


def test_timestamps_out_of_order_are_refused_with_the_fix(tmp_path):
    lines = ["timestamp,value", "2024-01-02,1", "2024-01-01,2", "2024-01-03,3"]
    with pytest.raises(DataError, match="goes back in time.*sort the file by 'timestamp'"):
        read_series(write(tmp_path / "x.csv", lines))


@pytest.mark.parametrize(
    ("cell", "parsed"),
    [
        ("2024-01-31", True),
        ("31/01/2024 14:00", True),
        ("2024-01-31T14:00:00", True),
        ("1.5", False),
        ("abc", False),
        ("1949-01", True),
        ("1974Q1", True),
        # Periods of no calendar date are no timestamp, as ISO dates of that kind are none.
        ("0000-01", False),
        ("0000Q1", False),
        ("1949-13", False),
    ],
)
def test_timestamp_forms(cell, parsed):
    assert (parse_timestamp(cell) is not None) is parsed


def test_a_gap_is_refused_with_the_option_that_fills_it(tmp_path):
    lines = ["a,b"] + [f"{i},{'' if i == 7 else i}" for i in range(60)]
    expected = r"row 9, column 'b' is a gap; fill gaps with fill_gaps linear or ffill"
    with pytest.raises(DataError, match=expected):
        read_series(write(tmp_path / "x.csv", lines))


def test_a_one_column_files_empty_cell_is_a_gap_not_a_dropped_row(tmp_path):
    # pandas writes a missing value of a one-column frame as an empty line; blank lines around the data
    # are not rows.
    lines = ["", "co2", *[str(i) for i in range(1, 4)], "", *[str(i) for i in range(5, 61)], "", ""]
    path = write(tmp_path / "co2.csv", lines)
    with pytest.raises(DataError, match=r"row 6, column 'co2' is a gap; fill gaps with fill_gaps"):
        read_series(path)
    filled = read_series(path, gaps="linear").series[0][:, 0]
    assert filled.tolist() == [float(i) for i in range(1, 61)]


def test_blank_lines_of_a_file_with_several_columns_or_line_endings_are_no_gaps(tmp_path):
    # Python's csv module on Windows in text mode ends each line with \r\r\n; a blank line after the header,
    # or between rows of several columns, is layout, not a time step.
    windows = tmp_path / "windows.csv"
    windows.write_bytes(("a,b\r\r\n" + "".join(f"{i},{2 * i}\r\r\n" for i in range(60))).encode())
    spaced = write(tmp_path / "spaced.csv", ["a,b", "", *[f"{i},{2 * i}" for i in range(30)], "", "30,60"])
    one_column = write(tmp_path / "one.csv", ["co2", "", *[str(i) for i in range(40)]])
    for path, length in ((windows, 60), (spaced, 31), (one_column, 40)):
        assert len(read_series(path).series[0]) == length


def test_blank_lines_between_a_panels_rows_are_not_series(tmp_path):
    lines = [",".join(str(i + j + 1) for j in range(12)) for i in range(30)]
    table = read_series(write(tmp_path / "rows.csv", [*lines[:10], "", *lines[10:]]), layout="rows")
    assert len(table.series) == 30


def test_gaps_are_filled_linearly_or_forward(tmp_path):
    values = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0], [6.0, np.nan]])
    linear = fill_gaps(values, "linear")
    np.testing.assert_allclose(linear, [[2, 1], [2, 2], [4, 3], [6, 3]])
    forward = fill_gaps(values, "ffill")
    np.testing.assert_allclose(forward, [[2, 1], [2, 1], [2, 3], [6, 3]])
    lines = ["a,b"] + [f"{i % 7},{'NA' if i % 10 == 3 else 2 * i}" for i in range(60)]
    table = read_series(write(tmp_path / "x.csv", lines), gaps="linear")
    assert table.series[0][3, 1].item() == pytest.approx(6.0)


def test_a_recordings_gaps_are_filled_within_its_time_splits_not_across_them(tmp_path):
    # 100 rows: training 0-69, validation 70-79, test 80-99. A gap at the training part's last rows would
    # be drawn towards the validation part's first value if the whole recording were filled at once.
    values = [str(float(i)) for i in range(100)]
    values[68] = values[69] = ""
    values[80] = "NA"  # the test part's first row
    path = write(tmp_path / "x.csv", ["a", *[cell or "NA" for cell in values]])
    series = read_series(path, gaps="linear").series[0][:, 0]
    assert series[68].item() == series[69].item() == 67.0, "the training part's nearest value, not 70's"
    assert series[80].item() == 81.0, "the test part's own first value, not the validation part's"
    assert series[70:80].tolist() == [float(i) for i in range(70, 80)]
    forward = read_series(path, gaps="ffill").series[0][:, 0]
    assert forward[80].item() == 81.0, "a part's leading gap takes its first value"
    all_gaps = ["a", *[str(float(i)) if i < 70 or i >= 80 else "NA" for i in range(100)]]
    with pytest.raises(DataError, match="no value in one of the recording's 70/10/20 time splits"):
        read_series(write(tmp_path / "empty-val.csv", all_gaps), gaps="linear")


def test_a_trailing_delimiter_on_every_row_of_a_panel_is_no_gap(tmp_path, capsys):
    lines = [",".join(f"{i + 0.1 * j:.1f}" for j in range(12)) + "," for i in range(30)]
    table = read_series(write(tmp_path / "rows.csv", lines), layout="rows")
    assert [len(series) for series in table.series] == [12] * 30
    assert table.series[3][:, 0].tolist() == pytest.approx([3 + 0.1 * j for j in range(12)])
    assert "every row ends with 1 empty cell(s)" in capsys.readouterr().out
    # A written gap in every row's last cell is a gap, not a delimiter.
    written = [line[:-1] + ",NA" for line in lines]
    with pytest.raises(DataError, match="row 1 has a gap"):
        read_series(write(tmp_path / "na.csv", written), layout="rows")
    assert [
        len(series) for series in read_series(tmp_path / "na.csv", layout="rows", gaps="ffill").series
    ] == [13] * 30
    # One row's empty last cell among full rows is still a gap.
    lines = [line[:-1] for line in lines]
    lines[7] = lines[7].rsplit(",", 1)[0] + ","
    with pytest.raises(DataError, match="row 8 has a gap"):
        read_series(write(tmp_path / "gap.csv", lines), layout="rows")


def ucr_lines(count=40, length=30):
    rows = []
    for index in range(count):
        label = 1 + index % 2
        values = [f"{label * math.sin(0.3 * t + index):.5f}" for t in range(length)]
        rows.append("\t".join([str(label), *values]))
    return rows


def test_ucr_rows_are_independent_labelled_series_split_by_series(tmp_path):
    path = write(tmp_path / "Train.tsv", ucr_lines())
    datamodule = build_datamodule("csv", data_dir=path, csv_layout="ucr")
    assert datamodule.data_shape == (30, 1)
    sizes = {split: len(datamodule.split_tensors(split)[0]) for split in ("train", "val", "test")}
    assert sizes == {"train": 28, "val": 4, "test": 8}
    train_labels = datamodule.split_tensors("train")[1]
    assert set(train_labels.tolist()) == {0, 1}, "the UCR class labels become 0..K-1"
    # Every test series is one of the file's rows, whole: no window of a training series leaks into it.
    table = datamodule.table()
    test = datamodule.denormalise(datamodule.split_tensors("test")[0].double())
    rows = torch.stack(table.series)
    for series in test:
        assert (rows - series).abs().amax(dim=(1, 2)).min() < 1e-3


def test_rows_without_labels_and_windows_within_each_series(tmp_path):
    lines = [",".join(f"{math.cos(0.2 * t + i):.4f}" for t in range(40)) for i in range(30)]
    datamodule = build_datamodule(
        "csv", data_dir=write(tmp_path / "x.csv", lines), csv_layout="rows", seq_len=10, stride=10
    )
    train, labels = datamodule.split_tensors("train")
    assert train.shape == (21 * 4, 10, 1) and (labels == -1).all()


def test_long_format_groups_rows_by_the_series_id_column(tmp_path):
    lines = ["unit,time,sensor1,sensor2"]
    for unit in range(20):
        lines += [f"u{unit},{t},{unit + t + t % 2 / 4},{unit - t + t % 2 / 4}" for t in range(16)]
    datamodule = build_datamodule(
        "csv", data_dir=write(tmp_path / "panel.csv", lines), csv_layout="long", series_id="unit"
    )
    assert datamodule.channel_names == ["sensor1", "sensor2"] and datamodule.data_shape == (16, 2)
    train = datamodule.denormalise(datamodule.split_tensors("train")[0].double())
    assert len(train) == 14
    # Each series is one unit's rows in order: sensor1 - sensor2 = 2 t, whatever the unit.
    assert torch.allclose(train[:, :, 0] - train[:, :, 1], 2 * torch.arange(16.0).double(), atol=1e-3)


def test_panel_series_shorter_than_seq_len_are_left_out_with_a_line(tmp_path, capsys):
    lines = ["unit,sensor"]
    for unit in range(20):
        lines += [f"u{unit},{unit + t}" for t in range(3 if unit in (4, 11) else 16)]
    path = write(tmp_path / "panel.csv", lines)
    datamodule = build_datamodule("csv", data_dir=path, csv_layout="long", series_id="unit", seq_len=8)
    datamodule.setup()
    assert sum(len(datamodule.split_tensors(split)[0]) for split in ("train", "val", "test")) == 18 * 9
    assert (
        f"{path}: 2 of its 20 series are shorter than seq_len 8 (the shortest 3 rows) and left out; a "
        "smaller seq_len keeps them" in capsys.readouterr().out
    )


def test_a_panel_whose_series_are_all_shorter_than_seq_len_names_its_series_not_rows(tmp_path):
    lines = ["unit,sensor"] + [f"u{unit},{unit + t}" for unit in range(20) for t in range(5)]
    path = write(tmp_path / "panel.csv", lines)
    datamodule = build_datamodule("csv", data_dir=path, csv_layout="long", series_id="unit", seq_len=8)
    with pytest.raises(
        DataError, match=r"its train part has 14 of the file's 20 series, the longest 5 steps, "
    ):
        datamodule.setup()


def test_long_format_needs_its_id_column(tmp_path):
    path = write(tmp_path / "x.csv", ["id,v", "a,1", "a,2"])
    with pytest.raises(DataError, match="needs series_id COLUMN"):
        read_series(path, layout="long")
    with pytest.raises(DataError, match="no column 'unit' for series_id; the file's columns are id, v"):
        read_series(path, layout="long", series_id="unit")


def test_a_folder_given_as_a_csv_says_what_it_is(tmp_path):
    with pytest.raises(DataError, match="is a folder, and the csv dataset reads one CSV file"):
        read_series(tmp_path)


@pytest.mark.parametrize("channels", [None, ["a"]], ids=["every column", "--csv-channels a"])
def test_two_channel_columns_of_one_name_are_refused(tmp_path, channels):
    lines = ["a,a,b", *(f"{i},{i % 3},{i % 5}" for i in range(12))]
    with pytest.raises(
        DataError, match="columns 1 and 2 are both named 'a'.*distinct names in the file's header"
    ):
        read_series(write(tmp_path / "x.csv", lines), channel_columns=channels)
    assert read_series(write(tmp_path / "y.csv", lines), channel_columns=["b"]).channel_names == ["b"]


def test_a_column_of_periods_with_one_that_is_no_date_names_that_cell(tmp_path):
    months = [f"19{49 + i // 12}-{i % 12 + 1:02d}" for i in range(30)]
    months[6] = "1949-13"
    lines = ["month,v", *(f"{month},{i}" for i, month in enumerate(months))]
    with pytest.raises(DataError, match="row 8, column 'month': '1949-13' is not a timestamp, where the"):
        read_series(write(tmp_path / "x.csv", lines))


def test_two_columns_named_as_the_series_id_are_refused(tmp_path):
    lines = ["unit,x,unit", *(f"u{i % 2},{i},v{i % 2}" for i in range(40))]
    with pytest.raises(DataError, match="columns 1 and 3 are both named 'unit', so series_id unit names"):
        read_series(write(tmp_path / "x.csv", lines), layout="long", series_id="unit")


def test_a_period_of_year_zero_is_read_as_text_not_a_traceback(tmp_path):
    with pytest.raises(DataError, match="0000-01"):
        read_series(write(tmp_path / "x.csv", ["month,v", "0000-01,1", "0000-02,2", "0000-03,3"]))


def test_a_text_column_that_is_not_a_timestamp_is_refused(tmp_path):
    lines = ["city,value"] + [f"Paris,{i}" for i in range(40)]
    with pytest.raises(DataError, match="'Paris' is not a finite number"):
        read_series(write(tmp_path / "x.csv", lines))


@pytest.mark.parametrize(
    ("given", "refusal"),
    [
        (
            {"series_id": "a"},
            "series_id names the series of csv_layout long, and this file is read as time",
        ),
    ],
)
def test_a_csv_option_the_layout_does_not_read_is_refused(given, refusal):
    from lightning_genae.datamodules import parse_dataset_options
    from lightning_genae.errors import ConfigError

    with pytest.raises(ConfigError, match=refusal):
        parse_dataset_options("csv", given)
    # Read where the layout reads it; unset, never refused.
    parse_dataset_options("csv", {**given, "csv_layout": "long", "series_id": "a", "seq_len": 4})
    parse_dataset_options("csv", {"series_id": None, "csv_layout": "rows"})
    # A value stored by a run (its checkpoint, its config.yaml), not typed now, is not refused: it did
    # nothing there either, and refusing it would leave that run without a way to resume.
    parse_dataset_options("csv", given, named=())


def test_a_stored_image_backbone_of_a_series_run_resolves_and_a_typed_one_is_refused():
    from lightning_genae.errors import ConfigError
    from lightning_genae.experiment.config import RunConfig
    from lightning_genae.experiment.resolve import resolve

    stored = RunConfig.from_dict({"model": "rae", "data": "sines", "backbone": "inception"})
    assert resolve(stored).config.backbone == "inception"
    with pytest.raises(ConfigError, match="--backbone inception scores images"):
        resolve(stored, named={"backbone"})


def test_a_date_column_reads_in_one_form_month_first_where_that_is_the_order(tmp_path):
    # 01/12/2024 read day-first would be 1 December, between 11 and 13 January: the column is one form.
    lines = ["date,value"] + [f"01/{day:02d}/2024,{day}" for day in range(1, 31)]
    table = read_series(write(tmp_path / "us.csv", lines))
    assert table.series[0][:, 0].tolist() == [float(day) for day in range(1, 31)]
    # Where both forms read every cell, the one under which the rows go forward: 10/01 then 02/02 is
    # forward day-first only, 01/05 then 02/03 month-first only.
    for name, dates in (
        ("eu", ["10/01/2024", "02/02/2024", "03/03/2024"]),
        ("us", ["01/05/2024", "02/03/2024"]),
    ):
        lines = ["date,value"] + [f"{date},{index}" for index, date in enumerate(dates)]
        assert len(read_series(write(tmp_path / f"{name}.csv", lines)).series[0]) == len(dates)
    lines = ["date,value", "01/13/2024,1", "01/02/2024,2", "01/20/2024,3"]
    with pytest.raises(DataError, match="row 3 goes back in time in column 'date'"):
        read_series(write(tmp_path / "shuffled.csv", lines))


def test_a_stride_for_a_panel_taken_whole_is_refused_before_the_run(tmp_path):
    lines = [",".join(str(i + j + 1) for j in range(12)) for i in range(30)]
    path = write(tmp_path / "rows.csv", lines)
    datamodule = build_datamodule("csv", data_dir=path, csv_layout="rows", stride=5)
    # Built in Python, named as the call spells them.
    with pytest.raises(ConfigError, match=r"^stride spaces windows of seq_len rows, and the 30 series of"):
        datamodule.prepare_data()
    build_datamodule("csv", data_dir=path, csv_layout="rows", stride=5, seq_len=6).prepare_data()


def test_a_ucr_rows_trailing_gaps_end_a_shorter_series_and_are_not_filled(tmp_path):
    # The archive's variable-length sets pad each shorter series with trailing NaN.
    lines = [f"{k % 2}\t" + "\t".join(str(float(j)) for j in range(10 if k % 3 else 20)) for k in range(40)]
    lines = [line + "\tNaN" * (20 - line.count("\t")) for line in lines]
    path = write(tmp_path / "varlen.tsv", lines)
    table = read_series(path, layout="ucr")
    assert sorted({len(series) for series in table.series}) == [10, 20]
    assert all(series[-1, 0].item() == len(series) - 1 for series in table.series)
    # Series of several lengths need windows of one; without seq_len the data is refused, naming one.
    with pytest.raises(ConfigError, match=r"run from 10 to 20 steps .*; give seq_len 10 or less"):
        build_datamodule("csv", data_dir=path, csv_layout="ucr").prepare_data()
    windowed = build_datamodule("csv", data_dir=path, csv_layout="ucr", seq_len=10)
    windowed.setup()
    assert windowed.data_shape == (10, 1)
    # In the rows layout a row's missing last value is a gap, refused with its row.
    rows = write(
        tmp_path / "rows.csv", [",".join(str(j) for j in range(20))] * 29 + [",".join("1" * 19) + ","]
    )
    with pytest.raises(DataError, match="row 30 has a gap; fill gaps with fill_gaps"):
        read_series(rows, layout="rows")


def test_a_ucr_row_whose_label_is_text_is_named_not_taken_for_a_header(tmp_path):
    ucr = write(tmp_path / "labels.tsv", ["normal\t0.5\t2\t3"] + ["abnormal\t1.5\t2\t3"] * 20)
    with pytest.raises(DataError, match="the first row's label 'normal' is not an integer"):
        read_series(ucr, layout="ucr")
    # A header of pandas' numbered columns after the label column's name is a header.
    numbered = write(tmp_path / "numbered.tsv", ["label\t0\t1\t2"] + ["1\t1\t2\t3", "0\t3\t2\t1"] * 10)
    assert len(read_series(numbered, layout="ucr").series) == 20


def test_mac_line_ends_a_byte_order_mark_and_a_ragged_one_column_row(tmp_path):
    # Excel for Mac ends lines with \r alone; Excel's "CSV UTF-8" starts with a byte-order mark.
    mac = tmp_path / "mac.csv"
    mac.write_bytes(("a,b\r" + "".join(f"{i % 7},{2 * i}\r" for i in range(60))).encode())
    assert read_series(mac).series[0].shape == (60, 2)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffv\n".encode() + "".join(f"{i}\n" for i in range(60)).encode())
    assert read_series(bom).channel_names == ["v"]
    # A one-column file's row of two fields is ragged, not a gap that would drop its value.
    with pytest.raises(DataError, match="row 3 has 2 fields, the header"):
        read_series(write(tmp_path / "ragged.csv", ["v", "1", ",5", "3", "4"]), gaps="linear")


def test_a_text_label_is_named_also_in_a_first_row_padded_with_gaps(tmp_path):
    lines = ["abnormal\t0.1\t0.2\tNaN"] + ["normal\t0.2\t0.3\t0.4"] * 20
    with pytest.raises(DataError, match="the first row's label 'abnormal' is not an integer"):
        read_series(write(tmp_path / "padded.tsv", lines), layout="ucr")


def test_evaluate_refuses_a_typed_image_backbone_for_a_series_run(tmp_path, capsys):
    from lightning_genae.experiment.cli import main

    run = tmp_path / "run"
    args = [
        "--model",
        "rae",
        "--data",
        "sines",
        "--rnn-hidden",
        "8",
        "--max-steps",
        "2",
        "--eval-samples",
        "64",
    ]
    assert main([*args, "--output", str(run)]) == 0
    capsys.readouterr()
    checkpoint = str(run / "checkpoints" / "last.ckpt")
    assert main(["--evaluate", checkpoint, "--backbone", "inception", "--output", str(tmp_path / "e")]) == 2
    assert "--backbone inception scores images" in capsys.readouterr().err


def test_cells_a_model_cannot_compute_with_or_that_only_python_reads_are_refused_with_the_fix(tmp_path):
    rows = [f"{math.sin(t / 5):.4f},{math.cos(t / 7):.4f}" for t in range(100)]
    # Beyond float32: the channel's standard deviation overflowed and the channel became zeros.
    huge = write(tmp_path / "huge.csv", ["a,b", *rows[:11], "0.5,1e300", *rows[12:]])
    with pytest.raises(DataError, match=r"row 13, column 'b': 1e\+300 is beyond the range of the 32-bit"):
        read_series(huge)
    # Python's float() reads 1_000; spreadsheets and pandas do not.
    underscored = write(tmp_path / "underscore.csv", ["a,b", *rows[:5], "1_000,2", *rows[6:]])
    with pytest.raises(DataError, match=r"row 7, column 'a': '1_000' is not a finite number"):
        read_series(underscored)
    # A semicolon file from a decimal-comma locale.
    comma = write(tmp_path / "comma.csv", ["a;b"] + [row.replace(",", ";") for row in rows[:3]] + ["0,5;1"])
    with pytest.raises(DataError, match=r"'0,5' is not a finite number; write numbers with a decimal point"):
        read_series(comma)


def test_a_normaliser_of_channels_without_finite_statistics_is_refused():
    from lightning_genae.datamodules.sequence import Normaliser

    series = torch.zeros(4, 10, 2, dtype=torch.float64)
    series[1, 3, 1] = 1e200  # finite, but its square is not
    with pytest.raises(DataError, match="channel 2 .* have no finite mean and standard deviation"):
        Normaliser.fit(series)
    assert Normaliser.fit(series[..., :1]).std == (1.0,)


def test_a_year_an_observation_number_or_a_cycle_count_is_a_time_index_not_a_channel(tmp_path, capsys):
    # statsmodels' sunspots: YEAR 1700, 1701, ... beside the series; as a channel its test years lie
    # beyond every training year.
    lines = ["YEAR,SUNACTIVITY"] + [f"{1700 + i},{(i * 7) % 13}.5" for i in range(120)]
    sunspots = write(tmp_path / "sunspots.csv", lines)
    assert read_series(sunspots).channel_names == ["SUNACTIVITY"]
    assert "'YEAR' counts up by a fixed step row by row" in capsys.readouterr().out
    # --csv-channels names the channels, and keeps what would be left out.
    kept = read_series(sunspots, channel_columns=["SUNACTIVITY", "YEAR"])
    assert kept.channel_names == ["SUNACTIVITY", "YEAR"] and kept.series[0][1, 1].item() == 1701
    # A cycle count within each series of a long panel (restarting per unit) is one too.
    panel = ["unit,cycle,s1"] + [f"u{u},{c},{math.sin(u + c):.4f}" for u in range(20) for c in range(1, 17)]
    assert read_series(write(tmp_path / "engines.csv", panel), "long", "unit").channel_names == ["s1"]
    # One unit too short to judge leaves the others to decide.
    stub = [f"u99,{c},{math.sin(c):.4f}" for c in range(1, 4)]
    assert read_series(write(tmp_path / "stub.csv", [*panel, *stub]), "long", "unit").channel_names == ["s1"]
    # A column of whole numbers that repeats or changes its step is data, as is the only column.
    steps = ["day,count"] + [f"{i // 2},{i * i}" for i in range(60)]
    assert read_series(write(tmp_path / "steps.csv", steps)).channel_names == ["day", "count"]
    only = write(tmp_path / "only.csv", ["n"] + [str(i) for i in range(60)])
    assert read_series(only).channel_names == ["n"]
    # So is a counting channel after the first under a name no index goes by (a set-point ramp), and a
    # first column counting over too few rows to tell.
    ramp = ["flow,setpoint"] + [f"{math.sin(i):.4f},{100 + 5 * i}" for i in range(60)]
    assert read_series(write(tmp_path / "ramp.csv", ramp)).channel_names == ["flow", "setpoint"]
    short = write(tmp_path / "short.csv", ["1.5,2", "3.1,4", "5.2,6", "7.7,8"])
    assert read_series(short).series[0].shape == (4, 2)
    headerless = write(tmp_path / "headerless.csv", [f"{i},{math.sin(i):.4f}" for i in range(1, 41)])
    assert read_series(headerless).channel_names == ["column 2"]
    with pytest.raises(OptionError, match=r"'YEARS': .* has no such column; its columns are") as refused:
        read_series(sunspots, channel_columns=["YEARS"])
    assert refused.value.option == "csv_channels"


def test_a_column_of_one_value_is_left_out_of_the_channels_unless_named(tmp_path, capsys):
    rows = ["a,status,b"] + [f"{math.sin(t / 5):.4f},1,{math.cos(t / 7):.4f}" for t in range(60)]
    path = write(tmp_path / "flags.csv", rows)
    assert read_series(path).channel_names == ["a", "b"]
    assert "'status' (1) holds one value in every row, left out of the channels" in capsys.readouterr().out
    assert read_series(path, channel_columns=["a", "status"]).channel_names == ["a", "status"]
    # A gap is no second value; the only column stays.
    gapped = write(
        tmp_path / "gapped.csv", ["a,c", *[f"{math.sin(t):.4f},{'' if t == 3 else 2}" for t in range(40)]]
    )
    assert read_series(gapped, gaps="linear").channel_names == ["a"]
    assert read_series(write(tmp_path / "one.csv", ["c", *["2"] * 40])).channel_names == ["c"]


def test_a_channel_in_small_units_is_scaled_to_unit_spread_and_a_constant_one_is_not():
    from lightning_genae.datamodules.sequence import Normaliser

    series = torch.zeros(4, 50, 3, dtype=torch.float64)
    series[..., 0] = torch.sin(torch.arange(50.0)) * 3e-7  # a quantity in small units
    series[..., 1] = 1000.0
    normaliser = Normaliser.fit(series)
    assert normaliser.std[0] == pytest.approx(series[..., 0].std(unbiased=False).item())
    assert normaliser.std[1:] == (1.0, 1.0)
    assert normaliser.normalise(series)[..., 0].std(unbiased=False).item() == pytest.approx(1.0)


def test_a_trailing_delimiter_of_one_recording_ends_its_rows(tmp_path, capsys):
    lines = ["a,b,"] + [f"{math.sin(t / 3):.4f},{math.cos(t / 5):.4f}," for t in range(60)]
    table = read_series(write(tmp_path / "trailing.csv", lines))
    assert table.channel_names == ["a", "b"] and table.series[0].shape == (60, 2)
    assert "every row ends with 1 empty cell(s) (a trailing delimiter)" in capsys.readouterr().out


def test_periods_and_month_names_are_timestamps(tmp_path):
    values = [f"{math.sin(t / 3):.4f}" for t in range(24)]
    monthly = [f"{1949 + t // 12}-{1 + t % 12:02d},{v}" for t, v in enumerate(values)]
    assert read_series(write(tmp_path / "air.csv", ["Month,passengers", *monthly])).channel_names == [
        "passengers"
    ]
    quarterly = [f"{1974 + t // 4}Q{1 + t % 4},{v}" for t, v in enumerate(values)]
    assert read_series(write(tmp_path / "q.csv", ["period,gdp", *quarterly])).channel_names == ["gdp"]
    named = [f"{['Jan', 'Feb', 'Mar'][t % 3]}-{1 + t // 3}-1995,{v}" for t, v in enumerate(values)]
    with pytest.raises(DataError, match=r"row 10 goes back in time in column 'DATE' \(Jan-1-1995\)"):
        read_series(write(tmp_path / "named.csv", ["DATE,equip", *sorted(named)]))
    ordered = [f"{1 + t // 3} {['Jan', 'Feb', 'Mar'][t % 3]} 1995,{v}" for t, v in enumerate(values)]
    ordered.sort(key=lambda row: (row.split()[1] != "Jan", row.split()[1] != "Feb", int(row.split()[0])))
    assert read_series(write(tmp_path / "days.csv", ["DATE,equip", *ordered])).channel_names == ["equip"]


def test_times_with_and_without_a_time_zone_in_one_column_are_refused_in_one_line(tmp_path):
    lines = ["timestamp,a"] + [f"2024-03-30 0{h}:00:00,{h}.5" for h in range(5)]
    lines += [f"2024-04-03 0{h}:00:00+00:00,{h}.25" for h in range(5)]
    with pytest.raises(DataError, match=r"row 7, column 'timestamp': .* has a time zone and the row before"):
        read_series(write(tmp_path / "tz.csv", lines))


def test_rows_repeating_a_time_are_read_and_named(tmp_path, capsys):
    lines = ["date,a"] + [f"2024-01-{1 + t // 2:02d},{math.sin(t):.4f}" for t in range(40)]
    assert read_series(write(tmp_path / "twice.csv", lines)).series[0].shape == (40, 1)
    assert "20 rows (the first: row 3) repeat the time of the row before in column 'date'" in (
        capsys.readouterr().out
    )


def test_older_ucr_text_files_and_excels_unicode_text_are_read_and_other_encodings_named(tmp_path):
    # The UCR archive's .txt files before 2018: padded, space-separated numbers, the label first.
    rows = [
        "  " + "  ".join(f"{value: .7e}" for value in [1 + k % 2, *(math.sin(t + k) for t in range(20))])
        for k in range(30)
    ]
    ucr = write(tmp_path / "Coffee_TRAIN.txt", rows)
    table = read_series(ucr, layout="ucr")
    assert len(table.series) == 30 and table.series[0].shape == (20, 1)
    assert sorted(set(table.labels.tolist())) == [0, 1]
    # Excel's "Unicode Text": UTF-16 with its byte-order mark, tab-separated.
    lines = ["a\tb"] + [f"{math.sin(t):.4f}\t{math.cos(t):.4f}" for t in range(40)]
    utf16 = tmp_path / "unicode.txt"
    utf16.write_bytes(("\r\n".join(lines) + "\r\n").encode("utf-16"))
    assert read_series(utf16).channel_names == ["a", "b"]
    latin = tmp_path / "latin.csv"
    latin.write_bytes(
        ("température,b\n" + "\n".join(line.replace("\t", ",") for line in lines[1:])).encode("latin-1")
    )
    with pytest.raises(DataError, match=r"not UTF-8 text \(at byte offset 4: b'\\xe9'\); save it as UTF-8"):
        read_series(latin)


def test_a_ucr_file_whose_first_cells_are_ids_is_named(tmp_path, capsys):
    rows = [f"{1950 + k}," + ",".join(f"{math.sin(t + k):.4f}" for t in range(12)) for k in range(30)]
    table = read_series(write(tmp_path / "elnino.csv", rows), layout="ucr")
    assert len(set(table.labels.tolist())) == 30
    assert (
        "the 30 rows hold 30 classes from 1950 to 1979; if that cell is an id, a year or a value, use "
        in (capsys.readouterr().out)
    )


def test_a_date_column_naming_the_series_of_a_long_panel_is_no_time_axis(tmp_path, capsys):
    lines = ["date,v"] + [f"2024-01-{1 + k // 12:02d},{math.sin(k):.4f}" for k in range(240)]
    table = read_series(write(tmp_path / "daily.csv", lines), "long", "date")
    assert len(table.series) == 20 and table.series[0].shape == (12, 1)
    assert "repeat the time" not in capsys.readouterr().out


def test_csv_channels_given_in_python_are_read_as_on_the_command_line(tmp_path):
    lines = ["a,b,c"] + [f"{math.sin(t):.3f},{math.cos(t):.3f},{t % 3}" for t in range(80)]
    path = write(tmp_path / "x.csv", lines)
    assert build_datamodule("csv", data_dir=path, csv_channels="c, a").channel_names == ["c", "a"]
    # Checked as the call is made, and named as the call spells it.
    with pytest.raises(ConfigError, match="^csv_channels names a twice"):
        build_datamodule("csv", data_dir=path, csv_channels="a,a")


def test_an_older_ucr_text_file_whose_first_row_has_a_gap_is_read(tmp_path):
    rows = ["  1.0  2.1  3.2  NaN"] + [
        f"  {1 + k % 2}.0  " + "  ".join(f"{t + k:.1f}" for t in range(3)) for k in range(29)
    ]
    table = read_series(write(tmp_path / "Gappy_TRAIN.txt", rows), layout="ucr")
    assert len(table.series) == 30 and table.series[0].shape == (2, 1)


def test_a_ucr_set_of_one_row_per_class_is_not_taken_for_ids(tmp_path, capsys):
    # Fungi's training split: 18 rows, 18 classes.
    rows = [f"{k + 1}," + ",".join(f"{math.sin(t + k):.4f}" for t in range(12)) for k in range(18)]
    read_series(write(tmp_path / "Fungi_TRAIN.csv", rows), layout="ucr")
    assert "classes" not in capsys.readouterr().out


def test_a_run_whose_file_this_version_reads_with_other_channels_is_evaluated_with_them_named(
    tmp_path, capsys
):
    """A run of a version that took YEAR for a channel (its config names none): --evaluate is refused with
    the channels to name, and naming them reads the file as the run did."""
    from lightning_genae.experiment.cli import main
    from lightning_genae.run_files import CONFIG_KEY

    csv = write(
        tmp_path / "sun.csv", ["YEAR,SUNACTIVITY"] + [f"{1700 + i},{(i * 7) % 13}.5" for i in range(300)]
    )
    run = ["--model", "rae", "--data", "csv", "--data-dir", str(csv), "--max-steps", "3", "--eval-every", "3"]
    output = tmp_path / "run"
    assert (
        main([*run, "--csv-channels", "YEAR,SUNACTIVITY", "--eval-samples", "20", "--output", str(output)])
        == 0
    )
    checkpoint = output / "checkpoints" / "last.ckpt"
    contents = torch.load(checkpoint, weights_only=True)
    for key in (CONFIG_KEY, "datamodule_hyper_parameters"):
        del contents[key]["csv_channels"]
    torch.save(contents, checkpoint)
    capsys.readouterr()
    assert main(["--evaluate", str(checkpoint), "--output", str(tmp_path / "plain")]) == 2
    assert (
        "name the run's channels with csv_channels (this version takes SUNACTIVITY)"
        in capsys.readouterr().err
    )
    named = ["--csv-channels", "YEAR,SUNACTIVITY", "--output", str(tmp_path / "named")]
    assert main(["--evaluate", str(checkpoint), *named]) == 0


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"series_id": "a"}, r"series_id names the series of csv_layout long"),
        ({"csv_layout": "rows", "csv_channels": 1}, r"csv_channels names the channel columns"),
    ],
)
def test_build_datamodule_refuses_a_csv_option_its_layout_leaves_unread(tmp_path, options, message):
    """As run.py refuses --series-id under the time layout: from Python too, named as Python spells it."""
    from lightning_genae.datamodules import build_datamodule

    path = tmp_path / "prices.csv"
    path.write_text("time,a,b\n" + "".join(f"{i},{i % 7},{i % 5}\n" for i in range(200)))
    with pytest.raises(ConfigError, match=message) as refused:
        build_datamodule("csv", data_dir=str(path), **options)
    assert "\n" not in str(refused.value) and "--" not in str(refused.value)
    assert build_datamodule("csv", data_dir=str(path)) is not None


def test_long_layout_refuses_an_empty_series_id_and_one_id_in_two_blocks_without_timestamps(tmp_path):
    rows = [f"u{u},{math.sin(u + t):.4f}" for u in range(3) for t in range(12)]
    gap = write(tmp_path / "gap.csv", ["unit,s1", *rows[:5], f",{0.5}", *rows[5:]])
    with pytest.raises(DataError, match=r"row 7, column 'unit' \(the series id\) is empty"):
        read_series(gap, "long", "unit")
    # u0's recording, another unit's, then more rows named u0: two recordings joined into one series.
    again = write(tmp_path / "again.csv", ["unit,s1", *rows, *rows[:12]])
    with pytest.raises(DataError, match=r"series 'u0' starts at row 2 and again at row 38 \(rows 2-49\)"):
        read_series(again, "long", "unit")
    # Rows of several series interleaving throughout (a file sorted by its time index) are read as they are.
    interleaved = ["unit,day,s1"] + [f"u{u},{t},{math.sin(u + t):.4f}" for t in range(12) for u in range(3)]
    assert len(read_series(write(tmp_path / "by-time.csv", interleaved), "long", "unit").series) == 3
    # With dates, a second recording under the same id goes back in time.
    back = ["unit,date,s1"] + [
        f"u{u},2024-01-{t + 1:02d},{math.sin(u + t):.4f}" for u in (0, 1, 0) for t in range(12)
    ]
    with pytest.raises(
        DataError, match=r"goes back in time .*sort each series' rows by 'date', and give two"
    ):
        read_series(write(tmp_path / "back.csv", back), "long", "unit")


def test_a_stray_date_in_a_column_of_numbers_is_the_cell_named(tmp_path):
    rows = [f"{math.sin(t / 5):.4f},{math.cos(t / 7):.4f}" for t in range(120)]
    rows[100] = "0.5,2021-03-04"
    with pytest.raises(
        DataError, match=r"row 102, column 'y': '2021-03-04' is a date in a column of numbers"
    ):
        read_series(write(tmp_path / "stray.csv", ["x,y", *rows]))


def test_two_exports_of_the_same_units_appended_are_refused_without_timestamps(tmp_path):
    rows = [f"S{u},{math.sin(u + t):.4f}" for u in range(5) for t in range(12)]
    with pytest.raises(DataError, match=r"series 'S0' starts at row 2 and again at row 62"):
        read_series(write(tmp_path / "two.csv", ["unit,s1", *rows, *rows]), "long", "unit")
