"""binarized_mnist: training pixels drawn anew per batch, val/test pixels fixed, and a VAE that scores its
test log-likelihood on them."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.binarized_mnist import BinarizedMNISTDataModule, binarize_fixed
from lightning_genae.experiment.cli import main


@pytest.fixture(scope="module")
def datamodule(request: pytest.FixtureRequest) -> BinarizedMNISTDataModule:
    data_dir = request.getfixturevalue("mnist_data_dir")
    module = BinarizedMNISTDataModule(data_dir, batch_size=32, seed=3)
    module.setup("fit")
    return module


def training_draw(datamodule: BinarizedMNISTDataModule, images: torch.Tensor, epoch: int, step: int):
    """What a training step at (epoch, step) receives for these stored images."""
    datamodule.trainer = SimpleNamespace(training=True, current_epoch=epoch, global_step=step, world_size=1)
    try:
        return datamodule.on_after_batch_transfer((images, torch.zeros(len(images))), 0)[0]
    finally:
        datamodule.trainer = None


@pytest.mark.quick
def test_training_pixels_are_binary_and_drawn_anew_each_epoch(datamodule):
    images = datamodule.split_tensors("train")[0][:32]
    # The stored training images keep MNIST's grey levels; the draws binarize them.
    assert len(images.unique()) > 2
    first = training_draw(datamodule, images, epoch=0, step=5)
    later = training_draw(datamodule, images, epoch=1, step=5 + 1718)
    for draw in (first, later):
        assert draw.dtype == torch.float32 and set(draw.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(first, later)
    # Pixels at intensity 0 or 255 are certain, so the two draws differ only on grey ones.
    certain = (images == 0) | (images == 255)
    assert torch.equal(first[certain], later[certain])
    # The same (seed, epoch, step) gives the same bits: a rerun or a resumed run trains on the same data.
    assert torch.equal(first, training_draw(datamodule, images, epoch=0, step=5))


def test_the_mean_of_many_draws_approaches_the_intensity(datamodule):
    images = datamodule.split_tensors("train")[0][:4]
    draws = torch.stack([training_draw(datamodule, images, 0, step) for step in range(400)])
    frequency = draws.add(1).div(2).mean(0)
    intensity = images.float() / 255
    # 400 draws: a pixel's frequency has std at most 0.025 around its intensity.
    assert (frequency - intensity).abs().max() < 0.15
    assert (frequency - intensity).abs().mean() < 0.01


def test_evaluation_pixels_are_binary_and_the_same_in_every_instance(datamodule, mnist_data_dir):
    other = build_datamodule("binarized_mnist", data_dir=mnist_data_dir, seed=11)
    for split in ("val", "test"):
        images, _ = datamodule.split_tensors(split)
        assert set(images.unique().tolist()) == {0, 255}
        assert torch.equal(images, other.split_tensors(split)[0])
    test = datamodule.split_tensors("test")[0]
    grey = build_datamodule("mnist", data_dir=mnist_data_dir).split_tensors("test")[0]
    # A binarization of the real test images: certain pixels kept, the ink's share matching the intensity.
    assert torch.equal(test[grey == 0], grey[grey == 0]) and torch.equal(test[grey == 255], grey[grey == 255])
    assert abs(test.float().mean().item() - grey.float().mean().item()) / 255 < 1e-3
    # Evaluation batches are already binary and pass as they are, scaled to [-1, 1].
    datamodule.trainer = SimpleNamespace(training=False, current_epoch=0, global_step=0, world_size=1)
    try:
        batch = datamodule.on_after_batch_transfer((test[:8], torch.zeros(8)), 0)[0]
    finally:
        datamodule.trainer = None
    assert torch.equal(batch, test[:8].float() / 127.5 - 1)


def test_fixed_binarization_depends_on_its_stream_only():
    images = torch.full((2, 1, 28, 28), 128, dtype=torch.uint8)
    assert torch.equal(binarize_fixed(images, 1), binarize_fixed(images.clone(), 1))
    assert not torch.equal(binarize_fixed(images, 1), binarize_fixed(images, 2))


@pytest.mark.slow
@pytest.mark.parametrize("nets", [("--width", "8"), ("--vae-nets", "paper")])
def test_a_vae_on_binarized_mnist_logs_its_importance_sampled_test_nll(
    tmp_path: Path, mnist_data_dir, monkeypatch, nets
):
    # The image metrics would first train a feature classifier on 55,000 images; this test is about the NLL.
    monkeypatch.setattr("lightning_genae.api.generative_metrics", lambda *args: None)
    run_dir = tmp_path / "vae"
    args = [
        *("--model", "vae", "--data", "binarized_mnist", "--data-dir", str(mnist_data_dir)),
        *("--train-size", "256", *nets, "--latent-dim", "8", "--batch-size", "32"),
        *("--max-steps", "3", "--eval-every", "3", "--eval-samples", "200", "--nll-samples", "8"),
        *("--output", str(run_dir)),
    ]
    assert main(args) == 0
    metrics = json.loads((run_dir / "summary.json").read_text())["final_metrics"]
    # A bound on the NLL of 784 binary pixels: at most what a uniform coin per pixel pays, and above 0.
    assert 0 < metrics["test/nll_is8"] < 784 * math.log(2) * 2


def test_a_runs_summary_records_that_its_generated_images_were_binarized(
    tmp_path: Path, mnist_data_dir, monkeypatch
):
    """A protocol of its own: summary.json's evaluation block says so, which grids compare seeds by."""
    from lightning_genae.callbacks.metrics import BINARIZED, GenerativeMetrics
    from lightning_genae.metrics.backbones import FeatureBackbone

    class Pooled(FeatureBackbone):
        """7x7 mean-pooled pixels: cheap features (the classifier would first train on 55,000 images)."""

        def __init__(self) -> None:
            # Under the classifier's name, which the metrics' vocabulary knows.
            super().__init__("classifier", 49, "7x7 mean-pooled pixels, in the classifier's place")

        def extract(self, images: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.avg_pool2d(images.float(), 4).flatten(1)

    monkeypatch.setattr(
        "lightning_genae.api.generative_metrics",
        lambda model, data, settings: GenerativeMetrics(
            Pooled(), num_samples=settings.eval_samples, seed=settings.seed
        ),
    )
    run_dir = tmp_path / "vae"
    args = [
        *("--model", "vae", "--data", "binarized_mnist", "--data-dir", str(mnist_data_dir)),
        *("--train-size", "256", "--width", "8", "--latent-dim", "8", "--batch-size", "32"),
        *("--max-steps", "2", "--eval-every", "2", "--eval-samples", "200", "--output", str(run_dir)),
    ]
    assert main(args) == 0
    evaluation = json.loads((run_dir / "summary.json").read_text())["evaluation"]
    assert evaluation["test"]["generated"] == BINARIZED, evaluation


def test_generated_images_are_scored_binarized_on_binary_data_and_as_they_are_elsewhere():
    """A Bernoulli decoder's samples are its grey pixel means; against binary real images the metrics would
    measure the kind of pixel. On binary data each generated pixel is drawn once, Bernoulli((x + 1) / 2),
    from the samples' own seeded stream; on other data the samples are scored as generated."""
    from lightning_genae.callbacks.metrics import GenerativeMetrics
    from lightning_genae.datamodules.mnist import MNISTDataModule
    from lightning_genae.datamodules.pixels import bernoulli_pixels
    from lightning_genae.metrics.backbones import FeatureBackbone

    assert BinarizedMNISTDataModule.binary_pixels and not MNISTDataModule.binary_pixels
    grey = torch.full((2000, 1, 4, 4), 0.5)  # probability 0.75
    bits = bernoulli_pixels(grey, torch.Generator().manual_seed(0))
    assert set(bits.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((bits > 0).double().mean()) - 0.75) < 0.01
    assert torch.equal(bits, bernoulli_pixels(grey, torch.Generator().manual_seed(0)))

    class Seen(FeatureBackbone):
        def __init__(self) -> None:
            super().__init__("seen", 2, "records the images it is given")
            self.images: list[torch.Tensor] = []

        def extract(self, images: torch.Tensor) -> torch.Tensor:
            self.images.append(images.clone())
            return images.flatten(1).float()[:, :2]

    class GreyModel(torch.nn.Module):
        device = torch.device("cpu")

        def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
            return torch.zeros(n, 1, 4, 4)  # every pixel's mean grey

    for binary in (True, False):
        backbone = Seen()
        callback = GenerativeMetrics(backbone, num_samples=64, seed=0)
        trainer = SimpleNamespace(global_rank=0, world_size=1, is_global_zero=True)
        callback._fake_features(trainer, GreyModel(), 64, "val", binary)
        seen = torch.cat(backbone.images)
        values = set(seen.unique().tolist())
        assert values == ({0, 255} if binary else {128}), values


def test_online_autoencoder_augmentation_replaces_binary_images_by_binary_ones(
    mnist_data_dir, tmp_path, monkeypatch
):
    """Decoded images are grey; set among binary reals they would let the discriminator tell the augmented
    ones by their kind of pixel. They are drawn as the training images are."""
    from lightning_genae.experiment.config import RunConfig
    from lightning_genae.experiment.resolve import resolve

    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path))
    options = {
        "augmenter_steps": 3,
        "augmenter_width": 8,
        "augmenter_latent_dim": 4,
        "augment_p": 0.5,
        "width": 8,
    }
    config = RunConfig(
        model="gan",
        data="binarized_mnist",
        data_dir=str(mnist_data_dir),
        train_size=200,
        augment="ae",
        batch_size=16,
        max_steps=20,
        plugin_options=options,
    )
    resolved = resolve(config)
    base = resolved.build_datamodule()
    base.prepare_data()
    base.setup("fit")
    attached = resolved.attach_augmentation(
        base, seed=0, device=torch.device("cpu"), accelerator="cpu", total_iterations=lambda images: 20
    )
    augmented = attached.datamodule
    trainer = SimpleNamespace(
        training=True,
        current_epoch=0,
        global_step=0,
        global_rank=0,
        world_size=1,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
        lightning_module=None,
    )
    augmented.trainer = base.trainer = trainer
    augmented.setup("fit")
    images, _ = augmented.on_after_batch_transfer(next(iter(augmented.train_dataloader())), 0)
    assert augmented.replaced_last_batch == 8
    assert set(images.unique().tolist()) == {-1.0, 1.0}
