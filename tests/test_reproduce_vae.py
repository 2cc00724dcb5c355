"""bench/reproduce_vae.py given again: it continues a stopped run, and refuses one it cannot continue."""

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.cli import main as run_main

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "reproduce_vae.py"


def load_script():
    spec = importlib.util.spec_from_file_location("reproduce_vae", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


reproduce_vae = load_script()


def run_in_process(command: list[str], stdout: int) -> subprocess.CompletedProcess:
    """run.py's work, done in this process: the command the script would start, given to run.py's main."""
    assert command[1] == "run.py"
    return subprocess.CompletedProcess(command, run_main(command[2:]))


def reproduce(data_dir: Path, output: Path, *options: str) -> int:
    """The script's exit status, run with `options` (12 test images, k = 3, a checkpoint per iteration)."""
    argv = [
        "reproduce_vae.py", "--data-dir", str(data_dir), "--output", str(output),
        "--seeds", "0", "--test-images", "12", "--k", "3", "--eval-samples", "40", "--ckpt-every", "1",
        *options,
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        patch.setattr(
            reproduce_vae, "subprocess", SimpleNamespace(run=run_in_process, DEVNULL=subprocess.DEVNULL)
        )
        # The image metrics would first train a feature classifier on 55,000 images; these runs are about
        # their checkpoints.
        patch.setattr("lightning_genae.trainer.generative_metrics", lambda *args: None)
        try:
            reproduce_vae.main()
        except SystemExit as stop:
            return int(stop.code)
    return 0


def iteration_of(run_dir: Path) -> int:
    return RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "--checkpoint").iteration(1)


@pytest.fixture(scope="module")
def run_at_two(mnist_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A reproduction trained and scored at 2 iterations: (data folder, output folder)."""
    output = tmp_path_factory.mktemp("reproduce_vae")
    assert reproduce(mnist_data_dir, output, "--steps", "2") == 0
    assert iteration_of(output / "vae-seed0") == 2
    return mnist_data_dir, output


def test_given_again_with_more_steps_the_run_continues_from_its_checkpoint(
    run_at_two: tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    data_dir, output = run_at_two
    capsys.readouterr()
    assert reproduce(data_dir, output, "--steps", "3") == 0
    assert "seed 0: training to iteration 3, continuing its checkpoint at 2" in capsys.readouterr().out
    assert iteration_of(output / "vae-seed0") == 3
    # Given once more, the finished run is scored as it is, not trained again.
    assert reproduce(data_dir, output, "--steps", "3") == 0
    again = capsys.readouterr().out
    assert "is at iteration 3 already" in again and "training to" not in again
    assert iteration_of(output / "vae-seed0") == 3


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--steps", "1"], "past --steps 1; pass another --output"),
        (["--steps", "4", "--budget-points", "1"], "past --budget-points 1; pass another --output"),
        (["--steps", "4", "--batch-size", "32"], "not --batch-size 32; pass --batch-size 64"),
        (["--steps", "5", "--score-only"], "not --steps 5; pass --steps"),
    ],
    ids=["past-steps", "past-a-budget-point", "another-batch-size", "score-only-at-other-steps"],
)
def test_a_run_that_cannot_be_continued_or_scored_is_refused_in_one_line_before_anything_trains(
    run_at_two: tuple[Path, Path], options: list[str], expected: str, capsys: pytest.CaptureFixture
) -> None:
    data_dir, output = run_at_two
    checkpoint = output / "vae-seed0" / "checkpoints" / "last.ckpt"
    before = checkpoint.read_bytes()
    capsys.readouterr()
    assert reproduce(data_dir, output, *options) == 2
    out, err = capsys.readouterr()
    assert expected in err.splitlines()[-1] and "training to" not in out
    assert checkpoint.read_bytes() == before


def test_a_run_folder_without_a_checkpoint_is_refused_and_left_as_it_is(
    mnist_data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run_dir = tmp_path / "vae-seed0"
    run_dir.mkdir()
    (run_dir / "metrics.csv").write_text("step\n")
    assert reproduce(mnist_data_dir, tmp_path, "--steps", "2") == 2
    assert (
        capsys.readouterr()
        .err.splitlines()[-1]
        .endswith("holds a run without last.ckpt to continue; remove it, or pass another --output")
    )
    assert sorted(path.name for path in run_dir.iterdir()) == ["metrics.csv"]
