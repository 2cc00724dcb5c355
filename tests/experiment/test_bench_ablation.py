"""bench/ablation_mnist.py --jobs: a grid's cells in processes of their own, tuning cells before final ones,
final ones seed by seed, none started after --start-cells-for, a signal passed on to the running cells, and
the grid's summary at the end."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "ablation_mnist.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("ablation_mnist", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_grid(root: Path, seeds: str = "0,1") -> list[str]:
    return [
        "--model", "gan", "--data", "digits", "--augment", "none,ae", "--seeds", seeds,
        "--tune-seeds", "100", "--augment-p", "0.1,0.5", "--max-steps", "2", "--width", "4",
        "--augmenter-width", "4", "--augmenter-steps", "2", "--eval-every", "2", "--eval-samples", "50",
        "--accelerator", "cpu", "--output", str(root),
    ]  # fmt: skip


@pytest.fixture
def child_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The cells' processes import the checkout's package and cache their augmenters and classifier apart.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path / "cache"))


def test_tuning_cells_come_first_and_final_cells_go_seed_by_seed(tmp_path: Path, child_environment) -> None:
    tuning, final = load_bench().grid_cells(tiny_grid(tmp_path / "grid"))
    # --print-config lists tuning 0-1, then none seeds 0-1 (2, 3), ae seeds 0-1 (4, 5).
    assert tuning == [0, 1]
    assert final == [2, 4, 3, 5]


def test_a_grid_refused_by_run_py_says_why_and_exits_as_run_py_does(
    tmp_path: Path, child_environment, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stopped:
        load_bench().grid_cells([*tiny_grid(tmp_path / "grid"), "--seed", "3"])
    assert stopped.value.code == 2
    assert "error: --seed" in capsys.readouterr().err


def test_no_cell_starts_after_the_deadline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    counts = bench.run_cells_at_once(["--not-an-option"], [0, 1, 2], jobs=2, logs=tmp_path, deadline=0.0)
    assert counts == (0, 3)  # none failed, three not started
    assert "3 cells not started: --start-cells-for has passed" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no process was started, so no cell log was opened


def test_no_cell_starts_once_a_signal_is_noted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bench = load_bench()
    monkeypatch.setattr(bench, "RECEIVED", [signal.SIGTERM])
    with pytest.raises(bench.Stopped) as stopped:
        bench.run_cells_at_once(["--not-an-option"], [0, 1], jobs=2, logs=tmp_path, deadline=1e12)
    assert stopped.value.signum == signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_a_grid_whose_cells_did_not_all_run_exits_1(
    tmp_path: Path, child_environment, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "grid"
    assert load_bench().run_grid_at_once(tiny_grid(root), root, jobs=2, minutes=1e-9) == 1
    assert "no cell ran: run the same command again" in capsys.readouterr().err


def test_a_failing_cell_is_counted_and_its_output_kept(tmp_path: Path, child_environment) -> None:
    bench = load_bench()
    for _ in (1, 2):
        counts = bench.run_cells_at_once(
            ["--model", "nosuchfamily"], [7], jobs=2, logs=tmp_path, deadline=1e12
        )
        assert counts == (1, 0)
    # Each attempt's output is appended under a line of its own, never replaced.
    log = (tmp_path / "cell-7.log").read_text()
    assert log.count("error: ") == 2 and log.count(": run.py --grid-index 7") == 2


def test_the_augmenter_options_go_only_to_grids_whose_arms_train_an_augmenter() -> None:
    arms = ("ae", "ae-d", "vae+diffaug", "none", "ada", "nope")
    assert [load_bench().trains_an_augmenter(arm) for arm in arms] == [True, True, True, False, False, False]


@pytest.mark.parametrize("minutes", ["0", "-1", "nan", "inf"])
def test_start_cells_for_takes_a_positive_number_of_minutes(
    minutes: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["ablation_mnist.py", "--jobs", "2", "--start-cells-for", minutes])
    with pytest.raises(SystemExit) as refused:
        load_bench().parse_args()
    assert refused.value.code == 2
    assert "--start-cells-for must be a positive number of minutes" in capsys.readouterr().err


@pytest.mark.slow
def test_the_grid_trains_in_parallel_processes_and_is_summarised(tmp_path: Path, child_environment) -> None:
    root = tmp_path / "grid"
    code = load_bench().run_grid_at_once(tiny_grid(root, seeds="0"), root, jobs=2, minutes=None)
    assert code == 0
    report = (root / "ablation.md").read_text()
    assert "2 of 2 runs finished" in report
    assert json.loads((root / "tuning.json").read_text())
    assert sorted(path.name for path in Path(f"{root}.cell-logs").iterdir()) == [
        f"cell-{index}.log" for index in range(4)
    ]


# A cell that stands in for run.py: it trains until a signal, which it answers as run.py does.
STAND_IN_CELL = """
import signal, sys, time
def stop(signum, frame):
    print("stopped by", signal.Signals(signum).name, flush=True)
    sys.exit(128 + signum)
signal.signal(signal.SIGINT, stop)
print("training", flush=True)
time.sleep(60)
"""


def test_ctrl_c_is_passed_on_to_the_running_cells_which_are_waited_for_and_the_bench_exits_130(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bench = load_bench()
    cell = tmp_path / "cell.py"
    cell.write_text(STAND_IN_CELL)
    monkeypatch.setattr(bench, "RUN_PY", str(cell))
    monkeypatch.setattr(bench, "grid_cells", lambda command: ([], [0, 1]))
    logs = [tmp_path / "grid.cell-logs" / f"cell-{index}.log" for index in (0, 1)]

    def press_ctrl_c_once_both_train() -> None:
        while not all(log.is_file() and "training" in log.read_text() for log in logs):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    handler_before = signal.getsignal(signal.SIGINT)
    threading.Thread(target=press_ctrl_c_once_both_train, daemon=True).start()
    assert bench.run_grid_at_once([], tmp_path / "grid", jobs=2, minutes=None) == 128 + signal.SIGINT
    for log in logs:
        assert "stopped by SIGINT" in log.read_text()  # each cell got the signal and ended before the bench
    assert "run the same command again to continue the grid" in capsys.readouterr().err
    assert signal.getsignal(signal.SIGINT) is handler_before


def test_bench_json_keeps_earlier_sessions_and_is_not_written_over_a_file_of_another(tmp_path: Path) -> None:
    bench = load_bench()
    record = {"command": "python run.py ...", "exit_code": 1, "wall_time_s": 10.0}
    bench.write_bench_record(tmp_path / "refused", {**record, "exit_code": 2})
    assert not (tmp_path / "refused").exists(), "a grid refused before training writes nothing"
    bench.write_bench_record(tmp_path, record)
    bench.write_bench_record(tmp_path, {**record, "exit_code": 0, "wall_time_s": 20.0})
    written = json.loads((tmp_path / "bench.json").read_text())
    assert written["wall_time_s"] == 20.0 and written["earlier"] == [record]
    (tmp_path / "bench.json").write_text("my notes")
    bench.write_bench_record(tmp_path, record)
    assert (tmp_path / "bench.json").read_text() == "my notes"
