"""Command-line options that make a run tiny: small networks and every periodic event within a few steps;
and what the tests that compare a run's files byte for byte share."""

import csv
from pathlib import Path

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
