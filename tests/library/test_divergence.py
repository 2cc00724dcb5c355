"""A diverging run stops with one line that names a finite checkpoint to resume from (or says there is
none), never writes a checkpoint holding NaN or inf, and leaves the last finite one as it was."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae.checkpoint import non_finite_state
from lightning_genae.experiment.cli import main
from lightning_genae.models import MODELS, AutoencoderModule, GANModule

REPO = Path(__file__).resolve().parents[2]
# Every family, the adversarial ones (gan, began, vaegan, aae) included, each with a tiny run.
TINY_RUNS = {
    **{model: ["--model", model, *TINY_RUN] for model in ["ae", "vae", "gan", "began", "vaegan", "aae"]},
    "rae": "--model rae --data sines --rnn-hidden 8 --latent-dim 4 --batch-size 32 --eval-every 3 "
    "--image-every 3 --eval-samples 64".split(),
}


def non_finite_tensors(value, name=""):
    """Names of the floating-point tensors anywhere in `value` that hold NaN or inf (written apart from the
    code under test, so that a mistake there cannot hide here)."""
    if isinstance(value, torch.Tensor):
        return [name] if value.is_floating_point() and not torch.isfinite(value).all() else []
    if isinstance(value, dict):
        return [bad for key, item in value.items() for bad in non_finite_tensors(item, f"{name}.{key}")]
    if isinstance(value, list | tuple):
        return [
            bad for index, item in enumerate(value) for bad in non_finite_tensors(item, f"{name}[{index}]")
        ]
    return []


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_finite_checkpoint(path: Path) -> dict:
    """The checkpoint's weights, buffers and optimizer state are all finite; returns its contents."""
    checkpoint = load(path)
    assert checkpoint["optimizer_states"], "the optimizer state is part of what must stay finite"
    assert non_finite_tensors(checkpoint["state_dict"]) == []
    assert non_finite_tensors(checkpoint["optimizer_states"]) == []
    return checkpoint


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def advised_checkpoint(message: str) -> tuple[Path, int]:
    """(path, step) of the checkpoint the divergence message says to resume from."""
    match = re.search(r"resume from (\S+) \(step (\d+)", message)
    assert match, message
    return Path(match.group(1)), int(match.group(2))


def checkpoint_files(run_dir: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in (run_dir / "checkpoints").glob("*.ckpt")}


def snapshot_checkpoints_before(family: type, iteration: int, run_dir: Path, monkeypatch) -> dict[str, bytes]:
    """Make `family`'s training step record the bytes of every checkpoint on disk when it reaches
    `iteration`, i.e. the files written before anything went wrong from there on."""
    snapshots: dict[str, bytes] = {}
    original = family.training_step

    def training_step(self, batch, batch_idx):
        if self.iteration == iteration:
            snapshots.update(
                {path.name: path.read_bytes() for path in (run_dir / "checkpoints").glob("*.ckpt")}
            )
        return original(self, batch, batch_idx)

    monkeypatch.setattr(family, "training_step", training_step)
    return snapshots


def diverge_at(family: type, iteration: int, monkeypatch) -> None:
    """From `iteration` on, training batches (images or series) hold NaN: every loss, then every weight,
    becomes NaN."""
    original = family.training_step

    def training_step(self, batch, batch_idx):
        if self.iteration >= iteration:
            images, labels = batch
            batch = (images * float("nan"), labels)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(family, "training_step", training_step)


def break_optimizer_state_at(family: type, iteration: int, monkeypatch) -> None:
    """From `iteration` on, an Adam second moment is inf: the losses and weights stay finite (its parameter
    just stops moving), the optimizer state does not."""
    original = family.training_step

    def training_step(self, batch, batch_idx):
        if self.iteration == iteration:
            optimizer = self.optimizers()
            optimizer = optimizer[0] if isinstance(optimizer, list) else optimizer
            next(iter(optimizer.state.values()))["exp_avg_sq"].fill_(float("inf"))
        return original(self, batch, batch_idx)

    monkeypatch.setattr(family, "training_step", training_step)


@pytest.mark.slow
@pytest.mark.parametrize("model", TINY_RUNS)
def test_a_diverging_run_stops_with_one_line_and_leaves_last_ckpt_finite_and_untouched(
    model, tmp_path, monkeypatch, capsys
):
    run_dir = tmp_path / model
    family = MODELS[model].module
    diverge_at(family, 4, monkeypatch)
    before = snapshot_checkpoints_before(family, 4, run_dir, monkeypatch)
    args = [*TINY_RUNS[model], "--ckpt-every", "2", "--max-steps", "10", "--output", str(run_dir)]
    assert main(args) == 2
    message = one_error_line(capsys)
    assert re.search(r"train/loss\w* became nan at step 4;", message), message
    last = run_dir / "checkpoints" / "last.ckpt"
    assert advised_checkpoint(message) == (last, 4)
    checkpoint = assert_finite_checkpoint(last)
    assert checkpoint["global_step"] == 4 * family.optimizer_steps_per_iteration
    # Every checkpoint on disk is the very file written before the divergence (best.ckpt too).
    assert (
        before
        and {path.name: path.read_bytes() for path in (run_dir / "checkpoints").glob("*.ckpt")} == before
    )
    assert not (run_dir / "summary.json").exists()


def test_a_run_resumes_from_the_checkpoint_a_divergence_message_names(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "vae"
    with monkeypatch.context() as patch:
        diverge_at(MODELS["vae"].module, 4, patch)
        args = ["--model", "vae", *TINY_RUN, "--ckpt-every", "2", "--max-steps", "10"]
        assert main([*args, "--output", str(run_dir)]) == 2
    message = one_error_line(capsys)
    advised, step = advised_checkpoint(message)
    lower_lr = re.search(r"\(lr (\S+)\)$", message).group(1)
    assert (step, lower_lr) == (4, "0.0001")
    assert main(["--resume", str(advised), "--lr", lower_lr, "--max-steps", "6"]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["global_step"] == 6
    assert all(torch.isfinite(torch.tensor(value)) for value in summary["final_metrics"].values())


def test_vae_at_lr_1e6_keeps_a_finite_last_ckpt_and_says_when_a_resume_fails_again(tmp_path, capsys):
    """At --lr 1e6 the batch-norm statistics and Adam's moments overflow at step 2.

    The step-1 checkpoint is finite, but its first Adam step moved every weight by about 1e6, so the next
    forward pass overflows at any learning rate: resuming it with --lr 1e-3 diverges again, and the
    message then advises starting again rather than the same checkpoint once more.
    """
    run_dir = tmp_path / "vae"
    args = ["--model", "vae", *TINY_RUN, "--lr", "1e6", "--ckpt-every", "1", "--max-steps", "10"]
    assert main([*args, "--output", str(run_dir)]) == 2
    message = one_error_line(capsys)
    # A tenth of 1e6 would diverge as surely: the family's default is advised.
    assert "became NaN or infinite by step 2" in message and "(lr 0.001)" in message, message
    advised, step = advised_checkpoint(message)
    assert (advised, step) == (run_dir / "checkpoints" / "last.ckpt", 1)
    written = advised.read_bytes()
    assert assert_finite_checkpoint(advised)["global_step"] == 1
    weights = assert_finite_checkpoint(advised)["state_dict"]["encoder.head.weight"]
    assert weights.abs().max() > 1e5  # one step at --lr 1e6: finite, and far gone
    assert main(["--resume", "last", "--output", str(run_dir), "--lr", "1e-3", "--max-steps", "10"]) == 2
    message = one_error_line(capsys)
    assert f"diverged again before writing a checkpoint newer than {advised} (step 1)" in message, message
    assert "start again with a lower learning rate (lr 0.0001)" in message
    assert advised.read_bytes() == written


def test_a_resume_at_a_higher_lr_that_diverges_is_advised_its_checkpoint_with_a_lower_one(tmp_path, capsys):
    """The checkpoint came from healthy training: the divergence is the new --lr's, not its weights'."""
    run_dir = tmp_path / "vae"
    args = ["--model", "vae", *TINY_RUN, "--ckpt-every", "1"]
    assert main([*args, "--max-steps", "2", "--output", str(run_dir)]) == 0
    written = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    capsys.readouterr()
    resume = ["--resume", "last", "--output", str(run_dir), "--lr", "1e6", "--ckpt-every", "100"]
    assert main([*resume, "--max-steps", "10"]) == 2
    message = one_error_line(capsys)
    assert "diverged again" not in message and "beyond recovery" not in message, message
    assert advised_checkpoint(message) == (run_dir / "checkpoints" / "last.ckpt", 2)
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == written
    # Into a folder of its own: a checkpoint is named (the one it resumed from, where that folder has none).
    last = run_dir / "checkpoints" / "last.ckpt"
    elsewhere = [
        "--resume",
        str(last),
        "--output",
        str(tmp_path / "v2"),
        "--lr",
        "1e6",
        "--ckpt-every",
        "100",
    ]
    assert main([*elsewhere, "--max-steps", "10"]) == 2
    message = one_error_line(capsys)
    assert "no checkpoint was written before it" not in message and "start again" not in message, message
    assert advised_checkpoint(message)[0].is_file()


@pytest.mark.slow
def test_every_ddp_process_stops_at_the_same_divergence_and_none_is_left_waiting(tmp_path):
    """Two gloo processes stop at the same check with the same line (a process stopping alone would leave
    the other blocked in a collective until the timeout), and last.ckpt stays finite."""
    run_dir = tmp_path / "ddp"
    args = ["--model", "vae", *TINY_RUN, "--lr", "1e6", "--ckpt-every", "1", "--max-steps", "10"]
    ddp = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--output", str(run_dir)]
    command = [sys.executable, str(REPO / "run.py"), *args, *ddp]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all("became NaN or infinite by step 2" in line for line in errors), errors
    assert assert_finite_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 1


def test_ae_at_a_huge_learning_rate_fails_instead_of_ending_with_inf_in_batch_norm(tmp_path, capsys):
    run_dir = tmp_path / "ae"
    args = ["--model", "ae", *TINY_RUN, "--lr", "1e6", "--max-steps", "10", "--output", str(run_dir)]
    assert main(args) == 2
    message = one_error_line(capsys)
    assert "running_var" in message and "became NaN or infinite" in message, message
    assert not (run_dir / "summary.json").exists()
    for path in (run_dir / "checkpoints").glob("*.ckpt"):
        assert_finite_checkpoint(path)


def test_a_divergence_before_any_checkpoint_says_none_exists(tmp_path, capsys):
    """`--model aae --lr 1e6` diverges at its second step: no checkpoint to advise, and none is made up."""
    run_dir = tmp_path / "aae"
    args = ["--model", "aae", *TINY_RUN, "--lr", "1e6", "--max-steps", "10", "--output", str(run_dir)]
    assert main(args) == 2
    message = one_error_line(capsys)
    assert "no checkpoint was written before it" in message and "(lr 0.001)" in message, message
    assert "resume" not in message
    assert list(run_dir.glob("**/*.ckpt")) == []
    # The advice taken: the folder holds the diverged run, which --overwrite replaces.
    advised = [*args[: args.index("--lr")], *args[args.index("--lr") + 2 :], "--lr", "0.001", "--overwrite"]
    assert (
        main(
            [*advised[: advised.index("--max-steps") + 1], "2", *advised[advised.index("--max-steps") + 2 :]]
        )
        == 0
    )


def test_best_ckpt_is_not_overwritten_when_the_optimizer_state_diverged(tmp_path, monkeypatch, capsys):
    """Losses stay finite, so only the check at a checkpoint write can see it; best.ckpt (step 3) stays."""
    run_dir = tmp_path / "ae"
    break_optimizer_state_at(AutoencoderModule, 4, monkeypatch)
    before = snapshot_checkpoints_before(AutoencoderModule, 4, run_dir, monkeypatch)
    args = ["--model", "ae", *TINY_RUN, "--ckpt-every", "100", "--max-steps", "10", "--output", str(run_dir)]
    assert main(args) == 2
    message = one_error_line(capsys)
    # Step 6 is a validation that improved val/loss: the refused write was best.ckpt's.
    assert re.match(r"error: optimizer_states\[0\]\.state\.\d+\.exp_avg_sq .*by step 6,", message), message
    best = run_dir / "checkpoints" / "best.ckpt"
    assert advised_checkpoint(message) == (best, 3)
    assert list(before) == ["best.ckpt"] and best.read_bytes() == before["best.ckpt"]
    assert_finite_checkpoint(best)


def test_the_final_save_of_last_ckpt_is_refused_and_the_earlier_one_kept(tmp_path, monkeypatch, capsys):
    """No periodic save or validation after step 4: the write refused is train.py's last.ckpt at the end."""
    run_dir = tmp_path / "gan"
    break_optimizer_state_at(GANModule, 4, monkeypatch)
    before = snapshot_checkpoints_before(GANModule, 4, run_dir, monkeypatch)
    args = ["--model", "gan", *TINY_RUN, "--ckpt-every", "4", "--eval-every", "20", "--image-every", "20"]
    assert main([*args, "--max-steps", "6", "--output", str(run_dir)]) == 2
    message = one_error_line(capsys)
    assert "by step 6, so that checkpoint was not written" in message, message
    last = run_dir / "checkpoints" / "last.ckpt"
    assert advised_checkpoint(message) == (last, 4)
    assert list(before) == ["last.ckpt"] and last.read_bytes() == before["last.ckpt"]
    assert not (run_dir / "summary.json").exists()


def test_noting_a_loss_never_reads_its_value_and_the_check_names_the_first_non_finite_one():
    model = AutoencoderModule([1, 8, 8], width=8, latent_dim=8)
    # A NaN noted is not looked at (a look would be a device sync, and would raise here).
    model.watch_losses(**{"train/loss_d": torch.tensor(0.5), "train/loss_g": torch.tensor(float("nan"))})
    model.watch_losses(**{"train/loss_d": torch.tensor(float("inf"))})
    assert model.first_non_finite_loss() == "train/loss_g became nan at step 0"
    assert model.first_non_finite_loss() is None  # checked losses are forgotten
    model.watch_losses(**{"train/loss": torch.tensor([1.0, 2.0])})
    assert model.first_non_finite_loss() is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device to detect synchronisation")
def test_noting_losses_on_a_gpu_never_synchronises_with_the_device():
    model = AutoencoderModule([1, 8, 8], width=8, latent_dim=8).cuda()
    loss = torch.ones(64, device="cuda").mean()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(100):
            model.watch_losses(**{"train/loss_d": loss, "train/loss_g": loss * 2})
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert model.first_non_finite_loss() is None


def test_non_finite_state_names_buffers_and_optimizer_state_but_not_other_entries():
    checkpoint = {
        "state_dict": {
            "decoder.bn.running_var": torch.tensor([1.0, float("inf")]),
            "decoder.bn.num_batches_tracked": torch.tensor(3),
            "decoder.weight": torch.ones(2),
        },
        "optimizer_states": [{"state": {0: {"exp_avg_sq": torch.tensor([float("nan")]), "step": 1.0}}}],
        # ModelCheckpoint keeps inf as the score to beat: not model state.
        "callbacks": {"ModelCheckpoint": {"kth_value": torch.tensor(float("inf"))}},
    }
    assert non_finite_state(checkpoint) == [
        "decoder.bn.running_var",
        "optimizer_states[0].state.0.exp_avg_sq",
    ]


def test_the_runs_first_loss_not_finite_says_no_learning_rate_is_the_cause(tmp_path, capsys):
    """Noted before the first optimizer step, it was computed at the weights as built: the advice to lower
    --lr (or to resume) cannot help."""
    model = AutoencoderModule([1, 8, 8], width=8, latent_dim=8)
    model.watch_losses(**{"train/loss": torch.tensor(float("nan"))})
    cause = model.first_non_finite_loss()
    assert cause.startswith("train/loss became nan at step 0, before any update: no learning rate is")
    # A GAN's generator loss at step 0 follows the discriminator's first step: no such claim.
    model.watch_losses(**{"train/loss_d": torch.tensor(0.5), "train/loss_g": torch.tensor(float("nan"))})
    assert model.first_non_finite_loss() == "train/loss_g became nan at step 0"


def test_a_model_whose_forward_pass_is_not_finite_from_the_start_is_told_so_not_to_lower_lr(
    tmp_path, monkeypatch, capsys
):
    def nan_step(self, batch, stage):
        loss = original(self, batch, stage)
        return loss * float("nan") if stage == "train" else loss

    original = AutoencoderModule.model_step
    monkeypatch.setattr(AutoencoderModule, "model_step", nan_step)
    args = ["--model", "ae", *TINY_RUN, "--max-steps", "3", "--output", str(tmp_path / "run")]
    assert main(args) == 2
    message = one_error_line(capsys)
    assert "became nan at step 0, before any update: no learning rate is the cause" in message, message
    assert "--lr" not in message


def test_a_resume_into_a_folder_without_checkpoints_is_advised_the_checkpoint_it_resumed_from(tmp_path):
    from lightning_genae.checkpoint import resume_advice

    given = tmp_path / "earlier" / "checkpoints" / "last.ckpt"
    advice = resume_advice(
        tmp_path / "new" / "checkpoints",
        1,
        lower_lr=1e-4,
        started_at=2,
        retried_lower=False,
        resumed_from=given,
    )
    assert advice == f"resume from {given} (step 2, all finite) with a lower learning rate (lr 0.0001)"
    again = resume_advice(
        tmp_path / "new" / "checkpoints", 1, lower_lr=1e-4, started_at=2, resumed_from=given
    )
    assert again.startswith(f"it diverged again before writing a checkpoint newer than {given} (step 2)")
    assert "no checkpoint was written" in resume_advice(tmp_path / "new", 1, lower_lr=1e-4)
