"""Training values are recorded only at the batches whose values Lightning writes, and the final one.

Each case trains a tiny family twice from the same seed: once writing every batch (log_every_n_steps=1,
the reference) and once every 3 batches, as a run does every min(10, eval_every).
"""

from typing import Any

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers.logger import Logger
from torch.utils.data import DataLoader, TensorDataset

import lightning_genae.models.base as base
from lightning_genae.experiment.train import log_last_training_values
from lightning_genae.experiment.trainer import scalar_metrics
from lightning_genae.lightning_internals import logging_step
from lightning_genae.models import GANModule, VAEModule

pytestmark = pytest.mark.quick

ITERATIONS = 7
EVERY = 3
# 0-based batches Lightning writes every 3 batches (2, 5); the run writes the final one (6) itself.
WRITTEN = [2, 5]


class Recorder(Logger):
    """Keeps the rows Lightning writes: (step, training values)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        values = {key: float(value) for key, value in metrics.items() if key.startswith("train/")}
        if values:
            self.rows.append((int(step), values))


class StopAfter(pl.Callback):
    """Asks the trainer to stop after the given 0-based batch, as EarlyStopping would."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if logging_step(trainer) == self.batch:
            trainer.should_stop = True


FAMILIES = {
    "gan": lambda: GANModule((1, 16, 16), width=8, latent_dim=4),
    "vae": lambda: VAEModule((1, 16, 16), width=8, latent_dim=4, kl_warmup=4),
}


def fit(
    family: str, every: int, callbacks: tuple[pl.Callback, ...] = (), iterations: int = ITERATIONS
) -> tuple[Any, pl.Trainer, Recorder]:
    pl.seed_everything(0, verbose=False)
    model = FAMILIES[family]()
    data = TensorDataset(torch.rand(64, 1, 16, 16) * 2 - 1, torch.zeros(64, dtype=torch.long))
    recorder = Recorder()
    trainer = pl.Trainer(
        max_steps=iterations * model.optimizer_steps_per_iteration,
        accelerator="cpu",
        logger=recorder,
        log_every_n_steps=every,
        callbacks=list(callbacks),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, train_dataloaders=DataLoader(data, batch_size=8))
    return model, trainer, recorder


@pytest.fixture(scope="module")
def reference() -> dict[str, dict[int, dict[str, float]]]:
    """Every batch's training values, as written when Lightning writes every batch."""
    rows = {}
    for family in FAMILIES:
        _, _, recorder = fit(family, every=1)
        rows[family] = dict(recorder.rows)
        assert sorted(rows[family]) == list(range(ITERATIONS)), family
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_rows_at_the_cadence_and_the_final_row_hold_the_values_of_their_batch(family, reference):
    model, trainer, recorder = fit(family, every=EVERY)
    # Exactly Lightning's steps, each with its own batch's values: a row with an earlier batch's values,
    # or at a step the model did not log (Lightning's rule drifted from the model's), fails here.
    assert [step for step, _ in recorder.rows] == WRITTEN
    for step, values in recorder.rows:
        assert values == reference[family][step], step
    assert model.last_logged_training == base.LoggedTraining(ITERATIONS - 1, written=False)
    log_last_training_values(trainer, model, scalar_metrics(trainer.callback_metrics))
    assert recorder.rows[-1] == (ITERATIONS - 1, reference[family][ITERATIONS - 1])
    assert len(recorder.rows) == len(WRITTEN) + 1


def test_values_are_recorded_only_at_batches_whose_values_are_written_and_never_through_self_log(
    monkeypatch,
):
    recorded: list[tuple[int, list[str], bool]] = []
    record = base.record_training_values
    logged_in_training: list[str] = []
    log = pl.LightningModule.log

    def counting_record(trainer: pl.Trainer, values, progress_bar, write: bool) -> None:
        recorded.append((logging_step(trainer), list(values), write))
        record(trainer, values, progress_bar, write)

    def counting_log(module: pl.LightningModule, name: str, *args: Any, **kwargs: Any) -> None:
        if module.trainer.training:
            logged_in_training.append(name)
        log(module, name, *args, **kwargs)

    monkeypatch.setattr(base, "record_training_values", counting_record)
    monkeypatch.setattr(pl.LightningModule, "log", counting_log)
    fit("gan", every=EVERY)
    # gan records its 4 values at the written batches and the final one (kept for the run), never between.
    names = ["train/loss_d", "train/loss_g", "train/d_real", "train/d_fake"]
    assert [(step, write) for step, _, write in recorded] == [(2, True), (5, True), (6, False)]
    assert all(sorted(values) == sorted(names) for _, values, _ in recorded), recorded
    assert logged_in_training == []


def test_a_stop_lightning_writes_gets_its_own_batch_values_once(reference):
    model, trainer, recorder = fit("gan", every=EVERY, callbacks=(StopAfter(3),))
    assert model.iteration == 4
    # Lightning writes the batch it stops after; the run must not write it again.
    assert recorder.rows == [(2, reference["gan"][2]), (3, reference["gan"][3])]
    log_last_training_values(trainer, model, scalar_metrics(trainer.callback_metrics))
    assert len(recorder.rows) == 2


@pytest.mark.parametrize(
    ("iterations", "last_batch_seen_at", "last_logged"),
    [
        # Never seen: callback_metrics holds batch 5's values (written by Lightning) when fit ends after 6.
        (7, None, base.LoggedTraining(5, written=True)),
        # Seen one batch early: batch 3's values were logged for the run to write, but fit ended after 4.
        (5, 3, base.LoggedTraining(3, written=False)),
    ],
)
def test_an_ending_the_model_did_not_foresee_writes_no_earlier_values_under_the_final_step(
    monkeypatch, iterations, last_batch_seen_at, last_logged
):
    # As if fit ended in a way `is_last_training_batch` does not know (say, a time limit).
    monkeypatch.setattr(
        base, "is_last_training_batch", lambda trainer, batch_idx: batch_idx == last_batch_seen_at
    )
    model, trainer, recorder = fit("gan", every=EVERY, iterations=iterations)
    assert model.last_logged_training == last_logged
    written = [step for step, _ in recorder.rows]
    log_last_training_values(trainer, model, scalar_metrics(trainer.callback_metrics))
    assert [step for step, _ in recorder.rows] == written
