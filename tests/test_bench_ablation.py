"""bench/ablation_mnist.py --jobs: a grid's cells in processes of their own, tuning cells before final ones,
final ones seed by seed, none started after --start-cells-for, and the grid's summary at the end."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_bench():
    spec = importlib.util.spec_from_file_location("ablation_mnist", REPO / "bench" / "ablation_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_grid(root: Path) -> list[str]:
    return [
        "--model", "gan", "--data", "digits", "--augment", "none,ae", "--seeds", "0,1",
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


def test_no_cell_starts_after_the_deadline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench = load_bench()
    failed = bench.run_cells_at_once(["--not-an-option"], [0, 1, 2], jobs=2, logs=tmp_path, deadline=0.0)
    assert failed == 0
    assert "3 cells not started: --start-cells-for has passed" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []  # no process was started, so no cell log was opened


def test_a_failing_cell_is_counted_and_its_output_kept(tmp_path: Path, child_environment) -> None:
    bench = load_bench()
    failed = bench.run_cells_at_once(["--model", "nosuchfamily"], [7], jobs=2, logs=tmp_path, deadline=1e12)
    assert failed == 1
    assert "nosuchfamily" in (tmp_path / "cell-7.log").read_text()


@pytest.mark.slow
def test_the_grid_trains_in_parallel_processes_and_is_summarised(tmp_path: Path, child_environment) -> None:
    root = tmp_path / "grid"
    code = load_bench().run_grid_at_once(tiny_grid(root), root, jobs=2, minutes=None)
    assert code == 0
    report = (root / "ablation.md").read_text()
    assert "4 of 4 runs finished" in report
    assert json.loads((root / "tuning.json").read_text())
    assert sorted(path.name for path in Path(f"{root}.cell-logs").iterdir()) == [
        f"cell-{index}.log" for index in range(6)
    ]
