"""AE-based augmentation: the augmenter's data and cache, batch replacement, gradients, CLI and grids."""

import csv
import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from tiny import TINY_RUN
from torch import Tensor, nn

from lightning_genae.augmentation import datamodule as pool_module
from lightning_genae.augmentation.datamodule import AugmentedDataModule
from lightning_genae.augmentation.discriminator import AugmenterOnInputs, Composed, DiffAugment
from lightning_genae.augmentation.latent import LatentAugmenter
from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.base import ImageDataModule, to_model_range
from lightning_genae.datamodules.streaming import PreparedSplit, StreamedSplits, prepare, write_items
from lightning_genae.errors import ConfigError, OptionError
from lightning_genae.experiment import augmenter as latent_module
from lightning_genae.experiment.augmenter import cache_path, load_augmenter
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import resolve_augment_plan
from lightning_genae.models import MODELS
from lightning_genae.models.gan import generator_loss

SHAPE = (1, 16, 16)
TINY = TINY_RUN + ["--eval-samples", "100"]
# Augmenter options; only valid with an augmentation that uses an augmenter (ae, vae, ae-d).
AUGMENTER = ["--augmenter-width", "8", "--augmenter-latent-dim", "8", "--augmenter-steps", "20"]


@pytest.fixture()
def augmenter_cache(tmp_path, monkeypatch) -> Path:
    """A fresh augmenter cache for one test (the session's feature cache stays shared)."""
    cache = tmp_path / "augmenter-cache"
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: cache)
    return cache


def read_summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def preview_rows(run_dir: Path) -> int:
    """Image rows in the run's augmentation preview: 4 rows of 8 per version (originals, data, D input)."""
    from PIL import Image

    (path,) = (run_dir / "images").glob("augmentation_step*.png")
    assert path.name == "augmentation_step0000000.png"
    height = Image.open(path).size[1]
    assert (height - 2) % (SHAPE[1] + 2) == 0, height
    return (height - 2) // (SHAPE[1] + 2)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def plan_for(model: str = "gan", **options):
    config = RunConfig.from_dict(dict(model=model, data="digits", **options))
    return resolve_augment_plan(config, MODELS[model].image_discriminator)


def digits(tmp_path: Path, train_size: int | None = None, seed: int = 0) -> ImageDataModule:
    return build_datamodule("digits", data_dir=str(tmp_path), batch_size=32, train_size=train_size, seed=seed)


def untrained_augmenter(noise: float = 0.5, interp: float = 0.5) -> LatentAugmenter:
    autoencoder = MODELS["ae"].module(SHAPE, latent_dim=8, width=8)
    return LatentAugmenter(autoencoder, noise=noise, interp=interp)


class PixelCode(nn.Module):
    """A stand-in autoencoder whose code is the image itself, so a perturbation can be read off the pixels."""

    def __init__(self, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.latent_dim = math.prod(image_shape)
        self.gain = nn.Parameter(torch.ones(()))

    def encode(self, images: Tensor) -> Tensor:
        return images.flatten(1) * self.gain

    def decode(self, codes: Tensor) -> Tensor:
        return codes.view(-1, *self.image_shape)


def fake_trainer(training: bool = True, iteration: int = 0) -> SimpleNamespace:
    return SimpleNamespace(training=training, lightning_module=SimpleNamespace(iteration=iteration))


def augmented_digits(tmp_path, augmenter, train_size=None, total_iterations=None, **options):
    base = digits(tmp_path, train_size)
    augmenter.fit(base.split_batches("train"))
    plan = plan_for(model="ae", augment="ae", **options)
    datamodule = AugmentedDataModule(base, plan, augmenter, seed=0, total_iterations=total_iterations)
    datamodule.setup("fit")
    return datamodule


# ----- the augmenter: trained once on the run's data, then cached -----


@pytest.mark.quick
def test_augmenter_is_trained_once_then_loaded_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path / "cache"))
    plan = plan_for(augment="ae", augmenter_width=8, augmenter_latent_dim=8, augmenter_steps=20)
    datamodule = digits(tmp_path)
    module, record = load_augmenter(plan, datamodule, seed=0, accelerator="cpu")
    path = Path(record["path"])
    assert record["source"] == "trained now"
    assert path.is_file() and path.parent == tmp_path / "cache" / "augmenters"
    assert record["family"] == "ae" and record["steps"] == 20 and record["latent_dim"] == 8
    assert not any(p.requires_grad for p in module.parameters()) and not module.training
    written = path.stat().st_mtime_ns

    again, record_again = load_augmenter(plan, digits(tmp_path), seed=0, accelerator="cpu")
    assert record_again["source"] == "cache" and Path(record_again["path"]) == path
    assert path.stat().st_mtime_ns == written, "a cached augmenter must not be rewritten"
    for key, value in module.state_dict().items():
        assert torch.equal(value, again.state_dict()[key])
    assert [p.name for p in path.parent.glob("*.ckpt")] == [path.name]

    # Whatever the augmenter depends on names another file.
    others = [
        cache_path(plan, digits(tmp_path), 1),
        cache_path(plan, digits(tmp_path, train_size=200), 0),
        cache_path(plan_for(augment="vae", augmenter_steps=20), datamodule, 0),
        cache_path(plan_for(augment="ae", augmenter_steps=21), datamodule, 0),
    ]
    assert len({path, *others}) == 5
    assert all(other.parent == path.parent for other in others)


def test_augmenter_sees_only_the_runs_train_size_subset(tmp_path, augmenter_cache, monkeypatch, capsys):
    sizes = []
    original = ImageDataModule.loader_over

    def recording(self, images, labels, train):
        if train:
            sizes.append(len(images))
        return original(self, images, labels, train)

    monkeypatch.setattr(ImageDataModule, "loader_over", recording)
    run_dir = tmp_path / "run"
    args = ["--model", "ae", "--augment", "ae", "--train-size", "200", *AUGMENTER, *TINY]
    assert main([*args, "--max-steps", "3", "--output", str(run_dir)]) == 0
    assert "on the 200 training images" in capsys.readouterr().out
    # The augmenter's own training run and the run itself: neither loads more than the 200 images.
    assert len(sizes) >= 2 and set(sizes) == {200}
    summary = read_summary(run_dir)
    # The subset is recorded by its own hash, and the whole training split it was drawn from by its own.
    whole = digits(tmp_path).full_training_sha256()
    assert summary["training_split_sha256"] == whole != summary["data_sha256"]["train"]
    augmenter = summary["augmentation"]["augmenter"]
    assert augmenter["source"] == "trained now" and augmenter["train_size"] == 200
    path = Path(augmenter["path"])
    assert path.parent == augmenter_cache and "-ts200-seed0-" in path.name
    stored = torch.load(path, map_location="cpu", weights_only=True)["genae_config"]
    assert stored["train_size"] == 200 and stored["seed"] == 0 and stored["model"] == "ae"


def test_augmenter_on_a_split_smaller_than_its_batch_trains_on_the_whole_split(tmp_path, augmenter_cache):
    run_dir = tmp_path / "run"
    args = ["--model", "ae", "--augment", "ae", "--train-size", "40", *AUGMENTER, *TINY, "--batch-size", "8"]
    assert main([*args, "--max-steps", "2", "--output", str(run_dir)]) == 0
    path = Path(read_summary(run_dir)["augmentation"]["augmenter"]["path"])
    stored = torch.load(path, map_location="cpu", weights_only=True)["genae_config"]
    assert stored["batch_size"] == 40 and stored["train_size"] == 40


# ----- online mode: a fraction of each training batch, nothing else -----


def changed_rows(before: Tensor, after: Tensor) -> Tensor:
    return (before != after).flatten(1).any(dim=1)


@pytest.mark.parametrize(("p", "expected"), [(0.0, 0), (0.25, 8), (0.3, 10), (1.0, 32)])
def test_online_mode_replaces_round_p_times_batch_images(tmp_path, p, expected):
    datamodule = augmented_digits(tmp_path, untrained_augmenter(), augment_p=p)
    images, labels = next(iter(datamodule.train_dataloader()))
    assert images.dtype == torch.uint8 and len(images) == 32
    datamodule.trainer = fake_trainer(training=True)
    out_images, out_labels = datamodule.on_after_batch_transfer((images, labels.clone()), 0)
    real = to_model_range(images)
    changed = changed_rows(real, out_images)
    assert int(changed.sum()) == expected == datamodule.replaced_last_batch
    # The others are bit-identical to the plain scaled batch; labels are never touched.
    assert torch.equal(out_images[~changed], real[~changed])
    assert torch.equal(out_labels, labels)
    assert out_images.dtype == torch.float32 and out_images.min() >= -1 and out_images.max() <= 1


def test_validation_and_test_batches_are_never_augmented(tmp_path):
    datamodule = augmented_digits(tmp_path, untrained_augmenter(), augment_p=1.0)
    datamodule.trainer = fake_trainer(training=False)
    for loader in (datamodule.val_dataloader(), datamodule.test_dataloader()):
        images, labels = next(iter(loader))
        out_images, out_labels = datamodule.on_after_batch_transfer((images, labels), 0)
        assert torch.equal(out_images, to_model_range(images)) and torch.equal(out_labels, labels)
    assert datamodule.replaced_last_batch == 0
    # Metrics read the splits directly: those are the base's real images.
    assert datamodule.split_tensors("val")[0] is datamodule.base.split_tensors("val")[0]


@pytest.mark.quick
def test_online_augmentation_runs_inside_a_lightning_fit(tmp_path):
    """The hook is really called by the Trainer: training batches carry replacements, validation ones not."""
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import Callback

    seen = {"train": [], "val": []}

    class Spy(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["train"].append((trainer.datamodule.replaced_last_batch, batch[0].dtype))

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["val"].append(batch[0].clone())

    datamodule = augmented_digits(tmp_path, untrained_augmenter(), augment_p=0.25)
    model = MODELS["ae"].module(SHAPE, latent_dim=8, width=8)
    trainer = pl.Trainer(
        max_steps=3,
        limit_val_batches=2,
        val_check_interval=3,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Spy()],
    )
    trainer.fit(model, datamodule=datamodule)
    assert seen["train"] == [(8, torch.float32)] * 3
    val_images = to_model_range(datamodule.split_tensors("val")[0][:64])
    assert len(seen["val"]) == 2 and torch.equal(torch.cat(seen["val"]), val_images)


def test_anneal_takes_p_linearly_to_zero(tmp_path):
    datamodule = augmented_digits(
        tmp_path, untrained_augmenter(), augment_p=0.4, augment_anneal=True, total_iterations=10
    )
    for iteration in range(0, 16):
        datamodule.trainer = fake_trainer(iteration=iteration)
        assert datamodule.current_p() == pytest.approx(0.4 * max(0.0, 1 - iteration / 10))
    # The count replaced follows the annealed p: at iteration 5, round(0.2 * 32) = 6.
    datamodule.trainer = fake_trainer(iteration=5)
    images, labels = next(iter(datamodule.train_dataloader()))
    out, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    assert datamodule.replaced_last_batch == 6 == int(changed_rows(to_model_range(images), out).sum())
    datamodule.trainer = fake_trainer(iteration=10)
    out, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    assert datamodule.replaced_last_batch == 0 and torch.equal(out, to_model_range(images))

    constant = augmented_digits(tmp_path, untrained_augmenter(), augment_p=0.4, total_iterations=10)
    constant.trainer = fake_trainer(iteration=9)
    assert constant.current_p() == 0.4


# ----- offline mode: a pool concatenated with the real data -----


@pytest.mark.parametrize(
    ("train_size", "pool", "expected"), [(None, 300, 300), (200, None, 200), (200, 500, 500)]
)
def test_offline_pool_has_the_asked_size_and_its_sources_labels(tmp_path, train_size, pool, expected):
    # A code that is the image, no noise, no interpolation: each pool image is a copy of its source.
    augmenter = LatentAugmenter(PixelCode(SHAPE), noise=0.0, interp=0.0)
    options = {"augment_pool": pool} if pool is not None else {}
    datamodule = augmented_digits(tmp_path, augmenter, train_size, augment_mode="offline", **options)
    real_images, real_labels = datamodule.split_tensors("train")
    pool_images, pool_labels = datamodule._pool
    assert pool_images.dtype == torch.uint8 and pool_images.shape == (expected, *SHAPE)
    assert pool_labels.dtype == torch.int64 and pool_labels.shape == (expected,)
    flat_real = real_images.flatten(1)
    for image, label in zip(pool_images.flatten(1), pool_labels, strict=True):
        sources = (flat_real == image).all(dim=1)
        assert bool(sources.any()), "a pool image must come from a training image"
        assert int(label) in real_labels[sources].tolist()
    # Training iterates over the real split followed by the pool; nothing is replaced online.
    all_images, all_labels = datamodule.train_images()
    assert torch.equal(all_images, torch.cat([real_images, pool_images]))
    assert torch.equal(all_labels, torch.cat([real_labels, pool_labels]))
    loader = datamodule.train_dataloader()
    assert len(loader.dataset) == len(real_images) + expected
    assert len(loader) == (len(real_images) + expected) // 32
    datamodule.trainer = fake_trainer()
    images, labels = next(iter(loader))
    out, _ = datamodule.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(out, to_model_range(images)) and datamodule.replaced_last_batch == 0
    assert f"pool of {expected} augmented images" in datamodule.summary()


@pytest.mark.quick
def test_offline_pool_images_are_augmented(tmp_path):
    datamodule = augmented_digits(
        tmp_path, LatentAugmenter(PixelCode(SHAPE), noise=0.5, interp=0.5), augment_mode="offline"
    )
    real_images, _ = datamodule.split_tensors("train")
    pool_images, _ = datamodule._pool
    assert len(pool_images) == len(real_images)
    copies = (pool_images.flatten(1)[:, None, :] == real_images.flatten(1)[None, :100, :]).all(-1)
    assert not bool(copies.any()), "with noise, pool images are new images"


def test_the_offline_pool_of_a_streamed_split_is_the_in_memory_pool_written_to_the_cache(
    tmp_path, monkeypatch
):
    prepare(build_datamodule("digits"), "digits", tmp_path / "prepared")
    read_whole = []
    monkeypatch.setattr(StreamedSplits, "split_tensors", lambda self, split: read_whole.append(split))
    streamed = build_datamodule("digits", data_dir=str(tmp_path / "prepared"), batch_size=32)
    augmenter = LatentAugmenter(PixelCode(SHAPE), noise=0.5, interp=0.5)
    augmenter.fit(streamed.split_batches("train"))
    plan = plan_for(model="ae", augment="ae", augment_mode="offline", augment_pool=1700)
    pools = []
    for base in (streamed, digits(tmp_path)):
        datamodule = AugmentedDataModule(base, plan, augmenter, seed=0)
        datamodule.setup("fit")
        pools.append(datamodule._pool)
    written = PreparedSplit(pools[0]).__getitems__(list(range(1700)))
    assert all(torch.equal(a, b) for a, b in zip(written, pools[1], strict=True))
    assert not read_whole, "the streamed training split was read whole"


def test_a_streamed_offline_pool_is_written_once_per_seed(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path / "cache"))
    prepare(build_datamodule("digits"), "digits", tmp_path / "prepared")
    writes = []
    monkeypatch.setattr(pool_module, "write_items", lambda *args: writes.append(write_items(*args)))
    plan = plan_for(model="ae", augment="ae", augment_mode="offline", augment_pool=50)
    augmenter, folders = untrained_augmenter(), []
    for seed in (0, 0, 1):
        streamed = build_datamodule("digits", data_dir=str(tmp_path / "prepared"), batch_size=32)
        datamodule = AugmentedDataModule(streamed, plan, augmenter, seed=seed)
        datamodule.setup("fit")
        folders.append(datamodule._pool)
    assert len(writes) == 2, "the second run with seed 0 reads the first one's pool"
    assert folders[0] == folders[1] != folders[2]
    assert len(PreparedSplit(folders[2])) == 50
    assert "in the training process" in datamodule.summary()


def test_a_streamed_offline_pool_smaller_than_a_batch_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path / "cache"))
    prepare(build_datamodule("digits"), "digits", tmp_path / "prepared")
    plan = plan_for(model="ae", augment="ae", augment_mode="offline", augment_pool=31)
    streamed = build_datamodule("digits", data_dir=str(tmp_path / "prepared"), batch_size=32)
    with pytest.raises(OptionError) as refused:
        AugmentedDataModule(streamed, plan, untrained_augmenter(), seed=0).setup("fit")
    assert refused.value.option == "augment_pool"


def test_offline_summary_says_offline_before_the_pool_exists(tmp_path):
    plan = plan_for(model="ae", augment="ae", augment_mode="offline", augment_pool=300)
    augmenter = LatentAugmenter(PixelCode(SHAPE), noise=0.0, interp=0.0)
    text = AugmentedDataModule(digits(tmp_path), plan, augmenter).summary()
    assert "online" not in text and "pool" in text


# ----- the perturbation: same-class partners -----


CLASS_STEP = 40


def coded_images(labels: list[int]) -> Tensor:
    """2x2 images whose first pixel says the class and second the sample, so codes can be decoded."""
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.uint8) * CLASS_STEP
    images[:, 0, 0, 1] = torch.arange(len(labels), dtype=torch.uint8)
    return images


def class_of(codes: Tensor) -> list[int]:
    return torch.round((codes[:, 0] + 1) * 127.5 / CLASS_STEP).long().tolist()


def test_partners_come_from_the_same_class():
    bank_labels = [0] * 20 + [2] * 20 + [5] * 20
    order = torch.randperm(60, generator=torch.Generator().manual_seed(0))
    images, labels = coded_images(bank_labels)[order], torch.tensor(bank_labels)[order]
    augmenter = LatentAugmenter(PixelCode((1, 2, 2)), noise=0.0, interp=1.0).fit([(images, labels)])
    assert augmenter.class_count.tolist() == [20, 0, 20, 0, 0, 20]
    assert class_of(augmenter.bank_codes) == sorted(bank_labels)

    generator = torch.Generator().manual_seed(1)
    asked = torch.tensor([0, 2, 5] * 100)
    partners = augmenter.bank_partners(asked, generator)
    assert class_of(partners) == asked.tolist()
    # Partners are spread over the class, not always the same image.
    for label in (0, 2, 5):
        assert len(set(partners[asked == label][:, 1].tolist())) >= 15

    # Unknown labels, an absent class and a label beyond the bank draw from the whole bank.
    for unknown in (-1, 1, 99):
        drawn = class_of(augmenter.bank_partners(torch.full((300,), unknown), generator))
        assert set(drawn) == {0, 2, 5}, unknown

    # Interpolating towards a same-class partner keeps the class pixel while the rest moves.
    source = to_model_range(images)
    out = augmenter(source, labels, generator=generator)
    assert class_of(out.flatten(1)) == labels.tolist()
    assert int(changed_rows(source, out).sum()) > 40


def test_unlabelled_bank_pairs_any_images():
    images = coded_images([0] * 10 + [3] * 10)
    augmenter = LatentAugmenter(PixelCode((1, 2, 2)), noise=0.0, interp=1.0).fit(
        [(images, torch.full((20,), -1))]
    )
    assert augmenter.class_count.tolist() == [20]
    drawn = class_of(augmenter.bank_partners(torch.full((200,), -1), torch.Generator().manual_seed(0)))
    assert set(drawn) == {0, 3}


# ----- discriminator-side augmentation: differentiable, frozen, outside the GAN -----


@pytest.mark.quick
@pytest.mark.parametrize("augment", ["diffaug", "ae-d", "ae-d+diffaug"])
def test_discriminator_augmentation_lets_gradients_reach_the_generator(tmp_path, augment):
    torch.manual_seed(0)
    augmenter = untrained_augmenter().fit(digits(tmp_path).split_batches("train"))
    transforms = [AugmenterOnInputs(augmenter, p=1.0)] if "ae-d" in augment else []
    transforms += [DiffAugment("color,translation,cutout")] if "diffaug" in augment else []
    gan = MODELS["gan"].module(SHAPE, latent_dim=8, width=8, discriminator_augmentation=Composed(transforms))
    plain = MODELS["gan"].module(SHAPE, latent_dim=8, width=8)
    parameters = {id(p) for p in gan.parameters()}
    fake = gan.generator(torch.randn(16, 8))
    shown = gan.discriminator_input(fake.detach())
    assert not torch.allclose(shown, fake.detach()), "the augmentation must act"
    generator_loss(gan.discriminate(fake), "ns").backward()
    for name, parameter in gan.generator.named_parameters():
        assert parameter.grad is not None, name
        assert bool(torch.isfinite(parameter.grad).all()) and bool(parameter.grad.abs().sum() > 0), name
    # The frozen augmenter learns nothing and is no part of the GAN's weights or optimizers.
    assert all(p.grad is None and not p.requires_grad for p in augmenter.parameters())
    assert set(gan.state_dict()) == set(plain.state_dict())
    assert sum(p.numel() for p in gan.parameters()) == sum(p.numel() for p in plain.parameters())
    assert not any(id(p) in parameters for p in augmenter.parameters())
    # Batch-norm statistics stay the augmenter's own, whatever mode the GAN or a caller asks for.
    gan.train()
    augmenter.train()
    assert not any(module.training for module in augmenter.autoencoder.modules())


# ----- command line, end to end -----


@pytest.mark.slow
def test_gan_runs_with_ae_and_diffaug_then_reuses_the_cached_augmenter(tmp_path, augmenter_cache, capsys):
    first, second = tmp_path / "ae+diffaug", tmp_path / "ae+ae-d"
    args = ["--model", "gan", *TINY, *AUGMENTER, "--max-steps", "6"]
    assert main([*args, "--augment", "ae+diffaug", "--output", str(first)]) == 0
    # Both halves are on the console: the data side in the run folder's line, the D side on its own.
    out = capsys.readouterr().out
    assert "ae augmentation online, p=0.25" in out
    assert "discriminator inputs: diffaug color,translation,cutout (translation 0.125, cutout 0.5)" in out
    summary = read_summary(first)
    block = summary["augmentation"]
    assert block["augment"] == "ae+diffaug" and block["augment_p"] == 0.25
    assert block["augment_mode"] == "online" and block["diffaug_policy"] == "color,translation,cutout"
    assert block["discriminator_side"] == ["diffaug color,translation,cutout (translation 0.125, cutout 0.5)"]
    augmenter = block["augmenter"]
    assert augmenter["source"] == "trained now" and augmenter["family"] == "ae"
    assert augmenter["steps"] == 20 and augmenter["train_size"] is None
    assert math.isfinite(augmenter["val_recon_mse"]) and augmenter["val_recon_mse"] > 0
    path = Path(augmenter["path"])
    assert path.parent == augmenter_cache and path.is_file()
    assert summary["global_step"] == 6 and "augmentation online, p=0.25" in summary["data_summary"]
    assert preview_rows(first) == 12, "originals, their ae augmentation and what D sees"
    last = torch.load(first / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any("augment" in key or "autoencoder" in key for key in last["state_dict"])
    written = path.stat().st_mtime_ns

    # The same augmenter, now also on the discriminator's inputs: loaded, not trained again.
    assert main([*args, "--augment", "ae+ae-d", "--output", str(second)]) == 0
    cached = read_summary(second)["augmentation"]
    assert cached["augment"] == "ae+ae-d" and "diffaug_policy" not in cached
    assert cached["augmenter"]["source"] == "cache" and Path(cached["augmenter"]["path"]) == path
    assert path.stat().st_mtime_ns == written
    assert [p.name for p in augmenter_cache.glob("*.ckpt")] == [path.name]
    assert preview_rows(second) == 12
    last = torch.load(second / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any("augment" in key or "autoencoder" in key for key in last["state_dict"])


def test_an_offline_pool_of_the_default_size_records_its_size(tmp_path, augmenter_cache):
    run_dir = tmp_path / "run"
    args = ["--model", "ae", "--augment", "ae", "--augment-mode", "offline", "--train-size", "200"]
    assert main([*args, *TINY, *AUGMENTER, "--max-steps", "2", "--output", str(run_dir)]) == 0
    block = read_summary(run_dir)["augmentation"]
    assert block["augment_pool"] == 200, "as many as the training split"
    assert "discriminator_side" not in block


def test_autoencoder_trains_on_a_vae_augmenters_offline_pool(tmp_path, augmenter_cache, capsys):
    run_dir = tmp_path / "run"
    args = ["--model", "ae", "--augment", "vae", "--augment-mode", "offline", "--augment-pool", "300"]
    assert main([*args, *TINY, *AUGMENTER, "--max-steps", "3", "--output", str(run_dir)]) == 0
    summary = read_summary(run_dir)
    block = summary["augmentation"]
    assert block["augment"] == "vae" and block["augment_pool"] == 300 and "augment_p" not in block
    assert block["augmenter"]["family"] == "vae" and block["augmenter"]["source"] == "trained now"
    assert "vae augmentation offline pool of 300 augmented images" in summary["data_summary"]
    assert preview_rows(run_dir) == 8, "originals and their vae augmentation; an AE has no discriminator"
    assert {"test/loss", "test/mse"} <= set(summary["final_metrics"])
    # config.yaml records the resolved augmentation and re-validates as it is.
    capsys.readouterr()
    assert main(["--config", str(run_dir / "config.yaml"), "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["augment"] == "vae" and printed["augment_mode"] == "offline"
    assert printed["augment_pool"] == 300
    assert printed["augment_noise"] == 0.5 and printed["augment_p"] is None


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """A plain AE run on 200 digits (seed 0) and a GAN run, to pass as --augment-ckpt."""
    root = tmp_path_factory.mktemp("augment-ckpt")
    made = {}
    for model, extra in (("ae", ["--train-size", "200"]), ("gan", [])):
        assert main(["--model", model, *TINY, *extra, "--max-steps", "2", "--output", str(root / model)]) == 0
        made[model] = root / model / "checkpoints" / "last.ckpt"
    return made


def test_augment_ckpt_of_a_matching_ae_run_is_used(tmp_path, checkpoints, augmenter_cache):
    run_dir = tmp_path / "run"
    args = ["--augment-ckpt", str(checkpoints["ae"]), *"--model ae --augment ae --train-size 200".split()]
    assert main([*args, *TINY, "--max-steps", "3", "--output", str(run_dir)]) == 0
    augmenter = read_summary(run_dir)["augmentation"]["augmenter"]
    assert augmenter["source"] == "checkpoint" and augmenter["path"] == str(checkpoints["ae"])
    assert augmenter["family"] == "ae" and augmenter["train_size"] == 200 and augmenter["latent_dim"] == 8
    assert not augmenter_cache.exists(), "a given augmenter must not be trained again"


@pytest.mark.parametrize("mode", ["online", "offline"])
def test_augment_ckpt_with_options_that_train_an_augmenter_is_refused(tmp_path, checkpoints, capsys, mode):
    args = ["--augment-ckpt", str(checkpoints["ae"]), *"--model ae --augment ae --train-size 200".split()]
    args += ["--augment-mode", mode]
    extra = ["--augmenter-width", "16", "--augmenter-steps", "5"]
    assert main([*args, *TINY, *extra, "--max-steps", "3", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --augmenter-width trains the augmenter") and "\n" not in err, err
    assert err.endswith("(the same for --augmenter-steps)"), err
    assert not (tmp_path / "run").exists()


INVALID = {
    "diffaug without a discriminator": (["--model", "vae", "--augment", "diffaug"], "discriminator"),
    "ae and vae together": (["--augment", "ae+vae"], "ae+vae"),
    "option of no augmentation": (["--augment", "none", "--augment-p", "0.5"], "--augment-p does"),
    "pool online": (["--augment", "ae", "--augment-pool", "10"], "--augment-pool sizes"),
    "noise without augmenter": (["--augment", "diffaug", "--augment-noise", "0.1"], "--augment-noise does"),
    "p above one": (["--augment", "ae", "--augment-p", "1.5"], "--augment-p"),
    "negative noise": (["--augment", "ae", "--augment-noise", "-0.1"], "--augment-noise"),
    "unknown diffaug policy": (["--augment", "diffaug", "--diffaug-policy", "nope"], "--diffaug-policy"),
    "unknown augmentation": (["--augment", "ae+mixup"], "mixup"),
}


@pytest.mark.parametrize("name", list(INVALID))
def test_invalid_augmentation_options_exit_2_with_one_line(name, tmp_path, capsys):
    args, expected = INVALID[name]
    model = [] if "--model" in args else ["--model", "gan"]
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        sys.exit(main([*model, *args, *TINY, "--max-steps", "2", "--output", str(run_dir)]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert expected in err and "Traceback" not in err
    assert not run_dir.exists(), "bad input must not leave a run folder behind"


def relabelled(checkpoint: Path, folder: Path, **changes) -> Path:
    """A copy of `checkpoint` whose stored run configuration says something else, and that records other
    training data (the data is compared by content; the configuration only explains the difference)."""
    content = torch.load(checkpoint, map_location="cpu", weights_only=True)
    content["genae_config"].update(changes)
    for value in content.values():
        if isinstance(value, dict) and "train_sha256" in value:
            value["train_sha256"] = "0" * 64
    path = folder / "relabelled.ckpt"
    torch.save(content, path)
    return path


CKPT_INVALID = {
    "missing file": (lambda made, tmp: tmp / "nowhere.ckpt", [], "no checkpoint file"),
    "not an autoencoder": (lambda made, tmp: made["gan"], [], "holds a --model gan run"),
    "another train size": (lambda made, tmp: made["ae"], ["--train-size", "100"], "--train-size"),
    "all the data": (lambda made, tmp: made["ae"], [], "--train-size"),
    "another subset seed": (lambda made, tmp: made["ae"], ["--train-size", "200", "--seed", "1"], "seed"),
    "another dataset": (
        lambda made, tmp: relabelled(made["ae"], tmp, data="mnist"),
        ["--train-size", "200"],
        "--data mnist",
    ),
}


@pytest.mark.parametrize("name", list(CKPT_INVALID))
def test_unusable_augment_ckpt_exits_2_with_one_line(name, tmp_path, checkpoints, augmenter_cache, capsys):
    checkpoint, extra, expected = CKPT_INVALID[name]
    args = ["--model", "ae", "--augment", "ae", "--augment-ckpt", str(checkpoint(checkpoints, tmp_path))]
    assert main([*args, *extra, *TINY, "--max-steps", "2", "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "--augment-ckpt" in err and expected in err and "Traceback" not in err
    assert not augmenter_cache.exists(), "a rejected checkpoint must not start a training of its own"
    assert not (tmp_path / "run").exists(), "bad input must not leave a run folder behind"


def test_augment_ckpt_of_the_other_family_is_rejected(tmp_path, checkpoints, capsys):
    args = ["--augment-ckpt", str(checkpoints["ae"]), *"--model ae --augment vae --train-size 200".split()]
    code = main([*args, *TINY, "--max-steps", "2", "--output", str(tmp_path / "run")])
    assert code == 2 and "--augment-ckpt" in capsys.readouterr().err


def test_a_finished_cell_is_not_skipped_once_its_augment_ckpt_file_holds_another_augmenter(
    tmp_path, checkpoints, capsys
):
    given = tmp_path / "augmenter.ckpt"
    shutil.copyfile(checkpoints["ae"], given)
    grid = ["--augment-ckpt", str(given), *"--model ae --augment ae --train-size 200 --seeds 0".split()]
    grid += [*TINY, "--max-steps", "2", "--output", str(tmp_path / "grid")]
    assert main(grid) == 0
    summary = read_summary(tmp_path / "grid" / "ae-ts200-seed0")
    recorded = summary["augmentation"]["augmenter"]
    assert recorded["path"] == str(given) and len(recorded["sha256"]) == 64
    # The same file again: the finished cell is skipped; so it is where the same bytes moved elsewhere.
    assert main(grid) == 0 and "finished (step 2), skipped" in capsys.readouterr().out
    moved = tmp_path / "moved.ckpt"
    shutil.copyfile(given, moved)
    assert main([str(moved) if arg == str(given) else arg for arg in grid]) == 0
    assert "finished (step 2), skipped" in capsys.readouterr().out
    # Retrained under the same name (here: other weights in the same checkpoint).
    contents = torch.load(given, weights_only=True)
    name = next(key for key, value in contents["state_dict"].items() if value.is_floating_point())
    contents["state_dict"][name] = contents["state_dict"][name] + 1
    torch.save(contents, given)
    assert main(grid) == 2
    err = capsys.readouterr().err
    assert "its contents are not the finished run's augmenter" in err


def test_a_run_is_not_resumed_with_another_augmenter_under_its_augment_ckpt_file(
    tmp_path, checkpoints, capsys
):
    given = tmp_path / "augmenter.ckpt"
    shutil.copyfile(checkpoints["ae"], given)
    run_dir = tmp_path / "run"
    args = ["--augment-ckpt", str(given), *"--model ae --augment ae --train-size 200".split(), *TINY]
    assert main([*args, "--max-steps", "2", "--output", str(run_dir)]) == 0
    kept = given.read_bytes()
    contents = torch.load(given, weights_only=True)
    name = next(key for key, value in contents["state_dict"].items() if value.is_floating_point())
    contents["state_dict"][name] = contents["state_dict"][name] + 1
    torch.save(contents, given)
    capsys.readouterr()
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "4"]) == 2
    err = capsys.readouterr().err
    assert f"--augment-ckpt {given} holds another augmenter" in err and str(run_dir) in err
    assert read_summary(run_dir)["global_step"] == 2
    given.write_bytes(kept)
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "4"]) == 0


def test_a_run_resumed_with_a_cached_augmenter_trained_again_to_other_weights_says_so(
    tmp_path, monkeypatch, capsys
):
    """A cache deleted (or node-local) and trained again elsewhere gives another augmenter under the same
    name: the run's second half is another augmenter's, and a line says so."""
    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path / "cache"))
    run_dir = tmp_path / "run"
    args = [*"--model gan --augment ae --train-size 200".split(), *TINY, *AUGMENTER]
    assert main([*args, "--max-steps", "2", "--output", str(run_dir)]) == 0
    (cached,) = (tmp_path / "cache" / "augmenters").glob("*.ckpt")
    assert read_summary(run_dir)["augmentation"]["augmenter"]["weights_sha256"]
    contents = torch.load(cached, weights_only=True)
    name = next(key for key, value in contents["state_dict"].items() if value.is_floating_point())
    contents["state_dict"][name] = contents["state_dict"][name] * 1.3
    torch.save(contents, cached)
    capsys.readouterr()
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "4"]) == 0
    err = capsys.readouterr().err
    assert f"the augmenter {cached} (cache) is not the one the run in {run_dir} trained with so far" in err
    # The checkpoints now name the augmenter the run went on with: resumed with it, nothing to say.
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "6"]) == 0
    assert "is not the one the run" not in capsys.readouterr().err


# ----- ablation grids -----

GRID = ["--model", "gan", *TINY, "--max-steps", "2", "--eval-every", "2", "--image-every", "2"]


@pytest.mark.slow
def test_grid_runs_every_cell_and_summarize_rebuilds_the_report(tmp_path):
    root = tmp_path / "grid"
    assert main([*GRID, "--augment", "none,diffaug", "--seeds", "0,1", "--output", str(root)]) == 0
    cells = ["diffaug-tsfull-seed0", "diffaug-tsfull-seed1", "none-tsfull-seed0", "none-tsfull-seed1"]
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == cells
    for cell in cells:
        summary = read_summary(root / cell)
        assert summary["augment"] == cell.split("-")[0] and summary["global_step"] == 2
        assert summary["config"]["diffaug_policy"] == (
            "color,translation,cutout" if "diffaug" in cell else None
        )
    rows = read_csv(root / "ablation.csv")
    assert sorted(row["cell"] for row in rows) == cells
    assert {row["status"] for row in rows} == {"ok"}
    assert (root / "ablation.md").is_file() and (root / "ablation.png").is_file()
    report = {name: (root / name).read_bytes() for name in ("ablation.csv", "ablation.md")}

    for name in ("ablation.csv", "ablation.md", "ablation.png"):
        (root / name).unlink()
    assert main(["--summarize", str(root)]) == 0
    assert {name: (root / name).read_bytes() for name in report} == report
    assert (root / "ablation.png").is_file()


def test_grid_index_runs_only_that_cell_and_ends_it_with_one_line(tmp_path, capsys):
    root = tmp_path / "grid"
    args = [*GRID, "--augment", "none,diffaug", "--seeds", "0,1", "--grid-index", "1"]
    assert main([*args, "--output", str(root)]) == 0
    out = capsys.readouterr().out
    # A cell ends with its headline, not the table of every metric (summary.json holds them all).
    assert "final metrics (step" not in out
    metrics = read_summary(root / "none-tsfull-seed1")["final_metrics"]
    headline = f"final: test/fd_classifier {metrics['test/fd_classifier']:.6g}; {len(metrics)} metrics"
    assert f"{headline} in summary.json" in out.splitlines()
    assert not (root / "ablation.csv").exists(), "one array task does not summarize the grid"
    # Train size outermost, then augment, then seed: cell 1 is none with seed 1.
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["none-tsfull-seed1"]
    assert read_summary(root / "none-tsfull-seed1")["seed"] == 1


@pytest.mark.parametrize(
    "option",
    [["--augment-p", "0.5"], ["--augment-noise", "0.1"], ["--augment-pool", "10"]],
    ids=lambda option: option[0],
)
def test_grid_with_an_option_no_cell_uses_exits_2(tmp_path, capsys, option):
    root = tmp_path / "grid"
    assert main([*GRID, "--augment", "none,diffaug", *option, "--output", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and option[0] in err and "Traceback" not in err
    assert not root.exists()


def test_failed_cell_is_reported_and_the_others_run(tmp_path, monkeypatch, augmenter_cache, capsys):
    import lightning_genae.experiment.train

    real_run = lightning_genae.experiment.train.run

    def run_or_fail(resolved, resume=None, **options):
        if resolved.config.augment == "none":
            raise RuntimeError("injected failure\nsecond line")
        return real_run(resolved, resume, **options)

    monkeypatch.setattr(lightning_genae.experiment.train, "run", run_or_fail)
    root = tmp_path / "grid"
    args = ["--model", "ae", *TINY, *AUGMENTER, "--max-steps", "2", "--augment", "none,ae"]
    assert main([*args, "--output", str(root)]) == 1
    assert "none-tsfull-seed0 FAILED: RuntimeError: injected failure" in capsys.readouterr().err
    failed = json.loads((root / "none-tsfull-seed0" / "failed.json").read_text())
    assert failed["error"] == "RuntimeError: injected failure" and "Traceback" in failed["traceback"]
    assert not (root / "none-tsfull-seed0" / "summary.json").exists()
    summary = read_summary(root / "ae-tsfull-seed0")
    assert summary["augmentation"]["augmenter"]["source"] == "trained now"
    assert summary["config"]["augmenter_width"] == 8
    rows = {row["cell"]: row for row in read_csv(root / "ablation.csv")}
    assert rows["ae-tsfull-seed0"]["status"] == "ok"
    assert rows["none-tsfull-seed0"]["status"] == "failed"
    assert "injected failure" in rows["none-tsfull-seed0"]["error"]
    assert "failed" in (root / "ablation.md").read_text()


def test_fast_dev_run_checks_the_augmentation_with_a_one_step_augmenter(tmp_path):
    run_dir = tmp_path / "check"
    args = ["--model", "gan", "--augment", "ae+ae-d", *TINY, *AUGMENTER, "--fast-dev-run"]
    assert main([*args, "--output", str(run_dir)]) == 0
    augmenter = read_summary(run_dir)["augmentation"]["augmenter"]
    # A set-up check must not spend the full --augmenter-steps (the step count is part of the cache key, so
    # a real run never loads this one-step augmenter).
    assert augmenter["steps"] == 1
    assert not list((run_dir / "checkpoints").glob("*.ckpt"))


@pytest.mark.parametrize("augment", ["diffaug", "ae-d", "ae+ae-d"])
def test_discriminator_side_augmentation_needs_the_image_discriminator_protocol(augment):
    # Being adversarial is not enough: the family must take the augmentation and apply it to its inputs,
    # or diffaug would be silently ignored. The adversarial autoencoder's D judges codes, not images
    # (tests/library/test_models.py holds the registry's flag to the module's protocol).
    assert MODELS["aae"].module.adversarial
    config = RunConfig(model="aae", data="digits", augment=augment)
    with pytest.raises(ConfigError, match="discriminator of images") as error:
        resolve_augment_plan(config, MODELS["aae"].image_discriminator)
    assert "--model gan" in str(error.value)
    assert resolve_augment_plan(config, MODELS["gan"].image_discriminator).discriminator_side


def test_the_model_is_given_the_discriminator_side_augmentation_the_plan_builds(tmp_path):
    from lightning_genae.experiment.augmenter import attach_augmentation

    def attached(augment: str):
        return attach_augmentation(
            plan_for(augment=augment),
            digits(tmp_path),
            seed=0,
            device=torch.device("cpu"),
            accelerator="cpu",
            total_iterations=lambda n: 10,
        )

    diffaug = attached("diffaug").discriminator_augmentation
    assert (
        repr(diffaug)
        == "DiscriminatorAugmentation(diffaug color,translation,cutout (translation 0.125, cutout 0.5))"
    )
    assert attached("none").discriminator_augmentation is None
    gan = MODELS["gan"].module(SHAPE, latent_dim=8, width=8, discriminator_augmentation=diffaug)
    images = torch.rand(4, *SHAPE) * 2 - 1
    assert gan.discriminator_input(images).shape == images.shape
    assert not torch.equal(gan.discriminator_input(images), images)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (
            ["--augmenter-latent-dim", "2000000000"],
            "--augment ae with --augmenter-steps 5, --augmenter-width 8, ",
        ),
        (
            ["--augment-mode", "offline", "--augment-pool", "2000000000"],
            "--augment-pool 2000000000 does not fit",
        ),
    ],
    ids=["augmenter", "offline-pool"],
)
def test_an_augmenter_or_pool_too_large_for_memory_is_one_line_naming_its_options(
    tmp_path, monkeypatch, capsys, options, named
):
    monkeypatch.setenv("GENAE_CACHE_DIR", str(tmp_path / "cache"))
    output = tmp_path / "run"
    run = ["--model", "gan", "--augment", "ae", "--augmenter-steps", "5", "--augmenter-width", "8", *options]
    assert main([*run, "--width", "8", "--max-steps", "2", "--output", str(output)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and named in err and "does not fit in memory" in err
    assert not output.exists()


def test_ae_d_moves_each_chosen_input_towards_another_input_of_the_whole_batch():
    """At a small p few inputs are chosen; partners drawn among them alone would often be the input itself,
    so the interpolation's strength would change with p and the batch size."""

    class Identity(torch.nn.Module):
        latent_dim = 4

        def encode(self, images):
            return images.flatten(1)

        def decode(self, codes):
            return codes.view(len(codes), 1, 2, 2)

    augmenter = LatentAugmenter(Identity(), noise=0.0, interp=1.0)
    on_inputs = AugmenterOnInputs(augmenter, p=0.1)
    torch.manual_seed(0)
    moved = chosen = 0
    for _ in range(500):
        images = torch.rand(16, 1, 2, 2) * 1.8 - 0.9
        with torch.random.fork_rng():
            chosen += int((torch.rand(16) < 0.1).sum())  # the draw AugmenterOnInputs makes first
        moved += int((on_inputs(images) != images).flatten(1).any(1).sum())
    assert chosen > 600 and moved / chosen > 0.95
