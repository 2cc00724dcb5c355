"""What a run prints: the project's own lines, and no Lightning chatter.

The project's unit is the training iteration (one D and one G update for a GAN), so everything the
terminal shows counts iterations; Lightning's epochs, optimizer steps, device banners and tips are
switched off where they are produced, or filtered below with the reason they are not actionable here.
"""

from __future__ import annotations

import logging
import sys
import warnings

# Importing Lightning here also runs its package set-up, which would reset the log levels set below.
import pytorch_lightning  # noqa: F401
from lightning_fabric.utilities.rank_zero import rank_zero_only
from tqdm import tqdm


@rank_zero_only
def say(message: str) -> None:
    """Print one of the project's own lines: stdout, rank 0 only, flushed at once (a log file follows it)."""
    # tqdm.write lifts an active progress bar out of the way and redraws it below the message.
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def quiet_lightning() -> None:
    """Silence Lightning's informational lines and its warnings a user of this project cannot act on.

    Idempotent: `warnings.filterwarnings` replaces an identical filter rather than adding a second one.
    """
    # Lightning's INFO lines (device banners, "💡 Tip", "`Trainer.fit` stopped: `max_steps=...`",
    # "Restoring states from ...") speak in its units or advertise; the project says what matters itself.
    # Its WARNING-level records (problems) still reach stderr through Lightning's own handler.
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Except SLURM auto-requeue notices: in a job's log they explain why the job stopped and came back.
    logging.getLogger("pytorch_lightning.trainer.connectors.signal_connector").setLevel(logging.INFO)

    # Lightning's use of a torch API deprecated in newer torch: a Lightning release fixes it, not the user.
    warnings.filterwarnings(
        "ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"pytorch_lightning\."
    )
    # Data lives in memory and is batched by indexing, so worker processes would only add overhead.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    # A run folder is reused on purpose by --resume, and by --output pointing at an earlier run.
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
    # Checkpoints are meant to hold the weights after the iteration's updates.
    warnings.filterwarnings("ignore", ".*ModelCheckpoint with manual optimization and every_n_train_steps.*")
    # Models without a validation objective (the GAN) are still validated by the metric callbacks.
    warnings.filterwarnings("ignore", ".*val_dataloader` but have no `validation_step.*")
    # Lightning logs every N batches counted across epochs, so a small dataset (fewer batches per epoch
    # than N) still logs every N iterations; lowering the interval would change nothing the user wants.
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval Trainer\\(log_every_n_steps.*")
    # The data is an in-memory split reshuffled every epoch: a resumed run starts a fresh shuffle, which is
    # as random as the one interrupted; there is no loader state worth restoring.
    warnings.filterwarnings("ignore", ".*resuming from a checkpoint that ended before the epoch ended.*")
