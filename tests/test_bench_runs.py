"""bench/bench_runs.py: a reproduction script's runs, found again by the same command after a stop, and
its command line checked before anything trains."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH) not in sys.path:  # where `python bench/NAME.py` finds its siblings
    sys.path.insert(0, str(BENCH))

from bench_runs import STAMP, PlannedRun, distinct, names  # noqa: E402


def planned(tmp_path: Path, steps: int = 4, extend: bool = False) -> PlannedRun:
    output = tmp_path / "run"
    return PlannedRun(
        ["--model", "ae", "--max-steps", str(steps), "--output", str(output)], output, steps, extend
    )


def leave(
    run: PlannedRun, *, stamp: bool, config: bool = False, checkpoint: bool = False, done: int | None = None
):
    """A folder as a run of `run`'s script (stamped) or another would leave it."""
    run.output.mkdir(parents=True, exist_ok=True)
    if stamp:
        (run.output / STAMP).write_text(json.dumps(run.options))
    if config:
        (run.output / "config.yaml").write_text("# lightning-genae run; re-run with: ...\nmodel: ae\n")
    if checkpoint:
        (run.output / "checkpoints").mkdir(exist_ok=True)
        (run.output / "checkpoints" / "last.ckpt").write_bytes(b"ckpt")
    if done is not None:
        (run.output / "summary.json").write_text(json.dumps({"global_step": done}))


def test_a_new_folder_trains(tmp_path):
    assert planned(tmp_path).start() == ("train", planned(tmp_path).options)


def test_the_same_commands_finished_run_is_reused_and_a_stopped_one_continues(tmp_path):
    run = planned(tmp_path)
    leave(run, stamp=True, config=True, checkpoint=True)
    assert run.start() == ("resume", [*run.options, "--resume", "last"])
    leave(run, stamp=True, done=4)
    assert run.start() == ("reuse", [])


def test_a_run_of_the_same_command_stopped_before_its_first_checkpoint_starts_again(tmp_path):
    run = planned(tmp_path)
    leave(run, stamp=True, config=True)
    assert run.start() == ("restart", [*run.options, "--overwrite"])


@pytest.mark.parametrize("stamped_by_another", [False, True], ids=["no record", "another command's"])
def test_a_run_this_command_did_not_start_is_refused_before_any_training(tmp_path, stamped_by_another):
    run = planned(tmp_path)
    leave(
        planned(tmp_path, steps=8) if stamped_by_another else run,
        stamp=stamped_by_another,
        config=True,
        done=8,
    )
    with pytest.raises(ValueError, match="holds a run this command did not start"):
        run.start()


def test_extend_continues_the_folders_run_and_needs_its_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="holds no checkpoints/last.ckpt to continue; drop --extend"):
        planned(tmp_path, steps=8, extend=True).start()
    leave(planned(tmp_path), stamp=True, config=True, checkpoint=True, done=4)
    longer = planned(tmp_path, steps=8, extend=True)
    assert longer.start() == ("resume", [*longer.options, "--resume", "last"])
    leave(longer, stamp=True, done=8)  # the extension finished: run again, it is reused
    assert longer.start() == ("reuse", [])


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
