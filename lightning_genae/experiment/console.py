"""What a run prints: the project's own lines, one progress bar in training iterations, no Lightning chatter.

The project's unit is the training iteration (one D and one G update for a GAN), so everything the
terminal shows counts iterations; Lightning's epochs, optimizer steps, device banners and tips are
switched off where they are produced, or filtered below with the reason they are not actionable here.

Over 400 lines for one job: what the terminal shows (Lightning's output silenced, the run's
header, the iteration bar and the progress of long phases).
"""

from __future__ import annotations

import logging
import os
import warnings

# Importing Lightning here also runs its package set-up, which would reset the log levels set below.
import pytorch_lightning as pl
from torch import nn

from lightning_genae.progress import format_duration

# The start of torch's deprecation message for `LeafSpec`, which Lightning's `_pytree` helpers construct.
PYTREE_DEPRECATION_PREFIX = "`isinstance(treespec"
PYTREE_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"


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
