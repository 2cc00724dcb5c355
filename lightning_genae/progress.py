"""The library's own lines: notices on stdout and warnings on stderr (rank 0 only), the progress of long
phases outside a training loop, and Lightning's notices a user cannot act on silenced (`quiet_lightning`)."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from lightning_fabric.utilities.rank_zero import rank_zero_only
from tqdm import tqdm


@rank_zero_only
def say(message: str) -> None:
    """Print one of the project's own lines: stdout, rank 0 only, flushed at once, below any progress bar."""
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


# An evaluation pass shorter than this says nothing; a longer one shows its progress.
EVALUATION_QUIET_SECONDS = 10.0


def evaluation_progress(what: str, total: int, unit: str, interval: float = 10.0) -> PhaseProgress:
    """The progress of an evaluation pass: silent for its first EVALUATION_QUIET_SECONDS (read now)."""
    return PhaseProgress(what, total, unit, interval=interval, quiet_for=EVALUATION_QUIET_SECONDS)


@dataclass
class PhaseProgress:
    """A long phase's progress on stderr outside the training loop: done/total, time spent and left."""

    what: str
    total: int
    unit: str
    _: KW_ONLY
    interval: float = 10.0
    quiet_for: float = 0.0
    clock: Callable[[], float] = time.monotonic
    done: int = field(default=0, init=False)
    last_line: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.started = self.clock()

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


def quiet_lightning() -> None:
    """Silence Lightning's informational lines and the warnings a user of this project cannot act on."""
    # Imported first: Lightning's package set-up would reset the log levels set below.
    import pytorch_lightning  # noqa: F401

    # Lightning's INFO lines (banners, tips, "`Trainer.fit` stopped") speak in its units or advertise; its
    # warnings still reach stderr.
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    # Lightning's use of a torch API deprecated in newer torch (`LeafSpec`): a Lightning release fixes it.
    warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated.*", FutureWarning)
    # A prepared folder's stream knows its length per process and worker (datamodules/streaming.py).
    warnings.filterwarnings("ignore", r"Your `IterableDataset` has `__len__` defined.*")
    # Spawned processes (ddp_spawn ranks, loader workers) never run this function; they read PYTHONWARNINGS,
    # whose message field is a literal prefix without commas.
    entry = "ignore:`isinstance(treespec:FutureWarning"
    inherited = os.environ.get("PYTHONWARNINGS", "")
    if entry not in inherited.split(","):
        os.environ["PYTHONWARNINGS"] = f"{inherited},{entry}" if inherited else entry
    # Lightning advises srun wherever SLURM is installed: wrong outside a job, and the sbatch scripts use it.
    warnings.filterwarnings("ignore", ".*The `srun` command is available on your system but is not used.*")
    # The fall-back from 16-mixed to bf16-mixed on the CPU: the model line names the precision in use.
    warnings.filterwarnings("ignore", ".*AMP with fp16 is not supported on CPU.*")
    # Data lives in memory and is batched by indexing, so worker processes would only add overhead.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # A run folder is reused on purpose by --resume, and by --output pointing at an earlier run.
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    # Models without a validation objective (the GAN) are still validated by the metric callbacks.
    warnings.filterwarnings("ignore", ".*val_dataloader` but have no `validation_step.*")
    # Lightning logs every N batches counted across epochs, so a small dataset still logs every N iterations.
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval Trainer\\(log_every_n_steps.*")
    # The training loaders keep their place in a mid-epoch resume themselves (EpochPosition).
    warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")
