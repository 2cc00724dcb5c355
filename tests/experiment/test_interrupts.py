"""Ctrl-C before a run's first iteration (while its augmenter trains) exits 130 and keeps nothing: the run's
own handler of signals before training stops the augmenter's Lightning fit too."""

from __future__ import annotations

import os
import signal

import pytest
from pytorch_lightning.callbacks import Callback
from tiny import TINY_RUN

import lightning_genae.experiment.augmenter as latent_module
from lightning_genae.experiment.cli import main


class CtrlCAtBatch(Callback):
    """Sends this process SIGINT at the end of one training batch, as a Ctrl-C in the terminal would."""

    def __init__(self, batch: int) -> None:
        self.batch = batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_while_the_augmenter_trains_exits_130_and_leaves_no_cache_entry(tmp_path, monkeypatch, capsys):
    cache = tmp_path / "augmenter-cache"
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: cache)
    monkeypatch.setattr(latent_module, "IterationProgressBar", lambda name: CtrlCAtBatch(batch=1))
    out = tmp_path / "run"
    args = ["--model", "ae", *TINY_RUN, "--augment", "ae", "--augmenter-steps", "50", "--max-steps", "2"]
    previous = signal.getsignal(signal.SIGINT)
    code = main([*args, "--output", str(out)])
    assert code == 130
    err = capsys.readouterr().err
    assert "stopped by SIGINT before training started" in err and "Traceback" not in err, err
    assert [path for path in cache.rglob("*") if not path.is_dir()] == [], "no partial cache entry"
    assert [path for path in cache.rglob("*") if path.is_dir()] == [], "no stray entry folder"
    assert not out.exists(), "no run folder"
    assert signal.getsignal(signal.SIGINT) == previous, "the Ctrl-C handler is given back"


@pytest.fixture(autouse=True)
def keep_default_sigint():
    """A test that fails half-way must not leave a handler that swallows the next Ctrl-C."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)
