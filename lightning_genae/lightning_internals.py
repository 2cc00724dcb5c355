"""Every private Lightning name this project reads or writes, in one place, each where Lightning offers no
public way; tests/library/test_lightning_internals.py checks every one against the installed Lightning."""

from __future__ import annotations

import re
import warnings
from collections.abc import Collection, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import _configure_optimizers
from pytorch_lightning.strategies.launchers import _SubprocessScriptLauncher
from pytorch_lightning.utilities.model_helpers import _restricted_classmethod


def should_update_logs(trainer: pl.Trainer) -> bool:
    """Whether Lightning writes this training batch's logged values at its end (its logger connector's
    decision), read rather than copied so the two cadences cannot drift."""
    return bool(trainer._logger_connector.should_update_logs)


def restore_loader_positions(trainer: pl.Trainer) -> None:
    """Give the training loaders the state the resumed checkpoint holds for them where Lightning did not (a
    fit resumed after its last epoch ended counts as a fresh start), at the start of training."""
    fit_loop = trainer.fit_loop
    pending = fit_loop._combined_loader_states_to_load
    if pending and fit_loop._combined_loader is not None:
        fit_loop._combined_loader._load_state_dicts(pending)
        fit_loop._combined_loader_states_to_load = []
    # The same checkpoint resumed with --max-steps given (a fit by iterations always counts as restarting)
    # keeps the finished epoch's batch count as the next epoch's start, and that epoch ends after one
    # batch: the count starts again at 0, as after an epoch that ends in a running fit.
    epochs, batches = fit_loop.epoch_progress.current, fit_loop.epoch_loop.batch_progress
    epoch_ended = epochs.ready == epochs.started == epochs.processed == epochs.completed > 0
    if fit_loop.restarting and epoch_ended and batches.current.ready >= trainer.num_training_batches:
        batches.reset_on_run()


_PROGRESS_STAGES = ("ready", "started", "processed", "completed")


def uncount_epoch_cut_short(trainer: pl.Trainer, checkpoint: dict[str, Any]) -> None:
    """Write a checkpoint of a fit stopped part-way through an epoch as one whose last epoch is still
    running (Lightning counts it done, so a resume by --max-epochs would fall short by the batches left)."""
    try:
        fit_loop = checkpoint["loops"]["fit_loop"]
        epochs = fit_loop["epoch_progress"]
        batches_done = fit_loop["epoch_loop.batch_progress"]["current"]["completed"]
        counts = [epochs[part][stage] for part in ("total", "current") for stage in _PROGRESS_STAGES]
    except (KeyError, TypeError):
        return
    per_epoch = trainer.num_training_batches
    # Each part's four counts agree once an epoch has ended.
    epoch_ended = len(set(counts[:4])) == 1 and len(set(counts[4:])) == 1
    if not (epoch_ended and min(counts) > 0 and 0 < batches_done < per_epoch != float("inf")):
        return
    for part in ("total", "current"):
        for stage in _PROGRESS_STAGES:
            epochs[part][stage] -= 1
    if isinstance(checkpoint.get("epoch"), int):
        checkpoint["epoch"] -= 1


def validation_follows_batch(trainer: pl.Trainer) -> bool:
    """Whether Lightning validates as soon as the training batch in progress ends, asked from
    `on_train_batch_end`: a checkpoint saved there would be resumed as if that validation had run."""
    epoch_loop = trainer.fit_loop.epoch_loop
    fetcher = trainer.fit_loop._data_fetcher
    if fetcher is None or epoch_loop._skip_next_val or not epoch_loop._should_check_val_fx(fetcher):
        return False
    epoch_loop.val_loop.setup_data()
    return not epoch_loop.val_loop.skip


def record_training_values(
    trainer: pl.Trainer,
    values: Mapping[str, torch.Tensor | float],
    progress_bar: Collection[str],
    write: bool,
) -> None:
    """Put one training batch's values where `self.log(name, value, on_step=True, on_epoch=False)` would,
    without its result collection, which costs about a millisecond of Python per value on a CPU."""
    connector = trainer._logger_connector
    tensors: dict[str, torch.Tensor] = {}
    for name, value in values.items():
        # One element each: torch refuses to reshape more to a scalar, or to make a tensor of a non-number.
        if not isinstance(value, torch.Tensor):
            value = torch.tensor(value, dtype=torch.float32)
        value = value.detach().reshape(())
        tensors[name] = value if value.dtype in (torch.float32, torch.float64) else value.float()
    host: dict[str, float] | None = None
    if write or progress_bar:
        read = _read_on_host(tensors)
        host = {name: read[name] for name in values}
    # Copies: a value's tensor may change in place after it was logged (a buffer such as k_t).
    connector._callback_metrics.update({name: tensor.clone() for name, tensor in tensors.items()})
    if host is not None:
        connector._progress_bar_metrics.update({name: host[name] for name in progress_bar})
        if write:
            connector.log_metrics(host)


def _read_on_host(tensors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Python numbers of 0-dim tensors, with one copy from each device: the values are stacked where they
    live, per dtype (an MPS device has no float64 to cast to), and read at once."""
    groups: dict[tuple[torch.device, torch.dtype], list[str]] = {}
    for name, tensor in tensors.items():
        groups.setdefault((tensor.device, tensor.dtype), []).append(name)
    read: dict[str, float] = {}
    for names in groups.values():
        read.update(zip(names, torch.stack([tensors[name] for name in names]).tolist(), strict=True))
    return read


def set_logging_step(trainer: pl.Trainer, iterations: int) -> None:
    """Set the counter Lightning labels logged rows with (`_batches_that_stepped`): with two optimizers per
    iteration it otherwise counts batches in a way that lags after a resume."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = iterations


def logging_step(trainer: pl.Trainer) -> int:
    """The counter `set_logging_step` sets."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def kill_launched_processes(trainer: pl.Trainer | None, signum: int) -> None:
    """Send `signum` to the workers Lightning's script launcher started, so a second Ctrl-C stops them too."""
    launcher = trainer.strategy.launcher if trainer is not None else None
    if isinstance(launcher, _SubprocessScriptLauncher):
        launcher.kill(signum)


def wandb_init_arguments(logger: Any) -> dict[str, Any] | None:
    """The arguments WandbLogger keeps for `wandb.init` (`_wandb_init`), or None if Lightning renamed them:
    the only way to drop a retired setting Lightning always passes."""
    arguments = getattr(logger, "_wandb_init", None)
    return arguments if isinstance(arguments, dict) else None


# The start of Lightning's advice, under DDP, to sync an epoch-level value logged without `sync_dist`
# (its logger connector's result collection); followed by the value's name, quoted.
SYNC_ADVICE = "It is recommended to use `self.log("


def log_global_value(pl_module: pl.LightningModule, name: str, value: Any, **log_options: Any) -> None:
    """`pl_module.log` a value that is already the whole run's, silencing Lightning's advice to sync it for
    this name only (syncing would average identical numbers, or wait for ranks that log nothing)."""
    pattern = re.escape(f"{SYNC_ADVICE}{name!r},")
    # Added only where absent: every change to the filters makes Python show warnings already shown again.
    silenced = (
        action == "ignore" and message and message.pattern == pattern
        for action, message, *_ in warnings.filters
    )
    if not any(silenced):
        warnings.filterwarnings("ignore", pattern)
    pl_module.log(name, value, sync_dist=False, **log_options)


# Lightning's `load_from_checkpoint` decorator: refused on an instance (it would return a new model).
restricted_classmethod = _restricted_classmethod


def configured_optimizers(configured: Any) -> list[torch.optim.Optimizer]:
    """The optimizers in what `configure_optimizers` returned, in order, read by Lightning's own parser."""
    return _configure_optimizers(configured)[0]
