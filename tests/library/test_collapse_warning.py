"""A GAN whose discriminator saturates (loss 0, runaway outputs) says so once, instead of ending silently."""

from __future__ import annotations

from tiny import TINY_RUN

from lightning_genae.experiment.cli import main
from lightning_genae.experiment.trainer import collapse_warning


def test_a_saturated_discriminator_is_named_once_with_the_lr_to_lower(tmp_path, capsys):
    args = [
        "--model",
        "gan",
        *TINY_RUN,
        "--lr",
        "1e3",
        "--max-steps",
        "10",
        "--output",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("warning: the discriminator saturated") == 1, out
    assert "lower --lr (this run used 1000)" in out


def test_a_healthy_run_gets_no_collapse_warning(tmp_path, capsys):
    args = ["--model", "gan", *TINY_RUN, "--max-steps", "3", "--output", str(tmp_path / "run")]
    assert main(args) == 0
    assert "saturated" not in capsys.readouterr().out


def test_the_rule_needs_both_a_zero_loss_and_runaway_outputs():
    saturated = {"train/loss_d": 0.0, "train/d_real": 2e8, "train/d_fake": -2e8}
    assert collapse_warning(saturated, 1e3) is not None
    assert collapse_warning({**saturated, "train/loss_d": 1e-3}, 1e3) is None
    assert collapse_warning({**saturated, "train/d_real": 15.0, "train/d_fake": -15.0}, 1e3) is None
    assert collapse_warning({"train/loss": 0.0}, 1e3) is None, "families without a discriminator"


def test_a_run_on_a_papers_fixed_schedule_is_not_told_to_lower_lr():
    saturated = {"train/loss_d": 0.0, "train/d_real": 2e8, "train/d_fake": -2e8}
    warning = collapse_warning(saturated, None)
    assert warning is not None and "lower --lr" not in warning and "another seed" in warning
