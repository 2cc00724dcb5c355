"""--lr-schedule: the autoencoders' learning rate annealed over the run, kept in the checkpoint."""

from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae.experiment.cli import main


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


@pytest.mark.parametrize("new_lr", [None, 2e-3])
def test_a_cosine_run_resumes_on_its_schedule_with_the_rate_asked_for(tmp_path: Path, new_lr) -> None:
    run_dir = tmp_path / "run"
    first = ["--model", "vae", *TINY_RUN, "--lr", "1e-3", "--lr-schedule", "cosine", "--output", str(run_dir)]
    assert main([*first, "--max-steps", "4"]) == 0
    again = ["--resume", "last", "--output", str(run_dir), "--max-steps", "8"]
    assert main([*again, *(["--lr", str(new_lr)] if new_lr else [])]) == 0
    checkpoint = final_checkpoint(run_dir)
    (schedule,) = checkpoint["lr_schedulers"]
    base = new_lr or 1e-3
    assert schedule["last_epoch"] == 8 and schedule["base_lrs"] == [base]
    (group,) = checkpoint["optimizer_states"][0]["param_groups"]
    assert group["initial_lr"] == base and group["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_new_rate_on_resume_keeps_the_schedules_factor() -> None:
    from types import SimpleNamespace

    from lightning_genae.experiment.resume import LearningRateOnResume

    def half_each_step(step: int) -> float:
        return 0.5**step

    def configured(lr: float) -> dict:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, half_each_step)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    restored = configured(1e-3)
    optimizer, schedule = restored["optimizer"], restored["lr_scheduler"]["scheduler"]
    optimizer.step()
    schedule.step()  # one step into the schedule: 1e-3 x 0.5
    trainer = SimpleNamespace(
        optimizers=[optimizer], lr_scheduler_configs=[SimpleNamespace(scheduler=schedule)]
    )
    LearningRateOnResume().on_train_start(
        trainer, SimpleNamespace(configure_optimizers=lambda: configured(4e-3))
    )
    assert optimizer.param_groups[0]["lr"] == pytest.approx(2e-3)
    optimizer.step()
    schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3), "the next step rescales the new base"
