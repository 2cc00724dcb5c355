"""Faults a cluster job meets, end to end: a process killed without warning (kill -9, an OOM kill, a lost
node) is continued with `--resume last` from its last periodic checkpoint, and every fault in
tests/cases/faults.csv names a test that exists."""

from __future__ import annotations

import csv
import json
import os
import re
import shlex
import signal
import time
from pathlib import Path

import pytest
import torch
from forked import Forked, run_forked
from tiny import TINY_RUN

from lightning_genae.experiment.cli import main
from lightning_genae.experiment.run_lock import LOCK_FILE

REPO = Path(__file__).resolve().parents[2]


def stored_step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])


@pytest.mark.slow
def test_a_run_killed_without_warning_continues_from_its_last_checkpoint(tmp_path, capsys):
    output = tmp_path / "run"
    last = output / "checkpoints" / "last.ckpt"
    arguments = ["--model", "ae", *TINY_RUN, "--max-steps", "100000", "--output", str(output)]
    victim = Forked(REPO / "run.py", arguments, cwd=tmp_path)
    try:
        deadline = time.time() + 180
        # Killed after its second periodic checkpoint, so a checkpoint was replaced at least once before.
        while time.time() < deadline and victim.poll() is None:
            if last.is_file() and stored_step(last) >= 6:
                break
            time.sleep(0.2)
        assert victim.poll() is None, victim.stderr
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
    killed_at = stored_step(last)
    # The killed process could not release its lock: the kernel let go of it, and the resume takes it over.
    assert (output / LOCK_FILE).is_file()

    assert main(["--resume", "last", "--output", str(output), "--max-steps", str(killed_at + 4)]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert stored_step(last) == killed_at + 4
    assert not (output / LOCK_FILE).exists()
    with (output / "metrics.csv").open(newline="") as file:
        training_steps = [int(float(row["step"])) for row in csv.DictReader(file) if row.get("train/loss")]
    # Rows the killed process logged after its checkpoint were dropped, not repeated by the resumed run.
    assert len(training_steps) == len(set(training_steps)), training_steps
    assert max(training_steps) == killed_at + 3


# Killed (as by kill -9) as the validation at KILLED_AT starts, an iteration that also saves last.ckpt.
KILLED_AT = 6
KILL_DURING_VALIDATION = f"""
import os, sys
from pytorch_lightning import Callback
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

class KillAtValidation(Callback):
    def on_validation_start(self, trainer, pl_module):
        if pl_module.iteration == {KILLED_AT}:
            os._exit(9)

build = train.build_callbacks
train.build_callbacks = lambda *args: [*build(*args), KillAtValidation()]
sys.exit(main(sys.argv[1:]))
"""


def resume_and_compare_with_the_whole_run(stopped: Path, whole: Path) -> None:
    """`--resume last` the stopped run: every row the resumed run wrote, a validation it ran again included,
    is the uninterrupted run's in `whole`."""
    assert main(["--resume", "last", "--output", str(stopped)]) == 0
    assert (stopped / "metrics.csv").read_bytes() == (whole / "metrics.csv").read_bytes()


# The run the tests below stop and resume; `whole` is that run uninterrupted, trained once and only read.
NINE_ITERATIONS = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "9"]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("whole") / "run"
    assert main([*NINE_ITERATIONS, "--output", str(output)]) == 0
    return output


@pytest.mark.slow
def test_a_run_killed_during_a_validation_runs_that_validation_when_resumed(tmp_path, whole):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    victim = run_forked(
        KILL_DURING_VALIDATION, [*NINE_ITERATIONS, "--output", str(killed)], env=env, cwd=REPO
    )
    assert victim.returncode == 9, victim.stderr
    # The checkpoint of the killed validation's iteration waits for that validation, so none was saved.
    assert stored_step(killed / "checkpoints" / "last.ckpt") == KILLED_AT - 3
    resume_and_compare_with_the_whole_run(killed, whole)
    with (killed / "metrics.csv").open(newline="") as file:
        validated = [int(row["step"]) for row in csv.DictReader(file) if row.get("val/loss")]
    assert validated == [3, KILLED_AT, 9]


# SIGTERM during iteration ITERATION's training step, or with IN_VALIDATION as that iteration validates;
# with KILL, also killed as that iteration validates.
SIGTERM_IN_AN_ITERATION = """
import os, signal, sys
from pytorch_lightning import Callback
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

ITERATION = int(os.environ["ITERATION"])
IN_VALIDATION = bool(os.environ.get("IN_VALIDATION"))

class TermDuring(Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module.iteration == ITERATION - 1 and not IN_VALIDATION:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_validation_start(self, trainer, pl_module):
        if pl_module.iteration == ITERATION and os.environ.get("KILL"):
            os._exit(9)
        if pl_module.iteration == ITERATION and IN_VALIDATION and not trainer.sanity_checking:
            os.kill(os.getpid(), signal.SIGTERM)

build = train.build_callbacks
train.build_callbacks = lambda *args: [*build(*args), TermDuring()]
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("killed_in_the_validation", [False, True])
def test_a_signal_in_an_iteration_that_validates_stops_after_that_validation(
    tmp_path, whole, killed_in_the_validation
):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITERATION": str(KILLED_AT)}
    if killed_in_the_validation:  # SLURM's kill after its grace period, or a second Ctrl-C
        env["KILL"] = "1"
    stopped = tmp_path / "stopped"
    victim = run_forked(
        SIGTERM_IN_AN_ITERATION, [*NINE_ITERATIONS, "--output", str(stopped)], env=env, cwd=REPO
    )
    if killed_in_the_validation:
        # Nothing was saved for the signal: the previous periodic checkpoint stays.
        assert victim.returncode == 9, victim.stderr
        assert stored_step(stopped / "checkpoints" / "last.ckpt") == KILLED_AT - 3
    else:
        assert victim.returncode == 128 + signal.SIGTERM, victim.stderr
        assert f"stopped by SIGTERM after iteration {KILLED_AT}" in victim.stderr
        assert stored_step(stopped / "checkpoints" / "last.ckpt") == KILLED_AT
    # The iteration's validation ran once, before the stop or after the resume.
    resume_and_compare_with_the_whole_run(stopped, whole)


@pytest.mark.slow
def test_a_signal_during_a_validation_stops_after_it(tmp_path, whole):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITERATION": str(KILLED_AT), "IN_VALIDATION": "1"}
    stopped = tmp_path / "stopped"
    victim = run_forked(
        SIGTERM_IN_AN_ITERATION, [*NINE_ITERATIONS, "--output", str(stopped)], env=env, cwd=REPO
    )
    assert victim.returncode == 128 + signal.SIGTERM, victim.stderr
    assert f"stopped by SIGTERM after iteration {KILLED_AT}" in victim.stderr
    assert stored_step(stopped / "checkpoints" / "last.ckpt") == KILLED_AT
    resume_and_compare_with_the_whole_run(stopped, whole)


@pytest.mark.slow
@pytest.mark.parametrize("during_its_validation", [False, True])
def test_a_signal_in_the_last_iteration_lets_the_run_finish(tmp_path, during_its_validation):
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "6"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITERATION": "6"}
    if during_its_validation:
        env["IN_VALIDATION"] = "1"
    finished = run_forked(
        SIGTERM_IN_AN_ITERATION, [*run, "--output", str(tmp_path / "run")], env=env, cwd=REPO
    )
    # A resume would have nothing left to train: the run ends as a finished one.
    assert finished.returncode == 0, finished.stderr
    assert "the stop signal came in the last iteration: finishing the run" in finished.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


def test_a_signal_noted_in_training_saves_nothing_in_a_later_validation(tmp_path):
    # The chosen checkpoint's evaluation validates with its weights loaded on the same Trainer: saved then,
    # last.ckpt held best.ckpt's weights beside the final step and optimizer state.
    from types import SimpleNamespace

    from pytorch_lightning.trainer.states import TrainerFn

    from lightning_genae.callbacks.stopping import StopOnSignal

    callback = StopOnSignal(tmp_path / "last.ckpt", "run it again")
    callback.received = signal.SIGTERM
    saved = []
    state = SimpleNamespace(fn=TrainerFn.VALIDATING)
    one_process = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)
    trainer = SimpleNamespace(
        sanity_checking=False, state=state, strategy=one_process, save_checkpoint=saved.append
    )
    callback.on_validation_end(trainer, None)
    assert saved == [] and not callback._stop_due
    state.fn = TrainerFn.FITTING
    callback.on_validation_end(trainer, None)
    assert saved == [tmp_path / "last.ckpt"] and callback._stop_due


# Ctrl-C as the final evaluation reaches the test split, once training is over.
INTERRUPT_IN_THE_FINAL_EVALUATION = """
import os, signal, sys
from pytorch_lightning import Callback
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

class IntDuringTest(Callback):
    def on_test_start(self, trainer, pl_module):
        os.kill(os.getpid(), signal.SIGINT)

build = train.build_callbacks
train.build_callbacks = lambda *args: [*build(*args), IntDuringTest()]
sys.exit(main(sys.argv[1:]))
"""


# With 4 iterations and --eval-every 3, the iteration before the last validated other weights; an epoch of
# 128 images in batches of 32 is 4 iterations too.
@pytest.mark.parametrize(
    ("budget", "steps"),
    [
        (["--max-steps", "3"], "3"),
        (["--max-steps", "4"], "4"),
        (["--max-epochs", "1", "--train-size", "128"], "4"),
    ],
    ids=["validating-every-3-of-3", "validating-every-3-of-4", "one-epoch-of-4"],
)
def test_ctrl_c_in_the_final_evaluation_stops_with_130_and_a_resume_evaluates_alone(tmp_path, budget, steps):
    run_dir = tmp_path / "my run"  # the printed command must survive a space
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", *budget]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    stopped = run_forked(
        INTERRUPT_IN_THE_FINAL_EVALUATION, [*run, "--output", str(run_dir)], env=env, cwd=REPO
    )
    # Lightning would end with exit 1 (a failed run, to a grid) and ignore any later Ctrl-C.
    assert stopped.returncode == 130, stopped.stderr
    assert "stopped by SIGINT during the final evaluation" in stopped.stderr
    assert "Traceback" not in stopped.stderr, stopped.stderr
    assert not (run_dir / "summary.json").exists()
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert stored_step(checkpoint) == int(steps)
    # The resume it names, pasted as printed, runs the final evaluation alone.
    printed = stopped.stderr.split("finish the run (summary.json) with: python run.py ")[1].split(", or ")[0]
    assert shlex.split(printed) == ["--output", str(run_dir), "--resume", "last"]
    assert main([*shlex.split(printed), *budget[:2]]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == int(steps) and "test/mse" in summary["final_metrics"]
    # As the uninterrupted run: its history (no validation logged twice) and its final metrics (the last
    # training values included).
    whole = tmp_path / "whole"
    assert main([*run, "--output", str(whole)]) == 0
    assert (run_dir / "metrics.csv").read_bytes() == (whole / "metrics.csv").read_bytes()
    whole_summary = json.loads((whole / "summary.json").read_text())
    assert summary["final_metrics"] == whole_summary["final_metrics"]
    # The checkpoint chosen on validation and what the validation was measured on, as recorded by a run that
    # trained nothing in this invocation.
    for record in (summary, whole_summary):
        record["selected_checkpoint"].pop("path")
    assert summary["selected_checkpoint"] == whole_summary["selected_checkpoint"]
    assert summary["evaluation"] == whole_summary["evaluation"]
    # Once finished, nothing is left to resume.
    assert main(["--output", str(run_dir), "--resume", "last", *budget[:2]]) == 2


@pytest.mark.slow
def test_a_grid_stops_after_a_cell_whose_last_iteration_took_the_stop_signal(tmp_path):
    grid = tmp_path / "grid"
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITERATION": "4"}
    stopped = run_forked(
        SIGTERM_IN_AN_ITERATION, [*run, "--seeds", "0,1", "--output", str(grid)], env=env, cwd=REPO
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "finished (the signal came in its last iteration)" in stopped.stderr
    cells = sorted(path.name for path in grid.iterdir() if path.is_dir())
    assert len(cells) == 1 and (grid / cells[0] / "summary.json").is_file(), cells
    # The grid command again: the signal came in the last cell's last iteration, so the grid just ends,
    # with its report.
    env["ITERATION"] = "4"
    ended = run_forked(
        SIGTERM_IN_AN_ITERATION, [*run, "--seeds", "0,1", "--output", str(grid)], env=env, cwd=REPO
    )
    assert ended.returncode == 0, ended.stderr
    assert (grid / "ablation.md").is_file()


def test_a_grid_stopped_in_a_cell_names_the_grid_command_to_continue_it(tmp_path):
    grid = tmp_path / "grid"
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "4"]
    run += ["--seeds", "0,1", "--output", str(grid)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ITERATION": "2"}
    stopped = run_forked(SIGTERM_IN_AN_ITERATION, run, env=env, cwd=REPO)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    # Re-running the grid resumes this cell and runs the others; resuming the cell alone would not.
    assert stopped.stderr.rstrip().endswith(f"continue with: python run.py {shlex.join(run)}"), stopped.stderr


def test_every_test_the_fault_cases_name_exists():
    with (REPO / "tests" / "cases" / "faults.csv").open(newline="") as file:
        named = [tuple(row["test"].split("::")) for row in csv.DictReader(file)]
    assert len(named) >= 10, "every fault case should name the test behind it"
    missing = [
        f"{path}::{name}"
        for path, name in named
        if not re.search(rf"^def {name}\(", (REPO / path).read_text(), re.MULTILINE)
    ]
    assert not missing, missing


SIGTERM_BEFORE_TRAINING = """
import os, signal, sys
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

fit = train._fit

def term_first(*args, **kwargs):
    # config.yaml is written and the folder claimed: a job's rendezvous or a classifier's training waits here.
    os.kill(os.getpid(), getattr(signal, os.environ.get("SIGNAL", "SIGTERM")))
    return fit(*args, **kwargs)

train._fit = term_first
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["SIGTERM", "SIGINT"])
def test_a_stop_signal_before_training_keeps_nothing_so_the_requeued_job_starts_afresh(tmp_path, name):
    """Python's default for SIGTERM ends the process at once, and Ctrl-C with a traceback: the folder would
    keep config.yaml and its lock, and a requeued job be refused as a started run."""
    run_dir = tmp_path / "run"
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SIGNAL": name}
    stopped = run_forked(SIGTERM_BEFORE_TRAINING, [*run, "--output", str(run_dir)], env=env, cwd=REPO)
    assert stopped.returncode == 128 + getattr(signal, name), stopped.stderr
    assert f"stopped by {name} before training started; nothing of the run was kept; start it again" in (
        stopped.stderr
    )
    assert "Traceback" not in stopped.stderr and not run_dir.exists()
    assert main([*run, "--output", str(run_dir)]) == 0


SIGTERM_AT = """
import os, signal, sys
import lightning_genae.experiment.train as train
from lightning_genae.experiment.cli import main

name = os.environ["AT"]
original = getattr(train, name)

def term_first(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)
    return original(*args, **kwargs)

setattr(train, name, term_first)
sys.exit(main(sys.argv[1:]))
"""


def test_a_stop_signal_before_a_resume_trains_keeps_the_run_and_names_the_resume(tmp_path):
    run_dir = tmp_path / "run"
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu"]
    assert main([*run, "--max-steps", "3", "--output", str(run_dir)]) == 0
    before = sorted(path.relative_to(run_dir) for path in run_dir.rglob("*"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AT": "_fit"}
    stopped = run_forked(
        SIGTERM_AT, ["--output", str(run_dir), "--resume", "last", "--max-steps", "5"], env=env, cwd=REPO
    )
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr
    assert "stopped by SIGTERM before training resumed; continue with: python run.py" in stopped.stderr
    assert sorted(path.relative_to(run_dir) for path in run_dir.rglob("*")) == before


def test_a_stop_signal_once_the_run_is_finished_is_pythons_own_again(tmp_path):
    """It was taken for a stop before the final evaluation, advising a resume that had nothing to do."""
    run_dir = tmp_path / "run"
    run = ["--model", "ae", *TINY_RUN, "--accelerator", "cpu", "--max-steps", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AT": "finish_loggers"}
    stopped = run_forked(SIGTERM_AT, [*run, "--output", str(run_dir)], env=env, cwd=REPO)
    assert stopped.returncode == -signal.SIGTERM, stopped.stderr
    assert "stopped by" not in stopped.stderr and (run_dir / "summary.json").is_file()


def test_a_checkpoint_write_that_fails_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    """Written beside its target and renamed over it: a write stopped part-way (a full disk, a kill during a
    copy from another filesystem) leaves the earlier file as it was and no temporary file."""
    from lightning_genae.checkpoint import AtomicCheckpointIO
    from lightning_genae.errors import WriteFailed

    target = tmp_path / "checkpoints" / "last.ckpt"
    io = AtomicCheckpointIO("python run.py --output run --resume last")
    io.save_checkpoint({"global_step": 3}, target)
    before = target.read_bytes()

    write_bytes = Path.write_bytes

    def write_half_then_fail(self, data):
        write_bytes(self, bytes(data)[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", write_half_then_fail)
    with pytest.raises(WriteFailed) as caught:
        io.save_checkpoint({"global_step": 6}, target)
    message = str(caught.value)
    assert "No space left on device" in message and "\n" not in message
    assert message.endswith("continue with: python run.py --output run --resume last")
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_full_disk_mid_run_stops_with_one_line_and_exit_2_and_a_resumable_last_checkpoint(
    tmp_path, monkeypatch, capsys
):
    import lightning_genae.cache as cache

    output = tmp_path / "run"
    last = output / "checkpoints" / "last.ckpt"
    original = cache.write_atomically
    writes = []

    def full_after_the_first_checkpoint(path, write, **how):
        writes.append(Path(path).name)
        if Path(path).suffix == ".ckpt" and writes.count("last.ckpt") > 1:
            raise OSError(28, "No space left on device")
        return original(path, write, **how)

    monkeypatch.setattr("lightning_genae.cache.write_atomically", full_after_the_first_checkpoint)
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "9", "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: could not write the checkpoint ") and "No space left" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert stored_step(last) == 3
    monkeypatch.setattr("lightning_genae.cache.write_atomically", original)
    assert main(["--resume", "last", "--output", str(output), "--max-steps", "9"]) == 0


def test_a_full_disk_met_by_any_other_write_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    """metrics.csv's rows are appended while the run trains (inside Lightning's loop): a full disk there is
    one line too, and the last checkpoint stays."""
    import errno

    from lightning_genae.experiment.loggers import RunFolderCSVLogger

    output = tmp_path / "run"
    save = RunFolderCSVLogger.save
    saves = []

    def full_after_a_few_saves(self):
        saves.append(1)
        if len(saves) > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(output / "metrics.csv"))
        return save(self)

    monkeypatch.setattr(RunFolderCSVLogger, "save", full_after_a_few_saves)
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "30", "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not write (OSError: [Errno 28] No space left on device")
    assert "\n" not in err
    assert stored_step(output / "checkpoints" / "last.ckpt") >= 3


def test_a_runs_checkpoints_take_the_users_umask(tmp_path):
    """Written as a new file would be: a user whose umask keeps files private gets private checkpoints."""
    from lightning_genae.checkpoint import AtomicCheckpointIO

    previous = os.umask(0o077)
    try:
        AtomicCheckpointIO("unused").save_checkpoint({"global_step": 1}, tmp_path / "last.ckpt")
    finally:
        os.umask(previous)
    assert (tmp_path / "last.ckpt").stat().st_mode & 0o777 == 0o600


def test_best_ckpt_is_saved_before_last_ckpt_at_an_iteration_that_validates(tmp_path, monkeypatch):
    """Killed between the two saves, the run resumes from the previous last.ckpt and weighs that
    validation's candidate again; saved the other way round, it would resume past the validation and the
    candidate would never be weighed (best.ckpt staying an earlier, worse one). last.ckpt has two savers at
    a validation's end: the periodic save, and StopOnSignal's when a signal stops the run there."""
    import lightning_genae.experiment.train as train
    from lightning_genae.callbacks.checkpoints import BestCheckpoint, PeriodicLastCheckpoint
    from lightning_genae.callbacks.grouping import HookGroup
    from lightning_genae.callbacks.stopping import StopOnSignal

    savers = (BestCheckpoint, PeriodicLastCheckpoint, StopOnSignal)
    fit, order = train._fit, []

    def recording(trainer, *args, **kwargs):
        fit(trainer, *args, **kwargs)
        # The order Lightning calls the callbacks in, a group's members in their place.
        for callback in trainer.callbacks:
            members = callback.members if isinstance(callback, HookGroup) else [callback]
            order.extend(type(member) for member in members if type(member) in savers)

    monkeypatch.setattr(train, "_fit", recording)
    assert main(["--model", "ae", *TINY_RUN, "--max-steps", "3", "--output", str(tmp_path / "run")]) == 0
    assert order[0] is BestCheckpoint and set(order[1:]) == {PeriodicLastCheckpoint, StopOnSignal}
