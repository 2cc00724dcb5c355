"""CSV series as users keep them: pandas exports, timestamps, gaps, panels of many short series (UCR rows,
long format)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.csvseries import fill_gaps, read_series
from lightning_genae.errors import ConfigError, DataError


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


@pytest.mark.quick
def test_pandas_to_csv_exports_read_without_their_index(tmp_path):
    steps = np.arange(120)
    frame = pd.DataFrame({"TEMP": np.sin(steps / 5), "SUNACTIVITY": (steps * 7) % 13 + 0.5})
    # df.to_csv(): the RangeIndex first under an empty header cell; after a filter it rises with steps, after
    # a shuffle in no order; read by pandas and written again, it is named `Unnamed: 0`.
    for name, exported in (
        ("range", frame),
        ("filtered", frame[steps % 3 > 0]),
        ("shuffled", frame.sample(frac=1, random_state=0)),
    ):
        exported.to_csv(tmp_path / f"{name}.csv")
        table = read_series(tmp_path / f"{name}.csv")
        assert table.channel_names == ["TEMP", "SUNACTIVITY"], name
        np.testing.assert_allclose(table.series[0].numpy(), exported.to_numpy(), atol=1e-12)
    pd.read_csv(tmp_path / "range.csv").to_csv(tmp_path / "again.csv")
    assert read_series(tmp_path / "again.csv").channel_names == ["TEMP", "SUNACTIVITY"]
    # A date index, named or not, is a timestamp column: out of the channels, its order checked.
    dated = frame.set_index(pd.date_range("1749-01-01", periods=120, freq="MS"))
    for index_name in (None, "date"):
        dated.rename_axis(index_name).to_csv(tmp_path / "dated.csv")
        assert read_series(tmp_path / "dated.csv").channel_names == ["TEMP", "SUNACTIVITY"]
    dated.iloc[::-1].to_csv(tmp_path / "backwards.csv")
    with pytest.raises(DataError, match="row 3 goes back in time"):
        read_series(tmp_path / "backwards.csv")


def test_pandas_numbered_column_names_are_a_header_not_a_series(tmp_path):
    # pd.DataFrame(array).to_csv(index=False): the columns are named 0, 1, ..., n - 1.
    array = np.sin(0.2 * np.arange(30)[None, :] + np.arange(40)[:, None])
    pd.DataFrame(array).to_csv(tmp_path / "panel.csv", index=False)
    table = read_series(tmp_path / "panel.csv", layout="rows")
    assert len(table.series) == 40
    np.testing.assert_allclose(table.series[3][:, 0].numpy(), array[3])
    # With the index written too (df.to_csv()): an empty cell first, and each row's number left out.
    pd.DataFrame(array).to_csv(tmp_path / "indexed.csv")
    again = read_series(tmp_path / "indexed.csv", layout="rows")
    assert all(torch.equal(a, b) for a, b in zip(again.series, table.series, strict=True))
    # A UCR file read by pandas without a header and written again: label column 0, then 1, 2, ...
    pd.DataFrame(np.c_[1 + np.arange(40) % 2, array]).to_csv(tmp_path / "ucr.csv", index=False)
    assert len(read_series(tmp_path / "ucr.csv", layout="ucr").series) == 40
    # One recording of three unnamed channels.
    steps = [f"{t % 4},{t % 5},{t % 6}" for t in range(60)]
    recording = read_series(write(tmp_path / "time.csv", ["0,1,2"] + steps))
    assert recording.channel_names == ["0", "1", "2"] and recording.series[0].shape == (60, 3)
    # Two cells counting 0, 1 are a first time step as likely as a header: data.
    pairs = [f"{t % 4},{t % 5}" for t in range(1, 60)]
    first = read_series(write(tmp_path / "two.csv", ["0,1"] + pairs)).series[0]
    assert first.shape == (60, 2) and first[0].tolist() == [0.0, 1.0]


def test_a_file_without_header_is_read_from_its_first_row_and_its_columns_numbered(tmp_path):
    lines = [f"2024-01-{1 + i // 24:02d} {i % 24:02d}:00,{math.sin(i):.4f},{i % 7}" for i in range(100)]
    table = read_series(write(tmp_path / "x.csv", lines))
    assert table.channel_names == ["2", "3"] and table.series[0].shape == (100, 2)
    # A header's names are no dates, even where a date parser would read one (T1: 01:00 today).
    dated = [line.rsplit(",", 1)[0] for line in lines]
    assert read_series(write(tmp_path / "t.csv", ["T1,T2", *dated])).channel_names == ["T2"]
    assert read_series(tmp_path / "x.csv", channel_columns=["3"]).series[0][:8, 0].tolist() == [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        0,
    ]


@pytest.mark.parametrize(
    "dates",
    [
        pd.date_range("2024-01-01", periods=40, freq="D").strftime("%Y-%m-%d"),
        pd.date_range("2024-01-01", periods=40, freq="h").strftime("%Y-%m-%dT%H:%M:%S"),
        pd.date_range("2024-01-01", periods=40, freq="D").strftime("%d/%m/%Y %H:%M"),
        pd.date_range("2024-01-01", periods=40, freq="D").strftime("%m/%d/%Y"),
        pd.date_range("2024-01-01", periods=40, freq="D").strftime("%d.%m.%Y"),
        pd.date_range("1995-01-01", periods=40, freq="MS").strftime("%b-%d-%Y"),
        pd.date_range("1995-01-01", periods=40, freq="D").strftime("%d %b %Y"),
        pd.period_range("1949-01", periods=40, freq="M").astype(str),
    ],
    ids=[
        "iso-date",
        "iso-time",
        "day-first",
        "month-first",
        "dotted",
        "month-name",
        "day-month",
        "month",
    ],
)
def test_a_column_of_dates_is_a_timestamp_column_not_a_channel(tmp_path, dates):
    lines = ["when,v"] + [f"{date},{math.sin(i):.4f}" for i, date in enumerate(dates)]
    table = read_series(write(tmp_path / "x.csv", lines))
    assert table.channel_names == ["v"] and table.series[0].shape == (40, 1)


def test_timestamps_going_back_in_time_are_refused_with_the_row(tmp_path):
    lines = ["timestamp,value", "2024-01-02,1", "2024-01-01,2", "2024-01-03,3"]
    with pytest.raises(DataError, match="row 3 goes back"):
        read_series(write(tmp_path / "x.csv", lines))
    # A numeric column headed like a time is a time axis too.
    with pytest.raises(DataError, match="row 4 goes back"):
        read_series(write(tmp_path / "t.csv", ["time,value", "0.0,1", "0.5,2", "0.25,3"]))
    # Dates are read as pandas reads them, one form per column: month-first where every cell reads both
    # ways (10/01 then 02/02 goes back), day-first where only that form reads every cell.
    lines = ["date,value"] + [f"{date},{index}" for index, date in enumerate(["10/01/2024", "02/02/2024"])]
    with pytest.raises(DataError, match="row 3 goes back"):
        read_series(write(tmp_path / "ambiguous.csv", lines))
    lines = ["date,value"] + [f"{day:02d}/02/2024,{day}" for day in range(1, 29)]
    assert read_series(write(tmp_path / "eu.csv", lines)).series[0][:, 0].tolist() == list(range(1, 29))


def test_a_gap_is_refused_with_the_option_that_fills_it(tmp_path):
    lines = ["a,b"] + [f"{i},{'' if i == 7 else i}" for i in range(60)]
    with pytest.raises(DataError, match="row 9, column 'b' is a gap; fill it with fill_gaps"):
        read_series(write(tmp_path / "x.csv", lines))
    # pandas writes a one-column frame's missing value as "": a gap, not a row left out.
    pd.DataFrame({"co2": [1.0, 2.0, np.nan, *range(4, 61)]}).to_csv(tmp_path / "co2.csv", index=False)
    with pytest.raises(DataError, match="row 4, column 'co2'"):
        read_series(tmp_path / "co2.csv")
    assert read_series(tmp_path / "co2.csv", gaps="linear").series[0][:, 0].tolist() == list(range(1, 61))


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
    values = pd.DataFrame([[np.nan, 1.0], [2.0, np.nan], [np.nan, 3.0], [6.0, np.nan]])
    np.testing.assert_allclose(fill_gaps(values, "linear"), [[2, 1], [2, 2], [4, 3], [6, 3]])
    np.testing.assert_allclose(fill_gaps(values, "ffill"), [[2, 1], [2, 1], [2, 3], [6, 3]])
    lines = ["a,b"] + [f"{i % 7},{'NA' if i % 10 == 3 else i * i}" for i in range(60)]
    table = read_series(write(tmp_path / "x.csv", lines), gaps="linear")
    assert table.series[0][3, 1].item() == pytest.approx((4 + 16) / 2)


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
    # A validation part without a value has nothing of its own to fill from (row 72: the part's first).
    all_gaps = ["a", *[str(float(i)) if i < 70 or i >= 80 else "NA" for i in range(100)]]
    with pytest.raises(DataError, match="row 72, column 'a' is a gap"):
        read_series(write(tmp_path / "empty-val.csv", all_gaps), gaps="linear")


def test_a_trailing_delimiter_ends_the_rows_and_a_rows_empty_last_cell_is_a_gap(tmp_path):
    lines = [",".join(f"{i + 0.1 * j:.1f}" for j in range(12)) + "," for i in range(30)]
    table = read_series(write(tmp_path / "rows.csv", lines), layout="rows")
    assert [len(series) for series in table.series] == [12] * 30
    assert table.series[3][:, 0].tolist() == pytest.approx([3 + 0.1 * j for j in range(12)])
    # One row's empty last cell among full rows is a gap.
    lines = [line[:-1] for line in lines]
    lines[7] = lines[7].rsplit(",", 1)[0] + ","
    with pytest.raises(DataError, match="row 8, column '12' is a gap"):
        read_series(write(tmp_path / "gap.csv", lines), layout="rows")
    # One recording whose rows end in a delimiter, its header too or not: no column of gaps, no index.
    lines = ["a,b,"] + [f"{math.sin(t / 3):.4f},{math.cos(t / 5):.4f}," for t in range(60)]
    for header in ("a,b,", "a,b"):
        table = read_series(write(tmp_path / "trailing.csv", [header, *lines[1:]]))
        assert table.channel_names == ["a", "b"] and table.series[0][1, 0].item() == pytest.approx(0.3272)


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
    table = datamodule.table
    test = datamodule.normaliser.denormalise(datamodule.split_tensors("test")[0].double())
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
    train = datamodule.normaliser.denormalise(datamodule.split_tensors("train")[0].double())
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
    assert "2 of 20 series shorter than seq_len 8" in capsys.readouterr().out


def test_a_split_with_fewer_than_two_windows_is_refused_naming_it(tmp_path):
    lines = ["unit,sensor"] + [f"u{unit},{unit + t}" for unit in range(20) for t in range(5)]
    path = write(tmp_path / "panel.csv", lines)
    datamodule = build_datamodule("csv", data_dir=path, csv_layout="long", series_id="unit", seq_len=8)
    with pytest.raises(DataError, match="the train split has 0 series"):
        datamodule.setup()
    # A panel split by whole series: 12 give one for validation.
    rows = write(tmp_path / "rows.csv", [",".join(str(i + j + 1) for j in range(12)) for i in range(12)])
    with pytest.raises(DataError, match="the val split has 1 series"):
        build_datamodule("csv", data_dir=rows, csv_layout="rows").setup()


@pytest.mark.parametrize(
    ("lines", "arguments", "error", "fact"),
    [
        (["id,v", "a,1", "a,2"], {"layout": "long"}, ConfigError, "series_id"),
        (["id,v", "a,1", "a,2"], {"layout": "long", "series_id": "unit"}, ConfigError, "series_id 'unit'"),
        (["unit,s1", "u0,1", ",0.5", "u1,2"], {"layout": "long", "series_id": "unit"}, DataError, "row 3"),
        (["city,value"] + [f"Paris,{i}" for i in range(40)], {}, DataError, "'Paris'"),
        (["x,y", "1,2", "0.5,2021-03-04", "2,3"], {}, DataError, "row 3, column 'y'"),
        # A column of monthly periods with a cell that is no date is no timestamp column.
        (["month,v", "1949-11,1", "1949-12,2", "1949-13,3"], {}, DataError, "column 'month'"),
        # One form and one time zone per timestamp column.
        (
            ["timestamp,a", "2024-03-30 01:00:00,1", "2024-04-03 01:00:00+00:00,2"],
            {},
            DataError,
            "'timestamp'",
        ),
        # Beyond float32, where models compute: the channel's standard deviation would overflow.
        (["a,b", "1,2", "0.5,1e300"], {}, DataError, "row 3, column 'b'"),
        (["a,b", "1,2", "3,inf"], {}, DataError, "row 3, column 'b'"),
        # Python's float() reads 1_000; spreadsheets and pandas do not.
        (["a,b", "1,2", "1_000,2"], {}, DataError, "'1_000'"),
        # A decimal comma in a semicolon file.
        (["a;b", "1;2", "0,5;1"], {}, DataError, "'0,5'"),
        (["v", "1", ",5", "3"], {}, DataError, "line 3"),
        (["a,b", "1,2", "3,4,5"], {}, DataError, "line 3"),
        (["YEAR,SUNACTIVITY", "1700,1.5"], {"channel_columns": ["YEARS"]}, ConfigError, "'YEARS'"),
        # A text class label, also in a first row taken for a header.
        (
            ["abnormal\t0.1\t0.2\tNaN"] + ["normal\t0.2\t0.3\t0.4"] * 20,
            {"layout": "ucr"},
            DataError,
            "'normal'",
        ),
    ],
)
def test_input_that_would_bend_a_result_is_refused_naming_the_cell_or_option(
    tmp_path, lines, arguments, error, fact
):
    with pytest.raises(error, match=fact) as refused:
        read_series(write(tmp_path / "x.csv", lines), **arguments)
    assert "\n" not in str(refused.value)


def test_a_file_pandas_cannot_read_is_refused_naming_it(tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("température,b\n1,2\n".encode("latin-1"))
    for path in (tmp_path, tmp_path / "missing.csv", latin, write(tmp_path / "empty.csv", [])):
        with pytest.raises(DataError, match=str(path)):
            read_series(path)


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
    table = read_series(path, layout="ucr", gaps="linear")
    assert sorted({len(series) for series in table.series}) == [10, 20]
    assert all(series[-1, 0].item() == len(series) - 1 for series in table.series)
    windowed = build_datamodule("csv", data_dir=path, csv_layout="ucr", seq_len=10)
    windowed.setup()
    assert windowed.data_shape == (10, 1)
    # In the rows layout a row's missing last value is a gap, refused with its row.
    rows = write(
        tmp_path / "rows.csv", [",".join(str(j) for j in range(20))] * 29 + [",".join("1" * 19) + ","]
    )
    with pytest.raises(DataError, match="row 30"):
        read_series(rows, layout="rows")


def test_a_ucr_header_of_numbered_columns_is_a_header(tmp_path):
    numbered = write(tmp_path / "numbered.tsv", ["label\t0\t1\t2"] + ["1\t1\t2\t3", "0\t3\t2\t1"] * 10)
    assert len(read_series(numbered, layout="ucr").series) == 20


def test_mac_line_ends_and_a_byte_order_mark(tmp_path):
    # Excel for Mac ends lines with \r alone; Excel's "CSV UTF-8" starts with a byte-order mark.
    mac = tmp_path / "mac.csv"
    mac.write_bytes(("a,b\r" + "".join(f"{i % 7},{i % 5}\r" for i in range(60))).encode())
    assert read_series(mac).series[0].shape == (60, 2)
    bom = tmp_path / "bom.csv"
    bom.write_bytes("\ufeffv\n".encode() + "".join(f"{i % 7}\n" for i in range(60)).encode())
    assert read_series(bom).channel_names == ["v"]


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
    assert "'YEAR' left out of the channels" in capsys.readouterr().out
    # --csv-channels names the channels, and keeps what would be left out.
    kept = read_series(sunspots, channel_columns=["SUNACTIVITY", "YEAR"])
    assert kept.channel_names == ["SUNACTIVITY", "YEAR"] and kept.series[0][1, 1].item() == 1701
    # A cycle count within each series of a long panel (restarting per unit) is one too.
    panel = ["unit,cycle,s1"] + [f"u{u},{c},{math.sin(u + c):.4f}" for u in range(20) for c in range(1, 17)]
    assert read_series(write(tmp_path / "engines.csv", panel), "long", "unit").channel_names == ["s1"]
    # A column of whole numbers that repeats or changes its step is data, as is the only column.
    steps = ["day,count"] + [f"{i // 2},{i * i}" for i in range(60)]
    assert read_series(write(tmp_path / "steps.csv", steps)).channel_names == ["day", "count"]
    only = write(tmp_path / "only.csv", ["n"] + [str(i) for i in range(60)])
    assert read_series(only).channel_names == ["n"]
    # So is a first column counting over too few rows to tell; a file without a header is counted too.
    short = write(tmp_path / "short.csv", ["1.5,2", "3.1,4", "5.2,6", "7.7,8"])
    assert read_series(short).series[0].shape == (4, 2)
    headerless = write(tmp_path / "headerless.csv", [f"{i},{math.sin(i):.4f}" for i in range(1, 41)])
    assert read_series(headerless).channel_names == ["2"]


def test_a_column_of_one_value_is_left_out_of_the_channels_unless_named(tmp_path, capsys):
    rows = ["a,status,b"] + [f"{math.sin(t / 5):.4f},1,{math.cos(t / 7):.4f}" for t in range(60)]
    path = write(tmp_path / "flags.csv", rows)
    assert read_series(path).channel_names == ["a", "b"]
    assert "'status' left out of the channels" in capsys.readouterr().out
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


def test_older_ucr_text_files_separated_by_spaces_are_read(tmp_path):
    # The UCR archive's .txt files before 2018: padded, space-separated numbers, the label first.
    rows = [
        "  " + "  ".join(f"{value: .7e}" for value in [1 + k % 2, *(math.sin(t + k) for t in range(20))])
        for k in range(30)
    ]
    table = read_series(write(tmp_path / "Coffee_TRAIN.txt", rows), layout="ucr")
    assert len(table.series) == 30 and table.series[0].shape == (20, 1)
    assert sorted(set(table.labels.tolist())) == [0, 1]


def test_a_date_column_naming_the_series_of_a_long_panel_is_no_time_axis(tmp_path):
    lines = ["date,v"] + [f"2024-01-{1 + k // 12:02d},{math.sin(k):.4f}" for k in range(240)]
    table = read_series(write(tmp_path / "daily.csv", lines), "long", "date")
    assert len(table.series) == 20 and table.series[0].shape == (12, 1)


def test_csv_channels_given_in_python_are_read_as_on_the_command_line(tmp_path):
    lines = ["a,b,c"] + [f"{math.sin(t):.3f},{math.cos(t):.3f},{t % 3}" for t in range(80)]
    path = write(tmp_path / "x.csv", lines)
    assert build_datamodule("csv", data_dir=path, csv_channels="c, a").channel_names == ["c", "a"]
    # Checked as the call is made, and named as Python spells it.
    with pytest.raises(ConfigError, match="^csv_channels 'a,a'"):
        build_datamodule("csv", data_dir=path, csv_channels="a,a")


def test_an_older_ucr_text_file_whose_first_row_has_a_gap_is_read(tmp_path):
    rows = ["  1.0  2.1  3.2  NaN"] + [
        f"  {1 + k % 2}.0  " + "  ".join(f"{t + k:.1f}" for t in range(3)) for k in range(29)
    ]
    table = read_series(write(tmp_path / "Gappy_TRAIN.txt", rows), layout="ucr")
    assert len(table.series) == 30 and table.series[0].shape == (2, 1)


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
        ({"csv_layout": "rows", "csv_channels": "b"}, r"csv_channels names the channel columns"),
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


def test_long_layout_reads_interleaved_rows_and_checks_time_within_each_series(tmp_path):
    # Rows of several series interleaving throughout (a file sorted by its time index) are read as they are.
    interleaved = ["unit,day,s1"] + [f"u{u},{t},{math.sin(u + t):.4f}" for t in range(12) for u in range(3)]
    table = read_series(write(tmp_path / "by-time.csv", interleaved), "long", "unit")
    assert len(table.series) == 3 and table.series[1][:, 0].tolist() == pytest.approx(
        [math.sin(1 + t) for t in range(12)], abs=1e-4
    )
    # With dates, a second recording under the same id goes back in time.
    back = ["unit,date,s1"] + [
        f"u{u},2024-01-{t + 1:02d},{math.sin(u + t):.4f}" for u in (0, 1, 0) for t in range(12)
    ]
    with pytest.raises(DataError, match="row 26 goes back"):
        read_series(write(tmp_path / "back.csv", back), "long", "unit")
