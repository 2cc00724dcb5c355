"""The library's own lines: notices on stdout and warnings on stderr (rank 0 only), and the progress of long
phases outside a training loop (a classifier's epochs, an evaluation's features), each saying what it waits
for and about how long it has left."""

from __future__ import annotations

import sys
import time
from typing import Any

from lightning_fabric.utilities.rank_zero import rank_zero_only
from tqdm import tqdm


@rank_zero_only
def say(message: str) -> None:
    """Print one of the project's own lines: stdout, rank 0 only, flushed at once (a log file follows it)."""
    # tqdm.write lifts an active progress bar out of the way and redraws it below the message.
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


@rank_zero_only
def warn(message: str) -> None:
    """Print a warning of the project's own: stderr, rank 0 only, flushed at once."""
    tqdm.write(message, file=sys.stderr)
    sys.stderr.flush()


def format_duration(seconds: float) -> str:
    """12.3 s, 2 min 10 s, 3 h 05 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# An evaluation pass (features of generated or real images, post-hoc fits, a test loop) shorter than this
# says nothing; a longer one shows its progress.
EVALUATION_QUIET_SECONDS = 10.0


def evaluation_progress(what: str, total: int, unit: str, interval: float = 10.0) -> PhaseProgress:
    """The progress of an evaluation pass: silent for its first EVALUATION_QUIET_SECONDS (read now)."""
    return PhaseProgress(what, total, unit, interval=interval, quiet_for=EVALUATION_QUIET_SECONDS)


class PhaseProgress:
    """Progress of a long phase outside the training loop (a feature classifier's epochs, say): what it
    waits for, done/total, the time spent and an estimate of the time left, on stderr.

    A line at the first unit (the rate shows early), then at most one every `interval` seconds, and at
    the end, so a log file stays short whatever the phase's length. With `quiet_for`, a phase says nothing
    until it has run that many seconds: an evaluation pass that usually takes a moment stays silent, and
    one that turns out long (many samples, a slow backbone, a CPU) shows where it is.
    """

    def __init__(
        self,
        what: str,
        total: int,
        unit: str,
        *,
        interval: float = 10.0,
        quiet_for: float = 0.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.what, self.total, self.unit, self.interval = what, total, unit, interval
        self.quiet_for = quiet_for
        self.clock = clock
        self.done = 0
        self.started = clock()
        self.last_line: float | None = None

    def advance(self, n: int = 1, detail: str = "") -> None:
        """`n` more units done; `detail` (e.g. "val acc 98.1%") ends the line when one is written."""
        self.done = min(self.total, self.done + n)
        now = self.clock()
        if self.last_line is None and now - self.started < self.quiet_for:
            return
        due = self.last_line is None or now - self.last_line >= self.interval or self.done == self.total
        if not due:
            return
        self.last_line = now
        elapsed = now - self.started
        line = f"{self.what}: {self.unit} {self.done}/{self.total}, {format_duration(elapsed)} elapsed"
        if self.done < self.total:
            line += f", about {format_duration(elapsed / self.done * (self.total - self.done))} left"
        if detail:
            line += f", {detail}"
        print(line, file=sys.stderr, flush=True)
