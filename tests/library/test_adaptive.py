"""ADA's controller (augmentation/adaptive.py) and what it drives: `--augment ada`, `--augment-p auto`.

The controller is tested with synthetic logits (a discriminator under our control): which way p moves, by
how much, when, that its state survives a checkpoint, and that under DDP (two gloo processes) every rank
moves p by the sums of all. Short CPU runs check that p moves in training, is logged, and comes back on
--resume. The bad inputs are rows of tests/cases/bad_inputs.csv (tests/experiment/test_bad_inputs.py runs
them).

Whether p *stays* near 0 on a large training set is tested with the controlled discriminator only: at a
test's budget (tens to hundreds of iterations) any discriminator separates the reals from an untrained
generator's fakes, whatever the size of the training set (measured: digits, 200 iterations, ae-d with
--augment-p auto, 64 and 1,000 training images, r_t near 1 for the first 50 iterations in both), so an
end-to-end "large set" run cannot tell the two cases apart.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import pytest
import torch
from adaptive_ranks import logits_with_mean_sign, observe_on_rank
from tiny import TINY_RUN

from lightning_genae.augmentation.adaptive import AdaptiveStrength
from lightning_genae.experiment import augmenter as latent_module
from lightning_genae.experiment.cli import main

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_p_rises_by_the_images_seen_over_kimg_when_r_t_is_above_target() -> None:
    strength = AdaptiveStrength(target=0.6, interval=4, kimg=1.0)
    for _ in range(4):
        strength.observe(logits_with_mean_sign(1.0))
    # 4 steps of 8 images: 32 / (1 * 1000).
    assert strength.p.item() == pytest.approx(32 / 1000)
    assert strength.rt.item() == pytest.approx(1.0)


def test_p_moves_only_every_interval_steps() -> None:
    strength = AdaptiveStrength(target=0.6, interval=4, kimg=1.0)
    for step in range(1, 12):
        strength.observe(logits_with_mean_sign(1.0))
        assert strength.p.item() == pytest.approx(32 / 1000 * (step // 4)), step


def test_p_stays_at_0_when_r_t_is_below_target_and_stops_at_1() -> None:
    strength = AdaptiveStrength(target=0.6, interval=2, kimg=0.001)
    for _ in range(10):
        strength.observe(logits_with_mean_sign(0.5))  # a discriminator that does not overfit
    assert strength.p.item() == 0.0
    assert strength.rt.item() == pytest.approx(0.5)
    for _ in range(10):
        strength.observe(logits_with_mean_sign(1.0))  # each update would add 16 images / 1 image
    assert strength.p.item() == 1.0
    for _ in range(2):
        strength.observe(logits_with_mean_sign(-1.0))
    assert strength.p.item() == 0.0, "falls back by one step's size (here all of it), clamped at 0"


@pytest.mark.parametrize("device", DEVICES)
def test_the_host_copy_of_p_is_one_update_behind(device: str) -> None:
    # On a GPU the copy goes through pinned memory and an event; on the CPU it is a clone.
    strength = AdaptiveStrength(target=0.0, interval=1, kimg=1.0)
    values = []
    for _ in range(3):
        strength.observe(logits_with_mean_sign(1.0).to(device))
        assert strength.p.device.type == device
        values.append((strength.p.item(), strength.p_host))
    assert [host for _, host in values] == [0.0, pytest.approx(values[0][0]), pytest.approx(values[1][0])]


def test_a_restored_controller_continues_as_the_uninterrupted_one() -> None:
    signs = [1.0, 1.0, 0.5, 1.0, -0.5, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0]
    uninterrupted = AdaptiveStrength(target=0.6, interval=3, kimg=0.1)
    for sign in signs:
        uninterrupted.observe(logits_with_mean_sign(sign))
    first = AdaptiveStrength(target=0.6, interval=3, kimg=0.1)
    for sign in signs[:5]:  # stops part-way through an interval
        first.observe(logits_with_mean_sign(sign))
    resumed = AdaptiveStrength(target=0.6, interval=3, kimg=0.1)
    resumed.load_state_dict(first.state_dict())
    for sign in signs[5:]:
        resumed.observe(logits_with_mean_sign(sign))
    for name in ("p", "rt"):
        assert getattr(resumed, name).item() == getattr(uninterrupted, name).item(), name
    assert resumed.p_host == uninterrupted.p_host
    assert uninterrupted.p.item() > 0


@pytest.mark.slow
def test_under_ddp_every_rank_moves_p_by_the_sums_of_all_ranks(tmp_path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Rank 0 alone would raise p (r_t 1 > 0.4), rank 1 alone would not (r_t 0): together r_t is 0.5.
    torch.multiprocessing.spawn(observe_on_rank, args=(port, [1.0, 0.0], str(tmp_path)), nprocs=2)
    states = [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]
    for state in states:
        assert state["rt"].item() == pytest.approx(0.5)
        # 2 ranks x 2 steps x 8 images: 32 / (1 * 1000).
        assert state["p"].item() == pytest.approx(32 / 1000)


# ----- in training -----

AUGMENTER = ["--augmenter-width", "8", "--augmenter-latent-dim", "8", "--augmenter-steps", "10"]
# 64 training digits: the discriminator says "real" to all of its reals within a few iterations, r_t = 1.
# A small --ada-kimg lets p move visibly within 12 iterations of 32 images (each update: 64 / 500).
FAST_CONTROLLER = ["--ada-kimg", "0.5", "--ada-interval", "2"]
RUN = [*TINY_RUN, "--model", "gan", "--train-size", "64", "--eval-samples", "50", *FAST_CONTROLLER]


@pytest.fixture(autouse=True)
def augmenter_cache(tmp_path_factory, monkeypatch) -> None:
    cache = tmp_path_factory.getbasetemp() / "adaptive-augmenters"
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: cache)


def logged(run_dir: Path, key: str) -> list[float]:
    with (run_dir / "metrics.csv").open(newline="") as file:
        return [float(row[key]) for row in csv.DictReader(file) if row.get(key)]


AUTO_P = ["--augment-p", "auto", *AUGMENTER]


@pytest.mark.parametrize(
    ("augment", "extra"),
    [("ae", AUTO_P), ("ae-d", AUTO_P), ("ada", []), ("ada+ae", AUTO_P)],
)
@pytest.mark.slow
def test_p_rises_when_the_discriminator_overfits_a_tiny_training_set(
    augment, extra, tmp_path, capsys
) -> None:
    args = [*RUN, "--augment", augment, *extra, "--max-steps", "12"]
    assert main([*args, "--output", str(tmp_path)]) == 0
    p, rt = logged(tmp_path, "train/augment_p"), logged(tmp_path, "train/ada_rt")
    assert p and rt and len(p) == len(rt), "p and r_t are logged every step into metrics.csv"
    assert all(0.0 <= value <= 1.0 for value in p) and all(-1.0 <= value <= 1.0 for value in rt)
    record = json.loads((tmp_path / "summary.json").read_text())["augmentation"]
    assert record["final_p"] > 0, "a discriminator of 64 training images overfits: p must rise"
    assert record["final_p"] == pytest.approx(p[-1], abs=1e-6)
    if extra:
        assert record["augment_p"] == "auto"
        assert (tmp_path / "config.yaml").read_text().count("augment_p: auto") == 1
        # config.yaml reads back: a re-run from it is the same run.
        assert main(["--config", str(tmp_path / "config.yaml"), "--print-config"]) == 0
        assert "augment_p: auto" in capsys.readouterr().out


@pytest.mark.parametrize("augment", ["ada+diffaug", "ada+ae-d"])
def test_ada_combines_with_the_other_discriminator_side_augmentations(augment, tmp_path) -> None:
    extra = AUGMENTER if "ae-d" in augment else []
    assert main([*RUN, "--augment", augment, *extra, "--max-steps", "3", "--output", str(tmp_path)]) == 0
    assert logged(tmp_path, "train/augment_p")


def test_ada_and_augment_p_auto_share_one_controller(tmp_path) -> None:
    from lightning_genae.augmentation.ada import AdaPipeline
    from lightning_genae.experiment.augmenter import attach_augmentation
    from lightning_genae.experiment.config import RunConfig
    from lightning_genae.experiment.resolve import resolve

    options = {"augment_p": "auto", "augmenter_width": 8, "augmenter_latent_dim": 8, "augmenter_steps": 2}
    config = RunConfig.from_dict(dict(model="gan", data="digits", augment="ada+ae", train_size=64, **options))
    resolved = resolve(config)
    attached = attach_augmentation(
        resolved.augment,
        resolved.build_datamodule(),
        seed=0,
        device=torch.device("cpu"),
        accelerator="cpu",
        total_iterations=lambda n: 10,
    )
    (pipeline,) = attached.discriminator_augmentation.transforms
    assert isinstance(pipeline, AdaPipeline)
    assert pipeline.p is attached.strength is attached.datamodule.strength


@pytest.mark.slow
def test_resume_keeps_p_and_continues_as_the_uninterrupted_run(tmp_path) -> None:
    # --ada-interval 3 and a checkpoint at iteration 4: the run stops part-way through an interval.
    args = [*RUN, "--augment", "ae", "--augment-p", "auto", "--ada-interval", "3", *AUGMENTER]
    args += ["--eval-every", "4", "--ckpt-every", "4", "--image-every", "4"]
    whole, half, resumed = tmp_path / "whole", tmp_path / "half", tmp_path / "resumed"
    assert main([*args, "--max-steps", "8", "--output", str(whole)]) == 0
    assert main([*args, "--max-steps", "4", "--output", str(half)]) == 0
    checkpoint = half / "checkpoints" / "last.ckpt"
    assert "adaptive_strength" in torch.load(checkpoint, weights_only=True)
    assert main(["--resume", str(checkpoint), "--max-steps", "8", "--output", str(resumed)]) == 0
    final = [json.loads((run / "summary.json").read_text())["augmentation"] for run in (whole, resumed)]
    assert final[0]["final_p"] > 0
    assert final[1]["final_p"] == final[0]["final_p"] and final[1]["final_ada_rt"] == final[0]["final_ada_rt"]
