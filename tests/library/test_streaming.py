"""Prepared folders: the splits a stream gives are the in-memory ones, evaluation reads val and test a block
at a time, the stream's order resumes part-way through an epoch (and after an epoch left early), and a
folder that is not what its manifest says is refused."""

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from lightning_genae.augmentation import latent
from lightning_genae.datamodules import build_datamodule, folder, streaming
from lightning_genae.datamodules.base import SPLITS
from lightning_genae.datamodules.streaming import MANIFEST, prepare
from lightning_genae.errors import DataError, OptionError
from lightning_genae.metrics import classifier, generative
from lightning_genae.metrics.backbones import FeatureBackbone


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """digits prepared once: 1258 train, 180 val, 359 test images."""
    folder = tmp_path_factory.mktemp("prepared") / "digits"
    prepare(build_datamodule("digits"), "digits", folder)
    return folder


def images_of(batches) -> Counter:
    """Every image of `batches` (by its bytes, with its label), counted."""
    return Counter(
        (image.numpy().tobytes(), int(label))
        for images, labels in batches
        for image, label in zip(images, labels, strict=True)
    )


def test_the_manifest_records_each_splits_size_and_in_memory_hash(prepared):
    in_memory = build_datamodule("digits")
    manifest = json.loads((prepared / MANIFEST).read_text())
    assert manifest["dataset"] == "digits" and manifest["shape"] == [1, 16, 16] and manifest["classes"] == 10
    for split in SPLITS:
        assert manifest["splits"][split] == {
            "items": in_memory.split_size(split),
            "sha256": in_memory.content_sha256(split),
        }


@pytest.mark.parametrize("train_size", [None, 100])
def test_a_streamed_dataset_holds_the_in_memory_splits_for_the_same_seed(prepared, train_size):
    in_memory = build_datamodule("digits", train_size=train_size, seed=3)
    streamed = build_datamodule("digits", data_dir=str(prepared), train_size=train_size, seed=3)
    for split in SPLITS:
        for stream, memory in zip(streamed.split_tensors(split), in_memory.split_tensors(split), strict=True):
            assert torch.equal(stream, memory), split
        assert streamed.content_sha256(split) == in_memory.content_sha256(split)
    assert streamed.full_training_sha256() == in_memory.full_training_sha256()
    assert streamed.state_dict() == in_memory.state_dict(), "a checkpoint names the same data"


def test_a_few_training_items_are_read_from_the_stream_without_holding_the_split(prepared):
    in_memory = build_datamodule("digits")
    streamed = build_datamodule("digits", data_dir=str(prepared))
    indices = torch.tensor([1257, 0, 600, 0])
    for stream, memory in zip(
        streamed.items_at("train", indices), in_memory.items_at("train", indices), strict=True
    ):
        assert torch.equal(stream, memory)
    assert streamed.split_size("train") == 1258
    assert "train" not in (streamed._splits or {}), "the whole train split was read into memory"


def test_a_pass_over_the_streamed_training_split_reads_it_in_stored_order_without_holding_it(
    prepared, monkeypatch
):
    monkeypatch.setattr(streaming, "STREAM_BLOCK", 500)
    in_memory = build_datamodule("digits")
    streamed = build_datamodule("digits", data_dir=str(prepared))
    blocks = list(streamed.split_batches("train"))
    assert [len(images) for images, _ in blocks] == [500, 500, 258]
    for stream, memory in zip(
        (torch.cat(part) for part in zip(*blocks, strict=True)), in_memory.split_tensors("train"), strict=True
    ):
        assert torch.equal(stream, memory)
    assert "train" not in (streamed._splits or {}), "the whole train split was read into memory"


def test_a_large_training_split_gives_the_augmenter_a_seeded_sample_read_alone(prepared, monkeypatch):
    monkeypatch.setattr(latent, "BANK_CODES", 300)
    monkeypatch.setattr(latent, "BANK_BLOCK", 100)
    in_memory = build_datamodule("digits")
    streamed = build_datamodule("digits", data_dir=str(prepared))
    blocks = list(latent.bank_items(streamed, seed=4))
    assert [len(items) for items, _ in blocks] == [100, 100, 100]
    sample = [torch.cat(part) for part in zip(*blocks, strict=True)]
    again = [torch.cat(part) for part in zip(*latent.bank_items(in_memory, seed=4), strict=True)]
    assert all(torch.equal(a, b) for a, b in zip(sample, again, strict=True)), "streamed or not, one sample"
    other = torch.cat([items for items, _ in latent.bank_items(in_memory, seed=5)])
    assert not torch.equal(other, sample[0])
    assert "train" not in (streamed._splits or {}), "the whole train split was read into memory"


class RowMeans(FeatureBackbone):
    """A stand-in backbone: the mean pixel of each of a digit's 16 rows."""

    def __init__(self) -> None:
        super().__init__("rowmeans", 16, "mean pixels per row (test backbone)")

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(1, 3))


def read_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of items of each read of a prepared split by index, from now on."""
    reads: list[int] = []
    read = streaming.PreparedSplit.__getitems__
    monkeypatch.setattr(
        streaming.PreparedSplit,
        "__getitems__",
        lambda self, index: reads.append(len(index)) or read(self, index),
    )
    return reads


def test_evaluation_reads_val_and_test_a_block_at_a_time_as_their_in_memory_splits(
    prepared, monkeypatch, tmp_path
):
    monkeypatch.setattr(streaming, "STREAM_BLOCK", 100)
    monkeypatch.setattr(generative, "REAL_FEATURE_BLOCK", 100)
    reads = read_sizes(monkeypatch)
    in_memory = build_datamodule("digits", batch_size=50)
    streamed = build_datamodule("digits", data_dir=str(prepared), batch_size=50)
    cpu = torch.device("cpu")
    for split in ("val", "test"):
        loaders = (getattr(data, f"{split}_dataloader")() for data in (streamed, in_memory))
        for stream, memory in zip(*loaders, strict=True):
            assert all(torch.equal(a, b) for a, b in zip(stream, memory, strict=True)), split
        blocks = [torch.cat(part) for part in zip(*streamed.split_batches(split), strict=True)]
        assert all(torch.equal(a, b) for a, b in zip(blocks, in_memory.split_tensors(split), strict=True))
        features = [
            generative.RealFeatures(RowMeans(), tmp_path / name).get(data, split, cpu)
            for name, data in (("streamed", streamed), ("in memory", in_memory))
        ]
        assert torch.equal(*features), split
    assert max(reads) <= 100, "val or test was read whole"
    assert not streamed._splits


def test_the_feature_classifier_trains_on_a_streamed_split_as_on_the_in_memory_one_a_batch_at_a_time(
    prepared, monkeypatch
):
    reads = read_sizes(monkeypatch)
    streamed = build_datamodule("digits", data_dir=str(prepared))
    trained = [classifier.train_classifier(data, epochs=2) for data in (streamed, build_datamodule("digits"))]
    (model, accuracy), (model_again, accuracy_again) = trained
    assert accuracy == accuracy_again > 0.5
    state, state_again = model.state_dict(), model_again.state_dict()
    assert all(torch.equal(state[key], state_again[key]) for key in state), "streamed or not, one classifier"
    assert max(reads) <= classifier.EVAL_BATCH, "a split was read whole"
    assert not streamed._splits


def test_one_streamed_epoch_is_every_training_image_once_in_full_batches(prepared):
    streamed = build_datamodule("digits", data_dir=str(prepared), batch_size=34)
    batches = list(streamed.train_dataloader())
    # 1258 images are exactly 37 batches of 34.
    assert len(batches) == 37 and {len(images) for images, _ in batches} == {34}
    assert images_of(batches) == images_of([build_datamodule("digits").split_tensors("train")])
    images, labels = batches[0]
    assert images.dtype == torch.uint8 and labels.dtype == torch.int64


def labels_of(loader, batches=None) -> list[list[int]]:
    """The labels of the first `batches` batches of one pass over `loader` (all: None)."""
    seen = []
    for labels in (labels for _, labels in loader):
        seen.append(labels.tolist())
        if len(seen) == batches:
            break
    return seen


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stream_resumed_part_way_through_an_epoch_continues_its_order(prepared, num_workers):
    def loader():
        data = build_datamodule(
            "digits", data_dir=str(prepared), batch_size=100, seed=5, num_workers=num_workers
        )
        return data.train_dataloader()

    whole = loader()
    epochs = [labels_of(whole), labels_of(whole)]
    assert epochs[0] != epochs[1], "each epoch has its own order"
    stopped = loader()
    seen = labels_of(stopped, batches=4)
    resumed = loader()
    resumed.load_state_dict(stopped.state_dict())
    # Taken as Lightning takes an epoch: len(loader) batches, never asking for one more.
    assert seen + labels_of(resumed, batches=len(resumed) - 4) == epochs[0]
    assert labels_of(resumed) == epochs[1]
    # An epoch left after a few batches (a validation, a stop) ends there: the next pass is the next epoch.
    broken = loader()
    labels_of(broken, batches=3)
    assert labels_of(broken) == epochs[1]


def test_a_folder_prepared_from_another_dataset_is_refused(prepared):
    with pytest.raises(DataError, match="--data digits"):
        build_datamodule("mnist", data_dir=str(prepared))


def test_a_run_asking_for_another_image_shape_is_refused(tmp_path):
    folder = tmp_path / "prepared"
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for index in range(12):
        Image.new("RGB", (8, 8), (index * 20, 0, 0)).save(images / f"{index}.png")
    prepare(build_datamodule("folder", data_dir=str(images), image_size=8), "folder", folder)
    assert build_datamodule("folder", data_dir=str(folder), image_size=8).data_shape == (3, 8, 8)
    with pytest.raises(DataError, match="--image-size"):
        build_datamodule("folder", data_dir=str(folder), image_size=16)


def test_an_image_folder_is_prepared_a_block_at_a_time_as_its_in_memory_splits(tmp_path, monkeypatch):
    from PIL import Image

    images = tmp_path / "images"
    for index in range(40):
        (images / f"class{index % 2}").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8), index * 6).save(images / f"class{index % 2}" / f"{index}.png")
    monkeypatch.setattr(folder, "DECODE_BLOCK", 7)
    decoded = []
    read_images = folder.read_images
    monkeypatch.setattr(
        folder, "read_images", lambda paths, *shape: decoded.append(len(paths)) or read_images(paths, *shape)
    )
    options = {"image_size": 8, "channels": 1}
    manifest = prepare(
        build_datamodule("folder", data_dir=str(images), **options), "folder", tmp_path / "prepared"
    )
    assert max(decoded) == 7 and sum(decoded) == 40, "every image decoded once, never the folder at once"
    in_memory = build_datamodule("folder", data_dir=str(images), **options)
    streamed = build_datamodule("folder", data_dir=str(tmp_path / "prepared"), **options)
    # A feature classifier cached for the in-memory folder is the streamed run's, found without reading it.
    fingerprint = classifier.training_fingerprint(streamed, seed=0, epochs=5)
    assert "train" not in (streamed._splits or {})
    assert fingerprint == classifier.training_fingerprint(in_memory, seed=0, epochs=5)
    assert streamed.num_classes == in_memory.num_classes == 2
    for split in SPLITS:
        assert manifest["splits"][split]["sha256"] == in_memory.content_sha256(split)
        for stream, memory in zip(streamed.split_tensors(split), in_memory.split_tensors(split), strict=True):
            assert torch.equal(stream, memory), split


def test_series_are_streamed_as_prepared_with_their_options_and_scale(tmp_path):
    prepare(build_datamodule("sines", seq_len=12, channels=2), "sines", tmp_path / "sines")
    in_memory = build_datamodule("sines", seq_len=12, channels=2)
    # The folder's options are the run's: the series were cut and scaled by them.
    streamed = build_datamodule("sines", data_dir=str(tmp_path / "sines"))
    assert streamed.hparams.seq_len == 12 and streamed.data_shape == in_memory.data_shape == (12, 2)
    assert streamed.normaliser.to_dict() == in_memory.normaliser.to_dict()
    for split in SPLITS:
        assert streamed.content_sha256(split) == in_memory.content_sha256(split)
        for stream, memory in zip(streamed.split_tensors(split), in_memory.split_tensors(split), strict=True):
            assert torch.equal(stream, memory), split
    with pytest.raises(OptionError, match="seq_len"):
        build_datamodule("sines", data_dir=str(tmp_path / "sines"), seq_len=24)


@pytest.mark.parametrize(
    "read",
    [
        lambda data: data.split_tensors("val"),
        lambda data: data.val_dataloader(),
        lambda data: data.items_at("val", torch.tensor([3])),
        lambda data: next(data.split_batches("val")),
    ],
    ids=["whole", "loader", "by index", "in blocks"],
)
def test_a_split_that_is_not_what_its_manifest_records_is_refused(prepared, tmp_path, read):
    with pytest.raises(DataError, match="val"):
        read(build_datamodule("digits", data_dir=str(misrecorded(prepared, tmp_path, "val"))))


def misrecorded(prepared: Path, tmp_path: Path, split: str) -> Path:
    """The prepared folder's splits under a manifest that records another SHA-256 for `split`."""
    manifest = json.loads((prepared / MANIFEST).read_text())
    manifest["splits"][split]["sha256"] = "0" * 64
    altered = tmp_path / "altered"
    altered.mkdir()
    for name in SPLITS:
        (altered / name).symlink_to(prepared / name, target_is_directory=True)
    (altered / MANIFEST).write_text(json.dumps(manifest))
    return altered


def test_a_training_subset_is_read_alone_once_its_split_is_checked_in_blocks(prepared, tmp_path, monkeypatch):
    monkeypatch.setattr(streaming, "STREAM_BLOCK", 500)
    reads = read_sizes(monkeypatch)
    subset = build_datamodule("digits", data_dir=str(prepared), train_size=100, seed=3).split_tensors("train")
    assert max(reads) <= 500, "the train split was read whole"
    in_memory = build_datamodule("digits", train_size=100, seed=3).split_tensors("train")
    assert all(torch.equal(a, b) for a, b in zip(subset, in_memory, strict=True))
    altered = misrecorded(prepared, tmp_path, "train")
    with pytest.raises(DataError, match="train"):
        build_datamodule("digits", data_dir=str(altered), train_size=100).split_tensors("train")


def test_a_manifest_of_another_format_is_refused(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 0, "dataset": "digits", "splits": {}}))
    with pytest.raises(DataError, match=MANIFEST):
        build_datamodule("digits", data_dir=str(tmp_path))
