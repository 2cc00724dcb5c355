"""Command-line options that make a run tiny: small networks and every periodic event within a few steps;
series scores fitted quickly; and what the tests that compare a run's files byte for byte share."""

import csv
from pathlib import Path

import pytest

TINY_RUN = (
    "--data digits --width 8 --latent-dim 8 --batch-size 32 --eval-every 3 --image-every 3 --ckpt-every 3"
).split()

# For tests that compare numbers byte for byte, which holds on the CPU. On an H100 a tiny GAN's metrics.csv
# with `--data-on-device on` and `off` differed from the first logged row (not isolated; cuDNN's kernels are
# not bitwise reproducible by default), so these runs stay on the CPU wherever the suite runs.
ON_CPU = ["--accelerator", "cpu"]


def csv_fields(path: Path, leave_out: str | None = None) -> list[list[str]]:
    """A CSV file's fields as written, row by row (header first), without the column `leave_out` (a clock
    reading such as ablation.csv's `wall_time_s`)."""
    with path.open(newline="") as file:
        table = list(csv.reader(file))
    dropped = table[0].index(leave_out) if leave_out else -1
    return [[field for i, field in enumerate(row) if i != dropped] for row in table]


# The post-hoc GRUs' training steps in the suite's series runs (quick_series_scores).
SERIES_SCORE_STEPS = 10


def quick_series_scores(patch: pytest.MonkeyPatch) -> None:
    """Series runs fit each post-hoc GRU of their scores twice at the test, not TimeGAN's 10 times, and for
    SERIES_SCORE_STEPS steps, not 300 (a callback given fewer keeps them): the scores and their spread are
    computed all the same, no test of a run reads their values, and the fits were most of a tiny series
    run's time (two at a validation, six at the test). tests/library/test_sequence_metrics.py scores through
    metrics.sequences itself and checks the defaults."""
    from lightning_genae.callbacks import sequence_metrics

    patch.setattr(sequence_metrics.SequenceMetrics, "test_fits", 2)
    score = sequence_metrics.score_sequences

    def shorter(*args, steps: int, **kwargs):
        return score(*args, steps=min(steps, SERIES_SCORE_STEPS), **kwargs)

    patch.setattr(sequence_metrics, "score_sequences", shorter)
