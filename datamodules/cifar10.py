"""CIFAR-10 read from its python pickle batches; torchvision only downloads (its reader insists on MD5s)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from datamodules.base import Batch, ImageDataModule
from datamodules.splits import carve_validation
from lightning_genae.errors import DataError, describe_error

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"


def read_cifar_batch(path: Path) -> Batch:
    """One pickle batch: b"data" is (N, 3072) uint8 in channel-major order, b"labels" N ints in 0..9."""

    def unreadable(reason: str) -> DataError:
        return DataError(
            f"{path} cannot be read as a CIFAR-10 batch ({reason}): delete it to re-download, or replace it"
        )

    try:
        with path.open("rb") as file:
            batch = pickle.load(file, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    # A damaged pickle can fail in many ways; all of them mean the same thing to the user.
    except (
        OSError,
        EOFError,
        pickle.UnpicklingError,
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
    ) as exc:
        raise unreadable(describe_error(exc)) from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(data) != len(labels) or len(labels) == 0:
        raise unreadable(f"data of shape {data.shape} with {len(labels)} labels")
    if labels.min() < 0 or labels.max() > 9:
        raise unreadable(f"labels span {labels.min()}..{labels.max()}, expected 0..9")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: official 10,000 test images; a fixed stratified 5,000 of the 50,000 train for validation."""

    name = "cifar10"
    default_shape = (3, 32, 32)
    classes = 10

    @property
    def batches_dir(self) -> Path:
        return self.data_dir / "cifar-10-batches-py"

    def _missing(self) -> list[str]:
        return [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (self.batches_dir / name).is_file()]

    def _not_found(self, reason: str) -> DataError:
        return DataError(
            f"CIFAR-10 not found in {self.batches_dir} {reason}: extract cifar-10-python.tar.gz into "
            f"{self.data_dir}, or pass --data-dir pointing at a folder holding cifar-10-batches-py"
        )

    def prepare_data(self) -> None:
        """Download with torchvision unless all six batch files are already there."""
        if not self._missing():
            return
        from torchvision import datasets

        self._download(
            lambda: datasets.CIFAR10(root=str(self.data_dir), train=True, download=True), self._missing
        )

    def _load_splits(self) -> dict[str, Batch]:
        if missing := self._missing():
            raise self._not_found(f"({', '.join(missing)} missing; call prepare_data() to download them)")
        parts = [read_cifar_batch(self.batches_dir / name) for name in TRAIN_BATCHES]
        train_images = torch.cat([images for images, _ in parts])
        train_labels = torch.cat([labels for _, labels in parts])
        train, val = carve_validation(train_labels)
        return {
            "train": (train_images[train], train_labels[train]),
            "val": (train_images[val], train_labels[val]),
            "test": read_cifar_batch(self.batches_dir / TEST_BATCH),
        }
