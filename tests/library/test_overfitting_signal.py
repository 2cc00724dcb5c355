"""The overfitting signal (callbacks/overfitting.py): D's scores of fixed, clean training and validation
batches, in eval mode, at every validation."""

import csv
import json
from pathlib import Path

import pytest
import torch
from tiny import TINY_RUN

from lightning_genae.callbacks.overfitting import BATCH_SIZE, DiscriminatorOverfitting, overfitting_metric
from lightning_genae.checkpoint import RunCheckpoint
from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.base import SPLITS
from lightning_genae.experiment.cli import main
from lightning_genae.metrics.generative import seeded_subset
from lightning_genae.metrics.names import Direction, direction
from lightning_genae.models import (
    AAEModule,
    BEGANModule,
    GANModule,
    ScoringDiscriminator,
    VAEGANModule,
)
from lightning_genae.models.began import reconstruction_energy
from lightning_genae.seeding import int_seed

STEPS = 6  # TINY_RUN validates every 3 iterations: at 3, at 6, and once more in the final evaluation
LOGIT_METRICS = ("val/d_logit_train", "val/d_logit_val", "val/d_sign_train", "val/d_sign_val")
ENERGY_METRICS = ("val/d_energy_train", "val/d_energy_val")


def validation_rows(run_dir: Path, name: str) -> list[dict[str, str]]:
    with (run_dir / "metrics.csv").open() as handle:
        return [row for row in csv.DictReader(handle) if row.get(name)]


def final_metrics(run_dir: Path) -> dict[str, float]:
    return json.loads((run_dir / "summary.json").read_text())["final_metrics"]


def fixed_real_batch(split: str, seed: int = 0) -> torch.Tensor:
    """The batch the callback should score, chosen here from the stored split independently of the run."""
    datamodule = build_datamodule("digits", data_dir=".", batch_size=32, seed=seed)
    datamodule.setup("fit")
    train, val = datamodule.split_tensors("train")[0], datamodule.split_tensors("val")[0]
    n = min(BATCH_SIZE, len(train), len(val))
    images = {"train": train, "val": val}[split]
    return datamodule.to_model_range(
        images[seeded_subset(len(images), n, int_seed(seed, "overfitting batch", SPLITS.index(split)))]
    )


def scored_run(tmp_path: Path, model: type, args: list[str]) -> tuple[Path, list[torch.Tensor]]:
    """A tiny run that records every batch the family's `discriminator_scores` is given."""
    scored: list[torch.Tensor] = []
    original = model.discriminator_scores

    def recording(self, images):
        scored.append(images.detach().cpu().clone())
        return original(self, images)

    run_dir = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(model, "discriminator_scores", recording)
        assert main([*args, *TINY_RUN, "--max-steps", str(STEPS), "--output", str(run_dir)]) == 0
    return run_dir, scored


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[torch.Tensor]]:
    """A tiny GAN run whose discriminator sees DiffAugment-ed inputs in training."""
    return scored_run(tmp_path_factory.mktemp("gan"), GANModule, ["--model", "gan", "--augment", "diffaug"])


def test_gan_logs_the_logit_and_sign_of_both_batches_at_every_validation(gan_run):
    run_dir, _ = gan_run
    for name in LOGIT_METRICS:
        assert sorted({int(float(row["step"])) for row in validation_rows(run_dir, name)}) == [3, STEPS]
        assert name in final_metrics(run_dir)
    assert not validation_rows(run_dir, "val/d_energy_train")
    signs = [float(row[name]) for name in LOGIT_METRICS[2:] for row in validation_rows(run_dir, name)]
    assert all(-1.0 <= sign <= 1.0 for sign in signs)


def test_the_same_clean_real_images_are_scored_at_every_validation(gan_run):
    _, scored = gan_run
    # Two validations during training (the last one is the final evaluation's) and one more where the best
    # checkpoint is not the final weights, each scoring the training batch, then the validation batch.
    assert len(scored) >= 4 and len(scored) % 2 == 0
    train, val = fixed_real_batch("train"), fixed_real_batch("val")
    assert len(train) == len(val) == 180  # digits' 180 validation images, fewer than BATCH_SIZE
    for i in range(0, len(scored), 2):
        # Bit-identical to the stored split: not augmented, and the same images every time.
        assert torch.equal(scored[i], train) and torch.equal(scored[i + 1], val)


def test_the_signal_is_the_discriminator_on_the_clean_batch_in_eval_mode(gan_run):
    run_dir, _ = gan_run
    model = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").restore(GANModule, "test")
    assert not model.training
    with torch.no_grad():
        logits = {split: model.discriminator(fixed_real_batch(split)) for split in ("train", "val")}
    final = final_metrics(run_dir)
    for split, values in logits.items():
        assert final[f"val/d_logit_{split}"] == pytest.approx(values.mean().item(), abs=1e-5)
        assert final[f"val/d_sign_{split}"] == pytest.approx(values.sign().mean().item(), abs=1e-6)
    # In training mode (batch statistics) D would give other numbers: the mode is what the test pins down.
    model.train()
    with torch.no_grad():
        in_training_mode = model.discriminator(fixed_real_batch("train")).mean().item()
    assert final["val/d_logit_train"] != pytest.approx(in_training_mode, abs=1e-4)


@pytest.mark.slow
def test_began_logs_the_energies_of_both_batches(tmp_path):
    run_dir, scored = scored_run(tmp_path, BEGANModule, ["--model", "began"])
    for name in ENERGY_METRICS:
        assert sorted({int(float(row["step"])) for row in validation_rows(run_dir, name)}) == [3, STEPS]
    assert not validation_rows(run_dir, "val/d_logit_train")
    assert torch.equal(scored[0], scored[-2]) and torch.equal(scored[0], fixed_real_batch("train"))
    model = RunCheckpoint.load(run_dir / "checkpoints" / "last.ckpt", "test").restore(BEGANModule, "test")
    with torch.no_grad():
        images = fixed_real_batch("val")
        energy = reconstruction_energy(model.discriminator(images)[0], images).mean().item()
    assert final_metrics(run_dir)["val/d_energy_val"] == pytest.approx(energy, abs=1e-6)


def test_families_whose_discriminator_judges_images_score_them_and_others_do_not():
    shape = (1, 8, 8)
    images = torch.rand(3, *shape) * 2 - 1
    for family, kind in ((GANModule, "logit"), (VAEGANModule, "logit"), (BEGANModule, "energy")):
        model = family(shape, width=8, latent_dim=4)
        assert isinstance(model, ScoringDiscriminator)
        scores = model.eval().discriminator_scores(images)
        assert scores.kind == kind and scores.values.shape == (3,)
    # The adversarial autoencoder's discriminator judges latent codes, not images.
    assert not isinstance(AAEModule(shape, width=8, latent_dim=4), ScoringDiscriminator)


def test_the_fixed_batches_are_drawn_once_and_shrink_to_the_smaller_split():
    datamodule = build_datamodule("digits", data_dir=".", batch_size=32, train_size=40)
    datamodule.setup("fit")
    callback = DiscriminatorOverfitting(seed=3)
    first = callback.fixed_batches(datamodule)
    assert first["train"].shape[0] == first["val"].shape[0] == 40  # the --train-size subset is smaller
    assert callback.fixed_batches(datamodule) is first


def test_signal_names_are_in_the_vocabulary_and_have_no_better_side():
    for kind in ("logit", "sign", "energy"):
        for split in ("train", "val"):
            assert direction(overfitting_metric(kind, split)) is Direction.NONE
    assert {overfitting_metric(k, s) for k in ("logit", "sign") for s in ("train", "val")} == set(
        LOGIT_METRICS
    )
