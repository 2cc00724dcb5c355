"""Ablation grids: cell order and names, failure handling, and the CSV/Markdown/PNG summary of a grid."""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from lightning_genae.errors import ConfigError
from lightning_genae.experiment.ablation import summarize
from lightning_genae.experiment.ablation.cells import (
    GridCell,
    expand_grid,
    read_grid_cells,
    record_grid_cells,
)
from lightning_genae.experiment.ablation.runs import describe_progress
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.grid_command import CellOutcome, CellStart, run_grid
from lightning_genae.experiment.run_lock import RunFolderLock

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    root: Path,
    augment: str,
    train_size: int | None,
    seed: int,
    fd: float,
    *,
    val_curve: dict[int, float] | None = None,
    headline: str | None = "val/fd_classifier",
    global_step: int = 1500,
    selected: tuple[int, float] | None = None,
) -> Path:
    """A run folder like train.run writes: summary.json and a CSVLogger-style metrics.csv.

    `selected`: (step, test fd) of the checkpoint chosen on validation, recorded as train.run does.
    """
    run_dir = root / GridCell(augment, train_size, seed).name
    run_dir.mkdir(parents=True, exist_ok=True)
    final_metrics = {
        "test/fd_classifier": fd,
        "test/kid_classifier": fd / 100,
        "test/kid_std_classifier": 0.01,
        "test/precision_classifier": 0.3 + seed / 10,
        "test/recall_classifier": 0.8,
        "test/density_classifier": 0.15,
        "test/coverage_classifier": 0.17,
        "val/fd_classifier": fd + 2,
        "train/loss_d": 0.6,
    }
    backbone = "classifier (mnist, sha256 328a7f35, test acc 99.41%)"
    summary = {
        "model": "gan",
        "data": "mnist",
        "augment": augment,
        "seed": seed,
        "global_step": global_step,
        "max_steps": global_step,
        "wall_time_s": 212.4,
        "final_metrics": final_metrics,
        "headline_metric": headline,
        "evaluation": {
            "val": {"split": "val", "n_real": 5000, "n_fake": 5000, "backbone": backbone},
            "test": {"split": "test", "n_real": 10000, "n_fake": 10000, "backbone": backbone},
        },
        "device": "1 x cpu (x86_64)",
        "config": {"train_size": train_size, "augment": augment, "seed": seed, "max_steps": global_step},
    }
    if selected is not None:
        step, selected_fd = selected
        summary["selected_checkpoint"] = {
            "path": str(run_dir / "checkpoints" / "best.ckpt"),
            "chosen_on": "val/fd_classifier",
            "step": step,
            "val/fd_classifier": selected_fd + 1,
            "test_metrics": {"test/fd_classifier": selected_fd, "test/precision_classifier": 0.5},
        }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    curve = val_curve if val_curve is not None else {500: fd + 10, 1000: fd + 5, 1500: fd + 2}
    rows: list[dict[str, Any]] = []
    for step in range(100, global_step + 1, 100):
        rows.append({"epoch": 0, "step": step, "train/loss_d": 0.6, "val/fd_classifier": ""})
        if step in curve:
            rows.append({"epoch": 0, "step": step, "train/loss_d": "", "val/fd_classifier": curve[step]})
    with open(run_dir / "metrics.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "step", "train/loss_d", "val/fd_classifier"])
        writer.writeheader()
        writer.writerows(rows)
    return run_dir


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def table_row(markdown: str, augment: str, train_size: str) -> list[str]:
    """The cells of the Markdown table row for one (augment, train size) group."""
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[:2] == [augment, train_size]:
            return cells
    raise AssertionError(f"no row for {augment}/{train_size} in:\n{markdown}")


def table_header(markdown: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith("| augment"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


# --- grid


def test_a_data_folder_compares_as_a_run_stores_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightning_genae.experiment.config import absolute_path, comparable

    monkeypatch.setenv("HOME", str(tmp_path))
    # A config file's `data_dir: ~/data` is the folder the run read and stored, not a `~` folder here.
    assert comparable("data_dir", "~/data") == absolute_path("~/data") == str(tmp_path / "data")


def test_cell_name_spells_out_augment_train_size_and_seed() -> None:
    assert GridCell("ae+diffaug", 1000, 2).name == "ae+diffaug-ts1000-seed2"
    assert GridCell("none", None, 0).name == "none-tsfull-seed0"


def test_grid_order_is_train_size_then_augment_then_seed_so_indices_are_stable() -> None:
    grid = expand_grid(["none", "ae"], [500, None], [0, 1])
    assert [cell.name for cell in grid] == [
        "none-ts500-seed0",
        "none-ts500-seed1",
        "ae-ts500-seed0",
        "ae-ts500-seed1",
        "none-tsfull-seed0",
        "none-tsfull-seed1",
        "ae-tsfull-seed0",
        "ae-tsfull-seed1",
    ]
    assert expand_grid(["none", "ae"], [500, None], [0, 1]) == grid


@pytest.mark.parametrize(
    ("augments", "train_sizes", "seeds", "repeated"),
    [
        (["ae", "ae"], [None], [0], "ae"),
        (["ae"], [1000, None, 1000], [0], "1000"),
        (["ae"], [None], [0, 1, 0], "0"),
    ],
)
def test_duplicate_values_are_rejected(
    augments: list[str], train_sizes: list[int | None], seeds: list[int], repeated: str
) -> None:
    with pytest.raises(ConfigError, match=f"lists {repeated} more than once"):
        expand_grid(augments, train_sizes, seeds)


def test_one_combination_typed_in_two_orders_is_rejected() -> None:
    with pytest.raises(ConfigError, match="--augment list lists ae\\+diffaug more than once"):
        expand_grid(["none", "ae+diffaug", "diffaug+ae"], [None], [0])
    assert len(expand_grid(["ae", "diffaug", "ae+diffaug"], [None], [0])) == 3


def fake_run_cell(fail: set[str]) -> Any:
    """A run_cell that writes a plausible run folder, or raises for the cells named in `fail`."""

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        if cell.name in fail:
            raise RuntimeError(f"out of memory in {cell.name}\nsecond line of detail")
        write_run(run_dir.parent, cell.augment, cell.train_size, cell.seed, fd=20.0 + cell.seed)

    return run_cell


def test_failing_cell_writes_failed_json_the_grid_goes_on_and_summary_reports_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cells = expand_grid(["none", "ae"], [None], [0, 1])
    outcomes = run_grid(cells, tmp_path, fake_run_cell({"ae-tsfull-seed0"}))

    assert [outcome.ok for outcome in outcomes] == [True, True, False, True]
    failed = outcomes[2]
    assert failed == CellOutcome(cells[2], ok=False, error="RuntimeError: out of memory in ae-tsfull-seed0")
    record = json.loads((tmp_path / "ae-tsfull-seed0" / "failed.json").read_text())
    assert {key: record[key] for key in ("cell", "augment", "train_size", "seed", "error")} == {
        "cell": "ae-tsfull-seed0",
        "augment": "ae",
        "train_size": None,
        "seed": 0,
        "error": "RuntimeError: out of memory in ae-tsfull-seed0",
    }
    assert (tmp_path / "ae-tsfull-seed1" / "summary.json").is_file()  # the cell after the failure ran
    out, err = capsys.readouterr()
    assert [line.split(" ")[0] for line in out.splitlines()] == ["[1/4]", "[2/4]", "[3/4]", "[4/4]"]
    assert err.count("\n") == 1 and "ae-tsfull-seed0" in err and "RuntimeError: out of memory" in err

    paths = summarize(tmp_path)
    rows = {row["cell"]: row for row in read_csv(paths["csv"])}
    assert rows["ae-tsfull-seed0"]["status"] == "failed"
    assert rows["ae-tsfull-seed0"]["error"] == "RuntimeError: out of memory in ae-tsfull-seed0"
    assert rows["ae-tsfull-seed1"]["status"] == "ok"
    markdown = paths["md"].read_text()
    ae_row = table_row(markdown, "ae", "full")
    assert ae_row[2:4] == ["1", "1"]  # one ok run, one failed
    assert "RuntimeError: out of memory" in ae_row[-1]
    assert "ae-tsfull-seed0" in Image.open(paths["png"]).text["Description"]


def test_group_with_only_failures_shows_failed_and_its_error(tmp_path: Path) -> None:
    run_grid(expand_grid(["none", "ae"], [None], [0]), tmp_path, fake_run_cell({"ae-tsfull-seed0"}))
    ae_row = table_row(summarize(tmp_path)["md"].read_text(), "ae", "full")
    assert ae_row[2:4] == ["0", "1"]
    assert "failed" in ae_row[4:-1]
    assert "RuntimeError: out of memory in ae-tsfull-seed0" in ae_row[-1]


def test_grid_index_runs_only_that_cell(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cells = expand_grid(["none", "ae"], [None], [0, 1])
    seen: list[str] = []
    outcomes = run_grid(cells, tmp_path, lambda cell, run_dir, start: seen.append(cell.name), grid_index=2)
    assert seen == ["ae-tsfull-seed0"]
    assert outcomes == [CellOutcome(cells[2], ok=True)]
    assert capsys.readouterr().out.startswith("[3/4] ae-tsfull-seed0")


def test_keyboard_interrupt_stops_the_grid(tmp_path: Path) -> None:
    seen: list[str] = []

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        seen.append(cell.name)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_grid(expand_grid(["none", "ae"], [None], [0]), tmp_path, run_cell)
    assert seen == ["none-tsfull-seed0"]
    assert not (tmp_path / "none-tsfull-seed0" / "failed.json").exists()


def test_successful_rerun_of_a_failed_cell_removes_failed_json(tmp_path: Path) -> None:
    cells = expand_grid(["ae"], [1000], [0])
    run_grid(cells, tmp_path, fake_run_cell({"ae-ts1000-seed0"}))
    assert (tmp_path / "ae-ts1000-seed0" / "failed.json").is_file()

    [outcome] = run_grid(cells, tmp_path, fake_run_cell(set()))
    assert outcome.ok
    assert not (tmp_path / "ae-ts1000-seed0" / "failed.json").exists()
    [row] = read_csv(summarize(tmp_path)["csv"])
    assert (row["status"], row["error"]) == ("ok", "")


def test_rerunning_a_grid_skips_finished_resumes_unfinished_and_retries_failed_cells(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cells = expand_grid(["a", "b", "c", "d", "e", "f"], [None], [0])
    folder = {cell.augment: tmp_path / cell.name for cell in cells}
    write_run(tmp_path, "a", None, 0, 20.0)  # finished
    (folder["b"] / "checkpoints").mkdir(parents=True)  # killed after a checkpoint
    (folder["b"] / "config.yaml").write_text("model: gan\n")
    (folder["b"] / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    folder["c"].mkdir()  # failed
    (folder["c"] / "failed.json").write_text('{"error": "RuntimeError: out of memory"}')
    folder["d"].mkdir()  # killed before its first checkpoint
    (folder["d"] / "metrics.csv").write_text("step\n")
    # e: never started; f: another process is running it right now.
    folder["f"].mkdir()
    running = RunFolderLock.acquire(folder["f"])  # another lock of the file is another holder (flock)
    before = (folder["a"] / "summary.json").read_bytes()
    started: dict[str, CellStart] = {}

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        started[cell.augment] = start
        write_run(run_dir.parent, cell.augment, cell.train_size, cell.seed, fd=1.0)

    try:
        outcomes = run_grid(cells, tmp_path, run_cell)
    finally:
        running.release()
    assert started == {
        "b": CellStart.RESUME,
        "c": CellStart.RESTART,
        "d": CellStart.RESTART,
        "e": CellStart.FRESH,
    }
    assert [outcome.action for outcome in outcomes] == [
        "skipped", "resumed", "restarted", "restarted", "ran", "in use"
    ]  # fmt: skip
    assert all(outcome.ok for outcome in outcomes)
    assert (folder["a"] / "summary.json").read_bytes() == before
    assert not (folder["c"] / "failed.json").exists()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[1/6] a-tsfull-seed0: finished (step 1500), skipped"
    assert out[1].startswith("[2/6] b-tsfull-seed0: unfinished, resuming from its last.ckpt")
    assert out[2].startswith("[3/6] c-tsfull-seed0: failed before, running it again from scratch")
    assert out[3].startswith("[4/6] d-tsfull-seed0: started but never checkpointed")
    assert out[4] == "[5/6] e-tsfull-seed0 ..."
    assert out[5].startswith("[6/6] f-tsfull-seed0: in use by another run (host ")


def test_a_grid_overwrite_stopped_part_way_replaces_the_rest_when_run_again_without_it(
    tmp_path: Path,
) -> None:
    """The command a stopped grid prints has no --overwrite: run again, it must still replace the cells the
    overwrite had not reached, and until then their old runs are not reported beside the new ones."""
    from lightning_genae.experiment.ablation.cells import overwrite_pending, record_grid_cells
    from lightning_genae.experiment.ablation.runs import load_runs

    cells = expand_grid(["none", "diffaug"], [None], [0])
    for cell in cells:
        write_run(tmp_path, cell.augment, None, 0, fd=50.0)  # the runs the --overwrite replaces
    record_grid_cells(tmp_path, cells)
    starts: dict[str, CellStart] = {}

    def stopped_at_the_second(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        starts[cell.name] = start
        if cell.augment == "diffaug":
            raise KeyboardInterrupt
        write_run(tmp_path, cell.augment, None, 0, fd=10.0)

    with pytest.raises(KeyboardInterrupt):
        run_grid(cells, tmp_path, stopped_at_the_second, overwrite=True)
    assert overwrite_pending(tmp_path) == ["diffaug-tsfull-seed0"]
    status = {run.cell: run.status for run in load_runs(tmp_path)}
    assert status == {"none-tsfull-seed0": "ok", "diffaug-tsfull-seed0": "unfinished"}
    starts.clear()
    outcomes = run_grid(cells, tmp_path, fake_run_cell(set()))
    assert [outcome.action for outcome in outcomes] == ["skipped", "restarted"]
    assert overwrite_pending(tmp_path) == []
    assert all(run.ok for run in load_runs(tmp_path))


def test_a_requeued_overwrite_grid_keeps_the_cells_its_earlier_attempt_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A SLURM job's --overwrite grid requeued after replacing one cell: that cell, its own, is continued
    and reported, not listed again as an old run to replace."""
    from lightning_genae.experiment import resume as checkpoint_module
    from lightning_genae.experiment.ablation.cells import (
        overwrite_pending,
        record_grid_cells,
        set_overwrite_pending,
    )
    from lightning_genae.experiment.ablation.runs import load_runs

    cells = expand_grid(["none", "diffaug"], [None], [0])
    for cell in cells:
        write_run(tmp_path, cell.augment, None, 0, fd=50.0)
    record_grid_cells(tmp_path, cells)
    set_overwrite_pending(tmp_path, ["diffaug-tsfull-seed0"])  # as the killed first attempt left it
    monkeypatch.setattr(
        checkpoint_module,
        "earlier_attempt_wrote",
        lambda run_dir: "own" if run_dir.name.startswith("none") else None,
    )
    outcomes = run_grid(cells, tmp_path, fake_run_cell(set()), overwrite=True)
    assert [outcome.action for outcome in outcomes] == ["skipped", "restarted"]
    assert overwrite_pending(tmp_path) == []
    assert all(run.ok for run in load_runs(tmp_path))


def test_a_finished_cell_with_other_options_is_refused_and_not_marked_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    [cell] = expand_grid(["ae"], [1000], [0])
    run_dir = write_run(tmp_path, "ae", 1000, 0, 20.0)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"]["batch_size"] = 64
    (run_dir / "summary.json").write_text(json.dumps(summary))
    wanted = RunConfig(augment="ae", train_size=1000, seed=0, batch_size=32, max_steps=1500)
    [outcome] = run_grid([cell], tmp_path, fake_run_cell(set()), configs={cell: wanted})
    assert not outcome.ok and outcome.action == "refused"
    assert "--batch-size 32 (finished run: 64)" in outcome.error and "--overwrite" in outcome.error
    assert not (run_dir / "failed.json").exists(), "a refusal must not make the next re-run replace the run"
    assert json.loads((run_dir / "summary.json").read_text())["config"]["batch_size"] == 64
    assert "refused" in capsys.readouterr().err


def _set_in_summary(run_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    change(summary)
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_a_row_whose_runs_differ_in_what_decides_their_numbers_is_not_averaged(tmp_path: Path) -> None:
    """Seeds added later with another --lr, or scored by a classifier trained on other data, are not one
    experiment: the row names what differs instead of a mean over both."""
    runs = [
        write_run(tmp_path, augment, None, seed, 20.0 + seed)
        for augment in ("none", "ae")
        for seed in range(3)
    ]
    for run_dir in runs:
        _set_in_summary(run_dir, lambda summary: summary["config"].update(lr=0.0005))
    _set_in_summary(runs[2], lambda summary: summary["config"].update(lr=0.01))
    _set_in_summary(
        runs[5],
        lambda summary: summary["evaluation"]["test"].update(backbone="classifier (mnist, sha256 bf283147)"),
    )
    markdown = summarize(tmp_path)["md"].read_text()
    none_row, ae_row = table_row(markdown, "none", "full"), table_row(markdown, "ae", "full")
    assert (
        none_row[4] == "not averaged"
        and "--lr differs (0.0005 in seed 0, seed 1; 0.01 in seed 2)" in none_row[-1]
    )
    assert ae_row[4] == "not averaged" and "backbone differs" in ae_row[-1] and "bf283147" in ae_row[-1]
    assert "--overwrite" in ae_row[-1]
    # One classifier file given under two names is one backbone.
    for index, run_dir in enumerate(runs[3:]):
        given = f"classifier (mnist, given as copy{index}.pt, sha256 328a7f35, test acc 99.41%)"
        _set_in_summary(
            run_dir, lambda summary, given=given: summary["evaluation"]["test"].update(backbone=given)
        )
    assert table_row(summarize(tmp_path)["md"].read_text(), "ae", "full")[4] != "not averaged"
    # The same row with agreeing runs is averaged.
    _set_in_summary(runs[2], lambda summary: summary["config"].update(lr=0.0005))
    assert table_row(summarize(tmp_path)["md"].read_text(), "none", "full")[4] == "21 ± 1"


def test_a_row_whose_seeds_read_other_augment_ckpt_files_is_not_averaged(tmp_path: Path) -> None:
    """An --augment-ckpt file is compared by the content summary.json records: retrained in place between
    seeds, it is two augmenters; one file copied under two names is one."""
    runs = [write_run(tmp_path, "ae", None, seed, 20.0 + seed) for seed in range(3)]

    def given(path: str, sha256: str) -> Callable[[dict[str, Any]], None]:
        def change(summary: dict[str, Any]) -> None:
            summary["config"]["augment_ckpt"] = path
            summary["augmentation"] = {
                "augment": "ae",
                "augmenter": {"source": "checkpoint", "path": path, "sha256": sha256},
            }

        return change

    for run_dir, path in zip(runs, ("/a/aug.ckpt", "/a/aug.ckpt", "/b/copy.ckpt"), strict=True):
        _set_in_summary(run_dir, given(path, "3373c19e" * 8))
    assert table_row(summarize(tmp_path)["md"].read_text(), "ae", "full")[4] == "21 ± 1"
    _set_in_summary(runs[2], given("/a/aug.ckpt", "a799499d" * 8))
    row = table_row(summarize(tmp_path)["md"].read_text(), "ae", "full")
    assert row[4] == "not averaged"
    assert "augmenter (SHA-256 of --augment-ckpt) differs" in row[-1] and "a799499d" in row[-1]
    assert "in seed 0, seed 1" in row[-1] and "in seed 2" in row[-1]


def test_a_seed_found_in_two_folders_of_a_row_is_not_counted_twice(tmp_path: Path) -> None:
    """A copy of a cell (a backup before --overwrite, a run started by hand into the root) holds a seed the
    row already has: its mean would count that seed twice."""
    for seed in range(2):
        write_run(tmp_path, "none", None, seed, 20.0 + seed)
    summarize(tmp_path)  # the root becomes a grid's (grid.json)
    shutil.copytree(tmp_path / "none-tsfull-seed0", tmp_path / "none-tsfull-seed0.bak")
    row = table_row(summarize(tmp_path)["md"].read_text(), "none", "full")
    assert row[4] == "not averaged"
    assert "seed 0 is in 2 folders (none-tsfull-seed0, none-tsfull-seed0.bak)" in row[-1]


def test_ablation_png_draws_the_seeds_of_a_row_not_averaged_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The figure follows the tables: a row they show no mean for is drawn seed by seed, without a band."""
    from matplotlib.axes import Axes

    for augment in ("none", "diffaug"):
        for seed in range(2):
            run_dir = write_run(tmp_path, augment, None, seed, 20.0 + seed)
            lr = 0.01 if augment == "diffaug" and seed == 1 else 0.0005
            _set_in_summary(run_dir, lambda summary, lr=lr: summary["config"].update(lr=lr))
    labels: list[str] = []
    bands: list[Any] = []
    plot, fill_between = Axes.plot, Axes.fill_between

    def recording_plot(self: Axes, *args: Any, **kwargs: Any) -> Any:
        labels.append(kwargs.get("label"))
        return plot(self, *args, **kwargs)

    def recording_fill(self: Axes, *args: Any, **kwargs: Any) -> Any:
        bands.append(kwargs.get("color"))
        return fill_between(self, *args, **kwargs)

    monkeypatch.setattr(Axes, "plot", recording_plot)
    monkeypatch.setattr(Axes, "fill_between", recording_fill)
    summarize(tmp_path)
    assert "none (n=2)" in labels and len(bands) == 1
    assert "diffaug (n=2, each seed: not averaged: the runs differ, see the report)" in labels
    assert labels.count(None) == 1  # diffaug's second seed, drawn apart without a label of its own


def test_a_tuned_arms_run_of_another_value_than_the_choice_is_named_not_averaged(tmp_path: Path) -> None:
    from lightning_genae.experiment.ablation.runs import load_runs, row_disagreement

    for seed in range(2):
        run_dir = write_run(tmp_path, "diffaug", None, seed, 30.0)
        _set_in_summary(run_dir, lambda summary: summary["config"].update(diffaug_translation=0.0))
    group = load_runs(tmp_path)
    problem = row_disagreement(group, {"diffaug_translation": 0.0625})
    assert "--diffaug-translation chosen 0.0625, but seed 0 ran 0.0, seed 1 ran 0.0" in problem
    assert row_disagreement(group, {"diffaug_translation": 0.0}) == ""


def test_a_finished_cell_of_another_eval_samples_is_named_once(tmp_path: Path) -> None:
    from lightning_genae.experiment.ablation.conflicts import finished_run_conflicts

    run_dir = write_run(tmp_path, "none", 1000, 0, 20.0)
    _set_in_summary(run_dir, lambda summary: summary["config"].update(eval_samples=64))
    summary = json.loads((run_dir / "summary.json").read_text())
    asked = RunConfig(model="gan", augment="none", train_size=1000, seed=0, eval_samples=128)
    assert [c for c in finished_run_conflicts(summary, asked) if "eval-samples" in c] == [
        "--eval-samples 128 (finished run: 64)"
    ]


def test_rows_of_runs_recording_an_unread_option_differently_are_one_experiment(tmp_path: Path) -> None:
    """A rae's width is unread: runs record it as None, runs of an earlier version at its default 64.
    Seeds of both kinds are one row, averaged."""
    from lightning_genae.experiment.ablation.runs import load_runs, row_disagreement

    for seed, width in ((0, 64), (1, None)):
        run_dir = write_run(tmp_path, "none", 1000, seed, 20.0 + seed)
        _set_in_summary(run_dir, lambda summary, w=width: summary["config"].update(model="rae", width=w))
    runs = [run for run in load_runs(tmp_path) if run.ok]
    assert len(runs) == 2 and row_disagreement(runs) == ""


def test_seeds_scored_on_binarized_and_on_grey_generated_images_are_not_one_row(tmp_path: Path) -> None:
    """On binary data the generated images are binarized before their features, which summary.json
    records; a seed scored without (an earlier version's run) is another protocol, not averaged in."""
    from lightning_genae.callbacks.metrics import BINARIZED
    from lightning_genae.experiment.ablation.runs import load_runs, row_disagreement

    for seed, generated in ((0, BINARIZED), (1, None)):
        run_dir = write_run(tmp_path, "none", 1000, seed, 20.0 + seed)

        def record(summary, generated=generated):
            test = summary.setdefault("evaluation", {}).setdefault("test", {})
            if generated is not None:
                test["generated"] = generated

        _set_in_summary(run_dir, record)
    runs = [run for run in load_runs(tmp_path) if run.ok]
    assert len(runs) == 2 and "generated images differs" in row_disagreement(runs)


def test_a_finished_cell_trained_at_another_learning_rate_refuses_the_grid(tmp_path: Path) -> None:
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.experiment.ablation.conflicts import refuse_finished_runs_with_other_options

    run_dir = write_run(tmp_path, "none", 1000, 0, 20.0)
    _set_in_summary(run_dir, lambda summary: summary["config"].update(lr=0.0005))
    asked = [(run_dir, RunConfig(augment="none", train_size=1000, seed=0, plugin_options={"lr": 0.01}))]
    with pytest.raises(RunFolderRefused, match=r"--lr 0.01 \(finished run: 0.0005\)"):
        refuse_finished_runs_with_other_options(asked, overwrite=False)


@pytest.mark.parametrize(
    ("schedule", "named"),
    [({"augment_anneal": True}, "--augment-anneal"), ({"lr_schedule": "cosine"}, "--lr-schedule cosine")],
)
def test_a_finished_cell_whose_schedule_ran_over_its_budget_is_not_continued_to_another(
    tmp_path: Path, schedule, named
) -> None:
    """Continued to a larger --max-steps, an annealed cell's p (or a cosine learning rate) would rise again
    from 0 part-way, and the row would average it with fresh cells of the new budget: it is refused. A cell
    without such a schedule is continued."""
    from lightning_genae.experiment.ablation.conflicts import finished_run_conflicts

    run_dir = write_run(tmp_path, "ae", 1000, 0, 20.0, global_step=30)
    _set_in_summary(run_dir, lambda summary: summary["config"].update(schedule))
    summary = json.loads((run_dir / "summary.json").read_text())
    longer = RunConfig(model="gan", augment="ae", train_size=1000, seed=0, max_steps=60)
    [conflict] = finished_run_conflicts(summary, longer)
    assert conflict.startswith("--max-steps 60") and named in conflict
    assert finished_run_conflicts(summary, replace(longer, max_steps=30)) == []
    plain = json.loads(
        (write_run(tmp_path, "none", 1000, 0, 20.0, global_step=30) / "summary.json").read_text()
    )
    assert finished_run_conflicts(plain, replace(longer, augment="none")) == []


def test_an_unfinished_cell_whose_schedule_runs_over_its_budget_is_not_resumed_to_another(
    tmp_path: Path, capsys
) -> None:
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main

    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--lr-schedule", "cosine", "--seeds", "0", "--output", str(root)]
    assert main([*grid, "--max-steps", "3"]) == 0
    (root / "none-tsfull-seed0" / "summary.json").unlink()  # stopped after its last checkpoint
    capsys.readouterr()
    assert main([*grid, "--max-steps", "6"]) == 2
    captured = capsys.readouterr()
    assert "--max-steps 6" in captured.err and "--lr-schedule cosine" in captured.err
    assert not (root / "none-tsfull-seed0" / "summary.json").exists()
    # The budget it was started with resumes it.
    assert main([*grid, "--max-steps", "3"]) == 0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--lr", "0.002"], "--lr 0.002 (the run there: 0.001)"),
        (["--width", "16"], "--width 16 (the run there: 8)"),
    ],
)
def test_an_unfinished_cell_is_not_resumed_with_options_that_decide_its_numbers(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch, change, named
) -> None:
    """A grid stopped part-way (a preempted array) and re-run with another learning rate would resume its
    cells at the new one: half a run at each, averaged as if it were either. Refused whole, before any cell
    trains, from the cell's config.yaml (no checkpoint is read to start a grid); an unreadable config.yaml
    refuses it too, and a last.ckpt of other options than its config.yaml refuses the cell as it resumes."""
    from tiny import TINY_RUN

    from lightning_genae.checkpoint import RunCheckpoint
    from lightning_genae.experiment.cli import main

    loaded: list[Path] = []
    load = RunCheckpoint.load.__func__

    def counted(cls, path, flag: str) -> RunCheckpoint:
        loaded.append(Path(path))
        return load(cls, path, flag)

    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--lr", "0.001", "--seeds", "0", "--max-steps", "3"]
    grid += ["--output", str(root)]
    assert main(grid) == 0
    cell = root / "none-tsfull-seed0"
    (cell / "summary.json").unlink()  # stopped after its last checkpoint
    before = (cell / "checkpoints" / "last.ckpt").read_bytes()
    config = (cell / "config.yaml").read_text()
    changed = [*grid, *change]  # the last of a repeated flag holds
    capsys.readouterr()
    monkeypatch.setattr(RunCheckpoint, "load", classmethod(counted))
    assert main(changed) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1
    assert loaded == []
    (cell / "config.yaml").write_text("not: [yaml")
    assert main(changed) == 2
    assert "config.yaml is unreadable" in capsys.readouterr().err
    name, value = change[0][2:].replace("-", "_"), change[1]
    (cell / "config.yaml").write_text(config.replace(f"\n{name}: ", f"\n{name}: {value} #", 1))
    assert main(changed) == 1
    assert named in capsys.readouterr().err and loaded == [cell / "checkpoints" / "last.ckpt"]
    assert (cell / "checkpoints" / "last.ckpt").read_bytes() == before and not (
        cell / "summary.json"
    ).exists()


def test_a_finished_cell_is_compared_by_its_data_folder_and_not_by_a_precision_alias(tmp_path: Path) -> None:
    """A finished cell without the data's hashes (an earlier version's) is compared by its data folder:
    another folder refuses the grid. `--precision 32` and `32-true` are one setting."""
    from lightning_genae.experiment.ablation.conflicts import finished_run_conflicts

    run_dir = write_run(tmp_path, "none", None, 0, 20.0)
    _set_in_summary(run_dir, lambda summary: summary["config"].update(data_dir="/data/a", precision="32"))
    summary = json.loads((run_dir / "summary.json").read_text())
    same = RunConfig(augment="none", seed=0, data_dir="/data/a", precision="32-true")
    assert finished_run_conflicts(summary, same) == []
    moved = RunConfig(augment="none", seed=0, data_dir="/data/b", precision="32-true")
    assert finished_run_conflicts(summary, moved) == ["--data-dir /data/b (finished run: /data/a)"]


def test_a_train_size_rows_seeds_train_on_their_own_subsets_and_are_averaged(tmp_path: Path) -> None:
    """Each seed draws its own --train-size subset: their training hashes differ by design, and the README's
    own ablation (a --train-size grid over seeds) said "not averaged" in every cell."""
    for seed in range(2):
        run_dir = write_run(tmp_path, "none", 1000, seed, 20.0 + seed)
        hashes = {"train": f"{seed}" * 64, "val": "v" * 64, "test": "t" * 64}
        _set_in_summary(run_dir, lambda summary, hashes=hashes: summary.update(data_sha256=hashes))
    row = table_row(summarize(tmp_path)["md"].read_text(), "none", "1000")
    assert row[4] != "not averaged" and "±" in row[4]
    # Other evaluation data is still another experiment.
    _set_in_summary(
        write_run(tmp_path, "none", 1000, 1, 21.0),
        lambda summary: summary.update(data_sha256={"train": "1" * 64, "val": "w" * 64, "test": "t" * 64}),
    )
    row = table_row(summarize(tmp_path)["md"].read_text(), "none", "1000")
    assert row[4] == "not averaged" and "data (SHA-256 of val, test) differs" in row[-1]


def test_a_train_size_rows_seeds_drawn_from_other_training_splits_are_not_averaged(tmp_path: Path) -> None:
    """Seeds whose subsets were drawn from different whole training splits (a dataset file replaced between
    them, the evaluation splits unchanged) are not one experiment."""
    for seed, whole in ((0, "a"), (1, "b")):
        hashes = {"train": f"{seed}" * 64, "val": "v" * 64, "test": "t" * 64}
        _set_in_summary(
            write_run(tmp_path, "none", 1000, seed, 20.0 + seed),
            lambda summary, hashes=hashes, whole=whole: summary.update(
                data_sha256=hashes, training_split_sha256=whole * 64
            ),
        )
    row = table_row(summarize(tmp_path)["md"].read_text(), "none", "1000")
    assert row[4] == "not averaged" and "whole training split drawn from (SHA-256) differs" in row[-1]
    same_whole = {"training_split_sha256": "a" * 64}
    _set_in_summary(write_run(tmp_path, "none", 1000, 1, 21.0), lambda summary: summary.update(same_whole))
    row = table_row(summarize(tmp_path)["md"].read_text(), "none", "1000")
    assert row[4] != "not averaged" and "±" in row[4]


def test_rows_of_cells_of_other_grid_commands_are_marked_as_not_ranking_against_each_other(
    tmp_path: Path, capsys
) -> None:
    """Cells of another grid command in one folder (other data, another --lr) make rows that do not rank
    against each other, and the table and the summary's line say so; rows that differ only in their arm
    (augmentation and its options) and training size say nothing."""
    for augment, train_size, p in (("none", 1000, None), ("ae", 1000, 0.25), ("ae", None, 0.5)):
        for seed in range(2):
            _set_in_summary(
                write_run(tmp_path, augment, train_size, seed, 20.0 + seed),
                lambda summary, p=p: summary["config"].update(
                    {"lr": 0.0002, "augment_p": p, "data": "mnist"}
                ),
            )
    markdown = summarize(tmp_path)["md"].read_text()
    assert "not one experiment" not in markdown and "note:" not in capsys.readouterr().err
    for seed in range(2):
        _set_in_summary(
            write_run(tmp_path, "diffaug", 1000, seed, 10.0 + seed),
            lambda summary: summary["config"].update({"lr": 0.002, "data": "digits"}),
        )
    markdown = summarize(tmp_path)["md"].read_text()
    assert "These rows are not one experiment, so they do not rank against each other" in markdown
    assert "--lr differs (0.0002 in ae-ts1000, none-ts1000, ae-tsfull; 0.002 in diffaug-ts1000)" in markdown
    assert (
        "--data differs ('mnist' in ae-ts1000, none-ts1000, ae-tsfull; 'digits' in diffaug-ts1000)"
        in markdown
    )
    assert "also differ in --lr, --data, so they do not rank" in capsys.readouterr().err


def test_rows_of_one_training_size_that_trained_other_iterations_do_not_rank(tmp_path: Path, capsys) -> None:
    """Under --max-epochs an offline pool lengthens its arm's epochs: the options agree, the iterations
    do not, and the rows of that training size do not rank. Another training size may differ in them."""
    for augment, train_size, steps in (("none", 200, 12), ("ae", 200, 25), ("none", None, 80)):
        for seed in range(2):
            _set_in_summary(
                write_run(tmp_path, augment, train_size, seed, 20.0 + seed),
                lambda summary, steps=steps: summary.update(global_step=steps),
            )
    markdown = summarize(tmp_path)["md"].read_text()
    assert "These rows are not one experiment" in markdown
    assert "iterations trained at --train-size 200 differs (25 in ae-ts200; 12 in none-ts200)" in markdown
    assert "--train-size full" not in markdown
    assert "or run the grid again with --max-steps, so that every arm trains as many iterations" in markdown
    assert "iterations trained at --train-size 200" in capsys.readouterr().err


def test_a_row_whose_runs_saw_other_data_is_not_averaged(tmp_path: Path) -> None:
    runs = [write_run(tmp_path, "none", None, seed, 20.0 + seed) for seed in range(2)]
    for seed, run_dir in enumerate(runs):
        hashes = {"train": f"{seed}" * 64, "val": "v" * 64, "test": "t" * 64}
        _set_in_summary(run_dir, lambda summary, hashes=hashes: summary.update(data_sha256=hashes))
    row = table_row(summarize(tmp_path)["md"].read_text(), "none", "full")
    assert row[4] == "not averaged" and "data (SHA-256 of train, val, test) differs" in row[-1]


def test_finished_runs_with_other_options_refuse_the_grid_in_one_line(tmp_path: Path) -> None:
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.experiment.ablation.conflicts import refuse_finished_runs_with_other_options

    cells = expand_grid(["ae", "none"], [1000], [0])
    run_dir = write_run(tmp_path, "none", 1000, 0, 20.0)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["config"]["batch_size"] = 64
    (run_dir / "summary.json").write_text(json.dumps(summary))
    asked = [
        (tmp_path / cell.name, RunConfig(augment=cell.augment, train_size=1000, seed=0, batch_size=32))
        for cell in cells
    ]
    with pytest.raises(RunFolderRefused) as refused:
        refuse_finished_runs_with_other_options(asked, overwrite=False)
    message = str(refused.value)
    assert "1 of the 2 cells" in message and "--batch-size 32 (finished run: 64)" in message
    assert "--overwrite" in message and "\n" not in message
    refuse_finished_runs_with_other_options(asked, overwrite=True)
    refuse_finished_runs_with_other_options(asked[:1], overwrite=False)


def test_a_cell_another_grid_command_is_running_with_other_options_refuses_the_grid(tmp_path: Path) -> None:
    # Left to that command as "in use", it would be averaged with this command's cells as one setting.
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.experiment.ablation.conflicts import refuse_finished_runs_with_other_options

    [cell] = expand_grid(["none"], [1000], [0])
    running = tmp_path / cell.name
    running.mkdir()
    (running / "config.yaml").write_text("augment: none\ntrain_size: 1000\nseed: 0\nlr: 0.001\n")
    lock = RunFolderLock.acquire(running)
    asked = [(running, RunConfig(augment="none", train_size=1000, seed=0, plugin_options={"lr": 0.0002}))]
    with pytest.raises(RunFolderRefused, match=r"--lr 0.0002 \(the run there: 0.001\)"):
        refuse_finished_runs_with_other_options(asked, overwrite=False)
    same = [(running, RunConfig(augment="none", train_size=1000, seed=0, plugin_options={"lr": 0.001}))]
    refuse_finished_runs_with_other_options(same, overwrite=False)
    # --overwrite replaces cells, but one another command is running is left to it, so it is compared too.
    with pytest.raises(RunFolderRefused, match=r"--lr 0.0002 \(the run there: 0.001\)"):
        refuse_finished_runs_with_other_options(asked, overwrite=True)
    lock.release()


def test_a_longer_budget_continues_finished_cells_from_their_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cells = expand_grid(["ae", "none"], [1000], [0])
    for cell in cells:
        run_dir = write_run(tmp_path, cell.augment, 1000, 0, 20.0, global_step=1500)
        (run_dir / "checkpoints").mkdir()
        (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    started: dict[str, CellStart] = {}

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        started[cell.augment] = start

    longer = RunConfig(augment="ae", train_size=1000, seed=0, max_steps=3000)
    outcomes = run_grid(cells[:1], tmp_path, run_cell, configs={cells[0]: longer})
    assert started == {"ae": CellStart.RESUME} and outcomes[0].action == "resumed"
    assert "finished at step 1500, continuing to the new budget" in capsys.readouterr().out
    # The same budget as the finished run: nothing to do.
    same = RunConfig(augment="none", train_size=1000, seed=0, max_steps=1500)
    [outcome] = run_grid(cells[1:], tmp_path, run_cell, configs={cells[1]: same})
    assert outcome.action == "skipped" and "none" not in started


def test_a_shorter_budget_or_a_lost_checkpoint_refuses_a_finished_cell(tmp_path: Path) -> None:
    # Continued, a shorter budget trained nothing and relabelled the run as one of that budget, averaged
    # with cells that trained that long; a finished cell without last.ckpt cannot be continued.
    from lightning_genae.errors import RunFolderRefused
    from lightning_genae.experiment.ablation.conflicts import refuse_finished_runs_with_other_options

    [cell] = expand_grid(["ae"], [1000], [0])
    run_dir = write_run(tmp_path, cell.augment, 1000, 0, 20.0, global_step=1500)
    _set_in_summary(run_dir, lambda summary: summary["config"].update(max_epochs=None))  # as a run records
    (run_dir / "checkpoints").mkdir()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(b"weights")
    started: list[CellStart] = []

    def run_cell(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        started.append(start)

    shorter = RunConfig(augment="ae", train_size=1000, seed=0, max_steps=1000)
    [outcome] = run_grid([cell], tmp_path, run_cell, configs={cell: shorter})
    assert outcome.action == "refused" and not started
    assert "--max-steps 1000 (finished run: 1500" in outcome.error
    # An epoch budget below the epochs a --max-steps run went through, refused before any cell trains.
    fewer_epochs = RunConfig(augment="ae", train_size=1000, seed=0, max_epochs=2)
    with pytest.raises(RunFolderRefused, match="--max-epochs 2"):
        refuse_finished_runs_with_other_options([(run_dir, fewer_epochs)], overwrite=False)
    last.unlink()
    longer = RunConfig(augment="ae", train_size=1000, seed=0, max_steps=3000)
    [outcome] = run_grid([cell], tmp_path, run_cell, configs={cell: longer})
    assert outcome.action == "refused" and not started
    assert "--max-steps 3000" in outcome.error and "last.ckpt" in outcome.error
    with pytest.raises(RunFolderRefused, match="--max-steps 3000"):
        refuse_finished_runs_with_other_options([(run_dir, longer)], overwrite=False)


def test_a_failed_continuation_of_a_finished_cell_keeps_its_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Recorded as failed, the cell would run again from scratch at the next grid command, its finished run
    # removed (a continuation refused for data replaced in place, or a damaged last.ckpt).
    [cell] = expand_grid(["ae"], [1000], [0])
    run_dir = write_run(tmp_path, cell.augment, 1000, 0, 20.0, global_step=1500)
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    kept = (run_dir / "summary.json").read_bytes()

    def refused(cell: GridCell, run_dir: Path, start: CellStart) -> None:
        raise ConfigError("--resume: the training images differ from the run's")

    longer = RunConfig(augment="ae", train_size=1000, seed=0, max_steps=3000)
    [outcome] = run_grid([cell], tmp_path, refused, configs={cell: longer})
    assert not outcome.ok and "the cell's finished run is kept" in capsys.readouterr().err
    assert not (run_dir / "failed.json").exists() and (run_dir / "summary.json").read_bytes() == kept
    same = RunConfig(augment="ae", train_size=1000, seed=0, max_steps=1500)
    [outcome] = run_grid([cell], tmp_path, refused, configs={cell: same})
    assert outcome.action == "skipped"


def test_summary_of_a_partial_grid_lists_missing_unfinished_and_failed_cells(tmp_path: Path) -> None:
    cells = expand_grid(["none", "ae"], [None], [0, 1])
    record_grid_cells(tmp_path, cells)
    write_run(tmp_path, "none", None, 0, 20.0)
    (tmp_path / "none-tsfull-seed1").mkdir()
    (tmp_path / "none-tsfull-seed1" / "config.yaml").write_text("model: gan\n")
    run_grid(cells[2:3], tmp_path, fake_run_cell({"ae-tsfull-seed0"}))
    assert describe_progress(tmp_path) == (
        "1 of 4 cells finished; failed: ae-tsfull-seed0; unfinished: none-tsfull-seed1; "
        "missing: ae-tsfull-seed1; re-run the grid command to run, resume or retry them"
    )
    paths = summarize(tmp_path)
    statuses = {row["cell"]: row["status"] for row in read_csv(paths["csv"])}
    assert statuses == {
        "none-tsfull-seed0": "ok",
        "none-tsfull-seed1": "unfinished",
        "ae-tsfull-seed0": "failed",
        "ae-tsfull-seed1": "missing",
    }
    markdown = paths["md"].read_text()
    assert "1 of 4 runs finished (unfinished: none-tsfull-seed1; missing: ae-tsfull-seed1)" in markdown
    assert table_row(markdown, "none", "full")[2:4] == ["1", "0"], "an unfinished cell is not a failure"
    assert table_row(markdown, "ae", "full")[2:4] == ["0", "1"]


def test_grid_json_collects_the_cells_of_every_grid_command_into_a_root(tmp_path: Path) -> None:
    record_grid_cells(tmp_path, expand_grid(["none", "ae"], [None], [0]))
    record_grid_cells(tmp_path, expand_grid(["none", "ae"], [None], [0]))
    record_grid_cells(tmp_path, expand_grid(["ae"], [None], [1]))
    assert read_grid_cells(tmp_path) == ["none-tsfull-seed0", "ae-tsfull-seed0", "ae-tsfull-seed1"]


def test_a_summary_of_cell_folders_without_grid_json_makes_the_root_a_grids(tmp_path: Path) -> None:
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main

    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--seeds", "0", "--output", str(root)]
    assert main(grid) == 0
    # Cell folders without grid.json (and without the summary files, which a grid writes last).
    for name in ("grid.json", "ablation.md", "ablation.csv", "ablation.png"):
        (root / name).unlink()
    assert main(["--summarize", str(root)]) == 0
    assert read_grid_cells(root) == ["none-tsfull-seed0"]
    # The summary it wrote is the grid's: the grid command continues the root instead of refusing it.
    assert main([*grid, "--seeds", "0,1"]) == 0
    assert read_grid_cells(root) == ["none-tsfull-seed0", "none-tsfull-seed1"]


def test_a_failed_cell_run_again_says_why_its_files_go_without_naming_overwrite(
    tmp_path: Path, capsys
) -> None:
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main

    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--seeds", "0", "--output", str(root)]
    assert main(grid) == 0
    cell = root / "none-tsfull-seed0"
    (cell / "summary.json").unlink()
    (cell / "failed.json").write_text('{"error": "RuntimeError: out of memory"}')
    capsys.readouterr()
    assert main(grid) == 0
    out = capsys.readouterr().out
    assert "failed before, running it again from scratch" in out
    assert "running the cell again from scratch: removed the previous run's config.yaml" in out
    assert "--overwrite" not in out


def test_a_summary_into_a_folder_of_runs_keeps_a_users_ablation_files(tmp_path: Path, capsys) -> None:
    """`--summarize` of a folder without grid.json that holds a user's ablation.md is refused in one line,
    nothing written: without grid.json nothing tells a grid's summary files from a user's."""
    from lightning_genae.experiment.cli import main

    write_run(tmp_path, "none", None, 0, 20.0)
    (tmp_path / "ablation.md").write_text("MY OWN NOTES\n")
    (tmp_path / "ablation.csv").write_text("a,b\n")
    before = {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()}
    assert main(["--summarize", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"--summarize {tmp_path} holds ablation.csv, ablation.md but no grid.json" in err
    assert err.count("\n") == 1
    assert {path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file()} == before
    # Even one that begins as a grid's report does.
    (tmp_path / "ablation.csv").unlink()
    (tmp_path / "ablation.md").write_text("# Ablation: my own table\n")
    assert main(["--summarize", str(tmp_path)]) == 2
    assert (tmp_path / "ablation.md").read_text() == "# Ablation: my own table\n"


def test_a_summary_of_a_folder_of_single_runs_is_refused_and_writes_nothing(tmp_path: Path, capsys) -> None:
    """`--summarize runs` (where default runs go) wrote a grid.json listing every run as a cell, after which
    a run into the folder was refused as a grid's and a grid there merged its cells with them."""
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main

    root = tmp_path / "runs"
    for seed in ("0", "1"):
        single = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--seed", seed]
        assert main([*single, "--output", str(root / f"ae-digits-none-seed{seed}-20261128-000000")]) == 0
    before = sorted(path.relative_to(root) for path in root.rglob("*"))
    capsys.readouterr()
    assert main(["--summarize", str(root)]) == 2
    err = capsys.readouterr().err
    assert f"--summarize {root}" in err and "ae-digits-none-seed0-20261128-000000" in err
    assert err.count("\n") == 1
    assert sorted(path.relative_to(root) for path in root.rglob("*")) == before
    # Nor does a grid put its cells among them.
    grid = ["--model", "ae", *TINY_RUN, "--max-steps", "2", "--seeds", "0,1", "--output", str(root)]
    for overwrite in ([], ["--overwrite"]):
        assert main([*grid, *overwrite]) == 2
        assert f"--output {root}" in capsys.readouterr().err
        assert sorted(path.relative_to(root) for path in root.rglob("*")) == before


@pytest.mark.slow
def test_a_grid_command_run_again_finishes_only_what_is_left(tmp_path: Path, capsys) -> None:
    """End to end through the command line: one array task, a partial summary, a kill, a re-run."""
    from tiny import TINY_RUN

    from lightning_genae.experiment.cli import main

    root = tmp_path / "grid"
    grid = ["--model", "ae", *TINY_RUN, "--augment", "none", "--seeds", "0,1", "--output", str(root)]
    assert main([*grid, "--max-steps", "2", "--grid-index", "0"]) == 0
    capsys.readouterr()
    assert main(["--summarize", str(root)]) == 0
    out = capsys.readouterr().out
    assert "1 of 2 cells finished; missing: none-tsfull-seed1" in out, "not '1 of 1': the grid has 2 cells"
    # Cell 0 as if killed after its last checkpoint: no summary.json.
    (root / "none-tsfull-seed0" / "summary.json").unlink()
    assert main([*grid, "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] none-tsfull-seed0: unfinished, resuming from its last.ckpt" in out
    assert "resuming from" in out and "at iteration 2" in out
    assert "2 of 2 cells finished" in out
    for seed in (0, 1):
        summary = json.loads((root / f"none-tsfull-seed{seed}" / "summary.json").read_text())
        assert summary["global_step"] == 4
    before = {path: path.read_bytes() for path in root.rglob("*.ckpt")}
    assert main([*grid, "--max-steps", "4"]) == 0
    out = capsys.readouterr().out
    assert "[1/2] none-tsfull-seed0: finished (step 4), skipped" in out
    assert "[2/2] none-tsfull-seed1: finished (step 4), skipped" in out
    assert {path: path.read_bytes() for path in root.rglob("*.ckpt")} == before


# --- summary


def make_2x2_grid(root: Path) -> dict[str, list[float]]:
    fds = {"none": [30.0, 34.5], "ae": [21.25, 22.0]}
    for augment, values in fds.items():
        for seed, fd in enumerate(values):
            write_run(root, augment, 1000, seed, fd)
    return fds


def test_2x2_grid_summary_has_four_rows_numpy_statistics_and_a_png(tmp_path: Path) -> None:
    fds = make_2x2_grid(tmp_path)
    paths = summarize(tmp_path)
    assert paths == {
        "csv": tmp_path / "ablation.csv",
        "md": tmp_path / "ablation.md",
        "png": tmp_path / "ablation.png",
    }

    rows = read_csv(paths["csv"])
    assert [row["cell"] for row in rows] == [
        "ae-ts1000-seed0",
        "ae-ts1000-seed1",
        "none-ts1000-seed0",
        "none-ts1000-seed1",
    ]
    assert {row["status"] for row in rows} == {"ok"}
    assert rows[0]["headline_metric"] == "test/fd_classifier"
    assert float(rows[0]["test/fd_classifier"]) == 21.25
    assert (rows[0]["n_real"], rows[0]["n_fake"], rows[0]["global_step"]) == ("10000", "10000", "1500")
    columns = list(rows[0])
    assert columns[:8] == [
        "cell", "augment", "train_size", "seed", "status", "global_step", "wall_time_s", "headline_metric"
    ]  # fmt: skip
    assert columns[-5:] == ["n_real", "n_fake", "backbone", "device", "error"]
    assert "train/loss_d" not in columns and "val/fd_classifier" not in columns

    markdown = paths["md"].read_text()
    assert f"# Ablation: {tmp_path.name}" in markdown
    assert "`test/fd_classifier` (lower is better)" in markdown and "n_real=10000, n_fake=10000" in markdown
    assert "test split" in markdown
    header = table_header(markdown)
    for augment, values in fds.items():
        row = dict(zip(header, table_row(markdown, augment, "1000"), strict=True))
        expected = f"{np.mean(values):.4g} ± {np.std(values, ddof=1):.4g}"
        assert row["fd_classifier"] == expected
        precisions = [0.3, 0.4]
        assert row["precision_classifier"] == f"{np.mean(precisions):.4g} ± {np.std(precisions, ddof=1):.4g}"
        assert (row["n"], row["failed"]) == ("2", "0")
    # The baseline first within a train size, whatever its mean; two seeds are not a ranking.
    assert markdown.index("| none | 1000 |") < markdown.index("| ae | 1000 |")
    assert "With 2 finished seed(s) in a row (fewer than 3), that order is not a ranking" in markdown

    data = paths["png"].read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    with Image.open(paths["png"]) as image:
        assert image.width > 100 and image.height > 100


def test_three_seeds_a_row_rank_without_the_caution_and_the_baseline_still_leads(tmp_path: Path) -> None:
    for augment, fds in {
        "none": [30.0, 31.0, 32.0],
        "diffaug": [25.0, 26.0, 27.0],
        "ae": [20.0, 21.0, 22.0],
    }.items():
        for seed, fd in enumerate(fds):
            write_run(tmp_path, augment, 1000, seed, fd)
    markdown = summarize(tmp_path)["md"].read_text()
    assert "not a ranking" not in markdown
    order = [markdown.index(f"| {augment} | 1000 |") for augment in ("none", "ae", "diffaug")]
    assert order == sorted(order)


def test_single_seed_group_shows_mean_with_no_std(tmp_path: Path) -> None:
    write_run(tmp_path, "ae", None, 0, 12.345678)
    markdown = summarize(tmp_path)["md"].read_text()
    row = dict(zip(table_header(markdown), table_row(markdown, "ae", "full"), strict=True))
    assert row["fd_classifier"] == "12.35 ± n/a"


def test_higher_is_better_headline_puts_the_largest_mean_first(tmp_path: Path) -> None:
    write_run(tmp_path, "low", 1000, 0, 1.0, headline="val/precision_classifier")  # precision 0.3
    write_run(tmp_path, "high", 1000, 1, 1.0, headline="val/precision_classifier")  # precision 0.4
    markdown = summarize(tmp_path)["md"].read_text()
    assert "(higher is better)" in markdown
    assert markdown.index("| high | 1000 |") < markdown.index("| low | 1000 |")


def replace_final_metrics(run_dir: Path, final_metrics: dict[str, float]) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["final_metrics"] = final_metrics
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.mark.parametrize(
    ("headline", "label", "best_first"),
    [("val/loss", "(lower is better)", "small"), ("val/psnr", "(higher is better)", "large")],
)
def test_autoencoder_headline_is_labelled_and_sorted_by_its_direction(
    tmp_path: Path, headline: str, label: str, best_first: str
) -> None:
    metric = "test/" + headline.removeprefix("val/")
    for augment, value in (("small", 0.2), ("large", 0.4)):
        run_dir = write_run(tmp_path, augment, 1000, 0, 1.0, headline=headline)
        replace_final_metrics(run_dir, {metric: value, headline: value})
    markdown = summarize(tmp_path)["md"].read_text()
    assert f"Headline metric: `{metric}` {label}" in markdown
    other = "large" if best_first == "small" else "small"
    assert markdown.index(f"| {best_first} | 1000 |") < markdown.index(f"| {other} | 1000 |")


def test_headline_with_no_better_side_has_no_direction_label(tmp_path: Path) -> None:
    write_run(tmp_path, "ae", 1000, 0, 1.0, headline="val/kid_std_classifier")
    markdown = summarize(tmp_path)["md"].read_text()
    assert "Headline metric: `test/kid_std_classifier`;" in markdown


def test_inception_headline_puts_its_columns_first_with_fid(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "ae", 1000, 0, 10.0, headline="val/fid_inception")
    summary = json.loads((run_dir / "summary.json").read_text())
    replace_final_metrics(
        run_dir, {**summary["final_metrics"], "test/fid_inception": 5.0, "test/kid_inception": 0.1}
    )
    markdown = summarize(tmp_path)["md"].read_text()
    assert table_header(markdown)[4:8] == [
        "fid_inception",
        "kid_inception",
        "fd_classifier",
        "kid_classifier",
    ]
    assert "`test/fid_inception` (lower is better)" in markdown


def test_missing_headline_falls_back_to_test_fd(tmp_path: Path) -> None:
    write_run(tmp_path, "ae", None, 0, 20.0, headline=None)
    [row] = read_csv(summarize(tmp_path)["csv"])
    assert row["headline_metric"] == "test/fd_classifier"


def test_summarize_on_an_empty_or_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-run").mkdir()
    with pytest.raises(ConfigError, match="run a grid first") as raised:
        summarize(tmp_path)
    assert "\n" not in str(raised.value)
    with pytest.raises(FileNotFoundError):
        summarize(tmp_path / "missing")


def test_corrupt_summary_json_becomes_a_failed_row(tmp_path: Path) -> None:
    write_run(tmp_path, "ae", 1000, 0, 20.0)
    (write_run(tmp_path, "ae", 1000, 1, 20.0) / "summary.json").write_text('{"final_metrics": {')
    paths = summarize(tmp_path)
    rows = {row["cell"]: row for row in read_csv(paths["csv"])}
    broken = rows["ae-ts1000-seed1"]
    assert (broken["status"], broken["augment"], broken["train_size"], broken["seed"]) == (
        "failed",
        "ae",
        "1000",
        "1",
    )
    assert broken["error"].startswith("corrupt summary.json: JSONDecodeError")
    row = table_row(paths["md"].read_text(), "ae", "1000")
    assert row[2:4] == ["1", "1"] and "corrupt summary.json" in row[-1]


def test_a_report_with_no_finished_run_says_so_not_why_no_checkpoint_was_chosen(tmp_path: Path) -> None:
    (write_run(tmp_path, "ae", 1000, 0, 20.0) / "summary.json").write_text('{"final_metrics": {')
    text = summarize(tmp_path)["md"].read_text()
    assert "0 of 1 runs finished" in text and "(no run finished)" in text
    assert "--eval-every" not in text and "image metric" not in text


def test_png_says_no_validation_values_when_no_run_logged_the_metric(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path, "ae", None, 0, 20.0, val_curve={})
    (run_dir / "metrics.csv").unlink()
    write_run(tmp_path, "none", None, 0, 25.0, val_curve={})
    png = summarize(tmp_path)["png"]
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    with Image.open(png) as image:
        assert image.width > 0 and image.height > 0


def test_runs_with_different_evaluation_steps_still_plot(tmp_path: Path) -> None:
    write_run(tmp_path, "ae", None, 0, 20.0, val_curve={500: 30.0, 1000: 25.0, 1500: 22.0})
    write_run(tmp_path, "ae", None, 1, 21.0, val_curve={700: 31.0, 1500: 23.0})
    write_run(tmp_path, "none", 500, 0, 21.0, val_curve={700: 31.0})
    write_run(tmp_path, "none", 500, 1, 21.0, val_curve={900: 31.0})  # no step in common with seed 0
    assert summarize(tmp_path)["png"].read_bytes().startswith(PNG_SIGNATURE)


def test_summary_adds_a_table_of_the_checkpoints_chosen_on_validation_with_their_steps(
    tmp_path: Path,
) -> None:
    write_run(tmp_path, "none", 1000, 0, 30.0, selected=(500, 26.0))
    write_run(tmp_path, "none", 1000, 1, 34.0, selected=(1000, 27.0))
    write_run(tmp_path, "diffaug", 1000, 0, 40.0, selected=(500, 20.0))
    write_run(tmp_path, "diffaug", 1000, 1, 41.0)  # a run from before best.ckpt was evaluated
    paths = summarize(tmp_path)
    markdown = paths["md"].read_text()
    final, chosen = markdown.split("### Checkpoint chosen on validation")
    assert "### Final weights" in final and "`val/fd_classifier`" in chosen
    # The final weights' table is as before: none is better there.
    assert final.index("| none | 1000 |") < final.index("| diffaug | 1000 |")
    row = dict(zip(table_header(final), table_row(final, "none", "1000"), strict=True))
    assert row["fd_classifier"] == f"32 ± {np.std([30.0, 34.0], ddof=1):.4g}"
    # The chosen checkpoints' test numbers, their steps per seed, and the run that has none.
    header = table_header(chosen)
    assert header[-2:] == ["chosen steps", "notes"]
    none_row = dict(zip(header, table_row(chosen, "none", "1000"), strict=True))
    assert none_row["fd_classifier"] == f"26.5 ± {np.std([26.0, 27.0], ddof=1):.4g}"
    assert none_row["precision_classifier"] == "0.5 ± 0"
    assert none_row["chosen steps"] == "500, 1000" and none_row["notes"] == ""
    diffaug_row = dict(zip(header, table_row(chosen, "diffaug", "1000"), strict=True))
    assert diffaug_row["fd_classifier"] == "20 ± n/a (n=1)"
    assert diffaug_row["chosen steps"] == "500"
    assert diffaug_row["notes"] == "seed 1: no checkpoint chosen on validation"
    assert chosen.index("| none | 1000 |") < chosen.index("| diffaug | 1000 |")  # the baseline first

    rows = {row["cell"]: row for row in read_csv(paths["csv"])}
    columns = list(rows["none-ts1000-seed0"])
    start = columns.index("selected/step")
    assert columns[start : start + 4] == [
        "selected/step", "selected/val/fd_classifier", "selected/test/fd_classifier",
        "selected/test/precision_classifier",
    ]  # fmt: skip
    assert columns[-5:] == ["n_real", "n_fake", "backbone", "device", "error"]
    assert rows["none-ts1000-seed1"]["selected/step"] == "1000"
    assert float(rows["none-ts1000-seed1"]["selected/test/fd_classifier"]) == 27.0
    assert float(rows["none-ts1000-seed1"]["selected/val/fd_classifier"]) == 28.0
    assert rows["diffaug-ts1000-seed1"]["selected/test/fd_classifier"] == ""


def test_runs_without_a_chosen_checkpoint_give_no_second_table_or_columns(tmp_path: Path) -> None:
    make_2x2_grid(tmp_path)
    paths = summarize(tmp_path)
    markdown = paths["md"].read_text()
    assert "### Checkpoint chosen on validation" not in markdown
    assert "(the best checkpoint is picked" not in markdown
    assert "the final weights are the only ones reported" in markdown
    assert not [name for name in read_csv(paths["csv"])[0] if name.startswith("selected/")]


def test_mean_std_gives_the_sample_spread_and_no_spread_for_one_value():
    from lightning_genae.spread import mean_std

    assert mean_std([1.0, 2.0, 3.0]) == "2 ± 1"
    assert mean_std([10.0, 12.0], ".2f") == "11.00 ± 1.41"  # sqrt(2): n - 1 in the denominator
    assert mean_std([336.0], ".3g") == "336 ± n/a"


def test_a_table_of_runs_scored_without_a_backbone_leaves_the_backbone_out(tmp_path: Path) -> None:
    """Series runs are scored without a feature backbone: the header named it 'unknown'."""
    for seed in range(2):
        run_dir = write_run(tmp_path, "none", None, seed, 20.0)
        _set_in_summary(
            run_dir,
            lambda summary: [summary["evaluation"][split].update(backbone=None) for split in ("val", "test")],
        )
    header = summarize(tmp_path)["md"].read_text().splitlines()[2]
    assert header.startswith("Headline metric:") and "backbone" not in header, header
