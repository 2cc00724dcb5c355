"""Every private Lightning name the project uses still exists in the installed Lightning and does its job."""

from __future__ import annotations

import signal

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger

from lightning_genae import lightning_internals
from lightning_genae.lightning_internals import (
    kill_launched_processes,
    logging_step,
    set_logging_step,
    should_update_logs,
    validation_follows_batch,
    wandb_init_arguments,
)

pytestmark = pytest.mark.quick


class Probe(pl.LightningModule):
    """Reads the logger connector's decision and writes the logging step from inside a real fit."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)
        self.decisions: list[bool] = []

    def training_step(self, batch, batch_idx):
        self.decisions.append(should_update_logs(self.trainer))
        set_logging_step(self.trainer, 100 + batch_idx)
        assert logging_step(self.trainer) == 100 + batch_idx
        return self.layer(batch[0]).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.utils.data.TensorDataset(torch.randn(8, 2))
        return torch.utils.data.DataLoader(data, batch_size=1)


def fit_quietly(module: pl.LightningModule, tmp_path, max_steps: int, logger=False) -> pl.Trainer:
    """Fit `module`, logging every 3 steps, with no checkpoint, progress bar or model summary."""
    trainer = pl.Trainer(
        max_steps=max_steps,
        log_every_n_steps=3,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module)
    return trainer


def test_the_logger_connector_and_the_logging_step_are_where_lightning_keeps_them(tmp_path):
    probe = Probe()
    fit_quietly(probe, tmp_path, max_steps=6)
    assert len(probe.decisions) == 6 and any(probe.decisions) and not all(probe.decisions)


class ValidationProbe(Probe):
    """Notes, at each training batch's end, whether Lightning is about to validate, and when it does."""

    def __init__(self, with_validation: bool) -> None:
        super().__init__()
        self.with_validation = with_validation
        self.foreseen: list[int] = []
        self.validated: list[int] = []

    def on_train_batch_end(self, outputs, batch, batch_idx):
        if validation_follows_batch(self.trainer):
            self.foreseen.append(self.global_step)

    def on_validation_start(self):
        self.validated.append(self.global_step)

    def validation_step(self, batch, batch_idx):
        return None

    def val_dataloader(self):
        size = 4 if self.with_validation else 0
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(size, 2)), batch_size=2)


@pytest.mark.parametrize("with_validation", [True, False])
def test_a_coming_validation_is_foreseen_at_the_batch_end_by_lightnings_own_rule(tmp_path, with_validation):
    probe = ValidationProbe(with_validation)
    trainer = pl.Trainer(
        max_steps=7, val_check_interval=3, check_val_every_n_epoch=None, num_sanity_val_steps=0,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(probe)
    assert probe.validated == ([3, 6] if with_validation else [])
    assert probe.foreseen == probe.validated


def test_the_script_launcher_type_is_importable_and_no_launcher_is_a_no_op():
    kill_launched_processes(None, signal.SIGKILL)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    kill_launched_processes(trainer, signal.SIGKILL)  # single-process: nothing was launched


def test_wandb_logger_keeps_its_init_arguments(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="probe")
    arguments = wandb_init_arguments(logger)
    assert arguments is not None and arguments["project"] == "probe"
    assert wandb_init_arguments(object()) is None


def test_the_sync_advice_silenced_for_whole_run_values_is_lightnings_wording():
    # The filter matches the advice's start followed by the quoted name; Lightning builds the message as
    # that start followed by `{name!r}`. The DDP training test shows the advice silenced end to end.
    import inspect

    from pytorch_lightning.trainer.connectors.logger_connector import result

    assert lightning_internals.SYNC_ADVICE + "{result_metric.meta.name!r}," in inspect.getsource(result)


def test_a_whole_run_value_logged_at_every_evaluation_shows_no_warning_twice():
    # Adding a filter again, even an identical one, makes Python forget the warnings it has shown, so a
    # warning meant to be shown once per place would come back after every evaluation.
    import warnings
    from types import SimpleNamespace

    logged = []
    module = SimpleNamespace(log=lambda name, value, **options: logged.append((name, value)))

    def warn_once_here():
        warnings.warn("shown once", UserWarning, stacklevel=1)

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        for value in (1.0, 2.0, 3.0):
            lightning_internals.log_global_value(module, "val/fd_probe", value)
            warn_once_here()
    assert [str(warning.message) for warning in shown] == ["shown once"]
    assert logged == [("val/fd_probe", 1.0), ("val/fd_probe", 2.0), ("val/fd_probe", 3.0)]


class Rows(pl.loggers.logger.Logger):
    """Keeps every row handed to the loggers, exactly as handed."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict]] = []

    name = "rows"
    version = 0

    def log_hyperparams(self, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))


class TrainingValues(Probe):
    """Logs values of several kinds each batch, through `self.log` or `record_training_values`."""

    def __init__(self, recorded: bool) -> None:
        super().__init__()
        self.recorded = recorded
        self.progress_bar_seen: list[dict] = []

    def training_step(self, batch, batch_idx):
        loss = self.layer(batch[0]).mean()
        self.values = {
            "train/loss": loss.detach(),
            "train/half": (loss.detach() * 3).half(),
            "train/double": loss.detach().double() / 7,
            "train/number": 0.1 * (batch_idx + 1),
            "train/count": batch_idx,
        }
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx):
        written = should_update_logs(self.trainer)
        if self.recorded:
            lightning_internals.record_training_values(
                self.trainer, self.values, ["train/loss", "train/number"], write=written
            )
        else:
            self.log_dict(
                {k: v for k, v in self.values.items() if k in ("train/loss", "train/number")},
                on_step=True,
                on_epoch=False,
                prog_bar=True,
            )
            self.log_dict(
                {k: v for k, v in self.values.items() if k not in ("train/loss", "train/number")},
                on_step=True,
                on_epoch=False,
            )

    def on_train_end(self):
        self.progress_bar_seen.append(dict(self.trainer.progress_bar_metrics))


def test_recorded_training_values_reach_loggers_callbacks_and_progress_bar_as_self_log_sends_them(tmp_path):
    outcomes = []
    for recorded in (False, True):
        torch.manual_seed(0)
        probe, rows = TrainingValues(recorded), Rows()
        trainer = fit_quietly(probe, tmp_path, max_steps=7, logger=rows)
        callback = {name: (float(value), value.dtype) for name, value in trainer.callback_metrics.items()}
        outcomes.append((rows.rows, callback, probe.progress_bar_seen))
    by_self_log, recorded = outcomes
    # The same rows (steps, epoch column, values to the last bit, as Python numbers), the same values for
    # callbacks, the same progress bar.
    assert recorded[0] == by_self_log[0] and len(recorded[0]) == 2
    assert all(type(value) is type(by_self_log[0][0][1][name]) for name, value in recorded[0][0][1].items())
    assert {name: value for name, (value, _) in recorded[1].items()} == {
        name: value for name, (value, _) in by_self_log[1].items()
    }
    assert recorded[2] == by_self_log[2]


def test_the_loader_state_lightning_leaves_unread_is_where_restore_loader_positions_reads_it():
    """A fit by epochs resumed after its last epoch ended keeps the loaders' state in the fit loop's private
    list; `restore_loader_positions` hands it to the loaders (test_reproducibility.py checks the run)."""
    fit_loop = pl.Trainer(logger=False).fit_loop
    assert fit_loop._combined_loader_states_to_load == []
    from pytorch_lightning.utilities.combined_loader import CombinedLoader

    assert callable(CombinedLoader._load_state_dicts)
    assert hasattr(fit_loop.epoch_loop.batch_progress, "reset_on_run")


def test_a_fit_stopped_part_way_through_an_epoch_is_saved_with_that_epoch_still_running(tmp_path):
    """Lightning counts the epoch a --max-steps stop cuts short as done; `uncount_epoch_cut_short` finds it
    in the fit loop's state dict (test_reproducibility.py checks the resumed run's budget and numbers)."""
    from lightning_genae.lightning_internals import uncount_epoch_cut_short

    trainer = fit_quietly(Probe(), tmp_path, max_steps=3)  # 8 batches an epoch
    checkpoint = trainer._checkpoint_connector.dump_checkpoint()
    epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]
    assert checkpoint["epoch"] == 1 and epochs["current"]["completed"] == epochs["total"]["processed"] == 1
    uncount_epoch_cut_short(trainer, checkpoint)
    assert checkpoint["epoch"] == 0
    assert {count for part in epochs.values() for count in part.values()} == {0}
    assert checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"] == 3
    # An epoch that ran all its batches is left counted.
    whole_trainer = fit_quietly(Probe(), tmp_path, max_steps=8)
    whole = whole_trainer._checkpoint_connector.dump_checkpoint()
    uncount_epoch_cut_short(whole_trainer, whole)
    assert whole["epoch"] == 1
