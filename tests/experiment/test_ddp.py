"""Generative metrics under DDP: each rank generates its share, features are gathered, rank 0 computes."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_genae.callbacks.metrics import FeatureBank, sample_generator
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import RunConfig

REPO = Path(__file__).resolve().parents[2]
# Relative difference allowed between the 1- and 2-process metrics. Both generate the very same samples
# (one random stream per chunk of 500, not per rank) and gather the features back into sample order, so
# the metrics are computed from identical arrays; what may differ is only float rounding where a library
# splits a sum across threads. Measured: identical to the last bit on this machine (OMP_NUM_THREADS=1).
# A gather that dropped or repeated a rank's share, or a rank drawing another rank's samples, moves FD by
# far more (tens of percent at this N).
TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def gan_checkpoint(tmp_path_factory, mnist_data_dir) -> Path:
    """A 3-iteration DCGAN on MNIST: digits' splits (359 test images) are smaller than one chunk of 500."""
    run_dir = tmp_path_factory.mktemp("gan") / "run"
    options = ["--data", "mnist", "--data-dir", str(mnist_data_dir), "--train-size", "256", "--width", "8"]
    options += ["--latent-dim", "8", "--batch-size", "32", "--eval-samples", "500", "--eval-every", "3"]
    assert main(["--model", "gan", *options, "--max-steps", "3", "--output", str(run_dir)]) == 0
    return run_dir / "checkpoints" / "last.ckpt"


def evaluate_options(checkpoint: Path, output: Path, devices: int) -> list[str]:
    # 1,200 samples are three chunks (500, 500, 200): with two ranks, rank 0 makes chunks 0 and 2 and
    # rank 1 chunk 1, so the shares are uneven and interleaved.
    options = ["--evaluate", str(checkpoint), "--output", str(output), "--eval-samples", "1200"]
    # One process in this one (DDP here would leave its process group and port behind in pytest).
    strategy = "ddp" if devices > 1 else "auto"
    return options + ["--accelerator", "cpu", "--devices", str(devices), "--strategy", strategy]


@pytest.mark.slow
def test_two_process_evaluation_gives_the_metrics_of_one_process(gan_checkpoint, tmp_path):
    assert main(evaluate_options(gan_checkpoint, tmp_path / "one", devices=1)) == 0
    # Two processes: run.py in its own process, Lightning starts the second rank as its child.
    command = [sys.executable, str(REPO / "run.py"), *evaluate_options(gan_checkpoint, tmp_path / "two", 2)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("one", "two"))
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert two["evaluation"] == one["evaluation"], "same split, backbone and sample counts"
    assert two["evaluation"]["test"]["n_fake"] == 1200
    for name in ("val/fd_classifier", "test/fd_classifier", "test/kid_classifier", "test/kid_std_classifier"):
        assert two["metrics"][name] == pytest.approx(one["metrics"][name], rel=TOLERANCE, abs=1e-12), name
    # The overfitting signal: every rank scores the same fixed batches and the values are averaged.
    for name in ("val/d_logit_train", "val/d_logit_val", "val/d_sign_train", "val/d_sign_val"):
        assert two["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-5, abs=1e-6), name


def run_two_processes(arguments: list[str]) -> None:
    """run.py with two gloo processes: Lightning starts the second rank as its child."""
    command = [sys.executable, str(REPO / "run.py"), *arguments]
    command += ["--accelerator", "cpu", "--strategy", "ddp", "--devices", "2"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def rows_after(run_dir: Path, after: int) -> list[dict[str, str]]:
    """The rows metrics.csv holds for iterations after `after`, training and validation, with Lightning's
    epoch column."""
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [row for row in csv.DictReader(file) if int(row["step"]) > after]


@pytest.mark.slow
def test_a_ddp_run_resumed_mid_epoch_trains_and_validates_as_the_uninterrupted_run(tmp_path):
    """Each rank's random streams (GAN noise) and its place in the data (on the device) come back on resume,
    and every rank validates with the batch-norm statistics the checkpoint holds. The GAN is augmented on
    both sides, so its resume also brings back ADA's controller stopped part-way through an interval whose
    sums differ by rank, and the data-side augmentation's replacement draws, which are each rank's own; the
    data-side wrapper reads the digits through the plain run's loader, so the plain GAN's resume is this
    run's too.

    200 digits in global batches of 32 are 7 iterations an epoch per rank: 4 + 4 stops mid-epoch and crosses
    into the next. Losses are logged every 2 iterations, so rows 5 and 7 come after the resume.
    """
    run = ["--model", "gan", "--data", "digits", "--width", "8", "--latent-dim", "8", "--batch-size", "32"]
    run += ["--train-size", "200", "--data-on-device", "on", "--eval-every", "2", "--eval-samples", "100"]
    run += ["--image-every", "1000", "--ckpt-every", "1000", "--no-test-split"]
    run += ["--augment", "ae+ada", "--ada-interval", "3", "--ada-kimg", "1", "--augmenter-steps", "20"]
    run += ["--augmenter-width", "8", "--augmenter-latent-dim", "8"]
    run_two_processes([*run, "--max-steps", "8", "--output", str(tmp_path / "uninterrupted")])
    run_two_processes([*run, "--max-steps", "4", "--output", str(tmp_path / "half")])
    checkpoint = tmp_path / "half" / "checkpoints" / "last.ckpt"
    run_two_processes(
        ["--resume", str(checkpoint), "--max-steps", "8", "--output", str(tmp_path / "resumed")]
    )
    resumed = rows_after(tmp_path / "resumed", after=4)
    assert [row["step"] for row in resumed if row["train/loss_d"]] == ["5", "7"]
    assert any(row.get("val/fd_classifier") for row in resumed), "validation rows are compared too"
    assert any(row["train/ada_rt"] for row in resumed)
    assert resumed == rows_after(tmp_path / "uninterrupted", after=4)


def test_gathered_features_come_back_in_sample_order_whatever_the_rank_order():
    bank = FeatureBank()
    # What the gather concatenates under two ranks: rank 0's chunks 0 and 2, then rank 1's chunk 1.
    bank.update(torch.tensor([[0.0], [1.0]]), torch.tensor([0, 1]))
    bank.update(torch.tensor([[4.0]]), torch.tensor([4]))
    bank.update(torch.tensor([[2.0], [3.0]]), torch.tensor([2, 3]))
    assert bank.compute().flatten().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_lost_or_repeated_sample_is_an_error_not_a_smaller_comparison():
    bank = FeatureBank()
    bank.update(torch.zeros(2, 1), torch.tensor([0, 0]))
    with pytest.raises(RuntimeError, match="lost or duplicated"):
        bank.compute()


def test_each_chunk_of_samples_has_its_own_stream_per_seed_and_stage():
    def draw(*key) -> torch.Tensor:
        return torch.randn(4, generator=sample_generator(*key))

    assert torch.equal(draw(0, "val", 1), draw(0, "val", 1))
    keys = [(0, "val", 0), (0, "val", 1), (0, "test", 0), (1, "val", 0)]
    assert len({tuple(draw(*key).tolist()) for key in keys}) == len(keys)


@pytest.mark.slow
def test_two_process_evaluation_averages_every_test_image_once(tmp_path):
    """digits' 359 test images do not split evenly over two processes. A split padded with a repeated image
    moved the test MSE from 0.490194 to 0.490243, and Lightning's integer mean of unequal item counts to
    0.491564; each process's own share and float sums give one process's value."""
    run_dir = tmp_path / "ae"
    options = ["--data", "digits", "--width", "8", "--latent-dim", "8", "--batch-size", "32"]
    assert main(["--model", "ae", *options, "--max-steps", "3", "--output", str(run_dir)]) == 0
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    assert main(["--evaluate", str(checkpoint), "--output", str(tmp_path / "one")]) == 0
    command = [sys.executable, str(REPO / "run.py"), "--evaluate", str(checkpoint)]
    command += [
        "--output",
        str(tmp_path / "two"),
        "--accelerator",
        "cpu",
        "--strategy",
        "ddp",
        "--devices",
        "2",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "it is recommended to use `Trainer(devices=1" not in result.stderr, result.stderr[-3000:]
    one, two = (json.loads((tmp_path / name / "eval.json").read_text()) for name in ("one", "two"))
    assert two["world_size"] == 2
    for name in ("val/loss", "val/mse", "test/loss", "test/mse", "test/psnr", "test/ssim"):
        assert two["metrics"][name] == pytest.approx(one["metrics"][name], rel=1e-6), name


@pytest.mark.parametrize(
    ("devices", "num_nodes", "several"), [("2", 1, True), ("0,1", 1, True), ("1", 2, True), ("1", 1, False)]
)
def test_an_adversarial_family_on_several_devices_gets_ddp_that_expects_unused_parameters(
    devices: str, num_nodes: int, several: bool
) -> None:
    """`--strategy auto` picks DDP for several devices; a GAN's D step leaves G without gradients, which
    plain DDP refuses, so the default strategy must be DDP with find_unused_parameters=True there."""
    from lightning_genae.experiment.trainer import build_strategy
    from lightning_genae.models import MODELS

    config = RunConfig(model="gan", accelerator="cpu", devices=devices, num_nodes=num_nodes)
    strategy = build_strategy(config, MODELS["gan"].module)
    if several:
        assert strategy == "ddp_find_unused_parameters_true"
    else:
        assert strategy == "auto"
    assert build_strategy(config, MODELS["vae"].module) == "auto", "a VAE uses every parameter"
