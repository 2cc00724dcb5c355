"""bench/reproduce_vae.py given again: it continues a stopped run, and refuses one it cannot continue."""

import importlib.util
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from lightning_genae.callbacks.stopping import StopOnSignal
from lightning_genae.checkpoint import CONFIG_KEY, RunCheckpoint
from lightning_genae.experiment.cli import main as run_main

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "reproduce_vae.py"


def load_script():
    # The bench scripts share bench/child_run.py, found where `python bench/NAME.py` finds it.
    if str(SCRIPT.parent) not in sys.path:
        sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("reproduce_vae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce_vae = load_script()


def run_in_process(command: list[str]) -> int:
    """run.py's work, done in this process: the command the script would start, given to run.py's main."""
    assert command[1] == "run.py"
    return run_main(command[2:])


def reproduce(data_dir: Path, output: Path, *options: str, runner=run_in_process) -> int:
    """The script's exit status, run with `options` (12 test images, k = 3, a checkpoint per iteration)."""
    argv = [
        "reproduce_vae.py", "--data-dir", str(data_dir), "--output", str(output),
        "--seeds", "0", "--test-images", "12", "--k", "3", "--eval-samples", "40", "--ckpt-every", "1",
        *options,
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.setattr(reproduce_vae, "run_command", runner)
        # The image metrics would first train a feature classifier on 55,000 images; these runs are about
        # their checkpoints.
        patch.setattr("lightning_genae.api.generative_metrics", lambda *args: None)
        try:
            reproduce_vae.main()
        except SystemExit as stop:
            return int(stop.code)
    return 0


def iteration_of(run_dir: Path) -> int:
    return RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "--checkpoint").iteration(1)


@pytest.fixture(scope="module")
def run_at_two(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A reproduction trained and scored at 2 iterations: (data folder, output folder). Tests that train
    it further work on a copy."""
    output = tmp_path_factory.mktemp("reproduce_vae")
    assert reproduce(mnist_data_dir, output, "--steps", "2") == 0
    assert iteration_of(output / "vae-seed0") == 2
    return mnist_data_dir, output


def copy_of(run_at_two: tuple[Path, Path], tmp_path: Path) -> Path:
    shutil.copytree(run_at_two[1], tmp_path / "copy")
    return tmp_path / "copy"


def test_a_run_stopped_part_way_continues_from_its_checkpoint_when_given_again(
    mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = StopOnSignal.on_train_batch_end

    def sigterm_after_iteration_2(self, trainer, *args) -> None:
        if trainer.global_step == 2:
            self.received = signal.SIGTERM
        original(self, trainer, *args)

    with monkeypatch.context() as patch:
        patch.setattr(StopOnSignal, "on_train_batch_end", sigterm_after_iteration_2)
        assert reproduce(mnist_data_dir, tmp_path, "--steps", "3") == 128 + signal.SIGTERM
    assert capsys.readouterr().err.splitlines()[-1] == "seed 0: run.py stopped with exit status 143 (SIGTERM)"
    run_dir = tmp_path / "vae-seed0"
    assert iteration_of(run_dir) == 2
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "3") == 0
    assert "seed 0: training to iteration 3, continuing its checkpoint at 2" in capsys.readouterr().out
    assert iteration_of(run_dir) == 3
    # Saved every --ckpt-every iterations, not only at the end.
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["ckpt_every"] == 1


def test_given_again_with_more_steps_a_finished_run_trains_on_and_then_is_only_scored(
    run_at_two: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    output = copy_of(run_at_two, tmp_path)
    capsys.readouterr()
    assert reproduce(run_at_two[0], output, "--steps", "3") == 0
    assert "seed 0: training to iteration 3, continuing its checkpoint at 2" in capsys.readouterr().out
    assert iteration_of(output / "vae-seed0") == 3
    assert reproduce(run_at_two[0], output, "--steps", "3") == 0
    again = capsys.readouterr().out
    assert "is at iteration 3 already" in again and "training to" not in again
    assert iteration_of(output / "vae-seed0") == 3


REFUSALS = {
    "past-steps": (["--steps", "1"], "is at iteration 2, past --steps 1; pass another --output"),
    "past-a-budget-point": (
        ["--steps", "4", "--budget-points", "1", "3"],
        "past --budget-points 1, whose score cannot be taken again; keep only --budget-points 3 to continue",
    ),
    "another-batch-size": (
        ["--steps", "4", "--batch-size", "32"],
        "reproduction: --batch-size 32 (checkpoint: 64)",
    ),
    "another-latent-dim": (
        ["--steps", "4", "--latent-dim", "20"],
        "reproduction: --latent-dim 20 (checkpoint: 50)",
    ),
    "another-schedule": (
        ["--steps", "4", "--lr-schedule", "cosine"],
        "--lr-schedule cosine (checkpoint: constant)",
    ),
    # A moved data folder may continue a run (its content is compared); one without the data is named.
    "a-data-folder-without-the-data": (
        ["--steps", "4", "--data-dir", "elsewhere"],
        "MNIST not found in elsewhere/MNIST/raw",
    ),
    "score-only-at-other-steps": (
        ["--steps", "5", "--score-only"],
        "is at iteration 2, not --steps 5; pass --steps 2",
    ),
    "finished-past-a-budget-point": (
        ["--steps", "2", "--budget-points", "1"],
        "past --budget-points 1, whose score cannot be taken again; drop --budget-points to score it",
    ),
    # Options after -- are the runs' own: a run of other nets is another run.
    "other-nets": (["--steps", "4", "--", "--vae-nets", "paper"], "--vae-nets paper (checkpoint: conv)"),
    "no-steps": (["--steps", "0"], "--steps must be at least 1, got 0"),
    "no-draws": (["--steps", "2", "--k", "0"], "--k must be at least 1, got 0"),
    "no-test-images": (["--steps", "2", "--test-images", "0"], "--test-images must be at least 1, got 0"),
}


@pytest.mark.parametrize(("options", "expected"), REFUSALS.values(), ids=REFUSALS.keys())
def test_a_run_that_cannot_be_continued_or_scored_is_refused_in_one_line_before_anything_trains(
    run_at_two: tuple[Path, Path], options: list[str], expected: str, capsys: pytest.CaptureFixture
) -> None:
    data_dir, output = run_at_two
    checkpoint = output / "vae-seed0" / "checkpoints" / "last.ckpt"
    before = checkpoint.read_bytes()
    capsys.readouterr()
    assert reproduce(data_dir, output, *options) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and expected in err, err
    assert not out
    assert checkpoint.read_bytes() == before


def test_options_after_the_separator_go_to_every_run_and_define_the_run_continued(
    mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "1", "--", "--vae-nets", "paper") == 0
    run_dir = tmp_path / "vae-seed0"
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["vae_nets"] == "paper"
    assert "run.py options --vae-nets paper" in capsys.readouterr().out
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "2", "--", "--vae-nets", "paper") == 0
    assert "continuing its checkpoint at 1" in capsys.readouterr().out
    assert iteration_of(run_dir) == 2


def test_a_cosine_run_is_continued_only_to_the_length_it_anneals_to(
    mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "2", "--lr-schedule", "cosine") == 0
    capsys.readouterr()
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "3", "--lr-schedule", "cosine") == 2
    err = capsys.readouterr().err.strip()
    assert (
        "anneals its learning rate to 0 at iteration 2; pass --steps 2" in err and len(err.splitlines()) == 1
    )


@pytest.mark.parametrize(
    ("make", "options", "expected"),
    [
        (
            lambda run_dir: (run_dir / "metrics.csv").write_text("step\n"),
            ["--steps", "2"],
            "holds a run without last.ckpt to continue; remove it, or pass another --output",
        ),
        (lambda run_dir: None, ["--steps", "2", "--score-only"], "does not exist; train the run first"),
    ],
    ids=["a-folder-without-a-checkpoint", "score-only-without-a-run"],
)
def test_a_run_folder_without_a_checkpoint_is_refused_and_left_as_it_is(
    make, options, expected, mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "vae-seed0"
    run_dir.mkdir()
    make(run_dir)
    before = sorted(path.name for path in run_dir.iterdir())
    assert reproduce(mnist_data_dir, tmp_path, *options) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert sorted(path.name for path in run_dir.iterdir()) == before


@pytest.mark.parametrize(
    ("status", "exit_code", "says"),
    [
        (2, 2, "run.py stopped with exit status 2"),
        (-signal.SIGKILL, 128 + 9, "run.py was stopped by SIGKILL"),
    ],
    ids=["an-exit-status", "a-signal"],
)
def test_a_failed_run_py_ends_the_script_with_its_status_and_one_line(
    status, exit_code, says, mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "2", runner=lambda command: status) == exit_code
    assert capsys.readouterr().err.strip() == f"seed 0: {says}"


CHILD = """
import os, pathlib, signal, sys, time
def saved(number, frame):
    pathlib.Path(sys.argv[1]).write_text(f"{signal.Signals(number).name} {os.getpgid(0)}")
    sys.exit(128 + number)
signal.signal(signal.SIGINT, saved)
signal.signal(signal.SIGTERM, saved)
pathlib.Path(sys.argv[2]).write_text("ready")
time.sleep(300)
"""


@pytest.mark.parametrize(
    ("received", "sent", "to_a_thread"),
    [
        (signal.SIGINT, signal.SIGINT, False),
        (signal.SIGTERM, signal.SIGTERM, False),
        (signal.SIGHUP, signal.SIGTERM, False),
        # The kernel may hand a process's signal to any of its threads (torch's, in a bench script).
        (signal.SIGINT, signal.SIGINT, True),
    ],
    ids=["ctrl-c", "sigterm", "hang-up", "ctrl-c-taken-by-another-thread"],
)
def test_a_signal_to_the_script_is_passed_on_once_to_run_py_in_its_own_process_group(
    received, sent, to_a_thread, tmp_path
):
    marker, ready = tmp_path / "saved", tmp_path / "ready"
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

    def signal_once_ready() -> None:
        deadline = time.monotonic() + 120
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        if to_a_thread:
            signal.pthread_kill(threading.get_ident(), received)
        else:
            os.kill(os.getpid(), received)

    sender = threading.Thread(target=signal_once_ready, daemon=True)
    sender.start()
    command = [sys.executable, "-c", CHILD, str(marker), str(ready)]
    # The child stops on its own terms (here: notes the signal and exits as run.py does).
    started = time.time()
    assert reproduce_vae.run_command(command) == 128 + sent
    # Passed on at once, not when the child would have ended by itself (it sleeps 300 s); the bound leaves
    # room for a loaded machine, and a miss says which side was late.
    took = {path.name: round(path.stat().st_mtime - started, 1) for path in (ready, marker)}
    assert time.time() - started < 60, f"seconds from the start to each file: {took}"
    sender.join()
    name, group = marker.read_text().split()
    assert name == sent.name
    # Its own group: a terminal's Ctrl-C reaches only the script, which passes it on once.
    assert int(group) != os.getpgid(0)
    assert {number: signal.getsignal(number) for number in handlers} == handlers


def edited_copy(run_at_two: tuple[Path, Path], tmp_path: Path, edit) -> Path:
    """A copy of the reproduction whose checkpoint's stored configuration `edit` changed in place."""
    output = copy_of(run_at_two, tmp_path)
    path = output / "vae-seed0" / "checkpoints" / "last.ckpt"
    contents = torch.load(path, map_location="cpu", weights_only=True)
    edit(contents[CONFIG_KEY])
    torch.save(contents, path)
    return output


def test_an_option_the_checkpoint_does_not_record_is_not_compared(run_at_two, tmp_path, capsys) -> None:
    # A run of a version without --lr-schedule records no schedule: it trained at the constant rate.
    output = edited_copy(run_at_two, tmp_path, lambda config: config.pop("lr_schedule"))
    assert reproduce(run_at_two[0], output, "--steps", "2", "--score-only") == 0
    assert "seed 0 at 2 iterations: test NLL" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changed", "says"),
    [
        ({"width": 32}, "--width 64 (checkpoint: 32); pass another --output"),
        ({"lr": 0.002}, "--lr 0.001 (checkpoint: 0.002); pass another --output"),
    ],
    ids=["width", "a-learning-rate-a-resume-may-change"],
)
def test_a_run_trained_with_other_options_than_the_scripts_is_refused(
    changed, says, run_at_two, tmp_path, capsys
):
    # Trained by hand with run.py at another width, say, it is not this reproduction's run.
    output = edited_copy(run_at_two, tmp_path, lambda config: config.update(changed))
    capsys.readouterr()
    assert reproduce(run_at_two[0], output, "--steps", "2", "--score-only") == 2
    err = capsys.readouterr().err.strip()
    assert "is another run than this reproduction: " in err and says in err and len(err.splitlines()) == 1


def test_a_run_that_records_no_schedule_is_taken_as_the_constant_one(run_at_two, tmp_path, capsys) -> None:
    output = edited_copy(run_at_two, tmp_path, lambda config: config.pop("lr_schedule"))
    capsys.readouterr()
    assert reproduce(run_at_two[0], output, "--steps", "2", "--score-only", "--lr-schedule", "cosine") == 2
    assert "--lr-schedule cosine (checkpoint: constant)" in capsys.readouterr().err
