"""--lr-schedule: the autoencoders' learning rate annealed over the run, kept in the checkpoint."""

from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae.cli import main


def final_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_cosine_schedule_anneals_the_learning_rate_to_zero_at_max_steps(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = main(["--model", "vae", *TINY_RUN, "--max-steps", "6", "--lr", "1e-3",
                 "--lr-schedule", "cosine", "--output", str(run_dir)])  # fmt: skip
    assert code == 0
    checkpoint = final_checkpoint(run_dir)
    (schedule,) = checkpoint["lr_schedulers"]
    assert schedule["last_epoch"] == 6
    (optimizer,) = checkpoint["optimizer_states"]
    assert optimizer["param_groups"][0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule_keeps_the_learning_rate(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    code = main(["--model", "ae", *TINY_RUN, "--max-steps", "3", "--lr", "2e-3", "--output", str(run_dir)])
    assert code == 0
    checkpoint = final_checkpoint(run_dir)
    assert checkpoint["lr_schedulers"] == []
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["lr"] == 2e-3


def test_a_family_without_a_schedule_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["--model", "aae", *TINY_RUN, "--max-steps", "3", "--lr-schedule", "cosine",
                 "--output", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    assert "--lr-schedule" in capsys.readouterr().err
