"""The classifier command trains an image or a sequence feature classifier, writes a checkpoint that loads
and matches its manifest entry, and refuses what it cannot train in one line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from refusals import one_line

from lightning_genae.cache import file_sha256
from lightning_genae.experiment.classifier import main
from lightning_genae.metrics import classifier as image_classifier
from lightning_genae.metrics import sequence_classifier


def manifest(folder, name: str) -> dict:
    return json.loads((folder / name).read_text())


def test_an_image_classifier_is_written_loadable_and_recorded_with_its_command(tmp_path):
    assert main(["--data", "digits", "--epochs", "1", "--patience", "0", "--output", str(tmp_path)]) == 0
    entry = manifest(tmp_path, image_classifier.MANIFEST_NAME)["digits"]
    path = tmp_path / entry["file"]
    assert entry["file"] == "classifier-digits.pt"
    assert entry["sha256"] == file_sha256(path)
    assert entry["image_shape"] == [1, 16, 16] and entry["epochs"] == 1
    assert entry["command"] == (
        "python -m lightning_genae.experiment.classifier --data digits --seed 0 --epochs 1 --patience 0 "
        f"--output {tmp_path}"
    )
    model, meta = image_classifier.load_checkpoint(path)
    assert meta["data"] == "digits" and meta["test_accuracy"] == pytest.approx(entry["test_accuracy"])
    assert model.config.feature_dim == entry["feature_dim"]
    assert not (tmp_path / sequence_classifier.MANIFEST_NAME).exists()


def test_a_folders_classifier_is_trained_at_the_shape_the_runs_read(tmp_path):
    from PIL import Image

    from lightning_genae.datamodules import build_datamodule
    from lightning_genae.metrics.backbones import load_backbone

    images = tmp_path / "images"
    for index in range(60):
        folder = images / f"class{index % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (20, 20), color=(120 * (index % 2), 40, index)).save(folder / f"{index}.png")
    out = tmp_path / "out"
    shape = ["--image-size", "16", "--channels", "1"]
    assert (
        main(["--data", "folder", "--data-dir", str(images), *shape, "--epochs", "1", "--output", str(out)])
        == 0
    )
    entry = manifest(out, image_classifier.MANIFEST_NAME)["folder"]
    assert entry["image_shape"] == [1, 16, 16] and "--image-size 16 --channels 1" in entry["command"]
    data = build_datamodule("folder", data_dir=images, image_size=16, channels=1)
    data.prepare_data()
    backbone = load_backbone("classifier", "folder", data, classifier_weights=out / entry["file"])
    assert backbone.weights_sha256 == entry["sha256"]
    assert "other training images" not in backbone.description
    # The folder grows: the same file still scores its runs, which say it learnt from other images.
    for index in range(60, 90):
        Image.new("RGB", (20, 20), color=(120 * (index % 2), 90, index)).save(
            images / f"class{index % 2}" / f"{index}.png"
        )
    grown = build_datamodule("folder", data_dir=images, image_size=16, channels=1)
    grown.prepare_data()
    backbone = load_backbone("classifier", "folder", grown, classifier_weights=out / entry["file"])
    assert backbone.weights_sha256 == entry["sha256"]
    assert backbone.description.endswith(", trained on other training images than this run's)")


def learnable_series(count: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 series [count, 6 steps, 4 channels] whose label is whether the first channel is bright."""
    labels = torch.randint(0, 2, (count,), generator=generator)
    series = torch.randint(0, 100, (count, 6, 4), generator=generator, dtype=torch.uint8)
    series[:, :, 0] += (labels * 150).to(torch.uint8)[:, None]
    return series, labels


def test_a_sequence_dataset_gets_the_sequence_classifier_in_its_own_manifest(tmp_path, monkeypatch):
    generator = torch.Generator().manual_seed(0)
    sizes = {"train": 96, "val": 32, "test": 32}
    splits = {split: learnable_series(count, generator) for split, count in sizes.items()}
    monkeypatch.setitem(sequence_classifier.SEQUENCE_DATASETS, "smnist", lambda data_dir: splits)
    assert main(["--data", "smnist", "--epochs", "2", "--output", str(tmp_path)]) == 0
    entry = manifest(tmp_path, sequence_classifier.MANIFEST_NAME)["smnist"]
    assert entry["file"] == "sequence-classifier-smnist.pt"
    assert entry["series_shape"] == [6, 4] and entry["num_test"] == 32 and entry["epochs"] == 2
    assert entry["command"].startswith("python -m lightning_genae.experiment.classifier --data smnist ")
    model, meta = image_classifier.load_checkpoint(
        tmp_path / entry["file"], sequence_classifier.SequenceClassifier
    )
    assert entry["sha256"] == file_sha256(tmp_path / entry["file"])
    assert meta["test_accuracy"] == pytest.approx(entry["test_accuracy"]) and entry["test_accuracy"] > 0.5
    assert not (tmp_path / image_classifier.MANIFEST_NAME).exists()


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--data", "sines"], "sines: a feature classifier of series is trained for smnist only"),
        (
            ["--data", "csv", "--data-dir", "series.csv"],
            "csv: a feature classifier of series is trained for smnist only",
        ),
        (["--data", "digits", "--epochs", "0"], "--epochs"),
    ],
)
def test_what_cannot_be_trained_is_refused_in_one_line(tmp_path, capsys, arguments, expected):
    assert main([*arguments, "--output", str(tmp_path)]) == 2
    one_line(capsys, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_the_command_runs_as_a_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "lightning_genae.experiment.classifier", "--data", "sines"]
        + ["--output", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: sines: a feature classifier of series is trained for smnist only"


def test_the_output_folder_must_be_named_so_the_shipped_weights_are_never_overwritten_by_default(capsys):
    assert main(["--data", "digits", "--epochs", "1"]) == 2
    assert "output" in capsys.readouterr().err


def test_the_same_weights_and_meta_in_another_order_hash_alike(tmp_path):
    """A run's first-use classifier and the command's file of the same training are one classifier."""
    torch.manual_seed(0)
    model = image_classifier.FeatureClassifier(
        image_classifier.ClassifierConfig(image_shape=(1, 16, 16), num_classes=2)
    )
    first = image_classifier.save_checkpoint(
        model, tmp_path / "a.pt", data="folder", seed=0, num_test=20, epochs=3
    )
    second = image_classifier.save_checkpoint(
        model, tmp_path / "b.pt", epochs=3, num_test=20, seed=0, data="folder"
    )
    assert first == second == file_sha256(tmp_path / "b.pt")


def test_the_data_folder_defaults_to_genae_data_dir_as_for_run_py(tmp_path, monkeypatch, capsys):
    import urllib.error

    import torchvision

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", offline)
    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.setenv("GENAE_DATA_DIR", str(tmp_path / "datasets"))
    assert main(["--data", "mnist", "--output", str(tmp_path / "out")]) == 2
    assert f"{tmp_path / 'datasets' / 'MNIST' / 'raw'}" in capsys.readouterr().err
