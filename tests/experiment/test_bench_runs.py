"""bench/bench_runs.py: a reproduction script's runs, found again by the same command after a stop, and
its command line checked before anything trains."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:  # where `python bench/NAME.py` finds its siblings
    sys.path.insert(0, str(BENCH))

import bench_runs  # noqa: E402
from bench_runs import STAMP, PlannedRun, distinct, names, read_stamp, train_planned  # noqa: E402


def planned(tmp_path: Path, steps: int = 4, extend: bool = False, lr: str = "1e-3") -> PlannedRun:
    output = tmp_path / "run"
    options = ["--model", "ae", "--max-steps", str(steps), "--lr", lr, "--output", str(output)]
    return PlannedRun(options, output, steps, extend)


def leave(run: PlannedRun, *, stamp=None, config=False, checkpoint=False, done: int | None = None) -> None:
    """A folder as a run would leave it; `stamp`: the record of commands to write (None: none)."""
    run.output.mkdir(parents=True, exist_ok=True)
    if stamp is not None:
        (run.output / STAMP).write_text(json.dumps(stamp))
    if config:
        (run.output / "config.yaml").write_text("# lightning-genae run; re-run with: ...\nmodel: ae\n")
    if checkpoint:
        (run.output / "checkpoints").mkdir(exist_ok=True)
        (run.output / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    if done is not None:
        (run.output / "summary.json").write_text(json.dumps({"global_step": done, "final_metrics": {}}))


def test_a_new_folder_trains_and_records_its_command(tmp_path):
    run = planned(tmp_path)
    assert run.start() == ("train", run.options, [run.options])


def test_the_same_commands_finished_run_is_reused_and_a_stopped_one_continues(tmp_path):
    run = planned(tmp_path)
    leave(run, stamp=[run.options], config=True, checkpoint=True)
    assert run.start() == ("resume", [*run.options, "--resume", "last"], [run.options])
    leave(run, done=4)
    assert run.start() == ("reuse", [], [run.options])


def test_a_record_of_an_earlier_version_is_read_as_one_command(tmp_path):
    run = planned(tmp_path)
    leave(run, stamp=["run.py", *run.options], config=True, checkpoint=True, done=4)
    assert read_stamp(run.output) == [run.options]
    assert run.start()[0] == "reuse"


def test_a_run_of_the_same_command_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    run = planned(tmp_path)
    leave(run, stamp=[run.options], config=True)
    assert run.start() == ("restart", [*run.options, "--overwrite"], [run.options])


@pytest.mark.parametrize("stamped_by_another", [False, True], ids=["no record", "another command's"])
def test_a_run_this_command_did_not_start_is_refused_before_any_training(tmp_path, stamped_by_another):
    run = planned(tmp_path)
    other = planned(tmp_path, lr="2e-3")
    leave(run, stamp=[other.options] if stamped_by_another else None, config=True, done=4)
    with pytest.raises(ValueError, match="holds a run (this script did not start|of another command)"):
        run.start()


def test_an_extended_run_is_continued_by_its_extension_and_never_taken_for_a_run_from_the_start(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoints/last.ckpt to continue; drop --extend"):
        planned(tmp_path, steps=8, extend=True).start()
    first = planned(tmp_path)
    leave(first, stamp=[first.options], config=True, checkpoint=True, done=4)
    longer = planned(tmp_path, steps=8, extend=True, lr="1e-4")
    assert longer.start() == (
        "resume",
        [*longer.options, "--resume", "last"],
        [first.options, longer.options],
    )
    leave(longer, stamp=[first.options, longer.options], done=8)
    assert longer.start()[0] == "reuse"
    # The extension's options from the start would be another run; the first command's is no longer there.
    for command in (planned(tmp_path, steps=8, lr="1e-4"), first):
        with pytest.raises(ValueError, match="holds a run (of another command|extended by --extend since)"):
            command.start()


def test_a_run_py_refusal_leaves_the_folders_record_as_it_was(tmp_path, monkeypatch):
    """run.py refused the run (exit 2, nothing written): a record made for it would make the refused command
    the owner of what the folder holds, or of the folder itself."""
    first = planned(tmp_path)
    leave(first, stamp=[first.options], config=True, checkpoint=True, done=4)
    monkeypatch.setattr(bench_runs, "run_command", lambda command: 2)
    longer = planned(tmp_path, steps=8, extend=True)
    with pytest.raises(SystemExit):
        train_planned(longer, "extension")
    assert read_stamp(first.output) == [first.options]
    fresh = PlannedRun(first.options, tmp_path / "fresh", 4)
    with pytest.raises(SystemExit):
        train_planned(fresh, "fresh")
    assert not (fresh.output / STAMP).exists()


@pytest.mark.parametrize("code", [1, 2])
def test_a_run_py_that_wrote_its_run_and_failed_keeps_the_record(tmp_path, monkeypatch, code):
    """Exit 2 is also an input error met mid-run (a plug-in metric's NaN at a validation), and exit 1 a
    failure: the run's files are there, so the record stays and the same command picks the run up."""
    run = planned(tmp_path)

    def fails_after_writing(command: list[str]) -> int:
        leave(run, config=True, checkpoint=True)
        return code

    monkeypatch.setattr(bench_runs, "run_command", fails_after_writing)
    with pytest.raises(SystemExit):
        train_planned(run, "run")
    assert read_stamp(run.output) == [run.options]
    assert run.start()[0] == "resume"
    # An extension that moved last.ckpt before failing keeps its entry: the run is no longer the first's.
    leave(run, done=4)
    longer = planned(tmp_path, steps=8, extend=True)

    def moves_the_checkpoint(command: list[str]) -> int:
        (run.output / "checkpoints" / "last.ckpt").write_bytes(b"ckpt at 6")
        return 2

    monkeypatch.setattr(bench_runs, "run_command", moves_the_checkpoint)
    with pytest.raises(SystemExit):
        train_planned(longer, "extension")
    assert read_stamp(run.output) == [run.options, longer.options]


def test_an_output_that_cannot_be_made_is_one_line(tmp_path, capsys):
    output = tmp_path / "dangling"
    output.symlink_to(tmp_path / "gone")
    with pytest.raises(SystemExit) as stopped:
        train_planned(PlannedRun(["--model", "ae"], output, 4), "run")
    assert stopped.value.code == 2 and "cannot be made" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("check", "message"),
    [
        (lambda parser: distinct(parser, [0, 0, 1], "--seeds"), "--seeds lists 0 more than once"),
        (lambda parser: distinct(parser, [], "--seeds"), "--seeds is empty"),
        (lambda parser: names(parser, "aae,", ["aae", "gan"], "--families"), "has an empty name"),
        (
            lambda parser: names(parser, "aae,vae", ["aae", "gan"], "--families"),
            "vae unknown; choose from aae",
        ),
    ],
)
def test_command_line_checks_are_one_line_and_exit_2(check, message, capsys):
    parser = argparse.ArgumentParser(prog="bench")
    with pytest.raises(SystemExit) as stopped:
        check(parser)
    err = capsys.readouterr().err
    assert (
        stopped.value.code == 2 and message in err and err.strip().splitlines()[-1].startswith("bench: error")
    )
