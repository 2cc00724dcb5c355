"""Feature backbones: shipped classifiers are what they claim, caching works, Inception is never faked."""

import json
import shutil
import socket
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_genae.cache import file_sha256
from lightning_genae.datamodules import build_datamodule
from lightning_genae.errors import ConfigError
from lightning_genae.metrics import backbones
from lightning_genae.metrics import classifier as classifier_lib
from lightning_genae.metrics.backbones import BackboneUnavailable, load_backbone

REQUIRED_ACCURACY = {"digits": 0.97, "mnist": 0.99, "fashion_mnist": 0.90}


def assert_one_line(error: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(error.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


@pytest.fixture(scope="module")
def digits():
    datamodule = build_datamodule("digits", data_dir=".")
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="module")
def digits_backbone(digits):
    return load_backbone("classifier", "digits", digits)


# ----- shipped classifiers -----


def test_manifest_lists_digits_and_mnist_with_the_command_that_reproduces_them():
    manifest = classifier_lib.load_manifest()
    assert {"digits", "mnist"} <= set(manifest)
    for data, entry in manifest.items():
        path = classifier_lib.WEIGHTS_DIR / entry["file"]
        assert path.is_file() and path.stat().st_size < 2 * 1024 * 1024
        assert entry["test_accuracy"] >= REQUIRED_ACCURACY[data]
        assert entry["feature_dim"] == 128 and entry["seed"] == 0
        assert entry["command"].startswith(f"python -m lightning_genae.experiment.classifier --data {data} ")
        assert len(entry["sha256"]) == 64


def _check_shipped(data: str, datamodule) -> None:
    entry = classifier_lib.load_manifest()[data]
    backbone = load_backbone("classifier", data, datamodule)
    images, labels = datamodule.split_tensors("test")
    measured = classifier_lib.accuracy(backbone.model, images, labels)
    assert len(images) == entry["num_test"]
    assert measured == pytest.approx(entry["test_accuracy"], abs=1e-4)
    assert measured >= REQUIRED_ACCURACY[data]
    assert entry["sha256"][:8] in backbone.description and data in backbone.description


def test_shipped_digits_classifier_reaches_its_stated_test_accuracy(digits):
    _check_shipped("digits", digits)


@pytest.mark.slow
def test_shipped_mnist_classifier_reaches_its_stated_test_accuracy(mnist_data_dir):
    datamodule = build_datamodule("mnist", data_dir=mnist_data_dir)
    datamodule.setup()
    _check_shipped("mnist", datamodule)


def test_tampered_checkpoint_is_refused_in_one_line(tmp_path, monkeypatch, digits):
    weights = tmp_path / "weights"
    shutil.copytree(classifier_lib.WEIGHTS_DIR, weights)
    target = weights / classifier_lib.checkpoint_name("digits")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    monkeypatch.setattr(classifier_lib, "WEIGHTS_DIR", weights)
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("classifier", "digits", digits)
    assert_one_line(error, str(target), "SHA-256", "reinstall", "--data digits")


def test_checkpoints_are_byte_identical_when_saved_twice(tmp_path, digits_backbone):
    first = classifier_lib.save_checkpoint(digits_backbone.model, tmp_path / "a" / "c.pt", data="digits")
    second = classifier_lib.save_checkpoint(digits_backbone.model, tmp_path / "b" / "c.pt", data="digits")
    assert first == second == file_sha256(tmp_path / "a" / "c.pt")


# ----- classifier features -----


def test_classifier_features_are_128d_deterministic_and_separate_classes(digits, digits_backbone):
    images, labels = digits.split_tensors("test")
    features = digits_backbone(images)
    assert features.shape == (len(images), 128) and features.dtype == torch.float32
    assert torch.equal(features, digits_backbone(images))
    distances = torch.cdist(features, features)
    same = labels[:, None] == labels[None, :]
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    within = distances[same & off_diagonal].mean()
    between = distances[~same].mean()
    assert between > 1.5 * within


def test_backbone_stays_frozen_in_eval_mode(digits, digits_backbone):
    digits_backbone.train()
    assert not digits_backbone.training and not digits_backbone.model.training
    assert not any(p.requires_grad for p in digits_backbone.parameters())
    images, _ = digits.split_tensors("val")
    with torch.enable_grad():
        assert not digits_backbone(images[:8]).requires_grad
    assert digits_backbone(images[:0]).shape == (0, 128)
    with pytest.raises(ValueError):
        digits_backbone(images[:8].float())


def test_unshipped_dataset_is_trained_once_then_loaded_from_cache(tmp_path, monkeypatch, capsys, digits):
    monkeypatch.setattr(classifier_lib, "WEIGHTS_DIR", tmp_path / "no-weights")
    monkeypatch.setattr(classifier_lib, "default_epochs", lambda num_train: 2)
    cache = tmp_path / "cache"
    first = load_backbone("classifier", "digits", digits, cache_dir=cache)
    printed = capsys.readouterr().err.strip().splitlines()
    cached = list(cache.glob("digits-1x16x16-seed0-*.pt"))
    # What it waits for, then its progress: one line at the first epoch and one at the end.
    assert len(cached) == 1 and len(printed) == 3
    assert "training" in printed[0] and str(cached[0]) in printed[0]
    # A first look need not wait for it: the line names the setting that skips it.
    assert "backbone none" in printed[0]
    assert printed[1].startswith("training the feature classifier: epoch 1/2") and "epoch 2/2" in printed[2]
    assert "trained on first use" in first.description

    def refuse(*args, **kwargs):
        raise AssertionError("the cached classifier should have been loaded, not trained again")

    monkeypatch.setattr(classifier_lib, "train_classifier", refuse)
    again = load_backbone("classifier", "digits", digits, cache_dir=cache)
    images, _ = digits.split_tensors("test")
    assert torch.equal(first(images), again(images))
    # A --train-size subset still evaluates with the classifier of the full training split.
    subset = build_datamodule("digits", data_dir=".", train_size=100)
    load_backbone("classifier", "digits", subset, cache_dir=cache)
    assert capsys.readouterr().err == ""


def test_training_under_no_grad_leaves_the_callers_random_stream_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with torch.no_grad():
        model, test_accuracy = classifier_lib.train_classifier(digits, epochs=1)
    assert torch.equal(torch.rand(3), expected)
    assert 0.1 < test_accuracy <= 1.0 and not model.training


def test_unlabeled_dataset_has_no_classifier(tmp_path):
    for index in range(3):
        Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(tmp_path / f"{index}.png")
    datamodule = build_datamodule("folder", data_dir=tmp_path, image_size=16)
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("classifier", "folder", datamodule, cache_dir=tmp_path / "cache")
    assert_one_line(error, "no labels", "backbone inception", "inception_weights")


def test_images_loose_beside_class_subfolders_are_named_as_what_keeps_them_unlabelled(tmp_path):
    for index in range(3):
        for name in ("cats", "dogs"):
            (tmp_path / name).mkdir(exist_ok=True)
            Image.new("RGB", (8, 8), (index * 40, 0, 0)).save(tmp_path / name / f"{index}.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cover.png")
    datamodule = build_datamodule("folder", data_dir=tmp_path, image_size=16)
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("classifier", "folder", datamodule, cache_dir=tmp_path / "cache")
    assert_one_line(error, "no labels", f"1 image lies loose in {tmp_path} (such as cover.png)", "move it")
    (tmp_path / "cover.png").unlink()
    datamodule = build_datamodule("folder", data_dir=tmp_path, image_size=16)
    datamodule.setup()
    assert datamodule.summary().endswith(", 2 classes from subfolders (cats, dogs)")


@pytest.mark.parametrize("classes_differ", [True, False])
def test_a_classifier_trained_on_first_use_is_warned_about_when_no_better_than_chance(
    tmp_path, capsys, classes_differ
):
    for index in range(120):
        label = index % 2
        # Bright squares on dark against dark on bright, or both classes one image: nothing tells them apart
        # (noise would let a classifier of a few test images beat chance by luck).
        pixels = np.full((16, 16), 128, dtype=np.uint8)
        if classes_differ:
            pixels = np.full((16, 16), 255 * label, dtype=np.uint8)
            pixels[4:12, 4:12] = 255 * (1 - label)
        (tmp_path / "images" / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(tmp_path / "images" / f"c{label}" / f"{index}.png")
    datamodule = build_datamodule("folder", data_dir=tmp_path / "images", image_size=16, channels=1)
    backbone = load_backbone("classifier", "folder", datamodule, cache_dir=tmp_path / "cache")
    warned = "no better than naming the commonest class" in capsys.readouterr().err
    assert warned == (not classes_differ), backbone.description


def test_labels_of_one_class_give_no_classifier(tmp_path):
    from lightning_genae.datamodules import TensorImageDataModule

    images = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8)
    dummies = {split: (images, torch.zeros(12)) for split in ("train", "val", "test")}
    datamodule = TensorImageDataModule(dummies, name="mine")
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("classifier", "mine", datamodule, cache_dir=tmp_path / "cache")
    assert_one_line(error, "labels of one class only", "class ids 0, 1, ... (-1 where", "backbone inception")
    assert not (tmp_path / "cache").exists(), "no classifier was trained"


def test_unshipped_dataset_without_datamodule_and_unknown_backbone_are_clear_errors(tmp_path):
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("classifier", "cifar10", cache_dir=tmp_path)
    assert_one_line(error, "cifar10", "datamodule")
    with pytest.raises(ConfigError, match="'vgg'"):
        load_backbone("vgg", "digits")


# ----- inception -----


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory) -> Path:
    """A randomly initialised torch-fidelity InceptionV3's state dict: the real file's layout, offline."""
    extractor = pytest.importorskip("torch_fidelity.feature_extractor_inceptionv3")
    with pytest.MonkeyPatch.context() as patch:
        # The constructor insists on loading weights; let it keep its random initialisation instead.
        patch.setattr(extractor, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(extractor.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        network = extractor.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture()
def no_network(monkeypatch, tmp_path):
    """An empty torch.hub cache, a download that fails like an offline machine, and no sockets at all."""
    calls = []

    def offline_download(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_socket(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(backbones, "download_url_to_file", offline_download)
    monkeypatch.setattr(socket.socket, "connect", no_socket)
    monkeypatch.setattr(socket, "create_connection", no_socket)
    monkeypatch.setattr(socket, "getaddrinfo", no_socket)
    return calls


@pytest.fixture(scope="module")
def inception(random_inception_weights):
    return load_backbone("inception", "digits", inception_weights=random_inception_weights)


def test_inception_gives_2048_features_at_dataset_sizes(inception):
    # One image per case: a 299x299 Inception pass costs ~6 GFLOPs, the dominant cost of this file.
    generator = torch.Generator().manual_seed(0)
    for channels, size in [(1, 16), (1, 28), (3, 32)]:
        images = torch.randint(0, 256, (1, channels, size, size), dtype=torch.uint8, generator=generator)
        features = inception(images)
        assert features.shape == (1, 2048) and features.dtype == torch.float32
        assert torch.isfinite(features).all()


def test_inception_repeats_grayscale_to_rgb_and_feeds_uint8(inception, monkeypatch):
    seen = []
    monkeypatch.setattr(inception.net, "forward", lambda x: seen.append(x) or torch.zeros(len(x), 2048))
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    inception(gray)
    inception(gray.repeat(1, 3, 1, 1))
    assert seen[0].dtype == torch.uint8 and seen[0].shape == (2, 3, 28, 28)
    assert torch.equal(seen[0], seen[1])


def test_inception_features_equal_torch_fidelitys_own_extractor(inception, random_inception_weights):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    reference = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], str(random_inception_weights))
    images = torch.randint(
        0, 256, (2, 3, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        expected = reference(images)[0]
    torch.testing.assert_close(inception(images), expected)


def test_inception_keeps_torch_fidelitys_resize(inception):
    assert getattr(inception.net, "use_antialias", False) is False
    assert inception.feature_dim == 2048 and "no antialias" in inception.description
    inception.train()
    assert not inception.net.training


def test_inception_loads_weights_from_the_torch_hub_cache(random_inception_weights, no_network):
    cached = backbones.default_inception_path()
    cached.parent.mkdir(parents=True)
    cached.symlink_to(random_inception_weights)
    backbone = load_backbone("inception", "mnist")
    assert backbone.weights_path == cached and no_network == []


def test_inception_offline_without_weights_is_one_line_and_never_random(no_network):
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("inception", "mnist")
    cache = backbones.default_inception_path().parent
    assert_one_line(error, backbones.INCEPTION_FILE, str(cache), "offline", "inception_weights")
    assert no_network == [backbones.INCEPTION_URL]


def test_missing_or_corrupt_inception_weights_are_one_line(tmp_path, no_network):
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("inception", "mnist", inception_weights=tmp_path / "absent.pth")
    assert_one_line(error, "absent.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("inception", "mnist", inception_weights=corrupt)
    assert_one_line(error, str(corrupt), "not a readable weights file")
    wrong = tmp_path / "wrong.pth"
    torch.save({"fc.weight": torch.zeros(3)}, wrong)
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("inception", "mnist", inception_weights=wrong)
    assert_one_line(error, str(wrong), "InceptionV3")
    assert no_network == []


def test_inception_weights_that_would_run_code_are_refused_in_one_line(
    random_inception_weights, tmp_path, no_network
):
    from test_checkpoint import WritesAFileWhenUnpickled

    marker = tmp_path / "payload-ran"
    weights = torch.load(random_inception_weights, map_location="cpu", weights_only=True)
    hostile = tmp_path / "hostile.pth"
    torch.save({**weights, "extra": WritesAFileWhenUnpickled(marker)}, hostile)
    with pytest.raises(BackboneUnavailable) as error:
        load_backbone("inception", "mnist", inception_weights=hostile)
    assert_one_line(error, str(hostile), "not a readable weights file", "inception_weights")
    assert not marker.exists(), "loading the Inception weights ran code stored in them"


def test_inception_weights_file_is_read_once_and_only_safely(random_inception_weights, monkeypatch):
    """torch-fidelity unpickles its weights without weights_only: it must never be given the user's file."""
    loads = []
    real_load = torch.load

    def recording_load(source, *args, **kwargs):
        loads.append((source, kwargs.get("weights_only")))
        return real_load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    reads = []
    real_read_bytes = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: reads.append(self) or real_read_bytes(self))
    backbone = load_backbone("inception", "mnist", inception_weights=random_inception_weights)
    assert reads == [random_inception_weights], "one read: the bytes hashed are the bytes loaded"
    assert loads and all(not isinstance(source, (str, Path)) for source, _ in loads)
    assert loads[0][1] is True, "the file's bytes are loaded with weights_only"
    expected = real_load(random_inception_weights, map_location="cpu", weights_only=True)
    for name, tensor in backbone.net.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    sha256 = file_sha256(random_inception_weights)
    assert f"sha256 {sha256[:8]}" in backbone.description


@pytest.mark.slow
def test_evaluate_folder_given_inception_weights_scores_every_backbone_and_records_its_draws(
    random_inception_weights, tmp_path, no_network, capsys
):
    from lightning_genae.experiment.cli import main

    folder = tmp_path / "images"
    folder.mkdir()
    generator = torch.Generator().manual_seed(0)
    for index in range(8):
        pixels = torch.randint(0, 256, (16, 16), dtype=torch.uint8, generator=generator)
        Image.fromarray(pixels.numpy(), mode="L").save(folder / f"{index}.png")
    args = ["--evaluate-folder", str(folder), "--data", "digits", "--eval-samples", "8", "--seed", "3"]
    weights = ["--inception-weights", str(random_inception_weights)]
    assert main([*args, *weights, "--output", str(tmp_path / "eval")]) == 0
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert sorted(result["backbones"]) == ["classifier", "inception"] and not no_network
    assert (result["seed"], result["eval_samples"], result["device"]) == (3, 8, "cpu")
