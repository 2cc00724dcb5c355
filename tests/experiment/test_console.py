"""What a run prints: project lines and an iteration-counted progress bar, none of Lightning's chatter."""

import logging
import re
import warnings
from pathlib import Path

import pytest
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.utilities import rank_zero_warn
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from tiny import TINY_RUN

from lightning_genae.callbacks import progress_bar
from lightning_genae.callbacks.progress_bar import IterationProgressBar
from lightning_genae.experiment.cli import main
from lightning_genae.progress import PhaseProgress, quiet_lightning, say

TINY = TINY_RUN + ["--eval-samples", "50"]
CHATTER = ("GPU available", "TPU available", "Tip", "Trainer.fit` stopped", "Epoch", "Total params", "┃")


@pytest.fixture()
def every_iteration(monkeypatch: pytest.MonkeyPatch) -> None:
    """A progress line per iteration (not a terminal here), so the lines show every position."""
    monkeypatch.setattr(IterationProgressBar, "LINE_SECONDS", 0.0)


def positions(text: str, description: str = "training") -> list[tuple[int, int]]:
    """(iteration, total) of every progress line of the given bar."""
    return [
        (int(n), int(total)) for n, total in re.findall(rf"^{description}: iteration (\d+)/(\d+)", text, re.M)
    ]


def test_a_run_prints_project_lines_and_no_lightning_chatter(tmp_path: Path, capsys, caplog, recwarn) -> None:
    run_dir = tmp_path / "run"
    # A train size below the logging interval and an augmenter Trainer: both are where Lightning says more.
    args = ["--model", "gan", *TINY, "--train-size", "70", "--augment", "ae", "--augmenter-steps", "2"]
    assert main([*args, "--augmenter-width", "8", "--max-steps", "3", "--output", str(run_dir)]) == 0
    out, err = capsys.readouterr()
    # Under pytest Lightning's log records reach the root logger (caplog), not its own stream handler.
    for chatter in CHATTER:
        assert chatter not in out + err + caplog.text
    assert err == ""
    assert not [str(warning.message) for warning in recwarn if "lightning" in warning.filename]
    lines = out.splitlines()
    assert lines[0].startswith("augmenter: training the ae family on the 70 training images")
    assert "augmenter: iteration 2/2 (100%)" in out
    assert f"run folder: {run_dir}  (digits: train 1258 (subset 70)" in out
    model_line = next(line for line in lines if line.startswith("model: gan, "))
    assert "generator" in model_line and "discriminator" in model_line and "cpu, 32-true" in model_line
    assert re.search(r"^trained 3 iterations in [\d.]+ s", out, re.M)
    assert "final metrics (step 3):" in out and "train/loss_d" in out
    # The headline metric heads the table, marked and ruled off from the alphabetical rest.
    table = lines[lines.index("final metrics (step 3):") + 3 :]
    assert table[0].startswith("test/fd_classifier ") and "test/fd_classifier " not in "\n".join(table[1:])
    assert table[0].endswith("<- headline, lower is better") and table[1] == ""
    assert lines[-1] == f"run folder: {run_dir}"


def test_gan_progress_counts_iterations_and_resumes_where_it_stopped(
    tmp_path: Path, capsys, every_iteration
) -> None:
    run_dir = tmp_path / "run"
    assert main(["--model", "gan", *TINY, "--max-steps", "4", "--output", str(run_dir)]) == 0
    first = capsys.readouterr().out
    # Lightning counts 8 optimizer steps here; the bar counts the 4 D+G iterations.
    assert positions(first) == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert "train/loss_d=" in first and "train/loss_g=" in first
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "7"]) == 0
    second = capsys.readouterr().out
    assert "at iteration 4" in second
    assert positions(second) == [(5, 7), (6, 7), (7, 7)]
    assert re.search(r"^trained 3 iterations \(4 -> 7\) in ", second, re.M)


def test_terminal_bar_starts_at_the_resumed_iteration(tmp_path: Path, capsys, monkeypatch) -> None:
    run_dir = tmp_path / "run"
    assert main(["--model", "gan", *TINY, "--max-steps", "2", "--output", str(run_dir)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(progress_bar, "stdout_is_terminal", lambda: True)
    assert main(["--output", str(run_dir), "--resume", "last", "--max-steps", "5"]) == 0
    drawn = capsys.readouterr().out.replace("\r", "\n")
    counts = [int(n) for n in re.findall(r"training: iteration (\d+)/5 ", drawn)]
    assert counts[0] == 2 and counts[-1] == 5 and counts == sorted(counts)
    assert "Epoch" not in drawn and "DataLoader" not in drawn


def test_max_epochs_total_is_epochs_times_batches(tmp_path: Path, capsys, every_iteration) -> None:
    run_dir = tmp_path / "run"
    # 64 images in batches of 32: two iterations per epoch, for the GAN as for any family.
    args = ["--model", "gan", *TINY, "--train-size", "64", "--max-epochs", "2", "--output", str(run_dir)]
    assert main(args) == 0
    assert positions(capsys.readouterr().out) == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_fast_dev_run_is_one_iteration(tmp_path: Path, capsys) -> None:
    assert main(["--model", "gan", *TINY, "--fast-dev-run", "--output", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert positions(out) == [(1, 1)]
    assert re.search(r"^trained 1 iteration in ", out, re.M)


def test_bar_reads_metrics_only_when_it_draws(tmp_path: Path, monkeypatch) -> None:
    reads = []
    original = IterationProgressBar.get_metrics
    monkeypatch.setattr(IterationProgressBar, "get_metrics", lambda *a: reads.append(1) or original(*a))
    assert main(["--model", "ae", *TINY, "--max-steps", "12", "--output", str(tmp_path / "run")]) == 0
    # No line is due within 30 s, so only the final one reads the metrics, not each of the 12 batches.
    assert len(reads) == 1


@pytest.mark.parametrize(
    ("position", "elapsed", "values_at", "rate", "stale"),
    [
        (50, 10.0, 50, "5.0 it/s", False),
        (3, 100.0, 1, "33.3 s/it", True),
        (3, 100.0, None, "33.3 s/it", False),
    ],
)
def test_a_log_line_gives_a_slow_rate_in_seconds_and_names_older_training_values(
    position, elapsed, values_at, rate, stale
) -> None:
    bar = IterationProgressBar()
    bar.total, bar.first, bar.position = 100, 0, position
    line = bar._line({"train/loss": 0.5, "val/loss": 0.25}, elapsed, values_at)
    assert f", {rate}, " in line and "0.0 it/s" not in line
    assert line.endswith("train/ values of iteration 1") == stale


def test_quiet_lightning_is_idempotent() -> None:
    quiet_lightning()
    filters = list(warnings.filters)
    quiet_lightning()
    assert warnings.filters == filters


def test_quiet_lightning_keeps_problems_visible() -> None:
    quiet_lightning()
    lightning = logging.getLogger("pytorch_lightning.trainer.connectors.data_connector")
    assert not lightning.isEnabledFor(logging.INFO) and lightning.isEnabledFor(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_lightning()
        for message in (
            "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is"
            " not resumable.",
            "The number of training batches (5) is smaller than the logging interval"
            " Trainer(log_every_n_steps=10).",
            "`max_epochs` was not set: a real misconfiguration",
        ):
            rank_zero_warn(message, category=PossibleUserWarning)
    assert [str(warning.message) for warning in caught] == [
        "`max_epochs` was not set: a real misconfiguration"
    ]


def test_say_prints_on_rank_zero_only(capsys, monkeypatch) -> None:
    say("hello")
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    say("from rank 1")
    assert capsys.readouterr().out == "hello\n"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_phase_shows_its_first_unit_then_at_most_one_line_per_interval_and_its_end(capsys):
    clock = FakeClock()
    progress = PhaseProgress("training the feature classifier", 10, "epoch", clock=clock)
    for _ in range(10):
        clock.now += 3.0  # 3 s per epoch: a line at epoch 1, then every 10 s (epochs 5 and 9), and at 10
        progress.advance(detail="val acc 90.00%")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": epoch ")[1].split(",")[0] for line in lines] == ["1/10", "5/10", "9/10", "10/10"]
    assert lines[0] == (
        "training the feature classifier: epoch 1/10, 3.0 s elapsed, about 27.0 s left, val acc 90.00%"
    )
    assert "left" not in lines[-1] and "30.0 s elapsed" in lines[-1]


def test_the_feature_classifier_shows_its_progress_while_it_trains(capsys):
    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.metrics.classifier import train_classifier

    data = build_datamodule("digits", data_dir=".")
    data.setup("fit")
    train_classifier(data, epochs=2)
    err = capsys.readouterr().err
    assert "training the feature classifier: epoch 1/2" in err and "epoch 2/2" in err
