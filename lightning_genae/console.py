"""What a run prints: the project's own lines, one progress bar in training iterations, no Lightning chatter.

The project's unit is the training iteration (one D and one G update for a GAN), so everything the
terminal shows counts iterations; Lightning's epochs, optimizer steps, device banners and tips are
switched off where they are produced, or filtered below with the reason they are not actionable here.

Over 400 lines for one job: what the terminal shows (Lightning's output silenced, the run's
header, the iteration bar and the progress of long phases).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
import warnings
from typing import Any

# Importing Lightning here also runs its package set-up, which would reset the log levels set below.
import pytorch_lightning as pl
from lightning_fabric.utilities.rank_zero import rank_zero_only
from pytorch_lightning.callbacks import TQDMProgressBar
from torch import nn
from tqdm import tqdm

from lightning_genae.lightning_internals import Tqdm

# The start of torch's deprecation message for `LeafSpec`, which Lightning's `_pytree` helpers construct.
PYTREE_DEPRECATION_PREFIX = "`isinstance(treespec"
PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


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


def quiet_lightning() -> None:
    """Silence Lightning's informational lines and its warnings a user of this project cannot act on.

    Idempotent: `warnings.filterwarnings` replaces an identical filter rather than adding a second one.
    """
    # Lightning's INFO lines (device banners, "💡 Tip", "`Trainer.fit` stopped: `max_steps=...`",
    # "Restoring states from ...") speak in its units or advertise; the project says what matters itself.
    # Its WARNING-level records (problems) still reach stderr through Lightning's own handler.
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)

    # Lightning's use of a torch API deprecated in newer torch (`torch.utils._pytree.LeafSpec`): a Lightning
    # release fixes it, not the user. Matched by message alone, as `lightning.pytorch` emits it too.
    warnings.filterwarnings("ignore", PYTREE_DEPRECATION + ".*", FutureWarning)
    # Spawned processes (ddp_spawn ranks, spawn-started loader workers) are fresh interpreters that never
    # run this function; they read PYTHONWARNINGS, whose message field is a literal prefix without commas.
    entry = f"ignore:{PYTREE_DEPRECATION_PREFIX}:FutureWarning"
    inherited = os.environ.get("PYTHONWARNINGS", "")
    if entry not in inherited.split(","):
        os.environ["PYTHONWARNINGS"] = f"{inherited},{entry}" if inherited else entry
    # Lightning hints at srun on every machine where SLURM is installed; the project's sbatch templates
    # launch with srun, and outside a job (a login node, a workstation) the hint is wrong.
    warnings.filterwarnings("ignore", ".*The `srun` command is available on your system but is not used.*")
    # Lightning falls back from 16-mixed to bf16-mixed on the CPU with a warning; the model line names the
    # precision in use, so the warning would only repeat it on stderr.
    warnings.filterwarnings("ignore", ".*AMP with fp16 is not supported on CPU.*")
    # Data lives in memory and is batched by indexing, so worker processes would only add overhead.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # A run folder is reused on purpose by --resume, and by --output pointing at an earlier run.
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    # Models without a validation objective (the GAN) are still validated by the metric callbacks.
    warnings.filterwarnings("ignore", ".*val_dataloader` but have no `validation_step.*")
    # Lightning logs every N batches counted across epochs, so a small dataset (fewer batches per epoch
    # than N) still logs every N iterations; lowering the interval would change nothing the user wants.
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval Trainer\\(log_every_n_steps.*")
    # Lightning warns because it cannot restore its own loader's place in a mid-epoch resume; the training
    # loaders here keep theirs in the DataModule's checkpointed state (EpochPosition) and resume from it.
    warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")


def stdout_is_terminal() -> bool:
    """A terminal with a width: a bar can redraw in place. A pty without a size would show an empty bar."""
    if not sys.stdout.isatty():
        return False
    try:
        return os.get_terminal_size(sys.stdout.fileno()).columns > 0
    except (OSError, ValueError):
        return False


def planned_iterations(trainer: pl.Trainer, steps_per_iteration: int) -> int | None:
    """The iteration at which fit stops: the nearer of max_steps and max_epochs (None when unbounded)."""
    limits = []
    if trainer.max_steps is not None and trainer.max_steps > 0:
        # ceil: --fast-dev-run stops a GAN after one optimizer step, still one (half-done) iteration.
        limits.append(math.ceil(trainer.max_steps / steps_per_iteration))
    batches = trainer.num_training_batches
    if trainer.max_epochs is not None and trainer.max_epochs > 0 and math.isfinite(batches):
        # One batch is one iteration for every family, a GAN's included.
        limits.append(trainer.max_epochs * int(batches))
    return min(limits) if limits else None


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


def format_count(n: int) -> str:
    """Parameter counts as Lightning's summary writes them: 950, 1.2 K, 336 K, 4.1 M."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            value = n / size
            return f"{value:.1f} {suffix}" if value < 10 else f"{value:.0f} {suffix}"
    return str(n)


def describe_model(name: str, model: nn.Module, trainer: pl.Trainer) -> str:
    """One line instead of Lightning's summary table: parameters per network, device, precision."""

    def trainable(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    networks = [(child, trainable(module)) for child, module in model.named_children()]
    detail = ", ".join(f"{child} {format_count(count)}" for child, count in networks if count)

    # Parts that are not trained here (the ae-d augmenter inside the discriminator's augmentation, the
    # generator's EMA copy) are named, so "frozen" is never read as a network that does not learn.
    def frozen(module: nn.Module) -> int:
        return sum(p.numel() for p in module.parameters() if not p.requires_grad)

    parts = [(child, frozen(module)) for child, module in model.named_children()]
    named = ", ".join(f"{child} {format_count(count)}" for child, count in parts if count)
    rest = sum(p.numel() for p in model.parameters(recurse=False) if not p.requires_grad)
    if rest:
        named += (", " if named else "") + f"other {format_count(rest)}"
    if named:
        detail += f"; not trained by the optimizers: {named}"
    devices = trainer.num_devices * trainer.num_nodes
    device = trainer.strategy.root_device.type
    where = f"{devices} x {device}" if devices > 1 else device
    return (
        f"model: {name}, {format_count(trainable(model))} parameters"
        + (f" ({detail})" if detail else "")
        + f", {where}, {trainer.precision}"
    )


def describe_training(first: int, last: int, seconds: float) -> str:
    """The end-of-training line in iterations, e.g. "trained 2000 iterations in 2 min 10 s".

    No rate: the time includes the validations, so it would disagree with the bar's training rate.
    """
    done = last - first
    span = f"{done} iteration{'s' if done != 1 else ''}"
    if first:
        span += f" ({first} -> {last})"
    return f"trained {span} in {format_duration(seconds)}"


class IterationProgressBar(TQDMProgressBar):
    """One bar over the whole run counted in training iterations, across epochs and from a resumed position.

    On a terminal the bar redraws at most every `REFRESH_SECONDS` (Lightning's default redraws every batch).
    When stdout is not a terminal (a SLURM log, a pipe) '\\r' redraws would pile up in the file, so it prints
    a plain line every `LINE_SECONDS` and one at the end, and no validation/test bars.
    TQDMProgressBar, not Lightning's default RichProgressBar: tqdm is a dependency of Lightning, rich an
    optional one (here it comes with import-linter), so the default bar differs between installs.
    """

    REFRESH_SECONDS = 0.2
    LINE_SECONDS = 30.0

    def __init__(self, description: str = "training") -> None:
        super().__init__(leave=False)
        self.description = description
        self.interactive = False
        self.total: int | None = None
        self.first = 0
        self.position = 0
        self._steps_per_iteration = 1
        self._started = 0.0
        self._next_draw = 0.0
        self._shown = -1
        self._evaluation_lines: PhaseProgress | None = None

    def iteration(self, trainer: pl.Trainer) -> int:
        return trainer.global_step // self._steps_per_iteration

    def training_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version folder, not a training value
        return metrics

    # ----- training: one bar for the whole fit -----

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps_per_iteration = getattr(pl_module, "optimizer_steps_per_iteration", 1)
        self.total = planned_iterations(trainer, self._steps_per_iteration)
        self.first = self.position = self.iteration(trainer)
        self._started = time.monotonic()
        self._shown = -1
        self.interactive = stdout_is_terminal()
        # A bar is drawn at once; a log's first line waits until there is a rate worth reporting.
        self._next_draw = self._started + (0 if self.interactive else self.LINE_SECONDS)
        self.train_progress_bar = Tqdm(
            desc=self.description,
            total=self.total,
            initial=self.first,
            disable=self.is_disabled or not self.interactive,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,  # the whole run's average rate, so the time left includes the validations
            bar_format="{desc}: iteration {n_fmt}/{total_fmt} {bar} [{elapsed}<{remaining}, "
            "{rate_noinv_fmt}{postfix}]",
        )

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        """Epochs mean nothing in an iteration-budgeted run: the bar keeps going."""

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing to reset or close at an epoch's end."""

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.position = self.iteration(trainer)
        if self.is_disabled:
            return
        # A clock check per batch; metrics are read and the line drawn only when it is time to. The last
        # iteration is drawn by on_train_end, after the final validation, so it shows that one's metrics.
        now = time.monotonic()
        if now >= self._next_draw and self.position != self.total:
            self._show(trainer, pl_module, now)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.position = self.iteration(trainer)
        if not self.is_disabled and self._shown != self.position:
            self._show(trainer, pl_module, time.monotonic())
        self.train_progress_bar.close()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The base class would redraw the training bar with fresh metrics; our next draw picks them up.
        self.val_progress_bar.close()
        self.reset_dataloader_idx_tracker()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if self._train_progress_bar is not None:
            self.train_progress_bar.close()
        if isinstance(exception, KeyboardInterrupt):
            # Lightning's own notice is silenced with its other INFO lines; say where the run stopped.
            say(
                f"interrupted at iteration {self.iteration(trainer)}"
                + (f"/{self.total}" if self.total else "")
            )

    def _show(self, trainer: pl.Trainer, pl_module: pl.LightningModule, now: float) -> None:
        metrics = self.training_metrics(trainer, pl_module)
        if self.interactive:
            self._next_draw = now + self.REFRESH_SECONDS
            bar = self.train_progress_bar
            bar.n = self.position
            bar.set_postfix(metrics, refresh=False)
            bar.refresh()
        else:
            self._next_draw = now + self.LINE_SECONDS
            say(self._line(metrics, now - self._started))
        self._shown = self.position

    def _line(self, metrics: dict[str, Any], elapsed: float) -> str:
        parts = [f"{self.description}: iteration {self.position}"]
        if self.total:
            parts[0] += f"/{self.total} ({100 * self.position / self.total:.0f}%)"
        parts.append(f"{format_duration(elapsed)} elapsed")
        done = self.position - self.first
        if done > 0 and elapsed > 0:
            rate = done / elapsed
            if self.total and self.position < self.total:
                parts.append(f"{format_duration((self.total - self.position) / rate)} left")
            parts.append(f"{rate:.1f} it/s")
        parts += [
            f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
            for key, value in metrics.items()
        ]
        return ", ".join(parts)

    # ----- validation and test: transient bars on a terminal, nothing in a log file -----

    def _evaluation_bar(self, description: str, position: int) -> Tqdm:
        return Tqdm(
            desc=description,
            position=position,
            disable=self.is_disabled or not stdout_is_terminal(),
            leave=False,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    def init_sanity_tqdm(self) -> Tqdm:
        return self._evaluation_bar("sanity check", 0)

    def init_validation_tqdm(self) -> Tqdm:
        # Below the training bar during fit; alone in trainer.validate.
        return self._evaluation_bar("validation", int(self.trainer.state.fn == "fit"))

    def init_test_tqdm(self) -> Tqdm:
        return self._evaluation_bar("test", 0)

    def on_validation_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        # As the base class, without appending "DataLoader 0" to the description.
        if self.has_dataloader_changed(dataloader_idx):
            total = _finite(self.total_val_batches_current_dataloader)
            self.val_progress_bar.reset(total=total)
            self._start_evaluation_lines("sanity check" if trainer.sanity_checking else "validation", total)

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_validation_batch_end(trainer, *args, **kwargs)
        if self._evaluation_lines is not None:
            self._evaluation_lines.advance()

    def on_test_batch_start(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.has_dataloader_changed(dataloader_idx):
            total = _finite(self.total_test_batches_current_dataloader)
            self.test_progress_bar.reset(total=total)
            self._start_evaluation_lines("test", total)

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any, **kwargs: Any) -> None:
        super().on_test_batch_end(trainer, *args, **kwargs)
        if self._evaluation_lines is not None:
            self._evaluation_lines.advance()

    def _start_evaluation_lines(self, what: str, total: int | None) -> None:
        """In a log file, where the bars are not drawn, a long validation or test loop (the importance-
        sampled likelihood over a test set, say) still says where it is."""
        self._evaluation_lines = None
        if not self.is_disabled and not stdout_is_terminal() and total:
            self._evaluation_lines = evaluation_progress(what, total, "batch", interval=self.LINE_SECONDS)


def _finite(value: float) -> int | None:
    return int(value) if math.isfinite(value) else None
