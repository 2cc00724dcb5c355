"""Datamodules: fixed splits, stratified subsets, batching by indexing, and one-line errors for bad data."""

import gc
import gzip
import os
import pickle
import shutil
import struct
import urllib.error
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
import torchvision
from PIL import Image
from pytorch_lightning.utilities.data import _update_dataloader
from torch.utils.data.distributed import DistributedSampler

from lightning_genae.datamodules import DATASETS, build_datamodule, to_model_range, to_uint8
from lightning_genae.datamodules import celeba as celeba_module
from lightning_genae.datamodules.celeba import CelebADataModule
from lightning_genae.datamodules.cifar10 import CIFAR10DataModule
from lightning_genae.datamodules.digits import DigitsDataModule, digits_tensors
from lightning_genae.datamodules.folder import ImageFolderDataModule
from lightning_genae.datamodules.imagefiles import read_square_image
from lightning_genae.datamodules.loaders import InMemoryImages
from lightning_genae.datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from lightning_genae.datamodules.splits import fixed_split, stratified_sample
from lightning_genae.errors import ConfigError, DataError, OptionError

pytestmark = pytest.mark.quick

MNIST_TRAIN_CLASS_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_CLASS_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def class_counts(labels: torch.Tensor, num_classes: int = 10) -> list[int]:
    return torch.bincount(labels, minlength=num_classes).tolist()


def samples(images: torch.Tensor, labels: torch.Tensor) -> Counter:
    """Multiset of (image bytes, label): equal multisets mean the same samples, whatever their order."""
    return Counter((image.numpy().tobytes(), int(label)) for image, label in zip(images, labels, strict=True))


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every torchvision download fails as it does without network, and nothing can reach the network."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    for name in ("MNIST", "FashionMNIST", "CIFAR10", "CelebA"):
        monkeypatch.setattr(getattr(torchvision.datasets, name), "download", refuse)
    monkeypatch.setattr("urllib.request.urlopen", refuse)


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule("unused", batch_size=32)
    datamodule.setup()
    return datamodule


# ----- registry and shared API -----


def test_registry_names_classes_with_one_line_descriptions_and_static_shapes() -> None:
    assert set(DATASETS) == {
        *("digits", "mnist", "binarized_mnist", "fashion_mnist", "cifar10", "celeba", "folder"),
        *("sines", "timegan_sines", "smnist", "csv"),
    }
    for name, spec in DATASETS.items():
        # The registry says the kind without importing the class; the class must agree.
        assert spec.module.name == name and spec.module.data_kind == spec.data_kind
        assert spec.description and "\n" not in spec.description
    expected = {"digits": (1, 16, 16), "mnist": (1, 28, 28), "cifar10": (3, 32, 32), "celeba": (3, 64, 64)}
    for name, shape in expected.items():
        datamodule = build_datamodule(name, data_dir="/nonexistent")
        # Metadata must not need the data: the model is built from it before anything is downloaded.
        assert datamodule.image_shape == shape
        assert datamodule._splits is None
    assert build_datamodule("mnist", data_dir="x").num_classes == 10
    assert build_datamodule("celeba", data_dir="x").num_classes is None
    assert isinstance(build_datamodule("digits", data_dir="x", batch_size=8), DigitsDataModule)


def test_unknown_dataset_lists_the_choices() -> None:
    with pytest.raises(ConfigError, match="^data 'nope' is unknown.*digits.*folder"):
        build_datamodule("nope", data_dir="x")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("mnist", {"image_size": 32}),
        ("mnist", {"channels": 3}),
        ("celeba", {"image_size": 128}),
        ("folder", {"channels": 2}),
        ("digits", {"batch_size": 0}),
        ("digits", {"train_size": 0}),
    ],
)
def test_invalid_options_are_option_errors_naming_the_argument(name: str, kwargs: dict) -> None:
    (key,) = kwargs
    with pytest.raises(OptionError) as refused:
        build_datamodule(name, data_dir="x", **kwargs)
    assert refused.value.option == key and "--" not in str(refused.value)


def test_default_image_size_and_channels_are_accepted() -> None:
    assert build_datamodule("mnist", data_dir="x", image_size=28, channels=1).image_shape == (1, 28, 28)
    assert build_datamodule("celeba", data_dir="x", image_size=64).image_shape == (3, 64, 64)
    assert build_datamodule("folder", data_dir="x", image_size=32, channels=1).image_shape == (1, 32, 32)


def test_model_range_round_trips_every_uint8_value() -> None:
    values = torch.arange(256, dtype=torch.uint8)
    scaled = to_model_range(values)
    assert scaled.dtype == torch.float32
    assert scaled.min() == -1 and scaled.max() == 1
    assert torch.equal(to_uint8(scaled), values)
    assert torch.equal(
        to_uint8(torch.tensor([-3.0, 0.0, 3.0])), torch.tensor([0, 128, 255], dtype=torch.uint8)
    )


# ----- digits: splits and batching -----


def test_digits_splits_partition_the_dataset_and_ignore_the_run_seed(digits: DigitsDataModule) -> None:
    other_seed = DigitsDataModule("unused", seed=123)
    other_seed.setup()
    all_images, all_labels = digits_tensors()
    assert all_images.shape == (1797, 1, 16, 16) and all_images.dtype == torch.uint8
    assert all_images.min() == 0 and all_images.max() == 255
    sizes = {split: len(digits.split_tensors(split)[0]) for split in ("train", "val", "test")}
    assert sizes == {"train": 1258, "val": 180, "test": 359}
    split_samples = Counter()
    for split in ("train", "val", "test"):
        images, labels = digits.split_tensors(split)
        assert images.shape[1:] == (1, 16, 16) and images.dtype == torch.uint8 and labels.dtype == torch.int64
        split_samples += samples(images, labels)
        # The fixed split is the same whatever --seed the run uses.
        for mine, theirs in zip(digits.split_tensors(split), other_seed.split_tensors(split), strict=True):
            assert torch.equal(mine, theirs)
    # Together the splits hold every sample exactly once: disjoint, nothing lost.
    assert split_samples == samples(all_images, all_labels)
    # Stratified: every class is in each split in about its overall share.
    test_counts = class_counts(digits.split_tensors("test")[1])
    assert max(test_counts) - min(test_counts) <= 2 and min(test_counts) >= 34
    assert digits.summary() == "digits: train 1258 / val 180 / test 359, 1x16x16"


def test_fixed_splits_are_pinned_so_library_upgrades_cannot_move_them() -> None:
    # Hard-coded on purpose: if these change, val/test of every dataset changed and old results are void.
    _, labels = digits_tensors()
    train, val, test = fixed_split(labels, 180, 359)
    assert val[:8].tolist() == [3, 11, 26, 39, 50, 55, 61, 70]
    assert test[:8].tolist() == [2, 7, 16, 36, 37, 40, 44, 46]
    assert stratified_sample(labels, 20, seed=7)[0][:6].tolist() == [188, 197, 285, 334, 413, 482]


def test_larger_train_subsets_contain_smaller_ones_with_the_same_seed() -> None:
    _, labels = digits_tensors()
    small, _ = stratified_sample(labels, 200, seed=3)
    large, _ = stratified_sample(labels, 400, seed=3)
    assert set(small.tolist()) <= set(large.tolist())


def test_train_batches_are_one_index_per_batch_and_arrive_in_model_range(
    digits: DigitsDataModule, monkeypatch: pytest.MonkeyPatch
) -> None:
    def per_sample(self: InMemoryImages, index: int) -> None:
        raise AssertionError("the DataLoader fetched a single sample instead of a batch")

    calls = []
    batched = InMemoryImages.__getitems__

    def counting(self: InMemoryImages, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(indices))
        return batched(self, indices)

    monkeypatch.setattr(InMemoryImages, "__getitem__", per_sample)
    monkeypatch.setattr(InMemoryImages, "__getitems__", counting)
    # The host loader's path; batches on the device are checked against it in test_data_on_device.py.
    monkeypatch.setattr(digits, "data_on_device", "off")
    train_images, train_labels = digits.split_tensors("train")
    batches = list(digits.train_dataloader())
    assert calls == [32] * (1258 // 32)  # one call per batch, full batches only (drop_last)
    seen = Counter()
    for images, labels in batches:
        assert images.shape == (32, 1, 16, 16) and images.dtype == torch.uint8
        seen += samples(images, labels)
        scaled, same_labels = digits.on_after_batch_transfer((images, labels), 0)
        assert scaled.dtype == torch.float32 and scaled.min() >= -1 and scaled.max() <= 1
        assert torch.equal(same_labels, labels)
        assert torch.equal(to_uint8(scaled), images)
    assert not seen - samples(train_images, train_labels)
    shuffled_order = torch.cat([images for images, _ in batches])
    assert not torch.equal(shuffled_order, train_images[: len(shuffled_order)])


def test_val_and_test_loaders_keep_order_and_the_last_partial_batch(digits: DigitsDataModule) -> None:
    for split, loader in (("val", digits.val_dataloader()), ("test", digits.test_dataloader())):
        images = torch.cat([batch_images for batch_images, _ in loader])
        labels = torch.cat([batch_labels for _, batch_labels in loader])
        expected_images, expected_labels = digits.split_tensors(split)
        assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


def test_lightning_can_inject_a_distributed_sampler() -> None:
    # The host loader's path (--data-on-device off); batches on the device shard themselves per rank.
    datamodule = DigitsDataModule("unused", batch_size=16, data_on_device="off")
    datamodule.setup()
    loader = datamodule.train_dataloader()
    sampler = DistributedSampler(loader.dataset, num_replicas=2, rank=1, shuffle=True, seed=0)
    sharded = _update_dataloader(loader, sampler)
    batches = list(sharded)
    assert len(batches) == 629 // 16  # half of the 1258 training images, in full batches of 16
    assert all(images.shape == (16, 1, 16, 16) for images, _ in batches)


@pytest.mark.parametrize("world_size", [2, 3])
def test_under_ddp_each_process_evaluates_its_share_and_every_item_once(world_size) -> None:
    datamodule = DigitsDataModule("unused", batch_size=64)
    datamodule.setup()
    shares = []
    for rank in range(world_size):
        datamodule.trainer = SimpleNamespace(world_size=world_size, global_rank=rank)
        loader = datamodule.val_dataloader()
        assert isinstance(loader.sampler, DistributedSampler)  # so Lightning leaves it in place
        shares.append(torch.cat([batch_labels for _, batch_labels in loader]))
    datamodule.trainer = None
    # 180 validation images: no item repeated to even the shares out, none left out.
    assert sum(len(share) for share in shares) == 180
    assert torch.equal(torch.cat(shares).sort().values, datamodule.split_tensors("val")[1].sort().values)
    interleaved = torch.stack([share[: min(map(len, shares))] for share in shares], 1).flatten()
    assert torch.equal(interleaved, datamodule.split_tensors("val")[1][: len(interleaved)])


def test_an_evaluation_split_smaller_than_the_world_is_a_config_error() -> None:
    datamodule = DigitsDataModule("unused", batch_size=64)
    datamodule.trainer = SimpleNamespace(world_size=3, global_rank=0)
    with pytest.raises(ConfigError, match="use fewer devices"):
        datamodule.loader_over(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2), train=False)


def test_worker_processes_are_kept_between_epochs_and_yield_the_same_batches() -> None:
    datamodule = DigitsDataModule("unused", batch_size=64, num_workers=1)
    datamodule.setup()
    loader = datamodule.val_dataloader()
    assert loader.persistent_workers
    images = torch.cat([batch_images for batch_images, _ in loader])
    assert torch.equal(images, datamodule.split_tensors("val")[0])
    # Loader and persistent iterator form a cycle: collect it now, not (5 s) in the middle of a later test.
    del loader
    gc.collect()


class _RangeProbe(pl.LightningModule):
    """Records what training_step receives, so the test sees the batch after Lightning's hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(16 * 16, 1)
        self.received: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, _ = batch
        self.received.append(images)
        return self.layer(images.flatten(1)).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_trainer_applies_the_datamodule_hook_and_saves_its_hyperparameters() -> None:
    datamodule = DigitsDataModule("unused", batch_size=8, train_size=64, seed=5)
    probe = _RangeProbe()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(probe, datamodule=datamodule)
    assert len(probe.received) == 2
    for images in probe.received:
        assert images.dtype == torch.float32 and images.shape == (8, 1, 16, 16)
        assert images.min() >= -1 and images.max() <= 1
    assert datamodule.batch_size_per_device == 8
    assert dict(datamodule.hparams) == {
        "data_dir": "unused",
        "batch_size": 8,
        "train_size": 64,
        "seed": 5,
        "num_workers": 0,
        "image_size": None,
        "channels": None,
        "data_on_device": "auto",
    }


# ----- batch size and train size -----


def test_batch_size_must_divide_across_devices() -> None:
    datamodule = DigitsDataModule("unused", batch_size=10)
    datamodule.trainer = SimpleNamespace(world_size=3)
    with pytest.raises(OptionError, match="does not divide across 3 devices") as refused:
        datamodule.setup("fit")
    assert refused.value.option == "batch_size"
    datamodule = DigitsDataModule("unused", batch_size=12)
    datamodule.trainer = SimpleNamespace(
        world_size=3, global_rank=0, strategy=SimpleNamespace(root_device=torch.device("cpu"))
    )
    datamodule.setup("fit")
    assert datamodule.batch_size_per_device == 4
    images, _ = next(iter(datamodule.train_dataloader()))
    assert len(images) == 4


def test_train_size_is_a_stratified_seeded_subset_of_the_train_split(digits: DigitsDataModule) -> None:
    subsets = {}
    for seed in (0, 0, 1):
        datamodule = DigitsDataModule("unused", train_size=100, seed=seed)
        datamodule.setup()
        images, labels = datamodule.split_tensors("train")
        assert len(images) == 100
        if seed in subsets:
            assert torch.equal(images, subsets[seed][0])  # same seed, same subset
        subsets[seed] = (images, labels)
        # Val and test do not move when the training subset does.
        for split in ("val", "test"):
            assert torch.equal(datamodule.split_tensors(split)[0], digits.split_tensors(split)[0])
    assert not torch.equal(subsets[0][0], subsets[1][0])
    full_images, full_labels = digits.split_tensors("train")
    full_counts = class_counts(full_labels)
    for images, labels in subsets.values():
        assert not samples(images, labels) - samples(full_images, full_labels)  # drawn from the train split
        counts = class_counts(labels)
        assert max(counts) - min(counts) <= 1
        for count, available in zip(counts, full_counts, strict=True):
            share = 100 * available / len(full_labels)
            assert int(share) <= count <= int(share) + 1
    assert datamodule.summary() == "digits: train 1258 (subset 100) / val 180 / test 359, 1x16x16"


def test_train_size_larger_than_the_train_split_is_a_config_error() -> None:
    with pytest.raises(OptionError, match="exceeds the 1258 training images of digits") as refused:
        DigitsDataModule("unused", train_size=5000).setup()
    assert refused.value.option == "train_size"


def test_batch_larger_than_the_train_split_is_a_config_error() -> None:
    datamodule = DigitsDataModule("unused", train_size=20, batch_size=32)
    datamodule.setup()
    with pytest.raises(OptionError, match="at most 20") as refused:
        datamodule.train_dataloader()
    assert refused.value.option == "batch_size"


# ----- MNIST -----


def test_real_mnist_has_the_official_test_split_and_a_stratified_5000_val(
    mnist_data_dir: Path, offline: None
) -> None:
    datamodule = MNISTDataModule(mnist_data_dir)
    datamodule.prepare_data()  # files are there: must not try to download
    datamodule.setup()
    train_images, train_labels = datamodule.split_tensors("train")
    val_images, val_labels = datamodule.split_tensors("val")
    test_images, test_labels = datamodule.split_tensors("test")
    assert (len(train_images), len(val_images), len(test_images)) == (55000, 5000, 10000)
    assert train_images.shape[1:] == (1, 28, 28) and train_images.dtype == torch.uint8
    assert class_counts(test_labels) == MNIST_TEST_CLASS_COUNTS
    assert class_counts(torch.cat([train_labels, val_labels])) == MNIST_TRAIN_CLASS_COUNTS
    for count, total in zip(class_counts(val_labels), MNIST_TRAIN_CLASS_COUNTS, strict=True):
        assert abs(count - 5000 * total / 60000) <= 1
    assert datamodule.summary() == "mnist: train 55000 / val 5000 / test 10000, 1x28x28"


def read_real_idx(path: Path, header: int, count: int, item_bytes: int) -> np.ndarray:
    with gzip.open(path, "rb") as file:
        data = file.read(header + count * item_bytes)
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(count, -1)


def write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    payload = struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes()
    with (gzip.open if path.suffix == ".gz" else open)(path, "wb") as file:
        file.write(payload)


@pytest.fixture()
def small_mnist_dirs(mnist_data_dir: Path, tmp_path: Path) -> dict[str, Path]:
    """Two data dirs holding the real t10k files plus the first 200 train images: gzipped and uncompressed."""
    source = mnist_data_dir / "MNIST" / "raw"
    train_images = read_real_idx(source / "train-images-idx3-ubyte.gz", 16, 200, 784).reshape(200, 28, 28)
    train_labels = read_real_idx(source / "train-labels-idx1-ubyte.gz", 8, 200, 1).reshape(200)
    dirs = {}
    for kind, suffix in (("gz", ".gz"), ("raw", "")):
        raw = tmp_path / kind / "MNIST" / "raw"
        raw.mkdir(parents=True)
        write_idx(raw / f"train-images-idx3-ubyte{suffix}", train_images, 2051)
        write_idx(raw / f"train-labels-idx1-ubyte{suffix}", train_labels, 2049)
        for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
            if suffix:
                shutil.copyfile(source / f"{name}.gz", raw / f"{name}.gz")
            else:
                with gzip.open(source / f"{name}.gz", "rb") as file:
                    (raw / name).write_bytes(file.read())
        dirs[kind] = tmp_path / kind
    return dirs


def test_mnist_reads_gzipped_and_uncompressed_idx_alike(
    small_mnist_dirs: dict[str, Path], offline: None
) -> None:
    loaded = {}
    for kind, data_dir in small_mnist_dirs.items():
        datamodule = MNISTDataModule(data_dir)
        datamodule.prepare_data()  # present (gz or not): no download attempt
        datamodule.setup()
        loaded[kind] = datamodule
    assert loaded["gz"].summary() == "mnist: train 180 / val 20 / test 10000, 1x28x28"
    for split in ("train", "val", "test"):
        for gz_tensor, raw_tensor in zip(
            loaded["gz"].split_tensors(split), loaded["raw"].split_tensors(split), strict=True
        ):
            assert torch.equal(gz_tensor, raw_tensor)
    raw = small_mnist_dirs["raw"] / "MNIST" / "raw"
    expected = np.frombuffer((raw / "t10k-images-idx3-ubyte").read_bytes(), dtype=np.uint8, offset=16).copy()
    assert torch.equal(
        loaded["raw"].split_tensors("test")[0], torch.from_numpy(expected.reshape(-1, 1, 28, 28))
    )


@pytest.mark.parametrize("kind", ["gz", "raw"])
def test_truncated_mnist_file_is_a_data_error_naming_it(small_mnist_dirs: dict[str, Path], kind: str) -> None:
    suffix = ".gz" if kind == "gz" else ""
    broken = small_mnist_dirs[kind] / "MNIST" / "raw" / f"t10k-images-idx3-ubyte{suffix}"
    broken.write_bytes(broken.read_bytes()[:5000])
    with pytest.raises(DataError) as error:
        MNISTDataModule(small_mnist_dirs[kind]).setup()
    assert str(broken) in str(error.value) and "delete it to re-download, or replace it" in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("damage", "fact"),
    [
        ("label 10", "class ids 0..9"),
        ("fewer labels", "200 images, 199 labels"),
        ("27 rows", "[N, 1, 28, 28]"),
    ],
)
@pytest.mark.parametrize("name", ["mnist", "smnist"])
def test_idx_files_that_are_no_mnist_split_are_refused(small_mnist_dirs, name, damage, fact) -> None:
    raw = small_mnist_dirs["raw"] / "MNIST" / "raw"
    labels = np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8).copy()
    images = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes(), np.uint8, offset=16)
    if damage == "label 10":
        labels[3] = 10
    elif damage == "fewer labels":
        labels = labels[:-1]
    else:
        write_idx(raw / "train-images-idx3-ubyte", images.reshape(200, 28, 28)[:, :27], 2051)
    write_idx(raw / "train-labels-idx1-ubyte", labels, 2049)
    with pytest.raises(DataError, match="train") as error:
        build_datamodule(name, data_dir=small_mnist_dirs["raw"]).setup()
    assert fact in str(error.value) and "\n" not in str(error.value)


def test_wrong_magic_number_is_a_data_error(small_mnist_dirs: dict[str, Path]) -> None:
    raw = small_mnist_dirs["raw"] / "MNIST" / "raw"
    shutil.copyfile(raw / "t10k-labels-idx1-ubyte", raw / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError, match="magic number 2051 .*magic number 2049"):
        MNISTDataModule(small_mnist_dirs["raw"]).setup()


def test_negative_sizes_in_an_idx_header_are_a_data_error(small_mnist_dirs: dict[str, Path]) -> None:
    """Sizes whose product still matches the data's length, two of them negative: numpy's reshape would
    raise its own ValueError."""
    import struct

    raw = small_mnist_dirs["raw"] / "MNIST" / "raw"
    images = raw / "t10k-images-idx3-ubyte"
    data = images.read_bytes()
    count, rows, columns = struct.unpack(">3i", data[4:16])
    images.write_bytes(data[:4] + struct.pack(">3i", -count, -rows, columns) + data[16:])
    with pytest.raises(DataError, match=r"shape \(-") as error:
        MNISTDataModule(small_mnist_dirs["raw"]).setup()
    assert str(images) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("module", "where"),
    [
        (MNISTDataModule, "MNIST/raw"),
        (FashionMNISTDataModule, "FashionMNIST/raw"),
        (CIFAR10DataModule, "cifar-10-batches-py"),
        (CelebADataModule, "celeba"),
    ],
)
def test_missing_data_offline_is_a_one_line_data_error(
    module: type, where: str, tmp_path: Path, offline: None
) -> None:
    datamodule = module(tmp_path)
    with pytest.raises(DataError) as error:
        datamodule.prepare_data()
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / where) in message and "cannot be downloaded" in message and "URLError" in message
    assert "data_dir" in message and "--" not in message
    with pytest.raises(DataError, match="not found"):
        module(tmp_path).setup()


DOWNLOADERS = [MNISTDataModule, FashionMNISTDataModule, CIFAR10DataModule, CelebADataModule]


@pytest.mark.parametrize("module", DOWNLOADERS)
def test_a_file_as_data_dir_is_one_line_and_stays(module: type, tmp_path: Path, offline: None) -> None:
    prices = tmp_path / "prices.csv"
    prices.write_text("date,price\n")
    for data_dir in (prices, prices / "MNIST"):
        with pytest.raises(DataError, match="prices.csv") as error:
            module(data_dir).prepare_data()
        assert "\n" not in str(error.value)
    assert prices.read_text() == "date,price\n" and sorted(tmp_path.iterdir()) == [prices]


def test_one_missing_mnist_file_offline_is_named(
    small_mnist_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr("urllib.request.urlopen", refuse)
    raw = small_mnist_dirs["gz"] / "MNIST" / "raw"
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as refused:
        MNISTDataModule(small_mnist_dirs["gz"]).prepare_data()
    message = str(refused.value)
    assert "missing t10k-labels-idx1-ubyte)" in message and "network is unreachable" in message


# ----- CIFAR-10 -----


def write_fake_cifar(data_dir: Path, per_batch: int = 20, test: int = 10) -> dict[str, np.ndarray]:
    folder = data_dir / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        count = test if name == "test_batch" else per_batch
        data = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
        labels = [i % 10 for i in range(count)]
        with (folder / name).open("wb") as file:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, file)
        arrays[name] = data
    return arrays


def test_cifar10_reads_local_pickle_batches_without_download(tmp_path: Path, offline: None) -> None:
    arrays = write_fake_cifar(tmp_path)
    datamodule = CIFAR10DataModule(tmp_path, batch_size=8)
    datamodule.prepare_data()
    datamodule.setup()
    assert datamodule.summary() == "cifar10: train 90 / val 10 / test 10, 3x32x32"
    test_images, test_labels = datamodule.split_tensors("test")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue values), so they reshape straight to CHW.
    assert torch.equal(test_images, torch.from_numpy(arrays["test_batch"].reshape(-1, 3, 32, 32)))
    assert test_labels.tolist() == list(range(10))
    assert class_counts(datamodule.split_tensors("val")[1]) == [1] * 10
    train = torch.cat([datamodule.split_tensors("train")[0], datamodule.split_tensors("val")[0]])
    expected = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    assert samples(train, torch.zeros(100)) == samples(torch.from_numpy(expected), torch.zeros(100))


@pytest.mark.parametrize("damage", ["truncated", "a length of a terabyte"])
def test_corrupt_cifar_batch_is_a_data_error_naming_it(tmp_path: Path, damage: str) -> None:
    write_fake_cifar(tmp_path)
    broken = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    if damage == "truncated":
        broken.write_bytes(broken.read_bytes()[:100])
    else:  # one changed byte can make a string's length this: the unpickler's read fails with MemoryError
        broken.write_bytes(b"\x80\x04\x8d" + struct.pack("<Q", 2**40) + b"abc")
    with pytest.raises(DataError) as error:
        CIFAR10DataModule(tmp_path).setup()
    assert str(broken) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("data", "labels", "named"),
    [
        (np.full((20, 3072), 0.5), list(range(20)), "pixels of type float64"),
        (np.full((20, 3072), 300), list(range(20)), "pixels of type int64"),
        (np.zeros((20, 3072), dtype=np.uint8), [1.7] * 20, "labels of type float64"),
    ],
    ids=["float-pixels", "pixels-over-255", "float-labels"],
)
def test_a_cifar_batch_of_other_types_is_refused_not_cast(tmp_path: Path, data, labels, named) -> None:
    """A cast would make floats in [0, 1] black, wrap 300 to 44 and label 1.7 as 1, and train on them."""
    write_fake_cifar(tmp_path)
    odd = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    with odd.open("wb") as file:
        pickle.dump({b"data": data, b"labels": labels}, file)
    with pytest.raises(DataError, match=named) as error:
        CIFAR10DataModule(tmp_path).setup()
    assert str(odd) in str(error.value) and "\n" not in str(error.value)


# ----- CelebA -----


def write_fake_celeba(data_dir: Path, partitions: tuple[int, ...] = (0, 0, 0, 0, 0, 1, 2, 2)) -> Path:
    """178x218 JPEGs like img_align_celeba: green in the VAE-GAN reference code's face square (rows 40 to
    188, columns 15 to 163), red around it, where the centred 178x178 square would take 20 red rows in."""
    folder = data_dir / "celeba" / "img_align_celeba"
    folder.mkdir(parents=True)
    lines = []
    for index, partition in enumerate(partitions, start=1):
        pixels = np.zeros((218, 178, 3), dtype=np.uint8)
        pixels[:, :, 0] = 255
        pixels[40:188, 15:163, 0] = 0
        pixels[40:188, 15:163, 1] = 255
        pixels[:, :, 2] = 20 * index  # tells the images apart
        Image.fromarray(pixels).save(folder / f"{index:06d}.jpg", quality=95)
        lines.append(f"{index:06d}.jpg {partition}")
    (data_dir / "celeba" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return folder


def test_celeba_uses_the_official_partition_crops_the_face_square_and_caches(
    tmp_path: Path, offline: None
) -> None:
    folder = write_fake_celeba(tmp_path)
    datamodule = CelebADataModule(tmp_path, batch_size=4)
    datamodule.prepare_data()  # images present: builds the cache instead of downloading
    assert (tmp_path / "celeba" / "genae_cache_64.npz").is_file()
    datamodule.setup()
    assert datamodule.summary() == "celeba: train 5 / val 1 / test 2, 3x64x64"
    train_images, train_labels = datamodule.split_tensors("train")
    assert train_images.shape == (5, 3, 64, 64) and train_images.dtype == torch.uint8
    assert train_labels.tolist() == [-1] * 5
    # The red lies outside the face square, so none survives the crop (JPEG's chroma may bleed one pixel).
    assert train_images[:, 0, 1:-1, 1:-1].max() < 40 and train_images[:, 1, 1:-1, 1:-1].min() > 200
    assert train_images[:, 2, 32, 32].tolist() == pytest.approx([20, 40, 60, 80, 100], abs=4)
    # The cache alone is enough: the JPEGs are never decoded again.
    shutil.rmtree(folder)
    cached = CelebADataModule(tmp_path)
    cached.setup()
    for split in ("train", "val", "test"):
        assert torch.equal(cached.split_tensors(split)[0], datamodule.split_tensors(split)[0])


def test_celeba_rebuilds_a_cache_that_no_longer_matches_the_partition(tmp_path: Path) -> None:
    write_fake_celeba(tmp_path)
    CelebADataModule(tmp_path).setup()
    write_fake_celeba(tmp_path / "more", partitions=(0, 0, 0, 0, 0, 0, 1, 2, 2))
    shutil.rmtree(tmp_path / "celeba" / "img_align_celeba")
    shutil.copytree(
        tmp_path / "more" / "celeba" / "img_align_celeba", tmp_path / "celeba" / "img_align_celeba"
    )
    shutil.copyfile(
        tmp_path / "more" / "celeba" / "list_eval_partition.txt",
        tmp_path / "celeba" / "list_eval_partition.txt",
    )
    datamodule = CelebADataModule(tmp_path)
    datamodule.setup()
    assert len(datamodule.split_tensors("train")[0]) == 6


def forbid(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make datamodules.celeba's `names` fail if called: what a test asserts is not done again."""

    def refuse(*args, **kwargs):
        pytest.fail(f"one of {names} was called")

    for name in names:
        monkeypatch.setattr(f"lightning_genae.datamodules.celeba.{name}", refuse)


def test_celeba_cache_is_rebuilt_when_a_jpeg_is_replaced_keeping_the_count(tmp_path, capsys) -> None:
    folder = write_fake_celeba(tmp_path)
    CelebADataModule(tmp_path).setup()
    pixels = np.full((218, 178, 3), 255, dtype=np.uint8)  # 000002.jpg, a training image, turns white
    Image.fromarray(pixels).save(folder / "000002.jpg", quality=95)
    datamodule = CelebADataModule(tmp_path)
    datamodule.setup()
    assert datamodule.split_tensors("train")[0][1].min() > 240
    assert "was decoded from other files" in capsys.readouterr().out


def test_celeba_cache_of_unchanged_files_is_used_without_reading_them(tmp_path, monkeypatch) -> None:
    write_fake_celeba(tmp_path)
    built = CelebADataModule(tmp_path)
    built.setup()
    forbid(monkeypatch, "read_images", "_content_sha256")
    again = CelebADataModule(tmp_path)
    again.prepare_data()
    again.setup()
    assert torch.equal(again.split_tensors("train")[0], built.split_tensors("train")[0])


def test_celeba_cache_is_rebuilt_when_files_are_swapped_keeping_their_sizes_and_times(
    tmp_path, capsys
) -> None:
    # `cp -p` or `tar x` put the old modification time back on new bytes; the change time cannot be set back.
    folder = write_fake_celeba(tmp_path)
    CelebADataModule(tmp_path).setup()
    first, test = folder / "000001.jpg", folder / "000008.jpg"
    Image.fromarray(np.full((218, 178, 3), 255, dtype=np.uint8)).save(tmp_path / "white.jpg", quality=95)
    white = (tmp_path / "white.jpg").read_bytes()
    for path in (first, test):
        kept = path.stat()
        # The same size: padded or cut at the end, where a JPEG decoder stops reading anyway.
        path.write_bytes(
            (white + b"\0" * kept.st_size)[: kept.st_size] if len(white) < kept.st_size else white
        )
        os.utime(path, ns=(kept.st_atime_ns, kept.st_mtime_ns))
    datamodule = CelebADataModule(tmp_path)
    datamodule.setup()
    assert "was decoded from other files" in capsys.readouterr().out
    assert datamodule.split_tensors("test")[0][-1].float().mean() > 240


@pytest.mark.parametrize("damage", ["npy header", "an npy file"])
def test_a_damaged_celeba_cache_is_one_line_naming_it(tmp_path, damage) -> None:
    write_fake_celeba(tmp_path)
    CelebADataModule(tmp_path).setup()
    cache = tmp_path / "celeba" / "genae_cache_64.npz"
    if damage == "npy header":  # the dict of the first array's header made unparseable
        raw = bytearray(cache.read_bytes())
        raw[raw.index(b"}")] = ord("[")
        cache.write_bytes(bytes(raw))
    else:
        np.save(cache.with_suffix(".npy"), np.zeros(3))
        cache.with_suffix(".npy").replace(cache)
    with pytest.raises(DataError) as error:
        CelebADataModule(tmp_path).setup()
    assert str(cache) in str(error.value) and "is corrupt" in str(error.value)
    assert "\n" not in str(error.value)


def test_celeba_cache_of_another_decoding_is_rebuilt_though_its_files_are_vouched_for(
    tmp_path, monkeypatch, capsys
) -> None:
    # Another Pillow, or another framing: the same JPEGs under the same times decode to other pixels.
    write_fake_celeba(tmp_path)
    CelebADataModule(tmp_path).setup()
    monkeypatch.setattr("lightning_genae.datamodules.celeba.DECODING", "another decoding")
    decoded = []
    real_read = celeba_module.read_images
    monkeypatch.setattr(celeba_module, "read_images", lambda *a, **k: decoded.append(1) or real_read(*a, **k))
    CelebADataModule(tmp_path).setup()
    assert (
        decoded and "was decoded from other files, or framed or decoded otherwise" in capsys.readouterr().out
    )


def test_celeba_cache_of_touched_but_equal_files_is_hashed_and_kept(tmp_path, monkeypatch, capsys) -> None:
    folder = write_fake_celeba(tmp_path)
    CelebADataModule(tmp_path).setup()
    for path in folder.iterdir():
        os.utime(path, ns=(0, 10**18))  # copied elsewhere, say: new times, the same bytes
    forbid(monkeypatch, "read_images")
    CelebADataModule(tmp_path).setup()
    assert "decoded from other files" not in capsys.readouterr().out


def test_unreadable_celeba_image_is_a_data_error_naming_it(tmp_path: Path) -> None:
    folder = write_fake_celeba(tmp_path)
    (folder / "000003.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as error:
        CelebADataModule(tmp_path).setup()
    assert str(folder / "000003.jpg") in str(error.value) and "\n" not in str(error.value)
    (folder / "000003.jpg").unlink()
    with pytest.raises(DataError, match="000003.jpg"):
        CelebADataModule(tmp_path).setup()


# ----- image folder -----


def write_image(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def test_folder_with_class_subfolders_is_labelled_and_stratified(tmp_path: Path) -> None:
    for index in range(10):
        write_image(tmp_path / "cats" / f"cat{index}.png", (0, 0, 0))
        write_image(tmp_path / "dogs" / "nested" / f"dog{index}.JPG", (255, 255, 255), size=(30, 50))
    (tmp_path / "dogs" / "notes.txt").write_text("not an image")
    write_image(tmp_path / ".thumbnails" / "skip.png", (128, 128, 128))
    datamodule = ImageFolderDataModule(tmp_path, batch_size=4, image_size=16, channels=1)
    assert datamodule.num_classes == 2 and datamodule.image_shape == (1, 16, 16)
    datamodule.setup()
    assert datamodule.summary() == (
        "folder: train 17 / val 1 / test 2, 1x16x16, 2 classes from subfolders (cats, dogs)"
    )
    for split in ("train", "test"):
        images, labels = datamodule.split_tensors(split)
        assert images.shape[1:] == (1, 16, 16)
        # Sorted subfolder names give the class ids, and every image keeps its own label.
        assert (images[labels == 0] == 0).all() and (images[labels == 1] == 255).all()
    assert sorted(class_counts(datamodule.split_tensors("train")[1], 2)) == [8, 9]


@pytest.mark.parametrize(
    ("files", "num_classes"),
    [
        (["a/x.png", "b/y.png", "b/deeper/z.png"], 2),
        (["only/x.png", "only/y.png", "only/z.png"], None),
        (["a/x.png", "b/y.png", "loose.png"], None),
        (["x.png", "y.png", "z.png"], None),
    ],
)
def test_folder_labels_need_two_image_subfolders_and_no_loose_images(
    tmp_path: Path, files: list[str], num_classes: int | None
) -> None:
    for name in files:
        write_image(tmp_path / name, (0, 0, 0))
    assert ImageFolderDataModule(tmp_path).num_classes == num_classes


def test_folder_without_class_subfolders_is_unlabeled_and_centre_cropped(tmp_path: Path) -> None:
    # A wide image: blue bands left and right of a red centre square, which is what must survive.
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :16, 2] = pixels[:, 48:, 2] = 255
    pixels[:, 16:48, 0] = 255
    for index in range(4):
        Image.fromarray(pixels).save(tmp_path / f"wide{index}.png")
    write_image(tmp_path / "only_one_subfolder" / "a.webp", (255, 0, 0), size=(20, 20))
    datamodule = ImageFolderDataModule(tmp_path, batch_size=2, image_size=16)
    assert datamodule.num_classes is None
    datamodule.setup()
    images = torch.cat([datamodule.split_tensors(split)[0] for split in ("train", "val", "test")])
    labels = torch.cat([datamodule.split_tensors(split)[1] for split in ("train", "val", "test")])
    assert images.shape == (5, 3, 16, 16) and labels.tolist() == [-1] * 5
    assert (images[:, 0] >= 250).all() and (images[:, 1:] <= 5).all()


def test_unreadable_folder_image_is_a_data_error_naming_it(tmp_path: Path) -> None:
    for index in range(4):
        write_image(tmp_path / f"ok{index}.png", (10, 20, 30))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError) as error:
        ImageFolderDataModule(tmp_path).setup()
    assert str(tmp_path / "broken.png") in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16_bit_image_is_scaled_to_8_bits_not_clipped(tmp_path: Path, suffix: str) -> None:
    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(levels * 257).save(tmp_path / f"wide{suffix}")
    Image.fromarray(levels.astype(np.uint8)).save(tmp_path / "narrow.png")
    assert Image.open(tmp_path / f"wide{suffix}").mode == "I;16"
    for channels in (1, 3):
        wide = read_square_image(tmp_path / f"wide{suffix}", 16, channels)
        assert np.array_equal(wide, read_square_image(tmp_path / "narrow.png", 16, channels))


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_an_image_drawn_in_its_alpha_channel_is_laid_over_black_not_read_as_a_blank(
    tmp_path: Path, mode
) -> None:
    digit = np.zeros((16, 16), dtype=np.uint8)
    digit[4:12, 7:9] = 255  # a "1", drawn in white over transparency: the colour is white everywhere
    white = np.full((16, 16), 255, dtype=np.uint8)
    if mode == "P":
        image = Image.fromarray(np.where(digit > 0, 1, 0).astype(np.uint8), "P")
        image.putpalette([255, 255, 255, 255, 255, 255])
        image.info["transparency"] = 0  # palette entry 0 transparent
        image.save(tmp_path / "drawn.png", transparency=0)
    else:
        bands = [white] * (len(mode) - 1) + [digit]
        Image.merge(mode, [Image.fromarray(band) for band in bands]).save(tmp_path / "drawn.png")
    for channels in (1, 3):
        read = read_square_image(tmp_path / "drawn.png", 16, channels)
        assert np.array_equal(read[0], digit), "the digit over black, as the datasets draw theirs"


def test_a_16_bit_greyscale_image_with_a_transparent_colour_is_laid_over_black(tmp_path: Path) -> None:
    pixels = np.full((16, 16), 65535, dtype=np.uint16)
    pixels[4:12, 7:9] = 65535 // 2
    Image.fromarray(pixels).save(tmp_path / "keyed.png", transparency=65535)
    assert Image.open(tmp_path / "keyed.png").mode == "I;16"
    read = read_square_image(tmp_path / "keyed.png", 16, 1)[0]
    assert read[0, 0] == 0 and read[6, 7] == 127, "the keyed white is black, the stroke its own grey"


def test_a_16_bit_tiff_storing_white_as_zero_is_turned_and_signed_or_32_bit_pixels_refused(
    tmp_path: Path,
) -> None:
    from PIL import TiffImagePlugin

    levels = np.arange(256, dtype=np.uint16).reshape(16, 16)
    white_is_zero = TiffImagePlugin.ImageFileDirectory_v2()
    white_is_zero[262] = 0
    Image.fromarray(levels * 257).save(tmp_path / "inverted.tif", tiffinfo=white_is_zero)
    assert np.array_equal(read_square_image(tmp_path / "inverted.tif", 16, 1)[0], 255 - levels)
    # Signed 16-bit (PIL's "I"): the negative half was clipped to black.
    Image.fromarray((levels.astype(np.int32) * 257 - 32768).astype(np.int16)).save(tmp_path / "signed.tif")
    with pytest.raises(DataError, match=r"signed.tif .*integer pixels from -32768 to 32767"):
        read_square_image(tmp_path / "signed.tif", 16, 1)
    Image.fromarray(levels.astype(np.int32) * 1000, "I").save(tmp_path / "wide32.tif")
    with pytest.raises(DataError, match="wide32.tif .*8 or 16-bit unsigned pixels"):
        read_square_image(tmp_path / "wide32.tif", 16, 1)


def test_a_float_tiff_in_a_folder_is_one_line_naming_it(tmp_path: Path) -> None:
    for index in range(3):
        Image.fromarray(np.full((8, 8), 40 * index, dtype=np.uint8)).save(tmp_path / f"{index}.tiff")
    Image.fromarray(np.random.default_rng(0).random((8, 8), dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(DataError) as error:
        ImageFolderDataModule(tmp_path, image_size=8).setup()
    assert str(tmp_path / "float.tif") in str(error.value) and "32-bit float pixels" in str(error.value)
    assert "\n" not in str(error.value)


def test_empty_or_missing_folder_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(DataError, match="0 images"):
        ImageFolderDataModule(tmp_path / "empty").setup()
    with pytest.raises(DataError, match="does not exist"):
        ImageFolderDataModule(tmp_path / "missing").setup()
    write_image(tmp_path / "two" / "a.png", (0, 0, 0))
    write_image(tmp_path / "two" / "b.png", (0, 0, 0))
    with pytest.raises(DataError, match="need at least 3"):
        ImageFolderDataModule(tmp_path / "two").setup()


def test_class_folders_linked_into_the_image_folder_are_read_and_a_link_up_the_tree_once(
    tmp_path: Path,
) -> None:
    """`ln -s` assembles a class folder: linked folders were skipped silently, whole classes with them."""
    store = tmp_path / "store"
    for name, colour in (("a", (255, 0, 0)), ("b", (0, 255, 0)), ("c", (0, 0, 255))):
        for index in range(4):
            write_image(store / name / f"{index}.png", colour)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a").symlink_to(store / "a", target_is_directory=True)
    (folder / "b").symlink_to(store / "b", target_is_directory=True)
    (folder / "c").mkdir()
    for index in range(4):
        write_image(folder / "c" / f"{index}.png", (0, 0, 255))
    (folder / "c" / "loop").symlink_to(folder, target_is_directory=True)  # a link back up the tree
    datamodule = ImageFolderDataModule(folder, image_size=16)
    assert datamodule.num_classes == 3 and len(datamodule.scan.paths) == 12
    # A link to a folder inside the image folder is not followed: its images keep their own class.
    (folder / "a" / "c_again").symlink_to(folder / "c", target_is_directory=True)
    scan = ImageFolderDataModule(folder, image_size=16).scan
    assert len(scan.paths) == 12 and scan.labels.tolist().count(2) == 4
    # Two classes linked to one folder outside are both read.
    twice = tmp_path / "twice"
    twice.mkdir()
    (twice / "x").symlink_to(store / "a", target_is_directory=True)
    (twice / "y").symlink_to(store / "a", target_is_directory=True)
    assert ImageFolderDataModule(twice, image_size=16).num_classes == 2


def test_a_folder_made_unlabelled_by_a_loose_image_says_so_in_its_summary(tmp_path: Path) -> None:
    for name in ("a/x.png", "a/y.png", "b/z.png", "b/w.png", "cover.png"):
        write_image(tmp_path / name, (0, 0, 0))
    summary = ImageFolderDataModule(tmp_path, image_size=16).summary()
    assert "unlabelled: 1 image lies loose beside its class subfolders (such as cover.png)" in summary


def test_class_subfolders_one_level_down_are_named_with_the_folder_to_pass(tmp_path: Path) -> None:
    for name in ("animals/cat/x.png", "animals/cat/y.png", "animals/dog/z.png", "animals/dog/w.png"):
        write_image(tmp_path / name, (0, 0, 0))
    datamodule = ImageFolderDataModule(tmp_path, image_size=16)
    assert datamodule.num_classes is None
    assert datamodule.labelling_advice() == (
        f"its class subfolders are one level down: give data_dir {tmp_path / 'animals'}, or "
    )


def test_build_datamodule_takes_its_options_as_python_values():
    from lightning_genae.datamodules import build_datamodule

    data = build_datamodule("sines", seq_len=24)
    data.setup("fit")
    assert data.split_tensors("train")[0].shape[1] == 24
    for given in ("24", 24.0):
        with pytest.raises(ValueError, match="seq_len"):
            build_datamodule("sines", seq_len=given)
