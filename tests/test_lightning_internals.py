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
    wandb_init_arguments,
)


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


def test_the_logger_connector_and_the_logging_step_are_where_lightning_keeps_them(tmp_path):
    probe = Probe()
    trainer = pl.Trainer(
        max_steps=6,
        log_every_n_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(probe)
    assert len(probe.decisions) == 6 and any(probe.decisions) and not all(probe.decisions)


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


@pytest.mark.parametrize("name", sorted(set(lightning_internals.__all__)))
def test_every_listed_name_exists(name):
    assert getattr(lightning_internals, name) is not None


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
