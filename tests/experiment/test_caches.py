"""Caches keyed by content: the augmenter and the real features follow the images, not a dataset's name.

Replacing a folder's images in place must retrain the augmenter and recompute the real features; a cache
file that is damaged (or was put there by someone else) is replaced with a one-line notice, never trusted
and never reported as a bad option the user did not give; `--augment-ckpt` must be trained on this data.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from refusals import one_line
from test_checkpoint import WritesAFileWhenUnpickled
from tiny import TINY_RUN

from lightning_genae.augmentation.latent import LatentAugmenter, reconstruction_mse
from lightning_genae.datamodules import build_datamodule
from lightning_genae.datamodules.base import EVALUATION_CONTENT_KEY, TRAIN_CONTENT_KEY, InMemoryDataModule
from lightning_genae.experiment import augmenter as latent_module
from lightning_genae.experiment.augmenter import cache_path, load_augmenter
from lightning_genae.experiment.cli import main
from lightning_genae.experiment.config import RunConfig
from lightning_genae.experiment.resolve import resolve_augment_plan
from lightning_genae.metrics import classifier as classifier_lib
from lightning_genae.metrics.backbones import FeatureBackbone, load_backbone
from lightning_genae.metrics.generative import RealFeatures, reference_order
from lightning_genae.models import MODELS

FOLDER_IMAGES = 120  # val 6 (even: the interpolation grid pairs validation images), test 12
AUGMENTER = {"augmenter_width": 8, "augmenter_latent_dim": 8, "augmenter_steps": 10}


@pytest.fixture()
def augmenter_cache(tmp_path, monkeypatch) -> Path:
    cache = tmp_path / "augmenter-cache"
    monkeypatch.setattr(latent_module, "default_cache_dir", lambda: cache)
    return cache


def write_folder(folder: Path, inverted: bool = False) -> None:
    """FOLDER_IMAGES grayscale 16x16 images in two class subfolders (bright squares on dark, or inverted)."""
    rng = np.random.default_rng(0)
    for index in range(FOLDER_IMAGES):
        pixels = np.zeros((16, 16), dtype=np.uint8)
        top, left = rng.integers(0, 8, size=2)
        pixels[top : top + 8, left : left + 8] = 200 + index % 50
        if inverted:
            pixels = 255 - pixels
        path = folder / f"class{index % 2}" / f"{index:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)


def folder_data(folder: Path) -> InMemoryDataModule:
    return build_datamodule("folder", data_dir=str(folder), batch_size=16, image_size=16, channels=1)


def augmenter_plan(**options):
    config = RunConfig.from_dict(dict(model="gan", data="folder", augment="ae", **{**AUGMENTER, **options}))
    return resolve_augment_plan(config, MODELS["gan"].image_discriminator)


class MeanPixels(FeatureBackbone):
    """A stand-in backbone (per-row means of the image) that counts how often it extracts."""

    def __init__(self) -> None:
        super().__init__("meanpixels", 16, "mean pixels per row (test backbone)")
        self.extracted = 0

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        self.extracted += len(images)
        return images.float().mean(dim=(1, 3))


def test_other_weights_under_the_same_description_compute_their_own_real_features(tmp_path):
    """The cache is keyed by the weights' whole SHA-256, not by the description that names its prefix."""
    folder = tmp_path / "images"
    write_folder(folder)
    data = folder_data(folder)
    cpu = torch.device("cpu")
    first, second = MeanPixels(), MeanPixels()
    first.weights_sha256 = "ab" * 32
    second.weights_sha256 = "ab" * 4 + "cd" * 28  # the same first 8 digits
    RealFeatures(first, tmp_path / "cache").get(data, "train", cpu)
    RealFeatures(second, tmp_path / "cache").get(data, "train", cpu)
    assert second.extracted == first.extracted > 0, "the second weights are not read from the first's cache"
    again = MeanPixels()
    again.weights_sha256 = "ab" * 32
    RealFeatures(again, tmp_path / "cache").get(data, "train", cpu)
    assert again.extracted == 0, "the same weights are read from the cache"


class LinearFeatures(FeatureBackbone):
    """A stand-in backbone with weights and no weights file, as one built in Python is."""

    def __init__(self, seed: int) -> None:
        super().__init__("classifier", 4, "my own classifier")
        self.project = torch.nn.Linear(64, 4)
        with torch.no_grad():
            self.project.weight.copy_(torch.randn(4, 64, generator=torch.Generator().manual_seed(seed)))
            self.project.bias.zero_()
        self.extracted = 0

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        self.extracted += len(images)
        return self.project(torch.nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1))


def test_networks_without_a_weights_file_under_one_description_compute_their_own_real_features(tmp_path):
    """A backbone built in Python is keyed by its parameters: another network under the same description
    got the first's cached real features, and its FD was off by a factor of 175."""
    folder = tmp_path / "images"
    write_folder(folder)
    data = folder_data(folder)
    cpu = torch.device("cpu")
    first, second, again = LinearFeatures(1), LinearFeatures(2), LinearFeatures(1)
    features = RealFeatures(first, tmp_path / "cache").get(data, "train", cpu)
    other = RealFeatures(second, tmp_path / "cache").get(data, "train", cpu)
    assert second.extracted == first.extracted > 0 and not torch.allclose(features, other)
    assert torch.equal(RealFeatures(again, tmp_path / "cache").get(data, "train", cpu), features)
    assert again.extracted == 0, "the same weights are read from the cache"


# ----- the same hash everywhere -----


def test_one_hasher_of_content_shared_by_the_classifier_and_the_caches(tmp_path):
    folder = tmp_path / "images"
    write_folder(folder)
    data = folder_data(folder)
    before = data.content_sha256("train")
    fingerprint = classifier_lib.training_fingerprint(data, seed=0, epochs=5)
    assert folder_data(folder).content_sha256("train") == before, "the same files hash alike"
    write_folder(folder, inverted=True)
    again = folder_data(folder)
    assert again.content_sha256("train") != before
    assert classifier_lib.training_fingerprint(again, seed=0, epochs=5) != fingerprint
    # A checkpoint records which training split a model saw, and which splits scored it.
    assert again.state_dict() == {
        "train_sha256": again.content_sha256("train"),
        "evaluation_sha256": {"val": again.content_sha256("val"), "test": again.content_sha256("test")},
    }


# ----- replaced in place: a miss, not a stale hit -----


def test_replacing_a_folders_images_in_place_retrains_the_augmenter(tmp_path, augmenter_cache):
    folder = tmp_path / "images"
    write_folder(folder)
    plan = augmenter_plan()
    first_data = folder_data(folder)
    _, first = load_augmenter(plan, first_data, seed=0, accelerator="cpu")
    assert first["source"] == "trained now"
    _, hit = load_augmenter(plan, folder_data(folder), seed=0, accelerator="cpu")
    assert hit["source"] == "cache" and hit["path"] == first["path"]

    write_folder(folder, inverted=True)  # same names, same dataset, same path: other images
    replaced = folder_data(folder)
    module, second = load_augmenter(plan, replaced, seed=0, accelerator="cpu")
    assert second["source"] == "trained now" and second["path"] != first["path"]
    assert len(list(augmenter_cache.glob("*.ckpt"))) == 2
    # The augmenter now reconstructs the new images as well as the first one did the old ones.
    augmenter = LatentAugmenter(module, noise=0.0, interp=0.0).fit(replaced.split_batches("train"))
    stale, _ = load_augmenter(plan, first_data, seed=0, accelerator="cpu")
    stale_augmenter = LatentAugmenter(stale, noise=0.0, interp=0.0).fit(replaced.split_batches("train"))
    images = replaced.split_tensors("train")[0]
    assert reconstruction_mse(augmenter, images) < reconstruction_mse(stale_augmenter, images)


def test_replacing_a_folders_images_in_place_recomputes_the_real_features(tmp_path):
    folder = tmp_path / "images"
    write_folder(folder)
    backbone = MeanPixels()
    cpu = torch.device("cpu")
    first = RealFeatures(backbone, tmp_path / "cache").get(folder_data(folder), "train", cpu)
    extracted = backbone.extracted
    assert torch.equal(
        RealFeatures(backbone, tmp_path / "cache").get(folder_data(folder), "train", cpu), first
    )
    assert backbone.extracted == extracted, "the same images are read from the cache"

    write_folder(folder, inverted=True)
    replaced = folder_data(folder)
    features = RealFeatures(backbone, tmp_path / "cache").get(replaced, "train", cpu)
    assert backbone.extracted == 2 * extracted, "other images are featurised again"
    assert torch.equal(features, backbone(replaced.split_tensors("train")[0]))
    assert not torch.equal(features, first)
    assert len(list((tmp_path / "cache" / "features").glob("*.pt"))) == 2


# ----- a damaged cache is replaced, with a notice -----


@pytest.mark.parametrize("damage", ["truncated", "not torch", "pickled payload", "another model"])
def test_a_damaged_cached_augmenter_is_trained_again_with_a_notice(damage, tmp_path, augmenter_cache, capsys):
    data = build_datamodule("digits", data_dir=str(tmp_path), batch_size=32, train_size=100)
    plan = augmenter_plan()
    path = cache_path(plan, data, 0)
    _, record = load_augmenter(plan, data, seed=0, accelerator="cpu")
    good = path.read_bytes()
    marker = tmp_path / "payload-ran"
    if damage == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "not torch":
        path.write_bytes(b"these are not the bytes of a checkpoint")
    elif damage == "pickled payload":
        contents = torch.load(path, map_location="cpu", weights_only=True)
        contents["extra"] = WritesAFileWhenUnpickled(marker)
        torch.save(contents, path)
    else:
        contents = torch.load(path, map_location="cpu", weights_only=True)
        contents["genae_config"]["model"] = "gan"
        torch.save(contents, path)
    capsys.readouterr()

    module, again = load_augmenter(plan, data, seed=0, accelerator="cpu")
    out = capsys.readouterr().out
    notices = [line for line in out.splitlines() if "training it again" in line]
    assert len(notices) == 1 and str(path) in notices[0], out
    assert "--augment-ckpt" not in out
    assert again["source"] == "trained now" and again["path"] == record["path"]
    assert not marker.exists(), "reading the cache ran code stored in it"
    # The replacement is a sound augmenter that the next run reads back from the cache.
    assert load_augmenter(plan, data, seed=0, accelerator="cpu")[1]["source"] == "cache"


def test_a_payload_at_the_cache_name_never_runs_in_a_plain_augment_ae_run(tmp_path, augmenter_cache, capsys):
    """The path with no file argument: a checkpoint placed at the predictable cache name."""
    data = build_datamodule("digits", data_dir=str(tmp_path), batch_size=32)
    options = ["--augmenter-width", "8", "--augmenter-latent-dim", "8", "--augmenter-steps", "10"]
    plan = augmenter_plan()
    path = cache_path(plan, data, 0)
    marker = tmp_path / "payload-ran"
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": {}, "extra": WritesAFileWhenUnpickled(marker)}, path)
    run_dir = tmp_path / "run"
    args = [
        "--model",
        "gan",
        "--augment",
        "ae",
        *TINY_RUN,
        *options,
        "--max-steps",
        "2",
        "--eval-samples",
        "50",
    ]
    assert main([*args, "--output", str(run_dir)]) == 0
    assert not marker.exists(), "a file at the cache name ran code"
    assert "unreadable or not an augmenter; training it again" in capsys.readouterr().out
    assert torch.load(path, map_location="cpu", weights_only=True)["genae_config"]["model"] == "ae"


@pytest.mark.parametrize("damage", ["truncated", "wrong rows", "rows without indices", "pickled payload"])
def test_a_damaged_feature_cache_is_recomputed_with_a_notice(damage, tmp_path, capsys):
    folder = tmp_path / "images"
    write_folder(folder)
    data = folder_data(folder)
    backbone = MeanPixels()
    cpu = torch.device("cpu")
    first = RealFeatures(backbone, tmp_path / "cache").get(data, "train", cpu)
    (path,) = (tmp_path / "cache" / "features").glob("*.pt")
    marker = tmp_path / "payload-ran"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:100])
    elif damage == "wrong rows":  # more rows than the split has images
        order = reference_order(len(first))
        torch.save(
            {"indices": torch.cat([order, order[:1]]), "features": torch.cat([first, first[:1]])}, path
        )
    elif damage == "rows without indices":
        torch.save(first[reference_order(len(first))], path)
    else:
        torch.save([first, WritesAFileWhenUnpickled(marker)], path)
    capsys.readouterr()
    again = RealFeatures(backbone, tmp_path / "cache").get(data, "train", cpu)
    assert not marker.exists(), "reading the feature cache ran code stored in it"
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and str(path) in out and "computing them again" in out
    assert torch.equal(again, first)
    stored = torch.load(path, weights_only=True)
    assert torch.equal(stored["features"], first[reference_order(len(first))]), "the cache file is replaced"
    assert torch.equal(stored["indices"], reference_order(len(first)))


def test_cached_features_of_another_torchs_reference_order_are_computed_again(tmp_path, monkeypatch, capsys):
    # The seed fixes the reference order only within a torch version: rows cached under another
    # permutation are other images, and reading them would duplicate some images and drop others.
    import lightning_genae.metrics.generative as generative

    folder = tmp_path / "images"
    write_folder(folder)
    data = folder_data(folder)
    cpu = torch.device("cpu")
    count = len(data.split_tensors("train")[0])
    fresh = RealFeatures(MeanPixels(), tmp_path / "fresh").reference(data, "train", 30, cpu)
    other_torch = torch.randperm(count, generator=torch.Generator().manual_seed(99))
    with monkeypatch.context() as patched:
        patched.setattr(generative, "reference_order", lambda size: other_torch[:size])
        first = MeanPixels()
        first.chunk_size = 10
        RealFeatures(first, tmp_path / "cache").reference(data, "train", 20, cpu)
    capsys.readouterr()
    backbone = MeanPixels()
    backbone.chunk_size = 10  # so that the 20 rows cached are a prefix, grown to 30 when they are trusted
    again = RealFeatures(backbone, tmp_path / "cache").reference(data, "train", 30, cpu)
    assert torch.equal(again, fresh)
    assert backbone.extracted == 30, "the other order's 20 rows were reused"
    assert "is not of the split's reference images" in capsys.readouterr().out


# ----- --augment-ckpt: trained on this data, compared by the same hash -----


@pytest.fixture()
def folder_ae_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A plain `--model ae` run on an image folder: (its last.ckpt, the folder)."""
    folder = tmp_path / "images"
    write_folder(folder)
    run_dir = tmp_path / "ae"
    args = ["--model", "ae", "--data", "folder", "--data-dir", str(folder), "--image-size", "16"]
    args += ["--channels", "1", "--width", "8", "--latent-dim", "8", "--batch-size", "16"]
    assert main([*args, "--max-steps", "2", "--eval-every", "2", "--output", str(run_dir)]) == 0
    return run_dir / "checkpoints" / "last.ckpt", folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_resume_after_the_images_were_replaced_is_refused_and_touches_nothing(folder_ae_checkpoint, capsys):
    checkpoint, folder = folder_ae_checkpoint
    run_dir = checkpoint.parent.parent
    write_folder(folder, inverted=True)
    before = files_of(run_dir)
    capsys.readouterr()
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "3"]) == 2
    one_line(capsys, "--resume", "training images differ from the run's", "restore the run's")
    assert files_of(run_dir) == before
    # The run's own images again: it goes on.
    write_folder(folder)
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "3"]) == 0
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3


def test_an_evaluation_after_the_images_were_replaced_is_refused_and_writes_nothing(
    folder_ae_checkpoint, capsys
):
    checkpoint, folder = folder_ae_checkpoint
    run_dir = checkpoint.parent.parent
    write_folder(folder, inverted=True)
    capsys.readouterr()
    assert main(["--evaluate", str(checkpoint)]) == 2
    one_line(capsys, "--evaluate", "training images differ from the run's", "restore the run's")
    assert not (run_dir / "eval.json").exists()
    write_folder(folder)
    assert main(["--evaluate", str(checkpoint)]) == 0 and (run_dir / "eval.json").is_file()


def drop_the_data_hash(checkpoint: Path) -> None:
    """Make `checkpoint` one of a version that recorded no hash of its training data."""
    contents = torch.load(checkpoint, weights_only=True)
    for value in contents.values():
        if isinstance(value, dict):
            value.pop(TRAIN_CONTENT_KEY, None)
    torch.save(contents, checkpoint)


def test_a_checkpoint_without_a_data_hash_is_refused(folder_ae_checkpoint, capsys):
    checkpoint, _ = folder_ae_checkpoint
    drop_the_data_hash(checkpoint)
    capsys.readouterr()
    assert main(["--resume", "last", "--output", str(checkpoint.parent.parent), "--max-steps", "3"]) == 2
    one_line(capsys, "--resume", "training images differ")


@pytest.mark.parametrize("split", ["val", "test"])
def test_an_evaluation_or_resume_on_other_validation_or_test_images_is_refused(
    folder_ae_checkpoint, split, capsys
):
    """The run's numbers are measured on its validation and test splits: other images there are refused
    as other training images are (here the checkpoint's record of them is made another's)."""
    checkpoint, _ = folder_ae_checkpoint
    run_dir = checkpoint.parent.parent
    contents = torch.load(checkpoint, weights_only=True)
    recorded = [
        value for value in contents.values() if isinstance(value, dict) and EVALUATION_CONTENT_KEY in value
    ]
    assert len(recorded) == 1 and set(recorded[0][EVALUATION_CONTENT_KEY]) == {"val", "test"}
    recorded[0][EVALUATION_CONTENT_KEY][split] = "0" * 64
    torch.save(contents, checkpoint)
    before = files_of(run_dir)
    capsys.readouterr()
    assert main(["--evaluate", str(checkpoint)]) == 2
    named = {"val": "validation", "test": "test"}[split]
    one_line(capsys, "--evaluate", f"the {named} images differ from the run's")
    assert main(["--resume", "last", "--output", str(run_dir), "--max-steps", "3"]) == 2
    one_line(capsys, "--resume", f"the {named} images differ from the run's")
    assert files_of(run_dir) == before


def test_a_run_continues_from_its_images_in_another_folder_and_not_from_other_images(
    folder_ae_checkpoint, tmp_path, capsys
):
    """A run moved to another machine finds its data elsewhere: the content decides, not the path."""
    checkpoint, folder = folder_ae_checkpoint
    run_dir = checkpoint.parent.parent
    moved = tmp_path / "elsewhere" / "images"
    shutil.copytree(folder, moved)
    other = tmp_path / "other-images"
    write_folder(other, inverted=True)
    before = files_of(run_dir)
    capsys.readouterr()
    resume = ["--resume", "last", "--output", str(run_dir), "--max-steps", "3", "--data-dir"]
    assert main([*resume, str(other)]) == 2
    one_line(capsys, "--resume", "training images differ from the run's", "restore the run's")
    assert files_of(run_dir) == before
    assert main([*resume, str(moved)]) == 0
    assert torch.load(checkpoint, weights_only=True)["global_step"] == 3


def augment_with(checkpoint: Path, folder: Path, run_dir: Path) -> int:
    args = ["--model", "ae", "--augment", "ae", "--augment-ckpt", str(checkpoint), "--data", "folder"]
    args += ["--data-dir", str(folder), "--image-size", "16", "--channels", "1", "--width", "8"]
    args += ["--latent-dim", "8", "--batch-size", "16", "--eval-every", "2", "--image-every", "2"]
    return main([*args, "--max-steps", "2", "--output", str(run_dir)])


def test_augment_ckpt_trained_on_this_folder_is_used(folder_ae_checkpoint, tmp_path, augmenter_cache):
    checkpoint, folder = folder_ae_checkpoint
    assert augment_with(checkpoint, folder, tmp_path / "run") == 0
    assert not augmenter_cache.exists()


def test_augment_ckpt_trained_before_the_images_were_replaced_is_refused(
    folder_ae_checkpoint, tmp_path, augmenter_cache, capsys
):
    checkpoint, folder = folder_ae_checkpoint
    write_folder(folder, inverted=True)
    capsys.readouterr()
    assert augment_with(checkpoint, folder, tmp_path / "run") == 2
    one_line(capsys, "--augment-ckpt", str(checkpoint), "other training images")
    assert not (tmp_path / "run").exists() and not augmenter_cache.exists()


def test_augment_ckpt_without_a_record_of_its_data_is_refused(folder_ae_checkpoint, tmp_path, capsys):
    checkpoint, folder = folder_ae_checkpoint
    contents = torch.load(checkpoint, map_location="cpu", weights_only=True)
    for value in contents.values():
        if isinstance(value, dict):
            value.pop("train_sha256", None)
    older = tmp_path / "older.ckpt"
    torch.save(contents, older)
    capsys.readouterr()
    assert augment_with(older, folder, tmp_path / "run") == 2
    one_line(capsys, "--augment-ckpt", "no hash recorded")


@pytest.mark.slow
def test_a_damaged_cached_classifier_is_trained_again_and_never_runs_code(tmp_path, capsys):
    folder = tmp_path / "images"
    write_folder(folder)  # two labelled classes and no shipped classifier: trained on first use
    cache = tmp_path / "classifiers"
    first = load_backbone("classifier", "folder", folder_data(folder), cache_dir=cache)
    (path,) = cache.glob("*.pt")
    marker = tmp_path / "payload-ran"
    torch.save({"format": "x", "extra": WritesAFileWhenUnpickled(marker)}, path)
    capsys.readouterr()
    again = load_backbone("classifier", "folder", folder_data(folder), cache_dir=cache)
    err = capsys.readouterr().err
    assert not marker.exists(), "reading the classifier cache ran code stored in it"
    assert f"the cached {path} is unreadable; training it again" in err
    images = folder_data(folder).split_tensors("val")[0]
    assert torch.equal(again(images), first(images)), "retrained with the same seed: the same network"


# A tiny image run of two iterations without the image metrics.
SMALL = "--width 8 --latent-dim 8 --batch-size 16 --max-steps 2 --backbone none".split()


def test_a_grid_cell_whose_seed_an_augment_ckpt_does_not_fit_fails_and_the_others_run(
    tmp_path, augmenter_cache, capsys
):
    folder = tmp_path / "images"
    write_folder(folder)
    data = ["--data", "folder", "--data-dir", str(folder), "--image-size", "16", "--channels", "1"]
    small = [*SMALL, "--train-size", "32", "--eval-every", "2", "--image-every", "2"]
    augmenter = tmp_path / "augmenter"
    assert main(["--model", "ae", *data, *small, "--seed", "0", "--output", str(augmenter)]) == 0
    checkpoint = augmenter / "checkpoints" / "last.ckpt"
    grid = ["--model", "ae", *data, *small, "--augment", "ae", "--augment-ckpt", str(checkpoint)]
    capsys.readouterr()
    # Its subset was drawn with seed 0: the seed-1 cell cannot use it and fails; the seed-0 cell runs.
    root = tmp_path / "grid"
    assert main([*grid, "--seeds", "0,1", "--output", str(root)]) == 1
    assert "ae-ts32-seed1 FAILED: ConfigError: --augment-ckpt" in capsys.readouterr().err
    failed = (root / "ae-ts32-seed1" / "failed.json").read_text()
    assert "other training images" in failed and "--seed 0" in failed
    assert not (root / "ae-ts32-seed0" / "failed.json").exists()
    assert not augmenter_cache.exists()


def test_an_augment_ckpt_of_generated_series_of_another_length_is_refused(tmp_path, capsys):
    small = "--model rae --data sines --max-steps 2 --rnn-hidden 8 --latent-dim 4".split()
    assert main([*small, "--seq-len", "24", "--output", str(tmp_path / "augmenter")]) == 0
    checkpoint = tmp_path / "augmenter" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    args = [*small, "--seq-len", "32", "--augment", "ae", "--augment-ckpt", str(checkpoint)]
    assert main([*args, "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, "--augment-ckpt", "other training series")
    assert not (tmp_path / "run").exists()


def test_an_augment_ckpt_of_another_dataset_names_the_dataset(tmp_path, capsys, mnist_data_dir):
    assert main(["--model", "ae", "--data", "digits", *SMALL, "--output", str(tmp_path / "augmenter")]) == 0
    checkpoint = tmp_path / "augmenter" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    args = ["--model", "ae", "--data", "mnist", "--data-dir", str(mnist_data_dir), "--augment", "ae"]
    args += ["--augment-ckpt", str(checkpoint), *SMALL]
    assert main([*args, "--output", str(tmp_path / "run")]) == 2
    one_line(capsys, "--augment-ckpt", "other training images", "--data digits")
